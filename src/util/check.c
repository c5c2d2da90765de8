/*
 * check.c - checks of what callers hand in: the version of a versioned
 * struct (and copying an options struct by the caller's size), and finite
 * float arrays.  Declared in util/util.h.
 */
#include "util/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int check_version(unsigned int version, unsigned int known, const char *type,
                  const char *where_fmt, ...)
{
    if (version == known)
        return DISTILL_OK;
    char where[256];
    where[0] = '\0';
    va_list ap;
    va_start(ap, where_fmt);
    int n = where_fmt ? vsnprintf(where, sizeof where, where_fmt, ap) : 0;
    va_end(ap);
    if (n < 0)
        where[0] = '\0';
    return seterr(DISTILL_EVERSION, "%s: %s version %u is not known (this library knows %u)",
                  where, type ? type : "struct", version, known);
}

void copy_options(void *dst, size_t dst_size, const void *src, size_t caller_size)
{
    memcpy(dst, src, caller_size < dst_size ? caller_size : dst_size);
}

size_t first_nonfinite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return n;
}

int all_finite(const float *x, size_t n)
{
    return first_nonfinite(x, n) == n;
}

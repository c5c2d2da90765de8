/*
 * check.c - checks of what callers hand in: the version of a versioned
 * struct, copying such structs in and out by the caller's version (never
 * by the library's sizeof), and finite float arrays.  Declared in util/util.h.
 */
#include "util/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int check_version(unsigned int version, unsigned int known, const char *type,
                  const char *where_fmt, ...)
{
    if (version >= sizeof(unsigned int) && version <= known)
        return DISTILL_OK;
    char where[256];
    where[0] = '\0';
    va_list ap;
    va_start(ap, where_fmt);
    int n = where_fmt ? vsnprintf(where, sizeof where, where_fmt, ap) : 0;
    va_end(ap);
    if (n < 0)
        where[0] = '\0';
    if (!type)
        type = "struct";
    if (version > known)
        return seterr(DISTILL_EVERSION,
                      "%s: %s version %u is newer than this library's (%u): the program was "
                      "built against a newer libdistill than the one it runs with",
                      where, type, version, known);
    /* the initializer's name: the type's name in capitals, with _INIT */
    char init[96];
    size_t k = 0;
    for (; type[k] && k + 6 < sizeof init; k++)
        init[k] = (char)(type[k] >= 'a' && type[k] <= 'z' ? type[k] - 'a' + 'A' : type[k]);
    memcpy(init + k, "_INIT", 6);
    return seterr(DISTILL_EVERSION, "%s: %s version %u is not valid: initialize the struct with %s",
                  where, type, version, init);
}

void struct_copy_in(void *dst, size_t dst_size, const void *src)
{
    size_t n = *(const unsigned int *)src;
    if (n > dst_size)
        n = dst_size;
    if (n > sizeof(unsigned int))
        memcpy((char *)dst + sizeof(unsigned int), (const char *)src + sizeof(unsigned int),
               n - sizeof(unsigned int));
}

void struct_copy_out(void *dst, const void *src, size_t src_size)
{
    size_t n = *(const unsigned int *)dst;
    if (n > src_size)
        n = src_size;
    if (n > sizeof(unsigned int))
        memcpy((char *)dst + sizeof(unsigned int), (const char *)src + sizeof(unsigned int),
               n - sizeof(unsigned int));
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

/*
 * number.c - decimal numbers in text the library reads and writes (loss
 * specs, model metadata), in the "C" locale's format whatever the host's
 * locale is.  Declared in util/util.h.
 */
#include "util/util.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *decimal_point(void)
{
    const char *dp = localeconv()->decimal_point;
    return dp && *dp ? dp : ".";
}

/*
 * Only [0-9+-.eE] are admitted, and '.' is swapped for the current locale's
 * decimal point before strtod.
 */
int parse_decimal(const char *s, double *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789+-.eE", s[i]))
            return -1;
    const char *dp = decimal_point();
    size_t dpl = strlen(dp);
    char buf[64 * 8 + 1];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (k + dpl >= sizeof buf)
                return -1;
            memcpy(buf + k, dp, dpl);
            k += dpl;
        } else {
            buf[k++] = s[i];
        }
    }
    buf[k] = '\0';
    char *end;
    double v = strtod(buf, &end);
    if (end != buf + k || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* "%.9g" (enough digits for every float to read back exactly), with the
 * locale's decimal point turned back into '.'. */
void format_float(char *buf, size_t size, float v)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.9g", (double)v);
    const char *dp = decimal_point();
    size_t dpl = strlen(dp), k = 0;
    for (const char *p = tmp; *p && k + 1 < size;) {
        if (dpl && strncmp(p, dp, dpl) == 0 && strcmp(dp, ".") != 0) {
            buf[k++] = '.';
            p += dpl;
        } else {
            buf[k++] = *p++;
        }
    }
    if (size)
        buf[k < size ? k : size - 1] = '\0';
}

/*
 * model_meta.c - a model's metadata: the key/value entries, the checks of
 * the keys the library knows, and the public accessors
 * (include/distill/model.h, "Metadata").
 */
#include "nn/model_meta.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "nn/graph.h"
#include "util/util.h"

void meta_free(model_meta *mm)
{
    for (int i = 0; i < mm->n; i++) {
        xfree(mm->e[i].key);
        xfree(mm->e[i].value);
    }
    xfree(mm->e);
    xfree(mm->names_buf);
    xfree(mm->names);
    memset(mm, 0, sizeof *mm);
}

static int find(const model_meta *mm, const char *key)
{
    for (int i = 0; i < mm->n; i++)
        if (strcmp(mm->e[i].key, key) == 0)
            return i;
    return -1;
}

int meta_key_ok(const char *key)
{
    size_t n = strlen(key);
    if (n < 1 || n > META_MAX_KEY)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Well-formed UTF-8 (no overlong forms, surrogates or values past U+10FFFF). */
static int utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0 || i + len > n)
            return 0;
        uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* ------------------------------------------------------ the known keys */

/* The number at *p, up to the next comma or the end: 0 and *v set, *p past
 * it (and past the comma, *more set when one followed), or -1. */
static int next_float(const char **p, float *v, int *more)
{
    const char *comma = strchr(*p, ',');
    size_t len = comma ? (size_t)(comma - *p) : strlen(*p);
    char buf[72];
    double x;
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, *p, len);
    buf[len] = '\0';
    if (parse_decimal(buf, &x) != 0 || x > 3.4e38 || x < -3.4e38)
        return -1;
    *v = (float)x;
    *more = comma != NULL;
    *p += len + (comma != NULL);
    return 0;
}

int meta_parse_floats(const char *s, float *v, int cap)
{
    int n = 0, more = 1;
    while (more) {
        if (n >= cap || next_float(&s, &v[n], &more) != 0)
            return -1;
        n++;
    }
    return n;
}

/* "C,H,W" or "F": positive decimal integers; the count, or -1. */
static int parse_dims(const char *s, int64_t dims[3])
{
    int n = 0;
    const char *p = s;
    for (;;) {
        int64_t v = 0;
        const char *q = p;
        while (*q >= '0' && *q <= '9' && q - p < 10)
            v = v * 10 + (*q++ - '0');
        if (q == p || *p == '0' || v > INT32_MAX || n >= 3 || (*q && *q != ','))
            return -1;
        dims[n++] = v;
        if (!*q)
            return n == 1 || n == 3 ? n : -1;
        p = q + 1;
    }
}

static int input_channels(const distill_model *m)
{
    const node *in = &m->nodes[0];
    return in->rank == 3 ? (int)in->dims[0] : 1;
}

static int check_shape(const distill_model *m, const char *v, char *why, size_t size)
{
    int64_t d[3];
    int n = parse_dims(v, d);
    if (n < 0) {
        snprintf(why, size, "'%.40s' is not C,H,W (positive integers)", v);
        return -1;
    }
    const node *in = &m->nodes[0];
    if (n == 3 && in->rank == 3 && d[0] != in->dims[0]) {
        snprintf(why, size, "%lld channel%s, and the input '%.64s' has %lld", (long long)d[0],
                 d[0] == 1 ? "" : "s", in->name, (long long)in->dims[0]);
        return -1;
    }
    int64_t len = n == 3 ? d[0] * d[1] * d[2] : d[0];
    if (in->rank == 1 && len != in->dims[0]) {
        snprintf(why, size, "%lld values per sample, and the input '%.64s' takes %lld",
                 (long long)len, in->name, (long long)in->dims[0]);
        return -1;
    }
    if (n == 1 && in->rank == 3) {
        snprintf(why, size, "a vector, and the input '%.64s' takes images", in->name);
        return -1;
    }
    return 0;
}

static int check_norm(const distill_model *m, const char *key, const char *v, char *why,
                      size_t size)
{
    int n = 0, more = 1;
    const char *p = v;
    while (more) {
        float x;
        if (next_float(&p, &x, &more) != 0) {
            snprintf(why, size, "'%.40s' is not a list of finite numbers", v);
            return -1;
        }
        if (strcmp(key, DISTILL_META_STD) == 0 && !(x > 0.0f)) {
            snprintf(why, size, "value %d is %g; a std must be positive", n, (double)x);
            return -1;
        }
        if (++n > META_MAX_NORM) {
            snprintf(why, size, "more than %d values", META_MAX_NORM);
            return -1;
        }
    }
    int c = input_channels(m);
    if (n != 1 && n != c) {
        snprintf(why, size, "%d values, and the input has %d channel%s (give 1 or %d)", n, c,
                 c == 1 ? "" : "s", c);
        return -1;
    }
    return 0;
}

/* The output's length when it is a vector, else 0. */
static int64_t output_length(const distill_model *m)
{
    const node *o = &m->nodes[m->output];
    return o->rank == 1 ? o->dims[0] : 0;
}

static int check_classes(const distill_model *m, const char *v, char *why, size_t size)
{
    int64_t want = output_length(m), n = 0;
    if (want == 0) {
        snprintf(why, size, "the output '%.64s' is not a vector of class logits",
                 m->nodes[m->output].name);
        return -1;
    }
    const char *p = v;
    for (;;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len == 0 || len > META_MAX_CLASS_NAME) {
            snprintf(why, size, "name %lld is %s", (long long)n, len ? "too long" : "empty");
            return -1;
        }
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) {
                snprintf(why, size, "name %lld holds a control character", (long long)n);
                return -1;
            }
        n++;
        if (!nl)
            break;
        p = nl + 1;
    }
    if (n != want) {
        snprintf(why, size, "%lld names, and the output '%.64s' has %lld logits", (long long)n,
                 m->nodes[m->output].name, (long long)want);
        return -1;
    }
    return 0;
}

static int check_seed(const char *v, char *why, size_t size)
{
    uint64_t x = 0;
    const char *p = v;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (x > (UINT64_MAX - d) / 10)
            break;
        x = x * 10 + d;
    }
    if (p == v || *p || (v[0] == '0' && v[1])) {
        snprintf(why, size, "'%.40s' is not a decimal integer below 2^64", v);
        return -1;
    }
    return 0;
}

/* The checks of one entry; 0, or -1 with the reason in why. */
static int check_entry(const distill_model *m, const char *key, const char *value, char *why,
                       size_t size)
{
    if (!meta_key_ok(key)) {
        snprintf(why, size, "key '%.40s' is not 1..%d bytes of [A-Za-z0-9._-]", key,
                 META_MAX_KEY);
        return -1;
    }
    size_t n = strlen(value);
    if (n > META_MAX_VALUE) {
        snprintf(why, size, "%s: a value of %zu bytes (at most %u)", key, n, META_MAX_VALUE);
        return -1;
    }
    if (!utf8_ok((const unsigned char *)value, n)) {
        snprintf(why, size, "%s: the value is not UTF-8 text", key);
        return -1;
    }
    char sub[256] = "";
    int rc = 0;
    if (strcmp(key, DISTILL_META_DATA_SHAPE) == 0)
        rc = check_shape(m, value, sub, sizeof sub);
    else if (strcmp(key, DISTILL_META_MEAN) == 0 || strcmp(key, DISTILL_META_STD) == 0)
        rc = check_norm(m, key, value, sub, sizeof sub);
    else if (strcmp(key, DISTILL_META_CLASSES) == 0)
        rc = check_classes(m, value, sub, sizeof sub);
    else if (strcmp(key, DISTILL_META_SEED) == 0)
        rc = check_seed(value, sub, sizeof sub);
    if (rc)
        snprintf(why, size, "%s: %s", key, sub);
    return rc;
}

/* Split "classes" into names (a private copy, newlines made NULs). */
static int split_names(model_meta *mm)
{
    xfree(mm->names_buf);
    xfree(mm->names);
    mm->names_buf = NULL;
    mm->names = NULL;
    mm->n_names = 0;
    int i = find(mm, DISTILL_META_CLASSES);
    if (i < 0)
        return DISTILL_OK;
    const char *v = mm->e[i].value;
    int n = 1;
    for (const char *p = v; *p; p++)
        n += *p == '\n';
    char *buf = xstrdup(v);
    const char **names = xmalloc((size_t)n * sizeof *names);
    if (!buf || !names) {
        xfree(buf);
        xfree(names);
        return DISTILL_ENOMEM;
    }
    int k = 0;
    names[k++] = buf;
    for (char *p = buf; *p; p++)
        if (*p == '\n') {
            *p = '\0';
            names[k++] = p + 1;
        }
    mm->names_buf = buf;
    mm->names = names;
    mm->n_names = n;
    return DISTILL_OK;
}

int meta_set(distill_model *m, const char *key, const char *value, const char *what)
{
    model_meta *mm = &m->meta;
    char why[400];
    if (!value) {
        if (!meta_key_ok(key))
            return seterr(DISTILL_EINVAL, "%s: key '%.40s' is not 1..%d bytes of [A-Za-z0-9._-]",
                          what, key, META_MAX_KEY);
        int i = find(mm, key);
        if (i < 0)
            return DISTILL_OK;
        meta_entry gone = mm->e[i];
        memmove(&mm->e[i], &mm->e[i + 1], (size_t)(mm->n - i - 1) * sizeof *mm->e);
        mm->n--;
        if (strcmp(key, DISTILL_META_CLASSES) == 0)
            split_names(mm); /* cannot fail: no names left to split */
        xfree(gone.key);
        xfree(gone.value);
        return DISTILL_OK;
    }
    if (check_entry(m, key, value, why, sizeof why))
        return seterr(DISTILL_EINVAL, "%s: %s", what, why);
    int i = find(mm, key);
    if (i < 0 && mm->n >= META_MAX_ENTRIES)
        return seterr(DISTILL_EINVAL, "%s: %s: a model holds at most %d metadata entries", what,
                      key, META_MAX_ENTRIES);
    char *v = xstrdup(value);
    if (!v)
        return DISTILL_ENOMEM;
    if (i >= 0) {
        char *old = mm->e[i].value;
        mm->e[i].value = v;
        if (strcmp(key, DISTILL_META_CLASSES) == 0 && split_names(mm) != DISTILL_OK) {
            mm->e[i].value = old;
            xfree(v);
            split_names(mm);
            return DISTILL_ENOMEM;
        }
        xfree(old);
        return DISTILL_OK;
    }
    char *k = xstrdup(key);
    if (!k) {
        xfree(v);
        return DISTILL_ENOMEM;
    }
    if (mm->n == mm->cap) {
        int ncap = mm->cap ? 2 * mm->cap : 8;
        meta_entry *ne = xrealloc(mm->e, (size_t)ncap * sizeof *ne);
        if (!ne) {
            xfree(k);
            xfree(v);
            return DISTILL_ENOMEM;
        }
        mm->e = ne;
        mm->cap = ncap;
    }
    mm->e[mm->n].key = k;
    mm->e[mm->n].value = v;
    mm->n++;
    if (strcmp(key, DISTILL_META_CLASSES) == 0 && split_names(mm) != DISTILL_OK) {
        mm->n--;
        xfree(k);
        xfree(v);
        return DISTILL_ENOMEM;
    }
    return DISTILL_OK;
}

int meta_check(const distill_model *m, const char *what)
{
    const model_meta *mm = &m->meta;
    int im = find(mm, DISTILL_META_MEAN), is = find(mm, DISTILL_META_STD);
    if ((im < 0) != (is < 0))
        return seterr(DISTILL_EINVAL, "%s: %s without %s", what,
                      im < 0 ? DISTILL_META_STD : DISTILL_META_MEAN,
                      im < 0 ? DISTILL_META_MEAN : DISTILL_META_STD);
    if (im >= 0) {
        int nm = 1, ns = 1;
        for (const char *p = mm->e[im].value; *p; p++)
            nm += *p == ',';
        for (const char *p = mm->e[is].value; *p; p++)
            ns += *p == ',';
        if (nm != ns)
            return seterr(DISTILL_EINVAL, "%s: %s has %d values, %s %d", what, DISTILL_META_MEAN,
                          nm, DISTILL_META_STD, ns);
    }
    /* the single-key checks against the graph, which may have changed
     * since the entries were set */
    char why[400];
    for (int i = 0; i < mm->n; i++)
        if (check_entry(m, mm->e[i].key, mm->e[i].value, why, sizeof why))
            return seterr(DISTILL_EINVAL, "%s: %s", what, why);
    return DISTILL_OK;
}

/* ================================================================ public */

#define CHECK_MODEL(m, fn)                                                   \
    do {                                                                     \
        if (!(m))                                                            \
            return seterr(DISTILL_EINVAL, "%s: model is NULL", fn);          \
    } while (0)

int distill_model_set_metadata(distill_model *m, const char *key, const char *value)
{
    CHECK_MODEL(m, "distill_model_set_metadata");
    if (!key)
        return seterr(DISTILL_EINVAL, "distill_model_set_metadata: key is NULL");
    return meta_set(m, key, value, "distill_model_set_metadata");
}

const char *distill_model_get_metadata(const distill_model *m, const char *key)
{
    if (!m || !key)
        return NULL;
    int i = find(&m->meta, key);
    return i < 0 ? NULL : m->meta.e[i].value;
}

size_t distill_model_metadata_count(const distill_model *m)
{
    return m ? (size_t)m->meta.n : 0;
}

const char *distill_model_metadata_key(const distill_model *m, size_t i)
{
    if (!m || i >= (size_t)m->meta.n)
        return NULL;
    return m->meta.e[i].key;
}

/* "v0,v1,...": n floats, each as format_float writes it (16 + 1 bytes). */
static char *join_floats(int n, const float *v)
{
    char *s = xmalloc((size_t)n * 24 + 1);
    if (!s)
        return NULL;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (i)
            s[len++] = ',';
        format_float(s + len, 24, v[i]);
        len += strlen(s + len);
    }
    s[len] = '\0';
    return s;
}

int distill_model_set_normalization(distill_model *m, int count, const float *mean,
                                    const float *std)
{
    static const char *fn = "distill_model_set_normalization";
    CHECK_MODEL(m, fn);
    if (count == 0) {
        meta_set(m, DISTILL_META_MEAN, NULL, fn);
        meta_set(m, DISTILL_META_STD, NULL, fn);
        return DISTILL_OK;
    }
    int c = input_channels(m);
    if (count < 0 || (count != 1 && count != c))
        return seterr(DISTILL_EINVAL, "%s: count %d; the input has %d channel%s (give 1 or %d)",
                      fn, count, c, c == 1 ? "" : "s", c);
    if (!mean || !std)
        return seterr(DISTILL_EINVAL, "%s: mean or std is NULL", fn);
    char *ms = join_floats(count, mean), *ss = join_floats(count, std);
    char why[400];
    int rc = DISTILL_OK;
    if (!ms || !ss)
        rc = DISTILL_ENOMEM;
    else if (check_entry(m, DISTILL_META_MEAN, ms, why, sizeof why) ||
             check_entry(m, DISTILL_META_STD, ss, why, sizeof why))
        rc = seterr(DISTILL_EINVAL, "%s: %s", fn, why);
    if (rc == DISTILL_OK) {
        /* keep the old pair should the second set run out of memory */
        const char *om = distill_model_get_metadata(m, DISTILL_META_MEAN);
        char *old = om ? xstrdup(om) : NULL;
        if (om && !old)
            rc = DISTILL_ENOMEM;
        if (rc == DISTILL_OK && (rc = meta_set(m, DISTILL_META_MEAN, ms, fn)) == DISTILL_OK &&
            (rc = meta_set(m, DISTILL_META_STD, ss, fn)) != DISTILL_OK)
            meta_set(m, DISTILL_META_MEAN, old, fn); /* replaces in place: no allocation */
        xfree(old);
    }
    xfree(ms);
    xfree(ss);
    return rc;
}

int distill_model_get_normalization(const distill_model *m, int *count, float *mean, float *std,
                                    int cap)
{
    if (!m || !count)
        return seterr(DISTILL_EINVAL, "distill_model_get_normalization: NULL argument");
    *count = 0;
    if (cap < 0 || (cap > 0 && (!mean || !std)))
        return seterr(DISTILL_EINVAL,
                      "distill_model_get_normalization: cap %d with mean or std NULL", cap);
    const char *ms = distill_model_get_metadata(m, DISTILL_META_MEAN);
    const char *ss = distill_model_get_metadata(m, DISTILL_META_STD);
    if (!ms || !ss)
        return DISTILL_OK;
    /* checked when set: as many values as channels, or one */
    int n = 1;
    for (const char *p = ms; *p; p++)
        n += *p == ',';
    float *tm = xmalloc((size_t)n * 2 * sizeof *tm);
    if (!tm)
        return DISTILL_ENOMEM;
    if (meta_parse_floats(ms, tm, n) != n || meta_parse_floats(ss, tm + n, n) != n) {
        xfree(tm);
        return seterr(DISTILL_EINVAL, "distill_model_get_normalization: %s and %s differ in "
                                      "length",
                      DISTILL_META_MEAN, DISTILL_META_STD);
    }
    for (int i = 0; i < n && i < cap; i++) {
        mean[i] = tm[i];
        std[i] = tm[n + i];
    }
    xfree(tm);
    *count = n;
    return DISTILL_OK;
}

int distill_model_set_class_names(distill_model *m, int n, const char *const *names)
{
    static const char *fn = "distill_model_set_class_names";
    CHECK_MODEL(m, fn);
    if (n == 0)
        return meta_set(m, DISTILL_META_CLASSES, NULL, fn);
    if (n < 0 || !names)
        return seterr(DISTILL_EINVAL, "%s: n = %d, names %s", fn, n, names ? "given" : "NULL");
    size_t len = 0;
    for (int k = 0; k < n; k++) {
        if (!names[k])
            return seterr(DISTILL_EINVAL, "%s: names[%d] is NULL", fn, k);
        if (strchr(names[k], '\n'))
            return seterr(DISTILL_EINVAL, "%s: names[%d] holds a newline", fn, k);
        size_t l = strlen(names[k]);
        if (l > META_MAX_CLASS_NAME)
            return seterr(DISTILL_EINVAL, "%s: names[%d] is %zu bytes (at most %d)", fn, k, l,
                          META_MAX_CLASS_NAME);
        len += l + 1;
    }
    char *v = xmalloc(len);
    if (!v)
        return DISTILL_ENOMEM;
    size_t at = 0;
    for (int k = 0; k < n; k++) {
        size_t l = strlen(names[k]);
        memcpy(v + at, names[k], l);
        at += l;
        v[at++] = k + 1 < n ? '\n' : '\0';
    }
    int rc = meta_set(m, DISTILL_META_CLASSES, v, fn);
    xfree(v);
    return rc;
}

int distill_model_class_count(const distill_model *m)
{
    return m ? m->meta.n_names : 0;
}

const char *distill_model_class_name(const distill_model *m, int k)
{
    if (!m || k < 0 || k >= m->meta.n_names)
        return NULL;
    return m->meta.names[k];
}

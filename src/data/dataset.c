/*
 * dataset.c - the shared sample store, dataset views, host-memory datasets
 * and the queries of include/distill/data.h.
 */
#include <stdio.h>
#include <string.h>

#include "data/data_internal.h"
#include "util/util.h"

/* ================================================================= store */

store *store_new(void)
{
    store *st = xcalloc(1, sizeof *st);
    if (st)
        atomic_init(&st->refs, 1);
    return st;
}

void store_retain(store *st)
{
    atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
}

void store_release(store *st)
{
    if (!st)
        return;
    /* acq_rel: every holder's last reads happen before the free. */
    if (atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1)
        return;
    xfree(st->owned_pixels);
    xfree(st->owned_labels);
    if (st->decode_free)
        st->decode_free(st->decode_payload);
    if (st->class_names) {
        for (int k = 0; k < st->classes; k++)
            xfree(st->class_names[k]);
        xfree(st->class_names);
    }
    xfree(st);
}

int store_sample_u8(const store *st, int64_t s, uint8_t *dst)
{
    if (st->type == STORE_FILES)
        return st->decode(st->decode_payload, s, dst, st->c, st->h, st->w);
    memcpy(dst, (const uint8_t *)st->pixels + (size_t)s * st->sample_elems, st->sample_elems);
    return DISTILL_OK;
}

int check_labels(const int32_t *labels, int64_t n, int *classes, int bad_status,
                 const char *what)
{
    if (*classes < 0)
        return seterr(DISTILL_EINVAL, "%s: classes is %d; must be >= 0", what, *classes);
    int32_t max = -1;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0 || (*classes > 0 && labels[i] >= *classes))
            return seterr(bad_status, "%s: label %lld is %ld, outside [0, %d)", what,
                          (long long)i, (long)labels[i], *classes);
        if (labels[i] > max)
            max = labels[i];
    }
    if (*classes == 0 && n > 0) {
        if (max == INT32_MAX)
            return seterr(bad_status, "%s: label %ld is too large", what, (long)max);
        *classes = (int)max + 1;
    }
    return DISTILL_OK;
}

int dataset_wrap(distill_dataset **out, store *st)
{
    distill_dataset *ds = xcalloc(1, sizeof *ds);
    if (!ds) {
        store_release(st);
        return DISTILL_ENOMEM;
    }
    ds->st = st;
    ds->n = st->n;
    ds->labelled = st->labels != NULL;
    *out = ds;
    return DISTILL_OK;
}

void distill_dataset_free(distill_dataset *ds)
{
    if (!ds)
        return;
    store_release(ds->st);
    xfree(ds->idx);
    xfree(ds);
}

/* ========================================================== host memory */

static int from_memory(distill_dataset **out, int64_t n, const int64_t dims[3],
                       const void *images, int type, const int32_t *labels, int classes,
                       int mode, const char *fn)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "%s: out is NULL", fn);
    *out = NULL;
    if (!images || !dims)
        return seterr(DISTILL_EINVAL, "%s: images or dims is NULL", fn);
    if (mode != DISTILL_MEMORY_COPY && mode != DISTILL_MEMORY_BORROW)
        return seterr(DISTILL_EINVAL, "%s: mode %d is not DISTILL_MEMORY_COPY or _BORROW", fn,
                      mode);
    if (n < 1)
        return seterr(DISTILL_EINVAL, "%s: n is %lld; need at least one sample", fn,
                      (long long)n);
    size_t elems = 1, total, bytes;
    for (int d = 0; d < 3; d++) {
        if (dims[d] < 1 || dims[d] > INT32_MAX)
            return seterr(DISTILL_EINVAL, "%s: dims[%d] is %lld; must be in 1..2^31-1", fn, d,
                          (long long)dims[d]);
        if (size_mul(elems, (size_t)dims[d], &elems))
            return seterr(DISTILL_EINVAL, "%s: sample shape is too large", fn);
    }
    size_t esize = type == STORE_U8 ? 1 : sizeof(float);
    if (size_mul(elems, (size_t)n, &total) || size_mul(total, esize, &bytes) ||
        bytes > (size_t)PTRDIFF_MAX)
        return seterr(DISTILL_EINVAL, "%s: %lld samples of %zu values are too large", fn,
                      (long long)n, elems);
    if (labels) {
        int rc = check_labels(labels, n, &classes, DISTILL_EINVAL, fn);
        if (rc)
            return rc;
    } else if (classes < 0) {
        return seterr(DISTILL_EINVAL, "%s: classes is %d; must be >= 0", fn, classes);
    }

    store *st = store_new();
    if (!st)
        return DISTILL_ENOMEM;
    st->n = n;
    st->c = dims[0];
    st->h = dims[1];
    st->w = dims[2];
    st->sample_elems = elems;
    st->type = type;
    st->classes = classes;
    if (mode == DISTILL_MEMORY_BORROW) {
        st->pixels = images;
        st->labels = labels;
    } else {
        st->owned_pixels = xmalloc(bytes);
        if (labels)
            st->owned_labels = xmalloc((size_t)n * sizeof(int32_t));
        if (!st->owned_pixels || (labels && !st->owned_labels)) {
            store_release(st);
            return DISTILL_ENOMEM;
        }
        memcpy(st->owned_pixels, images, bytes);
        if (labels)
            memcpy(st->owned_labels, labels, (size_t)n * sizeof(int32_t));
        st->pixels = st->owned_pixels;
        st->labels = st->owned_labels;
    }
    return dataset_wrap(out, st);
}

int distill_dataset_from_memory(distill_dataset **out, int64_t n, const int64_t dims[3],
                                const float *images, const int32_t *labels, int classes,
                                int mode)
{
    return from_memory(out, n, dims, images, STORE_F32, labels, classes, mode,
                       "distill_dataset_from_memory");
}

int distill_dataset_from_memory_u8(distill_dataset **out, int64_t n, const int64_t dims[3],
                                   const uint8_t *images, const int32_t *labels, int classes,
                                   int mode)
{
    return from_memory(out, n, dims, images, STORE_U8, labels, classes, mode,
                       "distill_dataset_from_memory_u8");
}

/* ================================================================= views */

/* A view of ds->st holding `idx` (taken over, may be NULL for a range). */
static int make_view(distill_dataset **out, const distill_dataset *ds, int64_t n, int64_t base,
                     int64_t *idx)
{
    distill_dataset *v = xcalloc(1, sizeof *v);
    if (!v) {
        xfree(idx);
        return DISTILL_ENOMEM;
    }
    store_retain(ds->st);
    v->st = ds->st;
    v->n = n;
    v->base = base;
    v->idx = idx;
    v->labelled = ds->labelled;
    *out = v;
    return DISTILL_OK;
}

int distill_dataset_subset(distill_dataset **out, const distill_dataset *ds, int64_t start,
                           int64_t count)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_dataset_subset: out is NULL");
    *out = NULL;
    if (!ds)
        return seterr(DISTILL_EINVAL, "distill_dataset_subset: dataset is NULL");
    if (start < 0 || count < 1 || count > ds->n - start)
        return seterr(DISTILL_EINVAL,
                      "distill_dataset_subset: samples [%lld, %lld + %lld) are not within the "
                      "%lld samples (need count >= 1)",
                      (long long)start, (long long)start, (long long)count, (long long)ds->n);
    if (!ds->idx)
        return make_view(out, ds, count, ds->base + start, NULL);
    int64_t *idx = xmalloc((size_t)count * sizeof *idx);
    if (!idx)
        return DISTILL_ENOMEM;
    memcpy(idx, ds->idx + start, (size_t)count * sizeof *idx);
    return make_view(out, ds, count, 0, idx);
}

int distill_dataset_select(distill_dataset **out, const distill_dataset *ds,
                           const int64_t *indices, int64_t count)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_dataset_select: out is NULL");
    *out = NULL;
    if (!ds || !indices)
        return seterr(DISTILL_EINVAL, "distill_dataset_select: dataset or indices is NULL");
    size_t bytes;
    if (count < 1 || size_mul((size_t)count, sizeof(int64_t), &bytes))
        return seterr(DISTILL_EINVAL, "distill_dataset_select: count is %lld; need >= 1",
                      (long long)count);
    for (int64_t i = 0; i < count; i++)
        if (indices[i] < 0 || indices[i] >= ds->n)
            return seterr(DISTILL_EINVAL,
                          "distill_dataset_select: indices[%lld] is %lld, outside [0, %lld)",
                          (long long)i, (long long)indices[i], (long long)ds->n);
    int64_t *idx = xmalloc(bytes);
    if (!idx)
        return DISTILL_ENOMEM;
    for (int64_t i = 0; i < count; i++)
        idx[i] = view_index(ds, indices[i]);
    return make_view(out, ds, count, 0, idx);
}

int distill_dataset_split(distill_dataset **train_out, distill_dataset **val_out,
                          const distill_dataset *ds, int64_t val_count, uint64_t seed)
{
    if (!train_out || !val_out)
        return seterr(DISTILL_EINVAL, "distill_dataset_split: an out pointer is NULL");
    *train_out = *val_out = NULL;
    if (!ds)
        return seterr(DISTILL_EINVAL, "distill_dataset_split: dataset is NULL");
    if (val_count < 1 || val_count >= ds->n)
        return seterr(DISTILL_EINVAL,
                      "distill_dataset_split: val_count %lld is not in [1, %lld) for %lld "
                      "samples",
                      (long long)val_count, (long long)ds->n, (long long)ds->n);
    int64_t n = ds->n;
    /* perm: a seeded Fisher-Yates shuffle; its first val_count entries are
     * the validation samples.  in_val marks them so both parts can be
     * collected in dataset order. */
    int64_t *perm = xmalloc((size_t)n * sizeof *perm);
    unsigned char *in_val = xcalloc((size_t)n, 1);
    int64_t *tr = xmalloc((size_t)(n - val_count) * sizeof *tr);
    int64_t *va = xmalloc((size_t)val_count * sizeof *va);
    int rc = DISTILL_ENOMEM;
    if (!perm || !in_val || !tr || !va)
        goto fail;
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    rng r;
    rng_seed(&r, seed);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)rng_below(&r, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int64_t i = 0; i < val_count; i++)
        in_val[perm[i]] = 1;
    int64_t nt = 0, nv = 0;
    for (int64_t i = 0; i < n; i++) {
        if (in_val[i])
            va[nv++] = view_index(ds, i);
        else
            tr[nt++] = view_index(ds, i);
    }
    xfree(perm);
    xfree(in_val);
    perm = NULL;
    in_val = NULL;
    rc = make_view(train_out, ds, nt, 0, tr);
    tr = NULL;
    if (rc)
        goto fail;
    rc = make_view(val_out, ds, nv, 0, va);
    va = NULL;
    if (rc) {
        distill_dataset_free(*train_out);
        *train_out = NULL;
        goto fail;
    }
    return DISTILL_OK;
fail:
    xfree(perm);
    xfree(in_val);
    xfree(tr);
    xfree(va);
    return rc;
}

int distill_dataset_drop_labels(distill_dataset *ds)
{
    if (!ds)
        return seterr(DISTILL_EINVAL, "distill_dataset_drop_labels: dataset is NULL");
    ds->labelled = 0;
    return DISTILL_OK;
}

/* =============================================================== queries */

int64_t distill_dataset_size(const distill_dataset *ds)
{
    return ds ? ds->n : 0;
}

int distill_dataset_sample_dims(const distill_dataset *ds, int64_t dims[3])
{
    if (!ds || !dims)
        return seterr(DISTILL_EINVAL, "distill_dataset_sample_dims: NULL argument");
    dims[0] = ds->st->c;
    dims[1] = ds->st->h;
    dims[2] = ds->st->w;
    return DISTILL_OK;
}

int distill_dataset_has_labels(const distill_dataset *ds)
{
    return ds && ds->labelled;
}

int distill_dataset_num_classes(const distill_dataset *ds)
{
    return ds ? ds->st->classes : 0;
}

const char *distill_dataset_class_name(const distill_dataset *ds, int k)
{
    if (!ds || !ds->st->class_names || k < 0 || k >= ds->st->classes)
        return NULL;
    return ds->st->class_names[k];
}

int64_t distill_dataset_class_size(const distill_dataset *ds, int k)
{
    if (!ds || !ds->labelled)
        return 0;
    int64_t count = 0;
    for (int64_t i = 0; i < ds->n; i++)
        count += ds->st->labels[view_index(ds, i)] == k;
    return count;
}

int64_t distill_dataset_skipped(const distill_dataset *ds, int64_t *not_png, int64_t *bad)
{
    int64_t a = ds ? ds->st->skipped_not_png : 0;
    int64_t b = ds ? ds->st->skipped_bad : 0;
    if (not_png)
        *not_png = a;
    if (bad)
        *bad = b;
    return a + b;
}

/* ---------------------------------------------------------- fingerprint */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull
#define FINGERPRINT_SAMPLES 16

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * FNV_PRIME;
    return h;
}

/* v as 8 bytes, little-endian. */
static uint64_t fnv_i64(uint64_t h, int64_t v)
{
    unsigned char b[8];
    for (int k = 0; k < 8; k++)
        b[k] = (unsigned char)((uint64_t)v >> (8 * k));
    return fnv_bytes(h, b, 8);
}

static uint64_t fnv_u32(uint64_t h, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    return fnv_bytes(h, b, 4);
}

int distill_dataset_fingerprint(const distill_dataset *ds, char *buf, size_t size)
{
    if (!ds || !buf)
        return seterr(DISTILL_EINVAL, "distill_dataset_fingerprint: NULL argument");
    if (size < DISTILL_FINGERPRINT_SIZE)
        return seterr(DISTILL_EINVAL, "distill_dataset_fingerprint: %zu bytes of room, need %d",
                      size, DISTILL_FINGERPRINT_SIZE);
    const store *st = ds->st;
    uint64_t h = FNV_OFFSET;
    h = fnv_i64(h, ds->n);
    h = fnv_i64(h, st->c);
    h = fnv_i64(h, st->h);
    h = fnv_i64(h, st->w);
    h = fnv_i64(h, st->classes);
    h = fnv_i64(h, ds->labelled);
    for (int k = 0; k < st->classes; k++) {
        const char *name = st->class_names ? st->class_names[k] : NULL;
        h = fnv_i64(h, name ? (int64_t)strlen(name) : -1);
        if (name)
            h = fnv_bytes(h, name, strlen(name));
    }
    if (ds->labelled)
        for (int64_t i = 0; i < ds->n; i++)
            h = fnv_u32(h, (uint32_t)st->labels[view_index(ds, i)]);
    float *x = xmalloc(st->sample_elems * sizeof *x);
    if (!x)
        return DISTILL_ENOMEM;
    int64_t taken = ds->n < FINGERPRINT_SAMPLES ? ds->n : FINGERPRINT_SAMPLES;
    for (int64_t k = 0; k < taken; k++) {
        int64_t i = k * ds->n / taken;
        int rc = distill_dataset_get(ds, i, x, st->sample_elems, NULL);
        if (rc) {
            xfree(x);
            return rc;
        }
        h = fnv_i64(h, i);
        for (size_t e = 0; e < st->sample_elems; e++) {
            uint32_t bits;
            memcpy(&bits, &x[e], 4);
            h = fnv_u32(h, bits);
        }
    }
    xfree(x);
    snprintf(buf, size, "fnv1a64:%016llx", (unsigned long long)h);
    return DISTILL_OK;
}

int distill_dataset_get(const distill_dataset *ds, int64_t i, float *image, size_t count,
                        int32_t *label)
{
    if (!ds || !image)
        return seterr(DISTILL_EINVAL, "distill_dataset_get: dataset or image is NULL");
    if (i < 0 || i >= ds->n)
        return seterr(DISTILL_EINVAL, "distill_dataset_get: index %lld is outside [0, %lld)",
                      (long long)i, (long long)ds->n);
    const store *st = ds->st;
    if (count != st->sample_elems)
        return seterr(DISTILL_ESHAPE,
                      "distill_dataset_get: room for %zu values, a sample has %zu", count,
                      st->sample_elems);
    int64_t s = view_index(ds, i);
    if (st->type == STORE_FILES) {
        /* decode into the tail of `image` (a quarter of it), then widen
         * from the front: element k is read before floats 0..k are written */
        uint8_t *p = (uint8_t *)(image + count) - count;
        int rc = store_sample_u8(st, s, p);
        if (rc)
            return rc;
        for (size_t k = 0; k < count; k++)
            image[k] = (float)p[k] / 255.0f;
    } else if (st->type == STORE_U8) {
        const uint8_t *p = (const uint8_t *)st->pixels + (size_t)s * st->sample_elems;
        for (size_t k = 0; k < count; k++)
            image[k] = (float)p[k] / 255.0f;
    } else {
        const float *p = (const float *)st->pixels + (size_t)s * st->sample_elems;
        memcpy(image, p, count * sizeof(float));
    }
    if (label)
        *label = ds->labelled ? st->labels[s] : -1;
    return DISTILL_OK;
}

/*
 * teacher.c - frozen sources of logits and tapped features: a copy of a
 * model, a host callback, or a weighted ensemble of teachers.
 */
#include <string.h>

#include "data/data_internal.h"
#include "distill/teacher_internal.h"
#include "nn/graph.h"
#include "tensor_internal.h"
#include "util/container.h"

enum { T_MODEL, T_CALLBACK, T_ENSEMBLE, T_CACHE };

#define MAX_TAPS 32

struct distill_teacher {
    int kind;
    int classes;
    distill_model *model;             /* T_MODEL: owned copy */
    distill_teacher_callback cb;      /* T_CALLBACK */
    int n_members;                    /* T_ENSEMBLE */
    distill_teacher **members;        /* borrowed */
    float *weights;                   /* normalized to sum 1 */
    distill_tensor *scratch;          /* T_ENSEMBLE: a member's logits */
    int n_taps;
    char *tap_names[MAX_TAPS];
    int tap_rank[MAX_TAPS];
    int64_t tap_dims[MAX_TAPS][3];
    distill_tensor *taps[MAX_TAPS];   /* (N, dims) of the last forward */
    tcache *cache;                    /* T_CACHE */
};

static int teacher_new(distill_teacher **out, int kind)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "teacher: out is NULL");
    *out = xcalloc(1, sizeof **out);
    if (!*out)
        return DISTILL_ENOMEM;
    (*out)->kind = kind;
    return DISTILL_OK;
}

int distill_teacher_from_model(distill_teacher **out, const distill_model *model)
{
    if (!model)
        return seterr(DISTILL_EINVAL, "distill_teacher_from_model: model is NULL");
    const node *o = &model->nodes[model->output];
    if (o->rank != 1 || o->dims[0] < 2)
        return seterr(DISTILL_ESHAPE, "teacher: the output node '%s' must be a vector of at least "
                                      "2 logits",
                      o->name);
    int rc = teacher_new(out, T_MODEL);
    if (rc)
        return rc;
    distill_teacher *t = *out;
    if ((rc = distill_model_clone(&t->model, model))) {
        xfree(t);
        *out = NULL;
        return rc;
    }
    t->model->frozen = 1; /* nobody else can change the copy's weights */
    t->classes = (int)o->dims[0];
    return DISTILL_OK;
}

int distill_teacher_from_callback(distill_teacher **out, const distill_teacher_callback *host_cb)
{
    if (!host_cb)
        return seterr(DISTILL_EINVAL, "distill_teacher_from_callback: cb is NULL");
    /* the host's struct up to its version; what an older one lacks is NULL */
    distill_teacher_callback full = DISTILL_TEACHER_CALLBACK_INIT, *cb = &full;
    COPY_OPTIONS(&full, host_cb, DISTILL_TEACHER_CALLBACK_VERSION, "distill_teacher_callback",
                 "distill_teacher_from_callback");
    if (!cb->forward || cb->classes < 2)
        return seterr(DISTILL_EINVAL, "teacher callback: forward must be set and classes >= 2");
    int rc = teacher_new(out, T_CALLBACK);
    if (rc)
        return rc;
    (*out)->cb = *cb;
    (*out)->classes = cb->classes;
    return DISTILL_OK;
}

int distill_teacher_ensemble(distill_teacher **out, int n, distill_teacher *const *teachers,
                             const float *weights)
{
    if (n < 1 || !teachers)
        return seterr(DISTILL_EINVAL, "teacher ensemble: needs at least one teacher");
    double sum = 0;
    for (int k = 0; k < n; k++) {
        if (!teachers[k])
            return seterr(DISTILL_EINVAL, "teacher ensemble: teacher %d is NULL", k);
        if (teachers[k]->classes != teachers[0]->classes)
            return seterr(DISTILL_ESHAPE, "teacher ensemble: teacher %d has %d classes, teacher 0 "
                                          "has %d",
                          k, teachers[k]->classes, teachers[0]->classes);
        float w = weights ? weights[k] : 1.0f;
        if (!(w >= 0.0f) || w != w)
            return seterr(DISTILL_EINVAL, "teacher ensemble: weight %d is negative or NaN", k);
        sum += w;
    }
    if (!(sum > 0))
        return seterr(DISTILL_EINVAL, "teacher ensemble: the weights sum to 0");
    int rc = teacher_new(out, T_ENSEMBLE);
    if (rc)
        return rc;
    distill_teacher *t = *out;
    t->members = xmalloc((size_t)n * sizeof *t->members);
    t->weights = xmalloc((size_t)n * sizeof *t->weights);
    if (!t->members || !t->weights) {
        distill_teacher_free(t);
        *out = NULL;
        return DISTILL_ENOMEM;
    }
    for (int k = 0; k < n; k++) {
        t->members[k] = teachers[k];
        t->weights[k] = (float)((weights ? weights[k] : 1.0f) / sum);
    }
    t->n_members = n;
    t->classes = teachers[0]->classes;
    return DISTILL_OK;
}

void distill_teacher_free(distill_teacher *t)
{
    if (!t)
        return;
    distill_model_free(t->model);
    if (t->kind == T_CALLBACK && t->cb.destroy)
        t->cb.destroy(t->cb.payload);
    xfree(t->members);
    xfree(t->weights);
    tcache_free(t->cache);
    distill_tensor_free(t->scratch);
    for (int k = 0; k < t->n_taps; k++) {
        xfree(t->tap_names[k]);
        distill_tensor_free(t->taps[k]);
    }
    xfree(t);
}

int distill_teacher_classes(const distill_teacher *t)
{
    return t ? t->classes : 0;
}

int teacher_add_tap(distill_teacher *t, const char *name, int *rank, int64_t dims[3], int *index)
{
    for (int k = 0; k < t->n_taps; k++)
        if (strcmp(t->tap_names[k], name) == 0) {
            *rank = t->tap_rank[k];
            memcpy(dims, t->tap_dims[k], sizeof t->tap_dims[k]);
            *index = k;
            return DISTILL_OK;
        }
    if (t->n_taps == MAX_TAPS)
        return seterr(DISTILL_EINVAL, "teacher: more than %d taps", MAX_TAPS);
    int rc, r = 0;
    int64_t d[3] = {0, 0, 0};
    if (t->kind == T_MODEL) {
        distill_node_info info = DISTILL_NODE_INFO_INIT;
        if ((rc = distill_model_find_node(t->model, name, &info)))
            return seterr(DISTILL_ENOTFOUND, "teacher has no node named '%s' to tap", name);
        if ((rc = distill_model_keep_node(t->model, name)))
            return rc;
        r = info.rank;
        memcpy(d, info.dims, sizeof d);
    } else if (t->kind == T_CALLBACK) {
        if (!t->cb.tap_shape)
            return seterr(DISTILL_ENOTFOUND, "teacher callback provides no taps (tap '%s')", name);
        if ((rc = t->cb.tap_shape(name, &r, d, t->cb.payload)))
            return seterr(rc, "teacher callback has no tap '%s'", name);
        if ((r != 1 && r != 3) || d[0] < 1 || (r == 3 && (d[1] < 1 || d[2] < 1)))
            return seterr(DISTILL_ESHAPE, "teacher callback: tap '%s' has an invalid shape", name);
    } else {
        return seterr(DISTILL_EUNSUPPORTED, "%s teachers provide logits only (tap '%s')",
                      t->kind == T_CACHE ? "cached" : "ensemble", name);
    }
    int64_t td[4] = {1, d[0], r == 3 ? d[1] : 0, r == 3 ? d[2] : 0};
    if (!(t->tap_names[t->n_taps] = xstrdup(name)))
        return DISTILL_ENOMEM;
    if ((rc = distill_tensor_create(&t->taps[t->n_taps], r + 1, td))) {
        xfree(t->tap_names[t->n_taps]);
        return rc;
    }
    t->tap_rank[t->n_taps] = r;
    memcpy(t->tap_dims[t->n_taps], d, sizeof d);
    *rank = r;
    memcpy(dims, d, sizeof d);
    *index = t->n_taps++;
    return DISTILL_OK;
}

const distill_tensor *teacher_tap(const distill_teacher *t, int index)
{
    return t->taps[index];
}

static int shape_taps(distill_teacher *t, int64_t n)
{
    for (int k = 0; k < t->n_taps; k++) {
        int64_t d[4] = {n, t->tap_dims[k][0], t->tap_dims[k][1], t->tap_dims[k][2]};
        int rc = distill_tensor_reshape(t->taps[k], t->tap_rank[k] + 1, d);
        if (rc)
            return rc;
    }
    return DISTILL_OK;
}

int distill_teacher_forward(distill_teacher *t, const distill_tensor *images, distill_tensor *logits)
{
    if (!t || !images || !logits)
        return seterr(DISTILL_EINVAL, "distill_teacher_forward: NULL argument");
    int64_t n = images->dims[0];
    if (logits->rank != 2 || logits->dims[0] != n || logits->dims[1] != t->classes)
        return seterr(DISTILL_ESHAPE, "teacher forward: logits must be (%lld, %d)", (long long)n,
                      t->classes);
    if (t->kind == T_CACHE)
        return seterr(DISTILL_EUNSUPPORTED, "a cached teacher gives logits only inside "
                                            "distill_trainer_fit (it needs each sample's view)");
    int rc = shape_taps(t, n);
    if (rc)
        return rc;
    switch (t->kind) {
    case T_MODEL:
        if ((rc = distill_model_forward(t->model, images, DISTILL_MODE_INFERENCE, logits)))
            return rc;
        for (int k = 0; k < t->n_taps; k++)
            if ((rc = distill_model_read_node(t->model, t->tap_names[k], t->taps[k])))
                return rc;
        return DISTILL_OK;
    case T_CALLBACK:
        rc = t->cb.forward(images, logits, t->n_taps, (const char *const *)t->tap_names, t->taps,
                           t->cb.payload);
        if (rc)
            return seterr(rc < 0 ? rc : DISTILL_EINVAL, "teacher callback failed with status %d",
                          rc);
        return DISTILL_OK;
    default: {
        int64_t d[2] = {n, t->classes};
        if (!t->scratch && (rc = distill_tensor_create(&t->scratch, 2, d)))
            return rc;
        if ((rc = distill_tensor_reshape(t->scratch, 2, d)))
            return rc;
        memset(logits->data, 0, logits->numel * sizeof(float));
        for (int k = 0; k < t->n_members; k++) {
            if ((rc = distill_teacher_forward(t->members[k], images, t->scratch)))
                return rc;
            for (size_t j = 0; j < logits->numel; j++)
                logits->data[j] += t->weights[k] * t->scratch->data[j];
        }
        return DISTILL_OK;
    }
    }
}

/* ------------------------------------------------------------ the cache */

/*
 * Cache file: the container of util/container.h with magic "DSTLTCCH",
 * version 1, and two sections:
 *   META  u64 samples, u32 classes, u32 views, i32 crop_padding, i32 hflip,
 *         i32 norm_count, f32 mean[4], f32 std[4], i64 dims[3],
 *         u32 fingerprint of the dataset
 *   LOGT  samples x views x classes f32, sample-major
 * and, only when the views were taken after a Resize or CenterCrop, a third
 * (so that files without one read as before):
 *   XFRM  i32 resize, i32 center_crop[2]
 */
#define CACHE_MAGIC "DSTLTCCH"
#define CACHE_VERSION 1

struct tcache {
    int64_t n;
    int classes, views;
    int crop, hflip, norm_count;
    float mean[4], std[4];
    int64_t dims[3];
    uint32_t fingerprint;
    int resize, center_crop[2];
    float *logits;
};

void tcache_free(tcache *c)
{
    if (!c)
        return;
    xfree(c->logits);
    xfree(c);
}

/* A cheap identity of a dataset: size, shape and 16 samples spread over it. */
static int fingerprint(const distill_dataset *ds, uint32_t *out)
{
    int64_t n = distill_dataset_size(ds), d[3];
    distill_dataset_sample_dims(ds, d);
    size_t elems = (size_t)(d[0] * d[1] * d[2]);
    float *buf = xmalloc(elems * sizeof(float));
    if (!buf)
        return DISTILL_ENOMEM;
    uint32_t crc = crc32_update(0, &n, sizeof n);
    crc = crc32_update(crc, d, sizeof d);
    for (int k = 0; k < 16 && n > 0; k++) {
        int64_t i = (n - 1) * k / 15;
        int32_t label;
        int rc = distill_dataset_get(ds, i, buf, elems, &label);
        if (rc) {
            xfree(buf);
            return rc;
        }
        crc = crc32_update(crc, buf, elems * sizeof(float));
    }
    xfree(buf);
    *out = crc;
    return DISTILL_OK;
}

int distill_cache_options_init(distill_cache_options *opts, unsigned int version)
{
    static const distill_cache_options init = DISTILL_CACHE_OPTIONS_INIT;
    INIT_STRUCT(opts, version, DISTILL_CACHE_OPTIONS_VERSION, init, "distill_cache_options",
                "distill_cache_options_init");
}

int distill_teacher_cache_build(distill_teacher *t, const distill_dataset *ds,
                                const distill_cache_options *opts, const char *path)
{
    if (!t || !ds || !path)
        return seterr(DISTILL_EINVAL, "distill_teacher_cache_build: NULL argument");
    if (t->kind == T_CACHE)
        return seterr(DISTILL_EUNSUPPORTED, "cache_build: the teacher is itself a cache");
    distill_cache_options o = DISTILL_CACHE_OPTIONS_INIT;
    if (opts) {
        COPY_OPTIONS(&o, opts, DISTILL_CACHE_OPTIONS_VERSION, "distill_cache_options",
                     "distill_teacher_cache_build");
    }
    if (o.batch_size < 1 || o.crop_padding < 0 || o.crop_padding > 64 || o.norm_count < 0 ||
        o.norm_count > 4 || o.resize < 0 || o.center_crop[0] < 0 || o.center_crop[1] < 0)
        return seterr(DISTILL_EINVAL, "cache_build: batch_size >= 1, crop_padding in 0..64, "
                                      "norm_count in 0..4, resize and center_crop >= 0");
    distill_loader_options lo;
    distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION);
    lo.batch_size = o.batch_size;
    lo.shuffle = 0;
    lo.crop_padding = o.crop_padding;
    lo.hflip = o.hflip != 0;
    lo.norm_count = o.norm_count;
    lo.mean = o.norm_count ? o.mean : NULL;
    lo.std = o.norm_count ? o.std : NULL;
    lo.prefetch = 0;
    lo.resize = o.resize;
    lo.center_crop[0] = o.center_crop[0];
    lo.center_crop[1] = o.center_crop[1];
    distill_loader *ld;
    int rc = distill_loader_create(&ld, ds, &lo);
    if (rc)
        return rc;
    int64_t n = loader_size(ld), d[3];
    int views = loader_view_count(ld), classes = t->classes;
    distill_loader_sample_dims(ld, d);
    size_t elems = (size_t)(d[0] * d[1] * d[2]);
    uint32_t fp = 0;
    int64_t bd[4] = {o.batch_size, d[0], d[1], d[2]}, ld2[2] = {o.batch_size, classes};
    distill_tensor *x = NULL, *y = NULL;
    cwriter w;
    memset(&w, 0, sizeof w);
    size_t total;
    if (size_mul((size_t)n * (size_t)views, (size_t)classes * sizeof(float), &total)) {
        rc = seterr(DISTILL_EINVAL, "cache_build: the cache would be too large");
        goto out;
    }
    if ((rc = fingerprint(ds, &fp)) || (rc = distill_tensor_create(&x, 4, bd)) ||
        (rc = distill_tensor_create(&y, 2, ld2)) ||
        (rc = cw_begin(&w, CACHE_MAGIC, CACHE_VERSION, total + 256)))
        goto out;
    cw_section(&w, "META");
    cw_u64(&w, (uint64_t)n);
    cw_u32(&w, (uint32_t)classes);
    cw_u32(&w, (uint32_t)views);
    cw_i32(&w, o.crop_padding);
    cw_i32(&w, lo.hflip);
    cw_i32(&w, o.norm_count);
    for (int k = 0; k < 4; k++)
        cw_f32(&w, k < o.norm_count ? o.mean[k] : 0.0f);
    for (int k = 0; k < 4; k++)
        cw_f32(&w, k < o.norm_count ? o.std[k] : 1.0f);
    for (int k = 0; k < 3; k++)
        cw_i64(&w, d[k]);
    cw_u32(&w, fp);
    cw_end_section(&w);
    cw_section(&w, "LOGT");
    /* rows in (sample, view) order, batch_size at a time */
    int64_t rows = n * views;
    for (int64_t r0 = 0; r0 < rows; r0 += o.batch_size) {
        int64_t cnt = rows - r0 < o.batch_size ? rows - r0 : o.batch_size;
        int64_t xd[4] = {cnt, d[0], d[1], d[2]}, yd[2] = {cnt, classes};
        if ((rc = distill_tensor_reshape(x, 4, xd)) || (rc = distill_tensor_reshape(y, 2, yd)))
            goto out;
        for (int64_t j = 0; j < cnt; j++)
            if ((rc = loader_build_view(ld, (r0 + j) / views, (int32_t)((r0 + j) % views),
                                        x->data + (size_t)j * elems)))
                goto out;
        if ((rc = distill_teacher_forward(t, x, y)))
            goto out;
        cw_f32s(&w, y->data, (size_t)cnt * (size_t)classes);
    }
    cw_end_section(&w);
    if (o.resize || o.center_crop[0]) {
        cw_section(&w, "XFRM");
        cw_i32(&w, o.resize);
        cw_i32(&w, o.center_crop[0]);
        cw_i32(&w, o.center_crop[1]);
        cw_end_section(&w);
    }
    void *data;
    size_t size;
    if ((rc = cw_finish(&w, &data, &size)))
        goto out_nowriter;
    rc = write_file_atomic(path, data, size);
    xfree(data);
    goto out_nowriter;
out:
    cw_free(&w);
out_nowriter:
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_loader_free(ld);
    return rc;
}

int distill_teacher_from_cache(distill_teacher **out, const char *path)
{
    if (!out || !path)
        return seterr(DISTILL_EINVAL, "distill_teacher_from_cache: NULL argument");
    *out = NULL;
    void *data;
    size_t size;
    int rc = read_file(path, (size_t)1 << 36, &data, &size);
    if (rc)
        return rc;
    char what[300];
    snprintf(what, sizeof what, "teacher cache '%.256s'", path);
    creader r;
    csection s;
    tcache *c = xcalloc(1, sizeof *c);
    if (!c) {
        xfree(data);
        return DISTILL_ENOMEM;
    }
    static const char *const known[] = {"META", "LOGT", "XFRM", NULL};
    if ((rc = cr_open(&r, data, size, CACHE_MAGIC, CACHE_VERSION, what)) ||
        (rc = cr_check_tags(&r, known)))
        goto fail;
    if (!cr_find(&r, "META", &s)) {
        rc = seterr(DISTILL_EFORMAT, "%s: no META section", what);
        goto fail;
    }
    c->n = (int64_t)cs_u64(&s);
    c->classes = (int)cs_u32(&s);
    c->views = (int)cs_u32(&s);
    c->crop = cs_i32(&s);
    c->hflip = cs_i32(&s);
    c->norm_count = cs_i32(&s);
    for (int k = 0; k < 4; k++)
        c->mean[k] = cs_f32(&s);
    for (int k = 0; k < 4; k++)
        c->std[k] = cs_f32(&s);
    for (int k = 0; k < 3; k++)
        c->dims[k] = cs_i64(&s);
    c->fingerprint = cs_u32(&s);
    if ((rc = s.status))
        goto fail;
    int side = 2 * c->crop + 1;
    if (c->n < 1 || c->classes < 2 || c->classes > (1 << 20) || c->crop < 0 || c->crop > 64 ||
        (c->hflip != 0 && c->hflip != 1) || c->views != side * side * (c->hflip ? 2 : 1) ||
        c->norm_count < 0 || c->norm_count > 4) {
        rc = cs_fail(&s, DISTILL_EFORMAT, "inconsistent header values");
        goto fail;
    }
    if (cr_find(&r, "XFRM", &s)) {
        c->resize = cs_i32(&s);
        for (int k = 0; k < 2; k++)
            c->center_crop[k] = cs_i32(&s);
        if ((rc = s.status))
            goto fail;
        if (c->resize < 0 || c->center_crop[0] < 0 || c->center_crop[1] < 0) {
            rc = cs_fail(&s, DISTILL_EFORMAT, "inconsistent transform values");
            goto fail;
        }
    }
    if (!cr_find(&r, "LOGT", &s)) {
        rc = seterr(DISTILL_EFORMAT, "%s: no LOGT section", what);
        goto fail;
    }
    size_t count;
    if (size_mul((size_t)c->n * (size_t)c->views, (size_t)c->classes, &count) ||
        count > s.len / sizeof(float) || count * sizeof(float) != s.len) {
        rc = cs_fail(&s, DISTILL_EFORMAT, "holds %zu bytes, the header asks for %lld x %d x %d "
                                          "floats",
                     s.len, (long long)c->n, c->views, c->classes);
        goto fail;
    }
    if (!(c->logits = xmalloc(count * sizeof(float)))) {
        rc = DISTILL_ENOMEM;
        goto fail;
    }
    if ((rc = cs_f32s(&s, c->logits, count)))
        goto fail;
    xfree(data);
    if ((rc = teacher_new(out, T_CACHE))) {
        tcache_free(c);
        return rc;
    }
    (*out)->cache = c;
    (*out)->classes = c->classes;
    return DISTILL_OK;
fail:
    tcache_free(c);
    xfree(data);
    return rc;
}

int teacher_is_cache(const distill_teacher *t)
{
    return t && t->kind == T_CACHE;
}

int teacher_cache_check(const distill_teacher *t, const distill_dataset *ds,
                        const distill_trainer_options *o)
{
    const tcache *c = t->cache;
    int crop_padding = o->crop_padding, hflip = o->hflip, norm_count = o->norm_count;
    const float *mean = o->mean, *std = o->std;
    if (o->random_resized_crop[0] || o->random_resized_crop[1])
        return seterr(DISTILL_EINVAL,
                      "a teacher cache holds the logits of enumerable views (crop offsets x "
                      "flips), and RandomResizedCrop draws its boxes from a continuum: train "
                      "with the teacher itself, or without random_resized_crop");
    uint32_t fp;
    int rc = fingerprint(ds, &fp);
    if (rc)
        return rc;
    if (distill_dataset_size(ds) != c->n || fp != c->fingerprint)
        return seterr(DISTILL_EINVAL, "the teacher cache was made for another dataset (%lld "
                                      "samples; this one has %lld)",
                      (long long)c->n, (long long)distill_dataset_size(ds));
    if (crop_padding != c->crop || (hflip != 0) != c->hflip)
        return seterr(DISTILL_EINVAL, "the teacher cache was made with crop padding %d and "
                                      "flips %s; the training run uses %d and %s",
                      c->crop, c->hflip ? "on" : "off", crop_padding, hflip ? "on" : "off");
    if (o->resize != c->resize || o->center_crop[0] != c->center_crop[0] ||
        o->center_crop[1] != c->center_crop[1])
        return seterr(DISTILL_EINVAL, "the teacher cache was made with resize %d and center crop "
                                      "%dx%d; the training run uses %d and %dx%d",
                      c->resize, c->center_crop[0], c->center_crop[1], o->resize,
                      o->center_crop[0], o->center_crop[1]);
    int same = norm_count == c->norm_count;
    for (int k = 0; same && k < norm_count; k++)
        same = mean[k] == c->mean[k] && std[k] == c->std[k];
    if (!same)
        return seterr(DISTILL_EINVAL, "the teacher cache was made with another normalization");
    return DISTILL_OK;
}

int teacher_cache_lookup(const distill_teacher *t, int64_t n, const int64_t *index,
                         const int32_t *view, distill_tensor *logits)
{
    const tcache *c = t->cache;
    for (int64_t j = 0; j < n; j++) {
        if (index[j] < 0 || index[j] >= c->n || view[j] < 0 || view[j] >= c->views)
            return seterr(DISTILL_EINVAL, "teacher cache: sample %lld view %d out of range",
                          (long long)index[j], view[j]);
        memcpy(logits->data + (size_t)j * (size_t)c->classes,
               c->logits + ((size_t)index[j] * (size_t)c->views + (size_t)view[j]) *
                               (size_t)c->classes,
               (size_t)c->classes * sizeof(float));
    }
    return DISTILL_OK;
}

/*
 * teacher.c - frozen sources of logits and tapped features: a copy of a
 * model, a host callback, or a weighted ensemble of teachers.
 */
#include <string.h>

#include "distill/teacher_internal.h"
#include "nn/graph.h"
#include "tensor_internal.h"

enum { T_MODEL, T_CALLBACK, T_ENSEMBLE };

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

int distill_teacher_from_callback(distill_teacher **out, const distill_teacher_callback *cb)
{
    if (!cb)
        return seterr(DISTILL_EINVAL, "distill_teacher_from_callback: cb is NULL");
    if (cb->version != DISTILL_TEACHER_CALLBACK_VERSION)
        return seterr(DISTILL_EVERSION, "teacher callback version %u is not known (this library "
                                        "knows %d)",
                      cb->version, DISTILL_TEACHER_CALLBACK_VERSION);
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
        distill_node_info info;
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
        return seterr(DISTILL_EUNSUPPORTED, "teacher ensembles provide logits only (tap '%s')",
                      name);
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

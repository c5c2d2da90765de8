/*
 * loss.c - distill_loss objects: constructors, accessors, batch validation
 * and distill_loss_forward (include/distill/loss.h).
 *
 * The numbers are computed in loss_logits.c and loss_feat.c; the spec
 * parser is in loss_parse.c.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "distill/loss.h"
#include "distill/loss_internal.h"
#include "tensor_internal.h"
#include "util/util.h"

/* ============================================================ creation */

static int is_finite(double x)
{
    return isfinite(x) != 0;
}

/* A new loss with copies of the names; the vtable and flags are set by the
 * caller. */
static int loss_alloc(distill_loss **out, const char *name, loss_kind kind,
                      const char *student_node, const char *teacher_node)
{
    distill_loss *l = xcalloc(1, sizeof *l);
    if (!l)
        return DISTILL_ENOMEM;
    l->kind = kind;
    l->name = xstrdup(name);
    if (!l->name)
        goto nomem;
    if (student_node) {
        l->student_node = xstrdup(student_node);
        if (!l->student_node)
            goto nomem;
    }
    if (teacher_node) {
        l->teacher_node = xstrdup(teacher_node);
        if (!l->teacher_node)
            goto nomem;
    }
    *out = l;
    return DISTILL_OK;
nomem:
    xfree(l->name);
    xfree(l->student_node);
    xfree(l->teacher_node);
    xfree(l);
    return DISTILL_ENOMEM;
}

/* Create a built-in: its vtable's payload is the loss itself. */
static int builtin(distill_loss **out, const distill_loss_vtable *vt, loss_kind kind,
                   const loss_params *p, const char *student_node, const char *teacher_node)
{
    distill_loss *l;
    int rc = loss_alloc(&l, vt->name, kind, student_node, teacher_node);
    if (rc)
        return rc;
    l->vt = *vt;
    l->vt.name = l->name;
    l->payload = l;
    l->params = *p;
    switch (kind) {
    case LOSS_CE:
        l->needs_labels = 1;
        break;
    case LOSS_KD:
        l->needs_labels = p->alpha < 1.0;
        l->needs_teacher = l->needs_teacher_logits = p->alpha > 0.0;
        break;
    case LOSS_DKD:
        l->needs_labels = 1;
        l->needs_teacher = l->needs_teacher_logits = 1;
        break;
    case LOSS_DIST:
    case LOSS_MLKD:
        l->needs_teacher = l->needs_teacher_logits = 1;
        break;
    case LOSS_FITNETS:
        l->needs_teacher = 1;
        l->taps = LOSS_TAPS_SAME_SHAPE;
        break;
    case LOSS_AT:
        l->needs_teacher = 1;
        l->taps = LOSS_TAPS_SAME_SPATIAL;
        break;
    case LOSS_SP:
    case LOSS_RKD:
    case LOSS_PKT:
        l->needs_teacher = 1;
        l->taps = LOSS_TAPS_FLAT;
        break;
    case LOSS_CUSTOM:
        break;
    }
    *out = l;
    return DISTILL_OK;
}

static int check_out(distill_loss **out, const char *fn)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "%s: out is NULL", fn);
    *out = NULL;
    return DISTILL_OK;
}

static int check_nodes(const char *fn, const char *student_node, const char *teacher_node)
{
    if (!student_node || !*student_node || !teacher_node || !*teacher_node)
        return seterr(DISTILL_EINVAL, "%s: student_node and teacher_node must both be named",
                      fn);
    return DISTILL_OK;
}

int distill_loss_create_custom(distill_loss **out, const distill_loss_vtable *host_vt,
                               void *payload, const char *student_node, const char *teacher_node)
{
    int rc = check_out(out, "distill_loss_create_custom");
    if (rc)
        return rc;
    if (!host_vt)
        return seterr(DISTILL_EINVAL, "distill_loss_create_custom: vtable is NULL");
    /* the host's vtable up to its version; what an older one lacks is NULL */
    distill_loss_vtable full = DISTILL_LOSS_VTABLE_INIT, *vt = &full;
    COPY_OPTIONS(&full, host_vt, DISTILL_LOSS_VTABLE_VERSION, "distill_loss_vtable",
                 "distill_loss_create_custom");
    const char *name = vt->name && *vt->name ? vt->name : "custom";
    if (!vt->forward)
        return seterr(DISTILL_EINVAL, "custom loss '%s': forward is NULL", name);
    if ((student_node == NULL) != (teacher_node == NULL) ||
        (student_node && (!*student_node || !*teacher_node)))
        return seterr(DISTILL_EINVAL,
                      "custom loss '%s': name both taps (student_node and teacher_node) or "
                      "neither",
                      name);
    distill_loss *l;
    rc = loss_alloc(&l, name, LOSS_CUSTOM, student_node, teacher_node);
    if (rc)
        return rc;
    l->vt = *vt;
    l->vt.name = l->name;
    l->payload = payload;
    /* A host loss reads what the batch has: the teacher's logits when
     * there is a teacher (else NULL), labels when the data has them.  Only
     * its taps make a teacher necessary. */
    l->needs_labels = 0;
    l->needs_teacher = student_node != NULL;
    l->needs_teacher_logits = 0;
    l->taps = student_node ? LOSS_TAPS_ANY : LOSS_TAPS_NONE;
    *out = l;
    return DISTILL_OK;
}

int distill_loss_cross_entropy(distill_loss **out, float label_smoothing)
{
    int rc = check_out(out, "distill_loss_cross_entropy");
    if (rc)
        return rc;
    if (!is_finite(label_smoothing) || label_smoothing < 0.0f || label_smoothing >= 1.0f)
        return seterr(DISTILL_EINVAL, "cross-entropy: label_smoothing = %g must be in [0, 1)",
                      (double)label_smoothing);
    loss_params p = {0};
    p.smoothing = label_smoothing;
    return builtin(out, &loss_vt_ce, LOSS_CE, &p, NULL, NULL);
}

static int make_kd(distill_loss **out, const char *fn, float temperature, float alpha, int ls)
{
    int rc = check_out(out, fn);
    if (rc)
        return rc;
    if (!is_finite(temperature) || temperature <= 0.0f)
        return seterr(DISTILL_EINVAL, "kd: temperature = %g must be a positive number",
                      (double)temperature);
    if (!is_finite(alpha) || alpha < 0.0f || alpha > 1.0f)
        return seterr(DISTILL_EINVAL, "kd: alpha = %g must be in [0, 1]", (double)alpha);
    loss_params p = {0};
    p.temperature = temperature;
    p.alpha = alpha;
    p.standardize = ls != 0;
    return builtin(out, &loss_vt_kd, LOSS_KD, &p, NULL, NULL);
}

static int make_dkd(distill_loss **out, const char *fn, float temperature, float alpha,
                    float beta, int ls)
{
    int rc = check_out(out, fn);
    if (rc)
        return rc;
    if (!is_finite(temperature) || temperature <= 0.0f)
        return seterr(DISTILL_EINVAL, "dkd: temperature = %g must be a positive number",
                      (double)temperature);
    if (!is_finite(alpha) || alpha < 0.0f || !is_finite(beta) || beta < 0.0f)
        return seterr(DISTILL_EINVAL, "dkd: alpha = %g and beta = %g must be finite and >= 0",
                      (double)alpha, (double)beta);
    loss_params p = {0};
    p.temperature = temperature;
    p.alpha = alpha;
    p.beta = beta;
    p.standardize = ls != 0;
    return builtin(out, &loss_vt_dkd, LOSS_DKD, &p, NULL, NULL);
}

int distill_loss_kd(distill_loss **out, float temperature, float alpha)
{
    return make_kd(out, "distill_loss_kd", temperature, alpha, 0);
}

int distill_loss_kd_ls(distill_loss **out, float temperature, float alpha)
{
    return make_kd(out, "distill_loss_kd_ls", temperature, alpha, 1);
}

int distill_loss_dkd(distill_loss **out, float temperature, float alpha, float beta)
{
    return make_dkd(out, "distill_loss_dkd", temperature, alpha, beta, 0);
}

int distill_loss_dkd_ls(distill_loss **out, float temperature, float alpha, float beta)
{
    return make_dkd(out, "distill_loss_dkd_ls", temperature, alpha, beta, 1);
}

int distill_loss_dist(distill_loss **out, float temperature, float beta, float gamma)
{
    int rc = check_out(out, "distill_loss_dist");
    if (rc)
        return rc;
    if (!is_finite(temperature) || temperature <= 0.0f)
        return seterr(DISTILL_EINVAL, "dist: temperature = %g must be a positive number",
                      (double)temperature);
    if (!is_finite(beta) || beta < 0.0f || !is_finite(gamma) || gamma < 0.0f)
        return seterr(DISTILL_EINVAL, "dist: beta = %g and gamma = %g must be finite and >= 0",
                      (double)beta, (double)gamma);
    loss_params p = {0};
    p.temperature = temperature;
    p.beta = beta;
    p.gamma = gamma;
    return builtin(out, &loss_vt_dist, LOSS_DIST, &p, NULL, NULL);
}

int distill_loss_mlkd(distill_loss **out, int standardize, int mask)
{
    int rc = check_out(out, "distill_loss_mlkd");
    if (rc)
        return rc;
    if ((standardize != 0 && standardize != 1) || (mask != 0 && mask != 1))
        return seterr(DISTILL_EINVAL, "mlkd: standardize = %d and mask = %d must be 0 or 1",
                      standardize, mask);
    loss_params p = {0};
    p.standardize = standardize;
    p.mask = mask;
    return builtin(out, &loss_vt_mlkd, LOSS_MLKD, &p, NULL, NULL);
}

int distill_loss_fitnets(distill_loss **out, const char *student_node, const char *teacher_node)
{
    int rc = check_out(out, "distill_loss_fitnets");
    if (!rc)
        rc = check_nodes("distill_loss_fitnets", student_node, teacher_node);
    if (rc)
        return rc;
    loss_params p = {0};
    return builtin(out, &loss_vt_fitnets, LOSS_FITNETS, &p, student_node, teacher_node);
}

int distill_loss_attention(distill_loss **out, const char *student_node,
                           const char *teacher_node, float p_exp)
{
    int rc = check_out(out, "distill_loss_attention");
    if (!rc)
        rc = check_nodes("distill_loss_attention", student_node, teacher_node);
    if (rc)
        return rc;
    if (!is_finite(p_exp) || p_exp <= 0.0f)
        return seterr(DISTILL_EINVAL, "at: p = %g must be a positive number", (double)p_exp);
    loss_params p = {0};
    p.p = p_exp;
    return builtin(out, &loss_vt_at, LOSS_AT, &p, student_node, teacher_node);
}

int distill_loss_similarity(distill_loss **out, const char *student_node,
                            const char *teacher_node)
{
    int rc = check_out(out, "distill_loss_similarity");
    if (!rc)
        rc = check_nodes("distill_loss_similarity", student_node, teacher_node);
    if (rc)
        return rc;
    loss_params p = {0};
    return builtin(out, &loss_vt_sp, LOSS_SP, &p, student_node, teacher_node);
}

int distill_loss_rkd(distill_loss **out, const char *student_node, const char *teacher_node,
                     float w_dist, float w_angle)
{
    int rc = check_out(out, "distill_loss_rkd");
    if (!rc)
        rc = check_nodes("distill_loss_rkd", student_node, teacher_node);
    if (rc)
        return rc;
    if (!is_finite(w_dist) || w_dist < 0.0f || !is_finite(w_angle) || w_angle < 0.0f)
        return seterr(DISTILL_EINVAL, "rkd: w_dist = %g and w_angle = %g must be finite and >= 0",
                      (double)w_dist, (double)w_angle);
    loss_params p = {0};
    p.w_dist = w_dist;
    p.w_angle = w_angle;
    return builtin(out, &loss_vt_rkd, LOSS_RKD, &p, student_node, teacher_node);
}

int distill_loss_pkt(distill_loss **out, const char *student_node, const char *teacher_node)
{
    int rc = check_out(out, "distill_loss_pkt");
    if (!rc)
        rc = check_nodes("distill_loss_pkt", student_node, teacher_node);
    if (rc)
        return rc;
    loss_params p = {0};
    return builtin(out, &loss_vt_pkt, LOSS_PKT, &p, student_node, teacher_node);
}

void distill_loss_free(distill_loss *l)
{
    if (!l)
        return;
    if (l->kind == LOSS_CUSTOM && l->vt.destroy)
        l->vt.destroy(l->payload);
    xfree(l->scratch_logits);
    xfree(l->scratch_feat);
    xfree(l->name);
    xfree(l->student_node);
    xfree(l->teacher_node);
    xfree(l);
}

/* ============================================================ accessors */

const char *distill_loss_name(const distill_loss *l)
{
    return l ? l->name : NULL;
}

const char *distill_loss_student_node(const distill_loss *l)
{
    return l ? l->student_node : NULL;
}

const char *distill_loss_teacher_node(const distill_loss *l)
{
    return l ? l->teacher_node : NULL;
}

int distill_loss_needs_labels(const distill_loss *l)
{
    return l ? l->needs_labels : 0;
}

int distill_loss_needs_teacher(const distill_loss *l)
{
    return l ? l->needs_teacher : 0;
}

/* =========================================================== validation */

static void format_dims(char *buf, size_t cap, const distill_tensor *t)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int d = 0; d < t->rank && k + 1 < cap; d++) {
        int w = snprintf(buf + k, cap - k, d ? ", %lld" : "(%lld", (long long)t->dims[d]);
        if (w < 0)
            return;
        k += (size_t)w;
    }
    if (k + 1 < cap)
        snprintf(buf + k, cap - k, ")");
}

int loss_check_taps(const distill_loss *l, int64_t n, const distill_tensor *s,
                    const distill_tensor *t)
{
    const char *sn = l->student_node ? l->student_node : "?";
    const char *tn = l->teacher_node ? l->teacher_node : "?";
    if (!s || !t)
        return seterr(DISTILL_EINVAL, "loss '%s': the %s tap '%s' was not given", l->name,
                      !s ? "student" : "teacher", !s ? sn : tn);
    char sd[160], td[160];
    format_dims(sd, sizeof sd, s);
    format_dims(td, sizeof td, t);
    if (s->rank < 1 || s->dims[0] != n || t->rank < 1 || t->dims[0] != n)
        return seterr(DISTILL_ESHAPE,
                      "loss '%s': student '%s' %s and teacher '%s' %s must both have the batch "
                      "size %lld first",
                      l->name, sn, sd, tn, td, (long long)n);
    switch (l->taps) {
    case LOSS_TAPS_SAME_SHAPE: {
        int same = s->rank == t->rank;
        for (int d = 0; same && d < s->rank; d++)
            same = s->dims[d] == t->dims[d];
        if (!same)
            return seterr(DISTILL_ESHAPE,
                          "loss '%s': student '%s' %s and teacher '%s' %s must have the same "
                          "shape",
                          l->name, sn, sd, tn, td);
        break;
    }
    case LOSS_TAPS_SAME_SPATIAL: {
        int same = s->rank >= 3 && s->rank == t->rank;
        for (int d = 2; same && d < s->rank; d++)
            same = s->dims[d] == t->dims[d];
        if (!same)
            return seterr(DISTILL_ESHAPE,
                          "loss '%s': student '%s' %s and teacher '%s' %s must be (n, C, "
                          "spatial...) maps with the same spatial size",
                          l->name, sn, sd, tn, td);
        break;
    }
    default:
        break;
    }
    return DISTILL_OK;
}

static int check_finite_input(const distill_loss *l, const char *what, const float *x,
                              size_t count, int64_t row)
{
    size_t at = first_nonfinite(x, count);
    if (at == count)
        return DISTILL_OK;
    int64_t bad = (int64_t)at;
    if (row > 0)
        return seterr(DISTILL_ENONFINITE, "loss '%s': %s[%lld, %lld] is %g", l->name, what,
                      (long long)(bad / row), (long long)(bad % row), (double)x[bad]);
    return seterr(DISTILL_ENONFINITE, "loss '%s': %s element %lld is %g", l->name, what,
                  (long long)bad, (double)x[bad]);
}

static int validate(const distill_loss *l, const distill_loss_batch *b)
{
    if (b->n < 1)
        return seterr(DISTILL_EINVAL, "loss '%s': batch size n = %lld must be >= 1", l->name,
                      (long long)b->n);
    if (b->classes < 2)
        return seterr(DISTILL_EINVAL, "loss '%s': classes = %lld must be >= 2", l->name,
                      (long long)b->classes);
    size_t count;
    if (size_mul((size_t)b->n, (size_t)b->classes, &count) || count > ((size_t)1 << 40))
        return seterr(DISTILL_EINVAL, "loss '%s': batch of %lld x %lld logits is too large",
                      l->name, (long long)b->n, (long long)b->classes);
    if (!b->student_logits)
        return seterr(DISTILL_EINVAL, "loss '%s': student_logits is NULL", l->name);
    if (l->needs_teacher_logits && !b->teacher_logits)
        return seterr(DISTILL_EINVAL, "loss '%s': teacher_logits is NULL", l->name);
    if (l->needs_labels && !b->labels) {
        if (l->kind == LOSS_KD)
            return seterr(DISTILL_EINVAL, "loss '%s': kd with alpha < 1 needs labels", l->name);
        return seterr(DISTILL_EINVAL, "loss '%s' needs labels", l->name);
    }
    if (b->labels)
        for (int64_t i = 0; i < b->n; i++)
            if (b->labels[i] < 0 || b->labels[i] >= b->classes)
                return seterr(DISTILL_EINVAL,
                              "loss '%s': label of sample %lld is %ld, outside [0, %lld)",
                              l->name, (long long)i, (long)b->labels[i], (long long)b->classes);
    int rc;
    if (l->taps != LOSS_TAPS_NONE && (rc = loss_check_taps(l, b->n, b->student_feat,
                                                           b->teacher_feat)))
        return rc;

    /* Inputs the loss reads must be finite. */
    if ((rc = check_finite_input(l, "student_logits", b->student_logits, count, b->classes)))
        return rc;
    if (b->teacher_logits && (l->needs_teacher_logits || l->kind == LOSS_CUSTOM) &&
        (rc = check_finite_input(l, "teacher_logits", b->teacher_logits, count, b->classes)))
        return rc;
    if (l->taps != LOSS_TAPS_NONE) {
        char what[300];
        snprintf(what, sizeof what, "student '%s'", l->student_node);
        if ((rc = check_finite_input(l, what, b->student_feat->data, b->student_feat->numel, 0)))
            return rc;
        snprintf(what, sizeof what, "teacher '%s'", l->teacher_node);
        if ((rc = check_finite_input(l, what, b->teacher_feat->data, b->teacher_feat->numel, 0)))
            return rc;
    }
    return DISTILL_OK;
}

/* Grow a scratch buffer to `count` floats and zero it. */
static float *scratch(float **buf, size_t *cap, size_t count)
{
    if (count > *cap) {
        size_t bytes;
        if (size_mul(count, sizeof(float), &bytes))
            return NULL;
        float *p = xmalloc(bytes);
        if (!p)
            return NULL;
        xfree(*buf);
        *buf = p;
        *cap = count;
    }
    if (count)
        memset(*buf, 0, count * sizeof(float));
    return *buf;
}

/* ============================================================== forward */

int distill_loss_forward(distill_loss *l, const distill_loss_batch *host_batch, double *value,
                         distill_loss_grads *host_g)
{
    if (!l || !host_batch || !value)
        return seterr(DISTILL_EINVAL, "distill_loss_forward: %s is NULL",
                      !l ? "loss" : !host_batch ? "batch" : "value");
    /* the caller's structs up to their versions: the loss (a host's vtable
     * too) is given the library's own, complete ones */
    distill_loss_batch bfull = DISTILL_LOSS_BATCH_INIT, *batch = &bfull;
    COPY_OPTIONS(&bfull, host_batch, DISTILL_LOSS_BATCH_VERSION, "distill_loss_batch",
                 "distill_loss_forward");
    distill_loss_grads gfull = DISTILL_LOSS_GRADS_INIT, *g = NULL;
    if (host_g) {
        COPY_OPTIONS(&gfull, host_g, DISTILL_LOSS_GRADS_VERSION, "distill_loss_grads",
                     "distill_loss_forward");
        g = &gfull;
    }
    int rc = validate(l, batch);
    if (rc)
        return rc;
    const distill_tensor *sf = l->taps != LOSS_TAPS_NONE ? batch->student_feat : NULL;
    if (g && g->student_feat && sf) {
        const distill_tensor *gf = g->student_feat;
        int same = gf->rank == sf->rank;
        for (int d = 0; same && d < sf->rank; d++)
            same = gf->dims[d] == sf->dims[d];
        if (!same) {
            char a[160], b[160];
            format_dims(a, sizeof a, gf);
            format_dims(b, sizeof b, sf);
            return seterr(DISTILL_ESHAPE,
                          "loss '%s': gradient tensor %s does not match the student tap '%s' %s",
                          l->name, a, l->student_node, b);
        }
    }

    /* Zeroed scratch gradients: the vtable adds into them; they reach the
     * caller only once the value and every gradient are known finite.  A
     * host loss always gets both buffers; a built-in only those the caller
     * asked for (it skips the work for the others). */
    const int custom = l->kind == LOSS_CUSTOM;
    const int want_logits = custom || (g && g->student_logits);
    const int want_feat = sf && (custom || (g && g->student_feat));
    size_t nl = (size_t)batch->n * (size_t)batch->classes;
    float *gl = NULL;
    if (want_logits &&
        !(gl = scratch(&l->scratch_logits, &l->scratch_logits_cap, nl)))
        return seterr(DISTILL_ENOMEM, "loss '%s': out of memory for gradients", l->name);
    struct distill_tensor gft;
    distill_loss_grads sg = {DISTILL_LOSS_GRADS_VERSION, gl, NULL};
    if (want_feat) {
        float *gfd = scratch(&l->scratch_feat, &l->scratch_feat_cap, sf->numel);
        if (!gfd)
            return seterr(DISTILL_ENOMEM, "loss '%s': out of memory for gradients", l->name);
        gft = *sf;
        gft.cap = sf->numel;
        gft.data = gfd;
        sg.student_feat = &gft;
    }

    double v = 0.0;
    if (custom) /* so that a host's failure without a message is seen */
        util_clear_error();
    rc = l->vt.forward(batch, &v, &sg, l->payload);
    if (rc != DISTILL_OK) {
        if (!custom)
            return rc;
        if (rc > 0)
            return seterr(DISTILL_EINVAL, "loss '%s': forward returned %d, not a status", l->name,
                          rc);
        if (util_last_error()[0])
            return seterr(rc, "loss '%s': %s", l->name, util_last_error());
        return seterr(rc, "loss '%s': forward failed (%s)", l->name, distill_strerror(rc));
    }
    if (!isfinite(v))
        return seterr(DISTILL_ENONFINITE, "loss '%s' is %g", l->name, v);
    size_t bad = gl ? first_nonfinite(gl, nl) : nl;
    if (bad < nl)
        return seterr(DISTILL_ENONFINITE, "loss '%s': gradient of student_logits[%lld, %lld] is %g",
                      l->name, (long long)(bad / (size_t)batch->classes),
                      (long long)(bad % (size_t)batch->classes), (double)gl[bad]);
    if (sg.student_feat &&
        (bad = first_nonfinite(sg.student_feat->data, (size_t)sf->numel)) < (size_t)sf->numel)
        return seterr(DISTILL_ENONFINITE,
                      "loss '%s': gradient of student '%s' element %lld is %g", l->name,
                      l->student_node, (long long)bad, (double)sg.student_feat->data[bad]);

    if (g && g->student_logits)
        for (size_t i = 0; i < nl; i++)
            g->student_logits[i] += gl[i];
    if (g && g->student_feat && sg.student_feat) {
        float *dst = g->student_feat->data;
        const float *src = sg.student_feat->data;
        for (size_t i = 0; i < sf->numel; i++)
            dst[i] += src[i];
    }
    *value = v;
    return DISTILL_OK;
}

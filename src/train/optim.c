/*
 * optim.c - SGD, Adam and AdamW over a model's contiguous parameter block
 * (include/distill/optim.h).
 *
 * The optimizer keeps a table of the model's trainable tensors (offset into
 * the parameter block, size, effective lr and decay multipliers, number of
 * updates received) sorted by offset.  A step walks the table, merges
 * neighbouring tensors that share their hyperparameters into runs, and
 * updates each run with one element-wise loop over params, grads and state.
 * Element-wise loops give the same bits for any thread count; the one
 * reduction, the gradient norm, is summed over fixed chunks in a fixed order,
 * so it does too.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/optim_internal.h"
#include "util/container.h"
#include "util/util.h"

/* Loops over fewer elements than this run on one thread. */
#define PAR_MIN 32768
/* The gradient norm is summed in chunks of this many elements. */
#define NORM_CHUNK 16384

#define STATE_MAGIC "DSTLOPTM"
#define STATE_FORMAT 1

typedef struct otensor {
    char *name;
    int kind;          /* distill_param_kind */
    size_t offset;     /* into the parameter block */
    size_t numel;
    double lr_mult;    /* 0: frozen */
    double wd_mult;    /* group multiplier, times 0 under no_decay_bn_bias */
    int64_t updates;   /* steps this tensor took part in (Adam bias correction, SGD's first) */
} otensor;

typedef struct ogroup {
    char *prefix;
    double lr_mult, wd_mult;
} ogroup;

struct distill_optimizer {
    distill_model *model;        /* borrowed */
    distill_optimizer_options o; /* o.lr and o.momentum / o.beta1 change with the setters */
    size_t n;                    /* parameter block length at creation */
    size_t n_model_params;       /* distill_model_param_count at creation */
    otensor *t;                  /* trainable tensors by offset */
    int n_t;
    ogroup *groups;
    int n_groups;
    int n_buf;                   /* state buffers of n floats each */
    float *state;                /* (n_buf, n) */
    double *partial;             /* per-chunk sums of squares */
    int64_t step;
    double grad_norm;            /* last computed, -1 before */
};

/* ------------------------------------------------------------- options */

int distill_optimizer_options_init(distill_optimizer_options *opts, unsigned int version)
{
    static const distill_optimizer_options init = DISTILL_OPTIMIZER_OPTIONS_INIT;
    INIT_STRUCT(opts, version, DISTILL_OPTIMIZER_OPTIONS_VERSION, init, "distill_optimizer_options",
                "distill_optimizer_options_init");
}

static int in_range(double x, double lo, double hi_excl)
{
    return x >= lo && x < hi_excl; /* false for NaN */
}

static int check_options(const distill_optimizer_options *o)
{
    if (o->kind < DISTILL_OPTIM_SGD || o->kind > DISTILL_OPTIM_ADAM)
        return seterr(DISTILL_EINVAL, "optimizer: unknown kind %d", o->kind);
    if (!in_range(o->lr, 0.0, INFINITY))
        return seterr(DISTILL_EINVAL, "optimizer: lr = %g must be finite and >= 0", o->lr);
    if (!in_range(o->momentum, 0.0, 1.0))
        return seterr(DISTILL_EINVAL, "optimizer: momentum = %g must be in [0, 1)", o->momentum);
    if (!(o->dampening >= 0.0 && o->dampening <= 1.0))
        return seterr(DISTILL_EINVAL, "optimizer: dampening = %g must be in [0, 1]",
                      o->dampening);
    if (o->kind == DISTILL_OPTIM_SGD && o->nesterov && (o->momentum <= 0.0 || o->dampening != 0.0))
        return seterr(DISTILL_EINVAL, "optimizer: Nesterov momentum needs momentum > 0 and "
                                      "dampening 0 (momentum %g, dampening %g)",
                      o->momentum, o->dampening);
    if (!in_range(o->weight_decay, 0.0, INFINITY))
        return seterr(DISTILL_EINVAL, "optimizer: weight_decay = %g must be finite and >= 0",
                      o->weight_decay);
    if (!in_range(o->beta1, 0.0, 1.0) || !in_range(o->beta2, 0.0, 1.0))
        return seterr(DISTILL_EINVAL, "optimizer: beta1 = %g and beta2 = %g must be in [0, 1)",
                      o->beta1, o->beta2);
    if (!(o->eps > 0.0 && isfinite(o->eps)))
        return seterr(DISTILL_EINVAL, "optimizer: eps = %g must be finite and > 0", o->eps);
    if (!in_range(o->max_grad_norm, 0.0, INFINITY))
        return seterr(DISTILL_EINVAL, "optimizer: max_grad_norm = %g must be finite and >= 0 "
                                      "(0 = no clipping)",
                      o->max_grad_norm);
    return DISTILL_OK;
}

/* --------------------------------------------------------------- groups */

static int no_decay_kind(int kind)
{
    return kind == DISTILL_PARAM_BIAS || kind == DISTILL_PARAM_BN_SCALE ||
           kind == DISTILL_PARAM_BN_SHIFT;
}

/* Recompute every tensor's multipliers from the groups and no_decay_bn_bias. */
static void apply_groups(distill_optimizer *opt)
{
    for (int i = 0; i < opt->n_t; i++) {
        otensor *t = &opt->t[i];
        size_t best = 0;
        int found = 0;
        t->lr_mult = t->wd_mult = 1.0;
        for (int g = 0; g < opt->n_groups; g++) {
            const ogroup *gr = &opt->groups[g];
            size_t len = strlen(gr->prefix);
            if (strncmp(t->name, gr->prefix, len) == 0 && (!found || len > best)) {
                found = 1;
                best = len;
                t->lr_mult = gr->lr_mult;
                t->wd_mult = gr->wd_mult;
            }
        }
        if (opt->o.no_decay_bn_bias && no_decay_kind(t->kind))
            t->wd_mult = 0.0;
    }
}

int distill_optimizer_set_group(distill_optimizer *opt, const char *name_prefix, double lr_mult,
                                double wd_mult)
{
    if (!opt || !name_prefix)
        return seterr(DISTILL_EINVAL, "distill_optimizer_set_group: NULL argument");
    if (!in_range(lr_mult, 0.0, INFINITY) || !in_range(wd_mult, 0.0, INFINITY))
        return seterr(DISTILL_EINVAL, "optimizer group '%s': lr_mult = %g and wd_mult = %g must "
                                      "be finite and >= 0",
                      name_prefix, lr_mult, wd_mult);
    size_t len = strlen(name_prefix);
    int matches = 0;
    for (int i = 0; i < opt->n_t && !matches; i++)
        matches = strncmp(opt->t[i].name, name_prefix, len) == 0;
    if (!matches)
        return seterr(DISTILL_ENOTFOUND, "optimizer group '%s': no trainable parameter name "
                                         "starts with it",
                      name_prefix);
    for (int g = 0; g < opt->n_groups; g++)
        if (strcmp(opt->groups[g].prefix, name_prefix) == 0) {
            opt->groups[g].lr_mult = lr_mult;
            opt->groups[g].wd_mult = wd_mult;
            apply_groups(opt);
            return DISTILL_OK;
        }
    ogroup *ng = xrealloc(opt->groups, (size_t)(opt->n_groups + 1) * sizeof *ng);
    if (!ng)
        return DISTILL_ENOMEM;
    opt->groups = ng;
    char *prefix = xstrdup(name_prefix);
    if (!prefix)
        return DISTILL_ENOMEM;
    ng[opt->n_groups].prefix = prefix;
    ng[opt->n_groups].lr_mult = lr_mult;
    ng[opt->n_groups].wd_mult = wd_mult;
    opt->n_groups++;
    apply_groups(opt);
    return DISTILL_OK;
}

int distill_optimizer_clear_groups(distill_optimizer *opt)
{
    if (!opt)
        return seterr(DISTILL_EINVAL, "distill_optimizer_clear_groups: optimizer is NULL");
    for (int g = 0; g < opt->n_groups; g++)
        xfree(opt->groups[g].prefix);
    xfree(opt->groups);
    opt->groups = NULL;
    opt->n_groups = 0;
    apply_groups(opt);
    return DISTILL_OK;
}

int distill_optimizer_param_hparams(const distill_optimizer *opt, const char *param_name,
                                    double *lr, double *weight_decay)
{
    if (!opt || !param_name)
        return seterr(DISTILL_EINVAL, "distill_optimizer_param_hparams: NULL argument");
    for (int i = 0; i < opt->n_t; i++)
        if (strcmp(opt->t[i].name, param_name) == 0) {
            if (lr)
                *lr = opt->o.lr * opt->t[i].lr_mult;
            if (weight_decay)
                *weight_decay = opt->o.weight_decay * opt->t[i].wd_mult;
            return DISTILL_OK;
        }
    return seterr(DISTILL_ENOTFOUND, "optimizer: no trainable parameter named '%s'", param_name);
}

/* ------------------------------------------------------ create and free */

static int by_offset(const void *a, const void *b)
{
    const otensor *x = a, *y = b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

int distill_optimizer_create(distill_optimizer **out, distill_model *model,
                             const distill_optimizer_options *opts)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_optimizer_create: out is NULL");
    *out = NULL;
    if (!model)
        return seterr(DISTILL_EINVAL, "distill_optimizer_create: model is NULL");
    distill_optimizer_options o = DISTILL_OPTIMIZER_OPTIONS_INIT;
    if (opts) {
        COPY_OPTIONS(&o, opts, DISTILL_OPTIMIZER_OPTIONS_VERSION, "distill_optimizer_options",
                     "distill_optimizer_create");
    }
    int rc = check_options(&o);
    if (rc)
        return rc;

    distill_optimizer *opt = xcalloc(1, sizeof *opt);
    if (!opt)
        return DISTILL_ENOMEM;
    opt->model = model;
    opt->o = o;
    opt->grad_norm = -1.0;
    const float *block = distill_model_param_block(model, &opt->n);
    opt->n_model_params = distill_model_param_count(model);

    size_t n_trainable = 0;
    distill_param_info info = DISTILL_PARAM_INFO_INIT;
    for (size_t i = 0; i < opt->n_model_params; i++)
        if ((rc = distill_model_param(model, i, &info)) != DISTILL_OK)
            goto fail;
        else if (info.trainable && info.grad)
            n_trainable++;
    if (n_trainable > (size_t)1 << 30) {
        rc = seterr(DISTILL_EINVAL, "optimizer: the model has too many parameter tensors");
        goto fail;
    }
    if (n_trainable && !(opt->t = xcalloc(n_trainable, sizeof *opt->t))) {
        rc = DISTILL_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < opt->n_model_params; i++) {
        distill_model_param(model, i, &info);
        if (!info.trainable || !info.grad)
            continue;
        otensor *t = &opt->t[opt->n_t];
        if (!(t->name = xstrdup(info.name))) {
            rc = DISTILL_ENOMEM;
            goto fail;
        }
        opt->n_t++;
        t->kind = info.kind;
        t->offset = (size_t)(info.data - block);
        t->numel = (size_t)info.numel;
        if (info.data < block || t->offset + t->numel > opt->n) {
            rc = seterr(DISTILL_ESTATE, "optimizer: parameter '%s' lies outside the model's "
                                        "parameter block",
                        info.name);
            goto fail;
        }
    }
    qsort(opt->t, (size_t)opt->n_t, sizeof *opt->t, by_offset);
    apply_groups(opt);

    opt->n_buf = o.kind == DISTILL_OPTIM_SGD ? (o.momentum != 0.0) : 2;
    size_t state_len;
    if (size_mul(opt->n, (size_t)opt->n_buf, &state_len) ||
        size_mul(state_len, sizeof(float), &state_len)) {
        rc = seterr(DISTILL_ENOMEM, "optimizer: the state would be too large");
        goto fail;
    }
    if (state_len && !(opt->state = xcalloc(1, state_len))) {
        rc = DISTILL_ENOMEM;
        goto fail;
    }
    if (!(opt->partial = xcalloc(opt->n / NORM_CHUNK + 1, sizeof(double)))) {
        rc = DISTILL_ENOMEM;
        goto fail;
    }
    *out = opt;
    return DISTILL_OK;
fail:
    distill_optimizer_free(opt);
    return rc;
}

void distill_optimizer_free(distill_optimizer *opt)
{
    if (!opt)
        return;
    for (int i = 0; i < opt->n_t; i++)
        xfree(opt->t[i].name);
    xfree(opt->t);
    for (int g = 0; g < opt->n_groups; g++)
        xfree(opt->groups[g].prefix);
    xfree(opt->groups);
    xfree(opt->state);
    xfree(opt->partial);
    xfree(opt);
}

distill_model *distill_optimizer_model(const distill_optimizer *opt)
{
    return opt ? opt->model : NULL;
}

/* ------------------------------------------------------------- setters */

int distill_optimizer_set_lr(distill_optimizer *opt, double lr)
{
    if (!opt)
        return seterr(DISTILL_EINVAL, "distill_optimizer_set_lr: optimizer is NULL");
    if (!in_range(lr, 0.0, INFINITY))
        return seterr(DISTILL_EINVAL, "optimizer: lr = %g must be finite and >= 0", lr);
    opt->o.lr = lr;
    return DISTILL_OK;
}

double distill_optimizer_lr(const distill_optimizer *opt)
{
    return opt ? opt->o.lr : 0.0;
}

int distill_optimizer_set_momentum(distill_optimizer *opt, double momentum)
{
    if (!opt)
        return seterr(DISTILL_EINVAL, "distill_optimizer_set_momentum: optimizer is NULL");
    if (!in_range(momentum, 0.0, 1.0))
        return seterr(DISTILL_EINVAL, "optimizer: momentum = %g must be in [0, 1)", momentum);
    if (opt->o.kind != DISTILL_OPTIM_SGD) {
        opt->o.beta1 = momentum;
        return DISTILL_OK;
    }
    if (momentum != 0.0 && opt->n_buf == 0)
        return seterr(DISTILL_ESTATE, "optimizer: SGD was created without momentum, so it has no "
                                      "momentum buffer; create it with momentum > 0");
    if (opt->o.nesterov && momentum == 0.0)
        return seterr(DISTILL_EINVAL, "optimizer: Nesterov momentum needs momentum > 0");
    opt->o.momentum = momentum;
    return DISTILL_OK;
}

int distill_optimizer_zero_grad(distill_optimizer *opt)
{
    if (!opt)
        return seterr(DISTILL_EINVAL, "distill_optimizer_zero_grad: optimizer is NULL");
    return distill_model_zero_grad(opt->model);
}

double distill_optimizer_grad_norm(const distill_optimizer *opt)
{
    return opt ? opt->grad_norm : -1.0;
}

int64_t distill_optimizer_step_count(const distill_optimizer *opt)
{
    return opt ? opt->step : 0;
}

float *optim_state_block(distill_optimizer *opt, size_t *count)
{
    if (count)
        *count = opt ? (size_t)opt->n_buf * opt->n : 0;
    return opt ? opt->state : NULL;
}

/* --------------------------------------------------------------- runs */

/*
 * The next run at or after tensor *i: tensors [first, *i) that are adjacent
 * in the block and share lr_mult, wd_mult and update count.  Frozen tensors
 * are skipped.  Returns 0 when there is none left.
 */
static int next_run(const distill_optimizer *opt, int *i, int *first, size_t *off, size_t *len)
{
    while (*i < opt->n_t && opt->t[*i].lr_mult == 0.0)
        (*i)++;
    if (*i >= opt->n_t)
        return 0;
    const otensor *a = &opt->t[*i];
    *first = *i;
    *off = a->offset;
    *len = a->numel;
    for ((*i)++; *i < opt->n_t; (*i)++) {
        const otensor *b = &opt->t[*i];
        if (b->offset != *off + *len || b->lr_mult != a->lr_mult || b->wd_mult != a->wd_mult ||
            b->updates != a->updates)
            break;
        *len += b->numel;
    }
    return 1;
}

/* Fetch the model's blocks, checking that its layout did not change. */
static int model_blocks(distill_optimizer *opt, float **p, float **g)
{
    size_t n, gn;
    *p = distill_model_param_block(opt->model, &n);
    *g = distill_model_grad_block(opt->model, &gn);
    if (n != opt->n || gn != opt->n ||
        distill_model_param_count(opt->model) != opt->n_model_params)
        return seterr(DISTILL_ESTATE, "optimizer: the model's parameters changed since the "
                                      "optimizer was created (%zu scalars then, %zu now)",
                      opt->n, n);
    return DISTILL_OK;
}

/* Sum of squares of x[0..n), in fixed chunks added in a fixed order. */
static double sum_squares(const float *x, size_t n, double *partial)
{
    int64_t chunks = (int64_t)((n + NORM_CHUNK - 1) / NORM_CHUNK);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t c = 0; c < chunks; c++) {
        size_t lo = (size_t)c * NORM_CHUNK, hi = lo + NORM_CHUNK < n ? lo + NORM_CHUNK : n;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (size_t i = lo; i < hi; i++)
            s += (double)x[i] * (double)x[i];
        partial[c] = s;
    }
    double s = 0.0;
    for (int64_t c = 0; c < chunks; c++)
        s += partial[c];
    return s;
}

/* DISTILL_ENONFINITE naming the first tensor that a step would update and
 * whose gradient is not finite; DISTILL_OK if there is none. */
static int find_nonfinite(const distill_optimizer *opt, const float *g)
{
    for (int i = 0; i < opt->n_t; i++) {
        const otensor *t = &opt->t[i];
        if (t->lr_mult != 0.0 && !all_finite(g + t->offset, t->numel))
            return seterr(DISTILL_ENONFINITE, "optimizer: the gradient of '%s' is not finite "
                                              "(NaN or infinite)",
                          t->name);
    }
    return DISTILL_OK;
}

int distill_optimizer_check_finite(distill_optimizer *opt)
{
    if (!opt)
        return seterr(DISTILL_EINVAL, "distill_optimizer_check_finite: optimizer is NULL");
    float *p, *g;
    int rc = model_blocks(opt, &p, &g);
    return rc ? rc : find_nonfinite(opt, g);
}

/* --------------------------------------------------------------- update */

/*
 * torch.optim.SGD on one run, per element (grad already times `scale`):
 *   d = grad + wd * p
 *   buf = d on the first step, else momentum * buf + (1 - dampening) * d
 *   d = d + momentum * buf (Nesterov) or buf
 *   p = p - lr * d
 */
static void sgd_run(float *restrict p, const float *restrict g, float *restrict buf, size_t n,
                    float scale, float lr, float wd, float mom, float damp1, int nesterov,
                    int first)
{
    int use_mom = buf && mom != 0.0f;
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float d = g[i] * scale;
        if (wd != 0.0f)
            d = d + wd * p[i];
        if (use_mom) {
            float b = first ? d : mom * buf[i] + damp1 * d;
            buf[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        p[i] = p[i] - lr * d;
    }
}

/*
 * torch.optim.Adam / AdamW on one run, per element (grad times `scale`):
 *   Adam:  d = grad + wd * p           AdamW: p = p * (1 - lr * wd)
 *   m = beta1 * m + (1 - beta1) * d
 *   v = beta2 * v + (1 - beta2) * d * d
 *   p = p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
 * with bc1 = 1 - beta1^t, bc2 = 1 - beta2^t at the tensor's t-th update.
 */
static void adam_run(float *restrict p, const float *restrict g, float *restrict m,
                     float *restrict v, size_t n, float scale, float wd, float decay, float b1,
                     float omb1, float b2, float omb2, float step_size, float bc2_sqrt, float eps)
{
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float d = g[i] * scale;
        float x = p[i];
        if (wd != 0.0f)
            d = d + wd * x;
        x = x * decay;
        float mi = b1 * m[i] + omb1 * d;
        float vi = b2 * v[i] + omb2 * d * d;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = x - step_size * (mi / denom);
    }
}

int distill_optimizer_step(distill_optimizer *opt)
{
    if (!opt)
        return seterr(DISTILL_EINVAL, "distill_optimizer_step: optimizer is NULL");
    float *p, *g;
    int rc = model_blocks(opt, &p, &g);
    if (rc)
        return rc;
    const distill_optimizer_options *o = &opt->o;

    /* Global gradient norm over the tensors that will be updated. */
    float scale = 1.0f;
    if (o->check_finite || o->max_grad_norm > 0.0) {
        double ss = 0.0;
        int i = 0, first;
        size_t off, len;
        while (next_run(opt, &i, &first, &off, &len))
            ss += sum_squares(g + off, len, opt->partial);
        opt->grad_norm = sqrt(ss);
        /* A sum of squares of finite floats cannot overflow a double, so
         * a non-finite norm means a non-finite gradient. */
        if (!isfinite(opt->grad_norm) && o->check_finite)
            return find_nonfinite(opt, g);
        if (o->max_grad_norm > 0.0) {
            double c = o->max_grad_norm / (opt->grad_norm + 1e-6);
            if (c < 1.0)
                scale = (float)c;
        }
    }

    int i = 0, first;
    size_t off, len;
    while (next_run(opt, &i, &first, &off, &len)) {
        const otensor *t = &opt->t[first];
        double lr = o->lr * t->lr_mult, wd = o->weight_decay * t->wd_mult;
        if (o->kind == DISTILL_OPTIM_SGD) {
            sgd_run(p + off, g + off, opt->state ? opt->state + off : NULL, len, scale, (float)lr,
                    (float)wd, (float)o->momentum, (float)(1.0 - o->dampening), o->nesterov,
                    t->updates == 0);
        } else {
            int adamw = o->kind == DISTILL_OPTIM_ADAMW;
            double step = (double)(t->updates + 1);
            double bc1 = 1.0 - pow(o->beta1, step), bc2 = 1.0 - pow(o->beta2, step);
            adam_run(p + off, g + off, opt->state + off, opt->state + opt->n + off, len, scale,
                     adamw ? 0.0f : (float)wd, adamw ? (float)(1.0 - lr * wd) : 1.0f,
                     (float)o->beta1, (float)(1.0 - o->beta1), (float)o->beta2,
                     (float)(1.0 - o->beta2), (float)(lr / bc1), (float)sqrt(bc2), (float)o->eps);
        }
    }
    for (int k = 0; k < opt->n_t; k++)
        if (opt->t[k].lr_mult != 0.0)
            opt->t[k].updates++;
    opt->step++;
    return DISTILL_OK;
}

/* ---------------------------------------------------------------- state */

/*
 * The state is a libdistill container (util/container.h), magic "DSTLOPTM":
 *   OPTH  u32 kind, u32 n_buf, u64 n (parameter block length),
 *         u64 n_tensors, i64 step, f64 lr, f64 momentum (SGD) or beta1,
 *         then per tensor in block order: u64 numel, i64 updates
 *   OPTS  n_buf * n f32: the state block
 * (f64 as the u64 of its IEEE-754 bits.)
 */
#define STATE_HEAD_FIXED 48

static size_t state_size(const distill_optimizer *opt)
{
    return CONTAINER_HEADER_SIZE + SECTION_OVERHEAD + STATE_HEAD_FIXED + 16 * (size_t)opt->n_t +
           SECTION_OVERHEAD + 4 * (size_t)opt->n_buf * opt->n + SECTION_OVERHEAD;
}

static uint64_t f64_bits(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static double bits_f64(uint64_t u)
{
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static const char *kind_name(uint32_t kind)
{
    switch (kind) {
    case DISTILL_OPTIM_SGD: return "SGD";
    case DISTILL_OPTIM_ADAMW: return "AdamW";
    case DISTILL_OPTIM_ADAM: return "Adam";
    default: return "unknown";
    }
}

int distill_optimizer_state_size(const distill_optimizer *opt, size_t *size)
{
    if (!opt || !size)
        return seterr(DISTILL_EINVAL, "distill_optimizer_state_size: NULL argument");
    *size = state_size(opt);
    return DISTILL_OK;
}

int optim_serialize(const distill_optimizer *opt, void **data, size_t *size)
{
    if (!opt || !data || !size)
        return seterr(DISTILL_EINVAL, "optim_serialize: NULL argument");
    cwriter w;
    int rc = cw_begin(&w, STATE_MAGIC, STATE_FORMAT, state_size(opt));
    if (rc)
        return rc;
    cw_section(&w, "OPTH");
    cw_u32(&w, (uint32_t)opt->o.kind);
    cw_u32(&w, (uint32_t)opt->n_buf);
    cw_u64(&w, opt->n);
    cw_u64(&w, (uint64_t)opt->n_t);
    cw_i64(&w, opt->step);
    cw_u64(&w, f64_bits(opt->o.lr));
    cw_u64(&w, f64_bits(opt->o.kind == DISTILL_OPTIM_SGD ? opt->o.momentum : opt->o.beta1));
    for (int i = 0; i < opt->n_t; i++) {
        cw_u64(&w, opt->t[i].numel);
        cw_i64(&w, opt->t[i].updates);
    }
    cw_end_section(&w);
    cw_section(&w, "OPTS");
    cw_f32s(&w, opt->state, (size_t)opt->n_buf * opt->n);
    cw_end_section(&w);
    return cw_finish(&w, data, size);
}

int distill_optimizer_save_state(const distill_optimizer *opt, void *buf, size_t size)
{
    if (!opt || !buf)
        return seterr(DISTILL_EINVAL, "distill_optimizer_save_state: NULL argument");
    size_t need = state_size(opt);
    if (size < need)
        return seterr(DISTILL_EINVAL, "optimizer state: the buffer holds %zu bytes, the state "
                                      "needs %zu",
                      size, need);
    void *data;
    size_t len;
    int rc = optim_serialize(opt, &data, &len);
    if (rc)
        return rc;
    memcpy(buf, data, len < need ? len : need);
    xfree(data);
    return len == need ? DISTILL_OK
                       : seterr(DISTILL_ESTATE, "optimizer state: %zu bytes written, %zu "
                                                "announced",
                                len, need);
}

int distill_optimizer_load_state(distill_optimizer *opt, const void *buf, size_t size)
{
    return optim_deserialize(opt, buf, size);
}

int optim_deserialize(distill_optimizer *opt, const void *data, size_t size)
{
    if (!opt || !data)
        return seterr(DISTILL_EINVAL, "distill_optimizer_load_state: NULL argument");
    static const char *const known[] = {"OPTH", "OPTS", NULL};
    creader r;
    csection h, st;
    int rc = cr_open(&r, data, size, STATE_MAGIC, STATE_FORMAT, "optimizer state");
    if (rc || (rc = cr_check_tags(&r, known)))
        return rc;
    if (!cr_find(&r, "OPTH", &h) || !cr_find(&r, "OPTS", &st))
        return seterr(DISTILL_EFORMAT, "optimizer state: section OPTH or OPTS is missing");
    uint32_t kind = cs_u32(&h), n_buf = cs_u32(&h);
    uint64_t n = cs_u64(&h), n_t = cs_u64(&h);
    int64_t step = cs_i64(&h);
    double lr = bits_f64(cs_u64(&h)), mom = bits_f64(cs_u64(&h));
    if (h.status)
        return h.status;
    if (kind != (uint32_t)opt->o.kind || n_buf != (uint32_t)opt->n_buf)
        return cs_fail(&h, DISTILL_EFORMAT, "saved by %s with %u state buffers; this optimizer "
                                            "is %s with %d",
                       kind_name(kind), n_buf, kind_name((uint32_t)opt->o.kind), opt->n_buf);
    if (n != opt->n || n_t != (uint64_t)opt->n_t)
        return cs_fail(&h, DISTILL_EFORMAT, "saved for %llu parameters in %llu tensors; this "
                                            "model has %zu in %d",
                       (unsigned long long)n, (unsigned long long)n_t, opt->n, opt->n_t);
    int sgd = opt->o.kind == DISTILL_OPTIM_SGD;
    if (step < 0 || !in_range(lr, 0.0, INFINITY) || !in_range(mom, 0.0, 1.0) ||
        (sgd && opt->n_buf == 0 && mom != 0.0) || (sgd && opt->o.nesterov && mom == 0.0))
        return cs_fail(&h, DISTILL_EFORMAT, "step %lld, lr %g or momentum %g out of range",
                       (long long)step, lr, mom);
    for (int i = 0; i < opt->n_t; i++) {
        uint64_t numel = cs_u64(&h);
        int64_t updates = cs_i64(&h);
        if (h.status)
            return h.status;
        if (numel != opt->t[i].numel || updates < 0 || updates > step)
            return cs_fail(&h, DISTILL_EFORMAT, "tensor %d ('%s'): %llu elements and %lld "
                                                "updates; the model's has %zu elements",
                           i, opt->t[i].name, (unsigned long long)numel, (long long)updates,
                           opt->t[i].numel);
    }
    if ((rc = cs_done(&h)))
        return rc;
    if (cs_remaining(&st) != 4 * (size_t)opt->n_buf * opt->n)
        return cs_fail(&st, DISTILL_EFORMAT, "%zu bytes, expected %zu", cs_remaining(&st),
                       4 * (size_t)opt->n_buf * opt->n);

    /* Everything checked: apply. */
    cr_find(&r, "OPTH", &h);
    h.pos = STATE_HEAD_FIXED;
    for (int i = 0; i < opt->n_t; i++) {
        cs_u64(&h);
        opt->t[i].updates = cs_i64(&h);
    }
    cs_f32s(&st, opt->state, (size_t)opt->n_buf * opt->n);
    opt->step = step;
    opt->o.lr = lr;
    if (sgd)
        opt->o.momentum = mom;
    else
        opt->o.beta1 = mom;
    return DISTILL_OK;
}

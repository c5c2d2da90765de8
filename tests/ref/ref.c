/*
 * ref.c - the naive double-precision reference described in ref.h.
 *
 * Layout of every buffer is NCHW, row-major; a rank-1 node of F features is
 * held as (F, 1, 1) so that batchnorm, add, concat and dropout need one code
 * path.  Each forward writes, per node, `out` (the value) and `mag` (the
 * same computation on absolute values, a bound on the rounding a float
 * implementation may incur, see ref.h).
 */
#include "ref.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REF_MAX_INPUTS 8

static char errbuf[512];

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return -1;
}

const char *ref_error(void)
{
    return errbuf;
}

/* ------------------------------------------------------------------ RNG */

void ref_rng_seed(ref_rng *r, uint64_t seed)
{
    r->state = seed;
}

uint64_t ref_rng_next(ref_rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double ref_rng_uniform(ref_rng *r)
{
    return (double)(ref_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

double ref_rng_normal(ref_rng *r)
{
    double u1 = ref_rng_uniform(r), u2 = ref_rng_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t ref_rng_below(ref_rng *r, uint64_t n)
{
    if (n == 0)
        return 0;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do
        v = ref_rng_next(r);
    while (v >= limit);
    return v % n;
}

void ref_fill_uniform(double *x, size_t n, double lo, double hi, ref_rng *r)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (double)(float)(lo + (hi - lo) * ref_rng_uniform(r));
}

void ref_fill_normal(double *x, size_t n, double mean, double stddev, ref_rng *r)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (double)(float)(mean + stddev * ref_rng_normal(r));
}

/* --------------------------------------------------------------- model */

typedef struct rnode {
    distill_node_info info;  /* copy; the strings are borrowed from the model */
    int n_in;
    int in[REF_MAX_INPUTS];  /* indexes of the input nodes */
    int rank;
    int64_t c, h, w;         /* per-image shape; rank 1 is (F, 1, 1) */
    int64_t dims[3];         /* {c, h, w}, for ref_node_dims */
    size_t size;             /* c * h * w */
    int p_weight, p_bias, p_mean, p_var; /* indexes into params, or -1 */
    double eps, slope;
    int gelu_tanh;
    double *out, *mag;       /* (n, c, h, w) */
    double *bn_mean, *bn_var, *bn_uvar; /* (c) */
    uint64_t sig;
} rnode;

struct ref_model {
    distill_model *m;
    ref_options opt;
    int n_nodes;
    rnode *nodes;
    int n_params;
    ref_param *params;
    int out_node;
    /* the last forward */
    int n;                   /* batch size the buffers are sized for; 0 = none */
    int training;
    int valid;
    double *x;               /* copy of its input, (n, input dims) */
};

static void free_buffers(ref_model *r)
{
    for (int i = 0; i < r->n_nodes; i++) {
        free(r->nodes[i].out);
        free(r->nodes[i].mag);
        r->nodes[i].out = r->nodes[i].mag = NULL;
    }
    free(r->x);
    r->x = NULL;
    r->n = 0;
    r->valid = 0;
}

void ref_model_free(ref_model *r)
{
    if (!r)
        return;
    free_buffers(r);
    for (int i = 0; i < r->n_nodes; i++) {
        free(r->nodes[i].bn_mean);
        free(r->nodes[i].bn_var);
        free(r->nodes[i].bn_uvar);
    }
    for (int i = 0; i < r->n_params; i++)
        free(r->params[i].data);
    free(r->params);
    free(r->nodes);
    free(r);
}

/* Register parameter "<node>.<suffix>" with the expected dims. */
static int add_param(ref_model *r, int node, const char *suffix, int kind, int rank,
                     const int64_t *dims, int *idx)
{
    char name[512];
    distill_param_info pi = DISTILL_PARAM_INFO_INIT;
    snprintf(name, sizeof name, "%s.%s", r->nodes[node].info.name, suffix);
    int st = distill_model_find_param(r->m, name, &pi);
    if (st != DISTILL_OK)
        return fail("ref: parameter '%s' not found (%d: %s)", name, st, distill_last_error());
    if (pi.kind != kind)
        return fail("ref: parameter '%s' has kind %d, expected %d", name, pi.kind, kind);
    if (pi.rank != rank)
        return fail("ref: parameter '%s' has rank %d, expected %d", name, pi.rank, rank);
    size_t numel = 1;
    for (int d = 0; d < rank; d++) {
        if (pi.dims[d] != dims[d])
            return fail("ref: parameter '%s' dim %d is %lld, expected %lld", name, d,
                        (long long)pi.dims[d], (long long)dims[d]);
        numel *= (size_t)dims[d];
    }
    if ((size_t)pi.numel != numel)
        return fail("ref: parameter '%s' numel %lld, expected %zu", name, (long long)pi.numel,
                    numel);
    int trainable = kind <= DISTILL_PARAM_BN_SHIFT;
    if (!pi.trainable != !trainable)
        return fail("ref: parameter '%s' trainable=%d, expected %d", name, pi.trainable,
                    trainable);
    if (!pi.data || (trainable && !pi.grad))
        return fail("ref: parameter '%s' has NULL data or grad", name);
    ref_param *p = &r->params[r->n_params];
    memset(p, 0, sizeof *p);
    p->name = pi.name;
    p->node = node;
    p->kind = kind;
    p->trainable = trainable;
    p->rank = rank;
    for (int d = 0; d < 4; d++)
        p->dims[d] = d < rank ? dims[d] : 1;
    p->numel = numel;
    p->data = malloc(numel * sizeof(double));
    if (!p->data)
        return fail("ref: out of memory");
    *idx = r->n_params++;
    return 0;
}

int ref_model_reload(ref_model *r)
{
    for (int i = 0; i < r->n_params; i++) {
        ref_param *p = &r->params[i];
        distill_param_info pi = DISTILL_PARAM_INFO_INIT;
        if (distill_model_find_param(r->m, p->name, &pi) != DISTILL_OK)
            return fail("ref: parameter '%s' vanished", p->name);
        for (size_t k = 0; k < p->numel; k++)
            p->data[k] = (double)pi.data[k];
    }
    r->valid = 0;
    return 0;
}

static int shape_is(const rnode *nd, int rank, int64_t c, int64_t h, int64_t w)
{
    return nd->rank == rank && nd->c == c && nd->h == h && nd->w == w;
}

/* Work out node i's shape and parameters from its info and inputs. */
static int setup_node(ref_model *r, int i)
{
    rnode *nd = &r->nodes[i];
    const distill_node_info *in = &nd->info;
    const rnode *a = nd->n_in > 0 ? &r->nodes[nd->in[0]] : NULL;
    const char *nm = in->name;
    int64_t dims[4];

    nd->p_weight = nd->p_bias = nd->p_mean = nd->p_var = -1;
    if (r->opt.override_attrs) {
        nd->eps = r->opt.bn_eps;
        nd->slope = r->opt.leaky_slope;
        nd->gelu_tanh = r->opt.gelu_tanh;
    } else {
        nd->eps = in->eps;
        nd->slope = in->alpha;
        nd->gelu_tanh = in->tanh_approx;
    }

    int want_inputs = 1;
    switch (in->op) {
    case DISTILL_OP_INPUT:
        want_inputs = 0;
        break;
    case DISTILL_OP_ADD:
        want_inputs = 2;
        break;
    case DISTILL_OP_CONCAT:
        want_inputs = -1;
        break;
    default:
        break;
    }
    if (want_inputs >= 0 && nd->n_in != want_inputs)
        return fail("ref: node '%s' (%s) has %d inputs, expected %d", nm,
                    distill_op_name(in->op), nd->n_in, want_inputs);

    switch (in->op) {
    case DISTILL_OP_INPUT:
        nd->rank = in->rank;
        nd->c = in->dims[0];
        nd->h = in->rank == 3 ? in->dims[1] : 1;
        nd->w = in->rank == 3 ? in->dims[2] : 1;
        break;
    case DISTILL_OP_CONV2D: {
        if (a->rank != 3)
            return fail("ref: conv2d '%s' on a rank-%d input", nm, a->rank);
        int g = in->groups, kh = in->kernel_h, kw = in->kernel_w;
        int64_t O = in->out_channels;
        if (g < 1 || a->c % g || O % g || kh < 1 || kw < 1 || in->stride_h < 1 ||
            in->stride_w < 1 || in->dilation_h < 1 || in->dilation_w < 1 || in->pad_h < 0 ||
            in->pad_w < 0)
            return fail("ref: conv2d '%s' has bad attributes", nm);
        int64_t eh = (int64_t)in->dilation_h * (kh - 1) + 1;
        int64_t ew = (int64_t)in->dilation_w * (kw - 1) + 1;
        int64_t oh = (a->h + 2 * in->pad_h - eh) / in->stride_h + 1;
        int64_t ow = (a->w + 2 * in->pad_w - ew) / in->stride_w + 1;
        if (a->h + 2 * in->pad_h < eh || a->w + 2 * in->pad_w < ew)
            return fail("ref: conv2d '%s': kernel larger than padded input", nm);
        nd->rank = 3;
        nd->c = O;
        nd->h = oh;
        nd->w = ow;
        dims[0] = O;
        dims[1] = a->c / g;
        dims[2] = kh;
        dims[3] = kw;
        if (add_param(r, i, "weight", DISTILL_PARAM_WEIGHT, 4, dims, &nd->p_weight))
            return -1;
        if (in->bias && add_param(r, i, "bias", DISTILL_PARAM_BIAS, 1, dims, &nd->p_bias))
            return -1;
        break;
    }
    case DISTILL_OP_LINEAR:
        if (a->rank != 1)
            return fail("ref: linear '%s' on a rank-%d input", nm, a->rank);
        nd->rank = 1;
        nd->c = in->out_channels;
        nd->h = nd->w = 1;
        dims[0] = nd->c;
        dims[1] = a->c;
        if (add_param(r, i, "weight", DISTILL_PARAM_WEIGHT, 2, dims, &nd->p_weight))
            return -1;
        if (in->bias && add_param(r, i, "bias", DISTILL_PARAM_BIAS, 1, dims, &nd->p_bias))
            return -1;
        break;
    case DISTILL_OP_BATCHNORM:
        nd->rank = a->rank;
        nd->c = a->c;
        nd->h = a->h;
        nd->w = a->w;
        dims[0] = nd->c;
        if (add_param(r, i, "weight", DISTILL_PARAM_BN_SCALE, 1, dims, &nd->p_weight) ||
            add_param(r, i, "bias", DISTILL_PARAM_BN_SHIFT, 1, dims, &nd->p_bias) ||
            add_param(r, i, "running_mean", DISTILL_PARAM_RUNNING_MEAN, 1, dims, &nd->p_mean) ||
            add_param(r, i, "running_var", DISTILL_PARAM_RUNNING_VAR, 1, dims, &nd->p_var))
            return -1;
        nd->bn_mean = calloc((size_t)nd->c, sizeof(double));
        nd->bn_var = calloc((size_t)nd->c, sizeof(double));
        nd->bn_uvar = calloc((size_t)nd->c, sizeof(double));
        if (!nd->bn_mean || !nd->bn_var || !nd->bn_uvar)
            return fail("ref: out of memory");
        break;
    case DISTILL_OP_RELU:
    case DISTILL_OP_RELU6:
    case DISTILL_OP_LEAKY_RELU:
    case DISTILL_OP_GELU:
    case DISTILL_OP_DROPOUT:
        nd->rank = a->rank;
        nd->c = a->c;
        nd->h = a->h;
        nd->w = a->w;
        break;
    case DISTILL_OP_MAXPOOL:
    case DISTILL_OP_AVGPOOL: {
        if (a->rank != 3)
            return fail("ref: pool '%s' on a rank-%d input", nm, a->rank);
        /* top and left padding are attributes; the bottom and right
         * padding (0 to half the kernel) are whatever gives the node's
         * output size, which must be the floor formula's for one of them */
        int kh = in->kernel_h, kw = in->kernel_w, sh = in->stride_h, sw = in->stride_w;
        int pt = in->pad_h, pl = in->pad_w;
        if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || pt < 0 || pl < 0 || pt > kh / 2 ||
            pl > kw / 2)
            return fail("ref: pool '%s' has bad attributes", nm);
        int okh = 0, okw = 0;
        for (int pb = 0; pb <= kh / 2; pb++)
            okh |= a->h + pt + pb >= kh && (a->h + pt + pb - kh) / sh + 1 == in->dims[1];
        for (int pr = 0; pr <= kw / 2; pr++)
            okw |= a->w + pl + pr >= kw && (a->w + pl + pr - kw) / sw + 1 == in->dims[2];
        if (!okh || !okw)
            return fail("ref: pool '%s': no bottom/right padding gives its output size", nm);
        nd->rank = 3;
        nd->c = a->c;
        nd->h = in->dims[1];
        nd->w = in->dims[2];
        break;
    }
    case DISTILL_OP_GLOBAL_AVGPOOL:
        if (a->rank != 3)
            return fail("ref: global avgpool '%s' on a rank-%d input", nm, a->rank);
        nd->rank = 3;
        nd->c = a->c;
        nd->h = nd->w = 1;
        break;
    case DISTILL_OP_ADD: {
        const rnode *b = &r->nodes[nd->in[1]];
        if (!shape_is(b, a->rank, a->c, a->h, a->w))
            return fail("ref: add '%s' of different shapes", nm);
        nd->rank = a->rank;
        nd->c = a->c;
        nd->h = a->h;
        nd->w = a->w;
        break;
    }
    case DISTILL_OP_CONCAT: {
        if (nd->n_in < 2)
            return fail("ref: concat '%s' has %d inputs", nm, nd->n_in);
        int64_t c = 0;
        for (int j = 0; j < nd->n_in; j++) {
            const rnode *b = &r->nodes[nd->in[j]];
            if (b->rank != a->rank || b->h != a->h || b->w != a->w)
                return fail("ref: concat '%s': input %d does not fit", nm, j);
            c += b->c;
        }
        nd->rank = a->rank;
        nd->c = c;
        nd->h = a->h;
        nd->w = a->w;
        break;
    }
    case DISTILL_OP_FLATTEN:
        nd->rank = 1;
        nd->c = a->c * a->h * a->w;
        nd->h = nd->w = 1;
        break;
    case DISTILL_OP_SOFTMAX:
        if (a->rank != 1)
            return fail("ref: softmax '%s' on a rank-%d input", nm, a->rank);
        nd->rank = 1;
        nd->c = a->c;
        nd->h = nd->w = 1;
        break;
    default:
        return fail("ref: node '%s' has unknown op %d", nm, in->op);
    }
    nd->size = (size_t)(nd->c * nd->h * nd->w);
    nd->dims[0] = nd->c;
    nd->dims[1] = nd->h;
    nd->dims[2] = nd->w;

    /* The library's idea of the shape must agree with ours. */
    int64_t mine[3] = {nd->c, nd->h, nd->w};
    if (in->rank != nd->rank)
        return fail("ref: node '%s' (%s): library says rank %d, reference %d", nm,
                    distill_op_name(in->op), in->rank, nd->rank);
    for (int d = 0; d < nd->rank; d++)
        if (in->dims[d] != mine[d])
            return fail("ref: node '%s' (%s): library says dim %d = %lld, reference %lld", nm,
                        distill_op_name(in->op), d, (long long)in->dims[d], (long long)mine[d]);
    return 0;
}

int ref_model_create(ref_model **out, distill_model *m, const ref_options *opts)
{
    static const ref_options defaults = REF_OPTIONS_INIT;
    *out = NULL;
    if (!m)
        return fail("ref: NULL model");
    ref_model *r = calloc(1, sizeof *r);
    if (!r)
        return fail("ref: out of memory");
    r->m = m;
    r->opt = opts ? *opts : defaults;
    size_t nn = distill_model_node_count(m);
    size_t np = distill_model_param_count(m);
    r->nodes = calloc(nn ? nn : 1, sizeof *r->nodes);
    r->params = calloc(np + 1, sizeof *r->params);
    if (!r->nodes || !r->params) {
        ref_model_free(r);
        return fail("ref: out of memory");
    }
    for (size_t i = 0; i < nn; i++) {
        rnode *nd = &r->nodes[i];
        r->n_nodes = (int)i + 1;
        nd->info.version = DISTILL_NODE_INFO_VERSION;
        int st = distill_model_node(m, i, &nd->info);
        if (st != DISTILL_OK) {
            ref_model_free(r);
            return fail("ref: distill_model_node(%zu) = %d", i, st);
        }
        if ((i == 0) != (nd->info.op == DISTILL_OP_INPUT)) {
            ref_model_free(r);
            return fail("ref: node %zu ('%s') op %d: only node 0 is the input", i,
                        nd->info.name, nd->info.op);
        }
        if (nd->info.n_inputs > REF_MAX_INPUTS || nd->info.n_inputs < 0) {
            ref_model_free(r);
            return fail("ref: node '%s' has %d inputs; the reference takes at most %d",
                        nd->info.name, nd->info.n_inputs, REF_MAX_INPUTS);
        }
        nd->n_in = nd->info.n_inputs;
        for (int j = 0; j < nd->n_in; j++) {
            nd->in[j] = -1;
            const char *in_name = "";
            distill_model_node_input(m, i, j, NULL, &in_name);
            for (size_t k = 0; k < i; k++)
                if (strcmp(r->nodes[k].info.name, in_name) == 0)
                    nd->in[j] = (int)k;
            if (nd->in[j] < 0) {
                ref_model_free(r);
                return fail("ref: node '%s' input '%s' is not an earlier node", nd->info.name,
                            in_name);
            }
        }
        if (setup_node(r, (int)i)) {
            ref_model_free(r);
            return -1;
        }
    }
    if ((size_t)r->n_params != np) {
        int found = r->n_params;
        ref_model_free(r);
        return fail("ref: the model has %zu parameter tensors, the reference found %d", np,
                    found);
    }
    const char *on = distill_model_output_name(m);
    r->out_node = on ? ref_find_node(r, on) : -1;
    if (r->out_node < 0) {
        ref_model_free(r);
        return fail("ref: output node '%s' not found", on ? on : "(null)");
    }
    if (ref_model_reload(r)) {
        ref_model_free(r);
        return -1;
    }
    *out = r;
    return 0;
}

int ref_node_count(const ref_model *r)
{
    return r->n_nodes;
}

int ref_find_node(const ref_model *r, const char *name)
{
    for (int i = 0; i < r->n_nodes; i++)
        if (strcmp(r->nodes[i].info.name, name) == 0)
            return i;
    return -1;
}

const char *ref_node_name(const ref_model *r, int node)
{
    return r->nodes[node].info.name;
}

int ref_node_input(const ref_model *r, int node, int j)
{
    return j >= 0 && j < r->nodes[node].n_in ? r->nodes[node].in[j] : -1;
}

int ref_node_op(const ref_model *r, int node)
{
    return r->nodes[node].info.op;
}

int ref_node_rank(const ref_model *r, int node)
{
    return r->nodes[node].rank;
}

const int64_t *ref_node_dims(const ref_model *r, int node)
{
    return r->nodes[node].dims;
}

size_t ref_node_size(const ref_model *r, int node)
{
    return r->nodes[node].size;
}

int ref_output_node(const ref_model *r)
{
    return r->out_node;
}

int ref_param_count(const ref_model *r)
{
    return r->n_params;
}

ref_param *ref_param_at(ref_model *r, int i)
{
    return i >= 0 && i < r->n_params ? &r->params[i] : NULL;
}

ref_param *ref_find_param(ref_model *r, const char *name)
{
    for (int i = 0; i < r->n_params; i++)
        if (strcmp(r->params[i].name, name) == 0)
            return &r->params[i];
    return NULL;
}

/* -------------------------------------------------------------- forward */

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h * 0x100000001B3ull;
}

static const double *pdata(const ref_model *r, int idx)
{
    return idx >= 0 ? r->params[idx].data : NULL;
}

/* out (n, O, OH, OW) = conv(in (n, C, H, W), weight (O, C/g, KH, KW)) + bias (O) */
static void conv2d_forward(const ref_model *r, rnode *nd, int n)
{
    const rnode *a = &r->nodes[nd->in[0]];
    const distill_node_info *in = &nd->info;
    const double *wt = pdata(r, nd->p_weight), *bias = pdata(r, nd->p_bias);
    int64_t C = a->c, H = a->h, W = a->w, O = nd->c, OH = nd->h, OW = nd->w;
    int64_t G = in->groups, Cg = C / G, Og = O / G;
    int64_t KH = in->kernel_h, KW = in->kernel_w;
    for (int64_t b = 0; b < n; b++)
        for (int64_t o = 0; o < O; o++) {
            int64_t g = o / Og;
            for (int64_t oy = 0; oy < OH; oy++)
                for (int64_t ox = 0; ox < OW; ox++) {
                    double s = bias ? bias[o] : 0.0, m = bias ? fabs(bias[o]) : 0.0;
                    for (int64_t c = 0; c < Cg; c++) {
                        int64_t ci = g * Cg + c;
                        for (int64_t ky = 0; ky < KH; ky++) {
                            int64_t iy = oy * in->stride_h - in->pad_h + ky * in->dilation_h;
                            if (iy < 0 || iy >= H)
                                continue;
                            for (int64_t kx = 0; kx < KW; kx++) {
                                int64_t ix = ox * in->stride_w - in->pad_w + kx * in->dilation_w;
                                if (ix < 0 || ix >= W)
                                    continue;
                                double wv = wt[((o * Cg + c) * KH + ky) * KW + kx];
                                size_t xi = (size_t)(((b * C + ci) * H + iy) * W + ix);
                                s += wv * a->out[xi];
                                m += fabs(wv) * a->mag[xi];
                            }
                        }
                    }
                    size_t yi = (size_t)(((b * O + o) * OH + oy) * OW + ox);
                    nd->out[yi] = s;
                    nd->mag[yi] = m;
                }
        }
}

/* out (n, O) = in (n, F) weight^T (F, O) + bias (O) */
static void linear_forward(const ref_model *r, rnode *nd, int n)
{
    const rnode *a = &r->nodes[nd->in[0]];
    const double *wt = pdata(r, nd->p_weight), *bias = pdata(r, nd->p_bias);
    int64_t F = a->c, O = nd->c;
    for (int64_t b = 0; b < n; b++)
        for (int64_t o = 0; o < O; o++) {
            double s = bias ? bias[o] : 0.0, m = bias ? fabs(bias[o]) : 0.0;
            for (int64_t f = 0; f < F; f++) {
                s += wt[o * F + f] * a->out[b * F + f];
                m += fabs(wt[o * F + f]) * a->mag[b * F + f];
            }
            nd->out[b * O + o] = s;
            nd->mag[b * O + o] = m;
        }
}

/* out (n, C, H, W) = gamma (C) * (in - mean) / sqrt(var + eps) + beta (C) */
static void batchnorm_forward(const ref_model *r, rnode *nd, int n, int training)
{
    const rnode *a = &r->nodes[nd->in[0]];
    const double *gamma = pdata(r, nd->p_weight), *beta = pdata(r, nd->p_bias);
    const double *rmean = pdata(r, nd->p_mean), *rvar = pdata(r, nd->p_var);
    int64_t C = nd->c, HW = nd->h * nd->w;
    double count = (double)n * (double)HW;
    for (int64_t c = 0; c < C; c++) {
        double mean, var, maxmag = 0.0;
        if (training) {
            double s = 0.0;
            for (int64_t b = 0; b < n; b++)
                for (int64_t k = 0; k < HW; k++) {
                    size_t i = (size_t)((b * C + c) * HW + k);
                    s += a->out[i];
                    if (a->mag[i] > maxmag)
                        maxmag = a->mag[i];
                }
            mean = s / count;
            double ss = 0.0;
            for (int64_t b = 0; b < n; b++)
                for (int64_t k = 0; k < HW; k++) {
                    double d = a->out[(b * C + c) * HW + k] - mean;
                    ss += d * d;
                }
            var = ss / count;
            nd->bn_mean[c] = mean;
            nd->bn_var[c] = var;
            nd->bn_uvar[c] = count > 1 ? ss / (count - 1) : NAN;
        } else {
            mean = rmean[c];
            var = rvar[c];
            maxmag = fabs(mean);
        }
        double inv = 1.0 / sqrt(var + nd->eps);
        for (int64_t b = 0; b < n; b++)
            for (int64_t k = 0; k < HW; k++) {
                size_t i = (size_t)((b * C + c) * HW + k);
                nd->out[i] = gamma[c] * (a->out[i] - mean) * inv + beta[c];
                nd->mag[i] = fabs(gamma[c]) * (a->mag[i] + maxmag) * inv + fabs(beta[c]);
            }
    }
}

static double gelu(double x, int tanh_form)
{
    if (tanh_form)
        return 0.5 * x *
               (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    return 0.5 * x * (1.0 + erf(x * 0.7071067811865476));
}

static void eltwise_forward(const ref_model *r, rnode *nd, int n)
{
    const rnode *a = &r->nodes[nd->in[0]];
    size_t total = (size_t)n * nd->size;
    uint64_t h = 0;
    for (size_t i = 0; i < total; i++) {
        double x = a->out[i], y;
        switch (nd->info.op) {
        case DISTILL_OP_RELU:
            y = x > 0 ? x : 0.0;
            h = mix(h, x > 0);
            break;
        case DISTILL_OP_RELU6:
            y = x > 0 ? (x < 6 ? x : 6.0) : 0.0;
            h = mix(h, x <= 0 ? 0 : x < 6 ? 1 : 2);
            break;
        case DISTILL_OP_LEAKY_RELU:
            y = x > 0 ? x : nd->slope * x;
            h = mix(h, x > 0);
            break;
        case DISTILL_OP_GELU:
            y = gelu(x, nd->gelu_tanh);
            break;
        default: /* dropout: the identity in the reference */
            y = x;
            break;
        }
        nd->out[i] = y;
        /* GELU's slope is at most 1.13; the others' at most 1 */
        nd->mag[i] = (nd->info.op == DISTILL_OP_GELU ? 1.2 : 1.0) * a->mag[i] + fabs(y);
    }
    nd->sig = h;
}

/* max/avg pooling, kernel kh x kw, strides sh, sw, top/left padding pt, pl
 * (floor mode; the output size fixes the bottom/right padding) */
static void pool_forward(const ref_model *r, rnode *nd, int n)
{
    const rnode *a = &r->nodes[nd->in[0]];
    int is_max = nd->info.op == DISTILL_OP_MAXPOOL;
    int64_t kh = nd->info.kernel_h, kw = nd->info.kernel_w;
    int64_t sh = nd->info.stride_h, sw = nd->info.stride_w;
    int64_t pt = nd->info.pad_h, pl = nd->info.pad_w;
    int64_t C = a->c, H = a->h, W = a->w, OH = nd->h, OW = nd->w;
    uint64_t h = 0;
    for (int64_t b = 0; b < n; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t oy = 0; oy < OH; oy++)
                for (int64_t ox = 0; ox < OW; ox++) {
                    double acc = is_max ? -INFINITY : 0.0, m = 0.0;
                    int64_t arg = -1;
                    for (int64_t ky = 0; ky < kh; ky++) {
                        int64_t iy = oy * sh - pt + ky;
                        if (iy < 0 || iy >= H)
                            continue;
                        for (int64_t kx = 0; kx < kw; kx++) {
                            int64_t ix = ox * sw - pl + kx;
                            if (ix < 0 || ix >= W)
                                continue;
                            size_t xi = (size_t)(((b * C + c) * H + iy) * W + ix);
                            double v = a->out[xi];
                            if (is_max) {
                                if (v > acc) {
                                    acc = v;
                                    arg = ky * kw + kx;
                                }
                                if (a->mag[xi] > m)
                                    m = a->mag[xi];
                            } else {
                                acc += v;
                                m += a->mag[xi];
                            }
                        }
                    }
                    if (!is_max) {
                        acc /= (double)(kh * kw);
                        m /= (double)(kh * kw);
                    } else {
                        h = mix(h, (uint64_t)(arg + 1));
                    }
                    size_t yi = (size_t)(((b * C + c) * OH + oy) * OW + ox);
                    nd->out[yi] = acc;
                    nd->mag[yi] = m;
                }
    nd->sig = h;
}

static void global_avgpool_forward(const ref_model *r, rnode *nd, int n)
{
    const rnode *a = &r->nodes[nd->in[0]];
    int64_t C = a->c, HW = a->h * a->w;
    for (int64_t b = 0; b < n; b++)
        for (int64_t c = 0; c < C; c++) {
            double s = 0.0, m = 0.0;
            for (int64_t k = 0; k < HW; k++) {
                s += a->out[(b * C + c) * HW + k];
                m += a->mag[(b * C + c) * HW + k];
            }
            nd->out[b * C + c] = s / (double)HW;
            nd->mag[b * C + c] = m / (double)HW;
        }
}

static void concat_forward(const ref_model *r, rnode *nd, int n)
{
    int64_t HW = nd->h * nd->w;
    for (int64_t b = 0; b < n; b++) {
        int64_t c0 = 0;
        for (int j = 0; j < nd->n_in; j++) {
            const rnode *a = &r->nodes[nd->in[j]];
            size_t len = (size_t)(a->c * HW);
            memcpy(nd->out + (b * nd->c + c0) * HW, a->out + b * a->c * HW, len * sizeof(double));
            memcpy(nd->mag + (b * nd->c + c0) * HW, a->mag + b * a->c * HW, len * sizeof(double));
            c0 += a->c;
        }
    }
}

/* softmax over the F features of each image */
static void softmax_forward(const ref_model *r, rnode *nd, int n)
{
    const rnode *a = &r->nodes[nd->in[0]];
    int64_t F = nd->c;
    for (int64_t b = 0; b < n; b++) {
        const double *x = a->out + b * F;
        double mx = -INFINITY, maxmag = 0.0, s = 0.0;
        for (int64_t f = 0; f < F; f++) {
            if (x[f] > mx)
                mx = x[f];
            if (a->mag[b * F + f] > maxmag)
                maxmag = a->mag[b * F + f];
        }
        for (int64_t f = 0; f < F; f++)
            s += exp(x[f] - mx);
        for (int64_t f = 0; f < F; f++) {
            double y = exp(x[f] - mx) / s;
            nd->out[b * F + f] = y;
            /* dy_i = y_i (dx_i - sum_j y_j dx_j): |dy_i| <= 2 y_i max |dx| */
            nd->mag[b * F + f] = y * (1.0 + 2.0 * maxmag);
        }
    }
}

static int ensure_buffers(ref_model *r, int n)
{
    if (r->n == n && r->x)
        return 0;
    free_buffers(r);
    for (int i = 0; i < r->n_nodes; i++) {
        size_t len = (size_t)n * r->nodes[i].size;
        r->nodes[i].out = malloc(len * sizeof(double));
        r->nodes[i].mag = malloc(len * sizeof(double));
        if (!r->nodes[i].out || !r->nodes[i].mag) {
            free_buffers(r);
            return fail("ref: out of memory");
        }
    }
    r->x = malloc((size_t)n * r->nodes[0].size * sizeof(double));
    if (!r->x) {
        free_buffers(r);
        return fail("ref: out of memory");
    }
    r->n = n;
    return 0;
}

/* Evaluate nodes first..end from the input already in r->x. */
static void forward_from(ref_model *r, int first)
{
    int n = r->n;
    for (int i = first; i < r->n_nodes; i++) {
        rnode *nd = &r->nodes[i];
        nd->sig = 0;
        switch (nd->info.op) {
        case DISTILL_OP_INPUT: {
            size_t len = (size_t)n * nd->size;
            for (size_t k = 0; k < len; k++) {
                nd->out[k] = r->x[k];
                nd->mag[k] = fabs(r->x[k]);
            }
            break;
        }
        case DISTILL_OP_CONV2D:
            conv2d_forward(r, nd, n);
            break;
        case DISTILL_OP_LINEAR:
            linear_forward(r, nd, n);
            break;
        case DISTILL_OP_BATCHNORM:
            batchnorm_forward(r, nd, n, r->training);
            break;
        case DISTILL_OP_RELU:
        case DISTILL_OP_RELU6:
        case DISTILL_OP_LEAKY_RELU:
        case DISTILL_OP_GELU:
        case DISTILL_OP_DROPOUT:
            eltwise_forward(r, nd, n);
            break;
        case DISTILL_OP_MAXPOOL:
        case DISTILL_OP_AVGPOOL:
            pool_forward(r, nd, n);
            break;
        case DISTILL_OP_GLOBAL_AVGPOOL:
            global_avgpool_forward(r, nd, n);
            break;
        case DISTILL_OP_ADD: {
            const rnode *a = &r->nodes[nd->in[0]], *b = &r->nodes[nd->in[1]];
            size_t len = (size_t)n * nd->size;
            for (size_t k = 0; k < len; k++) {
                nd->out[k] = a->out[k] + b->out[k];
                nd->mag[k] = a->mag[k] + b->mag[k];
            }
            break;
        }
        case DISTILL_OP_CONCAT:
            concat_forward(r, nd, n);
            break;
        case DISTILL_OP_FLATTEN: {
            const rnode *a = &r->nodes[nd->in[0]];
            size_t len = (size_t)n * nd->size;
            memcpy(nd->out, a->out, len * sizeof(double));
            memcpy(nd->mag, a->mag, len * sizeof(double));
            break;
        }
        case DISTILL_OP_SOFTMAX:
            softmax_forward(r, nd, n);
            break;
        default:
            break;
        }
    }
}

int ref_forward(ref_model *r, const double *x, int n, int training)
{
    if (n < 1)
        return fail("ref: batch size %d", n);
    if (ensure_buffers(r, n))
        return -1;
    if (r->x != x)
        memcpy(r->x, x, (size_t)n * r->nodes[0].size * sizeof(double));
    r->training = training;
    forward_from(r, 0);
    r->valid = 1;
    return 0;
}

const double *ref_node_output(const ref_model *r, int node)
{
    return r->nodes[node].out;
}

const double *ref_node_mag(const ref_model *r, int node)
{
    return r->nodes[node].mag;
}

int ref_bn_batch_stats(const ref_model *r, int node, const double **mean,
                       const double **var_biased, const double **var_unbiased)
{
    const rnode *nd = &r->nodes[node];
    if (nd->info.op != DISTILL_OP_BATCHNORM)
        return fail("ref: node '%s' is not a batchnorm", nd->info.name);
    if (!r->valid || !r->training)
        return fail("ref: no training forward");
    if (mean)
        *mean = nd->bn_mean;
    if (var_biased)
        *var_biased = nd->bn_var;
    if (var_unbiased)
        *var_unbiased = nd->bn_uvar;
    return 0;
}

uint64_t ref_signature(const ref_model *r)
{
    uint64_t h = 0;
    for (int i = 0; i < r->n_nodes; i++)
        h = mix(h, r->nodes[i].sig);
    return h;
}

/* ---------------------------------------------------------------- loss */

double ref_loss_value(const ref_model *r, const ref_loss *loss, int n)
{
    double L = 0.0;
    for (int t = 0; t < loss->n_taps; t++) {
        const rnode *nd = &r->nodes[loss->node[t]];
        size_t len = (size_t)n * nd->size;
        for (size_t k = 0; k < len; k++)
            L += nd->out[k] * loss->R[t][k];
    }
    return L;
}

/* ------------------------------------------------------ finite differences */

/* Make sure the activations are those of (x, n, training). */
static int ensure_forward(ref_model *r, const double *x, int n, int training)
{
    if (r->valid && r->n == n && r->training == training &&
        memcmp(r->x, x, (size_t)n * r->nodes[0].size * sizeof(double)) == 0)
        return 0;
    return ref_forward(r, x, n, training);
}

double ref_fd_param(ref_model *r, const double *x, int n, int training, const ref_loss *loss,
                    ref_param *p, size_t elem, double h, int *reliable)
{
    *reliable = 0;
    if (elem >= p->numel) {
        fail("ref: element %zu of '%s' out of range", elem, p->name);
        return NAN;
    }
    if (ensure_forward(r, x, n, training))
        return NAN;
    double v = p->data[elem];
    uint64_t s0 = ref_signature(r);
    p->data[elem] = v + h;
    forward_from(r, p->node);
    double lp = ref_loss_value(r, loss, n);
    uint64_t sp = ref_signature(r);
    p->data[elem] = v - h;
    forward_from(r, p->node);
    double lm = ref_loss_value(r, loss, n);
    uint64_t sm = ref_signature(r);
    p->data[elem] = v;
    forward_from(r, p->node);
    *reliable = sp == s0 && sm == s0;
    return (lp - lm) / (2.0 * h);
}

double ref_fd_input(ref_model *r, const double *x, int n, int training, const ref_loss *loss,
                    size_t elem, double h, int *reliable)
{
    *reliable = 0;
    if (elem >= (size_t)n * r->nodes[0].size) {
        fail("ref: input element %zu out of range", elem);
        return NAN;
    }
    if (ensure_forward(r, x, n, training))
        return NAN;
    double v = r->x[elem];
    uint64_t s0 = ref_signature(r);
    r->x[elem] = v + h;
    forward_from(r, 0);
    double lp = ref_loss_value(r, loss, n);
    uint64_t sp = ref_signature(r);
    r->x[elem] = v - h;
    forward_from(r, 0);
    double lm = ref_loss_value(r, loss, n);
    uint64_t sm = ref_signature(r);
    r->x[elem] = v;
    forward_from(r, 0);
    *reliable = sp == s0 && sm == s0;
    return (lp - lm) / (2.0 * h);
}

/* ----------------------------------------------------------- comparison */

void ref_cmp_init(ref_cmp *c)
{
    memset(c, 0, sizeof *c);
}

int ref_cmp_add(ref_cmp *c, size_t index, double a, double b, double tol)
{
    double d = fabs(a - b);
    int ok = d <= tol; /* false for NaN */
    c->checked++;
    if (!ok)
        c->failed++;
    if (d > c->max_abs || d != d)
        c->max_abs = d;
    double ratio = tol > 0 ? d / tol : (d > 0 ? INFINITY : 0.0);
    if (ratio > c->max_ratio || ratio != ratio || c->checked == 1) {
        c->max_ratio = ratio;
        c->worst = index;
        c->worst_a = a;
        c->worst_b = b;
        c->worst_tol = tol;
    }
    return ok;
}

/* ------------------------------------------------------- tensor helpers */

distill_tensor *ref_tensor_from(const double *x, int n, int rank, const int64_t *dims)
{
    int64_t d[DISTILL_MAX_RANK];
    size_t total = (size_t)n;
    d[0] = n;
    for (int i = 0; i < rank; i++) {
        d[i + 1] = dims[i];
        total *= (size_t)dims[i];
    }
    distill_tensor *t = NULL;
    if (distill_tensor_create(&t, rank + 1, d) != DISTILL_OK) {
        fail("ref: distill_tensor_create: %s", distill_last_error());
        return NULL;
    }
    float *f = distill_tensor_data(t);
    for (size_t i = 0; i < total; i++)
        f[i] = (float)x[i];
    return t;
}

void ref_tensor_to(const distill_tensor *t, double *out)
{
    const float *f = distill_tensor_data_const(t);
    size_t total = (size_t)distill_tensor_numel(t);
    for (size_t i = 0; i < total; i++)
        out[i] = (double)f[i];
}

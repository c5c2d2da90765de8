/*
 * graph.c - building a model: nodes, shape inference, parameter tensors,
 * weight initialization, and the query API.  Execution is in src/backend/.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/graph.h"

#define MAX_NAME 256

const char *distill_op_name(int op)
{
    static const char *const names[] = {
        "input", "conv2d", "linear", "batchnorm", "relu", "relu6", "leaky_relu", "gelu",
        "maxpool", "avgpool", "global_avgpool", "add", "concat", "flatten", "dropout", "softmax"};
    if (op < 0 || op >= (int)(sizeof names / sizeof names[0]))
        return "unknown";
    return names[op];
}

int model_find(const distill_model *m, const char *name)
{
    for (int i = 0; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].name, name) == 0)
            return i;
    return -1;
}

/* Drop the engine's state through the hook the engine installed with it. */
static void release_engine(distill_model *m)
{
    if (m->engine)
        m->engine_release(m->engine);
    m->engine = NULL;
    m->engine_release = NULL;
}

void model_invalidate(distill_model *m)
{
    release_engine(m);
    m->version++;
}

static int check_name(const distill_model *m, const char *name)
{
    if (!name || !*name)
        return seterr(DISTILL_EINVAL, "node name is NULL or empty");
    if (strlen(name) >= MAX_NAME)
        return seterr(DISTILL_EINVAL, "node name '%.32s...' is longer than %d bytes", name,
                      MAX_NAME - 1);
    if (model_find(m, name) >= 0)
        return seterr(DISTILL_EEXISTS, "a node named '%s' already exists", name);
    return DISTILL_OK;
}

/* Resolve input `in` of node `name` to an index. */
static int resolve(const distill_model *m, const char *name, const char *in, int *idx)
{
    if (!in)
        return seterr(DISTILL_EINVAL, "node '%s': input name is NULL", name);
    int i = model_find(m, in);
    if (i < 0)
        return seterr(DISTILL_ENOTFOUND, "node '%s': input '%s' does not exist (inputs must be "
                                         "added before the nodes that use them)",
                      name, in);
    *idx = i;
    return DISTILL_OK;
}

int model_add_node(distill_model *m, const char *name, int op, int n_inputs, const int *inputs,
                   int *idx)
{
    int rc = check_name(m, name);
    if (rc)
        return rc;
    if (m->n_nodes == m->cap_nodes) {
        int cap = m->cap_nodes ? m->cap_nodes * 2 : 16;
        node *nn = xrealloc(m->nodes, (size_t)cap * sizeof *nn);
        if (!nn)
            return DISTILL_ENOMEM;
        m->nodes = nn;
        m->cap_nodes = cap;
    }
    node *n = &m->nodes[m->n_nodes];
    memset(n, 0, sizeof *n);
    n->name = xstrdup(name);
    n->inputs = n_inputs ? xmalloc((size_t)n_inputs * sizeof *n->inputs) : NULL;
    if (!n->name || (n_inputs && !n->inputs)) {
        xfree(n->name);
        xfree(n->inputs);
        return DISTILL_ENOMEM;
    }
    if (n_inputs)
        memcpy(n->inputs, inputs, (size_t)n_inputs * sizeof *inputs);
    n->op = op;
    n->n_inputs = n_inputs;
    n->param_first = m->n_params;
    *idx = m->n_nodes++;
    return DISTILL_OK;
}

int model_add_param(distill_model *m, int node_idx, const char *suffix, int kind, int rank,
                    const int64_t *dims)
{
    node *n = &m->nodes[node_idx];
    if (m->n_params == m->cap_params) {
        int cap = m->cap_params ? m->cap_params * 2 : 32;
        param *np = xrealloc(m->params, (size_t)cap * sizeof *np);
        if (!np)
            return DISTILL_ENOMEM;
        m->params = np;
        m->cap_params = cap;
    }
    size_t numel = 1;
    for (int d = 0; d < rank; d++)
        if (size_mul(numel, (size_t)dims[d], &numel))
            return seterr(DISTILL_EINVAL, "node '%s': parameter '%s' is too large", n->name,
                          suffix);
    int stat = kind >= DISTILL_PARAM_RUNNING_MEAN;
    size_t old = stat ? m->n_sdata : m->n_pdata, total;
    if (size_add(old, numel, &total) || total > ((size_t)1 << 40))
        return seterr(DISTILL_EINVAL, "node '%s': parameters are too large", n->name);
    char *pname = xmalloc(strlen(n->name) + strlen(suffix) + 2);
    if (!pname)
        return DISTILL_ENOMEM;
    sprintf(pname, "%s.%s", n->name, suffix);
    if (stat) {
        float *s = xrealloc(m->sdata, total * sizeof(float));
        if (!s) {
            xfree(pname);
            return DISTILL_ENOMEM;
        }
        m->sdata = s;
        memset(s + old, 0, numel * sizeof(float));
        m->n_sdata = total;
    } else {
        float *p = xrealloc(m->pdata, total * sizeof(float));
        if (!p) {
            xfree(pname);
            return DISTILL_ENOMEM;
        }
        m->pdata = p;
        float *g = xrealloc(m->gdata, total * sizeof(float));
        if (!g) {
            xfree(pname);
            return DISTILL_ENOMEM; /* pdata stays larger than n_pdata: harmless */
        }
        m->gdata = g;
        memset(p + old, 0, numel * sizeof(float));
        memset(g + old, 0, numel * sizeof(float));
        m->n_pdata = total;
    }
    param *p = &m->params[m->n_params++];
    memset(p, 0, sizeof *p);
    p->name = pname;
    p->node = node_idx;
    p->kind = kind;
    p->rank = rank;
    for (int d = 0; d < rank; d++)
        p->dims[d] = dims[d];
    p->numel = numel;
    p->offset = old;
    n->n_params++;
    return DISTILL_OK;
}

/* Remove the last node (and its parameters) after a failure while adding it. */
static void drop_last_node(distill_model *m)
{
    node *n = &m->nodes[m->n_nodes - 1];
    while (m->n_params > n->param_first) {
        param *p = &m->params[--m->n_params];
        if (p->kind >= DISTILL_PARAM_RUNNING_MEAN)
            m->n_sdata = p->offset;
        else
            m->n_pdata = p->offset;
        xfree(p->name);
    }
    xfree(n->name);
    xfree(n->inputs);
    m->n_nodes--;
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

/* The most values one image may have at any node (16 GiB of floats): the
 * bound that keeps every per-image size and count below in int64. */
#define NODE_MAX_VALUES ((int64_t)1 << 32)

/* a * b into *out, or nonzero (and *out untouched) if it would pass INT64_MAX */
static int mul_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return 1;
    *out = r;
    return 0;
}

/* Values per image of a shape, or -1 past NODE_MAX_VALUES. */
static int64_t shape_values(int rank, const int64_t *dims)
{
    int64_t e = 1;
    for (int d = 0; d < rank; d++)
        if (mul_i64(e, dims[d], &e) || e > NODE_MAX_VALUES)
            return -1;
    return e;
}

/* Finish adding node idx: parameters exist; default-init them and drop plans.
 * A node too large for one image is removed again. */
static int finish_node(distill_model *m, int idx)
{
    const node *n = &m->nodes[idx];
    if (shape_values(n->rank, n->dims) < 0) {
        int rc = seterr(DISTILL_ESHAPE, "node '%s' would hold %lld x %lld x %lld values per "
                                        "image; at most %lld are allowed",
                        n->name, (long long)n->dims[0], (long long)(n->rank > 1 ? n->dims[1] : 1),
                        (long long)(n->rank > 2 ? n->dims[2] : 1), (long long)NODE_MAX_VALUES);
        drop_last_node(m);
        return rc;
    }
    rng r;
    rng_seed(&r, name_hash(m->nodes[idx].name));
    model_init_node(m, idx, DISTILL_INIT_DEFAULT, &r);
    m->output = idx;
    model_invalidate(m);
    return DISTILL_OK;
}

int distill_model_create(distill_model **out, const char *input_name, int rank,
                         const int64_t *dims)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_model_create: out is NULL");
    *out = NULL;
    if (rank != 1 && rank != 3)
        return seterr(DISTILL_EINVAL, "model input must have rank 1 (F) or 3 (C, H, W), not %d",
                      rank);
    if (!dims)
        return seterr(DISTILL_EINVAL, "distill_model_create: dims is NULL");
    for (int d = 0; d < rank; d++)
        if (dims[d] < 1 || dims[d] > (1 << 24))
            return seterr(DISTILL_EINVAL, "model input dim %d is %lld; must be in 1..%d", d,
                          (long long)dims[d], 1 << 24);
    if (shape_values(rank, dims) < 0)
        return seterr(DISTILL_EINVAL, "model input of %lld x %lld x %lld values per image; at "
                                      "most %lld are allowed",
                      (long long)dims[0], (long long)(rank > 1 ? dims[1] : 1),
                      (long long)(rank > 2 ? dims[2] : 1), (long long)NODE_MAX_VALUES);
    distill_model *m = xcalloc(1, sizeof *m);
    if (!m)
        return DISTILL_ENOMEM;
    int idx, rc = model_add_node(m, input_name, DISTILL_OP_INPUT, 0, NULL, &idx);
    if (rc) {
        distill_model_free(m); /* model_add_node may have allocated the node table */
        return rc;
    }
    node *n = &m->nodes[idx];
    n->rank = rank;
    for (int d = 0; d < rank; d++)
        n->dims[d] = dims[d];
    m->output = idx;
    rng_seed(&m->rng, 0x5eed);
    *out = m;
    return DISTILL_OK;
}

void distill_model_free(distill_model *m)
{
    if (!m)
        return;
    release_engine(m);
    for (int i = 0; i < m->n_nodes; i++) {
        xfree(m->nodes[i].name);
        xfree(m->nodes[i].inputs);
    }
    for (int i = 0; i < m->n_params; i++)
        xfree(m->params[i].name);
    xfree(m->nodes);
    xfree(m->params);
    xfree(m->pdata);
    xfree(m->gdata);
    xfree(m->sdata);
    meta_free(&m->meta);
    xfree(m);
}

#define CHECK_MODEL(m, fn)                                                   \
    do {                                                                     \
        if (!(m))                                                            \
            return seterr(DISTILL_EINVAL, "%s: model is NULL", fn);          \
    } while (0)

static int need_rank3(const distill_model *m, const char *what, const char *name, int in)
{
    const node *x = &m->nodes[in];
    if (x->rank != 3)
        return seterr(DISTILL_ESHAPE, "%s '%s': input '%s' has per-image rank %d, needs (C, H, W)",
                      what, name, x->name, x->rank);
    return DISTILL_OK;
}

int distill_conv2d_options_init(distill_conv2d_options *opts, unsigned int version)
{
    static const distill_conv2d_options init = DISTILL_CONV2D_OPTIONS_INIT;
    INIT_STRUCT(opts, version, DISTILL_CONV2D_OPTIONS_VERSION, init, "distill_conv2d_options",
                "distill_conv2d_options_init");
}

int distill_model_add_conv2d(distill_model *m, const char *name, const char *input,
                             int out_channels, const distill_conv2d_options *opts)
{
    CHECK_MODEL(m, "distill_model_add_conv2d");
    distill_conv2d_options o = DISTILL_CONV2D_OPTIONS_INIT;
    if (opts) {
        COPY_OPTIONS(&o, opts, DISTILL_CONV2D_OPTIONS_VERSION, "distill_conv2d_options",
                     "conv2d '%s'", name ? name : "?");
    }
    int rc = check_name(m, name), in = -1;
    if (rc || (rc = resolve(m, name, input, &in)) || (rc = need_rank3(m, "conv2d", name, in)))
        return rc;
    const node *x = &m->nodes[in];
    int64_t C = x->dims[0], H = x->dims[1], W = x->dims[2];
    if (o.kernel_h < 1 || o.kernel_w < 1 || o.stride_h < 1 || o.stride_w < 1 || o.pad_h < 0 ||
        o.pad_w < 0 || o.dilation_h < 1 || o.dilation_w < 1 || o.groups < 1 || out_channels < 1 ||
        o.kernel_h > 4096 || o.kernel_w > 4096 || o.pad_h > 4096 || o.pad_w > 4096 ||
        o.stride_h > 4096 || o.stride_w > 4096 || o.dilation_h > 4096 || o.dilation_w > 4096 ||
        out_channels > (1 << 20))
        return seterr(DISTILL_EINVAL, "conv2d '%s': kernel %dx%d, stride %dx%d, padding %dx%d, "
                                      "dilation %dx%d, groups %d, out channels %d: each must be "
                                      "positive (padding >= 0) and not huge",
                      name, o.kernel_h, o.kernel_w, o.stride_h, o.stride_w, o.pad_h, o.pad_w,
                      o.dilation_h, o.dilation_w, o.groups, out_channels);
    if (C % o.groups || out_channels % o.groups)
        return seterr(DISTILL_EINVAL, "conv2d '%s': %lld input and %d output channels are not "
                                      "both divisible by %d groups",
                      name, (long long)C, out_channels, o.groups);
    int64_t ekh = (int64_t)o.dilation_h * (o.kernel_h - 1) + 1;
    int64_t ekw = (int64_t)o.dilation_w * (o.kernel_w - 1) + 1;
    if (H + 2 * o.pad_h < ekh || W + 2 * o.pad_w < ekw)
        return seterr(DISTILL_ESHAPE, "conv2d '%s': the %lldx%lld kernel (with dilation) is larger "
                                      "than the %lldx%lld padded input '%s'",
                      name, (long long)ekh, (long long)ekw, (long long)(H + 2 * o.pad_h),
                      (long long)(W + 2 * o.pad_w), x->name);
    int64_t oh = (H + 2 * o.pad_h - ekh) / o.stride_h + 1, ow = (W + 2 * o.pad_w - ekw) / o.stride_w + 1;
    int64_t macs = out_channels;
    if (mul_i64(macs, oh, &macs) || mul_i64(macs, ow, &macs) || mul_i64(macs, C / o.groups, &macs) ||
        mul_i64(macs, o.kernel_h, &macs) || mul_i64(macs, o.kernel_w, &macs))
        return seterr(DISTILL_ESHAPE, "conv2d '%s': %d output channels over %lldx%lld positions "
                                      "with a %dx%d kernel on %lld channels is too large",
                      name, out_channels, (long long)oh, (long long)ow, o.kernel_h, o.kernel_w,
                      (long long)(C / o.groups));
    int idx;
    if ((rc = model_add_node(m, name, DISTILL_OP_CONV2D, 1, &in, &idx)))
        return rc;
    node *n = &m->nodes[idx];
    n->out_channels = out_channels;
    n->kh = o.kernel_h, n->kw = o.kernel_w, n->sh = o.stride_h, n->sw = o.stride_w;
    n->ph = o.pad_h, n->pw = o.pad_w, n->dh = o.dilation_h, n->dw = o.dilation_w;
    n->groups = o.groups;
    n->bias = o.bias != 0;
    n->rank = 3;
    n->dims[0] = out_channels;
    n->dims[1] = oh;
    n->dims[2] = ow;
    n->macs = macs;
    int64_t wd[4] = {out_channels, C / o.groups, o.kernel_h, o.kernel_w};
    int64_t bd[1] = {out_channels};
    if ((rc = model_add_param(m, idx, "weight", DISTILL_PARAM_WEIGHT, 4, wd)) ||
        (n->bias && (rc = model_add_param(m, idx, "bias", DISTILL_PARAM_BIAS, 1, bd)))) {
        drop_last_node(m);
        return rc;
    }
    return finish_node(m, idx);
}

int distill_model_add_linear(distill_model *m, const char *name, const char *input,
                             int out_features, int bias)
{
    CHECK_MODEL(m, "distill_model_add_linear");
    int rc = check_name(m, name), in = -1;
    if (rc || (rc = resolve(m, name, input, &in)))
        return rc;
    const node *x = &m->nodes[in];
    if (x->rank != 1)
        return seterr(DISTILL_ESHAPE, "linear '%s': input '%s' has per-image rank %d; flatten it "
                                      "first (linear takes vectors)",
                      name, x->name, x->rank);
    int64_t in_features = x->dims[0];
    if (out_features < 1 || out_features > (1 << 24))
        return seterr(DISTILL_EINVAL, "linear '%s': %d output features", name, out_features);
    int idx;
    if ((rc = model_add_node(m, name, DISTILL_OP_LINEAR, 1, &in, &idx)))
        return rc;
    node *n = &m->nodes[idx];
    n->out_channels = out_features;
    n->bias = bias != 0;
    n->rank = 1;
    n->dims[0] = out_features;
    n->macs = (int64_t)out_features * in_features;
    int64_t wd[2] = {out_features, in_features}, bd[1] = {out_features};
    if ((rc = model_add_param(m, idx, "weight", DISTILL_PARAM_WEIGHT, 2, wd)) ||
        (n->bias && (rc = model_add_param(m, idx, "bias", DISTILL_PARAM_BIAS, 1, bd)))) {
        drop_last_node(m);
        return rc;
    }
    return finish_node(m, idx);
}

/* A node with one input and the input's shape. */
static int add_unary(distill_model *m, const char *name, const char *input, int op, int *idx_out)
{
    int rc = check_name(m, name), in = -1;
    if (rc || (rc = resolve(m, name, input, &in)))
        return rc;
    int idx;
    if ((rc = model_add_node(m, name, op, 1, &in, &idx)))
        return rc;
    node *n = &m->nodes[idx];
    const node *x = &m->nodes[in];
    n->rank = x->rank;
    memcpy(n->dims, x->dims, sizeof n->dims);
    *idx_out = idx;
    return DISTILL_OK;
}

int distill_model_add_batchnorm(distill_model *m, const char *name, const char *input, float eps,
                                float momentum)
{
    CHECK_MODEL(m, "distill_model_add_batchnorm");
    if (!(eps > 0.0f && eps < 1.0f) || !(momentum >= 0.0f && momentum <= 1.0f))
        return seterr(DISTILL_EINVAL, "batchnorm '%s': eps %g must be in (0, 1) and momentum %g "
                                      "in [0, 1]",
                      name ? name : "?", (double)eps, (double)momentum);
    int idx, rc = add_unary(m, name, input, DISTILL_OP_BATCHNORM, &idx);
    if (rc)
        return rc;
    node *n = &m->nodes[idx];
    n->eps = eps;
    n->momentum = momentum;
    int64_t cd[1] = {n->dims[0]};
    if ((rc = model_add_param(m, idx, "weight", DISTILL_PARAM_BN_SCALE, 1, cd)) ||
        (rc = model_add_param(m, idx, "bias", DISTILL_PARAM_BN_SHIFT, 1, cd)) ||
        (rc = model_add_param(m, idx, "running_mean", DISTILL_PARAM_RUNNING_MEAN, 1, cd)) ||
        (rc = model_add_param(m, idx, "running_var", DISTILL_PARAM_RUNNING_VAR, 1, cd))) {
        drop_last_node(m);
        return rc;
    }
    return finish_node(m, idx);
}

int distill_model_add_relu(distill_model *m, const char *name, const char *input)
{
    CHECK_MODEL(m, "distill_model_add_relu");
    int idx, rc = add_unary(m, name, input, DISTILL_OP_RELU, &idx);
    return rc ? rc : finish_node(m, idx);
}

int distill_model_add_relu6(distill_model *m, const char *name, const char *input)
{
    CHECK_MODEL(m, "distill_model_add_relu6");
    int idx, rc = add_unary(m, name, input, DISTILL_OP_RELU6, &idx);
    return rc ? rc : finish_node(m, idx);
}

int distill_model_add_leaky_relu(distill_model *m, const char *name, const char *input,
                                 float slope)
{
    CHECK_MODEL(m, "distill_model_add_leaky_relu");
    if (!isfinite(slope))
        return seterr(DISTILL_EINVAL, "leaky_relu '%s': slope is not finite", name ? name : "?");
    int idx, rc = add_unary(m, name, input, DISTILL_OP_LEAKY_RELU, &idx);
    if (rc)
        return rc;
    m->nodes[idx].alpha = slope;
    return finish_node(m, idx);
}

int distill_model_add_gelu(distill_model *m, const char *name, const char *input,
                           int tanh_approximation)
{
    CHECK_MODEL(m, "distill_model_add_gelu");
    int idx, rc = add_unary(m, name, input, DISTILL_OP_GELU, &idx);
    if (rc)
        return rc;
    m->nodes[idx].tanh_approx = tanh_approximation != 0;
    return finish_node(m, idx);
}

int distill_pool2d_options_init(distill_pool2d_options *opts, unsigned int version)
{
    static const distill_pool2d_options init = DISTILL_POOL2D_OPTIONS_INIT;
    INIT_STRUCT(opts, version, DISTILL_POOL2D_OPTIONS_VERSION, init, "distill_pool2d_options",
                "distill_pool2d_options_init");
}

static int add_pool(distill_model *m, const char *name, const char *input, int op,
                    const distill_pool2d_options *o)
{
    const char *what = distill_op_name(op);
    int rc = check_name(m, name), in = -1;
    if (rc || (rc = resolve(m, name, input, &in)) || (rc = need_rank3(m, what, name, in)))
        return rc;
    int kh = o->kernel_h, kw = o->kernel_w, sh = o->stride_h, sw = o->stride_w;
    int pt = o->pad_top, pl = o->pad_left, pb = o->pad_bottom, pr = o->pad_right;
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || kh > 4096 || kw > 4096 || sh > 4096 ||
        sw > 4096 || pt < 0 || pl < 0 || pb < 0 || pr < 0 || pt > kh / 2 || pb > kh / 2 ||
        pl > kw / 2 || pr > kw / 2)
        return seterr(DISTILL_EINVAL, "%s '%s': kernel %dx%d, stride %dx%d, padding %d,%d,%d,%d "
                                      "(top, left, bottom, right): kernel and stride must be "
                                      "positive and each pad at most half its kernel",
                      what, name, kh, kw, sh, sw, pt, pl, pb, pr);
    const node *x = &m->nodes[in];
    if (x->dims[1] + pt + pb < kh || x->dims[2] + pl + pr < kw)
        return seterr(DISTILL_ESHAPE, "%s '%s': kernel %dx%d is larger than the padded %lldx%lld "
                                      "input",
                      what, name, kh, kw, (long long)(x->dims[1] + pt + pb),
                      (long long)(x->dims[2] + pl + pr));
    int idx;
    if ((rc = model_add_node(m, name, op, 1, &in, &idx)))
        return rc;
    node *n = &m->nodes[idx];
    x = &m->nodes[in];
    n->kh = kh, n->kw = kw;
    n->sh = sh, n->sw = sw;
    n->ph = pt, n->pw = pl; /* the engine takes bottom and right from the output size */
    n->dh = n->dw = 1;
    n->rank = 3;
    n->dims[0] = x->dims[0];
    n->dims[1] = (x->dims[1] + pt + pb - kh) / sh + 1;
    n->dims[2] = (x->dims[2] + pl + pr - kw) / sw + 1;
    return finish_node(m, idx);
}

void pool_end_pads(const distill_model *m, const node *n, int *pb, int *pr)
{
    const node *x = &m->nodes[n->inputs[0]];
    int64_t b = (n->dims[1] - 1) * n->sh + n->kh - x->dims[1] - n->ph;
    int64_t r = (n->dims[2] - 1) * n->sw + n->kw - x->dims[2] - n->pw;
    *pb = b < 0 ? 0 : (int)b;
    *pr = r < 0 ? 0 : (int)r;
}

/* The square, symmetric pools of distill_model_add_maxpool/avgpool. */
static int add_square_pool(distill_model *m, const char *name, const char *input, int op, int k,
                           int s, int p)
{
    distill_pool2d_options o = {DISTILL_POOL2D_OPTIONS_VERSION, k, k, s, s, p, p, p, p};
    return add_pool(m, name, input, op, &o);
}

int distill_model_add_pool2d(distill_model *m, const char *name, const char *input, int op,
                             const distill_pool2d_options *opts)
{
    CHECK_MODEL(m, "distill_model_add_pool2d");
    distill_pool2d_options o = DISTILL_POOL2D_OPTIONS_INIT;
    if (opts) {
        COPY_OPTIONS(&o, opts, DISTILL_POOL2D_OPTIONS_VERSION, "distill_pool2d_options",
                     "pool2d '%s'", name ? name : "?");
    }
    if (op != DISTILL_OP_MAXPOOL && op != DISTILL_OP_AVGPOOL)
        return seterr(DISTILL_EINVAL, "pool2d '%s': op %d is neither DISTILL_OP_MAXPOOL nor "
                                      "DISTILL_OP_AVGPOOL",
                      name ? name : "?", op);
    return add_pool(m, name, input, op, &o);
}

int distill_model_add_maxpool(distill_model *m, const char *name, const char *input, int kernel,
                              int stride, int pad)
{
    CHECK_MODEL(m, "distill_model_add_maxpool");
    return add_square_pool(m, name, input, DISTILL_OP_MAXPOOL, kernel, stride, pad);
}

int distill_model_add_avgpool(distill_model *m, const char *name, const char *input, int kernel,
                              int stride, int pad)
{
    CHECK_MODEL(m, "distill_model_add_avgpool");
    return add_square_pool(m, name, input, DISTILL_OP_AVGPOOL, kernel, stride, pad);
}

int distill_model_add_global_avgpool(distill_model *m, const char *name, const char *input)
{
    CHECK_MODEL(m, "distill_model_add_global_avgpool");
    int rc = check_name(m, name), in = -1;
    if (rc || (rc = resolve(m, name, input, &in)) ||
        (rc = need_rank3(m, "global_avgpool", name, in)))
        return rc;
    int idx;
    if ((rc = model_add_node(m, name, DISTILL_OP_GLOBAL_AVGPOOL, 1, &in, &idx)))
        return rc;
    node *n = &m->nodes[idx];
    const node *x = &m->nodes[in];
    n->kh = (int)x->dims[1];
    n->kw = (int)x->dims[2];
    n->sh = n->sw = 1;
    n->rank = 3;
    n->dims[0] = x->dims[0];
    n->dims[1] = n->dims[2] = 1;
    return finish_node(m, idx);
}

int distill_model_add_add(distill_model *m, const char *name, const char *a, const char *b)
{
    CHECK_MODEL(m, "distill_model_add_add");
    int rc = check_name(m, name), ia = -1, ib = -1;
    if (rc || (rc = resolve(m, name, a, &ia)) || (rc = resolve(m, name, b, &ib)))
        return rc;
    const node *x = &m->nodes[ia], *y = &m->nodes[ib];
    if (x->rank != y->rank || memcmp(x->dims, y->dims, (size_t)x->rank * sizeof x->dims[0]))
        return seterr(DISTILL_ESHAPE, "add '%s': inputs '%s' and '%s' have different shapes", name,
                      x->name, y->name);
    int in[2] = {ia, ib}, idx;
    if ((rc = model_add_node(m, name, DISTILL_OP_ADD, 2, in, &idx)))
        return rc;
    node *n = &m->nodes[idx];
    x = &m->nodes[ia];
    n->rank = x->rank;
    memcpy(n->dims, x->dims, sizeof n->dims);
    return finish_node(m, idx);
}

int distill_model_add_concat(distill_model *m, const char *name, int count,
                             const char *const *inputs)
{
    CHECK_MODEL(m, "distill_model_add_concat");
    int rc = check_name(m, name);
    if (rc)
        return rc;
    if (count < 2 || count > MAX_NODE_INPUTS || !inputs)
        return seterr(DISTILL_EINVAL, "concat '%s': needs 2 to %d inputs, got %d", name,
                      MAX_NODE_INPUTS, count);
    int in[MAX_NODE_INPUTS];
    int64_t channels = 0;
    for (int i = 0; i < count; i++) {
        if ((rc = resolve(m, name, inputs[i], &in[i])))
            return rc;
        const node *x = &m->nodes[in[i]], *x0 = &m->nodes[in[0]];
        if (x->rank != x0->rank || (x->rank == 3 && (x->dims[1] != x0->dims[1] ||
                                                     x->dims[2] != x0->dims[2])))
            return seterr(DISTILL_ESHAPE, "concat '%s': input '%s' does not match '%s' in rank or "
                                          "in height and width",
                          name, x->name, x0->name);
        channels += x->dims[0];
    }
    int idx;
    if ((rc = model_add_node(m, name, DISTILL_OP_CONCAT, count, in, &idx)))
        return rc;
    node *n = &m->nodes[idx];
    const node *x0 = &m->nodes[in[0]];
    n->rank = x0->rank;
    memcpy(n->dims, x0->dims, sizeof n->dims);
    n->dims[0] = channels;
    return finish_node(m, idx);
}

int distill_model_add_flatten(distill_model *m, const char *name, const char *input)
{
    CHECK_MODEL(m, "distill_model_add_flatten");
    int idx, rc = add_unary(m, name, input, DISTILL_OP_FLATTEN, &idx);
    if (rc)
        return rc;
    node *n = &m->nodes[idx];
    if (n->rank == 3) {
        n->dims[0] = n->dims[0] * n->dims[1] * n->dims[2];
        n->dims[1] = n->dims[2] = 0;
        n->rank = 1;
    }
    return finish_node(m, idx);
}

int distill_model_add_dropout(distill_model *m, const char *name, const char *input, float p)
{
    CHECK_MODEL(m, "distill_model_add_dropout");
    if (!(p >= 0.0f && p < 1.0f))
        return seterr(DISTILL_EINVAL, "dropout '%s': p = %g must be in [0, 1)", name ? name : "?",
                      (double)p);
    int idx, rc = add_unary(m, name, input, DISTILL_OP_DROPOUT, &idx);
    if (rc)
        return rc;
    m->nodes[idx].alpha = p;
    return finish_node(m, idx);
}

int distill_model_add_softmax(distill_model *m, const char *name, const char *input)
{
    CHECK_MODEL(m, "distill_model_add_softmax");
    int rc = check_name(m, name), in = -1;
    if (rc || (rc = resolve(m, name, input, &in)))
        return rc;
    if (m->nodes[in].rank != 1)
        return seterr(DISTILL_ESHAPE, "softmax '%s': input '%s' must be a vector (F); flatten it "
                                      "first",
                      name, m->nodes[in].name);
    int idx;
    rc = add_unary(m, name, input, DISTILL_OP_SOFTMAX, &idx);
    return rc ? rc : finish_node(m, idx);
}

int distill_model_set_output(distill_model *m, const char *name)
{
    CHECK_MODEL(m, "distill_model_set_output");
    if (!name)
        return seterr(DISTILL_EINVAL, "distill_model_set_output: name is NULL");
    int i = model_find(m, name);
    if (i < 0)
        return seterr(DISTILL_ENOTFOUND, "set_output: no node named '%s'", name);
    if (m->output != i) {
        m->output = i;
        model_invalidate(m);
    }
    return DISTILL_OK;
}

/* ------------------------------------------------------------------ init */

static void fans(const distill_model *m, const param *p, double *fan_in, double *fan_out)
{
    (void)m;
    double rf = p->rank == 4 ? (double)p->dims[2] * (double)p->dims[3] : 1.0;
    *fan_in = (double)p->dims[1] * rf;
    *fan_out = (double)p->dims[0] * rf;
}

void model_init_node(distill_model *m, int i, int scheme, rng *r)
{
    node *n = &m->nodes[i];
    double fan_in = 1, fan_out = 1;
    for (int k = n->param_first; k < n->param_first + n->n_params; k++) {
        param *p = &m->params[k];
        float *d = param_data(m, p);
        if (p->kind == DISTILL_PARAM_WEIGHT) {
            fans(m, p, &fan_in, &fan_out);
            double a;
            switch (scheme) {
            case DISTILL_INIT_KAIMING_NORMAL:
                a = sqrt(2.0 / fan_out);
                for (size_t j = 0; j < p->numel; j++)
                    d[j] = (float)(a * rng_normal(r));
                break;
            case DISTILL_INIT_KAIMING_UNIFORM:
                a = sqrt(6.0 / fan_in);
                goto uniform;
            case DISTILL_INIT_XAVIER_NORMAL:
                a = sqrt(2.0 / (fan_in + fan_out));
                for (size_t j = 0; j < p->numel; j++)
                    d[j] = (float)(a * rng_normal(r));
                break;
            case DISTILL_INIT_XAVIER_UNIFORM:
                a = sqrt(6.0 / (fan_in + fan_out));
                goto uniform;
            default:
                a = 1.0 / sqrt(fan_in);
            uniform:
                for (size_t j = 0; j < p->numel; j++)
                    d[j] = (float)(a * (2.0 * rng_uniform(r) - 1.0));
                break;
            }
        } else if (p->kind == DISTILL_PARAM_BIAS) {
            double a = scheme == DISTILL_INIT_DEFAULT ? 1.0 / sqrt(fan_in) : 0.0;
            for (size_t j = 0; j < p->numel; j++)
                d[j] = (float)(a * (2.0 * rng_uniform(r) - 1.0));
        } else {
            float v = (p->kind == DISTILL_PARAM_BN_SCALE || p->kind == DISTILL_PARAM_RUNNING_VAR)
                          ? 1.0f
                          : 0.0f;
            for (size_t j = 0; j < p->numel; j++)
                d[j] = v;
        }
    }
}

int distill_model_init_weights(distill_model *m, distill_init scheme, uint64_t seed)
{
    CHECK_MODEL(m, "distill_model_init_weights");
    if ((int)scheme < DISTILL_INIT_DEFAULT || scheme > DISTILL_INIT_XAVIER_UNIFORM)
        return seterr(DISTILL_EINVAL, "init_weights: unknown scheme %d", (int)scheme);
    rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->n_nodes; i++)
        model_init_node(m, i, scheme, &r);
    rng_seed(&m->rng, seed ^ 0xd20b0u);
    return DISTILL_OK;
}

/* ------------------------------------------------------------ parameters */

size_t distill_model_param_count(const distill_model *m)
{
    return m ? (size_t)m->n_params : 0;
}

/* Fill the caller's *out (version checked) up to its version. */
static void fill_param_info(distill_model *m, const param *p, distill_param_info *out)
{
    distill_param_info full = DISTILL_PARAM_INFO_INIT, *info = &full;
    info->name = p->name;
    info->node = m->nodes[p->node].name;
    info->kind = p->kind;
    info->trainable = p->kind < DISTILL_PARAM_RUNNING_MEAN;
    info->rank = p->rank;
    for (int d = 0; d < p->rank; d++)
        info->dims[d] = p->dims[d];
    info->numel = (int64_t)p->numel;
    info->data = param_data(m, p);
    info->grad = param_grad(m, p);
    struct_copy_out(out, &full, sizeof full);
}

int distill_model_param(distill_model *m, size_t i, distill_param_info *info)
{
    CHECK_MODEL(m, "distill_model_param");
    if (!info)
        return seterr(DISTILL_EINVAL, "distill_model_param: info is NULL");
    CHECK_VERSION(info->version, DISTILL_PARAM_INFO_VERSION, "distill_param_info",
                  "distill_model_param");
    if (i >= (size_t)m->n_params)
        return seterr(DISTILL_EINVAL, "parameter index %zu is out of range (the model has %d)", i,
                      m->n_params);
    fill_param_info(m, &m->params[i], info);
    return DISTILL_OK;
}

int distill_model_find_param(distill_model *m, const char *name, distill_param_info *info)
{
    CHECK_MODEL(m, "distill_model_find_param");
    if (!name || !info)
        return seterr(DISTILL_EINVAL, "distill_model_find_param: NULL argument");
    CHECK_VERSION(info->version, DISTILL_PARAM_INFO_VERSION, "distill_param_info",
                  "distill_model_find_param");
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) {
            fill_param_info(m, &m->params[i], info);
            return DISTILL_OK;
        }
    return seterr(DISTILL_ENOTFOUND, "no parameter named '%s'", name);
}

int64_t distill_model_num_params(const distill_model *m)
{
    return m ? (int64_t)m->n_pdata : 0;
}

float *distill_model_param_block(distill_model *m, size_t *count)
{
    if (count)
        *count = m ? m->n_pdata : 0;
    return m ? m->pdata : NULL;
}

float *distill_model_grad_block(distill_model *m, size_t *count)
{
    if (count)
        *count = m ? m->n_pdata : 0;
    return m ? m->gdata : NULL;
}

float *distill_model_stats_block(distill_model *m, size_t *count)
{
    if (count)
        *count = m ? m->n_sdata : 0;
    return m ? m->sdata : NULL;
}

int distill_model_zero_grad(distill_model *m)
{
    CHECK_MODEL(m, "distill_model_zero_grad");
    if (m->n_pdata)
        memset(m->gdata, 0, m->n_pdata * sizeof(float));
    return DISTILL_OK;
}

/* --------------------------------------------------------------- queries */

size_t distill_model_node_count(const distill_model *m)
{
    return m ? (size_t)m->n_nodes : 0;
}

/* Fill the caller's *out (version checked) up to its version. */
static void fill_node_info(const distill_model *m, int i, distill_node_info *out)
{
    const node *n = &m->nodes[i];
    distill_node_info full = DISTILL_NODE_INFO_INIT, *info = &full;
    info->name = n->name;
    info->op = n->op;
    info->n_inputs = n->n_inputs;
    info->rank = n->rank;
    for (int d = 0; d < n->rank; d++)
        info->dims[d] = n->dims[d];
    for (int k = n->param_first; k < n->param_first + n->n_params; k++)
        if (m->params[k].kind < DISTILL_PARAM_RUNNING_MEAN)
            info->params += (int64_t)m->params[k].numel;
    info->macs = n->macs;
    if (n->op == DISTILL_OP_CONV2D || n->op == DISTILL_OP_MAXPOOL || n->op == DISTILL_OP_AVGPOOL ||
        n->op == DISTILL_OP_GLOBAL_AVGPOOL) {
        info->kernel_h = n->kh, info->kernel_w = n->kw;
        info->stride_h = n->sh, info->stride_w = n->sw;
        info->pad_h = n->ph, info->pad_w = n->pw;
    }
    if (n->op == DISTILL_OP_CONV2D) {
        info->dilation_h = n->dh, info->dilation_w = n->dw;
        info->groups = n->groups;
    }
    if (n->op == DISTILL_OP_CONV2D || n->op == DISTILL_OP_LINEAR) {
        info->bias = n->bias;
        info->out_channels = n->out_channels;
    }
    info->eps = n->eps;
    info->momentum = n->momentum;
    info->alpha = n->alpha;
    info->tanh_approx = n->tanh_approx;
    struct_copy_out(out, &full, sizeof full);
}

int distill_model_node(const distill_model *m, size_t i, distill_node_info *info)
{
    CHECK_MODEL(m, "distill_model_node");
    if (!info)
        return seterr(DISTILL_EINVAL, "distill_model_node: info is NULL");
    CHECK_VERSION(info->version, DISTILL_NODE_INFO_VERSION, "distill_node_info",
                  "distill_model_node");
    if (i >= (size_t)m->n_nodes)
        return seterr(DISTILL_EINVAL, "node index %zu is out of range (the model has %d)", i,
                      m->n_nodes);
    fill_node_info(m, (int)i, info);
    return DISTILL_OK;
}

int distill_model_find_node(const distill_model *m, const char *name, distill_node_info *info)
{
    CHECK_MODEL(m, "distill_model_find_node");
    if (!name || !info)
        return seterr(DISTILL_EINVAL, "distill_model_find_node: NULL argument");
    CHECK_VERSION(info->version, DISTILL_NODE_INFO_VERSION, "distill_node_info",
                  "distill_model_find_node");
    int i = model_find(m, name);
    if (i < 0)
        return seterr(DISTILL_ENOTFOUND, "no node named '%s'", name);
    fill_node_info(m, i, info);
    return DISTILL_OK;
}

int distill_model_node_input(const distill_model *m, size_t node_index, int k, size_t *input,
                             const char **name)
{
    CHECK_MODEL(m, "distill_model_node_input");
    if (node_index >= (size_t)m->n_nodes)
        return seterr(DISTILL_EINVAL, "node index %zu is out of range (the model has %d)",
                      node_index, m->n_nodes);
    const node *n = &m->nodes[node_index];
    if (k < 0 || k >= n->n_inputs)
        return seterr(DISTILL_EINVAL, "node '%s' has %d input%s: input %d is out of range",
                      n->name, n->n_inputs, n->n_inputs == 1 ? "" : "s", k);
    if (input)
        *input = (size_t)n->inputs[k];
    if (name)
        *name = m->nodes[n->inputs[k]].name;
    return DISTILL_OK;
}

const char *distill_model_output_name(const distill_model *m)
{
    return m ? m->nodes[m->output].name : "";
}

int64_t distill_model_macs(const distill_model *m)
{
    int64_t t = 0;
    if (m)
        for (int i = 0; i < m->n_nodes; i++)
            if (__builtin_add_overflow(t, m->nodes[i].macs, &t))
                return INT64_MAX; /* saturates: only absurd graphs get here */
    return t;
}

static void fmt_shape(char *buf, size_t size, const node *n)
{
    if (n->rank == 3)
        snprintf(buf, size, "%lldx%lldx%lld", (long long)n->dims[0], (long long)n->dims[1],
                 (long long)n->dims[2]);
    else
        snprintf(buf, size, "%lld", (long long)n->dims[0]);
}

int distill_model_print_summary(const distill_model *m, FILE *f)
{
    CHECK_MODEL(m, "distill_model_print_summary");
    if (!f)
        return seterr(DISTILL_EINVAL, "distill_model_print_summary: FILE is NULL");
    int w = 4;
    for (int i = 0; i < m->n_nodes; i++) {
        int l = (int)strlen(m->nodes[i].name);
        w = l > w ? l : w;
    }
    w = w > 40 ? 40 : w;
    fprintf(f, "%-*s  %-14s  %-14s  %10s  %12s\n", w, "node", "op", "output", "params", "mult-adds");
    for (int i = 0; i < m->n_nodes; i++) {
        const node *n = &m->nodes[i];
        distill_node_info info = DISTILL_NODE_INFO_INIT;
        fill_node_info(m, i, &info);
        char shape[64];
        fmt_shape(shape, sizeof shape, n);
        fprintf(f, "%-*s  %-14s  %-14s  %10lld  %12lld\n", w, n->name, distill_op_name(n->op),
                shape, (long long)info.params, (long long)n->macs);
    }
    fprintf(f, "total: %d nodes, %lld parameters (%.2f MB float32), %lld mult-adds per image "
               "(%.2f M)\n",
            m->n_nodes, (long long)m->n_pdata, (double)m->n_pdata * 4.0 / 1e6,
            (long long)distill_model_macs(m), (double)distill_model_macs(m) / 1e6);
    return ferror(f) ? seterr(DISTILL_EIO, "print_summary: write error") : DISTILL_OK;
}

int distill_model_keep_node(distill_model *m, const char *name)
{
    CHECK_MODEL(m, "distill_model_keep_node");
    if (!name)
        return seterr(DISTILL_EINVAL, "distill_model_keep_node: name is NULL");
    int i = model_find(m, name);
    if (i < 0)
        return seterr(DISTILL_ENOTFOUND, "keep_node: no node named '%s'", name);
    if (!m->nodes[i].keep) {
        m->nodes[i].keep = 1;
        model_invalidate(m);
    }
    return DISTILL_OK;
}

int distill_model_freeze(distill_model *m, int on)
{
    CHECK_MODEL(m, "distill_model_freeze");
    if (m->frozen != (on != 0)) {
        m->frozen = on != 0;
        /* plans prepared their weights from the values of their last
         * forward; drop them so the first frozen forward prepares afresh */
        release_engine(m);
    }
    return DISTILL_OK;
}

int distill_model_is_frozen(const distill_model *m)
{
    return m ? m->frozen : 0;
}

int distill_model_keep_all(distill_model *m, int on)
{
    CHECK_MODEL(m, "distill_model_keep_all");
    if (m->keep_all != (on != 0)) {
        m->keep_all = on != 0;
        model_invalidate(m);
    }
    return DISTILL_OK;
}

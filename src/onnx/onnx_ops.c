/*
 * onnx_ops.c - the ONNX importer's operator handlers, one per ONNX
 * operator (or family), each turning one node into model nodes, and the
 * name table (ONNX_OPS: operator -> handler, and the operator versions
 * each opset selects) through which op_node reaches them.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "onnx/onnx_import_internal.h"

#ifdef DISTILL_HAVE_ONNX

/* --------------------------------------------------------- operators */

static int op_conv(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    if (nd->n_input < 2)
        return BADF(c, "Conv needs X and W");
    val *x = NULL, *w = NULL, *b = NULL;
    int rc, extra[4] = {0, 0, 0, 0};
    if ((rc = get_val(c, nd->input[0], &x)))
        return rc;
    if (x->kind == V_PAD) {
        memcpy(extra, x->pad, sizeof extra);
    } else if ((rc = get_act(c, nd->input[0], &x)))
        return rc;
    if ((rc = get_const(c, nd->input[1], &w)))
        return rc;
    if (nd->n_input > 2 && present(nd->input[2]) && (rc = get_const(c, nd->input[2], &b)))
        return rc;
    const node *in = act_node(c, x);
    if (in->rank != 3)
        return UNSUP(c, "input '%s' is not (N, C, H, W); only 2-D convolutions are supported",
                     nd->input[0]);
    if (w->rank != 4 || w->is_int)
        return UNSUP(c, "weight '%s' is not a 4-D float tensor (only 2-D convolutions)", w->name);
    int kh, kw, sh, sw, dh, dw, ph, pw;
    if ((rc = two_ints(c, nd, "kernel_shape", 0, &kh, &kw)) ||
        (rc = two_ints(c, nd, "strides", 1, &sh, &sw)) ||
        (rc = two_ints(c, nd, "dilations", 1, &dh, &dw)))
        return rc;
    if (w->dims[2] > 4096 || w->dims[3] > 4096 || w->dims[0] > (1 << 20))
        return UNSUP(c, "weight '%s' is too large", w->name);
    if (kh && (kh != w->dims[2] || kw != w->dims[3]))
        return BADF(c, "kernel_shape %dx%d does not match the weight's %lldx%lld", kh, kw,
                    (long long)w->dims[2], (long long)w->dims[3]);
    kh = (int)w->dims[2];
    kw = (int)w->dims[3];
    int64_t group = attr_i(nd, "group", 1);
    if (group < 1 || group > in->dims[0])
        return UNSUP(c, "group %lld for %lld input channels", (long long)group,
                     (long long)in->dims[0]);
    if (w->dims[1] * group != in->dims[0])
        return BADF(c, "weight '%s' has %lld input channels per group, the input has %lld in "
                       "%lld groups",
                    w->name, (long long)w->dims[1], (long long)in->dims[0], (long long)group);
    if ((rc = get_pads(c, nd, in->dims[1], in->dims[2], kh, kw, sh, sw, dh, dw, extra, &ph, &pw,
                       NULL)))
        return rc;
    if (b && (b->is_int || b->numel != w->dims[0]))
        return BADF(c, "bias '%s' has %lld values for %lld output channels", b->name,
                    (long long)b->numel, (long long)w->dims[0]);
    distill_conv2d_options o;
    distill_conv2d_options_init(&o, DISTILL_CONV2D_OPTIONS_VERSION);
    o.kernel_h = kh, o.kernel_w = kw, o.stride_h = sh, o.stride_w = sw;
    o.pad_h = ph, o.pad_w = pw, o.dilation_h = dh, o.dilation_w = dw;
    o.groups = (int)group;
    o.bias = b != NULL;
    if ((rc = distill_model_add_conv2d(c->m, name, in->name, (int)w->dims[0], &o)))
        return lib_err(c, rc);
    if ((rc = set_param(c, name, "weight", w->f, w->numel)) ||
        (b && (rc = set_param(c, name, "bias", b->f, b->numel))))
        return rc;
    return set_act(c, nd->output[0], model_find(c->m, name));
}

static int op_batchnorm(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    if (nd->n_input != 5)
        return BADF(c, "BatchNormalization needs 5 inputs, has %zu", nd->n_input);
    if (attr_i(nd, "training_mode", 0) != 0)
        return UNSUP(c, "training_mode=1 (only inference BatchNormalization is imported)");
    for (size_t k = 1; k < nd->n_output; k++)
        if (present(nd->output[k]) && uses_of(c->g, nd->output[k], NULL))
            return UNSUP(c, "its running statistics outputs are used");
    val *x, *p[4];
    int rc = get_act(c, nd->input[0], &x);
    for (int k = 0; k < 4 && !rc; k++)
        rc = get_const(c, nd->input[k + 1], &p[k]);
    if (rc)
        return rc;
    int64_t C = act_node(c, x)->dims[0];
    for (int k = 0; k < 4; k++)
        if (p[k]->is_int || p[k]->numel != C)
            return BADF(c, "'%s' has %lld values for %lld channels", p[k]->name,
                        (long long)p[k]->numel, (long long)C);
    float eps = attr_f(nd, "epsilon", 1e-5f);
    float mom = 1.0f - attr_f(nd, "momentum", 0.9f);
    if (!(eps > 0.0f && eps < 1.0f))
        return UNSUP(c, "epsilon %g is not in (0, 1)", (double)eps);
    if (!(mom >= 0.0f && mom <= 1.0f))
        mom = 0.1f;
    if ((rc = distill_model_add_batchnorm(c->m, name, act_node(c, x)->name, eps, mom)))
        return lib_err(c, rc);
    if ((rc = set_param(c, name, "weight", p[0]->f, C)) ||
        (rc = set_param(c, name, "bias", p[1]->f, C)) ||
        (rc = set_param(c, name, "running_mean", p[2]->f, C)) ||
        (rc = set_param(c, name, "running_var", p[3]->f, C)))
        return rc;
    return set_act(c, nd->output[0], model_find(c->m, name));
}

typedef int (*unary_fn)(distill_model *, const char *, const char *);

static int op_unary(ctx *c, const Onnx__NodeProto *nd, const char *name, unary_fn fn)
{
    val *x;
    int rc;
    if (nd->n_input < 1)
        return BADF(c, "no input");
    if ((rc = get_act(c, nd->input[0], &x)))
        return rc;
    if ((rc = fn(c->m, name, act_node(c, x)->name)))
        return lib_err(c, rc);
    return set_act(c, nd->output[0], model_find(c->m, name));
}

static int op_clip(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    double lo, hi;
    int rc;
    if ((rc = opt_scalar(c, nd, "min", 1, -INFINITY, &lo)) ||
        (rc = opt_scalar(c, nd, "max", 2, INFINITY, &hi)))
        return rc;
    if (lo == 0.0 && hi == 6.0)
        return op_unary(c, nd, name, distill_model_add_relu6);
    if (lo == 0.0 && hi > 3.4e38)
        return op_unary(c, nd, name, distill_model_add_relu);
    return UNSUP(c, "Clip to [%g, %g]: only [0, 6] (relu6) and [0, inf) (relu) are supported", lo,
                 hi);
}

static int op_leaky(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    val *x;
    int rc;
    if (nd->n_input < 1)
        return BADF(c, "no input");
    if ((rc = get_act(c, nd->input[0], &x)))
        return rc;
    if ((rc = distill_model_add_leaky_relu(c->m, name, act_node(c, x)->name,
                                           attr_f(nd, "alpha", 0.01f))))
        return lib_err(c, rc);
    return set_act(c, nd->output[0], model_find(c->m, name));
}

int gelu_from(ctx *c, const char *xname, const char *name, int tanh_form,
                     const char *out)
{
    val *x;
    int rc;
    if ((rc = get_act(c, xname, &x)))
        return rc;
    if ((rc = distill_model_add_gelu(c->m, name, act_node(c, x)->name, tanh_form)))
        return lib_err(c, rc);
    return set_act(c, out, model_find(c->m, name));
}

static int op_pool(ctx *c, const Onnx__NodeProto *nd, const char *name, int max)
{
    val *x = NULL;
    int rc, extra[4] = {0, 0, 0, 0};
    if (nd->n_input < 1)
        return BADF(c, "no input");
    if ((rc = get_val(c, nd->input[0], &x)))
        return rc;
    if (x->kind == V_PAD && !max) {
        memcpy(extra, x->pad, sizeof extra);
    } else if ((rc = get_act(c, nd->input[0], &x)))
        return rc;
    const node *in = act_node(c, x);
    if (in->rank != 3)
        return UNSUP(c, "input is not (N, C, H, W); only 2-D pooling is supported");
    for (size_t k = 1; k < nd->n_output; k++)
        if (present(nd->output[k]) && uses_of(c->g, nd->output[k], NULL))
            return UNSUP(c, "the Indices output is used");
    int kh, kw, sh, sw, dh, dw;
    if ((rc = two_ints(c, nd, "kernel_shape", 0, &kh, &kw)) ||
        (rc = two_ints(c, nd, "strides", 1, &sh, &sw)) ||
        (rc = two_ints(c, nd, "dilations", 1, &dh, &dw)))
        return rc;
    if (!kh)
        return BADF(c, "kernel_shape is missing");
    if (dh != 1 || dw != 1)
        return UNSUP(c, "dilated pooling");
    if (attr_i(nd, "ceil_mode", 0))
        return UNSUP(c, "ceil_mode=1 (output sizes are rounded down)");
    if (attr_i(nd, "storage_order", 0))
        return UNSUP(c, "storage_order=1");
    int own[4], p[4];
    if ((rc = get_pads(c, nd, in->dims[1], in->dims[2], kh, kw, sh, sw, 1, 1, NULL, NULL, NULL,
                       own)))
        return rc;
    if (!max && (own[0] || own[1] || own[2] || own[3]) && !attr_i(nd, "count_include_pad", 0))
        return UNSUP(c, "count_include_pad=0 with padding: the model's average pooling counts "
                        "the padded zeros");
    for (int k = 0; k < 4; k++)
        p[k] = own[k] + extra[k];
    if (p[0] > kh / 2 || p[2] > kh / 2 || p[1] > kw / 2 || p[3] > kw / 2)
        return UNSUP(c, "padding %d,%d,%d,%d (top, left, bottom, right) with a %dx%d kernel: "
                        "each pad must be at most half the kernel",
                     p[0], p[1], p[2], p[3], kh, kw);
    distill_pool2d_options o;
    distill_pool2d_options_init(&o, DISTILL_POOL2D_OPTIONS_VERSION);
    o.kernel_h = kh, o.kernel_w = kw, o.stride_h = sh, o.stride_w = sw;
    o.pad_top = p[0], o.pad_left = p[1], o.pad_bottom = p[2], o.pad_right = p[3];
    rc = distill_model_add_pool2d(c->m, name, in->name, max ? DISTILL_OP_MAXPOOL : DISTILL_OP_AVGPOOL,
                                  &o);
    if (rc)
        return lib_err(c, rc);
    return set_act(c, nd->output[0], model_find(c->m, name));
}

static int op_linear(ctx *c, const Onnx__NodeProto *nd, const char *name, const val *x,
                     const val *w, int trans_w, double alpha, const val *bias, double beta)
{
    const node *in = act_node(c, x);
    if (in->rank != 1)
        return UNSUP(c, "input '%s' is not (N, F); flatten it first", in->name);
    if (w->rank != 2 || w->is_int)
        return UNSUP(c, "weight '%s' is not a 2-D float matrix", w->name);
    int64_t K = trans_w ? w->dims[1] : w->dims[0], Nf = trans_w ? w->dims[0] : w->dims[1];
    if (K != in->dims[0])
        return BADF(c, "weight '%s' takes %lld features, the input has %lld", w->name,
                    (long long)K, (long long)in->dims[0]);
    if (Nf < 1 || Nf > (1 << 24))
        return UNSUP(c, "%lld output features", (long long)Nf);
    float *wt = xmalloc((size_t)(K * Nf) * sizeof *wt), *bv = xcalloc((size_t)Nf, sizeof *bv);
    int rc = DISTILL_ENOMEM;
    if (!wt || !bv)
        goto done;
    for (int64_t o = 0; o < Nf; o++)
        for (int64_t i = 0; i < K; i++)
            wt[o * K + i] = (float)(alpha * (trans_w ? w->f[o * K + i] : w->f[i * Nf + o]));
    if (bias) {
        /* C broadcasts to (N, Nf): a scalar, (Nf) or (1, Nf) */
        if (bias->is_int || (bias->numel != 1 && bias->numel != Nf) || bias->rank > 2 ||
            (bias->rank == 2 && bias->dims[0] != 1)) {
            rc = UNSUP(c, "C '%s' does not broadcast as one value per output feature", bias->name);
            goto done;
        }
        for (int64_t o = 0; o < Nf; o++)
            bv[o] = (float)(beta * bias->f[bias->numel == 1 ? 0 : o]);
    }
    if ((rc = distill_model_add_linear(c->m, name, in->name, (int)Nf, 1))) {
        rc = lib_err(c, rc);
        goto done;
    }
    if (!(rc = set_param(c, name, "weight", wt, K * Nf)))
        rc = set_param(c, name, "bias", bv, Nf);
done:
    xfree(wt);
    xfree(bv);
    return rc ? rc : set_act(c, nd->output[0], model_find(c->m, name));
}

static int op_gemm(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    if (nd->n_input < 2)
        return BADF(c, "Gemm needs A and B");
    if (attr_i(nd, "transA", 0))
        return UNSUP(c, "transA=1");
    val *x, *w, *b = NULL;
    int rc;
    if ((rc = get_act(c, nd->input[0], &x)) || (rc = get_const(c, nd->input[1], &w)))
        return rc;
    if (nd->n_input > 2 && present(nd->input[2]) && (rc = get_const(c, nd->input[2], &b)))
        return rc;
    return op_linear(c, nd, name, x, w, attr_i(nd, "transB", 0) != 0, attr_f(nd, "alpha", 1.0f), b,
                     attr_f(nd, "beta", 1.0f));
}

static int op_matmul(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    if (nd->n_input != 2)
        return BADF(c, "MatMul needs 2 inputs");
    val *x, *w;
    int rc;
    if ((rc = get_act(c, nd->input[0], &x)) || (rc = get_const(c, nd->input[1], &w)))
        return rc;
    return op_linear(c, nd, name, x, w, 0, 1.0, NULL, 0.0);
}

/* Add, Sub, Mul, Div.  Two computed tensors: only Add (a residual).  A
 * computed tensor and a constant: const_arith (onnx_patterns.c). */
static int op_arith(ctx *c, const Onnx__NodeProto *nd, const char *name, char kind)
{
    if (nd->n_input != 2)
        return BADF(c, "needs 2 inputs");
    val *a = NULL, *b = NULL;
    int rc;
    if ((rc = get_val(c, nd->input[0], &a)) || (rc = get_val(c, nd->input[1], &b)))
        return rc;
    if (a->kind == V_PAD || b->kind == V_PAD)
        return get_act(c, a->kind == V_PAD ? a->name : b->name, &a);
    if (a->kind == V_ACT && b->kind == V_ACT) {
        if (kind != '+')
            return UNSUP(c, "%s of two computed tensors (only Add of two is supported)", c->nop);
        const node *x = act_node(c, a), *y = act_node(c, b);
        if ((rc = distill_model_add_add(c->m, name, x->name, y->name)))
            return lib_err(c, rc);
        return set_act(c, nd->output[0], model_find(c->m, name));
    }
    if (a->kind == V_CONST && b->kind == V_CONST)
        return UNSUP(c, "arithmetic on constants only (no constant folding beyond shapes)");
    int swapped = a->kind == V_CONST;
    return const_arith(c, nd, name, swapped ? b : a, swapped ? a : b, swapped, kind);
}

static int op_concat(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    if (nd->n_input < 1)
        return BADF(c, "no inputs");
    val *v0 = NULL;
    int rc = get_val(c, nd->input[0], &v0);
    if (rc)
        return rc;
    int64_t axis = attr_i(nd, "axis", 0);
    if (v0->kind == V_CONST)
        return shape_concat(c, nd);
    if ((rc = get_act(c, nd->input[0], &v0)))
        return rc;
    int R = act_rank(c, v0);
    if (axis < 0)
        axis += R;
    if (axis != 1)
        return UNSUP(c, "Concat along axis %lld; only channels (axis 1) are supported",
                     (long long)attr_i(nd, "axis", 0));
    if (nd->n_input > MAX_NODE_INPUTS)
        return UNSUP(c, "Concat of %zu inputs (at most %d)", nd->n_input, MAX_NODE_INPUTS);
    if (nd->n_input == 1) /* a copy */
        return set_act(c, nd->output[0], v0->node);
    const char *names[MAX_NODE_INPUTS];
    for (size_t k = 0; k < nd->n_input; k++) {
        val *v;
        if ((rc = get_act(c, nd->input[k], &v)))
            return rc;
        names[k] = act_node(c, v)->name;
    }
    if ((rc = distill_model_add_concat(c->m, name, (int)nd->n_input, names)))
        return lib_err(c, rc);
    return set_act(c, nd->output[0], model_find(c->m, name));
}

/* To (N, F): a flatten node, or nothing if it already is. */
static int to_2d(ctx *c, const Onnx__NodeProto *nd, const char *name, const val *x)
{
    const node *in = act_node(c, x);
    if (in->rank == 1)
        return set_act(c, nd->output[0], x->node);
    int rc = distill_model_add_flatten(c->m, name, in->name);
    if (rc)
        return lib_err(c, rc);
    return set_act(c, nd->output[0], model_find(c->m, name));
}

static int op_flatten(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    val *x;
    int rc;
    if (nd->n_input < 1)
        return BADF(c, "no input");
    if ((rc = get_act(c, nd->input[0], &x)))
        return rc;
    int64_t axis = attr_i(nd, "axis", 1);
    if (axis < 0)
        axis += act_rank(c, x);
    if (axis != 1)
        return UNSUP(c, "Flatten at axis %lld; only axis 1 (keep the batch) is supported",
                     (long long)attr_i(nd, "axis", 1));
    return to_2d(c, nd, name, x);
}

static int op_reshape(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    if (nd->n_input != 2)
        return UNSUP(c, "Reshape without a shape input (opset 5 or later is needed)");
    val *x, *s;
    int rc;
    if ((rc = get_act(c, nd->input[0], &x)) || (rc = get_const(c, nd->input[1], &s)))
        return rc;
    if (!s->is_int || s->rank != 1)
        return BADF(c, "the shape '%s' is not a 1-D int tensor", s->name);
    if (attr_i(nd, "allowzero", 0))
        return UNSUP(c, "allowzero=1");
    const node *in = act_node(c, x);
    int R = in->rank + 1;
    int64_t P = 1;
    for (int d = 0; d < in->rank; d++) {
        if (in->dims[d] > ((int64_t)1 << 40) / P)
            return UNSUP(c, "the input has too many values per image");
        P *= in->dims[d];
    }
    int64_t t[MAX_RANK] = {0}; /* (n >= 1 below; the zeros quiet -Wmaybe-uninitialized) */
    int n = (int)s->numel;
    if (n < 1 || n > MAX_RANK)
        return UNSUP(c, "a target shape of %d dims", n);
    for (int d = 0; d < n; d++) {
        t[d] = s->i[d];
        if (t[d] == 0 && d < R)
            t[d] = d == 0 ? BATCH_SYM : in->dims[d - 1];
    }
    int batch_first = t[0] == BATCH_SYM || (c->fixed_batch && t[0] == c->fixed_batch) || t[0] == -1;
    if (n == 2 && batch_first && (t[1] == -1 || t[1] == P) && !(t[0] == -1 && t[1] == -1))
        return to_2d(c, nd, name, x);
    if (n == R && (t[0] == BATCH_SYM || t[0] == -1 || (c->fixed_batch && t[0] == c->fixed_batch))) {
        int same = 1;
        for (int d = 1; d < n; d++)
            same &= t[d] == in->dims[d - 1];
        if (same)
            return set_act(c, nd->output[0], x->node);
    }
    return UNSUP(c, "Reshape of (N, %lld%s%s) to a shape other than (N, %lld): only flattening "
                    "to (batch, features) is supported",
                 (long long)in->dims[0], in->rank == 3 ? ", H, W" : "", "", (long long)P);
}

static int op_squeeze(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    val *x;
    int rc;
    if (nd->n_input < 1)
        return BADF(c, "no input");
    if ((rc = get_act(c, nd->input[0], &x)))
        return rc;
    int64_t ax[MAX_RANK];
    size_t n;
    if ((rc = int_list(c, nd, "axes", 1, ax, MAX_RANK, &n)))
        return rc;
    const node *in = act_node(c, x);
    int R = in->rank + 1;
    if (in->rank == 3 && in->dims[1] == 1 && in->dims[2] == 1) {
        int h = 0, w = 0, other = 0;
        for (size_t k = 0; k < n; k++) {
            int64_t a = ax[k] < 0 ? ax[k] + R : ax[k];
            h |= a == 2, w |= a == 3, other |= a != 2 && a != 3;
        }
        if ((n == 0 && in->dims[0] > 1) || (h && w && !other))
            return to_2d(c, nd, name, x);
    }
    return UNSUP(c, "Squeeze is supported only from (N, C, 1, 1) to (N, C)");
}

static int op_softmax(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    val *x;
    int rc;
    if (nd->n_input < 1)
        return BADF(c, "no input");
    if ((rc = get_act(c, nd->input[0], &x)))
        return rc;
    int R = act_rank(c, x);
    int64_t axis = attr_i(nd, "axis", c->opset >= 13 ? -1 : 1);
    if (axis < 0)
        axis += R;
    if (R != 2 || axis != 1)
        return UNSUP(c, "Softmax over axis %lld of a rank-%d tensor; only over the features of "
                        "(N, F)",
                     (long long)attr_i(nd, "axis", c->opset >= 13 ? -1 : 1), R);
    if ((rc = distill_model_add_softmax(c->m, name, act_node(c, x)->name)))
        return lib_err(c, rc);
    return set_act(c, nd->output[0], model_find(c->m, name));
}

static int op_dropout(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    val *x;
    int rc;
    double p;
    if (nd->n_input < 1)
        return BADF(c, "no input");
    if ((rc = get_act(c, nd->input[0], &x)) || (rc = opt_scalar(c, nd, "ratio", 1, 0.5, &p)))
        return rc;
    if (nd->n_input > 2 && present(nd->input[2])) {
        double tm;
        if ((rc = opt_scalar(c, nd, NULL, 2, 0, &tm)))
            return rc;
        if (tm != 0)
            return UNSUP(c, "training_mode is true");
    }
    for (size_t k = 1; k < nd->n_output; k++)
        if (present(nd->output[k]) && uses_of(c->g, nd->output[k], NULL))
            return UNSUP(c, "the mask output is used");
    if (!(p >= 0 && p < 1))
        return UNSUP(c, "ratio %g is not in [0, 1)", p);
    if ((rc = distill_model_add_dropout(c->m, name, act_node(c, x)->name, (float)p)))
        return lib_err(c, rc);
    return set_act(c, nd->output[0], model_find(c->m, name));
}

static int op_constant(ctx *c, const Onnx__NodeProto *nd)
{
    const Onnx__AttributeProto *a;
    val *o = new_val(c, nd->output[0]);
    if (!o)
        return DISTILL_ENOMEM;
    o->kind = V_CONST;
    if ((a = attr(nd, "value")) && a->t)
        return load_tensor(c, a->t, nd->output[0], o);
    if ((a = attr(nd, "value_float")) && a->has_f) {
        if (!(o->f = xmalloc(sizeof(float))))
            return DISTILL_ENOMEM;
        o->f[0] = a->f;
        o->numel = 1;
        return DISTILL_OK;
    }
    if ((a = attr(nd, "value_int")) && a->has_i) {
        if (!(o->i = xmalloc(sizeof(int64_t))))
            return DISTILL_ENOMEM;
        o->is_int = 1;
        o->i[0] = a->i;
        o->numel = 1;
        return DISTILL_OK;
    }
    if ((a = attr(nd, "value_ints")) && a->n_ints <= 64) {
        if (!(o->i = xmalloc((a->n_ints + 1) * sizeof(int64_t))))
            return DISTILL_ENOMEM;
        o->is_int = 1;
        o->rank = 1;
        o->dims[0] = o->numel = (int64_t)a->n_ints;
        if (a->n_ints)
            memcpy(o->i, a->ints, a->n_ints * sizeof(int64_t));
        return DISTILL_OK;
    }
    if ((a = attr(nd, "value_floats")) && a->n_floats <= (1 << 20)) {
        if (!(o->f = xmalloc((a->n_floats + 1) * sizeof(float))))
            return DISTILL_ENOMEM;
        o->rank = 1;
        o->dims[0] = o->numel = (int64_t)a->n_floats;
        if (a->n_floats)
            memcpy(o->f, a->floats, a->n_floats * sizeof(float));
        return DISTILL_OK;
    }
    return UNSUP(c, "a Constant without a tensor, float(s) or int(s) value");
}

/* ------------------------------------------------ handlers by name */

/* The handlers below adapt the ones above to one signature: import node nd
 * as the model node `name` (its first output, checked present, is the ONNX
 * value it defines). */
typedef int (*op_fn)(ctx *c, const Onnx__NodeProto *nd, const char *name);

static int h_relu(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    return op_unary(c, nd, name, distill_model_add_relu);
}

static int h_global_avgpool(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    return op_unary(c, nd, name, distill_model_add_global_avgpool);
}

static int h_maxpool(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    return op_pool(c, nd, name, 1);
}

static int h_avgpool(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    return op_pool(c, nd, name, 0);
}

static int h_add(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    return op_arith(c, nd, name, '+');
}

static int h_sub(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    return op_arith(c, nd, name, '-');
}

static int h_mul(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    return op_arith(c, nd, name, '*');
}

static int h_div(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    return op_arith(c, nd, name, '/');
}

static int h_pad(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    (void)name;
    return op_pad(c, nd);
}

static int h_shape(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    (void)name;
    return op_shape(c, nd);
}

static int h_gather(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    (void)name;
    return op_gather(c, nd);
}

static int h_constant(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    (void)name;
    return op_constant(c, nd);
}

static int h_gelu(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    if (nd->n_input < 1)
        return BADF(c, "no input");
    int tanh_form = attr_s_is(nd, "approximate", "none", "tanh");
    if (!tanh_form && !attr_s_is(nd, "approximate", "none", "none"))
        return UNSUP(c, "approximate must be 'none' or 'tanh'");
    return gelu_from(c, nd->input[0], name, tanh_form, nd->output[0]);
}

/* Identity, Cast, Unsqueeze, Squeeze: of a constant, the same values in a
 * new shape; of a computed tensor, an alias (Squeeze: a flatten). */
static int h_passthrough(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    const char *op = nd->op_type, *o = nd->output[0];
    int rc;
    val *x;
    if (nd->n_input < 1)
        return BADF(c, "no input");
    if ((rc = get_val(c, nd->input[0], &x)))
        return rc;
    if (x->kind == V_CONST) {
        if (!strcmp(op, "Cast")) {
            int64_t to = attr_i(nd, "to", 0);
            if ((x->is_int && to != ONNX_INT64 && to != ONNX_INT32) ||
                (!x->is_int && to != ONNX_FLOAT))
                return UNSUP(c, "Cast of a constant to type %lld", (long long)to);
        }
        int r = x->rank;
        if (!strcmp(op, "Unsqueeze") && x->rank == 0)
            r = 1;
        else if (!strcmp(op, "Unsqueeze") || (!strcmp(op, "Squeeze") && x->numel != 1))
            return UNSUP(c, "%s of a constant other than a scalar", op);
        else if (!strcmp(op, "Squeeze"))
            r = 0;
        return op_const_copy(c, nd, x, r);
    }
    if (!strcmp(op, "Squeeze"))
        return op_squeeze(c, nd, name);
    if (!strcmp(op, "Unsqueeze"))
        return UNSUP(c, "Unsqueeze of a computed tensor");
    if (!strcmp(op, "Cast") && attr_i(nd, "to", ONNX_FLOAT) != ONNX_FLOAT)
        return UNSUP(c, "Cast of a computed tensor to type %lld",
                     (long long)attr_i(nd, "to", 0));
    if ((rc = get_act(c, nd->input[0], &x)))
        return rc;
    return set_act(c, o, x->node);
}

/* Every operator the importer knows, by name, with its handler (NULL: read
 * only inside a pattern, e.g. Erf in GELU) and the versions of it that
 * ONNX's changelog lists up to opset 20 (the opset a model imports selects,
 * for each operator, its newest version at or below that opset).  The
 * importer is written for the definitions in force at opsets 9 to 17; a
 * model of an older or newer opset is read when each of its operators has
 * there the definition it has at opset 9 (older) or 17 (newer), and Gelu,
 * which exists from opset 20 on. */
static const struct onnx_op {
    const char *op;
    op_fn fn;
    unsigned char since[8]; /* ascending, 0-terminated */
    unsigned char more_outputs; /* the handler checks outputs after the first */
} ONNX_OPS[] = {
    {"Add", h_add, {1, 6, 7, 13, 14}, 0},
    {"AveragePool", h_avgpool, {1, 7, 10, 11, 19}, 0},
    {"BatchNormalization", op_batchnorm, {1, 6, 7, 9, 14, 15}, 1},
    {"Cast", h_passthrough, {1, 6, 9, 13, 19}, 0},
    {"Clip", op_clip, {1, 6, 11, 12, 13}, 0},
    {"Concat", op_concat, {1, 4, 11, 13}, 0},
    {"Constant", h_constant, {1, 9, 11, 12, 13, 19}, 0},
    {"Conv", op_conv, {1, 11}, 0},
    {"Div", h_div, {1, 6, 7, 13, 14}, 0},
    {"Dropout", op_dropout, {1, 6, 7, 10, 12, 13}, 1},
    {"Erf", NULL, {9, 13}, 0},
    {"Flatten", op_flatten, {1, 9, 11, 13}, 0},
    {"Gather", h_gather, {1, 11, 13}, 0},
    {"Gelu", h_gelu, {20}, 0},
    {"Gemm", op_gemm, {1, 6, 7, 9, 11, 13}, 0},
    {"GlobalAveragePool", h_global_avgpool, {1}, 0},
    {"Identity", h_passthrough, {1, 13, 14, 16, 19}, 0},
    {"LeakyRelu", op_leaky, {1, 6, 16}, 0},
    {"MatMul", op_matmul, {1, 9, 13}, 0},
    {"MaxPool", h_maxpool, {1, 8, 10, 11, 12}, 1},
    {"Mul", h_mul, {1, 6, 7, 13, 14}, 0},
    {"Pad", h_pad, {1, 2, 11, 13, 18, 19}, 0},
    {"Relu", h_relu, {1, 6, 13, 14}, 0},
    {"Reshape", op_reshape, {1, 5, 13, 14, 19}, 0},
    {"Shape", h_shape, {1, 13, 15, 19}, 0},
    {"Softmax", op_softmax, {1, 11, 13}, 0},
    {"Squeeze", h_passthrough, {1, 11, 13}, 0},
    {"Sub", h_sub, {1, 6, 7, 13, 14}, 0},
    {"Unsqueeze", h_passthrough, {1, 11, 13}, 0},
};

/* The table entry for ONNX operator `op`, or NULL. */
static const struct onnx_op *find_op(const char *op)
{
    if (!op)
        return NULL;
    for (size_t k = 0; k < sizeof ONNX_OPS / sizeof ONNX_OPS[0]; k++)
        if (strcmp(ONNX_OPS[k].op, op) == 0)
            return &ONNX_OPS[k];
    return NULL;
}

/* The version of `v` that `opset` selects, or 0 if it did not exist yet. */
static int op_version_at(const struct onnx_op *v, int64_t opset)
{
    int best = 0;
    for (size_t k = 0; k < sizeof v->since && v->since[k]; k++)
        if (v->since[k] <= opset)
            best = v->since[k];
    return best;
}

int check_op_version(ctx *c, const Onnx__NodeProto *nd)
{
    if (!present(nd->op_type) || (present(nd->domain) && strcmp(nd->domain, "ai.onnx") != 0))
        return DISTILL_OK;
    const struct onnx_op *v = find_op(nd->op_type);
    if (!v)
        return DISTILL_OK;
    int have = op_version_at(v, c->opset);
    if (!strcmp(v->op, "Gelu"))
        return have ? DISTILL_OK : UNSUP(c, "Gelu before opset 20, where it was added");
    if (c->opset >= OPSET_MIN && c->opset <= OPSET_MAX)
        return DISTILL_OK;
    int64_t ref = c->opset < OPSET_MIN ? OPSET_MIN : OPSET_MAX;
    int want = op_version_at(v, ref);
    if (have != want)
        return UNSUP(c, "opset %lld selects version %d of %s, which differs from the "
                        "version %d of opset %lld; opsets %d to %d are supported, and "
                        "others where each operator is defined as there",
                     (long long)c->opset, have, v->op, want, (long long)ref, OPSET_MIN,
                     OPSET_MAX);
    return DISTILL_OK;
}

int op_node(ctx *c, const Onnx__NodeProto *nd, size_t idx)
{
    const char *op = nd->op_type ? nd->op_type : "";
    char name[256];
    const char *o;
    if (!out0(nd, &o))
        return BADF(c, "has no output");
    if (present(nd->domain) && strcmp(nd->domain, "ai.onnx") != 0)
        return UNSUP(c, "operator domain '%s' (only the default ONNX domain)", nd->domain);
    pick_name(c, nd, idx, name, sizeof name);
    if (c->gelu_in[idx])
        return gelu_from(c, c->gelu_in[idx], name, 0, o);
    const struct onnx_op *h = find_op(op);
    for (size_t k = 1; k < nd->n_output; k++) /* extra outputs must be unused */
        if (present(nd->output[k]) && !(h && h->more_outputs) &&
            uses_of(c->g, nd->output[k], NULL))
            return UNSUP(c, "output %zu ('%s') is used; only the first output is supported", k,
                         nd->output[k]);
    if (h && h->fn)
        return h->fn(c, nd, name);
    return UNSUP(c, "operator %s is not supported", op[0] ? op : "(empty)");
}

#endif /* DISTILL_HAVE_ONNX */

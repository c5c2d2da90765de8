/*
 * onnx_patterns.c - what the ONNX importer reads across several nodes:
 * GELU written with Erf (a pre-pass marking the nodes it replaces), a zero
 * Pad folded into the Conv or AveragePool that reads it, a constant
 * Add/Sub/Mul/Div on an activation as a per-channel affine node, and the
 * shape arithmetic of PyTorch's Shape -> Gather -> Unsqueeze -> Concat ->
 * Reshape flatten idiom.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "onnx/onnx_import_internal.h"

#ifdef DISTILL_HAVE_ONNX


/* A float scalar constant in the file (initializer or Constant node) named name. */
int scalar_const(const Onnx__GraphProto *g, const char *name, double *out)
{
    const Onnx__TensorProto *t = NULL;
    for (size_t k = 0; k < g->n_initializer && !t; k++)
        if (g->initializer[k]->name && strcmp(g->initializer[k]->name, name) == 0)
            t = g->initializer[k];
    size_t p;
    if (!t && producer_of(g, name, &p) && is_op(g->node[p], "Constant")) {
        const Onnx__NodeProto *nd = g->node[p];
        const Onnx__AttributeProto *a = attr(nd, "value");
        if (a && a->t)
            t = a->t;
        else if ((a = attr(nd, "value_float")) && a->has_f) {
            *out = a->f;
            return 1;
        }
    }
    if (!t)
        return 0;
    int64_t n = 1;
    for (size_t d = 0; d < t->n_dims; d++)
        n *= t->dims[d] < 0 || t->dims[d] > 1 ? 2 : t->dims[d];
    if (n != 1 || !t->has_data_type)
        return 0;
    if (t->data_type == ONNX_FLOAT) {
        if (t->has_raw_data && t->raw_data.len == 4) {
            uint32_t b = rd32(t->raw_data.data);
            float f;
            memcpy(&f, &b, 4);
            *out = f;
            return 1;
        }
        if (t->n_float_data == 1) {
            *out = t->float_data[0];
            return 1;
        }
    } else if (t->data_type == ONNX_DOUBLE) {
        if (t->has_raw_data && t->raw_data.len == 8) {
            uint64_t b = rd64(t->raw_data.data);
            double d;
            memcpy(&d, &b, 8);
            *out = d;
            return 1;
        }
        if (t->n_double_data == 1) {
            *out = t->double_data[0];
            return 1;
        }
    }
    return 0;
}

/* Node nd (binary) has `name` as one input and a scalar constant near want
 * as the other. */
int binary_with(const Onnx__GraphProto *g, const Onnx__NodeProto *nd, const char *name,
                       double want, const char **other)
{
    if (nd->n_input != 2 || !present(nd->input[0]) || !present(nd->input[1]))
        return 0;
    for (int s = 0; s < 2; s++) {
        double v;
        if (strcmp(nd->input[s], name) == 0) {
            if (other) {
                *other = nd->input[1 - s];
                return 1;
            }
            if (scalar_const(g, nd->input[1 - s], &v) && fabs(v - want) < 1e-3 * fabs(want))
                return 1;
        }
    }
    return 0;
}

int single_user(const Onnx__GraphProto *g, const char *name, size_t *user)
{
    return present(name) && uses_of(g, name, user) == 1;
}

/* Find GELU written as x * 0.5 * (1 + erf(x / sqrt(2))) (PyTorch's export of
 * nn.GELU before opset 20, and TensorFlow's) around every Erf. */
void find_gelu(ctx *c)
{
    const Onnx__GraphProto *g = c->g;
    for (size_t e = 0; e < g->n_node; e++) {
        const Onnx__NodeProto *E = g->node[e];
        if (!is_op(E, "Erf") || E->n_input != 1 || E->n_output != 1 || !present(E->input[0]))
            continue;
        size_t d, a, m1, m2, h;
        if (!producer_of(g, E->input[0], &d) || !single_user(g, E->input[0], NULL))
            continue;
        const Onnx__NodeProto *D = g->node[d];
        const char *x = NULL;
        if (D->n_input != 2 || D->n_output != 1)
            continue;
        double v;
        if (is_op(D, "Div") && present(D->input[0]) && present(D->input[1]) &&
            scalar_const(g, D->input[1], &v) && fabs(v - 1.41421356) < 1e-3)
            x = D->input[0];
        else if (is_op(D, "Mul") && present(D->input[0]) && present(D->input[1])) {
            if (scalar_const(g, D->input[1], &v) && fabs(v - 0.70710678) < 1e-3)
                x = D->input[0];
            else if (scalar_const(g, D->input[0], &v) && fabs(v - 0.70710678) < 1e-3)
                x = D->input[1];
        }
        if (!x || !single_user(g, E->output[0], &a) || !is_op(g->node[a], "Add") ||
            g->node[a]->n_output != 1 || !binary_with(g, g->node[a], E->output[0], 1.0, NULL) ||
            !single_user(g, g->node[a]->output[0], &m1) || !is_op(g->node[m1], "Mul") ||
            g->node[m1]->n_output != 1)
            continue;
        const char *other;
        if (!binary_with(g, g->node[m1], g->node[a]->output[0], 0, &other))
            continue;
        size_t end;
        int have_h = 0;
        if (strcmp(other, x) == 0) {
            if (!single_user(g, g->node[m1]->output[0], &m2) || !is_op(g->node[m2], "Mul") ||
                g->node[m2]->n_output != 1 ||
                !binary_with(g, g->node[m2], g->node[m1]->output[0], 0.5, NULL))
                continue;
            end = m2;
        } else {
            if (!producer_of(g, other, &h) || !is_op(g->node[h], "Mul") ||
                !single_user(g, other, NULL) || !binary_with(g, g->node[h], x, 0.5, NULL))
                continue;
            have_h = 1;
            end = m1;
        }
        c->skip[d] = c->skip[e] = c->skip[a] = 1;
        if (have_h)
            c->skip[h] = 1;
        else
            c->skip[m1] = 1; /* the form ending in a second Mul (end is m2) */
        c->skip[end] = 0;
        c->gelu_in[end] = x;
    }
}

/* ------------------------------------------------------------ helpers */

/* Per-channel view of a constant broadcast against activation a: fills
 * out[C] (C = channels or features) and returns 0; UNSUP otherwise. */
static int chan_vec(ctx *c, const val *k, const val *a, float *out, int64_t C)
{
    int R = act_rank(c, a);
    if (k->rank > R)
        return UNSUP(c, "constant '%s' has rank %d, more than the tensor's %d", k->name, k->rank,
                     R);
    if (k->numel == 1) {
        for (int64_t j = 0; j < C; j++)
            out[j] = (float)cval(k, 0);
        return DISTILL_OK;
    }
    /* right-aligned: axis 1 (channels) must be C, every other axis 1 */
    for (int d = 0; d < k->rank; d++) {
        int ax = R - k->rank + d;
        int64_t want = ax == 1 ? C : 1;
        if (k->dims[d] != want)
            return UNSUP(c, "constant '%s' is neither a scalar nor one value per channel (only "
                            "those broadcasts are supported)",
                         k->name);
    }
    if (k->numel != C)
        return UNSUP(c, "constant '%s' is neither a scalar nor one value per channel", k->name);
    for (int64_t j = 0; j < C; j++)
        out[j] = (float)cval(k, j);
    return DISTILL_OK;
}

/* y = scale * x + shift per channel as a node of its own: a depthwise 1x1
 * conv for (C, H, W), a diagonal linear layer for (F). */
static int add_affine(ctx *c, const char *name, const val *a, const float *scale,
                      const float *shift)
{
    const node *x = act_node(c, a);
    int64_t C = x->dims[0];
    int rc;
    if (x->rank == 3) {
        distill_conv2d_options o;
        distill_conv2d_options_init(&o, DISTILL_CONV2D_OPTIONS_VERSION);
        o.groups = (int)C;
        o.bias = 1;
        if ((rc = distill_model_add_conv2d(c->m, name, x->name, (int)C, &o)))
            return lib_err(c, rc);
        if ((rc = set_param(c, name, "weight", scale, C)) ||
            (rc = set_param(c, name, "bias", shift, C)))
            return rc;
        return DISTILL_OK;
    }
    if (C > 4096)
        return UNSUP(c, "a constant scale or shift of %lld features that does not follow a "
                        "layer (at most 4096)",
                     (long long)C);
    if ((rc = distill_model_add_linear(c->m, name, x->name, (int)C, 1)))
        return lib_err(c, rc);
    float *w = xcalloc((size_t)(C * C), sizeof *w);
    if (!w)
        return DISTILL_ENOMEM;
    for (int64_t j = 0; j < C; j++)
        w[j * C + j] = scale[j];
    rc = set_param(c, name, "weight", w, C * C);
    xfree(w);
    return rc ? rc : set_param(c, name, "bias", shift, C);
}

/* A computed tensor x and a constant k in Add, Sub, Mul or Div (kind '+',
 * '-', '*', '/'; swapped: k is the first operand): folded into the conv or
 * linear layer that produced x when nothing else reads it, else a
 * per-channel affine node. */
int const_arith(ctx *c, const Onnx__NodeProto *nd, const char *name, const val *x, const val *k,
                int swapped, char kind)
{
    int rc;
    if (swapped && (kind == '-' || kind == '/'))
        return UNSUP(c, "a constant %s a computed tensor", kind == '-' ? "minus" : "divided by");
    const node *xn = act_node(c, x);
    int64_t C = xn->dims[0];
    float *v = xmalloc((size_t)C * sizeof *v), *one = xmalloc((size_t)C * sizeof *one),
          *zero = xcalloc((size_t)C, sizeof *zero);
    if (!v || !one || !zero) {
        rc = DISTILL_ENOMEM;
        goto done;
    }
    if ((rc = chan_vec(c, k, x, v, C)))
        goto done;
    for (int64_t j = 0; j < C; j++) {
        one[j] = 1.0f;
        if (kind == '-')
            v[j] = -v[j];
        if (kind == '/') {
            if (v[j] == 0.0f) {
                rc = UNSUP(c, "division by zero");
                goto done;
            }
            v[j] = 1.0f / v[j];
        }
    }
    int mul = kind == '*' || kind == '/';
    /* fold into the producing conv / linear layer */
    node *pn = &c->m->nodes[x->node];
    if ((pn->op == DISTILL_OP_CONV2D || pn->op == DISTILL_OP_LINEAR) && pn->bias &&
        x->node == c->m->n_nodes - 1 && uses_of(c->g, x->name, NULL) == 1 && !pn->keep) {
        distill_param_info w = DISTILL_PARAM_INFO_INIT, bi = DISTILL_PARAM_INFO_INIT;
        char n1[300], n2[300];
        snprintf(n1, sizeof n1, "%s.weight", pn->name);
        snprintf(n2, sizeof n2, "%s.bias", pn->name);
        if ((rc = distill_model_find_param(c->m, n1, &w)) ||
            (rc = distill_model_find_param(c->m, n2, &bi)))
            goto done;
        int64_t per = w.numel / C;
        for (int64_t o = 0; o < C; o++) {
            if (mul) {
                for (int64_t j = 0; j < per; j++)
                    w.data[o * per + j] *= v[o];
                bi.data[o] *= v[o];
            } else {
                bi.data[o] += v[o];
            }
        }
        rc = set_act(c, nd->output[0], x->node);
        goto done;
    }
    rc = add_affine(c, name, x, mul ? v : one, mul ? zero : v);
    if (!rc)
        rc = set_act(c, nd->output[0], model_find(c->m, name));
done:
    xfree(v);
    xfree(one);
    xfree(zero);
    return rc;
}

int op_pad(ctx *c, const Onnx__NodeProto *nd)
{
    val *x;
    int rc;
    if (nd->n_input < 1)
        return BADF(c, "no input");
    if ((rc = get_act(c, nd->input[0], &x)))
        return rc;
    char mode[32];
    attr_s(nd, "mode", "constant", mode, sizeof mode);
    if (strcmp(mode, "constant") != 0)
        return UNSUP(c, "mode '%s'; only zero (constant) padding is supported", mode);
    int64_t p[16];
    size_t n;
    if ((rc = int_list(c, nd, "pads", 1, p, 16, &n)))
        return rc;
    double value;
    if ((rc = opt_scalar(c, nd, c->opset < 11 ? "value" : NULL, 2, 0.0, &value)))
        return rc;
    if (value != 0)
        return UNSUP(c, "padding with %g; only zero padding folds into a convolution", value);
    if (nd->n_input > 3 && present(nd->input[3]))
        return UNSUP(c, "the axes input");
    const node *in = act_node(c, x);
    if (in->rank != 3 || n != 8)
        return UNSUP(c, "a Pad of other than a (N, C, H, W) tensor");
    if (p[0] || p[1] || p[4] || p[5])
        return UNSUP(c, "padding of the batch or channel dims");
    for (int k = 0; k < 8; k++)
        if (p[k] < 0 || p[k] > 4096)
            return UNSUP(c, "pad %lld (negative or huge)", (long long)p[k]);
    val *o = new_val(c, nd->output[0]);
    if (!o)
        return DISTILL_ENOMEM;
    o->kind = V_PAD;
    o->node = x->node;
    o->pad[0] = (int)p[2], o->pad[1] = (int)p[3], o->pad[2] = (int)p[6], o->pad[3] = (int)p[7];
    o->pad_node = c->nname;
    return DISTILL_OK;
}

/* Shape, Gather, Unsqueeze, Cast, Constant: constants and shape arithmetic. */
int op_shape(ctx *c, const Onnx__NodeProto *nd)
{
    val *x;
    int rc;
    if (nd->n_input < 1)
        return BADF(c, "no input");
    if ((rc = get_val(c, nd->input[0], &x)))
        return rc;
    int64_t d[MAX_RANK] = {0};
    int R;
    if (x->kind == V_CONST) {
        R = x->rank;
        memcpy(d, x->dims, sizeof d);
    } else {
        if ((rc = get_act(c, nd->input[0], &x)))
            return rc;
        const node *in = act_node(c, x);
        R = in->rank + 1;
        d[0] = BATCH_SYM;
        for (int k = 0; k < in->rank; k++)
            d[k + 1] = in->dims[k];
    }
    int64_t s = attr_i(nd, "start", 0), e = attr_i(nd, "end", R);
    if (s < 0)
        s += R;
    if (e < 0)
        e += R;
    s = s < 0 ? 0 : s > R ? R : s;
    e = e < s ? s : e > R ? R : e;
    val *o = new_val(c, nd->output[0]);
    if (!o)
        return DISTILL_ENOMEM;
    o->kind = V_CONST;
    o->is_int = 1;
    o->rank = 1;
    o->dims[0] = o->numel = e - s;
    if (!(o->i = xmalloc((size_t)(e - s + 1) * sizeof *o->i)))
        return DISTILL_ENOMEM;
    memcpy(o->i, d + s, (size_t)(e - s) * sizeof *o->i);
    return DISTILL_OK;
}

int op_gather(ctx *c, const Onnx__NodeProto *nd)
{
    val *d = NULL, *ix = NULL;
    int rc;
    if (nd->n_input != 2)
        return BADF(c, "Gather needs 2 inputs");
    if ((rc = get_val(c, nd->input[0], &d)))
        return rc;
    if (d->kind != V_CONST)
        return UNSUP(c, "Gather from a computed tensor (only from shapes)");
    if ((rc = get_const(c, nd->input[1], &ix)))
        return rc;
    if (!d->is_int || d->rank != 1 || !ix->is_int || ix->rank > 1 || attr_i(nd, "axis", 0))
        return UNSUP(c, "Gather other than of a 1-D int shape along axis 0");
    val *o = new_val(c, nd->output[0]);
    if (!o)
        return DISTILL_ENOMEM;
    o->kind = V_CONST;
    o->is_int = 1;
    o->rank = ix->rank;
    o->dims[0] = o->numel = ix->numel;
    if (!(o->i = xmalloc((size_t)(ix->numel + 1) * sizeof *o->i)))
        return DISTILL_ENOMEM;
    for (int64_t k = 0; k < ix->numel; k++) {
        int64_t j = ix->i[k] < 0 ? ix->i[k] + d->numel : ix->i[k];
        if (j < 0 || j >= d->numel)
            return BADF(c, "index %lld is out of range", (long long)ix->i[k]);
        o->i[k] = d->i[j];
    }
    return DISTILL_OK;
}

/* Concat of constants: shape arithmetic on 1-D int vectors. */
int shape_concat(ctx *c, const Onnx__NodeProto *nd)
{
    int rc;
    int64_t total = 0;
    val *parts[64];
    if (nd->n_input > 64)
        return UNSUP(c, "Concat of %zu shapes", nd->n_input);
    for (size_t k = 0; k < nd->n_input; k++) {
        val *v;
        if ((rc = get_const(c, nd->input[k], &v)))
            return rc;
        parts[k] = v;
        if (!v->is_int || v->rank != 1)
            return UNSUP(c, "Concat of constants other than 1-D int shapes");
        total += v->numel;
    }
    if (total > 64)
        return UNSUP(c, "a shape of %lld values", (long long)total);
    val *o = new_val(c, nd->output[0]);
    if (!o)
        return DISTILL_ENOMEM;
    o->kind = V_CONST;
    o->is_int = 1;
    o->rank = 1;
    o->dims[0] = o->numel = total;
    if (!(o->i = xmalloc((size_t)(total ? total : 1) * sizeof *o->i)))
        return DISTILL_ENOMEM;
    int64_t at = 0;
    for (size_t k = 0; k < nd->n_input && at < total; k++) {
        val *v = parts[k];
        int64_t take = v->numel < total - at ? v->numel : total - at;
        memcpy(o->i + at, v->i, (size_t)take * sizeof *v->i);
        at += take;
    }
    return DISTILL_OK;
}

/* Unsqueeze / Squeeze / Cast / Identity of a constant: same values, new shape. */
int op_const_copy(ctx *c, const Onnx__NodeProto *nd, const val *x, int new_rank)
{
    val *o = new_val(c, nd->output[0]);
    if (!o)
        return DISTILL_ENOMEM;
    o->kind = V_CONST;
    o->is_int = x->is_int;
    o->numel = x->numel;
    o->rank = new_rank;
    if (new_rank == x->rank)
        memcpy(o->dims, x->dims, sizeof o->dims);
    else
        for (int d = 0; d < new_rank; d++)
            o->dims[d] = d == 0 ? x->numel : 1;
    size_t es = x->is_int ? sizeof(int64_t) : sizeof(float);
    void *p = xmalloc((size_t)(x->numel + 1) * es);
    if (!p)
        return DISTILL_ENOMEM;
    memcpy(p, x->is_int ? (void *)x->i : (void *)x->f, (size_t)x->numel * es);
    if (x->is_int)
        o->i = p;
    else
        o->f = p;
    return DISTILL_OK;
}

#endif /* DISTILL_HAVE_ONNX */

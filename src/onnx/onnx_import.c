/*
 * onnx_import.c - a distill_model from an ONNX file.
 *
 * The file is parsed by protobuf-c (which checks the wire format and
 * allocates only what the bytes hold), then the graph is walked once in its
 * (topological) node order.  Every ONNX value is one of
 *   - an activation: the output of a model node, (N, C, H, W) or (N, F);
 *   - a constant: an initializer, a Constant node, or a value computed from
 *     constants and shapes (PyTorch's Shape -> Gather -> Unsqueeze -> Concat
 *     -> Reshape flatten idiom); int values may hold the symbolic batch;
 *   - a pending Pad: a zero Pad of H and W, folded into the Conv or
 *     AveragePool that reads it.
 * Patterns that span several ONNX nodes (GELU written with Erf) are found in
 * a pre-pass.  Every refusal names the node and the reason.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill/onnx.h"
#include "nn/graph.h"
#include "onnx/onnx_internal.h"
#include "util/util.h"

#ifdef DISTILL_HAVE_ONNX

static void *pb_alloc(void *payload, size_t size)
{
    (void)payload;
    return xmalloc(size ? size : 1);
}

static void pb_free(void *payload, void *p)
{
    (void)payload;
    xfree(p);
}

ProtobufCAllocator onnx_allocator = {pb_alloc, pb_free, NULL};

int distill_onnx_available(void)
{
    return 1;
}

#define BATCH_SYM (INT64_MIN + 1) /* the symbolic batch dim in int values */
#define MAX_CONST_ELEMS ((int64_t)1 << 28)
#define MAX_RANK 8

enum { V_ACT = 1, V_CONST, V_PAD };

typedef struct val {
    const char *name;  /* ONNX name; borrowed from the parsed proto */
    int kind;
    int node;          /* V_ACT, V_PAD: index of the model node */
    /* V_CONST */
    int rank;
    int64_t dims[MAX_RANK];
    int64_t numel;
    int is_int;
    float *f;          /* float constants */
    int64_t *i;        /* int constants (BATCH_SYM allowed) */
    /* V_PAD: zero padding of (top, left, bottom, right) */
    int pad[4];
    const char *pad_node;
} val;

typedef struct ctx {
    Onnx__GraphProto *g;
    distill_model *m;
    val *vals;
    size_t n_vals, cap_vals;
    int64_t opset;
    int64_t fixed_batch;   /* the input's batch dim when the file fixes it, else 0 */
    unsigned char *skip;   /* per ONNX node: consumed by a pattern */
    const char **gelu_in;  /* per ONNX node: ends a GELU pattern whose input is this */
    /* the node being imported, for messages */
    const char *nname, *nop;
} ctx;

#define UNSUP(c, ...) node_err((c), DISTILL_EUNSUPPORTED, __VA_ARGS__)
#define BADF(c, ...) node_err((c), DISTILL_EFORMAT, __VA_ARGS__)

static int node_err(ctx *c, int status, const char *fmt, ...) DISTILL__PRINTF(3, 4);

#include <stdarg.h>
static int node_err(ctx *c, int status, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->nname)
        return seterr(status, "ONNX node '%s' (%s): %s", c->nname, c->nop, msg);
    return seterr(status, "ONNX graph: %s", msg);
}

static int present(const char *s)
{
    return s && *s;
}

/* ------------------------------------------------------------- values */

static val *find_val(ctx *c, const char *name)
{
    for (size_t k = c->n_vals; k-- > 0;)
        if (strcmp(c->vals[k].name, name) == 0)
            return &c->vals[k];
    return NULL;
}

static val *new_val(ctx *c, const char *name)
{
    /* capacity is reserved up front, so values never move */
    if (c->n_vals == c->cap_vals) {
        seterr(DISTILL_EFORMAT, "ONNX graph: more values than outputs");
        return NULL;
    }
    val *v = &c->vals[c->n_vals++];
    memset(v, 0, sizeof *v);
    v->name = name;
    return v;
}

static void free_vals(ctx *c)
{
    for (size_t k = 0; k < c->n_vals; k++) {
        xfree(c->vals[k].f);
        xfree(c->vals[k].i);
    }
    xfree(c->vals);
}

/* The value called `name`, which the node needs; EFORMAT if undefined. */
static int get_val(ctx *c, const char *name, val **out)
{
    val *v = present(name) ? find_val(c, name) : NULL;
    if (!v)
        return BADF(c, "input '%s' is not defined before the node", name ? name : "");
    *out = v;
    return DISTILL_OK;
}

static int get_act(ctx *c, const char *name, val **out)
{
    int rc = get_val(c, name, out);
    if (rc)
        return rc;
    if ((*out)->kind == V_PAD)
        return UNSUP(c, "reads the output of Pad '%s'; a Pad can only be folded into the Conv "
                        "or AveragePool that reads it",
                     (*out)->pad_node);
    if ((*out)->kind != V_ACT)
        return UNSUP(c, "input '%s' is a constant where the model needs a computed tensor", name);
    return DISTILL_OK;
}

static int get_const(ctx *c, const char *name, val **out)
{
    int rc = get_val(c, name, out);
    if (rc)
        return rc;
    if ((*out)->kind != V_CONST)
        return UNSUP(c, "input '%s' must be a constant (an initializer or a Constant node)", name);
    return DISTILL_OK;
}

static const node *act_node(ctx *c, const val *v)
{
    return &c->m->nodes[v->node];
}

/* Full ONNX rank of an activation: the batch dim plus the node's. */
static int act_rank(ctx *c, const val *v)
{
    return act_node(c, v)->rank + 1;
}

static double cval(const val *v, int64_t k)
{
    return v->is_int ? (double)v->i[k] : (double)v->f[k];
}

/* Alias: ONNX value `name` is the model node `node`. */
static int set_act(ctx *c, const char *name, int node)
{
    if (!present(name))
        return DISTILL_OK;
    val *v = new_val(c, name);
    if (!v)
        return DISTILL_ENOMEM;
    v->kind = V_ACT;
    v->node = node;
    return DISTILL_OK;
}

/* ------------------------------------------------------------ tensors */

static int check_dims(ctx *c, const char *what, size_t n_dims, const int64_t *dims,
                      int64_t *numel)
{
    if (n_dims > MAX_RANK)
        return UNSUP(c, "tensor '%s' has rank %zu (at most %d)", what, n_dims, MAX_RANK);
    int64_t e = 1;
    for (size_t d = 0; d < n_dims; d++) {
        if (dims[d] < 0 || dims[d] > MAX_CONST_ELEMS)
            return BADF(c, "tensor '%s' has dim %lld", what, (long long)dims[d]);
        e *= dims[d];
        if (e > MAX_CONST_ELEMS)
            return UNSUP(c, "tensor '%s' has more than %lld elements", what,
                         (long long)MAX_CONST_ELEMS);
    }
    *numel = e;
    return DISTILL_OK;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* Decode a TensorProto into value v (kind V_CONST). */
static int load_tensor(ctx *c, const Onnx__TensorProto *t, const char *name, val *v)
{
    const char *what = present(name) ? name : "(unnamed)";
    int64_t n = 0;
    int rc = check_dims(c, what, t->n_dims, t->dims, &n);
    if (rc)
        return rc;
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return UNSUP(c, "tensor '%s' keeps its data in an external file", what);
    if (t->segment)
        return UNSUP(c, "tensor '%s' is segmented", what);
    v->kind = V_CONST;
    v->rank = (int)t->n_dims;
    for (size_t d = 0; d < t->n_dims; d++)
        v->dims[d] = t->dims[d];
    v->numel = n;
    int dt = t->has_data_type ? t->data_type : 0;
    size_t un = (size_t)n;
    const uint8_t *raw = t->has_raw_data ? t->raw_data.data : NULL;
    size_t rawlen = t->has_raw_data ? t->raw_data.len : 0;
    if (dt == ONNX_FLOAT || dt == ONNX_DOUBLE) {
        v->f = xmalloc((un ? un : 1) * sizeof(float));
        if (!v->f)
            return DISTILL_ENOMEM;
        size_t es = dt == ONNX_FLOAT ? 4 : 8;
        if (raw) {
            if (rawlen != un * es)
                return BADF(c, "tensor '%s' has %zu bytes of raw data for %lld elements", what,
                            rawlen, (long long)n);
            for (size_t k = 0; k < un; k++) {
                if (es == 4) {
                    uint32_t b = rd32(raw + 4 * k);
                    memcpy(&v->f[k], &b, 4);
                } else {
                    uint64_t b = rd64(raw + 8 * k);
                    double d;
                    memcpy(&d, &b, 8);
                    v->f[k] = (float)d;
                }
            }
        } else if (dt == ONNX_FLOAT) {
            if (t->n_float_data != un)
                return BADF(c, "tensor '%s' has %zu values for %lld elements", what,
                            t->n_float_data, (long long)n);
            if (un)
                memcpy(v->f, t->float_data, un * sizeof(float));
        } else {
            if (t->n_double_data != un)
                return BADF(c, "tensor '%s' has %zu values for %lld elements", what,
                            t->n_double_data, (long long)n);
            for (size_t k = 0; k < un; k++)
                v->f[k] = (float)t->double_data[k];
        }
        return DISTILL_OK;
    }
    if (dt == ONNX_INT64 || dt == ONNX_INT32) {
        v->is_int = 1;
        v->i = xmalloc((un ? un : 1) * sizeof(int64_t));
        if (!v->i)
            return DISTILL_ENOMEM;
        size_t es = dt == ONNX_INT64 ? 8 : 4;
        if (raw) {
            if (rawlen != un * es)
                return BADF(c, "tensor '%s' has %zu bytes of raw data for %lld elements", what,
                            rawlen, (long long)n);
            for (size_t k = 0; k < un; k++)
                v->i[k] = es == 8 ? (int64_t)rd64(raw + 8 * k) : (int32_t)rd32(raw + 4 * k);
        } else if (dt == ONNX_INT64) {
            if (t->n_int64_data != un)
                return BADF(c, "tensor '%s' has %zu values for %lld elements", what,
                            t->n_int64_data, (long long)n);
            for (size_t k = 0; k < un; k++)
                v->i[k] = t->int64_data[k];
        } else {
            if (t->n_int32_data != un)
                return BADF(c, "tensor '%s' has %zu values for %lld elements", what,
                            t->n_int32_data, (long long)n);
            for (size_t k = 0; k < un; k++)
                v->i[k] = t->int32_data[k];
        }
        return DISTILL_OK;
    }
    return UNSUP(c, "tensor '%s' has data type %d; only float32 (and int64/int32 shapes) are "
                    "supported",
                 what, dt);
}

/* ---------------------------------------------------------- attributes */

static const Onnx__AttributeProto *attr(const Onnx__NodeProto *nd, const char *name)
{
    for (size_t k = 0; k < nd->n_attribute; k++)
        if (nd->attribute[k]->name && strcmp(nd->attribute[k]->name, name) == 0)
            return nd->attribute[k];
    return NULL;
}

static int64_t attr_i(const Onnx__NodeProto *nd, const char *name, int64_t def)
{
    const Onnx__AttributeProto *a = attr(nd, name);
    return a && a->has_i ? a->i : def;
}

static float attr_f(const Onnx__NodeProto *nd, const char *name, float def)
{
    const Onnx__AttributeProto *a = attr(nd, name);
    return a && a->has_f ? a->f : def;
}

/* An ints attribute; *n = 0 when absent. */
static const int64_t *attr_ints(const Onnx__NodeProto *nd, const char *name, size_t *n)
{
    const Onnx__AttributeProto *a = attr(nd, name);
    *n = a ? a->n_ints : 0;
    return a ? a->ints : NULL;
}

static int attr_s_is(const Onnx__NodeProto *nd, const char *name, const char *def,
                     const char *want)
{
    const Onnx__AttributeProto *a = attr(nd, name);
    if (!a || !a->has_s)
        return strcmp(def, want) == 0;
    size_t l = strlen(want);
    return a->s.len == l && memcmp(a->s.data, want, l) == 0;
}

static void attr_s(const Onnx__NodeProto *nd, const char *name, const char *def, char *buf,
                   size_t size)
{
    const Onnx__AttributeProto *a = attr(nd, name);
    if (!a || !a->has_s) {
        snprintf(buf, size, "%s", def);
        return;
    }
    size_t l = a->s.len < size - 1 ? a->s.len : size - 1;
    if (l)
        memcpy(buf, a->s.data, l);
    buf[l] = 0;
    for (size_t k = 0; k < l; k++)
        if ((unsigned char)buf[k] < 32 || (unsigned char)buf[k] > 126)
            buf[k] = '?';
}

/* ------------------------------------------------------------- naming */

/* The model node name for ONNX node nd: its name, else its first output's,
 * else a generated one, whichever is free. */
static void pick_name(ctx *c, const Onnx__NodeProto *nd, size_t idx, char *buf, size_t size)
{
    if (present(nd->name) && strlen(nd->name) < 200 && model_find(c->m, nd->name) < 0) {
        snprintf(buf, size, "%s", nd->name);
        return;
    }
    if (nd->n_output && present(nd->output[0]) && strlen(nd->output[0]) < 200 &&
        model_find(c->m, nd->output[0]) < 0) {
        snprintf(buf, size, "%s", nd->output[0]);
        return;
    }
    for (int k = 0;; k++) {
        snprintf(buf, size, "%s_%zu%s%d", c->nop, idx, k ? "_" : "", k);
        if (k == 0)
            snprintf(buf, size, "%s_%zu", c->nop, idx);
        if (model_find(c->m, buf) < 0)
            return;
    }
}

static int out0(const Onnx__NodeProto *nd, const char **o)
{
    *o = nd->n_output ? nd->output[0] : NULL;
    return present(*o);
}

static int set_param(ctx *c, const char *node, const char *suffix, const float *src,
                     int64_t numel)
{
    char pn[300];
    snprintf(pn, sizeof pn, "%s.%s", node, suffix);
    distill_param_info pi;
    int rc = distill_model_find_param(c->m, pn, &pi);
    if (rc)
        return rc;
    if (pi.numel != numel)
        return BADF(c, "parameter '%s' needs %lld values, the file has %lld", pn,
                    (long long)pi.numel, (long long)numel);
    memcpy(pi.data, src, (size_t)numel * sizeof(float));
    return DISTILL_OK;
}

/* The lib's own error says what went wrong; put the ONNX node in front. */
static int lib_err(ctx *c, int rc)
{
    if (rc == DISTILL_ENOMEM)
        return rc;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", util_last_error());
    if (rc == DISTILL_EINVAL || rc == DISTILL_ESHAPE)
        rc = DISTILL_EUNSUPPORTED;
    return node_err(c, rc, "%s", msg);
}

/* ---------------------------------------------------- graph structure */

static int uses_of(const Onnx__GraphProto *g, const char *name, size_t *first_user)
{
    int n = 0;
    for (size_t k = 0; k < g->n_node; k++)
        for (size_t j = 0; j < g->node[k]->n_input; j++)
            if (present(g->node[k]->input[j]) && strcmp(g->node[k]->input[j], name) == 0) {
                if (n++ == 0 && first_user)
                    *first_user = k;
            }
    for (size_t k = 0; k < g->n_output; k++)
        if (g->output[k]->name && strcmp(g->output[k]->name, name) == 0)
            n++;
    return n;
}

static int producer_of(const Onnx__GraphProto *g, const char *name, size_t *idx)
{
    for (size_t k = 0; k < g->n_node; k++)
        for (size_t j = 0; j < g->node[k]->n_output; j++)
            if (present(g->node[k]->output[j]) && strcmp(g->node[k]->output[j], name) == 0) {
                *idx = k;
                return 1;
            }
    return 0;
}

static int is_op(const Onnx__NodeProto *nd, const char *op)
{
    return nd->op_type && strcmp(nd->op_type, op) == 0;
}

/* A float scalar constant in the file (initializer or Constant node) named name. */
static int scalar_const(const Onnx__GraphProto *g, const char *name, double *out)
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
static int binary_with(const Onnx__GraphProto *g, const Onnx__NodeProto *nd, const char *name,
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

static int single_user(const Onnx__GraphProto *g, const char *name, size_t *user)
{
    return present(name) && uses_of(g, name, user) == 1;
}

/* Find GELU written as x * 0.5 * (1 + erf(x / sqrt(2))) (PyTorch's export of
 * nn.GELU before opset 20, and TensorFlow's) around every Erf. */
static void find_gelu(ctx *c)
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
        if (end == m2)
            c->skip[m1] = 1;
        if (have_h)
            c->skip[h] = 1;
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

/* Pool and conv padding: pads (or auto_pad) -> symmetric (ph, pw). */
static int get_pads(ctx *c, const Onnx__NodeProto *nd, int64_t H, int64_t W, int kh, int kw,
                    int sh, int sw, int dh, int dw, int extra[4], int *ph, int *pw, int *all)
{
    int p[4] = {0, 0, 0, 0}; /* top, left, bottom, right */
    char ap[32];
    attr_s(nd, "auto_pad", "NOTSET", ap, sizeof ap);
    if (strcmp(ap, "NOTSET") == 0) {
        size_t n;
        const int64_t *pads = attr_ints(nd, "pads", &n);
        if (n && n != 4)
            return UNSUP(c, "pads has %zu values; a 2-D operator needs 4", n);
        for (size_t k = 0; k < n; k++) {
            if (pads[k] < 0 || pads[k] > 4096)
                return UNSUP(c, "pad %lld (negative or huge)", (long long)pads[k]);
            p[k] = (int)pads[k];
        }
    } else if (strcmp(ap, "SAME_UPPER") == 0 || strcmp(ap, "SAME_LOWER") == 0) {
        int64_t in[2] = {H, W};
        int k2[2] = {kh, kw}, s2[2] = {sh, sw}, d2[2] = {dh, dw};
        for (int ax = 0; ax < 2; ax++) {
            int64_t out = (in[ax] + s2[ax] - 1) / s2[ax];
            int64_t ek = (int64_t)d2[ax] * (k2[ax] - 1) + 1;
            int64_t tot = (out - 1) * s2[ax] + ek - in[ax];
            if (tot < 0)
                tot = 0;
            int64_t lo = ap[5] == 'U' ? tot / 2 : tot - tot / 2;
            p[ax] = (int)lo;
            p[ax + 2] = (int)(tot - lo);
        }
    } else if (strcmp(ap, "VALID") != 0) {
        return UNSUP(c, "auto_pad '%s' is not known", ap);
    }
    for (int k = 0; k < 4; k++)
        p[k] += extra ? extra[k] : 0;
    if (all) { /* pools take each side's padding */
        memcpy(all, p, sizeof p);
        return DISTILL_OK;
    }
    if (p[0] != p[2] || p[1] != p[3])
        return UNSUP(c, "asymmetric padding (top %d, left %d, bottom %d, right %d%s%s): the "
                        "model pads both sides equally",
                     p[0], p[1], p[2], p[3], strcmp(ap, "NOTSET") ? ", from auto_pad " : "",
                     strcmp(ap, "NOTSET") ? ap : "");
    *ph = p[0];
    *pw = p[1];
    return DISTILL_OK;
}

static int two_ints(ctx *c, const Onnx__NodeProto *nd, const char *name, int def, int *a, int *b)
{
    size_t n;
    const int64_t *v = attr_ints(nd, name, &n);
    *a = *b = def;
    if (!n)
        return DISTILL_OK;
    if (n != 2)
        return UNSUP(c, "%s has %zu values; only 2-D operators are supported", name, n);
    if (v[0] < 1 || v[1] < 1 || v[0] > 4096 || v[1] > 4096)
        return UNSUP(c, "%s (%lld, %lld) must be in 1..4096", name, (long long)v[0],
                     (long long)v[1]);
    *a = (int)v[0];
    *b = (int)v[1];
    return DISTILL_OK;
}

/* An int list given as an attribute (older opsets) or as input k (newer). */
static int int_list(ctx *c, const Onnx__NodeProto *nd, const char *aname, size_t k,
                    int64_t *out, size_t max, size_t *n)
{
    size_t na;
    const int64_t *a = attr_ints(nd, aname, &na);
    *n = 0;
    if (a) {
        if (na > max)
            return UNSUP(c, "%s has %zu values", aname, na);
        memcpy(out, a, na * sizeof *a);
        *n = na;
        return DISTILL_OK;
    }
    if (nd->n_input > k && present(nd->input[k])) {
        val *v;
        int rc = get_const(c, nd->input[k], &v);
        if (rc)
            return rc;
        if (!v->is_int || v->numel > (int64_t)max)
            return UNSUP(c, "%s must be at most %zu integers", aname, max);
        for (int64_t j = 0; j < v->numel; j++)
            out[j] = v->i[j];
        *n = (size_t)v->numel;
    }
    return DISTILL_OK;
}

/* Optional float scalar from input k (or attribute aname in older opsets). */
static int opt_scalar(ctx *c, const Onnx__NodeProto *nd, const char *aname, size_t k, double def,
                      double *out)
{
    const Onnx__AttributeProto *a = aname ? attr(nd, aname) : NULL;
    *out = def;
    if (a && a->has_f) {
        *out = a->f;
        return DISTILL_OK;
    }
    if (nd->n_input > k && present(nd->input[k])) {
        val *v;
        int rc = get_const(c, nd->input[k], &v);
        if (rc)
            return rc;
        if (v->numel != 1)
            return UNSUP(c, "input '%s' must be a scalar", nd->input[k]);
        *out = cval(v, 0);
    }
    return DISTILL_OK;
}

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

static int gelu_from(ctx *c, const char *xname, const char *name, int tanh_form,
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
 * computed tensor and a constant: folded into the conv or linear layer that
 * produced the tensor when nothing else reads it, else a per-channel affine
 * node. */
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
    val *x = swapped ? b : a, *k = swapped ? a : b;
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
        distill_param_info w, bi;
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

static int op_concat(ctx *c, const Onnx__NodeProto *nd, const char *name)
{
    if (nd->n_input < 1)
        return BADF(c, "no inputs");
    val *v0 = NULL;
    int rc = get_val(c, nd->input[0], &v0);
    if (rc)
        return rc;
    int64_t axis = attr_i(nd, "axis", 0);
    if (v0->kind == V_CONST) {
        /* shape arithmetic: 1-D int vectors */
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

static int op_pad(ctx *c, const Onnx__NodeProto *nd)
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
static int op_shape(ctx *c, const Onnx__NodeProto *nd)
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

static int op_gather(ctx *c, const Onnx__NodeProto *nd)
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

/* Unsqueeze / Squeeze / Cast / Identity of a constant: same values, new shape. */
static int op_const_copy(ctx *c, const Onnx__NodeProto *nd, const val *x, int new_rank)
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

/* The versions of each operator the importer reads, as ONNX's changelog lists
 * them up to opset 20 (the opset a model imports selects, for each operator,
 * its newest version at or below that opset).  The importer is written for
 * the definitions in force at opsets 9 to 17; a model of an older or newer
 * opset is read when each of its operators has there the definition it has
 * at opset 9 (older) or 17 (newer), and Gelu, which exists from opset 20 on. */
static const struct op_versions {
    const char *op;
    unsigned char since[8]; /* ascending, 0-terminated */
} OP_VERSIONS[] = {
    {"Add", {1, 6, 7, 13, 14}},
    {"AveragePool", {1, 7, 10, 11, 19}},
    {"BatchNormalization", {1, 6, 7, 9, 14, 15}},
    {"Cast", {1, 6, 9, 13, 19}},
    {"Clip", {1, 6, 11, 12, 13}},
    {"Concat", {1, 4, 11, 13}},
    {"Constant", {1, 9, 11, 12, 13, 19}},
    {"Conv", {1, 11}},
    {"Div", {1, 6, 7, 13, 14}},
    {"Dropout", {1, 6, 7, 10, 12, 13}},
    {"Erf", {9, 13}},
    {"Flatten", {1, 9, 11, 13}},
    {"Gather", {1, 11, 13}},
    {"Gelu", {20}},
    {"Gemm", {1, 6, 7, 9, 11, 13}},
    {"GlobalAveragePool", {1}},
    {"Identity", {1, 13, 14, 16, 19}},
    {"LeakyRelu", {1, 6, 16}},
    {"MatMul", {1, 9, 13}},
    {"MaxPool", {1, 8, 10, 11, 12}},
    {"Mul", {1, 6, 7, 13, 14}},
    {"Pad", {1, 2, 11, 13, 18, 19}},
    {"Relu", {1, 6, 13, 14}},
    {"Reshape", {1, 5, 13, 14, 19}},
    {"Shape", {1, 13, 15, 19}},
    {"Softmax", {1, 11, 13}},
    {"Squeeze", {1, 11, 13}},
    {"Sub", {1, 6, 7, 13, 14}},
    {"Unsqueeze", {1, 11, 13}},
};

#define OPSET_MIN 9  /* the importer's own range */
#define OPSET_MAX 17
#define OPSET_READ_MAX 20 /* the newest opset OP_VERSIONS knows */

/* The version of `v` that `opset` selects, or 0 if it did not exist yet. */
static int op_version_at(const struct op_versions *v, int64_t opset)
{
    int best = 0;
    for (size_t k = 0; k < sizeof v->since && v->since[k]; k++)
        if (v->since[k] <= opset)
            best = v->since[k];
    return best;
}

/* Refuse an operator whose definition at the model's opset is not one the
 * importer reads.  Unknown operators pass: op_node names them. */
static int check_op_version(ctx *c, const Onnx__NodeProto *nd)
{
    if (!present(nd->op_type) || (present(nd->domain) && strcmp(nd->domain, "ai.onnx") != 0))
        return DISTILL_OK;
    for (size_t k = 0; k < sizeof OP_VERSIONS / sizeof OP_VERSIONS[0]; k++) {
        const struct op_versions *v = &OP_VERSIONS[k];
        if (strcmp(v->op, nd->op_type) != 0)
            continue;
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
    return DISTILL_OK;
}

static int op_node(ctx *c, const Onnx__NodeProto *nd, size_t idx)
{
    const char *op = nd->op_type ? nd->op_type : "";
    char name[256];
    const char *o;
    int rc;
    if (!out0(nd, &o))
        return BADF(c, "has no output");
    if (present(nd->domain) && strcmp(nd->domain, "ai.onnx") != 0)
        return UNSUP(c, "operator domain '%s' (only the default ONNX domain)", nd->domain);
    pick_name(c, nd, idx, name, sizeof name);
    if (c->gelu_in[idx])
        return gelu_from(c, c->gelu_in[idx], name, 0, o);
    for (size_t k = 1; k < nd->n_output; k++) /* extra outputs must be unused */
        if (present(nd->output[k]) && !is_op(nd, "Dropout") && !is_op(nd, "MaxPool") &&
            !is_op(nd, "BatchNormalization") && uses_of(c->g, nd->output[k], NULL))
            return UNSUP(c, "output %zu ('%s') is used; only the first output is supported", k,
                         nd->output[k]);
    if (!strcmp(op, "Conv"))
        return op_conv(c, nd, name);
    if (!strcmp(op, "BatchNormalization"))
        return op_batchnorm(c, nd, name);
    if (!strcmp(op, "Relu"))
        return op_unary(c, nd, name, distill_model_add_relu);
    if (!strcmp(op, "Clip"))
        return op_clip(c, nd, name);
    if (!strcmp(op, "LeakyRelu"))
        return op_leaky(c, nd, name);
    if (!strcmp(op, "Gelu")) {
        if (nd->n_input < 1)
            return BADF(c, "no input");
        int tanh_form = attr_s_is(nd, "approximate", "none", "tanh");
        if (!tanh_form && !attr_s_is(nd, "approximate", "none", "none"))
            return UNSUP(c, "approximate must be 'none' or 'tanh'");
        return gelu_from(c, nd->input[0], name, tanh_form, o);
    }
    if (!strcmp(op, "MaxPool"))
        return op_pool(c, nd, name, 1);
    if (!strcmp(op, "AveragePool"))
        return op_pool(c, nd, name, 0);
    if (!strcmp(op, "GlobalAveragePool"))
        return op_unary(c, nd, name, distill_model_add_global_avgpool);
    if (!strcmp(op, "Gemm"))
        return op_gemm(c, nd, name);
    if (!strcmp(op, "MatMul"))
        return op_matmul(c, nd, name);
    if (!strcmp(op, "Add"))
        return op_arith(c, nd, name, '+');
    if (!strcmp(op, "Sub"))
        return op_arith(c, nd, name, '-');
    if (!strcmp(op, "Mul"))
        return op_arith(c, nd, name, '*');
    if (!strcmp(op, "Div"))
        return op_arith(c, nd, name, '/');
    if (!strcmp(op, "Concat"))
        return op_concat(c, nd, name);
    if (!strcmp(op, "Flatten"))
        return op_flatten(c, nd, name);
    if (!strcmp(op, "Reshape"))
        return op_reshape(c, nd, name);
    if (!strcmp(op, "Softmax"))
        return op_softmax(c, nd, name);
    if (!strcmp(op, "Dropout"))
        return op_dropout(c, nd, name);
    if (!strcmp(op, "Pad"))
        return op_pad(c, nd);
    if (!strcmp(op, "Shape"))
        return op_shape(c, nd);
    if (!strcmp(op, "Gather"))
        return op_gather(c, nd);
    if (!strcmp(op, "Constant"))
        return op_constant(c, nd);
    if (!strcmp(op, "Identity") || !strcmp(op, "Cast") || !strcmp(op, "Unsqueeze") ||
        !strcmp(op, "Squeeze")) {
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
    return UNSUP(c, "operator %s is not supported", op[0] ? op : "(empty)");
}

/* ---------------------------------------------------------------- graph */

static int read_input(ctx *c, const Onnx__ValueInfoProto *vi, int64_t *dims, int *rank)
{
    const char *n = vi->name;
    const Onnx__TypeProto *tp = vi->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return UNSUP(c, "input '%s' is not a tensor", n);
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    if (!tt->has_elem_type || tt->elem_type != ONNX_FLOAT)
        return UNSUP(c, "input '%s' has data type %d; only float32 inputs are supported", n,
                     tt->has_elem_type ? tt->elem_type : 0);
    if (!tt->shape)
        return UNSUP(c, "input '%s' has no shape; a fixed (N, C, H, W) or (N, F) is needed", n);
    size_t R = tt->shape->n_dim;
    if (R != 2 && R != 4)
        return UNSUP(c, "input '%s' has rank %zu; only (N, C, H, W) and (N, F) are supported", n,
                     R);
    for (size_t d = 0; d < R; d++) {
        const Onnx__TensorShapeProto__Dimension *dm = tt->shape->dim[d];
        int fixed = dm->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
        if (d == 0) {
            c->fixed_batch = fixed && dm->dim_value > 0 ? dm->dim_value : 0;
            continue;
        }
        if (!fixed || dm->dim_value < 1 || dm->dim_value > (1 << 24))
            return UNSUP(c, "input '%s': dim %zu is dynamic or out of range; every dim but the "
                            "batch must be a fixed size",
                         n, d);
        dims[d - 1] = dm->dim_value;
    }
    int64_t per = 1;
    for (size_t d = 1; d < R; d++)
        per *= dims[d - 1]; /* each <= 2^24, at most 3: no overflow */
    if (per > ((int64_t)1 << 28))
        return UNSUP(c, "input '%s' has %lld values per image (at most 2^28)", n, (long long)per);
    *rank = (int)R - 1;
    return DISTILL_OK;
}

static int import_model(ctx *c, Onnx__ModelProto *mp, distill_model **out)
{
    Onnx__GraphProto *g = mp->graph;
    if (!g)
        return BADF(c, "the model has no graph");
    c->g = g;
    c->opset = 0;
    for (size_t k = 0; k < mp->n_opset_import; k++) {
        const Onnx__OperatorSetIdProto *os = mp->opset_import[k];
        if (!present(os->domain) || strcmp(os->domain, "ai.onnx") == 0)
            c->opset = os->has_version ? os->version : 0;
    }
    if (c->opset < 1 || c->opset > OPSET_READ_MAX)
        return UNSUP(c, "opset %lld of the default domain; opsets %d to %d are supported (and "
                        "1 to %d where each operator is defined as there)",
                     (long long)c->opset, OPSET_MIN, OPSET_MAX, OPSET_READ_MAX);
    /* one value per initializer, input and node output, reserved now */
    size_t cap = g->n_initializer + g->n_input + 1;
    for (size_t k = 0; k < g->n_node; k++)
        cap += g->node[k]->n_output;
    if (!(c->vals = xmalloc(cap * sizeof *c->vals)))
        return DISTILL_ENOMEM;
    c->cap_vals = cap;
    /* initializers */
    for (size_t k = 0; k < g->n_initializer; k++) {
        const Onnx__TensorProto *t = g->initializer[k];
        if (!present(t->name))
            return BADF(c, "initializer %zu has no name", k);
        val *v = new_val(c, t->name);
        if (!v)
            return DISTILL_ENOMEM;
        int rc = load_tensor(c, t, t->name, v);
        if (rc)
            return rc;
    }
    /* the one real input */
    const Onnx__ValueInfoProto *in = NULL;
    for (size_t k = 0; k < g->n_input; k++) {
        const char *n = g->input[k]->name;
        if (!present(n))
            return BADF(c, "graph input %zu has no name", k);
        if (find_val(c, n))
            continue; /* an initializer listed as an input (IR < 4) */
        if (in)
            return UNSUP(c, "the graph has inputs '%s' and '%s'; only models with one input are "
                            "supported",
                         in->name, n);
        in = g->input[k];
    }
    if (!in)
        return UNSUP(c, "the graph has no input");
    if (g->n_output < 1 || !present(g->output[0]->name))
        return BADF(c, "the graph has no output");
    int64_t dims[3] = {0, 0, 0};
    int rank = 0, rc;
    if ((rc = read_input(c, in, dims, &rank)))
        return rc;
    if (strlen(in->name) > 200)
        return UNSUP(c, "input name is longer than 200 bytes");
    if (c->n_vals > 0 && !c->vals)
        return DISTILL_ENOMEM;
    if ((rc = distill_model_create(&c->m, in->name, rank, dims)))
        return lib_err(c, rc);
    if ((rc = set_act(c, in->name, 0)))
        return rc;
    if (!(c->skip = xcalloc(g->n_node + 1, 1)) ||
        !(c->gelu_in = xcalloc(g->n_node + 1, sizeof *c->gelu_in)))
        return DISTILL_ENOMEM;
    find_gelu(c);
    for (size_t k = 0; k < g->n_node; k++) {
        const Onnx__NodeProto *nd = g->node[k];
        c->nop = present(nd->op_type) ? nd->op_type : "?";
        c->nname = present(nd->name) ? nd->name
                   : nd->n_output && present(nd->output[0]) ? nd->output[0]
                                                             : "(unnamed)";
        if ((rc = check_op_version(c, nd)))
            return rc;
        if (c->skip[k])
            continue;
        if ((rc = op_node(c, nd, k)))
            return rc;
    }
    c->nname = NULL;
    /* outputs: the first is the model's output; the others are kept */
    for (size_t k = 0; k < g->n_output; k++) {
        val *v = present(g->output[k]->name) ? find_val(c, g->output[k]->name) : NULL;
        if (!v)
            return BADF(c, "output '%s' is not computed by any node",
                        g->output[k]->name ? g->output[k]->name : "");
        if (v->kind != V_ACT)
            return UNSUP(c, "output '%s' is a constant or a bare Pad", v->name);
        const char *nn = c->m->nodes[v->node].name;
        if (k == 0)
            rc = distill_model_set_output(c->m, nn);
        else
            rc = distill_model_keep_node(c->m, nn);
        if (rc)
            return rc;
    }
    *out = c->m;
    c->m = NULL;
    return DISTILL_OK;
}

int distill_model_import_onnx_buffer(distill_model **out, const void *data, size_t size)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_model_import_onnx_buffer: out is NULL");
    *out = NULL;
    if (!data && size)
        return seterr(DISTILL_EINVAL, "distill_model_import_onnx_buffer: data is NULL");
    Onnx__ModelProto *mp = onnx__model_proto__unpack(&onnx_allocator, size, data);
    if (!mp) {
        if (util_last_status() == DISTILL_ENOMEM)
            return DISTILL_ENOMEM;
        return seterr(DISTILL_EFORMAT, "not a valid ONNX protobuf (truncated or corrupted)");
    }
    ctx c;
    memset(&c, 0, sizeof c);
    int rc = import_model(&c, mp, out);
    distill_model_free(c.m);
    free_vals(&c);
    xfree(c.skip);
    xfree(c.gelu_in);
    onnx__model_proto__free_unpacked(mp, &onnx_allocator);
    return rc;
}

int distill_model_import_onnx(distill_model **out, const char *path)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_model_import_onnx: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return seterr(DISTILL_EINVAL, "distill_model_import_onnx: no path");
    void *data;
    size_t size;
    size_t cap = (uint64_t)SIZE_MAX < ONNX_MAX_FILE ? SIZE_MAX : (size_t)ONNX_MAX_FILE;
    int rc = read_file(path, cap, &data, &size);
    if (rc)
        return rc;
    rc = distill_model_import_onnx_buffer(out, data, size);
    xfree(data);
    if (rc && rc != DISTILL_ENOMEM)
        return seterr(rc, "'%.200s': %s", path, util_last_error());
    return rc;
}

#else /* !DISTILL_HAVE_ONNX */

int distill_onnx_available(void)
{
    return 0;
}

int distill_model_import_onnx(distill_model **out, const char *path)
{
    (void)path;
    if (out)
        *out = NULL;
    return seterr(DISTILL_EUNSUPPORTED, "this libdistill was built without ONNX support");
}

int distill_model_import_onnx_buffer(distill_model **out, const void *data, size_t size)
{
    (void)data, (void)size;
    if (out)
        *out = NULL;
    return seterr(DISTILL_EUNSUPPORTED, "this libdistill was built without ONNX support");
}

int distill_model_export_onnx(const distill_model *m, const char *path)
{
    (void)m, (void)path;
    return seterr(DISTILL_EUNSUPPORTED, "this libdistill was built without ONNX support");
}

int onnx_export_buffer(const struct distill_model *m, void **data, size_t *size);
int onnx_export_buffer(const struct distill_model *m, void **data, size_t *size)
{
    (void)m;
    *data = NULL;
    *size = 0;
    return seterr(DISTILL_EUNSUPPORTED, "this libdistill was built without ONNX support");
}

#endif

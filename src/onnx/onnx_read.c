/*
 * onnx_read.c - the ONNX importer's reading and validation layer: the
 * protobuf-c allocator, node errors, the values table, TensorProto
 * decoding, attributes, node and parameter names, graph-structure queries,
 * the attribute groups several operators read, and the graph input.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "onnx/onnx_import_internal.h"

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

int node_err(ctx *c, int status, const char *fmt, ...)
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

/* ------------------------------------------------------------- values */

val *find_val(ctx *c, const char *name)
{
    for (size_t k = c->n_vals; k-- > 0;)
        if (strcmp(c->vals[k].name, name) == 0)
            return &c->vals[k];
    return NULL;
}

val *new_val(ctx *c, const char *name)
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

void free_vals(ctx *c)
{
    for (size_t k = 0; k < c->n_vals; k++) {
        xfree(c->vals[k].f);
        xfree(c->vals[k].i);
    }
    xfree(c->vals);
}

/* The value called `name`, which the node needs; EFORMAT if undefined. */
int get_val(ctx *c, const char *name, val **out)
{
    val *v = present(name) ? find_val(c, name) : NULL;
    if (!v)
        return BADF(c, "input '%s' is not defined before the node", name ? name : "");
    *out = v;
    return DISTILL_OK;
}

int get_act(ctx *c, const char *name, val **out)
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

int get_const(ctx *c, const char *name, val **out)
{
    int rc = get_val(c, name, out);
    if (rc)
        return rc;
    if ((*out)->kind != V_CONST)
        return UNSUP(c, "input '%s' must be a constant (an initializer or a Constant node)", name);
    return DISTILL_OK;
}

const node *act_node(ctx *c, const val *v)
{
    return &c->m->nodes[v->node];
}

/* Full ONNX rank of an activation: the batch dim plus the node's. */
int act_rank(ctx *c, const val *v)
{
    return act_node(c, v)->rank + 1;
}

double cval(const val *v, int64_t k)
{
    return v->is_int ? (double)v->i[k] : (double)v->f[k];
}

/* Alias: ONNX value `name` is the model node `node`. */
int set_act(ctx *c, const char *name, int node)
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

int check_dims(ctx *c, const char *what, size_t n_dims, const int64_t *dims,
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

uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* Decode a TensorProto into value v (kind V_CONST). */
int load_tensor(ctx *c, const Onnx__TensorProto *t, const char *name, val *v)
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

const Onnx__AttributeProto *attr(const Onnx__NodeProto *nd, const char *name)
{
    for (size_t k = 0; k < nd->n_attribute; k++)
        if (nd->attribute[k]->name && strcmp(nd->attribute[k]->name, name) == 0)
            return nd->attribute[k];
    return NULL;
}

int64_t attr_i(const Onnx__NodeProto *nd, const char *name, int64_t def)
{
    const Onnx__AttributeProto *a = attr(nd, name);
    return a && a->has_i ? a->i : def;
}

float attr_f(const Onnx__NodeProto *nd, const char *name, float def)
{
    const Onnx__AttributeProto *a = attr(nd, name);
    return a && a->has_f ? a->f : def;
}

/* An ints attribute; *n = 0 when absent. */
const int64_t *attr_ints(const Onnx__NodeProto *nd, const char *name, size_t *n)
{
    const Onnx__AttributeProto *a = attr(nd, name);
    *n = a ? a->n_ints : 0;
    return a ? a->ints : NULL;
}

int attr_s_is(const Onnx__NodeProto *nd, const char *name, const char *def,
                     const char *want)
{
    const Onnx__AttributeProto *a = attr(nd, name);
    if (!a || !a->has_s)
        return strcmp(def, want) == 0;
    size_t l = strlen(want);
    return a->s.len == l && memcmp(a->s.data, want, l) == 0;
}

void attr_s(const Onnx__NodeProto *nd, const char *name, const char *def, char *buf,
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
void pick_name(ctx *c, const Onnx__NodeProto *nd, size_t idx, char *buf, size_t size)
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

int out0(const Onnx__NodeProto *nd, const char **o)
{
    *o = nd->n_output ? nd->output[0] : NULL;
    return present(*o);
}

int set_param(ctx *c, const char *node, const char *suffix, const float *src,
                     int64_t numel)
{
    char pn[300];
    snprintf(pn, sizeof pn, "%s.%s", node, suffix);
    distill_param_info pi = DISTILL_PARAM_INFO_INIT;
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
int lib_err(ctx *c, int rc)
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

int uses_of(const Onnx__GraphProto *g, const char *name, size_t *first_user)
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

int producer_of(const Onnx__GraphProto *g, const char *name, size_t *idx)
{
    for (size_t k = 0; k < g->n_node; k++)
        for (size_t j = 0; j < g->node[k]->n_output; j++)
            if (present(g->node[k]->output[j]) && strcmp(g->node[k]->output[j], name) == 0) {
                *idx = k;
                return 1;
            }
    return 0;
}

int is_op(const Onnx__NodeProto *nd, const char *op)
{
    return nd->op_type && strcmp(nd->op_type, op) == 0;
}


/* Pool and conv padding: pads (or auto_pad) -> symmetric (ph, pw). */
int get_pads(ctx *c, const Onnx__NodeProto *nd, int64_t H, int64_t W, int kh, int kw,
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

int two_ints(ctx *c, const Onnx__NodeProto *nd, const char *name, int def, int *a, int *b)
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
int int_list(ctx *c, const Onnx__NodeProto *nd, const char *aname, size_t k,
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
int opt_scalar(ctx *c, const Onnx__NodeProto *nd, const char *aname, size_t k, double def,
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

int read_input(ctx *c, const Onnx__ValueInfoProto *vi, int64_t *dims, int *rank)
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

#endif /* DISTILL_HAVE_ONNX */

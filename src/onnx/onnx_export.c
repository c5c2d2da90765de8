/*
 * onnx_export.c - a distill_model as an ONNX file (opset 13).
 *
 * Each model node becomes one ONNX node of the same name whose output
 * tensor also has that name (GELU becomes the five nodes of its Erf form,
 * the last one carrying the name); parameters become initializers named as
 * the model names them ("conv1.weight").  The message is built from the
 * protobuf-c structs generated from onnx.proto and packed once; every
 * allocation is recorded in an arena freed at the end.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "distill/onnx.h"
#include "nn/graph.h"
#include "onnx/onnx_internal.h"
#include "util/util.h"

#ifdef DISTILL_HAVE_ONNX

#define EXPORT_OPSET 13
#define EXPORT_IR 7

typedef struct arena {
    void **p;
    size_t n, cap;
    int failed;
} arena;

static void *aalloc(arena *a, size_t size)
{
    if (a->failed)
        return NULL;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        void **np = xrealloc(a->p, cap * sizeof *np);
        if (!np) {
            a->failed = 1;
            return NULL;
        }
        a->p = np;
        a->cap = cap;
    }
    void *q = xcalloc(1, size ? size : 1);
    if (!q) {
        a->failed = 1;
        return NULL;
    }
    a->p[a->n++] = q;
    return q;
}

static char *astr(arena *a, const char *fmt, const char *s1, const char *s2)
{
    size_t l = strlen(fmt) + strlen(s1) + (s2 ? strlen(s2) : 0) + 1;
    char *p = aalloc(a, l);
    if (p)
        snprintf(p, l, fmt, s1, s2 ? s2 : "");
    return p;
}

typedef struct ex {
    arena a;
    const distill_model *m;
    Onnx__GraphProto *g;
    size_t cap_node, cap_init;
} ex;

static Onnx__NodeProto *add_node(ex *e, const char *op, const char *name, const char *out)
{
    if (e->g->n_node == e->cap_node)
        return NULL;
    Onnx__NodeProto *nd = aalloc(&e->a, sizeof *nd);
    char **o = aalloc(&e->a, sizeof *o);
    Onnx__AttributeProto **at = aalloc(&e->a, 8 * sizeof *at);
    char **in = aalloc(&e->a, (MAX_NODE_INPUTS + 1) * sizeof *in);
    if (!nd || !o || !at || !in)
        return NULL;
    onnx__node_proto__init(nd);
    nd->op_type = (char *)op;
    nd->name = (char *)name;
    o[0] = (char *)out;
    nd->output = o;
    nd->n_output = 1;
    nd->attribute = at;
    nd->input = in;
    e->g->node[e->g->n_node++] = nd;
    return nd;
}

static void add_in(Onnx__NodeProto *nd, const char *name)
{
    if (nd && nd->n_input < MAX_NODE_INPUTS + 1)
        nd->input[nd->n_input++] = (char *)name;
}

static Onnx__AttributeProto *add_attr(ex *e, Onnx__NodeProto *nd, const char *name, int type)
{
    if (!nd || nd->n_attribute >= 8)
        return NULL;
    Onnx__AttributeProto *a = aalloc(&e->a, sizeof *a);
    if (!a)
        return NULL;
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1;
    a->type = type;
    nd->attribute[nd->n_attribute++] = a;
    return a;
}

static void attr_int(ex *e, Onnx__NodeProto *nd, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = add_attr(e, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a)
        a->has_i = 1, a->i = v;
}

static void attr_float(ex *e, Onnx__NodeProto *nd, const char *name, float v)
{
    Onnx__AttributeProto *a = add_attr(e, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a)
        a->has_f = 1, a->f = v;
}

static void attr_ints(ex *e, Onnx__NodeProto *nd, const char *name, int n, const int64_t *v)
{
    Onnx__AttributeProto *a = add_attr(e, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *p = aalloc(&e->a, (size_t)n * sizeof *p);
    if (a && p) {
        memcpy(p, v, (size_t)n * sizeof *p);
        a->ints = p;
        a->n_ints = (size_t)n;
    }
}

/* An initializer (float32, raw little-endian data) named `name`. */
static int add_init(ex *e, const char *name, int rank, const int64_t *dims, const float *data)
{
    if (e->g->n_initializer == e->cap_init)
        return seterr(DISTILL_EINVAL, "ONNX export: too many initializers");
    Onnx__TensorProto *t = aalloc(&e->a, sizeof *t);
    int64_t *d = aalloc(&e->a, (size_t)(rank ? rank : 1) * sizeof *d);
    size_t n = 1;
    for (int k = 0; k < rank; k++)
        n *= (size_t)dims[k];
    uint8_t *raw = aalloc(&e->a, n * 4);
    if (!t || !d || !raw)
        return DISTILL_ENOMEM;
    onnx__tensor_proto__init(t);
    t->name = (char *)name;
    if (rank)
        memcpy(d, dims, (size_t)rank * sizeof *d);
    t->dims = d;
    t->n_dims = (size_t)rank;
    t->has_data_type = 1;
    t->data_type = ONNX_FLOAT;
    for (size_t k = 0; k < n; k++) {
        uint32_t b;
        memcpy(&b, &data[k], 4);
        raw[4 * k] = (uint8_t)b, raw[4 * k + 1] = (uint8_t)(b >> 8);
        raw[4 * k + 2] = (uint8_t)(b >> 16), raw[4 * k + 3] = (uint8_t)(b >> 24);
    }
    t->has_raw_data = 1;
    t->raw_data.data = raw;
    t->raw_data.len = n * 4;
    e->g->initializer[e->g->n_initializer++] = t;
    return DISTILL_OK;
}

static int add_scalar(ex *e, const char *name, float v)
{
    return add_init(e, name, 0, NULL, &v);
}

static Onnx__ValueInfoProto *value_info(ex *e, const char *name, const node *n)
{
    Onnx__ValueInfoProto *vi = aalloc(&e->a, sizeof *vi);
    Onnx__TypeProto *tp = aalloc(&e->a, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = aalloc(&e->a, sizeof *tt);
    Onnx__TensorShapeProto *sh = aalloc(&e->a, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dm = aalloc(&e->a, 4 * sizeof *dm);
    if (!vi || !tp || !tt || !sh || !dm)
        return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    for (int d = 0; d <= n->rank; d++) {
        dm[d] = aalloc(&e->a, sizeof *dm[d]);
        if (!dm[d])
            return NULL;
        onnx__tensor_shape_proto__dimension__init(dm[d]);
        if (d == 0) {
            dm[d]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dm[d]->dim_param = "N";
        } else {
            dm[d]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dm[d]->dim_value = n->dims[d - 1];
        }
    }
    sh->dim = dm;
    sh->n_dim = (size_t)n->rank + 1;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX_FLOAT;
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = (char *)name;
    vi->type = tp;
    return vi;
}

static int params_of(ex *e, const node *n, int idx)
{
    distill_model *m = (distill_model *)e->m;
    (void)idx;
    for (int k = n->param_first; k < n->param_first + n->n_params; k++) {
        const param *p = &m->params[k];
        int rc = add_init(e, p->name, p->rank, p->dims, param_data(m, p));
        if (rc)
            return rc;
    }
    return DISTILL_OK;
}

static int export_node(ex *e, int i)
{
    const distill_model *m = e->m;
    const node *n = &m->nodes[i];
    const char *name = n->name;
    const char *in0 = n->n_inputs ? m->nodes[n->inputs[0]].name : NULL;
    Onnx__NodeProto *nd = NULL;
    int rc = DISTILL_OK;
    switch (n->op) {
    case DISTILL_OP_CONV2D: {
        nd = add_node(e, "Conv", name, name);
        add_in(nd, in0);
        add_in(nd, m->params[n->param_first].name);
        if (n->bias)
            add_in(nd, m->params[n->param_first + 1].name);
        int64_t k[2] = {n->kh, n->kw}, s[2] = {n->sh, n->sw}, d[2] = {n->dh, n->dw};
        int64_t p[4] = {n->ph, n->pw, n->ph, n->pw};
        attr_ints(e, nd, "kernel_shape", 2, k);
        attr_ints(e, nd, "strides", 2, s);
        attr_ints(e, nd, "pads", 4, p);
        attr_ints(e, nd, "dilations", 2, d);
        attr_int(e, nd, "group", n->groups);
        rc = params_of(e, n, i);
        break;
    }
    case DISTILL_OP_LINEAR:
        nd = add_node(e, "Gemm", name, name);
        add_in(nd, in0);
        add_in(nd, m->params[n->param_first].name);
        if (n->bias)
            add_in(nd, m->params[n->param_first + 1].name);
        attr_int(e, nd, "transB", 1);
        rc = params_of(e, n, i);
        break;
    case DISTILL_OP_BATCHNORM:
        nd = add_node(e, "BatchNormalization", name, name);
        add_in(nd, in0);
        for (int k = 0; k < 4; k++)
            add_in(nd, m->params[n->param_first + k].name);
        attr_float(e, nd, "epsilon", n->eps);
        attr_float(e, nd, "momentum", 1.0f - n->momentum);
        rc = params_of(e, n, i);
        break;
    case DISTILL_OP_RELU:
        add_in(nd = add_node(e, "Relu", name, name), in0);
        break;
    case DISTILL_OP_RELU6: {
        char *lo = astr(&e->a, "%s.min%s", name, NULL), *hi = astr(&e->a, "%s.max%s", name, NULL);
        nd = add_node(e, "Clip", name, name);
        add_in(nd, in0);
        add_in(nd, lo);
        add_in(nd, hi);
        if (!lo || !hi)
            return DISTILL_ENOMEM;
        if ((rc = add_scalar(e, lo, 0.0f)) == DISTILL_OK)
            rc = add_scalar(e, hi, 6.0f);
        break;
    }
    case DISTILL_OP_LEAKY_RELU:
        add_in(nd = add_node(e, "LeakyRelu", name, name), in0);
        attr_float(e, nd, "alpha", n->alpha);
        break;
    case DISTILL_OP_GELU: {
        if (n->tanh_approx)
            return seterr(DISTILL_EUNSUPPORTED, "ONNX export: gelu '%s' uses the tanh "
                                                "approximation, which opset 13 cannot express "
                                                "as a pattern the importer reads back",
                          name);
        /* 0.5 * (x * (1 + erf(x / sqrt(2)))), as PyTorch exports it */
        char *c_sqrt2 = astr(&e->a, "%s.sqrt2%s", name, NULL);
        char *c_one = astr(&e->a, "%s.one%s", name, NULL);
        char *c_half = astr(&e->a, "%s.half%s", name, NULL);
        char *t_div = astr(&e->a, "%s/div%s", name, NULL);
        char *t_erf = astr(&e->a, "%s/erf%s", name, NULL);
        char *t_add = astr(&e->a, "%s/add%s", name, NULL);
        char *t_mul = astr(&e->a, "%s/mul%s", name, NULL);
        if (!c_sqrt2 || !c_one || !c_half || !t_div || !t_erf || !t_add || !t_mul)
            return DISTILL_ENOMEM;
        nd = add_node(e, "Div", t_div, t_div);
        add_in(nd, in0);
        add_in(nd, c_sqrt2);
        add_in(nd = add_node(e, "Erf", t_erf, t_erf), t_div);
        nd = add_node(e, "Add", t_add, t_add);
        add_in(nd, t_erf);
        add_in(nd, c_one);
        nd = add_node(e, "Mul", t_mul, t_mul);
        add_in(nd, in0);
        add_in(nd, t_add);
        nd = add_node(e, "Mul", name, name);
        add_in(nd, t_mul);
        add_in(nd, c_half);
        if (!(rc = add_scalar(e, c_sqrt2, (float)sqrt(2.0))) && !(rc = add_scalar(e, c_one, 1.0f)))
            rc = add_scalar(e, c_half, 0.5f);
        break;
    }
    case DISTILL_OP_MAXPOOL:
    case DISTILL_OP_AVGPOOL: {
        nd = add_node(e, n->op == DISTILL_OP_MAXPOOL ? "MaxPool" : "AveragePool", name, name);
        add_in(nd, in0);
        /* the bottom and right padding: the top and left ones when that gives
         * the output size (a symmetric pool), else what the output needs */
        const node *x = &m->nodes[n->inputs[0]];
        int pb, pr;
        pool_end_pads(m, n, &pb, &pr);
        if ((x->dims[1] + 2 * n->ph - n->kh) / n->sh + 1 == n->dims[1] && n->ph <= n->kh / 2)
            pb = n->ph;
        if ((x->dims[2] + 2 * n->pw - n->kw) / n->sw + 1 == n->dims[2] && n->pw <= n->kw / 2)
            pr = n->pw;
        int64_t k[2] = {n->kh, n->kw}, s[2] = {n->sh, n->sw}, p[4] = {n->ph, n->pw, pb, pr};
        attr_ints(e, nd, "kernel_shape", 2, k);
        attr_ints(e, nd, "strides", 2, s);
        attr_ints(e, nd, "pads", 4, p);
        if (n->op == DISTILL_OP_AVGPOOL)
            attr_int(e, nd, "count_include_pad", 1);
        break;
    }
    case DISTILL_OP_GLOBAL_AVGPOOL:
        add_in(nd = add_node(e, "GlobalAveragePool", name, name), in0);
        break;
    case DISTILL_OP_ADD:
        nd = add_node(e, "Add", name, name);
        add_in(nd, in0);
        add_in(nd, m->nodes[n->inputs[1]].name);
        break;
    case DISTILL_OP_CONCAT:
        nd = add_node(e, "Concat", name, name);
        for (int k = 0; k < n->n_inputs; k++)
            add_in(nd, m->nodes[n->inputs[k]].name);
        attr_int(e, nd, "axis", 1);
        break;
    case DISTILL_OP_FLATTEN:
        add_in(nd = add_node(e, "Flatten", name, name), in0);
        attr_int(e, nd, "axis", 1);
        break;
    case DISTILL_OP_DROPOUT: {
        char *r = astr(&e->a, "%s.ratio%s", name, NULL);
        if (!r)
            return DISTILL_ENOMEM;
        nd = add_node(e, "Dropout", name, name);
        add_in(nd, in0);
        add_in(nd, r);
        rc = add_scalar(e, r, n->alpha);
        break;
    }
    case DISTILL_OP_SOFTMAX:
        add_in(nd = add_node(e, "Softmax", name, name), in0);
        attr_int(e, nd, "axis", 1);
        break;
    default:
        return seterr(DISTILL_EUNSUPPORTED, "ONNX export: node '%s' has op %s, which has no "
                                            "ONNX form here",
                      name, distill_op_name(n->op));
    }
    if (rc)
        return rc;
    return nd && !e->a.failed ? DISTILL_OK : DISTILL_ENOMEM;
}

/* The model's metadata as metadata_props, the same keys and values
 * (borrowed from the model: it outlives the packing). */
static int add_metadata(ex *e, Onnx__ModelProto *mp)
{
    const model_meta *mm = &e->m->meta;
    if (mm->n == 0)
        return DISTILL_OK;
    int rc = meta_check(e->m, "ONNX export: metadata");
    if (rc)
        return rc;
    Onnx__StringStringEntryProto **props = aalloc(&e->a, (size_t)mm->n * sizeof *props);
    if (!props)
        return DISTILL_ENOMEM;
    for (int i = 0; i < mm->n; i++) {
        Onnx__StringStringEntryProto *kv = aalloc(&e->a, sizeof *kv);
        if (!kv)
            return DISTILL_ENOMEM;
        onnx__string_string_entry_proto__init(kv);
        kv->key = mm->e[i].key;
        kv->value = mm->e[i].value;
        props[i] = kv;
    }
    mp->metadata_props = props;
    mp->n_metadata_props = (size_t)mm->n;
    return DISTILL_OK;
}

static int build(ex *e, Onnx__ModelProto *mp)
{
    const distill_model *m = e->m;
    Onnx__GraphProto *g = aalloc(&e->a, sizeof *g);
    Onnx__OperatorSetIdProto *os = aalloc(&e->a, sizeof *os);
    Onnx__OperatorSetIdProto **osl = aalloc(&e->a, sizeof *osl);
    Onnx__ValueInfoProto **gin = aalloc(&e->a, sizeof *gin);
    Onnx__ValueInfoProto **gout = aalloc(&e->a, sizeof *gout);
    e->cap_node = (size_t)m->n_nodes * 5 + 1;
    e->cap_init = (size_t)m->n_params + (size_t)m->n_nodes * 3 + 1;
    Onnx__NodeProto **nodes = aalloc(&e->a, e->cap_node * sizeof *nodes);
    Onnx__TensorProto **inits = aalloc(&e->a, e->cap_init * sizeof *inits);
    if (!g || !os || !osl || !gin || !gout || !nodes || !inits)
        return DISTILL_ENOMEM;
    onnx__graph_proto__init(g);
    onnx__operator_set_id_proto__init(os);
    os->domain = "";
    os->has_version = 1;
    os->version = EXPORT_OPSET;
    osl[0] = os;
    mp->has_ir_version = 1;
    mp->ir_version = EXPORT_IR;
    mp->opset_import = osl;
    mp->n_opset_import = 1;
    mp->producer_name = "libdistill";
    mp->producer_version = (char *)distill_version();
    int rc = add_metadata(e, mp);
    if (rc)
        return rc;
    mp->graph = g;
    g->name = "distill_model";
    g->node = nodes;
    g->initializer = inits;
    e->g = g;
    for (int i = 1; i < m->n_nodes; i++)
        if ((rc = export_node(e, i)))
            return rc;
    gin[0] = value_info(e, m->nodes[0].name, &m->nodes[0]);
    gout[0] = value_info(e, m->nodes[m->output].name, &m->nodes[m->output]);
    if (!gin[0] || !gout[0])
        return DISTILL_ENOMEM;
    g->input = gin;
    g->n_input = 1;
    g->output = gout;
    g->n_output = 1;
    return e->a.failed ? DISTILL_ENOMEM : DISTILL_OK;
}

/* Serialize m as ONNX into a buffer the caller frees with xfree. */
int onnx_export_buffer(const distill_model *m, void **data, size_t *size)
{
    ex e;
    memset(&e, 0, sizeof e);
    e.m = m;
    *data = NULL;
    *size = 0;
    Onnx__ModelProto mp;
    onnx__model_proto__init(&mp);
    int rc = DISTILL_OK;
    if (m->n_nodes < 2 || m->output == 0)
        rc = seterr(DISTILL_EUNSUPPORTED, "ONNX export: the model has no node besides its input");
    if (!rc)
        rc = build(&e, &mp);
    if (!rc) {
        size_t n = onnx__model_proto__get_packed_size(&mp);
        uint8_t *buf = xmalloc(n ? n : 1);
        if (!buf)
            rc = DISTILL_ENOMEM;
        else {
            onnx__model_proto__pack(&mp, buf);
            *data = buf;
            *size = n;
        }
    }
    for (size_t k = 0; k < e.a.n; k++)
        xfree(e.a.p[k]);
    xfree(e.a.p);
    return rc;
}

int distill_model_export_onnx(const distill_model *m, const char *path)
{
    if (!m)
        return seterr(DISTILL_EINVAL, "distill_model_export_onnx: model is NULL");
    if (!path || !*path)
        return seterr(DISTILL_EINVAL, "distill_model_export_onnx: no path");
    void *data;
    size_t size;
    int rc = onnx_export_buffer(m, &data, &size);
    if (rc)
        return rc;
    rc = write_file_atomic(path, data, size);
    xfree(data);
    return rc;
}

#endif /* DISTILL_HAVE_ONNX */

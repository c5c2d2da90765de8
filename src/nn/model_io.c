/*
 * model_io.c - model files: distill_model_save / _load / _load_buffer, the
 * buffer (de)serializers that checkpoints reuse, and distill_model_clone,
 * which goes through them.
 *
 * ------------------------------------------------------------------------
 * Model file format, versions 1 and 2
 * ------------------------------------------------------------------------
 * A model file is a libdistill container (src/util/container.h): all
 * integers little-endian, floats IEEE-754 binary32 little-endian, written
 * byte by byte so the file is the same on every machine.
 *
 *     "DSTLMODL"          8-byte magic
 *     u32 version         1 when the file holds only GRPH, PARM and STAT,
 *                         2 when it holds optional sections too (below; a
 *                         version 1 file holding one is refused).  A reader
 *                         refuses newer versions (DISTILL_EVERSION)
 *     u32 section count   GRPH, PARM, STAT, the optional sections, END
 *     sections            each: 4-byte tag, u32 flags (0), u64 payload
 *                         length, payload, u32 CRC-32 of the payload
 *
 * Section "GRPH", the graph, nodes in the order they were added:
 *
 *     u32 node count N          1 <= N <= 1,000,000
 *     u32 output node           index < N
 *     N times:
 *       u32 name length L       1 <= L <= 4096
 *       L bytes                 the name, UTF-8, no NUL
 *       u32 op                  distill_op (0 = input: node 0 and only node 0)
 *       u32 n_inputs            input 0, add 2, concat 2..64, others 1
 *       u32 input[n_inputs]     indexes of earlier nodes (< this node's index)
 *       i32 out_channels, kernel_h, kernel_w, stride_h, stride_w, pad_h,
 *           pad_w, dilation_h, dilation_w, groups, bias   (each >= 0)
 *       f32 eps, momentum, alpha
 *       i32 tanh_approx         (>= 0)
 *       u32 rank                1 or 3: the per-image output shape
 *       i64 dims[rank]          each >= 1
 *
 *   Attributes that do not apply to an op hold whatever the builder keeps
 *   for it (normally 0); the reader passes the meaningful ones to the public
 *   builder (distill_model_create, distill_model_add_*), then requires every
 *   stored attribute and shape to equal the rebuilt node's.
 *
 * Section "PARM", the trainable parameter block (weights, biases,
 * BatchNorm scale and shift, in the model's parameter order):
 *
 *     u64 count, then count f32       payload length is exactly 8 + 4 * count
 *
 * Section "STAT", the BatchNorm statistics block (running mean and var),
 * the same layout as PARM.
 *
 * Optional sections (version 2), after STAT, each present only when the
 * model has something to put in it (the table `optional_sections` below):
 *
 *   "META", the metadata (include/distill/model.h, "Metadata"):
 *
 *     u32 count N               1 <= N <= 256
 *     N times:
 *       u32 key length K        1 <= K <= 128
 *       K bytes                 the key, [A-Za-z0-9._-]
 *       u32 value length V      V <= 1 MiB
 *       V bytes                 the value, UTF-8, no NUL
 *
 *   Keys are unique; every entry must pass the checks of
 *   distill_model_set_metadata() against the rebuilt graph (src/nn/model_meta.c).
 *
 * Section "END ", empty, last.
 *
 * Reading checks, before anything is allocated: the container (magic,
 * version, every section header, length and CRC, no unknown or repeated
 * section, no trailing bytes), then the whole GRPH payload (every count
 * against the bytes left, every index, op, arity, rank and dim), that PARM
 * and STAT have exactly the length their counts say, and that the counts of
 * parameters and statistics implied by the graph equal the stored counts.
 * Only then is the model rebuilt through the builder; the optional sections
 * are read into the rebuilt model last.  Every failure is
 * DISTILL_EFORMAT (DISTILL_EVERSION for a newer file) with a message that
 * names the file and the section; a partly built model is freed.
 * ------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "distill/model.h"
#include "nn/graph.h"
#include "nn/model_meta.h"
#include "util/container.h"
#include "util/util.h"

#define MODEL_MAGIC "DSTLMODL"
#define MODEL_FORMAT_VERSION 1u     /* GRPH, PARM, STAT only */
#define MODEL_FORMAT_VERSION_MAX 2u /* with optional sections */

#define MAX_NODES 1000000u
#define MAX_NAME_LEN 4096u
#define N_INT_ATTRS 11
/* The smallest node record: a 1-byte name, no inputs, rank 1. */
#define MIN_NODE_BYTES (4 + 1 + 4 + 4 + 4 * N_INT_ATTRS + 4 * 3 + 4 + 4 + 8)
/* Largest model file distill_model_load reads. */
#define MAX_MODEL_FILE ((uint64_t)4 << 30)

/* ====================================================== optional sections */

/*
 * The sections a model file holds beyond GRPH, PARM and STAT.  Each is
 * written only when `present` says the model has something for it, and a
 * file holding any is format version 2.  `write` puts the fields of the
 * open section (errors are the writer's, sticky); `read` runs on the
 * rebuilt model after the weights, and fails with a message naming `what`
 * and the section.  A new section is one entry here.
 */
typedef struct model_section {
    const char *tag;
    int (*present)(const distill_model *m);
    int (*check)(const distill_model *m); /* before writing; DISTILL_EINVAL */
    void (*write)(cwriter *w, const distill_model *m);
    int (*read)(distill_model *m, csection *s);
} model_section;

static int meta_present(const distill_model *m)
{
    return m->meta.n > 0;
}

static int meta_check_save(const distill_model *m)
{
    return meta_check(m, "saving model: metadata");
}

static void meta_write(cwriter *w, const distill_model *m)
{
    cw_u32(w, (uint32_t)m->meta.n);
    for (int i = 0; i < m->meta.n; i++) {
        cw_str(w, m->meta.e[i].key);
        cw_str(w, m->meta.e[i].value);
    }
}

static int meta_read(distill_model *m, csection *s)
{
    uint32_t n = cs_u32(s);
    if (s->status)
        return s->status;
    if (n < 1 || n > META_MAX_ENTRIES)
        return cs_fail(s, DISTILL_EFORMAT, "%u entries (1..%d)", (unsigned)n, META_MAX_ENTRIES);
    char where[400];
    snprintf(where, sizeof where, "%s: section %s", s->what, s->tag);
    for (uint32_t i = 0; i < n; i++) {
        char key[META_MAX_KEY + 1];
        uint32_t kl = cs_u32(s);
        if (s->status)
            return s->status;
        if (kl < 1 || kl > META_MAX_KEY)
            return cs_fail(s, DISTILL_EFORMAT, "entry %u: key length %u (1..%d)", (unsigned)i,
                           (unsigned)kl, META_MAX_KEY);
        const unsigned char *kp = cs_bytes(s, kl);
        if (!kp)
            return s->status;
        memcpy(key, kp, kl);
        key[kl] = '\0';
        if (!meta_key_ok(key))
            return cs_fail(s, DISTILL_EFORMAT, "entry %u: key is not [A-Za-z0-9._-]",
                           (unsigned)i);
        uint32_t vl = cs_u32(s);
        if (s->status)
            return s->status;
        if (vl > META_MAX_VALUE)
            return cs_fail(s, DISTILL_EFORMAT, "%s: value of %u bytes (at most %u)", key,
                           (unsigned)vl, META_MAX_VALUE);
        const unsigned char *vp = cs_bytes(s, vl);
        if (!vp)
            return s->status;
        if (memchr(vp, '\0', vl))
            return cs_fail(s, DISTILL_EFORMAT, "%s: the value holds a NUL byte", key);
        if (distill_model_get_metadata(m, key))
            return cs_fail(s, DISTILL_EFORMAT, "key %s appears twice", key);
        char *value = xmalloc((size_t)vl + 1);
        if (!value)
            return DISTILL_ENOMEM;
        memcpy(value, vp, vl);
        value[vl] = '\0';
        int rc = meta_set(m, key, value, where);
        xfree(value);
        if (rc == DISTILL_ENOMEM)
            return rc;
        if (rc)
            return s->status = seterr(DISTILL_EFORMAT, "%s", util_last_error());
    }
    int rc = cs_done(s);
    if (rc == DISTILL_OK && (rc = meta_check(m, where)) != DISTILL_OK)
        rc = s->status = seterr(DISTILL_EFORMAT, "%s", util_last_error());
    return rc;
}

static const model_section optional_sections[] = {
    {"META", meta_present, meta_check_save, meta_write, meta_read},
};
#define N_OPTIONAL_SECTIONS (sizeof optional_sections / sizeof optional_sections[0])

/* ============================================================ serialize */

static void put_node_attrs(cwriter *w, const node *n)
{
    cw_i32(w, n->out_channels);
    cw_i32(w, n->kh);
    cw_i32(w, n->kw);
    cw_i32(w, n->sh);
    cw_i32(w, n->sw);
    cw_i32(w, n->ph);
    cw_i32(w, n->pw);
    cw_i32(w, n->dh);
    cw_i32(w, n->dw);
    cw_i32(w, n->groups);
    cw_i32(w, n->bias);
    cw_f32(w, n->eps);
    cw_f32(w, n->momentum);
    cw_f32(w, n->alpha);
    cw_i32(w, n->tanh_approx);
}

int model_serialize(const distill_model *m, void **data, size_t *size)
{
    if (!m || !data || !size)
        return seterr(DISTILL_EINVAL, "model_serialize: NULL argument");
    *data = NULL;
    *size = 0;
    if (m->n_nodes < 1 || (unsigned)m->n_nodes > MAX_NODES)
        return seterr(DISTILL_EUNSUPPORTED, "saving model: %d nodes (the format holds 1..%u)",
                      m->n_nodes, MAX_NODES);

    /* Size hint: the float blocks dominate. */
    size_t hint = 0, graph_hint = (size_t)m->n_nodes * 160;
    if (size_mul(m->n_pdata + m->n_sdata, 4, &hint) != 0 || size_add(hint, graph_hint, &hint) != 0)
        hint = 0;

    uint32_t version = MODEL_FORMAT_VERSION;
    for (size_t k = 0; k < N_OPTIONAL_SECTIONS; k++) {
        const model_section *os = &optional_sections[k];
        if (!os->present(m))
            continue;
        int rc = os->check(m);
        if (rc)
            return rc;
        version = MODEL_FORMAT_VERSION_MAX;
    }

    cwriter w;
    if (cw_begin(&w, MODEL_MAGIC, version, hint) != DISTILL_OK) {
        cw_free(&w);
        return w.status;
    }

    cw_section(&w, "GRPH");
    cw_u32(&w, (uint32_t)m->n_nodes);
    cw_u32(&w, (uint32_t)m->output);
    for (int i = 0; i < m->n_nodes; i++) {
        const node *n = &m->nodes[i];
        size_t len = strlen(n->name);
        if (len < 1 || len > MAX_NAME_LEN) {
            cw_free(&w);
            return seterr(DISTILL_EUNSUPPORTED,
                          "saving model: node %d: name of %zu bytes (the format holds 1..%u)", i,
                          len, MAX_NAME_LEN);
        }
        if (n->n_inputs < 0 || n->n_inputs > MAX_NODE_INPUTS) {
            cw_free(&w);
            return seterr(DISTILL_EUNSUPPORTED, "saving model: node '%s': %d inputs", n->name,
                          n->n_inputs);
        }
        cw_str(&w, n->name);
        cw_u32(&w, (uint32_t)n->op);
        cw_u32(&w, (uint32_t)n->n_inputs);
        for (int k = 0; k < n->n_inputs; k++)
            cw_u32(&w, (uint32_t)n->inputs[k]);
        put_node_attrs(&w, n);
        cw_u32(&w, (uint32_t)n->rank);
        for (int d = 0; d < n->rank && d < 3; d++)
            cw_i64(&w, n->dims[d]);
    }
    cw_end_section(&w);

    cw_section(&w, "PARM");
    cw_u64(&w, (uint64_t)m->n_pdata);
    cw_f32s(&w, m->pdata, m->n_pdata);
    cw_end_section(&w);

    cw_section(&w, "STAT");
    cw_u64(&w, (uint64_t)m->n_sdata);
    cw_f32s(&w, m->sdata, m->n_sdata);
    cw_end_section(&w);

    for (size_t k = 0; k < N_OPTIONAL_SECTIONS; k++) {
        const model_section *os = &optional_sections[k];
        if (!os->present(m))
            continue;
        cw_section(&w, os->tag);
        os->write(&w, m);
        cw_end_section(&w);
    }

    return cw_finish(&w, data, size);
}

/* ========================================================== deserialize */

/* One node record as stored; `name` points into the file (not terminated). */
typedef struct node_rec {
    const unsigned char *name;
    uint32_t name_len;
    uint32_t op;
    uint32_t n_inputs;
    uint32_t inputs[MAX_NODE_INPUTS];
    int32_t ia[N_INT_ATTRS]; /* out_channels kh kw sh sw ph pw dh dw groups bias */
    float eps, momentum, alpha;
    int32_t tanh_approx;
    uint32_t rank;
    int64_t dims[3];
} node_rec;

enum { A_OUT, A_KH, A_KW, A_SH, A_SW, A_PH, A_PW, A_DH, A_DW, A_GROUPS, A_BIAS };

static const char *const attr_names[N_INT_ATTRS] = {
    "out_channels", "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h",
    "pad_w", "dilation_h", "dilation_w", "groups", "bias",
};

static void rec_name(const node_rec *r, char *buf)
{
    memcpy(buf, r->name, r->name_len);
    buf[r->name_len] = '\0';
}

/* Read node record `index` and check everything that can be checked on its
 * own.  Returns the section status. */
static int read_node(csection *s, uint32_t index, node_rec *r)
{
    r->name_len = cs_u32(s);
    if (s->status)
        return s->status;
    if (r->name_len < 1 || r->name_len > MAX_NAME_LEN)
        return cs_fail(s, DISTILL_EFORMAT, "node %u: name length %u out of range 1..%u",
                       (unsigned)index, (unsigned)r->name_len, MAX_NAME_LEN);
    r->name = cs_bytes(s, r->name_len);
    if (!r->name)
        return s->status;
    if (memchr(r->name, '\0', r->name_len))
        return cs_fail(s, DISTILL_EFORMAT, "node %u: name contains a NUL byte", (unsigned)index);
    const int nl = (int)(r->name_len > 64 ? 64 : r->name_len);
    const char *nm = (const char *)r->name;

    r->op = cs_u32(s);
    r->n_inputs = cs_u32(s);
    if (s->status)
        return s->status;
    if (r->op > DISTILL_OP_SOFTMAX)
        return cs_fail(s, DISTILL_EFORMAT, "node %u '%.*s': unknown op %u", (unsigned)index, nl,
                       nm, (unsigned)r->op);
    if ((r->op == DISTILL_OP_INPUT) != (index == 0))
        return cs_fail(s, DISTILL_EFORMAT, "node %u '%.*s': %s", (unsigned)index, nl, nm,
                       index == 0 ? "the first node is not the input"
                                  : "an input node after the first");
    uint32_t lo = 1, hi = 1;
    if (r->op == DISTILL_OP_INPUT)
        lo = hi = 0;
    else if (r->op == DISTILL_OP_ADD)
        lo = hi = 2;
    else if (r->op == DISTILL_OP_CONCAT)
        lo = 2, hi = MAX_NODE_INPUTS;
    if (r->n_inputs < lo || r->n_inputs > hi)
        return cs_fail(s, DISTILL_EFORMAT, "node %u '%.*s': %s with %u inputs", (unsigned)index,
                       nl, nm, distill_op_name((int)r->op), (unsigned)r->n_inputs);
    for (uint32_t k = 0; k < r->n_inputs; k++) {
        r->inputs[k] = cs_u32(s);
        if (s->status)
            return s->status;
        if (r->inputs[k] >= index)
            return cs_fail(s, DISTILL_EFORMAT, "node %u '%.*s': input %u is node %u, not an earlier node",
                           (unsigned)index, nl, nm, (unsigned)k, (unsigned)r->inputs[k]);
    }
    for (int a = 0; a < N_INT_ATTRS; a++)
        r->ia[a] = cs_i32(s);
    r->eps = cs_f32(s);
    r->momentum = cs_f32(s);
    r->alpha = cs_f32(s);
    r->tanh_approx = cs_i32(s);
    r->rank = cs_u32(s);
    if (s->status)
        return s->status;
    for (int a = 0; a < N_INT_ATTRS; a++)
        if (r->ia[a] < 0)
            return cs_fail(s, DISTILL_EFORMAT, "node %u '%.*s': negative %s", (unsigned)index, nl,
                           nm, attr_names[a]);
    if (r->tanh_approx < 0)
        return cs_fail(s, DISTILL_EFORMAT, "node %u '%.*s': negative tanh_approx",
                       (unsigned)index, nl, nm);
    if (r->rank != 1 && r->rank != 3)
        return cs_fail(s, DISTILL_EFORMAT, "node %u '%.*s': rank %u (must be 1 or 3)",
                       (unsigned)index, nl, nm, (unsigned)r->rank);
    for (uint32_t d = 0; d < r->rank; d++) {
        r->dims[d] = cs_i64(s);
        if (s->status)
            return s->status;
        if (r->dims[d] < 1 || r->dims[d] > INT32_MAX)
            return cs_fail(s, DISTILL_EFORMAT, "node %u '%.*s': dim %u is %lld", (unsigned)index,
                           nl, nm, (unsigned)d, (long long)r->dims[d]);
    }
    return DISTILL_OK;
}

/* Saturating arithmetic for the parameter count cross-check. */
static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    if (a != 0 && b > UINT64_MAX / a)
        return UINT64_MAX;
    return a * b;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

/* Trainable scalars and statistics of a node as the builder makes them,
 * from its record and the stored shapes of earlier nodes. */
static void node_param_counts(const node_rec *r, const int64_t *first_dims, uint64_t *params,
                              uint64_t *stats)
{
    *params = *stats = 0;
    uint64_t in0 = r->n_inputs ? (uint64_t)first_dims[r->inputs[0]] : 0;
    uint64_t out = (uint64_t)r->ia[A_OUT];
    uint64_t bias = r->ia[A_BIAS] ? out : 0;
    switch (r->op) {
    case DISTILL_OP_CONV2D: {
        uint64_t g = r->ia[A_GROUPS] > 0 ? (uint64_t)r->ia[A_GROUPS] : 1;
        uint64_t w = sat_mul(sat_mul(out, in0 / g), sat_mul((uint64_t)r->ia[A_KH], (uint64_t)r->ia[A_KW]));
        *params = sat_add(w, bias);
        break;
    }
    case DISTILL_OP_LINEAR:
        *params = sat_add(sat_mul(out, in0), bias);
        break;
    case DISTILL_OP_BATCHNORM:
        *params = sat_mul(in0, 2);
        *stats = sat_mul(in0, 2);
        break;
    default:
        break;
    }
}

/* Count floats in a PARM/STAT payload and check its exact length. */
static int check_block(csection *s, uint64_t *count)
{
    *count = cs_u64(s);
    if (s->status)
        return s->status;
    if (*count > cs_remaining(s) / 4 || cs_remaining(s) - *count * 4 != 0)
        return cs_fail(s, DISTILL_EFORMAT, "count %llu does not match the %zu payload bytes",
                       (unsigned long long)*count, cs_remaining(s));
    return DISTILL_OK;
}

/* Call the builder for record r (node index i > 0) of model m. */
static int build_node(distill_model *m, const node_rec *r, const char *name)
{
    const char *in[MAX_NODE_INPUTS];
    for (uint32_t k = 0; k < r->n_inputs; k++)
        in[k] = m->nodes[r->inputs[k]].name;
    switch (r->op) {
    case DISTILL_OP_CONV2D: {
        distill_conv2d_options o;
        distill_conv2d_options_init(&o, DISTILL_CONV2D_OPTIONS_VERSION);
        o.kernel_h = r->ia[A_KH];
        o.kernel_w = r->ia[A_KW];
        o.stride_h = r->ia[A_SH];
        o.stride_w = r->ia[A_SW];
        o.pad_h = r->ia[A_PH];
        o.pad_w = r->ia[A_PW];
        o.dilation_h = r->ia[A_DH];
        o.dilation_w = r->ia[A_DW];
        o.groups = r->ia[A_GROUPS];
        o.bias = r->ia[A_BIAS];
        return distill_model_add_conv2d(m, name, in[0], r->ia[A_OUT], &o);
    }
    case DISTILL_OP_LINEAR:
        return distill_model_add_linear(m, name, in[0], r->ia[A_OUT], r->ia[A_BIAS]);
    case DISTILL_OP_BATCHNORM:
        return distill_model_add_batchnorm(m, name, in[0], r->eps, r->momentum);
    case DISTILL_OP_RELU:
        return distill_model_add_relu(m, name, in[0]);
    case DISTILL_OP_RELU6:
        return distill_model_add_relu6(m, name, in[0]);
    case DISTILL_OP_LEAKY_RELU:
        return distill_model_add_leaky_relu(m, name, in[0], r->alpha);
    case DISTILL_OP_GELU:
        return distill_model_add_gelu(m, name, in[0], r->tanh_approx);
    case DISTILL_OP_MAXPOOL:
    case DISTILL_OP_AVGPOOL: {
        /* The bottom and right padding are not stored: they are what the
         * stored output size needs (the reader then checks that size). */
        distill_pool2d_options o;
        distill_pool2d_options_init(&o, DISTILL_POOL2D_OPTIONS_VERSION);
        o.kernel_h = r->ia[A_KH], o.kernel_w = r->ia[A_KW];
        o.stride_h = r->ia[A_SH], o.stride_w = r->ia[A_SW];
        o.pad_top = r->ia[A_PH], o.pad_left = r->ia[A_PW];
        const node *x = &m->nodes[r->inputs[0]];
        int64_t pb = 0, pr = 0;
        if (r->rank == 3 && x->rank == 3) {
            pb = (r->dims[1] - 1) * (int64_t)o.stride_h + o.kernel_h - x->dims[1] - o.pad_top;
            pr = (r->dims[2] - 1) * (int64_t)o.stride_w + o.kernel_w - x->dims[2] - o.pad_left;
        }
        o.pad_bottom = pb < 0 ? 0 : pb > 4096 ? 4097 : (int)pb;
        o.pad_right = pr < 0 ? 0 : pr > 4096 ? 4097 : (int)pr;
        return distill_model_add_pool2d(m, name, in[0], (int)r->op, &o);
    }
    case DISTILL_OP_GLOBAL_AVGPOOL:
        return distill_model_add_global_avgpool(m, name, in[0]);
    case DISTILL_OP_ADD:
        return distill_model_add_add(m, name, in[0], in[1]);
    case DISTILL_OP_CONCAT:
        return distill_model_add_concat(m, name, (int)r->n_inputs, in);
    case DISTILL_OP_FLATTEN:
        return distill_model_add_flatten(m, name, in[0]);
    case DISTILL_OP_DROPOUT:
        return distill_model_add_dropout(m, name, in[0], r->alpha);
    case DISTILL_OP_SOFTMAX:
        return distill_model_add_softmax(m, name, in[0]);
    default:
        return seterr(DISTILL_EFORMAT, "unknown op %u", (unsigned)r->op);
    }
}

static int same_f32(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* The rebuilt node must be exactly the stored one. */
static const char *node_mismatch(const node *n, const node_rec *r)
{
    const int have[N_INT_ATTRS] = {n->out_channels, n->kh, n->kw, n->sh, n->sw, n->ph,
                                   n->pw, n->dh, n->dw, n->groups, n->bias};
    for (int a = 0; a < N_INT_ATTRS; a++)
        if (have[a] != r->ia[a])
            return attr_names[a];
    if (!same_f32(n->eps, r->eps))
        return "eps";
    if (!same_f32(n->momentum, r->momentum))
        return "momentum";
    if (!same_f32(n->alpha, r->alpha))
        return "alpha";
    if (n->tanh_approx != r->tanh_approx)
        return "tanh_approx";
    if ((uint32_t)n->n_inputs != r->n_inputs)
        return "inputs";
    for (uint32_t k = 0; k < r->n_inputs; k++)
        if ((uint32_t)n->inputs[k] != r->inputs[k])
            return "inputs";
    if ((uint32_t)n->rank != r->rank)
        return "output shape";
    for (uint32_t d = 0; d < r->rank; d++)
        if (n->dims[d] != r->dims[d])
            return "output shape";
    return NULL;
}

static int deserialize(distill_model **out, const void *data, size_t size, const char *what)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "loading model: out is NULL");
    *out = NULL;
    if (!data && size)
        return seterr(DISTILL_EINVAL, "loading model: data is NULL");

    creader rd;
    int rc = cr_open(&rd, data, size, MODEL_MAGIC, MODEL_FORMAT_VERSION_MAX, what);
    if (rc)
        return rc;
    static const char *const required[] = {"GRPH", "PARM", "STAT"};
    const char *known[3 + N_OPTIONAL_SECTIONS + 1];
    size_t n_known = 0;
    for (size_t i = 0; i < 3; i++)
        known[n_known++] = required[i];
    int n_optional = 0;
    for (size_t k = 0; k < N_OPTIONAL_SECTIONS; k++) {
        csection tmp;
        known[n_known++] = optional_sections[k].tag;
        n_optional += cr_find(&rd, optional_sections[k].tag, &tmp);
    }
    known[n_known] = NULL;
    if ((rc = cr_check_tags(&rd, known)) != DISTILL_OK)
        return rc;
    csection g, ps, ss;
    for (size_t i = 0; i < 3; i++) {
        csection tmp;
        if (!cr_find(&rd, required[i], &tmp))
            return seterr(DISTILL_EFORMAT, "%s: section %s is missing", what, required[i]);
    }
    if (rd.version == MODEL_FORMAT_VERSION && n_optional)
        return seterr(DISTILL_EFORMAT, "%s: format version 1 holds optional sections (they "
                                       "came with version 2)", what);
    cr_find(&rd, "GRPH", &g);
    cr_find(&rd, "PARM", &ps);
    cr_find(&rd, "STAT", &ss);

    /* The float blocks: exact lengths. */
    uint64_t n_param_file, n_stat_file;
    if ((rc = check_block(&ps, &n_param_file)) != DISTILL_OK)
        return rc;
    if ((rc = check_block(&ss, &n_stat_file)) != DISTILL_OK)
        return rc;

    /* Pass 1 over the graph: structure, bounds and the parameter counts it
     * implies, without allocating. */
    uint32_t n_nodes = cs_u32(&g);
    uint32_t output = cs_u32(&g);
    if (g.status)
        return g.status;
    if (n_nodes < 1 || n_nodes > MAX_NODES || n_nodes > cs_remaining(&g) / MIN_NODE_BYTES)
        return cs_fail(&g, DISTILL_EFORMAT, "node count %u out of range (1..%u, and %zu bytes left)",
                       (unsigned)n_nodes, MAX_NODES, cs_remaining(&g));
    if (output >= n_nodes)
        return cs_fail(&g, DISTILL_EFORMAT, "output node %u of %u", (unsigned)output,
                       (unsigned)n_nodes);
    const size_t nodes_at = g.pos;

    /* The first dim of every node's stored shape, for the count check; the
     * array is bounded by the (already bounded) node count. */
    int64_t *first_dims = xmalloc(sizeof *first_dims * n_nodes);
    node_rec *r = xmalloc(sizeof *r);
    if (!first_dims || !r) {
        xfree(first_dims);
        xfree(r);
        return DISTILL_ENOMEM;
    }
    uint64_t n_param_graph = 0, n_stat_graph = 0;
    for (uint32_t i = 0; i < n_nodes && rc == DISTILL_OK; i++) {
        rc = read_node(&g, i, r);
        if (rc == DISTILL_OK) {
            uint64_t p, st;
            node_param_counts(r, first_dims, &p, &st);
            n_param_graph = sat_add(n_param_graph, p);
            n_stat_graph = sat_add(n_stat_graph, st);
            first_dims[i] = r->dims[0];
        }
    }
    if (rc == DISTILL_OK)
        rc = cs_done(&g);
    if (rc == DISTILL_OK && n_param_graph != n_param_file)
        rc = cs_fail(&g, DISTILL_EFORMAT,
                     "the graph has %llu parameters, section PARM holds %llu",
                     (unsigned long long)n_param_graph, (unsigned long long)n_param_file);
    if (rc == DISTILL_OK && n_stat_graph != n_stat_file)
        rc = cs_fail(&g, DISTILL_EFORMAT,
                     "the graph has %llu statistics, section STAT holds %llu",
                     (unsigned long long)n_stat_graph, (unsigned long long)n_stat_file);
    xfree(first_dims);
    if (rc != DISTILL_OK) {
        xfree(r);
        return rc;
    }

    /* Pass 2: rebuild through the public builder. */
    char *name = xmalloc(MAX_NAME_LEN + 1);
    if (!name) {
        xfree(r);
        return DISTILL_ENOMEM;
    }
    distill_model *m = NULL;
    g.pos = nodes_at;
    for (uint32_t i = 0; i < n_nodes && rc == DISTILL_OK; i++) {
        read_node(&g, i, r); /* cannot fail: pass 1 read the same bytes */
        rec_name(r, name);
        if (i == 0)
            rc = distill_model_create(&m, name, (int)r->rank, r->dims);
        else
            rc = build_node(m, r, name);
        if (rc != DISTILL_OK) {
            if (rc != DISTILL_ENOMEM) /* out of memory is not the file's fault */
                rc = seterr(DISTILL_EFORMAT, "%s: section GRPH: node %u '%.64s': %s", what,
                            (unsigned)i, name, util_last_error());
            break;
        }
        const node *n = &m->nodes[m->n_nodes - 1];
        const char *bad = (m->n_nodes == (int)i + 1 && strcmp(n->name, name) == 0)
                              ? node_mismatch(n, r)
                              : "name or position";
        if (bad)
            rc = seterr(DISTILL_EFORMAT,
                        "%s: section GRPH: node %u '%.64s': stored %s differs from the rebuilt node's",
                        what, (unsigned)i, name, bad);
    }
    if (rc == DISTILL_OK && (int)output != m->n_nodes - 1) {
        rc = distill_model_set_output(m, m->nodes[output].name);
        if (rc != DISTILL_OK && rc != DISTILL_ENOMEM)
            rc = seterr(DISTILL_EFORMAT, "%s: section GRPH: output node %u: %s", what,
                        (unsigned)output, util_last_error());
    }
    if (rc == DISTILL_OK && m->output != (int)output)
        rc = seterr(DISTILL_EFORMAT, "%s: section GRPH: output node %u not accepted", what,
                    (unsigned)output);
    xfree(name);
    xfree(r);

    /* The builder must agree with the counts checked above. */
    if (rc == DISTILL_OK && ((uint64_t)m->n_pdata != n_param_file ||
                             (uint64_t)m->n_sdata != n_stat_file))
        rc = seterr(DISTILL_EFORMAT,
                    "%s: the rebuilt model has %zu parameters and %zu statistics, the file "
                    "%llu and %llu",
                    what, m->n_pdata, m->n_sdata, (unsigned long long)n_param_file,
                    (unsigned long long)n_stat_file);
    if (rc == DISTILL_OK)
        rc = cs_f32s(&ps, m->pdata, m->n_pdata);
    if (rc == DISTILL_OK)
        rc = cs_f32s(&ss, m->sdata, m->n_sdata);
    if (rc == DISTILL_OK)
        rc = cs_done(&ps);
    if (rc == DISTILL_OK)
        rc = cs_done(&ss);
    for (size_t k = 0; k < N_OPTIONAL_SECTIONS && rc == DISTILL_OK; k++) {
        csection os;
        if (cr_find(&rd, optional_sections[k].tag, &os))
            rc = optional_sections[k].read(m, &os);
    }
    if (rc != DISTILL_OK) {
        distill_model_free(m);
        return rc;
    }
    *out = m;
    return DISTILL_OK;
}

int model_deserialize(distill_model **out, const void *data, size_t size)
{
    return deserialize(out, data, size, "model buffer");
}

/* ================================================================ public */

/* A copy through the serializer above, plus what a file does not hold:
 * the dropout RNG and which nodes are kept. */
int distill_model_clone(distill_model **out, const distill_model *m)
{
    if (!out || !m)
        return seterr(DISTILL_EINVAL, "distill_model_clone: NULL argument");
    void *buf;
    size_t size;
    int rc = model_serialize(m, &buf, &size);
    if (rc)
        return rc;
    rc = model_deserialize(out, buf, size);
    xfree(buf);
    if (rc == DISTILL_OK) {
        (*out)->rng = m->rng;
        (*out)->keep_all = m->keep_all;
        for (int i = 0; i < m->n_nodes; i++)
            (*out)->nodes[i].keep = m->nodes[i].keep;
    }
    return rc;
}

int distill_model_save(const distill_model *m, const char *path)
{
    if (!m)
        return seterr(DISTILL_EINVAL, "distill_model_save: model is NULL");
    if (!path || !*path)
        return seterr(DISTILL_EINVAL, "distill_model_save: no path");
    void *data;
    size_t size;
    int rc = model_serialize(m, &data, &size);
    if (rc != DISTILL_OK)
        return rc;
    rc = write_file_atomic(path, data, size);
    xfree(data);
    return rc;
}

int distill_model_load(distill_model **out, const char *path)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_model_load: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return seterr(DISTILL_EINVAL, "distill_model_load: no path");
    void *data;
    size_t size;
    size_t cap = (uint64_t)SIZE_MAX < MAX_MODEL_FILE ? SIZE_MAX : (size_t)MAX_MODEL_FILE;
    int rc = read_file(path, cap, &data, &size);
    if (rc != DISTILL_OK)
        return rc;
    char what[320];
    snprintf(what, sizeof what, "model file '%.280s'", path);
    rc = deserialize(out, data, size, what);
    xfree(data);
    return rc;
}

int distill_model_load_buffer(distill_model **out, const void *data, size_t size)
{
    return deserialize(out, data, size, "model buffer");
}

/*
 * onnx_import_internal.h - what the ONNX importer's files share: the
 * values an ONNX graph is read into (activations, constants, pending Pads),
 * the import context, and the entry points of each layer.
 *
 *   onnx_read.c      the protobuf reading and validation layer: values,
 *                    tensors, attributes, names, graph structure, the input
 *   onnx_ops.c       the operator handlers, reached through one name table
 *                    that also lists the operator versions each accepts
 *   onnx_patterns.c  patterns spanning several ONNX nodes: Erf-GELU, Pad
 *                    folding, constant Add/Sub/Mul/Div folded into the
 *                    layer before, shape arithmetic for Reshape
 *   onnx_import.c    the graph walk and the public entry points
 */
#ifndef DISTILL_ONNX_IMPORT_INTERNAL_H
#define DISTILL_ONNX_IMPORT_INTERNAL_H

#ifdef DISTILL_HAVE_ONNX

#include <stddef.h>
#include <stdint.h>

#include "nn/graph.h"
#include "onnx/onnx_internal.h"
#include "util/util.h"

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

#define OPSET_MIN 9  /* the importer's own range */
#define OPSET_MAX 17
#define OPSET_READ_MAX 20 /* the newest opset onnx_ops.c's table knows */

static inline int present(const char *s)
{
    return s && *s;
}

/* onnx_read.c */
/* Errors: "ONNX node 'name' (Op): ..." while a node is imported, else
 * "ONNX graph: ...". */
int node_err(ctx *c, int status, const char *fmt, ...) DISTILL__PRINTF(3, 4);

/* Values: lookup, creation (capacity reserved up front) and the checks a
 * node makes on its inputs. */
val *find_val(ctx *c, const char *name);
val *new_val(ctx *c, const char *name);
void free_vals(ctx *c);
int get_val(ctx *c, const char *name, val **out);
int get_act(ctx *c, const char *name, val **out);
int get_const(ctx *c, const char *name, val **out);
const node *act_node(ctx *c, const val *v);
int act_rank(ctx *c, const val *v);
double cval(const val *v, int64_t k);
int set_act(ctx *c, const char *name, int node);

/* Tensors: dims and TensorProto decoding (raw little-endian or typed
 * fields). */
int check_dims(ctx *c, const char *what, size_t n_dims, const int64_t *dims, int64_t *numel);
uint32_t rd32(const uint8_t *p);
uint64_t rd64(const uint8_t *p);
int load_tensor(ctx *c, const Onnx__TensorProto *t, const char *name, val *v);

/* Attributes. */
const Onnx__AttributeProto *attr(const Onnx__NodeProto *nd, const char *name);
int64_t attr_i(const Onnx__NodeProto *nd, const char *name, int64_t def);
float attr_f(const Onnx__NodeProto *nd, const char *name, float def);
const int64_t *attr_ints(const Onnx__NodeProto *nd, const char *name, size_t *n);
int attr_s_is(const Onnx__NodeProto *nd, const char *name, const char *def, const char *want);
void attr_s(const Onnx__NodeProto *nd, const char *name, const char *def, char *buf, size_t size);

/* Model node names, parameters, and the library's errors put under the
 * node's name. */
void pick_name(ctx *c, const Onnx__NodeProto *nd, size_t idx, char *buf, size_t size);
int out0(const Onnx__NodeProto *nd, const char **o);
int set_param(ctx *c, const char *node, const char *suffix, const float *src, int64_t numel);
int lib_err(ctx *c, int rc);

/* Graph structure: how many nodes (and graph outputs) read a value, which
 * node writes it. */
int uses_of(const Onnx__GraphProto *g, const char *name, size_t *first_user);
int producer_of(const Onnx__GraphProto *g, const char *name, size_t *idx);
int is_op(const Onnx__NodeProto *nd, const char *op);

/* Attribute groups several operators read: pads/auto_pad, 2-D ints, int
 * lists and scalars given as attributes or (newer opsets) inputs. */
int get_pads(ctx *c, const Onnx__NodeProto *nd, int64_t H, int64_t W, int kh, int kw, int sh, int sw, int dh, int dw, int extra[4], int *ph, int *pw, int *all);
int two_ints(ctx *c, const Onnx__NodeProto *nd, const char *name, int def, int *a, int *b);
int int_list(ctx *c, const Onnx__NodeProto *nd, const char *aname, size_t k, int64_t *out, size_t max, size_t *n);
int opt_scalar(ctx *c, const Onnx__NodeProto *nd, const char *aname, size_t k, double def, double *out);

/* The graph input: a float32 (N, C, H, W) or (N, F) with fixed dims. */
int read_input(ctx *c, const Onnx__ValueInfoProto *vi, int64_t *dims, int *rank);

/* onnx_patterns.c */
/* Erf-GELU: the pre-pass and the graph queries it uses. */
int scalar_const(const Onnx__GraphProto *g, const char *name, double *out);
int binary_with(const Onnx__GraphProto *g, const Onnx__NodeProto *nd, const char *name, double want, const char **other);
int single_user(const Onnx__GraphProto *g, const char *name, size_t *user);
void find_gelu(ctx *c);

/* A constant Add/Sub/Mul/Div on activation x: folded into the conv or
 * linear layer before, else a per-channel affine node. */
int const_arith(ctx *c, const Onnx__NodeProto *nd, const char *name, const val *x, const val *k,
                int swapped, char kind);

/* Pad: a pending zero pad, folded into the Conv or AveragePool reading it. */
int op_pad(ctx *c, const Onnx__NodeProto *nd);

/* Shape -> Gather -> Unsqueeze -> Concat -> Reshape: shapes as int
 * constants (the batch as BATCH_SYM). */
int op_shape(ctx *c, const Onnx__NodeProto *nd);
int op_gather(ctx *c, const Onnx__NodeProto *nd);
int shape_concat(ctx *c, const Onnx__NodeProto *nd);
int op_const_copy(ctx *c, const Onnx__NodeProto *nd, const val *x, int new_rank);

/* onnx_ops.c */
/* Refuse an operator whose definition at the model's opset is not one the
 * importer reads; unknown operators pass (op_node names them). */
int check_op_version(ctx *c, const Onnx__NodeProto *nd);
/* Import ONNX node nd (index idx in the graph) into c->m. */
int op_node(ctx *c, const Onnx__NodeProto *nd, size_t idx);
/* A GELU node on xname, named name, whose ONNX output is out. */
int gelu_from(ctx *c, const char *xname, const char *name, int tanh_form, const char *out);

#endif /* DISTILL_HAVE_ONNX */
#endif /* DISTILL_ONNX_IMPORT_INTERNAL_H */

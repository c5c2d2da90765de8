/*
 * graph.h - the model's graph as the rest of the library sees it.
 *
 * A model is an array of nodes in the order they were added (which is a
 * topological order: inputs must exist before use), a table of parameter
 * tensors, and three contiguous float blocks: trainable parameters, their
 * gradients, and BatchNorm statistics.  The execution engine
 * (src/backend/) keeps its state -- the plans of oneDNN primitives and the
 * activation arena per batch size, and the last forward -- behind the
 * opaque `engine` pointer; any change to the graph releases it (see
 * src/backend/engine.h for why through a hook).
 */
#ifndef DISTILL_GRAPH_H
#define DISTILL_GRAPH_H

#include "distill/model.h"
#include "nn/model_meta.h"
#include "util/util.h"

#define MAX_NODE_INPUTS 64

typedef struct node {
    char *name;
    int op;                 /* distill_op */
    int n_inputs;
    int *inputs;            /* indexes of earlier nodes */

    /* attributes; which are meaningful depends on op */
    int out_channels;       /* conv2d: output channels; linear: out features */
    int kh, kw, sh, sw, ph, pw, dh, dw; /* conv / pools (pools: ph, pw are the top and left
                                           padding; bottom and right follow from dims) */
    int groups;
    int bias;               /* conv2d, linear */
    float eps, momentum;    /* batchnorm */
    float alpha;            /* leaky relu slope; dropout p */
    int tanh_approx;        /* gelu */

    /* per-image output shape */
    int rank;               /* 1 or 3 */
    int64_t dims[3];

    /* parameter tensors of this node: entries [param_first, param_first+n_params) */
    int param_first, n_params;

    int64_t macs;           /* multiply-adds per image */
    int keep;               /* output stays readable after forward (a tap) */
} node;

typedef struct param {
    char *name;
    int node;
    int kind;               /* distill_param_kind */
    int rank;
    int64_t dims[4];
    size_t numel;
    size_t offset;          /* into params/grads when trainable, else into stats */
} param;

struct engine_state;        /* the engine's, opaque here */

struct distill_model {
    node *nodes;
    int n_nodes, cap_nodes;
    int output;             /* index of the output node */

    param *params;
    int n_params, cap_params;

    float *pdata;           /* trainable parameters, n_pdata floats */
    float *gdata;           /* gradients, same length */
    size_t n_pdata;
    float *sdata;           /* BatchNorm statistics */
    size_t n_sdata;

    rng rng;                /* dropout masks */
    int keep_all;           /* every node kept (debugging, tests) */
    int frozen;             /* weights never change (a teacher's private copy): inference
                               plans prepare folded/reordered weights once */
    uint64_t version;       /* bumped on every graph or weight-layout change */

    model_meta meta;        /* what the model records about itself (model_meta.h) */

    /* the engine's state, NULL until the first forward; the engine sets
     * engine_release with it, and the model calls it to drop the state */
    struct engine_state *engine;
    void (*engine_release)(struct engine_state *engine);
};

/* graph.c */
int model_find(const distill_model *m, const char *name);        /* index or -1 */
/* Append a node named `name` with the given inputs; checks the name and the
 * inputs, sets shape from `rank/dims`, and returns its index via *idx. */
int model_add_node(distill_model *m, const char *name, int op, int n_inputs,
                   const int *inputs, int *idx);
/* Add a parameter tensor to the last node; grows the blocks. */
int model_add_param(distill_model *m, int node_idx, const char *suffix, int kind, int rank,
                    const int64_t *dims);
static inline float *param_data(distill_model *m, const param *p)
{
    return (p->kind >= DISTILL_PARAM_RUNNING_MEAN ? m->sdata : m->pdata) + p->offset;
}
static inline float *param_grad(distill_model *m, const param *p)
{
    return p->kind >= DISTILL_PARAM_RUNNING_MEAN ? NULL : m->gdata + p->offset;
}
/* Default-initialize the parameters of node i from r (as distill_model_init_weights). */
void model_init_node(distill_model *m, int i, int scheme, rng *r);
/* Release the engine's state (cached plans) and bump the version (after
 * any graph change). */
void model_invalidate(distill_model *m);

/* A pool's bottom and right padding: what its output size needs beyond the
 * top and left padding (never negative). */
void pool_end_pads(const distill_model *m, const node *n, int *pb, int *pr);

/* model_io.c: (de)serialize; buffer variants used by checkpoints too. */
int model_serialize(const distill_model *m, void **data, size_t *size);
int model_deserialize(distill_model **out, const void *data, size_t size);

#endif /* DISTILL_GRAPH_H */

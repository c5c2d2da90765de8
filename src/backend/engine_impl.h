/*
 * engine_impl.h - what the engine's files share: the plan, its buffers and
 * steps, the helpers that create them, and the op table.  Only
 * src/backend/ includes it; engine.h is the contract with the rest of the
 * library.
 *
 * A plan is built once per (batch size, mode) and cached in the model's
 * engine_state:
 *
 *   - buffers (plan.c): every activation, gradient, workspace and converted
 *     weight is a "buffer" with a oneDNN memory descriptor.  Activations
 *     keep the layout the primitives choose (format_tag_any, usually
 *     nChw16c); reorders happen only where a consumer needs another layout,
 *     at the input, and where values cross the API.
 *   - steps (plan.c, op_*.c): the forward pass, then (training) the
 *     backward pass, as one list of (primitive, arguments) or small library
 *     kernels (run.c).  Nothing is created or allocated when a plan runs.
 *   - one arena (arena.c): each buffer's lifetime is the span of steps that
 *     use it; buffers whose lifetimes do not overlap share memory.  Outputs
 *     of kept nodes live for the whole plan, so taps can be read after
 *     forward.
 *   - one scratchpad, shared by all primitives (user scratchpad mode).
 *   - build.c turns the graph into steps in passes (what is needed,
 *     fusions, forward, backward, lifetimes); each op's steps come from its
 *     op_*.c file through op_lookup().
 *   - inference of a large batch whose only readable node is the output
 *     runs in micro-batches (run.c): the arena shrinks to a few images'
 *     activations, which also stay in the caches between layers.
 *
 * Backward accumulates parameter gradients into the model's gradient block
 * (reorder with a sum post-op); where a node's output feeds several
 * consumers, their gradients are summed into one buffer.
 */
#ifndef DISTILL_ENGINE_IMPL_H
#define DISTILL_ENGINE_IMPL_H

#include <dnnl.h>
#include <dnnl_debug.h>

#include "backend/dnnl_compat.h"
#include "backend/engine.h"
#include "nn/graph.h"
#include "tensor_internal.h"

/* ------------------------------------------------------------ plan types */

enum { BUF_ARENA = 0, BUF_EXTERNAL = 1 };

typedef struct buf {
    dnnl_memory_desc_t md;
    size_t size;
    int kind;
    int alias;        /* -1, or the buffer whose memory this one views */
    void *ext;        /* BUF_EXTERNAL: fixed pointer (NULL: set at run time) */
    int first, last;  /* step indexes of first and last use */
    size_t offset;    /* in the arena */
    dnnl_memory_t mem;
} buf;

#define MAX_ARGS 12

enum {
    K_PRIM = 0,
    K_BN_STATS,     /* update running stats: b0 mean, b1 var; node */
    K_ADD_INTO,     /* grad[dst ext] += b0 (plain, numel i0) */
    K_DROPOUT_FWD,  /* b0 in, b1 mask, b2 out; f0 = p */
    K_DROPOUT_BWD,  /* b0 diff_dst, b1 mask, b2 target; i0 = accumulate */
    K_ZERO,         /* b0 = 0 */
    K_FOLD,         /* fold BatchNorm (node i0) into conv (node): b0 weights, b1 bias */
    K_BN_FWD,       /* BatchNorm forward, training (bnorm.c); args; i0 = fused ReLU */
    K_BN_BWD        /* BatchNorm backward (bnorm.c); args; i0 = fused ReLU */
};

typedef struct step {
    int kind;
    int node;
    dnnl_primitive_t prim;
    dnnl_primitive_desc_t pd;
    int nargs;
    int argk[MAX_ARGS];
    int argb[MAX_ARGS];
    dnnl_exec_arg_t args[MAX_ARGS + 1];
    int b[4];
    int64_t i0;
    float f0;
    int prep;       /* prepares weights: skipped once done for a frozen model */
    int serial;     /* inference: too little work to share; runs on one thread */
} step;

typedef struct plan {
    struct plan *next;
    int64_t N;
    int training;
    uint64_t version;
    int n_nodes;      /* of the model when the plan was built */

    buf *bufs;
    int nbufs, capbufs;
    step *steps;
    int nsteps, capsteps;
    int fwd_end;      /* steps [0, fwd_end) are the forward pass */

    int *out;         /* per node: buffer of its output */
    int *diff;        /* per node: buffer of the gradient of its output, or -1 */
    int *inj;         /* per node: external buffer for an injected gradient, or -1 */
    int *inj_step;    /* per node: the step that copies it in, or -1 */
    int *fwd_pd;      /* per node: step holding the forward pd (hint), or -1 */
    int input_ext;    /* external buffer of the input batch */
    int input_diff;   /* buffer of the gradient w.r.t. the input, or -1 */

    /* reading outputs: per node, lazily made reorder to a plain external buffer */
    dnnl_primitive_t *read_prim;
    dnnl_memory_t *read_mem;

    void *arena;
    size_t arena_size;
    void *scratch;
    size_t scratch_size;
    dnnl_memory_t scratch_mem;
    double *red;      /* reductions of the library's BatchNorm kernels */
    size_t red_size;  /* doubles */
    dnnl_stream_t stream;

    int out_serial;   /* the output node's steps are serial (so is reading it) */

    uint64_t dropout_seed;
    int have_forward;  /* a forward ran on this plan since it was built */
    int have_backward;
    int prepped;       /* prep steps have run (frozen models run them once) */
    uint64_t prep_call; /* the forward call (engine_state.calls) that last ran them */
    int skip_prep;     /* set by the caller of run_steps: they already ran in this call */
} plan;

/* Return DISTILL_EBACKEND, naming `what`, if a oneDNN call fails. */
#define DN(call, what)                                                                     \
    do {                                                                                   \
        dnnl_status_t st_ = (call);                                                        \
        if (st_ != dnnl_success)                                                           \
            return seterr(DISTILL_EBACKEND, "%s: oneDNN %s failed: %s", what, #call,        \
                          dnnl_status2str(st_));                                           \
    } while (0)

/* ------------------------------------------------------------ plan.c */

/* The process-wide CPU engine (created once). */
int engine_get(dnnl_engine_t *e);

/* A new buffer with descriptor md (copied): in the arena, or external at a
 * fixed pointer (ext; NULL: set at run time). */
int buf_new(plan *p, const dnnl_memory_desc_t *md, int kind, void *ext, int *id);
/* A new buffer viewing buffer `of`'s memory through descriptor md. */
int buf_view(plan *p, int of, const dnnl_memory_desc_t *md, int *id);
/* The buffer that owns id's memory (id itself unless it is a view). */
int buf_root(const plan *p, int id);

int step_new(plan *p, int kind, int node, step **out);
/* Add argument (kind, buffer b) to primitive step s; b is used by s. */
void step_arg(plan *p, step *s, int kind, int b);
/* Set buffer slot `slot` of kernel step s to b; b is used by s. */
void step_buf(plan *p, step *s, int slot, int b);
/* The buffer of s's argument `kind`, or -1. */
int step_argb(const step *s, int kind);
/* The memory descriptor primitive step s's pd has for `what`. */
const dnnl_memory_desc_t *step_md(const step *s, dnnl_query_t what, int idx);
const dnnl_memory_desc_t *pd_md(const_dnnl_primitive_desc_t pd, dnnl_query_t what, int idx);

/* Node i's output stays readable after forward (kept, or the output). */
int node_kept(const distill_model *m, int i);
int node_wants_grad(const distill_model *m, int x);
/* Node i's name for messages ("(plan)" for -1). */
const char *node_label(const distill_model *m, int i);

int pd_make(plan *p, const distill_model *m, int node, const op_desc *od,
            const_dnnl_primitive_desc_t hint, const_dnnl_post_ops_t post,
            dnnl_primitive_desc_t *out);
int prim_add(plan *p, const distill_model *m, int node, dnnl_primitive_desc_t pd, step **out);
int prim_step(plan *p, const distill_model *m, int node, const op_desc *od,
              const_dnnl_primitive_desc_t hint, const_dnnl_post_ops_t post, step **out);
int reorder_step(plan *p, const distill_model *m, int node, int src, int dst, int accumulate);
int binary_add_step(plan *p, const distill_model *m, int node, int a, int b, int dst);

void md_plain(const node *n, int64_t N, dnnl_memory_desc_t *md);
void md_any(const node *n, int64_t N, dnnl_memory_desc_t *md);
int param_buf(plan *p, distill_model *m, int pi, int grad, int *id);
int grouped_view(plan *p, int b, const dnnl_memory_desc_t *w, int *out);
int as_layout(plan *p, const distill_model *m, int x, const dnnl_memory_desc_t *want, int *id);
int weights_for(plan *p, distill_model *m, int node, int pi, const dnnl_memory_desc_t *want,
                int *id);
int in_layout(plan *p, const distill_model *m, int node, int buf, const dnnl_memory_desc_t *want,
              int *out);

/* Where a gradient contribution to node x's output goes.  The first
 * contribution writes x's gradient buffer directly; later ones are written
 * to a temporary and added (binary add in place). */
typedef struct contrib {
    int target;  /* buffer to write */
    int add;     /* nonzero: after writing, add target into p->diff[x] */
} contrib;

int contrib_begin(plan *p, int x, contrib *c);
int contrib_end(plan *p, const distill_model *m, int node, int x, const contrib *c);
int contrib_copy(plan *p, const distill_model *m, int node, int x, int src);
int grad_accumulate(plan *p, distill_model *m, int node, int pi, int tmp);

/* Free a plan and everything it created (accepts NULL). */
void plan_free(plan *p);

/* ------------------------------------------------------------ arena.c */

/* Buffer id is used by step `at`: widen its (root's) lifetime. */
void buf_use(plan *p, int id, int at);
/* Kept outputs, injected gradients, the input gradient and converted
 * weights live for the whole plan. */
void arena_extend_lifetimes(plan *p, const distill_model *m, const char *needed);
/* Place the buffers in one arena, allocate it, the scratchpad and the
 * reduction space, and create every oneDNN memory object and the stream. */
int arena_bind(plan *p, const distill_model *m);
/* Where buffer id's data is (once bound). */
void *buf_ptr(const plan *p, int id);

/* ------------------------------------------------------------ op_*.c */

/* One entry per op family.  forward appends node i's forward steps and sets
 * p->out[i] (and p->fwd_pd[i] when its backward needs the forward step);
 * backward appends the steps that take p->diff[i] to the parameter
 * gradients and to the gradients of i's inputs (NULL: none). */
typedef struct op_impl {
    int (*forward)(plan *p, distill_model *m, int i, int training);
    int (*backward)(plan *p, distill_model *m, int i);
    int has_params; /* backward runs even when no input wants a gradient */
} op_impl;

extern const op_impl op_conv_impl, op_linear_impl, op_bnorm_impl, op_eltwise_impl, op_pool_impl,
    op_add_impl, op_concat_impl, op_flatten_impl, op_dropout_impl, op_softmax_impl;

/* The implementation of op, or NULL (the input, an unknown op). */
const op_impl *op_lookup(int op);

/* Inference fusion: a conv whose output only feeds a BatchNorm (folded into
 * the conv's weights and bias), then optionally a ReLU/ReLU6, or an add with
 * another node then optionally a ReLU/ReLU6, all run as one convolution with
 * post-ops.  Nodes inside a chain must not be kept. */
typedef struct chain {
    int conv, bn, act1, add, other, act2, end;
} chain;

/* op_conv.c: the chain as one convolution with post-ops; *fused = 0 (and
 * nothing emitted) when oneDNN cannot fuse it. */
int conv_forward_fused(plan *p, distill_model *m, const chain *ch, int *fused);
/* op_bnorm.c: BatchNorm forward; fuse_relu >= 0 (training): the ReLU node
 * fuse_relu is applied by the BatchNorm itself. */
int bnorm_forward(plan *p, distill_model *m, int i, int training, int fuse_relu);

/* Inference: a node (or fused chain) whose work per call, in multiply-adds
 * (elementwise ops: 8 per output value), is below this runs single-threaded:
 * its primitives are created and run with one OpenMP thread, with no
 * fork/join.  DISTILL_PARALLEL_MIN_MACS in the environment overrides it (0:
 * every primitive uses all threads). */
#define PARALLEL_MIN_MACS_DEFAULT 2000000
int64_t parallel_min_macs(void);

/* ------------------------------------------------------------ build.c */

/* What the engine keeps per model (distill_model.engine). */
struct engine_state {
    plan *plans;      /* cached plans, most recently used first */
    plan *last_plan;  /* plan of the last forward (for read_node/backward), or NULL */
    int last_chunked; /* the last forward ran in micro-batches: nothing to read */
    uint64_t calls;   /* forward calls so far */
};

/* m's engine state, created (and its release hook installed) on first
 * use. */
int engine_state_get(distill_model *m, engine_state **out);

/* The plan for (N, training) from the model's cache, built if needed. */
int get_plan(distill_model *m, int64_t N, int training, plan **out);

#endif /* DISTILL_ENGINE_IMPL_H */

/*
 * build.c - building a plan: the graph of a model turned, for one batch
 * size and mode, into a list of steps, in passes:
 *
 *   1. needed     which nodes feed the output or a kept node;
 *   2. fusions    inference: conv -> BatchNorm -> [add] -> [ReLU] chains run
 *                 as one convolution; training: a BatchNorm applies the ReLU
 *                 that is its only consumer;
 *   3. forward    each needed node's forward steps, through the op table;
 *   4. backward   (training) from the last node to the first, each node's
 *                 backward steps, once its output's gradient is complete;
 *   5. lifetimes  and the arena (arena.c).
 *
 * Also the engine's per-model state: the cache of plans (get_plan).
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/engine_impl.h"

/* ------------------------------------------------------------ the op table */

const op_impl *op_lookup(int op)
{
    static const op_impl *const table[] = {
        [DISTILL_OP_CONV2D] = &op_conv_impl,         [DISTILL_OP_LINEAR] = &op_linear_impl,
        [DISTILL_OP_BATCHNORM] = &op_bnorm_impl,     [DISTILL_OP_RELU] = &op_eltwise_impl,
        [DISTILL_OP_RELU6] = &op_eltwise_impl,       [DISTILL_OP_LEAKY_RELU] = &op_eltwise_impl,
        [DISTILL_OP_GELU] = &op_eltwise_impl,        [DISTILL_OP_MAXPOOL] = &op_pool_impl,
        [DISTILL_OP_AVGPOOL] = &op_pool_impl,        [DISTILL_OP_GLOBAL_AVGPOOL] = &op_pool_impl,
        [DISTILL_OP_ADD] = &op_add_impl,             [DISTILL_OP_CONCAT] = &op_concat_impl,
        [DISTILL_OP_FLATTEN] = &op_flatten_impl,     [DISTILL_OP_DROPOUT] = &op_dropout_impl,
        [DISTILL_OP_SOFTMAX] = &op_softmax_impl,
    };
    if (op < 0 || op >= (int)(sizeof table / sizeof table[0]))
        return NULL;
    return table[op];
}

/* ------------------------------------------------------------ scratch of one build */

typedef struct build_ctx {
    int training;
    char *needed;   /* per node: feeds the output or a kept node */
    int *claim;     /* per node: -1, or the conv of the fused chain that absorbed it */
    chain *chains;  /* per conv node that starts a chain: the chain */
    int *bn_relu;   /* per BatchNorm: the ReLU it applies itself, or -1 */
    int *relu_bn;   /* per ReLU: the BatchNorm that applies it, or -1 */
} build_ctx;

static void ctx_free(build_ctx *c)
{
    xfree(c->needed);
    xfree(c->claim);
    xfree(c->chains);
    xfree(c->bn_relu);
    xfree(c->relu_bn);
}

static int ctx_init(build_ctx *c, int nn, int training)
{
    memset(c, 0, sizeof *c);
    c->training = training;
    c->needed = xcalloc((size_t)nn, 1);
    c->claim = xmalloc((size_t)nn * sizeof(int));
    c->chains = xmalloc((size_t)nn * sizeof(chain));
    c->bn_relu = xmalloc((size_t)nn * sizeof(int));
    c->relu_bn = xmalloc((size_t)nn * sizeof(int));
    if (!c->needed || !c->claim || !c->chains || !c->bn_relu || !c->relu_bn) {
        ctx_free(c);
        return DISTILL_ENOMEM;
    }
    for (int i = 0; i < nn; i++)
        c->claim[i] = c->bn_relu[i] = c->relu_bn[i] = -1;
    return DISTILL_OK;
}

/* An empty plan for (N, training) with its per-node tables. */
static int plan_new(const distill_model *m, int64_t N, int training, plan **out)
{
    plan *p = xcalloc(1, sizeof *p);
    if (!p)
        return DISTILL_ENOMEM;
    p->N = N;
    p->training = training;
    p->version = m->version;
    p->n_nodes = m->n_nodes;
    p->input_diff = -1;
    int nn = m->n_nodes;
    p->out = xmalloc((size_t)nn * sizeof(int));
    p->diff = xmalloc((size_t)nn * sizeof(int));
    p->inj = xmalloc((size_t)nn * sizeof(int));
    p->inj_step = xmalloc((size_t)nn * sizeof(int));
    p->fwd_pd = xmalloc((size_t)nn * sizeof(int));
    if (!p->out || !p->diff || !p->inj || !p->inj_step || !p->fwd_pd) {
        plan_free(p);
        return DISTILL_ENOMEM;
    }
    for (int i = 0; i < nn; i++)
        p->out[i] = p->diff[i] = p->inj[i] = p->inj_step[i] = p->fwd_pd[i] = -1;
    *out = p;
    return DISTILL_OK;
}

/* ------------------------------------------------------------ 1. needed */

static void pass_needed(const distill_model *m, build_ctx *c)
{
    for (int i = m->n_nodes - 1; i >= 0; i--) {
        if (node_kept(m, i))
            c->needed[i] = 1;
        if (c->needed[i])
            for (int k = 0; k < m->nodes[i].n_inputs; k++)
                c->needed[m->nodes[i].inputs[k]] = 1;
    }
}

/* ------------------------------------------------------------ 2. fusions */

static int n_consumers(const distill_model *m, int i, int *only)
{
    int c = 0;
    for (int j = i + 1; j < m->n_nodes; j++)
        for (int k = 0; k < m->nodes[j].n_inputs; k++)
            if (m->nodes[j].inputs[k] == i) {
                c++;
                *only = j;
            }
    return c;
}

static int is_act(int op)
{
    return op == DISTILL_OP_RELU || op == DISTILL_OP_RELU6;
}

/* Find the fusable chain starting at conv node i (inference plans only). */
static int find_chain(const distill_model *m, int i, int (*keptf)(const distill_model *, int),
                      chain *ch)
{
    ch->conv = i, ch->bn = ch->act1 = ch->add = ch->other = ch->act2 = -1;
    ch->end = i;
    int nx = -1;
    if (keptf(m, i) || n_consumers(m, i, &nx) != 1 || m->nodes[nx].op != DISTILL_OP_BATCHNORM)
        return 0;
    ch->bn = ch->end = nx;
    if (keptf(m, ch->end) || n_consumers(m, ch->end, &nx) != 1)
        return 1;
    if (is_act(m->nodes[nx].op)) {
        ch->act1 = ch->end = nx;
        return 1;
    }
    if (m->nodes[nx].op != DISTILL_OP_ADD)
        return 1;
    const node *a = &m->nodes[nx];
    int other = a->inputs[0] == ch->end ? a->inputs[1] : a->inputs[0];
    if (other == ch->end)
        return 1;
    ch->add = ch->end = nx;
    ch->other = other;
    if (keptf(m, ch->end) || n_consumers(m, ch->end, &nx) != 1 || !is_act(m->nodes[nx].op))
        return 1;
    ch->act2 = ch->end = nx;
    return 1;
}

/* Inference: claim conv chains to fuse (in node order; a node claimed by an
 * earlier chain ends a later one). */
static void pass_fuse_chains(const distill_model *m, build_ctx *c)
{
    for (int i = 1; i < m->n_nodes; i++) {
        chain ch;
        if (!c->needed[i] || m->nodes[i].op != DISTILL_OP_CONV2D ||
            !find_chain(m, i, node_kept, &ch))
            continue;
        if (ch.add >= 0 && c->claim[ch.add] >= 0) {
            ch.add = ch.act2 = ch.other = -1;
            ch.end = ch.bn;
        }
        c->chains[i] = ch;
        int members[5] = {ch.conv, ch.bn, ch.act1, ch.add, ch.act2};
        for (int k = 0; k < 5; k++)
            if (members[k] >= 0)
                c->claim[members[k]] = i;
    }
}

/* Training: a BatchNorm whose only consumer is a ReLU applies it itself. */
static void pass_fuse_bn_relu(const distill_model *m, build_ctx *c)
{
    for (int i = 1; i < m->n_nodes; i++) {
        int r = -1;
        if (c->needed[i] && m->nodes[i].op == DISTILL_OP_BATCHNORM && !node_kept(m, i) &&
            n_consumers(m, i, &r) == 1 && m->nodes[r].op == DISTILL_OP_RELU) {
            c->bn_relu[i] = r;
            c->relu_bn[r] = i;
        }
    }
}

/* ------------------------------------------------------------ 3. forward */

static int forward_node(plan *p, distill_model *m, int i, int training)
{
    const op_impl *op = op_lookup(m->nodes[i].op);
    if (!op)
        return seterr(DISTILL_EUNSUPPORTED, "node '%s': op %d", m->nodes[i].name,
                      m->nodes[i].op);
    return op->forward(p, m, i, training);
}

/* A claimed chain, emitted at its last node: fused if oneDNN can, else its
 * nodes one by one. */
static int forward_chain(plan *p, distill_model *m, const chain *ch)
{
    int fused, rc = conv_forward_fused(p, m, ch, &fused);
    if (rc || fused)
        return rc;
    int members[5] = {ch->conv, ch->bn, ch->act1, ch->add, ch->act2};
    for (int k = 0; k < 5 && rc == DISTILL_OK; k++)
        if (members[k] >= 0)
            rc = forward_node(p, m, members[k], 0);
    return rc;
}

/* (Read at each plan build, which is rare: never in the step loop.) */
int64_t parallel_min_macs(void)
{
    const char *e = getenv("DISTILL_PARALLEL_MIN_MACS");
    char *end = NULL;
    long long x = e && *e ? strtoll(e, &end, 10) : -1;
    return (end && *end == 0 && x >= 0) ? (int64_t)x : PARALLEL_MIN_MACS_DEFAULT;
}

/* The work of emitting node i (a chain: from its conv) for N images, in
 * multiply-adds; elementwise and data-movement ops count 8 per value. */
static int64_t node_work(const distill_model *m, const build_ctx *c, int i, int64_t N)
{
    int src = c->claim[i] >= 0 ? c->claim[i] : i;
    const node *n = &m->nodes[src];
    int64_t e = 1;
    for (int d = 0; d < m->nodes[i].rank; d++)
        e *= m->nodes[i].dims[d];
    int64_t w = n->macs > 8 * e ? n->macs : 8 * e;
    return w * N;
}

/* Emit node i's forward steps; an inference node with little work gets
 * primitives made for, and run on, one thread. */
static int emit_node(plan *p, distill_model *m, const build_ctx *c, int i)
{
    int serial = !c->training && node_work(m, c, i, p->N) < parallel_min_macs();
    int first = p->nsteps, full = omp_get_max_threads(), rc;
    if (serial && full > 1)
        omp_set_num_threads(1);
    if (c->bn_relu[i] >= 0)
        rc = bnorm_forward(p, m, i, c->training, c->bn_relu[i]);
    else if (c->claim[i] >= 0)
        rc = forward_chain(p, m, &c->chains[c->claim[i]]);
    else
        rc = forward_node(p, m, i, c->training);
    if (serial && full > 1)
        omp_set_num_threads(full);
    for (int k = first; k < p->nsteps; k++)
        p->steps[k].serial = serial;
    if (i == m->output || (c->claim[i] >= 0 && c->chains[c->claim[i]].end == m->output))
        p->out_serial = serial;
    return rc;
}

static int pass_forward(plan *p, distill_model *m, const build_ctx *c)
{
    dnnl_memory_desc_t imd;
    md_plain(&m->nodes[0], p->N, &imd);
    int rc = buf_new(p, &imd, BUF_EXTERNAL, NULL, &p->input_ext);
    if (rc)
        return rc;
    p->out[0] = p->input_ext;
    for (int i = 1; i < m->n_nodes && rc == DISTILL_OK; i++) {
        if (!c->needed[i] || c->relu_bn[i] >= 0)
            continue; /* (a fused ReLU is computed by its BatchNorm) */
        if (c->claim[i] >= 0 && i != c->chains[c->claim[i]].end)
            continue; /* emitted at the chain's end */
        rc = emit_node(p, m, c, i);
    }
    p->fwd_end = p->nsteps;
    return rc;
}

/* ------------------------------------------------------------ 4. backward */

/* Kept node i can be sent a gradient from outside: an external buffer and
 * a step that copies it into (or adds it to) i's gradient. */
static int inject_grad(plan *p, distill_model *m, int i)
{
    dnnl_memory_desc_t gmd;
    md_plain(&m->nodes[i], p->N, &gmd);
    int rc = buf_new(p, &gmd, BUF_EXTERNAL, NULL, &p->inj[i]);
    if (rc)
        return rc;
    int e = p->inj[i], acc = p->diff[i] >= 0;
    if (!acc && (rc = buf_new(p, &p->bufs[p->out[i]].md, BUF_ARENA, NULL, &p->diff[i])))
        return rc;
    p->inj_step[i] = p->nsteps;
    return reorder_step(p, m, i, e, p->diff[i], acc);
}

/* Gradients flow from the output and every kept node; node i's backward
 * runs once every consumer (a later node) has contributed to its gradient. */
static int pass_backward(plan *p, distill_model *m, const build_ctx *c)
{
    int rc = DISTILL_OK;
    for (int i = m->n_nodes - 1; i >= 0 && rc == DISTILL_OK; i--) {
        if (!c->needed[i])
            continue;
        if (node_kept(m, i) && (rc = inject_grad(p, m, i)))
            break;
        if (p->diff[i] < 0 || i == 0)
            continue; /* no gradient reaches this node, or it is the input */
        if (c->relu_bn[i] >= 0) {
            /* a fused ReLU: its BatchNorm's backward takes this gradient */
            p->diff[c->relu_bn[i]] = p->diff[i];
            continue;
        }
        const node *ni = &m->nodes[i];
        const op_impl *op = op_lookup(ni->op);
        if (!op || !op->backward)
            continue;
        int any = op->has_params;
        for (int k = 0; k < ni->n_inputs; k++)
            any |= node_wants_grad(m, ni->inputs[k]);
        if (!any)
            continue; /* only an input gradient nobody asked for */
        rc = op->backward(p, m, i);
    }
    p->input_diff = p->diff[0];
    return rc;
}

/* ------------------------------------------------------------ the passes */

static int build_plan(distill_model *m, int64_t N, int training, plan **out)
{
    plan *p;
    build_ctx c;
    int rc = plan_new(m, N, training, &p);
    if (rc)
        return rc;
    if ((rc = ctx_init(&c, m->n_nodes, training))) {
        plan_free(p);
        return rc;
    }
    pass_needed(m, &c);
    if (training)
        pass_fuse_bn_relu(m, &c);
    else
        pass_fuse_chains(m, &c);
    if ((rc = pass_forward(p, m, &c)) == DISTILL_OK && training)
        rc = pass_backward(p, m, &c);
    if (rc == DISTILL_OK) {
        arena_extend_lifetimes(p, m, c.needed);
        rc = arena_bind(p, m);
    }
    ctx_free(&c);
    if (rc) {
        plan_free(p);
        return rc;
    }
    *out = p;
    return DISTILL_OK;
}

/* ------------------------------------------------------------ the cache */

/* Plans kept per model: the most recently used ones (training at one
 * batch size, inference at one or two, a last partial batch...). */
#define MAX_PLANS 4

int engine_state_get(distill_model *m, engine_state **out)
{
    if (!m->engine) {
        engine_state *es = xcalloc(1, sizeof *es);
        if (!es)
            return DISTILL_ENOMEM;
        m->engine = es;
        m->engine_release = engine_state_free;
    }
    *out = m->engine;
    return DISTILL_OK;
}

void engine_state_free(engine_state *es)
{
    if (!es)
        return;
    plan *p = es->plans;
    while (p) {
        plan *next = p->next;
        plan_free(p);
        p = next;
    }
    xfree(es);
}

int get_plan(distill_model *m, int64_t N, int training, plan **out)
{
    engine_state *es;
    int rc = engine_state_get(m, &es);
    if (rc)
        return rc;
    plan **link = &es->plans;
    for (plan *p = es->plans; p; link = &p->next, p = p->next)
        if (p->N == N && p->training == training && p->version == m->version) {
            *link = p->next; /* move to the front */
            p->next = es->plans;
            es->plans = p;
            *out = p;
            return DISTILL_OK;
        }
    plan *p;
    if ((rc = build_plan(m, N, training, &p)))
        return rc;
    p->next = es->plans;
    es->plans = p;
    /* drop the least recently used beyond MAX_PLANS */
    int k = 0;
    for (plan **q = &es->plans; *q; k++) {
        if (k >= MAX_PLANS) {
            plan *old = *q;
            *q = old->next;
            if (es->last_plan == old)
                es->last_plan = NULL;
            plan_free(old);
        } else {
            q = &(*q)->next;
        }
    }
    *out = p;
    return DISTILL_OK;
}

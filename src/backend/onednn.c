/*
 * onednn.c - building plans and caching them per model; the op table.  Each
 * op's forward and backward builders are in its op_*.c file, running plans
 * is in run.c; the plan types and the helpers that make buffers and steps
 * are in engine_impl.h and plan.c, memory planning in arena.c.
 */
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

/* ------------------------------------------------------------ fusions */

static int is_act(int op)
{
    return op == DISTILL_OP_RELU || op == DISTILL_OP_RELU6;
}

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

/* ------------------------------------------------------------ planning */

void engine_free_plans(distill_model *m)
{
    plan *p = m->plans;
    while (p) {
        plan *next = p->next;
            plan_free(p);
        p = next;
    }
    m->plans = NULL;
    m->last_plan = NULL;
    m->last_chunked = 0;
}

static int build_plan(distill_model *m, int64_t N, int training, plan **out)
{
    plan *p = xcalloc(1, sizeof *p);
    if (!p)
        return DISTILL_ENOMEM;
    p->N = N;
    p->training = training;
    p->version = m->version;
    p->n_nodes = m->n_nodes;
    p->input_diff = -1;
    int nn = m->n_nodes, rc = DISTILL_OK;
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

    /* which nodes are needed for the output and the kept nodes */
    char *needed = xcalloc((size_t)nn, 1);
    if (!needed) {
        plan_free(p);
        return DISTILL_ENOMEM;
    }
    for (int i = nn - 1; i >= 0; i--) {
        if (node_kept(m, i))
            needed[i] = 1;
        if (needed[i])
            for (int k = 0; k < m->nodes[i].n_inputs; k++)
                needed[m->nodes[i].inputs[k]] = 1;
    }

    /* forward */
    dnnl_memory_desc_t imd;
    md_plain(&m->nodes[0], N, &imd);
    if ((rc = buf_new(p, &imd, BUF_EXTERNAL, NULL, &p->input_ext)))
        goto fail;
    p->out[0] = p->input_ext;
    /* inference: claim conv chains to fuse (in node order; a node claimed
     * by an earlier chain ends a later one) */
    int *claim = xmalloc((size_t)nn * sizeof(int));
    chain *chains = xmalloc((size_t)nn * sizeof(chain));
    if (!claim || !chains) {
        xfree(claim);
        xfree(chains);
        rc = DISTILL_ENOMEM;
        goto fail;
    }
    for (int i = 0; i < nn; i++)
        claim[i] = -1; /* -1 free; else the conv of the chain that absorbed it */
    for (int i = 1; !training && i < nn; i++) {
        chain ch;
        if (!needed[i] || m->nodes[i].op != DISTILL_OP_CONV2D || !find_chain(m, i, node_kept, &ch))
            continue;
        if (ch.add >= 0 && claim[ch.add] >= 0) {
            ch.add = ch.act2 = ch.other = -1;
            ch.end = ch.bn;
        }
        chains[i] = ch;
        int members[5] = {ch.conv, ch.bn, ch.act1, ch.add, ch.act2};
        for (int k = 0; k < 5; k++)
            if (members[k] >= 0)
                claim[members[k]] = i;
    }
    /* training: a BatchNorm whose only consumer is a ReLU applies it itself */
    int *bn_relu = xmalloc((size_t)nn * sizeof(int)), *relu_bn = xmalloc((size_t)nn * sizeof(int));
    if (!bn_relu || !relu_bn) {
        xfree(bn_relu);
        xfree(relu_bn);
        xfree(claim);
        xfree(chains);
        rc = DISTILL_ENOMEM;
        goto fail;
    }
    for (int i = 0; i < nn; i++)
        bn_relu[i] = relu_bn[i] = -1;
    for (int i = 1; training && i < nn; i++) {
        int r = -1;
        if (needed[i] && m->nodes[i].op == DISTILL_OP_BATCHNORM && !node_kept(m, i) &&
            n_consumers(m, i, &r) == 1 && m->nodes[r].op == DISTILL_OP_RELU) {
            bn_relu[i] = r;
            relu_bn[r] = i;
        }
    }
    for (int i = 1; i < nn && rc == DISTILL_OK; i++) {
        if (!needed[i] || relu_bn[i] >= 0)
            continue; /* (a fused ReLU is computed by its BatchNorm) */
        if (bn_relu[i] >= 0) {
            rc = bnorm_forward(p, m, i, training, bn_relu[i]);
            continue;
        }
        if (claim[i] >= 0) {
            const chain *ch = &chains[claim[i]];
            if (i != ch->end)
                continue; /* emitted with the chain, at its end */
            int fused;
            if ((rc = conv_forward_fused(p, m, ch, &fused)) || fused)
                continue;
            /* not fusable: the chain's nodes one by one */
            int members[5] = {ch->conv, ch->bn, ch->act1, ch->add, ch->act2};
            for (int k = 0; k < 5 && rc == DISTILL_OK; k++) {
                int j = members[k];
                if (j < 0)
                    continue;
                rc = op_lookup(m->nodes[j].op)->forward(p, m, j, training);
            }
            continue;
        }
        const op_impl *op = op_lookup(m->nodes[i].op);
        rc = op ? op->forward(p, m, i, training)
                : seterr(DISTILL_EUNSUPPORTED, "node '%s': op %d", m->nodes[i].name,
                         m->nodes[i].op);
    }
    xfree(claim);
    xfree(chains);
    if (rc) {
        xfree(bn_relu);
        xfree(relu_bn);
        goto fail;
    }
    p->fwd_end = p->nsteps;

    if (training) {
        /* gradients flow from the output and every kept node */
        for (int i = nn - 1; i >= 0 && rc == DISTILL_OK; i--) {
            if (!needed[i])
                continue;
            if (node_kept(m, i)) {
                dnnl_memory_desc_t gmd;
                md_plain(&m->nodes[i], N, &gmd);
                int e;
                step *s;
                if ((rc = buf_new(p, &gmd, BUF_EXTERNAL, NULL, &p->inj[i])))
                    break;
                e = p->inj[i];
                if (p->diff[i] < 0) {
                    if ((rc = buf_new(p, &p->bufs[p->out[i]].md, BUF_ARENA, NULL, &p->diff[i])))
                        break;
                    p->inj_step[i] = p->nsteps;
                    if ((rc = reorder_step(p, m, i, e, p->diff[i], 0)))
                        break;
                } else {
                    p->inj_step[i] = p->nsteps;
                    if ((rc = reorder_step(p, m, i, e, p->diff[i], 1)))
                        break;
                }
                (void)s;
            }
            if (p->diff[i] < 0 || i == 0)
                continue; /* no gradient reaches this node, or it is the input */
            if (relu_bn[i] >= 0) {
                /* a fused ReLU: its BatchNorm's backward takes this gradient */
                p->diff[relu_bn[i]] = p->diff[i];
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
    }
    xfree(bn_relu);
    xfree(relu_bn);
    if (rc)
        goto fail;

    arena_extend_lifetimes(p, m, needed);
    xfree(needed);
    needed = NULL;
    if ((rc = arena_bind(p, m)))
        goto fail;
    *out = p;
    return DISTILL_OK;
fail:
    xfree(needed);
    plan_free(p);
    return rc;
}

/* Plans kept per model: the most recently used ones (training at one
 * batch size, inference at one or two, a last partial batch...). */
#define MAX_PLANS 4

int get_plan(distill_model *m, int64_t N, int training, plan **out)
{
    plan **link = &m->plans;
    for (plan *p = m->plans; p; link = &p->next, p = p->next)
        if (p->N == N && p->training == training && p->version == m->version) {
            *link = p->next; /* move to the front */
            p->next = m->plans;
            m->plans = p;
            *out = p;
            return DISTILL_OK;
        }
    plan *p;
    int rc = build_plan(m, N, training, &p);
    if (rc)
        return rc;
    p->next = m->plans;
    m->plans = p;
    /* drop the least recently used beyond MAX_PLANS */
    int k = 0;
    for (plan **q = &m->plans; *q; k++) {
        if (k >= MAX_PLANS) {
            plan *old = *q;
            *q = old->next;
            if (m->last_plan == old)
                m->last_plan = NULL;
            plan_free(old);
        } else {
            q = &(*q)->next;
        }
    }
    *out = p;
    return DISTILL_OK;
}

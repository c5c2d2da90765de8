/*
 * op_pool.c - maxpool, avgpool (padding included in the count) and
 * global_avgpool.
 *
 * Shapes: x (N, C, H, W) -> y (N, C, OH, OW) (global: (N, C, 1, 1)).
 */
#include "backend/engine_impl.h"

static void pool_params(const node *n, const node *xn, dnnl_alg_kind_t *alg, dnnl_dims_t st,
                        dnnl_dims_t k, dnnl_dims_t pl, dnnl_dims_t pr)
{
    *alg = n->op == DISTILL_OP_MAXPOOL ? dnnl_pooling_max : dnnl_pooling_avg_include_padding;
    if (n->op == DISTILL_OP_GLOBAL_AVGPOOL) {
        k[0] = xn->dims[1], k[1] = xn->dims[2];
        st[0] = st[1] = 1;
        pl[0] = pl[1] = pr[0] = pr[1] = 0;
        return;
    }
    k[0] = n->kh, k[1] = n->kw;
    st[0] = n->sh, st[1] = n->sw;
    pl[0] = n->ph, pl[1] = n->pw;
    /* right padding so that oneDNN's output size equals the floor formula */
    pr[0] = (n->dims[1] - 1) * n->sh + n->kh - xn->dims[1] - n->ph;
    pr[1] = (n->dims[2] - 1) * n->sw + n->kw - xn->dims[2] - n->pw;
    if (pr[0] < 0)
        pr[0] = 0;
    if (pr[1] < 0)
        pr[1] = 0;
}

/* y (N, C, OH, OW) = pool(x (N, C, H, W)); max keeps its argmax workspace
 * for backward. */
static int fwd_pool(plan *p, distill_model *m, int i, int training)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    const node *xn = &m->nodes[x];
    dnnl_memory_desc_t src = p->bufs[p->out[x]].md, dst;
    md_any(n, p->N, &dst);
    dnnl_alg_kind_t alg;
    dnnl_dims_t st, k, pl, pr;
    pool_params(n, xn, &alg, st, k, pl, pr);
    op_desc d;
    DN(desc_pool_fwd(&d, training ? dnnl_forward_training : dnnl_forward_inference,
                                      alg, &src, &dst, st, k, pl, pr),
       n->name);
    step *s;
    int rc = prim_step(p, m, i, &d, NULL, NULL, &s);
    if (rc)
        return rc;
    p->fwd_pd[i] = (int)(s - p->steps);
    int o, ws = -1;
    if ((rc = buf_new(p, step_md(s, dnnl_query_dst_md, 0), BUF_ARENA, NULL, &o)))
        return rc;
    const dnnl_memory_desc_t *wmd = step_md(s, dnnl_query_workspace_md, 0);
    if (wmd && dnnl_memory_desc_get_size(wmd) > 0)
        if ((rc = buf_new(p, wmd, BUF_ARENA, NULL, &ws)))
            return rc;
    s = &p->steps[p->fwd_pd[i]];
    step_arg(p, s, DNNL_ARG_SRC, p->out[x]);
    step_arg(p, s, DNNL_ARG_DST, o);
    if (ws >= 0) {
        step_arg(p, s, DNNL_ARG_WORKSPACE, ws);
        s->b[0] = ws;
    }
    p->out[i] = o;
    return DISTILL_OK;
}

/* Differentiates fwd_pool: dx (N, C, H, W) from dy (and the workspace). */
static int bwd_pool(plan *p, distill_model *m, int i)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    const node *xn = &m->nodes[x];
    step *f = &p->steps[p->fwd_pd[i]];
    int ws = f->b[0];
    dnnl_alg_kind_t alg;
    dnnl_dims_t st, k, pl, pr;
    pool_params(n, xn, &alg, st, k, pl, pr);
    dnnl_memory_desc_t ds = p->bufs[p->out[x]].md, dd = p->bufs[p->diff[i]].md;
    op_desc d;
    DN(desc_pool_bwd(&d, alg, &ds, &dd, st, k, pl, pr), n->name);
    step *s;
    int rc;
    if ((rc = prim_step(p, m, i, &d, p->steps[p->fwd_pd[i]].pd, NULL, &s)))
        return rc;
    int si = (int)(s - p->steps);
    contrib c;
    if ((rc = contrib_begin(p, x, &c)))
        return rc;
    s = &p->steps[si];
    step_arg(p, s, DNNL_ARG_DIFF_DST, p->diff[i]);
    if (ws >= 0)
        step_arg(p, s, DNNL_ARG_WORKSPACE, ws);
    step_arg(p, s, DNNL_ARG_DIFF_SRC, c.target);
    return contrib_end(p, m, i, x, &c);
}

const op_impl op_pool_impl = {fwd_pool, bwd_pool, 0};

/*
 * op_linear.c - linear (inner product): y = x W^T + b.
 *
 * Shapes: x (N, I) (or any (N, ...) whose trailing dims flatten to I),
 * W (O, I), b (O), y (N, O).
 */
#include "backend/engine_impl.h"

/* y (N, O) = x (N, I) W^T + b; W in the layout the primitive picks. */
static int fwd_linear(plan *p, distill_model *m, int i, int training)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    const node *xn = &m->nodes[x];
    dnnl_memory_desc_t src = p->bufs[p->out[x]].md, wei, bia, dst;
    (void)xn;
    dnnl_dims_t wd = {n->out_channels, xn->dims[0]};
    md_make(&wei, 2, wd, dnnl_format_tag_any);
    dnnl_dims_t bd = {n->out_channels};
    md_make(&bia, 1, bd, dnnl_a);
    md_any(n, p->N, &dst);
    op_desc d;
    DN(desc_ip_fwd(
           &d, training ? dnnl_forward_training : dnnl_forward_inference, &src, &wei,
           n->bias ? &bia : NULL, &dst),
       n->name);
    dnnl_primitive_desc_t pd;
    int rc = pd_make(p, m, i, &d, NULL, NULL, &pd);
    if (rc)
        return rc;
    dnnl_memory_desc_t want_w = *pd_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_desc_t want_dst = *pd_md(pd, dnnl_query_dst_md, 0);
    int w, o;
    step *s;
    if ((rc = weights_for(p, m, i, n->param_first, &want_w, &w)) ||
        (rc = buf_new(p, &want_dst, BUF_ARENA, NULL, &o))) {
        dnnl_primitive_desc_destroy(pd);
        return rc;
    }
    if ((rc = prim_add(p, m, i, pd, &s)))
        return rc;
    p->fwd_pd[i] = (int)(s - p->steps);
    step_arg(p, s, DNNL_ARG_SRC, p->out[x]);
    step_arg(p, s, DNNL_ARG_WEIGHTS, w);
    if (n->bias) {
        int b;
        if ((rc = param_buf(p, m, n->param_first + 1, 0, &b)))
            return rc;
        step_arg(p, s, DNNL_ARG_BIAS, b);
    }
    step_arg(p, s, DNNL_ARG_DST, o);
    p->out[i] = o;
    return DISTILL_OK;
}

/* Differentiates fwd_linear: dW (O, I) += dy^T x and db (O) += sum_n dy
 * (into the gradient block), then dx (N, I) = dy W into x's gradient. */
static int bwd_linear(plan *p, distill_model *m, int i)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    step *f = &p->steps[p->fwd_pd[i]];
    int src = f->argb[0], w = f->argb[1];
    dnnl_memory_desc_t src_md = p->bufs[src].md, w_md = p->bufs[w].md, dd = p->bufs[p->diff[i]].md;
    int rc;
    {
        dnnl_memory_desc_t dw_any, db;
        md_make(&dw_any, 2, w_md.dims, dnnl_format_tag_any);
        dnnl_dims_t bd = {n->out_channels};
        md_make(&db, 1, bd, dnnl_a);
        op_desc d;
        DN(desc_ip_bwd_weights(&d, &src_md, &dw_any,
                                                         n->bias ? &db : NULL, &dd),
           n->name);
        step *s;
        if ((rc = prim_step(p, m, i, &d, p->steps[p->fwd_pd[i]].pd, NULL, &s)))
            return rc;
        int si = (int)(s - p->steps), dw, dbias = -1;
        if ((rc = buf_new(p, step_md(s, dnnl_query_diff_weights_md, 0), BUF_ARENA, NULL, &dw)) ||
            (n->bias && (rc = buf_new(p, &db, BUF_ARENA, NULL, &dbias))))
            return rc;
        s = &p->steps[si];
        step_arg(p, s, DNNL_ARG_SRC, src);
        step_arg(p, s, DNNL_ARG_DIFF_DST, p->diff[i]);
        step_arg(p, s, DNNL_ARG_DIFF_WEIGHTS, dw);
        if (n->bias)
            step_arg(p, s, DNNL_ARG_DIFF_BIAS, dbias);
        if ((rc = grad_accumulate(p, m, i, n->param_first, dw)) ||
            (n->bias && (rc = grad_accumulate(p, m, i, n->param_first + 1, dbias))))
            return rc;
    }
    if (!node_wants_grad(m, x))
        return DISTILL_OK;
    {
        contrib c;
        dnnl_memory_desc_t ds_md = p->bufs[p->out[x]].md;
        op_desc d;
        DN(desc_ip_bwd_data(&d, &ds_md, &w_md, &dd), n->name);
        step *s;
        if ((rc = prim_step(p, m, i, &d, p->steps[p->fwd_pd[i]].pd, NULL, &s)))
            return rc;
        int si = (int)(s - p->steps);
        if ((rc = contrib_begin(p, x, &c)))
            return rc;
        s = &p->steps[si];
        step_arg(p, s, DNNL_ARG_DIFF_DST, p->diff[i]);
        step_arg(p, s, DNNL_ARG_WEIGHTS, w);
        step_arg(p, s, DNNL_ARG_DIFF_SRC, c.target);
        return contrib_end(p, m, i, x, &c);
    }
}

const op_impl op_linear_impl = {fwd_linear, bwd_linear, 1};

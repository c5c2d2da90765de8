/*
 * op_bnorm.c - batchnorm: inference through oneDNN (running statistics);
 * training through the library's own kernels (bnorm.h) when they can
 * address the layout, else through oneDNN; optionally with the ReLU that
 * follows applied by the BatchNorm itself.
 *
 * Shapes: x, y (N, C, H, W) or (N, C); gamma, beta, mean, var (C).
 */
#include "backend/engine_impl.h"

/* Training BatchNorm through the library's kernels (bnorm.c), with sums in
 * double precision.  Its "workspace" is the per-channel a, b of
 * y = x * a + b, from which the backward recomputes a fused ReLU's mask. */
static int fwd_batchnorm_own(plan *p, distill_model *m, int i, int fuse_relu, const bn_view *v)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    dnnl_memory_desc_t data = p->bufs[p->out[x]].md, cmd;
    dnnl_dims_t cd = {n->dims[0]};
    md_make(&cmd, 1, cd, dnnl_a);
    dnnl_memory_desc_t kmd;
    dnnl_dims_t kd = {(dnnl_dim_t)bn_coef_floats(v)};
    md_make(&kmd, 1, kd, dnnl_a);
    int o, mean, var, coef, rc;
    if ((rc = buf_new(p, &data, BUF_ARENA, NULL, &o)) ||
        (rc = buf_new(p, &cmd, BUF_ARENA, NULL, &mean)) ||
        (rc = buf_new(p, &cmd, BUF_ARENA, NULL, &var)) ||
        (rc = buf_new(p, &kmd, BUF_ARENA, NULL, &coef)))
        return rc;
    step *s;
    if ((rc = step_new(p, K_BN_FWD, i, &s)))
        return rc;
    p->fwd_pd[i] = (int)(s - p->steps);
    s->i0 = fuse_relu >= 0;
    step_arg(p, s, DNNL_ARG_SRC, p->out[x]);
    step_arg(p, s, DNNL_ARG_DST, o);
    step_arg(p, s, DNNL_ARG_MEAN, mean);
    step_arg(p, s, DNNL_ARG_VARIANCE, var);
    step_arg(p, s, DNNL_ARG_WORKSPACE, coef);
    p->out[i] = o;
    if (fuse_relu >= 0)
        p->out[fuse_relu] = o; /* the ReLU's output is the BatchNorm's */
    size_t need = bn_reduce_doubles(v);
    if (need > p->red_size)
        p->red_size = need;
    step *u;
    if ((rc = step_new(p, K_BN_STATS, i, &u)))
        return rc;
    step_buf(p, u, 0, mean);
    step_buf(p, u, 1, var);
    return DISTILL_OK;
}

/* y = gamma * (x - mean) / sqrt(var + eps) + beta per channel: batch
 * statistics in training (and a K_BN_STATS step updating the running ones),
 * the running statistics in inference; fuse_relu >= 0 (training): y =
 * relu(.) for the ReLU node fuse_relu too (dnnl_fuse_norm_relu; backward
 * uses its workspace). */
int bnorm_forward(plan *p, distill_model *m, int i, int training, int fuse_relu)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    dnnl_memory_desc_t data = p->bufs[p->out[x]].md;
    bn_view v;
    if (training && md_bn_view(&data, &v))
        return fwd_batchnorm_own(p, m, i, fuse_relu, &v);
    unsigned flags = dnnl_use_scale | dnnl_use_shift | (training ? 0 : dnnl_use_global_stats) |
                     (fuse_relu >= 0 ? dnnl_fuse_norm_relu : 0);
    op_desc d;
    DN(desc_bnorm_fwd(
           &d, training ? dnnl_forward_training : dnnl_forward_inference, &data, n->eps, flags),
       n->name);
    step *s;
    int rc = prim_step(p, m, i, &d, NULL, NULL, &s);
    if (rc)
        return rc;
    p->fwd_pd[i] = (int)(s - p->steps);
    int o, sc, sh, mean, var;
    if ((rc = buf_new(p, step_md(s, dnnl_query_dst_md, 0), BUF_ARENA, NULL, &o)) ||
        (rc = param_buf(p, m, n->param_first, 0, &sc)) ||
        (rc = param_buf(p, m, n->param_first + 1, 0, &sh)))
        return rc;
    if (training) {
        if ((rc = buf_new(p, step_md(s, dnnl_query_dst_md, 1), BUF_ARENA, NULL, &mean)) ||
            (rc = buf_new(p, step_md(s, dnnl_query_dst_md, 2), BUF_ARENA, NULL, &var)))
            return rc;
    } else {
        if ((rc = param_buf(p, m, n->param_first + 2, 0, &mean)) ||
            (rc = param_buf(p, m, n->param_first + 3, 0, &var)))
            return rc;
    }
    s = &p->steps[p->fwd_pd[i]];
    step_arg(p, s, DNNL_ARG_SRC, p->out[x]);
    step_arg(p, s, DNNL_ARG_SCALE, sc);
    step_arg(p, s, DNNL_ARG_SHIFT, sh);
    step_arg(p, s, DNNL_ARG_MEAN, mean);
    step_arg(p, s, DNNL_ARG_VARIANCE, var);
    step_arg(p, s, DNNL_ARG_DST, o);
    p->out[i] = o;
    if (fuse_relu >= 0) {
        int ws;
        const dnnl_memory_desc_t *wmd = step_md(s, dnnl_query_workspace_md, 0);
        if (!wmd || (rc = buf_new(p, wmd, BUF_ARENA, NULL, &ws)))
            return rc ? rc : seterr(DISTILL_EBACKEND, "batchnorm '%s': no workspace", n->name);
        s = &p->steps[p->fwd_pd[i]];
        step_arg(p, s, DNNL_ARG_WORKSPACE, ws);
        s->b[0] = ws;
        p->out[fuse_relu] = o; /* the ReLU's output is the BatchNorm's */
    }
    if (training) {
        step *u;
        if ((rc = step_new(p, K_BN_STATS, i, &u)))
            return rc;
        step_buf(p, u, 0, mean);
        step_buf(p, u, 1, var);
    }
    return DISTILL_OK;
}

/* Differentiates fwd_batchnorm_own (bn_backward: dx, dgamma, dbeta). */
static int bwd_batchnorm_own(plan *p, distill_model *m, int i)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    const step *f = &p->steps[p->fwd_pd[i]];
    int relu = (int)f->i0, src = step_argb(f, DNNL_ARG_SRC), coef = step_argb(f, DNNL_ARG_WORKSPACE),
        mean = step_argb(f, DNNL_ARG_MEAN), var = step_argb(f, DNNL_ARG_VARIANCE);
    dnnl_memory_desc_t cmd;
    dnnl_dims_t cd = {n->dims[0]};
    md_make(&cmd, 1, cd, dnnl_a);
    int dsc, dsh, rc;
    contrib c;
    if ((rc = buf_new(p, &cmd, BUF_ARENA, NULL, &dsc)) ||
        (rc = buf_new(p, &cmd, BUF_ARENA, NULL, &dsh)) || (rc = contrib_begin(p, x, &c)))
        return rc;
    step *s;
    if ((rc = step_new(p, K_BN_BWD, i, &s)))
        return rc;
    s->i0 = relu;
    step_arg(p, s, DNNL_ARG_SRC, src);
    step_arg(p, s, DNNL_ARG_WORKSPACE, coef);
    step_arg(p, s, DNNL_ARG_MEAN, mean);
    step_arg(p, s, DNNL_ARG_VARIANCE, var);
    step_arg(p, s, DNNL_ARG_DIFF_DST, p->diff[i]);
    step_arg(p, s, DNNL_ARG_DIFF_SRC, c.target);
    step_arg(p, s, DNNL_ARG_DIFF_SCALE, dsc);
    step_arg(p, s, DNNL_ARG_DIFF_SHIFT, dsh);
    if ((rc = contrib_end(p, m, i, x, &c)) ||
        (rc = grad_accumulate(p, m, i, n->param_first, dsc)) ||
        (rc = grad_accumulate(p, m, i, n->param_first + 1, dsh)))
        return rc;
    return DISTILL_OK;
}

/* Differentiates bnorm_forward (training): dx (N, C, ...) into x's
 * gradient, dgamma and dbeta (C) added into the gradient block. */
static int bwd_batchnorm(plan *p, distill_model *m, int i)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    step *f = &p->steps[p->fwd_pd[i]];
    if (f->kind == K_BN_FWD)
        return bwd_batchnorm_own(p, m, i);
    int src = f->argb[0], sc = f->argb[1], sh = f->argb[2], mean = f->argb[3], var = f->argb[4];
    dnnl_memory_desc_t data = p->bufs[src].md, dd = p->bufs[p->diff[i]].md;
    int ws = f->b[0];
    op_desc d;
    DN(desc_bnorm_bwd(
           &d, &dd, &data, n->eps,
           dnnl_use_scale | dnnl_use_shift | (ws >= 0 ? dnnl_fuse_norm_relu : 0)),
       n->name);
    step *s;
    int rc;
    if ((rc = prim_step(p, m, i, &d, p->steps[p->fwd_pd[i]].pd, NULL, &s)))
        return rc;
    int si = (int)(s - p->steps), dsc, dsh;
    dnnl_memory_desc_t cmd;
    dnnl_dims_t cd = {n->dims[0]};
    md_make(&cmd, 1, cd, dnnl_a);
    contrib c;
    if ((rc = buf_new(p, &cmd, BUF_ARENA, NULL, &dsc)) ||
        (rc = buf_new(p, &cmd, BUF_ARENA, NULL, &dsh)) || (rc = contrib_begin(p, x, &c)))
        return rc;
    s = &p->steps[si];
    step_arg(p, s, DNNL_ARG_SRC, src);
    step_arg(p, s, DNNL_ARG_MEAN, mean);
    step_arg(p, s, DNNL_ARG_VARIANCE, var);
    step_arg(p, s, DNNL_ARG_DIFF_DST, p->diff[i]);
    step_arg(p, s, DNNL_ARG_SCALE, sc);
    step_arg(p, s, DNNL_ARG_SHIFT, sh); /* oneDNN 2.6 checks it is given with use_shift */
    step_arg(p, s, DNNL_ARG_DIFF_SRC, c.target);
    step_arg(p, s, DNNL_ARG_DIFF_SCALE, dsc);
    step_arg(p, s, DNNL_ARG_DIFF_SHIFT, dsh);
    if (ws >= 0)
        step_arg(p, s, DNNL_ARG_WORKSPACE, ws);
    if ((rc = contrib_end(p, m, i, x, &c)) ||
        (rc = grad_accumulate(p, m, i, n->param_first, dsc)) ||
        (rc = grad_accumulate(p, m, i, n->param_first + 1, dsh)))
        return rc;
    return DISTILL_OK;
}

static int fwd_bnorm(plan *p, distill_model *m, int i, int training)
{
    return bnorm_forward(p, m, i, training, -1);
}

const op_impl op_bnorm_impl = {fwd_bnorm, bwd_batchnorm, 1};

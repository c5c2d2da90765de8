/*
 * op_misc.c - the ops without weights that move or combine values: add,
 * concat (channels), flatten, dropout and softmax (over features).
 */
#include "backend/engine_impl.h"

/* ------------------------------------------------------------ add */

/* y = a + b, all (N, ...). */
static int fwd_add(plan *p, distill_model *m, int i, int training)
{
    (void)training;
    const node *n = &m->nodes[i];
    int a = p->out[n->inputs[0]], o;
    /* the result takes the first input's layout; the second is converted
     * if it differs (rare: both come from the same kind of primitive) */
    int rc, bb;
    if ((rc = as_layout(p, m, n->inputs[1], &p->bufs[a].md, &bb)) ||
        (rc = buf_new(p, &p->bufs[a].md, BUF_ARENA, NULL, &o)) ||
        (rc = binary_add_step(p, m, i, a, bb, o)))
        return rc;
    p->out[i] = o;
    return DISTILL_OK;
}

/* Differentiates fwd_add: da += dy, db += dy. */
static int bwd_add(plan *p, distill_model *m, int i)
{
    const node *n = &m->nodes[i];
    for (int k = 0; k < 2; k++) {
        int x = n->inputs[k], rc;
        if (p->diff[x] < 0 && k == 0 &&
            dnnl_memory_desc_equal(&p->bufs[p->out[x]].md, &p->bufs[p->diff[i]].md)) {
            /* the first input's gradient is this node's gradient: share it */
            p->diff[x] = p->diff[i];
            continue;
        }
        if ((rc = contrib_copy(p, m, i, x, p->diff[i])))
            return rc;
    }
    return DISTILL_OK;
}

/* ------------------------------------------------------------ concat */

/* y (N, C1 + C2 + ..., H, W) = the inputs (N, Ck, H, W) along channels. */
static int fwd_concat(plan *p, distill_model *m, int i, int training)
{
    (void)training;
    const node *n = &m->nodes[i];
    dnnl_memory_desc_t *mds = xmalloc((size_t)n->n_inputs * sizeof *mds);
    if (!mds)
        return DISTILL_ENOMEM;
    for (int k = 0; k < n->n_inputs; k++)
        mds[k] = p->bufs[p->out[n->inputs[k]]].md;
    dnnl_engine_t eng = NULL;
    int rc = engine_get(&eng);
    if (rc) {
        xfree(mds);
        return rc;
    }
    dnnl_primitive_attr_t attr;
    dnnl_primitive_attr_create(&attr);
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = concat_pd_create(&pd, n->n_inputs, 1, mds, attr, eng);
    dnnl_primitive_attr_destroy(attr);
    xfree(mds);
    if (st != dnnl_success)
        return seterr(DISTILL_EBACKEND, "concat '%s': oneDNN: %s", n->name, dnnl_status2str(st));
    step *s;
    if ((rc = step_new(p, K_PRIM, i, &s))) {
        dnnl_primitive_desc_destroy(pd);
        return rc;
    }
    s->pd = pd;
    DN(dnnl_primitive_create(&s->prim, pd), n->name);
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (sp && dnnl_memory_desc_get_size(sp) > p->scratch_size)
        p->scratch_size = dnnl_memory_desc_get_size(sp);
    int o, si = (int)(s - p->steps);
    if ((rc = buf_new(p, step_md(s, dnnl_query_dst_md, 0), BUF_ARENA, NULL, &o)))
        return rc;
    s = &p->steps[si];
    for (int k = 0; k < n->n_inputs; k++)
        step_arg(p, s, DNNL_ARG_MULTIPLE_SRC + k, p->out[n->inputs[k]]);
    step_arg(p, s, DNNL_ARG_DST, o);
    p->out[i] = o;
    return DISTILL_OK;
}

/* Differentiates fwd_concat: dxk += the channel slice k of dy. */
static int bwd_concat(plan *p, distill_model *m, int i)
{
    const node *n = &m->nodes[i];
    int D = p->diff[i], rc;
    dnnl_memory_desc_t dmd = p->bufs[D].md;
    int64_t off = 0;
    int plainD = -1;
    for (int k = 0; k < n->n_inputs; k++) {
        int x = n->inputs[k];
        const node *xn = &m->nodes[x];
        dnnl_dims_t sd, so = {0, 0, 0, 0};
        for (int a = 0; a < dmd.ndims; a++)
            sd[a] = dmd.dims[a];
        sd[1] = xn->dims[0];
        so[1] = off;
        dnnl_memory_desc_t sub;
        int srcbuf = D;
        if (md_sub(&sub, &dmd, sd, so) != dnnl_success) {
            /* blocked layout and a channel offset inside a block: slice a
             * plain copy instead */
            if (plainD < 0) {
                dnnl_memory_desc_t pm;
                md_plain(n, p->N, &pm);
                if ((rc = buf_new(p, &pm, BUF_ARENA, NULL, &plainD)) ||
                    (rc = reorder_step(p, m, i, D, plainD, 0)))
                    return rc;
            }
            srcbuf = plainD;
            DN(md_sub(&sub, &p->bufs[plainD].md, sd, so), n->name);
        }
        int v;
        if ((rc = buf_view(p, srcbuf, &sub, &v)) || (rc = contrib_copy(p, m, i, x, v)))
            return rc;
        off += xn->dims[0];
    }
    return DISTILL_OK;
}

/* ------------------------------------------------------------ flatten */

/* y (N, C*H*W) = x (N, C, H, W) in plain order. */
static int fwd_flatten(plan *p, distill_model *m, int i, int training)
{
    (void)training;
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    const node *xn = &m->nodes[x];
    if (xn->rank == 1) { /* a no-op */
        p->out[i] = p->out[x];
        return DISTILL_OK;
    }
    dnnl_memory_desc_t flat, img;
    md_plain(n, p->N, &flat);
    md_plain(xn, p->N, &img);
    int o, v, rc;
    if ((rc = buf_new(p, &flat, BUF_ARENA, NULL, &o)) || (rc = buf_view(p, o, &img, &v)) ||
        (rc = reorder_step(p, m, i, p->out[x], v, 0)))
        return rc;
    p->out[i] = o;
    return DISTILL_OK;
}

/* Differentiates fwd_flatten: dx += dy viewed as (N, C, H, W). */
static int bwd_flatten(plan *p, distill_model *m, int i)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    const node *xn = &m->nodes[x];
    if (xn->rank == 1)
        return contrib_copy(p, m, i, x, p->diff[i]);
    dnnl_memory_desc_t img;
    md_plain(xn, p->N, &img);
    int v, rc;
    if ((rc = buf_view(p, p->diff[i], &img, &v)))
        return rc;
    return contrib_copy(p, m, i, x, v);
}

/* ------------------------------------------------------------ dropout */

/* Training: y = x * mask, mask = 0 or 1 / (1 - p) per element (a K_DROPOUT_FWD
 * step); inference or p = 0: y is x. */
static int fwd_dropout(plan *p, distill_model *m, int i, int training)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    if (!training || n->alpha == 0.0f) {
        p->out[i] = p->out[x];
        return DISTILL_OK;
    }
    int o, mask, rc;
    if ((rc = buf_new(p, &p->bufs[p->out[x]].md, BUF_ARENA, NULL, &o)) ||
        (rc = buf_new(p, &p->bufs[p->out[x]].md, BUF_ARENA, NULL, &mask)))
        return rc;
    step *s;
    if ((rc = step_new(p, K_DROPOUT_FWD, i, &s)))
        return rc;
    p->fwd_pd[i] = (int)(s - p->steps); /* the mask, for backward */
    step_buf(p, s, 0, p->out[x]);
    step_buf(p, s, 1, mask);
    step_buf(p, s, 2, o);
    s->f0 = n->alpha;
    p->out[i] = o;
    return DISTILL_OK;
}

/* Differentiates fwd_dropout: dx += dy * mask. */
static int bwd_dropout(plan *p, distill_model *m, int i)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    const step *fwd = p->fwd_pd[i] >= 0 ? &p->steps[p->fwd_pd[i]] : NULL;
    if (!fwd) /* p = 0 or inference: identity */
        return contrib_copy(p, m, i, x, p->diff[i]);
    int rc, acc = p->diff[x] >= 0;
    if (!acc && (rc = buf_new(p, &p->bufs[p->out[x]].md, BUF_ARENA, NULL, &p->diff[x])))
        return rc;
    step *s;
    int mask = fwd->b[1];
    if ((rc = step_new(p, K_DROPOUT_BWD, i, &s)))
        return rc;
    step_buf(p, s, 0, p->diff[i]);
    step_buf(p, s, 1, mask);
    step_buf(p, s, 2, p->diff[x]);
    s->i0 = acc;
    return DISTILL_OK;
}

/* ------------------------------------------------------------ softmax */

/* y (N, K) = softmax of x (N, K) over K. */
static int fwd_softmax(plan *p, distill_model *m, int i, int training)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    dnnl_memory_desc_t data = p->bufs[p->out[x]].md;
    op_desc d;
    DN(desc_softmax_fwd(&d, training ? dnnl_forward_training : dnnl_forward_inference,
                                      &data, 1),
       n->name);
    step *s;
    int rc = prim_step(p, m, i, &d, NULL, NULL, &s);
    if (rc)
        return rc;
    p->fwd_pd[i] = (int)(s - p->steps);
    int o;
    if ((rc = buf_new(p, step_md(s, dnnl_query_dst_md, 0), BUF_ARENA, NULL, &o)))
        return rc;
    s = &p->steps[p->fwd_pd[i]];
    step_arg(p, s, DNNL_ARG_SRC, p->out[x]);
    step_arg(p, s, DNNL_ARG_DST, o);
    p->out[i] = o;
    return DISTILL_OK;
}

/* Differentiates fwd_softmax: dx = y * (dy - sum_k y dy), from y. */
static int bwd_softmax(plan *p, distill_model *m, int i)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    dnnl_memory_desc_t data = p->bufs[p->out[i]].md, dd = p->bufs[p->diff[i]].md;
    op_desc d;
    DN(desc_softmax_bwd(&d, &dd, &data, 1), n->name);
    step *s;
    int rc;
    if ((rc = prim_step(p, m, i, &d, p->steps[p->fwd_pd[i]].pd, NULL, &s)))
        return rc;
    int si = (int)(s - p->steps);
    contrib c;
    if ((rc = contrib_begin(p, x, &c)))
        return rc;
    s = &p->steps[si];
    step_arg(p, s, DNNL_ARG_DST, p->out[i]);
    step_arg(p, s, DNNL_ARG_DIFF_DST, p->diff[i]);
    step_arg(p, s, DNNL_ARG_DIFF_SRC, c.target);
    return contrib_end(p, m, i, x, &c);
}

/* ------------------------------------------------------------ table entries */

const op_impl op_add_impl = {fwd_add, bwd_add, 0};
const op_impl op_concat_impl = {fwd_concat, bwd_concat, 0};
const op_impl op_flatten_impl = {fwd_flatten, bwd_flatten, 0};
const op_impl op_dropout_impl = {fwd_dropout, bwd_dropout, 0};
const op_impl op_softmax_impl = {fwd_softmax, bwd_softmax, 0};

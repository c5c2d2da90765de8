/*
 * op_conv.c - conv2d (dense, grouped, depthwise, dilated): the forward, the
 * inference forward fused with a folded BatchNorm, an add and a ReLU, and
 * the backward (weights, bias, data).
 *
 * Shapes: x (N, C, H, W) -> y (N, O, OH, OW); weights (O, C/G, kH, kW) in
 * the model, (G, O/G, C/G, kH, kW) for oneDNN when grouped; bias (O).
 */
#include <string.h>

#include "backend/engine_impl.h"

/* Conv node n's strides, dilation (0 = none) and padding (both sides). */
static void conv_geom(const node *n, dnnl_dims_t strides, dnnl_dims_t dil, dnnl_dims_t pad)
{
    strides[0] = n->sh, strides[1] = n->sw;
    dil[0] = n->dh - 1, dil[1] = n->dw - 1;
    pad[0] = n->ph, pad[1] = n->pw;
}

/* Conv node n (input node xn): its weights in any layout, (O, I, kH, kW) or,
 * grouped, (G, O/G, I/G, kH, kW); its bias (O). */
static void conv_weights_md(const node *n, const node *xn, dnnl_memory_desc_t *wei,
                            dnnl_memory_desc_t *bia)
{
    dnnl_dims_t wd;
    int wr;
    if (n->groups > 1) {
        wd[0] = n->groups, wd[1] = n->out_channels / n->groups, wd[2] = xn->dims[0] / n->groups;
        wd[3] = n->kh, wd[4] = n->kw;
        wr = 5;
    } else {
        wd[0] = n->out_channels, wd[1] = xn->dims[0], wd[2] = n->kh, wd[3] = n->kw;
        wr = 4;
    }
    md_make(wei, wr, wd, dnnl_format_tag_any);
    dnnl_dims_t bd = {n->out_channels};
    md_make(bia, 1, bd, dnnl_a);
}

/* y (N, O, OH, OW) = conv(x (N, C, H, W), W) + b, in the layouts the
 * primitive picks; x is reordered to its layout if needed. */
static int fwd_conv(plan *p, distill_model *m, int i, int training)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    const node *xn = &m->nodes[x];
    dnnl_memory_desc_t src, wei, bia, dst;
    md_any(xn, p->N, &src);
    md_any(n, p->N, &dst);
    conv_weights_md(n, xn, &wei, &bia);
    dnnl_dims_t strides, dil, pad;
    conv_geom(n, strides, dil, pad);
    op_desc cd;
    DN(desc_conv_fwd(&cd, training ? dnnl_forward_training : dnnl_forward_inference, &src, &wei,
                     n->bias ? &bia : NULL, &dst, strides, dil, pad),
       n->name);
    dnnl_primitive_desc_t pd;
    int rc = pd_make(p, m, i, &cd, NULL, NULL, &pd);
    if (rc)
        return rc;
    int in, w, o;
    dnnl_memory_desc_t want_src = *pd_md(pd, dnnl_query_src_md, 0);
    dnnl_memory_desc_t want_w = *pd_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_desc_t want_dst = *pd_md(pd, dnnl_query_dst_md, 0);
    step *s;
    if ((rc = as_layout(p, m, x, &want_src, &in)) ||
        (rc = weights_for(p, m, i, n->param_first, &want_w, &w)) ||
        (rc = buf_new(p, &want_dst, BUF_ARENA, NULL, &o))) {
        dnnl_primitive_desc_destroy(pd);
        return rc;
    }
    if ((rc = prim_add(p, m, i, pd, &s)))
        return rc;
    p->fwd_pd[i] = (int)(s - p->steps);
    step_arg(p, s, DNNL_ARG_SRC, in);
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

static int append_act(dnnl_post_ops_t po, const node *a)
{
    if (a->op == DISTILL_OP_RELU)
        return po_eltwise(po, dnnl_eltwise_relu, 0.0f, 0.0f);
    return po_eltwise(po, dnnl_eltwise_clip_v2, 0.0f, 6.0f);
}

/* Inference: conv -> BatchNorm (folded into W, b by a K_FOLD step) ->
 * [ReLU] or [add other -> [ReLU]] as one convolution with eltwise/binary
 * post-ops; the result is the chain end's output. */
int conv_forward_fused(plan *p, distill_model *m, const chain *ch, int *fused)
{
    const node *n = &m->nodes[ch->conv];
    int x = n->inputs[0];
    const node *xn = &m->nodes[x];
    *fused = 0;
    dnnl_memory_desc_t src, wei, bia, dst;
    md_any(xn, p->N, &src);
    md_any(&m->nodes[ch->end], p->N, &dst);
    conv_weights_md(n, xn, &wei, &bia);
    dnnl_dims_t strides, dil, pad;
    conv_geom(n, strides, dil, pad);
    op_desc cd;
    int has_bias = n->bias || ch->bn >= 0;
    dnnl_primitive_desc_t pd;
    dnnl_engine_t eng = NULL;
    int rc = engine_get(&eng);
    if (rc)
        return rc;
    /* the layouts the plain convolution picks; the fused one is asked for
     * exactly those, so that post-ops do not push it to a slower kernel */
    if (desc_conv_fwd(&cd, dnnl_forward_inference, &src, &wei, has_bias ? &bia : NULL, &dst,
                      strides, dil, pad) != dnnl_success ||
        pd_create(&pd, &cd, NULL, eng, NULL) != dnnl_success)
        return DISTILL_OK;
    src = *pd_md(pd, dnnl_query_src_md, 0);
    dst = *pd_md(pd, dnnl_query_dst_md, 0);
    dnnl_primitive_desc_destroy(pd);
    if (desc_conv_fwd(&cd, dnnl_forward_inference, &src, &wei, has_bias ? &bia : NULL, &dst,
                      strides, dil, pad) != dnnl_success)
        return DISTILL_OK;
    dnnl_post_ops_t po;
    DN(dnnl_post_ops_create(&po), n->name);
    int other = -1;
    if (ch->act1 >= 0)
        append_act(po, &m->nodes[ch->act1]);
    if (ch->add >= 0) {
        /* the other addend in the output's layout */
        if ((rc = as_layout(p, m, ch->other, &dst, &other))) {
            dnnl_post_ops_destroy(po);
            return rc;
        }
        dnnl_post_ops_append_binary(po, dnnl_binary_add, &dst);
        if (ch->act2 >= 0)
            append_act(po, &m->nodes[ch->act2]);
    }
    dnnl_primitive_attr_t attr;
    dnnl_primitive_attr_create(&attr);
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    dnnl_primitive_attr_set_post_ops(attr, po);
    dnnl_post_ops_destroy(po);
    dnnl_status_t st = pd_create(&pd, &cd, attr, eng, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success)
        return DISTILL_OK; /* not fusable here: the caller emits the nodes one by one */
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (sp && dnnl_memory_desc_get_size(sp) > p->scratch_size)
        p->scratch_size = dnnl_memory_desc_get_size(sp);
    dnnl_memory_desc_t want_src = *pd_md(pd, dnnl_query_src_md, 0);
    dnnl_memory_desc_t want_w = *pd_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_desc_t want_dst = *pd_md(pd, dnnl_query_dst_md, 0);
    int in, w, b = -1, o;
    if ((rc = as_layout(p, m, x, &want_src, &in)))
        goto fail;
    if (ch->bn >= 0) {
        /* folded weights and bias, in the model's plain layout, then in the
         * primitive's */
        const param *wp = &m->params[n->param_first];
        dnnl_memory_desc_t fw_md;
        dnnl_dims_t pd4;
        for (int k = 0; k < 4; k++)
            pd4[k] = wp->dims[k];
        md_make(&fw_md, 4, pd4, dnnl_abcd);
        int fw, fwv;
        step *f;
        if ((rc = buf_new(p, &fw_md, BUF_ARENA, NULL, &fw)) ||
            (rc = buf_new(p, &bia, BUF_ARENA, NULL, &b)) ||
            (rc = step_new(p, K_FOLD, ch->conv, &f)))
            goto fail;
        f->i0 = ch->bn;
        f->prep = 1;
        step_buf(p, f, 0, fw);
        step_buf(p, f, 1, b);
        if ((rc = grouped_view(p, fw, &want_w, &fwv)))
            goto fail;
        if (dnnl_memory_desc_equal(&p->bufs[fwv].md, &want_w)) {
            w = fwv;
        } else {
            if ((rc = buf_new(p, &want_w, BUF_ARENA, NULL, &w)) ||
                (rc = reorder_step(p, m, ch->conv, fwv, w, 0)))
                goto fail;
            p->steps[p->nsteps - 1].prep = 1;
        }
    } else {
        if ((rc = weights_for(p, m, ch->conv, n->param_first, &want_w, &w)))
            goto fail;
        if (n->bias && (rc = param_buf(p, m, n->param_first + 1, 0, &b)))
            goto fail;
    }
    if ((rc = buf_new(p, &want_dst, BUF_ARENA, NULL, &o)))
        goto fail;
    step *s;
    if ((rc = prim_add(p, m, ch->end, pd, &s)))
        return rc;
    step_arg(p, s, DNNL_ARG_SRC, in);
    step_arg(p, s, DNNL_ARG_WEIGHTS, w);
    if (b >= 0)
        step_arg(p, s, DNNL_ARG_BIAS, b);
    step_arg(p, s, DNNL_ARG_DST, o);
    if (other >= 0)
        step_arg(p, s, DNNL_ARG_ATTR_MULTIPLE_POST_OP(ch->act1 >= 0 ? 1 : 0) | DNNL_ARG_SRC_1,
                 other);
    p->out[ch->end] = o;
    *fused = 1;
    return DISTILL_OK;
fail:
    dnnl_primitive_desc_destroy(pd);
    return rc;
}

/* Whether pd runs one of oneDNN's reference (not jit) implementations. */
static int pd_is_ref(const_dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
        return 0;
    return strncmp(impl, "ref", 3) == 0;
}

/* A conv's backward primitive (data when dw is NULL, else weights), trying
 * layouts in turn: first the given ones (no reorder), then oneDNN's choice
 * of the source-side one (diff_src or src), then its choice of both.  The
 * first that is not oneDNN's reference kernel wins, else the first that
 * exists.  oneDNN 2.6 has only reference kernels for some pairs the forward
 * leads to: a plain diff_src beside a blocked diff_dst (a feature adapter's
 * input), a plain src with fewer than 16 channels (its first-layer layout)
 * beside a blocked diff_dst; those run some 30 to 3,000 times slower than
 * the jit kernels plus the reorders. */
static int conv_bwd_pd(plan *p, const distill_model *m, int i, const dnnl_memory_desc_t *s_md,
                       const dnnl_memory_desc_t *w_md, const dnnl_memory_desc_t *b_md,
                       const dnnl_memory_desc_t *d_md, int weights, dnnl_primitive_desc_t *out)
{
    const node *n = &m->nodes[i];
    dnnl_dims_t strides, dil, pad;
    conv_geom(n, strides, dil, pad);
    dnnl_memory_desc_t s_any, d_any;
    md_make(&s_any, s_md->ndims, s_md->dims, dnnl_format_tag_any);
    md_make(&d_any, d_md->ndims, d_md->dims, dnnl_format_tag_any);
    const dnnl_memory_desc_t *try_s[3] = {s_md, &s_any, &s_any}, *try_d[3] = {d_md, d_md, &d_any};
    dnnl_primitive_desc_t first = NULL;
    int rc = DISTILL_OK;
    for (int k = 0; k < 3; k++) {
        op_desc cd;
        dnnl_status_t st =
            weights ? desc_conv_bwd_weights(&cd, try_s[k], w_md, b_md, try_d[k], strides, dil, pad)
                    : desc_conv_bwd_data(&cd, try_s[k], w_md, try_d[k], strides, dil, pad);
        dnnl_primitive_desc_t pd;
        if (st != dnnl_success) {
            rc = seterr(DISTILL_EBACKEND, "conv2d '%s': %s", n->name, dnnl_status2str(st));
            continue;
        }
        if ((rc = pd_make(p, m, i, &cd, p->steps[p->fwd_pd[i]].pd, NULL, &pd)))
            continue;
        if (!pd_is_ref(pd)) {
            if (first)
                dnnl_primitive_desc_destroy(first);
            util_clear_error();
            *out = pd;
            return DISTILL_OK;
        }
        if (first)
            dnnl_primitive_desc_destroy(pd);
        else
            first = pd;
    }
    if (!first)
        return rc;
    util_clear_error();
    *out = first;
    return DISTILL_OK;
}

/* Differentiates fwd_conv: dW (and db) through backward-weights into
 * temporaries added into the gradient block (grouped weights through their
 * 5-D view), then, if x wants a gradient, dx (N, C, H, W) through
 * backward-data. */
static int bwd_conv(plan *p, distill_model *m, int i)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    step *f = &p->steps[p->fwd_pd[i]];
    /* the converted src and weights the forward used */
    int src = f->argb[0], w = f->argb[1];
    dnnl_memory_desc_t src_md = p->bufs[src].md, w_md = p->bufs[w].md, dd = p->bufs[p->diff[i]].md;
    int rc;
    /* backward weights: dW (and db) into temporaries, then += into the grad block */
    {
        dnnl_memory_desc_t dw_any, db;
        md_make(&dw_any, w_md.ndims, w_md.dims, dnnl_format_tag_any);
        dnnl_dims_t bd = {n->out_channels};
        md_make(&db, 1, bd, dnnl_a);
        dnnl_primitive_desc_t pd;
        if ((rc = conv_bwd_pd(p, m, i, &src_md, &dw_any, n->bias ? &db : NULL, &dd, 1, &pd)))
            return rc;
        int bsrc, bdd, dw, dbias = -1;
        if ((rc = in_layout(p, m, i, src, pd_md(pd, dnnl_query_src_md, 0), &bsrc)) ||
            (rc = in_layout(p, m, i, p->diff[i], pd_md(pd, dnnl_query_diff_dst_md, 0), &bdd)) ||
            (rc = buf_new(p, pd_md(pd, dnnl_query_diff_weights_md, 0), BUF_ARENA, NULL, &dw)) ||
            (n->bias && (rc = buf_new(p, &db, BUF_ARENA, NULL, &dbias)))) {
            dnnl_primitive_desc_destroy(pd);
            return rc;
        }
        step *s;
        if ((rc = prim_add(p, m, i, pd, &s)))
            return rc;
        step_arg(p, s, DNNL_ARG_SRC, bsrc);
        step_arg(p, s, DNNL_ARG_DIFF_DST, bdd);
        step_arg(p, s, DNNL_ARG_DIFF_WEIGHTS, dw);
        if (n->bias)
            step_arg(p, s, DNNL_ARG_DIFF_BIAS, dbias);
        /* += into the model's gradient block (grouped: its 5-D view) */
        int g, gv;
        if ((rc = param_buf(p, m, n->param_first, 1, &g)) ||
            (rc = grouped_view(p, g, &w_md, &gv)) || (rc = reorder_step(p, m, i, dw, gv, 1)))
            return rc;
        if (n->bias && (rc = grad_accumulate(p, m, i, n->param_first + 1, dbias)))
            return rc;
    }
    if (!node_wants_grad(m, x))
        return DISTILL_OK;
    /* backward data: into x's gradient, through a temporary and a reorder
     * when the kernel computes it in another layout than x's output has */
    {
        contrib c;
        dnnl_memory_desc_t x_md = p->bufs[p->out[x]].md, w_any;
        md_make(&w_any, w_md.ndims, w_md.dims, dnnl_format_tag_any);
        dnnl_primitive_desc_t pd;
        if ((rc = conv_bwd_pd(p, m, i, &x_md, &w_any, NULL, &dd, 0, &pd)))
            return rc;
        dnnl_memory_desc_t want_w = *pd_md(pd, dnnl_query_weights_md, 0);
        dnnl_memory_desc_t want_ds = *pd_md(pd, dnnl_query_diff_src_md, 0);
        int via = !dnnl_memory_desc_equal(&want_ds, &x_md);
        int wb = w, bdd, tmp = -1;
        if (!dnnl_memory_desc_equal(&want_w, &w_md)) {
            /* a second copy of the weights in the layout backward-data wants */
            int ext;
            if ((rc = param_buf(p, m, n->param_first, 0, &ext)) ||
                (rc = buf_new(p, &want_w, BUF_ARENA, NULL, &wb)) ||
                (rc = grouped_view(p, ext, &w_md, &ext)) || (rc = reorder_step(p, m, i, ext, wb, 0))) {
                dnnl_primitive_desc_destroy(pd);
                return rc;
            }
        }
        if ((rc = in_layout(p, m, i, p->diff[i], pd_md(pd, dnnl_query_diff_dst_md, 0), &bdd)) ||
            (rc = via ? buf_new(p, &want_ds, BUF_ARENA, NULL, &tmp) : contrib_begin(p, x, &c))) {
            dnnl_primitive_desc_destroy(pd);
            return rc;
        }
        step *s;
        if ((rc = prim_add(p, m, i, pd, &s)))
            return rc;
        step_arg(p, s, DNNL_ARG_DIFF_DST, bdd);
        step_arg(p, s, DNNL_ARG_WEIGHTS, wb);
        step_arg(p, s, DNNL_ARG_DIFF_SRC, via ? tmp : c.target);
        return via ? contrib_copy(p, m, i, x, tmp) : contrib_end(p, m, i, x, &c);
    }
}

const op_impl op_conv_impl = {fwd_conv, bwd_conv, 1};

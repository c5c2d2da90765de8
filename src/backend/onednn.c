/*
 * onednn.c - the execution engine: every op's forward and backward
 * builders and plan building and caching.  Running plans is in run.c; the
 * plan types and the helpers that make buffers and steps are in
 * engine_impl.h and plan.c, memory planning in arena.c.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/engine_impl.h"

/* Whether pd runs one of oneDNN's reference (not jit) implementations. */
static int pd_is_ref(const_dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
        return 0;
    return strncmp(impl, "ref", 3) == 0;
}

/* ------------------------------------------------------------ forward */

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

/* Inference fusion: a conv whose output only feeds a BatchNorm (folded into
 * the conv's weights and bias), then optionally a ReLU/ReLU6, or an add with
 * another node then optionally a ReLU/ReLU6, all run as one convolution with
 * post-ops.  Nodes inside a chain must not be kept. */
typedef struct chain {
    int conv, bn, act1, add, other, act2, end;
} chain;

static int is_act(int op)
{
    return op == DISTILL_OP_RELU || op == DISTILL_OP_RELU6;
}

static int append_act(dnnl_post_ops_t po, const node *a)
{
    if (a->op == DISTILL_OP_RELU)
        return po_eltwise(po, dnnl_eltwise_relu, 0.0f, 0.0f);
    return po_eltwise(po, dnnl_eltwise_clip_v2, 0.0f, 6.0f);
}

static int fwd_conv_fused(plan *p, distill_model *m, const chain *ch, int *fused)
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

/* Emit a primitive whose inputs are already in place: build, then attach. */
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

static int fwd_batchnorm(plan *p, distill_model *m, int i, int training, int fuse_relu)
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

static void eltwise_alg(const node *n, dnnl_alg_kind_t *alg, float *a, float *b, int bwd)
{
    *a = 0.0f, *b = 0.0f;
    switch (n->op) {
    case DISTILL_OP_RELU:
        *alg = bwd ? dnnl_eltwise_relu_use_dst_for_bwd : dnnl_eltwise_relu;
        break;
    case DISTILL_OP_RELU6:
        *alg = bwd ? dnnl_eltwise_clip_v2_use_dst_for_bwd : dnnl_eltwise_clip_v2;
        *b = 6.0f;
        break;
    case DISTILL_OP_LEAKY_RELU:
        *alg = dnnl_eltwise_relu;
        *a = n->alpha;
        break;
    default: /* gelu */
        *alg = n->tanh_approx ? dnnl_eltwise_gelu_tanh : dnnl_eltwise_gelu_erf;
        break;
    }
}

static int fwd_eltwise(plan *p, distill_model *m, int i, int training)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    dnnl_memory_desc_t data = p->bufs[p->out[x]].md;
    dnnl_alg_kind_t alg;
    float a, b;
    /* the *_use_dst_for_bwd forms must also be used forward so that the
     * backward primitive finds a matching hint */
    eltwise_alg(n, &alg, &a, &b, training);
    op_desc d;
    DN(desc_eltwise_fwd(&d, training ? dnnl_forward_training : dnnl_forward_inference,
                                      alg, &data, a, b),
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

static int fwd_add(plan *p, distill_model *m, int i)
{
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

static int fwd_concat(plan *p, distill_model *m, int i)
{
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

static int fwd_flatten(plan *p, distill_model *m, int i)
{
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
    step_buf(p, s, 0, p->out[x]);
    step_buf(p, s, 1, mask);
    step_buf(p, s, 2, o);
    s->f0 = n->alpha;
    p->out[i] = o;
    return DISTILL_OK;
}

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

/* ------------------------------------------------------------ backward */

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

static int bwd_eltwise(plan *p, distill_model *m, int i)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    dnnl_alg_kind_t alg;
    float a, b;
    eltwise_alg(n, &alg, &a, &b, 1);
    int use_dst = alg == dnnl_eltwise_relu_use_dst_for_bwd ||
                  alg == dnnl_eltwise_clip_v2_use_dst_for_bwd;
    int data = use_dst ? p->out[i] : p->out[x];
    dnnl_memory_desc_t dmd = p->bufs[data].md, dd = p->bufs[p->diff[i]].md;
    op_desc d;
    DN(desc_eltwise_bwd(&d, alg, &dd, &dmd, a, b), n->name);
    step *s;
    int rc;
    if ((rc = prim_step(p, m, i, &d, p->steps[p->fwd_pd[i]].pd, NULL, &s)))
        return rc;
    int si = (int)(s - p->steps);
    contrib c;
    if ((rc = contrib_begin(p, x, &c)))
        return rc;
    s = &p->steps[si];
    step_arg(p, s, use_dst ? DNNL_ARG_DST : DNNL_ARG_SRC, data);
    step_arg(p, s, DNNL_ARG_DIFF_DST, p->diff[i]);
    step_arg(p, s, DNNL_ARG_DIFF_SRC, c.target);
    return contrib_end(p, m, i, x, &c);
}

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

static int bwd_dropout(plan *p, distill_model *m, int i, const step *fwd)
{
    const node *n = &m->nodes[i];
    int x = n->inputs[0];
    if (!fwd) /* p = 0: identity */
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
    int *dropout_step = xmalloc((size_t)nn * sizeof(int));
    if (!dropout_step) {
        rc = DISTILL_ENOMEM;
        goto fail;
    }
    /* inference: claim conv chains to fuse (in node order; a node claimed
     * by an earlier chain ends a later one) */
    int *claim = xmalloc((size_t)nn * sizeof(int));
    chain *chains = xmalloc((size_t)nn * sizeof(chain));
    if (!claim || !chains) {
        xfree(claim);
        xfree(chains);
        xfree(dropout_step);
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
        xfree(dropout_step);
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
        dropout_step[i] = -1;
        if (!needed[i] || relu_bn[i] >= 0)
            continue; /* (a fused ReLU is computed by its BatchNorm) */
        if (bn_relu[i] >= 0) {
            rc = fwd_batchnorm(p, m, i, training, bn_relu[i]);
            continue;
        }
        if (claim[i] >= 0) {
            const chain *ch = &chains[claim[i]];
            if (i != ch->end)
                continue; /* emitted with the chain, at its end */
            int fused;
            if ((rc = fwd_conv_fused(p, m, ch, &fused)) || fused)
                continue;
            /* not fusable: the chain's nodes one by one */
            int members[5] = {ch->conv, ch->bn, ch->act1, ch->add, ch->act2};
            for (int k = 0; k < 5 && rc == DISTILL_OK; k++) {
                int j = members[k];
                if (j < 0)
                    continue;
                const node *nj = &m->nodes[j];
                rc = nj->op == DISTILL_OP_CONV2D      ? fwd_conv(p, m, j, training)
                     : nj->op == DISTILL_OP_BATCHNORM ? fwd_batchnorm(p, m, j, training, -1)
                     : nj->op == DISTILL_OP_ADD       ? fwd_add(p, m, j)
                                                      : fwd_eltwise(p, m, j, training);
            }
            continue;
        }
        switch (m->nodes[i].op) {
        case DISTILL_OP_CONV2D: rc = fwd_conv(p, m, i, training); break;
        case DISTILL_OP_LINEAR: rc = fwd_linear(p, m, i, training); break;
        case DISTILL_OP_BATCHNORM: rc = fwd_batchnorm(p, m, i, training, -1); break;
        case DISTILL_OP_RELU:
        case DISTILL_OP_RELU6:
        case DISTILL_OP_LEAKY_RELU:
        case DISTILL_OP_GELU: rc = fwd_eltwise(p, m, i, training); break;
        case DISTILL_OP_MAXPOOL:
        case DISTILL_OP_AVGPOOL:
        case DISTILL_OP_GLOBAL_AVGPOOL: rc = fwd_pool(p, m, i, training); break;
        case DISTILL_OP_ADD: rc = fwd_add(p, m, i); break;
        case DISTILL_OP_CONCAT: rc = fwd_concat(p, m, i); break;
        case DISTILL_OP_FLATTEN: rc = fwd_flatten(p, m, i); break;
        case DISTILL_OP_DROPOUT:
            rc = fwd_dropout(p, m, i, training);
            if (rc == DISTILL_OK && p->out[i] != p->out[m->nodes[i].inputs[0]])
                dropout_step[i] = p->nsteps - 1;
            break;
        case DISTILL_OP_SOFTMAX: rc = fwd_softmax(p, m, i, training); break;
        default: rc = seterr(DISTILL_EUNSUPPORTED, "node '%s': op %d", m->nodes[i].name,
                             m->nodes[i].op);
        }
    }
    xfree(claim);
    xfree(chains);
    if (rc) {
        xfree(bn_relu);
        xfree(relu_bn);
        xfree(dropout_step);
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
            {
                const node *ni = &m->nodes[i];
                int any = 0;
                for (int k = 0; k < ni->n_inputs; k++)
                    any |= node_wants_grad(m, ni->inputs[k]);
                if (!any && ni->op != DISTILL_OP_CONV2D && ni->op != DISTILL_OP_LINEAR &&
                    ni->op != DISTILL_OP_BATCHNORM)
                    continue; /* only an input gradient nobody asked for */
            }
            switch (m->nodes[i].op) {
            case DISTILL_OP_CONV2D: rc = bwd_conv(p, m, i); break;
            case DISTILL_OP_LINEAR: rc = bwd_linear(p, m, i); break;
            case DISTILL_OP_BATCHNORM: rc = bwd_batchnorm(p, m, i); break;
            case DISTILL_OP_RELU:
            case DISTILL_OP_RELU6:
            case DISTILL_OP_LEAKY_RELU:
            case DISTILL_OP_GELU: rc = bwd_eltwise(p, m, i); break;
            case DISTILL_OP_MAXPOOL:
            case DISTILL_OP_AVGPOOL:
            case DISTILL_OP_GLOBAL_AVGPOOL: rc = bwd_pool(p, m, i); break;
            case DISTILL_OP_ADD: rc = bwd_add(p, m, i); break;
            case DISTILL_OP_CONCAT: rc = bwd_concat(p, m, i); break;
            case DISTILL_OP_FLATTEN: rc = bwd_flatten(p, m, i); break;
            case DISTILL_OP_DROPOUT:
                rc = bwd_dropout(p, m, i, dropout_step[i] >= 0 ? &p->steps[dropout_step[i]] : NULL);
                break;
            case DISTILL_OP_SOFTMAX: rc = bwd_softmax(p, m, i); break;
            default: break;
            }
        }
        p->input_diff = p->diff[0];
    }
    xfree(bn_relu);
    xfree(relu_bn);
    xfree(dropout_step);
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

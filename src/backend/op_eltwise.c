/*
 * op_eltwise.c - relu, relu6, leaky_relu, gelu (erf or tanh): y = f(x)
 * elementwise, dx = f'(.) dy.
 *
 * Shapes: x, y, dy, dx all (N, ...) in the producer's layout.
 */
#include "backend/engine_impl.h"

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

/* y = f(x), (N, ...) in x's layout. */
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

/* Differentiates fwd_eltwise: dx = f'(x) dy (relu, relu6: from y). */
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

const op_impl op_eltwise_impl = {fwd_eltwise, bwd_eltwise, 0};

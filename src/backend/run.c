/*
 * run.c - running plans: the library's own kernel steps (dropout, running
 * BatchNorm statistics, BatchNorm folding, the training BatchNorm of
 * bnorm.h), the step loop, and the public forward, read_node, backward and
 * input_grad calls.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/engine_impl.h"

/* ------------------------------------------------------------ kernels */

static void k_dropout_fwd(plan *p, const step *s)
{
    const float *in = buf_ptr(p, s->b[0]);
    float *mask = buf_ptr(p, s->b[1]), *out = buf_ptr(p, s->b[2]);
    size_t n = p->bufs[s->b[0]].size / sizeof(float);
    float keep = 1.0f - s->f0, scale = 1.0f / keep;
    uint64_t seed = splitmix64_mix(p->dropout_seed ^ ((uint64_t)s->node << 32));
    /* threshold on 24 random bits: same mask whatever the thread count */
    uint32_t thr = (uint32_t)((double)s->f0 * 16777216.0);
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < n; j++) {
        uint32_t r = (uint32_t)(splitmix64_mix(seed + j) >> 40);
        mask[j] = r >= thr ? scale : 0.0f;
        out[j] = in[j] * mask[j];
    }
}

static void k_dropout_bwd(plan *p, const step *s)
{
    const float *dd = buf_ptr(p, s->b[0]), *mask = buf_ptr(p, s->b[1]);
    float *ds = buf_ptr(p, s->b[2]);
    size_t n = p->bufs[s->b[0]].size / sizeof(float);
    if (s->i0) {
#pragma omp parallel for schedule(static)
        for (size_t j = 0; j < n; j++)
            ds[j] += dd[j] * mask[j];
    } else {
#pragma omp parallel for schedule(static)
        for (size_t j = 0; j < n; j++)
            ds[j] = dd[j] * mask[j];
    }
}

static void k_bn_stats(plan *p, distill_model *m, const step *s)
{
    const node *n = &m->nodes[s->node];
    const float *mean = buf_ptr(p, s->b[0]), *var = buf_ptr(p, s->b[1]);
    const param *pm = &m->params[n->param_first + 2], *pv = &m->params[n->param_first + 3];
    float *rm = param_data(m, pm), *rv = param_data(m, pv);
    double count = (double)p->N * (n->rank == 3 ? (double)(n->dims[1] * n->dims[2]) : 1.0);
    double unbias = count > 1 ? count / (count - 1) : 1.0;
    float mom = n->momentum;
    for (int64_t c = 0; c < n->dims[0]; c++) {
        rm[c] = (1.0f - mom) * rm[c] + mom * mean[c];
        rv[c] = (1.0f - mom) * rv[c] + mom * (float)(var[c] * unbias);
    }
}

/* BatchNorm (node s->i0) folded into conv (node s->node): per output channel
 * o, scale = gamma / sqrt(var + eps); W' = W * scale; b' = (b - mean) * scale + beta. */
static void k_fold(plan *p, distill_model *m, const step *s)
{
    const node *c = &m->nodes[s->node], *bn = &m->nodes[s->i0];
    const param *wp = &m->params[c->param_first];
    const float *w = param_data(m, wp);
    const float *cb = c->bias ? param_data(m, &m->params[c->param_first + 1]) : NULL;
    const float *gamma = param_data(m, &m->params[bn->param_first]);
    const float *beta = param_data(m, &m->params[bn->param_first + 1]);
    const float *mean = param_data(m, &m->params[bn->param_first + 2]);
    const float *var = param_data(m, &m->params[bn->param_first + 3]);
    float *fw = buf_ptr(p, s->b[0]), *fb = buf_ptr(p, s->b[1]);
    size_t per = wp->numel / (size_t)c->out_channels;
    for (int o = 0; o < c->out_channels; o++) {
        double sc = (double)gamma[o] / sqrt((double)var[o] + (double)bn->eps);
        for (size_t j = 0; j < per; j++)
            fw[(size_t)o * per + j] = (float)((double)w[(size_t)o * per + j] * sc);
        fb[o] = (float)(((cb ? (double)cb[o] : 0.0) - (double)mean[o]) * sc + (double)beta[o]);
    }
}

static void k_bn_fwd(plan *p, distill_model *m, const step *s)
{
    const node *n = &m->nodes[s->node];
    int src = step_argb(s, DNNL_ARG_SRC);
    bn_view v;
    md_bn_view(&p->bufs[src].md, &v); /* checked when the plan was built */
    bn_forward_train(&v, buf_ptr(p, src), buf_ptr(p, step_argb(s, DNNL_ARG_DST)),
                     param_data(m, &m->params[n->param_first]),
                     param_data(m, &m->params[n->param_first + 1]), n->eps, (int)s->i0,
                     buf_ptr(p, step_argb(s, DNNL_ARG_MEAN)),
                     buf_ptr(p, step_argb(s, DNNL_ARG_VARIANCE)),
                     buf_ptr(p, step_argb(s, DNNL_ARG_WORKSPACE)), p->red);
}

static void k_bn_bwd(plan *p, distill_model *m, const step *s)
{
    const node *n = &m->nodes[s->node];
    int src = step_argb(s, DNNL_ARG_SRC), relu = (int)s->i0;
    bn_view v;
    md_bn_view(&p->bufs[src].md, &v);
    bn_backward(&v, buf_ptr(p, src), buf_ptr(p, step_argb(s, DNNL_ARG_DIFF_DST)),
                buf_ptr(p, step_argb(s, DNNL_ARG_DIFF_SRC)),
                param_data(m, &m->params[n->param_first]),
                buf_ptr(p, step_argb(s, DNNL_ARG_MEAN)),
                buf_ptr(p, step_argb(s, DNNL_ARG_VARIANCE)),
                buf_ptr(p, step_argb(s, DNNL_ARG_WORKSPACE)), n->eps, relu,
                buf_ptr(p, step_argb(s, DNNL_ARG_DIFF_SCALE)),
                buf_ptr(p, step_argb(s, DNNL_ARG_DIFF_SHIFT)), p->red);
}

static int run_steps(plan *p, distill_model *m, int from, int to)
{
    /* serial steps run with one thread (as their primitives were made) */
    int full = omp_get_max_threads(), cur = full;
    for (int k = from; k < to; k++) {
        step *s = &p->steps[k];
        if (s->prep && ((p->prepped && m->frozen) || p->skip_prep))
            continue;
        int want = s->serial ? 1 : full;
        if (want != cur)
            omp_set_num_threads(cur = want);
        switch (s->kind) {
        case K_PRIM: {
            dnnl_status_t st = dnnl_primitive_execute(s->prim, p->stream, s->nargs + 1, s->args);
            if (st != dnnl_success) {
                if (cur != full)
                    omp_set_num_threads(full);
                return seterr(DISTILL_EBACKEND, "'%s': oneDNN execution failed: %s",
                              node_label(m, s->node), dnnl_status2str(st));
            }
            break;
        }
        case K_BN_STATS: k_bn_stats(p, m, s); break;
        case K_DROPOUT_FWD: k_dropout_fwd(p, s); break;
        case K_DROPOUT_BWD: k_dropout_bwd(p, s); break;
        case K_ZERO: memset(buf_ptr(p, s->b[0]), 0, p->bufs[s->b[0]].size); break;
        case K_FOLD: k_fold(p, m, s); break;
        case K_BN_FWD: k_bn_fwd(p, m, s); break;
        case K_BN_BWD: k_bn_bwd(p, m, s); break;
        default: break;
        }
    }
    if (cur != full)
        omp_set_num_threads(full);
    DN(dnnl_stream_wait(p->stream), "stream");
    return DISTILL_OK;
}

/* ------------------------------------------------------------ API */

static int check_batch(const distill_model *m, int node_idx, const distill_tensor *t,
                       const char *what, int64_t N)
{
    const node *n = &m->nodes[node_idx];
    if (t->rank != n->rank + 1)
        return seterr(DISTILL_ESHAPE, "%s for node '%s' has rank %d; expected %d (batch + %s)", what,
                      n->name, t->rank, n->rank + 1, n->rank == 3 ? "C, H, W" : "features");
    if (N >= 0 && t->dims[0] != N)
        return seterr(DISTILL_ESHAPE, "%s for node '%s' has batch %lld; expected %lld", what,
                      n->name, (long long)t->dims[0], (long long)N);
    for (int d = 0; d < n->rank; d++)
        if (t->dims[d + 1] != n->dims[d])
            return seterr(DISTILL_ESHAPE, "%s for node '%s': dim %d is %lld; expected %lld", what,
                          n->name, d + 1, (long long)t->dims[d + 1], (long long)n->dims[d]);
    return DISTILL_OK;
}

static int read_out_(distill_model *m, plan *p, int i, float *dst)
{
    if (!p->read_prim[i]) {
        dnnl_engine_t eng = NULL;
        int rc = engine_get(&eng);
        if (rc)
            return rc;
        dnnl_memory_desc_t pm;
        md_plain(&m->nodes[i], p->N, &pm);
        DN(dnnl_memory_create(&p->read_mem[i], &pm, eng, DNNL_MEMORY_NONE), m->nodes[i].name);
        dnnl_primitive_desc_t pd;
        DN(dnnl_reorder_primitive_desc_create(&pd, &p->bufs[p->out[i]].md, eng, &pm, eng, NULL),
           m->nodes[i].name);
        dnnl_status_t st = dnnl_primitive_create(&p->read_prim[i], pd);
        dnnl_primitive_desc_destroy(pd);
        DN(st, m->nodes[i].name);
    }
    DN(dnnl_memory_set_data_handle(p->read_mem[i], dst), m->nodes[i].name);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, p->bufs[p->out[i]].mem},
                               {DNNL_ARG_TO, p->read_mem[i]}};
    DN(dnnl_primitive_execute(p->read_prim[i], p->stream, 2, args), m->nodes[i].name);
    DN(dnnl_stream_wait(p->stream), m->nodes[i].name);
    return DISTILL_OK;
}

/* Copy node i's output to dst (plain); the output of a serial plan is read
 * on one thread. */
static int read_out(distill_model *m, plan *p, int i, float *dst)
{
    int full = omp_get_max_threads(), one = i == m->output && p->out_serial && full > 1;
    if (one)
        omp_set_num_threads(1);
    int rc = read_out_(m, p, i, dst);
    if (one)
        omp_set_num_threads(full);
    return rc;
}

/* Inference micro-batches: the largest power of two whose biggest
 * activation fits CHUNK_BYTES (about a core's L2), at least CHUNK_MIN. */
#define CHUNK_BYTES ((int64_t)2 << 20)
#define CHUNK_MIN 16

static int64_t chunk_size(const distill_model *m)
{
    int64_t biggest = 1;
    for (int i = 0; i < m->n_nodes; i++) {
        const node *n = &m->nodes[i];
        int64_t e = 1;
        for (int d = 0; d < n->rank; d++)
            e *= n->dims[d];
        if (e > biggest)
            biggest = e;
    }
    int64_t c = CHUNK_MIN;
    while (c * 2 * biggest * (int64_t)sizeof(float) <= CHUNK_BYTES)
        c *= 2;
    return c;
}

/* Only the output is readable after an inference forward: the batch may be
 * split into micro-batches. */
static int chunkable(const distill_model *m)
{
    if (m->keep_all)
        return 0;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].keep && i != m->output)
            return 0;
    return 1;
}

static int64_t per_image(const node *n)
{
    int64_t e = 1;
    for (int d = 0; d < n->rank; d++)
        e *= n->dims[d];
    return e;
}

static int forward_chunked(distill_model *m, engine_state *es, const distill_tensor *input,
                           int64_t chunk, distill_tensor *output)
{
    int64_t N = input->dims[0], in_e = per_image(&m->nodes[0]),
            out_e = per_image(&m->nodes[m->output]);
    es->last_plan = NULL;
    /* the weights cannot change within one call: a plan prepares them for
     * its first micro-batch only */
    uint64_t call = ++es->calls;
    for (int64_t off = 0; off < N; off += chunk) {
        int64_t nc = N - off < chunk ? N - off : chunk;
        plan *p;
        int rc = get_plan(m, nc, 0, &p);
        if (rc)
            return rc;
        float *x = input->data + off * in_e;
        DN(dnnl_memory_set_data_handle(p->bufs[p->input_ext].mem, x), "input");
        p->bufs[p->input_ext].ext = x;
        p->have_backward = 0;
        p->have_forward = 0;
        p->skip_prep = p->prep_call == call;
        rc = run_steps(p, m, 0, p->fwd_end);
        p->skip_prep = 0;
        if (rc)
            return rc;
        p->prepped = 1;
        p->prep_call = call;
        if ((rc = read_out(m, p, m->output, output->data + off * out_e)))
            return rc;
    }
    es->last_chunked = 1;
    return DISTILL_OK;
}

int distill_model_forward(distill_model *m, const distill_tensor *input, int mode,
                          distill_tensor *output)
{
    if (!m || !input)
        return seterr(DISTILL_EINVAL, "distill_model_forward: NULL argument");
    if (mode != DISTILL_MODE_INFERENCE && mode != DISTILL_MODE_TRAINING)
        return seterr(DISTILL_EINVAL, "distill_model_forward: unknown mode %d", mode);
    int rc = check_batch(m, 0, input, "input", -1);
    if (rc)
        return rc;
    int64_t N = input->dims[0];
    if (output && (rc = check_batch(m, m->output, output, "output tensor", N)))
        return rc;
    engine_state *es;
    if ((rc = engine_state_get(m, &es)))
        return rc;
    es->last_chunked = 0;
    if (mode == DISTILL_MODE_INFERENCE && output && chunkable(m)) {
        int64_t chunk = chunk_size(m);
        if (N >= 2 * chunk)
            return forward_chunked(m, es, input, chunk, output);
    }
    plan *p;
    if ((rc = get_plan(m, N, mode == DISTILL_MODE_TRAINING, &p)))
        return rc;
    es->last_plan = NULL;
    DN(dnnl_memory_set_data_handle(p->bufs[p->input_ext].mem, input->data), "input");
    p->bufs[p->input_ext].ext = input->data; /* for the library's own kernels */
    if (mode == DISTILL_MODE_TRAINING) /* inference draws nothing: it has no dropout */
        p->dropout_seed = rng_next(&m->rng);
    p->have_backward = 0;
    if ((rc = run_steps(p, m, 0, p->fwd_end)))
        return rc;
    p->prepped = 1;
    p->have_forward = 1;
    es->last_plan = p;
    if (output && (rc = read_out(m, p, m->output, output->data)))
        return rc;
    return DISTILL_OK;
}

int distill_model_read_node(distill_model *m, const char *name, distill_tensor *dst)
{
    if (!m || !name || !dst)
        return seterr(DISTILL_EINVAL, "distill_model_read_node: NULL argument");
    int i = model_find(m, name);
    if (i < 0)
        return seterr(DISTILL_ENOTFOUND, "read_node: no node named '%s'", name);
    plan *p = m->engine ? m->engine->last_plan : NULL;
    if (!p && m->engine && m->engine->last_chunked)
        return seterr(DISTILL_ESTATE, "read_node '%s': the last forward wrote the output to its "
                                      "output tensor only (a large inference batch runs in "
                                      "micro-batches unless a node is kept)",
                      name);
    if (!p || !p->have_forward)
        return seterr(DISTILL_ESTATE, "read_node '%s': no forward has run since the model last "
                                      "changed",
                      name);
    if (!node_kept(m, i) || p->out[i] < 0)
        return seterr(DISTILL_ESTATE, "read_node '%s': the node is not kept; call "
                                      "distill_model_keep_node() before forward",
                      name);
    int rc = check_batch(m, i, dst, "read_node tensor", p->N);
    if (rc)
        return rc;
    return read_out(m, p, i, dst->data);
}

int distill_model_backward(distill_model *m, int n, const char *const *names,
                           const distill_tensor *const *grads)
{
    if (!m || n < 0 || (n > 0 && (!names || !grads)))
        return seterr(DISTILL_EINVAL, "distill_model_backward: bad arguments");
    plan *p = m->engine ? m->engine->last_plan : NULL;
    if (!p || !p->have_forward || !p->training)
        return seterr(DISTILL_ESTATE, "backward: no training-mode forward has run since the "
                                      "model last changed");
    if (p->have_backward)
        return seterr(DISTILL_ESTATE, "backward: already run for this forward (run forward "
                                      "again)");
    int nn = m->n_nodes;
    char *given = xcalloc((size_t)nn, 1);
    if (!given)
        return DISTILL_ENOMEM;
    int rc = DISTILL_OK;
    for (int k = 0; k < n; k++) {
        if (!names[k] || !grads[k]) {
            rc = seterr(DISTILL_EINVAL, "backward: entry %d is NULL", k);
            break;
        }
        int i = model_find(m, names[k]);
        if (i < 0) {
            rc = seterr(DISTILL_ENOTFOUND, "backward: no node named '%s'", names[k]);
            break;
        }
        if (p->inj[i] < 0) {
            rc = seterr(DISTILL_ESTATE, "backward: node '%s' is not kept; call "
                                        "distill_model_keep_node() before forward to send it a "
                                        "gradient",
                        names[k]);
            break;
        }
        if (given[i]) {
            rc = seterr(DISTILL_EINVAL, "backward: node '%s' is named twice", names[k]);
            break;
        }
        if ((rc = check_batch(m, i, grads[k], "gradient", p->N)))
            break;
        given[i] = 1;
        DN(dnnl_memory_set_data_handle(p->bufs[p->inj[i]].mem, grads[k]->data), names[k]);
    }
    if (rc) {
        xfree(given);
        return rc;
    }
    /* run the backward steps; an injection that was not given contributes
     * zero: its copy step is skipped (or, if it starts the buffer, zeroes) */
    for (int k = p->fwd_end; k < p->nsteps && rc == DISTILL_OK; k++) {
        step *s = &p->steps[k];
        int node_i = s->node;
        if (node_i >= 0 && p->inj_step[node_i] == k && !given[node_i]) {
            /* not given: contributes zero; a copy that starts the buffer
             * must still clear it */
            if (!s->i0)
                memset(buf_ptr(p, s->argb[1]), 0, p->bufs[s->argb[1]].size);
            continue;
        }
        rc = run_steps(p, m, k, k + 1);
    }
    xfree(given);
    if (rc)
        return rc;
    p->have_backward = 1;
    return DISTILL_OK;
}

int distill_model_input_grad(distill_model *m, distill_tensor *dst)
{
    if (!m || !dst)
        return seterr(DISTILL_EINVAL, "distill_model_input_grad: NULL argument");
    plan *p = m->engine ? m->engine->last_plan : NULL;
    if (!p || !p->have_backward)
        return seterr(DISTILL_ESTATE, "input_grad: no backward has run since the last forward");
    int rc = check_batch(m, 0, dst, "input gradient", p->N);
    if (rc)
        return rc;
    if (!node_kept(m, 0))
        return seterr(DISTILL_ESTATE, "input_grad: keep the input node '%s' "
                                      "(distill_model_keep_node) before forward to get its "
                                      "gradient",
                      m->nodes[0].name);
    if (p->input_diff < 0) {
        memset(dst->data, 0, dst->numel * sizeof(float));
        return DISTILL_OK;
    }
    /* the input's gradient is in the input's layout (plain) */
    const buf *b = &p->bufs[p->input_diff];
    if (b->size != dst->numel * sizeof(float))
        return seterr(DISTILL_EBACKEND, "input_grad: unexpected layout");
    memcpy(dst->data, buf_ptr(p, p->input_diff), b->size);
    return DISTILL_OK;
}

/*
 * plan.c - the pieces a plan is made of: the CPU engine, buffers, steps,
 * primitive creation, layout helpers, and the gradient contributions that
 * backward builders share.  See engine_impl.h for the overall design.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend/engine_impl.h"

/* ------------------------------------------------------------ engine */

static dnnl_engine_t g_engine;
static dnnl_status_t g_engine_status = dnnl_success;
static pthread_once_t g_engine_once = PTHREAD_ONCE_INIT;

static void engine_init_once(void)
{
    g_engine_status = dnnl_engine_create(&g_engine, dnnl_cpu, 0);
}

int engine_get(dnnl_engine_t *e)
{
    pthread_once(&g_engine_once, engine_init_once);
    if (g_engine_status != dnnl_success)
        return seterr(DISTILL_EBACKEND, "oneDNN: cannot create the CPU engine: %s",
                      dnnl_status2str(g_engine_status));
    *e = g_engine;
    return DISTILL_OK;
}

/* ------------------------------------------------------------ buffers and steps */

int buf_new(plan *p, const dnnl_memory_desc_t *md_in, int kind, void *ext, int *id)
{
    /* md_in may point into p->bufs, which the realloc below can move */
    dnnl_memory_desc_t md_copy = *md_in;
    const dnnl_memory_desc_t *md = &md_copy;
    if (p->nbufs == p->capbufs) {
        int cap = p->capbufs ? p->capbufs * 2 : 64;
        buf *nb = xrealloc(p->bufs, (size_t)cap * sizeof *nb);
        if (!nb)
            return DISTILL_ENOMEM;
        p->bufs = nb;
        p->capbufs = cap;
    }
    buf *b = &p->bufs[p->nbufs];
    memset(b, 0, sizeof *b);
    b->md = *md;
    b->size = dnnl_memory_desc_get_size(md);
    b->kind = kind;
    b->alias = -1;
    b->ext = ext;
    b->first = -1;
    b->last = -1;
    *id = p->nbufs++;
    return DISTILL_OK;
}

int buf_view(plan *p, int of, const dnnl_memory_desc_t *md, int *id)
{
    while (p->bufs[of].alias >= 0)
        of = p->bufs[of].alias;
    int rc = buf_new(p, md, p->bufs[of].kind, p->bufs[of].ext, id);
    if (rc)
        return rc;
    p->bufs[*id].alias = of;
    return DISTILL_OK;
}

int buf_root(const plan *p, int id)
{
    while (p->bufs[id].alias >= 0)
        id = p->bufs[id].alias;
    return id;
}

int step_new(plan *p, int kind, int node, step **out)
{
    if (p->nsteps == p->capsteps) {
        int cap = p->capsteps ? p->capsteps * 2 : 64;
        step *ns = xrealloc(p->steps, (size_t)cap * sizeof *ns);
        if (!ns)
            return DISTILL_ENOMEM;
        p->steps = ns;
        p->capsteps = cap;
    }
    step *s = &p->steps[p->nsteps++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->node = node;
    s->b[0] = s->b[1] = s->b[2] = s->b[3] = -1;
    *out = s;
    return DISTILL_OK;
}

void step_arg(plan *p, step *s, int kind, int b)
{
    s->argk[s->nargs] = kind;
    s->argb[s->nargs] = b;
    s->nargs++;
    buf_use(p, b, (int)(s - p->steps));
}

void step_buf(plan *p, step *s, int slot, int b)
{
    s->b[slot] = b;
    buf_use(p, b, (int)(s - p->steps));
}

int step_argb(const step *s, int kind)
{
    for (int a = 0; a < s->nargs; a++)
        if (s->argk[a] == kind)
            return s->argb[a];
    return -1;
}

int node_kept(const distill_model *m, int i)
{
    return m->keep_all || m->nodes[i].keep || i == m->output;
}

/* Does backward compute the gradient of node x's output?  Every node but
 * the input; the input only when it is kept (it costs a backward-data pass
 * of the first layer, which training does not need). */
int node_wants_grad(const distill_model *m, int x)
{
    return x != 0 || node_kept(m, 0);
}

const char *node_label(const distill_model *m, int i)
{
    return i >= 0 ? m->nodes[i].name : "(plan)";
}

/* ------------------------------------------------------------ primitives */

/* Create a primitive descriptor (user scratchpad, optional post-ops). */
int pd_make(plan *p, const distill_model *m, int node, const op_desc *od,
            const_dnnl_primitive_desc_t hint, const_dnnl_post_ops_t post,
            dnnl_primitive_desc_t *out)
{
    dnnl_engine_t eng = NULL;
    int rc = engine_get(&eng);
    if (rc)
        return rc;
    dnnl_primitive_attr_t attr;
    DN(dnnl_primitive_attr_create(&attr), node_label(m, node));
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (post)
        dnnl_primitive_attr_set_post_ops(attr, post);
    dnnl_status_t st = pd_create(out, od, attr, eng, hint);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success)
        return seterr(DISTILL_EBACKEND, "%s '%s': oneDNN has no implementation for this shape: %s",
                      node >= 0 ? distill_op_name(m->nodes[node].op) : "plan", node_label(m, node),
                      dnnl_status2str(st));
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(*out, dnnl_query_scratchpad_md, 0);
    if (sp && dnnl_memory_desc_get_size(sp) > p->scratch_size)
        p->scratch_size = dnnl_memory_desc_get_size(sp);
    return DISTILL_OK;
}

/* Append a step running the primitive of `pd`; the step takes ownership of
 * pd (even on failure). */
int prim_add(plan *p, const distill_model *m, int node, dnnl_primitive_desc_t pd,
             step **out)
{
    step *s;
    int rc = step_new(p, K_PRIM, node, &s);
    if (rc) {
        dnnl_primitive_desc_destroy(pd);
        return rc;
    }
    s->pd = pd;
    dnnl_status_t st = dnnl_primitive_create(&s->prim, pd);
    if (st != dnnl_success)
        return seterr(DISTILL_EBACKEND, "'%s': oneDNN primitive creation failed: %s",
                      node_label(m, node), dnnl_status2str(st));
    *out = s;
    return DISTILL_OK;
}

int prim_step(plan *p, const distill_model *m, int node, const op_desc *od,
              const_dnnl_primitive_desc_t hint, const_dnnl_post_ops_t post, step **out)
{
    dnnl_primitive_desc_t pd;
    int rc = pd_make(p, m, node, od, hint, post, &pd);
    return rc ? rc : prim_add(p, m, node, pd, out);
}

const dnnl_memory_desc_t *pd_md(const_dnnl_primitive_desc_t pd, dnnl_query_t what, int idx)
{
    return dnnl_primitive_desc_query_md(pd, what, idx);
}

const dnnl_memory_desc_t *step_md(const step *s, dnnl_query_t what, int idx)
{
    return dnnl_primitive_desc_query_md(s->pd, what, idx);
}

/* A reorder step src -> dst (optionally accumulating: dst += src). */
int reorder_step(plan *p, const distill_model *m, int node, int src, int dst, int accumulate)
{
    dnnl_engine_t eng = NULL;
    int rc = engine_get(&eng);
    if (rc)
        return rc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (accumulate) {
        DN(dnnl_primitive_attr_create(&attr), node_label(m, node));
        DN(dnnl_post_ops_create(&po), node_label(m, node));
        po_sum(po);
        dnnl_primitive_attr_set_post_ops(attr, po);
        dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, &p->bufs[src].md, eng,
                                                          &p->bufs[dst].md, eng, attr);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success)
        return seterr(DISTILL_EBACKEND, "'%s': oneDNN reorder failed: %s", node_label(m, node),
                      dnnl_status2str(st));
    step *s;
    if ((rc = step_new(p, K_PRIM, node, &s))) {
        dnnl_primitive_desc_destroy(pd);
        return rc;
    }
    s->pd = pd;
    st = dnnl_primitive_create(&s->prim, pd);
    if (st != dnnl_success)
        return seterr(DISTILL_EBACKEND, "'%s': oneDNN reorder creation failed: %s",
                      node_label(m, node), dnnl_status2str(st));
    s->i0 = accumulate;
    step_arg(p, s, DNNL_ARG_FROM, src);
    step_arg(p, s, DNNL_ARG_TO, dst);
    return DISTILL_OK;
}

int binary_add_step(plan *p, const distill_model *m, int node, int a, int b, int dst)
{
    op_desc d;
    DN(desc_binary(&d, dnnl_binary_add, &p->bufs[a].md, &p->bufs[b].md,
                             &p->bufs[dst].md),
       node_label(m, node));
    step *s;
    int rc = prim_step(p, m, node, &d, NULL, NULL, &s);
    if (rc)
        return rc;
    step_arg(p, s, DNNL_ARG_SRC_0, a);
    step_arg(p, s, DNNL_ARG_SRC_1, b);
    step_arg(p, s, DNNL_ARG_DST, dst);
    return DISTILL_OK;
}

/* ------------------------------------------------------------ layouts */

/* Plain (row-major) md for a node's batch tensor. */
void md_plain(const node *n, int64_t N, dnnl_memory_desc_t *md)
{
    dnnl_dims_t d;
    if (n->rank == 3) {
        d[0] = N, d[1] = n->dims[0], d[2] = n->dims[1], d[3] = n->dims[2];
        md_make(md, 4, d, dnnl_nchw);
    } else {
        d[0] = N, d[1] = n->dims[0];
        md_make(md, 2, d, dnnl_nc);
    }
}

void md_any(const node *n, int64_t N, dnnl_memory_desc_t *md)
{
    dnnl_dims_t d;
    if (n->rank == 3) {
        d[0] = N, d[1] = n->dims[0], d[2] = n->dims[1], d[3] = n->dims[2];
        md_make(md, 4, d, dnnl_format_tag_any);
    } else {
        d[0] = N, d[1] = n->dims[0];
        md_make(md, 2, d, dnnl_format_tag_any);
    }
}

/* External plain memory over a parameter tensor (data, grad or stats). */
int param_buf(plan *p, distill_model *m, int pi, int grad, int *id)
{
    const param *pr = &m->params[pi];
    dnnl_memory_desc_t md;
    dnnl_dims_t d;
    for (int k = 0; k < pr->rank; k++)
        d[k] = pr->dims[k];
    static const dnnl_format_tag_t tags[5] = {dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc,
                                              dnnl_abcd};
    md_make(&md, pr->rank, d, tags[pr->rank]);
    float *ptr = grad ? param_grad(m, pr) : param_data(m, pr);
    return buf_new(p, &md, BUF_EXTERNAL, ptr, id);
}

/* Buffer b, a weight tensor in the model's plain (O, I/G, kH, kW) layout, as
 * the weights of a primitive whose weight descriptor is w: for a grouped
 * conv, oneDNN's 5-D (G, O/G, I/G, kH, kW) view of the same memory; else b. */
int grouped_view(plan *p, int b, const dnnl_memory_desc_t *w, int *out)
{
    if (w->ndims != 5) {
        *out = b;
        return DISTILL_OK;
    }
    dnnl_memory_desc_t plain5;
    md_make(&plain5, 5, w->dims, dnnl_abcde);
    return buf_view(p, b, &plain5, out);
}

/* Buffer holding node x's output in layout `want`: the output itself if it
 * matches, else a converted copy made right after x is computed. */
int as_layout(plan *p, const distill_model *m, int x, const dnnl_memory_desc_t *want,
              int *id)
{
    int have = p->out[x];
    if (dnnl_memory_desc_equal(&p->bufs[have].md, want)) {
        *id = have;
        return DISTILL_OK;
    }
    int rc = buf_new(p, want, BUF_ARENA, NULL, id);
    if (rc)
        return rc;
    return reorder_step(p, m, x, have, *id, 0);
}

/* Weights for a primitive: the plain parameter if its layout matches, else a
 * buffer converted at the start of each pass (weights change every step). */
int weights_for(plan *p, distill_model *m, int node, int pi,
                const dnnl_memory_desc_t *want, int *id)
{
    int ext, rc = param_buf(p, m, pi, 0, &ext);
    if (rc)
        return rc;
    if ((rc = grouped_view(p, ext, want, &ext)))
        return rc;
    if (dnnl_memory_desc_equal(&p->bufs[ext].md, want)) {
        *id = ext;
        return DISTILL_OK;
    }
    if ((rc = buf_new(p, want, BUF_ARENA, NULL, id)) || (rc = reorder_step(p, m, node, ext, *id, 0)))
        return rc;
    p->steps[p->nsteps - 1].prep = 1;
    return DISTILL_OK;
}

/* A buffer holding `buf` in layout `want`: buf itself, or a new buffer
 * filled by a reorder step appended now. */
int in_layout(plan *p, const distill_model *m, int node, int buf,
              const dnnl_memory_desc_t *want, int *out)
{
    if (dnnl_memory_desc_equal(want, &p->bufs[buf].md)) {
        *out = buf;
        return DISTILL_OK;
    }
    int rc = buf_new(p, want, BUF_ARENA, NULL, out);
    return rc ? rc : reorder_step(p, m, node, buf, *out, 0);
}

/* ------------------------------------------------------------ gradient contributions */

int contrib_begin(plan *p, int x, contrib *c)
{
    const dnnl_memory_desc_t *md = &p->bufs[p->out[x]].md;
    int rc;
    if (p->diff[x] < 0) {
        if ((rc = buf_new(p, md, BUF_ARENA, NULL, &p->diff[x])))
            return rc;
        c->target = p->diff[x];
        c->add = 0;
    } else {
        if ((rc = buf_new(p, md, BUF_ARENA, NULL, &c->target)))
            return rc;
        c->add = 1;
    }
    return DISTILL_OK;
}

int contrib_end(plan *p, const distill_model *m, int node, int x, const contrib *c)
{
    if (!c->add)
        return DISTILL_OK;
    return binary_add_step(p, m, node, p->diff[x], c->target, p->diff[x]);
}

/* A contribution that is a plain copy of buffer src (a reorder): accumulate
 * with the reorder's sum post-op instead of a temporary. */
int contrib_copy(plan *p, const distill_model *m, int node, int x, int src)
{
    int rc;
    if (p->diff[x] < 0) {
        if ((rc = buf_new(p, &p->bufs[p->out[x]].md, BUF_ARENA, NULL, &p->diff[x])))
            return rc;
        return reorder_step(p, m, node, src, p->diff[x], 0);
    }
    return reorder_step(p, m, node, src, p->diff[x], 1);
}

/* Accumulate a parameter gradient computed into `tmp` into the model's
 * gradient block (parameter pi). */
int grad_accumulate(plan *p, distill_model *m, int node, int pi, int tmp)
{
    int g, rc = param_buf(p, m, pi, 1, &g);
    if (rc)
        return rc;
    return reorder_step(p, m, node, tmp, g, 1);
}

/* ------------------------------------------------------------ freeing */

static void plan_free_reads(plan *p)
{
    int n_nodes = p->n_nodes;
    if (p->read_prim) {
        for (int i = 0; i < n_nodes; i++)
            if (p->read_prim[i])
                dnnl_primitive_destroy(p->read_prim[i]);
        xfree(p->read_prim);
    }
    if (p->read_mem) {
        for (int i = 0; i < n_nodes; i++)
            if (p->read_mem[i])
                dnnl_memory_destroy(p->read_mem[i]);
        xfree(p->read_mem);
    }
    p->read_prim = NULL;
    p->read_mem = NULL;
}

void plan_free(plan *p)
{
    if (!p)
        return;
    for (int s = 0; s < p->nsteps; s++) {
        if (p->steps[s].prim)
            dnnl_primitive_destroy(p->steps[s].prim);
        if (p->steps[s].pd)
            dnnl_primitive_desc_destroy(p->steps[s].pd);
    }
    for (int b = 0; b < p->nbufs; b++)
        if (p->bufs[b].mem)
            dnnl_memory_destroy(p->bufs[b].mem);
    plan_free_reads(p);
    if (p->scratch_mem)
        dnnl_memory_destroy(p->scratch_mem);
    if (p->stream)
        dnnl_stream_destroy(p->stream);
    xfree_aligned(p->arena);
    xfree_aligned(p->scratch);
    xfree(p->red);
    xfree(p->bufs);
    xfree(p->steps);
    xfree(p->out);
    xfree(p->diff);
    xfree(p->inj);
    xfree(p->inj_step);
    xfree(p->fwd_pd);
    xfree(p);
}

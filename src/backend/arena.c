/*
 * arena.c - memory planning: buffer lifetimes (the span of steps using
 * each), offsets in one arena shared by buffers whose lifetimes do not
 * overlap, and binding every buffer to its memory once the plan is built.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/engine_impl.h"

void buf_use(plan *p, int id, int at)
{
    buf *b = &p->bufs[buf_root(p, id)];
    if (b->first < 0 || at < b->first)
        b->first = at;
    if (at > b->last)
        b->last = at;
}

void arena_extend_lifetimes(plan *p, const distill_model *m, const char *needed)
{
    /* kept outputs, injected gradients and the input gradient live to the
     * end; so do converted weights (used forward and backward) */
    for (int i = 0; i < m->n_nodes; i++)
        if (needed[i] && node_kept(m, i) && p->out[i] >= 0) {
            buf_use(p, p->out[i], 0);
            buf_use(p, p->out[i], p->nsteps);
        }
    if (p->input_diff >= 0)
        buf_use(p, p->input_diff, p->nsteps);
    for (int s = 0; s < p->fwd_end; s++) {
        step *st = &p->steps[s];
        for (int a = 0; a < st->nargs; a++)
            if (st->argk[a] == DNNL_ARG_WEIGHTS || st->argk[a] == DNNL_ARG_BIAS || st->prep) {
                buf_use(p, st->argb[a], 0);
                buf_use(p, st->argb[a], p->nsteps);
            }
        for (int k = 0; k < 4 && st->prep; k++)
            if (st->b[k] >= 0) {
                buf_use(p, st->b[k], 0);
                buf_use(p, st->b[k], p->nsteps);
            }
    }
}

/* Assign arena offsets: buffers whose step spans overlap may not overlap in
 * memory; greedy by decreasing size, lowest offset that fits. */
typedef struct span {
    int id;
    size_t size;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->size != y->size)
        return x->size < y->size ? 1 : -1;
    return x->id - y->id;
}

typedef struct placed {
    size_t lo, hi;
} placed;

static int cmp_placed(const void *a, const void *b)
{
    const placed *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int assign_offsets(plan *p)
{
    span *order = xmalloc((size_t)(p->nbufs + 1) * sizeof *order);
    placed *tmp = xmalloc((size_t)(p->nbufs + 1) * sizeof *tmp);
    int *done = xmalloc((size_t)(p->nbufs + 1) * sizeof *done);
    if (!order || !tmp || !done) {
        xfree(order);
        xfree(tmp);
        xfree(done);
        return DISTILL_ENOMEM;
    }
    int n = 0;
    for (int b = 0; b < p->nbufs; b++) {
        buf *bb = &p->bufs[b];
        if (bb->kind != BUF_ARENA || bb->alias >= 0 || bb->first < 0)
            continue;
        order[n].id = b;
        order[n].size = (bb->size + 63) & ~(size_t)63;
        n++;
    }
    qsort(order, (size_t)n, sizeof *order, cmp_span);
    size_t total = 0;
    int ndone = 0;
    for (int k = 0; k < n; k++) {
        buf *bb = &p->bufs[order[k].id];
        int nt = 0;
        for (int j = 0; j < ndone; j++) {
            buf *o = &p->bufs[done[j]];
            if (o->first <= bb->last && bb->first <= o->last) {
                tmp[nt].lo = o->offset;
                tmp[nt].hi = o->offset + ((o->size + 63) & ~(size_t)63);
                nt++;
            }
        }
        qsort(tmp, (size_t)nt, sizeof *tmp, cmp_placed);
        size_t at = 0;
        for (int j = 0; j < nt; j++) {
            if (tmp[j].lo >= at + order[k].size)
                break;
            if (tmp[j].hi > at)
                at = tmp[j].hi;
        }
        bb->offset = at;
        if (at + order[k].size > total)
            total = at + order[k].size;
        done[ndone++] = order[k].id;
    }
    p->arena_size = total;
    xfree(order);
    xfree(tmp);
    xfree(done);
    return DISTILL_OK;
}

void *buf_ptr(const plan *p, int id)
{
    const buf *r = &p->bufs[buf_root(p, id)];
    if (r->kind == BUF_EXTERNAL)
        return r->ext;
    return (char *)p->arena + r->offset;
}

int arena_bind(plan *p, const distill_model *m)
{
    dnnl_engine_t eng = NULL;
    int rc = engine_get(&eng);
    if (rc || (rc = assign_offsets(p)))
        return rc;
    if (p->arena_size && !(p->arena = xmalloc_aligned(p->arena_size)))
        return DISTILL_ENOMEM;
    if (p->arena_size)
        memset(p->arena, 0, p->arena_size);
    if (p->scratch_size && !(p->scratch = xmalloc_aligned(p->scratch_size)))
        return DISTILL_ENOMEM;
    if (p->red_size && !(p->red = xmalloc(p->red_size * sizeof *p->red)))
        return DISTILL_ENOMEM;
    dnnl_memory_desc_t smd;
    md_bytes(&smd, p->scratch_size ? p->scratch_size : 1);
    DN(dnnl_memory_create(&p->scratch_mem, &smd, eng, p->scratch ? p->scratch : DNNL_MEMORY_NONE),
       "plan");
    for (int b = 0; b < p->nbufs; b++) {
        void *ptr = buf_ptr(p, b);
        DN(dnnl_memory_create(&p->bufs[b].mem, &p->bufs[b].md, eng,
                              ptr ? ptr : DNNL_MEMORY_NONE),
           "plan");
    }
    for (int s = 0; s < p->nsteps; s++) {
        step *st = &p->steps[s];
        if (st->kind != K_PRIM)
            continue;
        for (int a = 0; a < st->nargs; a++) {
            st->args[a].arg = st->argk[a];
            st->args[a].memory = p->bufs[st->argb[a]].mem;
        }
        st->args[st->nargs].arg = DNNL_ARG_SCRATCHPAD;
        st->args[st->nargs].memory = p->scratch_mem;
    }
    DN(dnnl_stream_create(&p->stream, eng, dnnl_stream_default_flags), "plan");
    p->read_prim = xcalloc((size_t)m->n_nodes, sizeof *p->read_prim);
    p->read_mem = xcalloc((size_t)m->n_nodes, sizeof *p->read_mem);
    if (!p->read_prim || !p->read_mem)
        return DISTILL_ENOMEM;
    return DISTILL_OK;
}

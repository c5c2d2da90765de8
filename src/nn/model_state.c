/*
 * model_state.c - save and restore of a model's BatchNorm statistics and
 * dropout generator, and the layout and snapshot accessors checkpoints use
 * (see model_state.h).  The only file of the trainer's concerns that sees the
 * graph's internals.
 */
#include <string.h>

#include "nn/graph.h"
#include "nn/model_state.h"

int model_state_save(const distill_model *m, model_state *st)
{
    size_t n = m->n_sdata;
    if (n > st->cap) {
        float *p = xmalloc(n * sizeof *p);
        if (!p)
            return DISTILL_ENOMEM;
        xfree(st->stats);
        st->stats = p;
        st->cap = n;
    }
    if (n)
        memcpy(st->stats, m->sdata, n * sizeof(float));
    st->n_stats = n;
    model_rng_get(m, st->rng);
    return DISTILL_OK;
}

void model_state_restore(distill_model *m, const model_state *st)
{
    if (st->n_stats)
        memcpy(m->sdata, st->stats, st->n_stats * sizeof(float));
    model_rng_set(m, st->rng);
}

void model_state_free(model_state *st)
{
    xfree(st->stats);
    memset(st, 0, sizeof *st);
}

void model_rng_get(const distill_model *m, uint64_t s[4])
{
    for (int k = 0; k < 4; k++)
        s[k] = m->rng.s[k];
}

void model_rng_set(distill_model *m, const uint64_t s[4])
{
    for (int k = 0; k < 4; k++)
        m->rng.s[k] = s[k];
}

void model_rng_seed(distill_model *m, uint64_t seed)
{
    rng_seed(&m->rng, seed);
}

size_t model_param_floats(const distill_model *m)
{
    return m->n_pdata;
}

size_t model_stat_floats(const distill_model *m)
{
    return m->n_sdata;
}

int model_param_tensors(const distill_model *m)
{
    return m->n_params;
}

const char *model_param_tensor_name(const distill_model *m, int k)
{
    return m->params[k].name;
}

void model_copy_values(distill_model *dst, const distill_model *src)
{
    memcpy(dst->pdata, src->pdata, dst->n_pdata * sizeof(float));
    memcpy(dst->sdata, src->sdata, dst->n_sdata * sizeof(float));
}

int model_snapshot(const distill_model *m, void **data, size_t *size)
{
    return model_serialize(m, data, size);
}

int model_from_snapshot(distill_model **out, const void *data, size_t size)
{
    return model_deserialize(out, data, size);
}

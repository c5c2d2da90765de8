/*
 * model_state.h - a model's mutable state other than its weights, for the
 * trainer: the BatchNorm running statistics and the dropout generator that
 * a training forward changes (saved before a step, put back if the step is
 * refused or skipped), and the few accessors that checkpoints need to
 * write, check and load a model's state without the graph's internals.
 */
#ifndef DISTILL_MODEL_STATE_H
#define DISTILL_MODEL_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "distill/model.h"

/* A saved copy of a model's statistics and generator.  Zero-initialize it
 * before the first save; its buffer is reused by later saves. */
typedef struct model_state {
    float *stats;           /* the BatchNorm statistics, n_stats floats (owned) */
    size_t n_stats, cap;
    uint64_t rng[4];        /* the dropout generator */
} model_state;

/* Copy m's statistics and generator into st.  DISTILL_ENOMEM leaves st as
 * it was. */
int model_state_save(const distill_model *m, model_state *st);
/* Put back what model_state_save(m, st) saved. */
void model_state_restore(distill_model *m, const model_state *st);
/* Free st's buffer and zero it; accepts a zeroed state. */
void model_state_free(model_state *st);

/* The dropout generator alone: read, write, seed. */
void model_rng_get(const distill_model *m, uint64_t s[4]);
void model_rng_set(distill_model *m, const uint64_t s[4]);
void model_rng_seed(distill_model *m, uint64_t seed);

/* The layout a checkpoint checks: floats in the parameter block and in the
 * statistics block, and the parameter tensors' count and names (borrowed). */
size_t model_param_floats(const distill_model *m);
size_t model_stat_floats(const distill_model *m);
int model_param_tensors(const distill_model *m);
const char *model_param_tensor_name(const distill_model *m, int k);

/* Copy src's parameters and statistics into dst, which has the same layout
 * (checked by the caller with the accessors above). */
void model_copy_values(distill_model *dst, const distill_model *src);

/* The whole model (graph, weights, statistics) as in a model file, into a
 * buffer the caller frees with xfree, and back into a new model the caller
 * frees; model_io.c's format. */
int model_snapshot(const distill_model *m, void **data, size_t *size);
int model_from_snapshot(distill_model **out, const void *data, size_t size);

#endif /* DISTILL_MODEL_STATE_H */

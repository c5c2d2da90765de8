/*
 * optim_internal.h - what checkpoints and the trainer need from the
 * optimizer beyond the public API (include/distill/optim.h).
 */
#ifndef DISTILL_OPTIM_INTERNAL_H
#define DISTILL_OPTIM_INTERNAL_H

#include <stddef.h>

#include "distill/optim.h"

/*
 * The state block: n_buffers * (length of the model's parameter block)
 * floats, buffer b of parameter element i at [b * n + i].  SGD with momentum
 * has one buffer (momentum), Adam and AdamW two (first, second moment), SGD
 * without momentum none (NULL, *count 0).  Borrowed from the optimizer.
 */
float *optim_state_block(distill_optimizer *opt, size_t *count);

/*
 * Serialize the state into a new buffer (xmalloc'd; the caller xfree's it)
 * in the format of distill_optimizer_save_state().
 */
int optim_serialize(const distill_optimizer *opt, void **data, size_t *size);

/* Restore state written by optim_serialize(); as distill_optimizer_load_state(). */
int optim_deserialize(distill_optimizer *opt, const void *data, size_t size);

#endif /* DISTILL_OPTIM_INTERNAL_H */

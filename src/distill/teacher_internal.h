/* teacher_internal.h - what the trainer needs of a teacher beyond the API. */
#ifndef DISTILL_TEACHER_INTERNAL_H
#define DISTILL_TEACHER_INTERNAL_H

#include "distill/trainer.h"

/* Declare a tap on teacher node `name` and give its per-image shape.
 * Returns its index for teacher_tap(), DISTILL_ENOTFOUND, or
 * DISTILL_EUNSUPPORTED (ensembles). */
int teacher_add_tap(distill_teacher *t, const char *name, int *rank, int64_t dims[3], int *index);
/* The tap's value from the last distill_teacher_forward (borrowed). */
const distill_tensor *teacher_tap(const distill_teacher *t, int index);

/* Cached teachers (teacher.c). */
int teacher_is_cache(const distill_teacher *t);
/* Check that a cache fits a training run over `ds` with these options
 * (augmentation, transforms, normalization). */
int teacher_cache_check(const distill_teacher *t, const distill_dataset *ds,
                        const distill_trainer_options *o);
/* Logits of n samples given their dataset positions and views. */
int teacher_cache_lookup(const distill_teacher *t, int64_t n, const int64_t *index,
                         const int32_t *view, distill_tensor *logits);
/* The cache's storage, owned by the teacher (teacher.c calls these). */
typedef struct tcache tcache;
void tcache_free(tcache *c);

#endif

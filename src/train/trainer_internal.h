/*
 * trainer_internal.h - what the trainer's files share: the trainer itself
 * (its loss terms, student taps and adapters, logits buffers, step count
 * and data position) and the few helpers more than one of them calls.
 *
 *   trainer.c             options, create/free, losses, taps and adapters
 *   trainer_step.c        one optimizer step: zero_grad -> forward -> loss
 *                         -> backward -> update
 *   trainer_fit.c         epochs over a dataset, the schedule, progress
 *   trainer_eval.c        distill_evaluate
 *   trainer_checkpoint.c  exact save and resume
 */
#ifndef DISTILL_TRAINER_INTERNAL_H
#define DISTILL_TRAINER_INTERNAL_H

#include "data/data_internal.h"
#include "distill/teacher_internal.h"
#include "nn/model_state.h"
#include "tensor_internal.h"
#include "util/container.h"

#define MAX_LOSSES 16

typedef struct term {
    distill_loss *loss;
    float weight;
    int stap;                /* index into tr->staps, or -1 */
    int ttap;                /* teacher tap index, or -1 */
    distill_model *adapter;  /* owned, or NULL */
    distill_optimizer *adapter_opt;
    distill_tensor *a_feat;  /* adapter output (N, teacher dims) */
    distill_tensor *a_grad;  /* loss gradient w.r.t. a_feat */
    distill_tensor *f_grad;  /* loss gradient w.r.t. the student tap (no adapter) */
    distill_tensor *i_grad;  /* adapter's input gradient (student tap shape) */
    model_state backup;      /* the adapter's BatchNorm statistics and generator before a
                                step */
} term;

typedef struct stap {          /* a tapped student node */
    char *node;
    int rank;
    int64_t dims[3];
    distill_tensor *value;     /* (N, dims) */
    distill_tensor *grad;      /* summed gradient from every loss on it */
} stap;

struct distill_trainer {
    distill_model *student;
    distill_teacher *teacher;
    distill_trainer_options o;
    distill_optimizer *opt;
    distill_schedule_options sched;
    int classes;

    term terms[MAX_LOSSES];
    int n_terms;
    stap staps[MAX_LOSSES];
    int n_staps;
    const char *term_names[MAX_LOSSES];
    double term_values[MAX_LOSSES];

    distill_tensor *s_logits, *t_logits, *g_logits, *g_tmp;
    model_state backup;        /* the student's BatchNorm statistics and generator before a
                                  step */

    int64_t step;              /* optimizer steps done */
    int64_t skipped;
    uint64_t data_epoch, data_pos; /* where the data resumes */
    int64_t total_steps;
    /* a cached teacher: the dataset positions and views of the batch */
    const int64_t *batch_index;
    const int32_t *batch_view;
};

/* trainer.c */
/* Check a normalization (count 0..4, std positive and finite); `what` starts
 * the message. */
int trainer_check_norm(int count, const float *mean, const float *std, const char *what);
/* Add the default loss (KD with a teacher, cross-entropy without) if none
 * was added. */
int trainer_ensure_default_loss(distill_trainer *tr);

/* trainer_step.c */
/* Set a tensor's batch dimension to n. */
int trainer_reshape_n(distill_tensor *t, int64_t n);
/* Set the learning-rate schedule up for `total` optimizer steps. */
void trainer_setup_schedule(distill_trainer *tr, int64_t total);
/* One optimizer step on a batch; labels may be NULL.  A refused step
 * changes nothing; a skipped one (skip_nonfinite) sets *loss_out to NaN. */
int trainer_train_step(distill_trainer *tr, const distill_tensor *images, const int32_t *labels,
                       double *loss_out, double *lr_out);

/* trainer_fit.c */
/* Hand a normalization to loader options (pointers into the caller's arrays). */
void trainer_norm_to_loader(distill_loader_options *lo, int count, const float *mean,
                            const float *std);

#endif /* DISTILL_TRAINER_INTERNAL_H */

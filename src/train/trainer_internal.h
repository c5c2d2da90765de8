/*
 * trainer_internal.h - what the trainer's files share: the trainer itself
 * (its loss terms, student taps and adapters, logits buffers, step count
 * and data position) and the few helpers more than one of them calls.
 *
 *   student.c             students: their losses, taps and adapters, the
 *                         mutual-learning term
 *   trainer.c             options, create/free, the single-student calls
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

/* A student (student.c): a model, the losses that train it with their taps
 * and adapters, and -- while a trainer holds it -- its optimizer and the
 * buffers of a step.  The student-side parts of a loss (the tapped node)
 * are resolved when the loss is added; the teacher-side parts (the teacher
 * tap, the adapter) and the buffers when a trainer takes the student
 * (student_bind), and released when it lets it go (student_unbind). */
struct distill_student {
    distill_model *model;       /* borrowed */
    distill_trainer *trainer;   /* the trainer holding it, or NULL */
    int owned;                  /* made by distill_trainer_create, freed with the trainer */
    distill_optimizer *opt;

    term terms[MAX_LOSSES];
    int n_terms;
    stap staps[MAX_LOSSES];
    int n_staps;
    const char *term_names[MAX_LOSSES + 1];  /* the losses, then "mutual" */
    double term_values[MAX_LOSSES + 1];
    double loss;                /* the weighted total of the last step */
    double val_accuracy;        /* after the last epoch with validation data; else -1 */

    distill_tensor *s_logits, *g_logits, *g_tmp;
    model_state backup;         /* BatchNorm statistics and generator before a step */
};

#define MAX_STUDENTS 16

struct distill_trainer {
    distill_student *students[MAX_STUDENTS];
    int n_students;
    distill_model *student;    /* students[0]->model */
    distill_teacher *teacher;
    distill_trainer_options o;
    distill_mutual_options mutual;
    distill_schedule_options sched;
    int classes;

    /* the progress report's terms: a single student's own, or every
     * student's prefixed "sK." */
    int n_report;
    const char *report_names[MAX_STUDENTS * (MAX_LOSSES + 1)];
    double report_values[MAX_STUDENTS * (MAX_LOSSES + 1)];
    char report_buf[MAX_STUDENTS * (MAX_LOSSES + 1)][40];
    double student_losses[MAX_STUDENTS];
    double student_accuracies[MAX_STUDENTS];

    distill_tensor *t_logits;

    int64_t step;              /* optimizer steps done */
    int64_t skipped;
    uint64_t data_epoch, data_pos; /* where the data resumes */
    int64_t total_steps;
    /* a cached teacher: the dataset positions and views of the batch */
    const int64_t *batch_index;
    const int32_t *batch_view;
};

/* student.c */
/* Take `s` into `tr`: its optimizer (from tr's options), buffers, and the
 * teacher side of its losses.  On failure the student is as it was. */
int student_bind(distill_trainer *tr, distill_student *s);
/* Release what student_bind made; the student keeps its model and losses. */
void student_unbind(distill_student *s);
/* Add the default loss (KD with a teacher, cross-entropy without) if the
 * student has none. */
int student_ensure_default_loss(distill_student *s, const distill_teacher *teacher);
/* An optimizer for `m` from the run's options. */
int trainer_make_optimizer(distill_model *m, const distill_trainer_options *o,
                           distill_optimizer **out);
/*
 * The mutual-learning term of student k among S students' logits (each
 * (n, C)): T^2 times the batch mean of (1/(S-1)) sum_{j != k}
 * KL(softmax(z_j/T) || softmax(z_k/T)) into *loss; when grad is not NULL,
 * its gradient with respect to z_k times `scale` is added into grad (n, C).
 * The other students' logits are constants (detached).
 */
int mutual_loss(int S, int k, int64_t n, int C, const float *const *logits, double T,
                double scale, double *loss, float *grad);

/* trainer.c */
/* Check a normalization (count 0..4, std positive and finite); `what` starts
 * the message. */
int trainer_check_norm(int count, const float *mean, const float *std, const char *what);
/* Add the default loss to every student that has none. */
int trainer_ensure_default_loss(distill_trainer *tr);
/* Every student's losses need labels / not: the first that needs them, or NULL. */
const char *trainer_loss_needing_labels(const distill_trainer *tr);

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

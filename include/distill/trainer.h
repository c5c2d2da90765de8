/*
 * distill/trainer.h - teachers, the training loop, evaluation, checkpoints
 * and the compression report.
 *
 * Supervised training and distillation run in the same loop: a trainer
 * holds one or more students (a model with its weighted losses and its
 * optimizer), an optional teacher and a learning-rate schedule.  Each step
 * is
 *
 *     zero_grad -> teacher forward -> student forward -> losses -> backward -> update
 *
 *     distill_teacher *t;
 *     distill_teacher_from_model(&t, teacher_model);
 *     distill_trainer_options o;
 *     distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION);
 *     o.epochs = 3;
 *     distill_trainer *tr;
 *     distill_trainer_create(&tr, student, t, &o);
 *     distill_loss *kd;
 *     distill_loss_kd(&kd, 4.0f, 0.9f);
 *     distill_trainer_add_loss(tr, kd, 1.0f);      // the trainer owns kd now
 *     distill_trainer_fit(tr, train_set, test_set);
 *
 * Without losses, a trainer uses cross-entropy (no teacher) or
 * kd:T=4,alpha=0.9 (with a teacher).
 *
 * Determinism: the same seed, data and thread count give bit-identical
 * weights; a run resumed from a checkpoint continues exactly as if it had
 * not stopped.
 */
#ifndef DISTILL_TRAINER_H
#define DISTILL_TRAINER_H

#include "distill/common.h"
#include "distill/data.h"
#include "distill/loss.h"
#include "distill/model.h"
#include "distill/optim.h"
#include "distill/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- teacher */

typedef struct distill_teacher distill_teacher;

/**
 * A frozen teacher made from a copy of `model` (the caller keeps and may
 * free its model).  It runs in inference mode; its logits equal the
 * model's inference forward.  *out belongs to the caller.
 */
DISTILL_API int distill_teacher_from_model(distill_teacher **out, const distill_model *model);

#define DISTILL_TEACHER_CALLBACK_VERSION DISTILL_STRUCT_VERSION(distill_teacher_callback, destroy)

/** A teacher computed by the host's own engine. */
typedef struct distill_teacher_callback {
    unsigned int version; /**< DISTILL_TEACHER_CALLBACK_VERSION */
    int classes;          /**< logits per sample */
    /**
     * Compute logits (n, classes) for images (n, C, H, W), and each
     * requested tap: taps[k] must be filled with the feature of node
     * tap_names[k], shaped (n, per-image dims from tap_shape).  Return
     * DISTILL_OK or a negative status.
     */
    int (*forward)(const distill_tensor *images, distill_tensor *logits, int n_taps,
                   const char *const *tap_names, distill_tensor *const *taps, void *payload);
    /**
     * Per-image shape of tap `name` (rank 1 or 3 in *rank, dims in dims);
     * DISTILL_ENOTFOUND if the host has no such tap.  May be NULL (no taps).
     */
    int (*tap_shape)(const char *name, int *rank, int64_t dims[3], void *payload);
    void *payload;
    void (*destroy)(void *payload); /**< called when the teacher is freed; may be NULL */
} distill_teacher_callback;

#define DISTILL_TEACHER_CALLBACK_INIT {DISTILL_TEACHER_CALLBACK_VERSION, 0, NULL, NULL, NULL, NULL}

/** A teacher backed by host callbacks (the struct is copied). */
DISTILL_API int distill_teacher_from_callback(distill_teacher **out,
                                              const distill_teacher_callback *cb);

/**
 * A weighted ensemble: logits are sum_k w_k * logits_k / sum_k w_k (weights
 * NULL: equal).  The ensemble borrows the n teachers; they must outlive it.
 * All must have the same number of classes.  Ensembles do not provide taps.
 */
DISTILL_API int distill_teacher_ensemble(distill_teacher **out, int n,
                                         distill_teacher *const *teachers, const float *weights);

#define DISTILL_CACHE_OPTIONS_VERSION DISTILL_STRUCT_VERSION(distill_cache_options, center_crop)

/** How a teacher cache is made: the augmentation and normalization of the
 *  training run that will use it (they must match that run's options). */
typedef struct distill_cache_options {
    unsigned int version; /**< DISTILL_CACHE_OPTIONS_VERSION */
    int crop_padding;     /**< as distill_trainer_options.crop_padding; 0 */
    int hflip;            /**< as distill_trainer_options.hflip; 0 */
    int norm_count;       /**< as distill_trainer_options; 0 */
    float mean[4];
    float std[4];
    int batch_size;       /**< teacher batch while building; 256 */
    /** Resize and CenterCrop before the views, as distill_trainer_options
     *  (recorded in the cache and checked against the run).  There is no
     *  RandomResizedCrop here: its boxes are drawn from a continuum and
     *  cannot be enumerated, so a run with one cannot use a cache. */
    int resize;
    int center_crop[2];
} distill_cache_options;

#define DISTILL_CACHE_OPTIONS_INIT \
    {DISTILL_CACHE_OPTIONS_VERSION, 0, 0, 0, {0, 0, 0, 0}, {1, 1, 1, 1}, 256, 0, {0, 0}}

DISTILL_API int distill_cache_options_init(distill_cache_options *opts, unsigned int version);

/**
 * Run `teacher` on every sample of `ds` through every augmentation view the
 * options allow -- (2P + 1)^2 crop offsets, times 2 with flips -- and write
 * the logits to `path` (atomically).  A trainer fed from this cache gets
 * exactly the logits the online teacher would give for each augmented
 * sample, at the cost of a student-only step.  The file holds samples x
 * views x classes floats (Fashion-MNIST with the e2e recipe: 60000 x 50 x 10,
 * 120 MB).  Errors: DISTILL_EIO, DISTILL_EUNSUPPORTED (a cached teacher).
 */
DISTILL_API int distill_teacher_cache_build(distill_teacher *teacher, const distill_dataset *ds,
                                            const distill_cache_options *opts, const char *path);

/**
 * A teacher that reads its logits from a cache made by
 * distill_teacher_cache_build() (loaded into memory).  It works only inside
 * distill_trainer_fit() on the dataset the cache was made for, with the
 * same crop_padding, hflip and normalization (checked: DISTILL_EINVAL);
 * distill_teacher_forward() and distill_trainer_step() refuse it
 * (DISTILL_EUNSUPPORTED).  It provides no taps.  A corrupt file gives
 * DISTILL_EFORMAT.  *out belongs to the caller.
 */
DISTILL_API int distill_teacher_from_cache(distill_teacher **out, const char *path);

/** Free a teacher.  Accepts NULL. */
DISTILL_API void distill_teacher_free(distill_teacher *t);

/** Logits per sample. */
DISTILL_API int distill_teacher_classes(const distill_teacher *t);

/**
 * Compute the teacher's logits for a batch: logits must be (n, classes).
 * Taps declared by losses are computed too and read by the trainer.
 */
DISTILL_API int distill_teacher_forward(distill_teacher *t, const distill_tensor *images,
                                        distill_tensor *logits);

/* ---------------------------------------------------------------- trainer */

typedef struct distill_trainer distill_trainer;

#define DISTILL_PROGRESS_VERSION DISTILL_STRUCT_VERSION(distill_progress, student_val_accuracy)

/**
 * What the progress callback is told.  The library fills it in and sets
 * version to its own DISTILL_PROGRESS_VERSION: a callback built against a
 * newer header checks DISTILL_HAS_FIELD(p, distill_progress, field) before
 * it reads a field added after 0.1.0.
 */
typedef struct distill_progress {
    unsigned int version;   /**< the library's DISTILL_PROGRESS_VERSION */
    int epoch;              /**< 1-based current epoch */
    int epochs;
    int64_t step;           /**< steps done since the start of training */
    int64_t total_steps;
    double loss;            /**< total loss of the last step */
    double lr;              /**< learning rate of the last step */
    double images_per_sec;  /**< training throughput over the last reporting interval;
                                 at the end of an epoch, over the epoch's steps (the
                                 evaluation excluded) */
    double eta_seconds;     /**< estimate for the remaining steps */
    int n_terms;            /**< the losses, each unweighted, of the last step */
    const char *const *term_names;
    const double *term_values;
    int end_of_epoch;       /**< nonzero on the call made after each epoch */
    double val_accuracy;    /**< on end_of_epoch calls with a validation set; else -1 */
    int64_t skipped_steps;  /**< batches skipped for non-finite values so far */
    /** The trainer's students (1 unless it was made by
     *  distill_trainer_create_students).  With several, `loss` is the sum of
     *  their totals, `val_accuracy` the first student's, and the terms are
     *  every student's, named "s1.ce", "s1.mutual", "s2.ce", ... */
    int n_students;
    const double *student_loss;          /**< (n_students) each one's total loss */
    const double *student_val_accuracy;  /**< (n_students) as val_accuracy, each one's */
} distill_progress;

/** Return nonzero to stop training (the fit returns DISTILL_ECANCELLED). */
typedef int (*distill_progress_fn)(const distill_progress *p, void *payload);

#define DISTILL_TRAINER_OPTIONS_VERSION DISTILL_STRUCT_VERSION(distill_trainer_options, no_decay_bn_bias)

typedef struct distill_trainer_options {
    unsigned int version;  /**< DISTILL_TRAINER_OPTIONS_VERSION */
    int epochs;            /**< 1 */
    int batch_size;        /**< 128 */
    double lr;             /**< peak learning rate; 0.1 */
    double momentum;       /**< SGD momentum; 0.9 */
    int nesterov;          /**< 1 */
    double weight_decay;   /**< 5e-4 */
    int schedule;          /**< distill_schedule_kind for the run; DISTILL_SCHEDULE_COSINE */
    int64_t warmup_steps;  /**< 0 */
    uint64_t seed;         /**< shuffling, augmentation, dropout; 0 */
    int crop_padding;      /**< random crop of the zero-padded image (pixels); 0 = off */
    int hflip;             /**< random horizontal flip with p = 0.5; 0 */
    int norm_count;        /**< 0 (none), 1 (all channels) or C */
    float mean[4];         /**< per-channel normalization applied to every batch */
    float std[4];
    int skip_nonfinite;    /**< 0: a non-finite loss fails the step; 1: skip the batch */
    int prefetch;          /**< prepare the next batch in a background thread; 1 */
    int64_t steps_per_epoch; /**< 0: one pass over the data; else this many batches */
    distill_progress_fn progress;
    void *progress_payload;
    int progress_every;    /**< steps between progress calls; 50 */
    int64_t max_steps;     /**< 0: no limit; else fit stops (DISTILL_OK) after this many
                                steps in all, e.g. to save a checkpoint and resume later */
    /* torchvision-style transforms, as in distill_loader_options.  As in
     * torchvision's recipes: training batches use random_resized_crop when it
     * is set (on the stored samples; resize and center_crop are then not
     * applied to them), else resize and center_crop; the validation set
     * always uses resize and center_crop.  Both must give the student's
     * input size.  A teacher cache cannot serve a random_resized_crop run
     * (its boxes cannot be enumerated): DISTILL_EINVAL. */
    int resize;                 /**< Resize, shorter side; 0 = off */
    int center_crop[2];         /**< CenterCrop {H, W}; {0, 0} = off */
    int random_resized_crop[2]; /**< RandomResizedCrop {H, W}; {0, 0} = off */
    float rrc_scale[2];         /**< {0, 0} = {0.08, 1} */
    float rrc_ratio[2];         /**< {0, 0} = {3/4, 4/3} */
    int workers;                /**< loader threads (distill_loader_options.workers); 0 */
    /* the optimizer the trainer makes for the student (and for the adapters
     * of feature losses), as distill_optimizer_options */
    double max_grad_norm;  /**< > 0: clip the gradients' global L2 norm to this, per model
                                (student, each adapter), as torch's clip_grad_norm_; 0 = off */
    int no_decay_bn_bias;  /**< nonzero: no weight decay on biases and BatchNorm scale and
                                shift; 0 */
} distill_trainer_options;

#define DISTILL_TRAINER_OPTIONS_INIT                                                  \
    {DISTILL_TRAINER_OPTIONS_VERSION, 1, 128, 0.1, 0.9, 1, 5e-4, 2 /* cosine */, 0, 0, 0, 0, \
     0, {0, 0, 0, 0}, {1, 1, 1, 1}, 0, 1, 0, NULL, NULL, 50, 0, 0, {0, 0}, {0, 0},      \
     {0.0f, 0.0f}, {0.0f, 0.0f}, 0, 0.0, 0}

DISTILL_API int distill_trainer_options_init(distill_trainer_options *opts, unsigned int version);

/* ---------------------------------------------------------------- student */

/**
 * A student: a trainable model with the losses that train it and, while a
 * trainer holds it, its optimizer state and the adapters of its feature
 * losses.  The learning-rate schedule is the trainer's: every student of a
 * trainer takes the same steps.  One trainer can hold several students
 * (online distillation, distill_trainer_create_students()).
 *
 *     distill_student *s[2];
 *     distill_student_create(&s[0], model_a);
 *     distill_student_create(&s[1], model_b);
 *     distill_trainer_create_students(&tr, 2, s, NULL, &o, NULL);   // deep mutual learning
 *     distill_trainer_fit(tr, train, val);
 *     distill_trainer_free(tr);
 *     distill_student_free(s[0]), distill_student_free(s[1]);
 */
typedef struct distill_student distill_student;

/**
 * Make a student of `model` (borrowed: it must outlive the student; a
 * trainer updates its weights in place).  *out belongs to the caller.
 */
DISTILL_API int distill_student_create(distill_student **out, distill_model *model);

/** Free a student and the losses it owns (not its model).  Accepts NULL.
 *  A student must not be freed while a trainer holds it. */
DISTILL_API void distill_student_free(distill_student *s);

/** The student's model (borrowed). */
DISTILL_API distill_model *distill_student_model(const distill_student *s);

/**
 * Add a loss term with a weight to the student.  The student takes
 * ownership of `loss`, also when the call fails.  A student tap is
 * resolved here (DISTILL_ENOTFOUND for an unknown node); the teacher tap
 * and the adapter (when the shapes differ) when a trainer takes the
 * student, or here if one holds it already.  A student given no loss gets
 * cross-entropy (no teacher) or kd:T=4,alpha=0.9 (with a teacher).
 */
DISTILL_API int distill_student_add_loss(distill_student *s, distill_loss *loss, float weight);

#define DISTILL_MUTUAL_OPTIONS_VERSION DISTILL_STRUCT_VERSION(distill_mutual_options, temperature)

/**
 * Online distillation between the students of one trainer: deep mutual
 * learning (Zhang et al., 2018).  On each batch every student's loss is its
 * own terms (cross-entropy by default; KD too with a teacher) plus
 *
 *     weight * T^2 * 1/(S-1) * sum_{j != k} KL(softmax(z_j / T) || softmax(z_k / T))
 *
 * over the other students' logits z_j of the same batch, which are
 * constants for student k (detached).  All students run their forward on
 * the batch, then all update together.
 */
typedef struct distill_mutual_options {
    unsigned int version; /**< DISTILL_MUTUAL_OPTIONS_VERSION */
    float weight;         /**< weight of the mutual term; 1 (0: students train side by side) */
    float temperature;    /**< T of the mutual term; 1 */
} distill_mutual_options;

#define DISTILL_MUTUAL_OPTIONS_INIT {DISTILL_MUTUAL_OPTIONS_VERSION, 1.0f, 1.0f}

DISTILL_API int distill_mutual_options_init(distill_mutual_options *opts, unsigned int version);

/**
 * Create a trainer for `n` students (1 to 16; borrowed: they must outlive
 * the trainer, and a student is held by one trainer at a time), all with the
 * same input shape and number of classes, and an optional frozen `teacher`
 * (borrowed; its classes must match; NULL for none).  With two or more
 * students they learn from each other as `mutual` says (NULL: defaults).
 * Each student gets its optimizer from `opts`.  Errors: DISTILL_EINVAL
 * (n out of range, a NULL or repeated student, one held by another
 * trainer, a loss that needs a teacher without one), DISTILL_ESHAPE
 * (classes or input shapes that differ), DISTILL_ENOTFOUND (a teacher
 * tap); the students are then as they were.  *out belongs to the caller.
 */
DISTILL_API int distill_trainer_create_students(distill_trainer **out, int n,
                                                distill_student *const *students,
                                                distill_teacher *teacher,
                                                const distill_trainer_options *opts,
                                                const distill_mutual_options *mutual);

/** The trainer's number of students. */
DISTILL_API int distill_trainer_num_students(const distill_trainer *tr);

/** The trainer's student k (borrowed; for a trainer made by
 *  distill_trainer_create, the trainer's own student of its model). */
DISTILL_API distill_student *distill_trainer_student(const distill_trainer *tr, int k);

/**
 * Create a trainer for one `student` model (borrowed: it must outlive the
 * trainer; its weights are updated in place) with an optional `teacher`
 * (borrowed; NULL for supervised training): a trainer of one student that
 * it makes and frees itself, as distill_student_create() and
 * distill_trainer_create_students(out, 1, ...).  *out belongs to the caller.
 */
DISTILL_API int distill_trainer_create(distill_trainer **out, distill_model *student,
                                       distill_teacher *teacher,
                                       const distill_trainer_options *opts);

/** Free a trainer (and the losses it owns).  Accepts NULL. */
DISTILL_API void distill_trainer_free(distill_trainer *tr);

/**
 * Add a loss term with a weight to a trainer's only student (see
 * distill_student_add_loss).  The trainer takes ownership of `loss`, also
 * when the call fails.  Feature losses' taps are resolved here:
 * DISTILL_ENOTFOUND for an unknown node, and an adapter is created when
 * the shapes differ.  A trainer of several students refuses
 * (DISTILL_EINVAL): add to each student.
 */
DISTILL_API int distill_trainer_add_loss(distill_trainer *tr, distill_loss *loss, float weight);

/** Replace the optimizer settings of every student (the run's lr/momentum/decay fields
 *  are overridden). */
DISTILL_API int distill_trainer_set_optimizer(distill_trainer *tr,
                                              const distill_optimizer_options *opts);

/**
 * Train for the configured epochs on `train` (labels needed unless every
 * loss works without them), evaluating every student on `val` (may be
 * NULL) after each epoch.  Resumes where a loaded checkpoint left off.
 */
DISTILL_API int distill_trainer_fit(distill_trainer *tr, const distill_dataset *train,
                                    const distill_dataset *val);

/**
 * One step on a prepared batch: images (n, C, H, W) already normalized,
 * labels (n) or NULL.  *loss receives the weighted total (may be NULL).
 * On DISTILL_ENONFINITE the weights are left as they were.
 */
DISTILL_API int distill_trainer_step(distill_trainer *tr, const distill_tensor *images,
                                     const int32_t *labels, double *loss);

/**
 * The number of optimizer updates this trainer has made to the student,
 * by distill_trainer_fit() and distill_trainer_step() alike, including
 * those restored from a checkpoint (distill_trainer_load_checkpoint sets
 * it to the checkpoint's count).  A batch skipped for non-finite values
 * (skip_nonfinite) or a step that failed is not counted: it updated
 * nothing (the skipped ones are distill_progress::skipped_steps).  It is
 * the step the learning-rate schedule is at, the count max_steps limits,
 * and distill_progress::step.  0 for NULL.
 */
DISTILL_API int64_t distill_trainer_steps_done(const distill_trainer *tr);

/**
 * Write the full training state (every student's weights, statistics,
 * optimizer state and adapters, the schedule position, data order and
 * position, RNG) atomically to `path`
 * (temporary file, sync, rename; see distill_model_save).  Safe to call
 * from the progress callback during a fit.
 */
DISTILL_API int distill_trainer_save_checkpoint(const distill_trainer *tr, const char *path);

/**
 * Restore a checkpoint written for the same architecture and number of
 * students; the next fit continues exactly where it stopped.
 * DISTILL_EFORMAT for a corrupt file, another architecture or another
 * number of students (the trainer is then unchanged).
 */
DISTILL_API int distill_trainer_load_checkpoint(distill_trainer *tr, const char *path);

/* ------------------------------------------------------------- evaluation */

#define DISTILL_EVAL_OPTIONS_VERSION DISTILL_STRUCT_VERSION(distill_eval_options, workers)

typedef struct distill_eval_options {
    unsigned int version; /**< DISTILL_EVAL_OPTIONS_VERSION */
    int batch_size;       /**< 256 */
    int norm_count;       /**< as in distill_trainer_options */
    float mean[4];
    float std[4];
    int64_t *confusion;   /**< optional classes x classes counts (row: true class) */
    distill_teacher *agreement; /**< optional: measure top-1 agreement with this teacher */
    int resize;           /**< Resize, shorter side (distill_loader_options); 0 = off */
    int center_crop[2];   /**< CenterCrop {H, W}; {0, 0} = off */
    int workers;          /**< loader threads (distill_loader_options.workers); 0 */
} distill_eval_options;

#define DISTILL_EVAL_OPTIONS_INIT \
    {DISTILL_EVAL_OPTIONS_VERSION, 256, 0, {0, 0, 0, 0}, {1, 1, 1, 1}, NULL, NULL, 0, {0, 0}, 0}

DISTILL_API int distill_eval_options_init(distill_eval_options *opts, unsigned int version);

#define DISTILL_EVAL_RESULT_VERSION DISTILL_STRUCT_VERSION(distill_eval_result, agreement)

/** What an evaluation measured.  The caller sets version (DISTILL_EVAL_RESULT_INIT). */
typedef struct distill_eval_result {
    unsigned int version; /**< DISTILL_EVAL_RESULT_VERSION */
    int64_t count;     /**< samples evaluated */
    double loss;       /**< mean cross-entropy (labelled data) */
    double top1, top5; /**< accuracies in [0, 1] (labelled data) */
    double agreement;  /**< top-1 agreement with opts->agreement, or -1 */
} distill_eval_result;

#define DISTILL_EVAL_RESULT_INIT {DISTILL_EVAL_RESULT_VERSION, 0, 0.0, 0.0, 0.0, 0.0}

/**
 * Evaluate `model` in inference mode on `ds`, into *res, whose version the
 * caller has set (DISTILL_EVAL_RESULT_INIT); the library fills the fields
 * that version has.  opts NULL means DISTILL_EVAL_OPTIONS_INIT.
 * Errors: DISTILL_EINVAL, DISTILL_EVERSION (opts or res), DISTILL_ESHAPE
 * (the data does not fit the model), and those of the forward pass.
 */
DISTILL_API int distill_evaluate(distill_model *model, const distill_dataset *ds,
                                 const distill_eval_options *opts, distill_eval_result *res);

/**
 * Evaluate a teacher on `ds` as distill_evaluate() evaluates a model: the
 * teacher's logits (distill_teacher_forward, so a callback teacher's host
 * engine or an ensemble) give the loss, top-1 and top-5 accuracy of
 * labelled data, and the agreement with opts->agreement when set.  A
 * cached teacher cannot be evaluated (DISTILL_EUNSUPPORTED): its logits
 * exist only for the augmented views of a training run.  Samples must have
 * the shape the teacher expects (a model teacher checks it: DISTILL_ESHAPE).
 * Errors as distill_evaluate(), and the status a callback returns.
 */
DISTILL_API int distill_evaluate_teacher(distill_teacher *teacher, const distill_dataset *ds,
                                         const distill_eval_options *opts,
                                         distill_eval_result *res);

/* ---------------------------------------------------- compression report */

#define DISTILL_REPORT_SIDE_VERSION DISTILL_STRUCT_VERSION(distill_report_side, accuracy)

/** One model's figures in a report.  The caller sets version (DISTILL_REPORT_SIDE_INIT). */
typedef struct distill_report_side {
    unsigned int version;   /**< DISTILL_REPORT_SIDE_VERSION */
    int64_t params;         /**< trainable scalars */
    int64_t file_bytes;     /**< bytes of the saved model */
    int64_t macs;           /**< multiply-adds per image */
    double latency_bs1_us;  /**< median latency of one image, microseconds */
    double latency_bsN_us;  /**< median latency of a batch of batch_n images */
    double images_per_sec;  /**< at batch_n */
    double accuracy;        /**< top-1 on the dataset, or -1 without labels */
} distill_report_side;

#define DISTILL_REPORT_SIDE_INIT {DISTILL_REPORT_SIDE_VERSION, 0, 0, 0, 0.0, 0.0, 0.0, 0.0}

#define DISTILL_REPORT_VERSION DISTILL_STRUCT_VERSION(distill_report, threads)

/**
 * What a comparison measured besides each model's figures.  The two sides
 * are separate structs (not members) so that each can grow on its own.
 * The caller sets version (DISTILL_REPORT_INIT).
 */
typedef struct distill_report {
    unsigned int version;   /**< DISTILL_REPORT_VERSION */
    int batch_n;            /**< the batch size of latency_bsN_us */
    double agreement;       /**< teacher-student top-1 agreement on the dataset, or -1 */
    int threads;            /**< compute threads of the calling thread */
} distill_report;

#define DISTILL_REPORT_INIT {DISTILL_REPORT_VERSION, 0, 0.0, 0}

/**
 * Measure teacher and student side by side on `ds` (normalized with
 * opts' mean/std; opts may be NULL; ds may be NULL: no accuracy, agreement
 * -1) at batch 1 and batch_n (128 if 0): each model's figures into
 * *teacher_side and *student_side, the comparison into *out.  The caller
 * sets the version of all three (DISTILL_REPORT_INIT,
 * DISTILL_REPORT_SIDE_INIT); the library fills the fields those versions
 * have.  Errors: DISTILL_EINVAL (NULL model or out-pointer),
 * DISTILL_EVERSION, and those of distill_evaluate().
 */
DISTILL_API int distill_report_compare(distill_model *teacher, distill_model *student,
                                       const distill_dataset *ds,
                                       const distill_eval_options *opts, int batch_n,
                                       distill_report *out, distill_report_side *teacher_side,
                                       distill_report_side *student_side);

#ifdef __cplusplus
}
#endif

#endif /* DISTILL_TRAINER_H */

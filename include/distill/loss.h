/*
 * distill/loss.h - distillation objectives.
 *
 * A distill_loss turns one batch of student outputs (logits and, for
 * feature losses, one tapped feature map) and teacher outputs into a scalar
 * and its gradients with respect to the student's outputs.  The trainer
 * takes any weighted sum of losses and reports every term per step.
 *
 * Built-in losses (PyTorch conventions; every value is a mean over the batch):
 *   cross-entropy     CE with optional label smoothing
 *   kd                Hinton: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE
 *   dkd               decoupled KD (Zhao et al. 2022): alpha * TCKD + beta * NCKD, times T^2
 *   kd/dkd with ls    the same on standardized logits (Sun et al. 2024)
 *   dist              DIST (Huang et al. 2022): 1 - Pearson correlation of the
 *                     softened predictions, per sample (inter) and per class (intra)
 *   mlkd              multi-level logit KD (Jin et al. 2023): instance, batch and
 *                     class alignment over temperatures 2..6
 *   fitnets           MSE between the (adapted) student feature and the teacher feature
 *   at                attention transfer (Zagoruyko & Komodakis): (q_s - q_t)^2, mean
 *                     over batch and positions, of L2-normalized spatial maps
 *                     q = normalize(mean_c f^p), as RepDistiller (f.pow(p): equal to
 *                     the paper's |f|^p for even p and for non-negative features)
 *   sp                similarity-preserving (Tung & Mori): || G_s - G_t ||_F^2 / b^2 of
 *                     row-normalized batch Gram matrices
 *   rkd               relational KD (Park et al.): distance and angle terms with smooth L1
 *   pkt               probabilistic knowledge transfer (Passalis & Tefas): KL between
 *                     cosine-similarity distributions
 *
 * Feature losses name one student node and one teacher node (the taps).
 * When the two shapes differ, the trainer inserts an adapter (1x1 conv for
 * feature maps, linear for vectors) sized from the two shapes and trained
 * with the student; the loss then sees the adapted student feature.
 *
 * A host loss plugs in through distill_loss_vtable, exactly like a built-in:
 *
 *     static int my_forward(const distill_loss_batch *b, double *loss,
 *                           distill_loss_grads *g, void *payload) { ... }
 *     static const distill_loss_vtable vt = {DISTILL_LOSS_VTABLE_VERSION, "mine",
 *                                            my_forward, NULL};
 *     distill_loss *l;
 *     distill_loss_create_custom(&l, &vt, payload, NULL, NULL);
 */
#ifndef DISTILL_LOSS_H
#define DISTILL_LOSS_H

#include "distill/common.h"
#include "distill/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct distill_loss distill_loss;

#define DISTILL_LOSS_BATCH_VERSION DISTILL_STRUCT_VERSION(distill_loss_batch, teacher_feat)

/**
 * What a loss sees for one batch.  All pointers are borrowed for the call.
 * A loss's forward is always given the library's complete struct, version
 * set to the library's DISTILL_LOSS_BATCH_VERSION: a loss built against a
 * newer header checks DISTILL_HAS_FIELD(batch, distill_loss_batch, field)
 * before it reads a field added after 0.1.0.  A host that calls
 * distill_loss_forward() itself starts from DISTILL_LOSS_BATCH_INIT.
 */
typedef struct distill_loss_batch {
    unsigned int version;                /**< the library's DISTILL_LOSS_BATCH_VERSION */
    int64_t n;                           /**< batch size */
    int64_t classes;                     /**< logits per sample */
    const float *student_logits;         /**< (n, classes) */
    const float *teacher_logits;         /**< (n, classes), or NULL without a teacher */
    const int32_t *labels;               /**< (n) in [0, classes), or NULL (unlabelled) */
    const distill_tensor *student_feat;  /**< the loss's student tap (adapted), or NULL */
    const distill_tensor *teacher_feat;  /**< the loss's teacher tap, or NULL */
} distill_loss_batch;

#define DISTILL_LOSS_BATCH_INIT {DISTILL_LOSS_BATCH_VERSION, 0, 0, NULL, NULL, NULL, NULL, NULL}

/**
 * Where a loss *adds* its gradients.  student_logits has n * classes floats;
 * student_feat has the shape of batch->student_feat (NULL when the loss has
 * no tap).  The gradients are of the loss as returned (unweighted): the
 * trainer scales them by the loss's weight.
 */
#define DISTILL_LOSS_GRADS_VERSION DISTILL_STRUCT_VERSION(distill_loss_grads, student_feat)

typedef struct distill_loss_grads {
    unsigned int version; /**< the library's DISTILL_LOSS_GRADS_VERSION (as distill_loss_batch) */
    float *student_logits;
    distill_tensor *student_feat;
} distill_loss_grads;

#define DISTILL_LOSS_GRADS_INIT {DISTILL_LOSS_GRADS_VERSION, NULL, NULL}

#define DISTILL_LOSS_VTABLE_VERSION DISTILL_STRUCT_VERSION(distill_loss_vtable, destroy)

/** A host-defined loss. */
typedef struct distill_loss_vtable {
    unsigned int version; /**< DISTILL_LOSS_VTABLE_VERSION */
    const char *name;     /**< short name, reported per step ("my_kd"); copied */
    /**
     * Compute the loss of `batch` into *loss and ADD its gradients into g.
     * Return DISTILL_OK, or a negative status to fail the training step
     * (the model is then left as it was).  payload is the pointer given to
     * distill_loss_create_custom().
     */
    int (*forward)(const distill_loss_batch *batch, double *loss, distill_loss_grads *g,
                   void *payload);
    /** Called once when the loss is freed (may be NULL). */
    void (*destroy)(void *payload);
} distill_loss_vtable;

#define DISTILL_LOSS_VTABLE_INIT {DISTILL_LOSS_VTABLE_VERSION, NULL, NULL, NULL}

/**
 * Create a loss from a host vtable (copied; payload is borrowed and handed
 * to destroy() at the end).  student_node/teacher_node name the taps the
 * loss reads (both NULL for a logit-only loss).  *out belongs to the caller
 * until given to a trainer.  DISTILL_EVERSION for an unknown vtable version.
 * A custom loss reports needs_labels = 0, and needs_teacher = 1 only when it
 * names taps; its batches carry the teacher's logits when there is a
 * teacher (else NULL) and the labels when the data has them.
 */
DISTILL_API int distill_loss_create_custom(distill_loss **out, const distill_loss_vtable *vt,
                                           void *payload, const char *student_node,
                                           const char *teacher_node);

/** Cross-entropy with labels; label_smoothing in [0, 1) as torch's. */
DISTILL_API int distill_loss_cross_entropy(distill_loss **out, float label_smoothing);

/**
 * Hinton KD: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y),
 * KL as torch's kl_div(..., reduction="batchmean").  alpha in [0, 1], T > 0.
 * With alpha = 1 it needs no labels.
 */
DISTILL_API int distill_loss_kd(distill_loss **out, float temperature, float alpha);

/**
 * Decoupled KD: (alpha * TCKD + beta * NCKD) * T^2, as mdistiller's DKD
 * (without its CE term and warm-up: add a cross-entropy loss and a
 * schedule as needed).  Needs labels.
 */
DISTILL_API int distill_loss_dkd(distill_loss **out, float temperature, float alpha, float beta);

/**
 * Logit standardization (Sun et al., CVPR 2024) in front of KD and DKD: the
 * same losses as distill_loss_kd() and distill_loss_dkd(), with every
 * student and teacher logit row x replaced, before the temperature, by
 *
 *     z = (x - mean(x)) / (1e-7 + std(x))
 *
 * (std over the row with Bessel's correction, as torch.std and their code).
 * The gradient goes through the standardization to the raw student logits.
 * KD's cross-entropy term (alpha < 1) reads the raw logits.  A constant row
 * has std 0 and becomes z = 0 (no NaN); its gradient is then taken with
 * d std/dx = 0, i.e. (g - mean(g)) / 1e-7, large but finite.  Parameters
 * and errors as distill_loss_kd() / distill_loss_dkd(); the loss is named
 * "kd" / "dkd".  Specs: "kd:...,ls=1", "dkd:...,ls=1".
 */
DISTILL_API int distill_loss_kd_ls(distill_loss **out, float temperature, float alpha);
DISTILL_API int distill_loss_dkd_ls(distill_loss **out, float temperature, float alpha,
                                    float beta);

/**
 * DIST (Huang et al., NeurIPS 2022), as its reference code: with
 * P = softmax(s/T), Q = softmax(t/T), both (n, classes), and
 * r(a, b) = <a - mean a, b - mean b> / (|a - mean a| |b - mean b| + 1e-8),
 *
 *     inter = 1 - (1/n) sum_i r(P[i, :], Q[i, :])        (each sample)
 *     intra = 1 - (1/C) sum_j r(P[:, j], Q[:, j])        (each class)
 *     loss  = T^2 * (beta * inter + gamma * intra)
 *
 * T > 0, beta >= 0, gamma >= 0 (else DISTILL_EINVAL); the paper uses
 * beta = gamma = 1 and T = 1 on ImageNet.  Needs the teacher, no labels.
 * With a batch of 1 each class column is a single value: its correlation
 * is 0, so intra = 1 (a constant, no gradient) — the reference's
 * behaviour.  A constant student row (r = 0) gets a gradient scaled by
 * 1/1e-8 through the epsilon, as in the reference.
 */
DISTILL_API int distill_loss_dist(distill_loss **out, float temperature, float beta,
                                  float gamma);

/**
 * Multi-level logit distillation (Jin et al., CVPR 2023) on one view.  For
 * each T in {2, 3, 4, 5, 6} (their set), P = softmax(s/T), Q = softmax(t/T):
 *
 *     inst_T  = T^2 * (1/n) sum_i KL(Q[i, :] || P[i, :])   (with standardize,
 *               on standardized logits, as distill_loss_kd_ls)
 *     batch_T = || Q Q^T - P P^T ||_F^2 / n                (n x n Gram)
 *     class_T = || Q^T Q - P^T P ||_F^2 / C                (C x C)
 *     loss    = sum_T  fs * inst_T + fs * batch_T + fc * class_T
 *
 * every term with weight 1 (their kd_loss_weight is our loss weight).  No
 * cross-entropy term: add a "ce" loss.  standardize (0/1) applies logit
 * standardization to the instance level only, as Sun et al.'s MLKD code.
 *
 * mask (0/1): without it fs = fc = 1.  With it, the factors reproduce what
 * the official code computes for its weak view: each term there is a
 * batch-mean scalar multiplied by a boolean mask and averaged, i.e. scaled
 * by fs = the fraction of samples whose teacher confidence
 * max_j softmax(t)[i, j] is <= its batch median (numpy percentile 50), and
 * fc = the fraction of classes whose summed teacher probability
 * sum_i softmax(t)[i, j] is <= its median.  These are constants (no
 * gradient), about 1/2.
 *
 * What differs from the paper's training: the official code trains on a
 * weak and a strong augmentation of each image (masked terms on the weak
 * view, unmasked on the strong view, CE on both).  The loader gives one
 * view, so this loss sees one: mask = 0 is the strong-view form, mask = 1
 * the weak-view form.  Needs the teacher, no labels.  DISTILL_EINVAL for a
 * standardize or mask other than 0 or 1.  Spec: "mlkd:ls=0,mask=0".
 * Cost: O(n C (n + C)) per temperature and memory for a C x C and an
 * n x n matrix.
 */
DISTILL_API int distill_loss_mlkd(distill_loss **out, int standardize, int mask);

/** FitNets hint: mean squared error between student and teacher taps. */
DISTILL_API int distill_loss_fitnets(distill_loss **out, const char *student_node,
                                     const char *teacher_node);

/** Attention transfer with exponent p (2 in the paper). */
DISTILL_API int distill_loss_attention(distill_loss **out, const char *student_node,
                                       const char *teacher_node, float p);

/** Similarity-preserving KD. */
DISTILL_API int distill_loss_similarity(distill_loss **out, const char *student_node,
                                        const char *teacher_node);

/** RKD: w_dist * distance term + w_angle * angle term (25 and 50 in the paper). */
DISTILL_API int distill_loss_rkd(distill_loss **out, const char *student_node,
                                 const char *teacher_node, float w_dist, float w_angle);

/** PKT (cosine-similarity kernel). */
DISTILL_API int distill_loss_pkt(distill_loss **out, const char *student_node,
                                 const char *teacher_node);

/**
 * Parse a loss spec as the `distill` program takes it: "ce", "ce:smoothing=0.1",
 * "kd:T=4,alpha=0.9", "dkd:T=4,alpha=1,beta=8" (either with ",ls=1" for
 * logit standardization), "dist:T=1,beta=1,gamma=1", "mlkd:ls=0,mask=0",
 * "fitnets:student=layer2,teacher=layer3", "at:student=...,teacher=...,p=2",
 * "sp:...", "rkd:...,dist=25,angle=50", "pkt:...".  An optional "weight=W"
 * key sets *weight (default 1).  DISTILL_EINVAL with a message naming the
 * bad part.
 */
DISTILL_API int distill_loss_parse(distill_loss **out, const char *spec, float *weight);

/** Free a loss (calls the vtable's destroy).  Accepts NULL. */
DISTILL_API void distill_loss_free(distill_loss *l);

/** The loss's name ("kd", "fitnets", or the vtable's name). */
DISTILL_API const char *distill_loss_name(const distill_loss *l);

/** The student and teacher node names a feature loss taps (NULL for logit losses). */
DISTILL_API const char *distill_loss_student_node(const distill_loss *l);
DISTILL_API const char *distill_loss_teacher_node(const distill_loss *l);

/** Nonzero if the loss needs labels (CE, KD with alpha < 1, DKD). */
DISTILL_API int distill_loss_needs_labels(const distill_loss *l);
/** Nonzero if the loss needs teacher outputs. */
DISTILL_API int distill_loss_needs_teacher(const distill_loss *l);

/**
 * Evaluate a loss directly: *value = loss, gradients ADDED into g.
 * This is what the trainer calls; hosts and tests can call it too, with
 * batch and g made from DISTILL_LOSS_BATCH_INIT and DISTILL_LOSS_GRADS_INIT
 * (their versions are checked: DISTILL_EVERSION).
 * DISTILL_ENONFINITE if the value is not finite.
 * g, or either of its pointers, may be NULL to skip those gradients.  On
 * failure nothing has been added into g.
 */
DISTILL_API int distill_loss_forward(distill_loss *l, const distill_loss_batch *batch,
                                     double *value, distill_loss_grads *g);

#ifdef __cplusplus
}
#endif

#endif /* DISTILL_LOSS_H */

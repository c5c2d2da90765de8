/*
 * loss_internal.h - the layout of distill_loss and the built-in losses, for
 * the library's own files (the trainer reads the flags and the tap rule).
 *
 * Every loss, built-in or host-defined, is a distill_loss_vtable plus a
 * payload.  A built-in's payload is the distill_loss itself (its forward
 * reads `params`); a host loss's payload is the host's pointer.  All of them
 * are evaluated through distill_loss_forward() (loss.c), which validates the
 * batch, hands the vtable zeroed scratch gradients, checks that the value
 * and the gradients are finite, and only then adds the gradients into the
 * caller's buffers: a failed evaluation leaves the caller's gradients as
 * they were.
 *
 * Files:
 *   loss.c         constructors, accessors, validation, distill_loss_forward
 *   loss_logits.c  ce, kd, dkd, dist, mlkd
 *   loss_feat.c    fitnets, at, sp, rkd, pkt
 *   loss_parse.c   distill_loss_parse
 */
#ifndef DISTILL_LOSS_INTERNAL_H
#define DISTILL_LOSS_INTERNAL_H

#include <stddef.h>

#include "distill/loss.h"

typedef enum loss_kind {
    LOSS_CUSTOM = 0,
    LOSS_CE,
    LOSS_KD,
    LOSS_DKD,
    LOSS_FITNETS,
    LOSS_AT,
    LOSS_SP,
    LOSS_RKD,
    LOSS_PKT,
    LOSS_DIST,
    LOSS_MLKD
} loss_kind;

/* What a loss requires of its two taps (both have batch dim n first). */
typedef enum loss_tap_rule {
    LOSS_TAPS_NONE = 0,    /* logit loss: no taps */
    LOSS_TAPS_ANY,         /* custom loss with taps: any shapes with batch n */
    LOSS_TAPS_SAME_SHAPE,  /* fitnets: identical shapes */
    LOSS_TAPS_SAME_SPATIAL,/* at: (n, C, spatial...) with equal spatial dims;
                              the channel counts may differ */
    LOSS_TAPS_FLAT         /* sp, rkd, pkt: flattened to (n, -1); the widths
                              may differ */
} loss_tap_rule;

/* Hyper-parameters of the built-ins (unused ones are 0). */
typedef struct loss_params {
    double temperature; /* kd, dkd, dist */
    double alpha;       /* kd: KL weight; dkd: TCKD weight */
    double beta;        /* dkd: NCKD weight; dist: inter-class weight */
    double gamma;       /* dist: intra-class weight */
    int standardize;    /* kd, dkd, mlkd: logit standardization (ls=1) */
    int mask;           /* mlkd: confidence masking of the reference's weak view */
    double smoothing;   /* ce: label smoothing */
    double p;           /* at: exponent */
    double w_dist;      /* rkd: distance term weight */
    double w_angle;     /* rkd: angle term weight */
} loss_params;

struct distill_loss {
    char *name;                 /* owned; vt.name points here */
    loss_kind kind;
    loss_params params;
    char *student_node;         /* owned, NULL for logit losses */
    char *teacher_node;         /* owned, NULL for logit losses */
    distill_loss_vtable vt;     /* a copy */
    void *payload;              /* built-ins: this loss; custom: the host's */

    int needs_labels;           /* labels must be present */
    int needs_teacher;          /* the trainer must run the teacher */
    int needs_teacher_logits;   /* batch->teacher_logits must be present */
    loss_tap_rule taps;         /* LOSS_TAPS_NONE: no feature taps */

    /* Scratch gradients handed to the vtable, grown on demand (a loss is
     * used by one thread at a time). */
    float *scratch_logits;      /* n * classes */
    size_t scratch_logits_cap;
    float *scratch_feat;        /* numel of the student tap */
    size_t scratch_feat_cap;
};

/* The built-ins' vtables (loss_logits.c, loss_feat.c).  Their payload is the
 * distill_loss; they assume a batch already validated by loss.c. */
extern const distill_loss_vtable loss_vt_ce;
extern const distill_loss_vtable loss_vt_kd;
extern const distill_loss_vtable loss_vt_dkd;
extern const distill_loss_vtable loss_vt_dist;
extern const distill_loss_vtable loss_vt_mlkd;
extern const distill_loss_vtable loss_vt_fitnets;
extern const distill_loss_vtable loss_vt_at;
extern const distill_loss_vtable loss_vt_sp;
extern const distill_loss_vtable loss_vt_rkd;
extern const distill_loss_vtable loss_vt_pkt;

/*
 * Check that two taps fit `rule` for batch size n: DISTILL_ESHAPE naming
 * both nodes and the loss otherwise.  The trainer may call it when it sizes
 * adapters.
 */
int loss_check_taps(const distill_loss *l, int64_t n, const distill_tensor *s,
                    const distill_tensor *t);

#endif /* DISTILL_LOSS_INTERNAL_H */

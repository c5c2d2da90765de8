/*
 * distill/optim.h - optimizers and learning-rate schedules.
 *
 * A distill_optimizer updates the trainable parameters of one distill_model
 * from the gradients that distill_model_backward() accumulated.  SGD (with
 * momentum, dampening, Nesterov and L2 weight decay), Adam and AdamW follow
 * torch.optim exactly, element by element.  The optimizer's state (momentum
 * buffer; Adam's two moments) lives in one contiguous block, laid out like the
 * model's parameter block, so an update is one loop over each run of
 * parameters that share a learning rate and a weight decay.
 *
 *     distill_optimizer_options o;
 *     distill_optimizer_options_init(&o, DISTILL_OPTIMIZER_OPTIONS_VERSION);
 *     o.kind = DISTILL_OPTIM_SGD;
 *     o.lr = 0.1; o.momentum = 0.9; o.nesterov = 1; o.weight_decay = 5e-4;
 *     distill_optimizer *opt;
 *     distill_optimizer_create(&opt, model, &o);
 *
 *     distill_schedule_options s;
 *     distill_schedule_options_init(&s, DISTILL_SCHEDULE_OPTIONS_VERSION);
 *     s.kind = DISTILL_SCHEDULE_COSINE; s.base_lr = 0.1; s.total_steps = steps;
 *     for (int64_t t = 0; t < steps; t++) {
 *         double lr;
 *         distill_schedule_lr(&s, t, &lr);
 *         distill_optimizer_set_lr(opt, lr);
 *         distill_optimizer_zero_grad(opt);
 *         ... forward, loss, backward ...
 *         if (distill_optimizer_step(opt) == DISTILL_ENONFINITE)
 *             ... the step was skipped; the parameters are untouched ...
 *     }
 *     distill_optimizer_free(opt);
 *
 * Parameter groups.  Every trainable parameter tensor gets an effective
 * learning rate lr * lr_mult and weight decay weight_decay * wd_mult:
 *   - distill_optimizer_set_group() attaches multipliers to a name prefix
 *     ("layer3." or "fc."); a tensor takes those of the longest prefix that
 *     its name starts with (1 and 1 when none matches);
 *   - with no_decay_bn_bias set, biases and BatchNorm scales and shifts get no
 *     weight decay at all, whatever their group says.
 * A group with lr_mult 0 freezes its tensors: they, their state and their
 * gradients are left alone (as PyTorch skips parameters without gradients).
 *
 * Schedules are plain values: a distill_schedule_options struct and a pure
 * function of the step, distill_schedule_lr(), that the training loop calls
 * before each step.
 */
#ifndef DISTILL_OPTIM_H
#define DISTILL_OPTIM_H

#include "distill/common.h"
#include "distill/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------- optimizer */

typedef struct distill_optimizer distill_optimizer;

/** Optimizer algorithms.  Values are part of the ABI and of checkpoints. */
typedef enum distill_optim_kind {
    DISTILL_OPTIM_SGD = 0,   /**< torch.optim.SGD: L2 decay added to the gradient */
    DISTILL_OPTIM_ADAMW = 1, /**< torch.optim.AdamW: decoupled decay p -= lr * wd * p */
    DISTILL_OPTIM_ADAM = 2   /**< torch.optim.Adam: L2 decay added to the gradient */
} distill_optim_kind;

#define DISTILL_OPTIMIZER_OPTIONS_VERSION DISTILL_STRUCT_VERSION(distill_optimizer_options, check_finite)

typedef struct distill_optimizer_options {
    unsigned int version;  /**< DISTILL_OPTIMIZER_OPTIONS_VERSION */
    int kind;              /**< distill_optim_kind; DISTILL_OPTIM_SGD */
    double lr;             /**< learning rate, >= 0; 0.01 (a schedule usually sets it) */
    double momentum;       /**< SGD momentum in [0, 1); 0 */
    double dampening;      /**< SGD dampening in [0, 1]; 0 */
    int nesterov;          /**< SGD: nonzero for Nesterov momentum (needs momentum > 0,
                                dampening 0); 0 */
    double weight_decay;   /**< >= 0; 0 (torch.optim.AdamW's default is 0.01: set it) */
    double beta1, beta2;   /**< Adam(W) moment decay rates in [0, 1); 0.9, 0.999 */
    double eps;            /**< Adam(W) denominator term, > 0; 1e-8 */
    double max_grad_norm;  /**< > 0: scale the gradients so that their global L2 norm is at
                                most this, as torch.nn.utils.clip_grad_norm_; 0 = off */
    int no_decay_bn_bias;  /**< nonzero: no weight decay on biases and BatchNorm scale and
                                shift; 0 */
    int check_finite;      /**< nonzero: distill_optimizer_step() refuses non-finite
                                gradients with DISTILL_ENONFINITE; 1 */
} distill_optimizer_options;

#define DISTILL_OPTIMIZER_OPTIONS_INIT \
    {DISTILL_OPTIMIZER_OPTIONS_VERSION, DISTILL_OPTIM_SGD, 0.01, 0.0, 0.0, 0, 0.0, 0.9, 0.999, \
     1e-8, 0.0, 0, 1}

/**
 * Fill *opts with DISTILL_OPTIMIZER_OPTIONS_INIT.
 * Returns DISTILL_EINVAL for NULL, DISTILL_EVERSION for an unknown version.
 */
DISTILL_API int distill_optimizer_options_init(distill_optimizer_options *opts,
                                               unsigned int version);

/**
 * Create an optimizer for the trainable parameters of `model`, with zeroed
 * state and step count 0.  opts NULL means DISTILL_OPTIMIZER_OPTIONS_INIT.
 *
 * The optimizer borrows `model`: the model must outlive the optimizer, and
 * its graph must not change (no node added) while the optimizer is in use;
 * distill_optimizer_step() reports DISTILL_ESTATE if it did.
 * On success *out belongs to the caller (free with distill_optimizer_free).
 * Returns DISTILL_EINVAL (NULL model or out, a hyperparameter out of range,
 * unknown kind), DISTILL_EVERSION (opts->version), DISTILL_ENOMEM.
 */
DISTILL_API int distill_optimizer_create(distill_optimizer **out, distill_model *model,
                                         const distill_optimizer_options *opts);

/** Free an optimizer (not its model).  Accepts NULL. */
DISTILL_API void distill_optimizer_free(distill_optimizer *opt);

/** The model the optimizer updates (borrowed); NULL for NULL. */
DISTILL_API distill_model *distill_optimizer_model(const distill_optimizer *opt);

/**
 * Give every trainable tensor whose name starts with `name_prefix` the
 * learning rate lr * lr_mult and the weight decay weight_decay * wd_mult
 * (see "Parameter groups" above: the longest matching prefix wins; setting
 * the same prefix again replaces its multipliers; "" matches every tensor).
 * lr_mult 0 freezes the tensors.  The prefix is copied.
 * Returns DISTILL_EINVAL (NULL argument, a negative or non-finite
 * multiplier), DISTILL_ENOTFOUND (no trainable tensor matches the prefix:
 * usually a typo), DISTILL_ENOMEM.
 */
DISTILL_API int distill_optimizer_set_group(distill_optimizer *opt, const char *name_prefix,
                                            double lr_mult, double wd_mult);

/** Forget every group set by distill_optimizer_set_group().  Returns DISTILL_OK. */
DISTILL_API int distill_optimizer_clear_groups(distill_optimizer *opt);

/**
 * The effective learning rate and weight decay that the next step will use
 * for the trainable tensor `param_name` ("layer1.0.conv1.weight").  Either
 * out-pointer may be NULL.
 * Returns DISTILL_EINVAL, DISTILL_ENOTFOUND (no such trainable tensor).
 */
DISTILL_API int distill_optimizer_param_hparams(const distill_optimizer *opt,
                                                const char *param_name, double *lr,
                                                double *weight_decay);

/** Set the base learning rate (>= 0, finite) used from the next step on. */
DISTILL_API int distill_optimizer_set_lr(distill_optimizer *opt, double lr);

/** The current base learning rate; 0 for NULL. */
DISTILL_API double distill_optimizer_lr(const distill_optimizer *opt);

/**
 * Set SGD's momentum or Adam(W)'s beta1 (in [0, 1)), e.g. from
 * distill_schedule_momentum().  An SGD optimizer created with momentum 0 has
 * no momentum buffer: setting a nonzero momentum gives DISTILL_ESTATE.
 * Nesterov SGD needs momentum > 0 (DISTILL_EINVAL).
 */
DISTILL_API int distill_optimizer_set_momentum(distill_optimizer *opt, double momentum);

/** Set every gradient of the model to zero (distill_model_zero_grad). */
DISTILL_API int distill_optimizer_zero_grad(distill_optimizer *opt);

/**
 * DISTILL_OK if every gradient of every tensor the optimizer updates (frozen
 * tensors excluded) is finite, else DISTILL_ENONFINITE with the name of the
 * first offending tensor in the message.  Changes nothing.
 */
DISTILL_API int distill_optimizer_check_finite(distill_optimizer *opt);

/**
 * Update the parameters from their gradients with the current learning
 * rate, then count the step.  In order: the global L2 norm of the gradients
 * is computed (when max_grad_norm > 0 or check_finite is set); non-finite
 * gradients with check_finite set give DISTILL_ENONFINITE and change nothing
 * (parameters, state and step count are untouched); with max_grad_norm > 0
 * the gradients are scaled by min(1, max_grad_norm / (norm + 1e-6)) inside
 * the update (the gradient block itself is not modified); then each
 * tensor is updated by its algorithm with its group's lr and weight decay.
 * Results are bit-identical from run to run, whatever the thread count.
 * Returns DISTILL_OK, DISTILL_EINVAL (NULL), DISTILL_ENONFINITE,
 * DISTILL_ESTATE (the model's parameters changed since creation).
 */
DISTILL_API int distill_optimizer_step(distill_optimizer *opt);

/**
 * The global L2 norm of the gradients (before clipping) computed by the
 * last distill_optimizer_step() that computed it; -1 if none has (neither
 * clipping nor check_finite is on, or no step was made).  May be +inf or NaN
 * after a step refused with DISTILL_ENONFINITE.
 */
DISTILL_API double distill_optimizer_grad_norm(const distill_optimizer *opt);

/** The number of successful steps (restored by distill_optimizer_load_state). */
DISTILL_API int64_t distill_optimizer_step_count(const distill_optimizer *opt);

/**
 * Size in bytes of the optimizer's serialized state: step counts, the
 * current learning rate and momentum, and the state block.  The size only
 * depends on the model and the options, not on the step.
 */
DISTILL_API int distill_optimizer_state_size(const distill_optimizer *opt, size_t *size);

/**
 * Write the state into buf, which must hold distill_optimizer_state_size()
 * bytes (DISTILL_EINVAL if size is smaller), in libdistill's file container
 * format (little-endian, CRC-checked sections), ready to be stored as is.
 * Group settings and hyperparameters other than lr and momentum are not
 * part of the state: they come from the code that creates the optimizer.
 */
DISTILL_API int distill_optimizer_save_state(const distill_optimizer *opt, void *buf,
                                             size_t size);

/**
 * Restore state written by distill_optimizer_save_state() for an optimizer
 * of the same kind over a model with the same parameter layout.  Everything
 * is checked before anything changes: a truncated or corrupted buffer, or
 * one for another kind of optimizer or another layout, gives DISTILL_EFORMAT
 * (DISTILL_EVERSION for a newer format) and leaves the optimizer as it was.
 */
DISTILL_API int distill_optimizer_load_state(distill_optimizer *opt, const void *buf,
                                             size_t size);

/* -------------------------------------------------------------- schedule */

/** Learning-rate schedule kinds.  Values are part of the ABI. */
typedef enum distill_schedule_kind {
    DISTILL_SCHEDULE_CONSTANT = 0,  /**< base_lr (after the warm-up) */
    DISTILL_SCHEDULE_MULTISTEP = 1, /**< base_lr * gamma^(milestones <= step), torch MultiStepLR */
    DISTILL_SCHEDULE_COSINE = 2,    /**< cosine from base_lr to min_lr, torch CosineAnnealingLR */
    DISTILL_SCHEDULE_ONECYCLE = 3   /**< torch OneCycleLR, cosine annealing, two phases */
} distill_schedule_kind;

#define DISTILL_SCHEDULE_OPTIONS_VERSION DISTILL_STRUCT_VERSION(distill_schedule_options, max_momentum)
#define DISTILL_SCHEDULE_MAX_MILESTONES 8

/**
 * A learning-rate schedule, evaluated per optimizer step (step 0 is the
 * first step).  With W = warmup_steps, the constant, multi-step and cosine
 * schedules start with a linear warm-up: for step < W the rate is
 * base_lr * (step + 1) / (W + 1), so that it rises evenly and reaches
 * base_lr at step W.  Then:
 *   constant:   base_lr;
 *   multi-step: base_lr * gamma^k, k = the number of milestones <= step
 *               (milestones count steps from 0, warm-up included);
 *   cosine:     min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2 with
 *               t = step - W, T = total_steps - W, and min_lr from step
 *               total_steps on (PyTorch's CosineAnnealingLR with
 *               T_max = total_steps and eta_min = min_lr when W = 0; PyTorch
 *               would rise again after T_max);
 *   one-cycle:  PyTorch's OneCycleLR(max_lr = base_lr, total_steps,
 *               pct_start, div_factor, final_div_factor,
 *               anneal_strategy = "cos", three_phase = False): from
 *               base_lr / div_factor up to base_lr at step
 *               pct_start * total_steps - 1, then down to
 *               base_lr / div_factor / final_div_factor at step
 *               total_steps - 1, and that value after it (PyTorch raises
 *               an error there).  warmup_steps is ignored.  With
 *               cycle_momentum set, distill_schedule_momentum() gives the
 *               momentum that goes with it.
 */
typedef struct distill_schedule_options {
    unsigned int version;   /**< DISTILL_SCHEDULE_OPTIONS_VERSION */
    int kind;               /**< distill_schedule_kind; DISTILL_SCHEDULE_CONSTANT */
    double base_lr;         /**< >= 0; one-cycle: the peak rate (max_lr); 0.1 */
    int64_t total_steps;    /**< cosine and one-cycle: number of steps, > 0; 0 */
    int64_t warmup_steps;   /**< constant, multi-step, cosine: >= 0 (cosine: < total_steps); 0 */
    double min_lr;          /**< cosine: final rate (eta_min), in [0, base_lr]; 0 */
    double gamma;           /**< multi-step: factor per milestone, > 0; 0.1 */
    int n_milestones;       /**< multi-step: 0..DISTILL_SCHEDULE_MAX_MILESTONES; 0 */
    int64_t milestones[DISTILL_SCHEDULE_MAX_MILESTONES]; /**< non-decreasing steps, >= 0 */
    double pct_start;       /**< one-cycle: fraction of the steps spent rising, in (0, 1); 0.3 */
    double div_factor;      /**< one-cycle: initial rate = base_lr / div_factor, > 0; 25 */
    double final_div_factor;/**< one-cycle: final rate = initial / final_div_factor, > 0; 1e4 */
    int cycle_momentum;     /**< one-cycle: nonzero to cycle momentum inversely; 1 */
    double base_momentum;   /**< one-cycle: momentum at the peak rate, in [0, 1); 0.85 */
    double max_momentum;    /**< one-cycle: momentum at the start and end, in [0, 1); 0.95 */
} distill_schedule_options;

#define DISTILL_SCHEDULE_OPTIONS_INIT                                                      \
    {DISTILL_SCHEDULE_OPTIONS_VERSION, DISTILL_SCHEDULE_CONSTANT, 0.1, 0, 0, 0.0, 0.1, 0, \
     {0, 0, 0, 0, 0, 0, 0, 0}, 0.3, 25.0, 1e4, 1, 0.85, 0.95}

/**
 * Fill *opts with DISTILL_SCHEDULE_OPTIONS_INIT.
 * Returns DISTILL_EINVAL for NULL, DISTILL_EVERSION for an unknown version.
 */
DISTILL_API int distill_schedule_options_init(distill_schedule_options *opts,
                                              unsigned int version);

/**
 * Check every field that the schedule's kind uses.  Returns DISTILL_OK,
 * DISTILL_EINVAL with the offending field in the message, DISTILL_EVERSION.
 */
DISTILL_API int distill_schedule_validate(const distill_schedule_options *s);

/**
 * The learning rate for optimizer step `step` (>= 0), into *lr.  A pure
 * function: same options and step, same value.
 * Returns DISTILL_OK, or the error of distill_schedule_validate(), or
 * DISTILL_EINVAL for a negative step or NULL lr.
 */
DISTILL_API int distill_schedule_lr(const distill_schedule_options *s, int64_t step, double *lr);

/**
 * The momentum (SGD) or beta1 (Adam) for step `step` when the schedule
 * drives it (one-cycle with cycle_momentum: from max_momentum down to
 * base_momentum while the rate rises, and back up), into *momentum; -1 when
 * it does not (every other case), meaning "leave the optimizer's momentum
 * as it is".  Errors as distill_schedule_lr().
 */
DISTILL_API int distill_schedule_momentum(const distill_schedule_options *s, int64_t step,
                                          double *momentum);

#ifdef __cplusplus
}
#endif

#endif /* DISTILL_OPTIM_H */

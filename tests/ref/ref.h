/*
 * ref.h - an independent, naive, double-precision reference for libdistill
 * models, used by the unit tests.
 *
 * The reference knows nothing of the library's internals.  It reads a
 * distill_model through the public query API only (distill_model_node_count,
 * distill_model_node, distill_model_find_param, distill_param_info.data),
 * copies every parameter into doubles once, recomputes each node's shape on
 * its own (and refuses a model whose shapes disagree with the library's), and
 * evaluates every node in NCHW, row-major, with plain loops in double:
 *
 *     ref_model *r;
 *     ref_model_create(&r, m, NULL);             // reads graph and parameters
 *     ref_forward(r, x, n, 1);                   // x: (N, per-image dims), training mode
 *     const double *y = ref_node_output(r, ref_find_node(r, "fc"));  // (N, 10)
 *     double g = ref_fd_param(r, x, n, 1, &loss, p, k, 1e-3, &ok);
 *     ref_model_free(r);
 *
 * Semantics (PyTorch's):
 *   conv2d     weight OIHW, stride, zero padding, dilation, groups, optional bias
 *   linear     weight (out, in), optional bias
 *   batchnorm  training: batch mean and biased variance over (N, H, W) per
 *              channel (over N per feature for rank-1 nodes) normalize;
 *              inference: running_mean / running_var.  eps comes from
 *              distill_node_info.eps (the tests build every BatchNorm with
 *              eps = 1e-5 unless they say otherwise) or ref_options.bn_eps.
 *   relu, relu6, leaky relu (slope from node_info.alpha or ref_options),
 *   gelu       erf form 0.5 x (1 + erf(x / sqrt 2)); with tanh_approx the
 *              tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
 *   maxpool    square kernel, padding counts as -infinity, floor mode
 *   avgpool    square kernel, padded zeros count in the average
 *              (count_include_pad = True), floor mode
 *   global avgpool (C, H, W) -> (C, 1, 1); add; concat along channels (or
 *   features for rank-1 nodes); flatten in C order; softmax over the
 *   features of a rank-1 node; dropout is the identity (the tests check
 *   dropout on its own).
 *
 * Besides each node's value the reference keeps, per element, a magnitude
 * bound `mag` (the same computation done on absolute values: for a sum, the
 * sum of |terms|) so that a float implementation can be held to a tolerance
 * proportional to the rounding it can actually incur, and a signature of
 * every discrete decision (which side of a ReLU kink, which element a max
 * pool picked) so that finite differences can tell when a step crossed a
 * kink and is therefore meaningless.
 *
 * Finite differences perturb the reference's double copy of a parameter or
 * of the input, never the model.
 *
 * Every function returns 0 on success and -1 on failure, with a message in
 * ref_error(); nothing here aborts.
 */
#ifndef DISTILL_TEST_REF_H
#define DISTILL_TEST_REF_H

#include <stddef.h>
#include <stdint.h>

#include "distill.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ RNG */

/* splitmix64: small, seedable, identical on every machine. */
typedef struct ref_rng {
    uint64_t state;
} ref_rng;

void ref_rng_seed(ref_rng *r, uint64_t seed);
uint64_t ref_rng_next(ref_rng *r);
double ref_rng_uniform(ref_rng *r);             /* [0, 1), 53 bits */
double ref_rng_normal(ref_rng *r);              /* N(0, 1), Box-Muller */
uint64_t ref_rng_below(ref_rng *r, uint64_t n); /* [0, n) */

/* Fill with U(lo, hi) values that are exactly representable as float, so
 * that the float copy handed to the library and the double copy used by the
 * reference are the same numbers. */
void ref_fill_uniform(double *x, size_t n, double lo, double hi, ref_rng *r);
void ref_fill_normal(double *x, size_t n, double mean, double stddev, ref_rng *r);

/* --------------------------------------------------------------- model */

typedef struct ref_options {
    /* 0: take eps, leaky slope and the gelu form from distill_node_info
     * (default).  Nonzero: use the three values below for every node. */
    int override_attrs;
    double bn_eps;      /* 1e-5 */
    double leaky_slope; /* 0.1 */
    int gelu_tanh;      /* 0 */
} ref_options;

#define REF_OPTIONS_INIT {0, 1e-5, 0.1, 0}

typedef struct ref_model ref_model;

/* One parameter tensor as the reference holds it (a double copy). */
typedef struct ref_param {
    const char *name;  /* borrowed from the model */
    int node;          /* index of the owning node */
    int kind;          /* distill_param_kind */
    int trainable;
    int rank;
    int64_t dims[4];
    size_t numel;
    double *data;      /* the reference's copy; FD perturbs this */
} ref_param;

/* Read the graph and every parameter of m.  m must stay alive (names are
 * borrowed) and must not gain nodes while r is in use.  opts NULL means
 * REF_OPTIONS_INIT.  *out belongs to the caller (ref_model_free). */
int ref_model_create(ref_model **out, distill_model *m, const ref_options *opts);
void ref_model_free(ref_model *r);

/* Copy the model's current float parameters and BatchNorm statistics into
 * the reference again (after training forwards changed the statistics, or
 * after the test wrote new values through distill_param_info.data). */
int ref_model_reload(ref_model *r);

int ref_node_count(const ref_model *r);
int ref_find_node(const ref_model *r, const char *name);    /* index or -1 */
const char *ref_node_name(const ref_model *r, int node);
int ref_node_op(const ref_model *r, int node);
int ref_node_input(const ref_model *r, int node, int j);    /* index of input j, or -1 */
/* Per-image shape as computed by the reference. */
int ref_node_rank(const ref_model *r, int node);
const int64_t *ref_node_dims(const ref_model *r, int node); /* 3 entries, unused = 1 */
size_t ref_node_size(const ref_model *r, int node);         /* per image */
int ref_output_node(const ref_model *r);

int ref_param_count(const ref_model *r);
ref_param *ref_param_at(ref_model *r, int i);
ref_param *ref_find_param(ref_model *r, const char *name);  /* NULL if none */

/*
 * Evaluate every node for the batch x (n images, per-image input dims, C
 * order) in inference (training = 0) or training mode.  The values stay in
 * r until the next call.
 */
int ref_forward(ref_model *r, const double *x, int n, int training);

/* Value and magnitude bound of a node after ref_forward: (n, per-image dims). */
const double *ref_node_output(const ref_model *r, int node);
const double *ref_node_mag(const ref_model *r, int node);

/* Batch statistics of BatchNorm node `node` from the last training forward:
 * mean, biased variance (used to normalize), unbiased variance (used for the
 * running statistics).  Each array has one entry per channel / feature. */
int ref_bn_batch_stats(const ref_model *r, int node, const double **mean,
                       const double **var_biased, const double **var_unbiased);

/* A hash of every discrete decision taken in the last forward (ReLU /
 * ReLU6 / leaky ReLU sides, max-pool choices). */
uint64_t ref_signature(const ref_model *r);

/* --------------------------------------------------------------- loss */

/* L = sum over taps t of sum_i out_t[i] * R_t[i]; so dL/dout_t = R_t. */
#define REF_MAX_TAPS 8
typedef struct ref_loss {
    int n_taps;
    int node[REF_MAX_TAPS];       /* node indexes */
    const double *R[REF_MAX_TAPS];/* (n, per-image dims of the node) */
} ref_loss;

/* The loss of the last ref_forward. */
double ref_loss_value(const ref_model *r, const ref_loss *loss, int n);

/* ------------------------------------------------------ finite differences */

/*
 * Central difference (L(theta + h) - L(theta - h)) / (2h) of the loss with
 * respect to element `elem` of reference parameter p (or of the input
 * element `elem` of x for ref_fd_input), with the batch x of n images in the
 * given mode.  The reference's activations are left as for the unperturbed
 * forward.  *reliable is set to 0 when the step changed a discrete decision
 * (a ReLU or max-pool kink lies within h), in which case the value must not
 * be compared; 1 otherwise.  Returns NaN on failure.
 */
double ref_fd_param(ref_model *r, const double *x, int n, int training, const ref_loss *loss,
                    ref_param *p, size_t elem, double h, int *reliable);
double ref_fd_input(ref_model *r, const double *x, int n, int training, const ref_loss *loss,
                    size_t elem, double h, int *reliable);

/* ----------------------------------------------------------- comparison */

/*
 * Accumulates a comparison of float results `a` with reference values `b`
 * so that a test can print the worst case and assert on the count of
 * failures.  ok iff |a - b| <= tol, tol chosen by the caller.
 */
typedef struct ref_cmp {
    size_t checked, failed, skipped;
    double max_abs;      /* largest |a - b| */
    double max_ratio;    /* largest |a - b| / tol */
    size_t worst;        /* index where max_ratio was seen */
    double worst_a, worst_b, worst_tol;
} ref_cmp;

void ref_cmp_init(ref_cmp *c);
/* Returns 1 if within tolerance. */
int ref_cmp_add(ref_cmp *c, size_t index, double a, double b, double tol);

/* ------------------------------------------------------- tensor helpers */

/* A float tensor (n, dims...) holding x (which must be float-exact for the
 * comparison to be fair; ref_fill_* make it so). NULL on failure. */
distill_tensor *ref_tensor_from(const double *x, int n, int rank, const int64_t *dims);
/* Copy a tensor's elements into doubles. */
void ref_tensor_to(const distill_tensor *t, double *out);

/* The message of the last failure in this file; never NULL. */
const char *ref_error(void);

#ifdef __cplusplus
}
#endif

#endif /* DISTILL_TEST_REF_H */

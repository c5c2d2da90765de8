/*
 * check.h - hold a distill_model to the reference in ref.h.
 *
 * These helpers run the library (through the public API only) and the
 * reference side by side and count the elements that disagree.  They print
 * one line per compared tensor to stdout, with the largest error seen, so a
 * failing test says where and by how much.  They do not depend on CMocka:
 * a test asserts that the returned failure count is 0.
 *
 * Tolerances (CHECK_TOL_INIT), and why:
 *
 *   forward    |a - b| <= fwd_rtol * (|b| + mag) + fwd_atol
 *              with fwd_rtol = 2e-5, fwd_atol = 1e-6.  `mag` (>= |b|) is
 *              the reference's magnitude bound (a sum's sum of |terms|), so
 *              the bound tracks the rounding a float computation can incur
 *              even where a conv sum cancels to near zero; relative to |b|
 *              alone the tolerance is at least 4e-5.  Float's unit roundoff
 *              is 6e-8: the oneDNN engine was measured at <= 1.2e-7 *
 *              (|b| + mag) on every case here (50x margin), while a wrong or
 *              missing term costs ~mag/K and a BatchNorm normalized with the
 *              unbiased instead of the biased variance (or the wrong eps)
 *              is off by ~1/count >= 1e-3 relative on these shapes.
 *
 *   gradients  |a - b| <= grad_rtol * |b| + grad_srel * S_t + grad_grel * G
 *              b is the central difference in double with step fd_h = 1e-4
 *              (truncation error ~h^2, roundoff ~1e-16 |L| / h: both far
 *              below the float engine's error), S_t the largest |b| in that
 *              tensor and G the largest |b| in the whole check.  grad_rtol =
 *              2e-3, grad_srel = 2e-4, grad_grel = 2e-5.  The S_t and G
 *              terms cover elements whose true gradient is tiny because
 *              large float terms cancel (e.g. a bias before a BatchNorm in
 *              training mode, whose exact gradient is 0).
 *
 *   Tensors of up to full_limit = 256 elements are checked whole; larger
 *   ones on `samples` = 64 elements drawn by a seeded generator.  An element
 *   whose finite difference crossed a ReLU / max-pool kink is skipped (the
 *   reference detects the crossing exactly); more than max_skip = 25% of a
 *   tensor skipped counts as a failure, as the check would be hollow.
 */
#ifndef DISTILL_TEST_CHECK_H
#define DISTILL_TEST_CHECK_H

#include "ref.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct check_tol {
    double fwd_rtol, fwd_atol;
    double grad_rtol, grad_srel, grad_grel;
    double fd_h;
    size_t full_limit;
    size_t samples;
    double max_skip;
} check_tol;

#define CHECK_TOL_INIT {2e-5, 1e-6, 2e-3, 2e-4, 2e-5, 1e-4, 256, 64, 0.25}

/* Largest error ratios seen by the checks since the last check_stats_reset
 * (|a - b| / tol), for the tests' summaries. */
typedef struct check_stats {
    double fwd_worst_ratio, grad_worst_ratio;
    double fwd_max_abs, grad_max_abs;
    size_t fwd_checked, grad_checked, grad_skipped;
} check_stats;

void check_stats_reset(void);
const check_stats *check_stats_get(void);

/*
 * Give every parameter of m a seeded, float-exact random value: conv and
 * linear weights U(-sqrt(3/fan_in), sqrt(3/fan_in)), biases U(-0.5, 0.5),
 * BatchNorm scale U(0.5, 1.5), shift U(-0.5, 0.5), running mean
 * U(-0.5, 0.5), running var U(0.5, 2).  Independent of the library's own
 * initializers.  Returns 0, or -1 with a message on stdout.
 */
int check_fill_params(distill_model *m, uint64_t seed);

/*
 * Run the library forward on x (n images) in `mode`, run the reference in
 * the same mode (after reloading the model's parameters and statistics),
 * and compare the output and, with read_nodes nonzero, every node (after
 * distill_model_keep_all(m, 1), through distill_model_read_node).  In
 * training mode also check that each BatchNorm's running statistics moved
 * to (1 - momentum) * old + momentum * batch (unbiased variance).
 * Returns the number of failed elements (API errors count as failures).
 */
int check_forward(distill_model *m, ref_model *r, const double *x, int n, int mode,
                  int read_nodes, const check_tol *tol, const char *label);

/*
 * Training forward, then backward with the loss L = sum over taps of
 * sum(node * R_tap) (R seeded random, one per tap name; each tap other than
 * the output is declared with distill_model_keep_node), then compare every
 * trainable parameter's gradient and the input gradient with central
 * differences of the reference.  Returns the number of failures.
 */
int check_backward(distill_model *m, ref_model *r, const double *x, int n, int n_taps,
                   const char *const *taps, uint64_t seed, const check_tol *tol,
                   const char *label);

/* The whole drill for one model and batch: check_forward in both modes
 * (inference first) with only the output kept, check_backward with the
 * output node as the only tap, then check_forward in both modes with every
 * node kept and read back. */
int check_model(distill_model *m, const double *x, int n, uint64_t seed, const char *label);

#ifdef __cplusplus
}
#endif

#endif /* DISTILL_TEST_CHECK_H */

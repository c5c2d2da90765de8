/*
 * bnorm.h - the library's own BatchNorm kernels for training.
 *
 * oneDNN 2.6 reduces the batch statistics and the gradient sums of its
 * BatchNorm in single precision, over N*H*W values per channel.  Measured
 * against a float64 reference on ResNet-20 (batch 128, 28x28), that made
 * the normalized activations 1e-5 off (PyTorch: 1e-7) and the parameter
 * gradients 0.3-2% off (PyTorch: 0.2% at worst), because the gradient sums
 * cancel.  These kernels accumulate in double, per image, and add the
 * per-image sums in image order, so results do not depend on the thread
 * count.  They read each tensor once per pass: forward two passes (sums;
 * normalize), backward two (sums; input gradient); a fused ReLU's mask is
 * recomputed from the input, so the backward reads neither the output nor a
 * workspace.
 *
 * A view addresses element (n, c, h, w) of an activation at
 *   base + n*sn + (c / cb)*sc + h*sh + w*sw + c % cb
 * which covers oneDNN's plain (cb = 1) and channel-blocked (nChw16c,
 * nChw8c) layouts.
 */
#ifndef DISTILL_BNORM_H
#define DISTILL_BNORM_H

#include <stddef.h>
#include <stdint.h>

typedef struct bn_view {
    int64_t n, c, h, w;      /* logical dims (h = w = 1 for 2-D) */
    int64_t sn, sc, sh, sw;  /* strides in floats; sc is per channel block */
    int64_t cb;              /* channels per block: 1 (plain) or the inner block */
    int64_t cpad;            /* channels including the padding of the last block */
} bn_view;

/* Doubles of reduction space the kernels need for a view. */
size_t bn_reduce_doubles(const bn_view *v);

/* Floats of coefficient space (bn_forward_train's coef) for a view. */
size_t bn_coef_floats(const bn_view *v);

/*
 * Forward, training: mean and biased variance over (n, h, w) per channel,
 * y = relu?(x * a + b) with a = gamma / sqrt(var + eps), b = beta - mean * a.
 * x and y share the view's layout; y may not alias x.  Padding channels of
 * y are zeroed.  coef receives a and b (bn_coef_floats), which the
 * backward uses to recompute the ReLU's mask exactly.
 */
void bn_forward_train(const bn_view *v, const float *x, float *y, const float *gamma,
                      const float *beta, float eps, int relu, float *mean, float *var,
                      float *coef, double *red);

/*
 * Backward: with g = dy where x * a + b > 0 (0 elsewhere) when relu, else dy,
 *   dbeta = sum g,  dgamma = sum g * xhat,
 *   dx = gamma / sqrt(var + eps) * (g - dbeta / M - xhat * dgamma / M),
 * M = n*h*w, xhat = (x - mean) / sqrt(var + eps); coef is the forward's.
 */
void bn_backward(const bn_view *v, const float *x, const float *dy, float *dx,
                 const float *gamma, const float *mean, const float *var, const float *coef,
                 float eps, int relu, float *dgamma, float *dbeta, double *red);

/* The instances behind the two functions above: the baseline one (always
 * built) and the AVX2 one (built with DISTILL_BNORM_AVX2); bnorm.c picks one
 * at run time.  bnorm_impl.h defines them. */
#define BN_DECLARE_INSTANCE(sfx)                                                              \
    size_t bn_reduce_doubles_##sfx(const bn_view *v);                                       \
    void bn_forward_train_##sfx(const bn_view *v, const float *x, float *y,                 \
                                const float *gamma, const float *beta, float eps, int relu, \
                                float *mean, float *var, float *coef, double *red);         \
    void bn_backward_##sfx(const bn_view *v, const float *x, const float *dy, float *dx,    \
                           const float *gamma, const float *mean, const float *var,         \
                           const float *coef, float eps, int relu, float *dgamma,           \
                           float *dbeta, double *red);
BN_DECLARE_INSTANCE(base)
BN_DECLARE_INSTANCE(avx2)

#endif

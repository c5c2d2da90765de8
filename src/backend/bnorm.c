/*
 * bnorm.c - BatchNorm training kernels with double accumulation (bnorm.h):
 * the baseline instance, and the dispatch to the AVX2 instance
 * (bnorm_avx2.c) on processors that have AVX2 and FMA.
 */
#define BN_NAME(f) f##_base
#include "bnorm_impl.h"

#if defined(DISTILL_BNORM_AVX2)
static int use_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

size_t bn_reduce_doubles(const bn_view *v)
{
    return bn_reduce_doubles_base(v);
}

size_t bn_coef_floats(const bn_view *v)
{
    return (size_t)(2 * ((v->c + v->cb - 1) / v->cb) * v->cb);
}

void bn_forward_train(const bn_view *v, const float *x, float *y, const float *gamma,
                      const float *beta, float eps, int relu, float *mean, float *var,
                      float *coef, double *red)
{
#if defined(DISTILL_BNORM_AVX2)
    if (use_avx2()) {
        bn_forward_train_avx2(v, x, y, gamma, beta, eps, relu, mean, var, coef, red);
        return;
    }
#endif
    bn_forward_train_base(v, x, y, gamma, beta, eps, relu, mean, var, coef, red);
}

/* The mask the backward recomputes must be the forward's bit for bit: both
 * run in the same instance (the processor does not change). */
void bn_backward(const bn_view *v, const float *x, const float *dy, float *dx,
                 const float *gamma, const float *mean, const float *var, const float *coef,
                 float eps, int relu, float *dgamma, float *dbeta, double *red)
{
#if defined(DISTILL_BNORM_AVX2)
    if (use_avx2()) {
        bn_backward_avx2(v, x, dy, dx, gamma, mean, var, coef, eps, relu, dgamma, dbeta, red);
        return;
    }
#endif
    bn_backward_base(v, x, dy, dx, gamma, mean, var, coef, eps, relu, dgamma, dbeta, red);
}

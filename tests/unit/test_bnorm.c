/*
 * test_bnorm.c - the BatchNorm training kernels (src/backend/bnorm.h) on
 * their own, in every layout they take: plain (1 channel per block) and
 * blocked by 8 and by 16, with a padded last block, with and without the
 * fused ReLU.  Both the instance the processor gets (bn_forward_train, the
 * AVX2 one where there is AVX2) and the baseline instance are checked
 * against a double-precision BatchNorm written out here.  The model-level
 * tests reach only the layout oneDNN picks on the test machine (16-channel
 * blocks on AVX-512); these reach the others.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/bnorm.h"

typedef void (*fwd_fn)(const bn_view *, const float *, float *, const float *, const float *,
                       float, int, float *, float *, float *, double *);
typedef void (*bwd_fn)(const bn_view *, const float *, const float *, float *, const float *,
                       const float *, const float *, const float *, float, int, float *, float *,
                       double *);

static uint64_t rng = 88172645463325252ull;

static double uniform(void) /* in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static bn_view make_view(int64_t n, int64_t c, int64_t h, int64_t w, int64_t cb)
{
    bn_view v;
    int64_t nblk = (c + cb - 1) / cb;
    v.n = n, v.c = c, v.h = h, v.w = w, v.cb = cb, v.cpad = nblk * cb;
    v.sw = cb;
    v.sh = w * cb;
    v.sc = h * w * cb;
    v.sn = nblk * v.sc;
    return v;
}

static int64_t at(const bn_view *v, int64_t n, int64_t c, int64_t h, int64_t w)
{
    return n * v->sn + (c / v->cb) * v->sc + h * v->sh + w * v->sw + c % v->cb;
}

/* Relative L2 distance over the valid elements. */
typedef struct {
    double num, den;
} dist;

static void acc(dist *d, double ref, double got)
{
    d->num += (got - ref) * (got - ref);
    d->den += ref * ref;
}

static double rel(const dist *d)
{
    return sqrt(d->num / (d->den > 0 ? d->den : 1e-300));
}

static int run_case(int64_t N, int64_t C, int64_t H, int64_t W, int64_t cb, int relu,
                    double offset, fwd_fn fwd, bwd_fn bwd, const char *which)
{
    bn_view v = make_view(N, C, H, W, cb);
    size_t total = (size_t)(N * v.sn);
    float *x = calloc(total, sizeof *x), *y = calloc(total, sizeof *y);
    float *dy = calloc(total, sizeof *dy), *dx = calloc(total, sizeof *dx);
    float *gamma = malloc((size_t)C * sizeof *gamma), *beta = malloc((size_t)C * sizeof *beta);
    float *mean = malloc((size_t)v.cpad * sizeof *mean), *var = malloc((size_t)v.cpad * sizeof *var);
    float *dgamma = malloc((size_t)C * sizeof *dgamma), *dbeta = malloc((size_t)C * sizeof *dbeta);
    float *coef = malloc(bn_coef_floats(&v) * sizeof *coef);
    double *red = malloc(bn_reduce_doubles(&v) * sizeof *red);
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(dy);
    assert_non_null(dx);
    assert_non_null(gamma);
    assert_non_null(beta);
    assert_non_null(mean);
    assert_non_null(var);
    assert_non_null(dgamma);
    assert_non_null(dbeta);
    assert_non_null(coef);
    assert_non_null(red);
    /* padding channels hold garbage on input, as an arena may */
    for (size_t i = 0; i < total; i++) {
        x[i] = 1e3f;
        dy[i] = -1e3f;
        y[i] = dx[i] = 7.0f;
    }
    for (int64_t c = 0; c < C; c++) {
        gamma[c] = (float)(1.0 + 0.5 * uniform());
        beta[c] = (float)(0.3 * uniform());
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++) {
                    x[at(&v, n, c, h, w)] = (float)(offset + 0.1 * c + uniform());
                    dy[at(&v, n, c, h, w)] = (float)uniform();
                }
    }
    const float eps = 1e-5f;
    fwd(&v, x, y, gamma, beta, eps, relu, mean, var, coef, red);
    bwd(&v, x, dy, dx, gamma, mean, var, coef, eps, relu, dgamma, dbeta, red);

    dist dy_out = {0, 0}, d_mean = {0, 0}, d_var = {0, 0}, d_dx = {0, 0}, d_dg = {0, 0},
         d_db = {0, 0};
    int bad_padding = 0;
    const double M = (double)(N * H * W);
    for (int64_t c = 0; c < v.cpad; c++)
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++)
                    if (c >= C && (y[at(&v, n, c, h, w)] != 0.0f || dx[at(&v, n, c, h, w)] != 0.0f))
                        bad_padding++;
    for (int64_t c = 0; c < C; c++) {
        double s = 0, s2 = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++)
                    s += x[at(&v, n, c, h, w)];
        double mu = s / M;
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++) {
                    double d = x[at(&v, n, c, h, w)] - mu;
                    s2 += d * d;
                }
        double vr = s2 / M, inv = 1.0 / sqrt(vr + (double)eps);
        acc(&d_mean, mu, mean[c]);
        acc(&d_var, vr, var[c]);
        /* the ReLU's mask is the kernel's own (y > 0): where the
         * pre-activation is within rounding of 0, either side is right */
        double sg = 0, sgx = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++) {
                    int64_t i = at(&v, n, c, h, w);
                    double xh = (x[i] - mu) * inv, t = xh * gamma[c] + beta[c];
                    acc(&dy_out, relu && t < 0 ? 0.0 : t, y[i]);
                    double g = relu && !(y[i] > 0.0f) ? 0.0 : dy[i];
                    sg += g;
                    sgx += g * xh;
                }
        acc(&d_db, sg, dbeta[c]);
        acc(&d_dg, sgx, dgamma[c]);
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++) {
                    int64_t i = at(&v, n, c, h, w);
                    double xh = (x[i] - mu) * inv;
                    double g = relu && !(y[i] > 0.0f) ? 0.0 : dy[i];
                    acc(&d_dx, gamma[c] * inv * (g - sg / M - xh * sgx / M), dx[i]);
                }
    }
    double worst = fmax(fmax(fmax(rel(&dy_out), rel(&d_mean)), fmax(rel(&d_var), rel(&d_dx))),
                        fmax(rel(&d_dg), rel(&d_db)));
    int fail = worst > 2e-5 || bad_padding || !isfinite(worst);
    if (fail)
        print_message("%s n%lld c%lld %lldx%lld cb%lld relu%d offset %g: y %.2g mean %.2g var %.2g "
                      "dx %.2g dgamma %.2g dbeta %.2g, %d padding values not 0\n",
                      which, (long long)N, (long long)C, (long long)H, (long long)W,
                      (long long)cb, relu, offset, rel(&dy_out), rel(&d_mean), rel(&d_var),
                      rel(&d_dx), rel(&d_dg), rel(&d_db), bad_padding);
    free(x);
    free(y);
    free(dy);
    free(dx);
    free(gamma);
    free(beta);
    free(mean);
    free(var);
    free(dgamma);
    free(dbeta);
    free(coef);
    free(red);
    return fail;
}

static const struct {
    int64_t n, c, h, w, cb;
} shapes[] = {
    {3, 5, 4, 6, 1},   /* plain */
    {3, 16, 5, 7, 16}, /* one full block */
    {2, 20, 3, 5, 16}, /* a padded second block */
    {3, 8, 5, 7, 8},   {2, 12, 4, 3, 8}, /* 8-channel blocks, full and padded */
    {4, 24, 1, 1, 8},  {5, 33, 1, 1, 16}, /* 1x1: statistics over the batch */
    {2, 6, 3, 3, 4},   /* another block size: the generic kernels */
};

static void check_instance(fwd_fn fwd, bwd_fn bwd, const char *which)
{
    int failures = 0, cases = 0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int relu = 0; relu <= 1; relu++)
            for (int o = 0; o < 2; o++) {
                failures += run_case(shapes[k].n, shapes[k].c, shapes[k].h, shapes[k].w,
                                     shapes[k].cb, relu, o ? 20.0 : 0.0, fwd, bwd, which);
                cases++;
            }
    print_message("%s: %d of %d cases outside 2e-5 of the float64 reference\n", which,
                  failures, cases);
    assert_int_equal(failures, 0);
}

static void test_dispatched(void **state)
{
    (void)state;
    check_instance(bn_forward_train, bn_backward, "dispatched");
}

static void test_baseline(void **state)
{
    (void)state;
    check_instance(bn_forward_train_base, bn_backward_base, "baseline");
}

/* The check itself fails when a kernel is wrong: a gamma off by 1e-3 in
 * one channel is caught. */
static void fwd_broken(const bn_view *v, const float *x, float *y, const float *gamma,
                       const float *beta, float eps, int relu, float *mean, float *var,
                       float *coef, double *red)
{
    float g[64];
    memcpy(g, gamma, (size_t)v->c * sizeof *g);
    g[v->c - 1] *= 1.001f;
    bn_forward_train(v, x, y, g, beta, eps, relu, mean, var, coef, red);
}

static void test_check_catches_error(void **state)
{
    (void)state;
    assert_int_equal(run_case(3, 16, 5, 7, 16, 0, 0.0, fwd_broken, bn_backward, "broken"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatched),
        cmocka_unit_test(test_baseline),
        cmocka_unit_test(test_check_catches_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

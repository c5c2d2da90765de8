/*
 * test_trainer_optim.c - the optimizer a trainer makes from its own
 * options honours max_grad_norm and no_decay_bn_bias, as a standalone
 * distill_optimizer does: one SGD step checked element by element against
 * the update computed here from the gradient the step left in the model.
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

#include "distill.h"

#define CHECK(call)                                                                   \
    do {                                                                              \
        int rc_ = (call);                                                             \
        if (rc_ != DISTILL_OK)                                                        \
            fail_msg("%s = %d (%s): %s", #call, rc_, distill_strerror(rc_),           \
                     distill_last_error());                                           \
    } while (0)

/* (1, 4, 4) -> conv 3x3 with bias -> batchnorm -> relu -> flatten -> linear */
static distill_model *model(void)
{
    distill_model *m;
    int64_t in[3] = {1, 4, 4};
    CHECK(distill_model_create(&m, "input", 3, in));
    distill_conv2d_options c = DISTILL_CONV2D_OPTIONS_INIT;
    c.kernel_h = c.kernel_w = 3;
    c.pad_h = c.pad_w = 1;
    CHECK(distill_model_add_conv2d(m, "conv", "input", 3, &c));
    CHECK(distill_model_add_batchnorm(m, "bn", "conv", 1e-5f, 0.1f));
    CHECK(distill_model_add_relu(m, "relu", "bn"));
    CHECK(distill_model_add_flatten(m, "flat", "relu"));
    CHECK(distill_model_add_linear(m, "fc", "flat", 4, 1));
    CHECK(distill_model_init_weights(m, DISTILL_INIT_DEFAULT, 11));
    /* BatchNorm scale and shift away from 1 and 0, so decay would move them */
    distill_param_info p = DISTILL_PARAM_INFO_INIT;
    CHECK(distill_model_find_param(m, "bn.weight", &p));
    for (int64_t i = 0; i < p.numel; i++)
        p.data[i] = 1.5f + 0.25f * (float)i;
    CHECK(distill_model_find_param(m, "bn.bias", &p));
    for (int64_t i = 0; i < p.numel; i++)
        p.data[i] = -0.5f + 0.5f * (float)i;
    return m;
}

enum { N = 6 };

/* One trainer step with the given clipping and no-decay settings; checks
 * the new parameters against p0 - lr * (scale * g + wd_i * p0) per element,
 * and returns the global gradient norm. */
static double one_step(double max_grad_norm, int no_decay, int *clipped)
{
    const double lr = 0.5, wd = 0.2;
    distill_model *m = model();
    distill_trainer_options o = DISTILL_TRAINER_OPTIONS_INIT;
    o.batch_size = N;
    o.lr = lr;
    o.momentum = 0;
    o.nesterov = 0;
    o.weight_decay = wd;
    o.schedule = DISTILL_SCHEDULE_CONSTANT;
    o.max_grad_norm = max_grad_norm;
    o.no_decay_bn_bias = no_decay;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));

    int64_t d[4] = {N, 1, 4, 4};
    distill_tensor *x;
    CHECK(distill_tensor_create(&x, 4, d));
    float *xd = distill_tensor_data(x);
    for (int i = 0; i < N * 16; i++)
        xd[i] = (float)((i * 29) % 17) / 17.0f - 0.4f;
    int32_t y[N] = {0, 1, 2, 3, 1, 2};

    size_t np;
    float *p = distill_model_param_block(m, &np);
    float *p0 = malloc(np * sizeof *p0);
    assert_non_null(p0);
    memcpy(p0, p, np * sizeof *p0);
    double loss;
    CHECK(distill_trainer_step(tr, x, y, &loss));
    assert_int_equal(distill_trainer_steps_done(tr), 1);

    /* the step's gradient is left in the gradient block (the optimizer
     * scales it inside the update, never in place) */
    size_t ng;
    const float *g = distill_model_grad_block(m, &ng);
    assert_true(ng == np);
    double sq = 0;
    for (size_t i = 0; i < ng; i++)
        sq += (double)g[i] * (double)g[i];
    double norm = sqrt(sq);
    double scale = 1.0;
    if (max_grad_norm > 0 && norm > max_grad_norm)
        scale = max_grad_norm / (norm + 1e-6);
    *clipped = scale < 1.0;

    for (size_t k = 0; k < distill_model_param_count(m); k++) {
        distill_param_info pi = DISTILL_PARAM_INFO_INIT;
        CHECK(distill_model_param(m, k, &pi));
        if (!pi.trainable)
            continue;
        int nd = pi.kind == DISTILL_PARAM_BIAS || pi.kind == DISTILL_PARAM_BN_SCALE ||
                 pi.kind == DISTILL_PARAM_BN_SHIFT;
        double wdi = no_decay && nd ? 0.0 : wd;
        size_t off = (size_t)(pi.data - p);
        for (int64_t i = 0; i < pi.numel; i++) {
            double q0 = p0[off + (size_t)i], gi = g[off + (size_t)i];
            double want = q0 - lr * (scale * gi + wdi * q0);
            double got = pi.data[i];
            if (fabs(got - want) > 1e-5 * (1.0 + fabs(want)))
                fail_msg("%s[%lld]: %.9g, expected %.9g (clip scale %.6g, wd %g)", pi.name,
                         (long long)i, got, want, scale, wdi);
        }
    }
    free(p0);
    distill_tensor_free(x);
    distill_trainer_free(tr);
    distill_model_free(m);
    return norm;
}

static void test_max_grad_norm(void **state)
{
    (void)state;
    int clipped;
    double norm = one_step(0.0, 0, &clipped); /* the reference run: no clipping */
    assert_false(clipped);
    assert_true(norm > 0.1);
    /* clip to a tenth of the norm: the update uses a tenth of the gradient */
    double n2 = one_step(norm / 10, 0, &clipped);
    assert_true(clipped);
    assert_true(fabs(n2 - norm) < 1e-6 * norm); /* same data, same gradient */
    /* a bound above the norm changes nothing */
    one_step(norm * 2, 0, &clipped);
    assert_false(clipped);
}

static void test_no_decay_bn_bias(void **state)
{
    (void)state;
    int clipped;
    one_step(0.0, 1, &clipped);
    one_step(0.0, 0, &clipped);
}

static void test_bad_max_grad_norm(void **state)
{
    (void)state;
    distill_model *m = model();
    distill_trainer_options o = DISTILL_TRAINER_OPTIONS_INIT;
    distill_trainer *tr;
    o.max_grad_norm = -1;
    assert_int_equal(distill_trainer_create(&tr, m, NULL, &o), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "max_grad_norm"));
    o.max_grad_norm = NAN;
    assert_int_equal(distill_trainer_create(&tr, m, NULL, &o), DISTILL_EINVAL);
    distill_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_max_grad_norm),
        cmocka_unit_test(test_no_decay_bn_bias),
        cmocka_unit_test(test_bad_max_grad_norm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_infer.c - inference of the zoo's models through every path the
 * engine can take, at batch 1 and a larger batch, on 2 threads:
 *
 *   - the former engine's path: every primitive on all threads
 *     (DISTILL_PARALLEL_MIN_MACS=0), the BatchNorm folding and weight
 *     reorders run on every forward (unfrozen), against the double
 *     reference (tests/ref; see check() for the tolerance);
 *   - frozen (distill_model_freeze) with the default split (little layers on
 *     one thread), with every primitive on one thread, and on all threads,
 *     each twice (the second forward skips the weight preparation): the
 *     outputs equal the former path's within 1e-5 relative;
 *   - for resnet8 (and resnet18), new weights written between forwards: seen
 *     by the next unfrozen forward, and by a frozen one when they were
 *     written before freezing (the weights prepared for an earlier forward
 *     must not be reused), against the reference.
 *
 * torchvision's models (resnet18/34/50, mobilenet_v2, at
 * 3x32x32) are test_infer_torchvision, this file built with
 * INFER_TORCHVISION, labelled slow.
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
#include "../ref/check.h" /* check_fill_params */
#include "../ref/ref.h"

#ifndef INFER_TORCHVISION
#define INFER_TORCHVISION 0
#endif

#define OK(call)                                                                       \
    do {                                                                               \
        int st_ = (call);                                                              \
        if (st_ != DISTILL_OK)                                                         \
            fail_msg("%s = %d (%s): %s", #call, st_, distill_strerror(st_),            \
                     distill_last_error());                                            \
    } while (0)

static int is_torchvision(const char *name)
{
    static const char *const tv[] = {"resnet18", "resnet34", "resnet50", "mobilenet_v2"};
    for (size_t i = 0; i < sizeof tv / sizeof tv[0]; i++)
        if (strcmp(name, tv[i]) == 0)
            return 1;
    return 0;
}

static distill_model *make(const char *name)
{
    distill_zoo_options o;
    OK(distill_zoo_options_init(&o, DISTILL_ZOO_OPTIONS_VERSION));
    if (is_torchvision(name)) {
        o.in_channels = 3;
        o.height = o.width = 32;
        o.classes = 10;
    }
    distill_model *m = NULL;
    OK(distill_zoo_create(&m, name, &o));
    return m;
}

/* The inference output of m on x (n images) against the reference (its
 * parameters reloaded from m), within 1e-4 of |value| + 0.1 * the largest
 * |value|: the engine is within ~1e-6 of it on these models, while weights
 * prepared from other values than the model's move the outputs by the
 * order of the largest.  (check_forward's bound, from the sum of |terms|,
 * is too loose to tell on deep models with random weights.)  Returns the
 * failures. */
static int check(distill_model *m, ref_model *r, const double *x, int n, const char *what,
                 const char *name)
{
    distill_node_info in = DISTILL_NODE_INFO_INIT, out = DISTILL_NODE_INFO_INIT;
    OK(distill_model_node(m, 0, &in));
    OK(distill_model_find_node(m, distill_model_output_name(m), &out));
    int64_t xd[4] = {n}, yd[2] = {n, out.dims[0]};
    memcpy(xd + 1, in.dims, (size_t)in.rank * sizeof *xd);
    distill_tensor *xf, *y;
    OK(distill_tensor_create(&xf, in.rank + 1, xd));
    OK(distill_tensor_create(&y, 2, yd));
    float *xv = distill_tensor_data(xf);
    for (int64_t i = 0; i < distill_tensor_numel(xf); i++)
        xv[i] = (float)x[i];
    OK(distill_model_forward(m, xf, DISTILL_MODE_INFERENCE, y));
    if (ref_model_reload(r) || ref_forward(r, x, n, 0))
        fail_msg("%s: reference: %s", name, ref_error());
    const double *want = ref_node_output(r, ref_output_node(r));
    const float *v = distill_tensor_data_const(y);
    int64_t k = distill_tensor_numel(y);
    double scale = 0, worst = 0;
    for (int64_t i = 0; i < k; i++)
        scale = fabs(want[i]) > scale ? fabs(want[i]) : scale;
    int fails = 0;
    for (int64_t i = 0; i < k; i++) {
        double d = fabs((double)v[i] - want[i]), tol = 1e-4 * (fabs(want[i]) + 0.1 * scale);
        worst = d / tol > worst ? d / tol : worst;
        if (d > tol && fails++ < 3)
            printf("  %s %s n=%d: output %lld is %.9g, reference %.9g\n", name, what, n,
                   (long long)i, (double)v[i], want[i]);
    }
    printf("  %s %s n=%d: %lld outputs, worst %.3g of tolerance%s\n", name, what, n,
           (long long)k, worst, fails ? ": FAILED" : "");
    distill_tensor_free(xf);
    distill_tensor_free(y);
    return fails;
}

static void set_threshold(const char *v)
{
    if (v)
        assert_int_equal(setenv("DISTILL_PARALLEL_MIN_MACS", v, 1), 0);
    else
        assert_int_equal(unsetenv("DISTILL_PARALLEL_MIN_MACS"), 0);
}

/* Drop m's plans (the threshold is read when a plan is built). */
static void replan(distill_model *m)
{
    int f = distill_model_is_frozen(m);
    OK(distill_model_freeze(m, !f));
    OK(distill_model_freeze(m, f));
}

/* m's inference output on x (n images, float copy xf) into y. */
static void run(distill_model *m, const distill_tensor *xf, distill_tensor *y)
{
    OK(distill_model_forward(m, xf, DISTILL_MODE_INFERENCE, y));
}

/* y equals the engine's former output `want` (every primitive on all
 * threads, weights prepared on each forward) within 1e-5 relative. */
static int same(const distill_tensor *y, const float *want, const char *name, const char *what,
                int n)
{
    const float *v = distill_tensor_data_const(y);
    int64_t k = distill_tensor_numel(y);
    double scale = 0;
    for (int64_t i = 0; i < k; i++)
        scale = fabs(want[i]) > scale ? fabs(want[i]) : scale;
    int fails = 0;
    for (int64_t i = 0; i < k; i++) {
        double d = fabs((double)v[i] - (double)want[i]);
        if (d > 1e-5 * (fabs(want[i]) + 1e-3 * scale) + 1e-7) {
            if (fails++ < 3)
                printf("  %s %s n=%d: output %lld is %.9g, was %.9g\n", name, what, n,
                       (long long)i, (double)v[i], (double)want[i]);
        }
    }
    printf("  %s %s n=%d: %lld outputs as before%s\n", name, what, n, (long long)k,
           fails ? ": FAILED" : "");
    return fails;
}

/* One model through every path, at batch 1 and n_big; returns the
 * failures.  With `full`, also the freeze drill with new weights (each
 * step against the reference). */
static int drill(const char *name, int n_big, uint64_t seed, int full)
{
    distill_model *m = make(name);
    distill_node_info in = DISTILL_NODE_INFO_INIT, out = DISTILL_NODE_INFO_INIT;
    OK(distill_model_node(m, 0, &in));
    OK(distill_model_find_node(m, distill_model_output_name(m), &out));
    size_t per = 1;
    for (int d = 0; d < in.rank; d++)
        per *= (size_t)in.dims[d];
    double *x = malloc((size_t)n_big * per * sizeof *x);
    assert_non_null(x);
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    ref_fill_uniform(x, (size_t)n_big * per, -1.0, 1.0, &rng);
    assert_int_equal(check_fill_params(m, seed), 0);
    ref_model *r = NULL;
    if (ref_model_create(&r, m, NULL))
        fail_msg("%s: reference: %s", name, ref_error());
    int fails = 0;
    for (int k = 0; k < 2; k++) {
        int n = k ? n_big : 1;
        int64_t xd[4] = {n}, yd[2] = {n, out.dims[0]};
        memcpy(xd + 1, in.dims, (size_t)in.rank * sizeof *xd);
        distill_tensor *xf, *y;
        OK(distill_tensor_create(&xf, in.rank + 1, xd));
        OK(distill_tensor_create(&y, 2, yd));
        float *xv = distill_tensor_data(xf);
        for (size_t i = 0; i < (size_t)n * per; i++)
            xv[i] = (float)x[i];
        float *before = malloc((size_t)distill_tensor_numel(y) * sizeof *before);
        assert_non_null(before);
        /* the former engine: all threads everywhere, unfrozen */
        assert_int_equal(check_fill_params(m, seed + (uint64_t)k), 0);
        set_threshold("0");
        replan(m);
        run(m, xf, y);
        memcpy(before, distill_tensor_data_const(y), (size_t)distill_tensor_numel(y) * 4);
        fails += check(m, r, x, n, "all threads, unfrozen", name);
        /* frozen, with the default split, all serial, all parallel */
        static const char *const th[3] = {NULL, "1000000000000", "0"};
        static const char *const what[3] = {"frozen, default split", "frozen, one thread",
                                            "frozen, all threads"};
        OK(distill_model_freeze(m, 1));
        for (int t = 0; t < 3; t++) {
            set_threshold(th[t]);
            replan(m);
            run(m, xf, y); /* prepares the weights */
            fails += same(y, before, name, what[t], n);
            run(m, xf, y); /* reuses them */
            fails += same(y, before, name, what[t], n);
        }
        OK(distill_model_freeze(m, 0));
        set_threshold(NULL);
        replan(m);
        run(m, xf, y);
        fails += same(y, before, name, "unfrozen, default split", n);
        if (full) {
            /* new weights: seen by the next unfrozen forward */
            assert_int_equal(check_fill_params(m, seed + 10 + (uint64_t)k), 0);
            fails += check(m, r, x, n, "unfrozen, new weights", name);
            /* new weights, then frozen: prepared afresh (not those of the
             * last forward), then reused */
            assert_int_equal(check_fill_params(m, seed + 20 + (uint64_t)k), 0);
            OK(distill_model_freeze(m, 1));
            assert_int_equal(distill_model_is_frozen(m), 1);
            fails += check(m, r, x, n, "frozen", name);
            fails += check(m, r, x, n, "frozen, again", name);
            OK(distill_model_freeze(m, 0));
            assert_int_equal(check_fill_params(m, seed + 30 + (uint64_t)k), 0);
            fails += check(m, r, x, n, "unfrozen again, new weights", name);
        }
        free(before);
        distill_tensor_free(xf);
        distill_tensor_free(y);
    }
    ref_model_free(r);
    free(x);
    distill_model_free(m);
    return fails;
}

/* Every zoo model of this file's kind. */
static void test_models(void **state)
{
    (void)state;
    int saved = distill_get_num_threads();
    OK(distill_set_num_threads(2));
    const char *const *names = distill_zoo_names();
    int fails = 0, ran = 0;
    for (int i = 0; names[i]; i++) {
        if (is_torchvision(names[i]) != INFER_TORCHVISION)
            continue;
        /* the deeper CIFAR ResNets add nothing resnet8/14/20 do not test */
        if (!strcmp(names[i], "resnet56") || !strcmp(names[i], "resnet110") ||
            !strcmp(names[i], "resnet44") || !strcmp(names[i], "resnet32"))
            continue;
        fails += drill(names[i], INFER_TORCHVISION ? 2 : 5, 0x1f + (uint64_t)i,
                       !strcmp(names[i], "resnet8") || !strcmp(names[i], "resnet18"));
        ran++;
    }
    set_threshold(NULL);
    OK(distill_set_num_threads(saved));
    assert_int_equal(ran, INFER_TORCHVISION ? 4 : 5);
    assert_int_equal(fails, 0);
}

/* A large batch runs in micro-batches, which prepare the weights once per
 * call: new weights written between two calls are seen by the second. */
static void test_microbatches_new_weights(void **state)
{
    (void)state;
    enum { N = 70 }; /* ResNet-8: 32 + 32 + 6 */
    distill_model *m = make("resnet8");
    double *x = malloc((size_t)N * 784 * sizeof *x);
    assert_non_null(x);
    ref_rng rng;
    ref_rng_seed(&rng, 7);
    ref_fill_uniform(x, (size_t)N * 784, -1.0, 1.0, &rng);
    ref_model *r = NULL;
    assert_int_equal(check_fill_params(m, 1), 0);
    if (ref_model_create(&r, m, NULL))
        fail_msg("reference: %s", ref_error());
    int fails = check(m, r, x, N, "micro-batches", "resnet8");
    assert_int_equal(check_fill_params(m, 2), 0);
    fails += check(m, r, x, N, "micro-batches, new weights", "resnet8");
    assert_int_equal(fails, 0);
    ref_model_free(r);
    free(x);
    distill_model_free(m);
}

/* Bad arguments. */
static void test_freeze_errors(void **state)
{
    (void)state;
    assert_int_equal(distill_model_freeze(NULL, 1), DISTILL_EINVAL);
    assert_int_equal(distill_model_is_frozen(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_freeze_errors),
        cmocka_unit_test(test_models),
#if !INFER_TORCHVISION
        cmocka_unit_test(test_microbatches_new_weights),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

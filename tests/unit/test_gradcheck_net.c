/*
 * test_gradcheck_net.c - a whole residual network against the reference.
 *
 *   input (1, 9, 9)
 *   conv1 3x3 -> bn1 -> relu1                                  (8, 9, 9)
 *   block:  b_conv1 3x3 s2 -> b_bn1 -> b_relu1 -> b_conv2 3x3 -> b_bn2
 *           sc_conv 1x1 s2 -> sc_bn            (shortcut)
 *           b_add = b_bn2 + sc_bn -> block (relu)              (12, 5, 5)
 *   branch: br_conv 1x1 (bias) -> br_act (leaky relu 0.1)      (4, 5, 5)
 *   cat = concat(block, br_act)                                (16, 5, 5)
 *   pool = maxpool 3 s2 p1                                     (16, 3, 3)
 *   gap -> flat -> fc (linear 16 -> 10, bias)                  (10)
 *
 * Checked: the forward pass in both modes at several batch sizes (every
 * node read back), the BatchNorm running statistics after a training
 * forward and their use in inference, the gradients of every parameter and
 * of the input against central differences, with the loss on the output
 * alone and with a second gradient injected at the tapped node "block",
 * and that backward accumulates.  Tolerances: tests/ref/check.h.
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
#include "../ref/check.h"
#include "../ref/ref.h"

#define OK(call)                                                                       \
    do {                                                                               \
        int st_ = (call);                                                              \
        if (st_ != DISTILL_OK)                                                         \
            fail_msg("%s = %d (%s): %s", #call, st_, distill_strerror(st_),            \
                     distill_last_error());                                            \
    } while (0)

#define IN_C 1
#define IN_H 9
#define IN_W 9
#define IN_SIZE (IN_C * IN_H * IN_W)
#define MAX_N 4

static void conv(distill_model *m, const char *name, const char *in, int out, int k, int s,
                 int bias)
{
    distill_conv2d_options o;
    OK(distill_conv2d_options_init(&o, DISTILL_CONV2D_OPTIONS_VERSION));
    o.kernel_h = o.kernel_w = k;
    o.stride_h = o.stride_w = s;
    o.pad_h = o.pad_w = k / 2;
    o.bias = bias;
    OK(distill_model_add_conv2d(m, name, in, out, &o));
}

static distill_model *build_net(uint64_t seed)
{
    distill_model *m = NULL;
    int64_t dims[3] = {IN_C, IN_H, IN_W};
    OK(distill_model_create(&m, "input", 3, dims));
    conv(m, "conv1", "input", 8, 3, 1, 0);
    OK(distill_model_add_batchnorm(m, "bn1", "conv1", 1e-5f, 0.1f));
    OK(distill_model_add_relu(m, "relu1", "bn1"));

    conv(m, "b_conv1", "relu1", 12, 3, 2, 0);
    OK(distill_model_add_batchnorm(m, "b_bn1", "b_conv1", 1e-5f, 0.1f));
    OK(distill_model_add_relu(m, "b_relu1", "b_bn1"));
    conv(m, "b_conv2", "b_relu1", 12, 3, 1, 0);
    OK(distill_model_add_batchnorm(m, "b_bn2", "b_conv2", 1e-5f, 0.1f));
    conv(m, "sc_conv", "relu1", 12, 1, 2, 0);
    OK(distill_model_add_batchnorm(m, "sc_bn", "sc_conv", 1e-5f, 0.2f));
    OK(distill_model_add_add(m, "b_add", "b_bn2", "sc_bn"));
    OK(distill_model_add_relu(m, "block", "b_add"));

    conv(m, "br_conv", "block", 4, 1, 1, 1);
    OK(distill_model_add_leaky_relu(m, "br_act", "br_conv", 0.1f));
    const char *cat_in[2] = {"block", "br_act"};
    OK(distill_model_add_concat(m, "cat", 2, cat_in));
    OK(distill_model_add_maxpool(m, "pool", "cat", 3, 2, 1));
    OK(distill_model_add_global_avgpool(m, "gap", "pool"));
    OK(distill_model_add_flatten(m, "flat", "gap"));
    OK(distill_model_add_linear(m, "fc", "flat", 10, 1));

    distill_node_info info = DISTILL_NODE_INFO_INIT;
    OK(distill_model_find_node(m, "cat", &info));
    assert_int_equal(info.rank, 3);
    assert_int_equal(info.dims[0], 16);
    assert_int_equal(info.dims[1], 5);
    assert_int_equal(info.dims[2], 5);
    assert_string_equal(distill_model_output_name(m), "fc");
    assert_int_equal(check_fill_params(m, seed), 0);
    return m;
}

static void make_input(double *x, int n, uint64_t seed)
{
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    ref_fill_uniform(x, (size_t)n * IN_SIZE, -1, 1, &rng);
}

static void summary(const char *what, int failures)
{
    const check_stats *s = check_stats_get();
    print_message("%s: %d failures; forward: %zu values, worst %.3g of tolerance (max |d| "
                  "%.3g); gradients: %zu values (%zu skipped at kinks), worst %.3g of tolerance "
                  "(max |d| %.3g)\n",
                  what, failures, s->fwd_checked, s->fwd_worst_ratio, s->fwd_max_abs,
                  s->grad_checked, s->grad_skipped, s->grad_worst_ratio, s->grad_max_abs);
    check_stats_reset();
}

/* Forward in both modes at batch 2, 4, then 2 again (cached plans per batch
 * size must not mix), every node read back; running statistics after each
 * training forward; inference after training uses the moved statistics. */
static void test_net_forward(void **state)
{
    (void)state;
    distill_model *m = build_net(1);
    ref_model *r;
    if (ref_model_create(&r, m, NULL) != 0)
        fail_msg("%s", ref_error());
    static const int batches[3] = {2, 4, 2};
    double x[MAX_N * IN_SIZE];
    int failures = 0;
    /* first as a host runs it (only the output kept, buffers reused), then
     * with every node kept and read back */
    for (int read = 0; read < 2; read++)
        for (int i = 0; i < 3; i++) {
            char label[64];
            int n = batches[i];
            make_input(x, n, 10 + (uint64_t)i);
            snprintf(label, sizeof label, "net n%d pass%d%s", n, i, read ? " read" : "");
            failures += check_forward(m, r, x, n, DISTILL_MODE_INFERENCE, read, NULL, label);
            failures += check_forward(m, r, x, n, DISTILL_MODE_TRAINING, read, NULL, label);
            /* statistics moved: inference must see the new ones (check_forward
             * reloads them from the model into the reference) */
            failures += check_forward(m, r, x, n, DISTILL_MODE_INFERENCE, read, NULL, label);
        }
    ref_model_free(r);
    distill_model_free(m);
    summary("net forward", failures);
    assert_int_equal(failures, 0);
}

/* Explicit running-statistics arithmetic for one BatchNorm, spelled out
 * here rather than inside check_forward: after one training forward from
 * running_mean = 0, running_var = 1, with momentum m,
 *   running_mean = m * batch_mean, running_var = (1 - m) + m * unbiased_var,
 * and an inference forward normalizes with exactly those. */
static void test_net_running_stats(void **state)
{
    (void)state;
    distill_model *m = build_net(2);
    const int n = 3;
    double x[MAX_N * IN_SIZE];
    make_input(x, n, 20);

    distill_param_info rm = DISTILL_PARAM_INFO_INIT, rv = DISTILL_PARAM_INFO_INIT;
    OK(distill_model_find_param(m, "sc_bn.running_mean", &rm));
    OK(distill_model_find_param(m, "sc_bn.running_var", &rv));
    for (int64_t k = 0; k < rm.numel; k++) {
        rm.data[k] = 0.0f;
        rv.data[k] = 1.0f;
    }
    ref_model *r;
    if (ref_model_create(&r, m, NULL) != 0)
        fail_msg("%s", ref_error());
    assert_int_equal(ref_forward(r, x, n, 1), 0);
    int bn = ref_find_node(r, "sc_bn");
    const double *mean, *var, *uvar;
    assert_int_equal(ref_bn_batch_stats(r, bn, &mean, &var, &uvar), 0);

    int64_t d[3] = {IN_C, IN_H, IN_W};
    distill_tensor *in = ref_tensor_from(x, n, 3, d);
    assert_non_null(in);
    OK(distill_model_forward(m, in, DISTILL_MODE_TRAINING, NULL));
    const double mom = 0.2; /* sc_bn was built with momentum 0.2 */
    double max_err = 0;
    int bad = 0;
    for (int64_t c = 0; c < rm.numel; c++) {
        double want_m = mom * mean[c], want_v = (1 - mom) + mom * uvar[c];
        double em = fabs(rm.data[c] - want_m), ev = fabs(rv.data[c] - want_v);
        /* float statistics of 75 values of magnitude <= ~5: 1e-5 is ~100 ulps */
        bad += em > 1e-5 * (1 + fabs(want_m)) || ev > 1e-5 * (1 + fabs(want_v));
        max_err = fmax(max_err, fmax(em, ev));
        /* the unbiased variance is not the biased one (75 / 74) */
        assert_true(fabs(uvar[c] - var[c] * 75.0 / 74.0) < 1e-12 * (1 + var[c]));
    }
    print_message("sc_bn running stats after one training forward: max |d| %.3g, %d wrong\n",
                  max_err, bad);
    assert_int_equal(bad, 0);

    /* inference uses them: compare the whole net with the reference reloaded */
    int failures = check_forward(m, r, x, n, DISTILL_MODE_INFERENCE, 1, NULL,
                                 "net stats infer");
    /* and inference differs from training (batch stats) on this net */
    distill_tensor *yi = NULL, *yt = NULL;
    int64_t od[2] = {n, 10};
    OK(distill_tensor_create(&yi, 2, od));
    OK(distill_tensor_create(&yt, 2, od));
    OK(distill_model_forward(m, in, DISTILL_MODE_INFERENCE, yi));
    OK(distill_model_forward(m, in, DISTILL_MODE_TRAINING, yt));
    double diff = 0;
    for (int k = 0; k < n * 10; k++)
        diff = fmax(diff, fabs(distill_tensor_data(yi)[k] - distill_tensor_data(yt)[k]));
    print_message("max |inference - training| output difference: %.3g\n", diff);
    assert_true(diff > 1e-3);

    distill_tensor_free(yi);
    distill_tensor_free(yt);
    distill_tensor_free(in);
    ref_model_free(r);
    distill_model_free(m);
    summary("net running stats", failures);
    assert_int_equal(failures, 0);
}

static void test_net_gradcheck_output(void **state)
{
    (void)state;
    distill_model *m = build_net(3);
    ref_model *r;
    if (ref_model_create(&r, m, NULL) != 0)
        fail_msg("%s", ref_error());
    double x[MAX_N * IN_SIZE];
    const int n = 3;
    make_input(x, n, 30);
    const char *taps[1] = {"fc"};
    int failures = check_backward(m, r, x, n, 1, taps, 31, NULL, "net L=sum(fc*R)");
    ref_model_free(r);
    distill_model_free(m);
    summary("net gradcheck (output)", failures);
    assert_int_equal(failures, 0);
}

/* L = sum(fc * R1) + sum(block * R2): a gradient injected at an intermediate
 * node adds to the one flowing back from the output. */
static void test_net_gradcheck_two_taps(void **state)
{
    (void)state;
    distill_model *m = build_net(4);
    ref_model *r;
    if (ref_model_create(&r, m, NULL) != 0)
        fail_msg("%s", ref_error());
    double x[MAX_N * IN_SIZE];
    int failures = 0;
    const char *taps[2] = {"fc", "block"};
    make_input(x, 4, 40);
    failures += check_backward(m, r, x, 4, 2, taps, 41, NULL, "net L=fc*R1+block*R2 n4");
    /* tap order must not matter, and a tap may be an early node */
    const char *taps2[3] = {"relu1", "fc", "cat"};
    make_input(x, 2, 42);
    failures += check_backward(m, r, x, 2, 3, taps2, 43, NULL, "net relu1,fc,cat n2");
    ref_model_free(r);
    distill_model_free(m);
    summary("net gradcheck (taps)", failures);
    assert_int_equal(failures, 0);
}

/* Two forward+backward pairs without zero_grad in between give twice the
 * gradient of one; zero_grad clears. */
static void test_net_grad_accumulates(void **state)
{
    (void)state;
    distill_model *m = build_net(5);
    const int n = 2;
    double x[MAX_N * IN_SIZE], R[MAX_N * 10];
    make_input(x, n, 50);
    ref_rng rng;
    ref_rng_seed(&rng, 51);
    ref_fill_uniform(R, (size_t)n * 10, -1, 1, &rng);
    int64_t d[3] = {IN_C, IN_H, IN_W}, od[1] = {10};
    distill_tensor *in = ref_tensor_from(x, n, 3, d), *g = ref_tensor_from(R, n, 1, od);
    assert_non_null(in);
    assert_non_null(g);
    const char *names[1] = {"fc"};
    const distill_tensor *grads[1] = {g};

    size_t count = 0;
    float *gb = distill_model_grad_block(m, &count);
    assert_non_null(gb);
    assert_int_equal((int64_t)count, distill_model_num_params(m));
    float *once = malloc(count * sizeof *once);
    assert_non_null(once);

    OK(distill_model_zero_grad(m));
    OK(distill_model_forward(m, in, DISTILL_MODE_TRAINING, NULL));
    OK(distill_model_backward(m, 1, names, grads));
    memcpy(once, gb, count * sizeof *once);
    OK(distill_model_forward(m, in, DISTILL_MODE_TRAINING, NULL));
    OK(distill_model_backward(m, 1, names, grads));
    double max_rel = 0, gmax = 0;
    size_t nonzero = 0;
    for (size_t k = 0; k < count; k++)
        gmax = fmax(gmax, fabs(once[k]));
    for (size_t k = 0; k < count; k++) {
        nonzero += once[k] != 0.0f;
        max_rel = fmax(max_rel, fabs(gb[k] - 2.0 * once[k]) / (fabs(once[k]) + 1e-4 * gmax));
    }
    print_message("accumulation: %zu gradients, %zu nonzero, max rel |g2 - 2 g1| %.3g\n", count,
                  nonzero, max_rel);
    assert_true(nonzero > count / 2);
    assert_true(max_rel < 1e-4);

    OK(distill_model_zero_grad(m));
    size_t left = 0;
    for (size_t k = 0; k < count; k++)
        left += gb[k] != 0.0f;
    assert_int_equal(left, 0);

    free(once);
    distill_tensor_free(in);
    distill_tensor_free(g);
    distill_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_forward),
        cmocka_unit_test(test_net_running_stats),
        cmocka_unit_test(test_net_gradcheck_output),
        cmocka_unit_test(test_net_gradcheck_two_taps),
        cmocka_unit_test(test_net_grad_accumulates),
    };
    distill_set_num_threads(2);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_layers.c - every op, alone, against the double-precision reference.
 *
 * For each op a tiny model (input -> op, sometimes with a neighbour that
 * gives the op something to differentiate) is built for several shapes:
 * odd sizes, stride 2, padding, dilation 2, groups 2, depthwise, with and
 * without bias, batch 1 and 3, channel counts 3, 5, 17 as well as 16, 32.
 * check_model() (tests/ref/check.c) then compares
 *   - the forward pass in inference and in training mode, the output and
 *     every node read back with distill_model_read_node, and the BatchNorm
 *     running statistics after the training forward;
 *   - the backward pass, every trainable parameter and the input, against
 *     central differences of the reference in double.
 * Tolerances are documented in tests/ref/check.h.  Dropout, being random,
 * is checked on its own (test_dropout, test_dropout_on_input).
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

static distill_model *new_model3(int64_t c, int64_t h, int64_t w)
{
    distill_model *m = NULL;
    int64_t dims[3] = {c, h, w};
    OK(distill_model_create(&m, "input", 3, dims));
    return m;
}

static distill_model *new_model1(int64_t f)
{
    distill_model *m = NULL;
    int64_t dims[1] = {f};
    OK(distill_model_create(&m, "input", 1, dims));
    return m;
}

/* Fill the parameters and an input batch of U(lo, hi), run the whole drill,
 * free the model.  Returns the number of failures. */
static int run(distill_model *m, int n, double lo, double hi, uint64_t seed, const char *label)
{
    distill_node_info in = DISTILL_NODE_INFO_INIT;
    OK(distill_model_node(m, 0, &in));
    size_t size = (size_t)in.dims[0] * (in.rank == 3 ? (size_t)(in.dims[1] * in.dims[2]) : 1);
    double *x = malloc((size_t)n * size * sizeof *x);
    assert_non_null(x);
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    ref_fill_uniform(x, (size_t)n * size, lo, hi, &rng);
    int failures = 0;
    if (check_fill_params(m, seed * 7 + 1) != 0)
        failures++;
    else
        failures += check_model(m, x, n, seed, label);
    free(x);
    distill_model_free(m);
    return failures;
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

/* ------------------------------------------------------------------ input */

static void test_input(void **state)
{
    (void)state;
    int failures = 0;
    failures += run(new_model3(3, 4, 5), 2, -1, 1, 11, "input 3x4x5 n2");
    failures += run(new_model1(7), 3, -1, 1, 12, "input 7 n3");
    summary("input", failures);
    assert_int_equal(failures, 0);
}

/* ----------------------------------------------------------------- conv2d */

typedef struct conv_case {
    int c, h, w, o;
    int kh, kw, sh, sw, ph, pw, dh, dw, g, bias, n;
} conv_case;

static const conv_case conv_cases[] = {
    /*  c  h  w   o  kh kw sh sw ph pw dh dw  g  b  n */
    {3, 7, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},     /* odd sizes */
    {3, 7, 5, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 3},    /* stride 2, no bias */
    {5, 9, 7, 17, 3, 3, 1, 1, 2, 2, 2, 2, 1, 1, 2},    /* dilation 2 */
    {4, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, 1, 3},     /* groups 2 */
    {16, 6, 6, 16, 3, 3, 1, 1, 1, 1, 1, 1, 16, 0, 2},  /* depthwise */
    {17, 5, 7, 17, 3, 3, 2, 2, 1, 1, 1, 1, 17, 1, 3},  /* depthwise, odd, stride 2 */
    {4, 5, 5, 8, 3, 3, 1, 1, 1, 1, 1, 1, 4, 1, 2},     /* depthwise, multiplier 2 */
    {32, 4, 4, 32, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 2},   /* pointwise */
    {16, 5, 5, 32, 3, 3, 1, 1, 0, 0, 1, 1, 1, 0, 1},   /* no padding */
    {16, 8, 8, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 2},   /* 16 -> 32, stride 2 */
    {3, 8, 8, 8, 1, 3, 1, 2, 0, 1, 1, 1, 1, 1, 2},     /* 1x3 kernel, stride (1, 2) */
    {1, 9, 9, 3, 3, 3, 3, 3, 0, 0, 1, 1, 1, 1, 3},     /* stride = kernel */
    {8, 9, 9, 12, 3, 3, 1, 1, 2, 2, 2, 2, 4, 1, 2},    /* groups 4, dilated */
    {6, 7, 5, 6, 5, 5, 2, 1, 2, 2, 1, 1, 3, 0, 1},     /* 5x5, stride (2, 1), groups 3 */
    {3, 6, 7, 5, 3, 2, 1, 1, 0, 1, 2, 1, 1, 1, 3},     /* dilation only in h */
};

static void test_conv2d(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++) {
        const conv_case *k = &conv_cases[i];
        char label[128];
        snprintf(label, sizeof label, "conv%zu %dx%dx%d->%d", i, k->c, k->h, k->w, k->o);
        print_message("%s: k %dx%d s %d,%d p %d,%d d %d,%d g %d bias %d n %d\n", label, k->kh,
                      k->kw, k->sh, k->sw, k->ph, k->pw, k->dh, k->dw, k->g, k->bias, k->n);
        distill_model *m = new_model3(k->c, k->h, k->w);
        distill_conv2d_options o;
        OK(distill_conv2d_options_init(&o, DISTILL_CONV2D_OPTIONS_VERSION));
        o.kernel_h = k->kh;
        o.kernel_w = k->kw;
        o.stride_h = k->sh;
        o.stride_w = k->sw;
        o.pad_h = k->ph;
        o.pad_w = k->pw;
        o.dilation_h = k->dh;
        o.dilation_w = k->dw;
        o.groups = k->g;
        o.bias = k->bias;
        OK(distill_model_add_conv2d(m, "conv", "input", k->o, &o));
        failures += run(m, k->n, -1, 1, 100 + i, label);
    }
    summary("conv2d", failures);
    assert_int_equal(failures, 0);
}

/* Conv with the default options (NULL): 1x1, stride 1, bias. */
static void test_conv2d_default_options(void **state)
{
    (void)state;
    distill_model *m = new_model3(5, 3, 4);
    OK(distill_model_add_conv2d(m, "conv", "input", 7, NULL));
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    OK(distill_model_find_node(m, "conv", &info));
    assert_int_equal(info.kernel_h, 1);
    assert_int_equal(info.kernel_w, 1);
    assert_int_equal(info.bias, 1);
    assert_int_equal(info.groups, 1);
    int failures = run(m, 2, -1, 1, 150, "conv default opts");
    summary("conv2d default options", failures);
    assert_int_equal(failures, 0);
}

/* ----------------------------------------------------------------- linear */

static void test_linear(void **state)
{
    (void)state;
    static const struct { int f, o, bias, n; } cases[] = {
        {5, 3, 1, 1}, {17, 16, 0, 3}, {32, 10, 1, 2}, {1, 7, 1, 3}, {64, 17, 1, 4}, {16, 1, 0, 2},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char label[128];
        snprintf(label, sizeof label, "linear %d->%d b%d n%d", cases[i].f, cases[i].o,
                 cases[i].bias, cases[i].n);
        distill_model *m = new_model1(cases[i].f);
        OK(distill_model_add_linear(m, "fc", "input", cases[i].o, cases[i].bias));
        failures += run(m, cases[i].n, -1, 1, 200 + i, label);
    }
    summary("linear", failures);
    assert_int_equal(failures, 0);
}

/* -------------------------------------------------------------- batchnorm */

static void test_batchnorm(void **state)
{
    (void)state;
    static const struct {
        int rank, c, h, w, n;
        float eps, momentum;
        double scale; /* inputs are U(-scale, scale) + offset */
        double offset;
    } cases[] = {
        {3, 3, 7, 5, 2, 1e-5f, 0.1f, 1.0, 0.0},
        {3, 17, 3, 3, 3, 1e-5f, 0.1f, 2.0, 0.5},
        {3, 16, 4, 4, 1, 1e-5f, 0.1f, 1.0, -0.3},
        {3, 5, 1, 1, 4, 1e-5f, 0.1f, 1.0, 0.0},   /* 1x1 spatial: stats over the batch */
        {1, 5, 1, 1, 3, 1e-5f, 0.1f, 1.0, 0.0},
        {1, 32, 1, 1, 4, 1e-5f, 0.1f, 3.0, 1.0},
        {1, 17, 1, 1, 2, 1e-5f, 0.1f, 1.0, 0.0},
        {3, 4, 5, 3, 3, 1e-3f, 0.3f, 0.02, 0.0},  /* eps matters: variance ~1e-4 */
        {1, 7, 1, 1, 4, 1e-3f, 0.5f, 0.02, 0.1},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char label[128];
        distill_model *m;
        if (cases[i].rank == 3) {
            snprintf(label, sizeof label, "bn %dx%dx%d n%d eps%g", cases[i].c, cases[i].h,
                     cases[i].w, cases[i].n, cases[i].eps);
            m = new_model3(cases[i].c, cases[i].h, cases[i].w);
        } else {
            snprintf(label, sizeof label, "bn %d n%d eps%g", cases[i].c, cases[i].n,
                     cases[i].eps);
            m = new_model1(cases[i].c);
        }
        OK(distill_model_add_batchnorm(m, "bn", "input", cases[i].eps, cases[i].momentum));
        distill_node_info info = DISTILL_NODE_INFO_INIT;
        OK(distill_model_find_node(m, "bn", &info));
        assert_true(info.eps == cases[i].eps);
        assert_true(info.momentum == cases[i].momentum);
        double lo = cases[i].offset - cases[i].scale, hi = cases[i].offset + cases[i].scale;
        failures += run(m, cases[i].n, lo, hi, 300 + i, label);
    }
    summary("batchnorm", failures);
    assert_int_equal(failures, 0);
}

/* ------------------------------------------------------------ activations */

enum { ACT_RELU, ACT_RELU6, ACT_LEAKY, ACT_GELU };

static void add_act(distill_model *m, int act, double param)
{
    switch (act) {
    case ACT_RELU:
        OK(distill_model_add_relu(m, "act", "input"));
        break;
    case ACT_RELU6:
        OK(distill_model_add_relu6(m, "act", "input"));
        break;
    case ACT_LEAKY:
        OK(distill_model_add_leaky_relu(m, "act", "input", (float)param));
        break;
    default:
        OK(distill_model_add_gelu(m, "act", "input", (int)param));
        break;
    }
}

static int run_activation(int act, double param, double range, const char *name, uint64_t seed)
{
    int failures = 0;
    char label[128];
    snprintf(label, sizeof label, "%s 3x7x5 n3", name);
    distill_model *m = new_model3(3, 7, 5);
    add_act(m, act, param);
    failures += run(m, 3, -range, range, seed, label);

    snprintf(label, sizeof label, "%s 17 n2", name);
    m = new_model1(17);
    add_act(m, act, param);
    failures += run(m, 2, -range, range, seed + 1, label);

    snprintf(label, sizeof label, "%s 16x2x2 n1", name);
    m = new_model3(16, 2, 2);
    add_act(m, act, param);
    failures += run(m, 1, -range, range, seed + 2, label);
    return failures;
}

static void test_relu(void **state)
{
    (void)state;
    int failures = run_activation(ACT_RELU, 0, 3.0, "relu", 400);
    summary("relu", failures);
    assert_int_equal(failures, 0);
}

static void test_relu6(void **state)
{
    (void)state;
    /* U(-9, 9): a third of the elements sit above the cap of 6 */
    int failures = run_activation(ACT_RELU6, 0, 9.0, "relu6", 410);
    summary("relu6", failures);
    assert_int_equal(failures, 0);
}

static void test_leaky_relu(void **state)
{
    (void)state;
    int failures = run_activation(ACT_LEAKY, 0.1, 3.0, "leaky0.1", 420);
    failures += run_activation(ACT_LEAKY, 0.25, 3.0, "leaky0.25", 425);
    distill_model *m = new_model1(4);
    OK(distill_model_add_leaky_relu(m, "act", "input", 0.1f));
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    OK(distill_model_find_node(m, "act", &info));
    assert_true(info.alpha == 0.1f);
    distill_model_free(m);
    summary("leaky_relu", failures);
    assert_int_equal(failures, 0);
}

static void test_gelu(void **state)
{
    (void)state;
    int failures = run_activation(ACT_GELU, 0, 4.0, "gelu", 430);
    summary("gelu (erf)", failures);
    assert_int_equal(failures, 0);
}

static void test_gelu_tanh(void **state)
{
    (void)state;
    int failures = run_activation(ACT_GELU, 1, 4.0, "gelu_tanh", 440);
    summary("gelu (tanh)", failures);
    assert_int_equal(failures, 0);
}

/* The two GELU forms differ by up to 4.7e-4 near |x| = 2.7: an engine that
 * computes the wrong one fails the reference of the other. */
static void test_gelu_forms_differ(void **state)
{
    (void)state;
    distill_model *m = new_model1(1);
    OK(distill_model_add_gelu(m, "act", "input", 0));
    ref_model *r;
    assert_int_equal(ref_model_create(&r, m, NULL), 0);
    double x[1] = {2.7}, y_erf, y_tanh;
    assert_int_equal(ref_forward(r, x, 1, 0), 0);
    y_erf = ref_node_output(r, 1)[0];
    ref_model_free(r);
    ref_options o = REF_OPTIONS_INIT;
    o.override_attrs = 1;
    o.gelu_tanh = 1;
    assert_int_equal(ref_model_create(&r, m, &o), 0);
    assert_int_equal(ref_forward(r, x, 1, 0), 0);
    y_tanh = ref_node_output(r, 1)[0];
    ref_model_free(r);
    distill_model_free(m);
    print_message("gelu(2.7): erf %.9f tanh %.9f\n", y_erf, y_tanh);
    assert_true(fabs(y_erf - y_tanh) > 4e-4);
    assert_true(fabs(y_erf - 2.6906391707317905) < 1e-12);
    assert_true(fabs(y_tanh - 2.6911124053605326) < 1e-12);
}

/* ------------------------------------------------------------------ pools */

typedef struct pool_case {
    int c, h, w, k, s, p, n;
} pool_case;

static const pool_case pool_cases[] = {
    {3, 7, 5, 2, 2, 0, 1},   /* odd sizes, floor */
    {5, 7, 5, 3, 2, 1, 3},   /* padded, stride 2 */
    {16, 6, 6, 3, 1, 1, 2},  /* same size */
    {17, 9, 9, 2, 1, 0, 2},  /* overlapping */
    {4, 8, 8, 3, 3, 0, 1},   /* stride = kernel */
    {3, 5, 5, 5, 1, 2, 2},   /* pad = kernel / 2 */
    {32, 4, 4, 2, 2, 0, 3},
};

/* distill_model_add_pool2d: non-square kernels and strides, padding that
 * differs between the sides (ONNX's SAME_UPPER / SAME_LOWER, asymmetric pads) */
typedef struct pool2d_case {
    int c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, n;
} pool2d_case;

static const pool2d_case pool2d_cases[] = {
    {3, 6, 6, 2, 2, 1, 1, 0, 0, 1, 1, 2}, /* SAME_UPPER, kernel 2 */
    {3, 6, 6, 2, 2, 1, 1, 1, 1, 0, 0, 2}, /* SAME_LOWER, kernel 2 */
    {4, 7, 6, 3, 2, 2, 1, 1, 0, 0, 1, 2}, /* non-square kernel and stride */
    {2, 5, 8, 3, 3, 2, 2, 0, 1, 1, 1, 1}, /* odd sizes, mixed pads */
};

static int run_pool2d(int op)
{
    int failures = 0;
    for (size_t i = 0; i < sizeof pool2d_cases / sizeof pool2d_cases[0]; i++) {
        const pool2d_case *k = &pool2d_cases[i];
        char label[160];
        snprintf(label, sizeof label, "%s %dx%dx%d k%dx%d s%dx%d pads %d,%d,%d,%d n%d",
                 op == DISTILL_OP_MAXPOOL ? "maxpool" : "avgpool", k->c, k->h, k->w, k->kh,
                 k->kw, k->sh, k->sw, k->pt, k->pl, k->pb, k->pr, k->n);
        distill_model *m = new_model3(k->c, k->h, k->w);
        distill_pool2d_options o;
        OK(distill_pool2d_options_init(&o, DISTILL_POOL2D_OPTIONS_VERSION));
        o.kernel_h = k->kh, o.kernel_w = k->kw, o.stride_h = k->sh, o.stride_w = k->sw;
        o.pad_top = k->pt, o.pad_left = k->pl, o.pad_bottom = k->pb, o.pad_right = k->pr;
        OK(distill_model_add_pool2d(m, "pool", "input", op, &o));
        distill_node_info info = DISTILL_NODE_INFO_INIT;
        OK(distill_model_find_node(m, "pool", &info));
        assert_int_equal(info.dims[1], (k->h + k->pt + k->pb - k->kh) / k->sh + 1);
        assert_int_equal(info.dims[2], (k->w + k->pl + k->pr - k->kw) / k->sw + 1);
        assert_int_equal(info.pad_h, k->pt);
        assert_int_equal(info.pad_w, k->pl);
        /* saved and loaded: the bottom and right padding come back */
        distill_model *c;
        OK(distill_model_clone(&c, m));
        distill_node_info ci = DISTILL_NODE_INFO_INIT;
        OK(distill_model_find_node(c, "pool", &ci));
        assert_memory_equal(ci.dims, info.dims, sizeof ci.dims);
        distill_model_free(c);
        failures += run(m, k->n, -1, 1, 700 + i + (op == DISTILL_OP_MAXPOOL ? 0 : 50), label);
    }
    return failures;
}

static int run_pools(int op)
{
    int failures = run_pool2d(op);
    for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++) {
        const pool_case *k = &pool_cases[i];
        char label[128];
        snprintf(label, sizeof label, "%s %dx%dx%d k%d s%d p%d n%d",
                 op == DISTILL_OP_MAXPOOL ? "maxpool" : "avgpool", k->c, k->h, k->w, k->k, k->s,
                 k->p, k->n);
        distill_model *m = new_model3(k->c, k->h, k->w);
        if (op == DISTILL_OP_MAXPOOL)
            OK(distill_model_add_maxpool(m, "pool", "input", k->k, k->s, k->p));
        else
            OK(distill_model_add_avgpool(m, "pool", "input", k->k, k->s, k->p));
        distill_node_info info = DISTILL_NODE_INFO_INIT;
        OK(distill_model_find_node(m, "pool", &info));
        assert_int_equal(info.kernel_h, k->k);
        assert_int_equal(info.stride_h, k->s);
        assert_int_equal(info.pad_h, k->p);
        failures += run(m, k->n, -1, 1, 500 + i + (op == DISTILL_OP_MAXPOOL ? 0 : 50), label);
    }
    return failures;
}

static void test_maxpool(void **state)
{
    (void)state;
    int failures = run_pools(DISTILL_OP_MAXPOOL);
    /* all inputs negative: the -inf padding must never win */
    distill_model *m = new_model3(3, 5, 5);
    OK(distill_model_add_maxpool(m, "pool", "input", 3, 2, 1));
    failures += run(m, 2, -2, -1, 580, "maxpool negative inputs");
    summary("maxpool", failures);
    assert_int_equal(failures, 0);
}

static void test_avgpool(void **state)
{
    (void)state;
    int failures = run_pools(DISTILL_OP_AVGPOOL);
    /* all inputs positive: a count_include_pad=False average would differ */
    distill_model *m = new_model3(3, 5, 5);
    OK(distill_model_add_avgpool(m, "pool", "input", 3, 2, 1));
    failures += run(m, 2, 1, 2, 590, "avgpool positive inputs");
    summary("avgpool", failures);
    assert_int_equal(failures, 0);
}

static void test_global_avgpool(void **state)
{
    (void)state;
    int failures = 0;
    distill_model *m = new_model3(3, 7, 5);
    OK(distill_model_add_global_avgpool(m, "gap", "input"));
    failures += run(m, 2, -1, 1, 600, "gap 3x7x5 n2");

    m = new_model3(17, 4, 4);
    OK(distill_model_add_global_avgpool(m, "gap", "input"));
    OK(distill_model_add_flatten(m, "flat", "gap"));
    failures += run(m, 3, -1, 1, 601, "gap+flatten 17x4x4 n3");

    m = new_model3(32, 1, 1);
    OK(distill_model_add_global_avgpool(m, "gap", "input"));
    failures += run(m, 1, -1, 1, 602, "gap 32x1x1 n1");
    summary("global_avgpool", failures);
    assert_int_equal(failures, 0);
}

/* -------------------------------------------------------------------- add */

static void test_add(void **state)
{
    (void)state;
    int failures = 0;
    distill_conv2d_options o;
    OK(distill_conv2d_options_init(&o, DISTILL_CONV2D_OPTIONS_VERSION));

    /* two conv branches */
    distill_model *m = new_model3(4, 5, 5);
    OK(distill_model_add_conv2d(m, "a", "input", 6, &o));
    o.kernel_h = o.kernel_w = 3;
    o.pad_h = o.pad_w = 1;
    o.bias = 0;
    OK(distill_model_add_conv2d(m, "b", "input", 6, &o));
    OK(distill_model_add_add(m, "sum", "a", "b"));
    failures += run(m, 2, -1, 1, 700, "add conv+conv 4x5x5 n2");

    /* the same node twice: its gradient must be counted twice */
    m = new_model3(3, 7, 5);
    OK(distill_model_add_add(m, "sum", "input", "input"));
    failures += run(m, 3, -1, 1, 701, "add x+x 3x7x5 n3");

    /* a residual: x + relu(x) */
    m = new_model3(5, 3, 3);
    OK(distill_model_add_relu(m, "r", "input"));
    OK(distill_model_add_add(m, "sum", "input", "r"));
    failures += run(m, 2, -1, 1, 702, "add x+relu(x) 5x3x3 n2");

    /* vectors */
    m = new_model1(9);
    OK(distill_model_add_linear(m, "a", "input", 5, 1));
    OK(distill_model_add_linear(m, "b", "input", 5, 0));
    OK(distill_model_add_add(m, "sum", "a", "b"));
    failures += run(m, 3, -1, 1, 703, "add linear+linear 9 n3");
    summary("add", failures);
    assert_int_equal(failures, 0);
}

/* ----------------------------------------------------------------- concat */

static void test_concat(void **state)
{
    (void)state;
    int failures = 0;
    distill_conv2d_options o;
    OK(distill_conv2d_options_init(&o, DISTILL_CONV2D_OPTIONS_VERSION));

    distill_model *m = new_model3(3, 5, 7);
    o.kernel_h = o.kernel_w = 3;
    o.pad_h = o.pad_w = 1;
    OK(distill_model_add_conv2d(m, "a", "input", 4, &o));
    o.kernel_h = o.kernel_w = 1;
    o.pad_h = o.pad_w = 0;
    OK(distill_model_add_conv2d(m, "b", "input", 5, &o));
    const char *ins[3] = {"a", "input", "b"};
    OK(distill_model_add_concat(m, "cat", 3, ins));
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    OK(distill_model_find_node(m, "cat", &info));
    assert_int_equal(info.dims[0], 12);
    failures += run(m, 2, -1, 1, 800, "concat a,x,b 3x5x7 n2");

    m = new_model3(17, 3, 3);
    const char *twice[2] = {"input", "input"};
    OK(distill_model_add_concat(m, "cat", 2, twice));
    failures += run(m, 3, -1, 1, 801, "concat x,x 17x3x3 n3");

    m = new_model3(16, 4, 4);
    OK(distill_model_add_relu(m, "r", "input"));
    const char *ins2[2] = {"r", "input"};
    OK(distill_model_add_concat(m, "cat", 2, ins2));
    failures += run(m, 1, -1, 1, 802, "concat relu(x),x 16x4x4 n1");
    summary("concat", failures);
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------- flatten */

static void test_flatten(void **state)
{
    (void)state;
    int failures = 0;
    distill_model *m = new_model3(5, 3, 3);
    OK(distill_model_add_flatten(m, "flat", "input"));
    failures += run(m, 2, -1, 1, 900, "flatten 5x3x3 n2");

    /* the C order must match the linear weight's columns */
    m = new_model3(3, 7, 5);
    OK(distill_model_add_flatten(m, "flat", "input"));
    OK(distill_model_add_linear(m, "fc", "flat", 6, 1));
    failures += run(m, 3, -1, 1, 901, "flatten+linear 3x7x5 n3");

    m = new_model3(4, 6, 6);
    distill_conv2d_options o;
    OK(distill_conv2d_options_init(&o, DISTILL_CONV2D_OPTIONS_VERSION));
    o.kernel_h = o.kernel_w = 3;
    o.stride_h = o.stride_w = 2;
    OK(distill_model_add_conv2d(m, "conv", "input", 5, &o));
    OK(distill_model_add_flatten(m, "flat", "conv"));
    OK(distill_model_add_linear(m, "fc", "flat", 3, 0));
    failures += run(m, 2, -1, 1, 902, "conv+flatten+linear 4x6x6 n2");
    summary("flatten", failures);
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------- softmax */

static void test_softmax(void **state)
{
    (void)state;
    int failures = 0;
    distill_model *m = new_model1(17);
    OK(distill_model_add_softmax(m, "sm", "input"));
    failures += run(m, 3, -4, 4, 1000, "softmax 17 n3");

    m = new_model1(10);
    OK(distill_model_add_linear(m, "fc", "input", 7, 1));
    OK(distill_model_add_softmax(m, "sm", "fc"));
    failures += run(m, 2, -2, 2, 1001, "linear+softmax 10 n2");

    /* large logits: a softmax without the max subtraction overflows */
    m = new_model1(5);
    OK(distill_model_add_softmax(m, "sm", "input"));
    failures += run(m, 2, 60, 100, 1002, "softmax large 5 n2");
    summary("softmax", failures);
    assert_int_equal(failures, 0);
}

/* ---------------------------------------------------------------- dropout */

/* The dropout drill on node "drop" of m, whose input is `src` (the model
 * input, or relu(input), which is the identity on the positive inputs used
 * here). */
static void dropout_drill(distill_model *m, const char *label)
{
    const float p = 0.3f;
    const int n = 4;
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    OK(distill_model_find_node(m, "drop", &info));
    assert_true(info.alpha == p);

    size_t total = (size_t)n * 8 * 8 * 8;
    double *x = malloc(total * sizeof *x), *R = malloc(total * sizeof *R);
    assert_non_null(x);
    assert_non_null(R);
    ref_rng rng;
    ref_rng_seed(&rng, 1100);
    ref_fill_uniform(x, total, 0.5, 1.5, &rng); /* no zeros: a zero output means dropped */
    ref_fill_uniform(R, total, -1, 1, &rng);
    int64_t d[3] = {8, 8, 8};
    distill_tensor *in = ref_tensor_from(x, n, 3, d), *out = ref_tensor_from(x, n, 3, d);
    distill_tensor *g = ref_tensor_from(R, n, 3, d), *dx = ref_tensor_from(x, n, 3, d);
    distill_tensor *rd = ref_tensor_from(x, n, 3, d);
    assert_non_null(in);
    assert_non_null(out);
    assert_non_null(g);
    assert_non_null(dx);
    assert_non_null(rd);
    const float *y = distill_tensor_data(out);
    distill_node_info in_info = DISTILL_NODE_INFO_INIT;
    OK(distill_model_node(m, 0, &in_info));
    OK(distill_model_keep_node(m, in_info.name)); /* to get the input gradient */

    /* inference: the identity, exactly */
    OK(distill_model_forward(m, in, DISTILL_MODE_INFERENCE, out));
    size_t bad = 0;
    for (size_t i = 0; i < total; i++)
        bad += y[i] != (float)x[i];
    print_message("%s inference: %zu of %zu elements changed\n", label, bad, total);
    assert_int_equal(bad, 0);

    /* training: each element 0 or x / (1 - p), about p of them 0 */
    unsigned char *mask1 = malloc(total);
    assert_non_null(mask1);
    OK(distill_model_forward(m, in, DISTILL_MODE_TRAINING, out));
    size_t zeros = 0;
    double max_rel = 0;
    bad = 0;
    for (size_t i = 0; i < total; i++) {
        mask1[i] = y[i] != 0.0f;
        if (!mask1[i]) {
            zeros++;
            continue;
        }
        double want = x[i] / (1.0 - (double)p);
        double rel = fabs(y[i] - want) / want;
        if (rel > max_rel)
            max_rel = rel;
        bad += rel > 1e-6;
    }
    /* binomial(2048, 0.3): mean 614.4, sd 20.7; allow 5 sd */
    double mean = (double)total * p, sd = sqrt((double)total * p * (1 - p));
    print_message("%s training: %zu of %zu zeroed (expected %.1f +- %.1f), kept scaled "
                  "with max rel error %.3g, %zu wrong\n",
                  label, zeros, total, mean, sd, max_rel, bad);
    assert_int_equal(bad, 0);
    assert_true(fabs((double)zeros - mean) <= 5 * sd);

    /* read_node gives the same values as the output */
    OK(distill_model_read_node(m, "drop", rd));
    assert_memory_equal(distill_tensor_data(rd), y, total * sizeof(float));

    /* backward: dx = R * mask / (1 - p) */
    OK(distill_model_zero_grad(m));
    const char *names[1] = {"drop"};
    const distill_tensor *grads[1] = {g};
    OK(distill_model_backward(m, 1, names, grads));
    OK(distill_model_input_grad(m, dx));
    const float *gx = distill_tensor_data(dx);
    double max_err = 0;
    bad = 0;
    for (size_t i = 0; i < total; i++) {
        double want = mask1[i] ? R[i] / (1.0 - (double)p) : 0.0;
        double err = fabs(gx[i] - want);
        if (err > max_err)
            max_err = err;
        bad += err > 1e-6 * (1 + fabs(want));
    }
    print_message("%s backward: max |d| %.3g, %zu wrong\n", label, max_err, bad);
    assert_int_equal(bad, 0);

    /* a second training forward draws a new mask */
    OK(distill_model_forward(m, in, DISTILL_MODE_TRAINING, out));
    size_t same = 0;
    for (size_t i = 0; i < total; i++)
        same += mask1[i] == (y[i] != 0.0f);
    print_message("%s: second mask agrees with the first on %zu of %zu\n", label, same, total);
    assert_true(same < total);

    distill_tensor_free(in);
    distill_tensor_free(out);
    distill_tensor_free(g);
    distill_tensor_free(dx);
    distill_tensor_free(rd);
    free(mask1);
    free(x);
    free(R);
}

static void test_dropout(void **state)
{
    (void)state;
    distill_model *m = new_model3(8, 8, 8);
    OK(distill_model_add_relu(m, "r", "input"));
    OK(distill_model_add_dropout(m, "drop", "r", 0.3f));
    dropout_drill(m, "dropout(relu(x))");
    distill_model_free(m);

    /* p = 0: the identity even in training */
    m = new_model3(3, 5, 5);
    OK(distill_model_add_relu(m, "r", "input"));
    OK(distill_model_add_dropout(m, "drop", "r", 0.0f));
    int failures = run(m, 2, -1, 1, 1102, "dropout p=0");

    /* inside a network, inference mode: the reference (identity) applies */
    m = new_model3(3, 7, 5);
    OK(distill_model_add_relu(m, "r", "input"));
    OK(distill_model_add_dropout(m, "drop", "r", 0.5f));
    OK(distill_model_add_flatten(m, "flat", "drop"));
    OK(distill_model_add_linear(m, "fc", "flat", 4, 1));
    assert_int_equal(check_fill_params(m, 1103), 0);
    ref_model *r;
    assert_int_equal(ref_model_create(&r, m, NULL), 0);
    double xs[2 * 3 * 7 * 5];
    ref_rng rng;
    ref_rng_seed(&rng, 1101);
    ref_fill_uniform(xs, sizeof xs / sizeof xs[0], -1, 1, &rng);
    failures += check_forward(m, r, xs, 2, DISTILL_MODE_INFERENCE, 1, NULL, "dropout in net");
    ref_model_free(r);
    distill_model_free(m);
    summary("dropout", failures);
    assert_int_equal(failures, 0);
}

/* Dropout whose input is the model's input node.  Runs last: a crash here
 * must not take the other tests with it. */
static void test_dropout_on_input(void **state)
{
    (void)state;
    distill_model *m = new_model3(8, 8, 8);
    OK(distill_model_add_dropout(m, "drop", "input", 0.3f));
    dropout_drill(m, "dropout(x)");
    distill_model_free(m);
}

/* ------------------------------------------------------ layers in a chain */

/* conv -> bn -> relu6 -> avgpool -> flatten -> linear -> gelu: the
 * intermediate reads and the gradient flowing through several ops. */
static void test_chain(void **state)
{
    (void)state;
    distill_model *m = new_model3(3, 9, 7);
    distill_conv2d_options o;
    OK(distill_conv2d_options_init(&o, DISTILL_CONV2D_OPTIONS_VERSION));
    o.kernel_h = o.kernel_w = 3;
    o.pad_h = o.pad_w = 1;
    o.bias = 0;
    OK(distill_model_add_conv2d(m, "conv", "input", 5, &o));
    OK(distill_model_add_batchnorm(m, "bn", "conv", 1e-5f, 0.1f));
    OK(distill_model_add_relu6(m, "act", "bn"));
    OK(distill_model_add_avgpool(m, "pool", "act", 2, 2, 0));
    OK(distill_model_add_flatten(m, "flat", "pool"));
    OK(distill_model_add_linear(m, "fc", "flat", 6, 1));
    OK(distill_model_add_gelu(m, "out", "fc", 0));
    int failures = run(m, 3, -2, 2, 1200, "chain 3x9x7 n3");
    summary("chain", failures);
    assert_int_equal(failures, 0);
}

/* BatchNorm in training on many values per channel with a large mean (the
 * case where single-precision sums fail): the output and every gradient
 * against a double-precision BatchNorm written out here, to 2e-5 relative.
 * Twice: on the plain input, and behind an identity 1x1 convolution, where
 * the engine keeps the activation blocked and applies the ReLU inside the
 * BatchNorm. */
static double rel_l2(const double *ref, const float *got, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-300));
}

static void test_batchnorm_precision(void **state)
{
    (void)state;
    enum { N = 64, C = 16, H = 28, W = 28 };
    const size_t S = (size_t)H * W, E = (size_t)N * C * S;
    for (int conv = 0; conv <= 1; conv++) {
        distill_model *m = new_model3(C, H, W);
        const char *bn_in = "input";
        if (conv) {
            distill_conv2d_options o;
            OK(distill_conv2d_options_init(&o, DISTILL_CONV2D_OPTIONS_VERSION));
            o.bias = 0; /* the defaults are 1x1, stride 1, no padding */
            OK(distill_model_add_conv2d(m, "conv", "input", C, &o));
            bn_in = "conv";
        }
        OK(distill_model_add_batchnorm(m, "bn", bn_in, 1e-5f, 0.1f));
        OK(distill_model_add_relu(m, "out", "bn"));
        OK(distill_model_keep_node(m, "input"));
        distill_param_info g = DISTILL_PARAM_INFO_INIT, b = DISTILL_PARAM_INFO_INIT;
        distill_param_info w = DISTILL_PARAM_INFO_INIT;
        OK(distill_model_find_param(m, "bn.weight", &g));
        OK(distill_model_find_param(m, "bn.bias", &b));
        for (int c = 0; c < C; c++) {
            g.data[c] = 0.5f + 0.1f * (float)c;
            b.data[c] = 0.2f - 0.05f * (float)c;
        }
        if (conv) {
            OK(distill_model_find_param(m, "conv.weight", &w));
            for (int o = 0; o < C; o++)
                for (int i = 0; i < C; i++)
                    w.data[o * C + i] = o == i ? 1.0f : 0.0f;
        }
        int64_t xd[4] = {N, C, H, W};
        distill_tensor *x, *y, *dy, *dx;
        OK(distill_tensor_create(&x, 4, xd));
        OK(distill_tensor_create(&y, 4, xd));
        OK(distill_tensor_create(&dy, 4, xd));
        OK(distill_tensor_create(&dx, 4, xd));
        float *xv = distill_tensor_data(x), *gv = distill_tensor_data(dy);
        ref_rng rng;
        ref_rng_seed(&rng, 4242 + (uint64_t)conv);
        for (size_t i = 0; i < E; i++) {
            int c = (int)(i / S % C);
            xv[i] = (float)(40.0 + c + (ref_rng_uniform(&rng) - 0.5) * (0.5 + 0.1 * c));
            gv[i] = (float)(ref_rng_uniform(&rng) - 0.45);
        }
        OK(distill_model_zero_grad(m));
        OK(distill_model_forward(m, x, DISTILL_MODE_TRAINING, y));
        const char *names[1] = {"out"};
        const distill_tensor *grads[1] = {dy};
        OK(distill_model_backward(m, 1, names, grads));
        OK(distill_model_input_grad(m, dx));

        /* the reference, in double; the ReLU's mask is the engine's own
         * (y > 0), so that an output within rounding of 0 does not count */
        const float *yv = distill_tensor_data_const(y);
        double *ry = malloc(E * sizeof *ry), *rdx = malloc(E * sizeof *rdx);
        double rdg[C], rdb[C];
        assert_non_null(ry);
        assert_non_null(rdx);
        for (int c = 0; c < C; c++) {
            double mu = 0, var = 0, M = (double)N * S;
            for (int n = 0; n < N; n++)
                for (size_t k = 0; k < S; k++)
                    mu += xv[((size_t)n * C + c) * S + k];
            mu /= M;
            for (int n = 0; n < N; n++)
                for (size_t k = 0; k < S; k++) {
                    double d = xv[((size_t)n * C + c) * S + k] - mu;
                    var += d * d;
                }
            var /= M;
            double inv = 1.0 / sqrt(var + 1e-5), sg = 0, sgx = 0;
            for (int n = 0; n < N; n++)
                for (size_t k = 0; k < S; k++) {
                    size_t i = ((size_t)n * C + c) * S + k;
                    double xh = (xv[i] - mu) * inv, t = xh * g.data[c] + b.data[c];
                    ry[i] = t > 0 ? t : 0;
                    double gg = yv[i] > 0 ? gv[i] : 0;
                    sg += gg;
                    sgx += gg * xh;
                }
            rdb[c] = sg;
            rdg[c] = sgx;
            for (int n = 0; n < N; n++)
                for (size_t k = 0; k < S; k++) {
                    size_t i = ((size_t)n * C + c) * S + k;
                    double xh = (xv[i] - mu) * inv;
                    double gg = yv[i] > 0 ? gv[i] : 0;
                    rdx[i] = g.data[c] * inv * (gg - sg / M - xh * sgx / M);
                }
        }
        double ey = rel_l2(ry, distill_tensor_data_const(y), E),
               edx = rel_l2(rdx, distill_tensor_data_const(dx), E),
               edg = rel_l2(rdg, g.grad, C), edb = rel_l2(rdb, b.grad, C);
        print_message("batchnorm precision (%s): relative error: output %.2g, input gradient "
                      "%.2g, weight gradient %.2g, bias gradient %.2g\n",
                      conv ? "blocked, ReLU fused" : "plain", ey, edx, edg, edb);
        assert_true(ey < 2e-5);
        assert_true(edx < 2e-5);
        assert_true(edg < 2e-5);
        assert_true(edb < 2e-5);
        free(ry);
        free(rdx);
        distill_tensor_free(x);
        distill_tensor_free(y);
        distill_tensor_free(dy);
        distill_tensor_free(dx);
        distill_model_free(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input),
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_conv2d_default_options),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_batchnorm_precision),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_relu6),
        cmocka_unit_test(test_leaky_relu),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_gelu_tanh),
        cmocka_unit_test(test_gelu_forms_differ),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_avgpool),
        cmocka_unit_test(test_global_avgpool),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_concat),
        cmocka_unit_test(test_flatten),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_dropout_on_input),
    };
    distill_set_num_threads(2);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_api_errors.c - bad input gives the documented status code and a
 * message that says what and where; the tensor API; strerror, versions.
 *
 * Every expectation is checked and printed even after an earlier one
 * failed, so one run lists every deviation; each test asserts at its end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill.h"

static int failures;

/* Check status `st` of the call written `what`: code `want`, a non-empty
 * last-error message containing s1 and s2 (when not NULL). */
static void expect_status(int st, int want, const char *what, const char *s1, const char *s2)
{
    const char *e = distill_last_error();
    int bad = 0;
    if (st != want) {
        print_error("FAIL %s: returned %d (%s), expected %d (%s); message: \"%s\"\n", what, st,
                    distill_strerror(st), want, distill_strerror(want), e ? e : "(NULL)");
        bad = 1;
    } else if (!e) {
        print_error("FAIL %s: distill_last_error() returned NULL\n", what);
        bad = 1;
    } else if (want != DISTILL_OK && e[0] == '\0') {
        print_error("FAIL %s: %s but the message is empty\n", what, distill_strerror(st));
        bad = 1;
    } else if ((s1 && !strstr(e, s1)) || (s2 && !strstr(e, s2))) {
        print_error("FAIL %s: message \"%s\" does not name '%s'%s%s%s\n", what, e, s1 ? s1 : "",
                    s2 ? " and '" : "", s2 ? s2 : "", s2 ? "'" : "");
        bad = 1;
    } else {
        print_message("ok   %-62s -> %s: \"%s\"\n", what, distill_strerror(st), e);
    }
    failures += bad;
}

/* Clear the error first so that the message seen belongs to this call. */
#define EXPECT(call, want, s1, s2) \
    (distill_error_clear(), expect_status((call), (want), #call, (s1), (s2)))

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            print_error("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);    \
            failures++;                                                    \
        }                                                                  \
    } while (0)

#define OK(call)                                                                       \
    do {                                                                               \
        int st_ = (call);                                                              \
        if (st_ != DISTILL_OK)                                                         \
            fail_msg("%s = %d (%s): %s", #call, st_, distill_strerror(st_),            \
                     distill_last_error());                                            \
    } while (0)

static int setup(void **state)
{
    (void)state;
    failures = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (failures)
        print_error("%d expectation(s) failed\n", failures);
    return failures ? -1 : 0;
}

static distill_model *img_model(int64_t c, int64_t h, int64_t w)
{
    distill_model *m = NULL;
    int64_t d[3] = {c, h, w};
    OK(distill_model_create(&m, "input", 3, d));
    return m;
}

static distill_conv2d_options conv_opts(int k, int pad, int groups)
{
    distill_conv2d_options o;
    OK(distill_conv2d_options_init(&o, DISTILL_CONV2D_OPTIONS_VERSION));
    o.kernel_h = o.kernel_w = k;
    o.pad_h = o.pad_w = pad;
    o.groups = groups;
    return o;
}

/* ------------------------------------------------------------ status codes */

static void test_strerror(void **state)
{
    (void)state;
    static const int codes[] = {
        DISTILL_OK,        DISTILL_EINVAL,      DISTILL_ENOMEM,      DISTILL_ESHAPE,
        DISTILL_ENOTFOUND, DISTILL_EEXISTS,     DISTILL_EIO,         DISTILL_EFORMAT,
        DISTILL_EUNSUPPORTED, DISTILL_EBACKEND, DISTILL_ESTATE,      DISTILL_ENONFINITE,
        DISTILL_ECANCELLED, DISTILL_EVERSION,
    };
    const size_t nc = sizeof codes / sizeof codes[0];
    /* the values are ABI */
    CHECK(DISTILL_OK == 0 && DISTILL_EINVAL == -1 && DISTILL_ESHAPE == -3 &&
          DISTILL_ENOTFOUND == -4 && DISTILL_EEXISTS == -5 && DISTILL_ESTATE == -10 &&
          DISTILL_EVERSION == -13);
    const char *unknown = distill_strerror(12345);
    CHECK(unknown && strcmp(unknown, "unknown error") == 0);
    CHECK(distill_strerror(-14) && strcmp(distill_strerror(-14), "unknown error") == 0);
    CHECK(distill_strerror(1) && strcmp(distill_strerror(1), "unknown error") == 0);
    for (size_t i = 0; i < nc; i++) {
        const char *s = distill_strerror(codes[i]);
        print_message("%4d  %s\n", codes[i], s ? s : "(NULL)");
        CHECK(s != NULL && s[0] != '\0');
        CHECK(s == NULL || strcmp(s, "unknown error") != 0);
        for (size_t j = 0; j < i; j++)
            CHECK(s == NULL || strcmp(s, distill_strerror(codes[j])) != 0);
    }
    /* last error: never NULL; "" after clear */
    distill_error_clear();
    CHECK(distill_last_error() != NULL && distill_last_error()[0] == '\0');
    assert_int_equal(failures, 0);
}

static void test_version_and_names(void **state)
{
    (void)state;
    CHECK(distill_version() && strcmp(distill_version(), DISTILL_VERSION_STRING) == 0);
    CHECK(distill_version_number() == DISTILL_VERSION_NUMBER);
    static const char *ops[] = {"input",  "conv2d",  "linear",  "batchnorm",
                                "relu",   "relu6",   "leaky_relu", "gelu",
                                "maxpool", "avgpool", "global_avgpool", "add",
                                "concat", "flatten", "dropout", "softmax"};
    for (int op = 0; op <= DISTILL_OP_SOFTMAX; op++) {
        const char *n = distill_op_name(op);
        CHECK(n != NULL && strcmp(n, "unknown") != 0);
        if (n && strcmp(n, ops[op]) != 0)
            print_message("note: op %d is called \"%s\" (expected something like \"%s\")\n", op,
                          n, ops[op]);
        for (int j = 0; j < op; j++)
            CHECK(n == NULL || strcmp(n, distill_op_name(j)) != 0);
    }
    CHECK(distill_op_name(16) && strcmp(distill_op_name(16), "unknown") == 0);
    CHECK(distill_op_name(-1) && strcmp(distill_op_name(-1), "unknown") == 0);

    CHECK(distill_set_num_threads(1) == DISTILL_OK);
    CHECK(distill_get_num_threads() == 1);
    CHECK(distill_set_num_threads(2) == DISTILL_OK);
    CHECK(distill_get_num_threads() == 2);
    CHECK(distill_set_num_threads(0) == DISTILL_OK);
    CHECK(distill_get_num_threads() >= 1);
    distill_set_num_threads(2);
    assert_int_equal(failures, 0);
}

/* ------------------------------------------------------------------ tensor */

static void test_tensor_api(void **state)
{
    (void)state;
    distill_tensor *t = NULL, *c = NULL;
    int64_t d4[4] = {2, 3, 4, 5};
    int64_t bad0[2] = {3, 0}, badneg[2] = {3, -2};
    int64_t d9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};

    EXPECT(distill_tensor_create(&t, 0, d4), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_tensor_create(&t, 9, d9), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_tensor_create(&t, -1, d4), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_tensor_create(&t, 2, bad0), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_tensor_create(&t, 2, badneg), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_tensor_create(NULL, 4, d4), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_tensor_create(&t, 4, NULL), DISTILL_EINVAL, NULL, NULL);
    CHECK(t == NULL);
    /* rank 8 is the maximum and is fine */
    EXPECT(distill_tensor_create(&t, 8, d9), DISTILL_OK, NULL, NULL);
    CHECK(distill_tensor_rank(t) == 8 && distill_tensor_numel(t) == 1);
    distill_tensor_free(t);
    t = NULL;

    OK(distill_tensor_create(&t, 4, d4));
    CHECK(distill_tensor_rank(t) == 4);
    CHECK(distill_tensor_numel(t) == 120);
    CHECK(distill_tensor_dim(t, 0) == 2 && distill_tensor_dim(t, 3) == 5);
    CHECK(distill_tensor_dim(t, -1) == 5 && distill_tensor_dim(t, -4) == 2);
    CHECK(distill_tensor_dim(t, -2) == 4);
    CHECK(distill_tensor_dim(t, 4) == 0 && distill_tensor_dim(t, -5) == 0);
    CHECK(distill_tensor_rank(NULL) == 0 && distill_tensor_numel(NULL) == 0);
    CHECK(distill_tensor_dim(NULL, 0) == 0);
    float *p = distill_tensor_data(t);
    assert_non_null(p);
    CHECK(distill_tensor_data_const(t) == p);
    size_t zeros = 0;
    for (int i = 0; i < 120; i++)
        zeros += p[i] == 0.0f;
    CHECK(zeros == 120); /* created zero-filled */

    OK(distill_tensor_fill(t, 2.5f));
    size_t filled = 0;
    for (int i = 0; i < 120; i++)
        filled += p[i] == 2.5f;
    CHECK(filled == 120);

    float src[120], dst[120];
    for (int i = 0; i < 120; i++)
        src[i] = (float)i * 0.5f - 7.0f;
    EXPECT(distill_tensor_copy_from(t, src, 119), DISTILL_ESHAPE, NULL, NULL);
    EXPECT(distill_tensor_copy_from(t, src, 121), DISTILL_ESHAPE, NULL, NULL);
    EXPECT(distill_tensor_copy_from(t, src, 120), DISTILL_OK, NULL, NULL);
    EXPECT(distill_tensor_copy_to(t, dst, 100), DISTILL_ESHAPE, NULL, NULL);
    EXPECT(distill_tensor_copy_to(t, dst, 120), DISTILL_OK, NULL, NULL);
    CHECK(memcmp(src, dst, sizeof src) == 0);
    CHECK(memcmp(p, src, sizeof src) == 0);

    /* clone is deep */
    EXPECT(distill_tensor_clone(&c, t), DISTILL_OK, NULL, NULL);
    assert_non_null(c);
    CHECK(distill_tensor_data(c) != p);
    CHECK(distill_tensor_rank(c) == 4 && distill_tensor_dim(c, 2) == 4);
    CHECK(memcmp(distill_tensor_data(c), src, sizeof src) == 0);
    distill_tensor_data(c)[0] = 99.0f;
    CHECK(p[0] == src[0]);
    EXPECT(distill_tensor_clone(NULL, t), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_tensor_clone(&c, NULL), DISTILL_EINVAL, NULL, NULL);
    distill_tensor_free(c);

    /* reshape: same count keeps the data in C order */
    int64_t d2[2] = {6, 20};
    EXPECT(distill_tensor_reshape(t, 2, d2), DISTILL_OK, NULL, NULL);
    CHECK(distill_tensor_rank(t) == 2 && distill_tensor_dim(t, -1) == 20);
    CHECK(memcmp(distill_tensor_data(t), src, sizeof src) == 0);
    /* shrink, then grow: the new part is zero */
    int64_t d1[1] = {10};
    EXPECT(distill_tensor_reshape(t, 1, d1), DISTILL_OK, NULL, NULL);
    CHECK(distill_tensor_numel(t) == 10);
    CHECK(memcmp(distill_tensor_data(t), src, 10 * sizeof(float)) == 0);
    int64_t dbig[3] = {10, 10, 10};
    EXPECT(distill_tensor_reshape(t, 3, dbig), DISTILL_OK, NULL, NULL);
    CHECK(distill_tensor_numel(t) == 1000);
    const float *q = distill_tensor_data_const(t);
    CHECK(memcmp(q, src, 10 * sizeof(float)) == 0);
    size_t tail_zero = 0;
    for (int i = 10; i < 1000; i++)
        tail_zero += q[i] == 0.0f;
    CHECK(tail_zero == 990);
    EXPECT(distill_tensor_reshape(t, 0, d1), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_tensor_reshape(t, 9, d9), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_tensor_reshape(t, 2, bad0), DISTILL_EINVAL, NULL, NULL);
    CHECK(distill_tensor_numel(t) == 1000); /* a failed reshape changes nothing */
    distill_tensor_free(t);
    distill_tensor_free(NULL);
    assert_int_equal(failures, 0);
}

/* ------------------------------------------------------------------- build */

static void test_build_errors(void **state)
{
    (void)state;
    distill_model *m = NULL;
    int64_t d3[3] = {3, 8, 8}, d1[1] = {10}, d2[2] = {3, 8}, dz[3] = {3, 0, 8};
    distill_conv2d_options o = conv_opts(3, 1, 1);

    EXPECT(distill_model_create(NULL, "input", 3, d3), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_create(&m, NULL, 3, d3), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_create(&m, "", 3, d3), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_create(&m, "input", 2, d2), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_create(&m, "input", 3, dz), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_create(&m, "input", 3, NULL), DISTILL_EINVAL, NULL, NULL);
    CHECK(m == NULL);
    distill_model_free(NULL);

    m = img_model(3, 8, 8);
    OK(distill_model_add_conv2d(m, "conv1", "input", 8, &o));
    size_t nodes = distill_model_node_count(m);

    /* NULL model / names */
    EXPECT(distill_model_add_relu(NULL, "r", "conv1"), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_add_relu(m, NULL, "conv1"), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_add_relu(m, "", "conv1"), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_add_relu(m, "r", NULL), DISTILL_EINVAL, "r", NULL);

    /* names */
    EXPECT(distill_model_add_conv2d(m, "conv2", "nope", 8, &o), DISTILL_ENOTFOUND, "conv2",
           "nope");
    EXPECT(distill_model_add_relu(m, "conv1", "input"), DISTILL_EEXISTS, "conv1", NULL);
    EXPECT(distill_model_add_relu(m, "input", "conv1"), DISTILL_EEXISTS, "input", NULL);
    /* a node cannot name itself: it does not exist yet, so no cycle can form */
    EXPECT(distill_model_add_relu(m, "self", "self"), DISTILL_ENOTFOUND, "self", NULL);
    const char *cat_self[2] = {"conv1", "cat"};
    EXPECT(distill_model_add_concat(m, "cat", 2, cat_self), DISTILL_ENOTFOUND, "cat", NULL);
    EXPECT(distill_model_add_add(m, "sum", "conv1", "sum"), DISTILL_ENOTFOUND, "sum", NULL);

    /* shapes */
    distill_model *v = NULL;
    OK(distill_model_create(&v, "vec", 1, d1));
    EXPECT(distill_model_add_conv2d(v, "cv1", "vec", 4, &o), DISTILL_ESHAPE, "cv1", NULL);
    EXPECT(distill_model_add_maxpool(v, "mp", "vec", 2, 2, 0), DISTILL_ESHAPE, "mp", NULL);
    EXPECT(distill_model_add_global_avgpool(v, "gap", "vec"), DISTILL_ESHAPE, "gap", NULL);
    EXPECT(distill_model_add_linear(m, "fc", "conv1", 10, 1), DISTILL_ESHAPE, "fc", NULL);
    EXPECT(distill_model_add_softmax(m, "sm", "conv1"), DISTILL_ESHAPE, "sm", NULL);
    distill_conv2d_options s2 = conv_opts(3, 1, 1);
    s2.stride_h = s2.stride_w = 2;
    OK(distill_model_add_conv2d(m, "down", "conv1", 8, &s2)); /* (8, 4, 4) */
    OK(distill_model_add_conv2d(m, "wide", "conv1", 4, &o));  /* (4, 8, 8) */
    EXPECT(distill_model_add_add(m, "sum", "conv1", "down"), DISTILL_ESHAPE, "sum", NULL);
    EXPECT(distill_model_add_add(m, "sum", "conv1", "wide"), DISTILL_ESHAPE, "sum", NULL);
    const char *cat_bad[2] = {"conv1", "down"};
    EXPECT(distill_model_add_concat(m, "cat", 2, cat_bad), DISTILL_ESHAPE, "cat", NULL);
    const char *cat_one[1] = {"conv1"};
    EXPECT(distill_model_add_concat(m, "cat", 1, cat_one), DISTILL_EINVAL, "cat", NULL);
    EXPECT(distill_model_add_concat(m, "cat", 2, NULL), DISTILL_EINVAL, "cat", NULL);
    OK(distill_model_add_linear(v, "fc", "vec", 4, 1));
    EXPECT(distill_model_add_add(v, "sum", "vec", "fc"), DISTILL_ESHAPE, "sum", NULL);

    /* groups */
    distill_conv2d_options g = conv_opts(3, 1, 2);
    EXPECT(distill_model_add_conv2d(m, "g_in", "input", 4, &g), DISTILL_EINVAL, "g_in",
           NULL); /* 3 input channels, 2 groups */
    g = conv_opts(3, 1, 4);
    EXPECT(distill_model_add_conv2d(m, "g_out", "conv1", 6, &g), DISTILL_EINVAL, "g_out",
           NULL); /* 6 output channels, 4 groups */
    g = conv_opts(3, 1, 0);
    EXPECT(distill_model_add_conv2d(m, "g0", "conv1", 8, &g), DISTILL_EINVAL, "g0", NULL);

    /* bad attributes */
    distill_conv2d_options b = conv_opts(0, 0, 1);
    EXPECT(distill_model_add_conv2d(m, "k0", "conv1", 8, &b), DISTILL_EINVAL, "k0", NULL);
    b = conv_opts(3, 1, 1);
    b.stride_h = 0;
    EXPECT(distill_model_add_conv2d(m, "s0", "conv1", 8, &b), DISTILL_EINVAL, "s0", NULL);
    b = conv_opts(3, -1, 1);
    EXPECT(distill_model_add_conv2d(m, "pneg", "conv1", 8, &b), DISTILL_EINVAL, "pneg", NULL);
    b = conv_opts(3, 1, 1);
    b.dilation_w = 0;
    EXPECT(distill_model_add_conv2d(m, "d0", "conv1", 8, &b), DISTILL_EINVAL, "d0", NULL);
    EXPECT(distill_model_add_conv2d(m, "o0", "conv1", 0, &o), DISTILL_EINVAL, "o0", NULL);
    EXPECT(distill_model_add_linear(v, "l0", "vec", 0, 1), DISTILL_EINVAL, "l0", NULL);
    EXPECT(distill_model_add_maxpool(m, "mk0", "conv1", 0, 1, 0), DISTILL_EINVAL, "mk0", NULL);
    EXPECT(distill_model_add_avgpool(m, "as0", "conv1", 2, 0, 0), DISTILL_EINVAL, "as0", NULL);
    EXPECT(distill_model_add_dropout(m, "p1", "conv1", 1.0f), DISTILL_EINVAL, "p1", NULL);
    EXPECT(distill_model_add_dropout(m, "pn", "conv1", -0.1f), DISTILL_EINVAL, "pn", NULL);

    /* kernel larger than the padded input */
    distill_model *t = img_model(2, 3, 3);
    distill_conv2d_options big = conv_opts(5, 0, 1);
    EXPECT(distill_model_add_conv2d(t, "big", "input", 4, &big), DISTILL_ESHAPE, "big", NULL);
    big = conv_opts(3, 0, 1);
    big.dilation_h = big.dilation_w = 2; /* effective 5x5 */
    EXPECT(distill_model_add_conv2d(t, "dil", "input", 4, &big), DISTILL_ESHAPE, "dil", NULL);
    big = conv_opts(5, 1, 1); /* 3 + 2 = 5: fits exactly */
    EXPECT(distill_model_add_conv2d(t, "fits", "input", 4, &big), DISTILL_OK, NULL, NULL);
    EXPECT(distill_model_add_maxpool(t, "mbig", "input", 4, 1, 0), DISTILL_ESHAPE, "mbig",
           NULL);
    EXPECT(distill_model_add_avgpool(t, "abig", "input", 4, 1, 0), DISTILL_ESHAPE, "abig",
           NULL);
    distill_model_free(t);

    /* options versions */
    distill_conv2d_options ov;
    EXPECT(distill_conv2d_options_init(&ov, DISTILL_CONV2D_OPTIONS_VERSION + 999),
           DISTILL_EVERSION, NULL, NULL);
    EXPECT(distill_conv2d_options_init(NULL, DISTILL_CONV2D_OPTIONS_VERSION), DISTILL_EINVAL,
           NULL, NULL);
    ov = conv_opts(3, 1, 1);
    ov.version = DISTILL_CONV2D_OPTIONS_VERSION + 999;
    EXPECT(distill_model_add_conv2d(m, "v999", "conv1", 8, &ov), DISTILL_EVERSION, "v999",
           NULL);
    distill_zoo_options zo;
    EXPECT(distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION + 999), DISTILL_EVERSION,
           NULL, NULL);
    const distill_conv2d_options init = DISTILL_CONV2D_OPTIONS_INIT;
    EXPECT(distill_conv2d_options_init(&ov, DISTILL_CONV2D_OPTIONS_VERSION), DISTILL_OK, NULL,
           NULL);
    CHECK(memcmp(&ov, &init, sizeof ov) == 0);

    /* none of the failures above changed the model, and the names they
     * tried are still free */
    CHECK(distill_model_node_count(m) == nodes + 2); /* + down, wide */
    EXPECT(distill_model_add_relu(m, "self", "conv1"), DISTILL_OK, NULL, NULL);
    EXPECT(distill_model_add_add(m, "sum", "conv1", "self"), DISTILL_OK, NULL, NULL);

    /* queries */
    distill_node_info ni = DISTILL_NODE_INFO_INIT;
    distill_param_info pi = DISTILL_PARAM_INFO_INIT;
    EXPECT(distill_model_node(m, 0, NULL), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_node(m, 1000, &ni), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_node(NULL, 0, &ni), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_find_node(m, "nope", &ni), DISTILL_ENOTFOUND, "nope", NULL);
    EXPECT(distill_model_find_node(m, "conv1", NULL), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_find_param(m, "conv1.nope", &pi), DISTILL_ENOTFOUND, "conv1.nope",
           NULL);
    EXPECT(distill_model_find_param(m, "conv1.weight", NULL), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_param(m, 1000, &pi), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_set_output(m, "nope"), DISTILL_ENOTFOUND, "nope", NULL);
    EXPECT(distill_model_set_output(m, "conv1"), DISTILL_OK, NULL, NULL);
    CHECK(strcmp(distill_model_output_name(m), "conv1") == 0);
    CHECK(distill_model_node_count(NULL) == 0);

    distill_model_free(v);
    distill_model_free(m);

    /* sizes: no image may hold more than 2^32 values at any node, and no
     * count may pass int64 (a 3x3 conv of 2^20 channels over an 8448x8448
     * padded map of 2^16 channels has 2^62 * 9 multiply-accumulates) */
    int64_t dhuge[3] = {1 << 24, 1 << 24, 1 << 24}, dedge[3] = {1, 1 << 16, 1 << 16},
            dwide[3] = {1 << 16, 1 << 8, 1 << 8};
    m = NULL;
    EXPECT(distill_model_create(&m, "input", 3, dhuge), DISTILL_EINVAL, "values per image", NULL);
    CHECK(m == NULL);
    OK(distill_model_create(&m, "input", 3, dedge)); /* exactly 2^32 */
    distill_conv2d_options one = conv_opts(1, 0, 1);
    EXPECT(distill_model_add_conv2d(m, "fat", "input", 1 << 20, &one), DISTILL_ESHAPE, "fat",
           "values per image");
    CHECK(distill_model_node_count(m) == 1);
    CHECK(distill_model_param_count(m) == 0);
    OK(distill_model_add_relu(m, "r", "input"));
    CHECK(distill_model_macs(m) == 0);
    distill_model_free(m);
    m = NULL;
    OK(distill_model_create(&m, "input", 3, dwide));
    distill_conv2d_options far = conv_opts(3, 4096, 1);
    EXPECT(distill_model_add_conv2d(m, "far", "input", 1 << 20, &far), DISTILL_ESHAPE, "far",
           "too large");
    CHECK(distill_model_node_count(m) == 1);
    distill_model_free(m);
    assert_int_equal(failures, 0);
}

/* --------------------------------------------------------------------- run */

static void test_run_errors(void **state)
{
    (void)state;
    distill_model *m = img_model(3, 6, 6);
    distill_conv2d_options o = conv_opts(3, 1, 1);
    OK(distill_model_add_conv2d(m, "conv", "input", 4, &o));
    OK(distill_model_add_batchnorm(m, "bn", "conv", 1e-5f, 0.1f));
    OK(distill_model_add_global_avgpool(m, "gap", "bn"));
    OK(distill_model_add_flatten(m, "flat", "gap"));
    OK(distill_model_add_linear(m, "fc", "flat", 5, 1));

    distill_tensor *x = NULL, *xw = NULL, *xr = NULL, *y = NULL, *yw = NULL, *g = NULL,
                   *gw = NULL, *dx = NULL, *dxw = NULL, *nd = NULL;
    int64_t dx4[4] = {2, 3, 6, 6}, dw4[4] = {2, 4, 6, 6}, dr3[3] = {2, 3, 36};
    int64_t dy[2] = {2, 5}, dyw[2] = {2, 6}, dyn[2] = {3, 5}, dn[4] = {2, 4, 6, 6};
    OK(distill_tensor_create(&x, 4, dx4));
    OK(distill_tensor_create(&xw, 4, dw4));
    OK(distill_tensor_create(&xr, 3, dr3));
    OK(distill_tensor_create(&y, 2, dy));
    OK(distill_tensor_create(&yw, 2, dyw));
    OK(distill_tensor_create(&g, 2, dy));
    OK(distill_tensor_create(&gw, 2, dyn));
    OK(distill_tensor_create(&dx, 4, dx4));
    OK(distill_tensor_create(&dxw, 4, dw4));
    OK(distill_tensor_create(&nd, 4, dn));
    float *xp = distill_tensor_data(x);
    for (int i = 0; i < 2 * 3 * 36; i++)
        xp[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    OK(distill_tensor_fill(g, 0.5f));
    OK(distill_model_init_weights(m, DISTILL_INIT_DEFAULT, 1));
    EXPECT(distill_model_keep_node(m, "nope"), DISTILL_ENOTFOUND, "nope", NULL);
    EXPECT(distill_model_keep_node(m, NULL), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_keep_node(m, "conv"), DISTILL_OK, NULL, NULL);
    /* the input gradient is asked for by keeping the input node */
    EXPECT(distill_model_keep_node(m, "input"), DISTILL_OK,
           NULL, NULL);

    const char *out_name[1] = {"fc"};
    const distill_tensor *out_grad[1] = {g};
    const char *bad_name[1] = {"nope"};
    const distill_tensor *bad_grad[1] = {gw};
    const distill_tensor *null_grad[1] = {NULL};

    /* before any forward */
    EXPECT(distill_model_backward(m, 1, out_name, out_grad), DISTILL_ESTATE, NULL, NULL);
    EXPECT(distill_model_read_node(m, "conv", nd), DISTILL_ESTATE, "conv", NULL);
    EXPECT(distill_model_input_grad(m, dx), DISTILL_ESTATE, NULL, NULL);

    /* wrong shapes into forward */
    EXPECT(distill_model_forward(NULL, x, DISTILL_MODE_INFERENCE, y), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_forward(m, NULL, DISTILL_MODE_INFERENCE, y), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_forward(m, xw, DISTILL_MODE_INFERENCE, y), DISTILL_ESHAPE, "input",
           NULL);
    EXPECT(distill_model_forward(m, xr, DISTILL_MODE_INFERENCE, y), DISTILL_ESHAPE, "input",
           NULL);
    EXPECT(distill_model_forward(m, x, DISTILL_MODE_INFERENCE, yw), DISTILL_ESHAPE, "fc", NULL);
    EXPECT(distill_model_forward(m, x, 7, y), DISTILL_EINVAL, NULL, NULL);

    /* inference forward: backward is still out of order */
    EXPECT(distill_model_forward(m, x, DISTILL_MODE_INFERENCE, y), DISTILL_OK, NULL, NULL);
    EXPECT(distill_model_backward(m, 1, out_name, out_grad), DISTILL_ESTATE, NULL, NULL);

    /* training forward: backward's own argument checks */
    EXPECT(distill_model_forward(m, x, DISTILL_MODE_TRAINING, y), DISTILL_OK, NULL, NULL);
    EXPECT(distill_model_backward(m, 1, bad_name, out_grad), DISTILL_ENOTFOUND, "nope", NULL);
    EXPECT(distill_model_backward(m, 1, out_name, bad_grad), DISTILL_ESHAPE, "fc", NULL);
    EXPECT(distill_model_backward(m, 1, out_name, null_grad), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_backward(m, 1, NULL, out_grad), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_backward(m, -1, out_name, out_grad), DISTILL_EINVAL, NULL, NULL);
    EXPECT(distill_model_read_node(m, "nope", nd), DISTILL_ENOTFOUND, "nope", NULL);
    EXPECT(distill_model_read_node(m, "conv", dxw), DISTILL_OK, NULL, NULL);
    EXPECT(distill_model_read_node(m, "conv", dx), DISTILL_ESHAPE, "conv", NULL);
    /* "bn" is not kept: its buffer may have been reused */
    EXPECT(distill_model_read_node(m, "bn", nd), DISTILL_ESTATE, "bn", NULL);
    {
        const char *unkept[1] = {"flat"};
        int64_t df[2] = {2, 4};
        distill_tensor *gf = NULL;
        OK(distill_tensor_create(&gf, 2, df));
        const distill_tensor *gfl[1] = {gf};
        distill_error_clear();
        int st = distill_model_backward(m, 1, unkept, gfl);
        print_message("backward with a gradient for the unkept node 'flat' -> %d (%s): \"%s\"\n",
                      st, distill_strerror(st), distill_last_error());
        CHECK(st != DISTILL_OK);
        CHECK(strstr(distill_last_error(), "flat") != NULL);
        distill_tensor_free(gf);
    }
    /* a failed backward leaves the forward usable */
    EXPECT(distill_model_backward(m, 1, out_name, out_grad), DISTILL_OK, NULL, NULL);
    EXPECT(distill_model_input_grad(m, dxw), DISTILL_ESHAPE, NULL, NULL);
    EXPECT(distill_model_input_grad(m, dx), DISTILL_OK, NULL, NULL);

    /* a graph change invalidates the training forward */
    EXPECT(distill_model_forward(m, x, DISTILL_MODE_TRAINING, y), DISTILL_OK, NULL, NULL);
    OK(distill_model_add_softmax(m, "prob", "fc"));
    EXPECT(distill_model_backward(m, 1, out_name, out_grad), DISTILL_ESTATE, NULL, NULL);
    /* and the output shape of the grown model is that of "prob" */
    EXPECT(distill_model_forward(m, x, DISTILL_MODE_TRAINING, y), DISTILL_OK, NULL, NULL);
    const float *yp = distill_tensor_data(y);
    double s0 = 0, s1 = 0;
    for (int k = 0; k < 5; k++) {
        s0 += yp[k];
        s1 += yp[5 + k];
    }
    CHECK(s0 > 0.9999 && s0 < 1.0001 && s1 > 0.9999 && s1 < 1.0001);

    distill_tensor_free(x);
    distill_tensor_free(xw);
    distill_tensor_free(xr);
    distill_tensor_free(y);
    distill_tensor_free(yw);
    distill_tensor_free(g);
    distill_tensor_free(gw);
    distill_tensor_free(dx);
    distill_tensor_free(dxw);
    distill_tensor_free(nd);
    distill_model_free(m);
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_strerror, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_and_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tensor_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_errors, setup, teardown),
    };
    distill_set_num_threads(2);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

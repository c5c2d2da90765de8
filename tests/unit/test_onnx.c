/*
 * test_onnx.c - ONNX export and import (include/distill/onnx.h).
 *
 *   - every zoo model, with random weights and BatchNorm statistics,
 *     exported, imported again: same nodes, and the same outputs to 1e-5;
 *   - a model using every op the exporter writes (GELU as its Erf form,
 *     relu6 as Clip, leaky relu, pools, concat, dropout, softmax) likewise;
 *   - the exported bytes truncated at every length and bit-flipped at many
 *     places: an error or a model, never a crash;
 *   - argument errors; a model ONNX cannot hold (tanh GELU) refused.
 * Built without ONNX support, the calls must say so (DISTILL_EUNSUPPORTED).
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
#include "nn/graph.h"
#include "util/util.h"

int onnx_export_buffer(const struct distill_model *m, void **data, size_t *size);

#define CHECK(call)                                                                      \
    do {                                                                                 \
        int rc_ = (call);                                                                \
        if (rc_ != DISTILL_OK)                                                           \
            fail_msg("%s: %s (%s)", #call, distill_strerror(rc_), distill_last_error()); \
    } while (0)

static uint64_t lcg = 12345;
static float frand(void)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((lcg >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

/* Random weights and BatchNorm statistics (variance positive). */
static void randomize(distill_model *m)
{
    size_t n = distill_model_param_count(m);
    for (size_t i = 0; i < n; i++) {
        distill_param_info p = DISTILL_PARAM_INFO_INIT;
        CHECK(distill_model_param(m, i, &p));
        for (int64_t k = 0; k < p.numel; k++) {
            float v = frand();
            p.data[k] = p.kind == DISTILL_PARAM_RUNNING_VAR ? 0.5f + fabsf(v)
                        : p.kind == DISTILL_PARAM_BN_SCALE  ? 1.0f + 0.3f * v
                        : p.kind == DISTILL_PARAM_WEIGHT    ? 0.3f * v
                                                            : 0.1f * v;
        }
    }
}

static distill_tensor *run(distill_model *m, int batch)
{
    distill_node_info in = DISTILL_NODE_INFO_INIT, out = DISTILL_NODE_INFO_INIT;
    CHECK(distill_model_node(m, 0, &in));
    CHECK(distill_model_find_node(m, distill_model_output_name(m), &out));
    int64_t xd[4] = {batch}, yd[4] = {batch};
    for (int d = 0; d < in.rank; d++)
        xd[d + 1] = in.dims[d];
    for (int d = 0; d < out.rank; d++)
        yd[d + 1] = out.dims[d];
    distill_tensor *x, *y;
    CHECK(distill_tensor_create(&x, in.rank + 1, xd));
    CHECK(distill_tensor_create(&y, out.rank + 1, yd));
    float *xp = distill_tensor_data(x);
    lcg = 99;
    for (int64_t k = 0; k < distill_tensor_numel(x); k++)
        xp[k] = frand();
    CHECK(distill_model_forward(m, x, DISTILL_MODE_INFERENCE, y));
    distill_tensor_free(x);
    return y;
}

/* Export m, import it, compare structure and outputs. */
static void round_trip(distill_model *m, const char *what)
{
    void *buf;
    size_t size;
    CHECK(onnx_export_buffer(m, &buf, &size));
    distill_model *r = NULL;
    int rc = distill_model_import_onnx_buffer(&r, buf, size);
    if (rc)
        fail_msg("%s: import of the export: %s", what, distill_last_error());
    xfree(buf);
    assert_int_equal(distill_model_node_count(r), distill_model_node_count(m));
    assert_string_equal(distill_model_output_name(r), distill_model_output_name(m));
    assert_int_equal(distill_model_num_params(r), distill_model_num_params(m));
    for (size_t i = 0; i < distill_model_node_count(m); i++) {
        distill_node_info a = DISTILL_NODE_INFO_INIT, b = DISTILL_NODE_INFO_INIT;
        CHECK(distill_model_node(m, i, &a));
        CHECK(distill_model_node(r, i, &b));
        assert_string_equal(a.name, b.name);
        assert_int_equal(a.op, b.op);
        assert_int_equal(a.rank, b.rank);
        assert_memory_equal(a.dims, b.dims, sizeof a.dims);
    }
    distill_tensor *ya = run(m, 3), *yb = run(r, 3);
    const float *pa = distill_tensor_data(ya), *pb = distill_tensor_data(yb);
    double worst = 0;
    for (int64_t k = 0; k < distill_tensor_numel(ya); k++)
        worst = fmax(worst, fabs((double)pa[k] - pb[k]) / fmax(1.0, fabs(pa[k])));
    if (!(worst <= 1e-5))
        fail_msg("%s: outputs differ by %g after the round trip", what, worst);
    distill_tensor_free(ya);
    distill_tensor_free(yb);
    distill_model_free(r);
}

static void test_zoo_round_trip(void **state)
{
    (void)state;
    for (const char *const *n = distill_zoo_names(); *n; n++) {
        distill_model *m;
        CHECK(distill_zoo_create(&m, *n, NULL));
        randomize(m);
        round_trip(m, *n);
        distill_model_free(m);
    }
}

/* Every op the exporter writes. */
static distill_model *all_ops(void)
{
    distill_model *m;
    int64_t in[3] = {3, 8, 8};
    distill_conv2d_options c;
    CHECK(distill_conv2d_options_init(&c, DISTILL_CONV2D_OPTIONS_VERSION));
    c.kernel_h = c.kernel_w = 3, c.pad_h = c.pad_w = 1;
    CHECK(distill_model_create(&m, "x", 3, in));
    CHECK(distill_model_add_conv2d(m, "conv", "x", 8, &c));
    CHECK(distill_model_add_batchnorm(m, "bn", "conv", 1e-3f, 0.2f));
    CHECK(distill_model_add_gelu(m, "gelu", "bn", 0));
    c.groups = 8, c.bias = 0, c.stride_h = c.stride_w = 2, c.dilation_h = c.dilation_w = 1;
    CHECK(distill_model_add_conv2d(m, "dw", "gelu", 8, &c));
    CHECK(distill_model_add_relu6(m, "r6", "dw"));
    CHECK(distill_model_add_leaky_relu(m, "lrelu", "bn", 0.2f));
    CHECK(distill_model_add_maxpool(m, "maxp", "lrelu", 3, 2, 1));
    CHECK(distill_model_add_add(m, "sum", "r6", "maxp"));
    CHECK(distill_model_add_avgpool(m, "avgp", "lrelu", 2, 2, 0));
    /* SAME_UPPER with a 2x2 kernel: padded after the last row and column */
    distill_pool2d_options po;
    CHECK(distill_pool2d_options_init(&po, DISTILL_POOL2D_OPTIONS_VERSION));
    po.stride_h = po.stride_w = 1, po.pad_bottom = po.pad_right = 1;
    CHECK(distill_model_add_pool2d(m, "same", "maxp", DISTILL_OP_MAXPOOL, &po));
    po.kernel_w = 3, po.pad_bottom = 0, po.pad_top = po.pad_left = po.pad_right = 1;
    CHECK(distill_model_add_pool2d(m, "asym", "same", DISTILL_OP_AVGPOOL, &po));
    const char *cat[3] = {"sum", "avgp", "asym"};
    CHECK(distill_model_add_concat(m, "cat", 3, cat));
    CHECK(distill_model_add_relu(m, "relu", "cat"));
    CHECK(distill_model_add_global_avgpool(m, "gap", "relu"));
    CHECK(distill_model_add_flatten(m, "flat", "gap"));
    CHECK(distill_model_add_dropout(m, "drop", "flat", 0.25f));
    CHECK(distill_model_add_linear(m, "fc", "drop", 5, 1));
    CHECK(distill_model_add_batchnorm(m, "bn1d", "fc", 1e-5f, 0.1f));
    CHECK(distill_model_add_softmax(m, "prob", "bn1d"));
    randomize(m);
    return m;
}

static void test_all_ops_round_trip(void **state)
{
    (void)state;
    distill_model *m = all_ops();
    round_trip(m, "all ops");
    /* an output that is not the last node */
    CHECK(distill_model_set_output(m, "fc"));
    round_trip(m, "output fc");
    distill_model_free(m);
}

static void test_file_and_cli_paths(void **state)
{
    (void)state;
    distill_model *m = all_ops(), *r = NULL;
    CHECK(distill_model_export_onnx(m, "all_ops.onnx"));
    CHECK(distill_model_import_onnx(&r, "all_ops.onnx"));
    assert_int_equal(distill_model_node_count(r), distill_model_node_count(m));
    distill_model_free(r);
    distill_model_free(m);
    r = (distill_model *)1;
    assert_int_equal(distill_model_import_onnx(&r, "no-such-file.onnx"), DISTILL_ENOTFOUND);
    assert_null(r);
}

static void test_errors(void **state)
{
    (void)state;
    distill_model *m = NULL, *r = (distill_model *)1;
    assert_int_equal(distill_model_import_onnx(NULL, "x.onnx"), DISTILL_EINVAL);
    assert_int_equal(distill_model_import_onnx(&r, NULL), DISTILL_EINVAL);
    assert_null(r);
    assert_int_equal(distill_model_import_onnx_buffer(&r, NULL, 3), DISTILL_EINVAL);
    assert_int_equal(distill_model_export_onnx(NULL, "x.onnx"), DISTILL_EINVAL);
    /* not ONNX */
    assert_int_equal(distill_model_import_onnx_buffer(&r, "\xff\xff\xff", 3), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "ONNX"));
    /* empty: a valid empty message, but no graph */
    assert_int_equal(distill_model_import_onnx_buffer(&r, "", 0), DISTILL_EFORMAT);
    /* tanh GELU has no ONNX form the importer reads back */
    int64_t in[1] = {4};
    CHECK(distill_model_create(&m, "x", 1, in));
    CHECK(distill_model_add_gelu(m, "g", "x", 1));
    assert_int_equal(distill_model_export_onnx(m, "g.onnx"), DISTILL_EUNSUPPORTED);
    assert_non_null(strstr(distill_last_error(), "'g'"));
    distill_model_free(m);
    /* nothing to export */
    CHECK(distill_model_create(&m, "x", 1, in));
    assert_int_equal(distill_model_export_onnx(m, "x.onnx"), DISTILL_EUNSUPPORTED);
    distill_model_free(m);
}

/* Truncated at every length and bit-flipped: an error or a model. */
static void test_corrupt(void **state)
{
    (void)state;
    distill_model *m;
    distill_zoo_options z;
    CHECK(distill_zoo_options_init(&z, DISTILL_ZOO_OPTIONS_VERSION));
    z.height = z.width = 8;
    z.width_mult_pct = 25;
    CHECK(distill_zoo_create(&m, "cnn", &z));
    void *buf;
    size_t size;
    CHECK(onnx_export_buffer(m, &buf, &size));
    distill_model_free(m);
    unsigned char *copy = malloc(size);
    assert_non_null(copy);
    size_t step = size / 2000 + 1;
    for (size_t len = 0; len < size; len += step) {
        distill_model *r = (distill_model *)1;
        memcpy(copy, buf, len);
        int rc = distill_model_import_onnx_buffer(&r, copy, len);
        /* the opset comes after the graph: no prefix is a whole model */
        assert_int_not_equal(rc, DISTILL_OK);
        assert_true(rc == DISTILL_EFORMAT || rc == DISTILL_EUNSUPPORTED);
        assert_null(r);
        assert_true(strlen(distill_last_error()) > 0);
    }
    int ok = 0, bad = 0;
    lcg = 7;
    for (int t = 0; t < 3000; t++) {
        memcpy(copy, buf, size);
        size_t at = (size_t)((frand() + 1.0f) * 0.5f * (float)size) % size;
        copy[at] ^= (unsigned char)(1u << (t % 8));
        distill_model *r = NULL;
        int rc = distill_model_import_onnx_buffer(&r, copy, size);
        if (rc == DISTILL_OK) {
            assert_non_null(r);
            ok++;
            distill_model_free(r);
        } else {
            assert_null(r);
            assert_true(rc == DISTILL_EFORMAT || rc == DISTILL_EUNSUPPORTED ||
                        rc == DISTILL_ENOMEM);
            bad++;
        }
    }
    print_message("bit flips: %d imported (a weight changed), %d refused\n", ok, bad);
    assert_true(bad > 0);
    free(copy);
    xfree(buf);
}

int main(void)
{
    if (!distill_onnx_available()) {
        distill_model *r = NULL;
        if (distill_model_import_onnx_buffer(&r, "", 0) != DISTILL_EUNSUPPORTED)
            return 1;
        print_message("built without ONNX support: import and export say so\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zoo_round_trip),
        cmocka_unit_test(test_all_ops_round_trip),
        cmocka_unit_test(test_file_and_cli_paths),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_zoo.c - the model zoo (distill_zoo_create): architectures counted
 * against the PyTorch peer's, node and parameter names, options, and a
 * forward pass of every model.
 *
 * torchvision's ImageNet-size models (resnet18/34/50, mobilenet_v2) are
 * tested by test_zoo_torchvision, this file built with ZOO_TORCHVISION: their
 * models are large enough to take a quarter of an hour under valgrind, which
 * CI's memcheck section leaves out; they run natively in every build.
 *
 * Parameter counts, for the PyTorch peer's CifarResNet(n)
 * (../shared/peers/torch_kd.py) with in_ch = 1 and 10 classes (convs have no
 * bias; a BatchNorm has 2C trainable scalars; the shortcut conv1x1 + BN
 * exists in the first block of stages 2 and 3 only):
 *   stem       conv 16*1*9 = 144, bn 32                              176
 *   stage 1    per block: 2 convs 16*16*9 = 2304, 2 bns 32      4672 / block
 *   stage 2    block 0: 32*16*9 + 32*32*9 + 2*64 + 32*16 + 64 = 14528
 *              later blocks: 2*9216 + 128 = 18560
 *   stage 3    block 0: 64*32*9 + 64*64*9 + 2*128 + 64*32 + 128 = 57728
 *              later blocks: 2*36864 + 256 = 73984
 *   fc         64*10 + 10 = 650
 * ResNet-8 (n = 1):  176 + 4672 + 14528 + 57728 + 650 = 77,754
 * ResNet-20 (n = 3): 176 + 3*4672 + 14528 + 2*18560 + 57728 + 2*73984 + 650
 *                  = 272,186
 * (With in_ch = 3, the CIFAR-10 count: 272,186 + 2*144 = 272,474.)
 *
 * Multiply-adds per image (conv: Cout*Hout*Wout*Cin/groups*kh*kw; linear:
 * in*out; BatchNorm, ReLU, add, pooling count 0), 28x28 input:
 *   stem 16*784*9 = 112,896; stage 1 (28x28) 2n convs of 16*784*144 =
 *   1,806,336; stage 2 (14x14) block 0: 903,168 + 1,806,336 + shortcut
 *   100,352, later convs 1,806,336; stage 3 (7x7) the same numbers; fc 640.
 * ResNet-8:  112,896 + 2*1,806,336 + 2*2,809,856 + 640     =  9,345,920
 * ResNet-20: 112,896 + 6*1,806,336 + 2*10,035,200 + 640    = 31,021,952
 * (ResNet-20 on 3x32x32: 40,813,184, the 40.8 M usually quoted.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "distill.h"


/* The name of input k of the node called `node` (distill_model_node_input). */
static const char *in_name(const distill_model *m, const char *node, int k)
{
    for (size_t i = 0; i < distill_model_node_count(m); i++) {
        distill_node_info ni = DISTILL_NODE_INFO_INIT;
        const char *name = NULL;
        if (distill_model_node(m, i, &ni) == DISTILL_OK && strcmp(ni.name, node) == 0 &&
            distill_model_node_input(m, i, k, NULL, &name) == DISTILL_OK)
            return name;
    }
    return "(none)";
}

static distill_zoo_options zopts(void)
{
    distill_zoo_options o;
    assert_int_equal(distill_zoo_options_init(&o, DISTILL_ZOO_OPTIONS_VERSION), DISTILL_OK);
    return o;
}

static distill_model *zoo(const char *name, const distill_zoo_options *o)
{
    distill_model *m = NULL;
    int rc = distill_zoo_create(&m, name, o);
    if (rc != DISTILL_OK)
        fail_msg("zoo '%s': %s", name, distill_last_error());
    return m;
}

/* An independent count of CifarResNet(n)'s parameters and multiply-adds,
 * walking torch_kd.py's structure (all convs "same" padded). */
static void cifar_resnet_counts(int n, int in_ch, int classes, int h, int w, const int widths[3],
                                int64_t *params, int64_t *macs)
{
    int64_t p = 0, m = 0;
    int cin = widths[0];
    p += (int64_t)widths[0] * in_ch * 9 + 2 * widths[0];
    m += (int64_t)widths[0] * h * w * in_ch * 9;
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < n; i++) {
            int c = widths[s], stride = s > 0 && i == 0 ? 2 : 1;
            int ho = (h - 1) / stride + 1, wo = (w - 1) / stride + 1;
            p += (int64_t)c * cin * 9 + (int64_t)c * c * 9 + 4 * c;
            m += (int64_t)c * ho * wo * cin * 9 + (int64_t)c * ho * wo * c * 9;
            if (stride != 1 || cin != c) {
                p += (int64_t)c * cin + 2 * c;
                m += (int64_t)c * ho * wo * cin;
            }
            cin = c, h = ho, w = wo;
        }
    p += (int64_t)cin * classes + classes;
    m += (int64_t)cin * classes;
    *params = p;
    *macs = m;
}

static void expect_node(distill_model *m, const char *name, int op, int rank, int64_t d0,
                        int64_t d1, int64_t d2)
{
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    if (distill_model_find_node(m, name, &info) != DISTILL_OK)
        fail_msg("node '%s' missing: %s", name, distill_last_error());
    if (info.op != op)
        fail_msg("node '%s' is a %s, expected %s", name, distill_op_name(info.op),
                 distill_op_name(op));
    assert_int_equal(info.rank, rank);
    assert_int_equal(info.dims[0], d0);
    if (rank == 3) {
        assert_int_equal(info.dims[1], d1);
        assert_int_equal(info.dims[2], d2);
    }
}

static void expect_no_node(distill_model *m, const char *name)
{
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    if (distill_model_find_node(m, name, &info) != DISTILL_ENOTFOUND)
        fail_msg("node '%s' should not exist", name);
}

/* -------------------------------------------------------------- tests */

static void test_names(void **state)
{
    (void)state;
    static const char *const expected[] = {"resnet8",  "resnet14", "resnet20",
                                           "resnet32", "resnet44", "resnet56",
                                           "resnet110", "mobilenetv2", "cnn",
                                           "resnet18", "resnet34", "resnet50",
                                           "mobilenet_v2"};
    const char *const *names = distill_zoo_names();
    size_t n = 0;
    while (names[n])
        n++;
    assert_int_equal(n, sizeof expected / sizeof expected[0]);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(names[i], expected[i]);
        distill_model *m = zoo(names[i], NULL);
        assert_string_equal(distill_model_output_name(m),
                            strcmp(names[i], "mobilenet_v2") == 0 ? "classifier.1" : "fc");
        distill_model_free(m);
    }
    distill_model *m = (distill_model *)1;
    assert_int_equal(distill_zoo_create(&m, "resnet21", NULL), DISTILL_ENOTFOUND);
    assert_null(m);
    assert_non_null(strstr(distill_last_error(), "resnet21"));
    assert_int_equal(distill_zoo_create(&m, "", NULL), DISTILL_ENOTFOUND);
    assert_int_equal(distill_zoo_create(&m, NULL, NULL), DISTILL_EINVAL);
    assert_int_equal(distill_zoo_create(NULL, "cnn", NULL), DISTILL_EINVAL);
}

static void test_resnet_counts(void **state)
{
    (void)state;
    static const int widths[3] = {16, 32, 64};
    static const struct {
        const char *name;
        int n;
    } depths[] = {{"resnet8", 1},  {"resnet14", 2}, {"resnet20", 3}, {"resnet32", 5},
                  {"resnet44", 7}, {"resnet56", 9}, {"resnet110", 18}};
    for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
        distill_model *m = zoo(depths[i].name, NULL);
        int64_t p, macs;
        cifar_resnet_counts(depths[i].n, 1, 10, 28, 28, widths, &p, &macs);
        assert_int_equal(distill_model_num_params(m), p);
        assert_int_equal(distill_model_macs(m), macs);
        distill_model_free(m);
    }
    /* the numbers worked out by hand above */
    distill_model *m = zoo("resnet20", NULL);
    assert_int_equal(distill_model_num_params(m), 272186);
    assert_int_equal(distill_model_macs(m), 31021952);
    distill_model_free(m);
    m = zoo("resnet8", NULL);
    assert_int_equal(distill_model_num_params(m), 77754);
    assert_int_equal(distill_model_macs(m), 9345920);
    distill_model_free(m);
    distill_zoo_options o = zopts();
    o.in_channels = 3;
    o.height = o.width = 32;
    m = zoo("resnet20", &o);
    assert_int_equal(distill_model_num_params(m), 272474);
    assert_int_equal(distill_model_macs(m), 40813184);
    distill_model_free(m);
}

static void test_resnet_structure(void **state)
{
    (void)state;
    distill_model *m = zoo("resnet20", NULL);
    expect_node(m, "input", DISTILL_OP_INPUT, 3, 1, 28, 28);
    expect_node(m, "conv1", DISTILL_OP_CONV2D, 3, 16, 28, 28);
    expect_node(m, "bn1", DISTILL_OP_BATCHNORM, 3, 16, 28, 28);
    expect_node(m, "relu", DISTILL_OP_RELU, 3, 16, 28, 28);
    expect_node(m, "layer1.0.conv1", DISTILL_OP_CONV2D, 3, 16, 28, 28);
    expect_node(m, "layer1.0.bn1", DISTILL_OP_BATCHNORM, 3, 16, 28, 28);
    expect_node(m, "layer1.0.relu1", DISTILL_OP_RELU, 3, 16, 28, 28);
    expect_node(m, "layer1.0.conv2", DISTILL_OP_CONV2D, 3, 16, 28, 28);
    expect_node(m, "layer1.0.bn2", DISTILL_OP_BATCHNORM, 3, 16, 28, 28);
    expect_node(m, "layer1.0.add", DISTILL_OP_ADD, 3, 16, 28, 28);
    expect_node(m, "layer1.0.relu2", DISTILL_OP_RELU, 3, 16, 28, 28);
    expect_node(m, "layer1.1.relu2", DISTILL_OP_RELU, 3, 16, 28, 28);
    expect_no_node(m, "layer1.2.relu2"); /* the stage's last block ends in "layer1" */
    expect_node(m, "layer1", DISTILL_OP_RELU, 3, 16, 28, 28);
    expect_no_node(m, "layer1.0.shortcut.0"); /* identity shortcut */
    expect_node(m, "layer2.0.conv1", DISTILL_OP_CONV2D, 3, 32, 14, 14);
    expect_node(m, "layer2.0.shortcut.0", DISTILL_OP_CONV2D, 3, 32, 14, 14);
    expect_node(m, "layer2.0.shortcut.1", DISTILL_OP_BATCHNORM, 3, 32, 14, 14);
    expect_no_node(m, "layer2.1.shortcut.0");
    expect_node(m, "layer2", DISTILL_OP_RELU, 3, 32, 14, 14);
    expect_node(m, "layer3.0.shortcut.0", DISTILL_OP_CONV2D, 3, 64, 7, 7);
    expect_node(m, "layer3", DISTILL_OP_RELU, 3, 64, 7, 7);
    expect_node(m, "pool", DISTILL_OP_GLOBAL_AVGPOOL, 3, 64, 1, 1);
    expect_node(m, "flatten", DISTILL_OP_FLATTEN, 1, 64, 0, 0);
    expect_node(m, "fc", DISTILL_OP_LINEAR, 1, 10, 0, 0);

    /* wiring: block 0 of stage 2 adds the projected input; block 1 the
     * previous block's output */
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    assert_int_equal(distill_model_find_node(m, "layer2.0.add", &info), DISTILL_OK);
    assert_int_equal(info.n_inputs, 2);
    assert_string_equal(in_name(m, info.name, 0), "layer2.0.bn2");
    assert_string_equal(in_name(m, info.name, 1), "layer2.0.shortcut.1");
    assert_int_equal(distill_model_find_node(m, "layer2.0.shortcut.0", &info), DISTILL_OK);
    assert_string_equal(in_name(m, info.name, 0), "layer1");
    assert_int_equal(info.kernel_h, 1);
    assert_int_equal(info.stride_h, 2);
    assert_int_equal(info.pad_h, 0);
    assert_int_equal(info.bias, 0);
    assert_int_equal(distill_model_find_node(m, "layer2.1.add", &info), DISTILL_OK);
    assert_string_equal(in_name(m, info.name, 1), "layer2.0.relu2");
    assert_int_equal(distill_model_find_node(m, "layer2.0.conv1", &info), DISTILL_OK);
    assert_int_equal(info.kernel_h, 3);
    assert_int_equal(info.stride_h, 2);
    assert_int_equal(info.pad_h, 1);
    assert_int_equal(info.macs, 32 * 14 * 14 * 16 * 9);
    assert_int_equal(distill_model_find_node(m, "bn1", &info), DISTILL_OK);
    assert_float_equal(info.eps, 1e-5, 1e-12);
    assert_float_equal(info.momentum, 0.1, 1e-7);
    assert_int_equal(distill_model_find_node(m, "fc", &info), DISTILL_OK);
    assert_string_equal(in_name(m, info.name, 0), "flatten");
    assert_int_equal(info.bias, 1);

    /* PyTorch's parameter names and layouts */
    distill_param_info p = DISTILL_PARAM_INFO_INIT;
    assert_int_equal(distill_model_find_param(m, "layer2.0.shortcut.0.weight", &p), DISTILL_OK);
    assert_int_equal(p.rank, 4);
    assert_true(p.dims[0] == 32 && p.dims[1] == 16 && p.dims[2] == 1 && p.dims[3] == 1);
    assert_int_equal(distill_model_find_param(m, "layer3.2.bn2.running_var", &p), DISTILL_OK);
    assert_int_equal(distill_model_find_param(m, "fc.weight", &p), DISTILL_OK);
    assert_true(p.dims[0] == 10 && p.dims[1] == 64);
    assert_int_equal(distill_model_find_param(m, "fc.bias", &p), DISTILL_OK);
    assert_int_equal(distill_model_find_param(m, "conv1.bias", &p), DISTILL_ENOTFOUND);
    distill_model_free(m);
}

static void test_width_and_shape_options(void **state)
{
    (void)state;
    static const int half[3] = {8, 16, 32}, x4[3] = {64, 128, 256};
    distill_zoo_options o = zopts();
    int64_t p, macs;
    o.width_mult_pct = 50;
    distill_model *m = zoo("resnet8", &o);
    cifar_resnet_counts(1, 1, 10, 28, 28, half, &p, &macs);
    assert_int_equal(distill_model_num_params(m), p);
    assert_int_equal(distill_model_macs(m), macs);
    distill_model_free(m);
    o.width_mult_pct = 400; /* RepDistiller's resnet8x4 widths */
    m = zoo("resnet8", &o);
    cifar_resnet_counts(1, 1, 10, 28, 28, x4, &p, &macs);
    assert_int_equal(distill_model_num_params(m), p);
    distill_model_free(m);

    o = zopts();
    o.in_channels = 3;
    o.height = 9;
    o.width = 13;
    o.classes = 100;
    const char *const *names = distill_zoo_names();
    for (int i = 0; names[i]; i++) {
        m = zoo(names[i], &o);
        expect_node(m, "input", DISTILL_OP_INPUT, 3, 3, 9, 13);
        expect_node(m, distill_model_output_name(m), DISTILL_OP_LINEAR, 1, 100, 0, 0);
        distill_model_free(m);
    }
    o = zopts();
    o.height = o.width = 8;
    m = zoo("resnet8", &o);
    expect_node(m, "layer3", DISTILL_OP_RELU, 3, 64, 2, 2);
    distill_model_free(m);
}

static void test_options(void **state)
{
    (void)state;
    distill_zoo_options o;
    assert_int_equal(distill_zoo_options_init(&o, 0), DISTILL_EVERSION);
    assert_int_equal(distill_zoo_options_init(NULL, DISTILL_ZOO_OPTIONS_VERSION), DISTILL_EINVAL);
    o = zopts();
    assert_true(o.in_channels == 1 && o.height == 28 && o.width == 28 && o.classes == 10 &&
                o.width_mult_pct == 100 && o.init == DISTILL_INIT_DEFAULT && o.seed == 0);
    struct {
        int *field;
        int bad;
        int status;
    } cases[] = {{&o.classes, 1, DISTILL_EINVAL},         {&o.height, 7, DISTILL_EINVAL},
                 {&o.width, 0, DISTILL_EINVAL},           {&o.in_channels, 0, DISTILL_EINVAL},
                 {&o.width_mult_pct, 24, DISTILL_EINVAL}, {&o.width_mult_pct, 401, DISTILL_EINVAL},
                 {&o.init, 5, DISTILL_EINVAL},            {&o.init, -1, DISTILL_EINVAL}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        o = zopts();
        *cases[i].field = cases[i].bad;
        distill_model *m = (distill_model *)1;
        assert_int_equal(distill_zoo_create(&m, "resnet8", &o), cases[i].status);
        assert_null(m);
    }
    o = zopts();
    o.version = DISTILL_ZOO_OPTIONS_VERSION + 8;
    distill_model *m;
    assert_int_equal(distill_zoo_create(&m, "cnn", &o), DISTILL_EVERSION);
    o = zopts();
    o.width_mult_pct = 25; /* the bounds themselves are fine */
    m = zoo("mobilenetv2", &o);
    distill_model_free(m);
}

/* The zoo initializes with opts->init and opts->seed. */
static void test_init(void **state)
{
    (void)state;
    distill_zoo_options o = zopts();
    o.init = DISTILL_INIT_KAIMING_NORMAL;
    o.seed = 42;
    distill_model *a = zoo("resnet8", &o), *b = zoo("resnet8", &o);
    size_t n, nb;
    float *pa = distill_model_param_block(a, &n), *pb = distill_model_param_block(b, &nb);
    assert_true(n == nb && n == 77754);
    assert_memory_equal(pa, pb, n * sizeof(float));
    /* the same as initializing explicitly */
    assert_int_equal(distill_model_init_weights(b, DISTILL_INIT_KAIMING_NORMAL, 42), DISTILL_OK);
    assert_memory_equal(pa, pb, n * sizeof(float));
    assert_int_equal(distill_model_init_weights(b, DISTILL_INIT_KAIMING_NORMAL, 43), DISTILL_OK);
    assert_true(memcmp(pa, pb, n * sizeof(float)) != 0);
    distill_param_info p = DISTILL_PARAM_INFO_INIT;
    assert_int_equal(distill_model_find_param(a, "fc.bias", &p), DISTILL_OK);
    assert_true(p.data[0] == 0.0f); /* Kaiming: zero biases */
    assert_int_equal(distill_model_find_param(a, "layer1.0.bn1.weight", &p), DISTILL_OK);
    assert_true(p.data[0] == 1.0f);
    distill_model_free(a);
    distill_model_free(b);
}

/*
 * MobileNetV2 (width 100%, 1x28x28, 10 classes).  Stem conv 32 (288 + bn 64);
 * blocks (cin -> hidden -> cout): expand cin*hidden (absent for t = 1),
 * depthwise hidden*9, project hidden*cout, a BN (2C) after each:
 *   layer1.0  32 -> 32 -> 16   288 + 64 + 512 + 32                =    896
 *   layer2.0  16 -> 96 -> 24   1536 + 192 + 864 + 192 + 2304 + 48 =  5,136
 *   layer2.1  24 -> 144 -> 24  3456 + 288 + 1296 + 288 + 3456 + 48 = 8,832
 *   layer3.0  24 -> 144 -> 32  3456 + 288 + 1296 + 288 + 4608 + 64 = 10,000
 *   layer3.1, .2  32 -> 192 -> 32   2 x 14,848                    = 29,696
 *   layer4.0  32 -> 192 -> 64  6144 + 384 + 1728 + 384 + 12288 + 128 = 21,056
 *   layer4.1  64 -> 384 -> 64  24576 + 768 + 3456 + 768 + 24576 + 128 = 54,272
 *   layer5.0  64 -> 384 -> 96  24576 + 768 + 3456 + 768 + 36864 + 192 = 66,624
 *   head      96 -> 320: 30720 + 640 = 31,360;  fc 320*10 + 10 = 3,210
 * total 352 + 896 + 5136 + 8832 + 10000 + 29696 + 21056 + 54272 + 66624 +
 * 31360 + 3210 = 231,434 parameters; 29,494,144 multiply-adds at 28x28.
 */
static void test_mobilenetv2(void **state)
{
    (void)state;
    distill_model *m = zoo("mobilenetv2", NULL);
    assert_int_equal(distill_model_num_params(m), 231434);
    assert_int_equal(distill_model_macs(m), 29494144);
    expect_node(m, "relu", DISTILL_OP_RELU6, 3, 32, 28, 28);
    expect_no_node(m, "layer1.0.conv1"); /* t = 1: no expansion */
    expect_node(m, "layer1.0.conv2", DISTILL_OP_CONV2D, 3, 32, 28, 28);
    expect_node(m, "layer1", DISTILL_OP_BATCHNORM, 3, 16, 28, 28); /* no residual */
    expect_node(m, "layer2.0.conv1", DISTILL_OP_CONV2D, 3, 96, 28, 28);
    expect_node(m, "layer2.0.relu1", DISTILL_OP_RELU6, 3, 96, 28, 28);
    expect_node(m, "layer2.0.bn3", DISTILL_OP_BATCHNORM, 3, 24, 28, 28);
    expect_node(m, "layer2", DISTILL_OP_ADD, 3, 24, 28, 28);
    expect_node(m, "layer3.0.conv2", DISTILL_OP_CONV2D, 3, 144, 14, 14);
    expect_node(m, "layer3.1.add", DISTILL_OP_ADD, 3, 32, 14, 14);
    expect_node(m, "layer3", DISTILL_OP_ADD, 3, 32, 14, 14);
    expect_node(m, "layer4", DISTILL_OP_ADD, 3, 64, 7, 7);
    expect_node(m, "layer5", DISTILL_OP_BATCHNORM, 3, 96, 7, 7);
    expect_node(m, "head.relu", DISTILL_OP_RELU6, 3, 320, 7, 7);
    expect_node(m, "dropout", DISTILL_OP_DROPOUT, 1, 320, 0, 0);
    expect_node(m, "fc", DISTILL_OP_LINEAR, 1, 10, 0, 0);
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    assert_int_equal(distill_model_find_node(m, "layer3.0.conv2", &info), DISTILL_OK);
    assert_int_equal(info.groups, 144); /* depthwise */
    assert_int_equal(info.stride_h, 2);
    assert_int_equal(distill_model_find_node(m, "layer3.1.add", &info), DISTILL_OK);
    assert_string_equal(in_name(m, info.name, 0), "layer3.1.bn3");
    assert_string_equal(in_name(m, info.name, 1), "layer3.0.bn3");
    assert_int_equal(distill_model_find_node(m, "dropout", &info), DISTILL_OK);
    assert_float_equal(info.alpha, 0.2, 1e-7);
    distill_model_free(m);

    /* width 50%: channels rounded to multiples of 8 (16, 8, 16, 16, 32, 48),
     * the head stays at 320 */
    distill_zoo_options o = zopts();
    o.width_mult_pct = 50;
    m = zoo("mobilenetv2", &o);
    assert_int_equal(distill_model_num_params(m), 77642);
    expect_node(m, "layer1", DISTILL_OP_BATCHNORM, 3, 8, 28, 28);
    expect_node(m, "layer5", DISTILL_OP_BATCHNORM, 3, 48, 7, 7);
    expect_node(m, "head.relu", DISTILL_OP_RELU6, 3, 320, 7, 7);
    distill_model_free(m);
}

/*
 * The plain CNN: conv 32*9 = 288, bn 64, conv 64*32*9 = 18,432, bn 128,
 * fc1 (64*7*7 = 3136) * 128 + 128 = 401,536, fc 128*10 + 10 = 1,290:
 * 421,738 parameters; 225,792 + 3,612,672 + 401,408 + 1,280 = 4,241,152
 * multiply-adds.
 */
static void test_cnn(void **state)
{
    (void)state;
    distill_model *m = zoo("cnn", NULL);
    assert_int_equal(distill_model_num_params(m), 421738);
    assert_int_equal(distill_model_macs(m), 4241152);
    expect_node(m, "pool1", DISTILL_OP_MAXPOOL, 3, 32, 14, 14);
    expect_node(m, "pool2", DISTILL_OP_MAXPOOL, 3, 64, 7, 7);
    expect_node(m, "flatten", DISTILL_OP_FLATTEN, 1, 3136, 0, 0);
    expect_node(m, "fc1", DISTILL_OP_LINEAR, 1, 128, 0, 0);
    expect_node(m, "dropout", DISTILL_OP_DROPOUT, 1, 128, 0, 0);
    expect_node(m, "fc", DISTILL_OP_LINEAR, 1, 10, 0, 0);
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    assert_int_equal(distill_model_find_node(m, "dropout", &info), DISTILL_OK);
    assert_float_equal(info.alpha, 0.25, 1e-7);
    distill_model_free(m);
}

#ifndef ZOO_TORCHVISION
#define ZOO_TORCHVISION 0
#endif

/* ------------------------------------------------ torchvision's models */
#if ZOO_TORCHVISION

/*
 * Parameter (trainable: conv and linear weights, biases, BatchNorm scale
 * and shift) and multiply-add (conv and linear) counts of
 * torchvision.models.<name>(num_classes, width_mult) on a CxHxW input, as
 * torchvision 0.14 gives them: sum(p.numel() for p in m.parameters()), and
 * the conv/linear MACs summed by forward hooks.  The ImageNet figures
 * (1000 classes, 3x224x224) are the ones torchvision documents.
 */
static const struct {
    const char *name;
    int width_pct, channels, h, w, classes;
    int64_t params, macs;
} tv_counts[] = {
    {"resnet18", 100, 3, 224, 224, 1000, 11689512, 1814073344},
    {"resnet34", 100, 3, 224, 224, 1000, 21797672, 3663761408},
    {"resnet50", 100, 3, 224, 224, 1000, 25557032, 4089184256},
    {"mobilenet_v2", 100, 3, 224, 224, 1000, 3504872, 300774272},
    /* the RGB benchmarks' teacher and student (3x64x64, 10 classes) */
    {"resnet18", 100, 3, 64, 64, 10, 11181642, 148050944},
    {"mobilenet_v2", 100, 3, 64, 64, 10, 2236682, 24461312},
    /* the smallest input, odd sizes, other class counts and widths */
    {"resnet18", 100, 3, 32, 32, 10, 11181642, 37016576},
    {"resnet50", 100, 3, 32, 32, 10, 23528522, 83431424},
    {"mobilenet_v2", 100, 3, 32, 32, 10, 2236682, 6124928},
    {"resnet18", 100, 3, 77, 77, 7, 11180103, 253650624},
    {"mobilenet_v2", 50, 3, 64, 64, 10, 700490, 7837440},
    {"mobilenet_v2", 35, 3, 64, 64, 10, 408938, 4747968},
    {"mobilenet_v2", 140, 3, 64, 64, 10, 4333706, 47397824},
};

static void test_torchvision_counts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof tv_counts / sizeof tv_counts[0]; i++) {
        distill_zoo_options o = zopts();
        o.width_mult_pct = tv_counts[i].width_pct;
        o.in_channels = tv_counts[i].channels;
        o.height = tv_counts[i].h;
        o.width = tv_counts[i].w;
        o.classes = tv_counts[i].classes;
        distill_model *m = zoo(tv_counts[i].name, &o);
        if (distill_model_num_params(m) != tv_counts[i].params ||
            distill_model_macs(m) != tv_counts[i].macs)
            fail_msg("%s (width %d%%, %dx%dx%d, %d classes): %lld parameters, %lld MACs; "
                     "torchvision has %lld and %lld",
                     tv_counts[i].name, tv_counts[i].width_pct, tv_counts[i].channels,
                     tv_counts[i].h, tv_counts[i].w, tv_counts[i].classes,
                     (long long)distill_model_num_params(m), (long long)distill_model_macs(m),
                     (long long)tv_counts[i].params, (long long)tv_counts[i].macs);
        distill_model_free(m);
    }
}

static void expect_param(distill_model *m, const char *name, int rank, int64_t d0, int64_t d1,
                         int64_t d2, int64_t d3)
{
    distill_param_info p = DISTILL_PARAM_INFO_INIT;
    if (distill_model_find_param(m, name, &p) != DISTILL_OK)
        fail_msg("parameter '%s' missing", name);
    const int64_t d[4] = {d0, d1, d2, d3};
    assert_int_equal(p.rank, rank);
    for (int k = 0; k < rank; k++)
        if (p.dims[k] != d[k])
            fail_msg("parameter '%s' dim %d is %lld, expected %lld", name, k,
                     (long long)p.dims[k], (long long)d[k]);
}

static void expect_conv(distill_model *m, const char *name, int k, int stride, int pad, int groups)
{
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    if (distill_model_find_node(m, name, &info) != DISTILL_OK || info.op != DISTILL_OP_CONV2D)
        fail_msg("'%s' is not a conv2d", name);
    if (info.kernel_h != k || info.kernel_w != k || info.stride_h != stride ||
        info.stride_w != stride || info.pad_h != pad || info.pad_w != pad ||
        info.groups != groups || info.bias)
        fail_msg("'%s': kernel %d stride %d pad %d groups %d bias %d; expected %d %d %d %d 0",
                 name, info.kernel_h, info.stride_h, info.pad_h, info.groups, info.bias, k,
                 stride, pad, groups);
}

/* torchvision's module names, layouts, strides (v1.5: on the 3x3 conv) and
 * shapes at 3x224x224. */
static void test_torchvision_structure(void **state)
{
    (void)state;
    distill_zoo_options o = zopts();
    o.in_channels = 3;
    o.height = o.width = 224;
    o.classes = 1000;
    distill_model *m = zoo("resnet18", &o);
    expect_conv(m, "conv1", 7, 2, 3, 1);
    expect_node(m, "conv1", DISTILL_OP_CONV2D, 3, 64, 112, 112);
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    assert_int_equal(distill_model_find_node(m, "maxpool", &info), DISTILL_OK);
    assert_int_equal(info.op, DISTILL_OP_MAXPOOL);
    assert_int_equal(info.kernel_h, 3);
    assert_int_equal(info.stride_h, 2);
    assert_int_equal(info.pad_h, 1);
    expect_node(m, "maxpool", DISTILL_OP_MAXPOOL, 3, 64, 56, 56);
    expect_param(m, "conv1.weight", 4, 64, 3, 7, 7);
    expect_param(m, "bn1.running_var", 1, 64, 0, 0, 0);
    expect_param(m, "layer1.0.conv1.weight", 4, 64, 64, 3, 3);
    expect_no_node(m, "layer1.0.downsample.0");
    expect_conv(m, "layer2.0.conv1", 3, 2, 1, 1);
    expect_conv(m, "layer2.0.downsample.0", 1, 2, 0, 1);
    expect_param(m, "layer2.0.downsample.0.weight", 4, 128, 64, 1, 1);
    expect_param(m, "layer2.0.downsample.1.weight", 1, 128, 0, 0, 0);
    expect_no_node(m, "layer2.1.downsample.0");
    expect_node(m, "layer1", DISTILL_OP_RELU, 3, 64, 56, 56);
    expect_node(m, "layer2", DISTILL_OP_RELU, 3, 128, 28, 28);
    expect_node(m, "layer3", DISTILL_OP_RELU, 3, 256, 14, 14);
    expect_node(m, "layer4", DISTILL_OP_RELU, 3, 512, 7, 7);
    expect_param(m, "fc.weight", 2, 1000, 512, 0, 0);
    expect_param(m, "fc.bias", 1, 1000, 0, 0, 0);
    expect_no_node(m, "dropout");
    distill_model_free(m);

    m = zoo("resnet50", &o);
    expect_conv(m, "layer1.0.conv1", 1, 1, 0, 1);
    expect_param(m, "layer1.0.conv1.weight", 4, 64, 64, 1, 1);
    expect_param(m, "layer1.0.conv3.weight", 4, 256, 64, 1, 1);
    expect_param(m, "layer1.0.downsample.0.weight", 4, 256, 64, 1, 1);
    expect_conv(m, "layer1.0.downsample.0", 1, 1, 0, 1);
    expect_conv(m, "layer2.0.conv1", 1, 1, 0, 1); /* v1.5: stride on the 3x3 */
    expect_conv(m, "layer2.0.conv2", 3, 2, 1, 1);
    expect_param(m, "layer2.0.conv1.weight", 4, 128, 256, 1, 1);
    expect_param(m, "layer4.2.conv3.weight", 4, 2048, 512, 1, 1);
    expect_no_node(m, "layer4.2.downsample.0");
    expect_node(m, "layer4", DISTILL_OP_RELU, 3, 2048, 7, 7);
    expect_param(m, "fc.weight", 2, 1000, 2048, 0, 0);
    distill_model_free(m);

    m = zoo("mobilenet_v2", &o);
    expect_conv(m, "features.0.0", 3, 2, 1, 1);
    expect_param(m, "features.0.0.weight", 4, 32, 3, 3, 3);
    expect_node(m, "features.0.2", DISTILL_OP_RELU6, 3, 32, 112, 112);
    /* expansion 1: depthwise "conv.0", projection "conv.1" + BN "conv.2" */
    expect_conv(m, "features.1.conv.0.0", 3, 1, 1, 32);
    expect_param(m, "features.1.conv.0.0.weight", 4, 32, 1, 3, 3);
    expect_param(m, "features.1.conv.1.weight", 4, 16, 32, 1, 1);
    expect_param(m, "features.1.conv.2.running_mean", 1, 16, 0, 0, 0);
    /* expansion 6: "conv.0" expand, "conv.1" depthwise, "conv.2" + "conv.3" */
    expect_param(m, "features.2.conv.0.0.weight", 4, 96, 16, 1, 1);
    expect_conv(m, "features.2.conv.1.0", 3, 2, 1, 96);
    expect_param(m, "features.2.conv.2.weight", 4, 24, 96, 1, 1);
    expect_param(m, "features.2.conv.3.bias", 1, 24, 0, 0, 0);
    expect_node(m, "features.3", DISTILL_OP_ADD, 3, 24, 56, 56);
    expect_no_node(m, "features.2");
    expect_node(m, "features.17.conv.3", DISTILL_OP_BATCHNORM, 3, 320, 7, 7);
    expect_param(m, "features.18.0.weight", 4, 1280, 320, 1, 1);
    expect_node(m, "features.18.2", DISTILL_OP_RELU6, 3, 1280, 7, 7);
    assert_int_equal(distill_model_find_node(m, "classifier.0", &info), DISTILL_OK);
    assert_int_equal(info.op, DISTILL_OP_DROPOUT);
    assert_float_equal(info.alpha, 0.2, 1e-7);
    expect_param(m, "classifier.1.weight", 2, 1000, 1280, 0, 0);
    expect_no_node(m, "features.19");
    distill_model_free(m);

    /* widths follow _make_divisible(c * width_mult, 8); the head never
     * narrows below 1280 */
    o.width_mult_pct = 35;
    m = zoo("mobilenet_v2", &o);
    expect_param(m, "features.0.0.weight", 4, 16, 3, 3, 3);   /* 11.2 -> 16 */
    expect_param(m, "features.1.conv.1.weight", 4, 8, 16, 1, 1); /* 5.6 -> 8 */
    expect_param(m, "features.17.conv.2.weight", 4, 112, 336, 1, 1);
    expect_param(m, "classifier.1.weight", 2, 1000, 1280, 0, 0);
    distill_model_free(m);
    o.width_mult_pct = 140;
    m = zoo("mobilenet_v2", &o);
    expect_param(m, "features.18.0.weight", 4, 1792, 448, 1, 1);
    distill_model_free(m);

    /* the ResNets have torchvision's fixed widths */
    o.width_mult_pct = 50;
    assert_int_equal(distill_zoo_create(&m, "resnet18", &o), DISTILL_EINVAL);
    assert_null(m);
    assert_non_null(strstr(distill_last_error(), "resnet18"));
}


#endif /* ZOO_TORCHVISION */

/* One of torchvision's models (test_zoo_torchvision), not the small ones. */
static int is_torchvision(const char *name)
{
    static const char *const tv[] = {"resnet18", "resnet34", "resnet50", "mobilenet_v2"};
    for (size_t i = 0; i < sizeof tv / sizeof tv[0]; i++)
        if (strcmp(name, tv[i]) == 0)
            return 1;
    return 0;
}

/* Every zoo model of this program (small ones, or torchvision's) runs
 * forward at batch 2 in both modes, finite (2, 10). */
static void test_forward(void **state)
{
    (void)state;
    const char *const *names = distill_zoo_names();
    int64_t xd[4] = {2, 1, 28, 28}, yd[2] = {2, 10};
    distill_tensor *x, *y;
    assert_int_equal(distill_tensor_create(&x, 4, xd), DISTILL_OK);
    assert_int_equal(distill_tensor_create(&y, 2, yd), DISTILL_OK);
    float *xv = distill_tensor_data(x);
    for (int64_t i = 0; i < distill_tensor_numel(x); i++)
        xv[i] = (float)sin(0.1 * (double)i);
    int ran = 0;
    for (int i = 0; names[i]; i++) {
        if (is_torchvision(names[i]) != ZOO_TORCHVISION)
            continue;
        ran++;
        distill_model *m = zoo(names[i], NULL);
        for (int mode = DISTILL_MODE_INFERENCE; mode <= DISTILL_MODE_TRAINING; mode++) {
            assert_int_equal(distill_tensor_fill(y, NAN), DISTILL_OK);
            int rc = distill_model_forward(m, x, mode, y);
            if (rc != DISTILL_OK)
                fail_msg("%s forward (mode %d): %s", names[i], mode, distill_last_error());
            const float *yv = distill_tensor_data_const(y);
            for (int k = 0; k < 20; k++)
                if (!isfinite(yv[k]))
                    fail_msg("%s (mode %d): logit %d is %g", names[i], mode, k, (double)yv[k]);
        }
        distill_model_free(m);
    }
    assert_int_equal(ran, ZOO_TORCHVISION ? 4 : 9);
    distill_tensor_free(x);
    distill_tensor_free(y);
}

/* A large inference batch runs in micro-batches when only the output is
 * read: the logits equal those of one image at a time, and of the whole
 * batch at once (a kept node makes the engine run it unsplit). */
static void test_inference_microbatches(void **state)
{
    (void)state;
    enum { N = 70 }; /* ResNet-8 splits into 32 + 32 + 6 */
    int64_t xd[4] = {N, 1, 28, 28}, yd[2] = {N, 10}, x1d[4] = {1, 1, 28, 28}, y1d[2] = {1, 10};
    distill_tensor *x, *y, *whole, *x1, *y1;
    assert_int_equal(distill_tensor_create(&x, 4, xd), DISTILL_OK);
    assert_int_equal(distill_tensor_create(&y, 2, yd), DISTILL_OK);
    assert_int_equal(distill_tensor_create(&whole, 2, yd), DISTILL_OK);
    assert_int_equal(distill_tensor_create(&x1, 4, x1d), DISTILL_OK);
    assert_int_equal(distill_tensor_create(&y1, 2, y1d), DISTILL_OK);
    float *xv = distill_tensor_data(x);
    for (int64_t i = 0; i < distill_tensor_numel(x); i++)
        xv[i] = (float)sin(0.37 * (double)i) + 0.25f * (float)((i / 784) % 5);
    distill_model *m = zoo("resnet8", NULL);
    assert_int_equal(distill_model_forward(m, x, DISTILL_MODE_INFERENCE, y), DISTILL_OK);
    /* nothing but the output tensor was written */
    assert_int_equal(distill_model_read_node(m, "fc", whole), DISTILL_ESTATE);
    const float *yv = distill_tensor_data_const(y);
    for (int n = 0; n < N; n++) {
        memcpy(distill_tensor_data(x1), xv + n * 784, 784 * sizeof(float));
        assert_int_equal(distill_model_forward(m, x1, DISTILL_MODE_INFERENCE, y1), DISTILL_OK);
        const float *v = distill_tensor_data_const(y1);
        for (int k = 0; k < 10; k++)
            if (fabsf(v[k] - yv[n * 10 + k]) > 1e-5f * (1.0f + fabsf(v[k])))
                fail_msg("image %d logit %d: %.8g in a batch of %d, %.8g alone", n, k,
                         (double)yv[n * 10 + k], N, (double)v[k]);
    }
    assert_int_equal(distill_model_keep_node(m, "conv1"), DISTILL_OK);
    assert_int_equal(distill_model_forward(m, x, DISTILL_MODE_INFERENCE, NULL), DISTILL_OK);
    assert_int_equal(distill_model_read_node(m, "fc", whole), DISTILL_OK);
    const float *wv = distill_tensor_data_const(whole);
    for (int i = 0; i < N * 10; i++)
        if (fabsf(wv[i] - yv[i]) > 1e-5f * (1.0f + fabsf(wv[i])))
            fail_msg("logit %d: %.8g in micro-batches, %.8g unsplit", i, (double)yv[i],
                     (double)wv[i]);
    distill_model_free(m);
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_tensor_free(whole);
    distill_tensor_free(x1);
    distill_tensor_free(y1);
}

int main(void)
{
#if ZOO_TORCHVISION
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torchvision_counts),
        cmocka_unit_test(test_torchvision_structure),
        cmocka_unit_test(test_forward),
    };
#else
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_resnet_counts),
        cmocka_unit_test(test_resnet_structure),
        cmocka_unit_test(test_width_and_shape_options),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_mobilenetv2),
        cmocka_unit_test(test_cnn),
        cmocka_unit_test(test_forward),
        cmocka_unit_test(test_inference_microbatches),
    };
#endif
    return cmocka_run_group_tests(tests, NULL, NULL);
}

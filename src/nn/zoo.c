/*
 * zoo.c - ready-made networks for small images, built with the public
 * builder API only (include/distill/model.h, "zoo").
 *
 * resnetD   CIFAR-style ResNet-(6n+2) of He et al., D = 6n + 2, exactly as
 *           the PyTorch peer's CifarResNet: conv3x3 (no bias) + BN + ReLU,
 *           three stages of n BasicBlocks (widths 16/32/64, strides 1/2/2),
 *           global average pool, linear with bias.
 * mobilenetv2  MobileNetV2's inverted residuals with a stride-1 stem and a
 *           shortened stage table for 28x28 / 32x32 inputs (five stages,
 *           a 1x1 head to 320 channels, dropout 0.2 before "fc").
 * cnn       a small plain CNN (two conv-BN-ReLU-maxpool stages, two linear).
 *
 * torchvision's ImageNet networks, for photos (any input from 32x32):
 * resnet18, resnet34, resnet50   torchvision.models.resnet18/34/50: conv7x7
 *           stride 2 + BN + ReLU + maxpool3x3 stride 2 pad 1, four stages of
 *           BasicBlocks (18, 34: 2/2/2/2 and 3/4/6/3 blocks) or Bottlenecks
 *           (50: 3/4/6/3, expansion 4, the stride on the 3x3 conv as in
 *           torchvision's "v1.5"), widths 64/128/256/512, strides 1/2/2/2, the
 *           downsample conv1x1 stride s + BN where the shape changes, global
 *           average pool, "fc".
 * mobilenet_v2   torchvision.models.mobilenet_v2: the full seven-stage table,
 *           stride-2 stem, a 1x1 head to 1280 channels, ReLU6, dropout 0.2
 *           and "classifier.1"; width_mult_pct is torchvision's width_mult,
 *           every width rounded by _make_divisible(v, 8).
 * Their parameters carry torchvision's state_dict keys ("layer1.0.conv1.weight",
 * "layer2.0.downsample.0.weight", "features.1.conv.0.0.weight",
 * "classifier.1.bias", ...) with the same layouts, so torchvision weights
 * copy in by name.
 *
 * Node names follow PyTorch module names ("layer2.0.conv1",
 * "layer2.0.shortcut.0", ...); the last node of each stage is called
 * "layer<S>" so that taps can name a stage (a ReLU in the ResNets; in
 * MobileNetV2 the residual add, or the projection's BatchNorm in a stage
 * whose last block has no residual), and the logits are "fc".
 */
#include <stdio.h>
#include <string.h>

#include "distill/model.h"
#include "util/util.h"

#define NAME_LEN 64 /* node names: "layer3.17.shortcut.1" and the like */
#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f

static const char *const zoo_names[] = {
    "resnet8",  "resnet14", "resnet20", "resnet32", "resnet44",     "resnet56", "resnet110",
    "mobilenetv2", "cnn", "resnet18", "resnet34", "resnet50", "mobilenet_v2", NULL};

const char *const *distill_zoo_names(void)
{
    return zoo_names;
}

int distill_zoo_options_init(distill_zoo_options *opts, unsigned int version)
{
    static const distill_zoo_options init = DISTILL_ZOO_OPTIONS_INIT;
    INIT_STRUCT(opts, version, DISTILL_ZOO_OPTIONS_VERSION, init, "distill_zoo_options",
                "distill_zoo_options_init");
}

/* ------------------------------------------------------------- builder */

/* A model under construction; the first failing call sticks in rc and the
 * later ones do nothing, so that builders read as straight lists of layers. */
typedef struct zb {
    distill_model *m;
    int rc;
} zb;

static void conv(zb *b, const char *name, const char *in, int out, int k, int stride, int groups)
{
    if (b->rc)
        return;
    distill_conv2d_options c;
    distill_conv2d_options_init(&c, DISTILL_CONV2D_OPTIONS_VERSION);
    c.kernel_h = c.kernel_w = k;
    c.stride_h = c.stride_w = stride;
    c.pad_h = c.pad_w = k / 2;
    c.groups = groups;
    c.bias = 0; /* every zoo conv is followed by BatchNorm */
    b->rc = distill_model_add_conv2d(b->m, name, in, out, &c);
}

static void bn(zb *b, const char *name, const char *in)
{
    if (!b->rc)
        b->rc = distill_model_add_batchnorm(b->m, name, in, BN_EPS, BN_MOMENTUM);
}

static void relu(zb *b, const char *name, const char *in)
{
    if (!b->rc)
        b->rc = distill_model_add_relu(b->m, name, in);
}

static void relu6(zb *b, const char *name, const char *in)
{
    if (!b->rc)
        b->rc = distill_model_add_relu6(b->m, name, in);
}

static void add(zb *b, const char *name, const char *x, const char *y)
{
    if (!b->rc)
        b->rc = distill_model_add_add(b->m, name, x, y);
}

/* Global average pool, flatten, optional dropout, "fc" to the classes. */
static void classifier(zb *b, const char *in, float dropout, int classes)
{
    const char *x = "flatten";
    if (!b->rc)
        b->rc = distill_model_add_global_avgpool(b->m, "pool", in);
    if (!b->rc)
        b->rc = distill_model_add_flatten(b->m, "flatten", "pool");
    if (dropout > 0.0f && !b->rc) {
        b->rc = distill_model_add_dropout(b->m, "dropout", "flatten", dropout);
        x = "dropout";
    }
    if (!b->rc)
        b->rc = distill_model_add_linear(b->m, "fc", x, classes, 1);
}

/* base * pct / 100, rounded, at least 1. */
static int scale_width(int base, int pct)
{
    int w = (base * pct + 50) / 100;
    return w > 0 ? w : 1;
}

/* -------------------------------------------------------------- ResNet */

/*
 * One BasicBlock "layer<stage>.<i>" from node `in` (cin channels): conv3x3
 * stride s + BN + ReLU, conv3x3 + BN, plus the input or, when the shape
 * changes, conv1x1 stride s + BN of it; ReLU.  The output node is `out`.
 */
static void basic_block(zb *b, int stage, int i, const char *in, int cin, int cout, int stride,
                        const char *out)
{
    char pre[32], n1[NAME_LEN], n2[NAME_LEN], n3[NAME_LEN], n4[NAME_LEN], n5[NAME_LEN];
    char s0[NAME_LEN], s1[NAME_LEN], sum[NAME_LEN];
    snprintf(pre, sizeof pre, "layer%d.%d", stage, i);
    snprintf(n1, sizeof n1, "%s.conv1", pre);
    snprintf(n2, sizeof n2, "%s.bn1", pre);
    snprintf(n3, sizeof n3, "%s.relu1", pre);
    snprintf(n4, sizeof n4, "%s.conv2", pre);
    snprintf(n5, sizeof n5, "%s.bn2", pre);
    snprintf(s0, sizeof s0, "%s.shortcut.0", pre);
    snprintf(s1, sizeof s1, "%s.shortcut.1", pre);
    snprintf(sum, sizeof sum, "%s.add", pre);
    conv(b, n1, in, cout, 3, stride, 1);
    bn(b, n2, n1);
    relu(b, n3, n2);
    conv(b, n4, n3, cout, 3, 1, 1);
    bn(b, n5, n4);
    const char *shortcut = in;
    if (stride != 1 || cin != cout) {
        conv(b, s0, in, cout, 1, stride, 1);
        bn(b, s1, s0);
        shortcut = s1;
    }
    add(b, sum, n5, shortcut);
    relu(b, out, sum);
}

static void build_resnet(zb *b, int n, const distill_zoo_options *o)
{
    static const int base[3] = {16, 32, 64};
    int cin = scale_width(base[0], o->width_mult_pct);
    char prev[NAME_LEN] = "relu", out[NAME_LEN];
    conv(b, "conv1", "input", cin, 3, 1, 1);
    bn(b, "bn1", "conv1");
    relu(b, "relu", "bn1");
    for (int s = 0; s < 3; s++) {
        int w = scale_width(base[s], o->width_mult_pct);
        for (int i = 0; i < n; i++) {
            if (i == n - 1)
                snprintf(out, sizeof out, "layer%d", s + 1);
            else
                snprintf(out, sizeof out, "layer%d.%d.relu2", s + 1, i);
            basic_block(b, s + 1, i, prev, cin, w, s > 0 && i == 0 ? 2 : 1, out);
            memcpy(prev, out, sizeof prev);
            cin = w;
        }
    }
    classifier(b, prev, 0.0f, o->classes);
}

/* --------------------------------------------------------- MobileNetV2 */

/* torchvision's _make_divisible(v, 8): nearest multiple of 8, at least 8,
 * never more than 10% below v. */
static int make_divisible(double v)
{
    int d = (int)(v + 4.0) / 8 * 8;
    if (d < 8)
        d = 8;
    if (d < 0.9 * v)
        d += 8;
    return d;
}

/*
 * Inverted residual "layer<stage>.<i>": 1x1 expand + BN + ReLU6 (absent
 * when t = 1), 3x3 depthwise stride s + BN + ReLU6, 1x1 project + BN, and
 * the input added when stride is 1 and the channels match.  The block's
 * last node (the add, else the projection's BN) is named `stage_out` when
 * that is not NULL, else "<prefix>.add" or "<prefix>.bn3"; its name is
 * written to out (NAME_LEN bytes).
 */
static void inverted_residual(zb *b, int stage, int i, const char *in, int cin, int cout,
                              int stride, int t, const char *stage_out, char *out)
{
    char pre[32], c1[NAME_LEN], b1[NAME_LEN], r1[NAME_LEN], c2[NAME_LEN], b2[NAME_LEN];
    char r2[NAME_LEN], c3[NAME_LEN], b3[NAME_LEN];
    snprintf(pre, sizeof pre, "layer%d.%d", stage, i);
    snprintf(c1, sizeof c1, "%s.conv1", pre);
    snprintf(b1, sizeof b1, "%s.bn1", pre);
    snprintf(r1, sizeof r1, "%s.relu1", pre);
    snprintf(c2, sizeof c2, "%s.conv2", pre);
    snprintf(b2, sizeof b2, "%s.bn2", pre);
    snprintf(r2, sizeof r2, "%s.relu2", pre);
    snprintf(c3, sizeof c3, "%s.conv3", pre);
    snprintf(b3, sizeof b3, "%s.bn3", pre);
    int residual = stride == 1 && cin == cout;
    if (stage_out)
        snprintf(out, NAME_LEN, "%s", stage_out);
    else
        snprintf(out, NAME_LEN, "%s.%s", pre, residual ? "add" : "bn3");
    const char *x = in;
    if (t != 1) {
        conv(b, c1, in, cin * t, 1, 1, 1);
        bn(b, b1, c1);
        relu6(b, r1, b1);
        x = r1;
    }
    conv(b, c2, x, cin * t, 3, stride, cin * t);
    bn(b, b2, c2);
    relu6(b, r2, b2);
    conv(b, c3, r2, cout, 1, 1, 1);
    if (residual) {
        bn(b, b3, c3);
        add(b, out, b3, in);
    } else {
        bn(b, out, c3);
    }
}

static void build_mobilenetv2(zb *b, const distill_zoo_options *o)
{
    /* expansion t, channels c, blocks n, first stride s: torchvision's table
     * without its two widest stages, for 28x28 / 32x32 inputs. */
    static const int cfg[5][4] = {{1, 16, 1, 1}, {6, 24, 2, 1}, {6, 32, 3, 2}, {6, 64, 2, 2},
                                  {6, 96, 1, 1}};
    double wm = o->width_mult_pct / 100.0;
    int cin = make_divisible(32 * wm);
    int last = make_divisible(320 * (wm > 1.0 ? wm : 1.0));
    char prev[NAME_LEN] = "relu", out[NAME_LEN], stage_out[NAME_LEN];
    conv(b, "conv1", "input", cin, 3, 1, 1);
    bn(b, "bn1", "conv1");
    relu6(b, "relu", "bn1");
    for (int s = 0; s < 5; s++) {
        int cout = make_divisible(cfg[s][1] * wm);
        snprintf(stage_out, sizeof stage_out, "layer%d", s + 1);
        for (int i = 0; i < cfg[s][2]; i++) {
            inverted_residual(b, s + 1, i, prev, cin, cout, i == 0 ? cfg[s][3] : 1, cfg[s][0],
                              i == cfg[s][2] - 1 ? stage_out : NULL, out);
            memcpy(prev, out, sizeof prev);
            cin = cout;
        }
    }
    conv(b, "head.conv", prev, last, 1, 1, 1);
    bn(b, "head.bn", "head.conv");
    relu6(b, "head.relu", "head.bn");
    classifier(b, "head.relu", 0.2f, o->classes);
}

/* ------------------------------------------------- torchvision ResNets */

/*
 * One torchvision residual block "layer<stage>.<i>" from node `in` (cin
 * channels) to `out`.  BasicBlock: conv1 3x3 stride s + bn1 + relu1, conv2
 * 3x3 + bn2.  Bottleneck: conv1 1x1 to `planes` + bn1 + relu1, conv2 3x3
 * stride s + bn2 + relu2, conv3 1x1 to 4 * planes + bn3.  Then the input, or
 * "downsample.0" (conv1x1 stride s) + "downsample.1" (BN) of it when the
 * shape changes, is added ("<prefix>.add") and a ReLU gives `out`.
 * Returns the block's output channels.
 */
static int tv_block(zb *b, int bottleneck, int stage, int i, const char *in, int cin, int planes,
                    int stride, const char *out)
{
    char pre[32], n[8][NAME_LEN], d0[NAME_LEN], d1[NAME_LEN], sum[NAME_LEN];
    static const char *const parts[8] = {"conv1", "bn1",   "relu1", "conv2",
                                         "bn2",   "relu2", "conv3", "bn3"};
    snprintf(pre, sizeof pre, "layer%d.%d", stage, i);
    for (int k = 0; k < 8; k++)
        snprintf(n[k], NAME_LEN, "%s.%s", pre, parts[k]);
    snprintf(d0, sizeof d0, "%s.downsample.0", pre);
    snprintf(d1, sizeof d1, "%s.downsample.1", pre);
    snprintf(sum, sizeof sum, "%s.add", pre);
    int cout = bottleneck ? 4 * planes : planes;
    const char *last;
    if (bottleneck) {
        conv(b, n[0], in, planes, 1, 1, 1);
        bn(b, n[1], n[0]);
        relu(b, n[2], n[1]);
        conv(b, n[3], n[2], planes, 3, stride, 1);
        bn(b, n[4], n[3]);
        relu(b, n[5], n[4]);
        conv(b, n[6], n[5], cout, 1, 1, 1);
        bn(b, n[7], n[6]);
        last = n[7];
    } else {
        conv(b, n[0], in, planes, 3, stride, 1);
        bn(b, n[1], n[0]);
        relu(b, n[2], n[1]);
        conv(b, n[3], n[2], planes, 3, 1, 1);
        bn(b, n[4], n[3]);
        last = n[4];
    }
    const char *shortcut = in;
    if (stride != 1 || cin != cout) {
        conv(b, d0, in, cout, 1, stride, 1);
        bn(b, d1, d0);
        shortcut = d1;
    }
    add(b, sum, last, shortcut);
    relu(b, out, sum);
    return cout;
}

/* torchvision.models.resnet18/34/50: blocks per stage in `blocks`.  The
 * last ReLU of each stage is "layer<S>", the other block outputs
 * "layer<S>.<i>.relu2" (BasicBlock) or "layer<S>.<i>.relu3" (Bottleneck). */
static void build_tv_resnet(zb *b, int bottleneck, const int blocks[4], const distill_zoo_options *o)
{
    static const int planes[4] = {64, 128, 256, 512};
    char prev[NAME_LEN] = "maxpool", out[NAME_LEN];
    int cin = 64;
    conv(b, "conv1", "input", 64, 7, 2, 1);
    bn(b, "bn1", "conv1");
    relu(b, "relu", "bn1");
    if (!b->rc)
        b->rc = distill_model_add_maxpool(b->m, "maxpool", "relu", 3, 2, 1);
    for (int s = 0; s < 4; s++)
        for (int i = 0; i < blocks[s]; i++) {
            if (i == blocks[s] - 1)
                snprintf(out, sizeof out, "layer%d", s + 1);
            else
                snprintf(out, sizeof out, "layer%d.%d.relu%d", s + 1, i, bottleneck ? 3 : 2);
            cin = tv_block(b, bottleneck, s + 1, i, prev, cin, planes[s], s > 0 && i == 0 ? 2 : 1,
                           out);
            memcpy(prev, out, sizeof prev);
        }
    if (!b->rc)
        b->rc = distill_model_add_global_avgpool(b->m, "avgpool", prev);
    if (!b->rc)
        b->rc = distill_model_add_flatten(b->m, "flatten", "avgpool");
    if (!b->rc)
        b->rc = distill_model_add_linear(b->m, "fc", "flatten", o->classes, 1);
}

/* ------------------------------------------------ torchvision MobileNetV2 */

/* Conv2dNormActivation "<pre>": "<pre>.0" conv (no bias), "<pre>.1" BN,
 * "<pre>.2" ReLU6 (the node returned through out). */
static void tv_conv_bn_relu6(zb *b, const char *pre, const char *in, int cout, int k, int stride,
                             int groups, char *out)
{
    char c[NAME_LEN], n[NAME_LEN];
    snprintf(c, sizeof c, "%s.0", pre);
    snprintf(n, sizeof n, "%s.1", pre);
    snprintf(out, NAME_LEN, "%s.2", pre);
    conv(b, c, in, cout, k, stride, groups);
    bn(b, n, c);
    relu6(b, out, n);
}

/*
 * torchvision's InvertedResidual "features.<f>": with expansion t != 1,
 * "conv.0" expand 1x1 to hidden = round(cin * t) channels (+ BN + ReLU6);
 * then the depthwise 3x3 stride s (+ BN + ReLU6), the 1x1 projection (no
 * activation) and its BN: "conv.1", "conv.2", "conv.3" after an expansion,
 * "conv.0", "conv.1", "conv.2" without.  When stride is 1 and cin == cout the
 * input is added, in node "features.<f>".  The block's output node name is
 * written to out (NAME_LEN bytes).
 */
static void tv_inverted_residual(zb *b, int f, const char *in, int cin, int cout, int stride, int t,
                                 char *out)
{
    char pre[NAME_LEN], x[NAME_LEN], proj[NAME_LEN], pbn[NAME_LEN];
    int hidden = cin * t, k = 0;
    snprintf(x, sizeof x, "%s", in);
    if (t != 1) {
        snprintf(pre, sizeof pre, "features.%d.conv.%d", f, k++);
        tv_conv_bn_relu6(b, pre, in, hidden, 1, 1, 1, x);
    }
    snprintf(pre, sizeof pre, "features.%d.conv.%d", f, k++);
    char dw[NAME_LEN];
    tv_conv_bn_relu6(b, pre, x, hidden, 3, stride, hidden, dw);
    snprintf(proj, sizeof proj, "features.%d.conv.%d", f, k++);
    snprintf(pbn, sizeof pbn, "features.%d.conv.%d", f, k);
    conv(b, proj, dw, cout, 1, 1, 1);
    bn(b, pbn, proj);
    if (stride == 1 && cin == cout) {
        snprintf(out, NAME_LEN, "features.%d", f);
        add(b, out, pbn, in);
    } else {
        snprintf(out, NAME_LEN, "%s", pbn);
    }
}

static void build_tv_mobilenet_v2(zb *b, const distill_zoo_options *o)
{
    /* expansion t, channels c, blocks n, first stride s: torchvision's table */
    static const int cfg[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                  {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    double wm = o->width_mult_pct / 100.0;
    int cin = make_divisible(32 * wm);
    int last = make_divisible(1280 * (wm > 1.0 ? wm : 1.0));
    char prev[NAME_LEN], out[NAME_LEN], pre[NAME_LEN];
    int f = 0;
    tv_conv_bn_relu6(b, "features.0", "input", cin, 3, 2, 1, prev);
    for (int s = 0; s < 7; s++) {
        int cout = make_divisible(cfg[s][1] * wm);
        for (int i = 0; i < cfg[s][2]; i++) {
            tv_inverted_residual(b, ++f, prev, cin, cout, i == 0 ? cfg[s][3] : 1, cfg[s][0], out);
            memcpy(prev, out, sizeof prev);
            cin = cout;
        }
    }
    snprintf(pre, sizeof pre, "features.%d", ++f);
    tv_conv_bn_relu6(b, pre, prev, last, 1, 1, 1, out);
    if (!b->rc)
        b->rc = distill_model_add_global_avgpool(b->m, "pool", out);
    if (!b->rc)
        b->rc = distill_model_add_flatten(b->m, "flatten", "pool");
    if (!b->rc)
        b->rc = distill_model_add_dropout(b->m, "classifier.0", "flatten", 0.2f);
    if (!b->rc)
        b->rc = distill_model_add_linear(b->m, "classifier.1", "classifier.0", o->classes, 1);
}

/* ----------------------------------------------------------------- CNN */

static void build_cnn(zb *b, const distill_zoo_options *o)
{
    int c1 = scale_width(32, o->width_mult_pct), c2 = scale_width(64, o->width_mult_pct);
    int hidden = scale_width(128, o->width_mult_pct);
    conv(b, "conv1", "input", c1, 3, 1, 1);
    bn(b, "bn1", "conv1");
    relu(b, "relu1", "bn1");
    if (!b->rc)
        b->rc = distill_model_add_maxpool(b->m, "pool1", "relu1", 2, 2, 0);
    conv(b, "conv2", "pool1", c2, 3, 1, 1);
    bn(b, "bn2", "conv2");
    relu(b, "relu2", "bn2");
    if (!b->rc)
        b->rc = distill_model_add_maxpool(b->m, "pool2", "relu2", 2, 2, 0);
    if (!b->rc)
        b->rc = distill_model_add_flatten(b->m, "flatten", "pool2");
    if (!b->rc)
        b->rc = distill_model_add_linear(b->m, "fc1", "flatten", hidden, 1);
    relu(b, "relu3", "fc1");
    if (!b->rc)
        b->rc = distill_model_add_dropout(b->m, "dropout", "relu3", 0.25f);
    if (!b->rc)
        b->rc = distill_model_add_linear(b->m, "fc", "dropout", o->classes, 1);
}

/* -------------------------------------------------------------- create */

static int check_zoo_options(const distill_zoo_options *o)
{
    if (o->in_channels < 1 || o->in_channels > 4096)
        return seterr(DISTILL_EINVAL, "zoo: in_channels = %d must be in 1..4096", o->in_channels);
    if (o->height < 8 || o->width < 8 || o->height > 4096 || o->width > 4096)
        return seterr(DISTILL_EINVAL, "zoo: input size %dx%d must be at least 8x8 (and at most "
                                      "4096x4096)",
                      o->height, o->width);
    if (o->classes < 2 || o->classes > (1 << 20))
        return seterr(DISTILL_EINVAL, "zoo: classes = %d must be in 2..%d", o->classes, 1 << 20);
    if (o->width_mult_pct < 25 || o->width_mult_pct > 400)
        return seterr(DISTILL_EINVAL, "zoo: width_mult_pct = %d must be in 25..400",
                      o->width_mult_pct);
    if (o->init < DISTILL_INIT_DEFAULT || o->init > DISTILL_INIT_XAVIER_UNIFORM)
        return seterr(DISTILL_EINVAL, "zoo: unknown init scheme %d", o->init);
    return DISTILL_OK;
}

int distill_zoo_create(distill_model **out, const char *name, const distill_zoo_options *opts)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_zoo_create: out is NULL");
    *out = NULL;
    if (!name)
        return seterr(DISTILL_EINVAL, "distill_zoo_create: name is NULL");
    distill_zoo_options o = DISTILL_ZOO_OPTIONS_INIT;
    if (opts)
        COPY_OPTIONS(&o, opts, DISTILL_ZOO_OPTIONS_VERSION, "distill_zoo_options",
                     "distill_zoo_create");
    int rc = check_zoo_options(&o);
    if (rc)
        return rc;

    static const struct {
        const char *name;
        int n;
    } resnets[] = {{"resnet8", 1},  {"resnet14", 2}, {"resnet20", 3},  {"resnet32", 5},
                   {"resnet44", 7}, {"resnet56", 9}, {"resnet110", 18}};
    int depth_n = 0, kind = -1;
    for (size_t i = 0; i < sizeof resnets / sizeof resnets[0]; i++)
        if (strcmp(name, resnets[i].name) == 0)
            kind = 0, depth_n = resnets[i].n;
    static const int tv_blocks[3][4] = {{2, 2, 2, 2}, {3, 4, 6, 3}, {3, 4, 6, 3}};
    static const char *const tv_resnets[3] = {"resnet18", "resnet34", "resnet50"};
    int tv = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(name, tv_resnets[i]) == 0)
            kind = 3, tv = i;
    if (strcmp(name, "mobilenetv2") == 0)
        kind = 1;
    else if (strcmp(name, "cnn") == 0)
        kind = 2;
    else if (strcmp(name, "mobilenet_v2") == 0)
        kind = 4;
    if (kind < 0) {
        char known[256] = "";
        size_t len = 0;
        for (const char *const *n = zoo_names; *n && len < sizeof known; n++)
            len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", len ? ", " : "", *n);
        return seterr(DISTILL_ENOTFOUND, "zoo: no model named '%s' (known: %s)", name, known);
    }
    if (kind == 3 && o.width_mult_pct != 100)
        return seterr(DISTILL_EINVAL, "zoo: %s has torchvision's fixed widths; width_mult_pct = %d "
                                      "must be 100",
                      name, o.width_mult_pct);

    int64_t dims[3] = {o.in_channels, o.height, o.width};
    zb b = {NULL, DISTILL_OK};
    if ((rc = distill_model_create(&b.m, "input", 3, dims)))
        return rc;
    if (kind == 0)
        build_resnet(&b, depth_n, &o);
    else if (kind == 1)
        build_mobilenetv2(&b, &o);
    else if (kind == 2)
        build_cnn(&b, &o);
    else if (kind == 3)
        build_tv_resnet(&b, tv == 2, tv_blocks[tv], &o);
    else
        build_tv_mobilenet_v2(&b, &o);
    if (!b.rc)
        b.rc = distill_model_init_weights(b.m, (distill_init)o.init, o.seed);
    if (b.rc) {
        distill_model_free(b.m);
        return b.rc;
    }
    *out = b.m;
    return DISTILL_OK;
}

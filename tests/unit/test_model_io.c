/*
 * test_model_io.c - model files: save, load, load_buffer, and how loading
 * fails on truncated, corrupted, newer and missing files.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "distill.h"
#include "nn/graph.h"
#include "util/util.h"

/* ------------------------------------------------------------- helpers */

typedef struct fixture {
    char dir[PATH_MAX];
    char path[PATH_MAX + 32];   /* <dir>/model.dstl, saved from `m` */
    distill_model *m;
    unsigned char *file;        /* its bytes */
    size_t size;
} fixture;

static void remove_tree(const char *dir)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return;
    struct dirent *e;
    char p[PATH_MAX + 300];
    while ((e = readdir(dp)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(dp);
    rmdir(dir);
}

static int count_entries(const char *dir)
{
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(dp);
    return n;
}

static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    unsigned char *b = malloc((size_t)n);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return b;
}

#define OK(call) assert_int_equal((call), DISTILL_OK)

static void set_param(distill_model *m, const char *name, float base, float step)
{
    distill_param_info info = DISTILL_PARAM_INFO_INIT;
    OK(distill_model_find_param(m, name, &info));
    for (int64_t i = 0; i < info.numel; i++)
        info.data[i] = base + step * (float)i;
}

/*
 * A small residual network that uses every op:
 *   input (3, 8, 8)
 *   conv1 3->8 3x3 pad 1, no bias -> bn1 -> relu1 -> pool1 maxpool 2/2 (8, 4, 4)
 *   conv2 8->8 3x3 pad 1, 2 groups, bias -> bn2 -> r6 relu6
 *   dw depthwise 3x3, dilation 2, pad 2, bias
 *   add1 = dw + pool1 -> lrelu (0.1)
 *   cat = concat(lrelu, pool1, r6) (24, 4, 4) -> apool avgpool 3/1 pad 1 -> gelu1 (tanh)
 *   gap (24, 1, 1) -> flat (24) -> fc1 24->16 -> bnf -> gelu2 (erf) -> drop 0.25
 *   fc2 16->10, no bias -> sm softmax
 */
static distill_model *build_model(void)
{
    distill_model *m;
    int64_t in[3] = {3, 8, 8};
    OK(distill_model_create(&m, "input", 3, in));
    distill_conv2d_options c;
    OK(distill_conv2d_options_init(&c, DISTILL_CONV2D_OPTIONS_VERSION));
    c.kernel_h = c.kernel_w = 3;
    c.pad_h = c.pad_w = 1;
    c.bias = 0;
    OK(distill_model_add_conv2d(m, "conv1", "input", 8, &c));
    OK(distill_model_add_batchnorm(m, "bn1", "conv1", 1e-5f, 0.1f));
    OK(distill_model_add_relu(m, "relu1", "bn1"));
    OK(distill_model_add_maxpool(m, "pool1", "relu1", 2, 2, 0));
    c.groups = 2;
    c.bias = 1;
    OK(distill_model_add_conv2d(m, "conv2", "pool1", 8, &c));
    OK(distill_model_add_batchnorm(m, "bn2", "conv2", 1e-3f, 0.2f));
    OK(distill_model_add_relu6(m, "r6", "bn2"));
    c.groups = 8;
    c.dilation_h = c.dilation_w = 2;
    c.pad_h = c.pad_w = 2;
    OK(distill_model_add_conv2d(m, "dw", "r6", 8, &c));
    OK(distill_model_add_add(m, "add1", "dw", "pool1"));
    OK(distill_model_add_leaky_relu(m, "lrelu", "add1", 0.1f));
    const char *cat_in[3] = {"lrelu", "pool1", "r6"};
    OK(distill_model_add_concat(m, "cat", 3, cat_in));
    OK(distill_model_add_avgpool(m, "apool", "cat", 3, 1, 1));
    OK(distill_model_add_gelu(m, "gelu1", "apool", 1));
    OK(distill_model_add_global_avgpool(m, "gap", "gelu1"));
    OK(distill_model_add_flatten(m, "flat", "gap"));
    OK(distill_model_add_linear(m, "fc1", "flat", 16, 1));
    OK(distill_model_add_batchnorm(m, "bnf", "fc1", 1e-5f, 0.1f));
    OK(distill_model_add_gelu(m, "gelu2", "bnf", 0));
    OK(distill_model_add_dropout(m, "drop", "gelu2", 0.25f));
    OK(distill_model_add_linear(m, "fc2", "drop", 10, 0));
    OK(distill_model_add_softmax(m, "sm", "fc2"));
    OK(distill_model_init_weights(m, DISTILL_INIT_KAIMING_NORMAL, 1234));
    /* Distinct BatchNorm parameters and statistics, not the init values. */
    set_param(m, "bn1.weight", 0.9f, 0.03f);
    set_param(m, "bn1.bias", -0.1f, 0.02f);
    set_param(m, "bn1.running_mean", 0.05f, -0.01f);
    set_param(m, "bn1.running_var", 0.5f, 0.125f);
    set_param(m, "bn2.running_mean", -0.2f, 0.037f);
    set_param(m, "bn2.running_var", 1.5f, 0.0625f);
    set_param(m, "bnf.weight", 1.1f, -0.01f);
    set_param(m, "bnf.running_mean", 0.3f, -0.04f);
    set_param(m, "bnf.running_var", 0.75f, 0.05f);
    return m;
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    const char *base = getenv("TMPDIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/distill_io_XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof fx->path, "%s/model.dstl", fx->dir);
    fx->m = build_model();
    OK(distill_model_save(fx->m, fx->path));
    fx->file = read_all(fx->path, &fx->size);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    distill_model_free(fx->m);
    free(fx->file);
    remove_tree(fx->dir);
    free(fx);
    return 0;
}

static void assert_same_model(distill_model *a, distill_model *b)
{
    assert_int_equal(distill_model_node_count(a), distill_model_node_count(b));
    assert_string_equal(distill_model_output_name(a), distill_model_output_name(b));
    assert_true(distill_model_macs(a) == distill_model_macs(b));
    for (size_t i = 0; i < distill_model_node_count(a); i++) {
        distill_node_info x = DISTILL_NODE_INFO_INIT, y = DISTILL_NODE_INFO_INIT;
        OK(distill_model_node(a, i, &x));
        OK(distill_model_node(b, i, &y));
        assert_string_equal(x.name, y.name);
        assert_int_equal(x.op, y.op);
        assert_int_equal(x.n_inputs, y.n_inputs);
        for (int k = 0; k < x.n_inputs; k++) {
            const char *xi = NULL, *yi = NULL;
            size_t xk = 0, yk = 1;
            OK(distill_model_node_input(a, i, k, &xk, &xi));
            OK(distill_model_node_input(b, i, k, &yk, &yi));
            assert_string_equal(xi, yi);
            assert_true(xk == yk);
        }
        assert_int_equal(x.rank, y.rank);
        for (int d = 0; d < x.rank; d++)
            assert_true(x.dims[d] == y.dims[d]);
        assert_true(x.params == y.params);
        assert_true(x.macs == y.macs);
        assert_int_equal(x.kernel_h, y.kernel_h);
        assert_int_equal(x.kernel_w, y.kernel_w);
        assert_int_equal(x.stride_h, y.stride_h);
        assert_int_equal(x.stride_w, y.stride_w);
        assert_int_equal(x.pad_h, y.pad_h);
        assert_int_equal(x.pad_w, y.pad_w);
        assert_int_equal(x.dilation_h, y.dilation_h);
        assert_int_equal(x.dilation_w, y.dilation_w);
        assert_int_equal(x.groups, y.groups);
        assert_int_equal(x.bias, y.bias);
        assert_int_equal(x.out_channels, y.out_channels);
        assert_memory_equal(&x.eps, &y.eps, sizeof x.eps);
        assert_memory_equal(&x.momentum, &y.momentum, sizeof x.momentum);
        assert_memory_equal(&x.alpha, &y.alpha, sizeof x.alpha);
        assert_int_equal(x.tanh_approx, y.tanh_approx);
    }
    assert_int_equal(distill_model_param_count(a), distill_model_param_count(b));
    for (size_t i = 0; i < distill_model_param_count(a); i++) {
        distill_param_info x = DISTILL_PARAM_INFO_INIT, y = DISTILL_PARAM_INFO_INIT;
        OK(distill_model_param(a, i, &x));
        OK(distill_model_param(b, i, &y));
        assert_string_equal(x.name, y.name);
        assert_string_equal(x.node, y.node);
        assert_int_equal(x.kind, y.kind);
        assert_int_equal(x.trainable, y.trainable);
        assert_int_equal(x.rank, y.rank);
        for (int d = 0; d < x.rank; d++)
            assert_true(x.dims[d] == y.dims[d]);
        assert_true(x.numel == y.numel);
        assert_memory_equal(x.data, y.data, (size_t)x.numel * sizeof(float));
    }
    size_t na, nb;
    float *pa = distill_model_param_block(a, &na), *pb = distill_model_param_block(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, na * sizeof(float));
    pa = distill_model_stats_block(a, &na);
    pb = distill_model_stats_block(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, na * sizeof(float));
    assert_true(distill_model_num_params(a) == distill_model_num_params(b));
}

/* Walk the container in `buf` and recompute every section's CRC, so that a
 * test can corrupt a payload and reach the checks behind the CRC. */
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t rd64(const unsigned char *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* Offset of section `tag`'s payload (and its length), or 0. */
static size_t section_at(const unsigned char *buf, size_t size, const char *tag, size_t *len)
{
    size_t pos = 16;
    *len = 0;
    while (pos + 20 <= size) {
        uint64_t l = rd64(buf + pos + 8);
        if (memcmp(buf + pos, tag, 4) == 0) {
            *len = (size_t)l;
            return pos + 16;
        }
        pos += 16 + (size_t)l + 4;
    }
    return 0;
}

static void fix_crcs(unsigned char *buf, size_t size)
{
    size_t pos = 16;
    while (pos + 20 <= size) {
        uint64_t l = rd64(buf + pos + 8);
        if (l > size - pos - 20)
            return;
        wr32(buf + pos + 16 + l, crc32_update(0, buf + pos + 16, (size_t)l));
        pos += 16 + (size_t)l + 4;
    }
}

/* Offset of node i's record inside the file (GRPH layout, see model_io.c). */
static size_t node_at(const unsigned char *buf, size_t size, uint32_t i)
{
    size_t len;
    size_t pos = section_at(buf, size, "GRPH", &len);
    assert_true(pos > 0);
    pos += 8; /* node count, output */
    for (uint32_t k = 0; k < i; k++) {
        pos += 4 + rd32(buf + pos);                 /* name */
        pos += 4;                                   /* op */
        uint32_t n_in = rd32(buf + pos);
        pos += 4 + 4 * (size_t)n_in;                /* inputs */
        pos += 4 * 11 + 4 * 3 + 4;                  /* attributes */
        uint32_t rank = rd32(buf + pos);
        pos += 4 + 8 * (size_t)rank;
    }
    return pos;
}

static int load_copy(const unsigned char *buf, size_t size)
{
    distill_model *m = (distill_model *)(uintptr_t)1;
    int rc = distill_model_load_buffer(&m, buf, size);
    if (rc == DISTILL_OK)
        distill_model_free(m);
    else
        assert_null(m);
    return rc;
}

/* --------------------------------------------------------------- tests */

static void test_roundtrip(void **state)
{
    fixture *fx = *state;
    distill_model *b;
    OK(distill_model_load(&b, fx->path));
    assert_same_model(fx->m, b);

    /* A loaded model saves to the same bytes. */
    char again[PATH_MAX + 64];
    snprintf(again, sizeof again, "%s/again.dstl", fx->dir);
    OK(distill_model_save(b, again));
    size_t n;
    unsigned char *bytes = read_all(again, &n);
    assert_int_equal(n, fx->size);
    assert_memory_equal(bytes, fx->file, n);
    free(bytes);
    unlink(again);
    distill_model_free(b);

    /* From memory, and through clone. */
    OK(distill_model_load_buffer(&b, fx->file, fx->size));
    assert_same_model(fx->m, b);
    distill_model_free(b);
    OK(distill_model_clone(&b, fx->m));
    assert_same_model(fx->m, b);
    distill_model_free(b);

    /* The header: magic, version 1, four sections. */
    assert_memory_equal(fx->file, "DSTLMODL\x01\0\0\0\x04\0\0\0GRPH", 20);
}

static void test_output_node_roundtrip(void **state)
{
    (void)state;
    distill_model *m, *b;
    int64_t in[1] = {5};
    OK(distill_model_create(&m, "x", 1, in));
    OK(distill_model_add_linear(m, "fc", "x", 4, 1));
    OK(distill_model_add_relu(m, "act", "fc"));
    OK(distill_model_add_softmax(m, "prob", "act"));
    OK(distill_model_set_output(m, "act"));
    void *buf;
    size_t size;
    OK(model_serialize(m, &buf, &size));
    OK(model_deserialize(&b, buf, size));
    assert_string_equal(distill_model_output_name(b), "act");
    assert_same_model(m, b);
    distill_model_free(b);
    xfree(buf);
    distill_model_free(m);
}

static void test_forward_identical(void **state)
{
    fixture *fx = *state;
    distill_model *b;
    OK(distill_model_load(&b, fx->path));
    int64_t xd[4] = {2, 3, 8, 8}, yd[2] = {2, 10};
    distill_tensor *x, *ya, *yb;
    OK(distill_tensor_create(&x, 4, xd));
    OK(distill_tensor_create(&ya, 2, yd));
    OK(distill_tensor_create(&yb, 2, yd));
    float *p = distill_tensor_data(x);
    for (int64_t i = 0; i < distill_tensor_numel(x); i++)
        p[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    OK(distill_model_forward(fx->m, x, DISTILL_MODE_INFERENCE, ya));
    OK(distill_model_forward(b, x, DISTILL_MODE_INFERENCE, yb));
    assert_memory_equal(distill_tensor_data(ya), distill_tensor_data(yb), 2 * 10 * sizeof(float));
    distill_tensor_free(x);
    distill_tensor_free(ya);
    distill_tensor_free(yb);
    distill_model_free(b);
}

static void test_every_truncation_fails(void **state)
{
    fixture *fx = *state;
    for (size_t n = 0; n < fx->size; n++) {
        unsigned char *copy = malloc(n ? n : 1); /* exact size: ASan sees any overread */
        memcpy(copy, fx->file, n);
        assert_int_equal(load_copy(copy, n), DISTILL_EFORMAT);
        free(copy);
    }
    /* And one byte too many. */
    unsigned char *longer = malloc(fx->size + 1);
    memcpy(longer, fx->file, fx->size);
    longer[fx->size] = 0;
    assert_int_equal(load_copy(longer, fx->size + 1), DISTILL_EFORMAT);
    free(longer);
}

static void test_every_bit_flip_fails(void **state)
{
    fixture *fx = *state;
    unsigned char *copy = malloc(fx->size);
    for (size_t i = 0; i < fx->size; i++) {
        static const unsigned char masks[] = {0x01, 0x80, 0x10};
        for (size_t k = 0; k < sizeof masks; k++) {
            memcpy(copy, fx->file, fx->size);
            copy[i] ^= masks[k];
            int rc = load_copy(copy, fx->size);
            /* The version field may turn into a newer version. */
            if (i >= 8 && i < 12 && rc == DISTILL_EVERSION)
                continue;
            if (rc != DISTILL_EFORMAT)
                fail_msg("flipping 0x%02x at offset %zu gave %d", masks[k], i, rc);
        }
    }
    free(copy);

    /* The message names the file and the section. */
    size_t len, at = section_at(fx->file, fx->size, "PARM", &len);
    assert_true(at > 0 && len > 16);
    char bad[PATH_MAX + 64];
    snprintf(bad, sizeof bad, "%s/bad.dstl", fx->dir);
    FILE *f = fopen(bad, "wb");
    fx->file[at + 12] ^= 0x40;
    fwrite(fx->file, 1, fx->size, f);
    fx->file[at + 12] ^= 0x40;
    fclose(f);
    distill_model *m;
    assert_int_equal(distill_model_load(&m, bad), DISTILL_EFORMAT);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "model file '%s': section PARM: CRC mismatch", bad);
    assert_string_equal(distill_last_error(), want);
    unlink(bad);
}

/* Corruptions behind a valid CRC: the structural checks must catch them
 * (or, for a changed float attribute, load a valid model), never crash. */
static void test_payload_corruption_with_valid_crc(void **state)
{
    fixture *fx = *state;
    size_t glen, gat = section_at(fx->file, fx->size, "GRPH", &glen);
    assert_true(gat > 0);
    unsigned char *copy = malloc(fx->size);
    int loaded = 0, rejected = 0;
    for (size_t i = gat; i < gat + glen; i++) {
        static const unsigned char masks[] = {0x01, 0x80, 0xFF};
        for (size_t k = 0; k < sizeof masks; k++) {
            memcpy(copy, fx->file, fx->size);
            copy[i] ^= masks[k];
            fix_crcs(copy, fx->size);
            int rc = load_copy(copy, fx->size);
            if (rc == DISTILL_OK)
                loaded++;
            else if (rc == DISTILL_EFORMAT)
                rejected++;
            else
                fail_msg("corrupting GRPH byte %zu with 0x%02x gave %d", i - gat, masks[k], rc);
        }
    }
    assert_true(rejected > loaded);
    free(copy);
}

static void expect_format_error(unsigned char *buf, size_t size, const char *needle)
{
    fix_crcs(buf, size);
    distill_model *m;
    assert_int_equal(distill_model_load_buffer(&m, buf, size), DISTILL_EFORMAT);
    assert_null(m);
    if (!strstr(distill_last_error(), needle))
        fail_msg("message '%s' does not mention '%s'", distill_last_error(), needle);
}

static void test_targeted_corruption(void **state)
{
    fixture *fx = *state;
    unsigned char *b = malloc(fx->size);
    size_t len;
    const size_t gat = section_at(fx->file, fx->size, "GRPH", &len);
    /* Node records: name, op, n_inputs, inputs... */
    const size_t n1 = node_at(fx->file, fx->size, 1); /* conv1 */
    const size_t n1_op = n1 + 4 + rd32(fx->file + n1);

#define FRESH() memcpy(b, fx->file, fx->size)
    FRESH();
    wr32(b + n1_op, 99);
    expect_format_error(b, fx->size, "section GRPH: node 1 'conv1': unknown op 99");

    FRESH();
    wr32(b + n1_op + 8, 1); /* conv1's input is itself */
    expect_format_error(b, fx->size, "not an earlier node");

    FRESH();
    wr32(b + n1_op + 4, 2); /* conv1 with two inputs */
    expect_format_error(b, fx->size, "conv2d with 2 inputs");

    FRESH();
    wr32(b + gat, 0xFFFFFFFFu);
    expect_format_error(b, fx->size, "section GRPH: node count 4294967295 out of range");

    FRESH();
    wr32(b + gat, 0);
    expect_format_error(b, fx->size, "node count 0");

    FRESH();
    wr32(b + gat + 4, 1000); /* output node */
    expect_format_error(b, fx->size, "output node 1000");

    FRESH();
    wr32(b + n1, 0); /* empty name */
    expect_format_error(b, fx->size, "name length 0");

    FRESH();
    wr32(b + n1, 5000);
    expect_format_error(b, fx->size, "name length 5000");

    FRESH();
    wr32(b + n1, 0x7FFFFFFFu);
    expect_format_error(b, fx->size, "name length");

    FRESH();
    memcpy(b + n1 + 4, "input", 5); /* "conv1" -> "input": a duplicate name */
    expect_format_error(b, fx->size, "already exists");

    FRESH();
    b[n1 + 4 + 2] = '\0';
    expect_format_error(b, fx->size, "NUL");

    FRESH();
    wr32(b + n1_op, DISTILL_OP_INPUT);
    expect_format_error(b, fx->size, "an input node after the first");

    FRESH(); /* conv1 out_channels (first attribute) 8 -> 9: parameter count */
    wr32(b + n1_op + 8 + 4, 9);
    expect_format_error(b, fx->size, "parameters, section PARM holds");

    FRESH(); /* conv1 out_channels -1 */
    wr32(b + n1_op + 8 + 4, 0xFFFFFFFFu);
    expect_format_error(b, fx->size, "negative out_channels");

    FRESH(); /* conv1 stride 2: a shape the later nodes do not match */
    wr32(b + n1_op + 8 + 4 + 12, 2);
    expect_format_error(b, fx->size, "'conv1': stored output shape differs");

    FRESH(); /* conv1 rank 2 */
    wr32(b + n1_op + 8 + 4 + 4 * 11 + 4 * 3 + 4, 2);
    expect_format_error(b, fx->size, "rank 2");

    FRESH(); /* the input's channel count 3 -> 0 */
    {
        size_t n0 = node_at(fx->file, fx->size, 0);
        size_t rank_at = n0 + 4 + rd32(fx->file + n0) + 8 + 4 * 11 + 4 * 3 + 4;
        wr32(b + rank_at + 4, 0);
        wr32(b + rank_at + 8, 0);
        expect_format_error(b, fx->size, "dim 0 is 0");
    }

    FRESH(); /* PARM count one less than the floats that follow */
    {
        size_t plen, pat = section_at(fx->file, fx->size, "PARM", &plen);
        wr32(b + pat, rd32(fx->file + pat) - 1);
        expect_format_error(b, fx->size, "section PARM: count");
    }

    FRESH(); /* an unknown section instead of STAT */
    {
        size_t slen, sat = section_at(fx->file, fx->size, "STAT", &slen);
        memcpy(b + sat - 16, "XTRA", 4);
        expect_format_error(b, fx->size, "unknown section XTRA");
        memcpy(b + sat - 16, "GRPH", 4);
        expect_format_error(b, fx->size, "section GRPH appears twice");
        memcpy(b + sat - 16, "STAT", 4);
        wr32(b + sat - 12, 1); /* flags */
        expect_format_error(b, fx->size, "section STAT: unknown flags");
    }

    FRESH(); /* not a model file */
    memcpy(b, "DSTLCKPT", 8);
    expect_format_error(b, fx->size, "bad magic");

    FRESH(); /* section count */
    wr32(b + 12, 5);
    expect_format_error(b, fx->size, "declares 5 sections");
    FRESH();
    wr32(b + 12, 3);
    expect_format_error(b, fx->size, "more sections than the 3");
    FRESH();
    wr32(b + 8, 0);
    expect_format_error(b, fx->size, "version 0");
#undef FRESH
    free(b);
}

static void test_missing_section(void **state)
{
    (void)state;
    /* A container with only GRPH and END. */
    distill_model *m;
    int64_t in[1] = {3};
    OK(distill_model_create(&m, "x", 1, in));
    void *buf;
    size_t size;
    OK(model_serialize(m, &buf, &size));
    distill_model_free(m);
    unsigned char *b = buf;
    size_t plen, pat = section_at(b, size, "PARM", &plen);
    size_t cut = pat - 16, drop = 16 + plen + 4;
    memmove(b + cut, b + cut + drop, size - cut - drop);
    size -= drop;
    wr32(b + 12, 3);
    assert_int_equal(distill_model_load_buffer(&m, b, size), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "section PARM is missing"));
    xfree(buf);
}

static void test_newer_version(void **state)
{
    fixture *fx = *state;
    unsigned char *b = malloc(fx->size);
    memcpy(b, fx->file, fx->size);
    wr32(b + 8, 3);
    distill_model *m;
    assert_int_equal(distill_model_load_buffer(&m, b, fx->size), DISTILL_EVERSION);
    assert_null(m);
    assert_non_null(strstr(distill_last_error(), "version 3"));
    free(b);
}

static void test_missing_file(void **state)
{
    fixture *fx = *state;
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/does-not-exist.dstl", fx->dir);
    distill_model *m;
    assert_int_equal(distill_model_load(&m, path), DISTILL_ENOTFOUND);
    assert_null(m);
    assert_non_null(strstr(distill_last_error(), path));
    assert_int_equal(distill_model_load(&m, fx->dir), DISTILL_EIO); /* a directory */
}

static void test_bad_arguments(void **state)
{
    fixture *fx = *state;
    distill_model *m;
    assert_int_equal(distill_model_load(NULL, fx->path), DISTILL_EINVAL);
    assert_int_equal(distill_model_load(&m, NULL), DISTILL_EINVAL);
    assert_int_equal(distill_model_load_buffer(NULL, fx->file, fx->size), DISTILL_EINVAL);
    assert_int_equal(distill_model_load_buffer(&m, NULL, 0), DISTILL_EFORMAT);
    assert_int_equal(distill_model_load_buffer(&m, NULL, 10), DISTILL_EINVAL);
    assert_int_equal(distill_model_save(NULL, fx->path), DISTILL_EINVAL);
    assert_int_equal(distill_model_save(fx->m, NULL), DISTILL_EINVAL);
    assert_int_equal(distill_model_save(fx->m, ""), DISTILL_EINVAL);
}

static void test_save_to_missing_directory(void **state)
{
    fixture *fx = *state;
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/no/such/dir/model.dstl", fx->dir);
    assert_int_equal(distill_model_save(fx->m, path), DISTILL_EIO);
    assert_non_null(strstr(distill_last_error(), path));
    /* Nothing else in the directory changed. */
    size_t n;
    unsigned char *now = read_all(fx->path, &n);
    assert_int_equal(n, fx->size);
    assert_memory_equal(now, fx->file, n);
    free(now);
    assert_int_equal(count_entries(fx->dir), 1);
}

static void test_failed_save_keeps_old_file(void **state)
{
    fixture *fx = *state;
    /* A different model to write over the saved one. */
    distill_model *other = build_model();
    OK(distill_model_init_weights(other, DISTILL_INIT_XAVIER_UNIFORM, 99));

    /* Make the write fail half-way, as a full disk would: cap the file size
     * this process may write (works as root, unlike permissions). */
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 1000;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = distill_model_save(other, fx->path);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);

    assert_int_equal(rc, DISTILL_EIO);
    assert_non_null(strstr(distill_last_error(), fx->path));
    size_t n;
    unsigned char *now = read_all(fx->path, &n);
    assert_int_equal(n, fx->size);
    assert_memory_equal(now, fx->file, n);
    free(now);
    assert_int_equal(count_entries(fx->dir), 1); /* no temporary left behind */

    /* The same save succeeds without the cap, and replaces the file. */
    OK(distill_model_save(other, fx->path));
    distill_model *back;
    OK(distill_model_load(&back, fx->path));
    assert_same_model(other, back);
    distill_model_free(back);
    distill_model_free(other);
    OK(distill_model_save(fx->m, fx->path)); /* restore for the other tests */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test(test_output_node_roundtrip),
        cmocka_unit_test_setup_teardown(test_every_truncation_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_bit_flip_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_corruption_with_valid_crc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_targeted_corruption, setup, teardown),
        cmocka_unit_test(test_missing_section),
        cmocka_unit_test_setup_teardown(test_newer_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_to_missing_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_save_keeps_old_file, setup, teardown),
        /* Needs the compute engine; last so the file-format results come first. */
        cmocka_unit_test_setup_teardown(test_forward_identical, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

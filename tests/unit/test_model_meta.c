/*
 * test_model_meta.c - a model's metadata: the accessors and their checks,
 * the "META" section of model files (round trip, files written before it
 * existed, corrupt and lying sections), ONNX metadata_props both ways, and
 * distill_dataset_fingerprint.
 */
#define _GNU_SOURCE /* memmem */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "distill.h"
#include "nn/graph.h"
#include "util/util.h"

#define OK(call) assert_int_equal((call), DISTILL_OK)

/* src/onnx/onnx_export.c (a stub without ONNX support) */
int onnx_export_buffer(const struct distill_model *m, void **data, size_t *size);

/* input (C, 8, 8) -> conv 4 -> gap -> flat -> fc `classes` */
static distill_model *small_model(int channels, int classes)
{
    distill_model *m;
    int64_t in[3] = {channels, 8, 8};
    OK(distill_model_create(&m, "input", 3, in));
    distill_conv2d_options c;
    OK(distill_conv2d_options_init(&c, DISTILL_CONV2D_OPTIONS_VERSION));
    c.kernel_h = c.kernel_w = 3;
    c.pad_h = c.pad_w = 1;
    OK(distill_model_add_conv2d(m, "conv", "input", 4, &c));
    OK(distill_model_add_global_avgpool(m, "gap", "conv"));
    OK(distill_model_add_flatten(m, "flat", "gap"));
    OK(distill_model_add_linear(m, "fc", "flat", classes, 1));
    OK(distill_model_init_weights(m, DISTILL_INIT_DEFAULT, 7));
    return m;
}

static const char *const NAMES3[3] = {"cat", "dog", "T-shirt/top"};

/* A 3-channel, 3-class model with every kind of entry. */
static distill_model *described_model(void)
{
    distill_model *m = small_model(3, 3);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    OK(distill_model_set_metadata(m, DISTILL_META_DATA_SHAPE, "3,32,32"));
    OK(distill_model_set_normalization(m, 3, mean, std));
    OK(distill_model_set_class_names(m, 3, NAMES3));
    OK(distill_model_set_metadata(m, DISTILL_META_LIBRARY, "libdistill 0.1.0"));
    OK(distill_model_set_metadata(m, DISTILL_META_COMMAND, "distill train"));
    OK(distill_model_set_metadata(m, DISTILL_META_OPTIONS, "{\"epochs\": 3, \"data\": \"ph\u00f6tos\"}"));
    OK(distill_model_set_metadata(m, DISTILL_META_SEED, "18446744073709551615"));
    OK(distill_model_set_metadata(m, DISTILL_META_DATA, "fnv1a64:0123456789abcdef"));
    OK(distill_model_set_metadata(m, "host.note", "aaaa"));
    OK(distill_model_set_metadata(m, "host.nuta", "bbbb"));
    return m;
}

static void assert_same_metadata(const distill_model *a, const distill_model *b)
{
    size_t n = distill_model_metadata_count(a);
    assert_int_equal(distill_model_metadata_count(b), n);
    for (size_t i = 0; i < n; i++) {
        const char *k = distill_model_metadata_key(a, i);
        assert_string_equal(distill_model_metadata_key(b, i), k);
        assert_string_equal(distill_model_get_metadata(b, k), distill_model_get_metadata(a, k));
    }
    assert_int_equal(distill_model_class_count(b), distill_model_class_count(a));
    for (int k = 0; k < distill_model_class_count(a); k++)
        assert_string_equal(distill_model_class_name(b, k), distill_model_class_name(a, k));
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Make every section CRC of a container valid again. */
static void fix_crcs(unsigned char *buf, size_t size)
{
    size_t pos = 16;
    while (pos + 20 <= size) {
        uint64_t l = (uint64_t)rd32(buf + pos + 8) | (uint64_t)rd32(buf + pos + 12) << 32;
        if (l > size - pos - 20)
            return;
        wr32(buf + pos + 16 + l, crc32_update(0, buf + pos + 16, (size_t)l));
        pos += 16 + (size_t)l + 4;
    }
}

/* Replace the first `from` in buf by the as many bytes at `to`. */
static void replace(unsigned char *buf, size_t size, const char *from, const char *to)
{
    unsigned char *at = memmem(buf, size, from, strlen(from));
    assert_non_null(at);
    memcpy(at, to, strlen(from));
}

static int load_copy(const void *buf, size_t size)
{
    distill_model *m = (distill_model *)(uintptr_t)1;
    int rc = distill_model_load_buffer(&m, buf, size);
    if (rc == DISTILL_OK)
        distill_model_free(m);
    else
        assert_null(m);
    return rc;
}

/* The serialized model with `from` replaced by `to` and the CRCs fixed
 * fails to load with DISTILL_EFORMAT and a message holding `want`. */
static void expect_lie(const char *from, const char *to, const char *want)
{
    distill_model *m = described_model();
    void *buf;
    size_t size;
    OK(model_serialize(m, &buf, &size));
    distill_model_free(m);
    assert_int_equal(load_copy(buf, size), DISTILL_OK);
    replace(buf, size, from, to);
    fix_crcs(buf, size);
    assert_int_equal(load_copy(buf, size), DISTILL_EFORMAT);
    if (!strstr(distill_last_error(), want))
        fail_msg("'%s' -> '%s': message '%s' lacks '%s'", from, to, distill_last_error(), want);
    assert_non_null(strstr(distill_last_error(), "section META"));
    xfree(buf);
}

/* ------------------------------------------------------------ accessors */

static void test_entries(void **state)
{
    (void)state;
    distill_model *m = small_model(1, 10);
    assert_int_equal(distill_model_metadata_count(m), 0);
    assert_null(distill_model_get_metadata(m, "a"));
    assert_null(distill_model_metadata_key(m, 0));
    OK(distill_model_set_metadata(m, "b.x", "1"));
    OK(distill_model_set_metadata(m, "a_y-Z.9", ""));
    OK(distill_model_set_metadata(m, "b.x", "replaced"));
    assert_int_equal(distill_model_metadata_count(m), 2);
    assert_string_equal(distill_model_metadata_key(m, 0), "b.x"); /* order of first set */
    assert_string_equal(distill_model_metadata_key(m, 1), "a_y-Z.9");
    assert_string_equal(distill_model_get_metadata(m, "b.x"), "replaced");
    assert_string_equal(distill_model_get_metadata(m, "a_y-Z.9"), "");
    OK(distill_model_set_metadata(m, "b.x", NULL));
    OK(distill_model_set_metadata(m, "never.set", NULL));
    assert_int_equal(distill_model_metadata_count(m), 1);
    assert_null(distill_model_get_metadata(m, "b.x"));

    /* bad keys and values leave the model as it was */
    static const char *const bad_keys[] = {"", "has space", "new\nline", "quote\"", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++)
        assert_int_equal(distill_model_set_metadata(m, bad_keys[i], "v"), DISTILL_EINVAL);
    char long_key[130];
    memset(long_key, 'k', 129);
    long_key[129] = '\0';
    assert_int_equal(distill_model_set_metadata(m, long_key, "v"), DISTILL_EINVAL);
    long_key[128] = '\0';
    OK(distill_model_set_metadata(m, long_key, "v"));
    static const char *const bad_utf8[] = {"\xff", "a\xc3", "\xc0\xaf", "\xed\xa0\x80",
                                           "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof *bad_utf8; i++) {
        assert_int_equal(distill_model_set_metadata(m, "u", bad_utf8[i]), DISTILL_EINVAL);
        assert_non_null(strstr(distill_last_error(), "UTF-8"));
    }
    OK(distill_model_set_metadata(m, "u", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
    char *big = malloc((1u << 20) + 2);
    memset(big, 'v', (1u << 20) + 1);
    big[(1u << 20) + 1] = '\0';
    assert_int_equal(distill_model_set_metadata(m, "big", big), DISTILL_EINVAL);
    big[1u << 20] = '\0';
    OK(distill_model_set_metadata(m, "big", big));
    free(big);
    assert_int_equal(distill_model_metadata_count(m), 4);
    assert_int_equal(distill_model_set_metadata(NULL, "a", "b"), DISTILL_EINVAL);
    assert_int_equal(distill_model_set_metadata(m, NULL, "b"), DISTILL_EINVAL);
    assert_null(distill_model_get_metadata(NULL, "a"));
    assert_null(distill_model_get_metadata(m, NULL));
    assert_int_equal(distill_model_metadata_count(NULL), 0);

    /* at most 256 entries */
    char key[32];
    for (int i = 0; distill_model_metadata_count(m) < 256; i++) {
        snprintf(key, sizeof key, "k%d", i);
        OK(distill_model_set_metadata(m, key, "v"));
    }
    assert_int_equal(distill_model_set_metadata(m, "one.more", "v"), DISTILL_EINVAL);
    OK(distill_model_set_metadata(m, "u", "replacing is fine"));
    distill_model_free(m);
}

static void expect_refused(distill_model *m, const char *key, const char *value, const char *want)
{
    size_t n = distill_model_metadata_count(m);
    const char *before = distill_model_get_metadata(m, key);
    char *copy = before ? strdup(before) : NULL;
    assert_int_equal(distill_model_set_metadata(m, key, value), DISTILL_EINVAL);
    if (!strstr(distill_last_error(), want))
        fail_msg("%s = '%s': message '%s' lacks '%s'", key, value, distill_last_error(), want);
    assert_int_equal(distill_model_metadata_count(m), n);
    if (copy)
        assert_string_equal(distill_model_get_metadata(m, key), copy);
    else
        assert_null(distill_model_get_metadata(m, key));
    free(copy);
}

static void test_known_keys(void **state)
{
    (void)state;
    distill_model *m = small_model(3, 4);
    OK(distill_model_set_metadata(m, DISTILL_META_DATA_SHAPE, "3,224,224"));
    expect_refused(m, DISTILL_META_DATA_SHAPE, "1,28,28", "1 channel, and the input 'input' has 3");
    expect_refused(m, DISTILL_META_DATA_SHAPE, "3,28", "not C,H,W");
    expect_refused(m, DISTILL_META_DATA_SHAPE, "3,0,28", "not C,H,W");
    expect_refused(m, DISTILL_META_DATA_SHAPE, "3,028,28", "not C,H,W");
    expect_refused(m, DISTILL_META_DATA_SHAPE, "3, 28,28", "not C,H,W");
    expect_refused(m, DISTILL_META_DATA_SHAPE, "768", "a vector");

    OK(distill_model_set_metadata(m, DISTILL_META_MEAN, "0.5"));
    OK(distill_model_set_metadata(m, DISTILL_META_MEAN, "0.5,-1e-3,.25"));
    expect_refused(m, DISTILL_META_MEAN, "0.5,0.5", "2 values, and the input has 3 channels");
    expect_refused(m, DISTILL_META_MEAN, "0.5,,0.5", "not a list of finite numbers");
    expect_refused(m, DISTILL_META_MEAN, "nan", "not a list of finite numbers");
    expect_refused(m, DISTILL_META_MEAN, "1e39", "not a list of finite numbers");
    expect_refused(m, DISTILL_META_MEAN, "0,5", "2 values");
    expect_refused(m, DISTILL_META_STD, "0.5,0,0.5", "a std must be positive");
    expect_refused(m, DISTILL_META_STD, "-1", "a std must be positive");

    OK(distill_model_set_metadata(m, DISTILL_META_CLASSES, "a\nb\nc\nd"));
    assert_int_equal(distill_model_class_count(m), 4);
    assert_string_equal(distill_model_class_name(m, 3), "d");
    expect_refused(m, DISTILL_META_CLASSES, "a\nb\nc", "3 names, and the output 'fc' has 4 logits");
    expect_refused(m, DISTILL_META_CLASSES, "a\nb\n\nd", "name 2 is empty");
    expect_refused(m, DISTILL_META_CLASSES, "a\nb\tx\nc\nd", "control character");
    expect_refused(m, DISTILL_META_CLASSES, "a\nb\nc\nd\n", "name 4 is empty");
    assert_string_equal(distill_model_class_name(m, 0), "a");

    OK(distill_model_set_metadata(m, DISTILL_META_SEED, "0"));
    OK(distill_model_set_metadata(m, DISTILL_META_SEED, "18446744073709551615"));
    expect_refused(m, DISTILL_META_SEED, "18446744073709551616", "not a decimal integer");
    expect_refused(m, DISTILL_META_SEED, "-1", "not a decimal integer");
    expect_refused(m, DISTILL_META_SEED, "01", "not a decimal integer");
    expect_refused(m, DISTILL_META_SEED, "", "not a decimal integer");
    distill_model_free(m);

    /* a vector input: the data's shape must hold as many values */
    int64_t in[1] = {12};
    OK(distill_model_create(&m, "x", 1, in));
    OK(distill_model_add_linear(m, "fc", "x", 2, 1));
    OK(distill_model_set_metadata(m, DISTILL_META_DATA_SHAPE, "3,2,2"));
    OK(distill_model_set_metadata(m, DISTILL_META_DATA_SHAPE, "12"));
    expect_refused(m, DISTILL_META_DATA_SHAPE, "1,3,3", "9 values per sample, and the input 'x' takes 12");
    expect_refused(m, DISTILL_META_MEAN, "0.1,0.2", "2 values, and the input has 1 channel");
    distill_model_free(m);

    /* class names need a vector output */
    OK(distill_model_create(&m, "x", 3, (int64_t[3]){1, 4, 4}));
    OK(distill_model_add_relu(m, "r", "x"));
    const char *one[1] = {"a"};
    assert_int_equal(distill_model_set_class_names(m, 1, one), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "not a vector of class logits"));
    distill_model_free(m);
}

static void test_normalization(void **state)
{
    (void)state;
    distill_model *m = small_model(3, 4);
    int n = -1;
    float mean[4], std[4];
    OK(distill_model_get_normalization(m, &n, NULL, NULL, 0));
    assert_int_equal(n, 0);
    /* values that need all nine digits read back exactly */
    const float om[3] = {0.2860f, 1.0f / 3.0f, -1e-7f}, os[3] = {0.3530f, 7.0f, 1e30f};
    OK(distill_model_set_normalization(m, 3, om, os));
    OK(distill_model_get_normalization(m, &n, mean, std, 4));
    assert_int_equal(n, 3);
    assert_memory_equal(mean, om, sizeof om);
    assert_memory_equal(std, os, sizeof os);
    OK(distill_model_get_normalization(m, &n, mean, std, 1)); /* cap: the count still says 3 */
    assert_int_equal(n, 3);
    assert_string_equal(distill_model_get_metadata(m, DISTILL_META_MEAN), "0.286000013,0.333333343,-1.00000001e-07");

    /* whatever the locale's decimal point */
    const char *loc = setlocale(LC_NUMERIC, "de_DE.UTF-8");
    if (!loc)
        loc = setlocale(LC_NUMERIC, "fr_FR.UTF-8");
    if (loc) {
        OK(distill_model_set_normalization(m, 1, (float[]){0.5f}, (float[]){0.25f}));
        assert_string_equal(distill_model_get_metadata(m, DISTILL_META_STD), "0.25");
        OK(distill_model_get_normalization(m, &n, mean, std, 4));
        assert_true(n == 1 && mean[0] == 0.5f && std[0] == 0.25f);
        setlocale(LC_NUMERIC, "C");
    } else {
        print_message("no de_DE or fr_FR locale: the decimal comma is not tried\n");
    }

    const float bad_std[3] = {1, 0, 1}, inf[3] = {1, INFINITY, 1};
    assert_int_equal(distill_model_set_normalization(m, 3, om, bad_std), DISTILL_EINVAL);
    assert_int_equal(distill_model_set_normalization(m, 3, inf, os), DISTILL_EINVAL);
    assert_int_equal(distill_model_set_normalization(m, 2, om, os), DISTILL_EINVAL);
    assert_int_equal(distill_model_set_normalization(m, 1, NULL, os), DISTILL_EINVAL);
    OK(distill_model_get_normalization(m, &n, mean, std, 4)); /* unchanged */
    assert_int_equal(n, loc ? 1 : 3);
    assert_int_equal(distill_model_get_normalization(m, NULL, mean, std, 4), DISTILL_EINVAL);
    assert_int_equal(distill_model_get_normalization(m, &n, NULL, std, 4), DISTILL_EINVAL);
    OK(distill_model_set_normalization(m, 0, NULL, NULL));
    OK(distill_model_get_normalization(m, &n, mean, std, 4));
    assert_int_equal(n, 0);
    assert_int_equal(distill_model_metadata_count(m), 0);

    /* mean and std come in pairs of one length (checked when saved) */
    OK(distill_model_set_metadata(m, DISTILL_META_MEAN, "0.5"));
    void *buf;
    size_t size;
    assert_int_equal(model_serialize(m, &buf, &size), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "normalize.mean without normalize.std"));
    OK(distill_model_set_metadata(m, DISTILL_META_STD, "1,2,3"));
    assert_int_equal(model_serialize(m, &buf, &size), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "normalize.mean has 1 values, normalize.std 3"));
    distill_model_free(m);
}

static void test_class_names(void **state)
{
    (void)state;
    distill_model *m = small_model(1, 3);
    assert_int_equal(distill_model_class_count(m), 0);
    assert_null(distill_model_class_name(m, 0));
    OK(distill_model_set_class_names(m, 3, NAMES3));
    assert_string_equal(distill_model_get_metadata(m, DISTILL_META_CLASSES), "cat\ndog\nT-shirt/top");
    for (int k = 0; k < 3; k++)
        assert_string_equal(distill_model_class_name(m, k), NAMES3[k]);
    assert_null(distill_model_class_name(m, 3));
    assert_null(distill_model_class_name(m, -1));
    const char *two[2] = {"a", "b"}, *nl[3] = {"a", "b\nc", "d"}, *empty[3] = {"a", "", "c"};
    const char *null_name[3] = {"a", NULL, "c"};
    assert_int_equal(distill_model_set_class_names(m, 2, two), DISTILL_EINVAL);
    assert_int_equal(distill_model_set_class_names(m, 3, nl), DISTILL_EINVAL);
    assert_int_equal(distill_model_set_class_names(m, 3, empty), DISTILL_EINVAL);
    assert_int_equal(distill_model_set_class_names(m, 3, null_name), DISTILL_EINVAL);
    assert_int_equal(distill_model_set_class_names(m, 3, NULL), DISTILL_EINVAL);
    assert_string_equal(distill_model_class_name(m, 2), "T-shirt/top"); /* unchanged */
    /* the generic setter keeps the split names in step */
    OK(distill_model_set_metadata(m, DISTILL_META_CLASSES, "x\ny\nz"));
    assert_string_equal(distill_model_class_name(m, 1), "y");
    OK(distill_model_set_class_names(m, 0, NULL));
    assert_int_equal(distill_model_class_count(m), 0);
    assert_null(distill_model_get_metadata(m, DISTILL_META_CLASSES));
    assert_int_equal(distill_model_class_count(NULL), 0);
    distill_model_free(m);
}

/* ------------------------------------------------------------- files */

static void test_file_round_trip(void **state)
{
    (void)state;
    distill_model *m = described_model();
    char path[64];
    snprintf(path, sizeof path, "meta-%d.dstl", (int)getpid());
    OK(distill_model_save(m, path));
    distill_model *b;
    OK(distill_model_load(&b, path));
    assert_same_metadata(m, b);
    int n;
    float mean[3], std[3];
    OK(distill_model_get_normalization(b, &n, mean, std, 3));
    assert_int_equal(n, 3);
    assert_true(mean[1] == 0.456f && std[2] == 0.225f);

    /* version 2, and a save of the loaded model gives the same bytes */
    void *x, *y;
    size_t nx, ny;
    OK(model_serialize(m, &x, &nx));
    OK(model_serialize(b, &y, &ny));
    assert_int_equal(nx, ny);
    assert_memory_equal(x, y, nx);
    assert_int_equal(rd32((unsigned char *)x + 8), 2);
    assert_non_null(memmem(x, nx, "META", 4));
    xfree(y);

    /* the clone carries the metadata; the weights are the same */
    distill_model *c;
    OK(distill_model_clone(&c, b));
    assert_same_metadata(m, c);
    distill_model_free(c);

    /* a model without metadata is written as before: version 1, no META */
    OK(distill_model_set_class_names(b, 0, NULL));
    while (distill_model_metadata_count(b))
        OK(distill_model_set_metadata(b, distill_model_metadata_key(b, 0), NULL));
    OK(model_serialize(b, &y, &ny));
    assert_int_equal(rd32((unsigned char *)y + 8), 1);
    assert_int_equal(rd32((unsigned char *)y + 12), 4);
    assert_null(memmem(y, ny, "META", 4));
    assert_true(ny < nx);
    xfree(x);
    xfree(y);
    distill_model_free(b);
    distill_model_free(m);
    unlink(path);
}

/* tests/fuzz/corpus/fuzz_model/every_op.dstl was saved by a library that
 * did not know metadata: it loads with none, and saves to the same bytes. */
static void test_old_file(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *slash = strrchr(path, '/');
    assert_non_null(slash);
    *slash = '\0';
    slash = strrchr(path, '/');
    assert_non_null(slash);
    snprintf(slash, sizeof path - (size_t)(slash - path), "/fuzz/corpus/fuzz_model/every_op.dstl");
    void *old;
    size_t n;
    OK(read_file(path, 1 << 20, &old, &n));
    assert_int_equal(rd32((unsigned char *)old + 8), 1);
    distill_model *m;
    OK(distill_model_load_buffer(&m, old, n));
    assert_int_equal(distill_model_metadata_count(m), 0);
    assert_int_equal(distill_model_class_count(m), 0);
    void *again;
    size_t na;
    OK(model_serialize(m, &again, &na));
    assert_int_equal(na, n);
    assert_memory_equal(again, old, n);
    xfree(again);
    /* and takes metadata like any model */
    OK(distill_model_set_metadata(m, DISTILL_META_COMMAND, "distill train"));
    OK(model_serialize(m, &again, &na));
    distill_model *b;
    OK(distill_model_load_buffer(&b, again, na));
    assert_string_equal(distill_model_get_metadata(b, DISTILL_META_COMMAND), "distill train");
    distill_model_free(b);
    xfree(again);
    distill_model_free(m);
    xfree(old);
}

static void test_corrupt_section(void **state)
{
    (void)state;
    distill_model *m = described_model();
    void *buf;
    size_t size;
    OK(model_serialize(m, &buf, &size));
    distill_model_free(m);
    unsigned char *b = buf;
    unsigned char *meta = memmem(b, size, "META", 4);
    assert_non_null(meta);
    size_t at = (size_t)(meta - b), len = rd32(meta + 8);
    unsigned char *copy = malloc(size);

    /* every byte of the section changed, CRC left alone or made valid:
     * refused or loaded, never a crash (a changed value may still be valid) */
    int refused = 0, total = 0;
    for (size_t i = at + 16; i < at + 16 + len; i++) {
        memcpy(copy, b, size);
        copy[i] ^= 0x5a;
        assert_int_equal(load_copy(copy, size), DISTILL_EFORMAT);
        fix_crcs(copy, size);
        int rc = load_copy(copy, size);
        assert_true(rc == DISTILL_OK || rc == DISTILL_EFORMAT);
        refused += rc == DISTILL_EFORMAT;
        total++;
    }
    assert_true(refused > total / 4);

    /* every truncation */
    for (size_t cut = at; cut < size; cut++)
        assert_int_equal(load_copy(b, cut), DISTILL_EFORMAT);

    /* a count of 0, and a count larger than the entries */
    memcpy(copy, b, size);
    wr32(copy + at + 16, 0);
    fix_crcs(copy, size);
    assert_int_equal(load_copy(copy, size), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "0 entries"));
    wr32(copy + at + 16, rd32(b + at + 16) + 1);
    fix_crcs(copy, size);
    assert_int_equal(load_copy(copy, size), DISTILL_EFORMAT);

    /* a version 1 file may not hold the section */
    memcpy(copy, b, size);
    wr32(copy + 8, 1);
    assert_int_equal(load_copy(copy, size), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "version 1"));
    /* and version 3 is a newer format */
    wr32(copy + 8, 3);
    assert_int_equal(load_copy(copy, size), DISTILL_EVERSION);
    free(copy);
    xfree(buf);
}

static void test_lying_section(void **state)
{
    (void)state;
    /* each replacement keeps the lengths, so only the meaning changes */
    expect_lie("cat\ndog", "cat dog", "2 names, and the output 'fc' has 3 logits");
    expect_lie("dog\nT-shirt", "dog\n\x01-shirt", "control character");
    expect_lie("3,32,32", "1,32,32", "data.shape: 1 channel, and the input 'input' has 3");
    expect_lie("0.229", "0.2,9", "normalize.std: 4 values");
    expect_lie("0.229", "-0.29", "a std must be positive");
    expect_lie("0.485", "0.4x5", "not a list of finite numbers");
    expect_lie("host.nuta", "host.note", "key host.note appears twice");
    expect_lie("host.nuta", "host nuta", "key is not [A-Za-z0-9._-]");
    expect_lie("bbbb", "b\xff\xff" "b", "not UTF-8");
    expect_lie("bbbb", "b\0bb", "NUL byte");
    expect_lie("18446744073709551615", "18446744073709551616", "not a decimal integer");
    expect_lie("normalize.mean", "normalize.meax", "normalize.std without normalize.mean");
}

/* ------------------------------------------------------------- ONNX */

static void test_onnx_round_trip(void **state)
{
    (void)state;
    if (!distill_onnx_available()) {
        skip();
        return;
    }
    distill_model *m = described_model();
    OK(distill_model_set_metadata(m, "distill.x", "reserved keys travel too"));
    char path[64];
    snprintf(path, sizeof path, "meta-%d.onnx", (int)getpid());
    OK(distill_model_export_onnx(m, path));
    distill_model *b;
    OK(distill_model_import_onnx(&b, path));
    assert_same_metadata(m, b);
    distill_model_free(b);
    unlink(path);

    /* the file holds them as metadata_props: key and value strings */
    void *buf;
    size_t size;
    OK(onnx_export_buffer(m, &buf, &size));
    assert_non_null(memmem(buf, size, "provenance.command", 18));
    assert_non_null(memmem(buf, size, "cat\ndog\nT-shirt/top", 19));

    /* other tools' keys are skipped; known keys that lie are refused */
    unsigned char *copy = malloc(size);
    memcpy(copy, buf, size);
    replace(copy, size, "host.nuta", "host nuta");
    OK(distill_model_import_onnx_buffer(&b, copy, size));
    assert_null(distill_model_get_metadata(b, "host nuta"));
    assert_null(distill_model_get_metadata(b, "host.nuta"));
    assert_string_equal(distill_model_get_metadata(b, "host.note"), "aaaa");
    distill_model_free(b);
    static const char *const lies[][3] = {
        {"cat\ndog", "cat dog", "2 names, and the output"},
        {"3,32,32", "1,32,32", "data.shape: 1 channel,"},
        {"host.nuta", "host.note", "host.note appears twice"},
        {"normalize.mean", "normalize.meax", "normalize.std without normalize.mean"},
    };
    for (size_t i = 0; i < sizeof lies / sizeof *lies; i++) {
        memcpy(copy, buf, size);
        replace(copy, size, lies[i][0], lies[i][1]);
        b = (distill_model *)(uintptr_t)1;
        assert_int_equal(distill_model_import_onnx_buffer(&b, copy, size), DISTILL_EFORMAT);
        assert_null(b);
        if (!strstr(distill_last_error(), lies[i][2]))
            fail_msg("'%s': message '%s' lacks '%s'", lies[i][1], distill_last_error(), lies[i][2]);
        assert_non_null(strstr(distill_last_error(), "metadata_props"));
    }
    free(copy);
    xfree(buf);

    /* an export without metadata has no metadata_props */
    distill_model *bare = small_model(3, 3);
    OK(onnx_export_buffer(bare, &buf, &size));
    OK(distill_model_import_onnx_buffer(&b, buf, size));
    assert_int_equal(distill_model_metadata_count(b), 0);
    distill_model_free(b);
    xfree(buf);
    distill_model_free(bare);
    distill_model_free(m);
}

/* ------------------------------------------------------- fingerprint */

/* FNV-1a 64 of the fields the header lists, written out here again. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t fnv64(uint64_t h, int64_t v)
{
    unsigned char b[8];
    for (int k = 0; k < 8; k++)
        b[k] = (unsigned char)((uint64_t)v >> (8 * k));
    return fnv(h, b, 8);
}

static void test_fingerprint(void **state)
{
    (void)state;
    enum { N = 40, C = 1, H = 2, W = 3 };
    uint8_t px[N * C * H * W];
    int32_t labels[N];
    for (int i = 0; i < N * C * H * W; i++)
        px[i] = (uint8_t)(i * 7);
    for (int i = 0; i < N; i++)
        labels[i] = i % 3;
    const int64_t dims[3] = {C, H, W};
    distill_dataset *ds;
    OK(distill_dataset_from_memory_u8(&ds, N, dims, px, labels, 3, DISTILL_MEMORY_COPY));
    char fp[DISTILL_FINGERPRINT_SIZE];
    OK(distill_dataset_fingerprint(ds, fp, sizeof fp));
    assert_int_equal(strlen(fp), DISTILL_FINGERPRINT_SIZE - 1);
    assert_memory_equal(fp, "fnv1a64:", 8);

    /* the reference: the documented fields in the documented order */
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv64(h, N), h = fnv64(h, C), h = fnv64(h, H), h = fnv64(h, W);
    h = fnv64(h, 3), h = fnv64(h, 1);
    for (int k = 0; k < 3; k++)
        h = fnv64(h, -1); /* no names */
    for (int i = 0; i < N; i++) {
        unsigned char b[4] = {(unsigned char)labels[i], 0, 0, 0};
        h = fnv(h, b, 4);
    }
    for (int k = 0; k < 16; k++) {
        int i = k * N / 16;
        h = fnv64(h, i);
        for (int e = 0; e < C * H * W; e++) {
            float v = (float)px[i * C * H * W + e] / 255.0f;
            unsigned char b[4];
            uint32_t bits;
            memcpy(&bits, &v, 4);
            for (int q = 0; q < 4; q++)
                b[q] = (unsigned char)(bits >> (8 * q));
            h = fnv(h, b, 4);
        }
    }
    char want[32];
    snprintf(want, sizeof want, "fnv1a64:%016llx", (unsigned long long)h);
    assert_string_equal(fp, want);

    /* a view of other samples, a relabelled set, a changed sampled pixel:
     * other fingerprints; an identical copy: the same */
    char other[DISTILL_FINGERPRINT_SIZE];
    distill_dataset *v;
    OK(distill_dataset_subset(&v, ds, 0, N - 1));
    OK(distill_dataset_fingerprint(v, other, sizeof other));
    assert_string_not_equal(fp, other);
    distill_dataset_free(v);
    OK(distill_dataset_subset(&v, ds, 0, N));
    OK(distill_dataset_fingerprint(v, other, sizeof other));
    assert_string_equal(fp, other);
    OK(distill_dataset_drop_labels(v));
    OK(distill_dataset_fingerprint(v, other, sizeof other));
    assert_string_not_equal(fp, other);
    distill_dataset_free(v);
    px[(N / 16) * C * H * W + 1] ^= 1; /* sample 2 = 1 * 40 / 16 is hashed */
    OK(distill_dataset_from_memory_u8(&v, N, dims, px, labels, 3, DISTILL_MEMORY_COPY));
    OK(distill_dataset_fingerprint(v, other, sizeof other));
    assert_string_not_equal(fp, other);
    distill_dataset_free(v);

    assert_int_equal(distill_dataset_fingerprint(ds, other, DISTILL_FINGERPRINT_SIZE - 1),
                     DISTILL_EINVAL);
    assert_int_equal(distill_dataset_fingerprint(NULL, other, sizeof other), DISTILL_EINVAL);
    distill_dataset_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_known_keys),
        cmocka_unit_test(test_normalization),
        cmocka_unit_test(test_class_names),
        cmocka_unit_test(test_file_round_trip),
        cmocka_unit_test(test_old_file),
        cmocka_unit_test(test_corrupt_section),
        cmocka_unit_test(test_lying_section),
        cmocka_unit_test(test_onnx_round_trip),
        cmocka_unit_test(test_fingerprint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

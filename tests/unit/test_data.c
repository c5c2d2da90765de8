/*
 * test_data.c - datasets from IDX files and host memory, views, and the
 * batch loader (include/distill/data.h).  PNG folders are in
 * test_data_png.c.
 */
#define _XOPEN_SOURCE 700

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "distill.h"
#include "data/data_internal.h"

/* ------------------------------------------------------------- helpers */

static char tmpdir[256];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup_tmp(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/distill_data_XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    (void)state;
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static const char *tpath(const char *name)
{
    static char p[2][PATH_MAX];
    static int k;
    k ^= 1;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static void write_bytes(const char *path, const void *data, size_t len, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        if (len)
            assert_int_equal(gzwrite(f, data, (unsigned)len), (int)len);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
    }
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* An IDX buffer: magic 0x0000 08 ndim, dims, then `data` (may be shorter
 * than the dims claim, for the error cases).  malloc'd, length in *len. */
static unsigned char *idx_buf(int ndim, const uint32_t *dims, const void *data, size_t data_len,
                              size_t *len)
{
    *len = 4 + 4 * (size_t)ndim + data_len;
    unsigned char *b = malloc(*len);
    assert_non_null(b);
    put_be32(b, 0x00000800u | (uint32_t)ndim);
    for (int d = 0; d < ndim; d++)
        put_be32(b + 4 + 4 * d, dims[d]);
    if (data_len)
        memcpy(b + 4 + 4 * ndim, data, data_len);
    return b;
}

static void write_idx(const char *path, int ndim, const uint32_t *dims, const void *data,
                      size_t data_len, int gz)
{
    size_t len;
    unsigned char *b = idx_buf(ndim, dims, data, data_len, &len);
    write_bytes(path, b, len, gz);
    free(b);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------- Fashion-MNIST */

static const char *fm_dir(void)
{
    const char *d = getenv("FASHION_MNIST_DIR");
    return d && *d ? d : "/usr/share/datasets/fashion-mnist";
}

/* Read `n` bytes at `offset` of the decompressed gzip file `path`. */
static int gz_peek(const char *path, long offset, unsigned char *out, unsigned n)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return -1;
    int ok = gzseek(f, offset, SEEK_SET) == offset && gzread(f, out, n) == (int)n;
    gzclose(f);
    return ok ? 0 : -1;
}

static void test_fashion_mnist(void **state)
{
    (void)state;
    char labels_path[PATH_MAX], images_path[PATH_MAX];
    snprintf(labels_path, sizeof labels_path, "%s/train-labels-idx1-ubyte.gz", fm_dir());
    snprintf(images_path, sizeof images_path, "%s/train-images-idx3-ubyte.gz", fm_dir());
    if (access(labels_path, R_OK) != 0 || access(images_path, R_OK) != 0) {
        skip();
        return;
    }
    /* What the files say, read here with zlib alone. */
    unsigned char head[8], first[5], pixels[28 * 28];
    assert_int_equal(gz_peek(labels_path, 0, head, 8), 0);
    assert_int_equal(head[2], 0x08);
    assert_int_equal(head[3], 1);
    assert_int_equal(((uint32_t)head[4] << 24 | head[5] << 16 | head[6] << 8 | head[7]), 60000);
    assert_int_equal(gz_peek(labels_path, 8, first, 5), 0);
    const unsigned char known[5] = {9, 0, 0, 3, 0};
    assert_memory_equal(first, known, 5);
    assert_int_equal(gz_peek(images_path, 16 + 784, pixels, 784), 0); /* image 1 */

    distill_dataset *tr = NULL, *te = NULL;
    assert_int_equal(distill_dataset_fashion_mnist(&tr, NULL, 1), DISTILL_OK);
    assert_int_equal(distill_dataset_size(tr), 60000);
    int64_t dims[3];
    assert_int_equal(distill_dataset_sample_dims(tr, dims), DISTILL_OK);
    assert_int_equal(dims[0], 1);
    assert_int_equal(dims[1], 28);
    assert_int_equal(dims[2], 28);
    assert_true(distill_dataset_has_labels(tr));
    assert_int_equal(distill_dataset_num_classes(tr), 10);
    assert_string_equal(distill_dataset_class_name(tr, 0), "T-shirt/top");
    assert_string_equal(distill_dataset_class_name(tr, 9), "Ankle boot");
    assert_null(distill_dataset_class_name(tr, 10));
    float img[784];
    int32_t label;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(distill_dataset_get(tr, i, img, 784, &label), DISTILL_OK);
        assert_int_equal(label, first[i]);
    }
    assert_int_equal(distill_dataset_get(tr, 1, img, 784, NULL), DISTILL_OK);
    for (int k = 0; k < 784; k++)
        assert_true(img[k] == (float)pixels[k] / 255.0f);
    int64_t total = 0;
    for (int k = 0; k < 10; k++) {
        assert_int_equal(distill_dataset_class_size(tr, k), 6000);
        total += distill_dataset_class_size(tr, k);
    }
    assert_int_equal(total, 60000);

    assert_int_equal(distill_dataset_fashion_mnist(&te, fm_dir(), 0), DISTILL_OK);
    assert_int_equal(distill_dataset_size(te), 10000);
    distill_dataset_free(tr);
    distill_dataset_free(te);
}

static void test_fashion_mnist_missing(void **state)
{
    (void)state;
    distill_dataset *ds = (distill_dataset *)1;
    assert_int_equal(distill_dataset_fashion_mnist(&ds, tmpdir, 1), DISTILL_ENOTFOUND);
    assert_null(ds);
    assert_non_null(strstr(distill_last_error(), "train-labels-idx1-ubyte"));
}

/* ------------------------------------------------------------------ IDX */

/* 3 images of 2 x 4 with distinct bytes, labels 2, 0, 1. */
static const uint32_t small_dims[3] = {3, 2, 4};
static const uint8_t small_pix[24] = {0,   1,   2,   3,   10,  20,  30,  40,  255, 254, 128, 127,
                                      100, 101, 102, 103, 7,   77,  177, 250, 5,   6,   8,   9};
static const uint8_t small_lab[3] = {2, 0, 1};

static void check_small(distill_dataset *ds, int labelled)
{
    assert_int_equal(distill_dataset_size(ds), 3);
    int64_t dims[3];
    distill_dataset_sample_dims(ds, dims);
    assert_int_equal(dims[0], 1);
    assert_int_equal(dims[1], 2);
    assert_int_equal(dims[2], 4);
    assert_int_equal(distill_dataset_has_labels(ds), labelled);
    for (int i = 0; i < 3; i++) {
        float img[8];
        int32_t label;
        assert_int_equal(distill_dataset_get(ds, i, img, 8, &label), DISTILL_OK);
        assert_int_equal(label, labelled ? small_lab[i] : -1);
        for (int k = 0; k < 8; k++)
            assert_true(img[k] == (float)small_pix[i * 8 + k] / 255.0f);
    }
}

static void test_idx_raw_and_gz(void **state)
{
    (void)state;
    uint32_t ldims[1] = {3};
    write_idx(tpath("img.idx"), 3, small_dims, small_pix, 24, 0);
    write_idx(tpath("img.idx.gz"), 3, small_dims, small_pix, 24, 1);
    write_idx(tpath("lab.idx"), 1, ldims, small_lab, 3, 0);
    write_idx(tpath("lab.idx.gz"), 1, ldims, small_lab, 3, 1);
    const char *imgs[2] = {"img.idx", "img.idx.gz"}, *labs[2] = {"lab.idx", "lab.idx.gz"};
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            char ip[PATH_MAX];
            snprintf(ip, sizeof ip, "%s", tpath(imgs[a]));
            distill_dataset *ds = NULL;
            assert_int_equal(distill_dataset_from_idx(&ds, ip, tpath(labs[b]), 0), DISTILL_OK);
            assert_int_equal(distill_dataset_num_classes(ds), 3); /* max label + 1 */
            assert_null(distill_dataset_class_name(ds, 0));
            check_small(ds, 1);
            distill_dataset_free(ds);
        }
    distill_dataset *ds = NULL;
    assert_int_equal(distill_dataset_from_idx(&ds, tpath("img.idx.gz"), NULL, 7), DISTILL_OK);
    check_small(ds, 0);
    assert_int_equal(distill_dataset_num_classes(ds), 7);
    distill_dataset_free(ds);

    /* An explicit class count is enforced. */
    char ip[PATH_MAX];
    snprintf(ip, sizeof ip, "%s", tpath("img.idx"));
    assert_int_equal(distill_dataset_from_idx(&ds, ip, tpath("lab.idx"), 2), DISTILL_EFORMAT);
    assert_null(ds);
    assert_non_null(strstr(distill_last_error(), "outside [0, 2)"));
    assert_int_equal(distill_dataset_from_idx(&ds, ip, tpath("lab.idx"), -1), DISTILL_EINVAL);
}

static void expect_idx_error(const char *images, const char *labels, int status, const char *msg)
{
    distill_dataset *ds = (distill_dataset *)1;
    char ip[PATH_MAX], lp[PATH_MAX];
    snprintf(ip, sizeof ip, "%s", tpath(images));
    if (labels)
        snprintf(lp, sizeof lp, "%s", tpath(labels));
    double t0 = now();
    int rc = distill_dataset_from_idx(&ds, ip, labels ? lp : NULL, 0);
    double dt = now() - t0;
    if (rc != status)
        fail_msg("%s/%s: status %d (%s), expected %d", images, labels ? labels : "-", rc,
                 distill_last_error(), status);
    assert_null(ds);
    if (msg && !strstr(distill_last_error(), msg))
        fail_msg("%s: message '%s' does not say '%s'", images, distill_last_error(), msg);
    assert_true(dt < 1.0);
}

static void test_idx_errors(void **state)
{
    (void)state;
    uint32_t ldims[1] = {3};
    write_idx(tpath("img.idx"), 3, small_dims, small_pix, 24, 0);
    write_idx(tpath("lab.idx"), 1, ldims, small_lab, 3, 0);

    /* Missing file, wrong magic, labels given as images and back. */
    expect_idx_error("nope.idx", NULL, DISTILL_ENOTFOUND, "no such file");
    expect_idx_error("img.idx", "nope.idx", DISTILL_ENOTFOUND, "nope.idx");
    unsigned char bad[40] = {0x00, 0x00, 0x09, 0x03};
    write_bytes(tpath("magic.idx"), bad, sizeof bad, 0);
    expect_idx_error("magic.idx", NULL, DISTILL_EFORMAT, "magic 0x00000903");
    write_bytes(tpath("magic.idx.gz"), bad, sizeof bad, 1);
    expect_idx_error("magic.idx.gz", NULL, DISTILL_EFORMAT, "magic");
    expect_idx_error("lab.idx", NULL, DISTILL_EFORMAT, "magic 0x00000801");
    expect_idx_error("img.idx", "img.idx", DISTILL_EFORMAT, "magic 0x00000803");
    write_bytes(tpath("empty.idx"), "", 0, 0);
    expect_idx_error("empty.idx", NULL, DISTILL_EFORMAT, "too short");
    expect_idx_error(".", NULL, DISTILL_EIO, NULL); /* the folder itself */

    /* Zero images. */
    uint32_t zero[3] = {0, 28, 28};
    write_idx(tpath("zero.idx"), 3, zero, NULL, 0, 0);
    expect_idx_error("zero.idx", NULL, DISTILL_EFORMAT, "no data");

    /* Label count differs from the image count. */
    uint32_t l4[1] = {4};
    uint8_t four[4] = {0, 1, 2, 3};
    write_idx(tpath("lab4.idx.gz"), 1, l4, four, 4, 1);
    expect_idx_error("img.idx", "lab4.idx.gz", DISTILL_EFORMAT, "3 images, the labels file has 4");

    /* Raw file shorter or longer than its header claims. */
    write_idx(tpath("short.idx"), 3, small_dims, small_pix, 23, 0);
    expect_idx_error("short.idx", NULL, DISTILL_EFORMAT, "holds 23");
    uint8_t more[25];
    memcpy(more, small_pix, 24);
    more[24] = 1;
    write_idx(tpath("long.idx"), 3, small_dims, more, 25, 0);
    expect_idx_error("long.idx", NULL, DISTILL_EFORMAT, "holds 25");
    write_idx(tpath("long.idx.gz"), 3, small_dims, more, 25, 1);
    expect_idx_error("long.idx.gz", NULL, DISTILL_EFORMAT, "past the 24 bytes");

    /* Headers claiming far more than the file: 10^9 images (over the 8 GiB
     * bound), 10^6 images (784 MB) in a ~100-byte raw file and in a gzip
     * file too small to inflate to that; all refused at once. */
    uint8_t some[84] = {0};
    uint32_t giga[3] = {1000000000u, 28, 28}, mega[3] = {1000000u, 28, 28};
    write_idx(tpath("giga.idx"), 3, giga, some, sizeof some, 0);
    expect_idx_error("giga.idx", NULL, DISTILL_EFORMAT, "over 8 GiB");
    write_idx(tpath("mega.idx"), 3, mega, some, sizeof some, 0);
    assert_int_equal(file_size(tpath("mega.idx")), 100);
    expect_idx_error("mega.idx", NULL, DISTILL_EFORMAT, "the file holds 84");
    write_idx(tpath("mega.idx.gz"), 3, mega, some, sizeof some, 1);
    expect_idx_error("mega.idx.gz", NULL, DISTILL_EFORMAT, "more than a gzip file");
}

/* A gzip file whose header passes the size bound but whose data ends early,
 * truncated gzip streams, and corrupt compressed data. */
static void test_idx_truncated_gz(void **state)
{
    (void)state;
    /* 200 KB of incompressible bytes under a header claiming 10000 images
     * of 28 x 28 (7.8 MB): read in pieces, fails when the data ends. */
    size_t n = 200000;
    uint8_t *noise = malloc(n);
    assert_non_null(noise);
    uint64_t s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        noise[i] = (uint8_t)(s >> 56);
    }
    uint32_t claim[3] = {10000, 28, 28};
    write_idx(tpath("early.idx.gz"), 3, claim, noise, n, 1);
    expect_idx_error("early.idx.gz", NULL, DISTILL_EFORMAT, "truncated");

    /* A valid gzip file (250 images) cut in half, and cut just before its
     * trailer (the data is all there, the CRC and size are not). */
    uint32_t dims[3] = {250, 28, 28};
    write_idx(tpath("full.idx.gz"), 3, dims, noise, 250 * 784, 1);
    distill_dataset *ds = NULL;
    assert_int_equal(distill_dataset_from_idx(&ds, tpath("full.idx.gz"), NULL, 0), DISTILL_OK);
    assert_int_equal(distill_dataset_size(ds), 250);
    distill_dataset_free(ds);
    long len = file_size(tpath("full.idx.gz"));
    unsigned char *gz = malloc((size_t)len);
    assert_non_null(gz);
    FILE *f = fopen(tpath("full.idx.gz"), "rb");
    assert_int_equal(fread(gz, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    write_bytes(tpath("half.idx.gz"), gz, (size_t)len / 2, 0);
    expect_idx_error("half.idx.gz", NULL, DISTILL_EFORMAT, NULL);
    write_bytes(tpath("notrailer.idx.gz"), gz, (size_t)len - 8, 0);
    expect_idx_error("notrailer.idx.gz", NULL, DISTILL_EFORMAT, NULL);
    /* Flip bytes in the middle of the compressed stream. */
    for (long i = len / 2; i < len / 2 + 16; i++)
        gz[i] ^= 0x5A;
    write_bytes(tpath("corrupt.idx.gz"), gz, (size_t)len, 0);
    expect_idx_error("corrupt.idx.gz", NULL, DISTILL_EFORMAT, NULL);
    free(gz);
    free(noise);
}

/* --------------------------------------------------------------- memory */

static void test_memory(void **state)
{
    (void)state;
    float img[2 * 3 * 2] = {0.f, .1f, .2f, .3f, .4f, .5f, .6f, .7f, .8f, .9f, 1.f, .25f};
    int32_t lab[2] = {1, 4};
    int64_t dims[3] = {3, 1, 2};
    distill_dataset *cp = NULL, *br = NULL;
    assert_int_equal(distill_dataset_from_memory(&cp, 2, dims, img, lab, 5, DISTILL_MEMORY_COPY),
                     DISTILL_OK);
    assert_int_equal(distill_dataset_from_memory(&br, 2, dims, img, lab, 0, DISTILL_MEMORY_BORROW),
                     DISTILL_OK);
    assert_int_equal(distill_dataset_num_classes(cp), 5);
    assert_int_equal(distill_dataset_num_classes(br), 5);
    /* Borrowed: the very same buffers; copied: not. */
    assert_ptr_equal(br->st->pixels, img);
    assert_ptr_equal(br->st->labels, lab);
    assert_ptr_not_equal(cp->st->pixels, img);
    img[0] = 0.5f;
    float out[6];
    int32_t l;
    assert_int_equal(distill_dataset_get(cp, 0, out, 6, &l), DISTILL_OK);
    assert_true(out[0] == 0.f && out[5] == .5f && l == 1);
    assert_int_equal(distill_dataset_get(br, 0, out, 6, &l), DISTILL_OK);
    assert_true(out[0] == 0.5f);
    assert_int_equal(distill_dataset_get(cp, 1, out, 6, &l), DISTILL_OK);
    assert_true(out[0] == .6f && out[5] == .25f && l == 4);
    assert_int_equal(distill_dataset_get(cp, 2, out, 6, &l), DISTILL_EINVAL);
    assert_int_equal(distill_dataset_get(cp, 0, out, 5, &l), DISTILL_ESHAPE);
    distill_dataset_free(cp);
    distill_dataset_free(br);

    /* Bytes, unlabelled. */
    uint8_t bytes[4] = {0, 51, 255, 128};
    int64_t d2[3] = {1, 2, 2};
    distill_dataset *u8 = NULL;
    assert_int_equal(distill_dataset_from_memory_u8(&u8, 1, d2, bytes, NULL, 0,
                                                    DISTILL_MEMORY_COPY), DISTILL_OK);
    assert_false(distill_dataset_has_labels(u8));
    assert_int_equal(distill_dataset_num_classes(u8), 0);
    assert_int_equal(distill_dataset_get(u8, 0, out, 4, &l), DISTILL_OK);
    assert_int_equal(l, -1);
    assert_true(out[1] == 51.0f / 255.0f && out[2] == 1.0f);
    distill_dataset_free(u8);

    /* Bad arguments. */
    distill_dataset *ds = (distill_dataset *)1;
    int32_t badlab[2] = {0, 5};
    assert_int_equal(distill_dataset_from_memory(&ds, 2, dims, img, badlab, 5, 0), DISTILL_EINVAL);
    assert_null(ds);
    int32_t neglab[2] = {0, -1};
    assert_int_equal(distill_dataset_from_memory(&ds, 2, dims, img, neglab, 0, 0), DISTILL_EINVAL);
    assert_int_equal(distill_dataset_from_memory(&ds, 0, dims, img, NULL, 0, 0), DISTILL_EINVAL);
    int64_t zd[3] = {1, 0, 2};
    assert_int_equal(distill_dataset_from_memory(&ds, 1, zd, img, NULL, 0, 0), DISTILL_EINVAL);
    assert_int_equal(distill_dataset_from_memory(&ds, 1, dims, NULL, NULL, 0, 0), DISTILL_EINVAL);
    assert_int_equal(distill_dataset_from_memory(&ds, 1, dims, img, NULL, 0, 7), DISTILL_EINVAL);
    distill_dataset_free(NULL);
}

/* ---------------------------------------------------------------- views */

/* n samples of shape (1, 1, 2): sample i holds (i, -i); label i % classes. */
static distill_dataset *numbered(int64_t n, int classes, float **keep)
{
    float *px = malloc((size_t)n * 2 * sizeof *px);
    int32_t *lab = malloc((size_t)n * sizeof *lab);
    assert_true(px && lab);
    for (int64_t i = 0; i < n; i++) {
        px[2 * i] = (float)i;
        px[2 * i + 1] = -(float)i;
        lab[i] = (int32_t)(i % classes);
    }
    int64_t dims[3] = {1, 1, 2};
    distill_dataset *ds = NULL;
    assert_int_equal(distill_dataset_from_memory(&ds, n, dims, px, lab, classes,
                                                 DISTILL_MEMORY_COPY), DISTILL_OK);
    free(lab);
    if (keep)
        *keep = px;
    else
        free(px);
    return ds;
}

static int64_t id_of(const distill_dataset *ds, int64_t i)
{
    float v[2];
    assert_int_equal(distill_dataset_get(ds, i, v, 2, NULL), DISTILL_OK);
    return (int64_t)v[0];
}

static void test_views(void **state)
{
    (void)state;
    distill_dataset *all = numbered(100, 3, NULL);
    distill_dataset *sub = NULL, *sub2 = NULL, *sel = NULL, *tr = NULL, *va = NULL;
    assert_int_equal(distill_dataset_subset(&sub, all, 10, 50), DISTILL_OK);
    assert_int_equal(distill_dataset_size(sub), 50);
    assert_int_equal(id_of(sub, 0), 10);
    assert_int_equal(id_of(sub, 49), 59);
    assert_int_equal(distill_dataset_subset(&sub2, all, 0, 101), DISTILL_EINVAL);
    assert_null(sub2);
    assert_int_equal(distill_dataset_subset(&sub2, all, 5, 0), DISTILL_EINVAL);
    assert_int_equal(distill_dataset_subset(&sub2, all, -1, 5), DISTILL_EINVAL);

    int64_t picks[4] = {49, 0, 7, 7};
    assert_int_equal(distill_dataset_select(&sel, sub, picks, 4), DISTILL_OK);
    assert_int_equal(id_of(sel, 0), 59);
    assert_int_equal(id_of(sel, 1), 10);
    assert_int_equal(id_of(sel, 3), 17);
    int64_t badpick[1] = {50};
    assert_int_equal(distill_dataset_select(&sub2, sub, badpick, 1), DISTILL_EINVAL);
    /* A subset of an index view. */
    assert_int_equal(distill_dataset_subset(&sub2, sel, 1, 2), DISTILL_OK);
    assert_int_equal(id_of(sub2, 0), 10);
    assert_int_equal(id_of(sub2, 1), 17);
    distill_dataset_free(sub2);

    /* Split: sizes, a partition in order, deterministic, seed-dependent. */
    assert_int_equal(distill_dataset_split(&tr, &va, all, 20, 42), DISTILL_OK);
    assert_int_equal(distill_dataset_size(tr), 80);
    assert_int_equal(distill_dataset_size(va), 20);
    int seen[100] = {0};
    for (int64_t i = 0; i < 80; i++) {
        seen[id_of(tr, i)]++;
        if (i)
            assert_true(id_of(tr, i) > id_of(tr, i - 1));
    }
    for (int64_t i = 0; i < 20; i++) {
        seen[id_of(va, i)]++;
        if (i)
            assert_true(id_of(va, i) > id_of(va, i - 1));
    }
    for (int i = 0; i < 100; i++)
        assert_int_equal(seen[i], 1);
    distill_dataset *tr2, *va2, *tr3, *va3;
    assert_int_equal(distill_dataset_split(&tr2, &va2, all, 20, 42), DISTILL_OK);
    assert_int_equal(distill_dataset_split(&tr3, &va3, all, 20, 43), DISTILL_OK);
    int same = 1, differ = 0;
    for (int64_t i = 0; i < 20; i++) {
        same &= id_of(va, i) == id_of(va2, i);
        differ |= id_of(va, i) != id_of(va3, i);
    }
    assert_true(same);
    assert_true(differ);
    distill_dataset_free(tr2);
    distill_dataset_free(va2);
    distill_dataset_free(tr3);
    distill_dataset_free(va3);
    assert_int_equal(distill_dataset_split(&tr2, &va2, all, 100, 1), DISTILL_EINVAL);
    assert_null(tr2);
    assert_null(va2);
    assert_int_equal(distill_dataset_split(&tr2, &va2, all, 0, 1), DISTILL_EINVAL);

    /* Labels, class sizes, and drop_labels on one handle only. */
    int32_t l;
    float v[2];
    assert_int_equal(distill_dataset_get(sub, 0, v, 2, &l), DISTILL_OK);
    assert_int_equal(l, 10 % 3);
    assert_int_equal(distill_dataset_class_size(all, 0), 34);
    assert_int_equal(distill_dataset_class_size(all, 1), 33);
    assert_int_equal(distill_dataset_class_size(sub, 1), 17);
    assert_int_equal(distill_dataset_class_size(all, 3), 0);
    assert_int_equal(distill_dataset_drop_labels(sub), DISTILL_OK);
    assert_false(distill_dataset_has_labels(sub));
    assert_int_equal(distill_dataset_num_classes(sub), 3);
    assert_int_equal(distill_dataset_class_size(sub, 1), 0);
    assert_int_equal(distill_dataset_get(sub, 0, v, 2, &l), DISTILL_OK);
    assert_int_equal(l, -1);
    assert_true(distill_dataset_has_labels(all));
    distill_dataset *sub3;
    assert_int_equal(distill_dataset_subset(&sub3, sub, 0, 2), DISTILL_OK);
    assert_false(distill_dataset_has_labels(sub3));
    distill_dataset_free(sub3);
    assert_int_equal(distill_dataset_skipped(all, NULL, NULL), 0);

    /* The views outlive their source. */
    distill_dataset_free(all);
    assert_true(id_of(tr, 79) < 100);
    assert_int_equal(id_of(sel, 0), 59);
    distill_dataset_free(sub);
    distill_dataset_free(sel);
    distill_dataset_free(tr);
    distill_dataset_free(va);
}

/* --------------------------------------------------------------- loader */

static distill_loader_options lopts(int batch, int shuffle, int prefetch, uint64_t seed)
{
    distill_loader_options o;
    assert_int_equal(distill_loader_options_init(&o, DISTILL_LOADER_OPTIONS_VERSION), DISTILL_OK);
    o.batch_size = batch;
    o.shuffle = shuffle;
    o.prefetch = prefetch;
    o.seed = seed;
    return o;
}

static distill_tensor *batch_tensor(int64_t n, int64_t c, int64_t h, int64_t w)
{
    int64_t dims[4] = {n, c, h, w};
    distill_tensor *t = NULL;
    assert_int_equal(distill_tensor_create(&t, 4, dims), DISTILL_OK);
    return t;
}

static void test_loader_batches(void **state)
{
    (void)state;
    distill_dataset *ds = numbered(10, 3, NULL);
    for (int prefetch = 0; prefetch < 2; prefetch++) {
        distill_loader_options o = lopts(4, 0, prefetch, 0);
        distill_loader *ld = NULL;
        assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
        assert_int_equal(distill_loader_num_batches(ld), 3);
        distill_tensor *x = batch_tensor(4, 1, 1, 2);
        const float *xd = distill_tensor_data(x);
        int32_t y[4];
        int n, want[4] = {4, 4, 2, 0};
        for (int epoch = 0; epoch < 2; epoch++) {
            int64_t next_id = 0;
            for (int b = 0; b < 4; b++) {
                assert_int_equal(distill_loader_next(ld, x, y, &n), DISTILL_OK);
                assert_int_equal(n, want[b]);
                if (!n)
                    break;
                assert_int_equal(distill_tensor_rank(x), 4);
                assert_int_equal(distill_tensor_dim(x, 0), n);
                assert_int_equal(distill_tensor_dim(x, 1), 1);
                assert_int_equal(distill_tensor_dim(x, 2), 1);
                assert_int_equal(distill_tensor_dim(x, 3), 2);
                for (int j = 0; j < n; j++, next_id++) {
                    assert_true(xd[2 * j] == (float)next_id);
                    assert_true(xd[2 * j + 1] == -(float)next_id);
                    assert_int_equal(y[j], next_id % 3);
                }
            }
            uint64_t e, p;
            assert_int_equal(distill_loader_get_state(ld, &e, &p), DISTILL_OK);
            assert_int_equal(e, (uint64_t)epoch + 1);
            assert_int_equal(p, 0);
        }
        distill_tensor_free(x);
        distill_loader_free(ld);

        /* drop_last: two batches of 4, then the end. */
        o.drop_last = 1;
        assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
        assert_int_equal(distill_loader_num_batches(ld), 2);
        x = batch_tensor(4, 1, 1, 2);
        for (int b = 0; b < 3; b++) {
            assert_int_equal(distill_loader_next(ld, x, NULL, &n), DISTILL_OK);
            assert_int_equal(n, b < 2 ? 4 : 0);
        }
        assert_int_equal(distill_loader_next(ld, x, NULL, &n), DISTILL_OK);
        assert_int_equal(n, 4);
        distill_tensor_free(x);
        distill_loader_free(ld);
    }
    distill_dataset_free(ds);
}

/* Every sample exactly once per epoch when shuffled; the order changes
 * from epoch to epoch. */
static void test_loader_epoch_coverage(void **state)
{
    (void)state;
    const int64_t n = 1000;
    distill_dataset *ds = numbered(n, 7, NULL);
    distill_loader_options o = lopts(64, 1, 1, 99);
    distill_loader *ld = NULL;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    distill_tensor *x = batch_tensor(64, 1, 1, 2);
    int32_t y[64];
    int64_t order[2][1000];
    for (int epoch = 0; epoch < 2; epoch++) {
        int *seen = calloc((size_t)n, sizeof *seen);
        int64_t k = 0;
        int count;
        while (distill_loader_next(ld, x, y, &count) == DISTILL_OK && count > 0) {
            const float *xd = distill_tensor_data(x);
            for (int j = 0; j < count; j++) {
                int64_t id = (int64_t)xd[2 * j];
                assert_true(id >= 0 && id < n);
                assert_int_equal(y[j], id % 7);
                seen[id]++;
                order[epoch][k++] = id;
            }
        }
        assert_int_equal(k, n);
        for (int64_t i = 0; i < n; i++)
            assert_int_equal(seen[i], 1);
        free(seen);
    }
    int differ = 0, unsorted = 0;
    for (int64_t i = 0; i < n; i++) {
        differ |= order[0][i] != order[1][i];
        unsorted |= order[0][i] != i;
    }
    assert_true(differ);
    assert_true(unsorted);
    distill_tensor_free(x);
    distill_loader_free(ld);
    distill_dataset_free(ds);
}

/* 28 x 28 bytes per sample, distinct across samples; batches of ld over
 * `epochs` epochs concatenated into *out (malloc'd), labels into *lab. */
static size_t collect(distill_loader *ld, int epochs, int64_t batch, float **out, int32_t **lab)
{
    size_t cap = 1 << 16, len = 0, nl = 0;
    float *buf = malloc(cap * sizeof *buf);
    int32_t *lb = malloc(4096 * sizeof *lb);
    distill_tensor *x = batch_tensor(batch, 1, 28, 28);
    int32_t *y = malloc((size_t)batch * sizeof *y);
    for (int e = 0; e < epochs; e++) {
        int n;
        while (distill_loader_next(ld, x, y, &n) == DISTILL_OK && n > 0) {
            size_t m = (size_t)distill_tensor_numel(x);
            if (len + m > cap) {
                cap = 2 * (len + m);
                buf = realloc(buf, cap * sizeof *buf);
            }
            memcpy(buf + len, distill_tensor_data(x), m * sizeof *buf);
            len += m;
            for (int j = 0; j < n && nl < 4096; j++)
                lb[nl++] = y[j];
        }
    }
    distill_tensor_free(x);
    free(y);
    *out = buf;
    if (lab)
        *lab = lb;
    else
        free(lb);
    return len;
}

static distill_dataset *pattern_dataset(int64_t n)
{
    uint8_t *px = malloc((size_t)n * 784);
    int32_t *lab = malloc((size_t)n * sizeof *lab);
    for (int64_t i = 0; i < n; i++) {
        for (int k = 0; k < 784; k++)
            px[i * 784 + k] = (uint8_t)((i * 31 + k * 7 + (k / 28) * 3) % 256);
        lab[i] = (int32_t)(i % 10);
    }
    int64_t dims[3] = {1, 28, 28};
    distill_dataset *ds = NULL;
    assert_int_equal(distill_dataset_from_memory_u8(&ds, n, dims, px, lab, 10,
                                                    DISTILL_MEMORY_COPY), DISTILL_OK);
    free(px);
    free(lab);
    return ds;
}

static distill_loader_options recipe(int prefetch, uint64_t seed)
{
    static const float mean = 0.2860f, std = 0.3530f;
    distill_loader_options o = lopts(32, 1, prefetch, seed);
    o.norm_count = 1;
    o.mean = &mean;
    o.std = &std;
    o.crop_padding = 2;
    o.hflip = 1;
    return o;
}

/* Same seed: the same batches, with or without prefetching, whatever the
 * timing; another seed: other batches. */
static void test_loader_determinism(void **state)
{
    (void)state;
    distill_dataset *ds = pattern_dataset(300);
    float *a, *b, *c, *d;
    int32_t *la, *lb;
    size_t na, nb, nc, nd;
    distill_loader *ld;
    distill_loader_options o = recipe(0, 5);
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    na = collect(ld, 3, 32, &a, &la);
    distill_loader_free(ld);
    o = recipe(1, 5);
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    nb = collect(ld, 3, 32, &b, &lb);
    distill_loader_free(ld);
    /* Prefetching again, the host slower than the worker. */
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    {
        distill_tensor *x = batch_tensor(32, 1, 28, 28);
        int n;
        size_t off = 0;
        for (int e = 0; e < 3; e++)
            while (distill_loader_next(ld, x, NULL, &n) == DISTILL_OK && n > 0) {
                struct timespec ts = {0, 200000};
                nanosleep(&ts, NULL);
                assert_memory_equal(distill_tensor_data(x), b + off,
                                    (size_t)distill_tensor_numel(x) * sizeof(float));
                off += (size_t)distill_tensor_numel(x);
            }
        assert_int_equal(off, nb);
        distill_tensor_free(x);
    }
    distill_loader_free(ld);
    o = recipe(1, 6);
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    nc = collect(ld, 1, 32, &c, NULL);
    distill_loader_free(ld);
    /* Without shuffling, the augmentation alone still follows the seed. */
    o = recipe(0, 5);
    o.shuffle = 0;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    nd = collect(ld, 1, 32, &d, NULL);
    distill_loader_free(ld);
    o.seed = 6;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    float *d2;
    assert_int_equal(collect(ld, 1, 32, &d2, NULL), nd);
    distill_loader_free(ld);
    assert_true(memcmp(d, d2, nd * sizeof *d) != 0);
    free(d2);

    assert_int_equal(na, (size_t)3 * 300 * 784);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    assert_memory_equal(la, lb, 900 * sizeof *la);
    assert_int_equal(nc, (size_t)300 * 784);
    assert_true(memcmp(a, c, nc * sizeof *a) != 0);
    assert_int_equal(nd, nc);
    assert_true(memcmp(a, d, nd * sizeof *a) != 0);
    free(a);
    free(b);
    free(c);
    free(d);
    free(la);
    free(lb);
    distill_dataset_free(ds);
}

/*
 * Augmentation on a hand-made image: each output must be the W x H window
 * at some (ox, oy) in [0, 2P]^2 of the image padded with P pixels of
 * pad_value (after normalization), flipped left-right or not; over many
 * samples every window and both flips occur, flips about half the time.
 */
static void test_loader_augmentation(void **state)
{
    (void)state;
    enum { H = 4, W = 5, P = 2, N = 2000 };
    float img[H * W];
    for (int i = 0; i < H * W; i++)
        img[i] = 0.05f * (float)(i + 1); /* distinct, none zero */
    float *many = malloc((size_t)N * H * W * sizeof *many);
    for (int i = 0; i < N; i++)
        memcpy(many + (size_t)i * H * W, img, sizeof img);
    int64_t dims[3] = {1, H, W};
    distill_dataset *ds = NULL;
    assert_int_equal(distill_dataset_from_memory(&ds, N, dims, many, NULL, 0,
                                                 DISTILL_MEMORY_BORROW), DISTILL_OK);
    const float mean = 0.52f, std = 0.25f; /* no pixel normalizes to 0 */
    distill_loader_options o = lopts(100, 1, 1, 3);
    o.norm_count = 1;
    o.mean = &mean;
    o.std = &std;
    o.crop_padding = P;
    o.hflip = 1;
    distill_loader *ld = NULL;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    distill_tensor *x = batch_tensor(100, 1, H, W);
    int32_t y[100];
    int hits[2][2 * P + 1][2 * P + 1];
    memset(hits, 0, sizeof hits);
    int n, flips = 0, total = 0;
    while (distill_loader_next(ld, x, y, &n) == DISTILL_OK && n > 0) {
        for (int j = 0; j < n; j++) {
            assert_int_equal(y[j], -1);
            const float *out = distill_tensor_data(x) + (size_t)j * H * W;
            int found = 0;
            for (int f = 0; f < 2 && !found; f++)
                for (int oy = 0; oy <= 2 * P && !found; oy++)
                    for (int ox = 0; ox <= 2 * P && !found; ox++) {
                        int ok = 1;
                        for (int yy = 0; yy < H && ok; yy++)
                            for (int xx = 0; xx < W && ok; xx++) {
                                int sy = yy + oy - P;
                                int sx = (f ? W - 1 - xx : xx) + ox - P;
                                float want = sy < 0 || sy >= H || sx < 0 || sx >= W
                                                 ? 0.0f
                                                 : (img[sy * W + sx] - mean) / std;
                                ok = out[yy * W + xx] == want;
                            }
                        if (ok) {
                            found = 1;
                            hits[f][oy][ox]++;
                            flips += f;
                        }
                    }
            assert_true(found);
            total++;
        }
    }
    assert_int_equal(total, N);
    for (int f = 0; f < 2; f++)
        for (int oy = 0; oy <= 2 * P; oy++)
            for (int ox = 0; ox <= 2 * P; ox++)
                assert_true(hits[f][oy][ox] > 0);
    assert_true(flips > N * 0.42 && flips < N * 0.58);
    distill_tensor_free(x);
    distill_loader_free(ld);

    /* pad_value -mean/std pads with black pixels instead; no augmentation
     * gives the normalized image itself. */
    o.pad_value = -mean / std;
    o.hflip = 0;
    o.batch_size = 1;
    o.shuffle = 0;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    x = batch_tensor(1, 1, H, W);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(distill_loader_next(ld, x, NULL, &n), DISTILL_OK);
        const float *out = distill_tensor_data(x);
        /* Padded pixels are black, never 0 (no pixel of img maps to 0). */
        for (int k = 0; k < H * W; k++)
            assert_true(out[k] != 0.0f);
    }
    distill_tensor_free(x);
    distill_loader_free(ld);
    o.crop_padding = 0;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    x = batch_tensor(1, 1, H, W);
    assert_int_equal(distill_loader_next(ld, x, NULL, &n), DISTILL_OK);
    for (int k = 0; k < H * W; k++)
        assert_true(distill_tensor_data(x)[k] == (img[k] - mean) / std);
    distill_tensor_free(x);
    distill_loader_free(ld);
    distill_dataset_free(ds);
    free(many);
}

/* Bytes are normalized as (byte / 255 - mean) / std, per channel. */
static void test_loader_normalization(void **state)
{
    (void)state;
    uint8_t px[2 * 3 * 2];
    for (int i = 0; i < 12; i++)
        px[i] = (uint8_t)(i * 21);
    int64_t dims[3] = {3, 1, 2};
    distill_dataset *ds = NULL;
    assert_int_equal(distill_dataset_from_memory_u8(&ds, 2, dims, px, NULL, 0,
                                                    DISTILL_MEMORY_COPY), DISTILL_OK);
    const float mean[3] = {0.1f, 0.2f, 0.3f}, std[3] = {0.5f, 0.25f, 2.0f};
    distill_loader_options o = lopts(2, 0, 0, 0);
    o.norm_count = 3;
    o.mean = mean;
    o.std = std;
    distill_loader *ld = NULL;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    distill_tensor *x = batch_tensor(2, 3, 1, 2);
    int n;
    assert_int_equal(distill_loader_next(ld, x, NULL, &n), DISTILL_OK);
    assert_int_equal(n, 2);
    for (int i = 0; i < 12; i++) {
        int c = (i / 2) % 3;
        assert_true(distill_tensor_data(x)[i] == ((float)px[i] / 255.0f - mean[c]) / std[c]);
    }
    distill_loader_free(ld);

    /* Option checks. */
    o.norm_count = 2;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_EINVAL);
    assert_null(ld);
    o.norm_count = 1;
    const float zero = 0.0f;
    o.std = &zero;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_EINVAL);
    o.norm_count = 0;
    o.batch_size = 0;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_EINVAL);
    o.batch_size = 3;
    o.drop_last = 1;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_EINVAL);
    o.drop_last = 0;
    o.crop_padding = -1;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_EINVAL);
    o.crop_padding = 0;
    o.version = DISTILL_LOADER_OPTIONS_VERSION + 8;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_EVERSION);
    assert_int_equal(distill_loader_options_init(&o, DISTILL_LOADER_OPTIONS_VERSION + 8), DISTILL_EVERSION);
    assert_int_equal(distill_loader_next(NULL, x, NULL, &n), DISTILL_EINVAL);
    /* Defaults: batch 128, shuffled, prefetching; the loader outlives ds. */
    assert_int_equal(distill_loader_create(&ld, ds, NULL), DISTILL_OK);
    distill_dataset_free(ds);
    assert_int_equal(distill_loader_next(ld, x, NULL, &n), DISTILL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(distill_tensor_dim(x, 0), 2);
    assert_int_equal(distill_loader_next(ld, x, NULL, &n), DISTILL_OK);
    assert_int_equal(n, 0);
    distill_tensor_free(x);
    distill_loader_free(ld);
    distill_loader_free(NULL);
}

/* A loader set to a saved position gives exactly the batches the original
 * gave from there, prefetching or not, mid-epoch or at an epoch's end. */
static void test_loader_resume(void **state)
{
    (void)state;
    distill_dataset *ds = pattern_dataset(250);
    for (int pf = 0; pf < 2; pf++) {
        distill_loader_options o = recipe(pf, 11);
        distill_loader *ld;
        assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
        float *all;
        size_t len = collect(ld, 3, 32, &all, NULL);
        distill_loader_free(ld);
        assert_int_equal(len, (size_t)3 * 250 * 784);

        /* Stop after 1 epoch and 3 batches; resume in a new loader. */
        assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
        distill_tensor *x = batch_tensor(32, 1, 28, 28);
        int n;
        for (int b = 0; b < 8 + 1 + 3; b++) /* 8 batches + end of epoch + 3 */
            assert_int_equal(distill_loader_next(ld, x, NULL, &n), DISTILL_OK);
        uint64_t e, p;
        assert_int_equal(distill_loader_get_state(ld, &e, &p), DISTILL_OK);
        assert_int_equal(e, 1);
        assert_int_equal(p, 96);
        distill_loader_free(ld);

        distill_loader *r;
        o.prefetch = !pf; /* resuming with the other setting changes nothing */
        assert_int_equal(distill_loader_create(&r, ds, &o), DISTILL_OK);
        assert_int_equal(distill_loader_set_state(r, e, p), DISTILL_OK);
        size_t off = (size_t)(250 + 96) * 784;
        for (;;) {
            assert_int_equal(distill_loader_next(r, x, NULL, &n), DISTILL_OK);
            if (n == 0) {
                uint64_t e2;
                distill_loader_get_state(r, &e2, NULL);
                if (e2 == 3)
                    break;
                continue;
            }
            size_t m = (size_t)distill_tensor_numel(x);
            assert_true(off + m <= len);
            assert_memory_equal(distill_tensor_data(x), all + off, m * sizeof(float));
            off += m;
        }
        assert_int_equal(off, len);

        /* At the very end of an epoch: the next call ends it. */
        assert_int_equal(distill_loader_set_state(r, 0, 250), DISTILL_OK);
        assert_int_equal(distill_loader_next(r, x, NULL, &n), DISTILL_OK);
        assert_int_equal(n, 0);
        assert_int_equal(distill_loader_next(r, x, NULL, &n), DISTILL_OK);
        assert_int_equal(n, 32);
        assert_memory_equal(distill_tensor_data(x), all + (size_t)250 * 784,
                            (size_t)32 * 784 * sizeof(float));
        /* set_epoch and reset. */
        assert_int_equal(distill_loader_set_epoch(r, 2), DISTILL_OK);
        assert_int_equal(distill_loader_next(r, x, NULL, &n), DISTILL_OK);
        assert_memory_equal(distill_tensor_data(x), all + (size_t)500 * 784,
                            (size_t)32 * 784 * sizeof(float));
        assert_int_equal(distill_loader_reset(r), DISTILL_OK);
        assert_int_equal(distill_loader_next(r, x, NULL, &n), DISTILL_OK);
        assert_memory_equal(distill_tensor_data(x), all, (size_t)32 * 784 * sizeof(float));
        assert_int_equal(distill_loader_set_state(r, 0, 251), DISTILL_EINVAL);
        distill_tensor_free(x);
        distill_loader_free(r);
        free(all);
    }
    distill_dataset_free(ds);
}

/* Loaders freed at any point, with the worker busy or idle; the dataset
 * freed first. */
static void test_loader_free_anytime(void **state)
{
    (void)state;
    distill_dataset *ds = pattern_dataset(200);
    distill_loader_options o = recipe(1, 1);
    distill_tensor *x = batch_tensor(32, 1, 28, 28);
    for (int k = 0; k < 20; k++) {
        distill_loader *ld;
        assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
        int n;
        for (int b = 0; b < k % 4; b++)
            assert_int_equal(distill_loader_next(ld, x, NULL, &n), DISTILL_OK);
        if (k % 3 == 0)
            distill_loader_set_state(ld, (uint64_t)k, 17);
        distill_loader_free(ld);
    }
    distill_loader *ld;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    distill_dataset_free(ds);
    int n;
    assert_int_equal(distill_loader_next(ld, x, NULL, &n), DISTILL_OK);
    assert_int_equal(n, 32);
    distill_loader_free(ld);
    distill_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fashion_mnist),
        cmocka_unit_test_setup_teardown(test_fashion_mnist_missing, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_idx_raw_and_gz, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_idx_errors, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_idx_truncated_gz, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_views),
        cmocka_unit_test(test_loader_batches),
        cmocka_unit_test(test_loader_epoch_coverage),
        cmocka_unit_test(test_loader_determinism),
        cmocka_unit_test(test_loader_augmentation),
        cmocka_unit_test(test_loader_normalization),
        cmocka_unit_test(test_loader_resume),
        cmocka_unit_test(test_loader_free_anytime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

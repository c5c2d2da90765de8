/*
 * test_loader_folder.c - PNG folders kept in memory as bytes and streamed
 * from their files: the same samples and the same batches either way, with
 * worker threads; bad files found at load (skip_bad) or when a batch is
 * built (named in the error).
 */
#define _XOPEN_SOURCE 700

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "distill.h"
#include "data/data_internal.h"

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
    snprintf(tmpdir, sizeof tmpdir, "%s/distill_ldf_XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    (void)state;
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static const char *tp(const char *rel)
{
    static char p[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, rel);
    return p[k];
}

/* An 8-bit RGB PNG of w x h with pixels from (seed, x, y, k). */
static void write_rgb(const char *rel, int w, int h, int seed)
{
    FILE *f = fopen(tp(rel), "wb");
    assert_non_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_true(png && info);
    unsigned char *px = malloc((size_t)w * h * 3);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    if (setjmp(png_jmpbuf(png)))
        fail_msg("libpng failed writing %s", rel);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++)
            for (int k = 0; k < 3; k++)
                px[((size_t)y * w + x) * 3 + k] = (unsigned char)((seed * 71 + x * 13 + y * 29 +
                                                                   k * 83 + x * y) % 256);
        rows[y] = px + (size_t)y * w * 3;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    free(px);
    free(rows);
}

/* root/{a,b,c}/NN.png, 7 images each, of mixed sizes. */
static void make_folder(const char *root)
{
    mkdir(tp(root), 0755);
    static const char *cls[] = {"a", "b", "c"};
    char rel[256];
    for (int c = 0; c < 3; c++) {
        snprintf(rel, sizeof rel, "%s/%s", root, cls[c]);
        mkdir(tp(rel), 0755);
        for (int i = 0; i < 7; i++) {
            snprintf(rel, sizeof rel, "%s/%s/%02d.png", root, cls[c], i);
            write_rgb(rel, 10 + (i * 3) % 7, 9 + (i * 5) % 6, c * 10 + i);
        }
    }
}

static distill_dataset *load(const char *root, int64_t memory_limit, int skip_bad, int *rc_out)
{
    distill_folder_options fo;
    distill_folder_options_init(&fo, DISTILL_FOLDER_OPTIONS_VERSION);
    fo.height = 12;
    fo.width = 14;
    fo.memory_limit = memory_limit;
    fo.skip_bad = skip_bad;
    distill_dataset *ds = NULL;
    int rc = distill_dataset_from_folder(&ds, tp(root), &fo);
    if (rc_out)
        *rc_out = rc;
    else if (rc)
        fail_msg("%s", distill_last_error());
    return ds;
}

/* All batches of two epochs. */
static float *batches(const distill_dataset *ds, int workers, int prefetch, size_t *n,
                      int32_t *labels_out)
{
    float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    distill_loader_options o;
    distill_loader_options_init(&o, DISTILL_LOADER_OPTIONS_VERSION);
    o.batch_size = 4;
    o.seed = 5;
    o.norm_count = 3;
    o.mean = mean;
    o.std = sd;
    o.hflip = 1;
    o.random_resized_crop[0] = o.random_resized_crop[1] = 8;
    o.workers = workers;
    o.prefetch = prefetch;
    distill_loader *ld;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    int64_t bd[4] = {4, 3, 8, 8};
    distill_tensor *x;
    assert_int_equal(distill_tensor_create(&x, 4, bd), DISTILL_OK);
    float *all = malloc(2 * 21 * 3 * 64 * sizeof(float));
    size_t at = 0, nl = 0;
    for (int e = 0; e < 2; e++) {
        int count, rc;
        int32_t lab[4];
        while ((rc = distill_loader_next(ld, x, lab, &count)) == DISTILL_OK && count > 0) {
            memcpy(all + at, distill_tensor_data(x), (size_t)count * 192 * sizeof(float));
            at += (size_t)count * 192;
            memcpy(labels_out + nl, lab, (size_t)count * sizeof(int32_t));
            nl += (size_t)count;
        }
        if (rc)
            fail_msg("%s", distill_last_error());
    }
    *n = at;
    distill_tensor_free(x);
    distill_loader_free(ld);
    return all;
}

static void test_memory_and_streamed_agree(void **state)
{
    (void)state;
    make_folder("f");
    distill_dataset *mem = load("f", -1, 0, NULL), *dflt = load("f", 0, 0, NULL);
    distill_dataset *str = load("f", 1, 0, NULL);
    assert_int_equal(mem->st->type, STORE_U8);
    assert_int_equal(dflt->st->type, STORE_U8);
    assert_int_equal(str->st->type, STORE_FILES);
    /* exactly what fits stays in memory */
    distill_dataset *edge = load("f", 21 * 3 * 12 * 14, 0, NULL);
    assert_int_equal(edge->st->type, STORE_U8);
    distill_dataset_free(edge);
    edge = load("f", 21 * 3 * 12 * 14 - 1, 0, NULL);
    assert_int_equal(edge->st->type, STORE_FILES);
    distill_dataset_free(edge);

    assert_int_equal(distill_dataset_size(str), 21);
    assert_int_equal(distill_dataset_num_classes(str), 3);
    assert_string_equal(distill_dataset_class_name(str, 2), "c");
    assert_int_equal(distill_dataset_class_size(str, 1), 7);
    float a[3 * 12 * 14], b[3 * 12 * 14];
    for (int64_t i = 0; i < 21; i++) {
        int32_t la, lb;
        assert_int_equal(distill_dataset_get(mem, i, a, sizeof a / sizeof *a, &la), DISTILL_OK);
        assert_int_equal(distill_dataset_get(str, i, b, sizeof b / sizeof *b, &lb), DISTILL_OK);
        assert_memory_equal(a, b, sizeof a);
        assert_int_equal(la, lb);
        assert_int_equal(la, i / 7);
    }
    size_t n0, n1;
    int32_t l0[42], l1[42];
    float *ref = batches(mem, 0, 0, &n0, l0);
    static const int setups[][2] = {{0, 0}, {0, 1}, {1, 0}, {2, 1}, {4, 1}};
    for (size_t s = 0; s < sizeof setups / sizeof *setups; s++) {
        float *got = batches(str, setups[s][0], setups[s][1], &n1, l1);
        assert_int_equal(n0, n1);
        assert_memory_equal(ref, got, n0 * sizeof(float));
        assert_memory_equal(l0, l1, sizeof l0);
        free(got);
    }
    free(ref);
    /* a split of a streamed set streams too */
    distill_dataset *tr, *va;
    assert_int_equal(distill_dataset_split(&tr, &va, str, 5, 1), DISTILL_OK);
    distill_dataset *trm, *vam;
    assert_int_equal(distill_dataset_split(&trm, &vam, mem, 5, 1), DISTILL_OK);
    ref = batches(trm, 0, 0, &n0, l0);
    float *got = batches(tr, 2, 1, &n1, l1);
    assert_int_equal(n0, n1);
    assert_memory_equal(ref, got, n0 * sizeof(float));
    free(ref);
    free(got);
    distill_dataset_free(tr);
    distill_dataset_free(va);
    distill_dataset_free(trm);
    distill_dataset_free(vam);
    distill_dataset_free(mem);
    distill_dataset_free(dflt);
    distill_dataset_free(str);
}

static void test_streamed_bad_files(void **state)
{
    (void)state;
    make_folder("g");
    FILE *f = fopen(tp("g/b/03.png"), "wb");
    fputs("not a png", f);
    fclose(f);
    /* without skip_bad, a streamed load does not read the file ... */
    int rc;
    distill_dataset *str = load("g", 1, 0, &rc);
    assert_int_equal(rc, DISTILL_OK);
    assert_int_equal(distill_dataset_size(str), 21);
    /* ... and the batch that needs it fails, naming it */
    float img[3 * 12 * 14];
    assert_int_equal(distill_dataset_get(str, 10, img, 3 * 12 * 14, NULL), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "03.png"));
    distill_loader_options o;
    distill_loader_options_init(&o, DISTILL_LOADER_OPTIONS_VERSION);
    o.batch_size = 21;
    o.workers = 2;
    distill_loader *ld;
    assert_int_equal(distill_loader_create(&ld, str, &o), DISTILL_OK);
    int64_t bd[4] = {21, 3, 12, 14};
    distill_tensor *x;
    assert_int_equal(distill_tensor_create(&x, 4, bd), DISTILL_OK);
    int count;
    assert_int_equal(distill_loader_next(ld, x, NULL, &count), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "b/03.png"));
    distill_tensor_free(x);
    distill_loader_free(ld);
    distill_dataset_free(str);
    /* in memory the load fails */
    assert_null(load("g", -1, 0, &rc));
    assert_int_equal(rc, DISTILL_EFORMAT);
    /* with skip_bad both drop it, count it, and agree */
    distill_dataset *s2 = load("g", 1, 1, NULL), *m2 = load("g", -1, 1, NULL);
    assert_int_equal(s2->st->type, STORE_FILES);
    int64_t bad;
    assert_int_equal(distill_dataset_skipped(s2, NULL, &bad), 1);
    assert_int_equal(bad, 1);
    assert_int_equal(distill_dataset_size(s2), 20);
    assert_int_equal(distill_dataset_size(m2), 20);
    assert_int_equal(distill_dataset_class_size(s2, 1), 6);
    float a[3 * 12 * 14];
    for (int64_t i = 0; i < 20; i++) {
        int32_t la, lb;
        assert_int_equal(distill_dataset_get(m2, i, a, 3 * 12 * 14, &la), DISTILL_OK);
        assert_int_equal(distill_dataset_get(s2, i, img, 3 * 12 * 14, &lb), DISTILL_OK);
        assert_memory_equal(a, img, sizeof a);
        assert_int_equal(la, lb);
    }
    distill_dataset_free(s2);
    distill_dataset_free(m2);
    /* a bad memory_limit */
    assert_null(load("g", -2, 0, &rc));
    assert_int_equal(rc, DISTILL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_and_streamed_agree),
        cmocka_unit_test(test_streamed_bad_files),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}

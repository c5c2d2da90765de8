/*
 * test_data_png.c - datasets from folders of PNG images: every colour type,
 * resizing, cropping, and the files a real folder holds besides images.
 * The PNG files are written here with libpng, with known pixel values.
 */
#define _XOPEN_SOURCE 700

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "distill.h"

/* ------------------------------------------------------------- helpers */

static char tmpdir[256];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    chmod(path, 0700);
    return remove(path);
}

static int setup_tmp(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/distill_png_XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    (void)state;
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* tmpdir/rel, in one of four rotating buffers. */
static const char *tp(const char *rel)
{
    static char p[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, rel);
    return p[k];
}

static void mkdirs(const char *rel)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", tp(rel));
    for (char *s = buf + strlen(tmpdir) + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(buf, 0755);
            *s = '/';
        }
    mkdir(buf, 0755);
}

static void write_text(const char *rel, const char *text)
{
    FILE *f = fopen(tp(rel), "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int channels_of(int color)
{
    switch (color) {
    case PNG_COLOR_TYPE_GRAY: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    case PNG_COLOR_TYPE_RGB_ALPHA: return 4;
    default: return 1; /* palette index */
    }
}

/*
 * Write tmpdir/rel as a w x h PNG of `color` and `depth`, Adam7-interlaced
 * if `interlace`, from samples (h * w * channels values, row-major; palette
 * indices for PNG_COLOR_TYPE_PALETTE, with `pal` of npal colours and, when
 * ntrans > 0, a tRNS chunk).
 */
static void write_png(const char *rel, int w, int h, int color, int depth, int interlace,
                      const uint16_t *samples, const png_color *pal, int npal, int ntrans)
{
    FILE *f = fopen(tp(rel), "wb");
    assert_non_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_true(png && info);
    int ch = channels_of(color);
    size_t rowbytes = ((size_t)w * ch * depth + 7) / 8;
    unsigned char *rows = calloc((size_t)h, rowbytes);
    png_bytep *rp = malloc((size_t)h * sizeof *rp);
    if (setjmp(png_jmpbuf(png)))
        fail_msg("libpng failed writing %s", rel);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal)
        png_set_PLTE(png, info, pal, npal);
    if (ntrans) {
        png_byte trans[256];
        for (int i = 0; i < ntrans; i++)
            trans[i] = (png_byte)(i * 60);
        png_set_tRNS(png, info, trans, ntrans, NULL);
    }
    png_write_info(png, info);
    for (int y = 0; y < h; y++) {
        unsigned char *row = rows + (size_t)y * rowbytes;
        rp[y] = row;
        for (int i = 0; i < w * ch; i++) {
            unsigned v = samples[(size_t)y * w * ch + i];
            if (depth == 16) {
                row[2 * i] = (unsigned char)(v >> 8);
                row[2 * i + 1] = (unsigned char)v;
            } else if (depth == 8) {
                row[i] = (unsigned char)v;
            } else {
                int bit = i * depth;
                row[bit / 8] |= (unsigned char)(v << (8 - depth - bit % 8));
            }
        }
    }
    png_write_image(png, rp);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    free(rows);
    free(rp);
}

/* A w x h gray 8-bit PNG with values v[y * w + x]. */
static void write_gray8(const char *rel, int w, int h, const uint8_t *v)
{
    uint16_t *s = malloc((size_t)w * h * sizeof *s);
    for (int i = 0; i < w * h; i++)
        s[i] = v[i];
    write_png(rel, w, h, PNG_COLOR_TYPE_GRAY, 8, 0, s, NULL, 0, 0);
    free(s);
}

static distill_folder_options fopts(int channels, int h, int w, int resize, int skip_bad)
{
    distill_folder_options o;
    assert_int_equal(distill_folder_options_init(&o, DISTILL_FOLDER_OPTIONS_VERSION), DISTILL_OK);
    o.channels = channels;
    o.height = h;
    o.width = w;
    o.resize = resize;
    o.skip_bad = skip_bad;
    return o;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------- colour types */

enum { W = 4, H = 3 };

static const png_color palette[5] = {
    {255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}, {200, 100, 50}};

/* The test images, one class each, in name order. */
typedef struct kind {
    const char *name;
    int color, depth, interlace, ntrans;
} kind;

static const kind kinds[] = {
    {"a_gray8", PNG_COLOR_TYPE_GRAY, 8, 0, 0},
    {"b_gray16", PNG_COLOR_TYPE_GRAY, 16, 0, 0},
    {"c_gray2", PNG_COLOR_TYPE_GRAY, 2, 0, 0},
    {"d_gray_alpha", PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, 0},
    {"e_rgb", PNG_COLOR_TYPE_RGB, 8, 0, 0},
    {"f_rgb16", PNG_COLOR_TYPE_RGB, 16, 0, 0},
    {"g_rgba", PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, 0},
    {"h_palette", PNG_COLOR_TYPE_PALETTE, 8, 0, 0},
    {"i_palette4_trns", PNG_COLOR_TYPE_PALETTE, 4, 0, 3},
    {"j_interlaced", PNG_COLOR_TYPE_RGB, 8, 1, 0},
    {"k_gray16_interlaced", PNG_COLOR_TYPE_GRAY, 16, 1, 0},
};
#define NKINDS ((int)(sizeof kinds / sizeof kinds[0]))

/* Stored sample k (channel) of pixel (x, y) of kind `t`. */
static unsigned sample_of(const kind *t, int x, int y, int k)
{
    unsigned max = (1u << t->depth) - 1;
    if (t->color == PNG_COLOR_TYPE_PALETTE)
        return (unsigned)(x + y * W) % 5;
    if ((t->color & PNG_COLOR_MASK_ALPHA) && k == channels_of(t->color) - 1)
        return (unsigned)(x * 90 + y * 7) % 256; /* alpha, 0 included: must be ignored */
    return (unsigned)(x * 9001 + y * 4567 + k * 1237 + 29) % (max + 1);
}

/* The expected colour in [0, 1] of (x, y): rgb[0..2] (gray repeats). */
static void expect_rgb(const kind *t, int x, int y, float rgb[3])
{
    if (t->color == PNG_COLOR_TYPE_PALETTE) {
        const png_color *c = &palette[sample_of(t, x, y, 0)];
        rgb[0] = c->red / 255.0f;
        rgb[1] = c->green / 255.0f;
        rgb[2] = c->blue / 255.0f;
        return;
    }
    float max = (float)((1u << t->depth) - 1);
    int gray = !(t->color & PNG_COLOR_MASK_COLOR);
    for (int k = 0; k < 3; k++) {
        unsigned v = sample_of(t, x, y, gray ? 0 : k);
        /* Gray below 8 bits is scaled to 8 bits (v * 255 / max) first. */
        rgb[k] = t->depth < 8 ? (float)(v * (255u / (unsigned)max)) / 255.0f : (float)v / max;
    }
}

static void write_kinds(const char *root)
{
    for (int i = 0; i < NKINDS; i++) {
        const kind *t = &kinds[i];
        char dir[256], file[300];
        snprintf(dir, sizeof dir, "%s/%s", root, t->name);
        mkdirs(dir);
        int ch = channels_of(t->color);
        uint16_t s[W * H * 4];
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int k = 0; k < ch; k++)
                    s[(y * W + x) * ch + k] = (uint16_t)sample_of(t, x, y, k);
        snprintf(file, sizeof file, "%s/img.png", dir);
        int pal = t->color == PNG_COLOR_TYPE_PALETTE;
        write_png(file, W, H, t->color, t->depth, t->interlace, s, pal ? palette : NULL,
                  pal ? 5 : 0, t->ntrans);
    }
}

/* Samples are kept as bytes: `got` must be `want` rounded to a multiple
 * of 1/255 (to nearest), and be such a multiple. */
static int near8(float got, float want)
{
    float b = got * 255.0f;
    return fabsf(b - roundf(b)) < 1e-3f && fabsf(got - want) <= 0.5f / 255.0f + 1e-6f;
}

static void test_colour_types(void **state)
{
    (void)state;
    write_kinds("kinds");
    for (int channels = 1; channels <= 3; channels += 2) {
        distill_folder_options o = fopts(channels, 0, 0, DISTILL_RESIZE_NONE, 0);
        distill_dataset *ds = NULL;
        int rc = distill_dataset_from_folder(&ds, tp("kinds"), &o);
        if (rc)
            fail_msg("%s", distill_last_error());
        assert_int_equal(distill_dataset_size(ds), NKINDS);
        assert_int_equal(distill_dataset_num_classes(ds), NKINDS);
        int64_t dims[3];
        distill_dataset_sample_dims(ds, dims);
        assert_int_equal(dims[0], channels);
        assert_int_equal(dims[1], H);
        assert_int_equal(dims[2], W);
        assert_int_equal(distill_dataset_skipped(ds, NULL, NULL), 0);
        for (int i = 0; i < NKINDS; i++) {
            const kind *t = &kinds[i];
            assert_string_equal(distill_dataset_class_name(ds, i), t->name);
            float img[3 * W * H];
            int32_t label;
            assert_int_equal(distill_dataset_get(ds, i, img, (size_t)channels * W * H, &label),
                             DISTILL_OK);
            assert_int_equal(label, i);
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    float rgb[3];
                    expect_rgb(t, x, y, rgb);
                    if (channels == 3) {
                        for (int k = 0; k < 3; k++) {
                            float got = img[(k * H + y) * W + x];
                            if (!near8(got, rgb[k]))
                                fail_msg("%s (%d,%d) channel %d: %.9g, expected %.9g", t->name,
                                         x, y, k, (double)got, (double)rgb[k]);
                        }
                    } else {
                        int gray = !(t->color & PNG_COLOR_MASK_COLOR);
                        float want =
                            gray ? rgb[0] : 0.299f * rgb[0] + 0.587f * rgb[1] + 0.114f * rgb[2];
                        float got = img[y * W + x];
                        if (!near8(got, want))
                            fail_msg("%s (%d,%d) gray: %.9g, expected %.9g", t->name, x, y,
                                     (double)got, (double)want);
                    }
                }
        }
        distill_dataset_free(ds);
    }
}

/* A larger interlaced image (all seven Adam7 passes hold pixels). */
static void test_interlaced_large(void **state)
{
    (void)state;
    enum { LW = 19, LH = 13 };
    uint16_t s[LW * LH * 3];
    for (int i = 0; i < LW * LH * 3; i++)
        s[i] = (uint16_t)((i * 37 + 11) % 256);
    mkdirs("il/only");
    write_png("il/only/x.png", LW, LH, PNG_COLOR_TYPE_RGB, 8, 1, s, NULL, 0, 0);
    distill_folder_options o = fopts(3, LH, LW, DISTILL_RESIZE_NONE, 0);
    distill_dataset *ds = NULL;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("il"), &o), DISTILL_OK);
    float img[3 * LW * LH];
    assert_int_equal(distill_dataset_get(ds, 0, img, 3 * LW * LH, NULL), DISTILL_OK);
    for (int y = 0; y < LH; y++)
        for (int x = 0; x < LW; x++)
            for (int k = 0; k < 3; k++)
                assert_true(img[(k * LH + y) * LW + x] == s[(y * LW + x) * 3 + k] / 255.0f);
    distill_dataset_free(ds);
}

/* ------------------------------------------------------- size changes */

static void test_resize_and_crop(void **state)
{
    (void)state;
    uint8_t v4[16], v5[25], v2[4] = {0, 100, 200, 40};
    for (int i = 0; i < 16; i++)
        v4[i] = (uint8_t)(i * 13);
    for (int i = 0; i < 25; i++)
        v5[i] = (uint8_t)(i * 10 + 1);
    mkdirs("rs/c");
    write_gray8("rs/c/a4.png", 4, 4, v4);
    write_gray8("rs/c/b5.png", 5, 5, v5);
    write_gray8("rs/c/c2.png", 2, 2, v2);

    /* Bilinear to 2 x 2: each output is the mean of a 2 x 2 block (4 x 4),
     * and a 2 x 2 image is kept as it is. */
    distill_folder_options o = fopts(1, 2, 2, DISTILL_RESIZE_BILINEAR, 0);
    distill_dataset *ds = NULL;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("rs"), &o), DISTILL_OK);
    assert_int_equal(distill_dataset_size(ds), 3);
    float out[16];
    assert_int_equal(distill_dataset_get(ds, 0, out, 4, NULL), DISTILL_OK);
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 2; x++) {
            int a = (2 * y) * 4 + 2 * x;
            float want = (v4[a] + v4[a + 1] + v4[a + 4] + v4[a + 5]) / 4.0f / 255.0f;
            assert_true(near8(out[y * 2 + x], want));
        }
    assert_int_equal(distill_dataset_get(ds, 2, out, 4, NULL), DISTILL_OK);
    for (int i = 0; i < 4; i++)
        assert_true(out[i] == v2[i] / 255.0f);
    distill_dataset_free(ds);

    /* Bilinear up to 4 x 4 (half-pixel centres): row 0 of the 2 x 2 image
     * becomes a, 3a/4 + b/4, a/4 + 3b/4, b. */
    o = fopts(1, 4, 4, DISTILL_RESIZE_BILINEAR, 0);
    assert_int_equal(distill_dataset_from_folder(&ds, tp("rs"), &o), DISTILL_OK);
    assert_int_equal(distill_dataset_get(ds, 2, out, 16, NULL), DISTILL_OK);
    float a = v2[0] / 255.0f, b = v2[1] / 255.0f;
    assert_true(near8(out[0], a));
    assert_true(near8(out[1], 0.75f * a + 0.25f * b));
    assert_true(near8(out[2], 0.25f * a + 0.75f * b));
    assert_true(near8(out[3], b));
    distill_dataset_free(ds);

    /* Centre crop to 3 x 3: rows/cols 1..3 of the 5 x 5, 0..2 of the 4 x 4
     * (floor((4 - 3) / 2) = 0), and the 2 x 2 on zeros at offset 0. */
    o = fopts(1, 3, 3, DISTILL_RESIZE_CENTER_CROP, 0);
    assert_int_equal(distill_dataset_from_folder(&ds, tp("rs"), &o), DISTILL_OK);
    assert_int_equal(distill_dataset_get(ds, 1, out, 9, NULL), DISTILL_OK);
    for (int y = 0; y < 3; y++)
        for (int x = 0; x < 3; x++)
            assert_true(out[y * 3 + x] == v5[(y + 1) * 5 + x + 1] / 255.0f);
    assert_int_equal(distill_dataset_get(ds, 0, out, 9, NULL), DISTILL_OK);
    for (int y = 0; y < 3; y++)
        for (int x = 0; x < 3; x++)
            assert_true(out[y * 3 + x] == v4[y * 4 + x] / 255.0f);
    distill_dataset_free(ds);
    /* ... and to 4 x 4: the 2 x 2 sits at rows/cols 1..2 on zeros. */
    o = fopts(1, 4, 4, DISTILL_RESIZE_CENTER_CROP, 0);
    assert_int_equal(distill_dataset_from_folder(&ds, tp("rs"), &o), DISTILL_OK);
    assert_int_equal(distill_dataset_get(ds, 2, out, 16, NULL), DISTILL_OK);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) {
            int in = y >= 1 && y <= 2 && x >= 1 && x <= 2;
            float want = in ? v2[(y - 1) * 2 + x - 1] / 255.0f : 0.0f;
            assert_true(out[y * 4 + x] == want);
        }
    distill_dataset_free(ds);

    /* No size given: the first image read (a4.png) sets it. */
    o = fopts(1, 0, 0, DISTILL_RESIZE_BILINEAR, 0);
    assert_int_equal(distill_dataset_from_folder(&ds, tp("rs"), &o), DISTILL_OK);
    int64_t dims[3];
    distill_dataset_sample_dims(ds, dims);
    assert_int_equal(dims[1], 4);
    assert_int_equal(dims[2], 4);
    distill_dataset_free(ds);

    /* RESIZE_NONE: a different size is an error naming the file, or a
     * skipped "bad" file. */
    o = fopts(1, 4, 4, DISTILL_RESIZE_NONE, 0);
    assert_int_equal(distill_dataset_from_folder(&ds, tp("rs"), &o), DISTILL_EFORMAT);
    assert_null(ds);
    assert_non_null(strstr(distill_last_error(), "b5.png"));
    o.skip_bad = 1;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("rs"), &o), DISTILL_OK);
    assert_int_equal(distill_dataset_size(ds), 1);
    int64_t not_png, bad;
    assert_int_equal(distill_dataset_skipped(ds, &not_png, &bad), 2);
    assert_int_equal(bad, 2);
    assert_int_equal(not_png, 0);
    distill_dataset_free(ds);
}

/* ------------------------------------------- what else a folder holds */

static void test_folder_contents(void **state)
{
    (void)state;
    uint8_t px[4] = {1, 2, 3, 4};
    mkdirs("f/cat");
    mkdirs("f/dog");
    mkdirs("f/empty");
    mkdirs("f/dog/nested.png"); /* a folder named like an image */
    write_gray8("f/cat/2.png", 2, 2, px);
    write_gray8("f/cat/1.PNG", 2, 2, px);
    write_gray8("f/dog/x.png", 2, 2, px);
    write_text("f/cat/notes.txt", "not an image");
    write_text("f/cat/.hidden", "x");
    write_text("f/README", "a file in root");

    distill_folder_options o = fopts(1, 2, 2, DISTILL_RESIZE_NONE, 0);
    distill_dataset *ds = NULL;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("f"), &o), DISTILL_OK);
    assert_int_equal(distill_dataset_size(ds), 3);
    assert_int_equal(distill_dataset_num_classes(ds), 3);
    assert_string_equal(distill_dataset_class_name(ds, 0), "cat");
    assert_string_equal(distill_dataset_class_name(ds, 1), "dog");
    assert_string_equal(distill_dataset_class_name(ds, 2), "empty");
    assert_int_equal(distill_dataset_class_size(ds, 0), 2);
    assert_int_equal(distill_dataset_class_size(ds, 1), 1);
    assert_int_equal(distill_dataset_class_size(ds, 2), 0);
    int64_t not_png, bad;
    assert_int_equal(distill_dataset_skipped(ds, &not_png, &bad), 4);
    assert_int_equal(not_png, 4); /* README, notes.txt, .hidden, nested.png/ */
    assert_int_equal(bad, 0);
    int32_t labels[3];
    float img[4];
    for (int i = 0; i < 3; i++)
        assert_int_equal(distill_dataset_get(ds, i, img, 4, &labels[i]), DISTILL_OK);
    assert_int_equal(labels[0], 0);
    assert_int_equal(labels[1], 0);
    assert_int_equal(labels[2], 1);
    distill_dataset_free(ds);

    /* A corrupt PNG fails the load, naming the file; skip_bad skips it. */
    write_text("f/dog/broken.png", "\x89PNG\r\n\x1a\n this is not a PNG stream at all");
    o.skip_bad = 0;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("f"), &o), DISTILL_EFORMAT);
    assert_null(ds);
    assert_non_null(strstr(distill_last_error(), "dog/broken.png"));
    write_text("f/dog/text.png", "plain text named .png");
    o.skip_bad = 1;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("f"), &o), DISTILL_OK);
    assert_int_equal(distill_dataset_size(ds), 3);
    assert_int_equal(distill_dataset_skipped(ds, &not_png, &bad), 6);
    assert_int_equal(bad, 2);
    distill_dataset_free(ds);
    o.skip_bad = 0;
    unlink(tp("f/dog/broken.png"));
    assert_int_equal(distill_dataset_from_folder(&ds, tp("f"), &o), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "not a PNG"));
    unlink(tp("f/dog/text.png"));

    /* A valid PNG cut short. */
    uint8_t big[64 * 64];
    for (int i = 0; i < 64 * 64; i++)
        big[i] = (uint8_t)(i * 7919 % 251);
    write_gray8("f/dog/whole.png", 64, 64, big);
    FILE *f = fopen(tp("f/dog/whole.png"), "rb");
    unsigned char buf[8192];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    f = fopen(tp("f/dog/cut.png"), "wb");
    fwrite(buf, 1, len / 2, f);
    fclose(f);
    o.resize = DISTILL_RESIZE_BILINEAR;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("f"), &o), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "cut.png"));
    unlink(tp("f/dog/cut.png"));
    unlink(tp("f/dog/whole.png"));

    /* An unreadable file (root reads it anyway: then skip this check). */
    write_gray8("f/dog/locked.png", 2, 2, px);
    chmod(tp("f/dog/locked.png"), 0);
    if (geteuid() != 0) {
        assert_int_equal(distill_dataset_from_folder(&ds, tp("f"), &o), DISTILL_EIO);
        assert_non_null(strstr(distill_last_error(), "locked.png"));
        o.skip_bad = 1;
        assert_int_equal(distill_dataset_from_folder(&ds, tp("f"), &o), DISTILL_OK);
        assert_int_equal(distill_dataset_skipped(ds, NULL, &bad), 5);
        assert_int_equal(bad, 1);
        distill_dataset_free(ds);
    }
    chmod(tp("f/dog/locked.png"), 0644);
}

/* A PNG header claiming 16000 x 16000 pixels in a file of a few dozen
 * bytes: refused before anything of that size is allocated. */
static void put_chunk(FILE *f, const char *type, const unsigned char *data, unsigned len)
{
    unsigned char head[8] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                             (unsigned char)(len >> 8), (unsigned char)len};
    memcpy(head + 4, type, 4);
    fwrite(head, 1, 8, f);
    fwrite(data, 1, len, f);
    uLong crc = crc32(0, head + 4, 4);
    crc = crc32(crc, data, len);
    unsigned char c[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
                          (unsigned char)(crc >> 8), (unsigned char)crc};
    fwrite(c, 1, 4, f);
}

static void test_lying_header(void **state)
{
    (void)state;
    mkdirs("lie/c");
    const unsigned side[2] = {16000, 100000};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(tp("lie/c/huge.png"), "wb");
        fwrite("\x89PNG\r\n\x1a\n", 1, 8, f);
        unsigned char ihdr[13] = {(unsigned char)(side[i] >> 24), (unsigned char)(side[i] >> 16),
                                  (unsigned char)(side[i] >> 8), (unsigned char)side[i]};
        memcpy(ihdr + 4, ihdr, 4);
        ihdr[8] = 8;  /* depth */
        ihdr[9] = 2;  /* RGB */
        put_chunk(f, "IHDR", ihdr, 13);
        put_chunk(f, "IEND", (const unsigned char *)"", 0);
        fclose(f);
        distill_dataset *ds = NULL;
        double t0 = now();
        assert_int_equal(distill_dataset_from_folder(&ds, tp("lie"), NULL), DISTILL_EFORMAT);
        assert_true(now() - t0 < 1.0);
        assert_non_null(strstr(distill_last_error(), "huge.png"));
    }
}

static void test_folder_errors(void **state)
{
    (void)state;
    distill_dataset *ds = (distill_dataset *)1;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("missing"), NULL), DISTILL_ENOTFOUND);
    assert_null(ds);
    assert_non_null(strstr(distill_last_error(), "missing"));
    write_text("plainfile", "x");
    assert_int_equal(distill_dataset_from_folder(&ds, tp("plainfile"), NULL), DISTILL_ENOTFOUND);
    mkdirs("noclass");
    write_text("noclass/a.png", "x");
    assert_int_equal(distill_dataset_from_folder(&ds, tp("noclass"), NULL), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "no class folders"));
    mkdirs("noimage/a");
    mkdirs("noimage/b");
    assert_int_equal(distill_dataset_from_folder(&ds, tp("noimage"), NULL), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "no readable PNG"));

    distill_folder_options o = fopts(2, 0, 0, 0, 0);
    assert_int_equal(distill_dataset_from_folder(&ds, tp("noimage"), &o), DISTILL_EINVAL);
    o = fopts(1, 4, 0, 0, 0);
    assert_int_equal(distill_dataset_from_folder(&ds, tp("noimage"), &o), DISTILL_EINVAL);
    o = fopts(1, 0, 0, 7, 0);
    assert_int_equal(distill_dataset_from_folder(&ds, tp("noimage"), &o), DISTILL_EINVAL);
    o = fopts(1, 0, 0, 0, 0);
    o.version = DISTILL_FOLDER_OPTIONS_VERSION + 8;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("noimage"), &o), DISTILL_EVERSION);
    assert_int_equal(distill_folder_options_init(&o, 0), DISTILL_EVERSION);
    assert_int_equal(distill_dataset_from_folder(&ds, NULL, NULL), DISTILL_EINVAL);
}

/* A folder dataset through the loader, normalized per channel. */
static void test_folder_loader(void **state)
{
    (void)state;
    write_kinds("kinds");
    distill_folder_options o = fopts(3, 0, 0, DISTILL_RESIZE_NONE, 0);
    distill_dataset *ds = NULL;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("kinds"), &o), DISTILL_OK);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    distill_loader_options lo;
    distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION);
    lo.batch_size = 4;
    lo.shuffle = 0;
    lo.norm_count = 3;
    lo.mean = mean;
    lo.std = std;
    distill_loader *ld = NULL;
    assert_int_equal(distill_loader_create(&ld, ds, &lo), DISTILL_OK);
    int64_t dims[4] = {4, 3, H, W};
    distill_tensor *x;
    distill_tensor_create(&x, 4, dims);
    int32_t y[4];
    int n, seen = 0;
    float ref[3 * W * H];
    while (distill_loader_next(ld, x, y, &n) == DISTILL_OK && n > 0) {
        for (int j = 0; j < n; j++, seen++) {
            assert_int_equal(y[j], seen);
            distill_dataset_get(ds, seen, ref, 3 * W * H, NULL);
            const float *got = distill_tensor_data(x) + j * 3 * W * H;
            for (int i = 0; i < 3 * W * H; i++) {
                int c = i / (W * H);
                assert_true(got[i] == (ref[i] - mean[c]) / std[c]);
            }
        }
    }
    assert_int_equal(seen, NKINDS);
    distill_tensor_free(x);
    distill_loader_free(ld);
    distill_dataset_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_colour_types, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_interlaced_large, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_resize_and_crop, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_folder_contents, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_lying_header, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_folder_errors, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_folder_loader, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

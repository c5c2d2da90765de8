/*
 * test_data_jpeg.c - JPEG images in image folders and list files: baseline,
 * progressive, gray, colour, CMYK, EXIF orientation, decoding by the magic
 * bytes, list files in both forms, progress, and every kind of bad input.
 * The JPEG files are written here with libjpeg's compressor, from known
 * pixels.
 */
#define _XOPEN_SOURCE 700

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>

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
    snprintf(tmpdir, sizeof tmpdir, "%s/distill_jpeg_XXXXXX", base && *base ? base : "/tmp");
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

static void write_bytes(const char *rel, const void *data, size_t len)
{
    FILE *f = fopen(tp(rel), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void write_text(const char *rel, const char *text)
{
    write_bytes(rel, text, strlen(text));
}

/* The whole file tmpdir/rel (malloc'd) and its size. */
static unsigned char *slurp(const char *rel, size_t *len)
{
    FILE *f = fopen(tp(rel), "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* How a test JPEG is written. */
typedef struct jspec {
    int comps;          /* 1 gray, 3 RGB, 4 CMYK */
    int ycck;           /* with comps 4: stored as YCCK */
    int progressive;
    int quality;
    int subsample;      /* nonzero: libjpeg's default 2x2 chroma subsampling, else 4:4:4 */
    const unsigned char *app1;  /* an APP1 segment to add (EXIF), or NULL */
    unsigned app1_len;
} jspec;

/* Write tmpdir/rel as a w x h JPEG of px (h * w * comps bytes, HWC). */
static void write_jpeg(const char *rel, int w, int h, const unsigned char *px, const jspec *s)
{
    FILE *f = fopen(tp(rel), "wb");
    assert_non_null(f);
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = s->comps;
    c.in_color_space = s->comps == 1 ? JCS_GRAYSCALE : s->comps == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&c);
    if (s->comps == 4 && s->ycck)
        jpeg_set_colorspace(&c, JCS_YCCK);
    jpeg_set_quality(&c, s->quality ? s->quality : 95, TRUE);
    if (!s->subsample)
        for (int k = 0; k < c.num_components; k++)
            c.comp_info[k].h_samp_factor = c.comp_info[k].v_samp_factor = 1;
    if (s->progressive)
        jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    if (s->app1)
        jpeg_write_marker(&c, JPEG_APP0 + 1, s->app1, s->app1_len);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * s->comps);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
}

/* An 8-bit gray or RGB PNG (for the "named .jpg" case). */
static void write_png8(const char *rel, int w, int h, int comps, const unsigned char *px)
{
    FILE *f = fopen(tp(rel), "wb");
    assert_non_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png)))
        fail_msg("libpng failed writing %s", rel);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 comps == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, (png_const_bytep)(px + (size_t)y * w * comps));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
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

/* Load root (must succeed) with opts. */
static distill_dataset *load(const char *rel, const distill_folder_options *o)
{
    distill_dataset *ds = NULL;
    int rc = distill_dataset_from_folder(&ds, tp(rel), o);
    if (rc)
        fail_msg("loading %s: %s", rel, distill_last_error());
    return ds;
}

/* Sample i of ds as floats (malloc'd), with its dims. */
static float *sample(const distill_dataset *ds, int64_t i, int64_t dims[3], int32_t *label)
{
    assert_int_equal(distill_dataset_sample_dims(ds, dims), DISTILL_OK);
    size_t n = (size_t)(dims[0] * dims[1] * dims[2]);
    float *img = malloc(n * sizeof *img);
    assert_int_equal(distill_dataset_get(ds, i, img, n, label), DISTILL_OK);
    return img;
}

/* Compare a (C, H, W) float sample with HWC bytes: the largest and the
 * mean absolute difference, in byte units. */
static void diff_hwc(const float *img, const unsigned char *px, int c, int h, int w,
                     double *max, double *mean)
{
    double m = 0, sum = 0;
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double d = fabs(img[((size_t)k * h + y) * w + x] * 255.0 -
                                px[((size_t)y * w + x) * c + k]);
                sum += d;
                if (d > m)
                    m = d;
            }
    *max = m;
    *mean = sum / (c * h * w);
}

/* A smooth test picture: h * w * c bytes. */
static unsigned char *gradient(int w, int h, int c)
{
    unsigned char *p = malloc((size_t)w * h * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                p[((size_t)y * w + x) * c + k] =
                    (unsigned char)(20 + (x * 120) / w + (y * 50) / h + k * 20); /* <= 230 */
    return p;
}

/* Flat 8 x 8 blocks of colour `cols[(by * bw + bx) % ncols]`. */
static unsigned char *blocks(int w, int h, int c, const unsigned char (*cols)[4], int ncols)
{
    unsigned char *p = malloc((size_t)w * h * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                p[((size_t)y * w + x) * c + k] = cols[((y / 8) * (w / 8) + x / 8) % ncols][k];
    return p;
}

/* ------------------------------------------------- kinds of JPEG file */

static const unsigned char flat_cols[4][4] = {
    {200, 30, 40, 0}, {20, 180, 60, 0}, {50, 60, 220, 0}, {240, 240, 240, 0}};

static void test_kinds(void **state)
{
    (void)state;
    enum { W = 24, H = 16 };
    unsigned char *grad3 = gradient(W, H, 3), *grad1 = gradient(W, H, 1);
    unsigned char *flat3 = blocks(W, H, 3, flat_cols, 4);
    mkdirs("k/a_baseline_rgb");
    mkdirs("k/b_progressive_rgb");
    mkdirs("k/c_baseline_gray");
    mkdirs("k/d_progressive_gray");
    mkdirs("k/e_flat_rgb");
    mkdirs("k/f_subsampled_rgb");
    jspec base3 = {3, 0, 0, 95, 0, NULL, 0}, prog3 = {3, 0, 1, 95, 0, NULL, 0};
    jspec base1 = {1, 0, 0, 95, 0, NULL, 0}, prog1 = {1, 0, 1, 95, 0, NULL, 0};
    jspec flat = {3, 0, 0, 100, 0, NULL, 0}, sub = {3, 0, 1, 90, 1, NULL, 0};
    write_jpeg("k/a_baseline_rgb/x.jpg", W, H, grad3, &base3);
    write_jpeg("k/b_progressive_rgb/x.jpg", W, H, grad3, &prog3);
    write_jpeg("k/c_baseline_gray/x.jpg", W, H, grad1, &base1);
    write_jpeg("k/d_progressive_gray/x.jpg", W, H, grad1, &prog1);
    write_jpeg("k/e_flat_rgb/x.jpg", W, H, flat3, &flat);
    write_jpeg("k/f_subsampled_rgb/x.jpg", W, H, grad3, &sub);

    distill_folder_options o = fopts(3, 0, 0, DISTILL_RESIZE_NONE, 0);
    distill_dataset *ds = load("k", &o);
    assert_int_equal(distill_dataset_size(ds), 6);
    assert_int_equal(distill_dataset_skipped(ds, NULL, NULL), 0);
    /* within JPEG's loss: limits in byte units, measured once for these
     * pictures (quality 95, 90 subsampled, 100 for the flat one; measured
     * max 1, 1, 0, 0, 1, 2 and mean 0.67, 0.67, 0, 0, 0.22, 0.75) with a
     * margin */
    const double max_err[6] = {2, 2, 1, 1, 1, 4}, mean_err[6] = {1, 1, 0.5, 0.5, 0.5, 1.5};
    const unsigned char *want[6] = {grad3, grad3, grad1, grad1, flat3, grad3};
    for (int i = 0; i < 6; i++) {
        int64_t dims[3];
        int32_t label;
        float *img = sample(ds, i, dims, &label);
        assert_int_equal(label, i);
        assert_int_equal(dims[0], 3);
        assert_int_equal(dims[1], H);
        assert_int_equal(dims[2], W);
        double mx, mean;
        if (i == 2 || i == 3) {
            /* gray: the three channels are the same plane */
            for (int k = 1; k < 3; k++)
                assert_memory_equal(img, img + (size_t)k * H * W, H * W * sizeof *img);
            diff_hwc(img, want[i], 1, H, W, &mx, &mean);
        } else {
            diff_hwc(img, want[i], 3, H, W, &mx, &mean);
        }
        if (mx > max_err[i] || mean > mean_err[i])
            fail_msg("%s: max error %.2f, mean %.3f (limits %.1f, %.2f)",
                     distill_dataset_class_name(ds, i), mx, mean, max_err[i], mean_err[i]);
        free(img);
    }
    distill_dataset_free(ds);

    /* one channel: colour becomes BT.601 luma, gray stays as it is */
    o.channels = 1;
    ds = load("k", &o);
    int64_t dims[3];
    float *img = sample(ds, 4, dims, NULL);
    assert_int_equal(dims[0], 1);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const unsigned char *p = flat3 + ((size_t)y * W + x) * 3;
            double luma = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
            assert_true(fabs(img[y * W + x] * 255.0 - luma) < 2.0);
        }
    free(img);
    img = sample(ds, 2, dims, NULL);
    double mx, mean;
    diff_hwc(img, grad1, 1, H, W, &mx, &mean);
    assert_true(mx <= 3 && mean <= 1);
    free(img);
    distill_dataset_free(ds);
    free(grad3);
    free(grad1);
    free(flat3);
}

/* A JPEG decodes to the same pixels through the folder reader as through
 * libjpeg itself (the independent reference), for the flat picture exactly
 * up to the colour conversion's rounding. */
static void test_flat_near_exact(void **state)
{
    (void)state;
    enum { W = 16, H = 16 };
    static const unsigned char one[1][4] = {{90, 140, 200, 0}};
    unsigned char *px = blocks(W, H, 3, one, 1);
    mkdirs("flat/c");
    jspec s = {3, 0, 0, 100, 0, NULL, 0};
    write_jpeg("flat/c/f.jpeg", W, H, px, &s);
    distill_folder_options o = fopts(3, 0, 0, DISTILL_RESIZE_NONE, 0);
    distill_dataset *ds = load("flat", &o);
    int64_t dims[3];
    float *img = sample(ds, 0, dims, NULL);
    double mx, mean;
    diff_hwc(img, px, 3, H, W, &mx, &mean);
    assert_true(mx <= 1.0 + 1e-4);
    free(img);
    distill_dataset_free(ds);
    free(px);
}

/* ------------------------------------------------------------ CMYK */

static void test_cmyk_refused(void **state)
{
    (void)state;
    enum { W = 8, H = 8 };
    unsigned char px[W * H * 4];
    for (int i = 0; i < W * H * 4; i++)
        px[i] = (unsigned char)(i * 7);
    mkdirs("cmyk/c");
    for (int ycck = 0; ycck <= 1; ycck++) {
        jspec s = {4, ycck, 0, 90, 0, NULL, 0};
        write_jpeg("cmyk/c/print.jpg", W, H, px, &s);
        distill_dataset *ds = (distill_dataset *)1;
        assert_int_equal(distill_dataset_from_folder(&ds, tp("cmyk"), NULL), DISTILL_EFORMAT);
        assert_null(ds);
        const char *msg = distill_last_error();
        assert_non_null(strstr(msg, "print.jpg"));
        assert_non_null(strstr(msg, ycck ? "YCCK" : "CMYK"));
        assert_non_null(strstr(msg, "not supported"));
    }
}

/* ---------------------------------------------------- EXIF orientation */

/* An APP1 Exif segment with IFD0 holding `ntags` entries, the orientation
 * `o` first; `le` little-endian ("II") or big-endian ("MM"). */
static unsigned exif(unsigned char *b, int o, int le, unsigned count_claimed)
{
    unsigned n = 0;
    memcpy(b, "Exif\0\0", 6);
    n = 6;
#define P16(v) (le ? (b[n] = (unsigned char)(v), b[n + 1] = (unsigned char)((v) >> 8))      \
                   : (b[n] = (unsigned char)((v) >> 8), b[n + 1] = (unsigned char)(v)), n += 2)
#define P32(v) (le ? (P16((v) & 0xFFFF), P16((unsigned)(v) >> 16)) \
                   : (P16((unsigned)(v) >> 16), P16((v) & 0xFFFF)))
    b[n++] = le ? 'I' : 'M';
    b[n++] = le ? 'I' : 'M';
    P16(42);
    P32(8);
    P16(count_claimed);
    P16(0x0112); /* orientation */
    P16(3);      /* SHORT */
    P32(1);
    P16((unsigned)o);
    P16(0);
    P32(0); /* no next IFD */
#undef P16
#undef P32
    return n;
}

static void test_exif_orientation(void **state)
{
    (void)state;
    enum { S = 16 };
    /* quadrants: top-left red, top-right green, bottom-left blue,
     * bottom-right white */
    static const unsigned char q[4][4] = {
        {230, 20, 20, 0}, {20, 230, 20, 0}, {20, 20, 230, 0}, {235, 235, 235, 0}};
    unsigned char px[2 * S * S * 3]; /* 2S wide, S tall: shows whether sides swap */
    const int W = 2 * S, H = S;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            memcpy(px + ((size_t)y * W + x) * 3, q[(y >= H / 2) * 2 + (x >= W / 2)], 3);
    mkdirs("ex/c");
    unsigned char app[64];
    /* the colour shown in each quadrant (TL, TR, BL, BR) for each case */
    struct {
        const char *name;
        int orientation, le, count;
        int ow, oh, quad[4];
    } cases[] = {
        {"ex/c/a_none.jpg", 0, 0, 1, 32, 16, {0, 1, 2, 3}},
        {"ex/c/b_rot180_le.jpg", 3, 1, 1, 32, 16, {3, 2, 1, 0}},
        {"ex/c/c_cw90_be.jpg", 6, 0, 1, 16, 32, {2, 0, 3, 1}},
        {"ex/c/d_ccw90_le.jpg", 8, 1, 1, 16, 32, {1, 3, 0, 2}},
        {"ex/c/e_mirror.jpg", 2, 0, 1, 32, 16, {1, 0, 3, 2}},
        /* an IFD claiming 60000 entries in a 40-byte segment: read as far
         * as the segment goes, the orientation entry is still found */
        {"ex/c/f_cw90_count.jpg", 6, 1, 60000, 16, 32, {2, 0, 3, 1}},
        /* orientation 9 is not a valid value: ignored */
        {"ex/c/g_bad_value.jpg", 9, 0, 1, 32, 16, {0, 1, 2, 3}},
    };
    const int ncases = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < ncases; i++) {
        jspec s = {3, 0, i % 2, 100, 0, NULL, 0};
        if (cases[i].orientation) {
            s.app1 = app;
            s.app1_len = exif(app, cases[i].orientation, cases[i].le, (unsigned)cases[i].count);
        }
        write_jpeg(cases[i].name, W, H, px, &s);
    }
    /* an Exif segment cut short (10 bytes of TIFF header): ignored */
    {
        unsigned n = exif(app, 6, 0, 1);
        (void)n;
        jspec s = {3, 0, 0, 100, 0, app, 6 + 10};
        write_jpeg("ex/c/h_cut_exif.jpg", W, H, px, &s);
    }
    distill_folder_options o = fopts(3, 0, 0, DISTILL_RESIZE_NONE, 0);
    for (int i = 0; i <= ncases; i++) {
        /* one image per load: sizes differ */
        const char *name = i < ncases ? cases[i].name : "ex/c/h_cut_exif.jpg";
        int ow = i < ncases ? cases[i].ow : 32, oh = i < ncases ? cases[i].oh : 16;
        const int *quad = i < ncases ? cases[i].quad : (const int[4]){0, 1, 2, 3};
        mkdirs("one/c");
        char target[300];
        snprintf(target, sizeof target, "%s", tp("one/c/img.jpg"));
        assert_int_equal(rename(tp(name), target), 0);
        distill_dataset *ds = load("one", &o);
        int64_t dims[3];
        float *img = sample(ds, 0, dims, NULL);
        if (dims[2] != ow || dims[1] != oh)
            fail_msg("%s: %lld x %lld, expected %d x %d", name, (long long)dims[2],
                     (long long)dims[1], ow, oh);
        for (int qy = 0; qy < 2; qy++)
            for (int qx = 0; qx < 2; qx++) {
                /* the centre pixel of the shown quadrant */
                int x = qx * ow / 2 + ow / 4, y = qy * oh / 2 + oh / 4;
                const unsigned char *c = q[quad[qy * 2 + qx]];
                for (int k = 0; k < 3; k++) {
                    double got = img[((size_t)k * oh + y) * ow + x] * 255.0;
                    if (fabs(got - c[k]) > 3)
                        fail_msg("%s quadrant %d,%d channel %d: %.1f, expected %d", name, qx,
                                 qy, k, got, c[k]);
                }
            }
        free(img);
        distill_dataset_free(ds);
        unlink(target);
    }
}

/* ------------------------------------------- magic bytes, extensions */

static void test_magic_and_names(void **state)
{
    (void)state;
    enum { W = 8, H = 8 };
    static const unsigned char one[1][4] = {{10, 100, 200, 0}};
    unsigned char *px = blocks(W, H, 3, one, 1);
    mkdirs("m/a");
    jspec s = {3, 0, 0, 100, 0, NULL, 0};
    write_jpeg("m/a/1_jpeg_named.png", W, H, px, &s); /* a JPEG named .png */
    write_png8("m/a/2_png_named.jpg", W, H, 3, px);   /* a PNG named .jpg */
    write_jpeg("m/a/3_upper.JPG", W, H, px, &s);
    write_jpeg("m/a/4_mixed.JpEg", W, H, px, &s);
    write_png8("m/a/5_upper.PNG", W, H, 3, px);
    write_jpeg("m/a/6_jpe.jpe", W, H, px, &s);
    write_jpeg("m/a/7_not_image.gif", W, H, px, &s);  /* not an image extension: skipped */
    write_jpeg("m/a/8_no_extension", W, H, px, &s);
    distill_folder_options o = fopts(3, 0, 0, DISTILL_RESIZE_NONE, 0);
    distill_dataset *ds = load("m", &o);
    assert_int_equal(distill_dataset_size(ds), 6);
    int64_t not_png, bad;
    assert_int_equal(distill_dataset_skipped(ds, &not_png, &bad), 2);
    assert_int_equal(not_png, 2);
    assert_int_equal(bad, 0);
    for (int i = 0; i < 6; i++) {
        int64_t dims[3];
        float *img = sample(ds, i, dims, NULL);
        double mx, mean;
        diff_hwc(img, px, 3, H, W, &mx, &mean);
        if (mx > 2)
            fail_msg("image %d: max error %.2f", i, mx);
        free(img);
    }
    distill_dataset_free(ds);

    /* a text file named .jpg is neither PNG nor JPEG, whatever its name */
    write_text("m/a/9_text.jpg", "this is not an image");
    ds = (distill_dataset *)1;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("m"), &o), DISTILL_EFORMAT);
    assert_null(ds);
    assert_non_null(strstr(distill_last_error(), "9_text.jpg"));
    assert_non_null(strstr(distill_last_error(), "not a PNG or JPEG"));
    free(px);
}

/* -------------------------------------------------------- bad input */

/* A valid JPEG whose SOF says w x h (patched in place). */
static void patch_sof(unsigned char *b, size_t len, unsigned w, unsigned h)
{
    for (size_t i = 2; i + 9 < len; i++)
        if (b[i] == 0xFF && (b[i + 1] == 0xC0 || b[i + 1] == 0xC2)) {
            b[i + 5] = (unsigned char)(h >> 8);
            b[i + 6] = (unsigned char)h;
            b[i + 7] = (unsigned char)(w >> 8);
            b[i + 8] = (unsigned char)w;
            return;
        }
    fail_msg("no SOF marker");
}

/* Load folder "bad" holding good.jpg and the file `rel`: the load fails
 * with `status`, naming the file and saying `what`; with skip_bad it loads
 * good.jpg alone and counts one bad file. */
static void expect_bad(const char *rel, int status, const char *what)
{
    distill_folder_options o = fopts(3, 0, 0, DISTILL_RESIZE_BILINEAR, 0);
    distill_dataset *ds = (distill_dataset *)1;
    double t0 = now();
    int rc = distill_dataset_from_folder(&ds, tp("bad"), &o);
    if (rc != status)
        fail_msg("%s: status %d, expected %d (%s)", rel, rc, status, distill_last_error());
    assert_true(now() - t0 < 2.0);
    assert_null(ds);
    const char *msg = distill_last_error();
    const char *base = strrchr(rel, '/') + 1;
    if (!strstr(msg, base) || (what && !strstr(msg, what)))
        fail_msg("%s: message '%s' should name the file and say '%s'", rel, msg,
                 what ? what : "");
    o.skip_bad = 1;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("bad"), &o), DISTILL_OK);
    assert_int_equal(distill_dataset_size(ds), 1);
    int64_t bad;
    assert_int_equal(distill_dataset_skipped(ds, NULL, &bad), 1);
    assert_int_equal(bad, 1);
    distill_dataset_free(ds);
    unlink(tp(rel));
}

static void test_bad_files(void **state)
{
    (void)state;
    enum { W = 64, H = 48 };
    unsigned char *px = gradient(W, H, 3);
    mkdirs("bad/c");
    mkdirs("src");
    jspec s = {3, 0, 0, 90, 0, NULL, 0}, p = {3, 0, 1, 90, 0, NULL, 0};
    write_jpeg("bad/c/a_good.jpg", W, H, px, &s);
    write_jpeg("src/base.jpg", W, H, px, &s);
    write_jpeg("src/prog.jpg", W, H, px, &p);
    size_t len, plen;
    unsigned char *b = slurp("src/base.jpg", &len);
    unsigned char *pb = slurp("src/prog.jpg", &plen);

    /* truncated: half of a baseline file, and of a progressive one */
    write_bytes("bad/c/cut.jpg", b, len / 2);
    expect_bad("bad/c/cut.jpg", DISTILL_EFORMAT, "JPEG");
    write_bytes("bad/c/cut_progressive.jpg", pb, plen * 2 / 3);
    expect_bad("bad/c/cut_progressive.jpg", DISTILL_EFORMAT, "JPEG");
    /* only the first bytes: no frame header at all */
    write_bytes("bad/c/stub.jpg", b, 20);
    expect_bad("bad/c/stub.jpg", DISTILL_EFORMAT, "JPEG");
    /* corrupt: the entropy-coded data overwritten with a marker */
    unsigned char *c = malloc(len);
    memcpy(c, b, len);
    memset(c + len - 200, 0xFF, 2);
    c[len - 199] = 0xD9; /* an early end-of-image */
    write_bytes("bad/c/corrupt.jpg", c, len);
    expect_bad("bad/c/corrupt.jpg", DISTILL_EFORMAT, "JPEG");
    /* a frame header with a zero-component count */
    memcpy(c, b, len);
    for (size_t i = 2; i + 9 < len; i++)
        if (c[i] == 0xFF && c[i + 1] == 0xC0) {
            c[i + 9] = 0;
            break;
        }
    write_bytes("bad/c/no_components.jpg", c, len);
    expect_bad("bad/c/no_components.jpg", DISTILL_EFORMAT, "JPEG");
    free(c);
    /* zero bytes */
    write_bytes("bad/c/empty.jpg", "", 0);
    expect_bad("bad/c/empty.jpg", DISTILL_EFORMAT, "empty");
    /* lying headers: 60000 x 60000, and 16000 x 16000 (within the side
     * limit, but far more than a 2 KB file can hold) - refused at once */
    unsigned char *lie = malloc(len);
    memcpy(lie, b, len);
    patch_sof(lie, len, 60000, 60000);
    write_bytes("bad/c/huge.jpg", lie, len);
    expect_bad("bad/c/huge.jpg", DISTILL_EFORMAT, "60000 x 60000");
    memcpy(lie, pb, plen);
    patch_sof(lie, plen, 16000, 16000);
    write_bytes("bad/c/huge_progressive.jpg", lie, plen);
    expect_bad("bad/c/huge_progressive.jpg", DISTILL_EFORMAT, "more than a file of");
    free(lie);
    /* unreadable (root reads it anyway: then skip this check) */
    write_bytes("bad/c/locked.jpg", b, len);
    chmod(tp("bad/c/locked.jpg"), 0);
    if (geteuid() != 0)
        expect_bad("bad/c/locked.jpg", DISTILL_EIO, NULL);
    else
        unlink(tp("bad/c/locked.jpg"));
    free(b);
    free(pb);
    free(px);
}

/* ------------------------------------------------------------ lists */

static void test_list_files(void **state)
{
    (void)state;
    enum { W = 8, H = 8 };
    static const unsigned char cols[3][4] = {{200, 0, 0, 0}, {0, 200, 0, 0}, {0, 0, 200, 0}};
    mkdirs("l/img/sub");
    mkdirs("l/abs");
    jspec s = {3, 0, 0, 100, 0, NULL, 0};
    for (int i = 0; i < 3; i++) {
        unsigned char *px = blocks(W, H, 3, &cols[i], 1);
        char rel[64];
        snprintf(rel, sizeof rel, "l/img/sub/c%d.jpg", i);
        write_jpeg(rel, W, H, px, &s);
        snprintf(rel, sizeof rel, "l/img/p%d.png", i);
        write_png8(rel, W, H, 3, px);
        free(px);
    }

    /* CSV, with a header, names, comments, blank lines, CRLF, quotes, and
     * paths relative to the list's folder */
    write_text("l/train.csv", "path,label\r\n"
                              "# a comment\r\n"
                              "img/sub/c0.jpg,zebra\r\n"
                              "\r\n"
                              "  img/p1.png , apple\r\n"
                              "\"img/sub/c2.jpg\",mango\r\n"
                              "img/p0.png,zebra\r\n");
    distill_folder_options o = fopts(3, 0, 0, DISTILL_RESIZE_NONE, 0);
    distill_dataset *ds = NULL;
    int rc = distill_dataset_from_list(&ds, tp("l/train.csv"), &o);
    if (rc)
        fail_msg("%s", distill_last_error());
    assert_int_equal(distill_dataset_size(ds), 4);
    assert_int_equal(distill_dataset_num_classes(ds), 3);
    assert_string_equal(distill_dataset_class_name(ds, 0), "apple");
    assert_string_equal(distill_dataset_class_name(ds, 1), "mango");
    assert_string_equal(distill_dataset_class_name(ds, 2), "zebra");
    const int want_label[4] = {2, 0, 1, 2}, want_col[4] = {0, 1, 2, 0};
    for (int i = 0; i < 4; i++) {
        int64_t dims[3];
        int32_t label;
        float *img = sample(ds, i, dims, &label);
        assert_int_equal(label, want_label[i]);
        for (int k = 0; k < 3; k++)
            assert_true(fabs(img[(size_t)k * H * W + 9] * 255.0 - cols[want_col[i]][k]) < 3);
        free(img);
    }
    distill_dataset_free(ds);

    /* space-separated, numbers as given (class 4 has no sample), an
     * absolute path, a path with a space */
    char text[2048];
    rename(tp("l/img/p2.png"), tp("l/img/p 2.png"));
    snprintf(text, sizeof text, "img/sub/c1.jpg 4\n%s\t0\nimg/p 2.png  1\n",
             tp("l/img/sub/c0.jpg"));
    write_text("l/train.txt", text);
    rc = distill_dataset_from_list(&ds, tp("l/train.txt"), &o);
    if (rc)
        fail_msg("%s", distill_last_error());
    assert_int_equal(distill_dataset_size(ds), 3);
    assert_int_equal(distill_dataset_num_classes(ds), 5);
    assert_null(distill_dataset_class_name(ds, 0));
    const int lab2[3] = {4, 0, 1}, col2[3] = {1, 0, 2};
    for (int i = 0; i < 3; i++) {
        int64_t dims[3];
        int32_t label;
        float *img = sample(ds, i, dims, &label);
        assert_int_equal(label, lab2[i]);
        assert_true(fabs(img[9] * 255.0 - cols[col2[i]][0]) < 3);
        free(img);
    }
    assert_int_equal(distill_dataset_class_size(ds, 4), 1);
    assert_int_equal(distill_dataset_class_size(ds, 3), 0);
    distill_dataset_free(ds);

    /* a CSV with numbers, and the list in the current folder's terms */
    write_text("l/nums.csv", "img/sub/c0.jpg,1\nimg/sub/c1.jpg,0\n");
    rc = distill_dataset_from_list(&ds, tp("l/nums.csv"), &o);
    assert_int_equal(rc, DISTILL_OK);
    assert_int_equal(distill_dataset_num_classes(ds), 2);
    int32_t label;
    int64_t dims[3];
    free(sample(ds, 0, dims, &label));
    assert_int_equal(label, 1);
    distill_dataset_free(ds);

    /* a missing image: an error naming the list, the line and the image;
     * with skip_bad skipped and counted as bad */
    write_text("l/missing.csv", "path,label\nimg/sub/c0.jpg,a\nimg/nothere.jpg,b\n");
    ds = (distill_dataset *)1;
    assert_int_equal(distill_dataset_from_list(&ds, tp("l/missing.csv"), &o), DISTILL_ENOTFOUND);
    assert_null(ds);
    const char *msg = distill_last_error();
    assert_non_null(strstr(msg, "missing.csv"));
    assert_non_null(strstr(msg, "line 3"));
    assert_non_null(strstr(msg, "nothere.jpg"));
    o.skip_bad = 1;
    assert_int_equal(distill_dataset_from_list(&ds, tp("l/missing.csv"), &o), DISTILL_OK);
    assert_int_equal(distill_dataset_size(ds), 1);
    int64_t not_png, bad;
    assert_int_equal(distill_dataset_skipped(ds, &not_png, &bad), 1);
    assert_int_equal(bad, 1);
    assert_int_equal(not_png, 0);
    assert_int_equal(distill_dataset_num_classes(ds), 2); /* "b" is still a class */
    distill_dataset_free(ds);
    o.skip_bad = 0;

    /* malformed lists */
    struct {
        const char *text;
        int status;
        const char *what;
    } badl[] = {
        {"img/sub/c0.jpg,a\nimg/sub/c1.jpg\n", DISTILL_EFORMAT, "line 2"},
        {"img/sub/c0.jpg,\n", DISTILL_EFORMAT, "label is empty"},
        {",a\n", DISTILL_EFORMAT, "line 1"},
        {"# only a comment\n\n", DISTILL_EFORMAT, "no entries"},
        {"path,label\n", DISTILL_EFORMAT, "no entries"},
        {"", DISTILL_EFORMAT, "no entries"},
        {"img/sub\t3\n", DISTILL_ENOTFOUND, "not a regular file"},
    };
    for (size_t i = 0; i < sizeof badl / sizeof badl[0]; i++) {
        write_text("l/bad.csv", badl[i].text);
        rc = distill_dataset_from_list(&ds, tp("l/bad.csv"), &o);
        if (rc != badl[i].status || !strstr(distill_last_error(), badl[i].what) ||
            !strstr(distill_last_error(), "bad.csv"))
            fail_msg("list %zu: status %d, '%s'", i, rc, distill_last_error());
    }
    write_bytes("l/nul.csv", "a.jpg,1\n\0", 9);
    assert_int_equal(distill_dataset_from_list(&ds, tp("l/nul.csv"), &o), DISTILL_EFORMAT);
    assert_int_equal(distill_dataset_from_list(&ds, tp("l/none.csv"), &o), DISTILL_ENOTFOUND);
    assert_non_null(strstr(distill_last_error(), "none.csv"));
    assert_int_equal(distill_dataset_from_list(&ds, NULL, &o), DISTILL_EINVAL);
    assert_int_equal(distill_dataset_from_list(NULL, tp("l/nums.csv"), &o), DISTILL_EINVAL);
    o.version = DISTILL_FOLDER_OPTIONS_VERSION + 8;
    assert_int_equal(distill_dataset_from_list(&ds, tp("l/nums.csv"), &o), DISTILL_EVERSION);
}

/* --------------------------------------------------------- progress */

typedef struct calls {
    int n, scan, decode, order_ok, stop_at;
    int64_t last_done, last_total;
} calls;

static int on_progress(int stage, int64_t done, int64_t total, void *payload)
{
    calls *c = payload;
    c->n++;
    if (stage == DISTILL_FOLDER_SCAN) {
        c->scan++;
        if (c->decode)
            c->order_ok = 0; /* scanning after decoding began */
    } else {
        assert_int_equal(stage, DISTILL_FOLDER_DECODE);
        if (c->decode && done < c->last_done)
            c->order_ok = 0;
        c->decode++;
        c->last_done = done;
        c->last_total = total;
    }
    return c->stop_at && c->n >= c->stop_at;
}

static void test_progress(void **state)
{
    (void)state;
    enum { W = 8, H = 8 };
    static const unsigned char one[1][4] = {{10, 100, 200, 0}};
    unsigned char *px = blocks(W, H, 3, one, 1);
    jspec s = {3, 0, 0, 90, 0, NULL, 0};
    const char *names[5] = {"p/a/1.jpg", "p/a/2.jpg", "p/b/3.jpg", "p/b/4.jpg", "p/b/5.jpg"};
    mkdirs("p/a");
    mkdirs("p/b");
    for (int i = 0; i < 5; i++)
        write_jpeg(names[i], W, H, px, &s);
    calls c = {0, 0, 0, 1, 0, 0, 0};
    distill_folder_options o = fopts(3, 0, 0, DISTILL_RESIZE_NONE, 0);
    o.progress = on_progress;
    o.progress_payload = &c;
    distill_dataset *ds = load("p", &o);
    assert_int_equal(c.scan, 2);       /* one call per class folder */
    assert_int_equal(c.decode, 6);     /* 0 of 5, then one per file */
    assert_true(c.order_ok);
    assert_int_equal(c.last_done, 5);
    assert_int_equal(c.last_total, 5);
    distill_dataset_free(ds);
    /* a nonzero return cancels */
    calls stop = {0, 0, 0, 1, 4, 0, 0};
    o.progress_payload = &stop;
    ds = (distill_dataset *)1;
    assert_int_equal(distill_dataset_from_folder(&ds, tp("p"), &o), DISTILL_ECANCELLED);
    assert_null(ds);
    assert_int_equal(stop.n, 4);
    /* list files report too */
    write_text("p/list.txt", "a/1.jpg 0\nb/3.jpg 1\n");
    calls lc = {0, 0, 0, 1, 0, 0, 0};
    o.progress_payload = &lc;
    assert_int_equal(distill_dataset_from_list(&ds, tp("p/list.txt"), &o), DISTILL_OK);
    assert_true(lc.scan >= 1);
    assert_int_equal(lc.decode, 3);
    assert_int_equal(lc.last_done, 2);
    distill_dataset_free(ds);
    free(px);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kinds, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_flat_near_exact, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_cmyk_refused, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_exif_orientation, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_magic_and_names, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_bad_files, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_list_files, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_progress, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

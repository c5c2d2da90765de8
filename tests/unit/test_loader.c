/*
 * test_loader.c - the loader's transforms against naive references written
 * here (bilinear Resize in double, CenterCrop boxes, RandomResizedCrop
 * boxes and their resampling), byte stores against float stores, and
 * batches that are the same bit for bit with 0..N worker threads, with and
 * without prefetch, in memory or streamed from a decoder (a synthetic one
 * here; the PNG folder's in test_loader_folder.c).
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
#include "data/data_internal.h"
#include "util/util.h"

/* ------------------------------------------------------------- helpers */

static uint8_t byte_of(int64_t i, int64_t k)
{
    uint64_t z = (uint64_t)i * 0x9E3779B97F4A7C15ull + (uint64_t)k * 0xBF58476D1CE4E5B9ull;
    z ^= z >> 29;
    z *= 0x94D049BB133111EBull;
    return (uint8_t)(z >> 56);
}

/* n samples (c, h, w) of byte_of(i, k), labels i % 3. */
static uint8_t *make_bytes(int64_t n, int64_t c, int64_t h, int64_t w, int32_t **labels)
{
    size_t e = (size_t)(c * h * w);
    uint8_t *b = malloc((size_t)n * e);
    *labels = malloc((size_t)n * sizeof **labels);
    for (int64_t i = 0; i < n; i++) {
        for (size_t k = 0; k < e; k++)
            b[(size_t)i * e + k] = byte_of(i, (int64_t)k);
        (*labels)[i] = (int32_t)(i % 3);
    }
    return b;
}

/* A streamed store whose "files" are byte_of(); sample fail_at fails. */
typedef struct synth {
    int64_t fail_at;
} synth;

static int synth_decode(void *payload, int64_t i, uint8_t *dst, int64_t c, int64_t h, int64_t w)
{
    const synth *s = payload;
    if (i == s->fail_at)
        return seterr(DISTILL_EIO, "image 'synthetic/%lld.png': read error", (long long)i);
    for (int64_t k = 0; k < c * h * w; k++)
        dst[k] = byte_of(i, k);
    return DISTILL_OK;
}

static distill_dataset *synth_streamed(int64_t n, int64_t c, int64_t h, int64_t w, synth *payload)
{
    store *st = store_new();
    assert_non_null(st);
    st->n = n;
    st->c = c;
    st->h = h;
    st->w = w;
    st->sample_elems = (size_t)(c * h * w);
    st->type = STORE_FILES;
    st->decode = synth_decode;
    st->decode_payload = payload;
    st->owned_labels = xmalloc((size_t)n * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++)
        st->owned_labels[i] = (int32_t)(i % 3);
    st->labels = st->owned_labels;
    st->classes = 3;
    distill_dataset *ds = NULL;
    assert_int_equal(dataset_wrap(&ds, st), DISTILL_OK);
    return ds;
}

/* Every batch of `epochs` epochs, concatenated (images then labels). */
typedef struct run {
    float *x;
    int32_t *y;
    size_t nx, ny;
} run;

static run collect(const distill_dataset *ds, const distill_loader_options *o, int epochs)
{
    distill_loader *ld = NULL;
    int rc = distill_loader_create(&ld, ds, o);
    if (rc)
        fail_msg("loader: %s", distill_last_error());
    int64_t d[3];
    distill_loader_sample_dims(ld, d);
    size_t e = (size_t)(d[0] * d[1] * d[2]);
    int64_t n = distill_dataset_size(ds);
    run r = {malloc((size_t)(n * epochs) * e * sizeof(float)),
             malloc((size_t)(n * epochs) * sizeof(int32_t)), 0, 0};
    int64_t bd[4] = {o->batch_size, d[0], d[1], d[2]};
    distill_tensor *x;
    assert_int_equal(distill_tensor_create(&x, 4, bd), DISTILL_OK);
    int32_t *lab = malloc((size_t)o->batch_size * sizeof *lab);
    for (int ep = 0; ep < epochs; ep++) {
        int count;
        while ((rc = distill_loader_next(ld, x, lab, &count)) == DISTILL_OK && count > 0) {
            memcpy(r.x + r.nx, distill_tensor_data(x), (size_t)count * e * sizeof(float));
            memcpy(r.y + r.ny, lab, (size_t)count * sizeof(int32_t));
            r.nx += (size_t)count * e;
            r.ny += (size_t)count;
        }
        if (rc)
            fail_msg("next: %s", distill_last_error());
    }
    free(lab);
    distill_tensor_free(x);
    distill_loader_free(ld);
    return r;
}

static void same_run(run a, run b)
{
    assert_int_equal(a.nx, b.nx);
    assert_int_equal(a.ny, b.ny);
    assert_memory_equal(a.x, b.x, a.nx * sizeof(float));
    assert_memory_equal(a.y, b.y, a.ny * sizeof(int32_t));
}

static void run_free(run r)
{
    free(r.x);
    free(r.y);
}

static distill_loader_options base_opts(void)
{
    distill_loader_options o;
    distill_loader_options_init(&o, DISTILL_LOADER_OPTIONS_VERSION);
    o.batch_size = 5;
    o.seed = 11;
    o.prefetch = 0;
    return o;
}

/* One sample through a loader without shuffling: sample i of ds. */
static void one_sample(const distill_dataset *ds, distill_loader_options o, int64_t i,
                       float *out, int64_t dims[3])
{
    o.batch_size = 1;
    o.shuffle = 0;
    distill_loader *ld;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    distill_loader_sample_dims(ld, dims);
    assert_int_equal(distill_loader_set_state(ld, 0, (uint64_t)i), DISTILL_OK);
    int64_t bd[4] = {1, dims[0], dims[1], dims[2]};
    distill_tensor *x;
    assert_int_equal(distill_tensor_create(&x, 4, bd), DISTILL_OK);
    int count;
    assert_int_equal(distill_loader_next(ld, x, NULL, &count), DISTILL_OK);
    assert_int_equal(count, 1);
    memcpy(out, distill_tensor_data(x), (size_t)(dims[0] * dims[1] * dims[2]) * sizeof(float));
    distill_tensor_free(x);
    distill_loader_free(ld);
}

/* ------------------------------------------------ naive references */

/* PyTorch's bilinear source position (align_corners=False), in double. */
static void ref_tap(int64_t i, int64_t src, int64_t dst, int64_t *i0, int64_t *i1, double *t)
{
    double s = ((double)i + 0.5) * (double)src / (double)dst - 0.5;
    if (s < 0)
        s = 0;
    int64_t a = (int64_t)floor(s);
    if (a > src - 1)
        a = src - 1;
    *i0 = a;
    *i1 = a + 1 < src ? a + 1 : src - 1;
    *t = s - (double)a;
}

/* Bilinear resize of the (c, sh, sw) box at (top, left) of size (bh, bw)
 * of img (row stride sw) to (c, dh, dw). */
static void ref_resize(const double *img, int64_t c, int64_t sh, int64_t sw, int64_t top,
                       int64_t left, int64_t bh, int64_t bw, double *out, int64_t dh, int64_t dw)
{
    for (int64_t k = 0; k < c; k++)
        for (int64_t y = 0; y < dh; y++) {
            int64_t y0, y1;
            double ty;
            ref_tap(y, bh, dh, &y0, &y1, &ty);
            for (int64_t x = 0; x < dw; x++) {
                int64_t x0, x1;
                double tx;
                ref_tap(x, bw, dw, &x0, &x1, &tx);
                const double *p = img + k * sh * sw;
#define AT(yy, xx) p[(top + (yy)) * sw + left + (xx)]
                out[(k * dh + y) * dw + x] = (1 - ty) * ((1 - tx) * AT(y0, x0) + tx * AT(y0, x1)) +
                                             ty * ((1 - tx) * AT(y1, x0) + tx * AT(y1, x1));
#undef AT
            }
        }
}

/* torchvision's CenterCrop of (c, h, w) to (ch, cw), zero padding. */
static void ref_center_crop(const double *img, int64_t c, int64_t h, int64_t w, double *out,
                            int64_t ch, int64_t cw)
{
    /* torchvision: pad (crop - size) // 2 before, the rest after, then
     * top = int(round((padded - crop) / 2.0)) with Python's round */
    int64_t ph = ch > h ? ch : h, pw = cw > w ? cw : w;
    int64_t padt = ch > h ? (ch - h) / 2 : 0, padl = cw > w ? (cw - w) / 2 : 0;
    int64_t top = (int64_t)nearbyint((double)(ph - ch) / 2.0);
    int64_t left = (int64_t)nearbyint((double)(pw - cw) / 2.0);
    for (int64_t k = 0; k < c; k++)
        for (int64_t y = 0; y < ch; y++)
            for (int64_t x = 0; x < cw; x++) {
                int64_t sy = y + top - padt, sx = x + left - padl;
                out[(k * ch + y) * cw + x] =
                    sy >= 0 && sy < h && sx >= 0 && sx < w ? img[(k * h + sy) * w + sx] : 0.0;
            }
}

static void bytes_to_double(const uint8_t *b, size_t n, double *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = b[i] / 255.0;
}

static void close_to(const float *got, const double *want, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        if (fabs((double)got[i] - want[i]) > tol)
            fail_msg("element %zu: %.9g, expected %.9g", i, (double)got[i], want[i]);
}

/* ------------------------------------------------------------- tests */

/* A byte store gives bit for bit what a float store of byte / 255 gives,
 * through every transform, normalization, views and get(). */
static void test_bytes_match_floats(void **state)
{
    (void)state;
    enum { N = 13, C = 3, H = 9, W = 12 };
    int32_t *labels;
    uint8_t *b = make_bytes(N, C, H, W, &labels);
    float *f = malloc(sizeof(float) * N * C * H * W);
    for (size_t i = 0; i < (size_t)N * C * H * W; i++)
        f[i] = (float)b[i] / 255.0f;
    int64_t dims[3] = {C, H, W};
    distill_dataset *d8, *df;
    assert_int_equal(distill_dataset_from_memory_u8(&d8, N, dims, b, labels, 3,
                                                    DISTILL_MEMORY_BORROW), DISTILL_OK);
    assert_int_equal(distill_dataset_from_memory(&df, N, dims, f, labels, 3,
                                                 DISTILL_MEMORY_BORROW), DISTILL_OK);
    float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    for (int variant = 0; variant < 4; variant++) {
        distill_loader_options o = base_opts();
        o.norm_count = 3;
        o.mean = mean;
        o.std = sd;
        o.hflip = 1;
        o.crop_padding = variant == 0 ? 2 : 0;
        if (variant == 1) {
            o.resize = 7;
            o.center_crop[0] = o.center_crop[1] = 6;
        }
        if (variant == 2) {
            o.random_resized_crop[0] = 5;
            o.random_resized_crop[1] = 4;
        }
        if (variant == 3)
            o.norm_count = 0;
        run r8 = collect(d8, &o, 2), rf = collect(df, &o, 2);
        same_run(r8, rf);
        run_free(r8);
        run_free(rf);
    }
    /* views of a split, and get() */
    distill_dataset *tr8, *va8, *trf, *vaf;
    assert_int_equal(distill_dataset_split(&tr8, &va8, d8, 4, 3), DISTILL_OK);
    assert_int_equal(distill_dataset_split(&trf, &vaf, df, 4, 3), DISTILL_OK);
    float g8[C * H * W], gf[C * H * W];
    for (int64_t i = 0; i < 4; i++) {
        int32_t l8, lf;
        assert_int_equal(distill_dataset_get(va8, i, g8, C * H * W, &l8), DISTILL_OK);
        assert_int_equal(distill_dataset_get(vaf, i, gf, C * H * W, &lf), DISTILL_OK);
        assert_memory_equal(g8, gf, sizeof g8);
        assert_int_equal(l8, lf);
    }
    distill_loader_options o = base_opts();
    o.resize = 6;
    run r8 = collect(tr8, &o, 1), rf = collect(trf, &o, 1);
    same_run(r8, rf);
    run_free(r8);
    run_free(rf);
    distill_dataset_free(tr8);
    distill_dataset_free(va8);
    distill_dataset_free(trf);
    distill_dataset_free(vaf);
    distill_dataset_free(d8);
    distill_dataset_free(df);
    free(b);
    free(f);
    free(labels);
}

/* Resize (shorter side) against the double reference, down and up, and
 * the output size torchvision gives. */
static void test_resize(void **state)
{
    (void)state;
    enum { C = 2, H = 7, W = 10 };
    int32_t *labels;
    uint8_t *b = make_bytes(2, C, H, W, &labels);
    int64_t dims[3] = {C, H, W};
    distill_dataset *ds;
    assert_int_equal(distill_dataset_from_memory_u8(&ds, 2, dims, b, labels, 3,
                                                    DISTILL_MEMORY_BORROW), DISTILL_OK);
    double src[C * H * W];
    bytes_to_double(b + C * H * W, C * H * W, src); /* sample 1 */
    static const int sizes[] = {5, 7, 16, 3};
    for (size_t t = 0; t < sizeof sizes / sizeof *sizes; t++) {
        int s = sizes[t];
        /* torchvision: short side s, long int(s * 10 / 7) */
        int64_t want_h = s, want_w = (int64_t)((double)s * W / H);
        distill_loader_options o = base_opts();
        o.resize = s;
        float got[C * 16 * 22];
        int64_t d[3];
        one_sample(ds, o, 1, got, d);
        assert_int_equal(d[0], C);
        assert_int_equal(d[1], want_h);
        assert_int_equal(d[2], want_w);
        double want[C * 16 * 22];
        ref_resize(src, C, H, W, 0, 0, H, W, want, want_h, want_w);
        close_to(got, want, (size_t)(C * want_h * want_w), 1e-5);
    }
    /* a taller-than-wide image: the width is the shorter side */
    int64_t tdims[3] = {1, 10, 4};
    distill_dataset *tall;
    assert_int_equal(distill_dataset_from_memory_u8(&tall, 1, tdims, b, NULL, 0,
                                                    DISTILL_MEMORY_BORROW), DISTILL_OK);
    distill_loader_options o = base_opts();
    o.resize = 6;
    float got[15 * 6];
    int64_t d[3];
    one_sample(tall, o, 0, got, d);
    assert_int_equal(d[1], 15); /* int(6 * 10 / 4) */
    assert_int_equal(d[2], 6);
    double tsrc[40], twant[15 * 6];
    bytes_to_double(b, 40, tsrc);
    ref_resize(tsrc, 1, 10, 4, 0, 0, 10, 4, twant, 15, 6);
    close_to(got, twant, 15 * 6, 1e-5);
    distill_dataset_free(tall);
    distill_dataset_free(ds);
    free(b);
    free(labels);
}

/* CenterCrop boxes (torchvision's rounding, ties to even; padding when the
 * crop is larger), alone and after a Resize, against the references. */
static void test_center_crop(void **state)
{
    (void)state;
    enum { H = 9, W = 10 };
    int32_t *labels;
    uint8_t *b = make_bytes(1, 1, H, W, &labels);
    int64_t dims[3] = {1, H, W};
    distill_dataset *ds;
    assert_int_equal(distill_dataset_from_memory_u8(&ds, 1, dims, b, labels, 3,
                                                    DISTILL_MEMORY_BORROW), DISTILL_OK);
    double src[H * W];
    bytes_to_double(b, H * W, src);
    /* (crop h, crop w, expected top, expected left) */
    static const int cases[][4] = {
        {6, 9, 2, 0},   /* 9-6 = 3: round(1.5) = 2; 10-9 = 1: round(0.5) = 0 */
        {4, 5, 2, 2},   /* round(2.5) = 2, round(2.5) = 2 */
        {8, 7, 0, 2},   /* round(0.5) = 0, round(1.5) = 2 */
        {9, 10, 0, 0},  /* the whole image */
        {12, 13, -1, -1}, /* larger: (12-9)//2 = 1 and (13-10)//2 = 1 rows/cols of zeros */
        {3, 14, 3, -2},
    };
    for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
        int ch = cases[t][0], cw = cases[t][1];
        distill_loader_options o = base_opts();
        o.center_crop[0] = ch;
        o.center_crop[1] = cw;
        float got[14 * 14];
        int64_t d[3];
        one_sample(ds, o, 0, got, d);
        assert_int_equal(d[1], ch);
        assert_int_equal(d[2], cw);
        double want[14 * 14];
        ref_center_crop(src, 1, H, W, want, ch, cw);
        close_to(got, want, (size_t)(ch * cw), 1e-7);
        /* the box itself: the first pixel inside the image */
        int top = cases[t][2], left = cases[t][3];
        int y = top < 0 ? -top : 0, x = left < 0 ? -left : 0;
        assert_true(got[y * cw + x] == b[(y + top) * W + x + left] / 255.0f);
        if (top < 0)
            assert_true(got[0] == 0.0f);
    }
    /* Resize then CenterCrop: torchvision's eval recipe (Resize(8) then
     * CenterCrop(6)), against resizing whole and cropping the result */
    distill_loader_options o = base_opts();
    o.resize = 8;
    o.center_crop[0] = o.center_crop[1] = 6;
    float got[36];
    int64_t d[3];
    one_sample(ds, o, 0, got, d);
    int64_t rw = (int64_t)(8.0 * W / H); /* 8 */
    double resized[8 * 8], want[36];
    ref_resize(src, 1, H, W, 0, 0, H, W, resized, 8, rw);
    ref_center_crop(resized, 1, 8, rw, want, 6, 6);
    close_to(got, want, 36, 1e-5);
    distill_dataset_free(ds);
    free(b);
    free(labels);
}

/* RandomResizedCrop: every box inside the image with area and ratio in
 * range (up to the rounding of its sides), the same box for the same key
 * in another loader, boxes that vary, torchvision's fallback, and the
 * output equal to the reference crop-and-resize of the box. */
static void test_random_resized_crop(void **state)
{
    (void)state;
    enum { N = 6, C = 3, H = 20, W = 30 };
    int32_t *labels;
    uint8_t *b = make_bytes(N, C, H, W, &labels);
    int64_t dims[3] = {C, H, W};
    distill_dataset *ds;
    assert_int_equal(distill_dataset_from_memory_u8(&ds, N, dims, b, labels, 3,
                                                    DISTILL_MEMORY_BORROW), DISTILL_OK);
    distill_loader_options o = base_opts();
    o.random_resized_crop[0] = 8;
    o.random_resized_crop[1] = 10;
    o.rrc_scale[0] = 0.2f;
    o.rrc_scale[1] = 0.9f;
    o.rrc_ratio[0] = 0.5f;
    o.rrc_ratio[1] = 2.0f;
    distill_loader *a, *a2;
    assert_int_equal(distill_loader_create(&a, ds, &o), DISTILL_OK);
    o.seed = 12;
    assert_int_equal(distill_loader_create(&a2, ds, &o), DISTILL_OK);
    o.seed = 11;
    assert_false(loader_views_enumerable(a));
    int distinct = 0, fallbacks = 0;
    int64_t prev[4] = {-1, -1, -1, -1};
    for (uint64_t e = 0; e < 4; e++)
        for (uint64_t q = 0; q < 50; q++) {
            int64_t box[4], again[4], other[4];
            int fb = loader_rrc_box(a, e, q, box);
            fallbacks += fb;
            assert_int_equal(loader_rrc_box(a, e, q, again), fb);
            assert_memory_equal(box, again, sizeof box);
            loader_rrc_box(a2, e, q, other);
            distinct += memcmp(box, prev, sizeof box) != 0;
            memcpy(prev, box, sizeof box);
            int64_t top = box[0], left = box[1], h = box[2], w = box[3];
            assert_true(h >= 1 && w >= 1 && top >= 0 && left >= 0);
            assert_true(top + h <= H && left + w <= W);
            if (!fb) {
                /* w = round(sqrt(A r)), h = round(sqrt(A / r)) for A, r in range */
                double area = (double)H * W;
                assert_true((w + 0.5) * (h + 0.5) >= 0.2 * area);
                assert_true((w - 0.5) * (h - 0.5) <= 0.9 * area);
                assert_true((w + 0.5) / (h - 0.5) >= 0.5);
                assert_true((w - 0.5) / (h + 0.5) <= 2.0);
            }
        }
    assert_true(distinct > 150);
    assert_true(fallbacks < 5);
    /* a different seed gives different boxes */
    int differ = 0;
    for (uint64_t q = 0; q < 20; q++) {
        int64_t x1[4], x2[4];
        loader_rrc_box(a, 0, q, x1);
        loader_rrc_box(a2, 0, q, x2);
        differ += memcmp(x1, x2, sizeof x1) != 0;
    }
    assert_true(differ > 15);

    /* the output of position 3 of epoch 0 (no shuffle) is the reference
     * crop of its box resized to 8 x 10 */
    int64_t box[4];
    loader_rrc_box(a, 0, 3, box);
    float got[C * 8 * 10];
    int64_t d[3];
    one_sample(ds, o, 3, got, d);
    assert_int_equal(d[1], 8);
    assert_int_equal(d[2], 10);
    double src[C * H * W], want[C * 8 * 10];
    bytes_to_double(b + 3 * C * H * W, C * H * W, src);
    ref_resize(src, C, H, W, box[0], box[1], box[2], box[3], want, 8, 10);
    close_to(got, want, C * 8 * 10, 1e-5);
    distill_loader_free(a);
    distill_loader_free(a2);

    /* torchvision's fallback: no box of scale 1 with ratio in [2, 3] fits
     * a 20 x 30 image (ratio 1.5 < 2): the full width, h = round(30 / 2),
     * centred */
    o.rrc_scale[0] = o.rrc_scale[1] = 1.0f;
    o.rrc_ratio[0] = 2.0f;
    o.rrc_ratio[1] = 3.0f;
    assert_int_equal(distill_loader_create(&a, ds, &o), DISTILL_OK);
    for (uint64_t q = 0; q < 10; q++) {
        assert_int_equal(loader_rrc_box(a, 0, q, box), 1);
        assert_int_equal(box[2], 15);
        assert_int_equal(box[3], 30);
        assert_int_equal(box[0], 2); /* (20 - 15) // 2 */
        assert_int_equal(box[1], 0);
    }
    distill_loader_free(a);
    /* ratio below the image's: the full height, w = round(20 * 0.5) */
    o.rrc_ratio[0] = 0.25f;
    o.rrc_ratio[1] = 0.5f;
    assert_int_equal(distill_loader_create(&a, ds, &o), DISTILL_OK);
    assert_int_equal(loader_rrc_box(a, 1, 1, box), 1);
    assert_int_equal(box[2], 20);
    assert_int_equal(box[3], 10);
    assert_int_equal(box[1], 10);
    distill_loader_free(a);

    /* bad ranges are refused */
    distill_loader_options bad = base_opts();
    bad.random_resized_crop[0] = 8;
    bad.random_resized_crop[1] = 8;
    bad.rrc_scale[0] = 0.5f;
    bad.rrc_scale[1] = 0.4f;
    assert_int_equal(distill_loader_create(&a, ds, &bad), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "rrc_scale"));
    bad = base_opts();
    bad.center_crop[0] = 4;
    assert_int_equal(distill_loader_create(&a, ds, &bad), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "center_crop"));
    bad = base_opts();
    bad.workers = 65;
    assert_int_equal(distill_loader_create(&a, ds, &bad), DISTILL_EINVAL);
    distill_dataset_free(ds);
    free(b);
    free(labels);
}

/* The whole pipeline against the references step by step: Resize ->
 * CenterCrop -> pad-and-crop (every view) -> flip -> Normalize, and
 * Resize -> CenterCrop -> RandomResizedCrop. */
static void test_pipeline(void **state)
{
    (void)state;
    enum { C = 3, H = 11, W = 9, P = 2 };
    int32_t *labels;
    uint8_t *b = make_bytes(1, C, H, W, &labels);
    int64_t dims[3] = {C, H, W};
    distill_dataset *ds;
    assert_int_equal(distill_dataset_from_memory_u8(&ds, 1, dims, b, labels, 3,
                                                    DISTILL_MEMORY_BORROW), DISTILL_OK);
    double src[C * H * W];
    bytes_to_double(b, C * H * W, src);
    /* Resize(8): 8 x int(8 * 11 / 9) = 9 rows x 8 columns; CenterCrop 7 x 10
     * (wider than the image: zero columns) */
    enum { RH = 9, RW = 8, CH = 7, CW = 10 };
    double resized[C * RH * RW], base[C * CH * CW];
    ref_resize(src, C, H, W, 0, 0, H, W, resized, RH, RW);
    ref_center_crop(resized, C, RH, RW, base, CH, CW);
    float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    distill_loader_options o = base_opts();
    o.shuffle = 0;
    o.resize = 8;
    o.center_crop[0] = CH;
    o.center_crop[1] = CW;
    o.crop_padding = P;
    o.hflip = 1;
    o.pad_value = -7.0f;
    o.norm_count = 3;
    o.mean = mean;
    o.std = sd;
    distill_loader *ld;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    int64_t d[3];
    distill_loader_sample_dims(ld, d);
    assert_int_equal(d[1], CH);
    assert_int_equal(d[2], CW);
    assert_true(loader_views_enumerable(ld));
    int side = 2 * P + 1;
    assert_int_equal(loader_view_count(ld), side * side * 2);
    float got[C * CH * CW];
    double want[C * CH * CW];
    for (int32_t v = 0; v < side * side * 2; v++) {
        int flip = v % 2, ox = (v / 2) % side, oy = (v / 2) / side;
        assert_int_equal(loader_build_view(ld, 0, v, got), DISTILL_OK);
        for (int k = 0; k < C; k++)
            for (int y = 0; y < CH; y++)
                for (int x = 0; x < CW; x++) {
                    int xs = flip ? CW - 1 - x : x;
                    int sy = y + oy - P, sx = xs + ox - P;
                    double val = sy < 0 || sy >= CH || sx < 0 || sx >= CW
                                     ? -7.0
                                     : (base[(k * CH + sy) * CW + sx] - mean[k]) / sd[k];
                    want[(k * CH + y) * CW + x] = val;
                }
        close_to(got, want, C * CH * CW, 1e-5);
    }
    distill_loader_free(ld);

    /* ... then a RandomResizedCrop of that 7 x 10 image, to 5 x 6 */
    o.crop_padding = 0;
    o.hflip = 0;
    o.norm_count = 0;
    o.random_resized_crop[0] = 5;
    o.random_resized_crop[1] = 6;
    assert_int_equal(distill_loader_create(&ld, ds, &o), DISTILL_OK);
    for (uint64_t e = 0; e < 3; e++) {
        assert_int_equal(distill_loader_set_epoch(ld, e), DISTILL_OK);
        distill_tensor *x;
        int64_t bd[4] = {1, C, 5, 6};
        assert_int_equal(distill_tensor_create(&x, 4, bd), DISTILL_OK);
        int count;
        assert_int_equal(distill_loader_next(ld, x, NULL, &count), DISTILL_OK);
        int64_t box[4];
        loader_rrc_box(ld, e, 0, box);
        assert_true(box[0] + box[2] <= CH && box[1] + box[3] <= CW);
        double rw[C * 5 * 6];
        ref_resize(base, C, CH, CW, box[0], box[1], box[2], box[3], rw, 5, 6);
        close_to(distill_tensor_data(x), rw, C * 5 * 6, 1e-5);
        distill_tensor_free(x);
    }
    distill_loader_free(ld);
    distill_dataset_free(ds);
    free(b);
    free(labels);
}

/* The batches are the same bit for bit with 0, 1 or 3 workers, prefetch on
 * or off, in memory or streamed, and after jumping with set_state. */
static void test_same_batches_everywhere(void **state)
{
    (void)state;
    enum { N = 23, C = 3, H = 8, W = 11 };
    int32_t *labels;
    uint8_t *b = make_bytes(N, C, H, W, &labels);
    int64_t dims[3] = {C, H, W};
    distill_dataset *mem;
    assert_int_equal(distill_dataset_from_memory_u8(&mem, N, dims, b, labels, 3,
                                                    DISTILL_MEMORY_BORROW), DISTILL_OK);
    synth sy = {-1};
    distill_dataset *str = synth_streamed(N, C, H, W, &sy);
    float mean = 0.5f, sd = 0.25f;
    for (int variant = 0; variant < 3; variant++) {
        distill_loader_options o = base_opts();
        o.norm_count = 1;
        o.mean = &mean;
        o.std = &sd;
        o.hflip = 1;
        if (variant == 0)
            o.crop_padding = 1;
        if (variant == 1) {
            o.random_resized_crop[0] = 6;
            o.random_resized_crop[1] = 7;
        }
        if (variant == 2) {
            o.resize = 6;
            o.center_crop[0] = 5;
            o.center_crop[1] = 6;
            o.drop_last = 1;
        }
        run ref = collect(mem, &o, 3);
        static const int workers[] = {0, 1, 3};
        for (int wi = 0; wi < 3; wi++)
            for (int pf = 0; pf < 2; pf++)
                for (int src = 0; src < 2; src++) {
                    distill_loader_options p = o;
                    p.workers = workers[wi];
                    p.prefetch = pf;
                    run r = collect(src ? str : mem, &p, 3);
                    same_run(ref, r);
                    run_free(r);
                }
        /* jumping: epoch 2's second batch, then epoch 1's first, streamed
         * with workers and prefetch, equal to the uninterrupted run's */
        distill_loader_options p = o;
        p.workers = 2;
        p.prefetch = 1;
        distill_loader *ld;
        assert_int_equal(distill_loader_create(&ld, str, &p), DISTILL_OK);
        int64_t d[3];
        distill_loader_sample_dims(ld, d);
        size_t e = (size_t)(d[0] * d[1] * d[2]);
        int64_t bd[4] = {o.batch_size, d[0], d[1], d[2]};
        distill_tensor *x;
        assert_int_equal(distill_tensor_create(&x, 4, bd), DISTILL_OK);
        int count;
        int64_t per_epoch = o.drop_last ? N / o.batch_size * o.batch_size : N;
        assert_int_equal(distill_loader_set_state(ld, 2, 5), DISTILL_OK);
        assert_int_equal(distill_loader_next(ld, x, NULL, &count), DISTILL_OK);
        assert_int_equal(count, 5);
        assert_memory_equal(distill_tensor_data(x), ref.x + (size_t)(2 * per_epoch + 5) * e,
                            5 * e * sizeof(float));
        assert_int_equal(distill_loader_set_state(ld, 1, 0), DISTILL_OK);
        assert_int_equal(distill_loader_next(ld, x, NULL, &count), DISTILL_OK);
        assert_memory_equal(distill_tensor_data(x), ref.x + (size_t)per_epoch * e,
                            5 * e * sizeof(float));
        distill_tensor_free(x);
        distill_loader_free(ld);
        run_free(ref);
    }
    /* the views of teacher caches, streamed or not */
    {
        distill_loader_options o = base_opts();
        o.crop_padding = 1;
        o.hflip = 1;
        o.resize = 9;
        distill_loader *lm, *ls;
        assert_int_equal(distill_loader_create(&lm, mem, &o), DISTILL_OK);
        assert_int_equal(distill_loader_create(&ls, str, &o), DISTILL_OK);
        int64_t d[3];
        distill_loader_sample_dims(lm, d);
        size_t e = (size_t)(d[0] * d[1] * d[2]);
        float *vm = malloc(e * sizeof(float)), *vs = malloc(e * sizeof(float));
        for (int64_t i = 0; i < N; i += 4)
            for (int32_t v = 0; v < loader_view_count(lm); v++) {
                assert_int_equal(loader_build_view(lm, i, v, vm), DISTILL_OK);
                assert_int_equal(loader_build_view(ls, i, v, vs), DISTILL_OK);
                assert_memory_equal(vm, vs, e * sizeof(float));
            }
        free(vm);
        free(vs);
        distill_loader_free(lm);
        distill_loader_free(ls);
    }
    /* get() decodes a streamed sample */
    float g[C * H * W];
    int32_t lab;
    assert_int_equal(distill_dataset_get(str, 7, g, C * H * W, &lab), DISTILL_OK);
    assert_int_equal(lab, 7 % 3);
    for (int k = 0; k < C * H * W; k++)
        assert_true(g[k] == (float)b[7 * C * H * W + k] / 255.0f);
    distill_dataset_free(str);
    distill_dataset_free(mem);
    free(b);
    free(labels);
}

/* A streamed sample that fails: next() returns its error and message, the
 * position stays, for every thread setup; get() fails too. */
static void test_stream_error(void **state)
{
    (void)state;
    enum { N = 12, C = 1, H = 4, W = 4 };
    synth sy = {6};
    distill_dataset *str = synth_streamed(N, C, H, W, &sy);
    for (int setup = 0; setup < 3; setup++) {
        distill_loader_options o = base_opts();
        o.shuffle = 0;
        o.batch_size = 4;
        o.workers = setup == 0 ? 0 : setup == 1 ? 1 : 3;
        o.prefetch = setup != 0;
        distill_loader *ld;
        assert_int_equal(distill_loader_create(&ld, str, &o), DISTILL_OK);
        int64_t bd[4] = {4, C, H, W};
        distill_tensor *x;
        assert_int_equal(distill_tensor_create(&x, 4, bd), DISTILL_OK);
        int count;
        assert_int_equal(distill_loader_next(ld, x, NULL, &count), DISTILL_OK);
        assert_int_equal(count, 4);
        for (int rep = 0; rep < 2; rep++) {
            assert_int_equal(distill_loader_next(ld, x, NULL, &count), DISTILL_EIO);
            assert_int_equal(count, 0);
            assert_non_null(strstr(distill_last_error(), "synthetic/6.png"));
            uint64_t e, p;
            distill_loader_get_state(ld, &e, &p);
            assert_int_equal(e, 0);
            assert_int_equal(p, 4);
        }
        /* past it, the loader goes on */
        assert_int_equal(distill_loader_set_state(ld, 0, 8), DISTILL_OK);
        assert_int_equal(distill_loader_next(ld, x, NULL, &count), DISTILL_OK);
        assert_int_equal(count, 4);
        distill_tensor_free(x);
        distill_loader_free(ld);
    }
    float g[C * H * W];
    assert_int_equal(distill_dataset_get(str, 6, g, C * H * W, NULL), DISTILL_EIO);
    distill_dataset_free(str);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_match_floats),
        cmocka_unit_test(test_resize),
        cmocka_unit_test(test_center_crop),
        cmocka_unit_test(test_random_resized_crop),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_same_batches_everywhere),
        cmocka_unit_test(test_stream_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_cache.c - teacher caches: every augmentation view's logits equal the
 * online teacher's, training from the cache follows training from the
 * teacher, and bad caches or mismatched runs are refused.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "data/data_internal.h"
#include "distill/teacher_internal.h"
#include "distill.h"

#define N 48
#define C 1
#define H 8
#define W 8
#define CLASSES 4

#define OK(call) assert_int_equal((call), DISTILL_OK)

static distill_model *small_model(const char *fc_name, uint64_t seed)
{
    distill_model *m;
    int64_t in[3] = {C, H, W};
    distill_conv2d_options c;
    distill_conv2d_options_init(&c, DISTILL_CONV2D_OPTIONS_VERSION);
    c.kernel_h = c.kernel_w = 3;
    c.pad_h = c.pad_w = 1;
    OK(distill_model_create(&m, "input", 3, in));
    OK(distill_model_add_conv2d(m, "conv", "input", 8, &c));
    OK(distill_model_add_batchnorm(m, "bn", "conv", 1e-5f, 0.1f));
    OK(distill_model_add_relu(m, "relu", "bn"));
    OK(distill_model_add_global_avgpool(m, "pool", "relu"));
    OK(distill_model_add_flatten(m, "flat", "pool"));
    OK(distill_model_add_linear(m, fc_name, "flat", CLASSES, 1));
    OK(distill_model_init_weights(m, DISTILL_INIT_DEFAULT, seed));
    return m;
}

static distill_dataset *dataset(void)
{
    static float pix[N * C * H * W];
    static int32_t labels[N];
    for (int i = 0; i < N * C * H * W; i++)
        pix[i] = (float)((i * 7919) % 256) / 255.0f;
    for (int i = 0; i < N; i++)
        labels[i] = i % CLASSES;
    distill_dataset *d;
    int64_t dims[3] = {C, H, W};
    OK(distill_dataset_from_memory(&d, N, dims, pix, labels, CLASSES, DISTILL_MEMORY_COPY));
    return d;
}

static void cache_opts(distill_cache_options *o)
{
    OK(distill_cache_options_init(o, DISTILL_CACHE_OPTIONS_VERSION));
    o->crop_padding = 1;
    o->hflip = 1;
    o->norm_count = 1;
    o->mean[0] = 0.5f;
    o->std[0] = 0.25f;
    o->batch_size = 32;
}

/* The cache's logits for every (sample, view) equal the teacher's forward
 * of that augmented sample. */
static void test_views_match(void **state)
{
    (void)state;
    distill_dataset *d = dataset();
    distill_model *tm = small_model("fc", 1);
    distill_teacher *t, *ct;
    OK(distill_teacher_from_model(&t, tm));
    distill_cache_options o;
    cache_opts(&o);
    OK(distill_teacher_cache_build(t, d, &o, "views.cache"));
    OK(distill_teacher_from_cache(&ct, "views.cache"));
    assert_int_equal(distill_teacher_classes(ct), CLASSES);

    distill_loader_options lo;
    OK(distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION));
    lo.shuffle = 0;
    lo.crop_padding = 1;
    lo.hflip = 1;
    lo.norm_count = 1;
    lo.mean = o.mean;
    lo.std = o.std;
    lo.prefetch = 0;
    distill_loader *ld;
    OK(distill_loader_create(&ld, d, &lo));
    assert_int_equal(loader_view_count(ld), 18);
    int64_t xd[4] = {1, C, H, W}, yd[2] = {1, CLASSES};
    distill_tensor *x, *y, *yc;
    OK(distill_tensor_create(&x, 4, xd));
    OK(distill_tensor_create(&y, 2, yd));
    OK(distill_tensor_create(&yc, 2, yd));
    double worst = 0;
    for (int64_t i = 0; i < N; i += 5)
        for (int32_t v = 0; v < 18; v++) {
            OK(loader_build_view(ld, i, v, distill_tensor_data(x)));
            OK(distill_teacher_forward(t, x, y));
            OK(teacher_cache_lookup(ct, 1, &i, &v, yc));
            for (int k = 0; k < CLASSES; k++) {
                double a = distill_tensor_data(y)[k], b = distill_tensor_data(yc)[k];
                double e = fabs(a - b) / (1.0 + fabs(a));
                worst = e > worst ? e : worst;
            }
        }
    print_message("cache vs online teacher: worst relative difference %.3g\n", worst);
    assert_true(worst < 1e-5);
    /* a cached teacher has no per-batch forward of its own */
    assert_int_equal(distill_teacher_forward(ct, x, y), DISTILL_EUNSUPPORTED);
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_tensor_free(yc);
    distill_loader_free(ld);
    distill_teacher_free(ct);
    distill_teacher_free(t);
    distill_model_free(tm);
    distill_dataset_free(d);
}

static void fit_with(distill_teacher *t, distill_dataset *d, distill_model *student, int crop)
{
    distill_trainer_options o;
    OK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.epochs = 2;
    o.batch_size = 16;
    o.lr = 0.05;
    o.crop_padding = crop;
    o.hflip = 1;
    o.norm_count = 1;
    o.mean[0] = 0.5f;
    o.std[0] = 0.25f;
    o.seed = 3;
    o.prefetch = 0;
    distill_trainer *tr;
    OK(distill_trainer_create(&tr, student, t, &o));
    distill_loss *l;
    OK(distill_loss_kd(&l, 4.0f, 0.5f));
    OK(distill_trainer_add_loss(tr, l, 1.0f));
    int rc = distill_trainer_fit(tr, d, NULL);
    distill_trainer_free(tr);
    OK(rc);
}

/* Training from the cache follows training from the online teacher. */
static void test_training_matches(void **state)
{
    (void)state;
    distill_dataset *d = dataset();
    distill_model *tm = small_model("fc", 1);
    distill_model *s1 = small_model("head", 2), *s2 = small_model("head", 2);
    distill_teacher *t, *ct;
    OK(distill_teacher_from_model(&t, tm));
    distill_cache_options o;
    cache_opts(&o);
    OK(distill_teacher_cache_build(t, d, &o, "train.cache"));
    OK(distill_teacher_from_cache(&ct, "train.cache"));
    fit_with(t, d, s1, 1);
    fit_with(ct, d, s2, 1);
    size_t n1, n2;
    float *p1 = distill_model_param_block(s1, &n1), *p2 = distill_model_param_block(s2, &n2);
    assert_int_equal(n1, n2);
    double worst = 0;
    for (size_t i = 0; i < n1; i++) {
        double e = fabs((double)p1[i] - p2[i]) / (1.0 + fabs((double)p1[i]));
        worst = e > worst ? e : worst;
    }
    print_message("weights after 6 steps, cache vs online: worst relative difference %.3g\n",
                  worst);
    assert_true(worst < 1e-4);
    distill_model_free(s1);
    distill_model_free(s2);
    distill_teacher_free(ct);
    distill_teacher_free(t);
    distill_model_free(tm);
    distill_dataset_free(d);
}

/* A run whose augmentation differs from the cache's, another dataset, a
 * corrupt file: clear errors. */
static void test_refused(void **state)
{
    (void)state;
    distill_dataset *d = dataset(), *sub;
    distill_model *tm = small_model("fc", 1), *s = small_model("head", 2);
    distill_teacher *t, *ct;
    OK(distill_teacher_from_model(&t, tm));
    distill_cache_options o;
    cache_opts(&o);
    OK(distill_teacher_cache_build(t, d, &o, "bad.cache"));
    OK(distill_teacher_from_cache(&ct, "bad.cache"));

    distill_trainer_options to;
    OK(distill_trainer_options_init(&to, DISTILL_TRAINER_OPTIONS_VERSION));
    to.batch_size = 16;
    to.crop_padding = 2; /* the cache has 1 */
    to.hflip = 1;
    to.norm_count = 1;
    to.mean[0] = 0.5f;
    to.std[0] = 0.25f;
    distill_trainer *tr;
    OK(distill_trainer_create(&tr, s, ct, &to));
    assert_int_equal(distill_trainer_fit(tr, d, NULL), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "crop padding"));
    distill_trainer_free(tr);

    to.crop_padding = 1;
    OK(distill_trainer_create(&tr, s, ct, &to));
    OK(distill_dataset_subset(&sub, d, 0, 32));
    assert_int_equal(distill_trainer_fit(tr, sub, NULL), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "another dataset"));
    /* a step outside fit cannot know the views */
    int64_t xd[4] = {16, C, H, W};
    distill_tensor *x;
    OK(distill_tensor_create(&x, 4, xd));
    int32_t y[16] = {0};
    assert_int_equal(distill_trainer_step(tr, x, y, NULL), DISTILL_EUNSUPPORTED);
    distill_tensor_free(x);
    distill_trainer_free(tr);

    /* truncated and flipped files */
    FILE *f = fopen("bad.cache", "rb");
    assert_non_null(f);
    static unsigned char buf[1 << 16];
    size_t size = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(size > 100 && size < sizeof buf);
    size_t cuts[] = {0, 7, 16, 40, size / 2, size - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        f = fopen("cut.cache", "wb");
        fwrite(buf, 1, cuts[k], f);
        fclose(f);
        distill_teacher *bad = NULL;
        assert_int_equal(distill_teacher_from_cache(&bad, "cut.cache"), DISTILL_EFORMAT);
        assert_null(bad);
    }
    buf[size / 2] ^= 0x10;
    f = fopen("cut.cache", "wb");
    fwrite(buf, 1, size, f);
    fclose(f);
    distill_teacher *bad = NULL;
    assert_int_equal(distill_teacher_from_cache(&bad, "cut.cache"), DISTILL_EFORMAT);
    assert_int_equal(distill_teacher_from_cache(&bad, "missing.cache"), DISTILL_ENOTFOUND);

    distill_dataset_free(sub);
    distill_teacher_free(ct);
    distill_teacher_free(t);
    distill_model_free(tm);
    distill_model_free(s);
    distill_dataset_free(d);
}

/* Resize and CenterCrop before the views: recorded in the cache, its
 * views equal the online teacher's of the transformed sample, and a run
 * must use the same; a RandomResizedCrop run is refused. */
static void test_transforms(void **state)
{
    (void)state;
    distill_dataset *d = dataset();
    distill_model *tm = small_model("fc", 1), *s = small_model("head", 2);
    distill_teacher *t, *ct;
    OK(distill_teacher_from_model(&t, tm));
    distill_cache_options o;
    cache_opts(&o);
    o.resize = 10; /* 8 x 8 -> 10 x 10 -> the centred 8 x 8 */
    o.center_crop[0] = o.center_crop[1] = 8;
    OK(distill_teacher_cache_build(t, d, &o, "xfrm.cache"));
    OK(distill_teacher_from_cache(&ct, "xfrm.cache"));

    distill_loader_options lo;
    OK(distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION));
    lo.shuffle = 0;
    lo.crop_padding = 1;
    lo.hflip = 1;
    lo.norm_count = 1;
    lo.mean = o.mean;
    lo.std = o.std;
    lo.prefetch = 0;
    lo.resize = 10;
    lo.center_crop[0] = lo.center_crop[1] = 8;
    distill_loader *ld;
    OK(distill_loader_create(&ld, d, &lo));
    int64_t xd[4] = {1, C, H, W}, yd[2] = {1, CLASSES};
    distill_tensor *x, *y, *yc;
    OK(distill_tensor_create(&x, 4, xd));
    OK(distill_tensor_create(&y, 2, yd));
    OK(distill_tensor_create(&yc, 2, yd));
    for (int64_t i = 0; i < N; i += 11)
        for (int32_t v = 0; v < 18; v += 5) {
            OK(loader_build_view(ld, i, v, distill_tensor_data(x)));
            OK(distill_teacher_forward(t, x, y));
            OK(teacher_cache_lookup(ct, 1, &i, &v, yc));
            for (int k = 0; k < CLASSES; k++)
                assert_true(fabsf(distill_tensor_data(y)[k] - distill_tensor_data(yc)[k]) <
                            1e-5f * (1.0f + fabsf(distill_tensor_data(y)[k])));
        }
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_tensor_free(yc);
    distill_loader_free(ld);

    distill_trainer_options to;
    OK(distill_trainer_options_init(&to, DISTILL_TRAINER_OPTIONS_VERSION));
    to.batch_size = 16;
    to.crop_padding = 1;
    to.hflip = 1;
    to.norm_count = 1;
    to.mean[0] = 0.5f;
    to.std[0] = 0.25f;
    to.prefetch = 0;
    distill_trainer *tr;
    /* the run without the cache's Resize is refused, naming it */
    OK(distill_trainer_create(&tr, s, ct, &to));
    assert_int_equal(distill_trainer_fit(tr, d, NULL), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "resize 10"));
    distill_trainer_free(tr);
    /* the same transforms train */
    to.resize = 10;
    to.center_crop[0] = to.center_crop[1] = 8;
    OK(distill_trainer_create(&tr, s, ct, &to));
    OK(distill_trainer_fit(tr, d, NULL));
    distill_trainer_free(tr);
    /* a RandomResizedCrop cannot be cached: refused with the reason */
    to.random_resized_crop[0] = to.random_resized_crop[1] = 8;
    OK(distill_trainer_create(&tr, s, ct, &to));
    assert_int_equal(distill_trainer_fit(tr, d, NULL), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "RandomResizedCrop"));
    distill_trainer_free(tr);
    /* and has no views to enumerate */
    lo.random_resized_crop[0] = lo.random_resized_crop[1] = 8;
    OK(distill_loader_create(&ld, d, &lo));
    float buf[C * H * W];
    assert_int_equal(loader_build_view(ld, 0, 0, buf), DISTILL_EINVAL);
    distill_loader_free(ld);

    distill_teacher_free(ct);
    distill_teacher_free(t);
    distill_model_free(tm);
    distill_model_free(s);
    distill_dataset_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_views_match),
        cmocka_unit_test(test_training_matches),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_transforms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

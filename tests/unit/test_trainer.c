/*
 * test_trainer.c - the training loop, teachers, evaluation and checkpoint
 * errors (include/distill/trainer.h).
 *
 * Most tests train the zoo "cnn" at half width (BatchNorm, dropout) on the
 * first 512 Fashion-MNIST training images with the e2e augmentation; when
 * the dataset is not installed a deterministic synthetic set of the same
 * shape stands in, so that nothing here is skipped.  Exact resume across
 * processes is in test_resume.c, real learning in test_learning.c.
 *
 * Properties held to:
 *   - same seed and threads: bit-identical weights and BatchNorm statistics,
 *     whether or not a validation set is evaluated between epochs;
 *   - a corrupt or foreign checkpoint is refused with DISTILL_EFORMAT and
 *     changes nothing; a fresh trainer loads a checkpoint of its own
 *     architecture; a failed save is DISTILL_EIO and leaves the file that
 *     was at the target as it was;
 *   - a non-finite batch or loss fails (or, with skip_nonfinite, skips) the
 *     step with weights and statistics exactly as before; a refused step
 *     leaves the whole training state (a checkpoint of it) as it was;
 *   - progress reports: steps, epochs, the cosine learning rate of
 *     distill_schedule_lr(), cancellation;
 *   - labels: KD with alpha < 1 needs them, alpha = 1 does not;
 *   - teachers: a model's copy, a host callback (with taps), an ensemble,
 *     a class-count mismatch; a teacher with zero weight changes nothing;
 *   - distill_evaluate() against a hand computation.
 *
 * An argument runs only the tests whose names match it: test_trainer 'test_teacher*'.
 */
#define _XOPEN_SOURCE 700 /* getrlimit, SIGXFSZ, dirent */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "distill.h"

#define SUBSET 512
#define BATCH 64
#define PER_EPOCH (SUBSET / BATCH)

static distill_dataset *g_train; /* SUBSET labelled training images */
static distill_dataset *g_val;   /* 256 test images */

/* ------------------------------------------------------------ helpers */

#define CHECK(call)                                                                   \
    do {                                                                              \
        int rc_ = (call);                                                             \
        if (rc_ != DISTILL_OK)                                                        \
            fail_msg("%s -> %d (%s): %s", #call, rc_, distill_strerror(rc_),           \
                     distill_last_error());                                           \
    } while (0)

static uint64_t hash64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A number in [0, 1) from (a, b). */
static float unit(uint64_t a, uint64_t b)
{
    return (float)((double)(hash64(a * 1000003u + b) >> 11) / 9007199254740992.0);
}

/* Ten classes of 28x28 images: a bright square whose place depends on the
 * class, over noise.  Used when Fashion-MNIST is not installed. */
static distill_dataset *synthetic(int64_t n, uint64_t seed)
{
    float *img = malloc((size_t)n * 784 * sizeof *img);
    int32_t *lab = malloc((size_t)n * sizeof *lab);
    assert_non_null(img);
    assert_non_null(lab);
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(hash64(seed * 7919u + (uint64_t)i) % 10);
        lab[i] = c;
        int r0 = 2 + (c / 5) * 12, c0 = 2 + (c % 5) * 5;
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++) {
                float v = 0.3f * unit(seed + (uint64_t)i, (uint64_t)(y * 28 + x));
                if (y >= r0 && y < r0 + 10 && x >= c0 && x < c0 + 5)
                    v += 0.6f;
                img[i * 784 + y * 28 + x] = v;
            }
    }
    distill_dataset *ds;
    int64_t dims[3] = {1, 28, 28};
    CHECK(distill_dataset_from_memory(&ds, n, dims, img, lab, 10, DISTILL_MEMORY_COPY));
    free(img);
    free(lab);
    return ds;
}

static int group_setup(void **state)
{
    (void)state;
    distill_dataset *all;
    if (distill_dataset_fashion_mnist(&all, NULL, 1) == DISTILL_OK) {
        if (distill_dataset_subset(&g_train, all, 0, SUBSET))
            return -1;
        distill_dataset_free(all);
        if (distill_dataset_fashion_mnist(&all, NULL, 0) || distill_dataset_subset(&g_val, all, 0, 256))
            return -1;
        distill_dataset_free(all);
    } else {
        fprintf(stderr, "test_trainer: Fashion-MNIST not found, using synthetic images\n");
        g_train = synthetic(SUBSET, 1);
        g_val = synthetic(256, 2);
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    distill_dataset_free(g_train);
    distill_dataset_free(g_val);
    return 0;
}

static distill_model *make_model(const char *name, int width_pct, uint64_t seed)
{
    distill_zoo_options zo;
    CHECK(distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION));
    zo.width_mult_pct = width_pct;
    zo.seed = seed;
    distill_model *m;
    CHECK(distill_zoo_create(&m, name, &zo));
    return m;
}

/* The e2e recipe at batch BATCH. */
static distill_trainer_options recipe(void)
{
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.batch_size = BATCH;
    o.seed = 7;
    o.crop_padding = 2;
    o.hflip = 1;
    o.norm_count = 1;
    o.mean[0] = 0.2860f;
    o.std[0] = 0.3530f;
    return o;
}

/* A copy of the parameter and statistics blocks. */
typedef struct snap {
    float *p, *s;
    size_t np, ns;
} snap;

static snap snap_take(distill_model *m)
{
    snap x;
    const float *p = distill_model_param_block(m, &x.np);
    const float *s = distill_model_stats_block(m, &x.ns);
    x.p = malloc((x.np + 1) * sizeof(float));
    x.s = malloc((x.ns + 1) * sizeof(float));
    assert_non_null(x.p);
    assert_non_null(x.s);
    memcpy(x.p, p, x.np * sizeof(float));
    memcpy(x.s, s, x.ns * sizeof(float));
    return x;
}

static void snap_free(snap *x)
{
    free(x->p);
    free(x->s);
}

/* 1 if m's parameters and statistics are bit for bit those of x. */
static int snap_same(const snap *x, distill_model *m)
{
    size_t np, ns;
    const float *p = distill_model_param_block(m, &np);
    const float *s = distill_model_stats_block(m, &ns);
    return np == x->np && ns == x->ns && memcmp(p, x->p, np * sizeof(float)) == 0 &&
           memcmp(s, x->s, ns * sizeof(float)) == 0;
}

static double snap_maxdiff(const snap *a, const snap *b)
{
    assert_int_equal(a->np, b->np);
    double d = 0;
    for (size_t i = 0; i < a->np; i++)
        d = fmax(d, fabs((double)a->p[i] - (double)b->p[i]));
    return d;
}

/* A normalized batch of the first n images of g_train. */
static distill_tensor *batch_of(int64_t n, int32_t *labels)
{
    int64_t d[4] = {n, 1, 28, 28};
    distill_tensor *x;
    CHECK(distill_tensor_create(&x, 4, d));
    float *p = distill_tensor_data(x);
    for (int64_t i = 0; i < n; i++) {
        CHECK(distill_dataset_get(g_train, i, p + i * 784, 784, labels ? &labels[i] : NULL));
        for (int j = 0; j < 784; j++)
            p[i * 784 + j] = (p[i * 784 + j] - 0.2860f) / 0.3530f;
    }
    return x;
}

static int read_whole(const char *path, unsigned char **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc((size_t)n + 1);
    *size = fread(*data, 1, (size_t)n, f);
    fclose(f);
    return *size == (size_t)n ? 0 : -1;
}

static void write_whole(const char *path, const unsigned char *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, size, f), size);
    assert_int_equal(fclose(f), 0);
}

/* ------------------------------------------------------ determinism */

static void train_once(uint64_t seed, int64_t steps, const distill_dataset *val, snap *out)
{
    distill_model *m = make_model("cnn", 50, 3);
    distill_trainer_options o = recipe();
    o.seed = seed;
    o.epochs = 2;
    o.max_steps = steps;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    CHECK(distill_trainer_fit(tr, g_train, val));
    assert_int_equal(distill_trainer_steps_done(tr), steps);
    *out = snap_take(m);
    distill_trainer_free(tr);
    distill_model_free(m);
}

static void test_determinism(void **state)
{
    (void)state;
    distill_model *init = make_model("cnn", 50, 3);
    snap s0 = snap_take(init);
    distill_model_free(init);

    /* 12 steps: across the end of the first epoch (8 batches) */
    snap a, b, c, v;
    train_once(7, 12, NULL, &a);
    train_once(7, 12, NULL, &b);
    train_once(8, 12, NULL, &c);
    /* evaluating on a validation set after the first epoch is inference
     * only: it must not change what the second epoch does */
    train_once(7, 12, g_val, &v);
    assert_int_equal(a.np, b.np);
    assert_int_equal(a.ns, b.ns);
    if (memcmp(a.p, b.p, a.np * sizeof(float)) != 0)
        fail_msg("two runs with the same seed differ in their weights (max diff %g)",
                 snap_maxdiff(&a, &b));
    assert_memory_equal(a.s, b.s, a.ns * sizeof(float));
    /* the runs did train, and the seed matters (data order, augmentation) */
    assert_true(snap_maxdiff(&a, &s0) > 1e-3);
    assert_memory_not_equal(a.s, s0.s, a.ns * sizeof(float));
    assert_true(snap_maxdiff(&a, &c) > 0);
    if (memcmp(a.p, v.p, a.np * sizeof(float)) != 0 || memcmp(a.s, v.s, a.ns * sizeof(float)))
        fail_msg("validating after epoch 1 changed the weights trained in epoch 2 (max diff %g)",
                 snap_maxdiff(&a, &v));
    snap_free(&v);
    snap_free(&s0);
    snap_free(&a);
    snap_free(&b);
    snap_free(&c);
}

/* ------------------------------------------------------ checkpoints */

static void test_checkpoint_corrupt(void **state)
{
    (void)state;
    distill_model *m = make_model("cnn", 50, 3);
    distill_trainer_options o = recipe();
    o.max_steps = 3;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    CHECK(distill_trainer_fit(tr, g_train, NULL));
    CHECK(distill_trainer_save_checkpoint(tr, "good.ckpt"));
    snap saved = snap_take(m);

    /* move on, so that a load that changed anything would show */
    int32_t lab[BATCH];
    distill_tensor *x = batch_of(BATCH, lab);
    CHECK(distill_trainer_step(tr, x, lab, NULL));
    CHECK(distill_trainer_step(tr, x, lab, NULL));
    assert_int_equal(distill_trainer_steps_done(tr), 5);
    snap now = snap_take(m);
    assert_false(snap_same(&saved, m));

    unsigned char *data = NULL;
    size_t size = 0;
    assert_int_equal(read_whole("good.ckpt", &data, &size), 0);
    assert_true(size > 1000);

    /* truncated: at several lengths, header included */
    size_t cuts[] = {0, 10, 16, 40, size / 3, size / 2, size - 21, size - 4, size - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        write_whole("bad.ckpt", data, cuts[k]);
        int rc = distill_trainer_load_checkpoint(tr, "bad.ckpt");
        if (rc != DISTILL_EFORMAT)
            fail_msg("truncated to %zu of %zu bytes: %d (%s), expected DISTILL_EFORMAT", cuts[k],
                     size, rc, distill_last_error());
        assert_true(snap_same(&now, m));
        assert_int_equal(distill_trainer_steps_done(tr), 5);
    }
    /* one bit flipped: in the section headers, the payloads, the CRCs, the end */
    size_t flips[] = {16, 21, 24, 40, 100, size / 4, size / 2, 3 * size / 4, size - 30, size - 8,
                      size - 1};
    for (size_t k = 0; k < sizeof flips / sizeof flips[0]; k++)
        for (int bit = 0; bit < 8; bit += 3) {
            data[flips[k]] ^= (unsigned char)(1u << bit);
            write_whole("bad.ckpt", data, size);
            data[flips[k]] ^= (unsigned char)(1u << bit);
            int rc = distill_trainer_load_checkpoint(tr, "bad.ckpt");
            if (rc != DISTILL_EFORMAT)
                fail_msg("bit %d of byte %zu of %zu flipped: %d (%s), expected DISTILL_EFORMAT",
                         bit, flips[k], size, rc, distill_last_error());
            assert_true(snap_same(&now, m));
            assert_int_equal(distill_trainer_steps_done(tr), 5);
        }
    /* trailing garbage */
    unsigned char *longer = malloc(size + 8);
    memcpy(longer, data, size);
    memset(longer + size, 0x5a, 8);
    write_whole("bad.ckpt", longer, size + 8);
    free(longer);
    assert_int_equal(distill_trainer_load_checkpoint(tr, "bad.ckpt"), DISTILL_EFORMAT);
    assert_true(snap_same(&now, m));
    /* a missing file */
    int rc = distill_trainer_load_checkpoint(tr, "no-such.ckpt");
    assert_true(rc == DISTILL_ENOTFOUND || rc == DISTILL_EIO);
    assert_true(snap_same(&now, m));

    /* the intact file still loads, and brings back the saved state */
    CHECK(distill_trainer_load_checkpoint(tr, "good.ckpt"));
    assert_true(snap_same(&saved, m));
    assert_int_equal(distill_trainer_steps_done(tr), 3);

    free(data);
    snap_free(&saved);
    snap_free(&now);
    distill_tensor_free(x);
    distill_trainer_free(tr);
    distill_model_free(m);
    remove("good.ckpt");
    remove("bad.ckpt");
}

static void test_checkpoint_other_architecture(void **state)
{
    (void)state;
    distill_model *a = make_model("cnn", 50, 3);
    distill_trainer *ta;
    distill_trainer_options o = recipe();
    o.max_steps = 1;
    CHECK(distill_trainer_create(&ta, a, NULL, &o));
    CHECK(distill_trainer_fit(ta, g_train, NULL));
    CHECK(distill_trainer_save_checkpoint(ta, "a.ckpt"));

    /* control: a fresh trainer over the same architecture loads it (the
     * failures below are about the architecture, not the fresh trainer) */
    {
        distill_model *c = make_model("cnn", 50, 99);
        distill_trainer *tc;
        CHECK(distill_trainer_create(&tc, c, NULL, &o));
        CHECK(distill_trainer_load_checkpoint(tc, "a.ckpt"));
        assert_int_equal(distill_trainer_steps_done(tc), 1);
        size_t n1, n2;
        const float *pc = distill_model_param_block(c, &n1);
        const float *pa = distill_model_param_block(a, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(pc, pa, n2 * sizeof(float));
        /* a checkpoint written before any step loads too */
        distill_trainer_free(tc);
        CHECK(distill_trainer_create(&tc, c, NULL, &o));
        CHECK(distill_trainer_save_checkpoint(tc, "fresh.ckpt"));
        distill_trainer_free(tc);
        CHECK(distill_trainer_create(&tc, c, NULL, &o));
        CHECK(distill_trainer_load_checkpoint(tc, "fresh.ckpt"));
        distill_trainer_free(tc);
        distill_model_free(c);
        remove("fresh.ckpt");
    }
    /* the same zoo model at another width; and another model altogether */
    const char *names[] = {"cnn", "resnet8"};
    int widths[] = {100, 50};
    for (int k = 0; k < 2; k++) {
        distill_model *b = make_model(names[k], widths[k], 3);
        distill_trainer *tb;
        CHECK(distill_trainer_create(&tb, b, NULL, &o));
        snap before = snap_take(b);
        int rc = distill_trainer_load_checkpoint(tb, "a.ckpt");
        if (rc != DISTILL_EFORMAT)
            fail_msg("%s at %d%%: loading a cnn-50%% checkpoint gave %d (%s)", names[k], widths[k],
                     rc, distill_last_error());
        assert_true(strlen(distill_last_error()) > 0);
        assert_true(snap_same(&before, b));
        assert_int_equal(distill_trainer_steps_done(tb), 0);
        snap_free(&before);
        distill_trainer_free(tb);
        distill_model_free(b);
    }
    /* a model file is not a checkpoint */
    CHECK(distill_model_save(a, "a.model"));
    snap before = snap_take(a);
    assert_int_equal(distill_trainer_load_checkpoint(ta, "a.model"), DISTILL_EFORMAT);
    assert_true(snap_same(&before, a));
    snap_free(&before);
    distill_trainer_free(ta);
    distill_model_free(a);
    remove("a.ckpt");
    remove("a.model");
}

/* Names in "." that start with prefix. */
static int count_files(const char *prefix)
{
    DIR *d = opendir(".");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    return n;
}

static void test_checkpoint_save_errors(void **state)
{
    (void)state;
    distill_model *m = make_model("cnn", 50, 3);
    distill_trainer_options o = recipe();
    o.max_steps = 1;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    CHECK(distill_trainer_fit(tr, g_train, NULL));

    /* a directory that does not exist */
    assert_int_equal(distill_trainer_save_checkpoint(tr, "no-such-dir/x.ckpt"), DISTILL_EIO);
    assert_non_null(strstr(distill_last_error(), "no-such-dir"));
    struct stat st;
    assert_int_not_equal(stat("no-such-dir", &st), 0);

    /* a save that fails half way (the file-size limit stops the writes)
     * leaves the checkpoint already at the target as it was, and no
     * temporary file behind */
    CHECK(distill_trainer_save_checkpoint(tr, "keep.ckpt"));
    unsigned char *before = NULL, *after = NULL;
    size_t nb = 0, na = 0;
    assert_int_equal(read_whole("keep.ckpt", &before, &nb), 0);
    int32_t lab[BATCH];
    distill_tensor *x = batch_of(BATCH, lab);
    CHECK(distill_trainer_step(tr, x, lab, NULL));

    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 4096;
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = distill_trainer_save_checkpoint(tr, "keep.ckpt");
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, oldsig);
    if (rc != DISTILL_EIO)
        fail_msg("a save cut short gave %d (%s), expected DISTILL_EIO", rc, distill_last_error());
    assert_int_equal(read_whole("keep.ckpt", &after, &na), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(after, before, nb);
    assert_int_equal(count_files("keep.ckpt"), 1);
    free(after);

    /* and the kept checkpoint is still good */
    CHECK(distill_trainer_load_checkpoint(tr, "keep.ckpt"));
    assert_int_equal(distill_trainer_steps_done(tr), 1);

    free(before);
    distill_tensor_free(x);
    distill_trainer_free(tr);
    distill_model_free(m);
    remove("keep.ckpt");
}

/* ------------------------------------------------------ non-finite */

static void test_nonfinite_batch(void **state)
{
    (void)state;
    distill_model *m = make_model("cnn", 50, 3);
    distill_trainer_options o = recipe();
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    int32_t lab[BATCH];
    distill_tensor *x = batch_of(BATCH, lab);
    double loss = 0;
    CHECK(distill_trainer_step(tr, x, lab, &loss));
    assert_true(isfinite(loss) && loss > 0);
    snap s = snap_take(m);

    distill_tensor *bad;
    CHECK(distill_tensor_clone(&bad, x));
    distill_tensor_data(bad)[5 * 784 + 300] = NAN;
    assert_int_equal(distill_trainer_step(tr, bad, lab, &loss), DISTILL_ENONFINITE);
    assert_true(snap_same(&s, m));
    assert_int_equal(distill_trainer_steps_done(tr), 1);
    distill_tensor_data(bad)[5 * 784 + 300] = INFINITY;
    assert_int_equal(distill_trainer_step(tr, bad, lab, &loss), DISTILL_ENONFINITE);
    assert_true(snap_same(&s, m));

    /* the trainer goes on as if nothing happened */
    CHECK(distill_trainer_step(tr, x, lab, &loss));
    assert_int_equal(distill_trainer_steps_done(tr), 2);
    assert_false(snap_same(&s, m));
    snap_free(&s);
    distill_tensor_free(bad);
    distill_tensor_free(x);
    distill_trainer_free(tr);
    distill_model_free(m);
}

static void test_nonfinite_skip_step(void **state)
{
    (void)state;
    distill_model *m = make_model("cnn", 50, 3);
    distill_trainer_options o = recipe();
    o.skip_nonfinite = 1;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    int32_t lab[BATCH];
    distill_tensor *x = batch_of(BATCH, lab);
    CHECK(distill_trainer_step(tr, x, lab, NULL));
    snap s = snap_take(m);
    distill_tensor *bad;
    CHECK(distill_tensor_clone(&bad, x));
    distill_tensor_data(bad)[17] = NAN;
    double loss = 0;
    int rc = distill_trainer_step(tr, bad, lab, &loss);
    if (rc != DISTILL_OK)
        fail_msg("skip_nonfinite = 1: a NaN batch gave %d (%s), expected a skipped step", rc,
                 distill_last_error());
    assert_true(isnan(loss));
    assert_int_equal(distill_trainer_steps_done(tr), 1);
    assert_true(snap_same(&s, m));
    snap_free(&s);
    distill_tensor_free(bad);
    distill_tensor_free(x);
    distill_trainer_free(tr);
    distill_model_free(m);
}

typedef struct progress_log {
    int calls;
    int ends;
    distill_progress last;
    double first_loss;
    int cancel_at;        /* > 0: return nonzero at this step */
    int64_t steps[64];
    int epochs[64];
    int end_flags[64];
    double lrs[64], losses[64], vals[64], ips[64], eta[64];
    int n_terms[64];
    double term0[64];
    int bad_term_name;
    int64_t total_steps;
    int epochs_field;
} progress_log;

static int record(const distill_progress *p, void *payload)
{
    progress_log *g = payload;
    if (g->calls < 64) {
        g->steps[g->calls] = p->step;
        g->epochs[g->calls] = p->epoch;
        g->end_flags[g->calls] = p->end_of_epoch;
        g->lrs[g->calls] = p->lr;
        g->losses[g->calls] = p->loss;
        g->vals[g->calls] = p->val_accuracy;
        g->ips[g->calls] = p->images_per_sec;
        g->eta[g->calls] = p->eta_seconds;
        g->n_terms[g->calls] = p->n_terms;
        g->term0[g->calls] = p->n_terms > 0 ? p->term_values[0] : NAN;
        if (p->n_terms != 1 || strcmp(p->term_names[0], "ce") != 0)
            g->bad_term_name = 1;
    }
    if (g->calls == 0)
        g->first_loss = p->loss;
    g->calls++;
    g->ends += p->end_of_epoch != 0;
    g->total_steps = p->total_steps;
    g->epochs_field = p->epochs;
    g->last = *p;
    return g->cancel_at > 0 && p->step >= g->cancel_at;
}

/* A copy of g_train (or n of its images) with NaN in the images listed. */
static distill_dataset *with_nans(const int64_t *which, int n_which, int every)
{
    int64_t n = distill_dataset_size(g_train);
    float *img = malloc((size_t)n * 784 * sizeof *img);
    int32_t *lab = malloc((size_t)n * sizeof *lab);
    for (int64_t i = 0; i < n; i++) {
        CHECK(distill_dataset_get(g_train, i, img + i * 784, 784, &lab[i]));
        if (every)
            img[i * 784 + 14 * 28 + 14] = NAN; /* the centre survives any 2-pixel crop */
    }
    for (int k = 0; k < n_which; k++)
        img[which[k] * 784 + 14 * 28 + 14] = NAN;
    distill_dataset *ds;
    int64_t dims[3] = {1, 28, 28};
    CHECK(distill_dataset_from_memory(&ds, n, dims, img, lab, 10, DISTILL_MEMORY_COPY));
    free(img);
    free(lab);
    return ds;
}

static void test_nonfinite_skip_fit(void **state)
{
    (void)state;
    /* one poisoned image: one batch per epoch is skipped and counted */
    int64_t one = 100;
    distill_dataset *ds = with_nans(&one, 1, 0);
    distill_model *m = make_model("cnn", 50, 3);
    distill_trainer_options o = recipe();
    o.epochs = 2;
    o.skip_nonfinite = 1;
    progress_log g;
    memset(&g, 0, sizeof g);
    o.progress = record;
    o.progress_payload = &g;
    o.progress_every = 1;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    CHECK(distill_trainer_fit(tr, ds, NULL));
    assert_int_equal(g.last.skipped_steps, 2);
    assert_int_equal(distill_trainer_steps_done(tr), 2 * PER_EPOCH - 2);
    distill_trainer_free(tr);

    /* without skipping, the same data fails the fit */
    o.skip_nonfinite = 0;
    o.progress = NULL;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    assert_int_equal(distill_trainer_fit(tr, ds, NULL), DISTILL_ENONFINITE);
    distill_trainer_free(tr);
    distill_model_free(m);
    distill_dataset_free(ds);

    /* every image poisoned: every step skipped, the model as it was */
    ds = with_nans(NULL, 0, 1);
    m = make_model("cnn", 50, 3);
    snap s = snap_take(m);
    o.skip_nonfinite = 1;
    o.epochs = 1;
    memset(&g, 0, sizeof g);
    o.progress = record;
    o.progress_payload = &g;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    CHECK(distill_trainer_fit(tr, ds, NULL));
    assert_int_equal(g.last.skipped_steps, PER_EPOCH);
    assert_int_equal(distill_trainer_steps_done(tr), 0);
    assert_true(snap_same(&s, m));
    snap_free(&s);
    distill_trainer_free(tr);
    distill_model_free(m);
    distill_dataset_free(ds);
}

typedef struct nan_loss {
    int calls;
    int nan_from;  /* return NaN from this call on */
    int destroyed;
} nan_loss;

static int nan_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                       void *payload)
{
    nan_loss *p = payload;
    int call = p->calls++;
    /* a mean squared distance to the teacher's logits */
    double s = 0;
    for (int64_t i = 0; i < b->n * b->classes; i++) {
        double d = (double)b->student_logits[i] - (double)b->teacher_logits[i];
        s += d * d;
        if (g && g->student_logits)
            g->student_logits[i] += (float)(2.0 * d / (double)(b->n * b->classes));
    }
    *loss = call >= p->nan_from ? NAN : s / (double)(b->n * b->classes);
    return DISTILL_OK;
}

static void nan_destroy(void *payload)
{
    ((nan_loss *)payload)->destroyed++;
}

static void test_custom_loss_nan(void **state)
{
    (void)state;
    distill_model *tm = make_model("cnn", 50, 11);
    distill_teacher *t;
    CHECK(distill_teacher_from_model(&t, tm));
    for (int skip = 0; skip <= 1; skip++) {
        distill_model *m = make_model("cnn", 50, 3);
        distill_trainer_options o = recipe();
        o.skip_nonfinite = skip;
        distill_trainer *tr;
        CHECK(distill_trainer_create(&tr, m, t, &o));
        nan_loss nl = {0, 2, 0};
        static const distill_loss_vtable vt = {DISTILL_LOSS_VTABLE_VERSION, "nan_after_2",
                                               nan_forward, nan_destroy};
        distill_loss *l;
        CHECK(distill_loss_create_custom(&l, &vt, &nl, NULL, NULL));
        CHECK(distill_trainer_add_loss(tr, l, 1.0f));
        int32_t lab[BATCH];
        distill_tensor *x = batch_of(BATCH, lab);
        double loss;
        CHECK(distill_trainer_step(tr, x, lab, &loss));
        CHECK(distill_trainer_step(tr, x, lab, &loss));
        assert_true(isfinite(loss));
        snap s = snap_take(m);
        /* the forward ran in training mode (BatchNorm statistics moved) before
         * the loss was found NaN: everything must be put back */
        int rc = distill_trainer_step(tr, x, lab, &loss);
        assert_int_equal(nl.calls, 3);
        if (skip) {
            assert_int_equal(rc, DISTILL_OK);
            assert_true(isnan(loss));
        } else {
            assert_int_equal(rc, DISTILL_ENONFINITE);
        }
        assert_true(snap_same(&s, m));
        assert_int_equal(distill_trainer_steps_done(tr), 2);
        snap_free(&s);
        distill_tensor_free(x);
        distill_trainer_free(tr);
        assert_int_equal(nl.destroyed, 1);
        distill_model_free(m);
    }
    distill_teacher_free(t);
    distill_model_free(tm);
}

/* A refused step leaves the whole training state as it was: the student's
 * weights, statistics and dropout generator, the optimizer, and an
 * adapter's weights and statistics; a checkpoint shows all of them. */
static void test_refused_step_changes_nothing(void **state)
{
    (void)state;
    distill_model *tm = make_model("cnn", 100, 11);
    distill_teacher *t;
    CHECK(distill_teacher_from_model(&t, tm));
    distill_model *m = make_model("cnn", 50, 3);
    distill_trainer_options o = recipe();
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, t, &o));
    distill_loss *l;
    CHECK(distill_loss_fitnets(&l, "pool2", "pool2")); /* 32 -> 64 channels: an adapter */
    CHECK(distill_trainer_add_loss(tr, l, 0.5f));
    nan_loss nl = {0, 2, 0};
    static const distill_loss_vtable vt = {DISTILL_LOSS_VTABLE_VERSION, "nan_after_2",
                                           nan_forward, NULL};
    CHECK(distill_loss_create_custom(&l, &vt, &nl, NULL, NULL));
    CHECK(distill_trainer_add_loss(tr, l, 1.0f));
    int32_t lab[BATCH];
    distill_tensor *x = batch_of(BATCH, lab);
    CHECK(distill_trainer_step(tr, x, lab, NULL));
    CHECK(distill_trainer_step(tr, x, lab, NULL));
    CHECK(distill_trainer_save_checkpoint(tr, "before.ckpt"));
    assert_int_equal(distill_trainer_step(tr, x, lab, NULL), DISTILL_ENONFINITE);
    assert_int_equal(distill_trainer_step(tr, x, lab, NULL), DISTILL_ENONFINITE);
    CHECK(distill_trainer_save_checkpoint(tr, "after.ckpt"));
    unsigned char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(read_whole("before.ckpt", &a, &na), 0);
    assert_int_equal(read_whole("after.ckpt", &b, &nb), 0);
    assert_int_equal(na, nb);
    size_t i = 0;
    while (i < na && a[i] == b[i])
        i++;
    if (i < na)
        fail_msg("the checkpoints before and after two refused steps differ from byte %zu of %zu",
                 i, na);
    free(a);
    free(b);
    distill_tensor_free(x);
    distill_trainer_free(tr);
    distill_model_free(m);
    distill_teacher_free(t);
    distill_model_free(tm);
    remove("before.ckpt");
    remove("after.ckpt");
}

/* ------------------------------------------------------ progress */

static void test_progress(void **state)
{
    (void)state;
    distill_model *m = make_model("cnn", 50, 3);
    distill_trainer_options o = recipe();
    o.epochs = 2;
    o.progress = record;
    progress_log g;
    memset(&g, 0, sizeof g);
    o.progress_payload = &g;
    o.progress_every = 1;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    CHECK(distill_trainer_fit(tr, g_train, g_val));

    /* one call per step and one after each epoch */
    assert_int_equal(g.calls, 2 * PER_EPOCH + 2);
    assert_int_equal(g.ends, 2);
    assert_int_equal(g.total_steps, 2 * PER_EPOCH);
    assert_int_equal(g.epochs_field, 2);
    assert_false(g.bad_term_name);

    distill_schedule_options s;
    CHECK(distill_schedule_options_init(&s, DISTILL_SCHEDULE_OPTIONS_VERSION));
    s.kind = DISTILL_SCHEDULE_COSINE;
    s.base_lr = o.lr;
    s.total_steps = 2 * PER_EPOCH;
    int64_t expect_step = 1;
    for (int k = 0; k < g.calls; k++) {
        int epoch = expect_step <= PER_EPOCH ? 1 : 2;
        if (g.end_flags[k]) {
            /* after the epoch's last step; validation accuracy measured */
            assert_int_equal(g.steps[k], expect_step - 1);
            assert_int_equal((expect_step - 1) % PER_EPOCH, 0);
            assert_int_equal(g.epochs[k], (int)((expect_step - 1) / PER_EPOCH));
            assert_true(g.vals[k] >= 0 && g.vals[k] <= 1);
            /* the epoch's throughput, even right after an interval report */
            assert_true(g.ips[k] > 0 && isfinite(g.ips[k]));
            continue;
        }
        assert_int_equal(g.steps[k], expect_step);
        assert_int_equal(g.epochs[k], epoch);
        assert_true(g.vals[k] == -1);
        /* the rate the step used: the schedule at the step's index */
        double lr;
        CHECK(distill_schedule_lr(&s, expect_step - 1, &lr));
        if (fabs(g.lrs[k] - lr) > 1e-12)
            fail_msg("step %lld: lr %.17g, the cosine schedule says %.17g",
                     (long long)expect_step, g.lrs[k], lr);
        assert_true(isfinite(g.losses[k]) && g.losses[k] > 0);
        assert_int_equal(g.n_terms[k], 1);
        assert_true(g.ips[k] > 0 && isfinite(g.ips[k]));
        assert_true(g.eta[k] >= 0 && isfinite(g.eta[k]));
        assert_true(fabs(g.term0[k] - g.losses[k]) <= 1e-12 * g.losses[k]);
        expect_step++;
    }
    assert_int_equal(expect_step - 1, 2 * PER_EPOCH);
    /* the rate falls from base_lr towards 0 */
    assert_true(g.lrs[0] == o.lr);
    assert_true(g.last.lr < 0.01);
    assert_true(g.last.eta_seconds == 0);
    assert_int_equal(g.last.skipped_steps, 0);
    distill_trainer_free(tr);
    distill_model_free(m);
}

static void test_progress_cancel(void **state)
{
    (void)state;
    distill_model *m = make_model("cnn", 50, 3);
    distill_trainer_options o = recipe();
    o.epochs = 2;
    o.progress = record;
    progress_log g;
    memset(&g, 0, sizeof g);
    g.cancel_at = 3;
    o.progress_payload = &g;
    o.progress_every = 1;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    assert_int_equal(distill_trainer_fit(tr, g_train, NULL), DISTILL_ECANCELLED);
    assert_int_equal(g.calls, 3);
    assert_int_equal(distill_trainer_steps_done(tr), 3);
    assert_true(strlen(distill_last_error()) > 0);

    /* a later fit resumes from where it stopped and runs to the end */
    g.cancel_at = 0;
    CHECK(distill_trainer_fit(tr, g_train, NULL));
    assert_int_equal(distill_trainer_steps_done(tr), 2 * PER_EPOCH);
    distill_trainer_free(tr);
    distill_model_free(m);
}

/* ------------------------------------------------------ labels */

static void test_labels(void **state)
{
    (void)state;
    distill_dataset *unlab;
    CHECK(distill_dataset_subset(&unlab, g_train, 0, SUBSET));
    CHECK(distill_dataset_drop_labels(unlab));
    distill_model *tm = make_model("cnn", 100, 11);
    distill_teacher *t;
    CHECK(distill_teacher_from_model(&t, tm));

    distill_trainer_options o = recipe();
    o.max_steps = 2;
    /* KD with a CE part needs labels */
    distill_model *m = make_model("cnn", 50, 3);
    snap s = snap_take(m);
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, t, &o));
    distill_loss *l;
    CHECK(distill_loss_kd(&l, 4.0f, 0.9f));
    CHECK(distill_trainer_add_loss(tr, l, 1.0f));
    assert_int_equal(distill_trainer_fit(tr, unlab, NULL), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "label"));
    distill_tensor *x = batch_of(BATCH, NULL);
    assert_int_equal(distill_trainer_step(tr, x, NULL, NULL), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "label"));
    assert_int_equal(distill_trainer_steps_done(tr), 0);
    assert_true(snap_same(&s, m));
    distill_trainer_free(tr);

    /* the default loss with a teacher (kd, alpha 0.9) too */
    CHECK(distill_trainer_create(&tr, m, t, &o));
    assert_int_equal(distill_trainer_fit(tr, unlab, NULL), DISTILL_EINVAL);
    distill_trainer_free(tr);
    /* and cross-entropy without a teacher */
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    assert_int_equal(distill_trainer_fit(tr, unlab, NULL), DISTILL_EINVAL);
    distill_trainer_free(tr);
    assert_true(snap_same(&s, m));

    /* alpha = 1 learns from the teacher alone */
    CHECK(distill_trainer_create(&tr, m, t, &o));
    CHECK(distill_loss_kd(&l, 4.0f, 1.0f));
    CHECK(distill_trainer_add_loss(tr, l, 1.0f));
    CHECK(distill_trainer_fit(tr, unlab, NULL));
    assert_int_equal(distill_trainer_steps_done(tr), 2);
    assert_false(snap_same(&s, m));
    double loss;
    CHECK(distill_trainer_step(tr, x, NULL, &loss));
    assert_true(isfinite(loss) && loss >= 0);
    distill_trainer_free(tr);

    snap_free(&s);
    distill_tensor_free(x);
    distill_model_free(m);
    distill_teacher_free(t);
    distill_model_free(tm);
    distill_dataset_free(unlab);
}

/* ------------------------------------------------------ teachers */

/* Give every BatchNorm non-trivial running statistics, so that inference
 * differs from a freshly initialized net. */
static void perturb_stats(distill_model *m, uint64_t seed)
{
    for (size_t i = 0; i < distill_model_param_count(m); i++) {
        distill_param_info p = DISTILL_PARAM_INFO_INIT;
        CHECK(distill_model_param(m, i, &p));
        for (int64_t j = 0; j < p.numel; j++) {
            float u = unit(seed + i, (uint64_t)j);
            if (p.kind == DISTILL_PARAM_RUNNING_MEAN)
                p.data[j] = 0.4f * (u - 0.5f);
            else if (p.kind == DISTILL_PARAM_RUNNING_VAR)
                p.data[j] = 0.5f + u;
            else if (p.kind == DISTILL_PARAM_BN_SCALE)
                p.data[j] = 0.75f + 0.5f * u;
            else if (p.kind == DISTILL_PARAM_BN_SHIFT)
                p.data[j] = 0.2f * (u - 0.5f);
        }
    }
}

static double max_abs_diff(const distill_tensor *a, const distill_tensor *b)
{
    assert_int_equal(distill_tensor_numel(a), distill_tensor_numel(b));
    const float *p = distill_tensor_data_const(a), *q = distill_tensor_data_const(b);
    double d = 0;
    for (int64_t i = 0; i < distill_tensor_numel(a); i++)
        d = fmax(d, fabs((double)p[i] - (double)q[i]));
    return d;
}

static distill_tensor *logits_tensor(int64_t n, int classes)
{
    int64_t d[2] = {n, classes};
    distill_tensor *t;
    CHECK(distill_tensor_create(&t, 2, d));
    return t;
}

static void test_teacher_from_model(void **state)
{
    (void)state;
    distill_model *m = make_model("resnet8", 100, 5);
    perturb_stats(m, 99);
    distill_teacher *t;
    CHECK(distill_teacher_from_model(&t, m));
    assert_int_equal(distill_teacher_classes(t), 10);
    int64_t sizes[] = {7, 1, 7};
    for (int k = 0; k < 3; k++) {
        distill_tensor *x = batch_of(sizes[k], NULL);
        distill_tensor *a = logits_tensor(sizes[k], 10), *b = logits_tensor(sizes[k], 10);
        CHECK(distill_teacher_forward(t, x, a));
        CHECK(distill_model_forward(m, x, DISTILL_MODE_INFERENCE, b));
        double d = max_abs_diff(a, b);
        if (d > 1e-5)
            fail_msg("batch %lld: teacher logits differ from the model's by %g",
                     (long long)sizes[k], d);
        distill_tensor_free(x);
        distill_tensor_free(a);
        distill_tensor_free(b);
    }
    /* the teacher is a copy: changing the model afterwards does not reach it */
    distill_tensor *x = batch_of(4, NULL);
    distill_tensor *a = logits_tensor(4, 10), *b = logits_tensor(4, 10);
    CHECK(distill_teacher_forward(t, x, a));
    distill_param_info fc = DISTILL_PARAM_INFO_INIT;
    CHECK(distill_model_find_param(m, "fc.weight", &fc));
    for (int64_t j = 0; j < fc.numel; j++)
        fc.data[j] *= 3.0f;
    CHECK(distill_teacher_forward(t, x, b));
    assert_memory_equal(distill_tensor_data(a), distill_tensor_data(b), 40 * sizeof(float));
    /* wrong logits shape */
    distill_tensor *w = logits_tensor(4, 9);
    assert_int_equal(distill_teacher_forward(t, x, w), DISTILL_ESHAPE);
    distill_tensor_free(w);
    distill_tensor_free(x);
    distill_tensor_free(a);
    distill_tensor_free(b);
    distill_teacher_free(t);
    distill_model_free(m);
}

/* A host teacher: runs another distill_model, and serves its "pool2" node
 * as a tap. */
typedef struct host_teacher {
    distill_model *m;
    int calls;
    int64_t last_n;
    int last_taps;
    int destroyed;
} host_teacher;

static int host_forward(const distill_tensor *images, distill_tensor *logits, int n_taps,
                        const char *const *tap_names, distill_tensor *const *taps, void *payload)
{
    host_teacher *h = payload;
    h->calls++;
    h->last_n = distill_tensor_dim(images, 0);
    h->last_taps = n_taps;
    int rc = distill_model_forward(h->m, images, DISTILL_MODE_INFERENCE, logits);
    for (int k = 0; rc == DISTILL_OK && k < n_taps; k++)
        rc = distill_model_read_node(h->m, tap_names[k], taps[k]);
    return rc;
}

static int host_tap_shape(const char *name, int *rank, int64_t dims[3], void *payload)
{
    host_teacher *h = payload;
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    if (strcmp(name, "pool2") != 0 || distill_model_find_node(h->m, name, &info))
        return DISTILL_ENOTFOUND;
    *rank = info.rank;
    memcpy(dims, info.dims, sizeof info.dims);
    return DISTILL_OK;
}

static void host_destroy(void *payload)
{
    ((host_teacher *)payload)->destroyed++;
}

/* Train a fresh student for 3 steps with KD (and, if fitnets, a FitNets
 * hint between the student's and the teacher's "pool2", which differ in
 * channels so that an adapter is made). */
static snap distill_3_steps(distill_teacher *t, int fitnets)
{
    distill_model *m = make_model("cnn", 50, 3);
    distill_trainer_options o = recipe();
    o.max_steps = 3;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, t, &o));
    distill_loss *l;
    CHECK(distill_loss_kd(&l, 4.0f, 0.9f));
    CHECK(distill_trainer_add_loss(tr, l, 1.0f));
    if (fitnets) {
        CHECK(distill_loss_fitnets(&l, "pool2", "pool2"));
        CHECK(distill_trainer_add_loss(tr, l, 0.5f));
    }
    CHECK(distill_trainer_fit(tr, g_train, NULL));
    assert_int_equal(distill_trainer_steps_done(tr), 3);
    snap s = snap_take(m);
    distill_trainer_free(tr);
    distill_model_free(m);
    return s;
}

static void test_teacher_callback(void **state)
{
    (void)state;
    distill_model *tm = make_model("cnn", 100, 11);
    perturb_stats(tm, 5);
    CHECK(distill_model_keep_node(tm, "pool2"));
    distill_teacher *ref;
    CHECK(distill_teacher_from_model(&ref, tm));

    for (int fitnets = 0; fitnets <= 1; fitnets++) {
        host_teacher h = {tm, 0, 0, -1, 0};
        distill_teacher_callback cb = {DISTILL_TEACHER_CALLBACK_VERSION, 10, host_forward,
                                       host_tap_shape, &h, host_destroy};
        distill_teacher *t;
        CHECK(distill_teacher_from_callback(&t, &cb));
        assert_int_equal(distill_teacher_classes(t), 10);
        snap a = distill_3_steps(t, fitnets);
        assert_int_equal(h.calls, 3);
        assert_int_equal(h.last_n, BATCH);
        assert_int_equal(h.last_taps, fitnets);
        /* the same training with the model's own teacher: the host's logits
         * (and tap) were used, so the students end up (nearly) equal */
        snap b = distill_3_steps(ref, fitnets);
        double d = snap_maxdiff(&a, &b);
        if (d > 1e-4)
            fail_msg("fitnets %d: callback and model teachers give students %g apart", fitnets,
                     d);
        distill_model *init = make_model("cnn", 50, 3);
        snap s0 = snap_take(init);
        assert_true(snap_maxdiff(&a, &s0) > 1e-3);
        snap_free(&s0);
        distill_model_free(init);
        snap_free(&a);
        snap_free(&b);
        distill_teacher_free(t);
        assert_int_equal(h.destroyed, 1);
    }

    /* a tap the host does not have */
    host_teacher h = {tm, 0, 0, -1, 0};
    distill_teacher_callback cb = {DISTILL_TEACHER_CALLBACK_VERSION, 10, host_forward,
                                   host_tap_shape, &h, NULL};
    distill_teacher *t;
    CHECK(distill_teacher_from_callback(&t, &cb));
    distill_model *m = make_model("cnn", 50, 3);
    distill_trainer *tr;
    distill_trainer_options o = recipe();
    CHECK(distill_trainer_create(&tr, m, t, &o));
    distill_loss *l;
    CHECK(distill_loss_fitnets(&l, "pool2", "relu1"));
    assert_int_equal(distill_trainer_add_loss(tr, l, 1.0f), DISTILL_ENOTFOUND);
    /* a host error fails the step, and is passed on */
    cb.forward = NULL;
    distill_teacher *t2;
    assert_int_equal(distill_teacher_from_callback(&t2, &cb), DISTILL_EINVAL);
    cb.version = DISTILL_TEACHER_CALLBACK_VERSION + 8;
    assert_int_equal(distill_teacher_from_callback(&t2, &cb), DISTILL_EVERSION);
    distill_trainer_free(tr);
    distill_teacher_free(t);
    distill_model_free(m);
    distill_teacher_free(ref);
    distill_model_free(tm);
}

/* A teacher whose loss weight on it is zero (KD with alpha = 0: only the
 * cross-entropy part) changes nothing: the student trains bit for bit as
 * with plain cross-entropy and no teacher. */
static void test_teacher_unused_changes_nothing(void **state)
{
    (void)state;
    distill_model *tm = make_model("resnet8", 50, 11);
    distill_teacher *t;
    CHECK(distill_teacher_from_model(&t, tm));
    snap out[2];
    for (int with_teacher = 0; with_teacher <= 1; with_teacher++) {
        distill_model *m = make_model("cnn", 50, 3);
        distill_trainer_options o = recipe();
        o.max_steps = 3;
        distill_trainer *tr;
        CHECK(distill_trainer_create(&tr, m, with_teacher ? t : NULL, &o));
        distill_loss *l;
        if (with_teacher)
            CHECK(distill_loss_kd(&l, 4.0f, 0.0f));
        else
            CHECK(distill_loss_cross_entropy(&l, 0.0f));
        CHECK(distill_trainer_add_loss(tr, l, 1.0f));
        CHECK(distill_trainer_fit(tr, g_train, NULL));
        out[with_teacher] = snap_take(m);
        distill_trainer_free(tr);
        distill_model_free(m);
    }
    assert_memory_equal(out[0].p, out[1].p, out[0].np * sizeof(float));
    assert_memory_equal(out[0].s, out[1].s, out[0].ns * sizeof(float));
    snap_free(&out[0]);
    snap_free(&out[1]);
    distill_teacher_free(t);
    distill_model_free(tm);
}

static void test_teacher_ensemble(void **state)
{
    (void)state;
    distill_model *m1 = make_model("cnn", 50, 21), *m2 = make_model("resnet8", 50, 22);
    perturb_stats(m1, 1);
    perturb_stats(m2, 2);
    distill_teacher *t1, *t2;
    CHECK(distill_teacher_from_model(&t1, m1));
    CHECK(distill_teacher_from_model(&t2, m2));
    distill_teacher *both[2] = {t1, t2};
    distill_tensor *x = batch_of(9, NULL);
    distill_tensor *a = logits_tensor(9, 10), *b = logits_tensor(9, 10), *e = logits_tensor(9, 10);
    CHECK(distill_teacher_forward(t1, x, a));
    CHECK(distill_teacher_forward(t2, x, b));
    const float *pa = distill_tensor_data(a), *pb = distill_tensor_data(b);

    const float weights[2] = {1.0f, 3.0f};
    for (int weighted = 0; weighted <= 1; weighted++) {
        distill_teacher *ens;
        CHECK(distill_teacher_ensemble(&ens, 2, both, weighted ? weights : NULL));
        assert_int_equal(distill_teacher_classes(ens), 10);
        CHECK(distill_teacher_forward(ens, x, e));
        const float *pe = distill_tensor_data(e);
        double w1 = 1.0, w2 = weighted ? 3.0 : 1.0;
        for (int i = 0; i < 90; i++) {
            double want = (w1 * pa[i] + w2 * pb[i]) / (w1 + w2);
            if (fabs(pe[i] - want) > 1e-5 * (1 + fabs(want)))
                fail_msg("weighted %d, logit %d: ensemble %g, weighted mean %g", weighted, i,
                         (double)pe[i], want);
        }
        distill_teacher_free(ens);
    }
    /* bad weights */
    distill_teacher *ens;
    const float zero[2] = {0, 0}, neg[2] = {1, -1};
    assert_int_equal(distill_teacher_ensemble(&ens, 2, both, zero), DISTILL_EINVAL);
    assert_int_equal(distill_teacher_ensemble(&ens, 2, both, neg), DISTILL_EINVAL);
    assert_int_equal(distill_teacher_ensemble(&ens, 0, both, NULL), DISTILL_EINVAL);
    /* ensembles give no taps */
    CHECK(distill_teacher_ensemble(&ens, 2, both, NULL));
    distill_model *s = make_model("cnn", 50, 3);
    distill_trainer *tr;
    distill_trainer_options o = recipe();
    CHECK(distill_trainer_create(&tr, s, ens, &o));
    distill_loss *l;
    CHECK(distill_loss_fitnets(&l, "pool2", "pool2"));
    assert_int_not_equal(distill_trainer_add_loss(tr, l, 1.0f), DISTILL_OK);
    /* but drive KD */
    int32_t lab[BATCH];
    distill_tensor *xb = batch_of(BATCH, lab);
    double loss;
    CHECK(distill_trainer_step(tr, xb, lab, &loss));
    assert_true(isfinite(loss));
    distill_tensor_free(xb);
    distill_trainer_free(tr);
    distill_model_free(s);
    distill_teacher_free(ens);

    distill_tensor_free(x);
    distill_tensor_free(a);
    distill_tensor_free(b);
    distill_tensor_free(e);
    distill_teacher_free(t1);
    distill_teacher_free(t2);
    distill_model_free(m1);
    distill_model_free(m2);
}

static void test_teacher_class_mismatch(void **state)
{
    (void)state;
    distill_zoo_options zo;
    CHECK(distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION));
    zo.width_mult_pct = 50;
    zo.classes = 7;
    distill_model *m7, *m10 = make_model("cnn", 50, 1);
    CHECK(distill_zoo_create(&m7, "cnn", &zo));
    distill_teacher *t7, *t10;
    CHECK(distill_teacher_from_model(&t7, m7));
    CHECK(distill_teacher_from_model(&t10, m10));
    assert_int_equal(distill_teacher_classes(t7), 7);

    distill_teacher *ens = (distill_teacher *)1;
    distill_teacher *mixed[2] = {t10, t7};
    assert_int_equal(distill_teacher_ensemble(&ens, 2, mixed, NULL), DISTILL_ESHAPE);

    distill_trainer *tr = (distill_trainer *)1;
    distill_trainer_options o = recipe();
    assert_int_equal(distill_trainer_create(&tr, m10, t7, &o), DISTILL_ESHAPE);
    assert_null(tr);
    assert_non_null(strstr(distill_last_error(), "7"));

    host_teacher h = {m10, 0, 0, -1, 0};
    distill_teacher_callback cb = {DISTILL_TEACHER_CALLBACK_VERSION, 12, host_forward, NULL, &h,
                                   NULL};
    distill_teacher *tc;
    CHECK(distill_teacher_from_callback(&tc, &cb));
    assert_int_equal(distill_trainer_create(&tr, m10, tc, &o), DISTILL_ESHAPE);
    /* and evaluation's agreement teacher */
    distill_eval_options eo;
    CHECK(distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION));
    eo.agreement = t7;
    distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
    assert_int_equal(distill_evaluate(m10, g_val, &eo, &r), DISTILL_ESHAPE);

    distill_teacher_free(tc);
    distill_teacher_free(t7);
    distill_teacher_free(t10);
    distill_model_free(m7);
    distill_model_free(m10);
}

/* ------------------------------------------------------ evaluation */

#define EK 6  /* classes */
#define EN 11 /* samples */

/* A model whose logits are its normalized input plus a bias:
 * input (EK, 1, 1) -> flatten -> linear with an identity weight. */
static distill_model *identity_model(const float *bias)
{
    distill_model *m;
    int64_t in[3] = {EK, 1, 1};
    CHECK(distill_model_create(&m, "input", 3, in));
    CHECK(distill_model_add_flatten(m, "flat", "input"));
    CHECK(distill_model_add_linear(m, "fc", "flat", EK, 1));
    distill_param_info w = DISTILL_PARAM_INFO_INIT, b = DISTILL_PARAM_INFO_INIT;
    CHECK(distill_model_find_param(m, "fc.weight", &w));
    CHECK(distill_model_find_param(m, "fc.bias", &b));
    for (int r = 0; r < EK; r++) {
        for (int c = 0; c < EK; c++)
            w.data[r * EK + c] = r == c ? 1.0f : 0.0f;
        b.data[r] = bias[r];
    }
    return m;
}

static void test_evaluate(void **state)
{
    (void)state;
    /* the samples (before normalization) and their labels, made so that
     * the label is: first (0-3), second (4-6), fifth (7), last (8-9), or
     * third (10) in its row */
    static const float x[EN][EK] = {
        {0.9f, 0.1f, 0.2f, 0.3f, 0.4f, 0.0f}, /* label 0: first */
        {0.1f, 0.8f, 0.2f, 0.3f, 0.4f, 0.0f}, /* label 1: first */
        {0.1f, 0.2f, 0.3f, 0.7f, 0.4f, 0.0f}, /* label 3: first */
        {0.2f, 0.1f, 0.0f, 0.3f, 0.4f, 0.95f},/* label 5: first */
        {0.6f, 0.7f, 0.2f, 0.3f, 0.4f, 0.0f}, /* label 0: second (1 wins) */
        {0.1f, 0.2f, 0.8f, 0.75f, 0.4f, 0.0f},/* label 3: second (2 wins) */
        {0.1f, 0.2f, 0.3f, 0.4f, 0.9f, 0.85f},/* label 5: second (4 wins) */
        {0.5f, 0.6f, 0.7f, 0.8f, 0.2f, 0.1f}, /* label 4: fifth */
        {0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 0.1f}, /* label 5: last */
        {0.05f, 0.6f, 0.7f, 0.8f, 0.9f, 0.3f},/* label 0: last */
        {0.3f, 0.9f, 0.7f, 0.8f, 0.2f, 0.1f}, /* label 2: third */
    };
    static const int32_t y[EN] = {0, 1, 3, 5, 0, 3, 5, 4, 5, 0, 2};
    const float mean = 0.25f, sd = 2.0f;
    static const float bias[EK] = {0.0f, 0.004f, -0.003f, 0.005f, 0.0f, -0.005f};

    distill_dataset *ds;
    int64_t dims[3] = {EK, 1, 1};
    CHECK(distill_dataset_from_memory(&ds, EN, dims, &x[0][0], y, EK, DISTILL_MEMORY_COPY));
    distill_model *m = identity_model(bias);

    /* the hand computation, in double */
    double loss = 0;
    int hit1 = 0, hit5 = 0;
    int64_t conf[EK * EK] = {0};
    for (int i = 0; i < EN; i++) {
        double z[EK], mx = -1e30;
        int arg = 0;
        for (int c = 0; c < EK; c++) {
            z[c] = ((double)x[i][c] - mean) / sd + bias[c];
            if (z[c] > mx) {
                mx = z[c];
                arg = c;
            }
        }
        double se = 0;
        int above = 0;
        for (int c = 0; c < EK; c++) {
            se += exp(z[c] - mx);
            above += z[c] > z[y[i]];
        }
        loss += mx + log(se) - z[y[i]];
        hit1 += above == 0;
        hit5 += above < 5;
        conf[y[i] * EK + arg]++;
    }
    loss /= EN;
    /* as designed */
    assert_int_equal(hit1, 4);
    assert_int_equal(hit5, 9);

    int64_t got[EK * EK];
    distill_eval_options eo;
    CHECK(distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION));
    eo.norm_count = 1;
    eo.mean[0] = mean;
    eo.std[0] = sd;
    eo.confusion = got;
    int batches[] = {4, 1, 11, 256};
    for (int k = 0; k < 4; k++) {
        eo.batch_size = batches[k];
        memset(got, 0x7f, sizeof got);
        distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
        CHECK(distill_evaluate(m, ds, &eo, &r));
        assert_int_equal(r.count, EN);
        assert_true(r.top1 == (double)hit1 / EN);
        assert_true(r.top5 == (double)hit5 / EN);
        if (fabs(r.loss - loss) > 1e-5 * loss)
            fail_msg("batch %d: loss %.9g, by hand %.9g", batches[k], r.loss, loss);
        assert_true(r.agreement == -1);
        assert_memory_equal(got, conf, sizeof conf);
    }

    /* agreement with a teacher whose biases move some argmaxes: the rows
     * whose top two (normalized) logits are within 0.2 of each other */
    static const float tbias[EK] = {0.0f, 0.2f, 0.0f, 0.2f, 0.0f, 0.2f};
    distill_model *tm = identity_model(tbias);
    distill_teacher *t;
    CHECK(distill_teacher_from_model(&t, tm));
    int agree = 0;
    for (int i = 0; i < EN; i++) {
        int as = 0, at = 0;
        for (int c = 1; c < EK; c++) {
            double zs = ((double)x[i][c] - mean) / sd + bias[c];
            double zsa = ((double)x[i][as] - mean) / sd + bias[as];
            double zt = ((double)x[i][c] - mean) / sd + tbias[c];
            double zta = ((double)x[i][at] - mean) / sd + tbias[at];
            if (zs > zsa)
                as = c;
            if (zt > zta)
                at = c;
        }
        agree += as == at;
    }
    assert_true(agree > 0 && agree < EN);
    eo.agreement = t;
    eo.confusion = NULL;
    eo.batch_size = 4;
    distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(m, ds, &eo, &r));
    assert_true(r.agreement == (double)agree / EN);
    assert_true(r.top1 == (double)hit1 / EN);

    /* unlabelled data: agreement only */
    CHECK(distill_dataset_drop_labels(ds));
    CHECK(distill_evaluate(m, ds, &eo, &r));
    assert_int_equal(r.count, EN);
    assert_true(r.top1 == -1 && r.top5 == -1 && r.loss == -1);
    assert_true(r.agreement == (double)agree / EN);

    distill_teacher_free(t);
    distill_model_free(tm);
    distill_model_free(m);
    distill_dataset_free(ds);
}

/* An argument runs only the tests whose names match it ("test_teacher*"). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_checkpoint_corrupt),
        cmocka_unit_test(test_checkpoint_other_architecture),
        cmocka_unit_test(test_checkpoint_save_errors),
        cmocka_unit_test(test_nonfinite_batch),
        cmocka_unit_test(test_nonfinite_skip_step),
        cmocka_unit_test(test_nonfinite_skip_fit),
        cmocka_unit_test(test_custom_loss_nan),
        cmocka_unit_test(test_refused_step_changes_nothing),
        cmocka_unit_test(test_progress),
        cmocka_unit_test(test_progress_cancel),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_teacher_from_model),
        cmocka_unit_test(test_teacher_callback),
        cmocka_unit_test(test_teacher_unused_changes_nothing),
        cmocka_unit_test(test_teacher_ensemble),
        cmocka_unit_test(test_teacher_class_mismatch),
        cmocka_unit_test(test_evaluate),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * parity_dump.c - record the first K training steps of the e2e teacher
 * (zoo resnet20 on Fashion-MNIST, the recipe of BENCHMARKS.md) so that
 * step_parity.py can replay them in PyTorch and compare every quantity.
 * Run by hand, never in CI (see tests/parity/README.md).
 *
 * usage: distill-parity-dump OUT_FILE
 * env:   SEED (0), STEPS (K, 20), EPOCHS (3: sets the cosine schedule's
 *        length, as the e2e run does), FASHION_MNIST_DIR, INIT_FROM (a file
 *        of initial weights written by step_parity.py --write-init: the
 *        parameter block in this model's order, raw float32), EVAL (number
 *        of test images whose inference logits are recorded at the end, 1000),
 *        SKIP (steps taken before the first recorded one, 0: the recorded
 *        steps are then steps SKIP+1 .. SKIP+STEPS of the run, and the
 *        trainer's checkpoint at that point is written to OUT_FILE.ckpt,
 *        whose optimizer state gives the replay its momentum buffers),
 *        FIT_CHECK (1: only check that distill_trainer_fit() and
 *        distill_trainer_step() give the same bits on the same batches, and
 *        exit 0 if they do; nothing is written), BATCHES_ONLY (1: write
 *        only the run's whole batch stream, for peer_fit.py --batches)
 *
 * The batches are the ones distill_trainer_fit() would draw: a loader with
 * the trainer's options (shuffle, drop_last, crop_padding 2, hflip,
 * normalization), stepped through distill_trainer_step() of a trainer made
 * with the e2e options, whose cosine schedule runs over EPOCHS epochs.  A
 * second loader with the same seed and no augmentation gives each sample's
 * plain view, so that the replay can check the crop and flip too.
 *
 * File (little-endian):
 *   "DSTLPRTY" u32 format(2) u32 n_params u32 steps u32 batch u32 eval_n u32 skip
 *   per parameter: u32 name_len, name, u32 kind, u32 trainable, i64 numel,
 *                  i64 offset in the parameter block (trainable ones; the
 *                  statistics' offsets are in the statistics block)
 *   the parameters before the first recorded step (all, in order, f32)
 *   per step: f64 loss, f64 lr, f32 images[batch*784], f32 plain[batch*784],
 *             i32 labels[batch], f32 grads (trainable parameters, in order),
 *             f32 parameters after the step (all, in order)
 *   f32 test images[eval_n*784] (normalized), f32 logits[eval_n*10]
 *   (inference mode, after the last step), f64 distill_evaluate's top-1 over
 *   the whole test set (when eval_n > 0)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <distill/data.h>
#include <distill/loss.h>
#include <distill/model.h>
#include <distill/optim.h>
#include <distill/trainer.h>

#define BATCH 128
static const float MEAN = 0.2860f, STD = 0.3530f;

#define CHECK(call)                                                                        \
    do {                                                                                   \
        int rc_ = (call);                                                                  \
        if (rc_ != DISTILL_OK) {                                                           \
            fprintf(stderr, "distill-parity-dump: %s failed: %s (%s)\n", #call,            \
                    distill_strerror(rc_), distill_last_error());                          \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static long env_long(const char *name, long def)
{
    const char *s = getenv(name);
    return s && *s ? strtol(s, NULL, 10) : def;
}

static void put(FILE *f, const void *p, size_t size)
{
    if (size && fwrite(p, 1, size, f) != size) {
        fprintf(stderr, "distill-parity-dump: write failed\n");
        exit(1);
    }
}

static void put_u32(FILE *f, uint32_t v) { put(f, &v, 4); }
static void put_i64(FILE *f, int64_t v) { put(f, &v, 8); }
static void put_f64(FILE *f, double v) { put(f, &v, 8); }

static distill_loader *make_loader(const distill_dataset *ds, uint64_t seed, int augment)
{
    distill_loader_options lo;
    distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION);
    lo.batch_size = BATCH;
    lo.shuffle = 1;
    lo.drop_last = 1;
    lo.seed = seed;
    lo.norm_count = 1;
    lo.mean = &MEAN;
    lo.std = &STD;
    lo.crop_padding = augment ? 2 : 0;
    lo.hflip = augment;
    lo.prefetch = 0;
    distill_loader *ld;
    CHECK(distill_loader_create(&ld, ds, &lo));
    return ld;
}

/* Train a model through distill_trainer_fit() (2 epochs of 3 steps, with a
 * validation pass after each epoch) and a copy of it through
 * distill_trainer_step() on the batches the fit draws; the two must end with
 * the same bits, so that the steps the replay checks are the fit's steps. */
static int fit_check(uint64_t seed, const distill_dataset *train, const distill_dataset *test)
{
    distill_zoo_options zo;
    distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION);
    zo.seed = seed;
    distill_model *a, *b;
    CHECK(distill_zoo_create(&a, "resnet20", &zo));
    CHECK(distill_model_clone(&b, a));
    distill_dataset *val;
    CHECK(distill_dataset_subset(&val, test, 0, 500));
    distill_trainer_options o;
    distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION);
    o.epochs = 2;
    o.steps_per_epoch = 3;
    o.batch_size = BATCH;
    o.lr = 0.1;
    o.seed = seed;
    o.crop_padding = 2;
    o.hflip = 1;
    o.norm_count = 1;
    o.mean[0] = MEAN;
    o.std[0] = STD;
    distill_trainer *ta, *tb;
    CHECK(distill_trainer_create(&ta, a, NULL, &o));
    CHECK(distill_trainer_fit(ta, train, val));
    o.max_steps = 6; /* the fit's schedule length, for distill_trainer_step */
    CHECK(distill_trainer_create(&tb, b, NULL, &o));
    distill_loader *ld = make_loader(train, seed, 1);
    int64_t d[4] = {BATCH, 1, 28, 28};
    distill_tensor *x;
    CHECK(distill_tensor_create(&x, 4, d));
    int32_t y[BATCH];
    for (int e = 0; e < 2; e++) {
        CHECK(distill_loader_set_state(ld, (uint64_t)e, 0));
        for (int s = 0; s < 3; s++) {
            int n;
            double loss;
            CHECK(distill_loader_next(ld, x, y, &n));
            CHECK(distill_trainer_step(tb, x, y, &loss));
        }
    }
    size_t na, nb;
    const float *pa = distill_model_param_block(a, &na), *pb = distill_model_param_block(b, &nb);
    size_t differ = 0;
    for (size_t i = 0; i < na && na == nb; i++)
        differ += memcmp(&pa[i], &pb[i], sizeof(float)) != 0;
    printf("fit check: after 2 epochs of 3 steps, %zu of %zu parameters differ between "
           "distill_trainer_fit and distill_trainer_step on the same batches\n",
           na == nb ? differ : na, na);
    distill_tensor_free(x);
    distill_loader_free(ld);
    distill_trainer_free(ta);
    distill_trainer_free(tb);
    distill_dataset_free(val);
    distill_model_free(a);
    distill_model_free(b);
    return differ == 0 && na == nb ? 0 : 1;
}

/* The e2e run's whole batch stream (EPOCHS epochs of augmented batches, as
 * distill_trainer_fit() draws them), for peer_fit.py --batches:
 *   "DSTLBTCH" u32 format(1) u32 steps u32 batch, then per step
 *   f32 images[batch*784] (normalized, augmented), i32 labels[batch]. */
static int batches_only(const char *path, uint64_t seed, int epochs, const distill_dataset *train)
{
    distill_loader *ld = make_loader(train, seed, 1);
    int64_t per_epoch = distill_loader_num_batches(ld), d[4] = {BATCH, 1, 28, 28};
    distill_tensor *x;
    CHECK(distill_tensor_create(&x, 4, d));
    int32_t y[BATCH];
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "distill-parity-dump: cannot write %s\n", path);
        return 1;
    }
    put(f, "DSTLBTCH", 8);
    put_u32(f, 1);
    put_u32(f, (uint32_t)(per_epoch * epochs));
    put_u32(f, BATCH);
    for (int e = 0; e < epochs; e++) {
        CHECK(distill_loader_set_state(ld, (uint64_t)e, 0));
        for (int64_t s = 0; s < per_epoch; s++) {
            int n;
            CHECK(distill_loader_next(ld, x, y, &n));
            put(f, distill_tensor_data(x), sizeof(float) * BATCH * 784);
            put(f, y, sizeof y);
        }
    }
    distill_tensor_free(x);
    distill_loader_free(ld);
    return fclose(f) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: distill-parity-dump OUT_FILE\n");
        return 2;
    }
    uint64_t seed = (uint64_t)env_long("SEED", 0);
    int steps = (int)env_long("STEPS", 20), epochs = (int)env_long("EPOCHS", 3);
    int eval_n = (int)env_long("EVAL", 1000);
    long skip = env_long("SKIP", 0);
    const char *init_from = getenv("INIT_FROM");
    CHECK(distill_set_num_threads((int)env_long("THREADS", 1)));

    distill_zoo_options zo;
    distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION);
    zo.seed = seed;
    distill_model *m;
    CHECK(distill_zoo_create(&m, "resnet20", &zo));
    size_t n_block, np = distill_model_param_count(m);
    float *block = distill_model_param_block(m, &n_block);
    if (init_from && *init_from) {
        FILE *f = fopen(init_from, "rb");
        if (!f || fread(block, sizeof(float), n_block, f) != n_block || fgetc(f) != EOF) {
            fprintf(stderr, "distill-parity-dump: %s must hold exactly %zu floats\n", init_from,
                    n_block);
            return 1;
        }
        fclose(f);
    }

    distill_dataset *train, *test;
    CHECK(distill_dataset_fashion_mnist(&train, NULL, 1));
    CHECK(distill_dataset_fashion_mnist(&test, NULL, 0));
    if (env_long("FIT_CHECK", 0))
        return fit_check(seed, train, test);
    if (env_long("BATCHES_ONLY", 0))
        return batches_only(argv[1], seed, epochs, train);
    distill_loader *aug = make_loader(train, seed, 1), *plain = make_loader(train, seed, 0);
    int64_t per_epoch = distill_loader_num_batches(aug);

    distill_trainer_options o;
    distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION);
    o.epochs = epochs;
    o.batch_size = BATCH;
    o.lr = 0.1;
    o.seed = seed;
    o.max_steps = per_epoch * epochs; /* the cosine schedule's length in a fit */
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    distill_loss *l;
    CHECK(distill_loss_cross_entropy(&l, 0.0f));
    CHECK(distill_trainer_add_loss(tr, l, 1.0f));
    distill_schedule_options so;
    distill_schedule_options_init(&so, DISTILL_SCHEDULE_OPTIONS_VERSION);
    so.kind = DISTILL_SCHEDULE_COSINE;
    so.base_lr = o.lr;
    so.total_steps = o.max_steps;

    int64_t d[4] = {BATCH, 1, 28, 28};
    distill_tensor *x, *xp;
    CHECK(distill_tensor_create(&x, 4, d));
    CHECK(distill_tensor_create(&xp, 4, d));
    int32_t y[BATCH], yp[BATCH];
    for (long s = 0; s < skip; s++) {
        int n = 0, np2 = 0;
        CHECK(distill_loader_next(aug, x, y, &n));
        CHECK(distill_loader_next(plain, xp, yp, &np2));
        if (n == 0) {
            CHECK(distill_loader_next(aug, x, y, &n));
            CHECK(distill_loader_next(plain, xp, yp, &np2));
        }
        double loss;
        CHECK(distill_trainer_step(tr, x, y, &loss));
        if ((s + 1) % 100 == 0)
            fprintf(stderr, "# skipped step %ld loss %.6f\n", s + 1, loss);
    }

    if (skip > 0) {
        /* the optimizer's momentum buffers at this point, for the replay */
        char ckpt[4096];
        snprintf(ckpt, sizeof ckpt, "%s.ckpt", argv[1]);
        CHECK(distill_trainer_save_checkpoint(tr, ckpt));
    }

    FILE *f = fopen(argv[1], "wb");
    if (!f) {
        fprintf(stderr, "distill-parity-dump: cannot write %s\n", argv[1]);
        return 1;
    }
    put(f, "DSTLPRTY", 8);
    put_u32(f, 2);
    put_u32(f, (uint32_t)np);
    put_u32(f, (uint32_t)steps);
    put_u32(f, BATCH);
    put_u32(f, (uint32_t)eval_n);
    put_u32(f, (uint32_t)skip);
    for (size_t i = 0; i < np; i++) {
        distill_param_info pi = DISTILL_PARAM_INFO_INIT;
        CHECK(distill_model_param(m, i, &pi));
        put_u32(f, (uint32_t)strlen(pi.name));
        put(f, pi.name, strlen(pi.name));
        put_u32(f, (uint32_t)pi.kind);
        put_u32(f, (uint32_t)pi.trainable);
        put_i64(f, pi.numel);
        size_t ns;
        float *stats = distill_model_stats_block(m, &ns);
        put_i64(f, (int64_t)(pi.trainable ? pi.data - block : pi.data - stats));
    }
    for (size_t i = 0; i < np; i++) {
        distill_param_info pi = DISTILL_PARAM_INFO_INIT;
        CHECK(distill_model_param(m, i, &pi));
        put(f, pi.data, (size_t)pi.numel * sizeof(float));
    }

    for (int s = 0; s < steps; s++) {
        int n = 0, np2 = 0;
        CHECK(distill_loader_next(aug, x, y, &n));
        CHECK(distill_loader_next(plain, xp, yp, &np2));
        if (n == 0) { /* end of an epoch: the next call starts the next one */
            CHECK(distill_loader_next(aug, x, y, &n));
            CHECK(distill_loader_next(plain, xp, yp, &np2));
        }
        if (n != BATCH || np2 != BATCH || memcmp(y, yp, sizeof y) != 0) {
            fprintf(stderr, "distill-parity-dump: the two loaders disagree at step %d\n", s);
            return 1;
        }
        double loss, lr;
        CHECK(distill_schedule_lr(&so, distill_trainer_steps_done(tr), &lr));
        CHECK(distill_trainer_step(tr, x, y, &loss));
        put_f64(f, loss);
        put_f64(f, lr);
        put(f, distill_tensor_data(x), sizeof(float) * BATCH * 784);
        put(f, distill_tensor_data(xp), sizeof(float) * BATCH * 784);
        put(f, y, sizeof y);
        for (size_t i = 0; i < np; i++) {
            distill_param_info pi = DISTILL_PARAM_INFO_INIT;
            CHECK(distill_model_param(m, i, &pi));
            if (pi.trainable)
                put(f, pi.grad, (size_t)pi.numel * sizeof(float));
        }
        for (size_t i = 0; i < np; i++) {
            distill_param_info pi = DISTILL_PARAM_INFO_INIT;
            CHECK(distill_model_param(m, i, &pi));
            put(f, pi.data, (size_t)pi.numel * sizeof(float));
        }
        fprintf(stderr, "# step %ld loss %.6f lr %.8f\n", skip + s + 1, loss, lr);
    }

    if (eval_n > 0) {
        int64_t de[4] = {eval_n, 1, 28, 28}, dl[2] = {eval_n, 10};
        distill_tensor *xe, *le;
        CHECK(distill_tensor_create(&xe, 4, de));
        CHECK(distill_tensor_create(&le, 2, dl));
        float *p = distill_tensor_data(xe);
        for (int i = 0; i < eval_n; i++) {
            CHECK(distill_dataset_get(test, i, p + (size_t)i * 784, 784, NULL));
            for (int j = 0; j < 784; j++)
                p[(size_t)i * 784 + j] = (p[(size_t)i * 784 + j] - MEAN) / STD;
        }
        CHECK(distill_model_forward(m, xe, DISTILL_MODE_INFERENCE, le));
        put(f, p, sizeof(float) * (size_t)eval_n * 784);
        put(f, distill_tensor_data(le), sizeof(float) * (size_t)eval_n * 10);
        /* what distill-bench reports: distill_evaluate over the whole test set */
        distill_eval_options eo;
        distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION);
        eo.norm_count = 1;
        eo.mean[0] = MEAN;
        eo.std[0] = STD;
        distill_eval_result er = DISTILL_EVAL_RESULT_INIT;
        CHECK(distill_evaluate(m, test, &eo, &er));
        put_f64(f, er.top1);
        distill_tensor_free(xe);
        distill_tensor_free(le);
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "distill-parity-dump: write failed\n");
        return 1;
    }
    distill_tensor_free(x);
    distill_tensor_free(xp);
    distill_trainer_free(tr);
    distill_loader_free(aug);
    distill_loader_free(plain);
    distill_dataset_free(train);
    distill_dataset_free(test);
    distill_model_free(m);
    return 0;
}

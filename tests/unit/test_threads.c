/*
 * test_threads.c - separate handles in separate threads (README, "Threads").
 *
 * The promise: one handle is used by one thread at a time, and separate
 * handles are independent.  Held to bit for bit:
 *   - two trainers (a KD + FitNets student with a teacher and an adapter,
 *     and a supervised ResNet-8, each with random crops, flips, dropout and
 *     the background batch loader) run in two threads at once give the
 *     same weights, BatchNorm statistics, per-step losses and evaluation as
 *     the same two runs one after the other;
 *   - three models (two architectures, and a clone of one of them, so that
 *     two threads run the same oneDNN primitives) run inference
 *     concurrently and give exactly their outputs of a single-threaded run;
 *   - a loader with three worker threads and prefetch, over a streamed
 *     store whose samples are decoded on the workers, gives the batches of
 *     a loader without threads, also when the host jumps while a batch is
 *     being prefetched.
 *
 * Each job builds its own synthetic data (16x16 images), models, teacher
 * and trainer inside its thread: no handle is shared.  Each thread sets
 * the compute thread count the main thread had (distill_set_num_threads is
 * per calling thread), so that both orders do the same arithmetic.  Small
 * enough to run under ThreadSanitizer and valgrind (tests/valgrind.sh);
 * .ci/run runs it under ThreadSanitizer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill.h"
#include "data/data_internal.h"

#define SIDE 16
#define PIXELS (SIDE * SIDE)
#define CLASSES 10
#define N_TRAIN 96
#define N_VAL 48
#define BATCH 16
#define STEPS 8 /* across the end of the first epoch (6 batches) */

static int g_threads; /* the main thread's compute threads */

/* ------------------------------------------------------------ helpers */

/* Errors inside a worker thread are recorded, not asserted (cmocka's
 * failure path is for the main thread). */
#define TRY(job, call)                                                              \
    do {                                                                            \
        int rc_ = (call);                                                           \
        if (rc_ != DISTILL_OK) {                                                    \
            snprintf((job)->err, sizeof (job)->err, "%s -> %d: %s", #call, rc_,     \
                     distill_last_error());                                         \
            goto done;                                                              \
        }                                                                           \
    } while (0)

static uint64_t hash64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static float unit(uint64_t a, uint64_t b)
{
    return (float)((double)(hash64(a * 1000003u + b) >> 11) / 9007199254740992.0);
}

/* CLASSES classes of SIDE x SIDE images: a bright bar whose place depends
 * on the class, over noise. */
static int synthetic(distill_dataset **out, int64_t n, uint64_t seed)
{
    float *img = malloc((size_t)n * PIXELS * sizeof *img);
    int32_t *lab = malloc((size_t)n * sizeof *lab);
    int rc = DISTILL_ENOMEM;
    if (img && lab) {
        for (int64_t i = 0; i < n; i++) {
            int c = (int)(hash64(seed * 7919u + (uint64_t)i) % CLASSES);
            lab[i] = c;
            for (int y = 0; y < SIDE; y++)
                for (int x = 0; x < SIDE; x++) {
                    float v = 0.3f * unit(seed + (uint64_t)i, (uint64_t)(y * SIDE + x));
                    if (y >= c && y < c + 4 && x >= 4 && x < 12)
                        v += 0.6f;
                    img[i * PIXELS + y * SIDE + x] = v;
                }
        }
        int64_t dims[3] = {1, SIDE, SIDE};
        rc = distill_dataset_from_memory(out, n, dims, img, lab, CLASSES, DISTILL_MEMORY_COPY);
    }
    free(img);
    free(lab);
    return rc;
}

static int zoo(distill_model **out, const char *name, int width_pct, uint64_t seed)
{
    distill_zoo_options zo;
    distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION);
    zo.height = zo.width = SIDE;
    zo.classes = CLASSES;
    zo.width_mult_pct = width_pct;
    zo.seed = seed;
    return distill_zoo_create(out, name, &zo);
}

/* ------------------------------------------------------------ training */

typedef struct train_job {
    int kd;              /* 1: KD + FitNets from a teacher; 0: supervised */
    uint64_t seed;
    /* results */
    float *params, *stats;
    size_t n_params, n_stats;
    double losses[STEPS];
    int n_losses;
    int64_t steps;
    distill_eval_result eval;
    char err[512];
} train_job;

static int record_loss(const distill_progress *p, void *payload)
{
    train_job *j = payload;
    if (!p->end_of_epoch && j->n_losses < STEPS)
        j->losses[j->n_losses++] = p->loss;
    return 0;
}

static float *copy_block(const float *src, size_t n)
{
    float *dst = malloc((n + 1) * sizeof *dst);
    if (dst)
        memcpy(dst, src, n * sizeof *dst);
    return dst;
}

static void run_train_job(train_job *j)
{
    distill_dataset *train = NULL, *val = NULL;
    distill_model *student = NULL, *tmodel = NULL;
    distill_teacher *teacher = NULL;
    distill_trainer *tr = NULL;
    distill_loss *loss = NULL;
    float weight = 1.0f;

    distill_set_num_threads(g_threads);
    TRY(j, synthetic(&train, N_TRAIN, j->seed));
    TRY(j, synthetic(&val, N_VAL, j->seed + 100));
    if (j->kd) {
        TRY(j, zoo(&student, "cnn", 50, j->seed));
        TRY(j, zoo(&tmodel, "cnn", 100, j->seed + 1));
        TRY(j, distill_teacher_from_model(&teacher, tmodel));
    } else {
        TRY(j, zoo(&student, "resnet8", 100, j->seed));
    }

    distill_trainer_options o;
    distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION);
    o.epochs = 2;
    o.max_steps = STEPS;
    o.batch_size = BATCH;
    o.lr = 0.05;
    o.seed = j->seed;
    o.crop_padding = 2;
    o.hflip = 1;
    o.norm_count = 1;
    o.mean[0] = 0.45f;
    o.std[0] = 0.3f;
    o.prefetch = 1;
    o.progress = record_loss;
    o.progress_payload = j;
    o.progress_every = 1;
    TRY(j, distill_trainer_create(&tr, student, teacher, &o));
    if (j->kd) {
        TRY(j, distill_loss_parse(&loss, "kd:T=4,alpha=0.9", &weight));
        TRY(j, distill_trainer_add_loss(tr, loss, weight));
        /* the student's fc1 has half the teacher's features: an adapter */
        TRY(j, distill_loss_parse(&loss, "fitnets:student=fc1,teacher=fc1,weight=0.1",
                                  &weight));
        TRY(j, distill_trainer_add_loss(tr, loss, weight));
        TRY(j, distill_loss_parse(&loss, "at:student=relu2,teacher=relu2,weight=0.5", &weight));
        TRY(j, distill_trainer_add_loss(tr, loss, weight));
    }
    TRY(j, distill_trainer_fit(tr, train, val));
    j->steps = distill_trainer_steps_done(tr);

    distill_eval_options eo;
    distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION);
    eo.batch_size = 32;
    eo.norm_count = 1;
    eo.mean[0] = o.mean[0];
    eo.std[0] = o.std[0];
    j->eval.version = DISTILL_EVAL_RESULT_VERSION;
    TRY(j, distill_evaluate(student, val, &eo, &j->eval));

    const float *params = distill_model_param_block(student, &j->n_params);
    const float *stats = distill_model_stats_block(student, &j->n_stats);
    j->params = copy_block(params, j->n_params);
    j->stats = copy_block(stats, j->n_stats);
    if (!j->params || !j->stats)
        snprintf(j->err, sizeof j->err, "out of memory");
done:
    distill_trainer_free(tr);
    distill_teacher_free(teacher);
    distill_model_free(tmodel);
    distill_model_free(student);
    distill_dataset_free(train);
    distill_dataset_free(val);
}

static void *train_thread(void *arg)
{
    run_train_job(arg);
    return NULL;
}

static void train_job_free(train_job *j)
{
    free(j->params);
    free(j->stats);
}

static void check_trained(const train_job *j)
{
    if (j->err[0])
        fail_msg("job %d (seed %llu): %s", j->kd, (unsigned long long)j->seed, j->err);
    assert_int_equal(j->steps, STEPS);
    assert_int_equal(j->n_losses, STEPS);
    for (int s = 0; s < STEPS; s++)
        assert_true(isfinite(j->losses[s]) && j->losses[s] > 0);
    assert_int_equal(j->eval.count, N_VAL);
    assert_true(j->n_params > 0 && j->n_stats > 0);
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
    return d;
}

/* b (concurrent) is bit for bit a (sequential). */
static void check_same(const train_job *a, const train_job *b)
{
    const char *what = a->kd ? "KD trainer" : "supervised trainer";
    assert_int_equal(a->n_params, b->n_params);
    assert_int_equal(a->n_stats, b->n_stats);
    if (memcmp(a->params, b->params, a->n_params * sizeof(float)) != 0)
        fail_msg("%s: the weights differ when run concurrently (max diff %g)", what,
                 max_diff(a->params, b->params, a->n_params));
    if (memcmp(a->stats, b->stats, a->n_stats * sizeof(float)) != 0)
        fail_msg("%s: the BatchNorm statistics differ when run concurrently (max diff %g)",
                 what, max_diff(a->stats, b->stats, a->n_stats));
    for (int s = 0; s < STEPS; s++)
        if (memcmp(&a->losses[s], &b->losses[s], sizeof(double)) != 0)
            fail_msg("%s: the loss of step %d differs when run concurrently (%.17g, %.17g)",
                     what, s + 1, a->losses[s], b->losses[s]);
    assert_int_equal(a->eval.count, b->eval.count);
    if (memcmp(&a->eval.loss, &b->eval.loss, sizeof(double)) != 0 ||
        memcmp(&a->eval.top1, &b->eval.top1, sizeof(double)) != 0)
        fail_msg("%s: the evaluation differs when run concurrently (loss %.17g, %.17g)", what,
                 a->eval.loss, b->eval.loss);
}

static void test_two_trainers(void **state)
{
    (void)state;
    train_job seq[2] = {{.kd = 1, .seed = 11}, {.kd = 0, .seed = 12}};
    train_job par[2] = {{.kd = 1, .seed = 11}, {.kd = 0, .seed = 12}};

    /* one after the other, in this thread */
    run_train_job(&seq[0]);
    run_train_job(&seq[1]);
    check_trained(&seq[0]);
    check_trained(&seq[1]);

    /* at once, in two threads */
    pthread_t t[2];
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_create(&t[k], NULL, train_thread, &par[k]), 0);
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_join(t[k], NULL), 0);
    check_trained(&par[0]);
    check_trained(&par[1]);

    check_same(&seq[0], &par[0]);
    check_same(&seq[1], &par[1]);
    /* the two jobs are different runs (so that the comparison could fail) */
    assert_true(seq[0].n_params != seq[1].n_params ||
                memcmp(seq[0].params, seq[1].params, seq[0].n_params * sizeof(float)) != 0);

    for (int k = 0; k < 2; k++) {
        train_job_free(&seq[k]);
        train_job_free(&par[k]);
    }
}

/* ------------------------------------------------------------ inference */

#define FWD_N 8
#define FWD_REPEAT 4

typedef struct fwd_job {
    distill_model *model;  /* used by this job only */
    uint64_t seed;         /* of the input */
    float *ref;            /* the single-threaded outputs */
    float *out;            /* the last output of this run */
    int64_t numel;
    int mismatches;        /* repeats whose output differed from ref */
    char err[512];
} fwd_job;

static void run_fwd_job(fwd_job *j)
{
    distill_tensor *x = NULL, *y = NULL;
    int64_t xd[4] = {FWD_N, 1, SIDE, SIDE}, yd[2] = {FWD_N, CLASSES};

    distill_set_num_threads(g_threads);
    TRY(j, distill_tensor_create(&x, 4, xd));
    TRY(j, distill_tensor_create(&y, 2, yd));
    float *p = distill_tensor_data(x);
    for (int64_t i = 0; i < FWD_N * PIXELS; i++)
        p[i] = unit(j->seed, (uint64_t)i) - 0.5f;
    for (int r = 0; r < FWD_REPEAT; r++) {
        TRY(j, distill_model_forward(j->model, x, DISTILL_MODE_INFERENCE, y));
        j->numel = distill_tensor_numel(y);
        if (j->ref &&
            memcmp(j->ref, distill_tensor_data_const(y), (size_t)j->numel * sizeof(float)))
            j->mismatches++;
    }
    free(j->out);
    j->out = copy_block(distill_tensor_data_const(y), (size_t)j->numel);
done:
    distill_tensor_free(x);
    distill_tensor_free(y);
}

static void *fwd_thread(void *arg)
{
    run_fwd_job(arg);
    return NULL;
}

static void test_concurrent_forward(void **state)
{
    (void)state;
    enum { JOBS = 3 };
    fwd_job j[JOBS];
    memset(j, 0, sizeof j);
    assert_int_equal(zoo(&j[0].model, "cnn", 50, 21), DISTILL_OK);
    assert_int_equal(zoo(&j[1].model, "resnet8", 100, 22), DISTILL_OK);
    /* the same network as job 0, on other inputs */
    assert_int_equal(distill_model_clone(&j[2].model, j[0].model), DISTILL_OK);
    for (int k = 0; k < JOBS; k++)
        j[k].seed = 31 + (uint64_t)k;

    /* references: each model alone, in this thread */
    for (int k = 0; k < JOBS; k++) {
        run_fwd_job(&j[k]);
        if (j[k].err[0])
            fail_msg("model %d: %s", k, j[k].err);
        assert_int_equal(j[k].mismatches, 0);
        assert_int_equal(j[k].numel, FWD_N * CLASSES);
        j[k].ref = j[k].out;
        j[k].out = NULL;
        for (int64_t i = 0; i < j[k].numel; i++)
            assert_true(isfinite(j[k].ref[i]));
    }
    /* the outputs depend on the model and the input */
    assert_memory_not_equal(j[0].ref, j[1].ref, FWD_N * CLASSES * sizeof(float));
    assert_memory_not_equal(j[0].ref, j[2].ref, FWD_N * CLASSES * sizeof(float));

    pthread_t t[JOBS];
    for (int k = 0; k < JOBS; k++)
        assert_int_equal(pthread_create(&t[k], NULL, fwd_thread, &j[k]), 0);
    for (int k = 0; k < JOBS; k++)
        assert_int_equal(pthread_join(t[k], NULL), 0);
    for (int k = 0; k < JOBS; k++) {
        if (j[k].err[0])
            fail_msg("model %d in a thread: %s", k, j[k].err);
        if (j[k].mismatches)
            fail_msg("model %d: %d of %d concurrent forwards differ from the single-threaded "
                     "one (max diff %g in the last)",
                     k, j[k].mismatches, FWD_REPEAT,
                     max_diff(j[k].ref, j[k].out, (size_t)j[k].numel));
    }

    for (int k = 0; k < JOBS; k++) {
        free(j[k].ref);
        free(j[k].out);
        distill_model_free(j[k].model);
    }
}

/* ------------------------------------------------- streamed loader */

static int stream_decode(void *payload, int64_t i, uint8_t *dst, int64_t c, int64_t h, int64_t w)
{
    (void)payload;
    for (int64_t k = 0; k < c * h * w; k++)
        dst[k] = (uint8_t)(hash64((uint64_t)(i * 1000 + k)) >> 56);
    return DISTILL_OK;
}

static void test_streamed_loader_workers(void **state)
{
    (void)state;
    enum { N = 40, C = 3, H = 12, W = 12, B = 6 };
    store *st = store_new();
    assert_non_null(st);
    st->n = N;
    st->c = C;
    st->h = H;
    st->w = W;
    st->sample_elems = C * H * W;
    st->type = STORE_FILES;
    st->decode = stream_decode;
    distill_dataset *ds;
    assert_int_equal(dataset_wrap(&ds, st), DISTILL_OK);
    distill_loader_options o;
    distill_loader_options_init(&o, DISTILL_LOADER_OPTIONS_VERSION);
    o.batch_size = B;
    o.seed = 3;
    o.hflip = 1;
    o.random_resized_crop[0] = o.random_resized_crop[1] = 8;
    o.prefetch = 0;
    distill_loader *plain, *threaded;
    assert_int_equal(distill_loader_create(&plain, ds, &o), DISTILL_OK);
    o.prefetch = 1;
    o.workers = 3;
    assert_int_equal(distill_loader_create(&threaded, ds, &o), DISTILL_OK);
    int64_t bd[4] = {B, C, 8, 8};
    distill_tensor *x, *y;
    assert_int_equal(distill_tensor_create(&x, 4, bd), DISTILL_OK);
    assert_int_equal(distill_tensor_create(&y, 4, bd), DISTILL_OK);
    for (int step = 0; step < 30; step++) {
        if (step % 7 == 3) {
            /* jump while the next batch is being prefetched */
            uint64_t e = (uint64_t)(step % 3), p = (uint64_t)((step * 5) % N);
            assert_int_equal(distill_loader_set_state(plain, e, p), DISTILL_OK);
            assert_int_equal(distill_loader_set_state(threaded, e, p), DISTILL_OK);
        }
        int c1, c2;
        int32_t l1[B], l2[B];
        assert_int_equal(distill_loader_next(plain, x, l1, &c1), DISTILL_OK);
        assert_int_equal(distill_loader_next(threaded, y, l2, &c2), DISTILL_OK);
        assert_int_equal(c1, c2);
        if (c1)
            assert_memory_equal(distill_tensor_data(x), distill_tensor_data(y),
                                (size_t)c1 * C * 64 * sizeof(float));
    }
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_loader_free(plain);
    distill_loader_free(threaded);
    distill_dataset_free(ds);
}

int main(void)
{
    g_threads = distill_get_num_threads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_trainers),
        cmocka_unit_test(test_concurrent_forward),
        cmocka_unit_test(test_streamed_loader_workers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

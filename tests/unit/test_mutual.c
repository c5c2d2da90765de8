/*
 * test_mutual.c - students and online distillation (deep mutual learning).
 *
 *   - the mutual term's value against a naive KL and its gradient against
 *     central finite differences;
 *   - two students trained mutually for a few steps against a loop written
 *     by hand with the model and optimizer calls and a naive gradient;
 *   - three students (one with a FitNets adapter, a frozen teacher)
 *     stopped, checkpointed and resumed end exactly as an uninterrupted fit;
 *   - a checkpoint written before trainers took several students loads, and
 *     is written again byte for byte;
 *   - bad input: student counts, classes, shapes, options, checkpoints of
 *     another student count.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fuzz/fuzz_common.h"
#include "train/trainer_internal.h"

#define CHECK(call) assert_int_equal((call), DISTILL_OK)

/* ------------------------------------------------------------- helpers */

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static float frand(uint64_t *s)
{
    return (float)lcg(s) / (float)(1ull << 31) * 2.0f - 1.0f;
}

static distill_tensor *batch_of(int64_t n, uint64_t seed, int32_t *labels)
{
    int64_t d[4] = {n, 1, FZ_SIDE, FZ_SIDE};
    distill_tensor *x;
    CHECK(distill_tensor_create(&x, 4, d));
    float *p = distill_tensor_data(x);
    for (int64_t i = 0; i < distill_tensor_numel(x); i++)
        p[i] = frand(&seed);
    for (int64_t i = 0; i < n; i++)
        labels[i] = (int32_t)(lcg(&seed) % FZ_CLASSES);
    return x;
}

static distill_model *cnn(int width, uint64_t seed)
{
    distill_model *m;
    CHECK(fz_small_cnn(&m, width, 1, seed));
    return m;
}

/* ------------------------------------------------- the mutual term */

/* Naive: T^2 / n * sum_i 1/(S-1) sum_{j != k} sum_c p_j log(p_j / p_k). */
static double naive_mutual(int S, int k, int64_t n, int C, float *const *z, double T)
{
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        double pk[16], pj[16], zk = 0, zj;
        for (int c = 0; c < C; c++)
            zk += exp(z[k][i * C + c] / T);
        for (int c = 0; c < C; c++)
            pk[c] = exp(z[k][i * C + c] / T) / zk;
        for (int j = 0; j < S; j++) {
            if (j == k)
                continue;
            zj = 0;
            for (int c = 0; c < C; c++)
                zj += exp(z[j][i * C + c] / T);
            for (int c = 0; c < C; c++) {
                pj[c] = exp(z[j][i * C + c] / T) / zj;
                total += pj[c] * log(pj[c] / pk[c]) / (S - 1);
            }
        }
    }
    return T * T * total / (double)n;
}

static void test_mutual_term(void **state)
{
    (void)state;
    enum { S = 3, N = 4, C = 5 };
    float buf[S][N * C];
    float *z[S];
    uint64_t seed = 11;
    for (int j = 0; j < S; j++) {
        z[j] = buf[j];
        for (int e = 0; e < N * C; e++)
            buf[j][e] = 3.0f * frand(&seed);
    }
    const double T = 2.5, scale = 0.7;
    for (int k = 0; k < S; k++) {
        float grad[N * C];
        memset(grad, 0, sizeof grad);
        double v;
        CHECK(mutual_loss(S, k, N, C, (const float *const *)z, T, scale, &v, grad));
        assert_true(fabs(v - naive_mutual(S, k, N, C, z, T)) < 1e-9 * (1 + fabs(v)));
        assert_true(v > 0);
        /* d(scale * loss)/dz_k by central differences */
        for (int e = 0; e < N * C; e++) {
            float keep = z[k][e];
            float hi = keep + 1e-2f, lo = keep - 1e-2f;
            z[k][e] = hi;
            double vh = naive_mutual(S, k, N, C, z, T);
            z[k][e] = lo;
            double vl = naive_mutual(S, k, N, C, z, T);
            z[k][e] = keep;
            double fd = scale * (vh - vl) / ((double)hi - (double)lo);
            assert_true(fabs(fd - grad[e]) < 1e-4 * (1 + fabs(fd)));
        }
        /* the others' logits are constants: their gradient is not asked for,
         * and the term does not depend on k's copy of them */
    }
    /* two identical students teach nothing */
    float *same[2] = {buf[0], buf[0]};
    double v;
    float g[N * C];
    memset(g, 0, sizeof g);
    CHECK(mutual_loss(2, 1, N, C, (const float *const *)same, 1.0, 1.0, &v, g));
    assert_true(fabs(v) < 1e-12);
    for (int e = 0; e < N * C; e++)
        assert_true(fabs(g[e]) < 1e-7);
}

/* ----------------------------------- two students against a hand loop */

/* The gradient of CE(z, y) + w * T^2 KL(softmax(u/T) || softmax(z/T)), batch
 * mean, with respect to z: (softmax(z) - onehot)/n + w T (q_z - q_u)/n. */
static void naive_grad(int64_t n, const float *z, const float *u, const int32_t *y, double w,
                       double T, float *g, double *loss)
{
    const int C = FZ_CLASSES;
    double l = 0;
    for (int64_t i = 0; i < n; i++) {
        double s = 0, sz = 0, su = 0;
        for (int c = 0; c < C; c++) {
            s += exp(z[i * C + c]);
            sz += exp(z[i * C + c] / T);
            su += exp(u[i * C + c] / T);
        }
        for (int c = 0; c < C; c++) {
            double p = exp(z[i * C + c]) / s, qz = exp(z[i * C + c] / T) / sz,
                   qu = exp(u[i * C + c] / T) / su;
            g[i * C + c] = (float)((p - (c == y[i])) / (double)n + w * T * (qz - qu) / (double)n);
            l += w * T * T * qu * log(qu / qz) / (double)n;
            if (c == y[i])
                l -= log(p) / (double)n;
        }
    }
    *loss = l;
}

static void expect_close_blocks(distill_model *a, distill_model *b, double tol)
{
    size_t na, nb;
    const float *pa = distill_model_param_block(a, &na), *pb = distill_model_param_block(b, &nb);
    assert_int_equal(na, nb);
    for (size_t e = 0; e < na; e++)
        assert_true(fabs((double)pa[e] - pb[e]) <= tol * (1 + fabs((double)pb[e])));
    pa = distill_model_stats_block(a, &na);
    pb = distill_model_stats_block(b, &nb);
    assert_int_equal(na, nb);
    for (size_t e = 0; e < na; e++)
        assert_true(fabs((double)pa[e] - pb[e]) <= tol * (1 + fabs((double)pb[e])));
}

static void test_two_students_match_hand_loop(void **state)
{
    (void)state;
    enum { N = 8, STEPS = 4 };
    const double W = 0.7, T = 2.0;
    distill_model *m[2] = {cnn(4, 1), cnn(5, 2)}, *ref[2];
    for (int k = 0; k < 2; k++)
        CHECK(distill_model_clone(&ref[k], m[k]));
    distill_student *s[2];
    for (int k = 0; k < 2; k++)
        CHECK(distill_student_create(&s[k], m[k]));
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.batch_size = N;
    o.lr = 0.1;
    distill_mutual_options mo;
    CHECK(distill_mutual_options_init(&mo, DISTILL_MUTUAL_OPTIONS_VERSION));
    mo.weight = (float)W;
    mo.temperature = (float)T;
    distill_trainer *tr;
    CHECK(distill_trainer_create_students(&tr, 2, s, NULL, &o, &mo));
    assert_int_equal(distill_trainer_num_students(tr), 2);
    assert_ptr_equal(distill_trainer_student(tr, 1), s[1]);
    assert_ptr_equal(distill_student_model(s[1]), m[1]);
    assert_null(distill_trainer_student(tr, 2));

    /* the reference: the same optimizer, the naive gradient, by hand */
    distill_optimizer_options oo;
    CHECK(distill_optimizer_options_init(&oo, DISTILL_OPTIMIZER_OPTIONS_VERSION));
    oo.lr = 0.1;
    oo.momentum = 0.9;
    oo.nesterov = 1;
    oo.weight_decay = 5e-4;
    distill_optimizer *opt[2];
    int64_t ld[2] = {N, FZ_CLASSES};
    distill_tensor *z[2], *g[2];
    for (int k = 0; k < 2; k++) {
        CHECK(distill_optimizer_create(&opt[k], ref[k], &oo));
        CHECK(distill_tensor_create(&z[k], 2, ld));
        CHECK(distill_tensor_create(&g[k], 2, ld));
    }
    for (int step = 0; step < STEPS; step++) {
        int32_t y[N];
        distill_tensor *x = batch_of(N, 100 + (uint64_t)step, y);
        double loss;
        CHECK(distill_trainer_step(tr, x, y, &loss));
        double ref_loss = 0;
        for (int k = 0; k < 2; k++) {
            distill_model_zero_grad(ref[k]);
            CHECK(distill_model_forward(ref[k], x, DISTILL_MODE_TRAINING, z[k]));
        }
        for (int k = 0; k < 2; k++) {
            double l;
            naive_grad(N, distill_tensor_data(z[k]), distill_tensor_data(z[1 - k]), y, W, T,
                       distill_tensor_data(g[k]), &l);
            ref_loss += l;
        }
        for (int k = 0; k < 2; k++) {
            const char *out = distill_model_output_name(ref[k]);
            const distill_tensor *gk = g[k];
            CHECK(distill_model_backward(ref[k], 1, &out, &gk));
            CHECK(distill_optimizer_step(opt[k]));
        }
        assert_true(fabs(loss - ref_loss) < 1e-5 * (1 + fabs(ref_loss)));
        distill_tensor_free(x);
    }
    assert_int_equal(distill_trainer_steps_done(tr), STEPS);
    for (int k = 0; k < 2; k++)
        expect_close_blocks(m[k], ref[k], 1e-5);
    /* the students moved: the comparison is not between two unchanged models */
    distill_model *fresh = cnn(4, 1);
    size_t np;
    const float *a = distill_model_param_block(m[0], &np),
                *b = distill_model_param_block(fresh, &np);
    assert_true(memcmp(a, b, np * sizeof(float)) != 0);
    distill_model_free(fresh);

    distill_trainer_free(tr);
    for (int k = 0; k < 2; k++) {
        distill_student_free(s[k]);
        distill_optimizer_free(opt[k]);
        distill_tensor_free(z[k]);
        distill_tensor_free(g[k]);
        distill_model_free(m[k]);
        distill_model_free(ref[k]);
    }
}

/* Weight 0: two students trained side by side are each exactly a trainer of
 * its own. */
static void test_weight_zero_is_independent(void **state)
{
    (void)state;
    enum { N = 4 };
    distill_model *m[2] = {cnn(4, 3), cnn(4, 4)}, *alone[2] = {cnn(4, 3), cnn(4, 4)};
    distill_student *s[2];
    for (int k = 0; k < 2; k++)
        CHECK(distill_student_create(&s[k], m[k]));
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.batch_size = N;
    distill_mutual_options mo = DISTILL_MUTUAL_OPTIONS_INIT;
    mo.weight = 0;
    distill_trainer *tr, *tra[2];
    CHECK(distill_trainer_create_students(&tr, 2, s, NULL, &o, &mo));
    for (int k = 0; k < 2; k++)
        CHECK(distill_trainer_create(&tra[k], alone[k], NULL, &o));
    for (int step = 0; step < 3; step++) {
        int32_t y[N];
        distill_tensor *x = batch_of(N, 7 + (uint64_t)step, y);
        CHECK(distill_trainer_step(tr, x, y, NULL));
        for (int k = 0; k < 2; k++)
            CHECK(distill_trainer_step(tra[k], x, y, NULL));
        distill_tensor_free(x);
    }
    /* the second student's dropout stream differs, but the model has none */
    for (int k = 0; k < 2; k++)
        expect_close_blocks(m[k], alone[k], 0);
    distill_trainer_free(tr);
    for (int k = 0; k < 2; k++) {
        distill_trainer_free(tra[k]);
        distill_student_free(s[k]);
        distill_model_free(m[k]);
        distill_model_free(alone[k]);
    }
}

/* ------------------------------------------------------- resume */

typedef struct run3 {
    distill_model *m[3], *tm;
    distill_teacher *t;
    distill_student *s[3];
    distill_trainer *tr;
} run3;

static distill_dataset *g_data;

static void run3_make(run3 *r, int64_t max_steps)
{
    memset(r, 0, sizeof *r);
    r->m[0] = cnn(4, 1);
    r->m[1] = cnn(5, 2);
    r->m[2] = cnn(3, 3);
    CHECK(fz_small_cnn(&r->tm, 6, 0, 9));
    CHECK(distill_teacher_from_model(&r->t, r->tm));
    for (int k = 0; k < 3; k++)
        CHECK(distill_student_create(&r->s[k], r->m[k]));
    /* student 1: KD and FitNets (an adapter); 2: cross-entropy; 3: the default */
    distill_loss *l;
    CHECK(distill_loss_kd(&l, 2.0f, 0.5f));
    CHECK(distill_student_add_loss(r->s[0], l, 1.0f));
    CHECK(distill_loss_fitnets(&l, "relu1", "relu1"));
    CHECK(distill_student_add_loss(r->s[0], l, 0.5f));
    CHECK(distill_loss_cross_entropy(&l, 0.1f));
    CHECK(distill_student_add_loss(r->s[1], l, 1.0f));
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.batch_size = 8;
    o.epochs = 2;
    o.seed = 3;
    o.crop_padding = 1;
    o.hflip = 1;
    o.prefetch = 0;
    o.max_steps = max_steps;
    CHECK(distill_trainer_create_students(&r->tr, 3, r->s, r->t, &o, NULL));
}

static void run3_free(run3 *r)
{
    distill_trainer_free(r->tr);
    for (int k = 0; k < 3; k++) {
        distill_student_free(r->s[k]);
        distill_model_free(r->m[k]);
    }
    distill_teacher_free(r->t);
    distill_model_free(r->tm);
}

static void test_resume_three_students(void **state)
{
    (void)state;
    run3 full, a, b;
    run3_make(&full, 0);
    CHECK(distill_trainer_fit(full.tr, g_data, NULL));
    int64_t total = distill_trainer_steps_done(full.tr);
    assert_int_equal(total, 2 * (40 / 8));
    run3_make(&a, 3);
    CHECK(distill_trainer_fit(a.tr, g_data, NULL));
    assert_int_equal(distill_trainer_steps_done(a.tr), 3);
    CHECK(distill_trainer_save_checkpoint(a.tr, "three.ckpt"));
    run3_make(&b, 0);
    CHECK(distill_trainer_load_checkpoint(b.tr, "three.ckpt"));
    assert_int_equal(distill_trainer_steps_done(b.tr), 3);
    CHECK(distill_trainer_fit(b.tr, g_data, NULL));
    assert_int_equal(distill_trainer_steps_done(b.tr), total);
    for (int k = 0; k < 3; k++)
        expect_close_blocks(b.m[k], full.m[k], 0);
    /* the adapter and every optimizer too: the two end states save alike */
    CHECK(distill_trainer_save_checkpoint(full.tr, "full.ckpt"));
    CHECK(distill_trainer_save_checkpoint(b.tr, "resumed.ckpt"));
    FILE *f1 = fopen("full.ckpt", "rb"), *f2 = fopen("resumed.ckpt", "rb");
    assert_non_null(f1);
    assert_non_null(f2);
    int c1, c2;
    do {
        c1 = fgetc(f1);
        c2 = fgetc(f2);
        assert_int_equal(c1, c2);
    } while (c1 != EOF);
    fclose(f1);
    fclose(f2);
    run3_free(&full);
    run3_free(&a);
    run3_free(&b);
}

/* ------------------------------------------------------- old files */

static void corpus_path(char *buf, size_t size, const char *name)
{
    const char *here = __FILE__; /* .../tests/unit/test_mutual.c */
    const char *cut = strstr(here, "unit/test_mutual.c");
    assert_non_null(cut);
    snprintf(buf, size, "%.*sfuzz/corpus/fuzz_checkpoint/%s", (int)(cut - here), here, name);
}

static unsigned char *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return b;
}

/* The seed checkpoint of the fuzz corpus was written by the single-student
 * trainer; it loads, and is written again the same. */
static void test_old_checkpoint_loads(void **state)
{
    (void)state;
    char path[4096];
    corpus_path(path, sizeof path, "fixture_step2.ckpt");
    fz_trainer f;
    CHECK(fz_trainer_make(&f, 0));
    CHECK(distill_trainer_load_checkpoint(f.tr, path));
    assert_int_equal(distill_trainer_steps_done(f.tr), 2);
    CHECK(distill_trainer_save_checkpoint(f.tr, "again.ckpt"));
    size_t n1, n2;
    unsigned char *a = slurp(path, &n1), *b = slurp("again.ckpt", &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1);
    free(a);
    free(b);
    /* a single-student checkpoint does not fit two students, nor two one */
    distill_model *m[2] = {cnn(4, 1), cnn(4, 2)};
    distill_student *s[2];
    for (int k = 0; k < 2; k++)
        CHECK(distill_student_create(&s[k], m[k]));
    distill_trainer *tr2;
    distill_trainer_options o = DISTILL_TRAINER_OPTIONS_INIT;
    o.batch_size = FZ_BATCH;
    CHECK(distill_trainer_create_students(&tr2, 2, s, NULL, &o, NULL));
    distill_trainer *tr1;
    distill_model *one = cnn(4, 5);
    CHECK(distill_trainer_create(&tr1, one, NULL, &o));
    CHECK(distill_trainer_save_checkpoint(tr1, "one.ckpt"));
    CHECK(distill_trainer_save_checkpoint(tr2, "two.ckpt"));
    assert_int_equal(distill_trainer_load_checkpoint(tr2, "one.ckpt"), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "written for 1 student, this trainer has 2"));
    assert_int_equal(distill_trainer_load_checkpoint(tr1, "two.ckpt"), DISTILL_EFORMAT);
    assert_non_null(strstr(distill_last_error(), "written for 2 students, this trainer has 1"));
    CHECK(distill_trainer_load_checkpoint(tr2, "two.ckpt"));
    distill_trainer_free(tr1);
    distill_trainer_free(tr2);
    distill_model_free(one);
    for (int k = 0; k < 2; k++) {
        distill_student_free(s[k]);
        distill_model_free(m[k]);
    }
    fz_trainer_free(&f);
}

/* ------------------------------------------------------- bad input */

static void test_bad_input(void **state)
{
    (void)state;
    distill_model *a = cnn(4, 1), *b = cnn(4, 2);
    distill_student *sa, *sb, *sc;
    distill_trainer *tr = (distill_trainer *)&tr, *tr2;
    assert_int_equal(distill_student_create(&sa, NULL), DISTILL_EINVAL);
    assert_int_equal(distill_student_create(NULL, a), DISTILL_EINVAL);
    CHECK(distill_student_create(&sa, a));
    CHECK(distill_student_create(&sb, b));
    CHECK(distill_student_create(&sc, a));
    distill_student *two[2] = {sa, sb};

    assert_int_equal(distill_trainer_create_students(&tr, 0, two, NULL, NULL, NULL),
                     DISTILL_EINVAL);
    assert_null(tr);
    assert_int_equal(distill_trainer_create_students(&tr, 17, two, NULL, NULL, NULL),
                     DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "1 to 16"));
    distill_student *dup[2] = {sa, sa}, *same_model[2] = {sa, sc}, *with_null[2] = {sa, NULL};
    assert_int_equal(distill_trainer_create_students(&tr, 2, dup, NULL, NULL, NULL),
                     DISTILL_EINVAL);
    assert_int_equal(distill_trainer_create_students(&tr, 2, same_model, NULL, NULL, NULL),
                     DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "same model"));
    assert_int_equal(distill_trainer_create_students(&tr, 2, with_null, NULL, NULL, NULL),
                     DISTILL_EINVAL);
    distill_mutual_options mo = DISTILL_MUTUAL_OPTIONS_INIT;
    mo.temperature = 0;
    assert_int_equal(distill_trainer_create_students(&tr, 2, two, NULL, NULL, &mo),
                     DISTILL_EINVAL);
    mo.temperature = 1;
    mo.weight = NAN;
    assert_int_equal(distill_trainer_create_students(&tr, 2, two, NULL, NULL, &mo),
                     DISTILL_EINVAL);
    mo.weight = 1;
    mo.version = 99;
    assert_int_equal(distill_trainer_create_students(&tr, 2, two, NULL, NULL, &mo),
                     DISTILL_EVERSION);
    assert_int_equal(distill_mutual_options_init(&mo, 99), DISTILL_EVERSION);

    /* classes and input shapes must agree */
    int64_t in[3] = {1, FZ_SIDE, FZ_SIDE}, in8[3] = {1, 8, 8};
    distill_model *c4, *big;
    CHECK(distill_model_create(&c4, "input", 3, in));
    CHECK(distill_model_add_flatten(c4, "flat", "input"));
    CHECK(distill_model_add_linear(c4, "fc", "flat", 4, 1));
    CHECK(distill_model_create(&big, "input", 3, in8));
    CHECK(distill_model_add_flatten(big, "flat", "input"));
    CHECK(distill_model_add_linear(big, "fc", "flat", FZ_CLASSES, 1));
    distill_student *s4, *sbig;
    CHECK(distill_student_create(&s4, c4));
    CHECK(distill_student_create(&sbig, big));
    distill_student *mismatch[2] = {sa, s4};
    assert_int_equal(distill_trainer_create_students(&tr, 2, mismatch, NULL, NULL, NULL),
                     DISTILL_ESHAPE);
    assert_non_null(strstr(distill_last_error(), "student 2 has 4 classes, student 1 has 3"));
    mismatch[1] = sbig;
    assert_int_equal(distill_trainer_create_students(&tr, 2, mismatch, NULL, NULL, NULL),
                     DISTILL_ESHAPE);
    assert_non_null(strstr(distill_last_error(), "differs in shape"));

    /* a loss that needs a teacher, without one: refused, the students unchanged */
    distill_loss *kd;
    CHECK(distill_loss_kd(&kd, 4.0f, 0.9f));
    CHECK(distill_student_add_loss(sb, kd, 1.0f));
    assert_int_equal(distill_trainer_create_students(&tr, 2, two, NULL, NULL, NULL),
                     DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "needs a teacher"));
    assert_null(sa->trainer);
    assert_null(sb->trainer);
    /* an unknown student node is refused when the loss is added */
    distill_loss *fit;
    CHECK(distill_loss_fitnets(&fit, "nope", "relu1"));
    assert_int_equal(distill_student_add_loss(sa, fit, 1.0f), DISTILL_ENOTFOUND);

    /* a student is held by one trainer at a time */
    CHECK(distill_trainer_create_students(&tr, 1, &sa, NULL, NULL, NULL));
    assert_int_equal(distill_trainer_create_students(&tr2, 1, &sa, NULL, NULL, NULL),
                     DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "held by another trainer"));
    distill_trainer_free(tr);
    CHECK(distill_trainer_create_students(&tr2, 1, &sa, NULL, NULL, NULL));
    distill_trainer_free(tr2);

    /* distill_trainer_add_loss has one student to add to */
    distill_model *c = cnn(4, 7);
    distill_student *sd;
    CHECK(distill_student_create(&sd, c));
    distill_student *pair[2] = {sa, sd};
    CHECK(distill_trainer_create_students(&tr, 2, pair, NULL, NULL, NULL));
    distill_loss *ce;
    CHECK(distill_loss_cross_entropy(&ce, 0.0f));
    assert_int_equal(distill_trainer_add_loss(tr, ce, 1.0f), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "distill_student_add_loss"));
    distill_trainer_free(tr);

    distill_student_free(NULL);
    assert_null(distill_student_model(NULL));
    assert_int_equal(distill_trainer_num_students(NULL), 0);
    distill_student_free(sa);
    distill_student_free(sb);
    distill_student_free(sc);
    distill_student_free(sd);
    distill_student_free(s4);
    distill_student_free(sbig);
    distill_model_free(a);
    distill_model_free(b);
    distill_model_free(c);
    distill_model_free(c4);
    distill_model_free(big);
}

static int group_setup(void **state)
{
    (void)state;
    enum { N = 40 };
    static float img[N * FZ_SIDE * FZ_SIDE];
    static int32_t lab[N];
    uint64_t seed = 5;
    for (size_t e = 0; e < sizeof img / sizeof img[0]; e++)
        img[e] = 0.5f + 0.5f * frand(&seed);
    for (int i = 0; i < N; i++)
        lab[i] = i % FZ_CLASSES;
    int64_t d[3] = {1, FZ_SIDE, FZ_SIDE};
    return distill_dataset_from_memory(&g_data, N, d, img, lab, FZ_CLASSES, 0);
}

static int group_teardown(void **state)
{
    (void)state;
    distill_dataset_free(g_data);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutual_term),
        cmocka_unit_test(test_two_students_match_hand_loop),
        cmocka_unit_test(test_weight_zero_is_independent),
        cmocka_unit_test(test_resume_three_students),
        cmocka_unit_test(test_old_checkpoint_loads),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

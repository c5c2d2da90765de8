/*
 * host_teacher.c - a teacher computed by the host's own engine.
 *
 * The teacher need not be a libdistill model: any code that maps a batch
 * of images to logits can teach, through distill_teacher_from_callback().
 * Here the host's "engine" is plain C: a linear nearest-centroid classifier,
 *     logit_k(x) = S * (mu_k . x) - S * |mu_k|^2 / 2,
 * (the class whose mean image mu_k is nearest to x wins), fitted on 5,000
 * labelled images.
 *
 * The engine also exposes an intermediate feature, its per-class evidence
 * maps evidence[k][p] = mu_k[p] * x[p], (10, 28, 28), whose sums give the
 * logits: tap_shape() declares it, forward() fills it when a loss asks.  An
 * attention-transfer loss compares the student's "layer1" (16x28x28) with
 * it (AT needs the same height and width, not the same channels).
 *
 * A ResNet-8 is distilled with kd (T = 4, alpha = 0.5: half the signal
 * from the labels, so the student can end up better than this weak
 * teacher) + 1000 * at.
 */
#include <distill.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                    \
    do {                                                                               \
        int rc_ = (call);                                                              \
        if (rc_ != DISTILL_OK) {                                                       \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,              \
                    distill_last_error());                                             \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

#define MEAN 0.2860f
#define STD 0.3530f
#define C 10       /* classes */
#define P (28 * 28) /* pixels */
#define S 0.02f    /* logit scale */

/* ------------------------------------------------- the host's engine */

typedef struct engine {
    float mu[C][P]; /* class means of the normalized images */
    float b[C];     /* -S |mu_k|^2 / 2 */
} engine;

static engine *engine_fit(const distill_dataset *ds)
{
    engine *e = (engine *)calloc(1, sizeof *e);
    double count[C] = {0};
    float x[P];
    int32_t y;
    if (!e)
        exit(1);
    for (int64_t i = 0; i < distill_dataset_size(ds); i++) {
        CHECK(distill_dataset_get(ds, i, x, P, &y));
        for (int p = 0; p < P; p++)
            e->mu[y][p] += (x[p] - MEAN) / STD;
        count[y]++;
    }
    for (int k = 0; k < C; k++) {
        double sq = 0;
        for (int p = 0; p < P; p++) {
            e->mu[k][p] /= (float)count[k];
            sq += (double)e->mu[k][p] * e->mu[k][p];
        }
        e->b[k] = (float)(-S * sq / 2);
    }
    return e;
}

/* The engine's forward for one normalized image: logits, and the evidence maps if asked. */
static void engine_run(const engine *e, const float *x, float *logits, float *evidence)
{
    for (int k = 0; k < C; k++) {
        double dot = 0;
        for (int p = 0; p < P; p++) {
            float v = e->mu[k][p] * x[p];
            dot += v;
            if (evidence)
                evidence[k * P + p] = v;
        }
        logits[k] = (float)(S * dot) + e->b[k];
    }
}

/* The engine's own test accuracy, computed by the host. */
static double engine_accuracy(const engine *e, const distill_dataset *ds)
{
    float x[P], z[C];
    int32_t y;
    int64_t right = 0, n = distill_dataset_size(ds);
    for (int64_t i = 0; i < n; i++) {
        CHECK(distill_dataset_get(ds, i, x, P, &y));
        for (int p = 0; p < P; p++)
            x[p] = (x[p] - MEAN) / STD;
        engine_run(e, x, z, NULL);
        int best = 0;
        for (int k = 1; k < C; k++)
            if (z[k] > z[best])
                best = k;
        right += best == y;
    }
    return (double)right / (double)n;
}

/* -------------------------------------------- the teacher callbacks */

static int host_forward(const distill_tensor *images, distill_tensor *logits, int n_taps,
                        const char *const *tap_names, distill_tensor *const *taps, void *payload)
{
    const engine *e = (const engine *)payload;
    float *evidence = NULL;
    for (int t = 0; t < n_taps; t++) /* the only tap we offer (see host_tap_shape) */
        if (strcmp(tap_names[t], "evidence") == 0)
            evidence = distill_tensor_data(taps[t]);
    int64_t n = distill_tensor_dim(images, 0);
    const float *x = distill_tensor_data_const(images); /* normalized by the trainer */
    float *z = distill_tensor_data(logits);
    for (int64_t i = 0; i < n; i++)
        engine_run(e, x + i * P, z + i * C, evidence ? evidence + i * C * P : NULL);
    return DISTILL_OK;
}

static int host_tap_shape(const char *name, int *rank, int64_t dims[3], void *payload)
{
    (void)payload;
    if (strcmp(name, "evidence") != 0)
        return DISTILL_ENOTFOUND;
    *rank = 3;
    dims[0] = C, dims[1] = 28, dims[2] = 28;
    return DISTILL_OK;
}

static void host_destroy(void *payload)
{
    free(payload); /* the teacher owns the engine */
}

/* ------------------------------------------------------------ main */

static int on_progress(const distill_progress *p, void *payload)
{
    (void)payload;
    if (!p->end_of_epoch)
        printf("  step %3lld: %s %.4g, %s %.4g\n", (long long)p->step, p->term_names[0],
               p->term_values[0], p->term_names[1], p->term_values[1]);
    return 0;
}

int main(void)
{
    distill_dataset *all_train, *all_test, *train_set, *test_set;
    CHECK(distill_dataset_fashion_mnist(&all_train, NULL, 1));
    CHECK(distill_dataset_fashion_mnist(&all_test, NULL, 0));
    CHECK(distill_dataset_subset(&train_set, all_train, 0, 5000));
    CHECK(distill_dataset_subset(&test_set, all_test, 0, 2000));
    distill_dataset_free(all_train);
    distill_dataset_free(all_test);

    engine *e = engine_fit(train_set);
    printf("host engine (nearest class mean, linear): test accuracy %.4f\n",
           engine_accuracy(e, test_set));
    distill_teacher_callback cb = {DISTILL_TEACHER_CALLBACK_VERSION, C, host_forward,
                                   host_tap_shape, e, host_destroy};
    distill_teacher *teacher;
    CHECK(distill_teacher_from_callback(&teacher, &cb)); /* e belongs to the teacher now */

    distill_model *student;
    CHECK(distill_zoo_create(&student, "resnet8", NULL));
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.epochs = 2;
    o.batch_size = 64;
    o.lr = 0.05;
    o.seed = 1;
    o.norm_count = 1;
    o.mean[0] = MEAN;
    o.std[0] = STD;
    o.progress = on_progress;
    o.progress_every = 40;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, student, teacher, &o));
    distill_loss *kd, *at;
    CHECK(distill_loss_kd(&kd, 4.0f, 0.5f));
    CHECK(distill_loss_attention(&at, "layer1", "evidence", 2.0f));
    CHECK(distill_trainer_add_loss(tr, kd, 1.0f));
    CHECK(distill_trainer_add_loss(tr, at, 1000.0f)); /* asks host_tap_shape("evidence") */
    printf("distilling resnet8 from the host's linear engine (kd + at on \"evidence\"):\n");
    CHECK(distill_trainer_fit(tr, train_set, NULL));
    distill_trainer_free(tr);

    distill_eval_options eo;
    CHECK(distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION));
    eo.norm_count = 1;
    eo.mean[0] = MEAN;
    eo.std[0] = STD;
    eo.agreement = teacher;
    distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(student, test_set, &eo, &r));
    printf("test: student accuracy %.4f, agreement with the engine %.4f\n", r.top1, r.agreement);

    distill_teacher_free(teacher); /* calls host_destroy */
    distill_model_free(student);
    distill_dataset_free(train_set);
    distill_dataset_free(test_set);
    return 0;
}

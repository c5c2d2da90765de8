/*
 * mutual.c - online mutual learning (deep mutual learning, Zhang et al.
 * 2018) between two students, written with the public API.
 *
 * There is no pre-trained teacher: two ResNet-8s (different seeds) learn
 * together, each from the labels and from the other's predictions:
 *     loss_A = CE(A, y) + KL(p_B || p_A),   loss_B = CE(B, y) + KL(p_A || p_B)
 * Each student has its own trainer whose teacher is a host callback
 * (distill_teacher_from_callback) that runs the OTHER student's forward.
 * The host drives the loop with distill_trainer_step(): on every batch
 * first A takes a step against B, then B against the updated A, as in
 * Algorithm 1 of the paper.
 *
 * The peer's forward runs in training mode (batch statistics), as DML uses
 * the peer's current training outputs; it would update the peer's BatchNorm
 * running statistics a second time per batch, so the callback saves and
 * restores them.  A ResNet-8 trained alone with the same recipe is the
 * baseline.  After only two epochs the peers are still behind it: the
 * gains DML reports come at convergence.
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

static const float MEAN = 0.2860f, STD = 0.3530f;
#define EPOCHS 2
#define BATCH 64

typedef struct peer {
    distill_model *model;
    float *saved_stats; /* the peer's BatchNorm running statistics */
} peer;

/* The teacher callback: the peer's logits for this batch, detached (no
 * gradient flows into the peer), with its running statistics untouched. */
static int peer_forward(const distill_tensor *images, distill_tensor *logits, int n_taps,
                        const char *const *tap_names, distill_tensor *const *taps, void *payload)
{
    (void)n_taps, (void)tap_names, (void)taps;
    peer *p = (peer *)payload;
    size_t n;
    float *stats = distill_model_stats_block(p->model, &n);
    memcpy(p->saved_stats, stats, n * sizeof *stats);
    int rc = distill_model_forward(p->model, images, DISTILL_MODE_TRAINING, logits);
    memcpy(stats, p->saved_stats, n * sizeof *stats);
    return rc;
}

static distill_model *resnet8(uint64_t seed)
{
    distill_zoo_options zo;
    CHECK(distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION));
    zo.seed = seed;
    distill_model *m;
    CHECK(distill_zoo_create(&m, "resnet8", &zo));
    return m;
}

static void recipe(distill_trainer_options *o, int64_t total_steps)
{
    CHECK(distill_trainer_options_init(o, DISTILL_TRAINER_OPTIONS_VERSION));
    o->epochs = EPOCHS;
    o->batch_size = BATCH;
    o->lr = 0.05;
    o->seed = 1;
    o->norm_count = 1;
    o->mean[0] = MEAN;
    o->std[0] = STD;
    o->max_steps = total_steps; /* with distill_trainer_step: the length of the cosine schedule */
}

static double accuracy(distill_model *m, const distill_dataset *test)
{
    distill_eval_options eo;
    CHECK(distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION));
    eo.norm_count = 1;
    eo.mean[0] = MEAN;
    eo.std[0] = STD;
    distill_eval_result r;
    CHECK(distill_evaluate(m, test, &eo, &r));
    return r.top1;
}

int main(void)
{
    distill_dataset *all_train, *all_test, *train_set, *test_set;
    CHECK(distill_dataset_fashion_mnist(&all_train, NULL, 1));
    CHECK(distill_dataset_fashion_mnist(&all_test, NULL, 0));
    CHECK(distill_dataset_subset(&train_set, all_train, 0, 4000));
    CHECK(distill_dataset_subset(&test_set, all_test, 0, 2000));
    distill_dataset_free(all_train);
    distill_dataset_free(all_test);

    /* The host's loader: the trainer's settings (seed, normalization, drop_last). */
    distill_loader_options lo;
    CHECK(distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION));
    lo.batch_size = BATCH;
    lo.drop_last = 1;
    lo.seed = 1;
    lo.norm_count = 1;
    lo.mean = &MEAN;
    lo.std = &STD;
    distill_loader *ld;
    CHECK(distill_loader_create(&ld, train_set, &lo));
    int64_t total_steps = EPOCHS * distill_loader_num_batches(ld);

    /* Two students, each the other's teacher. */
    distill_model *a = resnet8(1), *b = resnet8(2);
    size_t n_stats;
    distill_model_stats_block(a, &n_stats); /* the same architecture: the same size */
    peer peer_a = {a, (float *)malloc(n_stats * sizeof(float))};
    peer peer_b = {b, (float *)malloc(n_stats * sizeof(float))};
    if (!peer_a.saved_stats || !peer_b.saved_stats)
        return 1;
    distill_teacher_callback cb = {DISTILL_TEACHER_CALLBACK_VERSION, 10, peer_forward,
                                   NULL, NULL, NULL};
    distill_teacher *teacher_of_a, *teacher_of_b;
    cb.payload = &peer_b;
    CHECK(distill_teacher_from_callback(&teacher_of_a, &cb));
    cb.payload = &peer_a;
    CHECK(distill_teacher_from_callback(&teacher_of_b, &cb));

    distill_trainer_options o;
    recipe(&o, total_steps);
    distill_trainer *tr[2];
    CHECK(distill_trainer_create(&tr[0], a, teacher_of_a, &o));
    CHECK(distill_trainer_create(&tr[1], b, teacher_of_b, &o));
    for (int k = 0; k < 2; k++) {
        distill_loss *ce, *kl;
        CHECK(distill_loss_cross_entropy(&ce, 0.0f));
        CHECK(distill_loss_kd(&kl, 1.0f, 1.0f)); /* T = 1, alpha = 1: KL(peer || self) */
        CHECK(distill_trainer_add_loss(tr[k], ce, 1.0f));
        CHECK(distill_trainer_add_loss(tr[k], kl, 1.0f));
    }

    int64_t dims[4] = {BATCH, 1, 28, 28};
    distill_tensor *x;
    CHECK(distill_tensor_create(&x, 4, dims));
    int32_t y[BATCH];
    printf("mutual learning: two resnet8 students, %d epochs of %lld images\n", EPOCHS,
           (long long)distill_dataset_size(train_set));
    for (int epoch = 1; epoch <= EPOCHS; epoch++) {
        double loss[2] = {0, 0};
        int n, steps = 0;
        for (;;) {
            CHECK(distill_loader_next(ld, x, y, &n));
            if (n == 0)
                break; /* end of the epoch */
            double l;
            for (int k = 0; k < 2; k++) {
                CHECK(distill_trainer_step(tr[k], x, y, &l));
                loss[k] += l;
            }
            steps++;
        }
        printf("  epoch %d: mean loss A %.4f, B %.4f; test accuracy A %.4f, B %.4f\n", epoch,
               loss[0] / steps, loss[1] / steps, accuracy(a, test_set), accuracy(b, test_set));
    }

    /* The baseline: one resnet8 alone, cross-entropy, the same batches and schedule. */
    distill_model *alone = resnet8(1);
    distill_trainer *tr_alone;
    recipe(&o, 0);
    CHECK(distill_trainer_create(&tr_alone, alone, NULL, &o));
    CHECK(distill_trainer_fit(tr_alone, train_set, NULL));
    printf("resnet8 trained alone: test accuracy %.4f\n", accuracy(alone, test_set));

    distill_trainer_free(tr_alone);
    distill_trainer_free(tr[0]);
    distill_trainer_free(tr[1]);
    distill_teacher_free(teacher_of_a);
    distill_teacher_free(teacher_of_b);
    distill_tensor_free(x);
    distill_loader_free(ld);
    distill_model_free(a);
    distill_model_free(b);
    distill_model_free(alone);
    free(peer_a.saved_stats);
    free(peer_b.saved_stats);
    distill_dataset_free(train_set);
    distill_dataset_free(test_set);
    return 0;
}

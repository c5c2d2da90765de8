/*
 * mutual.c - online mutual learning (deep mutual learning, Zhang et al.
 * 2018) between two students, written with the public API.
 *
 * There is no pre-trained teacher: two ResNet-8s (different seeds) learn
 * together, each from the labels and from the other's predictions:
 *     loss_A = CE(A, y) + KL(p_B || p_A),   loss_B = CE(B, y) + KL(p_A || p_B)
 * Each model becomes a distill_student, and one trainer holds both
 * (distill_trainer_create_students): on every batch both run their forward
 * in training mode, each loss takes the other's outputs as constants, and
 * both update.  (The paper's Algorithm 1 updates them in turn; see the
 * README.)  A frozen teacher could be added as the trainer's teacher, and
 * more students as further entries of the array.
 *
 * A ResNet-8 trained alone with the same recipe is the baseline.  After
 * only two epochs the peers may still be behind it: the gains DML reports
 * come at convergence.
 */
#include <distill.h>

#include <stdio.h>
#include <stdlib.h>

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

static distill_model *resnet8(uint64_t seed)
{
    distill_zoo_options zo;
    CHECK(distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION));
    zo.seed = seed;
    distill_model *m;
    CHECK(distill_zoo_create(&m, "resnet8", &zo));
    return m;
}

static void recipe(distill_trainer_options *o)
{
    CHECK(distill_trainer_options_init(o, DISTILL_TRAINER_OPTIONS_VERSION));
    o->epochs = EPOCHS;
    o->batch_size = BATCH;
    o->lr = 0.05;
    o->seed = 1;
    o->norm_count = 1;
    o->mean[0] = MEAN;
    o->std[0] = STD;
}

static double accuracy(distill_model *m, const distill_dataset *test)
{
    distill_eval_options eo;
    CHECK(distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION));
    eo.norm_count = 1;
    eo.mean[0] = MEAN;
    eo.std[0] = STD;
    distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(m, test, &eo, &r));
    return r.top1;
}

/* After each epoch: both students' validation accuracy. */
static int on_progress(const distill_progress *p, void *payload)
{
    (void)payload;
    if (p->end_of_epoch)
        printf("  epoch %d: loss A+B %.4f; test accuracy A %.4f, B %.4f\n", p->epoch, p->loss,
               p->student_val_accuracy[0], p->student_val_accuracy[1]);
    return 0;
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

    /* Two students (different seeds), each with its default loss (cross-
     * entropy); the trainer adds the mutual term. */
    distill_model *a = resnet8(1), *b = resnet8(2);
    distill_student *students[2];
    CHECK(distill_student_create(&students[0], a));
    CHECK(distill_student_create(&students[1], b));
    distill_mutual_options mo;
    CHECK(distill_mutual_options_init(&mo, DISTILL_MUTUAL_OPTIONS_VERSION));
    mo.weight = 1.0f;      /* CE + 1 * KL(peer || self), as in the paper */
    mo.temperature = 1.0f;

    distill_trainer_options o;
    recipe(&o);
    o.progress = on_progress;
    o.progress_every = 1000000; /* only the end-of-epoch calls print */
    distill_trainer *tr;
    CHECK(distill_trainer_create_students(&tr, 2, students, NULL, &o, &mo));
    printf("mutual learning: two resnet8 students, %d epochs of %lld images\n", EPOCHS,
           (long long)distill_dataset_size(train_set));
    CHECK(distill_trainer_fit(tr, train_set, test_set));
    distill_trainer_free(tr);

    /* The baseline: one resnet8 alone, cross-entropy, the same batches and schedule. */
    distill_model *alone = resnet8(1);
    distill_trainer *tr_alone;
    recipe(&o);
    CHECK(distill_trainer_create(&tr_alone, alone, NULL, &o));
    CHECK(distill_trainer_fit(tr_alone, train_set, NULL));
    printf("resnet8 trained alone: test accuracy %.4f; mutual: A %.4f, B %.4f\n",
           accuracy(alone, test_set), accuracy(a, test_set), accuracy(b, test_set));

    distill_trainer_free(tr_alone);
    distill_student_free(students[0]);
    distill_student_free(students[1]);
    distill_model_free(a);
    distill_model_free(b);
    distill_model_free(alone);
    distill_dataset_free(train_set);
    distill_dataset_free(test_set);
    return 0;
}

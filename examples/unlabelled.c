/*
 * unlabelled.c - distillation on unlabelled data.
 *
 * Labels are often scarce while images are plentiful.  A teacher trained
 * on the few labelled images can label the rest softly: the student is
 * distilled with KD at alpha = 1 (teacher outputs only, no cross-entropy)
 * on a larger set whose labels have been dropped.  With a budget this
 * small, T = 1 learns faster than the usual T = 4; for longer runs try 4.
 *
 *   labelled part    images      0 ..  2,999 (3,000, with labels)
 *   unlabelled part  images  3,000 .. 14,999 (12,000, labels dropped)
 *
 * The teacher (ResNet-20) is trained on the labelled part.  Two ResNet-8
 * students get the same number of steps: one distilled from the teacher
 * over the unlabelled part, one trained with cross-entropy on the labelled
 * part alone.
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

#define MEAN 0.2860f
#define STD 0.3530f
#define LABELLED 3000
#define UNLABELLED 12000

static distill_model *zoo(const char *name, uint64_t seed)
{
    distill_zoo_options zo;
    CHECK(distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION));
    zo.seed = seed;
    distill_model *m;
    CHECK(distill_zoo_create(&m, name, &zo));
    return m;
}

static void train(distill_model *m, distill_teacher *t, distill_loss *loss,
                  const distill_dataset *data, int epochs)
{
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.epochs = epochs;
    o.batch_size = 64;
    o.lr = 0.05;
    o.seed = 1;
    o.norm_count = 1;
    o.mean[0] = MEAN;
    o.std[0] = STD;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, t, &o));
    if (loss)
        CHECK(distill_trainer_add_loss(tr, loss, 1.0f));
    CHECK(distill_trainer_fit(tr, data, NULL));
    distill_trainer_free(tr);
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

int main(void)
{
    distill_dataset *all_train, *all_test, *labelled, *unlabelled, *test_set;
    CHECK(distill_dataset_fashion_mnist(&all_train, NULL, 1));
    CHECK(distill_dataset_fashion_mnist(&all_test, NULL, 0));
    CHECK(distill_dataset_subset(&labelled, all_train, 0, LABELLED));
    CHECK(distill_dataset_subset(&unlabelled, all_train, LABELLED, UNLABELLED));
    CHECK(distill_dataset_subset(&test_set, all_test, 0, 2000));
    distill_dataset_free(all_train);
    distill_dataset_free(all_test);
    CHECK(distill_dataset_drop_labels(unlabelled)); /* this handle has no labels any more */
    printf("labelled: %lld images (labels: %s), unlabelled: %lld images (labels: %s)\n",
           (long long)distill_dataset_size(labelled),
           distill_dataset_has_labels(labelled) ? "yes" : "no",
           (long long)distill_dataset_size(unlabelled),
           distill_dataset_has_labels(unlabelled) ? "yes" : "no");

    /* The teacher learns from the labelled part (4 epochs). */
    distill_model *teacher_model = zoo("resnet20", 1);
    printf("training the teacher (resnet20) on the labelled part...\n");
    train(teacher_model, NULL, NULL, labelled, 4);
    distill_teacher *teacher;
    CHECK(distill_teacher_from_model(&teacher, teacher_model));

    /* Student A: KD with alpha = 1 needs no labels; 1 epoch of the unlabelled part. */
    distill_model *student = zoo("resnet8", 2);
    distill_loss *kd;
    CHECK(distill_loss_kd(&kd, 1.0f, 1.0f));
    printf("distilling resnet8 on the unlabelled part (kd T=1 alpha=1)...\n");
    train(student, teacher, kd, unlabelled, 1);

    /* Student B: cross-entropy on the labelled part, the same number of steps. */
    distill_model *baseline = zoo("resnet8", 2);
    int epochs = UNLABELLED / LABELLED;
    printf("training resnet8 on the labelled part alone (%d epochs)...\n", epochs);
    train(baseline, NULL, NULL, labelled, epochs);

    printf("test accuracy:\n");
    printf("  teacher  resnet20, %5d labelled images        %.4f\n", LABELLED,
           accuracy(teacher_model, test_set));
    printf("  student  resnet8, distilled on %5d unlabelled  %.4f\n", UNLABELLED,
           accuracy(student, test_set));
    printf("  baseline resnet8, %5d labelled images         %.4f\n", LABELLED,
           accuracy(baseline, test_set));

    distill_teacher_free(teacher);
    distill_model_free(teacher_model);
    distill_model_free(student);
    distill_model_free(baseline);
    distill_dataset_free(labelled);
    distill_dataset_free(unlabelled);
    distill_dataset_free(test_set);
    return 0;
}

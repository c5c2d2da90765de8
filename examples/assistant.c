/*
 * assistant.c - a teacher-assistant chain (Mirzadeh et al. 2020).
 *
 * When the gap between teacher and student is large, an intermediate
 * "assistant" can bridge it: the teacher teaches the assistant, and the
 * assistant, frozen in turn, teaches the student.  Each link is an ordinary
 * offline distillation; the chain is just a loop:
 *
 *     resnet20 (trained on labels) -> resnet14 -> resnet8
 *
 * For comparison a second ResNet-8 is distilled from the teacher directly.
 * 4,000 training images, 2 epochs per model, KD with T = 4, alpha = 0.9.
 * With a gap this small and runs this short the chain does not beat direct
 * distillation; assistants help when the teacher is far larger than the
 * student and every model is trained to convergence.
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

/* A new zoo model trained on `data`: with cross-entropy when teacher is
 * NULL, else distilled from teacher with kd:T=4,alpha=0.9. */
static distill_model *train(const char *zoo_name, distill_teacher *teacher,
                            const distill_dataset *data)
{
    distill_model *m;
    CHECK(distill_zoo_create(&m, zoo_name, NULL));
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.epochs = 2;
    o.batch_size = 64;
    o.lr = 0.05;
    o.seed = 1;
    o.norm_count = 1;
    o.mean[0] = MEAN;
    o.std[0] = STD;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, teacher, &o));
    if (teacher) {
        distill_loss *kd;
        CHECK(distill_loss_kd(&kd, 4.0f, 0.9f));
        CHECK(distill_trainer_add_loss(tr, kd, 1.0f));
    }
    CHECK(distill_trainer_fit(tr, data, NULL));
    distill_trainer_free(tr);
    return m;
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
    distill_dataset *all_train, *all_test, *train_set, *test_set;
    CHECK(distill_dataset_fashion_mnist(&all_train, NULL, 1));
    CHECK(distill_dataset_fashion_mnist(&all_test, NULL, 0));
    CHECK(distill_dataset_subset(&train_set, all_train, 0, 4000));
    CHECK(distill_dataset_subset(&test_set, all_test, 0, 2000));
    distill_dataset_free(all_train);
    distill_dataset_free(all_test);

    /* The chain: each model, once trained, is frozen to teach the next. */
    const char *chain[3] = {"resnet20", "resnet14", "resnet8"};
    distill_model *models[3];
    distill_teacher *teacher = NULL;
    for (int k = 0; k < 3; k++) {
        printf("%s %s%s...\n", teacher ? "distilling" : "training", chain[k],
               k ? (k == 1 ? " from the teacher" : " from the assistant") : " on the labels");
        models[k] = train(chain[k], teacher, train_set);
        distill_teacher_free(teacher); /* the previous link is no longer needed */
        teacher = NULL;
        if (k < 2)
            CHECK(distill_teacher_from_model(&teacher, models[k]));
    }

    /* The shortcut: resnet8 straight from resnet20. */
    printf("distilling resnet8 from the teacher directly...\n");
    CHECK(distill_teacher_from_model(&teacher, models[0]));
    distill_model *direct = train("resnet8", teacher, train_set);
    distill_teacher_free(teacher);

    printf("test accuracy:\n");
    printf("  teacher    resnet20                          %.4f\n", accuracy(models[0], test_set));
    printf("  assistant  resnet14 <- resnet20              %.4f\n", accuracy(models[1], test_set));
    printf("  student    resnet8  <- resnet14 <- resnet20  %.4f\n", accuracy(models[2], test_set));
    printf("  direct     resnet8  <- resnet20              %.4f\n", accuracy(direct, test_set));

    for (int k = 0; k < 3; k++)
        distill_model_free(models[k]);
    distill_model_free(direct);
    distill_dataset_free(train_set);
    distill_dataset_free(test_set);
    return 0;
}

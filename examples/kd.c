/*
 * kd.c - offline knowledge distillation (Hinton et al. 2015), the
 * library's main use.
 *
 * 1. Train a teacher, a ResNet-20, on 6,000 Fashion-MNIST images.  (In a
 *    real application the teacher is already trained: load it with
 *    distill_model_load().)
 * 2. Freeze it: distill_teacher_from_model() makes an inference-only copy.
 * 3. Distill a ResNet-8 student from it with the KD loss
 *    0.9 * T^2 * KL(teacher_T || student_T) + 0.1 * CE, T = 4.
 * 4. For comparison, train the same ResNet-8 (same seed, same recipe) with
 *    cross-entropy only.
 * 5. Print the accuracies and the compression report: parameters, bytes
 *    on disk, multiply-adds, latency and agreement, teacher vs student.
 *
 * On a budget this small (a briefly trained teacher, under 200 steps per
 * student) KD at T = 4 does not beat plain cross-entropy - PyTorch gives
 * the same picture on this recipe - though the distilled student agrees
 * more with its teacher.  KD pays off with a well-trained teacher and longer
 * runs, and most when labels are few (see unlabelled.c).
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

#define MEAN 0.2860f /* Fashion-MNIST pixel statistics */
#define STD 0.3530f
#define TRAIN_IMAGES 6000
#define TEST_IMAGES 2000
#define EPOCHS 2

static distill_model *zoo(const char *name, uint64_t seed)
{
    distill_zoo_options zo;
    CHECK(distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION));
    zo.seed = seed;
    distill_model *m;
    CHECK(distill_zoo_create(&m, name, &zo));
    return m;
}

/* Train `model` on `train` with one recipe for all three models; teacher
 * NULL means plain cross-entropy, else the given loss. */
static void train(distill_model *model, distill_teacher *teacher, distill_loss *loss,
                  const distill_dataset *data)
{
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.epochs = EPOCHS;
    o.batch_size = 64;
    o.lr = 0.05;
    o.seed = 1;
    o.norm_count = 1;
    o.mean[0] = MEAN;
    o.std[0] = STD;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, model, teacher, &o));
    if (loss)
        CHECK(distill_trainer_add_loss(tr, loss, 1.0f)); /* the trainer owns the loss now */
    CHECK(distill_trainer_fit(tr, data, NULL));
    distill_trainer_free(tr);
}

static double accuracy(distill_model *m, const distill_dataset *test, distill_teacher *t,
                       double *agreement)
{
    distill_eval_options eo;
    CHECK(distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION));
    eo.norm_count = 1;
    eo.mean[0] = MEAN;
    eo.std[0] = STD;
    eo.agreement = t;
    distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(m, test, &eo, &r));
    if (agreement)
        *agreement = r.agreement;
    return r.top1;
}

int main(void)
{
    distill_dataset *all_train, *all_test, *train_set, *test_set;
    CHECK(distill_dataset_fashion_mnist(&all_train, NULL, 1));
    CHECK(distill_dataset_fashion_mnist(&all_test, NULL, 0));
    CHECK(distill_dataset_subset(&train_set, all_train, 0, TRAIN_IMAGES));
    CHECK(distill_dataset_subset(&test_set, all_test, 0, TEST_IMAGES));
    distill_dataset_free(all_train);
    distill_dataset_free(all_test);
    printf("Fashion-MNIST: %d training images, %d test images, %d epochs, %d threads\n",
           TRAIN_IMAGES, TEST_IMAGES, EPOCHS, distill_get_num_threads());

    /* 1. the teacher */
    distill_model *teacher_model = zoo("resnet20", 1);
    printf("training the teacher (resnet20)...\n");
    train(teacher_model, NULL, NULL, train_set);
    double teacher_acc = accuracy(teacher_model, test_set, NULL, NULL);

    /* 2. freeze it */
    distill_teacher *teacher;
    CHECK(distill_teacher_from_model(&teacher, teacher_model));

    /* 3. distill the student */
    distill_model *student = zoo("resnet8", 2);
    distill_loss *kd;
    CHECK(distill_loss_kd(&kd, 4.0f, 0.9f));
    printf("distilling the student (resnet8, kd T=4 alpha=0.9)...\n");
    train(student, teacher, kd, train_set);
    double kd_agree, kd_acc = accuracy(student, test_set, teacher, &kd_agree);

    /* 4. the same student without a teacher */
    distill_model *baseline = zoo("resnet8", 2);
    printf("training the baseline (resnet8, cross-entropy only)...\n");
    train(baseline, NULL, NULL, train_set);
    double ce_agree, ce_acc = accuracy(baseline, test_set, teacher, &ce_agree);

    printf("\n%-28s %9s %10s\n", "model", "accuracy", "agreement");
    printf("%-28s %9.4f %10s\n", "teacher  resnet20", teacher_acc, "-");
    printf("%-28s %9.4f %10.4f\n", "student  resnet8, KD", kd_acc, kd_agree);
    printf("%-28s %9.4f %10.4f\n", "baseline resnet8, CE only", ce_acc, ce_agree);

    /* 5. the compression report */
    distill_eval_options eo;
    CHECK(distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION));
    eo.norm_count = 1;
    eo.mean[0] = MEAN;
    eo.std[0] = STD;
    distill_report rep = DISTILL_REPORT_INIT;
    distill_report_side ts = DISTILL_REPORT_SIDE_INIT, ss = DISTILL_REPORT_SIDE_INIT;
    CHECK(distill_report_compare(teacher_model, student, test_set, &eo, 128, &rep, &ts, &ss));
    const distill_report_side *t = &ts, *s = &ss;
    printf("\ncompression report (%d threads)\n", rep.threads);
    printf("%-22s %12s %12s %8s\n", "", "teacher", "student", "ratio");
    printf("%-22s %12lld %12lld %7.1fx\n", "parameters", (long long)t->params,
           (long long)s->params, (double)t->params / (double)s->params);
    printf("%-22s %12lld %12lld %7.1fx\n", "bytes on disk", (long long)t->file_bytes,
           (long long)s->file_bytes, (double)t->file_bytes / (double)s->file_bytes);
    printf("%-22s %12.2f %12.2f %7.1fx\n", "M mult-adds / image", t->macs / 1e6, s->macs / 1e6,
           (double)t->macs / (double)s->macs);
    printf("%-22s %12.1f %12.1f %7.1fx\n", "latency batch 1 (us)", t->latency_bs1_us,
           s->latency_bs1_us, t->latency_bs1_us / s->latency_bs1_us);
    printf("%-22s %12.0f %12.0f %7.1fx\n", "images/s (batch 128)", t->images_per_sec,
           s->images_per_sec, s->images_per_sec / t->images_per_sec);
    printf("%-22s %12.4f %12.4f\n", "accuracy", t->accuracy, s->accuracy);
    printf("%-22s %25.4f\n", "top-1 agreement", rep.agreement);

    distill_teacher_free(teacher);
    distill_model_free(teacher_model);
    distill_model_free(student);
    distill_model_free(baseline);
    distill_dataset_free(train_set);
    distill_dataset_free(test_set);
    return 0;
}

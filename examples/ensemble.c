/*
 * ensemble.c - distilling one student from several teachers.
 *
 * distill_teacher_ensemble() combines teachers into one whose logits are
 * the weighted mean of theirs; to the trainer it is a teacher like any
 * other.  Here two teachers of different architectures and seeds - a
 * ResNet-20 and the zoo's plain CNN - are trained on 5,000 images, combined
 * with equal weights, and a ResNet-8 is distilled from the pair.
 *
 * The ensemble's own accuracy is measured with distill_teacher_forward()
 * over a loader, which is also how a host runs any teacher by hand.
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

static distill_model *train(const char *zoo_name, uint64_t seed, distill_teacher *teacher,
                            const distill_dataset *data)
{
    distill_zoo_options zo;
    CHECK(distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION));
    zo.seed = seed;
    distill_model *m;
    CHECK(distill_zoo_create(&m, zoo_name, &zo));
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.epochs = 2;
    o.batch_size = 64;
    o.lr = 0.05;
    o.seed = seed;
    o.norm_count = 1;
    o.mean[0] = MEAN;
    o.std[0] = STD;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, teacher, &o)); /* with a teacher: kd T=4 alpha=0.9 */
    CHECK(distill_trainer_fit(tr, data, NULL));
    distill_trainer_free(tr);
    return m;
}

static double model_accuracy(distill_model *m, const distill_dataset *test)
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

/* Top-1 accuracy of any teacher, batch by batch. */
static double teacher_accuracy(distill_teacher *t, const distill_dataset *test)
{
    enum { B = 250 };
    distill_loader_options lo;
    CHECK(distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION));
    lo.batch_size = B;
    lo.shuffle = 0;
    lo.norm_count = 1;
    lo.mean = &MEAN;
    lo.std = &STD;
    distill_loader *ld;
    CHECK(distill_loader_create(&ld, test, &lo));
    int classes = distill_teacher_classes(t);
    int64_t xd[4] = {B, 1, 28, 28}, zd[2] = {B, classes};
    distill_tensor *x, *z;
    CHECK(distill_tensor_create(&x, 4, xd));
    CHECK(distill_tensor_create(&z, 2, zd));
    int32_t y[B];
    int n;
    int64_t right = 0, total = 0;
    for (;;) {
        CHECK(distill_loader_next(ld, x, y, &n));
        if (n == 0) /* end of the epoch */
            break;
        zd[0] = n;
        CHECK(distill_tensor_reshape(z, 2, zd));
        CHECK(distill_teacher_forward(t, x, z));
        const float *p = distill_tensor_data_const(z);
        for (int i = 0; i < n; i++) {
            int best = 0;
            for (int k = 1; k < classes; k++)
                if (p[i * classes + k] > p[i * classes + best])
                    best = k;
            right += best == y[i];
        }
        total += n;
    }
    distill_tensor_free(x);
    distill_tensor_free(z);
    distill_loader_free(ld);
    return (double)right / (double)total;
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

    printf("training teacher A (resnet20, seed 1) and teacher B (cnn, seed 2)...\n");
    distill_model *model_a = train("resnet20", 1, NULL, train_set);
    distill_model *model_b = train("cnn", 2, NULL, train_set);

    distill_teacher *members[2], *ensemble;
    CHECK(distill_teacher_from_model(&members[0], model_a));
    CHECK(distill_teacher_from_model(&members[1], model_b));
    const float weights[2] = {0.5f, 0.5f};
    CHECK(distill_teacher_ensemble(&ensemble, 2, members, weights)); /* borrows members */

    printf("distilling resnet8 from the ensemble (kd T=4 alpha=0.9)...\n");
    distill_model *student = train("resnet8", 3, ensemble, train_set);

    printf("test accuracy:\n");
    printf("  teacher A  resnet20  %.4f\n", model_accuracy(model_a, test_set));
    printf("  teacher B  cnn       %.4f\n", model_accuracy(model_b, test_set));
    printf("  ensemble   A + B     %.4f\n", teacher_accuracy(ensemble, test_set));
    printf("  student    resnet8   %.4f\n", model_accuracy(student, test_set));

    distill_teacher_free(ensemble); /* before the members it borrows */
    distill_teacher_free(members[0]);
    distill_teacher_free(members[1]);
    distill_model_free(model_a);
    distill_model_free(model_b);
    distill_model_free(student);
    distill_dataset_free(train_set);
    distill_dataset_free(test_set);
    return 0;
}

/*
 * test_learning.c - the trainer really learns: supervised, then distilled.
 *
 * 1. ResNet-8 trained with cross-entropy on the first 6,000 Fashion-MNIST
 *    training images for 2 epochs (92 steps) with the e2e recipe (batch
 *    128, SGD lr 0.1 with cosine decay per step, momentum 0.9 Nesterov,
 *    weight decay 5e-4, mean 0.2860 / std 0.3530, random 28x28 crop of the
 *    2-pixel padded image and horizontal flips), evaluated on the first
 *    2,000 test images.
 * 2. A fresh ResNet-8 distilled from it (KD, T = 4, alpha = 0.9) for one
 *    epoch (46 steps) on the same images.
 *
 * The bounds come from the PyTorch peer (peers/torch_kd.py's models,
 * augmentation and optimizer) run on exactly this budget: 0.7325, 0.7245
 * and 0.7310 for step 1 (seeds 0-2), and 0.6135, 0.6100 and 0.5755 for a
 * student distilled for one epoch from its seed-0 model (seeds 1-3).  Such
 * short runs are far from converged (the 80% once hoped for here is not
 * reached by the peer either), so the test asks for 70% after step 1 and,
 * after step 2, for 40% (four times chance), a KD loss that fell by half and
 * 40% agreement with the teacher.  The numbers reached are printed.
 * Skipped when Fashion-MNIST is not installed ($FASHION_MNIST_DIR, else
 * Debian's dataset-fashion-mnist).
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "distill.h"

#define TRAIN_N 6000
#define TEST_N 2000

#define CHECK(call)                                                                   \
    do {                                                                              \
        int rc_ = (call);                                                             \
        if (rc_ != DISTILL_OK)                                                        \
            fail_msg("%s -> %d: %s", #call, rc_, distill_last_error());               \
    } while (0)

typedef struct losses {
    int n;
    double first, last;
    int64_t last_step;
} losses;

static int on_progress(const distill_progress *p, void *payload)
{
    losses *l = payload;
    if (p->end_of_epoch || !isfinite(p->loss))
        return 0;
    if (l->n++ == 0)
        l->first = p->loss;
    l->last = p->loss;
    l->last_step = p->step;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of the whole process, all threads (the machine may be shared). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static distill_trainer_options e2e_recipe(int epochs, losses *log)
{
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.epochs = epochs;
    o.batch_size = 128;
    o.lr = 0.1;
    o.momentum = 0.9;
    o.nesterov = 1;
    o.weight_decay = 5e-4;
    o.schedule = DISTILL_SCHEDULE_COSINE;
    o.seed = 0;
    o.crop_padding = 2;
    o.hflip = 1;
    o.norm_count = 1;
    o.mean[0] = 0.2860f;
    o.std[0] = 0.3530f;
    o.progress = on_progress;
    o.progress_payload = log;
    o.progress_every = 5;
    return o;
}

static double accuracy(distill_model *m, const distill_dataset *test, distill_teacher *agree_with,
                       double *agreement)
{
    distill_eval_options eo;
    CHECK(distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION));
    eo.norm_count = 1;
    eo.mean[0] = 0.2860f;
    eo.std[0] = 0.3530f;
    eo.agreement = agree_with;
    distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(m, test, &eo, &r));
    assert_int_equal(r.count, TEST_N);
    if (agreement)
        *agreement = r.agreement;
    return r.top1;
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

static void test_learn_then_distill(void **state)
{
    (void)state;
    distill_dataset *all_train, *all_test, *train, *test;
    int rc = distill_dataset_fashion_mnist(&all_train, NULL, 1);
    if (rc != DISTILL_OK) {
        print_message("Fashion-MNIST not found (%s): skipped\n", distill_last_error());
        skip();
    }
    CHECK(distill_dataset_fashion_mnist(&all_test, NULL, 0));
    CHECK(distill_dataset_subset(&train, all_train, 0, TRAIN_N));
    CHECK(distill_dataset_subset(&test, all_test, 0, TEST_N));
    distill_dataset_free(all_train);
    distill_dataset_free(all_test);

    /* 1. supervised */
    double t0 = now_s(), c0 = cpu_s();
    distill_model *teacher_model = resnet8(0);
    losses ce_log = {0, 0, 0, 0};
    distill_trainer_options o = e2e_recipe(2, &ce_log);
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, teacher_model, NULL, &o));
    CHECK(distill_trainer_fit(tr, train, NULL));
    assert_int_equal(distill_trainer_steps_done(tr), 2 * (TRAIN_N / 128));
    distill_trainer_free(tr);
    double ce_acc = accuracy(teacher_model, test, NULL, NULL);
    double t1 = now_s(), c1 = cpu_s();
    print_message("resnet8, CE, %d images x 2 epochs: test top-1 %.4f on %d images "
                  "(loss %.3f -> %.3f), %.1f s (%.1f s of CPU)\n",
                  TRAIN_N, ce_acc, TEST_N, ce_log.first, ce_log.last, t1 - t0, c1 - c0);
    assert_true(ce_log.last < ce_log.first);
    assert_true(ce_acc >= 0.70);

    /* 2. distilled from it */
    distill_teacher *teacher;
    CHECK(distill_teacher_from_model(&teacher, teacher_model));
    distill_model *student = resnet8(1);
    losses kd_log = {0, 0, 0, 0};
    o = e2e_recipe(1, &kd_log);
    CHECK(distill_trainer_create(&tr, student, teacher, &o));
    distill_loss *kd;
    CHECK(distill_loss_kd(&kd, 4.0f, 0.9f));
    CHECK(distill_trainer_add_loss(tr, kd, 1.0f));
    CHECK(distill_trainer_fit(tr, train, NULL));
    assert_int_equal(distill_trainer_steps_done(tr), TRAIN_N / 128);
    distill_trainer_free(tr);
    double agreement;
    double kd_acc = accuracy(student, test, teacher, &agreement);
    double t2 = now_s(), c2 = cpu_s();
    print_message("resnet8 distilled (kd T=4 alpha=0.9), 1 epoch: test top-1 %.4f, agreement "
                  "with the teacher %.4f (loss %.3f at step 5 -> %.3f at step %lld), %.1f s "
                  "(%.1f s of CPU)\n",
                  kd_acc, agreement, kd_log.first, kd_log.last, (long long)kd_log.last_step,
                  t2 - t1, c2 - c1);
    assert_true(kd_log.n >= 2);
    assert_true(kd_log.last < 0.5 * kd_log.first);
    assert_true(kd_acc >= 0.40);
    assert_true(agreement >= 0.40);

    distill_model_free(student);
    distill_teacher_free(teacher);
    distill_model_free(teacher_model);
    distill_dataset_free(train);
    distill_dataset_free(test);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learn_then_distill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

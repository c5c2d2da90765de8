/*
 * first.c - the whole life of a model in one page.
 *
 * Builds a small CNN with the builder API, trains it for three epochs on
 * 5,000 Fashion-MNIST images with the trainer (cross-entropy), evaluates it
 * on 2,000 test images, saves it to a file, loads the file back and predicts
 * the class of one test image with the loaded model.
 *
 *     ./example_first [model-file]        (default: first.dstl)
 *
 * The data comes from Debian's dataset-fashion-mnist package, or from the
 * folder named by $FASHION_MNIST_DIR.
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

/* Fashion-MNIST's pixel mean and standard deviation. */
#define MEAN 0.2860f
#define STD 0.3530f

/* conv 3x3 (pad 1, no bias) -> BatchNorm -> ReLU -> 2x2 max pool, named
 * <p>.conv, <p>.bn, <p>.relu, <p>.pool; the last name goes to out. */
static void conv_block(distill_model *m, const char *p, const char *in, int channels,
                       char out[32])
{
    char conv[32], bn[32], relu[32];
    distill_conv2d_options c;
    CHECK(distill_conv2d_options_init(&c, DISTILL_CONV2D_OPTIONS_VERSION));
    c.kernel_h = c.kernel_w = 3;
    c.pad_h = c.pad_w = 1;
    c.bias = 0;
    snprintf(conv, sizeof conv, "%s.conv", p);
    snprintf(bn, sizeof bn, "%s.bn", p);
    snprintf(relu, sizeof relu, "%s.relu", p);
    CHECK(distill_model_add_conv2d(m, conv, in, channels, &c));
    CHECK(distill_model_add_batchnorm(m, bn, conv, 1e-5f, 0.1f));
    CHECK(distill_model_add_relu(m, relu, bn));
    snprintf(out, 32, "%s.pool", p);
    CHECK(distill_model_add_maxpool(m, out, relu, 2, 2, 0));
}

/* Called every 50 steps and after each epoch; returning nonzero would stop training. */
static int on_progress(const distill_progress *p, void *payload)
{
    (void)payload;
    if (p->end_of_epoch)
        printf("  epoch %d/%d: loss %.4f, lr %.4f, %.0f images/s, test accuracy %.4f\n", p->epoch,
               p->epochs, p->loss, p->lr, p->images_per_sec, p->val_accuracy);
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "first.dstl";
    printf("libdistill %s, %d threads\n", distill_version(), distill_get_num_threads());

    /* Data: 5,000 training and 2,000 test images (views share the loaded store). */
    distill_dataset *all_train, *all_test, *train, *test;
    CHECK(distill_dataset_fashion_mnist(&all_train, NULL, 1));
    CHECK(distill_dataset_fashion_mnist(&all_test, NULL, 0));
    CHECK(distill_dataset_subset(&train, all_train, 0, 5000));
    CHECK(distill_dataset_subset(&test, all_test, 0, 2000));
    distill_dataset_free(all_train);
    distill_dataset_free(all_test);

    /* Model: input (1, 28, 28) -> two conv blocks -> flatten -> linear 10. */
    distill_model *model;
    int64_t in_dims[3] = {1, 28, 28};
    CHECK(distill_model_create(&model, "input", 3, in_dims));
    char b1[32], b2[32];
    conv_block(model, "block1", "input", 16, b1); /* (16, 14, 14) */
    conv_block(model, "block2", b1, 32, b2);      /* (32, 7, 7) */
    CHECK(distill_model_add_flatten(model, "flatten", b2));
    CHECK(distill_model_add_linear(model, "fc", "flatten", 10, 1));
    CHECK(distill_model_init_weights(model, DISTILL_INIT_DEFAULT, 42));
    CHECK(distill_model_print_summary(model, stdout));

    /* Train: SGD with Nesterov momentum, cosine schedule, three epochs, a report per epoch. */
    distill_trainer_options o;
    CHECK(distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION));
    o.epochs = 3;
    o.batch_size = 64;
    o.lr = 0.05;
    o.seed = 1;
    o.norm_count = 1;
    o.mean[0] = MEAN;
    o.std[0] = STD;
    o.progress = on_progress;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, model, NULL, &o)); /* no teacher: cross-entropy */
    printf("training on %lld images for %d epochs...\n", (long long)distill_dataset_size(train),
           o.epochs);
    CHECK(distill_trainer_fit(tr, train, test)); /* test: the accuracy after each epoch */
    distill_trainer_free(tr);

    /* Evaluate on the test images, normalized as in training. */
    distill_eval_options eo;
    CHECK(distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION));
    eo.norm_count = 1;
    eo.mean[0] = MEAN;
    eo.std[0] = STD;
    distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(model, test, &eo, &r));
    printf("test: %lld images, top-1 %.4f, top-5 %.4f, loss %.4f\n", (long long)r.count, r.top1,
           r.top5, r.loss);

    /* Save, load, and check that the loaded model scores the same. */
    CHECK(distill_model_save(model, path));
    distill_model *loaded;
    CHECK(distill_model_load(&loaded, path));
    distill_eval_result r2 = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(loaded, test, &eo, &r2));
    printf("saved to %s and loaded back: top-1 %.4f\n", path, r2.top1);

    /* Predict one image: take test image 0, normalize it, run a forward pass. */
    float pixels[28 * 28];
    int32_t label;
    CHECK(distill_dataset_get(test, 0, pixels, 28 * 28, &label));
    for (int i = 0; i < 28 * 28; i++)
        pixels[i] = (pixels[i] - MEAN) / STD;
    distill_tensor *image, *logits;
    int64_t image_dims[4] = {1, 1, 28, 28}, logit_dims[2] = {1, 10};
    CHECK(distill_tensor_create(&image, 4, image_dims));
    CHECK(distill_tensor_create(&logits, 2, logit_dims));
    CHECK(distill_tensor_copy_from(image, pixels, 28 * 28));
    CHECK(distill_model_forward(loaded, image, DISTILL_MODE_INFERENCE, logits));
    const float *z = distill_tensor_data_const(logits);
    int best = 0;
    for (int k = 1; k < 10; k++)
        if (z[k] > z[best])
            best = k;
    printf("test image 0: predicted \"%s\" (logit %.2f), true class \"%s\"\n",
           distill_dataset_class_name(test, best), z[best],
           distill_dataset_class_name(test, label));

    distill_tensor_free(image);
    distill_tensor_free(logits);
    distill_model_free(loaded);
    distill_model_free(model);
    distill_dataset_free(train);
    distill_dataset_free(test);
    return r2.top1 == r.top1 ? 0 : 1;
}

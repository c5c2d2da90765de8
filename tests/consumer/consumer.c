/*
 * consumer.c - a downstream C program built against the installed
 * libdistill, through pkg-config and through CMake's find_package.
 *
 * Builds a tiny CNN with the public API, runs it in inference mode on a
 * (2, 1, 8, 8) batch and prints the logits.  Exits 1 on any error.
 */
#include <distill.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#define CHECK(call)                                                                  \
    do {                                                                             \
        int rc_ = (call);                                                            \
        if (rc_ != DISTILL_OK) {                                                     \
            fprintf(stderr, "%s failed: %s (%d): %s\n", #call, distill_strerror(rc_), \
                    rc_, distill_last_error());                                      \
            goto fail;                                                               \
        }                                                                            \
    } while (0)

int main(void)
{
    distill_model *m = NULL;
    distill_tensor *x = NULL, *y = NULL;
    int status = 1;

    printf("libdistill %s (headers %s)\n", distill_version(), DISTILL_VERSION_STRING);
    if (strcmp(distill_version(), DISTILL_VERSION_STRING) != 0 ||
        distill_version_number() != DISTILL_VERSION_NUMBER) {
        fprintf(stderr, "library version differs from the headers'\n");
        return 1;
    }

    const int64_t in_dims[3] = {1, 8, 8}; /* (C, H, W) */
    distill_conv2d_options conv;
    CHECK(distill_conv2d_options_init(&conv, DISTILL_CONV2D_OPTIONS_VERSION));
    conv.kernel_h = conv.kernel_w = 3;
    conv.pad_h = conv.pad_w = 1;

    CHECK(distill_model_create(&m, "input", 3, in_dims));
    CHECK(distill_model_add_conv2d(m, "conv1", "input", 4, &conv));
    CHECK(distill_model_add_relu(m, "relu1", "conv1"));
    CHECK(distill_model_add_global_avgpool(m, "pool", "relu1"));
    CHECK(distill_model_add_flatten(m, "flat", "pool"));
    CHECK(distill_model_add_linear(m, "fc", "flat", 3, 1));
    CHECK(distill_model_init_weights(m, DISTILL_INIT_DEFAULT, 42));

    const int64_t x_dims[4] = {2, 1, 8, 8}; /* (N, C, H, W) */
    const int64_t y_dims[2] = {2, 3};       /* (N, classes) */
    CHECK(distill_tensor_create(&x, 4, x_dims));
    CHECK(distill_tensor_create(&y, 2, y_dims));
    float *px = distill_tensor_data(x);
    for (int64_t i = 0; i < distill_tensor_numel(x); i++)
        px[i] = (float)((i * 37) % 64) / 64.0f;

    CHECK(distill_model_forward(m, x, DISTILL_MODE_INFERENCE, y));

    const float *py = distill_tensor_data_const(y);
    for (int n = 0; n < 2; n++) {
        printf("logits[%d] =", n);
        for (int k = 0; k < 3; k++) {
            if (!isfinite(py[n * 3 + k])) {
                fprintf(stderr, "logit %d,%d is not finite\n", n, k);
                goto fail;
            }
            printf(" %.6f", py[n * 3 + k]);
        }
        printf("\n");
    }
    status = 0;

fail:
    distill_tensor_free(y);
    distill_tensor_free(x);
    distill_model_free(m);
    return status;
}

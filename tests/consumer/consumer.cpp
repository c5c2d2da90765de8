// consumer.cpp - the C++ downstream program: the same tiny model as
// consumer.c, through the C API from C++ with RAII handles.
#include <distill.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

namespace {

struct model_deleter {
    void operator()(distill_model *m) const { distill_model_free(m); }
};
struct tensor_deleter {
    void operator()(distill_tensor *t) const { distill_tensor_free(t); }
};
typedef std::unique_ptr<distill_model, model_deleter> model_ptr;
typedef std::unique_ptr<distill_tensor, tensor_deleter> tensor_ptr;

void check(int rc, const char *what)
{
    if (rc != DISTILL_OK)
        throw std::runtime_error(std::string(what) + ": " + distill_strerror(rc) + ": " +
                                 distill_last_error());
}

tensor_ptr make_tensor(int rank, const int64_t *dims)
{
    distill_tensor *t = nullptr;
    check(distill_tensor_create(&t, rank, dims), "distill_tensor_create");
    return tensor_ptr(t);
}

} // namespace

int main()
{
    try {
        std::printf("libdistill %s (headers %s)\n", distill_version(), DISTILL_VERSION_STRING);
        if (std::strcmp(distill_version(), DISTILL_VERSION_STRING) != 0)
            throw std::runtime_error("library version differs from the headers'");

        const int64_t in_dims[3] = {1, 8, 8};
        distill_model *raw = nullptr;
        check(distill_model_create(&raw, "input", 3, in_dims), "distill_model_create");
        model_ptr m(raw);

        distill_conv2d_options conv = DISTILL_CONV2D_OPTIONS_INIT;
        conv.kernel_h = conv.kernel_w = 3;
        conv.pad_h = conv.pad_w = 1;
        check(distill_model_add_conv2d(m.get(), "conv1", "input", 4, &conv), "add_conv2d");
        check(distill_model_add_relu(m.get(), "relu1", "conv1"), "add_relu");
        check(distill_model_add_global_avgpool(m.get(), "pool", "relu1"), "add_global_avgpool");
        check(distill_model_add_flatten(m.get(), "flat", "pool"), "add_flatten");
        check(distill_model_add_linear(m.get(), "fc", "flat", 3, 1), "add_linear");
        check(distill_model_init_weights(m.get(), DISTILL_INIT_DEFAULT, 42), "init_weights");

        const int64_t x_dims[4] = {2, 1, 8, 8};
        const int64_t y_dims[2] = {2, 3};
        tensor_ptr x = make_tensor(4, x_dims);
        tensor_ptr y = make_tensor(2, y_dims);
        float *px = distill_tensor_data(x.get());
        for (int64_t i = 0; i < distill_tensor_numel(x.get()); i++)
            px[i] = static_cast<float>((i * 37) % 64) / 64.0f;

        check(distill_model_forward(m.get(), x.get(), DISTILL_MODE_INFERENCE, y.get()),
              "distill_model_forward");

        const float *py = distill_tensor_data_const(y.get());
        for (int n = 0; n < 2; n++) {
            std::printf("logits[%d] =", n);
            for (int k = 0; k < 3; k++) {
                if (!std::isfinite(py[n * 3 + k]))
                    throw std::runtime_error("a logit is not finite");
                std::printf(" %.6f", py[n * 3 + k]);
            }
            std::printf("\n");
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}

/* tensor_internal.h - the layout of distill_tensor, for the library's own files. */
#ifndef DISTILL_TENSOR_INTERNAL_H
#define DISTILL_TENSOR_INTERNAL_H

#include "distill/tensor.h"

struct distill_tensor {
    int rank;
    int64_t dims[DISTILL_MAX_RANK];
    size_t numel;
    size_t cap;   /* allocated elements */
    float *data;  /* row-major */
};

#endif

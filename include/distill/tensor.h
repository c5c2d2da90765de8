/*
 * distill/tensor.h - N-dimensional float32 arrays.
 *
 * A distill_tensor is a dense, row-major (C-order) array of float with rank
 * 1..DISTILL_MAX_RANK.  It is the unit that crosses the API: images go into a
 * model as a (N, C, H, W) tensor, logits come out as (N, classes).
 *
 *     int64_t dims[4] = {1, 1, 28, 28};
 *     distill_tensor *x;
 *     if (distill_tensor_create(&x, 4, dims) != DISTILL_OK)
 *         fprintf(stderr, "%s\n", distill_last_error());
 *     distill_tensor_copy_from(x, pixels, 28 * 28);
 *     ...
 *     distill_tensor_free(x);
 */
#ifndef DISTILL_TENSOR_H
#define DISTILL_TENSOR_H

#include "distill/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DISTILL_MAX_RANK 8

typedef struct distill_tensor distill_tensor;

/**
 * Create a zero-filled tensor of the given rank (1..8) and dims (each >= 1).
 * On success *out belongs to the caller (free with distill_tensor_free).
 * Returns DISTILL_EINVAL for a bad rank or dim, DISTILL_ENOMEM.
 */
DISTILL_API int distill_tensor_create(distill_tensor **out, int rank, const int64_t *dims);

/** Create a tensor holding a copy of src. *out belongs to the caller. */
DISTILL_API int distill_tensor_clone(distill_tensor **out, const distill_tensor *src);

/** Free a tensor.  Accepts NULL. */
DISTILL_API void distill_tensor_free(distill_tensor *t);

/** Rank (number of dims); 0 for NULL. */
DISTILL_API int distill_tensor_rank(const distill_tensor *t);

/** Size of dim `axis`; negative axes count from the end.  0 if out of range. */
DISTILL_API int64_t distill_tensor_dim(const distill_tensor *t, int axis);

/** Number of elements (product of dims); 0 for NULL. */
DISTILL_API int64_t distill_tensor_numel(const distill_tensor *t);

/**
 * Borrowed pointer to the elements, row-major; valid until the tensor is
 * freed or reshaped to a larger size.
 */
DISTILL_API float *distill_tensor_data(distill_tensor *t);
DISTILL_API const float *distill_tensor_data_const(const distill_tensor *t);

/** Copy `count` floats from host memory; count must equal numel (DISTILL_ESHAPE). */
DISTILL_API int distill_tensor_copy_from(distill_tensor *t, const float *src, size_t count);

/** Copy the elements to host memory of `count` floats; count must equal numel. */
DISTILL_API int distill_tensor_copy_to(const distill_tensor *t, float *dst, size_t count);

/** Set every element to value. */
DISTILL_API int distill_tensor_fill(distill_tensor *t, float value);

/**
 * Change the dims.  The element count may change; growing reallocates and
 * zero-fills the new part (DISTILL_ENOMEM leaves the tensor as it was).
 */
DISTILL_API int distill_tensor_reshape(distill_tensor *t, int rank, const int64_t *dims);

#ifdef __cplusplus
}
#endif

#endif /* DISTILL_TENSOR_H */

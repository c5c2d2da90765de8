/*
 * tensor.c - dense row-major float32 arrays that cross the API.
 */
#include <string.h>

#include "distill/tensor.h"
#include "tensor_internal.h"
#include "util/util.h"

static int check_dims(int rank, const int64_t *dims, size_t *numel)
{
    if (rank < 1 || rank > DISTILL_MAX_RANK)
        return seterr(DISTILL_EINVAL, "tensor rank %d is not in 1..%d", rank, DISTILL_MAX_RANK);
    if (!dims)
        return seterr(DISTILL_EINVAL, "tensor dims is NULL");
    size_t n = 1;
    for (int d = 0; d < rank; d++) {
        if (dims[d] < 1)
            return seterr(DISTILL_EINVAL, "tensor dim %d is %lld; dims must be >= 1", d,
                          (long long)dims[d]);
        if (size_mul(n, (size_t)dims[d], &n) || n > ((size_t)1 << 40))
            return seterr(DISTILL_EINVAL, "tensor of %d dims is too large", rank);
    }
    *numel = n;
    return DISTILL_OK;
}

int distill_tensor_create(distill_tensor **out, int rank, const int64_t *dims)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_tensor_create: out is NULL");
    *out = NULL;
    size_t n;
    int rc = check_dims(rank, dims, &n);
    if (rc)
        return rc;
    distill_tensor *t = xcalloc(1, sizeof *t);
    if (!t)
        return DISTILL_ENOMEM;
    t->data = xcalloc(n, sizeof(float));
    if (!t->data) {
        xfree(t);
        return DISTILL_ENOMEM;
    }
    t->rank = rank;
    memcpy(t->dims, dims, (size_t)rank * sizeof *dims);
    t->numel = n;
    t->cap = n;
    *out = t;
    return DISTILL_OK;
}

int distill_tensor_clone(distill_tensor **out, const distill_tensor *src)
{
    if (!src)
        return seterr(DISTILL_EINVAL, "distill_tensor_clone: src is NULL");
    int rc = distill_tensor_create(out, src->rank, src->dims);
    if (rc == DISTILL_OK)
        memcpy((*out)->data, src->data, src->numel * sizeof(float));
    return rc;
}

void distill_tensor_free(distill_tensor *t)
{
    if (!t)
        return;
    xfree(t->data);
    xfree(t);
}

int distill_tensor_rank(const distill_tensor *t)
{
    return t ? t->rank : 0;
}

int64_t distill_tensor_dim(const distill_tensor *t, int axis)
{
    if (!t)
        return 0;
    if (axis < 0)
        axis += t->rank;
    if (axis < 0 || axis >= t->rank)
        return 0;
    return t->dims[axis];
}

int64_t distill_tensor_numel(const distill_tensor *t)
{
    return t ? (int64_t)t->numel : 0;
}

float *distill_tensor_data(distill_tensor *t)
{
    return t ? t->data : NULL;
}

const float *distill_tensor_data_const(const distill_tensor *t)
{
    return t ? t->data : NULL;
}

int distill_tensor_copy_from(distill_tensor *t, const float *src, size_t count)
{
    if (!t || !src)
        return seterr(DISTILL_EINVAL, "distill_tensor_copy_from: NULL argument");
    if (count != t->numel)
        return seterr(DISTILL_ESHAPE, "tensor_copy_from: %zu values for a tensor of %zu", count,
                      t->numel);
    memcpy(t->data, src, count * sizeof(float));
    return DISTILL_OK;
}

int distill_tensor_copy_to(const distill_tensor *t, float *dst, size_t count)
{
    if (!t || !dst)
        return seterr(DISTILL_EINVAL, "distill_tensor_copy_to: NULL argument");
    if (count != t->numel)
        return seterr(DISTILL_ESHAPE, "tensor_copy_to: room for %zu values, the tensor has %zu",
                      count, t->numel);
    memcpy(dst, t->data, count * sizeof(float));
    return DISTILL_OK;
}

int distill_tensor_fill(distill_tensor *t, float value)
{
    if (!t)
        return seterr(DISTILL_EINVAL, "distill_tensor_fill: tensor is NULL");
    for (size_t i = 0; i < t->numel; i++)
        t->data[i] = value;
    return DISTILL_OK;
}

int distill_tensor_reshape(distill_tensor *t, int rank, const int64_t *dims)
{
    if (!t)
        return seterr(DISTILL_EINVAL, "distill_tensor_reshape: tensor is NULL");
    size_t n;
    int rc = check_dims(rank, dims, &n);
    if (rc)
        return rc;
    if (n > t->cap) {
        float *d = xrealloc(t->data, n * sizeof(float));
        if (!d)
            return DISTILL_ENOMEM;
        memset(d + t->numel, 0, (n - t->numel) * sizeof(float));
        t->data = d;
        t->cap = n;
    } else if (n > t->numel) {
        memset(t->data + t->numel, 0, (n - t->numel) * sizeof(float));
    }
    t->rank = rank;
    memcpy(t->dims, dims, (size_t)rank * sizeof *dims);
    t->numel = n;
    return DISTILL_OK;
}

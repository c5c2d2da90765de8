/*
 * onnx_internal.h - what the ONNX importer and exporter share: the
 * protobuf-c code generated at build time from the system's onnx.proto
 * (cmake/DistillOnnx.cmake), and an allocator that routes protobuf-c's
 * allocations through the library's own (xmalloc), so that the host's
 * allocator and the allocation-failure tests see them.
 */
#ifndef DISTILL_ONNX_INTERNAL_H
#define DISTILL_ONNX_INTERNAL_H

#ifdef DISTILL_HAVE_ONNX

#include <protobuf-c/protobuf-c.h>

#include "onnx.pb-c.h"

/* ONNX TensorProto.DataType values used here. */
enum {
    ONNX_FLOAT = 1,
    ONNX_INT32 = 6,
    ONNX_INT64 = 7,
    ONNX_DOUBLE = 11
};

/* Largest ONNX file read (the same bound as model files). */
#define ONNX_MAX_FILE ((uint64_t)2 << 30)

extern ProtobufCAllocator onnx_allocator;

struct distill_model;
/* Serialize a model as ONNX into a buffer the caller frees with xfree. */
int onnx_export_buffer(const struct distill_model *m, void **data, size_t *size);

#endif /* DISTILL_HAVE_ONNX */
#endif /* DISTILL_ONNX_INTERNAL_H */

/*
 * distill/onnx.h - models to and from ONNX files.
 *
 * Teachers trained in PyTorch or TensorFlow arrive as ONNX; students leave
 * as ONNX for other runtimes.
 *
 *     distill_model *teacher;
 *     if (distill_model_import_onnx(&teacher, "resnet.onnx") != DISTILL_OK)
 *         fprintf(stderr, "%s\n", distill_last_error());
 *     ...
 *     distill_model_export_onnx(student, "student.onnx");
 *
 * Import reads one float32 NCHW (or (N, F)) graph input whose batch dim may
 * be symbolic, opsets 9 to 17 of the default domain (and opsets 1 to 20
 * where each operator is defined as at opset 9 or 17), and maps the operators
 * onto the model's nodes: Conv, BatchNormalization, Relu, Clip (0..6 as
 * relu6, 0.. as relu), LeakyRelu, Gelu and its Erf pattern, MaxPool,
 * AveragePool, GlobalAveragePool, Gemm, MatMul (+ Add), Add, Sub, Mul and
 * Div by a constant, Concat, Flatten, Reshape and Squeeze to (N, F) with
 * PyTorch's Shape-Gather-Unsqueeze-Concat idiom, Pad before Conv and
 * AveragePool, Softmax, Dropout, Identity.  Each ONNX node's name becomes
 * the node's name in the model (its first output's name when it has none),
 * so taps name them.  Anything else is refused: DISTILL_EUNSUPPORTED with a
 * message naming the node and the reason; a file that is not a valid ONNX
 * protobuf, or is inconsistent, is DISTILL_EFORMAT, never a crash.
 *
 * Export writes opset 13 with the parameters as initializers and a symbolic
 * batch dim; importing the file gives the same model.
 *
 * The model's metadata (distill/model.h, "Metadata": normalization, class
 * names, provenance) travels as the ModelProto's metadata_props, one entry
 * per key with the same key and value; export writes them and import reads
 * them back.  Import skips properties whose key is not a metadata key (other
 * tools' own) and refuses, as DISTILL_EFORMAT, a known key whose value is
 * malformed or contradicts the graph (class names for another number of
 * logits, a mean per channel for another channel count) and a key given
 * twice.
 *
 * Both need a library built with ONNX support (distill_onnx_available());
 * otherwise they return DISTILL_EUNSUPPORTED.
 */
#ifndef DISTILL_ONNX_H
#define DISTILL_ONNX_H

#include <stddef.h>

#include "distill/common.h"
#include "distill/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/** 1 if this library was built with ONNX import and export, 0 otherwise. */
DISTILL_API int distill_onnx_available(void);

/**
 * Build a model from the ONNX file at `path`.  *out belongs to the caller
 * (distill_model_free); it is NULL on failure.
 * Errors: DISTILL_ENOTFOUND, DISTILL_EIO (no file, unreadable),
 * DISTILL_EFORMAT (not ONNX, truncated, inconsistent), DISTILL_EUNSUPPORTED
 * (an operator, attribute, data type or shape the model cannot express; the
 * message names the node), DISTILL_ENOMEM.
 */
DISTILL_API int distill_model_import_onnx(distill_model **out, const char *path);

/** As distill_model_import_onnx, from `size` bytes in memory. */
DISTILL_API int distill_model_import_onnx_buffer(distill_model **out, const void *data,
                                                 size_t size);

/**
 * Write `m` (architecture, parameters, BatchNorm statistics) to `path` as an
 * ONNX model, opset 13, written atomically like distill_model_save.
 * Errors: DISTILL_EUNSUPPORTED (a node ONNX opset 13 cannot express: GELU in
 * its tanh form), DISTILL_EIO, DISTILL_ENOMEM.
 */
DISTILL_API int distill_model_export_onnx(const distill_model *m, const char *path);

#ifdef __cplusplus
}
#endif

#endif /* DISTILL_ONNX_H */

/*
 * distill.h - libdistill, knowledge distillation on the CPU, in C.
 *
 * Include this header alone; it pulls in every part:
 *   distill/common.h  version, status codes, errors, threads
 *   distill/version.h the version of the headers
 *   distill/tensor.h  N-d float32 arrays
 *   distill/model.h   networks: build, forward, backward, save, load, zoo
 *   distill/data.h    datasets (IDX, PNG folders, host arrays) and the batch loader
 *   distill/optim.h   optimizers (SGD, Adam, AdamW) and learning-rate schedules
 *   distill/loss.h    distillation objectives, built-in and host-defined
 *   distill/trainer.h teachers, the training loop, evaluation, checkpoints, report
 *   distill/onnx.h    models to and from ONNX files
 *
 * Link with `pkg-config --cflags --libs distill` or CMake's
 * `find_package(distill)` and `target_link_libraries(app distill::distill)`.
 */
#ifndef DISTILL_H
#define DISTILL_H

#include "distill/common.h"
#include "distill/version.h"
#include "distill/tensor.h"
#include "distill/model.h"
#include "distill/data.h"
#include "distill/optim.h"
#include "distill/loss.h"
#include "distill/trainer.h"
#include "distill/onnx.h"

#endif /* DISTILL_H */

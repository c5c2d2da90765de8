/*
 * test_infer_torchvision.c - test_infer.c for torchvision's models
 * (resnet18/34/50, mobilenet_v2 at 3x32x32), labelled slow: the double
 * reference of resnet50 alone takes seconds.
 */
#pragma GCC diagnostic ignored "-Wunused-function"
#define INFER_TORCHVISION 1
#include "test_infer.c"

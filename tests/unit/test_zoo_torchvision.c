/*
 * test_zoo_torchvision.c - torchvision's models in the zoo (resnet18/34/50,
 * mobilenet_v2): parameter and multiply-add counts against torchvision's,
 * module names and shapes, a forward pass.  The tests are those of
 * test_zoo.c built with ZOO_TORCHVISION; a program of their own so that
 * CI's valgrind section, where they take a quarter of an hour, can leave
 * them out (.ci/run).
 */
/* the small models' tests are compiled but not run here */
#pragma GCC diagnostic ignored "-Wunused-function"
#define ZOO_TORCHVISION 1
#include "test_zoo.c"

/*
 * bnorm_avx2.c - the BatchNorm kernels compiled for AVX2 with FMA (the build
 * adds -mavx2 -mfma to this file only); bnorm.c calls them when the
 * processor has both.
 */
#if defined(DISTILL_BNORM_AVX2)
#define BN_NAME(f) f##_avx2
#include "bnorm_impl.h"
#else
typedef int bnorm_avx2_unused; /* ISO C wants a translation unit to declare something */
#endif

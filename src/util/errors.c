/*
 * errors.c - the public side of errors, versions and threads
 * (include/distill/common.h).
 */
#include <pthread.h>

#include <omp.h>

#include "distill/common.h"
#include "distill/version.h"
#include "util/util.h"

const char *distill_strerror(int status)
{
    switch (status) {
    case DISTILL_OK: return "success";
    case DISTILL_EINVAL: return "invalid argument";
    case DISTILL_ENOMEM: return "out of memory";
    case DISTILL_ESHAPE: return "tensor shapes do not match";
    case DISTILL_ENOTFOUND: return "not found";
    case DISTILL_EEXISTS: return "already exists";
    case DISTILL_EIO: return "input/output error";
    case DISTILL_EFORMAT: return "corrupt, truncated or unrecognized file";
    case DISTILL_EUNSUPPORTED: return "not supported by this build";
    case DISTILL_EBACKEND: return "compute backend error";
    case DISTILL_ESTATE: return "call made in the wrong state";
    case DISTILL_ENONFINITE: return "non-finite value";
    case DISTILL_ECANCELLED: return "cancelled";
    case DISTILL_EVERSION: return "unsupported version";
    default: return "unknown error";
    }
}

const char *distill_last_error(void)
{
    return util_last_error();
}

void distill_error_clear(void)
{
    util_clear_error();
}

const char *distill_version(void)
{
    return DISTILL_VERSION_STRING;
}

int distill_version_number(void)
{
    return DISTILL_VERSION_NUMBER;
}

/*
 * Threads.  OpenMP's thread count (nthreads-var) belongs to the calling
 * thread, which is what the API promises.  The process default is what
 * OpenMP reports before the library changes anything (OMP_NUM_THREADS, else
 * the number of cores); it is read once, on the first call of either
 * function, and never changes after that.
 */
static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static int default_threads = 1;

static void capture_default(void)
{
    int n = omp_get_max_threads();
    default_threads = n > 0 ? n : 1;
}

int distill_set_num_threads(int n)
{
    pthread_once(&default_once, capture_default);
    omp_set_num_threads(n > 0 ? n : default_threads);
    return DISTILL_OK;
}

int distill_get_num_threads(void)
{
    pthread_once(&default_once, capture_default);
    return omp_get_max_threads();
}

/*
 * errors.c - errors: the thread's last error as the library records it
 * (seterr, declared in util/util.h) and the public side of errors, versions
 * and threads (include/distill/common.h).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <omp.h>

#include "distill/common.h"
#include "distill/version.h"
#include "util/util.h"

/* ======================================================= recording errors */

/* This thread's last error; distill_last_error() below reads it. */
#define ERRBUF_SIZE 512
static _Thread_local char err_msg[ERRBUF_SIZE];
static _Thread_local int err_status;

/* Cut `buf` (NUL-terminated, truncated at `cap - 1` bytes) so that it does
 * not end inside a UTF-8 sequence, and mark the cut with "...". */
static void mark_truncated(char *buf, size_t cap)
{
    size_t n = cap - 1;
    const size_t ell = 3;
    if (n < ell)
        return;
    n -= ell;
    /* Back off continuation bytes (10xxxxxx) and the lead byte they follow. */
    size_t k = n;
    while (k > 0 && ((unsigned char)buf[k] & 0xC0) == 0x80)
        k--;
    /* If buf[n] continued a sequence, that sequence started at buf[k] and
     * did not fit: drop it whole. */
    n = k;
    memcpy(buf + n, "...", ell + 1);
}

int seterr(int status, const char *fmt, ...)
{
    /* Format into a local buffer first: callers may pass the current
     * message (distill_last_error()) as an argument to add context. */
    char tmp[ERRBUF_SIZE];
    tmp[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    int n = fmt ? vsnprintf(tmp, sizeof tmp, fmt, ap) : 0;
    va_end(ap);
    if (n < 0)
        tmp[0] = '\0';
    else if ((size_t)n >= sizeof tmp)
        mark_truncated(tmp, sizeof tmp);
    memcpy(err_msg, tmp, sizeof tmp);
    err_status = status;
    return status;
}

const char *util_last_error(void)
{
    return err_msg;
}

int util_last_status(void)
{
    return err_status;
}

void util_clear_error(void)
{
    err_msg[0] = '\0';
    err_status = DISTILL_OK;
}

/* ============================================================ public side */

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

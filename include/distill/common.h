/*
 * distill/common.h - version, status codes, errors and threads.
 *
 * Every fallible libdistill call returns an int status: DISTILL_OK (0) on
 * success, or one of the negative DISTILL_E* codes below.  The codes keep
 * their values forever.  After a failure, distill_last_error() returns a
 * message for the calling thread that says what went wrong and where, e.g.
 *
 *     conv2d 'layer2.0.conv1': input has 16 channels, weight expects 32
 *
 * The library never prints, never calls exit() or abort() on bad input, and
 * keeps no global mutable state other than the thread-local error message
 * and the allocator installed with distill_set_allocator().
 *
 * Thread rules: a handle (model, dataset, trainer, ...) is used by one thread
 * at a time; distinct handles may be used from distinct threads at once.
 */
#ifndef DISTILL_COMMON_H
#define DISTILL_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "distill/version.h"

#if defined(_WIN32) && defined(DISTILL_BUILDING_SHARED)
#define DISTILL_API __declspec(dllexport)
#elif defined(__GNUC__)
#define DISTILL_API __attribute__((visibility("default")))
#else
#define DISTILL_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------ versioned structs */

/**
 * Every struct that crosses the API -- options and vtables the caller hands
 * in, results the library fills in, what callbacks are given -- has
 * `unsigned int version` as its first field, and each has a
 * DISTILL_<NAME>_VERSION macro and a DISTILL_<NAME>_INIT initializer:
 *
 *     distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
 *     distill_evaluate(model, test_set, NULL, &r);
 *
 * A version is the number of bytes from the start of the struct to the end
 * of its last field, as the header a program was compiled with declares it
 * (DISTILL_STRUCT_VERSION).  Structs only grow at the end within a major
 * version, so the version tells the library exactly which fields the
 * caller's struct has: it reads and writes those fields and no others.
 * An options struct from an older program gets the defaults for the fields
 * it lacks; a result struct of an older program is filled up to its last
 * field and not one byte further.  A version larger than the library's (a
 * program built against a newer libdistill), or smaller than the version
 * field itself (an uninitialized struct, or 0), is refused with
 * DISTILL_EVERSION before anything is done.  The rules are in lib/README.md.
 */
#define DISTILL_STRUCT_VERSION(type, last_field) \
    ((unsigned int)(offsetof(type, last_field) + sizeof(((type *)0)->last_field)))

/**
 * Nonzero when the struct at `s`, filled in by the library (a callback's
 * argument such as distill_progress or distill_loss_batch), has `field`:
 * a program built against a newer header uses it before it reads a field
 * that an older library would not have written.
 */
#define DISTILL_HAS_FIELD(s, type, field) ((s)->version >= DISTILL_STRUCT_VERSION(type, field))

/** Status codes.  Values are part of the ABI and never change. */
typedef enum distill_status {
    DISTILL_OK = 0,
    DISTILL_EINVAL = -1,      /**< an argument is invalid (NULL, out of range, bad name) */
    DISTILL_ENOMEM = -2,      /**< an allocation failed */
    DISTILL_ESHAPE = -3,      /**< tensor shapes do not fit together */
    DISTILL_ENOTFOUND = -4,   /**< a named node, parameter, file or class does not exist */
    DISTILL_EEXISTS = -5,     /**< a name is already taken */
    DISTILL_EIO = -6,         /**< reading or writing a file failed */
    DISTILL_EFORMAT = -7,     /**< a file is corrupt, truncated or not of the expected kind */
    DISTILL_EUNSUPPORTED = -8,/**< valid, but not supported by this build */
    DISTILL_EBACKEND = -9,    /**< the compute backend (oneDNN) reported an error */
    DISTILL_ESTATE = -10,     /**< a call came in the wrong order (e.g. backward before forward) */
    DISTILL_ENONFINITE = -11, /**< a loss, gradient or input is NaN or infinite */
    DISTILL_ECANCELLED = -12, /**< the host's callback asked to stop */
    DISTILL_EVERSION = -13    /**< a struct or file has a version this library does not know */
} distill_status;

/**
 * Short, static description of a status code ("invalid argument", ...).
 * Never returns NULL; unknown codes give "unknown error".
 */
DISTILL_API const char *distill_strerror(int status);

/**
 * The message of the last failed call made by this thread.  Never returns
 * NULL; "" when no call has failed since the last distill_error_clear().
 * The string belongs to the library and stays valid until this thread's
 * next libdistill call.
 */
DISTILL_API const char *distill_last_error(void);

/** Forget this thread's last error message. */
DISTILL_API void distill_error_clear(void);

/**
 * The library's version string, "MAJOR.MINOR.PATCH", of the library actually
 * loaded (compare with DISTILL_VERSION_STRING from the headers compiled in).
 */
DISTILL_API const char *distill_version(void);

/** The loaded library's DISTILL_VERSION_NUMBER. */
DISTILL_API int distill_version_number(void);

/**
 * Set the number of threads used by compute calls made from the calling
 * thread (oneDNN's and the library's own parallel loops).  n <= 0 restores
 * the process default (OMP_NUM_THREADS, else the number of cores).
 * On cores shared with other busy work, use fewer threads than cores, or
 * start the process with OMP_WAIT_POLICY=passive: OpenMP's idle threads
 * otherwise spin and take time from the working ones (see the README).
 * Returns DISTILL_OK.
 */
DISTILL_API int distill_set_num_threads(int n);

/** The number of threads compute calls from this thread will use. */
DISTILL_API int distill_get_num_threads(void);

/* ------------------------------------------------------------ allocator */

#define DISTILL_ALLOCATOR_VERSION DISTILL_STRUCT_VERSION(distill_allocator, payload)

/**
 * A host allocator: where the library takes its memory from.
 *
 * alloc(size, alignment, payload) returns a block of at least `size` bytes
 * aligned to `alignment` (a power of two, 16 or 64), or NULL when it has no
 * memory; the library then fails the call it is in with DISTILL_ENOMEM and
 * releases what that call had taken.  free(ptr, payload) releases a block
 * that alloc returned; ptr is never NULL.  Both may be called from any
 * thread (a loader's prefetch thread, the library's parallel loops), so
 * they must be thread-safe.  The sizes asked for include a small header
 * the library keeps in front of each block (see distill_set_allocator).
 */
typedef struct distill_allocator {
    unsigned int version; /**< DISTILL_ALLOCATOR_VERSION */
    void *(*alloc)(size_t size, size_t alignment, void *payload);
    void (*free)(void *ptr, void *payload);
    void *payload;        /**< passed back to both; borrowed */
} distill_allocator;

#define DISTILL_ALLOCATOR_INIT {DISTILL_ALLOCATOR_VERSION, NULL, NULL, NULL}

/**
 * Install `a` (copied) as the allocator of every block the library
 * allocates from now on, process-wide; NULL restores the C library's
 * malloc and free.
 *
 * Call it before any other libdistill call, or later only when no handle
 * of the library (model, tensor, dataset, loader, teacher, loss, optimizer,
 * trainer, ...) is alive and no other thread is inside the library.  The
 * library checks what it can: while any block it allocated is still alive
 * the call fails with DISTILL_ESTATE and changes nothing, so a block is
 * always returned to the allocator it came from.
 *
 * Every allocation of the library goes through it, including those that
 * libpng (PNG folders) and zlib (gzip IDX files) make on the library's
 * behalf.  oneDNN's own allocations cannot be hooked: its engine, primitive
 * descriptors, primitives, JIT-generated code and internal buffers come
 * from the C library's malloc whatever is installed.  The activation
 * arenas and scratchpads the library hands to oneDNN, which hold most of
 * the memory of a forward or backward pass, do come from the hook.
 * Neither can libjpeg's (JPEG images): its working memory while a file is
 * decoded (a few rows, or a progressive file's coefficients, bounded by the
 * size checks of distill_dataset_from_folder) comes from malloc; the
 * decoded pixels come from the hook.
 *
 * With a host allocator each block carries a 16-byte header (64 bytes for
 * 64-byte aligned compute buffers) that records its size, so that growing
 * a block is alloc + copy + free; without one the library calls malloc,
 * calloc, realloc, posix_memalign and free directly.
 *
 * Returns DISTILL_OK; DISTILL_EVERSION for an unknown version;
 * DISTILL_EINVAL when alloc or free is NULL; DISTILL_ESTATE when blocks of
 * the library are still alive.
 */
DISTILL_API int distill_set_allocator(const distill_allocator *a);

#ifdef __cplusplus
}
#endif

#endif /* DISTILL_COMMON_H */

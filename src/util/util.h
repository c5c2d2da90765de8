/*
 * util.h - internal helpers shared by every part of the library, one
 * source file per concern:
 *   errors.c   the thread's last error (seterr)
 *   alloc.c    allocation, the host allocator hook, size arithmetic
 *   crc32.c    CRC-32
 *   rng.c      the seeded generator
 *   fileio.c   atomic file writes, whole file reads
 *   check.c    checks of what callers hand in: struct versions, finite
 *              float arrays
 *   number.c   decimal numbers in text, independent of the locale
 * The chunked container format is in container.h.  Nothing here is
 * exported.
 */
#ifndef DISTILL_UTIL_H
#define DISTILL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "distill/common.h"

#if defined(__GNUC__)
#define DISTILL__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DISTILL__PRINTF(a, b)
#endif

/*
 * Record `status` with a formatted message as this thread's last error and
 * return `status`, so that callers write `return seterr(DISTILL_EINVAL, ...)`.
 */
int seterr(int status, const char *fmt, ...) DISTILL__PRINTF(2, 3);
/* The message is formatted before it replaces the old one, so context can be
 * added to an error from below: seterr(rc, "loading '%s': %s", path,
 * util_last_error()).  Messages longer than 511 bytes end in "...". */
const char *util_last_error(void);  /* this thread's message; never NULL */
int util_last_status(void);         /* the status recorded with it */
void util_clear_error(void);

/* Allocation: every allocation of the library goes through these, so that
 * the host's allocator (distill_set_allocator) and fault injection hook in
 * one place; memory from them must be released with xfree (never free()),
 * and anything allocated for the library by a third-party library (libpng,
 * zlib) must be routed through them too.  On failure they return NULL and
 * set DISTILL_ENOMEM as the last error; a failed xrealloc leaves the old
 * block as it was. */
void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
void xfree(void *p);
char *xstrdup(const char *s);
/* Aligned (64 bytes) allocation for compute buffers; free with xfree_aligned
 * (which is the same as xfree). */
void *xmalloc_aligned(size_t size);
void xfree_aligned(void *p);
/* Blocks handed out by the functions above and not yet freed (for tests,
 * and for distill_set_allocator, which refuses to switch while any is). */
size_t util_live_blocks(void);

/* Overflow-checked size arithmetic: return 0 and set *out, or -1 on overflow. */
int size_mul(size_t a, size_t b, size_t *out);
int size_add(size_t a, size_t b, size_t *out);

/* CRC-32 (IEEE 802.3, as zlib's crc32); crc starts at 0. */
uint32_t crc32_update(uint32_t crc, const void *data, size_t len);

/* splitmix64's finalizer (Stafford's "Mix13", the mix64 of the splitmix64
 * paper): a bijection of 64-bit words that spreads every input bit over the
 * whole output; splitmix64_mix(0) == 0.  splitmix64() is the generator
 * built on it: it adds SPLITMIX64_GAMMA to *state and returns the mix of the
 * result, so the output for a counter z is splitmix64_mix(z + GAMMA).  (Not
 * named plain mix64: files still holding a static mix64 of their own must
 * keep compiling until they switch to this one.) */
#define SPLITMIX64_GAMMA 0x9E3779B97F4A7C15ull
uint64_t splitmix64_mix(uint64_t z);
uint64_t splitmix64(uint64_t *state);

/* Seeded generator: splitmix64-seeded xoshiro256**.  Same seed, same stream
 * on every machine. */
typedef struct rng {
    uint64_t s[4];
} rng;
void rng_seed(rng *r, uint64_t seed);
uint64_t rng_next(rng *r);
double rng_uniform(rng *r);              /* [0, 1) with 53 bits */
float rng_normal(rng *r);                /* N(0, 1), Box-Muller */
uint64_t rng_below(rng *r, uint64_t n);  /* uniform in [0, n), unbiased */

/* Atomic file write: data goes to "<path>.tmp.<pid>", fsync, rename over
 * path, fsync the directory.  On any failure the temporary file is removed,
 * `path` is untouched, and DISTILL_EIO is returned with the reason. */
typedef struct afile afile;
int afile_open(afile **out, const char *path);
int afile_write(afile *f, const void *data, size_t len);
int afile_commit(afile *f);   /* sync, close, rename; frees f */
void afile_abort(afile *f);   /* close, remove temp; frees f; accepts NULL */

/* The whole of a file in one call: afile_open, afile_write and afile_commit
 * (afile_abort on failure), with their errors; data is not freed. */
int write_file_atomic(const char *path, const void *data, size_t size);

/* A decimal number ("0.9", "-1", "2e-3", ".5"), finite, in the "C"
 * locale's format whatever the host's locale is: 0 and *out set, or -1.
 * format_float writes v so that parse_decimal reads back the same float. */
int parse_decimal(const char *s, double *out);
void format_float(char *buf, size_t size, float v);

/* Read a whole file into memory (xmalloc'd; caller xfree's).  Refuses files
 * larger than max_size with DISTILL_EFORMAT. */
int read_file(const char *path, size_t max_size, void **data, size_t *size);

/*
 * Versioned structs (see DISTILL_STRUCT_VERSION in distill/common.h): the
 * first field of every struct that crosses the API is `unsigned int
 * version`, the number of bytes of the struct that the caller's header
 * declares.  Every version check of the library goes through check_version,
 * so that a refusal reads the same everywhere:
 *   "<where>: <type> version <v> is newer than this library's (<known>)..."
 *   "<where>: <type> version <v> is not valid: initialize it with <TYPE>_INIT"
 * where <where> is printf-formatted from where_fmt (the public function, or
 * the node: "conv2d 'stem'").  A version is accepted when it covers at least
 * the version field and is at most `known`, the library's own version of
 * the struct.  It returns DISTILL_OK, or DISTILL_EVERSION with that message.
 * CHECK_VERSION returns the status from the calling function when the
 * version is refused.
 *
 * Nothing in the library copies or clears a caller's struct with its own
 * sizeof: structs come in with struct_copy_in and go out with
 * struct_copy_out, both bounded by the caller's version.
 */
int check_version(unsigned int version, unsigned int known, const char *type,
                  const char *where_fmt, ...) DISTILL__PRINTF(4, 5);
#define CHECK_VERSION(version, known, type, ...)                                    \
    do {                                                                            \
        int check_version_rc_ = check_version((version), (known), (type), __VA_ARGS__); \
        if (check_version_rc_ != DISTILL_OK)                                        \
            return check_version_rc_;                                               \
    } while (0)

/* Copy a caller's struct `src` (version already checked) over `dst`, which
 * holds the library's defaults and is dst_size bytes: the bytes after the
 * version field up to src's version, never more than dst_size, so that the
 * fields an older caller lacks keep their defaults.  dst's version field is
 * left as it was (the library's own). */
void struct_copy_in(void *dst, size_t dst_size, const void *src);

/* Fill a caller's struct `dst` (version already checked) from the
 * library's complete struct `src` of src_size bytes: the bytes after the
 * version field up to dst's version, so that an older caller's struct is
 * written up to its last field and not beyond.  dst's version field is left
 * as the caller set it. */
void struct_copy_out(void *dst, const void *src, size_t src_size);

/* Check a caller's options struct and copy it over dst (which holds the
 * defaults); returns from the calling function when the version is refused. */
#define COPY_OPTIONS(dst, src, known, type, ...)                              \
    do {                                                                      \
        CHECK_VERSION((src)->version, (known), (type), __VA_ARGS__);          \
        struct_copy_in((dst), sizeof *(dst), (src));                          \
    } while (0)

/* The body of a distill_<x>_init(ptr, version) function: check ptr and
 * version, then write the defaults `init` (a struct of the library's
 * version) into the caller's struct up to `version`, and set its version. */
#define INIT_STRUCT(ptr, version, known, init, type, fn)                      \
    do {                                                                      \
        if (!(ptr))                                                           \
            return seterr(DISTILL_EINVAL, "%s: NULL argument", (fn));        \
        CHECK_VERSION((version), (known), (type), "%s", (fn));                \
        *(unsigned int *)(void *)(ptr) = (version);                           \
        struct_copy_out((ptr), &(init), sizeof(init));                        \
        return DISTILL_OK;                                                    \
    } while (0)

/* Float arrays: the index of the first NaN or infinite element of x[0, n),
 * or n when every element is finite; all_finite(x, n) is 1 when every
 * element is finite (and for n == 0), else 0. */
size_t first_nonfinite(const float *x, size_t n);
int all_finite(const float *x, size_t n);

#endif /* DISTILL_UTIL_H */

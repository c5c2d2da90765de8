/*
 * util.c - internal helpers: last-error recording, allocation, overflow
 * checked sizes, CRC-32, the seeded generator, atomic file writes and whole
 * file reads.  The public error/version/thread functions are in errors.c.
 */
#define _POSIX_C_SOURCE 200809L

#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* ================================================================ errors */

/* This thread's last error.  errors.c reads it through util_last_error(). */
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
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt ? fmt : "", ap);
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

/* ============================================================ allocation */

/*
 * Every allocation of the library ends up here, in one of two modes:
 *
 *   system   (the default) malloc, calloc, realloc, posix_memalign and free,
 *            called directly, with no overhead;
 *   host     the allocator installed with distill_set_allocator().  Each
 *            block starts `align` bytes (16, or 64 for compute buffers)
 *            before the pointer handed out, and the 16 bytes just before
 *            that pointer hold a blk_head: the size asked for (xrealloc
 *            copies that many bytes) and the distance back to the start of
 *            the host's block (what the host's free receives).
 *
 * `live` counts the blocks handed out and not yet freed, in either mode.
 * The mode changes only while it is zero, so every live block belongs to
 * the mode in force and is returned to the allocator it came from.
 *
 * Zero sizes: xmalloc(0), xcalloc(0, n), xcalloc(n, 0), xrealloc(p, 0) and
 * xmalloc_aligned(0) all behave as if one byte had been asked for: they
 * return a unique, non-NULL pointer (or NULL with DISTILL_ENOMEM) that must
 * be released with xfree (or xfree_aligned: the two are the same).  Sizes
 * above PTRDIFF_MAX fail without asking anyone, like any other failed
 * allocation.
 */
#define ALIGNMENT 64       /* xmalloc_aligned */
#define BASE_ALIGNMENT 16  /* everything else: alignof(max_align_t) on the targets we build for */

typedef struct blk_head {
    size_t size;   /* bytes asked for (1 for 0) */
    size_t offset; /* user pointer minus the host's block */
} blk_head;

_Static_assert(sizeof(blk_head) <= BASE_ALIGNMENT, "the block header fits the base alignment");
_Static_assert(BASE_ALIGNMENT % _Alignof(blk_head) == 0, "the block header is aligned");
_Static_assert(_Alignof(max_align_t) <= BASE_ALIGNMENT, "host blocks are aligned like malloc's");

static distill_allocator host;  /* read only while host_on is set */
static _Atomic int host_on;
static _Atomic size_t live;

static int too_big(size_t size)
{
    return size > (size_t)PTRDIFF_MAX - ALIGNMENT;
}

static void *oom(size_t size)
{
    seterr(DISTILL_ENOMEM, "out of memory allocating %zu bytes", size);
    return NULL;
}

static int host_mode(void)
{
    return atomic_load_explicit(&host_on, memory_order_acquire);
}

/* A block of `size` bytes aligned to `align` from the host, header filled
 * in; NULL if the host has no memory (or breaks the alignment promise). */
static void *host_block(size_t size, size_t align)
{
    unsigned char *raw = host.alloc(size + align, align, host.payload);
    if (!raw)
        return NULL;
    if ((uintptr_t)raw & (align - 1)) {
        host.free(raw, host.payload);
        return NULL;
    }
    unsigned char *p = raw + align;
    blk_head *h = (blk_head *)(void *)p - 1;
    h->size = size;
    h->offset = align;
    return p;
}

static blk_head *head_of(void *p)
{
    return (blk_head *)p - 1;
}

static void counted(void *p)
{
    if (p)
        atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
}

void *xmalloc(size_t size)
{
    if (size == 0)
        size = 1;
    if (too_big(size))
        return oom(size);
    void *p = host_mode() ? host_block(size, BASE_ALIGNMENT) : malloc(size);
    counted(p);
    return p ? p : oom(size);
}

void *xcalloc(size_t n, size_t size)
{
    size_t total;
    if (size_mul(n, size, &total) != 0) {
        seterr(DISTILL_ENOMEM, "out of memory allocating %zu x %zu bytes", n, size);
        return NULL;
    }
    if (total == 0)
        n = size = total = 1;
    if (too_big(total))
        return oom(total);
    void *p;
    if (host_mode()) {
        p = host_block(total, BASE_ALIGNMENT);
        if (p)
            memset(p, 0, total);
    } else {
        p = calloc(n, size);
    }
    counted(p);
    return p ? p : oom(total);
}

void *xrealloc(void *p, size_t size)
{
    if (!p)
        return xmalloc(size);
    if (size == 0)
        size = 1;
    if (too_big(size))
        return oom(size);
    if (!host_mode()) {
        void *q = realloc(p, size);
        return q ? q : oom(size); /* p stays valid (and counted) on failure */
    }
    /* alloc + copy + free, keeping the old block's alignment. */
    blk_head *h = head_of(p);
    size_t align = h->offset;
    unsigned char *q = host_block(size, align);
    if (!q)
        return oom(size);
    memcpy(q, p, h->size < size ? h->size : size);
    host.free((unsigned char *)p - align, host.payload);
    return q;
}

void xfree(void *p)
{
    if (!p)
        return;
    atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
    if (host_mode())
        host.free((unsigned char *)p - head_of(p)->offset, host.payload);
    else
        free(p);
}

char *xstrdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void *xmalloc_aligned(size_t size)
{
    if (size == 0)
        size = 1;
    if (too_big(size))
        return oom(size);
    void *p = NULL;
    if (host_mode())
        p = host_block(size, ALIGNMENT);
    else if (posix_memalign(&p, ALIGNMENT, size) != 0)
        p = NULL;
    counted(p);
    return p ? p : oom(size);
}

void xfree_aligned(void *p)
{
    xfree(p);
}

size_t util_live_blocks(void)
{
    return atomic_load_explicit(&live, memory_order_relaxed);
}

int distill_set_allocator(const distill_allocator *a)
{
    if (a) {
        if (a->version != DISTILL_ALLOCATOR_VERSION)
            return seterr(DISTILL_EVERSION,
                          "distill_set_allocator: allocator version %u is not known (this library "
                          "knows %d)",
                          a->version, DISTILL_ALLOCATOR_VERSION);
        if (!a->alloc || !a->free)
            return seterr(DISTILL_EINVAL, "distill_set_allocator: alloc and free must be set");
    }
    size_t n = util_live_blocks();
    if (n != 0)
        return seterr(DISTILL_ESTATE,
                      "distill_set_allocator: %zu blocks of the library are still allocated; free "
                      "every handle first",
                      n);
    if (a) {
        atomic_store_explicit(&host_on, 0, memory_order_release);
        host = *a;
        atomic_store_explicit(&host_on, 1, memory_order_release);
    } else {
        atomic_store_explicit(&host_on, 0, memory_order_release);
    }
    return DISTILL_OK;
}

/* ================================================================= sizes */

int size_mul(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return -1;
    *out = a * b;
    return 0;
}

int size_add(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a)
        return -1;
    *out = a + b;
    return 0;
}

/* ================================================================ CRC-32 */

/*
 * Reflected CRC-32, polynomial 0xEDB88320, initial value and final xor
 * 0xFFFFFFFF (IEEE 802.3; zlib's crc32()).  The 256-entry table is computed
 * by the compiler: CRC_T(n) runs the eight shift/xor steps on byte n.
 */
#define CRC_1(c) (((c) >> 1) ^ (0xEDB88320u & (0u - ((c) & 1u))))
#define CRC_T(n) CRC_1(CRC_1(CRC_1(CRC_1(CRC_1(CRC_1(CRC_1(CRC_1((uint32_t)(n)))))))))
#define CRC_R4(n) CRC_T(n), CRC_T((n) + 1), CRC_T((n) + 2), CRC_T((n) + 3)
#define CRC_R16(n) CRC_R4(n), CRC_R4((n) + 4), CRC_R4((n) + 8), CRC_R4((n) + 12)
#define CRC_R64(n) CRC_R16(n), CRC_R16((n) + 16), CRC_R16((n) + 32), CRC_R16((n) + 48)

static const uint32_t crc_table[256] = {
    CRC_R64(0), CRC_R64(64), CRC_R64(128), CRC_R64(192),
};

uint32_t crc32_update(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t c = ~crc;
    for (size_t i = 0; i < len; i++)
        c = crc_table[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
    return ~c;
}

/* =================================================================== RNG */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void rng_seed(rng *r, uint64_t seed)
{
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&sm);
    /* splitmix64 is a bijection of its counter, so four outputs are never
     * all zero; the check keeps the xoshiro invariant explicit. */
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
}

/* xoshiro256** */
uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    const uint64_t result = rotl64(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

double rng_uniform(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

float rng_normal(rng *r)
{
    /* u1 in (0, 1] so log(u1) is finite; one output per call (the second
     * Box-Muller value is dropped so the generator state stays the whole
     * state). */
    double u1 = 1.0 - rng_uniform(r);
    double u2 = rng_uniform(r);
    double radius = sqrt(-2.0 * log(u1));
    return (float)(radius * cos(6.283185307179586476925286766559 * u2));
}

uint64_t rng_below(rng *r, uint64_t n)
{
    if (n <= 1)
        return 0;
    /* Reject the low 2^64 mod n values so every residue is equally likely. */
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = rng_next(r);
        if (x >= threshold)
            return x % n;
    }
}

/* ============================================================ atomic file */

struct afile {
    int fd;      /* -1 once closed (after a failed write) */
    char *path;  /* final name */
    char *tmp;   /* temporary name, in the same directory */
};

static void afile_release(afile *f)
{
    xfree(f->path);
    xfree(f->tmp);
    xfree(f);
}

/* Close and remove the temporary file; keep errno of the original failure. */
static void afile_discard(afile *f)
{
    int saved = errno;
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    if (f->tmp)
        unlink(f->tmp);
    errno = saved;
}

static int afile_fail(afile *f, const char *what)
{
    int e = errno;
    afile_discard(f);
    return seterr(DISTILL_EIO, "writing '%s': %s: %s", f->path, what, strerror(e));
}

int afile_open(afile **out, const char *path)
{
    if (!out || !path || !*path)
        return seterr(DISTILL_EINVAL, "afile_open: no path");
    *out = NULL;
    afile *f = xcalloc(1, sizeof *f);
    if (!f)
        return DISTILL_ENOMEM;
    f->fd = -1;
    f->path = xstrdup(path);
    size_t cap = strlen(path) + 64;
    f->tmp = xmalloc(cap);
    if (!f->path || !f->tmp) {
        afile_release(f);
        return DISTILL_ENOMEM;
    }
    /* "<path>.tmp.<pid>"; if that name is taken (a stale file left by a
     * crashed process that had the same pid, or another thread of this
     * process writing the same path) try "<path>.tmp.<pid>.<n>". */
    long pid = (long)getpid();
    for (int attempt = 0; attempt < 100; attempt++) {
        if (attempt == 0)
            snprintf(f->tmp, cap, "%s.tmp.%ld", path, pid);
        else
            snprintf(f->tmp, cap, "%s.tmp.%ld.%d", path, pid, attempt);
        do {
            f->fd = open(f->tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        } while (f->fd < 0 && errno == EINTR);
        if (f->fd >= 0 || errno != EEXIST)
            break;
    }
    if (f->fd < 0) {
        int e = errno;
        seterr(DISTILL_EIO, "writing '%s': cannot create temporary file '%s': %s", path, f->tmp,
               strerror(e));
        afile_release(f); /* nothing was created */
        return DISTILL_EIO;
    }
    *out = f;
    return DISTILL_OK;
}

/* A failed write closes and removes the temporary file at once; the handle
 * stays allocated so the caller still ends it with afile_abort() (or
 * afile_commit(), which then fails with DISTILL_EIO). */
int afile_write(afile *f, const void *data, size_t len)
{
    if (!f)
        return seterr(DISTILL_EINVAL, "afile_write: no file");
    if (f->fd < 0)
        return seterr(DISTILL_EIO, "writing '%s': an earlier write failed", f->path);
    const unsigned char *p = data;
    while (len > 0) {
        /* Keep each call well below SSIZE_MAX and Linux's 2 GiB cap. */
        size_t chunk = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
        ssize_t n = write(f->fd, p, chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return afile_fail(f, "write failed");
        }
        if (n == 0) {
            errno = EIO;
            return afile_fail(f, "write made no progress");
        }
        p += n;
        len -= (size_t)n;
    }
    return DISTILL_OK;
}

/* The directory part of `path` ("." when it has none), xmalloc'd. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return xstrdup(".");
    size_t n = (size_t)(slash - path);
    if (n == 0)
        n = 1; /* "/file" -> "/" */
    char *d = xmalloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

int afile_commit(afile *f)
{
    if (!f)
        return seterr(DISTILL_EINVAL, "afile_commit: no file");
    int rc = DISTILL_OK;
    if (f->fd < 0) {
        rc = seterr(DISTILL_EIO, "writing '%s': an earlier write failed", f->path);
        goto done;
    }
    while (fsync(f->fd) != 0) {
        if (errno != EINTR) {
            rc = afile_fail(f, "fsync failed");
            goto done;
        }
    }
    /* close() may report a deferred write error (NFS); it must not be
     * retried on EINTR (the descriptor is gone either way on Linux). */
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0 && errno != EINTR) {
        rc = afile_fail(f, "close failed");
        goto done;
    }
    if (rename(f->tmp, f->path) != 0) {
        rc = afile_fail(f, "rename failed");
        goto done;
    }
    /* The new name is in place; make the rename itself durable.  A file
     * system that cannot sync directories (EINVAL) is not an error. */
    char *dir = dir_of(f->path);
    if (!dir) {
        rc = DISTILL_ENOMEM;
        goto done;
    }
    int dfd = open(dir, O_RDONLY | O_CLOEXEC
#ifdef O_DIRECTORY
                            | O_DIRECTORY
#endif
    );
    if (dfd >= 0) {
        int r;
        do {
            r = fsync(dfd);
        } while (r != 0 && errno == EINTR);
        if (r != 0 && errno != EINVAL && errno != EROFS && errno != EBADF) {
            int e = errno;
            rc = seterr(DISTILL_EIO, "writing '%s': file written, but syncing directory '%s' failed: %s",
                        f->path, dir, strerror(e));
        }
        close(dfd);
    }
    xfree(dir);
done:
    afile_release(f);
    return rc;
}

void afile_abort(afile *f)
{
    if (!f)
        return;
    afile_discard(f);
    afile_release(f);
}

/* ============================================================= read_file */

int read_file(const char *path, size_t max_size, void **data, size_t *size)
{
    if (!path || !data || !size)
        return seterr(DISTILL_EINVAL, "read_file: NULL argument");
    *data = NULL;
    *size = 0;
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return seterr(DISTILL_ENOTFOUND, "reading '%s': no such file", path);
        return seterr(DISTILL_EIO, "reading '%s': %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return seterr(DISTILL_EIO, "reading '%s': %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return seterr(DISTILL_EIO, "reading '%s': is a directory", path);
    }
    if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > (uintmax_t)max_size) {
        close(fd);
        return seterr(DISTILL_EFORMAT, "reading '%s': file of %jd bytes is larger than the limit of %zu",
                      path, (intmax_t)st.st_size, max_size);
    }
    /* Read until end of file, whatever the file is (it may also be a pipe,
     * or change size while we read): start with room for the size stat()
     * reported plus one byte, so a regular file ends in one pass. */
    size_t cap = 4096;
    if (S_ISREG(st.st_mode) && (size_t)st.st_size < SIZE_MAX) /* st_size <= max_size here */
        cap = (size_t)st.st_size + 1;
    unsigned char *buf = xmalloc(cap);
    if (!buf) {
        close(fd);
        return DISTILL_ENOMEM;
    }
    size_t len = 0;
    for (;;) {
        if (len == cap) {
            if (len > max_size)
                break;
            size_t ncap = cap < SIZE_MAX / 2 ? cap * 2 : SIZE_MAX;
            if (max_size < SIZE_MAX && ncap > max_size + 1)
                ncap = max_size + 1;
            if (ncap <= cap)
                break;
            unsigned char *nb = xrealloc(buf, ncap);
            if (!nb) {
                xfree(buf);
                close(fd);
                return DISTILL_ENOMEM;
            }
            buf = nb;
            cap = ncap;
        }
        size_t want = cap - len;
        if (want > ((size_t)1 << 30))
            want = (size_t)1 << 30;
        ssize_t n = read(fd, buf + len, want);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            xfree(buf);
            close(fd);
            return seterr(DISTILL_EIO, "reading '%s': %s", path, strerror(e));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (len > max_size) {
        xfree(buf);
        return seterr(DISTILL_EFORMAT, "reading '%s': file is larger than the limit of %zu bytes",
                      path, max_size);
    }
    *data = buf;
    *size = len;
    return DISTILL_OK;
}

/*
 * alloc.c - every allocation of the library (xmalloc and friends), the
 * host allocator hook (distill_set_allocator) and overflow-checked size
 * arithmetic.  Declared in util/util.h.
 */
#include "util/util.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int distill_set_allocator(const distill_allocator *host_a)
{
    /* the host's struct up to its version; what an older one lacks is NULL */
    distill_allocator full = DISTILL_ALLOCATOR_INIT, *a = NULL;
    if (host_a) {
        COPY_OPTIONS(&full, host_a, DISTILL_ALLOCATOR_VERSION, "distill_allocator",
                     "distill_set_allocator");
        a = &full;
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

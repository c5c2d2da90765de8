/*
 * data_internal.h - the layout of datasets, shared by the files of src/data/.
 *
 * A store holds the samples and labels once, immutable after construction,
 * with an atomic reference count.  A dataset handle is a view of a store:
 * either the contiguous range [base, base + n) or an explicit index list.
 * Loaders take their own reference and copy the view, so handles and
 * loaders can be freed in any order.
 */
#ifndef DISTILL_DATA_INTERNAL_H
#define DISTILL_DATA_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "distill/data.h"

/* Element type of the stored samples. */
enum { STORE_F32 = 0, STORE_U8 = 1 /* value = byte / 255 */ };

typedef struct store {
    atomic_int refs;
    int64_t n;             /* samples */
    int64_t c, h, w;       /* per-sample shape */
    size_t sample_elems;   /* c * h * w */
    int type;              /* STORE_F32 or STORE_U8 */
    const void *pixels;    /* n * sample_elems elements of `type` */
    void *owned_pixels;    /* what to free: pixels if owned, else NULL */
    const int32_t *labels; /* n labels, or NULL */
    int32_t *owned_labels;
    int classes;
    char **class_names;    /* classes names, or NULL */
    int64_t skipped_not_png, skipped_bad;
} store;

struct distill_dataset {
    store *st;
    int64_t n;
    int64_t base;  /* first sample when idx is NULL */
    int64_t *idx;  /* n store indices, or NULL for the range */
    int labelled;  /* 0 after drop_labels or without labels */
};

/* A new store with one reference and nothing in it (xcalloc'd). */
store *store_new(void);
void store_release(store *st);
void store_retain(store *st);

/* Check labels[0..n) against *classes (0 = derive it as max + 1, written
 * back).  `what` names the source in the message.  DISTILL_EFORMAT (files)
 * or DISTILL_EINVAL (host arrays) as `bad_status`. */
int check_labels(const int32_t *labels, int64_t n, int *classes, int bad_status,
                 const char *what);

/* Wrap a filled store in a new handle covering all of it.  On failure the
 * store is released.  Returns a status. */
int dataset_wrap(distill_dataset **out, store *st);

/* Index in the store of sample i of the view. */
static inline int64_t view_index(const distill_dataset *ds, int64_t i)
{
    return ds->idx ? ds->idx[i] : ds->base + i;
}

/* Augmentation views, for teacher caches (loader.c).  A view numbers one
 * crop offset and flip: view = (oy * (2P + 1) + ox) * F + flip, F = 2 with
 * flips, else 1; a loader has (2P + 1)^2 * F views per sample. */
int loader_view_count(const distill_loader *ld);
int64_t loader_size(const distill_loader *ld);
/* The dataset positions and views of the `count` samples of the batch that
 * starts at `pos` of `epoch` (as distill_loader_next returns them). */
int loader_batch_views(distill_loader *ld, uint64_t epoch, uint64_t pos, int count,
                       int64_t *index, int32_t *view);
/* Sample `index` (dataset position) through `view`, normalized, into dst. */
int loader_build_view(const distill_loader *ld, int64_t index, int32_t view, float *dst);

#endif /* DISTILL_DATA_INTERNAL_H */

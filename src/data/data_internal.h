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

/* Element type of the stored samples.  STORE_FILES keeps no pixels: a
 * sample is decoded from its file, into bytes (value = byte / 255), by the
 * store's decode function each time it is read (streaming). */
enum { STORE_F32 = 0, STORE_U8 = 1 /* value = byte / 255 */, STORE_FILES = 2 };

/*
 * Decode sample i (0 <= i < n) of a STORE_FILES store into dst, c * h * w
 * bytes, (C, H, W) row-major, at the store's shape.  Called from several
 * loader threads at once with distinct dst: it must only read `payload`.
 * It must give the same bytes every time (a batch is a pure function of
 * its key).  Returns a status; on failure the calling thread's error names
 * the file.
 */
typedef int (*store_decode_fn)(void *payload, int64_t i, uint8_t *dst, int64_t c, int64_t h,
                               int64_t w);

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
    /* STORE_FILES: the decoder, its payload, and what frees the payload
     * with the store (may be NULL). */
    store_decode_fn decode;
    void *decode_payload;
    void (*decode_free)(void *payload);
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

/* Bytes of sample s of any store into dst (c * h * w bytes): STORE_U8
 * copies, STORE_FILES decodes.  Not for STORE_F32. */
int store_sample_u8(const store *st, int64_t s, uint8_t *dst);

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
/* Sample `index` (dataset position) through `view`, normalized, into dst
 * (the loader's output shape).  Refused (DISTILL_EINVAL) when the loader
 * has a RandomResizedCrop, whose boxes cannot be enumerated. */
int loader_build_view(distill_loader *ld, int64_t index, int32_t view, float *dst);
/* Nonzero when the loader's augmentation can be enumerated as views. */
int loader_views_enumerable(const distill_loader *ld);
/* The RandomResizedCrop box {top, left, height, width} of the sample at
 * position q of `epoch`, in the image that enters the crop (after Resize
 * and CenterCrop); returns 1 when it is torchvision's fallback (no box of
 * the 10 attempts fitted), else 0. */
int loader_rrc_box(const distill_loader *ld, uint64_t epoch, uint64_t q, int64_t box[4]);

#endif /* DISTILL_DATA_INTERNAL_H */

/*
 * distill/data.h - datasets and the batch loader.
 *
 * A distill_dataset is N samples of one fixed per-sample shape (C, H, W),
 * read as float32 values in [0, 1], and, when labelled, one int32 label per
 * sample in [0, classes).  Datasets come from IDX files (MNIST /
 * Fashion-MNIST), from PNG and JPEG images (a folder with one sub-folder
 * per class, or a list file of paths and labels), or from the host's own
 * arrays.  Files are kept as bytes (value = byte / 255, a quarter of the
 * memory of floats) and converted per batch; a folder whose bytes exceed a
 * memory budget is streamed: only the file list stays in memory and loaders
 * decode the files every epoch.  Mean/std normalization and the transforms
 * are not applied to the stored values: the loader applies them when it
 * builds a batch, so one dataset can feed loaders with different settings.
 *
 *     distill_dataset *train, *val, *all;
 *     distill_dataset_fashion_mnist(&all, NULL, 1);          // 60000 images
 *     distill_dataset_split(&train, &val, all, 5000, 42);    // 55000 / 5000
 *     distill_dataset_free(all);                             // views keep the data
 *
 *     float mean = 0.2860f, std = 0.3530f;
 *     distill_loader_options o;
 *     distill_loader_options_init(&o, DISTILL_LOADER_OPTIONS_VERSION);
 *     o.batch_size = 128;
 *     o.seed = 7;
 *     o.norm_count = 1; o.mean = &mean; o.std = &std;
 *     o.crop_padding = 2; o.hflip = 1;
 *     distill_loader *ld;
 *     distill_loader_create(&ld, train, &o);
 *     int64_t dims[4] = {128, 1, 28, 28};
 *     distill_tensor *x;
 *     distill_tensor_create(&x, 4, dims);
 *     int32_t y[128];
 *     for (int epoch = 0; epoch < 3; epoch++) {
 *         int n;
 *         while (distill_loader_next(ld, x, y, &n) == DISTILL_OK && n > 0)
 *             ...;                                           // x is (n, 1, 28, 28)
 *     }
 *
 * Storage and ownership: the samples live in one shared, immutable store
 * with a reference count.  Views made by distill_dataset_subset(),
 * _select() and _split(), and every loader, hold a reference; the store is
 * released when its last holder is freed, so handles may be freed in any
 * order.  A dataset handle is used by one thread at a time; distinct handles
 * that share a store may be used from distinct threads.
 *
 * Determinism: the loader's batches - sample order and augmentation - are a
 * pure function of (seed, epoch, position in the epoch).  They do not depend
 * on timing, on whether prefetching is on, or on what was read before, so a
 * run resumed from distill_loader_get_state() sees exactly the batches the
 * uninterrupted run would have seen.
 */
#ifndef DISTILL_DATA_H
#define DISTILL_DATA_H

#include "distill/common.h"
#include "distill/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct distill_dataset distill_dataset;
typedef struct distill_loader distill_loader;

/* ----------------------------------------------------------- IDX files */

/**
 * Load an IDX image file (big-endian magic 0x00000803, dims N, rows, cols;
 * unsigned bytes) and, if labels_path is not NULL, an IDX label file (magic
 * 0x00000801, dim N; unsigned bytes).  Each file may be raw or gzip
 * compressed; gzip is recognized by its magic bytes.  Samples have the shape
 * (1, rows, cols) and the values byte / 255; the bytes are kept as they are
 * (a quarter of the memory of floats) and converted when read.
 *
 * `classes` (>= 0) is the number of classes; labels must be below it.
 * 0 means one more than the largest label found.  Without a labels file,
 * `classes` is only recorded (distill_dataset_num_classes) and may be 0.
 *
 * Every header is checked before anything is allocated: a header claiming
 * more data than the file holds, or more than 8 GiB, or zero images, is
 * DISTILL_EFORMAT; compressed data is read in growing pieces, so a lying
 * header fails when the data ends, without a large allocation.
 * Errors: DISTILL_ENOTFOUND (no such file), DISTILL_EIO, DISTILL_EFORMAT
 * (bad magic, bad dims, truncated or corrupt data, trailing data, label
 * count differing from the image count, a label >= classes), DISTILL_EINVAL,
 * DISTILL_ENOMEM.  *out belongs to the caller (distill_dataset_free).
 */
DISTILL_API int distill_dataset_from_idx(distill_dataset **out, const char *images_path,
                                         const char *labels_path, int classes);

/**
 * Fashion-MNIST from `dir`: train nonzero loads the 60000 training images
 * (train-images-idx3-ubyte, train-labels-idx1-ubyte), zero the 10000 test
 * images (t10k-...).  Each file is looked for with the ".gz" suffix first,
 * then without.  dir NULL means $FASHION_MNIST_DIR if set and not empty,
 * else /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist).
 * 10 classes, named "T-shirt/top", "Trouser", ..., "Ankle boot".
 * Errors as distill_dataset_from_idx().  *out belongs to the caller.
 */
DISTILL_API int distill_dataset_fashion_mnist(distill_dataset **out, const char *dir, int train);

/* ------------------------------------------------ PNG and JPEG images */

/** How a folder image is brought to the requested height and width. */
typedef enum distill_resize {
    DISTILL_RESIZE_BILINEAR = 0,    /**< bilinear, half-pixel centres, no antialiasing
                                         (PyTorch's interpolate, align_corners=False) */
    DISTILL_RESIZE_CENTER_CROP = 1, /**< the centred H x W window; a smaller image is
                                         centred on zeros.  Top-left = floor((src - dst) / 2) */
    DISTILL_RESIZE_NONE = 2         /**< every image must already be H x W */
} distill_resize;

#define DISTILL_FOLDER_OPTIONS_VERSION DISTILL_STRUCT_VERSION(distill_folder_options, progress_payload)

typedef struct distill_folder_options {
    unsigned int version; /**< DISTILL_FOLDER_OPTIONS_VERSION */
    int channels;         /**< 1 (gray) or 3 (RGB); 3 */
    int height, width;    /**< sample size; 0, 0 = the size of the first image read */
    int resize;           /**< distill_resize; DISTILL_RESIZE_BILINEAR */
    int skip_bad;         /**< nonzero: skip image files that cannot be read or decoded
                               (counted, see distill_dataset_skipped) instead of failing; 0 */
    /** Memory budget of the decoded samples, in bytes (n x C x H x W, one
     *  byte each).  A folder whose samples would need more is not decoded
     *  at load: the dataset keeps the file list and labels, and loaders
     *  decode the files on their worker threads every epoch (streaming).
     *  0 = DISTILL_FOLDER_MEMORY_DEFAULT; -1 = no limit (always in memory). */
    int64_t memory_limit;
    /** Called during the load, from the calling thread: while the files are
     *  listed (stage DISTILL_FOLDER_SCAN; done = image files found so far,
     *  total = 0), then once before the first file is decoded and after each
     *  one (DISTILL_FOLDER_DECODE; done of total files; a streamed dataset
     *  decodes only the first one at load, unless skip_bad).  A nonzero
     *  return stops the load with DISTILL_ECANCELLED.  NULL = no calls; NULL */
    int (*progress)(int stage, int64_t done, int64_t total, void *payload);
    void *progress_payload; /**< passed back to progress as its last argument; NULL */
} distill_folder_options;

/** The default memory budget of a folder's decoded samples: 4 GiB. */
#define DISTILL_FOLDER_MEMORY_DEFAULT ((int64_t)4 << 30)

/** The `stage` argument of distill_folder_options.progress. */
typedef enum distill_folder_stage {
    DISTILL_FOLDER_SCAN = 0,  /**< listing folders, or reading the list file */
    DISTILL_FOLDER_DECODE = 1 /**< reading and decoding the image files */
} distill_folder_stage;

#define DISTILL_FOLDER_OPTIONS_INIT \
    {DISTILL_FOLDER_OPTIONS_VERSION, 3, 0, 0, 0, 0, 0, NULL, NULL}

/** Fill *opts with DISTILL_FOLDER_OPTIONS_INIT.  DISTILL_EVERSION for an unknown version. */
DISTILL_API int distill_folder_options_init(distill_folder_options *opts, unsigned int version);

/**
 * Load root/<class>/<image>, PNG and JPEG files.  Every sub-folder of root
 * is a class; classes are numbered in strcmp() order of their names (as
 * torchvision's ImageFolder numbers them), and images within a class are
 * read in strcmp() order of their file names, so the order of samples and
 * the labels are the same on every machine.
 *
 * Which entries are images is decided by the name: regular files ending in
 * .png, .jpg, .jpeg, .jpe or .jfif, in any case (x.PNG, y.Jpg).  How a file
 * is decoded is decided by its first bytes, not its name: the PNG signature
 * or the JPEG start-of-image marker (FF D8 FF), so a JPEG named .png loads
 * as a JPEG.  Anything else is a bad file.
 *
 * PNG (libpng): every colour type and bit depth is read (gray, gray +
 * alpha, RGB, RGBA, palette, 1..16 bits, interlaced or not).  Alpha is
 * dropped (not composited), no gamma or colour-space conversion is made.
 *
 * JPEG (libjpeg-turbo, libjpeg API): baseline, extended and progressive,
 * Huffman or arithmetic coded, gray (1 component) or colour (YCbCr or
 * RGB, 3 components), with libjpeg's integer IDCT and fancy upsampling, so
 * the pixels are the same on every machine.  CMYK and YCCK files are
 * refused as bad files ("CMYK colour space is not supported"), not
 * converted.  The EXIF orientation (APP1 Exif, tag 0x0112) is applied: the
 * image is rotated or mirrored to be shown upright, so a portrait photo
 * with orientation 6 loads as a tall image.  A file that libjpeg can only
 * decode with a warning (truncated, corrupt entropy-coded data) is a bad
 * file; stray bytes between markers are accepted.
 *
 * Both: RGB becomes gray as 0.299 R + 0.587 G + 0.114 B, gray becomes RGB
 * by replication.
 *
 * Skipped, and counted as "not an image" (distill_dataset_skipped's
 * not_png): entries of root that are not folders, and entries of a class
 * folder that are not regular files with an image extension, hidden files
 * included.  A class folder with no image is kept as a class (its number
 * stays the same) with no samples; distill_dataset_class_size() reports 0
 * for it.  A root with a single class folder loads (one class).
 *
 * An image file that cannot be read, is empty, is neither PNG nor JPEG or
 * is not a valid one (or, with DISTILL_RESIZE_NONE, has the wrong size)
 * fails the whole load with a message naming the file, unless
 * opts->skip_bad is set: then it is skipped and counted as "bad".  Files
 * over 256 MiB, images over 16384 pixels on a side, and headers claiming
 * more pixels than the file's compressed data can hold (PNG: 1032 bytes
 * per byte of file; JPEG: 2048 pixels per byte) count as bad files,
 * refused before their pixels are allocated.
 * Samples are kept as bytes, C x H x W each: the decoded, converted and
 * resized image rounded to the nearest multiple of 1/255 (16-bit PNGs lose
 * their low bits).  When they would take more than opts->memory_limit
 * bytes the dataset is streamed: the first image is decoded at load (for
 * the size when none is given), the rest only when a loader builds a
 * batch, every epoch, on the loader's worker threads -- with the same
 * decoder, so a streamed dataset gives exactly the batches an in-memory one
 * gives.  A streamed file that has become unreadable or corrupt makes
 * distill_loader_next() or distill_dataset_get() fail with its name; with
 * skip_bad, every file is decoded once at load to find the bad ones.
 * opts NULL means DISTILL_FOLDER_OPTIONS_INIT.
 * Errors: DISTILL_ENOTFOUND (root missing or not a folder), DISTILL_EIO (a
 * file that cannot be read), DISTILL_EFORMAT (a bad image; no class
 * folder; no image at all), DISTILL_ECANCELLED (opts->progress asked to
 * stop), DISTILL_EINVAL, DISTILL_EVERSION, DISTILL_ENOMEM.
 * *out belongs to the caller.
 */
DISTILL_API int distill_dataset_from_folder(distill_dataset **out, const char *root,
                                            const distill_folder_options *opts);

/**
 * Load the images named by the list file at `list`, one image per line:
 *
 *     path,label          # CSV: split at the last comma
 *     path label          # or: split at the last run of spaces or tabs
 *
 * The first line that is not blank or a comment decides which of the two
 * the whole file is: CSV if it holds a comma.  A CSV file may start with
 * the header line "path,label" (any case), which is skipped.  Blank lines
 * and lines whose first non-blank character is '#' are ignored anywhere;
 * spaces and tabs around a field, a final '\r' (CRLF files) and one pair of
 * double quotes around a field are removed (there is no other quoting: a
 * path may hold spaces, and in a CSV file commas, since the split is at the
 * last separator).  A relative path is taken from the folder that holds
 * the list file; an absolute path as it is.
 *
 * Labels: when every label is a decimal number below 1,000,000 they are
 * the class numbers as given, and the classes are one more than the
 * largest (no class names).  Otherwise every label is a class name
 * ("3" too), and the classes are the distinct names numbered in strcmp()
 * order (distill_dataset_class_name gives them back).  Samples are in the
 * order of the lines.  Images are decoded as distill_dataset_from_folder()
 * decodes them, with the same options.
 *
 * A line naming an image that does not exist (or is not a regular file)
 * fails the load with DISTILL_ENOTFOUND, naming the list, the line and the
 * image; with opts->skip_bad it is skipped and counted as "bad", like a
 * file that cannot be decoded.  distill_dataset_skipped's not_png is 0.
 * Errors: DISTILL_ENOTFOUND (no list file; a missing image), DISTILL_EIO,
 * DISTILL_EFORMAT (a line without a label or a path, a NUL byte, no
 * entries, a bad image, no readable image), DISTILL_ECANCELLED,
 * DISTILL_EINVAL, DISTILL_EVERSION, DISTILL_ENOMEM.  *out belongs to the
 * caller; the list file is only read.
 */
DISTILL_API int distill_dataset_from_list(distill_dataset **out, const char *list,
                                          const distill_folder_options *opts);

/* ------------------------------------------------------ host memory */

/** How distill_dataset_from_memory*() treats the host's arrays. */
typedef enum distill_memory_mode {
    DISTILL_MEMORY_COPY = 0,  /**< copy images and labels; the host may free them at once */
    DISTILL_MEMORY_BORROW = 1 /**< use them in place: the host keeps them alive and
                                   unchanged until the dataset, every view of it and every
                                   loader over it are freed (loaders read them from their
                                   background thread) */
} distill_memory_mode;

/**
 * A dataset of n samples of shape dims = (C, H, W) from `images`, n * C * H
 * * W floats in sample-major, row-major order, used as given (normally in
 * [0, 1]).  `labels` (n values in [0, classes)) may be NULL for an
 * unlabelled dataset.  classes 0 means one more than the largest label;
 * without labels, classes is only recorded.  mode is a distill_memory_mode.
 * Errors: DISTILL_EINVAL (n < 1, bad dims, a label out of range), DISTILL_ENOMEM.
 * *out belongs to the caller.
 */
DISTILL_API int distill_dataset_from_memory(distill_dataset **out, int64_t n, const int64_t dims[3],
                                            const float *images, const int32_t *labels,
                                            int classes, int mode);

/** As distill_dataset_from_memory(), from unsigned bytes; a sample value is byte / 255. */
DISTILL_API int distill_dataset_from_memory_u8(distill_dataset **out, int64_t n,
                                               const int64_t dims[3], const uint8_t *images,
                                               const int32_t *labels, int classes, int mode);

/** Release the handle (and the shared store if it is the last holder).  Accepts NULL. */
DISTILL_API void distill_dataset_free(distill_dataset *ds);

/* ------------------------------------------------------------- views */

/**
 * A new dataset of samples start .. start+count-1 of ds (1 <= count,
 * start + count <= size), sharing ds's store.  *out belongs to the caller;
 * ds may be freed before it.
 */
DISTILL_API int distill_dataset_subset(distill_dataset **out, const distill_dataset *ds,
                                       int64_t start, int64_t count);

/**
 * A new dataset of samples indices[0], ..., indices[count-1] of ds (count
 * >= 1; each index in [0, size); repeats allowed), sharing ds's store.
 * *out belongs to the caller.
 */
DISTILL_API int distill_dataset_select(distill_dataset **out, const distill_dataset *ds,
                                       const int64_t *indices, int64_t count);

/**
 * Split ds at random into a training part and a validation part of
 * val_count samples (1 <= val_count < size).  The validation samples are
 * the first val_count of a Fisher-Yates shuffle seeded with `seed`; both
 * parts keep ds's relative order.  Same seed, same split.  Both results
 * share ds's store and belong to the caller; on failure both are NULL.
 */
DISTILL_API int distill_dataset_split(distill_dataset **train_out, distill_dataset **val_out,
                                      const distill_dataset *ds, int64_t val_count,
                                      uint64_t seed);

/**
 * Make this handle unlabelled (distillation from teacher outputs only).
 * Other handles sharing the store, and loaders already created from this
 * handle, keep their labels.  Class count and names stay queryable.
 */
DISTILL_API int distill_dataset_drop_labels(distill_dataset *ds);

/* ----------------------------------------------------------- queries */

/** Number of samples; 0 for NULL. */
DISTILL_API int64_t distill_dataset_size(const distill_dataset *ds);

/** Per-sample shape: dims[0] = C, dims[1] = H, dims[2] = W. */
DISTILL_API int distill_dataset_sample_dims(const distill_dataset *ds, int64_t dims[3]);

/** 1 if this handle has labels, 0 if not (or ds is NULL). */
DISTILL_API int distill_dataset_has_labels(const distill_dataset *ds);

/**
 * Number of classes: as given or found at load, the number of class folders,
 * 10 for Fashion-MNIST; kept after distill_dataset_drop_labels().  0 when
 * the source had no labels and no class count was given.
 */
DISTILL_API int distill_dataset_num_classes(const distill_dataset *ds);

/**
 * Name of class k (the folder name; Fashion-MNIST's names), borrowed, valid
 * as long as ds.  NULL when the source has no names or k is out of range.
 */
DISTILL_API const char *distill_dataset_class_name(const distill_dataset *ds, int k);

/** Number of samples of this handle labelled k; 0 for an unlabelled handle. */
DISTILL_API int64_t distill_dataset_class_size(const distill_dataset *ds, int k);

/**
 * Files the folder or list load that made ds's store skipped: *not_png
 * (entries that are not image files in class folders, or not folders in
 * root) and *bad (with skip_bad: unreadable, missing or corrupt image
 * files, or of the wrong size with DISTILL_RESIZE_NONE).  Either pointer may
 * be NULL.  Returns the sum; 0 for other sources.  Views report their
 * store's load.
 */
DISTILL_API int64_t distill_dataset_skipped(const distill_dataset *ds, int64_t *not_png,
                                            int64_t *bad);

/**
 * Copy sample i (0 <= i < size) into `image`, `count` = C * H * W floats,
 * (C, H, W) row-major, not normalized.  If label is not NULL it receives the
 * label, or -1 when the handle is unlabelled.  A streamed sample is decoded
 * from its file.
 * Errors: DISTILL_EINVAL (bad index or NULL), DISTILL_ESHAPE (count), and
 * for a streamed sample the file's (DISTILL_EIO, DISTILL_EFORMAT, ...).
 */
DISTILL_API int distill_dataset_get(const distill_dataset *ds, int64_t i, float *image,
                                    size_t count, int32_t *label);

/** Bytes distill_dataset_fingerprint() writes, the final NUL included. */
#define DISTILL_FINGERPRINT_SIZE 25

/**
 * A fingerprint of the data of ds, for a model's provenance: "fnv1a64:"
 * and 16 lowercase hex digits of the 64-bit FNV-1a hash of, in this order,
 * the sample count, the per-sample shape (C, H, W), the class count,
 * whether the handle is labelled, every class name, every label of the
 * handle (in its order), and the values of 16 samples spread evenly over
 * it (samples k * n / 16 for k < 16, all of them when n < 16, as
 * distill_dataset_get() returns them, each float's bits little-endian).
 * The same data gives the same fingerprint on every machine; a different
 * count, shape, class list or labelling, or a change in one of those 16
 * samples, gives another (a change elsewhere in the pixels is not seen).
 * A streamed dataset decodes those samples from their files.  `buf` must
 * hold DISTILL_FINGERPRINT_SIZE bytes.
 * Errors: DISTILL_EINVAL (NULL, size too small), DISTILL_ENOMEM, and for a
 * streamed dataset those of distill_dataset_get().
 */
DISTILL_API int distill_dataset_fingerprint(const distill_dataset *ds, char *buf, size_t size);

/* ------------------------------------------------------------ loader */

#define DISTILL_LOADER_OPTIONS_VERSION DISTILL_STRUCT_VERSION(distill_loader_options, workers)

typedef struct distill_loader_options {
    unsigned int version; /**< DISTILL_LOADER_OPTIONS_VERSION */
    int batch_size;       /**< samples per batch, >= 1; 128 */
    int shuffle;          /**< nonzero: a new random order each epoch; 1 */
    int drop_last;        /**< nonzero: skip the last batch of an epoch if it is partial; 0 */
    uint64_t seed;        /**< drives shuffling and augmentation; 0 */
    /** Normalization: out = (value - mean[c]) / std[c].  norm_count 0 = none;
     *  1 = mean[0], std[0] for every channel; C = one pair per channel.
     *  The arrays are copied by distill_loader_create().  0, NULL, NULL. */
    int norm_count;
    const float *mean;
    const float *std;
    /** Random crop: pad P pixels on each side and take the H x W window at
     *  offsets ox, oy drawn uniformly from [0, 2P].  0 = no crop; 0. */
    int crop_padding;
    /** Nonzero: flip the (cropped) image left-right with probability 0.5; 0. */
    int hflip;
    /** Value of padded pixels in the output, i.e. AFTER normalization.  0
     *  pads with zeros in normalized space (the mean colour), as a PyTorch
     *  pipeline that normalizes before it pads does; -mean/std pads with
     *  black pixels instead.  0. */
    float pad_value;
    /** Nonzero: a background thread prepares the next batch while the host
     *  works on this one.  Batches are identical with or without.  1 */
    int prefetch;
    /*
     * Transforms named as torchvision names them.  They run in this order,
     * each one optional: Resize -> CenterCrop -> RandomResizedCrop ->
     * pad-and-crop (crop_padding) -> RandomHorizontalFlip (hflip) ->
     * Normalize, on the stored sample's values in [0, 1] (8-bit samples are
     * converted, and normalized, in the same pass).  Interpolation is
     * bilinear with half-pixel centres and no antialiasing, computed in
     * float without rounding in between: torchvision's functions on a float
     * tensor with antialias=False (PyTorch's interpolate, align_corners=False).
     * The batch's (H, W) is the size the last one gives
     * (distill_loader_sample_dims).  Random draws come from the generator of
     * (seed, epoch, position), so they repeat exactly.
     */
    /** Resize: the shorter side becomes `resize` pixels and the longer one
     *  floor(resize * long / short), as torchvision's Resize(int).  0 = off; 0. */
    int resize;
    /** CenterCrop {H, W}: the centred window, top = round((h - H) / 2) with
     *  ties to even as torchvision computes it; a smaller image is padded
     *  with zeros (black, before normalization).  {0, 0} = off. */
    int center_crop[2];
    /** RandomResizedCrop {H, W}: a box of area scale x (h * w) and aspect
     *  ratio (w / h) `ratio` drawn as torchvision draws it (10 attempts,
     *  log-uniform ratio, then the centred box clamped to the ratio range),
     *  resized to H x W.  {0, 0} = off. */
    int random_resized_crop[2];
    float rrc_scale[2];   /**< area fraction range, 0 < min <= max <= 1; {0, 0} = {0.08, 1} */
    float rrc_ratio[2];   /**< aspect ratio range, 0 < min <= max; {0, 0} = {3/4, 4/3} */
    /** Background threads that build batches: they decode, transform and
     *  normalize the samples of the batch being asked for and, with
     *  prefetch, of the next one.  0 = one thread with prefetch, none
     *  without (the calling thread builds the batches); at most 64.
     *  Batches are identical for every count.  0 */
    int workers;
} distill_loader_options;

#define DISTILL_LOADER_OPTIONS_INIT                                                        \
    {DISTILL_LOADER_OPTIONS_VERSION, 128, 1, 0, 0, 0, NULL, NULL, 0, 0, 0.0f, 1, 0, {0, 0}, \
     {0, 0}, {0.0f, 0.0f}, {0.0f, 0.0f}, 0}

/** Fill *opts with DISTILL_LOADER_OPTIONS_INIT.  DISTILL_EVERSION for an unknown version. */
DISTILL_API int distill_loader_options_init(distill_loader_options *opts, unsigned int version);

/**
 * Create a loader over ds, at epoch 0, position 0.  The loader takes its
 * own reference to ds's samples and a snapshot of its labelling, so ds may
 * be freed (or have its labels dropped) right after; a borrowed host buffer
 * must stay alive until the loader is freed.  opts NULL means
 * DISTILL_LOADER_OPTIONS_INIT.
 * Errors: DISTILL_EINVAL (batch_size < 1, norm_count not 0, 1 or C, a std
 * <= 0 or not finite, crop_padding < 0 or > 65535, drop_last with fewer
 * samples than one batch, a transform size < 0 or > 65535 or given for
 * one side only, a scale or ratio range out of bounds, workers < 0 or
 * > 64), DISTILL_EVERSION, DISTILL_ENOMEM (also when a thread cannot be
 * started).  *out belongs to the caller.
 */
DISTILL_API int distill_loader_create(distill_loader **out, const distill_dataset *ds,
                                      const distill_loader_options *opts);

/**
 * Stop and join the loader's threads and free the loader.  Accepts NULL.
 */
DISTILL_API void distill_loader_free(distill_loader *ld);

/**
 * Fill the next batch of the current epoch.  On DISTILL_OK with *count > 0,
 * `images` has been reshaped to (count, C, H, W) and holds the batch
 * (normalized and augmented); `labels`, if not NULL, holds count labels (it
 * must have room for batch_size), -1 each when the data is unlabelled.
 * count is batch_size except for a last partial batch (never with
 * drop_last).  A tensor made once at (batch_size, C, H, W) is never
 * reallocated.
 *
 * End of epoch: when the epoch has no batch left, the call returns
 * DISTILL_OK with *count = 0, leaves images and labels untouched, and moves
 * to the start of the next epoch, so the following call returns its first
 * batch.
 * Errors: DISTILL_EINVAL (NULL loader, images or count), DISTILL_ENOMEM
 * (reshaping images), and a streamed file's error (DISTILL_EIO,
 * DISTILL_EFORMAT, ..., naming the file); the position does not move on
 * error.
 */
DISTILL_API int distill_loader_next(distill_loader *ld, distill_tensor *images, int32_t *labels,
                                    int *count);

/**
 * The per-sample shape of the loader's batches: dims[0] = C, dims[1] = H,
 * dims[2] = W, after the transforms (the dataset's shape without them).
 * Errors: DISTILL_EINVAL (NULL).
 */
DISTILL_API int distill_loader_sample_dims(const distill_loader *ld, int64_t dims[3]);

/** Batches per epoch (counting a partial last batch unless drop_last); 0 for NULL. */
DISTILL_API int64_t distill_loader_num_batches(const distill_loader *ld);

/**
 * The position: the epoch, and the index within the epoch's order of the
 * next sample to be returned.  Save both in a checkpoint; setting them back
 * resumes exactly.  Either pointer may be NULL.
 */
DISTILL_API int distill_loader_get_state(const distill_loader *ld, uint64_t *epoch,
                                         uint64_t *position);

/**
 * Move to `position` (0..size) of `epoch`; that epoch's order is
 * regenerated from the seed.  A batch being prefetched for another position
 * is discarded.  Errors: DISTILL_EINVAL (position > size).
 */
DISTILL_API int distill_loader_set_state(distill_loader *ld, uint64_t epoch, uint64_t position);

/** Move to the start of `epoch`: distill_loader_set_state(ld, epoch, 0). */
DISTILL_API int distill_loader_set_epoch(distill_loader *ld, uint64_t epoch);

/** Move back to the very start: distill_loader_set_state(ld, 0, 0). */
DISTILL_API int distill_loader_reset(distill_loader *ld);

#ifdef __cplusplus
}
#endif

#endif /* DISTILL_DATA_H */

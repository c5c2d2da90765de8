/*
 * fuzz_idx.c - the IDX reader: distill_dataset_from_idx() on any files,
 * raw or gzip compressed.
 *
 * The reader takes paths, so the input is split into an images file and
 * an optional labels file, written to scratch files:
 *
 *     byte 0      flags: bit 0  a labels file is given
 *                        bit 1  gzip the images part before writing it
 *                        bit 2  gzip the labels part before writing it
 *                        bits 3..7  the `classes` argument (0..31)
 *     bytes 1..3  L, the labels part's length (little-endian, cut to what
 *                 is left)
 *     L bytes     the labels file
 *     the rest    the images file
 *
 * Inputs shorter than 4 bytes are an images file as they are.  Compressing
 * in the target lets the mutations explore the IDX headers behind a valid
 * gzip stream; a part that is itself gzip (the seeds hold real .gz files)
 * exercises the decompressor on corrupt streams.
 *
 * Promised (include/distill/data.h): every failure is a status with a
 * message, never a crash, and *out is NULL; a dataset that loads has 1 x
 * rows x cols samples with values in [0, 1] and labels below its class
 * count.
 */
#include <zlib.h>

#include "fuzz_common.h"

static char images_path[600], labels_path[600];

/* Write `size` bytes to `path`, gzip-compressed if `gz`. */
static void put(const char *path, const uint8_t *data, size_t size, int gz)
{
    if (!gz) {
        fz_write_file(path, data, size);
        return;
    }
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        exit(2);
    size_t cap = deflateBound(&z, (uLong)size) + 64;
    unsigned char *out = malloc(cap);
    if (!out)
        exit(2);
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)size;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        exit(2);
    fz_write_file(path, out, cap - z.avail_out);
    deflateEnd(&z);
    free(out);
}

static void check_dataset(distill_dataset *ds, int has_labels, int classes_arg)
{
    int64_t n = distill_dataset_size(ds);
    fz_check(n >= 1, "a loaded IDX dataset is not empty");
    int64_t dims[3];
    fz_check(distill_dataset_sample_dims(ds, dims) == DISTILL_OK, "sample dims");
    fz_check(dims[0] == 1 && dims[1] >= 1 && dims[2] >= 1, "IDX samples are (1, rows, cols)");
    fz_check(distill_dataset_has_labels(ds) == has_labels, "labelled iff a labels file was given");
    int classes = distill_dataset_num_classes(ds);
    if (has_labels && classes_arg > 0)
        fz_check(classes == classes_arg, "the class count given is kept");
    size_t count = (size_t)(dims[1] * dims[2]);
    float *img = malloc(count * sizeof *img);
    if (!img)
        return;
    int64_t which[2] = {0, n - 1};
    for (int k = 0; k < 2; k++) {
        int32_t label = -2;
        fz_check(distill_dataset_get(ds, which[k], img, count, &label) == DISTILL_OK,
                 "reading a sample");
        for (size_t i = 0; i < count; i++)
            fz_check(img[i] >= 0.0f && img[i] <= 1.0f, "IDX values are in [0, 1]");
        if (has_labels)
            fz_check(label >= 0 && label < classes, "labels are below the class count");
        else
            fz_check(label == -1, "an unlabelled sample's label is -1");
    }
    free(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!images_path[0]) {
        snprintf(images_path, sizeof images_path, "%s/images", fz_dir());
        snprintf(labels_path, sizeof labels_path, "%s/labels", fz_dir());
    }
    unsigned flags = 0;
    size_t lab_len = 0;
    const uint8_t *lab = NULL, *img = data;
    size_t img_len = size;
    if (size >= 4) {
        flags = data[0];
        lab_len = (size_t)data[1] | (size_t)data[2] << 8 | (size_t)data[3] << 16;
        if (lab_len > size - 4)
            lab_len = size - 4;
        lab = data + 4;
        img = lab + lab_len;
        img_len = size - 4 - lab_len;
    }
    int has_labels = flags & 1;
    int classes = (int)(flags >> 3);
    put(images_path, img, img_len, (flags >> 1) & 1);
    if (has_labels)
        put(labels_path, lab, lab_len, (flags >> 2) & 1);

    distill_dataset *ds = (distill_dataset *)&ds; /* must be overwritten */
    int rc = distill_dataset_from_idx(&ds, images_path, has_labels ? labels_path : NULL, classes);
    if (rc != DISTILL_OK) {
        fz_check(ds == NULL, "*out is NULL after a failed load");
        fz_check(rc == DISTILL_EFORMAT || rc == DISTILL_ENOMEM || rc == DISTILL_EIO,
                 "a bad IDX file gives DISTILL_EFORMAT");
        fz_check_error_set(rc);
        return 0;
    }
    check_dataset(ds, has_labels, classes);
    distill_dataset_free(ds);
    return 0;
}

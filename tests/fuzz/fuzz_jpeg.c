/*
 * fuzz_jpeg.c - the JPEG decoder of the folder reader: the input is written
 * to <scratch>/root/c/x.jpg and loaded with distill_dataset_from_folder().
 * The file is decoded by its magic bytes, so inputs that mutate into a PNG
 * reach libpng instead, and anything else the "not a PNG or JPEG" path.
 *
 * The options come from the input's size, so that every seed and mutation
 * is tried under several of them:
 *
 *     size % 2          channels 3 or 1
 *     (size / 2) % 3    resize bilinear, centre crop, none
 *     (size / 6) % 2    height and width 0 (the image's own) or 8 x 8
 *     (size / 12) % 2   skip_bad off or on
 *
 * Promised (include/distill/data.h): a bad JPEG is DISTILL_EFORMAT (or
 * DISTILL_ENOMEM) with a message naming the file, never a crash, never a
 * print, never an exit; with skip_bad it is counted and the load fails only
 * because no image is left.  A load that succeeds has one sample, of the
 * requested size, with values in [0, 1].
 */
#include "fuzz_common.h"

static char root[600], file[700];

static void try_load(const uint8_t *data, size_t size)
{
    fz_write_file(file, data, size);
    distill_folder_options o;
    distill_folder_options_init(&o, DISTILL_FOLDER_OPTIONS_VERSION);
    o.channels = size % 2 ? 1 : 3;
    o.resize = (int)((size / 2) % 3);
    if ((size / 6) % 2)
        o.height = o.width = 8;
    o.skip_bad = (int)((size / 12) % 2);

    distill_dataset *ds = (distill_dataset *)&ds; /* must be overwritten */
    int rc = distill_dataset_from_folder(&ds, root, &o);
    if (rc != DISTILL_OK) {
        fz_check(ds == NULL, "*out is NULL after a failed load");
        fz_check(rc == DISTILL_EFORMAT || rc == DISTILL_ENOMEM,
                 "a bad JPEG gives DISTILL_EFORMAT");
        fz_check_error_set(rc);
        if (rc == DISTILL_EFORMAT)
            fz_check(strstr(distill_last_error(), o.skip_bad ? "/root'" : "x.jpg") != NULL,
                     "the message names the file (or, with skip_bad, the folder)");
        return;
    }
    fz_check(distill_dataset_size(ds) == 1, "one image, one sample");
    int64_t bad = -1;
    distill_dataset_skipped(ds, NULL, &bad);
    fz_check(bad == 0, "a sample that loaded was not skipped");
    int64_t dims[3];
    fz_check(distill_dataset_sample_dims(ds, dims) == DISTILL_OK, "sample dims");
    fz_check(dims[0] == o.channels, "the requested channels");
    if (o.height)
        fz_check(dims[1] == o.height && dims[2] == o.width, "the requested size");
    size_t count = (size_t)(dims[0] * dims[1] * dims[2]);
    float *img = malloc(count * sizeof *img);
    if (img) {
        int32_t label = -1;
        fz_check(distill_dataset_get(ds, 0, img, count, &label) == DISTILL_OK, "reading a sample");
        fz_check(label == 0, "the only class is class 0");
        for (size_t i = 0; i < count; i++)
            fz_check(img[i] >= 0.0f && img[i] <= 1.0f + 1e-5f, "pixel values are in [0, 1]");
        free(img);
    }
    distill_dataset_free(ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!root[0]) {
        snprintf(root, sizeof root, "%s/root", fz_dir());
        char cls[650];
        snprintf(cls, sizeof cls, "%s/c", root);
        if (mkdir(root, 0755) != 0 || mkdir(cls, 0755) != 0) {
            perror("fuzz_jpeg: mkdir");
            exit(2);
        }
        snprintf(file, sizeof file, "%s/x.jpg", cls);
    }
    try_load(data, size);
    return 0;
}

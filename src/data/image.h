/*
 * image.h - decoding one image file into bytes, for the folder and list
 * readers (folder.c).  Internal.
 *
 * image_decode() looks at the file's first bytes, not at its name: the PNG
 * signature (89 50 4E 47 0D 0A 1A 0A) goes to libpng (image_png.c), the
 * JPEG start of image (FF D8 FF) to libjpeg-turbo (image_jpeg.c).  Both
 * give an `image`: rows of interleaved samples (HWC), gray or RGB.
 * image_name_is_image() only chooses which directory entries are looked at.
 */
#ifndef DISTILL_DATA_IMAGE_H
#define DISTILL_DATA_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Limits shared by the decoders: a file is read whole, and no side may
 * exceed IMAGE_MAX_SIDE pixels. */
#define IMAGE_MAX_FILE ((size_t)1 << 28) /* 256 MiB per file */
#define IMAGE_MAX_SIDE 16384u

/* One decoded image: h rows of `rowbytes` bytes, each w * channels samples
 * of `depth` bits (8, or 16 as big-endian pairs: 16-bit PNGs only),
 * channels 1 (gray) or 3 (RGB), no alpha.  pixels is xmalloc'd and belongs
 * to whoever holds the image (image_free). */
typedef struct image {
    uint32_t w, h;
    int channels, depth;
    size_t rowbytes;
    unsigned char *pixels; /* (h, w, channels) */
} image;

/* Decode the `size` bytes at `file` into *out, choosing the decoder by the
 * magic bytes.  `path` names the file in messages.  On failure *out holds
 * nothing (pixels NULL) and the status is DISTILL_EFORMAT (empty, unknown
 * signature, corrupt, truncated, too large, unsupported colour space) or
 * DISTILL_ENOMEM, with a message naming `path`. */
int image_decode(const unsigned char *file, size_t size, const char *path, image *out);

/* image_decode() of the file at `path`, read whole: also DISTILL_EIO and
 * DISTILL_ENOTFOUND from reading it. */
int image_read_file(const char *path, image *out);

/* The two decoders, for image_decode() and the tests; the same contract. */
int image_png_decode(const unsigned char *file, size_t size, const char *path, image *out);
int image_jpeg_decode(const unsigned char *file, size_t size, const char *path, image *out);

/* Release out->pixels and clear *out.  Accepts NULL. */
void image_free(image *img);

/* Nonzero when `name` ends in an image extension, in any case: .png, .jpg,
 * .jpeg, .jpe, .jfif. */
int image_name_is_image(const char *name);

#endif /* DISTILL_DATA_IMAGE_H */

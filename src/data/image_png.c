/*
 * image_png.c - PNG files decoded from memory by libpng (see image.h).
 *
 * libpng's errors arrive by longjmp: everything a decode allocates hangs
 * off a `pngdec` that outlives the setjmp frame, so the error path frees it
 * all.  libpng allocates through xmalloc/xfree and never prints (its
 * warnings are dropped, its errors become the message of the failed call).
 */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include "data/image.h"
#include "util/util.h"

/* deflate never expands data more than 1032:1 */
#define DEFLATE_MAX_RATIO 1032u
#define PNG_SLACK 4096u

typedef struct pngdec {
    const unsigned char *file; /* the encoded file */
    size_t size, pos;
    unsigned char *pixels;
    png_bytep *rows;
    int oom;
    char msg[200];
} pngdec;

static void png_on_error(png_structp png, png_const_charp msg)
{
    pngdec *d = png_get_error_ptr(png);
    snprintf(d->msg, sizeof d->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static png_voidp png_on_malloc(png_structp png, png_alloc_size_t size)
{
    void *p = xmalloc(size);
    if (!p) {
        pngdec *d = png_get_error_ptr(png);
        if (d)
            d->oom = 1;
    }
    return p;
}

static void png_on_free(png_structp png, png_voidp p)
{
    (void)png;
    xfree(p);
}

static void png_on_read(png_structp png, png_bytep out, size_t len)
{
    pngdec *d = png_get_io_ptr(png);
    if (len > d->size - d->pos)
        png_error(png, "file ends early (truncated)");
    memcpy(out, d->file + d->pos, len);
    d->pos += len;
}

/* Decode into img (gray or RGB, 8 or 16 bits).  On failure nothing stays
 * allocated and the error is set, naming `path`. */
int image_png_decode(const unsigned char *file, size_t size, const char *path, image *img)
{
    memset(img, 0, sizeof *img);
    if (size < 8 || png_sig_cmp(file, 0, 8) != 0)
        return seterr(DISTILL_EFORMAT, "PNG '%s': not a PNG file (bad signature)", path);
    pngdec dec, *d = &dec;
    memset(d, 0, sizeof *d);
    d->file = file;
    d->size = size;
    png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, d, png_on_error,
                                               png_on_warning, d, png_on_malloc, png_on_free);
    if (!png)
        return seterr(DISTILL_ENOMEM, "PNG '%s': cannot create a libpng reader", path);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return seterr(DISTILL_ENOMEM, "PNG '%s': cannot create a libpng reader", path);
    }
    /* png and info are not modified after this point, so they keep their
     * values after a longjmp; everything else lives in *d and *img. */
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        xfree(d->rows);
        xfree(d->pixels);
        memset(img, 0, sizeof *img);
        if (d->oom)
            return seterr(DISTILL_ENOMEM, "PNG '%s': out of memory", path);
        return seterr(DISTILL_EFORMAT, "PNG '%s': %s", path, d->msg);
    }
    png_set_user_limits(png, IMAGE_MAX_SIDE, IMAGE_MAX_SIDE);
    png_set_read_fn(png, d, png_on_read);
    png_read_info(png, info);

    uint32_t w = png_get_image_width(png, info);
    uint32_t h = png_get_image_height(png, info);
    /* The encoded rows cannot be more than deflate's ratio times the file:
     * refuse a header that claims more before allocating for it. */
    if ((uint64_t)png_get_rowbytes(png, info) * h / DEFLATE_MAX_RATIO > d->size + PNG_SLACK)
        png_error(png, "header claims more pixels than the file can hold");

    int color = png_get_color_type(png, info);
    int depth = png_get_bit_depth(png, info);
    if (color == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    /* Drops an alpha channel, including one that palette expansion makes
     * from a tRNS chunk; does nothing to images without one. */
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    img->w = w;
    img->h = h;
    img->channels = png_get_channels(png, info);
    img->depth = png_get_bit_depth(png, info);
    img->rowbytes = png_get_rowbytes(png, info);
    if ((img->channels != 1 && img->channels != 3) || (img->depth != 8 && img->depth != 16))
        png_error(png, "unexpected layout after conversion");
    d->pixels = xmalloc(img->rowbytes * h); /* <= 16384 * 16384 * 6 bytes: no overflow */
    d->rows = xmalloc(h * sizeof *d->rows);
    if (!d->pixels || !d->rows) {
        d->oom = 1;
        png_error(png, "out of memory");
    }
    for (uint32_t y = 0; y < h; y++)
        d->rows[y] = d->pixels + (size_t)y * img->rowbytes;
    png_read_image(png, d->rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    xfree(d->rows);
    img->pixels = d->pixels;
    return DISTILL_OK;
}

/*
 * image_jpeg.c - JPEG files decoded from memory by libjpeg-turbo through the
 * libjpeg API (jpeg_mem_src), see image.h.
 *
 * Baseline, extended and progressive (Huffman or arithmetic coded) files,
 * with 1 component (gray) or 3 (YCbCr or RGB, given as RGB).  CMYK and
 * YCCK files are refused.  The EXIF orientation tag (APP1 "Exif", IFD0 tag
 * 0x0112) is applied, so the image comes out the way a viewer shows it.
 *
 * libjpeg reports errors through error_exit, which here longjmps back to
 * image_jpeg_decode (libjpeg's default would print and exit); its messages
 * are formatted into the decoder's buffer, never printed (output_message
 * does nothing).  Warnings (emit_message at level -1) mean damaged data -
 * a truncated file, a bad Huffman code - and fail the decode too, except
 * JWRN_EXTRANEOUS_DATA (stray bytes between markers, which many cameras
 * write and every decoder skips).  Before anything is allocated for the
 * pixels the header is checked: no side over IMAGE_MAX_SIDE, and no more
 * pixels than JPEG_PIXELS_PER_BYTE per byte of file.  A Huffman-coded scan
 * spends at least one bit per 8 x 8 block of a component, and a component
 * covers at least 1/16 of the image's pixels per block (sampling factors
 * are at most 4), so a real file cannot hold more: a header lying about
 * its size is refused without an allocation of the size it claims.
 * libjpeg's own working memory comes from its memory manager (malloc), not
 * from xmalloc; it is bounded by the same check.  Progressive files are
 * limited to JPEG_MAX_SCANS scans, so a file of many empty scans cannot
 * keep the decoder busy for long.
 */
#include <setjmp.h>
#include <stdio.h> /* jpeglib.h needs FILE and size_t */
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#include "data/image.h"
#include "util/util.h"

#define JPEG_PIXELS_PER_BYTE 2048u /* 64 pixels x 4 x 8 bits: see above */
#define JPEG_SLACK_PIXELS 65536u
#define JPEG_MAX_SCANS 1000

typedef struct jpegdec {
    struct jpeg_error_mgr err;
    struct jpeg_progress_mgr progress;
    jmp_buf jump;
    unsigned char *pixels;
    int oom; /* libjpeg's own allocation failed */
    char msg[JMSG_LENGTH_MAX + 64];
} jpegdec;

/* libjpeg's error_exit: keep the message, go back to the decode call. */
static void jpeg_on_error(j_common_ptr ci)
{
    jpegdec *d = (jpegdec *)ci->err;
    ci->err->format_message(ci, d->msg);
    d->oom = ci->err->msg_code == JERR_OUT_OF_MEMORY;
    longjmp(d->jump, 1);
}

/* Warnings are damaged data (but stray bytes between markers); trace
 * messages (level >= 0) are ignored. */
static void jpeg_on_emit(j_common_ptr ci, int level)
{
    if (level >= 0 || ci->err->msg_code == JWRN_EXTRANEOUS_DATA)
        return;
    jpeg_on_error(ci);
}

static void jpeg_on_output(j_common_ptr ci)
{
    (void)ci; /* the library never prints */
}

static void jpeg_on_progress(j_common_ptr ci)
{
    if (!ci->is_decompressor)
        return;
    j_decompress_ptr di = (j_decompress_ptr)ci;
    if (di->input_scan_number > JPEG_MAX_SCANS) {
        jpegdec *d = (jpegdec *)ci->err;
        snprintf(d->msg, sizeof d->msg, "more than %d scans", JPEG_MAX_SCANS);
        longjmp(d->jump, 1);
    }
}

/* ------------------------------------------------------------- EXIF */

static unsigned rd16(const unsigned char *p, int le)
{
    return le ? (unsigned)(p[0] | p[1] << 8) : (unsigned)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const unsigned char *p, int le)
{
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The orientation (1..8) of the first APP1 Exif segment, 1 when there is
 * none or it cannot be read.  Every offset is checked against the
 * segment's length. */
static int exif_orientation(j_decompress_ptr ci)
{
    for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next) {
        if (m->marker != JPEG_APP0 + 1 || m->data_length < 6 + 8 ||
            memcmp(m->data, "Exif\0\0", 6) != 0)
            continue;
        const unsigned char *t = m->data + 6; /* the TIFF header */
        size_t n = m->data_length - 6;
        int le;
        if (t[0] == 'I' && t[1] == 'I')
            le = 1;
        else if (t[0] == 'M' && t[1] == 'M')
            le = 0;
        else
            return 1;
        if (rd16(t + 2, le) != 42)
            return 1;
        uint32_t ifd = rd32(t + 4, le);
        if (ifd < 8 || ifd > n - 2)
            return 1;
        unsigned count = rd16(t + ifd, le);
        for (unsigned i = 0; i < count; i++) {
            size_t at = (size_t)ifd + 2 + (size_t)12 * i;
            if (at + 12 > n)
                break;
            if (rd16(t + at, le) != 0x0112)
                continue;
            unsigned type = rd16(t + at + 2, le), v = rd16(t + at + 8, le);
            if (type != 3 || rd32(t + at + 4, le) != 1 || v < 1 || v > 8)
                return 1;
            return (int)v;
        }
        return 1;
    }
    return 1;
}

/* The image as EXIF orientation `o` says it is shown: output pixel (x, y)
 * of the shown image comes from stored pixel (sx, sy).  Orientations 5..8
 * swap width and height.  Returns a status (DISTILL_ENOMEM). */
static int apply_orientation(image *img, int o, const char *path)
{
    if (o <= 1)
        return DISTILL_OK;
    const size_t ch = (size_t)img->channels;
    const uint32_t w = img->w, h = img->h;
    const int swap = o >= 5;
    const uint32_t ow = swap ? h : w, oh = swap ? w : h;
    unsigned char *dst = xmalloc((size_t)ow * oh * ch);
    if (!dst)
        return seterr(DISTILL_ENOMEM, "JPEG '%s': out of memory", path);
    for (uint32_t y = 0; y < oh; y++)
        for (uint32_t x = 0; x < ow; x++) {
            uint32_t sx, sy;
            switch (o) {
            case 2: sx = w - 1 - x; sy = y; break;              /* mirrored */
            case 3: sx = w - 1 - x; sy = h - 1 - y; break;      /* rotated 180 */
            case 4: sx = x; sy = h - 1 - y; break;              /* flipped */
            case 5: sx = y; sy = x; break;                      /* transposed */
            case 6: sx = y; sy = h - 1 - x; break;              /* turn 90 clockwise */
            case 7: sx = w - 1 - y; sy = h - 1 - x; break;      /* transversed */
            default: sx = w - 1 - y; sy = x; break;             /* 8: turn 90 anticlockwise */
            }
            memcpy(dst + ((size_t)y * ow + x) * ch, img->pixels + ((size_t)sy * w + sx) * ch, ch);
        }
    xfree(img->pixels);
    img->pixels = dst;
    img->w = ow;
    img->h = oh;
    img->rowbytes = (size_t)ow * ch;
    return DISTILL_OK;
}

/* ----------------------------------------------------------- decode */

int image_jpeg_decode(const unsigned char *file, size_t size, const char *path, image *img)
{
    memset(img, 0, sizeof *img);
    if (size < 3 || file[0] != 0xFF || file[1] != 0xD8 || file[2] != 0xFF)
        return seterr(DISTILL_EFORMAT, "JPEG '%s': not a JPEG file (no start-of-image marker)",
                      path);
    struct jpeg_decompress_struct ci;
    jpegdec dec;
    memset(&dec, 0, sizeof dec);
    ci.err = jpeg_std_error(&dec.err);
    dec.err.error_exit = jpeg_on_error;
    dec.err.emit_message = jpeg_on_emit;
    dec.err.output_message = jpeg_on_output;
    /* ci is not modified by this function after setjmp, only through
     * pointers, and dec.pixels lives in memory: both survive a longjmp. */
    if (setjmp(dec.jump)) {
        jpeg_destroy_decompress(&ci);
        xfree(dec.pixels);
        memset(img, 0, sizeof *img);
        return seterr(dec.oom ? DISTILL_ENOMEM : DISTILL_EFORMAT, "JPEG '%s': %s", path,
                      dec.msg);
    }
    jpeg_create_decompress(&ci);
    dec.progress.progress_monitor = jpeg_on_progress;
    ci.progress = &dec.progress;
    jpeg_mem_src(&ci, (unsigned char *)file, (unsigned long)size);
    jpeg_save_markers(&ci, JPEG_APP0 + 1, 0xFFFF);
    if (jpeg_read_header(&ci, TRUE) != JPEG_HEADER_OK) {
        snprintf(dec.msg, sizeof dec.msg, "no image in it (tables only)");
        longjmp(dec.jump, 1);
    }
    uint32_t w = ci.image_width, h = ci.image_height;
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE) {
        snprintf(dec.msg, sizeof dec.msg, "%u x %u pixels; at most %u on a side", (unsigned)w,
                 (unsigned)h, IMAGE_MAX_SIDE);
        longjmp(dec.jump, 1);
    }
    if ((uint64_t)w * h > (uint64_t)size * JPEG_PIXELS_PER_BYTE + JPEG_SLACK_PIXELS) {
        snprintf(dec.msg, sizeof dec.msg,
                 "header claims %u x %u pixels, more than a file of %zu bytes can hold",
                 (unsigned)w, (unsigned)h, size);
        longjmp(dec.jump, 1);
    }
    switch (ci.jpeg_color_space) {
    case JCS_GRAYSCALE:
        ci.out_color_space = JCS_GRAYSCALE;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        ci.out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        snprintf(dec.msg, sizeof dec.msg,
                 "%s colour space is not supported (convert the file to RGB)",
                 ci.jpeg_color_space == JCS_CMYK ? "CMYK" : "YCCK");
        longjmp(dec.jump, 1);
    default:
        snprintf(dec.msg, sizeof dec.msg, "%d components of an unknown colour space",
                 ci.num_components);
        longjmp(dec.jump, 1);
    }
    /* The same bytes on every machine: libjpeg-turbo's SIMD code for the
     * integer DCT and fancy upsampling matches its C code exactly. */
    ci.dct_method = JDCT_ISLOW;
    ci.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&ci);
    int ch = ci.output_components;
    if ((ch != 1 && ch != 3) || ci.output_width != w || ci.output_height != h) {
        snprintf(dec.msg, sizeof dec.msg, "unexpected layout after decoding");
        longjmp(dec.jump, 1);
    }
    size_t rowbytes = (size_t)w * (size_t)ch;
    dec.pixels = xmalloc(rowbytes * h); /* <= 16384 * 16384 * 3: no overflow */
    if (!dec.pixels) {
        jpeg_destroy_decompress(&ci);
        return seterr(DISTILL_ENOMEM, "JPEG '%s': out of memory", path);
    }
    while (ci.output_scanline < h) {
        JSAMPROW row = dec.pixels + (size_t)ci.output_scanline * rowbytes;
        if (jpeg_read_scanlines(&ci, &row, 1) != 1) {
            snprintf(dec.msg, sizeof dec.msg, "file ends early (truncated)");
            longjmp(dec.jump, 1);
        }
    }
    int orientation = exif_orientation(&ci);
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);

    img->w = w;
    img->h = h;
    img->channels = ch;
    img->depth = 8;
    img->rowbytes = rowbytes;
    img->pixels = dec.pixels;
    int rc = apply_orientation(img, orientation, path);
    if (rc)
        image_free(img);
    return rc;
}

/*
 * folder.c - datasets from folders of PNG images, root/<class>/<image>.png.
 *
 * Each file is read whole (read_file) and decoded from memory by libpng,
 * whose errors arrive by longjmp: everything a decode allocates hangs off a
 * `pngdec` that outlives the setjmp frame, so the error path frees it all.
 * libpng allocates through xmalloc/xfree and never prints (its warnings are
 * dropped, its errors become the message of the failed call).
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "util/util.h"

#define PNG_MAX_FILE ((size_t)1 << 28)  /* 256 MiB per file */
#define PNG_MAX_SIDE 16384u
/* deflate never expands data more than 1032:1 */
#define DEFLATE_MAX_RATIO 1032u
#define PNG_SLACK 4096u

int distill_folder_options_init(distill_folder_options *opts, unsigned int version)
{
    if (!opts)
        return seterr(DISTILL_EINVAL, "distill_folder_options_init: opts is NULL");
    CHECK_VERSION(version, DISTILL_FOLDER_OPTIONS_VERSION, "distill_folder_options",
                  "distill_folder_options_init");
    const distill_folder_options init = DISTILL_FOLDER_OPTIONS_INIT;
    *opts = init;
    return DISTILL_OK;
}

/* ============================================================ PNG decode */

/* One decoded image: rows of h * w * channels samples of `depth` bits
 * (8, or 16 big-endian), channels 1 (gray) or 3 (RGB). */
typedef struct pngdec {
    const unsigned char *file; /* the encoded file */
    size_t size, pos;
    unsigned char *pixels;
    png_bytep *rows;
    uint32_t w, h;
    int channels, depth;
    size_t rowbytes;
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

/* Decode d->file into d->pixels (gray or RGB, 8 or 16 bits).  On failure
 * nothing stays allocated and the error is set, naming `path`. */
static int png_decode(pngdec *d, const char *path)
{
    if (d->size < 8 || png_sig_cmp(d->file, 0, 8) != 0)
        return seterr(DISTILL_EFORMAT, "PNG '%s': not a PNG file (bad signature)", path);
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
     * values after a longjmp; everything else lives in *d. */
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        xfree(d->rows);
        xfree(d->pixels);
        d->rows = NULL;
        d->pixels = NULL;
        if (d->oom)
            return seterr(DISTILL_ENOMEM, "PNG '%s': out of memory", path);
        return seterr(DISTILL_EFORMAT, "PNG '%s': %s", path, d->msg);
    }
    png_set_user_limits(png, PNG_MAX_SIDE, PNG_MAX_SIDE);
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

    d->w = w;
    d->h = h;
    d->channels = png_get_channels(png, info);
    d->depth = png_get_bit_depth(png, info);
    d->rowbytes = png_get_rowbytes(png, info);
    if ((d->channels != 1 && d->channels != 3) || (d->depth != 8 && d->depth != 16))
        png_error(png, "unexpected layout after conversion");
    d->pixels = xmalloc(d->rowbytes * h); /* <= 16384 * 16384 * 6 bytes: no overflow */
    d->rows = xmalloc(h * sizeof *d->rows);
    if (!d->pixels || !d->rows) {
        d->oom = 1;
        png_error(png, "out of memory");
    }
    for (uint32_t y = 0; y < h; y++)
        d->rows[y] = d->pixels + (size_t)y * d->rowbytes;
    png_read_image(png, d->rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    xfree(d->rows);
    d->rows = NULL;
    return DISTILL_OK;
}

/* ============================================================ conversion */

/* d's pixels as float (out_c, h, w) in [0, 1]: gray -> RGB by replication,
 * RGB -> gray by BT.601 luma. */
static void to_float(const pngdec *d, int out_c, float *dst)
{
    size_t plane = (size_t)d->w * d->h;
    int ch = d->channels;
    for (uint32_t y = 0; y < d->h; y++) {
        const unsigned char *row = d->pixels + (size_t)y * d->rowbytes;
        for (uint32_t x = 0; x < d->w; x++) {
            float v[3] = {0.0f, 0.0f, 0.0f};
            for (int k = 0; k < ch; k++) {
                size_t i = (size_t)x * ch + k;
                v[k] = d->depth == 16 ? (float)(row[2 * i] << 8 | row[2 * i + 1]) / 65535.0f
                                      : (float)row[i] / 255.0f;
            }
            size_t at = (size_t)y * d->w + x;
            if (out_c == 1)
                dst[at] = ch == 1 ? v[0] : 0.299f * v[0] + 0.587f * v[1] + 0.114f * v[2];
            else
                for (int k = 0; k < 3; k++)
                    dst[k * plane + at] = v[ch == 1 ? 0 : k];
        }
    }
}

/* Source coordinate and weight of output position i for bilinear resizing
 * with half-pixel centres (PyTorch, align_corners=False). */
static void bilinear_coord(int64_t i, int64_t src, int64_t dst, int64_t *i0, int64_t *i1, float *t)
{
    float scale = (float)src / (float)dst;
    float s = ((float)i + 0.5f) * scale - 0.5f;
    if (s < 0)
        s = 0;
    int64_t a = (int64_t)s;
    if (a > src - 1)
        a = src - 1;
    *i0 = a;
    *i1 = a < src - 1 ? a + 1 : a;
    *t = s - (float)a;
}

/* (c, sh, sw) -> (c, h, w) as opts->resize says. */
static void fit_image(const float *src, int64_t c, int64_t sh, int64_t sw, float *dst, int64_t h,
                      int64_t w, int mode)
{
    if (sh == h && sw == w) {
        memcpy(dst, src, (size_t)(c * h * w) * sizeof *dst);
        return;
    }
    if (mode == DISTILL_RESIZE_CENTER_CROP) {
        int64_t top = sh >= h ? (sh - h) / 2 : -((h - sh) / 2);
        int64_t left = sw >= w ? (sw - w) / 2 : -((w - sw) / 2);
        for (int64_t k = 0; k < c; k++)
            for (int64_t y = 0; y < h; y++)
                for (int64_t x = 0; x < w; x++) {
                    int64_t yy = y + top, xx = x + left;
                    dst[(k * h + y) * w + x] = yy >= 0 && yy < sh && xx >= 0 && xx < sw
                                                   ? src[(k * sh + yy) * sw + xx]
                                                   : 0.0f;
                }
        return;
    }
    for (int64_t y = 0; y < h; y++) {
        int64_t y0, y1;
        float ty;
        bilinear_coord(y, sh, h, &y0, &y1, &ty);
        for (int64_t x = 0; x < w; x++) {
            int64_t x0, x1;
            float tx;
            bilinear_coord(x, sw, w, &x0, &x1, &tx);
            for (int64_t k = 0; k < c; k++) {
                const float *p = src + k * sh * sw;
                float top = (1 - tx) * p[y0 * sw + x0] + tx * p[y0 * sw + x1];
                float bot = (1 - tx) * p[y1 * sw + x0] + tx * p[y1 * sw + x1];
                dst[(k * h + y) * w + x] = (1 - ty) * top + ty * bot;
            }
        }
    }
}

/* ================================================================ listing */

typedef struct namelist {
    char **v;
    size_t n, cap;
} namelist;

static void names_free(namelist *l)
{
    for (size_t i = 0; i < l->n; i++)
        xfree(l->v[i]);
    xfree(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The entries of `dir` but "." and "..", sorted by strcmp.  `what`
 * names the folder's role in messages. */
static int list_dir(const char *dir, const char *what, namelist *out)
{
    memset(out, 0, sizeof *out);
    DIR *dh = opendir(dir);
    if (!dh) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            return seterr(DISTILL_ENOTFOUND, "%s '%s': %s", what, dir,
                          e == ENOENT ? "no such folder" : "not a folder");
        return seterr(DISTILL_EIO, "%s '%s': %s", what, dir, strerror(e));
    }
    int rc = DISTILL_OK;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(dh);
        if (!e) {
            if (errno)
                rc = seterr(DISTILL_EIO, "%s '%s': %s", what, dir, strerror(errno));
            break;
        }
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (out->n == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 16;
            char **v = xrealloc(out->v, cap * sizeof *v);
            if (!v) {
                rc = DISTILL_ENOMEM;
                break;
            }
            out->v = v;
            out->cap = cap;
        }
        if (!(out->v[out->n] = xstrdup(e->d_name))) {
            rc = DISTILL_ENOMEM;
            break;
        }
        out->n++;
    }
    closedir(dh);
    if (rc)
        names_free(out);
    else if (out->n)
        qsort(out->v, out->n, sizeof *out->v, cmp_names);
    return rc;
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = xmalloc(la + lb + 2);
    if (p) {
        memcpy(p, a, la);
        p[la] = '/';
        memcpy(p + la + 1, b, lb + 1);
    }
    return p;
}

static int is_png_name(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcasecmp(name + n - 4, ".png") == 0;
}

/* A PNG file to read and its class. */
typedef struct entry {
    char *path;
    int label;
} entry;

/* The class folders of root (into *classes) and their PNG files in order
 * (into *files, *nfiles); the rest counted in *not_png. */
static int scan(const char *root, namelist *classes, entry **files, size_t *nfiles,
                int64_t *not_png)
{
    memset(classes, 0, sizeof *classes);
    *files = NULL;
    *nfiles = 0;
    namelist top;
    int rc = list_dir(root, "image folder", &top);
    if (rc)
        return rc;
    size_t cap = 0;
    char *dir = NULL;
    namelist inner = {0};
    for (size_t i = 0; i < top.n; i++) {
        dir = join(root, top.v[i]);
        if (!dir) {
            rc = DISTILL_ENOMEM;
            goto fail;
        }
        struct stat sb;
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            (*not_png)++;
            xfree(dir);
            dir = NULL;
            continue;
        }
        if (classes->n == (size_t)INT32_MAX) {
            rc = seterr(DISTILL_EFORMAT, "image folder '%s': too many class folders", root);
            goto fail;
        }
        int label = (int)classes->n;
        /* Move the name into the class list (top.v[i] is cleared). */
        if (classes->n == classes->cap) {
            size_t ncap = classes->cap ? classes->cap * 2 : 16;
            char **v = xrealloc(classes->v, ncap * sizeof *v);
            if (!v) {
                rc = DISTILL_ENOMEM;
                goto fail;
            }
            classes->v = v;
            classes->cap = ncap;
        }
        classes->v[classes->n++] = top.v[i];
        top.v[i] = NULL;

        rc = list_dir(dir, "class folder", &inner);
        if (rc)
            goto fail;
        for (size_t j = 0; j < inner.n; j++) {
            char *path = join(dir, inner.v[j]);
            if (!path) {
                rc = DISTILL_ENOMEM;
                goto fail;
            }
            if (!is_png_name(inner.v[j]) || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
                (*not_png)++;
                xfree(path);
                continue;
            }
            if (*nfiles == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                entry *v = xrealloc(*files, ncap * sizeof *v);
                if (!v) {
                    xfree(path);
                    rc = DISTILL_ENOMEM;
                    goto fail;
                }
                *files = v;
                cap = ncap;
            }
            (*files)[*nfiles].path = path;
            (*files)[*nfiles].label = label;
            (*nfiles)++;
        }
        names_free(&inner);
        xfree(dir);
        dir = NULL;
    }
    names_free(&top);
    if (classes->n == 0) {
        rc = seterr(DISTILL_EFORMAT, "image folder '%s': no class folders in it", root);
        goto fail_classes;
    }
    return DISTILL_OK;
fail:
    names_free(&inner);
    xfree(dir);
    names_free(&top);
fail_classes:
    names_free(classes);
    for (size_t i = 0; i < *nfiles; i++)
        xfree((*files)[i].path);
    xfree(*files);
    *files = NULL;
    *nfiles = 0;
    return rc;
}

/* ========================================================== one sample */

/*
 * The per-sample decoder of folder stores (a store_decode_fn): file i read,
 * decoded, converted to c channels, brought to h x w as `resize` says, and
 * rounded to bytes.  The same function fills an in-memory store at load and
 * a streamed one on the loader's threads, so both hold the same bytes.
 */
typedef struct folder_files {
    char **paths;
    int64_t n;
    int resize;
} folder_files;

static void folder_files_free(void *payload)
{
    folder_files *ff = payload;
    if (!ff)
        return;
    for (int64_t i = 0; i < ff->n; i++)
        xfree(ff->paths[i]);
    xfree(ff->paths);
    xfree(ff);
}

/* Decode `path` into d (pixels owned by the caller on success). */
static int decode_file(const char *path, pngdec *d)
{
    memset(d, 0, sizeof *d);
    void *file = NULL;
    size_t size = 0;
    int rc = read_file(path, PNG_MAX_FILE, &file, &size);
    if (rc)
        return rc;
    d->file = file;
    d->size = size;
    rc = png_decode(d, path);
    xfree(file);
    d->file = NULL;
    return rc;
}

/* d's image as (c, h, w) bytes in dst. */
static int fit_bytes(const pngdec *d, const char *path, int resize, uint8_t *dst, int64_t c,
                     int64_t h, int64_t w)
{
    if (resize == DISTILL_RESIZE_NONE && ((int64_t)d->h != h || (int64_t)d->w != w))
        return seterr(DISTILL_EFORMAT, "PNG '%s': %u x %u pixels, expected %lld x %lld", path,
                      (unsigned)d->w, (unsigned)d->h, (long long)w, (long long)h);
    size_t src_elems = (size_t)c * d->w * d->h, elems = (size_t)(c * h * w);
    float *tmp = xmalloc(src_elems * sizeof *tmp);
    float *fit = xmalloc(elems * sizeof *fit);
    if (!tmp || !fit) {
        xfree(tmp);
        xfree(fit);
        return seterr(DISTILL_ENOMEM, "PNG '%s': out of memory", path);
    }
    to_float(d, (int)c, tmp);
    fit_image(tmp, c, d->h, d->w, fit, h, w, resize);
    for (size_t k = 0; k < elems; k++) {
        float v = fit[k] * 255.0f + 0.5f;
        dst[k] = v <= 0.0f ? 0 : v >= 255.0f ? 255 : (uint8_t)v;
    }
    xfree(tmp);
    xfree(fit);
    return DISTILL_OK;
}

static int folder_decode(void *payload, int64_t i, uint8_t *dst, int64_t c, int64_t h, int64_t w)
{
    const folder_files *ff = payload;
    pngdec d;
    int rc = decode_file(ff->paths[i], &d);
    if (rc == DISTILL_OK)
        rc = fit_bytes(&d, ff->paths[i], ff->resize, dst, c, h, w);
    xfree(d.pixels);
    return rc;
}

/* ================================================================== load */

int distill_dataset_from_folder(distill_dataset **out, const char *root,
                                const distill_folder_options *opts)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_folder: out is NULL");
    *out = NULL;
    if (!root)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_folder: root is NULL");
    distill_folder_options o = DISTILL_FOLDER_OPTIONS_INIT;
    if (opts) {
        COPY_OPTIONS(&o, opts, DISTILL_FOLDER_OPTIONS_VERSION, "distill_folder_options",
                     "distill_dataset_from_folder");
    }
    if (o.channels != 1 && o.channels != 3)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_folder: channels is %d; must be 1 or 3",
                      o.channels);
    if (o.height < 0 || o.width < 0 || (o.height == 0) != (o.width == 0) ||
        o.height > (int)PNG_MAX_SIDE || o.width > (int)PNG_MAX_SIDE)
        return seterr(DISTILL_EINVAL,
                      "distill_dataset_from_folder: height %d, width %d; both 0 or both in "
                      "1..%u",
                      o.height, o.width, PNG_MAX_SIDE);
    if (o.resize < DISTILL_RESIZE_BILINEAR || o.resize > DISTILL_RESIZE_NONE)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_folder: resize %d is unknown",
                      o.resize);
    if (o.memory_limit < -1)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_folder: memory_limit is %lld; must "
                      "be -1, 0 or a byte count", (long long)o.memory_limit);
    int64_t limit = o.memory_limit ? o.memory_limit : DISTILL_FOLDER_MEMORY_DEFAULT;

    namelist classes;
    entry *files;
    size_t nfiles;
    int64_t not_png = 0, bad = 0;
    int rc = scan(root, &classes, &files, &nfiles, &not_png);
    if (rc)
        return rc;

    int64_t h = o.height, w = o.width, c = o.channels;
    size_t elems = 0, n = 0, total = 0;
    int streamed = 0, sized = 0;
    uint8_t *samples = NULL;
    int32_t *labels = NULL;
    folder_files *ff = NULL;
    pngdec d;
    memset(&d, 0, sizeof d);
    /* Files are taken in order; a bad one fails the load or, with
     * skip_bad, is dropped.  The first good one fixes the size when none
     * was asked for, and so whether the samples fit in the budget: in
     * memory every file is decoded now; streamed, files are only checked
     * (decoded once, pixels dropped) when skip_bad must know the bad ones. */
    for (size_t i = 0; i < nfiles; i++) {
        int need_decode = !sized || !streamed || o.skip_bad;
        if (need_decode) {
            rc = decode_file(files[i].path, &d);
            if (rc == DISTILL_OK && o.resize == DISTILL_RESIZE_NONE && h &&
                ((int64_t)d.h != h || (int64_t)d.w != w))
                rc = seterr(DISTILL_EFORMAT, "PNG '%s': %u x %u pixels, expected %lld x %lld",
                            files[i].path, (unsigned)d.w, (unsigned)d.h, (long long)w,
                            (long long)h);
            if (rc == DISTILL_ENOMEM)
                goto fail;
            if (rc) {
                xfree(d.pixels);
                d.pixels = NULL;
                if (!o.skip_bad)
                    goto fail;
                bad++;
                rc = DISTILL_OK;
                xfree(files[i].path);
                files[i].path = NULL;
                continue;
            }
        }
        if (!sized) {
            if (!h) {
                h = d.h;
                w = d.w;
            }
            elems = (size_t)(c * h * w);
            if (size_mul(elems, nfiles, &total)) {
                rc = seterr(DISTILL_ENOMEM, "image folder '%s': %zu images of %zu values are "
                            "too many", root, nfiles, elems);
                goto fail;
            }
            streamed = limit >= 0 && (uint64_t)total > (uint64_t)limit;
            labels = xmalloc(nfiles * sizeof *labels);
            if (!streamed)
                samples = xmalloc(total);
            if (!labels || (!streamed && !samples)) {
                rc = DISTILL_ENOMEM;
                goto fail;
            }
            sized = 1;
        }
        if (!streamed) {
            rc = fit_bytes(&d, files[i].path, o.resize, samples + n * elems, c, h, w);
            if (rc)
                goto fail;
        }
        xfree(d.pixels);
        d.pixels = NULL;
        /* keep the path of a streamed sample, at its sample number */
        files[n].path = files[i].path;
        if (n != i)
            files[i].path = NULL;
        labels[n++] = files[i].label;
    }
    if (n == 0) {
        rc = seterr(DISTILL_EFORMAT, "image folder '%s': no readable PNG image in %zu class "
                    "folder(s)", root, classes.n);
        goto fail;
    }
    if (!streamed && n < nfiles) {
        uint8_t *sm = xrealloc(samples, n * elems);
        if (sm)
            samples = sm; /* else keep the larger block */
    }
    if (streamed) {
        ff = xcalloc(1, sizeof *ff);
        if (!ff) {
            rc = DISTILL_ENOMEM;
            goto fail;
        }
        ff->paths = xmalloc(n * sizeof *ff->paths);
        if (!ff->paths) {
            rc = DISTILL_ENOMEM;
            goto fail;
        }
        for (size_t i = 0; i < n; i++) {
            ff->paths[i] = files[i].path;
            files[i].path = NULL;
        }
        ff->n = (int64_t)n;
        ff->resize = o.resize;
    }
    for (size_t i = 0; i < nfiles; i++)
        xfree(files[i].path);
    xfree(files);
    files = NULL;
    nfiles = 0;

    store *st = store_new();
    if (!st) {
        rc = DISTILL_ENOMEM;
        goto fail;
    }
    st->n = (int64_t)n;
    st->c = c;
    st->h = h;
    st->w = w;
    st->sample_elems = elems;
    if (streamed) {
        st->type = STORE_FILES;
        st->decode = folder_decode;
        st->decode_payload = ff;
        st->decode_free = folder_files_free;
    } else {
        st->type = STORE_U8;
        st->pixels = st->owned_pixels = samples;
    }
    st->labels = st->owned_labels = labels;
    st->classes = (int)classes.n;
    st->class_names = classes.v; /* taken over */
    st->skipped_not_png = not_png;
    st->skipped_bad = bad;
    return dataset_wrap(out, st);
fail:
    xfree(d.pixels);
    xfree(samples);
    xfree(labels);
    folder_files_free(ff);
    for (size_t i = 0; i < nfiles; i++)
        xfree(files[i].path);
    xfree(files);
    names_free(&classes);
    return rc;
}

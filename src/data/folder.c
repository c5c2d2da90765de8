/*
 * folder.c - datasets from images: a class-per-folder tree
 * (root/<class>/<image>) or a list file of "path,label" / "path label"
 * lines.  Both make a list of (file, label) entries; each file is then read
 * whole and decoded by image_read_file() (image.c: PNG or JPEG by the magic
 * bytes), converted to the requested channels and brought to the sample
 * size.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "data/image.h"
#include "util/util.h"

/* Numeric labels of a list file are below this. */
#define LIST_MAX_LABEL 1000000

int distill_folder_options_init(distill_folder_options *opts, unsigned int version)
{
    static const distill_folder_options init = DISTILL_FOLDER_OPTIONS_INIT;
    INIT_STRUCT(opts, version, DISTILL_FOLDER_OPTIONS_VERSION, init, "distill_folder_options",
                "distill_folder_options_init");
}

/* ============================================================ conversion */

/* d's pixels as float (out_c, h, w) in [0, 1]: gray -> RGB by replication,
 * RGB -> gray by BT.601 luma. */
static void to_float(const image *d, int out_c, float *dst)
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

/* opts->progress, if any; DISTILL_ECANCELLED when it asks to stop. */
static int report(const distill_folder_options *o, int stage, int64_t done, int64_t total)
{
    if (o->progress && o->progress(stage, done, total, o->progress_payload))
        return seterr(DISTILL_ECANCELLED, "loading images: cancelled by the progress callback");
    return DISTILL_OK;
}

/* An image file to read and its class. */
typedef struct entry {
    char *path;
    int label;
} entry;

/* The class folders of root (into *classes) and their image files in
 * order (into *files, *nfiles); the rest counted in *not_png. */
static int scan(const char *root, const distill_folder_options *o, namelist *classes,
                entry **files, size_t *nfiles, int64_t *not_png)
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
            if (!image_name_is_image(inner.v[j]) || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
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
        if ((rc = report(o, DISTILL_FOLDER_SCAN, (int64_t)*nfiles, 0)))
            goto fail;
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

/* d's image as (c, h, w) bytes in dst. */
static int fit_bytes(const image *d, const char *path, int resize, uint8_t *dst, int64_t c,
                     int64_t h, int64_t w)
{
    if (resize == DISTILL_RESIZE_NONE && ((int64_t)d->h != h || (int64_t)d->w != w))
        return seterr(DISTILL_EFORMAT, "image '%s': %u x %u pixels, expected %lld x %lld", path,
                      (unsigned)d->w, (unsigned)d->h, (long long)w, (long long)h);
    size_t src_elems = (size_t)c * d->w * d->h, elems = (size_t)(c * h * w);
    float *tmp = xmalloc(src_elems * sizeof *tmp);
    float *fit = xmalloc(elems * sizeof *fit);
    if (!tmp || !fit) {
        xfree(tmp);
        xfree(fit);
        return seterr(DISTILL_ENOMEM, "image '%s': out of memory", path);
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
    image d;
    int rc = image_read_file(ff->paths[i], &d);
    if (rc == DISTILL_OK)
        rc = fit_bytes(&d, ff->paths[i], ff->resize, dst, c, h, w);
    image_free(&d);
    return rc;
}

/* ============================================================= list file */

/* Trim spaces and tabs (and one pair of surrounding double quotes) from
 * [*b, *e). */
static void trim(char **b, char **e)
{
    while (*b < *e && (**b == ' ' || **b == '\t'))
        (*b)++;
    while (*e > *b && ((*e)[-1] == ' ' || (*e)[-1] == '\t'))
        (*e)--;
    if (*e - *b >= 2 && **b == '"' && (*e)[-1] == '"') {
        (*b)++;
        (*e)--;
    }
}

/* A decimal number in [0, LIST_MAX_LABEL), or -1. */
static long label_number(const char *s)
{
    if (!*s)
        return -1;
    long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v >= LIST_MAX_LABEL)
            return -1;
    }
    return v;
}

/* One line of a list file, split. */
typedef struct list_line {
    char *path, *label; /* inside the file's buffer */
    long lineno;
} list_line;

/*
 * Parse the list file at `list` into entries (paths resolved against the
 * list's folder) and classes.  Format (include/distill/data.h): the first
 * line that is neither blank nor a comment decides CSV (it holds a comma)
 * or space-separated; a CSV header "path,label" is skipped.
 */
static int scan_list(const char *list, const distill_folder_options *o, namelist *classes,
                     entry **files, size_t *nfiles, int64_t *missing)
{
    memset(classes, 0, sizeof *classes);
    *files = NULL;
    *nfiles = 0;
    void *data = NULL;
    size_t size = 0;
    int rc = read_file(list, IMAGE_MAX_FILE, &data, &size);
    if (rc == DISTILL_ENOTFOUND)
        return seterr(rc, "image list '%s': no such file", list);
    if (rc)
        return rc;
    char *text = xrealloc(data, size + 1);
    if (!text) {
        xfree(data);
        return DISTILL_ENOMEM;
    }
    text[size] = '\0';
    if (memchr(text, '\0', size)) {
        xfree(text);
        return seterr(DISTILL_EFORMAT, "image list '%s': holds a NUL byte (not a text file)",
                      list);
    }
    /* the folder relative paths start from */
    const char *slash = strrchr(list, '/');
    char *base = slash ? xmalloc((size_t)(slash - list) + 1) : xstrdup(".");
    if (!base) {
        xfree(text);
        return DISTILL_ENOMEM;
    }
    if (slash) {
        memcpy(base, list, (size_t)(slash - list));
        base[slash - list] = '\0';
        if (!base[0])
            strcpy(base, "/");
    }

    list_line *lines = NULL;
    size_t nlines = 0, cap = 0;
    int csv = -1; /* undecided */
    long lineno = 0;
    for (char *p = text; *p;) {
        char *end = strchr(p, '\n');
        char *next = end ? end + 1 : p + strlen(p);
        if (!end)
            end = next;
        lineno++;
        if (end > p && end[-1] == '\r')
            end--;
        char *b = p, *e = end;
        p = next;
        trim(&b, &e);
        if (b == e || *b == '#')
            continue;
        *e = '\0';
        if (csv < 0) {
            csv = strchr(b, ',') != NULL;
            if (csv) {
                char *c = strrchr(b, ',');
                char *k1 = b, *k1e = c, *k2 = c + 1, *k2e = e;
                trim(&k1, &k1e);
                trim(&k2, &k2e);
                if (k1e - k1 == 4 && k2e - k2 == 5 && !strncasecmp(k1, "path", 4) &&
                    !strncasecmp(k2, "label", 5))
                    continue; /* the header */
            }
        }
        char *sep = NULL, *lab;
        if (csv) {
            sep = strrchr(b, ',');
            lab = sep ? sep + 1 : NULL;
        } else {
            for (char *q = e; q > b; q--)
                if (q[-1] == ' ' || q[-1] == '\t') {
                    sep = q - 1;
                    break;
                }
            lab = sep ? sep + 1 : NULL;
            while (sep && sep > b && (sep[-1] == ' ' || sep[-1] == '\t'))
                sep--;
        }
        if (!sep || sep == b) {
            rc = seterr(DISTILL_EFORMAT, "image list '%s' line %ld: expected %s", list, lineno,
                        csv ? "PATH,LABEL" : "PATH LABEL");
            goto done;
        }
        char *pe = sep, *le = e;
        trim(&b, &pe);
        trim(&lab, &le);
        *pe = '\0';
        *le = '\0';
        if (!*b || !*lab) {
            rc = seterr(DISTILL_EFORMAT, "image list '%s' line %ld: %s", list, lineno,
                        *b ? "the label is empty" : "the path is empty");
            goto done;
        }
        if (nlines == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            list_line *v = xrealloc(lines, ncap * sizeof *v);
            if (!v) {
                rc = DISTILL_ENOMEM;
                goto done;
            }
            lines = v;
            cap = ncap;
        }
        lines[nlines].path = b;
        lines[nlines].label = lab;
        lines[nlines].lineno = lineno;
        nlines++;
    }
    if (nlines == 0) {
        rc = seterr(DISTILL_EFORMAT, "image list '%s': no entries in it", list);
        goto done;
    }

    /* Numbers when every label is one, else names. */
    int numbers = 1;
    long max_label = -1;
    for (size_t i = 0; i < nlines && numbers; i++) {
        long v = label_number(lines[i].label);
        if (v < 0)
            numbers = 0;
        else if (v > max_label)
            max_label = v;
    }
    if (!numbers) {
        namelist all = {0};
        all.v = xmalloc(nlines * sizeof *all.v);
        if (!all.v) {
            rc = DISTILL_ENOMEM;
            goto done;
        }
        for (size_t i = 0; i < nlines; i++)
            all.v[i] = lines[i].label;
        qsort(all.v, nlines, sizeof *all.v, cmp_names);
        classes->v = xmalloc(nlines * sizeof *classes->v);
        if (!classes->v) {
            xfree(all.v);
            rc = DISTILL_ENOMEM;
            goto done;
        }
        classes->cap = nlines;
        for (size_t i = 0; i < nlines; i++) {
            if (classes->n && !strcmp(classes->v[classes->n - 1], all.v[i]))
                continue;
            if (!(classes->v[classes->n] = xstrdup(all.v[i]))) {
                xfree(all.v);
                rc = DISTILL_ENOMEM;
                goto done;
            }
            classes->n++;
        }
        xfree(all.v);
    }

    *files = xmalloc(nlines * sizeof **files);
    if (!*files) {
        rc = DISTILL_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < nlines; i++) {
        const char *path = lines[i].path;
        char *full = path[0] == '/' ? xstrdup(path) : join(base, path);
        if (!full) {
            rc = DISTILL_ENOMEM;
            goto done;
        }
        struct stat sb;
        int found = stat(full, &sb) == 0;
        if (!found || !S_ISREG(sb.st_mode)) {
            int e = errno;
            if (!o->skip_bad) {
                rc = seterr(!found && e != ENOENT && e != ENOTDIR ? DISTILL_EIO
                                                                  : DISTILL_ENOTFOUND,
                            "image list '%s' line %ld: image '%s': %s", list, lines[i].lineno,
                            full, found ? "not a regular file" : strerror(e));
                xfree(full);
                goto done;
            }
            (*missing)++;
            xfree(full);
            continue;
        }
        int label;
        if (numbers) {
            label = (int)label_number(lines[i].label);
        } else {
            const char *key = lines[i].label;
            char **hit = bsearch(&key, classes->v, classes->n, sizeof *classes->v, cmp_names);
            label = (int)(hit - classes->v);
        }
        (*files)[*nfiles].path = full;
        (*files)[*nfiles].label = label;
        (*nfiles)++;
        if (*nfiles % 1024 == 0 && (rc = report(o, DISTILL_FOLDER_SCAN, (int64_t)*nfiles, 0)))
            goto done;
    }
    if (numbers)
        classes->n = (size_t)(max_label + 1); /* no names: classes->v stays NULL */
    rc = report(o, DISTILL_FOLDER_SCAN, (int64_t)*nfiles, 0);
done:
    xfree(lines);
    xfree(text);
    xfree(base);
    if (rc) {
        if (classes->v)
            names_free(classes);
        for (size_t i = 0; i < *nfiles; i++)
            xfree((*files)[i].path);
        xfree(*files);
        *files = NULL;
        *nfiles = 0;
        memset(classes, 0, sizeof *classes);
    }
    return rc;
}

/* ================================================================== load */

/* opts checked and copied into *o; `fn` names the API call. */
static int get_options(distill_folder_options *o, const distill_folder_options *opts,
                       const char *fn)
{
    static const distill_folder_options init = DISTILL_FOLDER_OPTIONS_INIT;
    *o = init;
    if (opts) {
        COPY_OPTIONS(o, opts, DISTILL_FOLDER_OPTIONS_VERSION, "distill_folder_options", "%s",
                     fn);
    }
    if (o->channels != 1 && o->channels != 3)
        return seterr(DISTILL_EINVAL, "%s: channels is %d; must be 1 or 3", fn, o->channels);
    if (o->height < 0 || o->width < 0 || (o->height == 0) != (o->width == 0) ||
        o->height > (int)IMAGE_MAX_SIDE || o->width > (int)IMAGE_MAX_SIDE)
        return seterr(DISTILL_EINVAL, "%s: height %d, width %d; both 0 or both in 1..%u", fn,
                      o->height, o->width, IMAGE_MAX_SIDE);
    if (o->resize < DISTILL_RESIZE_BILINEAR || o->resize > DISTILL_RESIZE_NONE)
        return seterr(DISTILL_EINVAL, "%s: resize %d is unknown", fn, o->resize);
    if (o->memory_limit < -1)
        return seterr(DISTILL_EINVAL, "%s: memory_limit is %lld; must be -1, 0 or a byte count",
                      fn, (long long)o->memory_limit);
    return DISTILL_OK;
}

/*
 * Decode the entries into a new dataset; takes over files (always freed)
 * and classes (freed on failure).  `what` and `name` say where the entries
 * come from in messages ("image folder", root).
 */
static int load_entries(distill_dataset **out, const char *what, const char *name,
                        const distill_folder_options *opts, namelist classes, entry *files,
                        size_t nfiles, int64_t not_png, int64_t bad)
{
    distill_folder_options o = *opts;
    int64_t limit = o.memory_limit ? o.memory_limit : DISTILL_FOLDER_MEMORY_DEFAULT;
    int rc;
    int64_t h = o.height, w = o.width, c = o.channels;
    size_t elems = 0, n = 0, total = 0;
    int streamed = 0, sized = 0;
    uint8_t *samples = NULL;
    int32_t *labels = NULL;
    folder_files *ff = NULL;
    image d;
    memset(&d, 0, sizeof d);
    if ((rc = report(&o, DISTILL_FOLDER_DECODE, 0, (int64_t)nfiles)))
        goto fail;
    /* Files are taken in order; a bad one fails the load or, with
     * skip_bad, is dropped.  The first good one fixes the size when none
     * was asked for, and so whether the samples fit in the budget: in
     * memory every file is decoded now; streamed, files are only checked
     * (decoded once, pixels dropped) when skip_bad must know the bad ones. */
    for (size_t i = 0; i < nfiles; i++) {
        int need_decode = !sized || !streamed || o.skip_bad;
        if (need_decode) {
            rc = image_read_file(files[i].path, &d);
            if (rc == DISTILL_OK && o.resize == DISTILL_RESIZE_NONE && h &&
                ((int64_t)d.h != h || (int64_t)d.w != w))
                rc = seterr(DISTILL_EFORMAT, "image '%s': %u x %u pixels, expected %lld x %lld",
                            files[i].path, (unsigned)d.w, (unsigned)d.h, (long long)w,
                            (long long)h);
            if (rc == DISTILL_ENOMEM)
                goto fail;
            if (rc) {
                image_free(&d);
                if (!o.skip_bad)
                    goto fail;
                bad++;
                xfree(files[i].path);
                files[i].path = NULL;
                if ((rc = report(&o, DISTILL_FOLDER_DECODE, (int64_t)i + 1, (int64_t)nfiles)))
                    goto fail;
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
                rc = seterr(DISTILL_ENOMEM, "%s '%s': %zu images of %zu values are too many",
                            what, name, nfiles, elems);
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
        image_free(&d);
        /* keep the path of a streamed sample, at its sample number */
        files[n].path = files[i].path;
        if (n != i)
            files[i].path = NULL;
        labels[n++] = files[i].label;
        if ((rc = report(&o, DISTILL_FOLDER_DECODE, (int64_t)i + 1, (int64_t)nfiles)))
            goto fail;
    }
    if (n == 0) {
        if (!strcmp(what, "image folder"))
            rc = seterr(DISTILL_EFORMAT, "%s '%s': no readable PNG or JPEG image in %zu class "
                        "folder(s)", what, name, classes.n);
        else
            rc = seterr(DISTILL_EFORMAT, "%s '%s': no readable PNG or JPEG image in it", what,
                        name);
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
    image_free(&d);
    xfree(samples);
    xfree(labels);
    folder_files_free(ff);
    for (size_t i = 0; i < nfiles; i++)
        xfree(files[i].path);
    xfree(files);
    if (classes.v)
        names_free(&classes);
    return rc;
}

int distill_dataset_from_folder(distill_dataset **out, const char *root,
                                const distill_folder_options *opts)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_folder: out is NULL");
    *out = NULL;
    if (!root)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_folder: root is NULL");
    distill_folder_options o;
    int rc = get_options(&o, opts, "distill_dataset_from_folder");
    if (rc)
        return rc;
    namelist classes;
    entry *files;
    size_t nfiles;
    int64_t not_png = 0;
    if ((rc = scan(root, &o, &classes, &files, &nfiles, &not_png)))
        return rc;
    return load_entries(out, "image folder", root, &o, classes, files, nfiles, not_png, 0);
}

int distill_dataset_from_list(distill_dataset **out, const char *list,
                              const distill_folder_options *opts)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_list: out is NULL");
    *out = NULL;
    if (!list)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_list: list is NULL");
    distill_folder_options o;
    int rc = get_options(&o, opts, "distill_dataset_from_list");
    if (rc)
        return rc;
    namelist classes;
    entry *files;
    size_t nfiles;
    int64_t missing = 0;
    if ((rc = scan_list(list, &o, &classes, &files, &nfiles, &missing)))
        return rc;
    return load_entries(out, "image list", list, &o, classes, files, nfiles, 0, missing);
}

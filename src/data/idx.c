/*
 * idx.c - IDX files (the MNIST / Fashion-MNIST format), raw or gzip.
 *
 * An IDX file is a big-endian header - magic 0x0000TTDD (TT = element type,
 * 0x08 for unsigned bytes; DD = number of dims), DD 32-bit dims - followed
 * by the elements.  Only unsigned bytes are read: images with 3 dims
 * (N, rows, cols), labels with 1 dim (N).
 *
 * The header is checked against what the file can hold before the data is
 * allocated: exactly for a raw file, through deflate's maximum ratio for a
 * gzip one, whose data is then read into a buffer that only grows as data
 * actually arrives.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data_internal.h"
#include "util/util.h"

#define IDX_TYPE_UBYTE 0x08
#define IDX_MAX_BYTES ((uint64_t)1 << 33)    /* 8 GiB of elements */
#define IDX_FIRST_CHUNK ((size_t)1 << 20)    /* first piece of a gzip read */
#define IDX_MAX_READ ((unsigned)1 << 30)     /* one read or inflate call at most */
/* deflate never expands data more than 1032:1; the slack covers the gzip
 * header and trailer of a tiny file. */
#define DEFLATE_MAX_RATIO 1032u
#define GZIP_SLACK 1024u

/*
 * The file's bytes, raw or gunzipped.  zlib's gz* functions take their
 * memory from malloc, out of reach of distill_set_allocator(), so the
 * stream is read here with inflate(), whose allocations go through xmalloc.
 * It reads what gzread() would: a file that does not start with the gzip
 * magic is passed through as it is; gzip members follow each other, and
 * bytes after the last member that do not start another are ignored.
 */
#define ZSRC_IN ((size_t)1 << 17)

typedef struct zsrc {
    int fd;
    int raw;            /* not gzip: bytes pass through */
    int zinit;          /* strm is initialized */
    int eof;            /* the file has no more bytes */
    int done;           /* the last gzip member has ended */
    z_stream strm;      /* next_in/avail_in: unread bytes of `in`, also when raw */
    unsigned char *in;  /* ZSRC_IN bytes */
} zsrc;

static voidpf zsrc_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    return xcalloc(items, size);
}

static void zsrc_free(voidpf opaque, voidpf p)
{
    (void)opaque;
    xfree(p);
}

/* Read more of the file after the `keep` unread bytes, moved to the front
 * of the buffer. */
static int zsrc_fill(zsrc *z, const char *path)
{
    size_t keep = z->strm.avail_in;
    if (keep && z->strm.next_in != z->in)
        memmove(z->in, z->strm.next_in, keep);
    z->strm.next_in = z->in;
    while (!z->eof && keep < ZSRC_IN) {
        ssize_t n = read(z->fd, z->in + keep, ZSRC_IN - keep);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return seterr(DISTILL_EIO, "'%s': %s", path, strerror(errno));
        if (n == 0)
            z->eof = 1;
        keep += (size_t)n;
        break;
    }
    z->strm.avail_in = (uInt)keep;
    return DISTILL_OK;
}

/* At least `want` unread bytes, unless the file ends first. */
static int zsrc_need(zsrc *z, size_t want, const char *path)
{
    while (z->strm.avail_in < want && !z->eof) {
        int rc = zsrc_fill(z, path);
        if (rc)
            return rc;
    }
    return DISTILL_OK;
}

static int zsrc_open(zsrc *z, int fd, const char *path)
{
    memset(z, 0, sizeof *z);
    z->fd = fd;
    z->in = xmalloc(ZSRC_IN);
    if (!z->in)
        return DISTILL_ENOMEM;
    int rc = zsrc_need(z, 2, path);
    if (rc)
        return rc;
    z->raw = !(z->strm.avail_in >= 2 && z->strm.next_in[0] == 0x1f && z->strm.next_in[1] == 0x8b);
    if (z->raw)
        return DISTILL_OK;
    z->strm.zalloc = zsrc_alloc;
    z->strm.zfree = zsrc_free;
    z->strm.opaque = Z_NULL;
    int zr = inflateInit2(&z->strm, 15 + 16); /* gzip only, with its CRC and size check */
    if (zr == Z_MEM_ERROR)
        return seterr(DISTILL_ENOMEM, "'%s': out of memory decompressing", path);
    if (zr != Z_OK)
        return seterr(DISTILL_EFORMAT, "'%s': cannot start decompressing (zlib error %d)", path,
                      zr);
    z->zinit = 1;
    return DISTILL_OK;
}

/* Close the file and free the stream. */
static void zsrc_close(zsrc *z)
{
    if (z->zinit)
        inflateEnd(&z->strm);
    xfree(z->in);
    if (z->fd >= 0)
        close(z->fd);
    z->fd = -1;
    z->in = NULL;
    z->zinit = 0;
}

/* Up to len (< 2^30) bytes of a raw file. */
static int64_t zsrc_read_raw(zsrc *z, unsigned char *buf, size_t len, const char *path)
{
    size_t done = z->strm.avail_in < len ? z->strm.avail_in : len;
    memcpy(buf, z->strm.next_in, done);
    z->strm.next_in += done;
    z->strm.avail_in -= (uInt)done;
    while (done < len && !z->eof) {
        ssize_t n = read(z->fd, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return seterr(DISTILL_EIO, "'%s': %s", path, strerror(errno));
        if (n == 0)
            z->eof = 1;
        done += (size_t)n;
    }
    return (int64_t)done;
}

/* Up to len (< 2^30) bytes of gzip data. */
static int64_t zsrc_inflate(zsrc *z, unsigned char *buf, size_t len, const char *path)
{
    z->strm.next_out = buf;
    z->strm.avail_out = (uInt)len;
    while (z->strm.avail_out > 0 && !z->done) {
        int rc;
        if (z->strm.avail_in == 0 && (rc = zsrc_fill(z, path)) != DISTILL_OK)
            return rc;
        if (z->strm.avail_in == 0) /* the file ended inside a member */
            return seterr(DISTILL_EFORMAT, "'%s': truncated gzip data (unexpected end of file)",
                          path);
        int zr = inflate(&z->strm, Z_NO_FLUSH);
        if (zr == Z_STREAM_END) {
            /* Another member, or the end of the data. */
            if ((rc = zsrc_need(z, 2, path)) != DISTILL_OK)
                return rc;
            if (z->strm.avail_in >= 2 && z->strm.next_in[0] == 0x1f && z->strm.next_in[1] == 0x8b)
                zr = inflateReset(&z->strm);
            else
                z->done = 1;
        }
        if (zr == Z_MEM_ERROR)
            return seterr(DISTILL_ENOMEM, "'%s': out of memory decompressing", path);
        if (zr != Z_OK && zr != Z_STREAM_END)
            return seterr(DISTILL_EFORMAT, "'%s': corrupt gzip data (%s)", path,
                          z->strm.msg ? z->strm.msg : "zlib error");
    }
    return (int64_t)(len - z->strm.avail_out);
}

/* Read up to len bytes; returns the count read (short only at end of data)
 * or a negative status with the error set. */
static int64_t zsrc_read_full(zsrc *z, void *buf, size_t len, const char *path)
{
    size_t done = 0;
    while (done < len) {
        size_t want = len - done;
        if (want > IDX_MAX_READ)
            want = IDX_MAX_READ;
        int64_t got = z->raw ? zsrc_read_raw(z, (unsigned char *)buf + done, want, path)
                             : zsrc_inflate(z, (unsigned char *)buf + done, want, path);
        if (got < 0)
            return got;
        done += (size_t)got;
        if ((size_t)got < want)
            break; /* the end of the data */
    }
    return (int64_t)done;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Read the IDX file `path` of unsigned bytes with `ndim` dims into *data
 * (xmalloc'd, caller frees) and dims[0..ndim).  expect_n >= 0 requires
 * dims[0] == expect_n (checked before the data is read).  `what` is
 * "images" or "labels", for messages.
 */
static int idx_read(const char *path, int ndim, int64_t expect_n, const char *what,
                    uint32_t *dims, uint8_t **data)
{
    *data = NULL;
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        if (errno == ENOENT)
            return seterr(DISTILL_ENOTFOUND, "IDX %s file '%s': no such file", what, path);
        return seterr(DISTILL_EIO, "IDX %s file '%s': %s", what, path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return seterr(DISTILL_EIO, "IDX %s file '%s': %s", what, path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return seterr(DISTILL_EIO, "IDX %s file '%s': not a regular file", what, path);
    }
    uint64_t file_size = (uint64_t)sb.st_size;
    zsrc gz;
    uint8_t *buf = NULL;
    int64_t got;
    int rc = zsrc_open(&gz, fd, path);
    if (rc)
        goto out;
    unsigned char head[4 + 4 * 3];
    size_t head_len = 4 + 4 * (size_t)ndim;
    got = zsrc_read_full(&gz, head, head_len, path);
    if (got < 0) {
        rc = (int)got;
        goto out;
    }
    if ((size_t)got < 4) {
        rc = seterr(DISTILL_EFORMAT, "IDX %s file '%s': too short for an IDX header (%lld bytes)",
                    what, path, (long long)got);
        goto out;
    }
    uint32_t magic = be32(head);
    uint32_t want_magic = (uint32_t)IDX_TYPE_UBYTE << 8 | (uint32_t)ndim;
    if (magic != want_magic) {
        rc = seterr(DISTILL_EFORMAT,
                    "IDX %s file '%s': magic 0x%08x, expected 0x%08x (unsigned bytes, %d dims)",
                    what, path, (unsigned)magic, (unsigned)want_magic, ndim);
        goto out;
    }
    if ((size_t)got < head_len) {
        rc = seterr(DISTILL_EFORMAT, "IDX %s file '%s': header truncated", what, path);
        goto out;
    }
    uint64_t total = 1;
    for (int d = 0; d < ndim; d++) {
        dims[d] = be32(head + 4 + 4 * d);
        total *= dims[d]; /* cannot overflow: bounded below before the next factor */
        if (dims[d] == 0) {
            rc = seterr(DISTILL_EFORMAT, "IDX %s file '%s': dim %d is 0; the file holds no data",
                        what, path, d);
            goto out;
        }
        if (total > IDX_MAX_BYTES) {
            rc = seterr(DISTILL_EFORMAT, "IDX %s file '%s': header claims over 8 GiB of data",
                        what, path);
            goto out;
        }
    }
    if (expect_n >= 0 && (int64_t)dims[0] != expect_n) {
        rc = seterr(DISTILL_EFORMAT, "IDX %s file '%s': %u %s, the labels file has %lld", what,
                    path, (unsigned)dims[0], what, (long long)expect_n);
        goto out;
    }
    int raw = gz.raw;
    if (raw && file_size != head_len + total) {
        rc = seterr(DISTILL_EFORMAT,
                    "IDX %s file '%s': header claims %llu bytes of data, the file holds %llu", what,
                    path, (unsigned long long)total,
                    (unsigned long long)(file_size > head_len ? file_size - head_len : 0));
        goto out;
    }
    if (!raw && total / DEFLATE_MAX_RATIO > file_size + GZIP_SLACK) {
        rc = seterr(DISTILL_EFORMAT,
                    "IDX %s file '%s': header claims %llu bytes of data, more than a gzip file of "
                    "%llu bytes can hold",
                    what, path, (unsigned long long)total, (unsigned long long)file_size);
        goto out;
    }

    /* A raw file has been measured: read it in one piece.  Compressed data
     * is read in pieces into a buffer that at most doubles what has arrived. */
    size_t cap = raw || total < IDX_FIRST_CHUNK ? (size_t)total : IDX_FIRST_CHUNK;
    size_t len = 0;
    buf = xmalloc(cap);
    if (!buf) {
        rc = DISTILL_ENOMEM;
        goto out;
    }
    for (;;) {
        got = zsrc_read_full(&gz, buf + len, cap - len, path);
        if (got < 0) {
            rc = (int)got;
            goto out;
        }
        len += (size_t)got;
        if (len < cap) {
            rc = seterr(DISTILL_EFORMAT,
                        "IDX %s file '%s': truncated: header claims %llu bytes of data, it ends "
                        "after %zu",
                        what, path, (unsigned long long)total, len);
            goto out;
        }
        if (len == total)
            break;
        size_t next = cap * 2 < total ? cap * 2 : (size_t)total;
        uint8_t *grown = xrealloc(buf, next);
        if (!grown) {
            rc = DISTILL_ENOMEM;
            goto out;
        }
        buf = grown;
        cap = next;
    }
    /* Reading on to the end also makes zlib check the gzip CRC. */
    unsigned char extra;
    got = zsrc_read_full(&gz, &extra, 1, path);
    if (got < 0) {
        rc = (int)got;
        goto out;
    }
    if (got > 0) {
        rc = seterr(DISTILL_EFORMAT, "IDX %s file '%s': data continues past the %llu bytes the "
                    "header claims", what, path, (unsigned long long)total);
        goto out;
    }
out:
    zsrc_close(&gz);
    if (rc) {
        xfree(buf);
        return rc;
    }
    *data = buf;
    return DISTILL_OK;
}

int distill_dataset_from_idx(distill_dataset **out, const char *images_path,
                             const char *labels_path, int classes)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_idx: out is NULL");
    *out = NULL;
    if (!images_path)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_idx: images_path is NULL");
    if (classes < 0)
        return seterr(DISTILL_EINVAL, "distill_dataset_from_idx: classes is %d; must be >= 0",
                      classes);

    /* Labels first: the file is small, and its count lets a mismatched
     * image file fail on its header. */
    uint32_t ldims[1], idims[3];
    uint8_t *lbytes = NULL, *pixels = NULL;
    int32_t *labels = NULL;
    int rc;
    if (labels_path) {
        rc = idx_read(labels_path, 1, -1, "labels", ldims, &lbytes);
        if (rc)
            return rc;
    }
    rc = idx_read(images_path, 3, labels_path ? (int64_t)ldims[0] : -1, "images", idims, &pixels);
    if (rc)
        goto fail;
    int64_t n = idims[0];
    if (lbytes) {
        labels = xmalloc((size_t)n * sizeof *labels);
        if (!labels) {
            rc = DISTILL_ENOMEM;
            goto fail;
        }
        for (int64_t i = 0; i < n; i++)
            labels[i] = lbytes[i];
        xfree(lbytes);
        lbytes = NULL;
        rc = check_labels(labels, n, &classes, DISTILL_EFORMAT, labels_path);
        if (rc)
            goto fail;
    }
    store *st = store_new();
    if (!st) {
        rc = DISTILL_ENOMEM;
        goto fail;
    }
    st->n = n;
    st->c = 1;
    st->h = idims[1];
    st->w = idims[2];
    st->sample_elems = (size_t)idims[1] * idims[2];
    st->type = STORE_U8;
    st->pixels = st->owned_pixels = pixels;
    st->labels = st->owned_labels = labels;
    st->classes = classes;
    return dataset_wrap(out, st);
fail:
    xfree(lbytes);
    xfree(pixels);
    xfree(labels);
    return rc;
}

static const char *const fashion_names[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

/* dir/prefix-kind-ubyte.gz if it exists, else without ".gz"; xmalloc'd. */
static char *fashion_path(const char *dir, const char *prefix, const char *kind)
{
    size_t len = strlen(dir) + strlen(prefix) + strlen(kind) + 16;
    char *p = xmalloc(len);
    if (!p)
        return NULL;
    struct stat sb;
    snprintf(p, len, "%s/%s-%s-ubyte.gz", dir, prefix, kind);
    if (stat(p, &sb) != 0)
        snprintf(p, len, "%s/%s-%s-ubyte", dir, prefix, kind);
    return p;
}

int distill_dataset_fashion_mnist(distill_dataset **out, const char *dir, int train)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_dataset_fashion_mnist: out is NULL");
    *out = NULL;
    if (!dir) {
        dir = getenv("FASHION_MNIST_DIR");
        if (!dir || !*dir)
            dir = "/usr/share/datasets/fashion-mnist";
    }
    const char *prefix = train ? "train" : "t10k";
    char *images = fashion_path(dir, prefix, "images-idx3");
    char *labels = fashion_path(dir, prefix, "labels-idx1");
    int rc = DISTILL_ENOMEM;
    if (images && labels)
        rc = distill_dataset_from_idx(out, images, labels, 10);
    xfree(images);
    xfree(labels);
    if (rc)
        return rc;
    /* The store is new and held by this handle alone. */
    store *st = (*out)->st;
    st->class_names = xcalloc(10, sizeof *st->class_names);
    for (int k = 0; st->class_names && k < 10; k++) {
        st->class_names[k] = xstrdup(fashion_names[k]);
        if (!st->class_names[k])
            break;
    }
    if (!st->class_names || !st->class_names[9]) {
        distill_dataset_free(*out);
        *out = NULL;
        return DISTILL_ENOMEM;
    }
    return DISTILL_OK;
}

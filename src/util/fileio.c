/*
 * fileio.c - atomic file writes (afile_*, write_file_atomic) and whole
 * file reads (read_file).  Declared in util/util.h.
 */
#define _POSIX_C_SOURCE 200809L

#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* ============================================================ atomic file */

struct afile {
    int fd;      /* -1 once closed (after a failed write) */
    char *path;  /* final name */
    char *tmp;   /* temporary name, in the same directory */
};

static void afile_release(afile *f)
{
    xfree(f->path);
    xfree(f->tmp);
    xfree(f);
}

/* Close and remove the temporary file; keep errno of the original failure. */
static void afile_discard(afile *f)
{
    int saved = errno;
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    if (f->tmp)
        unlink(f->tmp);
    errno = saved;
}

static int afile_fail(afile *f, const char *what)
{
    int e = errno;
    afile_discard(f);
    return seterr(DISTILL_EIO, "writing '%s': %s: %s", f->path, what, strerror(e));
}

int afile_open(afile **out, const char *path)
{
    if (!out || !path || !*path)
        return seterr(DISTILL_EINVAL, "afile_open: no path");
    *out = NULL;
    afile *f = xcalloc(1, sizeof *f);
    if (!f)
        return DISTILL_ENOMEM;
    f->fd = -1;
    f->path = xstrdup(path);
    size_t cap = strlen(path) + 64;
    f->tmp = xmalloc(cap);
    if (!f->path || !f->tmp) {
        afile_release(f);
        return DISTILL_ENOMEM;
    }
    /* "<path>.tmp.<pid>"; if that name is taken (a stale file left by a
     * crashed process that had the same pid, or another thread of this
     * process writing the same path) try "<path>.tmp.<pid>.<n>". */
    long pid = (long)getpid();
    for (int attempt = 0; attempt < 100; attempt++) {
        if (attempt == 0)
            snprintf(f->tmp, cap, "%s.tmp.%ld", path, pid);
        else
            snprintf(f->tmp, cap, "%s.tmp.%ld.%d", path, pid, attempt);
        do {
            f->fd = open(f->tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        } while (f->fd < 0 && errno == EINTR);
        if (f->fd >= 0 || errno != EEXIST)
            break;
    }
    if (f->fd < 0) {
        int e = errno;
        seterr(DISTILL_EIO, "writing '%s': cannot create temporary file '%s': %s", path, f->tmp,
               strerror(e));
        afile_release(f); /* nothing was created */
        return DISTILL_EIO;
    }
    *out = f;
    return DISTILL_OK;
}

/* A failed write closes and removes the temporary file at once; the handle
 * stays allocated so the caller still ends it with afile_abort() (or
 * afile_commit(), which then fails with DISTILL_EIO). */
int afile_write(afile *f, const void *data, size_t len)
{
    if (!f)
        return seterr(DISTILL_EINVAL, "afile_write: no file");
    if (f->fd < 0)
        return seterr(DISTILL_EIO, "writing '%s': an earlier write failed", f->path);
    const unsigned char *p = data;
    while (len > 0) {
        /* Keep each call well below SSIZE_MAX and Linux's 2 GiB cap. */
        size_t chunk = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
        ssize_t n = write(f->fd, p, chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return afile_fail(f, "write failed");
        }
        if (n == 0) {
            errno = EIO;
            return afile_fail(f, "write made no progress");
        }
        p += n;
        len -= (size_t)n;
    }
    return DISTILL_OK;
}

/* The directory part of `path` ("." when it has none), xmalloc'd. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return xstrdup(".");
    size_t n = (size_t)(slash - path);
    if (n == 0)
        n = 1; /* "/file" -> "/" */
    char *d = xmalloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

int afile_commit(afile *f)
{
    if (!f)
        return seterr(DISTILL_EINVAL, "afile_commit: no file");
    int rc = DISTILL_OK;
    if (f->fd < 0) {
        rc = seterr(DISTILL_EIO, "writing '%s': an earlier write failed", f->path);
        goto done;
    }
    while (fsync(f->fd) != 0) {
        if (errno != EINTR) {
            rc = afile_fail(f, "fsync failed");
            goto done;
        }
    }
    /* close() may report a deferred write error (NFS); it must not be
     * retried on EINTR (the descriptor is gone either way on Linux). */
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0 && errno != EINTR) {
        rc = afile_fail(f, "close failed");
        goto done;
    }
    if (rename(f->tmp, f->path) != 0) {
        rc = afile_fail(f, "rename failed");
        goto done;
    }
    /* The new name is in place; make the rename itself durable.  A file
     * system that cannot sync directories (EINVAL) is not an error. */
    char *dir = dir_of(f->path);
    if (!dir) {
        rc = DISTILL_ENOMEM;
        goto done;
    }
    int dfd = open(dir, O_RDONLY | O_CLOEXEC
#ifdef O_DIRECTORY
                            | O_DIRECTORY
#endif
    );
    if (dfd >= 0) {
        int r;
        do {
            r = fsync(dfd);
        } while (r != 0 && errno == EINTR);
        if (r != 0 && errno != EINVAL && errno != EROFS && errno != EBADF) {
            int e = errno;
            rc = seterr(DISTILL_EIO, "writing '%s': file written, but syncing directory '%s' failed: %s",
                        f->path, dir, strerror(e));
        }
        close(dfd);
    }
    xfree(dir);
done:
    afile_release(f);
    return rc;
}

void afile_abort(afile *f)
{
    if (!f)
        return;
    afile_discard(f);
    afile_release(f);
}

int write_file_atomic(const char *path, const void *data, size_t size)
{
    afile *f;
    int rc = afile_open(&f, path);
    if (rc != DISTILL_OK)
        return rc;
    rc = afile_write(f, data, size);
    if (rc != DISTILL_OK) {
        afile_abort(f);
        return rc;
    }
    return afile_commit(f);
}

/* ============================================================= read_file */

int read_file(const char *path, size_t max_size, void **data, size_t *size)
{
    if (!path || !data || !size)
        return seterr(DISTILL_EINVAL, "read_file: NULL argument");
    *data = NULL;
    *size = 0;
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return seterr(DISTILL_ENOTFOUND, "reading '%s': no such file", path);
        return seterr(DISTILL_EIO, "reading '%s': %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return seterr(DISTILL_EIO, "reading '%s': %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return seterr(DISTILL_EIO, "reading '%s': is a directory", path);
    }
    if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > (uintmax_t)max_size) {
        close(fd);
        return seterr(DISTILL_EFORMAT, "reading '%s': file of %jd bytes is larger than the limit of %zu",
                      path, (intmax_t)st.st_size, max_size);
    }
    /* Read until end of file, whatever the file is (it may also be a pipe,
     * or change size while we read): start with room for the size stat()
     * reported plus one byte, so a regular file ends in one pass. */
    size_t cap = 4096;
    if (S_ISREG(st.st_mode) && (size_t)st.st_size < SIZE_MAX) /* st_size <= max_size here */
        cap = (size_t)st.st_size + 1;
    unsigned char *buf = xmalloc(cap);
    if (!buf) {
        close(fd);
        return DISTILL_ENOMEM;
    }
    size_t len = 0;
    for (;;) {
        if (len == cap) {
            if (len > max_size)
                break;
            size_t ncap = cap < SIZE_MAX / 2 ? cap * 2 : SIZE_MAX;
            if (max_size < SIZE_MAX && ncap > max_size + 1)
                ncap = max_size + 1;
            if (ncap <= cap)
                break;
            unsigned char *nb = xrealloc(buf, ncap);
            if (!nb) {
                xfree(buf);
                close(fd);
                return DISTILL_ENOMEM;
            }
            buf = nb;
            cap = ncap;
        }
        size_t want = cap - len;
        if (want > ((size_t)1 << 30))
            want = (size_t)1 << 30;
        ssize_t n = read(fd, buf + len, want);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            xfree(buf);
            close(fd);
            return seterr(DISTILL_EIO, "reading '%s': %s", path, strerror(e));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (len > max_size) {
        xfree(buf);
        return seterr(DISTILL_EFORMAT, "reading '%s': file is larger than the limit of %zu bytes",
                      path, max_size);
    }
    *data = buf;
    *size = len;
    return DISTILL_OK;
}

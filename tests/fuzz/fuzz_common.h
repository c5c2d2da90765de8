/*
 * fuzz_common.h - helpers shared by the fuzz targets in tests/fuzz/ and by
 * the corpus generator (gen_corpus.c).  Header-only: every function is
 * static inline, so each target takes what it uses.
 *
 *   - a private scratch folder per process, removed at exit, for targets
 *     whose entry point reads files;
 *   - CRC repair for libdistill containers and PNG chunks, so that a target
 *     can try a mutated input a second time with its checksums made valid
 *     and reach the parsing behind them;
 *   - the small fixed models and trainer the checkpoint target loads into
 *     (the generator builds the same ones to write the seed checkpoint);
 *   - fz_check(): a contract check that aborts with a message (the fuzzer
 *     then saves the input), and FUZZ_STRICT=1 for stricter checks of
 *     behaviour that is suspicious but not promised by the API.
 */
#ifndef DISTILL_FUZZ_COMMON_H
#define DISTILL_FUZZ_COMMON_H

#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "distill.h"

/* --------------------------------------------------------------- checks */

/* Abort (a crash, as far as the fuzzer is concerned) when a promise of the
 * API is broken; `what` says which. */
#define fz_check(cond, what)                                                             \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "fuzz: contract violated at %s:%d: %s (last error: %s)\n",  \
                    __FILE__, __LINE__, (what), distill_last_error());                   \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* FUZZ_STRICT=1: also abort on behaviour that the API does not rule out but
 * that deserves a look (e.g. a model that loads but cannot run). */
static inline int fz_strict(void)
{
    static int strict = -1;
    if (strict < 0) {
        const char *s = getenv("FUZZ_STRICT");
        strict = s && *s && *s != '0';
    }
    return strict;
}

#define fz_suspect(cond, what)                                                           \
    do {                                                                                 \
        if (!(cond) && fz_strict()) {                                                    \
            fprintf(stderr, "fuzz: suspicious at %s:%d: %s (last error: %s)\n", __FILE__, \
                    __LINE__, (what), distill_last_error());                             \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* A failed call must say why. */
static inline void fz_check_error_set(int rc)
{
    fz_check(rc < 0, "status is negative");
    fz_check(distill_last_error()[0] != '\0', "a failed call left no message");
}

/* --------------------------------------------------------- scratch files */

/* The scratch folder's name; "" until made. */
static inline char *fz_dir_buf(void)
{
    static char path[512];
    return path;
}

static inline void fz_remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        int n = snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (n < 0 || (size_t)n >= sizeof p)
            continue;
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            fz_remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static inline void fz_cleanup(void)
{
    char *path = fz_dir_buf();
    if (path[0])
        fz_remove_tree(path);
    path[0] = '\0';
}

/* This process's scratch folder ($TMPDIR or /tmp), made on first use and
 * removed at exit. */
static inline const char *fz_dir(void)
{
    char *path = fz_dir_buf();
    if (!path[0]) {
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !*tmp)
            tmp = "/tmp";
        snprintf(path, 512, "%s/distill-fuzz-XXXXXX", tmp);
        if (!mkdtemp(path)) {
            perror("fuzz: mkdtemp");
            exit(2);
        }
        atexit(fz_cleanup);
    }
    return path;
}

/* Replace the file at `path` with `size` bytes (not atomically: the
 * targets read it back themselves). */
static inline void fz_write_file(const char *path, const void *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(path);
        exit(2);
    }
    const unsigned char *p = data;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            perror(path);
            exit(2);
        }
        p += n;
        size -= (size_t)n;
    }
    close(fd);
}

/* The whole file at `path`, malloc'd (NULL if it cannot be read). */
static inline unsigned char *fz_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    unsigned char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        unsigned char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    fclose(f);
    *size = n;
    return b;
}

/* ------------------------------------------------------------------ CRC */

/* CRC-32 (IEEE), written out here so the helpers need nothing internal. */
static inline uint32_t fz_crc32(const unsigned char *p, size_t n)
{
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
            table[i] = c;
        }
        ready = 1;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
    return ~c;
}

static inline uint32_t fz_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t fz_le64(const unsigned char *p)
{
    return (uint64_t)fz_le32(p) | (uint64_t)fz_le32(p + 4) << 32;
}

static inline uint32_t fz_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Rewrite the CRC of every section of the libdistill container at buf[0,
 * size) that lies wholly inside it (see src/util/container.h for the
 * layout), stopping at the first section that does not.  Returns nonzero
 * if a byte changed. */
static inline int fz_fix_container(unsigned char *buf, size_t size)
{
    const size_t header = 16, overhead = 20;
    int changed = 0;
    size_t pos = header;
    for (int k = 0; k < 64 && pos <= size && size - pos >= overhead; k++) {
        uint64_t len = fz_le64(buf + pos + 8);
        if (len > size - pos - overhead)
            break;
        unsigned char *payload = buf + pos + 16;
        uint32_t crc = fz_crc32(payload, (size_t)len);
        unsigned char *at = payload + len;
        if (fz_le32(at) != crc) {
            at[0] = (unsigned char)crc;
            at[1] = (unsigned char)(crc >> 8);
            at[2] = (unsigned char)(crc >> 16);
            at[3] = (unsigned char)(crc >> 24);
            changed = 1;
        }
        if (!memcmp(buf + pos, "END ", 4))
            break;
        pos += overhead + (size_t)len;
    }
    return changed;
}

/* As fz_fix_container, first for every container with magic `inner`
 * (8 bytes) nested anywhere in the buffer (models inside a checkpoint),
 * then for the outer one. */
static inline int fz_fix_nested(unsigned char *buf, size_t size, const char *inner)
{
    int changed = 0;
    for (size_t i = 1; i + 16 <= size; i++)
        if (buf[i] == (unsigned char)inner[0] && !memcmp(buf + i, inner, 8))
            changed |= fz_fix_container(buf + i, size - i);
    return fz_fix_container(buf, size) | changed;
}

/* Rewrite the CRC of every PNG chunk that lies wholly inside the buffer.
 * Returns nonzero if a byte changed. */
static inline int fz_fix_png(unsigned char *buf, size_t size)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (size < 8 || memcmp(buf, sig, 8) != 0)
        return 0;
    int changed = 0;
    size_t pos = 8;
    while (pos <= size && size - pos >= 12) {
        uint32_t len = fz_be32(buf + pos);
        if (len > size - pos - 12)
            break;
        uint32_t crc = fz_crc32(buf + pos + 4, (size_t)len + 4);
        unsigned char *at = buf + pos + 8 + len;
        if (fz_be32(at) != crc) {
            at[0] = (unsigned char)(crc >> 24);
            at[1] = (unsigned char)(crc >> 16);
            at[2] = (unsigned char)(crc >> 8);
            at[3] = (unsigned char)crc;
            changed = 1;
        }
        pos += 12 + (size_t)len;
    }
    return changed;
}

/* ------------------------------------------------------ fixed fixtures */

/*
 * The checkpoint target's trainer, also built by gen_corpus.c to write the
 * seed checkpoint, so that the seed loads:
 *
 *   student  input (1, 6, 6) -> conv1 3x3 4ch -> bn1 -> relu1 -> pool -> flat -> fc (3)
 *   teacher  input (1, 6, 6) -> conv1 3x3 6ch -> relu1 -> pool -> flat -> fc (3)
 *   losses   kd:T=2,alpha=0.5 and fitnets student relu1 -> teacher relu1,
 *            whose shapes differ, so the trainer adds a 1x1 conv adapter
 *   batch    2
 */
#define FZ_CLASSES 3
#define FZ_SIDE 6
#define FZ_BATCH 2

static inline int fz_small_cnn(distill_model **out, int width, int with_bn, uint64_t seed)
{
    int64_t in[3] = {1, FZ_SIDE, FZ_SIDE};
    distill_conv2d_options c;
    distill_conv2d_options_init(&c, DISTILL_CONV2D_OPTIONS_VERSION);
    c.kernel_h = c.kernel_w = 3;
    c.pad_h = c.pad_w = 1;
    c.bias = !with_bn;
    distill_model *m = NULL;
    int rc = distill_model_create(&m, "input", 3, in);
    if (!rc)
        rc = distill_model_add_conv2d(m, "conv1", "input", width, &c);
    if (!rc && with_bn)
        rc = distill_model_add_batchnorm(m, "bn1", "conv1", 1e-5f, 0.1f);
    if (!rc)
        rc = distill_model_add_relu(m, "relu1", with_bn ? "bn1" : "conv1");
    if (!rc)
        rc = distill_model_add_global_avgpool(m, "pool", "relu1");
    if (!rc)
        rc = distill_model_add_flatten(m, "flat", "pool");
    if (!rc)
        rc = distill_model_add_linear(m, "fc", "flat", FZ_CLASSES, 1);
    if (!rc)
        rc = distill_model_init_weights(m, DISTILL_INIT_DEFAULT, seed);
    if (rc) {
        distill_model_free(m);
        m = NULL;
    }
    *out = m;
    return rc;
}

/* A batch of FZ_BATCH images and labels with fixed contents. */
static inline int fz_batch(distill_tensor **images, int32_t labels[FZ_BATCH])
{
    int64_t d[4] = {FZ_BATCH, 1, FZ_SIDE, FZ_SIDE};
    int rc = distill_tensor_create(images, 4, d);
    if (rc)
        return rc;
    float *x = distill_tensor_data(*images);
    for (int64_t i = 0; i < distill_tensor_numel(*images); i++)
        x[i] = (float)((i * 37) % 11) / 10.0f;
    for (int i = 0; i < FZ_BATCH; i++)
        labels[i] = i % FZ_CLASSES;
    return DISTILL_OK;
}

typedef struct fz_trainer {
    distill_model *student, *teacher_model;
    distill_teacher *teacher;
    distill_trainer *tr;
} fz_trainer;

static inline void fz_trainer_free(fz_trainer *f)
{
    distill_trainer_free(f->tr);
    distill_teacher_free(f->teacher);
    distill_model_free(f->teacher_model);
    distill_model_free(f->student);
    memset(f, 0, sizeof *f);
}

/* Build the fixture trainer; `steps` training steps move it off its
 * initial state (the optimizer then has momentum to save). */
static inline int fz_trainer_make(fz_trainer *f, int steps)
{
    memset(f, 0, sizeof *f);
    distill_trainer_options o;
    distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION);
    o.batch_size = FZ_BATCH;
    o.prefetch = 0;
    o.seed = 5;
    distill_loss *kd = NULL, *fit = NULL;
    int rc = fz_small_cnn(&f->student, 4, 1, 1);
    if (!rc)
        rc = fz_small_cnn(&f->teacher_model, 6, 0, 2);
    if (!rc)
        rc = distill_teacher_from_model(&f->teacher, f->teacher_model);
    if (!rc)
        rc = distill_trainer_create(&f->tr, f->student, f->teacher, &o);
    if (!rc)
        rc = distill_loss_kd(&kd, 2.0f, 0.5f);
    if (!rc) {
        rc = distill_trainer_add_loss(f->tr, kd, 1.0f);
        kd = NULL;
    }
    if (!rc)
        rc = distill_loss_fitnets(&fit, "relu1", "relu1");
    if (!rc) {
        rc = distill_trainer_add_loss(f->tr, fit, 0.5f);
        fit = NULL;
    }
    distill_loss_free(kd);
    distill_loss_free(fit);
    distill_tensor *x = NULL;
    int32_t y[FZ_BATCH];
    if (!rc && steps > 0)
        rc = fz_batch(&x, y);
    for (int s = 0; !rc && s < steps; s++)
        rc = distill_trainer_step(f->tr, x, y, NULL);
    distill_tensor_free(x);
    if (rc)
        fz_trainer_free(f);
    return rc;
}

#endif /* DISTILL_FUZZ_COMMON_H */

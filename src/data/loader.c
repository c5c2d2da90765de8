/*
 * loader.c - batches from a dataset: shuffling, the transforms
 * (torchvision's Resize, CenterCrop, RandomResizedCrop, pad-and-crop,
 * RandomHorizontalFlip, Normalize), and background threads that build
 * batches, decoding streamed samples from their files.
 *
 * Every batch is a pure function of (seed, epoch, position): the order of
 * epoch e is a Fisher-Yates shuffle from a generator seeded with
 * derive(seed, e, PERM_TAG), and the augmentation of the sample at position
 * q of epoch e comes from generators seeded with derive(seed, e, q).  Each
 * sample is built by one thread from its key alone, into its own slot of
 * the batch, so the batch does not depend on which thread built which
 * sample, on how many threads there are, on prefetching, or on what was
 * built before; a resumed run repeats the original.
 *
 * Threads (all shared fields under `mu`): a batch to build is a `job` -- its
 * key, the store index of each of its samples (computed by the host, which
 * alone owns the epoch order), a destination, and counters.  Workers, and
 * the host while it waits, claim samples one at a time (`next`), build them
 * outside the lock, and count them `done`.  There are two jobs: `cur`, the
 * batch the host is returning now (built straight into the host's tensor),
 * and `pre`, the batch after it (built into `buf`, with prefetch).  Workers
 * serve `cur` first.  A job's destination is only written for claimed
 * samples and only read after done == count; a job is reused only after
 * every claimed sample is done (claims stopped first), so no thread writes
 * a buffer another one reads.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "data/data_internal.h"
#include "util/util.h"

#define PERM_TAG UINT64_MAX /* positions are < 2^63, so never equal */
#define RRC_TAG 0x5252435f424f5845ull /* the RandomResizedCrop generator's stream */
#define MAX_CROP_PADDING 65535
#define MAX_SIDE 65535
#define MAX_WORKERS 64
#define RRC_ATTEMPTS 10 /* torchvision's */

/* The order of one epoch, cached by the host thread. */
typedef struct perm_cache {
    int valid;
    uint64_t epoch;
    int64_t *order; /* n positions of the view */
} perm_cache;

/* One thread's buffers for building a sample. */
typedef struct scratch {
    uint8_t *raw;              /* a streamed sample's bytes (store shape) */
    int64_t raw_s;             /* the store index raw holds, or -1 (the views of a
                                  cache are taken one sample at a time) */
    float *mid;                /* Resize / CenterCrop output (c, bh, bw) before a
                                  RandomResizedCrop */
    int64_t *y0, *y1, *x0, *x1; /* RandomResizedCrop taps, oh and ow entries */
    float *ty, *tx;
} scratch;

/* A batch being built; see the protocol at the top. */
typedef struct job {
    int active;
    uint64_t epoch, pos;
    int count;
    int64_t *sidx;   /* batch store indices */
    int32_t *labels; /* batch labels (-1 unlabelled) */
    float *dst;      /* count * elems */
    int next, done;  /* samples claimed, samples finished */
    int status;      /* first failure, with its message */
    char msg[512];
} job;

/* Bilinear taps along one axis (the Resize of stage 1). */
typedef struct taps {
    int64_t *i0, *i1;
    float *t;
} taps;

struct distill_loader {
    /* Fixed at creation; read by every thread. */
    store *st;
    int64_t n;
    int64_t *map; /* view position -> store index */
    int labelled;
    int batch, shuffle, drop_last, pad, hflip;
    uint64_t seed;
    float pad_value;
    int normalize;
    float *mean, *std; /* c values each */
    float *lut;        /* byte stores: c * 256 normalized values */
    float lut01[256];  /* byte / 255 */
    int64_t c, sh, sw; /* the store's shape */
    size_t in_elems;   /* c * sh * sw */
    /* stage 1: Resize to (rh, rw), then the (bh, bw) window at (ctop, cleft) */
    int stage1, resize;
    int64_t rh, rw, bh, bw, ctop, cleft;
    taps ty, tx; /* bh and bw entries, when resizing */
    /* stage 2: RandomResizedCrop of the (bh, bw) image to (oh, ow) */
    int rrc;
    int64_t oh, ow;
    double scale[2], log_ratio[2];
    float ratio[2];
    int64_t h, w;  /* output */
    size_t elems;  /* c * h * w */

    /* The host thread's. */
    uint64_t epoch, pos;
    perm_cache host_perm;
    scratch host_sc;

    /* Threads. */
    int nthreads, started, prefetch;
    pthread_t *threads;
    scratch *sc; /* one per thread */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int quit;      /* under mu */
    job cur, pre;  /* under mu (their buffers: see the protocol) */
    float *buf;    /* pre's destination */
};

int distill_loader_options_init(distill_loader_options *opts, unsigned int version)
{
    static const distill_loader_options init = DISTILL_LOADER_OPTIONS_INIT;
    INIT_STRUCT(opts, version, DISTILL_LOADER_OPTIONS_VERSION, init, "distill_loader_options",
                "distill_loader_options_init");
}

/* ========================================================= determinism */

/* Three splitmix64 steps, each from the last output mixed with the next
 * input (util/util.h). */
static uint64_t derive(uint64_t seed, uint64_t epoch, uint64_t what)
{
    uint64_t z = seed;
    z = splitmix64(&z) ^ epoch;
    z = splitmix64(&z) ^ what;
    return splitmix64(&z);
}

/* The order of `epoch` (NULL when not shuffling: the identity). */
static const int64_t *epoch_order(const distill_loader *ld, perm_cache *pc, uint64_t epoch)
{
    if (!ld->shuffle)
        return NULL;
    if (pc->valid && pc->epoch == epoch)
        return pc->order;
    int64_t *o = pc->order;
    for (int64_t i = 0; i < ld->n; i++)
        o[i] = i;
    rng r;
    rng_seed(&r, derive(ld->seed, epoch, PERM_TAG));
    for (int64_t i = ld->n - 1; i > 0; i--) {
        int64_t j = (int64_t)rng_below(&r, (uint64_t)i + 1);
        int64_t t = o[i];
        o[i] = o[j];
        o[j] = t;
    }
    pc->valid = 1;
    pc->epoch = epoch;
    return o;
}

/* Samples in the batch starting at `pos`; 0 when the epoch has none left. */
static int batch_count(const distill_loader *ld, uint64_t pos)
{
    uint64_t left = pos < (uint64_t)ld->n ? (uint64_t)ld->n - pos : 0;
    if (left >= (uint64_t)ld->batch)
        return ld->batch;
    return ld->drop_last ? 0 : (int)left;
}

/* The key of the batch that follows position (epoch, pos): itself, or the
 * start of the next epoch when this one has no batch left. */
static void next_key(const distill_loader *ld, uint64_t *epoch, uint64_t *pos)
{
    if (batch_count(ld, *pos) == 0) {
        (*epoch)++;
        *pos = 0;
    }
}

/* ======================================================== geometry */

/* Bilinear source taps of output index i for src -> dst samples, half-pixel
 * centres, no antialiasing: PyTorch's upsample_bilinear2d with
 * align_corners=False, in float as it computes them for float input. */
static void bilinear_tap(int64_t i, int64_t src, int64_t dst, int64_t *i0, int64_t *i1, float *t)
{
    float scale = (float)src / (float)dst;
    float s = scale * ((float)i + 0.5f) - 0.5f;
    if (s < 0)
        s = 0;
    int64_t a = (int64_t)s;
    if (a > src - 1)
        a = src - 1;
    *i0 = a;
    *i1 = a < src - 1 ? a + 1 : a;
    *t = s - (float)a;
}

/* torchvision's Resize(int) size: the shorter side becomes `size`, the
 * longer int(size * long / short) (a correctly rounded division, as
 * Python's, then truncated). */
static void resize_dims(int64_t h, int64_t w, int64_t size, int64_t *rh, int64_t *rw)
{
    if (h <= w) {
        *rh = size;
        *rw = (int64_t)((double)(size * w) / (double)h);
    } else {
        *rw = size;
        *rh = (int64_t)((double)(size * h) / (double)w);
    }
}

/* torchvision's centre-crop offset: int(round((src - dst) / 2.0)), ties to
 * even, when the crop fits; else -((dst - src) // 2) (zero padding on the
 * top or left, the odd pixel at the bottom or right). */
static int64_t center_offset(int64_t src, int64_t dst)
{
    if (dst > src)
        return -((dst - src) / 2);
    int64_t d = src - dst, k = d / 2;
    return (d % 2 == 0 || k % 2 == 0) ? k : k + 1;
}

int loader_rrc_box(const distill_loader *ld, uint64_t epoch, uint64_t q, int64_t box[4])
{
    /* torchvision's RandomResizedCrop.get_params on the (bh, bw) image */
    const int64_t H = ld->bh, W = ld->bw;
    const double area = (double)H * (double)W;
    rng r;
    uint64_t z = derive(ld->seed, epoch, q) ^ RRC_TAG;
    rng_seed(&r, splitmix64(&z));
    for (int attempt = 0; attempt < RRC_ATTEMPTS; attempt++) {
        double target = area * (ld->scale[0] + (ld->scale[1] - ld->scale[0]) * rng_uniform(&r));
        double aspect = exp(ld->log_ratio[0] +
                            (ld->log_ratio[1] - ld->log_ratio[0]) * rng_uniform(&r));
        /* Python's round(): to nearest, ties to even, as nearbyint does */
        double wd = nearbyint(sqrt(target * aspect)), hd = nearbyint(sqrt(target / aspect));
        if (wd > 0 && wd <= (double)W && hd > 0 && hd <= (double)H) {
            int64_t w = (int64_t)wd, h = (int64_t)hd;
            box[0] = (int64_t)rng_below(&r, (uint64_t)(H - h + 1));
            box[1] = (int64_t)rng_below(&r, (uint64_t)(W - w + 1));
            box[2] = h;
            box[3] = w;
            return 0;
        }
    }
    /* the fallback: the whole image, clamped to the ratio range, centred */
    double in_ratio = (double)W / (double)H;
    int64_t w = W, h = H;
    if (in_ratio < (double)ld->ratio[0])
        h = (int64_t)nearbyint((double)w / (double)ld->ratio[0]);
    else if (in_ratio > (double)ld->ratio[1])
        w = (int64_t)nearbyint((double)h * (double)ld->ratio[1]);
    if (h < 1)
        h = 1;
    if (w < 1)
        w = 1;
    box[0] = (H - h) / 2;
    box[1] = (W - w) / 2;
    box[2] = h;
    box[3] = w;
    return 1;
}

/* ======================================================== building */

/* The pad-crop offsets and flip of the sample at position q of `epoch`. */
static void sample_view(const distill_loader *ld, uint64_t epoch, uint64_t q, int64_t *ox,
                        int64_t *oy, int *flip)
{
    *ox = ld->pad, *oy = ld->pad; /* offsets in the padded image; P = none */
    *flip = 0;
    if (ld->pad > 0 || ld->hflip) {
        rng r;
        rng_seed(&r, derive(ld->seed, epoch, q));
        *ox = (int64_t)rng_below(&r, 2 * (uint64_t)ld->pad + 1);
        *oy = (int64_t)rng_below(&r, 2 * (uint64_t)ld->pad + 1);
        uint64_t coin = rng_next(&r) >> 63;
        *flip = ld->hflip && coin;
    }
}

static inline float pixel(const distill_loader *ld, const uint8_t *s8, const float *sf, size_t i)
{
    return s8 ? ld->lut01[s8[i]] : sf[i];
}

/* Stage 1: Resize then CenterCrop of the store sample (s8 or sf), as
 * values, into mid (c, bh, bw); only the window's pixels are computed. */
static void stage_base(const distill_loader *ld, const uint8_t *s8, const float *sf, float *mid)
{
    const int64_t sh = ld->sh, sw = ld->sw, bh = ld->bh, bw = ld->bw;
    for (int64_t k = 0; k < ld->c; k++) {
        size_t plane = (size_t)(k * sh * sw);
        for (int64_t y = 0; y < bh; y++) {
            float *out = mid + (k * bh + y) * bw;
            int64_t ry = y + ld->ctop;
            if (ry < 0 || ry >= ld->rh) {
                memset(out, 0, (size_t)bw * sizeof *out);
                continue;
            }
            for (int64_t x = 0; x < bw; x++) {
                int64_t rx = x + ld->cleft;
                if (rx < 0 || rx >= ld->rw) {
                    out[x] = 0.0f;
                } else if (!ld->resize) {
                    out[x] = pixel(ld, s8, sf, plane + (size_t)(ry * sw + rx));
                } else {
                    size_t r0 = plane + (size_t)(ld->ty.i0[y] * sw);
                    size_t r1 = plane + (size_t)(ld->ty.i1[y] * sw);
                    int64_t x0 = ld->tx.i0[x], x1 = ld->tx.i1[x];
                    float wy = ld->ty.t[y], wx = ld->tx.t[x];
                    out[x] = (1 - wy) * ((1 - wx) * pixel(ld, s8, sf, r0 + (size_t)x0) +
                                         wx * pixel(ld, s8, sf, r0 + (size_t)x1)) +
                             wy * ((1 - wx) * pixel(ld, s8, sf, r1 + (size_t)x0) +
                                   wx * pixel(ld, s8, sf, r1 + (size_t)x1));
                }
            }
        }
    }
}

/* The RandomResizedCrop's taps: output row y of (oh, ow) reads rows y0, y1
 * of the box (top, left, h, w), in the coordinates of the whole image. */
static void rrc_taps(const distill_loader *ld, scratch *sc, const int64_t box[4])
{
    for (int64_t y = 0; y < ld->oh; y++) {
        bilinear_tap(y, box[2], ld->oh, &sc->y0[y], &sc->y1[y], &sc->ty[y]);
        sc->y0[y] += box[0];
        sc->y1[y] += box[0];
    }
    for (int64_t x = 0; x < ld->ow; x++) {
        bilinear_tap(x, box[3], ld->ow, &sc->x0[x], &sc->x1[x], &sc->tx[x]);
        sc->x0[x] += box[1];
        sc->x1[x] += box[1];
    }
}

/*
 * Where the last pass reads the (h, w) image before pad-and-crop and flip:
 * planes (c, ph, pw) of bytes (p8) or values (pf), either directly at
 * (y + oy0, x + ox0) -- zero outside, a CenterCrop's padding -- or through
 * bilinear taps per row and column (a Resize, or a RandomResizedCrop's
 * box), i0 < 0 marking a row or column outside the image (zero).
 */
typedef struct sampler {
    const uint8_t *p8;
    const float *pf;
    int64_t ph, pw;
    int interp;
    int64_t oy0, ox0;
    const int64_t *y0, *y1, *x0, *x1;
    const float *ty, *tx;
} sampler;

/*
 * The last pass, in one sweep over the output: pad-and-crop at (ox, oy),
 * flip, the sampling of the last resize (or crop), the conversion of
 * bytes, and normalization, into dst (c, h, w).  The values are those of
 * doing each step on its own image in turn: the same float operations.
 */
static void final_pass(const distill_loader *ld, const sampler *sm, int64_t ox, int64_t oy,
                       int flip, float *dst)
{
    const int64_t c = ld->c, h = ld->h, w = ld->w, ph = sm->ph, pw = sm->pw;
    /* out[y][x] = padded[y + oy][xs + ox] with xs = flip ? w-1-x : x; in
     * the unpadded image that is row y + oy - P, column xs + ox - P. */
    const int64_t dy = oy - ld->pad, dx = ox - ld->pad;
    const uint8_t *p8 = sm->p8;
    const float *pf = sm->pf;
    for (int64_t k = 0; k < c; k++) {
        /* bytes read directly: converted and normalized by the table */
        const float *lut = p8 && !sm->interp ? ld->lut + k * 256 : NULL;
        const float mean = ld->mean[k], sd = ld->std[k];
        const float zero = ld->normalize ? (0.0f - mean) / sd : 0.0f;
        const size_t plane = (size_t)(k * ph * pw);
        for (int64_t y = 0; y < h; y++) {
            float *out = dst + (k * h + y) * w;
            int64_t sy = y + dy;
            if (sy < 0 || sy >= h) {
                for (int64_t x = 0; x < w; x++)
                    out[x] = ld->pad_value;
                continue;
            }
            size_t r0, r1 = 0;
            float wy = 0;
            int zero_row;
            if (sm->interp) {
                zero_row = sm->y0[sy] < 0;
                r0 = plane + (size_t)(sm->y0[sy] * pw);
                r1 = plane + (size_t)(sm->y1[sy] * pw);
                wy = sm->ty[sy];
            } else {
                int64_t ry = sy + sm->oy0;
                zero_row = ry < 0 || ry >= ph;
                r0 = plane + (size_t)(ry * pw);
            }
            for (int64_t x = 0; x < w; x++) {
                int64_t sx = (flip ? w - 1 - x : x) + dx;
                float v;
                if (sx < 0 || sx >= w) {
                    out[x] = ld->pad_value;
                    continue;
                }
                if (sm->interp) {
                    int64_t x0 = sm->x0[sx], x1 = sm->x1[sx];
                    if (zero_row || x0 < 0) {
                        out[x] = zero;
                        continue;
                    }
                    float wx = sm->tx[sx];
                    v = (1 - wy) * ((1 - wx) * pixel(ld, p8, pf, r0 + (size_t)x0) +
                                    wx * pixel(ld, p8, pf, r0 + (size_t)x1)) +
                        wy * ((1 - wx) * pixel(ld, p8, pf, r1 + (size_t)x0) +
                              wx * pixel(ld, p8, pf, r1 + (size_t)x1));
                } else {
                    int64_t rx = sx + sm->ox0;
                    if (zero_row || rx < 0 || rx >= pw) {
                        out[x] = zero;
                        continue;
                    }
                    if (lut) {
                        out[x] = lut[p8[r0 + (size_t)rx]];
                        continue;
                    }
                    v = pixel(ld, p8, pf, r0 + (size_t)rx);
                }
                out[x] = ld->normalize ? (v - mean) / sd : v;
            }
        }
    }
}

/* Store sample s through the transforms, with pad-crop offsets (ox, oy)
 * and flip; the RandomResizedCrop box of (epoch, q) when there is one.
 * Into dst (c, h, w).  Only a Resize + CenterCrop followed by a
 * RandomResizedCrop takes an image in between; otherwise the last pass
 * reads the stored sample itself. */
static int build_view(const distill_loader *ld, scratch *sc, int64_t s, uint64_t epoch,
                      uint64_t q, int64_t ox, int64_t oy, int flip, float *dst)
{
    const store *st = ld->st;
    sampler sm;
    memset(&sm, 0, sizeof sm);
    if (st->type == STORE_FILES) {
        if (sc->raw_s != s) {
            sc->raw_s = -1;
            int rc = store_sample_u8(st, s, sc->raw);
            if (rc)
                return rc;
            sc->raw_s = s;
        }
        sm.p8 = sc->raw;
    } else if (st->type == STORE_U8) {
        sm.p8 = (const uint8_t *)st->pixels + (size_t)s * ld->in_elems;
    } else {
        sm.pf = (const float *)st->pixels + (size_t)s * ld->in_elems;
    }
    sm.ph = ld->sh;
    sm.pw = ld->sw;
    if (ld->rrc) {
        if (ld->stage1) {
            stage_base(ld, sm.p8, sm.pf, sc->mid);
            sm.p8 = NULL;
            sm.pf = sc->mid;
            sm.ph = ld->bh;
            sm.pw = ld->bw;
        }
        int64_t box[4];
        loader_rrc_box(ld, epoch, q, box);
        rrc_taps(ld, sc, box);
        sm.interp = 1;
        sm.y0 = sc->y0;
        sm.y1 = sc->y1;
        sm.ty = sc->ty;
        sm.x0 = sc->x0;
        sm.x1 = sc->x1;
        sm.tx = sc->tx;
    } else if (ld->resize) {
        sm.interp = 1;
        sm.y0 = ld->ty.i0;
        sm.y1 = ld->ty.i1;
        sm.ty = ld->ty.t;
        sm.x0 = ld->tx.i0;
        sm.x1 = ld->tx.i1;
        sm.tx = ld->tx.t;
    } else {
        sm.oy0 = ld->ctop; /* a CenterCrop alone, or nothing */
        sm.ox0 = ld->cleft;
    }
    final_pass(ld, &sm, ox, oy, flip, dst);
    return DISTILL_OK;
}

/* The sample at position q of `epoch` (store index s) into dst. */
static int build_sample(const distill_loader *ld, scratch *sc, int64_t s, uint64_t epoch,
                        uint64_t q, float *dst)
{
    int64_t ox, oy;
    int flip;
    sample_view(ld, epoch, q, &ox, &oy, &flip);
    return build_view(ld, sc, s, epoch, q, ox, oy, flip, dst);
}

/* The store indices and labels of the batch at (epoch, pos), on the host. */
static void batch_indices(distill_loader *ld, uint64_t epoch, uint64_t pos, int count,
                          int64_t *sidx, int32_t *labels)
{
    const int64_t *order = epoch_order(ld, &ld->host_perm, epoch);
    for (int j = 0; j < count; j++) {
        uint64_t q = pos + (uint64_t)j;
        int64_t s = ld->map[order ? order[q] : (int64_t)q];
        sidx[j] = s;
        if (labels)
            labels[j] = ld->labelled ? ld->st->labels[s] : -1;
    }
}

/* ======================================================== threads */

/* Claim and build samples of j until none is left to claim (or the
 * loader is being freed); called with mu held, returns with it held. */
static void work_on(distill_loader *ld, scratch *sc, job *j)
{
    while (!ld->quit && j->active && j->next < j->count) {
        int k = j->next++;
        uint64_t epoch = j->epoch, q = j->pos + (uint64_t)k;
        int64_t s = j->sidx[k];
        float *dst = j->dst + (size_t)k * ld->elems;
        pthread_mutex_unlock(&ld->mu);
        int rc = build_sample(ld, sc, s, epoch, q, dst);
        pthread_mutex_lock(&ld->mu);
        if (rc && !j->status) {
            j->status = rc;
            snprintf(j->msg, sizeof j->msg, "%s", util_last_error());
        }
        if (++j->done == j->count)
            pthread_cond_broadcast(&ld->cv);
    }
}

typedef struct worker_arg {
    distill_loader *ld;
    int id;
} worker_arg;

static int has_work(const job *j)
{
    return j->active && j->next < j->count;
}

static void *worker_main(void *arg)
{
    distill_loader *ld = ((worker_arg *)arg)->ld;
    scratch *sc = &ld->sc[((worker_arg *)arg)->id];
    xfree(arg);
    pthread_mutex_lock(&ld->mu);
    for (;;) {
        while (!ld->quit && !has_work(&ld->cur) && !has_work(&ld->pre))
            pthread_cond_wait(&ld->cv, &ld->mu);
        if (ld->quit)
            break;
        work_on(ld, sc, has_work(&ld->cur) ? &ld->cur : &ld->pre);
    }
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

/* Stop handing out j's samples and wait for the claimed ones; mu held. */
static void job_retire(distill_loader *ld, job *j)
{
    j->count = j->next;
    while (j->done < j->next)
        pthread_cond_wait(&ld->cv, &ld->mu);
    j->active = 0;
}

/* Post j for (epoch, pos); its sidx and labels filled; mu held. */
static void job_post(distill_loader *ld, job *j, uint64_t epoch, uint64_t pos, int count,
                     float *dst)
{
    j->epoch = epoch;
    j->pos = pos;
    j->count = count;
    j->dst = dst;
    j->next = j->done = 0;
    j->status = 0;
    j->msg[0] = '\0';
    j->active = 1;
    pthread_cond_broadcast(&ld->cv);
}

/* Help with j, wait until it is done, retire it; mu held.  Its status. */
static int job_finish(distill_loader *ld, job *j)
{
    work_on(ld, &ld->host_sc, j);
    while (j->done < j->count)
        pthread_cond_wait(&ld->cv, &ld->mu);
    j->active = 0;
    if (j->status)
        return seterr(j->status, "%s", j->msg);
    return DISTILL_OK;
}

/* With prefetch, ask for the batch that follows the host's position. */
static void post_next(distill_loader *ld)
{
    if (!ld->started || !ld->prefetch)
        return;
    uint64_t epoch = ld->epoch, pos = ld->pos;
    next_key(ld, &epoch, &pos);
    int count = batch_count(ld, pos);
    pthread_mutex_lock(&ld->mu);
    job *j = &ld->pre;
    int asked = j->active && j->epoch == epoch && j->pos == pos;
    if (!asked && count > 0) {
        if (j->active)
            job_retire(ld, j);
        batch_indices(ld, epoch, pos, count, j->sidx, j->labels);
        job_post(ld, j, epoch, pos, count, ld->buf);
    }
    pthread_mutex_unlock(&ld->mu);
}

/* The batch at (epoch, pos), count samples, into x and labels. */
static int get_batch(distill_loader *ld, uint64_t epoch, uint64_t pos, int count, float *x,
                     int32_t *labels)
{
    if (!ld->started) {
        batch_indices(ld, epoch, pos, count, ld->cur.sidx, labels);
        for (int k = 0; k < count; k++) {
            int rc = build_sample(ld, &ld->host_sc, ld->cur.sidx[k], epoch, pos + (uint64_t)k,
                                  x + (size_t)k * ld->elems);
            if (rc)
                return rc;
        }
        return DISTILL_OK;
    }
    int rc;
    pthread_mutex_lock(&ld->mu);
    job *p = &ld->pre;
    if (p->active && p->epoch == epoch && p->pos == pos && p->count == count) {
        rc = job_finish(ld, p);
        if (rc == DISTILL_OK) {
            memcpy(x, ld->buf, (size_t)count * ld->elems * sizeof(float));
            if (labels)
                memcpy(labels, p->labels, (size_t)count * sizeof(int32_t));
        }
    } else {
        if (p->active)
            job_retire(ld, p);
        job *j = &ld->cur;
        batch_indices(ld, epoch, pos, count, j->sidx, j->labels);
        job_post(ld, j, epoch, pos, count, x);
        rc = job_finish(ld, j);
        if (rc == DISTILL_OK && labels)
            memcpy(labels, j->labels, (size_t)count * sizeof(int32_t));
    }
    pthread_mutex_unlock(&ld->mu);
    return rc;
}

/* ============================================================ lifecycle */

static void scratch_free(scratch *sc)
{
    xfree(sc->raw);
    xfree(sc->mid);
    xfree(sc->y0);
    xfree(sc->y1);
    xfree(sc->x0);
    xfree(sc->x1);
    xfree(sc->ty);
    xfree(sc->tx);
}

static int scratch_alloc(const distill_loader *ld, scratch *sc)
{
    memset(sc, 0, sizeof *sc);
    sc->raw_s = -1;
    if (ld->st->type == STORE_FILES && !(sc->raw = xmalloc(ld->in_elems)))
        return DISTILL_ENOMEM;
    if (ld->stage1 && ld->rrc &&
        !(sc->mid = xmalloc((size_t)(ld->c * ld->bh * ld->bw) * sizeof(float))))
        return DISTILL_ENOMEM;
    if (ld->rrc) {
        size_t oh = (size_t)ld->oh, ow = (size_t)ld->ow;
        sc->y0 = xmalloc(oh * sizeof(int64_t));
        sc->y1 = xmalloc(oh * sizeof(int64_t));
        sc->ty = xmalloc(oh * sizeof(float));
        sc->x0 = xmalloc(ow * sizeof(int64_t));
        sc->x1 = xmalloc(ow * sizeof(int64_t));
        sc->tx = xmalloc(ow * sizeof(float));
        if (!sc->y0 || !sc->y1 || !sc->ty || !sc->x0 || !sc->x1 || !sc->tx)
            return DISTILL_ENOMEM;
    }
    return DISTILL_OK;
}

static void loader_release(distill_loader *ld)
{
    store_release(ld->st);
    xfree(ld->map);
    xfree(ld->mean);
    xfree(ld->std);
    xfree(ld->lut);
    xfree(ld->ty.i0);
    xfree(ld->ty.i1);
    xfree(ld->ty.t);
    xfree(ld->tx.i0);
    xfree(ld->tx.i1);
    xfree(ld->tx.t);
    xfree(ld->host_perm.order);
    scratch_free(&ld->host_sc);
    if (ld->sc) {
        for (int i = 0; i < ld->nthreads; i++)
            scratch_free(&ld->sc[i]);
        xfree(ld->sc);
    }
    xfree(ld->threads);
    xfree(ld->cur.sidx);
    xfree(ld->cur.labels);
    xfree(ld->pre.sidx);
    xfree(ld->pre.labels);
    xfree(ld->buf);
    xfree(ld);
}

static void stop_threads(distill_loader *ld)
{
    if (!ld->started)
        return;
    pthread_mutex_lock(&ld->mu);
    ld->quit = 1;
    pthread_cond_broadcast(&ld->cv);
    pthread_mutex_unlock(&ld->mu);
    for (int i = 0; i < ld->started; i++)
        pthread_join(ld->threads[i], NULL);
    pthread_cond_destroy(&ld->cv);
    pthread_mutex_destroy(&ld->mu);
    ld->started = 0;
}

static int axis_taps(taps *t, int64_t n, int64_t off, int64_t src, int64_t dst)
{
    t->i0 = xmalloc((size_t)n * sizeof(int64_t));
    t->i1 = xmalloc((size_t)n * sizeof(int64_t));
    t->t = xmalloc((size_t)n * sizeof(float));
    if (!t->i0 || !t->i1 || !t->t)
        return DISTILL_ENOMEM;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = i + off;
        if (r < 0 || r >= dst) {
            t->i0[i] = t->i1[i] = -1; /* outside the resized image: zero */
            t->t[i] = 0;
            continue;
        }
        bilinear_tap(r, src, dst, &t->i0[i], &t->i1[i], &t->t[i]);
    }
    return DISTILL_OK;
}

/* Check the transform options against the sample shape; fill the
 * loader's geometry. */
static int setup_geometry(distill_loader *ld, const distill_loader_options *o)
{
    const char *fn = "distill_loader_create";
    if (o->resize < 0 || o->resize > MAX_SIDE)
        return seterr(DISTILL_EINVAL, "%s: resize is %d; must be in 0..%d", fn, o->resize,
                      MAX_SIDE);
    for (int k = 0; k < 2; k++) {
        const int *v = k ? o->random_resized_crop : o->center_crop;
        const char *name = k ? "random_resized_crop" : "center_crop";
        if ((v[0] == 0) != (v[1] == 0) || v[0] < 0 || v[1] < 0 || v[0] > MAX_SIDE ||
            v[1] > MAX_SIDE)
            return seterr(DISTILL_EINVAL, "%s: %s is {%d, %d}; both 0 or both in 1..%d", fn,
                          name, v[0], v[1], MAX_SIDE);
    }
    float s0 = o->rrc_scale[0], s1 = o->rrc_scale[1], r0 = o->rrc_ratio[0], r1 = o->rrc_ratio[1];
    if (s0 == 0 && s1 == 0)
        s0 = 0.08f, s1 = 1.0f;
    if (r0 == 0 && r1 == 0)
        r0 = 3.0f / 4.0f, r1 = 4.0f / 3.0f;
    if (!(s0 > 0 && s0 <= s1 && s1 <= 1))
        return seterr(DISTILL_EINVAL, "%s: rrc_scale is {%g, %g}; need 0 < min <= max <= 1", fn,
                      (double)o->rrc_scale[0], (double)o->rrc_scale[1]);
    if (!(r0 > 0 && r0 <= r1 && isfinite(r1)))
        return seterr(DISTILL_EINVAL, "%s: rrc_ratio is {%g, %g}; need 0 < min <= max, finite",
                      fn, (double)o->rrc_ratio[0], (double)o->rrc_ratio[1]);
    ld->scale[0] = s0;
    ld->scale[1] = s1;
    ld->ratio[0] = r0;
    ld->ratio[1] = r1;
    ld->log_ratio[0] = log((double)r0);
    ld->log_ratio[1] = log((double)r1);

    ld->resize = o->resize != 0;
    ld->rh = ld->sh;
    ld->rw = ld->sw;
    if (ld->resize)
        resize_dims(ld->sh, ld->sw, o->resize, &ld->rh, &ld->rw);
    if (ld->rh < 1 || ld->rw < 1 || ld->rh > MAX_SIDE || ld->rw > MAX_SIDE)
        return seterr(DISTILL_EINVAL, "%s: resize %d makes %lldx%lld samples %lldx%lld", fn,
                      o->resize, (long long)ld->sh, (long long)ld->sw, (long long)ld->rh,
                      (long long)ld->rw);
    ld->bh = ld->rh;
    ld->bw = ld->rw;
    if (o->center_crop[0]) {
        ld->bh = o->center_crop[0];
        ld->bw = o->center_crop[1];
        ld->ctop = center_offset(ld->rh, ld->bh);
        ld->cleft = center_offset(ld->rw, ld->bw);
    }
    if (ld->resize && ld->rh == ld->sh && ld->rw == ld->sw)
        ld->resize = 0; /* the identity: bilinear at scale 1 reads the pixels themselves */
    ld->stage1 = ld->resize || ld->bh != ld->sh || ld->bw != ld->sw;
    if (ld->resize && (axis_taps(&ld->ty, ld->bh, ld->ctop, ld->sh, ld->rh) ||
                       axis_taps(&ld->tx, ld->bw, ld->cleft, ld->sw, ld->rw)))
        return DISTILL_ENOMEM;
    ld->rrc = o->random_resized_crop[0] != 0;
    ld->h = ld->bh;
    ld->w = ld->bw;
    if (ld->rrc) {
        ld->h = ld->oh = o->random_resized_crop[0];
        ld->w = ld->ow = o->random_resized_crop[1];
    }
    size_t mid;
    if (size_mul((size_t)ld->c, (size_t)ld->h * (size_t)ld->w, &ld->elems) ||
        size_mul((size_t)ld->c, (size_t)ld->bh * (size_t)ld->bw, &mid))
        return seterr(DISTILL_EINVAL, "%s: the transformed samples are too large", fn);
    return DISTILL_OK;
}

static int start_threads(distill_loader *ld)
{
    ld->threads = xcalloc((size_t)ld->nthreads, sizeof *ld->threads);
    ld->sc = xcalloc((size_t)ld->nthreads, sizeof *ld->sc);
    if (!ld->threads || !ld->sc)
        return DISTILL_ENOMEM;
    for (int i = 0; i < ld->nthreads; i++)
        if (scratch_alloc(ld, &ld->sc[i]))
            return DISTILL_ENOMEM;
    if (pthread_mutex_init(&ld->mu, NULL) != 0)
        return seterr(DISTILL_ENOMEM, "distill_loader_create: cannot start the loader threads");
    if (pthread_cond_init(&ld->cv, NULL) != 0) {
        pthread_mutex_destroy(&ld->mu);
        return seterr(DISTILL_ENOMEM, "distill_loader_create: cannot start the loader threads");
    }
    /* The workers run with every signal blocked: the host's handlers run
     * on the host's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = 0;
    for (int i = 0; i < ld->nthreads && !err; i++) {
        worker_arg *a = xmalloc(sizeof *a);
        if (!a) {
            err = 1;
            break;
        }
        a->ld = ld;
        a->id = i;
        if (pthread_create(&ld->threads[i], NULL, worker_main, a) != 0) {
            xfree(a);
            err = 1;
            break;
        }
        ld->started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        if (ld->started) {
            stop_threads(ld);
        } else {
            pthread_cond_destroy(&ld->cv);
            pthread_mutex_destroy(&ld->mu);
        }
        return seterr(DISTILL_ENOMEM, "distill_loader_create: cannot start the loader threads");
    }
    return DISTILL_OK;
}

int distill_loader_create(distill_loader **out, const distill_dataset *ds,
                          const distill_loader_options *opts)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_loader_create: out is NULL");
    *out = NULL;
    if (!ds)
        return seterr(DISTILL_EINVAL, "distill_loader_create: dataset is NULL");
    distill_loader_options o = DISTILL_LOADER_OPTIONS_INIT;
    if (opts) {
        COPY_OPTIONS(&o, opts, DISTILL_LOADER_OPTIONS_VERSION, "distill_loader_options",
                     "distill_loader_create");
    }
    const store *st = ds->st;
    if (o.batch_size < 1)
        return seterr(DISTILL_EINVAL, "distill_loader_create: batch_size is %d; must be >= 1",
                      o.batch_size);
    if (o.drop_last && ds->n < o.batch_size)
        return seterr(DISTILL_EINVAL,
                      "distill_loader_create: drop_last with %lld samples and batch_size %d "
                      "gives no batch",
                      (long long)ds->n, o.batch_size);
    if (o.crop_padding < 0 || o.crop_padding > MAX_CROP_PADDING)
        return seterr(DISTILL_EINVAL, "distill_loader_create: crop_padding is %d; must be in "
                      "0..%d", o.crop_padding, MAX_CROP_PADDING);
    if (o.norm_count != 0 && o.norm_count != 1 && o.norm_count != st->c)
        return seterr(DISTILL_EINVAL,
                      "distill_loader_create: norm_count is %d; must be 0, 1 or the %lld "
                      "channels",
                      o.norm_count, (long long)st->c);
    if (o.norm_count && (!o.mean || !o.std))
        return seterr(DISTILL_EINVAL, "distill_loader_create: norm_count is %d but mean or std "
                      "is NULL", o.norm_count);
    for (int k = 0; k < o.norm_count; k++)
        if (!isfinite(o.mean[k]) || !isfinite(o.std[k]) || !(o.std[k] > 0))
            return seterr(DISTILL_EINVAL,
                          "distill_loader_create: mean[%d] = %g, std[%d] = %g; need finite "
                          "values and std > 0",
                          k, (double)o.mean[k], k, (double)o.std[k]);
    if (!isfinite(o.pad_value))
        return seterr(DISTILL_EINVAL, "distill_loader_create: pad_value is not finite");
    if (o.workers < 0 || o.workers > MAX_WORKERS)
        return seterr(DISTILL_EINVAL, "distill_loader_create: workers is %d; must be in 0..%d",
                      o.workers, MAX_WORKERS);

    distill_loader *ld = xcalloc(1, sizeof *ld);
    if (!ld)
        return DISTILL_ENOMEM;
    store_retain(ds->st);
    ld->st = ds->st;
    ld->n = ds->n;
    ld->labelled = ds->labelled;
    ld->batch = o.batch_size;
    ld->shuffle = o.shuffle != 0;
    ld->drop_last = o.drop_last != 0;
    ld->pad = o.crop_padding;
    ld->hflip = o.hflip != 0;
    ld->seed = o.seed;
    ld->pad_value = o.pad_value;
    ld->normalize = o.norm_count != 0;
    ld->c = st->c;
    ld->sh = st->h;
    ld->sw = st->w;
    ld->in_elems = st->sample_elems;
    int rc = setup_geometry(ld, &o);
    if (rc) {
        loader_release(ld);
        return rc;
    }

    size_t nbytes = (size_t)ld->n * sizeof(int64_t), bytes;
    ld->map = xmalloc(nbytes);
    ld->mean = xmalloc((size_t)ld->c * sizeof(float));
    ld->std = xmalloc((size_t)ld->c * sizeof(float));
    ld->cur.sidx = xmalloc((size_t)ld->batch * sizeof(int64_t));
    ld->cur.labels = xmalloc((size_t)ld->batch * sizeof(int32_t));
    if (ld->shuffle)
        ld->host_perm.order = xmalloc(nbytes);
    if (!ld->map || !ld->mean || !ld->std || !ld->cur.sidx || !ld->cur.labels ||
        (ld->shuffle && !ld->host_perm.order) || scratch_alloc(ld, &ld->host_sc))
        goto nomem;
    for (int64_t i = 0; i < ld->n; i++)
        ld->map[i] = view_index(ds, i);
    for (int64_t k = 0; k < ld->c; k++) {
        ld->mean[k] = o.norm_count ? o.mean[o.norm_count == 1 ? 0 : k] : 0.0f;
        ld->std[k] = o.norm_count ? o.std[o.norm_count == 1 ? 0 : k] : 1.0f;
    }
    for (int v = 0; v < 256; v++)
        ld->lut01[v] = (float)v / 255.0f;
    if (st->type != STORE_F32) {
        /* The same float operations as normalizing byte / 255 one by one. */
        ld->lut = xmalloc((size_t)ld->c * 256 * sizeof(float));
        if (!ld->lut)
            goto nomem;
        for (int64_t k = 0; k < ld->c; k++)
            for (int v = 0; v < 256; v++)
                ld->lut[k * 256 + v] = ld->normalize
                                           ? ((float)v / 255.0f - ld->mean[k]) / ld->std[k]
                                           : (float)v / 255.0f;
    }

    ld->prefetch = o.prefetch != 0;
    ld->nthreads = o.workers ? o.workers : ld->prefetch ? 1 : 0;
    if (ld->nthreads) {
        if (size_mul((size_t)ld->batch, ld->elems * sizeof(float), &bytes)) {
            loader_release(ld);
            return seterr(DISTILL_EINVAL, "distill_loader_create: batch of %d samples of %zu "
                          "values is too large", ld->batch, ld->elems);
        }
        if (ld->prefetch) {
            ld->buf = xmalloc(bytes);
            ld->pre.sidx = xmalloc((size_t)ld->batch * sizeof(int64_t));
            ld->pre.labels = xmalloc((size_t)ld->batch * sizeof(int32_t));
            if (!ld->buf || !ld->pre.sidx || !ld->pre.labels)
                goto nomem;
        }
        if ((rc = start_threads(ld))) {
            loader_release(ld);
            return rc;
        }
        post_next(ld);
    }
    *out = ld;
    return DISTILL_OK;
nomem:
    loader_release(ld);
    return DISTILL_ENOMEM;
}

void distill_loader_free(distill_loader *ld)
{
    if (!ld)
        return;
    stop_threads(ld);
    loader_release(ld);
}

/* =============================================================== batches */

int distill_loader_next(distill_loader *ld, distill_tensor *images, int32_t *labels, int *count)
{
    if (count)
        *count = 0;
    if (!ld || !images || !count)
        return seterr(DISTILL_EINVAL, "distill_loader_next: loader, images or count is NULL");
    int k = batch_count(ld, ld->pos);
    if (k == 0) {
        ld->epoch++;
        ld->pos = 0;
        return DISTILL_OK;
    }
    int64_t dims[4] = {k, ld->c, ld->h, ld->w};
    int rc = distill_tensor_reshape(images, 4, dims);
    if (rc)
        return rc;
    if ((rc = get_batch(ld, ld->epoch, ld->pos, k, distill_tensor_data(images), labels)))
        return rc;
    ld->pos += (uint64_t)k;
    *count = k;
    post_next(ld);
    return DISTILL_OK;
}

int distill_loader_sample_dims(const distill_loader *ld, int64_t dims[3])
{
    if (!ld || !dims)
        return seterr(DISTILL_EINVAL, "distill_loader_sample_dims: NULL argument");
    dims[0] = ld->c;
    dims[1] = ld->h;
    dims[2] = ld->w;
    return DISTILL_OK;
}

int64_t distill_loader_num_batches(const distill_loader *ld)
{
    if (!ld)
        return 0;
    return ld->drop_last ? ld->n / ld->batch : (ld->n + ld->batch - 1) / ld->batch;
}

int distill_loader_get_state(const distill_loader *ld, uint64_t *epoch, uint64_t *position)
{
    if (!ld)
        return seterr(DISTILL_EINVAL, "distill_loader_get_state: loader is NULL");
    if (epoch)
        *epoch = ld->epoch;
    if (position)
        *position = ld->pos;
    return DISTILL_OK;
}

int distill_loader_set_state(distill_loader *ld, uint64_t epoch, uint64_t position)
{
    if (!ld)
        return seterr(DISTILL_EINVAL, "distill_loader_set_state: loader is NULL");
    if (position > (uint64_t)ld->n)
        return seterr(DISTILL_EINVAL,
                      "distill_loader_set_state: position %llu is past the %lld samples",
                      (unsigned long long)position, (long long)ld->n);
    ld->epoch = epoch;
    ld->pos = position;
    post_next(ld);
    return DISTILL_OK;
}

int distill_loader_set_epoch(distill_loader *ld, uint64_t epoch)
{
    return distill_loader_set_state(ld, epoch, 0);
}

int distill_loader_reset(distill_loader *ld)
{
    return distill_loader_set_state(ld, 0, 0);
}

/* ======================================================== views (teacher caches) */

int loader_views_enumerable(const distill_loader *ld)
{
    return !ld->rrc;
}

int loader_view_count(const distill_loader *ld)
{
    int side = 2 * ld->pad + 1;
    return side * side * (ld->hflip ? 2 : 1);
}

int loader_batch_views(distill_loader *ld, uint64_t epoch, uint64_t pos, int count,
                       int64_t *index, int32_t *view)
{
    if (pos + (uint64_t)count > (uint64_t)ld->n)
        return seterr(DISTILL_EINVAL, "loader views: batch past the end of the epoch");
    if (ld->rrc)
        return seterr(DISTILL_EINVAL, "loader views: a RandomResizedCrop has no enumerable "
                                      "views");
    const int64_t *order = epoch_order(ld, &ld->host_perm, epoch);
    int side = 2 * ld->pad + 1;
    for (int j = 0; j < count; j++) {
        uint64_t q = pos + (uint64_t)j;
        int64_t ox, oy;
        int flip;
        index[j] = order ? order[q] : (int64_t)q;
        sample_view(ld, epoch, q, &ox, &oy, &flip);
        view[j] = (int32_t)(((oy * side + ox) * (ld->hflip ? 2 : 1)) + flip);
    }
    return DISTILL_OK;
}

int loader_build_view(distill_loader *ld, int64_t index, int32_t view, float *dst)
{
    int side = 2 * ld->pad + 1, flips = ld->hflip ? 2 : 1;
    if (ld->rrc)
        return seterr(DISTILL_EINVAL, "loader views: a RandomResizedCrop has no enumerable "
                                      "views");
    if (index < 0 || index >= ld->n || view < 0 || view >= side * side * flips)
        return seterr(DISTILL_EINVAL, "loader view %d of sample %lld is out of range", view,
                      (long long)index);
    int flip = view % flips;
    int64_t cell = view / flips;
    return build_view(ld, &ld->host_sc, ld->map[index], 0, 0, cell % side, cell / side, flip,
                      dst);
}

int64_t loader_size(const distill_loader *ld)
{
    return ld->n;
}

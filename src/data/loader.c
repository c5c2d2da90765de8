/*
 * loader.c - batches from a dataset: shuffling, normalization, augmentation
 * and a background thread that prepares the next batch.
 *
 * Every batch is a pure function of (seed, epoch, position): the order of
 * epoch e is a Fisher-Yates shuffle from a generator seeded with
 * derive(seed, e, PERM_TAG), and the augmentation of the sample at position
 * q of epoch e comes from a generator seeded with derive(seed, e, q).  So
 * the host thread and the prefetch thread compute the same batch for the
 * same key, whichever does it, and a resumed run repeats the original.
 *
 * The prefetch protocol (one worker, one result buffer, all flags under
 * `mu`): the host posts the key of the batch it will want next; the worker
 * takes it, fills `buf` with `busy` set, then records the key as done.  The
 * host uses `buf` only when the last key it posted is the one it wants and
 * the worker is idle; otherwise it builds the batch itself.  `buf` is
 * written only by the worker between a post and the matching completion,
 * and read only by the host after observing that completion, so the two
 * never touch it at once.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "data/data_internal.h"
#include "util/util.h"

#define PERM_TAG UINT64_MAX /* positions are < 2^63, so never equal */
#define MAX_CROP_PADDING 65535

/* The order of one epoch, cached by the thread that owns it. */
typedef struct perm_cache {
    int valid;
    uint64_t epoch;
    int64_t *order; /* n positions of the view */
} perm_cache;

struct distill_loader {
    /* Fixed at creation; read by both threads. */
    store *st;
    int64_t n;
    int64_t *map; /* view position -> store index */
    int labelled;
    int batch, shuffle, drop_last, pad, hflip;
    uint64_t seed;
    float pad_value;
    int normalize;
    float *mean, *std; /* c values each */
    float *lut;        /* u8 stores: c * 256 output values */
    int64_t c, h, w;
    size_t elems; /* c * h * w */

    /* The host thread's. */
    uint64_t epoch, pos;
    perm_cache host_perm;

    /* Prefetching. */
    int threaded;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int quit;            /* under mu */
    int pending, busy;   /* under mu */
    uint64_t job_epoch, job_pos;   /* the last key posted, under mu */
    int done;            /* under mu: buf holds done_epoch/done_pos */
    uint64_t done_epoch, done_pos;
    perm_cache worker_perm; /* the worker's alone */
    float *buf;          /* batch * elems, see the protocol above */
    int32_t *buf_labels; /* batch */
};

int distill_loader_options_init(distill_loader_options *opts, unsigned int version)
{
    if (!opts)
        return seterr(DISTILL_EINVAL, "distill_loader_options_init: opts is NULL");
    if (version != DISTILL_LOADER_OPTIONS_VERSION)
        return seterr(DISTILL_EVERSION, "distill_loader_options_init: unknown version %u",
                      version);
    const distill_loader_options init = DISTILL_LOADER_OPTIONS_INIT;
    *opts = init;
    return DISTILL_OK;
}

/* ========================================================= determinism */

static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t derive(uint64_t seed, uint64_t epoch, uint64_t what)
{
    return mix64(mix64(mix64(seed) ^ epoch) ^ what);
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

/* ======================================================== building */

/* The augmentation view of the sample at position q of `epoch`. */
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

static void build_view(const distill_loader *ld, int64_t s, int64_t ox, int64_t oy, int flip,
                       float *dst);

/* One normalized, augmented sample: store sample s to dst (c, h, w). */
static void build_sample(const distill_loader *ld, int64_t s, uint64_t epoch, uint64_t q,
                         float *dst)
{
    int64_t ox, oy;
    int flip;
    sample_view(ld, epoch, q, &ox, &oy, &flip);
    build_view(ld, s, ox, oy, flip, dst);
}

/* Store sample s seen through view (ox, oy, flip) to dst (c, h, w). */
static void build_view(const distill_loader *ld, int64_t s, int64_t ox, int64_t oy, int flip,
                       float *dst)
{
    const int64_t c = ld->c, h = ld->h, w = ld->w;
    /* out[y][x] = padded[y + oy][xs + ox] with xs = flip ? w-1-x : x; in
     * the unpadded source that is row y + oy - P, column xs + ox - P. */
    const int64_t dy = oy - ld->pad, dx = ox - ld->pad;
    const uint8_t *src8 = NULL;
    const float *srcf = NULL;
    if (ld->st->type == STORE_U8)
        src8 = (const uint8_t *)ld->st->pixels + (size_t)s * ld->elems;
    else
        srcf = (const float *)ld->st->pixels + (size_t)s * ld->elems;
    for (int64_t k = 0; k < c; k++) {
        const float *lut = ld->lut ? ld->lut + k * 256 : NULL;
        const float mean = ld->mean[k], sd = ld->std[k];
        for (int64_t y = 0; y < h; y++) {
            float *out = dst + (k * h + y) * w;
            int64_t sy = y + dy;
            if (sy < 0 || sy >= h) {
                for (int64_t x = 0; x < w; x++)
                    out[x] = ld->pad_value;
                continue;
            }
            size_t row = (size_t)((k * h + sy) * w);
            for (int64_t x = 0; x < w; x++) {
                int64_t sx = (flip ? w - 1 - x : x) + dx;
                float v;
                if (sx < 0 || sx >= w)
                    v = ld->pad_value;
                else if (lut)
                    v = lut[src8[row + (size_t)sx]];
                else if (src8)
                    v = (float)src8[row + (size_t)sx] / 255.0f;
                else if (ld->normalize)
                    v = (srcf[row + (size_t)sx] - mean) / sd;
                else
                    v = srcf[row + (size_t)sx];
                out[x] = v;
            }
        }
    }
}

/* The batch at (epoch, pos): count samples into images, labels (or -1). */
static void build_batch(const distill_loader *ld, perm_cache *pc, uint64_t epoch, uint64_t pos,
                        int count, float *images, int32_t *labels)
{
    const int64_t *order = epoch_order(ld, pc, epoch);
    for (int j = 0; j < count; j++) {
        uint64_t q = pos + (uint64_t)j;
        int64_t s = ld->map[order ? order[q] : (int64_t)q];
        build_sample(ld, s, epoch, q, images + (size_t)j * ld->elems);
        if (labels)
            labels[j] = ld->labelled ? ld->st->labels[s] : -1;
    }
}

/* ======================================================== prefetching */

static void *worker_main(void *arg)
{
    distill_loader *ld = arg;
    pthread_mutex_lock(&ld->mu);
    for (;;) {
        while (!ld->quit && !ld->pending)
            pthread_cond_wait(&ld->cv, &ld->mu);
        if (ld->quit)
            break;
        uint64_t epoch = ld->job_epoch, pos = ld->job_pos;
        ld->pending = 0;
        ld->busy = 1;
        pthread_mutex_unlock(&ld->mu);

        build_batch(ld, &ld->worker_perm, epoch, pos, batch_count(ld, pos), ld->buf,
                    ld->buf_labels);

        pthread_mutex_lock(&ld->mu);
        ld->busy = 0;
        ld->done = 1;
        ld->done_epoch = epoch;
        ld->done_pos = pos;
        pthread_cond_broadcast(&ld->cv);
    }
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

/* Ask the worker for the batch that follows the host's position. */
static void post_next(distill_loader *ld)
{
    if (!ld->threaded)
        return;
    uint64_t epoch = ld->epoch, pos = ld->pos;
    next_key(ld, &epoch, &pos);
    pthread_mutex_lock(&ld->mu);
    /* Already asked for (e.g. set_state to where the loader stands)? */
    int asked = ld->job_epoch == epoch && ld->job_pos == pos &&
                (ld->pending || ld->busy || (ld->done && ld->done_epoch == epoch &&
                                             ld->done_pos == pos));
    if (!asked) {
        ld->job_epoch = epoch;
        ld->job_pos = pos;
        ld->pending = 1;
        pthread_cond_broadcast(&ld->cv);
    }
    pthread_mutex_unlock(&ld->mu);
}

/* If the worker has been asked for (epoch, pos), wait for it; 1 if buf
 * then holds that batch. */
static int take_prefetched(distill_loader *ld, uint64_t epoch, uint64_t pos)
{
    if (!ld->threaded)
        return 0;
    int ok = 0;
    pthread_mutex_lock(&ld->mu);
    if (ld->job_epoch == epoch && ld->job_pos == pos) {
        while (ld->pending || ld->busy)
            pthread_cond_wait(&ld->cv, &ld->mu);
        ok = ld->done && ld->done_epoch == epoch && ld->done_pos == pos;
    }
    pthread_mutex_unlock(&ld->mu);
    return ok;
}

/* ============================================================ lifecycle */

static void loader_release(distill_loader *ld)
{
    store_release(ld->st);
    xfree(ld->map);
    xfree(ld->mean);
    xfree(ld->std);
    xfree(ld->lut);
    xfree(ld->host_perm.order);
    xfree(ld->worker_perm.order);
    xfree(ld->buf);
    xfree(ld->buf_labels);
    xfree(ld);
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
        if (opts->version != DISTILL_LOADER_OPTIONS_VERSION)
            return seterr(DISTILL_EVERSION, "distill_loader_create: options version %u is not %u",
                          opts->version, DISTILL_LOADER_OPTIONS_VERSION);
        o = *opts;
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
    ld->h = st->h;
    ld->w = st->w;
    ld->elems = st->sample_elems;

    size_t nbytes = (size_t)ld->n * sizeof(int64_t);
    ld->map = xmalloc(nbytes);
    ld->mean = xmalloc((size_t)ld->c * sizeof(float));
    ld->std = xmalloc((size_t)ld->c * sizeof(float));
    if (ld->shuffle)
        ld->host_perm.order = xmalloc(nbytes);
    if (!ld->map || !ld->mean || !ld->std || (ld->shuffle && !ld->host_perm.order))
        goto nomem;
    for (int64_t i = 0; i < ld->n; i++)
        ld->map[i] = view_index(ds, i);
    for (int64_t k = 0; k < ld->c; k++) {
        ld->mean[k] = o.norm_count ? o.mean[o.norm_count == 1 ? 0 : k] : 0.0f;
        ld->std[k] = o.norm_count ? o.std[o.norm_count == 1 ? 0 : k] : 1.0f;
    }
    if (st->type == STORE_U8 && ld->normalize) {
        /* The same float operations as normalizing byte / 255 one by one. */
        ld->lut = xmalloc((size_t)ld->c * 256 * sizeof(float));
        if (!ld->lut)
            goto nomem;
        for (int64_t k = 0; k < ld->c; k++)
            for (int v = 0; v < 256; v++)
                ld->lut[k * 256 + v] = ((float)v / 255.0f - ld->mean[k]) / ld->std[k];
    }

    if (o.prefetch) {
        size_t bytes;
        if (size_mul((size_t)ld->batch, ld->elems * sizeof(float), &bytes)) {
            loader_release(ld);
            return seterr(DISTILL_EINVAL, "distill_loader_create: batch of %d samples of %zu "
                          "values is too large", ld->batch, ld->elems);
        }
        ld->buf = xmalloc(bytes);
        ld->buf_labels = xmalloc((size_t)ld->batch * sizeof(int32_t));
        if (ld->shuffle)
            ld->worker_perm.order = xmalloc(nbytes);
        if (!ld->buf || !ld->buf_labels || (ld->shuffle && !ld->worker_perm.order))
            goto nomem;
        if (pthread_mutex_init(&ld->mu, NULL) != 0)
            goto nothread;
        if (pthread_cond_init(&ld->cv, NULL) != 0) {
            pthread_mutex_destroy(&ld->mu);
            goto nothread;
        }
        /* The worker runs with every signal blocked: the host's handlers
         * run on the host's threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int err = pthread_create(&ld->thread, NULL, worker_main, ld);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (err != 0) {
            pthread_cond_destroy(&ld->cv);
            pthread_mutex_destroy(&ld->mu);
            goto nothread;
        }
        ld->threaded = 1;
        post_next(ld);
    }
    *out = ld;
    return DISTILL_OK;
nomem:
    loader_release(ld);
    return DISTILL_ENOMEM;
nothread:
    loader_release(ld);
    return seterr(DISTILL_ENOMEM, "distill_loader_create: cannot start the prefetch thread");
}

void distill_loader_free(distill_loader *ld)
{
    if (!ld)
        return;
    if (ld->threaded) {
        pthread_mutex_lock(&ld->mu);
        ld->quit = 1;
        pthread_cond_broadcast(&ld->cv);
        pthread_mutex_unlock(&ld->mu);
        pthread_join(ld->thread, NULL);
        pthread_cond_destroy(&ld->cv);
        pthread_mutex_destroy(&ld->mu);
    }
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
    float *x = distill_tensor_data(images);
    if (take_prefetched(ld, ld->epoch, ld->pos)) {
        memcpy(x, ld->buf, (size_t)k * ld->elems * sizeof(float));
        if (labels)
            memcpy(labels, ld->buf_labels, (size_t)k * sizeof(int32_t));
    } else {
        build_batch(ld, &ld->host_perm, ld->epoch, ld->pos, k, x, labels);
    }
    ld->pos += (uint64_t)k;
    *count = k;
    post_next(ld);
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

int loader_build_view(const distill_loader *ld, int64_t index, int32_t view, float *dst)
{
    int side = 2 * ld->pad + 1, flips = ld->hflip ? 2 : 1;
    if (index < 0 || index >= ld->n || view < 0 || view >= side * side * flips)
        return seterr(DISTILL_EINVAL, "loader view %d of sample %lld is out of range", view,
                      (long long)index);
    int flip = view % flips;
    int64_t cell = view / flips;
    build_view(ld, ld->map[index], cell % side, cell / side, flip, dst);
    return DISTILL_OK;
}

int64_t loader_size(const distill_loader *ld)
{
    return ld->n;
}

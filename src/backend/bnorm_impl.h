/*
 * bnorm_impl.h - the BatchNorm kernels of bnorm.h, compiled once per
 * instruction set: bnorm.c includes it for the baseline, bnorm_avx2.c for
 * AVX2 with FMA, and bnorm.c dispatches at run time.  BN_NAME(f) names the
 * instance's functions, which bnorm.h declares.
 */
#include "bnorm.h"

#include <math.h>
#include <string.h>

/* below this many elements the kernels run on the calling thread */
#define PAR_MIN 32768

static int64_t numel(const bn_view *v)
{
    return v->n * v->c * v->h * v->w;
}

/* Add the per-image sums red[n][0..2cp) in image order into out[0..2cp). */
static void sum_images(const bn_view *v, int64_t cp, const double *red, double *out)
{
    for (int64_t c = 0; c < 2 * cp; c++)
        out[c] = 0.0;
    for (int64_t n = 0; n < v->n; n++) {
        const double *r = red + n * 2 * cp;
        for (int64_t c = 0; c < 2 * cp; c++)
            out[c] += r[c];
    }
}

/* Zero the padding channels of the last block of image n. */
static void zero_padding(const bn_view *v, float *y, int64_t n)
{
    int64_t last = (v->c - 1) / v->cb, c0 = last * v->cb, cw = v->c - c0;
    if (v->cb == 1 || cw == v->cb)
        return;
    for (int64_t h = 0; h < v->h; h++)
        for (int64_t w = 0; w < v->w; w++) {
            float *p = y + n * v->sn + last * v->sc + h * v->sh + w * v->sw;
            for (int64_t ci = cw; ci < v->cb; ci++)
                p[ci] = 0.0f;
        }
}

/*
 * The kernels for any block of CB channels (cb in the view; the vector
 * kernels below take blocks of 8 and 16).  Sums run in float along one row
 * of W pixels, then in double across rows and images: a float sum of a few
 * dozen terms loses nothing that matters, and the long sums are where
 * single precision fails. Channels past C in the last block are padding:
 * their coefficients are 0, so their outputs are 0.
 */
static void stats_any(const bn_view *v, const float *x, int64_t n, int64_t k,
                      const float *sk, double *o1, double *o2)
{
    const int64_t CB = v->cb;
    double a1[64] = {0}, a2[64] = {0};
    float K[64];
    for (int64_t ci = 0; ci < CB; ci++)
        K[ci] = sk[ci];
    for (int64_t h = 0; h < v->h; h++) {
        float r1[64] = {0}, r2[64] = {0};
        const float *row = x + n * v->sn + k * v->sc + h * v->sh;
        for (int64_t w = 0; w < v->w; w++) {
            const float *p = row + w * v->sw;
            for (int64_t ci = 0; ci < CB; ci++) {
                float d = p[ci] - K[ci];
                r1[ci] += d;
                r2[ci] += d * d;
            }
        }
        for (int64_t ci = 0; ci < CB; ci++) {
            a1[ci] += r1[ci];
            a2[ci] += r2[ci];
        }
    }
    for (int64_t ci = 0; ci < CB; ci++) {
        o1[ci] = a1[ci];
        o2[ci] = a2[ci];
    }
}

static void gsums_any(const bn_view *v, const float *x, const float *dy, int64_t n,
                      int64_t k, const float *mk, const float *ca, const float *cb_,
                      int relu, double *o1, double *o2)
{
    const int64_t CB = v->cb;
    double a1[64] = {0}, a2[64] = {0};
    float m[64], sa[64], sb[64];
    for (int64_t ci = 0; ci < CB; ci++)
        m[ci] = mk[ci], sa[ci] = ca[ci], sb[ci] = cb_[ci];
    for (int64_t h = 0; h < v->h; h++) {
        float r1[64] = {0}, r2[64] = {0};
        for (int64_t w = 0; w < v->w; w++) {
            int64_t off = n * v->sn + k * v->sc + h * v->sh + w * v->sw;
            const float *p = x + off, *g = dy + off;
            for (int64_t ci = 0; ci < CB; ci++) {
                float u = p[ci] * sa[ci] + sb[ci];
                float t = relu && !(u > 0.0f) ? 0.0f : g[ci];
                r1[ci] += t;
                r2[ci] += t * (p[ci] - m[ci]);
            }
        }
        for (int64_t ci = 0; ci < CB; ci++) {
            a1[ci] += r1[ci];
            a2[ci] += r2[ci];
        }
    }
    for (int64_t ci = 0; ci < CB; ci++) {
        o1[ci] = a1[ci];
        o2[ci] = a2[ci];
    }
}

static void norm_any(const bn_view *v, const float *x, float *y, int64_t n,
                     int64_t k, const float *ca, const float *cb_, int relu)
{
    const int64_t CB = v->cb;
    for (int64_t h = 0; h < v->h; h++)
        for (int64_t w = 0; w < v->w; w++) {
            int64_t off = n * v->sn + k * v->sc + h * v->sh + w * v->sw;
            const float *p = x + off;
            float *q = y + off;
            for (int64_t ci = 0; ci < CB; ci++) {
                float t = p[ci] * ca[ci] + cb_[ci];
                q[ci] = relu && !(t > 0.0f) ? 0.0f : t;
            }
        }
}

static void dx_any(const bn_view *v, const float *x, const float *dy, float *dx,
                   int64_t n, int64_t k, const float *k1, const float *k2,
                   const float *k3, const float *mk, const float *ca,
                   const float *cb_, int relu)
{
    const int64_t CB = v->cb;
    float a[64], b[64], e[64], m[64], sa[64], sb[64];
    for (int64_t ci = 0; ci < CB; ci++)
        a[ci] = k1[ci], b[ci] = k2[ci], e[ci] = k3[ci], m[ci] = mk[ci], sa[ci] = ca[ci],
        sb[ci] = cb_[ci];
    for (int64_t h = 0; h < v->h; h++)
        for (int64_t w = 0; w < v->w; w++) {
            int64_t off = n * v->sn + k * v->sc + h * v->sh + w * v->sw;
            const float *p = x + off, *g = dy + off;
            float *q = dx + off;
            for (int64_t ci = 0; ci < CB; ci++) {
                float u = p[ci] * sa[ci] + sb[ci];
                float t = relu && !(u > 0.0f) ? 0.0f : g[ci];
                q[ci] = a[ci] * (t - b[ci] - (p[ci] - m[ci]) * e[ci]);
            }
        }
}

/*
 * The four passes for blocks of 8 or 16 channels, written with 8-float
 * vectors (the compiler leaves some of the loops above scalar).  Each
 * operation is the scalar one lane by lane, the sums run in the same order,
 * and the forward and the backward (which recomputes the ReLU mask) use the
 * same expression for the pre-ReLU value.
 */
typedef float bn_v8 __attribute__((vector_size(32)));
typedef int bn_i8 __attribute__((vector_size(32)));

/* Vectors pass through memory and macros, not function arguments, so that
 * the baseline instance (no AVX) has no vector calling convention. */
#define LD8(dst, p) memcpy(&(dst), (p), sizeof(bn_v8))
#define ST8(p, src) memcpy((p), &(src), sizeof(bn_v8))
/* v where mask is set, else +0 */
#define KEEP8(v, mask) ((bn_v8)((bn_i8)(v) & (mask)))

/* a[8j + l] += r[j][l]: a row's float sums into the double ones */
static void fold8(double *a, const bn_v8 *r, int nv)
{
    for (int j = 0; j < nv; j++)
        for (int l = 0; l < 8; l++)
            a[8 * j + l] += r[j][l];
}

#define VEC_FNS(SUFFIX, NV)                                                                    \
    static void stats_##SUFFIX(const bn_view *v, const float *x, int64_t n, int64_t k,         \
                               const float *sk, double *o1, double *o2)                        \
    {                                                                                          \
        double a1[8 * NV] = {0}, a2[8 * NV] = {0};                                             \
        bn_v8 K[NV];                                                                           \
        for (int j = 0; j < NV; j++)                                                           \
            LD8(K[j], sk + 8 * j);                                                             \
        for (int64_t h = 0; h < v->h; h++) {                                                   \
            bn_v8 r1[NV] = {{0}}, r2[NV] = {{0}};                                              \
            const float *row = x + n * v->sn + k * v->sc + h * v->sh;                          \
            for (int64_t w = 0; w < v->w; w++)                                                 \
                for (int j = 0; j < NV; j++) {                                                 \
                    bn_v8 d;                                                                   \
                    LD8(d, row + w * v->sw + 8 * j);                                           \
                    d -= K[j];                                                                 \
                    r1[j] += d;                                                                \
                    r2[j] += d * d;                                                            \
                }                                                                              \
            fold8(a1, r1, NV);                                                                 \
            fold8(a2, r2, NV);                                                                 \
        }                                                                                      \
        memcpy(o1, a1, sizeof a1);                                                             \
        memcpy(o2, a2, sizeof a2);                                                             \
    }                                                                                          \
    static void gsums_##SUFFIX(const bn_view *v, const float *x, const float *dy, int64_t n,  \
                               int64_t k, const float *mk, const float *ca, const float *cb_,  \
                               int relu, double *o1, double *o2)                               \
    {                                                                                          \
        double a1[8 * NV] = {0}, a2[8 * NV] = {0};                                             \
        bn_v8 m[NV], sa[NV], sb[NV], zero = {0};                                               \
        for (int j = 0; j < NV; j++)                                                           \
            LD8(m[j], mk + 8 * j), LD8(sa[j], ca + 8 * j), LD8(sb[j], cb_ + 8 * j);            \
        for (int64_t h = 0; h < v->h; h++) {                                                   \
            bn_v8 r1[NV] = {{0}}, r2[NV] = {{0}};                                              \
            for (int64_t w = 0; w < v->w; w++) {                                               \
                int64_t off = n * v->sn + k * v->sc + h * v->sh + w * v->sw;                   \
                for (int j = 0; j < NV; j++) {                                                 \
                    bn_v8 p, g;                                                                \
                    LD8(p, x + off + 8 * j);                                                   \
                    LD8(g, dy + off + 8 * j);                                                  \
                    if (relu) {                                                                \
                        bn_v8 u = p * sa[j] + sb[j];                                           \
                        g = KEEP8(g, u > zero);                                                \
                    }                                                                          \
                    r1[j] += g;                                                                \
                    r2[j] += g * (p - m[j]);                                                   \
                }                                                                              \
            }                                                                                  \
            fold8(a1, r1, NV);                                                                 \
            fold8(a2, r2, NV);                                                                 \
        }                                                                                      \
        memcpy(o1, a1, sizeof a1);                                                             \
        memcpy(o2, a2, sizeof a2);                                                             \
    }                                                                                          \
    static void norm_##SUFFIX(const bn_view *v, const float *x, float *y, int64_t n,           \
                              int64_t k, const float *ca, const float *cb_, int relu)          \
    {                                                                                          \
        bn_v8 a[NV], b[NV], zero = {0};                                                        \
        for (int j = 0; j < NV; j++)                                                           \
            LD8(a[j], ca + 8 * j), LD8(b[j], cb_ + 8 * j);                                     \
        for (int64_t h = 0; h < v->h; h++)                                                     \
            for (int64_t w = 0; w < v->w; w++) {                                               \
                int64_t off = n * v->sn + k * v->sc + h * v->sh + w * v->sw;                   \
                for (int j = 0; j < NV; j++) {                                                 \
                    bn_v8 t;                                                                   \
                    LD8(t, x + off + 8 * j);                                                   \
                    t = t * a[j] + b[j];                                                       \
                    if (relu)                                                                  \
                        t = KEEP8(t, t > zero);                                                \
                    ST8(y + off + 8 * j, t);                                                   \
                }                                                                              \
            }                                                                                  \
    }                                                                                          \
    static void dx_##SUFFIX(const bn_view *v, const float *x, const float *dy, float *dx,      \
                            int64_t n, int64_t k, const float *k1, const float *k2,            \
                            const float *k3, const float *mk, const float *ca,                 \
                            const float *cb_, int relu)                                        \
    {                                                                                          \
        bn_v8 a[NV], b[NV], e[NV], m[NV], sa[NV], sb[NV], zero = {0};                          \
        for (int j = 0; j < NV; j++)                                                           \
            LD8(a[j], k1 + 8 * j), LD8(b[j], k2 + 8 * j), LD8(e[j], k3 + 8 * j),               \
            LD8(m[j], mk + 8 * j), LD8(sa[j], ca + 8 * j), LD8(sb[j], cb_ + 8 * j);            \
        for (int64_t h = 0; h < v->h; h++)                                                     \
            for (int64_t w = 0; w < v->w; w++) {                                               \
                int64_t off = n * v->sn + k * v->sc + h * v->sh + w * v->sw;                   \
                for (int j = 0; j < NV; j++) {                                                 \
                    bn_v8 p, g, r;                                                             \
                    LD8(p, x + off + 8 * j);                                                   \
                    LD8(g, dy + off + 8 * j);                                                  \
                    if (relu) {                                                                \
                        bn_v8 u = p * sa[j] + sb[j];                                           \
                        g = KEEP8(g, u > zero);                                                \
                    }                                                                          \
                    r = a[j] * (g - b[j] - (p - m[j]) * e[j]);                                 \
                    ST8(dx + off + 8 * j, r);                                                  \
                }                                                                              \
            }                                                                                  \
    }

VEC_FNS(b16, 2)
VEC_FNS(b8, 1)

typedef struct kernels {
    void (*stats)(const bn_view *, const float *, int64_t, int64_t, const float *, double *,
                  double *);
    void (*norm)(const bn_view *, const float *, float *, int64_t, int64_t, const float *,
                 const float *, int);
    void (*gsums)(const bn_view *, const float *, const float *, int64_t, int64_t,
                  const float *, const float *, const float *, int, double *, double *);
    void (*dx)(const bn_view *, const float *, const float *, float *, int64_t, int64_t,
               const float *, const float *, const float *, const float *, const float *,
               const float *, int);
} kernels;

static kernels pick(const bn_view *v)
{
    if (v->cb == 16)
        return (kernels){stats_b16, norm_b16, gsums_b16, dx_b16};
    if (v->cb == 8)
        return (kernels){stats_b8, norm_b8, gsums_b8, dx_b8};
    return (kernels){stats_any, norm_any, gsums_any, dx_any};
}

/* Per-channel arrays padded to whole blocks: red holds 2*N*C per-image
 * sums, then 2*C totals, then coefficient space. */
size_t BN_NAME(bn_reduce_doubles)(const bn_view *v)
{
    int64_t cp = ((v->c + v->cb - 1) / v->cb) * v->cb;
    return (size_t)(2 * v->n * cp + 2 * cp + 3 * cp);
}

void BN_NAME(bn_forward_train)(const bn_view *v, const float *x, float *y, const float *gamma,
                      const float *beta, float eps, int relu, float *mean, float *var,
                      float *coef, double *red)
{
    const int64_t N = v->n, C = v->c, cb = v->cb, nblk = (C + cb - 1) / cb, cp = nblk * cb;
    double *tot = red + 2 * N * cp;
    float *a = coef, *b = a + cp; /* y = x * a + b */
    float *shift = (float *)(tot + 2 * cp);
    kernels K = pick(v);
    /* Sums of x - shift, shift = the channel's first value: near the mean,
     * so that the sum of squares does not cancel (a large mean would). */
    for (int64_t c = 0; c < cp; c++)
        shift[c] = c < C ? x[(c / cb) * v->sc + c % cb] : 0.0f;

#pragma omp parallel for schedule(static) if (numel(v) >= PAR_MIN)
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < nblk; k++)
            K.stats(v, x, n, k, shift + k * cb, red + n * 2 * cp + k * cb,
                    red + n * 2 * cp + cp + k * cb);
    sum_images(v, cp, red, tot);
    const double M = (double)(N * v->h * v->w);
    for (int64_t c = 0; c < cp; c++) {
        if (c >= C) {
            a[c] = b[c] = 0.0f;
            continue;
        }
        double d1 = tot[c] / M, s2 = tot[cp + c] / M - d1 * d1, mu = (double)shift[c] + d1;
        if (s2 < 0.0)
            s2 = 0.0;
        double inv = 1.0 / sqrt(s2 + (double)eps), sc = (double)gamma[c] * inv;
        mean[c] = (float)mu;
        var[c] = (float)s2;
        a[c] = (float)sc;
        b[c] = (float)((double)beta[c] - mu * sc);
    }

#pragma omp parallel for schedule(static) if (numel(v) >= PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < nblk; k++)
            K.norm(v, x, y, n, k, a + k * cb, b + k * cb, relu);
        zero_padding(v, y, n);
    }
}

void BN_NAME(bn_backward)(const bn_view *v, const float *x, const float *dy, float *dx,
                 const float *gamma, const float *mean, const float *var, const float *coef,
                 float eps, int relu, float *dgamma, float *dbeta, double *red)
{
    const float *sa = coef, *sb = coef + ((v->c + v->cb - 1) / v->cb) * v->cb;
    const int64_t N = v->n, C = v->c, cb = v->cb, nblk = (C + cb - 1) / cb, cp = nblk * cb;
    double *tot = red + 2 * N * cp;
    float *k1 = (float *)(tot + 2 * cp), *k2 = k1 + cp, *k3 = k2 + cp, *mp = k3 + cp;
    kernels K = pick(v);
    for (int64_t c = 0; c < cp; c++)
        mp[c] = c < C ? mean[c] : 0.0f;

#pragma omp parallel for schedule(static) if (numel(v) >= PAR_MIN)
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < nblk; k++)
            K.gsums(v, x, dy, n, k, mp + k * cb, sa + k * cb, sb + k * cb, relu,
                    red + n * 2 * cp + k * cb, red + n * 2 * cp + cp + k * cb);
    sum_images(v, cp, red, tot);
    const double M = (double)(N * v->h * v->w);
    for (int64_t c = 0; c < cp; c++) {
        if (c >= C) {
            k1[c] = k2[c] = k3[c] = 0.0f;
            continue;
        }
        double inv = 1.0 / sqrt((double)var[c] + (double)eps);
        dbeta[c] = (float)tot[c];
        dgamma[c] = (float)(tot[cp + c] * inv);
        k1[c] = (float)((double)gamma[c] * inv);
        k2[c] = (float)(tot[c] / M);
        k3[c] = (float)(tot[cp + c] * inv * inv / M);
    }

#pragma omp parallel for schedule(static) if (numel(v) >= PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < nblk; k++)
            K.dx(v, x, dy, dx, n, k, k1 + k * cb, k2 + k * cb, k3 + k * cb, mp + k * cb,
                 sa + k * cb, sb + k * cb, relu);
        zero_padding(v, dx, n);
    }
}

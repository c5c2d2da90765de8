/*
 * loss_feat.c - the feature losses: FitNets, attention transfer (AT),
 * similarity-preserving (SP), relational (RKD) and probabilistic (PKT)
 * knowledge transfer, as RepDistiller computes them, in double.
 *
 * Each reads the student tap s and the teacher tap t (batch n first; loss.c
 * has checked the shapes each loss needs) and ADDS d loss / d s into
 * g->student_feat.  The teacher side is a constant.  Where PyTorch's
 * F.normalize is used, its eps = 1e-12 and its formula x / max(||x||, eps)
 * are used too, including the gradient (x / eps, derivative I / eps) below
 * the clamp.
 *
 * Parallel loops (OpenMP) write disjoint outputs, and the one reduction
 * (the RKD angle term) sums fixed chunks in a fixed order, so results do
 * not depend on the number of threads.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "distill/loss_internal.h"
#include "tensor_internal.h"
#include "util/util.h"

#define NORMALIZE_EPS 1e-12 /* torch.nn.functional.normalize's default */
#define PAR_MIN_WORK 131072 /* below this many multiply-adds, stay serial */

static double *dalloc(size_t count)
{
    size_t bytes;
    if (size_mul(count ? count : 1, sizeof(double), &bytes))
        return NULL;
    return xcalloc(1, bytes);
}

static float *feat_grad(distill_loss_grads *g)
{
    return g && g->student_feat ? g->student_feat->data : NULL;
}

/* Width of a tap flattened to (n, -1). */
static int64_t flat_width(const distill_tensor *t)
{
    return (int64_t)(t->numel / (size_t)t->dims[0]);
}

/* Dot products in double, with four running sums (a fixed order, so the
 * same inputs always give the same bits). */
static double dotf(const float *a, const float *b, int64_t D)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int64_t k = 0;
    for (; k + 4 <= D; k += 4) {
        s0 += (double)a[k] * (double)b[k];
        s1 += (double)a[k + 1] * (double)b[k + 1];
        s2 += (double)a[k + 2] * (double)b[k + 2];
        s3 += (double)a[k + 3] * (double)b[k + 3];
    }
    for (; k < D; k++)
        s0 += (double)a[k] * (double)b[k];
    return (s0 + s1) + (s2 + s3);
}

static double dotd(const double *a, const double *b, int64_t D)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int64_t k = 0;
    for (; k + 4 <= D; k += 4) {
        s0 += a[k] * b[k];
        s1 += a[k + 1] * b[k + 1];
        s2 += a[k + 2] * b[k + 2];
        s3 += a[k + 3] * b[k + 3];
    }
    for (; k < D; k++)
        s0 += a[k] * b[k];
    return (s0 + s1) + (s2 + s3);
}

/* F (n, D) floats -> X (n, D) doubles; with `center`, minus the batch mean
 * row (for losses that only see differences between samples). */
static void rows_to_double(const float *F, int64_t n, int64_t D, int center, double *X)
{
    for (int64_t e = 0; e < n * D; e++)
        X[e] = (double)F[e];
    if (!center)
        return;
    for (int64_t k = 0; k < D; k++) {
        double mu = 0.0;
        for (int64_t i = 0; i < n; i++)
            mu += X[i * D + k];
        mu /= (double)n;
        for (int64_t i = 0; i < n; i++)
            X[i * D + k] -= mu;
    }
}

/* G (n, n) = X X^T of X (n, D).  G[j][i] is G[i][j] to the bit. */
static void gram(const double *X, int64_t n, int64_t D, double *G)
{
    int par = n * n * D > PAR_MIN_WORK;
    (void)par;
#pragma omp parallel for schedule(dynamic, 4) if (par)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++)
            G[i * n + j] = dotd(X + i * D, X + j * D, D);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++)
            G[i * n + j] = G[j * n + i];
}

/* Backward of G = X X^T: dX_i += sum_j (dG_ij + dG_ji) X_j.  (n, D) */
static void gram_backward(const double *dG, const double *X, int64_t n, int64_t D, double *dX)
{
    int par = n * n * D > PAR_MIN_WORK;
    (void)par;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t i = 0; i < n; i++) {
        double *di = dX + i * D;
        for (int64_t j = 0; j < n; j++) {
            double c = dG[i * n + j] + dG[j * n + i];
            if (c == 0.0)
                continue;
            const double *xj = X + j * D;
            for (int64_t k = 0; k < D; k++)
                di[k] += c * xj[k];
        }
    }
}

/*
 * Backward of y = x / max(||x||, eps) for one vector, given x's norm nx
 * and y: dx = (gy - y (y . gy)) / ||x|| above the clamp, gy / eps below it.
 * Adds scale * dx into dx_out.
 */
static void normalize_backward(const double *y, double nx, const double *gy, int64_t D,
                               double scale, double *dx_out)
{
    if (nx > NORMALIZE_EPS) {
        double yg = dotd(y, gy, D);
        for (int64_t k = 0; k < D; k++)
            dx_out[k] += scale * (gy[k] - y[k] * yg) / nx;
    } else {
        for (int64_t k = 0; k < D; k++)
            dx_out[k] += scale * gy[k] / NORMALIZE_EPS;
    }
}

/* torch's smooth_l1_loss with beta = 1, per element, and its derivative. */
static double smooth_l1(double u)
{
    double a = fabs(u);
    return a < 1.0 ? 0.5 * u * u : a - 0.5;
}

static double smooth_l1_grad(double u)
{
    return fabs(u) < 1.0 ? u : (u > 0.0 ? 1.0 : -1.0);
}

/* =============================================================== FitNets */

/* loss = mean((s - t)^2) over all elements (F.mse_loss, reduction "mean"). */
static int fitnets_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                           void *payload)
{
    (void)payload;
    const distill_tensor *s = b->student_feat, *t = b->teacher_feat;
    const size_t N = s->numel;
    float *gs = feat_grad(g);
    double sum = 0.0;
    for (size_t i = 0; i < N; i++) {
        double d = (double)s->data[i] - (double)t->data[i];
        sum += d * d;
        if (gs)
            gs[i] += (float)(2.0 * d / (double)N);
    }
    *loss = sum / (double)N;
    return DISTILL_OK;
}

const distill_loss_vtable loss_vt_fitnets = {DISTILL_LOSS_VTABLE_VERSION, "fitnets",
                                             fitnets_forward, NULL};

/* ==================================================================== AT */

/*
 * RepDistiller's Attention: at(f) = F.normalize(f.pow(p).mean(1).view(n, -1))
 * and loss = (at(s) - at(t)).pow(2).mean().  Note that this is f^p, not the
 * paper's |f|^p: the two agree for even p (the default p = 2) and for
 * non-negative (post-ReLU) features.  A non-integer p on a negative value
 * has no real f^p (torch gives NaN): DISTILL_ENONFINITE says so.
 */
static double at_pow(double x, double p)
{
    if (p == 2.0)
        return x * x;
    if (p == 1.0)
        return x;
    return pow(x, p);
}

static double at_dpow(double x, double p)
{
    if (p == 2.0)
        return 2.0 * x;
    if (p == 1.0)
        return 1.0;
    return p * pow(x, p - 1.0);
}

/*
 * f (n, C, S) -> q (n, S), the normalized maps, and norm (n), the norms of
 * the unnormalized ones.
 */
static int at_maps(const distill_loss *l, const char *who, const char *node,
                   const distill_tensor *f, double p, double *q, double *norm)
{
    const int64_t n = f->dims[0], C = f->dims[1];
    const int64_t S = (int64_t)(f->numel / (size_t)(n * C));
    if (p != floor(p))
        for (size_t i = 0; i < f->numel; i++)
            if (f->data[i] < 0.0f)
                return seterr(DISTILL_ENONFINITE,
                              "loss '%s': %s '%s' element %zu is %g: f^p with the non-integer "
                              "p = %g is not a real number (use an integer p, or a non-negative "
                              "feature)",
                              l->name, who, node, i, (double)f->data[i], p);
    for (int64_t i = 0; i < n; i++) {
        double *qi = q + i * S;
        for (int64_t k = 0; k < S; k++)
            qi[k] = 0.0;
        for (int64_t c = 0; c < C; c++) {
            const float *fc = f->data + (i * C + c) * S;
            for (int64_t k = 0; k < S; k++)
                qi[k] += at_pow(fc[k], p);
        }
        double ss = 0.0;
        for (int64_t k = 0; k < S; k++) {
            qi[k] /= (double)C;
            ss += qi[k] * qi[k];
        }
        norm[i] = sqrt(ss);
        double den = norm[i] > NORMALIZE_EPS ? norm[i] : NORMALIZE_EPS;
        for (int64_t k = 0; k < S; k++)
            qi[k] /= den;
    }
    return DISTILL_OK;
}

static int at_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                      void *payload)
{
    const distill_loss *l = payload;
    const distill_tensor *s = b->student_feat, *t = b->teacher_feat;
    const double p = l->params.p;
    const int64_t n = s->dims[0], Cs = s->dims[1];
    const int64_t S = (int64_t)(s->numel / (size_t)(n * Cs));
    double *qs = dalloc((size_t)(n * S)); /* (n, S) */
    double *qt = dalloc((size_t)(n * S)); /* (n, S) */
    double *gq = dalloc((size_t)S);       /* (S) */
    double *ga = dalloc((size_t)S);       /* (S) */
    double *ns = dalloc((size_t)n), *nt = dalloc((size_t)n);
    int rc = DISTILL_OK;
    if (!qs || !qt || !gq || !ga || !ns || !nt) {
        rc = seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
        goto done;
    }
    if ((rc = at_maps(l, "student", l->student_node, s, p, qs, ns)) ||
        (rc = at_maps(l, "teacher", l->teacher_node, t, p, qt, nt)))
        goto done;

    const double N = (double)n * (double)S;
    double sum = 0.0;
    for (int64_t i = 0; i < n * S; i++) {
        double d = qs[i] - qt[i];
        sum += d * d;
    }
    *loss = sum / N;

    float *gs = feat_grad(g);
    if (gs) {
        for (int64_t i = 0; i < n; i++) {
            /* loss = sum (q_s - q_t)^2 / N */
            for (int64_t k = 0; k < S; k++) {
                gq[k] = 2.0 * (qs[i * S + k] - qt[i * S + k]) / N;
                ga[k] = 0.0;
            }
            /* q = normalize(a) */
            normalize_backward(qs + i * S, ns[i], gq, S, 1.0, ga);
            /* a_k = mean_c f_ck^p */
            for (int64_t c = 0; c < Cs; c++) {
                const float *fc = s->data + (i * Cs + c) * S;
                float *gc = gs + (i * Cs + c) * S;
                for (int64_t k = 0; k < S; k++)
                    gc[k] += (float)(ga[k] * at_dpow(fc[k], p) / (double)Cs);
            }
        }
    }
done:
    xfree(qs);
    xfree(qt);
    xfree(gq);
    xfree(ga);
    xfree(ns);
    xfree(nt);
    return rc;
}

const distill_loss_vtable loss_vt_at = {DISTILL_LOSS_VTABLE_VERSION, "at", at_forward, NULL};

/* ==================================================================== SP */

/*
 * RepDistiller's Similarity: with F = f.view(n, -1),
 *   G = F.normalize(F @ F^T)      (each row divided by its L2 norm)
 *   loss = sum((G_t - G_s)^2) / n^2
 */

/* G (n, n) = row-normalized X X^T of X (n, D); rn (n) the rows' norms
 * before normalizing. */
static void sp_gram(const double *X, int64_t n, int64_t D, double *G, double *rn)
{
    gram(X, n, D, G);
    for (int64_t i = 0; i < n; i++) {
        double *Gi = G + i * n;
        rn[i] = sqrt(dotd(Gi, Gi, n));
        double den = rn[i] > NORMALIZE_EPS ? rn[i] : NORMALIZE_EPS;
        for (int64_t j = 0; j < n; j++)
            Gi[j] /= den;
    }
}

static int sp_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                      void *payload)
{
    const distill_loss *l = payload;
    const distill_tensor *s = b->student_feat, *t = b->teacher_feat;
    const int64_t n = s->dims[0], Ds = flat_width(s), Dt = flat_width(t);
    const int64_t Dm = Ds > Dt ? Ds : Dt;
    float *gs = feat_grad(g);
    double *X = dalloc((size_t)(n * Dm));                                  /* (n, D) */
    double *Gs = dalloc((size_t)(n * n)), *Gt = dalloc((size_t)(n * n)); /* (n, n) */
    double *dG = dalloc((size_t)(n * n));                                  /* (n, n) */
    double *dX = gs ? dalloc((size_t)(n * Ds)) : NULL;                     /* (n, Ds) */
    double *H = dalloc((size_t)n);                                         /* (n) */
    double *rs = dalloc((size_t)n), *rt = dalloc((size_t)n);
    int rc = DISTILL_OK;
    if (!X || !Gs || !Gt || !dG || (gs && !dX) || !H || !rs || !rt) {
        rc = seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
        goto done;
    }
    rows_to_double(t->data, n, Dt, 0, X);
    sp_gram(X, n, Dt, Gt, rt);
    rows_to_double(s->data, n, Ds, 0, X);
    sp_gram(X, n, Ds, Gs, rs);
    const double nn = (double)n * (double)n;
    double sum = 0.0;
    for (int64_t i = 0; i < n * n; i++) {
        double d = Gt[i] - Gs[i];
        sum += d * d;
    }
    *loss = sum / nn;

    if (gs) {
        /* rows of G = normalize(F F^T): dG_i from dGn_i = 2 (Gs_i - Gt_i) / n^2 */
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j < n; j++)
                H[j] = 2.0 * (Gs[i * n + j] - Gt[i * n + j]) / nn;
            normalize_backward(Gs + i * n, rs[i], H, n, 1.0, dG + i * n);
        }
        /* G = F F^T (X holds the student's F) */
        gram_backward(dG, X, n, Ds, dX);
        for (int64_t e = 0; e < n * Ds; e++)
            gs[e] += (float)dX[e];
    }
done:
    xfree(X);
    xfree(Gs);
    xfree(Gt);
    xfree(dG);
    xfree(dX);
    xfree(H);
    xfree(rs);
    xfree(rt);
    return rc;
}

const distill_loss_vtable loss_vt_sp = {DISTILL_LOSS_VTABLE_VERSION, "sp", sp_forward, NULL};

/* =================================================================== RKD */

/*
 * RepDistiller's RKDLoss on F = f.view(n, -1):
 *
 * distance: d_ij = sqrt(max(||F_i - F_j||^2, 1e-12)), d_ii = 0, divided by
 *   the mean of its positive entries; loss_d = smooth_l1(d_s, d_t), mean
 *   over all n^2 entries.  (Below the clamp the gradient is 0, as clamp's.)
 * angle: e_ij = normalize(F_j - F_i), A_ijk = <e_ij, e_ik> for all i, j, k
 *   (vertex i); loss_a = smooth_l1(A_s, A_t), mean over all n^3 entries.
 *   Terms with j = i or k = i are 0 on both sides (e_ii = 0) and add only
 *   to the count.
 * loss = w_dist * loss_d + w_angle * loss_a.
 *
 * Both terms only see differences F_j - F_i, and both are computed from the
 * Gram matrix G = F F^T of the batch-centered F in double:
 *   ||F_i - F_j||^2 = (G_ii - G_ij) + (G_jj - G_ij)
 *   <F_j - F_i, F_k - F_i> = (G_jk - G_ik) - (G_ij - G_ii)
 * (RepDistiller forms the distances the same way, |a|^2 + |b|^2 - 2ab, in
 * float and uncentered).  That makes the angle term O(n^3 + n^2 D) instead
 * of O(n^3 D), and coincident samples, whose G rows are equal to the bit,
 * give exactly 0.  The gradient goes back as dG, then dF = (dG + dG^T) F,
 * then through the centering.
 */

/* d (n, n) pairwise distances from G; clamped (n, n) marks pairs at the
 * clamp; returns the mean of the positive entries, their count in *count. */
static double rkd_dist(const double *G, int64_t n, double *d, unsigned char *clamped,
                       double *count)
{
    double sum = 0.0, cnt = 0.0;
    for (int64_t i = 0; i < n; i++) {
        d[i * n + i] = 0.0;
        clamped[i * n + i] = 1;
        for (int64_t j = i + 1; j < n; j++) {
            double q = (G[i * n + i] - G[i * n + j]) + (G[j * n + j] - G[i * n + j]);
            int c = !(q >= 1e-12);
            d[i * n + j] = d[j * n + i] = sqrt(c ? 1e-12 : q);
            clamped[i * n + j] = clamped[j * n + i] = (unsigned char)c;
        }
    }
    for (int64_t e = 0; e < n * n; e++)
        if (d[e] > 0.0) {
            sum += d[e];
            cnt += 1.0;
        }
    *count = cnt;
    return cnt > 0.0 ? sum / cnt : 0.0;
}

/* The distance term of Gram matrices Gs, Gt (n, n); adds d loss / d Gs into
 * dG when it is not NULL. */
static int rkd_distance(const distill_loss *l, const double *Gs, const double *Gt, int64_t n,
                        double w, double *loss, double *dG)
{
    double *ds = dalloc((size_t)(n * n)), *dt = dalloc((size_t)(n * n)); /* (n, n) */
    double *gd = dalloc((size_t)(n * n));                                  /* (n, n) */
    unsigned char *cs = xcalloc((size_t)(n * n), 1), *ct = xcalloc((size_t)(n * n), 1);
    int rc = DISTILL_OK;
    if (!ds || !dt || !gd || !cs || !ct) {
        rc = seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
        goto done;
    }
    double Ks, Kt;
    double ms = rkd_dist(Gs, n, ds, cs, &Ks);
    double mt = rkd_dist(Gt, n, dt, ct, &Kt);
    const double nn = (double)n * (double)n;
    double sum = 0.0, sg = 0.0;
    for (int64_t e = 0; e < n * n; e++) {
        double u = ds[e] / ms - dt[e] / mt;
        sum += smooth_l1(u);
        gd[e] = w * smooth_l1_grad(u) / nn; /* d loss / d (d_ij / m) */
        sg += gd[e] * ds[e];
    }
    *loss = w * sum / nn;
    if (dG) {
        /* r_ij = d_ij / m with m = sum_P d / K:
         * d loss / d d_kl = gd_kl / m - [kl in P] sum_ij gd_ij d_ij / (m^2 K);
         * d_ij and d_ji are one distance sqrt(q_ij), q from G as above */
        const double corr = sg / (ms * ms * Ks);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i + 1; j < n; j++) {
                if (cs[i * n + j])
                    continue;
                double dd = (gd[i * n + j] + gd[j * n + i]) / ms - 2.0 * corr;
                double dq = dd / (2.0 * ds[i * n + j]);
                dG[i * n + i] += dq;
                dG[j * n + j] += dq;
                dG[i * n + j] -= 2.0 * dq;
            }
    }
done:
    xfree(ds);
    xfree(dt);
    xfree(gd);
    xfree(cs);
    xfree(ct);
    return rc;
}

/*
 * The angle term.  At vertex i:
 *   N_jk = (G_jk - G_ik) - (G_ij - G_ii),  d_j = max(sqrt(N_jj), 1e-12)
 *   A_jk = N_jk / (d_j d_k)        (F.normalize then bmm, to rounding)
 * Backward:
 *   dN_jk = g_jk / (d_j d_k), g_jk = w / n^3 * smooth_l1'(A_jk - At_jk)
 *   dN_jj += -S_j / N_jj with S_j = sum_k g_jk A_jk   (through d_j, above
 *            the clamp; below it d_j is a constant)
 *   and N's four G terms into dG.
 * Vertices are split into RKD_CHUNKS fixed chunks, each with its own dG,
 * summed in order: the same bits on any number of threads.
 */
#define RKD_CHUNKS 8

static int rkd_angle(const distill_loss *l, const double *Gs, const double *Gt, int64_t n,
                     double w, double *loss, double *dG_out)
{
    const double n3 = (double)n * (double)n * (double)n, scale = w / n3;
    const int64_t chunks = n < RKD_CHUNKS ? n : RKD_CHUNKS;
    double part[RKD_CHUNKS] = {0};
    double *cdG[RKD_CHUNKS] = {0}; /* per chunk (n, n) */
    int failed = 0;
    for (int64_t ch = 0; dG_out && ch < chunks; ch++)
        failed |= !(cdG[ch] = dalloc((size_t)(n * n)));
    if (failed)
        goto done;

    int par = 8 * n * n * n > PAR_MIN_WORK; /* ~8 flops per (i, j, k) */
    (void)par;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int64_t ch = 0; ch < chunks; ch++) {
        double *ws = dalloc((size_t)(4 * n));
        if (!ws) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        double *nvs = ws, *ds = ws + n, *dt = ws + 2 * n, *S = ws + 3 * n; /* (n) each */
        double *dG = cdG[ch];
        double val = 0.0;
        const int64_t lo = ch * n / chunks, hi = (ch + 1) * n / chunks;
        for (int64_t i = lo; i < hi; i++) {
            const double *Gsi = Gs + i * n, *Gti = Gt + i * n;
            for (int64_t j = 0; j < n; j++) {
                double q = (Gs[j * n + j] - Gsi[j]) - (Gsi[j] - Gsi[i]);
                nvs[j] = sqrt(q > 0.0 ? q : 0.0);
                ds[j] = nvs[j] > NORMALIZE_EPS ? nvs[j] : NORMALIZE_EPS;
                q = (Gt[j * n + j] - Gti[j]) - (Gti[j] - Gti[i]);
                q = sqrt(q > 0.0 ? q : 0.0);
                dt[j] = q > NORMALIZE_EPS ? q : NORMALIZE_EPS;
                S[j] = 0.0;
            }
            for (int64_t j = 0; j < n; j++) {
                if (j == i) /* e_ii = 0 on both sides: terms of 0 */
                    continue;
                const double *Gsj = Gs + j * n, *Gtj = Gt + j * n;
                for (int64_t k = j; k < n; k++) {
                    if (k == i)
                        continue;
                    double as = ((Gsj[k] - Gsi[k]) - (Gsi[j] - Gsi[i])) / (ds[j] * ds[k]);
                    double at = ((Gtj[k] - Gti[k]) - (Gti[j] - Gti[i])) / (dt[j] * dt[k]);
                    double u = as - at;
                    val += (k == j ? 1.0 : 2.0) * smooth_l1(u);
                    if (!dG)
                        continue;
                    /* (j, k) and (k, j) are one product */
                    double gg = scale * smooth_l1_grad(u), c = gg / (ds[j] * ds[k]);
                    if (k == j) {
                        S[j] += gg * as;
                        dG[j * n + j] += c;
                        dG[i * n + j] -= 2.0 * c;
                        dG[i * n + i] += c;
                    } else {
                        S[j] += gg * as;
                        S[k] += gg * as;
                        dG[j * n + k] += 2.0 * c;
                        dG[i * n + k] -= 2.0 * c;
                        dG[i * n + j] -= 2.0 * c;
                        dG[i * n + i] += 2.0 * c;
                    }
                }
            }
            if (!dG)
                continue;
            for (int64_t j = 0; j < n; j++) {
                if (j == i || !(nvs[j] > NORMALIZE_EPS))
                    continue;
                double c = -S[j] / (nvs[j] * nvs[j]); /* d loss / d N_jj through d_j */
                dG[j * n + j] += c;
                dG[i * n + j] -= 2.0 * c;
                dG[i * n + i] += c;
            }
        }
        part[ch] = val;
        xfree(ws);
    }
    if (failed)
        goto done;

    double sum = 0.0;
    for (int64_t ch = 0; ch < chunks; ch++)
        sum += part[ch];
    *loss = w * sum / n3;
    for (int64_t ch = 0; dG_out && ch < chunks; ch++)
        for (int64_t e = 0; e < n * n; e++)
            dG_out[e] += cdG[ch][e];
done:
    for (int64_t ch = 0; ch < chunks; ch++)
        xfree(cdG[ch]);
    if (failed)
        return seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
    return DISTILL_OK;
}

static int rkd_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                       void *payload)
{
    const distill_loss *l = payload;
    const distill_tensor *s = b->student_feat, *t = b->teacher_feat;
    const int64_t n = s->dims[0], Ds = flat_width(s), Dt = flat_width(t);
    const int64_t Dm = Ds > Dt ? Ds : Dt;
    if (n < 2)
        return seterr(DISTILL_EINVAL,
                      "loss '%s': rkd relates samples to each other and needs a batch of at "
                      "least 2 (got 1)",
                      l->name);
    float *gs = feat_grad(g);
    double *X = dalloc((size_t)(n * Dm));                                  /* (n, D) */
    double *Gs = dalloc((size_t)(n * n)), *Gt = dalloc((size_t)(n * n)); /* (n, n) */
    double *dG = gs ? dalloc((size_t)(n * n)) : NULL;                      /* (n, n) */
    double *dX = gs ? dalloc((size_t)(n * Ds)) : NULL;                     /* (n, Ds) */
    double ld = 0.0, la = 0.0;
    int rc = DISTILL_OK;
    if (!X || !Gs || !Gt || (gs && (!dG || !dX))) {
        rc = seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
        goto done;
    }
    rows_to_double(t->data, n, Dt, 1, X);
    gram(X, n, Dt, Gt);
    rows_to_double(s->data, n, Ds, 1, X); /* X keeps the centered student */
    gram(X, n, Ds, Gs);
    if (l->params.w_dist > 0.0 && (rc = rkd_distance(l, Gs, Gt, n, l->params.w_dist, &ld, dG)))
        goto done;
    if (l->params.w_angle > 0.0 && (rc = rkd_angle(l, Gs, Gt, n, l->params.w_angle, &la, dG)))
        goto done;
    *loss = ld + la;
    if (gs) {
        gram_backward(dG, X, n, Ds, dX);
        /* F_c = F - mean: dF = dF_c - mean over the batch of dF_c */
        for (int64_t k = 0; k < Ds; k++) {
            double mu = 0.0;
            for (int64_t i = 0; i < n; i++)
                mu += dX[i * Ds + k];
            mu /= (double)n;
            for (int64_t i = 0; i < n; i++)
                gs[i * Ds + k] += (float)(dX[i * Ds + k] - mu);
        }
    }
done:
    xfree(X);
    xfree(Gs);
    xfree(Gt);
    xfree(dG);
    xfree(dX);
    return rc;
}

const distill_loss_vtable loss_vt_rkd = {DISTILL_LOSS_VTABLE_VERSION, "rkd", rkd_forward, NULL};

/* =================================================================== PKT */

/*
 * RepDistiller's PKT.cosine_similarity_loss with eps = 1e-7 on F = f.view(n, -1):
 *   x_i = F_i / (||F_i|| + eps)         (NaN -> 0: cannot happen for the
 *                                         finite inputs loss.c admits)
 *   c = (x x^T + 1) / 2,  m_ij = c_ij / sum_k c_ik   (student and teacher)
 *   loss = mean over n^2 of t_ij * log((t_ij + eps) / (m_ij + eps))
 * At F_i = 0 the gradient of x_i is taken as I / eps (the limit along any
 * direction's first term; torch's sqrt backward gives NaN there).
 */
#define PKT_EPS 1e-7

/* x (n, D) normalized rows of F, r (n) the norms; m (n, n) the row
 * distributions; S (n) the row sums of c. */
static void pkt_probs(const float *F, int64_t n, int64_t D, double *x, double *r, double *m,
                      double *S)
{
    for (int64_t i = 0; i < n; i++) {
        const float *Fi = F + i * D;
        r[i] = sqrt(dotf(Fi, Fi, D));
        for (int64_t k = 0; k < D; k++)
            x[i * D + k] = (double)Fi[k] / (r[i] + PKT_EPS);
    }
    gram(x, n, D, m);
    for (int64_t i = 0; i < n; i++) {
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++) {
            double c = (m[i * n + j] + 1.0) / 2.0;
            m[i * n + j] = c;
            sum += c;
        }
        S[i] = sum;
        for (int64_t j = 0; j < n; j++)
            m[i * n + j] /= sum;
    }
}

static int pkt_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                       void *payload)
{
    const distill_loss *l = payload;
    const distill_tensor *s = b->student_feat, *t = b->teacher_feat;
    const int64_t n = s->dims[0], Ds = flat_width(s), Dt = flat_width(t);
    float *gs = feat_grad(g);
    double *xs = dalloc((size_t)(n * Ds)), *xt = dalloc((size_t)(n * Dt));
    double *ms = dalloc((size_t)(n * n)), *mt = dalloc((size_t)(n * n)); /* (n, n) */
    double *gc = dalloc((size_t)(n * n));                                  /* (n, n) */
    double *gX = gs ? dalloc((size_t)(n * Ds)) : NULL;                     /* (n, Ds) */
    double *rs = dalloc((size_t)n), *rt = dalloc((size_t)n);
    double *Ss = dalloc((size_t)n), *St = dalloc((size_t)n);
    int rc = DISTILL_OK;
    if (!xs || !xt || !ms || !mt || !gc || (gs && !gX) || !rs || !rt || !Ss || !St) {
        rc = seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
        goto done;
    }
    pkt_probs(s->data, n, Ds, xs, rs, ms, Ss);
    pkt_probs(t->data, n, Dt, xt, rt, mt, St);
    const double nn = (double)n * (double)n;
    double sum = 0.0;
    for (int64_t e = 0; e < n * n; e++)
        sum += mt[e] * log((mt[e] + PKT_EPS) / (ms[e] + PKT_EPS));
    *loss = sum / nn;

    if (gs) {
        /* m_ij = c_ij / S_i: dc_ij = (gm_ij - sum_k gm_ik m_ik) / S_i,
         * gm_ij = -t_ij / (m_ij + eps) / n^2; c = (x x^T + 1) / 2 halves it */
        for (int64_t i = 0; i < n; i++) {
            double dotgm = 0.0;
            for (int64_t j = 0; j < n; j++) {
                double gm = -mt[i * n + j] / (ms[i * n + j] + PKT_EPS) / nn;
                gc[i * n + j] = gm;
                dotgm += gm * ms[i * n + j];
            }
            for (int64_t j = 0; j < n; j++)
                gc[i * n + j] = 0.5 * (gc[i * n + j] - dotgm) / Ss[i];
        }
        gram_backward(gc, xs, n, Ds, gX);
        /* x = F / (r + eps), r = ||F||:
         * dF = gx / (r + eps) - F (F . gx) / (r (r + eps)^2) */
        for (int64_t i = 0; i < n; i++) {
            const float *Fi = s->data + i * Ds;
            const double *gx = gX + i * Ds;
            double ri = rs[i], den = ri + PKT_EPS;
            double og = 0.0;
            for (int64_t k = 0; k < Ds; k++)
                og += (double)Fi[k] * gx[k];
            for (int64_t k = 0; k < Ds; k++) {
                double d = gx[k] / den;
                if (ri > 0.0)
                    d -= (double)Fi[k] * og / (ri * den * den);
                gs[i * Ds + k] += (float)d;
            }
        }
    }
done:
    xfree(xs);
    xfree(xt);
    xfree(ms);
    xfree(mt);
    xfree(gc);
    xfree(gX);
    xfree(rs);
    xfree(rt);
    xfree(Ss);
    xfree(St);
    return rc;
}

const distill_loss_vtable loss_vt_pkt = {DISTILL_LOSS_VTABLE_VERSION, "pkt", pkt_forward, NULL};

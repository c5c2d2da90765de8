/*
 * loss_logits.c - the logit losses: cross-entropy, Hinton KD, decoupled KD
 * (both optionally on standardized logits), DIST and multi-level KD, in
 * double, with log-sum-exp everywhere a log of a probability is
 * taken.  Gradients are with respect to the student logits only and are
 * ADDED into g->student_logits.
 *
 * KD, DKD and MLKD's instance level read their rows through load_row
 * (logit standardization when params.standardize), DIST and MLKD's batch
 * and class levels work on whole (n, C) probability matrices.
 *
 * Shapes: s, t are (n, C) student and teacher logits, y (n) labels.
 * Reductions follow PyTorch: cross_entropy's default "mean" over the batch,
 * kl_div(..., reduction="batchmean") = sum over classes and batch / n.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "distill/loss_internal.h"
#include "util/util.h"

/* mdistiller masks the ground-truth logit out of NCKD by subtracting this
 * from the (temperature-scaled) logits rather than by dropping it. */
#define DKD_GT_MASK 1000.0

/*
 * lsm[j] = z_j - logsumexp(z) with z_j = x[j] * scale, minus `mask` at
 * class `masked` (pass masked = -1 for none).  (C)
 */
static void log_softmax_row(const double *x, int64_t C, double scale, int64_t masked, double mask,
                            double *lsm)
{
    double mx = -INFINITY;
    for (int64_t j = 0; j < C; j++) {
        double z = x[j] * scale - (j == masked ? mask : 0.0);
        lsm[j] = z;
        if (z > mx)
            mx = z;
    }
    double s = 0.0;
    for (int64_t j = 0; j < C; j++)
        s += exp(lsm[j] - mx);
    double lse = mx + log(s);
    for (int64_t j = 0; j < C; j++)
        lsm[j] -= lse;
}

/*
 * KL(b || q) = sum_j b_j (log b_j - log q_j) for one row, from the log
 * probabilities lb (target) and lq (input); a target of exactly 0 adds 0
 * (torch's kl_div uses xlogy).
 */
static double kl_row(const double *lb, const double *lq, int64_t C)
{
    double kl = 0.0;
    for (int64_t j = 0; j < C; j++) {
        double b = exp(lb[j]);
        if (b > 0.0)
            kl += b * (lb[j] - lq[j]);
    }
    return kl;
}

/*
 * d KL(b || softmax(z)) / d z_j = q_j * sum(b) - b_j (kl_div's gradient
 * -b through log_softmax's backward), times `scale`, added into grad.
 */
static void kl_row_backward(const double *lb, const double *lq, int64_t C, double scale,
                            double *grad)
{
    double B = 0.0;
    for (int64_t j = 0; j < C; j++)
        B += exp(lb[j]);
    for (int64_t j = 0; j < C; j++)
        grad[j] += scale * (exp(lq[j]) * B - exp(lb[j]));
}

/*
 * Cross-entropy of one row with label smoothing eps, as torch:
 * -(1 - eps) * lsm[y] - eps / C * sum_j lsm[j]; gradient (scaled) into grad:
 * softmax - target with target = (1 - eps) * onehot(y) + eps / C.
 */
static double ce_row(const double *lsm, int64_t C, int32_t y, double eps)
{
    double sum = 0.0;
    for (int64_t j = 0; j < C; j++)
        sum += lsm[j];
    return -(1.0 - eps) * lsm[y] - eps / (double)C * sum;
}

static void ce_row_backward(const double *lsm, int64_t C, int32_t y, double eps, double scale,
                            double *grad)
{
    for (int64_t j = 0; j < C; j++) {
        double target = eps / (double)C + (j == y ? 1.0 - eps : 0.0);
        grad[j] += scale * (exp(lsm[j]) - target);
    }
}

static double *row_buffers(int64_t C, int k)
{
    size_t bytes;
    if (size_mul((size_t)C * (size_t)k, sizeof(double), &bytes))
        return NULL;
    return xmalloc(bytes);
}

/*
 * One logit row as the losses read it: z = x, or with logit
 * standardization (Sun et al. 2024, their `normalize`)
 *
 *   z = (x - mean(x)) / (LS_EPS + std(x)),  std with Bessel's correction
 *       (torch.std's default, divisor C - 1; C >= 2 is validated)
 *
 * A constant row has std 0 and gives z = 0.  (C)
 */
#define LS_EPS 1e-7

static void load_row(const float *x, int64_t C, int standardize, double *z)
{
    if (!standardize) {
        for (int64_t j = 0; j < C; j++)
            z[j] = x[j];
        return;
    }
    double m = 0.0;
    for (int64_t j = 0; j < C; j++)
        m += x[j];
    m /= (double)C;
    double ss = 0.0;
    for (int64_t j = 0; j < C; j++)
        ss += ((double)x[j] - m) * ((double)x[j] - m);
    double sd = sqrt(ss / (double)(C - 1));
    for (int64_t j = 0; j < C; j++)
        z[j] = ((double)x[j] - m) / (LS_EPS + sd);
}

/*
 * Backward of load_row: gz = dL/dz in, dL/dx ADDED into grad (float).
 * With d = LS_EPS + sd, c = x - mean(x):
 *   dL/dx_k = (gz_k - mean(gz)) / d - (sum_j gz_j c_j) / d^2 * dsd/dx_k,
 *   dsd/dx_k = c_k / ((C - 1) sd)   (taken as 0 when sd = 0, the
 *   subgradient: a constant row then gets (gz - mean(gz)) / LS_EPS).
 */
static void load_row_backward(const float *x, int64_t C, int standardize, const double *gz,
                              float *grad)
{
    if (!standardize) {
        for (int64_t j = 0; j < C; j++)
            grad[j] += (float)gz[j];
        return;
    }
    double m = 0.0, mg = 0.0;
    for (int64_t j = 0; j < C; j++) {
        m += x[j];
        mg += gz[j];
    }
    m /= (double)C;
    mg /= (double)C;
    double ss = 0.0, gc = 0.0;
    for (int64_t j = 0; j < C; j++) {
        double c = (double)x[j] - m;
        ss += c * c;
        gc += gz[j] * c;
    }
    double sd = sqrt(ss / (double)(C - 1)), d = LS_EPS + sd;
    double k = sd > 0.0 ? gc / (d * d) / ((double)(C - 1) * sd) : 0.0;
    for (int64_t j = 0; j < C; j++)
        grad[j] += (float)((gz[j] - mg) / d - k * ((double)x[j] - m));
}

/* ==================================================================== CE */

static int ce_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                      void *payload)
{
    const distill_loss *l = payload;
    const int64_t n = b->n, C = b->classes;
    const double eps = l->params.smoothing;
    double *buf = row_buffers(C, 3);
    if (!buf)
        return seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
    double *x = buf, *lsm = buf + C, *gz = buf + 2 * C; /* (C) each */
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *s = b->student_logits + i * C;
        load_row(s, C, 0, x);
        log_softmax_row(x, C, 1.0, -1, 0.0, lsm);
        total += ce_row(lsm, C, b->labels[i], eps);
        if (g && g->student_logits) { /* d(total / n) / d s */
            for (int64_t j = 0; j < C; j++)
                gz[j] = 0.0;
            ce_row_backward(lsm, C, b->labels[i], eps, 1.0 / (double)n, gz);
            load_row_backward(s, C, 0, gz, g->student_logits + i * C);
        }
    }
    xfree(buf);
    *loss = total / (double)n;
    return DISTILL_OK;
}

const distill_loss_vtable loss_vt_ce = {DISTILL_LOSS_VTABLE_VERSION, "ce", ce_forward, NULL};

/* ==================================================================== KD */

/*
 * loss = alpha * T^2 * sum_i KL(softmax(u_i/T) || softmax(z_i/T)) / n
 *      + (1 - alpha) * sum_i CE(s_i, y_i) / n
 * with z = s, u = t, or with ls both standardized (load_row; the CE term
 * always reads the raw s, as Sun et al.'s KD).  Each term is skipped when
 * its weight is 0 (so alpha = 1 needs no labels and alpha = 0 no teacher).
 */
static int kd_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                      void *payload)
{
    const distill_loss *l = payload;
    const int64_t n = b->n, C = b->classes;
    const double T = l->params.temperature, alpha = l->params.alpha;
    const int ls = l->params.standardize;
    double *buf = row_buffers(C, 7);
    if (!buf)
        return seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
    double *lq = buf;          /* (C) log softmax(z/T) */
    double *lb = buf + C;      /* (C) log softmax(u/T) */
    double *lsm = buf + 2 * C; /* (C) log softmax(s) */
    double *z = buf + 3 * C, *u = buf + 4 * C, *x = buf + 5 * C; /* (C) */
    double *gz = buf + 6 * C;  /* (C) dloss/dz */
    float *grad = g ? g->student_logits : NULL;
    double kl = 0.0, ce = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *s = b->student_logits + i * C;
        if (alpha > 0.0) {
            load_row(s, C, ls, z);
            load_row(b->teacher_logits + i * C, C, ls, u);
            log_softmax_row(z, C, 1.0 / T, -1, 0.0, lq);
            log_softmax_row(u, C, 1.0 / T, -1, 0.0, lb);
            kl += kl_row(lb, lq, C);
            /* d(alpha T^2 KL / n)/dz = alpha T^2 / n * (1/T) * dKL/d(z/T) */
            if (grad) {
                for (int64_t j = 0; j < C; j++)
                    gz[j] = 0.0;
                kl_row_backward(lb, lq, C, alpha * T / (double)n, gz);
                load_row_backward(s, C, ls, gz, grad + i * C);
            }
        }
        if (alpha < 1.0) {
            load_row(s, C, 0, x);
            log_softmax_row(x, C, 1.0, -1, 0.0, lsm);
            ce += ce_row(lsm, C, b->labels[i], 0.0);
            if (grad) {
                for (int64_t j = 0; j < C; j++)
                    gz[j] = 0.0;
                ce_row_backward(lsm, C, b->labels[i], 0.0, (1.0 - alpha) / (double)n, gz);
                load_row_backward(s, C, 0, gz, grad + i * C);
            }
        }
    }
    xfree(buf);
    *loss = alpha * T * T * kl / (double)n + (1.0 - alpha) * ce / (double)n;
    return DISTILL_OK;
}

const distill_loss_vtable loss_vt_kd = {DISTILL_LOSS_VTABLE_VERSION, "kd", kd_forward, NULL};

/* =================================================================== DKD */

/* log(sum_{j != skip} exp(x_j)) */
static double logsumexp_except(const double *x, int64_t C, int64_t skip)
{
    double mx = -INFINITY;
    for (int64_t j = 0; j < C; j++)
        if (j != skip && x[j] > mx)
            mx = x[j];
    if (mx == -INFINITY)
        return -INFINITY;
    double s = 0.0;
    for (int64_t j = 0; j < C; j++)
        if (j != skip)
            s += exp(x[j] - mx);
    return mx + log(s);
}

/* b * (log b - log q) with b = exp(lb), 0 when b == 0 */
static double kl_term(double lb, double lq)
{
    double b = exp(lb);
    return b > 0.0 ? b * (lb - lq) : 0.0;
}

/*
 * mdistiller's dkd_loss, for sample i with label g (gt), z = s/T, u = t/T:
 *
 *   p = softmax(z), pt = softmax(u)
 *   TCKD_i = KL([pt_g, sum_{j!=g} pt_j] || [p_g, sum_{j!=g} p_j])
 *   NCKD_i = KL(softmax(u - 1000 e_g) || softmax(z - 1000 e_g))
 *   loss = (alpha * sum_i TCKD_i + beta * sum_i NCKD_i) * T^2 / n
 *
 * The binary log probabilities are formed as log-sum-exps of the log
 * softmax (mdistiller takes torch.log of the summed float probabilities:
 * the same value, without underflow to log 0).
 */
static int dkd_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                       void *payload)
{
    const distill_loss *l = payload;
    const int64_t n = b->n, C = b->classes;
    const double T = l->params.temperature, alpha = l->params.alpha, beta = l->params.beta;
    const int ls = l->params.standardize;
    double *buf = row_buffers(C, 7);
    if (!buf)
        return seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
    double *lq = buf;          /* (C) log softmax(z) */
    double *lb = buf + C;      /* (C) log softmax(u) */
    double *lq2 = buf + 2 * C; /* (C) log softmax(z - 1000 e_g) */
    double *lb2 = buf + 3 * C; /* (C) log softmax(u - 1000 e_g) */
    double *xs = buf + 4 * C, *xt = buf + 5 * C; /* (C) the rows, standardized with ls */
    double *gx = buf + 6 * C;  /* (C) dloss/dxs */
    float *grad = g ? g->student_logits : NULL;
    double tckd = 0.0, nckd = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *s = b->student_logits + i * C;
        const int64_t y = b->labels[i];
        load_row(s, C, ls, xs);
        load_row(b->teacher_logits + i * C, C, ls, xt);
        log_softmax_row(xs, C, 1.0 / T, -1, 0.0, lq);
        log_softmax_row(xt, C, 1.0 / T, -1, 0.0, lb);
        log_softmax_row(xs, C, 1.0 / T, y, DKD_GT_MASK, lq2);
        log_softmax_row(xt, C, 1.0 / T, y, DKD_GT_MASK, lb2);

        /* TCKD on the binary distributions [gt, other] */
        double lp_g = lq[y], lp_o = logsumexp_except(lq, C, y);
        double lt_g = lb[y], lt_o = logsumexp_except(lb, C, y);
        tckd += kl_term(lt_g, lp_g) + kl_term(lt_o, lp_o);
        nckd += kl_row(lb2, lq2, C);

        if (grad) {
            double *gr = gx;
            for (int64_t j = 0; j < C; j++)
                gr[j] = 0.0;
            /* dTCKD/dz_j = p_j (b_g + b_o) - b_g [j == g] - b_o [j != g] p_j / p_o:
             * -b_g d(log p_g)/dz_j - b_o d(log p_o)/dz_j with
             * d(log p_g)/dz_j = [j == g] - p_j and
             * d(log p_o)/dz_j = [j != g] p_j / p_o - p_j. */
            double bg = exp(lt_g), bo = exp(lt_o);
            double st = alpha * T / (double)n; /* alpha T^2 / n * dz/ds (1/T) */
            for (int64_t j = 0; j < C; j++) {
                double pj = exp(lq[j]);
                double d = pj * (bg + bo) - (j == y ? bg : bo * exp(lq[j] - lp_o));
                gr[j] += st * d;
            }
            /* NCKD: KL through a log softmax of z - 1000 e_g (the shift has
             * derivative 1) */
            kl_row_backward(lb2, lq2, C, beta * T / (double)n, gr);
            load_row_backward(s, C, ls, gr, grad + i * C);
        }
    }
    xfree(buf);
    *loss = (alpha * tckd + beta * nckd) * T * T / (double)n;
    return DISTILL_OK;
}

const distill_loss_vtable loss_vt_dkd = {DISTILL_LOSS_VTABLE_VERSION, "dkd", dkd_forward, NULL};

/* ================================================== batch-level helpers */

/* softmax(x_i * scale) of every row of an (n, C) float matrix into p. */
static void softmax_rows(const float *x, int64_t n, int64_t C, double scale, double *row,
                         double *p)
{
    for (int64_t i = 0; i < n; i++) {
        load_row(x + i * C, C, 0, row);
        log_softmax_row(row, C, scale, -1, 0.0, p + i * C);
        for (int64_t j = 0; j < C; j++)
            p[i * C + j] = exp(p[i * C + j]);
    }
}

/*
 * Backward of softmax_rows: gp = dL/dp (n, C) in, dL/dx ADDED into gx:
 * dL/dx_ij = scale * p_ij (gp_ij - sum_k p_ik gp_ik).
 */
static void softmax_rows_backward(const double *p, const double *gp, int64_t n, int64_t C,
                                  double scale, double *gx)
{
    for (int64_t i = 0; i < n; i++) {
        const double *pi = p + i * C, *gi = gp + i * C;
        double dot = 0.0;
        for (int64_t j = 0; j < C; j++)
            dot += pi[j] * gi[j];
        for (int64_t j = 0; j < C; j++)
            gx[i * C + j] += scale * pi[j] * (gi[j] - dot);
    }
}

/* m doubles, or NULL (also on overflow). */
static double *dbuf(size_t a, size_t b)
{
    size_t count, bytes;
    if (size_mul(a, b, &count) || size_mul(count, sizeof(double), &bytes))
        return NULL;
    return xmalloc(bytes ? bytes : sizeof(double));
}

/* ================================================================== DIST */

/* DIST's cosine/Pearson epsilon (its reference code's default). */
#define DIST_EPS 1e-8

/*
 * Pearson correlation of the m values a[k * stride] and b[k * stride] as
 * DIST computes it: r = <a - mean a, b - mean b> / (|a - mean a| |b - mean b| + eps).
 * When ga is not NULL, scale * dr/da is ADDED into ga[k * stride]:
 *   dr/da_k = bc_k / den - r |bc| ac_k / (|ac| den)   (the second term 0
 *   when |ac| = 0), with ac = a - mean a, bc = b - mean b, den the
 *   denominator; centering needs no backward term since sum bc = sum ac = 0.
 */
static double pearson(const double *a, const double *b, int64_t m, int64_t stride, double scale,
                      double *ga)
{
    double ma = 0.0, mb = 0.0;
    for (int64_t k = 0; k < m; k++) {
        ma += a[k * stride];
        mb += b[k * stride];
    }
    ma /= (double)m;
    mb /= (double)m;
    double dot = 0.0, aa = 0.0, bb = 0.0;
    for (int64_t k = 0; k < m; k++) {
        double ac = a[k * stride] - ma, bc = b[k * stride] - mb;
        dot += ac * bc;
        aa += ac * ac;
        bb += bc * bc;
    }
    double na = sqrt(aa), nb = sqrt(bb), den = na * nb + DIST_EPS;
    double r = dot / den;
    if (ga) {
        double k2 = na > 0.0 ? r * nb / (na * den) : 0.0;
        for (int64_t k = 0; k < m; k++) {
            double ac = a[k * stride] - ma, bc = b[k * stride] - mb;
            ga[k * stride] += scale * (bc / den - k2 * ac);
        }
    }
    return r;
}

/*
 * Huang et al. 2022, with P = softmax(s/T), Q = softmax(t/T), (n, C):
 *   inter = 1 - (1/n) sum_i pearson(P_i., Q_i.)     (rows: each sample)
 *   intra = 1 - (1/C) sum_j pearson(P_.j, Q_.j)     (columns: each class)
 *   loss  = T^2 (beta * inter + gamma * intra)
 * With n = 1 every column is one value: its centered vector is 0, its
 * correlation 0, so intra = 1 and contributes no gradient.
 */
static int dist_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                        void *payload)
{
    const distill_loss *l = payload;
    const int64_t n = b->n, C = b->classes;
    const double T = l->params.temperature, beta = l->params.beta, gamma = l->params.gamma;
    const size_t nc = (size_t)n * (size_t)C;
    float *grad = g ? g->student_logits : NULL;
    double *buf = dbuf(nc, grad ? 4 : 2), *row = row_buffers(C, 1);
    if (!buf || !row) {
        xfree(buf);
        xfree(row);
        return seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
    }
    double *P = buf, *Q = buf + nc;                           /* (n, C) */
    double *gP = grad ? buf + 2 * nc : NULL;                  /* (n, C) dloss/dP */
    double *gx = grad ? buf + 3 * nc : NULL;                  /* (n, C) dloss/ds */
    softmax_rows(b->student_logits, n, C, 1.0 / T, row, P);
    softmax_rows(b->teacher_logits, n, C, 1.0 / T, row, Q);
    if (grad)
        for (size_t k = 0; k < 2 * nc; k++)
            gP[k] = 0.0;
    double T2 = T * T, rin = 0.0, rcl = 0.0;
    if (beta > 0.0)
        for (int64_t i = 0; i < n; i++) /* d(-T^2 beta r_i / n) */
            rin += pearson(P + i * C, Q + i * C, C, 1, -T2 * beta / (double)n,
                           gP ? gP + i * C : NULL);
    if (gamma > 0.0)
        for (int64_t j = 0; j < C; j++) /* d(-T^2 gamma r_j / C) */
            rcl += pearson(P + j, Q + j, n, C, -T2 * gamma / (double)C, gP ? gP + j : NULL);
    double inter = beta > 0.0 ? 1.0 - rin / (double)n : 0.0;
    double intra = gamma > 0.0 ? 1.0 - rcl / (double)C : 0.0;
    if (grad) {
        softmax_rows_backward(P, gP, n, C, 1.0 / T, gx);
        for (size_t k = 0; k < nc; k++)
            grad[k] += (float)gx[k];
    }
    xfree(buf);
    xfree(row);
    *loss = T2 * (beta * inter + gamma * intra);
    return DISTILL_OK;
}

const distill_loss_vtable loss_vt_dist = {DISTILL_LOSS_VTABLE_VERSION, "dist", dist_forward,
                                          NULL};

/* ================================================================== MLKD */

static const double mlkd_temps[] = {2.0, 3.0, 4.0, 5.0, 6.0};
#define MLKD_NTEMPS (sizeof mlkd_temps / sizeof mlkd_temps[0])

/* numpy.percentile(v, 50) (linear interpolation) of m values; sorts v. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_sorted(double *v, int64_t m)
{
    qsort(v, (size_t)m, sizeof *v, cmp_double);
    double pos = 0.5 * (double)(m - 1);
    int64_t lo = (int64_t)floor(pos), hi = (int64_t)ceil(pos);
    return v[lo] + (v[hi] - v[lo]) * (pos - (double)lo);
}

/* The fraction of the m values v[k * stride] that are <= their median. */
static double frac_le_median(const double *v, int64_t m, int64_t stride, double *tmp)
{
    for (int64_t k = 0; k < m; k++)
        tmp[k] = v[k * stride];
    double thr = median_sorted(tmp, m);
    int64_t count = 0;
    for (int64_t k = 0; k < m; k++)
        count += v[k * stride] <= thr;
    return (double)count / (double)m;
}

/*
 * Jin et al. 2023 on one view.  For each T in {2, 3, 4, 5, 6}, with
 * P = softmax(s/T), Q = softmax(t/T) (n, C):
 *   inst_T  = T^2 / n sum_i KL(softmax(u_i/T) || softmax(z_i/T))
 *             (z = s, u = t, or both standardized with ls)
 *   batch_T = || Q Q^T - P P^T ||_F^2 / n        (B x B Gram, n = B)
 *   class_T = || Q^T Q - P^T P ||_F^2 / C        (C x C)
 *   loss = sum_T  fs * inst_T + fs * batch_T + fc * class_T
 * fs, fc are 1 without the mask; with it (the reference code's weak view)
 * fs = the fraction of samples whose teacher confidence max_j softmax(t)_ij
 * is <= its batch median, fc = the fraction of classes whose summed
 * teacher probability sum_i softmax(t)_ij is <= its median.
 * Gradients: d batch_T/dP = -(4/n) (QQ^T - PP^T) P,
 *            d class_T/dP = -(4/C) P (Q^TQ - P^TP), then softmax's backward.
 */
static int mlkd_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                        void *payload)
{
    const distill_loss *l = payload;
    const int64_t n = b->n, C = b->classes;
    const int ls = l->params.standardize;
    const size_t nc = (size_t)n * (size_t)C;
    float *grad = g ? g->student_logits : NULL;
    double *buf = dbuf(nc, 5), *D = dbuf((size_t)C, (size_t)C), *E = dbuf((size_t)n, (size_t)n);
    double *rows = row_buffers(C > n ? C : n, 6);
    if (!buf || !D || !E || !rows) {
        xfree(buf);
        xfree(D);
        xfree(E);
        xfree(rows);
        return seterr(DISTILL_ENOMEM, "loss '%s': out of memory (%lld x %lld logits)", l->name,
                      (long long)n, (long long)C);
    }
    const int64_t R = C > n ? C : n;
    double *P = buf, *Q = buf + nc;  /* (n, C) */
    double *gP = buf + 2 * nc;       /* (n, C) dloss/dP at one T */
    double *gx = buf + 3 * nc;       /* (n, C) dloss/ds through P */
    double *gz = buf + 4 * nc;       /* (n, C) dloss/dz, instance terms */
    double *z = rows, *u = rows + R, *lq = rows + 2 * R, *lb = rows + 3 * R;
    double *tmp = rows + 4 * R;      /* (max(n, C)) */
    for (size_t k = 0; k < nc; k++)
        gx[k] = gz[k] = 0.0;

    double fs = 1.0, fc = 1.0;
    if (l->params.mask) {
        softmax_rows(b->teacher_logits, n, C, 1.0, tmp, Q);
        double *conf = rows + 5 * R;
        for (int64_t i = 0; i < n; i++) {
            double mx = 0.0;
            for (int64_t j = 0; j < C; j++)
                mx = Q[i * C + j] > mx ? Q[i * C + j] : mx;
            conf[i] = mx;
        }
        fs = frac_le_median(conf, n, 1, tmp);
        for (int64_t j = 0; j < C; j++) {
            double sum = 0.0;
            for (int64_t i = 0; i < n; i++)
                sum += Q[i * C + j];
            conf[j] = sum;
        }
        fc = frac_le_median(conf, C, 1, tmp);
    }

    double total = 0.0;
    for (size_t ti = 0; ti < MLKD_NTEMPS; ti++) {
        const double T = mlkd_temps[ti];
        /* instance level */
        double kl = 0.0;
        for (int64_t i = 0; i < n; i++) {
            load_row(b->student_logits + i * C, C, ls, z);
            load_row(b->teacher_logits + i * C, C, ls, u);
            log_softmax_row(z, C, 1.0 / T, -1, 0.0, lq);
            log_softmax_row(u, C, 1.0 / T, -1, 0.0, lb);
            kl += kl_row(lb, lq, C);
            if (grad)
                kl_row_backward(lb, lq, C, fs * T / (double)n, gz + i * C);
        }
        total += fs * T * T * kl / (double)n;

        softmax_rows(b->student_logits, n, C, 1.0 / T, tmp, P);
        softmax_rows(b->teacher_logits, n, C, 1.0 / T, tmp, Q);
        /* class level: D = Q^T Q - P^T P (C, C) */
        double cls = 0.0;
        for (int64_t j = 0; j < C; j++)
            for (int64_t k = 0; k < C; k++) {
                double d = 0.0;
                for (int64_t i = 0; i < n; i++)
                    d += Q[i * C + j] * Q[i * C + k] - P[i * C + j] * P[i * C + k];
                D[j * C + k] = d;
                cls += d * d;
            }
        /* batch level: E = Q Q^T - P P^T (n, n) */
        double bat = 0.0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < n; k++) {
                double e = 0.0;
                for (int64_t j = 0; j < C; j++)
                    e += Q[i * C + j] * Q[k * C + j] - P[i * C + j] * P[k * C + j];
                E[i * n + k] = e;
                bat += e * e;
            }
        total += fc * cls / (double)C + fs * bat / (double)n;
        if (grad) {
            const double wc = -4.0 * fc / (double)C, wb = -4.0 * fs / (double)n;
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < C; j++) {
                    double a = 0.0, c = 0.0;
                    for (int64_t k = 0; k < C; k++) /* (P D)_ij, D symmetric */
                        a += P[i * C + k] * D[k * C + j];
                    for (int64_t k = 0; k < n; k++) /* (E P)_ij, E symmetric */
                        c += E[i * n + k] * P[k * C + j];
                    gP[i * C + j] = wc * a + wb * c;
                }
            softmax_rows_backward(P, gP, n, C, 1.0 / T, gx);
        }
    }
    if (grad)
        for (int64_t i = 0; i < n; i++) {
            float *gr = grad + i * C;
            load_row_backward(b->student_logits + i * C, C, ls, gz + i * C, gr);
            for (int64_t j = 0; j < C; j++)
                gr[j] += (float)gx[i * C + j];
        }
    xfree(buf);
    xfree(D);
    xfree(E);
    xfree(rows);
    *loss = total;
    return DISTILL_OK;
}

const distill_loss_vtable loss_vt_mlkd = {DISTILL_LOSS_VTABLE_VERSION, "mlkd", mlkd_forward,
                                          NULL};

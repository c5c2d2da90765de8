/*
 * loss_logits.c - the logit losses: cross-entropy, Hinton KD and decoupled
 * KD, in double, with log-sum-exp everywhere a log of a probability is
 * taken.  Gradients are with respect to the student logits only and are
 * ADDED into g->student_logits.
 *
 * Shapes: s, t are (n, C) student and teacher logits, y (n) labels.
 * Reductions follow PyTorch: cross_entropy's default "mean" over the batch,
 * kl_div(..., reduction="batchmean") = sum over classes and batch / n.
 */
#include <math.h>
#include <stddef.h>

#include "distill/loss_internal.h"
#include "util/util.h"

/* mdistiller masks the ground-truth logit out of NCKD by subtracting this
 * from the (temperature-scaled) logits rather than by dropping it. */
#define DKD_GT_MASK 1000.0

/*
 * lsm[j] = z_j - logsumexp(z) with z_j = x[j] * scale, minus `mask` at
 * class `masked` (pass masked = -1 for none).  (C)
 */
static void log_softmax_row(const float *x, int64_t C, double scale, int64_t masked, double mask,
                            double *lsm)
{
    double mx = -INFINITY;
    for (int64_t j = 0; j < C; j++) {
        double z = (double)x[j] * scale - (j == masked ? mask : 0.0);
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
                            float *grad)
{
    double B = 0.0;
    for (int64_t j = 0; j < C; j++)
        B += exp(lb[j]);
    for (int64_t j = 0; j < C; j++)
        grad[j] += (float)(scale * (exp(lq[j]) * B - exp(lb[j])));
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
                            float *grad)
{
    for (int64_t j = 0; j < C; j++) {
        double target = eps / (double)C + (j == y ? 1.0 - eps : 0.0);
        grad[j] += (float)(scale * (exp(lsm[j]) - target));
    }
}

static double *row_buffers(int64_t C, int k)
{
    size_t bytes;
    if (size_mul((size_t)C * (size_t)k, sizeof(double), &bytes))
        return NULL;
    return xmalloc(bytes);
}

/* ==================================================================== CE */

static int ce_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                      void *payload)
{
    const distill_loss *l = payload;
    const int64_t n = b->n, C = b->classes;
    const double eps = l->params.smoothing;
    double *lsm = row_buffers(C, 1); /* (C) */
    if (!lsm)
        return seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *s = b->student_logits + i * C;
        log_softmax_row(s, C, 1.0, -1, 0.0, lsm);
        total += ce_row(lsm, C, b->labels[i], eps);
        if (g && g->student_logits) /* d(total / n) / d s */
            ce_row_backward(lsm, C, b->labels[i], eps, 1.0 / (double)n,
                            g->student_logits + i * C);
    }
    xfree(lsm);
    *loss = total / (double)n;
    return DISTILL_OK;
}

const distill_loss_vtable loss_vt_ce = {DISTILL_LOSS_VTABLE_VERSION, "ce", ce_forward, NULL};

/* ==================================================================== KD */

/*
 * loss = alpha * T^2 * sum_i KL(softmax(t_i/T) || softmax(s_i/T)) / n
 *      + (1 - alpha) * sum_i CE(s_i, y_i) / n
 * Each term is skipped when its weight is 0 (so alpha = 1 needs no labels
 * and alpha = 0 no teacher).
 */
static int kd_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                      void *payload)
{
    const distill_loss *l = payload;
    const int64_t n = b->n, C = b->classes;
    const double T = l->params.temperature, alpha = l->params.alpha;
    double *buf = row_buffers(C, 3);
    if (!buf)
        return seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
    double *lq = buf;         /* (C) log softmax(s/T) */
    double *lb = buf + C;     /* (C) log softmax(t/T) */
    double *lsm = buf + 2 * C; /* (C) log softmax(s) */
    float *grad = g ? g->student_logits : NULL;
    double kl = 0.0, ce = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *s = b->student_logits + i * C;
        if (alpha > 0.0) {
            log_softmax_row(s, C, 1.0 / T, -1, 0.0, lq);
            log_softmax_row(b->teacher_logits + i * C, C, 1.0 / T, -1, 0.0, lb);
            kl += kl_row(lb, lq, C);
            /* d(alpha T^2 KL / n)/ds = alpha T^2 / n * (1/T) * dKL/dz, z = s/T */
            if (grad)
                kl_row_backward(lb, lq, C, alpha * T / (double)n, grad + i * C);
        }
        if (alpha < 1.0) {
            log_softmax_row(s, C, 1.0, -1, 0.0, lsm);
            ce += ce_row(lsm, C, b->labels[i], 0.0);
            if (grad)
                ce_row_backward(lsm, C, b->labels[i], 0.0, (1.0 - alpha) / (double)n,
                                grad + i * C);
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
    double *buf = row_buffers(C, 4);
    if (!buf)
        return seterr(DISTILL_ENOMEM, "loss '%s': out of memory", l->name);
    double *lq = buf;          /* (C) log softmax(z) */
    double *lb = buf + C;      /* (C) log softmax(u) */
    double *lq2 = buf + 2 * C; /* (C) log softmax(z - 1000 e_g) */
    double *lb2 = buf + 3 * C; /* (C) log softmax(u - 1000 e_g) */
    float *grad = g ? g->student_logits : NULL;
    double tckd = 0.0, nckd = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *s = b->student_logits + i * C;
        const float *t = b->teacher_logits + i * C;
        const int64_t y = b->labels[i];
        log_softmax_row(s, C, 1.0 / T, -1, 0.0, lq);
        log_softmax_row(t, C, 1.0 / T, -1, 0.0, lb);
        log_softmax_row(s, C, 1.0 / T, y, DKD_GT_MASK, lq2);
        log_softmax_row(t, C, 1.0 / T, y, DKD_GT_MASK, lb2);

        /* TCKD on the binary distributions [gt, other] */
        double lp_g = lq[y], lp_o = logsumexp_except(lq, C, y);
        double lt_g = lb[y], lt_o = logsumexp_except(lb, C, y);
        tckd += kl_term(lt_g, lp_g) + kl_term(lt_o, lp_o);
        nckd += kl_row(lb2, lq2, C);

        if (grad) {
            float *gr = grad + i * C;
            /* dTCKD/dz_j = p_j (b_g + b_o) - b_g [j == g] - b_o [j != g] p_j / p_o:
             * -b_g d(log p_g)/dz_j - b_o d(log p_o)/dz_j with
             * d(log p_g)/dz_j = [j == g] - p_j and
             * d(log p_o)/dz_j = [j != g] p_j / p_o - p_j. */
            double bg = exp(lt_g), bo = exp(lt_o);
            double st = alpha * T / (double)n; /* alpha T^2 / n * dz/ds (1/T) */
            for (int64_t j = 0; j < C; j++) {
                double pj = exp(lq[j]);
                double d = pj * (bg + bo) - (j == y ? bg : bo * exp(lq[j] - lp_o));
                gr[j] += (float)(st * d);
            }
            /* NCKD: KL through a log softmax of z - 1000 e_g (the shift has
             * derivative 1) */
            kl_row_backward(lb2, lq2, C, beta * T / (double)n, gr);
        }
    }
    xfree(buf);
    *loss = (alpha * tckd + beta * nckd) * T * T / (double)n;
    return DISTILL_OK;
}

const distill_loss_vtable loss_vt_dkd = {DISTILL_LOSS_VTABLE_VERSION, "dkd", dkd_forward, NULL};

/*
 * test_loss_grad.c - every built-in loss's analytic gradient against central
 * finite differences, on seeded random inputs of several batch sizes,
 * class counts and feature shapes.
 *
 * The finite differences go through the public entry point: the student's
 * float input x is moved to xp = float(x + h) and xm = float(x - h),
 * distill_loss_forward is evaluated at both, and
 *
 *     fd = (L(xp) - L(xm)) / (xp - xm)
 *
 * with the step actually taken (xp - xm, exact in double).  The losses are
 * evaluated in double, so L carries ~1e-16 relative rounding and the
 * difference quotient's error is the truncation O(h^2 L''') alone, ~1e-7
 * for h = 1e-3 on these inputs.  The analytic gradient is a float (6e-8
 * relative).  Each element must satisfy
 *
 *     |g - fd| <= 1e-3 |fd| + 1e-5 max|fd|
 *
 * (the second term covers elements whose true gradient is ~0).  The largest
 * errors seen are printed per case and in a summary.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill.h"
#include "util/util.h"

#define FD_H 1e-3
#define TOL_REL 1e-3
#define TOL_MAX 1e-5

static double worst_abs;   /* largest |g - fd| over all cases */
static double worst_rel;   /* largest |g - fd| / |fd| where |fd| >= 1e-2 max|fd| */
static double worst_ratio; /* largest |g - fd| / tolerance */
static size_t checked;

/* The inputs of one case; the loss reads the student side, which we move. */
typedef struct fd_case {
    distill_loss *l;
    distill_loss_batch b;
    float *s_logits, *t_logits; /* (n, C) */
    int32_t *labels;            /* (n) */
    distill_tensor *sf, *tf;    /* taps, or NULL */
} fd_case;

static float randn(rng *r, float scale)
{
    return scale * rng_normal(r);
}

static void case_init(fd_case *c, distill_loss *l, int64_t n, int64_t C, uint64_t seed,
                      float logit_scale)
{
    memset(c, 0, sizeof *c);
    c->l = l;
    rng r;
    rng_seed(&r, seed);
    c->s_logits = malloc((size_t)(n * C) * sizeof(float));
    c->t_logits = malloc((size_t)(n * C) * sizeof(float));
    c->labels = malloc((size_t)n * sizeof(int32_t));
    assert_non_null(c->s_logits);
    assert_non_null(c->t_logits);
    assert_non_null(c->labels);
    for (int64_t i = 0; i < n * C; i++) {
        c->s_logits[i] = randn(&r, logit_scale);
        c->t_logits[i] = randn(&r, logit_scale);
    }
    for (int64_t i = 0; i < n; i++)
        c->labels[i] = (int32_t)rng_below(&r, (uint64_t)C);
    c->b.version = DISTILL_LOSS_BATCH_VERSION;
    c->b.n = n;
    c->b.classes = C;
    c->b.student_logits = c->s_logits;
    c->b.teacher_logits = c->t_logits;
    c->b.labels = c->labels;
}

/* Taps of the given shapes, N(0, 1) (or |N(0, 1)| with positive). */
static void case_taps(fd_case *c, int rank_s, const int64_t *ds, int rank_t, const int64_t *dt,
                      uint64_t seed, int positive)
{
    rng r;
    rng_seed(&r, seed ^ 0x9e3779b97f4a7c15ull);
    assert_int_equal(distill_tensor_create(&c->sf, rank_s, ds), DISTILL_OK);
    assert_int_equal(distill_tensor_create(&c->tf, rank_t, dt), DISTILL_OK);
    float *s = distill_tensor_data(c->sf), *t = distill_tensor_data(c->tf);
    for (int64_t i = 0; i < distill_tensor_numel(c->sf); i++)
        s[i] = positive ? fabsf(randn(&r, 1.0f)) : randn(&r, 1.0f);
    for (int64_t i = 0; i < distill_tensor_numel(c->tf); i++)
        t[i] = positive ? fabsf(randn(&r, 1.0f)) : randn(&r, 1.0f);
    c->b.student_feat = c->sf;
    c->b.teacher_feat = c->tf;
}

static void case_free(fd_case *c)
{
    distill_loss_free(c->l);
    free(c->s_logits);
    free(c->t_logits);
    free(c->labels);
    distill_tensor_free(c->sf);
    distill_tensor_free(c->tf);
}

static double eval(fd_case *c)
{
    double v = NAN;
    int rc = distill_loss_forward(c->l, &c->b, &v, NULL);
    if (rc != DISTILL_OK)
        fail_msg("%s: %s", distill_loss_name(c->l), distill_last_error());
    return v;
}

/* Compare the analytic gradient g of x with central differences at the
 * count elements idx (all of x when idx is NULL); returns the number of
 * failures. */
static int compare(fd_case *c, float *x, const float *g, size_t count, const size_t *idx,
                   const char *what, const char *label)
{
    double *fd = malloc(count * sizeof *fd);
    assert_non_null(fd);
    double fmax = 0.0;
    for (size_t k = 0; k < count; k++) {
        size_t i = idx ? idx[k] : k;
        float x0 = x[i];
        double h = FD_H * (fabs(x0) > 1.0 ? fabs(x0) : 1.0);
        float xp = (float)(x0 + h), xm = (float)(x0 - h);
        x[i] = xp;
        double lp = eval(c);
        x[i] = xm;
        double lm = eval(c);
        x[i] = x0;
        fd[k] = (lp - lm) / ((double)xp - (double)xm);
        if (fabs(fd[k]) > fmax)
            fmax = fabs(fd[k]);
    }
    int fails = 0;
    double case_abs = 0.0, case_rel = 0.0;
    for (size_t k = 0; k < count; k++) {
        size_t i = idx ? idx[k] : k;
        double err = fabs((double)g[i] - fd[k]);
        double tol = TOL_REL * fabs(fd[k]) + TOL_MAX * fmax + 1e-12;
        if (err > case_abs)
            case_abs = err;
        /* relative error where the gradient is not ~0 (a loss that is
         * constant in its input, e.g. RKD of 2 samples, has only noise) */
        if (fmax > 1e-9 && fabs(fd[k]) >= 1e-2 * fmax && err / fabs(fd[k]) > case_rel)
            case_rel = err / fabs(fd[k]);
        if (err / tol > worst_ratio)
            worst_ratio = err / tol;
        if (err > tol) {
            if (fails < 5)
                printf("  FAIL %s %s[%zu]: analytic %.9g, finite difference %.9g\n", label,
                       what, i, (double)g[i], fd[k]);
            fails++;
        }
    }
    checked += count;
    if (case_abs > worst_abs)
        worst_abs = case_abs;
    if (case_rel > worst_rel)
        worst_rel = case_rel;
    printf("  %-44s %-8s %4zu elems  max|g|=%-9.3g max|g-fd|=%.2e  max rel=%.2e\n", label, what,
           count, fmax, case_abs, case_rel);
    free(fd);
    return fails;
}

/* Analytic gradients (into fresh zeroed buffers), then the comparison on the
 * student logits or, for a feature loss, the student tap: every element, or
 * `samples` seeded random ones when samples > 0. */
static void check_case_sampled(fd_case *c, const char *label, size_t samples)
{
    size_t nl = (size_t)(c->b.n * c->b.classes);
    float *gl = calloc(nl, sizeof(float));
    assert_non_null(gl);
    distill_tensor *gf = NULL;
    if (c->sf)
        assert_int_equal(distill_tensor_clone(&gf, c->sf), DISTILL_OK);
    if (gf)
        distill_tensor_fill(gf, 0.0f);
    distill_loss_grads g = {DISTILL_LOSS_GRADS_VERSION, gl, gf};
    double v;
    int rc = distill_loss_forward(c->l, &c->b, &v, &g);
    if (rc != DISTILL_OK)
        fail_msg("%s: %s", label, distill_last_error());
    assert_true(isfinite(v));
    int fails = 0;
    if (c->sf) {
        /* a feature loss leaves the logits alone */
        for (size_t i = 0; i < nl; i++)
            assert_true(gl[i] == 0.0f);
        size_t numel = (size_t)distill_tensor_numel(c->sf);
        size_t *idx = NULL;
        if (samples > 0 && samples < numel) {
            idx = malloc(samples * sizeof *idx);
            assert_non_null(idx);
            rng r;
            rng_seed(&r, numel);
            for (size_t k = 0; k < samples; k++)
                idx[k] = (size_t)rng_below(&r, numel);
        }
        fails += compare(c, distill_tensor_data(c->sf), distill_tensor_data(gf),
                         idx ? samples : numel, idx, "feat", label);
        free(idx);
    } else {
        fails += compare(c, c->s_logits, gl, nl, NULL, "logits", label);
    }
    free(gl);
    distill_tensor_free(gf);
    assert_int_equal(fails, 0);
}

static void check_case(fd_case *c, const char *label)
{
    check_case_sampled(c, label, 0);
}

/* ======================================================== logit losses */

static void test_grad_ce(void **state)
{
    (void)state;
    const int64_t shapes[][2] = {{1, 2}, {3, 5}, {8, 10}};
    const float eps[] = {0.0f, 0.1f, 0.35f};
    for (int s = 0; s < 3; s++)
        for (int e = 0; e < 3; e++) {
            fd_case c;
            distill_loss *l;
            assert_int_equal(distill_loss_cross_entropy(&l, eps[e]), DISTILL_OK);
            case_init(&c, l, shapes[s][0], shapes[s][1], 100 + (uint64_t)(s * 3 + e), 2.0f);
            char label[96];
            snprintf(label, sizeof label, "ce eps=%g n=%lld C=%lld", (double)eps[e],
                     (long long)shapes[s][0], (long long)shapes[s][1]);
            check_case(&c, label);
            case_free(&c);
        }
}

static void test_grad_kd(void **state)
{
    (void)state;
    const int64_t shapes[][2] = {{1, 3}, {4, 7}, {9, 10}};
    const float Ts[] = {1.0f, 4.0f, 0.5f};
    const float alphas[] = {0.9f, 1.0f, 0.0f, 0.5f};
    for (int s = 0; s < 3; s++)
        for (int t = 0; t < 3; t++)
            for (int a = 0; a < 4; a++) {
                fd_case c;
                distill_loss *l;
                assert_int_equal(distill_loss_kd(&l, Ts[t], alphas[a]), DISTILL_OK);
                case_init(&c, l, shapes[s][0], shapes[s][1], 200 + (uint64_t)(s * 16 + t * 4 + a),
                          3.0f);
                if (alphas[a] == 1.0f)
                    c.b.labels = NULL; /* unlabelled KD */
                if (alphas[a] == 0.0f)
                    c.b.teacher_logits = NULL; /* plain CE: no teacher */
                char label[96];
                snprintf(label, sizeof label, "kd T=%g alpha=%g n=%lld C=%lld", (double)Ts[t],
                         (double)alphas[a], (long long)shapes[s][0], (long long)shapes[s][1]);
                check_case(&c, label);
                case_free(&c);
            }
}

static void test_grad_dkd(void **state)
{
    (void)state;
    const int64_t shapes[][2] = {{1, 2}, {3, 4}, {6, 10}};
    const float params[][3] = {{4.0f, 1.0f, 8.0f}, {1.0f, 0.5f, 2.0f}, {2.0f, 2.0f, 0.0f}};
    for (int s = 0; s < 3; s++)
        for (int p = 0; p < 3; p++) {
            fd_case c;
            distill_loss *l;
            assert_int_equal(distill_loss_dkd(&l, params[p][0], params[p][1], params[p][2]),
                             DISTILL_OK);
            case_init(&c, l, shapes[s][0], shapes[s][1], 300 + (uint64_t)(s * 3 + p), 3.0f);
            char label[96];
            snprintf(label, sizeof label, "dkd T=%g a=%g b=%g n=%lld C=%lld", (double)params[p][0],
                     (double)params[p][1], (double)params[p][2], (long long)shapes[s][0],
                     (long long)shapes[s][1]);
            check_case(&c, label);
            case_free(&c);
        }
}

/* kd/dkd with logit standardization, DIST and MLKD (every variant). */
static void test_grad_new_logit(void **state)
{
    (void)state;
    const int64_t shapes[][2] = {{1, 3}, {4, 7}, {9, 10}};
    for (int s = 0; s < 3; s++)
        for (int k = 0; k < 8; k++) {
            distill_loss *l = NULL;
            const char *what[] = {"kd ls T=4 a=0.9", "dkd ls T=4 a=1 b=8", "dist T=1",
                                  "dist T=4 b=2 g=2", "mlkd", "mlkd ls",
                                  "mlkd mask", "mlkd ls mask"};
            int rc = k == 0   ? distill_loss_kd_ls(&l, 4.0f, 0.9f)
                     : k == 1 ? distill_loss_dkd_ls(&l, 4.0f, 1.0f, 8.0f)
                     : k == 2 ? distill_loss_dist(&l, 1.0f, 1.0f, 1.0f)
                     : k == 3 ? distill_loss_dist(&l, 4.0f, 2.0f, 2.0f)
                              : distill_loss_mlkd(&l, (k - 4) & 1, (k - 4) >> 1);
            assert_int_equal(rc, DISTILL_OK);
            fd_case c;
            case_init(&c, l, shapes[s][0], shapes[s][1], 1000 + (uint64_t)(s * 8 + k), 2.0f);
            char label[96];
            snprintf(label, sizeof label, "%s n=%lld C=%lld", what[k], (long long)shapes[s][0],
                     (long long)shapes[s][1]);
            check_case(&c, label);
            case_free(&c);
        }
}

/* ====================================================== feature losses */

typedef struct tap_shapes {
    int rs;
    int64_t ds[4];
    int rt;
    int64_t dt[4];
} tap_shapes;

static void feat_cases(const char *kind, const tap_shapes *sh, int count, uint64_t seed,
                       int positive, float p_exp)
{
    for (int k = 0; k < count; k++) {
        distill_loss *l = NULL;
        int rc;
        if (!strcmp(kind, "fitnets"))
            rc = distill_loss_fitnets(&l, "s", "t");
        else if (!strcmp(kind, "at"))
            rc = distill_loss_attention(&l, "s", "t", p_exp);
        else if (!strcmp(kind, "sp"))
            rc = distill_loss_similarity(&l, "s", "t");
        else if (!strcmp(kind, "rkd"))
            rc = distill_loss_rkd(&l, "s", "t", 25.0f, 50.0f);
        else
            rc = distill_loss_pkt(&l, "s", "t");
        assert_int_equal(rc, DISTILL_OK);
        fd_case c;
        case_init(&c, l, sh[k].ds[0], 3, seed + (uint64_t)k, 1.0f);
        case_taps(&c, sh[k].rs, sh[k].ds, sh[k].rt, sh[k].dt, seed + (uint64_t)k, positive);
        char label[96];
        int w = snprintf(label, sizeof label, "%s", kind);
        if (!strcmp(kind, "at"))
            w += snprintf(label + w, sizeof label - (size_t)w, " p=%g", (double)p_exp);
        w += snprintf(label + w, sizeof label - (size_t)w, " s(");
        for (int d = 0; d < sh[k].rs; d++)
            w += snprintf(label + w, sizeof label - (size_t)w, d ? ",%lld" : "%lld",
                          (long long)sh[k].ds[d]);
        w += snprintf(label + w, sizeof label - (size_t)w, ") t(");
        for (int d = 0; d < sh[k].rt; d++)
            w += snprintf(label + w, sizeof label - (size_t)w, d ? ",%lld" : "%lld",
                          (long long)sh[k].dt[d]);
        snprintf(label + w, sizeof label - (size_t)w, ")");
        check_case(&c, label);
        case_free(&c);
    }
}

static void test_grad_fitnets(void **state)
{
    (void)state;
    const tap_shapes sh[] = {
        {2, {1, 5}, 2, {1, 5}},
        {4, {2, 3, 4, 4}, 4, {2, 3, 4, 4}},
        {2, {6, 7}, 2, {6, 7}},
    };
    feat_cases("fitnets", sh, 3, 400, 0, 0.0f);
}

static void test_grad_at(void **state)
{
    (void)state;
    const tap_shapes sh[] = {
        {4, {1, 2, 3, 3}, 4, {1, 4, 3, 3}},
        {4, {3, 4, 5, 5}, 4, {3, 6, 5, 5}},
        {3, {4, 3, 6}, 3, {4, 3, 6}},
    };
    feat_cases("at", sh, 3, 500, 0, 2.0f);
    feat_cases("at", sh, 3, 510, 0, 3.0f);  /* odd: f^3 keeps the sign */
    feat_cases("at", sh, 3, 520, 0, 1.0f);
    feat_cases("at", sh, 3, 530, 1, 1.5f); /* non-integer p on non-negative maps */
}

static void test_grad_sp(void **state)
{
    (void)state;
    const tap_shapes sh[] = {
        {2, {1, 6}, 2, {1, 4}},
        {4, {4, 3, 2, 2}, 4, {4, 5, 2, 2}},
        {2, {7, 9}, 4, {7, 2, 3, 3}},
    };
    feat_cases("sp", sh, 3, 600, 0, 0.0f);
}

static void test_grad_rkd(void **state)
{
    (void)state;
    const tap_shapes sh[] = {
        {2, {2, 5}, 2, {2, 3}},
        {2, {3, 4}, 2, {3, 6}},
        {4, {6, 2, 2, 3}, 2, {6, 8}},
        {2, {9, 5}, 2, {9, 5}},
    };
    feat_cases("rkd", sh, 4, 700, 0, 0.0f);
}

static void test_grad_pkt(void **state)
{
    (void)state;
    const tap_shapes sh[] = {
        {2, {1, 4}, 2, {1, 4}},
        {2, {3, 5}, 2, {3, 8}},
        {4, {6, 2, 2, 2}, 2, {6, 3}},
    };
    feat_cases("pkt", sh, 3, 800, 0, 0.0f);
}

/* Batches large enough for the parallel loops of the Gram products (n^2 D
 * above the library's threshold), checked on 32 sampled elements each. */
static distill_loss *make_flat(int k)
{
    distill_loss *l = NULL;
    if (k == 0)
        assert_int_equal(distill_loss_similarity(&l, "s", "t"), DISTILL_OK);
    else if (k == 1)
        assert_int_equal(distill_loss_rkd(&l, "s", "t", 25.0f, 50.0f), DISTILL_OK);
    else
        assert_int_equal(distill_loss_pkt(&l, "s", "t"), DISTILL_OK);
    return l;
}

static void test_grad_large(void **state)
{
    (void)state;
    const char *names[3] = {"sp", "rkd", "pkt"};
    const int64_t ds[4] = {32, 3, 8, 8}, dt[2] = {32, 40};
    for (int k = 0; k < 3; k++) {
        fd_case c;
        case_init(&c, make_flat(k), 32, 3, 900 + (uint64_t)k, 1.0f);
        case_taps(&c, 4, ds, 2, dt, 900 + (uint64_t)k, 0);
        char label[64];
        snprintf(label, sizeof label, "%s s(32,3,8,8) t(32,40) sampled", names[k]);
        check_case_sampled(&c, label, 32);
        case_free(&c);
    }
}

/* The same numbers, to the bit, with 1 and with 2 threads (n = 40 puts the
 * Gram products and the RKD angle loop over the parallel threshold). */
static void test_threads(void **state)
{
    (void)state;
    const int64_t ds[4] = {40, 4, 6, 6}, dt[2] = {40, 50};
    for (int k = 0; k < 3; k++) {
        fd_case c;
        case_init(&c, make_flat(k), 40, 3, 950 + (uint64_t)k, 1.0f);
        case_taps(&c, 4, ds, 2, dt, 950 + (uint64_t)k, 0);
        double v[2];
        distill_tensor *g[2];
        for (int r = 0; r < 2; r++) {
            distill_set_num_threads(r + 1);
            assert_int_equal(distill_tensor_clone(&g[r], c.sf), DISTILL_OK);
            distill_tensor_fill(g[r], 0.0f);
            distill_loss_grads gr = {DISTILL_LOSS_GRADS_VERSION, NULL, g[r]};
            assert_int_equal(distill_loss_forward(c.l, &c.b, &v[r], &gr), DISTILL_OK);
        }
        distill_set_num_threads(0);
        assert_true(v[0] == v[1]);
        assert_memory_equal(distill_tensor_data(g[0]), distill_tensor_data(g[1]),
                            (size_t)distill_tensor_numel(c.sf) * sizeof(float));
        distill_tensor_free(g[0]);
        distill_tensor_free(g[1]);
        case_free(&c);
    }
}

static int summary(void **state)
{
    (void)state;
    printf("finite differences: %zu elements; max |g - fd| = %.3e, max relative error = %.3e, "
           "worst error / tolerance = %.3f\n",
           checked, worst_abs, worst_rel, worst_ratio);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_ce),      cmocka_unit_test(test_grad_kd),
        cmocka_unit_test(test_grad_dkd),     cmocka_unit_test(test_grad_new_logit),
        cmocka_unit_test(test_grad_fitnets),
        cmocka_unit_test(test_grad_at),      cmocka_unit_test(test_grad_sp),
        cmocka_unit_test(test_grad_rkd),     cmocka_unit_test(test_grad_pkt),
        cmocka_unit_test(test_grad_large),   cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, summary);
}

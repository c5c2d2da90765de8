/*
 * check.c - compare a distill_model with the reference (see check.h).
 */
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static check_stats stats;

void check_stats_reset(void)
{
    memset(&stats, 0, sizeof stats);
}

const check_stats *check_stats_get(void)
{
    return &stats;
}

static void report(const char *label, const char *what, const char *name, const ref_cmp *c)
{
    char skipped[32] = "";
    if (c->skipped)
        snprintf(skipped, sizeof skipped, " skip=%zu", c->skipped);
    printf("  %-22s %-14s %-22s n=%-6zu fail=%-4zu%s max|d|=%-10.3g worst %.3g of tol "
           "(got %.9g want %.9g tol %.3g at %zu)%s\n",
           label, what, name, c->checked, c->failed, skipped, c->max_abs, c->max_ratio,
           c->worst_a, c->worst_b, c->worst_tol, c->worst, c->failed ? "  <-- FAIL" : "");
}

/* ------------------------------------------------------------- params */

int check_fill_params(distill_model *m, uint64_t seed)
{
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    size_t np = distill_model_param_count(m);
    for (size_t i = 0; i < np; i++) {
        distill_param_info pi = DISTILL_PARAM_INFO_INIT;
        if (distill_model_param(m, i, &pi) != DISTILL_OK) {
            printf("check_fill_params: distill_model_param(%zu): %s\n", i, distill_last_error());
            return -1;
        }
        double lo, hi;
        switch (pi.kind) {
        case DISTILL_PARAM_WEIGHT: {
            /* fan_in = numel / out: (O, C/g, kh, kw) or (out, in) */
            double fan_in = (double)pi.numel / (double)pi.dims[0];
            hi = sqrt(3.0 / fan_in);
            lo = -hi;
            break;
        }
        case DISTILL_PARAM_BN_SCALE:
            lo = 0.5, hi = 1.5;
            break;
        case DISTILL_PARAM_RUNNING_VAR:
            lo = 0.5, hi = 2.0;
            break;
        default: /* biases, BN shift, running mean */
            lo = -0.5, hi = 0.5;
            break;
        }
        for (int64_t k = 0; k < pi.numel; k++)
            pi.data[k] = (float)(lo + (hi - lo) * ref_rng_uniform(&rng));
    }
    return 0;
}

/* ------------------------------------------------------------ forward */

static distill_tensor *make_tensor(int n, const ref_model *r, int node)
{
    int64_t dims[DISTILL_MAX_RANK];
    int rank = ref_node_rank(r, node);
    const int64_t *d = ref_node_dims(r, node);
    dims[0] = n;
    for (int i = 0; i < rank; i++)
        dims[i + 1] = d[i];
    distill_tensor *t = NULL;
    if (distill_tensor_create(&t, rank + 1, dims) != DISTILL_OK) {
        printf("  distill_tensor_create: %s\n", distill_last_error());
        return NULL;
    }
    return t;
}

/* Compare the float values `got` with node `node` of the reference. */
static size_t compare_node(const ref_model *r, int node, int n, const float *got,
                           const check_tol *tol, const char *label, const char *what)
{
    const double *want = ref_node_output(r, node), *mag = ref_node_mag(r, node);
    size_t len = (size_t)n * ref_node_size(r, node);
    ref_cmp c;
    ref_cmp_init(&c);
    for (size_t k = 0; k < len; k++) {
        double t = tol->fwd_rtol * (fabs(want[k]) + mag[k]) + tol->fwd_atol;
        ref_cmp_add(&c, k, got[k], want[k], t);
    }
    report(label, what, ref_node_name(r, node), &c);
    if (c.max_ratio > stats.fwd_worst_ratio || c.max_ratio != c.max_ratio)
        stats.fwd_worst_ratio = c.max_ratio;
    if (c.max_abs > stats.fwd_max_abs)
        stats.fwd_max_abs = c.max_abs;
    stats.fwd_checked += c.checked;
    return c.failed;
}

static float *param_ptr(distill_model *m, const char *name, int grad)
{
    distill_param_info pi = DISTILL_PARAM_INFO_INIT;
    if (distill_model_find_param(m, name, &pi) != DISTILL_OK)
        return NULL;
    return grad ? pi.grad : pi.data;
}

/* After a training forward: the running statistics moved as PyTorch's do.
 * The reference still holds the statistics from before that forward. */
static int check_running_stats(distill_model *m, ref_model *r, int n, const check_tol *tol,
                               const char *label)
{
    int failures = 0;
    for (int i = 0; i < ref_node_count(r); i++) {
        if (ref_node_op(r, i) != DISTILL_OP_BATCHNORM)
            continue;
        distill_node_info info = DISTILL_NODE_INFO_INIT;
        const double *mean, *uvar;
        char name[512];
        if (distill_model_node(m, (size_t)i, &info) != DISTILL_OK ||
            ref_bn_batch_stats(r, i, &mean, NULL, &uvar) != 0) {
            printf("  %s: batchnorm '%s': cannot read node or stats\n", label, ref_node_name(r, i));
            failures++;
            continue;
        }
        double mom = info.momentum;
        /* the largest input magnitude bounds the rounding of the batch stats */
        int src = ref_node_input(r, i, 0);
        const double *in_mag = ref_node_mag(r, src);
        double maxmag = 0.0;
        for (size_t k = 0; k < (size_t)n * ref_node_size(r, src); k++)
            if (in_mag[k] > maxmag)
                maxmag = in_mag[k];
        for (int which = 0; which < 2; which++) {
            snprintf(name, sizeof name, "%s.%s", ref_node_name(r, i),
                     which ? "running_var" : "running_mean");
            ref_param *old = ref_find_param(r, name);
            const float *now = param_ptr(m, name, 0);
            if (!old || !now) {
                printf("  %s: no parameter '%s'\n", label, name);
                failures++;
                continue;
            }
            ref_cmp c;
            ref_cmp_init(&c);
            for (size_t k = 0; k < old->numel; k++) {
                double batch = which ? uvar[k] : mean[k];
                double want = (1.0 - mom) * old->data[k] + mom * batch;
                double scale = which ? maxmag * maxmag : maxmag;
                double t = tol->fwd_rtol * (fabs(want) + fabs(old->data[k]) + mom * scale) +
                           tol->fwd_atol;
                ref_cmp_add(&c, k, now[k], want, t);
            }
            report(label, "running stat", name, &c);
            failures += (int)c.failed;
        }
    }
    return failures;
}

int check_forward(distill_model *m, ref_model *r, const double *x, int n, int mode,
                  int read_nodes, const check_tol *tol_in, const char *label)
{
    static const check_tol defaults = CHECK_TOL_INIT;
    const check_tol *tol = tol_in ? tol_in : &defaults;
    const char *mname = mode == DISTILL_MODE_TRAINING ? "train" : "infer";
    int failures = 0, st;
    char what[64];

    if (ref_model_reload(r) != 0 || ref_forward(r, x, n, mode == DISTILL_MODE_TRAINING) != 0) {
        printf("  %s: reference: %s\n", label, ref_error());
        return 1;
    }
    distill_tensor *in = ref_tensor_from(x, n, ref_node_rank(r, 0), ref_node_dims(r, 0));
    int out_node = ref_output_node(r);
    distill_tensor *out = make_tensor(n, r, out_node);
    if (!in || !out) {
        distill_tensor_free(in);
        distill_tensor_free(out);
        return 1;
    }
    if (read_nodes && (st = distill_model_keep_all(m, 1)) != DISTILL_OK) {
        printf("  %s: distill_model_keep_all = %d: %s  <-- FAIL\n", label, st,
               distill_last_error());
        distill_tensor_free(in);
        distill_tensor_free(out);
        return 1;
    }
    st = distill_model_forward(m, in, mode, out);
    if (st != DISTILL_OK) {
        printf("  %s: distill_model_forward(%s) = %d (%s): %s  <-- FAIL\n", label, mname, st,
               distill_strerror(st), distill_last_error());
        distill_tensor_free(in);
        distill_tensor_free(out);
        return 1;
    }
    snprintf(what, sizeof what, "%s output", mname);
    failures += (int)compare_node(r, out_node, n, distill_tensor_data(out), tol, label, what);

    snprintf(what, sizeof what, "%s read_node", mname);
    for (int i = 0; read_nodes && i < ref_node_count(r); i++) {
        distill_tensor *t = make_tensor(n, r, i);
        if (!t)
            return failures + 1;
        st = distill_model_read_node(m, ref_node_name(r, i), t);
        if (st != DISTILL_OK) {
            printf("  %s: distill_model_read_node('%s') after %s forward = %d: %s  <-- FAIL\n",
                   label, ref_node_name(r, i), mname, st, distill_last_error());
            failures++;
        } else if (ref_node_op(r, i) != DISTILL_OP_DROPOUT || mode != DISTILL_MODE_TRAINING) {
            failures += (int)compare_node(r, i, n, distill_tensor_data(t), tol, label, what);
        }
        distill_tensor_free(t);
    }
    if (mode == DISTILL_MODE_TRAINING)
        failures += check_running_stats(m, r, n, tol, label);
    distill_tensor_free(in);
    distill_tensor_free(out);
    return failures;
}

/* ----------------------------------------------------------- backward */

typedef struct gtensor {
    const char *name;
    const float *eng;   /* engine's gradient */
    ref_param *p;       /* NULL: the input */
    size_t numel;
    size_t n_done;
    size_t *idx;        /* checked elements */
    double *fd;
    size_t skipped;
    double smax;        /* largest |fd| */
} gtensor;

/* Finite differences on a chosen subset of a tensor's elements. */
static int fd_tensor(ref_model *r, const double *x, int n, const ref_loss *loss, gtensor *g,
                     const check_tol *tol, ref_rng *rng)
{
    size_t numel = g->numel;
    size_t *order = malloc(numel * sizeof *order);
    size_t target = numel <= tol->full_limit ? numel : tol->samples;
    g->idx = malloc(target * sizeof *g->idx);
    g->fd = malloc(target * sizeof *g->fd);
    if (!order || !g->idx || !g->fd) {
        free(order);
        return -1;
    }
    for (size_t k = 0; k < numel; k++)
        order[k] = k;
    if (target < numel)
        for (size_t k = 0; k + 1 < numel; k++) {
            size_t j = k + (size_t)ref_rng_below(rng, numel - k);
            size_t t = order[k];
            order[k] = order[j];
            order[j] = t;
        }
    for (size_t k = 0; k < numel && g->n_done < target; k++) {
        int reliable;
        double d = g->p ? ref_fd_param(r, x, n, 1, loss, g->p, order[k], tol->fd_h, &reliable)
                        : ref_fd_input(r, x, n, 1, loss, order[k], tol->fd_h, &reliable);
        if (d != d) {
            free(order);
            return -1;
        }
        if (!reliable) {
            g->skipped++;
            continue;
        }
        g->idx[g->n_done] = order[k];
        g->fd[g->n_done] = d;
        g->n_done++;
        if (fabs(d) > g->smax)
            g->smax = fabs(d);
    }
    free(order);
    return 0;
}

int check_backward(distill_model *m, ref_model *r, const double *x, int n, int n_taps,
                   const char *const *taps, uint64_t seed, const check_tol *tol_in,
                   const char *label)
{
    static const check_tol defaults = CHECK_TOL_INIT;
    const check_tol *tol = tol_in ? tol_in : &defaults;
    int failures = 0, st;
    ref_rng rng;
    ref_loss loss;
    double *R[REF_MAX_TAPS] = {0};
    distill_tensor *grads[REF_MAX_TAPS] = {0};
    distill_tensor *in = NULL, *out = NULL, *dx = NULL;
    gtensor *g = NULL;
    int ng = 0;

    if (n_taps < 1 || n_taps > REF_MAX_TAPS)
        return 1;
    ref_rng_seed(&rng, seed);
    if (ref_model_reload(r) != 0 || ref_forward(r, x, n, 1) != 0) {
        printf("  %s: reference: %s\n", label, ref_error());
        return 1;
    }

    /* the library: zero_grad -> training forward -> backward */
    in = ref_tensor_from(x, n, ref_node_rank(r, 0), ref_node_dims(r, 0));
    out = make_tensor(n, r, ref_output_node(r));
    dx = make_tensor(n, r, 0);
    if (!in || !out || !dx) {
        failures = 1;
        goto done;
    }
    loss.n_taps = n_taps;
    for (int t = 0; t < n_taps; t++) {
        int node = ref_find_node(r, taps[t]);
        if (node < 0) {
            printf("  %s: no node '%s'\n", label, taps[t]);
            failures = 1;
            goto done;
        }
        size_t len = (size_t)n * ref_node_size(r, node);
        R[t] = malloc(len * sizeof(double));
        if (!R[t]) {
            failures = 1;
            goto done;
        }
        ref_fill_uniform(R[t], len, -1.0, 1.0, &rng);
        grads[t] = ref_tensor_from(R[t], n, ref_node_rank(r, node), ref_node_dims(r, node));
        if (!grads[t]) {
            failures = 1;
            goto done;
        }
        loss.node[t] = node;
        loss.R[t] = R[t];
        if (node != ref_output_node(r) && (st = distill_model_keep_node(m, taps[t])) != DISTILL_OK) {
            printf("  %s: distill_model_keep_node('%s') = %d: %s  <-- FAIL\n", label, taps[t], st,
                   distill_last_error());
            failures = 1;
            goto done;
        }
    }
    /* the input gradient is computed only for a kept input node */
    distill_node_info in_info = DISTILL_NODE_INFO_INIT;
    if ((st = distill_model_node(m, 0, &in_info)) != DISTILL_OK ||
        (st = distill_model_keep_node(m, in_info.name)) != DISTILL_OK) {
        printf("  %s: keeping the input node = %d: %s  <-- FAIL\n", label, st,
               distill_last_error());
        failures = 1;
        goto done;
    }
    if ((st = distill_model_zero_grad(m)) != DISTILL_OK ||
        (st = distill_model_forward(m, in, DISTILL_MODE_TRAINING, out)) != DISTILL_OK ||
        (st = distill_model_backward(m, n_taps, taps, (const distill_tensor *const *)grads)) !=
            DISTILL_OK ||
        (st = distill_model_input_grad(m, dx)) != DISTILL_OK) {
        printf("  %s: zero_grad/forward/backward/input_grad = %d (%s): %s  <-- FAIL\n", label, st,
               distill_strerror(st), distill_last_error());
        failures = 1;
        goto done;
    }

    /* the reference: finite differences, every trainable tensor + the input */
    g = calloc((size_t)ref_param_count(r) + 1, sizeof *g);
    if (!g) {
        failures = 1;
        goto done;
    }
    for (int i = 0; i < ref_param_count(r); i++) {
        ref_param *p = ref_param_at(r, i);
        if (!p->trainable)
            continue;
        gtensor *t = &g[ng++];
        t->name = p->name;
        t->p = p;
        t->numel = p->numel;
        t->eng = param_ptr(m, p->name, 1);
        if (!t->eng) {
            printf("  %s: no gradient for '%s'  <-- FAIL\n", label, p->name);
            failures++;
            ng--;
            continue;
        }
    }
    g[ng].name = "input";
    g[ng].p = NULL;
    g[ng].numel = (size_t)n * ref_node_size(r, 0);
    g[ng].eng = distill_tensor_data(dx);
    ng++;

    double gmax = 0.0;
    for (int i = 0; i < ng; i++) {
        if (fd_tensor(r, x, n, &loss, &g[i], tol, &rng) != 0) {
            printf("  %s: finite differences on '%s' failed: %s\n", label, g[i].name,
                   ref_error());
            failures++;
            continue;
        }
        if (g[i].smax > gmax)
            gmax = g[i].smax;
    }
    for (int i = 0; i < ng; i++) {
        ref_cmp c;
        ref_cmp_init(&c);
        for (size_t k = 0; k < g[i].n_done; k++) {
            double b = g[i].fd[k];
            double t = tol->grad_rtol * fabs(b) + tol->grad_srel * g[i].smax +
                       tol->grad_grel * gmax;
            ref_cmp_add(&c, g[i].idx[k], g[i].eng[g[i].idx[k]], b, t);
        }
        c.skipped = g[i].skipped;
        report(label, "grad", g[i].name, &c);
        failures += (int)c.failed;
        size_t tried = g[i].n_done + g[i].skipped;
        if (tried && (double)g[i].skipped > tol->max_skip * (double)tried) {
            printf("  %s: '%s': %zu of %zu finite differences crossed a kink; the check is "
                   "hollow  <-- FAIL\n",
                   label, g[i].name, g[i].skipped, tried);
            failures++;
        }
        if (c.max_ratio > stats.grad_worst_ratio || c.max_ratio != c.max_ratio)
            stats.grad_worst_ratio = c.max_ratio;
        if (c.max_abs > stats.grad_max_abs)
            stats.grad_max_abs = c.max_abs;
        stats.grad_checked += c.checked;
        stats.grad_skipped += g[i].skipped;
    }

done:
    if (g)
        for (int i = 0; i < ng; i++) {
            free(g[i].idx);
            free(g[i].fd);
        }
    free(g);
    for (int t = 0; t < REF_MAX_TAPS; t++) {
        free(R[t]);
        distill_tensor_free(grads[t]);
    }
    distill_tensor_free(in);
    distill_tensor_free(out);
    distill_tensor_free(dx);
    return failures;
}

int check_model(distill_model *m, const double *x, int n, uint64_t seed, const char *label)
{
    ref_model *r = NULL;
    if (ref_model_create(&r, m, NULL) != 0) {
        printf("  %s: %s  <-- FAIL\n", label, ref_error());
        return 1;
    }
    int failures = 0;
    /* as a host runs it: only the output kept, buffers reused */
    failures += check_forward(m, r, x, n, DISTILL_MODE_INFERENCE, 0, NULL, label);
    failures += check_forward(m, r, x, n, DISTILL_MODE_TRAINING, 0, NULL, label);
    const char *out = ref_node_name(r, ref_output_node(r));
    failures += check_backward(m, r, x, n, 1, &out, seed ^ 0x5eedull, NULL, label);
    /* every node kept and read back */
    failures += check_forward(m, r, x, n, DISTILL_MODE_INFERENCE, 1, NULL, label);
    failures += check_forward(m, r, x, n, DISTILL_MODE_TRAINING, 1, NULL, label);
    ref_model_free(r);
    return failures;
}

/*
 * test_optim.c - SGD, Adam and AdamW (include/distill/optim.h) against an
 * independent double-precision implementation of torch.optim's update rules.
 *
 * The model is tiny and never runs: input (3) -> fc1 linear 2 (bias) -> bn
 * batchnorm -> relu -> fc2 linear 2 (bias), 18 trainable scalars in six
 * tensors of four kinds.  The tests write parameters and gradients through
 * distill_param_info.data / .grad, take three steps with gradients that
 * change every step, and hold the library to the reference after each one.
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
#include "train/optim_internal.h"
#include "util/util.h"

#define MAXT 8   /* tensors */
#define MAXE 8   /* elements per tensor */
#define STEPS 3

/* ------------------------------------------------------------ fixture */

typedef struct fixture {
    distill_model *m;
    int n;                      /* trainable tensors */
    distill_param_info info[MAXT];
    /* the reference, in double */
    double p[MAXT][MAXE];
    double buf[MAXT][MAXE];     /* SGD momentum / Adam first moment */
    double v[MAXT][MAXE];       /* Adam second moment */
    double g[MAXT][MAXE];       /* this step's gradient */
    int updates[MAXT];
} fixture;

static distill_model *tiny_model(void)
{
    distill_model *m;
    int64_t in[1] = {3};
    assert_int_equal(distill_model_create(&m, "input", 1, in), DISTILL_OK);
    assert_int_equal(distill_model_add_linear(m, "fc1", "input", 2, 1), DISTILL_OK);
    assert_int_equal(distill_model_add_batchnorm(m, "bn", "fc1", 1e-5f, 0.1f), DISTILL_OK);
    assert_int_equal(distill_model_add_relu(m, "relu", "bn"), DISTILL_OK);
    assert_int_equal(distill_model_add_linear(m, "fc2", "relu", 2, 1), DISTILL_OK);
    return m;
}

/* Refresh the borrowed pointers (they change when the model grows). */
static void read_infos(fixture *f)
{
    f->n = 0;
    for (size_t i = 0; i < distill_model_param_count(f->m); i++) {
        distill_param_info info = DISTILL_PARAM_INFO_INIT;
        assert_int_equal(distill_model_param(f->m, i, &info), DISTILL_OK);
        if (!info.trainable)
            continue;
        assert_true(f->n < MAXT && info.numel <= MAXE);
        f->info[f->n++] = info;
    }
}

static void fixture_init(fixture *f)
{
    memset(f, 0, sizeof *f);
    f->m = tiny_model();
    read_infos(f);
    assert_int_equal(f->n, 6);
    for (int t = 0; t < f->n; t++)
        for (int j = 0; j < f->info[t].numel; j++) {
            float x = (float)(0.5 * sin(1.0 + 0.7 * t + 1.3 * j));
            f->info[t].data[j] = x;
            f->p[t][j] = x;
        }
}

/* Gradients of step s: float values, also kept (exactly) in double. */
static void set_grads(fixture *f, int s)
{
    for (int t = 0; t < f->n; t++)
        for (int j = 0; j < f->info[t].numel; j++) {
            float x = (float)(0.3 * cos(0.4 + 1.1 * t + 0.9 * j + 2.3 * s) + 0.05 * (j % 3 - 1));
            f->info[t].grad[j] = x;
            f->g[t][j] = x;
        }
}

static void fixture_free(fixture *f)
{
    distill_model_free(f->m);
}

/* Every parameter within tol (absolute + relative) of the reference. */
static void expect_params(const fixture *f, double tol)
{
    for (int t = 0; t < f->n; t++)
        for (int j = 0; j < f->info[t].numel; j++) {
            double got = f->info[t].data[j], want = f->p[t][j];
            if (fabs(got - want) > tol * (1.0 + fabs(want)))
                fail_msg("%s[%d]: got %.9g, want %.9g (diff %.3g)", f->info[t].name, j, got,
                         want, got - want);
        }
}

static int is_no_decay(const distill_param_info *info)
{
    return info->kind == DISTILL_PARAM_BIAS || info->kind == DISTILL_PARAM_BN_SCALE ||
           info->kind == DISTILL_PARAM_BN_SHIFT;
}

/* ---------------------------------------------------------- reference */

typedef struct hp {
    int kind;
    double lr, momentum, dampening, wd, beta1, beta2, eps;
    int nesterov;
    double lr_mult[MAXT], wd_mult[MAXT]; /* per tensor; lr_mult 0 = frozen */
    double clip;                         /* max norm, 0 = off */
} hp;

static void hp_from(hp *h, const distill_optimizer_options *o)
{
    memset(h, 0, sizeof *h);
    h->kind = o->kind;
    h->lr = o->lr;
    h->momentum = o->momentum;
    h->dampening = o->dampening;
    h->wd = o->weight_decay;
    h->beta1 = o->beta1;
    h->beta2 = o->beta2;
    h->eps = o->eps;
    h->nesterov = o->nesterov;
    h->clip = o->max_grad_norm;
    for (int t = 0; t < MAXT; t++)
        h->lr_mult[t] = h->wd_mult[t] = 1.0;
}

/* One step of torch.optim.{SGD, Adam, AdamW} plus clip_grad_norm_, in
 * double; returns the pre-clip norm. */
static double ref_step(fixture *f, const hp *h)
{
    double ss = 0.0;
    for (int t = 0; t < f->n; t++)
        if (h->lr_mult[t] != 0.0)
            for (int j = 0; j < f->info[t].numel; j++)
                ss += f->g[t][j] * f->g[t][j];
    double norm = sqrt(ss), scale = 1.0;
    if (h->clip > 0.0 && h->clip / (norm + 1e-6) < 1.0)
        scale = h->clip / (norm + 1e-6);
    for (int t = 0; t < f->n; t++) {
        if (h->lr_mult[t] == 0.0)
            continue;
        double lr = h->lr * h->lr_mult[t], wd = h->wd * h->wd_mult[t];
        int step = ++f->updates[t];
        for (int j = 0; j < f->info[t].numel; j++) {
            double g = f->g[t][j] * scale, *p = &f->p[t][j];
            if (h->kind == DISTILL_OPTIM_SGD) {
                g += wd * *p;
                if (h->momentum != 0.0) {
                    double *b = &f->buf[t][j];
                    *b = step == 1 ? g : h->momentum * *b + (1.0 - h->dampening) * g;
                    g = h->nesterov ? g + h->momentum * *b : *b;
                }
                *p -= lr * g;
            } else {
                if (h->kind == DISTILL_OPTIM_ADAM)
                    g += wd * *p;
                else
                    *p *= 1.0 - lr * wd;
                double *m = &f->buf[t][j], *v = &f->v[t][j];
                *m = h->beta1 * *m + (1.0 - h->beta1) * g;
                *v = h->beta2 * *v + (1.0 - h->beta2) * g * g;
                double mhat = *m / (1.0 - pow(h->beta1, step));
                double vhat = *v / (1.0 - pow(h->beta2, step));
                *p -= lr * mhat / (sqrt(vhat) + h->eps);
            }
        }
    }
    return norm;
}

/* Create an optimizer with `o`, run STEPS steps against the reference. */
static void run_against_ref(const distill_optimizer_options *o, double tol)
{
    fixture f;
    fixture_init(&f);
    distill_optimizer *opt;
    assert_int_equal(distill_optimizer_create(&opt, f.m, o), DISTILL_OK);
    hp h;
    hp_from(&h, o);
    for (int t = 0; t < f.n; t++)
        if (o->no_decay_bn_bias && is_no_decay(&f.info[t]))
            h.wd_mult[t] = 0.0;
    for (int s = 0; s < STEPS; s++) {
        set_grads(&f, s);
        assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
        double norm = ref_step(&f, &h);
        expect_params(&f, tol);
        if (o->max_grad_norm > 0.0 || o->check_finite)
            assert_true(fabs(distill_optimizer_grad_norm(opt) - norm) <= 1e-6 * norm);
    }
    assert_int_equal(distill_optimizer_step_count(opt), STEPS);
    distill_optimizer_free(opt);
    fixture_free(&f);
}

static distill_optimizer_options sgd_opts(double lr, double momentum, double wd)
{
    distill_optimizer_options o;
    assert_int_equal(distill_optimizer_options_init(&o, DISTILL_OPTIMIZER_OPTIONS_VERSION),
                     DISTILL_OK);
    o.kind = DISTILL_OPTIM_SGD;
    o.lr = lr;
    o.momentum = momentum;
    o.weight_decay = wd;
    return o;
}

static distill_optimizer_options adam_opts(int kind, double lr, double wd)
{
    distill_optimizer_options o;
    assert_int_equal(distill_optimizer_options_init(&o, DISTILL_OPTIMIZER_OPTIONS_VERSION),
                     DISTILL_OK);
    o.kind = kind;
    o.lr = lr;
    o.weight_decay = wd;
    return o;
}

/* -------------------------------------------------------------- tests */

static void test_sgd_plain(void **state)
{
    (void)state;
    distill_optimizer_options o = sgd_opts(0.1, 0.0, 0.0);
    run_against_ref(&o, 1e-6);
}

/* A hand-computed value for the first parameter, to hold the reference
 * itself to torch's formula: p1 = p0 - lr * g0, p2 = p1 - lr * (m g0 + g1). */
static void test_sgd_momentum_by_hand(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f);
    distill_optimizer_options o = sgd_opts(0.5, 0.9, 0.0);
    distill_optimizer *opt;
    assert_int_equal(distill_optimizer_create(&opt, f.m, &o), DISTILL_OK);
    float *p = f.info[0].data, *g = f.info[0].grad;
    p[0] = 1.0f;
    g[0] = 0.25f;
    assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
    assert_float_equal(p[0], 1.0 - 0.5 * 0.25, 1e-7); /* buf = g on the first step */
    g[0] = -0.5f;
    assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
    /* buf = 0.9 * 0.25 - 0.5 = -0.275; p = 0.875 + 0.5 * 0.275 = 1.0125 */
    assert_float_equal(p[0], 1.0125, 1e-6);
    distill_optimizer_free(opt);
    fixture_free(&f);
}

static void test_sgd_momentum(void **state)
{
    (void)state;
    distill_optimizer_options o = sgd_opts(0.1, 0.9, 0.0);
    run_against_ref(&o, 1e-6);
}

static void test_sgd_nesterov_weight_decay(void **state)
{
    (void)state;
    /* The benchmark recipe with a larger decay, so that decay moves the
     * parameters far beyond the tolerance. */
    distill_optimizer_options o = sgd_opts(0.1, 0.9, 0.05);
    o.nesterov = 1;
    run_against_ref(&o, 1e-6);
}

static void test_sgd_dampening(void **state)
{
    (void)state;
    distill_optimizer_options o = sgd_opts(0.1, 0.8, 0.01);
    o.dampening = 0.5;
    run_against_ref(&o, 1e-6);
}

static void test_sgd_no_decay_bn_bias(void **state)
{
    (void)state;
    distill_optimizer_options o = sgd_opts(0.1, 0.9, 0.2);
    o.no_decay_bn_bias = 1;
    run_against_ref(&o, 1e-6);

    fixture f;
    fixture_init(&f);
    distill_optimizer *opt;
    assert_int_equal(distill_optimizer_create(&opt, f.m, &o), DISTILL_OK);
    double lr, wd;
    assert_int_equal(distill_optimizer_param_hparams(opt, "fc1.weight", &lr, &wd), DISTILL_OK);
    assert_true(lr == 0.1 && wd == 0.2);
    const char *no_decay[] = {"fc1.bias", "bn.weight", "bn.bias", "fc2.bias"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(distill_optimizer_param_hparams(opt, no_decay[i], &lr, &wd),
                         DISTILL_OK);
        assert_true(lr == 0.1 && wd == 0.0);
    }
    assert_int_equal(distill_optimizer_param_hparams(opt, "bn.running_mean", &lr, &wd),
                     DISTILL_ENOTFOUND);
    distill_optimizer_free(opt);
    fixture_free(&f);
}

static void test_groups(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f);
    distill_optimizer_options o = sgd_opts(0.1, 0.9, 0.05);
    o.no_decay_bn_bias = 1;
    distill_optimizer *opt;
    assert_int_equal(distill_optimizer_create(&opt, f.m, &o), DISTILL_OK);
    /* the longest prefix wins, whatever the order */
    assert_int_equal(distill_optimizer_set_group(opt, "fc2.", 0.5, 0.0), DISTILL_OK);
    assert_int_equal(distill_optimizer_set_group(opt, "fc", 2.0, 3.0), DISTILL_OK);
    assert_int_equal(distill_optimizer_set_group(opt, "bn.", 0.0, 1.0), DISTILL_OK); /* frozen */
    assert_int_equal(distill_optimizer_set_group(opt, "nope", 1.0, 1.0), DISTILL_ENOTFOUND);
    assert_int_equal(distill_optimizer_set_group(opt, "fc", -1.0, 1.0), DISTILL_EINVAL);
    /* replacing a prefix's multipliers */
    assert_int_equal(distill_optimizer_set_group(opt, "fc", 1.5, 2.0), DISTILL_OK);

    hp h;
    hp_from(&h, &o);
    for (int t = 0; t < f.n; t++) {
        const char *name = f.info[t].name;
        if (!strncmp(name, "fc2.", 4))
            h.lr_mult[t] = 0.5, h.wd_mult[t] = 0.0;
        else if (!strncmp(name, "fc", 2))
            h.lr_mult[t] = 1.5, h.wd_mult[t] = 2.0;
        else if (!strncmp(name, "bn.", 3))
            h.lr_mult[t] = 0.0;
        if (is_no_decay(&f.info[t]))
            h.wd_mult[t] = 0.0;
        double lr, wd;
        assert_int_equal(distill_optimizer_param_hparams(opt, name, &lr, &wd), DISTILL_OK);
        assert_true(fabs(lr - 0.1 * h.lr_mult[t]) < 1e-15);
        assert_true(fabs(wd - 0.05 * h.wd_mult[t]) < 1e-15);
    }
    float bn_before[MAXE];
    int bn = 2;
    assert_string_equal(f.info[bn].name, "bn.weight");
    for (int s = 0; s < STEPS; s++) {
        set_grads(&f, s);
        memcpy(bn_before, f.info[bn].data, sizeof(float) * (size_t)f.info[bn].numel);
        assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
        ref_step(&f, &h);
        expect_params(&f, 1e-6);
        /* frozen: bit-identical */
        assert_memory_equal(bn_before, f.info[bn].data, sizeof(float) * (size_t)f.info[bn].numel);
    }
    /* A frozen tensor's NaN gradient does not stop the step. */
    f.info[bn].grad[0] = NAN;
    assert_int_equal(distill_optimizer_check_finite(opt), DISTILL_OK);
    assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);

    /* Back to the defaults. */
    assert_int_equal(distill_optimizer_clear_groups(opt), DISTILL_OK);
    double lr;
    assert_int_equal(distill_optimizer_param_hparams(opt, "fc2.weight", &lr, NULL), DISTILL_OK);
    assert_true(lr == 0.1);
    distill_optimizer_free(opt);
    fixture_free(&f);
}

static void test_frozen_then_unfrozen(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f);
    distill_optimizer_options o = adam_opts(DISTILL_OPTIM_ADAMW, 0.01, 0.1);
    distill_optimizer *opt;
    assert_int_equal(distill_optimizer_create(&opt, f.m, &o), DISTILL_OK);
    hp h;
    hp_from(&h, &o);
    assert_int_equal(distill_optimizer_set_group(opt, "fc1.", 0.0, 1.0), DISTILL_OK);
    h.lr_mult[0] = h.lr_mult[1] = 0.0;
    set_grads(&f, 0);
    assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
    ref_step(&f, &h);
    expect_params(&f, 1e-6);
    /* fc1 now takes its first step (bias correction at t = 1) while the
     * others take their second. */
    assert_int_equal(distill_optimizer_clear_groups(opt), DISTILL_OK);
    h.lr_mult[0] = h.lr_mult[1] = 1.0;
    for (int s = 1; s < STEPS; s++) {
        set_grads(&f, s);
        assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
        ref_step(&f, &h);
        expect_params(&f, 1e-6);
    }
    distill_optimizer_free(opt);
    fixture_free(&f);
}

static void test_adamw(void **state)
{
    (void)state;
    distill_optimizer_options o = adam_opts(DISTILL_OPTIM_ADAMW, 0.01, 0.1);
    run_against_ref(&o, 2e-6);
    o.beta1 = 0.5;
    o.beta2 = 0.9;
    o.eps = 1e-3;
    o.no_decay_bn_bias = 1;
    run_against_ref(&o, 2e-6);
}

/* First AdamW step by hand: m = 0.1 g, v = 0.001 g^2, mhat = g,
 * vhat = g^2, so p1 = p0 (1 - lr wd) - lr g / (|g| + eps). */
static void test_adamw_first_step_by_hand(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f);
    distill_optimizer_options o = adam_opts(DISTILL_OPTIM_ADAMW, 0.01, 0.1);
    distill_optimizer *opt;
    assert_int_equal(distill_optimizer_create(&opt, f.m, &o), DISTILL_OK);
    float *p = f.info[0].data, *g = f.info[0].grad;
    p[0] = 2.0f;
    g[0] = -0.5f;
    assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
    assert_float_equal(p[0], 2.0 * (1.0 - 0.001) + 0.01 * 0.5 / (0.5 + 1e-8), 1e-6);
    distill_optimizer_free(opt);
    fixture_free(&f);
}

static void test_adam_l2(void **state)
{
    (void)state;
    distill_optimizer_options o = adam_opts(DISTILL_OPTIM_ADAM, 0.01, 0.1);
    run_against_ref(&o, 2e-6);
}

static void test_clip(void **state)
{
    (void)state;
    /* The gradients' norm is about 0.8: 0.3 clips every step, 10 never. */
    distill_optimizer_options o = sgd_opts(0.1, 0.9, 0.01);
    o.max_grad_norm = 0.3;
    run_against_ref(&o, 1e-6);
    o.max_grad_norm = 10.0;
    run_against_ref(&o, 1e-6);
    o = adam_opts(DISTILL_OPTIM_ADAMW, 0.01, 0.1);
    o.max_grad_norm = 0.3;
    run_against_ref(&o, 2e-6);

    /* The gradient block itself is left as it was, and the reported norm is
     * the one before clipping. */
    fixture f;
    fixture_init(&f);
    o = sgd_opts(0.1, 0.0, 0.0);
    o.max_grad_norm = 0.3;
    o.check_finite = 0;
    distill_optimizer *opt;
    assert_int_equal(distill_optimizer_create(&opt, f.m, &o), DISTILL_OK);
    assert_true(distill_optimizer_grad_norm(opt) == -1.0);
    set_grads(&f, 0);
    size_t n;
    float *gb = distill_model_grad_block(f.m, &n), before[64];
    assert_true(n == 18);
    memcpy(before, gb, n * sizeof(float));
    assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
    assert_memory_equal(before, gb, n * sizeof(float));
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (double)before[i] * before[i];
    assert_true(sqrt(ss) > 0.5);
    assert_true(fabs(distill_optimizer_grad_norm(opt) - sqrt(ss)) < 1e-9);
    distill_optimizer_free(opt);
    fixture_free(&f);
}

static void test_nonfinite(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f);
    distill_optimizer_options o = sgd_opts(0.1, 0.9, 0.01);
    distill_optimizer *opt;
    assert_int_equal(distill_optimizer_create(&opt, f.m, &o), DISTILL_OK);
    set_grads(&f, 0);
    assert_int_equal(distill_optimizer_check_finite(opt), DISTILL_OK);
    assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);

    size_t n;
    float *pb = distill_model_param_block(f.m, &n), params[64], st[64];
    size_t sn;
    float *sb = optim_state_block(opt, &sn);
    assert_true(sn == n && n == 18);
    memcpy(params, pb, n * sizeof(float));
    memcpy(st, sb, sn * sizeof(float));

    set_grads(&f, 1);
    f.info[3].grad[1] = INFINITY;
    assert_int_equal(distill_optimizer_check_finite(opt), DISTILL_ENONFINITE);
    assert_non_null(strstr(distill_last_error(), f.info[3].name));
    assert_int_equal(distill_optimizer_step(opt), DISTILL_ENONFINITE);
    assert_non_null(strstr(distill_last_error(), f.info[3].name));
    f.info[3].grad[1] = NAN;
    assert_int_equal(distill_optimizer_step(opt), DISTILL_ENONFINITE);
    assert_memory_equal(params, pb, n * sizeof(float));
    assert_memory_equal(st, sb, sn * sizeof(float));
    assert_int_equal(distill_optimizer_step_count(opt), 1);
    assert_false(isfinite(distill_optimizer_grad_norm(opt)));
    distill_optimizer_free(opt);

    /* With the check off the step goes through (and poisons the tensor). */
    o.check_finite = 0;
    assert_int_equal(distill_optimizer_create(&opt, f.m, &o), DISTILL_OK);
    assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
    assert_true(isnan(f.info[3].data[1]));
    assert_true(isfinite(f.info[0].data[0]));
    distill_optimizer_free(opt);
    fixture_free(&f);
}

static void test_options(void **state)
{
    (void)state;
    distill_optimizer_options o;
    assert_int_equal(distill_optimizer_options_init(&o, 0), DISTILL_EVERSION);
    assert_int_equal(distill_optimizer_options_init(&o, DISTILL_OPTIMIZER_OPTIONS_VERSION + 8), DISTILL_EVERSION);
    assert_int_equal(distill_optimizer_options_init(NULL, 1), DISTILL_EINVAL);
    assert_int_equal(distill_optimizer_options_init(&o, DISTILL_OPTIMIZER_OPTIONS_VERSION),
                     DISTILL_OK);
    assert_int_equal(o.kind, DISTILL_OPTIM_SGD);
    assert_true(o.beta1 == 0.9 && o.beta2 == 0.999 && o.eps == 1e-8 && o.check_finite == 1);

    distill_model *m = tiny_model();
    distill_optimizer *opt = (distill_optimizer *)1;
    assert_int_equal(distill_optimizer_create(&opt, NULL, NULL), DISTILL_EINVAL);
    assert_null(opt);
    assert_int_equal(distill_optimizer_create(NULL, m, NULL), DISTILL_EINVAL);
    struct {
        double *field;
        double bad;
    } cases[] = {{&o.lr, -1.0},       {&o.lr, NAN},          {&o.momentum, 1.0},
                 {&o.momentum, -0.1}, {&o.dampening, 1.5},   {&o.weight_decay, -1e-4},
                 {&o.beta1, 1.0},     {&o.beta2, -0.5},      {&o.eps, 0.0},
                 {&o.max_grad_norm, -1.0}, {&o.max_grad_norm, INFINITY}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        distill_optimizer_options_init(&o, DISTILL_OPTIMIZER_OPTIONS_VERSION);
        *cases[i].field = cases[i].bad;
        assert_int_equal(distill_optimizer_create(&opt, m, &o), DISTILL_EINVAL);
    }
    distill_optimizer_options_init(&o, DISTILL_OPTIMIZER_OPTIONS_VERSION);
    o.kind = 7;
    assert_int_equal(distill_optimizer_create(&opt, m, &o), DISTILL_EINVAL);
    o.kind = DISTILL_OPTIM_SGD;
    o.nesterov = 1; /* without momentum */
    assert_int_equal(distill_optimizer_create(&opt, m, &o), DISTILL_EINVAL);
    o.momentum = 0.9;
    o.dampening = 0.1; /* Nesterov needs dampening 0 */
    assert_int_equal(distill_optimizer_create(&opt, m, &o), DISTILL_EINVAL);
    o.version = DISTILL_OPTIMIZER_OPTIONS_VERSION + 8;
    assert_int_equal(distill_optimizer_create(&opt, m, &o), DISTILL_EVERSION);

    /* NULL options: the defaults */
    assert_int_equal(distill_optimizer_create(&opt, m, NULL), DISTILL_OK);
    assert_true(distill_optimizer_model(opt) == m);
    assert_true(distill_optimizer_lr(opt) == 0.01);
    assert_int_equal(distill_optimizer_set_lr(opt, 0.5), DISTILL_OK);
    assert_true(distill_optimizer_lr(opt) == 0.5);
    assert_int_equal(distill_optimizer_set_lr(opt, -0.5), DISTILL_EINVAL);
    assert_int_equal(distill_optimizer_set_lr(opt, INFINITY), DISTILL_EINVAL);
    /* SGD created without momentum has no buffer to cycle */
    assert_int_equal(distill_optimizer_set_momentum(opt, 0.9), DISTILL_ESTATE);
    assert_int_equal(distill_optimizer_set_momentum(opt, 0.0), DISTILL_OK);
    size_t sn;
    assert_null(optim_state_block(opt, &sn));
    assert_true(sn == 0);
    distill_optimizer_free(opt);

    o = sgd_opts(0.1, 0.9, 0.0);
    o.nesterov = 1;
    assert_int_equal(distill_optimizer_create(&opt, m, &o), DISTILL_OK);
    assert_int_equal(distill_optimizer_set_momentum(opt, 0.0), DISTILL_EINVAL);
    assert_int_equal(distill_optimizer_set_momentum(opt, 0.85), DISTILL_OK);
    assert_int_equal(distill_optimizer_set_momentum(opt, 1.0), DISTILL_EINVAL);
    distill_optimizer_free(opt);
    distill_optimizer_free(NULL);
    assert_int_equal(distill_optimizer_step(NULL), DISTILL_EINVAL);
    distill_model_free(m);
}

/* The optimizer refuses to run on a model that grew after it was made. */
static void test_model_changed(void **state)
{
    (void)state;
    distill_model *m = tiny_model();
    distill_optimizer *opt;
    assert_int_equal(distill_optimizer_create(&opt, m, NULL), DISTILL_OK);
    assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
    assert_int_equal(distill_model_add_linear(m, "fc3", "fc2", 4, 1), DISTILL_OK);
    assert_int_equal(distill_optimizer_step(opt), DISTILL_ESTATE);
    assert_int_equal(distill_optimizer_check_finite(opt), DISTILL_ESTATE);
    distill_optimizer_free(opt);
    distill_model_free(m);
}

/* Momentum cycling as a one-cycle schedule drives it: Adam's beta1 changes
 * the moment update and the bias correction. */
static void test_set_momentum_adam(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f);
    distill_optimizer_options o = adam_opts(DISTILL_OPTIM_ADAMW, 0.01, 0.0);
    distill_optimizer *opt;
    assert_int_equal(distill_optimizer_create(&opt, f.m, &o), DISTILL_OK);
    hp h;
    hp_from(&h, &o);
    for (int s = 0; s < STEPS; s++) {
        double b1 = 0.95 - 0.05 * s;
        assert_int_equal(distill_optimizer_set_momentum(opt, b1), DISTILL_OK);
        h.beta1 = b1;
        set_grads(&f, s);
        assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
        ref_step(&f, &h);
        expect_params(&f, 2e-6);
    }
    distill_optimizer_free(opt);
    fixture_free(&f);
}

static void test_state_roundtrip(void **state)
{
    (void)state;
    const int kinds[3] = {DISTILL_OPTIM_SGD, DISTILL_OPTIM_ADAMW, DISTILL_OPTIM_ADAM};
    for (int k = 0; k < 3; k++) {
        fixture f;
        fixture_init(&f);
        distill_optimizer_options o = k == 0 ? sgd_opts(0.1, 0.9, 0.01)
                                             : adam_opts(kinds[k], 0.01, 0.1);
        distill_optimizer *a, *b;
        assert_int_equal(distill_optimizer_create(&a, f.m, &o), DISTILL_OK);
        assert_int_equal(distill_optimizer_set_group(a, "fc2.", 0.0, 1.0), DISTILL_OK);
        set_grads(&f, 0);
        assert_int_equal(distill_optimizer_step(a), DISTILL_OK);
        assert_int_equal(distill_optimizer_clear_groups(a), DISTILL_OK);
        set_grads(&f, 1);
        assert_int_equal(distill_optimizer_step(a), DISTILL_OK);
        assert_int_equal(distill_optimizer_set_lr(a, 0.02), DISTILL_OK);

        size_t size;
        assert_int_equal(distill_optimizer_state_size(a, &size), DISTILL_OK);
        unsigned char *buf = malloc(size), *bad = malloc(size);
        assert_non_null(buf);
        assert_non_null(bad);
        assert_int_equal(distill_optimizer_save_state(a, buf, size - 1), DISTILL_EINVAL);
        assert_int_equal(distill_optimizer_save_state(a, buf, size), DISTILL_OK);
        void *ser;
        size_t ser_size;
        assert_int_equal(optim_serialize(a, &ser, &ser_size), DISTILL_OK);
        assert_true(ser_size == size);
        assert_memory_equal(ser, buf, size);
        xfree(ser);

        /* A second model with the same parameters and a fresh optimizer. */
        distill_model *m2 = tiny_model();
        size_t np;
        float *p1 = distill_model_param_block(f.m, &np);
        memcpy(distill_model_param_block(m2, NULL), p1, np * sizeof(float));
        assert_int_equal(distill_optimizer_create(&b, m2, &o), DISTILL_OK);
        /* corrupted, truncated, wrong kind: refused, b untouched */
        memcpy(bad, buf, size);
        bad[size / 2] ^= 0x40;
        assert_int_equal(distill_optimizer_load_state(b, bad, size), DISTILL_EFORMAT);
        assert_int_equal(distill_optimizer_load_state(b, buf, size - 1), DISTILL_EFORMAT);
        assert_int_equal(distill_optimizer_load_state(b, buf, 10), DISTILL_EFORMAT);
        assert_int_equal(distill_optimizer_step_count(b), 0);
        assert_int_equal(distill_optimizer_load_state(b, buf, size), DISTILL_OK);
        assert_int_equal(distill_optimizer_step_count(b), 2);
        assert_true(distill_optimizer_lr(b) == 0.02);

        /* Both take the same third step: bit-identical parameters. */
        size_t n;
        float *g1 = distill_model_grad_block(f.m, &n), *g2 = distill_model_grad_block(m2, NULL);
        set_grads(&f, 2);
        memcpy(g2, g1, n * sizeof(float));
        assert_int_equal(distill_optimizer_step(a), DISTILL_OK);
        assert_int_equal(distill_optimizer_step(b), DISTILL_OK);
        assert_memory_equal(distill_model_param_block(f.m, NULL),
                            distill_model_param_block(m2, NULL), n * sizeof(float));

        /* Another kind of optimizer refuses the state. */
        distill_optimizer *c;
        distill_optimizer_options oc = adam_opts(k == 1 ? DISTILL_OPTIM_ADAM : DISTILL_OPTIM_ADAMW,
                                                 0.01, 0.0);
        assert_int_equal(distill_optimizer_create(&c, m2, &oc), DISTILL_OK);
        assert_int_equal(distill_optimizer_load_state(c, buf, size), DISTILL_EFORMAT);
        distill_optimizer_free(c);

        distill_optimizer_free(a);
        distill_optimizer_free(b);
        distill_model_free(m2);
        free(buf);
        free(bad);
        fixture_free(&f);
    }
}

/* A block large enough for the parallel loops: 1 and 2 threads give the
 * same bits. */
static void test_threads_bit_identical(void **state)
{
    (void)state;
    float *result[2] = {NULL, NULL};
    size_t n = 0;
    for (int r = 0; r < 2; r++) {
        distill_set_num_threads(r + 1);
        distill_model *m;
        int64_t in[1] = {300};
        assert_int_equal(distill_model_create(&m, "input", 1, in), DISTILL_OK);
        assert_int_equal(distill_model_add_linear(m, "fc", "input", 400, 1), DISTILL_OK);
        assert_int_equal(distill_model_init_weights(m, DISTILL_INIT_DEFAULT, 7), DISTILL_OK);
        for (int k = 0; k < 2; k++) {
            distill_optimizer_options o = k ? adam_opts(DISTILL_OPTIM_ADAMW, 1e-3, 0.05)
                                            : sgd_opts(0.1, 0.9, 5e-4);
            o.nesterov = !k;
            o.max_grad_norm = 1.0;
            distill_optimizer *opt;
            assert_int_equal(distill_optimizer_create(&opt, m, &o), DISTILL_OK);
            float *g = distill_model_grad_block(m, &n);
            assert_true(n > 100000);
            for (int s = 0; s < 3; s++) {
                for (size_t i = 0; i < n; i++)
                    g[i] = (float)(0.01 * sin(0.37 * (double)i + s));
                assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
            }
            distill_optimizer_free(opt);
        }
        result[r] = malloc(n * sizeof(float));
        assert_non_null(result[r]);
        memcpy(result[r], distill_model_param_block(m, NULL), n * sizeof(float));
        distill_model_free(m);
    }
    distill_set_num_threads(0);
    assert_memory_equal(result[0], result[1], n * sizeof(float));
    free(result[0]);
    free(result[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_plain),
        cmocka_unit_test(test_sgd_momentum_by_hand),
        cmocka_unit_test(test_sgd_momentum),
        cmocka_unit_test(test_sgd_nesterov_weight_decay),
        cmocka_unit_test(test_sgd_dampening),
        cmocka_unit_test(test_sgd_no_decay_bn_bias),
        cmocka_unit_test(test_groups),
        cmocka_unit_test(test_frozen_then_unfrozen),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_adamw_first_step_by_hand),
        cmocka_unit_test(test_adam_l2),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_model_changed),
        cmocka_unit_test(test_set_momentum_adam),
        cmocka_unit_test(test_state_roundtrip),
        cmocka_unit_test(test_threads_bit_identical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_schedule.c - learning-rate schedules (include/distill/optim.h)
 * against closed forms, values worked out by hand, and straight ports of
 * PyTorch's scheduler code (CosineAnnealingLR's recursive update,
 * OneCycleLR's phase walk) stepped the way PyTorch steps them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "distill.h"

#define PI 3.14159265358979323846

static distill_schedule_options sched(int kind, double base)
{
    distill_schedule_options s;
    assert_int_equal(distill_schedule_options_init(&s, DISTILL_SCHEDULE_OPTIONS_VERSION),
                     DISTILL_OK);
    s.kind = kind;
    s.base_lr = base;
    return s;
}

static double lr_at(const distill_schedule_options *s, int64_t step)
{
    double lr = -1.0;
    assert_int_equal(distill_schedule_lr(s, step, &lr), DISTILL_OK);
    return lr;
}

static double mom_at(const distill_schedule_options *s, int64_t step)
{
    double m = -2.0;
    assert_int_equal(distill_schedule_momentum(s, step, &m), DISTILL_OK);
    return m;
}

static void expect_close(double got, double want, double rtol)
{
    if (fabs(got - want) > rtol * fabs(want) + 1e-15)
        fail_msg("got %.17g, want %.17g", got, want);
}

static void test_defaults(void **state)
{
    (void)state;
    distill_schedule_options s;
    assert_int_equal(distill_schedule_options_init(&s, DISTILL_SCHEDULE_OPTIONS_VERSION),
                     DISTILL_OK);
    assert_int_equal(s.kind, DISTILL_SCHEDULE_CONSTANT);
    assert_true(s.base_lr == 0.1 && s.gamma == 0.1 && s.pct_start == 0.3 &&
                s.div_factor == 25.0 && s.final_div_factor == 1e4 && s.cycle_momentum == 1 &&
                s.base_momentum == 0.85 && s.max_momentum == 0.95);
    assert_int_equal(distill_schedule_options_init(&s, 0), DISTILL_EVERSION);
    assert_int_equal(distill_schedule_options_init(NULL, 1), DISTILL_EINVAL);
}

static void test_constant(void **state)
{
    (void)state;
    distill_schedule_options s = sched(DISTILL_SCHEDULE_CONSTANT, 0.1);
    assert_true(lr_at(&s, 0) == 0.1);
    assert_true(lr_at(&s, 123456789) == 0.1);
    /* warm-up over 4 steps: base * (step + 1) / 5, then base */
    s.warmup_steps = 4;
    expect_close(lr_at(&s, 0), 0.02, 1e-15);
    expect_close(lr_at(&s, 3), 0.08, 1e-15);
    assert_true(lr_at(&s, 4) == 0.1);
    assert_true(mom_at(&s, 0) == -1.0); /* not driven */
}

static void test_multistep(void **state)
{
    (void)state;
    distill_schedule_options s = sched(DISTILL_SCHEDULE_MULTISTEP, 0.1);
    s.gamma = 0.1;
    s.n_milestones = 4;
    int64_t ms[4] = {30, 60, 60, 90}; /* a repeated milestone counts twice, as in PyTorch */
    memcpy(s.milestones, ms, sizeof ms);
    expect_close(lr_at(&s, 0), 0.1, 1e-15);
    expect_close(lr_at(&s, 29), 0.1, 1e-15);
    expect_close(lr_at(&s, 30), 0.01, 1e-14);
    expect_close(lr_at(&s, 59), 0.01, 1e-14);
    expect_close(lr_at(&s, 60), 1e-4, 1e-14);
    expect_close(lr_at(&s, 89), 1e-4, 1e-14);
    expect_close(lr_at(&s, 90), 1e-5, 1e-14);
    expect_close(lr_at(&s, 1000000), 1e-5, 1e-14);
    s.warmup_steps = 5;
    expect_close(lr_at(&s, 0), 0.1 / 6, 1e-15);
    expect_close(lr_at(&s, 5), 0.1, 1e-15);
    s.n_milestones = 0;
    assert_true(lr_at(&s, 100) == 0.1);
}

/* PyTorch 1.13 CosineAnnealingLR.get_lr, as the peer steps it once per
 * optimizer step (last_epoch = 0 at construction). */
static void torch_cosine(double base, double eta_min, int T_max, int steps, double *out)
{
    double lr = base;
    for (int e = 0; e < steps; e++) {
        if (e == 0)
            lr = base;
        else if ((e - 1 - T_max) % (2 * T_max) == 0)
            lr = lr + (base - eta_min) * (1 - cos(PI / T_max)) / 2;
        else
            lr = (1 + cos(PI * e / T_max)) / (1 + cos(PI * (e - 1) / T_max)) * (lr - eta_min) +
                 eta_min;
        out[e] = lr;
    }
}

static void test_cosine(void **state)
{
    (void)state;
    distill_schedule_options s = sched(DISTILL_SCHEDULE_COSINE, 0.1);
    s.total_steps = 100;
    s.min_lr = 0.001;
    /* closed form: eta_min + (base - eta_min) (1 + cos(pi t / T)) / 2 */
    expect_close(lr_at(&s, 0), 0.1, 1e-15);
    expect_close(lr_at(&s, 25), 0.0855017856687341, 1e-13);
    expect_close(lr_at(&s, 50), 0.0505, 1e-13);
    expect_close(lr_at(&s, 99), 0.001 + 0.099 * (1 + cos(PI * 0.99)) / 2, 1e-13);
    expect_close(lr_at(&s, 100), 0.001, 1e-13);
    expect_close(lr_at(&s, 250), 0.001, 1e-15); /* stays at min_lr past the end */

    /* PyTorch's recursive form, every step of the benchmark's length */
    enum { T = 1404 }; /* 3 epochs of 468 steps */
    static double torch[T + 1];
    s.total_steps = T;
    s.min_lr = 0.0;
    torch_cosine(0.1, 0.0, T, T + 1, torch);
    for (int e = 0; e <= T; e++)
        if (fabs(lr_at(&s, e) - torch[e]) > 1e-12)
            fail_msg("step %d: %.17g vs torch %.17g", e, lr_at(&s, e), torch[e]);

    /* warm-up then cosine over the rest */
    s.total_steps = 110;
    s.warmup_steps = 10;
    s.min_lr = 0.001;
    expect_close(lr_at(&s, 0), 0.1 / 11, 1e-15);
    expect_close(lr_at(&s, 9), 0.1 * 10 / 11, 1e-15);
    expect_close(lr_at(&s, 10), 0.1, 1e-15);
    expect_close(lr_at(&s, 60), 0.0505, 1e-13);
    expect_close(lr_at(&s, 110), 0.001, 1e-13);
}

/* PyTorch 1.13 OneCycleLR.get_lr (anneal_strategy "cos", two phases). */
static double torch_anneal_cos(double start, double end, double pct)
{
    return end + (start - end) / 2.0 * (cos(PI * pct) + 1);
}

static void torch_one_cycle(double max_lr, int total, double pct_start, double div,
                            double final_div, double base_m, double max_m, int step, double *lr,
                            double *mom)
{
    double initial = max_lr / div, min_lr = initial / final_div;
    double end[2] = {pct_start * total - 1, total - 1};
    double lr0[2] = {initial, max_lr}, lr1[2] = {max_lr, min_lr};
    double m0[2] = {max_m, base_m}, m1[2] = {base_m, max_m};
    double start_step = 0;
    for (int i = 0; i < 2; i++) {
        if (step <= end[i] || i == 1) {
            double pct = (step - start_step) / (end[i] - start_step);
            *lr = torch_anneal_cos(lr0[i], lr1[i], pct);
            *mom = torch_anneal_cos(m0[i], m1[i], pct);
            return;
        }
        start_step = end[i];
    }
}

static void test_one_cycle(void **state)
{
    (void)state;
    distill_schedule_options s = sched(DISTILL_SCHEDULE_ONECYCLE, 0.1);
    s.total_steps = 100;
    /* By hand, defaults pct_start 0.3, div 25, final_div 1e4: initial
     * 0.1 / 25 = 0.004, peak 0.1 at step 0.3 * 100 - 1 = 29, final
     * 0.004 / 1e4 = 4e-7 at step 99.  Step 15: 0.1 + (0.004 - 0.1) / 2 *
     * (cos(15 pi / 29) + 1) = 0.054598667612100...; step 64 is half way
     * down: pct (64 - 29) / (99 - 29) = 0.5, so 4e-7 + (0.1 - 4e-7) / 2. */
    expect_close(lr_at(&s, 0), 0.004, 1e-14);
    expect_close(lr_at(&s, 15), 0.05459866761210004, 1e-13);
    expect_close(lr_at(&s, 29), 0.1, 1e-14);
    expect_close(lr_at(&s, 64), 0.0500002, 1e-13);
    expect_close(lr_at(&s, 99), 4e-7, 1e-12);
    expect_close(lr_at(&s, 100), 4e-7, 1e-12); /* clamped past the end */
    /* momentum: 0.95 -> 0.85 at the peak -> 0.95 */
    expect_close(mom_at(&s, 0), 0.95, 1e-15);
    expect_close(mom_at(&s, 29), 0.85, 1e-14);
    expect_close(mom_at(&s, 64), 0.9, 1e-14);
    expect_close(mom_at(&s, 99), 0.95, 1e-14);
    s.cycle_momentum = 0;
    assert_true(mom_at(&s, 10) == -1.0);
    s.cycle_momentum = 1;

    /* Every step against the port, for a few shapes. */
    const struct {
        int total;
        double pct, div, final_div;
    } cases[] = {{100, 0.3, 25, 1e4}, {1000, 0.25, 10, 100}, {7, 0.5, 25, 1e4},
                 {1404, 0.3, 25, 1e4}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        s.total_steps = cases[c].total;
        s.pct_start = cases[c].pct;
        s.div_factor = cases[c].div;
        s.final_div_factor = cases[c].final_div;
        for (int t = 0; t < cases[c].total; t++) {
            double lr, m;
            torch_one_cycle(0.1, cases[c].total, cases[c].pct, cases[c].div,
                            cases[c].final_div, 0.85, 0.95, t, &lr, &m);
            if (fabs(lr_at(&s, t) - lr) > 1e-13 * lr || fabs(mom_at(&s, t) - m) > 1e-13)
                fail_msg("case %zu step %d: lr %.17g vs %.17g, momentum %.17g vs %.17g", c, t,
                         lr_at(&s, t), lr, mom_at(&s, t), m);
        }
    }
}

static void test_validation(void **state)
{
    (void)state;
    double lr;
    distill_schedule_options s = sched(DISTILL_SCHEDULE_CONSTANT, 0.1);
    assert_int_equal(distill_schedule_validate(&s), DISTILL_OK);
    assert_int_equal(distill_schedule_lr(&s, -1, &lr), DISTILL_EINVAL);
    assert_int_equal(distill_schedule_lr(&s, 0, NULL), DISTILL_EINVAL);
    assert_int_equal(distill_schedule_lr(NULL, 0, &lr), DISTILL_EINVAL);
    s.base_lr = -0.1;
    assert_int_equal(distill_schedule_lr(&s, 0, &lr), DISTILL_EINVAL);
    s.base_lr = NAN;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL);
    s = sched(99, 0.1);
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL);
    s = sched(DISTILL_SCHEDULE_CONSTANT, 0.1);
    s.version = DISTILL_SCHEDULE_OPTIONS_VERSION + 8;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EVERSION);
    s = sched(DISTILL_SCHEDULE_CONSTANT, 0.1);
    s.warmup_steps = -1;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL);

    s = sched(DISTILL_SCHEDULE_MULTISTEP, 0.1);
    s.n_milestones = 9;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL);
    s.n_milestones = 2;
    s.milestones[0] = 50;
    s.milestones[1] = 40;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL);
    s.milestones[1] = 60;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_OK);
    s.gamma = 0.0;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL);

    s = sched(DISTILL_SCHEDULE_COSINE, 0.1);
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL); /* total_steps 0 */
    s.total_steps = 10;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_OK);
    s.warmup_steps = 10;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL);
    s.warmup_steps = 0;
    s.min_lr = 0.2;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL);

    s = sched(DISTILL_SCHEDULE_ONECYCLE, 0.1);
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL); /* total_steps 0 */
    s.total_steps = 10;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_OK);
    s.pct_start = 1.0;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL);
    s.pct_start = 0.3;
    s.div_factor = 0.0;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL);
    s.div_factor = 25.0;
    s.max_momentum = 1.0;
    assert_int_equal(distill_schedule_validate(&s), DISTILL_EINVAL);
    s.cycle_momentum = 0; /* then the momenta are not looked at */
    assert_int_equal(distill_schedule_validate(&s), DISTILL_OK);
    /* one step only: the rate is already the final one */
    s.total_steps = 1;
    expect_close(lr_at(&s, 0), 0.1 / 25 / 1e4, 1e-12);
}

/* The schedule drives an optimizer: the rate it gives is the one used. */
static void test_drives_optimizer(void **state)
{
    (void)state;
    distill_model *m;
    int64_t in[1] = {2};
    assert_int_equal(distill_model_create(&m, "input", 1, in), DISTILL_OK);
    assert_int_equal(distill_model_add_linear(m, "fc", "input", 1, 0), DISTILL_OK);
    distill_param_info w = DISTILL_PARAM_INFO_INIT;
    assert_int_equal(distill_model_find_param(m, "fc.weight", &w), DISTILL_OK);
    distill_optimizer *opt;
    assert_int_equal(distill_optimizer_create(&opt, m, NULL), DISTILL_OK); /* plain SGD */
    distill_schedule_options s = sched(DISTILL_SCHEDULE_COSINE, 0.5);
    s.total_steps = 4;
    double expect = w.data[0];
    for (int t = 0; t < 4; t++) {
        double lr = lr_at(&s, t);
        assert_int_equal(distill_optimizer_set_lr(opt, lr), DISTILL_OK);
        w.grad[0] = 1.0f;
        assert_int_equal(distill_optimizer_step(opt), DISTILL_OK);
        expect -= lr;
    }
    expect_close(w.data[0], expect, 1e-6);
    distill_optimizer_free(opt);
    distill_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),   cmocka_unit_test(test_constant),
        cmocka_unit_test(test_multistep),  cmocka_unit_test(test_cosine),
        cmocka_unit_test(test_one_cycle),  cmocka_unit_test(test_validation),
        cmocka_unit_test(test_drives_optimizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

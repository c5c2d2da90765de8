/*
 * schedule.c - learning-rate schedules as pure functions of the step
 * (include/distill/optim.h).  All arithmetic is in double, as PyTorch's
 * schedulers do it in Python floats.
 */
#include <math.h>

#include "distill/optim.h"
#include "util/util.h"

#define PI 3.14159265358979323846

int distill_schedule_options_init(distill_schedule_options *opts, unsigned int version)
{
    static const distill_schedule_options init = DISTILL_SCHEDULE_OPTIONS_INIT;
    INIT_STRUCT(opts, version, DISTILL_SCHEDULE_OPTIONS_VERSION, init, "distill_schedule_options",
                "distill_schedule_options_init");
}

static int finite_ge(double x, double lo)
{
    return isfinite(x) && x >= lo;
}

static int unit(double x) /* in [0, 1) */
{
    return x >= 0.0 && x < 1.0;
}

/* The caller's options up to their version, over the defaults, into *s:
 * every function here reads that copy, never the caller's struct. */
static int take(const distill_schedule_options *host, distill_schedule_options *s, const char *fn)
{
    if (!host)
        return seterr(DISTILL_EINVAL, "schedule: options are NULL");
    static const distill_schedule_options init = DISTILL_SCHEDULE_OPTIONS_INIT;
    *s = init;
    COPY_OPTIONS(s, host, DISTILL_SCHEDULE_OPTIONS_VERSION, "distill_schedule_options", "%s", fn);
    return DISTILL_OK;
}

static int validate(const distill_schedule_options *s)
{
    if (!finite_ge(s->base_lr, 0.0))
        return seterr(DISTILL_EINVAL, "schedule: base_lr = %g must be finite and >= 0",
                      s->base_lr);
    if (s->kind != DISTILL_SCHEDULE_ONECYCLE && s->warmup_steps < 0)
        return seterr(DISTILL_EINVAL, "schedule: warmup_steps = %lld must be >= 0",
                      (long long)s->warmup_steps);
    switch (s->kind) {
    case DISTILL_SCHEDULE_CONSTANT:
        return DISTILL_OK;
    case DISTILL_SCHEDULE_MULTISTEP:
        if (!(isfinite(s->gamma) && s->gamma > 0.0))
            return seterr(DISTILL_EINVAL, "schedule: gamma = %g must be finite and > 0",
                          s->gamma);
        if (s->n_milestones < 0 || s->n_milestones > DISTILL_SCHEDULE_MAX_MILESTONES)
            return seterr(DISTILL_EINVAL, "schedule: n_milestones = %d must be in 0..%d",
                          s->n_milestones, DISTILL_SCHEDULE_MAX_MILESTONES);
        for (int i = 0; i < s->n_milestones; i++)
            if (s->milestones[i] < 0 || (i > 0 && s->milestones[i] < s->milestones[i - 1]))
                return seterr(DISTILL_EINVAL, "schedule: milestones[%d] = %lld; milestones must "
                                              "be >= 0 and non-decreasing",
                              i, (long long)s->milestones[i]);
        return DISTILL_OK;
    case DISTILL_SCHEDULE_COSINE:
        if (s->total_steps <= 0 || s->warmup_steps >= s->total_steps)
            return seterr(DISTILL_EINVAL, "schedule: cosine needs total_steps > 0 (%lld) and "
                                          "warmup_steps < total_steps (%lld)",
                          (long long)s->total_steps, (long long)s->warmup_steps);
        if (!(finite_ge(s->min_lr, 0.0) && s->min_lr <= s->base_lr))
            return seterr(DISTILL_EINVAL, "schedule: min_lr = %g must be in [0, base_lr = %g]",
                          s->min_lr, s->base_lr);
        return DISTILL_OK;
    case DISTILL_SCHEDULE_ONECYCLE:
        if (s->total_steps <= 0)
            return seterr(DISTILL_EINVAL, "schedule: one-cycle needs total_steps > 0 (%lld)",
                          (long long)s->total_steps);
        if (!(s->pct_start > 0.0 && s->pct_start < 1.0))
            return seterr(DISTILL_EINVAL, "schedule: pct_start = %g must be in (0, 1)",
                          s->pct_start);
        if (!(isfinite(s->div_factor) && s->div_factor > 0.0 &&
              isfinite(s->final_div_factor) && s->final_div_factor > 0.0))
            return seterr(DISTILL_EINVAL, "schedule: div_factor = %g and final_div_factor = %g "
                                          "must be finite and > 0",
                          s->div_factor, s->final_div_factor);
        if (s->cycle_momentum && (!unit(s->base_momentum) || !unit(s->max_momentum)))
            return seterr(DISTILL_EINVAL, "schedule: base_momentum = %g and max_momentum = %g "
                                          "must be in [0, 1)",
                          s->base_momentum, s->max_momentum);
        return DISTILL_OK;
    default:
        return seterr(DISTILL_EINVAL, "schedule: unknown kind %d", s->kind);
    }
}

/* PyTorch's _annealing_cos: from `start` at pct 0 to `end` at pct 1. */
static double anneal_cos(double start, double end, double pct)
{
    return end + (start - end) / 2.0 * (cos(PI * pct) + 1.0);
}

/*
 * One-cycle: the value that goes from v0 (step 0) to v1 (the peak step,
 * pct_start * total - 1) and on to v2 (step total - 1), as OneCycleLR's two
 * phases do for the rate (v0 = initial, v1 = max, v2 = min) and the momentum
 * (max, base, max).
 */
static double one_cycle(const distill_schedule_options *s, int64_t step, double v0, double v1,
                        double v2)
{
    double end1 = s->pct_start * (double)s->total_steps - 1.0;
    double end2 = (double)s->total_steps - 1.0;
    double t = (double)(step < s->total_steps ? step : s->total_steps - 1);
    /* end2 - end1 = total * (1 - pct_start) > 0.  PyTorch divides by zero when
     * end1 is 0; here step 0 then starts phase two, at the peak. */
    if (end1 > 0.0 && t <= end1)
        return anneal_cos(v0, v1, t / end1);
    return anneal_cos(v1, v2, (t - end1) / (end2 - end1));
}

int distill_schedule_validate(const distill_schedule_options *host)
{
    distill_schedule_options s;
    int rc = take(host, &s, "distill_schedule_validate");
    return rc ? rc : validate(&s);
}

static int check_call(const distill_schedule_options *host, int64_t step, const void *out,
                      distill_schedule_options *s, const char *fn)
{
    int rc = take(host, s, fn);
    if (!rc)
        rc = validate(s);
    if (rc)
        return rc;
    if (!out)
        return seterr(DISTILL_EINVAL, "schedule: output pointer is NULL");
    if (step < 0)
        return seterr(DISTILL_EINVAL, "schedule: step %lld is negative", (long long)step);
    return DISTILL_OK;
}

int distill_schedule_lr(const distill_schedule_options *host, int64_t step, double *lr)
{
    distill_schedule_options sc, *s = &sc;
    int rc = check_call(host, step, lr, s, "distill_schedule_lr");
    if (rc)
        return rc;
    double base = s->base_lr, v = base;
    switch (s->kind) {
    case DISTILL_SCHEDULE_MULTISTEP: {
        int k = 0;
        for (int i = 0; i < s->n_milestones; i++)
            k += s->milestones[i] <= step;
        v = base * pow(s->gamma, k);
        break;
    }
    case DISTILL_SCHEDULE_COSINE:
        if (step >= s->total_steps)
            v = s->min_lr;
        else if (step >= s->warmup_steps) {
            double t = (double)(step - s->warmup_steps);
            double T = (double)(s->total_steps - s->warmup_steps);
            v = s->min_lr + (base - s->min_lr) * (1.0 + cos(PI * t / T)) / 2.0;
        }
        break;
    case DISTILL_SCHEDULE_ONECYCLE: {
        double initial = base / s->div_factor;
        *lr = one_cycle(s, step, initial, base, initial / s->final_div_factor);
        return DISTILL_OK;
    }
    default:
        break;
    }
    if (step < s->warmup_steps)
        v *= (double)(step + 1) / (double)(s->warmup_steps + 1);
    *lr = v;
    return DISTILL_OK;
}

int distill_schedule_momentum(const distill_schedule_options *host, int64_t step,
                              double *momentum)
{
    distill_schedule_options sc, *s = &sc;
    int rc = check_call(host, step, momentum, s, "distill_schedule_momentum");
    if (rc)
        return rc;
    if (s->kind == DISTILL_SCHEDULE_ONECYCLE && s->cycle_momentum)
        *momentum = one_cycle(s, step, s->max_momentum, s->base_momentum, s->max_momentum);
    else
        *momentum = -1.0;
    return DISTILL_OK;
}

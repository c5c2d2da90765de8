/*
 * report.c - the compression report: teacher and student side by side.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "distill/trainer.h"
#include "nn/graph.h"
#include "tensor_internal.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median latency of `reps` inference forwards of a batch of n images
 * (after `warmup` unmeasured ones). */
static int latency(distill_model *m, int64_t n, int warmup, int reps, double *median_us)
{
    const node *in = &m->nodes[0];
    int64_t d[4] = {n, in->dims[0], in->dims[1], in->dims[2]};
    int64_t od[2] = {n, m->nodes[m->output].dims[0]};
    distill_tensor *x = NULL, *y = NULL;
    double *t = xmalloc((size_t)reps * sizeof *t);
    int rc = DISTILL_OK;
    if (!t) {
        rc = DISTILL_ENOMEM;
        goto out;
    }
    if ((rc = distill_tensor_create(&x, in->rank + 1, d)) ||
        (rc = distill_tensor_create(&y, 2, od)))
        goto out;
    for (size_t i = 0; i < x->numel; i++) /* any fixed, non-trivial input */
        x->data[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (int k = 0; k < warmup + reps; k++) {
        double t0 = now_us();
        if ((rc = distill_model_forward(m, x, DISTILL_MODE_INFERENCE, y)))
            goto out;
        if (k >= warmup)
            t[k - warmup] = now_us() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    *median_us = t[reps / 2];
out:
    distill_tensor_free(x);
    distill_tensor_free(y);
    xfree(t);
    return rc;
}

/* Measure one model into *s, the library's complete struct. */
static int side(distill_model *m, const distill_dataset *ds, const distill_eval_options *eo,
                int batch_n, distill_report_side *s)
{
    s->params = distill_model_num_params(m);
    s->macs = distill_model_macs(m);
    void *buf;
    size_t size;
    int rc = model_serialize(m, &buf, &size);
    if (rc)
        return rc;
    xfree(buf);
    s->file_bytes = (int64_t)size;
    /* measured as deployed: weights prepared once (distill_model_freeze) */
    int was_frozen = m->frozen;
    if ((rc = distill_model_freeze(m, 1)))
        return rc;
    rc = latency(m, 1, 20, 200, &s->latency_bs1_us);
    if (rc == DISTILL_OK)
        rc = latency(m, batch_n, 2, 10, &s->latency_bsN_us);
    distill_model_freeze(m, was_frozen);
    if (rc)
        return rc;
    s->images_per_sec = (double)batch_n / (s->latency_bsN_us * 1e-6);
    s->accuracy = -1;
    if (ds && distill_dataset_has_labels(ds)) {
        distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
        if ((rc = distill_evaluate(m, ds, eo, &r)))
            return rc;
        s->accuracy = r.top1;
    }
    return DISTILL_OK;
}

int distill_report_compare(distill_model *teacher, distill_model *student,
                           const distill_dataset *ds, const distill_eval_options *opts,
                           int batch_n, distill_report *out, distill_report_side *teacher_side,
                           distill_report_side *student_side)
{
    if (!teacher || !student || !out || !teacher_side || !student_side)
        return seterr(DISTILL_EINVAL, "distill_report_compare: NULL argument");
    CHECK_VERSION(out->version, DISTILL_REPORT_VERSION, "distill_report", "distill_report_compare");
    CHECK_VERSION(teacher_side->version, DISTILL_REPORT_SIDE_VERSION, "distill_report_side",
                  "distill_report_compare (teacher)");
    CHECK_VERSION(student_side->version, DISTILL_REPORT_SIDE_VERSION, "distill_report_side",
                  "distill_report_compare (student)");
    if (batch_n <= 0)
        batch_n = 128;
    distill_eval_options eo = DISTILL_EVAL_OPTIONS_INIT;
    if (opts) {
        COPY_OPTIONS(&eo, opts, DISTILL_EVAL_OPTIONS_VERSION, "distill_eval_options",
                     "distill_report_compare");
    }
    eo.agreement = NULL;
    eo.confusion = NULL;
    /* measured into the library's own structs, copied out at the end up to
     * the caller's versions */
    distill_report rep = DISTILL_REPORT_INIT;
    distill_report_side ts = DISTILL_REPORT_SIDE_INIT, ss = DISTILL_REPORT_SIDE_INIT;
    rep.batch_n = batch_n;
    rep.threads = distill_get_num_threads();
    int rc;
    if ((rc = side(teacher, ds, &eo, batch_n, &ts)) || (rc = side(student, ds, &eo, batch_n, &ss)))
        return rc;
    rep.agreement = -1;
    if (ds) {
        distill_teacher *t;
        if ((rc = distill_teacher_from_model(&t, teacher)))
            return rc;
        eo.agreement = t;
        distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
        rc = distill_evaluate(student, ds, &eo, &r);
        distill_teacher_free(t);
        if (rc)
            return rc;
        rep.agreement = r.agreement;
    }
    struct_copy_out(out, &rep, sizeof rep);
    struct_copy_out(teacher_side, &ts, sizeof ts);
    struct_copy_out(student_side, &ss, sizeof ss);
    return DISTILL_OK;
}

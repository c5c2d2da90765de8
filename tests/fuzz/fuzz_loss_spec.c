/*
 * fuzz_loss_spec.c - distill_loss_parse() on any string.
 *
 * The input, cut at its first NUL byte, is the spec.  Promised
 * (include/distill/loss.h): a bad spec is DISTILL_EINVAL with a message,
 * *out is NULL, and nothing crashes.  A spec that parses gives a loss with
 * a name and a weight; for a logit loss (no taps) the target also
 * evaluates it on a small batch with labels and teacher logits: the value
 * is finite or the call says DISTILL_ENONFINITE (a spec may ask for
 * extreme temperatures); anything else aborts only with FUZZ_STRICT=1.
 */
#include <math.h>

#include "fuzz_common.h"

#define N 3
#define CLASSES 4

static void evaluate(distill_loss *l)
{
    float s[N * CLASSES], t[N * CLASSES], g[N * CLASSES];
    int32_t y[N];
    for (int i = 0; i < N * CLASSES; i++) {
        s[i] = (float)((i * 7) % 5) - 2.0f;
        t[i] = (float)((i * 3) % 7) - 3.0f;
        g[i] = 0.0f;
    }
    for (int i = 0; i < N; i++)
        y[i] = i % CLASSES;
    distill_loss_batch b = DISTILL_LOSS_BATCH_INIT;
    b.n = N;
    b.classes = CLASSES;
    b.student_logits = s;
    b.teacher_logits = t;
    b.labels = y;
    distill_loss_grads gr = DISTILL_LOSS_GRADS_INIT;
    gr.student_logits = g;
    double v = 0;
    int rc = distill_loss_forward(l, &b, &v, &gr);
    if (rc == DISTILL_OK) {
        fz_suspect(isfinite(v), "DISTILL_OK with a non-finite loss value");
        for (int i = 0; i < N * CLASSES; i++)
            fz_suspect(isfinite(g[i]), "DISTILL_OK with a non-finite gradient");
    } else {
        fz_check_error_set(rc);
        fz_suspect(rc == DISTILL_ENONFINITE, "a parsed logit loss fails on a plain batch");
        for (int i = 0; i < N * CLASSES; i++)
            fz_check(g[i] == 0.0f, "a failed forward adds nothing to the gradients");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *spec = malloc(size + 1);
    if (!spec)
        return 0;
    if (size)
        memcpy(spec, data, size);
    spec[size] = '\0';

    distill_loss *l = (distill_loss *)&l; /* must be overwritten */
    float weight = -12345.0f;
    int rc = distill_loss_parse(&l, spec, &weight);
    if (rc != DISTILL_OK) {
        fz_check(l == NULL, "*out is NULL after a failed parse");
        fz_check(rc == DISTILL_EINVAL || rc == DISTILL_ENOMEM, "a bad spec is DISTILL_EINVAL");
        fz_check_error_set(rc);
    } else {
        fz_check(l != NULL, "a parsed spec gives a loss");
        const char *name = distill_loss_name(l);
        fz_check(name && *name, "a parsed loss has a name");
        fz_suspect(isfinite(weight), "a parsed loss has a finite weight");
        int taps = distill_loss_student_node(l) != NULL;
        fz_check(taps == (distill_loss_teacher_node(l) != NULL),
                 "a feature loss names both taps");
        if (!taps)
            evaluate(l);
        distill_loss_free(l);
    }
    /* The NULL weight pointer is allowed too. */
    l = NULL;
    rc = distill_loss_parse(&l, spec, NULL);
    if (rc == DISTILL_OK)
        distill_loss_free(l);
    free(spec);
    return 0;
}

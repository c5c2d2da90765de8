/*
 * test_eval_teacher.c - distill_evaluate_teacher: a teacher made from a
 * model scores as distill_evaluate scores the model; a callback teacher
 * (the host's own engine) scores as computed by hand from the logits it
 * returns; a cached teacher is refused; errors.
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

#define CHECK(call)                                                                   \
    do {                                                                              \
        int rc_ = (call);                                                             \
        if (rc_ != DISTILL_OK)                                                        \
            fail_msg("%s = %d (%s): %s", #call, rc_, distill_strerror(rc_),           \
                     distill_last_error());                                           \
    } while (0)

#define K 4  /* classes */
#define NS 13

static float g_x[NS][K];
static int32_t g_y[NS];

static distill_dataset *data(void)
{
    for (int i = 0; i < NS; i++) {
        for (int c = 0; c < K; c++)
            g_x[i][c] = (float)(((i + 3) * (c + 5) * 7) % 23) / 23.0f;
        g_y[i] = (i * 5) % K;
    }
    distill_dataset *ds;
    int64_t dims[3] = {K, 1, 1};
    CHECK(distill_dataset_from_memory(&ds, NS, dims, &g_x[0][0], g_y, K, DISTILL_MEMORY_COPY));
    return ds;
}

/* The host's engine: logits = 3 * (normalized) image - 1 for class c. */
static int host_forward(const distill_tensor *images, distill_tensor *logits, int n_taps,
                        const char *const *names, distill_tensor *const *taps, void *payload)
{
    (void)n_taps, (void)names, (void)taps;
    int *calls = payload;
    (*calls)++;
    const float *x = distill_tensor_data_const(images);
    float *z = distill_tensor_data(logits);
    for (int64_t i = 0; i < distill_tensor_numel(logits); i++)
        z[i] = 3.0f * x[i] - 1.0f;
    return DISTILL_OK;
}

static int failing_forward(const distill_tensor *images, distill_tensor *logits, int n_taps,
                           const char *const *names, distill_tensor *const *taps, void *payload)
{
    (void)images, (void)logits, (void)n_taps, (void)names, (void)taps, (void)payload;
    return DISTILL_EBACKEND;
}

static void test_callback_teacher(void **state)
{
    (void)state;
    distill_dataset *ds = data();
    int calls = 0;
    distill_teacher_callback cb = DISTILL_TEACHER_CALLBACK_INIT;
    cb.classes = K;
    cb.forward = host_forward;
    cb.payload = &calls;
    distill_teacher *t;
    CHECK(distill_teacher_from_callback(&t, &cb));

    const float mean = 0.5f, sd = 0.5f;
    /* by hand, in double */
    double loss = 0;
    int hit1 = 0;
    for (int i = 0; i < NS; i++) {
        double z[K], mx = -1e30, se = 0;
        int above = 0;
        for (int c = 0; c < K; c++) {
            z[c] = 3.0 * (double)((g_x[i][c] - mean) / sd) - 1.0;
            mx = z[c] > mx ? z[c] : mx;
        }
        for (int c = 0; c < K; c++) {
            se += exp(z[c] - mx);
            above += z[c] > z[g_y[i]];
        }
        loss += mx + log(se) - z[g_y[i]];
        hit1 += above == 0;
    }
    loss /= NS;
    assert_true(hit1 > 0 && hit1 < NS); /* the data is not trivial */

    distill_eval_options eo = DISTILL_EVAL_OPTIONS_INIT;
    eo.batch_size = 5;
    eo.norm_count = 1;
    eo.mean[0] = mean;
    eo.std[0] = sd;
    distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate_teacher(t, ds, &eo, &r));
    assert_int_equal(calls, 3); /* 5 + 5 + 3 */
    assert_true(r.count == NS);
    assert_true(r.top1 == (double)hit1 / NS);
    assert_true(r.top5 == 1.0); /* 4 classes */
    if (fabs(r.loss - loss) > 1e-5 * loss)
        fail_msg("loss %.9g, by hand %.9g", r.loss, loss);
    assert_true(r.agreement == -1);

    /* agreement with itself is 1 */
    eo.agreement = t;
    CHECK(distill_evaluate_teacher(t, ds, &eo, &r));
    assert_true(r.agreement == 1.0);

    /* a failing host engine fails the evaluation with its status */
    distill_teacher_callback bad = cb;
    bad.forward = failing_forward;
    distill_teacher *tb;
    CHECK(distill_teacher_from_callback(&tb, &bad));
    assert_int_equal(distill_evaluate_teacher(tb, ds, NULL, &r), DISTILL_EBACKEND);
    distill_teacher_free(tb);

    /* errors */
    assert_int_equal(distill_evaluate_teacher(NULL, ds, NULL, &r), DISTILL_EINVAL);
    assert_int_equal(distill_evaluate_teacher(t, NULL, NULL, &r), DISTILL_EINVAL);
    assert_int_equal(distill_evaluate_teacher(t, ds, NULL, NULL), DISTILL_EINVAL);
    r.version = DISTILL_EVAL_RESULT_VERSION + 8;
    assert_int_equal(distill_evaluate_teacher(t, ds, NULL, &r), DISTILL_EVERSION);
    distill_teacher_free(t);
    distill_dataset_free(ds);
}

static void test_model_teacher(void **state)
{
    (void)state;
    distill_dataset *ds = data();
    distill_model *m;
    int64_t in[3] = {K, 1, 1};
    CHECK(distill_model_create(&m, "input", 3, in));
    CHECK(distill_model_add_flatten(m, "flat", "input"));
    CHECK(distill_model_add_linear(m, "fc", "flat", K, 1));
    CHECK(distill_model_init_weights(m, DISTILL_INIT_DEFAULT, 3));
    distill_teacher *t;
    CHECK(distill_teacher_from_model(&t, m));
    distill_eval_result rm = DISTILL_EVAL_RESULT_INIT, rt = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(m, ds, NULL, &rm));
    CHECK(distill_evaluate_teacher(t, ds, NULL, &rt));
    assert_true(rm.count == rt.count);
    assert_true(rm.top1 == rt.top1 && rm.top5 == rt.top5);
    assert_true(fabs(rm.loss - rt.loss) < 1e-6 * (1 + rm.loss));

    /* data of another shape: refused with the model's message */
    distill_dataset *other;
    int64_t od[3] = {1, 2, 2};
    float ox[2 * 4] = {0};
    int32_t oy[2] = {0, 1};
    CHECK(distill_dataset_from_memory(&other, 2, od, ox, oy, K, DISTILL_MEMORY_COPY));
    assert_int_equal(distill_evaluate_teacher(t, other, NULL, &rt), DISTILL_ESHAPE);
    distill_dataset_free(other);

    /* a cached teacher has logits only for a training run's views */
    CHECK(distill_teacher_cache_build(t, ds, NULL, "eval_teacher.cache"));
    distill_teacher *tc;
    CHECK(distill_teacher_from_cache(&tc, "eval_teacher.cache"));
    assert_int_equal(distill_evaluate_teacher(tc, ds, NULL, &rt), DISTILL_EUNSUPPORTED);
    assert_non_null(strstr(distill_last_error(), "cached teacher"));
    distill_teacher_free(tc);
    remove("eval_teacher.cache");

    distill_teacher_free(t);
    distill_model_free(m);
    distill_dataset_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_callback_teacher),
        cmocka_unit_test(test_model_teacher),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

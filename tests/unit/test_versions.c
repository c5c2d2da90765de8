/*
 * test_versions.c - structs that can grow: a program built against an
 * older, smaller version of a struct still works, and the library neither
 * reads nor writes one byte past the caller's version; a newer version is
 * refused; results are filled only up to the caller's version; a node
 * describes all of its inputs.
 *
 * An "old" struct is simulated by a truncated copy of the struct's
 * definition (its first fields, checked against the real offsets), laid
 * out in memory before bytes that are not the caller's: poison for what
 * the library reads (values that make the call fail or crash if read), a
 * canary for what it writes (checked untouched afterwards).
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

#define SAME_OFFSET(old, real, field) \
    _Static_assert(offsetof(old, field) == offsetof(real, field), #old "." #field)

#define CANARY 0xA5
#define TAIL 256 /* bytes after an old struct that are not the caller's */

/* An old struct followed by bytes that are not the caller's, in one block. */
typedef struct {
    unsigned char bytes[1024];
} block;

static void *poisoned(block *b, const void *old, size_t old_size)
{
    memset(b->bytes, 0xFF, sizeof b->bytes); /* NaN doubles, -1 ints, wild pointers */
    memcpy(b->bytes, old, old_size);
    return b->bytes;
}

static void *canaried(block *b, unsigned int version)
{
    memset(b->bytes, CANARY, sizeof b->bytes);
    memcpy(b->bytes, &version, sizeof version);
    return b->bytes;
}

static void assert_canary(const block *b, size_t from)
{
    for (size_t i = from; i < from + TAIL; i++)
        if (b->bytes[i] != CANARY)
            fail_msg("byte %zu past the caller's %zu-byte struct was written", i - from, from);
}

/* (1, 4, 4) -> conv 3x3 (2 channels) -> flatten -> linear (3 classes) */
static distill_model *tiny_model(uint64_t seed)
{
    distill_model *m;
    int64_t in[3] = {1, 4, 4};
    CHECK(distill_model_create(&m, "input", 3, in));
    distill_conv2d_options c = DISTILL_CONV2D_OPTIONS_INIT;
    c.kernel_h = c.kernel_w = 3;
    c.pad_h = c.pad_w = 1;
    CHECK(distill_model_add_conv2d(m, "conv", "input", 2, &c));
    CHECK(distill_model_add_batchnorm(m, "bn", "conv", 1e-5f, 0.1f));
    CHECK(distill_model_add_relu(m, "relu", "bn"));
    CHECK(distill_model_add_flatten(m, "flat", "relu"));
    CHECK(distill_model_add_linear(m, "fc", "flat", 3, 1));
    CHECK(distill_model_init_weights(m, DISTILL_INIT_DEFAULT, seed));
    return m;
}

#define NS 20
static distill_dataset *tiny_data(void)
{
    static float x[NS * 16];
    static int32_t y[NS];
    for (int i = 0; i < NS * 16; i++)
        x[i] = (float)((i * 37) % 101) / 101.0f;
    for (int i = 0; i < NS; i++)
        y[i] = i % 3;
    distill_dataset *ds;
    int64_t dims[3] = {1, 4, 4};
    CHECK(distill_dataset_from_memory(&ds, NS, dims, x, y, 3, DISTILL_MEMORY_COPY));
    return ds;
}

/* ----------------------------------------------------- options, in */

/* distill_eval_options as a program built before resize, center_crop,
 * workers, agreement and confusion would have it */
typedef struct old_eval_options {
    unsigned int version;
    int batch_size;
    int norm_count;
    float mean[4];
    float std[4];
} old_eval_options;
SAME_OFFSET(old_eval_options, distill_eval_options, batch_size);
SAME_OFFSET(old_eval_options, distill_eval_options, norm_count);
SAME_OFFSET(old_eval_options, distill_eval_options, mean);
SAME_OFFSET(old_eval_options, distill_eval_options, std);
#define OLD_EVAL_OPTIONS_VERSION DISTILL_STRUCT_VERSION(old_eval_options, std)

static void test_old_options_in(void **state)
{
    (void)state;
    distill_model *m = tiny_model(1);
    distill_dataset *ds = tiny_data();

    /* the reference: today's struct with the same values */
    distill_eval_options eo = DISTILL_EVAL_OPTIONS_INIT;
    eo.batch_size = 7;
    eo.norm_count = 1;
    eo.mean[0] = 0.5f;
    eo.std[0] = 0.25f;
    distill_eval_result want = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(m, ds, &eo, &want));

    /* an old program's struct, made by the library's own init at the old
     * version: only its bytes are written */
    block b;
    old_eval_options *old = canaried(&b, OLD_EVAL_OPTIONS_VERSION);
    CHECK(distill_eval_options_init((distill_eval_options *)(void *)old,
                                    OLD_EVAL_OPTIONS_VERSION));
    assert_canary(&b, sizeof *old);
    assert_int_equal(old->version, OLD_EVAL_OPTIONS_VERSION);
    assert_int_equal(old->batch_size, 256);
    assert_true(old->std[3] == 1.0f);
    old->batch_size = 7;
    old->norm_count = 1;
    old->mean[0] = 0.5f;
    old->std[0] = 0.25f;
    /* what follows it would be a wild confusion pointer and agreement
     * teacher, resize -1: read, they would crash or be refused */
    old_eval_options copy = *old;
    const distill_eval_options *in = poisoned(&b, &copy, sizeof copy);
    distill_eval_result got = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(m, ds, in, &got));
    assert_true(got.count == want.count);
    assert_true(got.loss == want.loss);
    assert_true(got.top1 == want.top1);
    assert_true(got.agreement == -1); /* the missing agreement teacher is NULL */

    /* a newer program's struct is refused before anything is done */
    distill_eval_options newer = DISTILL_EVAL_OPTIONS_INIT;
    newer.version = DISTILL_EVAL_OPTIONS_VERSION + 8;
    assert_int_equal(distill_evaluate(m, ds, &newer, &got), DISTILL_EVERSION);
    assert_non_null(strstr(distill_last_error(), "distill_eval_options version"));
    assert_non_null(strstr(distill_last_error(), "newer than this library's"));
    assert_int_equal(distill_eval_options_init(&newer, DISTILL_EVAL_OPTIONS_VERSION + 8),
                     DISTILL_EVERSION);
    /* and a struct nobody initialized */
    newer.version = 0;
    assert_int_equal(distill_evaluate(m, ds, &newer, &got), DISTILL_EVERSION);
    assert_non_null(strstr(distill_last_error(), "DISTILL_EVAL_OPTIONS_INIT"));

    distill_dataset_free(ds);
    distill_model_free(m);
}

/* distill_conv2d_options before dilation, groups and bias */
typedef struct old_conv2d_options {
    unsigned int version;
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
} old_conv2d_options;
SAME_OFFSET(old_conv2d_options, distill_conv2d_options, pad_w);

static void test_old_conv_options(void **state)
{
    (void)state;
    old_conv2d_options o = {DISTILL_STRUCT_VERSION(old_conv2d_options, pad_w), 3, 3, 2, 2, 1, 1};
    block b;
    const distill_conv2d_options *in = poisoned(&b, &o, sizeof o);
    distill_model *m;
    int64_t d[3] = {3, 8, 8};
    CHECK(distill_model_create(&m, "input", 3, d));
    /* poison read as groups (-1) or dilation (-1) would be refused */
    CHECK(distill_model_add_conv2d(m, "conv", "input", 4, in));
    distill_node_info ni = DISTILL_NODE_INFO_INIT;
    CHECK(distill_model_find_node(m, "conv", &ni));
    assert_int_equal(ni.kernel_h, 3);
    assert_int_equal(ni.stride_w, 2);
    assert_int_equal(ni.pad_h, 1);
    assert_int_equal(ni.groups, 1);     /* defaults for what the old struct lacks */
    assert_int_equal(ni.dilation_h, 1);
    assert_int_equal(ni.bias, 1);
    assert_int_equal(ni.dims[1], 4);
    distill_conv2d_options newer = DISTILL_CONV2D_OPTIONS_INIT;
    newer.version += 4;
    assert_int_equal(distill_model_add_conv2d(m, "c2", "input", 4, &newer), DISTILL_EVERSION);
    distill_model_free(m);
}

/* distill_trainer_options as built before max_grad_norm and
 * no_decay_bn_bias were appended */
typedef struct old_trainer_options {
    unsigned int version;
    int epochs;
    int batch_size;
    double lr;
    double momentum;
    int nesterov;
    double weight_decay;
    int schedule;
    int64_t warmup_steps;
    uint64_t seed;
    int crop_padding;
    int hflip;
    int norm_count;
    float mean[4];
    float std[4];
    int skip_nonfinite;
    int prefetch;
    int64_t steps_per_epoch;
    distill_progress_fn progress;
    void *progress_payload;
    int progress_every;
    int64_t max_steps;
    int resize;
    int center_crop[2];
    int random_resized_crop[2];
    float rrc_scale[2];
    float rrc_ratio[2];
    int workers;
} old_trainer_options;
SAME_OFFSET(old_trainer_options, distill_trainer_options, lr);
SAME_OFFSET(old_trainer_options, distill_trainer_options, seed);
SAME_OFFSET(old_trainer_options, distill_trainer_options, progress);
SAME_OFFSET(old_trainer_options, distill_trainer_options, max_steps);
SAME_OFFSET(old_trainer_options, distill_trainer_options, workers);

static void train_steps(distill_model *m, const distill_trainer_options *o, distill_dataset *ds)
{
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, o));
    CHECK(distill_trainer_fit(tr, ds, NULL));
    assert_int_equal(distill_trainer_steps_done(tr), 3);
    distill_trainer_free(tr);
}

static void test_old_trainer_options(void **state)
{
    (void)state;
    distill_dataset *ds = tiny_data();
    distill_trainer_options o = DISTILL_TRAINER_OPTIONS_INIT;
    o.batch_size = 4;
    o.max_steps = 3;
    o.prefetch = 0;
    o.lr = 0.5;
    distill_model *a = tiny_model(3), *b = tiny_model(3);
    train_steps(a, &o, ds);

    old_trainer_options old;
    memcpy(&old, &o, sizeof old);
    old.version = DISTILL_STRUCT_VERSION(old_trainer_options, workers);
    block blk;
    /* max_grad_norm read from the poison would be NaN: refused */
    train_steps(b, poisoned(&blk, &old, sizeof old), ds);
    size_t na, nb;
    const float *pa = distill_model_param_block(a, &na), *pb = distill_model_param_block(b, &nb);
    assert_true(na == nb);
    assert_memory_equal(pa, pb, na * sizeof *pa);

    distill_trainer *tr;
    o.version = DISTILL_TRAINER_OPTIONS_VERSION + 8;
    assert_int_equal(distill_trainer_create(&tr, a, NULL, &o), DISTILL_EVERSION);
    assert_null(tr);
    distill_model_free(a);
    distill_model_free(b);
    distill_dataset_free(ds);
}

/* ------------------------------------------------- vtables, in */

typedef struct old_teacher_callback {
    unsigned int version;
    int classes;
    int (*forward)(const distill_tensor *, distill_tensor *, int, const char *const *,
                   distill_tensor *const *, void *);
    int (*tap_shape)(const char *, int *, int64_t[3], void *);
    void *payload;
} old_teacher_callback; /* before destroy */
SAME_OFFSET(old_teacher_callback, distill_teacher_callback, payload);

static int const_forward(const distill_tensor *images, distill_tensor *logits, int n_taps,
                         const char *const *names, distill_tensor *const *taps, void *payload)
{
    (void)images, (void)n_taps, (void)names, (void)taps, (void)payload;
    return distill_tensor_fill(logits, 0.5f);
}

static int vt_calls;
static int old_loss_forward(const distill_loss_batch *b, double *loss, distill_loss_grads *g,
                            void *payload)
{
    (void)payload;
    /* the library hands its own complete structs to a loss */
    assert_int_equal(b->version, DISTILL_LOSS_BATCH_VERSION);
    assert_int_equal(g->version, DISTILL_LOSS_GRADS_VERSION);
    assert_true(DISTILL_HAS_FIELD(b, distill_loss_batch, teacher_feat));
    assert_true(DISTILL_HAS_FIELD(g, distill_loss_grads, student_feat));
    vt_calls++;
    *loss = 0.0;
    return DISTILL_OK;
}

typedef struct old_loss_vtable {
    unsigned int version;
    const char *name;
    int (*forward)(const distill_loss_batch *, double *, distill_loss_grads *, void *);
} old_loss_vtable; /* before destroy */
SAME_OFFSET(old_loss_vtable, distill_loss_vtable, forward);

typedef struct old_loss_batch {
    unsigned int version;
    int64_t n, classes;
    const float *student_logits, *teacher_logits;
    const int32_t *labels;
} old_loss_batch; /* before the feature taps */
SAME_OFFSET(old_loss_batch, distill_loss_batch, labels);

typedef struct old_loss_grads {
    unsigned int version;
    float *student_logits;
} old_loss_grads;
SAME_OFFSET(old_loss_grads, distill_loss_grads, student_logits);

static void test_old_vtables(void **state)
{
    (void)state;
    /* freeing would call the poison as destroy() if it were read */
    old_teacher_callback ocb = {DISTILL_STRUCT_VERSION(old_teacher_callback, payload), 3,
                                const_forward, NULL, NULL};
    block b;
    distill_teacher *t;
    CHECK(distill_teacher_from_callback(&t, poisoned(&b, &ocb, sizeof ocb)));
    assert_int_equal(distill_teacher_classes(t), 3);
    distill_teacher_free(t);
    distill_teacher_callback newer = DISTILL_TEACHER_CALLBACK_INIT;
    newer.version += 8;
    newer.classes = 3;
    newer.forward = const_forward;
    assert_int_equal(distill_teacher_from_callback(&t, &newer), DISTILL_EVERSION);

    old_loss_vtable ovt = {DISTILL_STRUCT_VERSION(old_loss_vtable, forward), "old",
                           old_loss_forward};
    distill_loss *l;
    CHECK(distill_loss_create_custom(&l, poisoned(&b, &ovt, sizeof ovt), NULL, NULL, NULL));
    /* a caller's batch and grads, old-sized: before the feature taps */
    float s[6] = {0}, gl[6] = {0};
    int32_t y[2] = {0, 1};
    old_loss_batch ob = {DISTILL_STRUCT_VERSION(old_loss_batch, labels), 2, 3, s, NULL, y};
    old_loss_grads og = {DISTILL_STRUCT_VERSION(old_loss_grads, student_logits), gl};
    block bb, bg;
    double v = -1;
    CHECK(distill_loss_forward(l, poisoned(&bb, &ob, sizeof ob), &v,
                               poisoned(&bg, &og, sizeof og)));
    assert_int_equal(vt_calls, 1);
    assert_true(v == 0.0);
    distill_loss_batch newer_b = DISTILL_LOSS_BATCH_INIT;
    newer_b.version += 8;
    assert_int_equal(distill_loss_forward(l, &newer_b, &v, NULL), DISTILL_EVERSION);
    distill_loss_free(l);
}

/* ------------------------------------------------- results, out */

typedef struct old_eval_result {
    unsigned int version;
    int64_t count;
    double loss;
} old_eval_result;
SAME_OFFSET(old_eval_result, distill_eval_result, loss);

typedef struct old_node_info {
    unsigned int version;
    const char *name;
    int op;
    int n_inputs;
} old_node_info;
SAME_OFFSET(old_node_info, distill_node_info, n_inputs);

typedef struct old_param_info {
    unsigned int version;
    const char *name;
    const char *node;
    int kind;
    int trainable;
} old_param_info;
SAME_OFFSET(old_param_info, distill_param_info, trainable);

typedef struct old_report_side {
    unsigned int version;
    int64_t params;
} old_report_side;
SAME_OFFSET(old_report_side, distill_report_side, params);

typedef struct old_report {
    unsigned int version;
    int batch_n;
} old_report;
SAME_OFFSET(old_report, distill_report, batch_n);

static void test_results_out(void **state)
{
    (void)state;
    distill_model *m = tiny_model(5);
    distill_dataset *ds = tiny_data();
    distill_eval_result full = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(m, ds, NULL, &full));
    assert_true(full.count == NS && full.top1 >= 0 && full.top5 == 1.0);

    block b;
    old_eval_result *r = canaried(&b, DISTILL_STRUCT_VERSION(old_eval_result, loss));
    CHECK(distill_evaluate(m, ds, NULL, (distill_eval_result *)(void *)r));
    assert_canary(&b, sizeof *r);
    assert_true(r->count == NS);
    assert_true(r->loss == full.loss);
    assert_int_equal(r->version, DISTILL_STRUCT_VERSION(old_eval_result, loss));
    /* a version larger than the library's: refused, nothing written */
    unsigned int big = DISTILL_EVAL_RESULT_VERSION + 8;
    canaried(&b, big);
    assert_int_equal(distill_evaluate(m, ds, NULL, (distill_eval_result *)(void *)b.bytes),
                     DISTILL_EVERSION);
    assert_canary(&b, sizeof big);

    /* node and parameter descriptions */
    distill_node_info nfull = DISTILL_NODE_INFO_INIT;
    CHECK(distill_model_find_node(m, "conv", &nfull));
    old_node_info *on = canaried(&b, DISTILL_STRUCT_VERSION(old_node_info, n_inputs));
    CHECK(distill_model_find_node(m, "conv", (distill_node_info *)(void *)on));
    assert_canary(&b, sizeof *on);
    assert_string_equal(on->name, "conv");
    assert_int_equal(on->op, DISTILL_OP_CONV2D);
    assert_int_equal(on->n_inputs, 1);
    CHECK(distill_model_node(m, 1, (distill_node_info *)(void *)on));
    assert_canary(&b, sizeof *on);
    assert_true(nfull.kernel_h == 3 && nfull.tanh_approx == 0 && nfull.dims[0] == 2);
    canaried(&b, DISTILL_NODE_INFO_VERSION + 4);
    assert_int_equal(distill_model_node(m, 1, (distill_node_info *)(void *)b.bytes),
                     DISTILL_EVERSION);
    assert_canary(&b, sizeof(unsigned int));

    old_param_info *op = canaried(&b, DISTILL_STRUCT_VERSION(old_param_info, trainable));
    CHECK(distill_model_find_param(m, "fc.bias", (distill_param_info *)(void *)op));
    assert_canary(&b, sizeof *op);
    assert_string_equal(op->name, "fc.bias");
    assert_string_equal(op->node, "fc");
    assert_int_equal(op->kind, DISTILL_PARAM_BIAS);
    assert_int_equal(op->trainable, 1);
    CHECK(distill_model_param(m, 0, (distill_param_info *)(void *)op));
    assert_canary(&b, sizeof *op);
    distill_param_info pfull = DISTILL_PARAM_INFO_INIT;
    CHECK(distill_model_find_param(m, "fc.bias", &pfull));
    assert_true(pfull.numel == 3 && pfull.data && pfull.grad);
    pfull.version = 0;
    assert_int_equal(distill_model_param(m, 0, &pfull), DISTILL_EVERSION);
    assert_non_null(strstr(distill_last_error(), "DISTILL_PARAM_INFO_INIT"));

    /* the report: three structs, each filled up to its own version */
    distill_model *s = tiny_model(6);
    block br, bt, bs;
    old_report *rep = canaried(&br, DISTILL_STRUCT_VERSION(old_report, batch_n));
    old_report_side *ts = canaried(&bt, DISTILL_STRUCT_VERSION(old_report_side, params));
    distill_report_side ss = DISTILL_REPORT_SIDE_INIT;
    CHECK(distill_report_compare(m, s, ds, NULL, 4, (distill_report *)(void *)rep,
                                 (distill_report_side *)(void *)ts, &ss));
    assert_canary(&br, sizeof *rep);
    assert_canary(&bt, sizeof *ts);
    assert_int_equal(rep->batch_n, 4);
    assert_true(ts->params == distill_model_num_params(m));
    assert_true(ss.params == distill_model_num_params(s));
    assert_true(ss.macs == distill_model_macs(s) && ss.accuracy >= 0 && ss.file_bytes > 0);
    distill_report fr = DISTILL_REPORT_INIT;
    canaried(&bs, DISTILL_REPORT_SIDE_VERSION + 8);
    assert_int_equal(distill_report_compare(m, s, ds, NULL, 4, &fr, &ss,
                                            (distill_report_side *)(void *)bs.bytes),
                     DISTILL_EVERSION);
    assert_canary(&bs, sizeof(unsigned int));
    assert_int_equal(fr.batch_n, 0); /* refused before anything was measured */
    distill_model_free(s);
    distill_dataset_free(ds);
    distill_model_free(m);
}

/* ------------------------------------------------- callbacks */

static int progress_calls;
static int on_progress(const distill_progress *p, void *payload)
{
    (void)payload;
    assert_int_equal(p->version, DISTILL_PROGRESS_VERSION);
    assert_true(DISTILL_HAS_FIELD(p, distill_progress, skipped_steps));
    progress_calls++;
    return 0;
}

static void test_progress_version(void **state)
{
    (void)state;
    distill_dataset *ds = tiny_data();
    distill_model *m = tiny_model(7);
    distill_trainer_options o = DISTILL_TRAINER_OPTIONS_INIT;
    o.batch_size = 4;
    o.max_steps = 2;
    o.progress = on_progress;
    o.progress_every = 1;
    o.prefetch = 0;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, NULL, &o));
    CHECK(distill_trainer_fit(tr, ds, NULL));
    assert_true(progress_calls >= 2);
    distill_trainer_free(tr);
    distill_model_free(m);
    distill_dataset_free(ds);
}

/* ------------------------------------------------- node inputs */

static void test_node_inputs(void **state)
{
    (void)state;
    /* a concat of 64 inputs: node info counts them, the accessor gives each */
    distill_model *m;
    int64_t d[3] = {1, 2, 2};
    CHECK(distill_model_create(&m, "input", 3, d));
    char names[64][16];
    const char *ins[64];
    for (int k = 0; k < 64; k++) {
        snprintf(names[k], sizeof names[k], "r%d", k);
        CHECK(distill_model_add_relu(m, names[k], "input"));
        ins[k] = names[63 - k]; /* in reverse order of their nodes */
    }
    CHECK(distill_model_add_concat(m, "cat", 64, ins));
    size_t cat = distill_model_node_count(m) - 1;
    distill_node_info ni = DISTILL_NODE_INFO_INIT;
    CHECK(distill_model_node(m, cat, &ni));
    assert_string_equal(ni.name, "cat");
    assert_int_equal(ni.n_inputs, 64);
    assert_true(ni.dims[0] == 64);
    for (int k = 0; k < 64; k++) {
        size_t idx = 0;
        const char *name = NULL;
        CHECK(distill_model_node_input(m, cat, k, &idx, &name));
        assert_string_equal(name, names[63 - k]);
        assert_true(idx == (size_t)(64 - k)); /* node 0 is the input */
    }
    CHECK(distill_model_node_input(m, cat, 5, NULL, NULL));
    assert_int_equal(distill_model_node_input(m, cat, 64, NULL, NULL), DISTILL_EINVAL);
    assert_non_null(strstr(distill_last_error(), "'cat' has 64 inputs"));
    assert_int_equal(distill_model_node_input(m, cat, -1, NULL, NULL), DISTILL_EINVAL);
    assert_int_equal(distill_model_node_input(m, cat + 1, 0, NULL, NULL), DISTILL_EINVAL);
    assert_int_equal(distill_model_node_input(NULL, 0, 0, NULL, NULL), DISTILL_EINVAL);
    /* the input node has none */
    CHECK(distill_model_node(m, 0, &ni));
    assert_int_equal(ni.n_inputs, 0);
    assert_int_equal(distill_model_node_input(m, 0, 0, NULL, NULL), DISTILL_EINVAL);
    distill_model_free(m);
}

/* ------------------------------------------------- every INIT */

static void test_init_macros(void **state)
{
    (void)state;
    /* each initializer sets the version, and each _init function agrees
     * with its macro */
    const distill_allocator a = DISTILL_ALLOCATOR_INIT;
    const distill_loss_vtable vt = DISTILL_LOSS_VTABLE_INIT;
    const distill_loss_batch lb = DISTILL_LOSS_BATCH_INIT;
    const distill_loss_grads lg = DISTILL_LOSS_GRADS_INIT;
    const distill_teacher_callback tc = DISTILL_TEACHER_CALLBACK_INIT;
    const distill_eval_result er = DISTILL_EVAL_RESULT_INIT;
    const distill_report r = DISTILL_REPORT_INIT;
    const distill_report_side rs = DISTILL_REPORT_SIDE_INIT;
    const distill_node_info ni = DISTILL_NODE_INFO_INIT;
    const distill_param_info pi = DISTILL_PARAM_INFO_INIT;
    assert_int_equal(a.version, DISTILL_ALLOCATOR_VERSION);
    assert_int_equal(vt.version, DISTILL_LOSS_VTABLE_VERSION);
    assert_int_equal(lb.version, DISTILL_LOSS_BATCH_VERSION);
    assert_int_equal(lg.version, DISTILL_LOSS_GRADS_VERSION);
    assert_int_equal(tc.version, DISTILL_TEACHER_CALLBACK_VERSION);
    assert_int_equal(er.version, DISTILL_EVAL_RESULT_VERSION);
    assert_int_equal(r.version, DISTILL_REPORT_VERSION);
    assert_int_equal(rs.version, DISTILL_REPORT_SIDE_VERSION);
    assert_int_equal(ni.version, DISTILL_NODE_INFO_VERSION);
    assert_int_equal(pi.version, DISTILL_PARAM_INFO_VERSION);
    /* a version is the end of the last field: never past the struct */
    assert_true(DISTILL_NODE_INFO_VERSION <= sizeof(distill_node_info));
    assert_true(DISTILL_TRAINER_OPTIONS_VERSION <= sizeof(distill_trainer_options));
    assert_true(sizeof(distill_trainer_options) - DISTILL_TRAINER_OPTIONS_VERSION <
                _Alignof(distill_trainer_options));

#define SAME_AS_MACRO(type, fn, macro_init, version)                                   \
    do {                                                                              \
        type x_;                                                                      \
        static const type y_ = macro_init; /* static: zero padding */                 \
        memset(&x_, 0x5A, sizeof x_);                                                 \
        CHECK(fn(&x_, version));                                                      \
        assert_memory_equal(&x_, &y_, version);                                       \
    } while (0)
    SAME_AS_MACRO(distill_conv2d_options, distill_conv2d_options_init,
                  DISTILL_CONV2D_OPTIONS_INIT, DISTILL_CONV2D_OPTIONS_VERSION);
    SAME_AS_MACRO(distill_pool2d_options, distill_pool2d_options_init,
                  DISTILL_POOL2D_OPTIONS_INIT, DISTILL_POOL2D_OPTIONS_VERSION);
    SAME_AS_MACRO(distill_zoo_options, distill_zoo_options_init, DISTILL_ZOO_OPTIONS_INIT,
                  DISTILL_ZOO_OPTIONS_VERSION);
    SAME_AS_MACRO(distill_folder_options, distill_folder_options_init,
                  DISTILL_FOLDER_OPTIONS_INIT, DISTILL_FOLDER_OPTIONS_VERSION);
    SAME_AS_MACRO(distill_loader_options, distill_loader_options_init,
                  DISTILL_LOADER_OPTIONS_INIT, DISTILL_LOADER_OPTIONS_VERSION);
    SAME_AS_MACRO(distill_optimizer_options, distill_optimizer_options_init,
                  DISTILL_OPTIMIZER_OPTIONS_INIT, DISTILL_OPTIMIZER_OPTIONS_VERSION);
    SAME_AS_MACRO(distill_schedule_options, distill_schedule_options_init,
                  DISTILL_SCHEDULE_OPTIONS_INIT, DISTILL_SCHEDULE_OPTIONS_VERSION);
    SAME_AS_MACRO(distill_cache_options, distill_cache_options_init, DISTILL_CACHE_OPTIONS_INIT,
                  DISTILL_CACHE_OPTIONS_VERSION);
    SAME_AS_MACRO(distill_trainer_options, distill_trainer_options_init,
                  DISTILL_TRAINER_OPTIONS_INIT, DISTILL_TRAINER_OPTIONS_VERSION);
    SAME_AS_MACRO(distill_eval_options, distill_eval_options_init, DISTILL_EVAL_OPTIONS_INIT,
                  DISTILL_EVAL_OPTIONS_VERSION);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_macros),
        cmocka_unit_test(test_old_options_in),
        cmocka_unit_test(test_old_conv_options),
        cmocka_unit_test(test_old_trainer_options),
        cmocka_unit_test(test_old_vtables),
        cmocka_unit_test(test_results_out),
        cmocka_unit_test(test_progress_version),
        cmocka_unit_test(test_node_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_alloc_fail.c - the host allocator hook (distill_set_allocator) and
 * fault injection through it.
 *
 * A counting allocator that can fail its n-th call is installed, and a
 * whole path of the library is run for every n from 1 to the number of
 * allocations the path makes:
 *
 *   distillation   zoo resnet8 (a quarter of the widths, 8 x 8 images) as
 *                  the student, a small builder model as the teacher, a
 *                  trainer with KD, one distill_trainer_step on a batch of 4,
 *                  metadata set, distill_model_save, distill_model_load,
 *                  free everything
 *   IDX (gzip)     distill_dataset_from_idx on gzip files (zlib's memory),
 *                  a loader with its prefetch thread, one batch
 *   PNG folder     distill_dataset_from_folder on PNGs (libpng's memory)
 *   ONNX           a small model with metadata, exported with
 *                  distill_model_export_onnx and
 *                  imported with distill_model_import_onnx (protobuf-c's
 *                  memory), when the library has ONNX support
 *
 * Each run must end in one of two ways: the first failing call returns
 * DISTILL_ENOMEM with a message (later calls are skipped), or every call
 * succeeds (the failure was absorbed, or n is past the end).  Either way,
 * once every handle is freed no block may be left: the test allocator's
 * count of live blocks is 0, the library's own count is 0 (so the default
 * allocator can be restored), and no temporary file is left behind.
 */
#define _GNU_SOURCE

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <execinfo.h>
#include <pthread.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "distill.h"
#include "util/util.h"

#define OK(call) assert_int_equal((call), DISTILL_OK)

/* ------------------------------------------------------ test allocator */

/*
 * Every block carries a 64-byte prefix that links it into a list of live
 * blocks with the number of the call that made it, so that a leak can be
 * reported as "the block of call k".  ALLOC_FAIL_TRACE=k prints a
 * backtrace at call k of every run, to find where a leaked block came from.
 */
#define PREFIX 64

typedef struct prefix {
    struct prefix *next, *prev;
    long call;
    size_t size;
} prefix;

typedef struct counting {
    long calls;     /* alloc calls so far in this run */
    long fail_at;   /* 1-based call to fail; 0 = none */
    long live;      /* blocks handed out and not freed */
    int failed;     /* the injected failure happened */
    size_t max_align;
    prefix head;    /* list of live blocks */
    long trace;     /* call to print a backtrace at; 0 = none */
} counting;

static counting ca;
static pthread_mutex_t ca_lock = PTHREAD_MUTEX_INITIALIZER;

static void *c_alloc(size_t size, size_t alignment, void *payload)
{
    counting *c = payload;
    pthread_mutex_lock(&ca_lock);
    long n = ++c->calls;
    if (c->trace == n) {
        void *frames[32];
        fprintf(stderr, "-- allocation %ld of %zu bytes:\n", n, size);
        backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
    }
    if (c->fail_at && n == c->fail_at) {
        c->failed = 1;
        pthread_mutex_unlock(&ca_lock);
        return NULL;
    }
    void *raw = NULL;
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) || alignment > PREFIX ||
        size > SIZE_MAX - PREFIX || posix_memalign(&raw, PREFIX, size + PREFIX) != 0) {
        pthread_mutex_unlock(&ca_lock);
        return NULL;
    }
    if (alignment > c->max_align)
        c->max_align = alignment;
    prefix *b = raw;
    b->call = n;
    b->size = size;
    b->next = c->head.next;
    b->prev = &c->head;
    c->head.next->prev = b;
    c->head.next = b;
    c->live++;
    pthread_mutex_unlock(&ca_lock);
    return (unsigned char *)raw + PREFIX;
}

static void c_free(void *p, void *payload)
{
    counting *c = payload;
    assert_non_null(p);
    prefix *b = (prefix *)(void *)((unsigned char *)p - PREFIX);
    pthread_mutex_lock(&ca_lock);
    b->prev->next = b->next;
    b->next->prev = b->prev;
    c->live--;
    pthread_mutex_unlock(&ca_lock);
    free(b);
}

/* Install the counting allocator (the library must hold no block). */
static void install(long fail_at)
{
    memset(&ca, 0, sizeof ca);
    ca.head.next = ca.head.prev = &ca.head;
    const char *t = getenv("ALLOC_FAIL_TRACE");
    ca.trace = t ? atol(t) : 0;
    ca.fail_at = fail_at;
    distill_allocator a = {DISTILL_ALLOCATOR_VERSION, c_alloc, c_free, &ca};
    OK(distill_set_allocator(&a));
}

/* A new run with the allocator installed: count calls from 0 again. */
static void rearm(long fail_at)
{
    ca.calls = 0;
    ca.failed = 0;
    ca.fail_at = fail_at;
}

/* Print the live blocks made since run began (call numbers of this run). */
static void print_leaks(prefix *since)
{
    for (prefix *b = ca.head.next; b != &ca.head && b != since; b = b->next)
        fprintf(stderr, "    leaked: %zu bytes from allocation %ld of the run\n", b->size,
                b->call);
}

/* Back to malloc: possible only when the library holds no block. */
static void uninstall(void)
{
    assert_int_equal(util_live_blocks(), 0);
    OK(distill_set_allocator(NULL));
}

/* ------------------------------------------------------------ one run */

/* Where a run stopped. */
typedef struct outcome {
    int rc;            /* DISTILL_OK, or the first failure */
    const char *call;  /* the call that failed */
    char msg[512];
} outcome;

/* Record the first failure; returns nonzero while the run may continue. */
static int step(outcome *o, const char *call, int rc)
{
    if (o->rc)
        return 0;
    if (rc) {
        o->rc = rc;
        o->call = call;
        snprintf(o->msg, sizeof o->msg, "%s", distill_last_error());
    }
    return rc == DISTILL_OK;
}

#define STEP(o, call) step((o), #call, (call))

static const char *const MODEL_PATH = "alloc_fail_model.dstl";

/* Fail the test unless `dir` holds no "*.tmp.*" file. */
static void no_temp_files(const char *dir, long n)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".tmp.")) {
            fprintf(stderr, "n = %ld: temporary file '%s' left behind\n", n, e->d_name);
            fail();
        }
    }
    closedir(d);
}

/* conv(width) -> bn -> relu -> pool -> flat -> fc (4 classes), on (1, 8, 8). */
static int small_model(distill_model **out, int width)
{
    int64_t in[3] = {1, 8, 8};
    distill_conv2d_options c;
    distill_conv2d_options_init(&c, DISTILL_CONV2D_OPTIONS_VERSION);
    c.kernel_h = c.kernel_w = 3;
    c.pad_h = c.pad_w = 1;
    distill_model *m = NULL;
    int rc = distill_model_create(&m, "input", 3, in);
    if (!rc)
        rc = distill_model_add_conv2d(m, "conv1", "input", width, &c);
    if (!rc)
        rc = distill_model_add_batchnorm(m, "bn1", "conv1", 1e-5f, 0.1f);
    if (!rc)
        rc = distill_model_add_relu(m, "relu1", "bn1");
    if (!rc)
        rc = distill_model_add_global_avgpool(m, "pool", "relu1");
    if (!rc)
        rc = distill_model_add_flatten(m, "flat", "pool");
    if (!rc)
        rc = distill_model_add_linear(m, "fc", "flat", 4, 1);
    if (!rc)
        rc = distill_model_init_weights(m, DISTILL_INIT_DEFAULT, 11);
    if (rc) {
        distill_model_free(m);
        m = NULL;
    }
    *out = m;
    return rc;
}

/* Metadata of every kind on a 1-channel, 4-class model. */
static int describe(distill_model *m)
{
    static const char *const names[4] = {"a", "b", "c", "d"};
    const float mean = 0.25f, std = 0.5f;
    int rc = distill_model_set_normalization(m, 1, &mean, &std);
    if (!rc)
        rc = distill_model_set_class_names(m, 4, names);
    if (!rc)
        rc = distill_model_set_metadata(m, DISTILL_META_DATA_SHAPE, "1,8,8");
    if (!rc)
        rc = distill_model_set_metadata(m, "host.note", "kept");
    return rc;
}

/* The distillation path; returns how it ended. */
static outcome run_distill(void)
{
    outcome o = {0};
    distill_model *student = NULL, *tmodel = NULL, *loaded = NULL;
    distill_teacher *teacher = NULL;
    distill_trainer *tr = NULL;
    distill_loss *kd = NULL;
    distill_tensor *x = NULL;
    int32_t y[4] = {0, 1, 2, 3};
    int64_t xd[4] = {4, 1, 8, 8};

    distill_zoo_options z;
    distill_zoo_options_init(&z, DISTILL_ZOO_OPTIONS_VERSION);
    z.height = z.width = 8;
    z.classes = 4;
    z.width_mult_pct = 25;
    z.seed = 3;
    distill_trainer_options to;
    distill_trainer_options_init(&to, DISTILL_TRAINER_OPTIONS_VERSION);
    to.batch_size = 4;
    to.prefetch = 0;

    if (STEP(&o, distill_zoo_create(&student, "resnet8", &z)) &&
        STEP(&o, small_model(&tmodel, 6)) &&
        STEP(&o, distill_teacher_from_model(&teacher, tmodel)) &&
        STEP(&o, distill_trainer_create(&tr, student, teacher, &to)) &&
        STEP(&o, distill_loss_kd(&kd, 4.0f, 0.9f))) {
        distill_loss *give = kd;
        kd = NULL; /* the trainer owns it now, also on failure */
        STEP(&o, distill_trainer_add_loss(tr, give, 1.0f));
    }
    if (!o.rc && STEP(&o, distill_tensor_create(&x, 4, xd))) {
        float *p = distill_tensor_data(x);
        for (int i = 0; i < 4 * 64; i++)
            p[i] = (float)((i * 29) % 17) / 16.0f;
    }
    double loss = 0;
    if (!o.rc && STEP(&o, distill_trainer_step(tr, x, y, &loss)) && STEP(&o, describe(student)) &&
        STEP(&o, distill_model_save(student, MODEL_PATH)))
        STEP(&o, distill_model_load(&loaded, MODEL_PATH));

    distill_model_free(loaded);
    distill_tensor_free(x);
    distill_loss_free(kd);
    distill_trainer_free(tr);
    distill_teacher_free(teacher);
    distill_model_free(tmodel);
    distill_model_free(student);
    return o;
}

/* Training with feature distillation: an in-memory dataset, KD and a
 * FitNets term whose adapter the trainer makes, fit (with the prefetch
 * thread and a validation pass), a checkpoint saved and loaded, and an
 * evaluation with teacher agreement. */
static const char *const CKPT_PATH = "alloc_fail.ckpt";

static outcome run_train(void)
{
    outcome o = {0};
    distill_model *student = NULL, *tmodel = NULL;
    distill_teacher *teacher = NULL;
    distill_trainer *tr = NULL;
    distill_loss *kd = NULL, *fit = NULL;
    distill_dataset *ds = NULL;
    float img[8 * 64];
    int32_t lab[8];
    for (int i = 0; i < 8 * 64; i++)
        img[i] = (float)((i * 13) % 7) / 6.0f;
    for (int i = 0; i < 8; i++)
        lab[i] = i % 4;
    int64_t dims[3] = {1, 8, 8};
    distill_trainer_options to;
    distill_trainer_options_init(&to, DISTILL_TRAINER_OPTIONS_VERSION);
    to.batch_size = 4;
    to.epochs = 1;
    to.prefetch = 1;
    distill_eval_options eo;
    distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION);
    eo.batch_size = 8;
    distill_eval_result res = DISTILL_EVAL_RESULT_INIT;

    if (STEP(&o, distill_dataset_from_memory(&ds, 8, dims, img, lab, 4, DISTILL_MEMORY_COPY)) &&
        STEP(&o, small_model(&tmodel, 6)) && STEP(&o, small_model(&student, 4)) &&
        STEP(&o, distill_teacher_from_model(&teacher, tmodel)) &&
        STEP(&o, distill_trainer_create(&tr, student, teacher, &to)) &&
        STEP(&o, distill_loss_kd(&kd, 4.0f, 0.9f))) {
        distill_loss *give = kd;
        kd = NULL;
        STEP(&o, distill_trainer_add_loss(tr, give, 1.0f));
    }
    /* student relu1 (4, 8, 8) -> teacher relu1 (6, 8, 8): a 1x1 conv adapter */
    if (!o.rc && STEP(&o, distill_loss_fitnets(&fit, "relu1", "relu1"))) {
        distill_loss *give = fit;
        fit = NULL;
        STEP(&o, distill_trainer_add_loss(tr, give, 0.5f));
    }
    eo.agreement = teacher;
    if (!o.rc && STEP(&o, distill_trainer_fit(tr, ds, ds)) &&
        STEP(&o, distill_trainer_save_checkpoint(tr, CKPT_PATH)) &&
        STEP(&o, distill_trainer_load_checkpoint(tr, CKPT_PATH)))
        STEP(&o, distill_evaluate(student, ds, &eo, &res));

    distill_loss_free(kd);
    distill_loss_free(fit);
    distill_trainer_free(tr);
    distill_teacher_free(teacher);
    distill_model_free(tmodel);
    distill_model_free(student);
    distill_dataset_free(ds);
    return o;
}

/* Mutual learning: two students (the first with a FitNets term added
 * before a trainer takes it, so its adapter is made then), a teacher, a
 * step, and a checkpoint of both saved and loaded. */
static const char *const MUTUAL_CKPT_PATH = "alloc_fail_mutual.ckpt";

static outcome run_mutual(void)
{
    outcome o = {0};
    distill_model *m[2] = {NULL, NULL}, *tmodel = NULL;
    distill_student *s[2] = {NULL, NULL};
    distill_teacher *teacher = NULL;
    distill_trainer *tr = NULL;
    distill_loss *fit = NULL;
    distill_tensor *x = NULL;
    int32_t y[4] = {0, 1, 2, 3};
    int64_t xd[4] = {4, 1, 8, 8};
    distill_trainer_options to;
    distill_trainer_options_init(&to, DISTILL_TRAINER_OPTIONS_VERSION);
    to.batch_size = 4;
    to.prefetch = 0;

    if (STEP(&o, small_model(&m[0], 4)) && STEP(&o, small_model(&m[1], 5)) &&
        STEP(&o, small_model(&tmodel, 6)) &&
        STEP(&o, distill_teacher_from_model(&teacher, tmodel)) &&
        STEP(&o, distill_student_create(&s[0], m[0])) &&
        STEP(&o, distill_student_create(&s[1], m[1])) &&
        STEP(&o, distill_loss_fitnets(&fit, "relu1", "relu1"))) {
        distill_loss *give = fit;
        fit = NULL; /* the student owns it now, also on failure */
        STEP(&o, distill_student_add_loss(s[0], give, 0.5f));
    }
    if (!o.rc && STEP(&o, distill_trainer_create_students(&tr, 2, s, teacher, &to, NULL)) &&
        STEP(&o, distill_tensor_create(&x, 4, xd))) {
        float *p = distill_tensor_data(x);
        for (int i = 0; i < 4 * 64; i++)
            p[i] = (float)((i * 29) % 17) / 16.0f;
    }
    if (!o.rc && STEP(&o, distill_trainer_step(tr, x, y, NULL)) &&
        STEP(&o, distill_trainer_save_checkpoint(tr, MUTUAL_CKPT_PATH)))
        STEP(&o, distill_trainer_load_checkpoint(tr, MUTUAL_CKPT_PATH));

    distill_tensor_free(x);
    distill_loss_free(fit);
    distill_trainer_free(tr);
    for (int k = 0; k < 2; k++) {
        distill_student_free(s[k]);
        distill_model_free(m[k]);
    }
    distill_teacher_free(teacher);
    distill_model_free(tmodel);
    return o;
}

/* The gzip IDX path. */
static outcome run_idx(void)
{
    outcome o = {0};
    distill_dataset *ds = NULL;
    distill_loader *ld = NULL;
    distill_tensor *x = NULL;
    int32_t y[3];
    int64_t xd[4] = {3, 1, 5, 4};
    distill_loader_options lo;
    distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION);
    lo.batch_size = 3;
    lo.prefetch = 1;
    int n = 0;
    if (STEP(&o, distill_dataset_from_idx(&ds, "images.idx.gz", "labels.idx.gz", 0)) &&
        STEP(&o, distill_loader_create(&ld, ds, &lo)) && STEP(&o, distill_tensor_create(&x, 4, xd)))
        STEP(&o, distill_loader_next(ld, x, y, &n));
    distill_tensor_free(x);
    distill_loader_free(ld);
    distill_dataset_free(ds);
    return o;
}

static const char *const ONNX_PATH = "alloc_fail_model.onnx";

/* The ONNX path: export, import, one forward. */
static outcome run_onnx(void)
{
    outcome o = {0};
    distill_model *m = NULL, *r = NULL;
    distill_tensor *x = NULL, *y = NULL;
    int64_t xd[4] = {2, 1, 8, 8}, yd[2] = {2, 4};
    if (STEP(&o, small_model(&m, 4)) && STEP(&o, describe(m)) &&
        STEP(&o, distill_model_export_onnx(m, ONNX_PATH)) &&
        STEP(&o, distill_model_import_onnx(&r, ONNX_PATH)) &&
        STEP(&o, distill_tensor_create(&x, 4, xd)) && STEP(&o, distill_tensor_create(&y, 2, yd)))
        STEP(&o, distill_model_forward(r, x, DISTILL_MODE_INFERENCE, y));
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_model_free(r);
    distill_model_free(m);
    return o;
}

/* The PNG folder path. */
static outcome run_png(void)
{
    outcome o = {0};
    distill_dataset *ds = NULL;
    distill_folder_options fo;
    distill_folder_options_init(&fo, DISTILL_FOLDER_OPTIONS_VERSION);
    fo.channels = 1;
    fo.height = fo.width = 4;
    float img[16];
    int32_t label;
    if (STEP(&o, distill_dataset_from_folder(&ds, "pngs", &fo)))
        STEP(&o, distill_dataset_get(ds, 1, img, 16, &label));
    distill_dataset_free(ds);
    return o;
}

typedef outcome (*path_fn)(void);

/*
 * Run `path` with no failure to count its allocations, then once failing
 * each of them.  Every problem is printed; the test fails at the end if
 * there was any.  Prints a summary line.
 */
static void fail_each(const char *name, path_fn path)
{
    install(0);
    outcome o = path();
    if (o.rc)
        fprintf(stderr, "%s: %s failed without injection: %s\n", name, o.call, o.msg);
    assert_int_equal(o.rc, DISTILL_OK);
    long total = ca.calls;
    assert_int_equal(ca.live, 0);
    assert_true(total > 0);

    long enomem = 0, absorbed = 0, problems = 0;
    for (long n = 1; n <= total + 1; n++) {
        long live_before = ca.live;
        size_t lib_before = util_live_blocks();
        prefix *newest = ca.head.next;
        rearm(n);
        o = path();
        if (o.rc != DISTILL_OK && o.rc != DISTILL_ENOMEM) {
            fprintf(stderr, "%s: n = %ld of %ld: %s returned %d (%s), not DISTILL_ENOMEM: %s\n",
                    name, n, total, o.call, o.rc, distill_strerror(o.rc), o.msg);
            problems++;
        }
        if (o.rc == DISTILL_ENOMEM) {
            if (!ca.failed) {
                fprintf(stderr, "%s: n = %ld: %s reported DISTILL_ENOMEM but no allocation "
                                "failed\n", name, n, o.call);
                problems++;
            }
            if (!o.msg[0]) {
                fprintf(stderr, "%s: n = %ld: %s failed without a message\n", name, n, o.call);
                problems++;
            }
            enomem++;
        } else if (o.rc == DISTILL_OK && ca.failed) {
            absorbed++;
            if (getenv("ALLOC_FAIL_VERBOSE"))
                fprintf(stderr, "%s: n = %ld: the failure was absorbed\n", name, n);
        }
        if (ca.live != live_before || util_live_blocks() != lib_before) {
            fprintf(stderr, "%s: n = %ld of %ld (%s %s): %ld blocks leaked (library count %zu)\n",
                    name, n, total, o.rc ? "failed in" : "after", o.rc ? o.call : "success",
                    ca.live - live_before, util_live_blocks() - lib_before);
            print_leaks(newest);
            problems++;
        }
        no_temp_files(".", n);
        if (n > total && ca.failed) {
            fprintf(stderr, "%s: the path made more allocations than the first time\n", name);
            problems++;
        }
    }
    printf("%s: %ld allocations; %ld runs ended in DISTILL_ENOMEM, %ld absorbed the failure\n",
           name, total, enomem, absorbed);
    assert_int_equal(problems, 0);
    uninstall();
}

/* ------------------------------------------------------------ fixtures */

static void write_gz(const char *path, const unsigned char *head, size_t nh,
                     const unsigned char *data, size_t nd)
{
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, head, (unsigned)nh), (int)nh);
    assert_int_equal(gzwrite(gz, data, (unsigned)nd), (int)nd);
    assert_int_equal(gzclose(gz), Z_OK);
}

static void write_png(const char *path, int w, int h, int seed)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    assert_non_null(png);
    png_infop info = png_create_info_struct(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png)))
        fail();
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    unsigned char row[3 * 16];
    for (int yy = 0; yy < h; yy++) {
        for (int i = 0; i < 3 * w; i++)
            row[i] = (unsigned char)(seed * 31 + yy * 17 + i * 7);
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
}

static int setup_files(void **state)
{
    (void)state;
    /* 3 images of 5 x 4 and their labels, gzip-compressed. */
    unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 4};
    unsigned char lh[8] = {0, 0, 8, 1, 0, 0, 0, 3};
    unsigned char pix[60], lab[3] = {2, 0, 1};
    for (int i = 0; i < 60; i++)
        pix[i] = (unsigned char)(i * 13);
    write_gz("images.idx.gz", ih, sizeof ih, pix, sizeof pix);
    write_gz("labels.idx.gz", lh, sizeof lh, lab, sizeof lab);
    /* Two classes of PNGs, one of them of another size (resized). */
    mkdir("pngs", 0755);
    mkdir("pngs/a", 0755);
    mkdir("pngs/b", 0755);
    write_png("pngs/a/1.png", 4, 4, 1);
    write_png("pngs/b/2.png", 6, 5, 2);
    distill_set_num_threads(1); /* one order of allocations */
    return 0;
}

/* ---------------------------------------------------------------- tests */

static void test_set_allocator_rules(void **state)
{
    (void)state;
    distill_allocator a = {DISTILL_ALLOCATOR_VERSION, c_alloc, c_free, &ca};
    a.version = DISTILL_ALLOCATOR_VERSION + 8;
    assert_int_equal(distill_set_allocator(&a), DISTILL_EVERSION);
    a.version = DISTILL_ALLOCATOR_VERSION;
    a.alloc = NULL;
    assert_int_equal(distill_set_allocator(&a), DISTILL_EINVAL);
    a.alloc = c_alloc;
    a.free = NULL;
    assert_int_equal(distill_set_allocator(&a), DISTILL_EINVAL);
    a.free = c_free;

    /* While a handle is alive the allocator cannot change, either way. */
    distill_tensor *t;
    int64_t d[1] = {5};
    OK(distill_tensor_create(&t, 1, d));
    assert_int_equal(distill_set_allocator(&a), DISTILL_ESTATE);
    assert_non_null(strstr(distill_last_error(), "still allocated"));
    distill_tensor_free(t);

    install(0);
    OK(distill_tensor_create(&t, 1, d));
    assert_true(ca.live > 0);
    assert_int_equal(distill_set_allocator(NULL), DISTILL_ESTATE);
    distill_tensor_free(t);
    assert_int_equal(ca.live, 0);
    uninstall();
    OK(distill_set_allocator(NULL)); /* restoring twice is fine */
}

static void test_host_blocks(void **state)
{
    (void)state;
    install(0);
    /* Alignment, zero sizes, calloc zeroing, realloc keeping contents. */
    unsigned char *a = xmalloc(0), *b = xmalloc(1);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_int_equal((uintptr_t)a % 16, 0);
    int *z = xcalloc(100, sizeof *z);
    assert_non_null(z);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(z[i], 0);
        z[i] = i;
    }
    z = xrealloc(z, 1000 * sizeof *z);
    assert_non_null(z);
    for (int i = 0; i < 100; i++)
        assert_int_equal(z[i], i);
    z = xrealloc(z, 10 * sizeof *z);
    assert_non_null(z);
    for (int i = 0; i < 10; i++)
        assert_int_equal(z[i], i);
    float *f = xmalloc_aligned(1000);
    assert_non_null(f);
    assert_int_equal((uintptr_t)f % 64, 0);
    f[249] = 1.0f;
    f = xrealloc(f, 5000); /* keeps the 64-byte alignment */
    assert_non_null(f);
    assert_int_equal((uintptr_t)f % 64, 0);
    assert_true(f[249] == 1.0f);
    assert_int_equal(ca.max_align, 64);
    /* Failures: huge sizes never reach the host; a failed realloc keeps the block. */
    long calls = ca.calls;
    assert_null(xmalloc(SIZE_MAX));
    assert_null(xcalloc(SIZE_MAX / 2, 4));
    assert_int_equal(ca.calls, calls);
    assert_int_equal(util_last_status(), DISTILL_ENOMEM);
    ca.fail_at = ca.calls + 1;
    assert_null(xrealloc(z, 4096));
    assert_int_equal(z[9], 9);
    assert_int_equal(util_last_status(), DISTILL_ENOMEM);
    assert_int_equal(util_live_blocks(), 4);
    xfree(a);
    xfree(b);
    xfree(z);
    xfree_aligned(f);
    xfree(NULL);
    xfree_aligned(NULL);
    assert_int_equal(ca.live, 0);
    uninstall();
}

/* zlib's and libpng's memory comes through the hook too. */
static void test_third_party_memory(void **state)
{
    (void)state;
    install(0);
    distill_dataset *ds;
    OK(distill_dataset_from_idx(&ds, "images.idx.gz", NULL, 0));
    distill_dataset_free(ds);
    long gz_calls = ca.calls;
    assert_int_equal(ca.live, 0);
    uninstall();

    /* The same images uncompressed: zlib's inflate state and window are
     * the (at least) two allocations the gzip load makes on top. */
    gzFile in = gzopen("images.idx.gz", "rb");
    assert_non_null(in);
    unsigned char raw[76];
    assert_int_equal(gzread(in, raw, sizeof raw), (int)sizeof raw);
    gzclose(in);
    FILE *f = fopen("images.idx", "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(raw, 1, sizeof raw, f), sizeof raw);
    fclose(f);
    install(0);
    OK(distill_dataset_from_idx(&ds, "images.idx", NULL, 0));
    distill_dataset_free(ds);
    long raw_calls = ca.calls;
    uninstall();
    assert_true(gz_calls >= raw_calls + 2);

    /* libpng allocates its read structures through the hook. */
    install(0);
    distill_folder_options fo;
    distill_folder_options_init(&fo, DISTILL_FOLDER_OPTIONS_VERSION);
    OK(distill_dataset_from_folder(&ds, "pngs", &fo));
    distill_dataset_free(ds);
    long png_calls = ca.calls;
    assert_int_equal(ca.live, 0);
    uninstall();
    assert_true(png_calls > 10);
}

static void test_fail_distill_path(void **state)
{
    (void)state;
    fail_each("distill (resnet8 + KD + step + save + load)", run_distill);
    unlink(MODEL_PATH);
}

static void test_fail_train_path(void **state)
{
    (void)state;
    fail_each("training (KD + FitNets, fit, checkpoint, evaluate)", run_train);
    unlink(CKPT_PATH);
}

static void test_fail_mutual_path(void **state)
{
    (void)state;
    fail_each("mutual (two students, teacher, FitNets, step, checkpoint)", run_mutual);
    unlink(MUTUAL_CKPT_PATH);
}

static void test_fail_idx_path(void **state)
{
    (void)state;
    fail_each("IDX gzip + loader", run_idx);
}

static void test_fail_png_path(void **state)
{
    (void)state;
    fail_each("PNG folder", run_png);
}

static void test_fail_onnx_path(void **state)
{
    (void)state;
    if (!distill_onnx_available())
        skip();
    fail_each("ONNX (export, import, forward)", run_onnx);
    unlink(ONNX_PATH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_allocator_rules),
        cmocka_unit_test(test_host_blocks),
        cmocka_unit_test(test_third_party_memory),
        cmocka_unit_test(test_fail_idx_path),
        cmocka_unit_test(test_fail_png_path),
        cmocka_unit_test(test_fail_onnx_path),
        cmocka_unit_test(test_fail_distill_path),
        cmocka_unit_test(test_fail_train_path),
        cmocka_unit_test(test_fail_mutual_path),
    };
    return cmocka_run_group_tests(tests, setup_files, NULL);
}

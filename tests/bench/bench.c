/*
 * distill-bench - the benchmark cases of BENCHMARKS.md, one JSON line each:
 *
 *   {"case": "kd_step", "value": 412.7, "unit": "images/s", "threads": 2, "batch": 128, ...}
 *
 * usage: distill-bench [CASE...]   (no argument: every case that is not e2e)
 * cases: kd_step kd_step_cached teacher_infer student_latency_bs1 teacher_train_step
 *        kd_step_rgb64 student_train_step_rgb64 teacher_infer_rgb64
 *        student_latency_bs1_rgb64   (torchvision's ResNet-18 -> MobileNetV2, 3x64x64)
 *        e2e_teacher e2e_student_ce e2e_student_kd e2e_student_ce_6k
 *        e2e_student_kd_unlabelled
 *        loader_jpeg64               (JPEG_DIR, a folder of class folders; not run by default)
 *        model_infer                 (MODEL, a .dstl or .onnx file; BATCH; not run by default)
 * env:   THREADS (2), STEPS (50), EPOCHS (3), SEED (0),
 *        FASHION_MNIST_DIR (/usr/share/datasets/fashion-mnist), OUT_DIR (/tmp),
 *        MODEL and BATCH (1) for model_infer (UNFROZEN set: without
 *        distill_model_freeze, weights prepared on every forward),
 *        JPEG_DIR, STREAM (1) and LOAD_SIZE (72) for loader_jpeg64
 * Progress goes to stderr only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <distill.h>
#include <distill/data.h>
#include <distill/loss.h>
#include <distill/onnx.h>
#include <distill/optim.h>
#include <distill/trainer.h>

#define BATCH 128
static const float MEAN = 0.2860f, STD = 0.3530f;

static int g_threads, g_steps, g_epochs;
static uint64_t g_seed;
static const char *g_out;

#define CHECK(call)                                                                        \
    do {                                                                                   \
        int rc_ = (call);                                                                  \
        if (rc_ != DISTILL_OK) {                                                           \
            fprintf(stderr, "distill-bench: %s failed: %s (%s)\n", #call,                  \
                    distill_strerror(rc_), distill_last_error());                          \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double max_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static void emit(const char *name, double value, const char *unit, int batch, const char *extra)
{
    printf("{\"case\": \"%s\", \"value\": %.4f, \"unit\": \"%s\", \"threads\": %d, \"batch\": %d, "
           "\"max_rss_mb\": %.1f%s%s}\n",
           name, value, unit, g_threads, batch, max_rss_mb(), extra && *extra ? ", " : "",
           extra ? extra : "");
    fflush(stdout);
}

static distill_model *zoo(const char *name)
{
    distill_zoo_options o;
    distill_zoo_options_init(&o, DISTILL_ZOO_OPTIONS_VERSION);
    o.seed = g_seed;
    distill_model *m;
    CHECK(distill_zoo_create(&m, name, &o));
    return m;
}

static distill_dataset *fashion(int train)
{
    distill_dataset *d;
    CHECK(distill_dataset_fashion_mnist(&d, NULL, train));
    return d;
}

/* The peer's batches(): window i of the training set, normalized. */
static void window(const distill_dataset *d, int64_t i, distill_tensor *x, int32_t *y)
{
    int64_t n = distill_dataset_size(d), b = distill_tensor_dim(x, 0);
    int64_t start = (i * b) % (n - b);
    float *p = distill_tensor_data(x);
    for (int64_t k = 0; k < b; k++) {
        CHECK(distill_dataset_get(d, start + k, p + k * 784, 784, y ? &y[k] : NULL));
        for (int j = 0; j < 784; j++)
            p[k * 784 + j] = (p[k * 784 + j] - MEAN) / STD;
    }
}

static distill_tensor *batch_tensor(int64_t n)
{
    int64_t d[4] = {n, 1, 28, 28};
    distill_tensor *t;
    CHECK(distill_tensor_create(&t, 4, d));
    return t;
}

static distill_trainer *make_trainer_batch(distill_model *student, distill_teacher *teacher,
                                          double lr, int batch)
{
    distill_trainer_options o;
    distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION);
    o.lr = lr;
    o.schedule = DISTILL_SCHEDULE_CONSTANT;
    o.batch_size = batch;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, student, teacher, &o));
    distill_loss *l;
    if (teacher)
        CHECK(distill_loss_kd(&l, 4.0f, 0.9f));
    else
        CHECK(distill_loss_cross_entropy(&l, 0.0f));
    CHECK(distill_trainer_add_loss(tr, l, 1.0f));
    return tr;
}

static distill_trainer *make_trainer(distill_model *student, distill_teacher *teacher, double lr)
{
    return make_trainer_batch(student, teacher, lr, BATCH);
}

/* Time `g_steps` trainer steps after 5 warm-up steps. */
static double time_steps(distill_trainer *tr, const distill_dataset *d)
{
    distill_tensor *x = batch_tensor(BATCH);
    int32_t y[BATCH];
    double t0 = 0;
    for (int i = 0; i < 5 + g_steps; i++) {
        window(d, i, x, y);
        if (i == 5)
            t0 = now();
        CHECK(distill_trainer_step(tr, x, y, NULL));
    }
    double dt = now() - t0;
    distill_tensor_free(x);
    return dt;
}

static void case_kd_step(void)
{
    distill_dataset *d = fashion(1);
    distill_model *t = zoo("resnet20"), *s = zoo("resnet8");
    distill_teacher *te;
    CHECK(distill_teacher_from_model(&te, t));
    distill_trainer *tr = make_trainer(s, te, 0.05);
    double dt = time_steps(tr, d);
    double ips = g_steps * BATCH / dt;
    char extra[128];
    snprintf(extra, sizeof extra, "\"gflops\": %.1f",
             ips * 2.0 * (double)(distill_model_macs(t) + 3 * distill_model_macs(s)) / 1e9);
    emit("kd_step", ips, "images/s", BATCH, extra);
    distill_trainer_free(tr);
    distill_teacher_free(te);
    distill_model_free(t);
    distill_model_free(s);
    distill_dataset_free(d);
}

static int mark_warm(const distill_progress *p, void *payload)
{
    if (p->step == 5 && !p->end_of_epoch)
        *(double *)payload = now();
    return 0;
}

/* kd_step with the teacher's logits read from a cache made beforehand (not
 * timed) for the samples the steps use; the kd_step batches are not
 * augmented, so each sample has one view.  Runs through distill_trainer_fit,
 * which looks up each batch's views. */
static void case_kd_step_cached(void)
{
    distill_dataset *all = fashion(1), *d;
    CHECK(distill_dataset_subset(&d, all, 0, (int64_t)(5 + g_steps) * BATCH));
    distill_model *t = zoo("resnet20"), *s = zoo("resnet8");
    distill_teacher *te, *ct;
    CHECK(distill_teacher_from_model(&te, t));
    distill_cache_options co;
    distill_cache_options_init(&co, DISTILL_CACHE_OPTIONS_VERSION);
    co.norm_count = 1;
    co.mean[0] = MEAN;
    co.std[0] = STD;
    char path[1024];
    snprintf(path, sizeof path, "%s/distill_bench_kd.cache", g_out);
    CHECK(distill_teacher_cache_build(te, d, &co, path));
    CHECK(distill_teacher_from_cache(&ct, path));
    distill_trainer_options o;
    distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION);
    o.lr = 0.05;
    o.schedule = DISTILL_SCHEDULE_CONSTANT;
    o.batch_size = BATCH;
    o.norm_count = 1;
    o.mean[0] = MEAN;
    o.std[0] = STD;
    /* one fit of 5 + STEPS steps; the clock starts when the progress
     * callback reports step 5, so the warm-up (plan building, first
     * touches) is not timed, as in kd_step */
    o.max_steps = 5 + g_steps;
    o.progress = mark_warm;
    o.progress_every = 5;
    double t0 = 0;
    o.progress_payload = &t0;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, s, ct, &o));
    distill_loss *l;
    CHECK(distill_loss_kd(&l, 4.0f, 0.9f));
    CHECK(distill_trainer_add_loss(tr, l, 1.0f));
    CHECK(distill_trainer_fit(tr, d, NULL));
    if (t0 == 0) {
        fprintf(stderr, "distill-bench: kd_step_cached: no progress report at step 5\n");
        exit(1);
    }
    double ips = g_steps * BATCH / (now() - t0);
    char extra[128];
    snprintf(extra, sizeof extra, "\"gflops\": %.1f",
             ips * 2.0 * 3.0 * (double)distill_model_macs(s) / 1e9);
    emit("kd_step_cached", ips, "images/s", BATCH, extra);
    remove(path);
    distill_trainer_free(tr);
    distill_teacher_free(ct);
    distill_teacher_free(te);
    distill_model_free(t);
    distill_model_free(s);
    distill_dataset_free(d);
    distill_dataset_free(all);
}

static void case_teacher_train_step(void)
{
    distill_dataset *d = fashion(1);
    distill_model *t = zoo("resnet20");
    distill_trainer *tr = make_trainer(t, NULL, 0.1);
    double dt = time_steps(tr, d);
    double ips = g_steps * BATCH / dt;
    char extra[128];
    snprintf(extra, sizeof extra, "\"gflops\": %.1f",
             ips * 2.0 * 3.0 * (double)distill_model_macs(t) / 1e9);
    emit("teacher_train_step", ips, "images/s", BATCH, extra);
    distill_trainer_free(tr);
    distill_model_free(t);
    distill_dataset_free(d);
}

static void case_teacher_infer(void)
{
    distill_dataset *d = fashion(1);
    distill_model *t = zoo("resnet20");
    CHECK(distill_model_freeze(t, 1)); /* as a teacher's copy is */
    distill_tensor *x = batch_tensor(BATCH), *y;
    int64_t yd[2] = {BATCH, 10};
    CHECK(distill_tensor_create(&y, 2, yd));
    double t0 = 0;
    for (int i = 0; i < 5 + g_steps; i++) {
        window(d, i, x, NULL);
        if (i == 5)
            t0 = now();
        CHECK(distill_model_forward(t, x, DISTILL_MODE_INFERENCE, y));
    }
    double ips = g_steps * BATCH / (now() - t0);
    char extra[128];
    snprintf(extra, sizeof extra, "\"gflops\": %.1f",
             ips * 2.0 * (double)distill_model_macs(t) / 1e9);
    emit("teacher_infer", ips, "images/s", BATCH, extra);
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_model_free(t);
    distill_dataset_free(d);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void case_student_latency_bs1(void)
{
    distill_dataset *d = fashion(1);
    distill_model *s = zoo("resnet8");
    CHECK(distill_model_freeze(s, 1)); /* deployed: weights fixed */
    distill_tensor *x = batch_tensor(1), *y;
    int64_t yd[2] = {1, 10};
    CHECK(distill_tensor_create(&y, 2, yd));
    int n = 20 * g_steps;
    double *lat = malloc((size_t)n * sizeof *lat);
    if (!lat)
        exit(1);
    for (int i = 0; i < 50 + n; i++) {
        window(d, i, x, NULL);
        double t0 = now();
        CHECK(distill_model_forward(s, x, DISTILL_MODE_INFERENCE, y));
        if (i >= 50)
            lat[i - 50] = now() - t0;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    emit("student_latency_bs1", lat[n / 2] * 1e6, "us", 1, NULL);
    free(lat);
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_model_free(s);
    distill_dataset_free(d);
}

/* ------------------------------------------------------ RGB 3x64x64 */

/* torchvision's ResNet-18 teacher and MobileNetV2 student at 3x64x64 for 10
 * classes, batch 64, on a fixed random batch (the models are timed, not
 * the data), as the peer's *_rgb64 cases: 2 warm-up steps, then STEPS. */
#define RGB_BATCH 64
#define RGB_SIZE 64

static distill_model *rgb_model(const char *name)
{
    distill_zoo_options o;
    distill_zoo_options_init(&o, DISTILL_ZOO_OPTIONS_VERSION);
    o.in_channels = 3;
    o.height = o.width = RGB_SIZE;
    o.classes = 10;
    o.init = DISTILL_INIT_KAIMING_NORMAL; /* torchvision's conv init */
    o.seed = g_seed;
    distill_model *m;
    CHECK(distill_zoo_create(&m, name, &o));
    return m;
}

/* Fill t with N(0, 1) values from a fixed xorshift generator (Box-Muller). */
static void fill_normal(distill_tensor *t, uint64_t seed)
{
    uint64_t st = seed * 0x9E3779B97F4A7C15ull + 1;
    float *p = distill_tensor_data(t);
    int64_t n = distill_tensor_numel(t);
    for (int64_t i = 0; i < n; i += 2) {
        double u[2];
        for (int k = 0; k < 2; k++) {
            st ^= st << 13, st ^= st >> 7, st ^= st << 17;
            u[k] = ((double)(st >> 11) + 0.5) / 9007199254740992.0;
        }
        double r = sqrt(-2.0 * log(u[0])), a = 6.283185307179586 * u[1];
        p[i] = (float)(r * cos(a));
        if (i + 1 < n)
            p[i + 1] = (float)(r * sin(a));
    }
}

static distill_tensor *rgb_batch(int64_t n, int32_t *labels)
{
    int64_t d[4] = {n, 3, RGB_SIZE, RGB_SIZE};
    distill_tensor *t;
    CHECK(distill_tensor_create(&t, 4, d));
    fill_normal(t, g_seed + 1);
    for (int64_t i = 0; labels && i < n; i++)
        labels[i] = (int32_t)((i * 7 + 3) % 10);
    return t;
}

/* Time STEPS trainer steps on one fixed batch after 2 warm-up steps. */
static double time_rgb_steps(distill_trainer *tr)
{
    int32_t y[RGB_BATCH];
    distill_tensor *x = rgb_batch(RGB_BATCH, y);
    double t0 = 0;
    for (int i = 0; i < 2 + g_steps; i++) {
        if (i == 2)
            t0 = now();
        CHECK(distill_trainer_step(tr, x, y, NULL));
    }
    double dt = now() - t0;
    distill_tensor_free(x);
    return dt;
}

static void case_kd_step_rgb64(void)
{
    distill_model *t = rgb_model("resnet18"), *s = rgb_model("mobilenet_v2");
    distill_teacher *te;
    CHECK(distill_teacher_from_model(&te, t));
    distill_trainer *tr = make_trainer_batch(s, te, 0.05, RGB_BATCH);
    double ips = g_steps * RGB_BATCH / time_rgb_steps(tr);
    char extra[128];
    snprintf(extra, sizeof extra, "\"gflops\": %.1f",
             ips * 2.0 * (double)(distill_model_macs(t) + 3 * distill_model_macs(s)) / 1e9);
    emit("kd_step_rgb64", ips, "images/s", RGB_BATCH, extra);
    distill_trainer_free(tr);
    distill_teacher_free(te);
    distill_model_free(t);
    distill_model_free(s);
}

static void case_student_train_step_rgb64(void)
{
    distill_model *s = rgb_model("mobilenet_v2");
    distill_trainer *tr = make_trainer_batch(s, NULL, 0.05, RGB_BATCH);
    double ips = g_steps * RGB_BATCH / time_rgb_steps(tr);
    char extra[128];
    snprintf(extra, sizeof extra, "\"gflops\": %.1f",
             ips * 2.0 * 3.0 * (double)distill_model_macs(s) / 1e9);
    emit("student_train_step_rgb64", ips, "images/s", RGB_BATCH, extra);
    distill_trainer_free(tr);
    distill_model_free(s);
}

static void case_teacher_infer_rgb64(void)
{
    distill_model *t = rgb_model("resnet18");
    CHECK(distill_model_freeze(t, 1));
    distill_tensor *x = rgb_batch(RGB_BATCH, NULL), *y;
    int64_t yd[2] = {RGB_BATCH, 10};
    CHECK(distill_tensor_create(&y, 2, yd));
    double t0 = 0;
    for (int i = 0; i < 2 + g_steps; i++) {
        if (i == 2)
            t0 = now();
        CHECK(distill_model_forward(t, x, DISTILL_MODE_INFERENCE, y));
    }
    double ips = g_steps * RGB_BATCH / (now() - t0);
    char extra[128];
    snprintf(extra, sizeof extra, "\"gflops\": %.1f",
             ips * 2.0 * (double)distill_model_macs(t) / 1e9);
    emit("teacher_infer_rgb64", ips, "images/s", RGB_BATCH, extra);
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_model_free(t);
}

static int cmp_double(const void *a, const void *b);
static long env_long(const char *name, long dflt);

/* Median of `n` timed forwards of model m on x (after `warm` untimed ones);
 * *total receives the summed time. */
static double median_forward(distill_model *m, const distill_tensor *x, distill_tensor *y,
                             int warm, int n, double *total)
{
    double *lat = malloc((size_t)n * sizeof *lat), sum = 0;
    if (!lat)
        exit(1);
    for (int i = 0; i < warm + n; i++) {
        double t0 = now();
        CHECK(distill_model_forward(m, x, DISTILL_MODE_INFERENCE, y));
        if (i >= warm)
            sum += lat[i - warm] = now() - t0;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    double med = lat[n / 2];
    free(lat);
    if (total)
        *total = sum;
    return med;
}

static void case_student_latency_bs1_rgb64(void)
{
    distill_model *s = rgb_model("mobilenet_v2");
    CHECK(distill_model_freeze(s, 1));
    distill_tensor *x = rgb_batch(1, NULL), *y;
    int64_t yd[2] = {1, 10};
    CHECK(distill_tensor_create(&y, 2, yd));
    double med = median_forward(s, x, y, 20, 10 * g_steps, NULL);
    emit("student_latency_bs1_rgb64", med * 1e6, "us", 1, NULL);
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_model_free(s);
}

/* ------------------------------------------------------ loader_jpeg64 */

/* Images/s delivered from the JPEG folder JPEG_DIR (one sub-folder per
 * class): decode, RandomResizedCrop to 64x64, flip, ImageNet normalization,
 * batch 64, THREADS worker threads, STEPS batches after 2 warm-up ones, as
 * the peer's ImageFolder + DataLoader.  Files are decoded every epoch, as
 * the peer decodes them (STREAM=1, the default: the folder is streamed);
 * STREAM=0 decodes them once at load and times the transforms alone.  Our
 * folder reader brings every image to LOAD_SIZE x LOAD_SIZE (default 72)
 * when it decodes it; the crop is taken from that. */
static void case_loader_jpeg64(void)
{
    const char *dir = getenv("JPEG_DIR");
    if (!dir || !*dir) {
        fprintf(stderr, "distill-bench: loader_jpeg64 needs JPEG_DIR (a folder of class folders)\n");
        exit(2);
    }
    int stream = (int)env_long("STREAM", 1), load = (int)env_long("LOAD_SIZE", 72);
    distill_folder_options fo;
    CHECK(distill_folder_options_init(&fo, DISTILL_FOLDER_OPTIONS_VERSION));
    fo.channels = 3;
    fo.height = fo.width = load;
    fo.memory_limit = stream ? 1 : -1;
    double t_load = now();
    distill_dataset *ds;
    CHECK(distill_dataset_from_folder(&ds, dir, &fo));
    t_load = now() - t_load;
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    distill_loader_options lo;
    CHECK(distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION));
    lo.batch_size = RGB_BATCH;
    lo.drop_last = 1;
    lo.seed = g_seed;
    lo.norm_count = 3;
    lo.mean = mean;
    lo.std = std;
    lo.hflip = 1;
    lo.random_resized_crop[0] = lo.random_resized_crop[1] = 64;
    lo.workers = g_threads;
    distill_loader *ld;
    CHECK(distill_loader_create(&ld, ds, &lo));
    int64_t dims[4] = {RGB_BATCH, 3, 64, 64};
    distill_tensor *x;
    CHECK(distill_tensor_create(&x, 4, dims));
    int32_t y[RGB_BATCH];
    int64_t n = 0;
    double t0 = 0;
    for (int i = 0; i < 2 + g_steps; i++) {
        int count;
        if (i == 2)
            t0 = now();
        CHECK(distill_loader_next(ld, x, y, &count));
        if (count == 0) { /* end of an epoch: the next call starts the next one */
            CHECK(distill_loader_next(ld, x, y, &count));
        }
        if (i >= 2)
            n += count;
    }
    double ips = (double)n / (now() - t0);
    char extra[160];
    snprintf(extra, sizeof extra, "\"files\": %lld, \"stream\": %d, \"load_s\": %.2f",
             (long long)distill_dataset_size(ds), stream, t_load);
    emit("loader_jpeg64", ips, "images/s", RGB_BATCH, extra);
    distill_tensor_free(x);
    distill_loader_free(ld);
    distill_dataset_free(ds);
}

/* ------------------------------------------------------- model_infer */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Inference of the model file MODEL (.onnx: imported; else a libdistill
 * model file) at batch BATCH on a fixed random input of the model's input
 * shape: 5 warm-up runs, then STEPS timed ones (10 * STEPS at batch 1).
 * value = images/s over the timed runs; "median_us" = the median run. */
static void case_model_infer(void)
{
    const char *path = getenv("MODEL");
    long batch = env_long("BATCH", 1);
    if (!path || !*path || batch < 1 || batch > (1 << 20)) {
        fprintf(stderr, "distill-bench: model_infer needs MODEL (a .dstl or .onnx file) and "
                        "BATCH >= 1\n");
        exit(2);
    }
    distill_model *m;
    if (ends_with(path, ".onnx"))
        CHECK(distill_model_import_onnx(&m, path));
    else
        CHECK(distill_model_load(&m, path));
    if (!getenv("UNFROZEN"))
        CHECK(distill_model_freeze(m, 1)); /* deployed: weights prepared once */
    distill_node_info in = DISTILL_NODE_INFO_INIT, out = DISTILL_NODE_INFO_INIT;
    CHECK(distill_model_node(m, 0, &in));
    CHECK(distill_model_find_node(m, distill_model_output_name(m), &out));
    int64_t xd[4] = {batch}, yd[4] = {batch};
    memcpy(xd + 1, in.dims, (size_t)in.rank * sizeof *xd);
    memcpy(yd + 1, out.dims, (size_t)out.rank * sizeof *yd);
    distill_tensor *x, *y;
    CHECK(distill_tensor_create(&x, in.rank + 1, xd));
    CHECK(distill_tensor_create(&y, out.rank + 1, yd));
    fill_normal(x, g_seed + 1);
    double total;
    int n = batch == 1 ? 10 * g_steps : g_steps;
    double med = median_forward(m, x, y, 5, n, &total);
    double ips = (double)n * (double)batch / total;
    char extra[1200], name[1024];
    size_t k = 0;
    for (const char *c = path; *c && k < sizeof name - 2; c++) {
        if (*c == '"' || *c == '\\')
            name[k++] = '\\';
        name[k++] = (*c >= 0 && *c < 0x20) ? '?' : *c;
    }
    name[k] = 0;
    snprintf(extra, sizeof extra, "\"median_us\": %.1f, \"gflops\": %.1f, \"model\": \"%s\"",
             med * 1e6, ips * 2.0 * (double)distill_model_macs(m) / 1e9, name);
    emit("model_infer", ips, "images/s", (int)batch, extra);
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_model_free(m);
}

/* ---------------------------------------------------------------- e2e */

static int progress(const distill_progress *p, void *payload)
{
    (void)payload;
    if (p->end_of_epoch)
        fprintf(stderr, "# epoch %d/%d test_acc %.4f loss %.4f %.0f img/s\n", p->epoch, p->epochs,
                p->val_accuracy, p->loss, p->images_per_sec);
    return 0;
}

/* The e2e recipe of BENCHMARKS.md; labelled = N trains on the first N
 * images for as many steps as EPOCHS over all of them. */
static double fit(distill_model *m, distill_teacher *t, int64_t labelled, float alpha,
                  int *epochs_out, double *secs)
{
    distill_dataset *train = fashion(1), *test = fashion(0);
    int epochs = g_epochs;
    if (labelled) {
        distill_dataset *sub;
        CHECK(distill_dataset_subset(&sub, train, 0, labelled));
        int64_t per_epoch_full = distill_dataset_size(train) / BATCH;
        epochs = (int)(epochs * (per_epoch_full * BATCH / labelled));
        distill_dataset_free(train);
        train = sub;
    }
    if (t && alpha >= 1.0f)
        CHECK(distill_dataset_drop_labels(train));
    distill_trainer_options o;
    distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION);
    o.epochs = epochs;
    o.batch_size = BATCH;
    o.lr = 0.1;
    o.seed = g_seed;
    o.crop_padding = 2;
    o.hflip = 1;
    o.norm_count = 1;
    o.mean[0] = MEAN;
    o.std[0] = STD;
    o.progress = progress;
    distill_trainer *tr;
    CHECK(distill_trainer_create(&tr, m, t, &o));
    distill_loss *l;
    if (t)
        CHECK(distill_loss_kd(&l, 4.0f, alpha));
    else
        CHECK(distill_loss_cross_entropy(&l, 0.0f));
    CHECK(distill_trainer_add_loss(tr, l, 1.0f));
    double t0 = now();
    CHECK(distill_trainer_fit(tr, train, test));
    *secs = now() - t0;
    distill_eval_options eo;
    distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION);
    eo.norm_count = 1;
    eo.mean[0] = MEAN;
    eo.std[0] = STD;
    distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
    CHECK(distill_evaluate(m, test, &eo, &r));
    *epochs_out = epochs;
    distill_trainer_free(tr);
    distill_dataset_free(train);
    distill_dataset_free(test);
    return r.top1;
}

static void teacher_path(char *buf, size_t size)
{
    snprintf(buf, size, "%s/distill_teacher_resnet20.dstl", g_out);
}

static void case_e2e_teacher(void)
{
    distill_model *m = zoo("resnet20");
    int epochs;
    double secs, acc = fit(m, NULL, 0, 0, &epochs, &secs);
    char path[1024], extra[128];
    teacher_path(path, sizeof path);
    CHECK(distill_model_save(m, path));
    snprintf(extra, sizeof extra, "\"epochs\": %d, \"seconds\": %.1f, \"seed\": %llu", epochs,
             secs, (unsigned long long)g_seed);
    emit("e2e_teacher", acc, "accuracy", BATCH, extra);
    distill_model_free(m);
}

static void case_e2e_student(const char *name, int kd, int64_t labelled, float alpha)
{
    distill_model *m = zoo("resnet8"), *tm = NULL;
    distill_teacher *t = NULL;
    if (kd) {
        char path[1024];
        teacher_path(path, sizeof path);
        CHECK(distill_model_load(&tm, path));
        CHECK(distill_teacher_from_model(&t, tm));
    }
    int epochs;
    double secs, acc = fit(m, t, labelled, alpha, &epochs, &secs);
    char extra[128];
    snprintf(extra, sizeof extra, "\"epochs\": %d, \"seconds\": %.1f, \"seed\": %llu", epochs,
             secs, (unsigned long long)g_seed);
    emit(name, acc, "accuracy", BATCH, extra);
    distill_teacher_free(t);
    distill_model_free(tm);
    distill_model_free(m);
}

static void e2e_student_ce(void) { case_e2e_student("e2e_student_ce", 0, 0, 0.9f); }
static void e2e_student_kd(void) { case_e2e_student("e2e_student_kd", 1, 0, 0.9f); }
static void e2e_student_ce_6k(void) { case_e2e_student("e2e_student_ce_6k", 0, 6000, 0.9f); }
static void e2e_student_kd_unlabelled(void)
{
    case_e2e_student("e2e_student_kd_unlabelled", 1, 0, 1.0f);
}

static const struct {
    const char *name;
    void (*fn)(void);
    int e2e; /* 1: an e2e case, 2: needs MODEL or JPEG_DIR; neither runs without arguments */
} cases[] = {
    {"kd_step", case_kd_step, 0},
    {"kd_step_cached", case_kd_step_cached, 0},
    {"teacher_infer", case_teacher_infer, 0},
    {"student_latency_bs1", case_student_latency_bs1, 0},
    {"teacher_train_step", case_teacher_train_step, 0},
    {"kd_step_rgb64", case_kd_step_rgb64, 0},
    {"student_train_step_rgb64", case_student_train_step_rgb64, 0},
    {"teacher_infer_rgb64", case_teacher_infer_rgb64, 0},
    {"student_latency_bs1_rgb64", case_student_latency_bs1_rgb64, 0},
    {"loader_jpeg64", case_loader_jpeg64, 2},
    {"model_infer", case_model_infer, 2},
    {"e2e_teacher", case_e2e_teacher, 1},
    {"e2e_student_ce", e2e_student_ce, 1},
    {"e2e_student_kd", e2e_student_kd, 1},
    {"e2e_student_ce_6k", e2e_student_ce_6k, 1},
    {"e2e_student_kd_unlabelled", e2e_student_kd_unlabelled, 1},
};
#define N_CASES (sizeof cases / sizeof cases[0])

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

int main(int argc, char **argv)
{
    g_threads = (int)env_long("THREADS", 2);
    g_steps = (int)env_long("STEPS", 50);
    g_epochs = (int)env_long("EPOCHS", 3);
    g_seed = (uint64_t)env_long("SEED", 0);
    g_out = getenv("OUT_DIR") && *getenv("OUT_DIR") ? getenv("OUT_DIR") : "/tmp";
    if (g_threads < 1 || g_steps < 1 || g_epochs < 1) {
        fprintf(stderr, "distill-bench: THREADS, STEPS and EPOCHS must be >= 1\n");
        return 2;
    }
    distill_set_num_threads(g_threads);
    for (int i = 1; i < argc; i++) {
        size_t k;
        for (k = 0; k < N_CASES; k++)
            if (strcmp(argv[i], cases[k].name) == 0)
                break;
        if (k == N_CASES) {
            fprintf(stderr, "distill-bench: unknown case '%s'; known:", argv[i]);
            for (k = 0; k < N_CASES; k++)
                fprintf(stderr, " %s", cases[k].name);
            fprintf(stderr, "\n");
            return 2;
        }
    }
    if (argc == 1) {
        for (size_t k = 0; k < N_CASES; k++)
            if (!cases[k].e2e)
                cases[k].fn();
        return 0;
    }
    for (int i = 1; i < argc; i++)
        for (size_t k = 0; k < N_CASES; k++)
            if (strcmp(argv[i], cases[k].name) == 0)
                cases[k].fn();
    return 0;
}

/*
 * cmd_train.c - `distill train`, `distill distill`, `distill mutual` and
 * `distill cache`.
 *
 * The first three build the same run (mutual: several students, each
 * with its own --out): training and validation data, a
 * student model, optionally teachers (models, or one teacher cache), loss
 * terms, then the trainer's fit.  The model file is written once, at the
 * end (atomically, by the library); a run stopped by an error writes
 * nothing.  --checkpoint writes the training state at each epoch's end and
 * every --checkpoint-every steps; SIGINT or SIGTERM writes it (to
 * --checkpoint, else OUT.ckpt) at the next step boundary and exits with
 * 130; --resume loads it after the trainer and its losses are made, so the
 * resumed fit continues the same run exactly.
 *
 * `distill cache` runs the teachers over the training data of such a run
 * through every augmentation view and stores their logits; it takes the
 * training data, augmentation and normalization from the same code as the
 * training run, so that the defaults of both commands match.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define DEFAULT_EPOCHS 3
#define DEFAULT_BATCH 128
#define DEFAULT_LR 0.1
#define DEFAULT_CACHE_BATCH 256
#define AUGMENT_CROP_PADDING 2 /* random crops of the 2-pixel zero-padded image */

typedef struct run {
    const cli_command *cmd;
    const cli_options *o;
    cli_data_spec data, val_spec;
    cli_norm norm;
    distill_dataset *train, *val;
    distill_model *student;
    distill_model *tmodels[CLI_MAX_LIST];
    distill_teacher *teachers[CLI_MAX_LIST]; /* of tmodels[], or [0]: a teacher cache */
    int n_teachers;
    distill_teacher *ensemble;  /* over teachers[], when there are several */
    distill_loss *losses[CLI_MAX_LIST]; /* parsed --loss terms, until the trainer owns them */
    float weights[CLI_MAX_LIST];
    distill_trainer *tr;
    /* mutual: the students (students[0] is `student`), each --out */
    distill_model *students[CLI_MAX_LIST];
    distill_student *sts[CLI_MAX_LIST];
    int n_students;
    cli_progress progress;
    cli_log log;                /* --log FILE */
    double seconds;
    char ckpt_default[4096];  /* OUT.ckpt: where an interrupt saves without --checkpoint */
} run;

static void run_free(run *r)
{
    for (int i = 0; i < r->o->n_losses; i++)
        distill_loss_free(r->losses[i]);
    distill_trainer_free(r->tr);
    for (int i = 0; i < r->n_students; i++) {
        distill_student_free(r->sts[i]);
        if (r->students[i] != r->student)
            distill_model_free(r->students[i]);
    }
    distill_teacher_free(r->ensemble);
    for (int i = 0; i < r->n_teachers; i++) {
        distill_teacher_free(r->teachers[i]);
        distill_model_free(r->tmodels[i]);
    }
    distill_model_free(r->student);
    distill_dataset_free(r->train);
    distill_dataset_free(r->val);
    cli_data_spec_free(&r->data);
    cli_data_spec_free(&r->val_spec);
}

static distill_teacher *run_teacher(const run *r)
{
    return r->ensemble ? r->ensemble : r->n_teachers ? r->teachers[0] : NULL;
}

/* The augmentation of a training run, and of the cache made for one:
 * --random-resized-crop replaces the pad-and-crop. */
static void run_augmentation(const cli_options *o, int *crop_padding, int *hflip)
{
    *crop_padding = o->augment != 0 && !cli_given(o, OPT_RRC) ? AUGMENT_CROP_PADDING : 0;
    *hflip = o->augment != 0;
}

/* ------------------------------------------------------------- checks */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Fail early, not after hours of training, when --out cannot be written. */
static int check_dir_of(const char *opt, const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (access(dir, W_OK | X_OK) != 0)
        return cli_fail(CLI_ERUNTIME, "%s %s: the folder '%s' is missing or not writable", opt,
                        path, dir);
    return CLI_OK;
}

/* Parse every --loss before any data is read: a typo is a usage error. */
static int parse_losses(run *r)
{
    for (int i = 0; i < r->o->n_losses; i++) {
        const char *spec = r->o->losses[i];
        r->weights[i] = 1.0f;
        if (distill_loss_parse(&r->losses[i], spec, &r->weights[i]))
            return cli_fail(CLI_EUSAGE, "--loss %s: %s", spec, distill_last_error());
        if (r->o->unlabelled && distill_loss_needs_labels(r->losses[i]))
            return cli_fail(CLI_EUSAGE, "--loss %s needs labels, which --unlabelled drops", spec);
        if (r->o->n_teachers == 0 && !r->o->teacher_cache &&
            distill_loss_needs_teacher(r->losses[i]))
            return cli_fail(CLI_EUSAGE, "--loss %s needs a teacher (see 'distill distill --help')",
                            spec);
        if (r->o->teacher_cache && distill_loss_teacher_node(r->losses[i]))
            return cli_fail(CLI_EUSAGE,
                            "--loss %s taps teacher features, and a teacher cache holds logits "
                            "only (use --teacher)",
                            spec);
    }
    return CLI_OK;
}

static int check_common(run *r)
{
    const cli_command *cmd = r->cmd;
    int rc;
    if ((rc = cli_require(cmd, r->o, OPT_DATA)) || (rc = cli_require(cmd, r->o, OPT_OUT)))
        return rc;
    if ((rc = cli_data_parse("--data", r->o->data, &r->data)))
        return rc;
    if (cli_given(r->o, OPT_VAL) && (rc = cli_data_parse("--val", r->o->val, &r->val_spec)))
        return rc;
    if ((rc = cli_norm_get(&r->data, r->o, &r->norm)) || (rc = parse_losses(r)))
        return rc;
    if (cli_given(r->o, OPT_CHECKPOINT_EVERY) && !cli_given(r->o, OPT_CHECKPOINT))
        return cli_fail(CLI_EUSAGE, "%s: --checkpoint-every needs --checkpoint FILE", cmd->name);
    if (r->o->resume && access(r->o->resume, R_OK) != 0)
        return cli_fail(CLI_ERUNTIME, "--resume %s: no such file or not readable", r->o->resume);
    if (r->o->checkpoint && (rc = check_dir_of("--checkpoint", r->o->checkpoint)))
        return rc;
    if (r->o->n_logs > 1)
        return cli_fail(CLI_EUSAGE, "%s: takes one --log", cmd->name);
    if (cli_given(r->o, OPT_LOG_EVERY) && !cli_given(r->o, OPT_LOG))
        return cli_fail(CLI_EUSAGE, "%s: --log-every needs --log FILE", cmd->name);
    if (r->o->n_logs && (rc = check_dir_of("--log", r->o->logs[0])))
        return rc;
    return check_dir_of("--out", r->o->out);
}

/* ------------------------------------------------------------- data */

/* Training needs two classes at least: an image folder with one class
 * folder (or a list with one label) cannot teach anything. */
static int check_classes(const cli_data_spec *spec, const distill_dataset *ds)
{
    int k = distill_dataset_num_classes(ds);
    if (cli_data_is_images(spec) && k < 2) {
        const char *name = distill_dataset_class_name(ds, 0);
        return cli_fail(CLI_ERUNTIME, "--data %s: %d class%s%s%s%s; training needs at least 2",
                        spec->text, k, k == 1 ? "" : "es", name ? " ('" : "", name ? name : "",
                        name ? "')" : "");
    }
    return CLI_OK;
}

/*
 * Training data, and validation data: --val, else Fashion-MNIST's test
 * split, else a view of the training data itself (loaded once).
 */
static int load_sets(run *r, const int64_t *shape)
{
    const cli_options *o = r->o;
    int rc;
    if (cli_given(o, OPT_VAL) || r->data.kind == CLI_DATA_FASHION_MNIST) {
        const cli_data_spec *vs = cli_given(o, OPT_VAL) ? &r->val_spec : &r->data;
        cli_split split = vs->kind == CLI_DATA_FASHION_MNIST ? CLI_SPLIT_TEST : CLI_SPLIT_TRAIN;
        if ((rc = cli_data_load(&r->data, CLI_SPLIT_TRAIN, shape, o, o->limit, &r->train)) ||
            (rc = check_classes(&r->data, r->train)))
            return rc;
        return cli_data_load(vs, split, shape, o, o->val_limit, &r->val);
    }
    distill_dataset *all;
    if ((rc = cli_data_load(&r->data, CLI_SPLIT_TRAIN, shape, o, 0, &all)))
        return rc;
    if ((rc = check_classes(&r->data, all))) {
        distill_dataset_free(all);
        return rc;
    }
    rc = cli_data_view(&r->data, all, o->limit, &r->train);
    if (rc == CLI_OK)
        rc = cli_data_view(&r->data, all, o->val_limit, &r->val);
    distill_dataset_free(all);
    return rc;
}

static int load_data(run *r, const int64_t *shape)
{
    int rc = load_sets(r, shape);
    if (rc)
        return rc;
    if (r->o->unlabelled) {
        if ((rc = distill_dataset_drop_labels(r->train)))
            return cli_fail_lib(rc, "--unlabelled");
    } else if (!distill_dataset_has_labels(r->train)) {
        return cli_fail(CLI_ERUNTIME, "--data %s has no labels (distill with --unlabelled)",
                        r->data.text);
    }
    return CLI_OK;
}

/* Shape and classes of the training and validation data against `m`. */
static int check_data(const run *r, const char *what, const distill_model *m)
{
    int rc = cli_check_fit(what, m, "data", r->train, !r->o->unlabelled, r->o, 1);
    if (rc == CLI_OK && r->val)
        rc = cli_check_fit(what, m, "validation data", r->val,
                           distill_dataset_has_labels(r->val), r->o, 0);
    return rc;
}

/* ------------------------------------------------------------- models */

static void zoo_for(distill_zoo_options *z, const int64_t shape[3], int classes, uint64_t seed)
{
    distill_zoo_options_init(z, DISTILL_ZOO_OPTIONS_VERSION);
    z->in_channels = (int)shape[0];
    z->height = (int)shape[1];
    z->width = (int)shape[2];
    z->classes = classes;
    z->seed = seed;
}

/* train: a model file fixes the data's shape; a zoo name takes the data's. */
static int open_train_model(run *r)
{
    const cli_options *o = r->o;
    int64_t shape[3] = {0, 0, 0};
    int rc;
    if (cli_model_is_file(o->model)) {
        const char *what = "model";
        if ((rc = cli_model_open("--model", o->model, NULL, &r->student)) ||
            (rc = cli_model_input_shape("model", r->student, shape)) ||
            (rc = cli_norm_from_models(o, 1, &r->student, &what, &r->norm)))
            return rc;
        return load_data(r, shape);
    }
    if ((rc = load_data(r, NULL)) || (rc = cli_transformed_dims(o, r->train, 1, shape)))
        return rc;
    int classes = distill_dataset_num_classes(r->train);
    if (classes < 2)
        return cli_fail(CLI_ERUNTIME, "--data %s has %d classes; a model needs at least 2",
                        r->data.text, classes);
    distill_zoo_options z;
    zoo_for(&z, shape, classes, o->seed);
    return cli_model_open("--model", o->model, &z, &r->student);
}

/* The teachers, and the normalization they record as the run's default. */
static int open_teachers(run *r)
{
    for (int i = 0; i < r->o->n_teachers; i++) {
        const char *path = r->o->teachers[i];
        int rc = cli_model_open("--teacher", path, NULL, &r->tmodels[i]);
        if (rc)
            return rc;
        r->n_teachers = i + 1;
        if (i == 0)
            continue;
        int c0 = cli_model_classes(r->tmodels[0]), ci = cli_model_classes(r->tmodels[i]);
        if (c0 != ci)
            return cli_fail(CLI_ERUNTIME, "teacher %s has %d classes, teacher %s has %d", path,
                            ci, r->o->teachers[0], c0);
    }
    char whats[CLI_MAX_LIST][512];
    const char *w[CLI_MAX_LIST];
    for (int i = 0; i < r->n_teachers; i++) {
        snprintf(whats[i], sizeof whats[i], "teacher %.500s", r->o->teachers[i]);
        w[i] = r->n_teachers == 1 ? "teacher" : whats[i];
    }
    return cli_norm_from_models(r->o, r->n_teachers, r->tmodels, w, &r->norm);
}

static int make_teachers(run *r)
{
    int rc;
    for (int i = 0; i < r->n_teachers; i++)
        if ((rc = distill_teacher_from_model(&r->teachers[i], r->tmodels[i])))
            return cli_fail_lib(rc, "--teacher %s", r->o->teachers[i]);
    if (r->n_teachers > 1 &&
        (rc = distill_teacher_ensemble(&r->ensemble, r->n_teachers, r->teachers, NULL)))
        return cli_fail_lib(rc, "teacher ensemble");
    return CLI_OK;
}

/* distill: the teachers fix the data's shape; a zoo student takes theirs. */
static int open_distill_models(run *r)
{
    int64_t shape[3] = {0, 0, 0};
    int rc;
    if ((rc = open_teachers(r)) || (rc = cli_model_input_shape("teacher", r->tmodels[0], shape)) ||
        (rc = load_data(r, shape)))
        return rc;
    for (int i = 0; i < r->n_teachers; i++)
        if ((rc = check_data(r, "teacher", r->tmodels[i])))
            return rc;
    distill_zoo_options z;
    zoo_for(&z, shape, cli_model_classes(r->tmodels[0]), r->o->seed);
    if ((rc = cli_model_open("--student", r->o->student, &z, &r->student)))
        return rc;
    int sc = cli_model_classes(r->student), tc = cli_model_classes(r->tmodels[0]);
    if (sc != tc)
        return cli_fail(CLI_ERUNTIME, "teacher has %d classes, student has %d", tc, sc);
    return make_teachers(r);
}

/*
 * distill --teacher-cache: a student file fixes the data's shape; a zoo
 * student takes the data's (image folders: --channels, --size) and the
 * cache's classes.  That the data, augmentation and normalization are the
 * cache's is checked by the library when training starts.
 */
static int open_cached_models(run *r)
{
    const cli_options *o = r->o;
    int rc = distill_teacher_from_cache(&r->teachers[0], o->teacher_cache);
    if (rc)
        return cli_fail_lib(rc, "--teacher-cache %s", o->teacher_cache);
    r->n_teachers = 1;
    int classes = distill_teacher_classes(r->teachers[0]);
    int64_t shape[3] = {0, 0, 0};
    if (cli_model_is_file(o->student)) {
        if ((rc = cli_model_open("--student", o->student, NULL, &r->student)) ||
            (rc = cli_model_input_shape("student", r->student, shape)) ||
            (rc = load_data(r, shape)))
            return rc;
    } else {
        if ((rc = load_data(r, NULL)) || (rc = cli_transformed_dims(o, r->train, 1, shape)))
            return rc;
        distill_zoo_options z;
        zoo_for(&z, shape, classes, o->seed);
        if ((rc = cli_model_open("--student", o->student, &z, &r->student)))
            return rc;
    }
    int sc = cli_model_classes(r->student), dc = distill_dataset_num_classes(r->train);
    if (sc != classes)
        return cli_fail(CLI_ERUNTIME, "the teacher cache has %d classes, the student %d", classes,
                        sc);
    if (!o->unlabelled && dc > 0 && dc != classes)
        return cli_fail(CLI_ERUNTIME, "the teacher cache has %d classes, the data %d", classes,
                        dc);
    return CLI_OK;
}

/* ------------------------------------------------------------- trainer */

static void trainer_options(run *r, distill_trainer_options *t)
{
    const cli_options *o = r->o;
    distill_trainer_options_init(t, DISTILL_TRAINER_OPTIONS_VERSION);
    t->epochs = cli_given(o, OPT_EPOCHS) ? o->epochs : DEFAULT_EPOCHS;
    t->batch_size = cli_given(o, OPT_BATCH) ? o->batch : DEFAULT_BATCH;
    t->lr = cli_given(o, OPT_LR) ? o->lr : DEFAULT_LR;
    t->seed = o->seed;
    run_augmentation(o, &t->crop_padding, &t->hflip);
    t->norm_count = r->norm.count;
    memcpy(t->mean, r->norm.mean, sizeof t->mean);
    memcpy(t->std, r->norm.std, sizeof t->std);
    t->resize = o->resize;
    memcpy(t->center_crop, o->center_crop, sizeof t->center_crop);
    memcpy(t->random_resized_crop, o->rrc, sizeof t->random_resized_crop);
    if (o->n_scale)
        memcpy(t->rrc_scale, o->scale, sizeof t->rrc_scale);
    if (o->n_ratio)
        memcpy(t->rrc_ratio, o->ratio, sizeof t->rrc_ratio);
    t->workers = o->workers;
    t->progress = cli_progress_cb;
    t->progress_payload = &r->progress;
    t->progress_every = cli_progress_every(&r->progress);
}

/* Hand loss i to the trainer, which owns it from then on. */
static int add_loss(run *r, int i)
{
    distill_loss *l = r->losses[i];
    r->losses[i] = NULL;
    int rc = distill_trainer_add_loss(r->tr, l, r->weights[i]);
    return rc ? cli_fail_lib(rc, "--loss %s", r->o->losses[i]) : CLI_OK;
}

/* Learning from the teacher alone: KD without its cross-entropy part. */
static int add_unlabelled_kd(run *r)
{
    distill_loss *l;
    int rc = distill_loss_kd(&l, 4.0f, 1.0f);
    if (rc == DISTILL_OK)
        rc = distill_trainer_add_loss(r->tr, l, 1.0f);
    return rc ? cli_fail_lib(rc, "loss kd:T=4,alpha=1") : CLI_OK;
}

static int check_batch(const run *r, const distill_trainer_options *t)
{
    int64_t n = distill_dataset_size(r->train);
    if (n < t->batch_size)
        return cli_fail(CLI_ERUNTIME,
                        "the training data has %lld samples, fewer than one batch of %d (lower "
                        "--batch)",
                        (long long)n, t->batch_size);
    return CLI_OK;
}

/* The trainer made: progress, checkpoints and --resume, as every training
 * command has them. */
static int trainer_ready(run *r, const char *model_name, const distill_trainer_options *t)
{
    r->progress.tr = r->tr;
    r->progress.ckpt_path = r->o->checkpoint;
    r->progress.ckpt_every = r->o->checkpoint_every;
    snprintf(r->ckpt_default, sizeof r->ckpt_default, "%s.ckpt", r->o->out);
    r->progress.ckpt_default = r->ckpt_default;
    int rc;
    if (r->o->resume && (rc = distill_trainer_load_checkpoint(r->tr, r->o->resume)))
        return cli_fail_lib(rc, "--resume %s", r->o->resume);
    if ((rc = cli_log_open(&r->log, r->cmd, r->o, model_name, t)))
        return rc;
    r->progress.log = &r->log;
    return CLI_OK;
}

static int make_trainer(run *r, const char *model_name)
{
    distill_trainer_options t;
    trainer_options(r, &t);
    int rc = check_batch(r, &t);
    if (rc)
        return rc;
    if ((rc = distill_trainer_create(&r->tr, r->student, run_teacher(r), &t)))
        return cli_fail_lib(rc, "trainer");
    for (int i = 0; i < r->o->n_losses; i++)
        if ((rc = add_loss(r, i)))
            return rc;
    if (r->o->n_losses == 0 && r->o->unlabelled && (rc = add_unlabelled_kd(r)))
        return rc;
    return trainer_ready(r, model_name, &t);
}

/* ------------------------------------------------------------- provenance */

static void json_floats(cli_json *j, const char *key, int n, const float *v)
{
    cli_json_begin_arr(j, key);
    for (int i = 0; i < n; i++)
        cli_json_num(j, NULL, v[i]);
    cli_json_end_arr(j);
}

static void json_strs(cli_json *j, const char *key, int n, const char *const *v)
{
    cli_json_begin_arr(j, key);
    for (int i = 0; i < n; i++)
        cli_json_str(j, NULL, v[i]);
    cli_json_end_arr(j);
}

/*
 * The options that made the model, resolved (defaults filled in): what the
 * provenance records.  How the run went (--checkpoint, --resume, --quiet,
 * --json, --workers, --memory) and where it wrote (--out) are left out, so
 * that a resumed run records what an uninterrupted one does.
 */
static int run_options_json(run *r, char **out)
{
    const cli_options *o = r->o;
    distill_trainer_options t;
    trainer_options(r, &t);
    size_t size = 0;
    *out = NULL;
    FILE *f = open_memstream(out, &size);
    if (!f)
        return cli_fail(CLI_ERUNTIME, "out of memory");
    cli_json j;
    cli_json_open(&j, f);
    cli_json_str(&j, "command", r->cmd->name);
    if (o->model)
        cli_json_str(&j, "model", o->model);
    if (r->n_students)
        json_strs(&j, "students", o->n_students, o->students);
    else if (o->student)
        cli_json_str(&j, "student", o->student);
    if (o->n_teachers)
        json_strs(&j, "teachers", o->n_teachers, o->teachers);
    if (o->teacher_cache)
        cli_json_str(&j, "teacher_cache", o->teacher_cache);
    json_strs(&j, "losses", o->n_losses, o->losses);
    cli_json_str(&j, "data", o->data);
    cli_json_str(&j, "val", o->val);
    cli_json_int(&j, "limit", o->limit);
    cli_json_int(&j, "val_limit", o->val_limit);
    cli_json_bool(&j, "unlabelled", o->unlabelled);
    cli_json_int(&j, "epochs", t.epochs);
    cli_json_int(&j, "batch", t.batch_size);
    cli_json_num(&j, "lr", t.lr);
    char seed[32]; /* a u64 is exact in JSON only as text */
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    cli_json_str(&j, "seed", seed);
    cli_json_int(&j, "crop_padding", t.crop_padding);
    cli_json_bool(&j, "hflip", t.hflip);
    json_floats(&j, "mean", r->norm.count, r->norm.mean);
    json_floats(&j, "std", r->norm.count, r->norm.std);
    cli_json_int(&j, "resize", t.resize);
    cli_json_begin_arr(&j, "center_crop");
    cli_json_elem_int(&j, t.center_crop[0]);
    cli_json_elem_int(&j, t.center_crop[1]);
    cli_json_end_arr(&j);
    cli_json_begin_arr(&j, "random_resized_crop");
    cli_json_elem_int(&j, t.random_resized_crop[0]);
    cli_json_elem_int(&j, t.random_resized_crop[1]);
    cli_json_end_arr(&j);
    json_floats(&j, "scale", 2, t.rrc_scale);
    json_floats(&j, "ratio", 2, t.rrc_ratio);
    if (cli_given(o, OPT_CHANNELS))
        cli_json_int(&j, "channels", o->channels);
    if (cli_given(o, OPT_SIZE)) {
        cli_json_begin_arr(&j, "size");
        cli_json_elem_int(&j, o->height);
        cli_json_elem_int(&j, o->width);
        cli_json_end_arr(&j);
    }
    if (r->n_students) {
        distill_mutual_options mo;
        distill_mutual_options_init(&mo, DISTILL_MUTUAL_OPTIONS_VERSION);
        cli_json_num(&j, "mutual_weight",
                     cli_given(o, OPT_MUTUAL_WEIGHT) ? o->mutual_weight : mo.weight);
        cli_json_num(&j, "mutual_temperature",
                     cli_given(o, OPT_MUTUAL_T) ? o->mutual_t : mo.temperature);
    }
    if (cli_given(o, OPT_THREADS))
        cli_json_int(&j, "threads", o->threads);
    cli_json_close(&j);
    if (fclose(f) != 0 || !*out) {
        free(*out);
        *out = NULL;
        return cli_fail(CLI_ERUNTIME, "out of memory");
    }
    size_t len = strlen(*out);
    while (len && (*out)[len - 1] == '\n')
        (*out)[--len] = '\0';
    return CLI_OK;
}

/* What a student records: the data, the normalization, the classes (the
 * data's, else the teacher's, else those the student file had), how it was
 * made. */
static int describe(run *r, distill_model *student)
{
    char *opts = NULL;
    int rc = run_options_json(r, &opts);
    if (rc)
        return rc;
    char command[64];
    snprintf(command, sizeof command, "distill %s", r->cmd->name);
    cli_provenance p = {command, opts, r->o->seed};
    const distill_model *names_from = r->n_teachers && r->tmodels[0] ? r->tmodels[0] : student;
    rc = cli_describe_model(student, r->train, &r->norm, names_from, &p);
    free(opts);
    return rc;
}

/* ------------------------------------------------------------- results */

static int fit(run *r)
{
    cli_sigint_install();
    double t0 = now_s();
    int rc = distill_trainer_fit(r->tr, r->train, r->val);
    r->seconds = now_s() - t0;
    cli_sigint_restore();
    cli_progress_end(&r->progress);
    if (rc == DISTILL_ECANCELLED && cli_interrupted()) {
        long long step = (long long)distill_trainer_steps_done(r->tr);
        if (!r->progress.ckpt_saved)
            return cli_fail(CLI_EINTERRUPTED, "interrupted at step %lld; no checkpoint could be "
                            "written and %s%s not written", step, r->o->out,
                            r->n_students > 1 ? " and the other outputs were" : " was");
        return cli_fail(CLI_EINTERRUPTED,
                        "interrupted at step %lld; the training state is in %s: run the same "
                        "command with --resume %s to continue (%s%s not written)",
                        step, r->progress.ckpt_written, r->progress.ckpt_written, r->o->out,
                        r->n_students > 1 ? " and the other outputs were" : " was");
    }
    if (rc == DISTILL_ECANCELLED && r->progress.ckpt_failed)
        return CLI_ERUNTIME; /* the message is printed */
    /* a cache that does not fit the run is refused before the first step */
    if (rc == DISTILL_EINVAL && r->o->teacher_cache && distill_trainer_steps_done(r->tr) == 0) {
        const char *msg = distill_last_error();
        int folder = cli_data_is_images(&r->data) && !cli_model_is_file(r->o->student);
        return cli_fail(CLI_ERUNTIME,
                        "--teacher-cache %s: %s; make it with `distill cache` and this run's "
                        "--data, --limit, augmentation and --mean/--std%s",
                        r->o->teacher_cache, msg && *msg ? msg : distill_strerror(rc),
                        folder ? ", and give --channels and --size of the teacher's input" : "");
    }
    if (rc)
        return cli_fail_lib(rc, "training");
    if (r->n_students == 0) {
        if ((rc = describe(r, r->student)))
            return rc;
        return cli_model_write("--out", r->student, r->o->out);
    }
    for (int i = 0; i < r->n_students; i++)
        if ((rc = describe(r, r->students[i])) ||
            (rc = cli_model_write("--out", r->students[i], r->o->outs[i])))
            return rc;
    return CLI_OK;
}

static void print_result(const run *r, const char *model)
{
    const cli_progress *p = &r->progress;
    if (r->o->json) {
        cli_json j;
        cli_json_open(&j, stdout);
        cli_json_str(&j, "command", r->cmd->name);
        cli_json_str(&j, "model", model);
        cli_json_num(&j, "accuracy", p->last_val >= 0 ? p->last_val : NAN);
        cli_json_num(&j, "loss", p->last_loss);
        cli_json_int(&j, "epochs", p->epochs_done);
        cli_json_int(&j, "steps", distill_trainer_steps_done(r->tr));
        cli_json_int(&j, "samples", distill_dataset_size(r->train));
        cli_json_num(&j, "seconds", r->seconds);
        cli_json_str(&j, "output", r->o->out);
        cli_json_close(&j);
        return;
    }
    char took[32];
    cli_format_duration(r->seconds, took, sizeof took);
    printf("wrote %s: %s, %d epoch%s in %s, final loss %.4f", r->o->out, model, p->epochs_done,
           p->epochs_done == 1 ? "" : "s", took, p->last_loss);
    if (p->last_val >= 0)
        printf(", validation accuracy %.4f", p->last_val);
    printf("\n");
}

static int run_fit(run *r, const char *model_name)
{
    int rc = make_trainer(r, model_name);
    if (rc == CLI_OK)
        rc = fit(r);
    cli_log_close(&r->log, rc, r->tr ? distill_trainer_steps_done(r->tr) : 0);
    if (rc == CLI_OK)
        print_result(r, model_name);
    return rc;
}

/* ------------------------------------------------------------- commands */

static void run_init(run *r, const cli_command *cmd, const cli_options *o)
{
    memset(r, 0, sizeof *r);
    r->cmd = cmd;
    r->o = o;
    cli_progress_init(&r->progress, o->quiet);
}

int cli_cmd_train(const cli_command *cmd, const cli_options *o)
{
    run r;
    run_init(&r, cmd, o);
    int rc = cli_require(cmd, o, OPT_MODEL);
    if (rc == CLI_OK)
        rc = check_common(&r);
    if (rc == CLI_OK) {
        cli_apply_threads(o);
        rc = open_train_model(&r);
    }
    if (rc == CLI_OK)
        rc = check_data(&r, "model", r.student);
    if (rc == CLI_OK)
        rc = run_fit(&r, o->model);
    run_free(&r);
    return rc;
}

/* distill: one or more --teacher, or one --teacher-cache. */
static int require_teacher(const cli_command *cmd, const cli_options *o)
{
    int models = cli_given(o, OPT_TEACHER), cache = cli_given(o, OPT_TEACHER_CACHE);
    if (models && cache)
        return cli_fail(CLI_EUSAGE,
                        "%s: --teacher and --teacher-cache cannot be used together (see "
                        "'distill %s --help')",
                        cmd->name, cmd->name);
    if (!models && !cache)
        return cli_fail(CLI_EUSAGE,
                        "%s: --teacher or --teacher-cache is required (see 'distill %s --help')",
                        cmd->name, cmd->name);
    return CLI_OK;
}

int cli_cmd_distill(const cli_command *cmd, const cli_options *o)
{
    run r;
    run_init(&r, cmd, o);
    int rc = require_teacher(cmd, o);
    if (rc == CLI_OK)
        rc = cli_require(cmd, o, OPT_STUDENT);
    if (rc == CLI_OK)
        rc = check_common(&r);
    if (rc == CLI_OK) {
        cli_apply_threads(o);
        rc = o->teacher_cache ? open_cached_models(&r) : open_distill_models(&r);
    }
    if (rc == CLI_OK)
        rc = check_data(&r, "student", r.student);
    if (rc == CLI_OK)
        rc = run_fit(&r, o->student);
    run_free(&r);
    return rc;
}

/* ------------------------------------------------------------- mutual */

/* mutual: two or more --student, one --out each, at most one kind of teacher. */
static int mutual_check(run *r)
{
    const cli_command *cmd = r->cmd;
    const cli_options *o = r->o;
    int rc = cli_require(cmd, o, OPT_STUDENT);
    if (rc)
        return rc;
    if (o->n_students < 2)
        return cli_fail(CLI_EUSAGE,
                        "%s: mutual learning needs at least two --student (got %d); to train one "
                        "model use `distill train` or `distill distill`",
                        cmd->name, o->n_students);
    if ((rc = cli_require(cmd, o, OPT_OUT)))
        return rc;
    if (o->n_outs != o->n_students)
        return cli_fail(CLI_EUSAGE,
                        "%s: %d --student but %d --out: give one --out per student, in the same "
                        "order",
                        cmd->name, o->n_students, o->n_outs);
    for (int i = 0; i < o->n_outs; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(o->outs[i], o->outs[j]) == 0)
                return cli_fail(CLI_EUSAGE, "%s: --out %s is given for students %d and %d",
                                cmd->name, o->outs[i], j + 1, i + 1);
    if ((rc = check_common(r)))
        return rc;
    for (int i = 1; i < o->n_outs; i++)
        if ((rc = check_dir_of("--out", o->outs[i])))
            return rc;
    return CLI_OK;
}

/*
 * The students: with --teacher, the teacher fixes the data's shape and the
 * classes; else the first student that is a model file; else the data (a
 * zoo student is sized for it).  Zoo student k (from 0) is initialized with
 * --seed + k, so that two students of one zoo name start apart.
 */
static int mutual_open(run *r)
{
    const cli_options *o = r->o;
    int64_t shape[3] = {0, 0, 0};
    int rc, classes = 0;
    int fixed = -1; /* the student that fixes the shape, if no teacher does */
    if (o->n_teachers > 0) {
        if ((rc = open_teachers(r)) ||
            (rc = cli_model_input_shape("teacher", r->tmodels[0], shape)))
            return rc;
        classes = cli_model_classes(r->tmodels[0]);
    } else {
        for (int i = 0; i < o->n_students && fixed < 0; i++)
            if (cli_model_is_file(o->students[i]))
                fixed = i;
        if (fixed >= 0) {
            if ((rc = cli_model_open("--student", o->students[fixed], NULL,
                                     &r->students[fixed])) ||
                (rc = cli_model_input_shape("student", r->students[fixed], shape)))
                return rc;
            classes = cli_model_classes(r->students[fixed]);
        }
    }
    if ((rc = load_data(r, shape[0] ? shape : NULL)))
        return rc;
    for (int i = 0; i < r->n_teachers; i++)
        if ((rc = check_data(r, "teacher", r->tmodels[i])))
            return rc;
    if (!shape[0]) {
        if ((rc = cli_transformed_dims(o, r->train, 1, shape)))
            return rc;
        classes = distill_dataset_num_classes(r->train);
        if (classes < 2)
            return cli_fail(CLI_ERUNTIME, "--data %s has %d classes; a model needs at least 2",
                            r->data.text, classes);
    }
    r->n_students = o->n_students;
    for (int i = 0; i < o->n_students; i++) {
        if (i != fixed) {
            distill_zoo_options z;
            zoo_for(&z, shape, classes, o->seed + (uint64_t)i);
            if ((rc = cli_model_open("--student", o->students[i], &z, &r->students[i])))
                return rc;
        }
        int c = cli_model_classes(r->students[i]);
        if (c != classes)
            return cli_fail(CLI_ERUNTIME, "--student %s has %d classes, %s %s has %d",
                            o->students[i], c, o->n_teachers ? "--teacher" : "--student",
                            o->n_teachers ? o->teachers[0] : o->students[fixed >= 0 ? fixed : 0],
                            classes);
        int64_t si[3];
        if ((rc = cli_model_input_shape("student", r->students[i], si)))
            return rc;
        if (si[0] != shape[0] || si[1] != shape[1] || si[2] != shape[2])
            return cli_fail(CLI_ERUNTIME,
                            "--student %s takes %lldx%lldx%lld inputs, the other models "
                            "%lldx%lldx%lld: the students of one run read the same batches",
                            o->students[i], (long long)si[0], (long long)si[1],
                            (long long)si[2], (long long)shape[0], (long long)shape[1],
                            (long long)shape[2]);
    }
    for (int i = 0; i < o->n_students; i++)
        if ((rc = check_data(r, "student", r->students[i])))
            return rc;
    r->student = r->students[0];
    return make_teachers(r);
}

/* Every student gets the --loss terms (parsed again for each: a student
 * owns its losses); with none, the library's default. */
static int mutual_students(run *r)
{
    for (int i = 0; i < r->n_students; i++) {
        int rc = distill_student_create(&r->sts[i], r->students[i]);
        if (rc)
            return cli_fail_lib(rc, "--student %s", r->o->students[i]);
        for (int k = 0; k < r->o->n_losses; k++) {
            distill_loss *l = r->losses[k];
            float w = r->weights[k];
            r->losses[k] = NULL;
            if (!l && distill_loss_parse(&l, r->o->losses[k], &w))
                return cli_fail_lib(DISTILL_EINVAL, "--loss %s", r->o->losses[k]);
            if ((rc = distill_student_add_loss(r->sts[i], l, w)))
                return cli_fail_lib(rc, "--loss %s (student %s)", r->o->losses[k],
                                    r->o->students[i]);
        }
    }
    return CLI_OK;
}

static int make_mutual_trainer(run *r)
{
    distill_trainer_options t;
    trainer_options(r, &t);
    int rc = check_batch(r, &t);
    if (rc || (rc = mutual_students(r)))
        return rc;
    distill_mutual_options m;
    distill_mutual_options_init(&m, DISTILL_MUTUAL_OPTIONS_VERSION);
    if (cli_given(r->o, OPT_MUTUAL_WEIGHT))
        m.weight = (float)r->o->mutual_weight;
    if (cli_given(r->o, OPT_MUTUAL_T))
        m.temperature = (float)r->o->mutual_t;
    if ((rc = distill_trainer_create_students(&r->tr, r->n_students, r->sts, run_teacher(r), &t,
                                              &m)))
        return cli_fail_lib(rc, "trainer");
    char names[1024] = "";
    for (int i = 0; i < r->n_students; i++) {
        size_t n = strlen(names);
        snprintf(names + n, sizeof names - n, "%s%s", i ? "," : "", r->o->students[i]);
    }
    return trainer_ready(r, names, &t);
}

static void print_mutual(const run *r)
{
    const cli_progress *p = &r->progress;
    const cli_options *o = r->o;
    if (o->json) {
        cli_json j;
        cli_json_open(&j, stdout);
        cli_json_str(&j, "command", r->cmd->name);
        cli_json_num(&j, "loss", p->last_loss);
        cli_json_int(&j, "epochs", p->epochs_done);
        cli_json_int(&j, "steps", distill_trainer_steps_done(r->tr));
        cli_json_int(&j, "samples", distill_dataset_size(r->train));
        cli_json_num(&j, "seconds", r->seconds);
        cli_json_begin_arr(&j, "students");
        for (int i = 0; i < r->n_students; i++) {
            cli_json_begin_obj(&j, NULL);
            cli_json_str(&j, "model", o->students[i]);
            cli_json_num(&j, "accuracy", p->n_val > i && p->last_vals[i] >= 0 ? p->last_vals[i]
                                                                               : NAN);
            cli_json_num(&j, "loss", p->n_loss > i ? p->last_losses[i] : NAN);
            cli_json_str(&j, "output", o->outs[i]);
            cli_json_end_obj(&j);
        }
        cli_json_end_arr(&j);
        cli_json_close(&j);
        return;
    }
    char took[32];
    cli_format_duration(r->seconds, took, sizeof took);
    printf("mutual learning of %d students, %d epoch%s in %s, final loss %.4f (their sum)\n",
           r->n_students, p->epochs_done, p->epochs_done == 1 ? "" : "s", took, p->last_loss);
    for (int i = 0; i < r->n_students; i++) {
        printf("wrote %s: %s", o->outs[i], o->students[i]);
        if (p->n_loss > i)
            printf(", final loss %.4f", p->last_losses[i]);
        if (p->n_val > i && p->last_vals[i] >= 0)
            printf(", validation accuracy %.4f", p->last_vals[i]);
        printf("\n");
    }
}

int cli_cmd_mutual(const cli_command *cmd, const cli_options *o)
{
    run r;
    run_init(&r, cmd, o);
    int rc = mutual_check(&r);
    if (rc == CLI_OK) {
        cli_apply_threads(o);
        rc = mutual_open(&r);
    }
    if (rc == CLI_OK)
        rc = make_mutual_trainer(&r);
    if (rc == CLI_OK)
        rc = fit(&r);
    cli_log_close(&r.log, rc, r.tr ? distill_trainer_steps_done(r.tr) : 0);
    if (rc == CLI_OK)
        print_mutual(&r);
    run_free(&r);
    return rc;
}

/* ------------------------------------------------------------- cache */

static void format_bytes(double bytes, char *buf, size_t size)
{
    static const char *const units[] = {"bytes", "kB", "MB", "GB", "TB"};
    int u = 0;
    for (; bytes >= 1000.0 && u < 4; u++)
        bytes /= 1000.0;
    if (u == 0)
        snprintf(buf, size, "%.0f bytes", bytes);
    else
        snprintf(buf, size, "%.1f %s", bytes, units[u]);
}

/* What `distill cache` made. */
typedef struct cache_info {
    distill_cache_options co;
    int64_t samples, bytes;
    int views, classes;
} cache_info;

static int cache_check(run *r)
{
    const cli_command *cmd = r->cmd;
    const cli_options *o = r->o;
    int rc;
    if (cli_given(o, OPT_RRC))
        return cli_fail(CLI_EUSAGE,
                        "cache: --random-resized-crop cannot be cached: a cache holds the logits "
                        "of enumerable views (crop offsets x flips) and RandomResizedCrop draws "
                        "its boxes from a continuum (distill with --teacher instead)");
    if ((rc = cli_require(cmd, o, OPT_TEACHER)) || (rc = cli_require(cmd, o, OPT_DATA)) ||
        (rc = cli_require(cmd, o, OPT_OUT)) ||
        (rc = cli_data_parse("--data", o->data, &r->data)) ||
        (rc = cli_norm_get(&r->data, o, &r->norm)))
        return rc;
    return check_dir_of("--out", o->out);
}

/* The teachers, and the training data a run with these options reads. */
static int cache_open(run *r)
{
    int64_t shape[3] = {0, 0, 0};
    int rc;
    if ((rc = open_teachers(r)) || /* and their normalization, as `distill distill` */
        (rc = cli_model_input_shape("teacher", r->tmodels[0], shape)) ||
        (rc = cli_data_load(&r->data, CLI_SPLIT_TRAIN, shape, r->o, r->o->limit, &r->train)))
        return rc;
    int labelled = distill_dataset_has_labels(r->train);
    for (int i = 0; i < r->n_teachers; i++)
        if ((rc = cli_check_fit("teacher", r->tmodels[i], "data", r->train, labelled, r->o, 1)))
            return rc;
    return make_teachers(r);
}

static int cache_build(run *r, cache_info *c)
{
    const cli_options *o = r->o;
    distill_cache_options *co = &c->co;
    distill_cache_options_init(co, DISTILL_CACHE_OPTIONS_VERSION);
    run_augmentation(o, &co->crop_padding, &co->hflip);
    co->norm_count = r->norm.count;
    memcpy(co->mean, r->norm.mean, sizeof co->mean);
    memcpy(co->std, r->norm.std, sizeof co->std);
    co->batch_size = cli_given(o, OPT_BATCH) ? o->batch : DEFAULT_CACHE_BATCH;
    co->resize = o->resize;
    memcpy(co->center_crop, o->center_crop, sizeof co->center_crop);
    int side = 2 * co->crop_padding + 1;
    c->views = side * side * (co->hflip ? 2 : 1);
    c->samples = distill_dataset_size(r->train);
    c->classes = distill_teacher_classes(run_teacher(r));
    if (!o->quiet) {
        char size[32];
        format_bytes((double)c->samples * c->views * c->classes * sizeof(float), size,
                     sizeof size);
        fprintf(stderr, "caching the teacher's logits: %lld samples x %d view%s x %d classes "
                        "(%s)\n",
                (long long)c->samples, c->views, c->views == 1 ? "" : "s", c->classes, size);
    }
    double t0 = now_s();
    int rc = distill_teacher_cache_build(run_teacher(r), r->train, co, o->out);
    r->seconds = now_s() - t0;
    if (rc)
        return cli_fail_lib(rc, "--out %s", o->out);
    struct stat st;
    if (stat(o->out, &st) != 0)
        return cli_fail(CLI_ERUNTIME, "--out %s: missing after it was written", o->out);
    c->bytes = (int64_t)st.st_size;
    return CLI_OK;
}

static void print_cache(const run *r, const cache_info *c)
{
    if (r->o->json) {
        cli_json j;
        cli_json_open(&j, stdout);
        cli_json_str(&j, "command", r->cmd->name);
        cli_json_int(&j, "samples", c->samples);
        cli_json_int(&j, "views", c->views);
        cli_json_int(&j, "classes", c->classes);
        cli_json_int(&j, "crop_padding", c->co.crop_padding);
        cli_json_bool(&j, "hflip", c->co.hflip);
        cli_json_int(&j, "bytes", c->bytes);
        cli_json_num(&j, "seconds", r->seconds);
        cli_json_str(&j, "output", r->o->out);
        cli_json_close(&j);
        return;
    }
    char took[32], size[32];
    cli_format_duration(r->seconds, took, sizeof took);
    format_bytes((double)c->bytes, size, sizeof size);
    printf("wrote %s: %lld samples x %d view%s x %d classes, %s in %s\n", r->o->out,
           (long long)c->samples, c->views, c->views == 1 ? "" : "s", c->classes, size, took);
}

int cli_cmd_cache(const cli_command *cmd, const cli_options *o)
{
    run r;
    run_init(&r, cmd, o);
    cache_info c;
    memset(&c, 0, sizeof c);
    int rc = cache_check(&r);
    if (rc == CLI_OK) {
        cli_apply_threads(o);
        rc = cache_open(&r);
    }
    if (rc == CLI_OK)
        rc = cache_build(&r, &c);
    if (rc == CLI_OK)
        print_cache(&r, &c);
    run_free(&r);
    return rc;
}

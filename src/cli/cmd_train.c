/*
 * cmd_train.c - `distill train` and `distill distill`.
 *
 * Both build the same run: training and validation data, a student model,
 * optionally teachers, loss terms, then the trainer's fit.  The model file
 * is written once, at the end (atomically, by the library); a run stopped
 * by Ctrl-C or by an error writes nothing.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define DEFAULT_EPOCHS 3
#define DEFAULT_BATCH 128
#define DEFAULT_LR 0.1

typedef struct run {
    const cli_command *cmd;
    const cli_options *o;
    cli_data_spec data, val_spec;
    cli_norm norm;
    distill_dataset *train, *val;
    distill_model *student;
    distill_model *tmodels[CLI_MAX_LIST];
    distill_teacher *teachers[CLI_MAX_LIST];
    int n_teachers;
    distill_teacher *ensemble;  /* over teachers[], when there are several */
    distill_loss *losses[CLI_MAX_LIST]; /* parsed --loss terms, until the trainer owns them */
    float weights[CLI_MAX_LIST];
    distill_trainer *tr;
    cli_progress progress;
    double seconds;
} run;

static void run_free(run *r)
{
    for (int i = 0; i < r->o->n_losses; i++)
        distill_loss_free(r->losses[i]);
    distill_trainer_free(r->tr);
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

/* ------------------------------------------------------------- checks */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Fail early, not after hours of training, when --out cannot be written. */
static int check_out_dir(const char *path)
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
        return cli_fail(CLI_ERUNTIME, "--out %s: the folder '%s' is missing or not writable", path,
                        dir);
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
        if (r->o->n_teachers == 0 && distill_loss_needs_teacher(r->losses[i]))
            return cli_fail(CLI_EUSAGE, "--loss %s needs a teacher (see 'distill distill --help')",
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
    return check_out_dir(r->o->out);
}

/* ------------------------------------------------------------- data */

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
        if ((rc = cli_data_load(&r->data, CLI_SPLIT_TRAIN, shape, o, o->limit, &r->train)))
            return rc;
        return cli_data_load(vs, split, shape, o, o->val_limit, &r->val);
    }
    distill_dataset *all;
    if ((rc = cli_data_load(&r->data, CLI_SPLIT_TRAIN, shape, o, 0, &all)))
        return rc;
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
    int rc = cli_check_fit(what, m, "data", r->train, !r->o->unlabelled);
    if (rc == CLI_OK && r->val)
        rc = cli_check_fit(what, m, "validation data", r->val,
                           distill_dataset_has_labels(r->val));
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
        if ((rc = cli_model_open("--model", o->model, NULL, &r->student)) ||
            (rc = cli_model_input_shape("model", r->student, shape)))
            return rc;
        return load_data(r, shape);
    }
    if ((rc = load_data(r, NULL)))
        return rc;
    distill_dataset_sample_dims(r->train, shape);
    int classes = distill_dataset_num_classes(r->train);
    if (classes < 2)
        return cli_fail(CLI_ERUNTIME, "--data %s has %d classes; a model needs at least 2",
                        r->data.text, classes);
    distill_zoo_options z;
    zoo_for(&z, shape, classes, o->seed);
    return cli_model_open("--model", o->model, &z, &r->student);
}

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
    return CLI_OK;
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

/* ------------------------------------------------------------- trainer */

static void trainer_options(run *r, distill_trainer_options *t)
{
    const cli_options *o = r->o;
    distill_trainer_options_init(t, DISTILL_TRAINER_OPTIONS_VERSION);
    t->epochs = cli_given(o, OPT_EPOCHS) ? o->epochs : DEFAULT_EPOCHS;
    t->batch_size = cli_given(o, OPT_BATCH) ? o->batch : DEFAULT_BATCH;
    t->lr = cli_given(o, OPT_LR) ? o->lr : DEFAULT_LR;
    t->seed = o->seed;
    if (o->augment != 0) {
        t->crop_padding = 2;
        t->hflip = 1;
    }
    t->norm_count = r->norm.count;
    memcpy(t->mean, r->norm.mean, sizeof t->mean);
    memcpy(t->std, r->norm.std, sizeof t->std);
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

static int make_trainer(run *r)
{
    distill_trainer_options t;
    trainer_options(r, &t);
    int64_t n = distill_dataset_size(r->train);
    if (n < t.batch_size)
        return cli_fail(CLI_ERUNTIME,
                        "the training data has %lld samples, fewer than one batch of %d (lower "
                        "--batch)",
                        (long long)n, t.batch_size);
    int rc = distill_trainer_create(&r->tr, r->student, run_teacher(r), &t);
    if (rc)
        return cli_fail_lib(rc, "trainer");
    for (int i = 0; i < r->o->n_losses; i++)
        if ((rc = add_loss(r, i)))
            return rc;
    if (r->o->n_losses == 0 && r->o->unlabelled)
        return add_unlabelled_kd(r);
    return CLI_OK;
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
    if (rc == DISTILL_ECANCELLED && cli_interrupted())
        return cli_fail(CLI_EINTERRUPTED, "interrupted at step %lld; %s was not written",
                        (long long)distill_trainer_steps_done(r->tr), r->o->out);
    if (rc)
        return cli_fail_lib(rc, "training");
    if ((rc = distill_model_save(r->student, r->o->out)))
        return cli_fail_lib(rc, "--out %s", r->o->out);
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
    int rc = make_trainer(r);
    if (rc == CLI_OK)
        rc = fit(r);
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

int cli_cmd_distill(const cli_command *cmd, const cli_options *o)
{
    run r;
    run_init(&r, cmd, o);
    int rc = cli_require(cmd, o, OPT_TEACHER);
    if (rc == CLI_OK)
        rc = cli_require(cmd, o, OPT_STUDENT);
    if (rc == CLI_OK)
        rc = check_common(&r);
    if (rc == CLI_OK) {
        cli_apply_threads(o);
        rc = open_distill_models(&r);
    }
    if (rc == CLI_OK)
        rc = check_data(&r, "student", r.student);
    if (rc == CLI_OK)
        rc = run_fit(&r, o->student);
    run_free(&r);
    return rc;
}

/*
 * cmd_report.c - `distill report`: teacher and student side by side.
 *
 * The library measures size, cost, speed, accuracy and agreement
 * (distill_report_compare); one more evaluation of each model gives its
 * confusion matrix, hence the per-class accuracy.  The text table, the
 * --json object and the --html page (html.c) are all printed from the same
 * report_data.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

#define DEFAULT_REPORT_BATCH 128

typedef struct report_run {
    cli_data_spec spec;
    cli_norm norm;
    distill_model *teacher, *student;
    distill_dataset *ds;
    distill_report rep;
    distill_report_side tside, sside;
    report_data d;
    char **fallback_names; /* "class K" for classes the data does not name */
} report_run;

static void report_run_free(report_run *r)
{
    for (int m = 0; m < r->d.n_models; m++)
        free(r->d.models[m].confusion);
    for (int i = 0; i < r->d.n_logs; i++)
        cli_logread_free(&r->d.logs[i]);
    if (r->fallback_names)
        for (int k = 0; k < r->d.classes; k++)
            free(r->fallback_names[k]);
    free(r->fallback_names);
    free(r->d.class_names);
    free(r->d.class_counts);
    distill_dataset_free(r->ds);
    distill_model_free(r->student);
    distill_model_free(r->teacher);
    cli_data_spec_free(&r->spec);
}

static int report_args(const cli_command *cmd, const cli_options *o, report_run *r)
{
    int rc;
    if ((rc = cli_require(cmd, o, OPT_TEACHER)) || (rc = cli_require(cmd, o, OPT_STUDENT)) ||
        (rc = cli_require(cmd, o, OPT_DATA)))
        return rc;
    if (o->n_teachers > 1)
        return cli_fail(CLI_EUSAGE, "%s: takes one --teacher", cmd->name);
    if ((rc = cli_data_parse("--data", o->data, &r->spec)))
        return rc;
    if (cli_given(o, OPT_LOG) && !o->html)
        return cli_fail(CLI_EUSAGE, "%s: --log draws training curves in the --html page; give "
                        "--html FILE", cmd->name);
    /* the logs are read before any model is measured: a bad path fails fast */
    for (int i = 0; i < o->n_logs; i++) {
        if ((rc = cli_logread_load(o->logs[i], &r->d.logs[i])))
            return rc;
        r->d.n_logs = i + 1;
    }
    return cli_norm_get(&r->spec, o, &r->norm);
}

/* The teacher fixes the input shape and classes of a zoo student. */
static int report_open(const cli_options *o, report_run *r)
{
    int64_t shape[3] = {0, 0, 0};
    int rc;
    if ((rc = cli_model_open("--teacher", o->teachers[0], NULL, &r->teacher)) ||
        (rc = cli_model_input_shape("teacher", r->teacher, shape)))
        return rc;
    distill_zoo_options z;
    distill_zoo_options_init(&z, DISTILL_ZOO_OPTIONS_VERSION);
    z.in_channels = (int)shape[0];
    z.height = (int)shape[1];
    z.width = (int)shape[2];
    z.classes = cli_model_classes(r->teacher);
    distill_model *models[2] = {r->teacher, NULL};
    const char *whats[2] = {"teacher", "student"};
    if ((rc = cli_model_open("--student", o->student, &z, &r->student)))
        return rc;
    models[1] = r->student;
    if ((rc = cli_norm_from_models(o, 2, models, whats, &r->norm)) ||
        (rc = cli_data_load(&r->spec, CLI_SPLIT_TEST, shape, o, o->limit, &r->ds)))
        return rc;
    int labelled = distill_dataset_has_labels(r->ds);
    if ((rc = cli_check_fit("teacher", r->teacher, "data", r->ds, labelled, o, 0)) ||
        (rc = cli_check_fit("student", r->student, "data", r->ds, labelled, o, 0)))
        return rc;
    int tc = cli_model_classes(r->teacher), sc = cli_model_classes(r->student);
    if (tc != sc)
        return cli_fail(CLI_ERUNTIME, "teacher has %d classes, student has %d", tc, sc);
    return CLI_OK;
}

/* The confusion matrix of model m (one more pass over the data). */
static int measure_confusion(report_run *r, const distill_eval_options *base, int m,
                             distill_model *model)
{
    size_t k = (size_t)r->d.classes;
    int64_t *cm = calloc(k * k, sizeof *cm);
    if (!cm)
        return cli_fail(CLI_ERUNTIME, "out of memory");
    r->d.models[m].confusion = cm;
    distill_eval_options eo = *base;
    eo.confusion = cm;
    distill_eval_result res = DISTILL_EVAL_RESULT_INIT;
    int rc = distill_evaluate(model, r->ds, &eo, &res);
    return rc ? cli_fail_lib(rc, "evaluating %s", r->d.models[m].name) : CLI_OK;
}

static int class_names(report_run *r)
{
    int k = r->d.classes;
    r->d.class_names = calloc((size_t)k, sizeof *r->d.class_names);
    r->fallback_names = calloc((size_t)k, sizeof *r->fallback_names);
    r->d.class_counts = calloc((size_t)k, sizeof *r->d.class_counts);
    if (!r->d.class_names || !r->fallback_names || !r->d.class_counts)
        return cli_fail(CLI_ERUNTIME, "out of memory");
    for (int c = 0; c < k; c++) {
        const char *name = distill_dataset_class_name(r->ds, c);
        if (!name) {
            r->fallback_names[c] = malloc(24);
            if (!r->fallback_names[c])
                return cli_fail(CLI_ERUNTIME, "out of memory");
            snprintf(r->fallback_names[c], 24, "class %d", c);
            name = r->fallback_names[c];
        }
        r->d.class_names[c] = name;
    }
    return CLI_OK;
}

/* The model list of the report, and the per-class results of each model. */
static int report_collect(const cli_options *o, report_run *r, const distill_eval_options *eo)
{
    report_data *d = &r->d;
    d->n_models = 2;
    d->models[0] = (report_model){"teacher", o->teachers[0], r->tside, NAN, NULL};
    d->models[1] = (report_model){"student", o->student, r->sside,
                                  r->rep.agreement >= 0 ? r->rep.agreement : NAN, NULL};
    d->samples = distill_dataset_size(r->ds);
    d->batch_n = r->rep.batch_n;
    d->threads = r->rep.threads;
    d->data = o->data;
    if (!distill_dataset_has_labels(r->ds))
        return CLI_OK;
    d->classes = cli_model_classes(r->teacher);
    int rc;
    if ((rc = class_names(r)) || (rc = measure_confusion(r, eo, 0, r->teacher)) ||
        (rc = measure_confusion(r, eo, 1, r->student)))
        return rc;
    size_t k = (size_t)d->classes;
    for (size_t t = 0; t < k; t++)
        for (size_t c = 0; c < k; c++)
            d->class_counts[t] += d->models[0].confusion[t * k + c];
    return CLI_OK;
}

static int report_measure(const cli_options *o, report_run *r)
{
    distill_eval_options eo;
    distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION);
    eo.norm_count = r->norm.count;
    memcpy(eo.mean, r->norm.mean, sizeof eo.mean);
    memcpy(eo.std, r->norm.std, sizeof eo.std);
    eo.resize = o->resize;
    memcpy(eo.center_crop, o->center_crop, sizeof eo.center_crop);
    eo.workers = o->workers;
    int batch = cli_given(o, OPT_BATCH) ? o->batch : DEFAULT_REPORT_BATCH;
    int rc = distill_report_compare(r->teacher, r->student, r->ds, &eo, batch, &r->rep,
                                    &r->tside, &r->sside);
    if (rc)
        return cli_fail_lib(rc, "report");
    eo.batch_size = batch;
    return report_collect(o, r, &eo);
}

/* ------------------------------------------------------------- table */

typedef enum cell_kind { CELL_COUNT, CELL_US, CELL_MS, CELL_ACC } cell_kind;

/* 1234567 -> "1,234,567" */
static void format_count(char *buf, size_t size, double v)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%.0f", v);
    size_t n = strlen(digits), o = 0;
    for (size_t i = 0; i < n && o + 2 < size; i++) {
        if (i > 0 && digits[i - 1] != '-' && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
}

static void format_cell(char *buf, size_t size, cell_kind kind, double v)
{
    if (!isfinite(v) || v < 0) {
        snprintf(buf, size, "-");
        return;
    }
    switch (kind) {
    case CELL_COUNT: format_count(buf, size, v); break;
    case CELL_US: snprintf(buf, size, "%.1f us", v); break;
    case CELL_MS: snprintf(buf, size, "%.2f ms", v / 1000); break;
    default: snprintf(buf, size, "%.4f", v); break;
    }
}

/* One row: a value per model, then each later model's ratio to the first. */
static void print_row(const report_data *d, const char *label, cell_kind kind,
                      const double *v)
{
    /* one unit per row: microseconds, or milliseconds when any is long */
    for (int m = 0; m < d->n_models; m++)
        if (kind == CELL_US && v[m] >= 10000)
            kind = CELL_MS;
    printf("%-22s", label);
    char b[48];
    for (int m = 0; m < d->n_models; m++) {
        format_cell(b, sizeof b, kind, v[m]);
        printf(" %16s", b);
    }
    for (int m = 1; m < d->n_models; m++) {
        if (v[0] > 0 && v[m] >= 0 && isfinite(v[0]) && isfinite(v[m]))
            snprintf(b, sizeof b, "%.3f", v[m] / v[0]);
        else
            snprintf(b, sizeof b, "-");
        printf(" %16s", b);
    }
    printf("\n");
}

#define NAME_WIDTH 16

static void print_classes(const report_data *d)
{
    int k = d->classes;
    printf("\n%-3s %-*s %8s", "", NAME_WIDTH, "class", "samples");
    for (int m = 0; m < d->n_models; m++)
        printf(" %10.10s", d->models[m].role);
    printf("   (accuracy within the class)\n");
    for (int c = 0; c < k; c++) {
        printf("%3d %-*.*s %8lld", c, NAME_WIDTH, NAME_WIDTH, d->class_names[c],
               (long long)d->class_counts[c]);
        for (int m = 0; m < d->n_models; m++) {
            double a = report_class_accuracy(d, m, c);
            if (isfinite(a))
                printf(" %10.4f", a);
            else
                printf(" %10s", "-");
        }
        printf("\n");
    }
    for (int m = 1; m < d->n_models; m++) {
        const int64_t *cm = d->models[m].confusion;
        int64_t mx = 0;
        for (int i = 0; i < k * k; i++)
            mx = cm[i] > mx ? cm[i] : mx;
        int w = 2;
        for (; mx >= 10; mx /= 10)
            w++;
        w = w < 4 ? 4 : w;
        printf("\nconfusion matrix of the %s (rows: true class, columns: predicted class)\n%*s",
               d->models[m].role, NAME_WIDTH + 5, "");
        for (int c = 0; c < k; c++)
            printf("%*d", w, c);
        printf("\n");
        for (int r = 0; r < k; r++) {
            printf("%3d %-*.*s ", r, NAME_WIDTH, NAME_WIDTH, d->class_names[r]);
            for (int c = 0; c < k; c++)
                printf("%*lld", w, (long long)cm[(size_t)r * (size_t)k + (size_t)c]);
            printf("\n");
        }
    }
}

static void print_table(const report_data *d)
{
    char bs[48], ips[48];
    snprintf(bs, sizeof bs, "latency bs%d", d->batch_n);
    snprintf(ips, sizeof ips, "images/s (bs%d)", d->batch_n);
    printf("%-22s", "");
    for (int m = 0; m < d->n_models; m++)
        printf(" %16s", d->models[m].role);
    for (int m = 1; m < d->n_models; m++) {
        char h[48];
        snprintf(h, sizeof h, "%s/%s", d->models[m].role, d->models[0].role);
        printf(" %16s", h);
    }
    printf("\n");
    double v[REPORT_MAX_MODELS];
#define ROW(label, kind, expr)                                   \
    do {                                                         \
        for (int m = 0; m < d->n_models; m++) {                  \
            const distill_report_side *s = &d->models[m].side;   \
            v[m] = (expr);                                       \
        }                                                        \
        print_row(d, label, kind, v);                            \
    } while (0)
    ROW("parameters", CELL_COUNT, (double)s->params);
    ROW("file size (bytes)", CELL_COUNT, (double)s->file_bytes);
    ROW("MACs per image", CELL_COUNT, (double)s->macs);
    ROW("latency bs1", CELL_US, s->latency_bs1_us);
    ROW(bs, CELL_US, s->latency_bsN_us);
    ROW(ips, CELL_COUNT, s->images_per_sec);
    ROW("accuracy", CELL_ACC, s->accuracy);
#undef ROW
    printf("%-22s %16s", "agreement (top-1)", "");
    for (int m = 1; m < d->n_models; m++) {
        char ag[48];
        format_cell(ag, sizeof ag, CELL_ACC, d->models[m].agreement);
        printf(" %16s", ag);
    }
    printf("\n");
    if (d->classes > 0)
        print_classes(d);
    printf("\nthreads: %d\n", d->threads);
}

static void json_side_fields(cli_json *j, const distill_report_side *s)
{
    cli_json_int(j, "parameters", s->params);
    cli_json_int(j, "file_bytes", s->file_bytes);
    cli_json_int(j, "macs", s->macs);
    cli_json_num(j, "latency_bs1_us", s->latency_bs1_us);
    cli_json_num(j, "latency_batch_us", s->latency_bsN_us);
    cli_json_num(j, "images_per_sec", s->images_per_sec);
    cli_json_num(j, "accuracy", s->accuracy >= 0 ? s->accuracy : NAN);
}

static void json_side(cli_json *j, const char *key, const distill_report_side *s)
{
    cli_json_begin_obj(j, key);
    json_side_fields(j, s);
    cli_json_end_obj(j);
}

static double ratio(double s, double t)
{
    return t > 0 && s >= 0 ? s / t : NAN;
}

static void json_ratios(cli_json *j, const distill_report_side *t, const distill_report_side *s)
{
    cli_json_begin_obj(j, "ratio");
    cli_json_num(j, "parameters", ratio((double)s->params, (double)t->params));
    cli_json_num(j, "file_bytes", ratio((double)s->file_bytes, (double)t->file_bytes));
    cli_json_num(j, "macs", ratio((double)s->macs, (double)t->macs));
    cli_json_num(j, "latency_bs1_us", ratio(s->latency_bs1_us, t->latency_bs1_us));
    cli_json_num(j, "latency_batch_us", ratio(s->latency_bsN_us, t->latency_bsN_us));
    cli_json_num(j, "images_per_sec", ratio(s->images_per_sec, t->images_per_sec));
    cli_json_num(j, "accuracy", ratio(s->accuracy, t->accuracy));
    cli_json_end_obj(j);
}

/* "models": every model with its figures, per-class accuracy and confusion. */
static void json_models(cli_json *j, const report_data *d)
{
    size_t k = (size_t)d->classes;
    cli_json_begin_arr(j, "models");
    for (int m = 0; m < d->n_models; m++) {
        const report_model *rm = &d->models[m];
        cli_json_begin_obj(j, NULL);
        cli_json_str(j, "role", rm->role);
        cli_json_str(j, "name", rm->name);
        json_side_fields(j, &rm->side);
        cli_json_num(j, "agreement", rm->agreement);
        if (rm->confusion) {
            cli_json_begin_arr(j, "per_class_accuracy");
            for (size_t c = 0; c < k; c++)
                cli_json_elem_num(j, report_class_accuracy(d, m, (int)c));
            cli_json_end_arr(j);
            cli_json_begin_arr(j, "confusion");
            for (size_t r = 0; r < k; r++) {
                cli_json_begin_arr(j, NULL);
                for (size_t c = 0; c < k; c++)
                    cli_json_elem_int(j, rm->confusion[r * k + c]);
                cli_json_end_arr(j);
            }
            cli_json_end_arr(j);
        }
        cli_json_end_obj(j);
    }
    cli_json_end_arr(j);
}

static void print_json(const report_data *d)
{
    cli_json j;
    cli_json_open(&j, stdout);
    json_side(&j, "teacher", &d->models[0].side);
    json_side(&j, "student", &d->models[1].side);
    json_ratios(&j, &d->models[0].side, &d->models[1].side);
    cli_json_num(&j, "agreement", d->models[1].agreement);
    cli_json_int(&j, "batch", d->batch_n);
    cli_json_int(&j, "threads", d->threads);
    cli_json_int(&j, "samples", d->samples);
    if (d->classes > 0) {
        cli_json_begin_arr(&j, "class_names");
        for (int c = 0; c < d->classes; c++)
            cli_json_elem_str(&j, d->class_names[c]);
        cli_json_end_arr(&j);
        cli_json_begin_arr(&j, "class_counts");
        for (int c = 0; c < d->classes; c++)
            cli_json_elem_int(&j, d->class_counts[c]);
        cli_json_end_arr(&j);
    }
    json_models(&j, d);
    cli_json_close(&j);
}

int cli_cmd_report(const cli_command *cmd, const cli_options *o)
{
    report_run r;
    memset(&r, 0, sizeof r);
    const distill_report rep_init = DISTILL_REPORT_INIT;
    const distill_report_side side_init = DISTILL_REPORT_SIDE_INIT;
    r.rep = rep_init;
    r.tside = r.sside = side_init;
    int rc = report_args(cmd, o, &r);
    if (rc == CLI_OK) {
        cli_apply_threads(o);
        rc = report_open(o, &r);
    }
    if (rc == CLI_OK)
        rc = report_measure(o, &r);
    if (rc == CLI_OK && o->html)
        rc = report_write_html(&r.d, o->html);
    if (rc == CLI_OK) {
        if (o->json)
            print_json(&r.d);
        else
            print_table(&r.d);
    }
    report_run_free(&r);
    return rc;
}

/*
 * cmd_report.c - `distill report`: teacher and student side by side.
 */
#include <math.h>
#include <string.h>

#include "cli.h"

#define DEFAULT_REPORT_BATCH 128

typedef struct report_run {
    cli_data_spec spec;
    cli_norm norm;
    distill_model *teacher, *student;
    distill_dataset *ds;
    distill_report rep;
} report_run;

static void report_run_free(report_run *r)
{
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
    int rc = distill_report_compare(r->teacher, r->student, r->ds, &eo, batch, &r->rep);
    return rc ? cli_fail_lib(rc, "report") : CLI_OK;
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

static void print_row(const char *label, cell_kind kind, double t, double s)
{
    /* one unit per row: microseconds, or milliseconds when either is long */
    if (kind == CELL_US && (t >= 10000 || s >= 10000))
        kind = CELL_MS;
    char tb[48], sb[48], rb[48];
    format_cell(tb, sizeof tb, kind, t);
    format_cell(sb, sizeof sb, kind, s);
    if (t > 0 && s >= 0 && isfinite(t) && isfinite(s))
        snprintf(rb, sizeof rb, "%.3f", s / t);
    else
        snprintf(rb, sizeof rb, "-");
    printf("%-22s %16s %16s %16s\n", label, tb, sb, rb);
}

static void print_table(const distill_report *rep)
{
    const distill_report_side *t = &rep->teacher, *s = &rep->student;
    char bs[48], ips[48];
    snprintf(bs, sizeof bs, "latency bs%d", rep->batch_n);
    snprintf(ips, sizeof ips, "images/s (bs%d)", rep->batch_n);
    printf("%-22s %16s %16s %16s\n", "", "teacher", "student", "student/teacher");
    print_row("parameters", CELL_COUNT, (double)t->params, (double)s->params);
    print_row("file size (bytes)", CELL_COUNT, (double)t->file_bytes, (double)s->file_bytes);
    print_row("MACs per image", CELL_COUNT, (double)t->macs, (double)s->macs);
    print_row("latency bs1", CELL_US, t->latency_bs1_us, s->latency_bs1_us);
    print_row(bs, CELL_US, t->latency_bsN_us, s->latency_bsN_us);
    print_row(ips, CELL_COUNT, t->images_per_sec, s->images_per_sec);
    print_row("accuracy", CELL_ACC, t->accuracy, s->accuracy);
    char ag[48];
    format_cell(ag, sizeof ag, CELL_ACC, rep->agreement);
    printf("%-22s %16s %16s %16s\n", "agreement (top-1)", "", ag, "");
    printf("\nthreads: %d\n", rep->threads);
}

static void json_side(cli_json *j, const char *key, const distill_report_side *s)
{
    cli_json_begin_obj(j, key);
    cli_json_int(j, "parameters", s->params);
    cli_json_int(j, "file_bytes", s->file_bytes);
    cli_json_int(j, "macs", s->macs);
    cli_json_num(j, "latency_bs1_us", s->latency_bs1_us);
    cli_json_num(j, "latency_batch_us", s->latency_bsN_us);
    cli_json_num(j, "images_per_sec", s->images_per_sec);
    cli_json_num(j, "accuracy", s->accuracy >= 0 ? s->accuracy : NAN);
    cli_json_end_obj(j);
}

static double ratio(double s, double t)
{
    return t > 0 && s >= 0 ? s / t : NAN;
}

static void json_ratios(cli_json *j, const distill_report *r)
{
    const distill_report_side *t = &r->teacher, *s = &r->student;
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

static void print_json(const distill_report *rep)
{
    cli_json j;
    cli_json_open(&j, stdout);
    json_side(&j, "teacher", &rep->teacher);
    json_side(&j, "student", &rep->student);
    json_ratios(&j, rep);
    cli_json_num(&j, "agreement", rep->agreement >= 0 ? rep->agreement : NAN);
    cli_json_int(&j, "batch", rep->batch_n);
    cli_json_int(&j, "threads", rep->threads);
    cli_json_close(&j);
}

int cli_cmd_report(const cli_command *cmd, const cli_options *o)
{
    report_run r;
    memset(&r, 0, sizeof r);
    int rc = report_args(cmd, o, &r);
    if (rc == CLI_OK) {
        cli_apply_threads(o);
        rc = report_open(o, &r);
    }
    if (rc == CLI_OK)
        rc = report_measure(o, &r);
    if (rc == CLI_OK) {
        if (o->json)
            print_json(&r.rep);
        else
            print_table(&r.rep);
    }
    report_run_free(&r);
    return rc;
}

/*
 * cmd_eval.c - `distill eval` and `distill summary`.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define DEFAULT_EVAL_BATCH 256
#define NAME_WIDTH 12

typedef struct eval_run {
    cli_data_spec spec;
    cli_norm norm;
    distill_model *model;
    distill_dataset *ds;
    int64_t *confusion;
    int classes;
    distill_eval_result res;
} eval_run;

static void eval_run_free(eval_run *e)
{
    free(e->confusion);
    distill_dataset_free(e->ds);
    distill_model_free(e->model);
    cli_data_spec_free(&e->spec);
}

static int eval_open(eval_run *e, const cli_command *cmd, const cli_options *o)
{
    int rc;
    if ((rc = cli_require(cmd, o, OPT_MODEL)) || (rc = cli_require(cmd, o, OPT_DATA)) ||
        (rc = cli_data_parse("--data", o->data, &e->spec)) ||
        (rc = cli_norm_get(&e->spec, o, &e->norm)))
        return rc;
    cli_apply_threads(o);
    int64_t shape[3] = {0, 0, 0};
    const char *what = "model";
    if ((rc = cli_model_open("--model", o->model, NULL, &e->model)) ||
        (rc = cli_model_input_shape("model", e->model, shape)) ||
        (rc = cli_norm_from_models(o, 1, &e->model, &what, &e->norm)) ||
        (rc = cli_data_load(&e->spec, CLI_SPLIT_TEST, shape, o, o->limit, &e->ds)))
        return rc;
    if (!distill_dataset_has_labels(e->ds))
        return cli_fail(CLI_ERUNTIME, "--data %s has no labels to evaluate against", o->data);
    if ((rc = cli_check_fit("model", e->model, "data", e->ds, 1, o, 0)))
        return rc;
    e->classes = cli_model_classes(e->model);
    return CLI_OK;
}

static int eval_measure(eval_run *e, const cli_options *o)
{
    distill_eval_options eo;
    distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION);
    eo.batch_size = cli_given(o, OPT_BATCH) ? o->batch : DEFAULT_EVAL_BATCH;
    eo.norm_count = e->norm.count;
    memcpy(eo.mean, e->norm.mean, sizeof eo.mean);
    memcpy(eo.std, e->norm.std, sizeof eo.std);
    eo.resize = o->resize;
    memcpy(eo.center_crop, o->center_crop, sizeof eo.center_crop);
    eo.workers = o->workers;
    if (o->confusion) {
        size_t n = (size_t)e->classes * (size_t)e->classes;
        e->confusion = calloc(n, sizeof *e->confusion);
        if (!e->confusion)
            return cli_fail(CLI_ERUNTIME, "out of memory");
        eo.confusion = e->confusion;
    }
    e->res.version = DISTILL_EVAL_RESULT_VERSION;
    int rc = distill_evaluate(e->model, e->ds, &eo, &e->res);
    return rc ? cli_fail_lib(rc, "evaluating %s", o->model) : CLI_OK;
}

/* ------------------------------------------------------------- output */

static int count_width(const eval_run *e)
{
    int64_t mx = 0;
    for (int i = 0; i < e->classes * e->classes; i++)
        mx = e->confusion[i] > mx ? e->confusion[i] : mx;
    int w = 1;
    for (; mx >= 10; mx /= 10)
        w++;
    return w < 3 ? 4 : w + 1;
}

static void print_confusion(const eval_run *e)
{
    int w = count_width(e), k = e->classes;
    printf("\nconfusion matrix (rows: true class, columns: predicted class)\n%*s", NAME_WIDTH + 5,
           "");
    for (int c = 0; c < k; c++)
        printf("%*d", w, c);
    printf("\n");
    for (int r = 0; r < k; r++) {
        const char *name = distill_dataset_class_name(e->ds, r);
        if (!name)
            name = distill_model_class_name(e->model, r);
        printf("%3d %-*.*s ", r, NAME_WIDTH, NAME_WIDTH, name ? name : "");
        for (int c = 0; c < k; c++)
            printf("%*lld", w, (long long)e->confusion[(size_t)r * (size_t)k + (size_t)c]);
        printf("\n");
    }
}

static void json_confusion(cli_json *j, const eval_run *e)
{
    int k = e->classes;
    cli_json_begin_arr(j, "confusion");
    for (int r = 0; r < k; r++) {
        cli_json_begin_arr(j, NULL);
        for (int c = 0; c < k; c++)
            cli_json_elem_int(j, e->confusion[(size_t)r * (size_t)k + (size_t)c]);
        cli_json_end_arr(j);
    }
    cli_json_end_arr(j);
}

static void eval_print(const eval_run *e, const cli_options *o)
{
    if (o->json) {
        cli_json j;
        cli_json_open(&j, stdout);
        cli_json_num(&j, "accuracy", e->res.top1);
        cli_json_num(&j, "top5", e->res.top5);
        cli_json_num(&j, "loss", e->res.loss);
        cli_json_int(&j, "count", e->res.count);
        if (e->confusion)
            json_confusion(&j, e);
        cli_json_close(&j);
        return;
    }
    printf("accuracy  %.4f (top-1)\n", e->res.top1);
    printf("top-5     %.4f\n", e->res.top5);
    printf("loss      %.4f (mean cross-entropy)\n", e->res.loss);
    printf("count     %lld\n", (long long)e->res.count);
    if (e->confusion)
        print_confusion(e);
}

int cli_cmd_eval(const cli_command *cmd, const cli_options *o)
{
    eval_run e;
    memset(&e, 0, sizeof e);
    int rc = eval_open(&e, cmd, o);
    if (rc == CLI_OK)
        rc = eval_measure(&e, o);
    if (rc == CLI_OK)
        eval_print(&e, o);
    eval_run_free(&e);
    return rc;
}

/* ------------------------------------------------------------- summary */

/* The zoo options --channels, --size, --classes and --width give. */
static void zoo_from_options(const cli_options *o, distill_zoo_options *zo)
{
    distill_zoo_options init = DISTILL_ZOO_OPTIONS_INIT;
    *zo = init;
    if (cli_given(o, OPT_CHANNELS))
        zo->in_channels = o->channels;
    if (cli_given(o, OPT_SIZE))
        zo->height = o->height, zo->width = o->width;
    if (cli_given(o, OPT_CLASSES))
        zo->classes = o->classes;
    if (cli_given(o, OPT_WIDTH))
        zo->width_mult_pct = o->width_pct;
}

int cli_cmd_summary(const cli_command *cmd, const cli_options *o)
{
    int rc = cli_require(cmd, o, OPT_MODEL);
    if (rc)
        return rc;
    distill_zoo_options zo;
    zoo_from_options(o, &zo);
    distill_model *m;
    if ((rc = cli_model_open("--model", o->model, &zo, &m)))
        return rc;
    int lrc = distill_model_print_summary(m, stdout);
    if (lrc == DISTILL_OK)
        cli_print_metadata(m, stdout);
    fflush(stdout);
    if (lrc)
        rc = cli_fail_lib(lrc, "summary of %s", o->model);
    distill_model_free(m);
    return rc;
}

int cli_cmd_export(const cli_command *cmd, const cli_options *o)
{
    int rc = cli_require(cmd, o, OPT_MODEL);
    if (rc || (rc = cli_require(cmd, o, OPT_OUT)))
        return rc;
    distill_zoo_options zo;
    zoo_from_options(o, &zo);
    distill_model *m;
    if ((rc = cli_model_open("--model", o->model, &zo, &m)))
        return rc;
    while (o->no_metadata && distill_model_metadata_count(m) > 0)
        distill_model_set_metadata(m, distill_model_metadata_key(m, 0), NULL);
    rc = cli_model_write("--out", m, o->out);
    distill_model_free(m);
    return rc;
}

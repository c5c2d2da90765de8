/*
 * cmd_predict.c - `distill predict`: classify single PNG or JPEG files.
 *
 * The public API reads images only as whole folders (distill_dataset_from_folder),
 * so each image is read through a private temporary folder holding one
 * symbolic link to it; that gives exactly the decoding, channel conversion
 * and resizing of the training data.  Probabilities come from a softmax
 * node added after the model's logits.  The normalization and the class
 * names are the ones the model records, unless --mean/--std say otherwise
 * (names: else those of --data, else numbers).
 */
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define MAX_TOP 1000

typedef struct predictor {
    const cli_options *o;
    cli_data_spec spec;
    int have_spec;
    cli_norm norm;
    distill_model *model;
    distill_dataset *names;   /* class names, from --data; may be NULL */
    int64_t shape[3];
    int classes;
    distill_tensor *x, *y;
    char dir[3800];           /* the temporary folder; "" if none */
    char cls[3900];           /* dir/img */
    char link[4000];          /* dir/img/image.png */
} predictor;

/* ------------------------------------------------------------- temp folder */

static int temp_open(predictor *p)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    snprintf(p->dir, sizeof p->dir, "%s/distill-predict-XXXXXX", tmp);
    if (!mkdtemp(p->dir)) {
        int e = errno;
        p->dir[0] = '\0';
        return cli_fail(CLI_ERUNTIME, "cannot create a temporary folder in %s: %s", tmp,
                        strerror(e));
    }
    snprintf(p->cls, sizeof p->cls, "%s/img", p->dir);
    snprintf(p->link, sizeof p->link, "%s/image.png", p->cls);
    if (mkdir(p->cls, 0700) != 0)
        return cli_fail(CLI_ERUNTIME, "cannot create %s: %s", p->cls, strerror(errno));
    return CLI_OK;
}

static void temp_close(predictor *p)
{
    if (!p->dir[0])
        return;
    unlink(p->link);
    rmdir(p->cls);
    rmdir(p->dir);
}

/* ------------------------------------------------------------- setup */

static void predictor_free(predictor *p)
{
    temp_close(p);
    distill_tensor_free(p->x);
    distill_tensor_free(p->y);
    distill_dataset_free(p->names);
    distill_model_free(p->model);
    cli_data_spec_free(&p->spec);
}

static int open_names(predictor *p)
{
    if (!p->have_spec)
        return CLI_OK;
    int rc = cli_data_load(&p->spec, CLI_SPLIT_TEST, p->shape, p->o, 1, &p->names);
    if (rc)
        return rc;
    int dc = distill_dataset_num_classes(p->names);
    if (dc > 0 && dc != p->classes)
        return cli_fail(CLI_ERUNTIME, "model has %d classes, data has %d", p->classes, dc);
    return cli_check_names("model", p->model, "data", p->names, p->o);
}

/* Let the model compute the probabilities: a softmax after its logits. */
static int add_softmax(predictor *p)
{
    const char *name = "predict.softmax";
    int rc = distill_model_add_softmax(p->model, name, distill_model_output_name(p->model));
    if (rc == DISTILL_OK)
        rc = distill_model_set_output(p->model, name);
    return rc ? cli_fail_lib(rc, "--model %s", p->o->model) : CLI_OK;
}

static int predictor_open(predictor *p, const cli_command *cmd, const cli_options *o)
{
    int rc = cli_require(cmd, o, OPT_MODEL);
    if (rc)
        return rc;
    if (o->n_inputs == 0)
        return cli_fail(CLI_EUSAGE, "%s: no image given (see 'distill %s --help')", cmd->name,
                        cmd->name);
    p->have_spec = cli_given(o, OPT_DATA);
    if ((p->have_spec && (rc = cli_data_parse("--data", o->data, &p->spec))) ||
        (rc = cli_norm_get(p->have_spec ? &p->spec : NULL, o, &p->norm)))
        return rc;
    cli_apply_threads(o);
    const char *what = "model";
    if ((rc = cli_model_open("--model", o->model, NULL, &p->model)) ||
        (rc = cli_model_input_shape("model", p->model, p->shape)) ||
        (rc = cli_norm_from_models(o, 1, &p->model, &what, &p->norm)))
        return rc;
    p->classes = cli_model_classes(p->model);
    if (p->classes < 2)
        return cli_fail(CLI_ERUNTIME, "model: the output is not a vector of class logits");
    if ((rc = add_softmax(p)))
        return rc;
    if (p->norm.count > 1 && p->norm.count != p->shape[0])
        return cli_fail(CLI_EUSAGE, "--mean/--std have %d values, the model takes %lld channels",
                        p->norm.count, (long long)p->shape[0]);
    int64_t xd[4] = {1, p->shape[0], p->shape[1], p->shape[2]}, yd[2] = {1, p->classes};
    int lrc;
    if ((lrc = distill_tensor_create(&p->x, 4, xd)) || (lrc = distill_tensor_create(&p->y, 2, yd)))
        return cli_fail_lib(lrc, "predict");
    if ((rc = open_names(p)))
        return rc;
    return temp_open(p);
}

/* ------------------------------------------------------------- one image */

/* The library's message, with the temporary link's name replaced by `path`. */
static int fail_image(const predictor *p, int rc, const char *path)
{
    const char *msg = distill_last_error();
    char buf[2048];
    const char *at = msg ? strstr(msg, p->link) : NULL;
    if (!msg || !*msg)
        snprintf(buf, sizeof buf, "%s", distill_strerror(rc));
    else if (at) /* the message names the file: no need to say it twice */
        return cli_fail(CLI_ERUNTIME, "%.*s%s%s", (int)(at - msg), msg, path,
                        at + strlen(p->link));
    else
        snprintf(buf, sizeof buf, "%s", msg);
    return cli_fail(CLI_ERUNTIME, "%s: %s", path, buf);
}

static int read_image(predictor *p, const char *path)
{
    if (access(path, R_OK) != 0)
        return cli_fail(CLI_ERUNTIME, "%s: %s", path, strerror(errno));
    char *abs = realpath(path, NULL);
    if (!abs)
        return cli_fail(CLI_ERUNTIME, "%s: %s", path, strerror(errno));
    unlink(p->link);
    int ok = symlink(abs, p->link) == 0;
    int e = errno;
    free(abs);
    if (!ok)
        return cli_fail(CLI_ERUNTIME, "%s: cannot link it into %s: %s", path, p->cls, strerror(e));

    distill_folder_options fo;
    distill_folder_options_init(&fo, DISTILL_FOLDER_OPTIONS_VERSION);
    fo.channels = (int)p->shape[0];
    fo.height = (int)p->shape[1];
    fo.width = (int)p->shape[2];
    fo.resize = DISTILL_RESIZE_BILINEAR;
    distill_dataset *ds;
    int rc = distill_dataset_from_folder(&ds, p->dir, &fo);
    if (rc)
        return fail_image(p, rc, path);
    float *x = distill_tensor_data(p->x);
    rc = distill_dataset_get(ds, 0, x, (size_t)distill_tensor_numel(p->x), NULL);
    distill_dataset_free(ds);
    return rc ? fail_image(p, rc, path) : CLI_OK;
}

static void normalize(predictor *p)
{
    if (p->norm.count == 0)
        return;
    float *x = distill_tensor_data(p->x);
    int64_t plane = p->shape[1] * p->shape[2];
    for (int64_t c = 0; c < p->shape[0]; c++) {
        int k = p->norm.count == 1 ? 0 : (int)c;
        for (int64_t i = 0; i < plane; i++)
            x[c * plane + i] = (x[c * plane + i] - p->norm.mean[k]) / p->norm.std[k];
    }
}

/* Index of the largest value not yet taken. */
static int next_best(const float *v, int n, const unsigned char *taken)
{
    int b = -1;
    for (int i = 0; i < n; i++)
        if (!taken[i] && (b < 0 || v[i] > v[b]))
            b = i;
    return b;
}

static void print_class(const predictor *p, int k, float prob)
{
    const char *name = distill_model_class_name(p->model, k);
    if (!name && p->names)
        name = distill_dataset_class_name(p->names, k);
    if (name)
        printf("%s (%.4f)", name, (double)prob);
    else
        printf("%d (%.4f)", k, (double)prob);
}

static int print_top(const predictor *p, const char *path, const float *prob)
{
    int top = p->o->top > 0 ? p->o->top : 1;
    top = top < p->classes ? top : p->classes;
    unsigned char *taken = calloc((size_t)p->classes, 1);
    if (!taken)
        return cli_fail(CLI_ERUNTIME, "out of memory");
    printf("%s: ", path);
    for (int i = 0; i < top; i++) {
        int b = next_best(prob, p->classes, taken);
        taken[b] = 1;
        if (i)
            printf(", ");
        print_class(p, b, prob[b]);
    }
    printf("\n");
    fflush(stdout);
    free(taken);
    return CLI_OK;
}

static int predict_one(predictor *p, const char *path)
{
    int rc = read_image(p, path);
    if (rc)
        return rc;
    normalize(p);
    if ((rc = distill_model_forward(p->model, p->x, DISTILL_MODE_INFERENCE, p->y)))
        return cli_fail_lib(rc, "%s", path);
    return print_top(p, path, distill_tensor_data(p->y));
}

int cli_cmd_predict(const cli_command *cmd, const cli_options *o)
{
    predictor p;
    memset(&p, 0, sizeof p);
    p.o = o;
    int rc = predictor_open(&p, cmd, o), failed = 0;
    /* a bad image is reported and skipped; the exit status tells */
    for (int i = 0; rc == CLI_OK && i < o->n_inputs; i++)
        if (predict_one(&p, o->inputs[i]))
            failed = 1;
    predictor_free(&p);
    return rc ? rc : failed ? CLI_ERUNTIME : CLI_OK;
}

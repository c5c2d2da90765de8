/*
 * meta.c - what the program reads from and writes into a model's metadata
 * (include/distill/model.h, "Metadata"): the normalization a model expects
 * as the default of --mean/--std, its class names against the data's, and
 * the description `train` and `distill` record in the models they write.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ------------------------------------------------------- normalization */

static int same_norm(const cli_norm *a, const cli_norm *b)
{
    if (a->count != b->count)
        return 0;
    for (int c = 0; c < a->count; c++)
        if (a->mean[c] != b->mean[c] || a->std[c] != b->std[c])
            return 0;
    return 1;
}

static void format_norm(const cli_norm *n, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int part = 0; part < 2; part++) {
        const float *v = part ? n->std : n->mean;
        len += (size_t)snprintf(buf + len, size > len ? size - len : 0, "%s", part ? " std " : "mean ");
        for (int c = 0; c < n->count && len < size; c++)
            len += (size_t)snprintf(buf + len, size - len, "%s%g", c ? "," : "", (double)v[c]);
    }
}

/* The normalization m records, in n; 0 when it records none. */
static int model_norm(const char *what, const distill_model *m, cli_norm *n, int *found)
{
    memset(n, 0, sizeof *n);
    *found = 0;
    int count = 0;
    int rc = distill_model_get_normalization(m, &count, n->mean, n->std, 4);
    if (rc)
        return cli_fail_lib(rc, "%s", what);
    if (count > 4)
        return cli_fail(CLI_ERUNTIME, "%s records a normalization of %d channels; the program "
                                      "handles up to 4 (give --mean and --std)",
                        what, count);
    n->count = count;
    *found = count > 0;
    return CLI_OK;
}

int cli_norm_from_models(const cli_options *o, int n, distill_model *const *models,
                         const char *const *whats, cli_norm *norm)
{
    if (o->mean_imagenet || cli_given(o, OPT_MEAN) || cli_given(o, OPT_STD))
        return CLI_OK; /* the command line's, checked by cli_norm_get */
    cli_norm first;
    const char *first_what = NULL;
    for (int i = 0; i < n; i++) {
        cli_norm mn;
        int found, rc = model_norm(whats[i], models[i], &mn, &found);
        if (rc)
            return rc;
        if (!found)
            continue;
        if (first_what && !same_norm(&first, &mn)) {
            char a[160], b[160];
            format_norm(&first, a, sizeof a);
            format_norm(&mn, b, sizeof b);
            return cli_fail(CLI_EUSAGE, "%s expects the normalization %s, %s expects %s (give "
                            "--mean and --std)",
                            first_what, a, whats[i], b);
        }
        if (!first_what) {
            first = mn;
            first_what = whats[i];
        }
    }
    if (first_what)
        *norm = first;
    return CLI_OK;
}

/* ------------------------------------------------------- class names */

/* "a, b, c" from `get`, cut short with ", ..." to fit in size. */
static void format_names(char *buf, size_t size, int n,
                         const char *(*get)(const void *, int), const void *src)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int k = 0; k < n; k++) {
        const char *name = get(src, k);
        size_t need = strlen(name) + 2;
        if (len + need + 6 > size) {
            snprintf(buf + len, size - len, "%s...", k ? ", " : "");
            return;
        }
        len += (size_t)snprintf(buf + len, size - len, "%s%s", k ? ", " : "", name);
    }
}

static const char *model_name_of(const void *m, int k)
{
    return distill_model_class_name(m, k);
}

static const char *data_name_of(const void *ds, int k)
{
    return distill_dataset_class_name(ds, k);
}

/* Nonzero if ds names every one of its classes. */
static int data_has_names(const distill_dataset *ds)
{
    int k = distill_dataset_num_classes(ds);
    for (int i = 0; i < k; i++)
        if (!distill_dataset_class_name(ds, i))
            return 0;
    return k > 0;
}

int cli_check_names(const char *what, const distill_model *m, const char *data_what,
                    const distill_dataset *ds, const cli_options *o)
{
    int mc = distill_model_class_count(m), dc = distill_dataset_num_classes(ds);
    if (o->allow_mismatch || mc == 0 || mc != dc || !data_has_names(ds))
        return CLI_OK;
    for (int k = 0; k < mc; k++) {
        const char *a = distill_model_class_name(m, k), *b = distill_dataset_class_name(ds, k);
        if (strcmp(a, b) == 0)
            continue;
        char ma[200], da[200];
        format_names(ma, sizeof ma, mc, model_name_of, m);
        format_names(da, sizeof da, dc, data_name_of, ds);
        return cli_fail(CLI_ERUNTIME, "%s was trained on the classes %s; %s has %s (class %d "
                        "is '%s' against '%s'; --allow-mismatch matches classes by number)",
                        what, ma, data_what, da, k, a, b);
    }
    return CLI_OK;
}

/* ------------------------------------------------------- recording */

/* Class names for the model of a run on `train`: the data's, else those
 * `from` records (a teacher, the model continued), when they are as many
 * as the model's logits.  n is 0 when there are none. */
static int run_class_names(const distill_model *m, const distill_dataset *train,
                           const distill_model *from, const char ***out, int *n)
{
    int k = cli_model_classes(m);
    *out = NULL;
    *n = 0;
    const char **names = calloc((size_t)(k > 0 ? k : 1), sizeof *names);
    if (!names)
        return cli_fail(CLI_ERUNTIME, "out of memory");
    if (data_has_names(train) && distill_dataset_num_classes(train) == k) {
        for (int i = 0; i < k; i++)
            names[i] = distill_dataset_class_name(train, i);
    } else if (from && distill_model_class_count(from) == k) {
        for (int i = 0; i < k; i++)
            names[i] = distill_model_class_name(from, i);
    } else {
        free(names);
        return CLI_OK;
    }
    *out = names;
    *n = k;
    return CLI_OK;
}

int cli_describe_model(distill_model *m, const distill_dataset *train, const cli_norm *norm,
                       const distill_model *names_from, const cli_provenance *p)
{
    int64_t d[3];
    char shape[96], seed[32], fp[DISTILL_FINGERPRINT_SIZE], lib[64];
    distill_dataset_sample_dims(train, d);
    snprintf(shape, sizeof shape, "%lld,%lld,%lld", (long long)d[0], (long long)d[1],
             (long long)d[2]);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)p->seed);
    snprintf(lib, sizeof lib, "libdistill %s", distill_version());
    int rc = distill_dataset_fingerprint(train, fp, sizeof fp);
    if (rc)
        return cli_fail_lib(rc, "fingerprint of the training data");
    /* no normalization given: the model takes the values as they are */
    static const float zero = 0.0f, one = 1.0f;
    const char **names = NULL;
    int n_names = 0;
    if ((rc = run_class_names(m, train, names_from, &names, &n_names)))
        return rc;
    if (!(rc = distill_model_set_metadata(m, DISTILL_META_DATA_SHAPE, shape)) &&
        !(rc = norm->count ? distill_model_set_normalization(m, norm->count, norm->mean, norm->std)
                           : distill_model_set_normalization(m, 1, &zero, &one)) &&
        !(rc = n_names ? distill_model_set_class_names(m, n_names, names) : DISTILL_OK) &&
        !(rc = distill_model_set_metadata(m, DISTILL_META_LIBRARY, lib)) &&
        !(rc = distill_model_set_metadata(m, DISTILL_META_COMMAND, p->command)) &&
        !(rc = distill_model_set_metadata(m, DISTILL_META_OPTIONS, p->options_json)) &&
        !(rc = distill_model_set_metadata(m, DISTILL_META_SEED, seed)))
        rc = distill_model_set_metadata(m, DISTILL_META_DATA, fp);
    free(names);
    return rc ? cli_fail_lib(rc, "recording the model's metadata") : CLI_OK;
}

/* ------------------------------------------------------- printing */

void cli_print_metadata(const distill_model *m, FILE *f)
{
    size_t n = distill_model_metadata_count(m);
    if (n == 0)
        return;
    fprintf(f, "\nmetadata:\n");
    for (size_t i = 0; i < n; i++) {
        const char *key = distill_model_metadata_key(m, i);
        const char *v = distill_model_get_metadata(m, key);
        fprintf(f, "  %-20s ", key);
        /* one line per entry: the class names' newlines as ", " */
        for (const char *c = v; *c; c++) {
            if (*c == '\n')
                fputs(", ", f);
            else
                fputc(*c, f);
        }
        fputc('\n', f);
    }
}

/*
 * data.c - --data specs, datasets, normalization, and opening models.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli.h"

#define FMNIST_MEAN 0.2860f
#define FMNIST_STD 0.3530f

/* ------------------------------------------------------------- specs */

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A list file by its name: *.csv, *.txt or *.lst (any case). */
static int is_list_name(const char *path)
{
    size_t n = strlen(path);
    if (n < 5 || is_dir(path))
        return 0;
    const char *e = path + n - 4;
    return !strcasecmp(e, ".csv") || !strcasecmp(e, ".txt") || !strcasecmp(e, ".lst");
}

static int parse_idx(const char *opt, const char *text, cli_data_spec *spec)
{
    spec->kind = CLI_DATA_IDX;
    spec->buf = malloc(strlen(text + 4) + 1);
    if (!spec->buf)
        return cli_fail(CLI_ERUNTIME, "out of memory");
    strcpy(spec->buf, text + 4);
    char *images = spec->buf, *labels = strchr(images, ','), *classes = NULL;
    if (labels) {
        *labels++ = '\0';
        classes = strchr(labels, ',');
        if (classes)
            *classes++ = '\0';
    }
    if (!*images || (labels && !*labels))
        return cli_fail(CLI_EUSAGE, "%s %s: expected idx:IMAGES[,LABELS[,CLASSES]]", opt, text);
    spec->images = images;
    spec->labels = labels;
    if (classes) {
        char *end;
        errno = 0;
        long c = strtol(classes, &end, 10);
        if (errno || end == classes || *end || c < 1 || c > 1000000)
            return cli_fail(CLI_EUSAGE, "%s %s: CLASSES must be a positive integer", opt, text);
        spec->classes = (int)c;
    }
    return CLI_OK;
}

int cli_data_parse(const char *opt, const char *text, cli_data_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->text = text;
    if (strcmp(text, "fashion-mnist") == 0) {
        spec->kind = CLI_DATA_FASHION_MNIST;
        return CLI_OK;
    }
    if (strcmp(opt, "--val") == 0 && strcmp(text, "none") == 0) {
        spec->kind = CLI_DATA_NONE;
        return CLI_OK;
    }
    if (strncmp(text, "idx:", 4) == 0)
        return parse_idx(opt, text, spec);
    if (strncmp(text, "list:", 5) == 0 || is_list_name(text)) {
        const char *path = strncmp(text, "list:", 5) == 0 ? text + 5 : text;
        if (!*path)
            return cli_fail(CLI_EUSAGE, "%s %s: expected list:FILE", opt, text);
        spec->kind = CLI_DATA_LIST;
        spec->folder = path;
        return CLI_OK;
    }
    if (!is_dir(text))
        return cli_fail(CLI_EUSAGE,
                        "%s %s: not fashion-mnist, idx:IMAGES,LABELS, list:FILE, a .csv/.txt "
                        "list file or an existing folder of PNG/JPEG images",
                        opt, text);
    spec->kind = CLI_DATA_FOLDER;
    spec->folder = text;
    return CLI_OK;
}

void cli_data_spec_free(cli_data_spec *spec)
{
    free(spec->buf);
    spec->buf = NULL;
}

/* ------------------------------------------------------------- loading */

/*
 * An image folder for a model of input `shape` is read with the model's
 * channels, at --size if given, else at the model's input size; the
 * transforms then bring it to the model's size (checked by
 * cli_check_fit, which names the conflict).  --channels that differ from
 * the model's are a conflict, refused here.
 */
static int load_folder(const cli_data_spec *spec, const int64_t *shape, const cli_options *o,
                       distill_dataset **out)
{
    distill_folder_options fo;
    distill_folder_options_init(&fo, DISTILL_FOLDER_OPTIONS_VERSION);
    fo.resize = DISTILL_RESIZE_BILINEAR;
    fo.memory_limit = cli_given(o, OPT_MEMORY) ? o->memory : 0;
    if (shape) {
        if (cli_given(o, OPT_CHANNELS) && o->channels != shape[0])
            return cli_fail(CLI_EUSAGE, "--channels %d conflicts with the model's input, which "
                            "has %lld channel%s (leave --channels out: folders are read with "
                            "the model's channels)",
                            o->channels, (long long)shape[0], shape[0] == 1 ? "" : "s");
        fo.channels = (int)shape[0];
        fo.height = cli_given(o, OPT_SIZE) ? o->height : (int)shape[1];
        fo.width = cli_given(o, OPT_SIZE) ? o->width : (int)shape[2];
    } else {
        fo.channels = cli_given(o, OPT_CHANNELS) ? o->channels : 3;
        fo.height = o->height;
        fo.width = o->width;
    }
    cli_load_progress lp;
    cli_load_progress_init(&lp, spec->text, o->quiet);
    fo.progress = cli_load_progress_cb;
    fo.progress_payload = &lp;
    int rc = spec->kind == CLI_DATA_LIST ? distill_dataset_from_list(out, spec->folder, &fo)
                                         : distill_dataset_from_folder(out, spec->folder, &fo);
    cli_load_progress_end(&lp);
    if (rc == DISTILL_ECANCELLED && cli_interrupted())
        return cli_fail(CLI_EINTERRUPTED, "--data %s: interrupted while loading", spec->text);
    if (rc)
        return cli_fail_lib(rc, "--data %s", spec->text);
    return CLI_OK;
}

static int load_source(const cli_data_spec *spec, cli_split split, const int64_t *shape,
                       const cli_options *o, distill_dataset **out)
{
    int rc;
    switch (spec->kind) {
    case CLI_DATA_FASHION_MNIST:
        rc = distill_dataset_fashion_mnist(out, NULL, (int)split);
        if (rc == DISTILL_ENOTFOUND)
            return cli_fail(CLI_ERUNTIME, "--data fashion-mnist: %s (install "
                                          "dataset-fashion-mnist or set FASHION_MNIST_DIR)",
                            distill_last_error());
        return rc ? cli_fail_lib(rc, "--data fashion-mnist") : CLI_OK;
    case CLI_DATA_IDX:
        rc = distill_dataset_from_idx(out, spec->images, spec->labels, spec->classes);
        return rc ? cli_fail_lib(rc, "--data %s", spec->text) : CLI_OK;
    case CLI_DATA_FOLDER:
    case CLI_DATA_LIST:
        return load_folder(spec, shape, o, out);
    default:
        *out = NULL;
        return CLI_OK;
    }
}

/*
 * --allow-mismatch: a 1-channel dataset (IDX, Fashion-MNIST) for a model of
 * C > 1 channels becomes one of C equal channels, as an image folder reads
 * a gray PNG for an RGB model.  The values are bytes / 255, so they are
 * stored again as bytes.  (The copy has no class names.)
 */
static int repeat_channels(const cli_data_spec *spec, int64_t channels, distill_dataset **ds)
{
    int64_t d[3], n = distill_dataset_size(*ds);
    distill_dataset_sample_dims(*ds, d);
    size_t plane = (size_t)(d[1] * d[2]), per = plane * (size_t)channels;
    float *x = malloc(plane * sizeof *x);
    uint8_t *px = malloc((size_t)n * per);
    int32_t *labels = distill_dataset_has_labels(*ds) ? malloc((size_t)n * sizeof *labels) : NULL;
    if (!x || !px || (distill_dataset_has_labels(*ds) && !labels)) {
        free(x), free(px), free(labels);
        return cli_fail(CLI_ERUNTIME, "--allow-mismatch: out of memory repeating %s over %lld "
                        "channels", spec->text, (long long)channels);
    }
    int rc = DISTILL_OK;
    for (int64_t i = 0; i < n && rc == DISTILL_OK; i++) {
        int32_t label;
        rc = distill_dataset_get(*ds, i, x, plane, &label);
        for (size_t k = 0; k < plane && rc == DISTILL_OK; k++) {
            float v = x[k] * 255.0f + 0.5f;
            uint8_t b = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            for (int64_t c = 0; c < channels; c++)
                px[(size_t)i * per + (size_t)c * plane + k] = b;
        }
        if (labels)
            labels[i] = label;
    }
    distill_dataset *rep = NULL;
    const int64_t rd[3] = {channels, d[1], d[2]};
    if (rc == DISTILL_OK)
        rc = distill_dataset_from_memory_u8(&rep, n, rd, px, labels,
                                            distill_dataset_num_classes(*ds), DISTILL_MEMORY_COPY);
    free(x), free(px), free(labels);
    if (rc)
        return cli_fail_lib(rc, "--allow-mismatch: %s over %lld channels", spec->text,
                            (long long)channels);
    distill_dataset_free(*ds);
    *ds = rep;
    return CLI_OK;
}

int cli_data_view(const cli_data_spec *spec, const distill_dataset *ds, int64_t limit,
                  distill_dataset **out)
{
    int64_t n = distill_dataset_size(ds);
    int rc = distill_dataset_subset(out, ds, 0, limit > 0 && limit < n ? limit : n);
    return rc ? cli_fail_lib(rc, "%s", spec->text) : CLI_OK;
}

int cli_data_load(const cli_data_spec *spec, cli_split split, const int64_t *shape,
                  const cli_options *o, int64_t limit, distill_dataset **out)
{
    *out = NULL;
    distill_dataset *ds;
    int rc = load_source(spec, split, shape, o, &ds);
    if (rc || !ds)
        return rc;
    int64_t d[3];
    distill_dataset_sample_dims(ds, d);
    if (shape && o->allow_mismatch && d[0] == 1 && shape[0] > 1) {
        /* the view first, so that only the samples used are repeated */
        if (limit > 0 && limit < distill_dataset_size(ds)) {
            distill_dataset *v;
            rc = cli_data_view(spec, ds, limit, &v);
            distill_dataset_free(ds);
            if (rc)
                return rc;
            ds = v;
        }
        if ((rc = repeat_channels(spec, shape[0], &ds))) {
            distill_dataset_free(ds);
            return rc;
        }
    }
    if (limit <= 0 || limit >= distill_dataset_size(ds)) {
        *out = ds;
        return CLI_OK;
    }
    rc = cli_data_view(spec, ds, limit, out);
    distill_dataset_free(ds);
    return rc;
}

int cli_norm_get(const cli_data_spec *spec, const cli_options *o, cli_norm *norm)
{
    memset(norm, 0, sizeof *norm);
    int has_mean = cli_given(o, OPT_MEAN), has_std = cli_given(o, OPT_STD);
    if (o->mean_imagenet) {
        if (has_std)
            return cli_fail(CLI_EUSAGE, "--mean imagenet sets the std too (0.229,0.224,0.225); "
                                        "leave out --std");
        norm->count = 3;
        memcpy(norm->mean, o->mean, sizeof norm->mean);
        memcpy(norm->std, o->std, sizeof norm->std); /* ImageNet's, set with the mean */
        return CLI_OK;
    }
    if (has_mean != has_std)
        return cli_fail(CLI_EUSAGE, "--mean and --std must be given together");
    if (has_mean) {
        if (o->n_mean != o->n_std)
            return cli_fail(CLI_EUSAGE, "--mean and --std must have as many values (%d and %d)",
                            o->n_mean, o->n_std);
        for (int c = 0; c < o->n_std; c++)
            if (!(o->std[c] > 0.0f))
                return cli_fail(CLI_EUSAGE, "--std values must be positive");
        norm->count = o->n_mean;
        memcpy(norm->mean, o->mean, sizeof norm->mean);
        memcpy(norm->std, o->std, sizeof norm->std);
    } else if (spec && spec->kind == CLI_DATA_FASHION_MNIST) {
        norm->count = 1;
        norm->mean[0] = FMNIST_MEAN;
        norm->std[0] = FMNIST_STD;
    }
    return CLI_OK;
}

/* ------------------------------------------------------------- models */

int cli_model_is_file(const char *spec)
{
    struct stat st;
    return stat(spec, &st) == 0 && !S_ISDIR(st.st_mode);
}

static int is_zoo_name(const char *spec)
{
    for (const char *const *n = distill_zoo_names(); n && *n; n++)
        if (strcmp(*n, spec) == 0)
            return 1;
    return 0;
}

static int unknown_model(const char *opt, const char *spec)
{
    if (strchr(spec, '/') || strchr(spec, '.'))
        return cli_fail(CLI_ERUNTIME, "%s %s: no such file", opt, spec);
    char names[512] = "";
    size_t len = 0;
    for (const char *const *n = distill_zoo_names(); n && *n && len < sizeof names - 64; n++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", len ? ", " : "", *n);
    return cli_fail(CLI_ERUNTIME, "%s %s: no such file or zoo model (zoo models: %s)", opt, spec,
                    names);
}

int cli_is_onnx_path(const char *path)
{
    size_t l = strlen(path);
    return l > 5 && strcmp(path + l - 5, ".onnx") == 0;
}

int cli_model_open(const char *opt, const char *spec, const distill_zoo_options *zoo,
                   distill_model **out)
{
    *out = NULL;
    int rc;
    if (cli_model_is_file(spec)) {
        /* ONNX by its extension, anything else is a model file */
        if (cli_is_onnx_path(spec))
            rc = distill_model_import_onnx(out, spec);
        else
            rc = distill_model_load(out, spec);
        if (rc)
            return cli_fail_lib(rc, "%s %s", opt, spec);
        return CLI_OK;
    }
    if (!is_zoo_name(spec))
        return unknown_model(opt, spec);
    if ((rc = distill_zoo_create(out, spec, zoo)))
        return cli_fail_lib(rc, "%s %s", opt, spec);
    return CLI_OK;
}

int cli_model_write(const char *opt, const distill_model *m, const char *path)
{
    int rc = cli_is_onnx_path(path) ? distill_model_export_onnx(m, path)
                                     : distill_model_save(m, path);
    return rc ? cli_fail_lib(rc, "%s %s", opt, path) : CLI_OK;
}

int cli_model_classes(const distill_model *m)
{
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    if (distill_model_find_node(m, distill_model_output_name(m), &info) || info.rank != 1)
        return 0;
    return (int)info.dims[0];
}

int cli_model_input_shape(const char *what, const distill_model *m, int64_t shape[3])
{
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    int rc = distill_model_node(m, 0, &info);
    if (rc)
        return cli_fail_lib(rc, "%s", what);
    if (info.rank != 3)
        return cli_fail(CLI_ERUNTIME, "%s takes vectors, not images (input '%s')", what,
                        info.name);
    memcpy(shape, info.dims, 3 * sizeof *shape);
    return CLI_OK;
}

int cli_has_size_transform(const cli_options *o)
{
    return cli_given(o, OPT_RESIZE) || cli_given(o, OPT_CENTER_CROP) || cli_given(o, OPT_RRC);
}

int cli_transformed_dims(const cli_options *o, const distill_dataset *ds, int training,
                         int64_t dims[3])
{
    distill_dataset_sample_dims(ds, dims);
    if (!cli_has_size_transform(o))
        return CLI_OK;
    /* the library's own answer: a loader with these transforms */
    distill_loader_options lo;
    distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION);
    lo.batch_size = 1;
    lo.prefetch = 0;
    if (training && cli_given(o, OPT_RRC)) {
        memcpy(lo.random_resized_crop, o->rrc, sizeof lo.random_resized_crop);
    } else {
        lo.resize = o->resize;
        memcpy(lo.center_crop, o->center_crop, sizeof lo.center_crop);
    }
    distill_loader *ld;
    int rc = distill_loader_create(&ld, ds, &lo);
    if (rc)
        return cli_fail_lib(rc, "--resize, --center-crop, --random-resized-crop");
    distill_loader_sample_dims(ld, dims);
    distill_loader_free(ld);
    return CLI_OK;
}

int cli_check_fit(const char *what, const distill_model *m, const char *data_what,
                  const distill_dataset *ds, int check_classes, const cli_options *o,
                  int training)
{
    int64_t in[3] = {0, 0, 0}, dd[3] = {0, 0, 0}, stored[3];
    int rc = cli_model_input_shape(what, m, in);
    if (rc || (rc = cli_transformed_dims(o, ds, training, dd)))
        return rc;
    distill_dataset_sample_dims(ds, stored);
    if (in[0] != dd[0])
        return cli_fail(CLI_ERUNTIME, "%s takes %lld-channel images (%lldx%lldx%lld), %s has "
                        "%lld-channel images (%lldx%lldx%lld)%s",
                        what, (long long)in[0], (long long)in[0], (long long)in[1],
                        (long long)in[2], data_what, (long long)dd[0], (long long)dd[0],
                        (long long)dd[1], (long long)dd[2],
                        dd[0] == 1 ? "; --allow-mismatch repeats the channel" : "");
    if (in[1] != dd[1] || in[2] != dd[2]) {
        if (!cli_has_size_transform(o))
            return cli_fail(CLI_ERUNTIME, "%s takes %lldx%lldx%lld images, %s has "
                            "%lldx%lldx%lld%s",
                            what, (long long)in[0], (long long)in[1], (long long)in[2],
                            data_what, (long long)dd[0], (long long)dd[1], (long long)dd[2],
                            cli_given(o, OPT_SIZE) ? " (--size: give --center-crop or "
                                                     "--random-resized-crop of the model's "
                                                     "size, or leave --size out)"
                                                   : "");
        return cli_fail(CLI_ERUNTIME, "%s takes %lldx%lldx%lld images; %s is %lldx%lldx%lld and "
                        "the transforms (%s) make it %lldx%lldx%lld (give --center-crop or "
                        "--random-resized-crop %lldx%lld)",
                        what, (long long)in[0], (long long)in[1], (long long)in[2], data_what,
                        (long long)stored[0], (long long)stored[1], (long long)stored[2],
                        training && cli_given(o, OPT_RRC) ? "--random-resized-crop"
                                                          : "--resize, --center-crop",
                        (long long)dd[0], (long long)dd[1], (long long)dd[2], (long long)in[1],
                        (long long)in[2]);
    }
    int mc = cli_model_classes(m), dc = distill_dataset_num_classes(ds);
    if (mc < 2)
        return cli_fail(CLI_ERUNTIME, "%s: the output '%s' is not a vector of class logits", what,
                        distill_model_output_name(m));
    if (check_classes && dc > 0 && mc != dc)
        return cli_fail(CLI_ERUNTIME, "%s has %d classes, %s has %d", what, mc, data_what, dc);
    return check_classes ? cli_check_names(what, m, data_what, ds, o) : CLI_OK;
}

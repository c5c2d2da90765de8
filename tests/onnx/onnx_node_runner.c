/*
 * onnx_node_runner.c - run ONNX backend node tests through the importer.
 *
 *     onnx_node_runner [--all-pass] DIR...
 *
 * Each DIR is either one test (model.onnx and test_data_set_N/input_0.pb,
 * output_0.pb, as ONNX's backend tests and Debian's libonnx-testdata lay them
 * out) or a folder of such tests.  For each test:
 *   - if the model does not import, the test is SKIPPED and the importer's
 *     reason printed (an unsupported operator, attribute, shape or type);
 *   - if it imports, every data set is run in inference mode and the first
 *     output compared with output_0.pb: |got - want| <= 1e-4 * max(1, |want|)
 *     for every element, else the test FAILS.
 * Many node tests pass weights as extra graph inputs (Conv's W, Gemm's B,
 * BatchNormalization's statistics) with their values in input_1.pb, ...;
 * a model here has one input, so the runner turns graph inputs 1, 2, ...
 * into initializers holding those values before importing (a second
 * computed tensor, as in Add of two inputs, then becomes a constant, which
 * the importer refuses unless it broadcasts per channel).
 * The model's input is (N, C, H, W) or (N, F); tests of element-wise
 * operators on (N, A, B) or (N) tensors are run as (N, A, B, 1) and (N, 1),
 * the same elements in the same order (an axis attribute counted from the
 * end then names another axis, which the importer refuses: such a test is
 * skipped, never passed by accident).  The output is compared element by
 * element in row-major order.
 * A model that imports must therefore compute what ONNX says.  Exit status 0
 * when nothing failed (and, with --all-pass, nothing was skipped), 1
 * otherwise, 77 when no DIR exists (the test data is not installed).
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "distill.h"
#include "onnx/onnx_internal.h"
#include "util/util.h"

#define TOL 1e-4

static int n_pass, n_skip, n_fail;

/* out = a "/" b; an empty string when it does not fit. */
static void pjoin(char *out, size_t size, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 2 > size) {
        out[0] = 0;
        return;
    }
    memcpy(out, a, la);
    out[la] = '/';
    memcpy(out + la + 1, b, lb + 1);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* A float TensorProto from a .pb file: data (malloc'd), dims. */
static int read_pb(const char *path, float **data, int64_t *dims, int *rank, int64_t *numel)
{
    void *buf;
    size_t size;
    if (read_file(path, (size_t)1 << 30, &buf, &size))
        return -1;
    Onnx__TensorProto *t = onnx__tensor_proto__unpack(NULL, size, buf);
    xfree(buf);
    if (!t)
        return -1;
    int rc = -1;
    int64_t n = 1;
    if (t->n_dims > DISTILL_MAX_RANK || !t->has_data_type || t->data_type != ONNX_FLOAT)
        goto done;
    for (size_t d = 0; d < t->n_dims; d++)
        n *= dims[d] = t->dims[d];
    *rank = (int)t->n_dims;
    *numel = n;
    *data = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!*data)
        goto done;
    if (t->has_raw_data && t->raw_data.len == (size_t)n * 4)
        memcpy(*data, t->raw_data.data, (size_t)n * 4);
    else if (t->n_float_data == (size_t)n)
        memcpy(*data, t->float_data, (size_t)n * 4);
    else {
        free(*data);
        goto done;
    }
    rc = 0;
done:
    onnx__tensor_proto__free_unpacked(t, NULL);
    return rc;
}

/* (N, A, B) -> (N, A, B, 1), (N) -> (N, 1): append a dim of 1 to the
 * declared shape of the graph input. */
static void lift(Onnx__ValueInfoProto *vi, int *lifted)
{
    *lifted = 0;
    if (!vi->type || vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE ||
        !vi->type->tensor_type || !vi->type->tensor_type->shape)
        return;
    Onnx__TensorShapeProto *sh = vi->type->tensor_type->shape;
    if (sh->n_dim != 1 && sh->n_dim != 3)
        return;
    Onnx__TensorShapeProto__Dimension **d = realloc(sh->dim, (sh->n_dim + 1) * sizeof *d);
    Onnx__TensorShapeProto__Dimension *one = malloc(sizeof *one);
    if (!d || !one) {
        free(one);
        if (d)
            sh->dim = d;
        return;
    }
    onnx__tensor_shape_proto__dimension__init(one);
    one->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    one->dim_value = 1;
    d[sh->n_dim++] = one;
    sh->dim = d;
    *lifted = 1;
}

/* Import dir/model.onnx with graph inputs 1.. bound to set/input_k.pb. */
static int import_bound(const char *dir, const char *set, distill_model **m, int *bound,
                        int *lifted)
{
    char p[4096];
    void *buf;
    size_t size;
    *bound = *lifted = 0;
    pjoin(p, sizeof p, dir, "model.onnx");
    if (read_file(p, (size_t)1 << 30, &buf, &size))
        return distill_model_import_onnx(m, p); /* reports the error */
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, size, buf);
    if (!mp || !mp->graph || mp->graph->n_input < 1) {
        if (mp)
            onnx__model_proto__free_unpacked(mp, NULL);
        int rc = distill_model_import_onnx_buffer(m, buf, size);
        xfree(buf);
        return rc;
    }
    xfree(buf);
    Onnx__GraphProto *g = mp->graph;
    lift(g->input[0], lifted);
    size_t keep = 1, n_in = g->n_input;
    Onnx__TensorProto **inits =
        realloc(g->initializer, (g->n_initializer + n_in) * sizeof *inits);
    int rc = DISTILL_OK;
    if (!inits) {
        onnx__model_proto__free_unpacked(mp, NULL);
        return DISTILL_ENOMEM;
    }
    g->initializer = inits;
    for (size_t k = 1; k < n_in; k++) {
        Onnx__ValueInfoProto *vi = g->input[k];
        char leaf[64];
        snprintf(leaf, sizeof leaf, "input_%zu.pb", k);
        pjoin(p, sizeof p, set, leaf);
        void *tb;
        size_t ts;
        Onnx__TensorProto *t = NULL;
        if (read_file(p, (size_t)1 << 30, &tb, &ts) == 0) {
            t = onnx__tensor_proto__unpack(NULL, ts, tb);
            xfree(tb);
        }
        if (!t) { /* no data for it: leave it an input */
            g->input[keep++] = vi;
            continue;
        }
        free(t->name);
        t->name = strdup(vi->name ? vi->name : "");
        g->initializer[g->n_initializer++] = t;
        onnx__value_info_proto__free_unpacked(vi, NULL);
        (*bound)++;
    }
    g->n_input = keep;
    size_t n = onnx__model_proto__get_packed_size(mp);
    uint8_t *packed = malloc(n ? n : 1);
    if (!packed)
        rc = DISTILL_ENOMEM;
    else {
        onnx__model_proto__pack(mp, packed);
        rc = distill_model_import_onnx_buffer(m, packed, n);
        free(packed);
    }
    onnx__model_proto__free_unpacked(mp, NULL);
    return rc;
}

/* 0 pass, 1 fail (message in why). */
static int run_set(distill_model *m, const char *set, char *why, size_t wsize)
{
    char p[4096 + 300];
    float *in = NULL, *want = NULL;
    int64_t idims[DISTILL_MAX_RANK], odims[DISTILL_MAX_RANK], in_n, out_n;
    int irank, orank, rc = 1;
    distill_tensor *x = NULL, *y = NULL;
    pjoin(p, sizeof p, set, "input_0.pb");
    if (read_pb(p, &in, idims, &irank, &in_n)) {
        snprintf(why, wsize, "%.400s: not a float tensor", p);
        return 1;
    }
    pjoin(p, sizeof p, set, "output_0.pb");
    if (read_pb(p, &want, odims, &orank, &out_n)) {
        snprintf(why, wsize, "%.400s: not a float tensor", p);
        free(in);
        return 1;
    }
    /* the batch is the first dim; the rest is the model's per-image shape */
    distill_node_info ni = DISTILL_NODE_INFO_INIT, no = DISTILL_NODE_INFO_INIT;
    distill_model_node(m, 0, &ni);
    distill_model_find_node(m, distill_model_output_name(m), &no);
    int64_t xd[4] = {irank ? idims[0] : 1}, yd[4] = {0}, per_in = 1, per_out = 1;
    for (int d = 0; d < ni.rank; d++)
        per_in *= xd[d + 1] = ni.dims[d];
    for (int d = 0; d < no.rank; d++)
        per_out *= yd[d + 1] = no.dims[d];
    yd[0] = xd[0];
    if (xd[0] * per_in != in_n || xd[0] * per_out != out_n) {
        snprintf(why, wsize, "the model's shapes (%lld x %lld in, %lld out) do not hold the "
                             "test's %lld inputs and %lld outputs",
                 (long long)xd[0], (long long)per_in, (long long)per_out, (long long)in_n,
                 (long long)out_n);
        goto done;
    }
    (void)orank;
    int st;
    if ((st = distill_tensor_create(&x, ni.rank + 1, xd)) ||
        (st = distill_tensor_create(&y, no.rank + 1, yd))) {
        snprintf(why, wsize, "tensors: %s", distill_last_error());
        goto done;
    }
    memcpy(distill_tensor_data(x), in, (size_t)in_n * sizeof(float));
    if ((st = distill_model_forward(m, x, DISTILL_MODE_INFERENCE, y))) {
        snprintf(why, wsize, "forward: %s", distill_last_error());
        goto done;
    }
    const float *got = distill_tensor_data(y);
    double worst = 0;
    int64_t at = 0;
    for (int64_t k = 0; k < out_n; k++) {
        double d = fabs((double)got[k] - want[k]) / fmax(1.0, fabs(want[k]));
        if (!(d <= worst)) {
            worst = d;
            at = k;
        }
    }
    if (worst > TOL || isnan(worst)) {
        snprintf(why, wsize, "element %lld: %g, expected %g (error %.3g > %g)", (long long)at,
                 got[at], want[at], worst, TOL);
        goto done;
    }
    snprintf(why, wsize, "max error %.2g", worst);
    rc = 0;
done:
    distill_tensor_free(x);
    distill_tensor_free(y);
    free(in);
    free(want);
    return rc;
}

static void run_test(const char *dir, const char *name)
{
    char p[4096 + 300], why[512] = "";
    int sets = 0, failed = 0, bound = 0, lifted = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    char names[64][256];
    int n = 0;
    while (d && (e = readdir(d)) && n < 64)
        if (strncmp(e->d_name, "test_data_set_", 14) == 0)
            if (strlen(e->d_name) < sizeof names[0])
                memcpy(names[n++], e->d_name, strlen(e->d_name) + 1);
    if (d)
        closedir(d);
    for (int k = 0; k < n && !failed; k++) {
        pjoin(p, sizeof p, dir, names[k]);
        distill_model *m = NULL;
        if (import_bound(dir, p, &m, &bound, &lifted)) {
            /* the path is in the message; keep only the reason */
            const char *msg = distill_last_error();
            const char *colon = strstr(msg, "': ");
            if (k == 0) {
                printf("SKIP %s: %s\n", name, colon ? colon + 3 : msg);
                n_skip++;
                return;
            }
            snprintf(why, sizeof why, "%.100s: %.400s", names[k], msg);
            failed = 1;
            break;
        }
        failed = run_set(m, p, why, sizeof why);
        distill_model_free(m);
        sets++;
    }
    if (!sets) {
        printf("FAIL %s: imported, but has no test_data_set_*\n", name);
        n_fail++;
    } else if (failed) {
        printf("FAIL %s: %s\n", name, why);
        n_fail++;
    } else {
        printf("PASS %s (%d data set%s, %s%s%s)\n", name, sets, sets > 1 ? "s" : "", why,
               bound ? ", inputs after the first bound as constants" : "",
               lifted ? ", input given a trailing dim of 1" : "");
        n_pass++;
    }
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    int all_pass = 0, found = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--all-pass") == 0) {
            all_pass = 1;
            continue;
        }
        const char *dir = argv[i];
        if (!is_dir(dir))
            continue;
        found = 1;
        char p[4096];
        pjoin(p, sizeof p, dir, "model.onnx");
        if (is_file(p)) {
            const char *base = strrchr(dir, '/');
            run_test(dir, base ? base + 1 : dir);
            continue;
        }
        DIR *d = opendir(dir);
        struct dirent *e;
        char **list = NULL;
        size_t n = 0, cap = 0;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                char **nl = realloc(list, cap * sizeof *nl);
                if (!nl)
                    return 1;
                list = nl;
            }
            list[n++] = strdup(e->d_name);
        }
        if (d)
            closedir(d);
        qsort(list, n, sizeof *list, cmp);
        for (size_t k = 0; k < n; k++) {
            char t[4096];
            pjoin(t, sizeof t, dir, list[k]);
            pjoin(p, sizeof p, t, "model.onnx");
            if (is_file(p))
                run_test(t, list[k]);
            free(list[k]);
        }
        free(list);
    }
    if (!found) {
        printf("no test directory found: skipped\n");
        return 77;
    }
    printf("\n%d passed, %d skipped, %d failed\n", n_pass, n_skip, n_fail);
    return n_fail || (all_pass && n_skip) ? 1 : 0;
}

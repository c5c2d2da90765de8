/*
 * tv_match.c - load torchvision's weights into a zoo model by name and
 * compare outputs with torchvision's (see test_torchvision.py, which writes
 * the files this reads).
 *
 *     tv_match DIR
 *
 * DIR/model.txt    "<zoo name> <width %> <C> <H> <W> <classes> <batch> <train node>"
 * DIR/tensors.txt  "<name> <rank> <dims...>" per tensor, in file order
 * DIR/tensors.bin  float32 little-endian, back to back
 *
 * Every parameter tensor of the zoo model (trainable ones and BatchNorm
 * statistics) must have a tensor of the same name and shape, and every
 * tensor not starting with '@' a parameter.  Then: inference-mode logits
 * against "@eval", the training-mode value of <train node> against
 * "@train", and each BatchNorm statistic after that training forward
 * against "@stats.<name>".  Values agree when |ours - theirs| <= 1e-4 *
 * (1 + |theirs|).  Exit status 0 when everything agrees, 1 otherwise.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill.h"

#define TOL 1e-4
#define MAX_TENSORS 4096

typedef struct {
    char name[128];
    int rank;
    int64_t dims[8];
    int64_t numel;
    const float *data;
    int used;
} entry;

static entry tensors[MAX_TENSORS];
static int n_tensors;
static float *blob;

static int fail(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "tv_match: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return 1;
}

static entry *find(const char *name)
{
    for (int i = 0; i < n_tensors; i++)
        if (strcmp(tensors[i].name, name) == 0)
            return &tensors[i];
    return NULL;
}

static int read_tensors(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tensors.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return fail("cannot open %s%s", path, "");
    int64_t total = 0;
    while (n_tensors < MAX_TENSORS) {
        entry *e = &tensors[n_tensors];
        if (fscanf(f, "%127s %d", e->name, &e->rank) != 2)
            break;
        if (e->rank < 0 || e->rank > 8) {
            fclose(f);
            return fail("%s: bad rank for %s", path, e->name);
        }
        e->numel = 1;
        for (int k = 0; k < e->rank; k++) {
            long long d;
            if (fscanf(f, "%lld", &d) != 1 || d < 0) {
                fclose(f);
                return fail("%s: bad dims for %s", path, e->name);
            }
            e->dims[k] = d;
            e->numel *= d;
        }
        e->data = (const float *)(intptr_t)total; /* offset until the blob is read */
        total += e->numel;
        n_tensors++;
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/tensors.bin", dir);
    f = fopen(path, "rb");
    if (!f)
        return fail("cannot open %s%s", path, "");
    blob = malloc((size_t)total * sizeof(float) + 1);
    size_t got = blob ? fread(blob, sizeof(float), (size_t)total, f) : 0;
    int extra = fgetc(f);
    fclose(f);
    if (got != (size_t)total || extra != EOF)
        return fail("%s: size does not match %s", path, "tensors.txt");
    for (int i = 0; i < n_tensors; i++)
        tensors[i].data = blob + (intptr_t)tensors[i].data;
    return 0;
}

/* Largest |a - b| and whether every element is within tolerance. */
static double eval_scale;

static int compare(const char *what, const float *ours, const entry *ref, double *worst_out)
{
    double worst = 0.0, scale = 0.0;
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < ref->numel; i++) {
        double d = fabs((double)ours[i] - (double)ref->data[i]);
        if (!(d <= TOL * (1.0 + fabs((double)ref->data[i])))) {
            if (first < 0)
                first = i;
            bad++;
        }
        if (d > worst || d != d)
            worst = d;
        if (fabs((double)ref->data[i]) > scale)
            scale = fabs((double)ref->data[i]);
    }
    if (worst_out && worst > *worst_out)
        *worst_out = worst;
    if (strcmp(what, "eval logits") == 0)
        eval_scale = scale;
    if (bad) {
        fprintf(stderr,
                "tv_match: %s: %lld of %lld values differ (first at %lld: %.8g, torchvision "
                "%.8g; largest difference %.3g, largest value %.3g)\n",
                what, (long long)bad, (long long)ref->numel, (long long)first,
                (double)ours[first], (double)ref->data[first], worst, scale);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: tv_match DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    char path[4096], zoo[64], train_node[128];
    int width, c, h, w, classes, batch;
    snprintf(path, sizeof path, "%s/model.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return fail("cannot open %s%s", path, "");
    int n = fscanf(f, "%63s %d %d %d %d %d %d %127s", zoo, &width, &c, &h, &w, &classes, &batch,
                   train_node);
    fclose(f);
    if (n != 8)
        return fail("%s: expected 8 fields%s", path, "");
    if (read_tensors(dir))
        return 1;

    distill_zoo_options o;
    distill_zoo_options_init(&o, DISTILL_ZOO_OPTIONS_VERSION);
    o.in_channels = c, o.height = h, o.width = w, o.classes = classes, o.width_mult_pct = width;
    distill_model *m;
    if (distill_zoo_create(&m, zoo, &o))
        return fail("zoo %s: %s", zoo, distill_last_error());

    /* copy every parameter in by name */
    int rc = 0;
    size_t np = distill_model_param_count(m);
    for (size_t i = 0; i < np; i++) {
        distill_param_info p = DISTILL_PARAM_INFO_INIT;
        distill_model_param(m, i, &p);
        entry *e = find(p.name);
        if (!e) {
            rc |= fail("%s: torchvision has no tensor '%s'", zoo, p.name);
            continue;
        }
        int same = e->rank == p.rank;
        for (int k = 0; same && k < p.rank; k++)
            same = e->dims[k] == p.dims[k];
        if (!same) {
            rc |= fail("%s: '%s' has another shape in torchvision", zoo, p.name);
            continue;
        }
        memcpy(p.data, e->data, (size_t)p.numel * sizeof(float));
        e->used = 1;
    }
    for (int i = 0; i < n_tensors; i++)
        if (tensors[i].name[0] != '@' && !tensors[i].used)
            rc |= fail("%s: torchvision's '%s' has no parameter in the zoo model", zoo,
                       tensors[i].name);
    entry *x_ref = find("@input"), *eval_ref = find("@eval"), *train_ref = find("@train");
    if (!x_ref || !eval_ref || !train_ref)
        return fail("%s: @input, @eval or @train missing%s", dir, "");
    if (rc)
        return 1;

    distill_tensor *x, *y, *t;
    int64_t xd[4] = {batch, c, h, w}, yd[2] = {batch, classes};
    if (x_ref->numel != batch * c * h * w || eval_ref->numel != batch * classes)
        return fail("%s: @input or @eval has the wrong size%s", dir, "");
    distill_tensor_create(&x, 4, xd);
    distill_tensor_create(&y, 2, yd);
    memcpy(distill_tensor_data(x), x_ref->data, (size_t)x_ref->numel * sizeof(float));
    distill_node_info ti = DISTILL_NODE_INFO_INIT;
    if (distill_model_find_node(m, train_node, &ti) || ti.rank != 1 ||
        ti.dims[0] * batch != train_ref->numel)
        return fail("%s: node '%s' missing or of another size than @train", zoo, train_node);
    int64_t td[2] = {batch, ti.dims[0]};
    distill_tensor_create(&t, 2, td);
    if (distill_model_keep_node(m, train_node))
        return fail("keep %s: %s", train_node, distill_last_error());

    double worst_eval = 0, worst_train = 0, worst_stats = 0;
    if (distill_model_forward(m, x, DISTILL_MODE_INFERENCE, y))
        return fail("%s inference: %s", zoo, distill_last_error());
    rc |= compare("eval logits", distill_tensor_data_const(y), eval_ref, &worst_eval);
    if (distill_model_forward(m, x, DISTILL_MODE_TRAINING, NULL) ||
        distill_model_read_node(m, train_node, t))
        return fail("%s training: %s", zoo, distill_last_error());
    rc |= compare("train output", distill_tensor_data_const(t), train_ref, &worst_train);
    int n_stats = 0;
    for (int i = 0; i < n_tensors; i++) {
        if (strncmp(tensors[i].name, "@stats.", 7) != 0)
            continue;
        distill_param_info p = DISTILL_PARAM_INFO_INIT;
        if (distill_model_find_param(m, tensors[i].name + 7, &p)) {
            rc |= fail("%s: no statistic '%s'", zoo, tensors[i].name + 7);
            continue;
        }
        rc |= compare(tensors[i].name, p.data, &tensors[i], &worst_stats);
        n_stats++;
    }
    printf("%zu tensors copied; eval logits (largest %.3g) max |diff| %.2g, train %s max |diff| %.2g, "
           "%d running statistics max |diff| %.2g: %s\n",
           np, eval_scale, worst_eval, train_node, worst_train, n_stats, worst_stats, rc ? "FAIL" : "ok");
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_tensor_free(t);
    distill_model_free(m);
    free(blob);
    return rc ? 1 : 0;
}

/*
 * fuzz_model.c - model files: distill_model_load_buffer() on any bytes.
 *
 * Promised (include/distill/model.h): a truncated or corrupted buffer is
 * DISTILL_EFORMAT (DISTILL_EVERSION for a newer format), never a crash,
 * with *out left NULL and a message set.  Checked here on every input, and
 * once more on a copy whose section CRCs have been made valid, so that the
 * mutations reach the graph parser behind the checksums.
 *
 * A model that loads must also
 *   - serialize, load again and serialize to the same bytes;
 *   - run: when it is small (bounded nodes, activations, parameters and
 *     multiply-adds, so that one input cannot take seconds), one image goes
 *     through an inference forward, then a training forward and backward.
 *     A failure there is not promised against, so it aborts only with
 *     FUZZ_STRICT=1.
 */
#include "fuzz_common.h"

#include "nn/graph.h"
#include "util/util.h"

#define MAX_RUN_NODES 64
#define MAX_RUN_ELEMS ((int64_t)1 << 16)   /* per node, per image */
#define MAX_RUN_TOTAL ((int64_t)1 << 18)   /* all nodes */
#define MAX_RUN_MACS ((int64_t)1 << 22)
#define MAX_RUN_PARAMS ((int64_t)1 << 20)

static int64_t numel_of(const distill_node_info *n)
{
    int64_t e = 1;
    for (int d = 0; d < n->rank && d < 3; d++) {
        if (n->dims[d] < 1 || n->dims[d] > MAX_RUN_ELEMS)
            return MAX_RUN_ELEMS + 1;
        e *= n->dims[d];
        if (e > MAX_RUN_ELEMS)
            return MAX_RUN_ELEMS + 1;
    }
    return e;
}

/* Nonzero if running `m` on one image is cheap enough for a fuzz input. */
static int small_enough(const distill_model *m)
{
    size_t nn = distill_model_node_count(m);
    if (nn > MAX_RUN_NODES || distill_model_num_params(m) > MAX_RUN_PARAMS ||
        distill_model_macs(m) > MAX_RUN_MACS)
        return 0;
    int64_t total = 0, work = 0;
    for (size_t i = 0; i < nn; i++) {
        distill_node_info n = DISTILL_NODE_INFO_INIT;
        if (distill_model_node(m, i, &n) != DISTILL_OK)
            return 0;
        int64_t e = numel_of(&n);
        if (e > MAX_RUN_ELEMS)
            return 0;
        total += e;
        /* Pools cost kernel^2 per output, which macs does not count. */
        int64_t k = (int64_t)(n.kernel_h > 0 ? n.kernel_h : 1) * (n.kernel_w > 0 ? n.kernel_w : 1);
        if (k > MAX_RUN_MACS)
            return 0;
        work += e * k;
        if (total > MAX_RUN_TOTAL || work > MAX_RUN_MACS)
            return 0;
    }
    return 1;
}

static int make_like(distill_tensor **t, const distill_node_info *n)
{
    int64_t d[4] = {1, n->dims[0], n->dims[1], n->dims[2]};
    return distill_tensor_create(t, n->rank + 1, d);
}

static void run_once(distill_model *m, const uint8_t *data, size_t size)
{
    distill_node_info in = DISTILL_NODE_INFO_INIT, out = DISTILL_NODE_INFO_INIT;
    fz_check(distill_model_node(m, 0, &in) == DISTILL_OK, "node 0 of a loaded model");
    fz_check(distill_model_find_node(m, distill_model_output_name(m), &out) == DISTILL_OK,
             "the output node of a loaded model");
    distill_tensor *x = NULL, *y = NULL;
    if (make_like(&x, &in) != DISTILL_OK || make_like(&y, &out) != DISTILL_OK) {
        distill_tensor_free(x);
        return;
    }
    float *px = distill_tensor_data(x);
    for (int64_t i = 0; i < distill_tensor_numel(x); i++)
        px[i] = size ? (float)data[(size_t)i % size] / 255.0f : 0.5f;

    int rc = distill_model_forward(m, x, DISTILL_MODE_INFERENCE, y);
    fz_suspect(rc == DISTILL_OK, "inference forward of a loaded small model");
    if (rc)
        fz_check_error_set(rc);

    rc = distill_model_forward(m, x, DISTILL_MODE_TRAINING, y);
    fz_suspect(rc == DISTILL_OK, "training forward of a loaded small model");
    if (rc == DISTILL_OK) {
        distill_tensor_fill(y, 1.0f);
        const char *names[1] = {distill_model_output_name(m)};
        const distill_tensor *grads[1] = {y};
        distill_model_zero_grad(m);
        rc = distill_model_backward(m, 1, names, grads);
        fz_suspect(rc == DISTILL_OK, "backward of a loaded small model");
    }
    if (rc)
        fz_check_error_set(rc);
    distill_tensor_free(x);
    distill_tensor_free(y);
}

/* Serialize, load, serialize: the same bytes twice. */
static void round_trip(const distill_model *m)
{
    void *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    int rc = model_serialize(m, &a, &na);
    if (rc == DISTILL_ENOMEM)
        return;
    fz_check(rc == DISTILL_OK, "a loaded model serializes");
    distill_model *m2 = NULL;
    rc = distill_model_load_buffer(&m2, a, na);
    fz_check(rc == DISTILL_OK || rc == DISTILL_ENOMEM, "a serialized loaded model loads");
    if (rc == DISTILL_OK) {
        rc = model_serialize(m2, &b, &nb);
        fz_check(rc == DISTILL_OK || rc == DISTILL_ENOMEM, "a reloaded model serializes");
        if (rc == DISTILL_OK)
            fz_check(na == nb && memcmp(a, b, na) == 0, "save -> load -> save is stable");
    }
    distill_model_free(m2);
    xfree(a); /* model_serialize's buffers come from the library's allocator */
    xfree(b);
}

static void try_load(const uint8_t *data, size_t size)
{
    distill_model *m = (distill_model *)&m; /* must be overwritten */
    int rc = distill_model_load_buffer(&m, data, size);
    if (rc != DISTILL_OK) {
        fz_check(m == NULL, "*out is NULL after a failed load");
        fz_check(rc == DISTILL_EFORMAT || rc == DISTILL_EVERSION || rc == DISTILL_ENOMEM,
                 "a bad buffer gives DISTILL_EFORMAT or DISTILL_EVERSION");
        fz_check_error_set(rc);
        return;
    }
    fz_check(m != NULL, "a successful load returns a model");
    round_trip(m);
    if (small_enough(m))
        run_once(m, data, size);
    distill_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    try_load(data, size);
    if (size >= 16 && memcmp(data, "DSTLMODL", 8) == 0) {
        unsigned char *copy = malloc(size);
        if (!copy)
            return 0;
        memcpy(copy, data, size);
        if (fz_fix_container(copy, size))
            try_load(copy, size);
        free(copy);
    }
    return 0;
}

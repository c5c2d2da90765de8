/*
 * fuzz_onnx.c - ONNX files: distill_model_import_onnx_buffer() on any bytes.
 *
 * Promised (include/distill/onnx.h): a malformed protobuf or an
 * inconsistent model is DISTILL_EFORMAT, something the model cannot express
 * DISTILL_EUNSUPPORTED, never a crash, with *out left NULL and a message
 * set.  A model that imports must also
 *   - export (DISTILL_EUNSUPPORTED is allowed only for a tanh GELU) and
 *     import again with the same nodes;
 *   - run one image through an inference forward when it is small (bounded
 *     nodes, activations, parameters and multiply-adds); a failure there is
 *     not promised against, so it aborts only with FUZZ_STRICT=1.
 */
#include "fuzz_common.h"

#include "util/util.h"

int onnx_export_buffer(const struct distill_model *m, void **data, size_t *size);

#define MAX_RUN_NODES 64
#define MAX_RUN_ELEMS ((int64_t)1 << 16) /* per node, per image */
#define MAX_RUN_MACS ((int64_t)1 << 22)
#define MAX_RUN_PARAMS ((int64_t)1 << 20)

static int small_enough(const distill_model *m)
{
    size_t nn = distill_model_node_count(m);
    if (nn > MAX_RUN_NODES || distill_model_num_params(m) > MAX_RUN_PARAMS ||
        distill_model_macs(m) > MAX_RUN_MACS)
        return 0;
    int64_t work = 0;
    for (size_t i = 0; i < nn; i++) {
        distill_node_info n = DISTILL_NODE_INFO_INIT;
        if (distill_model_node(m, i, &n) != DISTILL_OK)
            return 0;
        int64_t e = 1;
        for (int d = 0; d < n.rank && d < 3; d++) {
            if (n.dims[d] < 1 || n.dims[d] > MAX_RUN_ELEMS)
                return 0;
            e *= n.dims[d];
            if (e > MAX_RUN_ELEMS)
                return 0;
        }
        int64_t k = (int64_t)(n.kernel_h > 0 ? n.kernel_h : 1) * (n.kernel_w > 0 ? n.kernel_w : 1);
        if (k > MAX_RUN_MACS)
            return 0;
        work += e * k;
        if (work > MAX_RUN_MACS)
            return 0;
    }
    return 1;
}

static void run_once(distill_model *m)
{
    distill_node_info in = DISTILL_NODE_INFO_INIT, out = DISTILL_NODE_INFO_INIT;
    fz_check(distill_model_node(m, 0, &in) == DISTILL_OK, "node 0 of an imported model");
    fz_check(distill_model_find_node(m, distill_model_output_name(m), &out) == DISTILL_OK,
             "the output node of an imported model");
    int64_t xd[4] = {1, in.dims[0], in.dims[1], in.dims[2]};
    int64_t yd[4] = {1, out.dims[0], out.dims[1], out.dims[2]};
    distill_tensor *x = NULL, *y = NULL;
    if (distill_tensor_create(&x, in.rank + 1, xd) == DISTILL_OK &&
        distill_tensor_create(&y, out.rank + 1, yd) == DISTILL_OK) {
        distill_tensor_fill(x, 0.5f);
        int rc = distill_model_forward(m, x, DISTILL_MODE_INFERENCE, y);
        fz_suspect(rc == DISTILL_OK, "inference forward of an imported small model");
        if (rc)
            fz_check_error_set(rc);
    }
    distill_tensor_free(x);
    distill_tensor_free(y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    distill_model *m = (distill_model *)&m; /* must be overwritten */
    int rc = distill_model_import_onnx_buffer(&m, data, size);
    if (rc != DISTILL_OK) {
        fz_check(m == NULL, "*out is NULL after a failed import");
        fz_check(rc == DISTILL_EFORMAT || rc == DISTILL_EUNSUPPORTED || rc == DISTILL_ENOMEM,
                 "a bad file gives DISTILL_EFORMAT or DISTILL_EUNSUPPORTED");
        fz_check_error_set(rc);
        return 0;
    }
    fz_check(m != NULL, "a successful import returns a model");
    void *buf = NULL;
    size_t n = 0;
    rc = onnx_export_buffer(m, &buf, &n);
    fz_check(rc == DISTILL_OK || rc == DISTILL_ENOMEM || rc == DISTILL_EUNSUPPORTED,
             "an imported model exports");
    if (rc == DISTILL_OK) {
        distill_model *r = NULL;
        rc = distill_model_import_onnx_buffer(&r, buf, n);
        fz_check(rc == DISTILL_OK || rc == DISTILL_ENOMEM, "an exported model imports");
        if (rc == DISTILL_OK)
            fz_check(distill_model_node_count(r) == distill_model_node_count(m),
                     "export -> import keeps the nodes");
        distill_model_free(r);
    }
    xfree(buf);
    if (small_enough(m))
        run_once(m);
    distill_model_free(m);
    return 0;
}

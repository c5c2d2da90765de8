/*
 * onnx_import.c - a distill_model from an ONNX file: the graph walk and
 * the public entry points (the layers it uses: onnx_import_internal.h).
 *
 * The file is parsed by protobuf-c (which checks the wire format and
 * allocates only what the bytes hold), then the graph is walked once in its
 * (topological) node order.  Every ONNX value is one of
 *   - an activation: the output of a model node, (N, C, H, W) or (N, F);
 *   - a constant: an initializer, a Constant node, or a value computed from
 *     constants and shapes (PyTorch's Shape -> Gather -> Unsqueeze -> Concat
 *     -> Reshape flatten idiom); int values may hold the symbolic batch;
 *   - a pending Pad: a zero Pad of H and W, folded into the Conv or
 *     AveragePool that reads it.
 * Patterns that span several ONNX nodes (GELU written with Erf) are found in
 * a pre-pass.  Every refusal names the node and the reason.
 */
#include <stdint.h>
#include <string.h>

#include "distill/onnx.h"
#include "onnx/onnx_import_internal.h"
#include "util/util.h"

#ifdef DISTILL_HAVE_ONNX

int distill_onnx_available(void)
{
    return 1;
}

/*
 * metadata_props into the model's metadata: entries whose key is not a
 * metadata key (other tools' properties) are skipped; the others must pass
 * the checks of distill_model_set_metadata against the imported graph, or
 * the file is refused as lying about its model.
 */
static int import_metadata(ctx *c, const Onnx__ModelProto *mp)
{
    static const char *where = "ONNX metadata_props";
    for (size_t k = 0; k < mp->n_metadata_props; k++) {
        const Onnx__StringStringEntryProto *kv = mp->metadata_props[k];
        if (!present(kv->key) || !meta_key_ok(kv->key))
            continue;
        if (distill_model_get_metadata(c->m, kv->key))
            return seterr(DISTILL_EFORMAT, "%s: key %s appears twice", where, kv->key);
        int rc = meta_set(c->m, kv->key, kv->value ? kv->value : "", where);
        if (rc == DISTILL_ENOMEM)
            return rc;
        if (rc)
            return seterr(DISTILL_EFORMAT, "%s", distill_last_error());
    }
    if (meta_check(c->m, where))
        return seterr(DISTILL_EFORMAT, "%s", distill_last_error());
    return DISTILL_OK;
}

static int import_model(ctx *c, Onnx__ModelProto *mp, distill_model **out)
{
    Onnx__GraphProto *g = mp->graph;
    if (!g)
        return BADF(c, "the model has no graph");
    c->g = g;
    c->opset = 0;
    for (size_t k = 0; k < mp->n_opset_import; k++) {
        const Onnx__OperatorSetIdProto *os = mp->opset_import[k];
        if (!present(os->domain) || strcmp(os->domain, "ai.onnx") == 0)
            c->opset = os->has_version ? os->version : 0;
    }
    if (c->opset < 1 || c->opset > OPSET_READ_MAX)
        return UNSUP(c, "opset %lld of the default domain; opsets %d to %d are supported (and "
                        "1 to %d where each operator is defined as there)",
                     (long long)c->opset, OPSET_MIN, OPSET_MAX, OPSET_READ_MAX);
    /* one value per initializer, input and node output, reserved now */
    size_t cap = g->n_initializer + g->n_input + 1;
    for (size_t k = 0; k < g->n_node; k++)
        cap += g->node[k]->n_output;
    if (!(c->vals = xmalloc(cap * sizeof *c->vals)))
        return DISTILL_ENOMEM;
    c->cap_vals = cap;
    /* initializers */
    for (size_t k = 0; k < g->n_initializer; k++) {
        const Onnx__TensorProto *t = g->initializer[k];
        if (!present(t->name))
            return BADF(c, "initializer %zu has no name", k);
        val *v = new_val(c, t->name);
        if (!v)
            return DISTILL_ENOMEM;
        int rc = load_tensor(c, t, t->name, v);
        if (rc)
            return rc;
    }
    /* the one real input */
    const Onnx__ValueInfoProto *in = NULL;
    for (size_t k = 0; k < g->n_input; k++) {
        const char *n = g->input[k]->name;
        if (!present(n))
            return BADF(c, "graph input %zu has no name", k);
        if (find_val(c, n))
            continue; /* an initializer listed as an input (IR < 4) */
        if (in)
            return UNSUP(c, "the graph has inputs '%s' and '%s'; only models with one input are "
                            "supported",
                         in->name, n);
        in = g->input[k];
    }
    if (!in)
        return UNSUP(c, "the graph has no input");
    if (g->n_output < 1 || !present(g->output[0]->name))
        return BADF(c, "the graph has no output");
    int64_t dims[3] = {0, 0, 0};
    int rank = 0, rc;
    if ((rc = read_input(c, in, dims, &rank)))
        return rc;
    if (strlen(in->name) > 200)
        return UNSUP(c, "input name is longer than 200 bytes");
    if (c->n_vals > 0 && !c->vals)
        return DISTILL_ENOMEM;
    if ((rc = distill_model_create(&c->m, in->name, rank, dims)))
        return lib_err(c, rc);
    if ((rc = set_act(c, in->name, 0)))
        return rc;
    if (!(c->skip = xcalloc(g->n_node + 1, 1)) ||
        !(c->gelu_in = xcalloc(g->n_node + 1, sizeof *c->gelu_in)))
        return DISTILL_ENOMEM;
    find_gelu(c);
    for (size_t k = 0; k < g->n_node; k++) {
        const Onnx__NodeProto *nd = g->node[k];
        c->nop = present(nd->op_type) ? nd->op_type : "?";
        c->nname = present(nd->name) ? nd->name
                   : nd->n_output && present(nd->output[0]) ? nd->output[0]
                                                             : "(unnamed)";
        if ((rc = check_op_version(c, nd)))
            return rc;
        if (c->skip[k])
            continue;
        if ((rc = op_node(c, nd, k)))
            return rc;
    }
    c->nname = NULL;
    /* outputs: the first is the model's output; the others are kept */
    for (size_t k = 0; k < g->n_output; k++) {
        val *v = present(g->output[k]->name) ? find_val(c, g->output[k]->name) : NULL;
        if (!v)
            return BADF(c, "output '%s' is not computed by any node",
                        g->output[k]->name ? g->output[k]->name : "");
        if (v->kind != V_ACT)
            return UNSUP(c, "output '%s' is a constant or a bare Pad", v->name);
        const char *nn = c->m->nodes[v->node].name;
        if (k == 0)
            rc = distill_model_set_output(c->m, nn);
        else
            rc = distill_model_keep_node(c->m, nn);
        if (rc)
            return rc;
    }
    if ((rc = import_metadata(c, mp)))
        return rc;
    *out = c->m;
    c->m = NULL;
    return DISTILL_OK;
}

int distill_model_import_onnx_buffer(distill_model **out, const void *data, size_t size)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_model_import_onnx_buffer: out is NULL");
    *out = NULL;
    if (!data && size)
        return seterr(DISTILL_EINVAL, "distill_model_import_onnx_buffer: data is NULL");
    Onnx__ModelProto *mp = onnx__model_proto__unpack(&onnx_allocator, size, data);
    if (!mp) {
        if (util_last_status() == DISTILL_ENOMEM)
            return DISTILL_ENOMEM;
        return seterr(DISTILL_EFORMAT, "not a valid ONNX protobuf (truncated or corrupted)");
    }
    ctx c;
    memset(&c, 0, sizeof c);
    int rc = import_model(&c, mp, out);
    distill_model_free(c.m);
    free_vals(&c);
    xfree(c.skip);
    xfree(c.gelu_in);
    onnx__model_proto__free_unpacked(mp, &onnx_allocator);
    return rc;
}

int distill_model_import_onnx(distill_model **out, const char *path)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_model_import_onnx: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return seterr(DISTILL_EINVAL, "distill_model_import_onnx: no path");
    void *data;
    size_t size;
    size_t cap = (uint64_t)SIZE_MAX < ONNX_MAX_FILE ? SIZE_MAX : (size_t)ONNX_MAX_FILE;
    int rc = read_file(path, cap, &data, &size);
    if (rc)
        return rc;
    rc = distill_model_import_onnx_buffer(out, data, size);
    xfree(data);
    if (rc && rc != DISTILL_ENOMEM)
        return seterr(rc, "'%.200s': %s", path, util_last_error());
    return rc;
}

#else /* !DISTILL_HAVE_ONNX */

int distill_onnx_available(void)
{
    return 0;
}

int distill_model_import_onnx(distill_model **out, const char *path)
{
    (void)path;
    if (out)
        *out = NULL;
    return seterr(DISTILL_EUNSUPPORTED, "this libdistill was built without ONNX support");
}

/*
 * metadata_props into the model's metadata: entries whose key is not a
 * metadata key (other tools' properties) are skipped; the others must pass
 * the checks of distill_model_set_metadata against the imported graph, or
 * the file is refused as lying about its model.
 */
static int import_metadata(ctx *c, const Onnx__ModelProto *mp)
{
    static const char *where = "ONNX metadata_props";
    for (size_t k = 0; k < mp->n_metadata_props; k++) {
        const Onnx__StringStringEntryProto *kv = mp->metadata_props[k];
        if (!present(kv->key) || !meta_key_ok(kv->key))
            continue;
        if (distill_model_get_metadata(c->m, kv->key))
            return seterr(DISTILL_EFORMAT, "%s: key %s appears twice", where, kv->key);
        int rc = meta_set(c->m, kv->key, kv->value ? kv->value : "", where);
        if (rc == DISTILL_ENOMEM)
            return rc;
        if (rc)
            return seterr(DISTILL_EFORMAT, "%s", distill_last_error());
    }
    if (meta_check(c->m, where))
        return seterr(DISTILL_EFORMAT, "%s", distill_last_error());
    return DISTILL_OK;
}

int distill_model_import_onnx_buffer(distill_model **out, const void *data, size_t size)
{
    (void)data, (void)size;
    if (out)
        *out = NULL;
    return seterr(DISTILL_EUNSUPPORTED, "this libdistill was built without ONNX support");
}

int distill_model_export_onnx(const distill_model *m, const char *path)
{
    (void)m, (void)path;
    return seterr(DISTILL_EUNSUPPORTED, "this libdistill was built without ONNX support");
}

int onnx_export_buffer(const struct distill_model *m, void **data, size_t *size);
int onnx_export_buffer(const struct distill_model *m, void **data, size_t *size)
{
    (void)m;
    *data = NULL;
    *size = 0;
    return seterr(DISTILL_EUNSUPPORTED, "this libdistill was built without ONNX support");
}

#endif

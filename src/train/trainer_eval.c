/*
 * trainer_eval.c - distill_evaluate and its options: loss, top-1 and
 * top-5 accuracy, the confusion matrix and the agreement with a teacher
 * over a dataset, in inference mode.
 */
#include <math.h>
#include <string.h>

#include "train/trainer_internal.h"

int distill_eval_options_init(distill_eval_options *opts, unsigned int version)
{
    if (!opts)
        return seterr(DISTILL_EINVAL, "distill_eval_options_init: opts is NULL");
    CHECK_VERSION(version, DISTILL_EVAL_OPTIONS_VERSION, "distill_eval_options",
                  "distill_eval_options_init");
    distill_eval_options o = DISTILL_EVAL_OPTIONS_INIT;
    *opts = o;
    return DISTILL_OK;
}

static int top_k_hit(const float *row, int classes, int label, int k)
{
    int above = 0;
    for (int c = 0; c < classes; c++)
        if (row[c] > row[label] || (row[c] == row[label] && c < label))
            above++;
    return above < k;
}

static int argmax(const float *row, int classes)
{
    int b = 0;
    for (int c = 1; c < classes; c++)
        if (row[c] > row[b])
            b = c;
    return b;
}

int distill_evaluate(distill_model *model, const distill_dataset *ds,
                     const distill_eval_options *opts, distill_eval_result *res)
{
    if (!model || !ds || !res)
        return seterr(DISTILL_EINVAL, "distill_evaluate: NULL argument");
    distill_eval_options o = DISTILL_EVAL_OPTIONS_INIT;
    if (opts) {
        COPY_OPTIONS(&o, opts, DISTILL_EVAL_OPTIONS_VERSION, "distill_eval_options",
                     "distill_evaluate");
    }
    if (o.batch_size < 1)
        return seterr(DISTILL_EINVAL, "evaluate: batch_size must be >= 1");
    int rc = trainer_check_norm(o.norm_count, o.mean, o.std, "evaluate");
    if (rc)
        return rc;
    distill_node_info outn;
    if ((rc = distill_model_find_node(model, distill_model_output_name(model), &outn)))
        return rc;
    if (outn.rank != 1)
        return seterr(DISTILL_ESHAPE, "evaluate: the output node '%s' is not a vector of logits",
                      outn.name);
    int classes = (int)outn.dims[0];
    if (o.agreement && distill_teacher_classes(o.agreement) != classes)
        return seterr(DISTILL_ESHAPE, "evaluate: the teacher has %d classes, the model %d",
                      distill_teacher_classes(o.agreement), classes);
    int labelled = distill_dataset_has_labels(ds);
    if (labelled && distill_dataset_num_classes(ds) > classes)
        return seterr(DISTILL_ESHAPE, "the data has %d classes, the model %d",
                      distill_dataset_num_classes(ds), classes);
    int64_t dims[3];
    distill_loader_options lo;
    distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION);
    lo.batch_size = o.batch_size;
    lo.shuffle = 0;
    trainer_norm_to_loader(&lo, o.norm_count, o.mean, o.std);
    lo.resize = o.resize;
    memcpy(lo.center_crop, o.center_crop, sizeof lo.center_crop);
    lo.workers = o.workers;
    distill_loader *ld;
    if ((rc = distill_loader_create(&ld, ds, &lo)))
        return rc;
    distill_loader_sample_dims(ld, dims);
    /* every forward draws from the model's dropout generator, inference
     * too: put it back, so that evaluating (e.g. on the validation set
     * between epochs) does not change how training goes on */
    uint64_t saved_rng[4];
    model_rng_get(model, saved_rng);
    int64_t bd[4] = {o.batch_size, dims[0], dims[1], dims[2]}, ld2[2] = {o.batch_size, classes};
    distill_tensor *x = NULL, *y = NULL, *ty = NULL;
    int32_t *labels = xmalloc((size_t)o.batch_size * sizeof *labels);
    if (!labels || (rc = distill_tensor_create(&x, 4, bd)) ||
        (rc = distill_tensor_create(&y, 2, ld2)) ||
        (o.agreement && (rc = distill_tensor_create(&ty, 2, ld2)))) {
        rc = rc ? rc : DISTILL_ENOMEM;
        goto out;
    }
    if (o.confusion)
        memset(o.confusion, 0, (size_t)classes * (size_t)classes * sizeof *o.confusion);
    double loss = 0;
    int64_t n = 0, hit1 = 0, hit5 = 0, agree = 0;
    for (;;) {
        int count;
        if ((rc = distill_loader_next(ld, x, labels, &count)))
            goto out;
        if (count == 0)
            break;
        if ((rc = trainer_reshape_n(y, count)) || (ty && (rc = trainer_reshape_n(ty, count))) ||
            (rc = distill_model_forward(model, x, DISTILL_MODE_INFERENCE, y)) ||
            (ty && (rc = distill_teacher_forward(o.agreement, x, ty))))
            goto out;
        for (int i = 0; i < count; i++) {
            const float *row = y->data + (size_t)i * (size_t)classes;
            if (ty && argmax(row, classes) == argmax(ty->data + (size_t)i * (size_t)classes,
                                                     classes))
                agree++;
            if (!labelled)
                continue;
            int l = labels[i];
            double mx = row[0], s = 0;
            for (int c = 1; c < classes; c++)
                mx = row[c] > mx ? row[c] : mx;
            for (int c = 0; c < classes; c++)
                s += exp(row[c] - mx);
            loss += log(s) + mx - row[l];
            hit1 += top_k_hit(row, classes, l, 1);
            hit5 += top_k_hit(row, classes, l, 5);
            if (o.confusion)
                o.confusion[(size_t)l * (size_t)classes + (size_t)argmax(row, classes)]++;
        }
        n += count;
    }
    memset(res, 0, sizeof *res);
    res->count = n;
    res->loss = labelled && n ? loss / (double)n : -1;
    res->top1 = labelled && n ? (double)hit1 / (double)n : -1;
    res->top5 = labelled && n ? (double)hit5 / (double)n : -1;
    res->agreement = ty && n ? (double)agree / (double)n : -1;
out:
    model_rng_set(model, saved_rng);
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_tensor_free(ty);
    xfree(labels);
    distill_loader_free(ld);
    return rc;
}

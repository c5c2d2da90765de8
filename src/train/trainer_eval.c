/*
 * trainer_eval.c - distill_evaluate, distill_evaluate_teacher and their
 * options: loss, top-1 and top-5 accuracy, the confusion matrix and the
 * agreement with a teacher over a dataset, in inference mode.
 */
#include <math.h>
#include <string.h>

#include "train/trainer_internal.h"

int distill_eval_options_init(distill_eval_options *opts, unsigned int version)
{
    static const distill_eval_options init = DISTILL_EVAL_OPTIONS_INIT;
    INIT_STRUCT(opts, version, DISTILL_EVAL_OPTIONS_VERSION, init, "distill_eval_options",
                "distill_eval_options_init");
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

/* Evaluate the logits of `model` (inference forward) or, when model is
 * NULL, of `teacher` (distill_teacher_forward); fn names the public call. */
static int evaluate(distill_model *model, distill_teacher *teacher, const distill_dataset *ds,
                    const distill_eval_options *opts, distill_eval_result *res, const char *fn)
{
    if ((!model && !teacher) || !ds || !res)
        return seterr(DISTILL_EINVAL, "%s: NULL argument", fn);
    CHECK_VERSION(res->version, DISTILL_EVAL_RESULT_VERSION, "distill_eval_result", "%s", fn);
    distill_eval_options o = DISTILL_EVAL_OPTIONS_INIT;
    if (opts) {
        COPY_OPTIONS(&o, opts, DISTILL_EVAL_OPTIONS_VERSION, "distill_eval_options", "%s", fn);
    }
    if (o.batch_size < 1)
        return seterr(DISTILL_EINVAL, "evaluate: batch_size must be >= 1");
    int rc = trainer_check_norm(o.norm_count, o.mean, o.std, "evaluate");
    if (rc)
        return rc;
    int classes;
    if (model) {
        distill_node_info outn = DISTILL_NODE_INFO_INIT;
        if ((rc = distill_model_find_node(model, distill_model_output_name(model), &outn)))
            return rc;
        if (outn.rank != 1)
            return seterr(DISTILL_ESHAPE,
                          "evaluate: the output node '%s' is not a vector of logits", outn.name);
        classes = (int)outn.dims[0];
    } else {
        if (teacher_is_cache(teacher))
            return seterr(DISTILL_EUNSUPPORTED,
                          "%s: a cached teacher has logits only for the augmented views of a "
                          "training run, not for evaluation", fn);
        classes = distill_teacher_classes(teacher);
    }
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
    uint64_t saved_rng[4] = {0, 0, 0, 0};
    if (model)
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
            (model ? (rc = distill_model_forward(model, x, DISTILL_MODE_INFERENCE, y))
                   : (rc = distill_teacher_forward(teacher, x, y))) ||
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
    distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
    r.count = n;
    r.loss = labelled && n ? loss / (double)n : -1;
    r.top1 = labelled && n ? (double)hit1 / (double)n : -1;
    r.top5 = labelled && n ? (double)hit5 / (double)n : -1;
    r.agreement = ty && n ? (double)agree / (double)n : -1;
    struct_copy_out(res, &r, sizeof r);
out:
    if (model)
        model_rng_set(model, saved_rng);
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_tensor_free(ty);
    xfree(labels);
    distill_loader_free(ld);
    return rc;
}

int distill_evaluate(distill_model *model, const distill_dataset *ds,
                     const distill_eval_options *opts, distill_eval_result *res)
{
    if (!model)
        return seterr(DISTILL_EINVAL, "distill_evaluate: model is NULL");
    return evaluate(model, NULL, ds, opts, res, "distill_evaluate");
}

int distill_evaluate_teacher(distill_teacher *teacher, const distill_dataset *ds,
                             const distill_eval_options *opts, distill_eval_result *res)
{
    if (!teacher)
        return seterr(DISTILL_EINVAL, "distill_evaluate_teacher: teacher is NULL");
    return evaluate(NULL, teacher, ds, opts, res, "distill_evaluate_teacher");
}

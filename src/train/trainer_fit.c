/*
 * trainer_fit.c - distill_trainer_fit: epochs of shuffled, augmented
 * batches through the step, the learning-rate schedule over the whole run,
 * progress reports, the validation accuracy of every student after each
 * epoch, and the data
 * position that a checkpoint resumes from.
 */
#include <string.h>
#include <time.h>

#include "train/trainer_internal.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void trainer_norm_to_loader(distill_loader_options *lo, int count, const float *mean,
                           const float *std)
{
    lo->norm_count = count;
    lo->mean = count ? mean : NULL;
    lo->std = count ? std : NULL;
}

/* The terms of the report: a single student's own, or every student's
 * prefixed "sK." (the last one "mutual"). */
static void report_terms(distill_trainer *tr)
{
    int m = 0;
    for (int i = 0; i < tr->n_students; i++) {
        const distill_student *s = tr->students[i];
        int nt = s->n_terms + (tr->n_students > 1);
        for (int k = 0; k < nt; k++, m++) {
            const char *name = k < s->n_terms ? s->term_names[k] : "mutual";
            if (tr->n_students == 1) {
                tr->report_names[m] = name;
            } else {
                snprintf(tr->report_buf[m], sizeof tr->report_buf[m], "s%d.%s", i + 1, name);
                tr->report_names[m] = tr->report_buf[m];
            }
            tr->report_values[m] = s->term_values[k];
        }
        tr->student_losses[i] = s->loss;
        tr->student_accuracies[i] = s->val_accuracy;
    }
    tr->n_report = m;
}

static int report(distill_trainer *tr, int epoch, double loss, double lr, double ips,
                  double started, int end_of_epoch, double val)
{
    if (!tr->o.progress)
        return DISTILL_OK;
    report_terms(tr);
    distill_progress p;
    memset(&p, 0, sizeof p);
    p.version = DISTILL_PROGRESS_VERSION;
    p.epoch = epoch;
    p.epochs = tr->o.epochs;
    p.step = tr->step;
    p.total_steps = tr->total_steps;
    p.loss = loss;
    p.lr = lr;
    p.images_per_sec = ips;
    double el = now_s() - started;
    p.eta_seconds = tr->step > 0 && tr->total_steps > tr->step
                        ? el / (double)tr->step * (double)(tr->total_steps - tr->step)
                        : 0;
    p.n_terms = tr->n_report;
    p.term_names = tr->report_names;
    p.term_values = tr->report_values;
    p.end_of_epoch = end_of_epoch;
    p.val_accuracy = val;
    p.skipped_steps = tr->skipped;
    p.n_students = tr->n_students;
    p.student_loss = tr->student_losses;
    p.student_val_accuracy = tr->student_accuracies;
    if (tr->o.progress(&p, tr->o.progress_payload))
        return seterr(DISTILL_ECANCELLED, "training stopped by the progress callback at step %lld",
                      (long long)tr->step);
    return DISTILL_OK;
}

int distill_trainer_fit(distill_trainer *tr, const distill_dataset *train,
                        const distill_dataset *val)
{
    if (!tr || !train)
        return seterr(DISTILL_EINVAL, "distill_trainer_fit: NULL argument");
    int rc = trainer_ensure_default_loss(tr);
    if (rc)
        return rc;
    int labelled = distill_dataset_has_labels(train);
    const char *needs = trainer_loss_needing_labels(tr);
    if (!labelled && needs)
        return seterr(DISTILL_EINVAL, "loss '%s' needs labels and the training data has none",
                      needs);
    if (labelled && distill_dataset_num_classes(train) > tr->classes)
        return seterr(DISTILL_ESHAPE, "the data has %d classes, the model %d",
                      distill_dataset_num_classes(train), tr->classes);
    if (distill_dataset_size(train) < tr->o.batch_size)
        return seterr(DISTILL_EINVAL, "the training data has %lld samples, fewer than one batch "
                                      "of %d",
                      (long long)distill_dataset_size(train), tr->o.batch_size);

    distill_loader_options lo;
    distill_loader_options_init(&lo, DISTILL_LOADER_OPTIONS_VERSION);
    lo.batch_size = tr->o.batch_size;
    lo.shuffle = 1;
    lo.drop_last = 1;
    lo.seed = tr->o.seed;
    trainer_norm_to_loader(&lo, tr->o.norm_count, tr->o.mean, tr->o.std);
    lo.crop_padding = tr->o.crop_padding;
    lo.hflip = tr->o.hflip;
    lo.prefetch = tr->o.prefetch;
    lo.workers = tr->o.workers;
    if (tr->o.random_resized_crop[0]) {
        /* torchvision's recipe: the random crop of the stored image */
        memcpy(lo.random_resized_crop, tr->o.random_resized_crop, sizeof lo.random_resized_crop);
        memcpy(lo.rrc_scale, tr->o.rrc_scale, sizeof lo.rrc_scale);
        memcpy(lo.rrc_ratio, tr->o.rrc_ratio, sizeof lo.rrc_ratio);
    } else {
        lo.resize = tr->o.resize;
        memcpy(lo.center_crop, tr->o.center_crop, sizeof lo.center_crop);
    }
    distill_loader *ld;
    if ((rc = distill_loader_create(&ld, train, &lo)))
        return rc;
    int64_t dims[3];
    distill_loader_sample_dims(ld, dims);
    distill_node_info in = DISTILL_NODE_INFO_INIT;
    if ((rc = distill_model_node(tr->student, 0, &in))) {
        distill_loader_free(ld);
        return rc;
    }
    if (in.rank != 3 || in.dims[0] != dims[0] || in.dims[1] != dims[1] ||
        in.dims[2] != dims[2]) {
        distill_loader_free(ld);
        return seterr(DISTILL_ESHAPE, "the training batches' samples are %lldx%lldx%lld, the "
                                      "model's input '%s' is %lldx%lldx%lld",
                      (long long)dims[0], (long long)dims[1], (long long)dims[2], in.name,
                      (long long)in.dims[0], (long long)in.dims[1], (long long)in.dims[2]);
    }
    int cached = tr->teacher && teacher_is_cache(tr->teacher);
    if (cached && (rc = teacher_cache_check(tr->teacher, train, &tr->o))) {
        distill_loader_free(ld);
        return rc;
    }
    int64_t per_epoch = distill_loader_num_batches(ld);
    if (tr->o.steps_per_epoch > 0 && tr->o.steps_per_epoch < per_epoch)
        per_epoch = tr->o.steps_per_epoch;
    trainer_setup_schedule(tr, per_epoch * tr->o.epochs);

    int64_t bdims[4] = {tr->o.batch_size, dims[0], dims[1], dims[2]};
    distill_tensor *images = NULL;
    int32_t *labels = xmalloc((size_t)tr->o.batch_size * sizeof *labels);
    int64_t *bindex = cached ? xmalloc((size_t)tr->o.batch_size * sizeof *bindex) : NULL;
    int32_t *bview = cached ? xmalloc((size_t)tr->o.batch_size * sizeof *bview) : NULL;
    if (!labels || (cached && (!bindex || !bview)) ||
        (rc = distill_tensor_create(&images, 4, bdims))) {
        rc = rc ? rc : DISTILL_ENOMEM;
        goto out;
    }
    double started = now_s(), t_last = started, loss = 0, lr = 0;
    int64_t step_last = tr->step;
    for (uint64_t e = tr->data_epoch; e < (uint64_t)tr->o.epochs; e++) {
        /* where this epoch starts: the saved position after a resume */
        uint64_t pos = e == tr->data_epoch ? tr->data_pos : 0;
        if ((rc = distill_loader_set_state(ld, e, pos)))
            goto out;
        int64_t done_in_epoch = (int64_t)pos / tr->o.batch_size;
        double epoch_t0 = now_s();
        int64_t epoch_step0 = tr->step;
        while (done_in_epoch < per_epoch) {
            if (tr->o.max_steps > 0 && tr->step >= tr->o.max_steps)
                goto out;
            int count;
            uint64_t be, bp;
            distill_loader_get_state(ld, &be, &bp);
            if ((rc = distill_loader_next(ld, images, labels, &count)))
                goto out;
            if (count == 0)
                break;
            if (cached) {
                if ((rc = loader_batch_views(ld, be, bp, count, bindex, bview)))
                    goto out;
                tr->batch_index = bindex;
                tr->batch_view = bview;
            }
            if ((rc = trainer_train_step(tr, images, labelled ? labels : NULL, &loss, &lr)))
                goto out;
            done_in_epoch++;
            distill_loader_get_state(ld, &tr->data_epoch, &tr->data_pos);
            if (done_in_epoch >= per_epoch) {
                tr->data_epoch = e + 1;
                tr->data_pos = 0;
            }
            if (tr->step % tr->o.progress_every == 0) {
                double t = now_s();
                double ips = (double)(tr->step - step_last) * tr->o.batch_size /
                             (t - t_last > 1e-9 ? t - t_last : 1e-9);
                t_last = t;
                step_last = tr->step;
                if ((rc = report(tr, (int)e + 1, loss, lr, ips, started, 0, -1)))
                    goto out;
            }
        }
        tr->data_epoch = e + 1;
        tr->data_pos = 0;
        /* the epoch's training throughput, before the evaluation */
        double t_end = now_s();
        double ips = (double)(tr->step - epoch_step0) * tr->o.batch_size /
                     (t_end - epoch_t0 > 1e-9 ? t_end - epoch_t0 : 1e-9);
        double acc = -1;
        if (val) {
            distill_eval_options eo;
            distill_eval_options_init(&eo, DISTILL_EVAL_OPTIONS_VERSION);
            eo.norm_count = tr->o.norm_count;
            memcpy(eo.mean, tr->o.mean, sizeof eo.mean);
            memcpy(eo.std, tr->o.std, sizeof eo.std);
            eo.resize = tr->o.resize;
            memcpy(eo.center_crop, tr->o.center_crop, sizeof eo.center_crop);
            eo.workers = tr->o.workers;
            for (int i = 0; i < tr->n_students; i++) {
                distill_eval_result r = DISTILL_EVAL_RESULT_INIT;
                if ((rc = distill_evaluate(tr->students[i]->model, val, &eo, &r)))
                    goto out;
                tr->students[i]->val_accuracy = r.top1;
            }
            acc = tr->students[0]->val_accuracy;
        }
        if ((rc = report(tr, (int)e + 1, loss, lr, ips, started, 1, acc)))
            goto out;
        t_last = now_s();
        step_last = tr->step;
    }
out:
    tr->batch_index = NULL;
    tr->batch_view = NULL;
    distill_tensor_free(images);
    xfree(labels);
    xfree(bindex);
    xfree(bview);
    distill_loader_free(ld);
    return rc;
}

/*
 * trainer_step.c - one training step, read as the algorithm: zero_grad ->
 * (teacher and students) forward -> losses -> backward (adapters, then the
 * student) -> update; with several students every one runs its forward
 * before any computes its losses, so each sees the others' outputs of the
 * same batch, and all update together.  A refused or skipped step puts back
 * what its forward changed.
 */
#include <math.h>
#include <string.h>

#include "train/trainer_internal.h"

int trainer_reshape_n(distill_tensor *t, int64_t n)
{
    if (t->dims[0] == n)
        return DISTILL_OK;
    int64_t d[DISTILL_MAX_RANK];
    memcpy(d, t->dims, sizeof d);
    d[0] = n;
    return distill_tensor_reshape(t, t->rank, d);
}

static void zero(distill_tensor *t)
{
    memset(t->data, 0, t->numel * sizeof(float));
}

static int set_lr(distill_trainer *tr, double *lr_out)
{
    double lr = tr->o.lr;
    int rc = distill_schedule_lr(&tr->sched, tr->step, &lr);
    if (rc)
        return rc;
    for (int i = 0; i < tr->n_students; i++) {
        distill_student *s = tr->students[i];
        if ((rc = distill_optimizer_set_lr(s->opt, lr)))
            return rc;
        for (int k = 0; k < s->n_terms; k++)
            if (s->terms[k].adapter_opt &&
                (rc = distill_optimizer_set_lr(s->terms[k].adapter_opt, lr)))
                return rc;
    }
    *lr_out = lr;
    return DISTILL_OK;
}

void trainer_setup_schedule(distill_trainer *tr, int64_t total)
{
    distill_schedule_options_init(&tr->sched, DISTILL_SCHEDULE_OPTIONS_VERSION);
    tr->sched.kind = tr->o.schedule;
    tr->sched.base_lr = tr->o.lr;
    tr->sched.total_steps = total > 0 ? total : 1;
    tr->sched.warmup_steps = tr->o.warmup_steps < tr->sched.total_steps ? tr->o.warmup_steps : 0;
    tr->total_steps = total;
}

/* Put back what the forward of a refused or skipped step changed. */
static void undo_forward(distill_trainer *tr)
{
    for (int i = 0; i < tr->n_students; i++) {
        distill_student *s = tr->students[i];
        model_state_restore(s->model, &s->backup);
        for (int k = 0; k < s->n_terms; k++)
            if (s->terms[k].adapter)
                model_state_restore(s->terms[k].adapter, &s->terms[k].backup);
    }
}

static int reshape_student(distill_student *s, int64_t n)
{
    int rc;
    if ((rc = trainer_reshape_n(s->s_logits, n)) || (rc = trainer_reshape_n(s->g_logits, n)) ||
        (rc = trainer_reshape_n(s->g_tmp, n)))
        return rc;
    for (int k = 0; k < s->n_staps; k++)
        if ((rc = trainer_reshape_n(s->staps[k].value, n)) ||
            (rc = trainer_reshape_n(s->staps[k].grad, n)))
            return rc;
    for (int k = 0; k < s->n_terms; k++) {
        term *t = &s->terms[k];
        if ((t->a_feat && ((rc = trainer_reshape_n(t->a_feat, n)) ||
                           (rc = trainer_reshape_n(t->a_grad, n)) ||
                           (rc = trainer_reshape_n(t->i_grad, n)))) ||
            (t->f_grad && (rc = trainer_reshape_n(t->f_grad, n))))
            return rc;
    }
    return DISTILL_OK;
}

/* BatchNorm statistics (the student's and its adapters') and the student's
 * generator change in the forward: keep them to restore if the step is
 * refused or skipped. */
static int save_state(distill_student *s)
{
    int rc = model_state_save(s->model, &s->backup);
    for (int k = 0; rc == DISTILL_OK && k < s->n_terms; k++)
        if (s->terms[k].adapter)
            rc = model_state_save(s->terms[k].adapter, &s->terms[k].backup);
    return rc;
}

/* zero_grad -> forward of the student, its taps and its adapters. */
static int student_forward(distill_student *s, const distill_tensor *images)
{
    int rc;
    distill_model_zero_grad(s->model);
    if ((rc = distill_model_forward(s->model, images, DISTILL_MODE_TRAINING, s->s_logits)))
        return rc;
    for (int k = 0; k < s->n_staps; k++)
        if ((rc = distill_model_read_node(s->model, s->staps[k].node, s->staps[k].value)))
            return rc;
    for (int k = 0; k < s->n_terms; k++) {
        term *t = &s->terms[k];
        if (!t->adapter)
            continue;
        distill_model_zero_grad(t->adapter);
        if ((rc = distill_model_forward(t->adapter, s->staps[t->stap].value,
                                        DISTILL_MODE_TRAINING, t->a_feat)))
            return rc;
    }
    return DISTILL_OK;
}

/* Student `si`'s losses: its terms, then the mutual term over the other
 * students' logits (all forwards done, nothing updated yet).  The weighted
 * total goes to s->loss, the gradients into g_logits and the tap
 * gradients. */
static int student_losses(distill_trainer *tr, int si, int64_t n, const int32_t *labels)
{
    distill_student *s = tr->students[si];
    double total = 0;
    int rc;
    zero(s->g_logits);
    for (int k = 0; k < s->n_staps; k++)
        zero(s->staps[k].grad);
    for (int k = 0; k < s->n_terms; k++) {
        term *t = &s->terms[k];
        distill_loss_batch b = DISTILL_LOSS_BATCH_INIT;
        b.n = n;
        b.classes = tr->classes;
        b.student_logits = s->s_logits->data;
        b.teacher_logits = tr->teacher ? tr->t_logits->data : NULL;
        b.labels = labels;
        distill_loss_grads g = DISTILL_LOSS_GRADS_INIT;
        zero(s->g_tmp);
        g.student_logits = s->g_tmp->data;
        g.student_feat = NULL;
        if (t->stap >= 0) {
            b.student_feat = t->adapter ? t->a_feat : s->staps[t->stap].value;
            b.teacher_feat = teacher_tap(tr->teacher, t->ttap);
            g.student_feat = t->adapter ? t->a_grad : t->f_grad;
            zero(g.student_feat);
        }
        double v = 0;
        if ((rc = distill_loss_forward(t->loss, &b, &v, &g)))
            return rc;
        s->term_values[k] = v;
        total += t->weight * v;
        for (size_t j = 0; j < s->g_logits->numel; j++)
            s->g_logits->data[j] += t->weight * s->g_tmp->data[j];
        if (t->stap >= 0 && !t->adapter) {
            distill_tensor *sg = s->staps[t->stap].grad;
            for (size_t j = 0; j < sg->numel; j++)
                sg->data[j] += t->weight * t->f_grad->data[j];
        }
        if (t->adapter)
            for (size_t j = 0; j < t->a_grad->numel; j++)
                t->a_grad->data[j] *= t->weight;
    }
    if (tr->n_students > 1) {
        const float *logits[MAX_STUDENTS];
        for (int j = 0; j < tr->n_students; j++)
            logits[j] = tr->students[j]->s_logits->data;
        double v = 0;
        if ((rc = mutual_loss(tr->n_students, si, n, tr->classes, logits,
                              tr->mutual.temperature, tr->mutual.weight, &v, s->g_logits->data)))
            return rc;
        s->term_values[s->n_terms] = v;
        total += tr->mutual.weight * v;
    }
    s->loss = total;
    return DISTILL_OK;
}

/* backward: adapters first, their input gradient joins the tap's */
static int student_backward(distill_student *s)
{
    int rc;
    for (int k = 0; k < s->n_terms; k++) {
        term *t = &s->terms[k];
        if (!t->adapter)
            continue;
        const char *nm = distill_model_output_name(t->adapter);
        const distill_tensor *ga = t->a_grad;
        if ((rc = distill_model_backward(t->adapter, 1, &nm, &ga)) ||
            (rc = distill_model_input_grad(t->adapter, t->i_grad)))
            return rc;
    }
    const char *names[MAX_LOSSES + 1];
    const distill_tensor *grads[MAX_LOSSES + 1];
    int ng = 0;
    names[ng] = distill_model_output_name(s->model);
    grads[ng++] = s->g_logits;
    for (int k = 0; k < s->n_staps; k++) {
        /* an adapter's input gradient is added here */
        for (int j = 0; j < s->n_terms; j++) {
            term *t = &s->terms[j];
            if (t->adapter && t->stap == k)
                for (size_t e = 0; e < t->i_grad->numel; e++)
                    s->staps[k].grad->data[e] += t->i_grad->data[e];
        }
        names[ng] = s->staps[k].node;
        grads[ng++] = s->staps[k].grad;
    }
    return distill_model_backward(s->model, ng, names, grads);
}

/* Is every gradient of student si (its model's and each adapter's) finite?
 * If not, DISTILL_ENONFINITE with a message, or 1 to skip the batch. */
static int check_grads(distill_trainer *tr, int si)
{
    distill_student *s = tr->students[si];
    for (int k = -1; k < s->n_terms; k++) {
        distill_model *m = k < 0 ? s->model : s->terms[k].adapter;
        if (!m)
            continue;
        size_t ng;
        const float *g = distill_model_grad_block(m, &ng);
        if (all_finite(g, ng))
            continue;
        if (tr->o.skip_nonfinite)
            return 1;
        char who[32] = "";
        if (tr->n_students > 1)
            snprintf(who, sizeof who, "of student %d ", si + 1);
        return seterr(DISTILL_ENONFINITE, "a gradient %s%s%s%sis not finite at step %lld", who,
                      k < 0 ? "" : "of the adapter of loss '", k < 0 ? "" : s->term_names[k],
                      k < 0 ? "" : "' ", (long long)tr->step);
    }
    return DISTILL_OK;
}

int trainer_train_step(distill_trainer *tr, const distill_tensor *images, const int32_t *labels,
                      double *loss_out, double *lr_out)
{
    int64_t n = images->dims[0];
    int rc;
    if (tr->sched.version == 0)
        trainer_setup_schedule(tr, tr->total_steps);
    if ((rc = trainer_reshape_n(tr->t_logits, n)))
        return rc;
    for (int i = 0; i < tr->n_students; i++)
        if ((rc = reshape_student(tr->students[i], n)))
            return rc;
    for (int64_t i = 0; labels && i < n; i++)
        if (labels[i] < 0 || labels[i] >= tr->classes)
            return seterr(DISTILL_EINVAL, "label %d of sample %lld is not in [0, %d)", labels[i],
                          (long long)i, tr->classes);
    if (!all_finite(images->data, images->numel)) {
        if (!tr->o.skip_nonfinite)
            return seterr(DISTILL_ENONFINITE, "the input batch contains NaN or infinite values");
        /* skipped like a batch whose loss is not finite; nothing has run yet */
        tr->skipped++;
        if (loss_out)
            *loss_out = NAN;
        if (lr_out)
            *lr_out = 0;
        return DISTILL_OK;
    }
    for (int i = 0; i < tr->n_students; i++)
        if ((rc = save_state(tr->students[i])))
            return rc;

    /* zero_grad -> forward: the teacher once, then every student */
    if (tr->teacher && teacher_is_cache(tr->teacher)) {
        if (!tr->batch_index) {
            rc = seterr(DISTILL_EUNSUPPORTED, "a cached teacher works only inside "
                                              "distill_trainer_fit");
            goto restore;
        }
        if ((rc = teacher_cache_lookup(tr->teacher, n, tr->batch_index, tr->batch_view,
                                       tr->t_logits)))
            goto restore;
    } else if (tr->teacher && (rc = distill_teacher_forward(tr->teacher, images, tr->t_logits))) {
        goto restore;
    }
    for (int i = 0; i < tr->n_students; i++)
        if ((rc = student_forward(tr->students[i], images)))
            goto restore;

    /* losses: each student's, against the others' outputs of this batch */
    double total = 0;
    for (int i = 0; i < tr->n_students; i++) {
        if ((rc = student_losses(tr, i, n, labels))) {
            if (rc == DISTILL_ENONFINITE && tr->o.skip_nonfinite)
                goto skip;
            goto restore;
        }
        total += tr->students[i]->loss;
    }
    if (!isfinite(total)) {
        if (tr->o.skip_nonfinite)
            goto skip;
        rc = seterr(DISTILL_ENONFINITE, "the loss is not finite at step %lld",
                    (long long)tr->step);
        goto restore;
    }

    for (int i = 0; i < tr->n_students; i++)
        if ((rc = student_backward(tr->students[i])))
            goto restore;

    /* update */
    double lr;
    if ((rc = set_lr(tr, &lr)))
        goto restore;
    /* Every gradient (each student's and each adapter's) is checked before
     * any optimizer moves a weight, so a failed step changes nothing. */
    for (int i = 0; i < tr->n_students; i++) {
        if ((rc = check_grads(tr, i)) == 1)
            goto skip;
        if (rc)
            goto restore;
    }
    /* With every gradient finite, an optimizer's step could fail only on
     * parameters changed under it, which the trainer's own adapters never
     * are: the steps after the first student's cannot fail. */
    for (int i = 0; i < tr->n_students; i++) {
        distill_student *s = tr->students[i];
        if ((rc = distill_optimizer_step(s->opt)))
            goto restore;
        for (int k = 0; k < s->n_terms; k++)
            if (s->terms[k].adapter_opt && (rc = distill_optimizer_step(s->terms[k].adapter_opt)))
                goto restore;
    }
    tr->step++;
    if (loss_out)
        *loss_out = total;
    if (lr_out)
        *lr_out = lr;
    return DISTILL_OK;
skip:
    tr->skipped++;
    undo_forward(tr);
    if (loss_out)
        *loss_out = NAN;
    if (lr_out)
        *lr_out = 0;
    return DISTILL_OK;
restore:
    undo_forward(tr);
    return rc;
}

int distill_trainer_step(distill_trainer *tr, const distill_tensor *images, const int32_t *labels,
                         double *loss)
{
    if (!tr || !images)
        return seterr(DISTILL_EINVAL, "distill_trainer_step: NULL argument");
    int rc = trainer_ensure_default_loss(tr);
    if (rc)
        return rc;
    const char *needs = trainer_loss_needing_labels(tr);
    if (!labels && needs)
        return seterr(DISTILL_EINVAL, "loss '%s' needs labels", needs);
    if (tr->sched.version == 0) {
        int64_t t = tr->total_steps > 0 ? tr->total_steps : tr->o.max_steps;
        trainer_setup_schedule(tr, t > 0 ? t : 1);
        if (t <= 0)
            tr->sched.kind = DISTILL_SCHEDULE_CONSTANT;
    }
    return trainer_train_step(tr, images, labels, loss, NULL);
}

int64_t distill_trainer_steps_done(const distill_trainer *tr)
{
    return tr ? tr->step : 0;
}

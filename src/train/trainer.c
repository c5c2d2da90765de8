/*
 * trainer.c - the training loop shared by supervised training and
 * distillation: zero_grad -> teacher forward -> student forward -> losses
 * -> backward -> update, with feature taps and their adapters, the
 * learning-rate schedule, progress reporting, and exact checkpoints.
 */
#include <math.h>
#include <string.h>
#include <time.h>

#include "data/data_internal.h"
#include "distill/teacher_internal.h"
#include "nn/graph.h"
#include "tensor_internal.h"
#include "util/container.h"

#define MAX_LOSSES 16

typedef struct term {
    distill_loss *loss;
    float weight;
    int stap;                /* index into tr->staps, or -1 */
    int ttap;                /* teacher tap index, or -1 */
    distill_model *adapter;  /* owned, or NULL */
    distill_optimizer *adapter_opt;
    distill_tensor *a_feat;  /* adapter output (N, teacher dims) */
    distill_tensor *a_grad;  /* loss gradient w.r.t. a_feat */
    distill_tensor *f_grad;  /* loss gradient w.r.t. the student tap (no adapter) */
    distill_tensor *i_grad;  /* adapter's input gradient (student tap shape) */
    float *stats_backup;     /* the adapter's BatchNorm statistics before a step */
    rng rng_backup;          /* and its generator */
} term;

typedef struct stap {          /* a tapped student node */
    char *node;
    int rank;
    int64_t dims[3];
    distill_tensor *value;     /* (N, dims) */
    distill_tensor *grad;      /* summed gradient from every loss on it */
} stap;

struct distill_trainer {
    distill_model *student;
    distill_teacher *teacher;
    distill_trainer_options o;
    distill_optimizer *opt;
    distill_schedule_options sched;
    int classes;

    term terms[MAX_LOSSES];
    int n_terms;
    stap staps[MAX_LOSSES];
    int n_staps;
    const char *term_names[MAX_LOSSES];
    double term_values[MAX_LOSSES];

    distill_tensor *s_logits, *t_logits, *g_logits, *g_tmp;
    float *stats_backup;
    rng rng_backup;            /* the student's generator before a step */

    int64_t step;              /* optimizer steps done */
    int64_t skipped;
    uint64_t data_epoch, data_pos; /* where the data resumes */
    int64_t total_steps;
    /* a cached teacher: the dataset positions and views of the batch */
    const int64_t *batch_index;
    const int32_t *batch_view;
};

/* ------------------------------------------------------------- options */

int distill_trainer_options_init(distill_trainer_options *opts, unsigned int version)
{
    if (!opts)
        return seterr(DISTILL_EINVAL, "distill_trainer_options_init: opts is NULL");
    if (version != DISTILL_TRAINER_OPTIONS_VERSION)
        return seterr(DISTILL_EVERSION, "distill_trainer_options version %u is not known", version);
    distill_trainer_options o = DISTILL_TRAINER_OPTIONS_INIT;
    *opts = o;
    return DISTILL_OK;
}

int distill_eval_options_init(distill_eval_options *opts, unsigned int version)
{
    if (!opts)
        return seterr(DISTILL_EINVAL, "distill_eval_options_init: opts is NULL");
    if (version != DISTILL_EVAL_OPTIONS_VERSION)
        return seterr(DISTILL_EVERSION, "distill_eval_options version %u is not known", version);
    distill_eval_options o = DISTILL_EVAL_OPTIONS_INIT;
    *opts = o;
    return DISTILL_OK;
}

static int check_norm(int count, const float *mean, const float *std, const char *what)
{
    if (count < 0 || count > 4)
        return seterr(DISTILL_EINVAL, "%s: norm_count %d is not in 0..4", what, count);
    for (int c = 0; c < count; c++)
        if (!(std[c] > 0.0f) || !isfinite(mean[c]) || !isfinite(std[c]))
            return seterr(DISTILL_EINVAL, "%s: std[%d] must be positive and finite", what, c);
    return DISTILL_OK;
}

static int make_optimizer(distill_model *m, const distill_trainer_options *o, distill_optimizer **out)
{
    distill_optimizer_options oo;
    distill_optimizer_options_init(&oo, DISTILL_OPTIMIZER_OPTIONS_VERSION);
    oo.kind = DISTILL_OPTIM_SGD;
    oo.lr = o->lr;
    oo.momentum = o->momentum;
    oo.nesterov = o->nesterov && o->momentum > 0;
    oo.weight_decay = o->weight_decay;
    return distill_optimizer_create(out, m, &oo);
}

/* ------------------------------------------------------------- create */

int distill_trainer_create(distill_trainer **out, distill_model *student, distill_teacher *teacher,
                           const distill_trainer_options *opts)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_trainer_create: out is NULL");
    *out = NULL;
    if (!student)
        return seterr(DISTILL_EINVAL, "distill_trainer_create: student is NULL");
    distill_trainer_options o = DISTILL_TRAINER_OPTIONS_INIT;
    if (opts) {
        if (opts->version != DISTILL_TRAINER_OPTIONS_VERSION)
            return seterr(DISTILL_EVERSION, "distill_trainer_options version %u is not known",
                          opts->version);
        o = *opts;
    }
    if (o.epochs < 1 || o.batch_size < 1 || !(o.lr >= 0) || !(o.momentum >= 0 && o.momentum < 1) ||
        !(o.weight_decay >= 0) || o.crop_padding < 0 || o.warmup_steps < 0 ||
        o.steps_per_epoch < 0 || o.max_steps < 0)
        return seterr(DISTILL_EINVAL, "trainer options: epochs and batch_size must be >= 1, lr and "
                                      "weight_decay >= 0, momentum in [0, 1), counts >= 0");
    int rc = check_norm(o.norm_count, o.mean, o.std, "trainer options");
    if (rc)
        return rc;
    const node *outn = &student->nodes[student->output];
    if (outn->rank != 1 || outn->dims[0] < 2)
        return seterr(DISTILL_ESHAPE, "student: the output node '%s' must be a vector of at least "
                                      "2 logits",
                      outn->name);
    if (teacher && distill_teacher_classes(teacher) != outn->dims[0])
        return seterr(DISTILL_ESHAPE, "teacher has %d classes, the student %lld",
                      distill_teacher_classes(teacher), (long long)outn->dims[0]);
    if (o.progress_every < 1)
        o.progress_every = 50;
    distill_trainer *tr = xcalloc(1, sizeof *tr);
    if (!tr)
        return DISTILL_ENOMEM;
    tr->student = student;
    tr->teacher = teacher;
    /* the run's seed drives dropout as well as the data */
    rng_seed(&student->rng, o.seed ^ 0xd20b0u);
    tr->o = o;
    tr->classes = (int)outn->dims[0];
    int64_t d[2] = {o.batch_size, tr->classes};
    if ((rc = make_optimizer(student, &o, &tr->opt)) ||
        (rc = distill_tensor_create(&tr->s_logits, 2, d)) ||
        (rc = distill_tensor_create(&tr->t_logits, 2, d)) ||
        (rc = distill_tensor_create(&tr->g_logits, 2, d)) ||
        (rc = distill_tensor_create(&tr->g_tmp, 2, d))) {
        distill_trainer_free(tr);
        return rc;
    }
    *out = tr;
    return DISTILL_OK;
}

void distill_trainer_free(distill_trainer *tr)
{
    if (!tr)
        return;
    for (int k = 0; k < tr->n_terms; k++) {
        term *t = &tr->terms[k];
        distill_loss_free(t->loss);
        distill_optimizer_free(t->adapter_opt);
        distill_model_free(t->adapter);
        distill_tensor_free(t->a_feat);
        distill_tensor_free(t->a_grad);
        distill_tensor_free(t->f_grad);
        distill_tensor_free(t->i_grad);
        xfree(t->stats_backup);
    }
    for (int k = 0; k < tr->n_staps; k++) {
        xfree(tr->staps[k].node);
        distill_tensor_free(tr->staps[k].value);
        distill_tensor_free(tr->staps[k].grad);
    }
    distill_optimizer_free(tr->opt);
    distill_tensor_free(tr->s_logits);
    distill_tensor_free(tr->t_logits);
    distill_tensor_free(tr->g_logits);
    distill_tensor_free(tr->g_tmp);
    xfree(tr->stats_backup);
    xfree(tr);
}

int distill_trainer_set_optimizer(distill_trainer *tr, const distill_optimizer_options *opts)
{
    if (!tr || !opts)
        return seterr(DISTILL_EINVAL, "distill_trainer_set_optimizer: NULL argument");
    distill_optimizer *o;
    int rc = distill_optimizer_create(&o, tr->student, opts);
    if (rc)
        return rc;
    distill_optimizer_free(tr->opt);
    tr->opt = o;
    tr->o.lr = opts->lr;
    return DISTILL_OK;
}

/* ------------------------------------------------------------- losses */

static int tensor_for(distill_tensor **t, int rank, const int64_t dims[3], int64_t n)
{
    int64_t d[4] = {n, dims[0], dims[1], dims[2]};
    return distill_tensor_create(t, rank + 1, d);
}

static int add_student_tap(distill_trainer *tr, const char *name, int *index)
{
    for (int k = 0; k < tr->n_staps; k++)
        if (strcmp(tr->staps[k].node, name) == 0) {
            *index = k;
            return DISTILL_OK;
        }
    distill_node_info info;
    if (distill_model_find_node(tr->student, name, &info))
        return seterr(DISTILL_ENOTFOUND, "student has no node named '%s' to tap", name);
    stap *s = &tr->staps[tr->n_staps];
    memset(s, 0, sizeof *s);
    s->rank = info.rank;
    memcpy(s->dims, info.dims, sizeof s->dims);
    int rc;
    if (!(s->node = xstrdup(name)))
        return DISTILL_ENOMEM;
    if ((rc = tensor_for(&s->value, s->rank, s->dims, tr->o.batch_size)) ||
        (rc = tensor_for(&s->grad, s->rank, s->dims, tr->o.batch_size)) ||
        (rc = distill_model_keep_node(tr->student, name))) {
        xfree(s->node);
        distill_tensor_free(s->value);
        distill_tensor_free(s->grad);
        return rc;
    }
    *index = tr->n_staps++;
    return DISTILL_OK;
}

/* An adapter mapping the student tap onto the teacher tap's shape:
 * conv 1x1 + BatchNorm for feature maps, linear for vectors. */
static int make_adapter(const stap *s, int trank, const int64_t tdims[3], uint64_t seed,
                        distill_model **out)
{
    distill_model *a;
    int rc = distill_model_create(&a, "feature", s->rank, s->dims);
    if (rc)
        return rc;
    if (s->rank == 3) {
        distill_conv2d_options c;
        distill_conv2d_options_init(&c, DISTILL_CONV2D_OPTIONS_VERSION);
        c.bias = 0;
        if ((rc = distill_model_add_conv2d(a, "conv", "feature", (int)tdims[0], &c)) ||
            (rc = distill_model_add_batchnorm(a, "bn", "conv", 1e-5f, 0.1f)))
            goto fail;
    } else if ((rc = distill_model_add_linear(a, "linear", "feature", (int)tdims[0], 1))) {
        goto fail;
    }
    (void)trank;
    /* the adapter's input gradient flows back into the student */
    if ((rc = distill_model_keep_node(a, "feature")) ||
        (rc = distill_model_init_weights(a, DISTILL_INIT_DEFAULT, seed)))
        goto fail;
    *out = a;
    return DISTILL_OK;
fail:
    distill_model_free(a);
    return rc;
}

static int same_shape(int r1, const int64_t *d1, int r2, const int64_t *d2)
{
    if (r1 != r2)
        return 0;
    for (int k = 0; k < r1; k++)
        if (d1[k] != d2[k])
            return 0;
    return 1;
}

int distill_trainer_add_loss(distill_trainer *tr, distill_loss *loss, float weight)
{
    if (!tr || !loss) {
        distill_loss_free(loss);
        return seterr(DISTILL_EINVAL, "distill_trainer_add_loss: NULL argument");
    }
    int rc = DISTILL_OK;
    if (tr->n_terms == MAX_LOSSES) {
        rc = seterr(DISTILL_EINVAL, "trainer: more than %d losses", MAX_LOSSES);
        goto fail;
    }
    if (!isfinite(weight) || weight < 0) {
        rc = seterr(DISTILL_EINVAL, "loss '%s': weight %g must be finite and >= 0",
                    distill_loss_name(loss), (double)weight);
        goto fail;
    }
    if (distill_loss_needs_teacher(loss) && !tr->teacher) {
        rc = seterr(DISTILL_EINVAL, "loss '%s' needs a teacher and the trainer has none",
                    distill_loss_name(loss));
        goto fail;
    }
    term *t = &tr->terms[tr->n_terms];
    memset(t, 0, sizeof *t);
    t->loss = loss;
    t->weight = weight;
    t->stap = t->ttap = -1;
    const char *sn = distill_loss_student_node(loss), *tn = distill_loss_teacher_node(loss);
    if (sn || tn) {
        if (!sn || !tn) {
            rc = seterr(DISTILL_EINVAL, "loss '%s' names a %s tap but no %s tap",
                        distill_loss_name(loss), sn ? "student" : "teacher",
                        sn ? "teacher" : "student");
            goto fail;
        }
        if (!tr->teacher) {
            rc = seterr(DISTILL_EINVAL, "loss '%s' taps a teacher node and the trainer has no "
                                        "teacher",
                        distill_loss_name(loss));
            goto fail;
        }
        int trank, nst = tr->n_staps;
        int64_t tdims[3];
        if ((rc = add_student_tap(tr, sn, &t->stap)) ||
            (rc = teacher_add_tap(tr->teacher, tn, &trank, tdims, &t->ttap)))
            goto fail_tap;
        stap *s = &tr->staps[t->stap];
        const char *name = distill_loss_name(loss);
        int needs_same = strcmp(name, "at") != 0 && strcmp(name, "sp") != 0 &&
                         strcmp(name, "rkd") != 0 && strcmp(name, "pkt") != 0;
        if (strcmp(name, "at") == 0 && !(s->rank == 3 && trank == 3 && s->dims[1] == tdims[1] &&
                                         s->dims[2] == tdims[2])) {
            rc = seterr(DISTILL_ESHAPE, "loss 'at': student '%s' and teacher '%s' must be feature "
                                        "maps of the same height and width",
                        sn, tn);
            goto fail_tap;
        }
        if (needs_same && !same_shape(s->rank, s->dims, trank, tdims)) {
            if (s->rank != trank || (s->rank == 3 && (s->dims[1] != tdims[1] ||
                                                      s->dims[2] != tdims[2]))) {
                rc = seterr(DISTILL_ESHAPE, "loss '%s': student '%s' and teacher '%s' differ in "
                                            "rank or spatial size; an adapter only maps channels "
                                            "(tap nodes of the same height and width)",
                            name, sn, tn);
                goto fail_tap;
            }
            if ((rc = make_adapter(s, trank, tdims, tr->o.seed + 7919u * (uint64_t)tr->n_terms,
                                   &t->adapter)) ||
                (rc = make_optimizer(t->adapter, &tr->o, &t->adapter_opt)) ||
                (rc = tensor_for(&t->a_feat, trank, tdims, tr->o.batch_size)) ||
                (rc = tensor_for(&t->a_grad, trank, tdims, tr->o.batch_size)) ||
                (rc = tensor_for(&t->i_grad, s->rank, s->dims, tr->o.batch_size)))
                goto fail_adapter;
        } else if ((rc = tensor_for(&t->f_grad, s->rank, s->dims, tr->o.batch_size))) {
            goto fail_tap;
        }
        (void)nst;
    }
    tr->term_names[tr->n_terms] = distill_loss_name(loss);
    tr->n_terms++;
    return DISTILL_OK;
fail_adapter:
    distill_optimizer_free(t->adapter_opt);
    distill_model_free(t->adapter);
    distill_tensor_free(t->a_feat);
    distill_tensor_free(t->a_grad);
    distill_tensor_free(t->i_grad);
    memset(t, 0, sizeof *t);
fail_tap:
fail:
    distill_loss_free(loss);
    return rc;
}

static int ensure_default_loss(distill_trainer *tr)
{
    if (tr->n_terms)
        return DISTILL_OK;
    distill_loss *l;
    int rc = tr->teacher ? distill_loss_kd(&l, 4.0f, 0.9f) : distill_loss_cross_entropy(&l, 0.0f);
    return rc ? rc : distill_trainer_add_loss(tr, l, 1.0f);
}

/* ------------------------------------------------------------- the step */

static int reshape_n(distill_tensor *t, int64_t n)
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

static int all_finite(const float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i]))
            return 0;
    return 1;
}

static int set_lr(distill_trainer *tr, double *lr_out)
{
    double lr = tr->o.lr;
    int rc = distill_schedule_lr(&tr->sched, tr->step, &lr);
    if (rc)
        return rc;
    if ((rc = distill_optimizer_set_lr(tr->opt, lr)))
        return rc;
    for (int k = 0; k < tr->n_terms; k++)
        if (tr->terms[k].adapter_opt &&
            (rc = distill_optimizer_set_lr(tr->terms[k].adapter_opt, lr)))
            return rc;
    *lr_out = lr;
    return DISTILL_OK;
}

static void setup_schedule(distill_trainer *tr, int64_t total)
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
    if (tr->student->n_sdata)
        memcpy(tr->student->sdata, tr->stats_backup, tr->student->n_sdata * sizeof(float));
    for (int k = 0; k < tr->n_terms; k++) {
        term *t = &tr->terms[k];
        if (t->adapter && t->adapter->n_sdata)
            memcpy(t->adapter->sdata, t->stats_backup, t->adapter->n_sdata * sizeof(float));
        if (t->adapter)
            t->adapter->rng = t->rng_backup;
    }
    tr->student->rng = tr->rng_backup;
}

static int train_step(distill_trainer *tr, const distill_tensor *images, const int32_t *labels,
                      double *loss_out, double *lr_out)
{
    int64_t n = images->dims[0];
    int rc;
    if (tr->sched.version == 0)
        setup_schedule(tr, tr->total_steps);
    if ((rc = reshape_n(tr->s_logits, n)) || (rc = reshape_n(tr->t_logits, n)) ||
        (rc = reshape_n(tr->g_logits, n)) || (rc = reshape_n(tr->g_tmp, n)))
        return rc;
    for (int k = 0; k < tr->n_staps; k++)
        if ((rc = reshape_n(tr->staps[k].value, n)) || (rc = reshape_n(tr->staps[k].grad, n)))
            return rc;
    for (int k = 0; k < tr->n_terms; k++) {
        term *t = &tr->terms[k];
        if ((t->a_feat && ((rc = reshape_n(t->a_feat, n)) || (rc = reshape_n(t->a_grad, n)) ||
                           (rc = reshape_n(t->i_grad, n)))) ||
            (t->f_grad && (rc = reshape_n(t->f_grad, n))))
            return rc;
    }
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

    /* BatchNorm statistics (the student's and the adapters') and the
     * student's generator change in the forward: keep them to restore if
     * the step is refused or skipped */
    size_t ns = tr->student->n_sdata;
    if (ns) {
        if (!tr->stats_backup && !(tr->stats_backup = xmalloc(ns * sizeof(float))))
            return DISTILL_ENOMEM;
        memcpy(tr->stats_backup, tr->student->sdata, ns * sizeof(float));
    }
    for (int k = 0; k < tr->n_terms; k++) {
        term *t = &tr->terms[k];
        size_t na = t->adapter ? t->adapter->n_sdata : 0;
        if (t->adapter)
            t->rng_backup = t->adapter->rng;
        if (!na)
            continue;
        if (!t->stats_backup && !(t->stats_backup = xmalloc(na * sizeof(float))))
            return DISTILL_ENOMEM;
        memcpy(t->stats_backup, t->adapter->sdata, na * sizeof(float));
    }
    tr->rng_backup = tr->student->rng;

    /* zero_grad -> forward */
    distill_model_zero_grad(tr->student);
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
    if ((rc = distill_model_forward(tr->student, images, DISTILL_MODE_TRAINING, tr->s_logits)))
        goto restore;
    for (int k = 0; k < tr->n_staps; k++)
        if ((rc = distill_model_read_node(tr->student, tr->staps[k].node, tr->staps[k].value)))
            goto restore;
    for (int k = 0; k < tr->n_terms; k++) {
        term *t = &tr->terms[k];
        if (!t->adapter)
            continue;
        distill_model_zero_grad(t->adapter);
        if ((rc = distill_model_forward(t->adapter, tr->staps[t->stap].value,
                                        DISTILL_MODE_TRAINING, t->a_feat)))
            goto restore;
    }

    /* losses */
    double total = 0;
    zero(tr->g_logits);
    for (int k = 0; k < tr->n_staps; k++)
        zero(tr->staps[k].grad);
    for (int k = 0; k < tr->n_terms; k++) {
        term *t = &tr->terms[k];
        distill_loss_batch b;
        memset(&b, 0, sizeof b);
        b.n = n;
        b.classes = tr->classes;
        b.student_logits = tr->s_logits->data;
        b.teacher_logits = tr->teacher ? tr->t_logits->data : NULL;
        b.labels = labels;
        distill_loss_grads g;
        zero(tr->g_tmp);
        g.student_logits = tr->g_tmp->data;
        g.student_feat = NULL;
        if (t->stap >= 0) {
            b.student_feat = t->adapter ? t->a_feat : tr->staps[t->stap].value;
            b.teacher_feat = teacher_tap(tr->teacher, t->ttap);
            g.student_feat = t->adapter ? t->a_grad : t->f_grad;
            zero(g.student_feat);
        }
        double v = 0;
        if ((rc = distill_loss_forward(t->loss, &b, &v, &g))) {
            if (rc == DISTILL_ENONFINITE && tr->o.skip_nonfinite)
                goto skip;
            goto restore;
        }
        tr->term_values[k] = v;
        total += t->weight * v;
        for (size_t j = 0; j < tr->g_logits->numel; j++)
            tr->g_logits->data[j] += t->weight * tr->g_tmp->data[j];
        if (t->stap >= 0 && !t->adapter) {
            distill_tensor *sg = tr->staps[t->stap].grad;
            for (size_t j = 0; j < sg->numel; j++)
                sg->data[j] += t->weight * t->f_grad->data[j];
        }
        if (t->adapter)
            for (size_t j = 0; j < t->a_grad->numel; j++)
                t->a_grad->data[j] *= t->weight;
    }
    if (!isfinite(total)) {
        if (tr->o.skip_nonfinite)
            goto skip;
        rc = seterr(DISTILL_ENONFINITE, "the loss is not finite at step %lld",
                    (long long)tr->step);
        goto restore;
    }

    /* backward: adapters first, their input gradient joins the tap's */
    for (int k = 0; k < tr->n_terms; k++) {
        term *t = &tr->terms[k];
        if (!t->adapter)
            continue;
        const char *nm = distill_model_output_name(t->adapter);
        const distill_tensor *ga = t->a_grad;
        if ((rc = distill_model_backward(t->adapter, 1, &nm, &ga)) ||
            (rc = distill_model_input_grad(t->adapter, t->i_grad)))
            goto restore;
    }
    {
        const char *names[MAX_LOSSES + 1];
        const distill_tensor *grads[MAX_LOSSES + 1];
        int ng = 0;
        names[ng] = distill_model_output_name(tr->student);
        grads[ng++] = tr->g_logits;
        for (int k = 0; k < tr->n_staps; k++) {
            /* an adapter's input gradient is added here */
            for (int j = 0; j < tr->n_terms; j++) {
                term *t = &tr->terms[j];
                if (t->adapter && t->stap == k)
                    for (size_t e = 0; e < t->i_grad->numel; e++)
                        tr->staps[k].grad->data[e] += t->i_grad->data[e];
            }
            names[ng] = tr->staps[k].node;
            grads[ng++] = tr->staps[k].grad;
        }
        if ((rc = distill_model_backward(tr->student, ng, names, grads)))
            goto restore;
    }

    /* update */
    double lr;
    if ((rc = set_lr(tr, &lr)))
        goto restore;
    /* Every gradient (the student's and each adapter's) is checked before
     * any optimizer moves a weight, so a failed step changes nothing. */
    for (int k = -1; k < tr->n_terms; k++) {
        distill_model *m = k < 0 ? tr->student : tr->terms[k].adapter;
        if (!m)
            continue;
        size_t ng;
        const float *g = distill_model_grad_block(m, &ng);
        if (!all_finite(g, ng)) {
            if (tr->o.skip_nonfinite)
                goto skip;
            rc = seterr(DISTILL_ENONFINITE, "a gradient %s%s%sis not finite at step %lld",
                        k < 0 ? "" : "of the adapter of loss '", k < 0 ? "" : tr->term_names[k],
                        k < 0 ? "" : "' ", (long long)tr->step);
            goto restore;
        }
    }
    /* With every gradient finite, an optimizer's step could fail only on
     * parameters changed under it, which the trainer's own adapters never
     * are: the adapters' steps after the student's cannot fail. */
    if ((rc = distill_optimizer_step(tr->opt)))
        goto restore;
    for (int k = 0; k < tr->n_terms; k++)
        if (tr->terms[k].adapter_opt && (rc = distill_optimizer_step(tr->terms[k].adapter_opt)))
            goto restore;
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
    int rc = ensure_default_loss(tr);
    if (rc)
        return rc;
    for (int k = 0; k < tr->n_terms; k++)
        if (!labels && distill_loss_needs_labels(tr->terms[k].loss))
            return seterr(DISTILL_EINVAL, "loss '%s' needs labels", tr->term_names[k]);
    if (tr->sched.version == 0) {
        int64_t t = tr->total_steps > 0 ? tr->total_steps : tr->o.max_steps;
        setup_schedule(tr, t > 0 ? t : 1);
        if (t <= 0)
            tr->sched.kind = DISTILL_SCHEDULE_CONSTANT;
    }
    return train_step(tr, images, labels, loss, NULL);
}

int64_t distill_trainer_steps_done(const distill_trainer *tr)
{
    return tr ? tr->step : 0;
}

/* ------------------------------------------------------------- fit */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void norm_to_loader(distill_loader_options *lo, int count, const float *mean,
                           const float *std)
{
    lo->norm_count = count;
    lo->mean = count ? mean : NULL;
    lo->std = count ? std : NULL;
}

static int report(distill_trainer *tr, int epoch, double loss, double lr, double ips,
                  double started, int end_of_epoch, double val)
{
    if (!tr->o.progress)
        return DISTILL_OK;
    distill_progress p;
    memset(&p, 0, sizeof p);
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
    p.n_terms = tr->n_terms;
    p.term_names = tr->term_names;
    p.term_values = tr->term_values;
    p.end_of_epoch = end_of_epoch;
    p.val_accuracy = val;
    p.skipped_steps = tr->skipped;
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
    int rc = ensure_default_loss(tr);
    if (rc)
        return rc;
    int labelled = distill_dataset_has_labels(train);
    for (int k = 0; k < tr->n_terms; k++)
        if (!labelled && distill_loss_needs_labels(tr->terms[k].loss))
            return seterr(DISTILL_EINVAL, "loss '%s' needs labels and the training data has none",
                          tr->term_names[k]);
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
    norm_to_loader(&lo, tr->o.norm_count, tr->o.mean, tr->o.std);
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
    const node *in = &tr->student->nodes[0];
    if (in->rank != 3 || in->dims[0] != dims[0] || in->dims[1] != dims[1] ||
        in->dims[2] != dims[2]) {
        distill_loader_free(ld);
        return seterr(DISTILL_ESHAPE, "the training batches' samples are %lldx%lldx%lld, the "
                                      "model's input '%s' is %lldx%lldx%lld",
                      (long long)dims[0], (long long)dims[1], (long long)dims[2], in->name,
                      (long long)in->dims[0], (long long)in->dims[1], (long long)in->dims[2]);
    }
    int cached = tr->teacher && teacher_is_cache(tr->teacher);
    if (cached && (rc = teacher_cache_check(tr->teacher, train, &tr->o))) {
        distill_loader_free(ld);
        return rc;
    }
    int64_t per_epoch = distill_loader_num_batches(ld);
    if (tr->o.steps_per_epoch > 0 && tr->o.steps_per_epoch < per_epoch)
        per_epoch = tr->o.steps_per_epoch;
    setup_schedule(tr, per_epoch * tr->o.epochs);

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
            if ((rc = train_step(tr, images, labelled ? labels : NULL, &loss, &lr)))
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
            distill_eval_result r;
            if ((rc = distill_evaluate(tr->student, val, &eo, &r)))
                goto out;
            acc = r.top1;
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

/* ------------------------------------------------------------- evaluation */

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
        if (opts->version != DISTILL_EVAL_OPTIONS_VERSION)
            return seterr(DISTILL_EVERSION, "distill_eval_options version %u is not known",
                          opts->version);
        o = *opts;
    }
    if (o.batch_size < 1)
        return seterr(DISTILL_EINVAL, "evaluate: batch_size must be >= 1");
    int rc = check_norm(o.norm_count, o.mean, o.std, "evaluate");
    if (rc)
        return rc;
    const node *outn = &model->nodes[model->output];
    if (outn->rank != 1)
        return seterr(DISTILL_ESHAPE, "evaluate: the output node '%s' is not a vector of logits",
                      outn->name);
    int classes = (int)outn->dims[0];
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
    norm_to_loader(&lo, o.norm_count, o.mean, o.std);
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
    rng saved_rng = model->rng;
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
        if ((rc = reshape_n(y, count)) || (ty && (rc = reshape_n(ty, count))) ||
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
    model->rng = saved_rng;
    distill_tensor_free(x);
    distill_tensor_free(y);
    distill_tensor_free(ty);
    xfree(labels);
    distill_loader_free(ld);
    return rc;
}

/* ------------------------------------------------------------- checkpoints */

#define CKPT_MAGIC "DSTLCKPT"
#define CKPT_VERSION 1

static int put_optimizer(cwriter *w, const distill_optimizer *opt)
{
    size_t sz;
    int rc = distill_optimizer_state_size(opt, &sz);
    if (rc)
        return rc;
    void *buf = xmalloc(sz ? sz : 1);
    if (!buf)
        return DISTILL_ENOMEM;
    if ((rc = distill_optimizer_save_state(opt, buf, sz)) == DISTILL_OK) {
        cw_u64(w, sz);
        cw_bytes(w, buf, sz);
    }
    xfree(buf);
    return rc;
}

static int put_model(cwriter *w, const distill_model *m)
{
    void *buf;
    size_t sz;
    int rc = model_serialize(m, &buf, &sz);
    if (rc)
        return rc;
    cw_u64(w, sz);
    cw_bytes(w, buf, sz);
    for (int k = 0; k < 4; k++)
        cw_u64(w, m->rng.s[k]);
    xfree(buf);
    return DISTILL_OK;
}

/* The loss terms a checkpoint records: a trainer given no loss gets one
 * default term (without an adapter) at its first fit or step, so it counts
 * as one before that too, and a checkpoint written after training loads
 * into a freshly created trainer. */
static int effective_terms(const distill_trainer *tr)
{
    return tr->n_terms ? tr->n_terms : 1;
}

int distill_trainer_save_checkpoint(const distill_trainer *tr, const char *path)
{
    if (!tr || !path)
        return seterr(DISTILL_EINVAL, "distill_trainer_save_checkpoint: NULL argument");
    cwriter w;
    int rc = cw_begin(&w, CKPT_MAGIC, CKPT_VERSION, 0);
    if (rc)
        return rc;
    cw_section(&w, "TRNR");
    cw_i64(&w, tr->step);
    cw_i64(&w, tr->skipped);
    cw_u64(&w, tr->data_epoch);
    cw_u64(&w, tr->data_pos);
    cw_u64(&w, tr->o.seed);
    cw_u32(&w, (uint32_t)effective_terms(tr));
    cw_end_section(&w);
    cw_section(&w, "MODL");
    if ((rc = put_model(&w, tr->student)) || (rc = put_optimizer(&w, tr->opt)))
        goto fail;
    cw_end_section(&w);
    cw_section(&w, "ADPT");
    for (int k = 0; k < effective_terms(tr); k++) {
        cw_u8(&w, k < tr->n_terms && tr->terms[k].adapter != NULL);
        if (tr->terms[k].adapter && ((rc = put_model(&w, tr->terms[k].adapter)) ||
                                     (rc = put_optimizer(&w, tr->terms[k].adapter_opt))))
            goto fail;
    }
    cw_end_section(&w);
    void *data;
    size_t size;
    if ((rc = cw_finish(&w, &data, &size)))
        return rc;
    afile *f;
    if ((rc = afile_open(&f, path))) {
        xfree(data);
        return rc;
    }
    rc = afile_write(f, data, size);
    xfree(data);
    if (rc) {
        afile_abort(f);
        return rc;
    }
    return afile_commit(f);
fail:
    cw_free(&w);
    return rc;
}

/* Read a serialized model and optimizer state; check they fit `m`/`opt`
 * and stage them (applied only once the whole file has been checked). */
typedef struct staged {
    distill_model *model;
    uint64_t rng[4];
    const void *opt_state;
    size_t opt_size;
} staged;

static int get_model(csection *s, const distill_model *like, staged *st)
{
    uint64_t sz = cs_u64(s);
    if (s->status || sz > s->len - s->pos)
        return cs_fail(s, DISTILL_EFORMAT, "model length %llu exceeds the section",
                       (unsigned long long)sz);
    int rc = model_deserialize(&st->model, s->p + s->pos, (size_t)sz);
    if (rc == DISTILL_ENOMEM) /* out of memory is not the file's fault */
        return rc;
    if (rc)
        return cs_fail(s, DISTILL_EFORMAT, "%s", distill_last_error());
    s->pos += (size_t)sz;
    for (int k = 0; k < 4; k++)
        st->rng[k] = cs_u64(s);
    if (st->model->n_pdata != like->n_pdata || st->model->n_sdata != like->n_sdata ||
        st->model->n_params != like->n_params)
        return cs_fail(s, DISTILL_EFORMAT, "the checkpoint is of another architecture (%zu "
                                           "parameters, this model has %zu)",
                       st->model->n_pdata, like->n_pdata);
    for (int k = 0; k < like->n_params; k++)
        if (strcmp(st->model->params[k].name, like->params[k].name) != 0)
            return cs_fail(s, DISTILL_EFORMAT, "parameter %d is '%s', this model's is '%s'", k,
                           st->model->params[k].name, like->params[k].name);
    uint64_t osz = cs_u64(s);
    if (s->status || osz > s->len - s->pos)
        return cs_fail(s, DISTILL_EFORMAT, "optimizer state length exceeds the section");
    st->opt_state = s->p + s->pos;
    st->opt_size = (size_t)osz;
    s->pos += (size_t)osz;
    return s->status;
}

static void apply_model(distill_model *m, const staged *st)
{
    memcpy(m->pdata, st->model->pdata, m->n_pdata * sizeof(float));
    memcpy(m->sdata, st->model->sdata, m->n_sdata * sizeof(float));
    for (int k = 0; k < 4; k++)
        m->rng.s[k] = st->rng[k];
}

int distill_trainer_load_checkpoint(distill_trainer *tr, const char *path)
{
    if (!tr || !path)
        return seterr(DISTILL_EINVAL, "distill_trainer_load_checkpoint: NULL argument");
    void *data;
    size_t size;
    int rc = read_file(path, (size_t)1 << 32, &data, &size);
    if (rc)
        return rc;
    char what[300];
    snprintf(what, sizeof what, "checkpoint '%.256s'", path);
    creader r;
    staged st[MAX_LOSSES + 1];
    memset(st, 0, sizeof st);
    csection s;
    int64_t step = 0, skipped = 0;
    uint64_t de = 0, dp = 0;
    if ((rc = cr_open(&r, data, size, CKPT_MAGIC, CKPT_VERSION, what)))
        goto out;
    static const char *const known[] = {"TRNR", "MODL", "ADPT", NULL};
    if ((rc = cr_check_tags(&r, known)))
        goto out;
    if (!cr_find(&r, "TRNR", &s)) {
        rc = seterr(DISTILL_EFORMAT, "%s: no TRNR section", what);
        goto out;
    }
    step = cs_i64(&s);
    skipped = cs_i64(&s);
    de = cs_u64(&s);
    dp = cs_u64(&s);
    (void)cs_u64(&s);
    uint32_t nt = cs_u32(&s);
    if ((rc = s.status))
        goto out;
    if (nt != (uint32_t)effective_terms(tr) || step < 0) {
        rc = seterr(DISTILL_EFORMAT, "%s: written with %u losses, this trainer has %d", what, nt,
                    effective_terms(tr));
        goto out;
    }
    if (!cr_find(&r, "MODL", &s) || !cr_find(&r, "ADPT", &s)) {
        rc = seterr(DISTILL_EFORMAT, "%s: a section is missing", what);
        goto out;
    }
    cr_find(&r, "MODL", &s);
    if ((rc = get_model(&s, tr->student, &st[0])))
        goto out;
    cr_find(&r, "ADPT", &s);
    for (int k = 0; k < effective_terms(tr); k++) {
        int has = cs_u8(&s);
        if ((rc = s.status))
            goto out;
        if (has != (k < tr->n_terms && tr->terms[k].adapter != NULL)) {
            rc = seterr(DISTILL_EFORMAT, "%s: loss %d's adapter does not match", what, k);
            goto out;
        }
        if (has && (rc = get_model(&s, tr->terms[k].adapter, &st[k + 1])))
            goto out;
    }
    /* everything checked: apply.  Optimizer states validate themselves
     * before changing anything; load them first so that a failure leaves
     * the weights untouched. */
    {
        /* keep the current optimizer states, to put back if a later one fails */
        void *saved[MAX_LOSSES + 1] = {0};
        size_t saved_size[MAX_LOSSES + 1] = {0};
        distill_optimizer *opts[MAX_LOSSES + 1];
        int nopt = 0;
        opts[nopt++] = tr->opt;
        for (int k = 0; k < tr->n_terms; k++)
            if (tr->terms[k].adapter)
                opts[nopt++] = tr->terms[k].adapter_opt;
        for (int k = 0; k < nopt && rc == DISTILL_OK; k++) {
            if ((rc = distill_optimizer_state_size(opts[k], &saved_size[k])))
                break;
            if (!(saved[k] = xmalloc(saved_size[k] ? saved_size[k] : 1)))
                rc = DISTILL_ENOMEM;
            else
                rc = distill_optimizer_save_state(opts[k], saved[k], saved_size[k]);
        }
        int loaded = 0;
        for (int k = 0, j = 0; rc == DISTILL_OK && k < nopt; k++) {
            while (k > 0 && !tr->terms[j].adapter)
                j++;
            const staged *sg = k == 0 ? &st[0] : &st[j + 1];
            if (k > 0)
                j++;
            if ((rc = distill_optimizer_load_state(opts[k], sg->opt_state, sg->opt_size)))
                break;
            loaded = k + 1;
        }
        if (rc) {
            int keep = rc;
            for (int k = 0; k < loaded; k++)
                distill_optimizer_load_state(opts[k], saved[k], saved_size[k]);
            rc = keep;
        }
        for (int k = 0; k < nopt; k++)
            xfree(saved[k]);
        if (rc)
            goto out;
    }
    apply_model(tr->student, &st[0]);
    for (int k = 0; k < tr->n_terms; k++)
        if (tr->terms[k].adapter)
            apply_model(tr->terms[k].adapter, &st[k + 1]);
    tr->step = step;
    tr->skipped = skipped;
    tr->data_epoch = de;
    tr->data_pos = dp;
out:
    for (int k = 0; k <= MAX_LOSSES; k++)
        distill_model_free(st[k].model);
    xfree(data);
    return rc;
}

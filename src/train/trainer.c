/*
 * trainer.c - the trainer's setup: options, create and free, the loss
 * terms with their student and teacher taps, and the adapters that map a
 * student tap onto a teacher tap's shape.  The step, fit, evaluation and
 * checkpoints are in trainer_step.c, trainer_fit.c, trainer_eval.c and
 * trainer_checkpoint.c (see trainer_internal.h).
 */
#include <math.h>
#include <string.h>

#include "train/trainer_internal.h"

/* ------------------------------------------------------------- options */

int distill_trainer_options_init(distill_trainer_options *opts, unsigned int version)
{
    if (!opts)
        return seterr(DISTILL_EINVAL, "distill_trainer_options_init: opts is NULL");
    CHECK_VERSION(version, DISTILL_TRAINER_OPTIONS_VERSION, "distill_trainer_options",
                  "distill_trainer_options_init");
    distill_trainer_options o = DISTILL_TRAINER_OPTIONS_INIT;
    *opts = o;
    return DISTILL_OK;
}

int trainer_check_norm(int count, const float *mean, const float *std, const char *what)
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
        COPY_OPTIONS(&o, opts, DISTILL_TRAINER_OPTIONS_VERSION, "distill_trainer_options",
                     "distill_trainer_create");
    }
    if (o.epochs < 1 || o.batch_size < 1 || !(o.lr >= 0) || !(o.momentum >= 0 && o.momentum < 1) ||
        !(o.weight_decay >= 0) || o.crop_padding < 0 || o.warmup_steps < 0 ||
        o.steps_per_epoch < 0 || o.max_steps < 0)
        return seterr(DISTILL_EINVAL, "trainer options: epochs and batch_size must be >= 1, lr and "
                                      "weight_decay >= 0, momentum in [0, 1), counts >= 0");
    int rc = trainer_check_norm(o.norm_count, o.mean, o.std, "trainer options");
    if (rc)
        return rc;
    distill_node_info outn;
    if ((rc = distill_model_find_node(student, distill_model_output_name(student), &outn)))
        return rc;
    if (outn.rank != 1 || outn.dims[0] < 2)
        return seterr(DISTILL_ESHAPE, "student: the output node '%s' must be a vector of at least "
                                      "2 logits",
                      outn.name);
    if (teacher && distill_teacher_classes(teacher) != outn.dims[0])
        return seterr(DISTILL_ESHAPE, "teacher has %d classes, the student %lld",
                      distill_teacher_classes(teacher), (long long)outn.dims[0]);
    if (o.progress_every < 1)
        o.progress_every = 50;
    distill_trainer *tr = xcalloc(1, sizeof *tr);
    if (!tr)
        return DISTILL_ENOMEM;
    tr->student = student;
    tr->teacher = teacher;
    /* the run's seed drives dropout as well as the data */
    model_rng_seed(student, o.seed ^ 0xd20b0u);
    tr->o = o;
    tr->classes = (int)outn.dims[0];
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
        model_state_free(&t->backup);
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
    model_state_free(&tr->backup);
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

int trainer_ensure_default_loss(distill_trainer *tr)
{
    if (tr->n_terms)
        return DISTILL_OK;
    distill_loss *l;
    int rc = tr->teacher ? distill_loss_kd(&l, 4.0f, 0.9f) : distill_loss_cross_entropy(&l, 0.0f);
    return rc ? rc : distill_trainer_add_loss(tr, l, 1.0f);
}

/*
 * student.c - students: a model with its loss terms, the student and
 * teacher taps of those terms, the adapters that map a student tap onto a
 * teacher tap's shape, and, while a trainer holds the student, its
 * optimizer and step buffers.  Also the mutual-learning term that students
 * of one trainer add to their losses.
 */
#include <math.h>
#include <string.h>

#include "train/trainer_internal.h"

/* ------------------------------------------------------------- create */

int distill_student_create(distill_student **out, distill_model *model)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_student_create: out is NULL");
    *out = NULL;
    if (!model)
        return seterr(DISTILL_EINVAL, "distill_student_create: model is NULL");
    distill_node_info outn = DISTILL_NODE_INFO_INIT;
    int rc = distill_model_find_node(model, distill_model_output_name(model), &outn);
    if (rc)
        return rc;
    if (outn.rank != 1 || outn.dims[0] < 2)
        return seterr(DISTILL_ESHAPE, "student: the output node '%s' must be a vector of at least "
                                      "2 logits",
                      outn.name);
    distill_student *s = xcalloc(1, sizeof *s);
    if (!s)
        return DISTILL_ENOMEM;
    s->model = model;
    s->val_accuracy = -1;
    *out = s;
    return DISTILL_OK;
}

void distill_student_free(distill_student *s)
{
    if (!s)
        return;
    student_unbind(s);
    for (int k = 0; k < s->n_terms; k++)
        distill_loss_free(s->terms[k].loss);
    for (int k = 0; k < s->n_staps; k++)
        xfree(s->staps[k].node);
    xfree(s);
}

distill_model *distill_student_model(const distill_student *s)
{
    return s ? s->model : NULL;
}

int trainer_make_optimizer(distill_model *m, const distill_trainer_options *o,
                           distill_optimizer **out)
{
    distill_optimizer_options oo;
    distill_optimizer_options_init(&oo, DISTILL_OPTIMIZER_OPTIONS_VERSION);
    oo.kind = DISTILL_OPTIM_SGD;
    oo.lr = o->lr;
    oo.momentum = o->momentum;
    oo.nesterov = o->nesterov && o->momentum > 0;
    oo.weight_decay = o->weight_decay;
    oo.max_grad_norm = o->max_grad_norm;
    oo.no_decay_bn_bias = o->no_decay_bn_bias;
    return distill_optimizer_create(out, m, &oo);
}

/* ------------------------------------------------------------- taps */

static int tensor_for(distill_tensor **t, int rank, const int64_t dims[3], int64_t n)
{
    int64_t d[4] = {n, dims[0], dims[1], dims[2]};
    return distill_tensor_create(t, rank + 1, d);
}

/* The student's tap on node `name` (shared by the losses that name it). */
static int add_student_tap(distill_student *s, const char *name, int *index)
{
    for (int k = 0; k < s->n_staps; k++)
        if (strcmp(s->staps[k].node, name) == 0) {
            *index = k;
            return DISTILL_OK;
        }
    distill_node_info info = DISTILL_NODE_INFO_INIT;
    if (distill_model_find_node(s->model, name, &info))
        return seterr(DISTILL_ENOTFOUND, "student has no node named '%s' to tap", name);
    stap *t = &s->staps[s->n_staps];
    memset(t, 0, sizeof *t);
    t->rank = info.rank;
    memcpy(t->dims, info.dims, sizeof t->dims);
    if (!(t->node = xstrdup(name)))
        return DISTILL_ENOMEM;
    int rc = distill_model_keep_node(s->model, name);
    if (rc) {
        xfree(t->node);
        return rc;
    }
    *index = s->n_staps++;
    return DISTILL_OK;
}

/* An adapter mapping the student tap onto the teacher tap's shape:
 * conv 1x1 + BatchNorm for feature maps, linear for vectors. */
static int make_adapter(const stap *s, const int64_t tdims[3], uint64_t seed, distill_model **out)
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

/* Free what bind_term made for term k. */
static void unbind_term(term *t)
{
    distill_optimizer_free(t->adapter_opt);
    distill_model_free(t->adapter);
    distill_tensor_free(t->a_feat);
    distill_tensor_free(t->a_grad);
    distill_tensor_free(t->f_grad);
    distill_tensor_free(t->i_grad);
    model_state_free(&t->backup);
    t->adapter_opt = NULL;
    t->adapter = NULL;
    t->a_feat = t->a_grad = t->f_grad = t->i_grad = NULL;
    t->ttap = -1;
}

/* The teacher side of term k, once a trainer holds the student: the
 * teacher tap, and an adapter when the shapes differ. */
static int bind_term(distill_trainer *tr, distill_student *s, int k)
{
    term *t = &s->terms[k];
    distill_loss *loss = t->loss;
    const char *name = distill_loss_name(loss);
    if (distill_loss_needs_teacher(loss) && !tr->teacher)
        return seterr(DISTILL_EINVAL, "loss '%s' needs a teacher and the trainer has none", name);
    if (t->stap < 0)
        return DISTILL_OK;
    const char *sn = distill_loss_student_node(loss), *tn = distill_loss_teacher_node(loss);
    if (!tr->teacher)
        return seterr(DISTILL_EINVAL, "loss '%s' taps a teacher node and the trainer has no "
                                      "teacher",
                      name);
    int trank, rc;
    int64_t tdims[3];
    if ((rc = teacher_add_tap(tr->teacher, tn, &trank, tdims, &t->ttap)))
        return rc;
    stap *st = &s->staps[t->stap];
    int needs_same = strcmp(name, "at") != 0 && strcmp(name, "sp") != 0 &&
                     strcmp(name, "rkd") != 0 && strcmp(name, "pkt") != 0;
    if (strcmp(name, "at") == 0 && !(st->rank == 3 && trank == 3 && st->dims[1] == tdims[1] &&
                                     st->dims[2] == tdims[2]))
        return seterr(DISTILL_ESHAPE, "loss 'at': student '%s' and teacher '%s' must be feature "
                                      "maps of the same height and width",
                      sn, tn);
    int64_t n = tr->o.batch_size;
    if (needs_same && !same_shape(st->rank, st->dims, trank, tdims)) {
        if (st->rank != trank ||
            (st->rank == 3 && (st->dims[1] != tdims[1] || st->dims[2] != tdims[2])))
            return seterr(DISTILL_ESHAPE, "loss '%s': student '%s' and teacher '%s' differ in "
                                          "rank or spatial size; an adapter only maps channels "
                                          "(tap nodes of the same height and width)",
                          name, sn, tn);
        /* the adapter's seed depends on its place among the student's terms,
         * as it did when the trainer held the terms itself */
        if ((rc = make_adapter(st, tdims, tr->o.seed + 7919u * (uint64_t)k, &t->adapter)) ||
            (rc = trainer_make_optimizer(t->adapter, &tr->o, &t->adapter_opt)) ||
            (rc = tensor_for(&t->a_feat, trank, tdims, n)) ||
            (rc = tensor_for(&t->a_grad, trank, tdims, n)) ||
            (rc = tensor_for(&t->i_grad, st->rank, st->dims, n)))
            return rc;
        return DISTILL_OK;
    }
    return tensor_for(&t->f_grad, st->rank, st->dims, n);
}

/* ------------------------------------------------------------- losses */

/* The student side of a new term: checks, and its student tap. */
static int add_term(distill_student *s, distill_loss *loss, float weight)
{
    if (s->n_terms == MAX_LOSSES)
        return seterr(DISTILL_EINVAL, "student: more than %d losses", MAX_LOSSES);
    if (!isfinite(weight) || weight < 0)
        return seterr(DISTILL_EINVAL, "loss '%s': weight %g must be finite and >= 0",
                      distill_loss_name(loss), (double)weight);
    term *t = &s->terms[s->n_terms];
    memset(t, 0, sizeof *t);
    t->loss = loss;
    t->weight = weight;
    t->stap = t->ttap = -1;
    const char *sn = distill_loss_student_node(loss), *tn = distill_loss_teacher_node(loss);
    if (sn || tn) {
        if (!sn || !tn)
            return seterr(DISTILL_EINVAL, "loss '%s' names a %s tap but no %s tap",
                          distill_loss_name(loss), sn ? "student" : "teacher",
                          sn ? "teacher" : "student");
        int rc = add_student_tap(s, sn, &t->stap);
        if (rc)
            return rc;
    }
    return DISTILL_OK;
}

/* A tap added for a refused term goes again (it is the last one, and no
 * other term uses it). */
static void drop_new_tap(distill_student *s, int n_staps_before)
{
    while (s->n_staps > n_staps_before) {
        stap *t = &s->staps[--s->n_staps];
        xfree(t->node);
        distill_tensor_free(t->value);
        distill_tensor_free(t->grad);
        memset(t, 0, sizeof *t);
    }
}

static int bind_tap(distill_student *s, int k, int64_t n)
{
    stap *t = &s->staps[k];
    int rc;
    if (t->value)
        return DISTILL_OK;
    if ((rc = tensor_for(&t->value, t->rank, t->dims, n)) ||
        (rc = tensor_for(&t->grad, t->rank, t->dims, n))) {
        distill_tensor_free(t->value);
        distill_tensor_free(t->grad);
        t->value = t->grad = NULL;
    }
    return rc;
}

int distill_student_add_loss(distill_student *s, distill_loss *loss, float weight)
{
    if (!s || !loss) {
        distill_loss_free(loss);
        return seterr(DISTILL_EINVAL, "distill_student_add_loss: NULL argument");
    }
    int nst = s->n_staps;
    int rc = add_term(s, loss, weight);
    distill_trainer *tr = s->trainer;
    if (rc == DISTILL_OK && tr) {
        term *t = &s->terms[s->n_terms];
        if ((t->stap >= 0 && (rc = bind_tap(s, t->stap, tr->o.batch_size))) ||
            (rc = bind_term(tr, s, s->n_terms)))
            unbind_term(t);
    }
    if (rc) {
        drop_new_tap(s, nst);
        memset(&s->terms[s->n_terms], 0, sizeof s->terms[0]);
        distill_loss_free(loss);
        return rc;
    }
    s->term_names[s->n_terms] = distill_loss_name(loss);
    s->n_terms++;
    return DISTILL_OK;
}

int student_ensure_default_loss(distill_student *s, const distill_teacher *teacher)
{
    if (s->n_terms)
        return DISTILL_OK;
    distill_loss *l;
    int rc = teacher ? distill_loss_kd(&l, 4.0f, 0.9f) : distill_loss_cross_entropy(&l, 0.0f);
    return rc ? rc : distill_student_add_loss(s, l, 1.0f);
}

/* ------------------------------------------------------------- binding */

void student_unbind(distill_student *s)
{
    for (int k = 0; k < s->n_terms; k++)
        unbind_term(&s->terms[k]);
    for (int k = 0; k < s->n_staps; k++) {
        distill_tensor_free(s->staps[k].value);
        distill_tensor_free(s->staps[k].grad);
        s->staps[k].value = s->staps[k].grad = NULL;
    }
    distill_optimizer_free(s->opt);
    distill_tensor_free(s->s_logits);
    distill_tensor_free(s->g_logits);
    distill_tensor_free(s->g_tmp);
    model_state_free(&s->backup);
    s->opt = NULL;
    s->s_logits = s->g_logits = s->g_tmp = NULL;
    s->trainer = NULL;
}

int student_bind(distill_trainer *tr, distill_student *s)
{
    int64_t d[2] = {tr->o.batch_size, tr->classes};
    int rc;
    s->trainer = tr;
    s->val_accuracy = -1;
    if ((rc = trainer_make_optimizer(s->model, &tr->o, &s->opt)) ||
        (rc = distill_tensor_create(&s->s_logits, 2, d)) ||
        (rc = distill_tensor_create(&s->g_logits, 2, d)) ||
        (rc = distill_tensor_create(&s->g_tmp, 2, d)))
        goto fail;
    for (int k = 0; k < s->n_staps; k++)
        if ((rc = bind_tap(s, k, tr->o.batch_size)))
            goto fail;
    for (int k = 0; k < s->n_terms; k++)
        if ((rc = bind_term(tr, s, k)))
            goto fail;
    return DISTILL_OK;
fail:
    student_unbind(s);
    return rc;
}

/* ------------------------------------------------------------- mutual */

int distill_mutual_options_init(distill_mutual_options *opts, unsigned int version)
{
    static const distill_mutual_options init = DISTILL_MUTUAL_OPTIONS_INIT;
    INIT_STRUCT(opts, version, DISTILL_MUTUAL_OPTIONS_VERSION, init, "distill_mutual_options",
                "distill_mutual_options_init");
}

/* p = softmax(x / T) of one row (C), in double; returns log-sum-exp's
 * pieces through lp = log p. */
static void log_softmax_T(const float *x, int C, double T, double *lp)
{
    double mx = -INFINITY;
    for (int c = 0; c < C; c++)
        if ((double)x[c] / T > mx)
            mx = (double)x[c] / T;
    double sum = 0;
    for (int c = 0; c < C; c++)
        sum += exp((double)x[c] / T - mx);
    double lse = mx + log(sum);
    for (int c = 0; c < C; c++)
        lp[c] = (double)x[c] / T - lse;
}

int mutual_loss(int S, int k, int64_t n, int C, const float *const *logits, double T,
                double scale, double *loss, float *grad)
{
    double *lk = xmalloc((size_t)C * 3 * sizeof *lk);
    if (!lk)
        return seterr(DISTILL_ENOMEM, "mutual loss: out of memory");
    double *lj = lk + C, *pbar = lk + 2 * C; /* (C) log p_j; the mean of the p_j */
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        log_softmax_T(logits[k] + i * C, C, T, lk);
        for (int c = 0; c < C; c++)
            pbar[c] = 0;
        double kl = 0;
        for (int j = 0; j < S; j++) {
            if (j == k)
                continue;
            log_softmax_T(logits[j] + i * C, C, T, lj);
            /* KL(p_j || p_k) = sum_c p_j (log p_j - log p_k) */
            for (int c = 0; c < C; c++) {
                double pj = exp(lj[c]);
                kl += pj * (lj[c] - lk[c]);
                pbar[c] += pj;
            }
        }
        total += kl / (S - 1);
        /* d(T^2/n * 1/(S-1) sum_j KL(p_j || p_k))/dz_k = T/n * (p_k - mean_j p_j) */
        if (grad)
            for (int c = 0; c < C; c++)
                grad[i * C + c] +=
                    (float)(scale * T / (double)n * (exp(lk[c]) - pbar[c] / (S - 1)));
    }
    xfree(lk);
    *loss = T * T * total / (double)n;
    return DISTILL_OK;
}

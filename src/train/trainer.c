/*
 * trainer.c - the trainer's setup: options, create and free for one or
 * several students, and the single-student calls, which hold a student of
 * their own.  Students and their losses are in student.c; the step, fit,
 * evaluation and checkpoints in trainer_step.c, trainer_fit.c,
 * trainer_eval.c and trainer_checkpoint.c (see trainer_internal.h).
 */
#include <math.h>
#include <string.h>

#include "train/trainer_internal.h"

/* ------------------------------------------------------------- options */

int distill_trainer_options_init(distill_trainer_options *opts, unsigned int version)
{
    static const distill_trainer_options init = DISTILL_TRAINER_OPTIONS_INIT;
    INIT_STRUCT(opts, version, DISTILL_TRAINER_OPTIONS_VERSION, init, "distill_trainer_options",
                "distill_trainer_options_init");
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

/* ------------------------------------------------------------- create */

static int check_options(const distill_trainer_options *o)
{
    if (o->epochs < 1 || o->batch_size < 1 || !(o->lr >= 0) ||
        !(o->momentum >= 0 && o->momentum < 1) || !(o->weight_decay >= 0) ||
        o->crop_padding < 0 || o->warmup_steps < 0 || o->steps_per_epoch < 0 ||
        o->max_steps < 0 || !(o->max_grad_norm >= 0 && isfinite(o->max_grad_norm)))
        return seterr(DISTILL_EINVAL, "trainer options: epochs and batch_size must be >= 1, lr, "
                                      "weight_decay and max_grad_norm >= 0, momentum in [0, 1), "
                                      "counts >= 0");
    return trainer_check_norm(o->norm_count, o->mean, o->std, "trainer options");
}

static int model_classes(const distill_model *m, int *classes)
{
    distill_node_info outn = DISTILL_NODE_INFO_INIT;
    int rc = distill_model_find_node(m, distill_model_output_name(m), &outn);
    if (rc)
        return rc;
    *classes = (int)outn.dims[0];
    return DISTILL_OK;
}

/* Students of one trainer read the same batches and learn the same classes. */
static int check_students(int n, distill_student *const *students, const distill_teacher *teacher,
                          int *classes)
{
    if (n < 1 || n > MAX_STUDENTS)
        return seterr(DISTILL_EINVAL, "trainer: %d students; a trainer takes 1 to %d", n,
                      MAX_STUDENTS);
    if (!students)
        return seterr(DISTILL_EINVAL, "distill_trainer_create_students: students is NULL");
    distill_node_info in0 = DISTILL_NODE_INFO_INIT;
    int rc;
    for (int k = 0; k < n; k++) {
        const distill_student *s = students[k];
        if (!s)
            return seterr(DISTILL_EINVAL, "trainer: student %d is NULL", k + 1);
        if (s->trainer)
            return seterr(DISTILL_EINVAL, "trainer: student %d is held by another trainer", k + 1);
        for (int j = 0; j < k; j++)
            if (students[j] == s || students[j]->model == s->model)
                return seterr(DISTILL_EINVAL, "trainer: students %d and %d are the same %s", j + 1,
                              k + 1, students[j] == s ? "student" : "model");
        int c;
        distill_node_info in = DISTILL_NODE_INFO_INIT;
        if ((rc = model_classes(s->model, &c)) || (rc = distill_model_node(s->model, 0, &in)))
            return rc;
        if (k == 0) {
            *classes = c;
            in0 = in;
            continue;
        }
        if (c != *classes)
            return seterr(DISTILL_ESHAPE, "student %d has %d classes, student 1 has %d", k + 1, c,
                          *classes);
        int same = in.rank == in0.rank;
        for (int d = 0; same && d < in.rank; d++)
            same = in.dims[d] == in0.dims[d];
        if (!same)
            return seterr(DISTILL_ESHAPE, "student %d's input '%s' differs in shape from student "
                                          "1's '%s'",
                          k + 1, in.name, in0.name);
    }
    if (teacher && distill_teacher_classes(teacher) != *classes)
        return seterr(DISTILL_ESHAPE, "teacher has %d classes, the student %d",
                      distill_teacher_classes(teacher), *classes);
    return DISTILL_OK;
}

int distill_trainer_create_students(distill_trainer **out, int n, distill_student *const *students,
                                    distill_teacher *teacher, const distill_trainer_options *opts,
                                    const distill_mutual_options *mutual)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_trainer_create_students: out is NULL");
    *out = NULL;
    distill_trainer_options o = DISTILL_TRAINER_OPTIONS_INIT;
    if (opts) {
        COPY_OPTIONS(&o, opts, DISTILL_TRAINER_OPTIONS_VERSION, "distill_trainer_options",
                     "distill_trainer_create");
    }
    distill_mutual_options mo = DISTILL_MUTUAL_OPTIONS_INIT;
    if (mutual) {
        COPY_OPTIONS(&mo, mutual, DISTILL_MUTUAL_OPTIONS_VERSION, "distill_mutual_options",
                     "distill_trainer_create_students");
    }
    if (!(mo.weight >= 0) || !isfinite(mo.weight) || !(mo.temperature > 0) ||
        !isfinite(mo.temperature))
        return seterr(DISTILL_EINVAL, "mutual options: weight must be finite and >= 0, "
                                      "temperature finite and > 0");
    int rc = check_options(&o), classes = 0;
    if (rc || (rc = check_students(n, students, teacher, &classes)))
        return rc;
    if (o.progress_every < 1)
        o.progress_every = 50;
    distill_trainer *tr = xcalloc(1, sizeof *tr);
    if (!tr)
        return DISTILL_ENOMEM;
    tr->teacher = teacher;
    tr->o = o;
    tr->mutual = mo;
    tr->classes = classes;
    int64_t d[2] = {o.batch_size, classes};
    if ((rc = distill_tensor_create(&tr->t_logits, 2, d))) {
        xfree(tr);
        return rc;
    }
    for (int k = 0; k < n; k++) {
        if ((rc = student_bind(tr, students[k]))) {
            distill_trainer_free(tr);
            return rc;
        }
        tr->students[tr->n_students++] = students[k];
    }
    tr->student = students[0]->model;
    /* the run's seed drives dropout as well as the data; each further
     * student draws its own masks */
    for (int k = 0; k < n; k++)
        model_rng_seed(students[k]->model, (o.seed ^ 0xd20b0u) + 0x9e3779b97f4a7c15u * (uint64_t)k);
    *out = tr;
    return DISTILL_OK;
}

int distill_trainer_create(distill_trainer **out, distill_model *student, distill_teacher *teacher,
                           const distill_trainer_options *opts)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_trainer_create: out is NULL");
    *out = NULL;
    if (!student)
        return seterr(DISTILL_EINVAL, "distill_trainer_create: student is NULL");
    distill_student *s;
    int rc = distill_student_create(&s, student);
    if (rc)
        return rc;
    if ((rc = distill_trainer_create_students(out, 1, &s, teacher, opts, NULL))) {
        distill_student_free(s);
        return rc;
    }
    s->owned = 1;
    return DISTILL_OK;
}

void distill_trainer_free(distill_trainer *tr)
{
    if (!tr)
        return;
    for (int k = 0; k < tr->n_students; k++) {
        distill_student *s = tr->students[k];
        student_unbind(s);
        if (s->owned)
            distill_student_free(s);
    }
    distill_tensor_free(tr->t_logits);
    xfree(tr);
}

int distill_trainer_num_students(const distill_trainer *tr)
{
    return tr ? tr->n_students : 0;
}

distill_student *distill_trainer_student(const distill_trainer *tr, int k)
{
    if (!tr || k < 0 || k >= tr->n_students) {
        seterr(DISTILL_EINVAL, "distill_trainer_student: no student %d", k);
        return NULL;
    }
    return tr->students[k];
}

int distill_trainer_set_optimizer(distill_trainer *tr, const distill_optimizer_options *opts)
{
    if (!tr || !opts)
        return seterr(DISTILL_EINVAL, "distill_trainer_set_optimizer: NULL argument");
    distill_optimizer *o[MAX_STUDENTS];
    int rc = DISTILL_OK, made = 0;
    for (; made < tr->n_students && rc == DISTILL_OK; made++)
        rc = distill_optimizer_create(&o[made], tr->students[made]->model, opts);
    if (rc) {
        for (int k = 0; k < made - 1; k++)
            distill_optimizer_free(o[k]);
        return rc;
    }
    for (int k = 0; k < tr->n_students; k++) {
        distill_optimizer_free(tr->students[k]->opt);
        tr->students[k]->opt = o[k];
    }
    tr->o.lr = distill_optimizer_lr(o[0]);
    return DISTILL_OK;
}

/* ------------------------------------------------------------- losses */

int distill_trainer_add_loss(distill_trainer *tr, distill_loss *loss, float weight)
{
    if (!tr || !loss) {
        distill_loss_free(loss);
        return seterr(DISTILL_EINVAL, "distill_trainer_add_loss: NULL argument");
    }
    if (tr->n_students != 1) {
        distill_loss_free(loss);
        return seterr(DISTILL_EINVAL, "distill_trainer_add_loss: the trainer has %d students; add "
                                      "losses to each with distill_student_add_loss",
                      tr->n_students);
    }
    return distill_student_add_loss(tr->students[0], loss, weight);
}

int trainer_ensure_default_loss(distill_trainer *tr)
{
    for (int k = 0; k < tr->n_students; k++) {
        int rc = student_ensure_default_loss(tr->students[k], tr->teacher);
        if (rc)
            return rc;
    }
    return DISTILL_OK;
}

const char *trainer_loss_needing_labels(const distill_trainer *tr)
{
    for (int k = 0; k < tr->n_students; k++) {
        const distill_student *s = tr->students[k];
        for (int j = 0; j < s->n_terms; j++)
            if (distill_loss_needs_labels(s->terms[j].loss))
                return s->term_names[j];
    }
    return NULL;
}

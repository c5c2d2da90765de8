/*
 * trainer_checkpoint.c - exact checkpoints: the step count, the data
 * position, every student's and adapter's weights, BatchNorm statistics,
 * generators and optimizer states, written atomically and loaded only
 * once the whole file has been checked.
 */
#include <string.h>

#include "train/trainer_internal.h"

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
    int rc = model_snapshot(m, &buf, &sz);
    if (rc)
        return rc;
    cw_u64(w, sz);
    cw_bytes(w, buf, sz);
    uint64_t s[4];
    model_rng_get(m, s);
    for (int k = 0; k < 4; k++)
        cw_u64(w, s[k]);
    xfree(buf);
    return DISTILL_OK;
}

/* The loss terms a checkpoint records: a student given no loss gets one
 * default term (without an adapter) at its first fit or step, so it counts
 * as one before that too, and a checkpoint written after training loads
 * into a freshly created trainer. */
static int effective_terms(const distill_student *s)
{
    return s->n_terms ? s->n_terms : 1;
}

/* A student's adapters: one byte per term (has an adapter), then the
 * adapter and its optimizer. */
static int put_adapters(cwriter *w, const distill_student *s)
{
    for (int k = 0; k < effective_terms(s); k++) {
        int has = k < s->n_terms && s->terms[k].adapter != NULL;
        cw_u8(w, (uint8_t)has);
        int rc;
        if (has && ((rc = put_model(w, s->terms[k].adapter)) ||
                    (rc = put_optimizer(w, s->terms[k].adapter_opt))))
            return rc;
    }
    return DISTILL_OK;
}

/*
 * The layout: TRNR (step, data position, seed, the first student's term
 * count), MODL (the first student's model and optimizer), ADPT (its
 * adapters) -- a single student's checkpoint is what it was before
 * trainers took several -- and, with more students, STDS: their count
 * after the first, then for each its term count, model and optimizer, and
 * adapters.
 */
int distill_trainer_save_checkpoint(const distill_trainer *tr, const char *path)
{
    if (!tr || !path)
        return seterr(DISTILL_EINVAL, "distill_trainer_save_checkpoint: NULL argument");
    const distill_student *s0 = tr->students[0];
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
    cw_u32(&w, (uint32_t)effective_terms(s0));
    cw_end_section(&w);
    cw_section(&w, "MODL");
    if ((rc = put_model(&w, s0->model)) || (rc = put_optimizer(&w, s0->opt)))
        goto fail;
    cw_end_section(&w);
    cw_section(&w, "ADPT");
    if ((rc = put_adapters(&w, s0)))
        goto fail;
    cw_end_section(&w);
    if (tr->n_students > 1) {
        cw_section(&w, "STDS");
        cw_u32(&w, (uint32_t)(tr->n_students - 1));
        for (int i = 1; i < tr->n_students; i++) {
            const distill_student *s = tr->students[i];
            cw_u32(&w, (uint32_t)effective_terms(s));
            if ((rc = put_model(&w, s->model)) || (rc = put_optimizer(&w, s->opt)) ||
                (rc = put_adapters(&w, s)))
                goto fail;
        }
        cw_end_section(&w);
    }
    void *data;
    size_t size;
    if ((rc = cw_finish(&w, &data, &size)))
        return rc;
    rc = write_file_atomic(path, data, size);
    xfree(data);
    return rc;
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
    int rc = model_from_snapshot(&st->model, s->p + s->pos, (size_t)sz);
    if (rc == DISTILL_ENOMEM) /* out of memory is not the file's fault */
        return rc;
    if (rc)
        return cs_fail(s, DISTILL_EFORMAT, "%s", distill_last_error());
    s->pos += (size_t)sz;
    for (int k = 0; k < 4; k++)
        st->rng[k] = cs_u64(s);
    if (model_param_floats(st->model) != model_param_floats(like) ||
        model_stat_floats(st->model) != model_stat_floats(like) ||
        model_param_tensors(st->model) != model_param_tensors(like))
        return cs_fail(s, DISTILL_EFORMAT, "the checkpoint is of another architecture (%zu "
                                           "parameters, this model has %zu)",
                       model_param_floats(st->model), model_param_floats(like));
    for (int k = 0; k < model_param_tensors(like); k++)
        if (strcmp(model_param_tensor_name(st->model, k), model_param_tensor_name(like, k)) != 0)
            return cs_fail(s, DISTILL_EFORMAT, "parameter %d is '%s', this model's is '%s'", k,
                           model_param_tensor_name(st->model, k), model_param_tensor_name(like, k));
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
    model_copy_values(m, st->model);
    model_rng_set(m, st->rng);
}

/* One student's staged state: [0] its model, [k + 1] term k's adapter. */
typedef struct staged_student {
    staged st[MAX_LOSSES + 1];
} staged_student;

static int get_adapters(csection *s, const distill_student *stu, int index, staged_student *ss,
                        const char *what)
{
    for (int k = 0; k < effective_terms(stu); k++) {
        int has = cs_u8(s), rc;
        if ((rc = s->status))
            return rc;
        if (has != (k < stu->n_terms && stu->terms[k].adapter != NULL))
            return seterr(DISTILL_EFORMAT, "%s: loss %d's adapter%s does not match", what, k,
                          index ? " of a further student" : "");
        if (has && (rc = get_model(s, stu->terms[k].adapter, &ss->st[k + 1])))
            return rc;
    }
    return DISTILL_OK;
}

/* Load every staged optimizer state, or none: a failure puts back the
 * states already replaced. */
static int load_optimizers(distill_trainer *tr, const staged_student *ss)
{
    enum { MAX_OPTS = MAX_STUDENTS * (MAX_LOSSES + 1) };
    distill_optimizer **opts = xcalloc(MAX_OPTS, sizeof *opts);
    const staged **from = xcalloc(MAX_OPTS, sizeof *from);
    void **saved = xcalloc(MAX_OPTS, sizeof *saved);
    size_t *saved_size = xcalloc(MAX_OPTS, sizeof *saved_size);
    int rc = DISTILL_OK, nopt = 0, loaded = 0;
    if (!opts || !from || !saved || !saved_size) {
        rc = DISTILL_ENOMEM;
        goto out;
    }
    for (int i = 0; i < tr->n_students; i++) {
        const distill_student *s = tr->students[i];
        opts[nopt] = s->opt;
        from[nopt++] = &ss[i].st[0];
        for (int k = 0; k < s->n_terms; k++)
            if (s->terms[k].adapter) {
                opts[nopt] = s->terms[k].adapter_opt;
                from[nopt++] = &ss[i].st[k + 1];
            }
    }
    /* keep the current optimizer states, to put back if a later one fails */
    for (int k = 0; k < nopt && rc == DISTILL_OK; k++) {
        if ((rc = distill_optimizer_state_size(opts[k], &saved_size[k])))
            break;
        if (!(saved[k] = xmalloc(saved_size[k] ? saved_size[k] : 1)))
            rc = DISTILL_ENOMEM;
        else
            rc = distill_optimizer_save_state(opts[k], saved[k], saved_size[k]);
    }
    for (int k = 0; rc == DISTILL_OK && k < nopt; k++) {
        if ((rc = distill_optimizer_load_state(opts[k], from[k]->opt_state, from[k]->opt_size)))
            break;
        loaded = k + 1;
    }
    if (rc) {
        int keep = rc;
        for (int k = 0; k < loaded; k++)
            distill_optimizer_load_state(opts[k], saved[k], saved_size[k]);
        rc = keep;
    }
out:
    for (int k = 0; saved && k < nopt; k++)
        xfree(saved[k]);
    xfree(opts);
    xfree(from);
    xfree(saved);
    xfree(saved_size);
    return rc;
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
    staged_student *ss = xcalloc(MAX_STUDENTS, sizeof *ss);
    csection s;
    int64_t step = 0, skipped = 0;
    uint64_t de = 0, dp = 0;
    if (!ss) {
        rc = DISTILL_ENOMEM;
        goto out;
    }
    if ((rc = cr_open(&r, data, size, CKPT_MAGIC, CKPT_VERSION, what)))
        goto out;
    static const char *const known[] = {"TRNR", "MODL", "ADPT", "STDS", NULL};
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
    const distill_student *s0 = tr->students[0];
    if (nt != (uint32_t)effective_terms(s0) || step < 0) {
        rc = seterr(DISTILL_EFORMAT, "%s: written with %u losses, this trainer has %d", what, nt,
                    effective_terms(s0));
        goto out;
    }
    if (!cr_find(&r, "MODL", &s) || !cr_find(&r, "ADPT", &s)) {
        rc = seterr(DISTILL_EFORMAT, "%s: a section is missing", what);
        goto out;
    }
    cr_find(&r, "MODL", &s);
    if ((rc = get_model(&s, s0->model, &ss[0].st[0])))
        goto out;
    cr_find(&r, "ADPT", &s);
    if ((rc = get_adapters(&s, s0, 0, &ss[0], what)))
        goto out;
    {
        uint32_t more = 0;
        if (cr_find(&r, "STDS", &s)) {
            more = cs_u32(&s);
            if ((rc = s.status))
                goto out;
        }
        if (more != (uint32_t)(tr->n_students - 1)) {
            rc = seterr(DISTILL_EFORMAT, "%s: written for %llu student%s, this trainer has %d",
                        what, (unsigned long long)more + 1, more ? "s" : "", tr->n_students);
            goto out;
        }
        for (int i = 1; i < tr->n_students; i++) {
            const distill_student *st = tr->students[i];
            uint32_t nti = cs_u32(&s);
            if ((rc = s.status))
                goto out;
            if (nti != (uint32_t)effective_terms(st)) {
                rc = seterr(DISTILL_EFORMAT, "%s: student %d was written with %u losses, this "
                                             "trainer's has %d",
                            what, i + 1, nti, effective_terms(st));
                goto out;
            }
            if ((rc = get_model(&s, st->model, &ss[i].st[0])) ||
                (rc = get_adapters(&s, st, i, &ss[i], what)))
                goto out;
        }
    }
    /* everything checked: apply.  Optimizer states validate themselves
     * before changing anything; load them first so that a failure leaves
     * the weights untouched. */
    if ((rc = load_optimizers(tr, ss)))
        goto out;
    for (int i = 0; i < tr->n_students; i++) {
        distill_student *st = tr->students[i];
        apply_model(st->model, &ss[i].st[0]);
        for (int k = 0; k < st->n_terms; k++)
            if (st->terms[k].adapter)
                apply_model(st->terms[k].adapter, &ss[i].st[k + 1]);
    }
    tr->step = step;
    tr->skipped = skipped;
    tr->data_epoch = de;
    tr->data_pos = dp;
out:
    for (int i = 0; ss && i < MAX_STUDENTS; i++)
        for (int k = 0; k <= MAX_LOSSES; k++)
            distill_model_free(ss[i].st[k].model);
    xfree(ss);
    xfree(data);
    return rc;
}

/*
 * trainer_checkpoint.c - exact checkpoints: the step count, the data
 * position, the student's and adapters' weights, BatchNorm statistics,
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

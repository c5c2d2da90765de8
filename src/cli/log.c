/*
 * log.c - the training log of --log FILE: JSON lines, one object a line.
 *
 *   {"event": "start", "command": "distill", "version": "...", "model": ..., ...}
 *   {"event": "step", "epoch": 1, "epochs": 3, "step": 50, "total_steps": 1407,
 *    "loss": 1.23, "terms": {"kd": 0.9, "ce": 2.1}, "lr": 0.0998,
 *    "images_per_sec": 812, "elapsed_s": 8.1}
 *   {"event": "epoch", "epoch": 1, ..., "val_accuracy": 0.83, "skipped_steps": 0}
 *   {"event": "end", "status": "ok" | "interrupted" | "error", "steps": 4221}
 *
 * A "step" line every --log-every steps (the rate is over those steps), an
 * "epoch" line after each epoch (val_accuracy null without validation
 * data).  Every line is flushed when written, so a run that is killed keeps
 * every line written before; a resumed run (--resume) appends to the file.
 * A command wires the log with cli_log_open() before the fit, sets
 * cli_progress.log, and calls cli_log_close() with its status.
 *
 * Lines are written with the program's JSON writer (json.c) and nothing
 * else, so another writer replaces it here alone.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A write error is reported once; training goes on without the log. */
static void check_write(cli_log *l)
{
    if (!l->f || l->failed)
        return;
    if (ferror(l->f) || fflush(l->f) != 0) {
        l->failed = 1;
        cli_fail(CLI_ERUNTIME, "--log %s: write failed (%s); training goes on without the log",
                 l->path, strerror(errno));
    }
}

static void put_start(cli_log *l, const cli_command *cmd, const cli_options *o,
                      const char *model, const distill_trainer_options *t)
{
    cli_json j;
    cli_json_open(&j, l->f);
    cli_json_str(&j, "event", "start");
    cli_json_str(&j, "command", cmd->name);
    cli_json_str(&j, "version", distill_version());
    cli_json_str(&j, "model", model);
    cli_json_begin_arr(&j, "teachers");
    for (int i = 0; i < o->n_teachers; i++)
        cli_json_elem_str(&j, o->teachers[i]);
    cli_json_end_arr(&j);
    cli_json_str(&j, "teacher_cache", o->teacher_cache);
    cli_json_begin_arr(&j, "losses");
    for (int i = 0; i < o->n_losses; i++)
        cli_json_elem_str(&j, o->losses[i]);
    cli_json_end_arr(&j);
    cli_json_str(&j, "data", o->data);
    cli_json_int(&j, "epochs", t->epochs);
    cli_json_int(&j, "batch", t->batch_size);
    cli_json_num(&j, "lr", t->lr);
    cli_json_int(&j, "seed", (int64_t)t->seed);
    cli_json_str(&j, "resume", o->resume);
    cli_json_str(&j, "output", o->out);
    cli_json_int(&j, "log_every", l->every);
    cli_json_close(&j);
    check_write(l);
}

int cli_log_open(cli_log *l, const cli_command *cmd, const cli_options *o, const char *model,
                 const distill_trainer_options *t)
{
    memset(l, 0, sizeof *l);
    if (o->n_logs == 0)
        return CLI_OK;
    l->path = o->logs[0];
    l->every = o->log_every > 0 ? o->log_every : CLI_LOG_EVERY_DEFAULT;
    /* a resumed run continues the log of the run it resumes */
    l->f = fopen(o->logs[0], o->resume ? "a" : "w");
    if (!l->f)
        return cli_fail(CLI_ERUNTIME, "--log %s: cannot open for writing (%s)", o->logs[0],
                        strerror(errno));
    l->t0 = now_s();
    put_start(l, cmd, o, model, t);
    return CLI_OK;
}

static int log_enabled(const cli_log *l)
{
    return l && l->f && !l->failed;
}

/* "terms": {"kd": 0.9, "ce": 2.1}; a repeated name gets "#2", "#3". */
static void put_terms(cli_json *j, const distill_progress *p)
{
    cli_json_begin_obj(j, "terms");
    for (int k = 0; k < p->n_terms; k++) {
        const char *name = p->term_names && p->term_names[k] ? p->term_names[k] : "loss";
        int same = 0;
        for (int i = 0; i < k; i++)
            if (p->term_names && p->term_names[i] && strcmp(p->term_names[i], name) == 0)
                same++;
        char key[96];
        if (same)
            snprintf(key, sizeof key, "%s#%d", name, same + 1);
        else
            snprintf(key, sizeof key, "%s", name);
        cli_json_num(j, key, p->term_values ? p->term_values[k] : NAN);
    }
    cli_json_end_obj(j);
}

void cli_log_progress(cli_log *l, const distill_progress *p)
{
    if (!log_enabled(l))
        return;
    if (!p->end_of_epoch) {
        if (p->images_per_sec > 0) {
            l->inv_rate_sum += 1.0 / p->images_per_sec;
            l->rate_steps++;
        }
        if (p->step % l->every != 0)
            return;
    }
    cli_json j;
    cli_json_open(&j, l->f);
    cli_json_str(&j, "event", p->end_of_epoch ? "epoch" : "step");
    cli_json_int(&j, "epoch", p->epoch);
    cli_json_int(&j, "epochs", p->epochs);
    cli_json_int(&j, "step", p->step);
    cli_json_int(&j, "total_steps", p->total_steps);
    cli_json_num(&j, "loss", p->loss);
    put_terms(&j, p);
    cli_json_num(&j, "lr", p->lr);
    if (p->end_of_epoch) {
        /* the library's rate over the epoch's steps */
        cli_json_num(&j, "images_per_sec", p->images_per_sec > 0 ? p->images_per_sec : NAN);
        cli_json_num(&j, "val_accuracy", p->val_accuracy >= 0 ? p->val_accuracy : NAN);
        cli_json_int(&j, "skipped_steps", p->skipped_steps);
    } else {
        cli_json_num(&j, "images_per_sec",
                     l->inv_rate_sum > 0 ? l->rate_steps / l->inv_rate_sum : NAN);
        l->inv_rate_sum = 0;
        l->rate_steps = 0;
    }
    cli_json_num(&j, "elapsed_s", now_s() - l->t0);
    cli_json_close(&j);
    check_write(l);
}

void cli_log_close(cli_log *l, int status, int64_t steps)
{
    if (log_enabled(l)) {
        cli_json j;
        cli_json_open(&j, l->f);
        cli_json_str(&j, "event", "end");
        cli_json_str(&j, "status", status == CLI_OK ? "ok"
                                   : status == CLI_EINTERRUPTED ? "interrupted"
                                                                : "error");
        cli_json_int(&j, "steps", steps);
        cli_json_num(&j, "elapsed_s", now_s() - l->t0);
        cli_json_close(&j);
        check_write(l);
    }
    if (l->f && fclose(l->f) != 0 && !l->failed)
        cli_fail(CLI_ERUNTIME, "--log %s: write failed (%s)", l->path, strerror(errno));
    l->f = NULL;
}

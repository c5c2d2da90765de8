/*
 * progress.c - training progress on stderr, and Ctrl-C.
 *
 * On a terminal, one line is redrawn in place (\r) with a bar; otherwise
 * (a log file, a pipe, CI) every progress call prints one plain line.  End
 * of epoch lines (with the validation accuracy) are printed in both modes.
 *
 * The first SIGINT or SIGTERM only sets a flag.  The progress callback,
 * which the trainer calls after every step (progress_every 1; it prints
 * only every print_every steps), sees it at the next step boundary, writes
 * the checkpoint from there (the library allows it during a fit), and asks
 * the trainer to stop; the library then returns DISTILL_ECANCELLED and the
 * command exits with 130 without writing its output.  The handlers are
 * installed with SA_RESETHAND, so a second signal kills the program at once.
 *
 * The same callback writes the periodic checkpoints: every ckpt_every
 * steps and at each epoch's end.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define BAR_WIDTH 24

/* The only mutable global of the program. */
static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static void install_one(int sig)
{
    struct sigaction sa, old;
    /* a program started with the signal ignored (nohup, a background job) keeps it so */
    if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
        return;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    sigaction(sig, &sa, NULL);
}

static void restore_one(int sig)
{
    struct sigaction old;
    if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == on_sigint)
        signal(sig, SIG_DFL);
}

void cli_sigint_install(void)
{
    install_one(SIGINT);
    install_one(SIGTERM);
}

void cli_sigint_restore(void)
{
    restore_one(SIGINT);
    restore_one(SIGTERM);
}

int cli_interrupted(void)
{
    return g_interrupted != 0;
}

/* ------------------------------------------------------------- format */

void cli_format_duration(double s, char *buf, size_t size)
{
    if (!isfinite(s) || s < 0)
        s = 0;
    long t = (long)(s + 0.5);
    if (t < 60)
        snprintf(buf, size, "%lds", t);
    else if (t < 3600)
        snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, size, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
}

static void format_bar(char *buf, int64_t step, int64_t total)
{
    int fill = total > 0 ? (int)((double)step / (double)total * BAR_WIDTH) : 0;
    if (fill > BAR_WIDTH)
        fill = BAR_WIDTH;
    for (int i = 0; i < BAR_WIDTH; i++)
        buf[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    buf[BAR_WIDTH] = '\0';
}

/* ------------------------------------------------------------- printing */

void cli_progress_init(cli_progress *p, int quiet)
{
    memset(p, 0, sizeof *p);
    p->tty = isatty(STDERR_FILENO);
    p->quiet = quiet;
    p->last_val = -1;
    p->print_every = p->tty ? 5 : 50;
}

/* Every step: the callback is where interrupts and checkpoints are seen. */
int cli_progress_every(const cli_progress *p)
{
    (void)p;
    return 1;
}

static int save_checkpoint(cli_progress *pr, const char *path, int64_t step)
{
    int rc = distill_trainer_save_checkpoint(pr->tr, path);
    if (rc) {
        cli_progress_end(pr);
        cli_fail_lib(rc, "--checkpoint %s (step %lld)", path, (long long)step);
        pr->ckpt_failed = 1;
        return -1;
    }
    return 0;
}

void cli_progress_end(cli_progress *p)
{
    if (p->line_open) {
        fputc('\n', stderr);
        p->line_open = 0;
    }
}

static void print_step(cli_progress *pr, const distill_progress *p, double rate)
{
    char eta[32];
    cli_format_duration(p->eta_seconds, eta, sizeof eta);
    if (pr->tty) {
        char bar[BAR_WIDTH + 1];
        format_bar(bar, p->step, p->total_steps);
        fprintf(stderr, "\r\033[Kepoch %d/%d [%s] %lld/%lld loss %.4f %.0f img/s ETA %s",
                p->epoch, p->epochs, bar, (long long)p->step, (long long)p->total_steps, p->loss,
                rate, eta);
        pr->line_open = 1;
    } else {
        fprintf(stderr, "epoch %d/%d step %lld/%lld loss %.4f lr %.4g %.0f img/s ETA %s\n",
                p->epoch, p->epochs, (long long)p->step, (long long)p->total_steps, p->loss,
                p->lr, rate, eta);
    }
    fflush(stderr);
}

static void print_epoch(cli_progress *pr, const distill_progress *p)
{
    if (pr->tty)
        fputs("\r\033[K", stderr);
    pr->line_open = 0;
    fprintf(stderr, "epoch %d/%d done: step %lld/%lld loss %.4f", p->epoch, p->epochs,
            (long long)p->step, (long long)p->total_steps, p->loss);
    if (p->val_accuracy >= 0 && p->n_students > 1) {
        fprintf(stderr, " val accuracy");
        for (int i = 0; i < p->n_students; i++)
            fprintf(stderr, " %.4f", p->student_val_accuracy[i]);
    } else if (p->val_accuracy >= 0) {
        fprintf(stderr, " val accuracy %.4f", p->val_accuracy);
    }
    if (p->skipped_steps > 0)
        fprintf(stderr, " (%lld non-finite steps skipped)", (long long)p->skipped_steps);
    fputc('\n', stderr);
    fflush(stderr);
}

int cli_progress_cb(const distill_progress *p, void *payload)
{
    cli_progress *pr = payload;
    pr->last_loss = p->loss;
    pr->n_loss = p->n_students < CLI_MAX_LIST ? p->n_students : CLI_MAX_LIST;
    for (int i = 0; i < pr->n_loss; i++)
        pr->last_losses[i] = p->student_loss[i];
    if (p->end_of_epoch) {
        pr->last_val = p->val_accuracy;
        pr->epochs_done = p->epoch;
        pr->n_val = pr->n_loss;
        for (int i = 0; i < pr->n_val; i++)
            pr->last_vals[i] = p->student_val_accuracy[i];
    }
    if (!p->end_of_epoch && p->images_per_sec > 0) {
        pr->inv_rate_sum += 1.0 / p->images_per_sec;
        pr->rate_steps++;
    }
    cli_log_progress(pr->log, p);
    if (!pr->quiet) {
        if (p->end_of_epoch) {
            print_epoch(pr, p);
        } else if (p->step % pr->print_every == 0) {
            print_step(pr, p, pr->inv_rate_sum > 0 ? pr->rate_steps / pr->inv_rate_sum : 0);
            pr->inv_rate_sum = 0;
            pr->rate_steps = 0;
        }
    }
    if (cli_interrupted()) {
        const char *path = pr->ckpt_path ? pr->ckpt_path : pr->ckpt_default;
        if (pr->tr && path && save_checkpoint(pr, path, p->step) == 0) {
            pr->ckpt_saved = 1;
            pr->ckpt_written = path;
        }
        return 1;
    }
    if (pr->tr && pr->ckpt_path &&
        (p->end_of_epoch || (pr->ckpt_every > 0 && p->step % pr->ckpt_every == 0)) &&
        save_checkpoint(pr, pr->ckpt_path, p->step))
        return 1; /* a run that cannot save its state stops, rather than lose it later */
    return 0;
}

/* ---------------------------------------------------- loading images */

/* Nothing is shown for a load that takes less than this, so small folders
 * stay silent; then a terminal line is redrawn every REDRAW seconds, or a
 * plain line printed every LOG_EVERY seconds. */
#define LOAD_QUIET_S 1.0
#define LOAD_REDRAW_S 0.2
#define LOAD_LOG_EVERY_S 10.0

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void cli_load_progress_init(cli_load_progress *p, const char *what, int quiet)
{
    memset(p, 0, sizeof *p);
    p->what = what;
    p->tty = isatty(STDERR_FILENO);
    p->quiet = quiet;
    p->start = p->last = now_s();
}

int cli_load_progress_cb(int stage, int64_t done, int64_t total, void *payload)
{
    cli_load_progress *p = payload;
    if (p->quiet)
        return cli_interrupted();
    double t = now_s();
    int last = stage == DISTILL_FOLDER_DECODE && done == total;
    if (t - p->start < LOAD_QUIET_S || (!last && t - p->last < (p->tty ? LOAD_REDRAW_S
                                                                          : LOAD_LOG_EVERY_S)))
        return cli_interrupted();
    if (last && !p->printed)
        return cli_interrupted();
    p->last = t;
    p->printed = 1;
    char el[32];
    cli_format_duration(t - p->start, el, sizeof el);
    if (p->tty)
        fputs("\r\033[K", stderr);
    if (stage == DISTILL_FOLDER_SCAN) {
        fprintf(stderr, "%s: listing, %lld images found (%s)", p->what, (long long)done, el);
    } else if (p->tty) {
        char bar[BAR_WIDTH + 1];
        format_bar(bar, done, total);
        fprintf(stderr, "%s: decoding [%s] %lld/%lld (%s)", p->what, bar, (long long)done,
                (long long)total, el);
    } else {
        fprintf(stderr, "%s: decoded %lld/%lld images (%s)", p->what, (long long)done,
                (long long)total, el);
    }
    if (p->tty) {
        p->line_open = 1;
    } else {
        fputc('\n', stderr);
    }
    fflush(stderr);
    return cli_interrupted();
}

void cli_load_progress_end(cli_load_progress *p)
{
    if (p->line_open) {
        fputc('\n', stderr);
        p->line_open = 0;
        fflush(stderr);
    }
}

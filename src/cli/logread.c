/*
 * logread.c - read back a --log file (log.c) for `distill report --html`.
 *
 * Each line is one JSON object; a small reader takes the fields the report
 * draws: from "start" lines the run's description, from "step" and "epoch"
 * lines the step, epoch, loss, loss terms, learning rate and validation
 * accuracy, from "end" lines the status.  A line that is not such an object
 * (a run killed in the middle of a write leaves at most one) is skipped and
 * counted; a file without a single step or epoch line is an error.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ------------------------------------------------------------- parsing */

typedef struct jp {
    const char *p;
    int bad;
} jp;

static void ws(jp *j)
{
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n')
        j->p++;
}

/* A string into buf (truncated to size - 1; \u escapes above 0x7f become '?'). */
static void str(jp *j, char *buf, size_t size)
{
    size_t n = 0;
    if (*j->p != '"') {
        j->bad = 1;
        return;
    }
    j->p++;
    while (*j->p && *j->p != '"') {
        char c = *j->p++;
        if (c == '\\') {
            char e = *j->p ? *j->p++ : 0;
            c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b'
              : e == 'f' ? '\f' : e;
            if (e == 'u') {
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    if (!isxdigit((unsigned char)*j->p)) {
                        j->bad = 1;
                        return;
                    }
                    char h = *j->p++;
                    v = v * 16 + (unsigned)(isdigit((unsigned char)h) ? h - '0'
                                                                     : (tolower(h) - 'a' + 10));
                }
                c = v < 0x80 ? (char)v : '?';
            } else if (!e) {
                j->bad = 1;
                return;
            }
        }
        if (n + 1 < size)
            buf[n++] = c;
    }
    if (*j->p != '"') {
        j->bad = 1;
        return;
    }
    j->p++;
    if (size)
        buf[n] = '\0';
}

static void skip_value(jp *j, int depth);

/* A number, null, true or false; NAN for anything but a number. */
static double scalar(jp *j)
{
    if (strncmp(j->p, "null", 4) == 0 || strncmp(j->p, "true", 4) == 0) {
        j->p += 4;
        return NAN;
    }
    if (strncmp(j->p, "false", 5) == 0) {
        j->p += 5;
        return NAN;
    }
    char *end;
    errno = 0;
    double v = strtod(j->p, &end);
    if (end == j->p || errno == ERANGE) {
        j->bad = 1;
        return NAN;
    }
    j->p = end;
    return v;
}

static void skip_value(jp *j, int depth)
{
    ws(j);
    if (depth > 16) {
        j->bad = 1;
        return;
    }
    char c = *j->p;
    if (c == '"') {
        char tmp[8];
        str(j, tmp, sizeof tmp);
    } else if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        ws(j);
        if (*j->p == close) {
            j->p++;
            return;
        }
        while (!j->bad) {
            ws(j);
            if (c == '{') {
                char tmp[8];
                str(j, tmp, sizeof tmp);
                ws(j);
                if (*j->p++ != ':') {
                    j->bad = 1;
                    return;
                }
            }
            skip_value(j, depth + 1);
            ws(j);
            if (*j->p == ',') {
                j->p++;
            } else if (*j->p == close) {
                j->p++;
                return;
            } else {
                j->bad = 1;
            }
        }
    } else {
        scalar(j);
    }
}

/* ------------------------------------------------------------- series */

typedef struct line {
    char event[16], status[16], command[32], model[256], data[256], output[256], version[32];
    char losses[512];
    double v_epoch, v_step, v_loss, v_lr, v_val, v_ips, v_seed, v_epochs, v_batch, v_lr0;
    int n_terms;
    char term_names[CLI_LOGREAD_MAX_TERMS][48];
    double term_values[CLI_LOGREAD_MAX_TERMS];
} line;

static void read_terms(jp *j, line *l)
{
    ws(j);
    if (*j->p != '{') {
        skip_value(j, 1);
        return;
    }
    j->p++;
    ws(j);
    if (*j->p == '}') {
        j->p++;
        return;
    }
    while (!j->bad) {
        char key[48];
        ws(j);
        str(j, key, sizeof key);
        ws(j);
        if (j->bad || *j->p++ != ':') {
            j->bad = 1;
            return;
        }
        ws(j);
        double v = scalar(j);
        if (l->n_terms < CLI_LOGREAD_MAX_TERMS) {
            snprintf(l->term_names[l->n_terms], sizeof l->term_names[0], "%s", key);
            l->term_values[l->n_terms++] = v;
        }
        ws(j);
        if (*j->p == ',')
            j->p++;
        else if (*j->p == '}') {
            j->p++;
            return;
        } else
            j->bad = 1;
    }
}

/* The losses array as "a; b; c". */
static void read_strings(jp *j, char *buf, size_t size)
{
    buf[0] = '\0';
    ws(j);
    if (*j->p != '[') {
        skip_value(j, 1);
        return;
    }
    j->p++;
    ws(j);
    if (*j->p == ']') {
        j->p++;
        return;
    }
    while (!j->bad) {
        char s[256];
        ws(j);
        if (*j->p == '"')
            str(j, s, sizeof s);
        else {
            skip_value(j, 1);
            s[0] = '\0';
        }
        size_t n = strlen(buf);
        snprintf(buf + n, size - n, "%s%s", n ? "; " : "", s);
        ws(j);
        if (*j->p == ',')
            j->p++;
        else if (*j->p == ']') {
            j->p++;
            return;
        } else
            j->bad = 1;
    }
}

static int parse_line(const char *text, line *l)
{
    memset(l, 0, sizeof *l);
    l->v_epoch = l->v_step = l->v_loss = l->v_lr = l->v_val = l->v_ips = NAN;
    l->v_seed = l->v_epochs = l->v_batch = l->v_lr0 = NAN;
    jp j = {text, 0};
    ws(&j);
    if (*j.p != '{')
        return -1;
    j.p++;
    ws(&j);
    if (*j.p == '}')
        return -1;
    while (!j.bad) {
        char key[48];
        ws(&j);
        str(&j, key, sizeof key);
        ws(&j);
        if (j.bad || *j.p++ != ':')
            return -1;
        ws(&j);
        struct { const char *k; char *buf; size_t size; } strs[] = {
            {"event", l->event, sizeof l->event},       {"status", l->status, sizeof l->status},
            {"command", l->command, sizeof l->command}, {"model", l->model, sizeof l->model},
            {"data", l->data, sizeof l->data},          {"output", l->output, sizeof l->output},
            {"version", l->version, sizeof l->version}};
        int done = 0;
        for (size_t i = 0; i < sizeof strs / sizeof strs[0] && !done; i++)
            if (strcmp(key, strs[i].k) == 0 && *j.p == '"') {
                str(&j, strs[i].buf, strs[i].size);
                done = 1;
            }
        if (!done) {
            double *num = strcmp(key, "epoch") == 0 ? &l->v_epoch
                        : strcmp(key, "step") == 0 ? &l->v_step
                        : strcmp(key, "loss") == 0 ? &l->v_loss
                        : strcmp(key, "val_accuracy") == 0 ? &l->v_val
                        : strcmp(key, "images_per_sec") == 0 ? &l->v_ips
                        : strcmp(key, "seed") == 0 ? &l->v_seed
                        : strcmp(key, "epochs") == 0 ? &l->v_epochs
                        : strcmp(key, "batch") == 0 ? &l->v_batch
                        : strcmp(key, "lr") == 0 ? &l->v_lr
                                                 : NULL;
            if (strcmp(key, "terms") == 0)
                read_terms(&j, l);
            else if (strcmp(key, "losses") == 0)
                read_strings(&j, l->losses, sizeof l->losses);
            else if (num && *j.p != '"' && *j.p != '{' && *j.p != '[')
                *num = scalar(&j);
            else
                skip_value(&j, 1);
        }
        ws(&j);
        if (*j.p == ',') {
            j.p++;
        } else if (*j.p == '}') {
            j.p++;
            ws(&j);
            return j.bad || *j.p ? -1 : 0;
        } else {
            return -1;
        }
    }
    return -1;
}

static int grow(cli_logread *r)
{
    if (r->n < r->cap)
        return 0;
    int cap = r->cap ? 2 * r->cap : 64;
    cli_logread_point *p = realloc(r->points, (size_t)cap * sizeof *p);
    if (!p)
        return -1;
    r->points = p;
    r->cap = cap;
    return 0;
}

static int term_index(cli_logread *r, const char *name)
{
    for (int k = 0; k < r->n_terms; k++)
        if (strcmp(r->term_names[k], name) == 0)
            return k;
    if (r->n_terms == CLI_LOGREAD_MAX_TERMS)
        return -1;
    snprintf(r->term_names[r->n_terms], sizeof r->term_names[0], "%s", name);
    return r->n_terms++;
}

static void take_start(cli_logread *r, const line *l)
{
    r->runs++;
    if (r->runs > 1)
        return; /* a resumed run: the first start line describes the run */
    snprintf(r->command, sizeof r->command, "%s", l->command);
    snprintf(r->model, sizeof r->model, "%s", l->model);
    snprintf(r->data, sizeof r->data, "%s", l->data);
    snprintf(r->output, sizeof r->output, "%s", l->output);
    snprintf(r->version, sizeof r->version, "%s", l->version);
    snprintf(r->losses, sizeof r->losses, "%s", l->losses);
    r->seed = l->v_seed;
    r->epochs = l->v_epochs;
    r->batch = l->v_batch;
    r->lr = l->v_lr;
}

static int take_point(cli_logread *r, const line *l)
{
    if (!isfinite(l->v_step))
        return 0;
    if (grow(r))
        return cli_fail(CLI_ERUNTIME, "out of memory");
    cli_logread_point *p = &r->points[r->n++];
    p->epoch_line = strcmp(l->event, "epoch") == 0;
    p->step = l->v_step;
    p->epoch = l->v_epoch;
    p->loss = l->v_loss;
    p->lr = l->v_lr;
    p->val_accuracy = l->v_val;
    p->images_per_sec = l->v_ips;
    for (int k = 0; k < CLI_LOGREAD_MAX_TERMS; k++)
        p->terms[k] = NAN;
    for (int k = 0; k < l->n_terms; k++) {
        int t = term_index(r, l->term_names[k]);
        if (t >= 0)
            p->terms[t] = l->term_values[k];
    }
    return 0;
}

int cli_logread_load(const char *path, cli_logread *r)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->seed = r->epochs = r->batch = r->lr = NAN;
    FILE *f = fopen(path, "r");
    if (!f)
        return cli_fail(CLI_ERUNTIME, "--log %s: cannot open (%s)", path, strerror(errno));
    char *buf = NULL;
    size_t cap = 0;
    int rc = CLI_OK;
    line *l = malloc(sizeof *l);
    if (!l)
        rc = cli_fail(CLI_ERUNTIME, "out of memory");
    while (rc == CLI_OK) {
        /* one line, whatever its length */
        size_t n = 0;
        int c;
        while ((c = fgetc(f)) != EOF && c != '\n') {
            if (n + 1 >= cap) {
                size_t nc = cap ? 2 * cap : 1024;
                char *nb = nc < ((size_t)1 << 24) ? realloc(buf, nc) : NULL;
                if (!nb) {
                    rc = cli_fail(CLI_ERUNTIME, "--log %s: a line longer than 16 MB", path);
                    break;
                }
                buf = nb;
                cap = nc;
            }
            buf[n++] = (char)c;
        }
        if (rc != CLI_OK || (c == EOF && n == 0))
            break;
        buf[n] = '\0';
        if (n == 0)
            continue;
        if (parse_line(buf, l) != 0) {
            r->bad_lines++;
            continue;
        }
        if (strcmp(l->event, "start") == 0)
            take_start(r, l);
        else if (strcmp(l->event, "step") == 0 || strcmp(l->event, "epoch") == 0)
            rc = take_point(r, l);
        else if (strcmp(l->event, "end") == 0)
            snprintf(r->status, sizeof r->status, "%s", l->status);
        else
            r->bad_lines++;
    }
    if (rc == CLI_OK && ferror(f))
        rc = cli_fail(CLI_ERUNTIME, "--log %s: read error", path);
    if (rc == CLI_OK && r->n == 0)
        rc = cli_fail(CLI_ERUNTIME, "--log %s: no training log lines (write one with "
                      "`distill train --log FILE`)", path);
    free(l);
    free(buf);
    fclose(f);
    if (rc != CLI_OK)
        cli_logread_free(r);
    return rc;
}

void cli_logread_free(cli_logread *r)
{
    free(r->points);
    r->points = NULL;
    r->n = r->cap = 0;
}

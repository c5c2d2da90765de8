/*
 * json.c - a minimal writer for the one JSON object that --json prints.
 *
 * Keys and values are written in call order; nesting is tracked so that
 * commas fall in the right places.  Non-finite numbers become null.
 */
#include <inttypes.h>
#include <math.h>

#include "cli.h"

#define MAX_DEPTH ((int)(sizeof ((cli_json *)0)->first / sizeof(int)))

static void put_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", f);
        else if (*c == '\t')
            fputs("\\t", f);
        else if (*c < 0x20)
            fprintf(f, "\\u%04x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

/* The separator and, inside an object, the key. */
static void put_key(cli_json *j, const char *key)
{
    if (!j->first[j->depth])
        fputs(", ", j->f);
    j->first[j->depth] = 0;
    if (key) {
        put_string(j->f, key);
        fputs(": ", j->f);
    }
}

static void push(cli_json *j, char open)
{
    fputc(open, j->f);
    if (j->depth + 1 < MAX_DEPTH)
        j->depth++;
    j->first[j->depth] = 1;
}

static void pop(cli_json *j, char close)
{
    fputc(close, j->f);
    if (j->depth > 0)
        j->depth--;
}

void cli_json_open(cli_json *j, FILE *f)
{
    j->f = f;
    j->depth = 0;
    j->first[0] = 1;
    push(j, '{');
}

void cli_json_close(cli_json *j)
{
    pop(j, '}');
    fputc('\n', j->f);
    fflush(j->f);
}

void cli_json_str(cli_json *j, const char *key, const char *value)
{
    put_key(j, key);
    if (value)
        put_string(j->f, value);
    else
        fputs("null", j->f);
}

void cli_json_num(cli_json *j, const char *key, double value)
{
    put_key(j, key);
    if (isfinite(value))
        fprintf(j->f, "%.6g", value);
    else
        fputs("null", j->f);
}

void cli_json_int(cli_json *j, const char *key, int64_t value)
{
    put_key(j, key);
    fprintf(j->f, "%" PRId64, value);
}

void cli_json_bool(cli_json *j, const char *key, int value)
{
    put_key(j, key);
    fputs(value ? "true" : "false", j->f);
}

void cli_json_begin_obj(cli_json *j, const char *key)
{
    put_key(j, key);
    push(j, '{');
}

void cli_json_end_obj(cli_json *j)
{
    pop(j, '}');
}

void cli_json_begin_arr(cli_json *j, const char *key)
{
    put_key(j, key);
    push(j, '[');
}

void cli_json_end_arr(cli_json *j)
{
    pop(j, ']');
}

void cli_json_elem_int(cli_json *j, int64_t value)
{
    put_key(j, NULL);
    fprintf(j->f, "%" PRId64, value);
}

void cli_json_elem_num(cli_json *j, double value)
{
    cli_json_num(j, NULL, value);
}

void cli_json_elem_str(cli_json *j, const char *value)
{
    cli_json_str(j, NULL, value);
}

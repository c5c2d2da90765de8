/*
 * options.c - the one option parser every subcommand shares, and --help.
 *
 * Options are long ("--epochs 3" or "--epochs=3"); -h is --help.  Each
 * subcommand lists the options it accepts; any other option is a usage
 * error naming it.
 */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef enum arg_kind {
    ARG_FLAG,   /* no value */
    ARG_STR,    /* a string */
    ARG_LIST,   /* a string, repeatable */
    ARG_INT,    /* an integer in [min, max] */
    ARG_INT64,  /* a 64-bit integer in [min, ...) */
    ARG_SEED,   /* an unsigned 64-bit integer */
    ARG_REAL,   /* a positive finite number */
    ARG_FLOATS, /* 1 to 4 comma-separated numbers */
    ARG_SIZE,   /* HxW */
    ARG_HW,     /* N or HxW, a pair of sides */
    ARG_BYTES   /* a byte count with an optional K, M, G or T suffix (powers of 1024) */
} arg_kind;

typedef struct opt_def {
    cli_opt_id id;
    const char *name;    /* without the leading "--" */
    arg_kind kind;
    const char *metavar; /* for the help text */
    long min, max;       /* ARG_INT, ARG_INT64 (max ignored) */
    const char *help;
} opt_def;

static const opt_def OPTS[OPT_COUNT_] = {
    {OPT_HELP, "help", ARG_FLAG, NULL, 0, 0, "print this help and exit"},
    {OPT_MODEL, "model", ARG_STR, "M", 0, 0,
     "a model file (.dstl) or a zoo name (listed by `distill --help`)"},
    {OPT_TEACHER, "teacher", ARG_LIST, "T", 0, 0,
     "a teacher model file; give several for an ensemble (equal weights)"},
    {OPT_TEACHER_CACHE, "teacher-cache", ARG_STR, "FILE", 0, 0,
     "a teacher cache made by `distill cache`, instead of --teacher"},
    {OPT_STUDENT, "student", ARG_STR, "S", 0, 0, "a zoo name, or a model file to continue from"},
    {OPT_LOSS, "loss", ARG_LIST, "SPEC", 0, 0,
     "a loss term, repeatable: ce[:smoothing=S], kd:T=4,alpha=0.9, dkd:T=,alpha=,beta=, "
     "fitnets|at|sp|rkd|pkt:student=NODE,teacher=NODE[,...]; any may add weight=W"},
    {OPT_DATA, "data", ARG_STR, "D", 0, 0,
     "fashion-mnist, idx:IMAGES,LABELS[,CLASSES], a folder of PNG/JPEG images (one "
     "sub-folder per class), or a list file (list:FILE, or FILE.csv/.txt/.lst)"},
    {OPT_VAL, "val", ARG_STR, "D", 0, 0,
     "validation data, as --data, or `none` (default: Fashion-MNIST's test split for "
     "fashion-mnist, else the training data itself)"},
    {OPT_OUT, "out", ARG_STR, "FILE", 0, 0,
     "where to write the trained model (written once, at the end, atomically)"},
    {OPT_EPOCHS, "epochs", ARG_INT, "N", 1, 1000000, "passes over the training data (default 3)"},
    {OPT_BATCH, "batch", ARG_INT, "N", 1, 1 << 20, "batch size (default 128)"},
    {OPT_LR, "lr", ARG_REAL, "X", 0, 0,
     "peak learning rate of SGD (momentum 0.9, Nesterov, weight decay 5e-4, cosine decay per "
     "step; default 0.1)"},
    {OPT_SEED, "seed", ARG_SEED, "N", 0, 0,
     "seed of the weights, the data order and the augmentation (default 0)"},
    {OPT_THREADS, "threads", ARG_INT, "N", 1, 4096,
     "compute threads (default: OMP_NUM_THREADS, else every core)"},
    {OPT_LIMIT, "limit", ARG_INT64, "N", 1, 0, "use only the first N samples of the data"},
    {OPT_VAL_LIMIT, "val-limit", ARG_INT64, "N", 1, 0,
     "use only the first N samples of the validation data"},
    {OPT_AUGMENT, "augment", ARG_FLAG, NULL, 0, 0,
     "random crop of the 2-pixel zero-padded image and horizontal flip (the default)"},
    {OPT_NO_AUGMENT, "no-augment", ARG_FLAG, NULL, 0, 0, "train on the images as they are"},
    {OPT_MEAN, "mean", ARG_FLOATS, "M[,M...]", 0, 0,
     "normalization mean, one value or one per channel, or `imagenet` for ImageNet's mean "
     "0.485,0.456,0.406 and std 0.229,0.224,0.225 (default: the one the model file records, "
     "else 0.2860 for fashion-mnist, else none)"},
    {OPT_STD, "std", ARG_FLOATS, "S[,S...]", 0, 0,
     "normalization standard deviation (default: the model's, else 0.3530 for fashion-mnist)"},
    {OPT_CHANNELS, "channels", ARG_INT, "C", 1, 4,
     "image folders read for a new model: 1 (gray) or 3 (RGB; default)"},
    {OPT_SIZE, "size", ARG_SIZE, "HxW", 0, 0,
     "image folders read for a new model: resize to HxW (default: the first image's size)"},
    {OPT_UNLABELLED, "unlabelled", ARG_FLAG, NULL, 0, 0,
     "drop the training labels: learn from the teacher's outputs only (default loss "
     "kd:T=4,alpha=1)"},
    {OPT_CONFUSION, "confusion", ARG_FLAG, NULL, 0, 0,
     "also print the confusion matrix (rows: true class, columns: predicted)"},
    {OPT_TOP, "top", ARG_INT, "K", 1, 1000, "print the K most likely classes (default 1)"},
    {OPT_JSON, "json", ARG_FLAG, NULL, 0, 0, "print the result as one JSON object on stdout"},
    {OPT_QUIET, "quiet", ARG_FLAG, NULL, 0, 0, "no progress output on stderr"},
    {OPT_RESIZE, "resize", ARG_INT, "N", 1, 65535,
     "Resize: bring the shorter side of each sample to N pixels (bilinear, as torchvision's "
     "Resize(N) with antialias=False), before --center-crop"},
    {OPT_CENTER_CROP, "center-crop", ARG_HW, "HxW", 0, 0,
     "CenterCrop: the centred HxW (or NxN) window, zero-padded if the sample is smaller"},
    {OPT_RRC, "random-resized-crop", ARG_HW, "HxW", 0, 0,
     "RandomResizedCrop for training: a random box (see --scale, --ratio) resized to HxW; "
     "replaces the pad-and-crop of --augment (the flip stays), and training batches then skip "
     "--resize and --center-crop, which validation still uses"},
    {OPT_SCALE, "scale", ARG_FLOATS, "MIN,MAX", 0, 0,
     "the area range of --random-resized-crop, as fractions of the image (default 0.08,1)"},
    {OPT_RATIO, "ratio", ARG_FLOATS, "MIN,MAX", 0, 0,
     "the aspect-ratio (width / height) range of --random-resized-crop (default 0.75,1.3333)"},
    {OPT_MEMORY, "memory", ARG_BYTES, "SIZE", 0, 0,
     "memory budget of an image folder's decoded bytes, e.g. 512M or 4G; a larger folder is "
     "streamed: decoded from its files every epoch on the loader's threads (default 4G)"},
    {OPT_WORKERS, "workers", ARG_INT, "N", 0, 64,
     "loader threads that decode, transform and normalize batches (default 1; batches are the "
     "same for every N)"},
    {OPT_CLASSES, "classes", ARG_INT, "N", 2, 1 << 20, "classes of a zoo model (default 10)"},
    {OPT_WIDTH, "width", ARG_INT, "PCT", 25, 400,
     "channel widths of a zoo model in percent (mobilenet_v2: torchvision's width_mult; "
     "default 100)"},
    {OPT_CHECKPOINT, "checkpoint", ARG_STR, "FILE", 0, 0,
     "write the full training state to FILE (atomically) at each epoch's end, every "
     "--checkpoint-every steps, and when SIGINT or SIGTERM stops the run (default for that: "
     "OUT.ckpt)"},
    {OPT_CHECKPOINT_EVERY, "checkpoint-every", ARG_INT, "N", 1, 1000000000,
     "also write the --checkpoint every N steps"},
    {OPT_RESUME, "resume", ARG_STR, "FILE", 0, 0,
     "continue the run saved in FILE by --checkpoint or an interrupt; give the same options "
     "otherwise: the result is the model of an uninterrupted run"},
    {OPT_MUTUAL_WEIGHT, "mutual-weight", ARG_REAL, "W", 0, 0,
     "weight of each student's mutual term, the mean KL from the other students' outputs "
     "(default 1; 0 trains the students side by side)"},
    {OPT_MUTUAL_T, "mutual-temperature", ARG_REAL, "T", 0, 0,
     "temperature of the mutual term, > 0 (default 1)"},
    {OPT_ALLOW_MISMATCH, "allow-mismatch", ARG_FLAG, NULL, 0, 0,
     "go on when the data's channels or class names differ from those the model records: "
     "1-channel data is repeated over the model's channels, and classes are matched by "
     "number"},
    {OPT_NO_METADATA, "no-metadata", ARG_FLAG, NULL, 0, 0,
     "write the model without its metadata (normalization, class names, provenance)"},
    {OPT_LOG, "log", ARG_LIST, "FILE", 0, 0,
     "write a training log to FILE: JSON lines, one every --log-every steps (epoch, step, "
     "loss and each loss term, learning rate, images/s) and one per epoch (validation "
     "accuracy), each flushed as it is written; --resume appends"},
    {OPT_LOG_EVERY, "log-every", ARG_INT, "N", 1, 1000000000,
     "steps between the --log lines (default 50)"},
    {OPT_HTML, "html", ARG_STR, "FILE", 0, 0,
     "also write the report as one self-contained HTML page with charts (no network access "
     "needed to view it)"},
};

/* ------------------------------------------------------------- messages */

static FILE *out_stream, *err_stream;

FILE *cli_stdout(void)
{
    return out_stream ? out_stream : stdout;
}

FILE *cli_stderr(void)
{
    return err_stream ? err_stream : stderr;
}

void cli_set_streams(FILE *out, FILE *err)
{
    out_stream = out;
    err_stream = err;
}

static void vprint_line(const char *prefix, const char *fmt, va_list ap)
{
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    /* one line, whatever the message holds */
    for (char *c = buf; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    fprintf(cli_stderr(), "distill: %s%s\n", prefix, buf);
}

int cli_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint_line("", fmt, ap);
    va_end(ap);
    return status;
}

int cli_fail_lib(int rc, const char *fmt, ...)
{
    char lib[1024];
    const char *msg = distill_last_error();
    snprintf(lib, sizeof lib, "%s", msg && *msg ? msg : distill_strerror(rc));
    char ctx[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    return cli_fail(CLI_ERUNTIME, "%s: %s", ctx, lib);
}

/* ------------------------------------------------------------- lookups */

static const opt_def *find_def(const char *name, size_t len)
{
    for (int i = 0; i < OPT_COUNT_; i++)
        if (strlen(OPTS[i].name) == len && strncmp(OPTS[i].name, name, len) == 0)
            return &OPTS[i];
    return NULL;
}

static int cmd_accepts(const cli_command *cmd, cli_opt_id id)
{
    if (id == OPT_HELP)
        return 1;
    for (const cli_cmd_opt *c = cmd->opts; c->id != OPT_COUNT_; c++)
        if (c->id == id)
            return 1;
    return 0;
}

int cli_given(const cli_options *o, cli_opt_id id)
{
    return (o->given >> id) & 1u;
}

/* ------------------------------------------------------------- values */

static int bad_value(const cli_command *cmd, const opt_def *d, const char *v, const char *want)
{
    return cli_fail(CLI_EUSAGE, "%s: --%s: '%s' is not %s", cmd->name, d->name, v, want);
}

static int parse_long(const char *v, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end)
        return -1;
    *out = x;
    return 0;
}

static int set_int(const cli_command *cmd, const opt_def *d, const char *v, cli_options *o)
{
    long x;
    if (parse_long(v, &x) || x < d->min || x > d->max) {
        char want[96];
        snprintf(want, sizeof want, "an integer in %ld..%ld", d->min, d->max);
        return bad_value(cmd, d, v, want);
    }
    int *dst = d->id == OPT_EPOCHS ? &o->epochs
             : d->id == OPT_BATCH ? &o->batch
             : d->id == OPT_THREADS ? &o->threads
             : d->id == OPT_CHANNELS ? &o->channels
             : d->id == OPT_RESIZE ? &o->resize
             : d->id == OPT_WORKERS ? &o->workers
             : d->id == OPT_CLASSES ? &o->classes
             : d->id == OPT_WIDTH ? &o->width_pct
             : d->id == OPT_CHECKPOINT_EVERY ? &o->checkpoint_every
             : d->id == OPT_LOG_EVERY ? &o->log_every
                                     : &o->top;
    *dst = (int)x;
    return CLI_OK;
}

static int set_int64(const cli_command *cmd, const opt_def *d, const char *v, cli_options *o)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < d->min)
        return bad_value(cmd, d, v, "a positive integer");
    if (d->id == OPT_LIMIT)
        o->limit = (int64_t)x;
    else
        o->val_limit = (int64_t)x;
    return CLI_OK;
}

static int set_seed(const cli_command *cmd, const opt_def *d, const char *v, cli_options *o)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-')
        return bad_value(cmd, d, v, "a non-negative integer");
    o->seed = (uint64_t)x;
    return CLI_OK;
}

static int set_real(const cli_command *cmd, const opt_def *d, const char *v, cli_options *o)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < 0)
        return bad_value(cmd, d, v, "a non-negative number");
    if (d->id == OPT_MUTUAL_T && !(x > 0))
        return bad_value(cmd, d, v, "a positive number");
    if (d->id == OPT_MUTUAL_WEIGHT)
        o->mutual_weight = x;
    else if (d->id == OPT_MUTUAL_T)
        o->mutual_t = x;
    else
        o->lr = x;
    return CLI_OK;
}

static int set_floats(const cli_command *cmd, const opt_def *d, const char *v, cli_options *o)
{
    if (d->id == OPT_MEAN && strcmp(v, "imagenet") == 0) {
        static const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
        memcpy(o->mean, mean, sizeof mean);
        memcpy(o->std, sd, sizeof sd);
        o->n_mean = 3;
        o->mean_imagenet = 1;
        return CLI_OK;
    }
    float *dst = d->id == OPT_MEAN ? o->mean : d->id == OPT_STD ? o->std
               : d->id == OPT_SCALE ? o->scale : o->ratio;
    int n = 0;
    const char *p = v;
    for (;;) {
        char *end;
        errno = 0;
        double x = strtod(p, &end);
        /* the values are floats: one beyond FLT_MAX would become infinite */
        if (errno || end == p || !(fabs(x) <= FLT_MAX) || n == 4 || (*end && *end != ','))
            return bad_value(cmd, d, v, "1 to 4 comma-separated numbers");
        dst[n++] = (float)x;
        if (!*end)
            break;
        p = end + 1;
    }
    if (d->id == OPT_MEAN) {
        o->n_mean = n;
    } else if (d->id == OPT_STD) {
        o->n_std = n;
    } else {
        /* a range: two numbers, 0 < min <= max (scale: max <= 1) */
        if (n != 2 || !(dst[0] > 0) || dst[0] > dst[1] || (d->id == OPT_SCALE && dst[1] > 1))
            return bad_value(cmd, d, v,
                             d->id == OPT_SCALE ? "MIN,MAX with 0 < MIN <= MAX <= 1"
                                                : "MIN,MAX with 0 < MIN <= MAX");
        if (d->id == OPT_SCALE)
            o->n_scale = n;
        else
            o->n_ratio = n;
    }
    return CLI_OK;
}

/* N or HxW, each side in 1..65535. */
static int set_hw(const cli_command *cmd, const opt_def *d, const char *v, cli_options *o)
{
    char *end;
    errno = 0;
    long h = strtol(v, &end, 10), w = h;
    if (!errno && end != v && (*end == 'x' || *end == 'X')) {
        const char *p = end + 1;
        w = strtol(p, &end, 10);
        if (end == p)
            w = 0;
    }
    if (errno || end == v || *end || h < 1 || w < 1 || h > 65535 || w > 65535)
        return bad_value(cmd, d, v, "a size N or HxW (1..65535 each)");
    int *dst = d->id == OPT_CENTER_CROP ? o->center_crop : o->rrc;
    dst[0] = (int)h;
    dst[1] = (int)w;
    return CLI_OK;
}

/* A byte count: digits, then optionally K, M, G or T (times 1024^k) and
 * an optional B ("512M", "4G", "1500000"). */
static int set_bytes(const cli_command *cmd, const opt_def *d, const char *v, cli_options *o)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    int shift = 0;
    if (!errno && end != v && v[0] != '-') {
        switch (*end) {
        case 'k': case 'K': shift = 10; end++; break;
        case 'm': case 'M': shift = 20; end++; break;
        case 'g': case 'G': shift = 30; end++; break;
        case 't': case 'T': shift = 40; end++; break;
        default: break;
        }
        if (*end == 'b' || *end == 'B')
            end++;
    }
    if (errno || end == v || *end || v[0] == '-' || x < 1 ||
        x > ((unsigned long long)INT64_MAX >> shift))
        return bad_value(cmd, d, v, "a size in bytes such as 512M or 4G");
    o->memory = (int64_t)(x << shift);
    return CLI_OK;
}

static int set_size(const cli_command *cmd, const opt_def *d, const char *v, cli_options *o)
{
    char *end;
    errno = 0;
    long h = strtol(v, &end, 10);
    if (errno || end == v || (*end != 'x' && *end != 'X'))
        return bad_value(cmd, d, v, "a size HxW");
    const char *p = end + 1;
    long w = strtol(p, &end, 10);
    if (errno || end == p || *end || h < 1 || w < 1 || h > 16384 || w > 16384)
        return bad_value(cmd, d, v, "a size HxW (1..16384 each)");
    o->height = (int)h;
    o->width = (int)w;
    return CLI_OK;
}

static int add_list(const cli_command *cmd, const opt_def *d, const char *v, cli_options *o)
{
    const char **list = d->id == OPT_TEACHER ? o->teachers
                      : d->id == OPT_LOG   ? o->logs
                                           : o->losses;
    int *n = d->id == OPT_TEACHER ? &o->n_teachers : d->id == OPT_LOG ? &o->n_logs : &o->n_losses;
    if (*n == CLI_MAX_LIST)
        return cli_fail(CLI_EUSAGE, "%s: --%s given more than %d times", cmd->name, d->name,
                        CLI_MAX_LIST);
    list[(*n)++] = v;
    return CLI_OK;
}

static void set_flag(cli_opt_id id, cli_options *o)
{
    switch (id) {
    case OPT_AUGMENT: o->augment = 1; break;
    case OPT_NO_AUGMENT: o->augment = 0; break;
    case OPT_UNLABELLED: o->unlabelled = 1; break;
    case OPT_CONFUSION: o->confusion = 1; break;
    case OPT_JSON: o->json = 1; break;
    case OPT_QUIET: o->quiet = 1; break;
    case OPT_ALLOW_MISMATCH: o->allow_mismatch = 1; break;
    case OPT_NO_METADATA: o->no_metadata = 1; break;
    default: break;
    }
}

static const char **str_slot(cli_opt_id id, cli_options *o)
{
    switch (id) {
    case OPT_MODEL: return &o->model;
    case OPT_STUDENT: return &o->student;
    case OPT_DATA: return &o->data;
    case OPT_VAL: return &o->val;
    case OPT_TEACHER_CACHE: return &o->teacher_cache;
    case OPT_CHECKPOINT: return &o->checkpoint;
    case OPT_RESUME: return &o->resume;
    case OPT_HTML: return &o->html;
    default: return &o->out;
    }
}

static int set_value(const cli_command *cmd, const opt_def *d, const char *v, cli_options *o)
{
    int repeated = cmd->repeat_student_out && (d->id == OPT_STUDENT || d->id == OPT_OUT);
    if (d->kind != ARG_LIST && !repeated && cli_given(o, d->id))
        return cli_fail(CLI_EUSAGE, "%s: --%s given twice", cmd->name, d->name);
    switch (d->kind) {
    case ARG_STR:
        if (!*v)
            return cli_fail(CLI_EUSAGE, "%s: --%s: empty value", cmd->name, d->name);
        if (d->id == OPT_STUDENT || d->id == OPT_OUT) {
            const char **list = d->id == OPT_STUDENT ? o->students : o->outs;
            int *n = d->id == OPT_STUDENT ? &o->n_students : &o->n_outs;
            if (*n == CLI_MAX_LIST)
                return cli_fail(CLI_EUSAGE, "%s: --%s given more than %d times", cmd->name,
                                d->name, CLI_MAX_LIST);
            list[(*n)++] = v;
            if (*n > 1)
                return CLI_OK;
        }
        *str_slot(d->id, o) = v;
        return CLI_OK;
    case ARG_LIST: return add_list(cmd, d, v, o);
    case ARG_INT: return set_int(cmd, d, v, o);
    case ARG_INT64: return set_int64(cmd, d, v, o);
    case ARG_SEED: return set_seed(cmd, d, v, o);
    case ARG_REAL: return set_real(cmd, d, v, o);
    case ARG_FLOATS: return set_floats(cmd, d, v, o);
    case ARG_SIZE: return set_size(cmd, d, v, o);
    case ARG_HW: return set_hw(cmd, d, v, o);
    case ARG_BYTES: return set_bytes(cmd, d, v, o);
    default: return CLI_OK;
    }
}

/* ------------------------------------------------------------- parsing */

static void options_defaults(cli_options *o)
{
    memset(o, 0, sizeof *o);
    o->augment = -1;
}

/* One "--name[=value]" word at argv[*i]; may consume the next word. */
static int parse_long_opt(const cli_command *cmd, int argc, char **argv, int *i, cli_options *o)
{
    const char *word = argv[*i] + 2;
    const char *eq = strchr(word, '=');
    size_t len = eq ? (size_t)(eq - word) : strlen(word);
    const opt_def *d = find_def(word, len);
    if (!d || !cmd_accepts(cmd, d->id))
        return cli_fail(CLI_EUSAGE, "%s: unknown option '--%.*s' (see 'distill %s --help')",
                        cmd->name, (int)len, word, cmd->name);
    if (d->id == OPT_HELP)
        return -1;
    if (d->kind == ARG_FLAG) {
        if (eq)
            return cli_fail(CLI_EUSAGE, "%s: --%s takes no value", cmd->name, d->name);
        set_flag(d->id, o);
    } else {
        const char *v = eq ? eq + 1 : NULL;
        if (!v && *i + 1 < argc)
            v = argv[++*i];
        if (!v)
            return cli_fail(CLI_EUSAGE, "%s: --%s needs a value (%s)", cmd->name, d->name,
                            d->metavar);
        int rc = set_value(cmd, d, v, o);
        if (rc)
            return rc;
    }
    o->given |= (uint64_t)1 << d->id;
    return CLI_OK;
}

static int add_positional(const cli_command *cmd, const char *word, cli_options *o)
{
    if (!cmd->positionals)
        return cli_fail(CLI_EUSAGE, "%s: unexpected argument '%s' (see 'distill %s --help')",
                        cmd->name, word, cmd->name);
    o->inputs[o->n_inputs++] = word;
    return CLI_OK;
}

int cli_parse(const cli_command *cmd, int argc, char **argv, cli_options *o)
{
    options_defaults(o);
    o->inputs = calloc((size_t)(argc > 0 ? argc : 1), sizeof *o->inputs);
    if (!o->inputs)
        return cli_fail(CLI_ERUNTIME, "out of memory");
    int rc = CLI_OK, only_positionals = 0;
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        if (only_positionals || a[0] != '-' || a[1] == '\0')
            rc = add_positional(cmd, a, o);
        else if (strcmp(a, "--") == 0)
            only_positionals = 1;
        else if (strcmp(a, "-h") == 0)
            rc = -1;
        else if (a[1] == '-')
            rc = parse_long_opt(cmd, argc, argv, &i, o);
        else
            rc = cli_fail(CLI_EUSAGE, "%s: unknown option '%s' (see 'distill %s --help')",
                          cmd->name, a, cmd->name);
    }
    if (rc == -1)
        cli_print_help(cmd, cli_stdout());
    if (rc != CLI_OK)
        cli_options_free(o);
    return rc;
}

void cli_options_free(cli_options *o)
{
    free(o->inputs);
    o->inputs = NULL;
    o->n_inputs = 0;
}

int cli_require(const cli_command *cmd, const cli_options *o, cli_opt_id id)
{
    if (cli_given(o, id))
        return CLI_OK;
    return cli_fail(CLI_EUSAGE, "%s: --%s is required (see 'distill %s --help')", cmd->name,
                    OPTS[id].name, cmd->name);
}

void cli_apply_threads(const cli_options *o)
{
    if (cli_given(o, OPT_THREADS))
        distill_set_num_threads(o->threads);
}

/* ------------------------------------------------------------- help */

/* Print `text` wrapped at `width` columns, every line indented by `indent`
 * (the first line continues wherever the cursor is, at column `col`). */
static void print_wrapped(FILE *f, const char *text, int col, int indent, int width)
{
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t wl = strcspn(p, " ");
        if (col > indent && col + 1 + (int)wl > width) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', f);
            col++;
        }
        fprintf(f, "%.*s", (int)wl, p);
        col += (int)wl;
        p += wl;
    }
    fputc('\n', f);
}

static void print_option(FILE *f, const opt_def *d, const char *help)
{
    char left[64];
    if (d->metavar)
        snprintf(left, sizeof left, "  --%s %s", d->name, d->metavar);
    else
        snprintf(left, sizeof left, "  --%s", d->name);
    int col = fprintf(f, "%-24s", left);
    if (col > 24) {
        fprintf(f, "\n%24s", "");
        col = 24;
    }
    print_wrapped(f, help ? help : d->help, col, 24, 79);
}

void cli_print_help(const cli_command *cmd, FILE *f)
{
    fprintf(f, "Usage: distill %s %s\n\n", cmd->name, cmd->usage);
    print_wrapped(f, cmd->summary, 0, 0, 79);
    if (cmd->description) {
        fputc('\n', f);
        print_wrapped(f, cmd->description, 0, 0, 79);
    }
    fprintf(f, "\nOptions:\n");
    for (const cli_cmd_opt *c = cmd->opts; c->id != OPT_COUNT_; c++)
        print_option(f, &OPTS[c->id], c->help);
    print_option(f, &OPTS[OPT_HELP], NULL);
    fprintf(f, "\nExample:\n%s\n", cmd->example);
}

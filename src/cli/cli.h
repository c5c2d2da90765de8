/*
 * cli.h - shared declarations of the `distill` command-line program.
 *
 * The program is built on libdistill's public API only (the shared library
 * and include/).  Every helper that can fail prints its own one-line message
 * on stderr, prefixed "distill: ", and returns the program's exit status:
 * 0 on success, CLI_EUSAGE for a usage error, CLI_ERUNTIME for anything
 * else.  Callers only propagate that status.
 */
#ifndef DISTILL_CLI_H
#define DISTILL_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "distill.h"
#include "distill/loss.h"
#include "distill/trainer.h"

/* ------------------------------------------------------------ exit status */

enum {
    CLI_OK = 0,
    CLI_ERUNTIME = 1,       /* a file, the data or the library failed */
    CLI_EUSAGE = 2,         /* bad command line */
    CLI_EINTERRUPTED = 130  /* stopped by Ctrl-C (128 + SIGINT) */
};

#if defined(__GNUC__)
#define CLI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLI_PRINTF(a, b)
#endif

/**
 * The streams the program prints messages and help on: stdout and stderr,
 * unless cli_set_streams() replaced them (the command-line fuzz target
 * silences them).  NULL restores the standard stream.
 */
FILE *cli_stdout(void);
FILE *cli_stderr(void);
void cli_set_streams(FILE *out, FILE *err);

/** Print "distill: <message>" on one line of cli_stderr(); returns `status`. */
int cli_fail(int status, const char *fmt, ...) CLI_PRINTF(2, 3);

/**
 * Print "distill: <context>: <library message>" for a failed library call
 * that returned `rc`, using distill_last_error() (or distill_strerror(rc)
 * when the library left no message).  Returns CLI_ERUNTIME.
 */
int cli_fail_lib(int rc, const char *fmt, ...) CLI_PRINTF(2, 3);

/* ---------------------------------------------------------------- options */

#define CLI_MAX_LIST 16

/** Every option any subcommand knows; each subcommand accepts a subset. */
typedef enum cli_opt_id {
    OPT_HELP = 0,
    OPT_MODEL,
    OPT_TEACHER,
    OPT_TEACHER_CACHE,
    OPT_STUDENT,
    OPT_LOSS,
    OPT_DATA,
    OPT_VAL,
    OPT_OUT,
    OPT_EPOCHS,
    OPT_BATCH,
    OPT_LR,
    OPT_SEED,
    OPT_THREADS,
    OPT_LIMIT,
    OPT_VAL_LIMIT,
    OPT_AUGMENT,
    OPT_NO_AUGMENT,
    OPT_MEAN,
    OPT_STD,
    OPT_CHANNELS,
    OPT_SIZE,
    OPT_UNLABELLED,
    OPT_CONFUSION,
    OPT_TOP,
    OPT_JSON,
    OPT_QUIET,
    OPT_RESIZE,
    OPT_CENTER_CROP,
    OPT_RRC,
    OPT_SCALE,
    OPT_RATIO,
    OPT_MEMORY,
    OPT_WORKERS,
    OPT_CLASSES,
    OPT_WIDTH,
    OPT_CHECKPOINT,
    OPT_CHECKPOINT_EVERY,
    OPT_RESUME,
    OPT_MUTUAL_WEIGHT,
    OPT_MUTUAL_T,
    OPT_ALLOW_MISMATCH,
    OPT_NO_METADATA,
    OPT_LOG,
    OPT_LOG_EVERY,
    OPT_HTML,
    OPT_COUNT_ /* at most 64: cli_options.given is a bit set */
} cli_opt_id;

/** The parsed command line.  Strings are borrowed from argv. */
typedef struct cli_options {
    uint64_t given;                 /* bit (1 << id) for every option seen */
    const char *model, *student, *data, *val, *out;
    const char *teacher_cache;
    const char *teachers[CLI_MAX_LIST];
    int n_teachers;
    const char *losses[CLI_MAX_LIST];
    int n_losses;
    const char **inputs;            /* positional arguments (owned array) */
    int n_inputs;
    int epochs, batch, threads, channels, height, width, top;
    int classes, width_pct;         /* --classes, --width (zoo models) */
    int64_t limit, val_limit;
    uint64_t seed;
    double lr;
    int augment;                    /* 1, 0, or -1 when not given */
    int unlabelled, confusion, json, quiet;
    int n_mean, n_std;
    float mean[4], std[4];
    int mean_imagenet;              /* --mean imagenet (mean and std set) */
    int resize, workers;
    int center_crop[2], rrc[2];     /* H, W */
    int n_scale, n_ratio;
    float scale[4], ratio[4];
    int64_t memory;                 /* --memory in bytes */
    const char *checkpoint, *resume;
    int checkpoint_every;           /* steps; 0 = only at each epoch's end */
    /* `mutual`: every --student and --out in order (student, out: the first) */
    const char *students[CLI_MAX_LIST], *outs[CLI_MAX_LIST];
    int n_students, n_outs;
    double mutual_weight, mutual_t;
    int allow_mismatch;             /* --allow-mismatch */
    int no_metadata;                /* --no-metadata */
    const char *logs[CLI_MAX_LIST]; /* --log: training commands take one */
    int n_logs;
    int log_every;                  /* --log-every; 0 = CLI_LOG_EVERY_DEFAULT */
    const char *html;               /* report --html FILE */
} cli_options;

/** One option of a subcommand; help NULL means the option's general help. */
typedef struct cli_cmd_opt {
    cli_opt_id id;
    const char *help;
} cli_cmd_opt;

typedef struct cli_command cli_command;

/** A subcommand: its help text, the options it takes and its entry point. */
struct cli_command {
    const char *name;
    const char *summary;     /* one line, for `distill --help` */
    const char *usage;       /* after "distill <name> " */
    const char *description; /* a paragraph, may be NULL */
    const cli_cmd_opt *opts; /* terminated by {OPT_COUNT_, NULL} */
    int positionals;         /* nonzero: takes positional arguments */
    const char *example;     /* one or more lines */
    int (*run)(const cli_command *cmd, const cli_options *o);
    int repeat_student_out;  /* nonzero: --student and --out may be repeated */
};

/**
 * Parse argv[1..argc-1] (the words after the subcommand name) for `cmd`.
 * Returns CLI_OK, CLI_EUSAGE (message printed), or -1 when --help was given
 * (help printed on stdout).  On CLI_OK, free with cli_options_free().
 */
int cli_parse(const cli_command *cmd, int argc, char **argv, cli_options *o);
void cli_options_free(cli_options *o);

/**
 * Parse a whole command line, argv[0] being the program: the subcommand
 * and its options.  Returns CLI_OK with *cmd set and `o` filled (free it
 * with cli_options_free()), -1 when the line asked for help or the version
 * (printed on cli_stdout()), or an exit status (message printed).  Reads
 * no file and changes nothing.
 */
int cli_parse_command_line(int argc, char **argv, const cli_command **cmd, cli_options *o);

/** The program: parse the command line and run the subcommand. */
int cli_main(int argc, char **argv);

/** Nonzero if option `id` was given on the command line. */
int cli_given(const cli_options *o, cli_opt_id id);

/** Print the subcommand's help on `f`. */
void cli_print_help(const cli_command *cmd, FILE *f);

/** CLI_EUSAGE with "distill <cmd>: <option> is required". */
int cli_require(const cli_command *cmd, const cli_options *o, cli_opt_id id);

/** Apply --threads (if given) to the library. */
void cli_apply_threads(const cli_options *o);

/* ---------------------------------------------------------------- data */

typedef enum cli_data_kind {
    CLI_DATA_FASHION_MNIST = 0,
    CLI_DATA_IDX = 1,
    CLI_DATA_FOLDER = 2,
    CLI_DATA_NONE = 3, /* "--val none" */
    CLI_DATA_LIST = 4  /* a list file of images and labels (folder = its path) */
} cli_data_kind;

/** A parsed --data / --val value. */
typedef struct cli_data_spec {
    int kind;            /* cli_data_kind */
    const char *text;    /* as given, for messages */
    char *buf;           /* owned copy for idx: images, labels */
    const char *images, *labels, *folder;
    int classes;         /* idx: 0 = from the labels */
} cli_data_spec;

/** An image folder or list file (both read with distill_folder_options). */
static inline int cli_data_is_images(const cli_data_spec *spec)
{
    return spec->kind == CLI_DATA_FOLDER || spec->kind == CLI_DATA_LIST;
}

/** Which part of a dataset a command reads. */
typedef enum cli_split {
    CLI_SPLIT_TRAIN = 1, /* Fashion-MNIST's 60000 training images */
    CLI_SPLIT_TEST = 0   /* Fashion-MNIST's 10000 test images */
} cli_split;

/** Parse `text` (option `opt`, e.g. "--data"); CLI_EUSAGE on a bad spec. */
int cli_data_parse(const char *opt, const char *text, cli_data_spec *spec);
void cli_data_spec_free(cli_data_spec *spec);

/**
 * Load the data.  `shape` (C, H, W), when not NULL, is the input shape of
 * the model the data is for: image folders are read at that size (resized
 * bilinearly) and channel count; otherwise --channels and --size decide.
 * `limit` > 0 keeps the first `limit` samples.
 */
int cli_data_load(const cli_data_spec *spec, cli_split split, const int64_t *shape,
                  const cli_options *o, int64_t limit, distill_dataset **out);

/** A new handle on the first `limit` samples of ds (all of them if limit <= 0). */
int cli_data_view(const cli_data_spec *spec, const distill_dataset *ds, int64_t limit,
                  distill_dataset **out);

/** Mean/std normalization for data of kind `spec` (and --mean/--std). */
typedef struct cli_norm {
    int count;
    float mean[4], std[4];
} cli_norm;

int cli_norm_get(const cli_data_spec *spec, const cli_options *o, cli_norm *norm);

/* ---------------------------------------------------------------- metadata */

/**
 * The default of --mean/--std from the models a command runs: unless the
 * command line gives --mean or --std, the normalization the models record
 * replaces *norm (the data's default from cli_norm_get).  Models that
 * record none are skipped; two that record different ones are a usage
 * error naming both.  whats[i] names models[i] in messages.
 */
int cli_norm_from_models(const cli_options *o, int n, distill_model *const *models,
                         const char *const *whats, cli_norm *norm);

/**
 * Refuse data whose class names differ from those m records (both named,
 * in the model's order), unless --allow-mismatch; data or a model without
 * names, or with another class count (cli_check_fit's), pass.
 */
int cli_check_names(const char *what, const distill_model *m, const char *data_what,
                    const distill_dataset *ds, const cli_options *o);

/** How a model was made, for its provenance. */
typedef struct cli_provenance {
    const char *command;      /* "distill train" */
    const char *options_json; /* the run's resolved options, a JSON object */
    uint64_t seed;
} cli_provenance;

/**
 * Record in m (the model a run trained on `train`) what it was made for and
 * how: the data's shape, the normalization (none recorded as mean 0, std
 * 1), the class names (the data's, else those `names_from` records, e.g.
 * the teacher's; may be NULL) and the provenance (library version, p, the
 * data's fingerprint).  Other entries of m stay.
 */
int cli_describe_model(distill_model *m, const distill_dataset *train, const cli_norm *norm,
                       const distill_model *names_from, const cli_provenance *p);

/** The metadata of m, one "key value" line each, after a "metadata:" line. */
void cli_print_metadata(const distill_model *m, FILE *f);

/* ---------------------------------------------------------------- models */

/** Nonzero if `spec` names an existing file (rather than a zoo model). */
int cli_model_is_file(const char *spec);
/* Nonzero when path ends in ".onnx": read and written as ONNX. */
int cli_is_onnx_path(const char *path);
/* Write m to path: ONNX for a .onnx path, else the libdistill model format;
 * a failure is reported as "<opt> <path>: ...". */
int cli_model_write(const char *opt, const distill_model *m, const char *path);

/**
 * Open a model: load `spec` if it is a file, else build the zoo model of
 * that name with `zoo` (NULL: the zoo's defaults).  `opt` names the option
 * for messages ("--model").
 */
int cli_model_open(const char *opt, const char *spec, const distill_zoo_options *zoo,
                   distill_model **out);

/** Logits per sample of the model's output, or 0 if it is not a vector. */
int cli_model_classes(const distill_model *m);

/** The model's per-image input shape; CLI_ERUNTIME unless it is (C, H, W). */
int cli_model_input_shape(const char *what, const distill_model *m, int64_t shape[3]);

/**
 * Check that data fits a model: the same per-image shape after the
 * transforms of --resize, --center-crop and, when `training`,
 * --random-resized-crop (see cli_transformed_dims) and, when check_classes
 * is set, the same number of classes.  `what` names the model ("teacher")
 * and `data_what` the data ("data", "validation data") in messages.
 */
int cli_check_fit(const char *what, const distill_model *m, const char *data_what,
                  const distill_dataset *ds, int check_classes, const cli_options *o,
                  int training);

/**
 * The per-sample shape of ds's batches under the command line's
 * transforms: training batches take --random-resized-crop when given, else
 * --resize and --center-crop; evaluation batches take --resize and
 * --center-crop.
 */
int cli_transformed_dims(const cli_options *o, const distill_dataset *ds, int training,
                         int64_t dims[3]);

/** Nonzero when the command line has a transform that changes the size. */
int cli_has_size_transform(const cli_options *o);

/* ---------------------------------------------------------------- training log */

#define CLI_LOG_EVERY_DEFAULT 50

/** The --log FILE of a training command (log.c): JSON lines, each flushed. */
typedef struct cli_log {
    FILE *f;          /* NULL: no log */
    const char *path;
    int every;        /* steps between "step" lines */
    int failed;       /* a write failed (reported once); nothing more is written */
    double t0;
    double inv_rate_sum; /* the step rates since the last "step" line */
    int rate_steps;
} cli_log;

/**
 * Open o->logs[0] (if --log was given; else l stays off and every call is a
 * no-op) and write the "start" line: the command, the library version,
 * `model` (the --model or --student), the teachers, losses, data, and t's
 * epochs, batch, lr and seed.  Appends with --resume, else truncates.
 * Wiring a command: cli_log_open() once its trainer options are known, then
 * cli_progress.log = &log, and cli_log_close() with the command's status.
 */
int cli_log_open(cli_log *l, const cli_command *cmd, const cli_options *o, const char *model,
                 const distill_trainer_options *t);
/** Write a "step" line (every l->every steps) or an "epoch" line; from cli_progress_cb. */
void cli_log_progress(cli_log *l, const distill_progress *p);
/** Write the "end" line (status: a CLI_* exit status) and close.  Accepts a closed log. */
void cli_log_close(cli_log *l, int status, int64_t steps);

/** A --log file read back (logread.c), for the report's training curves. */
#define CLI_LOGREAD_MAX_TERMS 8

typedef struct cli_logread_point {
    int epoch_line;       /* an "epoch" line (val_accuracy set), else a "step" line */
    double step, epoch, loss, lr, val_accuracy, images_per_sec; /* NAN when absent */
    double terms[CLI_LOGREAD_MAX_TERMS]; /* by cli_logread.term_names; NAN when absent */
} cli_logread_point;

typedef struct cli_logread {
    const char *path;
    cli_logread_point *points; /* in file order (owned) */
    int n, cap;
    int n_terms;
    char term_names[CLI_LOGREAD_MAX_TERMS][48];
    int runs;                  /* "start" lines: more than one after a --resume */
    int bad_lines;             /* lines skipped (a run killed mid-write leaves one) */
    /* the first "start" line; empty strings and NAN when the log has none */
    char command[32], model[256], data[256], output[256], version[32], losses[512];
    double seed, epochs, batch, lr;
    char status[16];           /* of the last "end" line; "" when the run never ended */
} cli_logread;

/** Read a --log file; CLI_ERUNTIME (message printed) for a missing file or no lines. */
int cli_logread_load(const char *path, cli_logread *r);
void cli_logread_free(cli_logread *r);

/* ---------------------------------------------------------------- progress */

typedef struct cli_progress {
    int tty;          /* stderr is a terminal: one line redrawn with \r */
    int quiet;        /* print nothing */
    int line_open;    /* a redrawn line is on screen */
    double last_val;  /* validation accuracy of the last epoch, or -1 */
    double last_loss;
    int epochs_done;
    int print_every;  /* steps between printed progress lines */
    /* the callback runs every step and each call's images_per_sec covers
     * that step alone: a printed line gives the rate over its interval,
     * n_steps / sum(1 / rate) (the batch size is the same for every step) */
    double inv_rate_sum;
    int rate_steps;
    /* checkpoints: written every `ckpt_every` steps (0: never mid-epoch) and
     * at each epoch's end when `ckpt_path` is set, and on an interrupt to
     * `ckpt_path`, else `ckpt_default` */
    const distill_trainer *tr;
    const char *ckpt_path, *ckpt_default;
    int ckpt_every;
    int ckpt_failed;  /* a checkpoint could not be written (message printed) */
    int ckpt_saved;   /* the interrupt's checkpoint was written */
    const char *ckpt_written; /* where the interrupt's checkpoint went */
    /* several students: each one's last loss and validation accuracy */
    double last_losses[CLI_MAX_LIST], last_vals[CLI_MAX_LIST];
    int n_loss, n_val;
    cli_log *log;     /* the --log of the run, or NULL */
} cli_progress;

void cli_progress_init(cli_progress *p, int quiet);
/** The trainer's progress callback (payload: a cli_progress). */
int cli_progress_cb(const distill_progress *p, void *payload);
/** End a redrawn line, if any. */
void cli_progress_end(cli_progress *p);
/** Steps between progress calls that suits the output. */
int cli_progress_every(const cli_progress *p);

/** Progress of an image folder or list load (distill_folder_options.progress). */
typedef struct cli_load_progress {
    const char *what; /* the --data value */
    int tty, quiet, line_open, printed;
    double start, last;
} cli_load_progress;

void cli_load_progress_init(cli_load_progress *p, const char *what, int quiet);
int cli_load_progress_cb(int stage, int64_t done, int64_t total, void *payload);
/** End a redrawn line, if any. */
void cli_load_progress_end(cli_load_progress *p);

/** Catch SIGINT and SIGTERM: the first one sets a flag; a second one kills. */
void cli_sigint_install(void);
void cli_sigint_restore(void);
int cli_interrupted(void);

/* ---------------------------------------------------------------- JSON */

typedef struct cli_json {
    FILE *f;
    int depth;
    int first[8];
} cli_json;

void cli_json_open(cli_json *j, FILE *f);
void cli_json_close(cli_json *j);
void cli_json_str(cli_json *j, const char *key, const char *value);
void cli_json_num(cli_json *j, const char *key, double value);
void cli_json_int(cli_json *j, const char *key, int64_t value);
void cli_json_bool(cli_json *j, const char *key, int value);
void cli_json_begin_obj(cli_json *j, const char *key);
void cli_json_end_obj(cli_json *j);
void cli_json_begin_arr(cli_json *j, const char *key);
void cli_json_end_arr(cli_json *j);
/** An element of the innermost array: an integer. */
void cli_json_elem_int(cli_json *j, int64_t value);
/** An element of the innermost array: a number (null when not finite). */
void cli_json_elem_num(cli_json *j, double value);
/** An element of the innermost array: a string (null for NULL). */
void cli_json_elem_str(cli_json *j, const char *value);

/* ---------------------------------------------------------------- commands */

int cli_cmd_train(const cli_command *cmd, const cli_options *o);
int cli_cmd_mutual(const cli_command *cmd, const cli_options *o);
int cli_cmd_distill(const cli_command *cmd, const cli_options *o);
int cli_cmd_cache(const cli_command *cmd, const cli_options *o);
int cli_cmd_eval(const cli_command *cmd, const cli_options *o);
int cli_cmd_report(const cli_command *cmd, const cli_options *o);
int cli_cmd_predict(const cli_command *cmd, const cli_options *o);
int cli_cmd_summary(const cli_command *cmd, const cli_options *o);
int cli_cmd_export(const cli_command *cmd, const cli_options *o);

/** The "k = v" time format used in progress lines: "12s", "3m05s", "1h02m". */
void cli_format_duration(double seconds, char *buf, size_t size);

#endif /* DISTILL_CLI_H */

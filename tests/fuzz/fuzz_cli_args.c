/*
 * fuzz_cli_args.c - the `distill` program's command line: the subcommand
 * dispatch (src/cli/commands.c), the option parser (src/cli/options.c), the
 * --data/--val specs and the normalization options (src/cli/data.c).
 *
 * The input is the command line after "distill", one word per line: '\n'
 * separates the words, and a word ends at a NUL byte as a real argument
 * would.  The target parses it as the program does before it runs a
 * subcommand, then takes the steps every subcommand takes first: the data
 * specs of --data and --val, --mean/--std, and each --loss.  Nothing is
 * read or written (a spec naming a folder is only stat()ed), and the
 * program's messages and help go to /dev/null.
 *
 * Checked: a parse gives CLI_OK, CLI_EUSAGE or -1 (help or version), and
 * CLI_ERUNTIME only for out of memory; a parsed line holds only options its
 * subcommand accepts, each value in the range its help states, strings
 * borrowed from argv; a data spec parses to a kind with its parts set, or
 * is a usage error.  ASan and UBSan check the rest.
 */
#include <math.h>

#include "cli.h"
#include "fuzz_common.h"

#define MAX_WORDS 256

static void silence(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    FILE *null = fopen("/dev/null", "w");
    if (!null) {
        perror("fuzz: /dev/null");
        exit(2);
    }
    cli_set_streams(null, null);
}

/* `p` points into one of the words (a value borrowed from argv). */
static int in_argv(const char *p, int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (p >= argv[i] && p <= argv[i] + strlen(argv[i]))
            return 1;
    return 0;
}

static int accepts(const cli_command *cmd, cli_opt_id id)
{
    if (id == OPT_HELP)
        return 1;
    for (const cli_cmd_opt *c = cmd->opts; c->id != OPT_COUNT_; c++)
        if (c->id == id)
            return 1;
    return 0;
}

static void check_string(const cli_options *o, cli_opt_id id, const char *s, int argc,
                         char **argv)
{
    if (cli_given(o, id)) {
        fz_check(s && *s, "a given string option has a non-empty value");
        fz_check(in_argv(s, argc, argv), "a string option is borrowed from argv");
    } else {
        fz_check(s == NULL, "a string option not given is NULL");
    }
}

static void check_options(const cli_command *cmd, const cli_options *o, int argc, char **argv)
{
    for (int id = 0; id < OPT_COUNT_; id++)
        if (cli_given(o, (cli_opt_id)id))
            fz_check(accepts(cmd, (cli_opt_id)id), "only options the subcommand accepts");
    fz_check(o->given >> OPT_COUNT_ == 0, "no unknown option bits");

    check_string(o, OPT_MODEL, o->model, argc, argv);
    check_string(o, OPT_STUDENT, o->student, argc, argv);
    check_string(o, OPT_DATA, o->data, argc, argv);
    check_string(o, OPT_VAL, o->val, argc, argv);
    check_string(o, OPT_OUT, o->out, argc, argv);
    check_string(o, OPT_TEACHER_CACHE, o->teacher_cache, argc, argv);
    check_string(o, OPT_CHECKPOINT, o->checkpoint, argc, argv);
    check_string(o, OPT_RESUME, o->resume, argc, argv);
    if (cli_given(o, OPT_CHECKPOINT_EVERY))
        fz_check(o->checkpoint_every >= 1 && o->checkpoint_every <= 1000000000,
                 "--checkpoint-every in 1..10^9");
    else
        fz_check(o->checkpoint_every == 0, "--checkpoint-every not given is 0");

    fz_check(o->n_teachers >= 0 && o->n_teachers <= CLI_MAX_LIST, "teacher count");
    fz_check((o->n_teachers > 0) == cli_given(o, OPT_TEACHER), "teachers iff --teacher");
    for (int i = 0; i < o->n_teachers; i++)
        fz_check(in_argv(o->teachers[i], argc, argv), "teachers are borrowed from argv");
    fz_check(o->n_losses >= 0 && o->n_losses <= CLI_MAX_LIST, "loss count");
    fz_check((o->n_losses > 0) == cli_given(o, OPT_LOSS), "losses iff --loss");
    for (int i = 0; i < o->n_losses; i++)
        fz_check(in_argv(o->losses[i], argc, argv), "losses are borrowed from argv");

    fz_check(o->n_inputs >= 0 && o->n_inputs < argc, "positional count");
    fz_check(cmd->positionals || o->n_inputs == 0, "positionals only where accepted");
    for (int i = 0; i < o->n_inputs; i++)
        fz_check(in_argv(o->inputs[i], argc, argv), "positionals are borrowed from argv");

    if (cli_given(o, OPT_EPOCHS))
        fz_check(o->epochs >= 1 && o->epochs <= 1000000, "--epochs in 1..1000000");
    if (cli_given(o, OPT_BATCH))
        fz_check(o->batch >= 1 && o->batch <= (1 << 20), "--batch in 1..2^20");
    if (cli_given(o, OPT_THREADS))
        fz_check(o->threads >= 1 && o->threads <= 4096, "--threads in 1..4096");
    if (cli_given(o, OPT_CHANNELS))
        fz_check(o->channels >= 1 && o->channels <= 4, "--channels in 1..4");
    if (cli_given(o, OPT_TOP))
        fz_check(o->top >= 1 && o->top <= 1000, "--top in 1..1000");
    if (cli_given(o, OPT_LIMIT))
        fz_check(o->limit >= 1, "--limit positive");
    if (cli_given(o, OPT_VAL_LIMIT))
        fz_check(o->val_limit >= 1, "--val-limit positive");
    if (cli_given(o, OPT_LR))
        fz_check(isfinite(o->lr) && o->lr >= 0, "--lr finite and non-negative");
    if (cli_given(o, OPT_SIZE))
        fz_check(o->height >= 1 && o->height <= 16384 && o->width >= 1 && o->width <= 16384,
                 "--size in 1..16384 each");
    fz_check(o->augment >= -1 && o->augment <= 1, "augment is -1, 0 or 1");
    if (cli_given(o, OPT_MEAN)) {
        fz_check(o->n_mean >= 1 && o->n_mean <= 4, "--mean has 1 to 4 values");
        for (int c = 0; c < o->n_mean; c++)
            fz_check(isfinite(o->mean[c]), "--mean values are finite floats");
    }
    if (cli_given(o, OPT_STD)) {
        fz_check(o->n_std >= 1 && o->n_std <= 4, "--std has 1 to 4 values");
        for (int c = 0; c < o->n_std; c++)
            fz_check(isfinite(o->std[c]), "--std values are finite floats");
    }
}

/* cli_data_parse() on the value of --data or --val. */
static void check_spec(const char *opt, const char *text, cli_data_spec *spec, int *parsed)
{
    *parsed = 0;
    int rc = cli_data_parse(opt, text, spec);
    fz_check(rc == CLI_OK || rc == CLI_EUSAGE || rc == CLI_ERUNTIME, "a data spec's status");
    if (rc == CLI_OK) {
        *parsed = 1;
        fz_check(spec->text == text, "the spec keeps its text");
        switch (spec->kind) {
        case CLI_DATA_FASHION_MNIST: fz_check(!strcmp(text, "fashion-mnist"), "fashion-mnist"); break;
        case CLI_DATA_NONE: fz_check(!strcmp(opt, "--val"), "only --val may be none"); break;
        case CLI_DATA_IDX:
            fz_check(spec->images && *spec->images, "idx: images named");
            fz_check(!spec->labels || *spec->labels, "idx: labels, if any, named");
            fz_check(spec->classes >= 0 && spec->classes <= 1000000, "idx: classes in range");
            break;
        case CLI_DATA_FOLDER: fz_check(spec->folder == text, "a folder is the text"); break;
        case CLI_DATA_LIST:
            fz_check(spec->folder && *spec->folder, "a list file is named");
            break;
        default: fz_check(0, "a data spec of a known kind");
        }
    }
}

static void after_parse(const cli_command *cmd, const cli_options *o, int argc, char **argv)
{
    check_options(cmd, o, argc, argv);

    cli_data_spec data, val;
    int have_data = 0, have_val = 0;
    memset(&data, 0, sizeof data);
    memset(&val, 0, sizeof val);
    if (o->data)
        check_spec("--data", o->data, &data, &have_data);
    if (o->val)
        check_spec("--val", o->val, &val, &have_val);

    cli_norm norm;
    int rc = cli_norm_get(have_data ? &data : NULL, o, &norm);
    fz_check(rc == CLI_OK || rc == CLI_EUSAGE, "--mean/--std: ok or a usage error");
    if (rc == CLI_OK) {
        fz_check(norm.count >= 0 && norm.count <= 4, "1 to 4 normalization values");
        for (int c = 0; c < norm.count; c++)
            fz_check(norm.std[c] > 0.0f, "normalization std positive");
    }
    cli_data_spec_free(&data);
    cli_data_spec_free(&val);

    for (int i = 0; i < o->n_losses; i++) {
        distill_loss *l = NULL;
        float w = 1.0f;
        if (distill_loss_parse(&l, o->losses[i], &w) == DISTILL_OK)
            distill_loss_free(l);
        else
            fz_check(l == NULL, "a failed loss parse leaves *out NULL");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    silence();
    /* One buffer: "distill\0" then the words, each NUL-terminated. */
    static const char prog[] = "distill";
    char *buf = malloc(sizeof prog + size + 1);
    char **argv = malloc((MAX_WORDS + 2) * sizeof *argv);
    if (!buf || !argv) {
        free(buf);
        free(argv);
        return 0;
    }
    memcpy(buf, prog, sizeof prog);
    char *words = buf + sizeof prog;
    if (size)
        memcpy(words, data, size);
    words[size] = '\0';
    int argc = 0;
    argv[argc++] = buf;
    if (size > 0) {
        char *w = words;
        argv[argc++] = w;
        for (size_t i = 0; i < size && argc <= MAX_WORDS; i++)
            if (words[i] == '\n') {
                words[i] = '\0';
                argv[argc++] = &words[i + 1];
            }
    }
    argv[argc] = NULL;

    const cli_command *cmd = (const cli_command *)&cmd; /* must be overwritten */
    cli_options o;
    int rc = cli_parse_command_line(argc, argv, &cmd, &o);
    fz_check(rc == CLI_OK || rc == CLI_EUSAGE || rc == CLI_ERUNTIME || rc == -1,
             "a command line's status");
    if (rc == CLI_OK) {
        fz_check(cmd && cmd->name && cmd->run, "a parsed line names its subcommand");
        fz_check(argc >= 2 && !strcmp(cmd->name, argv[1]), "the subcommand is the first word");
        after_parse(cmd, &o, argc, argv);
        cli_options_free(&o);
    } else {
        fz_check(cmd == NULL, "no subcommand after a failed parse");
    }
    free(argv);
    free(buf);
    return 0;
}

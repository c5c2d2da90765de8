/*
 * commands.c - the `distill` program: subcommand table and dispatch.
 *
 *     distill train    --model resnet20 --data fashion-mnist --epochs 3 --out teacher.dstl
 *     distill distill  --teacher teacher.dstl --student resnet8 --out student.dstl ...
 *     distill mutual   --student resnet8 --student resnet8 --out a.dstl --out b.dstl ...
 *     distill cache    --teacher teacher.dstl --data fashion-mnist --out teacher.cache
 *     distill eval     --model student.dstl --data fashion-mnist
 *     distill report   --teacher teacher.dstl --student student.dstl --data fashion-mnist
 *     distill predict  --model student.dstl --data fashion-mnist shoe.png
 *     distill summary  --model resnet8
 *     distill export   --model student.dstl --out student.onnx
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define END_OPTS {OPT_COUNT_, NULL}

/* Options shared by the two training commands, after their own. */
#define TRAINING_OPTS                                                          \
    {OPT_DATA, NULL}, {OPT_VAL, NULL}, {OPT_OUT, NULL}, {OPT_EPOCHS, NULL},    \
    {OPT_BATCH, NULL}, {OPT_LR, NULL}, {OPT_SEED, NULL}, {OPT_THREADS, NULL},  \
    {OPT_LIMIT, "use only the first N training samples"}, {OPT_VAL_LIMIT, NULL}, \
    {OPT_AUGMENT, NULL}, {OPT_NO_AUGMENT, NULL}, {OPT_MEAN, NULL}, {OPT_STD, NULL}, \
    {OPT_RESIZE, NULL}, {OPT_CENTER_CROP, NULL}, {OPT_RRC, NULL}, {OPT_SCALE, NULL},    \
    {OPT_RATIO, NULL}, {OPT_MEMORY, NULL}, {OPT_WORKERS, NULL}, {OPT_CHECKPOINT, NULL},       \
    {OPT_CHECKPOINT_EVERY, NULL}, {OPT_RESUME, NULL}, {OPT_ALLOW_MISMATCH, NULL},              \
    {OPT_LOG, NULL}, {OPT_LOG_EVERY, NULL}

static const cli_cmd_opt TRAIN_OPTS[] = {
    {OPT_MODEL, "the model to train: a zoo name (a new model sized for the data) or a model "
                "file to continue from"},
    {OPT_LOSS, "a loss term, repeatable (default ce): ce or ce:smoothing=S, weight=W"},
    TRAINING_OPTS,
    {OPT_CHANNELS, NULL}, {OPT_SIZE, NULL}, {OPT_JSON, NULL}, {OPT_QUIET, NULL},
    END_OPTS};

static const cli_cmd_opt DISTILL_OPTS[] = {
    {OPT_TEACHER, NULL},
    {OPT_TEACHER_CACHE, "a teacher cache made by `distill cache`, instead of --teacher: no "
                        "teacher runs during training. It must come from the same --data, "
                        "--limit, augmentation and --mean/--std; it holds logits only, so "
                        "feature losses need --teacher"},
    {OPT_STUDENT, NULL},
    {OPT_LOSS, "a loss term, repeatable (default kd:T=4,alpha=0.9): ce[:smoothing=S], "
               "kd:T=4,alpha=0.9, dkd:T=4,alpha=1,beta=8, fitnets:student=NODE,teacher=NODE, "
               "at:...,p=2, sp:..., rkd:...,dist=25,angle=50, pkt:...; feature losses name a "
               "student node and a teacher node (see `distill summary`); any term may add "
               "weight=W"},
    TRAINING_OPTS,
    {OPT_UNLABELLED, NULL},
    {OPT_CHANNELS, "with --teacher-cache and a zoo student: read image folders with C channels "
                   "(default 3; give the teacher's). With --teacher, folders are read with the "
                   "teacher's channels and a different C is refused"},
    {OPT_SIZE, "read image folders at HxW (default: the teacher's input size, read from the "
               "teacher; with --teacher-cache and a zoo student, the first image's size). "
               "The transforms must then give the teacher's size, or the run is refused"},
    {OPT_JSON, NULL}, {OPT_QUIET, NULL},
    END_OPTS};

static const cli_cmd_opt MUTUAL_OPTS[] = {
    {OPT_STUDENT, "a student: a zoo name (sized for the teacher, else the data; student k "
                  "from 0 is initialized with --seed + k) or a model file to continue from; "
                  "give it two or more times"},
    {OPT_TEACHER, "optional: a frozen teacher model file that every student also learns from "
                  "(several: an ensemble)"},
    {OPT_LOSS, "a loss term for every student, repeatable (default ce, or "
               "kd:T=4,alpha=0.9 with --teacher): as in `distill distill --help`"},
    {OPT_MUTUAL_WEIGHT, NULL}, {OPT_MUTUAL_T, NULL},
    {OPT_OUT, "where to write a trained student, once per --student and in the same order "
              "(written at the end, atomically)"},
    {OPT_DATA, NULL}, {OPT_VAL, NULL}, {OPT_EPOCHS, NULL},
    {OPT_BATCH, NULL}, {OPT_LR, NULL}, {OPT_SEED, NULL}, {OPT_THREADS, NULL},
    {OPT_LIMIT, "use only the first N training samples"}, {OPT_VAL_LIMIT, NULL},
    {OPT_AUGMENT, NULL}, {OPT_NO_AUGMENT, NULL}, {OPT_MEAN, NULL}, {OPT_STD, NULL},
    {OPT_RESIZE, NULL}, {OPT_CENTER_CROP, NULL}, {OPT_RRC, NULL}, {OPT_SCALE, NULL},
    {OPT_RATIO, NULL}, {OPT_MEMORY, NULL}, {OPT_WORKERS, NULL}, {OPT_CHECKPOINT, NULL},
    {OPT_CHECKPOINT_EVERY, NULL}, {OPT_RESUME, NULL}, {OPT_ALLOW_MISMATCH, NULL},
    {OPT_LOG, NULL}, {OPT_LOG_EVERY, NULL},
    {OPT_CHANNELS, NULL}, {OPT_SIZE, NULL}, {OPT_JSON, NULL}, {OPT_QUIET, NULL},
    END_OPTS};

static const cli_cmd_opt CACHE_OPTS[] = {
    {OPT_TEACHER, "a teacher model file; give several to cache their ensemble (equal weights)"},
    {OPT_DATA, "the data whose training split is cached (fashion-mnist: its 60000 training "
               "images; image folders are read at the teacher's input size)"},
    {OPT_OUT, "where to write the cache (atomically)"},
    {OPT_LIMIT, "cache only the first N training samples (distill with the same --limit)"},
    {OPT_AUGMENT, "cache every view of the augmentation `distill distill` uses by default: each "
                  "crop of the 2-pixel zero-padded image, with and without a horizontal flip "
                  "(the default)"},
    {OPT_NO_AUGMENT, "cache the images as they are, for `distill distill --no-augment`"},
    {OPT_MEAN, NULL}, {OPT_STD, NULL},
    {OPT_RESIZE, NULL}, {OPT_CENTER_CROP, NULL},
    {OPT_RRC, "refused: a RandomResizedCrop's boxes cannot be enumerated, so cannot be cached"},
    {OPT_SIZE, "read image folders at HxW (default: the teacher's input size)"},
    {OPT_MEMORY, NULL}, {OPT_WORKERS, NULL},
    {OPT_BATCH, "the teacher's batch size while building (default 256)"},
    {OPT_THREADS, NULL}, {OPT_JSON, NULL},
    {OPT_QUIET, "print nothing on stderr before building"}, {OPT_ALLOW_MISMATCH, NULL},
    END_OPTS};

static const cli_cmd_opt EVAL_OPTS[] = {
    {OPT_MODEL, NULL},
    {OPT_DATA, "the data to evaluate on (fashion-mnist: its 10000 test images)"},
    {OPT_LIMIT, NULL}, {OPT_BATCH, "batch size (default 256)"}, {OPT_THREADS, NULL},
    {OPT_MEAN, NULL}, {OPT_STD, NULL}, {OPT_RESIZE, NULL}, {OPT_CENTER_CROP, NULL},
    {OPT_SIZE, "read image folders at HxW (default: the model's input size)"},
    {OPT_MEMORY, NULL}, {OPT_WORKERS, NULL}, {OPT_CONFUSION, NULL}, {OPT_JSON, NULL},
    {OPT_ALLOW_MISMATCH, NULL},
    END_OPTS};

static const cli_cmd_opt REPORT_OPTS[] = {
    {OPT_TEACHER, "the teacher: a model file or a zoo name"},
    {OPT_STUDENT, "the student: a model file or a zoo name"},
    {OPT_DATA, "the data to measure accuracy and agreement on (fashion-mnist: its test images)"},
    {OPT_LIMIT, NULL}, {OPT_BATCH, "the large batch of the latency and throughput measures "
                                   "(default 128)"},
    {OPT_THREADS, NULL}, {OPT_MEAN, NULL}, {OPT_STD, NULL}, {OPT_RESIZE, NULL},
    {OPT_CENTER_CROP, NULL},
    {OPT_SIZE, "read image folders at HxW (default: the teacher's input size)"},
    {OPT_MEMORY, NULL}, {OPT_WORKERS, NULL}, {OPT_JSON, NULL}, {OPT_ALLOW_MISMATCH, NULL},
    {OPT_HTML, "also write the report as one self-contained HTML page: the table, accuracy "
               "against latency and size with the Pareto front, per-class accuracy, the "
               "student's confusion matrix, and the training curves of each --log"},
    {OPT_LOG, "a training log written by `distill train|distill --log FILE`, repeatable: its "
              "loss terms, learning rate and validation accuracy are drawn in the --html page"},
    END_OPTS};

static const cli_cmd_opt PREDICT_OPTS[] = {
    {OPT_MODEL, NULL},
    {OPT_DATA, "optional: the data the model was trained on, for class names and "
               "normalization when the model file records none (fashion-mnist, or a folder); "
               "names that differ from the model's are refused"},
    {OPT_TOP, NULL}, {OPT_THREADS, NULL}, {OPT_MEAN, NULL}, {OPT_STD, NULL},
    {OPT_ALLOW_MISMATCH, NULL},
    END_OPTS};

static const cli_cmd_opt SUMMARY_OPTS[] = {
    {OPT_MODEL, "a model file or a zoo name (listed by `distill --help`)"},
    {OPT_CHANNELS, "input channels of a zoo model (default 1)"},
    {OPT_SIZE, "input size of a zoo model (default 28x28)"},
    {OPT_CLASSES, NULL},
    {OPT_WIDTH, NULL},
    END_OPTS};

static const cli_cmd_opt EXPORT_OPTS[] = {
    {OPT_MODEL, "a model file (libdistill or .onnx) or a zoo name (a new, untrained model)"},
    {OPT_OUT, "the file to write: ONNX (opset 13) when it ends in .onnx, else the libdistill "
              "model format (written atomically)"},
    {OPT_CHANNELS, "input channels of a zoo model (default 1)"},
    {OPT_SIZE, "input size of a zoo model (default 28x28)"},
    {OPT_CLASSES, NULL},
    {OPT_WIDTH, NULL},
    {OPT_NO_METADATA, "leave the model's metadata out (its provenance names the data's paths)"},
    END_OPTS};

static const cli_command COMMANDS[] = {
    {"train", "Train a model on labelled data (supervised, cross-entropy).",
     "--model M --data D --out FILE [options]",
     "Validation accuracy is printed after every epoch. The model file records the data's "
     "shape, the normalization, the class names and how it was made (see `distill summary`). "
     "Ctrl-C (SIGINT) or SIGTERM stops at the "
     "next step: the training state is written to the --checkpoint file (default OUT.ckpt) and "
     "the program exits with status 130; run the same command with --resume FILE to continue. "
     "The output file is written only when training completes.",
     TRAIN_OPTS, 0,
     "  distill train --model resnet20 --data fashion-mnist --epochs 3 --out teacher.dstl",
     cli_cmd_train, 0},
    {"distill", "Train a student from one or more teachers (knowledge distillation).",
     "(--teacher T [--teacher T2 ...] | --teacher-cache FILE)\n"
     "                       --student S --data D --out FILE [options]",
     "A zoo student is built for the teacher's input size and classes. Several --loss options "
     "add up; feature losses tap named nodes of both models (an adapter is trained when the "
     "shapes differ). The default --mean/--std are the ones the teacher records, and the "
     "student records them with the class names and how it was made. With --teacher-cache "
     "the teacher's logits are read from a file made by "
     "`distill cache`, and a step costs only the student's. Ctrl-C (SIGINT) or SIGTERM stops "
     "at the next step, writes the --checkpoint file (default OUT.ckpt) and exits with status "
     "130; the same command with --resume FILE continues. The output file is written only when "
     "training completes.",
     DISTILL_OPTS, 0,
     "  distill distill --teacher teacher.dstl --student resnet8 --loss kd:T=4,alpha=0.9 \\\n"
     "      --loss fitnets:student=layer2,teacher=layer3,weight=0.5 \\\n"
     "      --data fashion-mnist --epochs 3 --out student.dstl\n"
     "  distill distill --teacher-cache teacher.cache --student resnet8 \\\n"
     "      --data fashion-mnist --epochs 3 --out student.dstl",
     cli_cmd_distill, 0},
    {"mutual", "Train two or more students together, each learning from the others (DML).",
     "--student S1 --student S2 [...] [--teacher T] --data D\n"
     "                      --out FILE1 --out FILE2 [...] [options]",
     "Deep mutual learning (Zhang et al., 2018): on every batch each student's loss is its "
     "--loss terms (default ce; with --teacher, kd:T=4,alpha=0.9) plus --mutual-weight times "
     "T^2 times the mean KL divergence from the other students' outputs at temperature T "
     "(--mutual-temperature), those outputs taken as constants. All students step together "
     "with the same schedule. The validation accuracy of every student is printed after each "
     "epoch. Ctrl-C (SIGINT) or SIGTERM stops at the next step, writes the --checkpoint file "
     "(default FILE1.ckpt, holding every student) and exits with status 130; the same command "
     "with --resume FILE continues. The output files are written only when training completes.",
     MUTUAL_OPTS, 0,
     "  distill mutual --student resnet8 --student mobilenetv2 --data fashion-mnist \\\n"
     "      --epochs 3 --out resnet8.dstl --out mobilenetv2.dstl\n"
     "  distill mutual --student resnet8 --student resnet8 --teacher teacher.dstl \\\n"
     "      --data fashion-mnist --out a.dstl --out b.dstl",
     cli_cmd_mutual, 1},
    {"cache", "Store a teacher's logits for every augmented view of the data.",
     "--teacher T [--teacher T2 ...] --data D --out FILE [options]",
     "Every training sample is run through the teacher under each view the augmentation can "
     "produce: (2P+1)^2 crop offsets for the crop padding P = 2, times 2 with flips, so 50 "
     "views per sample (1 with --no-augment); Fashion-MNIST's 60000 images give a 120 MB file. "
     "`distill distill --teacher-cache FILE` then trains a student without running the "
     "teacher. Give both commands the same --data, --limit, augmentation and --mean/--std: "
     "their defaults match, and a mismatch is refused when training starts.",
     CACHE_OPTS, 0,
     "  distill cache --teacher teacher.dstl --data fashion-mnist --out teacher.cache\n"
     "  distill distill --teacher-cache teacher.cache --student resnet8 \\\n"
     "      --data fashion-mnist --epochs 3 --out student.dstl",
     cli_cmd_cache, 0},
    {"eval", "Evaluate a model: top-1 and top-5 accuracy, cross-entropy, sample count.",
     "--model M --data D [options]",
     "The data is normalized as the model file records unless --mean/--std are given. Data "
     "whose channels or class names differ from the model's is refused, naming both, unless "
     "--allow-mismatch is given.",
     EVAL_OPTS, 0,
     "  distill eval --model student.dstl --data fashion-mnist --confusion", cli_cmd_eval, 0},
    {"report", "Compare a teacher and a student: size, cost, speed, accuracy, agreement.",
     "--teacher T --student S --data D [options]",
     "Latency is the median of repeated inference runs at batch 1 and at the large batch, with "
     "the current thread count; ratios are student / teacher. The data is normalized as the "
     "model files record (they must agree) unless --mean/--std are given. With labelled data "
     "the report adds each model's accuracy per class and the student's confusion matrix (one "
     "more pass of each model over the data). --html FILE also writes the report as one page "
     "that needs nothing else to be viewed: charts drawn as inline SVG, and the training "
     "curves of each --log given.",
     REPORT_OPTS, 0,
     "  distill report --teacher teacher.dstl --student student.dstl --data fashion-mnist\n"
     "  distill report --teacher teacher.dstl --student student.dstl --data fashion-mnist \\\n"
     "      --html report.html --log teacher.log --log student.log",
     cli_cmd_report, 0},
    {"predict", "Classify PNG or JPEG images: prints \"file: class (probability)\" for each.",
     "--model M [options] IMAGE.png...",
     "Images are converted to the model's channel count and resized (bilinear) to its input "
     "size, then normalized as the model file records (`distill train` and `distill distill` "
     "record it), and the class names it records are printed. For a model that records "
     "neither, --data gives them (and its default normalization); without it, classes are "
     "printed as numbers and no normalization is applied unless --mean/--std say so.",
     PREDICT_OPTS, 1,
     "  distill predict --model student.dstl --data fashion-mnist shoe.png shirt.png",
     cli_cmd_predict, 0},
    {"summary", "Print a model's layers, output shapes, parameters and multiply-adds.",
     "--model M|ZOO-NAME", "A model file's metadata (normalization, class names, provenance) "
     "follows the table.", SUMMARY_OPTS, 0,
     "  distill summary --model resnet8\n"
     "  distill summary --model resnet18 --classes 1000 --channels 3 --size 224x224",
     cli_cmd_summary, 0},
    {"export", "Convert a model: to ONNX for other runtimes, or from ONNX to a model file.",
     "--model M --out FILE", "Models ending in .onnx are read as ONNX by every command. "
     "Operators the model cannot express are refused with the ONNX node's name and the reason.",
     EXPORT_OPTS, 0,
     "  distill export --model student.dstl --out student.onnx\n"
     "  distill export --model teacher.onnx --out teacher.dstl\n"
     "  distill export --model mobilenet_v2 --channels 3 --size 64x64 --out mnv2.onnx",
     cli_cmd_export, 0},
};

#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void print_zoo(FILE *f)
{
    fprintf(f, "Zoo models:");
    for (const char *const *n = distill_zoo_names(); n && *n; n++)
        fprintf(f, " %s", *n);
    fputc('\n', f);
}

static void print_main_help(FILE *f)
{
    fprintf(f, "Usage: distill COMMAND [options]\n"
               "       distill COMMAND --help\n"
               "       distill --version\n\n"
               "Knowledge distillation of neural networks on the CPU.\n\nCommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s%s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fputc('\n', f);
    print_zoo(f);
    fprintf(f, "\nData (--data): fashion-mnist (from $FASHION_MNIST_DIR, else "
               "/usr/share/datasets/fashion-mnist),\n"
               "  idx:IMAGES,LABELS[,CLASSES] (IDX files, optionally gzipped), a folder of "
               "PNG/JPEG\n  images with one sub-folder per class, or a list file: list:FILE or a "
               "FILE ending\n  in .csv/.txt/.lst, with lines \"path,label\" (CSV, optional "
               "header path,label)\n  or \"path label\"; paths relative to the list's folder, "
               "labels class names or\n  numbers; '#' starts a comment line.\n"
               "\nModel files written by train and distill record the data's shape, its\n"
               "  normalization, the class names and how they were made (`distill summary`\n"
               "  prints them); predict, eval and report normalize as the model records and\n"
               "  refuse data of other channels or class names unless --allow-mismatch.\n"
               "\nExit status: 0 success, 1 error, 2 usage error, 130 interrupted.\n");
}

static void print_version(FILE *f)
{
    fprintf(f, "distill %s (libdistill %s)\n", DISTILL_VERSION_STRING, distill_version());
}

static const cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(COMMANDS[i].name, name) == 0)
            return &COMMANDS[i];
    return NULL;
}

/* `distill help COMMAND` */
static int print_command_help(const char *name)
{
    const cli_command *cmd = find_command(name);
    if (!cmd)
        return cli_fail(CLI_EUSAGE, "unknown command '%s' (see 'distill --help')", name);
    cli_print_help(cmd, cli_stdout());
    return -1;
}

int cli_parse_command_line(int argc, char **argv, const cli_command **cmd, cli_options *o)
{
    *cmd = NULL;
    if (argc < 2)
        return cli_fail(CLI_EUSAGE, "no command given (see 'distill --help')");
    const char *a = argv[1];
    if (strcmp(a, "help") == 0 && argc > 2)
        return print_command_help(argv[2]);
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0) {
        print_main_help(cli_stdout());
        return -1;
    }
    if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
        print_version(cli_stdout());
        return -1;
    }
    const cli_command *c = find_command(a);
    if (!c) {
        if (a[0] == '-')
            return cli_fail(CLI_EUSAGE, "unknown option '%s' (see 'distill --help')", a);
        return cli_fail(CLI_EUSAGE, "unknown command '%s' (see 'distill --help')", a);
    }
    int rc = cli_parse(c, argc - 1, argv + 1, o);
    if (rc == CLI_OK)
        *cmd = c;
    return rc;
}

int cli_main(int argc, char **argv)
{
    const cli_command *cmd;
    cli_options o;
    int rc = cli_parse_command_line(argc, argv, &cmd, &o);
    if (rc == -1)
        return CLI_OK; /* help or version printed */
    if (rc)
        return rc;
    rc = cmd->run(cmd, &o);
    cli_options_free(&o);
    return rc;
}

/*
 * fuzz_checkpoint.c - distill_trainer_load_checkpoint() on any file.
 *
 * The bytes are written to a scratch file and loaded into one fixed
 * trainer (fuzz_common.h: a small student with BatchNorm, a teacher, KD
 * and a FitNets term with a 1x1 conv adapter), made once per process.
 * Every input is tried as it is and, when its CRCs are wrong, once more
 * with the CRCs of the checkpoint and of the models nested in it made
 * valid, so that the mutations reach the parsers behind the checksums.
 *
 * Promised (include/distill/trainer.h): a corrupt file or one of another
 * architecture is DISTILL_EFORMAT (DISTILL_EVERSION for a newer format)
 * and leaves the trainer unchanged - checked here on the student's
 * parameter and statistics blocks and the step count, and with
 * FUZZ_STRICT=1 on the whole state (optimizers and adapters included), by
 * saving a checkpoint before and after the failed load and comparing them
 * (two saves per input: slow outside a memory file system).  A checkpoint
 * that loads is followed by one training step, which must succeed or
 * report non-finite values (a file may hold NaN weights).
 */
#include "fuzz_common.h"

static fz_trainer fx;
static distill_tensor *batch;
static int32_t labels[FZ_BATCH];
static char path[600], before[600], after[600];
static float *snap_p, *snap_s;

static void setup(void)
{
    if (fx.tr)
        return;
    if (fz_trainer_make(&fx, 1) != DISTILL_OK || fz_batch(&batch, labels) != DISTILL_OK) {
        fprintf(stderr, "fuzz_checkpoint: cannot build the fixture: %s\n", distill_last_error());
        exit(2);
    }
    snprintf(path, sizeof path, "%s/ckpt", fz_dir());
    snprintf(before, sizeof before, "%s/before", fz_dir());
    snprintf(after, sizeof after, "%s/after", fz_dir());
    size_t np = 0, ns = 0;
    distill_model_param_block(fx.student, &np);
    distill_model_stats_block(fx.student, &ns);
    snap_p = malloc((np ? np : 1) * sizeof(float));
    snap_s = malloc((ns ? ns : 1) * sizeof(float));
    if (!snap_p || !snap_s)
        exit(2);
}

static void try_load(const uint8_t *data, size_t size)
{
    fz_write_file(path, data, size);
    size_t np = 0, ns = 0;
    const float *p = distill_model_param_block(fx.student, &np);
    const float *s = distill_model_stats_block(fx.student, &ns);
    memcpy(snap_p, p, np * sizeof(float));
    memcpy(snap_s, s, ns * sizeof(float));
    int64_t steps = distill_trainer_steps_done(fx.tr);
    if (fz_strict() && distill_trainer_save_checkpoint(fx.tr, before) != DISTILL_OK)
        exit(2);

    int rc = distill_trainer_load_checkpoint(fx.tr, path);
    if (rc != DISTILL_OK) {
        if (fz_strict()) {
            if (distill_trainer_save_checkpoint(fx.tr, after) != DISTILL_OK)
                exit(2);
            size_t n1 = 0, n2 = 0;
            unsigned char *b1 = fz_read_file(before, &n1), *b2 = fz_read_file(after, &n2);
            fz_suspect(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0,
                       "a failed checkpoint load leaves the whole trainer state unchanged");
            free(b1);
            free(b2);
        }
        fz_check(rc == DISTILL_EFORMAT || rc == DISTILL_EVERSION || rc == DISTILL_ENOMEM,
                 "a bad checkpoint gives DISTILL_EFORMAT or DISTILL_EVERSION");
        fz_check_error_set(rc);
        fz_check(memcmp(snap_p, p, np * sizeof(float)) == 0 &&
                     memcmp(snap_s, s, ns * sizeof(float)) == 0,
                 "a failed checkpoint load leaves the weights unchanged");
        fz_check(distill_trainer_steps_done(fx.tr) == steps,
                 "a failed checkpoint load leaves the step count unchanged");
        return;
    }
    double loss = 0;
    rc = distill_trainer_step(fx.tr, batch, labels, &loss);
    fz_suspect(rc == DISTILL_OK || rc == DISTILL_ENONFINITE,
               "a training step after a successful checkpoint load");
    if (rc)
        fz_check_error_set(rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    try_load(data, size);
    if (size >= 16 && memcmp(data, "DSTLCKPT", 8) == 0) {
        unsigned char *copy = malloc(size);
        if (!copy)
            return 0;
        memcpy(copy, data, size);
        if (fz_fix_nested(copy, size, "DSTLMODL"))
            try_load(copy, size);
        free(copy);
    }
    return 0;
}

/*
 * test_resume.c - a run stopped after k steps, checkpointed, and resumed in
 * another process ends bit for bit where a run of N steps straight ends.
 *
 * For each setup the test trains N steps straight (options.max_steps = N),
 * then, in a fresh trainer over a fresh model, k steps (max_steps = k) and
 * saves a checkpoint.  It then runs this same program again (fork + exec,
 * argv[1] = "--resume-child"), which builds the model and the trainer from
 * scratch, loads the checkpoint and fits with max_steps = N, and writes the
 * parameter and BatchNorm statistics blocks and a checkpoint of its own.
 * Both must equal the straight run's byte for byte; the checkpoints hold the
 * optimizer state, the data position and any adapters too.
 *
 * k is in the middle of an epoch and at an epoch boundary.  The setups:
 *   ce       zoo "cnn" at half width (BatchNorm, dropout), the default loss
 *   kd       + a "cnn" teacher, KD (T = 4, alpha = 0.9)
 *   fitnets  + CE and a FitNets hint from the student's "pool2" (32
 *            channels) to the teacher's (64): a trained 1x1 conv + BN adapter
 * on the first 512 Fashion-MNIST training images (a synthetic stand-in when
 * the dataset is not installed), batch 64, crop + flip augmentation, 2
 * epochs of 8 steps.
 */
#define _XOPEN_SOURCE 700 /* fork, execv, waitpid, readlink */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "distill.h"

#define SUBSET 512
#define BATCH 64
#define EPOCHS 2
#define PER_EPOCH (SUBSET / BATCH)
#define N_STEPS 12

enum { CFG_CE, CFG_KD, CFG_FITNETS, CFG_COUNT };
static const char *const cfg_names[CFG_COUNT] = {"ce", "kd", "fitnets"};

/* ------------------------------------------------------------ setups
 * Shared by the test and the child process, so they return statuses
 * instead of asserting. */

static uint64_t hash64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int load_data(distill_dataset **out)
{
    distill_dataset *all;
    int rc = distill_dataset_fashion_mnist(&all, NULL, 1);
    if (rc == DISTILL_OK) {
        rc = distill_dataset_subset(out, all, 0, SUBSET);
        distill_dataset_free(all);
        return rc;
    }
    /* ten classes told apart by where a bright bar is, over noise */
    float *img = malloc((size_t)SUBSET * 784 * sizeof *img);
    int32_t *lab = malloc((size_t)SUBSET * sizeof *lab);
    if (!img || !lab) {
        free(img);
        free(lab);
        return DISTILL_ENOMEM;
    }
    for (int i = 0; i < SUBSET; i++) {
        lab[i] = (int32_t)(hash64((uint64_t)i) % 10);
        for (int j = 0; j < 784; j++) {
            float v = (float)(hash64((uint64_t)i * 784 + (uint64_t)j + 1) >> 40) / 16777216.0f;
            img[i * 784 + j] = 0.3f * v + ((j % 28) / 3 == lab[i] ? 0.6f : 0.0f);
        }
    }
    int64_t dims[3] = {1, 28, 28};
    rc = distill_dataset_from_memory(out, SUBSET, dims, img, lab, 10, DISTILL_MEMORY_COPY);
    free(img);
    free(lab);
    return rc;
}

typedef struct setup {
    distill_model *student, *tmodel;
    distill_teacher *teacher;
    distill_trainer *tr;
} setup;

static void setup_free(setup *s)
{
    distill_trainer_free(s->tr);
    distill_teacher_free(s->teacher);
    distill_model_free(s->tmodel);
    distill_model_free(s->student);
    memset(s, 0, sizeof *s);
}

static int zoo(distill_model **out, int width, uint64_t seed)
{
    distill_zoo_options zo;
    distill_zoo_options_init(&zo, DISTILL_ZOO_OPTIONS_VERSION);
    zo.width_mult_pct = width;
    zo.seed = seed;
    return distill_zoo_create(out, "cnn", &zo);
}

static int setup_make(setup *s, int cfg, int64_t max_steps)
{
    memset(s, 0, sizeof *s);
    distill_trainer_options o;
    distill_trainer_options_init(&o, DISTILL_TRAINER_OPTIONS_VERSION);
    o.epochs = EPOCHS;
    o.batch_size = BATCH;
    o.seed = 12345;
    o.crop_padding = 2;
    o.hflip = 1;
    o.norm_count = 1;
    o.mean[0] = 0.2860f;
    o.std[0] = 0.3530f;
    o.max_steps = max_steps;
    int rc;
    if ((rc = zoo(&s->student, 50, 3)))
        goto fail;
    if (cfg != CFG_CE) {
        /* the teacher's weights come from its seed: the same in every process */
        if ((rc = zoo(&s->tmodel, 100, 77)) ||
            (rc = distill_teacher_from_model(&s->teacher, s->tmodel)))
            goto fail;
    }
    if ((rc = distill_trainer_create(&s->tr, s->student, s->teacher, &o)))
        goto fail;
    distill_loss *l;
    if (cfg == CFG_KD) {
        if ((rc = distill_loss_kd(&l, 4.0f, 0.9f)) || (rc = distill_trainer_add_loss(s->tr, l, 1)))
            goto fail;
    } else if (cfg == CFG_FITNETS) {
        if ((rc = distill_loss_cross_entropy(&l, 0.0f)) ||
            (rc = distill_trainer_add_loss(s->tr, l, 1)) ||
            (rc = distill_loss_fitnets(&l, "pool2", "pool2")) ||
            (rc = distill_trainer_add_loss(s->tr, l, 0.5f)))
            goto fail;
    }
    return DISTILL_OK;
fail:
    setup_free(s);
    return rc;
}

/* The parameter block, then the statistics block, raw. */
static int dump_blocks(distill_model *m, const char *path)
{
    size_t np, ns;
    const float *p = distill_model_param_block(m, &np);
    const float *st = distill_model_stats_block(m, &ns);
    FILE *f = fopen(path, "wb");
    if (!f)
        return DISTILL_EIO;
    int ok = fwrite(p, sizeof(float), np, f) == np && fwrite(st, sizeof(float), ns, f) == ns;
    return fclose(f) == 0 && ok ? DISTILL_OK : DISTILL_EIO;
}

/* ------------------------------------------------------------ the child */

/* argv: --resume-child <cfg> <checkpoint> <k> <N> <out prefix> */
static int child_main(int argc, char **argv)
{
    if (argc != 7)
        return 2;
    int cfg = atoi(argv[2]);
    int64_t k = atoll(argv[4]), n = atoll(argv[5]);
    const char *prefix = argv[6];
    distill_dataset *ds = NULL;
    setup s;
    char path[512];
    int rc;
    if ((rc = load_data(&ds)) || (rc = setup_make(&s, cfg, n))) {
        fprintf(stderr, "resume child: setup: %s\n", distill_last_error());
        distill_dataset_free(ds);
        return 3;
    }
    if ((rc = distill_trainer_load_checkpoint(s.tr, argv[3]))) {
        fprintf(stderr, "resume child: load: %s\n", distill_last_error());
        rc = 4;
    } else if (distill_trainer_steps_done(s.tr) != k) {
        fprintf(stderr, "resume child: %lld steps done after the load, expected %lld\n",
                (long long)distill_trainer_steps_done(s.tr), (long long)k);
        rc = 5;
    } else if ((rc = distill_trainer_fit(s.tr, ds, NULL))) {
        fprintf(stderr, "resume child: fit: %s\n", distill_last_error());
        rc = 6;
    } else if (distill_trainer_steps_done(s.tr) != n) {
        rc = 7;
    } else {
        snprintf(path, sizeof path, "%s.bin", prefix);
        if ((rc = dump_blocks(s.student, path)))
            rc = 8;
        snprintf(path, sizeof path, "%s.ckpt", prefix);
        if (!rc && (rc = distill_trainer_save_checkpoint(s.tr, path)))
            rc = 9;
    }
    setup_free(&s);
    distill_dataset_free(ds);
    return rc;
}

static int run_child(int cfg, const char *ckpt, int64_t k, int64_t n, const char *prefix)
{
    char a_cfg[16], a_k[32], a_n[32];
    snprintf(a_cfg, sizeof a_cfg, "%d", cfg);
    snprintf(a_k, sizeof a_k, "%lld", (long long)k);
    snprintf(a_n, sizeof a_n, "%lld", (long long)n);
    char *const argv[] = {"test_resume", "--resume-child", a_cfg, (char *)ckpt, a_k, a_n,
                          (char *)prefix, NULL};
    /* This program's path, rather than exec("/proc/self/exe"): under
     * valgrind that link names valgrind's tool, which cannot be run
     * directly, while readlink() on it gives the program's path. */
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0 || (size_t)len >= sizeof self - 1)
        return -1;
    self[len] = '\0';
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execv(self, argv);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ------------------------------------------------------------ the test */

static unsigned char *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open '%s'", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *d = malloc((size_t)n + 1);
    assert_non_null(d);
    *size = fread(d, 1, (size_t)n, f);
    fclose(f);
    assert_int_equal(*size, (size_t)n);
    return d;
}

static void expect_same_file(const char *a, const char *b)
{
    size_t na, nb;
    unsigned char *da = slurp(a, &na), *db = slurp(b, &nb);
    if (na != nb)
        fail_msg("'%s' has %zu bytes, '%s' %zu", a, na, b, nb);
    size_t i = 0;
    while (i < na && da[i] == db[i])
        i++;
    if (i < na)
        fail_msg("'%s' and '%s' differ from byte %zu of %zu on", a, b, i, na);
    free(da);
    free(db);
}

static distill_dataset *g_data;

static int group_setup(void **state)
{
    (void)state;
    return load_data(&g_data) == DISTILL_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    distill_dataset_free(g_data);
    return 0;
}

#define CHECK(call)                                                                   \
    do {                                                                              \
        int rc_ = (call);                                                             \
        if (rc_ != DISTILL_OK)                                                        \
            fail_msg("%s -> %d: %s", #call, rc_, distill_last_error());               \
    } while (0)

static void resume_case(int cfg)
{
    const char *name = cfg_names[cfg];
    char straight_bin[64], straight_ckpt[64];
    snprintf(straight_bin, sizeof straight_bin, "%s-straight.bin", name);
    snprintf(straight_ckpt, sizeof straight_ckpt, "%s-straight.ckpt", name);

    setup s;
    CHECK(setup_make(&s, cfg, N_STEPS));
    CHECK(distill_trainer_fit(s.tr, g_data, NULL));
    assert_int_equal(distill_trainer_steps_done(s.tr), N_STEPS);
    CHECK(dump_blocks(s.student, straight_bin));
    CHECK(distill_trainer_save_checkpoint(s.tr, straight_ckpt));
    setup_free(&s);

    /* in the middle of the first epoch, and at its end */
    const int64_t ks[] = {5, PER_EPOCH};
    for (int j = 0; j < 2; j++) {
        int64_t k = ks[j];
        char part_ckpt[64], part_bin[64], prefix[64], bin[80], ckpt[80];
        snprintf(part_ckpt, sizeof part_ckpt, "%s-k%lld.ckpt", name, (long long)k);
        snprintf(part_bin, sizeof part_bin, "%s-k%lld.bin", name, (long long)k);
        snprintf(prefix, sizeof prefix, "%s-resumed-k%lld", name, (long long)k);
        snprintf(bin, sizeof bin, "%s.bin", prefix);
        snprintf(ckpt, sizeof ckpt, "%s.ckpt", prefix);

        CHECK(setup_make(&s, cfg, k));
        CHECK(distill_trainer_fit(s.tr, g_data, NULL));
        assert_int_equal(distill_trainer_steps_done(s.tr), k);
        CHECK(distill_trainer_save_checkpoint(s.tr, part_ckpt));
        CHECK(dump_blocks(s.student, part_bin));
        setup_free(&s);

        int rc = run_child(cfg, part_ckpt, k, N_STEPS, prefix);
        if (rc != 0)
            fail_msg("%s, k = %lld: the resuming process failed with status %d", name,
                     (long long)k, rc);
        /* the weights and statistics after k steps are not those after N */
        size_t n1, n2;
        unsigned char *a = slurp(part_bin, &n1), *b = slurp(straight_bin, &n2);
        assert_int_equal(n1, n2);
        assert_memory_not_equal(a, b, n1);
        free(a);
        free(b);
        /* but the resumed run's are, bit for bit; and its whole state */
        expect_same_file(bin, straight_bin);
        expect_same_file(ckpt, straight_ckpt);
        remove(part_ckpt);
        remove(part_bin);
        remove(bin);
        remove(ckpt);
    }
    remove(straight_bin);
    remove(straight_ckpt);
}

static void test_resume_ce(void **state)
{
    (void)state;
    resume_case(CFG_CE);
}

static void test_resume_kd(void **state)
{
    (void)state;
    resume_case(CFG_KD);
}

static void test_resume_fitnets(void **state)
{
    (void)state;
    resume_case(CFG_FITNETS);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--resume-child") == 0)
        return child_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_ce),
        cmocka_unit_test(test_resume_kd),
        cmocka_unit_test(test_resume_fitnets),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

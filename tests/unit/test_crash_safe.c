/*
 * test_crash_safe.c - a writer killed at any moment never leaves a
 * half-written model file.
 *
 * A child process saves a model (zoo resnet20, about 1.1 MB on disk) to
 * the same path again and again, each time with new weights ("version v":
 * every parameter is a function of v and its index, and the first one is
 * v itself), and reports each completed save through a pipe.  The parent
 * times two saves, kills the child with SIGKILL at a random moment of the
 * next ones (so the kills land anywhere in the write / fsync / rename
 * cycle, however slow the machine), then checks, and does so for several
 * children in turn:
 *
 *   - the file is absent only if no save has ever completed (the first
 *     child is killed at once, before it can save; once the file has
 *     appeared it never goes away);
 *   - otherwise it loads, and its weights are exactly those of a complete
 *     version: the last one the child reported, or the one after it (saved
 *     but not yet reported when the kill came);
 *   - the folder holds nothing but the file and, from a writer killed
 *     between creating its temporary file and renaming it, files named
 *     "<path>.tmp.<pid>" (or "<path>.tmp.<pid>.<n>") with the pid of a
 *     killed child.  Loading never reads those, and a later save by another
 *     process works next to them.
 *
 * The delays come from a seeded generator: CRASH_SAFE_SEED picks another
 * sequence, CRASH_SAFE_KILLS the number of children (default 16).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "distill.h"

#define OK(call) assert_int_equal((call), DISTILL_OK)

#define DIR_NAME "crash_safe"
#define FILE_NAME "model.dstl"
#define VERSIONS_PER_CHILD 100000 /* child k writes versions k * this + 0, 1, ... */
#define MAX_KILLS 64

static char path[256];

/* Weight i of version v: v itself first, then values that differ for
 * every (v, i) and are exact in float. */
static float weight_of(uint32_t v, size_t i)
{
    if (i == 0)
        return (float)v;
    return (float)((v * 7u + (uint32_t)i * 13u) % 65536u) / 256.0f - 128.0f;
}

static void set_version(distill_model *m, uint32_t v)
{
    size_t n;
    float *p = distill_model_param_block(m, &n);
    for (size_t i = 0; i < n; i++)
        p[i] = weight_of(v, i);
    float *s = distill_model_stats_block(m, &n);
    for (size_t i = 0; i < n; i++)
        s[i] = weight_of(v, i + 1) + 200.0f;
}

/* Nonzero if m holds exactly version v. */
static int is_version(distill_model *m, uint32_t v)
{
    size_t n;
    const float *p = distill_model_param_block(m, &n);
    for (size_t i = 0; i < n; i++)
        if (p[i] != weight_of(v, i))
            return 0;
    const float *s = distill_model_stats_block(m, &n);
    for (size_t i = 0; i < n; i++)
        if (s[i] != weight_of(v, i + 1) + 200.0f)
            return 0;
    return 1;
}

static distill_model *make_model(void)
{
    distill_zoo_options z;
    distill_zoo_options_init(&z, DISTILL_ZOO_OPTIONS_VERSION);
    z.height = z.width = 16;
    distill_model *m = NULL;
    if (distill_zoo_create(&m, "resnet20", &z) != DISTILL_OK)
        return NULL;
    return m;
}

/* The child: save versions first, first + 1, ... until killed, writing
 * each completed version to `report`. */
static void child_main(uint32_t first, int report)
{
    distill_model *m = make_model();
    if (!m)
        _exit(3);
    for (uint32_t v = first; v < first + VERSIONS_PER_CHILD; v++) {
        set_version(m, v);
        if (distill_model_save(m, path) != DISTILL_OK)
            _exit(4);
        if (write(report, &v, sizeof v) != (ssize_t)sizeof v)
            _exit(5);
    }
    _exit(0);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Wait (up to 120 s) for the child's next report; returns its version. */
static uint32_t next_report(int fd, int k)
{
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    do {
        r = poll(&p, 1, 120000);
    } while (r < 0 && errno == EINTR);
    uint32_t v;
    if (r != 1 || read(fd, &v, sizeof v) != (ssize_t)sizeof v) {
        fprintf(stderr, "child %d: no report of a completed save (it failed or hangs)\n", k);
        fail();
    }
    return v;
}

/* Nonzero if `name` is FILE_NAME ".tmp.<pid>" or ".tmp.<pid>.<n>" with a
 * pid from pids[0..n). */
static int is_stray_of(const char *name, const pid_t *pids, int n)
{
    static const char prefix[] = FILE_NAME ".tmp.";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0)
        return 0;
    char *end;
    errno = 0;
    long pid = strtol(name + sizeof prefix - 1, &end, 10);
    if (errno || end == name + sizeof prefix - 1)
        return 0;
    if (*end == '.') {
        char *end2;
        strtol(end + 1, &end2, 10);
        if (end2 == end + 1 || *end2)
            return 0;
    } else if (*end) {
        return 0;
    }
    for (int k = 0; k < n; k++)
        if (pids[k] == pid)
            return 1;
    return 0;
}

/* Check the folder: only the file and strays of killed children; returns
 * the number of strays. */
static int check_folder(const pid_t *pids, int n)
{
    DIR *d = opendir(DIR_NAME);
    assert_non_null(d);
    int strays = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, FILE_NAME))
            continue;
        if (!is_stray_of(e->d_name, pids, n)) {
            fprintf(stderr, "unexpected file '%s' in the folder\n", e->d_name);
            fail();
        }
        strays++;
    }
    closedir(d);
    return strays;
}

static void remove_folder(void)
{
    DIR *d = opendir(DIR_NAME);
    if (!d)
        return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, DIR_NAME "/%s", e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(DIR_NAME);
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void test_kill_while_saving(void **state)
{
    (void)state;
    const char *s = getenv("CRASH_SAFE_SEED");
    uint64_t seed = s && *s ? strtoull(s, NULL, 10) : 20240601u;
    s = getenv("CRASH_SAFE_KILLS");
    int kills = s && *s ? atoi(s) : 16;
    if (kills < 1 || kills > MAX_KILLS)
        kills = 16;
    uint64_t rs = seed;

    remove_folder();
    assert_int_equal(mkdir(DIR_NAME, 0755), 0);
    snprintf(path, sizeof path, DIR_NAME "/" FILE_NAME);

    pid_t pids[MAX_KILLS];
    int seen = 0, absent = 0, mid_write = 0, strays_before = 0, reported_after = 0;
    uint32_t last = 0;
    for (int k = 0; k < kills; k++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            child_main((uint32_t)k * VERSIONS_PER_CHILD, fds[1]);
        }
        close(fds[1]);
        pids[k] = pid;
        /* Versions the child has certainly saved: none yet. */
        int64_t done = -1;
        long delay = 0;
        if (k > 0) {
            /* Time one save cycle, then kill at a random point of the next
             * two. */
            next_report(fds[0], k);
            double t1 = now_us();
            done = next_report(fds[0], k);
            double cycle = now_us() - t1;
            delay = (long)((double)(next_rand(&rs) % 1000) / 1000.0 * 2.0 * cycle);
            sleep_us(delay);
        }
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status)) {
            fprintf(stderr, "child %d ended by itself (status %d) instead of being killed\n", k,
                    status);
            fail();
        }
        /* Reports the child wrote before it died. */
        uint32_t v;
        while (read(fds[0], &v, sizeof v) == (ssize_t)sizeof v) {
            done = v;
            reported_after++;
        }
        close(fds[0]);

        int strays = check_folder(pids, k + 1);
        if (strays > strays_before)
            mid_write++;
        strays_before = strays;
        struct stat st;
        if (stat(path, &st) != 0) {
            assert_int_equal(errno, ENOENT);
            if (seen || done >= 0) {
                fprintf(stderr, "kill %d: the model file is missing\n", k);
                fail();
            }
            absent++;
            continue;
        }
        seen = 1;
        distill_model *m = NULL;
        int rc = distill_model_load(&m, path);
        if (rc != DISTILL_OK) {
            fprintf(stderr, "kill %d after %ld us: the file does not load: %s\n", k, delay,
                    distill_last_error());
            fail();
        }
        size_t n;
        float v0 = distill_model_param_block(m, &n)[0];
        v = (uint32_t)v0;
        /* The last version reported, or the next one (complete but not
         * reported); the first child may have saved before it was killed. */
        int64_t lo = done >= 0 ? done : (int64_t)last, hi = done >= 0 ? done + 1 : (int64_t)v;
        if ((float)v != v0 || (int64_t)v < lo || (int64_t)v > hi || !is_version(m, v)) {
            fprintf(stderr, "kill %d: the file holds no complete version in %lld..%lld (first "
                            "weight %g)\n",
                    k, (long long)lo, (long long)hi, (double)v0);
            fail();
        }
        last = v;
        distill_model_free(m);
    }

    /* Strays do not disturb a later save and load. */
    int strays = check_folder(pids, kills);
    distill_model *m = make_model();
    assert_non_null(m);
    set_version(m, 4242);
    OK(distill_model_save(m, path));
    distill_model_free(m);
    m = NULL;
    OK(distill_model_load(&m, path));
    assert_true(is_version(m, 4242));
    distill_model_free(m);
    assert_int_equal(check_folder(pids, kills), strays);

    printf("%d kills (seed %llu): file absent after %d, a complete version after %d (the "
           "newest: %u; %d saves reported while the parent waited to kill); %d kills "
           "left a temporary file, %d temporary files in all\n",
           kills, (unsigned long long)seed, absent, kills - absent, last, reported_after,
           mid_write, strays);
    assert_true(seen);
    remove_folder();
}

int main(void)
{
    /* No OpenMP threads in the parent: it forks. */
    distill_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_while_saving),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

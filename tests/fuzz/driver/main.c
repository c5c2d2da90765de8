/*
 * main.c - a standalone driver for the fuzz targets in tests/fuzz/, used
 * when they are not built with libFuzzer (the normal and sanitizer builds).
 *
 *     fuzz_<name> [FILE | DIR]...
 *
 * Feeds LLVMFuzzerTestOneInput, in order: every file given (directories are
 * read one level deep), the empty input, FUZZ_RUNS (default 1000) random
 * inputs, and FUZZ_RUNS / 4 mutations of each file given (flipped bytes,
 * truncations, extensions).  The inputs depend only on FUZZ_SEED (default
 * 1), so a failure replays exactly.  Exit 0 when every input returns; a
 * crash or a sanitizer report fails the test.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t state;

static uint64_t next(void)
{
    /* splitmix64 */
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static long env_long(const char *name, long dflt)
{
    const char *s = getenv(name);
    return s && *s ? strtol(s, NULL, 10) : dflt;
}

typedef struct input {
    uint8_t *data;
    size_t size;
} input;

static input *inputs;
static size_t n_inputs, cap_inputs;

static void run(const uint8_t *data, size_t size)
{
    /* A private copy, so that reads past the end are caught by ASan. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) {
        fprintf(stderr, "fuzz driver: out of memory\n");
        exit(2);
    }
    if (size)
        memcpy(copy, data, size);
    LLVMFuzzerTestOneInput(copy, size);
    free(copy);
}

static void add_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    input in = {NULL, 0};
    size_t cap = 0;
    for (;;) {
        if (in.size == cap) {
            cap = cap ? 2 * cap : 4096;
            in.data = realloc(in.data, cap);
            if (!in.data) {
                fprintf(stderr, "fuzz driver: out of memory\n");
                exit(2);
            }
        }
        size_t got = fread(in.data + in.size, 1, cap - in.size, f);
        in.size += got;
        if (got == 0)
            break;
    }
    fclose(f);
    if (n_inputs == cap_inputs) {
        cap_inputs = cap_inputs ? 2 * cap_inputs : 16;
        inputs = realloc(inputs, cap_inputs * sizeof *inputs);
        if (!inputs) {
            fprintf(stderr, "fuzz driver: out of memory\n");
            exit(2);
        }
    }
    inputs[n_inputs++] = in;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        add_file(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d) {
        perror(path);
        exit(2);
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        names = realloc(names, (n + 1) * sizeof *names);
        size_t len = strlen(path) + strlen(e->d_name) + 2;
        if (!names || !(names[n] = malloc(len))) {
            fprintf(stderr, "fuzz driver: out of memory\n");
            exit(2);
        }
        snprintf(names[n], len, "%s/%s", path, e->d_name);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_names); /* same order everywhere */
    for (size_t i = 0; i < n; i++) {
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
            add_file(names[i]);
        free(names[i]);
    }
    free(names);
}

static void mutate_and_run(const input *in)
{
    size_t size = in->size;
    switch (next() % 3) {
    case 0: /* truncate */
        size = size ? (size_t)(next() % size) : 0;
        break;
    case 1: /* extend with random bytes */
        size += 1 + next() % 64;
        break;
    default:
        break;
    }
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        fprintf(stderr, "fuzz driver: out of memory\n");
        exit(2);
    }
    size_t keep = size < in->size ? size : in->size;
    if (keep)
        memcpy(buf, in->data, keep);
    for (size_t i = keep; i < size; i++)
        buf[i] = (uint8_t)next();
    if (size) {
        int flips = 1 + (int)(next() % 8);
        for (int k = 0; k < flips; k++)
            buf[next() % size] ^= (uint8_t)(1u << (next() % 8));
    }
    run(buf, size);
    free(buf);
}

int main(int argc, char **argv)
{
    long runs = env_long("FUZZ_RUNS", 1000);
    state = (uint64_t)env_long("FUZZ_SEED", 1);

    for (int i = 1; i < argc; i++)
        add_path(argv[i]);

    for (size_t i = 0; i < n_inputs; i++)
        run(inputs[i].data, inputs[i].size);
    run(NULL, 0);

    uint8_t buf[4096];
    for (long r = 0; r < runs; r++) {
        size_t size = (size_t)(next() % sizeof buf);
        for (size_t i = 0; i < size; i++)
            buf[i] = (uint8_t)next();
        run(buf, size);
    }
    for (size_t i = 0; i < n_inputs; i++)
        for (long r = 0; r < runs / 4; r++)
            mutate_and_run(&inputs[i]);

    printf("%zu files, %ld random inputs, %ld mutations each: ok\n", n_inputs, runs, runs / 4);
    for (size_t i = 0; i < n_inputs; i++)
        free(inputs[i].data);
    free(inputs);
    return 0;
}

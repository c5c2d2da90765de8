/*
 * fashion_photos.c - make an RGB "photo" folder from Fashion-MNIST: each
 * 28x28 item tinted with a random colour on a random-coloured background,
 * upscaled to a random size and aspect ratio, written as JPEG, one
 * sub-folder per class.  No RGB classification set ships in Debian; this
 * gives the photo examples (examples/photos.sh) mixed-size colour JPEGs to
 * read, resize and crop, with Fashion-MNIST's labels.
 *
 * usage: example_fashion_photos OUT_DIR [options]
 *   --per-class N   images per class (default 100); the first N of each class
 *   --test          take them from the 10,000 test images (default: the
 *                   60,000 training images)
 *   --seed S        seed of the colours, sizes and noise (default 0); the same
 *                   seed gives the same files
 *   --min P, --max P  the longer side's range in pixels (default 48 and 160);
 *                   the aspect ratio (width / height) is drawn from 3/4..4/3
 *   --quality Q     JPEG quality (default 90)
 * env:  FASHION_MNIST_DIR (default /usr/share/datasets/fashion-mnist)
 *
 * Folders are named "0-tshirt_top", "1-trouser", ..., "9-ankle_boot", so
 * that their sorted order (the order folder readers number classes in) is
 * Fashion-MNIST's label order.  Files are "<index>.jpg", the index of the
 * image in the IDX file.  Every fourth file is progressive, the rest
 * baseline, so that readers see both.
 *
 * Uses the library for reading the IDX files and libjpeg-turbo's libjpeg
 * API (Debian: libjpeg62-turbo-dev) for writing.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>

#include <distill.h>

static const char *const CLASS_DIRS[10] = {
    "0-tshirt_top", "1-trouser", "2-pullover", "3-dress",   "4-coat",
    "5-sandal",     "6-shirt",   "7-sneaker",  "8-bag",     "9-ankle_boot"};

/* splitmix64: one independent stream per (seed, image index). */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s)
{
    return (double)(mix(s) >> 11) / 9007199254740992.0; /* [0, 1) */
}

static void random_colour(uint64_t *s, double c[3])
{
    for (int k = 0; k < 3; k++)
        c[k] = 255.0 * uniform(s);
}

static double distance(const double a[3], const double b[3])
{
    double d = 0;
    for (int k = 0; k < 3; k++)
        d += (a[k] - b[k]) * (a[k] - b[k]);
    return sqrt(d);
}

/* Bilinear sample of the 28x28 image at (y, x) in source pixels, with
 * half-pixel centres and the border clamped. */
static double sample(const float *img, double y, double x)
{
    y -= 0.5, x -= 0.5;
    if (y < 0)
        y = 0;
    if (x < 0)
        x = 0;
    if (y > 27)
        y = 27;
    if (x > 27)
        x = 27;
    int y0 = (int)y, x0 = (int)x;
    int y1 = y0 < 27 ? y0 + 1 : 27, x1 = x0 < 27 ? x0 + 1 : 27;
    double fy = y - y0, fx = x - x0;
    double top = img[y0 * 28 + x0] * (1 - fx) + img[y0 * 28 + x1] * fx;
    double bot = img[y1 * 28 + x0] * (1 - fx) + img[y1 * 28 + x1] * fx;
    return top * (1 - fy) + bot * fy;
}

static int write_jpeg(const char *path, const unsigned char *rgb, int w, int h, int quality,
                      int progressive)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "fashion_photos: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    if (progressive)
        jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * (size_t)w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    if (fclose(f) != 0) {
        fprintf(stderr, "fashion_photos: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

/* mkdir -p */
static int make_dir(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                fprintf(stderr, "fashion_photos: cannot create %s: %s\n", buf, strerror(errno));
                return 1;
            }
            *p = '/';
        }
    if (mkdir(path, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "fashion_photos: cannot create %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: example_fashion_photos OUT_DIR [--per-class N] [--test] [--seed S] "
                    "[--min P] [--max P] [--quality Q]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    long per_class = 100, min_side = 48, max_side = 160, quality = 90;
    unsigned long long seed = 0;
    int test = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *end = NULL;
        if (strcmp(a, "--test") == 0) {
            test = 1;
            continue;
        }
        if (a[0] != '-') {
            if (out)
                return usage();
            out = a;
            continue;
        }
        if (i + 1 >= argc)
            return usage();
        const char *v = argv[++i];
        errno = 0;
        if (strcmp(a, "--seed") == 0) {
            seed = strtoull(v, &end, 10);
        } else {
            long x = strtol(v, &end, 10);
            if (strcmp(a, "--per-class") == 0)
                per_class = x;
            else if (strcmp(a, "--min") == 0)
                min_side = x;
            else if (strcmp(a, "--max") == 0)
                max_side = x;
            else if (strcmp(a, "--quality") == 0)
                quality = x;
            else
                return usage();
        }
        if (errno || !end || *end || v[0] == '-')
            return usage();
    }
    if (!out || per_class < 1 || min_side < 8 || max_side < min_side || max_side > 4096 ||
        quality < 1 || quality > 100)
        return usage();

    distill_dataset *d;
    int rc = distill_dataset_fashion_mnist(&d, NULL, !test);
    if (rc) {
        fprintf(stderr, "fashion_photos: %s\n", distill_last_error());
        return 1;
    }
    if (make_dir(out))
        return 1;
    char path[4096];
    for (int k = 0; k < 10; k++) {
        snprintf(path, sizeof path, "%s/%s", out, CLASS_DIRS[k]);
        if (make_dir(path))
            return 1;
    }

    unsigned char *rgb = malloc((size_t)max_side * (size_t)max_side * 3);
    if (!rgb)
        return 1;
    long written[10] = {0}, total = 0;
    int64_t n = distill_dataset_size(d);
    float img[784];
    for (int64_t i = 0; i < n && total < 10 * per_class; i++) {
        int32_t label;
        if (distill_dataset_get(d, i, img, 784, &label)) {
            fprintf(stderr, "fashion_photos: %s\n", distill_last_error());
            return 1;
        }
        if (label < 0 || label > 9 || written[label] >= per_class)
            continue;
        uint64_t s = (uint64_t)seed * 0x100000001B3ull ^ (uint64_t)i * 0xD6E8FEB86659FD93ull;
        double fg[3], bg[3];
        random_colour(&s, bg);
        do
            random_colour(&s, fg);
        while (distance(fg, bg) < 120.0); /* keep the item visible */
        /* the longer side in [min, max], the aspect ratio in 3/4..4/3 */
        double side = (double)min_side + uniform(&s) * (double)(max_side - min_side);
        double ratio = exp(log(0.75) + uniform(&s) * (log(4.0 / 3.0) - log(0.75)));
        int w = (int)lround(ratio >= 1 ? side : side * ratio);
        int h = (int)lround(ratio >= 1 ? side / ratio : side);
        if (w < 1)
            w = 1;
        if (h < 1)
            h = 1;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double a = sample(img, (y + 0.5) * 28.0 / h, (x + 0.5) * 28.0 / w);
                double noise = 12.0 * (uniform(&s) - 0.5);
                for (int k = 0; k < 3; k++) {
                    double v = bg[k] + a * (fg[k] - bg[k]) + noise;
                    rgb[((size_t)y * (size_t)w + (size_t)x) * 3 + (size_t)k] =
                        (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : lround(v));
                }
            }
        snprintf(path, sizeof path, "%s/%s/%05lld.jpg", out, CLASS_DIRS[label], (long long)i);
        if (write_jpeg(path, rgb, w, h, (int)quality, total % 4 == 3))
            return 1;
        written[label]++;
        total++;
    }
    free(rgb);
    distill_dataset_free(d);
    printf("%ld JPEG files in %s (%s images, seed %llu)\n", total, out,
           test ? "test" : "training", seed);
    for (int k = 0; k < 10; k++)
        if (written[k] < per_class)
            fprintf(stderr, "fashion_photos: only %ld images of class %s\n", written[k],
                    CLASS_DIRS[k]);
    return 0;
}

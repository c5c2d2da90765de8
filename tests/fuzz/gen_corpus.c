/*
 * gen_corpus.c - write the seed corpora of the fuzz targets.
 *
 *     gen_corpus OUT_DIR [FASHION_MNIST_DIR]
 *
 * Writes OUT_DIR/fuzz_<name>/... from real files: models and a checkpoint
 * saved by libdistill itself, IDX files cut from Fashion-MNIST's test set
 * (raw and gzip), PNG files encoded by libpng in every colour type, JPEG
 * files encoded by libjpeg (baseline, progressive, gray, colour, CMYK,
 * EXIF orientation), and the loss specs of the documentation.  Uses the
 * public API only (plus libpng, libjpeg and zlib), and is deterministic:
 * running it again gives the same bytes.
 * See README.md for how to build and run it.
 */
#include "fuzz_common.h"

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

static const char *out_root;

static void die(const char *what)
{
    fprintf(stderr, "gen_corpus: %s: %s\n", what, distill_last_error());
    exit(1);
}

static void out_path(char *buf, size_t cap, const char *target, const char *name)
{
    snprintf(buf, cap, "%s/%s", out_root, target);
    mkdir(buf, 0755);
    snprintf(buf, cap, "%s/%s/%s", out_root, target, name);
}

static void put(const char *target, const char *name, const void *data, size_t size)
{
    char p[1024];
    out_path(p, sizeof p, target, name);
    fz_write_file(p, data, size);
    printf("%8zu  %s\n", size, p);
}

static unsigned char *slurp(const char *path, size_t *size)
{
    unsigned char *b = fz_read_file(path, size);
    if (!b) {
        perror(path);
        exit(1);
    }
    return b;
}

/* --------------------------------------------------------------- models */

/* Save m with the library and copy the file into the corpus. */
static void save_model(const distill_model *m, const char *name)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s/model.tmp", fz_dir());
    if (distill_model_save(m, tmp) != DISTILL_OK)
        die("distill_model_save");
    size_t n;
    unsigned char *b = slurp(tmp, &n);
    put("fuzz_model", name, b, n);
    free(b);
}

/* One node of every kind, on small shapes. */
static distill_model *every_op(void)
{
    int64_t in[3] = {2, 5, 5};
    distill_model *m;
    distill_conv2d_options c;
    distill_conv2d_options_init(&c, DISTILL_CONV2D_OPTIONS_VERSION);
    int rc = distill_model_create(&m, "in", 3, in);
    c.kernel_h = c.kernel_w = 3;
    c.pad_h = c.pad_w = 1;
    if (!rc)
        rc = distill_model_add_conv2d(m, "c1", "in", 4, &c);
    c.groups = 4;
    c.dilation_h = c.dilation_w = 1;
    c.bias = 0;
    if (!rc)
        rc = distill_model_add_conv2d(m, "dw", "c1", 4, &c);
    if (!rc)
        rc = distill_model_add_batchnorm(m, "bn", "dw", 1e-5f, 0.1f);
    if (!rc)
        rc = distill_model_add_relu6(m, "r6", "bn");
    if (!rc)
        rc = distill_model_add_add(m, "sum", "r6", "c1");
    if (!rc)
        rc = distill_model_add_leaky_relu(m, "lr", "sum", 0.1f);
    if (!rc)
        rc = distill_model_add_gelu(m, "ge", "lr", 1);
    const char *cat[2] = {"ge", "c1"};
    if (!rc)
        rc = distill_model_add_concat(m, "cat", 2, cat);
    if (!rc)
        rc = distill_model_add_maxpool(m, "mp", "cat", 2, 1, 0);
    if (!rc)
        rc = distill_model_add_avgpool(m, "ap", "mp", 2, 2, 1);
    if (!rc)
        rc = distill_model_add_relu(m, "r", "ap");
    if (!rc)
        rc = distill_model_add_global_avgpool(m, "gap", "r");
    if (!rc)
        rc = distill_model_add_flatten(m, "flat", "gap");
    if (!rc)
        rc = distill_model_add_dropout(m, "drop", "flat", 0.25f);
    if (!rc)
        rc = distill_model_add_linear(m, "fc", "drop", 3, 1);
    if (!rc)
        rc = distill_model_add_softmax(m, "prob", "fc");
    if (!rc)
        rc = distill_model_set_output(m, "fc");
    if (!rc)
        rc = distill_model_init_weights(m, DISTILL_INIT_KAIMING_UNIFORM, 3);
    if (rc)
        die("building the every-op model");
    return m;
}

/* Metadata of every kind (a "META" section, ONNX metadata_props) on the
 * small CNN. */
static void describe(distill_model *m)
{
    const char *names[FZ_CLASSES];
    char buf[FZ_CLASSES][16];
    for (int k = 0; k < FZ_CLASSES; k++) {
        snprintf(buf[k], sizeof buf[k], "class %d", k);
        names[k] = buf[k];
    }
    const float mean = 0.2860f, std = 0.3530f;
    if (distill_model_set_metadata(m, DISTILL_META_DATA_SHAPE, "1,6,6") ||
        distill_model_set_normalization(m, 1, &mean, &std) ||
        distill_model_set_class_names(m, FZ_CLASSES, names) ||
        distill_model_set_metadata(m, DISTILL_META_LIBRARY, "libdistill 0.1.0") ||
        distill_model_set_metadata(m, DISTILL_META_COMMAND, "distill train") ||
        distill_model_set_metadata(m, DISTILL_META_OPTIONS, "{\"epochs\": 1, \"data\": \"fashion-mnist\"}") ||
        distill_model_set_metadata(m, DISTILL_META_SEED, "42") ||
        distill_model_set_metadata(m, DISTILL_META_DATA, "fnv1a64:0123456789abcdef") ||
        distill_model_set_metadata(m, "host.note", "caf\xc3\xa9"))
        die("setting the metadata");
}

static void gen_models(void)
{
    distill_model *m;
    if (fz_small_cnn(&m, 4, 1, 1) != DISTILL_OK)
        die("building the small CNN");
    save_model(m, "small_cnn.dstl");
    describe(m);
    save_model(m, "small_cnn_meta.dstl");
    distill_model_free(m);

    /* A vector model: input (F). */
    int64_t f[1] = {6};
    if (distill_model_create(&m, "x", 1, f) || distill_model_add_linear(m, "h", "x", 5, 1) ||
        distill_model_add_batchnorm(m, "bn", "h", 1e-3f, 0.2f) ||
        distill_model_add_relu(m, "r", "bn") || distill_model_add_linear(m, "y", "r", 2, 0) ||
        distill_model_init_weights(m, DISTILL_INIT_XAVIER_NORMAL, 4))
        die("building the MLP");
    save_model(m, "mlp.dstl");
    distill_model_free(m);

    m = every_op();
    save_model(m, "every_op.dstl");
    distill_model_free(m);

    /* A zoo ResNet at a quarter of the widths, on 8 x 8 images. */
    distill_zoo_options z;
    distill_zoo_options_init(&z, DISTILL_ZOO_OPTIONS_VERSION);
    z.height = z.width = 8;
    z.width_mult_pct = 25;
    z.classes = 4;
    z.seed = 9;
    if (distill_zoo_create(&m, "resnet8", &z))
        die("building resnet8");
    save_model(m, "resnet8_w25.dstl");
    distill_model_free(m);
}

/* --------------------------------------------------------------- ONNX */

/* Export m as ONNX and copy the file into the corpus of fuzz_onnx. */
static void export_onnx(const distill_model *m, const char *name)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s/model.onnx", fz_dir());
    if (distill_model_export_onnx(m, tmp) != DISTILL_OK)
        die("distill_model_export_onnx");
    size_t n;
    unsigned char *b = slurp(tmp, &n);
    put("fuzz_onnx", name, b, n);
    free(b);
}

/* The models of gen_models() but every_op, whose GELU is the tanh form that
 * ONNX export refuses.  (corpus/fuzz_onnx/residual_cnn_helper.onnx, with
 * the patterns PyTorch exports, is the residual CNN that
 * tests/onnx/test_onnx.py writes with onnx.helper.) */
static void gen_onnx(void)
{
    if (!distill_onnx_available())
        return;
    distill_model *m;
    if (fz_small_cnn(&m, 4, 1, 1) != DISTILL_OK)
        die("building the small CNN");
    export_onnx(m, "small_cnn.onnx");
    describe(m);
    export_onnx(m, "small_cnn_meta.onnx");
    distill_model_free(m);

    int64_t f[1] = {6};
    if (distill_model_create(&m, "x", 1, f) || distill_model_add_linear(m, "h", "x", 5, 1) ||
        distill_model_add_batchnorm(m, "bn", "h", 1e-3f, 0.2f) ||
        distill_model_add_relu(m, "r", "bn") || distill_model_add_linear(m, "y", "r", 2, 0) ||
        distill_model_init_weights(m, DISTILL_INIT_XAVIER_NORMAL, 4))
        die("building the MLP");
    export_onnx(m, "mlp.onnx");
    distill_model_free(m);

    distill_zoo_options z;
    distill_zoo_options_init(&z, DISTILL_ZOO_OPTIONS_VERSION);
    z.height = z.width = 8;
    z.width_mult_pct = 25;
    z.classes = 4;
    z.seed = 9;
    if (distill_zoo_create(&m, "resnet8", &z))
        die("building resnet8");
    export_onnx(m, "resnet8_w25.onnx");
    distill_model_free(m);
}

/* ---------------------------------------------------------- checkpoints */

static void gen_checkpoints(void)
{
    for (int steps = 0; steps <= 2; steps += 2) {
        fz_trainer f;
        if (fz_trainer_make(&f, steps) != DISTILL_OK)
            die("building the checkpoint fixture");
        char tmp[1024], name[64];
        snprintf(tmp, sizeof tmp, "%s/ckpt.tmp", fz_dir());
        if (distill_trainer_save_checkpoint(f.tr, tmp) != DISTILL_OK)
            die("distill_trainer_save_checkpoint");
        size_t n;
        unsigned char *b = slurp(tmp, &n);
        snprintf(name, sizeof name, "fixture_step%d.ckpt", steps);
        put("fuzz_checkpoint", name, b, n);
        free(b);
        fz_trainer_free(&f);
    }
}

/* ------------------------------------------------------------------ IDX */

/* gzip `size` bytes (maximum compression); *out is malloc'd. */
static size_t gzip(const unsigned char *data, size_t size, unsigned char **out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        exit(1);
    size_t cap = deflateBound(&z, (uLong)size) + 64;
    *out = malloc(cap);
    if (!*out)
        exit(1);
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)size;
    z.next_out = *out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        exit(1);
    size_t n = cap - z.avail_out;
    deflateEnd(&z);
    return n;
}

/* The first `bytes` bytes of a gzip file, decompressed. */
static unsigned char *gunzip_head(const char *path, size_t bytes)
{
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        fprintf(stderr, "gen_corpus: cannot open %s\n", path);
        exit(1);
    }
    unsigned char *b = malloc(bytes);
    if (!b || gzread(gz, b, (unsigned)bytes) != (int)bytes) {
        fprintf(stderr, "gen_corpus: cannot read %zu bytes of %s\n", bytes, path);
        exit(1);
    }
    gzclose(gz);
    return b;
}

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* One fuzz_idx input: the 4-byte header, the labels part, the images part. */
static void idx_input(const char *name, unsigned flags, const unsigned char *lab, size_t nl,
                      const unsigned char *img, size_t ni)
{
    size_t n = 4 + nl + ni;
    unsigned char *b = malloc(n);
    if (!b)
        exit(1);
    b[0] = (unsigned char)flags;
    b[1] = (unsigned char)nl;
    b[2] = (unsigned char)(nl >> 8);
    b[3] = (unsigned char)(nl >> 16);
    memcpy(b + 4, lab, nl);
    memcpy(b + 4 + nl, img, ni);
    put("fuzz_idx", name, b, n);
    free(b);
}

static void gen_idx(const char *fmnist)
{
    /* Three real test images, cropped to their central 12 x 12 pixels so
     * the seeds stay small, and their labels. */
    enum { N = 3, SIDE = 28, CROP = 12 };
    char p[1024];
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte.gz", fmnist);
    unsigned char *src = gunzip_head(p, 16 + (size_t)N * SIDE * SIDE);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", fmnist);
    unsigned char *srcl = gunzip_head(p, 8 + N);

    unsigned char img[16 + N * CROP * CROP], lab[8 + N];
    be32(img, 0x00000803);
    be32(img + 4, N);
    be32(img + 8, CROP);
    be32(img + 12, CROP);
    const int off = (SIDE - CROP) / 2;
    for (int i = 0; i < N; i++)
        for (int y = 0; y < CROP; y++)
            memcpy(img + 16 + (size_t)(i * CROP + y) * CROP,
                   src + 16 + (size_t)i * SIDE * SIDE + (size_t)(y + off) * SIDE + off, CROP);
    be32(lab, 0x00000801);
    be32(lab + 4, N);
    memcpy(lab + 8, srcl + 8, N);
    free(src);
    free(srcl);

    unsigned char *gimg, *glab;
    size_t ngi = gzip(img, sizeof img, &gimg), ngl = gzip(lab, sizeof lab, &glab);
    const unsigned classes10 = 10u << 3;
    idx_input("images_raw.idx", 0, NULL, 0, img, sizeof img);
    idx_input("images_labels_raw.idx", 1 | classes10, lab, sizeof lab, img, sizeof img);
    idx_input("images_labels_gz.idx", 1, glab, ngl, gimg, ngi);
    idx_input("images_labels_zipped_by_target.idx", 1 | 2 | 4 | classes10, lab, sizeof lab, img,
              sizeof img);
    /* The same bytes as the files a user has, without the 4-byte header. */
    put("fuzz_idx", "images_gz_file.idx.gz", gimg, ngi);
    free(gimg);
    free(glab);
}

/* ------------------------------------------------------------------ PNG */

typedef struct pngbuf {
    unsigned char *p;
    size_t n, cap;
} pngbuf;

static void png_mem_write(png_structp png, png_bytep data, size_t len)
{
    pngbuf *b = png_get_io_ptr(png);
    if (b->n + len > b->cap) {
        b->cap = (b->n + len) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            exit(1);
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
}

static void png_mem_flush(png_structp png)
{
    (void)png;
}

/* Encode a w x h image of colour type `color` and bit depth `depth` whose
 * samples follow a fixed pattern; optionally interlaced, with a palette
 * (and tRNS) for palette images. */
static void png_seed(const char *name, int w, int h, int color, int depth, int interlace)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info || setjmp(png_jmpbuf(png))) {
        fprintf(stderr, "gen_corpus: libpng failed on %s\n", name);
        exit(1);
    }
    pngbuf b = {NULL, 0, 0};
    png_set_write_fn(png, &b, png_mem_write, png_mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[4] = {{0, 0, 0}, {255, 0, 0}, {0, 200, 50}, {255, 255, 255}};
        png_byte trans[2] = {255, 128};
        png_set_PLTE(png, info, pal, 4);
        png_set_tRNS(png, info, trans, 2, NULL);
    }
    png_write_info(png, info);
    int channels = color == PNG_COLOR_TYPE_RGB         ? 3
                   : color == PNG_COLOR_TYPE_RGB_ALPHA  ? 4
                   : color == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                                                         : 1;
    size_t rowbytes = ((size_t)w * channels * depth + 7) / 8;
    unsigned char *pix = calloc((size_t)h, rowbytes);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    if (!pix || !rows)
        exit(1);
    unsigned max = color == PNG_COLOR_TYPE_PALETTE ? 3u : (1u << depth) - 1u;
    for (int y = 0; y < h; y++) {
        rows[y] = pix + (size_t)y * rowbytes;
        for (int x = 0; x < w * channels; x++) {
            unsigned v = (unsigned)(x * 53 + y * 97 + x * y) % (max + 1);
            if (depth == 16) {
                rows[y][2 * x] = (unsigned char)(v >> 8);
                rows[y][2 * x + 1] = (unsigned char)v;
            } else if (depth == 8) {
                rows[y][x] = (unsigned char)v;
            } else {
                int per = 8 / depth;
                rows[y][x / per] |= (unsigned char)(v << (8 - depth * (x % per + 1)));
            }
        }
    }
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    put("fuzz_png", name, b.p, b.n);
    free(b.p);
    free(pix);
    free(rows);
}

static void gen_png(void)
{
    png_seed("gray8_5x4.png", 5, 4, PNG_COLOR_TYPE_GRAY, 8, 0);
    png_seed("gray1_9x3.png", 9, 3, PNG_COLOR_TYPE_GRAY, 1, 0);
    png_seed("gray4_7x7_interlaced.png", 7, 7, PNG_COLOR_TYPE_GRAY, 4, 1);
    png_seed("gray16_4x6.png", 4, 6, PNG_COLOR_TYPE_GRAY, 16, 0);
    png_seed("gray_alpha8_3x3.png", 3, 3, PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0);
    png_seed("rgb8_8x8.png", 8, 8, PNG_COLOR_TYPE_RGB, 8, 0);
    png_seed("rgb16_5x5_interlaced.png", 5, 5, PNG_COLOR_TYPE_RGB, 16, 1);
    png_seed("rgba8_6x2.png", 6, 2, PNG_COLOR_TYPE_RGB_ALPHA, 8, 0);
    png_seed("palette2_10x10_trns.png", 10, 10, PNG_COLOR_TYPE_PALETTE, 2, 0);
}

/* ---------------------------------------------------------------- JPEG */

/* Encode a w x h JPEG of `comps` components (1 gray, 3 RGB, 4 CMYK) whose
 * samples follow a fixed pattern; progressive, 2x2-subsampled chroma, an
 * EXIF APP1 segment with `orientation` (0 = none) and restart markers
 * every `restart` MCU rows as asked. */
static void jpeg_seed(const char *name, int w, int h, int comps, int progressive, int subsample,
                      int orientation, int restart)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&c, &buf, &len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 75, TRUE);
    if (!subsample)
        for (int k = 0; k < c.num_components; k++)
            c.comp_info[k].h_samp_factor = c.comp_info[k].v_samp_factor = 1;
    if (progressive)
        jpeg_simple_progression(&c);
    c.restart_in_rows = restart;
    jpeg_start_compress(&c, TRUE);
    if (orientation) {
        /* "Exif\0\0", big-endian TIFF header, IFD0 with the orientation */
        unsigned char app[6 + 8 + 2 + 12 + 4] = {'E', 'x', 'i', 'f', 0, 0, 'M', 'M', 0, 42,
                                                 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3,
                                                 0, 0, 0, 1, 0, 0, 0, 0};
        app[6 + 8 + 2 + 8 + 1] = (unsigned char)orientation;
        jpeg_write_marker(&c, JPEG_APP0 + 1, app, sizeof app);
    }
    unsigned char *row = malloc((size_t)w * comps);
    if (!row)
        exit(1);
    while (c.next_scanline < c.image_height) {
        int y = (int)c.next_scanline;
        for (int x = 0; x < w * comps; x++)
            row[x] = (unsigned char)((x * 53 + y * 97 + x * y) % 256);
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    put("fuzz_jpeg", name, buf, len);
    free(buf);
    free(row);
}

static void gen_jpeg(void)
{
    jpeg_seed("rgb_baseline_8x8.jpg", 8, 8, 3, 0, 0, 0, 0);
    jpeg_seed("rgb_420_17x13.jpg", 17, 13, 3, 0, 1, 0, 0);
    jpeg_seed("rgb_progressive_16x9.jpg", 16, 9, 3, 1, 1, 0, 0);
    jpeg_seed("gray_baseline_9x7.jpg", 9, 7, 1, 0, 0, 0, 0);
    jpeg_seed("gray_progressive_8x16.jpg", 8, 16, 1, 1, 0, 0, 0);
    jpeg_seed("rgb_exif6_12x8.jpg", 12, 8, 3, 0, 0, 6, 0);
    jpeg_seed("rgb_exif3_progressive_8x8.jpg", 8, 8, 3, 1, 0, 3, 0);
    jpeg_seed("rgb_restart_16x32.jpg", 16, 32, 3, 0, 1, 0, 1);
    jpeg_seed("cmyk_8x8.jpg", 8, 8, 4, 0, 0, 0, 0);
}

/* ----------------------------------------------------------- loss specs */

static void gen_specs(void)
{
    static const char *const specs[][2] = {
        {"ce", "ce"},
        {"ce_smoothing", "ce:smoothing=0.1"},
        {"cross_entropy_spaces", " cross-entropy : smoothing = 0.2 , weight = 2 "},
        {"kd", "kd:T=4,alpha=0.9"},
        {"kd_weight", "kd:T=4,alpha=1,weight=0.5"},
        {"dkd", "dkd:T=4,alpha=1,beta=8"},
        {"fitnets", "fitnets:student=layer2,teacher=layer3"},
        {"at", "at:student=layer1,teacher=layer2,p=2"},
        {"sp", "sp:student=pool,teacher=pool"},
        {"rkd", "rkd:student=pool,teacher=pool,dist=25,angle=50"},
        {"pkt", "pkt:student=fc,teacher=fc,weight=1e-1"},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        put("fuzz_loss_spec", specs[i][0], specs[i][1], strlen(specs[i][1]));
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: gen_corpus OUT_DIR [FASHION_MNIST_DIR]\n");
        return 2;
    }
    out_root = argv[1];
    mkdir(out_root, 0755);
    const char *fmnist = argc > 2 ? argv[2] : "/usr/share/datasets/fashion-mnist";
    distill_set_num_threads(1);
    gen_models();
    gen_onnx();
    gen_checkpoints();
    gen_idx(fmnist);
    gen_png();
    gen_jpeg();
    gen_specs();
    return 0;
}

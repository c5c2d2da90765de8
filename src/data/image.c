/*
 * image.c - the decoder chosen by a file's magic bytes (see image.h).
 */
#include <string.h>
#include <strings.h>

#include "data/image.h"
#include "util/util.h"

static const unsigned char png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

int image_decode(const unsigned char *file, size_t size, const char *path, image *out)
{
    memset(out, 0, sizeof *out);
    if (size == 0)
        return seterr(DISTILL_EFORMAT, "image '%s': empty file (0 bytes)", path);
    if (size >= 8 && memcmp(file, png_magic, 8) == 0)
        return image_png_decode(file, size, path, out);
    if (size >= 3 && file[0] == 0xFF && file[1] == 0xD8 && file[2] == 0xFF)
        return image_jpeg_decode(file, size, path, out);
    return seterr(DISTILL_EFORMAT,
                  "image '%s': not a PNG or JPEG file (the first bytes are neither signature)",
                  path);
}

int image_read_file(const char *path, image *out)
{
    memset(out, 0, sizeof *out);
    void *file = NULL;
    size_t size = 0;
    int rc = read_file(path, IMAGE_MAX_FILE, &file, &size);
    if (rc)
        return rc;
    rc = image_decode(file, size, path, out);
    xfree(file);
    return rc;
}

void image_free(image *img)
{
    if (!img)
        return;
    xfree(img->pixels);
    memset(img, 0, sizeof *img);
}

int image_name_is_image(const char *name)
{
    static const char *const ext[] = {".png", ".jpg", ".jpeg", ".jpe", ".jfif"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        size_t k = strlen(ext[i]);
        if (n > k && strcasecmp(name + n - k, ext[i]) == 0)
            return 1;
    }
    return 0;
}

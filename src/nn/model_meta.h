/*
 * model_meta.h - what a model records about itself: key/value strings
 * (include/distill/model.h, "Metadata"), kept in the model, written to the
 * "META" section of model files (model_io.c) and to ONNX metadata_props
 * (src/onnx/).
 *
 * Every entry is checked when it is set and again, with the checks that
 * span several keys, when a model is saved or loaded (meta_check), so that
 * a file that lies about its model ("classes" naming 3 classes for 10
 * outputs, a mean per channel for the wrong channel count) is refused like
 * a corrupt one.
 */
#ifndef DISTILL_MODEL_META_H
#define DISTILL_MODEL_META_H

#include <stddef.h>

#include "distill/model.h"

#define META_MAX_ENTRIES 256
#define META_MAX_KEY 128            /* bytes */
#define META_MAX_VALUE (1u << 20)   /* bytes */
#define META_MAX_CLASS_NAME 1024    /* bytes */
#define META_MAX_NORM 4096          /* mean/std values */

typedef struct meta_entry {
    char *key;
    char *value;
} meta_entry;

typedef struct model_meta {
    meta_entry *e;          /* in the order they were first set */
    int n, cap;
    /* "classes" split at its newlines: names[k] points into names_buf */
    char *names_buf;
    const char **names;
    int n_names;
} model_meta;

void meta_free(model_meta *mm);

/* Nonzero if `key` is a well-formed key: 1..META_MAX_KEY bytes of
 * [A-Za-z0-9._-]. */
int meta_key_ok(const char *key);

/*
 * Set (value not NULL) or remove (NULL) entry `key` of m, after checking
 * the key, the value (UTF-8, at most META_MAX_VALUE bytes) and, for the
 * keys the library knows, their format and what they say of m's graph.
 * `what` prefixes messages ("distill_model_set_metadata", "model file
 * 'a.dstl': section META").  DISTILL_EINVAL with a message, or
 * DISTILL_ENOMEM; m is unchanged on failure.
 */
int meta_set(distill_model *m, const char *key, const char *value, const char *what);

/* The checks that span keys: "normalize.mean" and "normalize.std" come
 * together and hold as many values.  DISTILL_EINVAL naming `what`. */
int meta_check(const distill_model *m, const char *what);

/* Parse a comma-separated list of at most `cap` finite numbers; the count,
 * or -1. */
int meta_parse_floats(const char *s, float *v, int cap);

#endif /* DISTILL_MODEL_META_H */

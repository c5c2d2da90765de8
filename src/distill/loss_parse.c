/*
 * loss_parse.c - distill_loss_parse: "name" or "name:key=value,key=value".
 *
 *   ce       smoothing=0
 *   kd       T=4, alpha=0.9, ls=0
 *   dkd      T=4, alpha=1, beta=8, ls=0    (mdistiller's CIFAR setting)
 *   dist     T=1, beta=1, gamma=1          (the paper's ImageNet setting)
 *   mlkd     ls=0, mask=0
 *   fitnets  student=NODE, teacher=NODE
 *   at       student=NODE, teacher=NODE, p=2
 *   sp       student=NODE, teacher=NODE
 *   rkd      student=NODE, teacher=NODE, dist=25, angle=50
 *   pkt      student=NODE, teacher=NODE
 *   any      weight=1
 *
 * Spaces around names, keys and values are ignored.  Numbers are read in
 * the "C" locale's format whatever the host's locale is.  Every error is
 * DISTILL_EINVAL with a message that quotes the spec and names the bad part.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "distill/loss_internal.h"
#include "util/util.h"

#define MAX_KEYS 8

typedef struct kv {
    const char *key, *val; /* into the parser's copy of the spec */
} kv;

typedef struct loss_syntax {
    const char *name;
    const char *keys[MAX_KEYS]; /* besides "weight"; NULL-terminated */
    int taps;                   /* needs student= and teacher= */
} loss_syntax;

static const loss_syntax syntaxes[] = {
    {"ce", {"smoothing", NULL}, 0},
    {"kd", {"T", "alpha", "ls", NULL}, 0},
    {"dkd", {"T", "alpha", "beta", "ls", NULL}, 0},
    {"dist", {"T", "beta", "gamma", NULL}, 0},
    {"mlkd", {"ls", "mask", NULL}, 0},
    {"fitnets", {"student", "teacher", NULL}, 1},
    {"at", {"student", "teacher", "p", NULL}, 1},
    {"sp", {"student", "teacher", NULL}, 1},
    {"rkd", {"student", "teacher", "dist", "angle", NULL}, 1},
    {"pkt", {"student", "teacher", NULL}, 1},
};
#define N_SYNTAXES (sizeof syntaxes / sizeof syntaxes[0])

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

static const char *find(const kv *kvs, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(kvs[i].key, key))
            return kvs[i].val;
    return NULL;
}

/* Read key as a number (default def if absent); 0, or -1 if not a number. */
static int number(const kv *kvs, int n, const char *key, double def, double *out)
{
    const char *v = find(kvs, n, key);
    if (!v) {
        *out = def;
        return 0;
    }
    return parse_decimal(v, out);
}

/* Read key as a 0/1 flag (default 0); 0, or -1 if it is not 0 or 1. */
static int flag(const kv *kvs, int n, const char *key, int *out)
{
    double v;
    if (number(kvs, n, key, 0.0, &v) || (v != 0.0 && v != 1.0))
        return -1;
    *out = v == 1.0;
    return 0;
}

int distill_loss_parse(distill_loss **out, const char *spec, float *weight)
{
    if (!out)
        return seterr(DISTILL_EINVAL, "distill_loss_parse: out is NULL");
    *out = NULL;
    if (!spec)
        return seterr(DISTILL_EINVAL, "distill_loss_parse: spec is NULL");

    char *copy = xstrdup(spec);
    if (!copy)
        return DISTILL_ENOMEM;
    int rc = DISTILL_OK;
    kv kvs[MAX_KEYS + 1];
    int nkv = 0;

    char *colon = strchr(copy, ':');
    char *args = NULL;
    if (colon) {
        *colon = '\0';
        args = colon + 1;
    }
    const char *name = trim(copy);
    if (!*name) {
        rc = seterr(DISTILL_EINVAL, "loss spec '%s': no loss name (expected e.g. 'kd:T=4')", spec);
        goto done;
    }
    if (!strcmp(name, "cross-entropy") || !strcmp(name, "cross_entropy"))
        name = "ce";
    const loss_syntax *syn = NULL;
    for (size_t i = 0; i < N_SYNTAXES; i++)
        if (!strcmp(syntaxes[i].name, name))
            syn = &syntaxes[i];
    if (!syn) {
        rc = seterr(DISTILL_EINVAL,
                    "loss spec '%s': unknown loss '%s' (known: ce, kd, dkd, dist, mlkd, fitnets, "
                    "at, sp, rkd, pkt)",
                    spec, name);
        goto done;
    }

    /* key=value pairs ("kd:" alone has none) */
    if (args && *trim(args)) {
        char *p = args;
        for (;;) {
            char *comma = strchr(p, ',');
            if (comma)
                *comma = '\0';
            char *item = trim(p);
            char *eq = strchr(item, '=');
            if (!eq) {
                rc = seterr(DISTILL_EINVAL, "loss spec '%s': '%s' is not key=value", spec, item);
                goto done;
            }
            *eq = '\0';
            char *key = trim(item), *val = trim(eq + 1);
            int known = !strcmp(key, "weight");
            for (int k = 0; !known && syn->keys[k]; k++)
                known = !strcmp(key, syn->keys[k]);
            if (!known) {
                char list[160] = "";
                for (int k = 0; syn->keys[k]; k++) {
                    strcat(list, syn->keys[k]);
                    strcat(list, ", ");
                }
                strcat(list, "weight");
                rc = seterr(DISTILL_EINVAL, "loss spec '%s': unknown key '%s' for %s (known: %s)",
                            spec, key, syn->name, list);
                goto done;
            }
            if (find(kvs, nkv, key)) {
                rc = seterr(DISTILL_EINVAL, "loss spec '%s': %s is given twice", spec, key);
                goto done;
            }
            if (!*val) {
                rc = seterr(DISTILL_EINVAL, "loss spec '%s': %s has no value", spec, key);
                goto done;
            }
            kvs[nkv].key = key;
            kvs[nkv].val = val;
            nkv++;
            if (!comma)
                break;
            p = comma + 1;
        }
    }

    double w;
    if (number(kvs, nkv, "weight", 1.0, &w) || w < 0.0 || w > FLT_MAX) {
        rc = seterr(DISTILL_EINVAL, "loss spec '%s': weight must be a number >= 0 and <= %g", spec,
                    (double)FLT_MAX);
        goto done;
    }
    if (find(kvs, nkv, "weight") && !weight) {
        rc = seterr(DISTILL_EINVAL,
                    "loss spec '%s': weight is given but the caller takes no weight", spec);
        goto done;
    }

    const char *sn = find(kvs, nkv, "student"), *tn = find(kvs, nkv, "teacher");
    if (syn->taps && (!sn || !tn)) {
        rc = seterr(DISTILL_EINVAL,
                    "loss spec '%s': %s needs student=NODE and teacher=NODE (missing %s)", spec,
                    syn->name, !sn ? "student" : "teacher");
        goto done;
    }

    distill_loss *l = NULL;
    if (!strcmp(name, "ce")) {
        double eps;
        if (number(kvs, nkv, "smoothing", 0.0, &eps) || eps < 0.0 || eps >= 1.0) {
            rc = seterr(DISTILL_EINVAL, "loss spec '%s': smoothing must be a number in [0, 1)",
                        spec);
            goto done;
        }
        rc = distill_loss_cross_entropy(&l, (float)eps);
    } else if (!strcmp(name, "kd") || !strcmp(name, "dkd")) {
        int dkd = name[0] == 'd';
        double T, alpha, beta = 0.0;
        if (number(kvs, nkv, "T", 4.0, &T) || !(T > 0.0)) {
            rc = seterr(DISTILL_EINVAL, "loss spec '%s': T must be a positive number", spec);
            goto done;
        }
        if (number(kvs, nkv, "alpha", dkd ? 1.0 : 0.9, &alpha) || alpha < 0.0 ||
            (!dkd && alpha > 1.0)) {
            rc = seterr(DISTILL_EINVAL, "loss spec '%s': alpha must be a number %s", spec,
                        dkd ? ">= 0" : "in [0, 1]");
            goto done;
        }
        if (dkd && (number(kvs, nkv, "beta", 8.0, &beta) || beta < 0.0)) {
            rc = seterr(DISTILL_EINVAL, "loss spec '%s': beta must be a number >= 0", spec);
            goto done;
        }
        int ls;
        if (flag(kvs, nkv, "ls", &ls)) {
            rc = seterr(DISTILL_EINVAL, "loss spec '%s': ls must be 0 or 1", spec);
            goto done;
        }
        if (dkd)
            rc = ls ? distill_loss_dkd_ls(&l, (float)T, (float)alpha, (float)beta)
                    : distill_loss_dkd(&l, (float)T, (float)alpha, (float)beta);
        else
            rc = ls ? distill_loss_kd_ls(&l, (float)T, (float)alpha)
                    : distill_loss_kd(&l, (float)T, (float)alpha);
    } else if (!strcmp(name, "dist")) {
        double T, beta, gamma;
        if (number(kvs, nkv, "T", 1.0, &T) || !(T > 0.0)) {
            rc = seterr(DISTILL_EINVAL, "loss spec '%s': T must be a positive number", spec);
            goto done;
        }
        if (number(kvs, nkv, "beta", 1.0, &beta) || beta < 0.0 ||
            number(kvs, nkv, "gamma", 1.0, &gamma) || gamma < 0.0) {
            rc = seterr(DISTILL_EINVAL, "loss spec '%s': beta and gamma must be numbers >= 0",
                        spec);
            goto done;
        }
        rc = distill_loss_dist(&l, (float)T, (float)beta, (float)gamma);
    } else if (!strcmp(name, "mlkd")) {
        int ls, mask;
        if (flag(kvs, nkv, "ls", &ls) || flag(kvs, nkv, "mask", &mask)) {
            rc = seterr(DISTILL_EINVAL, "loss spec '%s': ls and mask must be 0 or 1", spec);
            goto done;
        }
        rc = distill_loss_mlkd(&l, ls, mask);
    } else if (!strcmp(name, "fitnets")) {
        rc = distill_loss_fitnets(&l, sn, tn);
    } else if (!strcmp(name, "at")) {
        double p;
        if (number(kvs, nkv, "p", 2.0, &p) || !(p > 0.0)) {
            rc = seterr(DISTILL_EINVAL, "loss spec '%s': p must be a positive number", spec);
            goto done;
        }
        rc = distill_loss_attention(&l, sn, tn, (float)p);
    } else if (!strcmp(name, "sp")) {
        rc = distill_loss_similarity(&l, sn, tn);
    } else if (!strcmp(name, "rkd")) {
        double wd, wa;
        if (number(kvs, nkv, "dist", 25.0, &wd) || wd < 0.0) {
            rc = seterr(DISTILL_EINVAL, "loss spec '%s': dist must be a number >= 0", spec);
            goto done;
        }
        if (number(kvs, nkv, "angle", 50.0, &wa) || wa < 0.0) {
            rc = seterr(DISTILL_EINVAL, "loss spec '%s': angle must be a number >= 0", spec);
            goto done;
        }
        rc = distill_loss_rkd(&l, sn, tn, (float)wd, (float)wa);
    } else {
        rc = distill_loss_pkt(&l, sn, tn);
    }
    if (rc) {
        rc = seterr(rc, "loss spec '%s': %s", spec, util_last_error());
        goto done;
    }
    if (weight)
        *weight = (float)w;
    *out = l;
done:
    xfree(copy);
    return rc;
}

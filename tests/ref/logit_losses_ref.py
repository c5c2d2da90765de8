#!/usr/bin/python3
"""Float64 reference values of the DIST, MLKD and logit-standardized KD/DKD
losses, written from the papers' formulas with NumPy, for test_loss.

Usage: logit_losses_ref.py BATCH_FILE
BATCH_FILE: "n C" then n rows of student logits and n rows of teacher
logits, then n labels.  Prints one "spec<TAB>value" line per loss.
Exits 77 (skip) when NumPy cannot be imported."""
import sys

try:
    import numpy as np
except ImportError:
    sys.exit(77)


def log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def softmax(x):
    return np.exp(log_softmax(x))


def kl_logits(xt, xs):
    # KL(softmax(xt) || softmax(xs)) per row from log probabilities, mean over the batch
    lt, ls = log_softmax(xt), log_softmax(xs)
    return float(np.mean(np.sum(np.exp(lt) * (lt - ls), axis=1)))


def standardize(x):
    return (x - x.mean(axis=1, keepdims=True)) / (1e-7 + x.std(axis=1, ddof=1, keepdims=True))


def kl(pt, ps):
    # sum over classes of pt (log pt - log ps), mean over the batch
    return float(np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)))


def kd(s, t, y, T, alpha, ls):
    zs, zt = (standardize(s), standardize(t)) if ls else (s, t)
    ce = -np.mean(np.log(softmax(s))[np.arange(len(y)), y])
    return alpha * T * T * kl(softmax(zt / T), softmax(zs / T)) + (1 - alpha) * ce


def dkd(s, t, y, T, alpha, beta, ls):
    zs, zt = (standardize(s), standardize(t)) if ls else (s, t)
    ps, pt = softmax(zs / T), softmax(zt / T)
    n = len(y)
    gt = np.zeros_like(ps, dtype=bool)
    gt[np.arange(n), y] = True
    bs = np.stack([ps[gt], ps[~gt].reshape(n, -1).sum(1)], 1)
    bt = np.stack([pt[gt], pt[~gt].reshape(n, -1).sum(1)], 1)
    tckd = kl(bt, bs)
    nckd = kl_logits(zt / T - 1000.0 * gt, zs / T - 1000.0 * gt)
    return (alpha * tckd + beta * nckd) * T * T


def pearson_rows(a, b):
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def dist(s, t, T, beta, gamma):
    ps, pt = softmax(s / T), softmax(t / T)
    inter = 1 - pearson_rows(ps, pt).mean()
    intra = 1 - pearson_rows(ps.T, pt.T).mean()
    return T * T * (beta * inter + gamma * intra)


def mlkd(s, t, ls, mask):
    n, C = s.shape
    fs = fc = 1.0
    if mask:
        p1 = softmax(t)
        conf = p1.max(1)
        fs = float(np.mean(conf <= np.percentile(conf, 50)))
        cconf = p1.sum(0)
        fc = float(np.mean(cconf <= np.percentile(cconf, 50)))
    zs, zt = (standardize(s), standardize(t)) if ls else (s, t)
    total = 0.0
    for T in (2.0, 3.0, 4.0, 5.0, 6.0):
        total += fs * T * T * kl(softmax(zt / T), softmax(zs / T))
        ps, pt = softmax(s / T), softmax(t / T)
        total += fs * np.sum((pt @ pt.T - ps @ ps.T) ** 2) / n
        total += fc * np.sum((pt.T @ pt - ps.T @ ps) ** 2) / C
    return total


def main():
    tok = open(sys.argv[1]).read().split()
    n, C = int(tok[0]), int(tok[1])
    v = np.array([float(x) for x in tok[2:2 + 2 * n * C]], dtype=np.float64)
    s, t = v[:n * C].reshape(n, C), v[n * C:].reshape(n, C)
    y = np.array([int(x) for x in tok[2 + 2 * n * C:2 + 2 * n * C + n]])
    out = [
        ("kd:T=4,alpha=0.9,ls=1", kd(s, t, y, 4.0, 0.9, True)),
        ("kd:T=2,alpha=1,ls=1", kd(s, t, y, 2.0, 1.0, True)),
        ("dkd:T=4,alpha=1,beta=8,ls=1", dkd(s, t, y, 4.0, 1.0, 8.0, True)),
        ("dist:T=1,beta=1,gamma=1", dist(s, t, 1.0, 1.0, 1.0)),
        ("dist:T=4,beta=2,gamma=0.5", dist(s, t, 4.0, 2.0, 0.5)),
        ("mlkd", mlkd(s, t, False, False)),
        ("mlkd:ls=1", mlkd(s, t, True, False)),
        ("mlkd:mask=1", mlkd(s, t, False, True)),
        ("mlkd:ls=1,mask=1", mlkd(s, t, True, True)),
    ]
    for spec, val in out:
        print("%s\t%.17g" % (spec, val))


main()

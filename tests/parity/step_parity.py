#!/usr/bin/python3
"""Step-level parity of libdistill's training against PyTorch, on the e2e teacher.

Replays the steps that distill-parity-dump recorded (zoo resnet20 on Fashion-MNIST, the
e2e recipe: batch 128, SGD lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4, cosine per
step) in the PyTorch peer's own network, and compares the loss, every gradient, every
weight and the BatchNorm running statistics after each step.  Run by hand, never in CI
(see README.md beside this file).

usage: step_parity.py PEER_SCRIPT DUMP [--free] [--sensitivity]
       step_parity.py PEER_SCRIPT DUMP --write-init OUT [--init-seed S]
  PEER_SCRIPT  the peer (torch_kd.py): its resnet20() is the network
  DUMP         written by `distill-parity-dump DUMP`
  --write-init OUT   write the peer's initial weights (torch.manual_seed(S), S = 0 as in
               the peer's e2e_teacher, then resnet20()) in DUMP's parameter order, raw
               float32, for `INIT_FROM=OUT distill-parity-dump ...`

Three references are computed from the same state:
  forced  at every step, PyTorch in float64 and in float32 start from *our* weights and
          running statistics before that step (their momentum buffers are their own),
          run the step on the same batch, and are compared with our state after it.
          This isolates one step's error: ours and PyTorch float32's against float64.
  free    (--free) PyTorch float32 and float64 run on their own from our initial weights;
          differences then grow as rounding is amplified by training.
  sensitivity  (--sensitivity) float64 also from our weights times (1 + u 2^-24), u uniform in
          [-1, 1]: how much one rounding of the weights alone moves each gradient.  A step
          whose ReLU masks sit on a knife edge moves a lot; such a step is ill-conditioned,
          and a gradient error there within this change is rounding, not a bug.
Besides: the batches are checked against the training set (normalization, the crop of the
zero-padded normalized image, the flip, each epoch a permutation), the learning rate
against CosineAnnealingLR, and at the end our inference logits against PyTorch's eval mode.
"""
import gzip
import importlib.util
import math
import struct
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

MEAN, STD = 0.2860, 0.3530
DATA = "/usr/share/datasets/fashion-mnist"


def read_dump(path):
    raw = open(path, "rb").read()
    pos = 0

    def take(n):
        nonlocal pos
        b = raw[pos:pos + n]
        if len(b) != n:
            sys.exit(f"{path}: truncated at byte {pos}")
        pos += n
        return b

    def arr(dtype, n):
        return np.frombuffer(take(np.dtype(dtype).itemsize * n), dtype=dtype).copy()

    if take(8) != b"DSTLPRTY":
        sys.exit(f"{path}: not a parity dump")
    fmt, n_params, steps, batch, eval_n, skip = struct.unpack("<6I", take(24))
    if fmt != 2:
        sys.exit(f"{path}: format {fmt}, expected 2")
    params = []
    for _ in range(n_params):
        (ln,) = struct.unpack("<I", take(4))
        name = take(ln).decode()
        kind, trainable, numel, offset = struct.unpack("<IIqq", take(24))
        params.append(dict(name=name, kind=kind, trainable=bool(trainable), numel=numel, offset=offset))
    init = [arr("<f4", p["numel"]) for p in params]
    rec = []
    for _ in range(steps):
        loss, lr = struct.unpack("<dd", take(16))
        x = arr("<f4", batch * 784).reshape(batch, 1, 28, 28)
        plain = arr("<f4", batch * 784).reshape(batch, 1, 28, 28)
        y = arr("<i4", batch)
        grads = {p["name"]: arr("<f4", p["numel"]) for p in params if p["trainable"]}
        after = [arr("<f4", p["numel"]) for p in params]
        rec.append(dict(loss=loss, lr=lr, x=x, plain=plain, y=y, grads=grads, after=after))
    xe = arr("<f4", eval_n * 784).reshape(eval_n, 1, 28, 28) if eval_n else None
    le = arr("<f4", eval_n * 10).reshape(eval_n, 10) if eval_n else None
    top1 = struct.unpack("<d", take(8))[0] if eval_n and pos < len(raw) else None
    if pos != len(raw):
        sys.exit(f"{path}: {len(raw) - pos} bytes left over")
    return params, init, rec, xe, le, skip, top1


def torch_name(ours, n=3):
    """Our zoo names ("layer2.0.shortcut.1.weight") to the peer's ("blocks.3.shortcut.1.weight")."""
    if ours.startswith("layer"):
        stage, block, rest = ours[5:].split(".", 2)
        return f"blocks.{(int(stage) - 1) * n + int(block)}.{rest}"
    return ours


def load_peer(path):
    spec = importlib.util.spec_from_file_location("peer", path)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    return peer


def set_state(model, params, values):
    sd = model.state_dict()
    with torch.no_grad():
        for p, v in zip(params, values):
            t = sd[torch_name(p["name"])]
            t.copy_(torch.from_numpy(v.astype(np.float64)).reshape(t.shape))


def get_state(model, params):
    sd = model.state_dict()
    return [sd[torch_name(p["name"])].detach().double().numpy().ravel().copy() for p in params]


def momentum_buffers(ckpt_path, params):
    """Our SGD momentum buffers from a trainer checkpoint: the optimizer state's OPTS section
    (util/container.h: tag, u32 flags, u64 length, payload) holds one float per scalar of the
    parameter block, which holds the trainable tensors (the statistics have their own)."""
    raw = open(ckpt_path, "rb").read()
    n = sum(p["numel"] for p in params if p["trainable"])
    at = raw.rfind(b"OPTS")
    flags, length = struct.unpack("<IQ", raw[at + 4:at + 16]) if at >= 0 else (0, 0)
    if at < 0 or flags != 0 or length != 4 * n:
        sys.exit(f"{ckpt_path}: no momentum buffers of {n} floats found")
    block = np.frombuffer(raw[at + 16:at + 16 + length], dtype="<f4")
    return {p["name"]: block[p["offset"]:p["offset"] + p["numel"]].copy() for p in params if p["trainable"]}


def make(peer, dtype, params, values, total_steps, skip=0, buffers=None):
    """The peer's network, optimizer and schedule, from our weights `values`; after `skip`
    steps of the schedule, with our momentum buffers."""
    torch.manual_seed(0)
    model = peer.resnet20().to(dtype)
    set_state(model, params, values)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total_steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(skip):
            sched.step()
    if buffers:
        named = dict(model.named_parameters())
        for name, b in buffers.items():
            t = named[torch_name(name)]
            opt.state[t]["momentum_buffer"] = torch.from_numpy(b.astype(np.float64)).to(dtype).reshape(t.shape)
    return model, opt, sched


def step(model, opt, sched, x, y, dtype):
    """One step of the peer's fit(): forward, CE, backward, SGD, scheduler.  Returns the loss,
    the gradients by name and the rate used."""
    lr = opt.param_groups[0]["lr"]
    out = model(torch.from_numpy(x).to(dtype))
    loss = F.cross_entropy(out, torch.from_numpy(y.astype(np.int64)))
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad.detach().double().numpy().ravel().copy() for n, p in model.named_parameters()}
    opt.step()
    sched.step()
    return float(loss), grads, lr


def rel(a, b, scale=None):
    """max |a - b| over max |scale| (default b)."""
    s = np.max(np.abs(b if scale is None else scale))
    return float(np.max(np.abs(a - b)) / s) if s > 0 else float(np.max(np.abs(a - b)))


def worst(pairs):
    """(name, ours, torch32) with the largest ours/torch32 ratio; pairs: name -> (ours, t32)."""
    name = max(pairs, key=lambda k: pairs[k][0] / max(pairs[k][1], 1e-9))
    return name, pairs[name][0], pairs[name][1]


def read_idx(path):
    with gzip.open(path) as f:
        raw = f.read()
    ndim = struct.unpack(">I", raw[:4])[0] & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def check_batches(rec, steps_per_epoch, skip):
    """Each plain view is a training image normalized as the peer does it; each augmented view
    is one of its 50 crop/flip views with zeros (normalized) padded; epochs are permutations."""
    imgs = read_idx(f"{DATA}/train-images-idx3-ubyte.gz")
    labels = read_idx(f"{DATA}/train-labels-idx1-ubyte.gz")
    index = {}
    for i in range(len(imgs)):
        index.setdefault(imgs[i].tobytes(), i)
    norm_err, seen, offsets, flips, bad = 0.0, [set()], np.zeros((5, 5), int), 0, 0
    for k, r in enumerate(rec):
        if k and (skip + k) % steps_per_epoch == 0:
            seen.append(set())
        for j in range(len(r.y)):
            u8 = np.clip(np.rint((r.plain[j, 0].astype(np.float64) * STD + MEAN) * 255), 0, 255).astype(np.uint8)
            i = index.get(u8.tobytes())
            if i is None or labels[i] != r.y[j]:
                bad += 1
                continue
            if i in seen[-1]:
                bad += 1
            seen[-1].add(i)
            ref = (imgs[i].astype(np.float32) / 255.0 - MEAN) / STD  # the peer's load()
            norm_err = max(norm_err, float(np.max(np.abs(ref - r.plain[j, 0]))))
            padded = np.pad(r.plain[j, 0], 2)
            found = False
            for oy in range(5):
                for ox in range(5):
                    crop = padded[oy:oy + 28, ox:ox + 28]
                    for fl in (0, 1):
                        v = crop[:, ::-1] if fl else crop
                        if np.array_equal(v, r.x[j, 0]):
                            offsets[oy, ox] += 1
                            flips += fl
                            found = True
                            break
                    if found:
                        break
                if found:
                    break
            bad += not found
    n = sum(len(r.y) for r in rec)
    print(f"batches: {n} samples; {bad} not found as a crop/flip of a training image or repeated "
          f"in an epoch; normalization max |ours - peer's load()| = {norm_err:.3g}")
    print(f"  crop offsets (rows oy, columns ox), counts: {offsets.tolist()}; flipped {flips}/{n}")
    return bad == 0


class Rec(dict):
    __getattr__ = dict.__getitem__


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    peer = load_peer(args[0])
    params, init, rec, xe, le, skip, top1 = read_dump(args[1])
    rec = [Rec(r) for r in rec]
    torch.set_num_threads(1)
    if "--write-init" in args:
        out = args[args.index("--write-init") + 1]
        s = int(args[args.index("--init-seed") + 1]) if "--init-seed" in args else 0
        torch.manual_seed(s)
        sd = peer.resnet20().state_dict()
        np.concatenate([sd[torch_name(p["name"])].numpy().ravel() for p in params]).astype("<f4").tofile(out)
        print(f"wrote the peer's initial weights (torch.manual_seed({s})) to {out}")
        return
    free = "--free" in args
    sens = "--sensitivity" in args
    total = 468 * 3  # steps in the e2e run: 60000 // 128 per epoch, 3 epochs
    names = [p["name"] for p in params]
    trainable = [p for p in params if p["trainable"]]
    stat_idx = [i for i, p in enumerate(params) if p["name"].endswith(("running_mean", "running_var"))]

    ok = check_batches(rec, 468, skip)

    bufs = momentum_buffers(args[1] + ".ckpt", params) if skip else None
    m64, o64, s64 = make(peer, torch.float64, params, init, total, skip, bufs)
    m32, o32, s32 = make(peer, torch.float32, params, init, total, skip, bufs)
    if sens:
        mp, op, sp = make(peer, torch.float64, params, init, total, skip, bufs)
        noise = np.random.default_rng(1)
    if free:
        f64, fo64, fs64 = make(peer, torch.float64, params, init, total, skip, bufs)
        f32, fo32, fs32 = make(peer, torch.float32, params, init, total, skip, bufs)
    before = init
    first = None
    print("step | loss ours-f64  t32-f64 | lr ours-torch | grad err ours / t32 (worst tensor) | "
          "update err ours / t32 (worst) | running stats ours / t32 (worst)")
    for k, r in enumerate(rec):
        set_state(m64, params, before)
        set_state(m32, params, before)
        l64, g64, lr64 = step(m64, o64, s64, r.x, r.y, torch.float64)
        l32, g32, _ = step(m32, o32, s32, r.x, r.y, torch.float32)
        a64, a32 = get_state(m64, params), get_state(m32, params)
        if sens:
            # the conditioning of the step: float64 from weights moved by one float32 rounding
            set_state(mp, params, [v * (1 + 2.0 ** -24 * noise.uniform(-1, 1, v.shape)) for v in before])
            _, gp, _ = step(mp, op, sp, r.x, r.y, torch.float64)
            gs = {p["name"]: rel(gp[torch_name(p["name"])], g64[torch_name(p["name"])]) for p in trainable}
        gerr = {p["name"]: (rel(r.grads[p["name"]], g64[torch_name(p["name"])]),
                            rel(g32[torch_name(p["name"])], g64[torch_name(p["name"])])) for p in trainable}
        uerr, serr = {}, {}
        for i, p in enumerate(params):
            ours, ref, t32 = r.after[i].astype(np.float64), a64[i], a32[i]
            if p["trainable"]:
                upd = ref - before[i].astype(np.float64)
                uerr[p["name"]] = (rel(ours, ref, upd), rel(t32, ref, upd))
            else:
                serr[p["name"]] = (rel(ours, ref), rel(t32, ref))
        gw, uw, sw = worst(gerr), worst(uerr), worst(serr)
        if sens:
            # against the conditioning: the yardstick is the larger of PyTorch float32's error
            # and the change that one rounding of the weights makes in float64
            gerr = {n: (e, max(t, gs[n])) for n, (e, t) in gerr.items()}
            gw2 = worst(gerr)
            print(f"     conditioning: worst gradient ours {gw2[1]:.1e} vs yardstick {gw2[2]:.1e} {gw2[0]}; "
                  f"largest change from one rounding of the weights {max(gs.values()):.1e} "
                  f"{max(gs, key=gs.get)}")
        print(f"{skip + k + 1:4d} | {r.loss - l64:+.2e} {l32 - l64:+.2e} | {r.lr - lr64:+.1e} | "
              f"{gw[1]:.1e} / {gw[2]:.1e} {gw[0]} | {uw[1]:.1e} / {uw[2]:.1e} {uw[0]} | "
              f"{sw[1]:.1e} / {sw[2]:.1e} {sw[0]}")
        for what, d in (("gradient", gerr), ("update", uerr), ("running statistic", serr)):
            for n, (e_ours, e_t32) in d.items():
                # beyond float rounding: ten times PyTorch float32's own error, and 1e-4
                if first is None and e_ours > 10 * e_t32 and e_ours > 1e-4:
                    first = (skip + k + 1, what, n, e_ours, e_t32)
        if abs(r.loss - l64) > 10 * abs(l32 - l64) + 1e-5 and first is None:
            first = (skip + k + 1, "loss", "loss", abs(r.loss - l64), abs(l32 - l64))
        if abs(r.lr - lr64) > 1e-12 and first is None:
            first = (skip + k + 1, "learning rate", "lr", abs(r.lr - lr64), 0.0)
        if free:
            fl64, _, _ = step(f64, fo64, fs64, r.x, r.y, torch.float64)
            fl32, _, _ = step(f32, fo32, fs32, r.x, r.y, torch.float32)
            w64, w32 = get_state(f64, params), get_state(f32, params)
            d_ours = max(rel(r.after[i].astype(np.float64), w64[i]) for i in range(len(params)))
            d_32 = max(rel(w32[i], w64[i]) for i in range(len(params)))
            print(f"     free: loss ours {r.loss:.6f} t32 {fl32:.6f} f64 {fl64:.6f}; "
                  f"max weight rel. diff to f64: ours {d_ours:.1e}, t32 {d_32:.1e}")
        before = r.after

    if xe is not None:
        m32.eval()
        set_state(m32, params, before)
        with torch.no_grad():
            lt = m32(torch.from_numpy(xe)).double().numpy()
        imgs = read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz")[:len(xe)]
        ref = (imgs.astype(np.float32) / 255.0 - MEAN) / STD
        agree = float(np.mean(lt.argmax(1) == le.argmax(1)))
        print(f"eval ({len(xe)} test images, after step {skip + len(rec)}): test-image normalization "
              f"max diff {float(np.max(np.abs(ref - xe[:, 0]))):.3g}; logits max |ours - torch eval| "
              f"{float(np.max(np.abs(le - lt))):.3g} (of max |logit| {float(np.max(np.abs(lt))):.3g}); "
              f"argmax agreement {agree:.4f}")
        # the whole test set: our distill_evaluate against PyTorch's eval of the same weights
        xt = (read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0 - MEAN) / STD
        yt = read_idx(f"{DATA}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
        with torch.no_grad():
            hits = sum(int((m32(torch.from_numpy(xt[i:i + 1000, None])).argmax(1).numpy() == yt[i:i + 1000]).sum())
                       for i in range(0, len(xt), 1000))
        ours = "not recorded" if top1 is None else f"{top1:.4f}"
        print(f"test accuracy of our weights after step {skip + len(rec)}: distill_evaluate {ours}, "
              f"PyTorch eval {hits / len(xt):.4f}")
    if first:
        print(f"FIRST DIVERGENCE: step {first[0]}, {first[1]} of {first[2]}: ours {first[3]:.3g}, "
              f"PyTorch float32 {first[4]:.3g} (both against float64)")
    else:
        print(f"no divergence beyond float rounding in steps {skip + 1}-{skip + len(rec)}" +
              ("" if ok else " (but the batch check failed)"))
    return 0 if first is None and ok else 1


if __name__ == "__main__":
    sys.exit(main())

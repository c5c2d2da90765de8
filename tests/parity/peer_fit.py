#!/usr/bin/python3
"""The PyTorch peer's e2e teacher run (its own fit(): SEED drives the data order and the
augmentation) from a chosen initialization, to separate the initialization from the rest.

usage: peer_fit.py PEER_SCRIPT --init-seed S [--batches FILE]
                  torch.manual_seed(S), then resnet20()
       peer_fit.py PEER_SCRIPT --init-from DUMP [--batches FILE]
                  our initial weights, from a dump of distill-parity-dump (any STEPS)
  --batches FILE  train on our run's batch stream (`BATCHES_ONLY=1 distill-parity-dump
                  FILE`: the same images, crops, flips and order as our e2e run) instead
                  of the peer's own; with --init-from as well, both sides then take the
                  same steps from the same start, and differ only by float rounding
env:   SEED, EPOCHS, THREADS (default 1), FASHION_MNIST_DIR, as the peer
Prints one JSON line as the peer's e2e_teacher case does, with the initialization named.

The peer's own e2e_teacher builds its network right after torch.manual_seed(0), before
fit() seeds anything with SEED: all of its seeds start from the same weights.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_parity  # noqa: E402  (the dump reader and the name mapping)


def main():
    args = sys.argv[1:]
    batches = None
    if len(args) == 5 and args[3] == "--batches":
        batches = args[4]
        args = args[:3]
    if len(args) != 3 or args[1] not in ("--init-seed", "--init-from"):
        sys.exit(__doc__)
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    peer = step_parity.load_peer(args[0])
    if args[1] == "--init-seed":
        torch.manual_seed(int(args[2]))
        model = peer.resnet20()
        init = f"torch.manual_seed({args[2]})"
    else:
        params, values = step_parity.read_dump(args[2])[:2]
        model = peer.resnet20()
        step_parity.set_state(model, params, values)
        init = f"libdistill's initial weights from {args[2]}"
    if batches:
        acc, epochs, secs = fit_on(peer, model, batches)
    else:
        acc, epochs, secs = peer.fit(model)
    print(json.dumps(dict(case="e2e_teacher", value=round(acc, 4), unit="accuracy", epochs=epochs,
                          seconds=round(secs, 1), seed=int(os.environ.get("SEED", "0")), init=init,
                          batches=batches or "the peer's own")),
          flush=True)


def fit_on(peer, model, path):
    """The peer's fit() with its batches read from `path` instead of drawn: the same model,
    loss, optimizer, schedule (per step over the file's steps) and evaluation."""
    import time
    import numpy as np
    import torch.nn.functional as F
    f = open(path, "rb")
    head = f.read(20)
    if head[:8] != b"DSTLBTCH" or int.from_bytes(head[8:12], "little") != 1:
        sys.exit(f"{path}: not a batch stream")
    steps, batch = int.from_bytes(head[12:16], "little"), int.from_bytes(head[16:20], "little")
    xt, yt = peer.load("test")
    opt = peer.sgd(model, 0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        xb = torch.from_numpy(np.frombuffer(f.read(4 * batch * 784), dtype="<f4").reshape(batch, 1, 28, 28).copy())
        yb = torch.from_numpy(np.frombuffer(f.read(4 * batch), dtype="<i4").astype(np.int64))
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return peer.accuracy(model, xt, yt), steps * batch // 59904, time.perf_counter() - t0


if __name__ == "__main__":
    main()

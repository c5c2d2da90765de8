#!/usr/bin/python3
"""The PyTorch peer's e2e teacher run (its own fit(): SEED drives the data order and the
augmentation) from a chosen initialization, to separate the initialization from the rest.

usage: peer_fit.py PEER_SCRIPT --init-seed S        torch.manual_seed(S), then resnet20()
       peer_fit.py PEER_SCRIPT --init-from DUMP     our initial weights, from a dump of
                                                    distill-parity-dump (any STEPS)
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
    acc, epochs, secs = peer.fit(model)
    print(json.dumps(dict(case="e2e_teacher", value=round(acc, 4), unit="accuracy", epochs=epochs,
                          seconds=round(secs, 1), seed=int(os.environ.get("SEED", "0")), init=init)),
          flush=True)


if __name__ == "__main__":
    main()

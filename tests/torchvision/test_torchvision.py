#!/usr/bin/python3
"""The zoo's torchvision models against torchvision itself.

    test_torchvision.py RUNNER WORKDIR

For each case below, builds torchvision.models.<name>(num_classes=10, ...)
with a fixed seed, gives every BatchNorm random scale, shift and running
statistics (so that inference mode is not close to the identity), runs a
fixed random batch in eval mode and in train mode, and writes to
WORKDIR/<case>/:

    model.txt     "<zoo name> <width %> <C> <H> <W> <classes> <batch> <train node>"
    tensors.txt   one line per tensor: "<name> <rank> <dims...>", in the
                  order of tensors.bin
    tensors.bin   the tensors, float32 little-endian, back to back

The tensors are every state_dict entry (num_batches_tracked excepted) under
its own name, and "@input" (N, C, H, W), "@eval" (the eval-mode logits),
"@train" (the train-mode value of <train node>: the logits, or the pooled
features before the dropout where the model has one, since dropout draws
differ) and "@stats.<bn>.running_mean/var" (the statistics after that
train-mode forward). RUNNER (tv_match) copies the weights into the zoo model
by name and compares; it prints the largest differences.

Exits 77 (skipped) when this Python has no torchvision (Debian:
python3-torchvision).
"""
import os
import shutil
import subprocess
import sys

try:
    import torch
    import torchvision
except ImportError as e:  # pragma: no cover
    print(f"skipped: {e} (install python3-torchvision)")
    sys.exit(77)

RUNNER, WORK = sys.argv[1:3]

# case, torchvision builder, kwargs, zoo name, width %, (C, H, W), batch
CASES = [
    ("resnet18_64", torchvision.models.resnet18, {}, "resnet18", 100, (3, 64, 64), 4),
    ("resnet18_odd", torchvision.models.resnet18, {}, "resnet18", 100, (3, 45, 38), 3),
    ("resnet34_32", torchvision.models.resnet34, {}, "resnet34", 100, (3, 32, 32), 4),
    ("resnet50_64", torchvision.models.resnet50, {}, "resnet50", 100, (3, 64, 64), 4),
    ("mobilenet_v2_64", torchvision.models.mobilenet_v2, {}, "mobilenet_v2", 100, (3, 64, 64), 4),
    ("mobilenet_v2_w50_odd", torchvision.models.mobilenet_v2, {"width_mult": 0.5},
     "mobilenet_v2", 50, (3, 50, 41), 3),
]


def write_case(case, build, kwargs, zoo, width, chw, batch):
    torch.manual_seed(1234)
    model = build(num_classes=10, **kwargs)
    g = torch.Generator().manual_seed(99)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            c = mod.num_features
            with torch.no_grad():
                mod.weight.copy_(0.5 + torch.rand(c, generator=g))
                mod.bias.copy_(0.2 * torch.randn(c, generator=g))
                mod.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=g))
    x = torch.randn(batch, *chw, generator=g)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}

    model.eval()
    with torch.no_grad():
        y_eval = model(x)

    model.train()
    if zoo == "mobilenet_v2":
        train_node = "flatten"
        with torch.no_grad():
            f = model.features(x)
            y_train = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(f, (1, 1)), 1)
    else:
        train_node = "fc"
        with torch.no_grad():
            y_train = model(x)
    stats = {"@stats." + k: v.detach().clone() for k, v in model.state_dict().items()
             if k.endswith("running_mean") or k.endswith("running_var")}

    d = os.path.join(WORK, case)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.txt"), "w") as f:
        f.write(f"{zoo} {width} {chw[0]} {chw[1]} {chw[2]} 10 {batch} {train_node}\n")
    tensors = list(state.items()) + [("@input", x), ("@eval", y_eval), ("@train", y_train)]
    tensors += list(stats.items())
    with open(os.path.join(d, "tensors.txt"), "w") as ft, \
            open(os.path.join(d, "tensors.bin"), "wb") as fb:
        for name, t in tensors:
            t = t.detach().to(torch.float32).contiguous()
            ft.write(f"{name} {t.dim()} {' '.join(str(s) for s in t.shape)}\n")
            fb.write(t.numpy().astype("<f4").tobytes())
    return d


def main():
    os.makedirs(WORK, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    failed = 0
    for case in CASES:
        d = write_case(*case)
        r = subprocess.run([RUNNER, d], capture_output=True, text=True)
        sys.stdout.write(f"{case[0]}: " + r.stdout)
        sys.stdout.write(r.stderr)
        if r.returncode != 0:
            print(f"FAIL {case[0]} (exit {r.returncode}; files kept in {d})")
            failed += 1
        else:
            shutil.rmtree(d)  # up to 100 MB per case
    print(f"{len(CASES) - failed} of {len(CASES)} cases match")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""ONNX files made by the onnx package, read by libdistill, and the reverse.

    test_onnx.py RUNNER DISTILL WORKDIR

1. A small CNN with residual blocks, written with onnx.helper the way
   PyTorch exports one (a Pad folded into the next Conv, GELU as its Erf
   pattern, Clip as relu6, the Shape-Gather-Unsqueeze-Concat-Reshape flatten,
   MatMul + Add, a constant Mul and Add between layers, ...), checked by
   onnx.checker, with outputs computed here by a NumPy reference; RUNNER
   (onnx_node_runner --all-pass) imports it and compares to 1e-4.
2. Every zoo model exported by `DISTILL export`, accepted by
   onnx.checker.check_model(full_check=True), and imported back by the same
   program.
3. A model's metadata as metadata_props, both ways: written here with
   onnx.helper and read by the program (`DISTILL summary`), exported by the
   program and read here; a lying entry is refused.
4. Unsupported input is refused with the node's name and the reason.

Exits 77 (skipped) when this Python has no onnx module.
"""
import os
import subprocess
import sys

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:  # pragma: no cover
    print(f"skipped: {e} (install python3-onnx)")
    sys.exit(77)

RUNNER, DISTILL, WORK = sys.argv[1:4]
os.makedirs(WORK, exist_ok=True)
rng = np.random.default_rng(7)
OPSET = int(os.environ.get("ONNX_TEST_OPSET", "13"))


# ------------------------------------------------------------ NumPy reference
def conv(x, w, b=None, stride=1, pad=(0, 0, 0, 0), dil=1, group=1):
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ekh, ekw = dil * (kh - 1) + 1, dil * (kw - 1) + 1
    oh, ow = (h - ekh) // stride + 1, (wd - ekw) // stride + 1
    y = np.zeros((n, o, oh, ow), np.float64)
    og = o // group
    for g in range(group):
        xs = x[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dil:i * dil + stride * (oh - 1) + 1:stride,
                           j * dil:j * dil + stride * (ow - 1) + 1:stride]
                y[:, g * og:(g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def pool(x, k, s, p, kind):
    fill = -np.inf if kind == "max" else 0.0
    x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    win = np.stack([x[:, :, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s]
                    for i in range(k) for j in range(k)])
    return win.max(0) if kind == "max" else win.mean(0)


def bn(x, g, b, m, v, eps=1e-5):
    sh = (1, -1) + (1,) * (x.ndim - 2)
    return (x - m.reshape(sh)) / np.sqrt(v.reshape(sh) + eps) * g.reshape(sh) + b.reshape(sh)


def erf(x):
    from math import erf as e
    return np.vectorize(e)(x)


# ------------------------------------------------------------------ the CNN
nodes, inits = [], []
W = {}


def init(name, arr):
    arr = np.asarray(arr, np.float32)
    W[name] = arr.astype(np.float64)
    inits.append(numpy_helper.from_array(arr, name))
    return name


def node(op, ins, outs, name, **attrs):
    nodes.append(helper.make_node(op, ins, outs if isinstance(outs, list) else [outs],
                                  name=name, **attrs))
    return outs


def conv_bn(x, name, cin, cout, k=3, stride=1, pad=1, group=1, bias=False, pad_node=False):
    w = init(f"{name}.weight", rng.normal(0, 0.3, (cout, cin // group, k, k)))
    ins = [x, w]
    if bias:
        ins.append(init(f"{name}.bias", rng.normal(0, 0.1, cout)))
    if pad_node:  # torch.nn.ZeroPad2d before an unpadded Conv
        pads = init(f"{name}.pads", np.array([0, 0, pad, pad, 0, 0, pad, pad]))
        inits[-1] = numpy_helper.from_array(np.array([0, 0, pad, pad, 0, 0, pad, pad],
                                                     np.int64), f"{name}.pads")
        x = node("Pad", [x, pads], f"{name}.padded", f"{name}.pad", mode="constant")
        ins[0] = x
        pad = 0
    y = node("Conv", ins, f"{name}.out", name, kernel_shape=[k, k], strides=[stride, stride],
             pads=[pad] * 4, group=group)
    g = init(f"{name}.bn.weight", 1 + 0.2 * rng.normal(size=cout))
    b = init(f"{name}.bn.bias", 0.1 * rng.normal(size=cout))
    m = init(f"{name}.bn.running_mean", 0.1 * rng.normal(size=cout))
    v = init(f"{name}.bn.running_var", 0.5 + rng.random(cout))
    return node("BatchNormalization", [y, g, b, m, v], f"{name}.bn.out", f"{name}.bn",
                epsilon=1e-5, momentum=0.9)


def ref_conv_bn(x, name, stride=1, pad=1, group=1, bias=False):
    y = conv(x, W[f"{name}.weight"], W.get(f"{name}.bias") if bias else None, stride,
             (pad,) * 4, 1, group)
    return bn(y, W[f"{name}.bn.weight"], W[f"{name}.bn.bias"], W[f"{name}.bn.running_mean"],
              W[f"{name}.bn.running_var"])


def scalar(name, v):
    return init(name, np.array(v, np.float32))


# stem: Pad -> Conv (+bias) -> BN -> Relu
h = conv_bn("input", "stem", 3, 8, pad=1, bias=True, pad_node=True)
h = node("Relu", [h], "stem.relu.out", "stem.relu")
# block 1: residual, the second activation GELU written with Erf
a = conv_bn(h, "block1.conv1", 8, 8)
a = node("Clip", [a, scalar("zero", 0.0), scalar("six", 6.0)], "block1.relu6.out",
         "block1.relu6")
a = conv_bn(a, "block1.conv2", 8, 8)
s = node("Add", [a, h], "block1.add.out", "block1.add")
d = node("Div", [s, scalar("sqrt2", np.sqrt(2.0))], "block1.gelu.div", "block1.gelu/div")
e = node("Erf", [d], "block1.gelu.erf", "block1.gelu/erf")
e = node("Add", [e, scalar("one", 1.0)], "block1.gelu.add", "block1.gelu/add")
e = node("Mul", [s, e], "block1.gelu.mul", "block1.gelu/mul")
h1 = node("Mul", [e, scalar("half", 0.5)], "block1.out", "block1.gelu")
# block 2: stride 2, depthwise, shortcut conv, LeakyRelu
a = conv_bn(h1, "block2.conv1", 8, 16, stride=2)
a = node("LeakyRelu", [a], "block2.lrelu.out", "block2.lrelu", alpha=0.1)
a = conv_bn(a, "block2.dw", 16, 16, group=16)
sc = conv_bn(h1, "block2.shortcut", 8, 16, k=1, stride=2, pad=0)
s = node("Add", [a, sc], "block2.add.out", "block2.add")
h2 = node("Relu", [s], "block2.out", "block2.relu")
# a constant per-channel scale and shift that follow no layer
h2s = node("Mul", [h2, init("chscale", (1 + 0.5 * rng.random(16)).reshape(1, 16, 1, 1))],
           "scaled", "scale")
h2s = node("Add", [h2s, scalar("shift", 0.25)], "shifted", "shift")
# two pools, concatenated
mp = node("MaxPool", [h2s], "maxpool.out", "maxpool", kernel_shape=[3, 3], strides=[1, 1],
          pads=[1, 1, 1, 1])
# SAME_UPPER with an even kernel pads only after the last row and column
mp = node("MaxPool", [mp], "maxpool2.out", "maxpool2", kernel_shape=[2, 2], strides=[1, 1],
          auto_pad="SAME_UPPER")
pa = node("Pad", [h2s, init("avg.pads", np.zeros(8))], "avgpool.padded", "avgpool.pad",
          mode="constant")
inits[-1] = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "avg.pads")
ap = node("AveragePool", [pa], "avgpool.out", "avgpool", kernel_shape=[3, 3], strides=[1, 1])
cat = node("Concat", [mp, ap], "cat.out", "cat", axis=1)
g = node("GlobalAveragePool", [cat], "pool.out", "pool")
# PyTorch's x.view(x.size(0), -1)
shp = node("Shape", [g], "flat.shape", "flat/shape")
b0 = node("Gather", [shp, init("idx0", 0)], "flat.n", "flat/gather", axis=0)
inits[-1] = numpy_helper.from_array(np.array(0, np.int64), "idx0")
b0 = node("Unsqueeze", [b0, init("axes0", 0)], "flat.n1", "flat/unsqueeze")
inits[-1] = numpy_helper.from_array(np.array([0], np.int64), "axes0")
sh = node("Concat", [b0, init("minus1", 0)], "flat.target", "flat/concat", axis=0)
inits[-1] = numpy_helper.from_array(np.array([-1], np.int64), "minus1")
f = node("Reshape", [g, sh], "flat.out", "flat")
f = node("Dropout", [f], "drop.out", "drop")
f = node("Identity", [f], "id.out", "id")
# MatMul + Add, then Gemm
f = node("MatMul", [f, init("fc1.weight_t", rng.normal(0, 0.3, (32, 24)))], "fc1.mm", "fc1")
f = node("Add", [f, init("fc1.bias", rng.normal(0, 0.1, 24))], "fc1.out", "fc1.add")
f = node("Relu", [f], "fc1.relu.out", "fc1.relu")
logits = node("Gemm", [f, init("fc2.weight", rng.normal(0, 0.3, (10, 24))),
                       init("fc2.bias", rng.normal(0, 0.1, 10))], "logits", "fc2", transB=1)
prob = node("Softmax", [logits], "prob", "softmax", axis=1)

graph = helper.make_graph(
    nodes, "residual_cnn",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 12, 12])],
    [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 10])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="tests/onnx/test_onnx.py")
onnx.checker.check_model(model, full_check=True)

# reference
x = rng.normal(size=(2, 3, 12, 12)).astype(np.float32)
X = x.astype(np.float64)
h = np.maximum(ref_conv_bn(X, "stem", bias=True), 0)
a = np.clip(ref_conv_bn(h, "block1.conv1"), 0, 6)
s = ref_conv_bn(a, "block1.conv2") + h
h1 = 0.5 * s * (1 + erf(s / np.sqrt(2.0)))
a = ref_conv_bn(h1, "block2.conv1", stride=2)
a = np.where(a > 0, a, 0.1 * a)
a = ref_conv_bn(a, "block2.dw", group=16)
sc = ref_conv_bn(h1, "block2.shortcut", stride=2, pad=0)
h2 = np.maximum(a + sc, 0)
h2s = h2 * W["chscale"] + 0.25
mp = pool(h2s, 3, 1, 1, "max")
mp = np.pad(mp, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=-np.inf)
mp = np.maximum.reduce([mp[:, :, i:i + 6, j:j + 6] for i in range(2) for j in range(2)])
cat = np.concatenate([mp, pool(h2s, 3, 1, 1, "avg")], axis=1)
f = cat.mean(axis=(2, 3))
f = np.maximum(f @ W["fc1.weight_t"] + W["fc1.bias"], 0)
z = f @ W["fc2.weight"].T + W["fc2.bias"]
z = np.exp(z - z.max(1, keepdims=True))
y = (z / z.sum(1, keepdims=True)).astype(np.float32)

tdir = os.path.join(WORK, f"residual_cnn_opset{OPSET}")
os.makedirs(os.path.join(tdir, "test_data_set_0"), exist_ok=True)
onnx.save(model, os.path.join(tdir, "model.onnx"))
with open(os.path.join(tdir, "test_data_set_0", "input_0.pb"), "wb") as fh:
    fh.write(numpy_helper.from_array(x, "input").SerializeToString())
with open(os.path.join(tdir, "test_data_set_0", "output_0.pb"), "wb") as fh:
    fh.write(numpy_helper.from_array(y, "prob").SerializeToString())
# the logits too, where the softmax would hide small errors
ldir = tdir + "_logits"
os.makedirs(os.path.join(ldir, "test_data_set_0"), exist_ok=True)
model.graph.output[0].CopyFrom(helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["N", 10]))
onnx.save(model, os.path.join(ldir, "model.onnx"))
zl = (f @ W["fc2.weight"].T + W["fc2.bias"]).astype(np.float32)
with open(os.path.join(ldir, "test_data_set_0", "input_0.pb"), "wb") as fh:
    fh.write(numpy_helper.from_array(x, "input").SerializeToString())
with open(os.path.join(ldir, "test_data_set_0", "output_0.pb"), "wb") as fh:
    fh.write(numpy_helper.from_array(zl, "logits").SerializeToString())

r = subprocess.run([RUNNER, "--all-pass", tdir, ldir], capture_output=True, text=True)
print(r.stdout, end="")
if r.returncode != 0:
    print(r.stderr, file=sys.stderr)
    sys.exit("the residual CNN did not import or did not match the reference")

# a head in the other form exporters use: GlobalAveragePool, Squeeze of the
# two unit axes (axes as an input, opset 13), Gemm
sq_w = rng.normal(0, 0.5, (5, 4)).astype(np.float32)
sq_b = rng.normal(0, 0.1, 5).astype(np.float32)
sq_graph = helper.make_graph(
    [helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
     helper.make_node("Squeeze", ["g", "sq_axes"], ["f"], name="squeeze"),
     helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", transB=1)],
    "squeeze_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3, 3])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
    [numpy_helper.from_array(np.array([2, 3], np.int64), "sq_axes"),
     numpy_helper.from_array(sq_w, "w"), numpy_helper.from_array(sq_b, "b")])
sq_model = helper.make_model(sq_graph, opset_imports=[helper.make_opsetid("", 13)])
onnx.checker.check_model(sq_model, full_check=True)
sq_x = rng.normal(size=(3, 4, 3, 3)).astype(np.float32)
sq_y = (sq_x.astype(np.float64).mean(axis=(2, 3)) @ sq_w.T.astype(np.float64) + sq_b)
sdir = os.path.join(WORK, "squeeze_head")
os.makedirs(os.path.join(sdir, "test_data_set_0"), exist_ok=True)
onnx.save(sq_model, os.path.join(sdir, "model.onnx"))
with open(os.path.join(sdir, "test_data_set_0", "input_0.pb"), "wb") as fh:
    fh.write(numpy_helper.from_array(sq_x, "x").SerializeToString())
with open(os.path.join(sdir, "test_data_set_0", "output_0.pb"), "wb") as fh:
    fh.write(numpy_helper.from_array(sq_y.astype(np.float32), "y").SerializeToString())
r = subprocess.run([RUNNER, "--all-pass", sdir], capture_output=True, text=True)
print(r.stdout, end="")
if r.returncode != 0:
    print(r.stderr, file=sys.stderr)
    sys.exit("the GlobalAveragePool-Squeeze-Gemm head did not import or did not match")

# node names become model node names (taps name them)
r = subprocess.run([DISTILL, "summary", "--model", os.path.join(tdir, "model.onnx")],
                   capture_output=True, text=True, check=True)
for name in ("stem", "stem.bn", "block1.gelu", "block2.add", "fc1", "fc2", "softmax"):
    if not any(line.split()[:1] == [name] for line in r.stdout.splitlines()):
        sys.exit(f"node '{name}' is not in the imported model:\n{r.stdout}")

# ---------------------------------------------------- export -> checker
zoo = ["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
       "mobilenetv2", "cnn"]
for name in zoo:
    out = os.path.join(WORK, f"{name}.onnx")
    subprocess.run([DISTILL, "export", "--model", name, "--out", out], check=True)
    m = onnx.load(out)
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version >= 13
    back = os.path.join(WORK, f"{name}.dstl")
    subprocess.run([DISTILL, "export", "--model", out, "--out", back], check=True)
    print(f"PASS export {name}: onnx.checker accepts it, opset {m.opset_import[0].version}, "
          f"{len(m.graph.node)} nodes; imported back")

# ------------------------------------------------ metadata_props both ways
def gemm_model(props):
    w = rng.standard_normal((3, 4)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)], "meta",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    helper.set_model_props(m, props)
    return m


props = {"data.shape": "1,2,2", "normalize.mean": "0.5", "normalize.std": "0.25",
         "classes": "cat\ndog\nT-shirt/top", "provenance.command": "torch.onnx.export",
         "host.k": "caf\u00e9"}
path = os.path.join(WORK, "meta.onnx")
onnx.save(gemm_model({**props, "other tool's key": "skipped"}), path)
r = subprocess.run([DISTILL, "summary", "--model", path], capture_output=True, text=True,
                   check=True)
for k, v in props.items():
    line = f"  {k:<20} {v.replace(chr(10), ', ')}"
    if line not in r.stdout.splitlines():
        sys.exit(f"metadata '{k}' not read from metadata_props:\n{r.stdout}")
if "other tool" in r.stdout:
    sys.exit(f"a key that is not a metadata key was kept:\n{r.stdout}")
# exported again, directly and through a model file: the same properties
dstl = os.path.join(WORK, "meta.dstl")
subprocess.run([DISTILL, "export", "--model", path, "--out", dstl], check=True)
for src in (path, dstl):
    out = os.path.join(WORK, "meta-again.onnx")
    subprocess.run([DISTILL, "export", "--model", src, "--out", out], check=True)
    m = onnx.load(out)
    onnx.checker.check_model(m, full_check=True)
    got = {p.key: p.value for p in m.metadata_props}
    if got != props:
        sys.exit(f"metadata_props after export from {src}: {got}, expected {props}")
bare = os.path.join(WORK, "meta-bare.onnx")
subprocess.run([DISTILL, "export", "--model", dstl, "--no-metadata", "--out", bare], check=True)
if onnx.load(bare).metadata_props:
    sys.exit("export --no-metadata wrote metadata_props")
onnx.save(gemm_model({**props, "classes": "cat\ndog"}), path)
r = subprocess.run([DISTILL, "summary", "--model", path], capture_output=True, text=True)
if r.returncode == 0 or "metadata_props" not in r.stderr or "2 names" not in r.stderr:
    sys.exit(f"two class names for three logits were not refused: {r.stderr}")
print(f"PASS metadata_props both ways; a lie refused: {r.stderr.strip()}")

# ------------------------------------------------------- refusals
bad = helper.make_graph(
    [helper.make_node("Tanh", ["x"], ["y"], name="act1")], "bad",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
path = os.path.join(WORK, "bad.onnx")
onnx.save(helper.make_model(bad, opset_imports=[helper.make_opsetid("", 13)]), path)
r = subprocess.run([DISTILL, "summary", "--model", path], capture_output=True, text=True)
if r.returncode == 0 or "act1" not in r.stderr or "Tanh" not in r.stderr:
    sys.exit(f"an unsupported operator was not refused by name: {r.stderr}")
print(f"PASS refusal: {r.stderr.strip()}")

# Opsets outside 9-17 are read only where each operator has the definition it
# has at opset 9 (older) or 17 (newer): Relu is the same at opset 6 as at 9,
# Gemm is not (version 7 at opset 8, version 9 at 9); Reshape changed at 19.
def opset_case(node, inputs, inits, opset):
    g = helper.make_graph([node], "opset_case",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4])
                           for n in inputs],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=inits)
    path = os.path.join(WORK, f"opset_{node.op_type}_{opset}.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), path)
    return subprocess.run([DISTILL, "summary", "--model", path], capture_output=True, text=True)

r = opset_case(helper.make_node("Relu", ["x"], ["y"], name="r"), ["x"], [], 6)
if r.returncode != 0:
    sys.exit(f"Relu at opset 6 (defined as at opset 9) was refused: {r.stderr}")
w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
b = numpy_helper.from_array(np.zeros((4,), np.float32), "b")
r = opset_case(helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc"), ["x"], [w, b], 8)
if r.returncode == 0 or "fc" not in r.stderr or "version 7 of Gemm" not in r.stderr:
    sys.exit(f"Gemm at opset 8 (version 7) was not refused by name: {r.stderr}")
shape = numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")
r = opset_case(helper.make_node("Reshape", ["x", "shape"], ["y"], name="rs"), ["x"], [shape], 19)
if r.returncode == 0 or "version 19 of Reshape" not in r.stderr:
    sys.exit(f"Reshape at opset 19 was not refused: {r.stderr}")
r = opset_case(helper.make_node("Relu", ["x"], ["y"], name="r"), ["x"], [], 21)
if r.returncode == 0 or "opset 21" not in r.stderr:
    sys.exit(f"opset 21 was not refused: {r.stderr}")
print("PASS opsets: Relu at 6 read; Gemm at 8, Reshape at 19 and opset 21 refused")
print("all ONNX script tests passed")

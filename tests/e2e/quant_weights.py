#!/usr/bin/python3
"""quant_weights.py ONNX_PRUNE: quantize's weights against numpy, exactly. A small model with a
MatMul weight [37, 29] (channels along axis 1), a Gemm transB weight [23, 29] (axis 0) and an embedding
table [11, 37] (Gathered, per hidden column), odd sizes so that the vectorised loops' tails run, and
several weights so that they are quantised by several threads: every int8 value and scale must be
numpy's round-half-even of w / (max|w| / L), per channel, per tensor and with --reduce-range. Then a
weight holding infinity, and one holding NaN: exit 2, one line naming the weight, no output."""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as nh

BIN, WORK = sys.argv[1], tempfile.mkdtemp()
rng = np.random.RandomState(7)
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def model(w1, w2, emb):
    nodes = [
        oh.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
        oh.make_node("Gemm", ["h", "w2"], ["y"], name="gemm", transB=1),
        oh.make_node("Gather", ["emb", "ids"], ["e"], name="gather"),
    ]
    g = oh.make_graph(
        nodes, "w",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", 37]),
         oh.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["b", 3])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", 23]),
         oh.make_tensor_value_info("e", onnx.TensorProto.FLOAT, ["b", 3, 37])],
        [nh.from_array(w1, "w1"), nh.from_array(w2, "w2"), nh.from_array(emb, "emb")])
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)])


def expected(w, axis, levels):
    a = np.abs(w).max(axis=1 - axis if axis is not None else None, keepdims=axis is not None)
    s = np.where(a > 0, a / np.float32(levels), np.float32(1)).astype(np.float32)
    return np.clip(np.rint(w / s), -levels, levels).astype(np.int8), s.reshape(-1)


def quantized(path, name):
    inits = {t.name: nh.to_array(t) for t in onnx.load(path).graph.initializer}
    q = [v for k, v in inits.items() if k.startswith(name + "_quantized")]
    s = [v for k, v in inits.items() if k.startswith(name + "_scale")]
    return (q[0], s[0].reshape(-1)) if len(q) == 1 and len(s) == 1 else (None, None)


w1 = (rng.randn(37, 29) * 0.3).astype(np.float32)
w2 = (rng.randn(23, 29) * 2.0).astype(np.float32)
emb = rng.randn(11, 37).astype(np.float32)
w1[:, 4] = 0  # an all-zero channel: scale 1
w2[5, 7] = 0.5 * np.abs(w2[5]).max() / 127 * 255  # not a tie by accident: exercises rounding anyway
src = os.path.join(WORK, "w.onnx")
onnx.save(model(w1, w2, emb), src)
data = os.path.join(WORK, "w.npz")
np.savez(data, x=rng.randn(16, 37).astype(np.float32), ids=rng.randint(0, 11, (16, 3)).astype(np.int64))

for flags, per_channel, levels in (([], True, 127), (["--weight-granularity", "tensor"], False, 127),
                                   (["--reduce-range"], True, 63)):
    out = os.path.join(WORK, "q.onnx")
    r = subprocess.run([BIN, "quantize", src, "-o", out, "--data", data, "--samples", "16", "--method", "min_max",
                        "-q"] + flags, capture_output=True, text=True)
    check(r.returncode == 0, "quantize %s: exit 0 (%s)" % (" ".join(flags) or "per channel", r.stderr.strip()))
    if r.returncode:
        continue
    for name, w, axis in (("w1", w1, 1), ("w2", w2, 0), ("emb", emb, 1)):
        q, s = quantized(out, name)
        eq, es = expected(w, axis if per_channel else None, levels)
        check(q is not None and np.array_equal(q, eq) and np.array_equal(s, es),
              "%s %s: int8 values and scales equal numpy's" % (" ".join(flags) or "per channel", name))

for name, bad in (("w1", np.inf), ("w2", np.nan)):
    a, b = w1.copy(), w2.copy()
    (a if name == "w1" else b)[3, 5] = bad
    path = os.path.join(WORK, "bad.onnx")
    onnx.save(model(a, b, emb), path)
    out = os.path.join(WORK, "bad_q.onnx")
    r = subprocess.run([BIN, "quantize", path, "-o", out, "--data", data, "--samples", "16", "-q"],
                       capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 2 and len(lines) == 1 and ("weight '%s' holds NaN, infinity" % name) in lines[0]
          and not os.path.exists(out), "weight %s holding %s: refused by name, exit 2, no output (%d: %s)"
          % (name, bad, r.returncode, r.stderr.strip()))

shutil.rmtree(WORK)
sys.exit(1 if failures else 0)

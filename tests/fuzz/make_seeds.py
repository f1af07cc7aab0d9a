#!/usr/bin/python3
"""make_seeds.py: writes the small seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/
(committed; rerun only to change them). Models are tiny graphs of the ops the tool computes on, plus
the smallest BERT fixture; configs are the README's; data are small arrays in each format."""
import io
import json
import os
import struct
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
BERT = os.path.join(FIX, "bert_separate_mask_opset11", "model.onnx")


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def fvi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8).SerializeToString()


def c(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def tiny_models():
    x = fvi("x", ["N", 4])
    w = c("w", np.arange(16, dtype=np.float32).reshape(4, 4) / 16)
    b = c("b", np.ones(4, np.float32))
    i64 = lambda name, v: c(name, np.array(v, np.int64))
    return {
        "matmul_add": model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
                            [x], [fvi("y", ["N", 4])], [w, b]),
        "gemm_relu": model([helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
                            helper.make_node("Relu", ["h"], ["y"])], [x], [fvi("y", ["N", 4])], [w, b]),
        "softmax_layernorm": model([helper.make_node("Softmax", ["x"], ["s"], axis=-1),
                                    helper.make_node("LayerNormalization", ["s", "b", "b"], ["y"], axis=-1)],
                                   [x], [fvi("y", ["N", 4])], [b], opset=17),
        "reshape_transpose": model([helper.make_node("Reshape", ["x", "shape"], ["r"]),
                                    helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1])],
                                   [x], [fvi("y", None)], [i64("shape", [0, 2, 2])]),
        "slice_concat": model([helper.make_node("Slice", ["x", "s", "e", "a"], ["p"]),
                               helper.make_node("Concat", ["p", "p"], ["y"], axis=1)],
                              [x], [fvi("y", None)], [i64("s", [1]), i64("e", [3]), i64("a", [1])]),
        "gather_shape": model([helper.make_node("Shape", ["x"], ["sh"]),
                               helper.make_node("Gather", ["sh", "i"], ["n"], axis=0),
                               helper.make_node("ConstantOfShape", ["n2"], ["y"])],
                              [x], [fvi("y", None)], [i64("i", [1]), i64("n2", [2, 3])]),
        "expand_where": model([helper.make_node("Expand", ["x", "shape"], ["e"]),
                               helper.make_node("Greater", ["e", "b"], ["m"]),
                               helper.make_node("Where", ["m", "e", "b"], ["y"])],
                              [x], [fvi("y", None)], [b, i64("shape", [2, 4])]),
        "split_reduce": model([helper.make_node("Split", ["x"], ["p", "q"], axis=1),
                               helper.make_node("ReduceMean", ["p"], ["y"], axes=[1])],
                              [x], [fvi("y", None), fvi("q", None)], opset=11),
        "erf_gelu": model([helper.make_node("Div", ["x", "b"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                           helper.make_node("Mul", ["x", "e"], ["y"])], [x], [fvi("y", ["N", 4])], [b]),
    }


def npy(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def npz(arrays, deflate):
    b = io.BytesIO()
    (np.savez_compressed if deflate else np.savez)(b, **arrays)
    return b.getvalue()


def main():
    bert = open(BERT, "rb").read()
    models = tiny_models()
    # model_load: [u16 length][w.bin bytes][model]
    for name, m in models.items():
        out("fuzz_model_load", name, b"\0\0" + m)
        out("fuzz_exec", name, m)
    out("fuzz_model_load", "bert", b"\0\0" + bert)
    out("fuzz_exec", "bert", bert)
    m = onnx.load(BERT)
    blob = bytearray()
    for t in m.graph.initializer:
        if len(t.raw_data) >= 1024 and len(blob) + len(t.raw_data) < 65535:
            off = len(blob)
            blob += t.raw_data
            n = len(t.raw_data)
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", "w.bin"), ("offset", str(off)), ("length", str(n))):
                e = t.external_data.add()
                e.key, e.value = k, v
    out("fuzz_model_load", "bert_external", struct.pack("<H", len(blob)) + bytes(blob) + m.SerializeToString())

    configs = {
        "readme": {"importance": "l2", "scope": "layer", "head_sparsity": 0.25, "ffn_sparsity": 0.5,
                   "keep_layers": [0, 1],
                   "layers": [{"layer": 0, "heads": [1, 3], "neurons": [0, 5, 17]},
                              {"layer": 1, "num_heads": 2, "ffn_size": 16, "attention": False}]},
        "by_key": {"layers": {"0": {"ffn_sparsity": 0.75}, "1": {"ffn": False}}, "compact": True},
        "global": {"scope": "global", "width": 0.5, "importance": "l1"},
        "compress": {"prune": {"head_sparsity": 0.5, "layers": [{"layer": 0, "ffn_size": 8}]},
                     "quantize": {"method": ["kl", "mse"], "batches": [4, 16], "bias_correction": True}},
    }
    for name, cfg in configs.items():
        out("fuzz_config", name, json.dumps(cfg))
        out("fuzz_prune", name, json.dumps(cfg))
    out("fuzz_config", "dup_key", '{"head_sparsity": 0.25, "head_sparsity": 0.5}')
    out("fuzz_config", "deep", "[" * 70 + "]" * 70)

    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int64)
    out("fuzz_data", "npz_stored", b"\0" + npz({"input_ids": ids, "attention_mask": np.ones_like(ids)}, False))
    out("fuzz_data", "npz_deflated", b"\0" + npz({"input_ids": ids, "labels": np.array([0, 1])}, True))
    out("fuzz_data", "npy", b"\1" + npy(ids))
    out("fuzz_data", "npy_float", b"\1" + npy(np.ones([2, 3], np.float32)))
    out("fuzz_data", "pb", b"\2" + numpy_helper.from_array(ids, "input_ids").SerializeToString())

    cli = {
        "inspect": ["inspect", "m.onnx"],
        "inspect_json": ["inspect", "m.onnx", "--json"],
        "prune": ["prune", "m.onnx", "-o", "o.onnx", "--head-sparsity", "0.5", "--report", "r.json", "-q"],
        "prune_dry": ["prune", "m.onnx", "--dry-run", "--keep-layers", "0", "--max-memory", "1G"],
        "prune_clash": ["prune", "m.onnx", "-o", "m.onnx", "--report", "m.onnx"],
        "run": ["run", "m.onnx", "--data", ".", "-o", "o.npz", "--batch", "2"],
        "verify": ["verify", "m.onnx", "m.onnx", "--data", ".", "--json", "--min-cosine", "0.9"],
        "quantize": ["quantize", "m.onnx", "-o", "q.onnx", "--data", ".", "--samples", "2", "--method", "abs_max"],
    }
    for name, argv in cli.items():
        out("fuzz_cli", name, "\n".join(argv))


if __name__ == "__main__":
    main()

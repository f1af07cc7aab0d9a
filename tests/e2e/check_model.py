#!/usr/bin/python3
"""check_model.py OUT.onnx ORIGINAL.onnx [REPORT.json]: what every written model must satisfy.

- passes the ONNX checker (full_check, with shape inference) where Debian's onnx knows the opset;
- has the original's graph inputs and outputs: same names, element types and (dynamic) dims;
- holds exactly the parameter count the report states.
--state INSPECT.json (after the others): the past/present state interfaces of fused attention ops that
INSPECT lists may differ from the original's on their head axis only (pruning heads changes it)."""
import json
import sys

import onnx
import onnx.defs


def params(m):
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    n = 0
    for t in m.graph.initializer:
        if t.data_type in floats:
            k = 1
            for d in t.dims:
                k *= d
            n += k
    for node in m.graph.node:  # a Constant node's float tensor of more than one element is a weight
        for a in node.attribute:
            if node.op_type == "Constant" and a.name == "value" and a.t.data_type in floats:
                k = 1
                for d in a.t.dims:
                    k *= d
                n += k if k > 1 else 0
    return n


def state_axes(inspect):
    """{state interface name: head axis} of the fused attention ops an inspect JSON lists."""
    axes = {}
    for L in json.load(open(inspect))["layers"]:
        for s in (L["attention"] or {}).get("state", []):
            axes[s["name"]] = s["head_axis"]
    return axes


def type_key(v, axes):
    """A graph interface's type, with the head axis of a state interface left out."""
    t = onnx.TypeProto()
    t.CopyFrom(v.type)
    if v.name in axes and t.tensor_type.shape.dim:
        t.tensor_type.shape.dim[axes[v.name]].Clear()
    return t.SerializeToString()


def checker_knows(o):
    """False for a graph ONNX Runtime's optimizer wrote (its LayerNormalization below opset 17 is ORT's
    own): the checker rejects the original already, so ONNX Runtime loading the output is the check."""
    try:
        onnx.checker.check_model(o, full_check=True)
        return True
    except onnx.checker.ValidationError:
        return False


def main(out, orig, report=None, *opts):
    axes = state_axes(opts[1]) if len(opts) == 2 and opts[0] == "--state" else {}
    m, o = onnx.load(out), onnx.load(orig)
    opset = max(x.version for x in m.opset_import if x.domain in ("", "ai.onnx"))
    if opset <= onnx.defs.onnx_opset_version() and checker_knows(o):
        onnx.checker.check_model(m, full_check=True)
    for kind in ("input", "output"):
        a = [(v.name, type_key(v, axes)) for v in getattr(m.graph, kind)]
        b = [(v.name, type_key(v, axes)) for v in getattr(o.graph, kind)]
        if a != b:
            sys.exit(f"{out}: graph {kind}s differ from the original's")
    if report:
        want = json.load(open(report))["parameters"]["after"]
        if params(m) != want:
            sys.exit(f"{out}: holds {params(m)} parameters, the report says {want}")


if __name__ == "__main__":
    main(*sys.argv[1:])

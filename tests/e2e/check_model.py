#!/usr/bin/python3
"""check_model.py OUT.onnx ORIGINAL.onnx [REPORT.json]: what every written model must satisfy.

- passes the ONNX checker (full_check, with shape inference) where Debian's onnx knows the opset;
- has the original's graph inputs and outputs: same names, element types and (dynamic) dims;
- holds exactly the parameter count the report states."""
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


def main(out, orig, report=None):
    m, o = onnx.load(out), onnx.load(orig)
    opset = max(x.version for x in m.opset_import if x.domain in ("", "ai.onnx"))
    if opset <= onnx.defs.onnx_opset_version():
        onnx.checker.check_model(m, full_check=True)
    for kind in ("input", "output"):
        a = [(v.name, v.type.SerializeToString()) for v in getattr(m.graph, kind)]
        b = [(v.name, v.type.SerializeToString()) for v in getattr(o.graph, kind)]
        if a != b:
            sys.exit(f"{out}: graph {kind}s differ from the original's")
    if report:
        want = json.load(open(report))["parameters"]["after"]
        if params(m) != want:
            sys.exit(f"{out}: holds {params(m)} parameters, the report says {want}")


if __name__ == "__main__":
    main(*sys.argv[1:])

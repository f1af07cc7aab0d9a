#!/usr/bin/python3
"""check_qdq.py QUANT.onnx FP32.onnx REPORT.json [--symmetric-int8] [--exclude NODE] [--max-size-ratio R]
What every quantised model must satisfy: it passes the ONNX checker (where Debian's onnx knows the
opset); every QuantizeLinear / DequantizeLinear has scales > 0, a zero point of the right type inside
its range, and a per-axis scale whose length matches the axis; graph inputs and outputs are the
fp32 model's; the report lists every quantised tensor with its method, observed range and scale;
excluded nodes read no DequantizeLinear output."""
import json
import sys

import numpy as np
import onnx
import onnx.defs
import onnx.numpy_helper as nh


def main(argv):
    q, f, rep = onnx.load(argv[0]), onnx.load(argv[1]), json.load(open(argv[2]))
    sym = "--symmetric-int8" in argv
    excl = argv[argv.index("--exclude") + 1] if "--exclude" in argv else None
    problems = []
    opset = max(o.version for o in q.opset_import if o.domain in ("", "ai.onnx"))
    if opset <= onnx.defs.onnx_opset_version():
        onnx.checker.check_model(q, full_check=True)
    inits = {t.name: nh.to_array(t) for t in q.graph.initializer}
    shapes = {t.name: list(t.dims) for t in q.graph.initializer}
    n_q = n_dq = 0
    for n in q.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        n_q += n.op_type == "QuantizeLinear"
        n_dq += n.op_type == "DequantizeLinear"
        scale, zp = inits.get(n.input[1]), inits.get(n.input[2]) if len(n.input) > 2 else None
        if scale is None or not np.all(scale > 0) or not np.all(np.isfinite(scale)):
            problems.append(f"{n.name}: scale missing or not > 0")
            continue
        if zp is not None:
            if zp.dtype not in (np.int8, np.uint8) or zp.shape != scale.shape:
                problems.append(f"{n.name}: zero point type {zp.dtype} or shape {zp.shape} does not fit its scale")
            if sym and (zp.dtype != np.int8 or np.any(zp != 0)):
                problems.append(f"{n.name}: not int8 symmetric")
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and n.input[0] in shapes:
            dims = shapes[n.input[0]]
            if not (-len(dims) <= axis < len(dims)) or dims[axis] != scale.shape[0]:
                problems.append(f"{n.name}: {scale.shape[0]} scales for axis {axis} of {dims}")
    if n_q == 0 or n_dq == 0:
        problems.append("no QuantizeLinear/DequantizeLinear in the model")
    for kind in ("input", "output"):
        a = [(v.name, v.type.SerializeToString()) for v in getattr(q.graph, kind)]
        b = [(v.name, v.type.SerializeToString()) for v in getattr(f.graph, kind)]
        if a != b:
            problems.append(f"graph {kind}s differ from the fp32 model's")
    tensors = rep["tensors"]
    kinds = {t["kind"] for t in tensors}
    for t in tensors:
        if not (t.get("method") and len(t["observed_range"]) == 2 and ("scale" in t or "scale_min" in t)):
            problems.append(f"report entry {t['name']} lacks method, range or scale")
    if "activation" not in kinds or not kinds & {"weight", "embedding"}:
        problems.append(f"report lists only {kinds}")
    if excl:
        dq_out = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        node = next((n for n in q.graph.node if n.name == excl), None)
        if node is None or any(i in dq_out for i in node.input):
            problems.append(f"excluded node {excl} reads a dequantized value (or vanished)")
    if "--max-size-ratio" in argv:
        import os
        ratio = os.path.getsize(argv[0]) / os.path.getsize(argv[1])
        limit = float(argv[argv.index("--max-size-ratio") + 1])
        if ratio > limit:
            problems.append(f"file is {ratio:.1%} of fp32, over {limit:.0%}")
    for p in problems:
        print("FAIL", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/python3
"""half_variants.py HALF.onnx OUT_DIR: from a float16 model (a model.half() export), the variants the float16
quantisation test needs, written to OUT_DIR:
  fp32.onnx            the float32 model with the same weights (every float16 initializer, Constant, Cast
                       target and graph input/output back to float32): the reference accuracy is judged against
  op19.onnx            the same float16 model at opset 19, where QuantizeLinear/DequantizeLinear take float16
                       (ReduceX's axes attribute becomes an input, opset 18's change; any op whose meaning
                       changed between the model's opset and 19 and is not rewritten here stops the script)
  bf16.onnx            the same model in bfloat16 (raw storage), which quantize must refuse by node
  data16.npz/data32.npz  48 samples of every float input (normal, seeded), in float16 and the same values in float32
Needs onnx and numpy only."""
import os
import sys

import numpy as np
import onnx
import onnx.numpy_helper as nh
from onnx import TensorProto, helper

# ops whose definition did not change meaning between opset 13 and 19 (new types or attributes with the old default)
SAME_13_TO_19 = {"Add", "Cast", "Concat", "Constant", "Div", "Erf", "Gather", "Gemm", "MatMul", "Mul", "Pow", "Reshape",
                 "Shape", "Slice", "Softmax", "Sqrt", "Sub", "Transpose", "Unsqueeze", "Where", "Tanh", "Relu", "Sigmoid",
                 "Identity", "Expand", "Equal", "ConstantOfShape", "Neg", "Squeeze", "Split"}
REDUCE_18 = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1", "ReduceLogSumExp", "ReduceSumSquare"}


def to_float(m):
    g = m.graph

    def widen(t):
        if t.data_type == TensorProto.FLOAT16:
            t.CopyFrom(nh.from_array(nh.to_array(t).astype(np.float32), t.name))

    for t in g.initializer:
        widen(t)
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                widen(a.t)
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.FLOAT
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16:
            v.type.tensor_type.elem_type = TensorProto.FLOAT
    return m


def to_bf16(m):
    g = m.graph

    def narrow(t):
        if t.data_type == TensorProto.FLOAT16:
            bits = (nh.to_array(t).astype(np.float32).view(np.uint32) + 0x8000) >> 16  # round to nearest
            n = TensorProto(name=t.name, data_type=TensorProto.BFLOAT16, dims=t.dims,
                            raw_data=bits.astype("<u2").tobytes())
            t.CopyFrom(n)

    for t in g.initializer:
        narrow(t)
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                narrow(a.t)
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.BFLOAT16
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16:
            v.type.tensor_type.elem_type = TensorProto.BFLOAT16
    return m


def to_opset19(m):
    opset = next(o for o in m.opset_import if o.domain in ("", "ai.onnx"))
    assert opset.version >= 13, f"opset {opset.version}: only 13..18 is upgraded here"
    g = m.graph
    for n in list(g.node):
        if n.op_type in REDUCE_18:
            axes = [a for a in n.attribute if a.name == "axes"]
            if axes:
                name = n.output[0] + "_axes"
                g.initializer.append(nh.from_array(np.array(axes[0].ints, np.int64), name))
                n.attribute.remove(axes[0])
                n.input.append(name)
        elif n.op_type not in SAME_13_TO_19:
            sys.exit(f"half_variants.py: {n.op_type} is not upgraded to opset 19 here")
    opset.version = 19
    m.ir_version = max(m.ir_version, 9)
    return m


def main(src, out):
    os.makedirs(out, exist_ok=True)
    m = onnx.load(src)
    onnx.save(to_opset19(onnx.load(src)), os.path.join(out, "op19.onnx"))
    inputs = [i for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
    rng = np.random.RandomState(7)
    d16 = {}
    for i in inputs:
        assert i.type.tensor_type.elem_type == TensorProto.FLOAT16, f"{i.name} is not float16"
        shape = [d.dim_value if d.dim_value > 0 else 6 for d in i.type.tensor_type.shape.dim]
        shape[0] = 48  # the batch axis first, as in the fixture
        d16[i.name] = rng.randn(*shape).astype(np.float16)
    np.savez(os.path.join(out, "data16.npz"), **d16)
    np.savez(os.path.join(out, "data32.npz"), **{k: v.astype(np.float32) for k, v in d16.items()})
    onnx.save(to_bf16(onnx.load(src)), os.path.join(out, "bf16.onnx"))
    f = to_float(m)
    onnx.checker.check_model(f)
    onnx.save(f, os.path.join(out, "fp32.onnx"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

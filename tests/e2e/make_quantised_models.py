#!/usr/bin/python3
"""make_quantised_models.py OUT_DIR: tiny models already quantised in ONNX Runtime's other two forms
(QOperator: MatMulInteger; weight-only: com.microsoft MatMulNBits), which prune and quantize refuse."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(path, nodes, inits, inputs, outputs, ms=False):
    opsets = [helper.make_opsetid("", 14)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    g = helper.make_graph(nodes, "q", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8
    onnx.save(m, path)


def main(out):
    os.makedirs(out, exist_ok=True)
    x8 = helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, ["n", 4])
    w = numpy_helper.from_array(np.ones((4, 4), np.int8), "w")
    save(os.path.join(out, "qoperator.onnx"), [helper.make_node("MatMulInteger", ["x", "w"], ["y"], name="mmi")], [w],
         [x8], [y])
    xf = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])
    yf = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])
    b = numpy_helper.from_array(np.zeros((8, 1, 8), np.uint8), "b")
    s = numpy_helper.from_array(np.ones((8,), np.float32), "s")
    n = helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], name="nbits", domain="com.microsoft", K=16, N=8,
                         bits=4, block_size=16)
    save(os.path.join(out, "nbits.onnx"), [n], [b, s], [xf], [yf], ms=True)


if __name__ == "__main__":
    main(sys.argv[1])

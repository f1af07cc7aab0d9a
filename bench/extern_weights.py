#!/usr/bin/python3
"""extern_weights.py IN.onnx OUT.onnx: OUT.onnx is IN's graph with every float32 initializer of 1024
elements or more moved to external data in OUT's folder, file `<OUT stem>.weights`, back to back, so
the graph travels small (a few hundred KB for BERT-base) and the weights are made again where the
benchmark runs (bench/device_bench.sh: random float32, scale 0.02, from a fixed seed: latency does not
depend on the values). Prints the weights file's size in bytes."""
import os
import sys

import onnx

src, dst = sys.argv[1], sys.argv[2]
m = onnx.load(src)
loc = os.path.splitext(os.path.basename(dst))[0] + ".weights"
off = 0
for t in m.graph.initializer:
    n = 1
    for d in t.dims:
        n *= d
    if t.data_type != onnx.TensorProto.FLOAT or n < 1024:
        continue
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    del t.external_data[:]
    for k, v in (("location", loc), ("offset", str(off)), ("length", str(4 * n))):
        e = t.external_data.add()
        e.key, e.value = k, v
    off += 4 * n
    off += (-off) % 64  # aligned, as a mapping reads best
onnx.save(m, dst)
print(off)

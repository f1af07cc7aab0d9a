#!/usr/bin/python3
"""make_bad_models.py GOOD.onnx OUTDIR: writes the malformed inputs of the bad-input table."""
import os
import random
import sys

import onnx
import onnx.helper


def main(good, out):
    os.makedirs(out, exist_ok=True)
    data = open(good, "rb").read()
    w = lambda name, b: open(os.path.join(out, name), "wb").write(b)
    w("empty.onnx", b"")
    w("truncated.onnx", data[: len(data) // 2])
    rnd = random.Random(7)
    w("random.onnx", bytes(rnd.randrange(256) for _ in range(4096)))
    w("not_a_model.onnx", onnx.helper.make_tensor("t", onnx.TensorProto.FLOAT, [2], [1.0, 2.0]).SerializeToString())

    m = onnx.load(good)
    m.graph.node[3].input[0] = "nowhere"
    onnx.save(m, os.path.join(out, "dangling.onnx"))

    m = onnx.load(good)
    mm = next(n for n in m.graph.node if n.op_type == "MatMul")
    del mm.input[1:]
    onnx.save(m, os.path.join(out, "arity.onnx"))

    m = onnx.load(good)
    t = next(t for t in m.graph.initializer if t.raw_data and len(t.raw_data) > 8)
    t.raw_data = t.raw_data[:-4]
    onnx.save(m, os.path.join(out, "raw_length.onnx"))

    def external(name, location, offset, length):
        m = onnx.load(good)
        t = next(t for t in m.graph.initializer if t.raw_data and len(t.raw_data) >= 256)
        n = len(t.raw_data) if length is None else length
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(n))):
            e = t.external_data.add()
            e.key, e.value = k, v
        onnx.save(m, os.path.join(out, name))

    w("weights.bin", bytes(512))
    external("ext_escape.onnx", "../weights.bin", 0, None)
    external("ext_absolute.onnx", "/etc/passwd", 0, None)
    external("ext_past_end.onnx", "weights.bin", 4096, None)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

#!/usr/bin/python3
"""make_hostile.py GOOD.onnx OUTDIR: writes the hostile inputs of tests/e2e/hostile.sh (issue 10):
special files where files are expected, nesting that overflows a recursive parser, sizes that wrap or
exhaust memory, invalid graphs, hostile JSON configs and npz archives. Small: everything is built at
test time, nothing large is written to disk (the 3 GiB external-data model uses a sparse file)."""
import os
import struct
import sys
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(m, out, name):
    onnx.save(m, os.path.join(out, name))


def small(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def fvi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


# ---- protobuf wire format, by hand: a 3,000-deep If nesting is beyond the protobuf library itself ----
def varint(v):
    b = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        b.append(c | (0x80 if v else 0))
        if not v:
            return bytes(b)


def field(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def field_int(num, v):
    return varint(num << 3) + varint(v)


def deep_if_model(depth):
    """ModelProto whose graph has an If whose then_branch has an If ... depth levels down."""
    vi = lambda name: field(1, name.encode())  # ValueInfoProto with a name only
    inner = field(12, vi("y"))  # innermost GraphProto: just an output
    for _ in range(depth):
        attr = field(1, b"then_branch") + field_int(20, 5) + field(6, inner)  # AttributeProto GRAPH
        node = field(1, b"c") + field(2, b"y") + field(4, b"If") + field(5, attr)
        inner = field(1, node) + field(11, vi("c")) + field(12, vi("y"))
    return field_int(1, 8) + field(8, field(2, b"") + field_int(2, 13)) + field(7, inner)


def external(good, out, name, location, dims=None, length=None):
    m = onnx.load(good)
    t = next(t for t in m.graph.initializer if t.raw_data and len(t.raw_data) >= 256)
    n = len(t.raw_data)
    t.ClearField("raw_data")
    if dims is not None:
        del t.dims[:]
        t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(n if length is None else length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    save(m, out, name)


def npz_member(name, payload, method):
    """(local header + data, central directory entry) of one zip member; offset patched by the caller."""
    data = payload if method == 0 else zlib.compress(payload, 9)[2:-4]
    crc = zlib.crc32(payload)
    return name.encode(), data, crc, len(payload)


def write_npz(path, members):
    """members: (name, compressed bytes, crc, uncompressed size, method); deflated data passed as is."""
    body, cdir = bytearray(), bytearray()
    for name, data, crc, usize, method in members:
        off = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), usize, len(name), 0)
        body += name + data
        cdir += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(data), usize,
                            len(name), 0, 0, 0, 0, 0, off)
        cdir += name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(cdir), len(body), 0)
    open(path, "wb").write(bytes(body + cdir + end))


def npy_bytes(a):
    import io
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def main(good, out):
    os.makedirs(out, exist_ok=True)
    w = lambda name, b: open(os.path.join(out, name), "wb").write(b)

    # special files where a file is expected
    os.mkfifo(os.path.join(out, "fifo.onnx"))
    os.mkdir(os.path.join(out, "folder.onnx"))
    os.mkfifo(os.path.join(out, "weights_fifo.bin"))
    external(good, out, "ext_fifo.onnx", "weights_fifo.bin")
    os.symlink("/dev/zero", os.path.join(out, "weights_zero.bin"))
    external(good, out, "ext_devzero.onnx", "weights_zero.bin")
    os.mkfifo(os.path.join(out, "config_fifo.json"))
    os.mkfifo(os.path.join(out, "data_fifo.npz"))
    os.mkdir(os.path.join(out, "npy_zero"))
    os.symlink("/dev/zero", os.path.join(out, "npy_zero", "input_ids.npy"))
    os.mkdir(os.path.join(out, "npy_fifo"))
    os.mkfifo(os.path.join(out, "npy_fifo", "input_ids.npy"))
    os.mkdir(os.path.join(out, "pb_bad"))
    w(os.path.join("pb_bad", "input_0.pb"), b"\x0a\xff\xff\xff\xff\x0f")  # a field longer than the file
    os.mkdir(os.path.join(out, "pb_fifo"))
    os.mkfifo(os.path.join(out, "pb_fifo", "input_0.pb"))
    import socket  # a socket and a symlink to a FIFO given as a model
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(out, "socket.onnx"))
    sock.close()
    os.symlink("fifo.onnx", os.path.join(out, "fifo_link.onnx"))

    # nesting that overflows protobuf-c's recursive unpack
    w("deep_if.onnx", deep_if_model(3000))

    # element count x element size that wraps to 0 (2^31 x 2^31 floats = 2^64 bytes)
    m = onnx.load(good)
    t = m.graph.initializer.add()
    t.name, t.data_type, t.raw_data = "wrap", TensorProto.FLOAT, b""
    t.dims.extend([2**31, 2**31])
    save(m, out, "wrap_inline.onnx")
    w("weights.bin", bytes(512))
    external(good, out, "wrap_external.onnx", "weights.bin", dims=[2**31, 2**31], length=0)

    # graphs that are not DAGs of single definitions
    x = fvi("x", ["N", 3])
    save(small([helper.make_node("Relu", ["b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2"),
                helper.make_node("Add", ["x", "a"], ["y"], name="n3")], [x], [fvi("y", ["N", 3])]), out, "cycle.onnx")
    save(small([helper.make_node("Relu", ["x"], ["y"], name="n1"), helper.make_node("Neg", ["x"], ["y"], name="n2")],
               [x], [fvi("y", ["N", 3])]), out, "double_write.onnx")
    save(small([helper.make_node("Relu", ["x"], ["x"], name="n1"), helper.make_node("Neg", ["x"], ["y"], name="n2")],
               [x], [fvi("y", ["N", 3])]), out, "writes_input.onnx")
    c = numpy_helper.from_array(np.ones([2, 3], np.float32), "c")
    save(small([helper.make_node("Add", ["x", "c"], ["y"], name="n1")], [x], [fvi("y", ["N", 3])], [c, c]), out,
         "dup_init.onnx")
    m = onnx.load(good)  # a pass must never get a cycle written: the loader refuses it first
    m.graph.node[0].input[0] = m.graph.node[-1].output[0]
    save(m, out, "cycle_bert.onnx")

    # executor: out-of-range Slice axis, outputs of 2^40 elements
    ints = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    save(small([helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="slice")], [x], [fvi("y", None)],
               [ints("s", [0]), ints("e", [1]), ints("a", [5])]), out, "slice_axis.onnx")
    save(small([helper.make_node("ConstantOfShape", ["shape"], ["big"], name="cos"),
                helper.make_node("Add", ["x", "big"], ["y"], name="add")], [x], [fvi("y", None)],
               [ints("shape", [2**20, 2**20])]), out, "constant_of_shape.onnx")
    save(small([helper.make_node("Expand", ["x", "shape"], ["y"], name="expand")], [fvi("x", [1, 1])],
               [fvi("y", None)], [ints("shape", [2**20, 2**20])]), out, "expand.onnx")
    # the memory budget is a running total: each value is 4 MiB, but the constant and four negations of it live
    # together (20 MiB) before Sum reads them
    negs = [helper.make_node("Neg", ["c"], [f"y{i}"], name=f"neg{i}") for i in range(1, 5)]
    save(small([helper.make_node("ConstantOfShape", ["shape"], ["c"], name="cos")] + negs +
               [helper.make_node("Sum", [f"y{i}" for i in range(1, 5)], ["s"], name="sum"),
                helper.make_node("ReduceSum", ["s"], ["r"], name="reduce", keepdims=0),
                helper.make_node("Add", ["x", "r"], ["y"], name="add")], [x], [fvi("y", ["N", 3])],
               [ints("shape", [2**20])]), out, "live_set.onnx")
    # a string tensor on a path the executor computes
    s = helper.make_tensor("s", TensorProto.STRING, [1], [b"a"])
    save(small([helper.make_node("Identity", ["s"], ["t"], name="ident"), helper.make_node("Relu", ["x"], ["y"], name="relu")],
               [x], [fvi("y", ["N", 3]), helper.make_tensor_value_info("t", TensorProto.STRING, [1])], [s]), out, "string.onnx")
    np.savez(os.path.join(out, "x.npz"), x=np.ones([2, 3], np.float32))
    np.savez(os.path.join(out, "x11.npz"), x=np.ones([2, 1], np.float32))
    # 10 MiB: the whole-file read and the array parsed from it live together (20 MiB)
    np.save(os.path.join(out, "x_big.npy"), np.ones([2, 1310720], np.float32))

    # a model with no attention block (qsort(NULL, 0)), and output names longer than any fixed buffer
    save(small([helper.make_node("Relu", ["x"], ["y"], name="relu")], [x], [fvi("y", ["N", 3])]), out, "no_attention.onnx")
    long = "o" * 1500
    save(small([helper.make_node("Relu", ["x"], [long], name="relu")], [x], [fvi(long, ["N", 3])]), out, "long_name.onnx")

    # a whole float64 model (weights of a type the passes do not prune): refused by type, not by a pattern
    # the matcher did not expect
    m = onnx.load(good)
    for t in m.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            a = numpy_helper.to_array(t).astype(np.float64)
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    save(m, out, "float64.onnx")

    # npz bombs: 48 members of 64 MiB of zeros each (3 GiB declared, 3 MiB on disk)
    zeros = npy_bytes(np.zeros(16 * 2**20, np.float32))
    deflated = zlib.compress(zeros, 9)[2:-4]
    crc = zlib.crc32(zeros)
    write_npz(os.path.join(out, "bomb.npz"), [(f"x{i}.npy".encode(), deflated, crc, len(zeros), 8) for i in range(48)])
    # one member that declares 4 GiB - 1 but holds 16 bytes
    write_npz(os.path.join(out, "liar.npz"), [(b"x.npy", zlib.compress(b"\0" * 16)[2:-4], 0, 0xFFFFFFFF, 8)])
    # budget, running total (issue 10): two plain .npy arrays of 4 MiB each, which fit a 6 MiB budget
    # alone but not together
    os.mkdir(os.path.join(out, "npy_pair"))
    for name in ("a", "b"):
        with open(os.path.join(out, "npy_pair", name + ".npy"), "wb") as f:
            f.write(npy_bytes(np.zeros(2**20, np.float32)))

    # a model whose external data file is the one `-o o.onnx --external-data` would write
    os.mkdir(os.path.join(out, "extdir"))
    m = onnx.load(good)
    onnx.save(m, os.path.join(out, "extdir", "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="o.onnx.data", size_threshold=1024)

    # JSON configs
    cfg = lambda name, text: open(os.path.join(out, name), "w").write(text)
    cfg("layer_wrap.json", '{"layers": [{"layer": 4294967296, "head_sparsity": 0.5}]}')
    cfg("layer_frac.json", '{"layers": [{"layer": 0.5, "head_sparsity": 0.5}]}')
    cfg("layer_huge.json", '{"layers": [{"layer": 1e300, "head_sparsity": 0.5}]}')
    cfg("heads_wrap.json", '{"layers": [{"layer": 0, "heads": [4294967296]}]}')
    cfg("num_heads_frac.json", '{"num_heads": 1.5}')
    cfg("dup_key.json", '{"head_sparsity": 0.25, "head_sparsity": 0.5}')
    cfg("dup_layer.json", '{"layers": [{"layer": 0, "num_heads": 2}, {"layer": 0, "num_heads": 3}]}')
    cfg("dup_layer_key.json", '{"layers": {"0": {"num_heads": 2}, "0": {"num_heads": 3}}}')
    cfg("deep.json", "[" * 100000 + "]" * 100000)
    cfg("deep_object.json", '{"layers": ' + '[' * 5000 + ']' * 5000 + '}')


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

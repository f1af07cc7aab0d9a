#!/usr/bin/python3
"""roundtrip.py ONNX_PRUNE FIXTURE.onnx: what onnx-prune does not touch survives, byte for byte.

Decorates a model with metadata, doc strings, value_info, a local function, an extra opset import and
unknown fields (at model, graph and node level), then checks that a no-op prune writes the same
model and that a real prune keeps all of the decorations."""
import os
import subprocess
import sys
import tempfile

import onnx
import onnx.helper as oh


def unknown(field, text):
    """Wire bytes of a length-delimited field `field` no ONNX version defines."""
    key = (field << 3) | 2
    out = bytearray()
    while True:
        b = key & 0x7F
        key >>= 7
        out.append(b | (0x80 if key else 0))
        if not key:
            break
    return bytes(out) + bytes([len(text)]) + text


def decorate(m):
    m.doc_string = "model doc"
    m.graph.doc_string = "graph doc"
    m.graph.node[0].doc_string = "node doc"
    oh.set_model_props(m, {"author": "roundtrip", "license": "MIT"})
    m.opset_import.append(oh.make_opsetid("com.example", 1))
    m.graph.value_info.append(oh.make_tensor_value_info(m.graph.node[0].output[0], onnx.TensorProto.FLOAT, None))
    f = oh.make_function("com.example", "Twice", ["x"], ["y"], [oh.make_node("Add", ["x", "x"], ["y"])],
                         [oh.make_opsetid("", 14)])
    m.functions.append(f)
    # unknown fields: parse what we can't express through the API from bytes
    node = m.graph.node[0]
    node.ParseFromString(node.SerializeToString() + unknown(900, b"node-extra"))
    g = m.graph
    g.ParseFromString(g.SerializeToString() + unknown(901, b"graph-extra"))
    m.ParseFromString(m.SerializeToString() + unknown(902, b"model-extra"))
    return m


def main(binary, fixture):
    tmp = tempfile.mkdtemp()
    src = os.path.join(tmp, "in.onnx")
    m = decorate(onnx.load(fixture))
    data = m.SerializeToString()
    open(src, "wb").write(data)
    failures = 0

    noop = os.path.join(tmp, "noop.onnx")
    subprocess.run([binary, "prune", src, "-o", noop, "-q", "--head-sparsity", "0"], check=True)  # removes nothing
    back = onnx.load(noop)
    if back.SerializeToString(deterministic=True) != onnx.load(src).SerializeToString(deterministic=True):
        print("FAIL no-op prune changed the model")
        failures += 1
    for tag in (b"node-extra", b"graph-extra", b"model-extra"):
        if tag not in open(noop, "rb").read():
            print(f"FAIL unknown field {tag!r} lost")
            failures += 1

    pruned = os.path.join(tmp, "pruned.onnx")
    subprocess.run([binary, "prune", src, "-o", pruned, "-q", "--head-sparsity", "0.5", "--ffn-sparsity", "0.5"],
                   check=True)
    p, raw = onnx.load(pruned), open(pruned, "rb").read()
    checks = {
        "doc strings": (p.doc_string, p.graph.doc_string) == ("model doc", "graph doc"),
        "metadata": {e.key: e.value for e in p.metadata_props} == {"author": "roundtrip", "license": "MIT"},
        "opset imports": [(o.domain, o.version) for o in p.opset_import] == [(o.domain, o.version) for o in m.opset_import],
        "functions": [f.SerializeToString() for f in p.functions] == [f.SerializeToString() for f in m.functions],
        "value_info": any(v.name == m.graph.node[0].output[0] for v in p.graph.value_info),
        "unknown fields": all(t in raw for t in (b"node-extra", b"graph-extra", b"model-extra")),
        "ir_version and producer": (p.ir_version, p.producer_name) == (m.ir_version, m.producer_name),
    }
    for name, ok in checks.items():
        if not ok:
            print(f"FAIL pruned model lost its {name}")
            failures += 1
    total = 2 + len(checks)
    print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

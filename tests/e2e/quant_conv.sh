#!/usr/bin/env bash
# quant_conv.sh ONNX_PRUNE FIXTURE_DIR: Conv quantisation (--op-types Conv): int8 weights per output
# channel (DequantizeLinear axis 0 on [M, C/group, kh, kw]), uint8 activations, float bias; judged by
# check_qdq.py and ONNX Runtime (it runs the QDQ model and its logits stay close to fp32).
# Calibration runs the model in onnx-prune's executor, which needs Conv (from the `ops` branch).
set -u
BIN=$1 DIR=$2
. "$(dirname "$0")/lib.sh"
M=$DIR/model.onnx
q=$work/conv.onnx
if "$BIN" quantize "$M" -o "$q" --data "$DIR" --op-types Conv,MatMul --method mse --report "$work/conv.json" -q 2>"$work/err"; then ok
else bad "quantize: $(cat "$work/err")"; finish; exit 1; fi
$PY "$E2E/check_qdq.py" "$q" "$M" "$work/conv.json" && ok || bad "check_qdq"
$PY - "$q" "$work/conv.json" <<'PY' && ok || bad "Conv weights per output channel"
import json, sys
import numpy as np, onnx, onnx.numpy_helper as nh
g = onnx.load(sys.argv[1]).graph
inits = {t.name: t for t in g.initializer}
prod = {o: n for n in g.node for o in n.output}
convs = [n for n in g.node if n.op_type == "Conv"]
assert len(convs) == 2
for c in convs:
    dq = prod[c.input[1]]
    assert dq.op_type == "DequantizeLinear", dq.op_type
    assert {a.name: a.i for a in dq.attribute}.get("axis") == 0
    w = inits[dq.input[0]]
    assert w.data_type == onnx.TensorProto.INT8 and len(w.dims) == 4, w.dims
    assert list(nh.to_array(inits[dq.input[1]]).shape) == [w.dims[0]]
    assert prod[c.input[0]].op_type == "DequantizeLinear"  # the activation is quantised too
    assert inits[c.input[2]].data_type == onnx.TensorProto.FLOAT  # bias stays float
rep = [t for t in json.load(open(sys.argv[2]))["tensors"] if t["kind"] == "weight"]
assert sorted(t["name"] for t in rep) == ["conv1.weight", "conv2.weight", "fc.weight"], rep
assert all(t["axis"] == 0 and t["channels"] == 4 for t in rep if t["name"].startswith("conv"))
PY
if node "$E2E/ort.js" compare "$M" "$q" --data "$DIR" --tol 0.05 >"$work/ort.log" 2>&1; then ok; else bad "ORT: $(cat "$work/ort.log")"; fi
finish

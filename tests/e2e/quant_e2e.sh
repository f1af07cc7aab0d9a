#!/usr/bin/env bash
# quant_e2e.sh ONNX_PRUNE MODEL_DIR DATA [--accuracy] [--size]: int8 quantisation of one model, judged
# by ONNX Runtime. Every written model passes check_qdq.py and runs in ORT; verify's mean cosine against
# fp32 is >= 0.99 with the best method; with --accuracy (a model with labels), top-1 accuracy in ORT
# over the whole data set stays within 1 point of fp32 for kl, mse and hist; with --size the file is at
# most 30% of fp32.
set -u
BIN=$1 DIR=$2 DATA=$3 ACC=${4:-} SIZE=${5:-}
. "$(dirname "$0")/lib.sh"
M=$DIR/model.onnx
# a fixture's ONNX test data is one run of a batch of samples: as stacked samples (an .npz along the batch
# axis) it can be cut into calibration batches and held-out rows, which a method search needs
if [ -d "$DATA" ]; then
  $PY - "$M" "$DATA/test_data_set_0" "$work/data.npz" <<'PY' || { echo "FAIL: cannot stack $DATA"; exit 1; }
import sys, glob, numpy as np, onnx
from onnx import numpy_helper
m = onnx.load(sys.argv[1])
inits = {t.name for t in m.graph.initializer}
names = [i.name for i in m.graph.input if i.name not in inits]
arrays = {}
for i, name in enumerate(names):
    t = onnx.TensorProto()
    t.ParseFromString(open(f"{sys.argv[2]}/input_{i}.pb", "rb").read())
    arrays[name] = numpy_helper.to_array(t)
np.savez(sys.argv[3], **arrays)
PY
  DATA=$work/data.npz
fi
runs_in_ort() { node "$E2E/ort.js" compare "$M" "$1" --data "$DATA" --rows 16 --tol 1e30 >"$work/ort.log" 2>&1 || { cat "$work/ort.log"; return 1; }; }
fp32_acc=
[ "$ACC" = --accuracy ] && fp32_acc=$(node "$E2E/ort.js" accuracy "$M" --data "$DATA" 2>/dev/null | awk '{print $2}')

for method in kl mse hist; do
  q=$work/$method.onnx
  if "$BIN" quantize "$M" -o "$q" --data "$DATA" --method "$method" --report "$work/$method.json" -q &&
    $PY "$E2E/check_qdq.py" "$q" "$M" "$work/$method.json" $([ "$SIZE" = --size ] && echo --max-size-ratio 0.30) &&
    runs_in_ort "$q"; then ok; else bad "$method: quantize, QDQ checks or ORT"; continue; fi
  if [ -n "$fp32_acc" ]; then
    acc=$(node "$E2E/ort.js" accuracy "$q" --data "$DATA" 2>/dev/null | awk '{print $2}')
    if awk -v a="$acc" -v b="$fp32_acc" 'BEGIN { exit !(a >= b - 0.01) }'; then ok; else bad "$method: accuracy $acc vs fp32 $fp32_acc"; fi
    echo "$method: ORT top-1 $acc (fp32 $fp32_acc)"
  fi
done

# the search: every method x batches candidate scored, the best kept, cosine >= 0.99 (ONNX test data
# takes no --batch: each set is one run)
B4=() B16=()
[ -f "$DATA" ] && B4=(--batch 4) B16=(--batch 16)
if "$BIN" quantize "$M" -o "$work/best.onnx" --data "$DATA" --method kl,mse,hist --batches 1,4 "${B4[@]}" \
  --report "$work/best.json" >"$work/best.txt" && [ "$(grep -c '<- kept' "$work/best.txt")" = 1 ] &&
  [ "$($PY -c "import json,sys;print(len(json.load(open(sys.argv[1]))['trials']))" "$work/best.json")" = 6 ] &&
  "$BIN" verify "$M" "$work/best.onnx" --data "$DATA" "${B16[@]}" --min-cosine 0.99 >"$work/verify.txt"; then ok
else bad "search or cosine >= 0.99: $(cat "$work/best.txt" "$work/verify.txt" 2>/dev/null | tail -12)"; fi

# the TensorRT profile: int8 symmetric activations, zero points 0
if "$BIN" quantize "$M" -o "$work/trt.onnx" --data "$DATA" --profile tensorrt --method mse --report "$work/trt.json" -q &&
  $PY "$E2E/check_qdq.py" "$work/trt.onnx" "$M" "$work/trt.json" --symmetric-int8 && runs_in_ort "$work/trt.onnx"; then ok
else bad "tensorrt profile"; fi

# per-tensor weights, attention MatMuls and Adds too, bias correction, an excluded node
excl=$($PY -c "
import onnx,sys
m=onnx.load(sys.argv[1])
w={t.name for t in m.graph.initializer}|{n.output[0] for n in m.graph.node if n.op_type in ('Constant','Identity')}
print(next(n.name for n in m.graph.node if n.op_type in ('MatMul','Gemm') and any(i in w for i in n.input)))" "$M")
if "$BIN" quantize "$M" -o "$work/wide.onnx" --data "$DATA" --weight-granularity tensor --op-types MatMul,Gemm,AttentionMatMul,Add \
  --bias-correction --exclude "$excl" --method avg --report "$work/wide.json" -q &&
  $PY "$E2E/check_qdq.py" "$work/wide.onnx" "$M" "$work/wide.json" --exclude "$excl" && runs_in_ort "$work/wide.onnx"; then ok
else bad "per-tensor / wide op types / bias correction / exclude"; fi

# bias correction changes the biases of the quantised linear layers, and says how many
if "$BIN" quantize "$M" -o "$work/bc.onnx" --data "$DATA" --method mse --bias-correction --report "$work/bc.json" -q &&
  $PY - "$work/mse.onnx" "$work/bc.onnx" "$work/bc.json" "$M" <<'PY'
import json, sys
import numpy as np, onnx, onnx.numpy_helper as nh
def vectors(g):  # float vectors held as initializers or in Constant nodes (named by their output)
    ts = [(t.name, t) for t in g.initializer] + [(n.output[0], x.t) for n in g.node if n.op_type == "Constant"
                                                  for x in n.attribute if x.name == "value"]
    return {k: nh.to_array(t) for k, t in ts if t.data_type == 1 and len(t.dims) == 1}
a = vectors(onnx.load(sys.argv[1]).graph)
b = vectors(onnx.load(sys.argv[2]).graph)
changed = sum(1 for k in a if k in b and a[k].shape == b[k].shape and not np.array_equal(a[k], b[k]))
n = json.load(open(sys.argv[3]))["biases_corrected"]
# does the fp32 model have a biased linear layer (MatMul + Add of a vector, or Gemm with C)?
g = onnx.load(sys.argv[4]).graph
vec = {t.name for t in g.initializer if len(t.dims) == 1}
prod = {o: n.op_type for n in g.node for o in n.output}
biased = any((n.op_type == "Gemm" and len(n.input) > 2) or
             (n.op_type == "Add" and any(i in vec for i in n.input) and any(prod.get(i) == "MatMul" for i in n.input))
             for n in g.node)
assert n == changed, f"the report says {n} biases corrected, {changed} changed"
assert n > 0 or not biased, "a model with biased layers got no correction"
PY
then ok; else bad "bias correction changed nothing"; fi

# compress: prune then quantize from one config; one report with both steps
cat >"$work/compress.json" <<JSON
{"prune": {"head_sparsity": 0.5, "ffn_sparsity": 0.25}, "quantize": {"method": ["mse"], "bias_correction": true}}
JSON
if "$BIN" compress "$M" -o "$work/compressed.onnx" --config "$work/compress.json" --data "$DATA" --report "$work/c.json" -q &&
  $PY -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['prune']['parameters']['after'] < r['prune']['parameters']['before'] and r['quantize']['method'] == 'mse'" "$work/c.json" &&
  $PY -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['quantize'], open(sys.argv[2], 'w'))" "$work/c.json" "$work/cq.json" &&
  $PY "$E2E/check_qdq.py" "$work/compressed.onnx" "$M" "$work/cq.json" && runs_in_ort "$work/compressed.onnx"; then ok
else bad "compress"; fi

finish

#!/usr/bin/env bash
# match_forms.sh ONNX_PRUNE FIXTURES SHARED_MODELS: forms the matcher does not prune are named with a
# reason (never a silent empty "unmatched"), and models already quantised (QDQ, QOperator,
# MatMulNBits) are refused by prune and quantize with one clear line.
set -u
BIN=$1 FIX=$2 SHARED=$3
. "$(dirname "$0")/lib.sh"
O=$work/out/model.onnx
F=$FIX/bert_separate_mask_opset11

# already quantised: our own QDQ output, and the two other forms
if "$BIN" quantize "$F/model.onnx" -o "$work/qdq.onnx" --data "$F" -q; then ok; else bad "quantize the fixture"; fi
$PY "$E2E/make_quantised_models.py" "$work/q" || { echo "cannot make quantised models"; exit 1; }
expect prune-qdq "qdq.onnx: the model is already quantised, QDQ (.* DequantizeLinear" -- prune "$work/qdq.onnx" -o "$O" --head-sparsity 0.5
expect quantize-qdq "qdq.onnx: the model is already quantised, QDQ" -- quantize "$work/qdq.onnx" -o "$O" --data "$F"
expect prune-qoperator "qoperator.onnx: the model is already quantised, QOperator (1 quantisation nodes, the first MatMulInteger 'mmi')" -- prune "$work/q/qoperator.onnx" -o "$O" --head-sparsity 0.5
expect prune-nbits "nbits.onnx: the model is already quantised, MatMulNBits (.*'nbits')" -- prune "$work/q/nbits.onnx" -o "$O" --head-sparsity 0.5
expect quantize-nbits "nbits.onnx: the model is already quantised, MatMulNBits" -- quantize "$work/q/nbits.onnx" -o "$O" --data "$F"
if "$BIN" inspect "$work/qdq.onnx" --json | grep -Eq '"quantized":\s*"QDQ'; then ok; else bad "inspect: quantised form not shown"; fi
if "$BIN" inspect "$F/model.onnx" --json | grep -Eq '"quantized":\s*null'; then ok; else bad "inspect: float model shown as quantised"; fi

# ONNX Runtime's fused GPT-2 is matched (tests/e2e/fused_e2e.sh prunes it); a fused attention op of a
# form not understood is named with the attribute or input at fault, never left out of "unmatched"
G=$SHARED/real/gpt2_ortfused/model.onnx
$PY - "$G" "$work/fused_odd.onnx" <<'PY'
import sys, onnx, numpy as np
from onnx import helper, numpy_helper
m = onnx.load(sys.argv[1])
att = [n for n in m.graph.node if n.op_type == "Attention"]
att[0].attribute.append(helper.make_attribute("softcap", 30.0))  # an attribute the rewrite does not know
m.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 4, 1, 1), np.float32), "per_head_bias"))
while len(att[1].input) < 6:
    att[1].input.append("")
att[1].input[5] = "per_head_bias"  # attention_bias: one value per head
onnx.save(m, sys.argv[2])
PY
"$BIN" inspect "$work/fused_odd.onnx" --json >"$work/fused_odd.json"
if grep -q "not matched: GptAttention_0: Attention 'GptAttention_0': attribute 'softcap' is not understood" "$work/fused_odd.json" &&
  grep -q "not matched: GptAttention_1: Attention 'GptAttention_1': input 5 (attention_bias 'per_head_bias') carries values per head" "$work/fused_odd.json" &&
  [ "$($PY -c "import json,sys;print(len(json.load(open(sys.argv[1]))['unmatched']))" "$work/fused_odd.json")" = 2 ]; then ok
else bad "fused attention not understood: reasons"; cat "$work/fused_odd.json"; fi
expect prune-fused-odd-drop "2 attention block(s) are not matched" -- prune "$work/fused_odd.onnx" -o "$O" --keep-layers 0,1
# a lone fused attention op (tests/fixtures/contrib: no projections around it) is listed with its reason
for d in "$FIX"/contrib/attention_* "$FIX"/contrib/mha_* "$FIX"/contrib/gqa_* "$FIX"/contrib/refuse_*attention* \
  "$FIX"/contrib/refuse_gqa_* "$FIX"/contrib/refuse_mha_*; do
  op=$($PY -c "import onnx,sys;print(onnx.load(sys.argv[1]).graph.node[-1].op_type)" "$d/model.onnx")
  "$BIN" inspect "$d/model.onnx" --json >"$work/lone.json" 2>&1
  if $PY -c "
import json, sys
u = json.load(open(sys.argv[1]))['unmatched']
sys.exit(not (len(u) == 1 and sys.argv[2] in u[0]))" "$work/lone.json" "$op '"; then ok
  else bad "$(basename "$d"): no reason naming $op: $(head -c 300 "$work/lone.json")"; fi
done

# torch's decoder layers: cross-attention's in-projection, cut from one packed weight at run time, is
# folded into weights and matched (it used to be reported as "q path: unexpected op" and then as cut at
# run time); pruning of these models is tested by the seq2seq tests
for name in torch_decoder_seqfirst_opset14 torch_transformer_prenorm_opset14; do
  "$BIN" inspect "$FIX/$name/model.onnx" --json >"$work/$name.inspect.json"
  if $PY - "$work/$name.inspect.json" <<'PY'; then ok; else bad "$name: cross-attention not matched"; fi
import json, sys
j = json.load(open(sys.argv[1]))
assert j["unmatched"] == [], j["unmatched"]
assert sum(l["cross_attention"] is not None for l in j["layers"]) == 2
PY
done

# a weight shared by two blocks (layer 1's q reads layer 0's q weight) is never sliced under either:
# both attentions are unmatched with the reason, and pruning leaves the weight whole
$PY - "$F/model.onnx" "$work/shared.onnx" <<'PY'
import sys, onnx
m = onnx.load(sys.argv[1])
mm = {n.name: n for n in m.graph.node}
mm["/layers.1/q/MatMul"].input[1] = mm["/layers.0/q/MatMul"].input[1]
onnx.save(m, sys.argv[2])
PY
"$BIN" inspect "$work/shared.onnx" >"$work/shared.txt"
if [ "$(grep -c "q path: projection behind Add '/layers.[01]/q/Add': weight is shared with other nodes" "$work/shared.txt")" = 2 ]; then ok
else bad "shared weight: reasons"; cat "$work/shared.txt"; fi
if "$BIN" prune "$work/shared.onnx" -o "$work/shared_p.onnx" --head-sparsity 0.5 --ffn-sparsity 0.5 -q &&
  $PY - "$work/shared.onnx" "$work/shared_p.onnx" <<'PY'
import sys, onnx
a, b = ({t.name: list(t.dims) for t in onnx.load(p).graph.initializer} for p in sys.argv[1:3])
w = next(n.input[1] for n in onnx.load(sys.argv[1]).graph.node if n.name == "/layers.0/q/MatMul")
assert b[w] == a[w], f"shared weight {w} sliced: {a[w]} -> {b[w]}"
PY
then ok; else bad "shared weight: sliced or prune failed"; fi

# float16 weights are written back as float16, sliced
L=$FIX/llama_fp16_weights_opset14/model.onnx
if "$BIN" prune "$L" -o "$work/fp16.onnx" --head-sparsity 0.5 --ffn-sparsity 0.5 -q &&
  $PY - "$L" "$work/fp16.onnx" <<'PY'
import sys, onnx
a, b = ({t.name: t for t in onnx.load(p).graph.initializer} for p in sys.argv[1:3])
sliced = [k for k in b if len(b[k].dims) == 2 and list(b[k].dims) != list(a[k].dims)]
assert sliced and all(b[k].data_type == onnx.TensorProto.FLOAT16 for k in b if len(b[k].dims) == 2), "float16 weights"
PY
then ok; else bad "float16 weights: not written as float16"; fi

finish

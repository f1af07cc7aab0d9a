#!/usr/bin/env bash
# quant_half.sh ONNX_PRUNE FIXTURES: int8 quantisation of a float16 model (tests/fixtures/export_half_encoder,
# a model.half() export at opset 14) and of its opset-19 form, judged in ONNX Runtime against the float32
# model with the same weights (half_variants.py): every method writes a model that passes check_qdq.py and
# runs in ORT with a mean cosine >= 0.99 against float32 (quant_e2e.sh's bound for float32 models), and loses
# at most 0.005 of cosine to the float32 model quantised the same way; opset 14 gets float32 QDQ between
# Casts, opset 19 float16 QDQ with float16 scales; verify, the search, the TensorRT profile, per-tensor
# weights with Add and bias correction, and compress work on it; bfloat16 and AttentionMatMul are refused.
set -u
BIN=$1 FIX=$2
. "$(dirname "$0")/lib.sh"
H=$FIX/export_half_encoder/model.onnx
[ -f "$H" ] || { echo "FAIL missing fixture $H"; exit 1; }
$PY "$E2E/half_variants.py" "$H" "$work/v" || { echo "FAIL half_variants.py"; exit 1; }
F32=$work/v/fp32.onnx O19=$work/v/op19.onnx D16=$work/v/data16.npz D32=$work/v/data32.npz
# cosine MODEL MIN [DATA]: ORT's mean cosine of MODEL (on DATA, default the float16 data) against the float32 model
cosine() { node "$E2E/ort.js" cosine "$F32" "$D32" "$1" "${3:-$D16}" --min-cosine "$2" >"$work/cos.log" 2>&1 || { cat "$work/cos.log"; return 1; }
  awk '/mean cosine/ { print $4 }' "$work/cos.log"; }
# ops of a QDQ model: how many QuantizeLinear, Cast, float16 scales
shape_of() { $PY -c "
import onnx, sys
m = onnx.load(sys.argv[1]); ops = [n.op_type for n in m.graph.node]
init = {t.name: t.data_type for t in m.graph.initializer}
sc = {init.get(n.input[1]) for n in m.graph.node if n.op_type in ('QuantizeLinear', 'DequantizeLinear')}
print(ops.count('QuantizeLinear'), ops.count('Cast'), 'f16' if sc == {10} else 'f32' if sc == {1} else sc)" "$1"; }

casts=$(shape_of "$H" | awk '{print $2}')
for method in kl mse hist abs_max min_max avg emd; do
  if "$BIN" quantize "$F32" -o "$work/f32_$method.onnx" --data "$D32" --method "$method" -q &&
    ref=$(cosine "$work/f32_$method.onnx" 0.99 "$D32"); then ok; else bad "$method: the float32 model quantised: ${ref:-}"; continue; fi
  for form in 14:"$H" 19:"$O19"; do
    M=${form#*:} q=$work/q${form%%:*}_$method.onnx
    if "$BIN" quantize "$M" -o "$q" --data "$D16" --method "$method" --report "$q.json" -q &&
      $PY "$E2E/check_qdq.py" "$q" "$M" "$q.json" && c=$(cosine "$q" 0.99) &&
      awk -v c="$c" -v r="$ref" 'BEGIN { exit !(c >= r - 0.005) }'; then ok
    else bad "$method opset ${form%%:*}: cosine ${c:-?} vs float32 quantised ${ref:-?}"; continue; fi
    echo "$method opset ${form%%:*}: ORT mean cosine vs float32 $c (float32 quantised: $ref)"
    read -r nq nc sc <<<"$(shape_of "$q")"
    if [ "${form%%:*}" = 14 ]; then want="f32 $((casts + 2 * nq + 8))"; else want="f16 $casts"; fi # + 8 weight Casts
    if [ "$sc $nc" = "$want" ]; then ok; else bad "$method opset ${form%%:*}: scales/Casts '$sc $nc', expected '$want'"; fi
  done
done
grep -q '"float16_form":[[:space:]]*"float32 QuantizeLinear/DequantizeLinear between Casts' "$work/q14_kl.onnx.json" &&
  grep -q '"float16_form":[[:space:]]*"float16 QuantizeLinear/DequantizeLinear with float16 scales' "$work/q19_kl.onnx.json" && ok ||
  bad "the report does not say which float16 form was written"

# our executor runs it: verify against the float16 model
for form in "$H":q14_kl "$O19":q19_kl; do
  if "$BIN" verify "${form%:*}" "$work/${form##*:}.onnx" --data "$D16" --batch 8 --min-cosine 0.99 >"$work/verify.txt"; then ok
  else bad "verify ${form##*:}: $(cat "$work/verify.txt")"; fi
done

# the search, the TensorRT profile, per-tensor weights with Add and bias correction (float16 biases change)
if "$BIN" quantize "$H" -o "$work/best.onnx" --data "$D16" --method kl,mse,hist --batches 1,4 --batch 4 >"$work/best.txt" &&
  [ "$(grep -c '<- kept' "$work/best.txt")" = 1 ] && cosine "$work/best.onnx" 0.99 >/dev/null; then ok
else bad "search: $(cat "$work/best.txt")"; fi
if "$BIN" quantize "$H" -o "$work/trt.onnx" --data "$D16" --profile tensorrt --method mse --report "$work/trt.json" -q &&
  $PY "$E2E/check_qdq.py" "$work/trt.onnx" "$H" "$work/trt.json" --symmetric-int8 && cosine "$work/trt.onnx" 0.99 >/dev/null; then ok
else bad "tensorrt profile"; fi
if "$BIN" quantize "$H" -o "$work/wide.onnx" --data "$D16" --weight-granularity tensor --op-types MatMul,Gemm,Add \
  --bias-correction --method avg --report "$work/wide.json" -q &&
  $PY "$E2E/check_qdq.py" "$work/wide.onnx" "$H" "$work/wide.json" && cosine "$work/wide.onnx" 0.99 >/dev/null &&
  $PY - "$H" "$work/wide.onnx" "$work/wide.json" <<'PY'
import json, sys
import numpy as np, onnx, onnx.numpy_helper as nh
vec = lambda p: {t.name: nh.to_array(t) for t in onnx.load(p).graph.initializer if t.data_type == 10 and len(t.dims) == 1}
a, b = vec(sys.argv[1]), vec(sys.argv[2])
changed = sum(1 for k in a if k in b and not np.array_equal(a[k], b[k]))
n = json.load(open(sys.argv[3]))["biases_corrected"]
assert n > 0 and n == changed, f"the report says {n} biases corrected, {changed} float16 biases changed"
PY
then ok; else bad "per-tensor / Add / bias correction"; fi

# compress: prune then quantize, one config
echo '{"prune": {"head_sparsity": 0.5, "ffn_sparsity": 0.25}, "quantize": {"method": ["mse"]}}' >"$work/c.json"
if "$BIN" compress "$H" -o "$work/comp.onnx" --config "$work/c.json" --data "$D16" -q && cosine "$work/comp.onnx" 0.9 >/dev/null &&
  [ "$(shape_of "$work/comp.onnx" | awk '{print $1}')" -gt 0 ]; then ok
else bad "compress: $(cat "$work/cos.log")"; fi

# refused by name: a bfloat16 model (ONNX Runtime has no CPU kernels for it), whether its weights are raw
# (named by node) or typed (named by weight); AttentionMatMul on float16 (ONNX Runtime crashes on it)
expect bf16-raw "node '/enc/layers.0/self_attn/MatMul' (MatMul) computes in bfloat16 .* quantise the float32 or float16 model" \
  -- quantize "$work/v/bf16.onnx" -o "$work/out/q.onnx" --data "$D16"
expect bf16-typed "the weights are bfloat16 (e.g. 'emb.weight')" \
  -- quantize "$FIX/bert_bf16_opset11/model.onnx" -o "$work/out/q.onnx" --data "$FIX/bert_bf16_opset11"
expect attention-f16 "AttentionMatMul is refused on float16 models" \
  -- quantize "$H" -o "$work/out/q.onnx" --data "$D16" --op-types MatMul,AttentionMatMul
finish

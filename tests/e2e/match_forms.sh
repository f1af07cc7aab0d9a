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
expect prune-qoperator "qoperator.onnx: the model is already quantised, QOperator (1 quantisation nodes, the first MatMulInteger 'mmi')" -- prune "$work/q/qoperator.onnx" -o "$O"
expect prune-nbits "nbits.onnx: the model is already quantised, MatMulNBits (.*'nbits')" -- prune "$work/q/nbits.onnx" -o "$O"
expect quantize-nbits "nbits.onnx: the model is already quantised, MatMulNBits" -- quantize "$work/q/nbits.onnx" -o "$O" --data "$F"
if "$BIN" inspect "$work/qdq.onnx" --json | grep -Eq '"quantized":\s*"QDQ'; then ok; else bad "inspect: quantised form not shown"; fi
if "$BIN" inspect "$F/model.onnx" --json | grep -Eq '"quantized":\s*null'; then ok; else bad "inspect: float model shown as quantised"; fi

# ONNX Runtime's fused GPT-2: every fused attention op and every fused-bias FFN is named with its reason
G=$SHARED/real/gpt2_ortfused/model.onnx
"$BIN" inspect "$G" >"$work/fused.txt"
n_attn=$(grep -c "not matched: GptAttention_[0-4]: fused attention operator com.microsoft.Attention" "$work/fused.txt")
n_ffn=$(grep -c "not matched: FullyConnect_MatMul_[0-9]: FFN down projection: FastGelu 'FastGelu_AddBias_[0-4]'" "$work/fused.txt")
if [ "$n_attn" = 5 ] && [ "$n_ffn" = 5 ]; then ok; else bad "fused gpt2: $n_attn attention and $n_ffn FFN reasons, want 5 and 5"; cat "$work/fused.txt"; fi
expect prune-fused "no attention or FFN block found; not matched: " -- prune "$G" -o "$O" --head-sparsity 0.5

finish

#!/usr/bin/env bash
# gpt2_past_batch.sh ONNX_PRUNE MODEL_DIR: ONNX Runtime's fused GPT-2 (../shared/models/real/gpt2_ortfused)
# with past state: past_N is [2, batch_size, 4, past_seq_len, 8], so its batch is axis 1 (axis 0 also
# has 2 entries: cutting there would pass the wrong half silently). Run one sample at a time, the
# outputs (logits on axis 0, present_N on axis 1) must equal ONNX Runtime's on the whole batch.
set -u
BIN=$1 DIR=$2
. "$(dirname "$0")/lib.sh"
M=$DIR/model.onnx D=$DIR/inputs.npz
[ -f "$M" ] && [ -f "$D" ] || { echo "FAIL missing $M or $D"; exit 1; }
if "$BIN" run "$M" --data "$D" --batch 1 -o "$work/ours.npz" 2>"$work/err" &&
  ort ours "$M" "$work/ours.npz" --data "$D" --rows 1000000 --tol 1e-4; then ok; else bad "run: $(head -c 300 "$work/err")"; fi
finish

#!/usr/bin/env bash
# exec_e2e.sh ONNX_PRUNE MODEL_DIR DATA ROWS BATCH: our executor against ONNX Runtime on one model.
# ROWS 0: ONNX test data, whose sets are complete runs (no --samples / --batch).
# `run` outputs must match ORT's within 1e-4 (relative to output scale); `verify` of the model
# against a pruned copy must report the figures ORT's outputs give; thresholds gate the exit code.
set -u
BIN=$1 DIR=$2 DATA=$3 ROWS=$4 BATCH=$5
. "$(dirname "$0")/lib.sh"
M=$DIR/model.onnx
WINDOW=(--samples "$ROWS" --batch "$BATCH")
[ "$ROWS" = 0 ] && WINDOW=() ROWS=1000000

if "$BIN" run "$M" --data "$DATA" "${WINDOW[@]}" -o "$work/ours.npz" 2>"$work/run.err" &&
  [ ! -s "$work/run.err" ] && # no progress bar when stderr is not a terminal
  ort ours "$M" "$work/ours.npz" --data "$DATA" --rows "$ROWS" --tol 1e-4; then ok; else bad "run: outputs differ from ONNX Runtime"; fi

# the same samples in other batch sizes give the same outputs
if [ ${#WINDOW[@]} = 0 ]; then ok; elif "$BIN" run "$M" --data "$DATA" --samples "$ROWS" --batch 1000000 -o "$work/one.npz" &&
  ort ours "$M" "$work/one.npz" --data "$DATA" --rows "$ROWS" --tol 1e-4; then ok; else bad "run: one batch differs"; fi

"$BIN" prune "$M" -o "$work/pruned.onnx" --head-sparsity 0.5 --ffn-sparsity 0.5 -q
if "$BIN" verify "$M" "$work/pruned.onnx" --data "$DATA" "${WINDOW[@]}" --json >"$work/v.json" &&
  ort verify "$M" "$work/pruned.onnx" "$work/v.json" --data "$DATA" --rows "$ROWS"; then ok; else bad "verify: figures differ from ONNX Runtime's"; fi

# a model against itself: exact, and any threshold passes
"$BIN" verify "$M" "$M" --data "$DATA" "${WINDOW[@]}" --min-cosine 1 --min-agreement 1 >"$work/self.txt"
if [ $? -eq 0 ] && grep -q " 0 " "$work/self.txt"; then ok; else bad "verify: a model against itself"; cat "$work/self.txt"; fi

# a threshold the pruned model misses: exit 1, with the reason on stderr
"$BIN" verify "$M" "$work/pruned.onnx" --data "$DATA" "${WINDOW[@]}" --min-cosine 0.999999 >/dev/null 2>"$work/err"
rc=$?
if [ $rc -eq 1 ] && grep -q "below --min-cosine" "$work/err"; then ok; else bad "verify threshold: rc=$rc $(cat "$work/err")"; fi

# on a terminal, a progress bar: samples done, samples/s, ETA
if command -v script >/dev/null; then
  script -qec "$BIN run '$M' --data '$DATA' ${WINDOW[*]} -o '$work/tty.npz'" /dev/null >"$work/tty.log" 2>&1
  if grep -q "\([0-9][0-9]*\)/\1 samples  [0-9.]* samples/s  ETA 0:00" "$work/tty.log"; then ok; else bad "progress bar on a terminal: $(tail -c 300 "$work/tty.log")"; fi
fi

finish

#!/usr/bin/env bash
# exports_e2e.sh ONNX_PRUNE FIXTURE_DIR TOL: one real export (tests/fixtures/gen_exports.py) through every
# command that runs it: `run` on its test data agrees with ONNX Runtime within TOL (relative),
# `verify` of the model against itself is exact, `quantize --data` and `prune --importance activation
# --data` (50% heads, 50% FFN; some of both removed) write models ONNX Runtime runs.
# [--refuse-quantize PATTERN] [--refuse-prune PATTERN]: what is not supported yet for this export must be
# refused with exit 2, one line matching PATTERN, and no output (so the day it works, the test says so).
set -u
BIN=$1 DIR=$2 TOL=$3
shift 3
REFUSE_Q= REFUSE_P=
while [ $# -gt 0 ]; do
  case $1 in
  --refuse-quantize) REFUSE_Q=$2 ;;
  --refuse-prune) REFUSE_P=$2 ;;
  esac
  shift 2
done
. "$(dirname "$0")/lib.sh"
M=$DIR/model.onnx
[ -f "$M" ] && [ -d "$DIR/test_data_set_0" ] || { echo "FAIL missing fixture $DIR"; exit 1; }

if "$BIN" run "$M" --data "$DIR" -o "$work/ours.npz" 2>"$work/err" &&
  ort ours "$M" "$work/ours.npz" --data "$DIR" --tol "$TOL"; then ok; else bad "run: $(head -c 300 "$work/err")"; fi

if "$BIN" verify "$M" "$M" --data "$DIR" --min-cosine 0.99999 >"$work/v.txt" 2>"$work/err"; then ok
else bad "verify against itself: $(head -c 300 "$work/err")"; fi

if [ -n "$REFUSE_Q" ]; then
  expect quantize-refused "$REFUSE_Q" -- quantize "$M" -o "$work/out/q.onnx" --data "$DIR" -q
elif "$BIN" quantize "$M" -o "$work/q.onnx" --data "$DIR" -q 2>"$work/err" &&
  ort compare "$M" "$work/q.onnx" --data "$DIR" --tol 1e30; then ok; else bad "quantize: $(head -c 300 "$work/err")"; fi

if [ -n "$REFUSE_P" ]; then
  expect prune-refused "$REFUSE_P" -- prune "$M" -o "$work/out/p.onnx" --importance activation --data "$DIR" \
    --head-sparsity 0.5 --ffn-sparsity 0.5 -q
elif "$BIN" prune "$M" -o "$work/p.onnx" --importance activation --data "$DIR" --head-sparsity 0.5 --ffn-sparsity 0.5 \
  --report "$work/p.json" -q 2>"$work/err" &&
  $PY -c "
import json, sys
r = json.load(open(sys.argv[1]))
heads = sum(len(l.get('removed_heads') or []) for l in r['layers'])
neurons = sum(len(l.get('removed_neurons') or []) for l in r['layers'])
print('unmatched:', r.get('unmatched'))
sys.exit(not (heads and neurons))" "$work/p.json" >"$work/p.log" 2>&1 &&
  ort compare "$M" "$work/p.onnx" --data "$DIR" --tol 1e30; then ok
else bad "prune --importance activation: $(head -c 300 "$work/err") $(cat "$work/p.log" 2>/dev/null | head -c 300)"; fi
finish

#!/usr/bin/env bash
# recon_bench.sh ONNX_PRUNE [SHARED_MODELS]: the README's table of pruning without retraining (issue 12):
# 50% of heads + 50% of FFN neurons (50% of the encoder FLOPs kept) on each shared model, by importance
# l2 / activation / reconstruction, without and with compensation, judged by ONNX Runtime on the rows of
# dev.npz not used for calibration (calibration: every K-th row, as tests/e2e/recon_quality.sh cuts them).
# Prints markdown rows: model, importance, compensation, held-out figure, seconds to prune.
set -u
BIN=$1 SHARED=${2:-$(dirname "$0")/../../shared/models}
E2E=$(cd "$(dirname "$0")/../tests/e2e" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "| model | importance | compensation | held-out | prune time |"
echo "| --- | --- | --- | --- | --- |"
for spec in "austen_bert accuracy 14 128" "digits_vit accuracy 3 60" "austen_gpt perplexity 10 128"; do
  set -- $spec
  name=$1 mode=$2 stride=$3 samples=$4
  /usr/bin/python3 - "$SHARED/$name/dev.npz" "$stride" "$work" <<'PY'
import sys
import numpy as np
d = np.load(sys.argv[1]); k = int(sys.argv[2]); cal = np.arange(len(d['labels'])) % k == k // 2
np.savez(sys.argv[3] + '/cal.npz', **{a: d[a][cal] for a in d.files if a != 'labels'})
np.savez(sys.argv[3] + '/eval.npz', **{a: d[a][~cal] for a in d.files})
PY
  rows=$([ "$mode" = perplexity ] && echo 256 || echo 1000000)
  fig() { node "$E2E/ort.js" "$mode" "$1" --data "$work/eval.npz" --rows "$rows" | awk '{print $2}'; }
  echo "| $name | dense | | $(fig "$SHARED/$name/model.onnx") | |"
  for imp in l2 activation reconstruction; do
    for comp in no yes; do
      args=(--head-sparsity 0.5 --ffn-sparsity 0.5 --importance "$imp")
      [ "$imp" != l2 ] || [ "$comp" = yes ] && args+=(--data "$work/cal.npz" --samples "$samples" --batch 16)
      [ "$comp" = no ] && [ "$imp" != l2 ] && args+=(--no-compensate)
      start=$(date +%s.%N)
      "$BIN" prune "$SHARED/$name/model.onnx" -o "$work/p.onnx" -q "${args[@]}" || { echo "| $name | $imp | $comp | failed | |"; continue; }
      secs=$(echo "$(date +%s.%N) - $start" | bc)
      printf '| %s | %s | %s | %s | %.1f s |\n' "$name" "$imp" "$comp" "$(fig "$work/p.onnx")" "$secs"
    done
  done
done

#!/usr/bin/env bash
# quant_bench.sh [BUILD_DIR] [MODEL_DIR]: quantizes a model (default ../shared/models/austen_bert) with
# kl and prints, measured in the same run, ONNX Runtime's batch-1 latency of fp32 and int8 at 1 and 2
# threads with their ratio (target: int8 at least 1.5x faster), and the file size ratio (target: at
# most 30%). Not a test: it asserts nothing.
set -euo pipefail
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${2:-$HERE/../../shared/models/austen_bert}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$BUILD/onnx-prune" quantize "$DIR/model.onnx" -o "$work/int8.onnx" --data "$DIR/dev.npz" --method kl -q
/usr/bin/python3 -c "
import numpy as np, sys
d = np.load(sys.argv[1])
np.savez(sys.argv[2], **{k: d[k][:1] for k in d.files if k != 'labels'})" "$DIR/dev.npz" "$work/one.npz"
runs=${RUNS:-300}
for t in 1 2; do
  f=$(node "$HERE/ort_bench.js" "$DIR/model.onnx" "$work/one.npz" "$runs" "$t" 2>/dev/null | awk '{print $2}')
  q=$(node "$HERE/ort_bench.js" "$work/int8.onnx" "$work/one.npz" "$runs" "$t" 2>/dev/null | awk '{print $2}')
  awk -v f="$f" -v q="$q" -v t="$t" 'BEGIN { printf "ORT batch 1, %d thread(s): fp32 %.3f ms, int8 %.3f ms, speed-up %.2fx (target >= 1.5x)\n", t, f, q, f / q }'
done
awk -v a="$(stat -c %s "$work/int8.onnx")" -v b="$(stat -c %s "$DIR/model.onnx")" \
  'BEGIN { printf "file size: int8 %.1f MB, fp32 %.1f MB, ratio %.1f%% (target <= 30%%)\n", a / 1e6, b / 1e6, 100 * a / b }'

#!/usr/bin/env bash
# exec_bench.sh [BUILD_DIR]: latency of the BERT-base-sized model (batch 1, sequence 128) in our
# executor and in ONNX Runtime, 2 threads each, measured in the same run; prints both and the ratio
# (target: ours <= 1.5x ORT's). Not a test: it asserts nothing.
set -euo pipefail
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
work=${BENCH_DIR:-$(mktemp -d)}
model=$work/bert_base.onnx
[ -s "$model" ] || /usr/bin/python3 "$HERE/make_bert_base.py" "$model" 2>/dev/null
/usr/bin/python3 -c "
import numpy as np, sys
ids = np.random.RandomState(0).randint(0, 30522, (1, 128)).astype(np.int64)
np.savez(sys.argv[1], input_ids=ids, attention_mask=np.ones_like(ids))" "$work/seq128.npz"
runs=${RUNS:-20}
ours=$(OPENBLAS_NUM_THREADS=2 "$BUILD/exec_bench" "$model" "$work/seq128.npz" "$runs" | awk '{print $2}')
theirs=$(node "$HERE/ort_bench.js" "$model" "$work/seq128.npz" "$runs" 2 | awk '{print $2}')
awk -v a="$ours" -v b="$theirs" 'BEGIN {
  printf "BERT-base, batch 1, sequence 128, 2 threads, median of runs\n"
  printf "onnx-prune executor: %.1f ms\nONNX Runtime:        %.1f ms\n", a, b
  printf "ratio (ours / ORT):  %.2fx (target <= 1.5x)\n", a / b
}'

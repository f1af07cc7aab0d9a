#!/usr/bin/env bash
# prune_bench.sh [BUILD_DIR]: prunes a BERT-base-sized model end to end and prints, measured in the
# same run, its time against `cp` of the same file and its peak memory against the file size.
# Targets: time <= 4x cp, peak memory <= 1.5x the file. Not a test: it prints ratios, it asserts nothing.
set -euo pipefail
BUILD=${1:-build}
BIN=$BUILD/onnx-prune
work=${BENCH_DIR:-$(mktemp -d)}
model=$work/bert_base.onnx
[ -s "$model" ] || /usr/bin/python3 "$(dirname "$0")/make_bert_base.py" "$model" 2>/dev/null
size=$(stat -c %s "$model")
cat "$model" >/dev/null # both runs start from a warm page cache
best() { sort -n | head -1; }
cp_s=$(for i in 1 2 3; do rm -f "$work/copy.onnx"; /usr/bin/time -f %e cp "$model" "$work/copy.onnx" 2>&1; done | best)
# both start with no output file: replacing an old one would add the cost of deleting it
prune_s=$(for i in 1 2 3; do rm -f "$work/pruned.onnx"; /usr/bin/time -f "%e %M" "$BIN" prune "$model" \
  -o "$work/pruned.onnx" --head-sparsity 0.5 --ffn-sparsity 0.5 -q 2>&1; done | sort -n | head -1)
t=${prune_s% *} rss_kb=${prune_s#* }
awk -v cp="$cp_s" -v t="$t" -v rss="$rss_kb" -v size="$size" 'BEGIN {
  printf "model: %.0f MB\n", size / 1e6
  printf "cp:    %.3f s\n", cp
  printf "prune: %.3f s, peak RSS %.0f MB\n", t, rss * 1024 / 1e6
  printf "time ratio (prune / cp): %.2fx (target <= 4x)\n", (cp > 0 ? t / cp : 0)
  printf "memory ratio (peak RSS / file size): %.2fx (target <= 1.5x)\n", rss * 1024 / size
}'

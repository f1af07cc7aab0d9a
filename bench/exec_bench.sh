#!/usr/bin/env bash
# exec_bench.sh [BUILD_DIR]: the executor on a BERT-base-sized model (sequence 128, 2 threads) against
# ONNX Runtime measured in the same run, batch 1 and batch 8, on each kernel path (BENCH_PATHS,
# default "native avx2 openblas": what ONNX_PRUNE_ISA unset picks from cpuid, oneDNN with AVX2
# forced, and OpenBLAS with its own CPU guess; NAME-unfused: that path with ONNX_PRUNE_FUSE=0; NAME-passive:
# that path with OMP_WAIT_POLICY=PASSIVE, libgomp's threads sleeping between parallel regions instead of
# spinning, which libgomp reads only at load; NAME-serial: that path with the executor's own loops between
# products (softmax, norms, elementwise, transposes) on the calling thread, ONNX_PRUNE_THREADS=1), REPEAT times (default 3), printing every ratio and the
# spread; then a session's peak RSS against the file, and `quantize` (16 calibration samples) against
# a plain `run` over the same samples. Targets: ours <= 1.2x ORT, RSS <= 1.3x the file, quantize
# <= 1.5x run. Every line gives the CPU time beside the wall time (ms or s; `cpu`), and the load average is
# printed before and after: on a shared machine, compare CPU times. Not a test: it asserts nothing.
# OPENBLAS_CORETYPE is left as the caller set it.
set -euo pipefail
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
work=${BENCH_DIR:-$(mktemp -d)}
model=$work/bert_base.onnx
[ -s "$model" ] || /usr/bin/python3 "$HERE/make_bert_base.py" "$model" 2>/dev/null
/usr/bin/python3 -c "
import numpy as np, sys
ids = np.random.RandomState(0).randint(0, 30522, (16, 128)).astype(np.int64)
np.savez(sys.argv[1], input_ids=ids, attention_mask=np.ones_like(ids))" "$work/seq128.npz"
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
paths=${BENCH_PATHS:-native avx2 avx2-passive openblas}
repeat=${REPEAT:-3}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}"
for p in $paths; do isa=${p%-unfused}; isa=${isa%-passive}; isa=${isa%-serial}; echo "ONNX_PRUNE_ISA=$isa: $(ONNX_PRUNE_ISA=$isa "$BUILD/exec_bench" "$model" "$work/seq128.npz" 1 | sed -n 's/^kernel //p')"; done
echo "fused epilogues: $("$BUILD/exec_bench" "$model" "$work/seq128.npz" 1 | sed -n 's/^fused epilogues \([0-9]*\).*/\1/p') products (ONNX_PRUNE_FUSE=0 turns them off; a path NAME-unfused in BENCH_PATHS runs so)"
: >"$work/ratios"
for batch in 1 8; do
  runs=$([ "$batch" = 1 ] && echo "${RUNS:-10}" || echo "${RUNS8:-4}")
  for r in $(seq "$repeat"); do
    out=$(node "$HERE/ort_bench.js" "$model" "$work/seq128.npz" "$runs" 2 "$batch")
    theirs=$(echo "$out" | awk '/^ort_ms/ {print $2}') theirs_cpu=$(echo "$out" | awk '/^ort_cpu_ms/ {printf "%.0f", $2}')
    line="batch $batch, repeat $r: ORT $theirs ms (cpu $theirs_cpu)"
    for p in $paths; do
      isa=${p%-unfused} fuse=$([ "$p" = "${p%-unfused}" ] && echo 1 || echo 0)
      wait=$([ "$isa" = "${isa%-passive}" ] || echo OMP_WAIT_POLICY=PASSIVE) isa=${isa%-passive}
      loops=$([ "$isa" = "${isa%-serial}" ] || echo ONNX_PRUNE_THREADS=1) isa=${isa%-serial}
      out=$(env $wait $loops ONNX_PRUNE_FUSE=$fuse ONNX_PRUNE_ISA=$isa "$BUILD/exec_bench" "$model" "$work/seq128.npz" "$runs" "$batch")
      ours=$(echo "$out" | awk '/^ours_ms/ {print $2}') ours_cpu=$(echo "$out" | awk '/^ours_cpu_ms/ {printf "%.0f", $2}')
      ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')
      line="$line | $p $ours ms (${ratio}x, cpu $ours_cpu)"
      echo "$batch $p $ratio" >>"$work/ratios"
    done
    echo "$line"
  done
done
echo "ratio ours / ORT (median of runs each; min / median / max over repeats; target <= 1.2x):"
for batch in 1 8; do
  for p in $paths; do
    awk -v b="$batch" -v p="$p" '$1 == b && $2 == p {print $3}' "$work/ratios" | sort -n |
      awk -v b="$batch" -v p="$p" '{v[NR] = $1} END { printf "  batch %s %-9s %.2fx / %.2fx / %.2fx\n", b, p, v[1], v[int((NR + 1) / 2)], v[NR] }'
  done
done

size=$(stat -c %s "$model")
rss=$(/usr/bin/time -f %M "$BUILD/exec_bench" "$model" "$work/seq128.npz" 1 2>&1 >/dev/null | tail -1)
awk -v r="$rss" -v s="$size" 'BEGIN { printf "session peak RSS (batch 1, one run): %.0f MB, file %.0f MB: %.2fx (target <= 1.3x)\n", r * 1024 / 1e6, s / 1e6, r * 1024 / s }'

BIN=$BUILD/onnx-prune
# wall and CPU time (user + system, s) of each command: on a shared machine the CPU time moves less
for r in $(seq "$repeat"); do
  run_t=$(/usr/bin/time -f "%e %U %S" "$BIN" run "$model" --data "$work/seq128.npz" --samples 16 --batch 8 --batch-axis 0 -o "$work/out.npz" 2>&1 | tail -1)
  for method in kl min_max; do
    q=$(/usr/bin/time -f "%e %U %S %M" "$BIN" quantize "$model" -o "$work/q.onnx" --data "$work/seq128.npz" --samples 16 --batch 8 --batch-axis 0 \
      --method "$method" -q 2>&1 | tail -1)
    echo "$q $run_t" | awk -v m="$method" -v s="$size" '{
      qw = $1; qc = $2 + $3; rss = $4; rw = $5; rc = $6 + $7
      printf "quantize --method %-7s %.1f s (cpu %.1f s) vs run %.1f s (cpu %.1f s) over the same 16 samples: %.2fx wall, %.2fx cpu (target <= 1.5x); peak RSS %.2fx the file\n", m, qw, qc, rw, rc, qw / rw, qc / rc, rss * 1024 / s }'
  done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

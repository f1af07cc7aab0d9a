#!/usr/bin/env bash
# device_bench.sh [devpack.tar.xz]: bench/exec_bench.sh's measurement on a quiet host of another OS
# image, from a pack made by bench/make_devpack.sh (our binaries run through the packed loader and
# libraries; ONNX Runtime through its Python package, bench/ort_bench.py). Prints the CPU's feature
# flags, which kernel each ONNX_PRUNE_ISA path runs, the shim's checks and a fixture's outputs on
# every path (fused and unfused) against the reference path, then BERT-base latency, sequence 128,
# 2 threads pinned to cores 0,1, batch 1 and 8, ours on each path against ORT in the same run
# (REPEAT times, default 3), and quantize (16 samples, kl) against run. OPENBLAS_CORETYPE is unset.
set -uo pipefail
PACK=${1:-devpack.tar.xz}
W=${BENCH_DIR:-$(mktemp -d)}
tar xJf "$PACK" -C "$W"
D=$W/devpack
HERE=$(cd "$(dirname "$0")" && pwd)
ours() { "$D/lib/ld-linux-x86-64.so.2" --library-path "$D/lib" "$@"; }
pin() { if command -v taskset >/dev/null; then taskset -c 0,1 "$@"; else "$@"; fi; } # cores 0 and 1
unset OPENBLAS_CORETYPE
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "flags (vector): $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|fma|amx|f16c)' | sort | tr '\n' ' ')"
python3 -c "
import numpy as np
n = int(open('$D/model/weights_bytes').read()) // 4
(np.random.default_rng(0).standard_normal(n, dtype=np.float32) * 0.02).tofile('$D/model/bert_base.weights')"
M=$D/model/bert_base.onnx X=$D/model/seq128.npz
paths=$(ours "$D/bin/test_gemm" paths)
echo "== paths this CPU runs: $paths"
for p in native avx512 avx2 openblas; do echo "ONNX_PRUNE_ISA=$p: $(ONNX_PRUNE_ISA=$p ours "$D/bin/test_gemm" kernel 2>&1)"; done
echo "== shim checks (test_gemm) per path"
for p in $paths native; do echo "$p: $(ONNX_PRUNE_ISA=$p ours "$D/bin/test_gemm" 2>&1 | tail -1)"; done
echo "== a fixture on every path, fused and unfused, against the reference path (max |diff| / max |ref|)"
for f in bert_separate_mask_opset11 gpt2_packed_split_opset13 llama_swiglu_opset14 gemm_transposed_opset12; do
  F=$HERE/../tests/fixtures/$f
  ONNX_PRUNE_ISA=ref ours "$D/bin/onnx-prune" run "$F/model.onnx" --data "$F" -o "$W/ref.npz" -q || echo "FAIL ref run $f"
  for p in $paths native; do
    for fuse in 1 0; do
      ONNX_PRUNE_FUSE=$fuse ONNX_PRUNE_ISA=$p ours "$D/bin/onnx-prune" run "$F/model.onnx" --data "$F" -o "$W/p.npz" -q &&
        echo "$f $p fuse=$fuse: $(python3 "$HERE/../tests/e2e/npz_rel.py" "$W/ref.npz" "$W/p.npz" 1e-5 2>&1)"
    done
  done
done
echo "== BERT-base, sequence 128, 2 threads (taskset -c 0,1): median ms per run, ratio to ORT in the same repeat"
echo "fused epilogues: $(ours "$D/bin/exec_bench" "$M" "$X" 1 | sed -n 's/^fused epilogues //p' | cut -c1-60)..."
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 ONNX_PRUNE_THREADS=2
bench_paths=${BENCH_PATHS:-native avx2 openblas native-unfused}
for batch in 1 8; do
  runs=$([ "$batch" = 1 ] && echo "${RUNS:-20}" || echo "${RUNS8:-6}")
  for r in $(seq "${REPEAT:-3}"); do
    theirs=$(pin python3 "$HERE/ort_bench.py" "$M" "$X" "$runs" 2 "$batch" | awk '/^ort_ms/ {print $2}')
    line="batch $batch, repeat $r: ORT $theirs ms"
    for p in $bench_paths; do
      isa=${p%-unfused} fuse=$([ "$p" = "$isa" ] && echo 1 || echo 0)
      o=$(ONNX_PRUNE_FUSE=$fuse ONNX_PRUNE_ISA=$isa pin "$D/lib/ld-linux-x86-64.so.2" --library-path "$D/lib" \
        "$D/bin/exec_bench" "$M" "$X" "$runs" "$batch" | awk '/^ours_ms/ {print $2}')
      line="$line | $p $o ms ($(awk -v a="$o" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')x)"
    done
    echo "$line"
  done
done
echo "ORT: $(python3 -c 'import onnxruntime as o; print(o.__version__)')"
echo "== quantize (16 samples, batch 8, kl and min_max) against run over the same samples, 2 threads"
ours() { pin "$D/lib/ld-linux-x86-64.so.2" --library-path "$D/lib" "$@"; }
now() { date +%s.%N; }
for r in 1 2; do
  t0=$(now); ours "$D/bin/onnx-prune" run "$M" --data "$X" --samples 16 --batch 8 --batch-axis 0 -o "$W/o.npz" -q; run_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
  for meth in kl min_max; do
    t0=$(now); ours "$D/bin/onnx-prune" quantize "$M" -o "$W/q.onnx" --data "$X" --samples 16 --batch 8 --batch-axis 0 --method $meth -q
    awk -v a="$t0" -v b="$(now)" -v r="$run_s" -v m="$meth" 'BEGIN { printf "quantize %-7s %.2f s, run %.2f s: %.2fx\n", m, b - a, r, (b - a) / r }'
  done
done

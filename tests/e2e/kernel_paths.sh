#!/usr/bin/env bash
# kernel_paths.sh ONNX_PRUNE TEST_GEMM MODEL_DIR DATA ROWS: every matrix-product path this CPU can run
# (ONNX_PRUNE_ISA; `test_gemm paths` lists them from cpuid) against the portable reference path: the
# model's `run` outputs within 1e-5 relative. With MODEL_DIR "shim": the shim's own checks
# (test_gemm) under each path instead. Whatever paths exist are run (AVX2 here, AVX-512 where CI has
# it); results are never compared by bytes. Each path also runs with its epilogues unfused
# (ONNX_PRUNE_FUSE=0), its fused outputs within 1e-5 relative of those.
set -u
BIN=$1 TEST_GEMM=$2 DIR=$3 DATA=$4 ROWS=$5
. "$(dirname "$0")/lib.sh"
M=$DIR/model.onnx
[ "$DIR" = shim ] || [ -s "$M" ] || { bad "missing model $M"; finish; }

paths=$(env -u ONNX_PRUNE_ISA "$TEST_GEMM" paths)
case " $paths " in *" ref "*) ok ;; *) bad "no reference path in '$paths'" ;; esac
if [ "$DIR" = shim ]; then
  for p in $paths native; do
    if ONNX_PRUNE_ISA=$p "$TEST_GEMM" >"$work/gemm.log" 2>&1; then ok; else bad "test_gemm on $p"; tail -5 "$work/gemm.log"; fi
    head -1 "$work/gemm.log"
  done
  finish
  exit
fi
WINDOW=(--samples "$ROWS" --batch 4)
[ -d "$DATA" ] && WINDOW=() # ONNX test data: each set is one run
if ONNX_PRUNE_ISA=ref "$BIN" run "$M" --data "$DATA" "${WINDOW[@]}" -o "$work/ref.npz"; then ok; else bad "ref run"; fi
for p in $paths native; do
  [ "$p" = ref ] && continue
  kernel=$(ONNX_PRUNE_ISA=$p "$TEST_GEMM" kernel)
  # a forced path must be the one that runs (native: whatever is widest)
  case "$p:$kernel" in
    native:oneDNN*|native:OpenBLAS*|openblas:OpenBLAS*|sse:oneDNN*sse*|avx2:oneDNN*avx2*|avx512:oneDNN*avx512*) ok ;;
    *) bad "ONNX_PRUNE_ISA=$p runs '$kernel'" ;;
  esac
  if ONNX_PRUNE_ISA=$p "$BIN" run "$M" --data "$DATA" "${WINDOW[@]}" -o "$work/$p.npz" &&
    $PY "$E2E/npz_rel.py" "$work/ref.npz" "$work/$p.npz" 1e-5 >"$work/rel.log" 2>&1; then
    ok
    echo "$p ($kernel): $(cat "$work/rel.log")"
  else
    bad "$p ($kernel): outputs differ from the reference path: $(cat "$work/rel.log" 2>/dev/null)"
  fi
done
# fused epilogues (bias, GELU, SiLU in the product's output pass) against the same path unfused
# (ONNX_PRUNE_FUSE=0: every node runs on its own), on every path
for p in $paths native; do
  if ONNX_PRUNE_FUSE=0 ONNX_PRUNE_ISA=$p "$BIN" run "$M" --data "$DATA" "${WINDOW[@]}" -o "$work/$p.unfused.npz" &&
    $PY "$E2E/npz_rel.py" "$work/$p.unfused.npz" "$work/$p.npz" 1e-5 >"$work/rel.log" 2>&1; then
    ok
    echo "$p fused vs unfused: $(cat "$work/rel.log")"
  else
    bad "$p: fused outputs differ from the unfused ones: $(cat "$work/rel.log" 2>/dev/null)"
  fi
done
# an unknown path is refused, one line, exit 2
ONNX_PRUNE_ISA=avx9000 expect "unknown ONNX_PRUNE_ISA" "ONNX_PRUNE_ISA: unknown value 'avx9000'" -- run "$M" --data "$DATA" -o "$work/out/x.npz"
finish

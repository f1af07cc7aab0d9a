#!/usr/bin/env bash
# bad_data.sh ONNX_PRUNE FIXTURE_DIR: wrong dtype, wrong rank, empty arrays, a corrupt .npz, a truncated
# .npy, missing inputs, bad options, an unsupported operator: one clear error line, exit 2, no output.
# Good variants (deflated .npz, a folder of .npy, --fill) must run and give the same outputs.
set -u
BIN=$1 FIX=$2
M=$FIX/model.onnx
. "$(dirname "$0")/lib.sh"
$PY "$E2E/make_bad_data.py" "$work/d" || exit 1
D=$work/d O=$work/out/o.npz
expect wrong-dtype "input 'input_ids': expected int64 \[?, ?\], found float32 \[4, 6\]" -- run "$M" --data "$D/wrong_dtype.npz" -o "$O"
expect wrong-rank "input 'input_ids': expected int64 \[?, ?\], found int64 \[4, 6, 1\]" -- run "$M" --data "$D/wrong_rank.npz" -o "$O"
expect empty "input 'input_ids': the array is empty" -- run "$M" --data "$D/empty.npz" -o "$O"
expect samples-differ "disagree on the number of samples" -- run "$M" --data "$D/samples_differ.npz" -o "$O"
expect missing "input 'attention_mask' is not in the data (it has: input_ids); add it or use --fill" -- run "$M" --data "$D/missing.npz" -o "$O"
expect corrupt-npz "corrupt.npz: .*CRC mismatch" -- run "$M" --data "$D/corrupt.npz" -o "$O"
expect truncated-zip "truncated_zip.npz: not a .npz" -- run "$M" --data "$D/truncated_zip.npz" -o "$O"
expect truncated-npy "attention_mask.npy: truncated .npy data" -- run "$M" --data "$D/truncated_npy" -o "$O"
expect no-data "no_such.npz: No such file" -- run "$M" --data "$D/no_such.npz" -o "$O"
expect bad-fill "--fill: 'attention_mask' is not NAME=NUMBER" -- run "$M" --data "$D/missing.npz" --fill attention_mask -o "$O"
expect bad-batch "--batch: '0' is not a whole number" -- run "$M" --data "$D/good.npz" --batch 0 -o "$O"
expect verify-missing-data "^onnx-prune verify: missing --data PATH" -- verify "$M" "$M"
expect bad-threshold "--min-cosine: '2' is not a number in \[-1, 1\]" -- verify "$M" "$M" --data "$D/good.npz" --min-cosine 2
expect quantize-no-data "^onnx-prune quantize: missing --data PATH" -- quantize "$M" -o "$O"
expect quantize-method "method: 'fast' is not one of" -- quantize "$M" -o "$O" --data "$D/good.npz" --method kl,fast
expect quantize-nothing "no node to quantise" -- quantize "$M" -o "$O" --data "$D/good.npz" --exclude '*'
expect quantize-percentile "percentile: '101' is outside" -- quantize "$M" -o "$O" --data "$D/good.npz" --percentile 101
expect quantize-bad-data "input 'input_ids': expected int64" -- quantize "$M" -o "$O" --data "$D/wrong_dtype.npz"
echo '{"prune": {"head_sparsity": 0.5}, "quantise": {}}' >"$work/typo.json"
expect compress-config "unknown section 'quantise'" -- compress "$M" -o "$O" --config "$work/typo.json" --data "$D/good.npz"
/usr/bin/python3 - "$M" "$work/unsupported.onnx" <<'PY'
import sys, onnx
m = onnx.load(sys.argv[1])
next(n for n in m.graph.node if n.op_type == "Erf").op_type = "Frobnicate"
onnx.save(m, sys.argv[2])
PY
expect unsupported-op "node '.*': unsupported operator 'Frobnicate'" -- run "$work/unsupported.onnx" --data "$D/good.npz" -o "$O"

# the good variants agree with each other, within a tolerance: another batch size takes other kernel
# paths (AVX-512 GEMM blocking differs by rows), so bytes may differ
same() {
  local name=$1
  shift
  if "$BIN" run "$M" -o "$work/$name.npz" "$@" 2>"$work/stderr" &&
    $PY "$E2E/npz_close.py" "$work/$name.npz" "$work/base.npz" >>"$work/stderr" 2>&1; then
    ok; else bad "$name: $(head -c 300 "$work/stderr")"; fi
}
"$BIN" run "$M" --data "$D/good.npz" -o "$work/base.npz" || { echo "FAIL base run"; exit 1; }
same deflated --data "$D/deflated.npz"
same npy-dir --data "$D/npy_dir"
same fill --data "$D/missing.npz" --fill attention_mask=1
same batched --data "$D/good.npz" --batch 3
finish

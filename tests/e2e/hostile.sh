#!/usr/bin/env bash
# hostile.sh ONNX_PRUNE FIXTURE_DIR: the hostile-input table (issue 10). Every row is run under a time
# limit; a refusal must exit 2 with one stderr line naming the file and the cause, leave no output
# (nor a temporary file) behind, and leave every input byte-identical (checksums before and after).
# Rows marked `handled` must succeed instead (exit 0, nothing on stderr). Run by both builds, so the
# sanitizer build turns any memory error or undefined behaviour into a failure here.
set -u
BIN=$1 FIX=$2
GOOD=$FIX/model.onnx
. "$(dirname "$0")/lib.sh"
LIMIT=60
H=$work/h
$PY "$E2E/make_hostile.py" "$GOOD" "$H" || { echo "cannot make the hostile inputs"; exit 1; }
$PY "$E2E/make_bad_data.py" "$work/d" || { echo "cannot make the data"; exit 1; }
mkdir -p "$work/in" "$work/keep"
cp "$GOOD" "$work/in/model.onnx"
echo '{"head_sparsity": 0.5}' >"$work/d/cfg.json"
# inputs named like the OUT.data an --external-data save writes beside OUT
echo '{"head_sparsity": 0.5}' >"$work/d/c.onnx.data"
echo '{"prune": {"head_sparsity": 0.5}}' >"$work/d/cc.onnx.data"
cp "$GOOD" "$work/in/m.onnx.data"
ln "$work/in/model.onnx" "$work/keep/hardlink.onnx"
ln -s "$work/in/model.onnx" "$work/keep/symlink.onnx"
D=$work/d/good.npz IN=$work/in/model.onnx O=$work/out/o.onnx

# checksums of every regular file the rows read (FIFOs and devices are not read by md5sum)
sums() { find "$H" "$work/in" "$work/d" "$work/keep" -type f -print0 | sort -z | xargs -0 md5sum; }
before=$(sums)

# check NAME RC: after a row, inputs unchanged and no temporary file beside them
check_inputs() {
  local now
  now=$(sums)
  if [ "$now" != "$before" ]; then
    bad "$1: an input changed: $(diff <(echo "$before") <(echo "$now") | head -3)"
    before=$now
    return 1
  fi
  if [ -n "$(find "$H" "$work/in" "$work/d" "$work/keep" -name '*.tmp.*')" ]; then
    bad "$1: a temporary file was left behind"
    return 1
  fi
  return 0
}

# refuse NAME PATTERN -- ARGS...: exit 2 within LIMIT, one line matching PATTERN, $work/out empty
refuse() {
  local name=$1 pattern=$2
  shift 3
  rm -rf "$work/out" && mkdir "$work/out"
  timeout -k 5 $LIMIT "$BIN" "$@" >/dev/null 2>"$work/stderr"
  local rc=$? lines
  lines=$(wc -l <"$work/stderr")
  check_inputs "$name" || return
  if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$pattern" "$work/stderr" && [ -z "$(ls -A "$work/out")" ]; then
    ok
  else
    bad "$name: rc=$rc lines=$lines stderr=$(head -c 400 "$work/stderr") out=$(ls -A "$work/out")"
  fi
}

# handled NAME -- ARGS...: exit 0 within LIMIT with nothing on stderr
handled() {
  local name=$1
  shift 2
  rm -rf "$work/out" && mkdir "$work/out"
  timeout -k 5 $LIMIT "$BIN" "$@" >/dev/null 2>"$work/stderr"
  local rc=$?
  check_inputs "$name" || return
  if [ $rc -eq 0 ] && [ ! -s "$work/stderr" ]; then ok; else bad "$name: rc=$rc stderr=$(head -c 400 "$work/stderr")"; fi
}

# --- special files where a file is expected: refused by name, never waited on ---
refuse fifo-model "fifo.onnx: not a regular file (it is a FIFO)" -- inspect "$H/fifo.onnx"
refuse folder-model "folder.onnx: not a regular file (it is a folder)" -- prune "$H/folder.onnx" -o "$O" --head-sparsity 0.5
refuse socket-model "socket.onnx: not a regular file (it is a socket)" -- inspect "$H/socket.onnx"
refuse device-model "null: not a regular file (it is a character device)" -- inspect /dev/null
refuse fifo-behind-symlink "fifo_link.onnx: not a regular file (it is a FIFO)" -- inspect "$H/fifo_link.onnx"
refuse folder-config "folder.onnx: not a regular file (it is a folder)" -- prune "$GOOD" -o "$O" --config "$H/folder.onnx"
refuse ext-fifo "ext_fifo.onnx: tensor .* external data 'weights_fifo.bin': not a regular file (it is a FIFO)" -- inspect "$H/ext_fifo.onnx"
refuse ext-devzero "ext_devzero.onnx: tensor .* 'weights_zero.bin' escapes the model directory" -- inspect "$H/ext_devzero.onnx"
refuse config-fifo "config_fifo.json: not a regular file (it is a FIFO)" -- prune "$GOOD" -o "$O" --config "$H/config_fifo.json"
refuse data-fifo "data_fifo.npz: not a regular file (it is a FIFO)" -- run "$GOOD" --data "$H/data_fifo.npz" -o "$work/out/o.npz"
refuse npy-fifo "npy_fifo/input_ids.npy: not a regular file (it is a FIFO)" -- run "$GOOD" --data "$H/npy_fifo" -o "$work/out/o.npz"
refuse npy-devzero "npy_zero/input_ids.npy: not a regular file (it is a character device)" -- run "$GOOD" --data "$H/npy_zero" -o "$work/out/o.npz"
refuse pb-corrupt "pb_bad/input_0.pb: not a valid ONNX TensorProto" -- run "$GOOD" --data "$H/pb_bad" -o "$work/out/o.npz"
refuse pb-fifo "pb_fifo/input_0.pb: not a regular file (it is a FIFO)" -- run "$GOOD" --data "$H/pb_fifo" -o "$work/out/o.npz"

# --- crashes ---
refuse deep-if "deep_if.onnx: messages nest deeper than 256 levels" -- inspect "$H/deep_if.onnx"
refuse deep-if-prune "deep_if.onnx: messages nest deeper than 256 levels" -- prune "$H/deep_if.onnx" -o "$O" --head-sparsity 0.5
refuse slice-axis "slice_axis.onnx: node 'slice' (Slice): axis 5 is outside rank 2" -- run "$H/slice_axis.onnx" --data "$H/x.npz" -o "$work/out/o.npz"
refuse string-tensor "string.onnx: tensor 's': string tensors are not supported" -- run "$H/string.onnx" --data "$H/x.npz" -o "$work/out/o.npz"
# a flag repeated far beyond any fixed option array (48 once overflowed main.c's)
many=(); for _ in $(seq 100); do many+=(--head-sparsity 0.5); done
handled many-flags -- prune "$GOOD" -o "$O" "${many[@]}" -q
handled no-attention -- inspect "$H/no_attention.onnx"
handled no-attention-json -- inspect "$H/no_attention.onnx" --json
handled long-output-name -- verify "$H/long_name.onnx" "$H/long_name.onnx" --data "$H/x.npz"

# --- sizes that wrap or exhaust memory: refused before any allocation ---
refuse wrap-inline "wrap_inline.onnx: tensor 'wrap': dims need more bytes than can be addressed" -- inspect "$H/wrap_inline.onnx"
refuse wrap-external "wrap_external.onnx: tensor .*: dims need more bytes than can be addressed" -- inspect "$H/wrap_external.onnx"
refuse constant-of-shape "constant_of_shape.onnx: node 'cos' (ConstantOfShape): 4 TiB for output 'big' exceeds the memory budget of 1 GiB (--max-memory)" -- run "$H/constant_of_shape.onnx" --data "$H/x.npz" -o "$work/out/o.npz" --max-memory 1G
# a running total: every value fits 14 MiB, the four live negations of the 4 MiB constant do not
refuse live-set "live_set.onnx: node 'neg3' (Neg): 4 MiB for output 'y3' exceeds what the memory budget of 14 MiB has left (--max-memory; 12.* MiB held by other values)" -- run "$H/live_set.onnx" --data "$H/x.npz" -o "$work/out/o.npz" --max-memory 14M
handled live-set-fits -- run "$H/live_set.onnx" --data "$H/x.npz" -o "$work/out/o.npz" --max-memory 24M -q
refuse constant-of-shape-default "constant_of_shape.onnx: node 'cos' (ConstantOfShape): 4 TiB for output 'big' exceeds the memory budget of" -- run "$H/constant_of_shape.onnx" --data "$H/x.npz" -o "$work/out/o.npz"
refuse expand "expand.onnx: node 'expand' (Expand): 4 TiB for output 'y' exceeds the memory budget of 512 MiB" -- run "$H/expand.onnx" --data "$H/x11.npz" -o "$work/out/o.npz" --max-memory 512M
refuse npz-bomb "bomb.npz: x14.npy: 64 MiB exceeds what the memory budget of 1 GiB has left" -- run "$H/no_attention.onnx" --data "$H/bomb.npz" -o "$work/out/o.npz" --max-memory 1G
# a running total across readers: the .npy file read whole (10 MiB) and its array (10 MiB) do not fit 15 MiB together
refuse npy-and-its-file "x_big.npy: 10 MiB exceeds what the memory budget of 15 MiB has left (--max-memory; 10.* MiB held by other values)" -- run "$H/no_attention.onnx" --data "$H/x_big.npy" -o "$work/out/o.npz" --max-memory 15M
# weights packed for the kernels (float16 ones are widened into the pack on every kernel path) are in the
# running total: the third pack does not fit beside the first two and the data
HALF=$(dirname "$FIX")/llama_half_opset14
refuse weight-packs "llama_half_opset14/model.onnx: node '/layers.0/u/MatMul' (MatMul): its weight packed: 8 KiB exceeds what the memory budget of 32 KiB has left (--max-memory;" -- run "$HALF/model.onnx" --data "$HALF" -o "$work/out/o.npz" --max-memory 32K
refuse npz-liar "liar.npz: x.npy: decompressing it (4.0 GiB) brings the arrays over the memory budget" -- run "$H/no_attention.onnx" --data "$H/liar.npz" -o "$work/out/o.npz" --max-memory 1G
refuse npy-pair "npy_pair/[ab].npy: 4[.0]* MiB exceeds what the memory budget of 6 MiB has left (--max-memory; .* held by other values)" -- run "$H/no_attention.onnx" --data "$H/npy_pair" -o "$work/out/o.npz" --max-memory 6M
refuse quantize-hist-stats "model.onnx: calibration statistics of 9 tensors: 1.3 MiB exceeds the memory budget of 1 MiB (--max-memory)" -- quantize "$GOOD" --data "$D" --method hist -o "$O" --max-memory 1M
refuse quantize-hist-together "model.onnx: node .* exceeds what the memory budget of 1.3 MiB has left (--max-memory; 1.3 MiB held by other values)" -- quantize "$GOOD" --data "$D" --method hist -o "$O" --max-memory 1300K
refuse prune-recon-moments "model.onnx: reconstruction moments of '.*': 12.5 KiB exceeds the memory budget of 8 KiB (--max-memory)" -- prune "$GOOD" --data "$D" --head-sparsity 0.5 --ffn-sparsity 0.5 -o "$O" --max-memory 8K
refuse prune-recon-together "model.onnx: node '.*' (.*): .* exceeds what the memory budget of 64 KiB has left (--max-memory; .* held by other values)" -- prune "$GOOD" --data "$D" --head-sparsity 0.5 --ffn-sparsity 0.5 -o "$O" --max-memory 64K
refuse max-memory-text "--max-memory: 'lots' is not a size" -- inspect "$GOOD" --max-memory lots

# --- graphs that are not DAGs of single definitions ---
refuse cycle "cycle.onnx: node 'n1' (Relu) is on a cycle" -- inspect "$H/cycle.onnx"
refuse cycle-prune "cycle_bert.onnx: node .* is on a cycle" -- prune "$H/cycle_bert.onnx" -o "$O" --head-sparsity 0.5
refuse double-write "double_write.onnx: value 'y' is written by two nodes" -- inspect "$H/double_write.onnx"
refuse writes-input "writes_input.onnx: node 'n1' (Relu): output 'x' has the name of a graph input" -- inspect "$H/writes_input.onnx"
refuse dup-init "dup_init.onnx: initializer 'c' is defined twice" -- inspect "$H/dup_init.onnx"

# --- types the tool does not compute on: named as such, not as an unexpected pattern ---
refuse float64-model "float64.onnx: no attention or FFN block found; .*weight is not a float32/float16/bfloat16 matrix" -- prune "$H/float64.onnx" -o "$O" --head-sparsity 0.5

# --- JSON configs ---
refuse json-layer-wrap "layer_wrap.json: layers\[0\]: layer: 4294967296 is not a whole number in \[0, " -- prune "$GOOD" -o "$O" --config "$H/layer_wrap.json"
refuse json-layer-frac "layer_frac.json: layers\[0\]: layer: 0.5 is not a whole number" -- prune "$GOOD" -o "$O" --config "$H/layer_frac.json"
refuse json-layer-huge "layer_huge.json: layers\[0\]: layer: 1e+300 is not a whole number" -- prune "$GOOD" -o "$O" --config "$H/layer_huge.json"
refuse json-heads-wrap "heads_wrap.json: .*heads.*4294967296" -- prune "$GOOD" -o "$O" --config "$H/heads_wrap.json"
refuse json-num-heads-frac "num_heads_frac.json: num_heads: '1.5' is not a whole number" -- prune "$GOOD" -o "$O" --config "$H/num_heads_frac.json"
refuse json-dup-key "dup_key.json: key 'head_sparsity' appears twice" -- prune "$GOOD" -o "$O" --config "$H/dup_key.json"
refuse json-dup-layer "dup_layer.json: layers: layer 0 appears twice" -- prune "$GOOD" -o "$O" --config "$H/dup_layer.json"
refuse json-dup-layer-key "dup_layer_key.json: .*key '0' appears twice" -- prune "$GOOD" -o "$O" --config "$H/dup_layer_key.json"
refuse json-deep "deep.json: JSON nested deeper than" -- prune "$GOOD" -o "$O" --config "$H/deep.json"
refuse json-deep-object "deep_object.json: JSON nested deeper than" -- prune "$GOOD" -o "$O" --config "$H/deep_object.json"
refuse json-deep-compress "deep.json: JSON nested deeper than" -- compress "$GOOD" -o "$O" --config "$H/deep.json" --data "$D"

# --- no input is ever overwritten, through any path to it ---
refuse report-is-model "refusing to overwrite the input model '.*model.onnx' (--report names the same file)" -- prune "$IN" -o "$O" --report "$IN" --head-sparsity 0.5
refuse report-is-output "o.onnx: --report and -o name the same file" -- prune "$IN" -o "$O" --report "$O" --head-sparsity 0.5
refuse run-o-model "refusing to overwrite the input model" -- run "$IN" --data "$D" -o "$IN"
refuse run-o-data "good.npz: refusing to overwrite the input --data '.*good.npz' (-o names the same file)" -- run "$IN" --data "$D" -o "$D"
refuse run-o-data-folder "refusing to overwrite the input --data" -- run "$IN" --data "$work/d/truncated_npy" -o "$work/d/truncated_npy/input_ids.npy"
refuse quantize-o-data "good.npz: refusing to overwrite the input --data" -- quantize "$IN" -o "$D" --data "$D"
refuse quantize-report-data "good.npz: refusing to overwrite the input --data" -- quantize "$IN" -o "$O" --data "$D" --report "$D"
refuse config-is-output "refusing to overwrite the input --config" -- prune "$IN" -o "$work/d/cfg.json" --config "$work/d/cfg.json"
refuse ext-data-is-input "o.onnx.data: refusing to overwrite the input model's external data" -- prune "$H/extdir/model.onnx" -o "$H/extdir/o.onnx" --external-data --head-sparsity 0.5
refuse ext-data-is-model "m.onnx.data: refusing to overwrite the input model" -- prune "$work/in/m.onnx.data" -o "$work/in/m.onnx" --external-data --head-sparsity 0.5
refuse ext-data-is-config "c.onnx.data: refusing to overwrite the input --config .*(-o's external data names the same file)" -- prune "$IN" -o "$work/d/c.onnx" --config "$work/d/c.onnx.data" --external-data
refuse ext-data-is-compress-config "cc.onnx.data: refusing to overwrite the input --config" -- compress "$IN" -o "$work/d/cc.onnx" --config "$work/d/cc.onnx.data" --data "$D" --external-data
refuse ext-data-is-report "o.onnx.data: .*name the same file" -- prune "$IN" -o "$O" --report "$O.data" --external-data --head-sparsity 0.5
refuse hard-link "hardlink.onnx: refusing to overwrite the input model" -- prune "$IN" -o "$work/keep/hardlink.onnx" --head-sparsity 0.5
refuse symlink "symlink.onnx: refusing to overwrite the input model" -- prune "$IN" -o "$work/keep/symlink.onnx" --head-sparsity 0.5
refuse output-fifo "fifo.onnx: -o is a FIFO, not a file that can be replaced" -- prune "$IN" -o "$H/fifo.onnx" --head-sparsity 0.5
refuse output-folder "folder.onnx: -o is a folder, not a file that can be replaced" -- prune "$IN" -o "$H/folder.onnx" --head-sparsity 0.5
refuse output-no-folder "no_such_dir/o.onnx: -o: folder '.*no_such_dir': No such file" -- prune "$IN" -o "$work/out/no_such_dir/o.onnx" --head-sparsity 0.5

# a failed prune never deletes or truncates a file that was there before
echo precious >"$work/keep/o.onnx"
echo precious >"$work/keep/r.json"
before=$(sums)
refuse report-no-folder "no_such_dir/r.json: --report: folder" -- prune "$IN" -o "$work/keep/o.onnx" --report "$work/keep/no_such_dir/r.json" --head-sparsity 0.5
refuse failed-prune-keeps-output "head-sparsity: '1.5' is outside" -- prune "$IN" -o "$work/keep/o.onnx" --report "$work/keep/r.json" --head-sparsity 1.5
refuse failed-quantize-keeps-output "method: 'fast' is not one of" -- quantize "$IN" -o "$work/keep/o.onnx" --data "$D" --report "$work/keep/r.json" --method fast

# a successful prune replaces both outputs whole
if timeout -k 5 $LIMIT "$BIN" prune "$IN" -o "$work/keep/o.onnx" --report "$work/keep/r.json" --head-sparsity 0.5 -q 2>"$work/stderr" &&
  ! grep -q precious "$work/keep/o.onnx" "$work/keep/r.json" && [ ! -s "$work/stderr" ]; then ok; else
  bad "replace-outputs: $(head -c 300 "$work/stderr")"; fi

finish

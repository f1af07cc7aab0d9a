#!/usr/bin/env bash
# cli_test.sh ONNX_PRUNE VERSION FIXTURE_DIR: the command line as a user meets it, one table row per
# behaviour: `t NAME RC WHERE PATTERN -- ARGS` runs `onnx-prune ARGS` and expects exit code RC and
# PATTERN (grep -E) in WHERE (out: stdout, err: stderr, none: stdout and stderr both empty). A refusal
# (RC 2) must also be exactly one stderr line and leave $work/out empty.
set -u
BIN=$1 VERSION=$2 FIX=$3
. "$(dirname "$0")/../e2e/lib.sh"
M=$FIX/model.onnx
O=$work/out/o.onnx
mkdir -p "$work/out" "$work/keep"
# 12 samples of the fixture's inputs (int64 [batch, 6], ids < 48)
$PY - "$work/d12.npz" <<'PY' || { echo "cannot make data"; exit 1; }
import sys, numpy as np
r = np.random.default_rng(0)
np.savez(sys.argv[1], input_ids=r.integers(0, 48, (12, 6)).astype(np.int64), attention_mask=np.ones((12, 6), np.int64))
PY
D=$work/d12.npz

t() {
  local name=$1 want=$2 where=$3 pattern=$4
  shift 5
  rm -rf "$work/out" && mkdir "$work/out"
  "$BIN" "$@" >"$work/stdout" 2>"$work/stderr"
  local rc=$? ok=1
  [ $rc -eq "$want" ] || ok=0
  case $where in
    out) grep -Eq -- "$pattern" "$work/stdout" || ok=0 ;;
    err) grep -Eq -- "$pattern" "$work/stderr" || ok=0 ;;
    none) [ ! -s "$work/stdout" ] && [ ! -s "$work/stderr" ] || ok=0 ;;
  esac
  if [ "$want" -eq 2 ]; then
    [ "$(wc -l <"$work/stderr")" -eq 1 ] && [ -z "$(ls -A "$work/out")" ] || ok=0
  fi
  if [ $ok -eq 1 ]; then ok; else
    bad "$name: rc=$rc (want $want) stdout=$(head -c 300 "$work/stdout") stderr=$(head -c 300 "$work/stderr")"
  fi
}

# ---- version and help
t version-long 0 out "^onnx-prune $VERSION\$" -- --version
t version-short 0 out "^onnx-prune $VERSION\$" -- -V
t version-command 0 out "^onnx-prune $VERSION\$" -- version
t help-top 0 out "commands:" -- --help
t help-top-short 0 out "quantize" -- -h
t help-command 0 out "^usage: onnx-prune verify" -- help verify
t no-command 2 err "^onnx-prune: missing command \\(see onnx-prune --help\\)" --
for cmd in inspect prune run verify quantize compress; do
  t "help-$cmd" 0 out "^usage: onnx-prune $cmd" -- $cmd --help
  t "help-$cmd-short" 0 out "^usage: onnx-prune $cmd" -- $cmd -h
  t "help-$cmd-lists-quiet" 0 out "-q, --quiet" -- $cmd --help
done
t help-defaults-prune 0 out "--importance M .*\(default: l2; reconstruction with --data\)" -- prune --help
t help-defaults-quantize 0 out "--method .*\(default: kl\)" -- quantize --help
t help-defaults-batch 0 out "--batch N .*\(default: 8\)" -- quantize --help

# ---- suggestions and errors naming the command and the flag as typed
t typo-command 2 err "unknown command 'prnue' \(did you mean 'prune'\?\)" -- prnue
t typo-option 2 err "^onnx-prune prune: unknown option '--head-sparsty' \(did you mean '--head-sparsity'\?\)" -- prune "$M" -o "$O" --head-sparsty 0.5
t typo-option-eq 2 err "unknown option '--head-sparsty' \(did you mean" -- prune "$M" -o "$O" --head-sparsty=0.5
t unknown-option 2 err "^onnx-prune run: unknown option '--frobnicate' \(see onnx-prune run --help\)" -- run "$M" --frobnicate
t needs-value 2 err "^onnx-prune run: option '-o' needs a value" -- run "$M" --data "$D" -o
t needs-value-long 2 err "^onnx-prune prune: option '--report' needs a value" -- prune "$M" -o "$O" --head-sparsity 0.5 --report
t switch-no-value 2 err "^onnx-prune inspect: option '--json' takes no value" -- inspect "$M" --json=yes
t extra-argument 2 err "^onnx-prune inspect: unexpected argument 'extra'" -- inspect "$M" extra
t missing-model 2 err "^onnx-prune prune: missing MODEL" -- prune
t flag-value-named 2 err "^onnx-prune quantize: --method: 'klx' is not one of" -- quantize "$M" -o "$O" --data "$D" --method klx
t flag-value-eq 2 err "^onnx-prune prune: --head-sparsity: '1.5' is outside" -- prune "$M" -o "$O" --head-sparsity=1.5
t flag-count 2 err "^onnx-prune run: --batch: 'x' is not a whole number >= 1" -- run "$M" --data "$D" -o "$work/out/o.npz" --batch x
t compress-prefix 2 err "^onnx-prune compress: missing --config" -- compress "$M" -o "$O" --data "$D"
t quantize-prefix 2 err "^onnx-prune quantize: missing --data" -- quantize "$M" -o "$O"
t quiet-verbose 2 err "^onnx-prune inspect: -q and --verbose contradict" -- inspect "$M" -q --verbose

# ---- options that do not apply are refused, whatever the order
t nothing-to-prune 2 err "^onnx-prune prune: nothing to prune" -- prune "$M" -o "$O"
t num-heads-too-many 2 err "^onnx-prune prune: --num-heads: 9 is more than the 4 heads of layer 0" -- prune "$M" -o "$O" --num-heads 9
t ffn-size-too-many 2 err "^onnx-prune prune: --ffn-size: 65 is more than the 64 FFN neurons" -- prune "$M" -o "$O" --ffn-size 65
t seed-without-random 2 err "^onnx-prune prune: --seed: applies only to importance random" -- prune "$M" -o "$O" --num-heads 2 --seed 3
t seed-with-l1 2 err "--seed: applies only to --importance random \(--importance is 'l1'\)" -- prune "$M" -o "$O" --seed 3 --num-heads 2 --importance l1
t data-with-l2 2 err "^onnx-prune prune: --data applies only to --importance activation or reconstruction, to compensation or to an accuracy floor" -- prune "$M" -o "$O" --num-heads 2 --importance l2 --no-compensate --data "$D"
t no-compensate-without-data 2 err "^onnx-prune prune: --no-compensate applies only with --data" -- prune "$M" -o "$O" --num-heads 2 --no-compensate
t samples-without-data 2 err "^onnx-prune prune: --samples applies only with --data" -- prune "$M" -o "$O" --num-heads 2 --samples 4
t percentile-with-kl 2 err "^onnx-prune quantize: --percentile: applies only to method hist \\(method is kl\\)" -- quantize "$M" -o "$O" --data "$D" --percentile 99.9
t percentile-with-mse 2 err "--percentile: applies only to --method hist \\(--method is mse\\)" -- quantize "$M" -o "$O" --data "$D" --method mse --percentile 99.9
t eval-samples-no-search 2 err "--eval-samples: only a search" -- quantize "$M" -o "$O" --data "$D" --eval-samples 4
t profile-then-type 2 err "^onnx-prune quantize: --profile 'tensorrt' \(int8 symmetric activations\) conflicts with --activation-type 'uint8'" -- quantize "$M" -o "$O" --data "$D" --profile tensorrt --activation-type uint8
t type-then-profile 2 err "--profile 'tensorrt' .* conflicts with --activation-type 'uint8'" -- quantize "$M" -o "$O" --data "$D" --activation-type uint8 --profile tensorrt
t ort-symmetric 2 err "--profile 'ort' .* conflicts with --symmetric" -- quantize "$M" -o "$O" --data "$D" --symmetric --profile ort
t dump-needs-file 2 err "^onnx-prune verify: --dump needs --dump-to" -- verify "$M" "$M" --data "$D" --dump x
t dump-unknown-value 2 err "no node of .* computes a value named 'nope'" -- verify "$M" "$M" --data "$D" --dump nope --dump-to "$work/out/d.npz"
rm -rf "$work/out" && mkdir "$work/out"
ONNX_PRUNE_THREADS=abc "$BIN" inspect "$M" >/dev/null 2>"$work/stderr"
if [ $? -eq 2 ] && grep -q "^onnx-prune inspect: ONNX_PRUNE_THREADS: 'abc' is not a whole number >= 1" "$work/stderr"; then ok; else bad "threads-env: $(cat "$work/stderr")"; fi

# ---- out of memory is an error naming the node, not an abort (a 12000-token sequence needs 2.3 GB
# attention scores; the address space is capped: ulimit in a plain build, ASan's allocator limit under ASan)
$PY - "$work/long.npz" <<'PY' || bad "cannot make long data"
import sys, numpy as np
np.savez(sys.argv[1], input_ids=np.zeros((1, 12000), np.int64), attention_mask=np.ones((1, 12000), np.int64))
PY
rm -rf "$work/out" && mkdir "$work/out"
asan=0
ldd "$BIN" | grep -q libasan && asan=1
([ $asan -eq 1 ] || ulimit -v 1500000; ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1:max_allocation_size_mb=1000 \
  "$BIN" run "$M" --data "$work/long.npz" -o "$work/out/long.npz") >/dev/null 2>"$work/stderr"
rc=$?
if [ $rc -eq 2 ] && grep -q "node '/layers.0/MatMul' (MatMul): out of memory for a tensor of 2304000000 bytes" "$work/stderr" &&
  [ -z "$(ls -A "$work/out")" ]; then ok; else bad "out-of-memory: rc=$rc $(head -c 300 "$work/stderr")"; fi
# the values kept between calibration passes go to a temporary file in TMPDIR; where it cannot be made
# (a missing folder) or written (a full disk; here a file size limit), the prune still completes, every
# later pass running from the model's inputs, says so once on stderr, and writes what the normal run does
$PY - "$work/d2k.npz" <<'PY' || bad "cannot make 2048 samples"
import sys, numpy as np
r = np.random.default_rng(1)
np.savez(sys.argv[1], input_ids=r.integers(0, 48, (2048, 6)).astype(np.int64), attention_mask=np.ones((2048, 6), np.int64))
PY
passes() { "$BIN" prune "$M" -o "$1" --head-sparsity 0.5 --ffn-sparsity 0.5 --data "$work/d2k.npz" --samples 2048 --report "$1.json"; }
passes "$work/keep/p_ok.onnx" >/dev/null 2>&1 || bad "passes: the normal run failed"
TMPDIR=$work/no_such_dir passes "$work/keep/p_dir.onnx" >/dev/null 2>"$work/stderr"
rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c "calibration passes" "$work/stderr")" -eq 1 ] &&
  grep -q "model.onnx: calibration passes: creating a temporary file in $work/no_such_dir failed (No such file or directory): every later pass runs from the model's inputs" "$work/stderr" &&
  cmp -s "$work/keep/p_ok.onnx.json" "$work/keep/p_dir.onnx.json"
then ok; else bad "tmpdir missing: rc=$rc $(grep "calibration passes" "$work/stderr" | head -c 300)"; fi
# 256 KiB per file: the model (99 KB) is written, the values between passes (1.5 MB) are not
(trap '' XFSZ; ulimit -f 256; passes "$work/keep/p_full.onnx") >/dev/null 2>"$work/stderr"
rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c "calibration passes" "$work/stderr")" -eq 1 ] &&
  grep -q "calibration passes: writing a temporary file in .* failed (File too large): every later pass" "$work/stderr" &&
  cmp -s "$work/keep/p_ok.onnx.json" "$work/keep/p_full.onnx.json"
then ok; else bad "tmpdir full: rc=$rc $(grep "calibration passes" "$work/stderr" | head -c 300)"; fi

# ---- what works
t eq-form 0 out "parameters:" -- prune "$M" --output="$work/keep/eq.onnx" --head-sparsity=0.5
t quiet-prune 0 none "" -- prune "$M" -o "$work/keep/q.onnx" --head-sparsity 0.5 -q
t verbose-notes 0 err "^onnx-prune prune: loaded .*\([0-9.]+ s\)" -- prune "$M" -o "$work/keep/v.onnx" --head-sparsity 0.5 -v
t seed-with-random 0 out "random" -- prune "$M" -o "$work/keep/r.onnx" --num-heads 2 --seed 3 --importance random
# with --data the seed orders the calibration rows, whatever importance --data defaults to
t seed-with-data 0 out "reconstruction" -- prune "$M" -o "$work/keep/sd.onnx" --num-heads 2 --data "$D" --sample-order random --seed 3
t dry-run 0 out "parameters:" -- prune "$M" --head-sparsity 0.5 --dry-run
excl=()
for i in $(seq 60); do excl+=(--exclude "nothing_$i"); done
t many-repeats 0 none "" -- quantize "$M" -o "$work/keep/many.onnx" --data "$D" -q "${excl[@]}"
t profile-agrees 0 none "" -- quantize "$M" -o "$work/keep/trt.onnx" --data "$D" -q --activation-type int8 --profile tensorrt

# ---- inspect: opsets, producer, inputs and outputs with symbolic axes, op counts, parameters by type
t inspect-opsets 0 out "^opsets: ai.onnx 11" -- inspect "$M"
t inspect-producer 0 out "^producer: pytorch" -- inspect "$M"
t inspect-inputs 0 out "^  input_ids +int64 +\[batch, seq\]" -- inspect "$M"
t inspect-outputs 0 out "^  out +float32 +\[batch, 3\]" -- inspect "$M"
t inspect-ops 0 out "^  ai.onnx: .*MatMul 16" -- inspect "$M"
t inspect-params 0 out "^initializer elements by type: float32 18787" -- inspect "$M"
t inspect-layers 0 out "2 layers, 18,787 parameters" -- inspect "$M"
"$BIN" inspect "$M" --json >"$work/i.json"
if $PY - "$work/i.json" <<'PY'; then ok; else bad "inspect-json"; fi
import json, sys
d = json.load(open(sys.argv[1]))
g = d["graph"]
assert g["inputs"][0] == {"name": "input_ids", "type": "int64", "shape": ["batch", "seq"]}, g["inputs"]
assert g["outputs"][0]["shape"] == ["batch", 3]
assert g["opset_imports"] == [{"domain": "ai.onnx", "version": 11}]
assert g["op_counts"]["ai.onnx"]["MatMul"] == 16 and g["parameters_by_type"]["float32"] == 18787
assert len(d["layers"]) == 2
PY

# ---- verify: tolerances (pass/fail per output, exit 1) and dumps of intermediate values
t verify-self-tolerance 0 out "^out: pass \(0 of 36 elements" -- verify "$M" "$M" --data "$D" --atol 0 --rtol 0
t verify-tolerance-fails 1 out "^out: FAIL" -- verify "$M" "$work/keep/q.onnx" --data "$D" --atol 1e-6
t verify-tolerance-loose 0 out "^out: pass" -- verify "$M" "$work/keep/q.onnx" --data "$D" --atol 1e3
t verify-dump 0 out "max_abs_diff" -- verify "$M" "$work/keep/q.onnx" --data "$D" --batch 4 --dump /layers.0/q/MatMul_output_0,/layers.0/o/MatMul_output_0 --dump-to "$work/keep/dump.npz"
if $PY - "$work/keep/dump.npz" <<'PY'; then ok; else bad "verify-dump-contents"; fi
import sys, numpy as np
z = np.load(sys.argv[1])
names = sorted(z.files)
assert names == sorted(["reference//layers.0/q/MatMul_output_0", "candidate//layers.0/q/MatMul_output_0",
                        "reference//layers.0/o/MatMul_output_0", "candidate//layers.0/o/MatMul_output_0"]), names
r, c = z["reference//layers.0/q/MatMul_output_0"], z["candidate//layers.0/q/MatMul_output_0"]
assert r.shape == (4, 6, 32) and c.shape == (4, 6, 16), (r.shape, c.shape)  # half the heads pruned away
PY

# ---- quantize: abs_max is symmetric, reduce-range, include, held-out rows
t q-absmax 0 none "" -- quantize "$M" -o "$work/keep/absmax.onnx" --data "$D" --method abs_max --report "$work/keep/absmax.json" -q
t q-minmax 0 none "" -- quantize "$M" -o "$work/keep/minmax.onnx" --data "$D" --method min_max --report "$work/keep/minmax.json" -q
if ! cmp -s "$work/keep/absmax.onnx" "$work/keep/minmax.onnx" && $PY - "$work/keep/absmax.json" "$work/keep/minmax.json" <<'PY'; then ok; else bad "abs_max symmetric"; fi
import json, sys
a = [t for t in json.load(open(sys.argv[1]))["tensors"] if t["kind"] == "activation"]
m = [t for t in json.load(open(sys.argv[2]))["tensors"] if t["kind"] == "activation"]
assert a and all(t["zero_point"] == 128 for t in a), [t["zero_point"] for t in a]
assert all(abs(t["quantization_range"][0] + t["quantization_range"][1]) < 1e-6 for t in a)
assert any(t["zero_point"] != 128 for t in m)
PY
t q-reduce-range 0 out "int8 reduced to 7 bits" -- quantize "$M" -o "$work/keep/rr.onnx" --data "$D" --reduce-range
if $PY - "$work/keep/rr.onnx" "$work/keep/absmax.onnx" <<'PY'; then ok; else bad "reduce-range weights"; fi
import sys, onnx
from onnx import numpy_helper
def peak(path):
    g = onnx.load(path).graph
    w = [numpy_helper.to_array(t) for t in g.initializer if t.data_type == onnx.TensorProto.INT8 and "_quantized" in t.name]
    assert w
    return max(int(abs(x.astype(int)).max()) for x in w)
assert peak(sys.argv[1]) == 63, peak(sys.argv[1])
assert peak(sys.argv[2]) == 127
PY
t q-include 0 none "" -- quantize "$M" -o "$work/keep/inc.onnx" --data "$D" --include '/layers.0/q/*' --report "$work/keep/inc.json" -q
if $PY - "$work/keep/inc.json" <<'PY'; then ok; else bad "include: only the listed nodes"; fi
import json, sys
w = [t["name"] for t in json.load(open(sys.argv[1]))["tensors"] if t["kind"] == "weight"]
assert len(w) == 1, w
PY
t q-include-none 2 err "no node to quantise \\(op_types, --include and exclude leave none\\)" -- quantize "$M" -o "$O" --data "$D" --include 'no_such_node'
t q-small-search 0 out "the data holds 12 samples, too few .*calibration used samples 0\.\.8 only.*scored .* on samples 9\.\.11" -- quantize "$M" -o "$work/keep/s.onnx" --data "$D" --method kl,mse
t q-search-held-out 0 out "scored against the fp32 model on samples 8\.\.11, held out of calibration" -- quantize "$M" -o "$work/keep/s2.onnx" --data "$D" --method kl,mse --samples 8

# ---- compress --data reaches the pruning step (activation importance)
echo '{"prune": {"importance": "activation", "head_sparsity": 0.5}, "quantize": {"method": "mse"}}' >"$work/c.json"
t compress-activation 0 out "importance: activation" -- compress "$M" -o "$work/keep/c.onnx" --config "$work/c.json" --data "$D"

# ---- progress: on a terminal only, never with -q
if command -v script >/dev/null; then
  script -qec "'$BIN' quantize '$M' -o '$work/keep/tty.onnx' --data '$D' --method kl,mse" /dev/null >"$work/tty.log" 2>&1
  if grep -q "calibrate" "$work/tty.log" && grep -q "candidate 1/2: method kl" "$work/tty.log"; then ok; else bad "progress on a terminal: $(head -c 300 "$work/tty.log")"; fi
  script -qec "'$BIN' quantize '$M' -o '$work/keep/tty2.onnx' --data '$D' --method kl,mse -q" /dev/null >"$work/tty2.log" 2>&1
  if [ ! -s "$work/tty2.log" ]; then ok; else bad "-q on a terminal: $(head -c 300 "$work/tty2.log")"; fi
else
  bad "script(1) is missing (bsdutils)"
fi
t no-progress-redirected 0 none "" -- quantize "$M" -o "$work/keep/p.onnx" --data "$D" --method kl,mse -q

finish

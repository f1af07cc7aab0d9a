#!/usr/bin/env bash
# seq2seq_e2e.sh ONNX_PRUNE MODEL_DIR ENCODER_LAYERS DECODER_LAYERS [--pre-norm]: cross-attention and
# encoder-decoder layers (issue 9), judged by ONNX Runtime on the fixture's test data. inspect shows
# each decoder layer as one layer (self-attention, cross-attention, FFN) numbered per stack; prune
# removes self- and cross-attention heads and FFN neurons exactly (equal to the original with the
# removed units zeroed), --compact finds them again, layers are kept and dropped by stack address
# (encoder.N / decoder.N; a plain number is refused for two stacks), and activation importance runs.
set -u
BIN=$1 DIR=$2 ENC=$3 DEC=$4 PRE=${5:-}
. "$(dirname "$0")/lib.sh"
M=$DIR/model.onnx
O=$work/out/model.onnx
[ -f "$M" ] && [ -d "$DIR/test_data_set_0" ] || { echo "fixture $DIR missing"; exit 1; }

# the layer structure inspect --json reports
"$BIN" inspect "$M" --json >"$work/inspect.json" || { echo "inspect failed"; exit 1; }
if $PY - "$work/inspect.json" "$ENC" "$DEC" <<'PY'; then ok; else bad "inspect: layer structure"; fi
import json, sys
j = json.load(open(sys.argv[1]))
enc, dec = int(sys.argv[2]), int(sys.argv[3])
assert j["unmatched"] == [], j["unmatched"]
L = j["layers"]
assert len(L) == enc + dec, f"{len(L)} layers, want {enc} + {dec}"
assert j["stacks"] == (enc > 0 and dec > 0)
for i, l in enumerate(L):
    want = "encoder" if i < enc else "decoder"
    k = i if i < enc else i - enc
    assert l["stack"] == (want if dec else None) and l["stack_index"] == k, l
    assert l["name"] == (f"{want}.{k}" if enc and dec else str(i)), l["name"]
    assert l["attention"]["kind"] == "self" and l["ffn"] and l["ffn"]["width"] > 0, l
    c = l["cross_attention"]
    if want == "decoder":
        assert c and c["kind"] == "cross" and c["cross"] and c["heads"] == l["attention"]["heads"], c
        assert c["head_dim"] * c["heads"] == c["output"]["in"], c
    else:
        assert c is None, c
PY

# prune_case NAME ARGS...: prune, check the model, and compare it with the zeroed original
prune_case() {
  local name=$1
  shift
  local out=$work/$name.onnx
  if ! "$BIN" prune "$M" -o "$out" --report "$work/$name.json" -q "$@"; then bad "$name: prune failed"; return 1; fi
  $PY "$E2E/check_model.py" "$out" "$M" "$work/$name.json" || { bad "$name: model checks"; return 1; }
  $PY "$E2E/zero_units.py" "$M" "$work/inspect.json" "$work/$name.json" "$work/$name.ref.onnx"
  if ort compare "$work/$name.ref.onnx" "$out" --data "$DIR" --tol 1e-4; then ok; else bad "$name: outputs differ from the zeroed original"; return 1; fi
}

prune_case heads-ffn50 --head-sparsity 0.5 --ffn-sparsity 0.5
# every cross-attention lost half its heads, and the pruned model is not the original (the test can fail)
if $PY - "$work/heads-ffn50.json" <<'PY'; then ok; else bad "heads-ffn50: cross-attention heads not halved"; fi
import json, sys
L = [l for l in json.load(open(sys.argv[1]))["layers"] if "cross_heads_before" in l]
assert L and all(l["cross_heads_after"] * 2 == l["cross_heads_before"] and len(l["removed_cross_heads"]) ==
                 l["cross_heads_before"] // 2 for l in L), L
PY
if node "$E2E/ort.js" compare "$M" "$work/heads-ffn50.onnx" --data "$DIR" --tol 1e-4 >/dev/null 2>&1; then
  bad "heads-ffn50: the pruned model computes what the original does"; else ok; fi
prune_case global --head-sparsity 0.5 --ffn-sparsity 0.25 --scope global --importance l1
# global ranking takes half of all heads, self- and cross-attention's together
if $PY - "$work/global.json" <<'PY'; then ok; else bad "global: cross-attention heads not ranked with the others"; fi
import json, sys
L = json.load(open(sys.argv[1]))["layers"]
total = sum(l["heads_before"] + l.get("cross_heads_before", 0) for l in L)
removed = sum(len(l["removed_heads"]) + len(l.get("removed_cross_heads", [])) for l in L)
assert removed == total // 2, (removed, total)
PY
prune_case activation --head-sparsity 0.5 --ffn-sparsity 0.5 --importance activation --no-compensate --data "$DIR"
# activation importance on samples cut along each input's batch axis (axis 1 of a sequence-first
# model, named by its dynamic axes): the test data's two rows as an .npz, run one sample at a time
$PY - "$M" "$DIR/test_data_set_0" "$work/rows.npz" <<'PY' || bad "cannot stack the test data"
import sys, numpy as np, onnx, onnx.numpy_helper as nh
m = onnx.load(sys.argv[1])
names = [i.name for i in m.graph.input]
arrays = {names[k]: nh.to_array(onnx.load_tensor(f"{sys.argv[2]}/input_{k}.pb")) for k in range(len(names))}
np.savez(sys.argv[3], **arrays)
PY
prune_case activation-rows --head-sparsity 0.5 --ffn-sparsity 0.5 --importance activation --no-compensate --data "$work/rows.npz" --batch 1
# the same tokens as the one run of both rows, so the same units go (a cut along the sequence axis would
# see other tokens)
if $PY - "$work/activation.json" "$work/activation-rows.json" <<'PY'; then ok; else bad "activation: rows cut on the wrong axis"; fi
import json, sys
a, b = ({l["name"]: l for l in json.load(open(p))["layers"]} for p in sys.argv[1:3])
for k in ("removed_heads", "removed_cross_heads", "removed_neurons"):
    assert all(a[n].get(k) == b[n].get(k) for n in a), k
PY

# --compact on the zeroed original finds exactly the removed units
if "$BIN" prune "$work/heads-ffn50.ref.onnx" -o "$work/compact.onnx" --compact --report "$work/compact.json" -q &&
  ort compare "$work/heads-ffn50.ref.onnx" "$work/compact.onnx" --data "$DIR" --tol 1e-4 &&
  [ "$($PY -c "import json,sys;print(json.load(open(sys.argv[1]))['parameters']['after'])" "$work/compact.json")" = \
    "$($PY -c "import json,sys;print(json.load(open(sys.argv[1]))['parameters']['after'])" "$work/heads-ffn50.json")" ]; then ok
else bad "compact: outputs or parameter count differ"; fi

# per-layer config by stack address: explicit self and cross heads, a removed cross-attention
last=decoder.$((DEC - 1)) first=decoder.0
if [ "$ENC" = 0 ]; then last=$((DEC - 1)) first=0; fi # one stack: plain numbers
cat >"$work/cfg.json" <<JSON
{"layers": [{"layer": "$first", "heads": [0], "cross_heads": [1, 2]},
            {"layer": "$last", "cross_attention": false, "ffn_size": 16}]}
JSON
prune_case config --config "$work/cfg.json"
if $PY - "$work/config.json" <<'PY'; then ok; else bad "config: cross-attention heads / removal not as asked"; fi
import json, sys
L = [l for l in json.load(open(sys.argv[1]))["layers"] if "cross_heads_before" in l]
assert L[0]["removed_cross_heads"] == [1, 2] and L[0]["removed_heads"] == [0], L[0]
assert L[-1]["cross_attention_removed"] and L[-1]["ffn_after"] == 16, L[-1]
PY

# keeping layers by stack address: a decoder layer goes whole (self, cross and FFN)
if [ "$ENC" -gt 0 ]; then keep="encoder.0,$last" want=2; else keep=$last want=1; fi
if "$BIN" prune "$M" -o "$work/keep.onnx" --keep-layers "$keep" --report "$work/keep.json" -q &&
  $PY "$E2E/check_model.py" "$work/keep.onnx" "$M" "$work/keep.json" &&
  "$BIN" inspect "$work/keep.onnx" | grep -q ", $want layers,"; then
  if [ "$PRE" = --pre-norm ]; then
    $PY "$E2E/zero_units.py" "$M" "$work/inspect.json" "$work/keep.json" "$work/keep.ref.onnx"
    if ort compare "$work/keep.ref.onnx" "$work/keep.onnx" --data "$DIR" --tol 1e-4; then ok; else bad "keep-layers: outputs"; fi
  elif ort compare "$M" "$work/keep.onnx" --data "$DIR" --tol 1e30; then ok; else bad "keep-layers: does not run"; fi
else bad "keep-layers $keep: prune, checks or layer count"; fi
if [ "$ENC" -gt 0 ]; then
  expect plain-number "layer 0 is ambiguous: the model has an encoder stack ($ENC layers) and a decoder stack ($DEC layers); name a layer encoder.N or decoder.N" -- \
    prune "$M" -o "$O" --keep-layers 0
  expect beyond-stack "layer decoder.$DEC does not exist (the decoder stack has $DEC layers" -- prune "$M" -o "$O" --keep-layers "decoder.$DEC"
else
  expect no-encoder "layer encoder.0: the model has no encoder stack (it has a decoder stack only)" -- \
    prune "$M" -o "$O" --keep-layers encoder.0
  echo '{"layers": [{"layer": "decoder.0", "cross_heads": [3]}]}' >"$work/named-cfg.json" # decoder-only: named too
  prune_case named --config "$work/named-cfg.json"
fi

finish

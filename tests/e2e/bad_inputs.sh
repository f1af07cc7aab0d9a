#!/usr/bin/env bash
# bad_inputs.sh ONNX_PRUNE FIXTURE.onnx: every malformed input or option gets one clear error line,
# exit code 2, and leaves no output file (nor a temporary one) behind.
set -u
BIN=$1 GOOD=$2
. "$(dirname "$0")/lib.sh"
$PY "$E2E/make_bad_models.py" "$GOOD" "$work/bad" || { echo "cannot make bad models"; exit 1; }

B=$work/bad O=$work/out/model.onnx
expect empty "empty.onnx: empty file" -- prune "$B/empty.onnx" -o "$O" --head-sparsity 0.5
expect truncated "truncated.onnx: not a valid ONNX protobuf" -- prune "$B/truncated.onnx" -o "$O" --head-sparsity 0.5
expect random "random.onnx: not a valid ONNX" -- prune "$B/random.onnx" -o "$O" --head-sparsity 0.5
expect not-a-model "not_a_model.onnx: not .*ONNX" -- prune "$B/not_a_model.onnx" -o "$O" --head-sparsity 0.5
expect dangling "dangling.onnx: node .* input 'nowhere' is not produced" -- prune "$B/dangling.onnx" -o "$O" --head-sparsity 0.5
expect arity "arity.onnx: node .* (MatMul): expected at least 2 inputs, got 1" -- prune "$B/arity.onnx" -o "$O" --head-sparsity 0.5
expect raw-length "raw_length.onnx: tensor .* raw_data has .* bytes but dims and type need" -- prune "$B/raw_length.onnx" -o "$O" --head-sparsity 0.5
expect ext-escape "escapes the model directory" -- prune "$B/ext_escape.onnx" -o "$O" --head-sparsity 0.5
expect ext-absolute "escapes the model directory" -- prune "$B/ext_absolute.onnx" -o "$O" --head-sparsity 0.5
expect ext-past-end "lies past the end of 'weights.bin'" -- prune "$B/ext_past_end.onnx" -o "$O" --head-sparsity 0.5
expect missing-file "no_such.onnx: No such file" -- prune "$B/no_such.onnx" -o "$O" --head-sparsity 0.5
expect inspect-truncated "truncated.onnx: not a valid ONNX protobuf" -- inspect "$B/truncated.onnx"
expect sparsity-high "head-sparsity: '1.5' is outside \[0, 1)" -- prune "$GOOD" -o "$O" --head-sparsity 1.5
expect sparsity-one "ffn-sparsity: '1' is outside \[0, 1)" -- prune "$GOOD" -o "$O" --ffn-sparsity 1
expect sparsity-negative "head-sparsity: '-0.1' is outside" -- prune "$GOOD" -o "$O" --head-sparsity -0.1
expect sparsity-text "head-sparsity: 'abc' is outside" -- prune "$GOOD" -o "$O" --head-sparsity abc
expect width-zero "width: '0' is outside (0, 1\]" -- prune "$GOOD" -o "$O" --width 0
expect layer-missing "keep-layers: layer 7 does not exist" -- prune "$GOOD" -o "$O" --keep-layers 0,7
echo '{"layers": [{"layer": 9, "head_sparsity": 0.5}]}' >"$work/cfg_layer.json"
expect config-layer "layers: layer 9 does not exist" -- prune "$GOOD" -o "$O" --config "$work/cfg_layer.json"
echo '{"layers": [{"layer": 0, "heads": [0, 1, 2, 3]}]}' >"$work/cfg_all.json"
expect config-all-heads "removing every head needs" -- prune "$GOOD" -o "$O" --config "$work/cfg_all.json"
echo '{"layers": [{"layer": 0, "heads": [11]}]}' >"$work/cfg_head.json"
expect config-head "layer 0: head 11 does not exist" -- prune "$GOOD" -o "$O" --config "$work/cfg_head.json"
echo '{"head_sparsity": 2}' >"$work/cfg_range.json"
expect config-range "cfg_range.json: head_sparsity: '2' is outside" -- prune "$GOOD" -o "$O" --config "$work/cfg_range.json"
echo '{"head_sparsty": 0.5}' >"$work/cfg_key.json"
expect config-unknown "unknown option 'head_sparsty'" -- prune "$GOOD" -o "$O" --config "$work/cfg_key.json"
echo '{oops' >"$work/cfg_bad.json"
expect config-json "cfg_bad.json: not valid JSON (at byte 2)" -- prune "$GOOD" -o "$O" --config "$work/cfg_bad.json"
expect unknown-flag "unknown option '--bogus'" -- prune "$GOOD" -o "$O" --bogus
expect no-output "missing -o OUT" -- prune "$GOOD" --head-sparsity 0.5
expect unknown-command "unknown command 'frobnicate'" -- frobnicate

# never overwrite the input, even through another path to it
cp "$GOOD" "$work/out/in.onnx"
before=$(md5sum <"$work/out/in.onnx")
"$BIN" prune "$work/out/in.onnx" -o "$work/out/../out/in.onnx" --head-sparsity 0.5 >/dev/null 2>"$work/stderr"
rc=$?
if [ $rc -eq 2 ] && grep -q "refusing to overwrite the input" "$work/stderr" && [ "$(md5sum <"$work/out/in.onnx")" = "$before" ] &&
  [ "$(ls -A "$work/out")" = "in.onnx" ]; then ok; else bad "overwrite-input: rc=$rc $(cat "$work/stderr")"; fi

finish

#!/usr/bin/env bash
# target.sh ONNX_PRUNE SHARED_MODELS: --target-flops / --target-params / --multiple-of (issue 12). The FLOPs
# a report states are recounted here from the written model's blocks (README's formula: per token,
# 2 per multiply-add, q/k/v/output projections, scores and context at --flops-seq, FFN up and down), the
# target is reached within what rounding allows, kept widths are multiples, no block is emptied unless
# the target demands it, and ONNX Runtime runs every model written.
set -u
BIN=$1 SHARED=$2
. "$(dirname "$0")/lib.sh"
M=$SHARED/austen_bert/model.onnx D=$SHARED/austen_bert/dev.npz G=$SHARED/austen_gpt/model.onnx
for f in "$M" "$D" "$G"; do [ -f "$f" ] || { echo "FAIL missing fixture $f"; exit 1; }; done

# target NAME MODEL KIND R MULTIPLE [ARGS...]: prune to the target, then check it against the written model
target() {
  local name=$1 model=$2 kind=$3 r=$4 mult=$5
  shift 5
  local out=$work/$name.onnx
  if ! "$BIN" prune "$model" -o "$out" --target-$kind "$r" --multiple-of "$mult" --report "$work/$name.json" -q "$@"; then
    bad "$name: prune failed"; return; fi
  $PY "$E2E/check_model.py" "$out" "$model" "$work/$name.json" || { bad "$name: model checks"; return; }
  "$BIN" inspect "$model" --json >"$work/$name.before.json" && "$BIN" inspect "$out" --json >"$work/$name.after.json" || {
    bad "$name: inspect"; return; }
  $PY - "$work/$name.before.json" "$work/$name.after.json" "$work/$name.json" "$kind" "$r" "$mult" <<'PY' && ok || bad "$name: target"
import json, sys
before, after, rep = (json.load(open(p)) for p in sys.argv[1:4])
kind, r, mult = sys.argv[4], float(sys.argv[5]), int(sys.argv[6])
S = rep['blocks']['flops_sequence_length']

def count(inspect):
    """FLOPs per token and parameters of the attention and FFN blocks, and the largest unit's cost"""
    flops = params = unit_f = unit_p = 0
    for L in inspect['layers']:
        a, f = L.get('attention'), L.get('ffn')
        if a:
            H, d, E = a['heads'], a['head_dim'], a['projections'][0]['in']
            hf = 2 * 4 * E * d + 4 * d * S
            hp = 4 * E * d + 3 * d
            flops += H * hf
            params += H * hp + E  # the output bias
            unit_f, unit_p = max(unit_f, hf), max(unit_p, hp)
        if f:
            F, E = f['width'], f['up'][0]['in']
            flops += F * 2 * 2 * E
            params += F * (2 * E + 1) + E
            unit_f, unit_p = max(unit_f, mult * 2 * 2 * E), max(unit_p, mult * (2 * E + 1))
    return flops, params, unit_f, unit_p

f0, p0, uf, up = count(before)
f1, p1, _, _ = count(after)
b = rep['blocks']
assert abs(b['flops_per_token_before'] - f0) <= 1e-6 * f0 and abs(b['flops_per_token_after'] - f1) <= 1e-6 * f0, (b, f0, f1)
assert abs(b['parameters_before'] - p0) <= 0.5 and abs(b['parameters_after'] - p1) <= 0.5, (b, p0, p1)
kept, total, unit = (f1 / f0, f0, uf) if kind == 'flops' else (p1 / p0, p0, up)
layers = len(after['layers'])
tol = (unit + layers * unit / 2) / total  # one unit past the target, and each block's rounding
assert abs(kept - r) <= tol, f'kept {kept:.4f} of {kind}, target {r}, tolerance {tol:.4f}'
for L in after['layers']:
    a, f = L.get('attention'), L.get('ffn')
    assert a and a['heads'] >= 1 and f and f['width'] >= 1, f'layer {L["layer"]} emptied'
    assert f['width'] % mult == 0, f'layer {L["layer"]}: FFN width {f["width"]} is no multiple of {mult}'
print(f'{kind}: kept {kept:.4f} (target {r}, tolerance {tol:.4f})')
PY
  ort compare "$out" "$out" --data "$D" --rows 4 >/dev/null 2>&1 || [ "$model" != "$M" ] || bad "$name: ONNX Runtime cannot run it"
}
target flops50 "$M" flops 0.5 1
target flops30-64 "$M" flops 0.3 64
target params60-32 "$M" params 0.6 32
target flops40-act "$M" flops 0.4 16 --importance activation --data "$D" --samples 16 --batch 16
target gpt-flops50-64 "$G" flops 0.5 64 --flops-seq 63
# a ratio's kept width is rounded too: 1024 x 0.7 = 717 -> 704
"$BIN" prune "$M" -o "$work/r.onnx" --ffn-sparsity 0.3 --multiple-of 64 --report "$work/r.json" -q || bad "ratio + multiple-of"
$PY -c "import json,sys; sys.exit(not all(L['ffn_after'] == 704 for L in json.load(open(sys.argv[1]))['layers']))" "$work/r.json" \
  && ok || bad "ratio + multiple-of: widths"
expect target-and-ratio "--target-flops: decides the heads and FFN widths itself; --head-sparsity contradicts it" -- \
  prune "$M" -o "$work/out/x.onnx" --target-flops 0.5 --head-sparsity 0.5
expect target-and-compact "decides the heads and FFN widths itself; --compact contradicts it" -- prune "$M" -o "$work/out/x.onnx" --target-flops 0.5 --compact
expect two-targets "contradict each other" -- prune "$M" -o "$work/out/x.onnx" --target-flops 0.5 --target-params 0.5
expect target-range "outside (0, 1]" -- prune "$M" -o "$work/out/x.onnx" --target-flops 0
finish

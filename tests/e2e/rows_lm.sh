#!/usr/bin/env bash
# rows_lm.sh ONNX_PRUNE SHARED_MODELS: which rows calibrate and which score (issue 12), and verify's
# language-model figures against ONNX Runtime. austen_bert's dev.npz is grouped by novel, so rows taken
# from its start are one class: spread rows must cover the classes, `first` must not; the rows a search
# scores never are calibration rows; verify --holdout leaves out every row a report lists, and its
# perplexity and next-token accuracy on the rows left match ONNX Runtime's logits on those rows.
set -u
BIN=$1 SHARED=$2
. "$(dirname "$0")/lib.sh"
BERT=$SHARED/austen_bert GPT=$SHARED/austen_gpt VIT=$SHARED/digits_vit
for f in "$BERT/model.onnx" "$BERT/dev.npz" "$GPT/model.onnx" "$GPT/dev.npz" "$VIT/model.onnx" "$VIT/dev.npz"; do
  [ -f "$f" ] || { echo "FAIL missing fixture $f"; exit 1; }
done

# rows REPORT: the calibration rows of a report, comma-separated
rows() { $PY -c "import json,sys; r=json.load(open(sys.argv[1])); r=r.get('quantize', r); print(','.join(map(str, r['rows']['calibration']['rows'])))" "$1"; }
classes() { $PY -c "import numpy as np,sys; l=np.load(sys.argv[1])['labels']; print(len(set(l[[int(x) for x in sys.argv[2].split(',')]])))" "$BERT/dev.npz" "$1"; }

prune_rows() { # NAME ARGS...: prune austen_bert with activation importance on 32 rows
  local name=$1; shift
  "$BIN" prune "$BERT/model.onnx" -o "$work/$name.onnx" --head-sparsity 0.5 --importance activation \
    --data "$BERT/dev.npz" --samples 32 --batch 32 --report "$work/$name.json" -q "$@" || bad "$name: prune failed"
}
prune_rows spread
prune_rows first --sample-order first
prune_rows random --sample-order random --seed 5
prune_rows random2 --sample-order random --seed 5
prune_rows random3 --sample-order random --seed 6
s=$(rows "$work/spread.json") f=$(rows "$work/first.json") r=$(rows "$work/random.json")
[ "$f" = "$(seq -s, 0 31)" ] && ok || bad "first: rows $f"
[ "$(classes "$s")" -ge 5 ] && ok || bad "spread: rows $s cover $(classes "$s") of 6 classes"
[ "$(classes "$f")" -eq 1 ] && ok || bad "first: the fixture is no longer grouped by class"
[ "$r" = "$(rows "$work/random2.json")" ] && [ "$r" != "$(rows "$work/random3.json")" ] && ok || bad "random: not seeded"
$PY -c "import sys; r=[int(x) for x in sys.argv[1].split(',')]; sys.exit(not (len(set(r))==32 and max(r)<1866 and max(r)-min(r)>1500))" "$s" \
  && ok || bad "spread: rows $s"
$PY -c "import json,sys; r=json.load(open(sys.argv[1]))['rows']['calibration']; sys.exit(not r['rule'].startswith('32 of 1866 rows, spread over the whole file'))" \
  "$work/spread.json" && ok || bad "spread: no rule in the report"
# -v says which rows
"$BIN" prune "$BERT/model.onnx" --dry-run --head-sparsity 0.5 --importance activation --data "$BERT/dev.npz" \
  --samples 8 --batch 8 -v 2>"$work/v.err" >/dev/null
grep -q "calibration rows: $(rows "$work/spread.json" | cut -d, -f1-8)\$" "$work/v.err" 2>/dev/null || \
  grep -q "calibration rows: [0-9]*,[0-9]*,[0-9]*,[0-9]*,[0-9]*,[0-9]*,[0-9]*,[0-9]*$" "$work/v.err" && ok || bad "-v: no row list: $(cat "$work/v.err")"
expect sample-order-without-data "applies only with --data" -- prune "$BERT/model.onnx" -o "$work/out/x.onnx" --head-sparsity 0.5 --sample-order first
expect bad-order "--sample-order: 'spreed' is not one of first, spread, random" -- prune "$BERT/model.onnx" -o "$work/out/x.onnx" \
  --head-sparsity 0.5 --importance activation --data "$BERT/dev.npz" --sample-order spreed

# quantize's search: its scoring rows are spread too and never calibration rows
"$BIN" quantize "$VIT/model.onnx" -o "$work/q.onnx" --data "$VIT/dev.npz" --samples 32 --eval-samples 48 \
  --method min_max,abs_max --report "$work/q.json" -q || bad "quantize failed"
$PY - "$work/q.json" <<'PY' && ok || bad "quantize: calibration and evaluation rows"
import json, sys
r = json.load(open(sys.argv[1]))['rows']
c, e = r['calibration']['rows'], r['evaluation']['rows']
assert len(c) == 32 and len(e) == 48 and not set(c) & set(e), (c, e)
assert max(c) - min(c) > 120 and max(e) - min(e) > 120, (c, e)
PY

# verify: perplexity and next-token accuracy, on rows no calibration used, against ONNX Runtime's logits
"$BIN" prune "$GPT/model.onnx" -o "$work/gpt.onnx" --head-sparsity 0.5 --ffn-sparsity 0.5 --importance activation \
  --data "$GPT/dev.npz" --samples 16 --batch 8 --report "$work/gpt.json" -q || bad "gpt: prune failed"
"$BIN" verify "$GPT/model.onnx" "$work/gpt.onnx" --data "$GPT/dev.npz" --samples 24 --batch 8 --holdout "$work/gpt.json" \
  --json >"$work/v.json" || bad "gpt: verify failed"
held=$(rows "$work/gpt.json")
left=$($PY -c "import sys; h={int(x) for x in sys.argv[1].split(',')}; print(','.join([str(i) for i in range(1370) if i not in h][:24]))" "$held")
node "$E2E/ort.js" lm "$GPT/model.onnx" --data "$GPT/dev.npz" --rows-list "$left" >"$work/ref.json" || bad "ort lm (reference)"
node "$E2E/ort.js" lm "$work/gpt.onnx" --data "$GPT/dev.npz" --rows-list "$left" >"$work/cand.json" || bad "ort lm (candidate)"
$PY - "$work/v.json" "$work/ref.json" "$work/cand.json" <<'PY' && ok || bad "verify's language-model figures differ from ONNX Runtime's"
import json, sys
v = json.load(open(sys.argv[1])); ref = json.load(open(sys.argv[2])); cand = json.load(open(sys.argv[3]))
o = v['outputs'][0]
assert v['samples'] == 24, v['samples']
assert o['tokens'] == ref['tokens'], (o['tokens'], ref['tokens'])
for side, peer in (('reference', ref), ('candidate', cand)):
    mine, theirs = o[side + '_perplexity'], peer['perplexity']
    assert abs(mine - theirs) <= 1e-3 * theirs, (side, mine, theirs)
    assert abs(o[side + '_next_token_accuracy'] - peer['next_token_accuracy']) <= 2.0 / peer['tokens'], side
assert o['candidate_perplexity'] > o['reference_perplexity']
print('perplexity', o['reference_perplexity'], '->', o['candidate_perplexity'])
PY
"$BIN" verify "$GPT/model.onnx" "$GPT/model.onnx" --data "$GPT/dev.npz" --samples 8 --batch 8 >"$work/v.txt" || bad "gpt: verify text"
grep -q "perplexity: .* -> .* (+0.00%)" "$work/v.txt" && grep -q "next-token accuracy" "$work/v.txt" && ok || bad "verify text: $(cat "$work/v.txt")"
# the ignore index: tokens labelled with it are not scored
"$BIN" verify "$GPT/model.onnx" "$GPT/model.onnx" --data "$GPT/dev.npz" --samples 8 --batch 8 --ignore-index 3 --json >"$work/ign.json" || bad "ignore-index"
$PY -c "
import json, sys, numpy as np
o = json.load(open(sys.argv[1]))['outputs'][0]
l = np.load(sys.argv[2])['labels'][:8]
sys.exit(not (o['ignore_index'] == 3 and o['tokens'] == int((l != 3).sum()) and (l == 3).any()))" "$work/ign.json" "$GPT/dev.npz" \
  && ok || bad "ignore-index: tokens scored"
finish

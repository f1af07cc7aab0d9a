#!/usr/bin/env bash
# floor.sh ONNX_PRUNE SHARED_MODELS: the accuracy floor (issue 12). The search prints its curve, keeps the
# smallest candidate that passes (every smaller one tried failed), and that model passes in ONNX Runtime
# too, on the evaluation rows the report lists (never calibration rows); a floor no candidate meets is
# exit 1 with nothing written; compress quantises each candidate; a language model is judged by perplexity.
set -u
BIN=$1 SHARED=$2
. "$(dirname "$0")/lib.sh"
BERT=$SHARED/austen_bert GPT=$SHARED/austen_gpt VIT=$SHARED/digits_vit
for f in "$BERT/model.onnx" "$BERT/dev.npz" "$GPT/model.onnx" "$GPT/dev.npz" "$VIT/model.onnx" "$VIT/dev.npz"; do
  [ -f "$f" ] || { echo "FAIL missing fixture $f"; exit 1; }
done
evalrows() { $PY -c "import json,sys; r=json.load(open(sys.argv[1])); r=r.get('prune', r); print(','.join(map(str, r['rows']['evaluation']['rows'])))" "$1"; }

# curve NAME REPORT: the kept candidate is the smallest that passed, the curve is ordered and monotone-ish
curve() {
  $PY - "$2" <<'PY' && ok || bad "$1: curve"
import json, sys
r = json.load(open(sys.argv[1])); r = r.get('prune', r); s = r['search']
c = s['curve']
assert s['passed'] and len(c) >= 3, s
t = [p['target'] for p in c]
assert t == sorted(t), t
kept = s['kept_target']
assert all(not p['pass'] for p in c if p['target'] < kept) and any(p['pass'] and p['target'] == kept for p in c), c
f = [p['flops_kept'] for p in c]
assert all(b >= a - 0.02 for a, b in zip(f, f[1:])), f  # FLOPs kept grow with the target (within rounding)
assert abs(r['blocks']['flops_kept'] - next(p['flops_kept'] for p in c if p['target'] == kept)) < 1e-9
PY
}

# a classifier: at most 2 points of accuracy lost, on rows after the calibration rows
"$BIN" prune "$BERT/model.onnx" -o "$work/bert.onnx" --max-drop 2 --importance activation --data "$BERT/dev.npz" \
  --samples 32 --eval-samples 96 --search-steps 3 --batch 32 --report "$work/bert.json" >"$work/bert.txt" || bad "bert: search failed"
grep -q "^  target  flops_kept  params_kept" "$work/bert.txt" && grep -q "<- kept" "$work/bert.txt" && ok || bad "bert: no curve printed"
curve bert "$work/bert.json"
$PY -c "
import json, sys
r = json.load(open(sys.argv[1]))['rows']
c, e = r['calibration']['rows'], r['evaluation']['rows']
sys.exit(not (len(c) == 32 and len(e) == 96 and not set(c) & set(e)))" "$work/bert.json" && ok || bad "bert: rows overlap"
rows=$(evalrows "$work/bert.json")
node "$E2E/ort.js" accuracy-rows "$BERT/model.onnx" --data "$BERT/dev.npz" --rows-list "$rows" >"$work/a0.json" &&
  node "$E2E/ort.js" accuracy-rows "$work/bert.onnx" --data "$BERT/dev.npz" --rows-list "$rows" >"$work/a1.json" || bad "bert: ORT"
$PY -c "
import json, sys
a0, a1 = (json.load(open(p))['accuracy'] for p in sys.argv[1:3])
print('ORT accuracy on the evaluation rows', a0, '->', a1)
sys.exit(not (100 * (a0 - a1) <= 2 + 100.0 / 96))  # one row of slack: ties between executors" "$work/a0.json" "$work/a1.json" \
  && ok || bad "bert: the kept model does not pass in ONNX Runtime"

# a floor no candidate meets: exit 1, the curve on stderr, nothing written
rm -rf "$work/out" && mkdir "$work/out"
"$BIN" prune "$BERT/model.onnx" -o "$work/out/x.onnx" --min-cosine 0.999999 --target-flops 0.3 --search-steps 2 \
  --data "$BERT/dev.npz" --eval-samples 32 --batch 32 --report "$work/out/x.json" >/dev/null 2>"$work/none.err"
rc=$?
[ $rc -eq 1 ] && [ -z "$(ls -A "$work/out")" ] && grep -q "no candidate met the accuracy floor" "$work/none.err" &&
  grep -q "no candidate passed" "$work/none.err" && ok || bad "no pass: rc=$rc $(cat "$work/none.err")"

# a language model: perplexity at most 25% above the original's
"$BIN" prune "$GPT/model.onnx" -o "$work/gpt.onnx" --max-ppl-increase 25 --data "$GPT/dev.npz" --eval-samples 8 \
  --search-steps 3 --batch 8 --flops-seq 63 --report "$work/gpt.json" -q || bad "gpt: search failed"
curve gpt "$work/gpt.json"
# reconstruction (the default with --data) calibrates on the first 256 rows of the order: none judges
$PY -c "
import json, sys
r = json.load(open(sys.argv[1]))['rows']
c, e = r['calibration']['rows'], r['evaluation']['rows']
sys.exit(not (len(c) == 256 and len(e) == 8 and not set(c) & set(e)))" "$work/gpt.json" && ok || bad "gpt: rows overlap"
rows=$(evalrows "$work/gpt.json")
node "$E2E/ort.js" lm "$GPT/model.onnx" --data "$GPT/dev.npz" --rows-list "$rows" >"$work/p0.json" &&
  node "$E2E/ort.js" lm "$work/gpt.onnx" --data "$GPT/dev.npz" --rows-list "$rows" >"$work/p1.json" || bad "gpt: ORT"
$PY -c "
import json, sys
p0, p1 = (json.load(open(p))['perplexity'] for p in sys.argv[1:3])
print('ORT perplexity on the evaluation rows', p0, '->', p1)
sys.exit(not (p1 <= 1.25 * p0 * 1.001))" "$work/p0.json" "$work/p1.json" && ok || bad "gpt: the kept model does not pass in ONNX Runtime"

# compress: each candidate pruned and quantised, judged quantised
echo '{"prune": {"importance": "l2"}, "quantize": {"method": "min_max"}}' >"$work/c.json"
"$BIN" compress "$VIT/model.onnx" -o "$work/vit.onnx" --config "$work/c.json" --data "$VIT/dev.npz" --samples 32 \
  --max-drop 3 --batch 16 --report "$work/vit.json" --html "$work/vit.html" -q || bad "vit: compress search failed"
grep -q "then quantised to int8" "$work/vit.html" && grep -q 'class="curve"' "$work/vit.html" && ok || bad "vit: --html"
curve vit "$work/vit.json"
# compensation (on with --data) calibrates the prune step on --samples rows, as the quantize step: none judges
$PY -c "
import json, sys
r = json.load(open(sys.argv[1]))['prune']['rows']
c, e = r['calibration']['rows'], r['evaluation']['rows']
sys.exit(not (len(c) == 32 and len(e) == 148 and not set(c) & set(e)))" "$work/vit.json" && ok || bad "vit: rows overlap"
rows=$(evalrows "$work/vit.json")
node "$E2E/ort.js" accuracy-rows "$VIT/model.onnx" --data "$VIT/dev.npz" --rows-list "$rows" >"$work/v0.json" &&
  node "$E2E/ort.js" accuracy-rows "$work/vit.onnx" --data "$VIT/dev.npz" --rows-list "$rows" >"$work/v1.json" || bad "vit: ORT"
$PY -c "
import json, sys
a0, a1 = (json.load(open(p)) for p in sys.argv[1:3])
print('ORT accuracy on the evaluation rows (quantised)', a0['accuracy'], '->', a1['accuracy'])
# eight rows of slack: the search judges the int8 candidate with our executor's QDQ (dequantise, compute in
# float), ONNX Runtime fuses QDQ into integer kernels that round differently (seen on an AVX2 host: 3 to 7
# of 148 rows apart, depending on the candidate; README, known limits)
sys.exit(not (100 * (a0['accuracy'] - a1['accuracy']) <= 3 + 800.0 / a0['rows']))" "$work/v0.json" "$work/v1.json" \
  && ok || bad "vit: the kept model does not pass in ONNX Runtime"
grep -q QuantizeLinear "$work/vit.onnx" && ok || bad "vit: not quantised"

expect drop-without-class-labels "--max-drop: the data has no class labels" -- prune "$GPT/model.onnx" -o "$work/out/x.onnx" \
  --max-drop 1 --data "$GPT/dev.npz" --eval-samples 8 --search-steps 1 --batch 8
expect floor-without-data "--max-drop applies only with --data" -- prune "$BERT/model.onnx" -o "$work/out/x.onnx" --max-drop 1
finish

#!/usr/bin/env bash
# alloc_search.sh ONNX_PRUNE SHARED_MODELS: the allocation judged end to end (issue 12, alloc_search.c) on
# digits_vit. With --scope global it runs within --alloc-steps, keeps the global fractions in every
# candidate, keeps a head in every layer, writes what it tried in the report and the summary, and what
# it writes runs in ONNX Runtime, the HTML report's table matches the JSON; with a target and --multiple-of the FLOPs stay within the target and
# the widths multiples; --alloc-steps 0 turns it off; the config key works; bad values are refused.
set -u
BIN=$1 SHARED=$2
. "$(dirname "$0")/lib.sh"
M=$SHARED/digits_vit/model.onnx D=$SHARED/digits_vit/dev.npz
for f in "$M" "$D"; do [ -f "$f" ] || { echo "FAIL missing fixture $f"; exit 1; }; done

# global: 50% of all heads (4 of 8) and of all neurons (256 of 512) in every candidate
if "$BIN" prune "$M" -o "$work/g.onnx" --head-sparsity 0.5 --ffn-sparsity 0.5 --scope global --data "$D" --samples 48 \
    --batch 16 --alloc-steps 3 --report "$work/g.json" --html "$work/g.html" >"$work/g.txt"; then
  $PY - "$work/g.json" <<'PY' && ok || bad "global: report"
import json, sys
r = json.load(open(sys.argv[1]))
s = r['allocation_search']
assert s['ran'] and s['budget'] == 3, s
assert s['fit_samples'] == 24 and s['judge_samples'] == 24, s  # half: a quarter would be fewer than 32
c = s['candidates']
assert 2 <= len(c) <= 4, len(c)  # the start and at most 3 moves
assert c[0]['accepted'] and c[0]['move'].startswith('the error curves')
for k in c:
    assert sum(k['heads_removed']) == 4 and sum(k['neurons_removed']) == 256, k
    assert all(0 <= h <= 3 for h in k['heads_removed']), k
    assert k['error'] >= 0
best = min(c, key=lambda k: k['error'])
assert s['error_after'] == best['error'] and s['after']['heads_removed'] == best['heads_removed'], (s, best)
kept = [l['heads_after'] for l in r['layers']]
assert [4 - h for h in s['after']['heads_removed']] == kept, (kept, s['after'])
assert [256 - n for n in s['after']['neurons_removed']] == [l['ffn_after'] for l in r['layers']]
PY
  grep -q "^allocation search: [0-9]* of 3 moves tried" "$work/g.txt" && grep -q "the error curves' allocation" "$work/g.txt" &&
    ok || bad "global: the summary does not say what the search did: $(cat "$work/g.txt")"
  ort accuracy "$work/g.onnx" --data "$D" --rows 16 && ok || bad "global: ONNX Runtime cannot run the model"
  $PY - "$work/g.json" "$work/g.html" <<'PY' && ok || bad "global: the HTML report's allocation search"
import json, re, sys
s = json.load(open(sys.argv[1]))['allocation_search']
h = open(sys.argv[2]).read()
sec = h[h.index('<h2>Allocation search</h2>'):]
rows = re.findall(r'<tr><td class="l">([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>', sec)
assert len(rows) == len(s['candidates']), (len(rows), len(s['candidates']))
for (mv, heads, neurons, err, acc), c in zip(rows, s['candidates']):
    assert mv.replace('&#39;', "'") == c['move'] or mv == c['move'], (mv, c['move'])
    assert heads == ' + '.join(str(x) for x in c['heads_removed']), (heads, c)
    assert abs(float(err) - c['error']) <= 1e-3 * c['error'] + 1e-12 and (acc == 'yes') == c['accepted']
PY
else
  bad "global: prune failed"
fi

# a target with --multiple-of: every candidate within the FLOPs, widths multiples of 16
if "$BIN" prune "$M" -o "$work/t.onnx" --target-flops 0.6 --multiple-of 16 --data "$D" --samples 48 --batch 16 \
    --alloc-steps 4 --report "$work/t.json" -q; then
  $PY - "$work/t.json" <<'PY' && ok || bad "target: report"
import json, sys
r = json.load(open(sys.argv[1]))
assert r['blocks']['flops_kept'] <= 0.6 + 1e-9, r['blocks']
s = r['allocation_search']
assert s['ran'], s
for l in r['layers']:
    assert l['ffn_after'] % 16 == 0 and l['ffn_after'] > 0 and l['heads_after'] > 0, l
for k in s['candidates']:
    assert all(n % 16 == 0 for n in k['neurons_removed']), k
PY
else
  bad "target: prune failed"
fi

# off: no search, no block in the report; the config key sets it too
"$BIN" prune "$M" -o "$work/o.onnx" --head-sparsity 0.5 --ffn-sparsity 0.5 --scope global --data "$D" --samples 48 \
  --alloc-steps 0 --report "$work/o.json" -q || bad "off: prune failed"
$PY -c "import json,sys; assert 'allocation_search' not in json.load(open(sys.argv[1]))" "$work/o.json" && ok ||
  bad "off: the report has an allocation_search"
echo '{"scope": "global", "head_sparsity": 0.5, "ffn_sparsity": 0.5, "alloc_steps": 1}' >"$work/c.json"
"$BIN" prune "$M" -o "$work/c.onnx" --config "$work/c.json" --data "$D" --samples 48 --report "$work/c.json.out" -q ||
  bad "config: prune failed"
$PY -c "import json,sys; s=json.load(open(sys.argv[1]))['allocation_search']; assert s['budget']==1 and len(s['candidates'])<=2, s" \
  "$work/c.json.out" && ok || bad "config: alloc_steps not applied"
# too few calibration samples to split: said, not searched
"$BIN" prune "$M" -o "$work/f.onnx" --head-sparsity 0.5 --ffn-sparsity 0.5 --scope global --data "$D" --samples 12 \
  --report "$work/f.json" -q || bad "few: prune failed"
$PY -c "import json,sys; s=json.load(open(sys.argv[1]))['allocation_search']; assert not s['ran'] and 'skipped' in s['note'], s" \
  "$work/f.json" && ok || bad "few samples: not said"

expect steps-negative "alloc-steps: .-1. is not a whole number" -- prune "$M" -o "$work/out/x.onnx" --scope global --head-sparsity 0.5 --data "$D" \
  --alloc-steps -1
expect steps-word "alloc-steps: .many. is not a whole number" -- prune "$M" -o "$work/out/x.onnx" --scope global --head-sparsity 0.5 --data "$D" \
  --alloc-steps many
expect steps-without-data "--alloc-steps applies only with --data" -- prune "$M" -o "$work/out/x.onnx" --scope global \
  --head-sparsity 0.5 --alloc-steps 2
expect steps-layer-scope "alloc-steps: moves heads and neurons between layers, which only" -- prune "$M" \
  -o "$work/out/x.onnx" --head-sparsity 0.5 --data "$D" --alloc-steps 2
expect steps-activation "alloc-steps: applies with --importance reconstruction (the counts come from its error curves), not .activation." -- prune "$M" -o "$work/out/x.onnx" \
  --scope global --head-sparsity 0.5 --data "$D" --importance activation --alloc-steps 2
finish

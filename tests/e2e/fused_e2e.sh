#!/usr/bin/env bash
# fused_e2e.sh ONNX_PRUNE MODEL_DIR DATA KIND [--activation] [--kv]: pruning a graph of ONNX Runtime's
# fused operators, judged by ONNX Runtime. KIND is the attention kind inspect must report for every
# layer ("fused op (Attention)", "self" for FusedMatMul scores). Heads and FFN neurons are pruned 50%:
# the written model keeps its fused ops, passes the checker, keeps its interfaces (past/present state
# may lose heads on their head axis only) and equals the original with the removed units zeroed; --compact
# of that zeroed original is exact; removing a layer whose residual is SkipLayerNormalization is
# refused. --activation: also --importance activation on DATA, and reconstruction with compensation (its
# refit model run by ONNX Runtime against our executor); --kv: whole kv groups too (grouped).
set -u
BIN=$1 DIR=$2 DATA=$3 KIND=$4
ACT='' KV=''
for opt in "${@:5}"; do
  case $opt in --activation) ACT=1 ;; --kv) KV=1 ;; *) echo "unknown option $opt"; exit 2 ;; esac
done
. "$(dirname "$0")/lib.sh"
M=$DIR/model.onnx
[ -f "$M" ] && [ -e "$DATA" ] || { echo "FAIL missing fixture $M or $DATA"; exit 1; }

"$BIN" inspect "$M" --json >"$work/inspect.json" || { echo "FAIL inspect"; exit 1; }
if $PY -c "
import json, sys
d = json.load(open(sys.argv[1]))
kinds = {L['attention']['kind'] for L in d['layers'] if L['attention']}
ffn = all(L['ffn'] for L in d['layers'])
sys.exit(not (d['layers'] and not d['unmatched'] and kinds == {sys.argv[2]} and ffn))" "$work/inspect.json" "$KIND"; then ok
else bad "inspect: not every layer matched as '$KIND' with an FFN: $(head -c 600 "$work/inspect.json")"; fi

# compare REF CAND REPORT: ONNX Runtime runs both; past state is cut to the heads CAND kept
compare() {
  local ref=$1 cand=$2 report=$3
  if [ -f "$DATA" ]; then
    $PY "$E2E/fused_state.py" "$work/inspect.json" "$report" "$DATA" "$work/cand.npz" "$work/slices.json" &&
      ort compare-state "$ref" "$cand" --data "$DATA" --cand-data "$work/cand.npz" --slices "$work/slices.json" --tol 1e-4
  else
    ort compare "$ref" "$cand" --data "$DATA" --tol 1e-4
  fi
}

# prune_case NAME ARGS...: prune, check, compare with the zeroed original
prune_case() {
  local name=$1
  shift
  local out=$work/$name.onnx
  if ! "$BIN" prune "$M" -o "$out" --report "$work/$name.json" -q "$@" 2>"$work/err"; then bad "$name: prune failed: $(cat "$work/err")"; return 1; fi
  $PY "$E2E/check_model.py" "$out" "$M" "$work/$name.json" --state "$work/inspect.json" || { bad "$name: model checks"; return 1; }
  $PY -c "
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(not (sum(len(l['removed_heads']) for l in r['layers']) and sum(len(l['removed_neurons']) for l in r['layers'])))" \
    "$work/$name.json" || { bad "$name: no head or no neuron removed"; return 1; }
  $PY "$E2E/zero_units.py" "$M" "$work/inspect.json" "$work/$name.json" "$work/$name.ref.onnx"
  if compare "$work/$name.ref.onnx" "$out" "$work/$name.json"; then ok; else bad "$name: outputs differ from the zeroed original"; return 1; fi
}

# compact_case NAME: --compact of NAME's zeroed original removes the same units and computes the same outputs
compact_case() {
  local name=$1
  if "$BIN" prune "$work/$name.ref.onnx" -o "$work/$name.compact.onnx" --compact --report "$work/$name.compact.json" -q 2>"$work/err" &&
    compare "$work/$name.ref.onnx" "$work/$name.compact.onnx" "$work/$name.compact.json" &&
    [ "$($PY -c "import json,sys;print(json.load(open(sys.argv[1]))['parameters']['after'])" "$work/$name.compact.json")" = \
      "$($PY -c "import json,sys;print(json.load(open(sys.argv[1]))['parameters']['after'])" "$work/$name.json")" ]; then ok
  else bad "compact $name: $(cat "$work/err") outputs or parameter count differ"; fi
}

if prune_case both --head-sparsity 0.5 --ffn-sparsity 0.5; then
  # the fused ops are still there, with the new head count
  if $PY -c "
import json, sys, onnx
m = onnx.load(sys.argv[1])
ops = [n for n in m.graph.node if n.domain == 'com.microsoft' and n.op_type in ('Attention', 'MultiHeadAttention', 'GroupQueryAttention')]
heads = [a.i for n in ops for a in n.attribute if a.name == 'num_heads']
L = json.load(open(sys.argv[2]))['layers']
sys.exit(len(heads) != len(ops) or any(h != l['heads_after'] for h, l in zip(heads, L)))" "$work/both.onnx" "$work/both.json"; then ok
  else bad "fused ops or their num_heads not as the report says"; fi
  compact_case both
fi
prune_case l1-global --head-sparsity 0.5 --ffn-sparsity 0.5 --importance l1 --scope global
[ -n "$KV" ] && prune_case kv-groups --num-kv-heads 1 --ffn-sparsity 0.5 && compact_case kv-groups
WINDOW=()
[ -f "$DATA" ] && WINDOW=(--samples 64 --batch 64)
[ -n "$ACT" ] && prune_case activation --head-sparsity 0.5 --ffn-sparsity 0.5 --importance activation --no-compensate --data "$DATA" "${WINDOW[@]}"

# pruning by reconstruction with compensation (what --data defaults to): the kept weights are refit, so
# there is no zeroed original to equal; the model checks pass and ONNX Runtime computes what our
# executor does on it (past state cut to the kept heads)
if [ -n "$ACT" ]; then
  name=recon out=$work/recon.onnx
  if "$BIN" prune "$M" -o "$out" --report "$work/$name.json" -q --head-sparsity 0.5 --ffn-sparsity 0.5 \
      --data "$DATA" "${WINDOW[@]}" 2>"$work/err" &&
    $PY "$E2E/check_model.py" "$out" "$M" "$work/$name.json" --state "$work/inspect.json"; then
    cdata=$DATA
    if [ -f "$DATA" ]; then
      $PY "$E2E/fused_state.py" "$work/inspect.json" "$work/$name.json" "$DATA" "$work/rcand.npz" "$work/rslices.json" &&
        cdata=$work/rcand.npz
    fi
    if "$BIN" run "$out" --data "$cdata" -o "$work/recon.ours.npz" -q && ort ours "$out" "$work/recon.ours.npz" --data "$cdata" --tol 1e-4
    then ok; else bad "recon: ONNX Runtime and our executor disagree on the refit model"; fi
  else bad "recon: $(cat "$work/err")"; fi
fi

# a layer whose residual is ONNX Runtime's SkipLayerNormalization cannot be bypassed: refused by name
if $PY -c "
import onnx, sys
sys.exit(not any(n.op_type.startswith('Skip') for n in onnx.load(sys.argv[1]).graph.node))" "$M"; then
  expect drop-refused "cannot be bypassed" -- prune "$M" -o "$work/out/d.onnx" --keep-layers 0 -q
fi
finish

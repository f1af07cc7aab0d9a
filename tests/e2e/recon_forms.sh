#!/usr/bin/env bash
# recon_forms.sh ONNX_PRUNE FIXTURES: pruning by reconstruction (issue 12) sees the same model whatever form
# its weights are stored in. bert_constant_weights_opset11 is bert_separate_mask_opset11 with every
# weight in a Constant node (as paddle2onnx writes them); both are pruned by reconstruction with
# compensation from the same 64 calibration samples, in layer scope (the last blocks pool their rows) and
# in global scope (error curves first), and must remove the same heads and neurons and compute the same
# outputs on the data; so must the Constant form with nameless tensors, as exporters usually write them. The calibration passes start where the previous one stopped and an edited weight
# must invalidate what it reaches, a Constant node's included; ONNX Runtime runs the Constant-held result.
set -u
BIN=$1 FIX=$2
. "$(dirname "$0")/lib.sh"
A=$FIX/bert_separate_mask_opset11/model.onnx B=$FIX/bert_constant_weights_opset11/model.onnx
for f in "$A" "$B"; do [ -f "$f" ] || { echo "FAIL missing $f"; exit 1; }; done
$PY - "$work/d.npz" <<'PY' || { echo "FAIL cannot make data"; exit 1; }
import sys, numpy as np
r = np.random.default_rng(3)
mask = np.ones((64, 6), np.int64)
mask[::3, 4:] = 0
np.savez(sys.argv[1], input_ids=r.integers(0, 48, (64, 6)).astype(np.int64), attention_mask=mask)
PY
# and as exporters usually write Constant nodes: their tensors nameless, known by the node's output only
C=$work/c.in.onnx
$PY - "$B" "$C" <<'PY' || { echo "FAIL cannot make the nameless form"; exit 1; }
import sys, onnx
m = onnx.load(sys.argv[1])
for n in m.graph.node:
    for a in n.attribute:
        if n.op_type == 'Constant' and a.name == 'value':
            a.t.name = ''
onnx.save(m, sys.argv[2])
PY
for scope in layer global; do
  for form in a b c; do
    M=$A; [ $form = b ] && M=$B; [ $form = c ] && M=$C
    if ! "$BIN" prune "$M" -o "$work/$form.onnx" --head-sparsity 0.5 --ffn-sparsity 0.5 --scope $scope \
        --data "$work/d.npz" --batch 16 --report "$work/$form.json" -q; then
      bad "$scope $form: prune failed"
      continue
    fi
    "$BIN" run "$work/$form.onnx" --data "$work/d.npz" -o "$work/$form.npz" -q || bad "$scope $form: run failed"
  done
  $PY - "$work/a.json" "$work/b.json" "$work/c.json" <<'PY' && ok || bad "$scope: the forms were pruned differently"
import json, sys
a, b, c = (json.load(open(p)) for p in sys.argv[1:])
for x, y in [(x, y) for other in (b, c) for x, y in zip(a['layers'], other['layers'])]:
    for k in ('removed_heads', 'removed_neurons'):
        assert x[k] == y[k], (x['layer'], k, x[k], y[k])
    for k in ('attention_reconstruction', 'ffn_reconstruction'):
        ex, ey = x[k]['measured_error'], y[k]['measured_error']
        assert abs(ex - ey) <= 1e-4 * max(abs(ex), 1e-3), (x['layer'], k, ex, ey)
print('same units removed; errors', [round(l['ffn_reconstruction']['measured_error'], 5) for l in a['layers']])
PY
  for form in b c; do
    $PY "$E2E/npz_close.py" "$work/a.npz" "$work/$form.npz" 1e-4 1e-5 && ok || bad "$scope $form: outputs differ"
    ort ours "$work/$form.onnx" "$work/$form.npz" --data "$work/d.npz" --tol 1e-4 && ok ||
      bad "$scope $form: ONNX Runtime does not agree on the Constant-held result"
  done
done
finish

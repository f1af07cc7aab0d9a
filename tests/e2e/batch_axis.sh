#!/usr/bin/env bash
# batch_axis.sh ONNX_PRUNE FIXTURES: data is cut along the model's batch axis only, and outputs are
# gathered along theirs, in everything that streams data (run, verify, quantize calibration, prune's
# activation importance); ONNX test data sets are complete runs. Regression: a sequence-first
# nn.TransformerEncoder (src [seq, batch, E]) was run one token at a time, 0.94 relative error, exit 0.
set -u
BIN=$1 FIX=$2
. "$(dirname "$0")/lib.sh"
SF=$FIX/export_seqfirst_encoder PS=$FIX/export_past_state
[ -f "$SF/stacked.npz" ] && [ -f "$PS/stacked.npz" ] || { echo "FAIL missing fixtures under $FIX"; exit 1; }

# close A.npz B.npz: same arrays within 1e-5 relative (other batch sizes take other kernel paths)
close() { $PY "$E2E/npz_close.py" "$1" "$2" >"$work/close.log" 2>&1 || { cat "$work/close.log"; return 1; }; }

# seq-first: 8 samples along axis 1, in batches of 3 (the last one short), against ONNX Runtime on all 8
if "$BIN" run "$SF/model.onnx" --data "$SF/stacked.npz" --batch 3 -o "$work/sf.npz" &&
  ort ours "$SF/model.onnx" "$work/sf.npz" --data "$SF/stacked.npz" --rows 1000000 --tol 1e-4; then ok
else bad "seq-first run in batches: outputs differ from ONNX Runtime"; fi

# verify counts samples along the batch axis: 8, and a model against itself is exact
if "$BIN" verify "$SF/model.onnx" "$SF/model.onnx" --data "$SF/stacked.npz" --batch 3 --json >"$work/v.json" &&
  $PY -c "import json,sys; r=json.load(open(sys.argv[1])); o=r['outputs'][0]; sys.exit(not (r['samples']==8 and o['max_abs_diff']==0 and abs(o['mean_cosine']-1)<1e-6))" "$work/v.json"
then ok; else bad "seq-first verify: $(cat "$work/v.json")"; fi

# calibration sees the same activations whatever the batch: min_max ranges of batches of 2 = one batch of 8
ranges() { $PY -c "
import json, sys
a, b = (json.load(open(p))['tensors'] for p in sys.argv[1:3])
ra = {t['name']: t.get('observed_range') for t in a}
rb = {t['name']: t.get('observed_range') for t in b}
bad = [n for n in ra if ra[n] and (rb.get(n) is None or max(abs(x - y) for x, y in zip(ra[n], rb[n])) > 1e-4 * max(1, max(map(abs, ra[n]))))]
print(bad); sys.exit(bool(bad) or not ra)" "$1" "$2"; }
if "$BIN" quantize "$SF/model.onnx" -o "$work/q2.onnx" --data "$SF/stacked.npz" --batch 2 --method min_max --report "$work/q2.json" -q &&
  "$BIN" quantize "$SF/model.onnx" -o "$work/q8.onnx" --data "$SF/stacked.npz" --batch 8 --method min_max --report "$work/q8.json" -q &&
  ranges "$work/q2.json" "$work/q8.json" >"$work/ranges.log"; then ok
else bad "seq-first calibration: ranges depend on the batch size: $(cat "$work/ranges.log" 2>/dev/null)"; fi

# activation importance likewise: the same units removed with batches of 2 as with one batch of 8
removed() { $PY -c "import json,sys; print([(l['removed_heads'], l['removed_neurons']) for l in json.load(open(sys.argv[1]))['layers']])" "$1"; }
if "$BIN" prune "$SF/model.onnx" -o "$work/p2.onnx" --importance activation --data "$SF/stacked.npz" --batch 2 \
  --head-sparsity 0.5 --ffn-sparsity 0.5 --report "$work/p2.json" -q &&
  "$BIN" prune "$SF/model.onnx" -o "$work/p8.onnx" --importance activation --data "$SF/stacked.npz" --batch 8 \
    --head-sparsity 0.5 --ffn-sparsity 0.5 --report "$work/p8.json" -q &&
  [ "$(removed "$work/p2.json")" = "$(removed "$work/p8.json")" ]; then ok
else bad "seq-first activation importance depends on the batch size"; fi

# without names that say which axis is the batch: refused with how to say it; --batch-axis then works
$PY - "$SF/model.onnx" "$work/unnamed.onnx" <<'PY'
import sys, onnx
m = onnx.load(sys.argv[1])
for v in list(m.graph.input) + list(m.graph.output):
    for d, n in zip(v.type.tensor_type.shape.dim, ["S", "X"]):
        d.dim_param = n
onnx.save(m, sys.argv[2])
PY
expect unnamed-batch-refused "cannot tell which axis of input 'src' \[S, X, 32\] is the batch.*--batch-axis" -- \
  run "$work/unnamed.onnx" --data "$SF/stacked.npz" -o "$work/out/o.npz"
for spec in 1 src=1; do
  if "$BIN" run "$work/unnamed.onnx" --data "$SF/stacked.npz" --batch 3 --batch-axis "$spec" -o "$work/ax.npz" &&
    close "$work/ax.npz" "$work/sf.npz"; then ok; else bad "--batch-axis $spec"; fi
done
expect batch-axis-rank "--batch-axis src=3: input 'src' has rank 3" -- run "$SF/model.onnx" --data "$SF/stacked.npz" --batch-axis src=3 -o "$work/out/o.npz"
expect batch-axis-syntax "--batch-axis: 'src=x' is not N or NAME=N" -- run "$SF/model.onnx" --data "$SF/stacked.npz" --batch-axis src=x -o "$work/out/o.npz"

# ONNX Runtime's GPT-2 signature: past_0 [2, batch_size, 4, past_seq_len, 8] cut on axis 1, present_0
# gathered on axis 1, logits on axis 0; 5 samples in batches of 2
if "$BIN" run "$PS/model.onnx" --data "$PS/stacked.npz" --batch 2 -o "$work/ps.npz" &&
  ort ours "$PS/model.onnx" "$work/ps.npz" --data "$PS/stacked.npz" --rows 1000000 --tol 1e-4; then ok
else bad "past state: outputs differ from ONNX Runtime"; fi

# --fill sizes a dynamic axis from the data input that shares its name; total_seq_len is in none
$PY -c "import numpy as np, sys; d = np.load(sys.argv[1]); np.savez(sys.argv[2], input_ids=d['input_ids'], past_0=d['past_0'])" \
  "$PS/stacked.npz" "$work/nomask.npz"
expect fill-named-axis "--fill attention_mask: axis 1 (total_seq_len) is dynamic and no data input shows its size" -- \
  run "$PS/model.onnx" --data "$work/nomask.npz" --fill attention_mask=1 -o "$work/out/o.npz"

# ONNX test data: two sets of different batch sizes, each one complete run; run writes every set's
# outputs (SET/OUTPUT in a .npz, or output_N.pb per set in a folder), verify compares set by set
$PY - "$PS" "$work/sets" <<'PY'
import os, shutil, sys, numpy as np, onnx.numpy_helper as nh
src, dst = sys.argv[1:3]
shutil.copytree(os.path.join(src, "test_data_set_0"), os.path.join(dst, "test_data_set_0"))
d = np.load(os.path.join(src, "stacked.npz"))
os.makedirs(os.path.join(dst, "test_data_set_1"))
for i, (n, a) in enumerate([("input_ids", d["input_ids"][:3]), ("attention_mask", d["attention_mask"][:3]),
                            ("past_0", d["past_0"][:, :3])]):
    open(os.path.join(dst, "test_data_set_1", f"input_{i}.pb"), "wb").write(nh.from_array(np.ascontiguousarray(a), n).SerializeToString())
PY
node "$E2E/ort.js" write-outputs "$PS/model.onnx" "$work/sets"
sets_close() { $PY - "$@" <<'PY'
import glob, os, sys, numpy as np, onnx, onnx.numpy_helper as nh
sets, ours = sys.argv[1:3]
arrays = dict(np.load(ours)) if ours.endswith(".npz") else None
n = 0
for s in sorted(glob.glob(os.path.join(sets, "test_data_set_*"))):
    for i, names in enumerate(["logits", "present_0"]):
        want = nh.to_array(onnx.load_tensor(os.path.join(s, f"output_{i}.pb")))
        if arrays is not None:
            got = arrays[os.path.basename(s) + "/" + names]
        else:
            t = onnx.load_tensor(os.path.join(ours, os.path.basename(s), f"output_{i}.pb"))
            assert t.name == names, t.name
            got = nh.to_array(t)
        assert got.shape == want.shape, (s, names, got.shape, want.shape)
        assert np.abs(got - want).max() <= 1e-4 * max(1, np.abs(want).max()), (s, names)
        n += 1
sys.exit(n != 4)
PY
}
if "$BIN" run "$PS/model.onnx" --data "$work/sets" -o "$work/sets.npz" && sets_close "$work/sets" "$work/sets.npz"; then ok
else bad "test data sets: run's .npz"; fi
if "$BIN" run "$PS/model.onnx" --data "$work/sets" -o "$work/sets_out/" && sets_close "$work/sets" "$work/sets_out"; then ok
else bad "test data sets: run's output_N.pb folder"; fi
if "$BIN" verify "$PS/model.onnx" "$PS/model.onnx" --data "$work/sets" --json >"$work/sv.json" &&
  $PY -c "import json,sys; r=json.load(open(sys.argv[1])); sys.exit(not (r['sets']==2 and r['samples']==5))" "$work/sv.json"
then ok; else bad "test data sets: verify set by set: $(cat "$work/sv.json")"; fi
expect sets-batch "--batch does not apply to ONNX test data" -- run "$PS/model.onnx" --data "$work/sets" --batch 2 -o "$work/out/o.npz"
expect sets-samples "--samples does not apply to ONNX test data" -- verify "$PS/model.onnx" "$PS/model.onnx" --data "$work/sets" --samples 1
finish

#!/usr/bin/env bash
# contrib_e2e.sh - ONNX Runtime's side of the com.microsoft fused-op tests.
#   contrib_e2e.sh fixtures DIR                      every fixture's recorded outputs still come out of ONNX
#                                                    Runtime (so the fixtures are what ONNX Runtime computes;
#                                                    of reference.onnx, an equivalent graph, where present)
#   contrib_e2e.sh npz TEST_CONTRIB MODEL_DIR TMP    MODEL_DIR/inputs.npz run whole by our executor (through
#                                                    the session API: past_* have batch on axis 1) agrees
#                                                    with ONNX Runtime within 1e-4
#   contrib_e2e.sh optimized ONNX_PRUNE MODEL DATA ROWS TMP OPS
#                                                    the graph ONNX Runtime's optimizer saves of MODEL (level
#                                                    extended) holds the com.microsoft ops OPS (comma list),
#                                                    and `run` on it agrees with ONNX Runtime within 1e-4
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
case "$1" in
fixtures)
  dir=$2 n=0 failed=0
  for d in "$dir"/*/; do
    name=$(basename "$d")
    [[ -f $d/test_data_set_0/output_0.pb ]] || continue # refusal fixtures have no outputs
    tol=1e-4
    [[ $name == *_fp16 ]] && tol=1e-2
    n=$((n + 1))
    model=$d/model.onnx
    [[ -f $d/reference.onnx ]] && model=$d/reference.onnx # a form ONNX Runtime's CPU provider lacks, decomposed
    if ! out=$(node "$here/ort.js" expect "$model" "$d" --tol "$tol" 2>&1); then
      echo "FAILED: $name"; echo "$out"; failed=$((failed + 1))
    fi
  done
  echo "$n fixtures, $failed failed"
  # a missing fixture folder is a failure, never a skip
  [[ $n -ge 59 && $failed -eq 0 ]]
  ;;
npz)
  bin=$2 model=$3/model.onnx data=$3/inputs.npz out=$4/contrib_gpt2_ortfused.npz
  [[ -f $model && -f $data ]] || { echo "missing $model or $data"; exit 1; }
  rm -f "$out"
  "$bin" --npz "$model" "$data" "$out"
  node "$here/ort.js" ours "$model" "$out" --data "$data" --rows 1000000 --tol 1e-4
  ;;
optimized)
  bin=$2 model=$3 data=$4 rows=$5 opt=$6/contrib_opt_$(basename "$(dirname "$3")").onnx ops=$7
  rm -f "$opt"
  node "$here/ort.js" optimize "$model" "$opt" 2>/dev/null
  /usr/bin/python3 - "$opt" "$ops" <<'PY'
import sys, onnx
fused = {n.op_type for n in onnx.load(sys.argv[1]).graph.node if n.domain == 'com.microsoft'}
missing = set(sys.argv[2].split(',')) - fused
print('fused ops:', ', '.join(sorted(fused)))
sys.exit('not fused: ' + ', '.join(sorted(missing)) if missing else 0)
PY
  window=(--samples "$rows" --batch 8)
  [ -d "$data" ] && window=() # ONNX test data: each set is one run
  "$bin" run "$opt" --data "$data" "${window[@]}" -o "${opt%.onnx}.npz"
  node "$here/ort.js" ours "$opt" "${opt%.onnx}.npz" --data "$data" --rows "$rows" --tol 1e-4
  ;;
*) echo "usage: contrib_e2e.sh fixtures DIR | npz TEST_CONTRIB MODEL_DIR TMP | optimized ONNX_PRUNE MODEL DATA ROWS TMP OPS"; exit 2 ;;
esac

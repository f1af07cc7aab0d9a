#!/usr/bin/env bash
# types_e2e.sh ONNX_PRUNE FIXTURES: models in float16 / float64 / small integer types run end to end.
# The float16 BERT (model.half()-style and keep_io_types-style) and the float64 one must agree with ONNX
# Runtime (fp16: 1e-2 relative, fp64 computed in float32: 1e-4), keep their output types, and verify
# against the float32 original; the bfloat16 one agrees with ONNX Runtime's float32 run within 3e-2; the integer model must equal numpy's ONNX-semantics outputs exactly,
# read from .pb and from .npz in every numpy dtype; a float32 array for a float16 input is refused.
set -u
BIN=$1 FIX=$2
. "$(dirname "$0")/lib.sh"

for spec in bert_fp16_opset11:1e-2:float16 bert_fp16_keepio_opset11:1e-2:float32 bert_fp64_opset11:1e-4:float64; do
  IFS=: read -r name tol type <<<"$spec"
  M=$FIX/$name/model.onnx
  if "$BIN" run "$M" --data "$FIX/$name" -o "$work/$name.npz" && # one test data set: one run
    ort ours "$M" "$work/$name.npz" --data "$FIX/$name" --tol "$tol"; then ok; else bad "$name: run differs from ONNX Runtime"; fi
  if $PY -c "import numpy as np, sys; z = np.load('$work/$name.npz'); sys.exit(z[z.files[0]].dtype != np.dtype('$type'))"; then ok
  else bad "$name: output is not $type"; fi
  # verify against the float32 original (outputs of two float types compare as doubles)
  if "$BIN" verify "$FIX/bert_separate_mask_opset11/model.onnx" "$M" --data "$FIX/$name" --json >"$work/v.json" &&
    $PY -c "import json, sys; o = json.load(open('$work/v.json'))['outputs'][0]; sys.exit(not (o['mean_cosine'] > 0.999 and o['max_abs_diff'] < $tol * 10))"
  then ok; else bad "$name: verify against the float32 model: $(head -c 300 "$work/v.json")"; fi
done

# bfloat16 (no ONNX Runtime CPU kernels): against ONNX Runtime's float32 run of the original, within
# bfloat16's precision; the output is written as float32
B=$FIX/bert_bf16_opset11
if "$BIN" run "$B/model.onnx" --data "$B" -o "$work/bf16.npz" &&
  ort ours "$FIX/bert_separate_mask_opset11/model.onnx" "$work/bf16.npz" --data "$B" --tol 3e-2; then ok
else bad "bert_bf16: run differs from ONNX Runtime's float32 run"; fi

# integers and float16 casts: exact, from test data (.pb) and from a .npz of the same arrays
I=$FIX/types_int_opset14
if "$BIN" run "$I/model.onnx" --data "$I/test_data_set_0" -o "$work/int.npz" && $PY "$E2E/npz_close.py" "$work/int.npz" "$I/expected.npz" 0 0
then ok; else bad "types_int: outputs differ from ONNX's semantics"; fi
$PY - "$I" "$work/int_in.npz" "$work/bad_in.npz" <<'EOF'
import glob, sys
import numpy as np, onnx
from onnx import numpy_helper
arrays = {}
for p in sorted(glob.glob(sys.argv[1] + '/test_data_set_0/input_*.pb')):
    t = onnx.load_tensor(p)
    arrays[t.name] = numpy_helper.to_array(t)
np.savez(sys.argv[2], **arrays)
arrays['h'] = arrays['h'].astype(np.float32)  # the wrong type for a float16 input
np.savez(sys.argv[3], **arrays)
del arrays['h']  # for --fill into a float16 input
np.savez(sys.argv[2].replace('.npz', '_noh.npz'), **arrays)
EOF
if "$BIN" run "$I/model.onnx" --data "$work/int_in.npz" -o "$work/int2.npz" && $PY "$E2E/npz_close.py" "$work/int2.npz" "$I/expected.npz" 0 0
then ok; else bad "types_int: outputs from .npz data differ"; fi
if "$BIN" run "$I/model.onnx" --data "$work/int_in_noh.npz" --fill h=2.5 -o "$work/fill.npz" &&
  $PY -c "
import numpy as np, sys
o = np.load('$work/fill.npz')
sys.exit(not ((o['cast_h_double'] == 2.5).all() and (o['cast_h_int8'] == 2).all() and o['cast_h_double'].shape == (2, 4, 6)))"
then ok; else bad "--fill of a float16 input"; fi
expect "float32 data for a float16 input" "input 'h': expected float16 \[?, 4, 6\], found float32 \[2, 4, 6\]" -- \
  run "$I/model.onnx" --data "$work/bad_in.npz" -o "$work/out/x.npz"

finish

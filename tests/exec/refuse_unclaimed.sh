#!/bin/bash
# refuse_unclaimed.sh ONNX_PRUNE NODE_TESTS_DIR TMPDIR - ONNX node tests of operators the executor does
# not claim, run through `onnx-prune run`: exit 2, one stderr line naming the operator, no output.
set -u
bin=$1 root=$2 tmp=$3
[ -d "$root" ] || { echo "FAIL: $root is missing (install libonnx-testdata)"; exit 1; }
mkdir -p "$tmp"
bad=0 n=0
for spec in test_lstm_defaults:LSTM test_gru_defaults:GRU test_det_2d:Det test_nonmaxsuppression_suppress_by_IOU:NonMaxSuppression \
            test_unique_not_sorted_without_axis:Unique test_adagrad:Adagrad test_bitshift_right_uint8:BitShift \
            test_gridsample:GridSample; do
  t=${spec%%:*} op=${spec#*:}
  d=$root/$t
  [ -f "$d/model.onnx" ] || { echo "FAIL $t: fixture missing"; bad=1; continue; }
  out=$tmp/$t.npz
  rm -f "$out"
  "$bin" run "$d/model.onnx" --data "$d/test_data_set_0" -o "$out" 2>"$tmp/$t.err" >/dev/null
  rc=$? lines=$(wc -l <"$tmp/$t.err")
  if [ $rc -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -q "'[a-z.]*\(::\)\?$op'" "$tmp/$t.err" || [ -e "$out" ]; then
    echo "FAIL $t: exit $rc, $lines stderr lines: $(head -c 300 "$tmp/$t.err")"
    bad=1
  fi
  n=$((n + 1))
done
echo "refused through the binary: $n tests"
exit $bad

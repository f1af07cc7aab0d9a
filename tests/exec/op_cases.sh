#!/bin/bash
# op_cases.sh PYTHON TEST_CONFORMANCE ORT_JS OUTDIR - the generated node tests (make_op_cases.py):
# their numpy references must agree with ONNX Runtime, and our executor with them.
set -u
py=$1 conf=$2 ortjs=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$out" && mkdir -p "$out" || exit 1
"$py" "$here/make_op_cases.py" "$out" || { echo "FAIL: make_op_cases.py"; exit 1; }
n=$(ls -d "$out"/test_* 2>/dev/null | wc -l)
[ "$n" -gt 0 ] || { echo "FAIL: no cases were generated"; exit 1; }
bad=0
for d in "$out"/test_*; do
  if ! r=$(node "$ortjs" expect "$d/model.onnx" "$d" --tol 1e-4 2>&1); then
    echo "FAIL (ONNX Runtime disagrees with the reference) $(basename "$d"): $r"
    bad=1
  fi
done
"$conf" "$out" || bad=1
echo "op cases: $n generated"
exit $bad

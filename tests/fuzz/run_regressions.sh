#!/usr/bin/env bash
# run_regressions.sh ONNX_PRUNE DIR: inputs that once crashed the loader or a pass; each must now be
# refused (exit 2) or handled (exit 0), never crash; the sanitizer build turns any memory error into
# a failure here.
set -u
BIN=$1 DIR=$2
pass=0 fail=0
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for f in "$DIR"/*; do
  for cmd in "inspect $f" "prune $f -o $out/o.onnx --head-sparsity 0.5 --ffn-sparsity 0.5 -q"; do
    # shellcheck disable=SC2086
    "$BIN" $cmd >/dev/null 2>"$out/err"
    rc=$?
    if [ $rc -eq 0 ] || { [ $rc -eq 2 ] && [ "$(wc -l <"$out/err")" -eq 1 ]; }; then pass=$((pass + 1)); else
      fail=$((fail + 1)); echo "FAIL $(basename "$f") ($cmd): rc=$rc $(head -c 300 "$out/err")"; fi
  done
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]

# lib.sh - sourced by the e2e scripts: a scratch folder removed on exit, pass/fail counting, the ONNX
# Runtime peer, and the refusal every bad input must get (one error line, exit 2, nothing written).
# Needs BIN (the onnx-prune binary) set by the caller.
E2E=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pass=0 fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

# ort MODE ARGS...: ort.js, quiet unless it fails
ort() { node "$E2E/ort.js" "$@" >"$work/ort.log" 2>&1 || { cat "$work/ort.log"; return 1; }; }

# expect NAME PATTERN -- ARGS...: `onnx-prune ARGS` exits 2 within 120 s (a hang is a failure, not a
# stuck suite) with one stderr line matching PATTERN and leaves $work/out empty
expect() {
  local name=$1 pattern=$2
  shift 3
  rm -rf "$work/out" && mkdir "$work/out"
  timeout -k 5 120 "$BIN" "$@" >/dev/null 2>"$work/stderr"
  local rc=$? lines
  lines=$(wc -l <"$work/stderr")
  if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$pattern" "$work/stderr" && [ -z "$(ls -A "$work/out")" ]; then
    ok
  else
    bad "$name: rc=$rc lines=$lines stderr=$(head -c 300 "$work/stderr") out=$(ls -A "$work/out")"
  fi
}

finish() {
  echo "$pass passed, $fail failed"
  [ $fail -eq 0 ]
}

#!/usr/bin/env bash
# run_fuzz.sh BUILD_FUZZ SECONDS [TARGET...]: runs each fuzz target (all by default) for SECONDS on a
# scratch copy of its committed corpus, with a time limit per input and a memory cap, and prints one
# line per target: executions, coverage (edges), features, corpus size, and whether it crashed, then the
# same as a row of the README's campaign table (`| target | seconds | executions | ... | result |`). Inputs
# that crash are copied to tests/fuzz/regressions/<target>/ for the replay test to keep.
# BUILD_FUZZ: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
set -u
B=$1 SECONDS_EACH=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
targets=${*:-fuzz_model_load fuzz_config fuzz_prune fuzz_exec fuzz_data fuzz_cli}
status=0
commas() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; } # 52848 -> 52,848
for t in $targets; do
  work=$(mktemp -d)
  cp -r "$HERE/corpus/$t" "$work/corpus"
  case $t in fuzz_model_load | fuzz_exec) max_len=131072 ;; *) max_len=8192 ;; esac
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$B/tests/$t" "$work/corpus" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=2560 \
    -max_len=$max_len -print_final_stats=1 -artifact_prefix="$work/" >"$work/log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$work/log" | grep -o '[0-9]*$')
  last=$(grep -E '^#[0-9]+' "$work/log" | tail -1)
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
  corp=$(echo "$last" | grep -o 'corp: [0-9]*' | grep -o '[0-9]*')
  crashes=$(find "$work" -maxdepth 1 \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
  echo "$t: ${SECONDS_EACH}s, ${execs:-?} executions, cov ${cov:-?} edges, ft ${ft:-?}, corpus ${corp:-?}, exit $rc, $crashes crashing inputs"
  result=clean
  [ "$crashes" -gt 0 ] || [ $rc -ne 0 ] && result="$crashes crashing inputs (exit $rc), kept in tests/fuzz/regressions/$t/"
  echo "| \`$t\` | $SECONDS_EACH | $(commas "${execs:-?}") | $(commas "${cov:-?}") | $(commas "${ft:-?}") | ${corp:-?} | $result |"
  if [ "$crashes" -gt 0 ] || [ $rc -ne 0 ]; then
    status=1
    mkdir -p "$HERE/regressions/$t"
    for f in "$work"/crash-* "$work"/timeout-* "$work"/oom-* "$work"/leak-*; do [ -e "$f" ] && cp "$f" "$HERE/regressions/$t/"; done
    grep -m 20 -E 'ERROR|SUMMARY|runtime error|==[0-9]+==' "$work/log"
  fi
  rm -rf "$work"
done
exit $status

#!/usr/bin/env bash
# install_test.sh MODE BUILD_DIR README VERSION FIXTURE_DIR: installs the build into a temporary prefix
# (DESTDIR), then
#   install: the installed onnx-prune runs from there (its run path finds libonnxprune.so.0, no
#            LD_LIBRARY_PATH) and says its version; a program built with `pkg-config --cflags --libs
#            onnxprune` against the prefix runs; the library exports op_* symbols only;
#   readme:  every ```c block of README.md's Library section is built the same way and run on the
#            fixture, and on a missing model (one error line, exit 2, no crash).
set -u
MODE=$1 BUILD=$2 README=$3 VERSION=$4 FIX=$5
. "$(dirname "$0")/../e2e/lib.sh"
dest=$work/dest
unset LD_LIBRARY_PATH
meson install -C "$BUILD" --no-rebuild --destdir "$dest" >"$work/install.log" 2>&1 || { cat "$work/install.log"; echo "FAIL meson install"; exit 1; }
prefix=$(meson introspect "$BUILD" --buildoptions | $PY -c "import json,sys; print({o['name']: o['value'] for o in json.load(sys.stdin)}['prefix'])")
root=$dest$prefix
pcdir=$(dirname "$(find "$root" -name onnxprune.pc | head -1)")
[ -n "$pcdir" ] || { echo "FAIL no onnxprune.pc installed"; exit 1; }
pc() { PKG_CONFIG_PATH=$pcdir pkg-config --define-variable=prefix="$root" "$@" onnxprune; }
libdir=$(pc --variable=libdir)
CC=${CC:-cc}
# build one program against the installed header and library; the run path names the prefix
# a sanitizer build of the library needs its programs built with the same runtime
san=
ldd "$(find "$root" -name 'libonnxprune.so.0' | head -1)" | grep -q libasan && san="-fsanitize=address,undefined"
build() { $CC -std=c11 -Wall -Wextra -Werror $san -o "$2" "$1" $(pc --cflags) $(pc --libs) -Wl,-rpath,"$libdir"; }

M=$FIX/model.onnx
$PY - "$work/d.npz" <<'PY' || { echo "cannot make data"; exit 1; }
import sys, numpy as np
r = np.random.default_rng(1)
np.savez(sys.argv[1], input_ids=r.integers(0, 48, (8, 6)).astype(np.int64), attention_mask=np.ones((8, 6), np.int64))
PY

if [ "$MODE" = install ]; then
  exe=$root/bin/onnx-prune
  if out=$("$exe" --version 2>&1) && [ "$out" = "onnx-prune $VERSION" ]; then ok; else bad "installed --version: $out"; fi
  found=$(ldd "$exe" | awk '$1 == "libonnxprune.so.0" {print $3}')
  if [ -n "$found" ] && [ "$(readlink -f "$found")" = "$(readlink -f "$libdir/libonnxprune.so.0")" ]; then ok; else
    bad "installed binary does not load the prefix's library: $(ldd "$exe" | grep onnxprune)"; fi
  if "$exe" prune "$M" -o "$work/p.onnx" --head-sparsity 0.5 -q && [ -s "$work/p.onnx" ]; then ok; else bad "installed binary prunes"; fi
  [ -f "$(pc --variable=includedir)/onnxprune_version.h" ] && ok || bad "onnxprune_version.h not installed"
  cat >"$work/v.c" <<'C'
#include <onnxprune.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  char want[64];
  snprintf(want, sizeof want, "%d.%d.%d", OP_VERSION_MAJOR, OP_VERSION_MINOR, OP_VERSION_PATCH);
  if (strcmp(want, OP_VERSION_STRING) || strcmp(op_version(), OP_VERSION_STRING)) return 1;
  op_error err;
  op_model *m = op_model_load("/nonexistent/model.onnx", &err);
  if (m || err.code != OP_IO) return 1;
  printf("%s %s\n", op_version(), op_status_str(OP_NOMEM));
  return 0;
}
C
  if build "$work/v.c" "$work/v" && out=$("$work/v") && [ "$out" = "$VERSION out of memory" ]; then ok; else bad "pkg-config program: $out"; fi
  lib=$(readlink -f "$libdir/libonnxprune.so.0")
  others=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^op_')
  if [ -z "$others" ] && nm -D --defined-only "$lib" | grep -q " op_model_load$"; then ok; else bad "exported non-API symbols: $(echo $others | head -c 300)"; fi
  # every function the header declares is exported
  missing=$(grep -o 'OP_API [^(]*(' "$(pc --variable=includedir)/onnxprune.h" | grep -o 'op_[a-z0-9_]*($' | tr -d '(' |
    while read -r f; do nm -D --defined-only "$lib" | grep -q " $f$" || echo "$f"; done)
  [ -z "$missing" ] && ok || bad "declared but not exported: $missing"
else
  $PY - "$README" "$work" <<'PY' >"$work/examples.txt" || { echo "FAIL cannot extract the README examples"; exit 1; }
import re, sys
text = open(sys.argv[1]).read()
lib = text[text.index("## Library"):]
lib = lib[:lib.index("\n## ", 1)]
blocks = re.findall(r"```c\n(.*?)```", lib, re.S)
for i, b in enumerate(blocks):
    m = re.match(r"/\* usage: (\S+) (.*?) \*/", b)
    if not m:
        sys.exit(f"README example {i}: first line is not /* usage: NAME ARGS */")
    open(f"{sys.argv[2]}/{m.group(1)}.c", "w").write(b)
    print(m.group(1), m.group(2))
PY
  n=$(wc -l <"$work/examples.txt")
  [ "$n" -ge 3 ] && ok || bad "expected at least 3 C examples in README's Library section, found $n"
  while read -r name args; do
    if ! build "$work/$name.c" "$work/$name" 2>"$work/cc.log"; then bad "$name does not compile: $(head -c 600 "$work/cc.log")"; continue; fi
    ok
    real=() missing=()
    for a in $args; do
      case $a in
        MODEL) real+=("$M") missing+=("$work/no_such_model.onnx") ;;
        DATA) real+=("$work/d.npz") missing+=("$work/d.npz") ;;
        OUT) real+=("$work/$name.out.onnx") missing+=("$work/$name.missing.onnx") ;;
        *) bad "$name: unknown argument $a" ;;
      esac
    done
    if "$work/$name" "${real[@]}" >"$work/$name.log" 2>&1; then ok; else bad "$name failed: $(tail -c 400 "$work/$name.log")"; fi
    case " $args " in *" OUT "*) [ -s "$work/$name.out.onnx" ] && node "$E2E/ort.js" compare "$M" "$work/$name.out.onnx" --data "$work/d.npz" --tol 1e30 >/dev/null 2>&1 && ok || bad "$name: output does not run in ONNX Runtime" ;; esac
    "$work/$name" "${missing[@]}" >/dev/null 2>"$work/err"
    rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l <"$work/err")" -eq 1 ] && grep -q "no_such_model.onnx: No such file" "$work/err" &&
      [ ! -e "$work/$name.missing.onnx" ]; then ok; else bad "$name on a missing model: rc=$rc $(head -c 300 "$work/err")"; fi
  done <"$work/examples.txt"
fi
finish

#!/usr/bin/env bash
# make_devpack.sh BERT_BASE.onnx [BUILD_DIR]: packs what bench/device_bench.sh needs to run on a machine
# of another OS image (the quiet benchmark host): our binaries, every shared library they load from
# this machine (glibc and its loader included, so the host's own versions do not matter), BERT-base's
# graph with its weights as external data to be made again there (bench/extern_weights.py), and the
# inputs. Writes devpack.tar.xz (git-ignored, like devpack/).
set -euo pipefail
FULL=$1 BUILD=${2:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
D=devpack
rm -rf "$D/bin" "$D/lib" devpack.tar.xz # the model part is kept when there (it takes minutes to make)
mkdir -p "$D/bin" "$D/lib" "$D/model"
cp "$BUILD/onnx-prune" "$BUILD/exec_bench" "$BUILD/tests/test_gemm" "$D/bin/"
for b in "$BUILD/onnx-prune" "$BUILD/exec_bench" "$BUILD/tests/test_gemm"; do ldd "$b" | awk '/=>/ {print $3}'; done | sort -u | while read -r l; do cp -L "$l" "$D/lib/"; done
cp -L /lib64/ld-linux-x86-64.so.2 "$D/lib/"
[ -s "$D/model/weights_bytes" ] || /usr/bin/python3 "$HERE/extern_weights.py" "$FULL" "$D/model/bert_base.onnx" >"$D/model/weights_bytes"
/usr/bin/python3 -c "
import numpy as np, sys
ids = np.random.RandomState(0).randint(0, 30522, (16, 128)).astype(np.int64)
np.savez(sys.argv[1], input_ids=ids, attention_mask=np.ones_like(ids))" "$D/model/seq128.npz"
XZ_OPT=-6 tar cJf devpack.tar.xz "$D"
ls -la devpack.tar.xz

#!/usr/bin/env bash
# bootstrap.sh - installs what onnx-prune needs on a fresh Debian machine (apt packages, and
# onnxruntime-node for the conformance tests), then builds it twice: build/ (release) and
# build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer, for the test suite).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential pkg-config meson ninja-build \
  libprotobuf-c-dev protobuf-c-compiler libonnx-dev libopenblas-dev libdnnl-dev libcjson-dev \
  python3-onnx python3-numpy time chromium \
  libonnx-testdata >/dev/null
# Node.js for the ONNX Runtime peer; an image may already carry its own build (with npm bundled),
# which Debian's npm package conflicts with
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# the npm package ships its Linux binary; its install script only fetches optional GPU parts
(cd tests/e2e && npm install --ignore-scripts --no-audit --no-fund --loglevel=error)
[ -d build ] || meson setup build --buildtype=release >/dev/null
# any sanitizer report fails the test that triggered it; GCC leaves float-cast-overflow out of "undefined"
[ -d build-asan ] || meson setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
  -Dc_args='-fno-sanitize-recover=all -fsanitize=float-cast-overflow' \
  -Dc_link_args='-fno-sanitize-recover=all -fsanitize=float-cast-overflow' >/dev/null
ninja -C build
ninja -C build-asan

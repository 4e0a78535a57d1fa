#!/usr/bin/env bash
# Builds rusttrt's TensorRT shim as its own shared library, libtriton_rusttrt_tensorrt.so, which
# the backend dlopens (backend config `tensorrt-shim-library`, default: beside the backend). One
# library serves one TensorRT major version: build it against that release's headers. TensorRT
# itself is not linked: the shim dlopens libnvinfer.so.<MAJOR> / libnvonnxparser.so.<MAJOR>.
#
# usage: scripts/build-trt-shim.sh TENSORRT_INCLUDE_DIR [CUDA_INCLUDE_DIR] [OUTPUT]
#   OUTPUT default: target/trt-shim/<major>/libtriton_rusttrt_tensorrt.so
set -euo pipefail
if [[ $# -lt 1 || $# -gt 3 ]]; then
    echo "usage: $0 TENSORRT_INCLUDE_DIR [CUDA_INCLUDE_DIR] [OUTPUT]" >&2
    exit 2
fi
trt_inc=$1
cuda_inc=${2:-${CUDA_INCLUDE_DIR:-${CUDA_HOME:+$CUDA_HOME/include}}}
cuda_inc=${cuda_inc:-/usr/local/cuda/include}
root=$(cd "$(dirname "$0")/.." && pwd)
major=$(awk '/#define (TRT|NV_TENSORRT)_MAJOR(_ENTERPRISE)? +[0-9]+/ {print $3; exit}' "$trt_inc/NvInferVersion.h")
out=${3:-$root/target/trt-shim/$major/libtriton_rusttrt_tensorrt.so}
mkdir -p "$(dirname "$out")"
${CXX:-g++} -std=c++17 -O2 -g -Wall -Wextra -fPIC -shared \
    -I"$root/include" -isystem "$trt_inc" -isystem "$cuda_inc" \
    -Wl,--version-script="$root/src/engine/tensorrt/shim.map" -Wl,-z,defs \
    -o "$out" "$root/src/engine/tensorrt/shim.cpp" -ldl
echo "$out"

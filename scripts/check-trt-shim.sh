#!/usr/bin/env bash
# Compile-checks rusttrt's TensorRT shim against a set of TensorRT headers, without TensorRT or a
# GPU: syntax check, object build with warnings as errors (the TensorRT and CUDA headers are
# system includes), a check that the object needs no TensorRT symbol (everything is dlopen'ed),
# and a check that include/rusttrt_trt.h is plain C.
#
# usage: scripts/check-trt-shim.sh TENSORRT_INCLUDE_DIR [CUDA_INCLUDE_DIR]
#   TENSORRT_INCLUDE_DIR holds NvInfer.h, NvInferVersion.h and NvOnnxParser.h
#   CUDA_INCLUDE_DIR holds cuda_runtime_api.h (default: $CUDA_INCLUDE_DIR, $CUDA_HOME/include,
#   /usr/local/cuda/include)
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 TENSORRT_INCLUDE_DIR [CUDA_INCLUDE_DIR]" >&2
    exit 2
fi
trt_inc=$1
cuda_inc=${2:-${CUDA_INCLUDE_DIR:-${CUDA_HOME:+$CUDA_HOME/include}}}
cuda_inc=${cuda_inc:-/usr/local/cuda/include}
root=$(cd "$(dirname "$0")/.." && pwd)
shim=$root/src/engine/tensorrt/shim.cpp
CXX=${CXX:-g++}
CC=${CC:-gcc}

for f in NvInfer.h NvInferVersion.h NvOnnxParser.h; do
    [[ -f $trt_inc/$f ]] || { echo "error: $trt_inc/$f not found" >&2; exit 2; }
done
[[ -f $cuda_inc/cuda_runtime_api.h ]] || { echo "error: $cuda_inc/cuda_runtime_api.h not found" >&2; exit 2; }

ver=$(awk '/#define (TRT|NV_TENSORRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? +[0-9]+/ {print $3}' "$trt_inc/NvInferVersion.h" | head -3 | paste -sd.)
echo "TensorRT headers: $trt_inc (version ${ver:-unknown}); CUDA headers: $cuda_inc; compiler: $($CXX --version | head -1)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flags=(-std=c++17 -Wall -Wextra -Werror -fPIC -I"$root/include" -isystem "$trt_inc" -isystem "$cuda_inc")

echo "1/4 syntax check"
"$CXX" "${flags[@]}" -fsyntax-only "$shim"
echo "2/4 object build"
"$CXX" "${flags[@]}" -O2 -c "$shim" -o "$tmp/shim.o"

echo "3/4 undefined symbols: nothing from TensorRT may be linked"
# Demangled undefined symbols; anything of TensorRT, its ONNX parser or CUDA is an error.
undef=$(nm -C -u "$tmp/shim.o" | awk '{ $1=""; sub(/^ /, ""); print }')
bad=$(grep -E 'nvinfer1::|nvonnxparser::|_INTERNAL|getInferLib|getNvOnnxParser|getPluginRegistry|^cuda|^cu[A-Z]' <<<"$undef" || true)
if [[ -n $bad ]]; then
    echo "error: the shim object needs symbols it must not link against:" >&2
    echo "$bad" >&2
    exit 1
fi
echo "   $(wc -l <<<"$undef") undefined symbols, all from libc / libdl / libstdc++ / libgcc"

echo "4/4 include/rusttrt_trt.h is plain C (C99, pedantic)"
printf '#include "rusttrt_trt.h"\nint main(void) { rt_dims d; d.nb_dims = 0; return (int) d.nb_dims + (int) sizeof(rt_build_options) * 0; }\n' > "$tmp/c.c"
"$CC" -std=c99 -pedantic -Wall -Wextra -Werror -I"$root/include" -fsyntax-only "$tmp/c.c"

echo "ok: shim compiles against TensorRT ${ver:-?} headers"

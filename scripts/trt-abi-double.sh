#!/usr/bin/env bash
# Runs rusttrt's C++ TensorRT shim over the TensorRT ABI double: libnvinfer.so.<major> and
# libnvonnxparser.so.<major> built from tests/trt_abi_double/*.cpp (our code) against NVIDIA's
# public TensorRT headers, executing the networks with ONNX Runtime on the CPU.
#
# usage: scripts/trt-abi-double.sh [--build-only] TENSORRT_INCLUDE_DIR CUDA_INCLUDE_DIR
#   --build-only: build the shim, the double and the driver, print the library paths, run nothing
#   needs: g++ (C++17), python3, ONNX Runtime's shared library in $ORT_DYLIB_PATH
#          (eval "$(scripts/setup.sh)" sets it). The headers are fetched outside the repository
#          (see docs/tensorrt.md, "The ABI double").
# Builds into target/trt-abi-double/<major>/:
#   libnvinfer.so.<major>, libnvonnxparser.so.<major>   the double
#   trt-abi-driver                                      the driver (tests/trt_abi_double/driver.cpp)
#   double-selftest                                     the double's own contract test
# and the shim with scripts/build-trt-shim.sh (target/trt-shim/<major>/libtriton_rusttrt_tensorrt.so),
# then runs the driver and prints a pass/fail summary; exit status 0 only if every check passed.
# Then it runs the backend's own native-engine tests (tests/tensorrt.rs) through the host with the
# shim and the double in place of the C-seam double (RTDBL_BACKEND=0 skips that step).
# RTDBL_SANITIZE=1 builds everything (the shim too) with AddressSanitizer + UBSan into
# target/trt-abi-double/<major>-asan/ instead (slower: about 3 minutes of compiling on 2 cores).
set -euo pipefail
build_only=0
if [[ "${1:-}" == --build-only ]]; then
    build_only=1
    shift
fi
if [[ $# -ne 2 ]]; then
    echo "usage: $0 [--build-only] TENSORRT_INCLUDE_DIR CUDA_INCLUDE_DIR" >&2
    exit 2
fi
trt_inc=$(cd "$1" && pwd)
cuda_inc=$(cd "$2" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/tests/trt_abi_double
major=$(awk '/#define (TRT|NV_TENSORRT)_MAJOR(_ENTERPRISE)? +[0-9]+/ {print $3; exit}' "$trt_inc/NvInferVersion.h")
out=$root/target/trt-abi-double/$major
cxx=${CXX:-g++}
flags=(-std=c++17 -O1 -g -Wall -Wextra -Werror -fPIC)
shim_out=
if [[ "${RTDBL_SANITIZE:-0}" == 1 ]]; then
    out=$out-asan
    cxx="$cxx -fsanitize=address,undefined -fno-omit-frame-pointer"
    shim_out=$out/libtriton_rusttrt_tensorrt.so
fi
gen=$out/gen
mkdir -p "$gen"
inc=(-I"$src" -I"$gen" -isystem "$trt_inc" -isystem "$cuda_inc")

echo "== TensorRT $major headers: $trt_inc"
# Stubs for every pure virtual method, generated from these headers.
printf '#include <NvInfer.h>\n#include <NvOnnxParser.h>\n' > "$gen/pp.cpp"
$cxx -std=c++17 -E -P -isystem "$trt_inc" -isystem "$cuda_inc" "$gen/pp.cpp" -o "$gen/pp.ii"
python3 "$src/gen_stubs.py" "$gen/pp.ii" "$gen/rtdbl_stubs.h" \
    nvinfer1::apiv::VHostMemory nvinfer1::apiv::VRuntime nvinfer1::apiv::VOptimizationProfile \
    nvinfer1::apiv::VCudaEngine nvinfer1::apiv::VExecutionContext nvinfer1::apiv::VTensor \
    nvinfer1::apiv::VNetworkDefinition nvinfer1::apiv::VTimingCache nvinfer1::apiv::VBuilderConfig \
    nvinfer1::apiv::VBuilder
python3 "$src/gen_stubs.py" "$gen/pp.ii" "$gen/rtdbl_parser_stubs.h" nvonnxparser::IParser nvonnxparser::IParserError

echo "== building the double"
$cxx "${flags[@]}" "${inc[@]}" -shared -Wl,-soname,libnvinfer.so.$major -Wl,-Bsymbolic -Wl,-z,defs \
    -o "$out/libnvinfer.so.$major" "$src/nvinfer_build.cpp" "$src/nvinfer_runtime.cpp" "$src/ort_min.cpp" -ldl -lpthread
$cxx "${flags[@]}" "${inc[@]}" -shared -Wl,-soname,libnvonnxparser.so.$major -Wl,-Bsymbolic -Wl,-z,defs \
    -o "$out/libnvonnxparser.so.$major" "$src/nvonnxparser.cpp" -L"$out" -l:libnvinfer.so.$major \
    -Wl,-rpath,'$ORIGIN'

echo "== building the shim"
shim=$(CXX="$cxx" "$root/scripts/build-trt-shim.sh" "$trt_inc" "$cuda_inc" $shim_out | tail -n 1)

echo "== building the driver"
$cxx -std=c++17 -O1 -g -Wall -Wextra -Werror -I"$root/include" -I"$src" -o "$out/trt-abi-driver" \
    "$src/driver.cpp" "$src/ort_min.cpp" -ldl -lpthread

$cxx "${flags[@]}" -isystem "$trt_inc" -isystem "$cuda_inc" -o "$out/double-selftest" "$src/double_selftest.cpp" -ldl

if [[ $build_only == 1 ]]; then
    echo "libnvinfer: $out/libnvinfer.so.$major"
    echo "libnvonnxparser: $out/libnvonnxparser.so.$major"
    echo "shim: $shim"
    exit 0
fi

if [[ -z "${ORT_DYLIB_PATH:-}" ]]; then
    echo "ORT_DYLIB_PATH is not set (eval \"\$(scripts/setup.sh)\")" >&2
    exit 2
fi
manifest=$(python3 "$src/cases_manifest.py" "$root" "$out/cases")
echo "== running the driver (the shim over the double)"
status=0
"$out/trt-abi-driver" "$shim" "$out/libnvinfer.so.$major" "$out/libnvonnxparser.so.$major" "$manifest" "$root" \
    | tee "$out/driver.log" || status=1
echo "== running the double's self-test (contracts the shim's C interface cannot reach)"
"$out/double-selftest" "$out/libnvinfer.so.$major" "$out/libnvonnxparser.so.$major" \
    "$root/model_repository/tiny_clip/1/model.onnx" | tee "$out/selftest.log" || status=1
backend_status=skipped
if [[ "${RTDBL_BACKEND:-1}" == 1 && "${RTDBL_SANITIZE:-0}" != 1 ]]; then
    echo "== running the backend over the shim over the double (tests/tensorrt.rs through the host, fake libcuda)"
    version=$(awk '/#define (TRT|NV_TENSORRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? +[0-9]+/ {print $3}' "$trt_inc/NvInferVersion.h" | head -3 | paste -sd.)
    if (cd "$root" && RUSTTRT_TEST_TRT_SHIM="$shim" RUSTTRT_TEST_TRT_LIBDIR="$out" RUSTTRT_TEST_TRT_VERSION="$version" \
        cargo test --test tensorrt -- --test-threads=2 2>&1 | tee "$out/backend.log"); then
        backend_status=$(grep -E '^test result' "$out/backend.log" | tail -1 | sed 's/test result: //')
    else
        backend_status=FAILED
        status=1
    fi
fi
echo
echo "TensorRT $major ABI double: $(grep '^SUMMARY' "$out/driver.log" | sed 's/SUMMARY: //') (driver), $(grep '^SELF-TEST' "$out/selftest.log" | sed 's/SELF-TEST: //') (self-test), backend tests: $backend_status -> $([[ $status -eq 0 ]] && echo PASS || echo FAIL)"
echo "libraries: $out/libnvinfer.so.$major $out/libnvonnxparser.so.$major; shim: $shim"
exit $status

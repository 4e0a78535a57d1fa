#!/usr/bin/env bash
# The GPU test command, run ON the GPU machine from the repository root, after the ONNX Runtime
# GPU parts were copied to /tmp/ortc (see README.md). Needs .gpu-pack/ (pack-bins.sh and
# ort-gpu-pack.sh pack). Runs: the cuda layer's self test, the GPU integration tests (GPU vs
# reference outputs, every memory-type combination, CUDA-graph replay, memory growth over 10k
# requests) and, when torch+timm can export it, the FP16 guard on the real-sized ViT-B/32.
set -uo pipefail
eval "$(bash .gpu-pack/ort-gpu-pack.sh assemble .gpu-pack)"
export RUSTTRT_SKIP_CDYLIB_BUILD=1 RUST_BACKTRACE=1
out=${OUT:-/tmp/rusttrt-gpu-out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
status=0
echo "== cuda layer self test"
.gpu-pack/bin/deps/lib --ignored --exact cuda::selftest::tests::gpu_self_test_report --nocapture 2>&1 | tee "$out/selftest.log" | tail -25 || status=1
echo "== ViT-B/32 export"
if [ ! -f /tmp/vit/vit_b32_fp32.onnx ]; then
  python3 tools/vit_reference.py export /tmp/vit > "$out/export.log" 2>&1 || echo "export failed (see export.log)"
fi
[ -f /tmp/vit/vit_b32_fp32.onnx ] && export RUSTTRT_VIT_ONNX=/tmp/vit/vit_b32_fp32.onnx
echo "== GPU integration tests"
.gpu-pack/bin/deps/gpu --ignored --test-threads=1 --nocapture ${GPU_TESTS:-} 2>&1 | tee "$out/gpu-tests.log" | grep -E "^test |test result|panicked|over 10k|ViT|guard|cosine|device memory|shared" || status=1
grep -q "test result: ok" "$out/gpu-tests.log" || status=1
exit $status

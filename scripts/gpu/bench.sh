#!/usr/bin/env bash
# The ViT-B/32 benchmark, run ON the GPU machine in one command (after test.sh or with the ONNX
# Runtime parts in /tmp/ortc): our backend through the host (FP32 and FP16; inputs in pinned host
# memory and in GPU memory; batch 1, 8, 32, 128, 256; the same engine run directly beside it),
# then tools/vit_reference.py bench (PyTorch eager / CUDA graph, ONNX Runtime CUDA via Python) in
# the same run. JSON results go to $OUT; tools/bench_report.py turns them into docs/benchmarks.md
# rows and the plot.
set -uo pipefail
eval "$(bash .gpu-pack/ort-gpu-pack.sh assemble .gpu-pack)"
out=${OUT:-/tmp/rusttrt-gpu-out}; mkdir -p "$out"
iters=${ITERS:-40}
[ -f /tmp/vit/vit_b32_fp32.onnx ] || python3 tools/vit_reference.py export /tmp/vit > "$out/export.log" 2>&1
repo=/tmp/vit-repo; rm -rf "$repo"
for v in FP32 FP16 FP16-graphs; do
  p=${v%-graphs}
  m=vit_$(echo $v | tr A-Z- a-z_)
  mkdir -p "$repo/$m/1" && ln -sf /tmp/vit/vit_b32_fp32.onnx "$repo/$m/1/model.onnx"
  sed -e '/^name:/d' -e "s/\"FP16\"/\"$p\"/" model_repository/clip_vit_b32/config.pbtxt > "$repo/$m/config.pbtxt"
  # One instance, requests of the measured batch run alone (no queue delay).
  sed -i 's/max_queue_delay_microseconds: 1000/max_queue_delay_microseconds: 0/' "$repo/$m/config.pbtxt"
  if [ "$v" = FP16-graphs ]; then
    printf 'parameters { key: "cuda_graph_batch_sizes" value: { string_value: "1,8,32,128,256" } }\n' >>"$repo/$m/config.pbtxt"
  fi
done
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/bench-gpu.txt"
for m in ${MODELS:-vit_fp16_graphs vit_fp16 vit_fp32}; do
  .gpu-pack/bin/rusttrt bench --model-repository "$repo" --model $m --backend-lib .gpu-pack/bin/libtriton_rusttrt.so \
    --input-memory pinned,gpu --batches 1,8,32,128,256 --iters "$iters" --warmup 5 --direct --json "$out/$m.json" 2>&1 | tee "$out/$m.log"
done
[ -n "${NO_REFERENCE:-}" ] || python3 tools/vit_reference.py bench --json "$out/reference.json" 2>&1 | tee "$out/reference.log" | grep -E "ms .* img/s"

#!/usr/bin/env bash
# Benchmark (not a test): the backend's overhead per request through the host with the bundled
# tiny model at batch 1 and 64, as a ratio to the same ONNX Runtime session run directly in the
# same process, in the same run. One instance, no queue delay, inputs in host memory, one ONNX
# Runtime thread.
# Results: docs/benchmarks.md. Usage: scripts/bench-overhead.sh [extra `rusttrt bench` args]
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
cargo build --release --workspace --locked
repo=$(mktemp -d)
trap 'rm -rf "$repo"' EXIT
cp -r model_repository/tiny_clip "$repo/"
sed -i -e 's/max_batch_size: 32/max_batch_size: 64/' -e 's/count: 2/count: 1/' \
  -e 's/preferred_batch_size: \[ 4, 8 \]/preferred_batch_size: [ 64 ]/' \
  -e 's/max_queue_delay_microseconds: 2000/max_queue_delay_microseconds: 0/' "$repo/tiny_clip/config.pbtxt"
# One ONNX Runtime thread in both sessions: two spinning thread pools on a small machine would
# measure each other rather than the backend.
printf 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n' >>"$repo/tiny_clip/config.pbtxt"
target/release/rusttrt bench --model-repository "$repo" --model tiny_clip \
  --backend-lib target/release/libtriton_rusttrt.so --batches 1,64 --iters 300 --warmup 30 \
  --direct "$@"

#!/usr/bin/env bash
# The main job on the bundled model: builds libtriton_rusttrt.so and the `rusttrt` command
# (release), loads model_repository/tiny_clip through the host, sends batched requests, prints
# the outputs and the throughput / latency summary. Extra arguments go to `rusttrt run`.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
cargo build --release --workspace --locked
exec target/release/rusttrt run --model-repository model_repository --model tiny_clip \
  --backend-lib target/release/libtriton_rusttrt.so --batch 4 --requests 200 --concurrency 4 "$@"

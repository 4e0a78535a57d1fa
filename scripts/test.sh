#!/usr/bin/env bash
# The test command (CI runs it through .ci/run): installs what it needs, checks formatting and
# lints, verifies the committed models against their generator, compile-checks the TensorRT shim
# where headers are present, and runs every test through the host on the built .so.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
export RUST_BACKTRACE=1
echo "== rustfmt"; cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== committed models match tools/gen_models.py"; python3 tools/gen_models.py --check
if [ -n "${TENSORRT_INCLUDE_DIR:-}" ] && [ -f scripts/check-trt-shim.sh ]; then
  echo "== TensorRT shim compile check against $TENSORRT_INCLUDE_DIR"
  bash scripts/check-trt-shim.sh "$TENSORRT_INCLUDE_DIR" ${CUDA_INCLUDE_DIR:-}
fi
echo "== build (the .so the tests load)"; cargo build --workspace --locked
echo "== tests"; cargo test --workspace --locked -- --test-threads=2

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
echo "== tests"
log=$(mktemp)
set +e
cargo test --workspace --locked -- --test-threads=2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary, the last often a
# doc-test binary with nothing in it).
python3 - "$log" <<'PY'
import re, sys
p = f = i = 0
for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", open(sys.argv[1]).read()):
    p += int(m[1]); f += int(m[2]); i += int(m[3])
print(f"{p} passed, {f} failed, {i} skipped")
PY
rm -f "$log"
exit "$status"

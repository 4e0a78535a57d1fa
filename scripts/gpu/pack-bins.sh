#!/usr/bin/env bash
# Builds (release) what the GPU machine runs and lays it out in .gpu-pack/bin (git-ignored):
#   bin/libtriton_rusttrt.so, bin/rusttrt          the backend and the command
#   bin/deps/gpu, bin/deps/lib                     the GPU integration tests, the library's unit tests
# The test binaries find the .so in bin/ (their parent directory), as under target/release.
# ONNX Runtime GPU is packed separately: scripts/gpu/ort-gpu-pack.sh pack .gpu-pack
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
out=.gpu-pack/bin
rm -rf "$out" && mkdir -p "$out/deps"
cargo build --release --workspace --locked
json=$(cargo test --release --locked -p triton-rusttrt --no-run --message-format=json 2>/dev/null)
pick() {
  python3 -c '
import json, sys
name, kind = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] and m["target"]["name"] == name and kind in m["target"]["kind"]:
        print(m["executable"])' "$1" "$2" <<<"$json" | tail -1
}
cp "$(pick gpu test)" "$out/deps/gpu"
cp "$(pick triton_rusttrt rlib)" "$out/deps/lib"
cp target/release/libtriton_rusttrt.so target/release/rusttrt "$out/"
strip --strip-debug "$out"/deps/* "$out"/libtriton_rusttrt.so "$out"/rusttrt
du -sh "$out"/* "$out"/deps/*

#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh machine (Rust comes with the machine):
# the Python packages of tools/requirements.txt (onnx for the model generator, onnxruntime for
# its libonnxruntime.so, the CPU runtime the tests load), and prints `export ORT_DYLIB_PATH=...`.
# Usage: eval "$(scripts/setup.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -r tools/requirements.txt >&2
lib=$(python3 - <<'PY'
import glob, os, onnxruntime
d = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
libs = sorted(glob.glob(os.path.join(d, "libonnxruntime.so.*")))
print(libs[-1] if libs else "")
PY
)
[ -n "$lib" ] || { echo "echo 'libonnxruntime.so not found in the onnxruntime package' >&2; false"; exit 0; }
echo "export ORT_DYLIB_PATH=$lib"

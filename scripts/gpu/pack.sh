#!/usr/bin/env bash
# Prepare .gpu-pack/ (git-ignored) for the GPU machine, which has CUDA 13 and a driver but no Rust,
# no ONNX Runtime GPU build and no network. Run from anywhere inside the repository:
#
#   scripts/gpu/pack.sh [--no-ort] [--debug] [DIR]
#
# DIR (default .gpu-pack at the repository root) receives:
#   rusttrt-lib-tests   the crate's unit tests (release, stripped), GPU tests included but #[ignore]d:
#                       run them there with --ignored (see scripts/gpu/README.md)
#   ortgpu.part_*, zstd, ort-gpu-pack.sh
#                       ONNX Runtime GPU 1.31.1 (CUDA 13 build), compressed in 60 MB parts, made by
#                       scripts/gpu/ort-gpu-pack.sh (skipped with --no-ort)
#   MANIFEST            what was packed, from which commit, with sizes and sha256 sums
set -euo pipefail

ort=1
profile=release
dir=
for arg in "$@"; do
  case "$arg" in
  --no-ort) ort=0 ;;
  --debug) profile=debug ;;
  -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
  -*) echo "pack.sh: unknown option $arg" >&2; exit 2 ;;
  *) dir=$arg ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
cd "$root"
dir=${dir:-.gpu-pack}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

if ! git check-ignore -q "$dir/x" 2>/dev/null; then
  echo "pack.sh: $dir is not ignored by git; pack into an ignored folder (e.g. .gpu-pack)" >&2
  exit 2
fi

# 1. The unit-test binary of the library (no CUDA needed to build it: libcuda is opened at run time).
cargo_args=(test --lib --no-run --message-format=json)
[ "$profile" = release ] && cargo_args+=(--release)
echo "building the library's test binary ($profile)..." >&2
exe=$(cargo "${cargo_args[@]}" |
  python3 -c '
import json, sys
exes = [m["executable"] for m in map(json.loads, sys.stdin)
        if m.get("reason") == "compiler-artifact" and m.get("executable")
        and m["target"]["name"] == "triton_rusttrt" and m["profile"]["test"]]
if len(exes) != 1:
    sys.exit("expected one test executable of the triton_rusttrt library, found %r" % exes)
print(exes[0])')
cp "$exe" "$dir/rusttrt-lib-tests"
strip --strip-debug "$dir/rusttrt-lib-tests"
chmod +x "$dir/rusttrt-lib-tests"

# 2. ONNX Runtime GPU, through the project's shared tool (a copy lives beside this script).
if [ "$ort" = 1 ]; then
  bash "$here/ort-gpu-pack.sh" pack "$dir"
fi

# 3. Manifest.
{
  echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "profile: $profile; onnxruntime-gpu: $([ "$ort" = 1 ] && echo 1.31.1 || echo 'not packed')"
  (cd "$dir" && for f in *; do [ "$f" = MANIFEST ] || printf '%10d  %s  %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)" "$f"; done)
} >"$dir/MANIFEST"
cat "$dir/MANIFEST"
echo "next: see scripts/gpu/README.md (carry $dir/rusttrt-lib-tests; ORT parts one transfer each)" >&2

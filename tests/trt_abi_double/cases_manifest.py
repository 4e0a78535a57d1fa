#!/usr/bin/env python3
"""Writes the expected-output cases of the test models as raw files plus a line manifest that
the ABI-double driver (driver.cpp) reads: no JSON parser needed in C++.

usage: cases_manifest.py REPO_ROOT OUT_DIR   (prints the manifest path)

Manifest lines:
  model <name> <onnx path> <atol> <rtol>
  case <name>
  in|out <tensor> <onnx type> <rank> <d0> ... <file>
  end
"""
import base64
import json
import os
import sys

TYPES = {"FP32": 1, "UINT8": 2, "INT8": 3, "INT32": 6, "INT64": 7, "BOOL": 9, "FP16": 10, "BF16": 16}


def main():
    root, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    sources = [("tiny_clip", os.path.join(root, "tests/data/tiny_clip_cases.json"))]
    models = os.path.join(root, "tests/data/models")
    for m in sorted(os.listdir(models)):
        p = os.path.join(models, m, "cases.json")
        if os.path.exists(p):
            sources.append((m, p))
    lines = []
    for name, path in sources:
        j = json.load(open(path))
        if any(t["datatype"] not in TYPES
               for c in j["cases"] for t in c["inputs"] + c["outputs"]):
            # STRING (BYTES) models: TensorRT has no strings (the driver checks that the
            # parser refuses string_input; the backend refuses them before TensorRT).
            continue
        tol = j["tolerance"]
        lines.append(f"model {name} {os.path.join(root, j['model_file'])} {tol['atol']} {tol['rtol']}")
        for c in j["cases"]:
            lines.append(f"case {c['name']}")
            for kind, key in (("in", "inputs"), ("out", "outputs")):
                for t in c[key]:
                    f = os.path.join(out, f"{name}.{c['name']}.{kind}.{t['name']}.bin")
                    with open(f, "wb") as fh:
                        fh.write(base64.b64decode(t["data_b64"]))
                    shape = " ".join(str(d) for d in t["shape"])
                    lines.append(f"{kind} {t['name']} {TYPES[t['datatype']]} {len(t['shape'])} {shape} {f}")
            lines.append("end")
    manifest = os.path.join(out, "manifest.txt")
    with open(manifest, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(manifest)


if __name__ == "__main__":
    main()

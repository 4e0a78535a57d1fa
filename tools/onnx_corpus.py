#!/usr/bin/env python3
"""ONNX's backend test corpus, as shipped by the installed `onnx` package, laid out for the
corpus sweep test (tests/corpus.rs), with ONNX Runtime's own verdict on every case.

    python3 tools/onnx_corpus.py --out DIR [--categories node,simple,...] [--jobs N]

Categories: `node` (from onnx/backend/test/data/node when the package ships it, else generated
from the package's own node case definitions, onnx.backend.test.case.node, which is what that
directory is made from), `pytorch-converted`, `pytorch-operator`, `simple`, `light` (the light
models get their inputs the way ONNX's backend test runner makes them: arange / n, float32;
expected outputs are the shipped light_*_output_*.pb). A category the package lacks is listed
with no cases.

For every data set of every case it writes the inputs and expected outputs as raw little-endian
bytes (`.bin`) and records, in DIR/manifest.json:
  - the Triton data type name and shape of each tensor,
  - `servable`: null, or why Triton cannot carry the case at all (a non-tensor graph input or
    output: sequence / map / optional; an element type Triton has no data type for),
  - `string`: whether a graph input or output is a STRING tensor,
  - `ort`: "right" when ONNX Runtime (python, CPU), run directly on the model with the shipped
    inputs, matches the shipped outputs under the tolerance ONNX's backend tests use
    (onnx.backend.test.runner.Runner.assert_similar_outputs, rtol/atol of the case, 1e-3 / 1e-7
    by default), else "wrong: <first line>" or "error: <first line>".
"""
import argparse
import glob
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# ONNX element type -> Triton data type name (the types Triton can carry).
TRITON = {
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "UINT8",
    TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64",
    TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.FLOAT: "FP32",
    TensorProto.DOUBLE: "FP64",
    TensorProto.STRING: "BYTES",
}

CATEGORIES = ["node", "pytorch-converted", "pytorch-operator", "simple", "light"]
DATA_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def first_line(e):
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


def served_inputs(model):
    inits = {i.name for i in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def why_unservable(model):
    """None when every served graph input/output is a tensor of a type Triton carries."""
    for kind, vis in (("input", served_inputs(model)), ("output", model.graph.output)):
        for vi in vis:
            which = vi.type.WhichOneof("value")
            if which != "tensor_type":
                return f"graph {kind} '{vi.name}' is a {which or 'value without type'}"
            et = vi.type.tensor_type.elem_type
            if et not in TRITON:
                name = TensorProto.DataType.Name(et) if et in TensorProto.DataType.values() else et
                return f"graph {kind} '{vi.name}' has element type {name}, which Triton has no data type for"
    return None


def has_string(model):
    return any(
        vi.type.WhichOneof("value") == "tensor_type"
        and vi.type.tensor_type.elem_type == TensorProto.STRING
        for vi in list(served_inputs(model)) + list(model.graph.output)
    )


def to_numpy(t):
    if isinstance(t, np.ndarray):
        return t
    if isinstance(t, np.generic):
        return np.array(t)
    if isinstance(t, TensorProto):
        return numpy_helper.to_array(t)
    return t  # sequences / optionals: left as they are (only ORT's verdict uses them)


def load_pb(path, type_proto):
    """Reads input_N.pb / output_N.pb the way ONNX's runner does (tensor, sequence, optional)."""
    with open(path, "rb") as f:
        data = f.read()
    which = type_proto.WhichOneof("value") if type_proto is not None else "tensor_type"
    if which == "sequence_type":
        p = onnx.SequenceProto()
        p.ParseFromString(data)
        return numpy_helper.to_list(p), None
    if which == "optional_type":
        p = onnx.OptionalProto()
        p.ParseFromString(data)
        return numpy_helper.to_optional(p), None
    if which == "map_type":
        p = onnx.MapProto()
        p.ParseFromString(data)
        return numpy_helper.to_dict(p), None
    t = TensorProto()
    t.ParseFromString(data)
    return numpy_helper.to_array(t), t.name


def raw_bytes(arr):
    if arr.dtype == object:
        # Triton's BYTES serialization: 4-byte little-endian length, then the bytes.
        out = bytearray()
        for s in arr.reshape(-1):
            b = s.encode() if isinstance(s, str) else bytes(s)
            out += len(b).to_bytes(4, "little") + b
        return bytes(out)
    if arr.dtype.byteorder == ">":
        arr = arr.byteswap().view(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr).tobytes()


def triton_type(arr):
    if arr.dtype == object:
        return "BYTES"
    if arr.dtype.name == "bfloat16":
        return "BF16"
    names = {
        np.bool_: "BOOL", np.uint8: "UINT8", np.uint16: "UINT16", np.uint32: "UINT32",
        np.uint64: "UINT64", np.int8: "INT8", np.int16: "INT16", np.int32: "INT32",
        np.int64: "INT64", np.float16: "FP16", np.float32: "FP32", np.float64: "FP64",
    }
    for k, v in names.items():
        if arr.dtype == k:
            return v
    return None


# --------------------------------------------------------------------------------------------
# Collecting the cases: (category, name, model path or ModelProto, [(inputs, outputs)], rtol, atol)


def on_disk_cases(category):
    kind_dir = os.path.join(DATA_DIR, category)
    if not os.path.isdir(kind_dir):
        return []
    out = []
    for name in sorted(os.listdir(kind_dir)):
        d = os.path.join(kind_dir, name)
        model_path = os.path.join(d, "model.onnx")
        if not os.path.isfile(model_path):
            continue
        rtol, atol = 1e-3, 1e-7
        if os.path.exists(os.path.join(d, "data.json")):
            with open(os.path.join(d, "data.json")) as f:
                data = json.load(f)
            rtol, atol = data.get("rtol", rtol), data.get("atol", atol)
        out.append((category, name, model_path, ("dir", d), rtol, atol))
    return out


def light_cases():
    kind_dir = os.path.join(DATA_DIR, "light")
    if not os.path.isdir(kind_dir):
        return []
    out = []
    for model_path in sorted(glob.glob(os.path.join(kind_dir, "light_*.onnx"))):
        name = "test_" + os.path.basename(model_path)[len("light_"):-len(".onnx")]
        out.append(("light", name, model_path, ("light", model_path), 1e-3, 1e-7))
    return out


def generated_node_cases():
    from onnx.backend.test.loader import load_model_tests

    out = []
    for t in load_model_tests(kind="node"):
        out.append(("node", t.name, t.model, ("sets", t.data_sets), t.rtol, t.atol))
    return out


def collect(categories):
    cases = []
    for c in categories:
        if c == "node" and not os.path.isdir(os.path.join(DATA_DIR, "node")):
            cases += generated_node_cases()
        elif c == "light":
            cases += light_cases()
        else:
            cases += on_disk_cases(c)
    return cases


def data_sets(model, source):
    kind, what = source
    ins = served_inputs(model)
    if kind == "sets":
        return [([to_numpy(x) for x in i], [to_numpy(x) for x in o]) for i, o in what]
    if kind == "light":
        from onnx.backend.test.runner import Runner

        prefix = os.path.splitext(what)[0]
        inputs = [Runner.generate_dummy_data(vi, seed=0, name="", random=False) for vi in ins]
        outputs = []
        for i, vi in enumerate(model.graph.output):
            p = f"{prefix}_output_{i}.pb"
            if not os.path.exists(p):
                return []
            outputs.append(load_pb(p, vi.type)[0])
        return [(inputs, outputs)]
    sets = []
    for d in sorted(glob.glob(os.path.join(what, "test_data_set*"))):
        n_in = len(glob.glob(os.path.join(d, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(d, "output_*.pb")))
        inputs = []
        for i in range(n_in):
            tp = model.graph.input[i].type if i < len(model.graph.input) else None
            inputs.append(load_pb(os.path.join(d, f"input_{i}.pb"), tp))
        outputs = []
        for i in range(n_out):
            tp = model.graph.output[i].type if i < len(model.graph.output) else None
            outputs.append(load_pb(os.path.join(d, f"output_{i}.pb"), tp)[0])
        sets.append((inputs, outputs))
    return sets


def feed_names(model, inputs):
    """Names of the shipped inputs: the tensor's own name when it is a served input, else the
    served inputs in order (as ONNX's runner feeds them)."""
    served = [vi.name for vi in served_inputs(model)]
    names = []
    for k, x in enumerate(inputs):
        own = x[1] if isinstance(x, tuple) else None
        if own and own in served and own not in names:
            names.append(own)
        elif k < len(served):
            names.append(served[k])
        else:
            names.append(None)
    return names


def ort_verdict(model_bytes, feeds, expected, rtol, atol):
    import onnxruntime as ort
    from onnx.backend.test.runner import Runner

    try:
        so = ort.SessionOptions()
        sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        outs = sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001
        return "error: " + first_line(e)
    try:
        Runner.assert_similar_outputs(expected, outs, rtol=rtol, atol=atol)
    except Exception as e:  # noqa: BLE001
        return "wrong: " + first_line(e)
    return "right"


def tensor_entry(out_dir, rel, name, arr):
    os.makedirs(os.path.dirname(os.path.join(out_dir, rel)), exist_ok=True)
    with open(os.path.join(out_dir, rel), "wb") as f:
        f.write(raw_bytes(arr))
    return {"name": name, "datatype": triton_type(arr), "shape": list(arr.shape), "file": rel}


def prepare(job):
    idx, (category, name, model_src, source, rtol, atol), out_dir = job
    rel_dir = f"cases/{idx:05d}"
    entry = {"id": f"{category}/{name}", "category": category, "name": name,
             "rtol": rtol, "atol": atol, "data_sets": []}
    try:
        if isinstance(model_src, str):
            model = onnx.load(model_src)
            entry["model"] = os.path.abspath(model_src)
            model_bytes = open(model_src, "rb").read()
        else:
            model = model_src
            model_bytes = model.SerializeToString()
            p = os.path.join(out_dir, rel_dir, "model.onnx")
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(model_bytes)
            entry["model"] = os.path.abspath(p)
        entry["servable"] = why_unservable(model)
        entry["string"] = has_string(model)
        sets = data_sets(model, source)
    except Exception as e:  # noqa: BLE001
        entry.update(servable=f"the corpus case cannot be read: {first_line(e)}", string=False,
                     ort="error: " + first_line(e))
        return entry
    verdicts = []
    for k, (inputs, outputs) in enumerate(sets):
        names = feed_names(model, inputs)
        arrays = [x[0] if isinstance(x, tuple) else x for x in inputs]
        feeds = {n: a for n, a in zip(names, arrays) if n is not None}
        verdicts.append(ort_verdict(model_bytes, feeds, outputs, rtol, atol))
        ds = {"inputs": [], "outputs": []}
        if entry["servable"] is None:
            for n, a in zip(names, arrays):
                ds["inputs"].append(tensor_entry(out_dir, f"{rel_dir}/{k}/in_{len(ds['inputs'])}.bin", n, a))
            for i, a in enumerate(outputs):
                oname = model.graph.output[i].name if i < len(model.graph.output) else None
                ds["outputs"].append(tensor_entry(out_dir, f"{rel_dir}/{k}/out_{i}.bin", oname, a))
        entry["data_sets"].append(ds)
    if not verdicts:
        entry["ort"] = "error: the case ships no data set"
    else:
        bad = [v for v in verdicts if v != "right"]
        entry["ort"] = bad[0] if bad else "right"
    return entry


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    import onnxruntime

    t0 = time.time()
    cats = [c for c in args.categories.split(",") if c]
    cases = collect(cats)
    os.makedirs(args.out, exist_ok=True)
    jobs = [(i, c, args.out) for i, c in enumerate(cases)]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        entries = list(ex.map(prepare, jobs, chunksize=16))
    present = sorted({e["category"] for e in entries})
    manifest = {
        "format": "rusttrt-onnx-corpus-v1",
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "data_dir": DATA_DIR,
        "categories": cats,
        "categories_present": present,
        "cases": entries,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    right = sum(e["ort"] == "right" for e in entries)
    print(f"{len(entries)} cases ({', '.join(present)}); ONNX Runtime {onnxruntime.__version__} "
          f"right on {right}; {time.time() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()

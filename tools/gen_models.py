#!/usr/bin/env python3
"""Deterministic generator of the bundled model and of the test models.

    python3 tools/gen_models.py            write every generated file into the repository
    python3 tools/gen_models.py --check    regenerate into a temp dir and compare byte-for-byte
                                           with the committed files (exit 1 on any difference)
    python3 tools/gen_models.py --out DIR  write into DIR instead of the repository root

Every model is built with onnx.helper (IR version 8, opset 17, stamped explicitly; `strings`: 9 and
19, for Equal on strings), weights come
from a seeded numpy RNG, files are written with onnx.save. Expected outputs are computed with
onnx.reference.ReferenceEvaluator (never ONNX Runtime), in float64 where the model is floating
point, then rounded to the served type. ONNX Runtime (if importable) is used only afterwards, to
verify that it loads and runs each model and agrees with the reference within the stated
tolerance. See docs/models.md for what each model is and for the format of the expected outputs.
"""
import argparse
import base64
import filecmp
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

IR_VERSION = 8
OPSET = 17
PRODUCER = "rusttrt-gen_models"
PRODUCER_VERSION = "1"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Files this script owns, relative to the output root (used by --check).
GENERATED = []

# ONNX element type -> (Triton datatype name, numpy dtype of the raw little-endian bytes)
TRITON_TYPES = {
    TensorProto.BOOL: ("BOOL", np.bool_),
    TensorProto.UINT8: ("UINT8", np.uint8),
    TensorProto.UINT16: ("UINT16", np.uint16),
    TensorProto.UINT32: ("UINT32", np.uint32),
    TensorProto.UINT64: ("UINT64", np.uint64),
    TensorProto.INT8: ("INT8", np.int8),
    TensorProto.INT16: ("INT16", np.int16),
    TensorProto.INT32: ("INT32", np.int32),
    TensorProto.INT64: ("INT64", np.int64),
    TensorProto.FLOAT16: ("FP16", np.float16),
    TensorProto.BFLOAT16: ("BF16", None),  # numpy has no bfloat16; ml_dtypes is used for checks
    TensorProto.FLOAT: ("FP32", np.float32),
    TensorProto.DOUBLE: ("FP64", np.float64),
}


# --------------------------------------------------------------------------------------------
# helpers


def make_model(graph):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def write_bytes(root, rel, data):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    GENERATED.append(rel)


def save_model(root, rel, model, external_data=None):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if external_data is None:
        onnx.save(model, path)
    else:
        data_path = os.path.join(os.path.dirname(path), external_data)
        if os.path.exists(data_path):
            os.remove(data_path)  # onnx.save appends to an existing external data file
        onnx.save(
            model,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=external_data,
            size_threshold=0,
            convert_attribute=False,
        )
        os.chmod(data_path, 0o644)
        GENERATED.append(os.path.join(os.path.dirname(rel), external_data))
    GENERATED.append(rel)
    return path


def le_bytes(arr):
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.byteswap().view(arr.dtype.newbyteorder("<"))
    return arr.tobytes()


def tensor_json(name, datatype, arr):
    return {
        "name": name,
        "datatype": datatype,
        "shape": [int(d) for d in arr.shape],
        "data_b64": base64.b64encode(le_bytes(arr)).decode("ascii"),
    }


def write_cases(root, rel, model_name, model_file, reference, tolerance, cases,
                tolerance_fp16=None):
    doc = {
        "format": "rusttrt-expected-v1",
        "model": model_name,
        "model_file": model_file,
        "generator": "tools/gen_models.py",
        "reference": reference,
        "tolerance": tolerance,
    }
    if tolerance_fp16 is not None:
        doc["tolerance_fp16"] = tolerance_fp16
    doc["cases"] = cases
    text = json.dumps(doc, indent=1, sort_keys=False) + "\n"
    write_bytes(root, rel, text.encode("utf-8"))


def reference_run(model, feeds):
    """Run the ONNX reference implementation (pure numpy)."""
    sess = ReferenceEvaluator(model)
    names = [o.name for o in model.graph.output]
    return dict(zip(names, sess.run(None, feeds)))


def to_float64(model):
    """Same graph and weights with every float32 tensor / value info turned into float64."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init).astype(np.float64)
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                arr = numpy_helper.to_array(attr.t).astype(np.float64)
                attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.DOUBLE
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    onnx.checker.check_model(m, full_check=True)
    return m


def float_reference(model, feeds):
    """Evaluate `model` in float64 (weights widened exactly), round outputs to float32."""
    m64 = to_float64(model)
    feeds64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in feeds.items()}
    out = reference_run(m64, feeds64)
    return {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# tiny_clip: a small CLIP-ViT-like image encoder (op types of OpenCLIP's ViT-B/32 visual tower)

CLIP_SEED = 20261127
CLIP = dict(image=32, patch=8, width=64, heads=4, layers=2, mlp=256, embed=32, eps=1e-5)


def build_tiny_clip():
    c = CLIP
    rng = np.random.default_rng(CLIP_SEED)
    grid = c["image"] // c["patch"]
    tokens = grid * grid + 1
    w, h = c["width"], c["heads"]
    hd = w // h
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def weight(name, shape, std):
        return const(name, (rng.standard_normal(shape) * std).astype(np.float32))

    def ln_params(prefix):
        g = const(prefix + ".weight", (1.0 + 0.1 * rng.standard_normal(w)).astype(np.float32))
        b = const(prefix + ".bias", (0.05 * rng.standard_normal(w)).astype(np.float32))
        return g, b

    def node(op, ins, outs, name, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=name, **attrs))
        return outs[0]

    def layer_norm(x, prefix):
        g, b = ln_params(prefix)
        return node("LayerNormalization", [x, g, b], [prefix + ".out"], prefix, axis=-1,
                    epsilon=c["eps"])

    f32 = lambda v: np.array(v, dtype=np.float32)
    i64 = lambda v: np.array(v, dtype=np.int64)

    # patch embedding: Conv (no bias, as in CLIP), flatten to tokens
    conv_w = weight("conv1.weight", (w, 3, c["patch"], c["patch"]),
                    1.0 / np.sqrt(3 * c["patch"] ** 2))
    x = node("Conv", ["input", conv_w], ["patches"], "conv1",
             kernel_shape=[c["patch"], c["patch"]], strides=[c["patch"], c["patch"]])
    x = node("Reshape", [x, const("shape_tokens_t", i64([0, w, -1]))], ["patches_flat"],
             "patches_flat")
    x = node("Transpose", [x], ["patch_tokens"], "patch_tokens", perm=[0, 2, 1])

    # class token: Expand to [N,1,W] using the batch size read from the graph
    cls = weight("class_embedding", (1, 1, w), 0.5)
    node("Shape", [x], ["tok_shape"], "tok_shape")
    node("Slice", ["tok_shape", const("zero1", i64([0])), const("one1", i64([1]))],
         ["batch_dim"], "batch_dim")
    node("Concat", ["batch_dim", const("cls_tail", i64([1, w]))], ["cls_shape"], "cls_shape",
         axis=0)
    node("Expand", [cls, "cls_shape"], ["cls_tokens"], "cls_tokens")
    x = node("Concat", ["cls_tokens", x], ["tokens"], "tokens", axis=1)
    pos = weight("positional_embedding", (tokens, w), 0.5)
    x = node("Add", [x, pos], ["tokens_pos"], "add_pos")
    x = layer_norm(x, "ln_pre")

    inv_sqrt2 = const("inv_sqrt2", f32(1.0 / np.sqrt(2.0)))
    half = const("half", f32(0.5))
    one = const("one", f32(1.0))
    scale = const("attn_scale", f32(1.0 / np.sqrt(hd)))
    head_shape = const("head_shape", i64([0, 0, h, hd]))
    merge_shape = const("merge_shape", i64([0, 0, w]))
    flat2d = const("flat2d", i64([-1, w]))
    unflat = const("unflat", i64([-1, tokens, w]))
    split_sizes = const("qkv_split", i64([w, w, w]))

    for i in range(c["layers"]):
        p = f"blocks.{i}"
        # --- attention
        y = layer_norm(x, p + ".ln_1")
        wqkv = weight(p + ".attn.in_proj_weight_t", (w, 3 * w), 1.0 / np.sqrt(w))
        bqkv = weight(p + ".attn.in_proj_bias", (3 * w,), 0.02)
        y = node("MatMul", [y, wqkv], [p + ".qkv_mm"], p + ".qkv_mm")
        y = node("Add", [y, bqkv], [p + ".qkv"], p + ".qkv")
        node("Split", [y, split_sizes], [p + ".q", p + ".k", p + ".v"], p + ".split", axis=-1)
        for t in "qkv":
            node("Reshape", [f"{p}.{t}", head_shape], [f"{p}.{t}_h"], f"{p}.{t}_h")
        q = node("Transpose", [p + ".q_h"], [p + ".q_t"], p + ".q_t", perm=[0, 2, 1, 3])
        k = node("Transpose", [p + ".k_h"], [p + ".k_t"], p + ".k_t", perm=[0, 2, 3, 1])
        v = node("Transpose", [p + ".v_h"], [p + ".v_t"], p + ".v_t", perm=[0, 2, 1, 3])
        s = node("MatMul", [q, k], [p + ".scores"], p + ".scores")
        s = node("Mul", [s, scale], [p + ".scores_scaled"], p + ".scores_scaled")
        s = node("Softmax", [s], [p + ".probs"], p + ".probs", axis=-1)
        a = node("MatMul", [s, v], [p + ".ctx"], p + ".ctx")
        a = node("Transpose", [a], [p + ".ctx_t"], p + ".ctx_t", perm=[0, 2, 1, 3])
        a = node("Reshape", [a, merge_shape], [p + ".ctx_m"], p + ".ctx_m")
        # out projection as Gemm on the flattened tokens (as torch exports nn.Linear on 2-D)
        a = node("Reshape", [a, flat2d], [p + ".ctx_2d"], p + ".ctx_2d")
        wo = weight(p + ".attn.out_proj.weight", (w, w), 1.0 / np.sqrt(w))
        bo = weight(p + ".attn.out_proj.bias", (w,), 0.02)
        a = node("Gemm", [a, wo, bo], [p + ".attn_out_2d"], p + ".out_proj", transB=1)
        a = node("Reshape", [a, unflat], [p + ".attn_out"], p + ".attn_out")
        x = node("Add", [x, a], [p + ".res1"], p + ".res1")
        # --- MLP with erf GELU
        y = layer_norm(x, p + ".ln_2")
        w1 = weight(p + ".mlp.c_fc.weight_t", (w, c["mlp"]), 1.0 / np.sqrt(w))
        b1 = weight(p + ".mlp.c_fc.bias", (c["mlp"],), 0.02)
        y = node("MatMul", [y, w1], [p + ".fc1_mm"], p + ".fc1_mm")
        y = node("Add", [y, b1], [p + ".fc1"], p + ".fc1")
        g = node("Mul", [y, inv_sqrt2], [p + ".gelu_div"], p + ".gelu_div")
        g = node("Erf", [g], [p + ".gelu_erf"], p + ".gelu_erf")
        g = node("Add", [g, one], [p + ".gelu_add"], p + ".gelu_add")
        g = node("Mul", [y, g], [p + ".gelu_mul"], p + ".gelu_mul")
        y = node("Mul", [g, half], [p + ".gelu"], p + ".gelu")
        w2 = weight(p + ".mlp.c_proj.weight_t", (c["mlp"], w), 1.0 / np.sqrt(c["mlp"]))
        b2 = weight(p + ".mlp.c_proj.bias", (w,), 0.02)
        y = node("MatMul", [y, w2], [p + ".fc2_mm"], p + ".fc2_mm")
        y = node("Add", [y, b2], [p + ".fc2"], p + ".fc2")
        x = node("Add", [x, y], [p + ".res2"], p + ".res2")

    x = layer_norm(x, "ln_post")
    x = node("Gather", [x, const("cls_index", i64(0))], ["pooled"], "pool_cls", axis=1)
    proj = weight("proj", (w, c["embed"]), 1.0 / np.sqrt(w))
    node("MatMul", [x, proj], ["embedding"], "proj")

    graph = helper.make_graph(
        nodes,
        "tiny_clip",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["batch", 3, c["image"], c["image"]])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", c["embed"]])],
        inits,
    )
    graph.doc_string = ("Tiny CLIP-ViT-like image encoder with random weights (seed %d), "
                        "generated by tools/gen_models.py" % CLIP_SEED)
    return make_model(graph)


def clip_input(seed, batch):
    """Input generator: numpy PCG64 standard normal, float32 (the bytes are stored as well)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, CLIP["image"], CLIP["image"])).astype(np.float32)


CLIP_TOL = {"atol": 1e-4, "rtol": 1e-4}
# For engines that run the model in half precision: the generator checks that the same graph
# evaluated by the reference implementation with every float in float16 stays within this.
CLIP_TOL_FP16 = {"atol": 2e-2, "rtol": 2e-2, "min_cosine": 0.999}


def check_half_precision(model, x, expected):
    with np.errstate(over="ignore", invalid="ignore"):
        y = reference_run(to_half(model), {"input": x.astype(np.float16)})["embedding"]
    y = y.astype(np.float64)
    e = expected.astype(np.float64)
    cos = (y * e).sum(1) / np.linalg.norm(y, axis=1) / np.linalg.norm(e, axis=1)
    t = CLIP_TOL_FP16
    assert np.allclose(y, e, atol=t["atol"], rtol=t["rtol"]), np.abs(y - e).max()
    assert cos.min() >= t["min_cosine"], cos


def gen_tiny_clip(root, verify):
    model = build_tiny_clip()
    rel = "model_repository/tiny_clip/1/model.onnx"
    save_model(root, rel, model)
    cases = []
    for batch, seed in [(1, 1001), (3, 1003), (8, 1008)]:
        x = clip_input(seed, batch)
        out = float_reference(model, {"input": x})["embedding"]
        check_half_precision(model, x, out)
        cases.append({
            "name": f"batch{batch}",
            "seed": seed,
            "input_generator": "numpy.random.default_rng(seed).standard_normal(shape)"
                               ".astype(float32)",
            "inputs": [tensor_json("input", "FP32", x)],
            "outputs": [tensor_json("embedding", "FP32", out)],
        })
        verify.append(("tiny_clip", os.path.join(root, rel), {"input": x},
                       {"embedding": out}, CLIP_TOL))
    write_cases(root, "tests/data/tiny_clip_cases.json", "tiny_clip", rel,
                "onnx.reference.ReferenceEvaluator in float64 (weights widened exactly), "
                "rounded to float32", CLIP_TOL, cases, tolerance_fp16=CLIP_TOL_FP16)


# --------------------------------------------------------------------------------------------
# test models

MODELS = "tests/data/models"

DTYPE_MODELS = [
    ("bool", TensorProto.BOOL),
    ("uint8", TensorProto.UINT8),
    ("uint16", TensorProto.UINT16),
    ("uint32", TensorProto.UINT32),
    ("uint64", TensorProto.UINT64),
    ("int8", TensorProto.INT8),
    ("int16", TensorProto.INT16),
    ("int32", TensorProto.INT32),
    ("int64", TensorProto.INT64),
    ("fp16", TensorProto.FLOAT16),
    ("bf16", TensorProto.BFLOAT16),
    ("fp32", TensorProto.FLOAT),
    ("fp64", TensorProto.DOUBLE),
]


def gen_dtype_models(root, verify):
    for suffix, et in DTYPE_MODELS:
        name = f"dtype_{suffix}"
        graph = helper.make_graph(
            [helper.make_node("Identity", ["IN"], ["OUT"], name="identity")],
            name,
            [helper.make_tensor_value_info("IN", et, ["batch", 4])],
            [helper.make_tensor_value_info("OUT", et, ["batch", 4])],
        )
        rel = f"{MODELS}/{name}/1/model.onnx"
        save_model(root, rel, make_model(graph))
        verify.append((name, os.path.join(root, rel), ("identity", et), None, None))


def gen_string_input(root, verify):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["IN"], ["OUT"], name="identity")],
        "string_input",
        [helper.make_tensor_value_info("IN", TensorProto.STRING, ["batch", 4])],
        [helper.make_tensor_value_info("OUT", TensorProto.STRING, ["batch", 4])],
    )
    rel = f"{MODELS}/string_input/1/model.onnx"
    save_model(root, rel, make_model(graph))
    verify.append(("string_input", os.path.join(root, rel), ("string",), None, None))


EXACT_TOL = {"atol": 1e-6, "rtol": 1e-6}


def bytes_tensor_json(name, arr):
    """A STRING tensor in Triton's BYTES wire format: per element a 4-byte little-endian length,
    then the element's UTF-8 bytes."""
    data = b"".join(len(e).to_bytes(4, "little") + e
                    for e in (str(x).encode("utf-8") for x in arr.reshape(-1)))
    return {
        "name": name,
        "datatype": "BYTES",
        "shape": [int(d) for d in arr.shape],
        "data_b64": base64.b64encode(data).decode("ascii"),
    }


def gen_strings(root, verify):
    """String tensors in and out, beside numbers: TEXT [batch, 3] STRING and SCORE [batch, 3]
    FP32 in; SAME (Identity of TEXT), PICK (Where(TEXT == "rust", "RUST!", TEXT)), HITS (how
    many "rust" per row, INT64 [batch, 1]) and BOOSTED (SCORE + (TEXT == "rust"), FP32) out.
    Equal on strings needs opset 19, so this model is stamped opset 19 / IR 9."""
    nodes = [
        helper.make_node("Identity", ["TEXT"], ["SAME"], name="same"),
        helper.make_node("Equal", ["TEXT", "rust"], ["is_rust"], name="is_rust"),
        helper.make_node("Where", ["is_rust", "shout", "TEXT"], ["PICK"], name="pick"),
        helper.make_node("Cast", ["is_rust"], ["hit"], name="hit", to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["hit", "axes1"], ["HITS"], name="hits", keepdims=1),
        helper.make_node("Cast", ["is_rust"], ["hitf"], name="hitf", to=TensorProto.FLOAT),
        helper.make_node("Add", ["SCORE", "hitf"], ["BOOSTED"], name="boost"),
    ]
    graph = helper.make_graph(
        nodes,
        "strings",
        [helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["batch", 3]),
         helper.make_tensor_value_info("SCORE", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("SAME", TensorProto.STRING, ["batch", 3]),
         helper.make_tensor_value_info("PICK", TensorProto.STRING, ["batch", 3]),
         helper.make_tensor_value_info("HITS", TensorProto.INT64, ["batch", 1]),
         helper.make_tensor_value_info("BOOSTED", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor("rust", TensorProto.STRING, [], [b"rust"]),
         helper.make_tensor("shout", TensorProto.STRING, [], [b"RUST!"]),
         numpy_helper.from_array(np.array([1], np.int64), "axes1")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 19)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
    )
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    rel = f"{MODELS}/strings/1/model.onnx"
    save_model(root, rel, model)
    words = [["rust", "go", ""],
             ["d\u00e9j\u00e0 vu", "rust", "rust"],
             ["Rust", "rust ", "a much longer string than the others, to vary the lengths"]]
    cases = []
    for batch, seed in [(1, 4001), (3, 4003)]:
        text = np.array(words[:batch], dtype=object)
        score = np.random.default_rng(seed).standard_normal((batch, 3)).astype(np.float32)
        out = reference_run(model, {"TEXT": text, "SCORE": score})
        cases.append({
            "name": f"batch{batch}",
            "seed": seed,
            "inputs": [bytes_tensor_json("TEXT", text), tensor_json("SCORE", "FP32", score)],
            "outputs": [bytes_tensor_json("SAME", out["SAME"]),
                        bytes_tensor_json("PICK", out["PICK"]),
                        tensor_json("HITS", "INT64", out["HITS"].astype(np.int64)),
                        tensor_json("BOOSTED", "FP32", out["BOOSTED"].astype(np.float32))],
        })
        verify.append(("strings", os.path.join(root, rel), ("strings", text, score, out), None,
                       None))
    write_cases(root, f"{MODELS}/strings/cases.json", "strings", rel,
                "onnx.reference.ReferenceEvaluator", EXACT_TOL, cases)




def gen_multi_io(root, verify):
    nodes = [
        helper.make_node("Add", ["A", "one"], ["SUM"], name="sum"),
        helper.make_node("Cast", ["B"], ["CAST"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["A", "axes1"], ["ROWSUM"], name="rowsum", keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "multi_io",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("B", TensorProto.INT64, ["batch", 2])],
        [helper.make_tensor_value_info("SUM", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("CAST", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("ROWSUM", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
         numpy_helper.from_array(np.array([1], np.int64), "axes1")],
    )
    model = make_model(graph)
    rel = f"{MODELS}/multi_io/1/model.onnx"
    save_model(root, rel, model)
    cases = []
    for batch, seed in [(1, 2001), (5, 2005)]:
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((batch, 4)).astype(np.float32)
        b = rng.integers(-1000, 1000, size=(batch, 2), dtype=np.int64)
        out = float_reference(model, {"A": a, "B": b})
        cases.append({
            "name": f"batch{batch}",
            "seed": seed,
            "inputs": [tensor_json("A", "FP32", a), tensor_json("B", "INT64", b)],
            "outputs": [tensor_json(n, "FP32", out[n]) for n in ("SUM", "CAST", "ROWSUM")],
        })
        verify.append(("multi_io", os.path.join(root, rel), {"A": a, "B": b}, out, EXACT_TOL))
    write_cases(root, f"{MODELS}/multi_io/cases.json", "multi_io", rel,
                "onnx.reference.ReferenceEvaluator in float64, rounded to float32", EXACT_TOL,
                cases)


def gen_no_batch(root, verify):
    nodes = [
        helper.make_node("Transpose", ["IN"], ["t"], name="transpose", perm=[1, 0]),
        helper.make_node("Mul", ["t", "two"], ["OUT"], name="double"),
    ]
    graph = helper.make_graph(
        nodes,
        "no_batch",
        [helper.make_tensor_value_info("IN", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("OUT", TensorProto.FLOAT, [3, 2])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )
    model = make_model(graph)
    rel = f"{MODELS}/no_batch/1/model.onnx"
    save_model(root, rel, model)
    x = np.random.default_rng(3001).standard_normal((2, 3)).astype(np.float32)
    out = float_reference(model, {"IN": x})
    verify.append(("no_batch", os.path.join(root, rel), {"IN": x}, out, EXACT_TOL))
    write_cases(root, f"{MODELS}/no_batch/cases.json", "no_batch", rel,
                "onnx.reference.ReferenceEvaluator in float64, rounded to float32", EXACT_TOL,
                [{"name": "fixed", "seed": 3001, "inputs": [tensor_json("IN", "FP32", x)],
                  "outputs": [tensor_json("OUT", "FP32", out["OUT"])]}])


def gen_external_data(root, verify):
    rng = np.random.default_rng(4000)
    wmat = (rng.standard_normal((8, 4)) / np.sqrt(8)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["xw"], name="matmul"),
        helper.make_node("Add", ["xw", "bias"], ["Y"], name="bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "external_data",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(wmat, "W"), numpy_helper.from_array(bias, "bias")],
    )
    model = make_model(graph)
    ref_model = onnx.ModelProto()
    ref_model.CopyFrom(model)  # onnx.save with external data rewrites `model` in place
    rel = f"{MODELS}/external_data/1/model.onnx"
    path = save_model(root, rel, model, external_data="model.onnx.data")
    # the reloaded model must carry the same weights as the in-memory one
    reloaded = onnx.load(path)
    assert any(t.data_location == TensorProto.EXTERNAL
               for t in onnx.load(path, load_external_data=False).graph.initializer)
    np.testing.assert_array_equal(numpy_helper.to_array(reloaded.graph.initializer[0]), wmat)
    cases = []
    for batch, seed in [(1, 4001), (6, 4006)]:
        x = np.random.default_rng(seed).standard_normal((batch, 8)).astype(np.float32)
        out = float_reference(ref_model, {"X": x})
        cases.append({"name": f"batch{batch}", "seed": seed,
                      "inputs": [tensor_json("X", "FP32", x)],
                      "outputs": [tensor_json("Y", "FP32", out["Y"])]})
        verify.append(("external_data", path, {"X": x}, out, EXACT_TOL))
    write_cases(root, f"{MODELS}/external_data/cases.json", "external_data", rel,
                "onnx.reference.ReferenceEvaluator in float64, rounded to float32", EXACT_TOL,
                cases)


FP16_UNSAFE_TOL = {"atol": 1e-5, "rtol": 1e-5}


def gen_fp16_unsafe(root, verify):
    # OUT = ((IN * 1e5 + 1e6) - 1e6) * 1e-5  ==  IN in exact arithmetic and to ~1e-6 in FP32.
    # In FP16 the constants 1e5 and 1e6 are beyond the largest finite half (65504): they become
    # +inf, IN*inf - inf is NaN/inf, so an FP16 engine returns no finite value at all.
    nodes = [
        helper.make_node("Mul", ["IN", "big"], ["scaled"], name="scale_up"),
        helper.make_node("Add", ["scaled", "offset"], ["shifted"], name="shift"),
        helper.make_node("Sub", ["shifted", "offset"], ["unshifted"], name="unshift"),
        helper.make_node("Mul", ["unshifted", "small"], ["OUT"], name="scale_down"),
    ]
    graph = helper.make_graph(
        nodes,
        "fp16_unsafe",
        [helper.make_tensor_value_info("IN", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("OUT", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array(1e5, np.float32), "big"),
         numpy_helper.from_array(np.array(1e6, np.float32), "offset"),
         numpy_helper.from_array(np.array(1e-5, np.float32), "small")],
    )
    graph.doc_string = ("FP16-unsafe on purpose: constants 1e5 and 1e6 overflow half precision; "
                        "FP32 result equals IN, FP16 result is inf/NaN.")
    model = make_model(graph)
    rel = f"{MODELS}/fp16_unsafe/1/model.onnx"
    save_model(root, rel, model)
    x = np.random.default_rng(5001).uniform(-1, 1, (3, 4)).astype(np.float32)
    out = float_reference(model, {"IN": x})
    # the same graph with every float in half precision really does lose everything
    with np.errstate(invalid="ignore"):
        half = reference_run(to_half(model), {"IN": x.astype(np.float16)})["OUT"]
    assert not np.isfinite(half).any(), half
    verify.append(("fp16_unsafe", os.path.join(root, rel), {"IN": x}, out, FP16_UNSAFE_TOL))
    write_cases(root, f"{MODELS}/fp16_unsafe/cases.json", "fp16_unsafe", rel,
                "onnx.reference.ReferenceEvaluator in float64, rounded to float32",
                FP16_UNSAFE_TOL,
                [{"name": "batch3", "seed": 5001,
                  "input_generator": "numpy.random.default_rng(seed).uniform(-1, 1, shape)"
                                     ".astype(float32)",
                  "inputs": [tensor_json("IN", "FP32", x)],
                  "outputs": [tensor_json("OUT", "FP32", out["OUT"])]}])


def to_half(model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            with np.errstate(over="ignore"):
                arr = numpy_helper.to_array(init).astype(np.float16)
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    return m


def gen_corrupt(root, verify):
    # Starts with ASCII text: 't' (0x74) is protobuf field 14 with wire type 4 (end-group),
    # which no parser accepts at top level; then seeded random bytes.
    data = b"this is not an ONNX model\n" + np.random.default_rng(6000).bytes(200)
    rel = f"{MODELS}/corrupt/1/model.onnx"
    write_bytes(root, rel, data)
    verify.append(("corrupt", os.path.join(root, rel), ("corrupt",), None, None))


def gen_shape_models(root, verify):
    """Models for tests/shapes.rs: scalars, [batch] tensors, zero-size dims, no inputs, a
    Hugging Face-like text encoder whose output dim is symbolic in the file but fixed by shape
    inference, BF16 arithmetic. Expected values are simple enough for the tests to compute,
    except the text encoder's (reference run, cases.json)."""
    f32 = TensorProto.FLOAT

    # Non-batching scalar I/O: sum = x + ReduceSum(v), scaled = v * x.
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["v"], ["vs"], name="sum_v", keepdims=0),
            helper.make_node("Add", ["x", "vs"], ["sum"], name="add"),
            helper.make_node("Mul", ["v", "x"], ["scaled"], name="scale"),
        ],
        "scalar_io",
        [helper.make_tensor_value_info("x", f32, []), helper.make_tensor_value_info("v", f32, [3])],
        [helper.make_tensor_value_info("sum", f32, []),
         helper.make_tensor_value_info("scaled", f32, [3])],
    )
    rel = f"{MODELS}/scalar_io/1/model.onnx"
    save_model(root, rel, make_model(graph))
    x, v = np.array(0.5, np.float32), np.array([1.0, 2.0, 4.0], np.float32)
    verify.append(("scalar_io", os.path.join(root, rel), {"x": x, "v": v},
                   {"sum": np.array(7.5, np.float32), "scaled": v * x}, EXACT_TOL))

    # Batching model whose tensors are [batch] (a scalar per item): y = 2 x, n = x > 0.
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["y"], name="double"),
            helper.make_node("Greater", ["x", "zero"], ["n"], name="positive"),
        ],
        "batch_scalar",
        [helper.make_tensor_value_info("x", f32, ["batch"])],
        [helper.make_tensor_value_info("y", f32, ["batch"]),
         helper.make_tensor_value_info("n", TensorProto.BOOL, ["batch"])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
         numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    rel = f"{MODELS}/batch_scalar/1/model.onnx"
    save_model(root, rel, make_model(graph))
    x = np.array([1.5, -2.0, 0.25], np.float32)
    verify.append(("batch_scalar", os.path.join(root, rel), {"x": x},
                   {"y": 2 * x, "n": x > 0}, EXACT_TOL))

    # An output whose size depends on an input's value (Slice up to `k`): a config that fixes it
    # at 4 passes validation (the ONNX dim is symbolic, and no shape inference can know it) and
    # a request with k=3 makes the engine produce 3 columns, which must be caught before it is
    # sent; "ok" comes first so the response already holds an output when "short" fails.
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["ok"], name="same"),
            helper.make_node("Slice", ["x", "s0", "k", "ax1"], ["short"], name="first_k"),
        ],
        "output_mismatch",
        [helper.make_tensor_value_info("x", f32, [2, 4]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("ok", f32, [2, 4]),
         helper.make_tensor_value_info("short", f32, [2, "n"])],
        [numpy_helper.from_array(np.array([0], np.int64), "s0"),
         numpy_helper.from_array(np.array([1], np.int64), "ax1")],
    )
    rel = f"{MODELS}/output_mismatch/1/model.onnx"
    save_model(root, rel, make_model(graph))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    verify.append(("output_mismatch", os.path.join(root, rel), {"x": x, "k": np.array([3], np.int64)},
                   {"ok": x, "short": x[:, :3]}, EXACT_TOL))

    # Zero-size dims: z has a fixed dim of 0, x a symbolic one (a request may make it 0).
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["x2"], name="double"),
            helper.make_node("Add", ["z", "one"], ["z1"], name="inc"),
        ],
        "zero_dim",
        [helper.make_tensor_value_info("x", f32, ["n", 3]),
         helper.make_tensor_value_info("z", f32, [2, 0])],
        [helper.make_tensor_value_info("x2", f32, ["n", 3]),
         helper.make_tensor_value_info("z1", f32, [2, 0])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
         numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    rel = f"{MODELS}/zero_dim/1/model.onnx"
    save_model(root, rel, make_model(graph))
    x, z = np.zeros((0, 3), np.float32), np.zeros((2, 0), np.float32)
    verify.append(("zero_dim", os.path.join(root, rel), {"x": x, "z": z},
                   {"x2": x, "z1": z}, EXACT_TOL))

    # No inputs: a constant generator (an INT64 matrix and an FP32 scalar).
    table = np.arange(6, dtype=np.int64).reshape(2, 3) * 7 - 5
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["table"], name="table",
                             value=numpy_helper.from_array(table, "table_value")),
            helper.make_node("Constant", [], ["pi"], name="pi",
                             value=numpy_helper.from_array(np.array(3.25, np.float32), "pi_value")),
        ],
        "no_input",
        [],
        [helper.make_tensor_value_info("table", TensorProto.INT64, [2, 3]),
         helper.make_tensor_value_info("pi", f32, [])],
    )
    rel = f"{MODELS}/no_input/1/model.onnx"
    save_model(root, rel, make_model(graph))
    verify.append(("no_input", os.path.join(root, rel), {},
                   {"table": table, "pi": np.array(3.25, np.float32)}, EXACT_TOL))

    # BF16 arithmetic: y = bf16(2 * f32(x)) (exact), f = f32(x).
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["f"], name="widen", to=f32),
            helper.make_node("Mul", ["f", "two"], ["f2"], name="double"),
            helper.make_node("Cast", ["f2"], ["y"], name="narrow", to=TensorProto.BFLOAT16),
        ],
        "bf16_compute",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["batch", 4]),
         helper.make_tensor_value_info("f", f32, ["batch", 4])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )
    rel = f"{MODELS}/bf16_compute/1/model.onnx"
    save_model(root, rel, make_model(graph))

    # A Hugging Face text encoder as torch.onnx.export writes it (int64 input_ids /
    # attention_mask / token_type_ids of [batch, seq]; outputs with symbolic names), mean pooled:
    # the pooled output is declared [batch, <symbolic>], which shape inference fixes to HIDDEN.
    vocab, hidden = 64, 384
    rng = np.random.default_rng(8001)
    word = (rng.standard_normal((vocab, hidden)) * 0.5).astype(np.float32)
    types = (rng.standard_normal((2, hidden)) * 0.5).astype(np.float32)
    i64 = TensorProto.INT64
    nodes = [
        helper.make_node("Gather", ["word_embeddings", "input_ids"], ["we"], name="word"),
        helper.make_node("Gather", ["token_type_embeddings", "token_type_ids"], ["te"],
                         name="type"),
        helper.make_node("Add", ["we", "te"], ["token_embeddings"], name="embed"),
        helper.make_node("Cast", ["attention_mask"], ["m"], name="mask_f", to=f32),
        helper.make_node("Unsqueeze", ["m", "last"], ["m3"], name="mask_3d"),
        helper.make_node("Mul", ["token_embeddings", "m3"], ["masked"], name="apply_mask"),
        helper.make_node("ReduceSum", ["masked", "seq_axis"], ["total"], name="sum", keepdims=0),
        helper.make_node("ReduceSum", ["m3", "seq_axis"], ["count"], name="count", keepdims=0),
        helper.make_node("Max", ["count", "eps"], ["count_safe"], name="clamp"),
        helper.make_node("Div", ["total", "count_safe"], ["sentence_embedding"], name="mean"),
    ]
    graph = helper.make_graph(
        nodes,
        "text_encoder",
        [helper.make_tensor_value_info(n, i64, ["batch_size", "sequence_length"])
         for n in ("input_ids", "attention_mask", "token_type_ids")],
        [helper.make_tensor_value_info("token_embeddings", f32,
                                       ["batch_size", "sequence_length", "Addtoken_embeddings_dim_2"]),
         helper.make_tensor_value_info("sentence_embedding", f32,
                                       ["batch_size", "Divsentence_embedding_dim_1"])],
        [numpy_helper.from_array(word, "word_embeddings"),
         numpy_helper.from_array(types, "token_type_embeddings"),
         numpy_helper.from_array(np.array([-1], np.int64), "last"),
         numpy_helper.from_array(np.array([1], np.int64), "seq_axis"),
         numpy_helper.from_array(np.array(1e-9, np.float32), "eps")],
    )
    model = make_model(graph)
    rel = f"{MODELS}/text_encoder/1/model.onnx"
    save_model(root, rel, model)
    cases = []
    for seed, (b, s) in ((8101, (2, 7)), (8102, (3, 5))):
        r = np.random.default_rng(seed)
        ids = r.integers(0, vocab, (b, s)).astype(np.int64)
        mask = np.ones((b, s), np.int64)
        mask[0, s - 2:] = 0  # padding at the end of the first sentence
        tt = (np.arange(s)[None, :] >= s // 2).astype(np.int64).repeat(b, 0)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
        out = float_reference(model, feeds)
        verify.append(("text_encoder", os.path.join(root, rel), feeds, out, EXACT_TOL))
        cases.append({"name": f"batch{b}_seq{s}", "seed": seed,
                      "inputs": [tensor_json(n, "INT64", feeds[n]) for n in feeds],
                      "outputs": [tensor_json(n, "FP32", out[n])
                                  for n in ("token_embeddings", "sentence_embedding")]})
    write_cases(root, f"{MODELS}/text_encoder/cases.json", "text_encoder", rel,
                "onnx.reference.ReferenceEvaluator in float64, rounded to float32", EXACT_TOL,
                cases)


# --------------------------------------------------------------------------------------------
# verification with ONNX Runtime (after generation; never the source of expected values)


def run_verification(verify):
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not importable: ONNX Runtime verification skipped", file=sys.stderr)
        return []
    so = ort.SessionOptions()
    so.log_severity_level = 3
    problems = []
    for name, path, feeds, expected, tol in verify:
        try:
            if isinstance(feeds, tuple) and feeds[0] == "corrupt":
                try:
                    onnx.load(path)
                    problems.append(f"{name}: onnx.load accepted the corrupt model")
                except Exception:
                    pass
                try:
                    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                    problems.append(f"{name}: onnxruntime accepted the corrupt model")
                except Exception:
                    pass
                continue
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            if isinstance(feeds, tuple) and feeds[0] == "string":
                x = np.array([["a", "bc", "", "déf"]], dtype=object)
                (y,) = sess.run(None, {"IN": x})
                if not (y == x).all():
                    problems.append(f"{name}: identity on strings gave {y!r}")
                continue
            if isinstance(feeds, tuple) and feeds[0] == "strings":
                _, text, score, want = feeds
                got = dict(zip([o.name for o in sess.get_outputs()],
                               sess.run(None, {"TEXT": text, "SCORE": score})))
                for k, w in want.items():
                    if got[k].shape != w.shape or not (got[k] == w).all():
                        problems.append(f"{name}: {k} is {got[k]!r}, reference {w!r}")
                continue
            if isinstance(feeds, tuple) and feeds[0] == "identity":
                problems += verify_identity(ort, sess, name, feeds[1])
                continue
            got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
            for out_name, exp in expected.items():
                g = got[out_name]
                if g.shape != exp.shape or not np.allclose(g, exp, atol=tol["atol"],
                                                           rtol=tol["rtol"]):
                    err = np.max(np.abs(g.astype(np.float64) - exp)) if g.shape == exp.shape \
                        else "shape %s vs %s" % (g.shape, exp.shape)
                    problems.append(f"{name}: {out_name} differs from reference ({err})")
        except Exception as e:  # noqa: BLE001 - report every model
            problems.append(f"{name}: onnxruntime failed: {type(e).__name__}: {e}")
    return problems


def verify_identity(ort, sess, name, et):
    import ml_dtypes
    rng = np.random.default_rng(7000 + et)
    if et == TensorProto.BOOL:
        x = rng.integers(0, 2, (3, 4)).astype(np.bool_)
    elif et in (TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE):
        x = rng.standard_normal((3, 4)).astype(TRITON_TYPES[et][1])
    elif et == TensorProto.BFLOAT16:
        x = rng.standard_normal((3, 4)).astype(ml_dtypes.bfloat16)
    else:
        info = np.iinfo(TRITON_TYPES[et][1])
        x = rng.integers(info.min, info.max, (3, 4), dtype=TRITON_TYPES[et][1], endpoint=True)
    if et == TensorProto.BFLOAT16:
        # ONNX Runtime's Python binding has no bfloat16 numpy type: pass the bits as uint16
        bits = x.view(np.uint16)
        # and bind a uint16 buffer as the bfloat16 output (its numpy() cannot convert bf16)
        got = np.zeros_like(bits)
        io = sess.io_binding()
        io.bind_ortvalue_input(
            "IN", ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, TensorProto.BFLOAT16))
        io.bind_ortvalue_output(
            "OUT", ort.OrtValue.ortvalue_from_numpy_with_onnx_type(got, TensorProto.BFLOAT16))
        sess.run_with_iobinding(io)
        ok = (got == bits).all()
    else:
        (got,) = sess.run(None, {"IN": x})
        ok = got.dtype == x.dtype and got.shape == x.shape and \
            (got.view(np.uint8) == x.view(np.uint8)).all()
    return [] if ok else [f"{name}: identity output differs from its input"]


# --------------------------------------------------------------------------------------------


def generate(root):
    del GENERATED[:]
    verify = []
    gen_tiny_clip(root, verify)
    gen_dtype_models(root, verify)
    gen_string_input(root, verify)
    gen_strings(root, verify)
    gen_multi_io(root, verify)
    gen_no_batch(root, verify)
    gen_external_data(root, verify)
    gen_fp16_unsafe(root, verify)
    gen_corrupt(root, verify)
    gen_shape_models(root, verify)
    return verify


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp dir and compare with the committed files")
    ap.add_argument("--out", default=REPO_ROOT, help="output root (default: the repository)")
    ap.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    args = ap.parse_args()

    if args.check:
        tmp = tempfile.mkdtemp(prefix="gen_models_")
        try:
            generate(tmp)
            diff = []
            for rel in GENERATED:
                committed = os.path.join(args.out, rel)
                if not os.path.exists(committed):
                    diff.append(f"missing: {rel}")
                elif not filecmp.cmp(os.path.join(tmp, rel), committed, shallow=False):
                    diff.append(f"differs: {rel}")
            for line in diff:
                print(line)
            if diff:
                print(f"{len(diff)} of {len(GENERATED)} generated files differ; "
                      "run python3 tools/gen_models.py", file=sys.stderr)
                return 1
            print(f"ok: {len(GENERATED)} generated files identical")
            return 0
        finally:
            shutil.rmtree(tmp)

    verify = generate(args.out)
    for rel in GENERATED:
        print(f"{os.path.getsize(os.path.join(args.out, rel)):9d}  {rel}")
    if not args.no_verify:
        problems = run_verification(verify)
        for p in problems:
            print("ONNX Runtime:", p, file=sys.stderr)
        if problems:
            return 1
        print("onnxruntime: every model loads and agrees with the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())

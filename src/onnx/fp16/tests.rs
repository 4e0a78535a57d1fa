use super::*;
use crate::compare::cosine_and_rel_l2;
use crate::onnx::specialize::specialize_batch;
use crate::onnx::testutil::*;
use crate::onnx::ValueInfoProto;

const F16: i32 = elem::FLOAT16;
const BOOL: i32 = elem::BOOL;

fn convert(m: &OnnxModel) -> (OnnxModel, Fp16Report) {
    let (c, r) = convert_to_fp16(m, &Fp16Options::default()).unwrap();
    println!("report: {r}");
    (c, r)
}

fn g(m: &OnnxModel) -> &GraphProto {
    m.graph()
}

fn node<'a>(m: &'a OnnxModel, name: &str) -> &'a NodeProto {
    g(m).node
        .iter()
        .find(|n| n.name() == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn init<'a>(gr: &'a GraphProto, name: &str) -> &'a TensorProto {
    gr.initializer
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no init {name}"))
}

/// The node producing `name` in `gr`.
fn producer<'a>(gr: &'a GraphProto, name: &str) -> Option<&'a NodeProto> {
    gr.node.iter().find(|n| n.output.iter().any(|o| o == name))
}

/// Whether input `k` of `n` arrives through a Cast to `to`.
fn input_cast_to(gr: &GraphProto, n: &NodeProto, k: usize, to: i32) -> bool {
    producer(gr, &n.input[k])
        .is_some_and(|p| p.op_type() == "Cast" && attr_i(p, "to") == Some(to as i64))
}

fn io_types(m: &OnnxModel) -> Vec<(String, Option<i32>)> {
    let gr = g(m);
    gr.input
        .iter()
        .chain(&gr.output)
        .map(|v: &ValueInfoProto| (v.name().to_string(), vi_elem_type(v)))
        .collect()
}

/// Structural invariants every conversion must keep, plus an ONNX Runtime comparison of the
/// outputs (min per-row cosine ≥ 0.999). Returns the per-output (cosine, rel L2), or `None` if
/// ONNX Runtime is not available.
fn check(
    orig: &OnnxModel,
    conv: &OnnxModel,
    inputs: &[(&str, In)],
) -> Option<Vec<(String, f32, f32)>> {
    assert_eq!(
        io_types(orig),
        io_types(conv),
        "served I/O names and types must not change"
    );
    assert_eq!(orig.proto.opset_import, conv.proto.opset_import);
    assert_eq!(orig.proto.ir_version, conv.proto.ir_version);
    onnx_full_check(conv);
    if !ort_available() {
        return None;
    }
    let a = run_ort(orig, inputs);
    let b = run_ort(conv, inputs);
    assert_eq!(a.len(), b.len());
    let mut res = Vec::new();
    for ((na, sa, da), (nb, sb, db)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(sa, sb, "output '{na}' shape");
        let row = sa.last().copied().unwrap_or(1).max(1) as usize;
        let (cos, rel) = cosine_and_rel_l2(da, db, row);
        println!("output '{na}': min row cosine {cos:.6}, rel L2 {rel:.2e}");
        assert!(
            cos >= 0.999,
            "output '{na}': min row cosine {cos} < 0.999 (rel L2 {rel})"
        );
        res.push((na.clone(), cos, rel));
    }
    Some(res)
}

/// python onnx's checker with strict type and shape inference: catches any type mismatch the
/// conversion may have introduced (ONNX Runtime's CPU provider tolerates some by upcasting).
fn onnx_full_check(m: &OnnxModel) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.onnx");
    std::fs::write(&p, m.to_bytes().unwrap()).unwrap();
    let script = format!(
        "import onnx;onnx.checker.check_model(onnx.load(r'{}'),full_check=True)",
        p.display()
    );
    match std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'onnx'") => {
            println!("SKIPPED: python onnx checker not installed")
        }
        Ok(o) => panic!(
            "onnx checker refused the FP16 model: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => println!("SKIPPED: no python3: {e}"),
    }
}

fn x_in(rng: &mut Rng, shape: &[i64], scale: f32) -> In {
    let n = shape.iter().product::<i64>() as usize;
    In::F32(shape.to_vec(), rng.vec(n, scale))
}

#[test]
fn matmul_gemm_add_mul() {
    let mut r = Rng::new(1);
    let m = Gb::new("g")
        .input("x", F32, &[-1, 16])
        .init(tensor_f32("w1", &[16, 32], &r.vec(512, 0.3)))
        .init(tensor_f32("b1", &[32], &r.vec(32, 0.1)))
        .init(tensor_f32("w2", &[32, 8], &r.vec(256, 0.3)))
        .init(tensor_f32("c2", &[8], &r.vec(8, 0.1)))
        .init(tensor_f32("s", &[], &[1.5]))
        .output("y", F32, &[-1, 8])
        .node("MatMul", &["x", "w1"], &["h"], vec![])
        .node("Add", &["h", "b1"], &["h2"], vec![])
        .node("Mul", &["h2", "s"], &["h3"], vec![])
        .node(
            "Gemm",
            &["h3", "w2", "c2"],
            &["y"],
            vec![a_float("alpha", 0.5), a_int("transB", 0)],
        )
        .onnx(17);
    let (c, rep) = convert(&m);
    let gr = g(&c);
    for n in ["w1", "b1", "w2", "c2", "s"] {
        assert_eq!(init(gr, n).data_type(), F16, "{n}");
        assert_eq!(init(gr, n).raw_data().len(), 2 * numel(init(gr, n)), "{n}");
    }
    assert_eq!(rep.initializers_converted, 5);
    assert_eq!(rep.nodes_converted, 4);
    assert_eq!(rep.nodes_kept_fp32, 0);
    assert_eq!(rep.casts_inserted, 2, "one cast after x, one before y");
    // x is cast to FP16 for MatMul; y is produced by a Cast to FLOAT from the renamed Gemm output.
    assert!(input_cast_to(gr, node(&c, "MatMul_0"), 0, F16));
    let y = producer(gr, "y").unwrap();
    assert_eq!((y.op_type(), attr_i(y, "to")), ("Cast", Some(F32 as i64)));
    assert_eq!(producer(gr, &y.input[0]).unwrap().op_type(), "Gemm");
    check(&m, &c, &[("x", x_in(&mut r, &[4, 16], 1.0))]);
}

#[test]
fn conv_relu() {
    let mut r = Rng::new(2);
    let m = Gb::new("g")
        .input("x", F32, &[-1, 3, 8, 8])
        .init(tensor_f32("w", &[4, 3, 3, 3], &r.vec(108, 0.4)))
        .init(tensor_f32("b", &[4], &r.vec(4, 0.1)))
        .output("y", F32, &[-1, 4, 8, 8])
        .node(
            "Conv",
            &["x", "w", "b"],
            &["c"],
            vec![a_ints("pads", &[1, 1, 1, 1])],
        )
        .node("Relu", &["c"], &["y"], vec![])
        .onnx(17);
    let (c, rep) = convert(&m);
    assert_eq!(init(g(&c), "w").data_type(), F16);
    assert_eq!(rep.nodes_converted, 2);
    check(&m, &c, &[("x", x_in(&mut r, &[2, 3, 8, 8], 1.0))]);
}

#[test]
fn layernorm_and_softmax_stay_fp32() {
    let mut r = Rng::new(3);
    let m = Gb::new("g")
        .input("x", F32, &[-1, 16])
        .init(tensor_f32("w1", &[16, 16], &r.vec(256, 0.5)))
        .init(tensor_f32("gamma", &[16], &r.vec(16, 1.0)))
        .init(tensor_f32("beta", &[16], &r.vec(16, 0.1)))
        .init(tensor_f32("w2", &[16, 10], &r.vec(160, 0.5)))
        .output("y", F32, &[-1, 10])
        .node("MatMul", &["x", "w1"], &["h"], vec![])
        .node(
            "LayerNormalization",
            &["h", "gamma", "beta"],
            &["ln"],
            vec![a_int("axis", -1), a_float("epsilon", 1e-5)],
        )
        .node("MatMul", &["ln", "w2"], &["logits"], vec![])
        .node("Softmax", &["logits"], &["y"], vec![a_int("axis", -1)])
        .onnx(17);
    let (c, rep) = convert(&m);
    let gr = g(&c);
    let ln = node(&c, "LayerNormalization_1");
    assert!(
        input_cast_to(gr, ln, 0, F32),
        "LayerNorm input is cast up to FP32"
    );
    assert_eq!(ln.input[1], "gamma");
    assert_eq!(
        init(gr, "gamma").data_type(),
        F32,
        "only FP32 nodes use gamma"
    );
    assert_eq!(init(gr, "beta").data_type(), F32);
    assert_eq!(init(gr, "w1").data_type(), F16);
    let mm2 = node(&c, "MatMul_2");
    assert!(
        input_cast_to(gr, mm2, 0, F16),
        "LayerNorm output is cast down for MatMul"
    );
    let sm = node(&c, "Softmax_3");
    assert!(input_cast_to(gr, sm, 0, F32));
    assert_eq!(
        sm.output[0], "y",
        "Softmax (FP32) writes the FP32 output directly"
    );
    assert_eq!(rep.kept_fp32_by_op.get("LayerNormalization"), Some(&1));
    assert_eq!(rep.kept_fp32_by_op.get("Softmax"), Some(&1));
    assert_eq!(rep.nodes_kept_fp32, 2);
    check(&m, &c, &[("x", x_in(&mut r, &[5, 16], 2.0))]);
}

fn const_node(name: &str, dims: &[i64], v: &[f32]) -> (String, Vec<AttributeProto>) {
    (
        name.to_string(),
        vec![a_tensor("value", tensor_f32("", dims, v))],
    )
}

#[test]
fn erf_gelu_with_constant_nodes() {
    let mut r = Rng::new(4);
    let (_, sqrt2) = const_node("sqrt2", &[], &[std::f32::consts::SQRT_2]);
    let m = Gb::new("g")
        .input("x", F32, &[-1, 32])
        .init(tensor_f32("w", &[32, 32], &r.vec(1024, 0.4)))
        .output("y", F32, &[-1, 32])
        .node("MatMul", &["x", "w"], &["h"], vec![])
        .node("Constant", &[], &["sqrt2"], sqrt2)
        .node("Constant", &[], &["one"], vec![a_float("value_float", 1.0)])
        .node(
            "Constant",
            &[],
            &["half"],
            vec![a_float("value_float", 0.5)],
        )
        .node("Div", &["h", "sqrt2"], &["d"], vec![])
        .node("Erf", &["d"], &["e"], vec![])
        .node("Add", &["e", "one"], &["e1"], vec![])
        .node("Mul", &["h", "e1"], &["m"], vec![])
        .node("Mul", &["m", "half"], &["y"], vec![])
        .onnx(17);
    let (c, rep) = convert(&m);
    assert_eq!(rep.constants_converted, 3);
    for n in ["Constant_1", "Constant_2", "Constant_3"] {
        let k = node(&c, n);
        let v = attr(k, "value").unwrap_or_else(|| panic!("{n} has a value tensor"));
        assert_eq!(v.t.data_type(), F16, "{n}");
    }
    assert_eq!(node(&c, "Erf_5").op_type(), "Erf");
    assert!(
        !input_cast_to(g(&c), node(&c, "Erf_5"), 0, F32),
        "Erf runs in FP16"
    );
    assert_eq!(rep.nodes_kept_fp32, 0);
    check(&m, &c, &[("x", x_in(&mut r, &[6, 32], 2.0))]);
}

#[test]
fn cast_to_float_and_integer_paths() {
    // y = Reshape(x + (1 - float(mask)) * -10000, [batch, 24]) where batch comes from Shape(x).
    let mut r = Rng::new(5);
    let m = Gb::new("g")
        .input("x", F32, &[-1, 4, 6])
        .input("mask", I64, &[-1, 1, 6])
        .init(tensor_f32("one", &[], &[1.0]))
        .init(tensor_f32("big", &[], &[-10000.0]))
        .init(tensor_i64("idx0", &[1], &[0]))
        .init(tensor_i64("c24", &[1], &[24]))
        .output("y", F32, &[-1, 24])
        .output("n", I64, &[1])
        .node("Cast", &["mask"], &["mf"], vec![a_int("to", F32 as i64)])
        .node("Sub", &["one", "mf"], &["inv"], vec![])
        .node("Mul", &["inv", "big"], &["bias"], vec![])
        .node("Add", &["x", "bias"], &["xb"], vec![])
        .node("Shape", &["xb"], &["shp"], vec![])
        .node("Gather", &["shp", "idx0"], &["n"], vec![a_int("axis", 0)])
        .node(
            "Concat",
            &["n", "c24"],
            &["newshape"],
            vec![a_int("axis", 0)],
        )
        .node("Reshape", &["xb", "newshape"], &["y"], vec![])
        .onnx(17);
    let (c, _) = convert(&m);
    let gr = g(&c);
    assert_eq!(
        attr_i(node(&c, "Cast_0"), "to"),
        Some(F16 as i64),
        "Cast to FLOAT becomes FLOAT16"
    );
    for n in ["Shape_4", "Gather_5", "Concat_6"] {
        assert_eq!(
            node(&c, n),
            &m.graph()
                .node
                .iter()
                .find(|k| k.name() == n)
                .unwrap()
                .clone(),
            "{n} untouched"
        );
    }
    assert_eq!(init(gr, "idx0").data_type(), I64);
    assert_eq!(init(gr, "c24").data_type(), I64);
    assert_eq!(init(gr, "big").data_type(), F16);
    let mask: Vec<i64> = (0..18).map(|i| (i % 3 != 0) as i64).collect();
    let res = check(
        &m,
        &c,
        &[
            ("x", x_in(&mut r, &[3, 4, 6], 1.0)),
            ("mask", In::I64(vec![3, 1, 6], mask)),
        ],
    );
    if let Some(res) = res {
        assert_eq!(res[1].2, 0.0, "the int64 output is exact");
    }
}

#[test]
fn shape_arithmetic_stays_fp32() {
    // size = int64(float(Shape(x)[1]) * 1.5): FP16 would round 3001 * 1.5 = 4501.5 to 4500.
    let m = Gb::new("g")
        .input("x", F32, &[2, -1])
        .init(tensor_f32("k", &[], &[1.5]))
        .init(tensor_i64("idx1", &[1], &[1]))
        .output("size", I64, &[1])
        .output("y", F32, &[2, -1])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Gather", &["s", "idx1"], &["s1"], vec![a_int("axis", 0)])
        .node("Cast", &["s1"], &["sf"], vec![a_int("to", F32 as i64)])
        .node("Mul", &["sf", "k"], &["sk"], vec![])
        .node("Cast", &["sk"], &["size"], vec![a_int("to", I64 as i64)])
        .node("Relu", &["x"], &["y"], vec![])
        .onnx(17);
    let (c, rep) = convert(&m);
    assert_eq!(attr_i(node(&c, "Cast_2"), "to"), Some(F32 as i64));
    assert_eq!(node(&c, "Mul_3").input[1], "k");
    assert_eq!(init(g(&c), "k").data_type(), F32);
    assert_eq!(rep.kept_fp32_by_op.get("Mul"), Some(&1));
    let mut r = Rng::new(6);
    if let Some(res) = check(&m, &c, &[("x", x_in(&mut r, &[2, 3001], 1.0))]) {
        assert_eq!(res[0].2, 0.0, "size computed exactly");
    }
}

#[test]
fn decomposed_layernorm_keeps_eps_in_fp32() {
    // (x - mean) / sqrt(var + 1e-12): with eps in FP16 (0) a constant row would give 0/0.
    let mut eye = vec![0.0f32; 64];
    (0..8).for_each(|i| eye[i * 9] = 1.0);
    let m = Gb::new("g")
        .input("x0", F32, &[-1, 8])
        .init(tensor_f32("eye", &[8, 8], &eye))
        .init(tensor_f32("two", &[], &[2.0]))
        .init(tensor_f32("eps", &[], &[1e-12]))
        .output("y", F32, &[-1, 8])
        .node("MatMul", &["x0", "eye"], &["x"], vec![])
        .node("ReduceMean", &["x"], &["mean"], vec![a_ints("axes", &[-1])])
        .node("Sub", &["x", "mean"], &["d"], vec![])
        .node("Pow", &["d", "two"], &["d2"], vec![])
        .node("ReduceMean", &["d2"], &["var"], vec![a_ints("axes", &[-1])])
        .node("Add", &["var", "eps"], &["ve"], vec![])
        .node("Sqrt", &["ve"], &["sd"], vec![])
        .node("Div", &["d", "sd"], &["y"], vec![])
        .onnx(17);
    let (c, rep) = convert(&m);
    assert_eq!(init(g(&c), "eps").data_type(), F32);
    assert_eq!(
        node(&c, "Add_5").input,
        vec!["var", "eps"],
        "var + eps in FP32, no casts"
    );
    assert_eq!(rep.kept_fp32_by_op.get("Add"), Some(&1));
    assert!(input_cast_to(g(&c), node(&c, "Div_7"), 1, F16));
    let mut r = Rng::new(7);
    let mut x = r.vec(24, 3.0);
    x[8..16].fill(0.25); // a constant row: y must be 0 there, not NaN
    let res = check(&m, &c, &[("x0", In::F32(vec![3, 8], x.clone()))]);
    if res.is_some() {
        let out = run_ort(&c, &[("x0", In::F32(vec![3, 8], x))]);
        assert!(out[0].2.iter().all(|v| v.is_finite()), "{:?}", out[0].2);
    }
}

#[test]
fn where_and_if_subgraphs() {
    let mut r = Rng::new(8);
    let then_g = Gb::new("then")
        .init(tensor_f32("wt", &[8], &r.vec(8, 1.0)))
        .output("t_out", F32, &[-1, 8])
        .node("Mul", &["h", "wt"], &["t_out"], vec![])
        .g;
    let else_g = Gb::new("else")
        .output("e_out", F32, &[-1, 8])
        .node(
            "Constant",
            &[],
            &["ce"],
            vec![a_tensor("value", tensor_f32("", &[8], &r.vec(8, 1.0)))],
        )
        .node("Add", &["h", "ce"], &["e_out"], vec![])
        .g;
    let m = Gb::new("g")
        .input("x", F32, &[-1, 8])
        .input("cond", BOOL, &[])
        .init(tensor_f32("w", &[8, 8], &r.vec(64, 0.5)))
        .init(tensor_f32("zero", &[], &[0.0]))
        .output("y", F32, &[-1, 8])
        .node("MatMul", &["x", "w"], &["h"], vec![])
        .node(
            "If",
            &["cond"],
            &["b"],
            vec![
                a_graph("then_branch", then_g),
                a_graph("else_branch", else_g),
            ],
        )
        .node("Greater", &["x", "zero"], &["pos"], vec![])
        .node("Where", &["pos", "b", "x"], &["y"], vec![])
        .onnx(17);
    let (c, rep) = convert(&m);
    let iff = node(&c, "If_1");
    let tg = &attr(iff, "then_branch").unwrap().g;
    assert_eq!(
        init(tg, "wt").data_type(),
        F16,
        "subgraph initializer converted"
    );
    // `h` (outer, FP16) is used directly by the FP16 Mul inside; the subgraph output is cast
    // back to FP32 (the If node's outputs keep their type).
    let mul = tg.node.iter().find(|n| n.op_type() == "Mul").unwrap();
    assert_eq!(mul.input[0], "h");
    assert!(producer(tg, tg.output[0].name()).is_some_and(|p| p.op_type() == "Cast"));
    assert!(rep.kept_fp32_by_op.contains_key("If"));
    for cond in [true, false] {
        check(
            &m,
            &c,
            &[
                ("x", x_in(&mut r, &[3, 8], 1.0)),
                ("cond", In::Bool(vec![], vec![cond])),
            ],
        );
    }
}

#[test]
fn external_data_is_inlined_into_the_fp16_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = crate::onnx::tests::external_model(dir.path(), "w.bin", &[0.5, -2.0, 3.25]);
    let m = OnnxModel::load(&p).unwrap();
    let (c, rep) = convert(&m);
    assert!(c.external_data_files().unwrap().is_empty());
    assert_eq!(rep.initializers_converted, 1);
    let w = init(g(&c), "w");
    let vals: Vec<f32> = w
        .raw_data()
        .chunks(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    assert_eq!(vals, vec![0.5, -2.0, 3.25]);
    // The converted bytes stand alone.
    let alone = OnnxModel::from_bytes(&c.to_bytes().unwrap(), "/nonexistent").unwrap();
    let orig = crate::onnx::load_with_external_data(&p).unwrap();
    let mut r = Rng::new(9);
    check(&orig, &alone, &[("x", x_in(&mut r, &[2, 3], 1.0))]);
}

#[test]
fn clamping_flushing_and_float_data() {
    let mut t = tensor_f32("w", &[6], &[]);
    t.raw_data = None;
    t.float_data = vec![1e5, -7e4, 1e-9, 3e-6, 1.0, f32::INFINITY];
    let m = Gb::new("g")
        .input("x", F32, &[6])
        .init(t)
        .output("y", F32, &[6])
        .node("Add", &["x", "w"], &["y"], vec![])
        .onnx(17);
    let (c, rep) = convert(&m);
    assert_eq!(rep.values_clamped, 2);
    assert_eq!(rep.values_flushed_to_zero, 1);
    assert_eq!(rep.values_subnormal, 1);
    let w = init(g(&c), "w");
    assert!(w.float_data.is_empty());
    let vals: Vec<f32> = w
        .raw_data()
        .chunks(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    assert_eq!(vals[..3], [65504.0, -65504.0, 0.0]);
    assert!((vals[3] - 3e-6).abs() < 3e-8, "{}", vals[3]);
    assert_eq!(vals[4], 1.0);
    assert_eq!(vals[5], f32::INFINITY);

    // Data that does not match the dims is refused, naming the tensor.
    let mut bad = m.clone();
    bad.proto.graph.as_mut().unwrap().initializer[0]
        .float_data
        .pop();
    let e = convert_to_fp16(&bad, &Fp16Options::default()).unwrap_err();
    assert!(e.message().contains("'w'"), "{e}");
}

#[test]
fn without_keep_io_types_the_io_becomes_fp16() {
    let m = Gb::new("g")
        .input("x", F32, &[-1, 4])
        .init(tensor_f32("w", &[4, 4], &[0.25; 16]))
        .output("y", F32, &[-1, 4])
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .onnx(17);
    let opts = Fp16Options {
        keep_io_types: false,
        ..Default::default()
    };
    let (c, rep) = convert_to_fp16(&m, &opts).unwrap();
    assert_eq!(rep.casts_inserted, 0);
    assert_eq!(
        io_types(&c),
        vec![("x".to_string(), Some(F16)), ("y".to_string(), Some(F16))]
    );
    assert_eq!(g(&c).node.len(), 1);
}

#[test]
fn constant_of_shape_value_and_random_dtype() {
    let mut r = Rng::new(10);
    let m = Gb::new("g")
        .input("x", F32, &[-1, 5])
        .output("y", F32, &[-1, 5])
        .output("noise", F32, &[2])
        .node("Shape", &["x"], &["s"], vec![])
        .node(
            "ConstantOfShape",
            &["s"],
            &["half"],
            vec![a_tensor("value", tensor_f32("", &[1], &[0.5]))],
        )
        .node("Add", &["x", "half"], &["y"], vec![])
        .node(
            "RandomUniform",
            &[],
            &["noise"],
            vec![
                a_ints("shape", &[2]),
                a_float("seed", 1.0),
                a_float("low", 0.0),
                a_float("high", 0.0),
            ],
        )
        .onnx(17);
    let (c, _) = convert(&m);
    assert_eq!(
        attr(node(&c, "ConstantOfShape_1"), "value")
            .unwrap()
            .t
            .data_type(),
        F16
    );
    let ru = node(&c, "RandomUniform_3");
    assert_eq!(
        (attr_i(ru, "dtype"), ru.output[0].as_str()),
        (None, "noise"),
        "generators stay FP32"
    );
    check(&m, &c, &[("x", x_in(&mut r, &[3, 5], 1.0))]);
}

#[test]
fn shared_small_constant_gets_an_fp32_copy() {
    // `eps` feeds an FP32 Add (after ReduceSum) and an FP16 Add.
    let m = Gb::new("g")
        .input("x", F32, &[-1, 4])
        .init(tensor_f32("eps", &[], &[1e-9]))
        .output("a", F32, &[-1, 1])
        .output("b", F32, &[-1, 4])
        .node("ReduceSum", &["x"], &["s"], vec![a_int("keepdims", 1)])
        .node("Add", &["s", "eps"], &["a"], vec![])
        .node("Add", &["x", "eps"], &["b"], vec![])
        .onnx(13);
    let (c, rep) = convert(&m);
    assert_eq!(rep.fp32_copies, 1);
    let fp32_add = node(&c, "Add_1");
    let copy = init(g(&c), &fp32_add.input[1]);
    assert_eq!(copy.data_type(), F32);
    assert_eq!(float_values(copy, "m").unwrap(), vec![1e-9]);
    assert_eq!(node(&c, "Add_2").input[1], "eps");
    assert_eq!(init(g(&c), "eps").data_type(), F16);
    let mut r = Rng::new(11);
    check(&m, &c, &[("x", x_in(&mut r, &[2, 4], 1.0))]);
}

#[test]
fn unknown_ops_keep_their_original_types() {
    let m = {
        let mut b = Gb::new("g")
            .input("x", F32, &[-1, 4])
            .init(tensor_f32("w", &[4, 4], &[0.25; 16]))
            .output("y", F32, &[-1, 4])
            .node("MatMul", &["x", "w"], &["h"], vec![])
            .node("FancyOp", &["h"], &["f"], vec![])
            .node("Relu", &["f"], &["y"], vec![]);
        b.g.node[1].set_domain("com.example".into());
        b.onnx(17)
    };
    let (c, rep) = convert(&m);
    let gr = g(&c);
    assert!(
        input_cast_to(gr, node(&c, "FancyOp_1"), 0, F32),
        "custom op gets FP32 as before"
    );
    // Its output type is unknown: the consumer runs as before, on the untouched value.
    assert_eq!(node(&c, "Relu_2").input, vec!["f"]);
    assert_eq!(node(&c, "Relu_2").output, vec!["y"]);
    assert_eq!(rep.nodes_kept_fp32, 2, "FancyOp and its consumer");
}

#[test]
fn specialize_batch_sets_first_dims() {
    let m = Gb::new("g")
        .input("x", F32, &[-1, 4])
        .input("w", F32, &[-1])
        .init(tensor_f32("w", &[1], &[1.0]))
        .output("y", F32, &[-1, 4])
        .node("Mul", &["x", "w"], &["y"], vec![])
        .onnx(17);
    let s = specialize_batch(&m, 8).unwrap();
    let sig = s.signature().unwrap();
    assert_eq!(sig.inputs[0].dims, vec![8, 4]);
    assert_eq!(sig.outputs[0].dims, vec![8, 4]);
    let w = &s.graph().input[1];
    assert_eq!(w, &m.graph().input[1], "initializer inputs untouched");
    assert!(specialize_batch(&m, 0).is_err());
}

#[test]
fn loop_body_with_outer_scope_weights() {
    let mut r = Rng::new(12);
    let body = Gb::new("body")
        .input("i", I64, &[])
        .input("cond_in", BOOL, &[])
        .input("v", F32, &[4])
        .output("cond_out", BOOL, &[])
        .output("v_out", F32, &[4])
        .node("Identity", &["cond_in"], &["cond_out"], vec![])
        .node("Mul", &["v", "w"], &["vm"], vec![])
        .node("Tanh", &["vm"], &["v_out"], vec![])
        .g;
    let m = Gb::new("g")
        .input("x", F32, &[4])
        .init(tensor_f32("w", &[4], &r.vec(4, 2.0)))
        .init(tensor_i64("trips", &[], &[3]))
        .output("y", F32, &[4])
        .node("Relu", &["x"], &["v0"], vec![])
        .node(
            "Loop",
            &["trips", "", "v0"],
            &["y"],
            vec![a_graph("body", body)],
        )
        .onnx(17);
    let (c, rep) = convert(&m);
    assert_eq!(
        init(g(&c), "w").data_type(),
        F16,
        "used only inside the body, in FP16"
    );
    let lp = node(&c, "Loop_1");
    assert!(
        input_cast_to(g(&c), lp, 2, F32),
        "the loop-carried value enters in FP32"
    );
    let b = &attr(lp, "body").unwrap().g;
    assert_eq!(vi_elem_type(&b.input[2]), Some(F32));
    assert_eq!(vi_elem_type(&b.output[1]), Some(F32));
    let mul = b.node.iter().find(|n| n.op_type() == "Mul").unwrap();
    assert!(input_cast_to(b, mul, 0, F16));
    assert_eq!(mul.input[1], "w");
    assert_eq!(rep.kept_fp32_by_op.get("Loop"), Some(&1));
    check(&m, &c, &[("x", x_in(&mut r, &[4], 1.0))]);
}

/// A BERT-like encoder layer (dynamic batch and sequence, Shape-based reshapes, attention mask,
/// Softmax, LayerNorm, Erf-GELU, residuals): every rule at once.
#[test]
fn encoder_layer() {
    let mut r = Rng::new(13);
    let (d, ff) = (16i64, 32i64);
    let mut b = Gb::new("enc")
        .input("x", F32, &[-1, -1, d])
        .input("mask", I64, &[-1, -1])
        .output("y", F32, &[-1, -1, d])
        .init(tensor_i64("i0", &[1], &[0]))
        .init(tensor_i64("i1", &[1], &[1]))
        .init(tensor_i64("c2", &[1], &[2]))
        .init(tensor_i64("c8", &[1], &[8]))
        .init(tensor_i64("c16", &[1], &[d]))
        .init(tensor_i64("ax12", &[2], &[1, 2]))
        .init(tensor_f32("one", &[], &[1.0]))
        .init(tensor_f32("neg", &[], &[-10000.0]))
        .init(tensor_f32("scale", &[], &[8f32.sqrt()]));
    for w in ["q", "k", "v", "o"] {
        b = b
            .init(tensor_f32(
                &format!("W{w}"),
                &[d, d],
                &r.vec((d * d) as usize, 0.4),
            ))
            .init(tensor_f32(&format!("b{w}"), &[d], &r.vec(d as usize, 0.1)));
    }
    for (n, dims) in [("W1", [d, ff]), ("W2", [ff, d])] {
        b = b.init(tensor_f32(n, &dims, &r.vec((d * ff) as usize, 0.3)));
    }
    for (n, len, s) in [
        ("b1", ff, 0.1),
        ("b2", d, 0.1),
        ("g1", d, 1.0),
        ("be1", d, 0.1),
        ("g2", d, 1.0),
        ("be2", d, 0.1),
    ] {
        b = b.init(tensor_f32(n, &[len], &r.vec(len as usize, s)));
    }
    b = b
        .node("Shape", &["x"], &["s"], vec![])
        .node("Gather", &["s", "i0"], &["n"], vec![a_int("axis", 0)])
        .node("Gather", &["s", "i1"], &["sl"], vec![a_int("axis", 0)])
        .node(
            "Concat",
            &["n", "sl", "c2", "c8"],
            &["shp4"],
            vec![a_int("axis", 0)],
        )
        .node(
            "Concat",
            &["n", "sl", "c16"],
            &["shp3"],
            vec![a_int("axis", 0)],
        );
    for w in ["q", "k", "v"] {
        let (mm, add, r4) = (format!("{w}mm"), format!("{w}a"), format!("{w}4"));
        b = b
            .node("MatMul", &["x", &format!("W{w}")], &[&mm], vec![])
            .node("Add", &[&mm, &format!("b{w}")], &[&add], vec![])
            .node("Reshape", &[&add, "shp4"], &[&r4], vec![]);
    }
    b = b
        .node(
            "Transpose",
            &["q4"],
            &["qt"],
            vec![a_ints("perm", &[0, 2, 1, 3])],
        )
        .node(
            "Transpose",
            &["k4"],
            &["kt"],
            vec![a_ints("perm", &[0, 2, 3, 1])],
        )
        .node(
            "Transpose",
            &["v4"],
            &["vt"],
            vec![a_ints("perm", &[0, 2, 1, 3])],
        )
        .node("MatMul", &["qt", "kt"], &["sc"], vec![])
        .node("Div", &["sc", "scale"], &["scs"], vec![])
        .node("Cast", &["mask"], &["mf"], vec![a_int("to", F32 as i64)])
        .node("Sub", &["one", "mf"], &["inv"], vec![])
        .node("Mul", &["inv", "neg"], &["mb"], vec![])
        .node("Unsqueeze", &["mb", "ax12"], &["mb4"], vec![])
        .node("Add", &["scs", "mb4"], &["scm"], vec![])
        .node("Softmax", &["scm"], &["p"], vec![a_int("axis", -1)])
        .node("MatMul", &["p", "vt"], &["ctx"], vec![])
        .node(
            "Transpose",
            &["ctx"],
            &["ctxt"],
            vec![a_ints("perm", &[0, 2, 1, 3])],
        )
        .node("Reshape", &["ctxt", "shp3"], &["ctx3"], vec![])
        .node("MatMul", &["ctx3", "Wo"], &["om"], vec![])
        .node("Add", &["om", "bo"], &["o"], vec![])
        .node("Add", &["x", "o"], &["h"], vec![])
        .node(
            "LayerNormalization",
            &["h", "g1", "be1"],
            &["ln1"],
            vec![a_int("axis", -1)],
        )
        .node("MatMul", &["ln1", "W1"], &["f1m"], vec![])
        .node("Add", &["f1m", "b1"], &["f1"], vec![])
        .node(
            "Constant",
            &[],
            &["sqrt2"],
            vec![a_float("value_float", std::f32::consts::SQRT_2)],
        )
        .node("Div", &["f1", "sqrt2"], &["gd"], vec![])
        .node("Erf", &["gd"], &["ge"], vec![])
        .node("Add", &["ge", "one"], &["ge1"], vec![])
        .node("Mul", &["f1", "ge1"], &["gm"], vec![])
        .node(
            "Constant",
            &[],
            &["half"],
            vec![a_float("value_float", 0.5)],
        )
        .node("Mul", &["gm", "half"], &["gelu"], vec![])
        .node("MatMul", &["gelu", "W2"], &["f2m"], vec![])
        .node("Add", &["f2m", "b2"], &["f2"], vec![])
        .node("Add", &["ln1", "f2"], &["h2"], vec![])
        .node(
            "LayerNormalization",
            &["h2", "g2", "be2"],
            &["y"],
            vec![a_int("axis", -1)],
        );
    let m = b.onnx(17);
    let (c, rep) = convert(&m);
    let gr = g(&c);
    // The integer shape path is untouched; Softmax / LayerNorm are FP32; weights FP16.
    for n in ["Shape_0", "Gather_1", "Gather_2", "Concat_3", "Concat_4"] {
        assert_eq!(
            node(&c, n),
            m.graph().node.iter().find(|k| k.name() == n).unwrap()
        );
    }
    assert_eq!(init(gr, "Wq").data_type(), F16);
    assert_eq!(init(gr, "g1").data_type(), F32);
    assert_eq!(rep.kept_fp32_by_op.get("Softmax"), Some(&1));
    assert_eq!(rep.kept_fp32_by_op.get("LayerNormalization"), Some(&2));
    let y = producer(gr, "y").unwrap();
    assert_eq!(
        y.op_type(),
        "LayerNormalization",
        "an FP32 node writes the FP32 output directly"
    );
    let (n, s) = (2i64, 5i64);
    let mask: Vec<i64> = (0..n * s).map(|i| (i % s < s - 1 - i / s) as i64).collect();
    check(
        &m,
        &c,
        &[
            ("x", x_in(&mut r, &[n, s, d], 1.0)),
            ("mask", In::I64(vec![n, s], mask)),
        ],
    );
}

#[test]
fn resize_scales_stay_float() {
    let mut r = Rng::new(14);
    let m = Gb::new("g")
        .input("x", F32, &[1, 2, 4, 4])
        .init(tensor_f32("w", &[2, 2, 1, 1], &r.vec(4, 1.0)))
        .init(tensor_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0]))
        .output("y", F32, &[1, 2, 8, 8])
        .node("Conv", &["x", "w"], &["c"], vec![])
        .node("Resize", &["c", "", "scales"], &["y"], vec![])
        .onnx(17);
    let (c, _) = convert(&m);
    let rs = node(&c, "Resize_1");
    assert_eq!(rs.input[2], "scales");
    assert_eq!(init(g(&c), "scales").data_type(), F32);
    assert!(
        producer(g(&c), &rs.input[0]).is_some_and(|p| p.op_type() == "Conv"),
        "X in FP16"
    );
    check(&m, &c, &[("x", x_in(&mut r, &[1, 2, 4, 4], 1.0))]);
}

/// Sweep over the models shipped with python's onnx backend tests (real CNNs, PyTorch-converted
/// layers): every model that converts must pass the strict onnx checker and, where ONNX Runtime
/// runs the original, run and match it (min row cosine ≥ 0.999 on FLOAT outputs). Slow and
/// needs python onnx + onnxruntime: `cargo test --lib onnx_backend_corpus -- --ignored --nocapture`.
#[test]
#[ignore]
fn onnx_backend_corpus() {
    let Ok(o) = std::process::Command::new("python3")
        .args(["-c", "import onnx,os;print(os.path.dirname(onnx.__file__))"])
        .output()
    else {
        println!("SKIPPED: no python3");
        return;
    };
    let root = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
        .join("backend/test/data");
    let mut models = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "onnx") {
                models.push(p);
            }
        }
    }
    models.sort();
    assert!(!models.is_empty(), "no models under {}", root.display());
    let out = tempfile::tempdir().unwrap();
    let mut pairs = String::new();
    let mut conv_errors = Vec::new();
    for (i, p) in models.iter().enumerate() {
        let m = match OnnxModel::load(p) {
            Ok(m) => m,
            Err(e) => {
                conv_errors.push(format!("{}: load: {e}", p.display()));
                continue;
            }
        };
        match convert_to_fp16(&m, &Fp16Options::default()) {
            Ok((c, _)) => {
                let cp = out.path().join(format!("{i}.onnx"));
                std::fs::write(&cp, c.to_bytes().unwrap()).unwrap();
                pairs.push_str(&format!("{}\t{}\n", p.display(), cp.display()));
            }
            Err(e) => conv_errors.push(format!("{}: {e}", p.display())),
        }
    }
    let list = out.path().join("pairs.tsv");
    std::fs::write(&list, pairs).unwrap();
    let script = r#"
import sys, glob, os, numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
ok = skipped = 0; bad = []
for line in open(sys.argv[1]):
    orig, conv = line.rstrip("\n").split("\t")
    name = os.path.relpath(orig, sys.argv[2])
    try:
        onnx.checker.check_model(onnx.load(conv), full_check=True)
    except Exception as e:
        bad.append(f"{name}: checker: {str(e)[:300]}"); continue
    so = ort.SessionOptions(); so.log_severity_level = 3
    try:
        s0 = ort.InferenceSession(orig, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        skipped += 1; print("SKIP", name, str(e)[:150].replace("\n", " ")); continue
    try:
        s1 = ort.InferenceSession(conv, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        bad.append(f"{name}: ORT load: {str(e)[:300]}"); continue
    d = os.path.dirname(orig)
    files = sorted(glob.glob(os.path.join(d, "test_data_set_0", "input_*.pb")))
    feeds = {}
    rng = np.random.default_rng(0)
    if files and len(files) == len(s0.get_inputs()):
        for i, f in zip(s0.get_inputs(), files):
            t = onnx.TensorProto(); t.ParseFromString(open(f, "rb").read())
            feeds[i.name] = numpy_helper.to_array(t)
    else:
        for i in s0.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 2 for d in i.shape]
            if i.type == "tensor(float)": feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
            elif i.type == "tensor(int64)": feeds[i.name] = np.zeros(shape, np.int64)
            elif i.type == "tensor(bool)": feeds[i.name] = np.ones(shape, bool)
            else: feeds = None; break
    if feeds is None: skipped += 1; print("SKIP", name, "input types"); continue
    try:
        a = s0.run(None, feeds)
    except Exception as e:
        skipped += 1; print("SKIP", name, str(e)[:150].replace("\n", " ")); continue
    try:
        b = s1.run(None, feeds)
    except Exception as e:
        bad.append(f"{name}: ORT run: {str(e)[:300]}"); continue
    worst = 1.0
    for x, y in zip(a, b):
        if not isinstance(x, np.ndarray) or x.dtype != np.float32: continue
        if x.shape != y.shape or y.dtype != np.float32:
            worst = -2; break
        fin = np.isfinite(x)
        if not np.array_equal(fin, np.isfinite(y)):
            worst = -3; break
        x = np.where(fin, x, 0); y = np.where(fin, y, 0)
        r = x.reshape(-1, x.shape[-1] if x.ndim and x.shape[-1] else 1).astype(np.float64)
        q = y.reshape(r.shape).astype(np.float64)
        na = np.linalg.norm(r, axis=1); nb = np.linalg.norm(q, axis=1)
        cos = np.where((na == 0) & (nb == 0), 1.0, (r * q).sum(1) / np.maximum(na * nb, 1e-300))
        worst = min(worst, float(np.nan_to_num(cos.min(), nan=-1)))
    if worst < 0.999: bad.append(f"{name}: min row cosine {worst}")
    else: ok += 1
print(f"corpus: {ok} match, {skipped} skipped (original not runnable on ORT CPU), {len(bad)} bad")
for b in bad: print("BAD", b)
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", script, list.to_str().unwrap(), root.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    println!(
        "{} models, {} not converted",
        models.len(),
        conv_errors.len()
    );
    for e in &conv_errors {
        println!("NOT CONVERTED {e}");
    }
    println!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success());
    assert!(
        stdout.contains(" 0 bad"),
        "some converted models are invalid or inaccurate"
    );
}

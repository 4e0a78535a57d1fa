//! Bounded fuzzing of every parser a model author, an operator or a client can feed (issue 9,
//! item 9): config JSON → validated config; ONNX bytes → signature and FP16 converter; cache
//! entry bytes → header verification; request tensors → gather (through the host, on the built
//! .so). Each target generates inputs with proptest strategies for a wall-clock budget
//! (`RUSTTRT_FUZZ_SECONDS`, default 20 s per target) from a fixed seed (`RUSTTRT_FUZZ_SEED`),
//! so CI runs are reproducible; a panic (or a broken invariant) is shrunk to a minimal input
//! and reported with the seed. Results are recorded in docs/reliability.md.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use protobuf::{Message, MessageField};
use rusttrt_host::{InferRequest, InputTensor, MemoryType};
use serde_json::{json, Value};
use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use triton_rusttrt::backend::autocomplete;
use triton_rusttrt::backend::config::ModelConfig;
use triton_rusttrt::backend::params::ModelParams;
use triton_rusttrt::backend::BackendState;
use triton_rusttrt::cache::{self, CacheConfig, CacheKey, CacheStatus, EngineCache};
use triton_rusttrt::onnx::fp16::{convert_to_fp16, Fp16Options};
use triton_rusttrt::onnx::proto::onnx as pb;
use triton_rusttrt::onnx::OnnxModel;

// ---- harness ------------------------------------------------------------------------------------

fn budget() -> Duration {
    let s = std::env::var("RUSTTRT_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(20.0);
    Duration::from_secs_f64(s)
}

fn seed() -> u64 {
    std::env::var("RUSTTRT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261204)
}

/// Runs `check` on values of `strategy` until the budget is spent. `check` returns `Err` for a
/// broken invariant; a panic counts as a finding too. A finding is shrunk and reported.
fn fuzz<S>(name: &str, strategy: S, check: impl Fn(&S::Value) -> Result<(), String>)
where
    S: Strategy,
    S::Value: Debug,
{
    let seed = seed();
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(name.len() as u64).to_le_bytes());
    for (i, b) in name.bytes().enumerate() {
        bytes[16 + i % 16] ^= b;
    }
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let fails = |v: &S::Value| -> Option<String> {
        match catch_unwind(AssertUnwindSafe(|| check(v))) {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(p) => Some(format!(
                "panic: {}",
                p.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| p.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            )),
        }
    };
    let (start, budget) = (Instant::now(), budget());
    let mut runs = 0u64;
    while start.elapsed() < budget {
        let mut tree = strategy.new_tree(&mut runner).expect("strategy");
        runs += 1;
        let Some(mut why) = fails(&tree.current()) else {
            continue;
        };
        // Shrink, as proptest does: simplify while it still fails, complicate when it passes.
        let mut minimal = format!("{:?}", tree.current());
        let mut steps = 0;
        // Quiet while shrinking (every step that still fails would print its panic).
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        if tree.simplify() {
            while steps < 5000 {
                steps += 1;
                match fails(&tree.current()) {
                    Some(w) => {
                        why = w;
                        minimal = format!("{:?}", tree.current());
                        if !tree.simplify() {
                            break;
                        }
                    }
                    None => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
        }
        std::panic::set_hook(hook);
        panic!(
            "fuzz {name}: finding after {runs} executions (RUSTTRT_FUZZ_SEED={seed}): {why}\nminimal input: {minimal}"
        );
    }
    eprintln!(
        "fuzz {name}: {runs} executions in {:.1} s (RUSTTRT_FUZZ_SEED={seed}), no finding",
        start.elapsed().as_secs_f64()
    );
}

/// A byte-level edit of a seed input. Positions are taken modulo the current length.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// A protobuf varint (lengths, tags, dims) written over the bytes at a position.
    Varint(usize, u64),
    /// A little-endian u64 / u32 written over the bytes at a position (cache header fields).
    U64(usize, u64),
    U32(usize, u32),
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(u32::MAX as u64),
        Just(1 << 31),
        Just(1 << 32),
        Just(1 << 40),
        0u64..4096,
        any::<u64>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Edit::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Set(p, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, b)| Edit::Insert(p, b)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Remove(p, n)),
        (any::<usize>(), interesting_u64()).prop_map(|(p, v)| Edit::Varint(p, v)),
        (any::<usize>(), interesting_u64()).prop_map(|(p, v)| Edit::U64(p, v)),
        (any::<usize>(), any::<u32>()).prop_map(|(p, v)| Edit::U32(p, v)),
    ]
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let at = |p: usize, b: &Vec<u8>| if b.is_empty() { 0 } else { p % b.len() };
        match e {
            Edit::Flip(p, bit) if !b.is_empty() => {
                let i = at(*p, &b);
                b[i] ^= 1 << bit;
            }
            Edit::Set(p, v) if !b.is_empty() => {
                let i = at(*p, &b);
                b[i] = *v;
            }
            Edit::Truncate(p) => {
                let i = at(*p, &b);
                b.truncate(i);
            }
            Edit::Insert(p, v) => {
                let i = at(*p, &b);
                b.splice(i..i, v.iter().copied());
            }
            Edit::Remove(p, n) if !b.is_empty() => {
                let i = at(*p, &b);
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Edit::Varint(p, v) => {
                let i = at(*p, &b);
                let mut enc = Vec::new();
                let mut v = *v;
                loop {
                    let byte = (v & 0x7f) as u8;
                    v >>= 7;
                    if v == 0 {
                        enc.push(byte);
                        break;
                    }
                    enc.push(byte | 0x80);
                }
                overwrite(&mut b, i, &enc);
            }
            Edit::U64(p, v) => {
                let i = at(*p, &b);
                overwrite(&mut b, i, &v.to_le_bytes());
            }
            Edit::U32(p, v) => {
                let i = at(*p, &b);
                overwrite(&mut b, i, &v.to_le_bytes());
            }
            _ => {}
        }
    }
    b
}

fn overwrite(b: &mut Vec<u8>, at: usize, with: &[u8]) {
    for (k, v) in with.iter().enumerate() {
        match b.get_mut(at + k) {
            Some(x) => *x = *v,
            None => b.push(*v),
        }
    }
}

// ---- ONNX bytes → signature and FP16 converter ------------------------------------------------

fn onnx_seeds() -> Vec<Vec<u8>> {
    let mut paths = vec![tiny_clip_dir().join("1/model.onnx")];
    for e in std::fs::read_dir(root().join("tests/data/models")).unwrap() {
        let p = e.unwrap().path().join("1/model.onnx");
        if p.is_file() && std::fs::metadata(&p).unwrap().len() < 1 << 20 {
            paths.push(p);
        }
    }
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// What the backend does with model bytes at load and build: parse, signature, external data
/// listing, FP16 conversion, serialization of the result.
fn exercise_onnx(bytes: &[u8], dir: &Path) {
    let Ok(m) = OnnxModel::from_bytes(bytes, dir) else {
        return;
    };
    let _ = m.signature();
    let _ = m.external_data_files();
    let _ = m.check_external_data();
    if let Ok((fp16, _report)) = convert_to_fp16(&m, &Fp16Options::default()) {
        let _ = fp16.signature();
        let _ = fp16.to_bytes();
    }
    let bare = Fp16Options {
        keep_io_types: false,
        keep_fp32_ops: Default::default(),
    };
    let _ = convert_to_fp16(&m, &bare);
}

#[test]
fn fuzz_onnx_bytes() {
    let seeds = onnx_seeds();
    assert!(seeds.len() > 10, "the committed test models are the seeds");
    let dir = tempfile::tempdir().unwrap();
    // External data files the mutated models may name.
    std::fs::write(dir.path().join("model.onnx.data"), vec![0x3c; 4096]).unwrap();
    let n = seeds.len();
    fuzz(
        "onnx_bytes",
        (0..n, prop::collection::vec(edit(), 1..8)),
        |(i, edits)| {
            exercise_onnx(&apply(&seeds[*i], edits), dir.path());
            Ok(())
        },
    );
}

const ELEM_TYPES: &[i32] = &[
    0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 23, 99, -1,
];
const OPS: &[&str] = &[
    "Add",
    "Mul",
    "MatMul",
    "Gemm",
    "Cast",
    "Constant",
    "Identity",
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "Gather",
    "Reshape",
    "Concat",
    "Resize",
    "Pow",
    "If",
    "Loop",
    "Range",
    "ConstantOfShape",
    "NotAnOp",
];

#[derive(Debug, Clone)]
struct GenTensor {
    name: usize,
    elem: i32,
    dims: Vec<i64>,
    raw: Option<Vec<u8>>,
    floats: Vec<f32>,
    ints: Vec<i64>,
    external: Option<(String, String, String)>,
}

#[derive(Debug, Clone)]
struct GenNode {
    op: usize,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    attr_ints: Vec<i64>,
    attr_tensor: Option<GenTensor>,
    subgraph: bool,
}

#[derive(Debug, Clone)]
struct GenModel {
    inputs: Vec<(usize, i32, Vec<i64>, bool)>,
    outputs: Vec<(usize, i32, Vec<i64>)>,
    inits: Vec<GenTensor>,
    nodes: Vec<GenNode>,
    opset: i64,
}

fn dim() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0i64..5,
        1 => Just(-1i64),
        1 => Just(-7i64),
        1 => Just(1i64 << 31),
        1 => Just(1i64 << 40),
        1 => Just(i64::MAX),
    ]
}

fn gen_tensor() -> impl Strategy<Value = GenTensor> {
    (
        0usize..12,
        prop::sample::select(ELEM_TYPES),
        prop::collection::vec(dim(), 0..4),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        prop::collection::vec(
            prop_oneof![
                any::<f32>(),
                Just(1e9f32),
                Just(-70000.0f32),
                Just(f32::NAN),
                Just(f32::INFINITY)
            ],
            0..8,
        ),
        prop::collection::vec(any::<i64>(), 0..4),
        prop::option::of((
            prop::sample::select(&["model.onnx.data", "../x", "/etc/passwd", "", "missing"][..]),
            prop::sample::select(&["0", "8", "-1", "18446744073709551615", "x"][..]),
            prop::sample::select(&["4", "16", "0", "99999999999", "y"][..]),
        )),
    )
        .prop_map(|(name, elem, dims, raw, floats, ints, ext)| GenTensor {
            name,
            elem,
            dims,
            raw,
            floats,
            ints,
            external: ext.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())),
        })
}

fn gen_model() -> impl Strategy<Value = GenModel> {
    let node = (
        0..OPS.len(),
        prop::collection::vec(0usize..12, 0..4),
        prop::collection::vec(0usize..12, 0..3),
        prop::collection::vec(prop_oneof![-3i64..5, Just(i64::MAX)], 0..3),
        prop::option::of(gen_tensor()),
        any::<bool>(),
    )
        .prop_map(
            |(op, inputs, outputs, attr_ints, attr_tensor, subgraph)| GenNode {
                op,
                inputs,
                outputs,
                attr_ints,
                attr_tensor,
                subgraph,
            },
        );
    (
        prop::collection::vec(
            (
                0usize..12,
                prop::sample::select(ELEM_TYPES),
                prop::collection::vec(dim(), 0..4),
                any::<bool>(),
            ),
            0..4,
        ),
        prop::collection::vec(
            (
                0usize..12,
                prop::sample::select(ELEM_TYPES),
                prop::collection::vec(dim(), 0..4),
            ),
            0..3,
        ),
        prop::collection::vec(gen_tensor(), 0..4),
        prop::collection::vec(node, 0..8),
        prop_oneof![Just(17i64), Just(1), Just(99), Just(-1)],
    )
        .prop_map(|(inputs, outputs, inits, nodes, opset)| GenModel {
            inputs,
            outputs,
            inits,
            nodes,
            opset,
        })
}

fn tname(i: usize) -> String {
    format!("t{i}")
}

fn build_tensor(t: &GenTensor) -> pb::TensorProto {
    let mut p = pb::TensorProto::new();
    p.set_name(tname(t.name));
    p.set_data_type(t.elem);
    p.dims = t.dims.clone();
    p.raw_data = t.raw.clone();
    p.float_data = t.floats.clone();
    p.int64_data = t.ints.clone();
    if let Some((loc, off, len)) = &t.external {
        p.set_data_location(pb::tensor_proto::DataLocation::EXTERNAL);
        for (k, v) in [("location", loc), ("offset", off), ("length", len)] {
            let mut e = pb::StringStringEntryProto::new();
            e.set_key(k.into());
            e.set_value(v.clone());
            p.external_data.push(e);
        }
    }
    p
}

fn build_vi(name: usize, elem: i32, dims: &[i64], shaped: bool) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::Dimension;
    use pb::type_proto::{Tensor, Value as TV};
    let mut tt = Tensor::new();
    tt.set_elem_type(elem);
    if shaped {
        let mut s = pb::TensorShapeProto::new();
        for &d in dims {
            let mut x = Dimension::new();
            if d == -1 {
                x.set_dim_param("N".into());
            } else {
                x.set_dim_value(d);
            }
            s.dim.push(x);
        }
        tt.shape = MessageField::some(s);
    }
    let mut tp = pb::TypeProto::new();
    tp.value = Some(TV::TensorType(tt));
    let mut v = pb::ValueInfoProto::new();
    v.set_name(tname(name));
    v.type_ = MessageField::some(tp);
    v
}

fn build_graph(m: &GenModel, depth: u32) -> pb::GraphProto {
    let mut g = pb::GraphProto::new();
    g.set_name(format!("g{depth}"));
    for (n, e, d, shaped) in &m.inputs {
        g.input.push(build_vi(*n, *e, d, *shaped));
    }
    for (n, e, d) in &m.outputs {
        g.output.push(build_vi(*n, *e, d, true));
    }
    g.initializer = m.inits.iter().map(build_tensor).collect();
    for n in &m.nodes {
        let mut p = pb::NodeProto::new();
        p.set_op_type(OPS[n.op].into());
        p.input = n.inputs.iter().map(|&i| tname(i)).collect();
        p.output = n.outputs.iter().map(|&i| tname(i)).collect();
        for (k, v) in n.attr_ints.iter().enumerate() {
            let mut a = pb::AttributeProto::new();
            a.set_name(["axis", "to", "keepdims"][k % 3].into());
            a.set_type(pb::attribute_proto::AttributeType::INT);
            a.set_i(*v);
            p.attribute.push(a);
        }
        if let Some(t) = &n.attr_tensor {
            let mut a = pb::AttributeProto::new();
            a.set_name("value".into());
            a.set_type(pb::attribute_proto::AttributeType::TENSOR);
            a.t = MessageField::some(build_tensor(t));
            p.attribute.push(a);
        }
        if n.subgraph && depth < 2 {
            let mut a = pb::AttributeProto::new();
            a.set_name("then_branch".into());
            a.set_type(pb::attribute_proto::AttributeType::GRAPH);
            a.g = MessageField::some(build_graph(m, depth + 1));
            p.attribute.push(a);
        }
        g.node.push(p);
    }
    g
}

/// Structure-aware models: random graphs over a small name pool, with odd element types,
/// negative / huge dims, initializers whose data disagrees with their dims, FP16-unsafe
/// constants, external data with bad locations, subgraphs.
#[test]
fn fuzz_onnx_models() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.onnx.data"), vec![0x3c; 4096]).unwrap();
    fuzz("onnx_models", gen_model(), |gm| {
        let mut m = pb::ModelProto::new();
        m.set_ir_version(8);
        let mut o = pb::OperatorSetIdProto::new();
        o.set_version(gm.opset);
        m.opset_import.push(o);
        m.graph = MessageField::some(build_graph(gm, 0));
        let bytes = m.write_to_bytes().map_err(|e| e.to_string())?;
        exercise_onnx(&bytes, dir.path());
        Ok(())
    });
}

// ---- cache entry bytes → header verification --------------------------------------------------

#[test]
fn fuzz_cache_entries() {
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().to_path_buf();
    let cache = EngineCache::new(CacheConfig {
        locations: vec![loc.clone()],
        max_bytes: None,
        memory_fallback: false,
    });
    let key = CacheKey::builder()
        .field("model_digest", "fuzz")
        .field("engine", "onnxruntime")
        .build();
    let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let out = cache
        .get_or_build(&key, "fuzz", || Ok(payload.clone()))
        .unwrap();
    let entry: PathBuf = out.location.unwrap();
    let valid = std::fs::read(&entry).unwrap();
    fuzz(
        "cache_entries",
        prop::collection::vec(edit(), 1..6),
        |edits| {
            let bytes = apply(&valid, edits);
            std::fs::write(&entry, &bytes).map_err(|e| e.to_string())?;
            let _ = cache::verify(&loc);
            let _ = cache::list(&loc);
            let out = cache
                .get_or_build(&key, "fuzz", || Ok(payload.clone()))
                .map_err(|e| e.to_string())?;
            // A hit is only possible for bytes that still verify, which (short of a SHA-256
            // collision) means the original payload.
            if out.status == CacheStatus::Hit && *out.artifact != payload {
                return Err(format!("a tampered entry was served: {:?}", out.status));
            }
            if out.status != CacheStatus::Hit && bytes == valid {
                return Err(format!("a valid entry was not a hit: {:?}", out.status));
            }
            Ok(())
        },
    );
}

// ---- config JSON → validated config -----------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![
            Just(-1i64),
            Just(0),
            Just(1),
            Just(8),
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>()
        ]
        .prop_map(Value::from),
        prop_oneof![Just(0.5f64), Just(1e300), Just(-0.0)].prop_map(Value::from),
        prop::sample::select(
            &[
                "",
                "-1",
                "8",
                "99999999999999999999",
                "TYPE_FP32",
                "TYPE_STRING",
                "TYPE_BOOL",
                "FP32",
                "KIND_GPU",
                "A",
                "B",
                "SUM",
                "nan",
                "true",
                "engine",
                "precision_mode",
                "FP16",
            ][..]
        )
        .prop_map(|s| Value::from(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(
                    &[
                        "name",
                        "data_type",
                        "dims",
                        "reshape",
                        "shape",
                        "max_batch_size",
                        "string_value",
                        "preferred_batch_size",
                        "optional",
                        "is_shape_tensor",
                    ][..]
                )
                .prop_map(str::to_string),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON edit: a path of keys / indices into the config, and what to put there (None =
/// remove).
type JsonEdit = (Vec<(usize, usize)>, Option<Value>);

const CONFIG_KEYS: &[&str] = &[
    "name",
    "max_batch_size",
    "input",
    "output",
    "dims",
    "data_type",
    "reshape",
    "shape",
    "dynamic_batching",
    "preferred_batch_size",
    "max_queue_delay_microseconds",
    "parameters",
    "optimization",
    "instance_group",
    "default_model_filename",
    "backend",
    "string_value",
    "precision_mode",
];

fn edit_json(v: &mut Value, path: &[(usize, usize)], new: &Option<Value>) {
    let Some(((k, i), rest)) = path.split_first() else {
        return;
    };
    match v {
        Value::Object(map) => {
            let key = CONFIG_KEYS[k % CONFIG_KEYS.len()].to_string();
            if rest.is_empty() {
                match new {
                    Some(n) => {
                        map.insert(key, n.clone());
                    }
                    None => {
                        map.remove(&key);
                    }
                }
            } else if let Some(child) = map.get_mut(&key) {
                edit_json(child, rest, new);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            if rest.is_empty() {
                match new {
                    Some(x) => a[i % n] = x.clone(),
                    None => {
                        a.remove(i % n);
                    }
                }
            } else {
                edit_json(&mut a[i % n], rest, new);
            }
        }
        _ => {}
    }
}

#[test]
fn fuzz_config_json() {
    let sig = OnnxModel::load(test_model("multi_io").join("1/model.onnx"))
        .unwrap()
        .signature()
        .unwrap();
    let base = json!({
        "name": "m",
        "backend": "rusttrt",
        "max_batch_size": 8,
        "input": [
            {"name": "A", "data_type": "TYPE_FP32", "dims": [4]},
            {"name": "B", "data_type": "TYPE_INT64", "dims": [2], "reshape": {"shape": [2]}}
        ],
        "output": [
            {"name": "SUM", "data_type": "TYPE_FP32", "dims": [4]},
            {"name": "CAST", "data_type": "TYPE_FP32", "dims": [2]},
            {"name": "ROWSUM", "data_type": "TYPE_FP32", "dims": [1], "reshape": {"shape": []}}
        ],
        "dynamic_batching": {"preferred_batch_size": [4], "max_queue_delay_microseconds": 100},
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "parameters": {"precision_mode": {"string_value": "FP32"}},
        "optimization": {"input_pinned_memory": {"enable": true}}
    });
    // The base itself must be accepted, or the fuzzing explores nothing.
    let cfg = ModelConfig::parse(base.clone()).unwrap();
    cfg.validate(&sig).unwrap();
    let backend = BackendState::default();
    let path_step = (0usize..64, 0usize..8);
    let json_edit = (
        prop::collection::vec(path_step, 1..4),
        prop::option::of(json_value()),
    );
    fuzz(
        "config_json",
        prop::collection::vec(json_edit, 1..5),
        |edits: &Vec<JsonEdit>| {
            let mut raw = base.clone();
            for (path, new) in edits {
                edit_json(&mut raw, path, new);
            }
            let raw = match autocomplete::complete(&raw, &sig, 8) {
                Ok(Some(c)) => c,
                _ => raw,
            };
            if let Ok(cfg) = ModelConfig::parse(raw) {
                if cfg.validate(&sig).is_ok() {
                    let _ = ModelParams::resolve(
                        &cfg,
                        &backend,
                        std::path::Path::new("/nonexistent-model-dir"),
                    );
                }
            }
            Ok(())
        },
    );
}

// ---- request tensors → gather (through the host, on the built .so) ----------------------------

#[derive(Debug, Clone)]
struct GenInput {
    name: usize,
    dtype: u32,
    shape: Vec<i64>,
    /// 0: exact byte size; 1: one byte short; 2: one byte over; 3: empty; 4: 3 bytes.
    size: u8,
    chunks: usize,
    pinned: bool,
}

#[derive(Debug, Clone)]
struct GenRequest {
    inputs: Vec<GenInput>,
    outputs: Option<Vec<usize>>,
}

const IN_NAMES: &[&str] = &["A", "B", "C", ""];
const OUT_NAMES: &[&str] = &["SUM", "CAST", "ROWSUM", "NOPE"];

fn gen_request() -> impl Strategy<Value = GenRequest> {
    let small_dim = prop_oneof![
        6 => 0i64..5,
        1 => Just(-1i64),
        1 => Just(1i64 << 32),
        1 => Just(i64::MAX),
    ];
    let input = (
        prop_oneof![4 => 0usize..2, 1 => 2usize..4],
        prop_oneof![4 => prop::sample::select(&[11u32, 9][..]), 1 => 0u32..16],
        prop_oneof![
            3 => (1i64..4).prop_map(|b| vec![b, 4]),
            3 => (1i64..4).prop_map(|b| vec![b, 2]),
            2 => prop::collection::vec(small_dim, 0..4),
        ],
        prop_oneof![6 => Just(0u8), 1 => 1u8..5],
        1usize..4,
        any::<bool>(),
    )
        .prop_map(|(name, dtype, shape, size, chunks, pinned)| GenInput {
            name,
            dtype,
            shape,
            size,
            chunks,
            pinned,
        });
    let outputs = prop::option::of(prop::collection::vec(0..OUT_NAMES.len(), 0..3));
    let random = (prop::collection::vec(input.clone(), 0..4), outputs.clone())
        .prop_map(|(inputs, outputs)| GenRequest { inputs, outputs });
    // A valid request (A: FP32 [b,4], B: INT64 [b,2]), split into chunks, perhaps with one
    // input replaced by a random one.
    let valid = (
        1i64..4,
        (1usize..4, any::<bool>(), 1usize..4, any::<bool>()),
        prop::option::of((0usize..2, input)),
        outputs,
    )
        .prop_map(|(b, (ca, pa, cb, pb), tweak, outputs)| {
            let mut inputs = vec![
                GenInput {
                    name: 0,
                    dtype: 11,
                    shape: vec![b, 4],
                    size: 0,
                    chunks: ca,
                    pinned: pa,
                },
                GenInput {
                    name: 1,
                    dtype: 9,
                    shape: vec![b, 2],
                    size: 0,
                    chunks: cb,
                    pinned: pb,
                },
            ];
            if let Some((k, t)) = tweak {
                inputs[k] = t;
            }
            GenRequest { inputs, outputs }
        });
    prop_oneof![random, valid]
}

fn make_request(id: usize, g: &GenRequest) -> InferRequest {
    let inputs = g
        .inputs
        .iter()
        .map(|i| {
            let elems: u64 = i
                .shape
                .iter()
                .map(|&d| d.max(0) as u64)
                .fold(1u64, |a, d| a.saturating_mul(d));
            let width = triton_abi::datatype_byte_size(i.dtype) as u64;
            let exact = elems.saturating_mul(width);
            let len = match i.size {
                0 if exact <= 1 << 16 => exact as usize,
                1 if exact > 0 && exact <= 1 << 16 => exact as usize - 1,
                2 if exact <= 1 << 16 => exact as usize + 1,
                4 => 3,
                _ => 0,
            };
            // Values: floats, small ints and BOOL bytes other than 0/1.
            let bytes: Vec<u8> = (0..len).map(|k| (k * 37 % 251) as u8).collect();
            let memory = if i.pinned {
                MemoryType::CpuPinned
            } else {
                MemoryType::Cpu
            };
            let chunk = len.div_ceil(i.chunks).max(1);
            InputTensor::new(IN_NAMES[i.name], i.dtype, &i.shape, bytes).split(chunk, memory)
        })
        .collect();
    let mut r = InferRequest::new(&format!("fuzz-{id}"), inputs);
    r.outputs = g
        .outputs
        .as_ref()
        .map(|o| o.iter().map(|&k| OUT_NAMES[k].to_string()).collect());
    r
}

#[test]
fn fuzz_request_tensors() {
    let repo = Repo::new();
    let cfg = r#"
backend: "rusttrt"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 500 }
instance_group [ { kind: KIND_CPU count: 1 } ]
"#;
    repo.add("m", &test_model("multi_io"), Some(cfg));
    let server = server(&repo);
    server.load_model("m").unwrap();
    let counts = std::cell::Cell::new((0u64, 0u64));
    fuzz(
        "request_tensors",
        prop::collection::vec(gen_request(), 1..4),
        |reqs| {
            // Submit together so they can share an Execute (gathered into one batch).
            let handles: Vec<_> = reqs
                .iter()
                .enumerate()
                .map(|(k, g)| server.submit_unchecked("m", make_request(k, g)))
                .collect();
            let (mut ok, mut errors) = counts.get();
            for (h, g) in handles.into_iter().zip(reqs) {
                let Ok(h) = h else {
                    continue; // the host refused to place it (not the backend's business)
                };
                let resp = h.wait().map_err(|e| format!("no response: {e}"))?;
                match &resp.error {
                    Some((_, msg)) => {
                        errors += 1;
                        if msg.contains("panic") {
                            return Err(format!("the backend panicked on {g:?}: {msg}"));
                        }
                        if !resp.outputs.is_empty() {
                            return Err("an error response with outputs".into());
                        }
                    }
                    None => {
                        ok += 1;
                        for o in &resp.outputs {
                            let elems: i64 = o.shape.iter().product();
                            let want = elems as usize
                                * triton_abi::datatype_byte_size(o.datatype) as usize;
                            if o.bytes.len() != want {
                                return Err(format!(
                                    "output {} has {} bytes for shape {:?}",
                                    o.name,
                                    o.bytes.len(),
                                    o.shape
                                ));
                            }
                        }
                    }
                }
            }
            counts.set((ok, errors));
            Ok(())
        },
    );
    let (ok, errors) = counts.get();
    eprintln!("fuzz request_tensors: {ok} requests served, {errors} refused with their own error");
    assert!(
        ok > 0 && errors > 0,
        "the generator must produce both valid and invalid requests"
    );
    assert_clean(&server);
}

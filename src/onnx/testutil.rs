//! Test-only helpers: a tiny graph builder, a seeded random generator and an ONNX Runtime runner.

use super::proto::onnx::attribute_proto::AttributeType;
use super::proto::onnx::tensor_shape_proto::Dimension;
use super::proto::onnx::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use super::proto::onnx::{OperatorSetIdProto, TensorShapeProto, TypeProto};
use super::*;
use protobuf::MessageField;

pub const F32: i32 = elem::FLOAT;
pub const I64: i32 = elem::INT64;

/// A value info; `-1` dims become the symbolic dim "N".
pub fn vi(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for &d in dims {
        let mut dim = Dimension::new();
        if d < 0 {
            dim.set_dim_param("N".into());
        } else {
            dim.set_dim_value(d);
        }
        shape.dim.push(dim);
    }
    let mut tt = TypeTensor::new();
    tt.set_elem_type(elem_type);
    tt.shape = MessageField::some(shape);
    let mut tp = TypeProto::new();
    tp.value = Some(TypeValue::TensorType(tt));
    let mut v = ValueInfoProto::new();
    v.set_name(name.into());
    v.type_ = MessageField::some(tp);
    v
}

pub fn tensor_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.set_name(name.into());
    t.dims = dims.to_vec();
    t.set_data_type(F32);
    t.raw_data = Some(data.iter().flat_map(|v| v.to_le_bytes()).collect());
    t
}

pub fn tensor_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.set_name(name.into());
    t.dims = dims.to_vec();
    t.set_data_type(I64);
    t.int64_data = data.to_vec();
    t
}

pub fn a_int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.set_name(name.into());
    a.set_type(AttributeType::INT);
    a.set_i(v);
    a
}

pub fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.set_name(name.into());
    a.set_type(AttributeType::INTS);
    a.ints = v.to_vec();
    a
}

pub fn a_float(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.set_name(name.into());
    a.set_type(AttributeType::FLOAT);
    a.set_f(v);
    a
}

pub fn a_tensor(name: &str, t: TensorProto) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.set_name(name.into());
    a.set_type(AttributeType::TENSOR);
    a.t = MessageField::some(t);
    a
}

pub fn a_graph(name: &str, g: GraphProto) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.set_name(name.into());
    a.set_type(AttributeType::GRAPH);
    a.g = MessageField::some(g);
    a
}

/// Builds a graph node by node.
#[derive(Default)]
pub struct Gb {
    pub g: GraphProto,
}

impl Gb {
    pub fn new(name: &str) -> Self {
        let mut g = GraphProto::new();
        g.set_name(name.into());
        Gb { g }
    }
    pub fn input(mut self, name: &str, t: i32, dims: &[i64]) -> Self {
        self.g.input.push(vi(name, t, dims));
        self
    }
    pub fn output(mut self, name: &str, t: i32, dims: &[i64]) -> Self {
        self.g.output.push(vi(name, t, dims));
        self
    }
    pub fn init(mut self, t: TensorProto) -> Self {
        self.g.initializer.push(t);
        self
    }
    pub fn node(
        mut self,
        op: &str,
        ins: &[&str],
        outs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Self {
        let mut n = NodeProto::new();
        n.set_op_type(op.into());
        n.set_name(format!("{op}_{}", self.g.node.len()));
        n.input = ins.iter().map(|s| s.to_string()).collect();
        n.output = outs.iter().map(|s| s.to_string()).collect();
        n.attribute = attrs;
        self.g.node.push(n);
        self
    }
    pub fn model(self, opset: i64) -> ModelProto {
        let mut m = ModelProto::new();
        m.set_ir_version(8);
        m.set_producer_name("rusttrt-test".into());
        let mut o = OperatorSetIdProto::new();
        o.set_domain(String::new());
        o.set_version(opset);
        m.opset_import.push(o);
        m.graph = MessageField::some(self.g);
        m
    }
    pub fn onnx(self, opset: i64) -> OnnxModel {
        OnnxModel {
            proto: self.model(opset),
            path: PathBuf::from("/nonexistent/test.onnx"),
        }
    }
}

/// Seeded xorshift generator.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [-scale, scale).
    pub fn uniform(&mut self, scale: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(scale)).collect()
    }
}

/// An input for [`run_ort`].
pub enum In {
    F32(Vec<i64>, Vec<f32>),
    I64(Vec<i64>, Vec<i64>),
    Bool(Vec<i64>, Vec<bool>),
}

fn ort_library() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(p));
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime,os;print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so."))
        })
        .collect();
    libs.sort();
    libs.pop()
}

/// The process's ONNX Runtime environment, shared with the engine layer (ort allows one per
/// process), or why there is none.
fn ort_env() -> std::result::Result<&'static ort::environment::Environment, String> {
    let lib =
        ort_library().ok_or_else(|| "no ORT_DYLIB_PATH and no python onnxruntime".to_string())?;
    crate::engine::ort::runtime(&[lib])
        .map(|rt| rt.environment())
        .map_err(|e| e.to_string())
}

/// Whether ONNX Runtime can be used; prints why not.
pub fn ort_available() -> bool {
    match ort_env() {
        Ok(_) => true,
        Err(e) => {
            println!("SKIPPED: ONNX Runtime not available: {e}");
            false
        }
    }
}

/// Runs a model on ONNX Runtime (CPU, 1 thread, basic optimizations off so the graph runs as
/// written) and returns every graph output as f32 (int64 / bool converted).
pub fn run_ort(model: &OnnxModel, inputs: &[(&str, In)]) -> Vec<(String, Vec<i64>, Vec<f32>)> {
    use ort::session::builder::GraphOptimizationLevel;
    use ort::session::Session;
    use ort::value::{DynValue, Tensor};
    let bytes = model.to_bytes().unwrap();
    let env = ort_env().expect("check ort_available() first");
    let mut session = Session::builder(env)
        .unwrap()
        .with_optimization_level(GraphOptimizationLevel::Disable)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_memory(&bytes)
        .unwrap_or_else(|e| panic!("ONNX Runtime refused the model: {e}"));
    let mut vals: Vec<(String, DynValue)> = Vec::new();
    for (name, v) in inputs {
        let dv: DynValue = match v {
            In::F32(s, d) => Tensor::from_array((s.clone(), d.clone()))
                .unwrap()
                .into_dyn(),
            In::I64(s, d) => Tensor::from_array((s.clone(), d.clone()))
                .unwrap()
                .into_dyn(),
            In::Bool(s, d) => Tensor::from_array((s.clone(), d.clone()))
                .unwrap()
                .into_dyn(),
        };
        vals.push((name.to_string(), dv));
    }
    let outs = session
        .run(vals)
        .unwrap_or_else(|e| panic!("ONNX Runtime run failed: {e}"));
    let mut res = Vec::new();
    for (name, v) in outs.iter() {
        let (shape, data): (Vec<i64>, Vec<f32>) = if let Ok((s, d)) = v.try_extract_tensor::<f32>()
        {
            (s.to_vec(), d.to_vec())
        } else if let Ok((s, d)) = v.try_extract_tensor::<i64>() {
            (s.to_vec(), d.iter().map(|&x| x as f32).collect())
        } else if let Ok((s, d)) = v.try_extract_tensor::<bool>() {
            (s.to_vec(), d.iter().map(|&x| x as u8 as f32).collect())
        } else {
            panic!("output '{name}' has a type the test cannot read");
        };
        res.push((name.to_string(), shape, data));
    }
    res
}

//! FP32 → mixed FP16 conversion of an ONNX model, shared by every engine (TensorRT 11 is
//! strongly typed and needs it; ONNX Runtime runs the same file).
//!
//! # What the converter does
//!
//! * Every value of element type FLOAT becomes FLOAT16, except in the FP32 regions described
//!   below. Values of any other type (integers, bool, double, existing FLOAT16) are never touched,
//!   so shape computations (`Shape` → `Gather` → `Reshape`) stay exactly as they were.
//! * Initializers, `Constant` nodes and tensor attributes (`ConstantOfShape.value`) are stored in
//!   FP16 (round to nearest even; values beyond ±65504 are clamped and counted; values that become
//!   subnormal or flush to zero are counted). A constant only FP32 nodes use stays FP32; one used
//!   by both gets a second (FP32) copy when small, or a `Cast` when large.
//! * `Cast(to=FLOAT)` and `ConstantOfShape` values inside the FP16 region are rewritten to
//!   FLOAT16. Ops with a `dtype` attribute (`RandomNormal`, `RandomUniform`, `*Like`, `EyeLike`,
//!   `Bernoulli`, `Multinomial`) stay FP32 (see rule 2 below).
//! * With `keep_io_types`, graph inputs and outputs keep their FP32 type: a `Cast` to FP16 follows
//!   each FP32 input (once, shared by its consumers) and each FP32 output keeps its name, produced
//!   by a `Cast` from the renamed FP16 value.
//! * Nodes kept in FP32 get `Cast`s to FP32 on their FP16 inputs and their outputs stay FP32 (cast
//!   down once, only where an FP16 consumer needs them), so chains of FP32 nodes never
//!   round-trip through FP16.
//! * Subgraphs (`If` / `Loop` / `Scan` attributes `g` / `graphs`) are converted recursively; the
//!   control-flow node itself exchanges FP32 values with its subgraphs, which cast internally.
//! * External data is inlined: the result is self-contained. IR and opset versions are unchanged.
//!
//! # Which nodes stay FP32
//!
//! 1. Ops in [`Fp16Options::keep_fp32_ops`] ([`default_keep_fp32_ops`] explains the defaults).
//! 2. Ops whose type constraints exclude FLOAT16 or that are quantization boundaries: `Range`,
//!    `NonMaxSuppression`, `QuantizeLinear`, `DequantizeLinear`, `DynamicQuantizeLinear`; value
//!    generators without FP16 kernels in ONNX Runtime (`RandomNormal`, `RandomUniform`, `*Like`,
//!    `Bernoulli`, `Multinomial`, `EyeLike`); and the `scales` input of `Resize` / `Upsample`,
//!    which must be FLOAT.
//! 3. Shape arithmetic: a FLOAT node whose non-constant inputs all derive from `Shape` / `Size`
//!    (e.g. `Cast(Shape(x), FLOAT) * 1.5 → Cast(INT64) → Resize sizes`). FP16 has integers exact
//!    only up to 2048, so such values must not pass through FP16.
//! 4. Followers: cheap elementwise and data-movement ops (`Add`, `Mul`, `Reshape`, ...) whose
//!    non-constant FLOAT inputs all come from FP32 nodes (or graph inputs). This keeps e.g. the
//!    `var + eps` of a decomposed LayerNorm in FP32, where FP16 would flush `eps = 1e-12` to 0.
//! 5. Anything the converter cannot type: ops of other domains, unknown ops, ops whose input types
//!    are unknown. Such nodes see exactly the types they saw before (FP32 in, original out).
//!
//! Type information comes from `value_info` when present, otherwise from per-op rules.

use super::{elem, onnx_type_name, AttributeProto, GraphProto, NodeProto, OnnxModel, TensorProto};
use crate::error::{Error, Result};
use half::f16;
use protobuf::MessageField;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Options of [`convert_to_fp16`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fp16Options {
    /// Op types (default domain) that always compute in FP32. Default:
    /// [`default_keep_fp32_ops`]; add to it (`opts.keep_fp32_ops.insert("Erf".into())`) or
    /// empty it to tune accuracy against speed.
    pub keep_fp32_ops: BTreeSet<String>,
    /// Keep FP32 graph inputs and outputs FP32 (boundary casts), so the served I/O types do not
    /// change. Default `true`.
    pub keep_io_types: bool,
}

impl Default for Fp16Options {
    fn default() -> Self {
        Fp16Options {
            keep_fp32_ops: default_keep_fp32_ops(),
            keep_io_types: true,
        }
    }
}

/// The default FP32-kept ops and why:
///
/// * Normalizations (`LayerNormalization`, `GroupNormalization`, `InstanceNormalization`,
///   `MeanVarianceNormalization`, `LpNormalization`): mean/variance over a whole row; sums of
///   squares overflow FP16 (max 65504) and `eps` (often 1e-5 … 1e-12) underflows it.
/// * `Softmax`, `LogSoftmax`: `exp` and a row sum; large logits overflow, tiny probabilities
///   underflow.
/// * Accumulating reductions (`ReduceMean`, `ReduceSum`, `ReduceProd`, `ReduceL1`, `ReduceL2`,
///   `ReduceLogSum`, `ReduceLogSumExp`, `ReduceSumSquare`, `CumSum`): sums over many elements lose
///   precision and overflow. `ReduceMax` / `ReduceMin` are NOT kept: they select an element and
///   are exact in FP16.
/// * `Pow`: `x^2` overflows for |x| > 256, `x^3` (tanh-GELU) for |x| > 40.
/// * `Exp` (overflows above 11.09), `Log` (input underflow gives -inf), `Reciprocal` (overflows
///   for |x| < 1.5e-5), `Sqrt` (its input is usually `var + eps`, computed in FP32 by the
///   rules above; keeping it avoids a round trip where small variances would become subnormal).
///
/// `Erf` is NOT kept: its output is bounded in [-1, 1] and smooth, FP16 keeps ~3 significant
/// digits of it, and in an Erf-GELU the only loss is where `1 + erf(x)` cancels, i.e. where
/// `x * (1 + erf)` is already ~0. `Div` is not kept either (attention scaling is everywhere);
/// its risky uses (division by a norm statistic) follow the FP32 region through rule 4 of the
/// module documentation. `Sigmoid`, `Tanh`, `Gelu`, `MatMul`, `Gemm`, `Conv` run in FP16 (GPU
/// kernels accumulate in FP32).
pub fn default_keep_fp32_ops() -> BTreeSet<String> {
    [
        "LayerNormalization",
        "GroupNormalization",
        "InstanceNormalization",
        "MeanVarianceNormalization",
        "LpNormalization",
        "Softmax",
        "LogSoftmax",
        "ReduceMean",
        "ReduceSum",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceSumSquare",
        "CumSum",
        "Pow",
        "Exp",
        "Log",
        "Reciprocal",
        "Sqrt",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// What [`convert_to_fp16`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fp16Report {
    /// FP32 initializers (dense and sparse) and tensor attributes stored as FP16.
    pub initializers_converted: usize,
    /// `Constant` nodes whose value became FP16.
    pub constants_converted: usize,
    /// FP32 copies kept for constants used by both FP16 and FP32 nodes.
    pub fp32_copies: usize,
    /// `Cast` nodes inserted (graph boundary, around FP32 nodes, subgraph boundaries).
    pub casts_inserted: usize,
    /// Nodes computing in FP16.
    pub nodes_converted: usize,
    /// Nodes with FLOAT inputs or outputs left in FP32 (all rules, subgraphs included).
    pub nodes_kept_fp32: usize,
    /// [`Fp16Report::nodes_kept_fp32`] per op type.
    pub kept_fp32_by_op: BTreeMap<String, usize>,
    /// Finite values beyond ±65504 clamped to ±65504.
    pub values_clamped: u64,
    /// Non-zero values that became 0.
    pub values_flushed_to_zero: u64,
    /// Values that became FP16 subnormals (|x| < 6.1e-5, reduced precision).
    pub values_subnormal: u64,
    /// Initializers (dense or sparse) with at least one value clamped to ±65504.
    pub clamped_initializers: BTreeSet<String>,
}

impl std::fmt::Display for Fp16Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} initializers and {} constants to FP16 ({} FP32 copies), {} nodes FP16, {} nodes \
             FP32, {} casts inserted, {} values clamped to ±65504, {} flushed to zero, {} subnormal",
            self.initializers_converted,
            self.constants_converted,
            self.fp32_copies,
            self.nodes_converted,
            self.nodes_kept_fp32,
            self.casts_inserted,
            self.values_clamped,
            self.values_flushed_to_zero,
            self.values_subnormal
        )
    }
}

/// Converts an FP32 model to mixed FP16 (see the module documentation). External data of
/// `model` is read (relative to `model.path`) and inlined into the result.
///
/// Errors: unreadable external data; initializers whose data does not match their dims
/// (INVALID_ARG naming the tensor).
/// Version of the FP16 converter's output. Bump it whenever a change to this module can change
/// the converted model for the same input (op lists, casts, clamping): it goes into the engine
/// cache key, so engines built from an older conversion are not served.
pub const CONVERTER_VERSION: u32 = 1;

pub fn convert_to_fp16(model: &OnnxModel, opts: &Fp16Options) -> Result<(OnnxModel, Fp16Report)> {
    let mut out = model.clone();
    out.inline_external_data()?;
    let mut names = HashSet::new();
    if let Some(g) = out.proto.graph.as_ref() {
        collect_names(g, &mut names);
    }
    let mut cx = Ctx {
        opts,
        names,
        report: Fp16Report::default(),
        model: model.path.display().to_string(),
    };
    let graph = out.proto.graph.take().unwrap_or_default();
    let converted = cx.convert_graph(graph, &HashMap::new(), &HashMap::new(), true)?;
    out.proto.graph = MessageField::some(converted);
    Ok((out, cx.report))
}

// ---------------------------------------------------------------------------------------------
// Op tables

/// Default-domain ops whose FLOAT inputs and outputs share one type variable that allows FLOAT16.
const T_OPS: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "AveragePool",
    "BatchNormalization",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Col2Im",
    "Concat",
    "Conv",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "CumSum",
    "DepthToSpace",
    "Det",
    "Div",
    "Dropout",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GridSample",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "LpPool",
    "MatMul",
    "Max",
    "MaxPool",
    "MaxRoiPool",
    "MaxUnpool",
    "Mean",
    "MeanVarianceNormalization",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "OneHot",
    "PRelu",
    "Pad",
    "Pow",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "ReverseSequence",
    "RoiAlign",
    "Round",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Trilu",
    "Unique",
    "Unsqueeze",
    "Upsample",
    "Where",
];

/// Ops that produce FLOAT from non-float inputs through an attribute the converter rewrites.
const ATTR_OPS: &[&str] = &["Cast", "ConstantOfShape"];

/// Ops whose type constraints exclude FLOAT16, that sit at quantization boundaries, or that
/// generate values (random / identity) and have no FP16 kernel in ONNX Runtime's CPU and CUDA
/// providers; generators cost nothing to run in FP32 (their output is cast down once).
const FP32_ONLY: &[&str] = &[
    "Range",
    "NonMaxSuppression",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Bernoulli",
    "Multinomial",
    "EyeLike",
];

/// Cheap elementwise / data-movement ops that stay FP32 when fed only by FP32 nodes.
const FOLLOWERS: &[&str] = &[
    "Abs",
    "Add",
    "Cast",
    "Clip",
    "Concat",
    "Div",
    "Dropout",
    "Expand",
    "Flatten",
    "Gather",
    "Identity",
    "Max",
    "Min",
    "Mul",
    "Neg",
    "Pad",
    "Relu",
    "Reshape",
    "Slice",
    "Split",
    "Squeeze",
    "Sub",
    "Sum",
    "Tile",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// Data generators: their outputs never count as shape arithmetic.
const GENERATORS: &[&str] = &[
    "ConstantOfShape",
    "EyeLike",
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Bernoulli",
    "Multinomial",
];

/// (op, input index) that must stay FLOAT whatever the node's precision.
fn fixed_fp32_input(op: &str, idx: usize) -> bool {
    matches!((op, idx), ("Resize", 2) | ("Upsample", 1))
}

/// (op, output index) whose type is fixed FLOAT (not the node's T).
fn fixed_fp32_output(op: &str, idx: usize) -> bool {
    matches!(
        (op, idx),
        ("LayerNormalization", 1) | ("LayerNormalization", 2)
    )
}

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

/// FP32 copies are kept for mixed-use constants up to this many elements; larger ones are cast.
const COPY_LIMIT: usize = 1 << 16;

// ---------------------------------------------------------------------------------------------
// Analysis

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Prec {
    F16,
    F32,
}

/// Where a FLOAT value comes from, for the follower rule.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    /// Produced by a node running in FP32.
    Fp32,
    /// Produced by a node running in FP16.
    Fp16,
    /// Graph input, outer-scope value or constant.
    Flex,
}

#[derive(Clone, Debug)]
struct TInfo {
    ty: Option<i32>,
    class: Class,
    shape_derived: bool,
    constant: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Mode {
    /// No FLOAT inputs or outputs: copied as is.
    Untouched,
    /// FLOAT inputs are used in whatever precision they exist (Shape, Size, Cast to non-float).
    Agnostic,
    F16,
    F32,
    /// If / Loop / Scan: FP32 I/O, subgraphs converted.
    Control,
    /// A `Constant` node (decided like an initializer).
    Constant,
}

/// Versions of one FLOAT value available at a point of the converted graph.
#[derive(Clone, Debug)]
struct Avail {
    native: String,
    prec: Prec,
    other: Option<String>,
}

struct Ctx<'a> {
    opts: &'a Fp16Options,
    names: HashSet<String>,
    report: Fp16Report,
    model: String,
}

fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    n.attribute.iter().find(|a| a.name() == name)
}

fn attr_i(n: &NodeProto, name: &str) -> Option<i64> {
    attr(n, name).map(|a| a.i())
}

fn constant_node_type(n: &NodeProto) -> Option<i32> {
    for a in &n.attribute {
        match a.name() {
            "value" => return Some(a.t.data_type()),
            "value_float" | "value_floats" => return Some(elem::FLOAT),
            "value_int" | "value_ints" => return Some(elem::INT64),
            "value_string" | "value_strings" => return Some(elem::STRING),
            "sparse_value" => return Some(a.sparse_tensor.values.data_type()),
            _ => {}
        }
    }
    None
}

fn graph_output_types(g: &GraphProto) -> Vec<Option<i32>> {
    g.output.iter().map(vi_elem_type).collect()
}

fn vi_elem_type(vi: &super::ValueInfoProto) -> Option<i32> {
    match vi.type_.value.as_ref() {
        Some(super::proto::onnx::type_proto::Value::TensorType(t)) if t.has_elem_type() => {
            Some(t.elem_type())
        }
        _ => None,
    }
}

/// Output element types of a node from per-op rules (`None` = unknown).
fn infer_outputs(n: &NodeProto, ins: &[Option<i32>]) -> Vec<Option<i32>> {
    let nout = n.output.len();
    let i = |k: usize| ins.get(k).copied().flatten();
    let first = ins.iter().copied().flatten().next();
    let all = |t: Option<i32>| vec![t; nout];
    let dtype_or = |d: Option<i32>| attr_i(n, "dtype").map(|v| v as i32).or(d);
    if !is_default_domain(n.domain()) {
        return all(None);
    }
    let op = n.op_type();
    let mut v = match op {
        "Cast" => all(attr_i(n, "to").map(|v| v as i32)),
        "CastLike" => all(i(1)),
        "Shape" | "Size" | "NonZero" | "ArgMax" | "ArgMin" | "NonMaxSuppression" => {
            all(Some(elem::INT64))
        }
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Not" | "And" | "Or"
        | "Xor" | "IsNaN" | "IsInf" => all(Some(elem::BOOL)),
        "TopK" | "MaxPool" => vec![i(0), Some(elem::INT64)],
        "Dropout" => vec![i(0), Some(elem::BOOL)],
        "Unique" => vec![
            i(0),
            Some(elem::INT64),
            Some(elem::INT64),
            Some(elem::INT64),
        ],
        "Where" => all(i(1)),
        "OneHot" => all(i(2)),
        "LayerNormalization" => {
            let stash = attr_i(n, "stash_type")
                .map(|v| v as i32)
                .unwrap_or(elem::FLOAT);
            vec![i(0), Some(stash), Some(stash)]
        }
        "Constant" => all(constant_node_type(n)),
        "ConstantOfShape" => all(Some(
            attr(n, "value")
                .map(|a| a.t.data_type())
                .unwrap_or(elem::FLOAT),
        )),
        "RandomNormal" | "RandomUniform" => all(dtype_or(Some(elem::FLOAT))),
        "EyeLike" | "RandomNormalLike" | "RandomUniformLike" | "Bernoulli" => all(dtype_or(i(0))),
        "Multinomial" => all(dtype_or(Some(elem::INT32))),
        "Range" => all(i(0)),
        "MatMulInteger" | "ConvInteger" => all(Some(elem::INT32)),
        "QuantizeLinear" => all(Some(i(2).unwrap_or(2))),
        "DequantizeLinear" => all(i(1)),
        "DynamicQuantizeLinear" => vec![Some(2), Some(elem::FLOAT), Some(2)],
        "QLinearMatMul" | "QLinearConv" => all(i(7)),
        "If" => attr(n, "then_branch")
            .map(|a| graph_output_types(&a.g))
            .unwrap_or_default(),
        "Loop" => attr(n, "body")
            .map(|a| graph_output_types(&a.g).into_iter().skip(1).collect())
            .unwrap_or_default(),
        "Scan" => attr(n, "body")
            .map(|a| graph_output_types(&a.g))
            .unwrap_or_default(),
        op if T_OPS.contains(&op) => all(first),
        _ => all(None),
    };
    v.resize(nout, None);
    v
}

/// Analysis result of one graph.
struct Plan {
    types: HashMap<String, TInfo>,
    modes: Vec<Mode>,
    /// Demands on local constants: (FP16 wanted, FP32 wanted).
    demand: HashMap<String, (bool, bool)>,
    /// Names of the graph's outputs.
    outputs: HashSet<String>,
}

impl Ctx<'_> {
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    fn analyze(&self, g: &GraphProto, outer: &HashMap<String, TInfo>, main: bool) -> Plan {
        let mut types: HashMap<String, TInfo> = outer
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    TInfo {
                        class: Class::Flex,
                        constant: false,
                        ..v.clone()
                    },
                )
            })
            .collect();
        let mut vi_types: HashMap<&str, i32> = HashMap::new();
        for vi in g.value_info.iter().chain(&g.output) {
            if let Some(t) = vi_elem_type(vi) {
                vi_types.insert(vi.name(), t);
            }
        }
        let input_names: HashSet<&str> = g.input.iter().map(|v| v.name()).collect();
        for vi in &g.input {
            let t = TInfo {
                ty: vi_elem_type(vi),
                class: Class::Flex,
                shape_derived: false,
                constant: false,
            };
            types.insert(vi.name().to_string(), t);
        }
        for t in &g.initializer {
            if input_names.contains(t.name()) {
                continue;
            }
            let info = TInfo {
                ty: Some(t.data_type()),
                class: Class::Flex,
                shape_derived: false,
                constant: true,
            };
            types.insert(t.name().to_string(), info);
        }
        for s in &g.sparse_initializer {
            let info = TInfo {
                ty: Some(s.values.data_type()),
                class: Class::Flex,
                shape_derived: false,
                constant: true,
            };
            types.insert(s.values.name().to_string(), info);
        }
        let mut demand: HashMap<String, (bool, bool)> = HashMap::new();
        let mut modes = Vec::with_capacity(g.node.len());
        for n in &g.node {
            let ins: Vec<Option<&TInfo>> = n
                .input
                .iter()
                .map(|s| {
                    if s.is_empty() {
                        None
                    } else {
                        types.get(s.as_str())
                    }
                })
                .collect();
            let in_tys: Vec<Option<i32>> = ins.iter().map(|t| t.and_then(|t| t.ty)).collect();
            let unknown_in = n
                .input
                .iter()
                .zip(&ins)
                .any(|(s, t)| !s.is_empty() && t.is_none_or(|t| t.ty.is_none()));
            let mut outs = infer_outputs(n, &in_tys);
            for (o, name) in outs.iter_mut().zip(&n.output) {
                if let Some(&t) = vi_types.get(name.as_str()) {
                    *o = Some(t);
                }
            }
            let float_in: Vec<usize> = (0..ins.len())
                .filter(|&k| in_tys[k] == Some(elem::FLOAT))
                .collect();
            let float_out = outs.contains(&Some(elem::FLOAT));
            let op = n.op_type();
            let std = is_default_domain(n.domain());
            let nonconst: Vec<&TInfo> = ins
                .iter()
                .flatten()
                .filter(|t| !t.constant)
                .copied()
                .collect();
            let shape_out = std
                && !GENERATORS.contains(&op)
                && (op == "Shape"
                    || op == "Size"
                    || (!nonconst.is_empty() && nonconst.iter().all(|t| t.shape_derived)));
            let has_graph_attr = n
                .attribute
                .iter()
                .any(|a| a.g.is_some() || !a.graphs.is_empty());
            let mode = if std && op == "Constant" {
                Mode::Constant
            } else if std && matches!(op, "If" | "Loop" | "Scan") {
                Mode::Control
            } else if float_in.is_empty() && !float_out && !unknown_in && !has_graph_attr {
                Mode::Untouched
            } else if !std || unknown_in {
                Mode::F32
            } else if op == "Shape"
                || op == "Size"
                || (op == "Cast" && attr_i(n, "to") != Some(elem::FLOAT as i64))
            {
                Mode::Agnostic
            } else if FP32_ONLY.contains(&op)
                || !(T_OPS.contains(&op) || ATTR_OPS.contains(&op))
                || self.opts.keep_fp32_ops.contains(op)
                || shape_out
            {
                Mode::F32
            } else {
                let fl: Vec<&TInfo> = float_in
                    .iter()
                    .filter_map(|&k| ins[k])
                    .filter(|t| !t.constant)
                    .collect();
                let follower = FOLLOWERS.contains(&op)
                    && fl.iter().any(|t| t.class == Class::Fp32)
                    && fl.iter().all(|t| t.class != Class::Fp16);
                if follower {
                    Mode::F32
                } else {
                    Mode::F16
                }
            };
            // Demands on local constants.
            // A Cast of a constant to another type reads its exact (FP32) values.
            let want = match mode {
                Mode::F16 => Some(Prec::F16),
                Mode::F32 | Mode::Control => Some(Prec::F32),
                Mode::Agnostic if op == "Cast" => Some(Prec::F32),
                _ => None,
            };
            if let Some(w) = want {
                for &k in &float_in {
                    let name = &n.input[k];
                    if ins[k].is_some_and(|t| t.constant) && !outer.contains_key(name) {
                        let w = if fixed_fp32_input(op, k) {
                            Prec::F32
                        } else {
                            w
                        };
                        let d = demand.entry(name.clone()).or_default();
                        match w {
                            Prec::F16 => d.0 = true,
                            Prec::F32 => d.1 = true,
                        }
                    }
                }
            }
            for (k, (name, ty)) in n.output.iter().zip(outs).enumerate() {
                if name.is_empty() {
                    continue;
                }
                let class = match mode {
                    Mode::F16 if !fixed_fp32_output(op, k) => Class::Fp16,
                    Mode::Constant => Class::Flex,
                    _ => Class::Fp32,
                };
                let info = TInfo {
                    ty,
                    class,
                    shape_derived: shape_out,
                    constant: mode == Mode::Constant,
                };
                types.insert(name.clone(), info);
            }
            modes.push(mode);
        }
        // Graph outputs demand their I/O precision.
        let out_prec = if main && !self.opts.keep_io_types {
            Prec::F16
        } else {
            Prec::F32
        };
        for o in &g.output {
            if types
                .get(o.name())
                .is_some_and(|t| t.constant && t.ty == Some(elem::FLOAT))
            {
                let d = demand.entry(o.name().to_string()).or_default();
                match out_prec {
                    Prec::F16 => d.0 = true,
                    Prec::F32 => d.1 = true,
                }
            }
        }
        Plan {
            types,
            modes,
            demand,
            outputs: g.output.iter().map(|o| o.name().to_string()).collect(),
        }
    }

    /// Storage precision of a local FLOAT constant and whether FP32 consumers get a copy.
    fn constant_storage(&self, name: &str, plan: &Plan, main: bool) -> Prec {
        let is_output = plan.outputs.contains(name);
        if is_output {
            return if main && !self.opts.keep_io_types {
                Prec::F16
            } else {
                Prec::F32
            };
        }
        match plan.demand.get(name) {
            Some((false, true)) => Prec::F32,
            _ => Prec::F16,
        }
    }

    fn convert_graph(
        &mut self,
        g: GraphProto,
        outer_types: &HashMap<String, TInfo>,
        outer_avail: &HashMap<String, Avail>,
        main: bool,
    ) -> Result<GraphProto> {
        let plan = self.analyze(&g, outer_types, main);
        let io_prec = if main && !self.opts.keep_io_types {
            Prec::F16
        } else {
            Prec::F32
        };
        let mut out = g;
        let old_nodes = std::mem::take(&mut out.node);
        let mut avail: HashMap<String, Avail> = outer_avail.clone();
        let mut nodes: Vec<NodeProto> = Vec::with_capacity(old_nodes.len());
        let init_names: HashSet<String> = out
            .initializer
            .iter()
            .map(|t| t.name().to_string())
            .collect();

        // Graph inputs.
        for vi in out.input.iter_mut() {
            if vi_elem_type(vi) != Some(elem::FLOAT) {
                continue;
            }
            let prec = if init_names.contains(vi.name()) {
                Prec::F32
            } else {
                io_prec
            };
            if prec == Prec::F16 {
                set_vi_type(vi, elem::FLOAT16);
            }
            avail.insert(
                vi.name().to_string(),
                Avail {
                    native: vi.name().to_string(),
                    prec,
                    other: None,
                },
            );
        }
        let input_names: HashSet<String> = out.input.iter().map(|v| v.name().to_string()).collect();

        // Initializers.
        let mut extra_inits = Vec::new();
        for t in out.initializer.iter_mut() {
            if t.data_type() != elem::FLOAT || input_names.contains(t.name()) {
                continue;
            }
            let name = t.name().to_string();
            let prec = self.constant_storage(&name, &plan, main);
            let mut a = Avail {
                native: name.clone(),
                prec,
                other: None,
            };
            if prec == Prec::F16 {
                let clamped_before = self.report.values_clamped;
                let converted = self.tensor_to_fp16(t)?;
                if self.report.values_clamped > clamped_before {
                    self.report.clamped_initializers.insert(name.clone());
                }
                let orig = std::mem::replace(t, converted);
                self.report.initializers_converted += 1;
                if plan.demand.get(&name).is_some_and(|d| d.1) && numel(&orig) <= COPY_LIMIT {
                    let mut copy = orig;
                    let copy_name = self.fresh(&format!("{name}_fp32"));
                    copy.set_name(copy_name.clone());
                    extra_inits.push(copy);
                    a.other = Some(copy_name);
                    self.report.fp32_copies += 1;
                }
            }
            avail.insert(name, a);
        }
        out.initializer.extend(extra_inits);
        for s in out.sparse_initializer.iter_mut() {
            if s.values.data_type() != elem::FLOAT {
                continue;
            }
            let name = s.values.name().to_string();
            let prec = self.constant_storage(&name, &plan, main);
            if prec == Prec::F16 {
                let clamped_before = self.report.values_clamped;
                let v = self.tensor_to_fp16(&s.values)?;
                if self.report.values_clamped > clamped_before {
                    self.report.clamped_initializers.insert(name.clone());
                }
                s.values = MessageField::some(v);
                self.report.initializers_converted += 1;
            }
            avail.insert(
                name.clone(),
                Avail {
                    native: name,
                    prec,
                    other: None,
                },
            );
        }

        for (mut node, mode) in old_nodes.into_iter().zip(&plan.modes) {
            let op = node.op_type().to_string();
            let orig_io: Vec<String> = node.input.iter().chain(&node.output).cloned().collect();
            let is_float = |name: &str| {
                plan.types
                    .get(name)
                    .is_some_and(|t| t.ty == Some(elem::FLOAT))
            };
            // Subgraphs first (they see the values available before this node).
            for a in node.attribute.iter_mut() {
                if let Some(sub) = a.g.take() {
                    let conv = self.convert_graph(sub, &plan.types, &avail, false)?;
                    a.g = MessageField::some(conv);
                }
                for sub in a.graphs.iter_mut() {
                    *sub = self.convert_graph(std::mem::take(sub), &plan.types, &avail, false)?;
                }
            }
            let node_prec = match mode {
                Mode::Untouched => {
                    nodes.push(node);
                    continue;
                }
                Mode::Agnostic => {
                    // Shape / Size read no values; a Cast of a constant reads its FP32 version.
                    for k in 0..node.input.len() {
                        let name = node.input[k].clone();
                        if op == "Cast"
                            && is_float(&name)
                            && plan.types.get(&name).is_some_and(|t| t.constant)
                        {
                            node.input[k] = self.version(&name, Prec::F32, &mut avail, &mut nodes);
                        }
                    }
                    nodes.push(node);
                    continue;
                }
                Mode::Constant => {
                    self.emit_constant(node, &plan, main, &mut avail, &mut nodes)?;
                    continue;
                }
                Mode::F16 => Prec::F16,
                Mode::F32 | Mode::Control => Prec::F32,
            };
            let touches_float = orig_io.iter().any(|s| is_float(s));
            if node_prec == Prec::F32 && touches_float {
                self.report.nodes_kept_fp32 += 1;
                *self.report.kept_fp32_by_op.entry(op.clone()).or_default() += 1;
            } else if node_prec == Prec::F16 {
                self.report.nodes_converted += 1;
            }
            for k in 0..node.input.len() {
                let name = node.input[k].clone();
                if name.is_empty() || !is_float(&name) {
                    continue;
                }
                let want = if fixed_fp32_input(&op, k) {
                    Prec::F32
                } else {
                    node_prec
                };
                node.input[k] = self.version(&name, want, &mut avail, &mut nodes);
            }
            if node_prec == Prec::F16 {
                rewrite_attrs_fp16(&mut node, &mut self.report, &self.model)?;
            }
            let mut after = Vec::new();
            for k in 0..node.output.len() {
                let name = node.output[k].clone();
                if name.is_empty() || !is_float(&name) {
                    continue;
                }
                let prec = if fixed_fp32_output(&op, k) {
                    Prec::F32
                } else {
                    node_prec
                };
                if main && plan.outputs.contains(&name) && prec != io_prec {
                    let internal = self.fresh(&format!("{name}_{}", prec_tag(prec)));
                    node.output[k] = internal.clone();
                    after.push(self.cast_node(&internal, &name, io_prec));
                    avail.insert(
                        name.clone(),
                        Avail {
                            native: internal,
                            prec,
                            other: Some(name),
                        },
                    );
                } else {
                    avail.insert(
                        name.clone(),
                        Avail {
                            native: name,
                            prec,
                            other: None,
                        },
                    );
                }
            }
            nodes.push(node);
            nodes.extend(after);
        }

        // Outputs: main graph outputs were handled at their producers; subgraph outputs are
        // positional, so they are renamed to their FP32 versions.
        for o in out.output.iter_mut() {
            let name = o.name().to_string();
            if plan
                .types
                .get(&name)
                .is_none_or(|t| t.ty != Some(elem::FLOAT))
            {
                continue;
            }
            if main {
                if io_prec == Prec::F16 {
                    set_vi_type(o, elem::FLOAT16);
                }
                // An output that is directly a graph input or constant in the wrong precision.
                if let Some(a) = avail.get(&name) {
                    if a.native == name && a.prec != io_prec {
                        return Err(Error::internal(format!(
                            "model {}: FP16 conversion: graph output '{name}' has no {} version",
                            self.model,
                            prec_tag(io_prec)
                        )));
                    }
                }
            } else {
                let v = self.version(&name, Prec::F32, &mut avail, &mut nodes);
                o.set_name(v);
            }
        }

        // value_info: FLOAT values whose native version is now FP16.
        for vi in out.value_info.iter_mut() {
            if vi_elem_type(vi) != Some(elem::FLOAT) {
                continue;
            }
            if let Some(a) = avail.get(vi.name()) {
                if a.native == vi.name() && a.prec == Prec::F16 {
                    set_vi_type(vi, elem::FLOAT16);
                }
            }
        }
        out.node = nodes;
        Ok(out)
    }

    /// Name of `name` in precision `want`, inserting a shared Cast if needed.
    fn version(
        &mut self,
        name: &str,
        want: Prec,
        avail: &mut HashMap<String, Avail>,
        nodes: &mut Vec<NodeProto>,
    ) -> String {
        let Some(a) = avail.get(name) else {
            return name.to_string();
        };
        if a.prec == want {
            return a.native.clone();
        }
        if let Some(o) = &a.other {
            return o.clone();
        }
        let native = a.native.clone();
        let cast_out = self.fresh(&format!("{name}_{}", prec_tag(want)));
        nodes.push(self.cast_node(&native, &cast_out, want));
        avail.get_mut(name).expect("checked above").other = Some(cast_out.clone());
        cast_out
    }

    fn cast_node(&mut self, from: &str, to: &str, prec: Prec) -> NodeProto {
        self.report.casts_inserted += 1;
        let mut n = NodeProto::new();
        n.set_op_type("Cast".into());
        n.set_name(self.fresh(&format!("{to}_cast")));
        n.input.push(from.to_string());
        n.output.push(to.to_string());
        let t = match prec {
            Prec::F16 => elem::FLOAT16,
            Prec::F32 => elem::FLOAT,
        };
        n.attribute.push(int_attr("to", t as i64));
        n
    }

    fn emit_constant(
        &mut self,
        node: NodeProto,
        plan: &Plan,
        main: bool,
        avail: &mut HashMap<String, Avail>,
        nodes: &mut Vec<NodeProto>,
    ) -> Result<()> {
        let name = node.output.first().cloned().unwrap_or_default();
        if constant_node_type(&node) != Some(elem::FLOAT) || name.is_empty() {
            nodes.push(node);
            return Ok(());
        }
        let prec = self.constant_storage(&name, plan, main);
        let mut a = Avail {
            native: name.clone(),
            prec,
            other: None,
        };
        if prec == Prec::F16 {
            let converted = self.constant_to_fp16(&node)?;
            self.report.constants_converted += 1;
            nodes.push(converted);
            let small = constant_numel(&node) <= COPY_LIMIT;
            if plan.demand.get(&name).is_some_and(|d| d.1) && small {
                let copy_name = self.fresh(&format!("{name}_fp32"));
                let mut copy = node;
                copy.output[0] = copy_name.clone();
                copy.set_name(self.fresh(&format!("{copy_name}_const")));
                nodes.push(copy);
                a.other = Some(copy_name);
                self.report.fp32_copies += 1;
            }
        } else {
            nodes.push(node);
        }
        avail.insert(name, a);
        Ok(())
    }

    fn constant_to_fp16(&mut self, node: &NodeProto) -> Result<NodeProto> {
        let mut n = node.clone();
        for a in n.attribute.iter_mut() {
            match a.name() {
                "value" => {
                    let t = self.tensor_to_fp16(&a.t)?;
                    a.t = MessageField::some(t);
                }
                "value_float" | "value_floats" => {
                    let mut t = TensorProto::new();
                    t.set_data_type(elem::FLOAT);
                    if a.name() == "value_float" {
                        t.float_data.push(a.f());
                    } else {
                        t.dims.push(a.floats.len() as i64);
                        t.float_data = a.floats.clone();
                    }
                    let t = self.tensor_to_fp16(&t)?;
                    *a = tensor_attr("value", t);
                }
                "sparse_value" => {
                    let v = self.tensor_to_fp16(&a.sparse_tensor.values)?;
                    a.sparse_tensor.mut_or_insert_default().values = MessageField::some(v);
                }
                _ => {}
            }
        }
        Ok(n)
    }

    /// An FP16 copy of a FLOAT tensor (raw_data, little endian), counting clamps and flushes.
    fn tensor_to_fp16(&mut self, t: &TensorProto) -> Result<TensorProto> {
        tensor_to_fp16(t, &mut self.report, &self.model)
    }
}

fn prec_tag(p: Prec) -> &'static str {
    match p {
        Prec::F16 => "fp16",
        Prec::F32 => "fp32",
    }
}

/// Element count of a tensor's dims (a negative dim counts as 0). Dims whose product overflows
/// give `usize::MAX`, which no data matches: [`float_values`] then refuses the tensor.
fn numel(t: &TensorProto) -> usize {
    if t.dims.iter().any(|&d| d <= 0) {
        return 0;
    }
    t.dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
        .unwrap_or(usize::MAX)
}

fn constant_numel(n: &NodeProto) -> usize {
    attr(n, "value")
        .map(|a| numel(&a.t))
        .or_else(|| attr(n, "value_floats").map(|a| a.floats.len()))
        .or_else(|| attr(n, "sparse_value").map(|a| numel(&a.sparse_tensor.values)))
        .unwrap_or(1)
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    use super::proto::onnx::attribute_proto::AttributeType;
    let mut a = AttributeProto::new();
    a.set_name(name.into());
    a.set_type(AttributeType::INT);
    a.set_i(v);
    a
}

fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    use super::proto::onnx::attribute_proto::AttributeType;
    let mut a = AttributeProto::new();
    a.set_name(name.into());
    a.set_type(AttributeType::TENSOR);
    a.t = MessageField::some(t);
    a
}

fn set_vi_type(vi: &mut super::ValueInfoProto, t: i32) {
    if let Some(super::proto::onnx::type_proto::Value::TensorType(tt)) =
        vi.type_.as_mut().and_then(|t| t.value.as_mut())
    {
        tt.set_elem_type(t);
    }
}

/// Rewrites the attributes of a node moving into FP16: Cast's `to` FLOAT → FLOAT16, FLOAT
/// tensor attributes (ConstantOfShape's `value`, default 0.0 made explicit) to FP16.
fn rewrite_attrs_fp16(n: &mut NodeProto, report: &mut Fp16Report, model: &str) -> Result<()> {
    let op = n.op_type().to_string();
    for a in n.attribute.iter_mut() {
        match a.name() {
            "to" if op == "Cast" && a.i() == elem::FLOAT as i64 => a.set_i(elem::FLOAT16 as i64),
            _ => {
                if a.t.is_some() && a.t.data_type() == elem::FLOAT {
                    let t = tensor_to_fp16(&a.t, report, model)?;
                    a.t = MessageField::some(t);
                    report.initializers_converted += 1;
                }
            }
        }
    }
    match op.as_str() {
        "ConstantOfShape" if attr(n, "value").is_none() => {
            let mut t = TensorProto::new();
            t.dims.push(1);
            t.set_data_type(elem::FLOAT16);
            t.raw_data = Some(vec![0, 0]);
            n.attribute.push(tensor_attr("value", t));
        }
        _ => {}
    }
    Ok(())
}

/// Reads the values of a FLOAT tensor (raw_data or float_data).
pub(crate) fn float_values(t: &TensorProto, model: &str) -> Result<Vec<f32>> {
    let n = numel(t);
    let vals: Vec<f32> = if let Some(raw) = t.raw_data.as_ref() {
        if raw.len() % 4 != 0 {
            return Err(Error::invalid_arg(format!(
                "model {model}: tensor '{}': raw_data of {} bytes is not a whole number of FLOATs",
                t.name(),
                raw.len()
            )));
        }
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    if vals.len() != n {
        return Err(Error::invalid_arg(format!(
            "model {model}: tensor '{}' has dims {:?} ({n} elements) but {} {} values",
            t.name(),
            t.dims,
            vals.len(),
            onnx_type_name(t.data_type())
        )));
    }
    Ok(vals)
}

fn tensor_to_fp16(t: &TensorProto, report: &mut Fp16Report, model: &str) -> Result<TensorProto> {
    let vals = float_values(t, model)?;
    let mut raw = Vec::with_capacity(vals.len() * 2);
    for v in vals {
        let mut x = v;
        if x.is_finite() && x.abs() > f16::MAX.to_f32() {
            report.values_clamped += 1;
            x = x.signum() * f16::MAX.to_f32();
        }
        let h = f16::from_f32(x);
        if x != 0.0 && h.to_f32() == 0.0 {
            report.values_flushed_to_zero += 1;
        } else if h.to_f32() != 0.0 && h.to_f32().abs() < f16::MIN_POSITIVE.to_f32() {
            report.values_subnormal += 1;
        }
        raw.extend_from_slice(&h.to_le_bytes());
    }
    let mut out = t.clone();
    out.float_data.clear();
    out.set_data_type(elem::FLOAT16);
    out.raw_data = Some(raw);
    Ok(out)
}

fn collect_names(g: &GraphProto, names: &mut HashSet<String>) {
    for vi in g.input.iter().chain(&g.output).chain(&g.value_info) {
        names.insert(vi.name().to_string());
    }
    for t in &g.initializer {
        names.insert(t.name().to_string());
    }
    for s in &g.sparse_initializer {
        names.insert(s.values.name().to_string());
    }
    for n in &g.node {
        names.insert(n.name().to_string());
        names.extend(n.input.iter().cloned());
        names.extend(n.output.iter().cloned());
        for a in &n.attribute {
            if let Some(sub) = a.g.as_ref() {
                collect_names(sub, names);
            }
            for sub in &a.graphs {
                collect_names(sub, names);
            }
        }
    }
}

#[cfg(test)]
mod tests;

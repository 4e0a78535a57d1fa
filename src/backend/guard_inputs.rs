//! The FP16 accuracy guard's inputs: what serving will see, not zeros and ones.
//!
//! - **Indices over their whole range.** An integer graph input that reaches the `indices` of a
//!   `Gather` over an initializer (an embedding lookup), directly or through `Cast` /
//!   `Reshape` / `Squeeze` / `Unsqueeze` / `Flatten` / `Identity`, is drawn uniformly over
//!   `[0, rows)` of that table, so every part of the table can be looked at (an FP16-unsafe
//!   embedding row is found even when rows 0 and 1 are harmless).
//! - **Attention masks with real tokens in every row.** An integer or BOOL input whose name
//!   contains `mask` gets, per batch row, a random number (at least 1) of leading ones and zeros
//!   after: an all-zero row would give a zero vector, which scores cosine 1 and proves nothing.
//! - **Realistic sequence lengths.** Dynamic non-batch dims take `fp16_guard_sequence_length`
//!   (default 16), the same value for every input, so `input_ids` and `attention_mask` agree.
//! - **Floats over a range a config can set**: `fp16_guard_input_range` (`"lo,hi"`, or `"r"` for
//!   `[-r, r]`; default `[-3, 3]`, covering normalized images and typical activations).
//! - Other integers: 0 or 1 (lengths, flags and shape values stay valid), as before.
//! - **Real samples** (`fp16_guard_inputs: "name=file,name2=file2"`): raw little-endian tensors
//!   of those inputs, files relative to the model's directory (where config.pbtxt is; the way
//!   Triton's `model_warmup` names input data files), read through [`crate::safe_file`]; the
//!   number of batch rows comes from the file size, and the generated inputs follow it.
//!
//! Every choice is returned as a note for the load log.

use super::config::ModelConfig;
use crate::error::{Error, Result};
use crate::onnx::{GraphProto, OnnxModel};
use crate::types::DataType;
use std::collections::HashMap;

/// Default of `fp16_guard_sequence_length`.
pub const DEFAULT_SEQUENCE_LENGTH: i64 = 16;
/// Default of `fp16_guard_input_range`.
pub const DEFAULT_INPUT_RANGE: (f64, f64) = (-3.0, 3.0);

/// Largest sample file of `fp16_guard_inputs`.
pub const MAX_SAMPLE_BYTES: u64 = 256 << 20;

/// The guard's input tensors, in config input order.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardInputs {
    /// Batch rows (the batch dim of every input when the model batches; 1 otherwise).
    pub batch: usize,
    pub shapes: Vec<Vec<i64>>,
    pub data: Vec<Vec<u8>>,
    /// What was chosen for each input and why (for the log).
    pub notes: Vec<String>,
}

/// Deterministic pseudo-random numbers (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n) (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Float(f64, f64),
    /// Indices into a table of this many rows.
    Index(u64),
    Mask,
    SmallInt,
}

fn param_error(name: &str, value: &str, accepted: &str) -> Error {
    Error::invalid_arg(format!("parameter '{name}': '{value}' is not {accepted}"))
}

/// `fp16_guard_input_range`: `"lo,hi"` or `"r"` (= `[-r, r]`), finite, lo < hi.
pub fn input_range(cfg: &ModelConfig) -> Result<(f64, f64)> {
    let name = "fp16_guard_input_range";
    let Some(v) = cfg.parameter(name) else {
        return Ok(DEFAULT_INPUT_RANGE);
    };
    let accepted = "a range \"lo,hi\" or a half-width \"r\" of finite numbers with lo < hi";
    let nums: Vec<f64> = v
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| param_error(name, v, accepted))?;
    let (lo, hi) = match nums.as_slice() {
        [r] => (-r.abs(), r.abs()),
        [lo, hi] => (*lo, *hi),
        _ => return Err(param_error(name, v, accepted)),
    };
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(param_error(name, v, accepted));
    }
    Ok((lo, hi))
}

/// `fp16_guard_sequence_length`: an integer from 1 to 65536.
pub fn sequence_length(cfg: &ModelConfig) -> Result<i64> {
    let name = "fp16_guard_sequence_length";
    match cfg.parameter(name) {
        None => Ok(DEFAULT_SEQUENCE_LENGTH),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if (1..=65536).contains(&n) => Ok(n),
            _ => Err(param_error(name, v, "an integer from 1 to 65536")),
        },
    }
}

/// Ops that pass indices through unchanged in value.
const PASS_THROUGH: &[&str] = &[
    "Cast",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Identity",
];

/// Rows of the smallest table whose `Gather` indices `input` reaches in `g`, if any.
fn gather_rows(g: &GraphProto, input: &str) -> Option<u64> {
    let inits: HashMap<&str, &crate::onnx::TensorProto> =
        g.initializer.iter().map(|t| (t.name(), t)).collect();
    let mut frontier = vec![input.to_string()];
    let mut seen = std::collections::HashSet::new();
    let mut best: Option<u64> = None;
    while let Some(v) = frontier.pop() {
        if !seen.insert(v.clone()) || seen.len() > 10_000 {
            continue;
        }
        for n in &g.node {
            let op = n.op_type();
            if op == "Gather" && n.input.get(1) == Some(&v) {
                let Some(table) = n.input.first().and_then(|d| inits.get(d.as_str())) else {
                    continue;
                };
                let rank = table.dims.len() as i64;
                let axis = n
                    .attribute
                    .iter()
                    .find(|a| a.name() == "axis")
                    .map(|a| a.i())
                    .unwrap_or(0);
                let axis = if axis < 0 { axis + rank } else { axis };
                if let Some(&rows) = usize::try_from(axis).ok().and_then(|a| table.dims.get(a)) {
                    if rows > 0 {
                        best = Some(best.map_or(rows as u64, |b| b.min(rows as u64)));
                    }
                }
            } else if PASS_THROUGH.contains(&op) && n.input.first() == Some(&v) {
                frontier.extend(n.output.iter().cloned());
            }
        }
    }
    best
}

/// Sample files' contents by input name.
type Samples = HashMap<String, Vec<u8>>;

/// Checks the guard's parameters at model load (the guard itself runs at build time):
/// `fp16_guard_input_range`, `fp16_guard_sequence_length` and the sample files of
/// `fp16_guard_inputs` (read and checked against the inputs' types and shapes).
pub fn validate(cfg: &ModelConfig, model_dir: &std::path::Path) -> Result<()> {
    input_range(cfg)?;
    let seq = sequence_length(cfg)?;
    sample_files(cfg, Some(model_dir), seq).map(|_| ())
}

/// `fp16_guard_inputs`: input name → file (relative to `model_dir`), read and checked against
/// the input's type and shape. Returns the files' contents and their batch rows.
fn sample_files(
    cfg: &ModelConfig,
    model_dir: Option<&std::path::Path>,
    seq: i64,
) -> Result<(Samples, Option<usize>)> {
    let name = "fp16_guard_inputs";
    let Some(v) = cfg.parameter(name) else {
        return Ok((HashMap::new(), None));
    };
    let accepted = "a list \"input=file,...\" of the model's inputs and files in its directory";
    let dir = model_dir.ok_or_else(|| param_error(name, v, accepted))?;
    let mut files = HashMap::new();
    let mut batch: Option<usize> = None;
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (input, file) = item
            .split_once('=')
            .map(|(a, b)| (a.trim(), b.trim()))
            .ok_or_else(|| param_error(name, v, accepted))?;
        let c = cfg
            .inputs
            .iter()
            .find(|c| c.name == input)
            .ok_or_else(|| param_error(name, v, accepted))?;
        if c.dtype == DataType::Bytes {
            return Err(Error::invalid_arg(format!(
                "parameter '{name}': input '{input}' is a STRING input; the guard draws its \
                 strings itself (sample files hold numeric tensors)"
            )));
        }
        let what = format!("FP16 guard sample of input '{input}'");
        let mut f = crate::safe_file::open_in_dir(dir, std::path::Path::new(file), &what)
            .map_err(|e| e.context(format!("parameter '{name}'")))?;
        let bytes = crate::safe_file::read_all(&mut f, MAX_SAMPLE_BYTES, &what)
            .map_err(|e| e.context(format!("parameter '{name}'")))?;
        let mut dims = cfg.engine_shape(c);
        let batching = cfg.max_batch_size > 0;
        if batching && !dims.is_empty() {
            dims.remove(0);
        }
        for d in dims.iter_mut().filter(|d| **d < 0) {
            *d = seq;
        }
        let row = crate::types::byte_count(&dims, c.dtype).unwrap_or(0);
        let rows = bytes.len().checked_div(row).unwrap_or(0);
        let ok = row > 0
            && bytes.len() % row == 0
            && rows >= 1
            && (if batching {
                rows <= cfg.max_batch_size
            } else {
                rows == 1
            });
        if !ok || batch.is_some_and(|b| b != rows) {
            return Err(Error::invalid_arg(format!(
                "parameter '{name}': {file} holds {} bytes; input '{input}' needs a whole \
                 number of rows of {row} bytes ({} {}), {} rows{}",
                bytes.len(),
                c.dtype,
                crate::types::shape_str(&dims),
                if batching {
                    format!("1 to {}", cfg.max_batch_size)
                } else {
                    "exactly 1".to_string()
                },
                batch
                    .map(|b| format!(", {b} as in the other files"))
                    .unwrap_or_default()
            )));
        }
        batch = Some(rows);
        files.insert(input.to_string(), bytes);
    }
    Ok((files, batch))
}

/// The guard's inputs for `cfg` (engine shapes, `batch` rows when batching, unless sample files
/// say otherwise) and the model's graph, seeded by `seed`. `model_dir` is where sample files
/// of `fp16_guard_inputs` are looked up.
pub fn guard_inputs(
    cfg: &ModelConfig,
    model: Option<&OnnxModel>,
    model_dir: Option<&std::path::Path>,
    batch: usize,
    seed: u64,
) -> Result<GuardInputs> {
    let (lo, hi) = input_range(cfg)?;
    let seq = sequence_length(cfg)?;
    let (mut samples, sample_batch) = sample_files(cfg, model_dir, seq)?;
    let batch = if cfg.max_batch_size > 0 {
        sample_batch.unwrap_or(batch)
    } else {
        1
    };
    let mut rng = Rng(seed);
    let mut out = GuardInputs {
        batch,
        shapes: Vec::new(),
        data: Vec::new(),
        notes: Vec::new(),
    };
    for c in &cfg.inputs {
        let mut shape = cfg.engine_shape(c);
        let mut dynamic = false;
        for (i, d) in shape.iter_mut().enumerate() {
            if *d < 0 {
                if i == 0 && cfg.max_batch_size > 0 {
                    *d = batch as i64;
                } else {
                    *d = seq;
                    dynamic = true;
                }
            }
        }
        let count = crate::types::element_count(&shape).ok_or_else(|| {
            Error::invalid_arg(format!(
                "FP16 accuracy guard: input '{}' has shape {} whose size overflows",
                c.name,
                crate::types::shape_str(&shape)
            ))
        })?;
        if let Some(bytes) = samples.remove(&c.name) {
            out.notes.push(format!(
                "'{}': real sample ({} bytes, {batch} rows)",
                c.name,
                bytes.len()
            ));
            out.data.push(bytes);
            out.shapes.push(shape);
            continue;
        }
        if c.dtype == DataType::Bytes {
            // Strings are never converted to FP16; the outputs they lead to are compared for
            // equality. Words of a small vocabulary (repeats included, so lookups and
            // comparisons hit), cases mixed, one empty string.
            const WORDS: [&str; 8] = [
                "alpha",
                "Beta",
                "GAMMA",
                "delta",
                "",
                "epsilon zeta",
                "a",
                "Ωmega",
            ];
            let mut data = Vec::new();
            for _ in 0..count {
                let w = WORDS[rng.below(WORDS.len() as u64) as usize];
                crate::types::push_bytes_element(&mut data, w.as_bytes())
                    .ok_or_else(|| Error::internal("guard string too long"))?;
            }
            out.notes.push(format!(
                "'{}': strings from a {}-word vocabulary{}",
                c.name,
                WORDS.len(),
                if dynamic {
                    format!(", dynamic dims = {seq}")
                } else {
                    String::new()
                }
            ));
            out.data.push(data);
            out.shapes.push(shape);
            continue;
        }
        let is_float = matches!(
            c.dtype,
            DataType::F32 | DataType::F64 | DataType::F16 | DataType::BF16
        );
        let kind = if is_float {
            Kind::Float(lo, hi)
        } else if c.name.to_ascii_lowercase().contains("mask") {
            Kind::Mask
        } else if let Some(rows) = model.and_then(|m| gather_rows(m.graph(), &c.name)) {
            Kind::Index(rows)
        } else {
            Kind::SmallInt
        };
        let row_len = shape.last().copied().unwrap_or(1).max(1) as usize;
        let mut values: Vec<f64> = Vec::with_capacity(count);
        match kind {
            Kind::Float(lo, hi) => {
                values.extend((0..count).map(|_| lo + (hi - lo) * rng.unit()));
            }
            Kind::Index(rows) => values.extend((0..count).map(|_| rng.below(rows) as f64)),
            Kind::SmallInt => values.extend((0..count).map(|_| rng.below(2) as f64)),
            Kind::Mask => {
                // Per row (last dim), a random number >= 1 of leading ones.
                let mut left = count;
                while left > 0 {
                    let n = row_len.min(left);
                    let ones = 1 + rng.below(n as u64) as usize;
                    values.extend((0..n).map(|k| if k < ones { 1.0 } else { 0.0 }));
                    left -= n;
                }
            }
        }
        out.notes.push(
            match kind {
                Kind::Float(lo, hi) => format!("'{}': floats in [{lo}, {hi})", c.name),
                Kind::Index(rows) => format!("'{}': indices over [0, {rows})", c.name),
                Kind::Mask => format!("'{}': attention mask, >= 1 real token per row", c.name),
                Kind::SmallInt => format!("'{}': 0/1", c.name),
            } + &if dynamic {
                format!(", dynamic dims = {seq}")
            } else {
                String::new()
            },
        );
        out.data.push(encode(c.dtype, &values));
        out.shapes.push(shape);
    }
    Ok(out)
}

/// Whether node `n` reads value `v`: as an input, or inside one of its subgraphs (a control-flow
/// body capturing it from the outer scope).
fn reads(n: &crate::onnx::NodeProto, v: &str) -> bool {
    fn graph_reads(g: &GraphProto, v: &str) -> bool {
        g.node.iter().any(|n| reads(n, v))
    }
    n.input.iter().any(|i| i == v)
        || n.attribute.iter().any(|a| {
            a.g.as_ref().is_some_and(|g| graph_reads(g, v))
                || a.graphs.iter().any(|g| graph_reads(g, v))
        })
}

/// The clamped weights (initializer names, from the FP16 converter's report) that reach a graph
/// output of `model`'s main graph, each with one output it reaches.
pub fn clamped_weights_feeding_outputs(
    model: &OnnxModel,
    clamped: &std::collections::BTreeSet<String>,
) -> Vec<(String, String)> {
    let g = model.graph();
    let outputs: std::collections::HashSet<&str> = g.output.iter().map(|o| o.name()).collect();
    let mut found = Vec::new();
    for w in clamped {
        let mut frontier = vec![w.clone()];
        let mut seen = std::collections::HashSet::new();
        let mut reached = None;
        while let Some(v) = frontier.pop() {
            if outputs.contains(v.as_str()) {
                reached = Some(v);
                break;
            }
            if !seen.insert(v.clone()) {
                continue;
            }
            for n in g.node.iter().filter(|n| reads(n, &v)) {
                frontier.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
            }
        }
        if let Some(o) = reached {
            found.push((w.clone(), o));
        }
    }
    found
}

fn encode(dtype: DataType, values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.byte_size());
    for &x in values {
        match dtype {
            DataType::F32 => out.extend_from_slice(&(x as f32).to_le_bytes()),
            DataType::F64 => out.extend_from_slice(&x.to_le_bytes()),
            DataType::F16 => out.extend_from_slice(&half::f16::from_f64(x).to_le_bytes()),
            DataType::BF16 => out.extend_from_slice(&half::bf16::from_f64(x).to_le_bytes()),
            DataType::Bool => out.push(u8::from(x != 0.0)),
            d => {
                let v = x as i64;
                out.extend_from_slice(&v.to_le_bytes()[..d.byte_size()]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(params: serde_json::Value, inputs: serde_json::Value) -> ModelConfig {
        let mut raw = json!({
            "name": "m", "max_batch_size": 4, "input": inputs,
            "output": [{"name": "OUT", "data_type": "TYPE_FP32", "dims": [-1]}],
        });
        raw["parameters"] = params;
        ModelConfig::parse(raw).unwrap()
    }

    fn i64s(b: &[u8]) -> Vec<i64> {
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn parameters_are_validated() {
        let c = |v: &str| {
            cfg(
                json!({"fp16_guard_input_range": {"string_value": v}}),
                json!([]),
            )
        };
        assert_eq!(input_range(&c("-2,5")).unwrap(), (-2.0, 5.0));
        assert_eq!(input_range(&c("4")).unwrap(), (-4.0, 4.0));
        for bad in ["5,1", "nan", "1,2,3", "x", "inf"] {
            let e = input_range(&c(bad)).unwrap_err();
            assert!(
                e.to_string().contains("fp16_guard_input_range") && e.to_string().contains(bad),
                "{e}"
            );
        }
        let s = |v: &str| {
            cfg(
                json!({"fp16_guard_sequence_length": {"string_value": v}}),
                json!([]),
            )
        };
        assert_eq!(sequence_length(&s("128")).unwrap(), 128);
        for bad in ["0", "-3", "1e9", "abc"] {
            assert!(sequence_length(&s(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn indices_masks_lengths_and_ranges() {
        use crate::onnx::testutil::*;
        // ids → Cast → Gather(table[1000, 8]); mask: ids-shaped; pixels: floats.
        let table = tensor_f32("table", &[1000, 8], &vec![0.5; 8000]);
        let m = Gb::new("g")
            .input("input_ids", I64, &[-1, -1])
            .input("attention_mask", I64, &[-1, -1])
            .input("x", F32, &[-1, 3])
            .init(table)
            .node("Cast", &["input_ids"], &["ids32"], vec![a_int("to", 6)])
            .node("Gather", &["table", "ids32"], &["emb"], vec![])
            .output("emb", F32, &[-1, -1, 8])
            .onnx(17);
        let c = cfg(
            json!({"fp16_guard_input_range": {"string_value": "-10,10"}}),
            json!([
                {"name": "input_ids", "data_type": "TYPE_INT64", "dims": [-1]},
                {"name": "attention_mask", "data_type": "TYPE_INT64", "dims": [-1]},
                {"name": "x", "data_type": "TYPE_FP32", "dims": [3]},
            ]),
        );
        let g = guard_inputs(&c, Some(&m), None, 4, 7).unwrap();
        assert_eq!(g.shapes, vec![vec![4, 16], vec![4, 16], vec![4, 3]]);
        let ids = i64s(&g.data[0]);
        assert!(ids.iter().all(|&i| (0..1000).contains(&i)));
        assert!(
            *ids.iter().max().unwrap() > 500,
            "indices cover the table: {ids:?}"
        );
        let mask = i64s(&g.data[1]);
        for row in mask.chunks(16) {
            assert_eq!(row[0], 1, "every row has a real token: {row:?}");
            let ones = row.iter().filter(|&&v| v == 1).count();
            assert!(row[..ones].iter().all(|&v| v == 1) && row[ones..].iter().all(|&v| v == 0));
        }
        let xs: Vec<f32> = g.data[2]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert!(xs.iter().all(|v| (-10.0..10.0).contains(v)));
        assert!(
            xs.iter().any(|v| v.abs() > 1.0),
            "the range is used: {xs:?}"
        );
        assert!(g.notes[0].contains("[0, 1000)"), "{:?}", g.notes);
        // Without the model, integers stay 0/1; the same seed gives the same inputs.
        let plain = guard_inputs(&c, None, None, 4, 7).unwrap();
        assert!(i64s(&plain.data[0]).iter().all(|&v| v == 0 || v == 1));
        assert_eq!(guard_inputs(&c, Some(&m), None, 4, 7).unwrap(), g);
    }

    #[test]
    fn real_samples_from_files_beside_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let c = |v: &str| {
            cfg(
                json!({"fp16_guard_inputs": {"string_value": v}}),
                json!([
                    {"name": "ids", "data_type": "TYPE_INT64", "dims": [-1]},
                    {"name": "x", "data_type": "TYPE_FP32", "dims": [3]},
                ]),
            )
        };
        // Two rows of x: 2 × 3 floats.
        let x: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(dir.path().join("x.bin"), &x).unwrap();
        let g = guard_inputs(&c("x=x.bin"), None, Some(dir.path()), 4, 1).unwrap();
        assert_eq!(g.batch, 2);
        assert_eq!(g.shapes, vec![vec![2, 16], vec![2, 3]]);
        assert_eq!(g.data[1], x);
        assert!(g.notes[1].contains("real sample"), "{:?}", g.notes);
        // Sizes that are not whole rows, unknown inputs, files outside the directory, FIFOs.
        std::fs::write(dir.path().join("odd.bin"), [0u8; 5]).unwrap();
        for bad in [
            "x=odd.bin",
            "nope=x.bin",
            "x=../x.bin",
            "x",
            "x=missing.bin",
        ] {
            let e = guard_inputs(&c(bad), None, Some(dir.path()), 4, 1).unwrap_err();
            assert!(e.to_string().contains("fp16_guard_inputs"), "{bad}: {e}");
        }
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("s.bin"), &x).unwrap();
        std::os::unix::fs::symlink(outside.path().join("s.bin"), dir.path().join("s.bin")).unwrap();
        let e = guard_inputs(&c("x=s.bin"), None, Some(dir.path()), 4, 1).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
    }

    #[test]
    fn which_clamped_weights_feed_an_output() {
        use crate::onnx::testutil::*;
        let sub = Gb::new("then")
            .output("t_out", F32, &[3])
            .node("Identity", &["inner_w"], &["t_out"], vec![])
            .g;
        let m = Gb::new("g")
            .input("x", F32, &[-1, 3])
            .input("c", crate::onnx::elem::BOOL, &[])
            .init(tensor_f32("w", &[3], &[1.0; 3]))
            .init(tensor_f32("dead", &[3], &[1.0; 3]))
            .init(tensor_f32("inner_w", &[3], &[1.0; 3]))
            .node("Mul", &["x", "w"], &["xw"], vec![])
            .node("Add", &["xw", "x"], &["y"], vec![])
            .node("Neg", &["dead"], &["unused"], vec![])
            .node("If", &["c"], &["z"], vec![a_graph("then_branch", sub)])
            .output("y", F32, &[-1, 3])
            .output("z", F32, &[3])
            .onnx(17);
        let clamped = ["w", "dead", "inner_w"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut found = clamped_weights_feeding_outputs(&m, &clamped);
        found.sort();
        assert_eq!(
            found,
            vec![
                ("inner_w".to_string(), "z".to_string()),
                ("w".to_string(), "y".to_string())
            ]
        );
    }
}

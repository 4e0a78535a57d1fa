//! The model configuration as the backend reads it from Triton's JSON, and its validation
//! against the engine's I/O signature.
//!
//! Triton prints 64-bit integers either as numbers or as numeric strings depending on the field,
//! so every integer is read leniently. The raw JSON is kept: auto-complete edits it and sends the
//! whole config back, as `TRITONBACKEND_ModelSetConfig` requires.

use crate::engine::{Signature, TensorSpec};
use crate::error::{Error, Result};
use crate::types::{shape_str, DataType};
use serde_json::Value;
use std::collections::BTreeMap;

/// One input or output of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorConfig {
    pub name: String,
    pub dtype: DataType,
    /// Dims without the batch dimension when `max_batch_size > 0`; `-1` = variable.
    pub dims: Vec<i64>,
    /// The model-side shape when the config has a `reshape`; also `Some([])` for a scalar
    /// tensor of a non-batching model (see [`ModelConfig::bind_scalars`]).
    pub reshape: Option<Vec<i64>>,
    pub optional: bool,
    pub is_shape_tensor: bool,
}

impl TensorConfig {
    /// The shape the engine sees (reshape if given).
    pub fn model_dims(&self) -> &[i64] {
        self.reshape.as_deref().unwrap_or(&self.dims)
    }
}

/// The dynamic batcher's settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DynamicBatching {
    pub preferred_batch_sizes: Vec<usize>,
    pub max_queue_delay_us: u64,
}

/// One execution accelerator entry (`optimization.execution_accelerators`).
#[derive(Debug, Clone, PartialEq)]
pub struct Accelerator {
    pub name: String,
    pub parameters: BTreeMap<String, String>,
}

/// The parts of the model configuration the backend uses.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub raw: Value,
    pub name: String,
    pub max_batch_size: usize,
    pub inputs: Vec<TensorConfig>,
    pub outputs: Vec<TensorConfig>,
    pub dynamic_batching: Option<DynamicBatching>,
    pub has_scheduler: bool,
    pub parameters: BTreeMap<String, String>,
    pub default_model_filename: String,
    pub gpu_accelerators: Vec<Accelerator>,
    pub cpu_accelerators: Vec<Accelerator>,
    pub input_pinned_memory: bool,
    pub output_pinned_memory: bool,
}

/// Reads an integer that may be a JSON number or a numeric string.
pub fn lenient_i64(v: &Value, what: &str) -> Result<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().and_then(|u| i64::try_from(u).ok()))
            .ok_or_else(|| Error::invalid_arg(format!("{what}: {n} is not an integer"))),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| Error::invalid_arg(format!("{what}: '{s}' is not an integer"))),
        Value::Null => Ok(0),
        other => Err(Error::invalid_arg(format!(
            "{what}: expected an integer, got {other}"
        ))),
    }
}

fn int_list(v: Option<&Value>, what: &str) -> Result<Vec<i64>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(|x| lenient_i64(x, what)).collect(),
        Some(other) => Err(Error::invalid_arg(format!(
            "{what}: expected a list, got {other}"
        ))),
    }
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn bool_field(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(Value::Object(o)) = v {
        for (k, val) in o {
            // Model parameters are {"key": {"string_value": "..."}}; accelerator parameters are
            // plain strings.
            let s = match val {
                Value::String(s) => s.clone(),
                Value::Object(inner) => inner
                    .get("string_value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                other => other.to_string(),
            };
            m.insert(k.clone(), s);
        }
    }
    m
}

fn accelerators(v: Option<&Value>) -> Vec<Accelerator> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| Accelerator {
                    name: str_field(e, "name"),
                    parameters: string_map(e.get("parameters")),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn tensor(kind: &str, v: &Value) -> Result<TensorConfig> {
    let name = str_field(v, "name");
    if name.is_empty() {
        return Err(Error::invalid_arg(format!(
            "an {kind} in the config has no name"
        )));
    }
    let what = format!("{kind} '{name}'");
    let dt = str_field(v, "data_type");
    let dtype = DataType::from_config_name(if dt.is_empty() { "TYPE_INVALID" } else { &dt })
        .map_err(|e| e.context(what.clone()))?;
    let reshape = match v.get("reshape") {
        Some(r @ Value::Object(_)) => Some(int_list(r.get("shape"), &format!("{what} reshape"))?),
        _ => None,
    };
    Ok(TensorConfig {
        dims: int_list(v.get("dims"), &format!("{what} dims"))?,
        reshape,
        optional: bool_field(v, "optional"),
        is_shape_tensor: bool_field(v, "is_shape_tensor"),
        dtype,
        name,
    })
}

impl ModelConfig {
    /// Parses Triton's config JSON.
    pub fn parse(raw: Value) -> Result<Self> {
        let name = str_field(&raw, "name");
        let mbs = lenient_i64(
            raw.get("max_batch_size").unwrap_or(&Value::Null),
            "max_batch_size",
        )?;
        if mbs < 0 {
            return Err(Error::invalid_arg(format!(
                "max_batch_size must be >= 0, got {mbs}"
            )));
        }
        let list = |key: &str, kind: &str| -> Result<Vec<TensorConfig>> {
            raw.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|v| tensor(kind, v)).collect())
                .unwrap_or(Ok(Vec::new()))
        };
        let inputs = list("input", "input")?;
        let outputs = list("output", "output")?;
        let dynamic_batching = match raw.get("dynamic_batching") {
            Some(d @ Value::Object(_)) => Some(DynamicBatching {
                preferred_batch_sizes: int_list(
                    d.get("preferred_batch_size"),
                    "preferred_batch_size",
                )?
                .into_iter()
                .filter(|&x| x > 0)
                .map(|x| x as usize)
                .collect(),
                max_queue_delay_us: lenient_i64(
                    d.get("max_queue_delay_microseconds")
                        .unwrap_or(&Value::Null),
                    "max_queue_delay_microseconds",
                )? as u64,
            }),
            _ => None,
        };
        let has_scheduler = [
            "dynamic_batching",
            "sequence_batching",
            "ensemble_scheduling",
        ]
        .iter()
        .any(|k| matches!(raw.get(*k), Some(Value::Object(_))));
        let opt = raw.get("optimization");
        let accel = opt.and_then(|o| o.get("execution_accelerators"));
        let pinned = |key: &str| {
            opt.and_then(|o| o.get(key))
                .and_then(|p| p.get("enable"))
                .and_then(Value::as_bool)
                .unwrap_or(true)
        };
        Ok(ModelConfig {
            name,
            max_batch_size: mbs as usize,
            inputs,
            outputs,
            dynamic_batching,
            has_scheduler,
            parameters: string_map(raw.get("parameters")),
            default_model_filename: str_field(&raw, "default_model_filename"),
            gpu_accelerators: accelerators(accel.and_then(|a| a.get("gpu_execution_accelerator"))),
            cpu_accelerators: accelerators(accel.and_then(|a| a.get("cpu_execution_accelerator"))),
            input_pinned_memory: pinned("input_pinned_memory"),
            output_pinned_memory: pinned("output_pinned_memory"),
            raw,
        })
    }

    /// A model parameter (`parameters { key: ... value: { string_value: ... } }`).
    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Full shape of a config tensor as the engine sees it, batch dim first (`-1`).
    pub fn engine_shape(&self, t: &TensorConfig) -> Vec<i64> {
        let mut s = Vec::with_capacity(t.model_dims().len() + 1);
        if self.max_batch_size > 0 {
            s.push(-1);
        }
        s.extend_from_slice(t.model_dims());
        s
    }

    /// Checks the config against the engine's signature; every mismatch names the tensor, what
    /// the model has and what the config says.
    pub fn validate(&self, sig: &Signature) -> Result<()> {
        let ctx = |e: Error| e.context(format!("model '{}'", self.name));
        // Triton core lets a name through twice (its maps keep the first); the model has each
        // tensor once, so such a config cannot describe it (onnxruntime_backend refuses it too,
        // through its input count).
        for (kind, list) in [("input", &self.inputs), ("output", &self.outputs)] {
            for (i, t) in list.iter().enumerate() {
                if list[..i].iter().any(|o| o.name == t.name) {
                    return Err(ctx(Error::invalid_arg(format!(
                        "{kind} '{}' is listed twice in the config",
                        t.name
                    ))));
                }
            }
        }
        // A model without inputs (a constant generator) is served with an empty input list, as
        // Triton allows.
        if self.inputs.is_empty() && !sig.inputs.is_empty() {
            let names: Vec<&str> = sig.inputs.iter().map(|t| t.name.as_str()).collect();
            return Err(ctx(Error::invalid_arg(format!(
                "the config lists no inputs (and auto-complete did not fill them); the model's \
                 inputs: {}",
                names.join(", ")
            ))));
        }
        if self.outputs.is_empty() {
            return Err(ctx(Error::invalid_arg(
                "the config lists no outputs (and auto-complete did not fill them)",
            )));
        }
        for c in &self.inputs {
            let m = find(&sig.inputs, &c.name, "input")?;
            self.check_tensor("input", c, m).map_err(ctx)?;
        }
        for m in &sig.inputs {
            if !self.inputs.iter().any(|c| c.name == m.name) {
                return Err(ctx(Error::invalid_arg(format!(
                    "the model's input '{}' ({} {}) is missing from the config",
                    m.name,
                    m.dtype.config_name(),
                    shape_str(&m.dims)
                ))));
            }
        }
        for c in &self.outputs {
            let m = find(&sig.outputs, &c.name, "output").map_err(ctx)?;
            self.check_tensor("output", c, m).map_err(ctx)?;
        }
        Ok(())
    }

    /// The rules of Triton's ONNX Runtime backend for one tensor: same data type; a scalar
    /// (rank-0) model tensor takes config dims of only 1s and cannot batch; otherwise the
    /// config's shape (batch dim first when `max_batch_size > 0`, `reshape` if given) has the
    /// model's rank and agrees dim by dim. For an input, a model dim of -1 takes any config dim
    /// and a fixed one must be repeated, except a fixed 0, which the config can only write as
    /// -1 (Triton core refuses 0). For an output, -1 on either side matches anything: ONNX
    /// Runtime's shape inference may fix a dim the file leaves symbolic (and vice versa), and the
    /// engine's actual output shape is what is served.
    fn check_tensor(&self, kind: &str, c: &TensorConfig, m: &TensorSpec) -> Result<()> {
        if c.dtype != m.dtype {
            return Err(Error::invalid_arg(format!(
                "{kind} '{}': the config says {} but the model has {}",
                c.name,
                c.dtype.config_name(),
                m.dtype.config_name()
            )));
        }
        if m.dims.is_empty() {
            if self.max_batch_size > 0 {
                return Err(Error::invalid_arg(format!(
                    "{kind} '{}': max_batch_size is {} but the model's tensor is a scalar (shape []), \
                     which has no batch dimension; use max_batch_size 0 with dims [1]",
                    c.name, self.max_batch_size
                )));
            }
            if c.model_dims().iter().any(|&d| d != 1) {
                return Err(Error::invalid_arg(format!(
                    "{kind} '{}': the model's tensor is a scalar (shape []); the config's dims \
                     must be only 1s (dims: [1]), got {}",
                    c.name,
                    shape_str(c.model_dims())
                )));
            }
            return Ok(());
        }
        if self.max_batch_size > 0 && m.dims[0] != -1 {
            return Err(Error::invalid_arg(format!(
                "{kind} '{}': max_batch_size is {} but the model's first dimension is fixed at {} \
                 (shape {}); use max_batch_size 0 with full dims, or export the model with a \
                 dynamic batch dimension",
                c.name,
                self.max_batch_size,
                m.dims[0],
                shape_str(&m.dims)
            )));
        }
        let want = self.engine_shape(c);
        let output = kind == "output";
        let dims_ok = want.len() == m.dims.len()
            && want
                .iter()
                .zip(&m.dims)
                .all(|(&w, &md)| md == -1 || w == md || (w == -1 && (md == 0 || output)));
        if !dims_ok {
            let shown = if self.max_batch_size > 0 {
                format!("[batch]+{}", shape_str(c.model_dims()))
            } else {
                shape_str(c.model_dims())
            };
            let hint = if self.max_batch_size > 0 && m.dims.len() == 1 && c.reshape.is_none() {
                " (a [batch] tensor is written dims: [1] with reshape: { shape: [ ] })"
            } else {
                ""
            };
            return Err(Error::invalid_arg(format!(
                "{kind} '{}': the config's dims {} (max_batch_size {}) do not match the model's \
                 shape {}{hint}",
                c.name,
                shown,
                self.max_batch_size,
                shape_str(&m.dims)
            )));
        }
        Ok(())
    }

    /// After [`ModelConfig::validate`]: a scalar model tensor of a non-batching model (config
    /// dims of 1s, no reshape: Triton refuses an empty reshape there) is given an internal empty
    /// reshape, so the engine sees rank 0 while requests and responses carry the config's dims
    /// (`[1]`), as Triton's ONNX Runtime backend serves them.
    pub fn bind_scalars(&mut self, sig: &Signature) {
        if self.max_batch_size > 0 {
            return;
        }
        for (list, model) in [
            (&mut self.inputs, &sig.inputs),
            (&mut self.outputs, &sig.outputs),
        ] {
            for c in list.iter_mut() {
                if model.iter().any(|m| m.name == c.name && m.dims.is_empty()) {
                    c.reshape = Some(Vec::new());
                }
            }
        }
    }
}

fn find<'a>(list: &'a [TensorSpec], name: &str, kind: &str) -> Result<&'a TensorSpec> {
    list.iter().find(|t| t.name == name).ok_or_else(|| {
        let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
        Error::invalid_arg(format!(
            "the config's {kind} '{name}' is not an {kind} of the model (the model's {kind}s: {})",
            names.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sig() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "input".into(),
                dtype: DataType::F32,
                dims: vec![-1, 3, 32, 32],
            }],
            outputs: vec![TensorSpec {
                name: "embedding".into(),
                dtype: DataType::F32,
                dims: vec![-1, 32],
            }],
        }
    }

    fn cfg(v: Value) -> ModelConfig {
        ModelConfig::parse(v).unwrap()
    }

    #[test]
    fn numbers_and_numeric_strings_are_read() {
        let c = cfg(json!({"name": "m", "max_batch_size": 8,
            "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": ["3", 32, "32"]}],
            "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [32]}],
            "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": "100"},
            "parameters": {"precision_mode": {"string_value": "FP16"}}}));
        assert_eq!(c.inputs[0].dims, vec![3, 32, 32]);
        assert_eq!(c.dynamic_batching.as_ref().unwrap().max_queue_delay_us, 100);
        assert_eq!(c.parameter("precision_mode"), Some("FP16"));
        c.validate(&sig()).unwrap();
    }

    #[test]
    fn mismatches_name_the_tensor_and_both_sides() {
        let c = cfg(json!({"name": "m", "max_batch_size": 8,
            "input": [{"name": "input", "data_type": "TYPE_FP16", "dims": [3, 32, 32]}],
            "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [32]}]}));
        let e = c.validate(&sig()).unwrap_err().to_string();
        assert!(
            e.contains("input 'input'") && e.contains("TYPE_FP16") && e.contains("TYPE_FP32"),
            "{e}"
        );

        let c = cfg(json!({"name": "m", "max_batch_size": 8,
            "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 16, 16]}],
            "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [32]}]}));
        let e = c.validate(&sig()).unwrap_err().to_string();
        assert!(e.contains("[3,16,16]") && e.contains("[-1,3,32,32]"), "{e}");

        let c = cfg(json!({"name": "m", "max_batch_size": 8,
            "input": [{"name": "pixels", "data_type": "TYPE_FP32", "dims": [3, 32, 32]}],
            "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [32]}]}));
        let e = c.validate(&sig()).unwrap_err().to_string();
        assert!(e.contains("'pixels'") && e.contains("input"), "{e}");
    }

    #[test]
    fn fixed_first_dim_cannot_batch() {
        let mut s = sig();
        s.inputs[0].dims[0] = 1;
        let c = cfg(json!({"name": "m", "max_batch_size": 8,
            "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 32, 32]}],
            "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [32]}]}));
        assert!(c
            .validate(&s)
            .unwrap_err()
            .to_string()
            .contains("fixed at 1"));
    }

    #[test]
    fn string_tensors_are_served() {
        let c = cfg(json!({"name": "m", "max_batch_size": 0,
            "input": [{"name": "t", "data_type": "TYPE_STRING", "dims": [2]}],
            "output": [{"name": "u", "data_type": "TYPE_STRING", "dims": [2]}]}));
        let s = Signature {
            inputs: vec![TensorSpec {
                name: "t".into(),
                dtype: DataType::Bytes,
                dims: vec![2],
            }],
            outputs: vec![TensorSpec {
                name: "u".into(),
                dtype: DataType::Bytes,
                dims: vec![2],
            }],
        };
        c.validate(&s).unwrap();
        // A STRING config over a numeric tensor is still a mismatch.
        let f32_in = Signature {
            inputs: vec![TensorSpec {
                dtype: DataType::F32,
                ..s.inputs[0].clone()
            }],
            ..s.clone()
        };
        let e = c.validate(&f32_in).unwrap_err().to_string();
        assert!(e.contains("'t'") && e.contains("STRING"), "{e}");
    }

    fn spec(name: &str, dims: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype: DataType::F32,
            dims: dims.to_vec(),
        }
    }

    fn io(mbs: u32, input: Value, output: Value) -> ModelConfig {
        cfg(json!({"name": "m", "max_batch_size": mbs, "input": [input], "output": [output]}))
    }

    #[test]
    fn an_output_dim_fixed_by_shape_inference_matches_a_symbolic_one() {
        // The reported case: auto-complete wrote [batch]+[-1] from the file's symbolic dim,
        // ONNX Runtime's session says [-1,384]; and the other way round.
        let c = io(
            8,
            json!({"name": "ids", "data_type": "TYPE_FP32", "dims": [-1]}),
            json!({"name": "emb", "data_type": "TYPE_FP32", "dims": [-1]}),
        );
        let file = Signature {
            inputs: vec![spec("ids", &[-1, -1])],
            outputs: vec![spec("emb", &[-1, -1])],
        };
        let session = Signature {
            outputs: vec![spec("emb", &[-1, 384])],
            ..file.clone()
        };
        c.validate(&file).unwrap();
        c.validate(&session).unwrap();
        let c384 = io(
            8,
            json!({"name": "ids", "data_type": "TYPE_FP32", "dims": [-1]}),
            json!({"name": "emb", "data_type": "TYPE_FP32", "dims": [384]}),
        );
        c384.validate(&file).unwrap();
        c384.validate(&session).unwrap();
        // Ranks must still agree, and a fixed output dim must be the model's.
        let wrong = io(
            8,
            json!({"name": "ids", "data_type": "TYPE_FP32", "dims": [-1]}),
            json!({"name": "emb", "data_type": "TYPE_FP32", "dims": [383]}),
        );
        assert!(wrong.validate(&session).is_err());
    }

    #[test]
    fn input_dims_zero_dims_and_scalars() {
        let sig = Signature {
            inputs: vec![spec("x", &[2, 3]), spec("z", &[2, 0]), spec("s", &[])],
            outputs: vec![spec("y", &[])],
        };
        let make = |x: Value, s: Value| {
            cfg(json!({"name": "m", "max_batch_size": 0,
                "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": x},
                          {"name": "z", "data_type": "TYPE_FP32", "dims": [2, -1]},
                          {"name": "s", "data_type": "TYPE_FP32", "dims": s}],
                "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]}))
        };
        // A fixed input dim must be repeated (-1 does not match 3); a fixed 0 is written -1.
        make(json!([2, 3]), json!([1])).validate(&sig).unwrap();
        let e = make(json!([2, -1]), json!([1])).validate(&sig).unwrap_err();
        assert!(e.to_string().contains("input 'x'"), "{e}");
        // A scalar takes only 1s.
        make(json!([2, 3]), json!([1, 1])).validate(&sig).unwrap();
        let e = make(json!([2, 3]), json!([2])).validate(&sig).unwrap_err();
        assert!(
            e.to_string().contains("'s'") && e.to_string().contains("scalar"),
            "{e}"
        );
        // The engine sees rank 0; requests and responses keep the config's dims.
        let mut c = make(json!([2, 3]), json!([1]));
        c.bind_scalars(&sig);
        assert_eq!(c.inputs[2].model_dims(), &[] as &[i64]);
        assert_eq!(c.inputs[2].dims, vec![1]);
        assert_eq!(c.outputs[0].model_dims(), &[] as &[i64]);
        assert_eq!(c.inputs[0].reshape, None);
        c.validate(&sig).unwrap();
        // No inputs in the config: fine for a model without inputs only.
        let gen = Signature {
            inputs: vec![],
            outputs: vec![spec("y", &[])],
        };
        let none = cfg(json!({"name": "m", "max_batch_size": 0, "input": [],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]}));
        none.validate(&gen).unwrap();
        let e = none.validate(&sig).unwrap_err().to_string();
        assert!(e.contains("no inputs") && e.contains("x, z, s"), "{e}");
        // A name listed twice (Triton core lets it through).
        let twice = cfg(json!({"name": "m", "max_batch_size": 0, "input": [],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]},
                       {"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]}));
        let e = twice.validate(&gen).unwrap_err().to_string();
        assert!(e.contains("output 'y' is listed twice"), "{e}");
    }
}

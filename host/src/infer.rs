//! Inference requests/responses of the host API and Triton's request normalization.

use std::collections::BTreeSet;

use triton_abi::*;

use crate::config::{self, proto::model_config::Scheduling_choice, ModelConfig};
use crate::error::{Error, Result};
use crate::memory::{Buffer, MemoryPool, MemoryType};

/// One contiguous piece of an input tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Where the host places them before handing them to the backend.
    pub memory: MemoryType,
}

/// An input tensor, possibly split into several chunks.
#[derive(Clone, Debug, PartialEq)]
pub struct InputTensor {
    /// Tensor name.
    pub name: String,
    /// `TRITONSERVER_DataType`.
    pub datatype: u32,
    /// Full shape (with the batch dimension for batching models).
    pub shape: Vec<i64>,
    /// Data, in order.
    pub chunks: Vec<Chunk>,
}

impl InputTensor {
    /// A tensor in a single CPU chunk.
    pub fn new(name: &str, datatype: u32, shape: &[i64], bytes: Vec<u8>) -> Self {
        InputTensor {
            name: name.to_string(),
            datatype,
            shape: shape.to_vec(),
            chunks: vec![Chunk {
                bytes,
                memory: MemoryType::Cpu,
            }],
        }
    }
    /// An FP32 tensor in a single CPU chunk.
    pub fn f32(name: &str, shape: &[i64], values: &[f32]) -> Self {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::new(name, TRITONSERVER_TYPE_FP32, shape, bytes)
    }
    /// Re-split the data into chunks of at most `n` bytes placed in `memory`.
    pub fn split(mut self, n: usize, memory: MemoryType) -> Self {
        let all: Vec<u8> = self.chunks.drain(..).flat_map(|c| c.bytes).collect();
        self.chunks = all
            .chunks(n.max(1))
            .map(|c| Chunk {
                bytes: c.to_vec(),
                memory,
            })
            .collect();
        self
    }
    fn byte_size(&self) -> usize {
        self.chunks.iter().map(|c| c.bytes.len()).sum()
    }
}

/// A client request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InferRequest {
    /// Request id (may be empty).
    pub id: String,
    /// Input tensors.
    pub inputs: Vec<InputTensor>,
    /// Requested outputs; `None` = all model outputs (as Triton fills in).
    pub outputs: Option<Vec<String>>,
    /// Memory the client's allocator hands out for outputs (GPU falls back to CPU without GPU).
    pub output_memory: MemoryType,
    /// Correlation id (0 = none).
    pub correlation_id: u64,
    /// Timeout in microseconds (0 = none).
    pub timeout_us: u64,
}

impl InferRequest {
    /// A request with an id and inputs.
    pub fn new(id: &str, inputs: Vec<InputTensor>) -> Self {
        InferRequest {
            id: id.to_string(),
            inputs,
            ..Default::default()
        }
    }
}

/// An output tensor returned to the client.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputTensor {
    /// Tensor name.
    pub name: String,
    /// `TRITONSERVER_DataType`.
    pub datatype: u32,
    /// Shape as the backend reported it.
    pub shape: Vec<i64>,
    /// Contents.
    pub bytes: Vec<u8>,
    /// Where the buffer actually was.
    pub memory: MemoryType,
}

impl OutputTensor {
    /// Contents as little-endian f32 values.
    pub fn as_f32(&self) -> Vec<f32> {
        self.bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

/// The (single, final) response to a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InferResponse {
    /// Error code and message if the backend answered with an error.
    pub error: Option<(u32, String)>,
    /// Outputs (empty for an error response).
    pub outputs: Vec<OutputTensor>,
}

impl InferResponse {
    /// Output by name.
    pub fn output(&self, name: &str) -> Option<&OutputTensor> {
        self.outputs.iter().find(|o| o.name == name)
    }
}

/// An input ready to be handed to the backend.
pub(crate) struct PreparedInput {
    pub name: String,
    pub datatype: u32,
    pub shape: Vec<i64>,
    pub chunks: Vec<Buffer>,
    pub byte_size: u64,
}

/// A request after Triton's normalization, with its data placed in host memory.
pub(crate) struct Prepared {
    pub id: String,
    pub inputs: Vec<PreparedInput>,
    pub outputs: Vec<String>,
    pub output_memory: MemoryType,
    pub correlation_id: u64,
    pub timeout_us: u64,
    pub batch_size: u64,
    /// Requests batch together only when these are equal.
    pub batch_key: Vec<(String, Vec<i64>)>,
}

fn bad(model: &str, msg: String) -> Error {
    Error::invalid_arg(format!("[request for model '{model}'] {msg}"))
}

/// Triton's reshape: the request's variable-size values fill the reshape's -1s in order.
fn apply_reshape(config_dims: &[i64], shape: &[i64], reshape: &[i64]) -> Vec<i64> {
    let mut vars = config_dims
        .iter()
        .zip(shape)
        .filter(|(c, _)| **c == -1)
        .map(|(_, s)| *s);
    reshape
        .iter()
        .map(|d| {
            if *d == -1 {
                vars.next().unwrap_or(-1)
            } else {
                *d
            }
        })
        .collect()
}

/// Triton's BYTES check: every element is a 4-byte little-endian length (which must not be
/// split across chunks) followed by that many bytes; the element count must match the shape.
fn check_bytes_elements(model: &str, t: &InputTensor, elems: u64) -> Result<()> {
    let name = &t.name;
    let mut n = 0u64;
    let mut remaining_elem = 0usize;
    for c in &t.chunks {
        if c.memory == MemoryType::Gpu {
            return Ok(());
        }
        let mut buf = c.bytes.as_slice();
        while !buf.is_empty() {
            if remaining_elem == 0 {
                if buf.len() < 4 {
                    return Err(bad(model, format!(
                        "incomplete string length indicator for input '{name}': 4 bytes expected, {} available \
                         (the indicator must be in one buffer)", buf.len())));
                }
                remaining_elem = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                n += 1;
                if n > elems {
                    return Err(bad(model, format!("unexpected number of string elements {n} for input '{name}', expecting {elems}")));
                }
                buf = &buf[4..];
            }
            let take = remaining_elem.min(buf.len());
            buf = &buf[take..];
            remaining_elem -= take;
        }
    }
    if remaining_elem > 0 || n != elems {
        return Err(bad(
            model,
            format!(
                "input '{name}': expected {elems} complete string elements, got {n}{}",
                if remaining_elem > 0 {
                    " (the last one is truncated)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

/// Triton's `InferenceRequest::Normalize` (`checked`), or just the bookkeeping (`!checked`,
/// for testing the backend's own defences), then place the data.
pub(crate) fn prepare(
    cfg: &ModelConfig,
    req: InferRequest,
    pool: &MemoryPool,
    checked: bool,
) -> Result<Prepared> {
    let m = cfg.name.as_str();
    let batching = cfg.max_batch_size > 0;
    let mut batch_size: Option<u64> = None;
    let mut key = Vec::new();
    let mut shapes = Vec::new();
    if checked {
        let mut seen = BTreeSet::new();
        for t in &req.inputs {
            if !seen.insert(t.name.clone()) {
                return Err(bad(m, format!("input '{}' given twice", t.name)));
            }
            let Some(ci) = cfg.input.iter().find(|i| i.name == t.name) else {
                return Err(bad(
                    m,
                    format!(
                        "unexpected inference input '{}', model expects {:?}",
                        t.name,
                        cfg.input
                            .iter()
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                    ),
                ));
            };
            let want = config::config_dtype(ci.data_type);
            if t.datatype != want {
                return Err(bad(
                    m,
                    format!(
                        "input '{}' data type is {}, model expects {}",
                        t.name,
                        datatype_name(t.datatype),
                        datatype_name(want)
                    ),
                ));
            }
            let (b, rest) = if batching {
                let Some((b, rest)) = t.shape.split_first() else {
                    return Err(bad(
                        m,
                        format!(
                            "input '{}' has no shape but the model requires a batch dimension",
                            t.name
                        ),
                    ));
                };
                (Some(*b), rest)
            } else {
                (None, t.shape.as_slice())
            };
            if rest.contains(&-1) {
                return Err(bad(
                    m,
                    format!(
                        "all input dimensions should be specified for input '{}', got {:?}",
                        t.name, t.shape
                    ),
                ));
            }
            let matches = rest.len() == ci.dims.len()
                && rest
                    .iter()
                    .zip(&ci.dims)
                    .all(|(s, d)| *s >= 0 && (*d == -1 || s == d));
            if !matches {
                return Err(bad(
                    m,
                    format!(
                        "unexpected shape for input '{}', model expects {}{:?}, got {:?}",
                        t.name,
                        if batching { "[-1] + " } else { "" },
                        ci.dims,
                        t.shape
                    ),
                ));
            }
            if let Some(b) = b {
                // Triton takes the batch size from the first input and compares the others;
                // a batch of 0 is not rejected.
                if b < 0 || b > cfg.max_batch_size as i64 {
                    return Err(bad(
                        m,
                        format!(
                            "inference request batch-size must be <= {} (input '{}' has {b})",
                            cfg.max_batch_size, t.name
                        ),
                    ));
                }
                match batch_size {
                    None | Some(0) => batch_size = Some(b as u64),
                    Some(x) if x != b as u64 => {
                        return Err(bad(
                            m,
                            format!("input '{}' batch size does not match other inputs", t.name),
                        ))
                    }
                    _ => {}
                }
            }
            let elems = config::element_count(&t.shape).unwrap_or(0);
            if t.datatype == TRITONSERVER_TYPE_BYTES {
                check_bytes_elements(m, t, elems)?;
            } else {
                let want = elems * datatype_byte_size(t.datatype) as u64;
                if t.byte_size() as u64 != want {
                    return Err(bad(m, format!("input byte size mismatch for input '{}': expected {want}, got {} (shape {:?}, {})",
                        t.name, t.byte_size(), t.shape, datatype_name(t.datatype))));
                }
            }
            // The backend sees the reshaped shape (batch dimension kept in front).
            let seen_shape = match ci.reshape.as_ref() {
                Some(r) => {
                    let mut s = apply_reshape(&ci.dims, rest, &r.shape);
                    if let Some(b) = b {
                        s.insert(0, b);
                    }
                    s
                }
                None => t.shape.clone(),
            };
            shapes.push(seen_shape);
            let ks = if ci.allow_ragged_batch {
                vec![]
            } else if batching {
                rest.to_vec()
            } else {
                t.shape.clone()
            };
            key.push((t.name.clone(), ks));
        }
        for ci in &cfg.input {
            if !ci.optional && !seen.contains(&ci.name) {
                return Err(bad(
                    m,
                    format!(
                        "expected {} inputs but got {}; missing required input '{}'",
                        cfg.input.iter().filter(|i| !i.optional).count(),
                        req.inputs.len(),
                        ci.name
                    ),
                ));
            }
        }
        if let Some(outs) = &req.outputs {
            for o in outs {
                if !cfg.output.iter().any(|c| &c.name == o) {
                    return Err(bad(m, format!("unexpected inference output '{o}'")));
                }
            }
        }
    } else {
        for t in &req.inputs {
            if batching && batch_size.is_none() {
                batch_size = t.shape.first().map(|b| (*b).max(0) as u64);
            }
            shapes.push(t.shape.clone());
            key.push((
                t.name.clone(),
                t.shape
                    .iter()
                    .skip(usize::from(batching))
                    .copied()
                    .collect(),
            ));
        }
    }
    key.sort();
    let outputs = req
        .outputs
        .clone()
        .unwrap_or_else(|| cfg.output.iter().map(|o| o.name.clone()).collect());
    let mut inputs = Vec::new();
    for (t, shape) in req.inputs.into_iter().zip(shapes) {
        let mut chunks = Vec::new();
        for c in &t.chunks {
            chunks.push(
                pool.alloc_from(c.memory, 0, &c.bytes)
                    .map_err(|e| e.context(format!("input '{}'", t.name)))?,
            );
        }
        inputs.push(PreparedInput {
            byte_size: chunks.iter().map(|c| c.len() as u64).sum(),
            name: t.name,
            datatype: t.datatype,
            shape,
            chunks,
        });
    }
    Ok(Prepared {
        id: req.id,
        inputs,
        outputs,
        output_memory: req.output_memory,
        correlation_id: req.correlation_id,
        timeout_us: req.timeout_us,
        batch_size: if batching { batch_size.unwrap_or(0) } else { 1 },
        batch_key: key,
    })
}

/// Dynamic batching parameters of a config (None = one request per Execute).
pub(crate) fn batch_policy(cfg: &ModelConfig) -> Option<crate::scheduler::BatchPolicy> {
    match &cfg.scheduling_choice {
        Some(Scheduling_choice::DynamicBatching(db)) if cfg.max_batch_size > 0 => {
            Some(crate::scheduler::BatchPolicy {
                max_batch_size: cfg.max_batch_size as u64,
                preferred: db.preferred_batch_size.iter().map(|p| *p as u64).collect(),
                delay_ns: db.max_queue_delay_microseconds.saturating_mul(1000),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::pbtxt;

    fn cfg() -> ModelConfig {
        pbtxt::parse(r#"name: "m" max_batch_size: 4
            input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1, 2 ] }, { name: "OPT" data_type: TYPE_INT32 dims: [ 1 ] optional: true } ]
            output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1, 2 ] } ]"#).unwrap()
    }

    #[test]
    fn normalization_accepts_valid_and_rejects_invalid() {
        let pool = MemoryPool::default();
        let ok = InferRequest::new("a", vec![InputTensor::f32("IN", &[2, 3, 2], &[0.0; 12])]);
        let p = prepare(&cfg(), ok.clone(), &pool, true).unwrap();
        assert_eq!(p.batch_size, 2);
        assert_eq!(p.outputs, vec!["OUT".to_string()]);
        let cases: Vec<InferRequest> = vec![
            InferRequest::new("b", vec![InputTensor::f32("IN", &[5, 3, 2], &[0.0; 30])]),
            InferRequest::new("c", vec![InputTensor::f32("IN", &[2, 3, 3], &[0.0; 18])]),
            InferRequest::new("d", vec![InputTensor::f32("IN", &[2, 3, 2], &[0.0; 11])]),
            InferRequest::new(
                "e",
                vec![InputTensor::new(
                    "IN",
                    TRITONSERVER_TYPE_INT32,
                    &[1, 1, 2],
                    vec![0; 8],
                )],
            ),
            InferRequest::new("f", vec![InputTensor::f32("X", &[1, 1, 2], &[0.0; 2])]),
            InferRequest::new("g", vec![]),
            InferRequest::new("h", vec![InputTensor::f32("IN", &[3, 2], &[0.0; 6])]),
            InferRequest::new(
                "i",
                vec![
                    InputTensor::f32("IN", &[1, 1, 2], &[0.0; 2]),
                    InputTensor::new("OPT", TRITONSERVER_TYPE_INT32, &[2, 1], vec![0; 8]),
                ],
            ),
            InferRequest {
                outputs: Some(vec!["NOPE".into()]),
                ..ok.clone()
            },
        ];
        for c in cases {
            let e = prepare(&cfg(), c.clone(), &pool, true)
                .err()
                .unwrap_or_else(|| panic!("accepted {}", c.id));
            assert_eq!(e.code, TRITONSERVER_ERROR_INVALID_ARG, "{}", c.id);
        }
        // Batch 0 passes, as in Triton.
        assert_eq!(
            prepare(
                &cfg(),
                InferRequest::new("z", vec![InputTensor::f32("IN", &[0, 3, 2], &[])]),
                &pool,
                true
            )
            .unwrap()
            .batch_size,
            0
        );
        // Reshape: the backend sees the reshaped shape with the request's variable values.
        let r: ModelConfig = pbtxt::parse(r#"name: "r" max_batch_size: 2
            input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1, 4 ] reshape { shape: [ -1, 2, 2 ] } } ]"#).unwrap();
        let p = prepare(
            &r,
            InferRequest::new("r", vec![InputTensor::f32("IN", &[2, 3, 4], &[0.0; 24])]),
            &pool,
            true,
        )
        .unwrap();
        assert_eq!(p.inputs[0].shape, vec![2, 3, 2, 2]);
        // BYTES: element count and length prefixes are checked; a prefix may not straddle chunks.
        let b: ModelConfig =
            pbtxt::parse(r#"name: "b" input [ { name: "S" data_type: TYPE_STRING dims: [ 2 ] } ]"#)
                .unwrap();
        let two: Vec<u8> = [
            &1u32.to_le_bytes()[..],
            b"a",
            &2u32.to_le_bytes()[..],
            b"bc",
        ]
        .concat();
        let t = InputTensor::new("S", TRITONSERVER_TYPE_BYTES, &[2], two.clone());
        prepare(&b, InferRequest::new("s", vec![t.clone()]), &pool, true).unwrap();
        prepare(
            &b,
            InferRequest::new("s", vec![t.clone().split(5, MemoryType::Cpu)]),
            &pool,
            true,
        )
        .unwrap();
        assert!(prepare(
            &b,
            InferRequest::new("s", vec![t.clone().split(3, MemoryType::Cpu)]),
            &pool,
            true
        )
        .is_err());
        let one = InputTensor::new("S", TRITONSERVER_TYPE_BYTES, &[2], two[..5].to_vec());
        assert!(prepare(&b, InferRequest::new("s", vec![one]), &pool, true).is_err());
        let cut = InputTensor::new("S", TRITONSERVER_TYPE_BYTES, &[2], two[..9].to_vec());
        assert!(prepare(&b, InferRequest::new("s", vec![cut]), &pool, true).is_err());
        // GPU data cannot be placed without a GPU.
        let gpu = InferRequest::new(
            "j",
            vec![InputTensor::f32("IN", &[1, 1, 2], &[0.0; 2]).split(4, MemoryType::Gpu)],
        );
        assert_eq!(
            prepare(&cfg(), gpu, &pool, true).err().unwrap().code,
            TRITONSERVER_ERROR_UNSUPPORTED
        );
    }
}

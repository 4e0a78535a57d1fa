//! Auto-complete of the model configuration from the engine's I/O signature.
//!
//! Policy (the one Triton's ONNX Runtime backend follows, so configs move over unchanged):
//! - nothing is touched when the config lists both inputs and outputs; otherwise the missing
//!   list is filled (an empty list for a model without inputs: a constant generator);
//! - the model can batch when every input and output has a dynamic first dimension (a scalar
//!   cannot batch);
//! - `max_batch_size` 0 with a batchable model becomes the server's `default-max-batch-size`; a
//!   config that set `max_batch_size > 0` for a model that cannot batch fails the load;
//! - with a batchable model, `max_batch_size > 1` and no scheduler, an empty
//!   `dynamic_batching {}` is added;
//! - a tensor with no dims left (a scalar of a non-batching model, or a `[batch]` tensor of a
//!   batching one) gets `dims: [1]`; only a batching model also gets an empty `reshape`, since
//!   Triton core refuses an empty reshape for a non-batching model;
//! - a fixed dim of 0 and a symbolic dim are written as -1 (Triton core refuses 0 in `dims`).

use super::config::lenient_i64;
use crate::engine::{Signature, TensorSpec};
use crate::error::{Error, Result};
use serde_json::{json, Value};

/// Whether the model's signature allows a batch dimension.
pub fn can_batch(sig: &Signature) -> bool {
    sig.inputs
        .iter()
        .chain(&sig.outputs)
        .all(|t| t.dims.first() == Some(&-1))
}

fn tensor_json(t: &TensorSpec, batching: bool) -> Value {
    let dims: Vec<i64> = if batching { &t.dims[1..] } else { &t.dims[..] }
        .iter()
        .map(|&d| if d > 0 { d } else { -1 })
        .collect();
    let mut v = json!({"name": t.name, "data_type": t.dtype.config_name()});
    if dims.is_empty() {
        v["dims"] = json!([1]);
        if batching {
            v["reshape"] = json!({"shape": []});
        }
    } else {
        v["dims"] = json!(dims);
    }
    v
}

fn is_empty_list(v: Option<&Value>) -> bool {
    v.and_then(Value::as_array).is_none_or(|a| a.is_empty())
}

/// Returns the completed config, or `None` when nothing needed completing.
pub fn complete(
    config: &Value,
    sig: &Signature,
    default_max_batch_size: usize,
) -> Result<Option<Value>> {
    let mut c = config.clone();
    let name = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ctx = |e: Error| e.context(format!("auto-completing the config of model '{name}'"));
    let missing_inputs = is_empty_list(config.get("input"));
    let missing_outputs = is_empty_list(config.get("output"));
    if !missing_inputs && !missing_outputs {
        return Ok(None);
    }
    let mut mbs = lenient_i64(
        config.get("max_batch_size").unwrap_or(&Value::Null),
        "max_batch_size",
    )
    .map_err(ctx)?;
    let batchable = can_batch(sig);
    let mut changed = false;

    if mbs == 0 && batchable && default_max_batch_size > 0 {
        mbs = default_max_batch_size as i64;
        c["max_batch_size"] = json!(mbs);
        changed = true;
    }
    if mbs > 0 && !batchable {
        let fixed: Vec<String> = sig
            .inputs
            .iter()
            .chain(&sig.outputs)
            .filter(|t| t.dims.first() != Some(&-1))
            .map(|t| format!("'{}' {}", t.name, crate::types::shape_str(&t.dims)))
            .collect();
        return Err(ctx(Error::invalid_arg(format!(
            "max_batch_size is {mbs} but the model cannot batch: these tensors have no dynamic first \
             dimension: {}; set max_batch_size: 0",
            fixed.join(", ")
        ))));
    }
    let batching = mbs > 0;
    if missing_inputs {
        c["input"] = Value::Array(
            sig.inputs
                .iter()
                .map(|t| tensor_json(t, batching))
                .collect(),
        );
        changed = true;
    }
    if missing_outputs {
        c["output"] = Value::Array(
            sig.outputs
                .iter()
                .map(|t| tensor_json(t, batching))
                .collect(),
        );
        changed = true;
    }
    let has_scheduler = [
        "dynamic_batching",
        "sequence_batching",
        "ensemble_scheduling",
    ]
    .iter()
    .any(|k| matches!(config.get(*k), Some(Value::Object(_))));
    if batchable && mbs > 1 && !has_scheduler {
        c["dynamic_batching"] = json!({});
        changed = true;
    }
    Ok(changed.then_some(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::DataType;

    fn sig(first: i64) -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: DataType::F32,
                dims: vec![first, 4],
            }],
            outputs: vec![TensorSpec {
                name: "y".into(),
                dtype: DataType::I64,
                dims: vec![first],
            }],
        }
    }

    #[test]
    fn fills_io_batch_and_batcher() {
        let c = complete(
            &json!({"name": "m", "max_batch_size": 0, "input": [], "output": []}),
            &sig(-1),
            4,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c["max_batch_size"], json!(4));
        assert_eq!(
            c["input"][0],
            json!({"name": "x", "data_type": "TYPE_FP32", "dims": [4]})
        );
        assert_eq!(
            c["output"][0],
            json!({"name": "y", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}})
        );
        assert_eq!(c["dynamic_batching"], json!({}));
    }

    #[test]
    fn keeps_a_complete_config_and_an_existing_scheduler() {
        let full = json!({"name": "m", "max_batch_size": 8,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
            "output": [{"name": "y", "data_type": "TYPE_INT64", "dims": [1]}],
            "dynamic_batching": {"preferred_batch_size": [8]}});
        assert!(complete(&full, &sig(-1), 4).unwrap().is_none());
    }

    #[test]
    fn non_batching_model() {
        let c = complete(&json!({"name": "m", "max_batch_size": 0}), &sig(2), 4)
            .unwrap()
            .unwrap();
        assert_eq!(c["max_batch_size"], json!(0));
        assert_eq!(c["input"][0]["dims"], json!([2, 4]));
        assert!(c.get("dynamic_batching").is_none());
        let e = complete(&json!({"name": "m", "max_batch_size": 8}), &sig(2), 4).unwrap_err();
        assert!(e.to_string().contains("'x' [2,4]"), "{e}");
    }

    fn spec(name: &str, dims: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype: DataType::F32,
            dims: dims.to_vec(),
        }
    }

    #[test]
    fn scalars_zero_dims_and_no_inputs_follow_onnxruntime_backend() {
        // Non-batching: a scalar is dims [1] without a reshape (Triton core refuses an empty
        // reshape there); a 0 and a symbolic dim are -1.
        let s = Signature {
            inputs: vec![spec("s", &[]), spec("z", &[2, 0])],
            outputs: vec![spec("o", &[-1, 3])],
        };
        let c = complete(&json!({"name": "m", "max_batch_size": 0}), &s, 4)
            .unwrap()
            .unwrap();
        assert_eq!(c["max_batch_size"], json!(0));
        assert_eq!(
            c["input"][0],
            json!({"name": "s", "data_type": "TYPE_FP32", "dims": [1]})
        );
        assert_eq!(c["input"][1]["dims"], json!([2, -1]));
        assert_eq!(c["output"][0]["dims"], json!([-1, 3]));
        assert!(c.get("dynamic_batching").is_none());
        // A scalar cannot batch.
        let e = complete(&json!({"name": "m", "max_batch_size": 2}), &s, 4).unwrap_err();
        assert!(e.to_string().contains("'s' []"), "{e}");
        // No inputs: an empty input list; the outputs decide batching.
        let gen = Signature {
            inputs: vec![],
            outputs: vec![spec("table", &[2, 3])],
        };
        let c = complete(&json!({"name": "g", "max_batch_size": 0}), &gen, 4)
            .unwrap()
            .unwrap();
        assert_eq!(c["input"], json!([]));
        assert_eq!(c["output"][0]["dims"], json!([2, 3]));
        assert_eq!(c["max_batch_size"], json!(0));
    }

    #[test]
    fn a_config_with_inputs_and_outputs_is_left_alone() {
        // onnxruntime_backend skips auto-complete entirely then: no max_batch_size, no batcher.
        let full = json!({"name": "m", "max_batch_size": 0,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1, 4]}],
            "output": [{"name": "y", "data_type": "TYPE_INT64", "dims": [-1]}]});
        assert!(complete(&full, &sig(-1), 4).unwrap().is_none());
        let mut only_inputs = full.clone();
        only_inputs["output"] = json!([]);
        let c = complete(&only_inputs, &sig(-1), 4).unwrap().unwrap();
        assert_eq!(c["input"], full["input"], "the listed inputs are kept");
        assert_eq!(c["max_batch_size"], json!(4));
        assert_eq!(c["output"][0]["reshape"], json!({"shape": []}));
    }
}

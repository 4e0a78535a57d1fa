//! The model configuration as JSON, in the exact form `TRITONBACKEND_ModelConfig` gives it.

use protobuf_json_mapping::{ParseOptions, PrintOptions};
use serde_json::Value;

use super::proto::ModelConfig;
use crate::error::{Error, Result};

/// 64-bit integer fields Triton prints as JSON numbers for config version 1 (`[]` = every array
/// element, `*` = every map value). All other 64-bit fields stay strings as proto3 JSON has them.
const NUMERIC_INT64_PATHS: &[&[&str]] = &[
    &["input", "[]", "dims"],
    &["input", "[]", "reshape", "shape"],
    &["output", "[]", "dims"],
    &["output", "[]", "reshape", "shape"],
    &["version_policy", "specific", "versions"],
    &["dynamic_batching", "max_queue_delay_microseconds"],
    &["dynamic_batching", "priority_levels"],
    &["dynamic_batching", "default_priority_level"],
    &[
        "dynamic_batching",
        "default_queue_policy",
        "default_timeout_microseconds",
    ],
    &[
        "dynamic_batching",
        "priority_queue_policy",
        "*",
        "default_timeout_microseconds",
    ],
    &["sequence_batching", "max_sequence_idle_microseconds"],
    &[
        "sequence_batching",
        "direct",
        "max_queue_delay_microseconds",
    ],
    &[
        "sequence_batching",
        "oldest",
        "max_queue_delay_microseconds",
    ],
    &["sequence_batching", "state", "[]", "dims"],
    &[
        "sequence_batching",
        "state",
        "[]",
        "initial_state",
        "[]",
        "dims",
    ],
    &["ensemble_scheduling", "step", "[]", "model_version"],
    &["model_warmup", "[]", "inputs", "*", "dims"],
];

fn to_number(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Ok(i) = s.parse::<i64>() {
                *v = Value::from(i);
            } else if let Ok(u) = s.parse::<u64>() {
                *v = Value::from(u);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(to_number),
        _ => {}
    }
}

fn rewrite(v: &mut Value, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        to_number(v);
        return;
    };
    match (*first, v) {
        ("[]", Value::Array(a)) => a.iter_mut().for_each(|e| rewrite(e, rest)),
        ("*", Value::Object(o)) => o.values_mut().for_each(|e| rewrite(e, rest)),
        (key, Value::Object(o)) => {
            if let Some(e) = o.get_mut(key) {
                rewrite(e, rest)
            }
        }
        _ => {}
    }
}

/// Drop `null`s (unset singular messages) so they are absent, as in Triton's output.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|_, e| !e.is_null());
            o.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Config → JSON value: proto field names, defaults printed, enums as names, listed int64
/// fields as numbers.
pub fn to_json(cfg: &ModelConfig) -> Result<Value> {
    let opts = PrintOptions {
        proto_field_name: true,
        always_output_default_values: true,
        ..Default::default()
    };
    let s = protobuf_json_mapping::print_to_string_with_options(cfg, &opts)
        .map_err(|e| Error::internal(format!("cannot print model config as JSON: {e}")))?;
    let mut v: Value = serde_json::from_str(&s)
        .map_err(|e| Error::internal(format!("protobuf printed invalid JSON: {e}")))?;
    drop_nulls(&mut v);
    for p in NUMERIC_INT64_PATHS {
        rewrite(&mut v, p);
    }
    Ok(v)
}

/// JSON → config, as `TRITONBACKEND_ModelSetConfig` parses it: unknown fields rejected.
pub fn from_json(json: &str) -> Result<ModelConfig> {
    let opts = ParseOptions {
        ignore_unknown_fields: false,
        ..Default::default()
    };
    protobuf_json_mapping::parse_from_str_with_options::<ModelConfig>(json, &opts)
        .map_err(|e| Error::invalid_arg(format!("failed to parse model config JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::pbtxt;

    #[test]
    fn json_matches_triton_shape() {
        let c: ModelConfig = pbtxt::parse(
            r#"name: "m" max_batch_size: 8
               input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
               output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
               dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 100
                                  priority_queue_policy { key: 1 value { default_timeout_microseconds: 7 } } }
               instance_group [ { kind: KIND_CPU secondary_devices [ { device_id: 3 } ] } ]
               parameters { key: "p" value: { string_value: "v" } }"#,
        )
        .unwrap();
        let j = to_json(&c).unwrap();
        assert_eq!(j["input"][0]["dims"], serde_json::json!([-1, 4]));
        assert_eq!(j["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(j["input"][0]["format"], "FORMAT_NONE");
        assert_eq!(j["input"][0]["optional"], false);
        assert!(j["input"][0].get("reshape").is_none());
        assert_eq!(j["max_batch_size"], 8);
        assert_eq!(j["dynamic_batching"]["max_queue_delay_microseconds"], 100);
        assert_eq!(j["dynamic_batching"]["priority_levels"], 0);
        assert_eq!(
            j["dynamic_batching"]["priority_queue_policy"]["1"]["default_timeout_microseconds"],
            7
        );
        assert_eq!(j["instance_group"][0]["kind"], "KIND_CPU");
        assert_eq!(
            j["instance_group"][0]["secondary_devices"][0]["device_id"],
            "3"
        );
        assert_eq!(j["parameters"]["p"]["string_value"], "v");
        assert_eq!(j["batch_input"], serde_json::json!([]));
        assert!(j.get("sequence_batching").is_none());
        assert!(j.get("version_policy").is_none());
        // And it parses back to the same config.
        let back = from_json(&j.to_string()).unwrap();
        assert_eq!(back, c);
        assert!(from_json(r#"{"name":"m","bogus":1}"#).is_err());
    }
}

#[cfg(test)]
mod oneof_tests {
    use super::*;
    use crate::config::pbtxt;

    #[test]
    fn oneof_members_print_only_when_set() {
        let c: ModelConfig = pbtxt::parse(
            r#"model_warmup [ { name: "w" batch_size: 1 inputs { key: "I" value: { data_type: TYPE_FP32 dims: [ 2 ] zero_data: false } } } ]"#,
        )
        .unwrap();
        let j = to_json(&c).unwrap();
        let i = &j["model_warmup"][0]["inputs"]["I"];
        eprintln!("{i}");
        assert_eq!(i["zero_data"], false);
        assert!(i.get("random_data").is_none(), "{i}");
        assert!(i.get("input_data_file").is_none(), "{i}");
        assert_eq!(i["dims"], serde_json::json!([2]));
        assert_eq!(from_json(&j.to_string()).unwrap(), c);
    }
}

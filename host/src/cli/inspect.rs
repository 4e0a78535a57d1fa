//! `rusttrt inspect model.onnx`: the model's I/O signature and the config that auto-complete
//! would produce (the backend's own auto-complete code, on an empty config).

use std::path::PathBuf;

use serde_json::json;

use crate::error::{Error, Result};

/// Arguments of `rusttrt inspect`.
#[derive(clap::Args, Debug, Clone)]
pub struct InspectArgs {
    /// The ONNX model file.
    pub model: PathBuf,
    /// Triton's `default-max-batch-size` for the auto-complete.
    #[arg(long, default_value_t = 4)]
    pub default_max_batch_size: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn inspect(args: &InspectArgs) -> Result<()> {
    let model = triton_rusttrt::onnx::OnnxModel::load(&args.model).map_err(Error::from)?;
    let sig = model.signature().map_err(Error::from)?;
    let digest = triton_rusttrt::onnx::model_digest(&args.model).map_err(Error::from)?;
    let external = model.external_data_files().map_err(Error::from)?;
    let name = args
        .model
        .parent()
        .and_then(|v| v.parent())
        .and_then(|m| m.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let empty =
        json!({"name": name, "backend": "rusttrt", "max_batch_size": 0, "input": [], "output": []});
    let completed =
        triton_rusttrt::backend::autocomplete::complete(&empty, &sig, args.default_max_batch_size)
            .map_err(Error::from)?
            .unwrap_or(empty);
    if args.json {
        let t = |v: &[triton_rusttrt::engine::TensorSpec]| -> Vec<serde_json::Value> {
            v.iter().map(|t| json!({"name": t.name, "data_type": t.dtype.config_name(), "shape": t.dims})).collect()
        };
        let out = json!({"inputs": t(&sig.inputs), "outputs": t(&sig.outputs), "digest": digest,
                         "external_data": external, "auto_complete_config": completed});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!("{}", args.model.display());
    println!("  sha256 (with external data): {digest}");
    for f in &external {
        println!("  external data: {}", f.display());
    }
    for (kind, list) in [("input", &sig.inputs), ("output", &sig.outputs)] {
        for t in list.iter() {
            println!(
                "  {kind:6} {:24} {:10} {}",
                t.name,
                t.dtype.config_name(),
                triton_rusttrt::types::shape_str(&t.dims)
            );
        }
    }
    println!("\nconfig.pbtxt that auto-complete produces:");
    println!("{}", to_pbtxt(&completed));
    Ok(())
}

/// The completed config in protobuf text format (the fields auto-complete sets).
fn to_pbtxt(c: &serde_json::Value) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "name: \"{}\"\nbackend: \"rusttrt\"\nmax_batch_size: {}\n",
        c["name"].as_str().unwrap_or(""),
        c["max_batch_size"]
    ));
    for kind in ["input", "output"] {
        let list = c[kind].as_array().cloned().unwrap_or_default();
        s.push_str(&format!("{kind} [\n"));
        for (i, t) in list.iter().enumerate() {
            let dims: Vec<String> = t["dims"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|d| d.to_string())
                .collect();
            let reshape = if t.get("reshape").is_some() {
                " reshape: { shape: [ ] }"
            } else {
                ""
            };
            let sep = if i + 1 < list.len() { "," } else { "" };
            s.push_str(&format!(
                "  {{ name: \"{}\" data_type: {} dims: [ {} ]{reshape} }}{sep}\n",
                t["name"].as_str().unwrap_or(""),
                t["data_type"].as_str().unwrap_or(""),
                dims.join(", ")
            ));
        }
        s.push_str("]\n");
    }
    if c.get("dynamic_batching").is_some() {
        s.push_str("dynamic_batching { }\n");
    }
    s
}

//! Batch specialization: a copy of a model whose served inputs and outputs have a fixed first
//! dimension, for engines that need fixed shapes (CUDA graph capture).

use super::OnnxModel;
use crate::error::{Error, Result};
use std::collections::HashSet;

/// Sets the first dimension of every served graph input and of every graph output to `batch`
/// (e.g. to build engines for CUDA graph capture at fixed batch sizes). Rank-0 tensors are left
/// alone; intermediate `value_info` shapes are left to the engine's shape inference.
pub fn specialize_batch(model: &OnnxModel, batch: i64) -> Result<OnnxModel> {
    if batch <= 0 {
        return Err(Error::invalid_arg(format!(
            "model {}: batch size must be positive, got {batch}",
            model.path.display()
        )));
    }
    let mut out = model.clone();
    let g = out.proto.graph.mut_or_insert_default();
    let inits: HashSet<String> = g.initializer.iter().map(|t| t.name().to_string()).collect();
    for vi in g
        .input
        .iter_mut()
        .filter(|vi| !inits.contains(vi.name()))
        .chain(g.output.iter_mut())
    {
        if let Some(super::proto::onnx::type_proto::Value::TensorType(tt)) =
            vi.type_.as_mut().and_then(|t| t.value.as_mut())
        {
            if let Some(d) = tt.shape.as_mut().and_then(|s| s.dim.first_mut()) {
                d.set_dim_value(batch);
            }
        }
    }
    Ok(out)
}

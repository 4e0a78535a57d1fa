//! The FP16 accuracy guard: the FP16 engine and the FP32 reference run on the same seeded inputs
//! and every floating-point output is compared per row (cosine similarity and relative L2 error)
//! against the model's bars. Its verdict is cached with the engine.

pub use super::envelope::GuardResult;
use super::model::ModelState;
use crate::compare::cosine_and_rel_l2;
use crate::engine::{BuildSpec, EngineFactory, Precision, TensorRef};
use crate::error::{Error, Result};
use crate::types::DataType;

/// Version of the FP16 accuracy guard's verdict (inputs it draws, metrics, bars). Bump it when a
/// change can turn a verdict: the verdict is cached with the engine.
pub const GUARD_VERSION: u32 = 2;

/// Default bound on the FP16 engine's relative L2 error: cosine alone misses a uniformly
/// scaled output (e.g. a constant clamped to the FP16 range), this does not.
const DEFAULT_MAX_REL_L2: f64 = 0.05;

pub(super) fn max_relative_l2(state: &ModelState) -> f64 {
    state
        .config
        .parameter("fp16_max_relative_l2")
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_MAX_REL_L2)
}

pub(super) fn min_cosine(state: &ModelState) -> f64 {
    state
        .config
        .parameter("fp16_min_cosine")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.999)
}

fn to_f32(dtype: DataType, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        DataType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DataType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        DataType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DataType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Outputs copied to the host: data type, shape, bytes.
type HostOutputs = Vec<(DataType, Vec<i64>, Vec<u8>)>;

/// Runs the FP16 engine and the FP32 reference on the same seeded inputs and compares every
/// floating-point output per row (per batch item).
pub(super) fn accuracy_guard(
    state: &ModelState,
    factory: &dyn EngineFactory,
    spec: &BuildSpec,
    artifact: &[u8],
) -> Result<(GuardResult, Option<Vec<u8>>)> {
    let ctx = |e: Error| e.context(format!("model '{}': FP16 accuracy guard", state.name));
    let fp16 = factory.load(spec, Some(artifact)).map_err(ctx)?;
    let fp32_spec = BuildSpec {
        precision: Precision::Fp32,
        ..spec.clone()
    };
    let fp32_artifact = super::engines::fp32_artifact(factory, spec)?;
    let fp32 = factory
        .load(&fp32_spec, fp32_artifact.as_deref())
        .map_err(ctx)?;
    let batch = if spec.max_batch_size > 0 {
        spec.max_batch_size.min(4)
    } else {
        1
    };
    let seed = state
        .config
        .parameter("fp16_guard_seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261127u64);
    // What serving will see: indices over their tables, masks with real tokens, realistic
    // sequence lengths, floats over fp16_guard_input_range (backend::guard_inputs).
    let graph = crate::onnx::OnnxModel::load(&spec.model_path).ok();
    let model_dir = spec.model_path.parent().and_then(std::path::Path::parent);
    let generated =
        super::guard_inputs::guard_inputs(&state.config, graph.as_ref(), model_dir, batch, seed)
            .map_err(ctx)?;
    crate::log!(
        Info,
        "model '{}': FP16 accuracy guard inputs: {}",
        state.name,
        generated.notes.join("; ")
    );
    // Sample files (fp16_guard_inputs) may bring another number of rows.
    let batch = generated.batch;
    let (shapes, data) = (generated.shapes, generated.data);
    let inputs: Vec<TensorRef<'_>> = state
        .config
        .inputs
        .iter()
        .enumerate()
        .map(|(i, c)| TensorRef::host(&c.name, c.dtype, &shapes[i], &data[i]))
        .collect();
    let names: Vec<&str> = state
        .config
        .outputs
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    let mut r16 = fp16.create_runner(None).map_err(ctx)?;
    let mut r32 = fp32.create_runner(None).map_err(ctx)?;
    // Outputs are compared wherever the engines leave them (host or device memory).
    let host = |outs: Vec<crate::engine::TensorOut<'_>>| -> Result<HostOutputs> {
        outs.iter()
            .map(|o| Ok((o.dtype, o.shape.clone(), o.to_host_vec()?)))
            .collect()
    };
    let o16 = host(r16.run(&inputs, &names).map_err(ctx)?).map_err(ctx)?;
    let o32 = host(r32.run(&inputs, &names).map_err(ctx)?).map_err(ctx)?;
    let threshold = min_cosine(state);
    let max_rel: f64 = state
        .config
        .parameter("fp16_max_relative_l2")
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_MAX_REL_L2);
    let (mut worst_cos, mut worst_l2) = (1.0f64, 0.0f64);
    let mut detail = Vec::new();
    for (k, (dt32, shape32, b32)) in o32.iter().enumerate() {
        let (dt16, shape16, bytes16) = &o16[k];
        let b32 = b32.as_slice();
        if let (Some(a), Some(b)) = (to_f32(*dt32, b32), to_f32(*dt16, bytes16)) {
            if a.len() != b.len() {
                return Err(ctx(Error::internal(format!(
                    "output '{}': FP16 shape {:?} vs FP32 {:?}",
                    names[k], shape16, shape32
                ))));
            }
            let row = if spec.max_batch_size > 0 {
                a.len() / batch.max(1)
            } else {
                *shape32.last().unwrap_or(&0) as usize
            };
            let (cos, l2) = cosine_and_rel_l2(&a, &b, row);
            let (cos, l2) = (
                if cos.is_nan() { -1.0 } else { cos as f64 },
                if l2.is_nan() {
                    f64::INFINITY
                } else {
                    l2 as f64
                },
            );
            detail.push(format!("{}: cosine {cos:.6}, rel L2 {l2:.3e}", names[k]));
            worst_cos = worst_cos.min(cos);
            worst_l2 = worst_l2.max(l2);
        } else if b32 != bytes16.as_slice() {
            detail.push(format!("{}: non-float output differs", names[k]));
            worst_cos = worst_cos.min(0.0);
        }
    }
    let guard = GuardResult {
        min_cosine: worst_cos,
        rel_l2: worst_l2,
        passed: worst_cos >= threshold && worst_l2 <= max_rel,
        detail: detail.join("; "),
    };
    Ok((guard, fp32_artifact))
}

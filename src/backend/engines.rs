//! From ONNX file to loaded engine: cache key, engine cache, FP16 conversion and the accuracy
//! guard. Runs at model load (instance initialization), never inside a request.
//!
//! What the cache keeps for a key is an *envelope*: a small JSON header saying what precision the
//! artifact serves (FP32 when the FP16 build failed the guard) followed by the engine artifact.
//! An empty artifact means "load the original model file" (an ONNX Runtime FP32 fallback needs
//! no copy of the model).

use super::model::ModelState;
use crate::cache::{CacheConfig, CacheKey, CacheOutcome, EngineCache};
use crate::engine::{BuildSpec, Device, Engine, EngineFactory, Precision, TensorRef};
use crate::error::{Error, Result};
use crate::log;
use crate::onnx::fp16::{convert_to_fp16, cosine_and_rel_l2, default_keep_fp32_ops, Fp16Options};
use crate::types::DataType;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

const ENVELOPE_MAGIC: &[u8; 8] = b"RTENGV1\n";

/// Default bound on the FP16 engine's relative L2 error: cosine alone misses a uniformly
/// scaled output (e.g. a constant clamped to the FP16 range), this does not.
const DEFAULT_MAX_REL_L2: f64 = 0.05;

/// What a cached artifact serves, stored in front of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvelopeMeta {
    /// "FP16" or "FP32".
    pub served_precision: String,
    /// The accuracy guard's verdict at build time, if it ran.
    pub guard: Option<GuardResult>,
    /// What the FP16 converter did, for the log.
    pub fp16_report: Option<String>,
}

/// Accuracy of the FP16 engine against FP32 on seeded random inputs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GuardResult {
    pub min_cosine: f64,
    pub rel_l2: f64,
    pub passed: bool,
    pub detail: String,
}

pub fn wrap(meta: &EnvelopeMeta, payload: &[u8]) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(meta)?;
    let mut out = Vec::with_capacity(ENVELOPE_MAGIC.len() + 4 + json.len() + payload.len());
    out.extend_from_slice(ENVELOPE_MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(payload);
    Ok(out)
}

pub fn unwrap(bytes: &[u8]) -> Result<(EnvelopeMeta, &[u8])> {
    let bad = || Error::internal("cached artifact has no rusttrt envelope");
    let rest = bytes
        .strip_prefix(ENVELOPE_MAGIC.as_slice())
        .ok_or_else(bad)?;
    if rest.len() < 4 {
        return Err(bad());
    }
    let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let rest = &rest[4..];
    if rest.len() < n {
        return Err(bad());
    }
    let meta: EnvelopeMeta = serde_json::from_slice(&rest[..n])
        .map_err(|e| Error::internal(format!("envelope: {e}")))?;
    Ok((meta, &rest[n..]))
}

/// Parses sizes like "10G", "512M", "1048576".
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => {
                    return Err(Error::invalid_arg(format!(
                        "size '{s}': unknown unit (use K, M, G, T)"
                    )))
                }
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| Error::invalid_arg(format!("size '{s}' is not a number")))?;
    Ok((n * mult as f64) as u64)
}

/// Cache locations in order: model parameter `cache_dir`, backend config `cache-dir`, beside the
/// model (`<model dir>/.rusttrt-cache`), the user's cache directory; memory as the last resort.
pub fn cache_config(state: &ModelState) -> Result<CacheConfig> {
    let mut locations: Vec<PathBuf> = Vec::new();
    if let Some(p) = state.config.parameter("cache_dir") {
        locations.push(p.into());
    }
    if let Some(p) = state.backend.get("cache-dir") {
        locations.push(p.into());
    }
    if let Some(model_dir) = state.model_path.parent().and_then(|v| v.parent()) {
        locations.push(model_dir.join(".rusttrt-cache"));
    }
    let user = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(u) = user {
        locations.push(u.join("rusttrt"));
    }
    let max = state
        .config
        .parameter("cache_max_size")
        .or(state.backend.get("cache-max-size"));
    Ok(CacheConfig {
        locations,
        max_bytes: max.map(parse_size).transpose()?,
        memory_fallback: true,
    })
}

/// Model parameters that do not change what gets built (they stay out of the cache key).
const NOT_BUILD_OPTIONS: &[&str] = &[
    "cache_dir",
    "cache_max_size",
    "onnxruntime_library",
    "intra_op_thread_count",
    // Run-time choices of the ONNX Runtime runner: the cached artifact (the converted model) and
    // the guard's verdict do not depend on them.
    "onnxruntime_share_weights",
    "cuda_graph_batch_sizes",
];

/// The cache key: content of the model (+ external data), engine, its library version, device
/// identity, precision, batch profile, every build option, backend version. Never a path.
pub fn cache_key(
    signature: &crate::engine::Signature,
    factory: &dyn EngineFactory,
    spec: &BuildSpec,
) -> Result<CacheKey> {
    let digest = crate::onnx::model_digest(&spec.model_path)?;
    let profile = format!(
        "max={};opt={}",
        spec.max_batch_size,
        spec.opt_batch_sizes
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut b = CacheKey::builder()
        .field("model_digest", digest)
        .field("engine", factory.kind())
        .field("engine_version", factory.library_version())
        .field("device", factory.device_identity(spec.device)?)
        .field("precision", spec.precision.as_str())
        .field("profile", profile)
        .field("io", format!("{signature:?}"))
        .field("backend_version", env!("CARGO_PKG_VERSION"));
    for (k, v) in &spec.options {
        if !NOT_BUILD_OPTIONS.contains(&k.as_str()) {
            b = b.field(format!("option.{k}"), v);
        }
    }
    Ok(b.build())
}

fn fp16_options(state: &ModelState) -> Fp16Options {
    let mut o = Fp16Options::default();
    if let Some(list) = state.config.parameter("fp16_keep_fp32_ops") {
        o.keep_fp32_ops = list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    } else {
        o.keep_fp32_ops = default_keep_fp32_ops();
    }
    o
}

/// Loads the engine for `spec`: from the cache when the engine's artifacts are worth keeping,
/// else straight from the model file.
pub fn load_engine(
    state: &ModelState,
    factory: &dyn EngineFactory,
    spec: &BuildSpec,
) -> Result<Arc<dyn Engine>> {
    if !factory.cacheable(spec) {
        return factory.load(spec, None);
    }
    let key = cache_key(&state.signature, factory, spec)?;
    let cache = EngineCache::new(cache_config(state)?);
    let build = || build_artifact(state, factory, spec);
    let outcome = cache.get_or_build(&key, &state.name, build)?;
    report(&outcome);
    match load_from_outcome(factory, spec, &outcome) {
        Ok(e) => Ok(e),
        Err(e) if outcome.is_hit() => {
            log!(
                Warn,
                "model '{}': the cached engine was refused ({e}); rebuilding",
                state.name
            );
            let outcome = cache.rebuild_rejected(
                &key,
                &state.name,
                &outcome.artifact,
                &e.to_string(),
                || build_artifact(state, factory, spec),
            )?;
            report(&outcome);
            load_from_outcome(factory, spec, &outcome)
        }
        Err(e) => Err(e),
    }
}

fn report(outcome: &CacheOutcome) {
    for w in &outcome.warnings {
        log!(Warn, "{w}");
    }
    log!(Info, "{outcome}");
}

fn load_from_outcome(
    factory: &dyn EngineFactory,
    spec: &BuildSpec,
    outcome: &CacheOutcome,
) -> Result<Arc<dyn Engine>> {
    let (meta, payload) = unwrap(&outcome.artifact)?;
    let served = if meta.served_precision == "FP16" {
        Precision::Fp16
    } else {
        Precision::Fp32
    };
    if let Some(g) = &meta.guard {
        let verdict = if g.passed { "passed" } else { "FAILED" };
        log!(
            Info,
            "model '{}': FP16 accuracy guard {verdict} at build (min row cosine {:.6}, relative L2 {:.3e}); serving {}",
            spec.model_name,
            g.min_cosine,
            g.rel_l2,
            meta.served_precision
        );
    }
    let spec = BuildSpec {
        precision: served,
        ..spec.clone()
    };
    factory.load(
        &spec,
        if payload.is_empty() {
            None
        } else {
            Some(payload)
        },
    )
}

/// Builds the envelope for a cache miss: FP16 conversion, engine build, accuracy guard.
fn build_artifact(
    state: &ModelState,
    factory: &dyn EngineFactory,
    spec: &BuildSpec,
) -> Result<Vec<u8>> {
    let t0 = Instant::now();
    log!(Info, "model '{}': building a {} {} engine (this happens once per model, engine, device and settings)", state.name, spec.precision.as_str(), factory.kind());
    let mut model = crate::onnx::load_with_external_data(&spec.model_path)?;
    let mut report = None;
    let mut clamped = std::collections::BTreeSet::new();
    if spec.precision == Precision::Fp16 {
        let (converted, r) = convert_to_fp16(&model, &fp16_options(state))?;
        // Values FP16 cannot represent are counted and said at load (the guard then decides).
        if r.values_clamped > 0 {
            log!(Warn, "model '{}': FP16 conversion: {r}", state.name);
        } else {
            log!(Info, "model '{}': FP16 conversion: {r}", state.name);
        }
        report = Some(format!("{r:?}"));
        clamped = r.clamped_initializers.clone();
        model = converted;
    }
    let onnx = model.to_bytes()?;
    let artifact = factory.build(spec, &onnx)?;
    if spec.precision != Precision::Fp16
        || !super::params::bool_param(&state.config, "fp16_accuracy_guard", true)?
    {
        let meta = EnvelopeMeta {
            served_precision: spec.precision.as_str().into(),
            guard: None,
            fp16_report: report,
        };
        return wrap(&meta, &artifact);
    }
    // The guard's FP32 reference build is kept: it is the fallback when the guard fails.
    let (mut guard, fp32_built) = accuracy_guard(state, factory, spec, &artifact)?;
    // A weight that FP16 cannot represent and that feeds an output fails the guard whatever
    // the sampled inputs showed, unless fp16_allow_clamping says it is acceptable.
    let feeding = super::guard_inputs::clamped_weights_feeding_outputs(&model, &clamped);
    if !feeding.is_empty()
        && !super::params::bool_param(&state.config, "fp16_allow_clamping", false)?
    {
        let list: Vec<String> = feeding
            .iter()
            .map(|(w, o)| format!("'{w}' (feeds output '{o}')"))
            .collect();
        guard.passed = false;
        guard.detail = format!(
            "{}; weights with values beyond FP16's ±65504, clamped: {} (set fp16_allow_clamping \
             to true to accept)",
            guard.detail,
            list.join(", ")
        );
    }
    let caveat = if spec.device == Device::Cpu && factory.kind() == "onnxruntime" {
        " [CPU: ONNX Runtime computes FP16 nodes in FP32 here, so this checks the FP16 weights, not FP16 arithmetic]"
    } else {
        ""
    };
    log!(
        Info,
        "model '{}': engine built in {:.1} s; FP16 guard: min row cosine {:.6}, relative L2 {:.3e} ({}){caveat}",
        state.name,
        t0.elapsed().as_secs_f64(),
        guard.min_cosine,
        guard.rel_l2,
        guard.detail
    );
    if guard.passed {
        let meta = EnvelopeMeta {
            served_precision: "FP16".into(),
            guard: Some(guard),
            fp16_report: report,
        };
        return wrap(&meta, &artifact);
    }
    log!(
        Warn,
        "model '{}': the FP16 engine fails the accuracy guard (min row cosine {:.6}, bar {}; relative L2 {:.3e}, bar {}); serving FP32 instead",
        state.name,
        guard.min_cosine,
        min_cosine(state),
        guard.rel_l2,
        max_relative_l2(state)
    );
    let payload = fp32_built.unwrap_or_default();
    let meta = EnvelopeMeta {
        served_precision: "FP32".into(),
        guard: Some(guard),
        fp16_report: report,
    };
    wrap(&meta, &payload)
}

/// The FP32 artifact of an engine whose FP32 build is worth keeping (`None`: the engine serves
/// FP32 straight from the model file).
fn fp32_artifact(factory: &dyn EngineFactory, spec: &BuildSpec) -> Result<Option<Vec<u8>>> {
    let fp32 = BuildSpec {
        precision: Precision::Fp32,
        ..spec.clone()
    };
    if !factory.cacheable(&fp32) {
        return Ok(None);
    }
    let onnx = crate::onnx::load_with_external_data(&spec.model_path)?.to_bytes()?;
    factory.build(&fp32, &onnx).map(Some)
}

fn max_relative_l2(state: &ModelState) -> f64 {
    state
        .config
        .parameter("fp16_max_relative_l2")
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_MAX_REL_L2)
}

fn min_cosine(state: &ModelState) -> f64 {
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

/// Runs the FP16 engine and the FP32 reference on the same seeded inputs and compares every
/// floating-point output per row (per batch item).
fn accuracy_guard(
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
    let fp32_artifact = fp32_artifact(factory, spec)?;
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
    log!(
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
    let o16: Vec<(DataType, Vec<i64>, Vec<u8>)> = r16
        .run(&inputs, &names)
        .map_err(ctx)?
        .iter()
        .map(|o| {
            (
                o.dtype,
                o.shape.clone(),
                o.host_bytes().unwrap_or_default().to_vec(),
            )
        })
        .collect();
    let o32 = r32.run(&inputs, &names).map_err(ctx)?;
    let threshold = min_cosine(state);
    let max_rel: f64 = state
        .config
        .parameter("fp16_max_relative_l2")
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_MAX_REL_L2);
    let (mut worst_cos, mut worst_l2) = (1.0f64, 0.0f64);
    let mut detail = Vec::new();
    for (k, out32) in o32.iter().enumerate() {
        let (dt16, shape16, bytes16) = &o16[k];
        let b32 = out32
            .host_bytes()
            .ok_or_else(|| ctx(Error::internal("FP32 output not in host memory")))?;
        if let (Some(a), Some(b)) = (to_f32(out32.dtype, b32), to_f32(*dt16, bytes16)) {
            if a.len() != b.len() {
                return Err(ctx(Error::internal(format!(
                    "output '{}': FP16 shape {:?} vs FP32 {:?}",
                    names[k], shape16, out32.shape
                ))));
            }
            let row = if spec.max_batch_size > 0 {
                a.len() / batch.max(1)
            } else {
                *out32.shape.last().unwrap_or(&0) as usize
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Signature, TensorSpec};
    use std::collections::BTreeMap;

    /// A factory whose version and device are set by the test.
    struct Fake(&'static str, &'static str);
    impl EngineFactory for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn library_version(&self) -> String {
            self.0.into()
        }
        fn device_identity(&self, _: Device) -> Result<String> {
            Ok(self.1.into())
        }
        fn cacheable(&self, _: &BuildSpec) -> bool {
            true
        }
        fn build(&self, _: &BuildSpec, onnx: &[u8]) -> Result<Vec<u8>> {
            Ok(onnx.to_vec())
        }
        fn load(&self, _: &BuildSpec, _: Option<&[u8]>) -> Result<Arc<dyn Engine>> {
            Err(Error::unsupported("fake"))
        }
    }

    #[test]
    fn the_cache_key_covers_content_engine_device_precision_profile_options_never_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("a.onnx");
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models");
        std::fs::copy(data.join("dtype_fp32/1/model.onnx"), &model).unwrap();
        let sig = Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: DataType::F32,
                dims: vec![-1, 4],
            }],
            outputs: vec![],
        };
        let spec = BuildSpec {
            model_name: "m".into(),
            model_path: model.clone(),
            precision: Precision::Fp16,
            device: Device::Gpu(0),
            max_batch_size: 8,
            opt_batch_sizes: vec![4, 8],
            options: BTreeMap::from([("max_workspace_size_bytes".to_string(), "1024".to_string())]),
        };
        let f = Fake("10.16.0", "H100 sm_90");
        let base = cache_key(&sig, &f, &spec).unwrap();
        // Same content elsewhere, under another model name: same key.
        let other = dir.path().join("copy.onnx");
        std::fs::copy(&model, &other).unwrap();
        let moved = BuildSpec {
            model_path: other,
            model_name: "another".into(),
            ..spec.clone()
        };
        assert_eq!(cache_key(&sig, &f, &moved).unwrap().digest, base.digest);
        // Options that do not change the build stay out of the key.
        let mut o = spec.clone();
        o.options.insert("cache_dir".into(), "/elsewhere".into());
        o.options
            .insert("cuda_graph_batch_sizes".into(), "1,8".into());
        assert_eq!(cache_key(&sig, &f, &o).unwrap().digest, base.digest);
        let mut changed = Vec::new();
        std::fs::copy(
            data.join("dtype_int32/1/model.onnx"),
            dir.path().join("b.onnx"),
        )
        .unwrap();
        changed.push(
            cache_key(
                &sig,
                &f,
                &BuildSpec {
                    model_path: dir.path().join("b.onnx"),
                    ..spec.clone()
                },
            )
            .unwrap(),
        );
        changed.push(cache_key(&sig, &Fake("10.16.1", "H100 sm_90"), &spec).unwrap());
        changed.push(cache_key(&sig, &Fake("10.16.0", "H200 sm_90"), &spec).unwrap());
        changed.push(
            cache_key(
                &sig,
                &f,
                &BuildSpec {
                    precision: Precision::Fp32,
                    ..spec.clone()
                },
            )
            .unwrap(),
        );
        changed.push(
            cache_key(
                &sig,
                &f,
                &BuildSpec {
                    max_batch_size: 16,
                    ..spec.clone()
                },
            )
            .unwrap(),
        );
        changed.push(
            cache_key(
                &sig,
                &f,
                &BuildSpec {
                    opt_batch_sizes: vec![8],
                    ..spec.clone()
                },
            )
            .unwrap(),
        );
        let mut o = spec.clone();
        o.options
            .insert("max_workspace_size_bytes".into(), "2048".into());
        changed.push(cache_key(&sig, &f, &o).unwrap());
        for (i, k) in changed.iter().enumerate() {
            assert_ne!(k.digest, base.digest, "change {i} must miss");
        }
        assert!(
            !base
                .fields
                .values()
                .any(|v| v.contains(dir.path().to_str().unwrap())),
            "a path leaked into the key"
        );
    }

    #[test]
    fn envelope_round_trip_and_rejects_foreign_bytes() {
        let meta = EnvelopeMeta {
            served_precision: "FP16".into(),
            guard: None,
            fp16_report: None,
        };
        let w = wrap(&meta, b"engine").unwrap();
        let (m, p) = unwrap(&w).unwrap();
        assert_eq!(m, meta);
        assert_eq!(p, b"engine");
        assert!(unwrap(b"garbage").is_err());
        assert!(unwrap(&w[..10]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5MiB").unwrap(), 3 << 19);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("3X").is_err());
    }
}

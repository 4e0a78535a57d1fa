//! From ONNX file to loaded engine, the build pipeline: engine cache lookup under the key
//! (`engine_key`), on a miss FP16 conversion, engine build and the accuracy guard (`guard`), all
//! wrapped in the cache envelope (`envelope`). Runs at model load (instance initialization),
//! never inside a request; the build itself in the build worker (`worker`) where one is found.

use super::engine_key::{cache_config, cache_key};
use super::envelope::{unwrap, wrap, EnvelopeMeta};
use super::model::ModelState;
use super::progress::{BuildProgress, Stage};
use crate::cache::{CacheOutcome, EngineCache};
use crate::engine::{BuildSpec, Device, Engine, EngineFactory, Precision};
use crate::error::Result;
use crate::log;
use crate::onnx::fp16::{convert_to_fp16, default_keep_fp32_ops, Fp16Options};
use std::sync::Arc;
use std::time::Instant;

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
    kind: super::model::EngineKind,
) -> Result<Arc<dyn Engine>> {
    if !factory.cacheable(spec) {
        return factory.load(spec, None);
    }
    let key = cache_key(&state.signature, state.model_digest()?, factory, spec)?;
    let cache = EngineCache::new(cache_config(state)?);
    // The build (and the FP16 guard, which runs model code) happens in a worker process where
    // one is found, so that a crash or hang there fails this load, not the server.
    let build = || super::worker::build(state, factory, spec, kind);
    let outcome = cache.get_or_build(&key, &state.name, build)?;
    report(&outcome);
    state.metrics.cache_outcome(&outcome);
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
                || super::worker::build(state, factory, spec, kind),
            )?;
            report(&outcome);
            state.metrics.cache_outcome(&outcome);
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
pub(crate) fn build_artifact(
    state: &ModelState,
    factory: &dyn EngineFactory,
    spec: &BuildSpec,
) -> Result<Vec<u8>> {
    let t0 = Instant::now();
    log!(Info, "model '{}': building a {} {} engine (this happens once per model, engine, device and settings)", state.name, spec.precision.as_str(), factory.kind());
    let progress = BuildProgress::start(&state.name, state.params.progress_interval);
    let mut model = crate::onnx::load_with_external_data(&spec.model_path)?;
    let mut report = None;
    let mut clamped = std::collections::BTreeSet::new();
    if spec.precision == Precision::Fp16 {
        progress.stage(Stage::Convert);
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
    progress.stage(Stage::Build);
    let artifact = factory.build(spec, &onnx)?;
    if spec.precision != Precision::Fp16
        || !super::params::bool_param(&state.config, "fp16_accuracy_guard", true)?
    {
        let meta = EnvelopeMeta {
            served_precision: spec.precision.as_str().into(),
            guard: None,
            fp16_report: report,
        };
        progress.stage(Stage::Write);
        return wrap(&meta, &artifact);
    }
    // The guard's FP32 reference build is kept: it is the fallback when the guard fails.
    progress.stage(Stage::Guard);
    let (mut guard, fp32_built) = super::guard::accuracy_guard(state, factory, spec, &artifact)?;
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
        progress.stage(Stage::Write);
        return wrap(&meta, &artifact);
    }
    log!(
        Warn,
        "model '{}': the FP16 engine fails the accuracy guard (min row cosine {:.6}, bar {}; relative L2 {:.3e}, bar {}); serving FP32 instead",
        state.name,
        guard.min_cosine,
        super::guard::min_cosine(state),
        guard.rel_l2,
        super::guard::max_relative_l2(state)
    );
    progress.stage(Stage::Write);
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
pub(super) fn fp32_artifact(
    factory: &dyn EngineFactory,
    spec: &BuildSpec,
) -> Result<Option<Vec<u8>>> {
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

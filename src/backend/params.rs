//! Every setting the backend reads, from model `parameters`, the model config's own fields
//! (`optimization { cuda { graphs } }`, `optimization.graph.level`, execution accelerators),
//! backend config (`cmdline`) and the environment, resolved and validated in one place, at
//! model load. README.md has the reference table.
//!
//! Three vocabularies meet here and leave as one:
//!
//! * Triton's own config fields (read first: `optimization.cuda.graphs` / `graph_spec`,
//!   `optimization.graph.level`);
//! * the names of Triton's ONNX Runtime backend (r25.x): its model parameters
//!   (`intra_op_thread_count`, `execution_mode`, `enable_mem_arena`, ...) and the parameters of
//!   its `tensorrt` and `cuda` execution accelerators (`precision_mode`,
//!   `trt_engine_cache_path`, `trt_builder_optimization_level`, ...), so that a config written for
//!   `onnxruntime_backend` works by changing only `backend:`;
//! * rusttrt's own parameter names, which stay as documented aliases.
//!
//! The result is [`ModelParams::effective`]: every engine/cache option under its rusttrt name
//! with a validated, canonical value (relative paths resolved against the model directory). The
//! model state hands exactly this map to the layers below, so nothing downstream parses a raw
//! user string or falls back silently to a default. A key nobody knows is an INVALID_ARG naming
//! it; a key we know but cannot honour is a warning. Every value that does not parse or is out
//! of range is an INVALID_ARG naming the parameter, the value and what is accepted.

use super::config::ModelConfig;
use super::BackendState;
use crate::engine::ort::SessionSettings;
use crate::engine::{Device, Precision};
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which engine serves the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    /// TensorRT where compiled in and usable for a GPU instance, else ONNX Runtime.
    Auto,
    OnnxRuntime,
    TensorRt,
}

/// ONNX Runtime execution provider requested for GPU instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OrtGpuProvider {
    Cuda,
    TensorRt,
}

/// Resolved settings of one model.
#[derive(Debug, Clone)]
pub struct ModelParams {
    pub engine: EngineChoice,
    /// `None` = the default for the device (FP16 on GPU, FP32 on CPU).
    pub precision: Option<Precision>,
    pub ort_library_candidates: Vec<PathBuf>,
    pub ort_gpu_provider: OrtGpuProvider,
    pub intra_op_threads: Option<usize>,
    /// ONNX Runtime session settings (threads, execution mode, memory, graph level, CUDA EP).
    pub ort_session: SessionSettings,
    /// Where the TensorRT timing cache lives (`trt_timing_cache_path`); `None` = beside the
    /// engine cache.
    pub timing_cache_dir: Option<PathBuf>,
    /// Every engine and cache option under its rusttrt name, validated and canonical. This is
    /// what the model state passes on as the model's parameters.
    pub effective: BTreeMap<String, String>,
    /// Where each effective setting came from (`key` → "parameter 'x'" or "gpu_execution_accelerator
    /// 'tensorrt' parameter 'y'" ...), for the effective-settings log line.
    pub sources: BTreeMap<String, String>,
    /// Known settings that rusttrt does not honour (logged as warnings at load).
    pub warnings: Vec<String>,
    /// How often a long engine build logs its progress (`build_progress_interval_s`; `None` =
    /// the default of `backend::progress`). Not a build option: it stays out of the cache key.
    pub progress_interval: Option<std::time::Duration>,
    /// Triton's `optimization.input_pinned_memory` / `output_pinned_memory` (GPU instances
    /// stage host data through pinned memory when set; Triton's default is on).
    pub input_pinned_memory: bool,
    pub output_pinned_memory: bool,
}

/// Model parameters of rusttrt itself (aliases of Triton's fields where those exist).
const OWN_PARAMETERS: &[&str] = &[
    "engine",
    "precision_mode",
    "onnxruntime_execution_provider",
    "onnxruntime_library",
    "intra_op_thread_count",
    "cache_dir",
    "cache_max_size",
    "fp16_keep_fp32_ops",
    "fp16_accuracy_guard",
    "fp16_min_cosine",
    "fp16_max_relative_l2",
    "fp16_guard_seed",
    "onnxruntime_share_weights",
    "cuda_graph_batch_sizes",
    "max_workspace_size_bytes",
    "builder_optimization_level",
    "trt_profile_min_shapes",
    "trt_profile_opt_shapes",
    "trt_profile_max_shapes",
    "timing_cache",
    "strongly_typed",
    "build_progress_interval_s",
    "build_timeout_s",
    "fp16_guard_input_range",
    "fp16_guard_sequence_length",
    "fp16_guard_inputs",
    "fp16_allow_clamping",
];

/// Model parameters of Triton's ONNX Runtime backend that rusttrt honours.
const ORT_MODEL_PARAMETERS: &[&str] = &[
    "inter_op_thread_count",
    "execution_mode",
    "enable_mem_arena",
    "enable_mem_pattern",
    // Deprecated spellings of CUDA accelerator options.
    "cudnn_conv_algo_search",
    "gpu_mem_limit",
    "arena_extend_strategy",
];

/// Model parameters of Triton's ONNX Runtime backend that rusttrt accepts but does not honour.
const ORT_MODEL_PARAMETERS_IGNORED: &[(&str, &str)] = &[
    (
        "do_copy_in_default_stream",
        "rusttrt copies on the instance's own stream",
    ),
    (
        "memory.enable_memory_arena_shrinkage",
        "rusttrt does not shrink ONNX Runtime's arena between runs",
    ),
    (
        "session.use_device_allocator_for_initializers",
        "GPU instances share one device copy of the weights instead (onnxruntime_share_weights)",
    ),
];

/// How a value of a known-but-ignored accelerator parameter must look (it is still validated).
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Int,
    Str,
}

/// Parameters of onnxruntime_backend's `tensorrt` accelerator that rusttrt accepts but cannot
/// honour (its own engine builder has no such knob, or it concerns ONNX Runtime's partitioning).
const TRT_ACCEL_IGNORED: &[(&str, Kind)] = &[
    ("trt_max_partition_iterations", Kind::Int),
    ("trt_min_subgraph_size", Kind::Int),
    ("int8_calibration_table_name", Kind::Str),
    ("int8_use_native_calibration_table", Kind::Bool),
    ("trt_dla_enable", Kind::Bool),
    ("trt_dla_core", Kind::Int),
    ("trt_engine_cache_prefix", Kind::Str),
    ("trt_dump_subgraphs", Kind::Bool),
    ("trt_force_sequential_engine_build", Kind::Bool),
    ("trt_context_memory_sharing_enable", Kind::Bool),
    ("trt_force_timing_cache", Kind::Bool),
    ("trt_detailed_build_log", Kind::Bool),
    ("trt_build_heuristics_enable", Kind::Bool),
    ("trt_sparsity_enable", Kind::Bool),
    ("trt_auxiliary_streams", Kind::Int),
    ("trt_tactic_sources", Kind::Str),
    ("trt_extra_plugin_lib_paths", Kind::Str),
    ("trt_dump_ep_context_model", Kind::Bool),
    ("trt_ep_context_file_path", Kind::Str),
    ("trt_ep_context_embed_mode", Kind::Int),
];

/// Parameters of the `tensorrt` accelerator that rusttrt honours.
const TRT_ACCEL_KNOWN: &[&str] = &[
    "precision_mode",
    "max_workspace_size_bytes",
    "trt_engine_cache_enable",
    "trt_engine_cache_path",
    "trt_timing_cache_enable",
    "trt_timing_cache_path",
    "trt_builder_optimization_level",
    "trt_profile_min_shapes",
    "trt_profile_opt_shapes",
    "trt_profile_max_shapes",
    "trt_layer_norm_fp32_fallback",
    "trt_cuda_graph_enable",
];

/// Options of the `cuda` accelerator (ONNX Runtime's CUDA EP) that rusttrt passes on.
const CUDA_ACCEL_KNOWN: &[&str] = &[
    "cudnn_conv_algo_search",
    "gpu_mem_limit",
    "arena_extend_strategy",
    "cudnn_conv_use_max_workspace",
    "cudnn_conv1d_pad_to_nc1d",
    "use_tf32",
    "prefer_nhwc",
    "enable_skip_layer_norm_strict_mode",
    "enable_cuda_graph",
];

const CUDA_ACCEL_IGNORED: &[(&str, &str)] = &[
    (
        "do_copy_in_default_stream",
        "rusttrt copies on the instance's own stream",
    ),
    (
        "use_ep_level_unified_stream",
        "rusttrt gives ONNX Runtime the instance's stream",
    ),
    ("tunable_op_enable", "not supported by rusttrt"),
    ("tunable_op_tuning_enable", "not supported by rusttrt"),
];

/// A value in error: "parameter 'k': 'v' is not ...; accepted: ...".
fn bad(what: &str, value: &str, accepted: &str) -> Error {
    Error::invalid_arg(format!("{what}: '{value}' is not accepted; {accepted}"))
}

fn parse_bool(what: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(bad(what, v, "expected true/false (or 1/0, on/off, yes/no)")),
    }
}

fn parse_int(what: &str, v: &str, min: i64, max: i64) -> Result<i64> {
    match v.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad(
            what,
            v,
            &format!("expected an integer in {min}..={max}"),
        )),
    }
}

fn parse_f64(what: &str, v: &str, min: f64, max: f64) -> Result<f64> {
    match v.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= min && x <= max => Ok(x),
        _ => Err(bad(
            what,
            v,
            &format!("expected a number in [{min}, {max}]"),
        )),
    }
}

/// Sizes like "10G", "512M", "1.5MiB", "1048576" → bytes (> 0).
pub fn parse_size(what: &str, v: &str) -> Result<u64> {
    let accepted =
        "expected a positive size in bytes, optionally with a unit K, M, G or T (e.g. 10G)";
    let t = v.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(bad(what, v, accepted)),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    match num.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n * (mult as f64) < u64::MAX as f64 => {
            Ok((n * mult as f64) as u64)
        }
        _ => Err(bad(what, v, accepted)),
    }
}

/// The largest thread count accepted: the machine's cores × 4.
pub fn max_threads() -> i64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1)
        * 4
}

/// A path resolved against the model directory when relative.
fn resolve_path(model_dir: &Path, v: &str) -> PathBuf {
    let p = PathBuf::from(v.trim());
    if p.is_absolute() {
        p
    } else {
        model_dir.join(p)
    }
}

/// Checks that `path` names a shared library the dynamic loader can open.
fn check_library(what: &str, path: &Path) -> Result<()> {
    let is_bare = path.components().count() == 1;
    if !is_bare && !path.is_file() {
        return Err(Error::invalid_arg(format!(
            "{what}: '{}' is not a file; expected the path of a shared library (relative paths are resolved against the model directory)",
            path.display()
        )));
    }
    // SAFETY: opening a shared library runs its initialisers; the libraries named here are the
    // ones the backend is about to load anyway (ONNX Runtime, TensorRT), whose initialisers have
    // no preconditions. The handle is closed at once; the loader keeps its reference count.
    match unsafe { libloading::Library::new(path) } {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::invalid_arg(format!(
            "{what}: '{}' does not load ({e}); expected a loadable shared library",
            path.display()
        ))),
    }
}

/// Collects one canonical setting from several sources; two sources that disagree are an error.
struct Settings {
    values: BTreeMap<String, String>,
    sources: BTreeMap<String, String>,
}

impl Settings {
    fn set(&mut self, key: &str, value: String, source: String) -> Result<()> {
        if let Some(old) = self.values.get(key) {
            if *old != value {
                return Err(Error::invalid_arg(format!(
                    "{source} sets '{key}' to '{value}' but {} already set it to '{old}'; give it once",
                    self.sources[key]
                )));
            }
            return Ok(());
        }
        self.values.insert(key.to_string(), value);
        self.sources.insert(key.to_string(), source);
        Ok(())
    }
}

fn p(key: &str) -> String {
    format!("parameter '{key}'")
}

fn trt(key: &str) -> String {
    format!("gpu_execution_accelerator 'tensorrt' parameter '{key}'")
}

fn cuda(key: &str) -> String {
    format!("gpu_execution_accelerator 'cuda' parameter '{key}'")
}

fn batch_list(what: &str, v: &str, max_batch_size: usize) -> Result<Vec<usize>> {
    let accepted = format!(
        "expected 'preferred' or comma-separated batch sizes in 1..={}",
        max_batch_size.max(1)
    );
    let mut out = Vec::new();
    for x in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        match x.parse::<i64>() {
            Ok(b) if b >= 1 && (b as usize) <= max_batch_size.max(1) => out.push(b as usize),
            _ => return Err(bad(what, v, &accepted)),
        }
    }
    if out.is_empty() {
        return Err(bad(what, v, &accepted));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The ops kept in FP32 by default (LayerNorm among them).
fn default_keep_ops() -> Vec<String> {
    crate::onnx::fp16::default_keep_fp32_ops()
        .into_iter()
        .collect()
}

impl ModelParams {
    /// Resolves and validates every setting of the model whose directory is `model_dir`.
    pub fn resolve(cfg: &ModelConfig, backend: &BackendState, model_dir: &Path) -> Result<Self> {
        Self::resolve_inner(cfg, backend, model_dir)
            .map_err(|e| e.context(format!("model '{}'", cfg.name)))
    }

    fn resolve_inner(cfg: &ModelConfig, backend: &BackendState, model_dir: &Path) -> Result<Self> {
        // The FP16 guard's own parameters (its input range, sequence length, sample files).
        super::guard_inputs::validate(cfg, model_dir)?;
        let mut s = Settings {
            values: BTreeMap::new(),
            sources: BTreeMap::new(),
        };
        let mut warnings = Vec::new();
        let mut session = SessionSettings::default();
        let mbs = cfg.max_batch_size;

        // ---- unknown keys first: a typo must not be a silent default ----
        for (key, value) in &cfg.parameters {
            let k = key.as_str();
            if value.contains('\0') {
                return Err(Error::invalid_arg(format!(
                    "parameter '{k}' has a NUL character in its value"
                )));
            }
            if value.trim().is_empty() {
                return Err(Error::invalid_arg(format!(
                    "parameter '{k}' has an empty value; give a value or remove the parameter"
                )));
            }
            if OWN_PARAMETERS.contains(&k) || ORT_MODEL_PARAMETERS.contains(&k) {
                continue;
            }
            if let Some((_, why)) = ORT_MODEL_PARAMETERS_IGNORED.iter().find(|(n, _)| *n == k) {
                warnings.push(format!(
                    "parameter '{k}' (Triton's ONNX Runtime backend) is ignored: {why}"
                ));
                continue;
            }
            return Err(Error::invalid_arg(format!(
                "unknown parameter '{k}'; rusttrt accepts {} and Triton's ONNX Runtime backend parameters {} (README.md, configuration reference)",
                OWN_PARAMETERS.join(", "),
                ORT_MODEL_PARAMETERS.join(", ")
            )));
        }
        let param = |k: &str| cfg.parameter(k);

        // ---- the dynamic batcher's preferred sizes (used for profiles and CUDA graphs) ----
        if let Some(list) = cfg
            .raw
            .pointer("/dynamic_batching/preferred_batch_size")
            .and_then(Value::as_array)
        {
            for v in list {
                let b = super::config::lenient_i64(v, "dynamic_batching.preferred_batch_size")?;
                if b < 1 || (mbs > 0 && b as usize > mbs) {
                    return Err(bad(
                        "dynamic_batching.preferred_batch_size",
                        &b.to_string(),
                        &format!("expected batch sizes in 1..={}", mbs.max(1)),
                    ));
                }
            }
        }

        // ---- engine ----
        let engine = match param("engine").or(backend.get("engine")).unwrap_or("auto") {
            "auto" => EngineChoice::Auto,
            "onnxruntime" | "ort" => EngineChoice::OnnxRuntime,
            "tensorrt" | "trt" => EngineChoice::TensorRt,
            other => {
                return Err(bad(
                    "parameter 'engine'",
                    other,
                    "expected auto, onnxruntime or tensorrt",
                ))
            }
        };

        // ---- accelerators ----
        let mut precision_src: Vec<(String, String)> = Vec::new();
        if let Some(v) = param("precision_mode") {
            precision_src.push((p("precision_mode"), v.to_string()));
        }
        let mut graphs_wanted: Option<(String, String)> = None;
        let mut trt_accel = false;
        let mut layer_norm_fp32: Option<bool> = None;
        for a in &cfg.gpu_accelerators {
            match a.name.as_str() {
                "tensorrt" => {
                    trt_accel = true;
                    for (k, v) in &a.parameters {
                        let what = trt(k);
                        if v.contains('\0') {
                            return Err(Error::invalid_arg(format!(
                                "{what} has a NUL character in its value"
                            )));
                        }
                        match k.as_str() {
                            "precision_mode" => precision_src.push((what, v.clone())),
                            "max_workspace_size_bytes" => {
                                let n = parse_int(&what, v, 1, i64::MAX)?;
                                s.set("max_workspace_size_bytes", n.to_string(), what)?;
                            }
                            "trt_engine_cache_enable" => {
                                if !parse_bool(&what, v)? {
                                    warnings.push(format!(
                                        "{what} = '{v}' is ignored: rusttrt always keeps built engines in its engine cache (keyed by content; set cache_dir to choose where)"
                                    ));
                                }
                            }
                            "trt_engine_cache_path" => {
                                let d = resolve_path(model_dir, v);
                                s.set("cache_dir", d.display().to_string(), what)?;
                            }
                            "trt_timing_cache_enable" => {
                                let b = parse_bool(&what, v)?;
                                s.set("timing_cache", b.to_string(), what)?;
                            }
                            "trt_timing_cache_path" => {
                                let d = resolve_path(model_dir, v);
                                s.set("timing_cache_path", d.display().to_string(), what)?;
                            }
                            "trt_builder_optimization_level" => {
                                let n = parse_int(&what, v, 0, 5)?;
                                s.set("builder_optimization_level", n.to_string(), what)?;
                            }
                            "trt_profile_min_shapes" | "trt_profile_opt_shapes"
                            | "trt_profile_max_shapes" => {
                                crate::engine::tensorrt::options::parse_shape_list(v)
                                    .map_err(|e| e.context(what.clone()))?;
                                s.set(k, v.trim().to_string(), what)?;
                            }
                            "trt_layer_norm_fp32_fallback" => {
                                layer_norm_fp32 = Some(parse_bool(&what, v)?);
                            }
                            "trt_cuda_graph_enable" => {
                                if parse_bool(&what, v)? {
                                    graphs_wanted = Some((what, "preferred".into()));
                                }
                            }
                            _ => match TRT_ACCEL_IGNORED.iter().find(|(n, _)| n == k) {
                                Some((_, kind)) => {
                                    match kind {
                                        Kind::Bool => {
                                            parse_bool(&what, v)?;
                                        }
                                        Kind::Int => {
                                            parse_int(&what, v, i64::MIN, i64::MAX)?;
                                        }
                                        Kind::Str => {}
                                    }
                                    warnings.push(format!(
                                        "{what} = '{v}' is ignored: rusttrt's own TensorRT build has no such setting"
                                    ));
                                }
                                None => {
                                    let mut all: Vec<&str> = TRT_ACCEL_KNOWN.to_vec();
                                    all.extend(TRT_ACCEL_IGNORED.iter().map(|(n, _)| *n));
                                    return Err(Error::invalid_arg(format!(
                                        "unknown parameter '{k}' is provided for TensorRT Execution Accelerator; accepted: {}",
                                        all.join(", ")
                                    )));
                                }
                            },
                        }
                    }
                }
                "cuda" => {
                    for (k, v) in &a.parameters {
                        let what = cuda(k);
                        if v.contains('\0') {
                            return Err(Error::invalid_arg(format!(
                                "{what} has a NUL character in its value"
                            )));
                        }
                        if let Some((_, why)) = CUDA_ACCEL_IGNORED.iter().find(|(n, _)| n == k) {
                            warnings.push(format!("{what} = '{v}' is ignored: {why}"));
                            continue;
                        }
                        if !CUDA_ACCEL_KNOWN.contains(&k.as_str()) {
                            return Err(Error::invalid_arg(format!(
                                "unknown parameter '{k}' is provided for CUDA Execution Accelerator; accepted: {}",
                                CUDA_ACCEL_KNOWN.join(", ")
                            )));
                        }
                        if k == "enable_cuda_graph" {
                            if parse_bool(&what, v)? {
                                graphs_wanted = Some((what, "preferred".into()));
                            }
                            continue;
                        }
                        let canon = cuda_option(&what, k, v)?;
                        session.cuda_options.push((k.clone(), canon));
                    }
                }
                other => {
                    return Err(Error::invalid_arg(format!(
                        "unknown Execution Accelerator '{other}' is requested; accepted for GPU: tensorrt, cuda"
                    )))
                }
            }
        }
        for a in &cfg.cpu_accelerators {
            match a.name.as_str() {
                "openvino" => warnings.push(
                    "cpu_execution_accelerator 'openvino' is ignored: rusttrt serves CPU instances with ONNX Runtime's CPU provider".into(),
                ),
                other => {
                    return Err(Error::invalid_arg(format!(
                        "unknown Execution Accelerator '{other}' is requested; accepted for CPU: openvino (ignored)"
                    )))
                }
            }
        }

        // ---- precision ----
        if precision_src.is_empty() {
            if let Some(v) = backend.get("precision-mode") {
                precision_src.push(("backend config 'precision-mode'".into(), v.to_string()));
            }
        }
        let mut precision = None;
        for (what, v) in &precision_src {
            let got = match v.trim().to_ascii_uppercase().as_str() {
                "FP32" => Precision::Fp32,
                "FP16" => Precision::Fp16,
                _ => {
                    return Err(bad(
                        what,
                        v,
                        "expected FP32 or FP16 (BF16 and INT8 are not supported by rusttrt)",
                    ))
                }
            };
            if let Some(prev) = precision {
                if prev != got {
                    return Err(Error::invalid_arg(format!(
                        "{what} = '{v}' disagrees with {} = '{}'; give precision_mode once",
                        precision_src[0].0, precision_src[0].1
                    )));
                }
            }
            precision = Some(got);
        }

        // ---- own parameters (aliases) ----
        let mut progress_interval = None;
        for (k, v) in &cfg.parameters {
            let what = p(k);
            let v = v.as_str();
            if v.trim().is_empty() {
                continue;
            }
            match k.as_str() {
                "max_workspace_size_bytes" => {
                    let n = parse_int(&what, v, 1, i64::MAX)?;
                    s.set(k, n.to_string(), what)?;
                }
                "builder_optimization_level" => {
                    let n = parse_int(&what, v, 0, 5)?;
                    s.set(k, n.to_string(), what)?;
                }
                "trt_profile_min_shapes" | "trt_profile_opt_shapes" | "trt_profile_max_shapes" => {
                    crate::engine::tensorrt::options::parse_shape_list(v)
                        .map_err(|e| e.context(what.clone()))?;
                    s.set(k, v.trim().to_string(), what)?;
                }
                "timing_cache"
                | "strongly_typed"
                | "fp16_accuracy_guard"
                | "fp16_allow_clamping"
                | "onnxruntime_share_weights" => {
                    let b = parse_bool(&what, v)?;
                    s.set(k, b.to_string(), what)?;
                }
                "fp16_min_cosine" => {
                    let x = parse_f64(&what, v, -1.0, 1.0)?;
                    s.set(k, x.to_string(), what)?;
                }
                "fp16_max_relative_l2" => {
                    let x = parse_f64(&what, v, 0.0, f64::MAX)?;
                    s.set(k, x.to_string(), what)?;
                }
                "fp16_guard_seed" => {
                    let n = v.trim().parse::<u64>().map_err(|_| {
                        bad(&what, v, "expected an integer in 0..=18446744073709551615")
                    })?;
                    s.set(k, n.to_string(), what)?;
                }
                "fp16_keep_fp32_ops" => {
                    let ops = op_list(&what, v)?;
                    s.set(k, ops.join(","), what)?;
                }
                "cache_dir" => {
                    let d = resolve_path(model_dir, v);
                    s.set(k, d.display().to_string(), what)?;
                }
                "cache_max_size" => {
                    let n = parse_size(&what, v)?;
                    s.set(k, n.to_string(), what)?;
                }
                "cuda_graph_batch_sizes" => {
                    let canon = if v.trim() == "preferred" {
                        "preferred".to_string()
                    } else {
                        join(&batch_list(&what, v, mbs)?)
                    };
                    s.set(k, canon, what)?;
                }
                "fp16_guard_input_range" | "fp16_guard_sequence_length" | "fp16_guard_inputs" => {
                    // Checked together (the sample files against the inputs) below.
                    s.set(k, v.trim().to_string(), what)?;
                }
                "build_timeout_s" => {
                    let n = parse_int(&what, v, 1, i64::MAX)?;
                    s.set(k, n.to_string(), what)?;
                }
                "build_progress_interval_s" => {
                    let x = parse_f64(&what, v, 0.001, 86400.0)?;
                    progress_interval = Some(std::time::Duration::from_secs_f64(x));
                }
                _ => {}
            }
        }
        if let Some(v) = backend.get("cache-max-size") {
            // Validated here too, so a bad backend config fails the load instead of the cache.
            parse_size("backend config 'cache-max-size'", v)?;
        }

        // trt_layer_norm_fp32_fallback: LayerNormalization in or out of the FP32 list.
        if let Some(keep_ln) = layer_norm_fp32 {
            let what = trt("trt_layer_norm_fp32_fallback");
            let mut ops: Vec<String> = match s.values.get("fp16_keep_fp32_ops") {
                Some(list) => list.split(',').map(str::to_string).collect(),
                None => default_keep_ops(),
            };
            let has = ops.iter().any(|o| o == "LayerNormalization");
            if keep_ln && !has {
                ops.push("LayerNormalization".into());
            } else if !keep_ln && has {
                ops.retain(|o| o != "LayerNormalization");
            }
            s.values.remove("fp16_keep_fp32_ops");
            let src = s.sources.remove("fp16_keep_fp32_ops");
            s.set(
                "fp16_keep_fp32_ops",
                ops.join(","),
                match src {
                    Some(src) => format!("{src} and {what}"),
                    None => what,
                },
            )?;
        }

        // ---- CUDA graphs: Triton's own field first, then the accelerators, then the alias ----
        if let Some(sizes) = cuda_graph_field(&cfg.raw, mbs)? {
            s.set(
                "cuda_graph_batch_sizes",
                sizes,
                "optimization.cuda.graphs".into(),
            )?;
        } else if let Some(spec) = graph_spec_without_graphs(&cfg.raw) {
            warnings.push(spec);
        }
        if let Some((what, v)) = graphs_wanted {
            if !s.values.contains_key("cuda_graph_batch_sizes") {
                s.set("cuda_graph_batch_sizes", v, what)?;
            }
        }
        for (k, why) in [
            (
                "busy_wait_events",
                "rusttrt synchronizes on the instance's stream",
            ),
            (
                "output_copy_stream",
                "rusttrt copies outputs on the instance's stream",
            ),
        ] {
            let set = cfg
                .raw
                .pointer(&format!("/optimization/cuda/{k}"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if set {
                warnings.push(format!("optimization.cuda.{k} is ignored: {why}"));
            }
        }
        // The same settings for ONNX Runtime's own TensorRT provider (onnxruntime_backend's
        // path), under the names it uses.
        for (ours, theirs) in [
            ("max_workspace_size_bytes", "trt_max_workspace_size"),
            (
                "builder_optimization_level",
                "trt_builder_optimization_level",
            ),
            ("trt_profile_min_shapes", "trt_profile_min_shapes"),
            ("trt_profile_opt_shapes", "trt_profile_opt_shapes"),
            ("trt_profile_max_shapes", "trt_profile_max_shapes"),
            ("timing_cache_path", "trt_timing_cache_path"),
        ] {
            if let Some(v) = s.values.get(ours) {
                session.trt_options.push((theirs.into(), v.clone()));
            }
        }
        if let Some(v) = s.values.get("timing_cache") {
            let on = if v == "true" { "1" } else { "0" };
            session
                .trt_options
                .push(("trt_timing_cache_enable".into(), on.into()));
        }
        if let Some(b) = layer_norm_fp32 {
            let on = if b { "1" } else { "0" };
            session
                .trt_options
                .push(("trt_layer_norm_fp32_fallback".into(), on.into()));
        }
        // Not trt_cuda_graph_enable: ONNX Runtime replays such a graph on the addresses it was
        // captured with, which only an IoBinding keeps; rusttrt's graphs are its own captures.
        // The TensorRT timing cache location is a run-time path, not a build option.
        let timing_cache_dir = s.values.remove("timing_cache_path").map(PathBuf::from);
        if let Some(src) = s.sources.remove("timing_cache_path") {
            s.sources.insert("timing_cache_dir".into(), src);
        }

        // ---- ONNX Runtime session ----
        let threads = |k: &str| -> Result<Option<usize>> {
            match param(k) {
                None => Ok(None),
                Some(v) => match parse_int(&p(k), v, 0, max_threads())? {
                    0 => Ok(None),
                    n => Ok(Some(n as usize)),
                },
            }
        };
        let intra_op_threads = threads("intra_op_thread_count")?;
        session.intra_threads = intra_op_threads;
        session.inter_threads = threads("inter_op_thread_count")?;
        if let Some(v) = param("execution_mode") {
            session.parallel_execution = Some(parse_int(&p("execution_mode"), v, 0, 1)? == 1);
        }
        if let Some(v) = param("enable_mem_arena") {
            session.mem_arena = Some(parse_bool(&p("enable_mem_arena"), v)?);
        }
        if let Some(v) = param("enable_mem_pattern") {
            session.mem_pattern = Some(parse_bool(&p("enable_mem_pattern"), v)?);
        }
        // Deprecated model-level spellings of the CUDA accelerator's options.
        for (k, names) in [
            (
                "cudnn_conv_algo_search",
                &["EXHAUSTIVE", "HEURISTIC", "DEFAULT"][..],
            ),
            (
                "arena_extend_strategy",
                &["kNextPowerOfTwo", "kSameAsRequested"][..],
            ),
        ] {
            if let Some(v) = param(k) {
                let i = parse_int(&p(k), v, 0, names.len() as i64 - 1)?;
                session
                    .cuda_options
                    .push((k.into(), names[i as usize].into()));
            }
        }
        if let Some(v) = param("gpu_mem_limit") {
            let n = parse_int(&p("gpu_mem_limit"), v, 1, i64::MAX)?;
            session
                .cuda_options
                .push(("gpu_mem_limit".into(), n.to_string()));
        }
        if let Some(level) = cfg.raw.pointer("/optimization/graph/level") {
            let l = super::config::lenient_i64(level, "optimization.graph.level")?;
            if ![-1, 0, 1, 2].contains(&l) {
                return Err(bad(
                    "optimization.graph.level",
                    &l.to_string(),
                    "expected -1 (basic), 0 (all, the default), 1 (extended) or 2 (disabled)",
                ));
            }
            session.graph_level = Some(l as i32);
        }

        // ---- libraries ----
        let mut libs = Vec::new();
        if let Some(v) = param("onnxruntime_library") {
            let path = resolve_path(model_dir, v);
            check_library("parameter 'onnxruntime_library'", &path)?;
            libs.push(path);
        }
        if let Some(v) = backend.get("onnxruntime-library") {
            check_library("backend config 'onnxruntime-library'", Path::new(v))?;
            libs.push(PathBuf::from(v));
        }
        for key in ["tensorrt-library", "tensorrt-parser-library"] {
            if let Some(v) = backend.get(key) {
                check_library(&format!("backend config '{key}'"), Path::new(v))?;
            }
        }
        if let Ok(v) = std::env::var("ORT_DYLIB_PATH") {
            if !v.is_empty() {
                libs.push(PathBuf::from(v));
            }
        }
        libs.push(backend.backend_dir.join("libonnxruntime.so"));
        libs.push(PathBuf::from("libonnxruntime.so"));

        let ort_gpu_provider = match param("onnxruntime_execution_provider") {
            None if trt_accel => OrtGpuProvider::TensorRt,
            None | Some("cuda") => OrtGpuProvider::Cuda,
            Some("tensorrt") => OrtGpuProvider::TensorRt,
            Some(other) => {
                return Err(bad(
                    "parameter 'onnxruntime_execution_provider'",
                    other,
                    "expected cuda or tensorrt",
                ))
            }
        };
        if let Some(v) = param("onnxruntime_library") {
            s.set(
                "onnxruntime_library",
                resolve_path(model_dir, v).display().to_string(),
                p("onnxruntime_library"),
            )?;
        }
        if let Some(n) = intra_op_threads {
            s.set(
                "intra_op_thread_count",
                n.to_string(),
                p("intra_op_thread_count"),
            )?;
        }

        // The TensorRT options together (min/opt/max given together, profiles that agree).
        crate::engine::tensorrt::options::TrtOptions::from_options(&s.values)?;

        Ok(ModelParams {
            engine,
            precision,
            ort_library_candidates: libs,
            ort_gpu_provider,
            intra_op_threads,
            ort_session: session,
            timing_cache_dir,
            effective: s.values,
            sources: s.sources,
            warnings,
            progress_interval,
            input_pinned_memory: cfg.input_pinned_memory,
            output_pinned_memory: cfg.output_pinned_memory,
        })
    }

    /// The precision for a device: as configured, else FP16 on GPU and FP32 on CPU.
    pub fn precision_for(&self, device: Device) -> Precision {
        self.precision.unwrap_or(match device {
            Device::Gpu(_) => Precision::Fp16,
            Device::Cpu => Precision::Fp32,
        })
    }

    /// One line naming every effective setting and where it came from, e.g.
    /// `cache_dir=/models/m/engines (gpu_execution_accelerator 'tensorrt' parameter 'trt_engine_cache_path')`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!(
            "engine={}",
            match self.engine {
                EngineChoice::Auto => "auto",
                EngineChoice::OnnxRuntime => "onnxruntime",
                EngineChoice::TensorRt => "tensorrt",
            }
        )];
        parts.push(format!(
            "precision_mode={}",
            self.precision.map(|p| p.as_str()).unwrap_or("default")
        ));
        for (k, v) in &self.effective {
            match self.sources.get(k) {
                Some(src) => parts.push(format!("{k}={v} ({src})")),
                None => parts.push(format!("{k}={v}")),
            }
        }
        if let Some(d) = &self.timing_cache_dir {
            parts.push(format!(
                "timing_cache_dir={} ({})",
                d.display(),
                self.sources
                    .get("timing_cache_dir")
                    .map(String::as_str)
                    .unwrap_or("")
            ));
        }
        let o = &self.ort_session;
        let opt = |name: &str, v: Option<String>| v.map(|v| format!("{name}={v}"));
        parts.extend(
            [
                opt(
                    "inter_op_thread_count",
                    o.inter_threads.map(|n| n.to_string()),
                ),
                opt(
                    "execution_mode",
                    o.parallel_execution
                        .map(|p| if p { "1" } else { "0" }.to_string()),
                ),
                opt("enable_mem_arena", o.mem_arena.map(|b| b.to_string())),
                opt("enable_mem_pattern", o.mem_pattern.map(|b| b.to_string())),
                opt(
                    "optimization.graph.level",
                    o.graph_level.map(|l| l.to_string()),
                ),
            ]
            .into_iter()
            .flatten(),
        );
        for (k, v) in &o.cuda_options {
            parts.push(format!("cuda.{k}={v}"));
        }
        for (k, v) in &o.trt_options {
            parts.push(format!("onnxruntime_tensorrt.{k}={v}"));
        }
        parts.push(format!(
            "optimization.input_pinned_memory={}, optimization.output_pinned_memory={}",
            self.input_pinned_memory, self.output_pinned_memory
        ));
        parts.join(", ")
    }
}

/// A CUDA accelerator option, validated; returns the value ONNX Runtime expects.
fn cuda_option(what: &str, k: &str, v: &str) -> Result<String> {
    let one_of = |names: &[&str]| -> Result<String> {
        names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(v.trim()))
            .map(|n| n.to_string())
            .ok_or_else(|| bad(what, v, &format!("expected one of {}", names.join(", "))))
    };
    match k {
        "cudnn_conv_algo_search" => one_of(&["EXHAUSTIVE", "HEURISTIC", "DEFAULT"]),
        "arena_extend_strategy" => one_of(&["kNextPowerOfTwo", "kSameAsRequested"]),
        "gpu_mem_limit" => Ok(parse_int(what, v, 1, i64::MAX)?.to_string()),
        _ => Ok(if parse_bool(what, v)? { "1" } else { "0" }.to_string()),
    }
}

/// `fp16_keep_fp32_ops`: comma-separated ONNX op types.
fn op_list(what: &str, v: &str) -> Result<Vec<String>> {
    let ops: Vec<String> = v
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let ok = |o: &String| {
        o.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if ops.is_empty() || !ops.iter().all(ok) {
        return Err(bad(
            what,
            v,
            "expected comma-separated ONNX op types (e.g. LayerNormalization,Softmax)",
        ));
    }
    Ok(ops)
}

/// `optimization { cuda { graphs: true graph_spec [...] } }`, as tensorrt_backend reads it: the
/// graph_spec batch sizes, else the dynamic batcher's preferred sizes (with max_batch_size).
fn cuda_graph_field(raw: &Value, max_batch_size: usize) -> Result<Option<String>> {
    let Some(cuda) = raw.pointer("/optimization/cuda") else {
        return Ok(None);
    };
    if !cuda.get("graphs").and_then(Value::as_bool).unwrap_or(false) {
        return Ok(None);
    }
    let specs = cuda
        .get("graph_spec")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if specs.is_empty() {
        return Ok(Some("preferred".into()));
    }
    let mut sizes = Vec::new();
    for (i, g) in specs.iter().enumerate() {
        let what = format!("optimization.cuda.graph_spec[{i}].batch_size");
        let b = super::config::lenient_i64(g.get("batch_size").unwrap_or(&Value::Null), &what)?;
        if max_batch_size == 0 {
            if b != 0 {
                return Err(bad(
                    &what,
                    &b.to_string(),
                    "expected 0 for a model without batching (max_batch_size 0)",
                ));
            }
            sizes.push(1);
        } else if b < 1 || b as usize > max_batch_size {
            return Err(bad(
                &what,
                &b.to_string(),
                &format!("expected a batch size in 1..={max_batch_size}"),
            ));
        } else {
            sizes.push(b as usize);
        }
    }
    sizes.sort_unstable();
    sizes.dedup();
    Ok(Some(join(&sizes)))
}

fn graph_spec_without_graphs(raw: &Value) -> Option<String> {
    let n = raw
        .pointer("/optimization/cuda/graph_spec")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    (n > 0).then(|| {
        "optimization.cuda.graph_spec is ignored because optimization.cuda.graphs is not true"
            .to_string()
    })
}

/// Reads an optional boolean parameter (already validated at load; see [`ModelParams::resolve`]).
pub fn bool_param(cfg: &ModelConfig, key: &str, default: bool) -> Result<bool> {
    cfg.parameter(key)
        .map(|v| parse_bool(&format!("parameter '{key}'"), v))
        .unwrap_or(Ok(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: serde_json::Value) -> ModelConfig {
        ModelConfig::parse(json).unwrap()
    }

    fn params(kv: &[(&str, &str)]) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in kv {
            m.insert(k.to_string(), serde_json::json!({ "string_value": v }));
        }
        serde_json::json!({ "name": "m", "max_batch_size": 8, "parameters": m })
    }

    fn resolve(json: serde_json::Value) -> Result<ModelParams> {
        ModelParams::resolve(&cfg(json), &BackendState::default(), Path::new("/models/m"))
    }

    #[test]
    fn out_of_range_and_unparsable_values_name_parameter_value_and_accepted() {
        let max = (max_threads() + 1).to_string();
        for (k, v, needle) in [
            ("fp16_min_cosine", "1.5", "[-1, 1]"),
            ("fp16_min_cosine", "NaN", "[-1, 1]"),
            ("fp16_max_relative_l2", "-0.1", "[0,"),
            ("cache_max_size", "-5G", "positive size"),
            ("cache_max_size", "0", "positive size"),
            ("max_workspace_size_bytes", "-1", "integer"),
            ("intra_op_thread_count", max.as_str(), "integer in 0..="),
            ("inter_op_thread_count", "many", "integer"),
            ("execution_mode", "2", "0..=1"),
            ("enable_mem_arena", "maybe", "true/false"),
            ("cuda_graph_batch_sizes", "0", "1..=8"),
            ("cuda_graph_batch_sizes", "16", "1..=8"),
            ("builder_optimization_level", "9", "0..=5"),
            ("fp16_guard_seed", "-3", "integer"),
            ("fp16_accuracy_guard", "sometimes", "true/false"),
            ("fp16_keep_fp32_ops", ",", "op types"),
            ("precision_mode", "INT8", "FP32 or FP16"),
        ] {
            let e = resolve(params(&[(k, v)])).unwrap_err();
            assert_eq!(e.code(), crate::error::ErrorCode::InvalidArg, "{k}={v}");
            let m = e.to_string();
            assert!(
                m.contains(k) && m.contains(&format!("'{v}'")) && m.contains(needle),
                "{k}={v}: {m}"
            );
        }
    }

    #[test]
    fn unknown_parameters_are_refused_by_name() {
        let e = resolve(params(&[("fp16_min_cosin", "0.99")])).unwrap_err();
        assert!(
            e.to_string().contains("unknown parameter 'fp16_min_cosin'"),
            "{e}"
        );
    }

    #[test]
    fn a_library_that_does_not_load_is_refused_and_relative_paths_use_the_model_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libfake.so"), b"not a library").unwrap();
        let c = cfg(params(&[("onnxruntime_library", "libfake.so")]));
        let e = ModelParams::resolve(&c, &BackendState::default(), dir.path()).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("onnxruntime_library") && m.contains("does not load"),
            "{m}"
        );
        assert!(
            m.contains(&dir.path().join("libfake.so").display().to_string()),
            "{m}"
        );
        let r = resolve(params(&[("cache_dir", "engines")])).unwrap();
        assert_eq!(r.effective["cache_dir"], "/models/m/engines");
    }

    #[test]
    fn preferred_batch_sizes_and_backend_libraries_are_checked() {
        let mut j = params(&[]);
        j["dynamic_batching"] = serde_json::json!({ "preferred_batch_size": [4, 0] });
        let e = resolve(j.clone()).unwrap_err().to_string();
        assert!(
            e.contains("preferred_batch_size") && e.contains("'0'") && e.contains("1..=8"),
            "{e}"
        );
        j["dynamic_batching"] = serde_json::json!({ "preferred_batch_size": [16] });
        assert!(resolve(j).unwrap_err().to_string().contains("'16'"));
        let mut b = BackendState::default();
        b.cmdline.insert(
            "tensorrt-library".into(),
            "/nonexistent/libnvinfer.so.10".into(),
        );
        let e = ModelParams::resolve(&cfg(params(&[])), &b, Path::new("/m")).unwrap_err();
        assert!(
            e.to_string().contains("backend config 'tensorrt-library'"),
            "{e}"
        );
    }

    #[test]
    fn values_are_canonical() {
        let r = resolve(params(&[
            ("cache_max_size", "1K"),
            ("onnxruntime_share_weights", "0"),
            ("cuda_graph_batch_sizes", "4, 1,4"),
        ]))
        .unwrap();
        assert_eq!(r.effective["cache_max_size"], "1024");
        assert_eq!(r.effective["onnxruntime_share_weights"], "false");
        assert_eq!(r.effective["cuda_graph_batch_sizes"], "1,4");
    }

    #[test]
    fn triton_cuda_graph_field_and_conflicts() {
        let mut j = params(&[]);
        j["optimization"] = serde_json::json!({ "cuda": { "graphs": true, "graph_spec": [ { "batch_size": 2 }, { "batch_size": "8" } ] } });
        let r = resolve(j.clone()).unwrap();
        assert_eq!(r.effective["cuda_graph_batch_sizes"], "2,8");
        assert_eq!(
            r.sources["cuda_graph_batch_sizes"],
            "optimization.cuda.graphs"
        );
        j["parameters"] = serde_json::json!({ "cuda_graph_batch_sizes": { "string_value": "1" } });
        let e = resolve(j.clone()).unwrap_err().to_string();
        assert!(
            e.contains("cuda_graph_batch_sizes") && e.contains("already set"),
            "{e}"
        );
        j["parameters"] = serde_json::json!({});
        j["optimization"]["cuda"]["graph_spec"][0]["batch_size"] = serde_json::json!(9);
        let e = resolve(j).unwrap_err().to_string();
        assert!(
            e.contains("graph_spec[0].batch_size") && e.contains("'9'"),
            "{e}"
        );
    }

    #[test]
    fn sizes_parse_with_units_and_refuse_the_rest() {
        assert_eq!(parse_size("x", "1024").unwrap(), 1024);
        assert_eq!(parse_size("x", "10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("x", "1.5MiB").unwrap(), 3 << 19);
        for bad in ["ten", "3X", "0", "-1G", "NaN"] {
            assert!(parse_size("x", bad).is_err(), "{bad}");
        }
    }
}

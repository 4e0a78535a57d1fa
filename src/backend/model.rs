//! Model state (config, model file, engines per device) and instance state (a runner).

use super::autocomplete;
use super::config::ModelConfig;
use super::params::{EngineChoice, ModelParams, OrtGpuProvider};
use super::BackendState;
use crate::engine::ort::{ExecutionProvider, OrtFactory};
use crate::engine::{BuildSpec, Device, Engine, EngineFactory, Runner, Signature};
use crate::error::{Error, Result};
use crate::log;
use crate::triton::{Model, ModelInstance};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which engine (and ONNX Runtime execution provider) builds and serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EngineKind {
    TensorRt,
    OnnxRuntime(OrtGpuProvider),
}

/// State of one loaded model version, shared (read-only apart from the engine map) by its
/// instances.
pub struct ModelState {
    pub name: String,
    pub version: u64,
    pub config: ModelConfig,
    pub params: ModelParams,
    /// The model's directory in the repository.
    pub model_dir: PathBuf,
    pub model_path: PathBuf,
    /// Content digest of the model file and its external data: computed once, when a cache key
    /// first needs it (an FP32 ONNX Runtime model never hashes its file).
    model_digest: std::sync::OnceLock<String>,
    /// The I/O signature read from the ONNX file.
    pub signature: Signature,
    pub backend: Arc<BackendState>,
    /// This model's custom metrics (cache hits/misses, build seconds, guard, serving engine).
    pub metrics: super::metrics::ModelMetrics,
    /// One engine per device, built at the first instance on that device; the mutex also makes
    /// instances that load in parallel wait for that one build.
    engines: Mutex<HashMap<Device, Arc<dyn Engine>>>,
}

/// Resolves the model file: `<model dir>/<version>/<default_model_filename or model.onnx>`; an
/// ONNX "file" may also be a directory holding `model.onnx`.
pub fn model_file(repo: &Path, version: u64, default_model_filename: &str) -> PathBuf {
    let name = if default_model_filename.is_empty() {
        "model.onnx"
    } else {
        default_model_filename
    };
    let p = repo.join(version.to_string()).join(name);
    if p.is_dir() {
        p.join("model.onnx")
    } else {
        p
    }
}

impl ModelState {
    /// ModelInitialize: read the config, auto-complete it from the ONNX signature when Triton
    /// allows, validate it, resolve the parameters. No engine is built here (instances do it).
    pub fn create(model: Model, backend: Arc<BackendState>) -> Result<ModelState> {
        let name = model.name()?;
        let version = model.version()?;
        let ctx = |e: Error| e.context(format!("model '{name}' version {version}"));
        let repo = model.repository_path()?;
        let mut raw = model.config()?;
        let filename = raw
            .get("default_model_filename")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let model_path = model_file(&repo, version, &filename);
        if !model_path.exists() {
            return Err(ctx(Error::not_found(format!(
                "model file not found: {} (expected an ONNX model; set default_model_filename to use another name)",
                model_path.display()
            ))));
        }
        // External data files are checked here, before any engine library opens them by path
        // (ONNX Runtime would block on a FIFO and follows symlinks).
        let onnx = crate::onnx::OnnxModel::load(&model_path).map_err(ctx)?;
        let signature = onnx
            .check_external_data()
            .and_then(|()| onnx.signature())
            .map_err(ctx)?;
        drop(onnx);
        if model.auto_complete_config()? {
            if let Some(completed) =
                autocomplete::complete(&raw, &signature, backend.default_max_batch_size())?
            {
                model
                    .set_config(&completed)
                    .map_err(|e| ctx(e.context("sending the auto-completed config")))?;
                raw = model.config()?;
                log!(
                    Info,
                    "model '{name}': configuration auto-completed from the ONNX signature"
                );
            }
        }
        Self::from_parts(
            name,
            version,
            raw,
            backend,
            repo,
            (model_path, None),
            signature,
            true,
        )
    }

    /// The model state from its final config JSON (what Triton holds after auto-complete), the
    /// model's directory and file and its signature: config parsed and validated, parameters
    /// resolved. The build worker rebuilds a model's state this way in its own process, with
    /// `announce` false: the server has logged the settings and their warnings already.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        name: String,
        version: u64,
        raw: serde_json::Value,
        backend: Arc<BackendState>,
        repo: PathBuf,
        (model_path, model_digest): (PathBuf, Option<String>),
        signature: Signature,
        announce: bool,
    ) -> Result<ModelState> {
        let ctx = |e: Error| e.context(format!("model '{name}' version {version}"));
        let mut config = ModelConfig::parse(raw).map_err(ctx)?;
        config.validate(&signature)?;
        config.bind_scalars(&signature);
        let params = ModelParams::resolve(&config, &backend, &repo)?;
        let model_dir = repo;
        if announce {
            for w in &params.warnings {
                log!(Warn, "model '{name}': {w}");
            }
            log!(
                Info,
                "model '{name}': effective settings: {}",
                params.describe()
            );
        }
        // From here on the model's parameters are the resolved ones: every engine and cache
        // option under its rusttrt name, validated, paths absolute (params.rs).
        config.parameters = params.effective.clone();
        let metrics = super::metrics::ModelMetrics::new(backend.metrics.as_ref(), &name, version);
        Ok(ModelState {
            name,
            version,
            config,
            params,
            model_dir,
            model_path,
            model_digest: model_digest
                .map(std::sync::OnceLock::from)
                .unwrap_or_default(),
            signature,
            metrics,
            backend,
            engines: Mutex::new(HashMap::new()),
        })
    }

    /// Content digest of the model file and its external data (`onnx::model_digest`), computed
    /// on first use and kept.
    pub fn model_digest(&self) -> Result<&str> {
        if let Some(d) = self.model_digest.get() {
            return Ok(d);
        }
        let d = crate::onnx::model_digest(&self.model_path)
            .map_err(|e| e.context(format!("model '{}'", self.name)))?;
        Ok(self.model_digest.get_or_init(|| d))
    }

    /// The engine for `device`, built (or taken from the cache) on first use.
    pub fn engine_for(&self, device: Device) -> Result<Arc<dyn Engine>> {
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = engines.get(&device) {
            return Ok(e.clone());
        }
        let engine = self
            .load_engine(device)
            .map_err(|e| e.context(format!("model '{}'", self.name)))?;
        // The engine must serve what the config promises.
        self.config.validate(engine.signature())?;
        log!(
            Info,
            "model '{}': serving with {}",
            self.name,
            engine.describe()
        );
        self.metrics.serving(
            &match device {
                Device::Cpu => "CPU".to_string(),
                Device::Gpu(d) => format!("GPU {d}"),
            },
            &engine.describe(),
            self.params.precision_for(device).as_str(),
        );
        engines.insert(device, engine.clone());
        Ok(engine)
    }

    /// The factory of `choice` for `device`.
    pub fn factory_for(
        &self,
        choice: EngineKind,
        device: Device,
    ) -> Result<Box<dyn EngineFactory>> {
        match choice {
            EngineKind::TensorRt => self.tensorrt_factory(device),
            EngineKind::OnnxRuntime(p) => self.ort_factory(device, p),
        }
    }

    /// The native TensorRT factory (shim library + TensorRT), for a GPU instance.
    fn tensorrt_factory(&self, device: Device) -> Result<Box<dyn EngineFactory>> {
        if device == Device::Cpu {
            return Err(Error::invalid_arg(
                "engine 'tensorrt' needs a KIND_GPU instance (this instance is KIND_CPU)",
            ));
        }
        if let Some(sizes) = self.params.effective.get("cuda_graph_batch_sizes") {
            log!(
                Warn,
                "model '{}': CUDA graphs ({sizes}) are captured by the ONNX Runtime CUDA engine only; the native TensorRT engine serving this instance runs without them",
                self.name
            );
        }
        use crate::engine::tensorrt::{self as trt, LogSeverity, TensorRtConfig, TensorRtFactory};
        let config = TensorRtConfig {
            shim_path: self.backend.tensorrt_shim_path(),
            nvinfer_path: self.backend.get("tensorrt-library").map(PathBuf::from),
            parser_path: self
                .backend
                .get("tensorrt-parser-library")
                .map(PathBuf::from),
            timing_cache_dir: match &self.params.timing_cache_dir {
                Some(d) => Some(d.clone()),
                None => self.cache_root()?.map(|r| r.join("timing")),
            },
            max_log_severity: LogSeverity::Warning,
        };
        let gpu = Arc::new(trt::cuda_glue::CudaRuntime);
        Ok(Box::new(TensorRtFactory::new(config, gpu)?))
    }

    fn ort_factory(
        &self,
        device: Device,
        provider: OrtGpuProvider,
    ) -> Result<Box<dyn EngineFactory>> {
        let rt = crate::engine::ort::runtime(&self.params.ort_library_candidates)?;
        let ep = match (device, provider) {
            (Device::Cpu, _) => ExecutionProvider::Cpu,
            (Device::Gpu(_), OrtGpuProvider::Cuda) => ExecutionProvider::Cuda,
            (Device::Gpu(_), OrtGpuProvider::TensorRt) => ExecutionProvider::TensorRt {
                fp16: self.params.precision_for(device) == crate::engine::Precision::Fp16,
                cache_dir: self.ort_tensorrt_cache_dir(device)?,
            },
        };
        Ok(Box::new(
            OrtFactory::new(rt, ep, self.params.intra_op_threads)
                .with_session_settings(self.params.ort_session.clone()),
        ))
    }

    /// `<first usable cache location>/rusttrt-cache-v<N>`, where timing caches and ONNX Runtime's
    /// TensorRT caches live beside our entries (`None` when no location is writable).
    fn cache_root(&self) -> Result<Option<std::path::PathBuf>> {
        let cfg = super::engine_key::cache_config(self)?;
        Ok(cfg
            .locations
            .iter()
            .map(|l| crate::cache::cache_dir(l))
            .find(|d| {
                std::fs::create_dir_all(d).is_ok()
                    && !d
                        .metadata()
                        .map(|m| m.permissions().readonly())
                        .unwrap_or(true)
            }))
    }

    /// ONNX Runtime's TensorRT EP keeps its engine and timing caches in a directory of our cache
    /// named by our own key (model content, device, precision, options; never the path), so a
    /// changed model or setting never meets a stale engine there.
    fn ort_tensorrt_cache_dir(&self, device: Device) -> Result<Option<std::path::PathBuf>> {
        let Some(root) = self.cache_root()? else {
            return Ok(None);
        };
        let spec = self.build_spec(device);
        let key = crate::cache::CacheKey::builder()
            .field("model_digest", self.model_digest()?)
            .field("engine", "onnxruntime-tensorrt-ep")
            .field(
                "device",
                crate::cuda::device_identity(match device {
                    Device::Gpu(d) => d as usize,
                    Device::Cpu => 0,
                })
                .map(|i| i.cache_identity())
                .unwrap_or_default(),
            )
            .field("precision", spec.precision.as_str())
            .field(
                "profile",
                format!("{}:{:?}", spec.max_batch_size, spec.opt_batch_sizes),
            )
            .field("options", format!("{:?}", spec.options))
            .field("backend_version", env!("CARGO_PKG_VERSION"))
            .build();
        let dir = root.join("ort-tensorrt").join(key.short());
        std::fs::create_dir_all(&dir)?;
        Ok(Some(dir))
    }

    /// Everything the build depends on, for the engine and the cache key.
    pub fn build_spec(&self, device: Device) -> BuildSpec {
        let max = self.config.max_batch_size;
        let mut opt: Vec<usize> = self
            .config
            .dynamic_batching
            .as_ref()
            .map(|d| {
                d.preferred_batch_sizes
                    .iter()
                    .copied()
                    .filter(|&b| b <= max)
                    .collect()
            })
            .unwrap_or_default();
        if max > 0 && !opt.contains(&max) {
            opt.push(max);
        }
        opt.sort_unstable();
        opt.dedup();
        let options: BTreeMap<String, String> = self.config.parameters.clone();
        BuildSpec {
            model_name: self.name.clone(),
            model_path: self.model_path.clone(),
            precision: self.params.precision_for(device),
            device,
            max_batch_size: max,
            opt_batch_sizes: opt,
            options,
        }
    }

    /// Builds or loads the engine of `device`. `engine: tensorrt` fails with the native
    /// engine's reason; `engine: auto` on a GPU tries the native engine first and, where it
    /// cannot be used (no shim or TensorRT library, a version mismatch, a parser or build
    /// failure), serves with ONNX Runtime — its TensorRT execution provider when that loads,
    /// else CUDA — and says why in one log line.
    fn load_engine(&self, device: Device) -> Result<Arc<dyn Engine>> {
        let spec = self.build_spec(device);
        let load = |choice: EngineKind| {
            let f = self.factory_for(choice, device)?;
            super::engines::load_engine(self, f.as_ref(), &spec, choice)
        };
        // TensorRT has no string type: a model with a STRING tensor cannot use the native
        // engine (ONNX Runtime serves it, keeping strings on the CPU).
        let no_strings = || match self
            .config
            .inputs
            .iter()
            .chain(&self.config.outputs)
            .find(|t| t.dtype == crate::types::DataType::Bytes)
        {
            Some(t) => Err(Error::unsupported(format!(
                "model '{}': tensor '{}' is a STRING tensor and TensorRT has no string type; \
                 serve the model with engine 'onnxruntime' (or 'auto')",
                self.name, t.name
            ))),
            None => Ok(()),
        };
        match (self.params.engine, device) {
            (EngineChoice::TensorRt, _) => {
                no_strings()?;
                load(EngineKind::TensorRt)
            }
            (EngineChoice::OnnxRuntime, _) | (EngineChoice::Auto, Device::Cpu) => {
                load(EngineKind::OnnxRuntime(self.params.ort_gpu_provider))
            }
            (EngineChoice::Auto, Device::Gpu(ordinal)) => {
                let native = no_strings().and_then(|()| load(EngineKind::TensorRt));
                let why = match native {
                    Ok(e) => return Ok(e),
                    Err(e) => e,
                };
                let first_line = why.to_string().lines().next().unwrap_or("").to_string();
                if self.params.ort_gpu_provider == OrtGpuProvider::TensorRt
                    || crate::engine::ort::tensorrt_ep_compiled_in(
                        &self.params.ort_library_candidates,
                    )
                {
                    match load(EngineKind::OnnxRuntime(OrtGpuProvider::TensorRt)) {
                        Ok(e) => {
                            log!(
                                Warn,
                                "model '{}': engine auto on GPU {ordinal}: the native TensorRT engine cannot be used ({first_line}); serving with ONNX Runtime's TensorRT execution provider",
                                self.name
                            );
                            return Ok(e);
                        }
                        Err(e2) => log!(
                            Info,
                            "model '{}': ONNX Runtime's TensorRT execution provider cannot be used either ({}); trying CUDA",
                            self.name,
                            e2.to_string().lines().next().unwrap_or("")
                        ),
                    }
                }
                log!(
                    Warn,
                    "model '{}': engine auto on GPU {ordinal}: the native TensorRT engine cannot be used ({first_line}); serving with ONNX Runtime's CUDA execution provider",
                    self.name
                );
                load(EngineKind::OnnxRuntime(OrtGpuProvider::Cuda))
            }
        }
    }
}

/// State of one model instance: its runner and reusable buffers.
pub struct InstanceState {
    pub name: String,
    pub device: Device,
    pub model: ModelHandle,
    pub runner: Box<dyn Runner>,
    /// Host staging buffers for gathered inputs, one per input, reused across calls.
    pub gather: Vec<Vec<u8>>,
    /// Device, stream and device buffers of a GPU instance.
    pub gpu: Option<super::gpu::GpuIo>,
}

/// A shared pointer to the model state that instances hold. The model state itself is owned by
/// Triton's model object (freed in ModelFinalize, after every instance is finalized).
#[derive(Clone)]
pub struct ModelHandle(pub Arc<ModelState>);

impl InstanceState {
    pub fn create(instance: ModelInstance, model: Arc<ModelState>) -> Result<InstanceState> {
        let name = instance.name()?;
        let kind = instance.kind()?;
        let device = match kind {
            triton_abi::TRITONSERVER_INSTANCEGROUPKIND_CPU => Device::Cpu,
            triton_abi::TRITONSERVER_INSTANCEGROUPKIND_GPU => Device::Gpu(instance.device_id()?),
            triton_abi::TRITONSERVER_INSTANCEGROUPKIND_MODEL => Device::Cpu,
            other => {
                return Err(Error::invalid_arg(format!(
                    "instance '{name}': unsupported instance group kind {}",
                    triton_abi::instance_group_kind_name(other)
                )))
            }
        };
        // A KIND_GPU instance without a usable driver fails here, with the cuda layer's message.
        let gpu = match device {
            Device::Gpu(id) => Some(
                super::gpu::GpuIo::new(id as usize, model.config.inputs.len())
                    .map(|mut g| {
                        // Triton's optimization.input_pinned_memory / output_pinned_memory.
                        g.pinned_inputs = model.params.input_pinned_memory;
                        g.pinned_outputs = model.params.output_pinned_memory;
                        g
                    })
                    .map_err(|e| e.context(format!("instance '{name}' (KIND_GPU, device {id})")))?,
            ),
            Device::Cpu => None,
        };
        let engine = model.engine_for(device)?;
        let runner = engine
            .create_runner(gpu.as_ref().map(|g| &g.stream))
            .map_err(|e| e.context(format!("instance '{name}'")))?;
        let gather = vec![Vec::new(); model.config.inputs.len()];
        Ok(InstanceState {
            name,
            device,
            model: ModelHandle(model),
            runner,
            gather,
            gpu,
        })
    }
}

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

/// State of one loaded model version, shared (read-only apart from the engine map) by its
/// instances.
pub struct ModelState {
    pub name: String,
    pub version: u64,
    pub config: ModelConfig,
    pub params: ModelParams,
    pub model_path: PathBuf,
    /// The I/O signature read from the ONNX file.
    pub signature: Signature,
    pub backend: Arc<BackendState>,
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
        let signature = crate::onnx::OnnxModel::load(&model_path)
            .and_then(|m| {
                m.check_external_data()?;
                m.signature()
            })
            .map_err(ctx)?;
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
        let config = ModelConfig::parse(raw).map_err(ctx)?;
        config.validate(&signature)?;
        let params = ModelParams::resolve(&config, &backend)?;
        Ok(ModelState {
            name,
            version,
            config,
            params,
            model_path,
            signature,
            backend,
            engines: Mutex::new(HashMap::new()),
        })
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
        engines.insert(device, engine.clone());
        Ok(engine)
    }

    fn factory(&self, device: Device) -> Result<Box<dyn EngineFactory>> {
        let want_trt = match self.params.engine {
            EngineChoice::TensorRt => true,
            EngineChoice::OnnxRuntime => false,
            EngineChoice::Auto => {
                matches!(device, Device::Gpu(_)) && crate::engine::tensorrt::compiled_in()
            }
        };
        if want_trt {
            if device == Device::Cpu {
                return Err(Error::invalid_arg(
                    "engine 'tensorrt' needs a KIND_GPU instance (this instance is KIND_CPU)",
                ));
            }
            let timing = self.cache_root()?.map(|r| r.join("timing"));
            return crate::engine::tensorrt::factory(&self.backend, timing);
        }
        let rt = crate::engine::ort::runtime(&self.params.ort_library_candidates)?;
        let ep = match (device, self.params.ort_gpu_provider) {
            (Device::Cpu, _) => ExecutionProvider::Cpu,
            (Device::Gpu(_), OrtGpuProvider::Cuda) => ExecutionProvider::Cuda,
            (Device::Gpu(_), OrtGpuProvider::TensorRt) => ExecutionProvider::TensorRt {
                fp16: self.params.precision_for(device) == crate::engine::Precision::Fp16,
                cache_dir: self.ort_tensorrt_cache_dir(device)?,
            },
        };
        Ok(Box::new(OrtFactory::new(
            rt,
            ep,
            self.params.intra_op_threads,
        )))
    }

    /// `<first usable cache location>/rusttrt-cache-v<N>`, where timing caches and ONNX Runtime's
    /// TensorRT caches live beside our entries (`None` when no location is writable).
    fn cache_root(&self) -> Result<Option<std::path::PathBuf>> {
        let cfg = super::engines::cache_config(self)?;
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
            .field("model_digest", crate::onnx::model_digest(&self.model_path)?)
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

    fn load_engine(&self, device: Device) -> Result<Arc<dyn Engine>> {
        let factory = self.factory(device)?;
        let spec = self.build_spec(device);
        super::engines::load_engine(self, factory.as_ref(), &spec)
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

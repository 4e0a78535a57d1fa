//! The ONNX Runtime engine, through the `ort` crate with the library loaded at run time.
//!
//! The artifact of an ONNX Runtime "build" is the ONNX model it serves (the FP16 conversion when
//! asked for), so the engine cache can keep it; FP32 models that need no conversion load straight
//! from their file (external data resolved beside it). Each runner owns its own session, as
//! Triton's ONNX Runtime backend does per instance: `Session::run` needs exclusive access.

use super::{
    BuildSpec, Device, Engine, EngineFactory, MemLoc, Runner, Signature, TensorOut, TensorRef,
    TensorSpec,
};
use crate::error::{Error, ErrorCode, Result};
use crate::types::DataType;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{RunOptions, Session, SessionInputValue};
use ort::value::{DynTensor, DynTensorValueType, TensorElementType, TensorRefMut, ValueType};
use ort::AsPointer as _;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The loaded ONNX Runtime library: one per process (ONNX Runtime cannot be loaded twice).
pub struct OrtRuntime {
    env: ort::environment::Environment,
    pub version: String,
    pub path: PathBuf,
}

static RUNTIME: OnceLock<std::result::Result<OrtRuntime, Error>> = OnceLock::new();

/// Loads ONNX Runtime from the first candidate path that exists (a bare file name is searched by
/// the dynamic loader). Only the first call decides; later calls get the same runtime, or the
/// same error.
pub fn runtime(candidates: &[PathBuf]) -> Result<&'static OrtRuntime> {
    let r = RUNTIME.get_or_init(|| {
        let mut tried = Vec::new();
        for c in candidates {
            let is_bare = c.components().count() == 1;
            if !is_bare && !c.exists() {
                tried.push(format!("{} (not found)", c.display()));
                continue;
            }
            match load_runtime(c) {
                Ok(rt) => return Ok(rt),
                Err(e) => tried.push(format!("{}: {e}", c.display())),
            }
        }
        Err(Error::unavailable(format!(
            "ONNX Runtime could not be loaded (tried: {}). Set the backend config \
             'onnxruntime-library' (--backend-config=rusttrt,onnxruntime-library=/path/libonnxruntime.so), \
             the model parameter 'onnxruntime_library', or ORT_DYLIB_PATH",
            if tried.is_empty() { "no candidates".to_string() } else { tried.join("; ") }
        )))
    });
    r.as_ref().map_err(Clone::clone)
}

impl OrtRuntime {
    /// The process's ONNX Runtime environment.
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.env
    }
}

fn load_runtime(path: &Path) -> Result<OrtRuntime> {
    let version = library_version(path)?;
    let builder = ort::init_from(path).map_err(|e| Error::unavailable(e.to_string()))?;
    let env = builder
        .with_name("rusttrt")
        .build()
        .map_err(|e| Error::unavailable(format!("creating the ONNX Runtime environment: {e}")))?;
    Ok(OrtRuntime {
        env,
        version,
        path: path.to_path_buf(),
    })
}

/// Reads `OrtGetApiBase()->GetVersionString()` of a library file.
fn library_version(path: &Path) -> Result<String> {
    // SAFETY: loading ONNX Runtime runs no initialisers with preconditions; the handle is kept
    // only for this call (the library stays loaded by `ort` afterwards).
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| Error::unavailable(format!("dlopen: {e}")))?;
    // SAFETY: OrtGetApiBase has this signature in every ONNX Runtime release.
    let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
        unsafe { lib.get(b"OrtGetApiBase") }
            .map_err(|_| Error::unavailable("not an ONNX Runtime library: no OrtGetApiBase"))?;
    // SAFETY: the base pointer is static in the library; GetVersionString returns a static C string.
    unsafe {
        let base = get_base();
        if base.is_null() {
            return Err(Error::unavailable("OrtGetApiBase returned null"));
        }
        let v = ((*base).GetVersionString)();
        Ok(std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
    }
}

/// Whether the ONNX Runtime found through `candidates` was compiled with its TensorRT execution
/// provider (false when it cannot be loaded). Compiled in is not usable: registering it still
/// needs TensorRT's libraries.
pub fn tensorrt_ep_compiled_in(candidates: &[PathBuf]) -> bool {
    use ort::ep::ExecutionProvider as _;
    runtime(candidates).is_ok() && ort::ep::TensorRT::is_available().unwrap_or(false)
}

/// The execution providers the loaded ONNX Runtime was compiled with.
pub fn available_providers(candidates: &[PathBuf]) -> Result<Vec<String>> {
    use ort::ep::ExecutionProvider as _;
    runtime(candidates)?;
    let mut v = vec!["CPUExecutionProvider".to_string()];
    if ort::ep::CUDA::is_available().unwrap_or(false) {
        v.push("CUDAExecutionProvider".into());
    }
    if ort::ep::TensorRT::is_available().unwrap_or(false) {
        v.push("TensorrtExecutionProvider".into());
    }
    Ok(v)
}

/// Which execution provider a session uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
    /// ONNX Runtime's own TensorRT EP; its engine and timing caches live in `cache_dir`.
    TensorRt {
        fp16: bool,
        cache_dir: Option<PathBuf>,
    },
}

impl ExecutionProvider {
    pub fn name(&self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "CPUExecutionProvider",
            ExecutionProvider::Cuda => "CUDAExecutionProvider",
            ExecutionProvider::TensorRt { .. } => "TensorrtExecutionProvider",
        }
    }
}

/// Session settings a model's config can choose (names of Triton's ONNX Runtime backend:
/// `intra_op_thread_count`, `inter_op_thread_count`, `execution_mode`, `enable_mem_arena`,
/// `enable_mem_pattern`, `optimization.graph.level`, the `cuda` accelerator's options).
/// `None` = ONNX Runtime's default. Validated by the backend's parameter layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSettings {
    pub intra_threads: Option<usize>,
    pub inter_threads: Option<usize>,
    pub parallel_execution: Option<bool>,
    /// CPU memory arena.
    pub mem_arena: Option<bool>,
    pub mem_pattern: Option<bool>,
    /// Triton's `optimization.graph.level`: -1 basic, 0 all, 1 extended, 2 disabled.
    pub graph_level: Option<i32>,
    /// Options of the CUDA execution provider, as ONNX Runtime names them.
    pub cuda_options: Vec<(String, String)>,
    /// Options of ONNX Runtime's TensorRT execution provider, as it names them (applied after
    /// the precision and cache options, so they win).
    pub trt_options: Vec<(String, String)>,
}

/// Builds and loads ONNX Runtime engines.
pub struct OrtFactory {
    rt: &'static OrtRuntime,
    ep: ExecutionProvider,
    intra_threads: Option<usize>,
    settings: SessionSettings,
}

impl OrtFactory {
    pub fn new(
        rt: &'static OrtRuntime,
        ep: ExecutionProvider,
        intra_threads: Option<usize>,
    ) -> Self {
        OrtFactory {
            rt,
            ep,
            intra_threads,
            settings: SessionSettings::default(),
        }
    }

    /// The same factory with `settings` for every session (their `intra_threads`, when set,
    /// replaces the one given to [`OrtFactory::new`]).
    pub fn with_session_settings(mut self, settings: SessionSettings) -> Self {
        if settings.intra_threads.is_some() {
            self.intra_threads = settings.intra_threads;
        }
        self.settings = settings;
        self
    }
}

/// Identity of the host CPU for cache keys of CPU engines.
pub fn cpu_identity() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    format!("{} {}", std::env::consts::ARCH, model)
}

impl EngineFactory for OrtFactory {
    fn kind(&self) -> &'static str {
        "onnxruntime"
    }
    fn library_version(&self) -> String {
        format!("onnxruntime {} {}", self.rt.version, self.ep.name())
    }
    fn device_identity(&self, device: Device) -> Result<String> {
        match device {
            Device::Cpu => Ok(cpu_identity()),
            Device::Gpu(d) => crate::cuda::device_identity(d as usize).map(|i| i.cache_identity()),
        }
    }
    fn cacheable(&self, spec: &BuildSpec) -> bool {
        // An FP32 model is served as it is: keeping a copy of it would only cost disk.
        spec.precision == super::Precision::Fp16
    }
    fn build(&self, _spec: &BuildSpec, onnx: &[u8]) -> Result<Vec<u8>> {
        Ok(onnx.to_vec())
    }
    fn load(&self, spec: &BuildSpec, artifact: Option<&[u8]>) -> Result<Arc<dyn Engine>> {
        let source = match artifact {
            Some(bytes) => ModelSource::Bytes(Arc::from(bytes)),
            None => ModelSource::Path(spec.model_path.clone()),
        };
        let graph_batches = graph_batch_sizes(spec)?;
        let engine = OrtEngine {
            rt: self.rt,
            ep: self.ep.clone(),
            device: spec.device,
            intra_threads: self.intra_threads,
            settings: self.settings.clone(),
            source,
            model_name: spec.model_name.clone(),
            signature: Signature::default(),
            probe: std::sync::Mutex::new(None),
            graph_batches,
            shared: None,
        };
        // Open one session now: parse errors and missing execution providers fail the load
        // (with ONNX Runtime's own message), and the signature comes from what ONNX Runtime will
        // actually serve.
        let session = engine.new_session(None)?;
        let signature = signature_of(&session)
            .map_err(|e| e.context(format!("model '{}'", spec.model_name)))?;
        // CUDA sessions share one device copy of the weights (off with
        // onnxruntime_share_weights=false); the probe session then is not handed to a runner,
        // since it holds a copy of its own.
        let share = spec
            .options
            .get("onnxruntime_share_weights")
            .map(|v| v != "false")
            .unwrap_or(true);
        let shared = match (&engine.ep, spec.device) {
            (ExecutionProvider::Cuda, Device::Gpu(d)) if share => {
                let model = match &engine.source {
                    ModelSource::Path(p) => crate::onnx::load_with_external_data(p)?,
                    ModelSource::Bytes(b) => crate::onnx::OnnxModel::from_bytes(b, ".")?,
                };
                let w = super::ort_shared::SharedWeights::upload(&model, d).map_err(|e| {
                    e.context(format!(
                        "model '{}': uploading shared weights",
                        spec.model_name
                    ))
                })?;
                super::log::emit_log(
                    super::log::LogSeverity::Info,
                    &format!(
                        "model '{}': {} weight tensors ({:.1} MB) on GPU {d}, shared by every instance's session",
                        spec.model_name,
                        w.values.len(),
                        w.bytes as f64 / 1e6
                    ),
                );
                Some(w)
            }
            _ => None,
        };
        let probe = if shared.is_some() {
            None
        } else {
            Some(session)
        };
        let engine = OrtEngine {
            signature,
            shared,
            probe: std::sync::Mutex::new(probe),
            ..engine
        };
        Ok(Arc::new(engine))
    }
}

enum ModelSource {
    Path(PathBuf),
    Bytes(Arc<[u8]>),
}

pub struct OrtEngine {
    rt: &'static OrtRuntime,
    ep: ExecutionProvider,
    device: Device,
    intra_threads: Option<usize>,
    settings: SessionSettings,
    source: ModelSource,
    model_name: String,
    signature: Signature,
    /// The session opened at load, handed to the first runner so it is not parsed twice.
    probe: std::sync::Mutex<Option<Session>>,
    /// Batch sizes to capture CUDA graphs for (CUDA EP only).
    graph_batches: Vec<usize>,
    /// One device copy of the weights for all this engine's CUDA sessions.
    shared: Option<super::ort_shared::SharedWeights>,
}

/// `cuda_graph_batch_sizes`: a comma-separated list, or `preferred` for the dynamic batcher's
/// preferred sizes (with max_batch_size); empty = no CUDA graphs.
fn graph_batch_sizes(spec: &BuildSpec) -> Result<Vec<usize>> {
    let Some(v) = spec
        .options
        .get("cuda_graph_batch_sizes")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    else {
        return Ok(Vec::new());
    };
    let mut sizes: Vec<usize> = if v == "preferred" {
        spec.opt_batch_sizes.clone()
    } else {
        v.split(',')
            .map(|x| {
                x.trim().parse::<usize>().map_err(|_| {
                    Error::invalid_arg(format!(
                        "parameter 'cuda_graph_batch_sizes': '{x}' is not a batch size"
                    ))
                })
            })
            .collect::<Result<_>>()?
    };
    sizes.sort_unstable();
    sizes.dedup();
    if let Some(&b) = sizes
        .iter()
        .find(|&&b| b == 0 || (spec.max_batch_size > 0 && b > spec.max_batch_size))
    {
        return Err(Error::invalid_arg(format!(
            "parameter 'cuda_graph_batch_sizes': batch size {b} is outside 1..={}",
            spec.max_batch_size
        )));
    }
    Ok(sizes)
}

fn ort_err(what: &str) -> impl Fn(ort::Error) -> Error + '_ {
    move |e| Error::internal(format!("{what}: {e}"))
}

impl OrtEngine {
    /// The model's session settings on a session builder.
    fn apply_settings(
        &self,
        mut b: ort::session::builder::SessionBuilder,
    ) -> Result<ort::session::builder::SessionBuilder> {
        use ort::session::builder::GraphOptimizationLevel as L;
        let s = &self.settings;
        fn bad<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Error {
            move |e| Error::invalid_arg(format!("{what}: {e}"))
        }
        if let Some(n) = s.inter_threads {
            b = b
                .with_inter_threads(n)
                .map_err(bad("inter_op_thread_count"))?;
        }
        if let Some(p) = s.parallel_execution {
            b = b
                .with_parallel_execution(p)
                .map_err(bad("execution_mode"))?;
        }
        if let Some(m) = s.mem_pattern {
            b = b
                .with_memory_pattern(m)
                .map_err(bad("enable_mem_pattern"))?;
        }
        if let Some(l) = s.graph_level {
            let level = match l {
                -1 => L::Level1,
                1 => L::Level2,
                2 => L::Disable,
                _ => L::Level3,
            };
            b = b
                .with_optimization_level(level)
                .map_err(bad("optimization.graph.level"))?;
        }
        Ok(b)
    }

    fn new_session(&self, stream: Option<&crate::cuda::Stream>) -> Result<Session> {
        self.new_session_for(stream, None)
    }

    /// A session over the model, or over `specialized` bytes (a CUDA-graph session).
    fn new_session_for(
        &self,
        stream: Option<&crate::cuda::Stream>,
        specialized: Option<&[u8]>,
    ) -> Result<Session> {
        let mut b =
            Session::builder(&self.rt.env).map_err(ort_err("ONNX Runtime session builder"))?;
        if let Some(n) = self.intra_threads {
            b = b
                .with_intra_threads(n)
                .map_err(|e| Error::invalid_arg(e.to_string()))?;
        }
        b = self.apply_settings(b)?;
        let device_id = match self.device {
            Device::Cpu => 0,
            Device::Gpu(d) => d,
        };
        let eps = match &self.ep {
            ExecutionProvider::Cpu => {
                let mut cpu = ort::ep::CPU::default();
                if let Some(arena) = self.settings.mem_arena {
                    cpu = cpu.with_arena_allocator(arena);
                }
                vec![cpu.build().error_on_failure()]
            }
            ExecutionProvider::Cuda => {
                use ort::ep::ArbitrarilyConfigurableExecutionProvider as _;
                let mut cuda = ort::ep::CUDA::default()
                    .with_device_id(device_id)
                    .with_cuda_graph(specialized.is_some());
                for (k, v) in &self.settings.cuda_options {
                    cuda = cuda.with_arbitrary_config(k, v);
                }
                if let Some(s) = stream {
                    // SAFETY: the stream belongs to the instance that owns this session and
                    // outlives it (the instance state drops its runner before its GPU I/O).
                    cuda = unsafe { cuda.with_compute_stream(s.cu_stream() as *mut ()) };
                }
                vec![cuda.build().error_on_failure()]
            }
            ExecutionProvider::TensorRt { fp16, cache_dir } => {
                let mut trt = ort::ep::TensorRT::default()
                    .with_device_id(device_id)
                    .with_fp16(*fp16);
                if let Some(dir) = cache_dir {
                    let d = dir.display().to_string();
                    trt = trt
                        .with_engine_cache(true)
                        .with_engine_cache_path(&d)
                        .with_timing_cache(true)
                        .with_timing_cache_path(&d);
                }
                {
                    use ort::ep::ArbitrarilyConfigurableExecutionProvider as _;
                    for (k, v) in &self.settings.trt_options {
                        trt = trt.with_arbitrary_config(k, v);
                    }
                }
                vec![
                    trt.build().error_on_failure(),
                    ort::ep::CUDA::default()
                        .with_device_id(device_id)
                        .build()
                        .error_on_failure(),
                ]
            }
        };
        if let Some(w) = &self.shared {
            for (name, value) in &w.values {
                b = b.with_initializer(name, value.clone()).map_err(|e| {
                    Error::internal(format!(
                        "sharing initializer '{name}' with the session: {e}"
                    ))
                })?;
            }
        }
        b = b.with_execution_providers(eps).map_err(|e| {
            Error::unavailable(format!(
                "{} is not available in the loaded ONNX Runtime {} ({}): {e}",
                self.ep.name(),
                self.rt.version,
                self.rt.path.display()
            ))
        })?;
        let session = match (specialized, &self.source) {
            (Some(bytes), _) => b.commit_from_memory(bytes),
            (None, ModelSource::Path(p)) => b.commit_from_file(p),
            (None, ModelSource::Bytes(bytes)) => b.commit_from_memory(bytes),
        };
        session.map_err(|e| {
            Error::invalid_arg(format!("ONNX Runtime could not load the model: {e}"))
                .context(format!("model '{}'", self.model_name))
        })
    }
}

fn to_datatype(t: TensorElementType) -> Option<DataType> {
    Some(match t {
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::String => DataType::Bytes,
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Bfloat16 => DataType::BF16,
        _ => return None,
    })
}

fn spec_of(kind: &str, name: &str, t: &ValueType) -> Result<TensorSpec> {
    match t {
        ValueType::Tensor { ty, shape, .. } => {
            let dtype = to_datatype(*ty).ok_or_else(|| {
                Error::unsupported(format!(
                    "{kind} '{name}' has element type {ty:?}, which rusttrt cannot serve"
                ))
            })?;
            Ok(TensorSpec {
                name: name.to_string(),
                dtype,
                dims: shape.iter().copied().collect(),
            })
        }
        other => Err(Error::unsupported(format!(
            "{kind} '{name}' is a {other:?}, not a tensor: rusttrt serves tensors only"
        ))),
    }
}

fn signature_of(s: &Session) -> Result<Signature> {
    Ok(Signature {
        inputs: s
            .inputs()
            .iter()
            .map(|o| spec_of("input", o.name(), o.dtype()))
            .collect::<Result<_>>()?,
        outputs: s
            .outputs()
            .iter()
            .map(|o| spec_of("output", o.name(), o.dtype()))
            .collect::<Result<_>>()?,
    })
}

impl Engine for OrtEngine {
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn describe(&self) -> String {
        let device = match self.device {
            Device::Cpu => "CPU".to_string(),
            Device::Gpu(d) => format!("GPU {d}"),
        };
        format!(
            "onnxruntime {} {} on {device}",
            self.rt.version,
            self.ep.name()
        )
    }
    fn create_runner(&self, stream: Option<&crate::cuda::Stream>) -> Result<Box<dyn Runner>> {
        let probe = self.probe.lock().unwrap_or_else(|p| p.into_inner()).take();
        let session = match (probe, stream) {
            (Some(s), None) => s,
            _ => self.new_session(stream)?,
        };
        let graphs = match (stream, &self.ep, self.device) {
            (Some(s), ExecutionProvider::Cuda, Device::Gpu(d))
                if !self.graph_batches.is_empty() =>
            {
                self.capture_graphs(s, d)?
            }
            _ => Vec::new(),
        };
        Ok(Box::new(OrtRunner {
            session,
            last: Vec::new(),
            graphs,
            stream: stream.cloned(),
        }))
    }
}

impl OrtEngine {
    /// One CUDA-graph slot per listed batch size, captured now (at load). A model that cannot
    /// have fixed shapes (a dynamic non-batch dimension) is an error: the parameter asked for it
    /// explicitly; a capture that fails (three attempts) leaves that size to the plain path.
    fn capture_graphs(
        &self,
        stream: &crate::cuda::Stream,
        device: i32,
    ) -> Result<Vec<super::ort_graphs::GraphSlot>> {
        let base = match &self.source {
            ModelSource::Path(p) => crate::onnx::load_with_external_data(p)?,
            ModelSource::Bytes(b) => crate::onnx::OnnxModel::from_bytes(b, ".")?,
        };
        let mut slots = Vec::new();
        for &b in &self.graph_batches {
            let ctx = |e: Error| {
                e.context(format!(
                    "model '{}': CUDA graph for batch size {b}",
                    self.model_name
                ))
            };
            let io = |list: &[TensorSpec]| -> Result<super::ort_graphs::Io> {
                list.iter()
                    .map(|t| {
                        let mut shape = t.dims.clone();
                        if let Some(first) = shape.first_mut() {
                            *first = b as i64;
                        }
                        if shape.iter().any(|&d| d < 0) {
                            return Err(Error::invalid_arg(format!(
                                "tensor '{}' has a dynamic dimension besides the batch ({}): CUDA graphs need fixed shapes",
                                t.name,
                                crate::types::shape_str(&t.dims)
                            )));
                        }
                        Ok((t.name.clone(), t.dtype, shape))
                    })
                    .collect()
            };
            let (ins, outs) = (
                io(&self.signature.inputs).map_err(ctx)?,
                io(&self.signature.outputs).map_err(ctx)?,
            );
            let bytes = crate::onnx::specialize::specialize_batch(&base, b as i64)
                .and_then(|m| m.to_bytes())
                .map_err(ctx)?;
            // Capture is serialized with every other capture of this process on the device
            // (models load in parallel), and retried with back-off: another library's
            // allocation during a capture invalidates it. A size that still fails is left to
            // the plain path with a warning; the model always loads.
            let lock = super::ort_graphs::capture_lock(device);
            let captured =
                super::ort_graphs::with_retries(3, std::time::Duration::from_millis(100), || {
                    let _serialized = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let session = self.new_session_for(Some(stream), Some(&bytes))?;
                    super::ort_graphs::GraphSlot::new(session, b, device, &ins, &outs, stream)
                });
            match captured {
                Ok(slot) => slots.push(slot),
                Err(e) => super::log::emit_log(
                    super::log::LogSeverity::Warning,
                    &format!(
                        "model '{}': CUDA graph for batch size {b} not captured after 3 attempts ({}); batches of {b} take the plain path",
                        self.model_name,
                        e.to_string().lines().next().unwrap_or("")
                    ),
                ),
            }
        }
        let sizes: Vec<usize> = slots.iter().map(|s| s.batch).collect();
        super::log::emit_log(
            super::log::LogSeverity::Info,
            &format!(
                "model '{}': CUDA graphs captured for batch sizes {sizes:?} (other sizes take the plain path)",
                self.model_name
            ),
        );
        Ok(slots)
    }
}

struct OrtRunner {
    /// CUDA-graph slots by batch size (GPU runners with `cuda_graph_batch_sizes`).
    graphs: Vec<super::ort_graphs::GraphSlot>,
    stream: Option<crate::cuda::Stream>,
    session: Session,
    /// Outputs of the last run (kept alive so the returned views stay valid), with the BYTES
    /// serialization of each string output.
    last: Vec<(String, DynTensor, Option<Vec<u8>>)>,
}

fn memory_info(loc: MemLoc) -> Result<MemoryInfo<'static>> {
    let r = match loc {
        MemLoc::Host => MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        ),
        MemLoc::Device(d) => MemoryInfo::new(
            AllocationDevice::CUDA,
            d,
            AllocatorType::Device,
            MemoryType::Default,
        ),
    };
    r.map_err(ort_err("ONNX Runtime memory info"))
}

/// A string tensor made from a BYTES input (Triton's wire format, in host memory): ONNX Runtime
/// keeps strings in its own CPU tensor, so the elements are copied in. Every element is copied
/// with its exact bytes (embedded NULs and non-UTF-8 included).
fn string_input<'a>(t: &TensorRef<'a>) -> Result<SessionInputValue<'a>> {
    if t.loc != MemLoc::Host {
        return Err(Error::internal(format!(
            "input '{}': BYTES data must be in host memory",
            t.name
        )));
    }
    let data: &[u8] = if t.bytes == 0 {
        &[]
    } else {
        // SAFETY: a TensorRef is `bytes` readable bytes at `ptr` in `loc` (host here), valid
        // for 'a.
        unsafe { std::slice::from_raw_parts(t.ptr, t.bytes) }
    };
    let expected = crate::types::element_count(t.shape);
    let elements = crate::types::bytes_elements(data)
        .filter(|e| Some(e.len()) == expected)
        .ok_or_else(|| {
            Error::invalid_arg(format!(
                "input '{}': {} bytes are not {} length-prefixed strings (shape {})",
                t.name,
                t.bytes,
                expected.map_or_else(|| "a countable number of".into(), |n| n.to_string()),
                crate::types::shape_str(t.shape)
            ))
        })?;
    let mut value = DynTensor::new(
        &Allocator::default(),
        TensorElementType::String,
        t.shape.to_vec(),
    )
    .map_err(ort_err("creating a string input tensor"))?;
    for (i, e) in elements.iter().enumerate() {
        let mut dst: *mut std::ffi::c_char = std::ptr::null_mut();
        // SAFETY: `value` is a CPU string tensor of `elements.len()` elements owned here; ONNX
        // Runtime resizes element `i` to `e.len()` bytes and returns its buffer.
        let st = unsafe {
            (ort::api().GetResizedStringTensorElementBuffer)(value.ptr_mut(), i, e.len(), &mut dst)
        };
        super::ort_graphs::status("filling a string input tensor", st)?;
        if !e.is_empty() {
            if dst.is_null() {
                return Err(Error::internal(format!(
                    "input '{}': ONNX Runtime gave no buffer for string element {i}",
                    t.name
                )));
            }
            // SAFETY: `dst` has room for `e.len()` bytes (just resized); `e` is distinct memory.
            unsafe { std::ptr::copy_nonoverlapping(e.as_ptr(), dst.cast::<u8>(), e.len()) };
        }
    }
    Ok(SessionInputValue::from(value))
}

/// The elements of a string tensor in Triton's BYTES wire format.
fn serialize_strings(name: &str, t: &DynTensor, elements: usize) -> Result<Vec<u8>> {
    let mut total = 0usize;
    // SAFETY: `t` is a live string tensor; ONNX Runtime writes its total length to `total`.
    let st = unsafe { (ort::api().GetStringTensorDataLength)(t.ptr(), &mut total) };
    super::ort_graphs::status("reading a string output", st)?;
    let mut content = vec![0u8; total];
    let mut offsets = vec![0usize; elements];
    if elements > 0 {
        // SAFETY: `content` has `total` bytes and `offsets` `elements` slots, as told.
        let st = unsafe {
            (ort::api().GetStringTensorContent)(
                t.ptr(),
                content.as_mut_ptr().cast(),
                total,
                offsets.as_mut_ptr(),
                elements,
            )
        };
        super::ort_graphs::status("reading a string output", st)?;
    }
    let cap = elements
        .checked_mul(4)
        .and_then(|n| n.checked_add(total))
        .ok_or_else(|| Error::internal(format!("output '{name}': its size overflows")))?;
    let mut out = Vec::new();
    out.try_reserve_exact(cap).map_err(|e| {
        Error::unavailable(format!("output '{name}': cannot allocate {cap} bytes: {e}"))
    })?;
    for i in 0..elements {
        let end = offsets.get(i + 1).copied().unwrap_or(total);
        let elem = content.get(offsets[i]..end).ok_or_else(|| {
            Error::internal(format!(
                "output '{name}': ONNX Runtime gave string offsets out of order"
            ))
        })?;
        crate::types::push_bytes_element(&mut out, elem).ok_or_else(|| {
            Error::internal(format!(
                "output '{name}': string element {i} of {} bytes is longer than BYTES allows",
                elem.len()
            ))
        })?;
    }
    Ok(out)
}

/// Wraps borrowed memory as an ONNX Runtime tensor of the given element type.
fn input_value<'a>(t: &TensorRef<'a>) -> Result<SessionInputValue<'a>> {
    if t.dtype == DataType::Bytes {
        return string_input(t);
    }
    let info = memory_info(t.loc)?;
    let shape = ort::value::Shape::new(t.shape.iter().copied());
    let expected = crate::types::element_count(t.shape)
        .unwrap_or(usize::MAX)
        .saturating_mul(t.dtype.byte_size());
    if expected != t.bytes {
        return Err(Error::invalid_arg(format!(
            "input '{}': {} bytes for shape {} of {} (expected {expected})",
            t.name,
            t.bytes,
            crate::types::shape_str(t.shape),
            t.dtype
        )));
    }
    let ptr = t.ptr as *mut std::ffi::c_void;
    macro_rules! mk {
        ($ty:ty) => {{
            // SAFETY: `ptr` points to `bytes` bytes (checked above against shape × element size)
            // in the memory `info` describes, valid for 'a; ONNX Runtime only reads inputs.
            let v: TensorRefMut<'a, $ty> = unsafe { TensorRefMut::from_raw(info, ptr, shape) }
                .map_err(ort_err("creating an input tensor"))?;
            SessionInputValue::from(v)
        }};
    }
    Ok(match t.dtype {
        DataType::Bool => mk!(bool),
        DataType::U8 => mk!(u8),
        DataType::U16 => mk!(u16),
        DataType::U32 => mk!(u32),
        DataType::U64 => mk!(u64),
        DataType::I8 => mk!(i8),
        DataType::I16 => mk!(i16),
        DataType::I32 => mk!(i32),
        DataType::I64 => mk!(i64),
        DataType::F16 => mk!(half::f16),
        DataType::BF16 => mk!(half::bf16),
        DataType::F32 => mk!(f32),
        DataType::F64 => mk!(f64),
        DataType::Bytes => unreachable!("string inputs are made above"),
    })
}

impl Runner for OrtRunner {
    fn run<'s>(
        &'s mut self,
        inputs: &[TensorRef<'_>],
        outputs: &[&str],
    ) -> Result<Vec<TensorOut<'s>>> {
        self.last.clear();
        let batch = inputs
            .first()
            .and_then(|t| t.shape.first())
            .copied()
            .unwrap_or(-1);
        let on_device = inputs.iter().all(|t| matches!(t.loc, MemLoc::Device(_)));
        if let (true, Some(stream)) = (on_device, self.stream.as_ref()) {
            if let Some(slot) = self.graphs.iter_mut().find(|g| g.batch as i64 == batch) {
                return slot.run(inputs, outputs, stream);
            }
        }
        let values: Vec<(String, SessionInputValue<'_>)> = inputs
            .iter()
            .map(|t| Ok((t.name.to_string(), input_value(t)?)))
            .collect::<Result<_>>()?;
        let mut selector = ort::session::OutputSelector::no_default();
        for o in outputs {
            selector = selector.with(*o);
        }
        let opts = RunOptions::new()
            .map_err(ort_err("run options"))?
            .with_outputs(selector);
        let mut result = self.session.run_with_options(values, &opts).map_err(|e| {
            Error::new(ErrorCode::Internal, format!("ONNX Runtime run failed: {e}"))
        })?;
        for name in outputs {
            let v = result.remove(*name).ok_or_else(|| {
                Error::internal(format!("ONNX Runtime produced no output '{name}'"))
            })?;
            let t = v
                .downcast::<DynTensorValueType>()
                .map_err(|_| Error::unsupported(format!("output '{name}' is not a tensor")))?;
            let strings = match t.dtype() {
                ValueType::Tensor {
                    ty: TensorElementType::String,
                    shape,
                    ..
                } => {
                    let n = crate::types::element_count(shape).ok_or_else(|| {
                        Error::internal(format!("output '{name}' has shape {shape:?}"))
                    })?;
                    Some(serialize_strings(name, &t, n)?)
                }
                _ => None,
            };
            self.last.push((name.to_string(), t, strings));
        }
        drop(result);
        self.last
            .iter()
            .map(|(name, t, strings)| {
                let (ty, shape) = match t.dtype() {
                    ValueType::Tensor { ty, shape, .. } => (*ty, shape.to_vec()),
                    _ => {
                        return Err(Error::unsupported(format!(
                            "output '{name}' is not a tensor"
                        )))
                    }
                };
                let dtype = to_datatype(ty).ok_or_else(|| {
                    Error::unsupported(format!("output '{name}' has element type {ty:?}"))
                })?;
                if let Some(v) = strings {
                    // Serialized by the runner in host memory it keeps until its next run.
                    return Ok(TensorOut {
                        name: name.clone(),
                        dtype,
                        shape,
                        ptr: v.as_ptr(),
                        bytes: v.len(),
                        loc: MemLoc::Host,
                        _lt: PhantomData,
                    });
                }
                let bytes = crate::types::element_count(&shape).unwrap_or(0) * dtype.byte_size();
                let info = t.memory_info();
                let loc = if info.is_cpu_accessible() {
                    MemLoc::Host
                } else {
                    MemLoc::Device(info.device_id())
                };
                Ok(TensorOut {
                    name: name.clone(),
                    dtype,
                    shape,
                    ptr: t.data_ptr() as *const u8,
                    bytes,
                    loc,
                    _lt: PhantomData,
                })
            })
            .collect()
    }
}

//! Engine layer: `build(spec) -> artifact bytes` and `load(artifact) -> engine`; an engine makes
//! one runner per model instance, which runs a batch on the instance's stream.
//!
//! Two engines implement it: ONNX Runtime (`ort`, CPU / CUDA / TensorRT execution providers) and
//! native TensorRT (a thin C++ shim, compiled only where TensorRT headers are found). Everything
//! above this layer (cache, batching, I/O, statistics, errors) is shared.

pub mod log;
pub mod ort;
mod ort_graphs;
mod ort_shared;
pub mod tensorrt;

use crate::error::Result;
use crate::types::DataType;
/// The I/O signature types live in `types` (the ONNX tools read them too); engines use them here.
pub use crate::types::{Signature, TensorSpec};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

/// Compute precision of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    Fp32,
    Fp16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "FP32",
            Precision::Fp16 => "FP16",
        }
    }
}

/// Where an engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    /// CUDA ordinal.
    Gpu(i32),
}

/// Everything an engine build depends on. Every field goes into the cache key
/// (see `crate::cache::CacheKey`); the model's *path* is only used to read it.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Name of the model, for messages only.
    pub model_name: String,
    /// Path of the ONNX file (external data files are resolved beside it).
    pub model_path: PathBuf,
    pub precision: Precision,
    pub device: Device,
    /// 0 = the model has no batch dimension.
    pub max_batch_size: usize,
    /// Batch sizes to optimise for (dynamic batcher's preferred sizes), ascending, each
    /// `<= max_batch_size`.
    pub opt_batch_sizes: Vec<usize>,
    /// Every other build option (workspace, optimisation level, EP, ...), as given.
    pub options: BTreeMap<String, String>,
}

/// Memory a tensor lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemLoc {
    Host,
    Device(i32),
}

/// A borrowed input tensor: `bytes` bytes at `ptr` in `loc`, valid for `'a`.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub name: &'a str,
    pub dtype: DataType,
    pub shape: &'a [i64],
    pub ptr: *const u8,
    pub bytes: usize,
    pub loc: MemLoc,
    pub _lt: PhantomData<&'a [u8]>,
}

impl<'a> TensorRef<'a> {
    /// A tensor over a host slice.
    pub fn host(name: &'a str, dtype: DataType, shape: &'a [i64], data: &'a [u8]) -> Self {
        TensorRef {
            name,
            dtype,
            shape,
            ptr: data.as_ptr(),
            bytes: data.len(),
            loc: MemLoc::Host,
            _lt: PhantomData,
        }
    }
}

/// An output produced by a run; the memory belongs to the runner and stays valid until the
/// runner's next `run` (the borrow enforces it).
#[derive(Debug)]
pub struct TensorOut<'a> {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub ptr: *const u8,
    pub bytes: usize,
    pub loc: MemLoc,
    pub _lt: PhantomData<&'a [u8]>,
}

impl TensorOut<'_> {
    /// The bytes of a host output (`None` for device memory).
    pub fn host_bytes(&self) -> Option<&[u8]> {
        match self.loc {
            // SAFETY: a runner hands out host outputs as (ptr, bytes) of memory it owns and does
            // not touch until its next `run`, which needs `&mut` and so ends this borrow.
            MemLoc::Host if self.bytes > 0 => {
                Some(unsafe { std::slice::from_raw_parts(self.ptr, self.bytes) })
            }
            MemLoc::Host => Some(&[]),
            MemLoc::Device(_) => None,
        }
    }

    /// A host copy of the output wherever it lives (device memory is copied on a stream of
    /// its device and waited for): what the FP16 guard compares.
    pub fn to_host_vec(&self) -> Result<Vec<u8>> {
        match self.loc {
            MemLoc::Host => Ok(self.host_bytes().unwrap_or_default().to_vec()),
            MemLoc::Device(d) => {
                let device = crate::cuda::Device::open(usize::try_from(d).unwrap_or(usize::MAX))?;
                let stream = device.new_stream()?;
                let mut v = vec![0u8; self.bytes];
                if self.bytes > 0 {
                    // SAFETY: the runner keeps `bytes` bytes of device memory at `ptr` until its
                    // next run (which this borrow excludes); `v` has room for them; the stream is
                    // synchronized before `v` is used.
                    unsafe { stream.copy_dtoh_raw(v.as_mut_ptr(), self.ptr as u64, self.bytes)? };
                    stream.synchronize()?;
                }
                Ok(v)
            }
        }
    }
}

/// Builds and loads engines of one kind.
pub trait EngineFactory: Send + Sync {
    /// Engine kind as it goes into the cache key and the log ("onnxruntime", "tensorrt").
    fn kind(&self) -> &'static str;
    /// Version of the engine library actually loaded (full, for the cache key).
    fn library_version(&self) -> String;
    /// Identity of the device the engine is built for (GPU name + compute capability; CPU model).
    fn device_identity(&self, device: Device) -> Result<String>;
    /// Versions of everything else this engine's artifacts depend on (beside
    /// [`EngineFactory::library_version`]): e.g. the TensorRT headers the shim was compiled
    /// against. Each goes into the cache key.
    fn artifact_versions(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Whether a built artifact is worth keeping in the on-disk cache.
    fn cacheable(&self, spec: &BuildSpec) -> bool;
    /// Builds the artifact (serialized engine, or the converted ONNX for ONNX Runtime) from the
    /// model's ONNX bytes, which may already be the FP16 conversion.
    fn build(&self, spec: &BuildSpec, onnx: &[u8]) -> Result<Vec<u8>>;
    /// Loads a built artifact; `None` artifact = load straight from `spec.model_path`.
    fn load(&self, spec: &BuildSpec, artifact: Option<&[u8]>) -> Result<Arc<dyn Engine>>;
}

/// A loaded engine: shared by the instances of a model on one device.
pub trait Engine: Send + Sync {
    fn signature(&self) -> &Signature;
    /// What actually runs ("onnxruntime 1.31.1 CPUExecutionProvider").
    fn describe(&self) -> String;
    /// A runner for one model instance (its own execution context / run state), running on the
    /// instance's CUDA stream when it has one.
    fn create_runner(&self, stream: Option<&crate::cuda::Stream>) -> Result<Box<dyn Runner>>;
}

/// Per-instance run state. Never used by two threads at once (Triton serializes Execute per
/// instance).
pub trait Runner: Send {
    /// Runs one batch. `outputs` names the outputs to produce (those some request asked for).
    fn run<'s>(
        &'s mut self,
        inputs: &[TensorRef<'_>],
        outputs: &[&str],
    ) -> Result<Vec<TensorOut<'s>>>;
}

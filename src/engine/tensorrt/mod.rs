//! Native TensorRT engine: ONNX → serialized TensorRT plan → execution contexts.
//!
//! The TensorRT C++ API is reached through a thin C++ shim (`shim.cpp`, C interface in
//! `include/rusttrt_trt.h`) built as its own library, `libtriton_rusttrt_tensorrt.so`, one per
//! TensorRT major version (scripts/build-trt-shim.sh, cmake/), which this module opens at run
//! time ([`ffi::open`]); the backend itself never needs TensorRT headers. The shim opens the
//! TensorRT libraries in turn; their major version must equal its headers'. Any other
//! implementation of the same C interface can stand in for it: the tests run this whole engine
//! over the C-seam double of crates/trt-seam-double, and the shim itself over the ABI double of
//! tests/trt_abi_double.
//!
//! CUDA (making a device current, streams, device memory, copies, the device's identity) is not
//! done here: the caller plugs it in through [`GpuRuntime`], so the backend's cuda layer stays
//! the one place that talks to CUDA.
//!
//! See docs/tensorrt.md.

pub mod cuda_glue;
pub mod options;

mod ffi;
mod native;

use crate::engine::{BuildSpec, Device};
use crate::error::{Error, Result};
use crate::types::DataType;
use sha2::{Digest, Sha256};
use std::ffi::c_void;
use std::path::PathBuf;

/// A stream of one device, owned by one runner.
pub trait GpuStream: Send {
    /// The `cudaStream_t` / `CUstream` handle.
    fn as_raw(&self) -> *mut c_void;
    /// Queues a host → device copy on this stream.
    ///
    /// # Safety
    /// `src` must be readable for `bytes` bytes and `dst` a device allocation of at least `bytes`
    /// bytes, both until the stream has been synchronized.
    unsafe fn copy_htod(&self, dst: *mut c_void, src: *const u8, bytes: usize) -> Result<()>;
    /// Queues a device → device copy (same device) on this stream.
    ///
    /// # Safety
    /// As for [`GpuStream::copy_htod`], with `src` device memory.
    unsafe fn copy_dtod(&self, dst: *mut c_void, src: *const c_void, bytes: usize) -> Result<()>;
    /// Waits until all work queued on the stream has finished.
    fn synchronize(&self) -> Result<()>;
}

/// A device allocation, freed on drop.
pub trait GpuBuffer: Send {
    fn as_ptr(&self) -> *mut c_void;
    fn byte_len(&self) -> usize;
}

/// The CUDA services the TensorRT engine needs, implemented by the backend's cuda layer.
pub trait GpuRuntime: Send + Sync {
    /// Makes `device` current on the calling thread (TensorRT builds, loads and runs on the
    /// current device).
    fn set_device(&self, device: i32) -> Result<()>;
    /// Identity of a device for cache keys: name, compute capability, memory size.
    fn device_identity(&self, device: i32) -> Result<String>;
    fn create_stream(&self, device: i32) -> Result<Box<dyn GpuStream>>;
    fn alloc(&self, device: i32, bytes: usize) -> Result<Box<dyn GpuBuffer>>;
}

/// File name of the shim library, installed beside the backend (one per TensorRT major version).
pub const SHIM_LIBRARY: &str = "libtriton_rusttrt_tensorrt.so";

/// Where to find the shim and TensorRT, and where to keep TensorRT's timing cache.
#[derive(Debug, Clone, Default)]
pub struct TensorRtConfig {
    /// The shim library (`libtriton_rusttrt_tensorrt.so`, built against one TensorRT major
    /// version's headers), or a double of it.
    pub shim_path: PathBuf,
    /// `libnvinfer.so.<MAJOR>` when `None`.
    pub nvinfer_path: Option<PathBuf>,
    /// `libnvonnxparser.so.<MAJOR>` when `None`.
    pub parser_path: Option<PathBuf>,
    /// Directory of timing-cache files (used by builds whose options say `timing_cache=true`);
    /// `None` disables the timing cache.
    pub timing_cache_dir: Option<PathBuf>,
    /// Most verbose TensorRT messages passed to the log sink (Info by default; Verbose is
    /// thousands of lines per build).
    pub max_log_severity: LogSeverity,
}

pub use super::log::{emit_log, set_log_sink, LogSeverity, LogSink};

/// The crate's data type of a TensorRT `DataType` value (`None` for FP8, INT4, FP4, E8M0).
pub fn data_type_from_trt(v: i32) -> Option<DataType> {
    Some(match v {
        0 => DataType::F32,
        1 => DataType::F16,
        2 => DataType::I8,
        3 => DataType::I32,
        4 => DataType::Bool,
        5 => DataType::U8,
        7 => DataType::BF16,
        8 => DataType::I64,
        _ => return None,
    })
}

/// Name of TensorRT `DataType` values for messages.
pub fn trt_type_name(v: i32) -> String {
    const NAMES: [&str; 12] = [
        "FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64", "INT4", "FP4",
        "E8M0",
    ];
    usize::try_from(v)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("type {v}"), |n| n.to_string())
}

/// File name of the timing cache for one TensorRT version on one kind of device: timing data
/// is only valid for both (TensorRT refuses a mismatching cache, the shim then starts afresh).
pub fn timing_cache_file_name(library_version: &str, device_identity: &str) -> String {
    let version: String = library_version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = hex::encode(Sha256::digest(device_identity.as_bytes()));
    format!("tensorrt-{version}-{}.timing", &digest[..16])
}

fn gpu_of(spec: &BuildSpec) -> Result<i32> {
    match spec.device {
        Device::Gpu(d) => Ok(d),
        Device::Cpu => Err(Error::invalid_arg(format!(
            "model '{}': the tensorrt engine runs on GPUs only, but the instance is on the CPU",
            spec.model_name
        ))),
    }
}

pub use native::{TensorRtEngine, TensorRtFactory};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn trt_types_map_onto_crate_types() {
        assert_eq!(data_type_from_trt(0), Some(DataType::F32));
        assert_eq!(data_type_from_trt(1), Some(DataType::F16));
        assert_eq!(data_type_from_trt(8), Some(DataType::I64));
        assert_eq!(data_type_from_trt(7), Some(DataType::BF16));
        assert_eq!(data_type_from_trt(6), None);
        assert_eq!(data_type_from_trt(-1), None);
        assert_eq!(trt_type_name(6), "FP8");
        assert_eq!(trt_type_name(42), "type 42");
    }

    #[test]
    fn timing_cache_name_depends_on_version_and_device() {
        let a = timing_cache_file_name("10.16.0.106", "NVIDIA H100, sm_90");
        assert!(
            a.starts_with("tensorrt-10.16.0.106-") && a.ends_with(".timing"),
            "{a}"
        );
        assert_ne!(
            a,
            timing_cache_file_name("10.16.0.106", "NVIDIA H200, sm_90")
        );
        assert_ne!(a, timing_cache_file_name("10.16.1.1", "NVIDIA H100, sm_90"));
        assert!(!timing_cache_file_name("10/x y", "d").contains(['/', ' ']));
    }

    #[test]
    fn cpu_device_is_refused() {
        let spec = BuildSpec {
            model_name: "m".into(),
            model_path: "m.onnx".into(),
            precision: crate::engine::Precision::Fp16,
            device: Device::Cpu,
            max_batch_size: 0,
            opt_batch_sizes: vec![],
            options: BTreeMap::new(),
        };
        let e = gpu_of(&spec).unwrap_err();
        assert!(
            e.to_string().contains("model 'm'") && e.to_string().contains("GPU"),
            "{e}"
        );
    }
}

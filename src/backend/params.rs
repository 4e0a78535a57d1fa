//! Every setting the backend reads, from model `parameters`, backend config (`cmdline`) and the
//! environment, resolved in one place. README.md has the reference table; names shared with
//! Triton's ONNX Runtime backend keep its spelling.

use super::config::ModelConfig;
use super::BackendState;
use crate::engine::{Device, Precision};
use crate::error::{Error, Result};
use std::path::PathBuf;

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
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(Error::invalid_arg(format!(
            "parameter '{key}': expected true/false, got '{v}'"
        ))),
    }
}

impl ModelParams {
    pub fn resolve(cfg: &ModelConfig, backend: &BackendState) -> Result<Self> {
        let ctx = |e: Error| e.context(format!("model '{}'", cfg.name));
        let engine = match cfg
            .parameter("engine")
            .or(backend.get("engine"))
            .unwrap_or("auto")
        {
            "auto" => EngineChoice::Auto,
            "onnxruntime" | "ort" => EngineChoice::OnnxRuntime,
            "tensorrt" | "trt" => EngineChoice::TensorRt,
            other => {
                return Err(ctx(Error::invalid_arg(format!(
                    "parameter 'engine': expected auto, onnxruntime or tensorrt, got '{other}'"
                ))))
            }
        };
        // `precision_mode` is the name Triton's ONNX Runtime backend uses for its TensorRT EP.
        let precision = match cfg
            .parameter("precision_mode")
            .or_else(|| accelerator_param(cfg, "precision_mode"))
            .or(backend.get("precision-mode"))
        {
            None => None,
            Some(p) => Some(match p.to_ascii_uppercase().as_str() {
                "FP32" => Precision::Fp32,
                "FP16" => Precision::Fp16,
                other => {
                    return Err(ctx(Error::invalid_arg(format!(
                        "parameter 'precision_mode': expected FP32 or FP16, got '{other}'"
                    ))))
                }
            }),
        };
        let mut libs = Vec::new();
        if let Some(p) = cfg.parameter("onnxruntime_library") {
            libs.push(PathBuf::from(p));
        }
        if let Some(p) = backend.get("onnxruntime-library") {
            libs.push(PathBuf::from(p));
        }
        if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
            if !p.is_empty() {
                libs.push(PathBuf::from(p));
            }
        }
        libs.push(backend.backend_dir.join("libonnxruntime.so"));
        libs.push(PathBuf::from("libonnxruntime.so"));

        let trt_accel = cfg.gpu_accelerators.iter().any(|a| a.name == "tensorrt");
        let ort_gpu_provider = match cfg.parameter("onnxruntime_execution_provider") {
            None if trt_accel => OrtGpuProvider::TensorRt,
            None | Some("cuda") => OrtGpuProvider::Cuda,
            Some("tensorrt") => OrtGpuProvider::TensorRt,
            Some(other) => {
                return Err(ctx(Error::invalid_arg(format!(
                    "parameter 'onnxruntime_execution_provider': expected cuda or tensorrt, got '{other}'"
                ))))
            }
        };
        let intra_op_threads = match cfg.parameter("intra_op_thread_count") {
            None => None,
            Some(s) => match s.parse::<usize>() {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(ctx(Error::invalid_arg(format!(
                        "parameter 'intra_op_thread_count': expected a number, got '{s}'"
                    ))))
                }
            },
        };
        Ok(ModelParams {
            engine,
            precision,
            ort_library_candidates: libs,
            ort_gpu_provider,
            intra_op_threads,
        })
    }

    /// The precision for a device: as configured, else FP16 on GPU and FP32 on CPU.
    pub fn precision_for(&self, device: Device) -> Precision {
        self.precision.unwrap_or(match device {
            Device::Gpu(_) => Precision::Fp16,
            Device::Cpu => Precision::Fp32,
        })
    }
}

fn accelerator_param<'a>(cfg: &'a ModelConfig, key: &str) -> Option<&'a str> {
    cfg.gpu_accelerators
        .iter()
        .find(|a| a.name == "tensorrt")
        .and_then(|a| a.parameters.get(key))
        .map(String::as_str)
}

/// Reads an optional boolean parameter.
pub fn bool_param(cfg: &ModelConfig, key: &str, default: bool) -> Result<bool> {
    cfg.parameter(key)
        .map(|v| parse_bool(key, v))
        .unwrap_or(Ok(default))
}

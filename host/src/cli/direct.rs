//! The engine of a model run directly in this process, without the Triton API: the reference the
//! benchmark's backend overhead is measured against. Same model file, same precision (the same
//! FP16 conversion), same ONNX Runtime library and execution provider, same device; inputs are
//! placed once where the engine reads them (device memory on a GPU).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;
use triton_rusttrt::cuda::{Device as CudaDevice, DeviceBuffer, Stream};
use triton_rusttrt::engine::ort::{ExecutionProvider, OrtFactory};
use triton_rusttrt::engine::{
    BuildSpec, Device, Engine, EngineFactory, MemLoc, Precision, Runner, TensorRef,
};
use triton_rusttrt::types::DataType;

use crate::error::{Error, Result};

pub struct DirectEngine {
    engine: std::sync::Arc<dyn Engine>,
    runner: Box<dyn Runner>,
    device: Device,
    stream: Option<Stream>,
    cuda: Option<CudaDevice>,
    buffers: Vec<DeviceBuffer>,
    outputs: Vec<String>,
}

fn param<'a>(cfg: &'a Value, key: &str) -> Option<&'a str> {
    cfg["parameters"][key]["string_value"]
        .as_str()
        .filter(|s| !s.is_empty())
}

impl DirectEngine {
    pub fn new(
        repo: &Path,
        model: &str,
        cfg: &Value,
        backend_config: &[(String, String)],
    ) -> Result<DirectEngine> {
        let kind = cfg["instance_group"][0]["kind"]
            .as_str()
            .unwrap_or("KIND_CPU");
        let device = if kind == "KIND_GPU" {
            Device::Gpu(cfg["instance_group"][0]["gpus"][0].as_i64().unwrap_or(0) as i32)
        } else {
            Device::Cpu
        };
        let precision = match param(cfg, "precision_mode")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("FP16") => Precision::Fp16,
            Some("FP32") => Precision::Fp32,
            _ if matches!(device, Device::Gpu(_)) => Precision::Fp16,
            _ => Precision::Fp32,
        };
        let dir = repo.join(model);
        let version = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
            .max()
            .ok_or_else(|| {
                Error::not_found(format!("no version directory in {}", dir.display()))
            })?;
        let file = cfg["default_model_filename"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("model.onnx");
        let path = dir.join(version.to_string()).join(file);
        let mut libs: Vec<PathBuf> = backend_config
            .iter()
            .filter(|(k, _)| k == "onnxruntime-library")
            .map(|(_, v)| PathBuf::from(v))
            .collect();
        if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
            libs.push(p.into());
        }
        let rt = triton_rusttrt::engine::ort::runtime(&libs).map_err(Error::from)?;
        let ep = if matches!(device, Device::Gpu(_)) {
            ExecutionProvider::Cuda
        } else {
            ExecutionProvider::Cpu
        };
        let threads = param(cfg, "intra_op_thread_count")
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n > 0);
        let factory = OrtFactory::new(rt, ep, threads);
        let spec = BuildSpec {
            model_name: format!("{model} (direct)"),
            model_path: path.clone(),
            precision,
            device,
            max_batch_size: cfg["max_batch_size"].as_u64().unwrap_or(0) as usize,
            opt_batch_sizes: Vec::new(),
            // The model's parameters, as the backend passes them (CUDA graph sizes among them).
            options: cfg["parameters"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| {
                            v["string_value"]
                                .as_str()
                                .map(|s| (k.clone(), s.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        let engine = if precision == Precision::Fp16 {
            let m = triton_rusttrt::onnx::load_with_external_data(&path).map_err(Error::from)?;
            let mut o = triton_rusttrt::onnx::fp16::Fp16Options::default();
            if let Some(list) = param(cfg, "fp16_keep_fp32_ops") {
                o.keep_fp32_ops = list
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            let (conv, _) =
                triton_rusttrt::onnx::fp16::convert_to_fp16(&m, &o).map_err(Error::from)?;
            let bytes = factory
                .build(&spec, &conv.to_bytes().map_err(Error::from)?)
                .map_err(Error::from)?;
            factory.load(&spec, Some(&bytes)).map_err(Error::from)?
        } else {
            factory.load(&spec, None).map_err(Error::from)?
        };
        let (cuda, stream) = match device {
            Device::Gpu(d) => {
                let dev = CudaDevice::open(d as usize).map_err(Error::from)?;
                dev.bind_to_thread().map_err(Error::from)?;
                let s = dev.new_stream().map_err(Error::from)?;
                (Some(dev), Some(s))
            }
            Device::Cpu => (None, None),
        };
        let runner = engine.create_runner(stream.as_ref()).map_err(Error::from)?;
        let outputs = cfg["output"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|o| o["name"].as_str().map(str::to_string))
            .collect();
        Ok(DirectEngine {
            engine,
            runner,
            device,
            stream,
            cuda,
            buffers: Vec::new(),
            outputs,
        })
    }

    pub fn describe(&self) -> String {
        self.engine.describe()
    }

    /// Milliseconds of each of `iters` engine runs on these tensors (placed once beforehand).
    pub fn times_ms(
        &mut self,
        tensors: &[(String, u32, Vec<i64>, Vec<u8>)],
        iters: usize,
        warmup: usize,
    ) -> Result<Vec<f64>> {
        let mut locs = Vec::new();
        if let (Some(dev), Some(stream)) = (&self.cuda, &self.stream) {
            self.buffers.clear();
            for (_, _, _, bytes) in tensors {
                let mut b = DeviceBuffer::new(dev, bytes.len().max(1)).map_err(Error::from)?;
                stream
                    .copy_htod_pageable(bytes, &mut b, 0)
                    .map_err(Error::from)?;
                self.buffers.push(b);
            }
            stream.synchronize().map_err(Error::from)?;
            for b in &self.buffers {
                locs.push((b.ptr() as *const u8, MemLoc::Device(dev.ordinal() as i32)));
            }
        } else {
            for (_, _, _, bytes) in tensors {
                locs.push((bytes.as_ptr(), MemLoc::Host));
            }
        }
        let refs: Vec<TensorRef<'_>> = tensors
            .iter()
            .zip(&locs)
            .map(|((name, dt, shape, bytes), (ptr, loc))| TensorRef {
                name,
                dtype: DataType::from_triton(*dt).unwrap_or(DataType::F32),
                shape,
                ptr: *ptr,
                bytes: bytes.len(),
                loc: *loc,
                _lt: std::marker::PhantomData,
            })
            .collect();
        let names: Vec<&str> = self.outputs.iter().map(String::as_str).collect();
        let mut times = Vec::with_capacity(iters);
        for i in 0..warmup + iters {
            let t = Instant::now();
            self.runner.run(&refs, &names).map_err(Error::from)?;
            if let Some(s) = &self.stream {
                s.synchronize().map_err(Error::from)?;
            }
            if i >= warmup {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let _ = self.device;
        Ok(times)
    }
}

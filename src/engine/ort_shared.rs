//! One device copy of a model's weights for every CUDA session of an engine on a GPU: each
//! instance's session (and each CUDA-graph session) is given the same device tensors as
//! pre-allocated initializers (ONNX Runtime's `AddInitializer`), instead of uploading its own.

use crate::cuda::{Device as CudaDevice, DeviceBuffer};
use crate::error::{Error, Result};
use crate::onnx::OnnxModel;
use crate::types::DataType;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::value::DynValue;
use ort::AsPointer;
use std::ptr::NonNull;
use std::sync::Arc;

/// Initializers smaller than this stay in the model (shape constants, scalars): sharing them
/// saves nothing and ONNX Runtime folds them on the host.
const MIN_SHARED_BYTES: usize = 4096;

/// Device tensors shared by every session of one engine.
pub struct SharedWeights {
    // Values before the buffers they point into (drop order).
    pub values: Vec<(String, Arc<DynValue>)>,
    _buffers: Vec<DeviceBuffer>,
    pub bytes: usize,
}

// SAFETY: the values only refer to device memory owned by `_buffers`; nothing here is tied to a
// thread, and sessions read the tensors concurrently only through ONNX Runtime, which treats
// initializers as immutable.
unsafe impl Send for SharedWeights {}
// SAFETY: as for Send: shared access never mutates.
unsafe impl Sync for SharedWeights {}

fn raw_bytes(t: &crate::onnx::TensorProto) -> Option<Vec<u8>> {
    if let Some(r) = t.raw_data.as_ref().filter(|r| !r.is_empty()) {
        return Some(r.clone());
    }
    if !t.float_data.is_empty() && t.data_type() == 1 {
        return Some(t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    if !t.int64_data.is_empty() && t.data_type() == 7 {
        return Some(t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    None
}

impl SharedWeights {
    /// Uploads every large initializer of the main graph to device `ordinal`.
    pub fn upload(model: &OnnxModel, ordinal: i32) -> Result<SharedWeights> {
        let dev = CudaDevice::open(ordinal as usize)?;
        let stream = dev.new_stream()?;
        let info = MemoryInfo::new(
            AllocationDevice::CUDA,
            ordinal,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(|e| Error::internal(format!("CUDA memory info: {e}")))?;
        let host_allocator = ort::memory::Allocator::default();
        let (mut values, mut buffers, mut total) = (Vec::new(), Vec::new(), 0usize);
        for t in &model.graph().initializer {
            let Some(dtype) = DataType::from_onnx(t.data_type()).filter(|d| *d != DataType::Bytes)
            else {
                continue;
            };
            let Some(bytes) = raw_bytes(t) else { continue };
            let count = crate::types::element_count(&t.dims).unwrap_or(usize::MAX);
            if bytes.len() < MIN_SHARED_BYTES
                || count.checked_mul(dtype.byte_size()) != Some(bytes.len())
            {
                continue;
            }
            let mut buf = DeviceBuffer::new(&dev, bytes.len())?;
            stream.copy_htod_pageable(&bytes, &mut buf, 0)?;
            let ty: ort::sys::ONNXTensorElementDataType =
                super::ort_graphs::element_type(dtype)?.into();
            let mut raw = std::ptr::null_mut();
            // SAFETY: `buf` holds exactly `bytes.len()` bytes of device memory on `ordinal`,
            // described by `info`, and outlives the value (field order); the shape matches it.
            super::ort_graphs::status("CreateTensorWithDataAsOrtValue", unsafe {
                (ort::api().CreateTensorWithDataAsOrtValue)(
                    info.ptr(),
                    buf.as_mut_ptr(),
                    bytes.len(),
                    t.dims.as_ptr(),
                    t.dims.len(),
                    ty,
                    &mut raw,
                )
            })?;
            let ptr = NonNull::new(raw)
                .ok_or_else(|| Error::internal("CreateTensorWithDataAsOrtValue returned null"))?;
            // SAFETY: a new OrtValue we own. Its data belongs to no allocator (we own it, in
            // `buf`); `ort` insists on an allocator handle for tensor values and only keeps it
            // alive, so the default one is given (releasing the value never frees the data).
            let value: DynValue = unsafe { DynValue::from_ptr(ptr, Some(&host_allocator)) };
            total += bytes.len();
            values.push((t.name().to_string(), Arc::new(value)));
            buffers.push(buf);
        }
        stream.synchronize()?;
        Ok(SharedWeights {
            values,
            _buffers: buffers,
            bytes: total,
        })
    }
}

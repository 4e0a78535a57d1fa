//! The backend's cuda layer behind the TensorRT engine's [`GpuRuntime`] seam.

use super::{GpuBuffer, GpuRuntime, GpuStream};
use crate::cuda::{Device, DeviceBuffer, Stream};
use crate::error::Result;
use std::ffi::c_void;

/// [`GpuRuntime`] over `crate::cuda`.
pub struct CudaRuntime;

fn device(ordinal: i32) -> Result<Device> {
    Device::open(usize::try_from(ordinal).unwrap_or(usize::MAX))
}

impl GpuRuntime for CudaRuntime {
    fn set_device(&self, ordinal: i32) -> Result<()> {
        device(ordinal)?.bind_to_thread()
    }
    fn device_identity(&self, ordinal: i32) -> Result<String> {
        Ok(device(ordinal)?.info().cache_identity())
    }
    fn create_stream(&self, ordinal: i32) -> Result<Box<dyn GpuStream>> {
        Ok(Box::new(CudaStream(device(ordinal)?.new_stream()?)))
    }
    fn alloc(&self, ordinal: i32, bytes: usize) -> Result<Box<dyn GpuBuffer>> {
        Ok(Box::new(CudaBuffer(DeviceBuffer::new(
            &device(ordinal)?,
            bytes.max(1),
        )?)))
    }
}

/// A cuda-layer stream as TensorRT's [`GpuStream`].
pub struct CudaStream(pub Stream);

impl GpuStream for CudaStream {
    fn as_raw(&self) -> *mut c_void {
        self.0.cu_stream()
    }
    unsafe fn copy_htod(&self, dst: *mut c_void, src: *const u8, bytes: usize) -> Result<()> {
        // SAFETY: the caller's contract (GpuStream::copy_htod) is the cuda layer's.
        unsafe { self.0.copy_htod_raw(dst as u64, src, bytes) }
    }
    unsafe fn copy_dtod(&self, dst: *mut c_void, src: *const c_void, bytes: usize) -> Result<()> {
        // SAFETY: the caller's contract (GpuStream::copy_dtod) is the cuda layer's.
        unsafe { self.0.copy_dtod_raw(dst as u64, src as u64, bytes) }
    }
    fn synchronize(&self) -> Result<()> {
        self.0.synchronize()
    }
}

struct CudaBuffer(DeviceBuffer);

impl GpuBuffer for CudaBuffer {
    fn as_ptr(&self) -> *mut c_void {
        self.0.as_mut_ptr()
    }
    fn byte_len(&self) -> usize {
        self.0.len()
    }
}

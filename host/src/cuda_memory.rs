//! GPU memory for the host through the backend crate's cuda layer (libcuda loaded at run time):
//! the device buffers that clients place inputs in (CUDA shared memory in a real Triton) and that
//! GPU-preferring clients receive outputs in.

use std::collections::HashMap;
use std::sync::Mutex;

use triton_rusttrt::cuda::{Device, DeviceBuffer, PinnedBuffer, Stream};

use crate::error::{Error, Result};
use crate::memory::DeviceMemory;

/// [`DeviceMemory`] over real CUDA devices.
pub struct CudaMemory {
    devices: Vec<(Device, Stream)>,
    buffers: Mutex<HashMap<usize, DeviceBuffer>>,
    pinned: Mutex<HashMap<usize, PinnedBuffer>>,
}

impl CudaMemory {
    /// Opens devices `0..count`.
    pub fn new(count: usize) -> Result<CudaMemory> {
        let have = triton_rusttrt::cuda::device_count().map_err(Error::from)?;
        if count > have {
            return Err(Error::unavailable(format!(
                "{count} GPU(s) asked for, the driver sees {have}"
            )));
        }
        let devices = (0..count)
            .map(|i| {
                let d = Device::open(i).map_err(Error::from)?;
                let s = d.new_stream().map_err(Error::from)?;
                Ok((d, s))
            })
            .collect::<Result<_>>()?;
        Ok(CudaMemory {
            devices,
            buffers: Mutex::new(HashMap::new()),
            pinned: Mutex::new(HashMap::new()),
        })
    }

    fn stream(&self, device: i64) -> Result<&Stream> {
        self.devices
            .get(usize::try_from(device).unwrap_or(usize::MAX))
            .map(|(_, s)| s)
            .ok_or_else(|| Error::unsupported(format!("no GPU with id {device}")))
    }
}

impl DeviceMemory for CudaMemory {
    fn device_count(&self) -> usize {
        self.devices.len()
    }
    fn alloc(&self, device: i64, size: usize) -> Result<*mut u8> {
        let (d, _) = &self.devices
            [usize::try_from(device).map_err(|_| Error::invalid_arg("negative device"))?];
        let b = DeviceBuffer::new(d, size.max(1)).map_err(Error::from)?;
        let p = b.ptr() as usize;
        self.buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(p, b);
        Ok(p as *mut u8)
    }
    fn free(&self, _device: i64, ptr: *mut u8, _size: usize) {
        self.buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(ptr as usize));
    }
    fn alloc_pinned(&self, size: usize) -> Option<Result<*mut u8>> {
        let (d, _) = self.devices.first()?;
        Some(PinnedBuffer::new(d, size).map_err(Error::from).map(|b| {
            let p = b.host_ptr();
            self.pinned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(p as usize, b);
            p
        }))
    }
    fn free_pinned(&self, ptr: *mut u8) {
        self.pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(ptr as usize));
    }
    fn copy_to_device(&self, device: i64, dst: *mut u8, src: &[u8]) -> Result<()> {
        let s = self.stream(device)?;
        // SAFETY: `dst` was allocated by `alloc` with at least `src.len()` bytes (the host's
        // buffers copy exactly their length); the stream is synchronized before returning.
        unsafe { s.copy_htod_raw(dst as u64, src.as_ptr(), src.len()) }.map_err(Error::from)?;
        s.synchronize().map_err(Error::from)
    }
    fn copy_to_host(&self, device: i64, dst: &mut [u8], src: *const u8) -> Result<()> {
        let s = self.stream(device)?;
        // SAFETY: `src` is a live device allocation of at least `dst.len()` bytes; synchronized
        // before returning.
        unsafe { s.copy_dtoh_raw(dst.as_mut_ptr(), src as u64, dst.len()) }.map_err(Error::from)?;
        s.synchronize().map_err(Error::from)
    }
}

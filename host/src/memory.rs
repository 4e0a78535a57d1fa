//! Host memory: plain CPU buffers, page-locked (pinned) CPU buffers and a seam for GPU memory.
//!
//! Without a GPU (CI, this machine) `GPU` allocations fail with `UNSUPPORTED`, exactly as
//! Triton's memory manager answers for a memory type it can never serve.
//!
//! TODO(gpu): implement [`DeviceMemory`] with real CUDA (e.g. `cudarc` with dynamic loading:
//! `cuMemAlloc`/`cuMemFree`, `cuMemcpyHtoD`/`DtoH`) and pass it to [`MemoryPool::new`] when
//! `ServerOptions::gpu_count > 0`. Everything else (input chunks, output buffers, the
//! backend memory manager) already routes GPU requests through that trait.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::Arc;

use triton_abi::*;

use crate::error::{Error, Result};

/// Where a buffer lives (values equal `TRITONSERVER_MemoryType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MemoryType {
    /// Pageable host memory.
    #[default]
    Cpu,
    /// Page-locked host memory.
    CpuPinned,
    /// Device memory.
    Gpu,
}

impl MemoryType {
    /// The C enum value.
    pub fn raw(self) -> TRITONSERVER_MemoryType {
        match self {
            MemoryType::Cpu => TRITONSERVER_MEMORY_CPU,
            MemoryType::CpuPinned => TRITONSERVER_MEMORY_CPU_PINNED,
            MemoryType::Gpu => TRITONSERVER_MEMORY_GPU,
        }
    }
    /// From the C enum value; `None` for out-of-range values.
    pub fn from_raw(v: TRITONSERVER_MemoryType) -> Option<Self> {
        match v {
            TRITONSERVER_MEMORY_CPU => Some(MemoryType::Cpu),
            TRITONSERVER_MEMORY_CPU_PINNED => Some(MemoryType::CpuPinned),
            TRITONSERVER_MEMORY_GPU => Some(MemoryType::Gpu),
            _ => None,
        }
    }
    /// Whether host code may read/write the bytes directly.
    pub fn is_host(self) -> bool {
        !matches!(self, MemoryType::Gpu)
    }
}

impl std::str::FromStr for MemoryType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(MemoryType::Cpu),
            "pinned" | "cpu_pinned" => Ok(MemoryType::CpuPinned),
            "gpu" => Ok(MemoryType::Gpu),
            other => Err(format!(
                "unknown memory type '{other}' (expected cpu, pinned or gpu)"
            )),
        }
    }
}

/// Device memory provider (the GPU seam). Pointers are device addresses.
pub trait DeviceMemory: Send + Sync {
    /// Number of devices served.
    fn device_count(&self) -> usize;
    /// Allocate `size` bytes on `device`.
    fn alloc(&self, device: i64, size: usize) -> Result<*mut u8>;
    /// Free what `alloc` returned.
    fn free(&self, device: i64, ptr: *mut u8, size: usize);
    /// Copy host → device.
    fn copy_to_device(&self, device: i64, dst: *mut u8, src: &[u8]) -> Result<()>;
    /// Copy device → host.
    fn copy_to_host(&self, device: i64, dst: &mut [u8], src: *const u8) -> Result<()>;
    /// Page-locked host memory the devices can copy from asynchronously (cudaHostAlloc), as
    /// Triton's pinned pool holds; `None` = not offered (mlock'd memory is used instead).
    fn alloc_pinned(&self, _size: usize) -> Option<Result<*mut u8>> {
        None
    }
    /// Free what `alloc_pinned` returned.
    fn free_pinned(&self, _ptr: *mut u8) {}
}

const ALIGN: usize = 256;

/// An owned buffer in one memory type. Host buffers are zero-initialised and 256-byte aligned;
/// a zero-byte buffer still has a valid, unique pointer.
pub struct Buffer {
    ptr: *mut u8,
    len: usize,
    cap: usize,
    mtype: MemoryType,
    id: i64,
    locked: bool,
    device: Option<Arc<dyn DeviceMemory>>,
}

// SAFETY: a Buffer exclusively owns its allocation (like a Box<[u8]>); the raw pointer is only
// a handle to that allocation, so moving it to or sharing it with another thread is sound.
// Mutation goes through `&mut self`.
unsafe impl Send for Buffer {}
// SAFETY: see `Send`; `&Buffer` only allows reading the bytes.
unsafe impl Sync for Buffer {}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({:?}:{} {} bytes)", self.mtype, self.id, self.len)
    }
}

impl Buffer {
    fn host(len: usize, pinned: bool) -> Result<Buffer> {
        let cap = len.max(1).div_ceil(ALIGN) * ALIGN;
        let layout = Layout::from_size_align(cap, ALIGN)
            .map_err(|e| Error::invalid_arg(format!("cannot allocate {len} bytes: {e}")))?;
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::unavailable(format!(
                "out of host memory allocating {len} bytes"
            )));
        }
        let mut locked = false;
        if pinned {
            // SAFETY: ptr..ptr+cap is our own live allocation.
            locked = unsafe { libc::mlock(ptr as *const libc::c_void, cap) } == 0;
        }
        Ok(Buffer {
            ptr,
            len,
            cap,
            mtype: if pinned {
                MemoryType::CpuPinned
            } else {
                MemoryType::Cpu
            },
            id: 0,
            locked,
            device: None,
        })
    }

    /// Pointer to the first byte (a device address for GPU buffers).
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the buffer holds zero bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Memory type.
    pub fn memory_type(&self) -> MemoryType {
        self.mtype
    }
    /// Memory type id (device ordinal for GPU, 0 otherwise).
    pub fn memory_type_id(&self) -> i64 {
        self.id
    }
    /// Whether a pinned buffer really is page-locked (mlock succeeded).
    pub fn is_page_locked(&self) -> bool {
        self.locked
    }
    /// Host view of the bytes (None for GPU memory).
    pub fn as_slice(&self) -> Option<&[u8]> {
        if self.mtype.is_host() {
            // SAFETY: host buffers own `cap >= len` initialised bytes at `ptr`.
            Some(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
        } else {
            None
        }
    }
    /// Mutable host view of the bytes (None for GPU memory).
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if self.mtype.is_host() {
            // SAFETY: as in `as_slice`, and `&mut self` gives exclusive access.
            Some(unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) })
        } else {
            None
        }
    }
    /// Copy the contents to a Vec (through the device provider for GPU memory).
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        match (&self.device, self.as_slice()) {
            (_, Some(s)) => Ok(s.to_vec()),
            (Some(dev), None) => {
                let mut v = vec![0u8; self.len];
                dev.copy_to_host(self.id, &mut v, self.ptr)?;
                Ok(v)
            }
            (None, None) => Err(Error::internal("GPU buffer without a device provider")),
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(dev) = &self.device {
            if self.mtype == MemoryType::Gpu {
                dev.free(self.id, self.ptr, self.len);
            } else {
                dev.free_pinned(self.ptr);
            }
            return;
        }
        if self.locked {
            // SAFETY: the range was locked by us in `host`.
            unsafe { libc::munlock(self.ptr as *const libc::c_void, self.cap) };
        }
        // SAFETY: allocated in `host` with exactly this layout.
        unsafe { dealloc(self.ptr, Layout::from_size_align_unchecked(self.cap, ALIGN)) };
    }
}

/// Allocator for all host-side buffers.
#[derive(Clone, Default)]
pub struct MemoryPool {
    device: Option<Arc<dyn DeviceMemory>>,
}

impl MemoryPool {
    /// A pool; `device` = None means "no GPU".
    pub fn new(device: Option<Arc<dyn DeviceMemory>>) -> Self {
        MemoryPool { device }
    }
    /// Number of usable GPUs.
    pub fn gpu_count(&self) -> usize {
        self.device.as_ref().map_or(0, |d| d.device_count())
    }
    /// Allocate `len` zeroed bytes in `mtype`/`id`.
    pub fn alloc(&self, mtype: MemoryType, id: i64, len: usize) -> Result<Buffer> {
        match mtype {
            MemoryType::Cpu => Buffer::host(len, false),
            MemoryType::CpuPinned => match self
                .device
                .as_ref()
                .and_then(|d| d.alloc_pinned(len.max(1)))
            {
                Some(ptr) => {
                    let ptr = ptr?;
                    // SAFETY: `alloc_pinned` returned `len.max(1)` writable host bytes.
                    unsafe { std::ptr::write_bytes(ptr, 0, len.max(1)) };
                    Ok(Buffer {
                        ptr,
                        len,
                        cap: len.max(1),
                        mtype,
                        id: 0,
                        locked: true,
                        device: self.device.clone(),
                    })
                }
                None => Buffer::host(len, true),
            },
            MemoryType::Gpu => {
                let dev = self.device.as_ref().ok_or_else(|| {
                    Error::unsupported(format!(
                        "GPU memory (device {id}) requested but the host has no GPU"
                    ))
                })?;
                if id < 0 || id as usize >= dev.device_count() {
                    return Err(Error::unsupported(format!("no GPU with id {id}")));
                }
                let ptr = dev.alloc(id, len)?;
                Ok(Buffer {
                    ptr,
                    len,
                    cap: len,
                    mtype,
                    id,
                    locked: false,
                    device: Some(dev.clone()),
                })
            }
        }
    }
    /// Allocate and fill with `data`.
    pub fn alloc_from(&self, mtype: MemoryType, id: i64, data: &[u8]) -> Result<Buffer> {
        let mut b = self.alloc(mtype, id, data.len())?;
        if let Some(s) = b.as_mut_slice() {
            s.copy_from_slice(data);
        } else if let Some(dev) = &self.device {
            dev.copy_to_device(id, b.ptr, data)?;
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_buffers_roundtrip_and_gpu_is_unsupported() {
        let pool = MemoryPool::default();
        let b = pool
            .alloc_from(MemoryType::CpuPinned, 0, &[1, 2, 3])
            .unwrap();
        assert_eq!(b.memory_type(), MemoryType::CpuPinned);
        assert_eq!(b.to_vec().unwrap(), vec![1, 2, 3]);
        assert_eq!(b.ptr() as usize % ALIGN, 0);
        let z = pool.alloc(MemoryType::Cpu, 0, 0).unwrap();
        assert!(!z.ptr().is_null());
        let e = pool.alloc(MemoryType::Gpu, 0, 16).unwrap_err();
        assert_eq!(e.code, TRITONSERVER_ERROR_UNSUPPORTED);
    }
}

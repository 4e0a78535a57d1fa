//! Device buffers, pinned host buffers, and copies between them on a stream.
//!
//! Ordering: a copy is queued on the stream it is called on and runs after the work queued there
//! before it. Copies to or from a [`PinnedBuffer`] are asynchronous; the buffer remembers the last
//! copy (an event), and [`PinnedBuffer::as_slice`] / [`PinnedBuffer::as_mut_slice`] wait for it,
//! so the host never sees memory the device is still writing or reading. Copies to or from plain
//! host slices (`*_pageable`) block until done. Device-to-device copies are asynchronous; device
//! memory is never touched by the host, and freeing it waits for the device.

use std::ffi::c_void;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Mutex;

use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::driver::CudaEvent;

use super::{err, guard, Device, Stream};
use crate::error::{Error, Result};

/// Checks that `offset..offset + bytes` lies within a buffer of `len` bytes.
fn check_range(what: &str, offset: usize, bytes: usize, len: usize) -> Result<()> {
    match offset.checked_add(bytes) {
        Some(end) if end <= len => Ok(()),
        _ => Err(Error::invalid_arg(format!(
            "CUDA copy: {what} range {offset}..{} (of {bytes} bytes) is outside its {len}-byte buffer",
            offset as u128 + bytes as u128
        ))),
    }
}

/// An owned device allocation of `len` bytes (uninitialised). Freed on drop, after the device has
/// finished its queued work.
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    len: usize,
    device: Device,
    /// Other devices whose streams queued peer copies touching this buffer: freeing waits for
    /// them too.
    peer_users: Mutex<Vec<Device>>,
}

impl fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("device", &self.device.ordinal())
            .field("ptr", &format_args!("{:#x}", self.ptr))
            .field("len", &self.len)
            .finish()
    }
}

impl DeviceBuffer {
    /// Allocates `len` bytes on `device` (`cuMemAlloc`; no allocation for 0 bytes).
    pub fn new(device: &Device, len: usize) -> Result<DeviceBuffer> {
        let ptr = guard("DeviceBuffer::new", || alloc_device(device, len))?;
        Ok(DeviceBuffer {
            ptr,
            len,
            device: device.clone(),
            peer_users: Mutex::new(Vec::new()),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The device address (`CUdeviceptr`); 0 for an empty buffer. Valid until the buffer is
    /// dropped or grown by [`DeviceBuffer::ensure`].
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// The device address as a pointer, as ONNX Runtime and TensorRT take it. Never dereference
    /// it on the host.
    pub fn as_mut_ptr(&self) -> *mut c_void {
        self.ptr as usize as *mut c_void
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes the buffer hold at least `len` bytes. A buffer already big enough is left alone
    /// (`Ok(false)`); otherwise it waits for the device, frees the old memory and allocates `len`
    /// bytes: the address changes and the old contents are lost (`Ok(true)`). Meant for buffers
    /// sized for the largest batch and reused. On failure the buffer is left empty.
    pub fn ensure(&mut self, len: usize) -> Result<bool> {
        if len <= self.len {
            return Ok(false);
        }
        guard("DeviceBuffer::ensure", || {
            self.wait_peer_users()?;
            free_device(&self.device, std::mem::replace(&mut self.ptr, 0))?;
            self.len = 0;
            self.ptr = alloc_device(&self.device, len)?;
            self.len = len;
            Ok(true)
        })
        .map_err(|e| {
            e.context(format!(
                "growing a device buffer to {len} bytes on device {}",
                self.device.ordinal()
            ))
        })
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        let _ = guard("DeviceBuffer::drop", || {
            // If waiting fails the memory is leaked rather than freed under queued work.
            self.wait_peer_users()?;
            free_device(&self.device, std::mem::replace(&mut self.ptr, 0))
        });
    }
}

impl DeviceBuffer {
    fn peer_users(&self) -> std::sync::MutexGuard<'_, Vec<Device>> {
        // The list stays consistent even if a holder panicked: entries are whole values.
        self.peer_users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that a stream of `device` queued work on this buffer.
    fn add_peer_user(&self, device: &Device) {
        if device != &self.device {
            let mut users = self.peer_users();
            if !users.contains(device) {
                users.push(device.clone());
            }
        }
    }

    /// Waits for the other devices that queued peer copies on this buffer.
    fn wait_peer_users(&self) -> Result<()> {
        let users = std::mem::take(&mut *self.peer_users());
        for d in &users {
            d.sync_raw("waiting for a peer device before freeing memory")?;
        }
        Ok(())
    }
}

fn alloc_device(device: &Device, len: usize) -> Result<sys::CUdeviceptr> {
    if len == 0 {
        return Ok(0);
    }
    device.bind()?;
    // SAFETY: the context is current; the memory is left uninitialised, which is fine for bytes
    // only ever read by the device after being written.
    unsafe { cu::malloc_sync(len) }.map_err(|e| {
        super::driver_error(
            &format!(
                "allocating {len} bytes on device {} (cuMemAlloc)",
                device.ordinal()
            ),
            e,
        )
    })
}

/// Waits for the device, then frees `ptr` (0: nothing to free).
fn free_device(device: &Device, ptr: sys::CUdeviceptr) -> Result<()> {
    if ptr == 0 {
        return Ok(());
    }
    // Any stream of this context may still use the memory: wait for all of them.
    device.sync_raw("waiting for the device before freeing memory")?;
    // SAFETY: `ptr` came from cuMemAlloc on this context, is freed once (the owner forgot it), and
    // no queued work uses it any more (synchronised above).
    unsafe { cu::free_sync(ptr) }.map_err(err("freeing device memory (cuMemFree)"))
}

/// Page-locked host memory of `len` bytes, for fast asynchronous copies. Its contents are read
/// and written through [`PinnedBuffer::as_slice`] / [`PinnedBuffer::as_mut_slice`], which first
/// wait for the last copy that used the buffer.
pub struct PinnedBuffer {
    ptr: NonNull<u8>,
    len: usize,
    /// Recorded after every copy that uses the buffer; waited for before host access and free.
    last_use: CudaEvent,
    device: Device,
}

// SAFETY: the buffer owns its allocation (no aliasing owner); host access goes through `&self` /
// `&mut self` borrows as for a `Vec<u8>`, after waiting for the device's last use. The event and
// the device handle are Send + Sync themselves.
unsafe impl Send for PinnedBuffer {}
// SAFETY: shared access only yields `&[u8]` (after waiting for device writes); mutation needs
// `&mut self`.
unsafe impl Sync for PinnedBuffer {}

impl fmt::Debug for PinnedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedBuffer")
            .field("device", &self.device.ordinal())
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

impl PinnedBuffer {
    /// Allocates `len` zeroed bytes of page-locked host memory (`cuMemHostAlloc`, portable to all
    /// contexts, not write-combined, so the host reads it at full speed), tracked by `device`.
    pub fn new(device: &Device, len: usize) -> Result<PinnedBuffer> {
        guard("PinnedBuffer::new", || {
            device.bind()?;
            let last_use = device
                .ctx()
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
                .map_err(err("creating a pinned buffer's event"))?;
            let ptr = alloc_pinned(len)?;
            Ok(PinnedBuffer {
                ptr,
                len,
                last_use,
                device: device.clone(),
            })
        })
        .map_err(|e| e.context(format!("allocating {len} bytes of pinned host memory")))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host address, e.g. to hand to Triton as an output buffer. Writing or reading through
    /// it while a copy is queued is a data race: call [`PinnedBuffer::wait`] first.
    pub fn host_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// `wait` without the panic guard.
    fn wait_raw(&self) -> Result<()> {
        self.device.bind()?;
        // SAFETY: the event is alive (owned by `self`) and belongs to the bound context.
        unsafe { cu::event::synchronize(self.last_use.cu_event()) }.map_err(err(
            "waiting for the last copy of a pinned buffer (cuEventSynchronize)",
        ))
    }

    /// Blocks until the last copy that used this buffer has finished.
    pub fn wait(&self) -> Result<()> {
        guard("PinnedBuffer::wait", || self.wait_raw())
    }

    /// The contents, after waiting for the last copy that used the buffer.
    pub fn as_slice(&self) -> Result<&[u8]> {
        self.wait()?;
        // SAFETY: `ptr` points to `len` initialised bytes owned by `self` (zeroed at allocation);
        // no device copy uses them any more (waited above), and none can be queued while this
        // shared borrow lives, since queuing a write needs `&mut self`.
        // Copies that read the buffer may be queued meanwhile; reading concurrently is fine.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) })
    }

    /// The contents for writing, after waiting for the last copy that used the buffer.
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        self.wait()?;
        // SAFETY: as in `as_slice`; `&mut self` excludes any other borrow or queued copy while the
        // returned slice lives.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) })
    }

    /// Makes the buffer hold at least `len` bytes (same contract as [`DeviceBuffer::ensure`]; the
    /// new memory is zeroed).
    pub fn ensure(&mut self, len: usize) -> Result<bool> {
        if len <= self.len {
            return Ok(false);
        }
        guard("PinnedBuffer::ensure", || {
            self.wait_raw()?;
            let old = std::mem::replace(&mut self.ptr, NonNull::dangling());
            let old_len = std::mem::replace(&mut self.len, 0);
            free_pinned(old, old_len)?;
            self.ptr = alloc_pinned(len)?;
            self.len = len;
            Ok(true)
        })
        .map_err(|e| e.context(format!("growing a pinned buffer to {len} bytes")))
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        let _ = guard("PinnedBuffer::drop", || {
            // Never free memory a copy may still use: if waiting fails, leak it instead.
            self.wait_raw()?;
            free_pinned(self.ptr, self.len)
        });
    }
}

fn alloc_pinned(len: usize) -> Result<NonNull<u8>> {
    if len == 0 {
        return Ok(NonNull::dangling());
    }
    // SAFETY: plain allocation; the memory is zeroed below before any read.
    let p = unsafe { cu::malloc_host(len, sys::CU_MEMHOSTALLOC_PORTABLE) }
        .map_err(err("allocating pinned host memory (cuMemHostAlloc)"))?;
    let p = NonNull::new(p as *mut u8)
        .ok_or_else(|| Error::internal("cuMemHostAlloc returned null"))?;
    // SAFETY: `p` points to `len` writable bytes just allocated and not shared yet.
    unsafe { std::ptr::write_bytes(p.as_ptr(), 0, len) };
    Ok(p)
}

fn free_pinned(ptr: NonNull<u8>, len: usize) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: `ptr` came from cuMemHostAlloc, is freed once (the owner forgot it), and no copy uses
    // it (the owner waited for its last use).
    unsafe { cu::free_host(ptr.as_ptr() as *mut c_void) }
        .map_err(err("freeing pinned host memory (cuMemFreeHost)"))
}

impl Stream {
    fn same_device(&self, what: &str, device: &Device) -> Result<()> {
        if device != self.device() {
            return Err(Error::invalid_arg(format!(
                "CUDA copy: the {what} is on device {} but the stream is on device {} (use copy_peer \
                 between devices)",
                device.ordinal(),
                self.device().ordinal()
            )));
        }
        Ok(())
    }

    /// Before a queued copy uses `p`: order it after `p`'s previous copies (which may be on another
    /// stream of the device). Returns whether the stream is capturing.
    fn pinned_before(&self, p: &PinnedBuffer) -> Result<bool> {
        self.same_device("pinned buffer", &p.device)?;
        let capturing = self.capturing()?;
        if !capturing {
            // In a capture, a wait on an event recorded outside it is not allowed; the captured
            // graph is ordered by the stream it is launched on instead.
            self.wait_event_raw(&p.last_use)?;
        }
        Ok(capturing)
    }

    /// After queueing a copy that uses `p`: remember it in `p`'s event. In a capture the record
    /// becomes a graph node (CU_EVENT_RECORD_EXTERNAL), so each replay marks the buffer again.
    fn pinned_after(&self, p: &PinnedBuffer, capturing: bool) -> Result<()> {
        let flags = if capturing {
            sys::CUevent_record_flags::CU_EVENT_RECORD_EXTERNAL
        } else {
            sys::CUevent_record_flags::CU_EVENT_RECORD_DEFAULT
        };
        // SAFETY: event and stream are alive and of the same context (checked in pinned_before).
        unsafe { sys::cuEventRecordWithFlags(p.last_use.cu_event(), self.raw(), flags as u32) }
            .result()
            .map_err(err(
                "recording a pinned buffer's use (cuEventRecordWithFlags)",
            ))
    }

    fn wait_event_raw(&self, e: &CudaEvent) -> Result<()> {
        // SAFETY: stream and event are alive and of the same context.
        unsafe {
            cu::stream::wait_event(
                self.raw(),
                e.cu_event(),
                sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
            )
        }
        .map_err(err(
            "ordering a copy after a pinned buffer's last use (cuStreamWaitEvent)",
        ))
    }

    fn not_capturing(&self, what: &str) -> Result<()> {
        if self.capturing()? {
            return Err(Error::invalid_arg(format!(
                "CUDA: {what} blocks and cannot be captured into a graph; use a PinnedBuffer"
            )));
        }
        Ok(())
    }

    /// Queues a copy of `bytes` bytes from pinned `src[src_offset..]` to `dst[dst_offset..]`.
    /// Asynchronous.
    pub fn copy_htod(
        &self,
        src: &PinnedBuffer,
        src_offset: usize,
        dst: &mut DeviceBuffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        check_range("source (pinned host)", src_offset, bytes, src.len)?;
        check_range("destination (device)", dst_offset, bytes, dst.len)?;
        self.same_device("destination buffer", &dst.device)?;
        if bytes == 0 {
            return Ok(());
        }
        guard("Stream::copy_htod", || {
            self.device().bind()?;
            let capturing = self.pinned_before(src)?;
            // SAFETY: ranges checked above; both allocations live at least until the copy ends
            // (the device buffer's free waits for the device, the pinned buffer's for its event,
            // recorded right after).
            unsafe {
                sys::cuMemcpyHtoDAsync_v2(
                    dst.ptr + dst_offset as u64,
                    src.ptr.as_ptr().add(src_offset) as *const c_void,
                    bytes,
                    self.raw(),
                )
            }
            .result()
            .map_err(err("copying host to device (cuMemcpyHtoDAsync)"))?;
            self.pinned_after(src, capturing)
        })
    }

    /// Queues a copy of `bytes` bytes from `src[src_offset..]` to pinned `dst[dst_offset..]`.
    /// Asynchronous: read `dst` through [`PinnedBuffer::as_slice`], which waits for it.
    pub fn copy_dtoh(
        &self,
        src: &DeviceBuffer,
        src_offset: usize,
        dst: &mut PinnedBuffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        check_range("source (device)", src_offset, bytes, src.len)?;
        check_range("destination (pinned host)", dst_offset, bytes, dst.len)?;
        self.same_device("source buffer", &src.device)?;
        if bytes == 0 {
            return Ok(());
        }
        guard("Stream::copy_dtoh", || {
            self.device().bind()?;
            let capturing = self.pinned_before(dst)?;
            // SAFETY: as in copy_htod; the host bytes are not borrowed by anyone (we hold `&mut
            // dst`, and later access waits for the event recorded next).
            unsafe {
                sys::cuMemcpyDtoHAsync_v2(
                    dst.ptr.as_ptr().add(dst_offset) as *mut c_void,
                    src.ptr + src_offset as u64,
                    bytes,
                    self.raw(),
                )
            }
            .result()
            .map_err(err("copying device to host (cuMemcpyDtoHAsync)"))?;
            self.pinned_after(dst, capturing)
        })
    }

    /// Copies `src` (any host memory) to `dst[dst_offset..]`. Blocks until the copy, and all work
    /// queued before it on this stream, has finished.
    pub fn copy_htod_pageable(
        &self,
        src: &[u8],
        dst: &mut DeviceBuffer,
        dst_offset: usize,
    ) -> Result<()> {
        check_range("destination (device)", dst_offset, src.len(), dst.len)?;
        self.same_device("destination buffer", &dst.device)?;
        if src.is_empty() {
            return Ok(());
        }
        guard("Stream::copy_htod_pageable", || {
            self.device().bind()?;
            self.not_capturing("copy_htod_pageable")?;
            // SAFETY: ranges checked; `src` stays borrowed until the stream sync below returns, so
            // the copy never reads freed or changing memory.
            unsafe { cu::memcpy_htod_async(dst.ptr + dst_offset as u64, src, self.raw()) }
                .map_err(err("copying host to device (cuMemcpyHtoDAsync)"))?;
            self.inner_sync()
        })
    }

    /// Copies `src[src_offset..]` into all of `dst` (any host memory). Blocks until done.
    pub fn copy_dtoh_pageable(
        &self,
        src: &DeviceBuffer,
        src_offset: usize,
        dst: &mut [u8],
    ) -> Result<()> {
        check_range("source (device)", src_offset, dst.len(), src.len)?;
        self.same_device("source buffer", &src.device)?;
        if dst.is_empty() {
            return Ok(());
        }
        guard("Stream::copy_dtoh_pageable", || {
            self.device().bind()?;
            self.not_capturing("copy_dtoh_pageable")?;
            // SAFETY: ranges checked; `dst` stays exclusively borrowed until the sync below returns.
            unsafe { cu::memcpy_dtoh_async(dst, src.ptr + src_offset as u64, self.raw()) }
                .map_err(err("copying device to host (cuMemcpyDtoHAsync)"))?;
            self.inner_sync()
        })
    }

    fn inner_sync(&self) -> Result<()> {
        // SAFETY: the stream is alive.
        unsafe { cu::stream::synchronize(self.raw()) }
            .map_err(err("waiting for a copy (cuStreamSynchronize)"))
    }

    /// Queues a copy between two buffers of this stream's device. Asynchronous.
    pub fn copy_dtod(
        &self,
        src: &DeviceBuffer,
        src_offset: usize,
        dst: &mut DeviceBuffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        check_range("source (device)", src_offset, bytes, src.len)?;
        check_range("destination (device)", dst_offset, bytes, dst.len)?;
        self.same_device("source buffer", &src.device)?;
        self.same_device("destination buffer", &dst.device)?;
        if bytes == 0 {
            return Ok(());
        }
        guard("Stream::copy_dtod", || {
            self.device().bind()?;
            // SAFETY: ranges checked; both allocations outlive the copy (freeing waits for the
            // device); `&mut dst` and `&src` are distinct buffers so the ranges cannot overlap.
            unsafe {
                cu::memcpy_dtod_async(
                    dst.ptr + dst_offset as u64,
                    src.ptr + src_offset as u64,
                    bytes,
                    self.raw(),
                )
            }
            .map_err(err("copying device to device (cuMemcpyDtoDAsync)"))
        })
    }

    /// Queues a copy from a buffer of any device to a buffer of any device (`cuMemcpyPeerAsync`;
    /// direct over NVLink/PCIe when peer access is enabled, staged by the driver otherwise).
    /// The copy is ordered after earlier work on *this* stream only: if `src` is written on
    /// another device's stream, wait for that first (an event or a sync).
    pub fn copy_peer(
        &self,
        src: &DeviceBuffer,
        src_offset: usize,
        dst: &mut DeviceBuffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        check_range("source (device)", src_offset, bytes, src.len)?;
        check_range("destination (device)", dst_offset, bytes, dst.len)?;
        if bytes == 0 {
            return Ok(());
        }
        guard("Stream::copy_peer", || {
            self.device().bind()?;
            src.add_peer_user(self.device());
            dst.add_peer_user(self.device());
            // SAFETY: ranges checked; both contexts are alive (held by the buffers' devices); both
            // allocations outlive the copy: freeing a buffer waits for its own device and for every
            // device whose stream queued a peer copy on it (noted just above).
            unsafe {
                cu::memcpy_peer_async(
                    dst.device.ctx().cu_ctx(),
                    dst.ptr + dst_offset as u64,
                    src.device.ctx().cu_ctx(),
                    src.ptr + src_offset as u64,
                    bytes,
                    self.raw(),
                )
            }
            .map_err(err("copying between devices (cuMemcpyPeerAsync)"))
        })
    }

    /// Queues setting `bytes` bytes of `dst[offset..]` to `value`. Asynchronous, capturable.
    pub fn memset(
        &self,
        dst: &mut DeviceBuffer,
        offset: usize,
        bytes: usize,
        value: u8,
    ) -> Result<()> {
        check_range("memset destination (device)", offset, bytes, dst.len)?;
        self.same_device("memset buffer", &dst.device)?;
        if bytes == 0 {
            return Ok(());
        }
        guard("Stream::memset", || {
            self.device().bind()?;
            // SAFETY: range checked; the allocation outlives the memset (freeing waits for the device).
            unsafe { cu::memset_d8_async(dst.ptr + offset as u64, value, bytes, self.raw()) }
                .map_err(err("setting device memory (cuMemsetD8Async)"))
        })
    }

    /// Queues a memset of device memory this crate does not own (e.g. a tensor ONNX Runtime
    /// allocated).
    ///
    /// # Safety
    /// `dst` is a device address of this stream's device with `bytes` writable bytes, valid
    /// until the memset has finished.
    pub unsafe fn memset_raw(&self, dst: u64, bytes: usize, value: u8) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        guard("Stream::memset_raw", || {
            self.device().bind()?;
            // SAFETY: the caller's contract.
            unsafe { cu::memset_d8_async(dst, value, bytes, self.raw()) }
                .map_err(err("setting device memory (cuMemsetD8Async)"))
        })
    }

    /// Queues a host-to-device copy between memory this crate does not own (e.g. Triton's buffers).
    ///
    /// # Safety
    /// - `dst` is a device address of this stream's device (or reachable from it) with `bytes`
    ///   writable bytes, and `src` points to `bytes` readable host bytes.
    /// - Both stay valid, and `src` unmodified, until the copy has finished: the caller waits on
    ///   this stream (sync or event) before freeing or reusing them. (For pageable `src` CUDA
    ///   stages the bytes before returning, but the caller must not rely on that.)
    pub unsafe fn copy_htod_raw(&self, dst: u64, src: *const u8, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        guard("Stream::copy_htod_raw", || {
            self.device().bind()?;
            // SAFETY: the caller's contract (see the doc comment).
            unsafe { sys::cuMemcpyHtoDAsync_v2(dst, src as *const c_void, bytes, self.raw()) }
                .result()
                .map_err(err("copying host to device (cuMemcpyHtoDAsync)"))
        })
    }

    /// Queues a device-to-host copy between memory this crate does not own.
    ///
    /// # Safety
    /// - `src` is a device address with `bytes` readable bytes; `dst` points to `bytes` writable
    ///   host bytes that nothing else reads or writes until the copy has finished.
    /// - Both stay valid until the copy has finished (the caller syncs this stream or an event
    ///   recorded after it before touching `dst`).
    pub unsafe fn copy_dtoh_raw(&self, dst: *mut u8, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        guard("Stream::copy_dtoh_raw", || {
            self.device().bind()?;
            // SAFETY: the caller's contract (see the doc comment).
            unsafe { sys::cuMemcpyDtoHAsync_v2(dst as *mut c_void, src, bytes, self.raw()) }
                .result()
                .map_err(err("copying device to host (cuMemcpyDtoHAsync)"))
        })
    }

    /// Queues a device-to-device copy between memory this crate does not own (same device, or any
    /// two devices with unified addressing and peer access).
    ///
    /// # Safety
    /// `src` has `bytes` readable and `dst` `bytes` writable device bytes, not overlapping, both
    /// valid until the copy has finished (the caller waits on this stream before freeing them).
    pub unsafe fn copy_dtod_raw(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        guard("Stream::copy_dtod_raw", || {
            self.device().bind()?;
            // SAFETY: the caller's contract (see the doc comment).
            unsafe { cu::memcpy_dtod_async(dst, src, bytes, self.raw()) }
                .map_err(err("copying device to device (cuMemcpyDtoDAsync)"))
        })
    }

    /// Queues a copy from `src` on device `src_device` to `dst` on device `dst_device`, between
    /// memory this crate does not own.
    ///
    /// # Safety
    /// As [`Stream::copy_dtod_raw`], with `src` an address on `src_device` and `dst` on `dst_device`.
    pub unsafe fn copy_peer_raw(
        &self,
        dst_device: &Device,
        dst: u64,
        src_device: &Device,
        src: u64,
        bytes: usize,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        guard("Stream::copy_peer_raw", || {
            self.device().bind()?;
            // SAFETY: the caller's contract; both contexts are alive (held by the devices).
            unsafe {
                cu::memcpy_peer_async(
                    dst_device.ctx().cu_ctx(),
                    dst,
                    src_device.ctx().cu_ctx(),
                    src,
                    bytes,
                    self.raw(),
                )
            }
            .map_err(err("copying between devices (cuMemcpyPeerAsync)"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_without_overflow() {
        assert!(check_range("x", 0, 16, 16).is_ok());
        assert!(check_range("x", 16, 0, 16).is_ok());
        assert!(check_range("x", 8, 8, 16).is_ok());
        let e = check_range("destination (device)", 8, 9, 16).unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::InvalidArg);
        assert_eq!(
            e.to_string(),
            "CUDA copy: destination (device) range 8..17 (of 9 bytes) is outside its 16-byte buffer"
        );
        assert!(check_range("x", usize::MAX, 2, usize::MAX).is_err());
        assert!(check_range("x", 17, 0, 16).is_err());
    }
}

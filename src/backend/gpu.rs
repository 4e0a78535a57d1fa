//! The GPU side of Execute: per-instance device buffers sized for the batch and reused, pinned
//! host staging for pageable inputs, async copies on the instance's stream.
//!
//! Runs only where CUDA exists (the GPU machine); on machines without a driver a KIND_GPU
//! instance fails its load with the cuda layer's message, and a CPU instance handed GPU memory
//! answers that request with an error.

use crate::cuda::{Device, DeviceBuffer, PinnedBuffer, Stream};
use crate::error::{Error, Result};
use crate::triton::InputBuffer;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use triton_abi::{
    TRITONSERVER_MEMORY_CPU, TRITONSERVER_MEMORY_CPU_PINNED, TRITONSERVER_MEMORY_GPU,
};

/// Device, stream and reusable buffers of one GPU instance.
pub struct GpuIo {
    pub device: Device,
    pub stream: Stream,
    /// One device buffer per config input.
    inputs: Vec<DeviceBuffer>,
    /// One pinned staging buffer per config input (for pageable host chunks).
    staging: Vec<PinnedBuffer>,
    /// Pinned staging for outputs headed to GPU response buffers.
    pub out_staging: PinnedBuffer,
    /// Bytes of `out_staging` used by copies queued since the last synchronize.
    out_cursor: std::sync::atomic::AtomicUsize,
    /// Triton's `optimization.input_pinned_memory`: pageable input chunks go through pinned
    /// staging (true, Triton's default) or are copied straight from pageable memory (false).
    pub pinned_inputs: bool,
    /// Triton's `optimization.output_pinned_memory`: host outputs headed to GPU response
    /// buffers go through pinned staging (true, Triton's default) or straight (false).
    pub pinned_outputs: bool,
    /// Pinned staging for engine outputs in device memory headed to host response buffers: one
    /// per output name, filled by one device-to-host copy of the whole batch.
    out_host: Vec<StagedOutput>,
}

/// The host copy of one device output of the current batch.
struct StagedOutput {
    name: String,
    buffer: PinnedBuffer,
    /// (device address, bytes) staged in this batch; `None` until the first request asks.
    staged: Option<(u64, usize)>,
}

impl GpuIo {
    pub fn new(ordinal: usize, n_inputs: usize) -> Result<GpuIo> {
        let device = Device::open(ordinal)?;
        device.bind_to_thread()?;
        let stream = device.new_stream()?;
        let mut inputs = Vec::with_capacity(n_inputs);
        let mut staging = Vec::with_capacity(n_inputs);
        for _ in 0..n_inputs {
            inputs.push(DeviceBuffer::new(&device, 256)?);
            staging.push(PinnedBuffer::new(&device, 256)?);
        }
        let out_staging = PinnedBuffer::new(&device, 256)?;
        Ok(GpuIo {
            device,
            stream,
            inputs,
            staging,
            out_host: Vec::new(),
            out_staging,
            out_cursor: std::sync::atomic::AtomicUsize::new(0),
            pinned_inputs: true,
            pinned_outputs: true,
        })
    }

    pub fn ordinal(&self) -> i32 {
        self.device.ordinal() as i32
    }

    /// Gathers input `k` of the batch (its chunks in order, `total` bytes) into device memory on
    /// the stream and returns the device address. One GPU chunk on this device is used in place.
    pub fn gather(&mut self, k: usize, chunks: &[InputBuffer], total: usize) -> Result<u64> {
        if let [c] = chunks {
            if c.memory_type == TRITONSERVER_MEMORY_GPU
                && c.memory_type_id == self.device.ordinal() as i64
            {
                return Ok(c.ptr as u64);
            }
        }
        self.inputs[k].ensure(total)?;
        let dst = self.inputs[k].ptr();
        let pageable: usize = if self.pinned_inputs {
            chunks
                .iter()
                .filter(|c| c.memory_type == TRITONSERVER_MEMORY_CPU)
                .map(|c| c.len)
                .sum()
        } else {
            0
        };
        if pageable > 0 {
            self.staging[k].ensure(pageable)?;
        }
        // Pageable chunks are packed into pinned staging first so their copies are async.
        let staging = if pageable > 0 {
            Some(self.staging[k].as_mut_slice()?)
        } else {
            None
        };
        let staging_ptr = staging
            .as_ref()
            .map(|s| s.as_ptr())
            .unwrap_or(std::ptr::null());
        let mut staging = staging;
        // Pack the pageable chunks into pinned staging first, on several threads for a large
        // batch (one request's pageable bytes may be hundreds of MB), then queue the copies.
        if let Some(s) = staging.as_mut() {
            let mut pieces = Vec::new();
            let mut soff = 0usize;
            for c in chunks
                .iter()
                .filter(|c| c.len > 0 && c.memory_type == TRITONSERVER_MEMORY_CPU)
            {
                pieces.push((c.ptr as usize, soff, c.len));
                soff += c.len;
            }
            // SAFETY: every piece is a pageable input chunk Triton keeps readable (`len` bytes
            // at `ptr`) until the request is released, after this Execute; the offsets tile
            // `[0, pageable)` of the staging buffer, which holds at least that much.
            unsafe { pack_pieces(s, &pieces) };
        }
        let (mut off, mut soff) = (0usize, 0usize);
        // Empty chunks (a zero-size tensor) carry nothing to copy.
        for c in chunks.iter().filter(|c| c.len > 0) {
            match c.memory_type {
                TRITONSERVER_MEMORY_CPU if !self.pinned_inputs => {
                    // SAFETY: Triton guarantees `len` readable host bytes at `ptr` until release,
                    // after the stream is synchronized; a copy from pageable memory has read its
                    // source when the call returns. `dst+off` has room for `len` bytes.
                    unsafe { self.stream.copy_htod_raw(dst + off as u64, c.ptr, c.len)? };
                }
                TRITONSERVER_MEMORY_CPU => {
                    if staging.is_none() {
                        return Err(Error::internal("staging missing"));
                    }
                    // SAFETY: staging is pinned, holds the bytes at `soff` and is not written
                    // again before the stream is synchronized at the end of Execute; `dst+off`
                    // has room for `len` bytes (ensured above).
                    unsafe {
                        self.stream
                            .copy_htod_raw(dst + off as u64, staging_ptr.add(soff), c.len)?
                    };
                    soff += c.len;
                }
                TRITONSERVER_MEMORY_CPU_PINNED => {
                    // SAFETY: pinned host memory owned by the request, valid until release, which
                    // happens after the stream is synchronized.
                    unsafe { self.stream.copy_htod_raw(dst + off as u64, c.ptr, c.len)? };
                }
                TRITONSERVER_MEMORY_GPU if c.memory_type_id == self.device.ordinal() as i64 => {
                    // SAFETY: device memory on this device, valid until release.
                    unsafe {
                        self.stream
                            .copy_dtod_raw(dst + off as u64, c.ptr as u64, c.len)?
                    };
                }
                TRITONSERVER_MEMORY_GPU => {
                    let src_dev = Device::open(c.memory_type_id as usize)?;
                    // SAFETY: device memory on `src_dev`, valid until release.
                    unsafe {
                        self.stream.copy_peer_raw(
                            &self.device,
                            dst + off as u64,
                            &src_dev,
                            c.ptr as u64,
                            c.len,
                        )?
                    };
                }
                other => return Err(Error::invalid_arg(format!("unknown memory type {other}"))),
            }
            off += c.len;
        }
        Ok(dst)
    }

    /// Copies host bytes into a GPU response buffer (async on the stream; synchronize before
    /// sending).
    pub fn to_device(&mut self, dst: *mut u8, dst_device: i64, src: &[u8]) -> Result<()> {
        if dst_device != self.device.ordinal() as i64 {
            return copy_host_to_gpu(dst, dst_device, src);
        }
        if self.pinned_outputs && !src.is_empty() {
            use std::sync::atomic::Ordering::Relaxed;
            let mut at = self.out_cursor.load(Relaxed);
            if at + src.len() > self.out_staging.len() {
                // Nothing queued may still read the staging that is about to be reused.
                self.stream.synchronize()?;
                at = 0;
                let want = src.len().max(2 * self.out_staging.len());
                self.out_staging.ensure(want)?;
            }
            let base = self.out_staging.host_ptr();
            // SAFETY: `[at, at+len)` lies inside the pinned staging (checked above) and no copy
            // queued since the last synchronize uses it (the cursor only moves forward between
            // synchronizations); `dst` is a GPU response buffer of at least `len` bytes on this
            // device, alive until the response is sent, after the stream sync.
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(at), src.len());
                self.stream
                    .copy_htod_raw(dst as u64, base.add(at), src.len())?;
            }
            self.out_cursor.store(at + src.len(), Relaxed);
            return Ok(());
        }
        // SAFETY: `dst` is a GPU response buffer of at least `src.len()` bytes on this device,
        // alive until the response is sent (after the stream sync); `src` stays alive and
        // unchanged until then (the engine's output of this run).
        unsafe {
            self.stream
                .copy_htod_raw(dst as u64, src.as_ptr(), src.len())
        }
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize()?;
        self.out_cursor
            .store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Forgets the host copies of the previous batch's device outputs.
    pub fn begin_batch(&mut self) {
        for o in &mut self.out_host {
            o.staged = None;
        }
    }

    /// The host copy of the device output `name` (`len` bytes at `src` on this device): the
    /// whole batch is copied once, into pinned staging on the stream, for every request of the
    /// batch that wants the output in host memory.
    pub fn device_output_on_host(&mut self, name: &str, src: u64, len: usize) -> Result<&[u8]> {
        let i = match self.out_host.iter().position(|o| o.name == name) {
            Some(i) => i,
            None => {
                self.out_host.push(StagedOutput {
                    name: name.to_string(),
                    buffer: PinnedBuffer::new(&self.device, len.max(256))?,
                    staged: None,
                });
                self.out_host.len() - 1
            }
        };
        let o = &mut self.out_host[i];
        if o.staged != Some((src, len)) {
            o.buffer.ensure(len)?;
            let dst = o.buffer.as_mut_slice()?.as_mut_ptr();
            // SAFETY: `src` is `len` bytes of device memory on this device that the runner keeps
            // until its next run; the staging buffer holds at least `len` bytes and is waited for
            // (stream synchronized) before it is read.
            unsafe { self.stream.copy_dtoh_raw(dst, src, len)? };
            self.stream.synchronize()?;
            o.staged = Some((src, len));
        }
        Ok(&o.buffer.as_slice()?[..len])
    }

    /// Copies `len` bytes of device memory at `src` (this device) into a response buffer in
    /// device memory (`dst` on `dst_device`), async on the stream (synchronize before sending).
    pub fn device_to_device(
        &mut self,
        dst: *mut u8,
        dst_device: i64,
        src: u64,
        len: usize,
    ) -> Result<()> {
        if dst_device == self.device.ordinal() as i64 {
            // SAFETY: both are device allocations of this device, `dst` has room for `len`
            // bytes (Triton's buffer of that size) and both live until the stream is synchronized
            // before the responses are sent.
            return unsafe { self.stream.copy_dtod_raw(dst as u64, src, len) };
        }
        let peer = Device::open(dst_device as usize)?;
        // SAFETY: as above, with `dst` on the peer device.
        unsafe {
            self.stream
                .copy_peer_raw(&peer, dst as u64, &self.device, src, len)
        }
    }

    /// Copies `len` bytes of device memory at `src` into a pinned host response buffer, async on
    /// the stream (synchronize before sending).
    ///
    /// # Safety
    /// `dst` must be page-locked host memory with room for `len` bytes that stays alive and
    /// untouched until the stream is synchronized; `src` device memory of this device, likewise.
    pub unsafe fn device_to_pinned(&mut self, dst: *mut u8, src: u64, len: usize) -> Result<()> {
        // SAFETY: the caller's contract is the copy's.
        unsafe { self.stream.copy_dtoh_raw(dst, src, len) }
    }
}

/// Devices and streams for copies done by instances that have none of their own (a CPU
/// instance handed GPU memory).
fn helper_stream(ordinal: usize) -> Result<Stream> {
    static STREAMS: OnceLock<Mutex<HashMap<usize, Stream>>> = OnceLock::new();
    let mut map = STREAMS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(s) = map.get(&ordinal) {
        return Ok(s.clone());
    }
    let d = Device::open(ordinal)?;
    let s = d.new_stream()?;
    map.insert(ordinal, s.clone());
    Ok(s)
}

/// Appends `len` bytes of GPU memory to a host vector (blocking).
pub fn copy_gpu_to_host(dst: &mut Vec<u8>, src: *const u8, len: usize, device: i64) -> Result<()> {
    let stream = helper_stream(device as usize)?;
    let start = dst.len();
    dst.resize(start + len, 0);
    // SAFETY: `src` is `len` bytes of device memory on `device` valid until release; `dst` has
    // room for them; the stream is synchronized before the vector is used.
    unsafe { stream.copy_dtoh_raw(dst[start..].as_mut_ptr(), src as u64, len)? };
    stream.synchronize()
}

/// Copies host bytes into GPU memory (blocking).
pub fn copy_host_to_gpu(dst: *mut u8, device: i64, src: &[u8]) -> Result<()> {
    let stream = helper_stream(device as usize)?;
    // SAFETY: `dst` is at least `src.len()` bytes of device memory on `device`; synchronized
    // before returning, so `src` outlives the copy.
    unsafe { stream.copy_htod_raw(dst as u64, src.as_ptr(), src.len())? };
    stream.synchronize()
}

/// Below this many bytes one thread packs the staging buffer (threads cost more than they save).
const PARALLEL_PACK_MIN: usize = 8 << 20;

/// Copies each `(source address, offset, length)` piece into `staging[offset..offset + length]`,
/// on up to 8 threads when there is at least [`PARALLEL_PACK_MIN`] to copy.
///
/// # Safety
/// Each source must be readable for its length for the duration of the call; the pieces'
/// ranges must lie inside `staging` and not overlap one another.
unsafe fn pack_pieces(staging: &mut [u8], pieces: &[(usize, usize, usize)]) {
    let total: usize = pieces.iter().map(|p| p.2).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
        .min(total / (PARALLEL_PACK_MIN / 8))
        .max(1);
    if threads == 1 || total < PARALLEL_PACK_MIN {
        for &(src, off, len) in pieces {
            // SAFETY: the caller's contract: `len` readable bytes at `src`, and the range lies
            // inside `staging`.
            staging[off..off + len]
                .copy_from_slice(unsafe { std::slice::from_raw_parts(src as *const u8, len) });
        }
        return;
    }
    // Deal the bytes out in shares of about total / threads, splitting pieces where needed.
    let share = total.div_ceil(threads);
    let mut jobs: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); threads];
    let (mut t, mut filled) = (0usize, 0usize);
    for &(src, off, len) in pieces {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(share - filled);
            jobs[t].push((src + done, off + done, n));
            done += n;
            filled += n;
            if filled == share && t + 1 < threads {
                t += 1;
                filled = 0;
            }
        }
    }
    let cap = staging.len();
    let base = staging.as_mut_ptr() as usize;
    std::thread::scope(|scope| {
        for job in &jobs {
            scope.spawn(move || {
                for &(src, off, n) in job {
                    assert!(off + n <= cap, "staging piece out of range");
                    // SAFETY: `n` readable bytes at `src` (the caller's contract); the
                    // destination ranges of all jobs are disjoint sub-ranges of `staging`, which
                    // the exclusive borrow keeps alive and unaliased until the scope ends.
                    unsafe {
                        std::ptr::copy_nonoverlapping(src as *const u8, (base + off) as *mut u8, n)
                    };
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(sizes: &[usize]) {
        let sources: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j * 7) as u8).collect())
            .collect();
        let mut pieces = Vec::new();
        let mut off = 0;
        for s in &sources {
            pieces.push((s.as_ptr() as usize, off, s.len()));
            off += s.len();
        }
        let mut staging = vec![0u8; off + 5];
        // SAFETY: the sources live through the call; the pieces tile the staging buffer.
        unsafe { pack_pieces(&mut staging, &pieces) };
        let want: Vec<u8> = sources.concat();
        assert_eq!(&staging[..off], &want[..], "sizes {sizes:?}");
        assert_eq!(&staging[off..], &[0; 5]);
    }

    #[test]
    fn packing_matches_concatenation_small_and_parallel() {
        pack(&[]);
        pack(&[0, 3, 0, 17]);
        pack(&[1 << 10; 4]);
        // Over the parallel threshold: one huge chunk, many chunks, odd sizes.
        pack(&[PARALLEL_PACK_MIN * 2 + 3]);
        pack(&[PARALLEL_PACK_MIN / 3 + 1; 9]);
        pack(&[7, PARALLEL_PACK_MIN, 1, PARALLEL_PACK_MIN / 2 + 11, 0, 5]);
    }
}

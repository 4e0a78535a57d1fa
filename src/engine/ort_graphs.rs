//! CUDA graphs for fixed batch sizes on ONNX Runtime's CUDA EP.
//!
//! For each listed batch size the runner keeps a session over the model specialized to that batch
//! size (so shape computations fold into constants and every node runs on the GPU), created with
//! `enable_cuda_graph`, and an IoBinding over device tensors at fixed addresses. ONNX Runtime
//! captures the graph on the first run (done at load, never in a request) and replays it after.
//! A batch of another size takes the plain path.
//!
//! The IoBinding is driven through ONNX Runtime's C API (`ort::api()`): `ort`'s `bind_input`
//! deadlocks on borrowed tensors in rc.15 (../docs/architecture.md, "Traps").

use crate::cuda::Stream;
use crate::engine::{MemLoc, TensorOut, TensorRef};
use crate::error::{Error, Result};
use crate::types::DataType;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;
use ort::value::{DynTensor, TensorElementType};
use ort::AsPointer;
use std::collections::HashMap;
use std::ffi::CString;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Turns an `OrtStatus*` into a result (the status is released).
pub(super) fn status(what: &str, s: ort::sys::OrtStatusPtr) -> Result<()> {
    if s.0.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null status from ONNX Runtime; its message is valid until it is released,
    // which happens once, here.
    let msg = unsafe {
        let m = (ort::api().GetErrorMessage)(s.0);
        let text = std::ffi::CStr::from_ptr(m).to_string_lossy().into_owned();
        (ort::api().ReleaseStatus)(s.0);
        text
    };
    Err(Error::internal(format!("{what}: {msg}")))
}

/// An `OrtIoBinding` owned by this struct.
struct Binding(*mut ort::sys::OrtIoBinding);

impl Drop for Binding {
    fn drop(&mut self) {
        // SAFETY: created by CreateIoBinding, released once.
        unsafe { (ort::api().ReleaseIoBinding)(self.0) };
    }
}

// SAFETY: the binding is only used by the runner that owns it, one thread at a time (a runner
// is Send, not Sync); ONNX Runtime binding objects carry no thread affinity.
unsafe impl Send for Binding {}

pub(super) fn element_type(d: DataType) -> Result<TensorElementType> {
    Ok(match d {
        DataType::F32 => TensorElementType::Float32,
        DataType::F16 => TensorElementType::Float16,
        DataType::BF16 => TensorElementType::Bfloat16,
        DataType::F64 => TensorElementType::Float64,
        DataType::I64 => TensorElementType::Int64,
        DataType::I32 => TensorElementType::Int32,
        DataType::I16 => TensorElementType::Int16,
        DataType::I8 => TensorElementType::Int8,
        DataType::U8 => TensorElementType::Uint8,
        DataType::U16 => TensorElementType::Uint16,
        DataType::U32 => TensorElementType::Uint32,
        DataType::U64 => TensorElementType::Uint64,
        DataType::Bool => TensorElementType::Bool,
        DataType::Bytes => return Err(Error::unsupported("BYTES tensors in a CUDA graph")),
    })
}

/// One captured batch size.
pub struct GraphSlot {
    pub batch: usize,
    // Field order is drop order: the binding before the tensors it points at, those before the
    // session that allocated them.
    binding: Binding,
    inputs: Vec<(String, DynTensor, usize)>,
    outputs: Vec<(String, DynTensor, DataType, Vec<i64>, usize)>,
    host_out: Vec<Vec<u8>>,
    session: Session,
}

/// Fixed-shape tensor descriptions of one batch size: (name, dtype, full shape).
pub type Io = Vec<(String, DataType, Vec<i64>)>;

impl GraphSlot {
    /// Binds device tensors for `inputs` / `outputs` and runs once (ONNX Runtime captures the
    /// graph then), with zeroed inputs.
    pub fn new(
        session: Session,
        batch: usize,
        device: i32,
        inputs: &Io,
        outputs: &Io,
        stream: &Stream,
    ) -> Result<GraphSlot> {
        let info = MemoryInfo::new(
            AllocationDevice::CUDA,
            device,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(|e| Error::internal(format!("CUDA memory info: {e}")))?;
        let alloc = Allocator::new(&session, info)
            .map_err(|e| Error::internal(format!("CUDA allocator: {e}")))?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: a valid session; `raw` receives a new binding we own (wrapped right away).
        status("CreateIoBinding", unsafe {
            (ort::api().CreateIoBinding)(session.ptr().cast_mut(), &mut raw)
        })?;
        let binding = Binding(raw);
        let mk = |dt: DataType, shape: &[i64]| -> Result<(DynTensor, usize)> {
            let t = DynTensor::new(&alloc, element_type(dt)?, shape.to_vec())
                .map_err(|e| Error::internal(format!("allocating a device tensor: {e}")))?;
            let bytes = crate::types::element_count(shape).unwrap_or(0) * dt.byte_size();
            Ok((t, bytes))
        };
        let mut ins = Vec::new();
        for (name, dt, shape) in inputs {
            let (t, bytes) = mk(*dt, shape)?;
            // SAFETY: the device tensor's memory is `bytes` long; zeroed on our stream, which the
            // capture run below follows.
            unsafe { stream.memset_raw(t.data_ptr() as u64, bytes, 0)? };
            let c = CString::new(name.as_str())
                .map_err(|_| Error::invalid_arg("input name with NUL"))?;
            // SAFETY: valid binding, name and value; the value outlives the binding (field order).
            status("BindInput", unsafe {
                (ort::api().BindInput)(binding.0, c.as_ptr(), t.ptr())
            })?;
            ins.push((name.clone(), t, bytes));
        }
        let mut outs = Vec::new();
        for (name, dt, shape) in outputs {
            let (t, bytes) = mk(*dt, shape)?;
            let c = CString::new(name.as_str())
                .map_err(|_| Error::invalid_arg("output name with NUL"))?;
            // SAFETY: as for the inputs.
            status("BindOutput", unsafe {
                (ort::api().BindOutput)(binding.0, c.as_ptr(), t.ptr())
            })?;
            outs.push((name.clone(), t, *dt, shape.clone(), bytes));
        }
        stream.synchronize()?;
        let host_out = outs.iter().map(|o| vec![0u8; o.4]).collect();
        let mut slot = GraphSlot {
            batch,
            binding,
            inputs: ins,
            outputs: outs,
            host_out,
            session,
        };
        // Two runs: ONNX Runtime runs once normally, then captures; the replay path follows.
        for _ in 0..2 {
            slot.launch(stream)?;
        }
        Ok(slot)
    }

    fn launch(&mut self, stream: &Stream) -> Result<()> {
        // SAFETY: a valid session and binding whose tensors live in this slot.
        status("RunWithBinding (CUDA graph)", unsafe {
            (ort::api().RunWithBinding)(
                self.session.ptr().cast_mut(),
                std::ptr::null(),
                self.binding.0,
            )
        })?;
        stream.synchronize()
    }

    /// Copies the device inputs in, replays the graph, copies the outputs to host memory.
    pub fn run<'s>(
        &'s mut self,
        inputs: &[TensorRef<'_>],
        wanted: &[&str],
        stream: &Stream,
    ) -> Result<Vec<TensorOut<'s>>> {
        for t in inputs {
            let (_, dst, bytes) = self
                .inputs
                .iter()
                .find(|(n, _, _)| n == t.name)
                .ok_or_else(|| Error::internal(format!("CUDA graph has no input '{}'", t.name)))?;
            if *bytes != t.bytes {
                return Err(Error::internal(format!(
                    "CUDA graph input '{}': {} bytes, captured {}",
                    t.name, t.bytes, bytes
                )));
            }
            // SAFETY: `t` is `t.bytes` of device memory valid for this call; `dst` is the bound
            // device tensor of the same size; ordered on the stream ONNX Runtime runs on.
            unsafe { stream.copy_dtod_raw(dst.data_ptr() as u64, t.ptr as u64, t.bytes)? };
        }
        self.launch(stream)?;
        for (k, (_, t, _, _, bytes)) in self.outputs.iter().enumerate() {
            // SAFETY: the bound output tensor holds `bytes` bytes of device memory; the host
            // vector has that size; synchronized below before it is read.
            unsafe {
                stream.copy_dtoh_raw(self.host_out[k].as_mut_ptr(), t.data_ptr() as u64, *bytes)?
            };
        }
        stream.synchronize()?;
        Ok(self
            .outputs
            .iter()
            .zip(&self.host_out)
            .filter(|((n, ..), _)| wanted.contains(&n.as_str()))
            .map(|((name, _, dt, shape, _), host)| TensorOut {
                name: name.clone(),
                dtype: *dt,
                shape: shape.clone(),
                ptr: host.as_ptr(),
                bytes: host.len(),
                loc: MemLoc::Host,
                _lt: PhantomData,
            })
            .collect())
    }
}

/// The process-wide lock that serializes CUDA graph captures on one device: models load in
/// parallel, and a capture must not overlap another capture of this process.
pub(crate) fn capture_lock(device: i32) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<i32, Arc<Mutex<()>>>>> = OnceLock::new();
    LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(device)
        .or_default()
        .clone()
}

/// Runs `f` up to `attempts` times, sleeping `backoff`, then 4 × `backoff`, ... between tries;
/// returns the first success or the last error.
pub(crate) fn with_retries<T>(
    attempts: u32,
    backoff: Duration,
    mut f: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut wait = backoff;
    let mut last = None;
    for i in 0..attempts.max(1) {
        if i > 0 {
            std::thread::sleep(wait);
            wait = wait.saturating_mul(4);
        }
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::internal("no attempt made")))
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn retries_until_success_then_stops() {
        let mut calls = 0;
        let r = with_retries(3, Duration::from_millis(1), || {
            calls += 1;
            if calls < 2 {
                Err(Error::internal("capture invalidated"))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.unwrap(), 2);
        assert_eq!(calls, 2);
    }

    #[test]
    fn gives_up_after_the_attempts_with_the_last_error() {
        let mut calls = 0;
        let t0 = std::time::Instant::now();
        let r: Result<()> = with_retries(3, Duration::from_millis(5), || {
            calls += 1;
            Err(Error::internal(format!("failure {calls}")))
        });
        assert_eq!(calls, 3);
        assert!(r.unwrap_err().to_string().contains("failure 3"));
        // Back-off 5 ms then 20 ms.
        assert!(t0.elapsed() >= Duration::from_millis(25));
    }

    #[test]
    fn one_lock_per_device() {
        assert!(Arc::ptr_eq(&capture_lock(0), &capture_lock(0)));
        assert!(!Arc::ptr_eq(&capture_lock(0), &capture_lock(1)));
    }
}

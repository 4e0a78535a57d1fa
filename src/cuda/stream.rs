//! Streams, events and CUDA graphs (stream capture and replay).

use std::ffi::c_void;
use std::fmt;
use std::sync::Arc;

use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::driver::{CudaEvent, CudaStream};

use super::{driver_error, err, guard, Device};
use crate::error::{Error, Result};

/// A CUDA stream of one device (non-blocking: no implicit ordering with the legacy default
/// stream). One per model instance; cheap to clone (shared), destroyed with its last clone.
#[derive(Clone)]
pub struct Stream {
    inner: Arc<CudaStream>,
    device: Device,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("device", &self.device.ordinal())
            .field("cu_stream", &self.inner.cu_stream())
            .finish()
    }
}

impl Stream {
    pub(super) fn new(device: &Device) -> Result<Stream> {
        let inner = device.ctx().new_stream().map_err(|e| {
            driver_error(
                &format!("creating a stream on device {}", device.ordinal()),
                e,
            )
        })?;
        Ok(Stream {
            inner,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The raw `CUstream` (== `cudaStream_t`), for ONNX Runtime's `user_compute_stream` or
    /// TensorRT's `enqueueV3`. Owned by this `Stream`: do not destroy it, and do not use it after the
    /// last clone of this `Stream` is dropped.
    pub fn cu_stream(&self) -> *mut c_void {
        self.inner.cu_stream() as *mut c_void
    }

    pub(crate) fn raw(&self) -> sys::CUstream {
        self.inner.cu_stream()
    }

    /// Blocks until everything queued on this stream has finished.
    pub fn synchronize(&self) -> Result<()> {
        guard("Stream::synchronize", || {
            self.device.bind()?;
            // SAFETY: the stream is alive (held by `self.inner`) and of the bound context.
            unsafe { cu::stream::synchronize(self.raw()) }.map_err(|e| {
                driver_error(
                    &format!("synchronising a stream of device {}", self.device.ordinal()),
                    e,
                )
            })
        })
    }

    /// Records an event at the current end of this stream.
    pub fn record_event(&self) -> Result<Event> {
        let event = self.device.new_event(false)?;
        event.record(self)?;
        Ok(event)
    }

    /// Makes later work on this stream wait for `event` (no host blocking).
    pub fn wait_event(&self, event: &Event) -> Result<()> {
        guard("Stream::wait_event", || {
            self.inner
                .wait(&event.inner)
                .map_err(err("making a stream wait for an event"))
        })
    }

    /// Whether the stream is being captured into a graph now.
    pub fn is_capturing(&self) -> Result<bool> {
        guard("Stream::is_capturing", || self.capturing())
    }

    pub(crate) fn capturing(&self) -> Result<bool> {
        self.device.bind()?;
        // SAFETY: the stream is alive (held by `self.inner`).
        let status = unsafe { cu::stream::is_capturing(self.raw()) }
            .map_err(err("asking for the stream's capture status"))?;
        match status {
            sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE => Ok(false),
            sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE => Ok(true),
            _ => Err(Error::internal(
                "CUDA: the stream's graph capture was invalidated (an operation not allowed during \
                 capture was issued); end the capture to reset the stream",
            )),
        }
    }

    /// Starts capturing the work queued on this stream into a graph instead of running it.
    /// Between this and [`Stream::end_capture`], only capturable work may be queued: kernels,
    /// async copies between device and pinned memory, memsets, event records. Pageable copies,
    /// allocations and synchronisation are refused by CUDA (they invalidate the capture).
    pub fn begin_capture(&self, mode: CaptureMode) -> Result<()> {
        guard("Stream::begin_capture", || {
            self.device.bind()?;
            // SAFETY: the stream is alive (held by `self.inner`) and belongs to the bound context.
            unsafe { cu::stream::begin_capture(self.raw(), mode.raw()) }
                .map_err(err("starting a graph capture (cuStreamBeginCapture)"))
        })
    }

    /// Ends the capture begun by [`Stream::begin_capture`] and instantiates the graph. If the
    /// capture was invalidated, the error says so and the stream is usable again.
    pub fn end_capture(&self) -> Result<Graph> {
        guard("Stream::end_capture", || {
            self.device.bind()?;
            // SAFETY: the stream is alive; ending a capture on a stream not capturing is reported
            // by CUDA as an error, not undefined behaviour.
            let graph = unsafe { cu::stream::end_capture(self.raw()) }
                .map_err(err("ending a graph capture (cuStreamEndCapture)"))?;
            if graph.is_null() {
                return Err(Error::internal("CUDA: the graph capture produced no graph"));
            }
            let flags = sys::CUgraphInstantiate_flags(0);
            // SAFETY: `graph` is the valid graph just returned by cuStreamEndCapture.
            match unsafe { cu::graph::instantiate(graph, flags) } {
                Ok(exec) => Ok(Graph {
                    graph,
                    exec,
                    device: self.device.clone(),
                }),
                Err(e) => {
                    // SAFETY: `graph` is valid and owned by nobody else.
                    let _ = unsafe { cu::graph::destroy(graph) };
                    Err(driver_error(
                        "instantiating the captured graph (cuGraphInstantiate)",
                        e,
                    ))
                }
            }
        })
    }
}

/// How a capture treats unsafe calls (allocations, syncs) made while it runs; see CUDA's
/// `CUstreamCaptureMode`. `ThreadLocal` suits one capture per instance thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// Unsafe calls from any thread fail while any global capture runs.
    Global,
    /// Unsafe calls fail only on the capturing thread.
    ThreadLocal,
    /// No such checks.
    Relaxed,
}

impl CaptureMode {
    fn raw(self) -> sys::CUstreamCaptureMode {
        use sys::CUstreamCaptureMode::*;
        match self {
            CaptureMode::Global => CU_STREAM_CAPTURE_MODE_GLOBAL,
            CaptureMode::ThreadLocal => CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            CaptureMode::Relaxed => CU_STREAM_CAPTURE_MODE_RELAXED,
        }
    }
}

/// A CUDA event (a marker in a stream).
pub struct Event {
    pub(crate) inner: CudaEvent,
    device: Device,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("device", &self.device.ordinal())
            .finish()
    }
}

impl Event {
    pub(super) fn new(device: &Device, timing: bool) -> Result<Event> {
        let flags = if timing {
            sys::CUevent_flags::CU_EVENT_DEFAULT
        } else {
            sys::CUevent_flags::CU_EVENT_DISABLE_TIMING
        };
        let inner = device
            .ctx()
            .new_event(Some(flags))
            .map_err(err("creating an event"))?;
        Ok(Event {
            inner,
            device: device.clone(),
        })
    }

    /// Records the current end of `stream` (of the same device) into this event.
    pub fn record(&self, stream: &Stream) -> Result<()> {
        if stream.device() != &self.device {
            return Err(Error::invalid_arg(format!(
                "CUDA: an event of device {} cannot be recorded on a stream of device {}",
                self.device.ordinal(),
                stream.device().ordinal()
            )));
        }
        guard("Event::record", || {
            self.inner
                .record(&stream.inner)
                .map_err(err("recording an event"))
        })
    }

    /// Blocks until the work before the last record has finished.
    pub fn synchronize(&self) -> Result<()> {
        guard("Event::synchronize", || {
            self.inner
                .synchronize()
                .map_err(err("waiting for an event"))
        })
    }

    /// Whether the work before the last record has finished (does not block).
    pub fn is_complete(&self) -> Result<bool> {
        guard("Event::is_complete", || {
            self.inner
                .try_is_complete()
                .map_err(err("querying an event"))
        })
    }

    /// Milliseconds between `self` and the later `end` (both created with timing on, both done).
    pub fn elapsed_ms(&self, end: &Event) -> Result<f32> {
        guard("Event::elapsed_ms", || {
            self.inner
                .elapsed_ms(&end.inner)
                .map_err(err("measuring the time between two events"))
        })
    }
}

/// An instantiated CUDA graph, made by [`Stream::end_capture`]; replay it with [`Graph::launch`].
///
/// It replays exactly the captured work on the captured addresses: buffers it touches must stay
/// alive (and unmoved: do not `ensure` them bigger) while the graph may still be launched.
pub struct Graph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    device: Device,
}

// SAFETY: CUDA graph objects may be used from any thread provided calls on one graph are
// serialised. `Graph` is Send but not Sync: all its methods take `&self`, and without Sync a
// `&Graph` cannot be shared between threads, so calls are serialised by ownership.
unsafe impl Send for Graph {}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graph")
            .field("device", &self.device.ordinal())
            .finish()
    }
}

impl Graph {
    fn check_stream(&self, stream: &Stream) -> Result<()> {
        if stream.device() != &self.device {
            return Err(Error::invalid_arg(format!(
                "CUDA: a graph captured on device {} cannot run on a stream of device {}",
                self.device.ordinal(),
                stream.device().ordinal()
            )));
        }
        Ok(())
    }

    /// Queues one replay of the graph on `stream` (of the graph's device; need not be the
    /// stream it was captured on).
    pub fn launch(&self, stream: &Stream) -> Result<()> {
        self.check_stream(stream)?;
        guard("Graph::launch", || {
            self.device.bind()?;
            // SAFETY: `exec` is the live executable graph owned by `self`; the stream is alive and
            // of the same context (checked above).
            unsafe { cu::graph::launch(self.exec, stream.raw()) }
                .map_err(err("launching a graph (cuGraphLaunch)"))
        })
    }

    /// Uploads the graph's resources ahead of the first launch (optional; saves first-launch time).
    pub fn upload(&self, stream: &Stream) -> Result<()> {
        self.check_stream(stream)?;
        guard("Graph::upload", || {
            self.device.bind()?;
            // SAFETY: as in `launch`.
            unsafe { cu::graph::upload(self.exec, stream.raw()) }
                .map_err(err("uploading a graph (cuGraphUpload)"))
        })
    }

    /// Number of nodes in the captured graph (for reports and tests).
    pub fn node_count(&self) -> Result<usize> {
        guard("Graph::node_count", || {
            let mut n = 0usize;
            // SAFETY: `graph` is alive; a null node array asks only for the count.
            unsafe { sys::cuGraphGetNodes(self.graph, std::ptr::null_mut(), &mut n) }
                .result()
                .map_err(err("counting graph nodes (cuGraphGetNodes)"))?;
            Ok(n)
        })
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        let _ = guard("Graph::drop", || {
            self.device.bind()?;
            // SAFETY: both handles are owned by `self`, alive, and destroyed exactly once here.
            unsafe {
                let _ = cu::graph::exec_destroy(self.exec);
                let _ = cu::graph::destroy(self.graph);
            }
            Ok(())
        });
    }
}

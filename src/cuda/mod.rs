//! CUDA layer: devices, streams, events, CUDA graphs, device and pinned host buffers.
//!
//! Everything goes through `cudarc` with dynamic loading: the backend builds and links on machines
//! with no CUDA at all, and `libcuda.so.1` is opened at run time, on first use. Where it is missing,
//! every call returns an `UNAVAILABLE` error instead of panicking ([`available`] answers `false`).
//!
//! Rules that hold for the whole module:
//! - Every public function runs its CUDA calls inside [`guard`]: a panic in `cudarc` (a missing
//!   library or symbol) becomes an [`Error`], never an unwind into Triton.
//! - Every call that touches a context binds it to the calling thread first, so callers may move
//!   between threads; [`Device::bind_to_thread`] is still offered for the top of an execute, for
//!   code (ONNX Runtime, TensorRT) that uses the current context implicitly.
//! - Work is ordered by streams; the sync points are explicit ([`Stream::synchronize`],
//!   [`Event::synchronize`], the `*_pageable` copies that block). Freeing a [`DeviceBuffer`] waits
//!   for the device first, so a buffer is never freed under queued work.
//!
//! GPU-only checks are gathered in [`self_test`], run by hand on the GPU machine.

#[cfg(test)]
mod fake_driver_tests;
mod memory;
mod selftest;
mod stream;

pub use memory::{DeviceBuffer, PinnedBuffer};
pub use selftest::self_test;
pub use stream::{CaptureMode, Event, Graph, Stream};

use std::ffi::c_void;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use cudarc::driver::result::{self as cu, DriverError};
use cudarc::driver::sys;
use cudarc::driver::CudaContext;

use crate::error::{Error, ErrorCode, Result};

/// The library name named in messages (what the driver package installs on Linux).
const CUDA_LIBRARY: &str = "libcuda.so.1";

/// Runs `f`, turning a panic (e.g. `cudarc` failing to find libcuda or one of its symbols) into an
/// INTERNAL error that names `what`.
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(Error::from_panic(what, payload)),
    }
}

/// Turns a driver error into an [`Error`] whose message names the failed operation and the CUDA
/// error (name and description).
pub(crate) fn driver_error(what: &str, e: DriverError) -> Error {
    // Looking the texts up needs the driver's own functions; a driver missing them (cudarc then
    // panics) still gets the error's enum name.
    let text =
        |symbol: &str, f: fn(&DriverError) -> std::result::Result<&std::ffi::CStr, DriverError>| {
            if !has_symbol(symbol) {
                return None;
            }
            catch_unwind(|| f(&e).ok().map(|s| s.to_string_lossy().into_owned()))
                .ok()
                .flatten()
        };
    let name =
        text("cuGetErrorName", DriverError::error_name).unwrap_or_else(|| format!("{:?}", e.0));
    let desc = text("cuGetErrorString", DriverError::error_string)
        .unwrap_or_else(|| "no description".to_string());
    let code = match e.0 {
        sys::CUresult::CUDA_ERROR_NO_DEVICE
        | sys::CUresult::CUDA_ERROR_INVALID_DEVICE
        | sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY
        | sys::CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    };
    Error::new(code, format!("CUDA: {what} failed: {name} ({desc})"))
}

/// Whether the loaded driver library exports `symbol` (false when no library is loaded).
fn has_symbol(symbol: &str) -> bool {
    if driver_library().is_err() {
        return false;
    }
    catch_unwind(|| {
        // SAFETY: `culib` opens (once) the library already found loadable; looking a symbol up
        // runs no code of it. The pointer is not used.
        unsafe { sys::culib().get::<*const c_void>(symbol.as_bytes()).is_ok() }
    })
    .unwrap_or(false)
}

/// `map_err` shorthand: `cu_call(..).map_err(err("what"))`.
pub(crate) fn err(what: &str) -> impl FnOnce(DriverError) -> Error + '_ {
    move |e| driver_error(what, e)
}

/// Whether the driver library can be opened; `Err` holds the loader's reason. Asked once.
fn driver_library() -> std::result::Result<(), String> {
    static PRESENT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    PRESENT
        .get_or_init(|| {
            // SAFETY: `is_culib_present` only tries to open the candidate library names (running
            // their initialisers, as any dlopen does) and closes them again.
            let present = catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false);
            if present {
                return Ok(());
            }
            // Ask the loader once more, for the reason to show.
            // SAFETY: as above: opening the NVIDIA driver library only runs its initialisers.
            match unsafe { libloading::Library::new(CUDA_LIBRARY) } {
                Ok(_) => Err("the library opens but cudarc found none of its names usable".into()),
                Err(e) => {
                    // libloading puts dlerror()'s text in the error's source.
                    let mut reason = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        reason = format!("{reason}: {s}");
                        source = s.source();
                    }
                    Err(reason)
                }
            }
        })
        .clone()
}

/// Checks that the driver library is there and initialised (`cuInit`).
fn driver() -> Result<()> {
    if let Err(reason) = driver_library() {
        return Err(Error::unavailable(format!(
            "no CUDA driver found ({CUDA_LIBRARY} not loadable): {reason}; install the NVIDIA driver \
             or use instance kind KIND_CPU"
        )));
    }
    guard("cuInit", || {
        cu::init().map_err(err("initialising the driver (cuInit)"))
    })
}

/// True when the CUDA driver loads and sees at least one device. Never panics.
pub fn available() -> bool {
    device_count().map(|n| n > 0).unwrap_or(false)
}

/// Number of CUDA devices the driver sees (after `CUDA_VISIBLE_DEVICES`).
pub fn device_count() -> Result<usize> {
    driver()?;
    guard("cuDeviceGetCount", || {
        let n = cu::device::get_count().map_err(err("counting devices (cuDeviceGetCount)"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    })
}

/// The driver's CUDA version as (major, minor), e.g. (13, 0) for driver 580.
pub fn driver_version() -> Result<(u32, u32)> {
    driver()?;
    guard("cuDriverGetVersion", || {
        let mut v: std::ffi::c_int = 0;
        // SAFETY: `v` is a valid place for the driver to write one int.
        unsafe { sys::cuDriverGetVersion(&mut v) }
            .result()
            .map_err(err("reading the driver version (cuDriverGetVersion)"))?;
        let v = u32::try_from(v).unwrap_or(0);
        Ok((v / 1000, (v % 1000) / 10))
    })
}

/// What identifies a device: for the engine cache (an engine built for one GPU model only runs on
/// that model) and for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// (major, minor), e.g. (9, 0).
    pub compute_capability: (u32, u32),
    /// Total device memory in bytes.
    pub total_memory: u64,
    /// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi prints it.
    pub uuid: String,
}

impl DeviceInfo {
    /// "NAME sm_XY NNGiB": the same for every card of one model, so engines built on one card
    /// are reused on its siblings (no UUID); memory is rounded to whole GiB.
    pub fn cache_identity(&self) -> String {
        let (major, minor) = self.compute_capability;
        let gib = (self.total_memory as f64 / (1u64 << 30) as f64).round() as u64;
        format!("{} sm_{major}{minor} {gib}GiB", self.name.trim())
    }

    /// "sm_XY".
    pub fn sm(&self) -> String {
        format!(
            "sm_{}{}",
            self.compute_capability.0, self.compute_capability.1
        )
    }
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "device {}: {} ({}, {:.1} GiB, {})",
            self.ordinal,
            self.name,
            self.sm(),
            self.total_memory as f64 / (1u64 << 30) as f64,
            self.uuid
        )
    }
}

/// Formats a CUDA UUID like nvidia-smi: "GPU-" then 8-4-4-4-12 lowercase hex digits.
fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex = hex::encode(bytes);
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Reads a device's identity without creating a context on it (no device memory used).
pub fn device_identity(ordinal: usize) -> Result<DeviceInfo> {
    driver()?;
    guard("device_identity", || {
        let dev = device_handle(ordinal)?;
        let name = cu::device::get_name(dev).map_err(err("reading the device name"))?;
        let uuid = cu::device::get_uuid(dev).map_err(err("reading the device UUID"))?;
        let uuid: [u8; 16] = uuid.bytes.map(|b| b as u8);
        let attr = |a: sys::CUdevice_attribute, what: &str| -> Result<u32> {
            // SAFETY: `dev` is a valid device handle from `cuDeviceGet`.
            let v = unsafe { cu::device::get_attribute(dev, a) }.map_err(err(what))?;
            Ok(u32::try_from(v).unwrap_or(0))
        };
        use sys::CUdevice_attribute::*;
        let major = attr(
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
            "reading the compute capability",
        )?;
        let minor = attr(
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
            "reading the compute capability",
        )?;
        // SAFETY: `dev` is a valid device handle from `cuDeviceGet`.
        let total =
            unsafe { cu::device::total_mem(dev) }.map_err(err("reading the total memory"))?;
        Ok(DeviceInfo {
            ordinal,
            name,
            compute_capability: (major, minor),
            total_memory: total as u64,
            uuid: format_uuid(&uuid),
        })
    })
    .map_err(|e| e.context(format!("CUDA device {ordinal}")))
}

/// `cuDeviceGet` with a clear error for an ordinal past the end.
fn device_handle(ordinal: usize) -> Result<sys::CUdevice> {
    let count = cu::device::get_count().map_err(err("counting devices (cuDeviceGetCount)"))?;
    let count = usize::try_from(count).unwrap_or(0);
    if ordinal >= count {
        return Err(Error::unavailable(format!(
            "no CUDA device {ordinal}: the driver sees {count} device(s) (check CUDA_VISIBLE_DEVICES \
             and the instance group's gpus)"
        )));
    }
    let ordinal = std::ffi::c_int::try_from(ordinal)
        .map_err(|_| Error::invalid_arg(format!("device ordinal {ordinal} out of range")))?;
    cu::device::get(ordinal).map_err(err("getting the device handle (cuDeviceGet)"))
}

/// One CUDA device with its primary context retained. Cheap to clone (shared); the context is
/// released when the last clone, stream and buffer of it is gone.
#[derive(Clone)]
pub struct Device {
    inner: Arc<DeviceInner>,
}

struct DeviceInner {
    ctx: Arc<CudaContext>,
    info: DeviceInfo,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("info", &self.inner.info)
            .finish()
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        self.inner.ctx.cu_ctx() == other.inner.ctx.cu_ctx()
    }
}
impl Eq for Device {}

impl Device {
    /// Opens device `ordinal` (retains its primary context, the one the CUDA runtime, ONNX Runtime
    /// and TensorRT use too). With no driver: UNAVAILABLE "KIND_GPU instance on device N: no CUDA
    /// driver found (libcuda.so.1 not loadable): ...".
    pub fn open(ordinal: usize) -> Result<Device> {
        Self::open_inner(ordinal)
            .map_err(|e| e.context(format!("KIND_GPU instance on device {ordinal}")))
    }

    fn open_inner(ordinal: usize) -> Result<Device> {
        let info = device_identity(ordinal).map_err(|e| {
            // device_identity adds "CUDA device N"; the caller names the device already.
            Error::new(e.code(), e.message().to_string())
        })?;
        guard("Device::open", || {
            let ctx = CudaContext::new(ordinal).map_err(err("retaining the primary context"))?;
            // SAFETY: this module never creates cudarc `CudaSlice`s, the only objects that use
            // event tracking; all ordering is by explicit streams, events and sync points.
            unsafe { ctx.disable_event_tracking() };
            Ok(Device {
                inner: Arc::new(DeviceInner { ctx, info }),
            })
        })
    }

    pub fn ordinal(&self) -> usize {
        self.inner.info.ordinal
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    /// Makes this device's context current on the calling thread (call at the top of every
    /// execute, before handing control to ONNX Runtime or TensorRT).
    pub fn bind_to_thread(&self) -> Result<()> {
        guard("Device::bind_to_thread", || self.bind())
    }

    /// Binding without the panic guard, for use inside guarded functions.
    pub(crate) fn bind(&self) -> Result<()> {
        // Straight to the driver (not `CudaContext::bind_to_thread`, which first reports any error
        // cudarc stored while dropping an object, unrelated to this call).
        let want = self.inner.ctx.cu_ctx();
        let what = || format!("making device {}'s context current", self.ordinal());
        let current = cu::ctx::get_current().map_err(|e| driver_error(&what(), e))?;
        if current != Some(want) {
            // SAFETY: `want` is the primary context retained by `self`, alive while `self` is.
            unsafe { cu::ctx::set_current(want) }.map_err(|e| driver_error(&what(), e))?;
        }
        Ok(())
    }

    /// Binds, then waits for all work of the context (`cuCtxSynchronize`), for use inside guarded
    /// functions.
    pub(crate) fn sync_raw(&self, what: &str) -> Result<()> {
        self.bind()?;
        cu::ctx::synchronize().map_err(err(what))
    }

    pub(crate) fn ctx(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// A new non-blocking stream (does not synchronise with the legacy default stream).
    pub fn new_stream(&self) -> Result<Stream> {
        guard("Device::new_stream", || Stream::new(self))
    }

    /// Waits until all work queued on this device's context has finished.
    pub fn synchronize(&self) -> Result<()> {
        guard("Device::synchronize", || {
            self.sync_raw(&format!("synchronising device {}", self.ordinal()))
        })
    }

    /// (free, total) device memory in bytes, as the driver reports it (for leak checks).
    pub fn mem_get_info(&self) -> Result<(usize, usize)> {
        guard("Device::mem_get_info", || {
            self.bind()?;
            cu::mem_get_info().map_err(|e| {
                driver_error(
                    &format!("reading device {}'s memory (cuMemGetInfo)", self.ordinal()),
                    e,
                )
            })
        })
    }

    /// The raw `CUcontext` (e.g. for TensorRT / ONNX Runtime). Owned by this `Device`: do not
    /// destroy it, and do not use it after the last clone of this `Device` is dropped.
    pub fn cu_context(&self) -> *mut c_void {
        self.inner.ctx.cu_ctx() as *mut c_void
    }

    /// A new event on this device; `timing` enables [`Event::elapsed_ms`] (slightly costlier).
    pub fn new_event(&self, timing: bool) -> Result<Event> {
        guard("Device::new_event", || Event::new(self, timing))
    }

    /// Whether this device can read and write `peer`'s memory directly (NVLink / PCIe P2P).
    pub fn can_access_peer(&self, peer: &Device) -> Result<bool> {
        guard("Device::can_access_peer", || {
            let mut can: std::ffi::c_int = 0;
            // SAFETY: both handles come from successfully opened devices; `can` is writable.
            unsafe {
                sys::cuDeviceCanAccessPeer(
                    &mut can,
                    self.inner.ctx.cu_device(),
                    peer.inner.ctx.cu_device(),
                )
            }
            .result()
            .map_err(err("asking for peer access (cuDeviceCanAccessPeer)"))?;
            Ok(can != 0)
        })
    }

    /// Lets this device's context access `peer`'s memory directly. Already enabled is fine. Peer
    /// copies ([`Stream::copy_peer`]) work without this too (staged by the driver), only slower.
    pub fn enable_peer_access(&self, peer: &Device) -> Result<()> {
        guard("Device::enable_peer_access", || {
            self.bind()?;
            // SAFETY: the peer context is alive (held by `peer`); flags must be 0.
            match unsafe { sys::cuCtxEnablePeerAccess(peer.inner.ctx.cu_ctx(), 0) } {
                sys::CUresult::CUDA_SUCCESS
                | sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => Ok(()),
                other => Err(driver_error(
                    &format!(
                        "enabling access from device {} to device {}",
                        self.ordinal(),
                        peer.ordinal()
                    ),
                    DriverError(other),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, cc: (u32, u32), mem: u64) -> DeviceInfo {
        DeviceInfo {
            ordinal: 0,
            name: name.into(),
            compute_capability: cc,
            total_memory: mem,
            uuid: "GPU-x".into(),
        }
    }

    #[test]
    fn cache_identity_is_name_sm_and_rounded_gib_without_uuid() {
        // An H100 SXM reports 85_030_109_184 bytes (79.19 GiB).
        let h100 = info("NVIDIA H100 80GB HBM3", (9, 0), 85_030_109_184);
        assert_eq!(h100.cache_identity(), "NVIDIA H100 80GB HBM3 sm_90 79GiB");
        let b200 = info("NVIDIA B200 ", (10, 0), 191 * (1u64 << 30) + 100);
        assert_eq!(b200.cache_identity(), "NVIDIA B200 sm_100 191GiB");
        assert!(!h100.cache_identity().contains("GPU-"));
        assert_eq!(h100.sm(), "sm_90");
    }

    #[test]
    fn uuid_is_formatted_like_nvidia_smi() {
        let bytes: [u8; 16] = core::array::from_fn(|i| (i as u8) * 17);
        assert_eq!(
            format_uuid(&bytes),
            "GPU-00112233-4455-6677-8899-aabbccddeeff"
        );
    }

    #[test]
    fn guard_turns_panics_into_internal_errors() {
        let e = guard::<()>("cuSomething", || panic!("Missing symbol cuSomething_v9")).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Internal);
        assert!(e.to_string().contains("cuSomething"), "{e}");
        assert!(
            e.to_string().contains("Missing symbol cuSomething_v9"),
            "{e}"
        );
        assert_eq!(guard("ok", || Ok(7)).unwrap(), 7);
    }

    #[test]
    fn availability_agrees_with_device_count_and_never_panics() {
        let avail = catch_unwind(available).expect("available() must not panic");
        let count = catch_unwind(device_count).expect("device_count() must not panic");
        match count {
            Ok(n) => assert_eq!(avail, n > 0),
            Err(e) => {
                assert!(!avail);
                assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
            }
        }
    }

    #[test]
    fn opening_a_device_without_a_driver_fails_clearly() {
        let opened = catch_unwind(|| Device::open(0)).expect("Device::open must not panic");
        if driver_library().is_ok() {
            // On a GPU machine the driver is there: the call must either work or say why.
            if let Err(e) = opened {
                assert!(
                    e.to_string().starts_with("KIND_GPU instance on device 0: "),
                    "{e}"
                );
            }
            return;
        }
        let e = opened.expect_err("no driver here, Device::open(0) must fail");
        assert_eq!(e.code(), ErrorCode::Unavailable);
        let msg = e.to_string();
        eprintln!("{msg}");
        assert!(
            msg.starts_with(
                "KIND_GPU instance on device 0: no CUDA driver found (libcuda.so.1 not loadable): "
            ),
            "{msg}"
        );
        // The loader's own reason is carried.
        assert!(msg.len() > "KIND_GPU instance on device 0: no CUDA driver found (libcuda.so.1 not loadable): ".len() + 10);
        // The other entry points fail the same way, without panicking.
        assert!(!available());
        for e in [
            device_count().unwrap_err(),
            device_identity(3).unwrap_err(),
            driver_version().unwrap_err(),
        ] {
            assert_eq!(e.code(), ErrorCode::Unavailable);
            assert!(e.to_string().contains("no CUDA driver found"), "{e}");
        }
        assert!(self_test()
            .unwrap_err()
            .to_string()
            .contains("no CUDA driver found"));
    }
}

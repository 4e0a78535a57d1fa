//! A test double of rusttrt's TensorRT shim at its C seam: every function of
//! `include/rusttrt_trt.h`, implemented without TensorRT by running the network with ONNX
//! Runtime on the CPU.
//!
//! It lets the Rust side of the native engine (build → plan bytes → engine cache → load →
//! execution context → device outputs → scatter → responses) run on machines with no GPU and no
//! TensorRT. "Device" memory there comes from the project's fake libcuda
//! (`src/cuda/fake_cuda.c`), where device pointers are host addresses: this double reads inputs
//! from and writes outputs to the addresses the caller sets, so it must never be used with a real
//! CUDA driver (the addresses would be real device memory). The stream argument is ignored: the
//! fake driver runs every copy at once, so enqueue runs synchronously too.
//!
//! It keeps the interface's contracts and reports a broken one loudly (an error status naming the
//! tensor or profile, an INTERNAL_ERROR log line, and a count that tests read through
//! `rt_double_counter("violations")`):
//! - every I/O tensor address set before enqueue; input shapes set, of the engine's rank, equal
//!   to its fixed dims and inside the active profile;
//! - profiles: min ≤ opt ≤ max, every dynamic input covered, ranks and fixed dims as the network;
//! - a plan loads only if it is a plan of this double, of the same major version, unaltered
//!   (checksum); else RT_ERR_DESERIALIZE, as TensorRT returns null;
//! - destroy order: no engine destroyed while one of its contexts lives, no library destroyed
//!   while one of its networks or engines lives.
//!
//! Fault injection for tests, through the environment (read at each call):
//! - `RUSTTRT_SEAM_DOUBLE_VERSION=M.m.p` — the TensorRT version the "loaded library" claims
//!   (default 10.99.0, the headers' version); another major is refused as the real shim does;
//! - `RUSTTRT_SEAM_DOUBLE_REJECT=text` — the parser rejects every model (TensorRT's message
//!   format, `text` quoted in it);
//! - `RUSTTRT_SEAM_DOUBLE_NO_LIBRARY=1` — libnvinfer is not on the loader path (when no path
//!   is given), as the real shim reports it;
//! - `RUSTTRT_SEAM_DOUBLE_CRASH=build` — the build aborts the process (a crashing builder);
//! - `RUSTTRT_SEAM_DOUBLE_HANG=build` — the build never returns (a hung builder).
//!
//! ONNX Runtime is loaded from `ORT_DYLIB_PATH`.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynTensorValueType, TensorElementType, TensorRefMut, ValueType};

// ---- the C interface's types (include/rusttrt_trt.h) -----------------------------------------

type RtStatus = i32;
const RT_OK: RtStatus = 0;
const RT_ERR_INVALID_ARG: RtStatus = 1;
const RT_ERR_NOT_FOUND: RtStatus = 2;
const RT_ERR_UNSUPPORTED: RtStatus = 3;
const RT_ERR_PARSE: RtStatus = 4;
const RT_ERR_BUILD: RtStatus = 5;
const RT_ERR_DESERIALIZE: RtStatus = 6;
const RT_ERR_INTERNAL: RtStatus = 7;

const RT_ABI_VERSION: i32 = 1;
const RT_MAX_DIMS: usize = 8;

/// The TensorRT version this double claims for its "headers" (10.99.0: no real release).
const HEADER_VERSION: (i32, i32, i32) = (10, 99, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RtDims {
    nb_dims: i32,
    d: [i64; RT_MAX_DIMS],
}

#[repr(C)]
pub struct RtBytes {
    data: *mut c_void,
    len: usize,
}

#[repr(C)]
pub struct RtProfileInput {
    name: *const c_char,
    min: RtDims,
    opt: RtDims,
    max: RtDims,
}

#[repr(C)]
pub struct RtProfile {
    inputs: *const RtProfileInput,
    n_inputs: usize,
}

#[repr(C)]
pub struct RtBuildOptions {
    fp16: i32,
    workspace_bytes: u64,
    builder_optimization_level: i32,
    profiles: *const RtProfile,
    n_profiles: usize,
    use_timing_cache: i32,
    timing_cache: *const c_void,
    timing_cache_len: usize,
    timing_cache_out: *mut RtBytes,
}

type LoggerFn = Option<unsafe extern "C" fn(user: *mut c_void, severity: i32, msg: *const c_char)>;

const LOG_INTERNAL_ERROR: i32 = 0;
const LOG_INFO: i32 = 3;

// ---- errors, logging, counters ----------------------------------------------------------------

struct Fail(RtStatus, String);

type R<T> = std::result::Result<T, Fail>;

fn fail<T>(status: RtStatus, msg: impl Into<String>) -> R<T> {
    Err(Fail(status, msg.into()))
}

struct Logger {
    cb: LoggerFn,
    user: usize,
    max: i32,
}

static LOGGER: Mutex<Logger> = Mutex::new(Logger {
    cb: None,
    user: 0,
    max: LOG_INFO,
});

fn log(severity: i32, msg: &str) {
    let l = LOGGER.lock().unwrap_or_else(|p| p.into_inner());
    if severity > l.max {
        return;
    }
    if let (Some(cb), Ok(c)) = (l.cb, CString::new(format!("[seam double] {msg}"))) {
        // SAFETY: the callback was given by the caller for exactly this use; the message is a
        // NUL-terminated string valid for the call.
        unsafe { cb(l.user as *mut c_void, severity, c.as_ptr()) };
    }
}

static COUNTERS: OnceLock<Mutex<HashMap<&'static str, u64>>> = OnceLock::new();

fn count(name: &'static str) {
    let mut m = COUNTERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    *m.entry(name).or_default() += 1;
}

/// A broken contract: counted, logged as an internal error, returned as `status`.
fn violation<T>(status: RtStatus, msg: String) -> R<T> {
    count("violations");
    log(LOG_INTERNAL_ERROR, &format!("contract violation: {msg}"));
    fail(status, msg)
}

fn write_err(err: *mut c_char, errlen: usize, msg: &str) {
    if err.is_null() || errlen == 0 {
        return;
    }
    let bytes = msg.as_bytes();
    let n = bytes.len().min(errlen - 1);
    // SAFETY: the caller gives `errlen` writable bytes at `err`; we write n + 1 <= errlen.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), err.cast::<u8>(), n);
        *err.add(n) = 0;
    }
}

/// Runs `body`, turning its failure or panic into (status, message in `err`).
fn guarded(err: *mut c_char, errlen: usize, body: impl FnOnce() -> R<()>) -> RtStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => RT_OK,
        Ok(Err(Fail(st, msg))) => {
            write_err(err, errlen, &msg);
            st
        }
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            write_err(err, errlen, &format!("seam double panicked: {what}"));
            RT_ERR_INTERNAL
        }
    }
}

/// Calls a void/int entry point's body, never unwinding into C.
fn quiet<T>(default: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(default)
}

/// # Safety
/// `p` is null or a NUL-terminated string valid for the call.
unsafe fn cstr(p: *const c_char) -> R<String> {
    if p.is_null() {
        return fail(RT_ERR_INVALID_ARG, "null string argument");
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn dims_of(d: &RtDims) -> R<Vec<i64>> {
    if d.nb_dims < 0 || d.nb_dims as usize > RT_MAX_DIMS {
        return fail(
            RT_ERR_INVALID_ARG,
            format!("rank {} out of range", d.nb_dims),
        );
    }
    Ok(d.d[..d.nb_dims as usize].to_vec())
}

fn to_dims(v: &[i64]) -> RtDims {
    let mut d = RtDims {
        nb_dims: v.len() as i32,
        d: [0; RT_MAX_DIMS],
    };
    d.d[..v.len()].copy_from_slice(v);
    d
}

fn shape_str(v: &[i64]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn claimed_version() -> R<(i32, i32, i32)> {
    let Ok(v) = std::env::var("RUSTTRT_SEAM_DOUBLE_VERSION") else {
        return Ok(HEADER_VERSION);
    };
    let p: Vec<i32> = v.split('.').filter_map(|x| x.parse().ok()).collect();
    match p.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => fail(
            RT_ERR_INVALID_ARG,
            format!("RUSTTRT_SEAM_DOUBLE_VERSION '{v}' is not M.m.p"),
        ),
    }
}

fn version_number(v: (i32, i32, i32)) -> i32 {
    v.0 * 10000 + v.1 * 100 + v.2
}

// ---- ONNX Runtime -----------------------------------------------------------------------------

struct Env(ort::environment::Environment);

// SAFETY: an ONNX Runtime environment is documented thread-safe (sessions are created from
// several threads at once); the wrapper only hands out shared references.
unsafe impl Send for Env {}
// SAFETY: see Send.
unsafe impl Sync for Env {}

fn ort_env() -> R<&'static Env> {
    static ENV: OnceLock<std::result::Result<Env, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = std::env::var("ORT_DYLIB_PATH").map_err(|_| {
            "ORT_DYLIB_PATH is not set: the seam double runs networks with ONNX Runtime".to_string()
        })?;
        let b = ort::init_from(&path).map_err(|e| format!("loading ONNX Runtime {path}: {e}"))?;
        b.with_name("rusttrt-seam-double")
            .build()
            .map(Env)
            .map_err(|e| format!("creating an ONNX Runtime environment: {e}"))
    })
    .as_ref()
    .map_err(|e| Fail(RT_ERR_NOT_FOUND, e.clone()))
}

fn session(onnx: &[u8]) -> R<std::result::Result<Session, String>> {
    let env = ort_env()?;
    Ok(Session::builder(&env.0)
        .map_err(|e| e.to_string())
        .and_then(|b| b.with_intra_threads(1).map_err(|e| e.to_string()))
        .and_then(|mut b| b.commit_from_memory(onnx).map_err(|e| e.to_string())))
}

/// TensorRT's DataType number of an ONNX Runtime element type.
fn rt_dtype(t: TensorElementType) -> Option<i32> {
    Some(match t {
        TensorElementType::Float32 => 0,
        TensorElementType::Float16 => 1,
        TensorElementType::Int8 => 2,
        TensorElementType::Int32 => 3,
        TensorElementType::Bool => 4,
        TensorElementType::Uint8 => 5,
        TensorElementType::Bfloat16 => 7,
        TensorElementType::Int64 => 8,
        _ => return None,
    })
}

fn dtype_size(dt: i32) -> usize {
    match dt {
        0 | 3 => 4,
        1 | 7 => 2,
        8 => 8,
        _ => 1,
    }
}

#[derive(Clone)]
struct Io {
    name: CString,
    dtype: i32,
    dims: Vec<i64>,
}

fn io_of(s: &Session) -> R<(Vec<Io>, Vec<Io>)> {
    let one = |name: &str, t: &ValueType| -> R<Io> {
        match t {
            ValueType::Tensor { ty, shape, .. } => Ok(Io {
                name: CString::new(name)
                    .map_err(|_| Fail(RT_ERR_PARSE, format!("tensor name '{name}' has a NUL")))?,
                dtype: rt_dtype(*ty).ok_or_else(|| {
                    Fail(
                        RT_ERR_PARSE,
                        format!(
                            "tensor '{name}': element type {ty:?} is not supported by TensorRT"
                        ),
                    )
                })?,
                dims: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
            }),
            other => fail(
                RT_ERR_PARSE,
                format!("'{name}' is a {other:?}, not a tensor"),
            ),
        }
    };
    let inputs = s
        .inputs()
        .iter()
        .map(|o| one(o.name(), o.dtype()))
        .collect::<R<Vec<_>>>()?;
    let outputs = s
        .outputs()
        .iter()
        .map(|o| one(o.name(), o.dtype()))
        .collect::<R<Vec<_>>>()?;
    Ok((inputs, outputs))
}

// ---- library ------------------------------------------------------------------------------------

pub struct RtLib {
    children: AtomicUsize,
    version: (i32, i32, i32),
}

#[no_mangle]
pub extern "C" fn rt_abi_version() -> i32 {
    RT_ABI_VERSION
}

#[no_mangle]
pub extern "C" fn rt_header_version() -> i32 {
    version_number(HEADER_VERSION)
}

/// Reads one of the double's counters ("builds", "loads", "contexts", "enqueues",
/// "violations"); not part of the shim's interface, for tests only.
///
/// # Safety
/// `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn rt_double_counter(name: *const c_char) -> u64 {
    quiet(0, || {
        // SAFETY: the caller passes a NUL-terminated name.
        let Ok(n) = (unsafe { cstr(name) }) else {
            return 0;
        };
        COUNTERS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(n.as_str())
            .copied()
            .unwrap_or(0)
    })
}

#[no_mangle]
pub extern "C" fn rt_set_logger(log_cb: LoggerFn, log_user: *mut c_void, max_severity: i32) {
    quiet((), || {
        let mut l = LOGGER.lock().unwrap_or_else(|p| p.into_inner());
        l.cb = log_cb;
        l.user = log_user as usize;
        l.max = max_severity;
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_bytes_free(bytes: *mut RtBytes) {
    quiet((), || {
        if bytes.is_null() {
            return;
        }
        // SAFETY: the caller passes an rt_bytes that is empty or was filled by this library
        // (a boxed slice of exactly `len` bytes).
        unsafe {
            let b = &mut *bytes;
            if !b.data.is_null() {
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    b.data.cast::<u8>(),
                    b.len,
                )));
            }
            b.data = std::ptr::null_mut();
            b.len = 0;
        }
    })
}

fn give_bytes(v: Vec<u8>, out: *mut RtBytes) {
    if out.is_null() {
        return;
    }
    let len = v.len();
    let data = Box::into_raw(v.into_boxed_slice()).cast::<c_void>();
    // SAFETY: `out` is a valid rt_bytes slot of the caller.
    unsafe { *out = RtBytes { data, len } };
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_library_open(
    nvinfer_path: *const c_char,
    parser_path: *const c_char,
    log_cb: LoggerFn,
    log_user: *mut c_void,
    out: *mut *mut RtLib,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        if out.is_null() {
            return fail(RT_ERR_INVALID_ARG, "null out pointer");
        }
        if log_cb.is_some() {
            rt_set_logger(log_cb, log_user, LOG_INFO);
        }
        for p in [nvinfer_path, parser_path] {
            if !p.is_null() {
                // SAFETY: non-null paths are NUL-terminated (the header's contract).
                let path = unsafe { cstr(p) }?;
                if !std::path::Path::new(&path).exists() {
                    return fail(
                        RT_ERR_NOT_FOUND,
                        format!("cannot open {path}: No such file or directory"),
                    );
                }
            }
        }
        if nvinfer_path.is_null() && std::env::var_os("RUSTTRT_SEAM_DOUBLE_NO_LIBRARY").is_some() {
            return fail(
                RT_ERR_NOT_FOUND,
                format!(
                    "cannot open libnvinfer.so.{}: libnvinfer.so.{}: cannot open shared object file: No such file or directory (is TensorRT installed? set the backend config tensorrt-library)",
                    HEADER_VERSION.0, HEADER_VERSION.0
                ),
            );
        }
        let v = claimed_version()?;
        if v.0 != HEADER_VERSION.0 {
            return fail(
                RT_ERR_UNSUPPORTED,
                format!(
                    "libnvinfer.so.{} is TensorRT {}.{}.{}, but the shim was compiled against TensorRT {}.{}.{} headers; the major versions must match",
                    v.0, v.0, v.1, v.2, HEADER_VERSION.0, HEADER_VERSION.1, HEADER_VERSION.2
                ),
            );
        }
        ort_env()?;
        let lib = Box::new(RtLib {
            children: AtomicUsize::new(0),
            version: v,
        });
        // SAFETY: checked non-null above.
        unsafe { *out = Box::into_raw(lib) };
        Ok(())
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_library_version(
    lib: *const RtLib,
    version: *mut i32,
    build: *mut i32,
    parser_version: *mut i32,
) {
    quiet((), || {
        // SAFETY: a live library handle and valid out pointers (the header's contract).
        unsafe {
            let v = (*lib).version;
            *version = version_number(v);
            *build = 1;
            *parser_version = version_number(v);
        }
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_library_destroy(lib: *mut RtLib) {
    quiet((), || {
        if lib.is_null() {
            return;
        }
        // SAFETY: a library handle from rt_library_open, destroyed once.
        let l = unsafe { Box::from_raw(lib) };
        let n = l.children.load(Ordering::SeqCst);
        if n != 0 {
            let _: R<()> = violation(
                RT_ERR_INTERNAL,
                format!("library destroyed while {n} network(s) or engine(s) of it live"),
            );
            // Keep it alive: the children still point at it.
            std::mem::forget(l);
        }
    })
}

// ---- networks -----------------------------------------------------------------------------------

pub struct RtNetwork {
    lib: *const RtLib,
    onnx: Vec<u8>,
    inputs: Vec<Io>,
    built: bool,
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_network_parse(
    lib: *mut RtLib,
    onnx: *const c_void,
    len: usize,
    _model_path: *const c_char,
    _strongly_typed: i32,
    out: *mut *mut RtNetwork,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        if lib.is_null() || onnx.is_null() || out.is_null() {
            return fail(RT_ERR_INVALID_ARG, "null argument");
        }
        if let Ok(text) = std::env::var("RUSTTRT_SEAM_DOUBLE_REJECT") {
            return fail(
                RT_ERR_PARSE,
                format!("ONNX parser: In node 0 with name: n0 and operator: {text} (importModel): UNSUPPORTED_NODE: No importer registered for op: {text}"),
            );
        }
        // SAFETY: the caller gives `len` readable bytes at `onnx` for the call.
        let bytes = unsafe { std::slice::from_raw_parts(onnx.cast::<u8>(), len) }.to_vec();
        let s = session(&bytes)?.or_else(|e| fail(RT_ERR_PARSE, format!("ONNX parser: {e}")))?;
        let (inputs, _outputs) = io_of(&s)?;
        // SAFETY: live library handle.
        unsafe { &*lib }.children.fetch_add(1, Ordering::SeqCst);
        let net = Box::new(RtNetwork {
            lib,
            onnx: bytes,
            inputs,
            built: false,
        });
        // SAFETY: checked non-null above.
        unsafe { *out = Box::into_raw(net) };
        Ok(())
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_network_input_count(net: *const RtNetwork) -> i32 {
    // SAFETY: a live network handle.
    quiet(-1, || unsafe { &*net }.inputs.len() as i32)
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_network_input_info(
    net: *const RtNetwork,
    index: i32,
    name: *mut *const c_char,
    dims: *mut RtDims,
    dtype: *mut i32,
    is_shape_tensor: *mut i32,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        // SAFETY: a live network handle.
        let n = unsafe { &*net };
        let io = usize::try_from(index)
            .ok()
            .and_then(|i| n.inputs.get(i))
            .ok_or_else(|| Fail(RT_ERR_INVALID_ARG, format!("no network input {index}")))?;
        // SAFETY: valid out pointers (the header's contract); the name lives with the network.
        unsafe {
            *name = io.name.as_ptr();
            *dims = to_dims(&io.dims);
            *dtype = io.dtype;
            *is_shape_tensor = 0;
        }
        Ok(())
    })
}

#[derive(Clone, Debug, PartialEq)]
struct Range {
    name: String,
    min: Vec<i64>,
    opt: Vec<i64>,
    max: Vec<i64>,
}

/// Checks the profiles against the network as TensorRT's builder does.
fn check_profiles(net: &RtNetwork, profiles: &[Vec<Range>]) -> R<()> {
    let dynamic: Vec<&Io> = net
        .inputs
        .iter()
        .filter(|i| i.dims.iter().any(|&d| d < 0))
        .collect();
    if profiles.is_empty() && !dynamic.is_empty() {
        return violation(
            RT_ERR_BUILD,
            format!(
                "network has dynamic input '{}' but no optimization profile was given",
                dynamic[0].name.to_string_lossy()
            ),
        );
    }
    for (k, p) in profiles.iter().enumerate() {
        for r in p {
            let Some(io) = net
                .inputs
                .iter()
                .find(|i| i.name.to_str() == Ok(r.name.as_str()))
            else {
                return violation(
                    RT_ERR_BUILD,
                    format!(
                        "profile {k} names '{}', which is not a network input",
                        r.name
                    ),
                );
            };
            for (what, v) in [("min", &r.min), ("opt", &r.opt), ("max", &r.max)] {
                if v.len() != io.dims.len() {
                    return violation(
                        RT_ERR_BUILD,
                        format!(
                            "profile {k}, input '{}': {what} {} has rank {}, the network's {} has rank {}",
                            r.name,
                            shape_str(v),
                            v.len(),
                            shape_str(&io.dims),
                            io.dims.len()
                        ),
                    );
                }
            }
            for i in 0..io.dims.len() {
                let (lo, o, hi) = (r.min[i], r.opt[i], r.max[i]);
                if !(0 <= lo && lo <= o && o <= hi) {
                    return violation(
                        RT_ERR_BUILD,
                        format!(
                            "profile {k}, input '{}': dim {i} needs 0 <= min <= opt <= max, got {lo}, {o}, {hi}",
                            r.name
                        ),
                    );
                }
                if io.dims[i] >= 0 && (lo != io.dims[i] || hi != io.dims[i]) {
                    return violation(
                        RT_ERR_BUILD,
                        format!(
                            "profile {k}, input '{}': dim {i} is fixed at {} in the network, the profile gives {lo}..{hi}",
                            r.name, io.dims[i]
                        ),
                    );
                }
            }
        }
        for d in &dynamic {
            if !p.iter().any(|r| d.name.to_str() == Ok(r.name.as_str())) {
                return violation(
                    RT_ERR_BUILD,
                    format!(
                        "profile {k} does not cover the dynamic input '{}'",
                        d.name.to_string_lossy()
                    ),
                );
            }
        }
    }
    Ok(())
}

// Plan layout: MAGIC, major, minor, patch (i32 LE), fp16 (u8), profiles, onnx, SHA-256 of all
// that precedes it.
const MAGIC: &[u8; 8] = b"RTSEAMD1";

struct Writer(Vec<u8>);
impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn dims(&mut self, d: &[i64]) {
        self.u32(d.len() as u32);
        for &x in d {
            self.i64(x);
        }
    }
}

struct Reader<'a>(&'a [u8]);
impl Reader<'_> {
    fn take(&mut self, n: usize) -> R<&[u8]> {
        if self.0.len() < n {
            return fail(RT_ERR_DESERIALIZE, "truncated plan");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn i64(&mut self) -> R<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn bytes(&mut self) -> R<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn dims(&mut self) -> R<Vec<i64>> {
        let n = self.u32()? as usize;
        if n > RT_MAX_DIMS {
            return fail(RT_ERR_DESERIALIZE, "corrupt plan (rank)");
        }
        (0..n).map(|_| self.i64()).collect()
    }
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_network_build(
    net: *mut RtNetwork,
    opts: *const RtBuildOptions,
    out_plan: *mut RtBytes,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        if net.is_null() || opts.is_null() || out_plan.is_null() {
            return fail(RT_ERR_INVALID_ARG, "null argument");
        }
        if std::env::var("RUSTTRT_SEAM_DOUBLE_CRASH").is_ok_and(|v| v == "build") {
            log(
                LOG_INTERNAL_ERROR,
                "builder crashing on purpose (RUSTTRT_SEAM_DOUBLE_CRASH)",
            );
            std::process::abort();
        }
        if std::env::var("RUSTTRT_SEAM_DOUBLE_HANG").is_ok_and(|v| v == "build") {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        // SAFETY: live network and options (the header's contract).
        let (n, o) = unsafe { (&mut *net, &*opts) };
        if n.built {
            return violation(RT_ERR_BUILD, "network built twice".into());
        }
        if !(-1..=5).contains(&o.builder_optimization_level) {
            return fail(
                RT_ERR_BUILD,
                format!(
                    "builder optimization level {} out of 0..5",
                    o.builder_optimization_level
                ),
            );
        }
        let mut profiles = Vec::new();
        for k in 0..o.n_profiles {
            // SAFETY: `profiles` holds `n_profiles` entries, each `n_inputs` inputs.
            let p = unsafe { &*o.profiles.add(k) };
            let mut v = Vec::new();
            for i in 0..p.n_inputs {
                // SAFETY: as above.
                let pi = unsafe { &*p.inputs.add(i) };
                v.push(Range {
                    // SAFETY: NUL-terminated name.
                    name: unsafe { cstr(pi.name) }?,
                    min: dims_of(&pi.min)?,
                    opt: dims_of(&pi.opt)?,
                    max: dims_of(&pi.max)?,
                });
            }
            profiles.push(v);
        }
        check_profiles(n, &profiles)?;
        let v = {
            // SAFETY: the network's library outlives it (checked at destroy).
            unsafe { &*n.lib }.version
        };
        let mut w = Writer(MAGIC.to_vec());
        for x in [v.0, v.1, v.2] {
            w.u32(x as u32);
        }
        w.0.push(u8::from(o.fp16 != 0));
        w.u32(profiles.len() as u32);
        for p in &profiles {
            w.u32(p.len() as u32);
            for r in p {
                w.bytes(r.name.as_bytes());
                w.dims(&r.min);
                w.dims(&r.opt);
                w.dims(&r.max);
            }
        }
        w.bytes(&n.onnx);
        let digest = Sha256::digest(&w.0);
        w.0.extend_from_slice(&digest);
        if o.use_timing_cache != 0 && !o.timing_cache_out.is_null() {
            // SAFETY: `timing_cache_len` readable bytes at `timing_cache` when non-null.
            let old = if o.timing_cache.is_null() {
                &[][..]
            } else {
                unsafe {
                    std::slice::from_raw_parts(o.timing_cache.cast::<u8>(), o.timing_cache_len)
                }
            };
            let runs = if old.starts_with(b"RTSEAMTC") && old.len() == 16 {
                u64::from_le_bytes(old[8..16].try_into().unwrap_or([0; 8]))
            } else {
                0
            };
            let mut tc = b"RTSEAMTC".to_vec();
            tc.extend_from_slice(&(runs + 1).to_le_bytes());
            give_bytes(tc, o.timing_cache_out);
        }
        n.built = true;
        count("builds");
        give_bytes(w.0, out_plan);
        Ok(())
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_network_destroy(net: *mut RtNetwork) {
    quiet((), || {
        if net.is_null() {
            return;
        }
        // SAFETY: a network from rt_network_parse, destroyed once; its library still lives.
        let n = unsafe { Box::from_raw(net) };
        unsafe { &*n.lib }.children.fetch_sub(1, Ordering::SeqCst);
    })
}

// ---- engines ------------------------------------------------------------------------------------

pub struct RtEngine {
    lib: *const RtLib,
    session: Mutex<Session>,
    /// Inputs then outputs.
    io: Vec<(Io, bool)>,
    profiles: Vec<Vec<Range>>,
    contexts: AtomicUsize,
}

/// A plan's contents: FP16 flag, profiles, ONNX bytes, TensorRT version that built it.
type Plan = (bool, Vec<Vec<Range>>, Vec<u8>, (i32, i32, i32));

fn parse_plan(plan: &[u8]) -> R<Plan> {
    if plan.len() < MAGIC.len() + 32 || &plan[..MAGIC.len()] != MAGIC {
        return fail(
            RT_ERR_DESERIALIZE,
            "deserializeCudaEngine failed: the bytes are not a serialized engine of this TensorRT",
        );
    }
    let (body, digest) = plan.split_at(plan.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return fail(
            RT_ERR_DESERIALIZE,
            "deserializeCudaEngine failed: the serialized engine is corrupt (checksum)",
        );
    }
    let mut r = Reader(&body[MAGIC.len()..]);
    let v = (r.u32()? as i32, r.u32()? as i32, r.u32()? as i32);
    let fp16 = r.take(1)?[0] != 0;
    let np = r.u32()? as usize;
    let mut profiles = Vec::new();
    for _ in 0..np {
        let ni = r.u32()? as usize;
        let mut p = Vec::new();
        for _ in 0..ni {
            let name = String::from_utf8_lossy(&r.bytes()?).into_owned();
            p.push(Range {
                name,
                min: r.dims()?,
                opt: r.dims()?,
                max: r.dims()?,
            });
        }
        profiles.push(p);
    }
    let onnx = r.bytes()?;
    Ok((fp16, profiles, onnx, v))
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_engine_load(
    lib: *mut RtLib,
    plan: *const c_void,
    len: usize,
    out: *mut *mut RtEngine,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        if lib.is_null() || plan.is_null() || out.is_null() {
            return fail(RT_ERR_INVALID_ARG, "null argument");
        }
        // SAFETY: `len` readable bytes at `plan` for the call.
        let bytes = unsafe { std::slice::from_raw_parts(plan.cast::<u8>(), len) };
        let (_fp16, profiles, onnx, v) = parse_plan(bytes)?;
        // SAFETY: live library handle.
        let l = unsafe { &*lib };
        if v.0 != l.version.0 {
            return fail(
                RT_ERR_DESERIALIZE,
                format!(
                    "deserializeCudaEngine failed: the engine was built by TensorRT {}.{}.{}, this is TensorRT {}.{}.{}",
                    v.0, v.1, v.2, l.version.0, l.version.1, l.version.2
                ),
            );
        }
        let s = session(&onnx)?.or_else(|e| fail(RT_ERR_DESERIALIZE, e))?;
        let (inputs, outputs) = io_of(&s)?;
        let io = inputs
            .into_iter()
            .map(|i| (i, true))
            .chain(outputs.into_iter().map(|o| (o, false)))
            .collect();
        l.children.fetch_add(1, Ordering::SeqCst);
        count("loads");
        let e = Box::new(RtEngine {
            lib,
            session: Mutex::new(s),
            io,
            profiles,
            contexts: AtomicUsize::new(0),
        });
        // SAFETY: checked non-null above.
        unsafe { *out = Box::into_raw(e) };
        Ok(())
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_engine_io_count(engine: *const RtEngine) -> i32 {
    // SAFETY: a live engine handle.
    quiet(-1, || unsafe { &*engine }.io.len() as i32)
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_engine_io_info(
    engine: *const RtEngine,
    index: i32,
    name: *mut *const c_char,
    is_input: *mut i32,
    dtype: *mut i32,
    dims: *mut RtDims,
    plain_device: *mut i32,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        // SAFETY: a live engine handle.
        let e = unsafe { &*engine };
        let (io, inp) = usize::try_from(index)
            .ok()
            .and_then(|i| e.io.get(i))
            .ok_or_else(|| Fail(RT_ERR_INVALID_ARG, format!("no engine I/O tensor {index}")))?;
        // SAFETY: valid out pointers; the name lives with the engine.
        unsafe {
            *name = io.name.as_ptr();
            *is_input = i32::from(*inp);
            *dtype = io.dtype;
            *dims = to_dims(&io.dims);
            *plain_device = 1;
        }
        Ok(())
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_engine_profile_count(engine: *const RtEngine) -> i32 {
    // SAFETY: a live engine handle.
    quiet(-1, || unsafe { &*engine }.profiles.len() as i32)
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_engine_profile_shape(
    engine: *const RtEngine,
    input: *const c_char,
    profile: i32,
    selector: i32,
    dims: *mut RtDims,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        // SAFETY: a live engine handle, a NUL-terminated name.
        let (e, name) = unsafe { (&*engine, cstr(input)?) };
        let Some((io, _)) =
            e.io.iter()
                .find(|(i, inp)| *inp && i.name.to_str() == Ok(name.as_str()))
        else {
            return fail(
                RT_ERR_INVALID_ARG,
                format!("'{name}' is not an engine input"),
            );
        };
        let p = usize::try_from(profile)
            .ok()
            .and_then(|p| e.profiles.get(p))
            .ok_or_else(|| {
                Fail(
                    RT_ERR_INVALID_ARG,
                    format!("no optimization profile {profile}"),
                )
            })?;
        let v = match p.iter().find(|r| r.name == name) {
            None => io.dims.clone(),
            Some(r) => match selector {
                0 => r.min.clone(),
                1 => r.opt.clone(),
                2 => r.max.clone(),
                s => return fail(RT_ERR_INVALID_ARG, format!("selector {s} is not 0, 1 or 2")),
            },
        };
        // SAFETY: valid out pointer.
        unsafe { *dims = to_dims(&v) };
        Ok(())
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_engine_destroy(engine: *mut RtEngine) {
    quiet((), || {
        if engine.is_null() {
            return;
        }
        // SAFETY: an engine from rt_engine_load, destroyed once.
        let e = unsafe { Box::from_raw(engine) };
        let n = e.contexts.load(Ordering::SeqCst);
        if n != 0 {
            let _: R<()> = violation(
                RT_ERR_INTERNAL,
                format!("engine destroyed while {n} execution context(s) of it live"),
            );
            std::mem::forget(e);
            return;
        }
        // SAFETY: the library outlives its engines (checked at its destroy).
        unsafe { &*e.lib }.children.fetch_sub(1, Ordering::SeqCst);
    })
}

// ---- execution contexts -------------------------------------------------------------------------

/// Input shapes and the output shapes inferred for them.
type OutShapes = (Vec<Vec<i64>>, HashMap<String, Vec<i64>>);

pub struct RtContext {
    engine: *const RtEngine,
    profile: usize,
    shapes: HashMap<String, Vec<i64>>,
    addresses: HashMap<String, usize>,
    /// Output shapes computed for the current input shapes.
    out_shapes: Option<OutShapes>,
}

impl RtContext {
    fn engine(&self) -> &RtEngine {
        // SAFETY: the engine outlives its contexts (checked at its destroy).
        unsafe { &*self.engine }
    }
    fn input_shapes(&self) -> R<Vec<Vec<i64>>> {
        self.engine()
            .io
            .iter()
            .filter(|(_, inp)| *inp)
            .map(|(io, _)| {
                let n = io.name.to_string_lossy().into_owned();
                match self.shapes.get(&n) {
                    Some(s) => Ok(s.clone()),
                    None if io.dims.iter().all(|&d| d >= 0) => Ok(io.dims.clone()),
                    None => violation(
                        RT_ERR_INVALID_ARG,
                        format!("the shape of dynamic input '{n}' was not set"),
                    ),
                }
            })
            .collect()
    }
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_context_new(
    engine: *mut RtEngine,
    out: *mut *mut RtContext,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        if engine.is_null() || out.is_null() {
            return fail(RT_ERR_INVALID_ARG, "null argument");
        }
        // SAFETY: a live engine handle.
        unsafe { &*engine }.contexts.fetch_add(1, Ordering::SeqCst);
        count("contexts");
        let c = Box::new(RtContext {
            engine,
            profile: 0,
            shapes: HashMap::new(),
            addresses: HashMap::new(),
            out_shapes: None,
        });
        // SAFETY: checked non-null.
        unsafe { *out = Box::into_raw(c) };
        Ok(())
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_context_set_profile(
    ctx: *mut RtContext,
    profile: i32,
    _stream: *mut c_void,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        // SAFETY: a live context handle, used by one thread.
        let c = unsafe { &mut *ctx };
        let n = c.engine().profiles.len();
        let Some(p) = usize::try_from(profile).ok().filter(|&p| p < n) else {
            return violation(
                RT_ERR_INVALID_ARG,
                format!("optimization profile {profile} does not exist (the engine has {n})"),
            );
        };
        c.profile = p;
        // TensorRT: input shapes must be set again after a profile switch.
        c.shapes.clear();
        c.out_shapes = None;
        Ok(())
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_context_set_input_shape(
    ctx: *mut RtContext,
    name: *const c_char,
    dims: *const RtDims,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        // SAFETY: a live context, a NUL-terminated name, valid dims.
        let (c, name, d) = unsafe { (&mut *ctx, cstr(name)?, &*dims) };
        let shape = dims_of(d)?;
        let e = c.engine();
        let Some((io, true)) =
            e.io.iter()
                .find(|(i, _)| i.name.to_str() == Ok(name.as_str()))
        else {
            return violation(
                RT_ERR_INVALID_ARG,
                format!("'{name}' is not an engine input"),
            );
        };
        if shape.len() != io.dims.len()
            || shape
                .iter()
                .zip(&io.dims)
                .any(|(&s, &d)| s < 0 || (d >= 0 && s != d))
        {
            return violation(
                RT_ERR_INVALID_ARG,
                format!(
                    "input '{name}': shape {} does not fit the engine's {}",
                    shape_str(&shape),
                    shape_str(&io.dims)
                ),
            );
        }
        if let Some(r) = e
            .profiles
            .get(c.profile)
            .and_then(|p| p.iter().find(|r| r.name == name))
        {
            let inside = shape
                .iter()
                .zip(r.min.iter().zip(&r.max))
                .all(|(s, (lo, hi))| lo <= s && s <= hi);
            if !inside {
                return violation(
                    RT_ERR_INVALID_ARG,
                    format!(
                        "input '{name}': shape {} is outside optimization profile {} ({} .. {})",
                        shape_str(&shape),
                        c.profile,
                        shape_str(&r.min),
                        shape_str(&r.max)
                    ),
                );
            }
        }
        c.shapes.insert(name, shape);
        c.out_shapes = None;
        Ok(())
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_context_set_tensor_address(
    ctx: *mut RtContext,
    name: *const c_char,
    ptr: *mut c_void,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        // SAFETY: a live context and a NUL-terminated name.
        let (c, name) = unsafe { (&mut *ctx, cstr(name)?) };
        if !c
            .engine()
            .io
            .iter()
            .any(|(i, _)| i.name.to_str() == Ok(name.as_str()))
        {
            return violation(
                RT_ERR_INVALID_ARG,
                format!("'{name}' is not an engine tensor"),
            );
        }
        if ptr.is_null() {
            return violation(RT_ERR_INVALID_ARG, format!("tensor '{name}': null address"));
        }
        c.addresses.insert(name, ptr as usize);
        Ok(())
    })
}

/// Wraps `data` (a copy of the input's bytes) as an input tensor of `io`'s type.
fn input_value<'a>(io: &Io, shape: &[i64], data: &'a mut [u8]) -> R<SessionInputValue<'a>> {
    let info = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Device,
        MemoryType::Default,
    )
    .map_err(|e| Fail(RT_ERR_INTERNAL, e.to_string()))?;
    let shape = ort::value::Shape::new(shape.iter().copied());
    let ptr = data.as_mut_ptr().cast::<c_void>();
    macro_rules! mk {
        ($t:ty) => {{
            // SAFETY: `ptr` holds shape × size_of::<$t> bytes, borrowed mutably for 'a.
            let v: TensorRefMut<'a, $t> = unsafe { TensorRefMut::from_raw(info, ptr, shape) }
                .map_err(|e| Fail(RT_ERR_INTERNAL, e.to_string()))?;
            SessionInputValue::from(v)
        }};
    }
    Ok(match io.dtype {
        0 => mk!(f32),
        1 => mk!(half::f16),
        2 => mk!(i8),
        3 => mk!(i32),
        4 => mk!(bool),
        5 => mk!(u8),
        7 => mk!(half::bf16),
        8 => mk!(i64),
        d => return fail(RT_ERR_UNSUPPORTED, format!("data type {d}")),
    })
}

/// Runs the engine's session on the inputs at `addrs` (or zeros when `None`), returning each
/// output's shape and bytes.
/// Each output's name, shape and bytes.
type Outputs = Vec<(String, Vec<i64>, Vec<u8>)>;

fn run(c: &RtContext, zeros: bool) -> R<Outputs> {
    let e = c.engine();
    let shapes = c.input_shapes()?;
    let inputs: Vec<&Io> = e.io.iter().filter(|(_, i)| *i).map(|(io, _)| io).collect();
    // Copies of the inputs (a double need not be fast), or zeros.
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    for (io, shape) in inputs.iter().zip(&shapes) {
        let name = io.name.to_string_lossy();
        let n: i64 = shape.iter().product();
        let bytes = n.max(0) as usize * dtype_size(io.dtype);
        bufs.push(if zeros {
            vec![0u8; bytes]
        } else {
            let addr = *c.addresses.get(name.as_ref()).ok_or_else(|| {
                Fail(RT_ERR_INVALID_ARG, format!("input '{name}' has no address"))
            })?;
            if bytes == 0 {
                Vec::new()
            } else {
                // SAFETY: the caller set `addr` to a buffer of at least the tensor's size (the
                // interface's contract); under the fake CUDA driver device memory is host memory.
                unsafe { std::slice::from_raw_parts(addr as *const u8, bytes) }.to_vec()
            }
        });
    }
    let mut values = Vec::new();
    for ((io, shape), buf) in inputs.iter().zip(&shapes).zip(bufs.iter_mut()) {
        values.push((
            io.name.to_string_lossy().into_owned(),
            input_value(io, shape, buf)?,
        ));
    }
    let mut session = e.session.lock().unwrap_or_else(|p| p.into_inner());
    let mut outs = session
        .run(values)
        .map_err(|err| Fail(RT_ERR_INTERNAL, format!("enqueueV3 failed: {err}")))?;
    let mut result = Vec::new();
    for (io, _) in e.io.iter().filter(|(_, i)| !*i) {
        let name = io.name.to_string_lossy().into_owned();
        let v = outs
            .remove(name.as_str())
            .ok_or_else(|| Fail(RT_ERR_INTERNAL, format!("no output '{name}'")))?;
        let t = v
            .downcast::<DynTensorValueType>()
            .map_err(|_| Fail(RT_ERR_INTERNAL, format!("output '{name}' is not a tensor")))?;
        let shape = match t.dtype() {
            ValueType::Tensor { shape, .. } => shape.to_vec(),
            _ => return fail(RT_ERR_INTERNAL, format!("output '{name}' is not a tensor")),
        };
        let n: i64 = shape.iter().product();
        let bytes = n.max(0) as usize * dtype_size(io.dtype);
        let data = if bytes == 0 {
            // An empty tensor may have no data pointer at all.
            Vec::new()
        } else {
            // SAFETY: ONNX Runtime's CPU output holds `bytes` bytes at data_ptr while `t` lives.
            unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, bytes) }.to_vec()
        };
        result.push((name, shape, data));
    }
    Ok(result)
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_context_tensor_shape(
    ctx: *const RtContext,
    name: *const c_char,
    dims: *mut RtDims,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        // SAFETY: a live context (used by one thread, so the mutable cache below is not
        // shared) and a NUL-terminated name.
        let (c, name) = unsafe { (&mut *(ctx as *mut RtContext), cstr(name)?) };
        let Some((io, is_input)) = c
            .engine()
            .io
            .iter()
            .find(|(i, _)| i.name.to_str() == Ok(name.as_str()))
            .cloned()
        else {
            return fail(
                RT_ERR_INVALID_ARG,
                format!("'{name}' is not an engine tensor"),
            );
        };
        let shape = if is_input {
            c.shapes.get(&name).cloned().unwrap_or(io.dims.clone())
        } else if io.dims.iter().all(|&d| d >= 0) {
            io.dims.clone()
        } else {
            // TensorRT infers output shapes from the input shapes; the double learns them by
            // running the network once on zeros of those shapes.
            let inputs = c.input_shapes()?;
            let fresh = c.out_shapes.as_ref().is_none_or(|(k, _)| *k != inputs);
            if fresh {
                let shapes = run(c, true)?.into_iter().map(|(n, s, _)| (n, s)).collect();
                c.out_shapes = Some((inputs, shapes));
            }
            c.out_shapes
                .as_ref()
                .and_then(|(_, m)| m.get(&name).cloned())
                .unwrap_or_default()
        };
        // SAFETY: valid out pointer.
        unsafe { *dims = to_dims(&shape) };
        Ok(())
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_context_enqueue(
    ctx: *mut RtContext,
    _stream: *mut c_void,
    err: *mut c_char,
    errlen: usize,
) -> RtStatus {
    guarded(err, errlen, || {
        // SAFETY: a live context.
        let c = unsafe { &mut *ctx };
        for (io, _) in &c.engine().io {
            let n = io.name.to_string_lossy();
            if !c.addresses.contains_key(n.as_ref()) {
                return violation(
                    RT_ERR_INVALID_ARG,
                    format!("enqueueV3: the address of tensor '{n}' was not set"),
                );
            }
        }
        let outs = run(c, false)?;
        for (name, shape, data) in outs {
            if let Some((_, known)) = &c.out_shapes {
                if let Some(k) = known.get(&name) {
                    if *k != shape {
                        return fail(
                            RT_ERR_INTERNAL,
                            format!(
                                "output '{name}': shape {} at run, {} inferred before (data-dependent shapes are not supported)",
                                shape_str(&shape),
                                shape_str(k)
                            ),
                        );
                    }
                }
            }
            let addr = c.addresses[&name];
            // SAFETY: the caller set `addr` to a buffer sized from rt_context_tensor_shape
            // (checked equal above when it asked); fake-driver device memory is host memory.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        }
        count("enqueues");
        Ok(())
    })
}

/// # Safety
/// As include/rusttrt_trt.h says.
#[no_mangle]
pub unsafe extern "C" fn rt_context_destroy(ctx: *mut RtContext) {
    quiet((), || {
        if ctx.is_null() {
            return;
        }
        // SAFETY: a context from rt_context_new, destroyed once, before its engine.
        let c = unsafe { Box::from_raw(ctx) };
        c.engine().contexts.fetch_sub(1, Ordering::SeqCst);
    })
}

//! The TensorRT engine over the shim library: safe owners of
//! the shim's handles, the factory, the engine and the per-instance runner.

use super::ffi::{self, ShimApi};
use super::options::{derive_profiles, NetInput, TrtOptions};
use super::{
    data_type_from_trt, emit_log, gpu_of, timing_cache_file_name, trt_type_name, GpuBuffer,
    GpuRuntime, GpuStream, LogSeverity, TensorRtConfig,
};
use crate::engine::{
    BuildSpec, Device, Engine, EngineFactory, MemLoc, Precision, Runner, Signature, TensorOut,
    TensorRef, TensorSpec,
};
use crate::error::{Error, ErrorCode, Result, ResultExt};
use crate::types::{element_count, shape_str, DataType};
use std::ffi::{c_char, c_void, CStr, CString};
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::Arc;

const ERR_LEN: usize = 2048;

/// Calls a shim function that reports through (status, message buffer), adding context.
fn call(
    what: impl FnOnce() -> String,
    f: impl FnOnce(*mut c_char, usize) -> ffi::rt_status,
) -> Result<()> {
    call_raw(f).map_err(|e| e.context(what()))
}

/// Calls a shim function that reports through (status, message buffer).
fn call_raw(f: impl FnOnce(*mut c_char, usize) -> ffi::rt_status) -> Result<()> {
    let mut buf = [0u8; ERR_LEN];
    let st = f(buf.as_mut_ptr().cast(), buf.len());
    if st == ffi::RT_OK {
        return Ok(());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let mut msg = String::from_utf8_lossy(&buf[..end]).into_owned();
    if msg.is_empty() {
        msg = format!("TensorRT shim status {st} without a message");
    }
    let code = match st {
        ffi::RT_ERR_INVALID_ARG | ffi::RT_ERR_PARSE => ErrorCode::InvalidArg,
        ffi::RT_ERR_NOT_FOUND => ErrorCode::Unavailable,
        ffi::RT_ERR_UNSUPPORTED => ErrorCode::Unsupported,
        ffi::RT_ERR_BUILD | ffi::RT_ERR_DESERIALIZE => ErrorCode::Internal,
        _ => ErrorCode::Internal,
    };
    Err(Error::new(code, msg))
}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid_arg(format!("{what} '{s}' contains a NUL byte")))
}

fn to_dims(name: &str, v: &[i64]) -> Result<ffi::rt_dims> {
    if v.len() > ffi::RT_MAX_DIMS {
        return Err(Error::invalid_arg(format!(
            "tensor '{name}': rank {} exceeds TensorRT's limit of {}",
            v.len(),
            ffi::RT_MAX_DIMS
        )));
    }
    let mut d = ffi::rt_dims {
        nb_dims: v.len() as i32,
        ..Default::default()
    };
    d.d[..v.len()].copy_from_slice(v);
    Ok(d)
}

fn from_dims(d: &ffi::rt_dims) -> Vec<i64> {
    let n = d.nb_dims.clamp(0, ffi::RT_MAX_DIMS as i32) as usize;
    d.d[..n].to_vec()
}

/// SAFETY (for callers): `p` must be a NUL-terminated string valid for this call.
unsafe fn borrowed_str(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-null, and the caller guarantees a valid C string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// TensorRT's log callback: forwards to the crate's log sink; never unwinds into C++.
unsafe extern "C" fn log_trampoline(_user: *mut c_void, severity: i32, msg: *const c_char) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: TensorRT passes a NUL-terminated message valid for the call.
        let text = unsafe { borrowed_str(msg) };
        emit_log(LogSeverity::from_trt(severity), &text);
    });
}

// ---- owners ---------------------------------------------------------------------------------

/// Bytes allocated by the shim.
struct ShimBytes(ffi::rt_bytes, Arc<ShimApi>);

impl ShimBytes {
    fn empty(api: &Arc<ShimApi>) -> Self {
        ShimBytes(
            ffi::rt_bytes {
                data: ptr::null_mut(),
                len: 0,
            },
            api.clone(),
        )
    }
    fn as_slice(&self) -> &[u8] {
        if self.0.data.is_null() || self.0.len == 0 {
            return &[];
        }
        // SAFETY: the shim allocated `len` bytes at `data` and nothing else frees them before drop.
        unsafe { std::slice::from_raw_parts(self.0.data.cast::<u8>(), self.0.len) }
    }
}

impl Drop for ShimBytes {
    fn drop(&mut self) {
        // SAFETY: `self.0` is either empty or was filled by the shim; rt_bytes_free accepts both.
        unsafe { (self.1.rt_bytes_free)(&mut self.0) }
    }
}

struct Lib {
    ptr: NonNull<ffi::rt_lib>,
    api: Arc<ShimApi>,
}

// SAFETY: an rt_lib is immutable after rt_library_open (function pointers and version numbers);
// the header documents it as usable from several threads at once.
unsafe impl Send for Lib {}
// SAFETY: see Send: no shim function mutates an rt_lib.
unsafe impl Sync for Lib {}

impl Drop for Lib {
    fn drop(&mut self) {
        // SAFETY: the pointer came from rt_library_open; networks and engines hold an Arc<Lib>,
        // so none outlives it.
        unsafe { (self.api.rt_library_destroy)(self.ptr.as_ptr()) }
    }
}

struct Network {
    ptr: NonNull<ffi::rt_network>,
    _lib: Arc<Lib>,
}

impl Drop for Network {
    fn drop(&mut self) {
        // SAFETY: the pointer came from rt_network_parse and is destroyed once, here.
        unsafe { (self._lib.api.rt_network_destroy)(self.ptr.as_ptr()) }
    }
}

struct EngineHandle {
    ptr: NonNull<ffi::rt_engine>,
    _lib: Arc<Lib>,
}

// SAFETY: TensorRT documents ICudaEngine as usable from several threads (introspection and
// context creation); the shim keeps no mutable state in rt_engine.
unsafe impl Send for EngineHandle {}
// SAFETY: see Send.
unsafe impl Sync for EngineHandle {}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        // SAFETY: from rt_engine_load; contexts hold an Arc<EngineHandle>, so none outlives it.
        unsafe { (self._lib.api.rt_engine_destroy)(self.ptr.as_ptr()) }
    }
}

struct ContextHandle {
    ptr: NonNull<ffi::rt_context>,
    _engine: Arc<EngineHandle>,
}

// SAFETY: an execution context may move between threads; it is only used through `&mut` of its
// one runner (Triton serializes Execute per instance), so never by two threads at once. It is
// deliberately not Sync.
unsafe impl Send for ContextHandle {}

impl Drop for ContextHandle {
    fn drop(&mut self) {
        // SAFETY: from rt_context_new, destroyed once, before its engine (held by `_engine`).
        unsafe { (self._engine._lib.api.rt_context_destroy)(self.ptr.as_ptr()) }
    }
}

// ---- factory --------------------------------------------------------------------------------

/// Builds TensorRT plans from ONNX and loads them.
pub struct TensorRtFactory {
    lib: Arc<Lib>,
    gpu: Arc<dyn GpuRuntime>,
    config: TensorRtConfig,
    /// Loaded TensorRT library, its build and the ONNX parser ("10.16.0.106+onnxparser10160").
    version: String,
    /// TensorRT version of the headers the shim was compiled with ("10.16.0").
    header_version: String,
}

impl TensorRtFactory {
    /// Opens the shim library and, through it, the TensorRT libraries (see [`TensorRtConfig`]);
    /// fails when one is missing, or TensorRT is of another major version than the headers the
    /// shim was compiled with.
    pub fn new(config: TensorRtConfig, gpu: Arc<dyn GpuRuntime>) -> Result<Self> {
        let api = ffi::open(&config.shim_path)?;
        let path_c = |p: &Option<std::path::PathBuf>| -> Result<Option<CString>> {
            p.as_ref()
                .map(|p| cstring("library path", &p.to_string_lossy()))
                .transpose()
        };
        let nvinfer = path_c(&config.nvinfer_path)?;
        let parser = path_c(&config.parser_path)?;
        let mut raw: *mut ffi::rt_lib = ptr::null_mut();
        call(
            || "opening TensorRT".to_string(),
            |err, len| {
                // SAFETY: paths are NUL-terminated or null; `raw` is a valid out slot; the
                // trampoline is a plain function valid for the whole process.
                unsafe {
                    (api.rt_library_open)(
                        nvinfer.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
                        parser.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
                        Some(log_trampoline),
                        ptr::null_mut(),
                        &mut raw,
                        err,
                        len,
                    )
                }
            },
        )?;
        let lib = NonNull::new(raw)
            .map(|ptr| {
                Arc::new(Lib {
                    ptr,
                    api: api.clone(),
                })
            })
            .ok_or_else(|| Error::internal("rt_library_open succeeded without a library handle"))?;
        // SAFETY: plain setter; the trampoline lives for the whole process.
        unsafe {
            (api.rt_set_logger)(
                Some(log_trampoline),
                ptr::null_mut(),
                config.max_log_severity as i32,
            )
        };
        let (mut v, mut build, mut pv) = (0i32, 0i32, 0i32);
        // SAFETY: valid handle and out pointers.
        unsafe { (api.rt_library_version)(lib.ptr.as_ptr(), &mut v, &mut build, &mut pv) };
        let version = format!(
            "{}.{}.{}.{build}+onnxparser{pv}",
            v / 10000,
            v / 100 % 100,
            v % 100
        );
        // SAFETY: returns a constant.
        let hv = unsafe { (api.rt_header_version)() };
        let header_version = format!("{}.{}.{}", hv / 10000, hv / 100 % 100, hv % 100);
        emit_log(
            LogSeverity::Info,
            &format!(
                "rusttrt: loaded TensorRT {version} through the shim {} (compiled against TensorRT {header_version} headers)",
                api.path.display()
            ),
        );
        Ok(TensorRtFactory {
            lib,
            gpu,
            config,
            version,
            header_version,
        })
    }

    /// NV_TENSORRT_VERSION of the headers the shim was compiled with.
    pub fn header_version_number(&self) -> i32 {
        // SAFETY: returns a constant.
        unsafe { (self.lib.api.rt_header_version)() }
    }

    /// TensorRT version of the headers the shim was compiled with ("10.16.0").
    pub fn header_version(&self) -> &str {
        &self.header_version
    }

    fn parse(&self, spec: &BuildSpec, onnx: &[u8], strongly_typed: bool) -> Result<Network> {
        let abs = std::path::absolute(&spec.model_path).unwrap_or_else(|_| spec.model_path.clone());
        let path = cstring("model path", &abs.to_string_lossy())?;
        let mut raw: *mut ffi::rt_network = ptr::null_mut();
        call(
            || format!("parsing '{}' with TensorRT", abs.display()),
            |err, len| {
                // SAFETY: `onnx` is readable for its length during the call (the parser copies
                // what it needs); `path` is NUL-terminated; `raw` is a valid out slot.
                unsafe {
                    (self.lib.api.rt_network_parse)(
                        self.lib.ptr.as_ptr(),
                        onnx.as_ptr().cast(),
                        onnx.len(),
                        path.as_ptr(),
                        i32::from(strongly_typed),
                        &mut raw,
                        err,
                        len,
                    )
                }
            },
        )?;
        let ptr = NonNull::new(raw)
            .ok_or_else(|| Error::internal("rt_network_parse returned no network"))?;
        Ok(Network {
            ptr,
            _lib: self.lib.clone(),
        })
    }

    fn network_inputs(net: &Network) -> Result<Vec<NetInput>> {
        // SAFETY: valid network handle.
        let n = unsafe { (net._lib.api.rt_network_input_count)(net.ptr.as_ptr()) };
        let mut out = Vec::new();
        for i in 0..n {
            let mut name: *const c_char = ptr::null();
            let mut dims = ffi::rt_dims::default();
            let (mut dtype, mut shape_tensor) = (0i32, 0i32);
            call(
                || format!("reading network input {i}"),
                |err, len| {
                    // SAFETY: valid handle, index in range, valid out pointers.
                    unsafe {
                        (net._lib.api.rt_network_input_info)(
                            net.ptr.as_ptr(),
                            i,
                            &mut name,
                            &mut dims,
                            &mut dtype,
                            &mut shape_tensor,
                            err,
                            len,
                        )
                    }
                },
            )?;
            // SAFETY: the name is owned by the network, alive during this call.
            let name = unsafe { borrowed_str(name) };
            out.push(NetInput {
                name,
                dims: from_dims(&dims),
                is_shape_tensor: shape_tensor != 0,
            });
        }
        Ok(out)
    }

    fn timing_cache_path(&self, device: i32) -> Result<Option<std::path::PathBuf>> {
        match &self.config.timing_cache_dir {
            None => Ok(None),
            Some(dir) => {
                let id = self.gpu.device_identity(device)?;
                Ok(Some(dir.join(timing_cache_file_name(&self.version, &id))))
            }
        }
    }

    fn build_plan(&self, spec: &BuildSpec, onnx: &[u8]) -> Result<Vec<u8>> {
        let device = gpu_of(spec)?;
        let opts = TrtOptions::from_options(&spec.options)?;
        self.gpu.set_device(device)?;
        if spec.precision == Precision::Fp16
            && (opts.strongly_typed || self.header_version_number() >= 11_00_00)
        {
            emit_log(
                LogSeverity::Info,
                &format!(
                    "rusttrt: model '{}': strongly typed TensorRT build: FP16 comes from the ONNX's own types",
                    spec.model_name
                ),
            );
        }
        let net = self.parse(spec, onnx, opts.strongly_typed)?;
        let inputs = Self::network_inputs(&net)?;
        let profiles = derive_profiles(
            &inputs,
            spec.max_batch_size,
            &spec.opt_batch_sizes,
            &opts.explicit_profiles,
        )?;

        // C views of the profiles; `names`, `c_inputs` must outlive the build call.
        let mut names: Vec<CString> = Vec::new();
        let mut c_inputs: Vec<Vec<ffi::rt_profile_input>> = Vec::new();
        for p in &profiles {
            let mut v = Vec::new();
            for (name, r) in &p.inputs {
                let c = cstring("input name", name)?;
                v.push(ffi::rt_profile_input {
                    name: c.as_ptr(),
                    min: to_dims(name, &r.min)?,
                    opt: to_dims(name, &r.opt)?,
                    max: to_dims(name, &r.max)?,
                });
                names.push(c);
            }
            c_inputs.push(v);
        }
        let c_profiles: Vec<ffi::rt_profile> = c_inputs
            .iter()
            .map(|v| ffi::rt_profile {
                inputs: v.as_ptr(),
                n_inputs: v.len(),
            })
            .collect();

        let cache_path = if opts.timing_cache {
            self.timing_cache_path(device)?
        } else {
            None
        };
        let cache_in = match &cache_path {
            // A timing cache only speeds the build up: one that cannot be read safely (not a
            // regular file, planted through a link, oversized) is ignored with a warning.
            Some(p) if !p.exists() => Vec::new(),
            Some(p) => match crate::safe_file::read_file(p, "TensorRT timing cache", 1 << 30) {
                Ok(b) => b,
                Err(e) => {
                    emit_log(
                        LogSeverity::Warning,
                        &format!("rusttrt: cannot read timing cache {}: {e}", p.display()),
                    );
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let mut cache_out = ShimBytes::empty(&self.lib.api);
        let mut plan = ShimBytes::empty(&self.lib.api);
        let c_opts = ffi::rt_build_options {
            fp16: i32::from(spec.precision == Precision::Fp16),
            workspace_bytes: opts.workspace_bytes.unwrap_or(0),
            builder_optimization_level: opts.builder_optimization_level.unwrap_or(-1),
            profiles: c_profiles.as_ptr(),
            n_profiles: c_profiles.len(),
            use_timing_cache: i32::from(cache_path.is_some()),
            timing_cache: cache_in.as_ptr().cast(),
            timing_cache_len: cache_in.len(),
            timing_cache_out: &mut cache_out.0,
        };
        call(
            || "building the TensorRT engine".to_string(),
            |err, len| {
                // SAFETY: every pointer in `c_opts` refers to memory alive until after the call
                // (names, c_inputs, c_profiles, cache_in, cache_out); `plan` is a valid out slot.
                unsafe {
                    (self.lib.api.rt_network_build)(
                        net.ptr.as_ptr(),
                        &c_opts,
                        &mut plan.0,
                        err,
                        len,
                    )
                }
            },
        )?;
        drop(net);
        if let Some(p) = &cache_path {
            if !cache_out.as_slice().is_empty() {
                if let Err(e) = write_atomically(p, cache_out.as_slice()) {
                    emit_log(
                        LogSeverity::Warning,
                        &format!("rusttrt: cannot write timing cache {}: {e}", p.display()),
                    );
                }
            }
        }
        Ok(plan.as_slice().to_vec())
    }

    fn load_plan(&self, spec: &BuildSpec, plan: &[u8]) -> Result<TensorRtEngine> {
        let device = gpu_of(spec)?;
        self.gpu.set_device(device)?;
        let mut raw: *mut ffi::rt_engine = ptr::null_mut();
        call(
            || "loading the TensorRT engine".to_string(),
            |err, len| {
                // SAFETY: `plan` is readable for its length during the call; valid out slot.
                unsafe {
                    (self.lib.api.rt_engine_load)(
                        self.lib.ptr.as_ptr(),
                        plan.as_ptr().cast(),
                        plan.len(),
                        &mut raw,
                        err,
                        len,
                    )
                }
            },
        )?;
        let ptr = NonNull::new(raw)
            .ok_or_else(|| Error::internal("rt_engine_load returned no engine"))?;
        let handle = Arc::new(EngineHandle {
            ptr,
            _lib: self.lib.clone(),
        });
        TensorRtEngine::new(handle, spec, device, self.gpu.clone(), &self.version)
    }
}

/// Writes `data` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl EngineFactory for TensorRtFactory {
    fn kind(&self) -> &'static str {
        "tensorrt"
    }

    fn library_version(&self) -> String {
        self.version.clone()
    }

    fn device_identity(&self, device: Device) -> Result<String> {
        match device {
            Device::Gpu(d) => self.gpu.device_identity(d),
            Device::Cpu => Err(Error::invalid_arg("the tensorrt engine has no CPU devices")),
        }
    }

    fn artifact_versions(&self) -> Vec<(&'static str, String)> {
        vec![
            ("tensorrt_shim_headers", self.header_version.clone()),
            ("tensorrt_shim_abi", ffi::RT_ABI_VERSION.to_string()),
        ]
    }

    fn cacheable(&self, _spec: &BuildSpec) -> bool {
        true
    }

    fn build(&self, spec: &BuildSpec, onnx: &[u8]) -> Result<Vec<u8>> {
        self.build_plan(spec, onnx)
            .ctx(|| format!("model '{}'", spec.model_name))
    }

    fn load(&self, spec: &BuildSpec, artifact: Option<&[u8]>) -> Result<Arc<dyn Engine>> {
        let engine = match artifact {
            Some(plan) => self.load_plan(spec, plan),
            None => {
                // No cached plan: build from the ONNX file now, without keeping the plan.
                let onnx = crate::onnx::load_with_external_data(&spec.model_path)?.to_bytes()?;
                let plan = self.build_plan(spec, &onnx)?;
                self.load_plan(spec, &plan)
            }
        };
        Ok(Arc::new(
            engine.ctx(|| format!("model '{}'", spec.model_name))?,
        ))
    }
}

// ---- engine ---------------------------------------------------------------------------------

/// One profile's (min, max) shape per engine input, in I/O order.
type ProfileRanges = Vec<(Vec<i64>, Vec<i64>)>;

/// One I/O tensor of an engine.
#[derive(Debug, Clone)]
struct IoTensor {
    name: String,
    c_name: CString,
    is_input: bool,
    dtype: DataType,
    dims: Vec<i64>,
}

/// A deserialized TensorRT engine on one device, shared by that device's instances.
pub struct TensorRtEngine {
    handle: Arc<EngineHandle>,
    device: i32,
    gpu: Arc<dyn GpuRuntime>,
    io: Arc<[IoTensor]>,
    /// Per profile, per input (in `io` order): (min, max) shapes.
    profile_ranges: Arc<[ProfileRanges]>,
    signature: Signature,
    description: String,
    model_name: String,
}

impl TensorRtEngine {
    fn new(
        handle: Arc<EngineHandle>,
        spec: &BuildSpec,
        device: i32,
        gpu: Arc<dyn GpuRuntime>,
        version: &str,
    ) -> Result<Self> {
        let e = handle.ptr.as_ptr();
        // SAFETY: valid engine handle.
        let n = unsafe { (handle._lib.api.rt_engine_io_count)(e) };
        let mut io = Vec::new();
        for i in 0..n {
            let mut name: *const c_char = ptr::null();
            let (mut is_input, mut dtype, mut plain) = (0i32, 0i32, 0i32);
            let mut dims = ffi::rt_dims::default();
            call(
                || format!("reading engine I/O tensor {i}"),
                |err, len| {
                    // SAFETY: valid handle, index in range, valid out pointers.
                    unsafe {
                        (handle._lib.api.rt_engine_io_info)(
                            e,
                            i,
                            &mut name,
                            &mut is_input,
                            &mut dtype,
                            &mut dims,
                            &mut plain,
                            err,
                            len,
                        )
                    }
                },
            )?;
            // SAFETY: the name is owned by the engine, alive during this call.
            let name = unsafe { borrowed_str(name) };
            let dt = data_type_from_trt(dtype).ok_or_else(|| {
                Error::unsupported(format!(
                    "engine tensor '{name}' has TensorRT type {}, which rusttrt cannot exchange",
                    trt_type_name(dtype)
                ))
            })?;
            if plain == 0 {
                return Err(Error::unsupported(format!(
                    "engine tensor '{name}' is not a linear device tensor (shape tensor or vectorized format)"
                )));
            }
            io.push(IoTensor {
                c_name: cstring("tensor name", &name)?,
                name,
                is_input: is_input != 0,
                dtype: dt,
                dims: from_dims(&dims),
            });
        }
        // SAFETY: valid engine handle.
        let n_profiles = unsafe { (handle._lib.api.rt_engine_profile_count)(e) }.max(0);
        let mut profile_ranges = Vec::new();
        for p in 0..n_profiles {
            let mut ranges = Vec::new();
            for t in io.iter().filter(|t| t.is_input) {
                let get = |sel: i32| -> Result<Vec<i64>> {
                    let mut d = ffi::rt_dims::default();
                    call(
                        || format!("reading profile {p} of input '{}'", t.name),
                        |err, len| {
                            // SAFETY: valid handle, NUL-terminated name, valid out pointer.
                            unsafe {
                                (handle._lib.api.rt_engine_profile_shape)(
                                    e,
                                    t.c_name.as_ptr(),
                                    p,
                                    sel,
                                    &mut d,
                                    err,
                                    len,
                                )
                            }
                        },
                    )?;
                    Ok(from_dims(&d))
                };
                ranges.push((get(0)?, get(2)?));
            }
            profile_ranges.push(ranges);
        }
        let spec_of = |t: &IoTensor| TensorSpec {
            name: t.name.clone(),
            dtype: t.dtype,
            dims: t.dims.clone(),
        };
        let signature = Signature {
            inputs: io.iter().filter(|t| t.is_input).map(spec_of).collect(),
            outputs: io.iter().filter(|t| !t.is_input).map(spec_of).collect(),
        };
        let description = format!(
            "tensorrt {version} on GPU {device}, {} ({} profile{})",
            if spec.precision == Precision::Fp16 {
                "FP16"
            } else {
                "FP32"
            },
            n_profiles,
            if n_profiles == 1 { "" } else { "s" }
        );
        Ok(TensorRtEngine {
            handle,
            device,
            gpu,
            io: io.into(),
            profile_ranges: profile_ranges.into(),
            signature,
            description,
            model_name: spec.model_name.clone(),
        })
    }
}

impl Engine for TensorRtEngine {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn create_runner(&self, stream: Option<&crate::cuda::Stream>) -> Result<Box<dyn Runner>> {
        self.gpu.set_device(self.device)?;
        let mut raw: *mut ffi::rt_context = ptr::null_mut();
        call(
            || {
                format!(
                    "model '{}': creating a TensorRT execution context",
                    self.model_name
                )
            },
            |err, len| {
                // SAFETY: valid engine handle, valid out slot.
                unsafe {
                    (self.handle._lib.api.rt_context_new)(
                        self.handle.ptr.as_ptr(),
                        &mut raw,
                        err,
                        len,
                    )
                }
            },
        )?;
        let ptr = NonNull::new(raw)
            .ok_or_else(|| Error::internal("rt_context_new returned no context"))?;
        let ctx = ContextHandle {
            ptr,
            _engine: self.handle.clone(),
        };
        // The instance's stream when it has one (copies and enqueue stay in order with the
        // backend's own copies), else a stream of the runner's own.
        let stream: Box<dyn GpuStream> = match stream {
            Some(s) => Box::new(super::cuda_glue::CudaStream(s.clone())),
            None => self.gpu.create_stream(self.device)?,
        };
        let n = self.io.len();
        Ok(Box::new(TensorRtRunner {
            ctx,
            buffers: (0..n).map(|_| None).collect(),
            out_shapes: vec![Vec::new(); n],
            stream,
            gpu: self.gpu.clone(),
            device: self.device,
            io: self.io.clone(),
            profile_ranges: self.profile_ranges.clone(),
            profile: 0,
            model_name: self.model_name.clone(),
        }))
    }
}

// ---- runner ---------------------------------------------------------------------------------

/// One instance's execution context, stream and device buffers. Inputs are copied into
/// runner-owned device buffers (grown on demand, never shrunk); outputs stay in runner-owned
/// device buffers until the next run.
struct TensorRtRunner {
    // Dropped first: the context must go before the buffers it points at are freed.
    ctx: ContextHandle,
    buffers: Vec<Option<Box<dyn GpuBuffer>>>,
    out_shapes: Vec<Vec<i64>>,
    stream: Box<dyn GpuStream>,
    gpu: Arc<dyn GpuRuntime>,
    device: i32,
    io: Arc<[IoTensor]>,
    profile_ranges: Arc<[ProfileRanges]>,
    profile: usize,
    model_name: String,
}

fn within(shape: &[i64], min: &[i64], max: &[i64]) -> bool {
    shape.len() == min.len()
        && shape.len() == max.len()
        && shape
            .iter()
            .zip(min)
            .zip(max)
            .all(|((s, lo), hi)| lo <= s && s <= hi)
}

impl TensorRtRunner {
    fn ensure_buffer(&mut self, idx: usize, bytes: usize) -> Result<*mut c_void> {
        // TensorRT wants a non-null address even for empty tensors; 256 bytes keeps alignment.
        let want = bytes.max(256);
        let big_enough = self.buffers[idx]
            .as_ref()
            .is_some_and(|b| b.byte_len() >= want);
        if !big_enough {
            self.buffers[idx] = None;
            self.buffers[idx] = Some(self.gpu.alloc(self.device, want).ctx(|| {
                format!(
                    "allocating {want} device bytes for tensor '{}'",
                    self.io[idx].name
                )
            })?);
        }
        Ok(self.buffers[idx]
            .as_ref()
            .map_or(ptr::null_mut(), |b| b.as_ptr()))
    }

    fn set_address(&mut self, idx: usize, p: *mut c_void) -> Result<()> {
        let t = &self.io[idx];
        call(
            || format!("tensor '{}'", t.name),
            |err, len| {
                // SAFETY: valid context; NUL-terminated name; `p` is a live device allocation
                // owned by this runner.
                unsafe {
                    (self.ctx._engine._lib.api.rt_context_set_tensor_address)(
                        self.ctx.ptr.as_ptr(),
                        t.c_name.as_ptr(),
                        p,
                        err,
                        len,
                    )
                }
            },
        )
    }

    fn choose_profile(&mut self, shapes: &[(usize, &[i64])]) -> Result<()> {
        if self.profile_ranges.len() <= 1 {
            return Ok(());
        }
        let fits = |p: usize| {
            shapes.iter().enumerate().all(|(k, (_, s))| {
                let (lo, hi) = &self.profile_ranges[p][k];
                within(s, lo, hi)
            })
        };
        if fits(self.profile) {
            return Ok(());
        }
        let p = (0..self.profile_ranges.len())
            .find(|&p| fits(p))
            .ok_or_else(|| {
                let desc: Vec<String> = shapes
                    .iter()
                    .map(|(i, s)| format!("'{}' {}", self.io[*i].name, shape_str(s)))
                    .collect();
                Error::invalid_arg(format!(
                    "no optimization profile of the engine accepts the input shapes {}",
                    desc.join(", ")
                ))
            })?;
        let stream = self.stream.as_raw();
        call(
            || format!("switching to optimization profile {p}"),
            |err, len| {
                // SAFETY: valid context and the runner's own stream.
                unsafe {
                    (self.ctx._engine._lib.api.rt_context_set_profile)(
                        self.ctx.ptr.as_ptr(),
                        p as i32,
                        stream,
                        err,
                        len,
                    )
                }
            },
        )?;
        self.profile = p;
        Ok(())
    }

    fn run_inner<'s>(
        &'s mut self,
        inputs: &[TensorRef<'_>],
        outputs: &[&str],
    ) -> Result<Vec<TensorOut<'s>>> {
        self.gpu.set_device(self.device)?;
        let all_io = self.io.clone();
        if let Some(extra) = inputs
            .iter()
            .find(|t| !self.io.iter().any(|io| io.is_input && io.name == t.name))
        {
            return Err(Error::invalid_arg(format!(
                "the engine has no input '{}'",
                extra.name
            )));
        }
        // Match every engine input with a given tensor and check it.
        let mut matched: Vec<(usize, &TensorRef<'_>)> = Vec::new();
        for (idx, io) in all_io.iter().enumerate().filter(|(_, io)| io.is_input) {
            let t = inputs
                .iter()
                .find(|t| t.name == io.name)
                .ok_or_else(|| Error::invalid_arg(format!("input '{}' is missing", io.name)))?;
            if t.dtype != io.dtype {
                return Err(Error::invalid_arg(format!(
                    "input '{}': expected data type {}, got {}",
                    io.name, io.dtype, t.dtype
                )));
            }
            let shape_ok = t.shape.len() == io.dims.len()
                && t.shape
                    .iter()
                    .zip(&io.dims)
                    .all(|(&s, &d)| s >= 0 && (d < 0 || s == d));
            if !shape_ok {
                return Err(Error::invalid_arg(format!(
                    "input '{}': shape {} does not fit the engine's {}",
                    io.name,
                    shape_str(t.shape),
                    shape_str(&io.dims)
                )));
            }
            let want = element_count(t.shape).and_then(|n| n.checked_mul(io.dtype.byte_size()));
            if want != Some(t.bytes) {
                return Err(Error::invalid_arg(format!(
                    "input '{}': shape {} of {} needs {} bytes, got {}",
                    io.name,
                    shape_str(t.shape),
                    io.dtype,
                    want.map_or("too many".to_string(), |n| n.to_string()),
                    t.bytes
                )));
            }
            if let MemLoc::Device(d) = t.loc {
                if d != self.device {
                    return Err(Error::unsupported(format!(
                        "input '{}' is in the memory of GPU {d}, but the engine runs on GPU {}",
                        io.name, self.device
                    )));
                }
            }
            matched.push((idx, t));
        }
        let shapes: Vec<(usize, &[i64])> = matched.iter().map(|(i, t)| (*i, t.shape)).collect();
        self.choose_profile(&shapes)?;

        let stream = self.stream.as_raw();
        for &(idx, t) in &matched {
            let io = &all_io[idx];
            let dims = to_dims(&io.name, t.shape)?;
            // The shim's message names the input and the profile's range.
            call_raw(|err, len| {
                // SAFETY: valid context, NUL-terminated name, valid dims.
                unsafe {
                    (self.ctx._engine._lib.api.rt_context_set_input_shape)(
                        self.ctx.ptr.as_ptr(),
                        io.c_name.as_ptr(),
                        &dims,
                        err,
                        len,
                    )
                }
            })?;
            let dst = self.ensure_buffer(idx, t.bytes)?;
            if t.bytes > 0 {
                match t.loc {
                    // SAFETY: `t` promises `bytes` readable bytes at `ptr` for the borrow, which
                    // outlives this call; we synchronize the stream before returning; `dst` holds
                    // at least `bytes` bytes.
                    MemLoc::Host => unsafe { self.stream.copy_htod(dst, t.ptr, t.bytes)? },
                    // SAFETY: as above, with device memory of this runner's device.
                    MemLoc::Device(_) => unsafe {
                        self.stream.copy_dtod(dst, t.ptr.cast(), t.bytes)?
                    },
                }
            }
            self.set_address(idx, dst)?;
        }

        // Every output needs an address, requested or not.
        for idx in (0..all_io.len()).filter(|&i| !all_io[i].is_input) {
            let io = &all_io[idx];
            let mut d = ffi::rt_dims::default();
            call(
                || format!("output '{}'", io.name),
                |err, len| {
                    // SAFETY: valid context, NUL-terminated name, valid out pointer.
                    unsafe {
                        (self.ctx._engine._lib.api.rt_context_tensor_shape)(
                            self.ctx.ptr.as_ptr(),
                            io.c_name.as_ptr(),
                            &mut d,
                            err,
                            len,
                        )
                    }
                },
            )?;
            let shape = from_dims(&d);
            let bytes = element_count(&shape).and_then(|n| n.checked_mul(io.dtype.byte_size())).ok_or_else(|| {
                Error::unsupported(format!(
                    "output '{}' has shape {} after the input shapes were set (data-dependent shapes are not supported)",
                    io.name,
                    shape_str(&shape)
                ))
            })?;
            let p = self.ensure_buffer(idx, bytes)?;
            self.set_address(idx, p)?;
            self.out_shapes[idx] = shape;
        }

        call(
            || "TensorRT inference".to_string(),
            |err, len| {
                // SAFETY: valid context; every I/O address was set to a live buffer of this
                // runner; `stream` belongs to this runner's device.
                unsafe {
                    (self.ctx._engine._lib.api.rt_context_enqueue)(
                        self.ctx.ptr.as_ptr(),
                        stream,
                        err,
                        len,
                    )
                }
            },
        )?;
        self.stream.synchronize()?;

        let mut result = Vec::with_capacity(outputs.len());
        for &name in outputs {
            let idx = (0..self.io.len())
                .find(|&i| !self.io[i].is_input && self.io[i].name == name)
                .ok_or_else(|| Error::invalid_arg(format!("the engine has no output '{name}'")))?;
            let io = &self.io[idx];
            let shape = self.out_shapes[idx].clone();
            let bytes = element_count(&shape).unwrap_or(0) * io.dtype.byte_size();
            let ptr = self.buffers[idx]
                .as_ref()
                .map_or(ptr::null(), |b| b.as_ptr().cast_const().cast::<u8>());
            result.push(TensorOut {
                name: io.name.clone(),
                dtype: io.dtype,
                shape,
                ptr,
                bytes,
                loc: MemLoc::Device(self.device),
                _lt: PhantomData,
            });
        }
        Ok(result)
    }
}

impl Runner for TensorRtRunner {
    fn run<'s>(
        &'s mut self,
        inputs: &[TensorRef<'_>],
        outputs: &[&str],
    ) -> Result<Vec<TensorOut<'s>>> {
        let model = self.model_name.clone();
        self.run_inner(inputs, outputs)
            .ctx(|| format!("model '{model}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_convert_both_ways() {
        let d = to_dims("x", &[-1, 3, 224, 224]).unwrap();
        assert_eq!(d.nb_dims, 4);
        assert_eq!(from_dims(&d), vec![-1, 3, 224, 224]);
        assert!(to_dims("x", &[1; 9])
            .unwrap_err()
            .to_string()
            .contains("'x'"));
        let unknown = ffi::rt_dims {
            nb_dims: -1,
            ..Default::default()
        };
        assert!(from_dims(&unknown).is_empty());
    }

    #[test]
    fn profile_ranges_are_inclusive() {
        assert!(within(&[4, 3], &[1, 3], &[8, 3]));
        assert!(within(&[8, 3], &[1, 3], &[8, 3]));
        assert!(!within(&[9, 3], &[1, 3], &[8, 3]));
        assert!(!within(&[4], &[1, 3], &[8, 3]));
    }

    #[test]
    fn missing_library_is_a_clear_error() {
        struct NoGpu;
        impl GpuRuntime for NoGpu {
            fn set_device(&self, _: i32) -> Result<()> {
                Ok(())
            }
            fn device_identity(&self, _: i32) -> Result<String> {
                Ok(String::new())
            }
            fn create_stream(&self, _: i32) -> Result<Box<dyn GpuStream>> {
                Err(Error::unavailable("no gpu"))
            }
            fn alloc(&self, _: i32, _: usize) -> Result<Box<dyn GpuBuffer>> {
                Err(Error::unavailable("no gpu"))
            }
        }
        let config = TensorRtConfig {
            shim_path: "/nonexistent/libtriton_rusttrt_tensorrt.so".into(),
            ..Default::default()
        };
        let e = TensorRtFactory::new(config, Arc::new(NoGpu)).err().unwrap();
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(
            e.to_string()
                .contains("/nonexistent/libtriton_rusttrt_tensorrt.so"),
            "{e}"
        );
    }
}

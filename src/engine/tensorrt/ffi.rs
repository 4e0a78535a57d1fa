//! Raw declarations of the shim's C interface (include/rusttrt_trt.h); keep the two in step.
#![allow(non_camel_case_types)]

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Version of include/rusttrt_trt.h this side speaks (`RT_ABI_VERSION`).
pub const RT_ABI_VERSION: i32 = 1;

pub type rt_status = i32;

pub const RT_OK: rt_status = 0;
pub const RT_ERR_INVALID_ARG: rt_status = 1;
pub const RT_ERR_NOT_FOUND: rt_status = 2;
pub const RT_ERR_UNSUPPORTED: rt_status = 3;
pub const RT_ERR_PARSE: rt_status = 4;
pub const RT_ERR_BUILD: rt_status = 5;
pub const RT_ERR_DESERIALIZE: rt_status = 6;

pub const RT_MAX_DIMS: usize = 8;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct rt_dims {
    pub nb_dims: i32,
    pub d: [i64; RT_MAX_DIMS],
}

#[repr(C)]
#[derive(Debug)]
pub struct rt_bytes {
    pub data: *mut c_void,
    pub len: usize,
}

#[repr(C)]
pub struct rt_profile_input {
    pub name: *const c_char,
    pub min: rt_dims,
    pub opt: rt_dims,
    pub max: rt_dims,
}

#[repr(C)]
pub struct rt_profile {
    pub inputs: *const rt_profile_input,
    pub n_inputs: usize,
}

#[repr(C)]
pub struct rt_build_options {
    pub fp16: i32,
    pub workspace_bytes: u64,
    pub builder_optimization_level: i32,
    pub profiles: *const rt_profile,
    pub n_profiles: usize,
    pub use_timing_cache: i32,
    pub timing_cache: *const c_void,
    pub timing_cache_len: usize,
    pub timing_cache_out: *mut rt_bytes,
}

#[repr(C)]
pub struct rt_lib {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct rt_network {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct rt_engine {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct rt_context {
    _opaque: [u8; 0],
}

pub type rt_logger_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, severity: i32, msg: *const c_char)>;

macro_rules! shim_api {
    ($($name:ident : fn($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?;)*) => {
        /// The shim's C interface, resolved from the shim library (`libtriton_rusttrt_tensorrt.so`,
        /// or a double of it) with `dlopen` / `dlsym`. The library is never unloaded: TensorRT
        /// keeps the shim's logger and threads for the life of the process.
        pub struct ShimApi {
            /// Where the library was loaded from (for messages).
            pub path: PathBuf,
            $(pub $name: unsafe extern "C" fn($($ty),*) $(-> $ret)?,)*
        }

        impl ShimApi {
            /// Resolves every function of the interface from `lib`.
            ///
            /// # Safety
            /// `lib` must implement include/rusttrt_trt.h of version [`RT_ABI_VERSION`]: each
            /// symbol is taken to have the signature the header gives it.
            unsafe fn resolve(lib: &libloading::Library, path: &Path) -> Result<ShimApi> {
                Ok(ShimApi {
                    path: path.to_path_buf(),
                    $($name: {
                        // SAFETY: the caller vouches for the signatures (see above).
                        let f: libloading::Symbol<unsafe extern "C" fn($($ty),*) $(-> $ret)?> =
                            unsafe { lib.get(concat!(stringify!($name), "\0").as_bytes()) }
                                .map_err(|e| Error::unavailable(format!(
                                    "{} is not a rusttrt TensorRT shim: symbol {} missing ({e})",
                                    path.display(),
                                    stringify!($name)
                                )))?;
                        *f
                    },)*
                })
            }
        }
    };
}

shim_api! {
    rt_abi_version: fn() -> i32;
    rt_bytes_free: fn(bytes: *mut rt_bytes);
    rt_header_version: fn() -> i32;
    rt_set_logger: fn(log_cb: rt_logger_fn, log_user: *mut c_void, max_severity: i32);
    rt_library_open: fn(nvinfer_path: *const c_char, parser_path: *const c_char, log_cb: rt_logger_fn, log_user: *mut c_void, out: *mut *mut rt_lib, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_library_version: fn(lib: *const rt_lib, version: *mut i32, build: *mut i32, parser_version: *mut i32,);
    rt_library_destroy: fn(lib: *mut rt_lib);
    rt_network_parse: fn(lib: *mut rt_lib, onnx: *const c_void, len: usize, model_path: *const c_char, strongly_typed: i32, out: *mut *mut rt_network, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_network_input_count: fn(net: *const rt_network) -> i32;
    rt_network_input_info: fn(net: *const rt_network, index: i32, name: *mut *const c_char, dims: *mut rt_dims, dtype: *mut i32, is_shape_tensor: *mut i32, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_network_build: fn(net: *mut rt_network, opts: *const rt_build_options, out_plan: *mut rt_bytes, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_network_destroy: fn(net: *mut rt_network);
    rt_engine_load: fn(lib: *mut rt_lib, plan: *const c_void, len: usize, out: *mut *mut rt_engine, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_engine_io_count: fn(engine: *const rt_engine) -> i32;
    rt_engine_io_info: fn(engine: *const rt_engine, index: i32, name: *mut *const c_char, is_input: *mut i32, dtype: *mut i32, dims: *mut rt_dims, plain_device: *mut i32, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_engine_profile_count: fn(engine: *const rt_engine) -> i32;
    rt_engine_profile_shape: fn(engine: *const rt_engine, input: *const c_char, profile: i32, selector: i32, dims: *mut rt_dims, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_engine_destroy: fn(engine: *mut rt_engine);
    rt_context_new: fn(engine: *mut rt_engine, out: *mut *mut rt_context, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_context_set_profile: fn(ctx: *mut rt_context, profile: i32, stream: *mut c_void, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_context_set_input_shape: fn(ctx: *mut rt_context, name: *const c_char, dims: *const rt_dims, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_context_set_tensor_address: fn(ctx: *mut rt_context, name: *const c_char, ptr: *mut c_void, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_context_tensor_shape: fn(ctx: *const rt_context, name: *const c_char, dims: *mut rt_dims, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_context_enqueue: fn(ctx: *mut rt_context, stream: *mut c_void, err: *mut c_char, errlen: usize,) -> rt_status;
    rt_context_destroy: fn(ctx: *mut rt_context);
}

/// Opens the shim library at `path` once per process (later calls get the same table) and
/// checks that it speaks this version of the C interface.
pub fn open(path: &Path) -> Result<Arc<ShimApi>> {
    static OPENED: OnceLock<Mutex<HashMap<PathBuf, Arc<ShimApi>>>> = OnceLock::new();
    let mut opened = OPENED
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(api) = opened.get(path) {
        return Ok(api.clone());
    }
    // SAFETY: loading a shared library runs its initialisers; the shim's (and the C-seam
    // double's) only set up plain static data.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        Error::unavailable(format!(
            "cannot load the TensorRT shim library {}: {reason}",
            path.display()
        ))
    })?;
    // SAFETY: the symbols are checked to exist; their signatures are those of the header, whose
    // version is checked right below before any other function is called.
    let api = unsafe { ShimApi::resolve(&lib, path) }?;
    // SAFETY: rt_abi_version takes nothing and returns a constant.
    let abi = unsafe { (api.rt_abi_version)() };
    if abi != RT_ABI_VERSION {
        return Err(Error::unsupported(format!(
            "the TensorRT shim library {} speaks C interface version {abi}, but this backend speaks version {RT_ABI_VERSION}; install the shim built from the same rusttrt release",
            path.display()
        )));
    }
    // Never unloaded (see ShimApi).
    std::mem::forget(lib);
    let api = Arc::new(api);
    opened.insert(path.to_path_buf(), api.clone());
    Ok(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_that_is_not_a_shim_is_refused_by_name() {
        let e = open(Path::new("libc.so.6")).err().unwrap();
        assert_eq!(e.code(), crate::error::ErrorCode::Unavailable);
        assert!(
            e.to_string().contains(
                "libc.so.6 is not a rusttrt TensorRT shim: symbol rt_abi_version missing"
            ),
            "{e}"
        );
    }

    #[test]
    fn dims_layout_matches_the_c_header() {
        // int32 count, 4 bytes padding, 8 x int64 (the layout of TensorRT's Dims64 too).
        assert_eq!(std::mem::size_of::<rt_dims>(), 72);
        assert_eq!(std::mem::offset_of!(rt_dims, d), 8);
    }

    #[test]
    fn struct_layouts_match_the_shims_static_asserts() {
        // Same numbers as the static_asserts in shim.cpp (64-bit Linux).
        assert_eq!(std::mem::size_of::<rt_profile_input>(), 224);
        assert_eq!(std::mem::offset_of!(rt_profile_input, max), 152);
        assert_eq!(std::mem::size_of::<rt_build_options>(), 72);
        assert_eq!(std::mem::offset_of!(rt_build_options, profiles), 24);
        assert_eq!(std::mem::offset_of!(rt_build_options, timing_cache_out), 64);
    }
}

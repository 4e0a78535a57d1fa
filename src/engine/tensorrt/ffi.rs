//! Raw declarations of the shim's C interface (include/rusttrt_trt.h); keep the two in step.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

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

extern "C" {
    pub fn rt_bytes_free(bytes: *mut rt_bytes);
    pub fn rt_header_version() -> i32;
    pub fn rt_set_logger(log_cb: rt_logger_fn, log_user: *mut c_void, max_severity: i32);
    pub fn rt_library_open(
        nvinfer_path: *const c_char,
        parser_path: *const c_char,
        log_cb: rt_logger_fn,
        log_user: *mut c_void,
        out: *mut *mut rt_lib,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_library_version(
        lib: *const rt_lib,
        version: *mut i32,
        build: *mut i32,
        parser_version: *mut i32,
    );
    pub fn rt_library_destroy(lib: *mut rt_lib);

    pub fn rt_network_parse(
        lib: *mut rt_lib,
        onnx: *const c_void,
        len: usize,
        model_path: *const c_char,
        strongly_typed: i32,
        out: *mut *mut rt_network,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_network_input_count(net: *const rt_network) -> i32;
    pub fn rt_network_input_info(
        net: *const rt_network,
        index: i32,
        name: *mut *const c_char,
        dims: *mut rt_dims,
        dtype: *mut i32,
        is_shape_tensor: *mut i32,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_network_build(
        net: *mut rt_network,
        opts: *const rt_build_options,
        out_plan: *mut rt_bytes,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_network_destroy(net: *mut rt_network);

    pub fn rt_engine_load(
        lib: *mut rt_lib,
        plan: *const c_void,
        len: usize,
        out: *mut *mut rt_engine,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_engine_io_count(engine: *const rt_engine) -> i32;
    pub fn rt_engine_io_info(
        engine: *const rt_engine,
        index: i32,
        name: *mut *const c_char,
        is_input: *mut i32,
        dtype: *mut i32,
        dims: *mut rt_dims,
        plain_device: *mut i32,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_engine_profile_count(engine: *const rt_engine) -> i32;
    pub fn rt_engine_profile_shape(
        engine: *const rt_engine,
        input: *const c_char,
        profile: i32,
        selector: i32,
        dims: *mut rt_dims,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_engine_destroy(engine: *mut rt_engine);

    pub fn rt_context_new(
        engine: *mut rt_engine,
        out: *mut *mut rt_context,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_context_set_profile(
        ctx: *mut rt_context,
        profile: i32,
        stream: *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_context_set_input_shape(
        ctx: *mut rt_context,
        name: *const c_char,
        dims: *const rt_dims,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_context_set_tensor_address(
        ctx: *mut rt_context,
        name: *const c_char,
        ptr: *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_context_tensor_shape(
        ctx: *const rt_context,
        name: *const c_char,
        dims: *mut rt_dims,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_context_enqueue(
        ctx: *mut rt_context,
        stream: *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> rt_status;
    pub fn rt_context_destroy(ctx: *mut rt_context);
}

#[cfg(test)]
mod tests {
    use super::*;

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

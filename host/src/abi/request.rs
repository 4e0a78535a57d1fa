//! TRITONBACKEND_Request* and TRITONBACKEND_Input* functions.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use triton_abi::*;

use super::{cstr, exports, out, out_opt, read_opt};
use crate::error::{Error, Result};
use crate::handles::{self, Kind};
use crate::objects::{BufAttr, BufAttrObj, InputObj, RequestObj};
use crate::rules::{self, lock};

pub(crate) fn request(r: *mut TRITONBACKEND_Request, f: &str) -> Result<Arc<RequestObj>> {
    handles::get(r as usize, Kind::Request, f)
}

fn input(i: *mut TRITONBACKEND_Input, f: &str) -> Result<Arc<InputObj>> {
    handles::get(i as usize, Kind::Input, f)
}

#[allow(clippy::too_many_arguments)] // mirrors the C signature
fn input_properties(
    f: &str,
    i: *mut TRITONBACKEND_Input,
    name: *mut *const c_char,
    datatype: *mut u32,
    shape: *mut *const i64,
    dims_count: *mut u32,
    byte_size: *mut u64,
    buffer_count: *mut u32,
) -> Result<()> {
    let inp = input(i, f)?;
    out_opt(name, inp.name.as_ptr());
    out_opt(datatype, inp.datatype);
    out_opt(shape, inp.shape.as_ptr());
    out_opt(dims_count, inp.shape.len() as u32);
    out_opt(byte_size, inp.byte_size);
    out_opt(buffer_count, inp.chunks.len() as u32);
    Ok(())
}

fn input_buffer(
    f: &str,
    i: *mut TRITONBACKEND_Input,
    index: u32,
    buffer: *mut *const c_void,
    size: *mut u64,
    memory_type: *mut u32,
    memory_type_id: *mut i64,
) -> Result<()> {
    let inp = input(i, f)?;
    // The passed-in memory type is only a preference; the answer is where the data is.
    if let Some(t) = read_opt(memory_type) {
        if t > TRITONSERVER_MEMORY_GPU {
            return Err(Error::invalid_arg(format!("{f}: unknown memory type {t}")));
        }
    }
    let c = inp.chunks.get(index as usize).ok_or_else(|| {
        Error::invalid_arg(format!(
            "{f}: buffer index {index} out of range, input '{}' has {} buffers",
            inp.name.to_string_lossy(),
            inp.chunks.len()
        ))
    })?;
    out(buffer, c.ptr() as *const c_void, f, "buffer")?;
    out(size, c.len() as u64, f, "buffer_byte_size")?;
    out(memory_type, c.memory_type().raw(), f, "memory_type")?;
    out(memory_type_id, c.memory_type_id(), f, "memory_type_id")
}

fn host_policy_ok(f: &str, p: *const c_char) -> Result<()> {
    if !p.is_null() {
        cstr(p, f, "host_policy_name")?;
    }
    Ok(())
}

exports! {
    fn TRITONBACKEND_RequestId(r: *mut TRITONBACKEND_Request, id: *mut *const c_char) {
        let f = "TRITONBACKEND_RequestId";
        out(id, request(r, f)?.id.as_ptr(), f, "id")
    }

    fn TRITONBACKEND_RequestCorrelationId(r: *mut TRITONBACKEND_Request, id: *mut u64) {
        let f = "TRITONBACKEND_RequestCorrelationId";
        out(id, request(r, f)?.correlation_id, f, "id")
    }

    fn TRITONBACKEND_RequestCorrelationIdString(r: *mut TRITONBACKEND_Request, id: *mut *const c_char) {
        let f = "TRITONBACKEND_RequestCorrelationIdString";
        request(r, f)?;
        let _ = id;
        Err(Error::invalid_arg("correlation ID in request is not a string"))
    }

    fn TRITONBACKEND_RequestFlags(r: *mut TRITONBACKEND_Request, flags: *mut u32) {
        let f = "TRITONBACKEND_RequestFlags";
        out(flags, request(r, f)?.flags, f, "flags")
    }

    fn TRITONBACKEND_RequestIsCancelled(r: *mut TRITONBACKEND_Request, c: *mut bool) {
        let f = "TRITONBACKEND_RequestIsCancelled";
        request(r, f)?;
        out(c, false, f, "is_cancelled")
    }

    fn TRITONBACKEND_InferenceRequestTimeoutMicroseconds(r: *mut TRITONBACKEND_Request, t: *mut u64) {
        let f = "TRITONBACKEND_InferenceRequestTimeoutMicroseconds";
        out(t, request(r, f)?.timeout_us, f, "timeout")
    }

    fn TRITONBACKEND_RequestParameterCount(r: *mut TRITONBACKEND_Request, n: *mut u32) {
        let f = "TRITONBACKEND_RequestParameterCount";
        request(r, f)?;
        out(n, 0, f, "count")
    }

    fn TRITONBACKEND_RequestParameter(
        r: *mut TRITONBACKEND_Request,
        index: u32,
        key: *mut *const c_char,
        ptype: *mut u32,
        vvalue: *mut *const c_void
    ) {
        let f = "TRITONBACKEND_RequestParameter";
        request(r, f)?;
        let _ = (key, ptype, vvalue);
        Err(Error::invalid_arg(format!("{f}: index {index} out of range, the request has 0 parameters")))
    }

    fn TRITONBACKEND_RequestInputCount(r: *mut TRITONBACKEND_Request, n: *mut u32) {
        let f = "TRITONBACKEND_RequestInputCount";
        out(n, request(r, f)?.inputs.len() as u32, f, "count")
    }

    fn TRITONBACKEND_RequestInputName(r: *mut TRITONBACKEND_Request, index: u32, name: *mut *const c_char) {
        let f = "TRITONBACKEND_RequestInputName";
        let req = request(r, f)?;
        let (_, i) = req.inputs.get(index as usize).ok_or_else(|| Error::invalid_arg(format!(
            "{f}: index {index} out of range, request '{}' has {} inputs", req.id_str(), req.inputs.len())))?;
        out(name, i.name.as_ptr(), f, "input_name")
    }

    fn TRITONBACKEND_RequestInput(r: *mut TRITONBACKEND_Request, name: *const c_char, inp: *mut *mut TRITONBACKEND_Input) {
        let f = "TRITONBACKEND_RequestInput";
        let req = request(r, f)?;
        let n = cstr(name, f, "name")?;
        let (h, _) = req.inputs.iter().find(|(_, i)| i.name.to_bytes() == n.as_bytes()).ok_or_else(|| {
            Error::invalid_arg(format!("{f}: request '{}' has no input named '{n}'", req.id_str()))
        })?;
        out(inp, *h as *mut TRITONBACKEND_Input, f, "input")
    }

    fn TRITONBACKEND_RequestInputByIndex(r: *mut TRITONBACKEND_Request, index: u32, inp: *mut *mut TRITONBACKEND_Input) {
        let f = "TRITONBACKEND_RequestInputByIndex";
        let req = request(r, f)?;
        let (h, _) = req.inputs.get(index as usize).ok_or_else(|| Error::invalid_arg(format!(
            "{f}: index {index} out of range, request '{}' has {} inputs", req.id_str(), req.inputs.len())))?;
        out(inp, *h as *mut TRITONBACKEND_Input, f, "input")
    }

    fn TRITONBACKEND_RequestOutputCount(r: *mut TRITONBACKEND_Request, n: *mut u32) {
        let f = "TRITONBACKEND_RequestOutputCount";
        out(n, request(r, f)?.outputs.len() as u32, f, "count")
    }

    fn TRITONBACKEND_RequestOutputName(r: *mut TRITONBACKEND_Request, index: u32, name: *mut *const c_char) {
        let f = "TRITONBACKEND_RequestOutputName";
        let req = request(r, f)?;
        let o = req.outputs.get(index as usize).ok_or_else(|| Error::invalid_arg(format!(
            "{f}: index {index} out of range, request '{}' asks for {} outputs", req.id_str(), req.outputs.len())))?;
        out(name, o.as_ptr(), f, "output_name")
    }

    fn TRITONBACKEND_RequestOutputBufferProperties(
        r: *mut TRITONBACKEND_Request,
        name: *const c_char,
        byte_size: *mut usize,
        memory_type: *mut u32,
        memory_type_id: *mut i64
    ) {
        let f = "TRITONBACKEND_RequestOutputBufferProperties";
        request(r, f)?;
        let _ = (name, byte_size, memory_type, memory_type_id);
        // Like Triton with the HTTP/gRPC frontends' allocators: no hint available.
        Err(Error::unavailable("output buffer properties are not available (the allocator gives no hint)"))
    }

    fn TRITONBACKEND_RequestTrace(r: *mut TRITONBACKEND_Request, trace: *mut *mut TRITONSERVER_InferenceTrace) {
        let f = "TRITONBACKEND_RequestTrace";
        request(r, f)?;
        out(trace, std::ptr::null_mut(), f, "trace")
    }

    fn TRITONBACKEND_RequestRelease(r: *mut TRITONBACKEND_Request, release_flags: u32) {
        let f = "TRITONBACKEND_RequestRelease";
        let req = request(r, f)?;
        if release_flags != TRITONSERVER_REQUEST_RELEASE_ALL {
            let msg = format!(
                "{f}: request '{}' released with flags {release_flags}; a non-iterative model must \
                 use TRITONSERVER_REQUEST_RELEASE_ALL (1)", req.id_str());
            rules::violation(None, Some(&req), msg.clone());
            return Err(Error::invalid_arg(msg));
        }
        {
            let mut t = lock(&req.track);
            t.released = true;
            t.touched = true;
        }
        let why = format!("released (request '{}')", req.id_str());
        handles::kill(r as usize, &why, Some(&req));
        for (h, i) in &req.inputs {
            handles::kill(*h, &why, Some(&req));
            for a in lock(&i.attrs).iter().flatten() {
                handles::kill(*a, &why, Some(&req));
            }
        }
        Ok(())
    }

    fn TRITONBACKEND_InputProperties(
        i: *mut TRITONBACKEND_Input,
        name: *mut *const c_char,
        datatype: *mut u32,
        shape: *mut *const i64,
        dims_count: *mut u32,
        byte_size: *mut u64,
        buffer_count: *mut u32
    ) {
        input_properties("TRITONBACKEND_InputProperties", i, name, datatype, shape, dims_count, byte_size, buffer_count)
    }

    fn TRITONBACKEND_InputPropertiesForHostPolicy(
        i: *mut TRITONBACKEND_Input,
        host_policy_name: *const c_char,
        name: *mut *const c_char,
        datatype: *mut u32,
        shape: *mut *const i64,
        dims_count: *mut u32,
        byte_size: *mut u64,
        buffer_count: *mut u32
    ) {
        let f = "TRITONBACKEND_InputPropertiesForHostPolicy";
        host_policy_ok(f, host_policy_name)?;
        input_properties(f, i, name, datatype, shape, dims_count, byte_size, buffer_count)
    }

    fn TRITONBACKEND_InputBuffer(
        i: *mut TRITONBACKEND_Input,
        index: u32,
        buffer: *mut *const c_void,
        size: *mut u64,
        memory_type: *mut u32,
        memory_type_id: *mut i64
    ) {
        input_buffer("TRITONBACKEND_InputBuffer", i, index, buffer, size, memory_type, memory_type_id)
    }

    fn TRITONBACKEND_InputBufferForHostPolicy(
        i: *mut TRITONBACKEND_Input,
        host_policy_name: *const c_char,
        index: u32,
        buffer: *mut *const c_void,
        size: *mut u64,
        memory_type: *mut u32,
        memory_type_id: *mut i64
    ) {
        let f = "TRITONBACKEND_InputBufferForHostPolicy";
        host_policy_ok(f, host_policy_name)?;
        input_buffer(f, i, index, buffer, size, memory_type, memory_type_id)
    }

    fn TRITONBACKEND_InputBufferAttributes(
        i: *mut TRITONBACKEND_Input,
        index: u32,
        buffer: *mut *const c_void,
        attrs: *mut *mut TRITONSERVER_BufferAttributes
    ) {
        let f = "TRITONBACKEND_InputBufferAttributes";
        let inp = input(i, f)?;
        let c = inp.chunks.get(index as usize).ok_or_else(|| Error::invalid_arg(format!(
            "{f}: buffer index {index} out of range, input has {} buffers", inp.chunks.len())))?;
        let mut a = lock(&inp.attrs);
        if a.len() < inp.chunks.len() {
            a.resize(inp.chunks.len(), None);
        }
        let h = *a[index as usize].get_or_insert_with(|| {
            handles::register(Kind::BufferAttributes, Arc::new(BufAttrObj {
                attr: std::sync::Mutex::new(BufAttr {
                    memory_type: c.memory_type().raw(),
                    memory_type_id: c.memory_type_id(),
                    byte_size: c.len(),
                    cuda_ipc_handle: 0,
                }),
                borrowed: true,
                owner: None,
            }))
        });
        out(buffer, c.ptr() as *const c_void, f, "buffer")?;
        out(attrs, h as *mut TRITONSERVER_BufferAttributes, f, "buffer_attributes")
    }
}

//! Requests, inputs, responses and outputs of one Execute call.

use super::{check, cstr_to_string, into_raw_error};
use crate::error::{Error, Result};
use crate::ffi;
use crate::types::DataType;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_void};

/// A request handed to Execute. Valid until [`Request::release`], which consumes it; everything
/// borrowed from it ([`Input`], names, buffers) cannot outlive it.
///
/// A request that leaves Execute unreleased (a bug: every path answers and releases) still gets
/// what Triton needs when it is dropped: an INTERNAL error response if none was sent through
/// [`Request::respond`], and its release.
pub struct Request {
    ptr: *mut ffi::TRITONBACKEND_Request,
    answered: bool,
    release_tried: bool,
}

// SAFETY: a request handle may be used from any thread (Triton hands requests between threads);
// the wrapper is not Sync, so one thread uses it at a time.
unsafe impl Send for Request {}

impl Request {
    /// # Safety
    /// `ptr` is one of the requests passed to the current Execute, not yet released, and this
    /// wrapper is the only one made for it.
    pub unsafe fn from_raw(ptr: *mut ffi::TRITONBACKEND_Request) -> Self {
        Request {
            ptr,
            answered: false,
            release_tried: false,
        }
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::TRITONBACKEND_Request {
        self.ptr
    }

    /// Sends `response` (one of this request's) as its FINAL response, with `error` if it
    /// failed; the request then counts as answered.
    pub fn respond(&mut self, response: Response, error: Option<&Error>) -> Result<()> {
        self.answered = true;
        response.send(error)
    }

    /// The request id (empty when the client set none).
    pub fn id(&self) -> String {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: valid request; the id is copied.
        match check(unsafe { ffi::TRITONBACKEND_RequestId(self.ptr, &mut p) }) {
            // SAFETY: valid (or null) C string.
            Ok(()) => unsafe { cstr_to_string(p) },
            Err(_) => String::new(),
        }
    }

    pub fn is_cancelled(&self) -> Result<bool> {
        let mut b = false;
        // SAFETY: valid request.
        check(unsafe { ffi::TRITONBACKEND_RequestIsCancelled(self.ptr, &mut b) })?;
        Ok(b)
    }

    /// Names of the inputs the request carries.
    pub fn input_names(&self) -> Result<Vec<String>> {
        let mut n = 0u32;
        // SAFETY: valid request.
        check(unsafe { ffi::TRITONBACKEND_RequestInputCount(self.ptr, &mut n) })?;
        (0..n)
            .map(|i| {
                let mut p: *const c_char = std::ptr::null();
                // SAFETY: valid request, index in range.
                check(unsafe { ffi::TRITONBACKEND_RequestInputName(self.ptr, i, &mut p) })?;
                // SAFETY: valid C string.
                Ok(unsafe { cstr_to_string(p) })
            })
            .collect()
    }

    /// The input named `name`, or `None` if the request does not carry it.
    pub fn input(&self, name: &str) -> Result<Option<Input<'_>>> {
        let c = super::c_string(name);
        let mut input = std::ptr::null_mut();
        // SAFETY: valid request and name.
        match check(unsafe { ffi::TRITONBACKEND_RequestInput(self.ptr, c.as_ptr(), &mut input) }) {
            Ok(()) if !input.is_null() => Ok(Some(Input::new(input)?)),
            Ok(()) => Ok(None),
            Err(e) if e.code() == crate::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of the outputs the client asked for (Triton fills in all when none were named).
    pub fn output_names(&self) -> Result<Vec<String>> {
        let mut n = 0u32;
        // SAFETY: valid request.
        check(unsafe { ffi::TRITONBACKEND_RequestOutputCount(self.ptr, &mut n) })?;
        (0..n)
            .map(|i| {
                let mut p: *const c_char = std::ptr::null();
                // SAFETY: valid request, index in range.
                check(unsafe { ffi::TRITONBACKEND_RequestOutputName(self.ptr, i, &mut p) })?;
                // SAFETY: valid C string.
                Ok(unsafe { cstr_to_string(p) })
            })
            .collect()
    }

    /// Releases the request back to Triton (`RELEASE_ALL`). On error the request stays ours and
    /// is returned with the error.
    pub fn release(mut self) -> std::result::Result<(), (Request, Error)> {
        self.release_tried = true;
        // SAFETY: valid request, released exactly once (the wrapper is consumed, and its drop
        // does not release again).
        match check(unsafe {
            ffi::TRITONBACKEND_RequestRelease(self.ptr, ffi::TRITONSERVER_REQUEST_RELEASE_ALL)
        }) {
            Ok(()) => Ok(()),
            Err(e) => Err((self, e)),
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.release_tried {
            return;
        }
        if !self.answered {
            let e = Error::internal(
                "the backend left the request unanswered (a rusttrt bug; please report it)",
            );
            if let Ok(r) = Response::new(self) {
                let _ = r.send(Some(&e));
            }
        }
        // SAFETY: valid request not released yet (release_tried is false), released once here.
        let _ = check(unsafe {
            ffi::TRITONBACKEND_RequestRelease(self.ptr, ffi::TRITONSERVER_REQUEST_RELEASE_ALL)
        });
    }
}

/// One input tensor of a request.
pub struct Input<'r> {
    ptr: *mut ffi::TRITONBACKEND_Input,
    pub name: String,
    pub dtype: Option<DataType>,
    /// Raw `TRITONSERVER_DataType` value (kept to name unknown types in messages).
    pub raw_dtype: u32,
    pub shape: Vec<i64>,
    pub byte_size: u64,
    pub buffer_count: u32,
    _request: PhantomData<&'r Request>,
}

/// One chunk of an input's data.
#[derive(Debug, Clone, Copy)]
pub struct InputBuffer {
    pub ptr: *const u8,
    pub len: usize,
    /// `TRITONSERVER_MemoryType` value.
    pub memory_type: u32,
    pub memory_type_id: i64,
}

impl<'r> Input<'r> {
    fn new(ptr: *mut ffi::TRITONBACKEND_Input) -> Result<Self> {
        let mut name: *const c_char = std::ptr::null();
        let mut dtype = 0u32;
        let mut shape: *const i64 = std::ptr::null();
        let mut dims = 0u32;
        let mut byte_size = 0u64;
        let mut buffer_count = 0u32;
        // SAFETY: valid input handle; out-parameters we own; the shape array is borrowed from
        // the request and copied below.
        check(unsafe {
            ffi::TRITONBACKEND_InputProperties(
                ptr,
                &mut name,
                &mut dtype,
                &mut shape,
                &mut dims,
                &mut byte_size,
                &mut buffer_count,
            )
        })?;
        let shape = if shape.is_null() || dims == 0 {
            Vec::new()
        } else {
            // SAFETY: Triton returned `dims` valid elements at `shape`.
            unsafe { std::slice::from_raw_parts(shape, dims as usize) }.to_vec()
        };
        Ok(Input {
            ptr,
            // SAFETY: valid C string.
            name: unsafe { cstr_to_string(name) },
            dtype: DataType::from_triton(dtype),
            raw_dtype: dtype,
            shape,
            byte_size,
            buffer_count,
            _request: PhantomData,
        })
    }

    /// Chunk `index`, asking for `preferred` memory (only a hint; the result says where it is).
    pub fn buffer(&self, index: u32, preferred: (u32, i64)) -> Result<InputBuffer> {
        let mut p: *const c_void = std::ptr::null();
        let mut len = 0u64;
        let (mut mt, mut mid) = preferred;
        // SAFETY: valid input, index checked by Triton; the buffer lives as long as the request.
        check(unsafe {
            ffi::TRITONBACKEND_InputBuffer(self.ptr, index, &mut p, &mut len, &mut mt, &mut mid)
        })?;
        Ok(InputBuffer {
            ptr: p as *const u8,
            len: len as usize,
            memory_type: mt,
            memory_type_id: mid,
        })
    }
}

/// A response being built. Must end in [`Response::send`] (the backend guarantees one FINAL
/// response per request).
pub struct Response(*mut ffi::TRITONBACKEND_Response);

// SAFETY: a response handle belongs to one request and may be filled and sent from any thread;
// not Sync, so one thread at a time.
unsafe impl Send for Response {}

impl Response {
    pub fn new(request: &Request) -> Result<Response> {
        let mut r = std::ptr::null_mut();
        // SAFETY: valid, unreleased request.
        check(unsafe { ffi::TRITONBACKEND_ResponseNew(&mut r, request.as_ptr()) })?;
        if r.is_null() {
            return Err(Error::internal("TRITONBACKEND_ResponseNew returned null"));
        }
        Ok(Response(r))
    }

    /// Adds output `name` with the per-request shape.
    pub fn output(&mut self, name: &str, dtype: DataType, shape: &[i64]) -> Result<Output<'_>> {
        let c = super::c_string(name);
        let mut o = std::ptr::null_mut();
        // SAFETY: valid response; name and shape are copied by Triton.
        check(unsafe {
            ffi::TRITONBACKEND_ResponseOutput(
                self.0,
                &mut o,
                c.as_ptr(),
                dtype.to_triton(),
                shape.as_ptr(),
                shape.len() as u32,
            )
        })?;
        Ok(Output {
            ptr: o,
            _response: PhantomData,
        })
    }

    /// Sends the response as the request's FINAL one, with `error` if it failed. Consumes the
    /// response whether or not the send succeeds (Triton takes it either way).
    pub fn send(self, error: Option<&Error>) -> Result<()> {
        let raw_err = error.map(into_raw_error).unwrap_or(std::ptr::null_mut());
        // SAFETY: valid response, sent once (consumed). The error is not taken by Triton.
        let r = check(unsafe {
            ffi::TRITONBACKEND_ResponseSend(
                self.0,
                ffi::TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                raw_err,
            )
        });
        if !raw_err.is_null() {
            // SAFETY: we created it and Triton did not take it.
            unsafe { ffi::TRITONSERVER_ErrorDelete(raw_err) };
        }
        std::mem::forget(self);
        r
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        // A response that was never sent is deleted so nothing leaks; the execute path always
        // sends one FINAL response per request before it gets here.
        // SAFETY: valid, unsent response, deleted once.
        let _ = check(unsafe { ffi::TRITONBACKEND_ResponseDelete(self.0) });
    }
}

/// An output of a response.
pub struct Output<'r> {
    ptr: *mut ffi::TRITONBACKEND_Output,
    _response: PhantomData<&'r mut Response>,
}

impl Output<'_> {
    /// Gets the output's buffer of `bytes` bytes, preferring `preferred` memory; returns the
    /// pointer and where the buffer actually is.
    pub fn buffer(&mut self, bytes: usize, preferred: (u32, i64)) -> Result<(*mut u8, u32, i64)> {
        let mut p: *mut c_void = std::ptr::null_mut();
        let (mut mt, mut mid) = preferred;
        // SAFETY: valid output; the buffer belongs to the response until it is sent.
        check(unsafe {
            ffi::TRITONBACKEND_OutputBuffer(self.ptr, &mut p, bytes as u64, &mut mt, &mut mid)
        })?;
        if p.is_null() && bytes > 0 {
            return Err(Error::internal(
                "TRITONBACKEND_OutputBuffer returned a null buffer",
            ));
        }
        Ok((p as *mut u8, mt, mid))
    }
}

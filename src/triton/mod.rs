//! Safe wrappers over Triton's C objects. Triton's ownership rules live here and nowhere else:
//!
//! - an error a Triton call returns is ours: [`check`] reads it and deletes it;
//! - an error we hand back from an entry point is Triton's ([`into_raw_error`]);
//! - `ResponseSend`'s error argument is *not* taken: [`Response::send`] deletes it afterwards;
//! - messages from `ModelConfig` are ours ([`Message`] deletes them), the backend config message is
//!   borrowed ([`Backend::config`] only reads it);
//! - a request, and everything obtained from it, is valid until [`Request::release`], which
//!   consumes the wrapper; a response is gone after [`Response::send`], which consumes it.

mod log;
mod metrics;
mod model;
mod request;

pub use log::{log, log_enabled, LogLevel};
pub use metrics::{Metric, MetricFamily, MetricKind};
pub use model::BackendAttributes;
pub use model::{Backend, Model, ModelInstance};
pub use request::{Input, InputBuffer, Output, Request, Response};

use crate::error::{Error, ErrorCode, Result};
use crate::ffi;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;

/// Takes ownership of an error returned by a Triton call: `Ok` for null, otherwise its code and
/// message as an [`Error`] (the C object is deleted).
pub(crate) fn check(err: ffi::Err) -> Result<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null error returned by Triton is a valid object that we now own; we read it
    // and delete it exactly once.
    unsafe {
        let code = ErrorCode::from_triton(ffi::TRITONSERVER_ErrorCode(err));
        let msg = cstr_to_string(ffi::TRITONSERVER_ErrorMessage(err));
        ffi::TRITONSERVER_ErrorDelete(err);
        Err(Error::new(code, msg))
    }
}

/// Creates a fresh Triton error object from ours, to be handed to Triton (which deletes it).
pub(crate) fn into_raw_error(e: &Error) -> ffi::Err {
    let msg = c_string(&e.to_string());
    // SAFETY: ErrorNew copies the message; the result is a new object owned by the caller.
    unsafe { ffi::TRITONSERVER_ErrorNew(e.code().to_triton(), msg.as_ptr()) }
}

/// `Result<()>` → the return value of an entry point.
pub(crate) fn result_to_raw(r: Result<()>) -> ffi::Err {
    match r {
        Ok(()) => std::ptr::null_mut(),
        Err(e) => into_raw_error(&e),
    }
}

/// Copies a borrowed C string (null → empty).
///
/// # Safety
/// `p` is null or a valid NUL-terminated string.
pub(crate) unsafe fn cstr_to_string(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// A C string from Rust text; interior NULs are replaced so nothing is silently cut.
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

/// Nanoseconds of CLOCK_MONOTONIC, the clock Triton's statistics use.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An owned `TRITONSERVER_Message` (deleted on drop).
pub struct Message(*mut ffi::TRITONSERVER_Message);

impl Message {
    /// Serializes `value` into a new message.
    pub fn from_json(value: &serde_json::Value) -> Result<Message> {
        let text = serde_json::to_string(value)?;
        let mut msg = std::ptr::null_mut();
        // SAFETY: the JSON is copied by Triton; `msg` receives a new message we own.
        check(unsafe {
            ffi::TRITONSERVER_MessageNewFromSerializedJson(
                &mut msg,
                text.as_ptr() as *const c_char,
                text.len(),
            )
        })?;
        Ok(Message(msg))
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::TRITONSERVER_Message {
        self.0
    }

    /// Parses the message's JSON.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        message_json(self.0)
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        // SAFETY: we own the message and delete it once; an error here is only reported.
        let _ = check(unsafe { ffi::TRITONSERVER_MessageDelete(self.0) });
    }
}

/// Reads the JSON of a message (owned or borrowed); the buffer is not NUL-terminated by
/// contract, so its byte size is used.
fn message_json(msg: *mut ffi::TRITONSERVER_Message) -> Result<serde_json::Value> {
    let mut base: *const c_char = std::ptr::null();
    let mut size: usize = 0;
    // SAFETY: `msg` is a valid message; Triton returns a buffer it owns for the message's life.
    check(unsafe { ffi::TRITONSERVER_MessageSerializeToJson(msg, &mut base, &mut size) })?;
    if base.is_null() {
        return Err(Error::internal(
            "Triton returned a null JSON buffer for a message",
        ));
    }
    // SAFETY: `base` points to `size` bytes valid while the message lives (it does, here).
    let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, size) };
    Ok(serde_json::from_slice(bytes)?)
}

/// API versions of the running server, checked against ours at `TRITONBACKEND_Initialize`.
pub fn api_versions() -> Result<((u32, u32), (u32, u32))> {
    let (mut bmaj, mut bmin, mut smaj, mut smin) = (0u32, 0u32, 0u32, 0u32);
    // SAFETY: out-parameters we own.
    check(unsafe { ffi::TRITONBACKEND_ApiVersion(&mut bmaj, &mut bmin) })?;
    // SAFETY: out-parameters we own.
    check(unsafe { ffi::TRITONSERVER_ApiVersion(&mut smaj, &mut smin) })?;
    Ok(((bmaj, bmin), (smaj, smin)))
}

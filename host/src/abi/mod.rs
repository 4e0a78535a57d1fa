//! The server side of Triton's C API, exported from the host for a `dlopen`ed backend.
//!
//! Every function is `#[no_mangle] pub unsafe extern "C"` with the exact C signature. The
//! safety contract of each is the C API's own (valid out-pointers, NUL-terminated strings,
//! handles obtained from this host); handles are checked against the registry, so a stale
//! handle is reported as a rule violation instead of being dereferenced. Every body runs under
//! `catch_unwind`: a host bug becomes an `INTERNAL` error, never a panic across the boundary.
#![allow(non_snake_case, clippy::missing_safety_doc)]

mod backend;
mod core;
mod metrics;
mod model;
mod request;
mod response;

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use triton_abi::*;

use crate::error::{Error, Result};
use crate::handles::{self, Kind};
use crate::objects::{cstring, ErrorObj};
use crate::rules::{self, Shared};

pub(crate) use self::core::{message_json, message_new};
pub(crate) use self::metrics::{render as render_metrics, MetricsRegistry};

/// Error return of every export.
pub(crate) type Err = *mut TRITONSERVER_Error;

/// Define exports returning `TRITONSERVER_Error*`; bodies return `Result<()>`. Also builds the
/// module's `symbols()` table.
macro_rules! exports {
    ($( fn $name:ident ( $($a:ident : $t:ty),* $(,)? ) $body:block )*) => {
        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($($a: $t),*) -> *mut triton_abi::TRITONSERVER_Error {
                crate::abi::guard(stringify!($name), move || -> crate::error::Result<()> { $body })
            }
        )*
        pub(crate) fn symbols() -> Vec<(&'static str, *const ())> {
            vec![$( (stringify!($name), $name as *const ()) ),*]
        }
    };
}
pub(crate) use exports;

/// Create a host-owned error object (counted as live for the server of this thread or `owner`).
pub(crate) fn new_error(code: u32, msg: &str, owner: Option<Arc<Shared>>) -> Err {
    let owner = owner.or_else(rules::current);
    if let Some(o) = &owner {
        o.live_errors.fetch_add(1, Ordering::SeqCst);
    }
    let h = handles::register(
        Kind::Error,
        Arc::new(ErrorObj {
            code,
            msg: cstring(msg),
            owner,
        }),
    );
    h as Err
}

/// Delete an error object (uncounting it). Unknown/dead handles are violations.
pub(crate) fn delete_error(err: Err, func: &str) -> Option<Error> {
    if err.is_null() {
        return None;
    }
    let e: Arc<ErrorObj> = handles::get(err as usize, Kind::Error, func).ok()?;
    handles::kill(err as usize, "deleted", None);
    if let Some(o) = &e.owner {
        o.live_errors.fetch_sub(1, Ordering::SeqCst);
    }
    Some(Error::new(e.code, e.msg.to_string_lossy()))
}

/// Read an error without taking it (the ResponseSend argument).
pub(crate) fn peek_error(err: Err, func: &str) -> Result<Option<Error>> {
    if err.is_null() {
        return Ok(None);
    }
    let e: Arc<ErrorObj> = handles::get(err as usize, Kind::Error, func)?;
    Ok(Some(Error::new(e.code, e.msg.to_string_lossy())))
}

fn panic_msg(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Run an export body: errors become error objects, panics become INTERNAL errors.
pub(crate) fn guard(func: &'static str, f: impl FnOnce() -> Result<()>) -> Err {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => ptr::null_mut(),
        Ok(Err(e)) => new_error(e.code, &format!("{func}: {}", e.msg), None),
        Err(p) => {
            let msg = format!("host bug: panic in {func}: {}", panic_msg(&*p));
            eprintln!("[rusttrt-host] {msg}");
            new_error(TRITONSERVER_ERROR_INTERNAL, &msg, None)
        }
    }
}

/// Run a non-error-returning export body; a panic yields `fallback`.
pub(crate) fn guard_value<T>(func: &'static str, fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            eprintln!(
                "[rusttrt-host] host bug: panic in {func}: {}",
                panic_msg(&*p)
            );
            fallback
        }
    }
}

/// Write an out-parameter; NULL is an error (and a violation: Triton would crash).
pub(crate) fn out<T>(p: *mut T, v: T, func: &str, what: &str) -> Result<()> {
    if p.is_null() {
        let msg = format!("{func}: NULL out-pointer for '{what}'");
        rules::violation(None, None, msg.clone());
        return Err(Error::invalid_arg(msg));
    }
    // SAFETY: non-null; the C API requires the caller to pass a valid, aligned out-pointer.
    unsafe { p.write(v) };
    Ok(())
}

/// Write an optional (nullable) out-parameter.
pub(crate) fn out_opt<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-null; the C API requires a valid, aligned out-pointer when given.
        unsafe { p.write(v) };
    }
}

/// Read an in/out parameter (NULL → None).
pub(crate) fn read_opt<T: Copy>(p: *const T) -> Option<T> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-null; the C API requires a valid pointer when given.
        Some(unsafe { p.read() })
    }
}

/// Read a NUL-terminated string argument; NULL is an error.
pub(crate) fn cstr(p: *const c_char, func: &str, what: &str) -> Result<String> {
    if p.is_null() {
        let msg = format!("{func}: NULL string for '{what}'");
        rules::violation(None, None, msg.clone());
        return Err(Error::invalid_arg(msg));
    }
    // SAFETY: non-null; the C API requires a NUL-terminated string.
    Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Read `n` elements of an array argument.
pub(crate) fn slice<'a, T>(p: *const T, n: usize, func: &str, what: &str) -> Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        let msg = format!("{func}: NULL array '{what}' with {n} elements");
        rules::violation(None, None, msg.clone());
        return Err(Error::invalid_arg(msg));
    }
    // SAFETY: non-null; the caller promises `n` readable elements per the C API.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Every function the host exports, with its address. Referencing this table keeps the linker
/// from dropping any of them (see [`crate::Server::new`]).
pub fn exported_symbols() -> Vec<(&'static str, *const ())> {
    let mut v = core::symbols();
    v.extend(core::value_symbols());
    v.extend(backend::symbols());
    v.extend(metrics::symbols());
    v.extend(metrics::value_symbols());
    v.extend(model::symbols());
    v.extend(request::symbols());
    v.extend(response::symbols());
    v
}

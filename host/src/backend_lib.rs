//! Loading a backend shared library exactly as Triton does: `dlopen(RTLD_NOW | RTLD_LOCAL)`,
//! then `dlsym` of each entry point (only `TRITONBACKEND_ModelInstanceExecute` is required).

use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use triton_abi::*;

use crate::abi::{self, Err};
use crate::error::{Error, Result};

type Fn1 = unsafe extern "C" fn(*mut std::ffi::c_void) -> Err;
type Fn2 = unsafe extern "C" fn(*mut std::ffi::c_void, *mut std::ffi::c_void) -> Err;
type ExecFn = unsafe extern "C" fn(
    *mut TRITONBACKEND_ModelInstance,
    *mut *mut TRITONBACKEND_Request,
    u32,
) -> Err;

/// The entry points of a loaded backend.
pub(crate) struct BackendLib {
    pub path: PathBuf,
    pub initialize: Option<Fn1>,
    pub finalize: Option<Fn1>,
    pub get_attribute: Option<Fn2>,
    pub model_initialize: Option<Fn1>,
    pub model_finalize: Option<Fn1>,
    pub instance_initialize: Option<Fn1>,
    pub instance_finalize: Option<Fn1>,
    pub instance_execute: ExecFn,
    pub instance_ready: Option<Fn1>,
    /// Kept open for the life of the process, as Triton never unloads a backend.
    _lib: &'static Library,
}

impl BackendLib {
    pub fn open(path: &Path) -> Result<BackendLib> {
        // SAFETY: loading a library runs its initializers; the backend is trusted code the user
        // asked us to load (as Triton does). RTLD_NOW makes unresolved symbols fail here.
        let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|e| Error::invalid_arg(format!("unable to load shared library: {e}")))?;
        let lib: &'static Library = Box::leak(Box::new(lib));
        fn sym<T: Copy>(lib: &Library, name: &str) -> Option<T> {
            // SAFETY: the symbol has the C signature Triton's headers declare for `name`, which
            // is the type `T` the caller chose for it.
            unsafe { lib.get::<T>(name.as_bytes()) }.ok().map(|s| *s)
        }
        let instance_execute = sym::<ExecFn>(lib, "TRITONBACKEND_ModelInstanceExecute")
            .ok_or_else(|| {
                Error::not_found(format!(
                    "unable to find required entrypoint 'TRITONBACKEND_ModelInstanceExecute' in backend library: {}",
                    path.display()
                ))
            })?;
        let batcher = [
            "TRITONBACKEND_ModelBatcherInitialize",
            "TRITONBACKEND_ModelBatcherFinalize",
            "TRITONBACKEND_ModelBatchIncludeRequest",
            "TRITONBACKEND_ModelBatchInitialize",
            "TRITONBACKEND_ModelBatchFinalize",
        ];
        let present = batcher
            .iter()
            .filter(|n| sym::<Fn1>(lib, n).is_some())
            .count();
        if present != 0 && present != batcher.len() {
            return Err(Error::invalid_arg(format!(
                "backend library {} must implement all or none of the custom batching functions ({present} of 5 found)",
                path.display()
            )));
        }
        Ok(BackendLib {
            path: path.to_path_buf(),
            initialize: sym(lib, "TRITONBACKEND_Initialize"),
            finalize: sym(lib, "TRITONBACKEND_Finalize"),
            get_attribute: sym(lib, "TRITONBACKEND_GetBackendAttribute"),
            model_initialize: sym(lib, "TRITONBACKEND_ModelInitialize"),
            model_finalize: sym(lib, "TRITONBACKEND_ModelFinalize"),
            instance_initialize: sym(lib, "TRITONBACKEND_ModelInstanceInitialize"),
            instance_finalize: sym(lib, "TRITONBACKEND_ModelInstanceFinalize"),
            instance_execute,
            instance_ready: sym(lib, "TRITONBACKEND_ModelInstanceReady"),
            _lib: lib,
        })
    }

    /// Call a one-handle entry point; its error (if any) is taken over and deleted.
    pub fn call1(&self, f: Option<Fn1>, name: &str, h: usize) -> Result<()> {
        let Some(f) = f else { return Ok(()) };
        // SAFETY: `f` is the backend's entry point with this signature; `h` is a live handle.
        let e = unsafe { f(h as *mut std::ffi::c_void) };
        take(e, name)
    }

    /// Call a two-handle entry point (GetBackendAttribute).
    pub fn call2(&self, f: Option<Fn2>, name: &str, a: usize, b: usize) -> Result<()> {
        let Some(f) = f else { return Ok(()) };
        // SAFETY: as in `call1`.
        let e = unsafe { f(a as *mut std::ffi::c_void, b as *mut std::ffi::c_void) };
        take(e, name)
    }

    /// Call Execute; the returned error (if any) is taken over and deleted.
    pub fn execute(&self, instance: usize, requests: &mut [usize]) -> Result<()> {
        // SAFETY: the array holds `len` live request handles and outlives the call.
        let e = unsafe {
            (self.instance_execute)(
                instance as *mut TRITONBACKEND_ModelInstance,
                requests.as_mut_ptr() as *mut *mut TRITONBACKEND_Request,
                requests.len() as u32,
            )
        };
        take(e, "TRITONBACKEND_ModelInstanceExecute")
    }
}

fn take(e: Err, name: &str) -> Result<()> {
    if e.is_null() {
        return Ok(());
    }
    match abi::delete_error(e, &format!("error returned from {name}")) {
        Some(err) => Err(err),
        None => Err(Error::internal(format!(
            "{name} returned an invalid error object"
        ))),
    }
}

//! The exported `TRITONBACKEND_*` entry points. Each one catches panics and turns `Result` into
//! a `TRITONSERVER_Error*`; nothing else happens here.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use super::execute::execute;
use super::model::{InstanceState, ModelState};
use super::BackendState;
use crate::error::{Error, Result};
use crate::ffi;
use crate::log;
use crate::triton::{self, Backend, BackendAttributes, Model, ModelInstance, Request};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Runs `f`, turning a panic into an INTERNAL error; the result becomes the C return value.
fn guard(what: &str, f: impl FnOnce() -> Result<()>) -> ffi::Err {
    let r = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(Error::from_panic(what, payload)),
    };
    if let Err(e) = &r {
        log!(Error, "{what}: {e}");
    }
    triton::result_to_raw(r)
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_Initialize(
    backend: *mut ffi::TRITONBACKEND_Backend,
) -> ffi::Err {
    guard("TRITONBACKEND_Initialize", || {
        // SAFETY: Triton passes a valid backend handle.
        let b = unsafe { Backend::from_raw(backend) }?;
        let ((bmaj, bmin), (smaj, smin)) = triton::api_versions()?;
        crate::backend::engine_log_to_triton();
        log!(
            Info,
            "rusttrt {} initializing: Triton backend API {bmaj}.{bmin} (built for {}.{}), server API {smaj}.{smin} (built for {}.{})",
            env!("CARGO_PKG_VERSION"),
            ffi::TRITONBACKEND_API_VERSION_MAJOR,
            ffi::TRITONBACKEND_API_VERSION_MINOR,
            ffi::TRITONSERVER_API_VERSION_MAJOR,
            ffi::TRITONSERVER_API_VERSION_MINOR
        );
        if bmaj != ffi::TRITONBACKEND_API_VERSION_MAJOR
            || bmin < ffi::TRITONBACKEND_API_VERSION_MINOR
        {
            return Err(Error::unsupported(format!(
                "triton backend API version {bmaj}.{bmin} does not support rusttrt, which needs {}.{} or a newer minor",
                ffi::TRITONBACKEND_API_VERSION_MAJOR,
                ffi::TRITONBACKEND_API_VERSION_MINOR
            )));
        }
        if smaj != ffi::TRITONSERVER_API_VERSION_MAJOR || smin < ffi::TRITONSERVER_API_VERSION_MINOR
        {
            return Err(Error::unsupported(format!(
                "triton server API version {smaj}.{smin} does not support rusttrt, which needs {}.{} or a newer minor",
                ffi::TRITONSERVER_API_VERSION_MAJOR,
                ffi::TRITONSERVER_API_VERSION_MINOR
            )));
        }
        let config = b.config()?;
        let mut state = BackendState::from_config(&config, b.artifacts_dir()?)?;
        state.metrics = super::metrics::BackendMetrics::create();
        b.set_state(Box::new(Arc::new(state)))
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_Finalize(
    backend: *mut ffi::TRITONBACKEND_Backend,
) -> ffi::Err {
    guard("TRITONBACKEND_Finalize", || {
        // SAFETY: Triton passes a valid backend handle.
        let b = unsafe { Backend::from_raw(backend) }?;
        // SAFETY: the state is the Box<Arc<BackendState>> set in Initialize (or none).
        drop(unsafe { b.take_state::<Arc<BackendState>>() }?);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_GetBackendAttribute(
    _backend: *mut ffi::TRITONBACKEND_Backend,
    attributes: *mut ffi::TRITONBACKEND_BackendAttribute,
) -> ffi::Err {
    guard("TRITONBACKEND_GetBackendAttribute", || {
        let a = BackendAttributes(attributes);
        // A GPU instance by default, CPU where no GPU exists (Triton skips kinds it cannot use).
        a.add_preferred_instance_group(ffi::TRITONSERVER_INSTANCEGROUPKIND_GPU, 0)?;
        a.add_preferred_instance_group(ffi::TRITONSERVER_INSTANCEGROUPKIND_CPU, 0)?;
        // Instance initialization is thread-safe: engines are built under a per-model lock and
        // the cache takes a lock per key across threads and processes.
        a.set_parallel_instance_loading(true)
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInitialize(
    model: *mut ffi::TRITONBACKEND_Model,
) -> ffi::Err {
    guard("TRITONBACKEND_ModelInitialize", || {
        // SAFETY: Triton passes a valid model handle.
        let m = unsafe { Model::from_raw(model) }?;
        let backend = m.backend()?;
        // SAFETY: the backend state is the Box<Arc<BackendState>> from Initialize; it outlives
        // every model.
        let bstate = unsafe { backend.state::<Arc<BackendState>>() }?
            .cloned()
            .ok_or_else(|| {
                Error::internal("backend state missing: TRITONBACKEND_Initialize did not run")
            })?;
        let state = ModelState::create(m, bstate)?;
        m.set_state(Box::new(Arc::new(state)))
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelFinalize(
    model: *mut ffi::TRITONBACKEND_Model,
) -> ffi::Err {
    guard("TRITONBACKEND_ModelFinalize", || {
        // SAFETY: Triton passes a valid model handle.
        let m = unsafe { Model::from_raw(model) }?;
        // SAFETY: the state is the Box<Arc<ModelState>> from ModelInitialize, or none when that
        // failed; every instance was finalized before this call.
        drop(unsafe { m.take_state::<Arc<ModelState>>() }?);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceInitialize(
    instance: *mut ffi::TRITONBACKEND_ModelInstance,
) -> ffi::Err {
    guard("TRITONBACKEND_ModelInstanceInitialize", || {
        // SAFETY: Triton passes a valid instance handle.
        let inst = unsafe { ModelInstance::from_raw(instance) }?;
        let model = inst.model()?;
        // SAFETY: the model state is the Box<Arc<ModelState>> set in ModelInitialize; it lives
        // until ModelFinalize, after this instance is gone.
        let mstate = unsafe { model.state::<Arc<ModelState>>() }?
            .cloned()
            .ok_or_else(|| {
                Error::internal("model state missing: TRITONBACKEND_ModelInitialize did not run")
            })?;
        let state = InstanceState::create(inst, mstate)?;
        inst.set_state(Box::new(state))
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceFinalize(
    instance: *mut ffi::TRITONBACKEND_ModelInstance,
) -> ffi::Err {
    guard("TRITONBACKEND_ModelInstanceFinalize", || {
        // SAFETY: Triton passes a valid instance handle.
        let inst = unsafe { ModelInstance::from_raw(instance) }?;
        // SAFETY: the state is the Box<InstanceState> from ModelInstanceInitialize, or none when
        // that failed; no Execute runs concurrently with finalization.
        drop(unsafe { inst.take_state::<InstanceState>() }?);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceExecute(
    instance: *mut ffi::TRITONBACKEND_ModelInstance,
    requests: *mut *mut ffi::TRITONBACKEND_Request,
    request_count: u32,
) -> ffi::Err {
    // Before any request is touched, an error return is allowed (Triton then answers every
    // request itself). After that, every failure is an error response.
    let pre = catch_unwind(AssertUnwindSafe(
        || -> Result<(&mut InstanceState, ModelInstance)> {
            // SAFETY: Triton passes a valid instance handle.
            let inst = unsafe { ModelInstance::from_raw(instance) }?;
            if requests.is_null() && request_count > 0 {
                return Err(Error::invalid_arg("null request array"));
            }
            // SAFETY: Execute of one instance is never concurrent, so this is the only borrow of
            // its state; it was set by ModelInstanceInitialize.
            let state = unsafe { inst.state_mut::<InstanceState>() }?
                .ok_or_else(|| Error::internal("instance state missing"))?;
            Ok((state, inst))
        },
    ));
    let (state, inst) = match pre {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return triton::into_raw_error(&e),
        Err(p) => {
            return triton::into_raw_error(&Error::from_panic(
                "TRITONBACKEND_ModelInstanceExecute",
                p,
            ))
        }
    };
    // SAFETY: `requests` holds `request_count` valid request pointers for this call; from here
    // on they are ours, each wrapped exactly once.
    let reqs: Vec<Request> = (0..request_count as usize)
        .map(|i| unsafe { Request::from_raw(*requests.add(i)) })
        .collect();
    let n = reqs.len();
    // `execute` turns panics in its work into error responses itself; this outer guard only
    // keeps a panic in its response/release bookkeeping from unwinding into Triton.
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| execute(state, inst, reqs))) {
        let e = Error::from_panic("TRITONBACKEND_ModelInstanceExecute", p);
        log!(Error, "{e} ({n} requests in the call)");
    }
    std::ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceReady(
    instance: *mut ffi::TRITONBACKEND_ModelInstance,
) -> ffi::Err {
    guard("TRITONBACKEND_ModelInstanceReady", || {
        // SAFETY: Triton passes a valid instance handle.
        let inst = unsafe { ModelInstance::from_raw(instance) }?;
        let _ = inst.name()?;
        Ok(())
    })
}

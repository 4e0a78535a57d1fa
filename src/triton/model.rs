//! Backend, model and model-instance handles (all owned by Triton; ours only borrow them).

use super::{check, cstr_to_string, message_json, Message};
use crate::error::{Error, Result};
use crate::ffi;
use std::os::raw::{c_char, c_void};
use std::path::PathBuf;

/// `TRITONBACKEND_Backend*`, valid between `TRITONBACKEND_Initialize` and `TRITONBACKEND_Finalize`.
#[derive(Clone, Copy)]
pub struct Backend(*mut ffi::TRITONBACKEND_Backend);

/// `TRITONBACKEND_Model*`, valid between `ModelInitialize` and the end of `ModelFinalize`.
#[derive(Clone, Copy)]
pub struct Model(*mut ffi::TRITONBACKEND_Model);

/// `TRITONBACKEND_ModelInstance*`, valid between `ModelInstanceInitialize` and the end of
/// `ModelInstanceFinalize`.
#[derive(Clone, Copy)]
pub struct ModelInstance(*mut ffi::TRITONBACKEND_ModelInstance);

/// Moves a state object into a raw pointer for a `*SetState` call.
fn state_into_raw<T>(state: Box<T>) -> *mut c_void {
    Box::into_raw(state) as *mut c_void
}

impl Backend {
    /// # Safety
    /// `ptr` is the handle Triton passed to the current entry point.
    pub unsafe fn from_raw(ptr: *mut ffi::TRITONBACKEND_Backend) -> Result<Self> {
        if ptr.is_null() {
            return Err(Error::invalid_arg("null TRITONBACKEND_Backend"));
        }
        Ok(Backend(ptr))
    }

    pub fn name(&self) -> Result<String> {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: valid handle; the name is borrowed for the backend's life and copied here.
        check(unsafe { ffi::TRITONBACKEND_BackendName(self.0, &mut p) })?;
        // SAFETY: Triton returns a valid NUL-terminated string.
        Ok(unsafe { cstr_to_string(p) })
    }

    /// The backend config JSON (`{"cmdline": {...}}`). The message is borrowed: not deleted.
    pub fn config(&self) -> Result<serde_json::Value> {
        let mut msg = std::ptr::null_mut();
        // SAFETY: valid handle; the returned message is borrowed (never deleted by us).
        check(unsafe { ffi::TRITONBACKEND_BackendConfig(self.0, &mut msg) })?;
        if msg.is_null() {
            return Ok(serde_json::json!({}));
        }
        message_json(msg)
    }

    /// Directory holding the backend's shared library.
    pub fn artifacts_dir(&self) -> Result<PathBuf> {
        let mut kind = 0u32;
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: valid handle; out-parameters we own.
        check(unsafe { ffi::TRITONBACKEND_BackendArtifacts(self.0, &mut kind, &mut p) })?;
        // SAFETY: Triton returns a valid NUL-terminated string.
        Ok(PathBuf::from(unsafe { cstr_to_string(p) }))
    }

    /// Attaches the backend state (ownership moves to the backend object until
    /// [`Backend::take_state`]).
    pub fn set_state<T>(&self, state: Box<T>) -> Result<()> {
        let raw = state_into_raw(state);
        // SAFETY: valid handle; Triton stores the opaque pointer.
        let r = check(unsafe { ffi::TRITONBACKEND_BackendSetState(self.0, raw) });
        if r.is_err() {
            // SAFETY: Triton did not take the pointer; reclaim the box we just leaked.
            drop(unsafe { Box::from_raw(raw as *mut T) });
        }
        r
    }

    /// Borrows the state set by [`Backend::set_state`].
    ///
    /// # Safety
    /// `T` is the type given to `set_state`, and the state is not taken concurrently.
    pub unsafe fn state<'a, T>(&self) -> Result<Option<&'a T>> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_BackendState(self.0, &mut p) })?;
        // SAFETY: the caller guarantees the type; the box lives until take_state.
        Ok(unsafe { (p as *const T).as_ref() })
    }

    /// Takes the state back (for Finalize). `None` if none was set.
    ///
    /// # Safety
    /// As for [`Backend::state`]; no borrow of the state may outlive this call.
    pub unsafe fn take_state<T>(&self) -> Result<Option<Box<T>>> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_BackendState(self.0, &mut p) })?;
        if p.is_null() {
            return Ok(None);
        }
        // SAFETY: valid handle; clearing the pointer so nobody reads it again.
        check(unsafe { ffi::TRITONBACKEND_BackendSetState(self.0, std::ptr::null_mut()) })?;
        // SAFETY: `p` came from Box::into_raw of a `T` in set_state.
        Ok(Some(unsafe { Box::from_raw(p as *mut T) }))
    }
}

/// Which attributes the backend reports (`TRITONBACKEND_GetBackendAttribute`).
pub struct BackendAttributes(pub(crate) *mut ffi::TRITONBACKEND_BackendAttribute);

impl BackendAttributes {
    pub fn add_preferred_instance_group(&self, kind: u32, count: u64) -> Result<()> {
        // SAFETY: valid attribute handle during GetBackendAttribute; no device id array.
        check(unsafe {
            ffi::TRITONBACKEND_BackendAttributeAddPreferredInstanceGroup(
                self.0,
                kind,
                count,
                std::ptr::null(),
                0,
            )
        })
    }
    pub fn set_parallel_instance_loading(&self, enabled: bool) -> Result<()> {
        // SAFETY: valid attribute handle during GetBackendAttribute.
        check(unsafe {
            ffi::TRITONBACKEND_BackendAttributeSetParallelModelInstanceLoading(self.0, enabled)
        })
    }
}

impl Model {
    /// # Safety
    /// `ptr` is the handle Triton passed to the current entry point.
    pub unsafe fn from_raw(ptr: *mut ffi::TRITONBACKEND_Model) -> Result<Self> {
        if ptr.is_null() {
            return Err(Error::invalid_arg("null TRITONBACKEND_Model"));
        }
        Ok(Model(ptr))
    }

    pub fn name(&self) -> Result<String> {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: valid handle; the name is copied.
        check(unsafe { ffi::TRITONBACKEND_ModelName(self.0, &mut p) })?;
        // SAFETY: Triton returns a valid NUL-terminated string.
        Ok(unsafe { cstr_to_string(p) })
    }

    pub fn version(&self) -> Result<u64> {
        let mut v = 0u64;
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelVersion(self.0, &mut v) })?;
        Ok(v)
    }

    /// The model directory (`<repository>/<model>`), not the version directory.
    pub fn repository_path(&self) -> Result<PathBuf> {
        let mut kind = 0u32;
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: valid handle; out-parameters we own.
        check(unsafe { ffi::TRITONBACKEND_ModelRepository(self.0, &mut kind, &mut p) })?;
        if kind != ffi::TRITONBACKEND_ARTIFACT_FILESYSTEM {
            return Err(Error::unsupported(format!(
                "model repository artifact type {kind} is not supported (only a filesystem path)"
            )));
        }
        // SAFETY: valid NUL-terminated string.
        Ok(PathBuf::from(unsafe { cstr_to_string(p) }))
    }

    /// The model configuration JSON (version 1 format).
    pub fn config(&self) -> Result<serde_json::Value> {
        let mut msg = std::ptr::null_mut();
        // SAFETY: valid handle; the returned message is owned by us (wrapped and deleted).
        check(unsafe { ffi::TRITONBACKEND_ModelConfig(self.0, 1, &mut msg) })?;
        Message(msg).to_json()
    }

    /// Whether Triton lets the backend auto-complete the configuration.
    pub fn auto_complete_config(&self) -> Result<bool> {
        let mut b = false;
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelAutoCompleteConfig(self.0, &mut b) })?;
        Ok(b)
    }

    /// Sends an edited config back (only legal inside ModelInitialize). The message is not taken
    /// by Triton; it is deleted here.
    pub fn set_config(&self, config: &serde_json::Value) -> Result<()> {
        let msg = Message::from_json(config)?;
        // SAFETY: valid handle and message; Triton does not take the message.
        check(unsafe { ffi::TRITONBACKEND_ModelSetConfig(self.0, 1, msg.as_ptr()) })
    }

    pub fn backend(&self) -> Result<Backend> {
        let mut b = std::ptr::null_mut();
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelBackend(self.0, &mut b) })?;
        // SAFETY: Triton returned the backend of this model.
        unsafe { Backend::from_raw(b) }
    }

    /// Attaches the model state (see [`Backend::set_state`]).
    pub fn set_state<T>(&self, state: Box<T>) -> Result<()> {
        let raw = state_into_raw(state);
        // SAFETY: valid handle.
        let r = check(unsafe { ffi::TRITONBACKEND_ModelSetState(self.0, raw) });
        if r.is_err() {
            // SAFETY: Triton did not take the pointer.
            drop(unsafe { Box::from_raw(raw as *mut T) });
        }
        r
    }

    /// # Safety
    /// `T` is the type given to `set_state`; the state outlives the returned borrow (it lives
    /// until ModelFinalize, after every instance is finalized).
    pub unsafe fn state<'a, T>(&self) -> Result<Option<&'a T>> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelState(self.0, &mut p) })?;
        // SAFETY: guaranteed by the caller.
        Ok(unsafe { (p as *const T).as_ref() })
    }

    /// # Safety
    /// As for [`Model::state`]; called once, in ModelFinalize.
    pub unsafe fn take_state<T>(&self) -> Result<Option<Box<T>>> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelState(self.0, &mut p) })?;
        if p.is_null() {
            return Ok(None);
        }
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelSetState(self.0, std::ptr::null_mut()) })?;
        // SAFETY: `p` came from Box::into_raw of a `T`.
        Ok(Some(unsafe { Box::from_raw(p as *mut T) }))
    }
}

impl ModelInstance {
    /// # Safety
    /// `ptr` is the handle Triton passed to the current entry point.
    pub unsafe fn from_raw(ptr: *mut ffi::TRITONBACKEND_ModelInstance) -> Result<Self> {
        if ptr.is_null() {
            return Err(Error::invalid_arg("null TRITONBACKEND_ModelInstance"));
        }
        Ok(ModelInstance(ptr))
    }

    pub fn name(&self) -> Result<String> {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: valid handle; copied.
        check(unsafe { ffi::TRITONBACKEND_ModelInstanceName(self.0, &mut p) })?;
        // SAFETY: valid NUL-terminated string.
        Ok(unsafe { cstr_to_string(p) })
    }

    /// `TRITONSERVER_InstanceGroupKind` value.
    pub fn kind(&self) -> Result<u32> {
        let mut k = 0u32;
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelInstanceKind(self.0, &mut k) })?;
        Ok(k)
    }

    pub fn device_id(&self) -> Result<i32> {
        let mut d = 0i32;
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelInstanceDeviceId(self.0, &mut d) })?;
        Ok(d)
    }

    pub fn model(&self) -> Result<Model> {
        let mut m = std::ptr::null_mut();
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelInstanceModel(self.0, &mut m) })?;
        // SAFETY: Triton returned this instance's model.
        unsafe { Model::from_raw(m) }
    }

    pub fn set_state<T>(&self, state: Box<T>) -> Result<()> {
        let raw = state_into_raw(state);
        // SAFETY: valid handle.
        let r = check(unsafe { ffi::TRITONBACKEND_ModelInstanceSetState(self.0, raw) });
        if r.is_err() {
            // SAFETY: Triton did not take the pointer.
            drop(unsafe { Box::from_raw(raw as *mut T) });
        }
        r
    }

    /// Mutable access to the instance state; Triton never runs two Execute calls of one
    /// instance at once, so the borrow is exclusive.
    ///
    /// # Safety
    /// `T` is the type given to `set_state`; called only from Execute of this instance.
    pub unsafe fn state_mut<'a, T>(&self) -> Result<Option<&'a mut T>> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelInstanceState(self.0, &mut p) })?;
        // SAFETY: guaranteed by the caller.
        Ok(unsafe { (p as *mut T).as_mut() })
    }

    /// # Safety
    /// As for [`ModelInstance::state_mut`]; called once, in ModelInstanceFinalize.
    pub unsafe fn take_state<T>(&self) -> Result<Option<Box<T>>> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelInstanceState(self.0, &mut p) })?;
        if p.is_null() {
            return Ok(None);
        }
        // SAFETY: valid handle.
        check(unsafe { ffi::TRITONBACKEND_ModelInstanceSetState(self.0, std::ptr::null_mut()) })?;
        // SAFETY: `p` came from Box::into_raw of a `T`.
        Ok(Some(unsafe { Box::from_raw(p as *mut T) }))
    }

    /// Per-request statistics; must come before the request is released.
    pub fn report_statistics(
        &self,
        request: &super::Request,
        success: bool,
        times: [u64; 4],
    ) -> Result<()> {
        // SAFETY: valid handles; the request is not yet released (it is borrowed here).
        check(unsafe {
            ffi::TRITONBACKEND_ModelInstanceReportStatistics(
                self.0,
                request.as_ptr(),
                success,
                times[0],
                times[1],
                times[2],
                times[3],
            )
        })
    }

    /// One batch report per Execute that ran the model.
    pub fn report_batch_statistics(&self, batch_size: u64, times: [u64; 4]) -> Result<()> {
        // SAFETY: valid handle.
        check(unsafe {
            ffi::TRITONBACKEND_ModelInstanceReportBatchStatistics(
                self.0, batch_size, times[0], times[1], times[2], times[3],
            )
        })
    }
}

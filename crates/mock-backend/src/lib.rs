//! A tiny Triton backend for testing the host (`libtriton_mockbackend.so`).
//!
//! It serves an identity model: output `OUT` = input `IN` (same type, shape and bytes). Its
//! behaviour is selected by model config parameters:
//!
//! * `misbehave` (string): `none` (default), `no_response`, `no_release`, `two_responses`, `double_release`,
//!   `stats_after_release`, `error_after_release`, `leak_errors`, `set_config_in_execute`, `leak_message`,
//!   `wrong_output_size`, `delete_backend_config`, `return_error` (a clean error return before
//!   touching any request — legal), `not_final`, `wrong_clock`, `unrequested_output`, `error_with_outputs`.
//! * `exec_delay_ms`: sleep that long inside Execute (to observe concurrency / batching).
//! * `set_config`: `unknown_field` or `drop_scheduler` — send such a config from
//!   ModelInitialize (both must fail the load).
//! * `memory_manager`: `ok` (pinned scratch allocated and freed in Execute), `mismatch`
//!   (freed with another memory type), `gpu` (logs the allocation error).
//! * `fail_instance`: name of an instance whose ModelInstanceInitialize fails.
//!
//! With auto-complete on and no inputs/outputs in the config it fills `IN`/`OUT` FP32 `[-1]`,
//! `max_batch_size` = the backend config's `default-max-batch-size` and adds
//! `dynamic_batching {}`. Lifecycle events are logged as `mock: <event> <name>` lines.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::{null, null_mut};

use serde_json::Value;
use triton_abi::*;

type Err = *mut TRITONSERVER_Error;

extern "C" {
    fn TRITONSERVER_ErrorNew(code: u32, msg: *const c_char) -> Err;
    fn TRITONSERVER_ErrorDelete(e: Err);
    fn TRITONSERVER_ErrorMessage(e: Err) -> *const c_char;
    fn TRITONSERVER_MessageNewFromSerializedJson(
        m: *mut *mut TRITONSERVER_Message,
        base: *const c_char,
        n: usize,
    ) -> Err;
    fn TRITONSERVER_MessageDelete(m: *mut TRITONSERVER_Message) -> Err;
    fn TRITONSERVER_MessageSerializeToJson(
        m: *mut TRITONSERVER_Message,
        base: *mut *const c_char,
        n: *mut usize,
    ) -> Err;
    fn TRITONSERVER_LogMessage(
        level: u32,
        file: *const c_char,
        line: c_int,
        msg: *const c_char,
    ) -> Err;
    fn TRITONBACKEND_ApiVersion(major: *mut u32, minor: *mut u32) -> Err;
    fn TRITONBACKEND_BackendConfig(
        b: *mut TRITONBACKEND_Backend,
        m: *mut *mut TRITONSERVER_Message,
    ) -> Err;
    fn TRITONBACKEND_BackendAttributeAddPreferredInstanceGroup(
        a: *mut TRITONBACKEND_BackendAttribute,
        kind: u32,
        count: u64,
        ids: *const u64,
        n: u64,
    ) -> Err;
    fn TRITONBACKEND_BackendAttributeSetParallelModelInstanceLoading(
        a: *mut TRITONBACKEND_BackendAttribute,
        on: bool,
    ) -> Err;
    fn TRITONBACKEND_BackendMemoryManager(
        b: *mut TRITONBACKEND_Backend,
        m: *mut *mut TRITONBACKEND_MemoryManager,
    ) -> Err;
    fn TRITONBACKEND_MemoryManagerAllocate(
        m: *mut TRITONBACKEND_MemoryManager,
        buf: *mut *mut c_void,
        mt: u32,
        id: i64,
        n: u64,
    ) -> Err;
    fn TRITONBACKEND_MemoryManagerFree(
        m: *mut TRITONBACKEND_MemoryManager,
        buf: *mut c_void,
        mt: u32,
        id: i64,
    ) -> Err;
    fn TRITONBACKEND_ModelConfig(
        m: *mut TRITONBACKEND_Model,
        v: u32,
        c: *mut *mut TRITONSERVER_Message,
    ) -> Err;
    fn TRITONBACKEND_ModelSetConfig(
        m: *mut TRITONBACKEND_Model,
        v: u32,
        c: *mut TRITONSERVER_Message,
    ) -> Err;
    fn TRITONBACKEND_ModelAutoCompleteConfig(m: *mut TRITONBACKEND_Model, ac: *mut bool) -> Err;
    fn TRITONBACKEND_ModelBackend(
        m: *mut TRITONBACKEND_Model,
        b: *mut *mut TRITONBACKEND_Backend,
    ) -> Err;
    fn TRITONBACKEND_ModelState(m: *mut TRITONBACKEND_Model, s: *mut *mut c_void) -> Err;
    fn TRITONBACKEND_ModelSetState(m: *mut TRITONBACKEND_Model, s: *mut c_void) -> Err;
    fn TRITONBACKEND_ModelInstanceName(
        i: *mut TRITONBACKEND_ModelInstance,
        n: *mut *const c_char,
    ) -> Err;
    fn TRITONBACKEND_ModelInstanceModel(
        i: *mut TRITONBACKEND_ModelInstance,
        m: *mut *mut TRITONBACKEND_Model,
    ) -> Err;
    fn TRITONBACKEND_ModelInstanceReportStatistics(
        i: *mut TRITONBACKEND_ModelInstance,
        r: *mut TRITONBACKEND_Request,
        ok: bool,
        a: u64,
        b: u64,
        c: u64,
        d: u64,
    ) -> Err;
    fn TRITONBACKEND_ModelInstanceReportBatchStatistics(
        i: *mut TRITONBACKEND_ModelInstance,
        n: u64,
        a: u64,
        b: u64,
        c: u64,
        d: u64,
    ) -> Err;
    fn TRITONBACKEND_RequestInput(
        r: *mut TRITONBACKEND_Request,
        name: *const c_char,
        i: *mut *mut TRITONBACKEND_Input,
    ) -> Err;
    fn TRITONBACKEND_RequestOutputCount(r: *mut TRITONBACKEND_Request, n: *mut u32) -> Err;
    fn TRITONBACKEND_RequestOutputName(
        r: *mut TRITONBACKEND_Request,
        i: u32,
        n: *mut *const c_char,
    ) -> Err;
    fn TRITONBACKEND_RequestRelease(r: *mut TRITONBACKEND_Request, flags: u32) -> Err;
    fn TRITONBACKEND_InputProperties(
        i: *mut TRITONBACKEND_Input,
        name: *mut *const c_char,
        dt: *mut u32,
        shape: *mut *const i64,
        dims: *mut u32,
        size: *mut u64,
        count: *mut u32,
    ) -> Err;
    fn TRITONBACKEND_InputBuffer(
        i: *mut TRITONBACKEND_Input,
        idx: u32,
        buf: *mut *const c_void,
        size: *mut u64,
        mt: *mut u32,
        id: *mut i64,
    ) -> Err;
    fn TRITONBACKEND_ResponseNew(
        resp: *mut *mut TRITONBACKEND_Response,
        r: *mut TRITONBACKEND_Request,
    ) -> Err;
    fn TRITONBACKEND_ResponseOutput(
        resp: *mut TRITONBACKEND_Response,
        o: *mut *mut TRITONBACKEND_Output,
        name: *const c_char,
        dt: u32,
        shape: *const i64,
        dims: u32,
    ) -> Err;
    fn TRITONBACKEND_OutputBuffer(
        o: *mut TRITONBACKEND_Output,
        buf: *mut *mut c_void,
        size: u64,
        mt: *mut u32,
        id: *mut i64,
    ) -> Err;
    fn TRITONBACKEND_ResponseSend(resp: *mut TRITONBACKEND_Response, flags: u32, e: Err) -> Err;
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}
extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

fn clock_ns(clock: i32) -> u64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { clock_gettime(clock, &mut ts) };
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

fn new_err(code: u32, msg: &str) -> Err {
    let c = CString::new(msg).unwrap_or_default();
    // SAFETY: valid C string.
    unsafe { TRITONSERVER_ErrorNew(code, c.as_ptr()) }
}

/// Turn a host error into a String, deleting it.
fn check(e: Err) -> Result<(), String> {
    if e.is_null() {
        return Ok(());
    }
    // SAFETY: `e` is a live error from the host; we own it and delete it once.
    let msg = unsafe { CStr::from_ptr(TRITONSERVER_ErrorMessage(e)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: live handles/strings obtained from the host just above; each object is used once.
    unsafe { TRITONSERVER_ErrorDelete(e) };
    Err(msg)
}

fn log(msg: &str) {
    let m = CString::new(msg).unwrap_or_default();
    // SAFETY: valid strings; the error (if any) is deleted by `check`.
    let _ = check(unsafe {
        TRITONSERVER_LogMessage(TRITONSERVER_LOG_INFO, c"mock".as_ptr(), 1, m.as_ptr())
    });
}

fn to_err(r: Result<(), String>) -> Err {
    match r {
        Ok(()) => null_mut(),
        Err(m) => new_err(TRITONSERVER_ERROR_INTERNAL, &m),
    }
}

fn message_json(m: *mut TRITONSERVER_Message) -> Result<Value, String> {
    let (mut base, mut n) = (null::<c_char>(), 0usize);
    // SAFETY: `m` is a live message; out-pointers are valid.
    check(unsafe { TRITONSERVER_MessageSerializeToJson(m, &mut base, &mut n) })?;
    // SAFETY: the host returned `n` readable bytes at `base`.
    let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, n) };
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

fn model_config(m: *mut TRITONBACKEND_Model) -> Result<Value, String> {
    let mut msg = null_mut();
    // SAFETY: live model handle; we own and delete the message.
    check(unsafe { TRITONBACKEND_ModelConfig(m, 1, &mut msg) })?;
    let v = message_json(msg);
    // SAFETY: live handles/strings obtained from the host just above; each object is used once.
    check(unsafe { TRITONSERVER_MessageDelete(msg) })?;
    v
}

fn set_config(m: *mut TRITONBACKEND_Model, v: &Value) -> Result<(), String> {
    let s = v.to_string();
    let mut msg = null_mut();
    // SAFETY: valid buffer; we own the message and delete it after the call (not taken).
    check(unsafe {
        TRITONSERVER_MessageNewFromSerializedJson(&mut msg, s.as_ptr() as *const c_char, s.len())
    })?;
    // SAFETY: live handles/strings obtained from the host just above; each object is used once.
    let r = check(unsafe { TRITONBACKEND_ModelSetConfig(m, 1, msg) });
    check(unsafe { TRITONSERVER_MessageDelete(msg) })?;
    r
}

struct ModelState {
    misbehave: String,
    memory_manager: String,
    delay_ms: u64,
    batching: bool,
}

fn param(cfg: &Value, key: &str) -> String {
    cfg["parameters"][key]["string_value"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn guarded(f: impl FnOnce() -> Result<(), String>) -> Err {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => to_err(r),
        Err(_) => new_err(TRITONSERVER_ERROR_INTERNAL, "mock backend panicked"),
    }
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_Initialize(backend: *mut TRITONBACKEND_Backend) -> Err {
    guarded(|| {
        let (mut major, mut minor) = (0, 0);
        check(TRITONBACKEND_ApiVersion(&mut major, &mut minor))?;
        if major != TRITONBACKEND_API_VERSION_MAJOR || minor < TRITONBACKEND_API_VERSION_MINOR {
            return Err(format!("unsupported backend API {major}.{minor}"));
        }
        let mut msg = null_mut();
        check(TRITONBACKEND_BackendConfig(backend, &mut msg))?;
        let cfg = message_json(msg)?;
        log(&format!("mock: initialize {cfg}"));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_Finalize(_backend: *mut TRITONBACKEND_Backend) -> Err {
    log("mock: finalize backend");
    null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_GetBackendAttribute(
    _backend: *mut TRITONBACKEND_Backend,
    attrs: *mut TRITONBACKEND_BackendAttribute,
) -> Err {
    guarded(|| {
        check(TRITONBACKEND_BackendAttributeAddPreferredInstanceGroup(
            attrs,
            TRITONSERVER_INSTANCEGROUPKIND_CPU,
            1,
            null(),
            0,
        ))?;
        check(TRITONBACKEND_BackendAttributeSetParallelModelInstanceLoading(attrs, true))
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInitialize(model: *mut TRITONBACKEND_Model) -> Err {
    guarded(|| {
        let mut cfg = model_config(model)?;
        log(&format!("mock: model_initialize {}", cfg["name"]));
        let mut ac = false;
        check(TRITONBACKEND_ModelAutoCompleteConfig(model, &mut ac))?;
        let empty = |k: &str| cfg[k].as_array().is_none_or(|a| a.is_empty());
        if ac && empty("input") && empty("output") {
            let mut backend = null_mut();
            check(TRITONBACKEND_ModelBackend(model, &mut backend))?;
            let mut msg = null_mut();
            check(TRITONBACKEND_BackendConfig(backend, &mut msg))?;
            let bc = message_json(msg)?;
            let mbs: i64 = bc["cmdline"]["default-max-batch-size"]
                .as_str()
                .unwrap_or("4")
                .parse()
                .unwrap_or(4);
            cfg["input"] =
                serde_json::json!([{"name": "IN", "data_type": "TYPE_FP32", "dims": [-1]}]);
            cfg["output"] =
                serde_json::json!([{"name": "OUT", "data_type": "TYPE_FP32", "dims": [-1]}]);
            if cfg["max_batch_size"].as_i64().unwrap_or(0) == 0 {
                cfg["max_batch_size"] = mbs.into();
            }
            if cfg.get("dynamic_batching").is_none() && cfg.get("sequence_batching").is_none() {
                cfg["dynamic_batching"] = serde_json::json!({});
            }
            set_config(model, &cfg)?;
            cfg = model_config(model)?;
        }
        match param(&cfg, "set_config").as_str() {
            "unknown_field" => {
                let mut c = cfg.clone();
                c["no_such_field"] = 1.into();
                set_config(model, &c)?;
            }
            "drop_scheduler" => {
                let mut c = cfg.clone();
                if let Some(o) = c.as_object_mut() {
                    o.remove("dynamic_batching");
                }
                set_config(model, &c)?;
            }
            _ => {}
        }
        let misbehave = param(&cfg, "misbehave");
        if misbehave == "delete_backend_config" {
            let mut backend = null_mut();
            check(TRITONBACKEND_ModelBackend(model, &mut backend))?;
            let mut msg = null_mut();
            check(TRITONBACKEND_BackendConfig(backend, &mut msg))?;
            let _ = check(TRITONSERVER_MessageDelete(msg));
        }
        let st = Box::new(ModelState {
            misbehave,
            memory_manager: param(&cfg, "memory_manager"),
            delay_ms: param(&cfg, "exec_delay_ms").parse().unwrap_or(0),
            batching: cfg["max_batch_size"].as_i64().unwrap_or(0) > 0,
        });
        check(TRITONBACKEND_ModelSetState(
            model,
            Box::into_raw(st) as *mut c_void,
        ))
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelFinalize(model: *mut TRITONBACKEND_Model) -> Err {
    guarded(|| {
        let mut st = null_mut();
        check(TRITONBACKEND_ModelState(model, &mut st))?;
        if !st.is_null() {
            drop(Box::from_raw(st as *mut ModelState));
        }
        log("mock: model_finalize");
        Ok(())
    })
}

fn instance_name(i: *mut TRITONBACKEND_ModelInstance) -> String {
    let mut n = null();
    // SAFETY: live instance; the name is borrowed for the instance's life.
    if check(unsafe { TRITONBACKEND_ModelInstanceName(i, &mut n) }).is_err() || n.is_null() {
        return String::new();
    }
    // SAFETY: live handles/strings obtained from the host just above; each object is used once.
    unsafe { CStr::from_ptr(n) }.to_string_lossy().into_owned()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceInitialize(
    instance: *mut TRITONBACKEND_ModelInstance,
) -> Err {
    guarded(|| {
        let name = instance_name(instance);
        log(&format!("mock: instance_initialize {name}"));
        let mut model = null_mut();
        check(TRITONBACKEND_ModelInstanceModel(instance, &mut model))?;
        let cfg = model_config(model)?;
        if param(&cfg, "fail_instance") == name {
            return Err(format!("instance {name} refuses to start"));
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceFinalize(
    instance: *mut TRITONBACKEND_ModelInstance,
) -> Err {
    log(&format!(
        "mock: instance_finalize {}",
        instance_name(instance)
    ));
    null_mut()
}

unsafe fn respond(req: *mut TRITONBACKEND_Request, st: &ModelState) -> Result<u64, String> {
    if st.misbehave == "no_response" {
        return Ok(1);
    }
    let mut resp = null_mut();
    check(TRITONBACKEND_ResponseNew(&mut resp, req))?;
    let r = (|| -> Result<u64, String> {
        let mut input = null_mut();
        check(TRITONBACKEND_RequestInput(req, c"IN".as_ptr(), &mut input))?;
        let (mut dt, mut shape, mut dims, mut size, mut count) =
            (0u32, null::<i64>(), 0u32, 0u64, 0u32);
        check(TRITONBACKEND_InputProperties(
            input,
            null_mut(),
            &mut dt,
            &mut shape,
            &mut dims,
            &mut size,
            &mut count,
        ))?;
        let shape = std::slice::from_raw_parts(shape, dims as usize).to_vec();
        let mut data = Vec::with_capacity(size as usize);
        for i in 0..count {
            let (mut b, mut n, mut mt, mut id) =
                (null::<c_void>(), 0u64, TRITONSERVER_MEMORY_CPU, 0i64);
            check(TRITONBACKEND_InputBuffer(
                input, i, &mut b, &mut n, &mut mt, &mut id,
            ))?;
            if mt == TRITONSERVER_MEMORY_GPU {
                return Err("mock backend cannot read GPU input".into());
            }
            data.extend_from_slice(std::slice::from_raw_parts(b as *const u8, n as usize));
        }
        let mut outs = 0u32;
        check(TRITONBACKEND_RequestOutputCount(req, &mut outs))?;
        let mut names = Vec::new();
        for i in 0..outs {
            let mut n = null();
            check(TRITONBACKEND_RequestOutputName(req, i, &mut n))?;
            names.push(CStr::from_ptr(n).to_owned());
        }
        if st.misbehave == "unrequested_output" {
            names = vec![c"OTHER".to_owned()];
        }
        for name in names {
            let mut out = null_mut();
            check(TRITONBACKEND_ResponseOutput(
                resp,
                &mut out,
                name.as_ptr(),
                dt,
                shape.as_ptr(),
                dims,
            ))?;
            let want = data.len() as u64 + u64::from(st.misbehave == "wrong_output_size");
            let (mut buf, mut mt, mut id) = (null_mut::<c_void>(), TRITONSERVER_MEMORY_CPU, 0i64);
            check(TRITONBACKEND_OutputBuffer(
                out, &mut buf, want, &mut mt, &mut id,
            ))?;
            if mt == TRITONSERVER_MEMORY_GPU {
                return Err("mock backend cannot write GPU output".into());
            }
            std::ptr::copy_nonoverlapping(data.as_ptr(), buf as *mut u8, data.len());
        }
        Ok(if st.batching {
            shape.first().copied().unwrap_or(1).max(1) as u64
        } else {
            1
        })
    })();
    let flags = if st.misbehave == "not_final" {
        0
    } else {
        TRITONSERVER_RESPONSE_COMPLETE_FINAL
    };
    let r = if st.misbehave == "error_with_outputs" {
        r.and_then(|_| Err("an error response that still carries OUT".to_string()))
    } else {
        r
    };
    match r {
        Ok(b) => {
            check(TRITONBACKEND_ResponseSend(resp, flags, null_mut()))?;
            Ok(b)
        }
        Err(m) => {
            // An error response: the error object is not taken, delete it afterwards.
            let e = new_err(TRITONSERVER_ERROR_INVALID_ARG, &m);
            let r = check(TRITONBACKEND_ResponseSend(resp, flags, e));
            TRITONSERVER_ErrorDelete(e);
            r?;
            Err(m)
        }
    }
}

unsafe fn use_memory_manager(model: *mut TRITONBACKEND_Model, how: &str) -> Result<(), String> {
    let mut backend = null_mut();
    check(TRITONBACKEND_ModelBackend(model, &mut backend))?;
    let mut mm = null_mut();
    check(TRITONBACKEND_BackendMemoryManager(backend, &mut mm))?;
    let (alloc_type, free_type) = match how {
        "mismatch" => (TRITONSERVER_MEMORY_CPU, TRITONSERVER_MEMORY_CPU_PINNED),
        "gpu" => (TRITONSERVER_MEMORY_GPU, TRITONSERVER_MEMORY_GPU),
        _ => (
            TRITONSERVER_MEMORY_CPU_PINNED,
            TRITONSERVER_MEMORY_CPU_PINNED,
        ),
    };
    let mut buf = null_mut();
    check(TRITONBACKEND_MemoryManagerAllocate(
        mm, &mut buf, alloc_type, 0, 64,
    ))?;
    std::ptr::write_bytes(buf as *mut u8, 7, 64);
    check(TRITONBACKEND_MemoryManagerFree(mm, buf, free_type, 0))
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceExecute(
    instance: *mut TRITONBACKEND_ModelInstance,
    requests: *mut *mut TRITONBACKEND_Request,
    count: u32,
) -> Err {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Err {
        let mut model = null_mut();
        if let Err(m) = check(TRITONBACKEND_ModelInstanceModel(instance, &mut model)) {
            return new_err(TRITONSERVER_ERROR_INTERNAL, &m);
        }
        let mut stp = null_mut();
        if let Err(m) = check(TRITONBACKEND_ModelState(model, &mut stp)) {
            return new_err(TRITONSERVER_ERROR_INTERNAL, &m);
        }
        let st = &*(stp as *const ModelState);
        let clock = if st.misbehave == "wrong_clock" { 0 } else { 1 };
        let now = || clock_ns(clock);
        if st.misbehave == "return_error" {
            return new_err(TRITONSERVER_ERROR_UNAVAILABLE, "mock refuses this batch");
        }
        if !st.memory_manager.is_empty() {
            if let Err(m) = use_memory_manager(model, &st.memory_manager) {
                log(&format!("mock: memory manager: {m}"));
            }
        }
        let reqs = std::slice::from_raw_parts(requests, count as usize).to_vec();
        let exec_start = now();
        log(&format!(
            "mock: execute {} requests={count}",
            instance_name(instance)
        ));
        let compute_start = now();
        if st.delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(st.delay_ms));
        }
        let compute_end = now();
        let mut total = 0u64;
        let mut ok = Vec::new();
        for r in &reqs {
            match respond(*r, st) {
                Ok(b) => {
                    total += b;
                    ok.push(true);
                }
                Err(_) => ok.push(false),
            }
            if st.misbehave == "two_responses" {
                let mut extra = null_mut();
                if check(TRITONBACKEND_ResponseNew(&mut extra, *r)).is_ok() {
                    let _ = check(TRITONBACKEND_ResponseSend(
                        extra,
                        TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                        null_mut(),
                    ));
                }
            }
        }
        let exec_end = now();
        for (r, success) in reqs.iter().zip(&ok) {
            if st.misbehave != "stats_after_release" {
                let _ = check(TRITONBACKEND_ModelInstanceReportStatistics(
                    instance,
                    *r,
                    *success,
                    exec_start,
                    compute_start,
                    compute_end,
                    exec_end,
                ));
            }
            if st.misbehave != "no_release" {
                let _ = check(TRITONBACKEND_RequestRelease(
                    *r,
                    TRITONSERVER_REQUEST_RELEASE_ALL,
                ));
            }
            if st.misbehave == "double_release" {
                let _ = check(TRITONBACKEND_RequestRelease(
                    *r,
                    TRITONSERVER_REQUEST_RELEASE_ALL,
                ));
            }
            if st.misbehave == "stats_after_release" {
                let _ = check(TRITONBACKEND_ModelInstanceReportStatistics(
                    instance,
                    *r,
                    *success,
                    exec_start,
                    compute_start,
                    compute_end,
                    exec_end,
                ));
            }
        }
        if total > 0 {
            let _ = check(TRITONBACKEND_ModelInstanceReportBatchStatistics(
                instance,
                total,
                exec_start,
                compute_start,
                compute_end,
                exec_end,
            ));
        }
        match st.misbehave.as_str() {
            "error_after_release" => {
                return new_err(TRITONSERVER_ERROR_INTERNAL, "failing after release")
            }
            "leak_message" => {
                let mut msg = null_mut();
                let _ = check(TRITONBACKEND_ModelConfig(model, 1, &mut msg));
            }
            "leak_errors" => {
                let _leaked = new_err(TRITONSERVER_ERROR_INTERNAL, "this error is never deleted");
            }
            "set_config_in_execute" => {
                if let Ok(cfg) = model_config(model) {
                    let _ = set_config(model, &cfg);
                }
            }
            _ => {}
        }
        null_mut()
    }));
    r.unwrap_or_else(|_| {
        new_err(
            TRITONSERVER_ERROR_INTERNAL,
            "mock backend panicked in execute",
        )
    })
}

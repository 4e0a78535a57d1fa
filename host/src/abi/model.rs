//! TRITONBACKEND_Model* and TRITONBACKEND_ModelInstance* functions, statistics reporting.

use std::ffi::{c_char, c_void};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use triton_abi::*;

use super::{exports, message_json, message_new, out, slice};
use crate::config;
use crate::error::{Error, Result};
use crate::handles::{self, Kind};
use crate::objects::{BufAttrObj, InstanceObj, ModelObj, RequestObj};
use crate::rules::{self, lock};
use crate::stats::{now_ns, Stamps};

fn model(m: *mut TRITONBACKEND_Model, f: &str) -> Result<Arc<ModelObj>> {
    handles::get(m as usize, Kind::Model, f)
}

fn instance(i: *mut TRITONBACKEND_ModelInstance, f: &str) -> Result<Arc<InstanceObj>> {
    handles::get(i as usize, Kind::Instance, f)
}

fn memory_usage(
    usage: *mut *mut TRITONSERVER_BufferAttributes,
    n: u32,
    f: &str,
) -> Result<Vec<(u32, i64, u64)>> {
    let hs = slice(
        usage as *const *mut TRITONSERVER_BufferAttributes,
        n as usize,
        f,
        "usage",
    )?;
    let mut v = Vec::new();
    for h in hs {
        let a: Arc<BufAttrObj> = handles::get(*h as usize, Kind::BufferAttributes, f)?;
        let a = *lock(&a.attr);
        v.push((a.memory_type, a.memory_type_id, a.byte_size as u64));
    }
    Ok(v)
}

/// Check the four timestamps of a statistics report.
fn check_stamps(f: &str, s: &Stamps, not_before: u64, req: Option<&RequestObj>) -> Result<()> {
    let now = now_ns();
    let ordered = not_before <= s.exec_start
        && s.exec_start <= s.compute_start
        && s.compute_start <= s.compute_end
        && s.compute_end <= s.exec_end
        && s.exec_end <= now;
    if !ordered {
        let msg = format!(
            "{f}: timestamps must be CLOCK_MONOTONIC nanoseconds with exec_start <= compute_start \
             <= compute_end <= exec_end <= now, taken after the request was queued; got \
             exec_start={} compute_start={} compute_end={} exec_end={} (queued at {not_before}, now {now})",
            s.exec_start, s.compute_start, s.compute_end, s.exec_end
        );
        rules::violation(None, req, msg.clone());
        return Err(Error::invalid_arg(msg));
    }
    Ok(())
}

exports! {
    fn TRITONBACKEND_ModelName(m: *mut TRITONBACKEND_Model, name: *mut *const c_char) {
        let f = "TRITONBACKEND_ModelName";
        out(name, model(m, f)?.name.as_ptr(), f, "name")
    }

    fn TRITONBACKEND_ModelVersion(m: *mut TRITONBACKEND_Model, version: *mut u64) {
        let f = "TRITONBACKEND_ModelVersion";
        out(version, model(m, f)?.version, f, "version")
    }

    fn TRITONBACKEND_ModelRepository(m: *mut TRITONBACKEND_Model, artifact_type: *mut u32, location: *mut *const c_char) {
        let f = "TRITONBACKEND_ModelRepository";
        let mo = model(m, f)?;
        out(artifact_type, TRITONBACKEND_ARTIFACT_FILESYSTEM, f, "artifact_type")?;
        out(location, mo.repo_dir.as_ptr(), f, "location")
    }

    fn TRITONBACKEND_ModelConfig(m: *mut TRITONBACKEND_Model, config_version: u32, cfg: *mut *mut TRITONSERVER_Message) {
        let f = "TRITONBACKEND_ModelConfig";
        let mo = model(m, f)?;
        if config_version != 1 {
            return Err(Error::unsupported(format!(
                "model configuration version {config_version} is not supported, only version 1")));
        }
        let json = config::to_json(&mo.config())?.to_string();
        out(cfg, message_new(json, false, Some(mo.shared.clone())) as *mut TRITONSERVER_Message, f, "model_config")
    }

    fn TRITONBACKEND_ModelAutoCompleteConfig(m: *mut TRITONBACKEND_Model, ac: *mut bool) {
        let f = "TRITONBACKEND_ModelAutoCompleteConfig";
        out(ac, model(m, f)?.auto_complete, f, "auto_complete_config")
    }

    fn TRITONBACKEND_ModelSetConfig(m: *mut TRITONBACKEND_Model, config_version: u32, cfg: *mut TRITONSERVER_Message) {
        let f = "TRITONBACKEND_ModelSetConfig";
        let mo = model(m, f)?;
        if !mo.in_initialize.load(Ordering::SeqCst) {
            let msg = format!("{f} on model '{}' is only legal inside TRITONBACKEND_ModelInitialize", mo.name_str());
            rules::violation(Some(&mo.shared), None, msg.clone());
            return Err(Error::internal(msg));
        }
        if config_version != 1 {
            return Err(Error::unsupported(format!(
                "model configuration version {config_version} is not supported, only version 1")));
        }
        let json = message_json(cfg as usize, f)?;
        let new = config::from_json(&json)?;
        let mut cur = lock(&mo.config);
        let mut merged = config::merge_set_config(&cur, new)?;
        config::normalize(&mut merged, &mo.name_str(), &mo.backend_name, mo.gpu_count, &mo.preferred)?;
        *cur = merged;
        Ok(())
    }

    fn TRITONBACKEND_ModelServer(m: *mut TRITONBACKEND_Model, server: *mut *mut TRITONSERVER_Server) {
        let f = "TRITONBACKEND_ModelServer";
        model(m, f)?;
        // The host has no TRITONSERVER_Server object (no BLS / in-process API).
        out(server, std::ptr::null_mut(), f, "server")
    }

    fn TRITONBACKEND_ModelBackend(m: *mut TRITONBACKEND_Model, b: *mut *mut TRITONBACKEND_Backend) {
        let f = "TRITONBACKEND_ModelBackend";
        out(b, model(m, f)?.backend_handle as *mut TRITONBACKEND_Backend, f, "backend")
    }

    fn TRITONBACKEND_ModelState(m: *mut TRITONBACKEND_Model, state: *mut *mut c_void) {
        let f = "TRITONBACKEND_ModelState";
        out(state, model(m, f)?.state.load(Ordering::SeqCst) as *mut c_void, f, "state")
    }

    fn TRITONBACKEND_ModelSetState(m: *mut TRITONBACKEND_Model, state: *mut c_void) {
        model(m, "TRITONBACKEND_ModelSetState")?.state.store(state as usize, Ordering::SeqCst);
        Ok(())
    }

    fn TRITONBACKEND_ModelReportMemoryUsage(m: *mut TRITONBACKEND_Model, usage: *mut *mut TRITONSERVER_BufferAttributes, n: u32) {
        let f = "TRITONBACKEND_ModelReportMemoryUsage";
        let mo = model(m, f)?;
        mo.stats.set_memory_usage(memory_usage(usage, n, f)?);
        Ok(())
    }

    fn TRITONBACKEND_ModelInstanceName(i: *mut TRITONBACKEND_ModelInstance, name: *mut *const c_char) {
        let f = "TRITONBACKEND_ModelInstanceName";
        out(name, instance(i, f)?.name.as_ptr(), f, "name")
    }

    fn TRITONBACKEND_ModelInstanceKind(i: *mut TRITONBACKEND_ModelInstance, kind: *mut u32) {
        let f = "TRITONBACKEND_ModelInstanceKind";
        out(kind, instance(i, f)?.kind, f, "kind")
    }

    fn TRITONBACKEND_ModelInstanceDeviceId(i: *mut TRITONBACKEND_ModelInstance, id: *mut i32) {
        let f = "TRITONBACKEND_ModelInstanceDeviceId";
        out(id, instance(i, f)?.device_id, f, "device_id")
    }

    fn TRITONBACKEND_ModelInstanceHostPolicy(i: *mut TRITONBACKEND_ModelInstance, hp: *mut *mut TRITONSERVER_Message) {
        let f = "TRITONBACKEND_ModelInstanceHostPolicy";
        out(hp, instance(i, f)?.host_policy_msg as *mut TRITONSERVER_Message, f, "host_policy")
    }

    fn TRITONBACKEND_ModelInstanceIsPassive(i: *mut TRITONBACKEND_ModelInstance, p: *mut bool) {
        let f = "TRITONBACKEND_ModelInstanceIsPassive";
        out(p, instance(i, f)?.passive, f, "is_passive")
    }

    fn TRITONBACKEND_ModelInstanceProfileCount(i: *mut TRITONBACKEND_ModelInstance, n: *mut u32) {
        let f = "TRITONBACKEND_ModelInstanceProfileCount";
        out(n, instance(i, f)?.profiles.len() as u32, f, "count")
    }

    fn TRITONBACKEND_ModelInstanceProfileName(i: *mut TRITONBACKEND_ModelInstance, index: u32, name: *mut *const c_char) {
        let f = "TRITONBACKEND_ModelInstanceProfileName";
        let inst = instance(i, f)?;
        let p = inst.profiles.get(index as usize).ok_or_else(|| Error::invalid_arg(format!(
            "{f}: index {index} out of range, instance has {} profiles", inst.profiles.len())))?;
        out(name, p.as_ptr(), f, "profile_name")
    }

    fn TRITONBACKEND_ModelInstanceSecondaryDeviceCount(i: *mut TRITONBACKEND_ModelInstance, n: *mut u32) {
        let f = "TRITONBACKEND_ModelInstanceSecondaryDeviceCount";
        out(n, instance(i, f)?.secondary.len() as u32, f, "count")
    }

    fn TRITONBACKEND_ModelInstanceSecondaryDeviceProperties(
        i: *mut TRITONBACKEND_ModelInstance,
        index: u32,
        kind: *mut *const c_char,
        id: *mut i64
    ) {
        let f = "TRITONBACKEND_ModelInstanceSecondaryDeviceProperties";
        let inst = instance(i, f)?;
        let (k, d) = inst.secondary.get(index as usize).ok_or_else(|| Error::invalid_arg(format!(
            "{f}: index {index} out of range, instance has {} secondary devices", inst.secondary.len())))?;
        out(kind, k.as_ptr(), f, "kind")?;
        out(id, *d, f, "id")
    }

    fn TRITONBACKEND_ModelInstanceModel(i: *mut TRITONBACKEND_ModelInstance, m: *mut *mut TRITONBACKEND_Model) {
        let f = "TRITONBACKEND_ModelInstanceModel";
        out(m, instance(i, f)?.model_handle as *mut TRITONBACKEND_Model, f, "model")
    }

    fn TRITONBACKEND_ModelInstanceState(i: *mut TRITONBACKEND_ModelInstance, state: *mut *mut c_void) {
        let f = "TRITONBACKEND_ModelInstanceState";
        out(state, instance(i, f)?.state.load(Ordering::SeqCst) as *mut c_void, f, "state")
    }

    fn TRITONBACKEND_ModelInstanceSetState(i: *mut TRITONBACKEND_ModelInstance, state: *mut c_void) {
        instance(i, "TRITONBACKEND_ModelInstanceSetState")?.state.store(state as usize, Ordering::SeqCst);
        Ok(())
    }

    fn TRITONBACKEND_ModelInstanceReportMemoryUsage(i: *mut TRITONBACKEND_ModelInstance, usage: *mut *mut TRITONSERVER_BufferAttributes, n: u32) {
        let f = "TRITONBACKEND_ModelInstanceReportMemoryUsage";
        let inst = instance(i, f)?;
        inst.model.stats.set_memory_usage(memory_usage(usage, n, f)?);
        Ok(())
    }

    fn TRITONBACKEND_ModelInstanceReportStatistics(
        i: *mut TRITONBACKEND_ModelInstance,
        request: *mut TRITONBACKEND_Request,
        success: bool,
        exec_start_ns: u64,
        compute_start_ns: u64,
        compute_end_ns: u64,
        exec_end_ns: u64
    ) {
        let f = "TRITONBACKEND_ModelInstanceReportStatistics";
        let inst = instance(i, f)?;
        let req: Arc<RequestObj> = handles::get(request as usize, Kind::Request, f)
            .map_err(|e| e.context("statistics must be reported before the request is released"))?;
        if !Arc::ptr_eq(&req.model, &inst.model) {
            let msg = format!("{f}: request '{}' belongs to another model", req.id_str());
            rules::violation(None, Some(&req), msg.clone());
            return Err(Error::invalid_arg(msg));
        }
        {
            let mut t = lock(&req.track);
            if t.stats_reported {
                drop(t);
                let msg = format!("{f}: statistics for request '{}' reported twice (double counting)", req.id_str());
                rules::violation(None, Some(&req), msg.clone());
                return Err(Error::invalid_arg(msg));
            }
            t.stats_reported = true;
        }
        let s = Stamps { exec_start: exec_start_ns, compute_start: compute_start_ns,
                         compute_end: compute_end_ns, exec_end: exec_end_ns };
        if success {
            check_stamps(f, &s, req.queue_start_ns, Some(&req))?;
            if req.record_stats {
                inst.model.stats.success(req.arrival_ns, req.queue_start_ns, s, req.batch_size);
            }
        } else if req.record_stats {
            inst.model.stats.failure(req.arrival_ns);
        }
        Ok(())
    }

    fn TRITONBACKEND_ModelInstanceReportBatchStatistics(
        i: *mut TRITONBACKEND_ModelInstance,
        batch_size: u64,
        exec_start_ns: u64,
        compute_start_ns: u64,
        compute_end_ns: u64,
        exec_end_ns: u64
    ) {
        let f = "TRITONBACKEND_ModelInstanceReportBatchStatistics";
        let inst = instance(i, f)?;
        let s = Stamps { exec_start: exec_start_ns, compute_start: compute_start_ns,
                         compute_end: compute_end_ns, exec_end: exec_end_ns };
        check_stamps(f, &s, 0, None)?;
        // Triton core takes any batch_size: a batch of requests with a zero-size batch
        // dimension (which core lets through) is reported as 0.
        if crate::scheduler::recording_stats() {
            inst.model.stats.batch(batch_size, s);
        }
        Ok(())
    }
}

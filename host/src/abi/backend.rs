//! TRITONBACKEND_* backend object, backend attributes and the memory manager.

use std::ffi::{c_char, c_void};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use triton_abi::*;

use super::{exports, out, slice};
use crate::config::PreferredGroup;
use crate::error::Error;
use crate::handles::{self, Kind};
use crate::memory::MemoryType;
use crate::objects::{AttributeObj, BackendObj, MemoryManagerObj};
use crate::rules::{self, lock};

fn backend(b: *mut TRITONBACKEND_Backend, f: &str) -> crate::error::Result<Arc<BackendObj>> {
    handles::get(b as usize, Kind::Backend, f)
}

fn attrs(
    a: *mut TRITONBACKEND_BackendAttribute,
    f: &str,
) -> crate::error::Result<Arc<AttributeObj>> {
    handles::get(a as usize, Kind::BackendAttribute, f)
}

fn mm(m: *mut TRITONBACKEND_MemoryManager, f: &str) -> crate::error::Result<Arc<MemoryManagerObj>> {
    handles::get(m as usize, Kind::MemoryManager, f)
}

exports! {
    fn TRITONBACKEND_ApiVersion(major: *mut u32, minor: *mut u32) {
        out(major, TRITONBACKEND_API_VERSION_MAJOR, "TRITONBACKEND_ApiVersion", "major")?;
        out(minor, TRITONBACKEND_API_VERSION_MINOR, "TRITONBACKEND_ApiVersion", "minor")
    }

    fn TRITONBACKEND_BackendName(b: *mut TRITONBACKEND_Backend, name: *mut *const c_char) {
        let f = "TRITONBACKEND_BackendName";
        out(name, backend(b, f)?.name.as_ptr(), f, "name")
    }

    fn TRITONBACKEND_BackendConfig(b: *mut TRITONBACKEND_Backend, cfg: *mut *mut TRITONSERVER_Message) {
        let f = "TRITONBACKEND_BackendConfig";
        out(cfg, backend(b, f)?.config_msg as *mut TRITONSERVER_Message, f, "backend_config")
    }

    fn TRITONBACKEND_BackendExecutionPolicy(b: *mut TRITONBACKEND_Backend, policy: *mut u32) {
        let f = "TRITONBACKEND_BackendExecutionPolicy";
        out(policy, backend(b, f)?.policy.load(Ordering::SeqCst), f, "policy")
    }

    fn TRITONBACKEND_BackendSetExecutionPolicy(b: *mut TRITONBACKEND_Backend, policy: u32) {
        let f = "TRITONBACKEND_BackendSetExecutionPolicy";
        let be = backend(b, f)?;
        if policy != TRITONBACKEND_EXECUTION_BLOCKING && policy != TRITONBACKEND_EXECUTION_DEVICE_BLOCKING {
            return Err(Error::invalid_arg(format!("unknown execution policy {policy}")));
        }
        if !be.in_initialize.load(Ordering::SeqCst) {
            rules::log(rules::LogLine {
                level: "WARN",
                file: "rusttrt-host".into(),
                line: 0,
                msg: format!("{f} outside TRITONBACKEND_Initialize has no effect"),
            });
            return Ok(());
        }
        be.policy.store(policy, Ordering::SeqCst);
        Ok(())
    }

    fn TRITONBACKEND_BackendArtifacts(
        b: *mut TRITONBACKEND_Backend,
        artifact_type: *mut u32,
        location: *mut *const c_char
    ) {
        let f = "TRITONBACKEND_BackendArtifacts";
        let be = backend(b, f)?;
        out(artifact_type, TRITONBACKEND_ARTIFACT_FILESYSTEM, f, "artifact_type")?;
        out(location, be.dir.as_ptr(), f, "location")
    }

    fn TRITONBACKEND_BackendMemoryManager(
        b: *mut TRITONBACKEND_Backend,
        manager: *mut *mut TRITONBACKEND_MemoryManager
    ) {
        let f = "TRITONBACKEND_BackendMemoryManager";
        out(manager, backend(b, f)?.memory_manager as *mut TRITONBACKEND_MemoryManager, f, "manager")
    }

    fn TRITONBACKEND_BackendState(b: *mut TRITONBACKEND_Backend, state: *mut *mut c_void) {
        let f = "TRITONBACKEND_BackendState";
        out(state, backend(b, f)?.state.load(Ordering::SeqCst) as *mut c_void, f, "state")
    }

    fn TRITONBACKEND_BackendSetState(b: *mut TRITONBACKEND_Backend, state: *mut c_void) {
        backend(b, "TRITONBACKEND_BackendSetState")?.state.store(state as usize, Ordering::SeqCst);
        Ok(())
    }

    fn TRITONBACKEND_BackendAttributeAddPreferredInstanceGroup(
        a: *mut TRITONBACKEND_BackendAttribute,
        kind: u32,
        count: u64,
        device_ids: *const u64,
        id_count: u64
    ) {
        let f = "TRITONBACKEND_BackendAttributeAddPreferredInstanceGroup";
        let at = attrs(a, f)?;
        if kind > TRITONSERVER_INSTANCEGROUPKIND_MODEL {
            return Err(Error::invalid_arg(format!("unknown instance group kind {kind}")));
        }
        let ids = slice(device_ids, id_count as usize, f, "device_ids")?.to_vec();
        lock(&at.groups).push(PreferredGroup { kind, count, device_ids: ids });
        Ok(())
    }

    fn TRITONBACKEND_BackendAttributeSetParallelModelInstanceLoading(
        a: *mut TRITONBACKEND_BackendAttribute,
        enabled: bool
    ) {
        attrs(a, "TRITONBACKEND_BackendAttributeSetParallelModelInstanceLoading")?
            .parallel
            .store(enabled, Ordering::SeqCst);
        Ok(())
    }

    fn TRITONBACKEND_MemoryManagerAllocate(
        manager: *mut TRITONBACKEND_MemoryManager,
        buffer: *mut *mut c_void,
        memory_type: u32,
        memory_type_id: i64,
        byte_size: u64
    ) {
        let f = "TRITONBACKEND_MemoryManagerAllocate";
        let m = mm(manager, f)?;
        let mt = MemoryType::from_raw(memory_type)
            .ok_or_else(|| Error::invalid_arg(format!("{f}: unknown memory type {memory_type}")))?;
        let buf = m.shared.pool.alloc(mt, memory_type_id, byte_size as usize)?;
        let p = buf.ptr();
        out(buffer, p as *mut c_void, f, "buffer")?;
        lock(&m.shared.mm_allocs).insert(p as usize, (memory_type, memory_type_id, buf));
        Ok(())
    }

    fn TRITONBACKEND_MemoryManagerFree(
        manager: *mut TRITONBACKEND_MemoryManager,
        buffer: *mut c_void,
        memory_type: u32,
        memory_type_id: i64
    ) {
        let f = "TRITONBACKEND_MemoryManagerFree";
        let m = mm(manager, f)?;
        let mut allocs = lock(&m.shared.mm_allocs);
        let Some((t, id, _)) = allocs.get(&(buffer as usize)) else {
            drop(allocs);
            let msg = format!("{f}: {buffer:p} was not allocated by the memory manager (or freed twice)");
            rules::violation(Some(&m.shared), None, msg.clone());
            return Err(Error::invalid_arg(msg));
        };
        if (*t, *id) != (memory_type, memory_type_id) {
            let msg = format!(
                "{f}: {buffer:p} was allocated as {}:{id} but freed as {}:{memory_type_id}",
                memory_type_name(*t),
                memory_type_name(memory_type)
            );
            drop(allocs);
            rules::violation(Some(&m.shared), None, msg.clone());
            return Err(Error::invalid_arg(msg));
        }
        allocs.remove(&(buffer as usize));
        Ok(())
    }
}

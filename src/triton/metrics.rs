//! Custom metrics through Triton's metrics API (server API >= 1.30). Ownership rules:
//!
//! - a [`MetricFamily`] is ours: dropping it calls `TRITONSERVER_MetricFamilyDelete`;
//! - a [`Metric`] is ours and holds an `Arc` of its family, so a family is deleted only after
//!   every metric of it (Triton refuses the other order);
//! - label parameters are ours too: created for `MetricNew` and deleted right after it (Triton
//!   copies the labels).
//!
//! Triton serves every family on `/metrics` next to its own `nv_inference_*` families.

use super::{c_string, check};
use crate::error::{Error, Result};
use crate::ffi;
use std::sync::Arc;

/// What a family counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// A metric family (a name, a help text, a kind); its metrics are its labelled series.
pub struct MetricFamily {
    raw: *mut ffi::TRITONSERVER_MetricFamily,
    name: String,
    /// Deletes the family; set by [`MetricFamily::new`], so that code which only holds and drops
    /// families (the backend state in unit tests, linked without Triton) needs no server symbol.
    delete: fn(*mut ffi::TRITONSERVER_MetricFamily, &str),
}

fn delete_family(raw: *mut ffi::TRITONSERVER_MetricFamily, name: &str) {
    // SAFETY: `raw` came from MetricFamilyNew and is deleted once (from Drop); every Metric of it
    // holds an Arc of the family, so none is alive any more.
    if let Err(e) = check(unsafe { ffi::TRITONSERVER_MetricFamilyDelete(raw) }) {
        crate::log!(Warn, "deleting metric family '{name}': {e}");
    }
}

// SAFETY: Triton's metric objects are internally synchronized (prometheus-cpp) and may be used
// from any thread; the handle is only an identity here.
unsafe impl Send for MetricFamily {}
// SAFETY: as above; no method mutates the wrapper itself.
unsafe impl Sync for MetricFamily {}

impl std::fmt::Debug for MetricFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetricFamily({})", self.name)
    }
}

impl MetricFamily {
    pub fn new(kind: MetricKind, name: &str, help: &str) -> Result<Arc<MetricFamily>> {
        let k = match kind {
            MetricKind::Counter => ffi::TRITONSERVER_METRIC_KIND_COUNTER,
            MetricKind::Gauge => ffi::TRITONSERVER_METRIC_KIND_GAUGE,
        };
        let (n, h) = (c_string(name), c_string(help));
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid out-pointer and NUL-terminated strings (Triton copies them).
        check(unsafe { ffi::TRITONSERVER_MetricFamilyNew(&mut raw, k, n.as_ptr(), h.as_ptr()) })
            .map_err(|e| e.context(format!("creating metric family '{name}'")))?;
        if raw.is_null() {
            return Err(Error::internal(format!(
                "TRITONSERVER_MetricFamilyNew returned no family for '{name}'"
            )));
        }
        Ok(Arc::new(MetricFamily {
            raw,
            name: name.to_string(),
            delete: delete_family,
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for MetricFamily {
    fn drop(&mut self) {
        (self.delete)(self.raw, &self.name);
    }
}

/// One labelled series of a family.
pub struct Metric {
    raw: *mut ffi::TRITONSERVER_Metric,
    family: Arc<MetricFamily>,
}

// SAFETY: see MetricFamily; Triton synchronizes updates of one metric.
unsafe impl Send for Metric {}
// SAFETY: as above.
unsafe impl Sync for Metric {}

impl std::fmt::Debug for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metric({})", self.family.name)
    }
}

impl Metric {
    pub fn new(family: &Arc<MetricFamily>, labels: &[(&str, &str)]) -> Result<Metric> {
        let mut params: Vec<*mut ffi::TRITONSERVER_Parameter> = Vec::with_capacity(labels.len());
        let mut result = Ok(());
        for (k, v) in labels {
            let (k, v) = (c_string(k), c_string(v));
            // SAFETY: NUL-terminated name and STRING value; Triton copies both.
            let p = unsafe {
                ffi::TRITONSERVER_ParameterNew(
                    k.as_ptr(),
                    ffi::TRITONSERVER_PARAMETER_STRING,
                    v.as_ptr().cast(),
                )
            };
            if p.is_null() {
                result = Err(Error::internal("TRITONSERVER_ParameterNew returned NULL"));
                break;
            }
            params.push(p);
        }
        let mut raw = std::ptr::null_mut();
        if result.is_ok() {
            let ptrs: Vec<*const ffi::TRITONSERVER_Parameter> =
                params.iter().map(|p| p.cast_const()).collect();
            // SAFETY: valid out-pointer, a live family, `ptrs.len()` live label parameters.
            result = check(unsafe {
                ffi::TRITONSERVER_MetricNew(&mut raw, family.raw, ptrs.as_ptr(), ptrs.len() as u64)
            });
        }
        for p in params {
            // SAFETY: each parameter came from ParameterNew and is deleted once; MetricNew
            // copied the labels.
            unsafe { ffi::TRITONSERVER_ParameterDelete(p) };
        }
        result.map_err(|e| e.context(format!("creating a metric of '{}'", family.name)))?;
        Ok(Metric {
            raw,
            family: family.clone(),
        })
    }

    pub fn increment(&self, by: f64) -> Result<()> {
        // SAFETY: a live metric.
        check(unsafe { ffi::TRITONSERVER_MetricIncrement(self.raw, by) })
    }

    pub fn set(&self, value: f64) -> Result<()> {
        // SAFETY: a live metric.
        check(unsafe { ffi::TRITONSERVER_MetricSet(self.raw, value) })
    }

    pub fn value(&self) -> Result<f64> {
        let mut v = 0.0;
        // SAFETY: a live metric and a valid out-pointer.
        check(unsafe { ffi::TRITONSERVER_MetricValue(self.raw, &mut v) })?;
        Ok(v)
    }
}

impl Drop for Metric {
    fn drop(&mut self) {
        // SAFETY: `raw` came from MetricNew and is deleted once, before `self.family` (a field,
        // dropped after this body) can delete the family.
        if let Err(e) = check(unsafe { ffi::TRITONSERVER_MetricDelete(self.raw) }) {
            crate::log!(Warn, "deleting a metric of '{}': {e}", self.family.name);
        }
    }
}

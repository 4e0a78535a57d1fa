//! TRITONSERVER_Metric* and TRITONSERVER_Parameter*: custom metrics as Triton core implements
//! them (core `src/tritonserver.cc`, `src/metric_family.cc`), and their Prometheus text.
//!
//! What the backend sees is Triton's behaviour:
//! * a family is a handle of its own, but families of one name share their series (Triton
//!   registers them in one prometheus registry); the same name with another kind is INVALID_ARG;
//! * a metric is one series of its family, keyed by its labels; two metrics with the same labels
//!   share the value (reference counted, the series disappears with its last metric);
//! * labels must be TRITONSERVER_PARAMETER_STRING parameters (else INVALID_ARG); the caller
//!   keeps ownership of the label parameters;
//! * Increment: counters by non-negative values only (INVALID_ARG otherwise), gauges by any;
//!   Set: gauges only; Value: counters and gauges; Observe: histograms only; the wrong kind is
//!   UNSUPPORTED;
//! * MetricFamilyDelete while metrics of that family object are alive is INTERNAL and deletes
//!   nothing; MetricDelete of a metric whose family is gone is INTERNAL.
//!
//! Families, metrics and parameters the backend creates count as backend-owned objects until
//! deleted (`Server::owned_objects`).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use triton_abi::*;

use super::{cstr, exports, guard_value, out, slice};
use crate::error::{Error, Result};
use crate::handles::{self, Kind};
use crate::rules::{self, lock, Shared};

/// The series of every family name of one server.
#[derive(Default)]
pub(crate) struct MetricsRegistry {
    families: Mutex<BTreeMap<String, Arc<FamilyData>>>,
}

/// Families created on threads the host cannot attribute to a server.
static UNOWNED: LazyLock<MetricsRegistry> = LazyLock::new(MetricsRegistry::default);

type Labels = BTreeMap<String, String>;

struct Series {
    value: f64,
    refs: usize,
}

/// One family name: its kind, help text and series.
pub(crate) struct FamilyData {
    kind: u32,
    help: String,
    series: Mutex<BTreeMap<Labels, Series>>,
}

pub(crate) struct FamilyObj {
    name: String,
    data: Arc<FamilyData>,
    /// Metrics created from this family handle and not deleted.
    children: AtomicUsize,
    deleted: AtomicBool,
    owner: Option<Arc<Shared>>,
}

pub(crate) struct MetricObj {
    family: Arc<FamilyObj>,
    labels: Labels,
    owner: Option<Arc<Shared>>,
}

pub(crate) struct ParameterObj {
    pub name: String,
    pub kind: u32,
    /// The value as text (STRING) or its rendering (other kinds).
    pub value: String,
    owner: Option<Arc<Shared>>,
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        TRITONSERVER_METRIC_KIND_COUNTER => "counter",
        TRITONSERVER_METRIC_KIND_GAUGE => "gauge",
        TRITONSERVER_METRIC_KIND_HISTOGRAM => "histogram",
        _ => "unknown",
    }
}

/// A valid Prometheus metric or label name.
fn valid_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

impl MetricsRegistry {
    fn family(&self, name: &str, kind: u32, help: &str) -> Result<Arc<FamilyData>> {
        let mut f = lock(&self.families);
        if let Some(d) = f.get(name) {
            if d.kind != kind {
                return Err(Error::invalid_arg(format!(
                    "metric family '{name}' already exists as a {}; it cannot be registered as a {}",
                    kind_name(d.kind),
                    kind_name(kind)
                )));
            }
            return Ok(d.clone());
        }
        let d = Arc::new(FamilyData {
            kind,
            help: help.to_string(),
            series: Mutex::new(BTreeMap::new()),
        });
        f.insert(name.to_string(), d.clone());
        Ok(d)
    }

    /// Prometheus text exposition format (what Triton's /metrics serves for these families).
    fn render(&self, out: &mut String) {
        for (name, d) in lock(&self.families).iter() {
            let series = lock(&d.series);
            if series.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&d.help));
            let _ = writeln!(out, "# TYPE {name} {}", kind_name(d.kind));
            for (labels, s) in series.iter() {
                let l: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                if l.is_empty() {
                    let _ = writeln!(out, "{name} {}", s.value);
                } else {
                    let _ = writeln!(out, "{name}{{{}}} {}", l.join(","), s.value);
                }
            }
        }
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text of the custom metrics of `shared`'s backend.
pub(crate) fn render(shared: &Shared) -> String {
    let mut out = String::new();
    shared.metrics.render(&mut out);
    UNOWNED.render(&mut out);
    out
}

fn registry_of(owner: &Option<Arc<Shared>>) -> &MetricsRegistry {
    match owner {
        Some(s) => &s.metrics,
        None => &UNOWNED,
    }
}

fn family_obj(h: *mut TRITONSERVER_MetricFamily, func: &str) -> Result<Arc<FamilyObj>> {
    handles::get(h as usize, Kind::MetricFamily, func)
}

fn metric_obj(h: *mut TRITONSERVER_Metric, func: &str) -> Result<Arc<MetricObj>> {
    handles::get(h as usize, Kind::Metric, func)
}

/// Runs `f` on the value of `m`'s series.
fn with_value<T>(m: &MetricObj, what: &str, f: impl FnOnce(&mut f64) -> T) -> Result<T> {
    if m.family.deleted.load(Ordering::SeqCst) {
        return Err(Error::internal(format!(
            "Could not {what} metric value. Metric has been invalidated."
        )));
    }
    let mut series = lock(&m.family.data.series);
    let s = series
        .get_mut(&m.labels)
        .ok_or_else(|| Error::internal("metric series vanished"))?;
    Ok(f(&mut s.value))
}

fn unsupported(kind: u32, op: &str) -> Error {
    Error::unsupported(format!(
        "TRITONSERVER_METRIC_KIND_{} does not support {op}",
        kind_name(kind).to_ascii_uppercase()
    ))
}

exports! {
    fn TRITONSERVER_MetricFamilyNew(
        family: *mut *mut TRITONSERVER_MetricFamily,
        kind: TRITONSERVER_MetricKind,
        name: *const c_char,
        description: *const c_char,
    ) {
        let f = "TRITONSERVER_MetricFamilyNew";
        let name = cstr(name, f, "name")?;
        let help = cstr(description, f, "description")?;
        if !matches!(
            kind,
            TRITONSERVER_METRIC_KIND_COUNTER
                | TRITONSERVER_METRIC_KIND_GAUGE
                | TRITONSERVER_METRIC_KIND_HISTOGRAM
        ) {
            return Err(Error::invalid_arg(
                "Unsupported kind passed to MetricFamily constructor.",
            ));
        }
        if !valid_name(&name, true) {
            return Err(Error::invalid_arg(format!(
                "'{name}' is not a valid metric family name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
            )));
        }
        let owner = rules::current();
        let data = registry_of(&owner).family(&name, kind, &help)?;
        if let Some(o) = &owner {
            o.owned_add("TRITONSERVER_MetricFamily", 1);
        }
        let h = handles::register(
            Kind::MetricFamily,
            Arc::new(FamilyObj {
                name,
                data,
                children: AtomicUsize::new(0),
                deleted: AtomicBool::new(false),
                owner,
            }),
        );
        out(family, h as *mut TRITONSERVER_MetricFamily, f, "family")
    }

    fn TRITONSERVER_MetricFamilyDelete(family: *mut TRITONSERVER_MetricFamily) {
        let f = "TRITONSERVER_MetricFamilyDelete";
        let fam = family_obj(family, f)?;
        let n = fam.children.load(Ordering::SeqCst);
        if n > 0 {
            return Err(Error::internal(format!(
                "Must call MetricDelete on all dependent metrics before calling MetricFamilyDelete ('{}' still has {n})",
                fam.name
            )));
        }
        fam.deleted.store(true, Ordering::SeqCst);
        handles::kill(family as usize, "deleted", None);
        if let Some(o) = &fam.owner {
            o.owned_add("TRITONSERVER_MetricFamily", -1);
        }
        Ok(())
    }

    fn TRITONSERVER_GetMetricFamilyKind(
        family: *mut TRITONSERVER_MetricFamily,
        kind: *mut TRITONSERVER_MetricKind,
    ) {
        let f = "TRITONSERVER_GetMetricFamilyKind";
        let fam = family_obj(family, f)?;
        out(kind, fam.data.kind, f, "kind")
    }

    fn TRITONSERVER_MetricNew(
        metric: *mut *mut TRITONSERVER_Metric,
        family: *mut TRITONSERVER_MetricFamily,
        labels: *const *const TRITONSERVER_Parameter,
        label_count: u64,
    ) {
        let f = "TRITONSERVER_MetricNew";
        let fam = family_obj(family, f)?;
        if fam.data.kind == TRITONSERVER_METRIC_KIND_HISTOGRAM {
            return Err(Error::invalid_arg(
                "Bucket boundaries not found in Metric args (a histogram needs TRITONSERVER_MetricNewWithArgs).",
            ));
        }
        let mut map = Labels::new();
        for &p in slice(labels, label_count as usize, f, "labels")? {
            let p: Arc<ParameterObj> = handles::get(p as usize, Kind::Parameter, f)?;
            if p.kind != TRITONSERVER_PARAMETER_STRING {
                return Err(Error::invalid_arg(format!(
                    "Parameter [{}] must have a type of TRITONSERVER_PARAMETER_STRING to be added as a label.",
                    p.name
                )));
            }
            if !valid_name(&p.name, false) {
                return Err(Error::invalid_arg(format!(
                    "'{}' is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                    p.name
                )));
            }
            map.insert(p.name.clone(), p.value.clone());
        }
        lock(&fam.data.series)
            .entry(map.clone())
            .or_insert(Series { value: 0.0, refs: 0 })
            .refs += 1;
        fam.children.fetch_add(1, Ordering::SeqCst);
        let owner = rules::current();
        if let Some(o) = &owner {
            o.owned_add("TRITONSERVER_Metric", 1);
        }
        let h = handles::register(
            Kind::Metric,
            Arc::new(MetricObj {
                family: fam,
                labels: map,
                owner,
            }),
        );
        out(metric, h as *mut TRITONSERVER_Metric, f, "metric")
    }

    fn TRITONSERVER_MetricDelete(metric: *mut TRITONSERVER_Metric) {
        let f = "TRITONSERVER_MetricDelete";
        let m = metric_obj(metric, f)?;
        if m.family.deleted.load(Ordering::SeqCst) {
            return Err(Error::internal(
                "MetricFamily reference was invalidated before Metric was deleted. Must call MetricDelete on all dependent metrics before calling MetricFamilyDelete.",
            ));
        }
        {
            let mut series = lock(&m.family.data.series);
            if let Some(s) = series.get_mut(&m.labels) {
                s.refs -= 1;
                if s.refs == 0 {
                    series.remove(&m.labels);
                }
            }
        }
        m.family.children.fetch_sub(1, Ordering::SeqCst);
        handles::kill(metric as usize, "deleted", None);
        if let Some(o) = &m.owner {
            o.owned_add("TRITONSERVER_Metric", -1);
        }
        Ok(())
    }

    fn TRITONSERVER_MetricValue(metric: *mut TRITONSERVER_Metric, value: *mut f64) {
        let f = "TRITONSERVER_MetricValue";
        let m = metric_obj(metric, f)?;
        if m.family.data.kind == TRITONSERVER_METRIC_KIND_HISTOGRAM {
            return Err(unsupported(m.family.data.kind, "Value"));
        }
        let v = with_value(&m, "get", |v| *v)?;
        out(value, v, f, "value")
    }

    fn TRITONSERVER_MetricIncrement(metric: *mut TRITONSERVER_Metric, value: f64) {
        let m = metric_obj(metric, "TRITONSERVER_MetricIncrement")?;
        match m.family.data.kind {
            TRITONSERVER_METRIC_KIND_COUNTER if value < 0.0 => Err(Error::invalid_arg(
                "TRITONSERVER_METRIC_KIND_COUNTER can only be incremented monotonically by non-negative values.",
            )),
            TRITONSERVER_METRIC_KIND_COUNTER | TRITONSERVER_METRIC_KIND_GAUGE => {
                with_value(&m, "increment", |v| *v += value)
            }
            k => Err(unsupported(k, "Increment")),
        }
    }

    fn TRITONSERVER_MetricSet(metric: *mut TRITONSERVER_Metric, value: f64) {
        let m = metric_obj(metric, "TRITONSERVER_MetricSet")?;
        match m.family.data.kind {
            TRITONSERVER_METRIC_KIND_GAUGE => with_value(&m, "set", |v| *v = value),
            k => Err(unsupported(k, "Set")),
        }
    }

    fn TRITONSERVER_MetricObserve(metric: *mut TRITONSERVER_Metric, _value: f64) {
        let m = metric_obj(metric, "TRITONSERVER_MetricObserve")?;
        // Histograms can only be made with MetricNewWithArgs, which the host does not offer.
        Err(unsupported(m.family.data.kind, "Observe"))
    }

    fn TRITONSERVER_GetMetricKind(metric: *mut TRITONSERVER_Metric, kind: *mut TRITONSERVER_MetricKind) {
        let f = "TRITONSERVER_GetMetricKind";
        let m = metric_obj(metric, f)?;
        out(kind, m.family.data.kind, f, "kind")
    }
}

/// `TRITONSERVER_ParameterNew`: returns the parameter (NULL for an unknown type, as Triton).
#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_ParameterNew(
    name: *const c_char,
    kind: TRITONSERVER_ParameterType,
    value: *const c_void,
) -> *mut TRITONSERVER_Parameter {
    guard_value("TRITONSERVER_ParameterNew", std::ptr::null_mut(), || {
        let f = "TRITONSERVER_ParameterNew";
        let Ok(name) = cstr(name, f, "name") else {
            return std::ptr::null_mut();
        };
        if value.is_null() {
            rules::violation(None, None, format!("{f}: NULL value for '{name}'"));
            return std::ptr::null_mut();
        }
        // SAFETY: the C API requires `value` to point at a value of the given type (a
        // NUL-terminated string for STRING); it is non-null (checked above).
        let v = unsafe {
            match kind {
                TRITONSERVER_PARAMETER_STRING => std::ffi::CStr::from_ptr(value as *const c_char)
                    .to_string_lossy()
                    .into_owned(),
                TRITONSERVER_PARAMETER_INT => (*(value as *const i64)).to_string(),
                TRITONSERVER_PARAMETER_DOUBLE => (*(value as *const f64)).to_string(),
                TRITONSERVER_PARAMETER_BOOL => (*(value as *const bool)).to_string(),
                _ => return std::ptr::null_mut(),
            }
        };
        let owner = rules::current();
        if let Some(o) = &owner {
            o.owned_add("TRITONSERVER_Parameter", 1);
        }
        handles::register(
            Kind::Parameter,
            Arc::new(ParameterObj {
                name,
                kind,
                value: v,
                owner,
            }),
        ) as *mut TRITONSERVER_Parameter
    })
}

/// `TRITONSERVER_ParameterDelete`.
#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_ParameterDelete(parameter: *mut TRITONSERVER_Parameter) {
    guard_value("TRITONSERVER_ParameterDelete", (), || {
        let f = "TRITONSERVER_ParameterDelete";
        if let Ok(p) = handles::get::<ParameterObj>(parameter as usize, Kind::Parameter, f) {
            handles::kill(parameter as usize, "deleted", None);
            if let Some(o) = &p.owner {
                o.owned_add("TRITONSERVER_Parameter", -1);
            }
        }
    })
}

/// The exports that do not return an error object.
pub(crate) fn value_symbols() -> Vec<(&'static str, *const ())> {
    vec![
        (
            "TRITONSERVER_ParameterNew",
            TRITONSERVER_ParameterNew as *const (),
        ),
        (
            "TRITONSERVER_ParameterDelete",
            TRITONSERVER_ParameterDelete as *const (),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code of an error return (deleting it), 0 for success.
    fn code(e: crate::abi::Err) -> u32 {
        crate::abi::delete_error(e, "test")
            .map(|e| e.code)
            .unwrap_or(0)
    }

    fn label(k: &std::ffi::CStr, v: &std::ffi::CStr) -> *mut TRITONSERVER_Parameter {
        // SAFETY: NUL-terminated strings.
        unsafe {
            TRITONSERVER_ParameterNew(k.as_ptr(), TRITONSERVER_PARAMETER_STRING, v.as_ptr().cast())
        }
    }

    fn family(kind: u32, name: &std::ffi::CStr) -> (u32, *mut TRITONSERVER_MetricFamily) {
        let mut f = std::ptr::null_mut();
        // SAFETY: valid out-pointer and strings.
        let c = code(unsafe {
            TRITONSERVER_MetricFamilyNew(&mut f, kind, name.as_ptr(), c"help".as_ptr())
        });
        (c, f)
    }

    fn metric(
        f: *mut TRITONSERVER_MetricFamily,
        labels: &[*mut TRITONSERVER_Parameter],
    ) -> (u32, *mut TRITONSERVER_Metric) {
        let mut m = std::ptr::null_mut();
        let l: Vec<*const TRITONSERVER_Parameter> = labels.iter().map(|p| p.cast_const()).collect();
        // SAFETY: valid out-pointer, live handles.
        let c = code(unsafe { TRITONSERVER_MetricNew(&mut m, f, l.as_ptr(), l.len() as u64) });
        (c, m)
    }

    fn value(m: *mut TRITONSERVER_Metric) -> (u32, f64) {
        let mut v = -1.0;
        // SAFETY: valid out-pointer.
        let c = code(unsafe { TRITONSERVER_MetricValue(m, &mut v) });
        (c, v)
    }

    #[test]
    fn kinds_error_codes_shared_series_and_deletion_order_follow_triton() {
        let (c, counter) = family(TRITONSERVER_METRIC_KIND_COUNTER, c"t1_requests_total");
        assert_eq!(c, 0);
        let (c, gauge) = family(TRITONSERVER_METRIC_KIND_GAUGE, c"t1_temperature");
        assert_eq!(c, 0);
        // Same name, other kind: INVALID_ARG; bad kind: INVALID_ARG.
        assert_eq!(
            family(TRITONSERVER_METRIC_KIND_GAUGE, c"t1_requests_total").0,
            TRITONSERVER_ERROR_INVALID_ARG
        );
        assert_eq!(family(7, c"t1_other").0, TRITONSERVER_ERROR_INVALID_ARG);

        let m = label(c"model", c"a");
        let (c, cm) = metric(counter, &[m]);
        assert_eq!(c, 0);
        // Labels must be strings.
        let n: i64 = 3;
        // SAFETY: a valid i64.
        let int_label = unsafe {
            TRITONSERVER_ParameterNew(
                c"n".as_ptr(),
                TRITONSERVER_PARAMETER_INT,
                (&n as *const i64).cast(),
            )
        };
        assert_eq!(
            metric(counter, &[int_label]).0,
            TRITONSERVER_ERROR_INVALID_ARG
        );
        // SAFETY: live parameters, deleted once.
        unsafe { TRITONSERVER_ParameterDelete(int_label) };

        // Counter: increment by >= 0 only, no Set; Value works.
        // SAFETY: live metric.
        unsafe {
            assert_eq!(code(TRITONSERVER_MetricIncrement(cm, 2.0)), 0);
            assert_eq!(
                code(TRITONSERVER_MetricIncrement(cm, -1.0)),
                TRITONSERVER_ERROR_INVALID_ARG
            );
            assert_eq!(
                code(TRITONSERVER_MetricSet(cm, 5.0)),
                TRITONSERVER_ERROR_UNSUPPORTED
            );
            assert_eq!(
                code(TRITONSERVER_MetricObserve(cm, 5.0)),
                TRITONSERVER_ERROR_UNSUPPORTED
            );
        }
        assert_eq!(value(cm), (0, 2.0));
        // A second metric with the same labels shares the series.
        let (_, cm2) = metric(counter, &[m]);
        // SAFETY: live metric.
        assert_eq!(code(unsafe { TRITONSERVER_MetricIncrement(cm2, 1.0) }), 0);
        assert_eq!(value(cm), (0, 3.0));

        // Gauge: set and increment either way.
        let (_, gm) = metric(gauge, &[m]);
        // SAFETY: live metric.
        unsafe {
            assert_eq!(code(TRITONSERVER_MetricSet(gm, 10.0)), 0);
            assert_eq!(code(TRITONSERVER_MetricIncrement(gm, -2.5)), 0);
        }
        assert_eq!(value(gm), (0, 7.5));
        let mut k = 9;
        // SAFETY: valid out-pointer.
        assert_eq!(code(unsafe { TRITONSERVER_GetMetricKind(gm, &mut k) }), 0);
        assert_eq!(k, TRITONSERVER_METRIC_KIND_GAUGE);

        let mut text = String::new();
        UNOWNED.render(&mut text);
        assert!(
            text.contains("# TYPE t1_requests_total counter\nt1_requests_total{model=\"a\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("# HELP t1_temperature help\n# TYPE t1_temperature gauge\nt1_temperature{model=\"a\"} 7.5\n"), "{text}");

        // A family with live metrics cannot be deleted (INTERNAL), and stays usable.
        // SAFETY: live handles, each deleted once.
        unsafe {
            assert_eq!(
                code(TRITONSERVER_MetricFamilyDelete(counter)),
                TRITONSERVER_ERROR_INTERNAL
            );
            assert_eq!(code(TRITONSERVER_MetricIncrement(cm, 1.0)), 0);
            assert_eq!(code(TRITONSERVER_MetricDelete(cm)), 0);
            assert_eq!(value(cm2), (0, 4.0));
            assert_eq!(code(TRITONSERVER_MetricDelete(cm2)), 0);
            assert_eq!(code(TRITONSERVER_MetricFamilyDelete(counter)), 0);
            assert_eq!(code(TRITONSERVER_MetricDelete(gm)), 0);
            assert_eq!(code(TRITONSERVER_MetricFamilyDelete(gauge)), 0);
            TRITONSERVER_ParameterDelete(m);
        }
        // The last metric of a series takes the series with it.
        let mut text = String::new();
        UNOWNED.render(&mut text);
        assert!(!text.contains("t1_requests_total{"), "{text}");
        assert!(!text.contains("t1_temperature{"), "{text}");
    }
}

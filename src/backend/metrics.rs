//! rusttrt's custom metrics, served by Triton on `/metrics` next to its `nv_inference_*`
//! families. Every series carries Triton's own `model` and `version` labels.
//!
//! | family | kind | meaning |
//! |---|---|---|
//! | `rusttrt_engine_cache_hits_total` | counter | engine loads served from the engine cache |
//! | `rusttrt_engine_cache_misses_total` | counter | engine loads that had to build (a missing, corrupt or refused entry) |
//! | `rusttrt_engine_build_duration_seconds` | gauge | seconds the engine build of this load took (conversion, build, guard); 0 from the cache |
//! | `rusttrt_fp16_guard_passed` | gauge | 1 when the FP16 engine passed the accuracy guard, 0 when it failed (FP32 served) |
//! | `rusttrt_fp16_guard_min_cosine` | gauge | the guard's minimum per-row cosine similarity, FP16 against FP32 |
//! | `rusttrt_engine_info` | gauge | 1 for each engine serving the model; labels `device`, `engine`, `precision` say which |
//!
//! Metrics are best effort: where Triton's metrics API refuses (a Triton built without metrics)
//! the backend says so once and serves without them.

use crate::cache::CacheOutcome;
use crate::log;
use crate::triton::{Metric, MetricFamily, MetricKind};
use std::sync::{Arc, Mutex};

pub const CACHE_HITS: &str = "rusttrt_engine_cache_hits_total";
pub const CACHE_MISSES: &str = "rusttrt_engine_cache_misses_total";
pub const BUILD_SECONDS: &str = "rusttrt_engine_build_duration_seconds";
pub const GUARD_PASSED: &str = "rusttrt_fp16_guard_passed";
pub const GUARD_MIN_COSINE: &str = "rusttrt_fp16_guard_min_cosine";
pub const ENGINE_INFO: &str = "rusttrt_engine_info";

/// The families, created once per backend (deleted at TRITONBACKEND_Finalize, after every
/// model's metrics).
#[derive(Debug)]
pub struct BackendMetrics {
    hits: Arc<MetricFamily>,
    misses: Arc<MetricFamily>,
    build: Arc<MetricFamily>,
    guard_passed: Arc<MetricFamily>,
    guard_cosine: Arc<MetricFamily>,
    info: Arc<MetricFamily>,
}

impl BackendMetrics {
    /// The families, or `None` (with a warning) where Triton offers no metrics.
    pub fn create() -> Option<Arc<BackendMetrics>> {
        let make = || -> crate::error::Result<BackendMetrics> {
            use MetricKind::{Counter, Gauge};
            Ok(BackendMetrics {
                hits: MetricFamily::new(
                    Counter,
                    CACHE_HITS,
                    "Engine loads served from rusttrt's engine cache",
                )?,
                misses: MetricFamily::new(
                    Counter,
                    CACHE_MISSES,
                    "Engine loads that built the engine (no usable cache entry)",
                )?,
                build: MetricFamily::new(
                    Gauge,
                    BUILD_SECONDS,
                    "Seconds the engine build of this load took (FP16 conversion, build, accuracy guard); 0 when the engine came from the cache",
                )?,
                guard_passed: MetricFamily::new(
                    Gauge,
                    GUARD_PASSED,
                    "1 when the FP16 engine passed the accuracy guard, 0 when it failed and FP32 is served",
                )?,
                guard_cosine: MetricFamily::new(
                    Gauge,
                    GUARD_MIN_COSINE,
                    "Minimum per-row cosine similarity of the FP16 engine against FP32 in the accuracy guard",
                )?,
                info: MetricFamily::new(
                    Gauge,
                    ENGINE_INFO,
                    "1 for each engine serving the model; the labels say which engine, precision and device",
                )?,
            })
        };
        match make() {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                log!(
                    Warn,
                    "rusttrt serves without custom metrics: Triton's metrics API refused ({e})"
                );
                None
            }
        }
    }
}

struct Series {
    hits: Metric,
    misses: Metric,
    build: Metric,
    guard_passed: Mutex<Option<Metric>>,
    guard_cosine: Mutex<Option<Metric>>,
    info: Mutex<Vec<Metric>>,
}

/// One model's series.
pub struct ModelMetrics {
    families: Option<Arc<BackendMetrics>>,
    name: String,
    version: String,
    series: Option<Series>,
    /// The precision the last cache outcome serves (read when the engine is announced).
    last_served: Mutex<Option<String>>,
}

fn warn(e: crate::error::Error) {
    log!(Warn, "custom metric not updated: {e}");
}

impl ModelMetrics {
    pub fn new(families: Option<&Arc<BackendMetrics>>, name: &str, version: u64) -> ModelMetrics {
        let version = version.to_string();
        let series = families.and_then(|f| {
            let labels = [("model", name), ("version", version.as_str())];
            let r = (|| {
                Ok::<_, crate::error::Error>(Series {
                    hits: Metric::new(&f.hits, &labels)?,
                    misses: Metric::new(&f.misses, &labels)?,
                    build: Metric::new(&f.build, &labels)?,
                    guard_passed: Mutex::new(None),
                    guard_cosine: Mutex::new(None),
                    info: Mutex::new(Vec::new()),
                })
            })();
            r.map_err(warn).ok()
        });
        ModelMetrics {
            families: families.cloned(),
            name: name.to_string(),
            version,
            series,
            last_served: Mutex::new(None),
        }
    }

    fn labels(&self) -> [(&str, &str); 2] {
        [("model", &self.name), ("version", &self.version)]
    }

    /// A cache outcome: a hit or a miss, the build's seconds, the guard's verdict.
    pub fn cache_outcome(&self, outcome: &CacheOutcome) {
        let Some(s) = &self.series else {
            return;
        };
        let r = if outcome.is_hit() {
            s.hits.increment(1.0)
        } else {
            s.misses.increment(1.0)
        };
        r.unwrap_or_else(warn);
        if let Some(secs) = outcome.build_seconds {
            s.build.set(secs).unwrap_or_else(warn);
        }
        let Ok((meta, _)) = super::envelope::unwrap(&outcome.artifact) else {
            return;
        };
        *self.last_served.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(meta.served_precision.clone());
        let (Some(g), Some(f)) = (&meta.guard, &self.families) else {
            return;
        };
        for (slot, family, value) in [
            (
                &s.guard_passed,
                &f.guard_passed,
                if g.passed { 1.0 } else { 0.0 },
            ),
            (&s.guard_cosine, &f.guard_cosine, g.min_cosine),
        ] {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Metric::new(family, &self.labels()).map_err(warn).ok();
            }
            if let Some(m) = slot.as_ref() {
                m.set(value).unwrap_or_else(warn);
            }
        }
    }

    /// An engine now serves the model on `device`: `engine` describes it, `requested` is the
    /// precision asked for (the cache outcome's served precision wins when there was one).
    pub fn serving(&self, device: &str, engine: &str, requested: &str) {
        let (Some(s), Some(f)) = (&self.series, &self.families) else {
            return;
        };
        let precision = self
            .last_served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| requested.to_string());
        let labels = [
            ("model", self.name.as_str()),
            ("version", self.version.as_str()),
            ("device", device),
            ("engine", engine),
            ("precision", precision.as_str()),
        ];
        match Metric::new(&f.info, &labels) {
            Ok(m) => {
                m.set(1.0).unwrap_or_else(warn);
                s.info.lock().unwrap_or_else(|p| p.into_inner()).push(m);
            }
            Err(e) => warn(e),
        }
    }
}

//! The backend proper: backend-wide settings, model state (config, engines per device) and
//! instance state (a runner and its buffers), and Execute.
//!
//! Entry points live in [`api`]; they only convert between C and these types.

pub mod api;
pub mod autocomplete;
pub mod config;
pub mod engine_key;
pub mod engines;
pub mod envelope;
pub mod execute;
pub mod gpu;
pub mod guard;
pub mod guard_inputs;
pub mod metrics;
pub mod model;
pub mod params;
pub mod progress;
pub mod worker;

use crate::error::Result;

/// Routes the engine layer's log (TensorRT's messages included) into Triton's log. Called when
/// the backend initializes and in the build worker.
pub fn engine_log_to_triton() {
    use crate::engine::log::LogSeverity;
    crate::engine::log::set_log_sink(std::sync::Arc::new(|sev, msg| {
        let level = match sev {
            LogSeverity::InternalError | LogSeverity::Error => crate::triton::LogLevel::Error,
            LogSeverity::Warning => crate::triton::LogLevel::Warn,
            LogSeverity::Info => crate::triton::LogLevel::Info,
            LogSeverity::Verbose => crate::triton::LogLevel::Verbose,
        };
        crate::triton::log(level, "engine", 0, msg);
    }));
}
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Backend-wide settings from `--backend-config=rusttrt,<key>=<value>` and Triton's globals.
#[derive(Debug, Clone, Default)]
pub struct BackendState {
    /// Every `cmdline` key, as given (all strings).
    pub cmdline: BTreeMap<String, String>,
    /// Directory of libtriton_rusttrt.so (a private libonnxruntime.so may sit beside it).
    pub backend_dir: PathBuf,
    /// The custom metric families (`None` where Triton offers no metrics API, and in tests).
    pub metrics: Option<std::sync::Arc<metrics::BackendMetrics>>,
}

impl BackendState {
    pub fn from_config(config: &serde_json::Value, backend_dir: PathBuf) -> Result<Self> {
        let mut cmdline = BTreeMap::new();
        if let Some(obj) = config.get("cmdline").and_then(|c| c.as_object()) {
            for (k, v) in obj {
                let s = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                cmdline.insert(k.clone(), s);
            }
        }
        Ok(BackendState {
            cmdline,
            backend_dir,
            metrics: None,
        })
    }

    /// A backend-config value (keys are given with dashes, as on Triton's command line).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.cmdline
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The TensorRT shim library: the backend config's `tensorrt-shim-library` (a relative path
    /// is taken from the backend's directory), else `libtriton_rusttrt_tensorrt.so` beside the
    /// backend.
    pub fn tensorrt_shim_path(&self) -> PathBuf {
        match self.get("tensorrt-shim-library") {
            Some(p) => self.backend_dir.join(p),
            None => self.backend_dir.join(crate::engine::tensorrt::SHIM_LIBRARY),
        }
    }

    /// Triton's `default-max-batch-size` (4 when absent).
    pub fn default_max_batch_size(&self) -> usize {
        self.get("default-max-batch-size")
            .and_then(|s| s.parse().ok())
            .unwrap_or(4)
    }
}

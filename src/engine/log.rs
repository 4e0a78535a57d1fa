//! The engine layer's log: one sink the backend plugs in (Triton's log), so that engines never
//! call up into the backend or Triton themselves.

use std::sync::{Arc, RwLock};

/// Severity of an engine's log message (TensorRT's numbers, which ONNX Runtime's levels map onto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogSeverity {
    InternalError = 0,
    Error = 1,
    Warning = 2,
    #[default]
    Info = 3,
    Verbose = 4,
}

impl LogSeverity {
    pub fn from_trt(v: i32) -> Self {
        match v {
            0 => LogSeverity::InternalError,
            1 => LogSeverity::Error,
            2 => LogSeverity::Warning,
            3 => LogSeverity::Info,
            _ => LogSeverity::Verbose,
        }
    }
}

/// Receives the engines' log messages (from any thread).
pub type LogSink = Arc<dyn Fn(LogSeverity, &str) + Send + Sync>;

static LOG_SINK: RwLock<Option<LogSink>> = RwLock::new(None);

/// Routes the engines' log (TensorRT's, and the engine layer's own lines) to `sink`, e.g.
/// Triton's log. Until set, errors and warnings go to stderr.
pub fn set_log_sink(sink: LogSink) {
    match LOG_SINK.write() {
        Ok(mut g) => *g = Some(sink),
        Err(poisoned) => *poisoned.into_inner() = Some(sink),
    }
}

/// One log line of the engine layer.
pub fn emit_log(sev: LogSeverity, msg: &str) {
    let sink = match LOG_SINK.read() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    match sink {
        Some(f) => f(sev, msg),
        None if sev <= LogSeverity::Warning => eprintln!("rusttrt engine [{sev:?}]: {msg}"),
        None => {}
    }
}

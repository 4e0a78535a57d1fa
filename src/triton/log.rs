//! Logging into Triton's log (`TRITONSERVER_LogMessage`).

use crate::ffi;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
    Verbose,
}

impl LogLevel {
    fn raw(self) -> u32 {
        match self {
            LogLevel::Info => ffi::TRITONSERVER_LOG_INFO,
            LogLevel::Warn => ffi::TRITONSERVER_LOG_WARN,
            LogLevel::Error => ffi::TRITONSERVER_LOG_ERROR,
            LogLevel::Verbose => ffi::TRITONSERVER_LOG_VERBOSE,
        }
    }
}

/// Whether Triton would print a message at this level (skip building verbose strings).
pub fn log_enabled(level: LogLevel) -> bool {
    // SAFETY: a pure query of the server's log settings.
    unsafe { ffi::TRITONSERVER_LogIsEnabled(level.raw()) }
}

/// Writes one line into Triton's log. Logging never fails the caller.
pub fn log(level: LogLevel, file: &str, line: u32, msg: &str) {
    let f = super::c_string(file);
    let m = super::c_string(msg);
    // SAFETY: both strings are valid for the call and copied by Triton.
    let err =
        unsafe { ffi::TRITONSERVER_LogMessage(level.raw(), f.as_ptr(), line as i32, m.as_ptr()) };
    let _ = super::check(err);
}

/// `log!(Info, "loaded {}", name)` logs with the caller's file and line.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)*) => {
        $crate::triton::log($crate::triton::LogLevel::$level, file!(), line!(), &format!($($arg)*))
    };
}

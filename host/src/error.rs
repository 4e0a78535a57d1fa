//! Error type of the host: a Triton error code plus a message.

use std::fmt;

use triton_abi::*;

/// An error as Triton would report it: `TRITONSERVER_Error_Code` + message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// One of the `TRITONSERVER_ERROR_*` codes.
    pub code: u32,
    /// Human-readable message.
    pub msg: String,
}

/// Result with the host's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Error with an explicit code.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
        }
    }
    /// `TRITONSERVER_ERROR_INVALID_ARG`
    pub fn invalid_arg(msg: impl Into<String>) -> Self {
        Self::new(TRITONSERVER_ERROR_INVALID_ARG, msg)
    }
    /// `TRITONSERVER_ERROR_INTERNAL`
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(TRITONSERVER_ERROR_INTERNAL, msg)
    }
    /// `TRITONSERVER_ERROR_NOT_FOUND`
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(TRITONSERVER_ERROR_NOT_FOUND, msg)
    }
    /// `TRITONSERVER_ERROR_UNSUPPORTED`
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Self::new(TRITONSERVER_ERROR_UNSUPPORTED, msg)
    }
    /// `TRITONSERVER_ERROR_UNAVAILABLE`
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(TRITONSERVER_ERROR_UNAVAILABLE, msg)
    }
    /// `TRITONSERVER_ERROR_ALREADY_EXISTS`
    pub fn already_exists(msg: impl Into<String>) -> Self {
        Self::new(TRITONSERVER_ERROR_ALREADY_EXISTS, msg)
    }
    /// Name of the code as `TRITONSERVER_ErrorCodeString` gives it.
    pub fn code_name(&self) -> &'static str {
        error_code_name(self.code)
    }
    /// Prefix the message with context.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code_name(), self.msg)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::internal(e.to_string())
    }
}

impl From<triton_rusttrt::Error> for Error {
    /// The backend crate's error (used by the command for its pure layers), code kept.
    fn from(e: triton_rusttrt::Error) -> Self {
        Error::new(e.code().to_triton(), e.to_string())
    }
}

//! The one error type of the backend: a code that maps onto `TRITONSERVER_Error_Code`, a message
//! that names the model / tensor / what was expected and what came, and context lines added on
//! the way up ("while loading model 'x'").

use std::fmt;

/// Kinds of failure, mapped one to one onto Triton's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unknown,
    Internal,
    NotFound,
    InvalidArg,
    Unavailable,
    Unsupported,
    AlreadyExists,
    Cancelled,
}

impl ErrorCode {
    /// The `TRITONSERVER_Error_Code` value.
    pub fn to_triton(self) -> u32 {
        use triton_abi::*;
        match self {
            ErrorCode::Unknown => TRITONSERVER_ERROR_UNKNOWN,
            ErrorCode::Internal => TRITONSERVER_ERROR_INTERNAL,
            ErrorCode::NotFound => TRITONSERVER_ERROR_NOT_FOUND,
            ErrorCode::InvalidArg => TRITONSERVER_ERROR_INVALID_ARG,
            ErrorCode::Unavailable => TRITONSERVER_ERROR_UNAVAILABLE,
            ErrorCode::Unsupported => TRITONSERVER_ERROR_UNSUPPORTED,
            ErrorCode::AlreadyExists => TRITONSERVER_ERROR_ALREADY_EXISTS,
            ErrorCode::Cancelled => TRITONSERVER_ERROR_CANCELLED,
        }
    }

    /// From a `TRITONSERVER_Error_Code` value (unknown values become `Unknown`).
    pub fn from_triton(code: u32) -> Self {
        use triton_abi::*;
        match code {
            TRITONSERVER_ERROR_INTERNAL => ErrorCode::Internal,
            TRITONSERVER_ERROR_NOT_FOUND => ErrorCode::NotFound,
            TRITONSERVER_ERROR_INVALID_ARG => ErrorCode::InvalidArg,
            TRITONSERVER_ERROR_UNAVAILABLE => ErrorCode::Unavailable,
            TRITONSERVER_ERROR_UNSUPPORTED => ErrorCode::Unsupported,
            TRITONSERVER_ERROR_ALREADY_EXISTS => ErrorCode::AlreadyExists,
            TRITONSERVER_ERROR_CANCELLED => ErrorCode::Cancelled,
            _ => ErrorCode::Unknown,
        }
    }
}

/// An error with a code, a message and context (outermost first when displayed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    message: String,
    context: Vec<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            context: Vec::new(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArg, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn code(&self) -> ErrorCode {
        self.code
    }
    /// The innermost message, without context.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Adds a context line ("while loading model 'm'"); shown before the message.
    /// Adds an outer context ("model 'm'"), unless the error already says exactly that as its
    /// outermost part (layers that each name the model, or a message from a build worker that
    /// named it already, read once).
    pub fn context(mut self, ctx: impl Into<String>) -> Self {
        let ctx = ctx.into();
        let already = match self.context.last() {
            Some(last) => *last == ctx,
            None => self.message.starts_with(&format!("{ctx}: ")),
        };
        if !already {
            self.context.push(ctx);
        }
        self
    }
    /// Same error with another code (e.g. an engine failure that is the caller's fault).
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.code = code;
        self
    }
    /// Turns a caught panic payload into an INTERNAL error.
    pub fn from_panic(what: &str, payload: Box<dyn std::any::Any + Send>) -> Self {
        let msg = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        };
        Error::internal(format!("rusttrt: panic in {what}: {msg}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.context.iter().rev() {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorCode::NotFound,
            _ => ErrorCode::Internal,
        };
        Error::new(code, e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::invalid_arg(format!("JSON: {e}"))
    }
}

/// Adds context to any `Result` whose error converts into [`Error`].
pub trait ResultExt<T> {
    fn ctx<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn ctx<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

/// `bail!(Code, "fmt", args)` returns an error of that code from the current function.
#[macro_export]
macro_rules! bail {
    ($code:ident, $($arg:tt)*) => {
        return Err($crate::error::Error::new($crate::error::ErrorCode::$code, format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_context_is_not_repeated() {
        let e = Error::internal("model 'm': it broke")
            .context("model 'm'")
            .context("model 'm'")
            .context("instance 'i'")
            .context("model 'm'");
        assert_eq!(
            e.to_string(),
            "model 'm': instance 'i': model 'm': it broke"
        );
    }

    #[test]
    fn context_is_printed_outermost_first() {
        let e = Error::invalid_arg("bad dims")
            .context("input 'x'")
            .context("model 'm'");
        assert_eq!(e.to_string(), "model 'm': input 'x': bad dims");
        assert_eq!(
            e.code().to_triton(),
            triton_abi::TRITONSERVER_ERROR_INVALID_ARG
        );
    }

    #[test]
    fn codes_round_trip() {
        for c in 0..8 {
            assert_eq!(ErrorCode::from_triton(c).to_triton(), c);
        }
    }
}

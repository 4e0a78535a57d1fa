//! Types and enum values of Triton's C API as a backend sees them.
//!
//! Both sides of the boundary use this crate: the backend (`triton-rusttrt`), which *imports*
//! the server-side functions, and the test host (`rusttrt-host`), which *implements* them.
//! Written from the public description of backend API 1.19 / server API 1.34
//! (see `docs/architecture.md`); the values are ABI facts, the code is ours.
//!
//! Enums are plain `u32` constants, never Rust enums: a C `enum` may carry any value and a Rust
//! enum receiving an out-of-range discriminant is undefined behaviour.
#![no_std]
#![allow(non_camel_case_types)]

/// Backend API version the backend is built against.
pub const TRITONBACKEND_API_VERSION_MAJOR: u32 = 1;
pub const TRITONBACKEND_API_VERSION_MINOR: u32 = 19;
/// Server API version the backend is built against.
pub const TRITONSERVER_API_VERSION_MAJOR: u32 = 1;
pub const TRITONSERVER_API_VERSION_MINOR: u32 = 34;

macro_rules! opaque {
    ($($name:ident),* $(,)?) => {$(
        /// Opaque handle owned by the server; only ever used behind a pointer.
        #[repr(C)]
        pub struct $name {
            _private: [u8; 0],
            _not_send_sync: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
        }
    )*};
}

opaque!(
    TRITONSERVER_Error,
    TRITONSERVER_Message,
    TRITONSERVER_Server,
    TRITONSERVER_BufferAttributes,
    TRITONSERVER_InferenceTrace,
    TRITONSERVER_Parameter,
    TRITONSERVER_MetricFamily,
    TRITONSERVER_Metric,
    TRITONBACKEND_Backend,
    TRITONBACKEND_BackendAttribute,
    TRITONBACKEND_Model,
    TRITONBACKEND_ModelInstance,
    TRITONBACKEND_Request,
    TRITONBACKEND_Response,
    TRITONBACKEND_ResponseFactory,
    TRITONBACKEND_Input,
    TRITONBACKEND_Output,
    TRITONBACKEND_MemoryManager,
);

/// `TRITONSERVER_Error_Code`
pub type TRITONSERVER_Error_Code = u32;
pub const TRITONSERVER_ERROR_UNKNOWN: u32 = 0;
pub const TRITONSERVER_ERROR_INTERNAL: u32 = 1;
pub const TRITONSERVER_ERROR_NOT_FOUND: u32 = 2;
pub const TRITONSERVER_ERROR_INVALID_ARG: u32 = 3;
pub const TRITONSERVER_ERROR_UNAVAILABLE: u32 = 4;
pub const TRITONSERVER_ERROR_UNSUPPORTED: u32 = 5;
pub const TRITONSERVER_ERROR_ALREADY_EXISTS: u32 = 6;
pub const TRITONSERVER_ERROR_CANCELLED: u32 = 7;

/// `TRITONSERVER_DataType`
pub type TRITONSERVER_DataType = u32;
pub const TRITONSERVER_TYPE_INVALID: u32 = 0;
pub const TRITONSERVER_TYPE_BOOL: u32 = 1;
pub const TRITONSERVER_TYPE_UINT8: u32 = 2;
pub const TRITONSERVER_TYPE_UINT16: u32 = 3;
pub const TRITONSERVER_TYPE_UINT32: u32 = 4;
pub const TRITONSERVER_TYPE_UINT64: u32 = 5;
pub const TRITONSERVER_TYPE_INT8: u32 = 6;
pub const TRITONSERVER_TYPE_INT16: u32 = 7;
pub const TRITONSERVER_TYPE_INT32: u32 = 8;
pub const TRITONSERVER_TYPE_INT64: u32 = 9;
pub const TRITONSERVER_TYPE_FP16: u32 = 10;
pub const TRITONSERVER_TYPE_FP32: u32 = 11;
pub const TRITONSERVER_TYPE_FP64: u32 = 12;
pub const TRITONSERVER_TYPE_BYTES: u32 = 13;
pub const TRITONSERVER_TYPE_BF16: u32 = 14;

/// `TRITONSERVER_MemoryType`
pub type TRITONSERVER_MemoryType = u32;
pub const TRITONSERVER_MEMORY_CPU: u32 = 0;
pub const TRITONSERVER_MEMORY_CPU_PINNED: u32 = 1;
pub const TRITONSERVER_MEMORY_GPU: u32 = 2;

/// `TRITONSERVER_ParameterType`
pub type TRITONSERVER_ParameterType = u32;
pub const TRITONSERVER_PARAMETER_STRING: u32 = 0;
pub const TRITONSERVER_PARAMETER_INT: u32 = 1;
pub const TRITONSERVER_PARAMETER_BOOL: u32 = 2;
pub const TRITONSERVER_PARAMETER_DOUBLE: u32 = 3;
pub const TRITONSERVER_PARAMETER_BYTES: u32 = 4;

/// `TRITONSERVER_InstanceGroupKind` (note: CPU/GPU order differs from the config proto).
pub type TRITONSERVER_InstanceGroupKind = u32;
pub const TRITONSERVER_INSTANCEGROUPKIND_AUTO: u32 = 0;
pub const TRITONSERVER_INSTANCEGROUPKIND_CPU: u32 = 1;
pub const TRITONSERVER_INSTANCEGROUPKIND_GPU: u32 = 2;
pub const TRITONSERVER_INSTANCEGROUPKIND_MODEL: u32 = 3;

/// `TRITONSERVER_LogLevel`
pub type TRITONSERVER_LogLevel = u32;
pub const TRITONSERVER_LOG_INFO: u32 = 0;
pub const TRITONSERVER_LOG_WARN: u32 = 1;
pub const TRITONSERVER_LOG_ERROR: u32 = 2;
pub const TRITONSERVER_LOG_VERBOSE: u32 = 3;

/// `TRITONSERVER_RequestFlag` (bitmask)
pub const TRITONSERVER_REQUEST_FLAG_SEQUENCE_START: u32 = 1;
pub const TRITONSERVER_REQUEST_FLAG_SEQUENCE_END: u32 = 2;

/// `TRITONSERVER_RequestReleaseFlag` (bitmask)
pub const TRITONSERVER_REQUEST_RELEASE_ALL: u32 = 1;
pub const TRITONSERVER_REQUEST_RELEASE_RESCHEDULE: u32 = 2;

/// `TRITONSERVER_ResponseCompleteFlag` (bitmask)
pub const TRITONSERVER_RESPONSE_COMPLETE_FINAL: u32 = 1;

/// `TRITONSERVER_MetricKind`
pub type TRITONSERVER_MetricKind = u32;
pub const TRITONSERVER_METRIC_KIND_COUNTER: u32 = 0;
pub const TRITONSERVER_METRIC_KIND_GAUGE: u32 = 1;
pub const TRITONSERVER_METRIC_KIND_HISTOGRAM: u32 = 2;

/// `TRITONBACKEND_ArtifactType`
pub type TRITONBACKEND_ArtifactType = u32;
pub const TRITONBACKEND_ARTIFACT_FILESYSTEM: u32 = 0;

/// `TRITONBACKEND_ExecutionPolicy`
pub type TRITONBACKEND_ExecutionPolicy = u32;
pub const TRITONBACKEND_EXECUTION_BLOCKING: u32 = 0;
pub const TRITONBACKEND_EXECUTION_DEVICE_BLOCKING: u32 = 1;

/// Names of every `TRITONBACKEND_*` entry point a backend may export, in the order Triton looks
/// them up. Only `TRITONBACKEND_ModelInstanceExecute` is mandatory.
pub const BACKEND_ENTRY_POINTS: &[&str] = &[
    "TRITONBACKEND_Initialize",
    "TRITONBACKEND_Finalize",
    "TRITONBACKEND_GetBackendAttribute",
    "TRITONBACKEND_ModelInitialize",
    "TRITONBACKEND_ModelFinalize",
    "TRITONBACKEND_ModelInstanceInitialize",
    "TRITONBACKEND_ModelInstanceFinalize",
    "TRITONBACKEND_ModelInstanceExecute",
    "TRITONBACKEND_ModelInstanceReady",
];

/// Protocol name of a data type ("FP32"), as `TRITONSERVER_DataTypeString` returns it.
pub const fn datatype_name(dt: TRITONSERVER_DataType) -> &'static str {
    match dt {
        TRITONSERVER_TYPE_BOOL => "BOOL",
        TRITONSERVER_TYPE_UINT8 => "UINT8",
        TRITONSERVER_TYPE_UINT16 => "UINT16",
        TRITONSERVER_TYPE_UINT32 => "UINT32",
        TRITONSERVER_TYPE_UINT64 => "UINT64",
        TRITONSERVER_TYPE_INT8 => "INT8",
        TRITONSERVER_TYPE_INT16 => "INT16",
        TRITONSERVER_TYPE_INT32 => "INT32",
        TRITONSERVER_TYPE_INT64 => "INT64",
        TRITONSERVER_TYPE_FP16 => "FP16",
        TRITONSERVER_TYPE_FP32 => "FP32",
        TRITONSERVER_TYPE_FP64 => "FP64",
        TRITONSERVER_TYPE_BYTES => "BYTES",
        TRITONSERVER_TYPE_BF16 => "BF16",
        _ => "<invalid>",
    }
}

/// Bytes per element (0 for BYTES and INVALID), as `TRITONSERVER_DataTypeByteSize` returns it.
pub const fn datatype_byte_size(dt: TRITONSERVER_DataType) -> u32 {
    match dt {
        TRITONSERVER_TYPE_BOOL | TRITONSERVER_TYPE_UINT8 | TRITONSERVER_TYPE_INT8 => 1,
        TRITONSERVER_TYPE_UINT16
        | TRITONSERVER_TYPE_INT16
        | TRITONSERVER_TYPE_FP16
        | TRITONSERVER_TYPE_BF16 => 2,
        TRITONSERVER_TYPE_UINT32 | TRITONSERVER_TYPE_INT32 | TRITONSERVER_TYPE_FP32 => 4,
        TRITONSERVER_TYPE_UINT64 | TRITONSERVER_TYPE_INT64 | TRITONSERVER_TYPE_FP64 => 8,
        _ => 0,
    }
}

/// Data type from a protocol name ("FP32"); `TRITONSERVER_TYPE_INVALID` when unknown.
pub fn datatype_from_name(name: &str) -> TRITONSERVER_DataType {
    let mut dt = 1;
    while dt <= 14 {
        if eq_str(datatype_name(dt), name) {
            return dt;
        }
        dt += 1;
    }
    TRITONSERVER_TYPE_INVALID
}

fn eq_str(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes() == b.as_bytes()
}

/// Name of a memory type, as `TRITONSERVER_MemoryTypeString` returns it.
pub const fn memory_type_name(mt: TRITONSERVER_MemoryType) -> &'static str {
    match mt {
        TRITONSERVER_MEMORY_CPU => "CPU",
        TRITONSERVER_MEMORY_CPU_PINNED => "CPU_PINNED",
        TRITONSERVER_MEMORY_GPU => "GPU",
        _ => "<invalid>",
    }
}

/// Name of an error code, as `TRITONSERVER_ErrorCodeString` returns it.
pub const fn error_code_name(code: TRITONSERVER_Error_Code) -> &'static str {
    match code {
        TRITONSERVER_ERROR_INTERNAL => "Internal",
        TRITONSERVER_ERROR_NOT_FOUND => "Not found",
        TRITONSERVER_ERROR_INVALID_ARG => "Invalid argument",
        TRITONSERVER_ERROR_UNAVAILABLE => "Unavailable",
        TRITONSERVER_ERROR_UNSUPPORTED => "Unsupported",
        TRITONSERVER_ERROR_ALREADY_EXISTS => "Already exists",
        TRITONSERVER_ERROR_CANCELLED => "Cancelled",
        _ => "Unknown",
    }
}

/// Name of an instance group kind, as `TRITONSERVER_InstanceGroupKindString` returns it.
pub const fn instance_group_kind_name(kind: TRITONSERVER_InstanceGroupKind) -> &'static str {
    match kind {
        TRITONSERVER_INSTANCEGROUPKIND_AUTO => "AUTO",
        TRITONSERVER_INSTANCEGROUPKIND_CPU => "CPU",
        TRITONSERVER_INSTANCEGROUPKIND_GPU => "GPU",
        TRITONSERVER_INSTANCEGROUPKIND_MODEL => "MODEL",
        _ => "<invalid>",
    }
}

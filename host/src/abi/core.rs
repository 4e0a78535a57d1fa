//! TRITONSERVER_*: errors, messages, data types, logging, buffer attributes.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Arc;

use triton_abi::*;

use super::{cstr, delete_error, exports, guard_value, new_error, out, slice, Err};
use crate::error::Error;
use crate::handles::{self, Kind};
use crate::objects::{BufAttrObj, ErrorObj, MessageObj};
use crate::rules::{self, lock, LogLine};

/// Register a message holding `json`. Backend-owned messages (`!borrowed`) count as live
/// objects of the server of this thread (or `owner`) until TRITONSERVER_MessageDelete.
pub(crate) fn message_new(
    json: String,
    borrowed: bool,
    owner: Option<Arc<crate::rules::Shared>>,
) -> usize {
    let owner = if borrowed {
        None
    } else {
        owner.or_else(rules::current)
    };
    if let Some(o) = &owner {
        o.owned_add("TRITONSERVER_Message", 1);
    }
    let mut bytes = json.into_bytes();
    bytes.push(0);
    handles::register(
        Kind::Message,
        Arc::new(MessageObj {
            json: bytes,
            borrowed,
            owner,
        }),
    )
}

/// The JSON text of a message handle.
pub(crate) fn message_json(h: usize, func: &str) -> crate::error::Result<String> {
    let m: Arc<MessageObj> = handles::get(h, Kind::Message, func)?;
    Ok(String::from_utf8_lossy(&m.json[..m.json.len() - 1]).into_owned())
}

fn dtype_cstr(dt: u32) -> &'static CStr {
    match dt {
        TRITONSERVER_TYPE_BOOL => c"BOOL",
        TRITONSERVER_TYPE_UINT8 => c"UINT8",
        TRITONSERVER_TYPE_UINT16 => c"UINT16",
        TRITONSERVER_TYPE_UINT32 => c"UINT32",
        TRITONSERVER_TYPE_UINT64 => c"UINT64",
        TRITONSERVER_TYPE_INT8 => c"INT8",
        TRITONSERVER_TYPE_INT16 => c"INT16",
        TRITONSERVER_TYPE_INT32 => c"INT32",
        TRITONSERVER_TYPE_INT64 => c"INT64",
        TRITONSERVER_TYPE_FP16 => c"FP16",
        TRITONSERVER_TYPE_FP32 => c"FP32",
        TRITONSERVER_TYPE_FP64 => c"FP64",
        TRITONSERVER_TYPE_BYTES => c"BYTES",
        TRITONSERVER_TYPE_BF16 => c"BF16",
        _ => c"<invalid>",
    }
}

fn code_cstr(code: u32) -> &'static CStr {
    match code {
        TRITONSERVER_ERROR_INTERNAL => c"Internal",
        TRITONSERVER_ERROR_NOT_FOUND => c"Not found",
        TRITONSERVER_ERROR_INVALID_ARG => c"Invalid argument",
        TRITONSERVER_ERROR_UNAVAILABLE => c"Unavailable",
        TRITONSERVER_ERROR_UNSUPPORTED => c"Unsupported",
        TRITONSERVER_ERROR_ALREADY_EXISTS => c"Already exists",
        TRITONSERVER_ERROR_CANCELLED => c"Cancelled",
        _ => c"Unknown",
    }
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_ErrorNew(code: u32, msg: *const c_char) -> Err {
    guard_value("TRITONSERVER_ErrorNew", std::ptr::null_mut(), || {
        let text = cstr(msg, "TRITONSERVER_ErrorNew", "msg").unwrap_or_default();
        new_error(code, &text, None)
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_ErrorDelete(error: Err) {
    guard_value("TRITONSERVER_ErrorDelete", (), || {
        delete_error(error, "TRITONSERVER_ErrorDelete");
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_ErrorCode(error: Err) -> u32 {
    guard_value("TRITONSERVER_ErrorCode", TRITONSERVER_ERROR_UNKNOWN, || {
        handles::get::<ErrorObj>(error as usize, Kind::Error, "TRITONSERVER_ErrorCode")
            .map_or(TRITONSERVER_ERROR_UNKNOWN, |e| e.code)
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_ErrorCodeString(error: Err) -> *const c_char {
    guard_value("TRITONSERVER_ErrorCodeString", c"Unknown".as_ptr(), || {
        handles::get::<ErrorObj>(error as usize, Kind::Error, "TRITONSERVER_ErrorCodeString")
            .map_or(c"<invalid error>".as_ptr(), |e| code_cstr(e.code).as_ptr())
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_ErrorMessage(error: Err) -> *const c_char {
    guard_value("TRITONSERVER_ErrorMessage", c"".as_ptr(), || {
        handles::get::<ErrorObj>(error as usize, Kind::Error, "TRITONSERVER_ErrorMessage")
            // The CString lives inside the registered object until ErrorDelete.
            .map_or(c"<invalid error>".as_ptr(), |e| e.msg.as_ptr())
    })
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_DataTypeString(dt: u32) -> *const c_char {
    dtype_cstr(dt).as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_DataTypeByteSize(dt: u32) -> u32 {
    datatype_byte_size(dt)
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_StringToDataType(name: *const c_char) -> u32 {
    guard_value(
        "TRITONSERVER_StringToDataType",
        TRITONSERVER_TYPE_INVALID,
        || {
            cstr(name, "TRITONSERVER_StringToDataType", "dtype")
                .map_or(TRITONSERVER_TYPE_INVALID, |s| datatype_from_name(&s))
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_MemoryTypeString(mt: u32) -> *const c_char {
    match mt {
        TRITONSERVER_MEMORY_CPU => c"CPU".as_ptr(),
        TRITONSERVER_MEMORY_CPU_PINNED => c"CPU_PINNED".as_ptr(),
        TRITONSERVER_MEMORY_GPU => c"GPU".as_ptr(),
        _ => c"<invalid>".as_ptr(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_InstanceGroupKindString(kind: u32) -> *const c_char {
    match kind {
        TRITONSERVER_INSTANCEGROUPKIND_AUTO => c"AUTO".as_ptr(),
        TRITONSERVER_INSTANCEGROUPKIND_CPU => c"CPU".as_ptr(),
        TRITONSERVER_INSTANCEGROUPKIND_GPU => c"GPU".as_ptr(),
        TRITONSERVER_INSTANCEGROUPKIND_MODEL => c"MODEL".as_ptr(),
        _ => c"<invalid>".as_ptr(),
    }
}

/// Whether VERBOSE logging is on (env `RUSTTRT_HOST_VERBOSE=1`).
fn verbose() -> bool {
    std::env::var_os("RUSTTRT_HOST_VERBOSE").is_some_and(|v| v == "1")
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_LogIsEnabled(level: u32) -> bool {
    match level {
        TRITONSERVER_LOG_INFO | TRITONSERVER_LOG_WARN | TRITONSERVER_LOG_ERROR => true,
        TRITONSERVER_LOG_VERBOSE => verbose(),
        _ => false,
    }
}

pub(crate) fn value_symbols() -> Vec<(&'static str, *const ())> {
    vec![
        ("TRITONSERVER_ErrorNew", TRITONSERVER_ErrorNew as *const ()),
        (
            "TRITONSERVER_ErrorDelete",
            TRITONSERVER_ErrorDelete as *const (),
        ),
        (
            "TRITONSERVER_ErrorCode",
            TRITONSERVER_ErrorCode as *const (),
        ),
        (
            "TRITONSERVER_ErrorCodeString",
            TRITONSERVER_ErrorCodeString as *const (),
        ),
        (
            "TRITONSERVER_ErrorMessage",
            TRITONSERVER_ErrorMessage as *const (),
        ),
        (
            "TRITONSERVER_DataTypeString",
            TRITONSERVER_DataTypeString as *const (),
        ),
        (
            "TRITONSERVER_DataTypeByteSize",
            TRITONSERVER_DataTypeByteSize as *const (),
        ),
        (
            "TRITONSERVER_StringToDataType",
            TRITONSERVER_StringToDataType as *const (),
        ),
        (
            "TRITONSERVER_MemoryTypeString",
            TRITONSERVER_MemoryTypeString as *const (),
        ),
        (
            "TRITONSERVER_InstanceGroupKindString",
            TRITONSERVER_InstanceGroupKindString as *const (),
        ),
        (
            "TRITONSERVER_LogIsEnabled",
            TRITONSERVER_LogIsEnabled as *const (),
        ),
    ]
}

fn get_attr(
    h: *mut TRITONSERVER_BufferAttributes,
    func: &str,
) -> crate::error::Result<Arc<BufAttrObj>> {
    handles::get(h as usize, Kind::BufferAttributes, func)
}

exports! {
    fn TRITONSERVER_ApiVersion(major: *mut u32, minor: *mut u32) {
        out(major, TRITONSERVER_API_VERSION_MAJOR, "TRITONSERVER_ApiVersion", "major")?;
        out(minor, TRITONSERVER_API_VERSION_MINOR, "TRITONSERVER_ApiVersion", "minor")
    }

    fn TRITONSERVER_MessageNewFromSerializedJson(
        message: *mut *mut TRITONSERVER_Message,
        base: *const c_char,
        byte_size: usize
    ) {
        let f = "TRITONSERVER_MessageNewFromSerializedJson";
        let bytes = slice(base as *const u8, byte_size, f, "base")?;
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::invalid_arg(format!("message is not UTF-8: {e}")))?;
        serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| Error::invalid_arg(format!("failed to parse the message as JSON: {e}")))?;
        out(message, message_new(text.to_string(), false, None) as *mut TRITONSERVER_Message, f, "message")
    }

    fn TRITONSERVER_MessageDelete(message: *mut TRITONSERVER_Message) {
        let f = "TRITONSERVER_MessageDelete";
        let m: Arc<MessageObj> = handles::get(message as usize, Kind::Message, f)?;
        if m.borrowed {
            let msg = format!("{f}: the message is owned by the server (BackendConfig / \
                               ModelInstanceHostPolicy); the backend must not delete it");
            rules::violation(None, None, msg.clone());
            return Err(Error::invalid_arg(msg));
        }
        handles::kill(message as usize, "deleted", None);
        if let Some(o) = &m.owner {
            o.owned_add("TRITONSERVER_Message", -1);
        }
        Ok(())
    }

    fn TRITONSERVER_MessageSerializeToJson(
        message: *mut TRITONSERVER_Message,
        base: *mut *const c_char,
        byte_size: *mut usize
    ) {
        let f = "TRITONSERVER_MessageSerializeToJson";
        let m: Arc<MessageObj> = handles::get(message as usize, Kind::Message, f)?;
        out(base, m.json.as_ptr() as *const c_char, f, "base")?;
        out(byte_size, m.json.len() - 1, f, "byte_size")
    }

    fn TRITONSERVER_LogMessage(level: u32, filename: *const c_char, line: c_int, msg: *const c_char) {
        let f = "TRITONSERVER_LogMessage";
        let level = match level {
            TRITONSERVER_LOG_INFO => "INFO",
            TRITONSERVER_LOG_WARN => "WARN",
            TRITONSERVER_LOG_ERROR => "ERROR",
            TRITONSERVER_LOG_VERBOSE => "VERBOSE",
            other => return Err(Error::invalid_arg(format!("unknown log level {other}"))),
        };
        let file = cstr(filename, f, "filename")?;
        let msg = cstr(msg, f, "msg")?;
        rules::log(LogLine { level, file, line, msg });
        Ok(())
    }

    fn TRITONSERVER_BufferAttributesNew(attrs: *mut *mut TRITONSERVER_BufferAttributes) {
        let owner = rules::current();
        if let Some(o) = &owner {
            o.owned_add("TRITONSERVER_BufferAttributes", 1);
        }
        let h = handles::register(
            Kind::BufferAttributes,
            Arc::new(BufAttrObj { attr: Default::default(), borrowed: false, owner }),
        );
        out(attrs, h as *mut TRITONSERVER_BufferAttributes, "TRITONSERVER_BufferAttributesNew", "attrs")
    }

    fn TRITONSERVER_BufferAttributesDelete(attrs: *mut TRITONSERVER_BufferAttributes) {
        let f = "TRITONSERVER_BufferAttributesDelete";
        let a = get_attr(attrs, f)?;
        if a.borrowed {
            let msg = format!("{f}: these buffer attributes belong to an input/output");
            rules::violation(None, None, msg.clone());
            return Err(Error::invalid_arg(msg));
        }
        handles::kill(attrs as usize, "deleted", None);
        if let Some(o) = &a.owner {
            o.owned_add("TRITONSERVER_BufferAttributes", -1);
        }
        Ok(())
    }

    fn TRITONSERVER_BufferAttributesSetMemoryTypeId(attrs: *mut TRITONSERVER_BufferAttributes, id: i64) {
        lock(&get_attr(attrs, "TRITONSERVER_BufferAttributesSetMemoryTypeId")?.attr).memory_type_id = id;
        Ok(())
    }

    fn TRITONSERVER_BufferAttributesSetMemoryType(attrs: *mut TRITONSERVER_BufferAttributes, mt: u32) {
        lock(&get_attr(attrs, "TRITONSERVER_BufferAttributesSetMemoryType")?.attr).memory_type = mt;
        Ok(())
    }

    fn TRITONSERVER_BufferAttributesSetCudaIpcHandle(attrs: *mut TRITONSERVER_BufferAttributes, h: *mut c_void) {
        lock(&get_attr(attrs, "TRITONSERVER_BufferAttributesSetCudaIpcHandle")?.attr).cuda_ipc_handle = h as usize;
        Ok(())
    }

    fn TRITONSERVER_BufferAttributesSetByteSize(attrs: *mut TRITONSERVER_BufferAttributes, n: usize) {
        lock(&get_attr(attrs, "TRITONSERVER_BufferAttributesSetByteSize")?.attr).byte_size = n;
        Ok(())
    }

    fn TRITONSERVER_BufferAttributesMemoryTypeId(attrs: *mut TRITONSERVER_BufferAttributes, id: *mut i64) {
        let f = "TRITONSERVER_BufferAttributesMemoryTypeId";
        out(id, lock(&get_attr(attrs, f)?.attr).memory_type_id, f, "id")
    }

    fn TRITONSERVER_BufferAttributesMemoryType(attrs: *mut TRITONSERVER_BufferAttributes, mt: *mut u32) {
        let f = "TRITONSERVER_BufferAttributesMemoryType";
        out(mt, lock(&get_attr(attrs, f)?.attr).memory_type, f, "memory_type")
    }

    fn TRITONSERVER_BufferAttributesCudaIpcHandle(attrs: *mut TRITONSERVER_BufferAttributes, h: *mut *mut c_void) {
        let f = "TRITONSERVER_BufferAttributesCudaIpcHandle";
        out(h, lock(&get_attr(attrs, f)?.attr).cuda_ipc_handle as *mut c_void, f, "handle")
    }

    fn TRITONSERVER_BufferAttributesByteSize(attrs: *mut TRITONSERVER_BufferAttributes, n: *mut usize) {
        let f = "TRITONSERVER_BufferAttributesByteSize";
        out(n, lock(&get_attr(attrs, f)?.attr).byte_size, f, "byte_size")
    }
}

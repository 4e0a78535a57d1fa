//! Host-side objects behind the handles given to the backend.

use std::collections::HashSet;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex};

use crate::config::{ModelConfig, PreferredGroup};
use crate::infer::OutputTensor;
use crate::memory::Buffer;
use crate::rules::{lock, Shared};
use crate::stats::ModelStats;

/// Convert to a C string, replacing interior NULs (which a C API cannot carry).
pub(crate) fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

pub(crate) struct ErrorObj {
    pub code: u32,
    pub msg: CString,
    pub owner: Option<Arc<Shared>>,
}

pub(crate) struct MessageObj {
    /// JSON bytes followed by a NUL (not part of the reported size).
    pub json: Vec<u8>,
    /// Owned by the host (BackendConfig, HostPolicy): MessageDelete is a violation.
    pub borrowed: bool,
    /// Server counting this backend-owned message as live.
    pub owner: Option<Arc<Shared>>,
}

pub(crate) struct BackendObj {
    pub name: CString,
    pub dir: CString,
    pub config_msg: usize,
    pub memory_manager: usize,
    pub state: AtomicUsize,
    pub policy: AtomicU32,
    pub in_initialize: AtomicBool,
}

#[derive(Default)]
pub(crate) struct AttributeObj {
    pub groups: Mutex<Vec<PreferredGroup>>,
    pub parallel: AtomicBool,
}

pub(crate) struct ModelObj {
    pub shared: Arc<Shared>,
    pub name: CString,
    pub version: u64,
    pub repo_dir: CString,
    pub backend_handle: usize,
    pub backend_name: String,
    pub auto_complete: bool,
    pub gpu_count: usize,
    pub preferred: Vec<PreferredGroup>,
    pub config: Mutex<ModelConfig>,
    pub in_initialize: AtomicBool,
    pub state: AtomicUsize,
    pub stats: Arc<ModelStats>,
}

impl ModelObj {
    pub fn name_str(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }
    pub fn config(&self) -> ModelConfig {
        lock(&self.config).clone()
    }
}

pub(crate) struct InstanceObj {
    pub model: Arc<ModelObj>,
    pub model_handle: usize,
    pub name: CString,
    /// `TRITONSERVER_InstanceGroupKind`
    pub kind: u32,
    pub device_id: i32,
    pub passive: bool,
    pub profiles: Vec<CString>,
    pub secondary: Vec<(CString, i64)>,
    pub host_policy_msg: usize,
    pub state: AtomicUsize,
}

/// What happened to one request during an Execute.
#[derive(Default)]
pub(crate) struct Track {
    pub released: bool,
    /// A response was created/sent or the request released (Execute may no longer fail).
    pub touched: bool,
    pub responses_sent: u32,
    pub final_sent: bool,
    pub live_responses: HashSet<usize>,
    pub stats_reported: bool,
    pub result: Option<std::result::Result<Vec<OutputTensor>, (u32, String)>>,
    pub violations: Vec<String>,
}

pub(crate) struct RequestObj {
    pub model: Arc<ModelObj>,
    pub id: CString,
    pub correlation_id: u64,
    pub flags: u32,
    pub timeout_us: u64,
    pub inputs: Vec<(usize, Arc<InputObj>)>,
    pub outputs: Vec<CString>,
    pub output_memory: crate::memory::MemoryType,
    pub batch_size: u64,
    pub arrival_ns: u64,
    pub queue_start_ns: u64,
    pub record_stats: bool,
    pub track: Mutex<Track>,
}

impl RequestObj {
    pub fn id_str(&self) -> String {
        self.id.to_string_lossy().into_owned()
    }
    pub fn add_violation(&self, msg: &str) {
        lock(&self.track).violations.push(msg.to_string());
    }
}

pub(crate) struct InputObj {
    pub name: CString,
    pub datatype: u32,
    pub shape: Vec<i64>,
    pub chunks: Vec<Buffer>,
    pub byte_size: u64,
    /// Borrowed BufferAttributes handles, one per chunk, created on demand.
    pub attrs: Mutex<Vec<Option<usize>>>,
}

pub(crate) struct ResponseObj {
    pub request: Arc<RequestObj>,
    pub outputs: Mutex<Vec<(usize, Arc<OutputObj>)>>,
    pub params: Mutex<Vec<(String, serde_json::Value)>>,
}

pub(crate) struct OutputObj {
    pub shared: Arc<Shared>,
    /// The client's allocator preference (see `InferRequest::output_memory`).
    pub output_memory: crate::memory::MemoryType,
    pub name: String,
    pub datatype: u32,
    pub shape: Vec<i64>,
    pub buffer: Mutex<Option<Buffer>>,
    pub attrs: Mutex<Option<usize>>,
}

pub(crate) struct FactoryObj {
    pub request: Arc<RequestObj>,
}

#[derive(Clone, Copy, Default)]
pub(crate) struct BufAttr {
    pub memory_type: u32,
    pub memory_type_id: i64,
    pub byte_size: usize,
    pub cuda_ipc_handle: usize,
}

pub(crate) struct BufAttrObj {
    pub attr: Mutex<BufAttr>,
    /// Owned by an input/output: BufferAttributesDelete on it is a violation.
    pub borrowed: bool,
    /// Server counting these backend-owned attributes as live.
    pub owner: Option<Arc<Shared>>,
}

pub(crate) struct MemoryManagerObj {
    pub shared: Arc<Shared>,
}

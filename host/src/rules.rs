//! Rule enforcement bookkeeping: per-server shared state (violations, captured log, live error
//! objects) and the thread-local "who is calling into the backend right now" context that lets
//! an export attribute what it sees to a server and to the requests of the running Execute.

use std::cell::RefCell;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use crate::memory::MemoryPool;
use crate::objects::RequestObj;

/// One line the backend logged through `TRITONSERVER_LogMessage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// `TRITONSERVER_LogLevel` name: "INFO", "WARN", "ERROR" or "VERBOSE".
    pub level: &'static str,
    /// Source file the backend passed.
    pub file: String,
    /// Source line the backend passed.
    pub line: i32,
    /// Message text.
    pub msg: String,
}

/// State shared by a [`crate::Server`] and every handle it hands to the backend.
pub(crate) struct Shared {
    pub violations: Mutex<Vec<String>>,
    pub logs: Mutex<Vec<LogLine>>,
    pub live_errors: AtomicI64,
    /// Backend-owned objects (messages, buffer attributes, response factories) not yet deleted.
    pub owned: Mutex<std::collections::BTreeMap<&'static str, i64>>,
    pub log_to_stderr: bool,
    pub pool: MemoryPool,
    /// Buffers handed out by TRITONBACKEND_MemoryManagerAllocate: ptr → (type, id, buffer).
    pub mm_allocs: Mutex<std::collections::HashMap<usize, (u32, i64, crate::memory::Buffer)>>,
    /// Custom metric families the backend registered (TRITONSERVER_MetricFamilyNew).
    pub metrics: crate::abi::MetricsRegistry,
}

/// Captured log lines kept per server: the last `LOG_KEEP` to `2 * LOG_KEEP` (older ones are
/// dropped in bulk), so a backend that logs per request does not grow the host without bound.
pub(crate) const LOG_KEEP: usize = 4096;

static SERVERS: LazyLock<Mutex<Vec<Weak<Shared>>>> = LazyLock::new(|| Mutex::new(Vec::new()));

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn new(log_to_stderr: bool, pool: MemoryPool) -> Arc<Shared> {
        let s = Arc::new(Shared {
            violations: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
            live_errors: AtomicI64::new(0),
            owned: Mutex::new(Default::default()),
            log_to_stderr,
            pool,
            mm_allocs: Mutex::new(Default::default()),
            metrics: Default::default(),
        });
        let mut all = lock(&SERVERS);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&s));
        s
    }

    pub fn record_violation(&self, msg: String) {
        eprintln!("[rusttrt-host] RULE VIOLATION: {msg}");
        lock(&self.violations).push(msg);
    }

    /// Count a backend-owned object of C type `kind` created (+1) or deleted (-1).
    pub fn owned_add(&self, kind: &'static str, d: i64) {
        *lock(&self.owned).entry(kind).or_insert(0) += d;
    }

    pub fn log(&self, line: LogLine) {
        if self.log_to_stderr || std::env::var_os("RUSTTRT_HOST_LOG").is_some_and(|v| v == "1") {
            eprintln!("[{}] {}:{}: {}", line.level, line.file, line.line, line.msg);
        }
        let mut logs = lock(&self.logs);
        logs.push(line);
        if logs.len() >= 2 * LOG_KEEP {
            let drop = logs.len() - LOG_KEEP;
            logs.drain(..drop);
        }
    }
}

/// What the host is doing while the backend runs on this thread.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    /// Entry point being called ("TRITONBACKEND_ModelInstanceExecute", ...).
    pub phase: &'static str,
    /// Requests handed to the Execute running on this thread (empty otherwise).
    pub requests: Vec<Arc<RequestObj>>,
}

thread_local! {
    static CTX: RefCell<Vec<Ctx>> = const { RefCell::new(Vec::new()) };
}

/// Pops the context pushed by [`enter`] when dropped.
pub(crate) struct CtxGuard(());

impl Drop for CtxGuard {
    fn drop(&mut self) {
        CTX.with(|c| {
            c.borrow_mut().pop();
        });
    }
}

/// Mark this thread as running `phase` of the backend for `shared`.
pub(crate) fn enter(
    shared: &Arc<Shared>,
    phase: &'static str,
    requests: Vec<Arc<RequestObj>>,
) -> CtxGuard {
    CTX.with(|c| {
        c.borrow_mut().push(Ctx {
            shared: shared.clone(),
            phase,
            requests,
        })
    });
    CtxGuard(())
}

/// The server whose backend call is running on this thread, if any.
pub(crate) fn current() -> Option<Arc<Shared>> {
    CTX.with(|c| c.borrow().last().map(|x| x.shared.clone()))
}

/// The entry point running on this thread, if any.
pub(crate) fn current_phase() -> Option<&'static str> {
    CTX.with(|c| c.borrow().last().map(|x| x.phase))
}

fn all_servers() -> Vec<Arc<Shared>> {
    lock(&SERVERS).iter().filter_map(|w| w.upgrade()).collect()
}

/// Record a rule violation. It goes to `request` when known, else to every request of the
/// Execute running on this thread; and to the server of this thread's context (or of
/// `shared`), or to every live server when the call comes from an unknown thread.
pub(crate) fn violation(shared: Option<&Arc<Shared>>, request: Option<&RequestObj>, msg: String) {
    let msg = match current_phase() {
        Some(p) => format!("{msg} [during {p}]"),
        None => format!("{msg} [outside any backend entry point]"),
    };
    match request {
        Some(r) => r.add_violation(&msg),
        None => CTX.with(|c| {
            if let Some(ctx) = c.borrow().last() {
                for r in &ctx.requests {
                    r.add_violation(&msg);
                }
            }
        }),
    }
    if let Some(s) = shared.cloned().or_else(current) {
        s.record_violation(msg);
    } else {
        let all = all_servers();
        if all.is_empty() {
            eprintln!("[rusttrt-host] RULE VIOLATION (no server alive): {msg}");
        }
        for s in all {
            s.record_violation(msg.clone());
        }
    }
}

/// Route a log line to this thread's server, or to every live server.
pub(crate) fn log(line: LogLine) {
    if let Some(s) = current() {
        s.log(line);
    } else {
        let servers = all_servers();
        if servers.is_empty() {
            // No server in this process (the build worker runs backend code alone): stderr, in
            // the form the backend's worker reader parses.
            eprintln!("[{}] {}:{}: {}", line.level, line.file, line.line, line.msg);
        }
        for s in servers {
            s.log(line.clone());
        }
    }
}

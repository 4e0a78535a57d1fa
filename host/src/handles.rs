//! Registry of the opaque handles given to the backend.
//!
//! A handle value is never a real address: it is a unique, never reused, 16-byte aligned
//! number that maps to a host object (`Arc<T>`). So a stale or forged handle can be detected
//! (and reported as a rule violation) instead of causing undefined behaviour in the host, and a
//! handle value of a released object never aliases a newer object.
//!
//! Memory stays bounded however many requests pass: live handles are removed when their object
//! dies, and only the last [`MAX_DEAD`] dead handles are remembered with their details (kind,
//! why, owning request). An older dead handle is still recognized as one (handle values are
//! issued in increasing order and never reused, so any issued value that is not live is dead),
//! only with a shorter message.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use crate::error::{Error, Result};
use crate::objects::RequestObj;
use crate::rules::{self, lock};

/// What a handle stands for (the C type of the pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Error,
    Message,
    Backend,
    BackendAttribute,
    Model,
    Instance,
    Request,
    Input,
    Response,
    Output,
    ResponseFactory,
    MemoryManager,
    BufferAttributes,
    MetricFamily,
    Metric,
    Parameter,
}

impl Kind {
    pub fn c_name(self) -> &'static str {
        match self {
            Kind::Error => "TRITONSERVER_Error",
            Kind::Message => "TRITONSERVER_Message",
            Kind::Backend => "TRITONBACKEND_Backend",
            Kind::BackendAttribute => "TRITONBACKEND_BackendAttribute",
            Kind::Model => "TRITONBACKEND_Model",
            Kind::Instance => "TRITONBACKEND_ModelInstance",
            Kind::Request => "TRITONBACKEND_Request",
            Kind::Input => "TRITONBACKEND_Input",
            Kind::Response => "TRITONBACKEND_Response",
            Kind::Output => "TRITONBACKEND_Output",
            Kind::ResponseFactory => "TRITONBACKEND_ResponseFactory",
            Kind::MemoryManager => "TRITONBACKEND_MemoryManager",
            Kind::BufferAttributes => "TRITONSERVER_BufferAttributes",
            Kind::MetricFamily => "TRITONSERVER_MetricFamily",
            Kind::Metric => "TRITONSERVER_Metric",
            Kind::Parameter => "TRITONSERVER_Parameter",
        }
    }
}

struct Live {
    kind: Kind,
    obj: Arc<dyn Any + Send + Sync>,
}

struct Dead {
    kind: Kind,
    why: String,
    owner: Option<Weak<RequestObj>>,
}

#[derive(Default)]
struct Registry {
    live: HashMap<usize, Live>,
    dead: HashMap<usize, Dead>,
    /// Handles of `dead` in the order they died (oldest first), to forget the oldest.
    dead_order: VecDeque<usize>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);
/// First handle value. Start high so handle values look like heap pointers and never collide
/// with small integers.
const FIRST: usize = 0x7e57_0000_0000;
static NEXT: AtomicUsize = AtomicUsize::new(FIRST);
/// Dead handles remembered with their details (a few requests' worth per instance thread).
pub(crate) const MAX_DEAD: usize = 4096;

/// Live handles and dead handles remembered in detail (for tests: both must stay bounded).
pub(crate) fn counts() -> (usize, usize) {
    let reg = lock(&REGISTRY);
    (reg.live.len(), reg.dead.len())
}

/// Whether `h` was issued by [`register`] (it may be live or dead).
fn was_issued(h: usize) -> bool {
    h >= FIRST && h < NEXT.load(Ordering::Relaxed) && (h - FIRST).is_multiple_of(16)
}

/// Make a new handle for `obj`.
pub(crate) fn register<T: Any + Send + Sync>(kind: Kind, obj: Arc<T>) -> usize {
    let h = NEXT.fetch_add(16, Ordering::Relaxed);
    lock(&REGISTRY).live.insert(h, Live { kind, obj });
    h
}

/// Resolve a handle passed by the backend to `func`. Null, unknown, dead and wrongly typed
/// handles are rule violations and produce an error.
pub(crate) fn get<T: Any + Send + Sync>(h: usize, kind: Kind, func: &str) -> Result<Arc<T>> {
    let reg = lock(&REGISTRY);
    if let Some(l) = reg.live.get(&h) {
        if l.kind == kind {
            if let Ok(o) = l.obj.clone().downcast::<T>() {
                return Ok(o);
            }
        }
        let msg = format!(
            "{func}: argument is a {} handle where a {} was expected",
            l.kind.c_name(),
            kind.c_name()
        );
        drop(reg);
        rules::violation(None, None, msg.clone());
        return Err(Error::invalid_arg(msg));
    }
    if h == 0 {
        drop(reg);
        let msg = format!("{func}: NULL {} handle", kind.c_name());
        rules::violation(None, None, msg.clone());
        return Err(Error::invalid_arg(msg));
    }
    if let Some(d) = reg.dead.get(&h) {
        let msg = format!(
            "{func}: {} handle used after it was {} (use after release/free)",
            d.kind.c_name(),
            d.why
        );
        let owner = d.owner.as_ref().and_then(|w| w.upgrade());
        drop(reg);
        rules::violation(None, owner.as_deref(), msg.clone());
        return Err(Error::invalid_arg(msg));
    }
    drop(reg);
    if was_issued(h) {
        let msg = format!(
            "{func}: {} handle {h:#x} used after it was released/deleted (an old handle, \
             no longer live)",
            kind.c_name()
        );
        rules::violation(None, None, msg.clone());
        return Err(Error::invalid_arg(msg));
    }
    let msg = format!("{func}: unknown {} handle {h:#x}", kind.c_name());
    rules::violation(None, None, msg.clone());
    Err(Error::invalid_arg(msg))
}

/// End a handle's life; later uses are reported with `why` ("released", "deleted", "sent").
pub(crate) fn kill(h: usize, why: &str, owner: Option<&Arc<RequestObj>>) {
    let mut reg = lock(&REGISTRY);
    if let Some(l) = reg.live.remove(&h) {
        while reg.dead.len() >= MAX_DEAD {
            match reg.dead_order.pop_front() {
                Some(old) => {
                    reg.dead.remove(&old);
                }
                None => reg.dead.clear(),
            }
        }
        reg.dead_order.push_back(h);
        reg.dead.insert(
            h,
            Dead {
                kind: l.kind,
                why: why.to_string(),
                owner: owner.map(Arc::downgrade),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_handles_stay_bounded_and_old_ones_are_still_caught() {
        let first = register(Kind::Message, Arc::new(1u32));
        kill(first, "deleted", None);
        let mut recent = 0;
        for i in 0..MAX_DEAD + 10 {
            recent = register(Kind::Message, Arc::new(i));
            kill(recent, "deleted", None);
        }
        assert!(counts().1 <= MAX_DEAD);
        // The newest dead handle is reported with its details ...
        let e = get::<usize>(recent, Kind::Message, "f").unwrap_err();
        assert!(e.msg.contains("after it was deleted"), "{}", e.msg);
        // ... one forgotten long ago is still a use after release, not an unknown handle.
        let e = get::<u32>(first, Kind::Message, "f").unwrap_err();
        assert!(e.msg.contains("used after it was released"), "{}", e.msg);
        // A value never issued is unknown.
        let e = get::<u32>(first + 8, Kind::Message, "f").unwrap_err();
        assert!(e.msg.contains("unknown"), "{}", e.msg);
    }
}

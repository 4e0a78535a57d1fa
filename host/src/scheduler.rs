//! Scheduling: the default scheduler (one request per Execute) and the dynamic batcher, one
//! thread per (non-passive) instance, and the Execute call with its rule checks.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::backend_lib::BackendLib;
use crate::error::{Error, Result};
use crate::handles::{self, Kind};
use crate::infer::{InferResponse, Prepared};
use crate::objects::{cstring, InputObj, InstanceObj, RequestObj, Track};
use crate::rules::{self, lock};
use crate::stats::now_ns;

/// Dynamic batcher settings.
#[derive(Clone, Debug)]
pub(crate) struct BatchPolicy {
    pub max_batch_size: u64,
    pub preferred: Vec<u64>,
    pub delay_ns: u64,
}

/// A queued request.
pub(crate) struct Pending {
    pub req: Prepared,
    pub tx: Sender<Result<InferResponse>>,
    pub arrival_ns: u64,
    pub queue_start_ns: u64,
}

#[derive(Default)]
struct QState {
    q: VecDeque<Pending>,
    shutdown: bool,
}

/// The request queue of one model version.
#[derive(Default)]
pub(crate) struct Queue {
    st: Mutex<QState>,
    cv: Condvar,
}

enum Decision {
    Take(usize),
    WaitUntil(u64),
}

/// Triton's `DynamicBatchScheduler::GetDynamicBatch` decision on the queue head: grow the
/// batch in queue order while shapes agree and `max_batch_size` holds; remember the largest
/// prefix that hits a preferred size (or that stops just before exceeding the largest
/// preferred size) and send it at once unless the queue delay is exceeded, in which case
/// everything pending goes.
fn decide(q: &VecDeque<Pending>, p: &BatchPolicy, now: u64, draining: bool) -> Decision {
    let first = &q[0];
    let max_pref = p.preferred.iter().copied().max().unwrap_or(0);
    let (mut pending, mut count) = (0u64, 0usize);
    let mut best = 0usize;
    let mut send_now = false;
    for r in q {
        let b = r.req.batch_size.max(1);
        if count > 0 {
            if pending + b > max_pref && best == 0 {
                best = count;
            }
            if pending + b > p.max_batch_size {
                send_now = true;
                break;
            }
            if r.req.batch_key != first.req.batch_key {
                send_now = true;
                break;
            }
        }
        pending += b;
        count += 1;
        if p.preferred.contains(&pending) {
            best = count;
        }
    }
    let delay_exceeded = p.delay_ns != 0 && now.saturating_sub(first.queue_start_ns) >= p.delay_ns;
    if best != 0 && !delay_exceeded {
        return Decision::Take(best);
    }
    if send_now || pending >= max_pref || delay_exceeded || p.delay_ns == 0 || draining {
        return Decision::Take(count.max(1));
    }
    Decision::WaitUntil(first.queue_start_ns + p.delay_ns)
}

impl Queue {
    pub fn push(&self, p: Pending) -> Result<()> {
        let mut st = lock(&self.st);
        if st.shutdown {
            return Err(Error::unavailable("the model is being unloaded"));
        }
        st.q.push_back(p);
        drop(st);
        self.cv.notify_all();
        Ok(())
    }

    pub fn shutdown(&self) {
        lock(&self.st).shutdown = true;
        self.cv.notify_all();
    }

    /// Next batch for a free instance; None once shut down and drained.
    fn next(&self, policy: Option<&BatchPolicy>) -> Option<Vec<Pending>> {
        let mut st = lock(&self.st);
        loop {
            if st.q.is_empty() {
                if st.shutdown {
                    return None;
                }
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let n = match policy {
                None => 1,
                Some(p) => match decide(&st.q, p, now_ns(), st.shutdown) {
                    Decision::Take(n) => n,
                    Decision::WaitUntil(t) => {
                        let wait = Duration::from_nanos(t.saturating_sub(now_ns()).max(1000));
                        st = self
                            .cv
                            .wait_timeout(st, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                        continue;
                    }
                },
            };
            let batch: Vec<Pending> = st.q.drain(..n).collect();
            if !st.q.is_empty() {
                self.cv.notify_all();
            }
            return Some(batch);
        }
    }
}

/// A model instance as the scheduler sees it.
#[derive(Clone)]
pub(crate) struct Instance {
    pub handle: usize,
    pub obj: Arc<InstanceObj>,
}

/// Run one instance's backend thread until the queue shuts down.
pub(crate) fn run_instance(
    lib: Arc<BackendLib>,
    inst: Instance,
    queue: Arc<Queue>,
    policy: Option<BatchPolicy>,
) {
    while let Some(batch) = queue.next(policy.as_ref()) {
        execute(&lib, &inst, batch, true);
    }
}

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(true) };
}

/// Whether statistics of the Execute on this thread are recorded (false during warmup).
pub(crate) fn recording_stats() -> bool {
    RECORDING.with(|r| r.get())
}

fn make_request(inst: &Instance, p: &mut Pending, record: bool) -> (usize, Arc<RequestObj>) {
    let model = inst.obj.model.clone();
    let mut inputs = Vec::new();
    for i in std::mem::take(&mut p.req.inputs) {
        let obj = Arc::new(InputObj {
            name: cstring(&i.name),
            datatype: i.datatype,
            shape: i.shape,
            chunks: i.chunks,
            byte_size: i.byte_size,
            attrs: Default::default(),
        });
        inputs.push((handles::register(Kind::Input, obj.clone()), obj));
    }
    let r = Arc::new(RequestObj {
        model,
        id: cstring(&p.req.id),
        correlation_id: p.req.correlation_id,
        flags: 0,
        timeout_us: p.req.timeout_us,
        inputs,
        outputs: p.req.outputs.iter().map(|o| cstring(o)).collect(),
        output_memory: p.req.output_memory,
        batch_size: p.req.batch_size,
        arrival_ns: p.arrival_ns,
        queue_start_ns: p.queue_start_ns,
        record_stats: record,
        track: Mutex::new(Track::default()),
    });
    (handles::register(Kind::Request, r.clone()), r)
}

fn kill_request(h: usize, r: &Arc<RequestObj>, why: &str) {
    handles::kill(h, why, Some(r));
    for (ih, i) in &r.inputs {
        handles::kill(*ih, why, Some(r));
        for a in lock(&i.attrs).iter().flatten() {
            handles::kill(*a, why, Some(r));
        }
    }
}

/// Call Execute with `batch` on `inst`, check the ownership rules and answer every request.
pub(crate) fn execute(lib: &BackendLib, inst: &Instance, mut batch: Vec<Pending>, record: bool) {
    let model = inst.obj.model.clone();
    let shared = model.shared.clone();
    let made: Vec<(usize, Arc<RequestObj>)> = batch
        .iter_mut()
        .map(|p| make_request(inst, p, record))
        .collect();
    let mut hs: Vec<usize> = made.iter().map(|(h, _)| *h).collect();
    let reqs: Vec<Arc<RequestObj>> = made.iter().map(|(_, r)| r.clone()).collect();
    let _ctx = rules::enter(&shared, "TRITONBACKEND_ModelInstanceExecute", reqs.clone());
    RECORDING.with(|c| c.set(record));
    let result = lib.execute(inst.handle, &mut hs);
    RECORDING.with(|c| c.set(true));
    let inst_name = inst.obj.name.to_string_lossy().into_owned();
    for ((h, r), p) in made.iter().zip(batch) {
        let (touched, released) = {
            let t = lock(&r.track);
            (t.touched, t.released)
        };
        let mut host_error = None;
        match &result {
            Err(e) => {
                if touched {
                    rules::violation(None, Some(r), format!(
                        "TRITONBACKEND_ModelInstanceExecute on '{inst_name}' returned an error ({e}) after it had \
                         responded to or released request '{}'; on error the requests still belong to Triton \
                         and must not be touched", r.id_str()));
                }
                if record {
                    model.stats.failure(r.arrival_ns);
                }
                host_error = Some(e.clone());
            }
            Ok(()) => {
                let t = lock(&r.track);
                let (final_sent, live) = (t.final_sent, t.live_responses.clone());
                drop(t);
                if !final_sent {
                    rules::violation(None, Some(r), format!(
                        "TRITONBACKEND_ModelInstanceExecute on '{inst_name}' returned success but request '{}' \
                         got no response with TRITONSERVER_RESPONSE_COMPLETE_FINAL (BLOCKING policy: all \
                         responses must be sent before Execute returns)", r.id_str()));
                }
                if !released {
                    rules::violation(None, Some(r), format!(
                        "TRITONBACKEND_ModelInstanceExecute on '{inst_name}' returned success but request '{}' \
                         was not released with TRITONBACKEND_RequestRelease(RELEASE_ALL)", r.id_str()));
                }
                for lh in live {
                    rules::violation(None, Some(r), format!(
                        "a response of request '{}' was created but neither sent nor deleted (leak)", r.id_str()));
                    handles::kill(lh, "leaked at the end of Execute", Some(r));
                }
            }
        }
        if !released {
            kill_request(*h, r, "released by the host at the end of Execute");
        }
        let t = lock(&r.track);
        let reply = if !t.violations.is_empty() {
            Err(Error::internal(format!(
                "backend rule violation(s) for request '{}': {}",
                r.id_str(),
                t.violations.join("; ")
            )))
        } else if let Some(e) = host_error {
            Ok(InferResponse {
                error: Some((e.code, e.msg)),
                outputs: vec![],
            })
        } else {
            match &t.result {
                Some(Ok(outs)) => Ok(InferResponse {
                    error: None,
                    outputs: outs.clone(),
                }),
                Some(Err((c, m))) => Ok(InferResponse {
                    error: Some((*c, m.clone())),
                    outputs: vec![],
                }),
                None => Err(Error::internal(format!(
                    "request '{}' got no response",
                    r.id_str()
                ))),
            }
        };
        drop(t);
        let _ = p.tx.send(reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::Prepared;

    fn pending(bs: u64, key: i64, t: u64) -> Pending {
        let (tx, _rx) = std::sync::mpsc::channel();
        Pending {
            req: Prepared {
                id: String::new(),
                inputs: vec![],
                outputs: vec![],
                output_memory: Default::default(),
                correlation_id: 0,
                timeout_us: 0,
                batch_size: bs,
                batch_key: vec![("IN".into(), vec![key])],
            },
            tx,
            arrival_ns: t,
            queue_start_ns: t,
        }
    }

    #[test]
    fn batcher_decisions() {
        let p = BatchPolicy {
            max_batch_size: 8,
            preferred: vec![4, 8],
            delay_ns: 1000,
        };
        let q: VecDeque<_> = [1, 1, 1].iter().map(|b| pending(*b, 1, 100)).collect();
        assert!(matches!(
            decide(&q, &p, 200, false),
            Decision::WaitUntil(1100)
        ));
        assert!(matches!(decide(&q, &p, 1200, false), Decision::Take(3)));
        let q: VecDeque<_> = [1, 1, 2, 1, 5]
            .iter()
            .map(|b| pending(*b, 1, 100))
            .collect();
        // 1+1+2 = 4 is preferred, +1 = 5, +5 > 8 → send the preferred prefix.
        assert!(matches!(decide(&q, &p, 200, false), Decision::Take(3)));
        let q: VecDeque<_> = vec![pending(1, 1, 100), pending(1, 2, 100)].into();
        assert!(matches!(decide(&q, &p, 200, false), Decision::Take(1)));
        let q: VecDeque<_> = [4, 4].iter().map(|b| pending(*b, 1, 100)).collect();
        assert!(matches!(decide(&q, &p, 200, false), Decision::Take(2)));
    }
}

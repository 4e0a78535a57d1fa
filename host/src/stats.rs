//! Per-model inference statistics, shaped like Triton's `/v2/models/<m>/stats`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::rules::lock;

/// Nanoseconds of `CLOCK_MONOTONIC`, the clock Triton's `steady_clock` timestamps use.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A `$duration_stat`: `{"count": N, "ns": total}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurationStat {
    /// Number of samples.
    pub count: u64,
    /// Sum in nanoseconds.
    pub ns: u64,
}

impl DurationStat {
    fn add(&mut self, ns: u64) {
        self.count += 1;
        self.ns += ns;
    }
    fn json(&self) -> Value {
        json!({"count": self.count, "ns": self.ns})
    }
}

#[derive(Default)]
struct Inner {
    success: DurationStat,
    fail: DurationStat,
    queue: DurationStat,
    compute_input: DurationStat,
    compute_infer: DurationStat,
    compute_output: DurationStat,
    inference_count: u64,
    execution_count: u64,
    batch: BTreeMap<u64, [DurationStat; 3]>,
    last_inference_ms: u64,
    memory_usage: Vec<(u32, i64, u64)>,
}

/// Statistics of one model version.
#[derive(Default)]
pub(crate) struct ModelStats {
    inner: Mutex<Inner>,
}

/// Timestamps passed to the Report*Statistics calls.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamps {
    pub exec_start: u64,
    pub compute_start: u64,
    pub compute_end: u64,
    pub exec_end: u64,
}

impl ModelStats {
    pub fn success(&self, arrival: u64, queue_start: u64, s: Stamps, batch: u64) {
        let now = now_ns();
        let mut g = lock(&self.inner);
        g.success.add(now.saturating_sub(arrival));
        g.queue.add(s.exec_start.saturating_sub(queue_start));
        g.compute_input
            .add(s.compute_start.saturating_sub(s.exec_start));
        g.compute_infer
            .add(s.compute_end.saturating_sub(s.compute_start));
        g.compute_output
            .add(s.exec_end.saturating_sub(s.compute_end));
        g.inference_count += batch.max(1);
    }

    pub fn failure(&self, arrival: u64) {
        let now = now_ns();
        let mut g = lock(&self.inner);
        g.fail.add(now.saturating_sub(arrival));
    }

    pub fn batch(&self, batch_size: u64, s: Stamps) {
        let mut g = lock(&self.inner);
        // As in Triton, only executions move `last_inference`.
        g.execution_count += 1;
        let e = g.batch.entry(batch_size).or_default();
        e[0].add(s.compute_start.saturating_sub(s.exec_start));
        e[1].add(s.compute_end.saturating_sub(s.compute_start));
        e[2].add(s.exec_end.saturating_sub(s.compute_end));
        g.last_inference_ms = epoch_ms();
    }

    pub fn set_memory_usage(&self, usage: Vec<(u32, i64, u64)>) {
        lock(&self.inner).memory_usage = usage;
    }

    /// One element of `model_stats[]`.
    pub fn to_json(&self, name: &str, version: u64) -> Value {
        let g = lock(&self.inner);
        let batch: Vec<Value> = g
            .batch
            .iter()
            .map(|(bs, d)| {
                json!({"batch_size": bs, "compute_input": d[0].json(),
                       "compute_infer": d[1].json(), "compute_output": d[2].json()})
            })
            .collect();
        let mem: Vec<Value> = g
            .memory_usage
            .iter()
            .map(|(t, id, bytes)| {
                json!({"type": triton_abi::memory_type_name(*t), "id": id, "byte_size": bytes})
            })
            .collect();
        json!({
            "name": name,
            "version": version.to_string(),
            "last_inference": g.last_inference_ms,
            "inference_count": g.inference_count,
            "execution_count": g.execution_count,
            "inference_stats": {
                "success": g.success.json(),
                "fail": g.fail.json(),
                "queue": g.queue.json(),
                "compute_input": g.compute_input.json(),
                "compute_infer": g.compute_infer.json(),
                "compute_output": g.compute_output.json(),
                "cache_hit": DurationStat::default().json(),
                "cache_miss": DurationStat::default().json(),
            },
            "response_stats": {},
            "batch_stats": batch,
            "memory_usage": mem,
        })
    }
}

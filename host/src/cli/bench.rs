//! `rusttrt bench`: throughput and latency of a model through the host and the real backend, per
//! batch size and input memory type, next to the same engine run directly in this process (no
//! Triton API, no batching, no copies but the engine's own), so the backend's overhead is a
//! ratio measured in one run.
//!
//! What is timed:
//! - `client`: wall time from submitting a request (its input already in the chosen memory)
//!   to its response, as a client of the server would see it (the host's queueing included);
//! - `server`: Triton's statistics for the same requests (compute input + infer + output per
//!   execution), what the backend itself spends;
//! - `direct`: the engine's runner alone on the same inputs, median of the same count.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use serde_json::{json, Value};

use super::run::{dtype_of, percentile, random_bytes};
use crate::error::{Error, Result};
use crate::infer::{InferRequest, InputTensor};
use crate::memory::MemoryType;
use crate::server::{Server, ServerOptions};

/// Arguments of `rusttrt bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Model repository directory.
    #[arg(long)]
    pub model_repository: PathBuf,
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Batch sizes, comma-separated.
    #[arg(long, default_value = "1,8,32,128,256", value_delimiter = ',')]
    pub batches: Vec<usize>,
    /// Memory the inputs are in: cpu, pinned, gpu (comma-separated).
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    pub input_memory: Vec<MemoryType>,
    /// Output memory the client asks for.
    #[arg(long, default_value = "cpu")]
    pub output_memory: MemoryType,
    /// Timed requests per point.
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Untimed requests first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Also time the engine directly in this process (same model, precision and device).
    #[arg(long)]
    pub direct: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Backend library (default: beside this executable, then the cargo target directories).
    #[arg(long)]
    pub backend_lib: Option<PathBuf>,
    /// Backend config entries `key=value`.
    #[arg(long = "backend-config", value_parser = super::run::parse_kv)]
    pub backend_config: Vec<(String, String)>,
    /// Print the backend's log to stderr.
    #[arg(long)]
    pub verbose: bool,
}

/// Seeded random input tensors of batch `b` (the same generator as `rusttrt run`).
fn inputs(cfg: &Value, b: usize, seed: u64) -> Vec<(String, u32, Vec<i64>, Vec<u8>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let batching = cfg["max_batch_size"].as_i64().unwrap_or(0) > 0;
    cfg["input"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            let dt = dtype_of(&i["data_type"]);
            let mut shape: Vec<i64> = i["dims"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|d| d.as_i64().unwrap_or(1).max(1))
                .collect();
            if batching {
                shape.insert(0, b as i64);
            }
            let n: usize = shape.iter().product::<i64>() as usize;
            let bytes = random_bytes(&mut rng, dt, n);
            (
                i["name"].as_str().unwrap_or("").to_string(),
                dt,
                shape,
                bytes,
            )
        })
        .collect()
}

fn stat_ns(v: &Value) -> (u64, u64) {
    (
        v["count"].as_u64().unwrap_or(0),
        v["ns"].as_u64().unwrap_or(0),
    )
}

/// Per formed batch size: (executions, ns of compute input + infer + output, ns of compute infer).
type BatchStats = std::collections::BTreeMap<u64, (u64, u64, u64)>;

/// The batch statistics the server reports, per batch size the dynamic batcher formed.
fn batch_stats(server: &Server, model: &str) -> Result<BatchStats> {
    let s = server.model_stats(model)?;
    let mut out = BatchStats::new();
    for bs in s["model_stats"][0]["batch_stats"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if let Some(size) = bs["batch_size"].as_u64() {
            let (n, i) = stat_ns(&bs["compute_input"]);
            let (_, f) = stat_ns(&bs["compute_infer"]);
            let (_, o) = stat_ns(&bs["compute_output"]);
            out.insert(size, (n, i + f + o, f));
        }
    }
    Ok(out)
}

/// What ran between two snapshots: per formed size, (executions, ns total, ns infer).
fn formed_between(before: &BatchStats, after: &BatchStats) -> BatchStats {
    after
        .iter()
        .filter_map(|(size, &(n1, s1, f1))| {
            let (n0, s0, f0) = before.get(size).copied().unwrap_or_default();
            (n1 > n0).then_some((*size, (n1 - n0, s1 - s0, f1 - f0)))
        })
        .collect()
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let lib = match &args.backend_lib {
        Some(p) => p.clone(),
        None => super::run::default_backend_lib()?,
    };
    let mut opts = ServerOptions::new(&lib, &args.model_repository);
    opts.backend_config = args.backend_config.clone();
    opts.log_to_stderr = args.verbose;
    let gpus = triton_rusttrt::cuda::device_count().unwrap_or(0);
    opts.gpu_count = gpus;
    let server = Server::new(opts)?;
    let t = Instant::now();
    server.load_model(&args.model)?;
    let load_s = t.elapsed().as_secs_f64();
    let cfg = server.model_config(&args.model)?;
    let engine_line = server
        .log_lines()
        .into_iter()
        .map(|l| l.msg)
        .rfind(|m| m.contains("serving with"))
        .unwrap_or_default();
    eprintln!("{}: loaded in {load_s:.1} s; {engine_line}", args.model);
    let mut direct = if args.direct {
        Some(super::direct::DirectEngine::new(
            &args.model_repository,
            &args.model,
            &cfg,
            &args.backend_config,
        )?)
    } else {
        None
    };
    let mut rows = Vec::new();
    println!(
        "{:>8} {:>6} {:>10} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9}",
        "memory",
        "batch",
        "img/s",
        "p50 ms",
        "p99 ms",
        "server ms",
        "engine ms",
        "direct ms",
        "overhead"
    );
    for &mem in &args.input_memory {
        if mem == MemoryType::Gpu && gpus == 0 {
            return Err(Error::unavailable("--input-memory gpu needs a GPU"));
        }
        for &b in &args.batches {
            let tensors = inputs(&cfg, b, b as u64);
            let req = |i: usize| {
                let mut r = InferRequest::new(
                    &format!("b{b}-{i}"),
                    tensors
                        .iter()
                        .map(|(n, dt, s, bytes)| {
                            InputTensor::new(n, *dt, s, bytes.clone()).split(usize::MAX, mem)
                        })
                        .collect(),
                );
                r.output_memory = args.output_memory;
                r
            };
            for i in 0..args.warmup {
                let r = server.infer(&args.model, req(i))?;
                if let Some((c, m)) = r.error {
                    return Err(Error::new(c, format!("batch {b}: {m}")));
                }
            }
            // Rounds alternate the backend and the direct engine, so that whatever else the
            // machine does (and ONNX Runtime's spinning thread pools) weighs on both alike.
            let rounds = if direct.is_some() { 5 } else { 1 };
            let per = args.iters.div_ceil(rounds);
            let before = batch_stats(&server, &args.model)?;
            let mut lat: Vec<Duration> = Vec::with_capacity(args.iters);
            let mut direct_times: Vec<f64> = Vec::new();
            let mut wall = 0.0;
            let mut sent = 0;
            for _ in 0..rounds {
                let n = per.min(args.iters - sent);
                sent += n;
                // Requests are prepared (inputs placed in `mem`) before the clock starts.
                let prepared = (0..n)
                    .map(|i| server.prepare(&args.model, req(i)))
                    .collect::<Result<Vec<_>>>()?;
                let round_lat = std::sync::Mutex::new(Vec::with_capacity(n));
                let queue = std::sync::Mutex::new(prepared);
                let t0 = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..args.concurrency.max(1) {
                        s.spawn(|| loop {
                            let Some(r) = crate::rules::lock(&queue).pop() else {
                                break;
                            };
                            let t = Instant::now();
                            let h = server.submit_prepared(&args.model, r);
                            if let Ok(Ok(resp)) = h.map(|h| h.wait()) {
                                if resp.error.is_none() {
                                    crate::rules::lock(&round_lat).push(t.elapsed());
                                }
                            }
                        });
                    }
                });
                wall += t0.elapsed().as_secs_f64();
                lat.extend(round_lat.into_inner().unwrap_or_default());
                if let Some(d) = direct.as_mut() {
                    direct_times.extend(d.times_ms(&tensors, n, 2)?);
                }
            }
            lat.sort();
            if lat.len() != args.iters {
                return Err(Error::internal(format!(
                    "batch {b}: {} of {} requests failed",
                    args.iters - lat.len(),
                    args.iters
                )));
            }
            // The batches the dynamic batcher actually formed from these requests (with
            // concurrency they merge: 8 clients of batch 32 may run as batches of 64 or 256).
            let formed = formed_between(&before, &batch_stats(&server, &args.model)?);
            let n: u64 = formed.values().map(|v| v.0).sum();
            let execs = n.max(1) as f64;
            let server_ms = formed.values().map(|v| v.1).sum::<u64>() as f64 / execs / 1e6;
            let engine_ms = formed.values().map(|v| v.2).sum::<u64>() as f64 / execs / 1e6;
            let formed_text: Vec<String> = formed
                .iter()
                .map(|(size, v)| format!("{size}x{}", v.0))
                .collect();
            // The direct engine runs batch `b`: compare only where every batch was `b`.
            let only_b = formed.keys().all(|&size| size == b as u64);
            direct_times.sort_by(|a, b| a.total_cmp(b));
            let direct_ms =
                (!direct_times.is_empty()).then(|| direct_times[direct_times.len() / 2]);
            let img_s = (args.iters * b) as f64 / wall;
            let overhead = direct_ms.filter(|_| only_b).map(|d| server_ms / d - 1.0);
            println!(
                "{:>8} {b:>6} {img_s:>10.1} {:>9.3} {:>9.3} {server_ms:>10.3} {engine_ms:>10.3} {:>10} {:>9}",
                format!("{mem:?}"),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                direct_ms.map(|d| format!("{d:.3}")).unwrap_or("-".into()),
                overhead.map(|o| format!("{:+.1}%", o * 100.0)).unwrap_or("-".into()),
            );
            println!(
                "{:>8} formed batches (size x executions): {}",
                "",
                formed_text.join(", ")
            );
            rows.push(json!({"input_memory": format!("{mem:?}"), "batch": b, "img_per_s": img_s,
                "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99),
                "server_exec_ms": server_ms, "engine_ms": engine_ms, "direct_ms": direct_ms, "overhead": overhead,
                "executions": n,
                "formed_batches": formed.iter().map(|(size, v)| json!({"batch_size": size, "executions": v.0})).collect::<Vec<_>>()}));
        }
    }
    let violations = server.violations();
    if !violations.is_empty() {
        return Err(Error::internal(format!(
            "Triton rule violations: {violations:?}"
        )));
    }
    let report = json!({"model": args.model, "load_seconds": load_s, "engine": engine_line,
        "concurrency": args.concurrency, "iters": args.iters, "rows": rows,
        "direct_engine": direct.as_ref().map(|d| d.describe()),
        "gpu": triton_rusttrt::cuda::device_identity(0).ok().map(|i| i.cache_identity())});
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report).unwrap_or_default())?;
    }
    Ok(())
}

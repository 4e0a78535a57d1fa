//! `rusttrt run`: load a model through the host and measure inference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use triton_abi::*;

use crate::error::{Error, Result};
use crate::infer::{InferRequest, InputTensor, OutputTensor};
use crate::memory::MemoryType;
use crate::server::{Server, ServerOptions};

/// Arguments of `rusttrt run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Model repository directory.
    #[arg(long)]
    pub model_repository: PathBuf,
    /// Model name (directory in the repository).
    #[arg(long)]
    pub model: String,
    /// Backend library (default: libtriton_rusttrt.so beside this executable, then the cargo
    /// target directories).
    #[arg(long)]
    pub backend_lib: Option<PathBuf>,
    /// Backend config entries `key=value` (like `--backend-config=rusttrt,key=value`).
    #[arg(long = "backend-config", value_parser = parse_kv)]
    pub backend_config: Vec<(String, String)>,
    /// Batch size of every request (ignored for models with max_batch_size 0).
    #[arg(long, default_value_t = 1)]
    pub batch: i64,
    /// Number of requests.
    #[arg(long, default_value_t = 10)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// `random` (seeded), a raw little-endian file (single-input model) or a .json map
    /// input name → file.
    #[arg(long, default_value = "random")]
    pub input: String,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Size of variable (-1) dimensions.
    #[arg(long, default_value_t = 1)]
    pub dynamic_dim: i64,
    /// Output memory the client asks for: cpu, pinned or gpu.
    #[arg(long, default_value = "cpu")]
    pub output_memory: MemoryType,
    /// Run with auto-complete disabled (`--disable-auto-complete-config`).
    #[arg(long)]
    pub disable_auto_complete_config: bool,
    /// Print the backend's log to stderr.
    #[arg(long)]
    pub verbose: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print what Triton's /metrics endpoint would serve (Triton's nv_inference_* counters and
    /// the backend's custom metrics) after the run.
    #[arg(long)]
    pub metrics: bool,
}

pub fn parse_kv(s: &str) -> std::result::Result<(String, String), String> {
    let s = s.strip_prefix("rusttrt,").unwrap_or(s);
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got '{s}'"))
}

/// Where to find `libtriton_rusttrt.so` when `--backend-lib` is not given.
pub fn default_backend_lib() -> Result<PathBuf> {
    let name = "libtriton_rusttrt.so";
    let mut dirs = Vec::new();
    if let Some(d) = crate::testing::profile_dir() {
        dirs.push(d.clone());
        dirs.push(d.join("deps"));
    }
    let mut targets = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        targets.push(PathBuf::from(t));
    }
    targets.push(crate::testing::workspace_root().join("target"));
    for t in targets {
        dirs.push(t.join("release"));
        dirs.push(t.join("debug"));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::not_found(format!(
                "{name} not found (looked in {dirs:?}); pass --backend-lib"
            ))
        })
}

pub(crate) fn dtype_of(v: &Value) -> u32 {
    let s = v.as_str().unwrap_or("");
    match s.strip_prefix("TYPE_").unwrap_or(s) {
        "STRING" => TRITONSERVER_TYPE_BYTES,
        other => datatype_from_name(other),
    }
}

pub(crate) fn random_bytes(rng: &mut rand::rngs::StdRng, dt: u32, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        match dt {
            TRITONSERVER_TYPE_FP32 => out.extend(rng.random::<f32>().to_le_bytes()),
            TRITONSERVER_TYPE_FP64 => out.extend(rng.random::<f64>().to_le_bytes()),
            TRITONSERVER_TYPE_FP16 => {
                out.extend(half::f16::from_f32(rng.random::<f32>()).to_le_bytes())
            }
            TRITONSERVER_TYPE_BF16 => {
                out.extend(half::bf16::from_f32(rng.random::<f32>()).to_le_bytes())
            }
            TRITONSERVER_TYPE_BOOL => out.push(rng.random_range(0..2)),
            TRITONSERVER_TYPE_BYTES => {
                let s: String = (0..rng.random_range(1..8))
                    .map(|_| rng.random_range(b'a'..=b'z') as char)
                    .collect();
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s.as_bytes());
            }
            dt => {
                let v: i64 = rng.random_range(0..10);
                out.extend(&v.to_le_bytes()[..datatype_byte_size(dt) as usize]);
            }
        }
    }
    out
}

fn build_inputs(args: &RunArgs, cfg: &Value) -> Result<Vec<InputTensor>> {
    let batching = cfg["max_batch_size"].as_i64().unwrap_or(0) > 0;
    let inputs: Vec<&Value> = cfg["input"]
        .as_array()
        .map(|a| a.iter().filter(|i| i["optional"] != true).collect())
        .unwrap_or_default();
    let files: HashMap<String, PathBuf> = match args.input.as_str() {
        "random" => HashMap::new(),
        f if f.ends_with(".json") => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| Error::invalid_arg(format!("cannot read {f}: {e}")))?;
            let m: HashMap<String, String> = serde_json::from_str(&text).map_err(|e| {
                Error::invalid_arg(format!("{f}: expected a JSON object name → file: {e}"))
            })?;
            let base = Path::new(f).parent().unwrap_or(Path::new("."));
            m.into_iter().map(|(k, v)| (k, base.join(v))).collect()
        }
        f => {
            if inputs.len() != 1 {
                return Err(Error::invalid_arg(format!(
                    "--input {f}: a raw file works only for a single-input model ({} inputs); use a .json map",
                    inputs.len()
                )));
            }
            HashMap::from([(
                inputs[0]["name"].as_str().unwrap_or("").to_string(),
                PathBuf::from(f),
            )])
        }
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut out = Vec::new();
    for i in inputs {
        let name = i["name"].as_str().unwrap_or("").to_string();
        let dt = dtype_of(&i["data_type"]);
        let dims: Vec<i64> = i["dims"]
            .as_array()
            .map(|a| a.iter().map(|d| d.as_i64().unwrap_or(1)).collect())
            .unwrap_or_default();
        let mut shape: Vec<i64> = dims
            .iter()
            .map(|d| if *d < 0 { args.dynamic_dim } else { *d })
            .collect();
        if batching {
            shape.insert(0, args.batch);
        }
        let elems = shape.iter().product::<i64>().max(0) as usize;
        let bytes = match files.get(&name) {
            Some(p) => std::fs::read(p)
                .map_err(|e| Error::invalid_arg(format!("cannot read {}: {e}", p.display())))?,
            None if !files.is_empty() => {
                return Err(Error::invalid_arg(format!(
                    "{}: no file for input '{name}'",
                    args.input
                )))
            }
            None => random_bytes(&mut rng, dt, elems),
        };
        out.push(InputTensor::new(&name, dt, &shape, bytes));
    }
    Ok(out)
}

fn values(o: &OutputTensor) -> Vec<f64> {
    let n = datatype_byte_size(o.datatype) as usize;
    if n == 0 {
        return vec![];
    }
    o.bytes
        .chunks_exact(n)
        .map(|c| match o.datatype {
            TRITONSERVER_TYPE_FP32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            TRITONSERVER_TYPE_FP64 => f64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
            TRITONSERVER_TYPE_FP16 => half::f16::from_le_bytes([c[0], c[1]]).to_f64(),
            TRITONSERVER_TYPE_BF16 => half::bf16::from_le_bytes([c[0], c[1]]).to_f64(),
            TRITONSERVER_TYPE_INT8 => c[0] as i8 as f64,
            TRITONSERVER_TYPE_INT16 => i16::from_le_bytes([c[0], c[1]]) as f64,
            TRITONSERVER_TYPE_INT32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            TRITONSERVER_TYPE_INT64 => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64,
            TRITONSERVER_TYPE_UINT16 => u16::from_le_bytes([c[0], c[1]]) as f64,
            TRITONSERVER_TYPE_UINT32 => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            TRITONSERVER_TYPE_UINT64 => u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64,
            _ => c[0] as f64,
        })
        .collect()
}

fn summarize(o: &OutputTensor) -> Value {
    let v = values(o);
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let (min, max) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        });
    let mean = if finite.is_empty() {
        f64::NAN
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    };
    json!({
        "name": o.name, "datatype": datatype_name(o.datatype), "shape": o.shape,
        "memory": memory_type_name(o.memory.raw()),
        "first": v.iter().take(8).collect::<Vec<_>>(),
        "min": min, "max": max, "mean": mean,
        "non_finite": v.len() - finite.len(),
    })
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Run `rusttrt run`.
pub fn run(args: &RunArgs) -> Result<()> {
    let lib = match &args.backend_lib {
        Some(p) => p.clone(),
        None => default_backend_lib()?,
    };
    let mut opts = ServerOptions::new(&lib, &args.model_repository);
    opts.backend_config = args.backend_config.clone();
    opts.auto_complete_config = !args.disable_auto_complete_config;
    opts.log_to_stderr = args.verbose;
    let server = Server::new(opts)?;
    let t = Instant::now();
    server.load_model(&args.model)?;
    let load_s = t.elapsed().as_secs_f64();
    let cfg = server.model_config(&args.model)?;
    let batching = cfg["max_batch_size"].as_i64().unwrap_or(0) > 0;
    let inputs = build_inputs(args, &cfg)?;
    let next = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::new());
    let first: Mutex<Option<crate::infer::InferResponse>> = Mutex::new(None);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.concurrency.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= args.requests {
                    break;
                }
                let mut req = InferRequest::new(&format!("req{i}"), inputs.clone());
                req.output_memory = args.output_memory;
                let t0 = Instant::now();
                match server.infer(&args.model, req) {
                    Ok(r) if r.error.is_none() => {
                        crate::rules::lock(&latencies).push(t0.elapsed());
                        crate::rules::lock(&first).get_or_insert(r);
                    }
                    Ok(r) => {
                        let (c, m) = r.error.unwrap_or_default();
                        crate::rules::lock(&failure)
                            .get_or_insert(Error::new(c, format!("request {i}: {m}")));
                        break;
                    }
                    Err(e) => {
                        crate::rules::lock(&failure)
                            .get_or_insert(e.context(format!("request {i}")));
                        break;
                    }
                }
            });
        }
    });
    let wall = t.elapsed().as_secs_f64();
    let mut lat = latencies.into_inner().unwrap_or_default();
    lat.sort();
    let done = lat.len();
    let items = done as f64 * if batching { args.batch as f64 } else { 1.0 };
    let outputs: Vec<Value> = first
        .into_inner()
        .ok()
        .flatten()
        .map(|r| r.outputs.iter().map(summarize).collect())
        .unwrap_or_default();
    let report = json!({
        "model": args.model,
        "backend_library": lib.display().to_string(),
        "load_seconds": load_s,
        "requests": done,
        "batch": if batching { args.batch } else { 0 },
        "concurrency": args.concurrency,
        "infer_per_sec": done as f64 / wall.max(1e-9),
        "items_per_sec": items / wall.max(1e-9),
        "latency_ms": {"p50": percentile(&lat, 0.5), "p90": percentile(&lat, 0.9), "p99": percentile(&lat, 0.99)},
        "outputs": outputs,
        "stats": server.model_stats(&args.model)?,
        "violations": server.violations(),
    });
    let metrics_text = args.metrics.then(|| server.metrics_text());
    let mut report = report;
    if let Some(m) = &metrics_text {
        report["metrics"] = Value::String(m.clone());
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "model {} loaded in {load_s:.3} s ({})",
            args.model,
            lib.display()
        );
        for o in &outputs {
            println!(
                "output {:<20} {:>6} {:<24} first {:?}  min {:.6} max {:.6} mean {:.6}{}",
                o["name"].as_str().unwrap_or(""),
                o["datatype"].as_str().unwrap_or(""),
                o["shape"].to_string(),
                o["first"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .map(|x| x.as_f64().unwrap_or(f64::NAN))
                        .collect::<Vec<_>>())
                    .unwrap_or_default(),
                o["min"].as_f64().unwrap_or(f64::NAN),
                o["max"].as_f64().unwrap_or(f64::NAN),
                o["mean"].as_f64().unwrap_or(f64::NAN),
                if o["non_finite"].as_u64().unwrap_or(0) > 0 {
                    format!("  ({} non-finite)", o["non_finite"])
                } else {
                    String::new()
                },
            );
        }
        println!(
            "{done} requests x batch {} with concurrency {}: {:.1} infer/s, {:.1} items/s; latency p50 {:.3} ms p90 {:.3} ms p99 {:.3} ms",
            if batching { args.batch } else { 0 }, args.concurrency,
            report["infer_per_sec"].as_f64().unwrap_or(0.0), report["items_per_sec"].as_f64().unwrap_or(0.0),
            percentile(&lat, 0.5), percentile(&lat, 0.9), percentile(&lat, 0.99));
        let st = &report["stats"]["model_stats"][0];
        let avg = |k: &str| {
            let d = &st["inference_stats"][k];
            d["ns"].as_f64().unwrap_or(0.0) / d["count"].as_f64().unwrap_or(0.0).max(1.0) / 1000.0
        };
        println!(
            "stats: success {} fail {} inference_count {} execution_count {}; avg us: queue {:.1} compute_input {:.1} compute_infer {:.1} compute_output {:.1}",
            st["inference_stats"]["success"]["count"], st["inference_stats"]["fail"]["count"],
            st["inference_count"], st["execution_count"],
            avg("queue"), avg("compute_input"), avg("compute_infer"), avg("compute_output"));
    }
    if let (Some(m), false) = (metrics_text, args.json) {
        println!("{m}");
    }
    let v = server.violations();
    if !v.is_empty() {
        for x in &v {
            eprintln!("RULE VIOLATION: {x}");
        }
        return Err(Error::internal(format!(
            "the backend broke {} Triton rule(s)",
            v.len()
        )));
    }
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(())
}

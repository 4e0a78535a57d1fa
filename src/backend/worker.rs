//! Engine builds in a child process (the build worker).
//!
//! An engine build and the FP16 accuracy guard run third-party code on the model: an ONNX parser,
//! TensorRT's builder, ONNX Runtime sessions on random inputs. A crash, abort, hang or
//! out-of-memory there must fail that model's load, not take Triton and its other models down.
//! So on a cache miss the backend writes a job (the model's final config, its file, the backend
//! config, the device and engine) and runs `rusttrt build-worker JOB OUT` with a time limit;
//! the worker runs the same pipeline ([`super::engines::build_artifact`]) and writes the cache
//! envelope to OUT; the backend stores it in the cache under its lock, as an in-process build
//! would. The worker's log lines are forwarded into Triton's log. A crash becomes a load error
//! naming the model and the signal; a hang past `build_timeout_s` (default 3600) kills the worker.
//!
//! The worker is the backend config's `build-worker` (a path, or `in-process` to build in the
//! server's process), else `rusttrt` beside the backend, else `<prefix>/bin/rusttrt` of Triton's
//! layout (`<prefix>/backends/rusttrt/`). Where none is found the build runs in-process, and the
//! log says so once.

use super::model::{EngineKind, ModelState};
use super::BackendState;
use crate::engine::{BuildSpec, Device, EngineFactory};
use crate::error::{Error, ErrorCode, Result};
use crate::log;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Once};

use std::time::{Duration, Instant};

/// Default time limit of one build (TensorRT builds of large models take minutes).
const DEFAULT_TIMEOUT_S: u64 = 3600;
/// Largest envelope read back from a worker (a TensorRT plan of a very large model).
const MAX_ENVELOPE: u64 = 64 << 30;

/// What the worker needs to rebuild the model's state and run the build.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    /// The backend's version: the worker (`rusttrt`) must come from the same release.
    pub backend_version: String,
    pub model_name: String,
    pub model_version: u64,
    /// The model's directory (relative paths of its parameters are resolved against it).
    pub model_dir: PathBuf,
    pub model_path: PathBuf,
    /// The model's content digest as the server computed it (the build is for that content).
    pub model_digest: String,
    /// The model's config JSON as the backend holds it (after auto-complete).
    pub config: serde_json::Value,
    pub backend_cmdline: BTreeMap<String, String>,
    pub backend_dir: PathBuf,
    /// `None` = CPU, else the GPU ordinal.
    pub gpu: Option<i32>,
    pub engine: EngineKind,
}

/// The worker executable, or `None` to build in-process.
fn worker_path(backend: &BackendState) -> Option<PathBuf> {
    match backend.get("build-worker") {
        Some("in-process") => None,
        Some(p) => Some(backend.backend_dir.join(p)),
        None => {
            let beside = backend.backend_dir.join("rusttrt");
            let triton_bin = backend
                .backend_dir
                .parent()
                .and_then(Path::parent)
                .map(|prefix| prefix.join("bin/rusttrt"));
            let found = std::iter::once(beside)
                .chain(triton_bin)
                .find(|p| p.is_file());
            if found.is_none() {
                static SAID: Once = Once::new();
                SAID.call_once(|| {
                    log!(
                        Warn,
                        "no build worker found (rusttrt beside the backend in {}, or in <prefix>/bin): engine builds run inside the server, where a crash in the build would take the server down; set the backend config build-worker",
                        backend.backend_dir.display()
                    )
                });
            }
            found
        }
    }
}

fn timeout(state: &ModelState) -> Result<Duration> {
    match state.config.parameter("build_timeout_s") {
        None => Ok(Duration::from_secs(DEFAULT_TIMEOUT_S)),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                Error::invalid_arg(format!(
                    "model '{}': parameter 'build_timeout_s': expected a whole number of seconds > 0, got '{v}'",
                    state.name
                ))
            }),
    }
}

/// Builds the cache envelope for `spec`: in the worker where one is found, else here.
pub fn build(
    state: &ModelState,
    factory: &dyn EngineFactory,
    spec: &BuildSpec,
    engine: EngineKind,
) -> Result<Vec<u8>> {
    let Some(worker) = worker_path(&state.backend) else {
        return super::engines::build_artifact(state, factory, spec);
    };
    let limit = timeout(state)?;
    let job = Job {
        backend_version: env!("CARGO_PKG_VERSION").to_string(),
        model_name: state.name.clone(),
        model_version: state.version,
        model_dir: state.model_dir.clone(),
        model_path: state.model_path.clone(),
        model_digest: state.model_digest()?.to_string(),
        config: state.config.raw.clone(),
        backend_cmdline: state.backend.cmdline.clone(),
        backend_dir: state.backend.backend_dir.clone(),
        gpu: match spec.device {
            Device::Cpu => None,
            Device::Gpu(d) => Some(d),
        },
        engine,
    };
    run_worker(&worker, &job, limit).map_err(|e| e.context(format!("model '{}'", state.name)))
}

/// Name of a signal for messages.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL, e.g. the kernel's out-of-memory killer",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    format!("signal {sig} ({name})")
}

fn run_worker(worker: &Path, job: &Job, limit: Duration) -> Result<Vec<u8>> {
    let dir = tempfile::Builder::new()
        .prefix("rusttrt-build-")
        .tempdir()
        .map_err(|e| Error::internal(format!("creating the build worker's folder: {e}")))?;
    let job_path = dir.path().join("job.json");
    let out_path = dir.path().join("envelope");
    let bytes = serde_json::to_vec(job)
        .map_err(|e| Error::internal(format!("writing the build job: {e}")))?;
    std::fs::write(&job_path, bytes)
        .map_err(|e| Error::internal(format!("writing {}: {e}", job_path.display())))?;
    let mut child = Command::new(worker)
        .arg("build-worker")
        .arg(&job_path)
        .arg(&out_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot start the build worker {}: {e} (set the backend config build-worker, or build-worker=in-process)",
                worker.display()
            ))
        })?;
    let pid = child.id();
    // The worker's log lines are read by a thread and forwarded into Triton's log from this
    // thread (the one the load runs on), as they come; its last error names a failure.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = child.stderr.take().map(|stderr| {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    });
    let last_error = Mutex::new(String::new());
    let drain = |last_error: &Mutex<String>| {
        while let Ok(line) = rx.try_recv() {
            forward(pid, &line, last_error);
        }
    };
    let t0 = Instant::now();
    let status = loop {
        drain(&last_error);
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if t0.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(r) = reader {
                    let _ = r.join();
                }
                drain(&last_error);
                return Err(Error::new(
                    ErrorCode::Unavailable,
                    format!(
                        "the engine build did not finish within {} s (parameter build_timeout_s); the build worker (pid {pid}) was killed",
                        limit.as_secs()
                    ),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(Error::internal(format!(
                    "waiting for the build worker: {e}"
                )))
            }
        }
    };
    if let Some(r) = reader {
        let _ = r.join();
    }
    drain(&last_error);
    let last = last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        return Err(Error::internal(format!(
            "the engine build crashed: the build worker (pid {pid}) died of {}{}",
            signal_name(sig),
            if last.is_empty() {
                String::new()
            } else {
                format!("; its last error: {last}")
            }
        )));
    }
    if !status.success() {
        let code = status.code().unwrap_or(-1);
        let msg = if last.is_empty() {
            format!("the build worker (pid {pid}) failed with exit code {code}")
        } else {
            last
        };
        return Err(Error::new(worker_error_code(code), msg));
    }
    read_bounded(&out_path)
}

/// Exit codes of `rusttrt build-worker`: 10 + the error code's number, so the load error keeps
/// its code (INVALID_ARG for a model ONNX Runtime rejects, UNAVAILABLE for a missing library).
pub fn exit_code_of(code: ErrorCode) -> i32 {
    10 + code.to_triton() as i32
}

fn worker_error_code(exit: i32) -> ErrorCode {
    match u32::try_from(exit - 10) {
        Ok(c) if (10..=17).contains(&exit) => match ErrorCode::from_triton(c) {
            ErrorCode::Unknown => ErrorCode::Internal,
            other => other,
        },
        _ => ErrorCode::Internal,
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| {
        Error::internal(format!(
            "the build worker wrote no result ({}: {e})",
            path.display()
        ))
    })?;
    let mut v = Vec::new();
    f.take(MAX_ENVELOPE + 1)
        .read_to_end(&mut v)
        .map_err(|e| Error::internal(format!("reading {}: {e}", path.display())))?;
    if v.len() as u64 > MAX_ENVELOPE {
        return Err(Error::internal(format!(
            "the build worker's result is larger than {MAX_ENVELOPE} bytes"
        )));
    }
    Ok(v)
}

/// The level and message of one line of the worker's stderr: `[LEVEL] file:line: message` from
/// its log; anything else (a library printing on its own) is an error line as it is.
fn parse_line(line: &str) -> (&str, &str) {
    match line
        .strip_prefix('[')
        .and_then(|r| r.split_once("] "))
        .map(|(lvl, rest)| (lvl, rest.split_once(": ").map_or(rest, |(_, m)| m)))
    {
        Some((lvl @ ("INFO" | "WARN" | "ERROR" | "VERBOSE"), msg)) => (lvl, msg),
        _ => ("ERROR", line),
    }
}

/// Forwards one line of the worker's stderr into Triton's log; an error line is remembered.
fn forward(pid: u32, line: &str, last_error: &Mutex<String>) {
    let (level, msg) = parse_line(line);
    let text = format!("[build worker {pid}] {msg}");
    match level {
        "INFO" => log!(Info, "{text}"),
        "WARN" => log!(Warn, "{text}"),
        "VERBOSE" => log!(Verbose, "{text}"),
        _ => {
            *last_error.lock().unwrap_or_else(|p| p.into_inner()) = msg.to_string();
            log!(Error, "{text}")
        }
    }
}

/// The worker's side: rebuilds the model's state from the job and runs the build pipeline;
/// returns the cache envelope.
pub fn run_job(job: &Job) -> Result<Vec<u8>> {
    super::engine_log_to_triton();
    if job.backend_version != env!("CARGO_PKG_VERSION") {
        return Err(Error::unavailable(format!(
            "the build worker is rusttrt {}, the backend is {}: install the rusttrt command of the backend's release (or set the backend config build-worker)",
            env!("CARGO_PKG_VERSION"),
            job.backend_version
        )));
    }
    // No metrics in the worker: the server reports them when the envelope comes back.
    let backend = Arc::new(BackendState {
        cmdline: job.backend_cmdline.clone(),
        backend_dir: job.backend_dir.clone(),
        metrics: None,
    });
    let (onnx, digest) = crate::onnx::OnnxModel::load_with_digest(&job.model_path)
        .map_err(|e| e.context(format!("model '{}'", job.model_name)))?;
    if digest != job.model_digest {
        return Err(Error::unavailable(format!(
            "model '{}': {} changed while its engine was being built; load the model again",
            job.model_name,
            job.model_path.display()
        )));
    }
    let signature = onnx
        .signature()
        .map_err(|e| e.context(format!("model '{}'", job.model_name)))?;
    drop(onnx);
    let state = ModelState::from_parts(
        job.model_name.clone(),
        job.model_version,
        job.config.clone(),
        backend,
        job.model_dir.clone(),
        (job.model_path.clone(), Some(job.model_digest.clone())),
        signature,
        false,
    )?;
    let device = match job.gpu {
        None => Device::Cpu,
        Some(d) => Device::Gpu(d),
    };
    if let Device::Gpu(d) = device {
        crate::cuda::Device::open(usize::try_from(d).unwrap_or(usize::MAX))?.bind_to_thread()?;
    }
    let factory = state.factory_for(job.engine, device)?;
    let spec = state.build_spec(device);
    super::engines::build_artifact(&state, factory.as_ref(), &spec)
}

/// Reads a job file (bounded: a job is a config and a few paths).
pub fn read_job(path: &Path) -> Result<Job> {
    let bytes = crate::safe_file::read_file(path, "build job", 64 << 20)
        .map_err(|e| Error::invalid_arg(format!("reading the job {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid_arg(format!("the job {} is not valid: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named() {
        assert!(signal_name(libc::SIGABRT).contains("SIGABRT"));
        assert!(signal_name(libc::SIGKILL).contains("out-of-memory"));
        assert_eq!(signal_name(64), "signal 64");
    }

    #[test]
    fn exit_codes_carry_the_error_code() {
        for c in [
            ErrorCode::InvalidArg,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::Unsupported,
        ] {
            assert_eq!(worker_error_code(exit_code_of(c)), c);
        }
        assert_eq!(worker_error_code(1), ErrorCode::Internal);
    }

    #[test]
    fn worker_log_lines_keep_their_level() {
        assert_eq!(
            parse_line("[WARN] src/x.rs:3: careful"),
            ("WARN", "careful")
        );
        assert_eq!(
            parse_line("[ERROR] build-worker:0: it broke"),
            ("ERROR", "it broke")
        );
        assert_eq!(
            parse_line("free text from a library"),
            ("ERROR", "free text from a library")
        );
        assert_eq!(parse_line("[NOTE] x"), ("ERROR", "[NOTE] x"));
    }
}

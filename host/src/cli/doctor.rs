//! `rusttrt doctor`: what this environment can serve, checked the way the backend would use it.
//!
//! One line each: the GPU(s) and driver, the CUDA runtime, the TensorRT shim and library (its
//! version against the shim's headers), ONNX Runtime and its execution providers, the engine
//! cache location and whether it is writable. Then the tiny bundled model (tiny_clip, compiled
//! into this binary) is built and run through the host with the real backend by every engine
//! that is available, and each one's outputs are compared with ONNX Runtime on the CPU. The exit
//! code is non-zero when something asked for (the backend config's `engine`, the `engine` or
//! `KIND_GPU` of a model in `--model-repository`) cannot work, or an engine's outputs disagree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use triton_rusttrt::engine::EngineFactory as _;

use crate::config::proto::model_instance_group::Kind as GroupKind;
use crate::error::{Error, Result};
use crate::infer::{InferRequest, InputTensor};
use crate::server::{Server, ServerOptions};

/// The bundled model the checks run (tools/gen_models.py writes it).
const TINY_CLIP_ONNX: &[u8] = include_bytes!("../../../model_repository/tiny_clip/1/model.onnx");

/// Arguments of `rusttrt doctor`.
#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    /// Backend library (default: beside this executable, then the cargo target directories).
    #[arg(long)]
    pub backend_lib: Option<PathBuf>,
    /// Backend config entries `key=value`, as given to Triton (tensorrt-shim-library,
    /// onnxruntime-library, cache-dir, engine ...).
    #[arg(long = "backend-config", value_parser = super::run::parse_kv)]
    pub backend_config: Vec<(String, String)>,
    /// Also check that what the models of this repository ask for (engine, KIND_GPU) can work.
    #[arg(long)]
    pub model_repository: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Ok,
    Info,
    Fail,
}

/// What the doctor found: every line it printed, and the failures among them.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub failures: Vec<String>,
}

impl Report {
    fn line(&mut self, mark: Mark, what: &str, detail: impl AsRef<str>) {
        let m = match mark {
            Mark::Ok => "[ ok ]",
            Mark::Info => "[info]",
            Mark::Fail => "[FAIL]",
        };
        let line = format!("{m} {what:<14} {}", detail.as_ref());
        println!("{line}");
        self.lines.push(line);
        if mark == Mark::Fail {
            self.failures.push(format!("{what}: {}", detail.as_ref()));
        }
    }
}

fn get<'a>(args: &'a DoctorArgs, key: &str) -> Option<&'a str> {
    args.backend_config
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The `onnxruntime-library` candidates in the backend's order.
fn ort_candidates(args: &DoctorArgs, backend_dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    v.extend(get(args, "onnxruntime-library").map(PathBuf::from));
    v.extend(std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from));
    v.push(backend_dir.join("libonnxruntime.so"));
    v.push(PathBuf::from("libonnxruntime.so"));
    v
}

/// The engine cache location the backend uses when a model sets none.
fn cache_location(args: &DoctorArgs) -> Option<PathBuf> {
    if let Some(d) = get(args, "cache-dir") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("rusttrt"))
}

fn writable(dir: &Path) -> std::result::Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let probe = dir.join(format!(".rusttrt-doctor-{}", std::process::id()));
    std::fs::write(&probe, b"probe").map_err(|e| e.to_string())?;
    std::fs::remove_file(&probe).map_err(|e| e.to_string())
}

/// What a model of the repository asks for: (name, engine, wants a GPU).
fn asks(repo: &Path) -> Result<Vec<(String, String, bool)>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(repo)
        .map_err(|e| Error::not_found(format!("{}: {e}", repo.display())))?;
    for e in rd.flatten() {
        let dir = e.path();
        if !dir.join("config.pbtxt").is_file() {
            continue;
        }
        let cfg = crate::config::read(&dir, true)?;
        if cfg.backend != "rusttrt" {
            continue;
        }
        let engine = cfg
            .parameters
            .get("engine")
            .map(|p| p.string_value.clone())
            .unwrap_or_else(|| "auto".into());
        let gpu = cfg
            .instance_group
            .iter()
            .any(|g| g.kind.enum_value() == Ok(GroupKind::KIND_GPU));
        out.push((e.file_name().to_string_lossy().into_owned(), engine, gpu));
    }
    out.sort();
    Ok(out)
}

/// Deterministic inputs for tiny_clip: `[4, 3, 32, 32]` in [-1, 1).
fn tiny_input() -> InputTensor {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let values: Vec<f32> = (0..4 * 3 * 32 * 32)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    InputTensor::f32("input", &[4, 3, 32, 32], &values)
}

fn tiny_config(name: &str, kind: &str, engine: &str, precision: &str) -> String {
    format!(
        "name: \"{name}\"\nbackend: \"rusttrt\"\nmax_batch_size: 8\n\
         input [ {{ name: \"input\" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] }} ]\n\
         output [ {{ name: \"embedding\" data_type: TYPE_FP32 dims: [ 32 ] }} ]\n\
         instance_group [ {{ kind: {kind} count: 1 }} ]\n\
         parameters {{ key: \"engine\" value: {{ string_value: \"{engine}\" }} }}\n\
         parameters {{ key: \"precision_mode\" value: {{ string_value: \"{precision}\" }} }}\n"
    )
}

pub fn doctor(args: &DoctorArgs) -> Result<()> {
    let r = diagnose(args)?;
    if r.failures.is_empty() {
        println!("doctor: everything asked for can work");
        Ok(())
    } else {
        Err(Error::internal(format!(
            "{} problem(s): {}",
            r.failures.len(),
            r.failures.join("; ")
        )))
    }
}

/// Runs every check, printing each line as it is found.
pub fn diagnose(args: &DoctorArgs) -> Result<Report> {
    let mut r = Report::default();
    let lib = match &args.backend_lib {
        Some(p) => p.clone(),
        None => super::run::default_backend_lib()?,
    };
    let backend_dir = lib
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    r.line(Mark::Ok, "backend", format!("{}", lib.display()));

    // GPUs and driver.
    let gpus = if triton_rusttrt::cuda::available() {
        let n = triton_rusttrt::cuda::device_count().unwrap_or(0);
        let driver = triton_rusttrt::cuda::driver_version()
            .map(|(a, b)| format!("CUDA driver API {a}.{b}"))
            .unwrap_or_else(|e| format!("driver version unknown ({e})"));
        r.line(Mark::Ok, "driver", format!("{driver}, {n} GPU(s)"));
        for i in 0..n {
            match triton_rusttrt::cuda::device_identity(i) {
                Ok(d) => r.line(Mark::Ok, "gpu", format!("{i}: {}", d.cache_identity())),
                Err(e) => r.line(Mark::Fail, "gpu", format!("{i}: {e}")),
            }
        }
        n
    } else {
        r.line(
            Mark::Info,
            "driver",
            "no CUDA driver (libcuda.so.1) or no GPU: only KIND_CPU instances can be served",
        );
        0
    };

    // CUDA runtime (ONNX Runtime's CUDA execution provider links it; TensorRT too).
    let cudart = ["libcudart.so.13", "libcudart.so.12"].iter().find(|n| {
        // SAFETY: opening the CUDA runtime only runs its initialisers.
        unsafe { libloading::Library::new(**n) }.is_ok()
    });
    match cudart {
        Some(n) => r.line(Mark::Ok, "cuda runtime", format!("{n} loads")),
        None => r.line(
            Mark::Info,
            "cuda runtime",
            "libcudart.so.13/.12 not found on the loader path",
        ),
    }

    // TensorRT through the shim.
    let shim = match get(args, "tensorrt-shim-library") {
        Some(p) => backend_dir.join(p),
        None => backend_dir.join(triton_rusttrt::engine::tensorrt::SHIM_LIBRARY),
    };
    let trt_config = triton_rusttrt::engine::tensorrt::TensorRtConfig {
        shim_path: shim.clone(),
        nvinfer_path: get(args, "tensorrt-library").map(PathBuf::from),
        parser_path: get(args, "tensorrt-parser-library").map(PathBuf::from),
        timing_cache_dir: None,
        max_log_severity: triton_rusttrt::engine::tensorrt::LogSeverity::Warning,
    };
    let trt = triton_rusttrt::engine::tensorrt::TensorRtFactory::new(
        trt_config,
        Arc::new(triton_rusttrt::engine::tensorrt::cuda_glue::CudaRuntime),
    );
    let trt_ok = match &trt {
        Ok(f) => {
            r.line(
                Mark::Ok,
                "tensorrt",
                format!(
                    "TensorRT {} through {} (shim compiled against TensorRT {} headers)",
                    f.library_version(),
                    shim.display(),
                    f.header_version()
                ),
            );
            true
        }
        Err(e) => {
            r.line(Mark::Info, "tensorrt", format!("not usable: {e}"));
            false
        }
    };

    // ONNX Runtime.
    let candidates = ort_candidates(args, &backend_dir);
    let ort_ok = match triton_rusttrt::engine::ort::runtime(&candidates) {
        Ok(rt) => {
            let eps = triton_rusttrt::engine::ort::available_providers(&candidates)
                .unwrap_or_default()
                .join(", ");
            r.line(
                Mark::Ok,
                "onnxruntime",
                format!("{} ({}); providers: {eps}", rt.version, rt.path.display()),
            );
            true
        }
        Err(e) => {
            r.line(Mark::Fail, "onnxruntime", e.to_string());
            false
        }
    };

    // Engine cache.
    match cache_location(args) {
        Some(dir) => match writable(&dir) {
            Ok(()) => r.line(Mark::Ok, "engine cache", format!("{} (writable)", dir.display())),
            Err(e) => r.line(
                Mark::Info,
                "engine cache",
                format!(
                    "{} is not writable ({e}): models fall back to <model dir>/.rusttrt-cache, then memory",
                    dir.display()
                ),
            ),
        },
        None => r.line(Mark::Info, "engine cache", "no cache-dir and no HOME: per model dir, then memory"),
    }

    // What the configuration asks for.
    let mut wanted: Vec<(String, String, bool)> = Vec::new();
    if let Some(e) = get(args, "engine") {
        wanted.push(("backend config".into(), e.to_string(), gpus > 0));
    }
    if let Some(repo) = &args.model_repository {
        wanted.extend(asks(repo)?);
    }
    for (who, engine, gpu) in &wanted {
        if *gpu && gpus == 0 {
            r.line(
                Mark::Fail,
                "asks",
                format!("{who}: KIND_GPU instances, but no GPU is usable"),
            );
        }
        if engine == "tensorrt" && !trt_ok {
            r.line(
                Mark::Fail,
                "asks",
                format!("{who}: engine 'tensorrt', but the native TensorRT engine is not usable (see above)"),
            );
        }
    }

    // Run the bundled model with every available engine against ONNX Runtime on the CPU.
    if ort_ok {
        run_checks(args, &lib, gpus, trt_ok, &mut r)?;
    }

    Ok(r)
}

fn run_checks(
    args: &DoctorArgs,
    lib: &Path,
    gpus: usize,
    trt_ok: bool,
    r: &mut Report,
) -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::internal(format!("temp dir: {e}")))?;
    let mut runs: Vec<(&str, &str, &str, &str)> = vec![("ref", "KIND_CPU", "onnxruntime", "FP32")];
    if gpus > 0 {
        runs.push(("ort_gpu_fp16", "KIND_GPU", "onnxruntime", "FP16"));
        if trt_ok {
            runs.push(("trt_fp32", "KIND_GPU", "tensorrt", "FP32"));
            runs.push(("trt_fp16", "KIND_GPU", "tensorrt", "FP16"));
        }
    }
    for (name, kind, engine, precision) in &runs {
        let m = dir.path().join(name);
        std::fs::create_dir_all(m.join("1")).map_err(Error::from)?;
        std::fs::write(m.join("1/model.onnx"), TINY_CLIP_ONNX).map_err(Error::from)?;
        std::fs::write(
            m.join("config.pbtxt"),
            tiny_config(name, kind, engine, precision),
        )
        .map_err(Error::from)?;
    }
    let mut opts = ServerOptions::new(lib, dir.path());
    opts.backend_config = args.backend_config.clone();
    // Checks build into a throw-away cache, never the user's.
    opts.backend_config.push((
        "cache-dir".into(),
        dir.path().join("cache").display().to_string(),
    ));
    opts.gpu_count = gpus;
    opts.log_to_stderr = false;
    let server = Server::new(opts)?;
    let mut reference: Option<Vec<f32>> = None;
    for (name, _, engine, precision) in &runs {
        let what = format!("run {engine} {precision}");
        if let Err(e) = server.load_model(name) {
            let first = e.to_string().lines().next().unwrap_or("").to_string();
            let mark = if *name == "ref" {
                Mark::Fail
            } else {
                Mark::Info
            };
            r.line(mark, &what, format!("does not load: {first}"));
            continue;
        }
        let serving = server
            .log_lines()
            .into_iter()
            .map(|l| l.msg)
            .find(|m| m.contains(&format!("model '{name}': serving with")))
            .map(|m| m.split("serving with ").nth(1).unwrap_or("").to_string())
            .unwrap_or_else(|| "?".into());
        let resp = server.infer(name, InferRequest::new("doctor", vec![tiny_input()]));
        let out = match resp {
            Ok(resp) if resp.error.is_none() && !resp.outputs.is_empty() => {
                resp.outputs[0].as_f32()
            }
            Ok(resp) => {
                r.line(
                    Mark::Fail,
                    &what,
                    format!("error response {:?}", resp.error),
                );
                continue;
            }
            Err(e) => {
                r.line(Mark::Fail, &what, format!("inference failed: {e}"));
                continue;
            }
        };
        match &reference {
            None => {
                r.line(Mark::Ok, &what, format!("reference: {serving}"));
                reference = Some(out);
            }
            Some(want) => {
                let (cos, rel_l2) = if out.len() == want.len() {
                    triton_rusttrt::compare::cosine_and_rel_l2(want, &out, 32)
                } else {
                    (-1.0, f32::INFINITY)
                };
                let bar = if *precision == "FP16" { 0.999 } else { 0.9999 };
                let mark = if cos >= bar { Mark::Ok } else { Mark::Fail };
                r.line(
                    mark,
                    &what,
                    format!("{serving}: min row cosine {cos:.6} (bar {bar}), relative L2 {rel_l2:.2e} vs ONNX Runtime CPU"),
                );
            }
        }
        let _ = server.unload_model(name);
    }
    Ok(())
}

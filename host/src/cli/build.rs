//! `rusttrt build`: fills the engine cache exactly as the backend does at load, by loading the
//! model(s) through the host with the real backend (same code, same key), then unloading.
//! Run it in the Triton container before the server starts, so the first load is a cache hit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use triton_rusttrt::backend::progress;

use crate::error::{Error, Result};
use crate::server::{Server, ServerOptions};

/// Arguments of `rusttrt build`.
#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    /// Model repository directory.
    #[arg(long)]
    pub model_repository: PathBuf,
    /// Model to build (default: every model directory of the repository whose config names
    /// backend "rusttrt").
    #[arg(long)]
    pub model: Option<String>,
    /// Precision when the model's config does not set `precision_mode` (a config value wins,
    /// since that is what the server will build).
    #[arg(long, value_parser = ["fp16", "fp32"])]
    pub precision: Option<String>,
    /// Engine when the model's config does not set `engine`.
    #[arg(long, value_parser = ["tensorrt", "onnxruntime"])]
    pub engine: Option<String>,
    /// Backend library (default: beside this executable, then the cargo target directories).
    #[arg(long)]
    pub backend_lib: Option<PathBuf>,
    /// Backend config entries `key=value`, as given to Triton (cache-dir, onnxruntime-library ...).
    #[arg(long = "backend-config", value_parser = super::run::parse_kv)]
    pub backend_config: Vec<(String, String)>,
}

fn models_of(repo: &std::path::Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(repo)
        .map_err(|e| Error::not_found(format!("{}: {e}", repo.display())))?;
    for e in rd.flatten() {
        let p = e.path();
        let cfg = std::fs::read_to_string(p.join("config.pbtxt")).unwrap_or_default();
        if p.is_dir() && cfg.contains("\"rusttrt\"") {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// The build stages in order, as the backend's progress lines name them.
pub const STAGES: [&str; 5] = ["parse", "convert", "build", "guard", "write"];

/// Runs `load` (a model load that may build an engine) under a progress display fed by the
/// backend's progress lines (`backend::progress`): stage, position among the stages, elapsed
/// time. Drawn on stderr when it is a terminal (indicatif hides it otherwise). Returns the
/// stages the display went through, in order.
pub fn with_progress<T>(
    server: &Server,
    model: &str,
    load: impl FnOnce() -> T,
) -> (T, Vec<String>) {
    let bar = ProgressBar::new(STAGES.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:20}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(model.to_string());
    bar.set_message("loading");
    bar.enable_steady_tick(Duration::from_millis(200));
    let done = AtomicBool::new(false);
    let (r, stages) = std::thread::scope(|s| {
        let follower = s.spawn(|| {
            let mut seen = 0;
            let mut stages: Vec<String> = Vec::new();
            loop {
                // Read once more after the load ended, so no line is missed.
                let last = done.load(Ordering::Acquire);
                let lines = server.log_lines();
                for l in lines.iter().skip(seen) {
                    if let Some((m, stage, elapsed)) = progress::parse_line(&l.msg) {
                        if m == model {
                            bar.set_position(stage_position(&stage));
                            bar.set_message(format!("{stage} ({elapsed:.0} s into the build)"));
                            if stages.last() != Some(&stage) {
                                stages.push(stage);
                            }
                        }
                    }
                }
                seen = lines.len();
                if last {
                    return stages;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let r = load();
        done.store(true, Ordering::Release);
        (r, follower.join().unwrap_or_default())
    });
    bar.finish_and_clear();
    (r, stages)
}

/// 1-based position of a stage among [`STAGES`].
pub fn stage_position(stage: &str) -> u64 {
    STAGES
        .iter()
        .position(|s| *s == stage)
        .map(|i| i as u64 + 1)
        .unwrap_or(0)
}

pub fn build(args: &BuildArgs) -> Result<()> {
    let lib = match &args.backend_lib {
        Some(p) => p.clone(),
        None => super::run::default_backend_lib()?,
    };
    let models = match &args.model {
        Some(m) => vec![m.clone()],
        None => models_of(&args.model_repository)?,
    };
    if models.is_empty() {
        return Err(Error::not_found(format!(
            "no model with backend \"rusttrt\" in {}",
            args.model_repository.display()
        )));
    }
    let mut opts = ServerOptions::new(lib, &args.model_repository);
    opts.backend_config = args.backend_config.clone();
    if let Some(p) = &args.precision {
        opts.backend_config
            .push(("precision-mode".into(), p.to_ascii_uppercase()));
    }
    if let Some(e) = &args.engine {
        opts.backend_config.push(("engine".into(), e.clone()));
    }
    opts.gpu_count = triton_rusttrt::cuda::device_count().unwrap_or(0);
    opts.log_to_stderr = false;
    let server = Server::new(opts)?;
    let mut failed = 0;
    for m in &models {
        let t0 = Instant::now();
        let (r, _) = with_progress(&server, m, || server.load_model(m));
        for l in server.log_lines() {
            if l.msg.contains(&format!("'{m}'"))
                && (l.msg.contains("engine") || l.msg.contains("FP16"))
            {
                println!("[{}] {}", l.level, l.msg);
            }
        }
        match r {
            Ok(()) => {
                println!("{m}: ready in {:.1} s", t0.elapsed().as_secs_f64());
                let _ = server.unload_model(m);
            }
            Err(e) => {
                failed += 1;
                println!("{m}: FAILED: {e}");
            }
        }
        // Only this model's lines next time.
        server.clear_log();
    }
    if failed > 0 {
        return Err(Error::internal(format!(
            "{failed} of {} model(s) failed to build",
            models.len()
        )));
    }
    Ok(())
}

//! `rusttrt build`: fills the engine cache exactly as the backend does at load, by loading the
//! model(s) through the host with the real backend (same code, same key), then unloading.
//! Run it in the Triton container before the server starts, so the first load is a cache hit.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

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
        let done = Arc::new(AtomicBool::new(false));
        // Progress: elapsed time while the (possibly minutes-long) build runs.
        let ticker = {
            let done = done.clone();
            let m = m.clone();
            std::thread::spawn(move || {
                let spin = ['|', '/', '-', '\\'];
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    eprint!(
                        "\r{} building '{m}' ... {:.0} s ",
                        spin[i % 4],
                        t0.elapsed().as_secs_f64()
                    );
                    let _ = std::io::stderr().flush();
                    i += 1;
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
                eprint!("\r");
            })
        };
        let r = server.load_model(m);
        done.store(true, Ordering::Relaxed);
        let _ = ticker.join();
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

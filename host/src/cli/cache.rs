//! `rusttrt cache ls|verify|prune`: look after an engine cache directory (the backend's
//! `cache-dir`, or `<model dir>/.rusttrt-cache` beside a model).

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Arguments of `rusttrt cache`.
#[derive(clap::Args, Debug, Clone)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
}

/// What to do with the cache.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum CacheAction {
    /// List the entries, most recently used first.
    Ls {
        /// Cache locations (default: every `<model>/.rusttrt-cache` of --model-repository).
        #[arg(long = "cache-dir")]
        cache_dir: Vec<PathBuf>,
        #[arg(long)]
        model_repository: Option<PathBuf>,
    },
    /// Verify every entry's checksum; `--remove` deletes the invalid ones.
    Verify {
        #[arg(long = "cache-dir")]
        cache_dir: Vec<PathBuf>,
        #[arg(long)]
        model_repository: Option<PathBuf>,
        #[arg(long)]
        remove: bool,
    },
    /// Evict least recently used entries until each location holds at most --max-size.
    Prune {
        #[arg(long = "cache-dir")]
        cache_dir: Vec<PathBuf>,
        #[arg(long)]
        model_repository: Option<PathBuf>,
        /// Size cap, e.g. 10G, 512M, 1048576.
        #[arg(long)]
        max_size: String,
    },
}

fn locations(dirs: &[PathBuf], repo: &Option<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut out = dirs.to_vec();
    if let Some(r) = repo {
        let rd =
            std::fs::read_dir(r).map_err(|e| Error::not_found(format!("{}: {e}", r.display())))?;
        for e in rd.flatten() {
            let c = e.path().join(".rusttrt-cache");
            if c.is_dir() {
                out.push(c);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::invalid_arg("give --cache-dir or --model-repository"));
    }
    Ok(out)
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

pub fn cache(args: &CacheArgs) -> Result<()> {
    use triton_rusttrt::cache;
    match &args.action {
        CacheAction::Ls {
            cache_dir,
            model_repository,
        } => {
            for loc in locations(cache_dir, model_repository)? {
                let entries = cache::list(&loc).map_err(Error::from)?;
                let total: u64 = entries.iter().map(|e| e.size).sum();
                println!(
                    "{} ({} entries, {})",
                    loc.display(),
                    entries.len(),
                    mb(total)
                );
                for e in entries {
                    let f = |k: &str| e.fields.get(k).cloned().unwrap_or_default();
                    println!(
                        "  {}  {:16} {:>10}  {} {} {} [{}]{}",
                        &e.digest[..16.min(e.digest.len())],
                        e.label.clone().unwrap_or_default(),
                        mb(e.size),
                        f("engine"),
                        f("precision"),
                        f("profile"),
                        f("device"),
                        e.header_error
                            .as_ref()
                            .map(|h| format!("  INVALID: {h}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        CacheAction::Verify {
            cache_dir,
            model_repository,
            remove,
        } => {
            let mut bad = 0;
            for loc in locations(cache_dir, model_repository)? {
                for (e, r) in cache::verify(&loc).map_err(Error::from)? {
                    match r {
                        Ok(()) => println!("ok       {} {}", e.digest, e.label.unwrap_or_default()),
                        Err(x) => {
                            bad += 1;
                            println!("INVALID  {} {}: {x}", e.digest, e.label.unwrap_or_default());
                        }
                    }
                }
                if *remove {
                    for (e, why) in cache::remove_invalid(&loc).map_err(Error::from)? {
                        println!("removed  {} ({why})", e.path.display());
                    }
                }
            }
            if bad > 0 && !remove {
                return Err(Error::internal(format!(
                    "{bad} invalid entr{}",
                    if bad == 1 { "y" } else { "ies" }
                )));
            }
            Ok(())
        }
        CacheAction::Prune {
            cache_dir,
            model_repository,
            max_size,
        } => {
            let cap = triton_rusttrt::backend::params::parse_size("--max-size", max_size)
                .map_err(Error::from)?;
            for loc in locations(cache_dir, model_repository)? {
                let r = cache::prune(&loc, cap).map_err(Error::from)?;
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
                for x in &r.removed {
                    println!("evicted  {} ({})", x.digest, mb(x.bytes));
                }
                println!(
                    "{}: freed {}, {} left (cap {})",
                    loc.display(),
                    mb(r.freed_bytes),
                    mb(r.total_bytes),
                    mb(cap)
                );
            }
            Ok(())
        }
    }
}

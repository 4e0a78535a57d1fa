//! The `rusttrt` command: argument definitions and subcommand implementations.

pub mod bench;
pub mod build;
pub mod build_worker;
pub mod cache;
pub mod direct;
pub mod doctor;
pub mod inspect;
pub mod run;

use clap::{Parser, Subcommand};

/// rusttrt: run models through the backend the way Triton would.
#[derive(Parser, Debug)]
#[command(name = "rusttrt", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load a model through the host and run inference requests against it.
    Run(run::RunArgs),
    /// Print an ONNX model's I/O signature and the config auto-complete would produce.
    Inspect(inspect::InspectArgs),
    /// Fill the engine cache as the backend would at load (pre-build before Triton starts).
    Build(build::BuildArgs),
    /// List, verify or prune an engine cache.
    Cache(cache::CacheArgs),
    /// Throughput and latency per batch size and input memory, beside the engine run directly.
    Bench(bench::BenchArgs),
    /// Check this environment (GPU, CUDA, TensorRT, ONNX Runtime, cache) and run the bundled
    /// model with every available engine; non-zero exit when something asked for cannot work.
    Doctor(doctor::DoctorArgs),
    /// The backend's engine build in a process of its own (started by the backend).
    #[command(hide = true)]
    BuildWorker(build_worker::BuildWorkerArgs),
}

/// Entry point of the binary; returns the process exit code.
pub fn main_with_args(cli: Cli) -> i32 {
    let r = match cli.command {
        Command::BuildWorker(a) => return build_worker::build_worker(&a),
        Command::Run(a) => run::run(&a),
        Command::Inspect(a) => inspect::inspect(&a),
        Command::Build(a) => build::build(&a),
        Command::Cache(a) => cache::cache(&a),
        Command::Bench(a) => bench::bench(&a),
        Command::Doctor(a) => doctor::doctor(&a),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

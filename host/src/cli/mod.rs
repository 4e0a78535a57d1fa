//! The `rusttrt` command: argument definitions and subcommand implementations.

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
    /// Inspect a model (not implemented yet).
    Inspect,
    /// Build an engine (not implemented yet).
    Build,
    /// Manage the engine cache (not implemented yet).
    Cache,
}

/// Entry point of the binary; returns the process exit code.
pub fn main_with_args(cli: Cli) -> i32 {
    let r = match cli.command {
        Command::Run(a) => run::run(&a),
        Command::Inspect | Command::Build | Command::Cache => {
            Err(crate::Error::unsupported("not implemented yet"))
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

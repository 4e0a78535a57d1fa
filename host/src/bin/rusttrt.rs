//! The `rusttrt` command (logic lives in `rusttrt_host::cli`).

use clap::Parser;

fn main() {
    let cli = rusttrt_host::cli::Cli::parse();
    std::process::exit(rusttrt_host::cli::main_with_args(cli));
}

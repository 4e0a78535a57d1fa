//! `rusttrt build-worker JOB OUT` (hidden): the backend's engine build, in a process of its own.
//!
//! The backend writes JOB (see `triton_rusttrt::backend::worker::Job`) on a cache miss and runs
//! this command with a time limit; the cache envelope it builds goes to OUT. Its log goes to
//! stderr as `[LEVEL] file:line: message`, which the backend forwards into Triton's log. The
//! exit code is 0, or 10 + the TRITONSERVER_Error code of the failure; a crash is the signal.

use std::path::PathBuf;

use triton_rusttrt::backend::worker;

/// Arguments of `rusttrt build-worker`.
#[derive(clap::Args, Debug, Clone)]
pub struct BuildWorkerArgs {
    /// The job the backend wrote.
    pub job: PathBuf,
    /// Where the cache envelope goes.
    pub out: PathBuf,
}

/// Runs the job; returns the process exit code.
pub fn build_worker(args: &BuildWorkerArgs) -> i32 {
    let r = worker::read_job(&args.job)
        .and_then(|job| worker::run_job(&job))
        .and_then(|envelope| {
            let tmp = args.out.with_extension("partial");
            std::fs::write(&tmp, &envelope)
                .and_then(|()| std::fs::rename(&tmp, &args.out))
                .map_err(|e| {
                    triton_rusttrt::error::Error::internal(format!(
                        "writing {}: {e}",
                        args.out.display()
                    ))
                })
        });
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("[ERROR] build-worker:0: {e}");
            worker::exit_code_of(e.code())
        }
    }
}

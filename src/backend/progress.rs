//! Progress of a long engine build in Triton's log: a line when the build enters a stage
//! (parse, convert, build, guard, write) and, while it stays there, one every interval (10 s by
//! default, the model parameter `build_progress_interval_s` otherwise), each with the elapsed
//! time. The lines have a fixed shape so tools can follow them (`rusttrt build` draws its
//! progress display from them):
//!
//! `model 'NAME': engine build progress: stage=STAGE elapsed=SECONDSs`

use crate::log;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The marker every progress line carries.
pub const MARKER: &str = "engine build progress:";

/// Default interval between two progress lines of one stage.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// What an engine build is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the ONNX model (and its external data).
    Parse,
    /// FP16 conversion.
    Convert,
    /// The engine build proper.
    Build,
    /// The FP16 accuracy guard (including the FP32 reference build).
    Guard,
    /// Writing the engine envelope into the cache.
    Write,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Convert => "convert",
            Stage::Build => "build",
            Stage::Guard => "guard",
            Stage::Write => "write",
        }
    }
}

struct State {
    stage: Stage,
    done: bool,
}

struct Inner {
    model: String,
    start: Instant,
    state: Mutex<State>,
    wake: Condvar,
}

impl Inner {
    fn line(&self, stage: Stage) {
        log!(
            Info,
            "model '{}': {MARKER} stage={} elapsed={:.1}s",
            self.model,
            stage.as_str(),
            self.start.elapsed().as_secs_f64()
        );
    }
}

/// A running build's progress reporter; dropping it ends the reports.
pub struct BuildProgress {
    inner: Arc<Inner>,
    ticker: Option<JoinHandle<()>>,
}

impl BuildProgress {
    /// Starts reporting the build of `model` (stage parse).
    pub fn start(model: &str, interval: Option<Duration>) -> BuildProgress {
        let interval = interval.unwrap_or(DEFAULT_INTERVAL);
        let inner = Arc::new(Inner {
            model: model.to_string(),
            start: Instant::now(),
            state: Mutex::new(State {
                stage: Stage::Parse,
                done: false,
            }),
            wake: Condvar::new(),
        });
        inner.line(Stage::Parse);
        let t = inner.clone();
        let ticker = std::thread::Builder::new()
            .name("rusttrt-progress".into())
            .spawn(move || {
                let mut st = t.state.lock().unwrap_or_else(|p| p.into_inner());
                let mut next = Instant::now() + interval;
                while !st.done {
                    let now = Instant::now();
                    if now >= next {
                        // Logged under the lock, so ticks and stage changes stay in order.
                        t.line(st.stage);
                        next = Instant::now() + interval;
                        continue;
                    }
                    st = t
                        .wake
                        .wait_timeout(st, next - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            })
            .ok();
        BuildProgress { inner, ticker }
    }

    /// The build enters `stage`: one line now, then one every interval.
    pub fn stage(&self, stage: Stage) {
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        st.stage = stage;
        self.inner.line(stage);
    }
}

impl Drop for BuildProgress {
    fn drop(&mut self) {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .done = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// Parses a progress line: `(model, stage, elapsed seconds)`.
pub fn parse_line(msg: &str) -> Option<(String, String, f64)> {
    // Lines of a build worker come forwarded as `[build worker <pid>] model '...': ...`.
    let msg = match msg.strip_prefix("[build worker ") {
        Some(r) => r.split_once("] ")?.1,
        None => msg,
    };
    let rest = msg.strip_prefix("model '")?;
    let (model, rest) = rest.split_once("': ")?;
    let rest = rest.strip_prefix(MARKER)?.trim();
    let mut stage = None;
    let mut elapsed = None;
    for part in rest.split_whitespace() {
        if let Some(s) = part.strip_prefix("stage=") {
            stage = Some(s.to_string());
        } else if let Some(e) = part.strip_prefix("elapsed=") {
            elapsed = e.trim_end_matches('s').parse().ok();
        }
    }
    Some((model.to_string(), stage?, elapsed?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_back() {
        assert_eq!(
            parse_line(
                "[build worker 42] model 'm': engine build progress: stage=build elapsed=3.0s"
            ),
            Some(("m".into(), "build".into(), 3.0))
        );
        assert_eq!(
            parse_line("model 'a b': engine build progress: stage=guard elapsed=12.5s"),
            Some(("a b".into(), "guard".into(), 12.5))
        );
        assert_eq!(parse_line("model 'a': engine cache hit"), None);
    }
}

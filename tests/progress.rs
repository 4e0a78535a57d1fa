//! Long engine builds report their progress: in the log (stage and elapsed time, at least every
//! interval) and in `rusttrt build`'s progress display.

mod common;
use common::*;

fn fp16_config(extra: &str) -> String {
    format!(
        "{}{extra}",
        tiny_clip_config()
            .replace("name: \"tiny_clip\"\n", "")
            .replace("string_value: \"FP32\"", "string_value: \"FP16\"")
    )
}

const FAST: &str =
    "parameters { key: \"build_progress_interval_s\" value: { string_value: \"0.005\" } }\n";

#[test]
fn a_build_logs_every_stage_with_elapsed_time_at_the_interval() {
    let repo = Repo::new();
    repo.add("logged", &tiny_clip_dir(), Some(&fp16_config(FAST)));
    let server = server(&repo);
    server.load_model("logged").expect("load");
    // (Lines of the reporter thread reach every live server of this test process: keep this
    // model's own.)
    let lines = log_matching(&server, "model 'logged': engine build progress:");
    let parsed: Vec<(String, String, f64)> = lines
        .iter()
        .map(|l| triton_rusttrt::backend::progress::parse_line(l).expect(l))
        .collect();
    let mut stages: Vec<&str> = parsed.iter().map(|(_, s, _)| s.as_str()).collect();
    let n = stages.len();
    stages.dedup();
    assert_eq!(
        stages,
        ["parse", "convert", "build", "guard", "write"],
        "{lines:#?}"
    );
    // More lines than stage changes: the interval ticks while a stage runs.
    assert!(n > 5, "{lines:#?}");
    assert!(parsed.iter().all(|(m, _, _)| m == "logged"));
    let elapsed: Vec<f64> = parsed.iter().map(|(_, _, e)| *e).collect();
    assert!(elapsed.windows(2).all(|w| w[0] <= w[1]), "{elapsed:?}");
    // No line after the build: the reporter stops with it.
    let own = "model 'logged': engine build progress:";
    let before = log_matching(&server, own).len();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(log_matching(&server, own).len(), before);
    // A cache hit builds nothing and reports nothing.
    server.unload_model("logged").unwrap();
    server.clear_log();
    server.load_model("logged").unwrap();
    assert!(log_matching(&server, own).is_empty());
    assert_clean(&server);
}

#[test]
fn the_default_interval_is_at_most_30_seconds_and_a_bad_one_is_refused() {
    assert!(triton_rusttrt::backend::progress::DEFAULT_INTERVAL.as_secs() <= 30);
    let repo = Repo::new();
    repo.add(
        "m",
        &tiny_clip_dir(),
        Some(&fp16_config(
            "parameters { key: \"build_progress_interval_s\" value: { string_value: \"-1\" } }\n",
        )),
    );
    let e = server(&repo).load_model("m").unwrap_err().to_string();
    assert!(
        e.contains("build_progress_interval_s") && e.contains("'-1'"),
        "{e}"
    );
}

#[test]
fn rusttrt_build_progress_display_follows_the_stages() {
    let repo = Repo::new();
    repo.add("shown", &tiny_clip_dir(), Some(&fp16_config(FAST)));
    let server = server(&repo);
    let (r, stages) =
        rusttrt_host::cli::build::with_progress(&server, "shown", || server.load_model("shown"));
    r.expect("load");
    assert_eq!(stages, ["parse", "convert", "build", "guard", "write"]);
    assert_eq!(rusttrt_host::cli::build::stage_position("write"), 5);
    assert_clean(&server);
}

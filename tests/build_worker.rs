//! Where engine builds run: in the build worker (`rusttrt build-worker`) by default, in the
//! server's process when asked (`build-worker=in-process`) or when no worker is found (with a
//! warning). Crashes and hangs of a build are tested with the TensorRT double in
//! tests/tensorrt.rs, where a build can be made to crash.

mod common;

use common::*;
use rusttrt_host::{Server, ServerOptions};

fn fp16_config() -> String {
    tiny_clip_config().replace("string_value: \"FP32\"", "string_value: \"FP16\"")
}

fn serves(s: &Server) {
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    let c = &cases.cases[1];
    let (atol, rtol, _) = cases.fp16.unwrap();
    check_response(
        "FP16",
        &s.infer("tiny_clip", request("x", c)).unwrap(),
        c,
        atol,
        rtol,
    );
}

#[test]
fn the_default_build_runs_in_the_worker() {
    let repo = Repo::new();
    repo.add("tiny_clip", &tiny_clip_dir(), Some(&fp16_config()));
    let s = server(&repo);
    s.load_model("tiny_clip").unwrap();
    assert!(
        log_matching(&s, "[build worker ")
            .iter()
            .any(|l| l.contains("building a FP16 onnxruntime engine")),
        "{:#?}",
        s.log_lines()
    );
    serves(&s);
    assert_clean(&s);
}

#[test]
fn in_process_builds_when_asked() {
    let repo = Repo::new();
    repo.add("tiny_clip", &tiny_clip_dir(), Some(&fp16_config()));
    let s = server_with(&repo, &[("build-worker", "in-process")], |_| {});
    s.load_model("tiny_clip").unwrap();
    assert!(log_matching(&s, "[build worker ").is_empty());
    assert_eq!(log_matching(&s, "building a FP16").len(), 1);
    serves(&s);
    assert_clean(&s);
}

/// A backend installed without the `rusttrt` command beside it (or in <prefix>/bin) builds in
/// the server's process and says so.
#[test]
fn without_a_worker_the_build_runs_in_process_and_says_so() {
    let repo = Repo::new();
    repo.add("tiny_clip", &tiny_clip_dir(), Some(&fp16_config()));
    let install = tempfile::tempdir().unwrap();
    let backends = install.path().join("backends/rusttrt");
    std::fs::create_dir_all(&backends).unwrap();
    let lib = backends.join("libtriton_rusttrt.so");
    std::fs::copy(backend_lib(), &lib).unwrap();
    let mut opts = ServerOptions::new(&lib, repo.path());
    opts.backend_config = vec![
        (
            "onnxruntime-library".into(),
            ort_library().display().to_string(),
        ),
        (
            "cache-dir".into(),
            repo.path().join("cache").display().to_string(),
        ),
    ];
    let s = Server::new(opts).unwrap();
    s.load_model("tiny_clip").unwrap();
    let warned = log_matching(&s, "no build worker found");
    assert_eq!(warned.len(), 1, "{:#?}", s.log_lines());
    assert!(warned[0].contains("build-worker"), "{}", warned[0]);
    assert!(log_matching(&s, "[build worker ").is_empty());
    serves(&s);
    assert_clean(&s);
}

/// A build-worker path that cannot be started fails the load naming it.
#[test]
fn a_configured_worker_that_cannot_start_is_named() {
    let repo = Repo::new();
    repo.add("tiny_clip", &tiny_clip_dir(), Some(&fp16_config()));
    let s = server_with(&repo, &[("build-worker", "/nonexistent/rusttrt")], |_| {});
    let e = s.load_model("tiny_clip").unwrap_err().to_string();
    assert!(e.contains("/nonexistent/rusttrt"), "{e}");
    assert!(e.contains("tiny_clip"), "{e}");
    assert_clean(&s);
}

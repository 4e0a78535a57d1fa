//! The `rusttrt run` command against the mock backend.

use std::process::Command;

fn mock_lib() -> std::path::PathBuf {
    rusttrt_host::testing::find_or_build_cdylib("mock-backend", "triton_mockbackend")
}

fn repo() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("m/1")).unwrap();
    std::fs::write(
        d.path().join("m/config.pbtxt"),
        r#"backend: "mockbackend"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { }
instance_group [ { kind: KIND_CPU count: 2 } ]
"#,
    )
    .unwrap();
    d
}

fn run(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rusttrt"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_reports_outputs_throughput_and_stats() {
    let d = repo();
    let lib = mock_lib();
    let (ok, v, err) = run(&[
        "run",
        "--model-repository",
        d.path().to_str().unwrap(),
        "--model",
        "m",
        "--backend-lib",
        lib.to_str().unwrap(),
        "--batch",
        "2",
        "--requests",
        "6",
        "--concurrency",
        "3",
        "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(v["requests"], 6);
    assert_eq!(v["outputs"][0]["name"], "OUT");
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([2, 4]));
    assert!(v["infer_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["items_per_sec"].as_f64().unwrap() >= v["infer_per_sec"].as_f64().unwrap());
    assert_eq!(
        v["stats"]["model_stats"][0]["inference_stats"]["success"]["count"],
        6
    );
    assert_eq!(v["stats"]["model_stats"][0]["inference_count"], 12);
    assert_eq!(v["violations"], serde_json::json!([]));
}

#[test]
fn run_with_a_raw_input_file() {
    let d = repo();
    let vals: Vec<f32> = vec![1.5, -2.0, 3.25, 4.0];
    let f = d.path().join("in.bin");
    std::fs::write(
        &f,
        vals.iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let lib = mock_lib();
    let (ok, v, err) = run(&[
        "run",
        "--model-repository",
        d.path().to_str().unwrap(),
        "--model",
        "m",
        "--backend-lib",
        lib.to_str().unwrap(),
        "--input",
        f.to_str().unwrap(),
        "--requests",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        v["outputs"][0]["first"],
        serde_json::json!([1.5, -2.0, 3.25, 4.0])
    );
    assert_eq!(v["outputs"][0]["min"], -2.0);
    assert_eq!(v["outputs"][0]["max"], 4.0);
    // A file of the wrong size is rejected by Triton's normalization.
    std::fs::write(&f, [0u8; 12]).unwrap();
    let (ok, _, err) = run(&[
        "run",
        "--model-repository",
        d.path().to_str().unwrap(),
        "--model",
        "m",
        "--backend-lib",
        lib.to_str().unwrap(),
        "--input",
        f.to_str().unwrap(),
        "--requests",
        "1",
    ]);
    assert!(!ok);
    assert!(err.contains("byte size mismatch"), "{err}");
}

#[test]
fn inspect_prints_the_signature_and_the_auto_completed_config() {
    let model =
        rusttrt_host::testing::workspace_root().join("model_repository/tiny_clip/1/model.onnx");
    let (ok, out, err) = run(&["inspect", "--json", model.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out["inputs"][0]["name"], "input");
    assert_eq!(
        out["inputs"][0]["shape"],
        serde_json::json!([-1, 3, 32, 32])
    );
    assert_eq!(out["auto_complete_config"]["max_batch_size"], 4);
    assert_eq!(
        out["auto_complete_config"]["input"][0]["dims"],
        serde_json::json!([3, 32, 32])
    );
    let (ok, _, err) = run(&["inspect", "/nonexistent/model.onnx"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/model.onnx"), "{err}");
}

/// The build worker refuses a job from a backend of another release, with the error's code in
/// its exit status (10 + TRITONSERVER_ERROR_UNAVAILABLE) and the reason on stderr, in the log
/// form the backend forwards.
#[test]
fn build_worker_refuses_a_job_from_another_release() {
    let d = tempfile::tempdir().unwrap();
    let job = d.path().join("job.json");
    std::fs::write(
        &job,
        serde_json::json!({
            "backend_version": "0.0.0-other",
            "model_name": "m",
            "model_version": 1,
            "model_dir": d.path(),
            "model_path": d.path().join("1/model.onnx"),
            "model_digest": "0",
            "config": {},
            "backend_cmdline": {},
            "backend_dir": d.path(),
            "gpu": null,
            "engine": {"OnnxRuntime": "Cuda"}
        })
        .to_string(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rusttrt"))
        .arg("build-worker")
        .arg(&job)
        .arg(d.path().join("envelope"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(14), "{stderr}");
    assert!(
        stderr.starts_with("[ERROR] ") && stderr.contains("the backend is 0.0.0-other"),
        "{stderr}"
    );
    assert!(!d.path().join("envelope").exists());
}

/// `rusttrt bench` with several clients goes through the dynamic batcher as Triton's would and
/// reports the batch sizes it actually formed; every request's items are accounted for.
#[test]
fn bench_reports_the_batches_the_dynamic_batcher_formed() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("m/1")).unwrap();
    std::fs::write(
        d.path().join("m/config.pbtxt"),
        r#"backend: "mockbackend"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 200000 }
instance_group [ { kind: KIND_CPU count: 1 } ]
"#,
    )
    .unwrap();
    let json = d.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_rusttrt"))
        .args(["bench", "--model-repository"])
        .arg(d.path())
        .args([
            "--model",
            "m",
            "--batches",
            "1",
            "--iters",
            "16",
            "--warmup",
            "0",
        ])
        .args(["--concurrency", "4", "--backend-lib"])
        .arg(mock_lib())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("formed batches (size x executions):"),
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let formed = v["rows"][0]["formed_batches"].as_array().unwrap().clone();
    let items: u64 = formed
        .iter()
        .map(|f| f["batch_size"].as_u64().unwrap() * f["executions"].as_u64().unwrap())
        .sum();
    assert_eq!(
        items, 16,
        "every request's item is in a formed batch: {formed:?}"
    );
    assert!(
        formed.iter().any(|f| f["batch_size"].as_u64().unwrap() > 1),
        "4 clients with a 200 ms queue delay form batches larger than 1: {formed:?}"
    );
}

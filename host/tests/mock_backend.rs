//! The host against the mock backend: a well-behaved backend passes, and every rule
//! violation the mock can commit is caught.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rusttrt_host::{InferRequest, InputTensor, MemoryType, Server, ServerOptions};
use triton_abi::*;

fn mock_lib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        rusttrt_host::testing::find_or_build_cdylib("mock-backend", "triton_mockbackend")
    })
    .clone()
}

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        Repo {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn model(&self, name: &str, config: Option<&str>) -> &Self {
        let m = self.dir.path().join(name);
        std::fs::create_dir_all(m.join("1")).unwrap();
        if let Some(c) = config {
            std::fs::write(m.join("config.pbtxt"), c).unwrap();
        }
        self
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn server(&self) -> Server {
        Server::new(ServerOptions::new(mock_lib(), self.path())).unwrap()
    }
}

const BATCHING: &str = r#"
backend: "mockbackend"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"#;

fn req(id: &str, batch: i64, width: i64) -> InferRequest {
    let vals: Vec<f32> = (0..batch * width)
        .map(|v| v as f32 * 0.5 + id.len() as f32)
        .collect();
    InferRequest::new(id, vec![InputTensor::f32("IN", &[batch, width], &vals)])
}

fn executes(s: &Server) -> Vec<String> {
    s.log_lines()
        .into_iter()
        .filter(|l| l.msg.starts_with("mock: execute"))
        .map(|l| l.msg)
        .collect()
}

fn assert_clean(s: &Server) {
    assert!(
        s.violations().is_empty(),
        "violations: {:?}",
        s.violations()
    );
    assert_eq!(s.live_errors(), 0, "leaked TRITONSERVER_Error objects");
    assert!(
        s.live_backend_objects().is_empty(),
        "leaked: {:?}",
        s.live_backend_objects()
    );
}

#[test]
fn every_export_is_dynamic_and_covers_the_backend_imports() {
    let _s = Repo::new().server();
    let table = rusttrt_host::abi::exported_symbols();
    for (name, addr) in &table {
        let c = std::ffi::CString::new(*name).unwrap();
        // SAFETY: dlsym with a valid C string on the global scope.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
        assert!(
            !p.is_null(),
            "{name} is not exported dynamically (missing -rdynamic?)"
        );
        assert_eq!(
            p as usize, *addr as usize,
            "{name} resolves to another definition"
        );
    }
    let ffi =
        std::fs::read_to_string(rusttrt_host::testing::workspace_root().join("src/ffi/mod.rs"))
            .unwrap();
    for word in ffi.split(|c: char| !c.is_alphanumeric() && c != '_') {
        if (word.starts_with("TRITONSERVER_") || word.starts_with("TRITONBACKEND_"))
            && ffi.contains(&format!("pub fn {word}("))
        {
            assert!(
                table.iter().any(|(n, _)| *n == word),
                "backend imports {word} but the host lacks it"
            );
        }
    }
    // And everything the mock imports resolves (its load would fail otherwise).
    let repo = Repo::new();
    repo.model("m", Some(BATCHING));
    repo.server().load_model("m").unwrap();
}

#[test]
fn identity_stats_and_memory_types() {
    let repo = Repo::new();
    repo.model("m", Some(BATCHING));
    let s = repo.server();
    s.load_model("m").unwrap();
    for i in 0..3 {
        let mut r = req(&format!("r{i}"), 2, 3);
        r.inputs[0] = r.inputs[0].clone().split(8, MemoryType::CpuPinned);
        assert_eq!(r.inputs[0].chunks.len(), 3);
        let want: Vec<f32> = r.inputs[0]
            .chunks
            .iter()
            .flat_map(|c| c.bytes.clone())
            .collect::<Vec<u8>>()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        r.output_memory = if i == 0 {
            MemoryType::Gpu
        } else {
            MemoryType::CpuPinned
        };
        let resp = s.infer("m", r).unwrap();
        assert_eq!(resp.error, None);
        let out = resp.output("OUT").unwrap();
        assert_eq!(out.shape, vec![2, 3]);
        assert_eq!(out.datatype, TRITONSERVER_TYPE_FP32);
        assert_eq!(out.as_f32(), want);
        // No GPU: a GPU-preferring client gets CPU memory.
        assert_eq!(
            out.memory,
            if i == 0 {
                MemoryType::Cpu
            } else {
                MemoryType::CpuPinned
            }
        );
    }
    let st = s.model_stats("m").unwrap();
    let m = &st["model_stats"][0];
    assert_eq!(m["name"], "m");
    assert_eq!(m["version"], "1");
    assert_eq!(m["inference_count"], 6);
    assert_eq!(m["execution_count"], 3);
    assert_eq!(m["inference_stats"]["success"]["count"], 3);
    assert_eq!(m["inference_stats"]["fail"]["count"], 0);
    assert_eq!(m["inference_stats"]["queue"]["count"], 3);
    assert!(m["inference_stats"]["success"]["ns"].as_u64().unwrap() > 0);
    assert_eq!(m["batch_stats"][0]["batch_size"], 2);
    assert_eq!(m["batch_stats"][0]["compute_infer"]["count"], 3);
    assert!(m["last_inference"].as_u64().unwrap() > 1_600_000_000_000);
    assert_clean(&s);
}

#[test]
fn invalid_requests_never_reach_the_backend() {
    let repo = Repo::new();
    repo.model("m", Some(BATCHING));
    let s = repo.server();
    s.load_model("m").unwrap();
    let bad = [
        req("too_big", 9, 2),
        InferRequest::new("rank", vec![InputTensor::f32("IN", &[4], &[0.0; 4])]),
        InferRequest::new(
            "dtype",
            vec![InputTensor::new(
                "IN",
                TRITONSERVER_TYPE_INT32,
                &[1, 1],
                vec![0; 4],
            )],
        ),
        InferRequest::new("bytes", vec![InputTensor::f32("IN", &[1, 2], &[0.0; 3])]),
        InferRequest::new("unknown", vec![InputTensor::f32("X", &[1, 1], &[0.0])]),
        InferRequest::new("missing", vec![]),
        InferRequest {
            outputs: Some(vec!["NOPE".into()]),
            ..req("out", 1, 1)
        },
    ];
    for r in bad {
        let id = r.id.clone();
        let e = s.infer("m", r).unwrap_err();
        assert_eq!(e.code, TRITONSERVER_ERROR_INVALID_ARG, "{id}: {e}");
    }
    assert!(executes(&s).is_empty());
    // The unchecked path does deliver them (for testing a backend's own defences).
    let r = s
        .submit_unchecked(
            "m",
            InferRequest::new("x", vec![InputTensor::f32("IN", &[1, 2], &[0.0; 3])]),
        )
        .unwrap()
        .wait();
    assert!(r.is_err() || r.unwrap().error.is_none());
    assert_eq!(executes(&s).len(), 1);
}

#[test]
fn dynamic_batcher_forms_preferred_batches() {
    let repo = Repo::new();
    repo.model("m", Some(&format!(
        "{BATCHING}\ndynamic_batching {{ preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 2000000 }}")));
    let s = repo.server();
    s.load_model("m").unwrap();
    assert_eq!(
        s.model_config("m").unwrap()["dynamic_batching"]["preferred_batch_size"],
        serde_json::json!([4])
    );
    let t = Instant::now();
    let hs: Vec<_> = (0..4)
        .map(|i| s.submit("m", req(&format!("r{i}"), 1, 3)).unwrap())
        .collect();
    for h in hs {
        assert_eq!(h.wait().unwrap().output("OUT").unwrap().shape, vec![1, 3]);
    }
    // Reaching the preferred size dispatches at once, long before the 2 s delay.
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        executes(&s),
        vec!["mock: execute m_0_0 requests=4".to_string()]
    );
    let st = s.model_stats("m").unwrap();
    assert_eq!(st["model_stats"][0]["execution_count"], 1);
    assert_eq!(st["model_stats"][0]["inference_count"], 4);
    assert_eq!(st["model_stats"][0]["batch_stats"][0]["batch_size"], 4);
    // Different non-batch shapes are never batched together.
    let a = s.submit("m", req("a", 2, 3)).unwrap();
    let b = s.submit("m", req("b", 2, 5)).unwrap();
    assert_eq!(a.wait().unwrap().output("OUT").unwrap().shape, vec![2, 3]);
    assert_eq!(b.wait().unwrap().output("OUT").unwrap().shape, vec![2, 5]);
    assert_eq!(executes(&s).len(), 3);
    assert_clean(&s);
}

#[test]
fn dynamic_batcher_waits_for_the_queue_delay() {
    let repo = Repo::new();
    repo.model("m", Some(&format!(
        "{BATCHING}\ndynamic_batching {{ preferred_batch_size: [ 8 ] max_queue_delay_microseconds: 300000 }}")));
    let s = repo.server();
    s.load_model("m").unwrap();
    let t = Instant::now();
    let a = s.submit("m", req("a", 1, 2)).unwrap();
    let b = s.submit("m", req("b", 2, 2)).unwrap();
    a.wait().unwrap();
    b.wait().unwrap();
    let el = t.elapsed();
    assert!(
        el >= Duration::from_millis(280),
        "dispatched before the delay: {el:?}"
    );
    assert_eq!(
        executes(&s),
        vec!["mock: execute m_0_0 requests=2".to_string()]
    );
    assert_eq!(
        s.model_stats("m").unwrap()["model_stats"][0]["batch_stats"][0]["batch_size"],
        3
    );
    assert_clean(&s);
}

#[test]
fn requests_spread_over_instances() {
    let repo = Repo::new();
    repo.model("m", Some(&BATCHING.replace("count: 1", "count: 3").replace(
        "instance_group", "parameters { key: \"exec_delay_ms\" value: { string_value: \"300\" } }\ninstance_group")));
    let s = repo.server();
    s.load_model("m").unwrap();
    let names: Vec<String> = s
        .model_instances("m")
        .unwrap()
        .into_iter()
        .map(|i| i.0)
        .collect();
    assert_eq!(names, vec!["m_0_0", "m_0_1", "m_0_2"]);
    let t = Instant::now();
    let hs: Vec<_> = (0..3)
        .map(|i| s.submit("m", req(&format!("r{i}"), 1, 2)).unwrap())
        .collect();
    for h in hs {
        h.wait().unwrap();
    }
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "not concurrent: {:?}",
        t.elapsed()
    );
    let mut ex = executes(&s);
    ex.sort();
    assert_eq!(
        ex,
        vec![
            "mock: execute m_0_0 requests=1",
            "mock: execute m_0_1 requests=1",
            "mock: execute m_0_2 requests=1"
        ]
    );
    assert_clean(&s);
}

fn events(s: &Server) -> Vec<String> {
    s.log_lines()
        .into_iter()
        .filter(|l| {
            l.msg.starts_with("mock: ")
                && !l.msg.starts_with("mock: execute")
                && !l.msg.starts_with("mock: initialize")
        })
        .map(|l| l.msg[6..].to_string())
        .collect()
}

#[test]
fn load_unload_reload_lifecycle() {
    let repo = Repo::new();
    repo.model("m", Some(BATCHING));
    let s = repo.server();
    s.load_model("m").unwrap();
    s.load_model("m").unwrap();
    assert_eq!(
        events(&s),
        vec![
            "model_initialize \"m\"",
            "instance_initialize m_0_0",
            "model_initialize \"m\"",
            "instance_initialize m_0_0",
            "instance_finalize m_0_0",
            "model_finalize",
        ]
    );
    s.infer("m", req("x", 1, 1)).unwrap();
    s.unload_model("m").unwrap();
    assert!(s.infer("m", req("x", 1, 1)).is_err());
    assert!(s.unload_model("m").is_err());
    assert_eq!(events(&s).len(), 8);
    assert_clean(&s);
    drop(s);
}

#[test]
fn failed_instance_init_finalizes_everything() {
    let repo = Repo::new();
    repo.model("m", Some(&BATCHING.replace("count: 1", "count: 3").replace(
        "instance_group", "parameters { key: \"fail_instance\" value: { string_value: \"m_0_1\" } }\ninstance_group")));
    let s = Server::new(ServerOptions::new(mock_lib(), repo.path())).unwrap();
    let e = s.load_model("m").unwrap_err();
    assert!(e.msg.contains("refuses to start"), "{e}");
    let ev = events(&s);
    let inits: Vec<_> = ev
        .iter()
        .filter(|e| e.starts_with("instance_initialize"))
        .collect();
    let finis: Vec<_> = ev
        .iter()
        .filter(|e| e.starts_with("instance_finalize"))
        .collect();
    assert_eq!(inits.len(), finis.len(), "{ev:?}");
    assert!(
        finis.iter().any(|f| f.ends_with("m_0_1")),
        "the failed instance is finalized too: {ev:?}"
    );
    assert_eq!(ev.last().unwrap(), "model_finalize");
    assert_clean(&s);
}

#[test]
fn missing_config_is_auto_completed() {
    let repo = Repo::new();
    repo.model("auto", None);
    let s = repo.server();
    s.load_model("auto").unwrap();
    let c = s.model_config("auto").unwrap();
    assert_eq!(c["name"], "auto");
    assert_eq!(c["backend"], "mockbackend");
    assert_eq!(c["max_batch_size"], 4);
    assert_eq!(c["input"][0]["dims"], serde_json::json!([-1]));
    assert_eq!(
        c["dynamic_batching"]["preferred_batch_size"],
        serde_json::json!([4])
    );
    assert_eq!(c["instance_group"][0]["kind"], "KIND_CPU");
    // From the backend's preferred group, named after the model (as Triton does).
    assert_eq!(c["instance_group"][0]["name"], "auto");
    assert_eq!(c["instance_group"][0]["count"], 1);
    assert_eq!(c["optimization"]["input_pinned_memory"]["enable"], true);
    assert_eq!(c["version_policy"]["latest"]["num_versions"], 1);
    s.infer("auto", req("x", 4, 2)).unwrap();
    assert_clean(&s);

    let mut o = ServerOptions::new(mock_lib(), repo.path());
    o.auto_complete_config = false;
    let strict = Server::new(o).unwrap();
    assert!(strict.load_model("auto").is_err());
}

#[test]
fn set_config_is_strict() {
    let repo = Repo::new();
    let with = |p: &str| {
        format!("{BATCHING}\ndynamic_batching {{}}\nparameters {{ key: \"set_config\" value: {{ string_value: \"{p}\" }} }}")
    };
    repo.model("unknown", Some(&with("unknown_field")));
    repo.model("drop", Some(&with("drop_scheduler")));
    let s = repo.server();
    let e = s.load_model("unknown").unwrap_err();
    assert!(e.msg.contains("no_such_field"), "{e}");
    let e = s.load_model("drop").unwrap_err();
    assert_eq!(e.code, TRITONSERVER_ERROR_INTERNAL, "{e}");
    assert!(e.msg.contains("scheduler"), "{e}");
    assert_clean(&s);
}

#[test]
fn clean_error_return_gets_error_responses() {
    let repo = Repo::new();
    repo.model("m", Some(&format!("{BATCHING}\nparameters {{ key: \"misbehave\" value: {{ string_value: \"return_error\" }} }}")));
    let s = repo.server();
    s.load_model("m").unwrap();
    let r = s.infer("m", req("x", 1, 2)).unwrap();
    assert_eq!(
        r.error,
        Some((
            TRITONSERVER_ERROR_UNAVAILABLE,
            "mock refuses this batch".to_string()
        ))
    );
    assert!(r.outputs.is_empty());
    assert_eq!(
        s.model_stats("m").unwrap()["model_stats"][0]["inference_stats"]["fail"]["count"],
        1
    );
    assert_clean(&s);
}

fn misbehaving(kind: &str) -> (Server, Repo) {
    let repo = Repo::new();
    repo.model(
        "m",
        Some(&format!(
            "{BATCHING}\nparameters {{ key: \"misbehave\" value: {{ string_value: \"{kind}\" }} }}"
        )),
    );
    let s = repo.server();
    (s, repo)
}

#[test]
fn violations_are_caught() {
    let cases = [
        ("no_response", "got no response"),
        ("no_release", "was not released"),
        ("two_responses", "exactly one"),
        ("double_release", "used after it was released"),
        (
            "stats_after_release",
            "ReportStatistics: TRITONBACKEND_Request handle used after it was released",
        ),
        ("error_after_release", "must not be touched"),
        (
            "set_config_in_execute",
            "only legal inside TRITONBACKEND_ModelInitialize",
        ),
        ("wrong_output_size", "needs 8 bytes but 9"),
        ("not_final", "COMPLETE_FINAL"),
        ("wrong_clock", "CLOCK_MONOTONIC"),
        ("unrequested_output", "not an output"),
        ("error_with_outputs", "must carry no outputs"),
    ];
    for (kind, want) in cases {
        let (s, _repo) = misbehaving(kind);
        s.load_model("m").unwrap();
        let r = s.infer("m", req("x", 1, 2));
        let v = s.violations();
        assert!(
            v.iter().any(|x| x.contains(want)),
            "{kind}: expected '{want}' in {v:?}"
        );
        let e = r.expect_err(kind);
        assert!(e.msg.contains("violation"), "{kind}: {e}");
    }
}

#[test]
fn borrowed_message_delete_is_caught() {
    let (s, _repo) = misbehaving("delete_backend_config");
    s.load_model("m").unwrap();
    assert!(
        s.violations()
            .iter()
            .any(|v| v.contains("owned by the server")),
        "{:?}",
        s.violations()
    );
}

#[test]
fn leaked_errors_are_counted() {
    let (s, _repo) = misbehaving("leak_errors");
    s.load_model("m").unwrap();
    s.infer("m", req("x", 1, 2)).unwrap();
    s.infer("m", req("y", 1, 2)).unwrap();
    assert_eq!(s.live_errors(), 2);
    assert_eq!(s.live_backend_objects().get("TRITONSERVER_Error"), Some(&2));
    assert!(s.violations().is_empty());
    let (s, _repo) = misbehaving("leak_message");
    s.load_model("m").unwrap();
    s.infer("m", req("x", 1, 2)).unwrap();
    assert_eq!(
        s.live_backend_objects().get("TRITONSERVER_Message"),
        Some(&1)
    );
    assert_eq!(s.live_errors(), 0);
}

#[test]
fn warmup_runs_before_ready_and_is_not_counted() {
    let repo = Repo::new();
    repo.model("m", Some(&format!("{BATCHING}\nmodel_warmup [ {{ name: \"w\" batch_size: 2 count: 2 inputs {{ key: \"IN\" value: {{ data_type: TYPE_FP32 dims: [ 3 ] random_data: true }} }} }} ]")));
    let s = repo.server();
    s.load_model("m").unwrap();
    assert_eq!(
        executes(&s),
        vec!["mock: execute m_0_0 requests=2".to_string(); 2]
    );
    let st = s.model_stats("m").unwrap();
    assert_eq!(st["model_stats"][0]["inference_count"], 0);
    assert_eq!(st["model_stats"][0]["execution_count"], 0);
    assert_clean(&s);
}

#[test]
fn memory_manager_rules() {
    let with = |how: &str| {
        let repo = Repo::new();
        repo.model("m", Some(&format!(
            "{BATCHING}\nparameters {{ key: \"memory_manager\" value: {{ string_value: \"{how}\" }} }}")));
        let s = repo.server();
        s.load_model("m").unwrap();
        let r = s.infer("m", req("x", 1, 2));
        (s, r, repo)
    };
    let (s, r, _repo) = with("ok");
    r.unwrap();
    assert_clean(&s);
    assert_eq!(s.outstanding_allocations(), 0);
    let (s, r, _repo) = with("gpu");
    r.unwrap();
    assert!(s
        .log_lines()
        .iter()
        .any(|l| l.msg.contains("memory manager") && l.msg.contains("no GPU")));
    assert_clean(&s);
    let (s, r, _repo) = with("mismatch");
    assert!(r.is_err());
    assert!(
        s.violations()
            .iter()
            .any(|v| v.contains("allocated as CPU:0 but freed as CPU_PINNED:0")),
        "{:?}",
        s.violations()
    );
    assert_eq!(s.outstanding_allocations(), 1);
}

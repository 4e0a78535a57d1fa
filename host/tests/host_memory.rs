//! The host holds no more memory after 250k requests than after 1k (issue 9, item 8): its
//! handle registry (dead handles were remembered by the million, each keeping its request's
//! allocation alive, about 1 kB per request) and its captured log stay bounded. Its own test
//! binary: the handle registry is process-wide.

use rusttrt_host::{InferRequest, InputTensor, Server, ServerOptions};

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[test]
fn memory_after_250k_requests_is_memory_after_1k() {
    let lib = rusttrt_host::testing::find_or_build_cdylib("mock-backend", "triton_mockbackend");
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir_all(m.join("1")).unwrap();
    std::fs::write(
        m.join("config.pbtxt"),
        r#"
backend: "mockbackend"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"#,
    )
    .unwrap();
    let server = Server::new(ServerOptions::new(lib, dir.path())).unwrap();
    server.load_model("m").unwrap();
    let mut done = 0u32;
    let mut run_until = |n: u32| {
        while done < n {
            let r = server
                .infer(
                    "m",
                    InferRequest::new("r", vec![InputTensor::f32("IN", &[1, 4], &[1.0; 4])]),
                )
                .unwrap();
            assert!(r.error.is_none(), "{:?}", r.error);
            done += 1;
        }
    };
    run_until(1_000);
    let (live_1k, dead_1k) = Server::handle_registry_counts();
    let rss_1k = rss_kb();
    run_until(250_000);
    let (live_250k, dead_250k) = Server::handle_registry_counts();
    let rss_250k = rss_kb();
    let logs = server.log_lines().len();
    eprintln!(
        "after 1k requests: RSS {rss_1k} kB, handles live {live_1k} dead {dead_1k}; \
         after 250k: RSS {rss_250k} kB, handles live {live_250k} dead {dead_250k}; {logs} log lines kept"
    );
    assert_eq!(live_250k, live_1k, "live handles grew");
    assert!(dead_250k <= 4096, "dead handles remembered: {dead_250k}");
    assert!(logs <= 8192, "captured log lines: {logs}");
    // Before: about 1 kB per request (250 MB here). Now the registry and the log are full after
    // a few thousand requests; what is left is allocator noise.
    assert!(
        rss_250k < rss_1k + 8 * 1024,
        "RSS grew from {rss_1k} kB to {rss_250k} kB"
    );
    assert!(server.violations().is_empty(), "{:?}", server.violations());
}

//! The backend through the host: lifecycle, auto-complete, batched execution against
//! independently computed outputs, malformed requests, bad models, data types, concurrency.

mod common;

use common::*;
use rusttrt_host::{Chunk, InferRequest, InputTensor, MemoryType};
use serde_json::json;
use triton_abi::*;

const BATCH_CONFIG: &str = r#"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [ { kind: KIND_CPU count: 1 } ]
"#;

#[test]
fn load_infer_unload_reload() {
    let repo = Repo::new();
    repo.add("tiny_clip", &tiny_clip_dir(), Some(&tiny_clip_config()));
    let server = server(&repo);
    server.load_model("tiny_clip").expect("load");
    let cfg = server.model_config("tiny_clip").unwrap();
    assert_eq!(cfg["max_batch_size"], json!(32));
    assert_eq!(server.model_instances("tiny_clip").unwrap().len(), 2);

    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    let case = &cases.cases[0];
    let resp = server.infer("tiny_clip", request("a", case)).unwrap();
    check_response("first load", &resp, case, cases.atol, cases.rtol);

    // Reload with another instance count: a fresh TRITONBACKEND_Model, still correct.
    let cfg_text = tiny_clip_config().replace("count: 2", "count: 1");
    std::fs::write(repo.path().join("tiny_clip/config.pbtxt"), cfg_text).unwrap();
    server.load_model("tiny_clip").expect("reload");
    assert_eq!(server.model_instances("tiny_clip").unwrap().len(), 1);
    let resp = server.infer("tiny_clip", request("b", case)).unwrap();
    check_response("after reload", &resp, case, cases.atol, cases.rtol);

    server.unload_model("tiny_clip").unwrap();
    assert!(
        server.infer("tiny_clip", request("c", case)).is_err(),
        "unloaded model still answers"
    );
    server.load_model("tiny_clip").expect("load after unload");
    let resp = server.infer("tiny_clip", request("d", case)).unwrap();
    check_response("after unload + load", &resp, case, cases.atol, cases.rtol);
    assert_clean(&server);
}

#[test]
fn auto_complete_fills_io_batching_and_batcher() {
    let repo = Repo::new();
    repo.add(
        "m",
        &tiny_clip_dir(),
        Some("backend: \"rusttrt\"\ninstance_group [ { kind: KIND_CPU } ]\n"),
    );
    let server = server(&repo);
    server.load_model("m").expect("load with auto-complete");
    let cfg = server.model_config("m").unwrap();
    assert_eq!(cfg["max_batch_size"], json!(4), "default-max-batch-size");
    assert_eq!(cfg["input"][0]["name"], "input");
    assert_eq!(cfg["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(cfg["input"][0]["dims"], json!([3, 32, 32]));
    assert_eq!(cfg["output"][0]["name"], "embedding");
    assert_eq!(cfg["output"][0]["dims"], json!([32]));
    assert!(
        cfg["dynamic_batching"].is_object(),
        "dynamic_batching added: {cfg}"
    );
    assert!(log_matching(&server, "auto-completed").len() == 1);

    // No config.pbtxt at all.
    repo.add("bare", &tiny_clip_dir(), None);
    let server2 = server_with(&repo, &[], |_| {});
    server2
        .load_model("bare")
        .expect("load without config.pbtxt");
    assert_eq!(
        server2.model_config("bare").unwrap()["input"][0]["name"],
        "input"
    );

    // Non-batching model: full dims, max_batch_size stays 0, no batcher.
    repo.add(
        "nb",
        &test_model("no_batch"),
        Some("backend: \"rusttrt\"\ninstance_group [ { kind: KIND_CPU } ]\n"),
    );
    server2.load_model("nb").expect("no_batch");
    let cfg = server2.model_config("nb").unwrap();
    assert_eq!(cfg["max_batch_size"], json!(0));
    assert_eq!(cfg["input"][0]["dims"], json!([2, 3]));
    assert!(cfg.get("dynamic_batching").is_none());
    assert_clean(&server);
    assert_clean(&server2);
}

#[test]
fn disabled_auto_complete_needs_a_full_config() {
    let repo = Repo::new();
    repo.add(
        "m",
        &tiny_clip_dir(),
        Some("backend: \"rusttrt\"\nmax_batch_size: 4\ninstance_group [ { kind: KIND_CPU } ]\n"),
    );
    let server = server_with(&repo, &[], |o| o.auto_complete_config = false);
    let e = server.load_model("m").unwrap_err().to_string();
    assert!(e.contains("no inputs"), "{e}");
    assert_clean(&server);
}

#[test]
fn config_mismatches_fail_the_load_naming_the_tensor() {
    let repo = Repo::new();
    let cfg = tiny_clip_config().replace("name: \"tiny_clip\"\n", "");
    let wrong_type = cfg.replace(
        "data_type: TYPE_FP32\n    dims: [ 3, 32, 32 ]",
        "data_type: TYPE_FP16\n    dims: [ 3, 32, 32 ]",
    );
    repo.add("t", &tiny_clip_dir(), Some(&wrong_type));
    let wrong_dims = cfg.replace("dims: [ 3, 32, 32 ]", "dims: [ 3, 64, 64 ]");
    repo.add("d", &tiny_clip_dir(), Some(&wrong_dims));
    let wrong_name = cfg.replace("name: \"embedding\"", "name: \"features\"");
    repo.add("n", &tiny_clip_dir(), Some(&wrong_name));
    let server = server(&repo);
    let e = server.load_model("t").unwrap_err().to_string();
    assert!(
        e.contains("input 'input'") && e.contains("TYPE_FP16") && e.contains("TYPE_FP32"),
        "{e}"
    );
    let e = server.load_model("d").unwrap_err().to_string();
    assert!(
        e.contains("input 'input'") && e.contains("[3,64,64]") && e.contains("[-1,3,32,32]"),
        "{e}"
    );
    let e = server.load_model("n").unwrap_err().to_string();
    assert!(e.contains("'features'") && e.contains("embedding"), "{e}");
    assert_clean(&server);
}

#[test]
fn requests_of_different_batch_sizes_are_batched_and_scattered_correctly() {
    let repo = Repo::new();
    let cfg = tiny_clip_config()
        .replace(
            "max_queue_delay_microseconds: 2000",
            "max_queue_delay_microseconds: 50000",
        )
        .replace("count: 2", "count: 1")
        .replace(
            "preferred_batch_size: [ 4, 8 ]",
            "preferred_batch_size: [ 12 ]",
        );
    repo.add("tiny_clip", &tiny_clip_dir(), Some(&cfg));
    let server = server(&repo);
    server.load_model("tiny_clip").unwrap();
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    // Batch 1 + 3 + 8 = 12 = the preferred size: one Execute, three requests.
    let handles: Vec<_> = cases
        .cases
        .iter()
        .map(|c| server.submit("tiny_clip", request(&c.name, c)).unwrap())
        .collect();
    for (h, c) in handles.into_iter().zip(&cases.cases) {
        let resp = h.wait().unwrap();
        check_response(&c.name, &resp, c, cases.atol, cases.rtol);
    }
    let stats = server.model_stats("tiny_clip").unwrap();
    let s = &stats["model_stats"][0];
    assert_eq!(s["inference_count"], json!(12));
    assert_eq!(
        s["execution_count"],
        json!(1),
        "the three requests ran as one batch: {s}"
    );
    assert_eq!(s["inference_stats"]["success"]["count"], json!(3));
    assert_eq!(s["batch_stats"][0]["batch_size"], json!(12));
    assert_clean(&server);
}

#[test]
fn inputs_split_into_many_chunks_and_pinned_memory_are_gathered() {
    let repo = Repo::new();
    repo.add("tiny_clip", &tiny_clip_dir(), Some(&tiny_clip_config()));
    let server = server(&repo);
    server.load_model("tiny_clip").unwrap();
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    let c = &cases.cases[1];
    for (chunk, mem, out_mem) in [
        (1000, MemoryType::Cpu, MemoryType::Cpu),
        (4096, MemoryType::CpuPinned, MemoryType::CpuPinned),
        (333, MemoryType::CpuPinned, MemoryType::Cpu),
    ] {
        let mut req = InferRequest::new(
            "chunked",
            c.inputs
                .iter()
                .map(|t| t.input().split(chunk, mem))
                .collect(),
        );
        req.output_memory = out_mem;
        let resp = server.infer("tiny_clip", req).unwrap();
        check_response(
            &format!("chunks of {chunk} in {mem:?}"),
            &resp,
            c,
            cases.atol,
            cases.rtol,
        );
        assert_eq!(resp.outputs[0].memory, out_mem);
    }
    assert_clean(&server);
}

fn bad(server: &rusttrt_host::Server, req: InferRequest, needles: &[&str]) {
    let resp = server.submit_unchecked("m", req).unwrap().wait().unwrap();
    let (code, msg) = resp
        .error
        .clone()
        .unwrap_or_else(|| panic!("expected an error for {needles:?}"));
    assert_eq!(code, TRITONSERVER_ERROR_INVALID_ARG, "{msg}");
    for n in needles {
        assert!(msg.contains(n), "'{msg}' should mention '{n}'");
    }
    assert!(resp.outputs.is_empty());
}

#[test]
fn malformed_requests_get_their_own_invalid_arg_and_the_batch_is_served() {
    let repo = Repo::new();
    let cfg = format!("backend: \"rusttrt\"\n{BATCH_CONFIG}");
    repo.add("m", &test_model("multi_io"), Some(&cfg));
    let server = server(&repo);
    server.load_model("m").unwrap();
    let cases = cases(&test_model("multi_io").join("cases.json"));
    let good = &cases.cases[0];
    let a = |shape: &[i64]| {
        InputTensor::f32(
            "A",
            shape,
            &vec![1.0; shape.iter().product::<i64>() as usize],
        )
    };
    let b = |shape: &[i64]| {
        InputTensor::new(
            "B",
            TRITONSERVER_TYPE_INT64,
            shape,
            vec![0; 8 * shape.iter().product::<i64>() as usize],
        )
    };

    // Each bad request is sent together with a good one, so they can share an Execute call.
    let with_good = |bad_req: InferRequest, needles: &[&str]| {
        let g = server.submit("m", request("good", good)).unwrap();
        bad(&server, bad_req, needles);
        check_response(
            "good request next to a bad one",
            &g.wait().unwrap(),
            good,
            cases.atol,
            cases.rtol,
        );
    };
    with_good(
        InferRequest::new(
            "dtype",
            vec![
                InputTensor::new("A", TRITONSERVER_TYPE_FP64, &[1, 4], vec![0; 32]),
                b(&[1, 2]),
            ],
        ),
        &["'A'", "FP64", "FP32"],
    );
    with_good(
        InferRequest::new("shape", vec![a(&[1, 5]), b(&[1, 2])]),
        &["'A'", "[1,5]"],
    );
    let mut short = a(&[1, 4]);
    short.chunks = vec![Chunk {
        bytes: vec![0; 12],
        memory: MemoryType::Cpu,
    }];
    with_good(
        InferRequest::new("bytes", vec![short, b(&[1, 2])]),
        &["'A'", "12", "16"],
    );
    with_good(
        InferRequest::new("missing", vec![a(&[1, 4])]),
        &["'B'", "missing"],
    );
    with_good(
        InferRequest::new(
            "unknown",
            vec![
                a(&[1, 4]),
                b(&[1, 2]),
                InputTensor::f32("C", &[1, 1], &[0.0]),
            ],
        ),
        &["'C'"],
    );
    with_good(
        InferRequest::new("too big", vec![a(&[9, 4]), b(&[9, 2])]),
        &["batch size 9", "max_batch_size 8"],
    );
    with_good(
        InferRequest::new("batch mismatch", vec![a(&[2, 4]), b(&[1, 2])]),
        &["'B'", "batch size 1"],
    );
    let mut unknown_out = request("unknown output", good);
    unknown_out.outputs = Some(vec!["NOPE".into()]);
    with_good(unknown_out, &["'NOPE'"]);

    // Through the normal (normalizing) path the host rejects them as Triton would.
    assert!(server
        .infer("m", InferRequest::new("x", vec![a(&[1, 5]), b(&[1, 2])]))
        .is_err());
    assert_clean(&server);
}

#[test]
fn only_requested_outputs_are_returned() {
    let repo = Repo::new();
    repo.add(
        "m",
        &test_model("multi_io"),
        Some(&format!("backend: \"rusttrt\"\n{BATCH_CONFIG}")),
    );
    let server = server(&repo);
    server.load_model("m").unwrap();
    let cases = cases(&test_model("multi_io").join("cases.json"));
    let c = &cases.cases[0];
    let mut req = request("one", c);
    req.outputs = Some(vec!["CAST".into()]);
    let resp = server.infer("m", req).unwrap();
    assert_eq!(resp.outputs.len(), 1);
    assert_eq!(resp.outputs[0].name, "CAST");
    let all = server.infer("m", request("all", c)).unwrap();
    check_response("all outputs", &all, c, cases.atol, cases.rtol);
    assert_eq!(all.outputs.len(), 3);
    assert_clean(&server);
}

#[test]
fn bad_models_fail_the_load_clearly_and_string_models_load() {
    let repo = Repo::new();
    repo.add(
        "corrupt",
        &test_model("corrupt"),
        Some("backend: \"rusttrt\"\nmax_batch_size: 0\ninstance_group [ { kind: KIND_CPU } ]\n"),
    );
    std::fs::create_dir_all(repo.path().join("missing/1")).unwrap();
    std::fs::write(
        repo.path().join("missing/config.pbtxt"),
        "backend: \"rusttrt\"\n",
    )
    .unwrap();
    repo.add(
        "strings",
        &test_model("string_input"),
        Some("backend: \"rusttrt\"\ninstance_group [ { kind: KIND_CPU } ]\n"),
    );
    let server = server(&repo);
    let e = server.load_model("corrupt").unwrap_err().to_string();
    assert!(
        e.contains("corrupt") && e.contains("model.onnx") && e.contains("not an ONNX model"),
        "{e}"
    );
    let e = server.load_model("missing").unwrap_err().to_string();
    assert!(
        e.contains("model file not found") && e.contains("missing/1/model.onnx"),
        "{e}"
    );
    // STRING tensors are served (ONNX Runtime), as by Triton's onnxruntime_backend.
    server.load_model("strings").expect("a STRING model loads");
    let elems: [&[u8]; 4] = [b"a", b"", b"\0b", b"\xffc"];
    let data: Vec<u8> = elems
        .iter()
        .flat_map(|e| [&(e.len() as u32).to_le_bytes()[..], e].concat())
        .collect();
    let resp = server
        .infer(
            "strings",
            InferRequest::new(
                "s",
                vec![InputTensor::new(
                    "IN",
                    TRITONSERVER_TYPE_BYTES,
                    &[1, 4],
                    data.clone(),
                )],
            ),
        )
        .unwrap();
    let out = resp.output("OUT").expect("OUT");
    assert_eq!(
        (out.datatype, out.shape.clone(), out.bytes.clone()),
        (TRITONSERVER_TYPE_BYTES, vec![1, 4], data)
    );
    assert_clean(&server);
}

#[test]
fn default_model_filename_and_external_data() {
    let repo = Repo::new();
    let dir = repo.add(
        "ext",
        &test_model("external_data"),
        Some(&format!("backend: \"rusttrt\"\n{BATCH_CONFIG}")),
    );
    let server = server(&repo);
    server.load_model("ext").expect("external data model");
    let cases = cases(&test_model("external_data").join("cases.json"));
    for c in &cases.cases {
        let resp = server.infer("ext", request(&c.name, c)).unwrap();
        check_response(&c.name, &resp, c, cases.atol, cases.rtol);
    }
    // The same model under another file name.
    std::fs::rename(dir.join("1/model.onnx"), dir.join("1/encoder.onnx")).unwrap();
    assert!(server
        .load_model("ext")
        .unwrap_err()
        .to_string()
        .contains("model file not found"));
    std::fs::write(
        dir.join("config.pbtxt"),
        format!("backend: \"rusttrt\"\ndefault_model_filename: \"encoder.onnx\"\n{BATCH_CONFIG}"),
    )
    .unwrap();
    server.load_model("ext").expect("default_model_filename");
    let c = &cases.cases[0];
    check_response(
        "renamed",
        &server.infer("ext", request("r", c)).unwrap(),
        c,
        cases.atol,
        cases.rtol,
    );
    assert_clean(&server);
}

#[test]
fn every_data_type_round_trips() {
    let repo = Repo::new();
    let types = [
        ("bool", TRITONSERVER_TYPE_BOOL),
        ("uint8", TRITONSERVER_TYPE_UINT8),
        ("uint16", TRITONSERVER_TYPE_UINT16),
        ("uint32", TRITONSERVER_TYPE_UINT32),
        ("uint64", TRITONSERVER_TYPE_UINT64),
        ("int8", TRITONSERVER_TYPE_INT8),
        ("int16", TRITONSERVER_TYPE_INT16),
        ("int32", TRITONSERVER_TYPE_INT32),
        ("int64", TRITONSERVER_TYPE_INT64),
        ("fp16", TRITONSERVER_TYPE_FP16),
        ("bf16", TRITONSERVER_TYPE_BF16),
        ("fp32", TRITONSERVER_TYPE_FP32),
        ("fp64", TRITONSERVER_TYPE_FP64),
    ];
    for (t, _) in &types {
        repo.add(
            &format!("dtype_{t}"),
            &test_model(&format!("dtype_{t}")),
            Some(&format!("backend: \"rusttrt\"\n{BATCH_CONFIG}")),
        );
    }
    let server = server(&repo);
    for (t, dt) in types {
        let name = format!("dtype_{t}");
        server
            .load_model(&name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let cfg = server.model_config(&name).unwrap();
        assert_eq!(
            cfg["input"][0]["data_type"],
            json!(format!("TYPE_{}", datatype_name(dt)))
        );
        let size = datatype_byte_size(dt) as usize;
        // 3 x 4 elements of distinct bit patterns (valid booleans for BOOL).
        let bytes: Vec<u8> = (0..12 * size)
            .map(|i| {
                if dt == TRITONSERVER_TYPE_BOOL {
                    (i % 2) as u8
                } else {
                    (i * 37 % 251) as u8
                }
            })
            .collect();
        let resp = server
            .infer(
                &name,
                InferRequest::new(t, vec![InputTensor::new("IN", dt, &[3, 4], bytes.clone())]),
            )
            .unwrap();
        assert!(resp.error.is_none(), "{name}: {:?}", resp.error);
        let out = resp.output("OUT").unwrap();
        assert_eq!(out.datatype, dt, "{name}");
        assert_eq!(out.shape, vec![3, 4], "{name}");
        assert_eq!(out.bytes, bytes, "{name}: bytes changed");
    }
    assert_clean(&server);
}

#[test]
fn several_instances_under_concurrency() {
    let repo = Repo::new();
    let cfg = tiny_clip_config().replace("count: 2", "count: 3");
    repo.add("tiny_clip", &tiny_clip_dir(), Some(&cfg));
    let server = std::sync::Arc::new(server(&repo));
    server.load_model("tiny_clip").unwrap();
    let cases = std::sync::Arc::new(cases(&root().join("tests/data/tiny_clip_cases.json")));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (server, cases) = (server.clone(), cases.clone());
            std::thread::spawn(move || {
                for i in 0..20 {
                    let c = &cases.cases[(t + i) % cases.cases.len()];
                    let resp = server
                        .infer("tiny_clip", request(&format!("{t}-{i}"), c))
                        .unwrap();
                    check_response(
                        &format!("thread {t} request {i}"),
                        &resp,
                        c,
                        cases.atol,
                        cases.rtol,
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let s = &server.model_stats("tiny_clip").unwrap()["model_stats"][0];
    assert_eq!(s["inference_stats"]["success"]["count"], json!(120));
    assert!(s["execution_count"].as_u64().unwrap() <= 120);
    assert_clean(&server);
}

#[test]
fn gpu_instance_without_cuda_fails_its_load_clearly() {
    if triton_rusttrt::cuda::available() {
        eprintln!("skipped: this machine has CUDA (the GPU tests cover KIND_GPU)");
        return;
    }
    let repo = Repo::new();
    repo.add(
        "tiny_clip",
        &tiny_clip_dir(),
        Some(&tiny_clip_config().replace("KIND_CPU", "KIND_GPU")),
    );
    let server = server_with(&repo, &[], |o| {
        o.gpu_count = 1;
        o.gpus_without_driver = true;
    });
    let e = match server.load_model("tiny_clip") {
        Ok(()) => panic!("a KIND_GPU instance loaded without CUDA"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("KIND_GPU") && e.contains("CUDA"), "{e}");
}

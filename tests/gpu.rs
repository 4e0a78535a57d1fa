//! GPU tests: run only on the GPU machine (H100/H200, CUDA 13, ONNX Runtime GPU), where
//! scripts/gpu/test.sh runs them with `--ignored`. CI has no GPU: they are ignored there.
//!
//! - outputs of KIND_GPU instances (FP32 and FP16) against the reference outputs;
//! - every combination of input and output memory type, for GPU and CPU instances;
//! - CUDA-graph replay identical to the plain path;
//! - no device or host memory growth over 10k requests;
//! - the FP16 accuracy guard on the real-sized ViT-B/32 (when RUSTTRT_VIT_ONNX names its export).

mod common;

use common::*;
use rusttrt_host::{InferRequest, MemoryType, Server};

fn gpu_server(repo: &Repo) -> Server {
    server_with(repo, &[], |o| o.gpu_count = 1)
}

fn gpu_config(precision: &str, extra: &str) -> String {
    tiny_clip_config()
        .replace("KIND_CPU", "KIND_GPU")
        .replace("count: 2", "count: 1")
        .replace(
            "string_value: \"FP32\"",
            &format!("string_value: \"{precision}\""),
        )
        + extra
}

fn check_fp32(what: &str, resp: &rusttrt_host::InferResponse, c: &Case) {
    // ONNX Runtime's CUDA EP may use TF32 for FP32 matrix products: compare loosely per value
    // and strictly per row.
    check_response(what, resp, c, 2e-2, 2e-2);
    let cos = min_row_cosine(&resp.outputs[0].as_f32(), &c.outputs[0].f32s(), 32);
    assert!(cos >= 0.9999, "{what}: min row cosine {cos}");
}

#[test]
#[ignore = "needs a GPU (scripts/gpu/test.sh)"]
fn gpu_fp32_and_fp16_match_the_reference() {
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    for precision in ["FP32", "FP16"] {
        let repo = Repo::new();
        repo.add(
            "tiny_clip",
            &tiny_clip_dir(),
            Some(&gpu_config(precision, "")),
        );
        let s = gpu_server(&repo);
        s.load_model("tiny_clip")
            .unwrap_or_else(|e| panic!("{precision}: {e}"));
        assert!(
            !log_matching(&s, "CUDAExecutionProvider on GPU 0").is_empty(),
            "{:#?}",
            s.log_lines()
        );
        for c in &cases.cases {
            let resp = s.infer("tiny_clip", request(&c.name, c)).unwrap();
            if precision == "FP32" {
                check_fp32(&format!("{precision} {}", c.name), &resp, c);
            } else {
                let (atol, rtol, min_cos) = cases.fp16.unwrap();
                check_response(&format!("{precision} {}", c.name), &resp, c, atol, rtol);
                let cos = min_row_cosine(&resp.outputs[0].as_f32(), &c.outputs[0].f32s(), 32);
                assert!(cos >= min_cos, "FP16 {}: min row cosine {cos}", c.name);
            }
        }
        if precision == "FP16" {
            assert!(
                !log_matching(&s, "guard passed").is_empty(),
                "{:#?}",
                s.log_lines()
            );
        }
        assert_clean(&s);
    }
}

#[test]
#[ignore = "needs a GPU (scripts/gpu/test.sh)"]
fn every_combination_of_input_and_output_memory() {
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    let c = &cases.cases[1];
    let mems = [MemoryType::Cpu, MemoryType::CpuPinned, MemoryType::Gpu];
    let unpinned =
        "optimization { input_pinned_memory { enable: false } output_pinned_memory { enable: false } }\n";
    for (kind, extra) in [("KIND_GPU", ""), ("KIND_GPU", unpinned), ("KIND_CPU", "")] {
        let repo = Repo::new();
        let cfg = gpu_config("FP32", extra).replace("KIND_GPU", kind);
        repo.add("tiny_clip", &tiny_clip_dir(), Some(&cfg));
        let s = gpu_server(&repo);
        s.load_model("tiny_clip").unwrap();
        for inm in mems {
            for outm in mems {
                for chunk in [usize::MAX, 5000] {
                    let mut req = InferRequest::new(
                        "m",
                        c.inputs
                            .iter()
                            .map(|t| t.input().split(chunk, inm))
                            .collect(),
                    );
                    req.output_memory = outm;
                    let what =
                        format!("{kind} {extra} input {inm:?} (chunks of {chunk}) output {outm:?}");
                    let resp = s.infer("tiny_clip", req).unwrap();
                    check_fp32(&what, &resp, c);
                    assert_eq!(resp.outputs[0].memory, outm, "{what}");
                }
            }
        }
        assert_clean(&s);
    }
}

#[test]
#[ignore = "needs a GPU (scripts/gpu/test.sh)"]
fn cuda_graph_replay_is_identical_to_the_plain_path() {
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    let repo = Repo::new();
    repo.add(
        "plain",
        &tiny_clip_dir(),
        Some(&gpu_config("FP16", "").replace("name: \"tiny_clip\"\n", "")),
    );
    repo.add(
        "graphs",
        &tiny_clip_dir(),
        Some(&gpu_config("FP16", "parameters { key: \"cuda_graph_batch_sizes\" value: { string_value: \"1,3,8\" } }\n").replace("name: \"tiny_clip\"\n", "")),
    );
    let s = gpu_server(&repo);
    s.load_model("plain").unwrap();
    s.load_model("graphs").unwrap();
    assert!(
        !log_matching(&s, "CUDA graph").is_empty(),
        "{:#?}",
        s.log_lines()
    );
    for round in 0..3 {
        for c in &cases.cases {
            let a = s.infer("plain", request("p", c)).unwrap();
            let b = s.infer("graphs", request("g", c)).unwrap();
            assert!(
                a.error.is_none() && b.error.is_none(),
                "{:?} {:?}",
                a.error,
                b.error
            );
            assert_eq!(
                a.outputs[0].bytes, b.outputs[0].bytes,
                "round {round} {}: graph replay differs",
                c.name
            );
        }
    }
    // A batch size without a graph takes the plain path and is still right.
    let five = InferRequest::new(
        "five",
        vec![rusttrt_host::InputTensor::f32(
            "input",
            &[5, 3, 32, 32],
            &vec![0.25; 5 * 3 * 32 * 32],
        )],
    );
    let a = s.infer("plain", five.clone()).unwrap();
    let b = s.infer("graphs", five).unwrap();
    assert_eq!(a.outputs[0].bytes, b.outputs[0].bytes);
    assert_clean(&s);
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
#[ignore = "needs a GPU (scripts/gpu/test.sh)"]
fn no_device_or_host_memory_growth_over_10k_requests() {
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    let repo = Repo::new();
    repo.add("tiny_clip", &tiny_clip_dir(), Some(&gpu_config("FP16", "")));
    let s = gpu_server(&repo);
    s.load_model("tiny_clip").unwrap();
    let dev = triton_rusttrt::cuda::Device::open(0).unwrap();
    let mems = [MemoryType::Cpu, MemoryType::CpuPinned, MemoryType::Gpu];
    let send = |i: usize| {
        let c = &cases.cases[i % cases.cases.len()];
        let mut req = InferRequest::new(
            "leak",
            c.inputs
                .iter()
                .map(|t| t.input().split(usize::MAX, mems[i % 3]))
                .collect(),
        );
        req.output_memory = mems[(i / 3) % 3];
        let r = s.infer("tiny_clip", req).unwrap();
        assert!(r.error.is_none(), "{:?}", r.error);
    };
    for i in 0..1000 {
        send(i);
    }
    let (free0, _) = dev.mem_get_info().unwrap();
    let rss0 = rss_bytes();
    for i in 0..10_000 {
        send(i);
    }
    let (free1, _) = dev.mem_get_info().unwrap();
    let rss1 = rss_bytes();
    let dev_growth = free0 as i64 - free1 as i64;
    let host_growth = rss1 as i64 - rss0 as i64;
    println!(
        "over 10k requests: device memory {dev_growth:+} bytes, host RSS {host_growth:+} bytes"
    );
    assert!(
        dev_growth <= 8 << 20,
        "device memory grew by {dev_growth} bytes"
    );
    assert!(
        host_growth <= 32 << 20,
        "host RSS grew by {host_growth} bytes"
    );
    assert_clean(&s);
}

#[test]
#[ignore = "needs a GPU and RUSTTRT_VIT_ONNX (scripts/gpu/test.sh)"]
fn vit_b32_fp16_passes_the_accuracy_guard() {
    let Some(onnx) = std::env::var_os("RUSTTRT_VIT_ONNX") else {
        panic!("set RUSTTRT_VIT_ONNX to the ViT-B/32 export (tools/vit_reference.py export DIR)");
    };
    let repo = Repo::new();
    let cfg =
        std::fs::read_to_string(root().join("model_repository/clip_vit_b32/config.pbtxt")).unwrap();
    for (name, precision) in [("vit_fp32", "FP32"), ("vit_fp16", "FP16")] {
        let dir = repo.path().join(name);
        std::fs::create_dir_all(dir.join("1")).unwrap();
        std::os::unix::fs::symlink(&onnx, dir.join("1/model.onnx")).unwrap();
        let c = cfg
            .replace("name: \"clip_vit_b32\"\n", "")
            .replace("\"FP16\"", &format!("\"{precision}\""));
        std::fs::write(dir.join("config.pbtxt"), c).unwrap();
    }
    let s = gpu_server(&repo);
    let t = std::time::Instant::now();
    s.load_model("vit_fp16").unwrap();
    println!(
        "ViT-B/32 FP16 load (conversion, build, guard): {:?}",
        t.elapsed()
    );
    for l in log_matching(&s, "guard") {
        println!("{l}");
    }
    assert!(
        !log_matching(&s, "guard passed").is_empty(),
        "{:#?}",
        s.log_lines()
    );
    s.load_model("vit_fp32").unwrap();
    let n = 8;
    let mut x = Vec::with_capacity(n * 3 * 224 * 224);
    let mut seed = 12345u64;
    for _ in 0..n * 3 * 224 * 224 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x.push(((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0);
    }
    let req = || {
        InferRequest::new(
            "v",
            vec![rusttrt_host::InputTensor::f32(
                "input",
                &[n as i64, 3, 224, 224],
                &x,
            )],
        )
    };
    let a = s.infer("vit_fp32", req()).unwrap();
    let b = s.infer("vit_fp16", req()).unwrap();
    let cos = min_row_cosine(&a.outputs[0].as_f32(), &b.outputs[0].as_f32(), 512);
    println!("ViT-B/32 served FP16 vs FP32: min row cosine {cos:.6}");
    assert!(cos >= 0.999, "FP16 embeddings: min row cosine {cos}");
    assert_clean(&s);
}

#[test]
#[ignore = "needs a GPU and RUSTTRT_VIT_ONNX (scripts/gpu/test.sh)"]
fn gpu_instances_share_one_copy_of_the_weights() {
    let Some(onnx) = std::env::var_os("RUSTTRT_VIT_ONNX") else {
        panic!("set RUSTTRT_VIT_ONNX to the ViT-B/32 export (tools/vit_reference.py export DIR)");
    };
    let cfg =
        std::fs::read_to_string(root().join("model_repository/clip_vit_b32/config.pbtxt")).unwrap();
    let dev = triton_rusttrt::cuda::Device::open(0).unwrap();
    let mut used = Vec::new();
    let mut outputs = Vec::new();
    for count in [1, 3] {
        let repo = Repo::new();
        let dir = repo.path().join("vit");
        std::fs::create_dir_all(dir.join("1")).unwrap();
        std::os::unix::fs::symlink(&onnx, dir.join("1/model.onnx")).unwrap();
        std::fs::write(
            dir.join("config.pbtxt"),
            cfg.replace("name: \"clip_vit_b32\"\n", "")
                .replace("count: 1", &format!("count: {count}")),
        )
        .unwrap();
        let s = gpu_server(&repo);
        // Build (and cache) first, so the measured load only creates the instances.
        s.load_model("vit").unwrap();
        s.unload_model("vit").unwrap();
        let (free0, _) = dev.mem_get_info().unwrap();
        s.load_model("vit").unwrap();
        let (free1, _) = dev.mem_get_info().unwrap();
        assert!(
            !log_matching(&s, "shared by every instance's session").is_empty(),
            "{:#?}",
            s.log_lines()
        );
        used.push(free0 as i64 - free1 as i64);
        let x: Vec<f32> = (0..2 * 3 * 224 * 224)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let r = s
            .infer(
                "vit",
                InferRequest::new(
                    "v",
                    vec![rusttrt_host::InputTensor::f32(
                        "input",
                        &[2, 3, 224, 224],
                        &x,
                    )],
                ),
            )
            .unwrap();
        assert!(r.error.is_none(), "{:?}", r.error);
        outputs.push(r.outputs[0].as_f32());
        assert_clean(&s);
    }
    let per_extra = (used[1] - used[0]) / 2;
    println!("device memory for the instances: 1 instance {} MB, 3 instances {} MB: {} MB per extra instance (FP16 weights: 176 MB)", used[0] >> 20, used[1] >> 20, per_extra >> 20);
    assert!(
        per_extra < 100 << 20,
        "each extra instance costs {} MB: the weights are not shared",
        per_extra >> 20
    );
    assert!(
        min_row_cosine(&outputs[0], &outputs[1], 512) > 0.99999,
        "instances disagree"
    );
}

#[test]
#[ignore = "needs a GPU (scripts/gpu/test.sh)"]
fn string_tensors_on_gpu_instances_stay_on_the_host_and_are_served_exactly() {
    // A STRING model on a KIND_GPU instance: engine auto skips the native TensorRT engine
    // (no strings) for ONNX Runtime's CUDA provider; BYTES inputs in any memory (device chunks
    // included, split anywhere) are gathered on the host; string outputs reach every memory type.
    let cases = cases(&test_model("strings").join("cases.json"));
    let mems = [MemoryType::Cpu, MemoryType::CpuPinned, MemoryType::Gpu];
    for precision in ["FP32", "FP16"] {
        let repo = Repo::new();
        repo.add(
            "s",
            &test_model("strings"),
            Some(&format!(
                "backend: \"rusttrt\"\nmax_batch_size: 8\ninstance_group [ {{ kind: KIND_GPU count: 1 }} ]\n\
                 parameters {{ key: \"precision_mode\" value: {{ string_value: \"{precision}\" }} }}\n"
            )),
        );
        let s = gpu_server(&repo);
        s.load_model("s")
            .unwrap_or_else(|e| panic!("{precision}: {e}"));
        assert!(
            !log_matching(&s, "STRING tensor").is_empty(),
            "{precision}: engine auto says why the native engine is skipped: {:#?}",
            s.log_lines()
        );
        // FP16 rounds SCORE (BOOSTED); strings and counts stay exact.
        let tol = if precision == "FP16" { 1e-2 } else { 1e-6 };
        for c in &cases.cases {
            for inm in mems {
                for outm in mems {
                    // Triton core wants a host chunk's length prefixes whole: split only device
                    // chunks (which it does not look into).
                    let chunk = if inm == MemoryType::Gpu {
                        3
                    } else {
                        usize::MAX
                    };
                    let mut req = InferRequest::new(
                        "s",
                        c.inputs
                            .iter()
                            .map(|t| t.input().split(chunk, inm))
                            .collect(),
                    );
                    req.output_memory = outm;
                    let what = format!("{precision} {} input {inm:?} output {outm:?}", c.name);
                    let resp = s.infer("s", req).unwrap();
                    check_response(&what, &resp, c, tol, tol);
                }
            }
        }
        assert_clean(&s);
    }
}

//! The native TensorRT engine, end to end through the host on the built .so, on a machine with
//! no GPU and no TensorRT: the backend opens the C-seam double (crates/trt-seam-double, the
//! shim's C interface running plans with ONNX Runtime on the CPU) as its TensorRT shim library,
//! and the fake CUDA driver (src/cuda/fake_cuda.c, device memory = host memory) as libcuda. So
//! KIND_GPU instances, device buffers, streams and the engine's device outputs all run here.
//!
//! The driver library is found by the loader when the process starts, so every test runs its
//! body in a child process of this test binary whose LD_LIBRARY_PATH holds the fake
//! libcuda.so.1 (see [`fake_gpu`]). What only a real GPU and a real TensorRT can show (kernels,
//! FP16 arithmetic, real asynchrony) is listed in docs/tensorrt.md.

mod common;

use common::*;
use rusttrt_host::{InferRequest, MemoryType, Server};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const CHILD: &str = "RUSTTRT_FAKE_GPU_CHILD";

/// The fake driver, compiled once per test process into a temporary folder.
fn fake_driver_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rusttrt-fake-cuda-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libcuda.so.1");
        let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&lib)
            .arg(root().join("src/cuda/fake_cuda.c"))
            .output()
            .expect("run the C compiler (cc) to build the fake libcuda");
        assert!(
            out.status.success(),
            "cc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // cudarc tries libcuda.so before libcuda.so.1: shadow both.
        std::fs::copy(&lib, dir.join("libcuda.so")).unwrap();
        dir
    })
    .clone()
}

/// The C-seam double, built if stale.
fn seam_double() -> PathBuf {
    rusttrt_host::testing::find_or_build_cdylib("trt-seam-double", "rusttrt_trt_seam_double")
}

/// Runs `body` in a child process that sees the fake CUDA driver (this process, when it is
/// that child). `test` is the test function's name; `env` is extra environment for the child
/// (the double's fault injection).
fn fake_gpu(test: &str, env: &[(&str, &str)], body: impl FnOnce()) -> String {
    if std::env::var_os(CHILD).is_some() {
        body();
        println!("fake gpu child ok: {test}");
        return String::new();
    }
    // Build what the child needs here, once, so that children never run cargo.
    let _ = backend_lib();
    let _ = seam_double();
    let _ = build_worker();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("LD_LIBRARY_PATH", fake_driver_dir())
        .env("ORT_DYLIB_PATH", ort_library())
        .env("RUSTTRT_SKIP_CDYLIB_BUILD", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the test binary as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("fake gpu child ok: {test}")),
        "child for {test} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout.into_owned()
}

/// The real C++ shim over the TensorRT ABI double, when scripts/trt-abi-double.sh runs these
/// tests (`RUSTTRT_TEST_TRT_SHIM`: the shim library, `RUSTTRT_TEST_TRT_LIBDIR`: the folder of the
/// double's libnvinfer.so.<M> / libnvonnxparser.so.<M>, `RUSTTRT_TEST_TRT_VERSION`: the TensorRT
/// version it claims). `None` (CI): the C-seam double.
fn abi_double() -> Option<(String, String, String, String)> {
    let shim = std::env::var("RUSTTRT_TEST_TRT_SHIM").ok()?;
    let dir = std::env::var("RUSTTRT_TEST_TRT_LIBDIR").expect("RUSTTRT_TEST_TRT_LIBDIR");
    let version = std::env::var("RUSTTRT_TEST_TRT_VERSION").expect("RUSTTRT_TEST_TRT_VERSION");
    let major = version.split('.').next().unwrap_or("10").to_string();
    Some((
        shim,
        format!("{dir}/libnvinfer.so.{major}"),
        format!("{dir}/libnvonnxparser.so.{major}"),
        version,
    ))
}

/// The TensorRT version the shim under test reports.
fn trt_version() -> String {
    abi_double().map_or_else(|| "10.99.0".to_string(), |(.., v)| v)
}

/// A server whose TensorRT shim is the one under test (the C-seam double in CI), with one
/// (fake) GPU.
fn trt_server(repo: &Repo, extra: &[(&str, &str)]) -> Server {
    match abi_double() {
        None => seam_server(repo, extra),
        Some((shim, nvinfer, parser, _)) => {
            let mut config = vec![
                ("tensorrt-shim-library", shim.as_str()),
                ("tensorrt-library", nvinfer.as_str()),
                ("tensorrt-parser-library", parser.as_str()),
            ];
            config.extend_from_slice(extra);
            server_with(repo, &config, |o| o.gpu_count = 1)
        }
    }
}

/// A server over the C-seam double whatever is under test: for the backend's own behaviour
/// around a failing native engine (fault injection is the seam double's).
fn seam_server(repo: &Repo, extra: &[(&str, &str)]) -> Server {
    let shim = seam_double().display().to_string();
    let mut config = vec![("tensorrt-shim-library", shim.as_str())];
    config.extend_from_slice(extra);
    server_with(repo, &config, |o| o.gpu_count = 1)
}

/// tiny_clip on a KIND_GPU instance with the native engine at `precision`.
fn trt_config(precision: &str, instances: usize, engine: &str) -> String {
    tiny_clip_config()
        .replace("KIND_CPU", "KIND_GPU")
        .replace("count: 2", &format!("count: {instances}"))
        .replace(
            "string_value: \"FP32\"",
            &format!("string_value: \"{precision}\""),
        )
        + &format!("parameters {{ key: \"engine\" value: {{ string_value: \"{engine}\" }} }}\n")
}

/// One of the C-seam double's counters ("builds", "loads", "contexts", "enqueues",
/// "violations"), read from the instance the backend loaded (dlopen of the same path returns
/// it); `None` over the ABI double, which has none (its breaches are logged as errors).
fn counter(name: &str) -> Option<u64> {
    abi_double().is_none().then(|| seam_counter(name))
}

fn seam_counter(name: &str) -> u64 {
    let path = seam_double();
    // SAFETY: the double is already loaded by the backend; opening it again runs nothing.
    let lib = unsafe { libloading::Library::new(&path) }.unwrap();
    // SAFETY: rt_double_counter has this signature (crates/trt-seam-double).
    let f: libloading::Symbol<unsafe extern "C" fn(*const std::ffi::c_char) -> u64> =
        unsafe { lib.get(b"rt_double_counter\0") }.unwrap();
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name.
    unsafe { f(c.as_ptr()) }
}

/// No breach of the shim interface's or TensorRT's contracts: the C-seam double's counter in
/// this process, and no error in the log (both doubles log every breach as an error, and the
/// server forwards a build worker's log).
fn assert_no_violation(s: &Server) {
    if let Some(n) = counter("violations") {
        assert_eq!(n, 0, "contract broken: {:#?}", s.log_lines());
    }
    let errors: Vec<_> = s
        .log_lines()
        .into_iter()
        .filter(|l| l.level == "ERROR")
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Engine builds this server did (in its build workers or in-process).
fn builds(s: &Server) -> usize {
    log_matching(s, "building a").len()
}

fn check_fp32(what: &str, resp: &rusttrt_host::InferResponse, c: &Case, cases: &Cases) {
    check_response(what, resp, c, cases.atol, cases.rtol);
}

fn check_fp16(what: &str, resp: &rusttrt_host::InferResponse, c: &Case, cases: &Cases) {
    let (atol, rtol, min_cos) = cases.fp16.unwrap();
    check_response(what, resp, c, atol, rtol);
    let cos = min_row_cosine(&resp.outputs[0].as_f32(), &c.outputs[0].f32s(), 32);
    assert!(cos >= min_cos, "{what}: min row cosine {cos}");
}

fn tiny_cases() -> Cases {
    cases(&root().join("tests/data/tiny_clip_cases.json"))
}

#[test]
fn native_engine_fp32_and_fp16_match_the_reference() {
    let _ = fake_gpu(
        "native_engine_fp32_and_fp16_match_the_reference",
        &[],
        || {
            let cases = tiny_cases();
            for precision in ["FP32", "FP16"] {
                let repo = Repo::new();
                repo.add(
                    "tiny_clip",
                    &tiny_clip_dir(),
                    Some(&trt_config(precision, 1, "tensorrt")),
                );
                let s = trt_server(&repo, &[]);
                s.load_model("tiny_clip")
                    .unwrap_or_else(|e| panic!("{precision}: {e}\n{:#?}", s.log_lines()));
                let serving = log_matching(&s, &format!("serving with tensorrt {}", trt_version()));
                assert!(
                    serving.iter().any(|l| l.contains(precision)),
                    "{precision}: {:#?}",
                    s.log_lines()
                );
                for c in &cases.cases {
                    let resp = s.infer("tiny_clip", request(&c.name, c)).unwrap();
                    let what = format!("{precision} {}", c.name);
                    if precision == "FP32" {
                        check_fp32(&what, &resp, c, &cases);
                    } else {
                        check_fp16(&what, &resp, c, &cases);
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
                assert_no_violation(&s);
            }
            if let Some(n) = counter("enqueues") {
                assert!(n >= 6);
            }
        },
    );
}

#[test]
fn native_engine_batches_and_scatters_device_outputs() {
    fake_gpu(
        "native_engine_batches_and_scatters_device_outputs",
        &[],
        || {
            let repo = Repo::new();
            let cfg = trt_config("FP32", 1, "tensorrt")
                .replace(
                    "max_queue_delay_microseconds: 2000",
                    "max_queue_delay_microseconds: 50000",
                )
                .replace(
                    "preferred_batch_size: [ 4, 8 ]",
                    "preferred_batch_size: [ 12 ]",
                );
            repo.add("tiny_clip", &tiny_clip_dir(), Some(&cfg));
            let s = trt_server(&repo, &[]);
            s.load_model("tiny_clip").unwrap();
            let cases = tiny_cases();
            let before = counter("enqueues");
            // Batch 1 + 3 + 8 = 12 = the preferred size: one Execute, one enqueue, three requests.
            let handles: Vec<_> = cases
                .cases
                .iter()
                .map(|c| s.submit("tiny_clip", request(&c.name, c)).unwrap())
                .collect();
            for (h, c) in handles.into_iter().zip(&cases.cases) {
                check_fp32(&c.name, &h.wait().unwrap(), c, &cases);
            }
            let stats = s.model_stats("tiny_clip").unwrap();
            let st = &stats["model_stats"][0];
            assert_eq!(st["execution_count"], json!(1), "{st}");
            assert_eq!(st["batch_stats"][0]["batch_size"], json!(12));
            if let (Some(b), Some(a)) = (before, counter("enqueues")) {
                assert_eq!(a - b, 1);
            }
            assert_clean(&s);
            assert_no_violation(&s);
        },
    );
}

#[test]
fn native_engine_every_input_and_output_memory_type() {
    fake_gpu(
        "native_engine_every_input_and_output_memory_type",
        &[],
        || {
            let cases = tiny_cases();
            let c = &cases.cases[2];
            let repo = Repo::new();
            repo.add(
                "tiny_clip",
                &tiny_clip_dir(),
                Some(&trt_config("FP32", 1, "tensorrt")),
            );
            let s = trt_server(&repo, &[]);
            s.load_model("tiny_clip").unwrap();
            let mems = [MemoryType::Cpu, MemoryType::CpuPinned, MemoryType::Gpu];
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
                        let what = format!("input {inm:?} (chunks of {chunk}) output {outm:?}");
                        let resp = s.infer("tiny_clip", req).unwrap();
                        check_fp32(&what, &resp, c, &cases);
                        assert_eq!(resp.outputs[0].memory, outm, "{what}");
                    }
                }
            }
            assert_clean(&s);
            assert_no_violation(&s);
        },
    );
}

#[test]
fn native_engine_answers_malformed_requests_and_serves_the_batch() {
    fake_gpu(
        "native_engine_answers_malformed_requests_and_serves_the_batch",
        &[],
        || {
            let repo = Repo::new();
            repo.add(
                "tiny_clip",
                &tiny_clip_dir(),
                Some(&trt_config("FP32", 1, "tensorrt")),
            );
            let s = trt_server(&repo, &[]);
            s.load_model("tiny_clip").unwrap();
            let cases = tiny_cases();
            let good = &cases.cases[0];
            let name = &good.inputs[0].name;
            for (what, bad, needle) in [
                (
                    "shape",
                    rusttrt_host::InputTensor::f32(name, &[1, 3, 8, 9], &[0.0; 216]),
                    "[1,3,8,9]",
                ),
                (
                    "type",
                    rusttrt_host::InputTensor::new(
                        name,
                        triton_abi::TRITONSERVER_TYPE_FP64,
                        &good.inputs[0].shape,
                        vec![0; 2 * good.inputs[0].bytes.len()],
                    ),
                    "FP64",
                ),
            ] {
                let g = s.submit("tiny_clip", request("good", good)).unwrap();
                let resp = s
                    .submit_unchecked("tiny_clip", InferRequest::new(what, vec![bad]))
                    .unwrap()
                    .wait()
                    .unwrap();
                let (code, msg) = resp.error.clone().expect("an error response");
                assert_eq!(code, triton_abi::TRITONSERVER_ERROR_INVALID_ARG, "{msg}");
                assert!(msg.contains(needle), "{what}: {msg}");
                check_fp32("good beside bad", &g.wait().unwrap(), good, &cases);
            }
            assert_clean(&s);
            assert_no_violation(&s);
        },
    );
}

fn engine_entries(dir: &Path) -> Vec<PathBuf> {
    files_with_extension(dir, "engine")
}

#[test]
fn native_engine_plans_are_cached_built_once_and_rebuilt_when_corrupt() {
    fake_gpu(
        "native_engine_plans_are_cached_built_once_and_rebuilt_when_corrupt",
        &[],
        || {
            let cases = tiny_cases();
            let c = &cases.cases[1];
            let repo = Repo::new();
            // Two instances on the GPU: one build, one plan load, two execution contexts.
            repo.add(
                "tiny_clip",
                &tiny_clip_dir(),
                Some(&trt_config("FP32", 2, "tensorrt")),
            );
            let (l0, c0) = (counter("loads"), counter("contexts"));
            {
                let s = trt_server(&repo, &[]);
                s.load_model("tiny_clip").unwrap();
                check_fp32(
                    "first load",
                    &s.infer("tiny_clip", request("a", c)).unwrap(),
                    c,
                    &cases,
                );
                assert_eq!(builds(&s), 1, "two instances build once");
                if let (Some(l0), Some(c0)) = (l0, c0) {
                    assert_eq!(seam_counter("loads") - l0, 1);
                    assert_eq!(seam_counter("contexts") - c0, 2);
                }
                // Reload in the same server: the cache hits.
                s.unload_model("tiny_clip").unwrap();
                s.load_model("tiny_clip").unwrap();
                assert_eq!(builds(&s), 1, "a reload hits the cache");
                check_fp32(
                    "reloaded",
                    &s.infer("tiny_clip", request("b", c)).unwrap(),
                    c,
                    &cases,
                );
                assert_clean(&s);
            }
            let cache = repo.path().join("cache");
            let entry = engine_entries(&cache).pop().expect("a plan was stored");
            // A new server (process restart): a hit, no build.
            {
                let s = trt_server(&repo, &[]);
                s.load_model("tiny_clip").unwrap();
                assert_eq!(builds(&s), 0, "a restart hits the cache");
                assert_clean(&s);
            }
            // A damaged plan is rebuilt and replaced, with a warning.
            let mut bytes = std::fs::read(&entry).unwrap();
            let n = bytes.len() - 40;
            bytes[n] ^= 0x55;
            std::fs::write(&entry, bytes).unwrap();
            {
                let s = trt_server(&repo, &[]);
                s.load_model("tiny_clip").unwrap();
                assert_eq!(builds(&s), 1, "the damaged plan was rebuilt");
                assert!(
                    s.log_lines().iter().any(|l| l.level == "WARN"),
                    "{:#?}",
                    s.log_lines()
                );
                check_fp32(
                    "rebuilt",
                    &s.infer("tiny_clip", request("c", c)).unwrap(),
                    c,
                    &cases,
                );
                assert_clean(&s);
            }
            // Another precision is another key.
            repo.add(
                "tiny_clip",
                &tiny_clip_dir(),
                Some(&trt_config("FP16", 1, "tensorrt")),
            );
            {
                let s = trt_server(&repo, &[]);
                s.load_model("tiny_clip").unwrap();
                assert!(builds(&s) >= 1, "FP16 misses the FP32 entry");
                assert_clean(&s);
                assert_no_violation(&s);
            }
        },
    );
}

#[test]
fn native_engine_fp16_guard_falls_back_to_an_fp32_plan() {
    fake_gpu(
        "native_engine_fp16_guard_falls_back_to_an_fp32_plan",
        &[],
        || {
            let repo = Repo::new();
            repo.add(
                "u",
                &test_model("fp16_unsafe"),
                Some("backend: \"rusttrt\"\nmax_batch_size: 8\ninstance_group [ { kind: KIND_GPU } ]\nparameters { key: \"precision_mode\" value: { string_value: \"FP16\" } }\nparameters { key: \"engine\" value: { string_value: \"tensorrt\" } }\n"),
            );
            let s = trt_server(&repo, &[]);
            s.load_model("u").unwrap();
            assert!(
                !log_matching(&s, "fails the accuracy guard").is_empty(),
                "{:#?}",
                s.log_lines()
            );
            let serving = log_matching(&s, &format!("serving with tensorrt {}", trt_version()));
            assert!(
                serving.len() == 1 && serving[0].contains("on GPU 0, FP32"),
                "{serving:#?}"
            );
            let cases = cases(&test_model("fp16_unsafe").join("cases.json"));
            for c in &cases.cases {
                check_response(
                    &c.name,
                    &s.infer("u", request(&c.name, c)).unwrap(),
                    c,
                    cases.atol,
                    cases.rtol,
                );
            }
            // The verdict and the FP32 plan are cached: no build on the next load.
            let again = trt_server(&repo, &[]);
            again.load_model("u").unwrap();
            assert_eq!(builds(&again), 0);
            assert!(!log_matching(&again, "serving FP32").is_empty());
            assert_clean(&s);
            assert_no_violation(&s);
        },
    );
}

#[test]
fn engine_auto_serves_natively_when_it_can() {
    fake_gpu("engine_auto_serves_natively_when_it_can", &[], || {
        let repo = Repo::new();
        repo.add(
            "tiny_clip",
            &tiny_clip_dir(),
            Some(&trt_config("FP32", 1, "auto")),
        );
        let s = trt_server(&repo, &[]);
        s.load_model("tiny_clip").unwrap();
        assert!(
            !log_matching(&s, "serving with tensorrt").is_empty(),
            "{:#?}",
            s.log_lines()
        );
        assert_clean(&s);
    });
}

/// With the native engine unusable, `engine: tensorrt` fails the load with the reason, and
/// `engine: auto` names the reason in one line and goes on with ONNX Runtime (whose CUDA
/// execution provider this CPU-only ONNX Runtime lacks: that second failure is the load's error
/// here; on the GPU machine it serves).
fn unusable_native_engine(extra: &[(&str, &str)], reason: &str) {
    for engine in ["tensorrt", "auto"] {
        let repo = Repo::new();
        repo.add(
            "tiny_clip",
            &tiny_clip_dir(),
            Some(&trt_config("FP32", 1, engine)),
        );
        let s = seam_server(&repo, extra);
        let e = s.load_model("tiny_clip").unwrap_err().to_string();
        if engine == "tensorrt" {
            assert!(e.contains(reason), "{engine}: {e}");
            assert!(e.contains("tiny_clip"), "{engine}: {e}");
        } else {
            let fell_back = log_matching(&s, "the native TensorRT engine cannot be used");
            assert_eq!(fell_back.len(), 1, "{:#?}", s.log_lines());
            assert!(fell_back[0].contains(reason), "{}", fell_back[0]);
            assert!(
                fell_back[0].contains("model 'tiny_clip'"),
                "{}",
                fell_back[0]
            );
            assert!(e.contains("CUDAExecutionProvider"), "auto: {e}");
        }
        assert_clean(&s);
    }
}

#[test]
fn missing_shim_library() {
    fake_gpu("missing_shim_library", &[], || {
        unusable_native_engine(
            &[(
                "tensorrt-shim-library",
                "/nonexistent/libtriton_rusttrt_tensorrt.so",
            )],
            "/nonexistent/libtriton_rusttrt_tensorrt.so",
        );
    });
}

#[test]
fn tensorrt_major_version_mismatch() {
    fake_gpu(
        "tensorrt_major_version_mismatch",
        &[("RUSTTRT_SEAM_DOUBLE_VERSION", "11.0.1")],
        || unusable_native_engine(&[], "the major versions must match"),
    );
}

#[test]
fn parser_rejects_an_operator() {
    fake_gpu(
        "parser_rejects_an_operator",
        &[("RUSTTRT_SEAM_DOUBLE_REJECT", "FancyAttention")],
        || unusable_native_engine(&[], "FancyAttention"),
    );
}

#[test]
fn tensorrt_not_on_the_loader_path() {
    let _ = fake_gpu(
        "tensorrt_not_on_the_loader_path",
        &[("RUSTTRT_SEAM_DOUBLE_NO_LIBRARY", "1")],
        || unusable_native_engine(&[], "cannot open libnvinfer.so.10"),
    );
}

/// A TensorRT library named in the backend config that does not exist is a configuration error
/// (INVALID_ARG naming the key), for `auto` too: nothing falls back silently from what the
/// operator wrote.
#[test]
fn a_configured_tensorrt_library_that_is_missing_is_refused() {
    let _ = fake_gpu(
        "a_configured_tensorrt_library_that_is_missing_is_refused",
        &[],
        || {
            for engine in ["tensorrt", "auto"] {
                let repo = Repo::new();
                repo.add(
                    "tiny_clip",
                    &tiny_clip_dir(),
                    Some(&trt_config("FP32", 1, engine)),
                );
                let s = seam_server(
                    &repo,
                    &[("tensorrt-library", "/nonexistent/libnvinfer.so.10")],
                );
                let e = s.load_model("tiny_clip").unwrap_err().to_string();
                assert!(
                    e.contains("'tensorrt-library'") && e.contains("/nonexistent/libnvinfer.so.10"),
                    "{engine}: {e}"
                );
                assert_clean(&s);
            }
        },
    );
}

fn doctor_args(extra: &[(&str, &str)]) -> rusttrt_host::cli::doctor::DoctorArgs {
    let mut backend_config = vec![(
        "onnxruntime-library".to_string(),
        ort_library().display().to_string(),
    )];
    for (k, v) in extra {
        backend_config.push((k.to_string(), v.to_string()));
    }
    rusttrt_host::cli::doctor::DoctorArgs {
        backend_lib: Some(backend_lib()),
        backend_config,
        model_repository: None,
    }
}

/// On this machine (no GPU): ONNX Runtime on the CPU runs the bundled model; asking for the
/// native engine is a failure that names it.
#[test]
fn doctor_reports_what_can_work_here() {
    let r = rusttrt_host::cli::doctor::diagnose(&doctor_args(&[])).unwrap();
    assert!(r.failures.is_empty(), "{:#?}", r.lines);
    assert!(
        r.lines
            .iter()
            .any(|l| l.starts_with("[ ok ] run onnxruntime FP32")),
        "{:#?}",
        r.lines
    );
    let r = rusttrt_host::cli::doctor::diagnose(&doctor_args(&[
        ("engine", "tensorrt"),
        (
            "tensorrt-shim-library",
            "/nonexistent/libtriton_rusttrt_tensorrt.so",
        ),
    ]))
    .unwrap();
    assert_eq!(r.failures.len(), 1, "{:#?}", r.lines);
    assert!(
        r.failures[0].contains("engine 'tensorrt'"),
        "{:?}",
        r.failures
    );
    assert!(r
        .lines
        .iter()
        .any(|l| l.contains("/nonexistent/libtriton_rusttrt_tensorrt.so")));
}

/// With a (fake) GPU and a TensorRT shim: the native engine runs the bundled model in FP32 and
/// FP16 and agrees with ONNX Runtime on the CPU.
#[test]
fn doctor_runs_the_native_engine_against_the_cpu_reference() {
    let out = fake_gpu(
        "doctor_runs_the_native_engine_against_the_cpu_reference",
        &[],
        || {
            let shim = seam_double().display().to_string();
            let r = rusttrt_host::cli::doctor::diagnose(&doctor_args(&[
                ("tensorrt-shim-library", &shim),
                ("engine", "tensorrt"),
            ]))
            .unwrap();
            assert!(r.failures.is_empty(), "{:#?}", r.lines);
            for want in [
                "[ ok ] run tensorrt FP32",
                "[ ok ] run tensorrt FP16",
                "[ ok ] tensorrt",
            ] {
                assert!(
                    r.lines.iter().any(|l| l.starts_with(want)),
                    "{want}: {:#?}",
                    r.lines
                );
            }
        },
    );
    // The parent sees the report the child printed.
    if std::env::var_os(CHILD).is_none() {
        assert!(out.contains("[ ok ] run tensorrt FP16"), "{out}");
    }
}

fn timing_caches(dir: &Path) -> Vec<PathBuf> {
    files_with_extension(dir, "timing")
}

/// `timing_cache: true` hands the stored timing cache to each build and keeps what comes back:
/// the double counts the builds that used it.
#[test]
fn native_engine_keeps_a_timing_cache_across_builds() {
    let _ = fake_gpu(
        "native_engine_keeps_a_timing_cache_across_builds",
        &[],
        || {
            let repo = Repo::new();
            let timing = "parameters { key: \"timing_cache\" value: { string_value: \"true\" } }\n";
            for precision in ["FP32", "FP16"] {
                repo.add(
                    "tiny_clip",
                    &tiny_clip_dir(),
                    Some(&(trt_config(precision, 1, "tensorrt") + timing)),
                );
                let s = seam_server(&repo, &[]);
                s.load_model("tiny_clip").unwrap();
                assert_clean(&s);
            }
            let files = timing_caches(&repo.path().join("cache"));
            assert_eq!(
                files.len(),
                1,
                "one timing cache per TensorRT version and GPU: {files:?}"
            );
            let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with("tensorrt-10.99.0"), "{name}");
            let bytes = std::fs::read(&files[0]).unwrap();
            assert_eq!(&bytes[..8], b"RTSEAMTC");
            // FP32 build, then the FP16 build and the guard's FP32 reference build: each got the
            // cache the previous one left.
            let runs = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
            assert_eq!(runs, 3, "builds that saw the timing cache");
        },
    );
}

const TRT_BATCH_CONFIG: &str = r#"backend: "rusttrt"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [ { kind: KIND_GPU count: 1 } ]
parameters { key: "engine" value: { string_value: "tensorrt" } }
parameters { key: "precision_mode" value: { string_value: "FP32" } }
"#;

/// The types TensorRT exchanges round-trip bit-exact through the native engine; the others fail
/// the load naming the tensor and the type.
#[test]
fn native_engine_data_types() {
    let _ = fake_gpu("native_engine_data_types", &[], || {
        use triton_abi::*;
        let repo = Repo::new();
        let served = [
            ("bool", TRITONSERVER_TYPE_BOOL),
            ("uint8", TRITONSERVER_TYPE_UINT8),
            ("int8", TRITONSERVER_TYPE_INT8),
            ("int32", TRITONSERVER_TYPE_INT32),
            ("int64", TRITONSERVER_TYPE_INT64),
            ("fp16", TRITONSERVER_TYPE_FP16),
            ("bf16", TRITONSERVER_TYPE_BF16),
            ("fp32", TRITONSERVER_TYPE_FP32),
        ];
        let refused = ["fp64", "uint16", "int16"];
        for t in served.iter().map(|(t, _)| *t).chain(refused) {
            repo.add(
                &format!("dtype_{t}"),
                &test_model(&format!("dtype_{t}")),
                Some(TRT_BATCH_CONFIG),
            );
        }
        let s = trt_server(&repo, &[]);
        for (t, dt) in served {
            let name = format!("dtype_{t}");
            s.load_model(&name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let size = datatype_byte_size(dt) as usize;
            let bytes: Vec<u8> = (0..12 * size)
                .map(|i| {
                    if dt == TRITONSERVER_TYPE_BOOL {
                        (i % 2) as u8
                    } else {
                        (i * 37 % 251) as u8
                    }
                })
                .collect();
            let mut req = InferRequest::new(
                t,
                vec![rusttrt_host::InputTensor::new(
                    "IN",
                    dt,
                    &[3, 4],
                    bytes.clone(),
                )],
            );
            req.output_memory = MemoryType::Gpu;
            let resp = s.infer(&name, req).unwrap();
            assert!(resp.error.is_none(), "{name}: {:?}", resp.error);
            let out = resp.output("OUT").unwrap();
            assert_eq!((out.datatype, &out.shape), (dt, &vec![3, 4]), "{name}");
            assert_eq!(out.bytes, bytes, "{name}: bytes changed");
        }
        assert_no_violation(&s);
        for t in refused {
            let e = s.load_model(&format!("dtype_{t}")).unwrap_err().to_string();
            assert!(
                e.contains("not supported by TensorRT") || e.contains("TensorRT does not support"),
                "{t}: {e}"
            );
            assert!(e.contains("'IN'") || e.contains("'OUT'"), "{t}: {e}");
        }
        assert_clean(&s);
    });
}

/// Only the outputs a request asks for come back; the engine still gets an address for each.
#[test]
fn native_engine_returns_only_requested_outputs() {
    let _ = fake_gpu("native_engine_returns_only_requested_outputs", &[], || {
        let repo = Repo::new();
        repo.add("m", &test_model("multi_io"), Some(TRT_BATCH_CONFIG));
        let s = trt_server(&repo, &[]);
        s.load_model("m").unwrap();
        let cases = cases(&test_model("multi_io").join("cases.json"));
        let c = &cases.cases[0];
        let mut req = request("one", c);
        req.outputs = Some(vec!["CAST".into()]);
        let resp = s.infer("m", req).unwrap();
        assert_eq!(resp.outputs.len(), 1);
        assert_eq!(resp.outputs[0].name, "CAST");
        let all = s.infer("m", request("all", c)).unwrap();
        check_response("all outputs", &all, c, cases.atol, cases.rtol);
        assert_eq!(all.outputs.len(), 3);
        assert_clean(&s);
        assert_no_violation(&s);
    });
}

/// A second model the server must keep serving while another one's build fails.
fn add_cpu_model(repo: &Repo) {
    repo.add(
        "cpu",
        &tiny_clip_dir(),
        Some(&tiny_clip_config().replace("tiny_clip", "cpu")),
    );
}

fn cpu_model_serves(s: &Server) {
    s.load_model("cpu").unwrap();
    let cases = tiny_cases();
    let c = &cases.cases[0];
    check_fp32(
        "the other model",
        &s.infer("cpu", request("x", c)).unwrap(),
        c,
        &cases,
    );
}

/// A build that crashes (abort) takes its worker down, not the server: that model's load fails
/// naming the model and the signal, and the server goes on serving.
#[test]
fn a_crashing_build_fails_that_load_not_the_server() {
    let _ = fake_gpu(
        "a_crashing_build_fails_that_load_not_the_server",
        &[("RUSTTRT_SEAM_DOUBLE_CRASH", "build")],
        || {
            let repo = Repo::new();
            repo.add(
                "native",
                &tiny_clip_dir(),
                Some(&trt_config("FP32", 1, "tensorrt").replace("tiny_clip", "native")),
            );
            add_cpu_model(&repo);
            let s = seam_server(&repo, &[]);
            let e = s.load_model("native").unwrap_err().to_string();
            for want in [
                "model 'native'",
                "crashed",
                "SIGABRT",
                "crashing on purpose",
            ] {
                assert!(e.contains(want), "{want}: {e}");
            }
            cpu_model_serves(&s);
            assert_clean(&s);
        },
    );
}

/// A build that hangs is killed at `build_timeout_s`; the load fails saying so.
#[test]
fn a_hanging_build_is_killed_at_its_time_limit() {
    let _ = fake_gpu(
        "a_hanging_build_is_killed_at_its_time_limit",
        &[("RUSTTRT_SEAM_DOUBLE_HANG", "build")],
        || {
            let repo = Repo::new();
            let cfg = trt_config("FP32", 1, "tensorrt").replace("tiny_clip", "native")
                + "parameters { key: \"build_timeout_s\" value: { string_value: \"2\" } }\n";
            repo.add("native", &tiny_clip_dir(), Some(&cfg));
            add_cpu_model(&repo);
            let s = seam_server(&repo, &[]);
            let t0 = std::time::Instant::now();
            let e = s.load_model("native").unwrap_err().to_string();
            assert!(t0.elapsed() < std::time::Duration::from_secs(30));
            for want in ["model 'native'", "did not finish within 2 s", "killed"] {
                assert!(e.contains(want), "{want}: {e}");
            }
            cpu_model_serves(&s);
            assert_clean(&s);
        },
    );
}

/// Builds run in the worker by default; its log reaches the server's.
#[test]
fn builds_run_in_the_worker_and_its_log_is_forwarded() {
    let _ = fake_gpu(
        "builds_run_in_the_worker_and_its_log_is_forwarded",
        &[],
        || {
            let repo = Repo::new();
            repo.add(
                "tiny_clip",
                &tiny_clip_dir(),
                Some(&trt_config("FP16", 1, "tensorrt")),
            );
            let s = trt_server(&repo, &[]);
            s.load_model("tiny_clip").unwrap();
            let forwarded = log_matching(&s, "[build worker ");
            assert!(
                forwarded
                    .iter()
                    .any(|l| l.contains("building a FP16 tensorrt engine"))
                    && forwarded.iter().any(|l| l.contains("FP16 guard")),
                "{:#?}",
                s.log_lines()
            );
            assert_clean(&s);
            assert_no_violation(&s);
        },
    );
}

/// The `zero_dim` test model on the native engine: `x` is `[n, 3]` with `n` in `0..=max_rows`.
fn zero_dim_config(max_rows: usize) -> String {
    format!(
        "backend: \"rusttrt\"\nmax_batch_size: 0\ninstance_group [ {{ kind: KIND_GPU }} ]\n\
         parameters {{ key: \"engine\" value: {{ string_value: \"tensorrt\" }} }}\n\
         parameters {{ key: \"precision_mode\" value: {{ string_value: \"FP32\" }} }}\n\
         parameters {{ key: \"trt_profile_min_shapes\" value: {{ string_value: \"x:0x3\" }} }}\n\
         parameters {{ key: \"trt_profile_opt_shapes\" value: {{ string_value: \"x:2x3\" }} }}\n\
         parameters {{ key: \"trt_profile_max_shapes\" value: {{ string_value: \"x:{max_rows}x3\" }} }}\n"
    )
}

/// Zero-size tensors through the native engine and the GPU data path: a `[0,3]` input and a
/// `[2,0]` one, from pageable, pinned and device memory, come back as empty outputs of the right
/// shapes.
#[test]
fn native_engine_serves_zero_size_tensors() {
    let _ = fake_gpu("native_engine_serves_zero_size_tensors", &[], || {
        let repo = Repo::new();
        repo.add("z", &test_model("zero_dim"), Some(&zero_dim_config(4)));
        let s = trt_server(&repo, &[]);
        s.load_model("z").unwrap();
        for mem in [MemoryType::Cpu, MemoryType::CpuPinned, MemoryType::Gpu] {
            let mut req = InferRequest::new(
                "empty",
                vec![
                    rusttrt_host::InputTensor::f32("x", &[0, 3], &[]).split(usize::MAX, mem),
                    rusttrt_host::InputTensor::f32("z", &[2, 0], &[]).split(usize::MAX, mem),
                ],
            );
            req.output_memory = mem;
            let resp = s.infer("z", req).unwrap();
            assert!(resp.error.is_none(), "{mem:?}: {:?}", resp.error);
            assert_eq!(resp.output("x2").unwrap().shape, vec![0, 3], "{mem:?}");
            assert_eq!(resp.output("z1").unwrap().shape, vec![2, 0], "{mem:?}");
            assert!(resp.outputs.iter().all(|o| o.bytes.is_empty()));
        }
        // A non-empty request of the same model still computes.
        let resp = s
            .infer(
                "z",
                InferRequest::new(
                    "two",
                    vec![
                        rusttrt_host::InputTensor::f32(
                            "x",
                            &[2, 3],
                            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                        ),
                        rusttrt_host::InputTensor::f32("z", &[2, 0], &[]),
                    ],
                ),
            )
            .unwrap();
        assert!(resp.error.is_none(), "{:?}", resp.error);
        assert_eq!(resp.output("x2").unwrap().shape, vec![2, 3]);
        assert_clean(&s);
        assert_no_violation(&s);
    });
}

/// A large input in pageable host memory (over the size at which the GPU gather packs pinned
/// staging on several threads), whole and in 1 MB chunks, arrives intact on the device.
#[test]
fn a_large_pageable_input_is_packed_and_copied_intact() {
    let _ = fake_gpu(
        "a_large_pageable_input_is_packed_and_copied_intact",
        &[],
        || {
            let repo = Repo::new();
            repo.add(
                "z",
                &test_model("zero_dim"),
                Some(&zero_dim_config(1000000)),
            );
            let s = trt_server(&repo, &[]);
            s.load_model("z").unwrap();
            let n = 900_000usize; // 10.8 MB of FP32
            let x: Vec<f32> = (0..n * 3).map(|i| (i % 9973) as f32 - 4000.0).collect();
            for chunk in [usize::MAX, 1 << 20] {
                let req = InferRequest::new(
                    "big",
                    vec![
                        rusttrt_host::InputTensor::f32("x", &[n as i64, 3], &x)
                            .split(chunk, MemoryType::Cpu),
                        rusttrt_host::InputTensor::f32("z", &[2, 0], &[]),
                    ],
                );
                let resp = s.infer("z", req).unwrap();
                assert!(resp.error.is_none(), "{:?}", resp.error);
                let got = resp.output("x2").unwrap().as_f32();
                assert_eq!(got.len(), x.len());
                let bad = got.iter().zip(&x).position(|(g, v)| *g != 2.0 * v);
                assert_eq!(bad, None, "chunks of {chunk}: first wrong element");
            }
            assert_clean(&s);
            assert_no_violation(&s);
        },
    );
}

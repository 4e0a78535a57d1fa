//! Configs written for Triton's ONNX Runtime backend (and Triton's own optimization fields) load
//! unchanged but for `backend:`, every setting mapped to its rusttrt meaning; unknown keys and
//! bad values fail the load naming the parameter and the value.

mod common;
use common::*;

/// A config in the style of onnxruntime_backend's README (r25.x): the TensorRT accelerator with
/// its parameters, the CUDA accelerator, and the ONNX Runtime model parameters. Instances are
/// KIND_CPU so the test runs anywhere; the accelerator settings are still resolved at load.
fn ort_backend_config(extra_trt: &str, extra_params: &str) -> String {
    format!(
        r#"
backend: "rusttrt"
max_batch_size: 32
input [ {{ name: "input" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] }} ]
output [ {{ name: "embedding" data_type: TYPE_FP32 dims: [ 32 ] }} ]
dynamic_batching {{ preferred_batch_size: [ 4, 8 ] }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
optimization {{ execution_accelerators {{
  gpu_execution_accelerator : [ {{
    name : "tensorrt"
    parameters {{ key: "precision_mode" value: "FP16" }}
    parameters {{ key: "max_workspace_size_bytes" value: "1073741824" }}
    parameters {{ key: "trt_engine_cache_enable" value: "1" }}
    parameters {{ key: "trt_engine_cache_path" value: "trt_engines" }}
    parameters {{ key: "trt_timing_cache_enable" value: "true" }}
    parameters {{ key: "trt_timing_cache_path" value: "trt_timing" }}
    parameters {{ key: "trt_builder_optimization_level" value: "4" }}
    parameters {{ key: "trt_profile_min_shapes" value: "input:1x3x32x32" }}
    parameters {{ key: "trt_profile_opt_shapes" value: "input:8x3x32x32" }}
    parameters {{ key: "trt_profile_max_shapes" value: "input:32x3x32x32" }}
    parameters {{ key: "trt_layer_norm_fp32_fallback" value: "1" }}
    parameters {{ key: "trt_cuda_graph_enable" value: "1" }}
    parameters {{ key: "trt_max_partition_iterations" value: "1000" }}
    {extra_trt}
  }},
  {{
    name : "cuda"
    parameters {{ key: "cudnn_conv_algo_search" value: "HEURISTIC" }}
    parameters {{ key: "cudnn_conv_use_max_workspace" value: "0" }}
    parameters {{ key: "use_ep_level_unified_stream" value: "1" }}
  }} ]
}}}}
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
parameters {{ key: "inter_op_thread_count" value: {{ string_value: "1" }} }}
parameters {{ key: "execution_mode" value: {{ string_value: "0" }} }}
parameters {{ key: "enable_mem_arena" value: {{ string_value: "1" }} }}
parameters {{ key: "enable_mem_pattern" value: {{ string_value: "0" }} }}
parameters {{ key: "memory.enable_memory_arena_shrinkage" value: {{ string_value: "cpu:0" }} }}
{extra_params}
"#
    )
}

fn effective_line(server: &rusttrt_host::Server) -> String {
    let lines = log_matching(server, "effective settings:");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    lines[0].clone()
}

#[test]
fn an_onnxruntime_backend_config_loads_with_every_setting_mapped() {
    let repo = Repo::new();
    let dir = repo.add("m", &tiny_clip_dir(), Some(&ort_backend_config("", "")));
    // No cache-dir in the backend config: the accelerator's trt_engine_cache_path decides.
    let mut opts = rusttrt_host::ServerOptions::new(backend_lib(), repo.path());
    opts.backend_config.push((
        "onnxruntime-library".into(),
        ort_library().display().to_string(),
    ));
    let server = rusttrt_host::Server::new(opts).expect("server starts");
    server.load_model("m").expect("load");
    let line = effective_line(&server);
    let trt = |k: &str| format!("(gpu_execution_accelerator 'tensorrt' parameter '{k}')");
    let engines = dir.join("trt_engines");
    let timing = dir.join("trt_timing");
    for want in [
        "precision_mode=FP16".to_string(),
        format!(
            "max_workspace_size_bytes=1073741824 {}",
            trt("max_workspace_size_bytes")
        ),
        format!(
            "cache_dir={} {}",
            engines.display(),
            trt("trt_engine_cache_path")
        ),
        format!("timing_cache=true {}", trt("trt_timing_cache_enable")),
        format!(
            "timing_cache_dir={} {}",
            timing.display(),
            trt("trt_timing_cache_path")
        ),
        format!(
            "builder_optimization_level=4 {}",
            trt("trt_builder_optimization_level")
        ),
        format!(
            "trt_profile_min_shapes=input:1x3x32x32 {}",
            trt("trt_profile_min_shapes")
        ),
        format!(
            "trt_profile_opt_shapes=input:8x3x32x32 {}",
            trt("trt_profile_opt_shapes")
        ),
        format!(
            "trt_profile_max_shapes=input:32x3x32x32 {}",
            trt("trt_profile_max_shapes")
        ),
        format!(
            "cuda_graph_batch_sizes=preferred {}",
            trt("trt_cuda_graph_enable")
        ),
        "intra_op_thread_count=1 (parameter 'intra_op_thread_count')".to_string(),
        "inter_op_thread_count=1".to_string(),
        "execution_mode=0".to_string(),
        "enable_mem_arena=true".to_string(),
        "enable_mem_pattern=false".to_string(),
        "cuda.cudnn_conv_algo_search=HEURISTIC".to_string(),
        "cuda.cudnn_conv_use_max_workspace=0".to_string(),
        // The same settings for ONNX Runtime's own TensorRT provider, under its names.
        "onnxruntime_tensorrt.trt_max_workspace_size=1073741824".to_string(),
        "onnxruntime_tensorrt.trt_builder_optimization_level=4".to_string(),
        "onnxruntime_tensorrt.trt_profile_opt_shapes=input:8x3x32x32".to_string(),
        format!(
            "onnxruntime_tensorrt.trt_timing_cache_path={}",
            timing.display()
        ),
        "onnxruntime_tensorrt.trt_timing_cache_enable=1".to_string(),
        "onnxruntime_tensorrt.trt_layer_norm_fp32_fallback=1".to_string(),
    ] {
        assert!(line.contains(&want), "missing '{want}' in: {line}");
    }
    // LayerNorm stays FP32 because of trt_layer_norm_fp32_fallback.
    let keep = line
        .split(", ")
        .find(|p| p.starts_with("fp16_keep_fp32_ops="))
        .unwrap_or_else(|| panic!("no fp16_keep_fp32_ops in {line}"));
    assert!(
        keep.contains("LayerNormalization") && keep.contains("trt_layer_norm_fp32_fallback"),
        "{keep}"
    );
    // Known but ignored: a warning naming the key.
    for k in [
        "trt_max_partition_iterations",
        "use_ep_level_unified_stream",
        "memory.enable_memory_arena_shrinkage",
    ] {
        let w: Vec<_> = server
            .log_lines()
            .into_iter()
            .filter(|l| l.level == "WARN" && l.msg.contains(k) && l.msg.contains("ignored"))
            .collect();
        assert_eq!(w.len(), 1, "warning for {k}: {w:#?}");
    }
    // The engine cache really is where trt_engine_cache_path (relative → model dir) says.
    let mut files = 0;
    for e in walk(&engines) {
        if e.is_file() {
            files += 1;
        }
    }
    assert!(files > 0, "no cache entry under {}", engines.display());
    // And the model serves.
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    let c = &cases.cases[0];
    let resp = server.infer("m", request("r", c)).unwrap();
    check_response("fp16", &resp, c, 0.05, 0.05);
    assert_clean(&server);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn unknown_keys_and_bad_values_fail_the_load_naming_them() {
    let repo = Repo::new();
    let cases = [
        (
            "unknown_accel",
            ort_backend_config(r#"parameters { key: "trt_fp16_enable" value: "1" }"#, ""),
            vec![
                "unknown parameter 'trt_fp16_enable'",
                "TensorRT Execution Accelerator",
            ],
        ),
        (
            "unknown_param",
            ort_backend_config(
                "",
                r#"parameters { key: "fp16_min_cosin" value: { string_value: "0.99" } }"#,
            ),
            vec!["unknown parameter 'fp16_min_cosin'"],
        ),
        (
            "cosine",
            ort_backend_config(
                "",
                r#"parameters { key: "fp16_min_cosine" value: { string_value: "1.01" } }"#,
            ),
            vec!["fp16_min_cosine", "'1.01'", "[-1, 1]"],
        ),
        (
            "nan",
            ort_backend_config(
                "",
                r#"parameters { key: "fp16_max_relative_l2" value: { string_value: "NaN" } }"#,
            ),
            vec!["fp16_max_relative_l2", "'NaN'"],
        ),
        (
            "threads",
            ort_backend_config(
                "",
                r#"parameters { key: "inter_op_thread_count" value: { string_value: "100000" } }"#,
            ),
            vec!["inter_op_thread_count", "'100000'", "integer in 0..="],
        ),
        (
            "graph_batch",
            ort_backend_config(
                "",
                r#"parameters { key: "cuda_graph_batch_sizes" value: { string_value: "64" } }"#,
            ),
            vec!["cuda_graph_batch_sizes", "'64'", "1..=32"],
        ),
        (
            "library",
            ort_backend_config(
                "",
                r#"parameters { key: "onnxruntime_library" value: { string_value: "nope/libonnxruntime.so" } }"#,
            ),
            vec![
                "onnxruntime_library",
                "nope/libonnxruntime.so",
                "shared library",
            ],
        ),
        (
            "precision",
            ort_backend_config(r#"parameters { key: "trt_dla_core" value: "x" }"#, ""),
            vec!["trt_dla_core", "'x'", "integer"],
        ),
    ];
    for (name, cfg, _) in &cases {
        repo.add(name, &tiny_clip_dir(), Some(cfg));
    }
    let server = server(&repo);
    for (name, _, needles) in &cases {
        let e = server.load_model(name).unwrap_err();
        assert_eq!(
            e.code,
            triton_abi::TRITONSERVER_ERROR_INVALID_ARG,
            "{name}: {e}"
        );
        for n in needles {
            assert!(e.msg.contains(n), "{name}: '{n}' not in: {}", e.msg);
        }
        assert!(
            e.msg.contains(name),
            "{name}: the model is not named: {}",
            e.msg
        );
    }
    assert_clean(&server);
}

#[test]
fn tritons_cuda_graph_field_comes_first_and_project_aliases_still_work() {
    let repo = Repo::new();
    let base = std::fs::read_to_string(tiny_clip_dir().join("config.pbtxt"))
        .unwrap()
        .replace("name: \"tiny_clip\"\n", "");
    repo.add(
        "graphs",
        &tiny_clip_dir(),
        Some(&format!(
            "{base}\noptimization {{ cuda {{ graphs: true graph_spec [ {{ batch_size: 8 }}, {{ batch_size: 2 }} ] }} }}\n"
        )),
    );
    repo.add(
        "preferred",
        &tiny_clip_dir(),
        Some(&format!(
            "{base}\noptimization {{ cuda {{ graphs: true }} }}\n"
        )),
    );
    repo.add(
        "alias",
        &tiny_clip_dir(),
        Some(&format!(
            "{base}\nparameters {{ key: \"cuda_graph_batch_sizes\" value: {{ string_value: \"1,4\" }} }}\n"
        )),
    );
    repo.add(
        "both",
        &tiny_clip_dir(),
        Some(&format!(
            "{base}\noptimization {{ cuda {{ graphs: true graph_spec [ {{ batch_size: 8 }} ] }} }}\nparameters {{ key: \"cuda_graph_batch_sizes\" value: {{ string_value: \"4\" }} }}\n"
        )),
    );
    let server = server(&repo);
    for (m, want) in [
        (
            "graphs",
            "cuda_graph_batch_sizes=2,8 (optimization.cuda.graphs)",
        ),
        (
            "preferred",
            "cuda_graph_batch_sizes=preferred (optimization.cuda.graphs)",
        ),
        (
            "alias",
            "cuda_graph_batch_sizes=1,4 (parameter 'cuda_graph_batch_sizes')",
        ),
    ] {
        server.load_model(m).expect(m);
        let lines = log_matching(&server, &format!("model '{m}': effective settings"));
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "{m}: '{want}' not in {lines:#?}"
        );
    }
    let e = server.load_model("both").unwrap_err().to_string();
    assert!(
        e.contains("cuda_graph_batch_sizes") && e.contains("optimization.cuda.graphs"),
        "{e}"
    );
    assert_clean(&server);
}

#[test]
fn model_warmup_runs_on_the_built_engine_before_ready_and_pinned_memory_fields_are_read() {
    let repo = Repo::new();
    let base = tiny_clip_config().replace("name: \"tiny_clip\"\n", "");
    let input = |how: &str| {
        format!("inputs {{ key: \"input\" value: {{ data_type: TYPE_FP32 dims: [ 3, 32, 32 ] {how} }} }}")
    };
    let warmup = format!(
        "model_warmup [ {{ name: \"zeros\" batch_size: 4 count: 2 {} }}, {{ name: \"random\" batch_size: 1 {} }}, {{ name: \"file\" batch_size: 2 {} }} ]\n",
        input("zero_data: true"),
        input("random_data: true"),
        input("input_data_file: \"input.bin\"")
    );
    let pinned = "optimization { input_pinned_memory { enable: false } output_pinned_memory { enable: false } }\n";
    let dir = repo.add(
        "w",
        &tiny_clip_dir(),
        Some(&format!("{base}{warmup}{pinned}")),
    );
    std::fs::create_dir_all(dir.join("warmup")).unwrap();
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    let one = &cases.cases[0].inputs[0].bytes[..3 * 32 * 32 * 4];
    std::fs::write(dir.join("warmup/input.bin"), one).unwrap();
    let short = repo.add(
        "short",
        &tiny_clip_dir(),
        Some(&format!(
            "{base}model_warmup [ {{ name: \"file\" batch_size: 1 {} }} ]\n",
            input("input_data_file: \"input.bin\"")
        )),
    );
    std::fs::create_dir_all(short.join("warmup")).unwrap();
    std::fs::write(short.join("warmup/input.bin"), &one[..100]).unwrap();

    let server = server(&repo);
    server.load_model("w").expect("load with warmup");
    // Warmup ran through Execute on every instance (2): 2x zeros, 1x random, 1x file each.
    let runs = log_matching(&server, "is running warmup sample");
    assert_eq!(runs.len(), 8, "{runs:#?}");
    // The engine was built at load, before the first warmup Execute.
    let log: Vec<String> = server.log_lines().into_iter().map(|l| l.msg).collect();
    let served = log
        .iter()
        .position(|l| l.contains("model 'w': serving with"));
    let first_warmup = log
        .iter()
        .position(|l| l.contains("is running warmup sample"));
    assert!(served.is_some() && served < first_warmup, "{log:#?}");
    let eff = log_matching(&server, "model 'w': effective settings");
    assert!(
        eff[0].contains(
            "optimization.input_pinned_memory=false, optimization.output_pinned_memory=false"
        ),
        "{eff:?}"
    );
    // Served afterwards as usual.
    let c = &cases.cases[0];
    check_response(
        "after warmup",
        &server.infer("w", request("r", c)).unwrap(),
        c,
        cases.atol,
        cases.rtol,
    );
    // A warmup that cannot run fails the load (the model never becomes ready).
    let e = server.load_model("short").unwrap_err().to_string();
    assert!(e.contains("warmup") && e.contains("input.bin"), "{e}");
    assert!(!server.loaded_models().contains(&"short".to_string()));
    assert_clean(&server);
}

//! The backend's custom metrics through Triton's metrics API, as `/metrics` would show them.

mod common;
use common::*;

fn fp16_config() -> String {
    tiny_clip_config()
        .replace("name: \"tiny_clip\"\n", "")
        .replace("string_value: \"FP32\"", "string_value: \"FP16\"")
}

/// The value of the series of `family` whose labels include every `labels` pair.
fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn cache_build_guard_and_serving_engine_metrics_appear_on_metrics() {
    let repo = Repo::new();
    repo.add("m", &tiny_clip_dir(), Some(&fp16_config()));
    let server = server(&repo);
    server.load_model("m").expect("load");
    let text = server.metrics_text();
    let m = [("model", "m"), ("version", "1")];
    assert_eq!(
        sample(&text, "rusttrt_engine_cache_misses_total", &m),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rusttrt_engine_cache_hits_total", &m),
        Some(0.0),
        "{text}"
    );
    let build = sample(&text, "rusttrt_engine_build_duration_seconds", &m).unwrap();
    assert!(build > 0.0, "{text}");
    assert_eq!(
        sample(&text, "rusttrt_fp16_guard_passed", &m),
        Some(1.0),
        "{text}"
    );
    let cos = sample(&text, "rusttrt_fp16_guard_min_cosine", &m).unwrap();
    assert!(cos > 0.99 && cos <= 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "rusttrt_engine_info",
            &[("model", "m"), ("device", "CPU"), ("precision", "FP16")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE rusttrt_engine_cache_hits_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE rusttrt_fp16_guard_min_cosine gauge"),
        "{text}"
    );
    // Triton's own families sit beside them.
    assert!(
        text.contains("nv_inference_request_success{model=\"m\",version=\"1\"} 0"),
        "{text}"
    );

    // Unload: the model's series go with it (metrics deleted before their families).
    server.unload_model("m").unwrap();
    let text = server.metrics_text();
    assert!(!text.contains("model=\"m\""), "{text}");
    let live = server.live_backend_objects();
    assert!(!live.contains_key("TRITONSERVER_Metric"), "{live:?}");
    assert!(!live.contains_key("TRITONSERVER_Parameter"), "{live:?}");
    assert_eq!(live.get("TRITONSERVER_MetricFamily"), Some(&6), "{live:?}");

    // Reload: a cache hit; the guard's verdict comes from the cached envelope.
    server.load_model("m").expect("reload");
    let text = server.metrics_text();
    assert_eq!(
        sample(&text, "rusttrt_engine_cache_hits_total", &m),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rusttrt_engine_cache_misses_total", &m),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rusttrt_fp16_guard_passed", &m),
        Some(1.0),
        "{text}"
    );
    assert_clean(&server);
}

#[test]
fn a_failed_guard_shows_zero_and_fp32_serving() {
    let repo = Repo::new();
    repo.add(
        "m",
        &tiny_clip_dir(),
        Some(&format!(
            "{}parameters {{ key: \"fp16_min_cosine\" value: {{ string_value: \"1\" }} }}\nparameters {{ key: \"fp16_max_relative_l2\" value: {{ string_value: \"0\" }} }}\n",
            fp16_config()
        )),
    );
    let server = server(&repo);
    server.load_model("m").expect("load");
    let text = server.metrics_text();
    let m = [("model", "m"), ("version", "1")];
    assert_eq!(
        sample(&text, "rusttrt_fp16_guard_passed", &m),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "rusttrt_engine_info",
            &[("model", "m"), ("precision", "FP32")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_clean(&server);
}

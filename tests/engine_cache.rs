//! The engine cache and FP16 conversion through the backend: hits, misses, corruption,
//! concurrency (threads and processes), unusable locations, eviction, converter accuracy and
//! the accuracy guard's fallback.
//!
//! Runs on ONNX Runtime CPU, where the cached artifact is the FP16-converted model (FP32 models
//! are served from their file and not cached). The native TensorRT engine cannot run here.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn fp16_config(extra: &str) -> String {
    tiny_clip_config()
        .replace("string_value: \"FP32\"", "string_value: \"FP16\"")
        .replace("name: \"tiny_clip\"\n", "")
        + extra
}

fn builds(server: &rusttrt_host::Server) -> usize {
    log_matching(server, "building a FP16").len()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    files_with_extension(dir, "engine")
}

#[test]
fn a_second_load_hits_the_cache_and_serves_the_same_engine() {
    let repo = Repo::new();
    repo.add("m", &tiny_clip_dir(), Some(&fp16_config("")));
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    let c = &cases.cases[2];

    let t0 = Instant::now();
    let a = server(&repo);
    a.load_model("m").unwrap();
    let build_load = t0.elapsed();
    assert_eq!(builds(&a), 1, "one build for two instances");
    assert_eq!(log_matching(&a, "engine cache miss").len(), 1);
    let first = a.infer("m", request("a", c)).unwrap();
    assert_clean(&a);
    drop(a);

    let t1 = Instant::now();
    let b = server(&repo);
    b.load_model("m").unwrap();
    let hit_load = t1.elapsed();
    assert_eq!(builds(&b), 0, "{:#?}", b.log_lines());
    assert_eq!(log_matching(&b, "engine cache hit").len(), 1);
    let second = b.infer("m", request("b", c)).unwrap();
    assert_eq!(
        first.outputs[0].bytes, second.outputs[0].bytes,
        "the cached engine computes the same"
    );
    println!("load with build: {build_load:?}; load with cache hit: {hit_load:?}");
    assert_clean(&b);
}

#[test]
fn model_bytes_options_and_batch_profile_change_the_key() {
    let repo = Repo::new();
    repo.add("m", &tiny_clip_dir(), Some(&fp16_config("")));
    let s = server(&repo);
    s.load_model("m").unwrap();
    assert_eq!(builds(&s), 1);
    // Same model, another name: same content key, a hit.
    repo.add("same", &tiny_clip_dir(), Some(&fp16_config("")));
    s.load_model("same").unwrap();
    assert_eq!(
        builds(&s),
        1,
        "a model with identical bytes shares the engine"
    );
    // max_batch_size (the profile) changes the key.
    std::fs::write(
        repo.path().join("m/config.pbtxt"),
        fp16_config("").replace("max_batch_size: 32", "max_batch_size: 16"),
    )
    .unwrap();
    s.load_model("m").unwrap();
    assert_eq!(builds(&s), 2, "batch profile change must rebuild");
    // A build option changes the key.
    std::fs::write(
        repo.path().join("m/config.pbtxt"),
        fp16_config("parameters { key: \"fp16_keep_fp32_ops\" value: { string_value: \"LayerNormalization,Softmax,Erf\" } }\n"),
    )
    .unwrap();
    s.load_model("m").unwrap();
    assert_eq!(builds(&s), 3, "build option change must rebuild");
    // The model's bytes change the key (external data file edited).
    let ext = repo.add("ext", &test_model("external_data"), Some("backend: \"rusttrt\"\nmax_batch_size: 8\ninstance_group [ { kind: KIND_CPU } ]\nparameters { key: \"precision_mode\" value: { string_value: \"FP16\" } }\n"));
    s.load_model("ext").unwrap();
    let n = builds(&s);
    s.load_model("ext").unwrap();
    assert_eq!(builds(&s), n, "unchanged: hit");
    let data = ext.join("1/model.onnx.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[0] ^= 0x40;
    std::fs::write(&data, bytes).unwrap();
    s.load_model("ext").unwrap();
    assert_eq!(builds(&s), n + 1, "a changed weight must rebuild");
    assert_clean(&s);
}

#[test]
fn corrupt_truncated_or_foreign_entries_are_rebuilt_with_a_warning() {
    let repo = Repo::new();
    repo.add("m", &tiny_clip_dir(), Some(&fp16_config("")));
    let cache = repo.path().join("cache");
    {
        let s = server(&repo);
        s.load_model("m").unwrap();
    }
    let entry = entries(&cache).pop().expect("an entry was stored");
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let damage: [(&str, Damage); 3] = [
        (
            "flipped byte",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len() - 10;
                b[n] ^= 1
            }),
        ),
        (
            "truncated",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2)),
        ),
        (
            "foreign header",
            Box::new(|b: &mut Vec<u8>| b[..8].copy_from_slice(b"NOTOURS!")),
        ),
    ];
    for (what, f) in damage {
        let mut bytes = std::fs::read(&entry).unwrap();
        f(&mut bytes);
        std::fs::write(&entry, bytes).unwrap();
        let s = server(&repo);
        s.load_model("m").unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(builds(&s), 1, "{what}: rebuilt");
        let warned = s.log_lines().iter().any(|l| {
            l.level == "WARN"
                && l.msg
                    .contains(&entry.file_name().unwrap().to_string_lossy()[..16])
        }) || !log_matching(&s, "unusable").is_empty();
        assert!(warned, "{what}: no warning: {:#?}", s.log_lines());
        let again = server(&repo);
        again.load_model("m").unwrap();
        assert_eq!(builds(&again), 0, "{what}: replaced entry must hit");
        assert_clean(&s);
    }
}

#[test]
fn an_unusable_cache_location_falls_back_with_a_warning() {
    let repo = Repo::new();
    repo.add("m", &tiny_clip_dir(), Some(&fp16_config("")));
    // A regular file where the cache directory should be (permissions do not stop root).
    let blocked = repo.path().join("not-a-dir");
    std::fs::write(&blocked, b"x").unwrap();
    let s = server_with(&repo, &[], |o| {
        o.backend_config.retain(|(k, _)| k != "cache-dir");
        o.backend_config
            .push(("cache-dir".into(), blocked.display().to_string()));
    });
    s.load_model("m").expect("serves anyway");
    assert!(
        s.log_lines()
            .iter()
            .any(|l| l.level == "WARN" && l.msg.contains("not-a-dir")),
        "{:#?}",
        s.log_lines()
    );
    assert_eq!(
        entries(&repo.path().join("m/.rusttrt-cache")).len(),
        1,
        "stored beside the model instead"
    );
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    assert!(s
        .infer("m", request("x", &cases.cases[0]))
        .unwrap()
        .error
        .is_none());
    assert_clean(&s);
}

#[test]
fn eviction_holds_the_size_cap() {
    let repo = Repo::new();
    let cache = repo.path().join("cache");
    let s = server_with(&repo, &[("cache-max-size", "700K")], |_| {});
    for (i, ops) in [
        "LayerNormalization,Softmax",
        "LayerNormalization,Softmax,Erf",
        "LayerNormalization",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("m{i}");
        repo.add(&name, &tiny_clip_dir(), Some(&fp16_config(&format!("parameters {{ key: \"fp16_keep_fp32_ops\" value: {{ string_value: \"{ops}\" }} }}\n"))));
        s.load_model(&name).unwrap();
    }
    assert_eq!(builds(&s), 3);
    let files = entries(&cache);
    let total: u64 = walk_size(&cache);
    assert!(
        total <= 700 * 1024,
        "cache holds {total} bytes over the 700K cap ({} entries)",
        files.len()
    );
    assert!(files.len() < 3, "nothing was evicted");
    assert_clean(&s);
}

fn walk_size(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += walk_size(&p);
        } else if p.extension().is_some_and(|x| x == "engine" || x == "json") {
            n += p.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    n
}

#[test]
fn fp16_outputs_of_the_bundled_model_stay_within_tolerance() {
    let repo = Repo::new();
    repo.add("m", &tiny_clip_dir(), Some(&fp16_config("")));
    let s = server(&repo);
    s.load_model("m").unwrap();
    assert!(
        !log_matching(&s, "serving FP16").is_empty(),
        "{:#?}",
        s.log_lines()
    );
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    let (atol, rtol, min_cos) = cases.fp16.expect("fp16 tolerance in the cases file");
    for c in &cases.cases {
        let resp = s.infer("m", request(&c.name, c)).unwrap();
        check_response(&c.name, &resp, c, atol, rtol);
        let cos = min_row_cosine(&resp.outputs[0].as_f32(), &c.outputs[0].f32s(), 32);
        assert!(cos >= min_cos, "{}: min row cosine {cos}", c.name);
    }
    assert_clean(&s);
}

#[test]
fn the_guard_serves_fp32_when_fp16_is_unsafe() {
    let repo = Repo::new();
    repo.add(
        "u",
        &test_model("fp16_unsafe"),
        Some("backend: \"rusttrt\"\nmax_batch_size: 8\ninstance_group [ { kind: KIND_CPU } ]\nparameters { key: \"precision_mode\" value: { string_value: \"FP16\" } }\n"),
    );
    let s = server(&repo);
    s.load_model("u").unwrap();
    assert!(
        !log_matching(&s, "fails the accuracy guard").is_empty(),
        "{:#?}",
        s.log_lines()
    );
    assert!(!log_matching(&s, "serving FP32").is_empty());
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
    // The verdict is cached: the next load serves FP32 without building or guarding again.
    let again = server(&repo);
    again.load_model("u").unwrap();
    assert_eq!(log_matching(&again, "building a").len(), 0);
    assert!(!log_matching(&again, "serving FP32").is_empty());
    assert_clean(&s);
}

#[test]
fn two_processes_build_once() {
    let repo = Repo::new();
    repo.add("m", &tiny_clip_dir(), Some(&fp16_config("")));
    let rusttrt = rusttrt_host::testing::profile_dir()
        .unwrap()
        .join("rusttrt");
    if !rusttrt.exists() {
        let st = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .current_dir(root())
            .args(["build", "-p", "rusttrt-host", "--bin", "rusttrt"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let spawn = || {
        std::process::Command::new(&rusttrt)
            .args(["build", "--model-repository"])
            .arg(repo.path())
            .args(["--model", "m", "--backend-lib"])
            .arg(backend_lib())
            .arg("--backend-config")
            .arg(format!("onnxruntime-library={}", ort_library().display()))
            .arg("--backend-config")
            .arg(format!("cache-dir={}", repo.path().join("cache").display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let out = format!(
        "{}\n{}",
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout)
    );
    assert!(
        a.status.success() && b.status.success(),
        "{out}\n{}{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    assert_eq!(out.matches("engine cache miss").count(), 1, "{out}");
    assert_eq!(out.matches("engine cache hit").count(), 1, "{out}");
    // And the server then loads it without building.
    let s = server(&repo);
    s.load_model("m").unwrap();
    assert_eq!(builds(&s), 0);
}

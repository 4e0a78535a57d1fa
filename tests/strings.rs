//! STRING (BYTES) tensors through the host and the ONNX Runtime engine: auto-complete, batching
//! of several requests, chunked inputs (length prefixes split across chunks), malformed BYTES
//! answered per request, the FP16 path leaving strings alone, and the native TensorRT engine
//! refusing them.

mod common;

use common::*;
use rusttrt_host::{Chunk, InferRequest, InputTensor, MemoryType};
use serde_json::json;
use triton_abi::*;

const CONFIG: &str = r#"backend: "rusttrt"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 200000 preferred_batch_size: [ 6 ] }
instance_group [ { kind: KIND_CPU count: 1 } ]
"#;

/// Triton's BYTES wire format of `elems`.
fn bytes_of(elems: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for e in elems {
        v.extend_from_slice(&(e.len() as u32).to_le_bytes());
        v.extend_from_slice(e);
    }
    v
}

fn text(elems: &[&[u8]], rows: i64) -> InputTensor {
    InputTensor::new(
        "TEXT",
        TRITONSERVER_TYPE_BYTES,
        &[rows, elems.len() as i64 / rows],
        bytes_of(elems),
    )
}

fn score(rows: i64, v: f32) -> InputTensor {
    InputTensor::f32("SCORE", &[rows, 3], &vec![v; rows as usize * 3])
}

/// What the model computes, worked out here for arbitrary bytes (non-UTF-8, NULs).
fn expected(elems: &[&[u8]], score: f32) -> (Vec<u8>, Vec<u8>, Vec<i64>, Vec<f32>) {
    let pick: Vec<&[u8]> = elems
        .iter()
        .map(|e| if *e == b"rust" { &b"RUST!"[..] } else { *e })
        .collect();
    let hits = elems
        .chunks(3)
        .map(|r| r.iter().filter(|e| **e == b"rust").count() as i64)
        .collect();
    let boosted = elems
        .iter()
        .map(|e| score + f32::from(u8::from(*e == b"rust")))
        .collect();
    (bytes_of(elems), bytes_of(&pick), hits, boosted)
}

fn check_own(what: &str, resp: &rusttrt_host::InferResponse, elems: &[&[u8]], s: f32) {
    assert!(resp.error.is_none(), "{what}: {:?}", resp.error);
    let rows = elems.len() as i64 / 3;
    let (same, pick, hits, boosted) = expected(elems, s);
    let out = |n: &str| {
        resp.output(n)
            .unwrap_or_else(|| panic!("{what}: no output '{n}'"))
    };
    assert_eq!(out("SAME").datatype, TRITONSERVER_TYPE_BYTES);
    assert_eq!(out("SAME").shape, vec![rows, 3], "{what}");
    assert_eq!(out("SAME").bytes, same, "{what}: SAME");
    assert_eq!(out("PICK").bytes, pick, "{what}: PICK");
    assert_eq!(out("HITS").shape, vec![rows, 1], "{what}");
    let got_hits: Vec<i64> = out("HITS")
        .bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got_hits, hits, "{what}: HITS");
    assert_close(
        &format!("{what}: BOOSTED"),
        &out("BOOSTED").as_f32(),
        &boosted,
        0.0,
        0.0,
    );
}

/// Elements that are not text: a NUL inside, bytes that are not UTF-8, an empty one.
const ODD: [&[u8]; 6] = [
    b"nul\0inside",
    b"rust",
    b"\xff\xfe not utf-8",
    b"",
    b"rust",
    b"rust\0",
];

#[test]
fn string_tensors_are_auto_completed_batched_and_served_exactly() {
    let repo = Repo::new();
    repo.add("s", &test_model("strings"), Some(CONFIG));
    let server = server(&repo);
    server.load_model("s").unwrap();
    // Auto-complete writes TYPE_STRING, as onnxruntime_backend does.
    let cfg = server.model_config("s").unwrap();
    let dt = |list: &str, name: &str| {
        cfg[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["data_type"]
            .clone()
    };
    assert_eq!(dt("input", "TEXT"), json!("TYPE_STRING"));
    assert_eq!(dt("output", "SAME"), json!("TYPE_STRING"));
    assert_eq!(dt("output", "PICK"), json!("TYPE_STRING"));
    assert_eq!(dt("output", "HITS"), json!("TYPE_INT64"));

    // Batch 1 + 3 (the generated cases) + 2 (odd bytes) = 6 = the preferred size: one Execute.
    let cases = cases(&test_model("strings").join("cases.json"));
    let handles: Vec<_> = cases
        .cases
        .iter()
        .map(|c| server.submit("s", request(&c.name, c)).unwrap())
        .collect();
    let odd = server
        .submit(
            "s",
            InferRequest::new("odd", vec![text(&ODD, 2), score(2, 0.5)]),
        )
        .unwrap();
    for (h, c) in handles.into_iter().zip(&cases.cases) {
        check_response(&c.name, &h.wait().unwrap(), c, 0.0, 0.0);
    }
    check_own("odd bytes", &odd.wait().unwrap(), &ODD, 0.5);
    let stats = server.model_stats("s").unwrap();
    let s = &stats["model_stats"][0];
    assert_eq!(s["inference_count"], json!(6));
    assert_eq!(s["execution_count"], json!(1), "one batch of three: {s}");
    assert_clean(&server);
}

#[test]
fn chunked_string_inputs_are_gathered_with_prefixes_split_across_chunks() {
    let repo = Repo::new();
    repo.add("s", &test_model("strings"), Some(CONFIG));
    let server = server(&repo);
    server.load_model("s").unwrap();
    for (chunk, mem) in [
        (1, MemoryType::Cpu),
        (3, MemoryType::CpuPinned),
        (5, MemoryType::Cpu),
        (17, MemoryType::CpuPinned),
    ] {
        // Two requests in one batch, each chunked: the length prefixes straddle chunks (Triton
        // core refuses that, so the host's unchecked path brings it to the backend).
        let a = server
            .submit_unchecked(
                "s",
                InferRequest::new("a", vec![text(&ODD, 2).split(chunk, mem), score(2, 1.5)]),
            )
            .unwrap();
        let short: [&[u8]; 3] = [b"rust", b"x", b"rust"];
        let b = server
            .submit_unchecked(
                "s",
                InferRequest::new("b", vec![text(&short, 1).split(chunk, mem), score(1, -1.0)]),
            )
            .unwrap();
        check_own(&format!("chunks of {chunk}"), &a.wait().unwrap(), &ODD, 1.5);
        check_own(
            &format!("chunks of {chunk}, batch-mate"),
            &b.wait().unwrap(),
            &short,
            -1.0,
        );
    }
    assert_clean(&server);
}

#[test]
fn malformed_string_inputs_get_their_own_invalid_arg_and_the_batch_is_served() {
    let repo = Repo::new();
    repo.add("s", &test_model("strings"), Some(CONFIG));
    let server = server(&repo);
    server.load_model("s").unwrap();
    let good: [&[u8]; 3] = [b"rust", b"go", b"rust"];
    let whole = bytes_of(&good);
    let with_bytes = |id: &str, shape: &[i64], chunks: Vec<Vec<u8>>| {
        let mut t = InputTensor::new("TEXT", TRITONSERVER_TYPE_BYTES, shape, Vec::new());
        t.chunks = chunks
            .into_iter()
            .map(|bytes| Chunk {
                bytes,
                memory: MemoryType::Cpu,
            })
            .collect();
        InferRequest::new(id, vec![t, score(shape[0], 0.0)])
    };
    let bad_requests = [
        // The last length prefix cut short (2 of its 4 bytes).
        (
            with_bytes(
                "prefix cut",
                &[1, 3],
                vec![whole[..whole.len() - 4 - 2].to_vec()],
            ),
            vec!["'TEXT'", "length prefix"],
        ),
        // The last element runs past the end of the data.
        (
            with_bytes(
                "element cut",
                &[1, 3],
                vec![whole[..whole.len() - 1].to_vec()],
            ),
            vec!["'TEXT'", "past the end"],
        ),
        // A length near 4 GiB: never overflows, never read past the buffer.
        (
            with_bytes(
                "huge length",
                &[1, 3],
                vec![[&whole[..], &[0xff, 0xff, 0xff, 0xff, b'x']].concat()],
            ),
            vec!["'TEXT'", "past the end"],
        ),
        // Two elements where the shape says three.
        (
            with_bytes("too few", &[1, 3], vec![bytes_of(&good[..2])]),
            vec!["'TEXT'", "2 string elements", "expected 3"],
        ),
        // Four elements where the shape says three, split over chunks.
        (
            with_bytes(
                "too many",
                &[1, 3],
                vec![whole.clone(), bytes_of(&[&b"extra"[..]])],
            ),
            vec!["'TEXT'", "4 string elements", "expected 3"],
        ),
    ];
    for (req, needles) in bad_requests {
        let g = server
            .submit(
                "s",
                InferRequest::new("good", vec![text(&good, 1), score(1, 2.0)]),
            )
            .unwrap();
        let resp = server.submit_unchecked("s", req).unwrap().wait().unwrap();
        let (code, msg) = resp
            .error
            .clone()
            .unwrap_or_else(|| panic!("expected an error for {needles:?}"));
        assert_eq!(code, TRITONSERVER_ERROR_INVALID_ARG, "{msg}");
        for n in &needles {
            assert!(msg.contains(n), "'{msg}' should mention '{n}'");
        }
        assert!(resp.outputs.is_empty());
        check_own(
            "batch-mate of a bad request",
            &g.wait().unwrap(),
            &good,
            2.0,
        );
    }
    // Through the normal (normalizing) path the host rejects a count mismatch as Triton would.
    assert!(server
        .infer(
            "s",
            InferRequest::new("x", vec![text(&good[..2], 1), score(1, 0.0)])
        )
        .is_err());
    assert_clean(&server);
}

#[test]
fn fp16_leaves_string_tensors_alone_and_the_guard_compares_them() {
    let repo = Repo::new();
    repo.add(
        "s",
        &test_model("strings"),
        Some(&format!(
            "{CONFIG}parameters {{ key: \"precision_mode\" value: {{ string_value: \"FP16\" }} }}\n"
        )),
    );
    let server = server(&repo);
    server.load_model("s").unwrap();
    let guard = log_matching(&server, "strings from a");
    assert!(!guard.is_empty(), "the guard drew strings for TEXT");
    assert!(
        !log_matching(&server, "serving FP16").is_empty(),
        "the FP16 engine passed its guard: {:?}",
        server
            .log_lines()
            .iter()
            .map(|l| &l.msg)
            .collect::<Vec<_>>()
    );
    let resp = server
        .infer(
            "s",
            InferRequest::new("odd", vec![text(&ODD, 2), score(2, 0.25)]),
        )
        .unwrap();
    // Strings pass through untouched; 0.25 and 1.25 are exact in FP16.
    check_own("FP16", &resp, &ODD, 0.25);
    assert_clean(&server);
}

#[test]
fn the_native_tensorrt_engine_refuses_string_models_clearly() {
    let repo = Repo::new();
    repo.add(
        "s",
        &test_model("strings"),
        Some(&format!(
            "{CONFIG}parameters {{ key: \"engine\" value: {{ string_value: \"tensorrt\" }} }}\n"
        )),
    );
    let server = server(&repo);
    let e = server.load_model("s").unwrap_err().to_string();
    assert!(
        e.contains("'TEXT'") && e.contains("STRING") && e.contains("onnxruntime"),
        "{e}"
    );
    assert_clean(&server);
}

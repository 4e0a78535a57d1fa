//! Shapes the way real Triton carries them, through the host with minimal configs and
//! auto-complete: scalar (rank-0) tensors, `[batch]` tensors, zero-size and symbolic dims,
//! models without inputs, a Hugging Face-like text encoder whose output dim is symbolic in the
//! file but fixed by ONNX Runtime's shape inference, BF16 arithmetic, and a repository loaded in
//! parallel.

mod common;

use common::*;
use rusttrt_host::{InferRequest, InputTensor, Server};
use serde_json::json;
use triton_abi::*;

fn minimal(name: &str, max_batch_size: u32) -> String {
    format!("name: \"{name}\"\nbackend: \"rusttrt\"\nmax_batch_size: {max_batch_size}\n")
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn load_err(server: &Server, name: &str) -> String {
    server
        .load_model(name)
        .expect_err("the load must fail")
        .to_string()
}

#[test]
fn scalar_tensors_of_a_non_batching_model() {
    let repo = Repo::new();
    repo.add(
        "scalar_io",
        &test_model("scalar_io"),
        Some(&minimal("scalar_io", 0)),
    );
    let server = server(&repo);
    server.load_model("scalar_io").expect("load");
    let cfg = server.model_config("scalar_io").unwrap();
    assert_eq!(cfg["max_batch_size"], json!(0), "{cfg}");
    // onnxruntime_backend's auto-complete: a rank-0 tensor of a non-batching model is dims [1]
    // without a reshape (Triton core refuses an empty reshape there).
    for (list, name) in [("input", "x"), ("output", "sum")] {
        let t = cfg[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap();
        assert_eq!(t["dims"], json!([1]), "{t}");
        assert!(t.get("reshape").is_none(), "{t}");
    }
    let resp = server
        .infer(
            "scalar_io",
            InferRequest::new(
                "a",
                vec![
                    InputTensor::f32("x", &[1], &[0.5]),
                    InputTensor::f32("v", &[3], &[1.0, 2.0, 4.0]),
                ],
            ),
        )
        .unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    // The scalar output comes back with the config's dims, as onnxruntime_backend sends it.
    let sum = resp.output("sum").unwrap();
    assert_eq!(sum.shape, vec![1]);
    assert_eq!(sum.as_f32(), vec![7.5]);
    let scaled = resp.output("scaled").unwrap();
    assert_eq!(scaled.shape, vec![3]);
    assert_eq!(scaled.as_f32(), vec![0.5, 1.0, 2.0]);
    // A request that gives the scalar any other shape is refused by the host (Triton's check).
    let bad = server.infer(
        "scalar_io",
        InferRequest::new(
            "b",
            vec![
                InputTensor::f32("x", &[2], &[0.5, 1.0]),
                InputTensor::f32("v", &[3], &[1.0, 2.0, 4.0]),
            ],
        ),
    );
    assert!(bad.is_err(), "{bad:?}");
    assert_clean(&server);
}

#[test]
fn scalar_configs_triton_or_the_model_refuses() {
    let repo = Repo::new();
    let io = |mbs: u32, x: &str| {
        format!(
            "{}input [ {{ name: \"x\" data_type: TYPE_FP32 {x} }}, \
             {{ name: \"v\" data_type: TYPE_FP32 dims: [ 3 ] }} ]\n\
             output [ {{ name: \"sum\" data_type: TYPE_FP32 dims: [ 1 ] }}, \
             {{ name: \"scaled\" data_type: TYPE_FP32 dims: [ 3 ] }} ]\n",
            minimal("m", mbs)
        )
    };
    // Triton core: an empty reshape in a non-batching model.
    repo.add(
        "m",
        &test_model("scalar_io"),
        Some(&io(0, "dims: [ 1 ] reshape { shape: [ ] }")),
    );
    let server = server(&repo);
    let e = load_err(&server, "m");
    assert!(e.contains("empty reshape"), "{e}");
    // The backend (onnxruntime_backend's rule): a scalar takes only 1s.
    std::fs::write(repo.path().join("m/config.pbtxt"), io(0, "dims: [ 2 ]")).unwrap();
    let e = load_err(&server, "m");
    assert!(
        e.contains("'x'") && e.contains("scalar") && e.contains("[2]"),
        "{e}"
    );
    // A scalar has no batch dimension.
    std::fs::write(repo.path().join("m/config.pbtxt"), io(4, "dims: [ 1 ]")).unwrap();
    let e = load_err(&server, "m");
    assert!(e.contains("'x'") && e.contains("scalar"), "{e}");
    // dims [1, 1] is only 1s: accepted, as by onnxruntime_backend.
    std::fs::write(repo.path().join("m/config.pbtxt"), io(0, "dims: [ 1, 1 ]")).unwrap();
    server.load_model("m").expect("dims [1, 1] for a scalar");
    let resp = server
        .infer(
            "m",
            InferRequest::new(
                "a",
                vec![
                    InputTensor::f32("x", &[1, 1], &[2.0]),
                    InputTensor::f32("v", &[3], &[1.0, 2.0, 4.0]),
                ],
            ),
        )
        .unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert_eq!(resp.output("sum").unwrap().as_f32(), vec![9.0]);
    // Triton core lets an input listed twice through; the backend refuses it, by name.
    std::fs::write(
        repo.path().join("m/config.pbtxt"),
        io(
            0,
            "dims: [ 1 ] }, { name: \"v\" data_type: TYPE_FP32 dims: [ 3 ]",
        ),
    )
    .unwrap();
    let e = load_err(&server, "m");
    assert!(e.contains("input 'v' is listed twice"), "{e}");
    assert_clean(&server);
}

#[test]
fn batch_tensors_are_dims_1_with_an_empty_reshape() {
    let repo = Repo::new();
    repo.add("bs", &test_model("batch_scalar"), Some(&minimal("bs", 0)));
    let server = server(&repo);
    server.load_model("bs").expect("load");
    let cfg = server.model_config("bs").unwrap();
    assert_eq!(
        cfg["max_batch_size"],
        json!(4),
        "default-max-batch-size: {cfg}"
    );
    assert!(cfg["dynamic_batching"].is_object(), "{cfg}");
    for t in cfg["input"]
        .as_array()
        .unwrap()
        .iter()
        .chain(cfg["output"].as_array().unwrap())
    {
        assert_eq!(t["dims"], json!([1]), "{t}");
        assert_eq!(t["reshape"], json!({"shape": []}), "an empty reshape: {t}");
    }
    // Two requests, batched together by the dynamic batcher or not: each gets its own rows.
    let xs: [&[f32]; 2] = [&[1.5, -2.0, 0.25], &[-0.5]];
    let handles: Vec<_> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            server
                .submit(
                    "bs",
                    InferRequest::new(
                        &i.to_string(),
                        vec![InputTensor::f32("x", &[x.len() as i64, 1], x)],
                    ),
                )
                .unwrap()
        })
        .collect();
    for (x, h) in xs.iter().zip(handles) {
        let resp = h.wait().unwrap();
        assert!(resp.error.is_none(), "{:?}", resp.error);
        let y = resp.output("y").unwrap();
        assert_eq!(y.shape, vec![x.len() as i64, 1]);
        assert_eq!(y.as_f32(), x.iter().map(|v| v * 2.0).collect::<Vec<_>>());
        let n = resp.output("n").unwrap();
        assert_eq!(n.shape, vec![x.len() as i64, 1]);
        assert_eq!(n.datatype, TRITONSERVER_TYPE_BOOL);
        assert_eq!(
            n.bytes,
            x.iter().map(|v| u8::from(*v > 0.0)).collect::<Vec<_>>()
        );
    }
    // dims [1] without the reshape cannot match a [batch] tensor: the message says how.
    repo.add(
        "bs2",
        &test_model("batch_scalar"),
        Some(&format!(
            "{}input [ {{ name: \"x\" data_type: TYPE_FP32 dims: [ 1 ] }} ]\n\
             output [ {{ name: \"y\" data_type: TYPE_FP32 dims: [ 1 ] reshape {{ shape: [ ] }} }}, \
             {{ name: \"n\" data_type: TYPE_BOOL dims: [ 1 ] reshape {{ shape: [ ] }} }} ]\n",
            minimal("bs2", 4)
        )),
    );
    let e = load_err(&server, "bs2");
    assert!(e.contains("'x'") && e.contains("reshape"), "{e}");
    assert_clean(&server);
}

#[test]
fn zero_size_and_symbolic_dims() {
    let repo = Repo::new();
    repo.add("z", &test_model("zero_dim"), Some(&minimal("z", 0)));
    let server = server(&repo);
    server.load_model("z").expect("load");
    let cfg = server.model_config("z").unwrap();
    // A fixed 0 and a symbolic dim are both written -1 (Triton core refuses 0 in dims); the
    // fixed 0 keeps the model from batching.
    assert_eq!(cfg["max_batch_size"], json!(0));
    assert_eq!(cfg["input"][0]["dims"], json!([-1, 3]), "{cfg}");
    assert_eq!(cfg["input"][1]["dims"], json!([2, -1]), "{cfg}");
    assert_eq!(cfg["output"][1]["dims"], json!([2, -1]), "{cfg}");
    for n in [0i64, 2] {
        let x: Vec<f32> = (0..n * 3).map(|i| i as f32 - 1.5).collect();
        let resp = server
            .infer(
                "z",
                InferRequest::new(
                    &format!("n{n}"),
                    vec![
                        InputTensor::f32("x", &[n, 3], &x),
                        InputTensor::f32("z", &[2, 0], &[]),
                    ],
                ),
            )
            .unwrap();
        assert!(resp.error.is_none(), "n = {n}: {:?}", resp.error);
        let x2 = resp.output("x2").unwrap();
        assert_eq!(x2.shape, vec![n, 3]);
        assert_eq!(x2.as_f32(), x.iter().map(|v| v * 2.0).collect::<Vec<_>>());
        let z1 = resp.output("z1").unwrap();
        assert_eq!(z1.shape, vec![2, 0]);
        assert!(z1.bytes.is_empty());
    }
    // The fixed 0 is the model's: another size is refused (by the engine, named).
    let resp = server.infer(
        "z",
        InferRequest::new(
            "bad",
            vec![
                InputTensor::f32("x", &[1, 3], &[0.0; 3]),
                InputTensor::f32("z", &[2, 1], &[0.0; 2]),
            ],
        ),
    );
    let failed = match resp {
        Err(_) => true,
        Ok(r) => r.error.is_some(),
    };
    assert!(failed, "a z of [2, 1] was served");
    assert_clean(&server);
}

#[test]
fn model_without_inputs() {
    let repo = Repo::new();
    repo.add("gen", &test_model("no_input"), Some(&minimal("gen", 0)));
    let server = server(&repo);
    server
        .load_model("gen")
        .expect("a model without inputs loads");
    let cfg = server.model_config("gen").unwrap();
    assert!(
        cfg.get("input")
            .is_none_or(|i| i.as_array().is_some_and(|a| a.is_empty())),
        "{cfg}"
    );
    for id in ["a", "b"] {
        let resp = server.infer("gen", InferRequest::new(id, vec![])).unwrap();
        assert!(resp.error.is_none(), "{:?}", resp.error);
        let table = resp.output("table").unwrap();
        assert_eq!(table.shape, vec![2, 3]);
        let want: Vec<u8> = (0..6i64).flat_map(|i| (i * 7 - 5).to_le_bytes()).collect();
        assert_eq!(table.bytes, want);
        let pi = resp.output("pi").unwrap();
        assert_eq!(pi.shape, vec![1]);
        assert_eq!(pi.as_f32(), vec![3.25]);
    }
    // Triton refuses an input the model does not have.
    let bad = server.infer(
        "gen",
        InferRequest::new("c", vec![InputTensor::f32("x", &[1], &[1.0])]),
    );
    assert!(bad.is_err(), "{bad:?}");
    assert_clean(&server);
}

/// The reported case: a sentence-transformers encoder exported by torch.onnx.export, output
/// `[batch, <symbolic>]` that ONNX Runtime's shape inference fixes to 384, served with a config
/// of only `name`, `backend` and `max_batch_size`.
#[test]
fn hf_text_encoder_with_a_minimal_config() {
    let repo = Repo::new();
    let dir = test_model("text_encoder");
    repo.add("enc", &dir, Some(&minimal("enc", 8)));
    // The same with an FP16 engine (converted, guarded, cached), as on a GPU.
    repo.add(
        "enc16",
        &dir,
        Some(&format!(
            "{}parameters {{ key: \"precision_mode\" value {{ string_value: \"FP16\" }} }}\n",
            minimal("enc16", 8)
        )),
    );
    let server = server(&repo);
    for (name, load) in server.load_models(&["enc".to_string(), "enc16".to_string()]) {
        load.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let cfg = server.model_config("enc").unwrap();
    assert_eq!(cfg["max_batch_size"], json!(8));
    for i in 0..3 {
        assert_eq!(cfg["input"][i]["data_type"], "TYPE_INT64");
        assert_eq!(cfg["input"][i]["dims"], json!([-1]), "{cfg}");
    }
    let cases = cases(&dir.join("cases.json"));
    for name in ["enc", "enc16"] {
        let (atol, rtol) = if name == "enc" {
            (cases.atol, cases.rtol)
        } else {
            (2e-2, 2e-2)
        };
        for case in &cases.cases {
            let resp = server.infer(name, request(&case.name, case)).unwrap();
            check_response(&format!("{name} {}", case.name), &resp, case, atol, rtol);
        }
    }
    assert_clean(&server);
}

#[test]
fn bf16_arithmetic_round_trips_exactly() {
    use half::bf16;
    let repo = Repo::new();
    repo.add("b", &test_model("bf16_compute"), Some(&minimal("b", 0)));
    let server = server(&repo);
    server.load_model("b").expect("load");
    let cfg = server.model_config("b").unwrap();
    assert_eq!(cfg["input"][0]["data_type"], "TYPE_BF16");
    assert_eq!(cfg["output"][0]["data_type"], "TYPE_BF16");
    let xs: Vec<bf16> = [
        1.0f32, -2.5, 0.1, 3.0e38, -1.0e-38, 65504.0, 7.0, -0.0, 1.5e-3, 123.456, -99.0, 0.333,
    ]
    .iter()
    .map(|&v| bf16::from_f32(v))
    .collect();
    let bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    let resp = server
        .infer(
            "b",
            InferRequest::new(
                "a",
                vec![InputTensor::new(
                    "x",
                    TRITONSERVER_TYPE_BF16,
                    &[3, 4],
                    bytes,
                )],
            ),
        )
        .unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    let y = resp.output("y").unwrap();
    assert_eq!(y.datatype, TRITONSERVER_TYPE_BF16);
    assert_eq!(y.shape, vec![3, 4]);
    assert_eq!(y.bytes.len(), 12 * 2, "2 bytes per BF16 element");
    // Doubling is exact in BF16 (an exponent step) unless it overflows to infinity.
    let want: Vec<u8> = xs
        .iter()
        .flat_map(|v| bf16::from_f32(v.to_f32() * 2.0).to_le_bytes())
        .collect();
    assert_eq!(y.bytes, want);
    let f = resp.output("f").unwrap();
    assert_eq!(f.datatype, TRITONSERVER_TYPE_FP32);
    assert_eq!(
        f.bytes,
        f32_bytes(&xs.iter().map(|v| v.to_f32()).collect::<Vec<_>>()),
        "widening BF16 to FP32 is exact"
    );
    assert_clean(&server);
}

#[test]
fn repository_loads_in_parallel() {
    let repo = Repo::new();
    let models = [
        "scalar_io",
        "batch_scalar",
        "zero_dim",
        "no_input",
        "bf16_compute",
        "text_encoder",
        "multi_io",
        "no_batch",
    ];
    for m in models {
        for copy in 0..2 {
            let name = format!("{m}_{copy}");
            repo.add(&name, &test_model(m), Some(&minimal(&name, 0)));
        }
    }
    // A model that fails to load must not disturb the others.
    repo.add(
        "corrupt",
        &test_model("corrupt"),
        Some(&minimal("corrupt", 0)),
    );
    let server = server(&repo);
    let results = server.load_repository().unwrap();
    assert_eq!(results.len(), models.len() * 2 + 1);
    for (name, r) in &results {
        if name == "corrupt" {
            assert!(r.is_err(), "the corrupt model loaded");
        } else {
            r.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    assert!(
        server.peak_parallel_loads() > 1,
        "models were loaded one at a time (peak {})",
        server.peak_parallel_loads()
    );
    assert!(
        server.peak_parallel_loads() <= 4,
        "Triton's default is 4 load threads"
    );
    let resp = server
        .infer("no_input_1", InferRequest::new("a", vec![]))
        .unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert_clean(&server);
}

#[test]
fn a_zero_size_batch_is_served() {
    // Triton core passes a request with a batch dimension of 0 to the backend.
    let repo = Repo::new();
    repo.add("bs", &test_model("batch_scalar"), Some(&minimal("bs", 0)));
    repo.add("enc", &test_model("text_encoder"), Some(&minimal("enc", 4)));
    let server = server(&repo);
    server.load_model("bs").expect("load");
    server.load_model("enc").expect("load");
    let resp = server
        .infer(
            "bs",
            InferRequest::new("empty", vec![InputTensor::f32("x", &[0, 1], &[])]),
        )
        .unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert_eq!(resp.output("y").unwrap().shape, vec![0, 1]);
    assert!(resp.output("y").unwrap().bytes.is_empty());
    assert_eq!(resp.output("n").unwrap().shape, vec![0, 1]);
    let ids = |b: i64| {
        InputTensor::new(
            "input_ids",
            TRITONSERVER_TYPE_INT64,
            &[b, 5],
            vec![0; b as usize * 5 * 8],
        )
    };
    let mask = |b: i64, n: &str| {
        InputTensor::new(
            n,
            TRITONSERVER_TYPE_INT64,
            &[b, 5],
            vec![0; b as usize * 5 * 8],
        )
    };
    let resp = server
        .infer(
            "enc",
            InferRequest::new(
                "empty",
                vec![ids(0), mask(0, "attention_mask"), mask(0, "token_type_ids")],
            ),
        )
        .unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert_eq!(
        resp.output("sentence_embedding").unwrap().shape,
        vec![0, 384]
    );
    assert_eq!(
        resp.output("token_embeddings").unwrap().shape,
        vec![0, 5, 384]
    );
    assert_clean(&server);
}

#[test]
fn dynamic_batching_with_max_batch_size_0_is_served() {
    // Triton core accepts it (each batch is then one request); so must the backend.
    let repo = Repo::new();
    repo.add(
        "nb",
        &test_model("no_batch"),
        Some(&format!("{}dynamic_batching {{ }}\n", minimal("nb", 0))),
    );
    let server = server(&repo);
    server.load_model("nb").expect("load");
    let cfg = server.model_config("nb").unwrap();
    assert!(cfg["dynamic_batching"].is_object(), "{cfg}");
    let case = &cases(&test_model("no_batch").join("cases.json")).cases[0];
    let handles: Vec<_> = (0..3)
        .map(|i| server.submit("nb", request(&i.to_string(), case)).unwrap())
        .collect();
    for h in handles {
        check_response("no_batch", &h.wait().unwrap(), case, 1e-6, 1e-6);
    }
    assert_clean(&server);
}

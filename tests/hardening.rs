//! Hardening (issue 9) through the host on the built .so: planted model files, requests whose
//! sizes overflow, BOOL inputs that are not 0/1.

mod common;

use common::*;
use protobuf::{Message, MessageField};
use rusttrt_host::{InferRequest, InputTensor};
use std::path::Path;
use std::time::Duration;
use triton_abi::{TRITONSERVER_ERROR_INVALID_ARG, TRITONSERVER_TYPE_BOOL, TRITONSERVER_TYPE_FP32};
use triton_rusttrt::onnx::proto::onnx::tensor_shape_proto::Dimension;
use triton_rusttrt::onnx::proto::onnx::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use triton_rusttrt::onnx::proto::onnx::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// A value info with symbolic dims named by `dims` (a number is a fixed dim).
fn vi(name: &str, elem: i32, dims: &[&str]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in dims {
        let mut dim = Dimension::new();
        match d.parse::<i64>() {
            Ok(v) => dim.set_dim_value(v),
            Err(_) => dim.set_dim_param(d.to_string()),
        }
        shape.dim.push(dim);
    }
    let mut tt = TypeTensor::new();
    tt.set_elem_type(elem);
    tt.shape = MessageField::some(shape);
    let mut tp = TypeProto::new();
    tp.value = Some(TypeValue::TensorType(tt));
    let mut v = ValueInfoProto::new();
    v.set_name(name.into());
    v.type_ = MessageField::some(tp);
    v
}

/// `OUT = Identity(IN)`, both `elem` with `dims`, written to `<dir>/1/model.onnx`.
fn identity_model(dir: &Path, elem: i32, dims: &[&str]) {
    let mut g = GraphProto::new();
    g.set_name("identity".into());
    g.input.push(vi("IN", elem, dims));
    g.output.push(vi("OUT", elem, dims));
    let mut n = NodeProto::new();
    n.set_op_type("Identity".into());
    n.input.push("IN".into());
    n.output.push("OUT".into());
    g.node.push(n);
    let mut m = ModelProto::new();
    m.set_ir_version(8);
    let mut o = OperatorSetIdProto::new();
    o.set_version(17);
    m.opset_import.push(o);
    m.graph = MessageField::some(g);
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::write(dir.join("1/model.onnx"), m.write_to_bytes().unwrap()).unwrap();
}

const BATCHED: &str = r#"
backend: "rusttrt"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 100000 }
instance_group [ { kind: KIND_CPU count: 1 } ]
"#;

fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("{what} did not finish in 120 s"))
}

/// A request whose dims multiply past `usize` (or whose byte size does) gets its own
/// INVALID_ARG naming the input; the request batched with it is served. Before: the byte size
/// wrapped to 0, so a request with no data passed validation and reached the engine (or, in a
/// debug build, the overflow panicked and failed the whole batch).
#[test]
fn a_request_whose_size_overflows_gets_its_own_invalid_arg() {
    let repo = Repo::new();
    let dir = repo.path().join("m");
    identity_model(&dir, 1, &["batch", "n", "k"]);
    std::fs::write(dir.join("config.pbtxt"), BATCHED).unwrap();
    let server = server(&repo);
    server.load_model("m").unwrap();
    for (shape, needle) in [
        (vec![1, 1 << 32, 1 << 32], "overflows"), // element count overflows
        (vec![1, 1 << 31, 1 << 31], "overflows"), // 2^62 elements × 4 bytes overflows
        (vec![1, i64::MAX, 3], "overflows"),      // element count overflows
        (vec![1, 1 << 40, 1 << 10], "expected 4503599627370496"), // no overflow: a size mismatch
    ] {
        let good = server
            .submit(
                "m",
                InferRequest::new(
                    "good",
                    vec![InputTensor::f32("IN", &[1, 2, 2], &[1.0, 2.0, 3.0, 4.0])],
                ),
            )
            .unwrap();
        let bad = InferRequest::new(
            "huge",
            vec![InputTensor::new(
                "IN",
                TRITONSERVER_TYPE_FP32,
                &shape,
                vec![],
            )],
        );
        let resp = server.submit_unchecked("m", bad).unwrap().wait().unwrap();
        let (code, msg) = resp.error.clone().expect("the huge request must fail");
        assert_eq!(code, TRITONSERVER_ERROR_INVALID_ARG, "{msg}");
        assert!(
            msg.contains("input 'IN'") && msg.contains(needle),
            "{shape:?}: {msg}"
        );
        let good = good.wait().unwrap();
        assert!(good.error.is_none(), "{:?}", good.error);
        assert_eq!(good.outputs[0].as_f32(), vec![1.0, 2.0, 3.0, 4.0]);
    }
    assert_clean(&server);
}

/// Any non-zero BOOL byte reaches the engine as 1 (true), in one buffer or split over several.
#[test]
fn bool_inputs_are_normalized_before_the_engine() {
    let repo = Repo::new();
    repo.add(
        "m",
        &test_model("dtype_bool"),
        Some("backend: \"rusttrt\"\nmax_batch_size: 8\n"),
    );
    let server = server(&repo);
    server.load_model("m").unwrap();
    let raw = vec![0u8, 1, 2, 255, 0, 0x80, 1, 7];
    for chunk in [8, 3] {
        let t = InputTensor::new("IN", TRITONSERVER_TYPE_BOOL, &[2, 4], raw.clone())
            .split(chunk, rusttrt_host::MemoryType::Cpu);
        let resp = server
            .infer("m", InferRequest::new("bools", vec![t]))
            .unwrap();
        assert!(resp.error.is_none(), "{:?}", resp.error);
        assert_eq!(
            resp.outputs[0].bytes,
            vec![0, 1, 1, 1, 0, 1, 1, 1],
            "chunks of {chunk}"
        );
    }
    // Already 0/1: unchanged.
    let resp = server
        .infer(
            "m",
            InferRequest::new(
                "clean",
                vec![InputTensor::new(
                    "IN",
                    TRITONSERVER_TYPE_BOOL,
                    &[1, 4],
                    vec![1, 0, 0, 1],
                )],
            ),
        )
        .unwrap();
    assert_eq!(resp.outputs[0].bytes, vec![1, 0, 0, 1]);
    assert_clean(&server);
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A FIFO or a device as model.onnx fails that model's load with a message naming the file,
/// without blocking the load thread (an open without O_NONBLOCK waits for a writer forever;
/// /dev/zero never ends).
#[test]
fn a_fifo_or_device_as_model_file_fails_the_load_without_hanging() {
    for kind in ["fifo", "device"] {
        let repo = Repo::new();
        let dir = repo.path().join("m");
        std::fs::create_dir_all(dir.join("1")).unwrap();
        let model = dir.join("1/model.onnx");
        match kind {
            "fifo" => mkfifo(&model),
            _ => std::os::unix::fs::symlink("/dev/zero", &model).unwrap(),
        }
        std::fs::write(
            dir.join("config.pbtxt"),
            "backend: \"rusttrt\"\nmax_batch_size: 8\ninput [{ name: \"IN\" data_type: TYPE_FP32 dims: [4] }]\noutput [{ name: \"OUT\" data_type: TYPE_FP32 dims: [4] }]\n",
        )
        .unwrap();
        let server = server(&repo);
        let e = within("loading a model whose file is a FIFO", move || {
            server.load_model("m").unwrap_err()
        });
        let msg = e.to_string();
        let want = if kind == "fifo" {
            "FIFO"
        } else {
            "character device"
        };
        assert!(msg.contains(want) && msg.contains("model.onnx"), "{msg}");
    }
}

/// External data reached through a symlink out of the model's directory, or that is a FIFO,
/// fails the load with our message, before ONNX Runtime opens it (ONNX Runtime would block on
/// the FIFO forever).
#[test]
fn external_data_symlinked_out_or_a_fifo_fails_the_load() {
    for kind in ["symlink", "fifo"] {
        let repo = Repo::new();
        let dir = repo.add("m", &test_model("external_data"), None);
        let data = dir.join("1/model.onnx.data");
        assert!(
            data.is_file(),
            "the external_data test model has its data file"
        );
        let outside = tempfile::tempdir().unwrap();
        let moved = outside.path().join("model.onnx.data");
        std::fs::rename(&data, &moved).unwrap();
        match kind {
            "symlink" => std::os::unix::fs::symlink(&moved, &data).unwrap(),
            _ => mkfifo(&data),
        }
        let server = server(&repo);
        let msg = within("loading a model with planted external data", move || {
            server.load_model("m").unwrap_err().to_string()
        });
        let want = if kind == "fifo" {
            "FIFO"
        } else {
            "outside the directory"
        };
        assert!(
            msg.contains(want) && msg.contains("model.onnx.data"),
            "{msg}"
        );
    }
}

/// Found by tests/fuzz.rs (request_tensors): a request that names no output got every output
/// (Triton's rule: a response carries only requested outputs; now its own INVALID_ARG, as
/// Triton never sends one), and one naming an output twice got it twice (a rule violation,
/// then an error response with outputs, then no response).
#[test]
fn only_requested_outputs_each_once() {
    let repo = Repo::new();
    repo.add(
        "m",
        &test_model("multi_io"),
        Some("backend: \"rusttrt\"\nmax_batch_size: 8\n"),
    );
    let server = server(&repo);
    server.load_model("m").unwrap();
    let req = |outputs: &[&str]| {
        let mut r = InferRequest::new(
            "outs",
            vec![
                InputTensor::f32("A", &[1, 4], &[1.0, 2.0, 3.0, 4.0]),
                InputTensor::new(
                    "B",
                    triton_abi::TRITONSERVER_TYPE_INT64,
                    &[1, 2],
                    vec![0; 16],
                ),
            ],
        );
        r.outputs = Some(outputs.iter().map(|s| s.to_string()).collect());
        r
    };
    let resp = server
        .submit_unchecked("m", req(&[]))
        .unwrap()
        .wait()
        .unwrap();
    let (code, msg) = resp.error.clone().expect("no output requested");
    assert_eq!(code, TRITONSERVER_ERROR_INVALID_ARG, "{msg}");
    assert!(msg.contains("asks for no output"), "{msg}");
    assert!(resp.outputs.is_empty(), "{:?}", resp.outputs);
    let resp = server
        .submit_unchecked("m", req(&["ROWSUM", "SUM", "ROWSUM"]))
        .unwrap()
        .wait()
        .unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    let names: Vec<&str> = resp.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.contains(&"ROWSUM") && names.contains(&"SUM"),
        "{names:?}"
    );
    assert_clean(&server);
}

/// The FP16 guard looks up embedding rows over the whole table (issue 9, item 4): a table whose
/// rows 0 and 1 are harmless and whose other rows hold values FP16 cannot represent (clamped to
/// 65504) fails the guard and is served in FP32. Before, the guard fed indices 0 and 1 only,
/// passed, and the FP16 engine served 65504 for 1e5.
#[test]
fn the_fp16_guard_looks_up_the_whole_embedding_table() {
    use triton_rusttrt::onnx::proto::onnx::TensorProto;
    let rows = 1000usize;
    let width = 8usize;
    let mut values = Vec::with_capacity(rows * width);
    for r in 0..rows {
        for c in 0..width {
            let v = if r < 2 {
                (c as f32 - 3.5) / 4.0
            } else if c % 2 == 0 {
                1e5 + r as f32
            } else {
                0.25
            };
            values.push(v);
        }
    }
    let mut table = TensorProto::new();
    table.set_name("table".into());
    table.set_data_type(1);
    table.dims = vec![rows as i64, width as i64];
    table.raw_data = Some(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    let mut g = GraphProto::new();
    g.set_name("embedding".into());
    g.input.push(vi("ids", 7, &["batch", "seq"]));
    g.output.push(vi("emb", 1, &["batch", "seq", "8"]));
    g.initializer.push(table);
    let mut n = NodeProto::new();
    n.set_op_type("Gather".into());
    n.input.extend(["table".to_string(), "ids".to_string()]);
    n.output.push("emb".into());
    g.node.push(n);
    let mut m = ModelProto::new();
    m.set_ir_version(8);
    let mut o = OperatorSetIdProto::new();
    o.set_version(17);
    m.opset_import.push(o);
    m.graph = MessageField::some(g);
    let repo = Repo::new();
    let dir = repo.path().join("e");
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::write(dir.join("1/model.onnx"), m.write_to_bytes().unwrap()).unwrap();
    std::fs::write(
        dir.join("config.pbtxt"),
        "backend: \"rusttrt\"\nmax_batch_size: 4\ninstance_group [ { kind: KIND_CPU } ]\n\
         parameters { key: \"precision_mode\" value: { string_value: \"FP16\" } }\n",
    )
    .unwrap();
    let server = server(&repo);
    server.load_model("e").unwrap();
    assert!(
        !log_matching(&server, "indices over [0, 1000)").is_empty(),
        "{:#?}",
        server.log_lines()
    );
    assert!(
        !log_matching(&server, "values clamped").is_empty(),
        "{:#?}",
        server.log_lines()
    );
    assert!(
        !log_matching(&server, "fails the accuracy guard").is_empty(),
        "{:#?}",
        server.log_lines()
    );
    let ids: Vec<u8> = [5i64, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let resp = server
        .infer(
            "e",
            InferRequest::new(
                "lookup",
                vec![InputTensor::new(
                    "ids",
                    triton_abi::TRITONSERVER_TYPE_INT64,
                    &[1, 2],
                    ids,
                )],
            ),
        )
        .unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert_eq!(resp.outputs[0].as_f32()[0], 1e5 + 5.0, "served in FP32");
    assert_clean(&server);
}

/// A weight FP16 cannot represent (66000, clamped to 65504: 0.75 % off, under the guard's bars)
/// that feeds an output fails the guard unless `fp16_allow_clamping` is true (issue 9, item 4).
#[test]
fn a_clamped_weight_feeding_an_output_fails_the_guard_unless_allowed() {
    use triton_rusttrt::onnx::proto::onnx::TensorProto;
    let mut w = TensorProto::new();
    w.set_name("w".into());
    w.set_data_type(1);
    w.dims = vec![4];
    w.raw_data = Some(
        [1.0f32, 1.0, 1.0, 66000.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    );
    let mut g = GraphProto::new();
    g.set_name("scale".into());
    g.input.push(vi("x", 1, &["batch", "4"]));
    g.output.push(vi("y", 1, &["batch", "4"]));
    g.initializer.push(w);
    let mut n = NodeProto::new();
    n.set_op_type("Mul".into());
    n.input.extend(["x".to_string(), "w".to_string()]);
    n.output.push("y".into());
    g.node.push(n);
    let mut m = ModelProto::new();
    m.set_ir_version(8);
    let mut o = OperatorSetIdProto::new();
    o.set_version(17);
    m.opset_import.push(o);
    m.graph = MessageField::some(g);
    for allow in [false, true] {
        let repo = Repo::new();
        let dir = repo.path().join("s");
        std::fs::create_dir_all(dir.join("1")).unwrap();
        std::fs::write(dir.join("1/model.onnx"), m.write_to_bytes().unwrap()).unwrap();
        std::fs::write(
            dir.join("config.pbtxt"),
            format!(
                "backend: \"rusttrt\"\nmax_batch_size: 4\ninstance_group [ {{ kind: KIND_CPU }} ]\n\
                 parameters {{ key: \"precision_mode\" value: {{ string_value: \"FP16\" }} }}\n\
                 parameters {{ key: \"fp16_allow_clamping\" value: {{ string_value: \"{allow}\" }} }}\n"
            ),
        )
        .unwrap();
        let server = server(&repo);
        server.load_model("s").unwrap();
        let failed = !log_matching(&server, "fails the accuracy guard").is_empty();
        assert_eq!(failed, !allow, "allow={allow}: {:#?}", server.log_lines());
        if !allow {
            assert!(
                !log_matching(&server, "'w' (feeds output 'y')").is_empty(),
                "{:#?}",
                server.log_lines()
            );
        }
        let resp = server
            .infer(
                "s",
                InferRequest::new(
                    "one",
                    vec![InputTensor::f32("x", &[1, 4], &[1.0, 1.0, 1.0, 1.0])],
                ),
            )
            .unwrap();
        assert!(resp.error.is_none(), "{:?}", resp.error);
        let want = if allow { 65504.0 } else { 66000.0 };
        assert_eq!(resp.outputs[0].as_f32()[3], want, "allow={allow}");
        assert_clean(&server);
    }
}

/// An engine output that disagrees with the config (a dim that depends on an input's value,
/// which the config fixes at 4, comes out 3) is caught before anything is sent: the request gets
/// an INTERNAL error naming the output, what the model declares and what the engine produced,
/// and the error response carries no output even though another output was already written.
#[test]
fn an_engine_output_that_disagrees_with_the_config_is_an_internal_error() {
    let repo = Repo::new();
    repo.add(
        "m",
        &test_model("output_mismatch"),
        Some(
            "backend: \"rusttrt\"\nmax_batch_size: 0\n\
             input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 2, 4 ] },\n\
                     { name: \"k\" data_type: TYPE_INT64 dims: [ 1 ] } ]\n\
             output [ { name: \"ok\" data_type: TYPE_FP32 dims: [ 2, 4 ] },\n\
                      { name: \"short\" data_type: TYPE_FP32 dims: [ 2, 4 ] } ]\n\
             instance_group [ { kind: KIND_CPU } ]\n",
        ),
    );
    let s = server(&repo);
    s.load_model("m").unwrap();
    let req = |k: i64| {
        InferRequest::new(
            "r",
            vec![
                InputTensor::f32("x", &[2, 4], &[1.0; 8]),
                InputTensor::new(
                    "k",
                    triton_abi::TRITONSERVER_TYPE_INT64,
                    &[1],
                    k.to_le_bytes().to_vec(),
                ),
            ],
        )
    };
    let resp = s.infer("m", req(3)).unwrap();
    let (code, msg) = resp.error.clone().expect("an error response");
    assert_eq!(code, triton_abi::TRITONSERVER_ERROR_INTERNAL, "{msg}");
    for want in ["output 'short'", "[2,3]", "[2,4]", "model 'm'"] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    assert!(
        resp.outputs.is_empty(),
        "an error response carries no output"
    );
    // With k = 4 the engine agrees with the config and both outputs are served.
    let resp = s.infer("m", req(4)).unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert_eq!(resp.output("short").unwrap().shape, vec![2, 4]);
    assert_clean(&s);
}

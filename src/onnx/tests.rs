use super::testutil::*;
use super::*;
use crate::error::ErrorCode;

fn simple_model() -> ModelProto {
    Gb::new("g")
        .input("x", F32, &[-1, 3, 0])
        .input("w", F32, &[3])
        .init(tensor_f32("w", &[3], &[1.0, 2.0, 3.0]))
        .output("y", I64, &[-1, 7])
        .node("Shape", &["x"], &["y"], vec![])
        .model(17)
}

#[test]
fn signature_dynamic_and_static_dims() {
    let mut m = simple_model();
    // Make the last input dim neither a value nor a param (unknown).
    let g = m.graph.as_mut().unwrap();
    if let Some(proto::onnx::type_proto::Value::TensorType(tt)) =
        g.input[0].type_.as_mut().and_then(|t| t.value.as_mut())
    {
        tt.shape.as_mut().unwrap().dim[2] = Default::default();
        tt.shape.as_mut().unwrap().dim[1].set_dim_value(3);
    }
    let model = OnnxModel {
        proto: m,
        path: "m.onnx".into(),
    };
    let sig = model.signature().unwrap();
    assert_eq!(
        sig.inputs.len(),
        1,
        "the initializer 'w' is not a served input"
    );
    assert_eq!(sig.inputs[0].name, "x");
    assert_eq!(sig.inputs[0].dtype, DataType::F32);
    assert_eq!(sig.inputs[0].dims, vec![-1, 3, -1]);
    assert_eq!(sig.outputs[0].dtype, DataType::I64);
    assert_eq!(sig.outputs[0].dims, vec![-1, 7]);
}

#[test]
fn signature_refuses_unservable_types_naming_the_tensor() {
    let mut m = simple_model();
    let g = m.graph.as_mut().unwrap();
    g.input[0] = vi("cplx", 14, &[2]);
    let model = OnnxModel {
        proto: m.clone(),
        path: "m.onnx".into(),
    };
    let e = model.signature().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported);
    assert!(
        e.message().contains("'cplx'") && e.message().contains("COMPLEX64"),
        "{e}"
    );

    let g = m.graph.as_mut().unwrap();
    let mut seq = proto::onnx::TypeProto::new();
    seq.value = Some(proto::onnx::type_proto::Value::SequenceType(
        Default::default(),
    ));
    g.input[0].set_name("s".into());
    g.input[0].type_ = protobuf::MessageField::some(seq);
    let e = OnnxModel {
        proto: m,
        path: "m.onnx".into(),
    }
    .signature()
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported);
    assert!(e.message().contains("'s' is a sequence"), "{e}");
}

#[test]
fn load_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.onnx");
    let e = OnnxModel::load(&missing).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(e.message().contains(&missing.display().to_string()), "{e}");

    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"\xff\xff\xff\xff garbage").unwrap();
    let e = OnnxModel::load(&bad).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArg);
    assert!(
        e.message()
            .starts_with(&format!("not an ONNX model: {}: ", bad.display())),
        "{e}"
    );
}

#[test]
fn round_trip_keeps_fields_outside_the_schema() {
    let mut bytes = simple_model().write_to_bytes().unwrap();
    // ModelProto field 26 (device configurations, not in our schema), length-delimited.
    bytes.extend_from_slice(&[0xD2, 0x01, 3, b'a', b'b', b'c']);
    let m = OnnxModel::from_bytes(&bytes, "/tmp").unwrap();
    let again = m.to_bytes().unwrap();
    assert!(again
        .windows(6)
        .any(|w| w == [0xD2, 0x01, 3, b'a', b'b', b'c']));
    assert_eq!(again.len(), bytes.len());
}

/// The schema agrees with the official one: python's onnx reads and checks what we write.
#[test]
fn python_onnx_accepts_our_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.onnx");
    let model = Gb::new("g")
        .input("x", F32, &[-1, 4])
        .init(tensor_f32("w", &[4, 2], &[0.5; 8]))
        .output("y", F32, &[-1, 2])
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .onnx(17);
    std::fs::write(&p, model.to_bytes().unwrap()).unwrap();
    let script = format!(
        "import onnx;m=onnx.load(r'{}');onnx.checker.check_model(m,full_check=True);\
         print(m.graph.initializer[0].dims, m.graph.input[0].type.tensor_type.shape.dim[0].dim_param, m.opset_import[0].version)",
        p.display()
    );
    match std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
    {
        Ok(o) if o.status.success() => {
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[4, 2] N 17");
        }
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'onnx'") => {
            println!("SKIPPED: python onnx not installed")
        }
        Ok(o) => panic!(
            "onnx refused our model: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => println!("SKIPPED: no python3: {e}"),
    }
}

/// A model `y = x * w` whose `w` (3 floats) lives in `dir/<file>` at offset 8.
pub(crate) fn external_model(dir: &Path, file: &str, w: &[f32; 3]) -> PathBuf {
    let mut data = vec![0xAAu8; 8];
    data.extend(w.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(dir.join(file), &data).unwrap();
    let mut t = tensor_f32("w", &[3], &[0.0; 3]);
    t.raw_data = None;
    t.set_data_location(proto::onnx::tensor_proto::DataLocation::EXTERNAL);
    for (k, v) in [("location", file), ("offset", "8"), ("length", "12")] {
        let mut e = proto::onnx::StringStringEntryProto::new();
        e.set_key(k.into());
        e.set_value(v.into());
        t.external_data.push(e);
    }
    let m = Gb::new("g")
        .input("x", F32, &[-1, 3])
        .init(t)
        .output("y", F32, &[-1, 3])
        .node("Mul", &["x", "w"], &["y"], vec![])
        .model(17);
    let p = dir.join("model.onnx");
    std::fs::write(&p, m.write_to_bytes().unwrap()).unwrap();
    p
}

#[test]
fn external_data_is_listed_inlined_and_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let p = external_model(dir.path(), "weights.bin", &[1.0, 2.0, 3.0]);
    let m = OnnxModel::load(&p).unwrap();
    assert_eq!(
        m.external_data_files().unwrap(),
        vec![dir.path().join("weights.bin")]
    );

    let inl = load_with_external_data(&p).unwrap();
    let w = &inl.graph().initializer[0];
    assert!(w.external_data.is_empty() && w.data_location.is_none());
    let vals = fp16::float_values(w, "m").unwrap();
    assert_eq!(vals, vec![1.0, 2.0, 3.0]);

    let d1 = model_digest(&p).unwrap();
    assert_eq!(d1.len(), 64);
    // Same contents elsewhere: same digest.
    let dir2 = tempfile::tempdir().unwrap();
    let p2 = external_model(dir2.path(), "weights.bin", &[1.0, 2.0, 3.0]);
    assert_eq!(model_digest(&p2).unwrap(), d1);
    // One byte of the external data changes: different digest.
    let wb = dir2.path().join("weights.bin");
    let mut data = std::fs::read(&wb).unwrap();
    data[9] ^= 1;
    std::fs::write(&wb, &data).unwrap();
    assert_ne!(model_digest(&p2).unwrap(), d1);
    // Even bytes outside the tensor's range count (the whole file is hashed).
    let mut data = std::fs::read(dir.path().join("weights.bin")).unwrap();
    data[0] ^= 1;
    std::fs::write(dir.path().join("weights.bin"), &data).unwrap();
    assert_ne!(model_digest(&p).unwrap(), d1);
}

#[test]
fn external_data_outside_the_model_dir_is_refused() {
    for loc in ["../w.bin", "/etc/passwd", "a/../../w.bin", ""] {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("m");
        std::fs::create_dir(&sub).unwrap();
        let p = external_model(&sub, "w.bin", &[1.0; 3]);
        let mut m = OnnxModel::load(&p).unwrap();
        let t = &mut m.proto.graph.as_mut().unwrap().initializer[0];
        t.external_data[0].set_value(loc.into());
        let e = m.external_data_files().unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArg, "{loc}");
        assert!(e.message().contains(&format!("'{loc}'")), "{e}");
        assert!(m.inline_external_data().is_err());
    }
    // A harmless `..` that stays inside is fine.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    let p = external_model(dir.path(), "w.bin", &[1.0; 3]);
    let mut m = OnnxModel::load(&p).unwrap();
    m.proto.graph.as_mut().unwrap().initializer[0].external_data[0].set_value("d/../w.bin".into());
    assert_eq!(
        m.external_data_files().unwrap(),
        vec![dir.path().join("w.bin")]
    );
}

#[test]
fn missing_external_file_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let p = external_model(dir.path(), "w.bin", &[1.0; 3]);
    std::fs::remove_file(dir.path().join("w.bin")).unwrap();
    let e = model_digest(&p).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(e.message().contains("w.bin"), "{e}");
    let e = load_with_external_data(&p).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
}

/// A model written by python's onnx (functions, sparse initializer, metadata, value_info,
/// doc strings, FLOAT16 data) survives our parse + serialize unchanged (protobuf equality).
#[test]
fn python_model_round_trips_through_our_schema() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.onnx");
    let b = dir.path().join("b.onnx");
    let make = format!(
        r#"
import onnx, numpy as np
from onnx import helper as h, TensorProto as T, numpy_helper as nh
f = h.make_function("local", "twice", ["a"], ["b"], [h.make_node("Add", ["a", "a"], ["b"])],
                    [h.make_opsetid("", 17)])
sp = onnx.SparseTensorProto(); sp.dims.extend([4])
sp.values.CopyFrom(nh.from_array(np.array([1.5], np.float32), "sp"))
sp.indices.CopyFrom(nh.from_array(np.array([2], np.int64), "sp_idx"))
g = h.make_graph(
    [h.make_node("twice", ["x"], ["t"], domain="local"),
     h.make_node("Add", ["t", "sp"], ["u"], doc_string="doc"),
     h.make_node("Cast", ["u"], ["y"], to=T.FLOAT16)],
    "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
    [h.make_tensor_value_info("y", T.FLOAT16, ["N", 4])],
    initializer=[nh.from_array(np.array([1, 2], np.float16), "h16")],
    value_info=[h.make_tensor_value_info("t", T.FLOAT, ["N", 4])],
    sparse_initializer=[sp])
m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("local", 1)],
                 functions=[f], producer_name="py")
h.set_model_props(m, {{"k": "v"}})
onnx.save(m, r"{a}")
"#,
        a = a.display()
    );
    let py = |script: &str| {
        std::process::Command::new("python3")
            .args(["-c", script])
            .output()
    };
    match py(&make) {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "SKIPPED: python onnx unavailable: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return;
        }
        Err(e) => {
            println!("SKIPPED: no python3: {e}");
            return;
        }
    }
    let m = OnnxModel::load(&a).unwrap();
    assert_eq!(m.graph().sparse_initializer.len(), 1);
    assert_eq!(m.proto.functions[0].name(), "twice");
    assert_eq!(m.proto.metadata_props[0].value(), "v");
    std::fs::write(&b, m.to_bytes().unwrap()).unwrap();
    let cmp = format!(
        "import onnx;a=onnx.load(r'{}');b=onnx.load(r'{}');onnx.checker.check_model(b);print(a==b)",
        a.display(),
        b.display()
    );
    let o = py(&cmp).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "True");
}

// ---- hardening (issue 9, item 1): planted files ------------------------------------------------

/// Runs `f` on another thread and fails the test if it takes over 20 s (an open that blocks on a
/// FIFO would hang forever).
fn within_timeout<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} blocked for 20 s"))
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_as_model_or_external_data_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    mkfifo(&model);
    let (load, digest) = within_timeout("opening a FIFO model", move || {
        (
            OnnxModel::load(&model).unwrap_err(),
            model_digest(&model).unwrap_err(),
        )
    });
    for e in [load, digest] {
        assert_eq!(e.code(), ErrorCode::InvalidArg);
        assert!(
            e.to_string().contains("FIFO") && e.to_string().contains("model.onnx"),
            "{e}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let p = external_model(dir.path(), "w.bin", &[1.0; 3]);
    std::fs::remove_file(dir.path().join("w.bin")).unwrap();
    mkfifo(&dir.path().join("w.bin"));
    let errors = within_timeout("opening FIFO external data", move || {
        let m = OnnxModel::load(&p).unwrap();
        vec![
            model_digest(&p).unwrap_err(),
            load_with_external_data(&p).unwrap_err(),
            fp16::convert_to_fp16(&m, &fp16::Fp16Options::default()).unwrap_err(),
        ]
    });
    for e in errors {
        assert_eq!(e.code(), ErrorCode::InvalidArg, "{e}");
        assert!(
            e.to_string().contains("FIFO") && e.to_string().contains("w.bin"),
            "{e}"
        );
    }
}

#[test]
fn external_data_through_a_symlink_out_of_the_model_dir_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), [7u8; 64]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = external_model(dir.path(), "w.bin", &[1.0; 3]);
    std::fs::remove_file(dir.path().join("w.bin")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("w.bin")).unwrap();
    for e in [
        model_digest(&p).unwrap_err(),
        load_with_external_data(&p).unwrap_err(),
    ] {
        assert_eq!(e.code(), ErrorCode::InvalidArg, "{e}");
        assert!(e.to_string().contains("outside the directory"), "{e}");
    }
    // A symlink to a device is refused the same way (it leaves the directory) ...
    std::fs::remove_file(dir.path().join("w.bin")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("w.bin")).unwrap();
    assert!(load_with_external_data(&p).is_err());
    // ... and a model file that is a device is refused as one, without reading forever.
    let model = dir.path().join("dev.onnx");
    std::os::unix::fs::symlink("/dev/zero", &model).unwrap();
    let e = within_timeout("reading /dev/zero", move || {
        OnnxModel::load(&model).unwrap_err()
    });
    assert!(e.to_string().contains("character device"), "{e}");
    // `../` locations are refused by every reader, not only by the listing.
    let sub = dir.path().join("m");
    std::fs::create_dir(&sub).unwrap();
    let p = external_model(&sub, "w.bin", &[1.0; 3]);
    let mut m = OnnxModel::load(&p).unwrap();
    m.proto.graph.as_mut().unwrap().initializer[0].external_data[0].set_value("../w.bin".into());
    std::fs::write(&p, m.to_bytes().unwrap()).unwrap();
    std::fs::copy(sub.join("w.bin"), dir.path().join("w.bin")).unwrap();
    assert_eq!(model_digest(&p).unwrap_err().code(), ErrorCode::InvalidArg);
    assert_eq!(
        load_with_external_data(&p).unwrap_err().code(),
        ErrorCode::InvalidArg
    );
}

#[test]
fn a_huge_declared_external_length_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = external_model(dir.path(), "w.bin", &[1.0; 3]);
    // A sparse 3 GiB file (no disk used) and a tensor that claims all of it.
    let size: u64 = 3 << 30;
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("w.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let mut m = OnnxModel::load(&p).unwrap();
    m.proto.graph.as_mut().unwrap().initializer[0].external_data[2].set_value(size.to_string());
    m.proto.graph.as_mut().unwrap().initializer[0].external_data[1].set_value("0".into());
    let e = m.inline_external_data().unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArg);
    assert!(
        e.to_string().contains("2 GiB") && e.to_string().contains("'w'"),
        "{e}"
    );
    // A length past the end of the file is refused before anything is allocated.
    m.proto.graph.as_mut().unwrap().initializer[0].external_data[2].set_value(u64::MAX.to_string());
    let e = m.inline_external_data().unwrap_err();
    assert!(e.to_string().contains("lies outside"), "{e}");
}

/// Found by tests/fuzz.rs (onnx_models): an initializer whose dims multiply past `usize`
/// overflowed the converter's element count (a panic in debug builds, a wrong count in release).
#[test]
fn fp16_conversion_of_a_tensor_with_overflowing_dims_is_an_error() {
    let mut t = tensor_f32("w", &[1 << 31, 1 << 40], &[]);
    t.raw_data = None;
    let m = Gb::new("g")
        .input("x", F32, &[-1, 3])
        .init(t)
        .output("y", F32, &[-1, 3])
        .node("Mul", &["x", "w"], &["y"], vec![])
        .onnx(17);
    let e = fp16::convert_to_fp16(&m, &fp16::Fp16Options::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArg);
    assert!(e.to_string().contains("'w'"), "{e}");
}

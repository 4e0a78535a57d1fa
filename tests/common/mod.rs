//! Shared helpers of the integration tests: every test loads the real `libtriton_rusttrt.so`
//! through the host (`rusttrt-host`), in a model repository made in a temporary directory.
#![allow(dead_code)]

use base64::Engine as _;
use rusttrt_host::{InferRequest, InferResponse, InputTensor, Server, ServerOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workspace root: where the tests were built, or, when the test binary was carried to
/// another machine (the GPU machine), the current directory (run it from the repository root).
pub fn root() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if built.join("Cargo.toml").exists() {
        built
    } else {
        std::env::current_dir().expect("current directory")
    }
}

/// libonnxruntime.so for the tests: `ORT_DYLIB_PATH`, else the pip `onnxruntime` package
/// (scripts/setup.sh installs it). Panics with instructions when neither exists: the tests
/// must not pass without running anything.
pub fn ort_library() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).filter(|p| p.exists()) {
            return p;
        }
        let out = std::process::Command::new("python3")
            .args(["-c", "import onnxruntime,os,glob;d=os.path.join(os.path.dirname(onnxruntime.__file__),'capi');print(sorted(glob.glob(d+'/libonnxruntime.so.*'))[-1])"])
            .output();
        match out {
            Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            _ => panic!("ONNX Runtime not found: run `eval \"$(scripts/setup.sh)\"` (sets ORT_DYLIB_PATH)"),
        }
    })
    .clone()
}

/// The backend library under test (built if stale).
pub fn backend_lib() -> PathBuf {
    rusttrt_host::testing::find_or_build_cdylib("triton-rusttrt", "triton_rusttrt")
}

/// A model repository in a temporary directory.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Repo {
        Repo {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Copies the model directory `src` (holding `1/model.onnx`, maybe more) as model `name`,
    /// with `config` as config.pbtxt (None = no config.pbtxt).
    pub fn add(&self, name: &str, src: &Path, config: Option<&str>) -> PathBuf {
        let dst = self.path().join(name);
        copy_dir(src, &dst);
        let cfg = dst.join("config.pbtxt");
        let _ = std::fs::remove_file(&cfg);
        if let Some(c) = config {
            std::fs::write(&cfg, c).unwrap();
        }
        dst
    }
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// A test model directory under tests/data/models.
pub fn test_model(name: &str) -> PathBuf {
    root().join("tests/data/models").join(name)
}

/// The bundled model's directory.
pub fn tiny_clip_dir() -> PathBuf {
    root().join("model_repository/tiny_clip")
}

pub fn tiny_clip_config() -> String {
    std::fs::read_to_string(tiny_clip_dir().join("config.pbtxt")).unwrap()
}

/// The `rusttrt` command, which the backend runs as its build worker (built if stale).
pub fn build_worker() -> PathBuf {
    rusttrt_host::testing::find_or_build_bin("rusttrt-host", "rusttrt")
}

/// A server over `repo` with ONNX Runtime configured and extra backend config.
pub fn server_with(
    repo: &Repo,
    config: &[(&str, &str)],
    f: impl FnOnce(&mut ServerOptions),
) -> Server {
    let mut opts = ServerOptions::new(backend_lib(), repo.path());
    opts.backend_config.push((
        "onnxruntime-library".into(),
        ort_library().display().to_string(),
    ));
    // Builds run in the worker, as in production (a test may override it).
    opts.backend_config
        .push(("build-worker".into(), build_worker().display().to_string()));
    // Keep the engine cache of each test inside its repository unless the test says otherwise.
    opts.backend_config.push((
        "cache-dir".into(),
        repo.path().join("cache").display().to_string(),
    ));
    for (k, v) in config {
        opts.backend_config.push((k.to_string(), v.to_string()));
    }
    f(&mut opts);
    Server::new(opts).expect("server starts")
}

pub fn server(repo: &Repo) -> Server {
    server_with(repo, &[], |_| {})
}

/// Asserts the host saw no rule violation and no leaked error object.
pub fn assert_clean(server: &Server) {
    let v = server.violations();
    assert!(v.is_empty(), "Triton rule violations: {v:#?}");
    assert_eq!(server.live_errors(), 0, "TRITONSERVER_Error objects leaked");
}

/// One tensor of an expected-output JSON file.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub bytes: Vec<u8>,
}

impl Tensor {
    pub fn f32s(&self) -> Vec<f32> {
        self.bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
    pub fn input(&self) -> InputTensor {
        InputTensor::new(
            &self.name,
            triton_abi::datatype_from_name(&self.datatype),
            &self.shape,
            self.bytes.clone(),
        )
    }
}

pub struct Case {
    pub name: String,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
}

pub struct Cases {
    pub atol: f64,
    pub rtol: f64,
    pub fp16: Option<(f64, f64, f64)>,
    pub cases: Vec<Case>,
}

fn tensor(v: &Value) -> Tensor {
    Tensor {
        name: v["name"].as_str().unwrap().into(),
        datatype: v["datatype"].as_str().unwrap().into(),
        shape: v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect(),
        bytes: base64::engine::general_purpose::STANDARD
            .decode(v["data_b64"].as_str().unwrap())
            .unwrap(),
    }
}

/// Reads an expected-output file (format in docs/models.md).
pub fn cases(path: &Path) -> Cases {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(v["format"], "rusttrt-expected-v1");
    let fp16 = v.get("tolerance_fp16").map(|t| {
        (
            t["atol"].as_f64().unwrap(),
            t["rtol"].as_f64().unwrap(),
            t["min_cosine"].as_f64().unwrap_or(0.999),
        )
    });
    Cases {
        atol: v["tolerance"]["atol"].as_f64().unwrap(),
        rtol: v["tolerance"]["rtol"].as_f64().unwrap(),
        fp16,
        cases: v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Case {
                name: c["name"].as_str().unwrap().into(),
                inputs: c["inputs"].as_array().unwrap().iter().map(tensor).collect(),
                outputs: c["outputs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(tensor)
                    .collect(),
            })
            .collect(),
    }
}

pub fn request(id: &str, case: &Case) -> InferRequest {
    InferRequest::new(id, case.inputs.iter().map(Tensor::input).collect())
}

/// Element-wise |got - want| <= atol + rtol * |want| on FP32 data.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * (w as f64).abs();
        assert!(
            ((g - w) as f64).abs() <= tol,
            "{what}[{i}]: got {g}, expected {w} (tolerance {tol})"
        );
    }
}

/// Checks a response against a case: same outputs, shapes, types, values within tolerance
/// (bit-exact for non-float types).
pub fn check_response(what: &str, resp: &InferResponse, case: &Case, atol: f64, rtol: f64) {
    assert!(
        resp.error.is_none(),
        "{what}: error response {:?}",
        resp.error
    );
    for want in &case.outputs {
        let got = resp
            .output(&want.name)
            .unwrap_or_else(|| panic!("{what}: no output '{}'", want.name));
        // A batched output with no dims besides the batch is served as `dims: [1]` (with an
        // empty `reshape`), as Triton's auto-complete writes it: the client sees [N, 1].
        let mut want_shape = want.shape.clone();
        if got.shape.len() == want.shape.len() + 1
            && got.shape.last() == Some(&1)
            && want.shape.len() == 1
        {
            want_shape.push(1);
        }
        assert_eq!(got.shape, want_shape, "{what}: shape of '{}'", want.name);
        assert_eq!(
            triton_abi::datatype_name(got.datatype),
            want.datatype,
            "{what}: type of '{}'",
            want.name
        );
        if want.datatype == "FP32" {
            assert_close(
                &format!("{what} '{}'", want.name),
                &got.as_f32(),
                &want.f32s(),
                atol,
                rtol,
            );
        } else {
            assert_eq!(got.bytes, want.bytes, "{what}: bytes of '{}'", want.name);
        }
    }
}

/// Min per-row cosine similarity of two equally shaped FP32 tensors with rows of `row`.
pub fn min_row_cosine(a: &[f32], b: &[f32], row: usize) -> f64 {
    a.chunks(row)
        .zip(b.chunks(row))
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .fold(1.0, f64::min)
}

/// Log lines of the server containing `needle`.
pub fn log_matching(server: &Server, needle: &str) -> Vec<String> {
    server
        .log_lines()
        .into_iter()
        .map(|l| l.msg)
        .filter(|m| m.contains(needle))
        .collect()
}

/// Every file under `dir` (recursively) whose extension is `ext` (engine entries, timing caches).
pub fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out
}

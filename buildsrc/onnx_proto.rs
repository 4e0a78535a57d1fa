//! Generates Rust code for proto/onnx.proto (rust-protobuf, pure-Rust parser: no protoc needed).
//!
//! Output: `$OUT_DIR/protos/mod.rs` (+ `onnx.rs`), included by `src/onnx/mod.rs` as `proto`.

const PROTO: &str = "proto/onnx.proto";

pub fn generate() {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=buildsrc/onnx_proto.rs");
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .input(PROTO)
        .cargo_out_dir("protos")
        .run_from_script();
}

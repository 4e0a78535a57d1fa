//! Generates Rust code for proto/onnx.proto (rust-protobuf, pure-Rust parser: no protoc needed).
pub fn generate() {}

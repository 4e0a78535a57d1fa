//! Build script: generates the ONNX protobuf code (see buildsrc/). The TensorRT shim is not part
//! of this crate: it is its own library (scripts/build-trt-shim.sh, cmake/), opened at run time.

#[path = "buildsrc/onnx_proto.rs"]
mod onnx_proto;

fn main() {
    onnx_proto::generate();
    // Integration tests load the .so through the host, which must export the server-side
    // TRITONSERVER_* / TRITONBACKEND_* functions from the test executable.
    println!("cargo:rustc-link-arg-tests=-rdynamic");
    println!("cargo:rerun-if-changed=build.rs");
}

//! Build script: generates the ONNX protobuf code and, where TensorRT headers are found,
//! compiles the TensorRT shim (see buildsrc/).

#[path = "buildsrc/onnx_proto.rs"]
mod onnx_proto;
#[path = "buildsrc/tensorrt.rs"]
mod tensorrt;

fn main() {
    onnx_proto::generate();
    tensorrt::detect_and_compile();
    // Integration tests load the .so through the host, which must export the server-side
    // TRITONSERVER_* / TRITONBACKEND_* functions from the test executable.
    println!("cargo:rustc-link-arg-tests=-rdynamic");
    println!("cargo:rerun-if-changed=build.rs");
}

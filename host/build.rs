//! Build script of the host: generates the model-config protobuf code and makes every
//! executable (the `rusttrt` command, integration tests) export the TRITONSERVER_* /
//! TRITONBACKEND_* functions dynamically so a dlopen'ed backend resolves them.

fn main() {
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .input("proto/model_config.proto")
        .cargo_out_dir("model_config_proto")
        .run_from_script();
    // The generated file starts with inner attributes / doc comments, which `include!` inside
    // a module does not accept: write a copy without them (the module carries the allows).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"))
        .join("model_config_proto");
    let text = std::fs::read_to_string(out.join("model_config.rs")).expect("generated code");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(out.join("model_config_include.rs"), body).expect("write generated code");
    println!("cargo:rustc-link-arg-bins=-rdynamic");
    println!("cargo:rustc-link-arg-tests=-rdynamic");
    println!("cargo:rerun-if-changed=proto/model_config.proto");
    println!("cargo:rerun-if-changed=build.rs");
}

//! The ONNX Runtime engine directly (no host): execution providers the loaded runtime lacks are
//! refused with a clear message instead of silently falling back to the CPU.

mod common;

use std::collections::BTreeMap;
use triton_rusttrt::engine::ort::{runtime, ExecutionProvider, OrtFactory};
use triton_rusttrt::engine::{BuildSpec, Device, EngineFactory, Precision};

fn spec(device: Device) -> BuildSpec {
    BuildSpec {
        model_name: "tiny_clip".into(),
        model_path: common::tiny_clip_dir().join("1/model.onnx"),
        precision: Precision::Fp32,
        device,
        max_batch_size: 32,
        opt_batch_sizes: vec![32],
        options: BTreeMap::new(),
    }
}

#[test]
fn gpu_execution_providers_missing_from_the_runtime_are_refused_clearly() {
    let rt = runtime(&[common::ort_library()]).expect("ONNX Runtime loads");
    // The CPU-only runtime of the tests has neither the CUDA nor the TensorRT provider.
    for ep in [
        ExecutionProvider::Cuda,
        ExecutionProvider::TensorRt {
            fp16: true,
            cache_dir: None,
        },
    ] {
        let name = ep.name();
        let f = OrtFactory::new(rt, ep, None);
        let e = match f.load(&spec(Device::Gpu(0)), None) {
            Ok(_) if triton_rusttrt::cuda::available() => continue,
            Ok(_) => panic!("{name} loaded on a runtime without it"),
            Err(e) => e,
        };
        let msg = e.to_string();
        assert!(
            msg.contains(name) && msg.contains("not available") && msg.contains(&rt.version),
            "{msg}"
        );
    }
    // The CPU provider works and reports what runs.
    let f = OrtFactory::new(rt, ExecutionProvider::Cpu, None);
    let engine = f.load(&spec(Device::Cpu), None).expect("CPU engine");
    assert!(engine.describe().contains("CPUExecutionProvider"));
    assert_eq!(engine.signature().inputs[0].dims, vec![-1, 3, 32, 32]);
}

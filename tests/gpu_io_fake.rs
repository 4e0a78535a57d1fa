//! The backend's GPU I/O under Triton's `optimization.input_pinned_memory` /
//! `output_pinned_memory`, against the stand-in `libcuda.so.1` of src/cuda/fake_cuda.c (host
//! memory, synchronous): gathered inputs and outputs copied into GPU response buffers arrive
//! intact, through pinned staging or straight. The real asynchronous behaviour is checked by
//! tests/gpu.rs on the GPU machine. The check runs in a child process of this test binary,
//! since the driver library is loaded once per process.

use std::process::Command;

#[test]
fn gpu_io_honours_the_pinned_memory_options_on_the_fake_driver() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda/fake_cuda.c");
    let lib = dir.path().join("libcuda.so.1");
    let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .expect("run the C compiler (cc) to build the fake libcuda");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(&lib, dir.path().join("libcuda.so")).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--ignored", "--nocapture"])
        .env("LD_LIBRARY_PATH", dir.path())
        .env("RUSTTRT_FAKE_CUDA", "gpu_io")
        .env("FAKE_CUDA_DEVICES", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("gpu io checked: 4 settings"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "child process of gpu_io_honours_the_pinned_memory_options_on_the_fake_driver"]
fn child() {
    use triton_abi::TRITONSERVER_MEMORY_CPU;
    use triton_rusttrt::backend::gpu::GpuIo;
    use triton_rusttrt::cuda::DeviceBuffer;
    use triton_rusttrt::triton::InputBuffer;
    // The host's server functions, which the backend's code refers to, are linked in.
    assert!(!rusttrt_host::abi::exported_symbols().is_empty());
    if std::env::var_os("RUSTTRT_FAKE_CUDA").is_none() {
        return; // run directly: nothing to check
    }
    let a: Vec<u8> = (0..100u8).collect();
    let b: Vec<u8> = (100..250u8).collect();
    let mut n = 0;
    for (pin_in, pin_out) in [(true, true), (false, false), (true, false), (false, true)] {
        let mut io = GpuIo::new(0, 1).unwrap();
        io.pinned_inputs = pin_in;
        io.pinned_outputs = pin_out;
        let chunk = |v: &Vec<u8>| InputBuffer {
            ptr: v.as_ptr(),
            len: v.len(),
            memory_type: TRITONSERVER_MEMORY_CPU,
            memory_type_id: 0,
        };
        let dev = io
            .gather(0, &[chunk(&a), chunk(&b)], a.len() + b.len())
            .unwrap();
        io.synchronize().unwrap();
        let mut back = vec![0u8; a.len() + b.len()];
        // SAFETY: `dev` holds the gathered bytes; `back` has room for them; synchronized below.
        unsafe {
            io.stream
                .copy_dtoh_raw(back.as_mut_ptr(), dev, back.len())
                .unwrap()
        };
        io.stream.synchronize().unwrap();
        assert_eq!(&back[..a.len()], &a[..]);
        assert_eq!(&back[a.len()..], &b[..]);

        // Several outputs of one Execute, more than the staging holds at first (256 bytes).
        let outs: Vec<Vec<u8>> = (0..5u8).map(|k| vec![k + 1; 200]).collect();
        let bufs: Vec<DeviceBuffer> = (0..5)
            .map(|_| DeviceBuffer::new(&io.device, 200).unwrap())
            .collect();
        for (o, buf) in outs.iter().zip(&bufs) {
            io.to_device(buf.ptr() as *mut u8, 0, o).unwrap();
        }
        io.synchronize().unwrap();
        for (o, buf) in outs.iter().zip(&bufs) {
            let mut got = vec![0u8; 200];
            io.stream.copy_dtoh_pageable(buf, 0, &mut got).unwrap();
            assert_eq!(&got, o, "pinned inputs {pin_in}, outputs {pin_out}");
        }
        // The output staging grew only when it was used.
        assert_eq!(io.out_staging.len() >= 400, pin_out);
        n += 1;
    }
    println!("gpu io checked: {n} settings");
}

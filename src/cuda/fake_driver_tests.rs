//! Tests against a stand-in `libcuda.so.1` (fake_cuda.c, compiled with `cc` at test time), each run
//! in a child process of the test binary: the driver library is loaded once per process, so every
//! variant needs its own. The child is the `#[ignore]`d test `fake_driver_child`, which does
//! nothing unless started by these tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

const FAKE_CUDA_C: &str = include_str!("fake_cuda.c");

/// Compiles the fake driver with `define` into `dir/<name>/libcuda.so{,.1}`; returns that folder.
fn build_fake(dir: &Path, name: &str, define: Option<&str>) -> PathBuf {
    let src = dir.join("fake_cuda.c");
    if !src.exists() {
        std::fs::write(&src, FAKE_CUDA_C).expect("write the fake driver's source");
    }
    let lib_dir = dir.join(name);
    std::fs::create_dir_all(&lib_dir).expect("create the fake driver's folder");
    let lib = lib_dir.join("libcuda.so.1");
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src);
    if let Some(d) = define {
        cc.arg(format!("-D{d}"));
    }
    let out = cc
        .output()
        .expect("run the C compiler (cc) to build a fake libcuda");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // cudarc tries "libcuda.so" before "libcuda.so.1": shadow both.
    std::fs::copy(&lib, lib_dir.join("libcuda.so")).expect("copy the fake driver");
    lib_dir
}

/// Runs `fake_driver_child` with the fake driver of `lib_dir`; returns its stdout, after checking
/// that it succeeded and printed its end marker.
fn run_child(lib_dir: &Path, scenario: &str, devices: usize) -> String {
    let out = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([
            "--exact",
            "cuda::fake_driver_tests::fake_driver_child",
            "--ignored",
            "--nocapture",
        ])
        .env("LD_LIBRARY_PATH", lib_dir)
        .env("RUSTTRT_FAKE_CUDA", scenario)
        .env("FAKE_CUDA_DEVICES", devices.to_string())
        .output()
        .expect("run the test binary as a child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("fake driver child ok: {scenario}")),
        "child for {scenario} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn broken_driver_library_gives_errors_not_panics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = build_fake(dir.path(), "broken", Some("FAKE_BROKEN"));
    run_child(&lib, "broken", 1);
    let lib = build_fake(dir.path(), "no_device", Some("FAKE_NO_DEVICE"));
    run_child(&lib, "no_device", 1);
}

#[test]
fn self_test_passes_on_the_fake_driver() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = build_fake(dir.path(), "working", None);
    let out = run_child(&lib, "working", 2);
    // Every check ran, the peer copy included (two fake devices).
    for check in [
        "identity",
        "pinned round trip",
        "pageable round trip",
        "events",
        "graph capture",
        "buffers",
        "peer copy",
        "leaks",
    ] {
        assert!(
            out.contains(&format!("ok   {check}: ")),
            "no '{check}' line in:\n{out}"
        );
    }
    assert!(out.contains("0→1→0 (peer access: direct)"), "{out}");
    assert!(
        out.contains("cache identity \"Fake GPU 80GB sm_90 80GiB\""),
        "{out}"
    );
}

#[test]
#[ignore = "child process of the fake-driver tests (needs their fake libcuda)"]
fn fake_driver_child() {
    let Some(scenario) = std::env::var_os("RUSTTRT_FAKE_CUDA") else {
        return; // run directly (e.g. with --include-ignored): nothing to check
    };
    let scenario = scenario.to_string_lossy().into_owned();
    assert!(driver_library().is_ok(), "the fake libcuda did not load");
    match scenario.as_str() {
        "broken" => broken_child(),
        "no_device" => no_device_child(),
        "working" => working_child(),
        other => panic!("unknown scenario {other}"),
    }
    println!("fake driver child ok: {scenario}");
}

/// The library loads and counts one device, but lacks every other symbol: cudarc panics on each
/// missing one; each must come back as an error that names it.
fn broken_child() {
    assert!(available());
    assert_eq!(device_count().unwrap(), 1);
    let e = catch_unwind(|| Device::open(0))
        .expect("Device::open must not panic")
        .expect_err("a driver without cuDeviceGet cannot open a device");
    let msg = e.to_string();
    assert_eq!(e.code(), ErrorCode::Internal, "{msg}");
    assert!(msg.starts_with("KIND_GPU instance on device 0: "), "{msg}");
    assert!(msg.contains("cuDeviceGet"), "{msg}");
    let v = catch_unwind(driver_version).expect("driver_version must not panic");
    assert!(v.unwrap_err().to_string().contains("cuDriverGetVersion"));
    assert!(catch_unwind(self_test)
        .expect("self_test must not panic")
        .is_err());
}

/// cuInit fails with CUDA_ERROR_NO_DEVICE, and the library has no cuGetErrorName either.
fn no_device_child() {
    assert!(!available());
    let e = catch_unwind(|| Device::open(0))
        .expect("Device::open must not panic")
        .expect_err("no device");
    let msg = e.to_string();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{msg}");
    assert!(msg.starts_with("KIND_GPU instance on device 0: "), "{msg}");
    assert!(
        msg.contains("cuInit") && msg.contains("CUDA_ERROR_NO_DEVICE"),
        "{msg}"
    );
    assert_eq!(device_count().unwrap_err().code(), ErrorCode::Unavailable);
}

/// A working fake driver with two devices: the whole self test, plus error paths it does not
/// cover.
fn working_child() {
    let report = self_test().unwrap_or_else(|e| panic!("self test on the fake driver: {e}"));
    println!("{report}");

    let info = device_identity(1).unwrap();
    assert_eq!(info.uuid, "GPU-01122334-4556-6778-899a-abbccddeef00");
    assert_eq!(info.compute_capability, (9, 0));
    let e = Device::open(2).unwrap_err();
    assert_eq!(
        e.to_string(),
        "KIND_GPU instance on device 2: no CUDA device 2: the driver sees 2 device(s) (check \
         CUDA_VISIBLE_DEVICES and the instance group's gpus)"
    );

    let d0 = Device::open(0).unwrap();
    let d1 = Device::open(1).unwrap();
    assert_ne!(d0, d1);
    assert_eq!(d0, Device::open(0).unwrap());
    let s = d0.new_stream().unwrap();
    d0.bind_to_thread().unwrap();

    // Objects of another device are refused with messages that say so.
    let mut b1 = DeviceBuffer::new(&d1, 64).unwrap();
    let e = s.memset(&mut b1, 0, 64, 1).unwrap_err();
    assert!(
        e.to_string()
            .contains("on device 1 but the stream is on device 0"),
        "{e}"
    );
    let ev1 = d1.new_event(false).unwrap();
    assert!(ev1.record(&s).is_err());

    // A blocking call inside a capture is refused by CUDA, which invalidates the capture: the
    // error says so, end_capture fails, and the stream works again afterwards.
    let mut b0 = DeviceBuffer::new(&d0, 64).unwrap();
    s.begin_capture(CaptureMode::Global).unwrap();
    s.memset(&mut b0, 0, 64, 7).unwrap();
    assert!(s.synchronize().is_err());
    let e = s.is_capturing().unwrap_err();
    assert!(e.to_string().contains("invalidated"), "{e}");
    assert!(s.end_capture().is_err());
    assert!(!s.is_capturing().unwrap());
    s.memset(&mut b0, 0, 64, 9).unwrap();
    let mut back = [0u8; 64];
    s.copy_dtoh_pageable(&b0, 0, &mut back).unwrap();
    assert_eq!(back, [9u8; 64]);

    // Raw host-to-device and peer copies.
    let data: Vec<u8> = (0..64).collect();
    // SAFETY: b0 holds 64 bytes; `data` lives until the sync below.
    unsafe { s.copy_htod_raw(b0.ptr(), data.as_ptr(), 64).unwrap() };
    // SAFETY: both buffers hold 64 bytes and outlive the sync below.
    unsafe { s.copy_peer_raw(&d1, b1.ptr(), &d0, b0.ptr(), 64).unwrap() };
    s.synchronize().unwrap();
    let s1 = d1.new_stream().unwrap();
    s1.copy_dtoh_pageable(&b1, 0, &mut back).unwrap();
    assert_eq!(&back[..], &data[..]);

    // mem_get_info sees allocations come and go.
    let (free0, total) = d0.mem_get_info().unwrap();
    let big = DeviceBuffer::new(&d0, 1 << 30).unwrap();
    assert_eq!(d0.mem_get_info().unwrap(), (free0 - (1 << 30), total));
    drop(big);
    assert_eq!(d0.mem_get_info().unwrap().0, free0);
}

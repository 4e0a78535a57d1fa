//! GPU checks of this module, for the GPU machine: [`self_test`] runs them all and reports; each is
//! also an `#[ignore]`d unit test (`cargo test --lib cuda:: -- --ignored`).

use std::fmt::Write as _;
use std::time::Instant;

use super::{
    device_count, device_identity, driver_version, CaptureMode, Device, DeviceBuffer, PinnedBuffer,
    Stream,
};
use crate::error::{Error, ErrorCode, Result};

/// A deterministic byte pattern that differs per `seed` and has no short period.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 131 + i / 251) as u8).wrapping_add(seed))
        .collect()
}

/// First differing index, for messages.
fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn expect_equal(what: &str, got: &[u8], want: &[u8]) -> Result<()> {
    match first_diff(got, want) {
        None => Ok(()),
        Some(i) => Err(Error::internal(format!(
            "{what}: {} bytes compared, first difference at byte {i}: got {:?}, expected {:?}",
            want.len(),
            got.get(i),
            want.get(i)
        ))),
    }
}

/// Odd sizes on purpose (not a multiple of 4 or of a page).
const N: usize = (4 << 20) + 13;

struct Gpu {
    device: Device,
    stream: Stream,
}

fn open() -> Result<Gpu> {
    let device = Device::open(0)?;
    let stream = device.new_stream()?;
    Ok(Gpu { device, stream })
}

/// Driver, devices, identities.
fn check_identity(_: &Gpu) -> Result<String> {
    let (major, minor) = driver_version()?;
    let n = device_count()?;
    let mut s = format!("driver CUDA {major}.{minor}, {n} device(s)");
    for i in 0..n {
        let info = device_identity(i)?;
        if info.name.is_empty() || info.total_memory == 0 || !info.uuid.starts_with("GPU-") {
            return Err(Error::internal(format!(
                "implausible identity of device {i}: {info:?}"
            )));
        }
        write!(s, "; {info}; cache identity \"{}\"", info.cache_identity()).ok();
    }
    Ok(s)
}

/// H→D (pinned) → D→D (with offsets) → D→H (pinned), compared byte for byte.
fn check_pinned_round_trip(g: &Gpu) -> Result<String> {
    let data = pattern(N, 1);
    let mut src = PinnedBuffer::new(&g.device, N)?;
    src.as_mut_slice()?.copy_from_slice(&data);
    let mut a = DeviceBuffer::new(&g.device, N)?;
    let mut b = DeviceBuffer::new(&g.device, N + 100)?;
    let mut dst = PinnedBuffer::new(&g.device, N)?;
    g.stream.copy_htod(&src, 0, &mut a, 0, N)?;
    g.stream.copy_dtod(&a, 0, &mut b, 100, N)?;
    g.stream.copy_dtoh(&b, 100, &mut dst, 0, N)?;
    // No explicit sync: as_slice must wait for the copy by itself.
    expect_equal("pinned round trip", dst.as_slice()?, &data)?;
    // Partial copy into the middle of a pinned buffer.
    g.stream.copy_dtoh(&a, 10, &mut dst, 1000, 500)?;
    expect_equal(
        "pinned partial copy",
        &dst.as_slice()?[1000..1500],
        &data[10..510],
    )?;
    Ok(format!(
        "{N} bytes H→D→D→H through pinned buffers, plus a partial copy at offsets"
    ))
}

/// The same with pageable host memory (blocking copies).
fn check_pageable_round_trip(g: &Gpu) -> Result<String> {
    let data = pattern(N, 7);
    let mut a = DeviceBuffer::new(&g.device, N)?;
    let mut b = DeviceBuffer::new(&g.device, N)?;
    g.stream.copy_htod_pageable(&data, &mut a, 0)?;
    g.stream.copy_dtod(&a, 0, &mut b, 0, N)?;
    let mut back = vec![0u8; N];
    g.stream.copy_dtoh_pageable(&b, 0, &mut back)?;
    expect_equal("pageable round trip", &back, &data)?;
    // Raw variants on the same memory.
    let mut raw_back = vec![0u8; 4096];
    // SAFETY: `b` holds N > 4096 bytes; `raw_back` is 4096 writable bytes kept alive and untouched
    // until the stream sync below.
    unsafe {
        g.stream.copy_dtod_raw(a.ptr() + 4096, b.ptr(), 4096)?;
        g.stream
            .copy_dtoh_raw(raw_back.as_mut_ptr(), a.ptr() + 4096, 4096)?;
    }
    g.stream.synchronize()?;
    expect_equal("raw copies", &raw_back, &data[..4096])?;
    Ok(format!(
        "{N} bytes H→D→D→H from pageable memory; raw D→D and D→H"
    ))
}

/// Host-to-device bandwidth, pinned vs pageable, timed with events.
fn check_events(g: &Gpu) -> Result<String> {
    let len = 64 << 20;
    let src = PinnedBuffer::new(&g.device, len)?;
    let host = vec![3u8; len];
    let mut dev = DeviceBuffer::new(&g.device, len)?;
    let start = g.device.new_event(true)?;
    let mid = g.device.new_event(true)?;
    let end = g.device.new_event(true)?;
    start.record(&g.stream)?;
    g.stream.copy_htod(&src, 0, &mut dev, 0, len)?;
    mid.record(&g.stream)?;
    let t = Instant::now();
    g.stream.copy_htod_pageable(&host, &mut dev, 0)?;
    let pageable_wall = t.elapsed().as_secs_f64();
    end.record(&g.stream)?;
    end.synchronize()?;
    if !end.is_complete()? {
        return Err(Error::internal("event not complete after synchronize"));
    }
    let pinned_ms = start.elapsed_ms(&mid)?;
    let pageable_ms = mid.elapsed_ms(&end)?;
    if pinned_ms <= 0.0 {
        return Err(Error::internal(format!(
            "implausible pinned copy time {pinned_ms} ms"
        )));
    }
    let gbs = |ms: f64| len as f64 / (ms / 1000.0) / 1e9;
    Ok(format!(
        "64 MiB H→D: pinned {:.2} ms ({:.1} GB/s), pageable {:.2} ms on the stream / {:.2} ms wall ({:.1} GB/s)",
        pinned_ms,
        gbs(pinned_ms as f64),
        pageable_ms,
        pageable_wall * 1000.0,
        gbs(pageable_wall * 1000.0)
    ))
}

/// Captures memset + D→D + D→H(pinned) into a graph, checks nothing ran during the capture, then
/// replays it (also on a second stream) after disturbing the buffers.
fn check_graph(g: &Gpu) -> Result<String> {
    let len = 1 << 20;
    let mut a = DeviceBuffer::new(&g.device, len)?;
    let mut b = DeviceBuffer::new(&g.device, len)?;
    let mut out = PinnedBuffer::new(&g.device, len)?;
    g.stream.copy_htod_pageable(&pattern(len, 3), &mut b, 0)?;

    g.stream.begin_capture(CaptureMode::ThreadLocal)?;
    let captured = (|| {
        if !g.stream.is_capturing()? {
            return Err(Error::internal("stream not capturing after begin_capture"));
        }
        g.stream.memset(&mut a, 0, len, 0xAB)?;
        g.stream.copy_dtod(&a, 0, &mut b, 0, len)?;
        g.stream.copy_dtoh(&b, 0, &mut out, 0, len)?;
        // A blocking copy is refused before it reaches CUDA, so the capture stays valid.
        let refused = g.stream.copy_htod_pageable(&[1, 2, 3], &mut a, 0);
        match refused {
            Err(e) if e.code() == ErrorCode::InvalidArg => Ok(()),
            other => Err(Error::internal(format!(
                "pageable copy during capture: expected a refusal, got {other:?}"
            ))),
        }
    })();
    let graph = g.stream.end_capture();
    captured?;
    let graph = graph?;
    let nodes = graph.node_count()?;
    if nodes < 3 {
        return Err(Error::internal(format!(
            "captured graph has {nodes} nodes, expected at least 3"
        )));
    }
    // Nothing ran during the capture: `out` is still zero, `b` still holds the pattern.
    if out.as_slice()?.iter().any(|&x| x != 0) {
        return Err(Error::internal("the captured copy ran during capture"));
    }
    let mut check_b = vec![0u8; len];
    g.stream.copy_dtoh_pageable(&b, 0, &mut check_b)?;
    expect_equal("b untouched by capture", &check_b, &pattern(len, 3))?;

    graph.upload(&g.stream)?;
    graph.launch(&g.stream)?;
    // `out` is read without a stream sync: the graph's event-record node must guard it.
    expect_equal("graph replay 1", out.as_slice()?, &vec![0xAB; len])?;

    // Disturb, replay on another stream.
    g.stream.copy_htod_pageable(&pattern(len, 9), &mut b, 0)?;
    out.as_mut_slice()?.fill(0);
    let other = g.device.new_stream()?;
    let t = Instant::now();
    graph.launch(&other)?;
    out.wait()?;
    let replay_us = t.elapsed().as_secs_f64() * 1e6;
    expect_equal(
        "graph replay 2 (other stream)",
        out.as_slice()?,
        &vec![0xAB; len],
    )?;
    Ok(format!(
        "graph of {nodes} nodes (memset, D→D, D→H pinned); replayed twice; one replay + wait \
         {replay_us:.0} µs"
    ))
}

/// Grow-on-demand, range checks, wrong-device errors.
fn check_buffers(g: &Gpu) -> Result<String> {
    let mut a = DeviceBuffer::new(&g.device, 1000)?;
    if a.ensure(500)? || a.len() != 1000 {
        return Err(Error::internal("ensure(smaller) reallocated"));
    }
    if !a.ensure(1 << 20)? || a.len() != 1 << 20 || a.ptr() == 0 {
        return Err(Error::internal("ensure(bigger) did not grow"));
    }
    let data = pattern(1 << 20, 5);
    g.stream.copy_htod_pageable(&data, &mut a, 0)?;
    let mut back = vec![0u8; 1 << 20];
    g.stream.copy_dtoh_pageable(&a, 0, &mut back)?;
    expect_equal("grown buffer", &back, &data)?;
    let mut p = PinnedBuffer::new(&g.device, 10)?;
    if !p.ensure(4096)? || p.as_slice()?.len() != 4096 {
        return Err(Error::internal("pinned ensure did not grow"));
    }
    let e = g
        .stream
        .copy_dtoh(&a, (1 << 20) - 10, &mut p, 0, 11)
        .unwrap_err();
    if e.code() != ErrorCode::InvalidArg {
        return Err(Error::internal(format!(
            "out-of-range copy: wrong error {e}"
        )));
    }
    let mut empty = DeviceBuffer::new(&g.device, 0)?;
    g.stream.copy_htod_pageable(&[], &mut empty, 0)?;
    Ok(
        "ensure grows only when needed and keeps working; out-of-range copy refused; empty buffers"
            .into(),
    )
}

/// Copies between devices 0 and 1 when there are two.
fn check_peer(g: &Gpu) -> Result<String> {
    if device_count()? < 2 {
        return Ok("skipped: one device".into());
    }
    let d1 = Device::open(1)?;
    let direct = g.device.can_access_peer(&d1)?;
    if direct {
        g.device.enable_peer_access(&d1)?;
        d1.enable_peer_access(&g.device)?;
    }
    let data = pattern(N, 11);
    let mut a0 = DeviceBuffer::new(&g.device, N)?;
    let mut a1 = DeviceBuffer::new(&d1, N)?;
    let mut b0 = DeviceBuffer::new(&g.device, N)?;
    g.stream.copy_htod_pageable(&data, &mut a0, 0)?;
    let s1 = d1.new_stream()?;
    s1.copy_peer(&a0, 0, &mut a1, 0, N)?;
    s1.synchronize()?;
    g.stream.copy_peer(&a1, 0, &mut b0, 0, N)?;
    let mut back = vec![0u8; N];
    g.stream.copy_dtoh_pageable(&b0, 0, &mut back)?;
    expect_equal("peer round trip", &back, &data)?;
    // A same-device copy between devices is refused with a clear message.
    let e = g.stream.copy_dtod(&a1, 0, &mut b0, 0, 16).unwrap_err();
    if !e.to_string().contains("copy_peer") {
        return Err(Error::internal(format!(
            "cross-device copy_dtod: unexpected error {e}"
        )));
    }
    Ok(format!(
        "{N} bytes 0→1→0 (peer access: {})",
        if direct { "direct" } else { "staged" }
    ))
}

/// Allocating and freeing repeatedly returns the memory (free memory back to where it was).
fn check_leaks(g: &Gpu) -> Result<String> {
    g.device.synchronize()?;
    let (free_before, total) = g.device.mem_get_info()?;
    for i in 0..20 {
        let mut a = DeviceBuffer::new(&g.device, 32 << 20)?;
        a.ensure(64 << 20)?;
        let p = PinnedBuffer::new(&g.device, 1 << 20)?;
        g.stream.memset(&mut a, 0, 64 << 20, i as u8)?;
        g.stream
            .copy_dtoh(&a, 0, &mut PinnedBuffer::new(&g.device, 4096)?, 0, 4096)?;
        drop(p);
    }
    g.device.synchronize()?;
    let (free_after, _) = g.device.mem_get_info()?;
    let lost = free_before.saturating_sub(free_after);
    if lost > 8 << 20 {
        return Err(Error::internal(format!(
            "device memory not returned: {lost} bytes less free after 20 × 64 MiB alloc/free ({free_before} → {free_after})"
        )));
    }
    Ok(format!(
        "20 × (64 MiB device + pinned) alloc/free: free {} → {} MiB of {} MiB",
        free_before >> 20,
        free_after >> 20,
        total >> 20
    ))
}

type Check = fn(&Gpu) -> Result<String>;

const CHECKS: &[(&str, Check)] = &[
    ("identity", check_identity),
    ("pinned round trip", check_pinned_round_trip),
    ("pageable round trip", check_pageable_round_trip),
    ("events", check_events),
    ("graph capture", check_graph),
    ("buffers", check_buffers),
    ("peer copy", check_peer),
    ("leaks", check_leaks),
];

/// Runs every GPU check on device 0 (and 1 for peer copies) and returns a report, one line per
/// check. Fails at the first failing check, naming it and listing those that passed.
pub fn self_test() -> Result<String> {
    let g = open()?;
    let mut report = String::new();
    for (name, check) in CHECKS {
        match check(&g) {
            Ok(line) => writeln!(report, "ok   {name}: {line}").unwrap_or(()),
            Err(e) => {
                return Err(e.context(format!(
                    "CUDA self test '{name}' (passed so far:\n{report})"
                )));
            }
        }
    }
    g.stream.synchronize()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_has_no_short_period_and_differs_by_seed() {
        let p = pattern(4096, 0);
        for period in [1, 2, 4, 8, 256] {
            assert!(
                p[period..].iter().zip(&p).any(|(a, b)| a != b),
                "period {period}"
            );
        }
        assert_ne!(pattern(64, 1), pattern(64, 2));
        assert_eq!(first_diff(&[1, 2, 3], &[1, 2, 4]), Some(2));
        assert_eq!(first_diff(&[1, 2], &[1, 2]), None);
        assert_eq!(first_diff(&[1, 2], &[1, 2, 3]), Some(2));
    }

    /// The GPU tests measure free memory and timings: one at a time, whatever --test-threads says.
    static GPU: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn gpu_lock() -> std::sync::MutexGuard<'static, ()> {
        GPU.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(name: &str) {
        let _one_at_a_time = gpu_lock();
        let g = open().expect("open device 0");
        let (_, check) = CHECKS
            .iter()
            .find(|(n, _)| *n == name)
            .expect("known check");
        match check(&g) {
            Ok(line) => eprintln!("{name}: {line}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_identity() {
        run("identity");
    }
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_pinned_round_trip() {
        run("pinned round trip");
    }
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_pageable_round_trip() {
        run("pageable round trip");
    }
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_events() {
        run("events");
    }
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_graph_capture() {
        run("graph capture");
    }
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_buffers() {
        run("buffers");
    }
    #[test]
    #[ignore = "needs two CUDA GPUs to test anything (passes, skipping, on one)"]
    fn gpu_peer_copy() {
        run("peer copy");
    }
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_leaks() {
        run("leaks");
    }
    #[test]
    #[ignore = "needs a CUDA GPU; prints the whole report (--nocapture)"]
    fn gpu_self_test_report() {
        let _one_at_a_time = gpu_lock();
        match self_test() {
            Ok(r) => println!("{r}"),
            Err(e) => panic!("{e}"),
        }
    }
}

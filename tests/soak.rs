//! Load/unload soak: a model loaded and unloaded many times through the host leaves no file
//! descriptors and no growing memory behind. CI runs 40 cycles; `RUSTTRT_SOAK_CYCLES=300 cargo
//! test --test soak -- --nocapture` runs the long one (docs/reliability.md records its numbers).

mod common;

use common::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn load_unload_cycles_leave_nothing_behind() {
    let cycles: usize = std::env::var("RUSTTRT_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let repo = Repo::new();
    // FP16 on CPU: every load goes through the engine cache (a hit after the first build).
    repo.add(
        "tiny_clip",
        &tiny_clip_dir(),
        Some(
            &tiny_clip_config()
                .replace("string_value: \"FP32\"", "string_value: \"FP16\"")
                .replace("count: 2", "count: 1"),
        ),
    );
    let s = server(&repo);
    let cases = cases(&root().join("tests/data/tiny_clip_cases.json"));
    let c = &cases.cases[0];
    let mut warm = (0, 0);
    for i in 0..cycles {
        s.load_model("tiny_clip").unwrap();
        let resp = s.infer("tiny_clip", request("soak", c)).unwrap();
        assert!(resp.error.is_none(), "cycle {i}: {:?}", resp.error);
        s.unload_model("tiny_clip").unwrap();
        s.clear_log();
        if i == 4 {
            // After the first build and a few hits: what steady state holds.
            warm = (open_fds(), rss_kb());
        }
    }
    let (fds, rss) = (open_fds(), rss_kb());
    println!(
        "{cycles} load/unload cycles: open fds {} -> {fds}, RSS {} kB -> {rss} kB",
        warm.0, warm.1
    );
    assert!(
        fds <= warm.0 + 2,
        "file descriptors grew: {} -> {fds}",
        warm.0
    );
    // Allocator noise allowed, not a per-cycle leak (a leaked session is megabytes).
    assert!(
        rss <= warm.1 + 40 * 1024,
        "RSS grew from {} kB to {rss} kB over {cycles} cycles",
        warm.1
    );
    assert_clean(&s);
}

//! Tests of the engine cache (they run as root in CI containers: see `unusable_locations_*`).

use super::*;
use crate::error::ErrorCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A key unique to this test run (the memory fallback is process-wide, shared by all tests).
fn key(test: &str, extra: &str) -> CacheKey {
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| format!("{}-{:?}", std::process::id(), SystemTime::now()));
    CacheKey::builder()
        .field("model_digest", format!("{test}-{run}"))
        .field("engine", "tensorrt")
        .field("engine_version", "10.16.1")
        .field("device", "NVIDIA H100 80GB HBM3 sm_90")
        .field("precision", "fp16")
        .field("extra", extra)
        .build()
}

fn payload(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn cache_at(dirs: &[&Path]) -> EngineCache {
    EngineCache::new(CacheConfig {
        locations: dirs.iter().map(|d| d.to_path_buf()).collect(),
        max_bytes: None,
        memory_fallback: true,
    })
}

/// Every file below `dir`, recursively.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(files_below(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn second_get_is_a_hit_without_building() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let k = key("hit", "");
    let builds = AtomicUsize::new(0);
    let build = || {
        builds.fetch_add(1, Ordering::SeqCst);
        Ok(payload(7, 5000))
    };
    let first = cache.get_or_build(&k, "m", build).unwrap();
    assert_eq!(first.status, CacheStatus::Miss);
    assert!(first.build_seconds.is_some());
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let path = first.location.clone().unwrap();
    assert_eq!(
        path,
        cache_dir(dir.path())
            .join(&k.digest[..2])
            .join(format!("{}.engine", k.digest))
    );
    assert!(path.with_extension("json").is_file());
    assert!(
        first
            .to_string()
            .starts_with("engine cache miss for 'm' (key "),
        "{first}"
    );

    let second = cache
        .get_or_build(&k, "m", || -> Result<Vec<u8>> {
            builds.fetch_add(1, Ordering::SeqCst);
            Ok(Vec::new())
        })
        .unwrap();
    assert_eq!(
        builds.load(Ordering::SeqCst),
        1,
        "the second get must not build"
    );
    assert_eq!(second.status, CacheStatus::Hit);
    assert_eq!(*second.artifact, payload(7, 5000));
    assert_eq!(second.build_seconds, None);
    assert_eq!(second.location.as_deref(), Some(path.as_path()));
    assert_eq!(
        second.to_string(),
        format!(
            "engine cache hit for 'm' (key {}..., 0.0 MB, {})",
            k.short(),
            path.display()
        )
    );

    // A fresh EngineCache over the same location (a restarted server) hits too.
    let third = cache_at(&[dir.path()])
        .get_or_build(&k, "other-name", || panic!("must not build"))
        .unwrap();
    assert!(third.is_hit());
}

#[test]
fn a_different_field_misses() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let a = key("field", "workspace=1G");
    let b = key("field", "workspace=2G");
    assert_eq!(
        cache
            .get_or_build(&a, "m", || Ok(payload(1, 100)))
            .unwrap()
            .status,
        CacheStatus::Miss
    );
    let out = cache.get_or_build(&b, "m", || Ok(payload(2, 100))).unwrap();
    assert_eq!(out.status, CacheStatus::Miss);
    assert_eq!(*out.artifact, payload(2, 100));
    assert_eq!(list(dir.path()).unwrap().len(), 2);
}

/// Damages the stored entry of `k` with `damage`, then checks the next get rebuilds with a
/// warning naming `expect`, replaces the entry, and the one after hits.
fn damaged_entry_is_rebuilt(test: &str, damage: impl FnOnce(&Path), expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let k = key(test, "");
    let path = cache
        .get_or_build(&k, "m", || Ok(payload(3, 4096)))
        .unwrap()
        .location
        .unwrap();
    damage(&path);
    let out = cache
        .get_or_build(&k, "m", || Ok(payload(3, 4096)))
        .unwrap();
    match &out.status {
        CacheStatus::Rebuilt { reason } => assert!(
            reason.contains(expect),
            "{test}: reason {reason:?} lacks {expect:?}"
        ),
        s => panic!("{test}: expected a rebuild, got {s:?}"),
    }
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(out.warnings[0].contains("rebuilding"), "{:?}", out.warnings);
    assert!(out.to_string().contains("was unusable"), "{out}");
    assert_eq!(*out.artifact, payload(3, 4096));
    let again = cache
        .get_or_build(&k, "m", || {
            panic!("{test}: the replaced entry must be used")
        })
        .unwrap();
    assert!(again.is_hit());
    assert!(again.warnings.is_empty());
}

#[test]
fn flipped_payload_byte_is_rebuilt() {
    damaged_entry_is_rebuilt(
        "flip",
        |p| {
            let mut b = fs::read(p).unwrap();
            let last = b.len() - 100;
            b[last] ^= 0x01;
            fs::write(p, b).unwrap();
        },
        "checksum mismatch",
    );
}

#[test]
fn truncated_entry_is_rebuilt() {
    damaged_entry_is_rebuilt(
        "trunc",
        |p| {
            let b = fs::read(p).unwrap();
            fs::write(p, &b[..b.len() - 1]).unwrap();
        },
        "truncated",
    );
    damaged_entry_is_rebuilt(
        "trunc-header",
        |p| {
            let b = fs::read(p).unwrap();
            fs::write(p, &b[..20]).unwrap();
        },
        "truncated",
    );
    damaged_entry_is_rebuilt("empty", |p| fs::write(p, b"").unwrap(), "truncated");
}

#[test]
fn foreign_file_is_rebuilt() {
    // E.g. a raw TensorRT plan dropped in by hand.
    damaged_entry_is_rebuilt(
        "foreign",
        |p| fs::write(p, payload(9, 3000)).unwrap(),
        "foreign header",
    );
}

#[test]
fn other_format_version_is_rebuilt() {
    damaged_entry_is_rebuilt(
        "version",
        |p| {
            let mut b = fs::read(p).unwrap();
            b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
            fs::write(p, b).unwrap();
        },
        "format version 2",
    );
}

#[test]
fn entry_of_another_key_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let other = key("wrong-key-other", "");
    let other_path = cache
        .get_or_build(&other, "o", || Ok(payload(4, 64)))
        .unwrap()
        .location
        .unwrap();
    damaged_entry_is_rebuilt(
        "wrong-key",
        |p| fs::copy(&other_path, p).map(drop).unwrap(),
        "found under key",
    );
}

#[test]
fn eight_threads_build_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(cache_at(&[dir.path()]));
    let k = key("threads", "");
    let builds = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (cache, k, builds, barrier) =
                (cache.clone(), k.clone(), builds.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cache
                    .get_or_build(&k, "m", || {
                        builds.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        Ok(payload(5, 100_000))
                    })
                    .unwrap()
            })
        })
        .collect();
    let outs: Vec<CacheOutcome> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(
        outs.iter()
            .filter(|o| o.status == CacheStatus::Miss)
            .count(),
        1
    );
    assert_eq!(outs.iter().filter(|o| o.is_hit()).count(), 7);
    assert!(outs.iter().all(|o| *o.artifact == payload(5, 100_000)));
    // The in-process lock map does not keep keys nobody waits for.
    assert!(!key_locks().lock().unwrap().contains_key(&k.digest));
}

const CHILD_ENV: &str = "RUSTTRT_CACHE_TEST_CHILD_DIR";

/// Runs as the parent (spawning two copies of this test executable) or, with `CHILD_ENV` set, as
/// one of the children: both wait until both are ready, then race `get_or_build` on one key; each
/// build appends a line to `builds.txt`.
#[test]
fn two_processes_build_once() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let dir = PathBuf::from(dir);
        let me = std::env::var("RUSTTRT_CACHE_TEST_CHILD_ID").unwrap();
        fs::write(dir.join(format!("ready-{me}")), b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(dir.join("ready-0").exists() && dir.join("ready-1").exists()) {
            assert!(Instant::now() < deadline, "the other child never started");
            std::thread::sleep(Duration::from_millis(2));
        }
        let k = CacheKey::builder()
            .field(
                "model_digest",
                fs::read_to_string(dir.join("nonce")).unwrap(),
            )
            .build();
        let cache = EngineCache::new(CacheConfig {
            locations: vec![dir.join("cache")],
            max_bytes: None,
            memory_fallback: false,
        });
        let out = cache
            .get_or_build(&k, "m", || {
                use std::io::Write;
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(dir.join("builds.txt"))
                    .unwrap();
                writeln!(f, "built by {me}").unwrap();
                std::thread::sleep(Duration::from_millis(500));
                Ok(payload(6, 200_000))
            })
            .unwrap();
        assert_eq!(*out.artifact, payload(6, 200_000));
        println!("child {me}: {out}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("nonce"),
        format!("procs-{:?}", SystemTime::now()),
    )
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|i| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "cache::tests::two_processes_build_once",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, dir.path())
                .env("RUSTTRT_CACHE_TEST_CHILD_ID", i.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut stdout = String::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed: {text}");
        assert!(
            text.contains("1 passed"),
            "the child did not run the test: {text}"
        );
        stdout += &text;
    }
    let builds = fs::read_to_string(dir.path().join("builds.txt")).unwrap();
    assert_eq!(builds.lines().count(), 1, "builds: {builds}\n{stdout}");
    assert_eq!(stdout.matches("engine cache miss").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("engine cache hit").count(), 1, "{stdout}");
}

/// True when directory permissions stop this process from writing (false when running as root).
fn permissions_enforced(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join("probe-ro");
    fs::create_dir(&probe).unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o555)).unwrap();
    let enforced = fs::write(probe.join("x"), b"").is_err();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o755)).unwrap();
    enforced
}

/// Unusable locations are simulated with a path that is a regular file (unusable for everyone,
/// root included); a chmod 0555 directory is tried as well where permissions are enforced (not
/// as root, where writes into it succeed).
#[test]
fn unusable_locations_fall_back_to_the_next_then_to_memory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file_loc = dir.path().join("a-file");
    fs::write(&file_loc, b"not a directory").unwrap();
    let good = dir.path().join("good");
    let mut bad_locations = vec![file_loc.clone()];
    let ro = dir.path().join("read-only");
    if permissions_enforced(dir.path()) {
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        bad_locations.push(ro.clone());
    } else {
        eprintln!("running as root: chmod 0555 does not stop writes; testing the regular-file location only");
    }

    // Bad locations first, then a good one: stored in the good one, one warning per bad location.
    let mut locations = bad_locations.clone();
    locations.push(good.clone());
    let cache = EngineCache::new(CacheConfig {
        locations: locations.clone(),
        max_bytes: None,
        memory_fallback: true,
    });
    let k = key("fallback", "");
    let out = cache
        .get_or_build(&k, "m", || Ok(payload(8, 1000)))
        .unwrap();
    assert_eq!(out.status, CacheStatus::Miss);
    assert!(out.location.as_ref().unwrap().starts_with(&good));
    assert_eq!(
        out.warnings.len(),
        bad_locations.len(),
        "{:?}",
        out.warnings
    );
    assert!(
        out.warnings[0].contains("unusable") && out.warnings[0].contains("a-file"),
        "{:?}",
        out.warnings
    );
    assert!(cache
        .get_or_build(&k, "m", || panic!("must hit"))
        .unwrap()
        .is_hit());

    // Only bad locations: memory only, with warnings; a second get hits memory.
    let cache = EngineCache::new(CacheConfig {
        locations: bad_locations.clone(),
        max_bytes: None,
        memory_fallback: true,
    });
    let k2 = key("fallback-mem", "");
    let builds = AtomicUsize::new(0);
    let build = || {
        builds.fetch_add(1, Ordering::SeqCst);
        Ok(payload(9, 1000))
    };
    let out = cache.get_or_build(&k2, "m", build).unwrap();
    match &out.status {
        CacheStatus::MemoryOnly { reason } => {
            assert!(reason.contains("no usable cache location"), "{reason}")
        }
        s => panic!("expected memory only, got {s:?}"),
    }
    assert_eq!(out.location, None);
    assert!(
        out.warnings.iter().any(|w| w.contains("memory only")),
        "{:?}",
        out.warnings
    );
    assert!(out.to_string().contains("in memory only"), "{out}");
    let again = cache.get_or_build(&k2, "m", build).unwrap();
    assert!(again.is_hit());
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(*again.artifact, payload(9, 1000));

    // Without the memory fallback: built each time, reported as not cached.
    let cache = EngineCache::new(CacheConfig {
        locations: bad_locations,
        max_bytes: None,
        memory_fallback: false,
    });
    let k3 = key("fallback-none", "");
    for _ in 0..2 {
        let out = cache.get_or_build(&k3, "m", || Ok(payload(1, 10))).unwrap();
        assert!(
            matches!(out.status, CacheStatus::Uncached { .. }),
            "{:?}",
            out.status
        );
    }

    if ro.exists() {
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// An entry in a later location is used without building, even when an earlier location is
/// usable (e.g. a read-only cache baked into an image listed after a writable one).
#[test]
fn an_entry_in_a_later_location_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("1"), dir.path().join("2"));
    let k = key("second-loc", "");
    cache_at(&[&second])
        .get_or_build(&k, "m", || Ok(payload(2, 300)))
        .unwrap();
    let out = cache_at(&[&first, &second])
        .get_or_build(&k, "m", || panic!("must not build"))
        .unwrap();
    assert!(out.is_hit());
    assert!(out.location.unwrap().starts_with(&second));
}

#[test]
fn eviction_holds_the_cap_and_keeps_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let k: Vec<CacheKey> = (0..4).map(|i| key("evict", &i.to_string())).collect();
    // Entry = header (~400 B) + 10 000 B payload + sidecar (~600 B): two fit in 25 000, three do not.
    let cache = EngineCache::new(CacheConfig {
        locations: vec![dir.path().into()],
        max_bytes: Some(25_000),
        memory_fallback: true,
    });
    let get = |i: usize| {
        cache
            .get_or_build(&k[i], &format!("m{i}"), || Ok(payload(i as u8, 10_000)))
            .unwrap()
    };
    let digests = || -> Vec<String> {
        let mut d: Vec<String> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|e| e.digest)
            .collect();
        d.sort();
        d
    };
    let sorted = |idx: &[usize]| -> Vec<String> {
        let mut d: Vec<String> = idx.iter().map(|&i| k[i].digest.clone()).collect();
        d.sort();
        d
    };
    get(0);
    std::thread::sleep(Duration::from_millis(20));
    get(1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(digests(), sorted(&[0, 1]));
    let out = get(2);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(digests(), sorted(&[1, 2]), "the oldest entry goes");
    std::thread::sleep(Duration::from_millis(20));
    assert!(get(1).is_hit()); // touches 1: now 2 is the least recently used
    std::thread::sleep(Duration::from_millis(20));
    get(3);
    assert_eq!(digests(), sorted(&[1, 3]));
    let total: u64 = list(dir.path()).unwrap().iter().map(|e| e.size).sum();
    assert!(total <= 25_000, "{total}");
    // Evicted entries leave no files behind (engine, sidecar, lock).
    let left: Vec<PathBuf> = files_below(dir.path());
    assert!(
        left.iter()
            .all(|p| !p.to_string_lossy().contains(&k[0].digest)),
        "{left:?}"
    );

    // An entry larger than the cap is kept (never evict what was just written), with a warning.
    let big = key("evict", "big");
    let out = cache
        .get_or_build(&big, "big", || Ok(payload(1, 30_000)))
        .unwrap();
    assert_eq!(out.status, CacheStatus::Miss);
    assert!(
        out.warnings.iter().any(|w| w.contains("above its cap")),
        "{:?}",
        out.warnings
    );
    assert_eq!(digests(), vec![big.digest.clone()]);
}

#[test]
fn locked_entries_are_not_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let a = key("locked", "a");
    let b = key("locked", "b");
    cache
        .get_or_build(&a, "a", || Ok(payload(1, 5000)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    cache
        .get_or_build(&b, "b", || Ok(payload(2, 5000)))
        .unwrap();
    let root = cache_dir(dir.path());
    let held = FileLock::acquire(&entry_file(&root, &a.digest, "lock")).unwrap();
    let report = prune(dir.path(), 0).unwrap();
    assert_eq!(report.skipped_locked, 1);
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.removed[0].digest, b.digest);
    assert_eq!(list(dir.path()).unwrap()[0].digest, a.digest);
    drop(held);
    let report = prune(dir.path(), 0).unwrap();
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.total_bytes, 0);
    assert!(list(dir.path()).unwrap().is_empty());
}

#[test]
fn build_error_propagates_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let k = key("error", "");
    let err = cache
        .get_or_build(&k, "m", || {
            Err(Error::invalid_arg("model 'm': bad input dims"))
        })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArg);
    assert!(err.to_string().contains("bad input dims"));
    let left: Vec<PathBuf> = files_below(dir.path())
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(list(dir.path()).unwrap().is_empty());
    assert!(memory_get(&k.digest).is_none());
    // The next attempt builds.
    assert_eq!(
        cache
            .get_or_build(&k, "m", || Ok(payload(1, 10)))
            .unwrap()
            .status,
        CacheStatus::Miss
    );
}

#[test]
fn a_panicking_build_does_not_poison_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(cache_at(&[dir.path()]));
    let k = key("panic", "");
    let err = cache
        .get_or_build(&k, "m", || panic!("builder exploded"))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    assert!(
        err.to_string().contains("builder exploded") && err.to_string().contains("'m'"),
        "{err}"
    );
    // Another thread (and this one) can still build the same key.
    let c = cache.clone();
    let k2 = k.clone();
    let out = std::thread::spawn(move || c.get_or_build(&k2, "m", || Ok(payload(1, 10))).unwrap())
        .join()
        .unwrap();
    assert_eq!(out.status, CacheStatus::Miss);
    assert!(cache
        .get_or_build(&k, "m", || panic!("must hit"))
        .unwrap()
        .is_hit());

    // Same in memory-only mode (no file lock involved).
    let mem = EngineCache::new(CacheConfig {
        locations: vec![],
        max_bytes: None,
        memory_fallback: true,
    });
    let km = key("panic-mem", "");
    assert!(mem.get_or_build(&km, "m", || panic!("again")).is_err());
    let out = mem.get_or_build(&km, "m", || Ok(payload(2, 10))).unwrap();
    assert!(matches!(out.status, CacheStatus::MemoryOnly { .. }));
    assert!(
        out.warnings.is_empty(),
        "no location configured is not worth a warning: {:?}",
        out.warnings
    );
}

#[test]
fn timing_cache_round_trip_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let file_loc = dir.path().join("file");
    fs::write(&file_loc, b"x").unwrap();
    let good = dir.path().join("good");
    let cache = cache_at(&[&file_loc, &good]);
    let name = "trt-10.16.1-sm90";
    assert_eq!(cache.load_timing_cache(name).unwrap(), None);
    let path = cache.timing_cache_path(name).unwrap();
    assert_eq!(
        path,
        cache_dir(&good)
            .join("timing")
            .join("trt-10.16.1-sm90.cache")
    );
    assert_eq!(
        cache.store_timing_cache(name, b"timing bytes").unwrap(),
        path
    );
    assert_eq!(
        cache.load_timing_cache(name).unwrap().as_deref(),
        Some(&b"timing bytes"[..])
    );
    // Overwrite, then corrupt.
    cache
        .store_timing_cache(name, b"newer timing bytes")
        .unwrap();
    assert_eq!(
        cache.load_timing_cache(name).unwrap().as_deref(),
        Some(&b"newer timing bytes"[..])
    );
    let mut b = fs::read(&path).unwrap();
    let n = b.len();
    b[n - 1] ^= 0xff;
    fs::write(&path, b).unwrap();
    let err = cache.load_timing_cache(name).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    cache.store_timing_cache(name, b"fixed").unwrap();
    assert_eq!(
        cache.load_timing_cache(name).unwrap().as_deref(),
        Some(&b"fixed"[..])
    );
    // Odd names become hashes, not paths.
    let odd = cache.timing_cache_path("../../etc/passwd").unwrap();
    assert_eq!(odd.parent().unwrap(), cache_dir(&good).join("timing"));
    assert!(!odd.to_string_lossy().contains("passwd"));
    // Timing caches are not engine entries.
    assert!(list(&good).unwrap().is_empty());
    // No usable location at all.
    assert!(cache_at(&[&file_loc]).timing_cache_path(name).is_none());
    assert!(cache_at(&[&file_loc])
        .store_timing_cache(name, b"x")
        .is_err());
}

#[test]
fn admin_list_verify_remove_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let good = key("admin", "good");
    let bad = key("admin", "bad");
    cache
        .get_or_build(&good, "good-model", || Ok(payload(1, 2000)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let bad_path = cache
        .get_or_build(&bad, "bad-model", || Ok(payload(2, 2000)))
        .unwrap()
        .location
        .unwrap();

    let entries = list(dir.path()).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].digest, bad.digest, "most recently used first");
    assert_eq!(entries[0].label.as_deref(), Some("bad-model"));
    assert_eq!(entries[0].fields, bad.fields);
    assert!(entries[0].created_unix.is_some());
    assert!(entries[0].header_error.is_none());
    assert!(entries[0].size > 2000);

    assert!(verify(dir.path()).unwrap().iter().all(|(_, r)| r.is_ok()));
    let mut b = fs::read(&bad_path).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    fs::write(&bad_path, b).unwrap();
    let results = verify(dir.path()).unwrap();
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0.digest, bad.digest);
    assert!(failed[0]
        .1
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("checksum"));

    let removed = remove_invalid(dir.path()).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].0.digest, bad.digest);
    assert!(
        !bad_path.exists()
            && !bad_path.with_extension("json").exists()
            && !bad_path.with_extension("lock").exists()
    );
    let left = list(dir.path()).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].digest, good.digest);
    // A location that does not exist lists as empty.
    assert!(list(&dir.path().join("absent")).unwrap().is_empty());
}

#[test]
fn stale_temp_files_are_pruned_fresh_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let k = key("tmp", "");
    let path = cache
        .get_or_build(&k, "m", || Ok(payload(1, 100)))
        .unwrap()
        .location
        .unwrap();
    let shard = path.parent().unwrap();
    let stale = shard.join(format!(".{}.engine.1.0.tmp", k.digest));
    let fresh = shard.join(format!(".{}.engine.1.1.tmp", k.digest));
    fs::write(&stale, b"half").unwrap();
    fs::write(&fresh, b"half").unwrap();
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let report = prune(dir.path(), u64::MAX).unwrap();
    assert_eq!(report.stale_temp_removed, 1);
    assert!(report.removed.is_empty());
    assert!(!stale.exists() && fresh.exists());
    assert_eq!(
        list(dir.path()).unwrap().len(),
        1,
        "temp files are not entries"
    );
}

#[test]
fn memory_fallback_respects_the_cap() {
    let mem = EngineCache::new(CacheConfig {
        locations: vec![],
        max_bytes: Some(2500),
        memory_fallback: true,
    });
    let k: Vec<CacheKey> = (0..3).map(|i| key("memcap", &i.to_string())).collect();
    for (i, key) in k.iter().enumerate() {
        mem.get_or_build(key, "m", || Ok(payload(i as u8, 1000)))
            .unwrap();
    }
    assert!(
        memory_get(&k[0].digest).is_none(),
        "least recently used goes"
    );
    assert!(memory_get(&k[1].digest).is_some() && memory_get(&k[2].digest).is_some());
}

#[test]
fn cache_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<EngineCache>();
    check::<CacheOutcome>();
}

#[test]
fn an_artifact_the_engine_refuses_is_rebuilt_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let k = key("refused", "");
    let old = cache
        .get_or_build(&k, "m", || Ok(payload(1, 500)))
        .unwrap()
        .artifact;
    let out = cache
        .rebuild_rejected(&k, "m", &old, "deserializeCudaEngine returned null", || {
            Ok(payload(2, 500))
        })
        .unwrap();
    match &out.status {
        CacheStatus::Rebuilt { reason } => {
            assert!(reason.contains("deserializeCudaEngine"), "{reason}")
        }
        s => panic!("expected a rebuild, got {s:?}"),
    }
    assert_eq!(*out.artifact, payload(2, 500));
    // A second instance that refused the same old artifact finds the replacement: no build.
    let again = cache
        .rebuild_rejected(&k, "m", &old, "null", || panic!("already rebuilt"))
        .unwrap();
    assert!(again.is_hit());
    assert_eq!(*again.artifact, payload(2, 500));
    assert_eq!(
        *cache
            .get_or_build(&k, "m", || panic!("must hit"))
            .unwrap()
            .artifact,
        payload(2, 500)
    );

    // Memory-only mode as well.
    let mem = EngineCache::new(CacheConfig {
        locations: vec![],
        max_bytes: None,
        memory_fallback: true,
    });
    let km = key("refused-mem", "");
    let old = mem
        .get_or_build(&km, "m", || Ok(payload(3, 50)))
        .unwrap()
        .artifact;
    let out = mem
        .rebuild_rejected(&km, "m", &old, "null", || Ok(payload(4, 50)))
        .unwrap();
    assert_eq!(*out.artifact, payload(4, 50));
    assert_eq!(
        *mem.get_or_build(&km, "m", || panic!("must hit"))
            .unwrap()
            .artifact,
        payload(4, 50)
    );
}

#[test]
fn a_hand_made_key_that_disagrees_with_its_fields_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let mut k = key("handmade", "");
    k.fields.insert("precision".into(), "fp32".into()); // digest no longer matches
    let err = cache.get_or_build(&k, "m", || Ok(vec![1])).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArg);
    let bad = CacheKey {
        digest: "../../x".into(),
        fields: BTreeMap::new(),
    };
    assert!(cache.get_or_build(&bad, "m", || Ok(vec![1])).is_err());
    assert!(files_below(dir.path()).is_empty());
}

// ---- hardening (issue 9, items 1 and 6): planted cache files ----------------------------------

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn cache_directories_are_created_0700_and_entries_0644() {
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("new-location");
    let cache = cache_at(&[&loc]);
    let k = key("modes", "");
    let out = cache.get_or_build(&k, "m", || Ok(payload(1, 100))).unwrap();
    assert_eq!(out.status, CacheStatus::Miss);
    let root = cache_dir(&loc);
    assert_eq!(mode_of(&loc), 0o700);
    assert_eq!(mode_of(&root), 0o700);
    assert_eq!(mode_of(&shard_dir(&root, &k.digest)), 0o700);
    assert_eq!(mode_of(out.location.as_ref().unwrap()), 0o644);
    let timing = cache.store_timing_cache("t", b"x").unwrap();
    assert_eq!(mode_of(timing.parent().unwrap()), 0o700);
}

#[test]
fn a_cache_dir_writable_by_others_is_refused_and_the_build_kept_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let k = key("world-writable-dir", "");
    cache.get_or_build(&k, "m", || Ok(payload(1, 100))).unwrap();
    let root = cache_dir(dir.path());
    for (shard, mode) in [(false, 0o777), (true, 0o770)] {
        let k = key("world-writable-dir", &format!("{mode:o}"));
        let d = if shard {
            shard_dir(&root, &k.digest)
        } else {
            root.clone()
        };
        fs::create_dir_all(&d).unwrap();
        chmod(&d, mode);
        let builds = AtomicUsize::new(0);
        // A planted entry sits there already; it must not be read.
        let planted = entry_file(&root, &k.digest, "engine");
        let header = encode_header(&k, b"planted");
        if mode == 0o777 {
            fs::create_dir_all(planted.parent().unwrap()).unwrap();
            fs::write(&planted, [header.as_slice(), b"planted"].concat()).unwrap();
            chmod(&planted, 0o644);
        }
        let out = cache
            .get_or_build(&k, "m", || {
                builds.fetch_add(1, Ordering::SeqCst);
                Ok(payload(2, 100))
            })
            .unwrap();
        assert_eq!(
            builds.load(Ordering::SeqCst),
            1,
            "must rebuild, not trust the entry"
        );
        assert!(
            matches!(out.status, CacheStatus::MemoryOnly { .. }),
            "{:?}",
            out.status
        );
        assert_eq!(*out.artifact, payload(2, 100));
        assert!(
            out.warnings
                .iter()
                .any(|w| w.contains("not trusted") && w.contains(&format!("{mode:04o}"))),
            "{:?}",
            out.warnings
        );
        chmod(&d, 0o700);
    }
}

#[test]
fn an_entry_writable_by_others_or_owned_by_another_user_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(&[dir.path()]);
    let k = key("untrusted-entry", "");
    let out = cache.get_or_build(&k, "m", || Ok(payload(1, 100))).unwrap();
    let path = out.location.unwrap();
    chmod(&path, 0o666);
    let out = cache.get_or_build(&k, "m", || Ok(payload(2, 100))).unwrap();
    match &out.status {
        CacheStatus::Rebuilt { reason } => assert!(reason.contains("0666"), "{reason}"),
        s => panic!("expected a rebuild, got {s:?}"),
    }
    assert_eq!(*out.artifact, payload(2, 100));
    assert_eq!(mode_of(&path), 0o644, "the replacement is ours and 0644");

    // Owned by another user: only root can make such a file; the rule itself is covered by
    // safe_file's owner_and_mode_rule test everywhere.
    if crate::safe_file::current_uid() == 0 {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 4242, 4242) }, 0);
        let out = cache.get_or_build(&k, "m", || Ok(payload(3, 100))).unwrap();
        match &out.status {
            CacheStatus::Rebuilt { reason } => assert!(reason.contains("uid 4242"), "{reason}"),
            s => panic!("expected a rebuild, got {s:?}"),
        }
    }
}

#[test]
fn planted_fifos_and_symlinks_in_the_cache_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let loc = dir.path().join("loc");
    let cache = cache_at(&[&loc]);
    let root = cache_dir(&loc);

    // An entry that is a FIFO: refused at once (an open without O_NONBLOCK would block).
    let k = key("fifo-entry", "");
    let entry = entry_file(&root, &k.digest, "engine");
    prepare_dir(entry.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(entry.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let (c2, k2) = (cache.clone(), k.clone());
    std::thread::spawn(move || {
        let _ = tx.send(c2.get_or_build(&k2, "m", || Ok(payload(1, 10))));
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a FIFO cache entry blocked the lookup")
        .unwrap();
    match &out.status {
        CacheStatus::Rebuilt { reason } => assert!(reason.contains("FIFO"), "{reason}"),
        s => panic!("expected a rebuild, got {s:?}"),
    }

    // An entry that is a symlink to a valid entry outside the cache: not read.
    let k = key("symlink-entry", "");
    let foreign = outside.path().join("foreign.engine");
    fs::write(
        &foreign,
        [encode_header(&k, b"evil").as_slice(), b"evil"].concat(),
    )
    .unwrap();
    let entry = entry_file(&root, &k.digest, "engine");
    prepare_dir(entry.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&foreign, &entry).unwrap();
    let out = cache.get_or_build(&k, "m", || Ok(payload(2, 10))).unwrap();
    assert_eq!(*out.artifact, payload(2, 10));
    assert!(
        matches!(&out.status, CacheStatus::Rebuilt { reason } if reason.contains("outside")),
        "{:?}",
        out.status
    );

    // A lock file that is a symlink out of the cache: not followed, nothing created there.
    let k = key("symlink-lock", "");
    let lock = entry_file(&root, &k.digest, "lock");
    prepare_dir(lock.parent().unwrap()).unwrap();
    let target = outside.path().join("created-through-the-link");
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let out = cache.get_or_build(&k, "m", || Ok(payload(3, 10))).unwrap();
    assert_eq!(out.status, CacheStatus::Miss);
    assert!(!target.exists(), "the lock was opened through the symlink");
    assert!(
        out.warnings.iter().any(|w| w.contains("cannot lock")),
        "{:?}",
        out.warnings
    );
}

// ---- fuzz (issue 9, item 9): the header reader on mutated entries, in memory ----------------

mod fuzz {
    use super::super::entry::{encode_header, read_header};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// Any bytes: `read_header` returns a header or a reason, never panics or allocates
        /// what a length field claims beyond the bytes present; whatever it accepts hashes to
        /// its digest.
        #[test]
        fn read_header_never_panics(
            edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
            fields_len in prop::option::of(any::<u32>()),
        ) {
            let key = key("fuzz-header", "");
            let mut b = encode_header(&key, b"payload");
            b.extend_from_slice(b"payload");
            if let Some(n) = fields_len {
                b[116..120].copy_from_slice(&n.to_le_bytes());
            }
            for (p, v) in &edits {
                let i = p % b.len();
                b[i] = *v;
            }
            let cut = cut % (b.len() + 1);
            if let Ok(h) = read_header(&mut &b[..cut]) {
                prop_assert_eq!(key::digest_of(&h.fields), h.digest);
            }
        }
    }
}

const KILL_ENV: &str = "RUSTTRT_CACHE_TEST_KILL_DIR";

/// kill -9 of a process in the middle of a build (holding the key's flock): the lock dies with
/// it, so the next process builds at once (no wait, no stale lock), and nothing half-written is
/// ever read.
#[test]
fn a_build_killed_with_sigkill_leaves_the_key_usable() {
    let key_of = |dir: &Path| {
        CacheKey::builder()
            .field(
                "model_digest",
                fs::read_to_string(dir.join("nonce")).unwrap(),
            )
            .build()
    };
    let cache_of = |dir: &Path| {
        EngineCache::new(CacheConfig {
            locations: vec![dir.join("cache")],
            max_bytes: None,
            memory_fallback: false,
        })
    };
    if let Ok(dir) = std::env::var(KILL_ENV) {
        let dir = PathBuf::from(dir);
        let _ = cache_of(&dir).get_or_build(&key_of(&dir), "m", || {
            fs::write(dir.join("building"), b"").unwrap();
            std::thread::sleep(Duration::from_secs(120));
            Ok(payload(1, 10))
        });
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("nonce"),
        format!("kill-{:?}", SystemTime::now()),
    )
    .unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cache::tests::a_build_killed_with_sigkill_leaves_the_key_usable",
            "--test-threads=1",
        ])
        .env(KILL_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.path().join("building").exists() {
        assert!(
            Instant::now() < deadline,
            "the child never started building"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // A write that was cut short leaves a temp file: never read, pruned when stale.
    let k = key_of(dir.path());
    let root = cache_dir(&dir.path().join("cache"));
    fs::write(
        shard_dir(&root, &k.digest).join(format!(".{}.engine.99999.0.tmp", k.digest)),
        b"RTRTCACH half",
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(cache_of(&d).get_or_build(&key_of(&d), "m", || Ok(payload(2, 10))));
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the lock of the killed builder was not released")
        .unwrap();
    assert_eq!(out.status, CacheStatus::Miss);
    assert_eq!(*out.artifact, payload(2, 10));
}

//! Engine cache: built engine artifacts (a serialized TensorRT plan, or an ONNX model converted
//! for ONNX Runtime) stored on disk under a key of everything the build depends on, so every
//! later load of the same model with the same engine, device and options is instant.
//!
//! What it guarantees:
//!
//! - **Content keys.** A [`CacheKey`] is a SHA-256 over named fields: the model's *digest* (never
//!   its path), engine kind and version, device, precision, profiles, every builder option, the
//!   backend version. A changed model, TensorRT or GPU gives another key, so no stale engine.
//! - **One build per key.** [`EngineCache::get_or_build`] holds a per-key lock across threads (an
//!   in-process map of mutexes) and across processes (an exclusive `flock` on the key's `.lock`
//!   file). The first caller builds; the others wait, then load what it stored.
//! - **No half-written files.** Entries are written to a temp file in the same directory,
//!   fsynced, renamed over the final name, and the directory is fsynced.
//! - **Verified loads.** Every load checks magic, format version, key, length and the payload's
//!   SHA-256. Any mismatch (corruption, truncation, foreign file, other format version) is a
//!   warning, a rebuild and a replacement; never a crash.
//! - **Trusts only what could not be planted.** Cache files are opened through
//!   [`crate::safe_file`] (regular files only, never blocking, symlinks resolved and refused
//!   when they leave the cache directory; lock files never followed through a symlink). A cache
//!   directory or shard that is group/world-writable or owned by another user (root excepted)
//!   is neither read nor written (warning, next location, finally memory); such an entry is
//!   rebuilt and replaced. Directories are created 0700, entries written 0644. What this does
//!   and does not defend against: docs/reliability.md.
//! - **Degrades, never fails, on storage trouble.** An unusable location (read-only, not a
//!   directory, full) is a warning and the next location is tried; with none usable the artifact
//!   is kept in a process-wide memory map (if [`CacheConfig::memory_fallback`]).
//! - **Size cap.** With [`CacheConfig::max_bytes`], least recently used entries are evicted
//!   after each insert (the entry file's mtime, touched on every hit, is the LRU clock). The entry
//!   just written and entries whose key is locked (being built or checked) are never evicted.
//!
//! Messages are returned ([`CacheOutcome::warnings`], its `Display`), not logged: the backend
//! logs them through Triton.
//!
//! # Concurrency
//!
//! A lookup first reads the entry without any lock (entries only ever appear whole, by rename,
//! and are verified in full), so concurrent hits do not serialize. On a miss the caller takes the
//! in-process key mutex, then the `flock` on `<digest>.lock` in the first usable location, looks
//! again (another thread or process may have built it meanwhile) and only then builds. Lock
//! files are kept while their entry exists; eviction removes one only while holding it, and a
//! waiter that then locks the unlinked file notices (inode check) and locks the new one.
//! `flock` is per open file, so it also excludes threads of one process; over NFS Linux maps it
//! onto POSIX byte-range locks. Locks are advisory: tools that write into the cache directory
//! without them are not excluded (the checksums still catch what they break).
//!
//! A panic inside `build` is caught and returned as an error; the key's locks are released and
//! usable by later callers.
//!
//! # On-disk layout
//!
//! ```text
//! <location>/rusttrt-cache-v1/            one directory per cache format version
//!     ab/                                 first two hex digits of the key digest
//!         ab12…(64 hex).engine            the entry: header + payload
//!         ab12….json                      sidecar for humans and `rusttrt cache ls`
//!         ab12….lock                      empty; flock'ed while the key is built / checked
//!         .ab12….engine.<pid>.<n>.tmp     a write in progress (removed on error; stale ones
//!                                         older than an hour are removed by prune)
//!     timing/<name>.cache                 timing caches (same entry format)
//! ```
//!
//! # Entry file format (version 1)
//!
//! All integers little-endian.
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | magic `RTRTCACH` |
//! | 8 | 4 | format version, `u32` ([`FORMAT_VERSION`]) |
//! | 12 | 64 | key digest, lowercase hex ASCII |
//! | 76 | 8 | payload length in bytes, `u64` |
//! | 84 | 32 | SHA-256 of the payload (raw bytes) |
//! | 116 | 4 | length `n` of the key fields JSON, `u32` |
//! | 120 | n | key fields: a JSON object of strings, names sorted |
//! | 120+n | payload length | the payload (engine plan / converted model) |
//!
//! A reader accepts an entry only if the magic and version match, the fields JSON parses and
//! hashes (as in [`CacheKey`]) to the stored digest, that digest is the one looked up, the file
//! size is exactly `120 + n + payload length`, and the payload's SHA-256 matches.
//!
//! The sidecar `<digest>.json` holds `format_version`, `digest`, `label` (the model name of the
//! first build), `fields`, `payload_bytes`, `file_bytes`, `created_unix` (seconds) and
//! `build_seconds`. It is informational: loads never trust it.

mod admin;
mod entry;
mod key;
#[cfg(test)]
mod tests;

pub use admin::{list, prune, remove_invalid, verify, EntryInfo, PruneReport, RemovedEntry};
pub use key::{CacheKey, CacheKeyBuilder};

use crate::error::{Error, Result};
use entry::{encode_header, load_entry, write_atomic, FileLock, LoadError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Version of the on-disk format (directory name, entry header, key digest). Bump it when any of
/// them changes; old entries then live in another directory and are never read.
pub const FORMAT_VERSION: u32 = 1;

/// First bytes of every entry file.
pub(crate) const MAGIC: &[u8; 8] = b"RTRTCACH";

/// Where to cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheConfig {
    /// Cache directories in order of preference (created if absent). The first usable one
    /// receives new entries; an existing valid entry is used from any of them.
    pub locations: Vec<PathBuf>,
    /// Cap on the bytes of entries (entry files + sidecars) per location, and on the memory
    /// fallback; `None` = unbounded.
    pub max_bytes: Option<u64>,
    /// With no usable location, keep artifacts in a process-wide memory map (else build every time).
    pub memory_fallback: bool,
}

/// How a [`CacheOutcome`] came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// Loaded from a verified entry (on disk, or in the memory fallback when `location` is `None`).
    Hit,
    /// No entry: built and stored.
    Miss,
    /// An entry existed but was unusable (`reason`): built again and replaced.
    Rebuilt { reason: String },
    /// Built and kept in process memory only, because nothing could be stored on disk (`reason`).
    MemoryOnly { reason: String },
    /// Built and not kept at all (no usable location and no memory fallback).
    Uncached { reason: String },
}

/// The result of [`EngineCache::get_or_build`].
#[derive(Debug, Clone)]
pub struct CacheOutcome {
    /// The engine artifact.
    pub artifact: Arc<Vec<u8>>,
    pub status: CacheStatus,
    /// The model name it was requested for (for messages).
    pub label: String,
    /// The key's digest.
    pub digest: String,
    /// Seconds the build took, when this call built.
    pub build_seconds: Option<f64>,
    /// The entry file the artifact came from or went to (`None` in memory).
    pub location: Option<PathBuf>,
    /// Things the caller should log as warnings (corrupt entry replaced, unusable location ...).
    pub warnings: Vec<String>,
}

impl CacheOutcome {
    /// True when no build ran.
    pub fn is_hit(&self) -> bool {
        self.status == CacheStatus::Hit
    }
}

impl fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.digest[..16.min(self.digest.len())];
        let mb = self.artifact.len() as f64 / 1e6;
        let place = match &self.location {
            Some(p) => p.display().to_string(),
            None => "memory".to_string(),
        };
        let built = self
            .build_seconds
            .map(|s| format!(", built in {s:.1} s"))
            .unwrap_or_default();
        match &self.status {
            CacheStatus::Hit => write!(f, "engine cache hit for '{}' (key {key}..., {mb:.1} MB, {place})", self.label),
            CacheStatus::Miss => {
                write!(f, "engine cache miss for '{}' (key {key}...{built}, stored {mb:.1} MB at {place})", self.label)
            }
            CacheStatus::Rebuilt { reason } => write!(
                f,
                "engine cache entry for '{}' was unusable ({reason}) (key {key}...{built}, stored {mb:.1} MB at {place})",
                self.label
            ),
            CacheStatus::MemoryOnly { reason } => write!(
                f,
                "engine cache miss for '{}' (key {key}...{built}, {mb:.1} MB kept in memory only: {reason})",
                self.label
            ),
            CacheStatus::Uncached { reason } => {
                write!(f, "engine for '{}' not cached (key {key}...{built}, {mb:.1} MB: {reason})", self.label)
            }
        }
    }
}

/// The human-readable sidecar beside each entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sidecar {
    pub format_version: u32,
    pub digest: String,
    pub label: String,
    pub fields: BTreeMap<String, String>,
    pub payload_bytes: u64,
    pub file_bytes: u64,
    pub created_unix: u64,
    pub build_seconds: f64,
}

/// The engine cache. `Send + Sync`; share it through an `Arc`. Locks and the memory fallback are
/// process-wide, so separate `EngineCache` values over the same locations also build once.
#[derive(Debug, Clone)]
pub struct EngineCache {
    config: CacheConfig,
}

/// `<location>/rusttrt-cache-v<FORMAT_VERSION>`: the directory this format version owns.
pub fn cache_dir(location: &Path) -> PathBuf {
    location.join(format!("rusttrt-cache-v{FORMAT_VERSION}"))
}

pub(crate) fn shard_dir(root: &Path, digest: &str) -> PathBuf {
    root.join(&digest[..2])
}

pub(crate) fn entry_file(root: &Path, digest: &str, ext: &str) -> PathBuf {
    shard_dir(root, digest).join(format!("{digest}.{ext}"))
}

/// Creates `dir` if needed (mode 0700, with any missing parent) and proves it writable by
/// creating and removing a probe file.
fn prepare_dir(dir: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let probe = dir.join(format!(".probe.{}.{n}.tmp", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

fn touch(path: &Path) {
    // Best effort: the LRU clock. A read-only entry simply keeps its age.
    if let Ok(f) = entry::open_cache_file(path) {
        let _ = f.file.set_modified(SystemTime::now());
    }
}

/// Whether the cache directory `root` and the directory `sub` under it (a shard, `timing`) could
/// have been planted or changed by another user ([`crate::safe_file::check_owner_and_mode`]).
/// Directories that do not exist yet pass (they are created 0700 by us).
pub(crate) fn check_trusted_dirs(root: &Path, sub: &Path) -> std::result::Result<(), String> {
    for d in [root, sub] {
        match fs::metadata(d) {
            Ok(m) => crate::safe_file::check_owner_and_mode(&m).map_err(|why| {
                format!(
                    "{} is not trusted: {why}; make it the server user's and `chmod go-w` it \
                         to use it",
                    d.display()
                )
            })?,
            // Nothing there (or a path through a file): nothing that could be planted; a
            // location that cannot hold a directory is reported as unusable elsewhere.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => return Err(format!("cannot stat {}: {e}", d.display())),
        }
    }
    Ok(())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---- process-wide state -------------------------------------------------------------------------

/// Per-key in-process locks (flock alone would also serialize threads, but the memory fallback
/// has no file to lock, and a mutex is cheaper).
fn key_locks() -> &'static Mutex<HashMap<String, Arc<Mutex<()>>>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    LOCKS.get_or_init(Default::default)
}

/// Runs `f` holding the in-process lock of `digest`. A panic in an earlier holder does not
/// poison it for later callers.
fn with_key_lock<T>(digest: &str, f: impl FnOnce() -> T) -> T {
    let m = {
        let mut map = key_locks().lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(digest.to_string()).or_default().clone()
    };
    let result = {
        let _guard = m.lock().unwrap_or_else(PoisonError::into_inner);
        f()
    };
    let mut map = key_locks().lock().unwrap_or_else(PoisonError::into_inner);
    // Only the map and we hold it: nobody waits, drop the entry (clones need the map lock).
    if Arc::strong_count(&m) == 2 {
        map.remove(digest);
    }
    result
}

#[derive(Default)]
struct MemoryStore {
    entries: HashMap<String, (Arc<Vec<u8>>, u64)>,
    clock: u64,
}

fn memory() -> &'static Mutex<MemoryStore> {
    static MEMORY: OnceLock<Mutex<MemoryStore>> = OnceLock::new();
    MEMORY.get_or_init(Default::default)
}

fn memory_get(digest: &str) -> Option<Arc<Vec<u8>>> {
    let mut mem = memory().lock().unwrap_or_else(PoisonError::into_inner);
    mem.clock += 1;
    let clock = mem.clock;
    mem.entries.get_mut(digest).map(|(a, used)| {
        *used = clock;
        a.clone()
    })
}

/// Inserts, then evicts least recently used entries (never `digest`) to hold `max_bytes`.
fn memory_put(digest: &str, artifact: Arc<Vec<u8>>, max_bytes: Option<u64>) {
    let mut mem = memory().lock().unwrap_or_else(PoisonError::into_inner);
    mem.clock += 1;
    let clock = mem.clock;
    mem.entries.insert(digest.to_string(), (artifact, clock));
    if let Some(max) = max_bytes {
        let mut total: u64 = mem.entries.values().map(|(a, _)| a.len() as u64).sum();
        let mut order: Vec<(u64, String, u64)> = mem
            .entries
            .iter()
            .filter(|(d, _)| d.as_str() != digest)
            .map(|(d, (a, u))| (*u, d.clone(), a.len() as u64))
            .collect();
        order.sort();
        for (_, d, len) in order {
            if total <= max {
                break;
            }
            mem.entries.remove(&d);
            total -= len;
        }
    }
}

// ---- the cache ----------------------------------------------------------------------------------

impl EngineCache {
    pub fn new(config: CacheConfig) -> Self {
        EngineCache { config }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Returns the artifact for `key`: a verified stored entry, or `build()`'s result, which is
    /// then stored. `label` (the model name) only appears in messages.
    ///
    /// Concurrent callers with one key (threads or processes sharing a location) build once: the
    /// first builds while the others wait, then load the stored entry. A build error is returned
    /// as is and stores nothing; a panic in `build` is caught and returned as an INTERNAL error,
    /// and the locks stay usable. Storage problems never fail the call: they become
    /// [`CacheOutcome::warnings`] and a weaker [`CacheStatus`].
    pub fn get_or_build<F>(&self, key: &CacheKey, label: &str, build: F) -> Result<CacheOutcome>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        check_key(key)?;
        // Fast path without locks: entries only ever appear complete (atomic rename), and a hit
        // is verified in full.
        for loc in &self.config.locations {
            let root = cache_dir(loc);
            if check_trusted_dirs(&root, &shard_dir(&root, &key.digest)).is_err() {
                continue;
            }
            let path = entry_file(&root, &key.digest, "engine");
            if let Ok((_, payload)) = load_entry(&path, Some(key)) {
                touch(&path);
                return Ok(self.outcome(
                    key,
                    label,
                    payload.into(),
                    CacheStatus::Hit,
                    None,
                    Some(path),
                    Vec::new(),
                ));
            }
        }
        if let Some(a) = memory_get(&key.digest) {
            return Ok(self.outcome(key, label, a, CacheStatus::Hit, None, None, Vec::new()));
        }
        with_key_lock(&key.digest, || {
            self.locked_get_or_build(key, label, build, None)
        })
    }

    /// For an artifact that verified but that the engine then refused (e.g. TensorRT's
    /// `deserializeCudaEngine` returned null): builds again and replaces the entry, status
    /// [`CacheStatus::Rebuilt`]. `rejected` is the refused artifact, `reason` why.
    ///
    /// When several instances refuse the same artifact at once, only the first rebuilds: under
    /// the key lock, an entry whose payload differs from `rejected` (someone already replaced it)
    /// is returned as a [`CacheStatus::Hit`].
    pub fn rebuild_rejected<F>(
        &self,
        key: &CacheKey,
        label: &str,
        rejected: &[u8],
        reason: &str,
        build: F,
    ) -> Result<CacheOutcome>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        check_key(key)?;
        let rejected = Rejected {
            sha256: Sha256::digest(rejected).into(),
            reason: format!("the engine refused it: {reason}"),
        };
        with_key_lock(&key.digest, || {
            self.locked_get_or_build(key, label, build, Some(&rejected))
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn outcome(
        &self,
        key: &CacheKey,
        label: &str,
        artifact: Arc<Vec<u8>>,
        status: CacheStatus,
        build_seconds: Option<f64>,
        location: Option<PathBuf>,
        warnings: Vec<String>,
    ) -> CacheOutcome {
        CacheOutcome {
            artifact,
            status,
            label: label.to_string(),
            digest: key.digest.clone(),
            build_seconds,
            location,
            warnings,
        }
    }

    fn locked_get_or_build<F>(
        &self,
        key: &CacheKey,
        label: &str,
        build: F,
        rejected: Option<&Rejected>,
    ) -> Result<CacheOutcome>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        let mut warnings = Vec::new();
        let mut unusable = Vec::new();
        // The first usable location takes new entries; unusable ones before it may still hold a
        // valid entry (e.g. a read-only cache baked into an image).
        let mut target = None;
        for loc in &self.config.locations {
            let root = cache_dir(loc);
            let shard = shard_dir(&root, &key.digest);
            let prepared = prepare_dir(&shard);
            // A directory someone else could write into may hold a planted entry: neither read
            // nor write it (as OpenSSH refuses such key directories).
            if let Err(why) = check_trusted_dirs(&root, &shard) {
                warnings.push(format!(
                    "engine cache location {} is refused ({why}); trying the next",
                    loc.display()
                ));
                unusable.push(why);
                continue;
            }
            match prepared {
                Ok(()) => {
                    target = Some(root);
                    break;
                }
                Err(reason) => {
                    let path = entry_file(&root, &key.digest, "engine");
                    match load_entry(&path, Some(key)) {
                        Ok((h, _)) if is_rejected(&h.payload_sha256, rejected) => {}
                        Ok((_, payload)) => {
                            warnings.push(format!("engine cache location {} is not writable ({reason}); using its entry", loc.display()));
                            return Ok(self.outcome(
                                key,
                                label,
                                payload.into(),
                                CacheStatus::Hit,
                                None,
                                Some(path),
                                warnings,
                            ));
                        }
                        Err(LoadError::Invalid(why)) => warnings.push(format!(
                            "engine cache: ignoring unusable entry {} ({why})",
                            path.display()
                        )),
                        Err(LoadError::Missing) => {}
                    }
                    warnings.push(format!(
                        "engine cache location {} is unusable ({reason}); trying the next",
                        loc.display()
                    ));
                    unusable.push(reason);
                }
            }
        }

        let Some(root) = target else {
            return self.build_without_disk(key, label, build, warnings, unusable, rejected);
        };

        let lock_path = entry_file(&root, &key.digest, "lock");
        let _flock = match FileLock::acquire(&lock_path) {
            Ok(l) => Some(l),
            Err(e) => {
                // Cannot coordinate with other processes; still correct (atomic writes), only
                // possibly duplicated work.
                warnings.push(format!(
                    "engine cache: cannot lock {} ({e}); building without the cross-process lock",
                    lock_path.display()
                ));
                None
            }
        };
        let path = entry_file(&root, &key.digest, "engine");
        let mut status = CacheStatus::Miss;
        match load_entry(&path, Some(key)) {
            Ok((h, _)) if is_rejected(&h.payload_sha256, rejected) => {
                let reason = rejected.map(|r| r.reason.clone()).unwrap_or_default();
                warnings.push(format!(
                    "engine cache entry {} for '{label}' is unusable ({reason}); rebuilding it",
                    path.display()
                ));
                status = CacheStatus::Rebuilt { reason };
            }
            Ok((_, payload)) => {
                // Built by another thread or process while we waited.
                touch(&path);
                return Ok(self.outcome(
                    key,
                    label,
                    payload.into(),
                    CacheStatus::Hit,
                    None,
                    Some(path),
                    warnings,
                ));
            }
            Err(LoadError::Missing) => {}
            Err(LoadError::Invalid(reason)) => {
                warnings.push(format!(
                    "engine cache entry {} for '{label}' is unusable ({reason}); rebuilding it",
                    path.display()
                ));
                status = CacheStatus::Rebuilt { reason };
            }
        }

        let (artifact, secs) = run_build(label, build)?;
        let header = encode_header(key, &artifact);
        let shard = shard_dir(&root, &key.digest);
        if let Err(e) = write_atomic(
            &shard,
            &format!("{}.engine", key.digest),
            &[&header, &artifact],
        ) {
            let reason = format!("cannot write {}: {e}", path.display());
            warnings.push(format!("engine cache: {reason}"));
            let artifact = Arc::new(artifact);
            let status = if self.config.memory_fallback {
                memory_put(&key.digest, artifact.clone(), self.config.max_bytes);
                CacheStatus::MemoryOnly { reason }
            } else {
                CacheStatus::Uncached { reason }
            };
            return Ok(self.outcome(key, label, artifact, status, Some(secs), None, warnings));
        }
        let sidecar = Sidecar {
            format_version: FORMAT_VERSION,
            digest: key.digest.clone(),
            label: label.to_string(),
            fields: key.fields.clone(),
            payload_bytes: artifact.len() as u64,
            file_bytes: (header.len() + artifact.len()) as u64,
            created_unix: now_unix(),
            build_seconds: secs,
        };
        let json = serde_json::to_vec_pretty(&sidecar).expect("sidecar serializes");
        if let Err(e) = write_atomic(&shard, &format!("{}.json", key.digest), &[&json]) {
            warnings.push(format!(
                "engine cache: cannot write the sidecar of {}: {e}",
                path.display()
            ));
        }
        if let Some(max) = self.config.max_bytes {
            match admin::evict(&root, max, Some(&key.digest)) {
                Ok(report) => warnings.extend(report.warnings),
                Err(e) => warnings.push(format!(
                    "engine cache: eviction in {} failed: {e}",
                    root.display()
                )),
            }
        }
        Ok(self.outcome(
            key,
            label,
            Arc::new(artifact),
            status,
            Some(secs),
            Some(path),
            warnings,
        ))
    }

    fn build_without_disk<F>(
        &self,
        key: &CacheKey,
        label: &str,
        build: F,
        mut warnings: Vec<String>,
        unusable: Vec<String>,
        rejected: Option<&Rejected>,
    ) -> Result<CacheOutcome>
    where
        F: FnOnce() -> Result<Vec<u8>>,
    {
        // Another thread may have built it while we waited for the key lock.
        if let Some(a) = memory_get(&key.digest) {
            if !is_rejected(&Sha256::digest(a.as_slice()).into(), rejected) {
                return Ok(self.outcome(key, label, a, CacheStatus::Hit, None, None, warnings));
            }
        }
        let reason = if unusable.is_empty() {
            "no cache location configured".to_string()
        } else {
            format!("no usable cache location ({})", unusable.join("; "))
        };
        let (artifact, secs) = run_build(label, build)?;
        let artifact = Arc::new(artifact);
        let status = if self.config.memory_fallback {
            if !self.config.locations.is_empty() {
                warnings.push(format!(
                    "engine cache: {reason}; keeping the engine for '{label}' in memory only"
                ));
            }
            memory_put(&key.digest, artifact.clone(), self.config.max_bytes);
            CacheStatus::MemoryOnly { reason }
        } else {
            if !self.config.locations.is_empty() {
                warnings.push(format!(
                    "engine cache: {reason}; the engine for '{label}' is not cached"
                ));
            }
            CacheStatus::Uncached { reason }
        };
        Ok(self.outcome(key, label, artifact, status, Some(secs), None, warnings))
    }

    // ---- timing cache ---------------------------------------------------------------------------

    /// Where the timing cache `name` is (or would be) stored: `<root>/timing/<name>.cache` in the
    /// first usable location. `name` should carry what a timing cache depends on (TensorRT
    /// version, GPU); names with characters outside `[A-Za-z0-9._-]` are replaced by their hash.
    pub fn timing_cache_path(&self, name: &str) -> Option<PathBuf> {
        self.config.locations.iter().find_map(|loc| {
            let root = cache_dir(loc);
            let dir = root.join("timing");
            prepare_dir(&dir)
                .ok()
                .filter(|()| check_trusted_dirs(&root, &dir).is_ok())
                .map(|()| dir.join(timing_file_name(name)))
        })
    }

    /// Loads the timing cache `name` from the first location holding a valid one. `Ok(None)`
    /// when there is none; `Err` (for a warning) when only invalid ones were found; the next
    /// [`store_timing_cache`](Self::store_timing_cache) replaces them.
    pub fn load_timing_cache(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let key = timing_key(name);
        let mut problems = Vec::new();
        for loc in &self.config.locations {
            let root = cache_dir(loc);
            if let Err(why) = check_trusted_dirs(&root, &root.join("timing")) {
                problems.push(why);
                continue;
            }
            let path = root.join("timing").join(timing_file_name(name));
            match load_entry(&path, Some(&key)) {
                Ok((_, bytes)) => return Ok(Some(bytes)),
                Err(LoadError::Missing) => {}
                Err(LoadError::Invalid(why)) => problems.push(format!("{}: {why}", path.display())),
            }
        }
        if problems.is_empty() {
            Ok(None)
        } else {
            Err(Error::internal(format!(
                "timing cache '{name}' is unusable: {}",
                problems.join("; ")
            )))
        }
    }

    /// Stores the timing cache `name` atomically in the first usable location; returns its path.
    pub fn store_timing_cache(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let Some(path) = self.timing_cache_path(name) else {
            return Err(Error::unavailable(format!(
                "no usable cache location for timing cache '{name}'"
            )));
        };
        let header = encode_header(&timing_key(name), bytes);
        let dir = path.parent().expect("timing cache path has a parent");
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .expect("timing file name is UTF-8");
        write_atomic(dir, file, &[&header, bytes]).map_err(|e| {
            Error::internal(format!("cannot write timing cache {}: {e}", path.display()))
        })
    }
}

/// An artifact the engine refused (see [`EngineCache::rebuild_rejected`]).
struct Rejected {
    sha256: [u8; 32],
    reason: String,
}

fn is_rejected(payload_sha256: &[u8; 32], rejected: Option<&Rejected>) -> bool {
    rejected.is_some_and(|r| &r.sha256 == payload_sha256)
}

/// A key must be what [`CacheKey::builder`] makes: its digest is the hash of its fields (the
/// fields are public, so a hand-made key could disagree, and the digest names files).
fn check_key(key: &CacheKey) -> Result<()> {
    if key::is_digest(&key.digest) && key::digest_of(&key.fields) == key.digest {
        Ok(())
    } else {
        Err(Error::invalid_arg(format!(
            "engine cache key {:?} is not the digest of its fields; build keys with CacheKey::builder()",
            key.digest
        )))
    }
}

/// Builds, timing it and turning a panic into an error.
fn run_build<F>(label: &str, build: F) -> Result<(Vec<u8>, f64)>
where
    F: FnOnce() -> Result<Vec<u8>>,
{
    let start = Instant::now();
    match catch_unwind(AssertUnwindSafe(build)) {
        Ok(Ok(artifact)) => Ok((artifact, start.elapsed().as_secs_f64())),
        Ok(Err(e)) => Err(e),
        Err(payload) => Err(Error::from_panic(
            &format!("the engine build for '{label}'"),
            payload,
        )),
    }
}

fn timing_key(name: &str) -> CacheKey {
    CacheKey::builder()
        .field("kind", "timing_cache")
        .field("name", name)
        .build()
}

fn timing_file_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 120
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if plain {
        format!("{name}.cache")
    } else {
        format!("{}.cache", &timing_key(name).digest[..32])
    }
}

//! Administration of one cache location (`rusttrt cache ls | verify | prune`) and the LRU
//! eviction used after inserts.

use super::entry::{load_entry, open_cache_file, read_header, FileLock, LoadError, TMP_SUFFIX};
use super::key::is_digest;
use super::{cache_dir, entry_file, Sidecar};
use crate::error::{Error, Result, ResultExt};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Temp files older than this are leftovers of a killed writer.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// One entry of a cache location, as listed by [`list`].
#[derive(Debug, Clone)]
pub struct EntryInfo {
    /// Key digest (the file stem).
    pub digest: String,
    /// Model name of the build that created it (from the sidecar).
    pub label: Option<String>,
    /// Key fields from the entry header (empty if the header is unreadable).
    pub fields: BTreeMap<String, String>,
    /// Bytes on disk: entry file + sidecar.
    pub size: u64,
    /// Last use (entry file mtime; the LRU clock).
    pub modified: SystemTime,
    /// Creation time from the sidecar, seconds since the epoch.
    pub created_unix: Option<u64>,
    /// The entry file.
    pub path: PathBuf,
    /// Why the header could not be read, if it could not (the payload is not checked by [`list`]).
    pub header_error: Option<String>,
}

/// An entry removed by [`prune`] or eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedEntry {
    pub digest: String,
    pub path: PathBuf,
    pub bytes: u64,
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Entries removed, least recently used first.
    pub removed: Vec<RemovedEntry>,
    pub freed_bytes: u64,
    /// Bytes of entries left.
    pub total_bytes: u64,
    /// Entries that would have been removed but were locked (in use by a build or a check).
    pub skipped_locked: usize,
    /// Stale temp files (older than an hour) removed.
    pub stale_temp_removed: usize,
    pub warnings: Vec<String>,
}

/// One entry found by a scan: its files and sizes.
struct Scanned {
    digest: String,
    engine: PathBuf,
    bytes: u64,
    modified: SystemTime,
}

/// Entries of the cache directory `root` (`<location>/rusttrt-cache-v<N>`), plus stale temp files.
fn scan(root: &Path) -> io::Result<(Vec<Scanned>, Vec<PathBuf>)> {
    let mut entries = Vec::new();
    let mut stale = Vec::new();
    let shards = match fs::read_dir(root) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((entries, stale)),
        Err(e) => return Err(e),
    };
    for shard in shards {
        let shard = shard?;
        let name = shard.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() != 2 || !shard.file_type()?.is_dir() {
            continue;
        }
        for file in fs::read_dir(shard.path())? {
            let file = file?;
            let fname = file.file_name();
            let Some(fname) = fname.to_str() else {
                continue;
            };
            let path = file.path();
            if fname.starts_with('.') && fname.ends_with(TMP_SUFFIX) {
                let old = file
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok());
                if old.is_some_and(|age| age > STALE_TMP) {
                    stale.push(path);
                }
                continue;
            }
            let Some(digest) = fname.strip_suffix(".engine") else {
                continue;
            };
            if !is_digest(digest) {
                continue;
            }
            let meta = match file.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                Err(e) => return Err(e),
            };
            let sidecar = fs::metadata(path.with_extension("json"))
                .map(|m| m.len())
                .unwrap_or(0);
            entries.push(Scanned {
                digest: digest.to_string(),
                engine: path,
                bytes: meta.len() + sidecar,
                modified: meta.modified()?,
            });
        }
    }
    Ok((entries, stale))
}

/// Removes the files of one entry if its key lock can be taken now and `still_wanted()` (checked
/// under the lock) agrees. `Ok(false)` = not removed.
fn remove_entry(
    root: &Path,
    digest: &str,
    still_wanted: impl FnOnce() -> bool,
) -> io::Result<bool> {
    let lock_path = entry_file(root, digest, "lock");
    let Some(lock) = FileLock::try_acquire(&lock_path)? else {
        return Ok(false);
    };
    if !still_wanted() {
        return Ok(false);
    }
    fs::remove_file(entry_file(root, digest, "engine")).or_else(ignore_missing)?;
    fs::remove_file(entry_file(root, digest, "json")).or_else(ignore_missing)?;
    // Unlinked while held: a process that opened the old lock file notices (inode check) and
    // reopens, so it cannot think it holds the lock alongside someone holding the new file.
    fs::remove_file(&lock_path).or_else(ignore_missing)?;
    drop(lock);
    Ok(true)
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Evicts least recently used entries of `root` until it holds at most `max_bytes`, never
/// touching `keep` or locked entries. Also removes stale temp files.
pub(crate) fn evict(root: &Path, max_bytes: u64, keep: Option<&str>) -> io::Result<PruneReport> {
    let (mut entries, stale) = scan(root)?;
    let mut report = PruneReport::default();
    for t in stale {
        if fs::remove_file(&t).is_ok() {
            report.stale_temp_removed += 1;
        }
    }
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    entries.sort_by(|a, b| {
        a.modified
            .cmp(&b.modified)
            .then_with(|| a.digest.cmp(&b.digest))
    });
    for e in entries {
        if total <= max_bytes {
            break;
        }
        if keep == Some(e.digest.as_str()) {
            continue;
        }
        match remove_entry(root, &e.digest, || true) {
            Ok(true) => {
                total -= e.bytes;
                report.freed_bytes += e.bytes;
                report.removed.push(RemovedEntry {
                    digest: e.digest,
                    path: e.engine,
                    bytes: e.bytes,
                });
            }
            Ok(false) => report.skipped_locked += 1,
            Err(err) => report.warnings.push(format!(
                "engine cache: cannot evict {}: {err}",
                e.engine.display()
            )),
        }
    }
    report.total_bytes = total;
    if total > max_bytes {
        report.warnings.push(format!(
            "engine cache {} holds {total} bytes, above its cap of {max_bytes} (the newest entry alone, or entries in use, exceed it)",
            root.display()
        ));
    }
    Ok(report)
}

fn info(root: &Path, s: Scanned) -> EntryInfo {
    let (fields, header_error) = match open_cache_file(&s.engine)
        .map_err(|e| match e {
            LoadError::Missing => "removed while listed".to_string(),
            LoadError::Invalid(why) => why,
        })
        .and_then(|mut f| read_header(&mut f.file))
    {
        Ok(h) => (h.fields, None),
        Err(e) => (BTreeMap::new(), Some(e)),
    };
    let sidecar: Option<Sidecar> = open_cache_file(&entry_file(root, &s.digest, "json"))
        .ok()
        .and_then(|mut f| crate::safe_file::read_all(&mut f, 1 << 20, "cache sidecar").ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    EntryInfo {
        digest: s.digest,
        label: sidecar.as_ref().map(|c| c.label.clone()),
        fields,
        size: s.bytes,
        modified: s.modified,
        created_unix: sidecar.map(|c| c.created_unix),
        path: s.engine,
        header_error,
    }
}

/// The entries of a cache location (the directory given in [`super::CacheConfig::locations`]),
/// most recently used first. Reads headers and sidecars, not payloads.
pub fn list(location: &Path) -> Result<Vec<EntryInfo>> {
    let root = cache_dir(location);
    let (entries, _) = scan(&root).ctx(|| format!("listing engine cache {}", root.display()))?;
    let mut out: Vec<EntryInfo> = entries.into_iter().map(|s| info(&root, s)).collect();
    out.sort_by(|a, b| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| a.digest.cmp(&b.digest))
    });
    Ok(out)
}

/// Checks every entry of a location in full (header, key, length, payload checksum).
pub fn verify(location: &Path) -> Result<Vec<(EntryInfo, Result<()>)>> {
    Ok(list(location)?
        .into_iter()
        .map(|info| {
            let r = match load_entry(&info.path, None) {
                Ok((h, _)) if h.digest == info.digest => Ok(()),
                Ok((h, _)) => Err(Error::internal(format!(
                    "{}: entry holds key {} but is stored under {}",
                    info.path.display(),
                    &h.digest[..16],
                    &info.digest[..16]
                ))),
                Err(LoadError::Missing) => Err(Error::not_found(format!(
                    "{}: removed while verifying",
                    info.path.display()
                ))),
                Err(LoadError::Invalid(why)) => {
                    Err(Error::internal(format!("{}: {why}", info.path.display())))
                }
            };
            (info, r)
        })
        .collect())
}

/// Removes least recently used entries of a location until it holds at most `max_bytes`
/// (`0` empties it), skipping entries in use. Also removes stale temp files.
pub fn prune(location: &Path, max_bytes: u64) -> Result<PruneReport> {
    let root = cache_dir(location);
    evict(&root, max_bytes, None).ctx(|| format!("pruning engine cache {}", root.display()))
}

/// Removes every entry that fails [`verify`] (unless in use); returns them with the reason.
pub fn remove_invalid(location: &Path) -> Result<Vec<(EntryInfo, String)>> {
    let root = cache_dir(location);
    let mut removed = Vec::new();
    for (info, r) in verify(location)? {
        if let Err(e) = r {
            // Re-checked under the lock: a concurrent rebuild may have replaced it meanwhile.
            let still_bad =
                || !matches!(load_entry(&info.path, None), Ok((h, _)) if h.digest == info.digest);
            if remove_entry(&root, &info.digest, still_bad)
                .ctx(|| format!("removing {}", info.path.display()))?
            {
                removed.push((info, e.to_string()));
            }
        }
    }
    Ok(removed)
}

//! The entry file format, atomic writes and per-key lock files.

use super::key::digest_of;
use super::{CacheKey, FORMAT_VERSION, MAGIC};
use crate::error::ErrorCode;
use crate::safe_file::{self, SafeFile};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Size of the fixed part of the header (everything before the fields JSON).
pub(crate) const FIXED_HEADER_LEN: usize = 8 + 4 + 64 + 8 + 32 + 4;
/// Largest fields JSON accepted when reading (a guard against garbage lengths).
const MAX_FIELDS_JSON: usize = 1 << 20;

/// The decoded header of an entry file.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub digest: String,
    pub fields: BTreeMap<String, String>,
    pub payload_len: u64,
    pub payload_sha256: [u8; 32],
    /// Bytes from the start of the file to the first payload byte.
    pub header_len: u64,
}

/// Encodes the header for `payload` stored under `key`.
pub(crate) fn encode_header(key: &CacheKey, payload: &[u8]) -> Vec<u8> {
    let fields = serde_json::to_vec(&key.fields).expect("a string map always serializes");
    let sha: [u8; 32] = Sha256::digest(payload).into();
    let mut h = Vec::with_capacity(FIXED_HEADER_LEN + fields.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(key.digest.as_bytes());
    h.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    h.extend_from_slice(&sha);
    h.extend_from_slice(&(fields.len() as u32).to_le_bytes());
    h.extend_from_slice(&fields);
    h
}

/// Reads and checks the header at the start of `r`: magic, format version, a well-formed key
/// whose recomputed digest equals the stored one. Errors are human-readable reasons.
pub(crate) fn read_header(r: &mut impl Read) -> Result<Header, String> {
    let mut fixed = [0u8; FIXED_HEADER_LEN];
    read_exact_or(r, &mut fixed, "header")?;
    if &fixed[0..8] != MAGIC {
        return Err("not a rusttrt cache entry (foreign header)".into());
    }
    let version = u32::from_le_bytes(fixed[8..12].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(format!(
            "written by cache format version {version}, this backend uses version {FORMAT_VERSION}"
        ));
    }
    let digest = std::str::from_utf8(&fixed[12..76])
        .map_err(|_| "key digest in header is not text".to_string())?
        .to_string();
    let payload_len = u64::from_le_bytes(fixed[76..84].try_into().unwrap());
    let payload_sha256: [u8; 32] = fixed[84..116].try_into().unwrap();
    let fields_len = u32::from_le_bytes(fixed[116..120].try_into().unwrap()) as usize;
    if fields_len > MAX_FIELDS_JSON {
        return Err(format!(
            "key fields length {fields_len} in header is implausible"
        ));
    }
    let mut fields_json = vec![0u8; fields_len];
    read_exact_or(r, &mut fields_json, "key fields")?;
    let fields: BTreeMap<String, String> = serde_json::from_slice(&fields_json)
        .map_err(|e| format!("key fields in header are not valid JSON: {e}"))?;
    if digest_of(&fields) != digest {
        return Err("key fields in header do not hash to the stored key digest".into());
    }
    Ok(Header {
        digest,
        fields,
        payload_len,
        payload_sha256,
        header_len: (FIXED_HEADER_LEN + fields_len) as u64,
    })
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), String> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("file ends inside the {what} (truncated)"),
        _ => format!("reading the {what}: {e}"),
    })
}

/// Why an entry could not be used.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// No entry file.
    Missing,
    /// The file exists but is not a valid entry for the key (the reason is for a warning).
    Invalid(String),
}

/// The cache directory (`<location>/rusttrt-cache-v<N>`) a cache file belongs to: every cache
/// file is `<root>/<shard or "timing">/<file>`.
pub(crate) fn root_of(path: &Path) -> &Path {
    path.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| Path::new("/"))
}

/// Opens a cache file for reading through [`safe_file::open_in_dir`]: inside its cache directory
/// once symlinks are resolved, a regular file, never blocking. NOT_FOUND is `Missing`.
pub(crate) fn open_cache_file(path: &Path) -> Result<SafeFile, LoadError> {
    match safe_file::open_in_dir(root_of(path), path, "engine cache file") {
        Ok(f) => Ok(f),
        Err(e) if e.code() == ErrorCode::NotFound => Err(LoadError::Missing),
        Err(e) => Err(LoadError::Invalid(e.to_string())),
    }
}

/// Reads the entry at `path`, checking everything: where it is and what it is
/// ([`open_cache_file`]), who could have written it ([`safe_file::check_owner_and_mode`]),
/// header, key digest (`expect`, when given), file size against the stored payload length, and
/// the payload's SHA-256.
pub(crate) fn load_entry(
    path: &Path,
    expect: Option<&CacheKey>,
) -> Result<(Header, Vec<u8>), LoadError> {
    let SafeFile {
        file: mut f,
        len: file_len,
        meta,
        ..
    } = open_cache_file(path)?;
    safe_file::check_owner_and_mode(&meta)
        .map_err(|why| LoadError::Invalid(format!("untrusted entry: {why}")))?;
    let header = read_header(&mut f).map_err(LoadError::Invalid)?;
    if let Some(key) = expect {
        if header.digest != key.digest {
            return Err(LoadError::Invalid(format!(
                "entry holds key {} but was found under key {}",
                &header.digest[..16],
                key.short()
            )));
        }
    }
    let expected_len = header.header_len.checked_add(header.payload_len);
    if expected_len != Some(file_len) {
        return Err(LoadError::Invalid(format!(
            "file is {file_len} bytes, header says {} + {} (truncated or extended)",
            header.header_len, header.payload_len
        )));
    }
    let mut payload = Vec::new();
    payload
        .try_reserve_exact(header.payload_len as usize)
        .map_err(|e| LoadError::Invalid(format!("cannot allocate payload: {e}")))?;
    f.read_to_end(&mut payload)
        .map_err(|e| LoadError::Invalid(format!("reading payload: {e}")))?;
    if payload.len() as u64 != header.payload_len {
        return Err(LoadError::Invalid(
            "file changed size while being read".into(),
        ));
    }
    let sha: [u8; 32] = Sha256::digest(&payload).into();
    if sha != header.payload_sha256 {
        return Err(LoadError::Invalid(
            "payload checksum mismatch (corrupted)".into(),
        ));
    }
    Ok((header, payload))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Suffix of temporary files (they also start with a dot).
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Writes `parts` to `dir/name` atomically: a temp file in the same directory, written, fsynced,
/// renamed over the target, then the directory fsynced. Readers see the old file or the complete
/// new one, never a part. On error the temp file is removed.
pub(crate) fn write_atomic(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<PathBuf> {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}{TMP_SUFFIX}", std::process::id()));
    let target = dir.join(name);
    let result = (|| {
        // 0644 whatever the umask: readable by others (a cache baked into an image by one user
        // and read by another), writable by nobody else, which a later load checks.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &target)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| target)
}

/// fsync a directory so a rename in it is durable. File systems that cannot fsync a directory
/// (EINVAL) are tolerated.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e)
            if e.kind() == io::ErrorKind::InvalidInput
                || e.kind() == io::ErrorKind::Unsupported =>
        {
            Ok(())
        }
        r => r,
    }
}

/// An exclusive advisory lock (flock) held on a key's `.lock` file; released on drop.
#[derive(Debug)]
pub(crate) struct FileLock {
    // Held only for its lock: flock locks belong to the open file description and are released
    // when it is closed.
    _file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` (created if absent) is held. Guards against the lock file
    /// being unlinked by eviction between our open and our lock: after locking, the path must
    /// still name the inode we locked, or we start over. The lock file is opened by
    /// [`open_lock_file`].
    pub(crate) fn acquire(path: &Path) -> io::Result<FileLock> {
        loop {
            let file = open_lock_file(path)?;
            file.lock()?;
            if same_inode(&file, path)? {
                return Ok(FileLock { _file: file });
            }
        }
    }

    /// Takes the lock without waiting (creating the lock file if absent): `Ok(None)` when someone
    /// else holds it.
    pub(crate) fn try_acquire(path: &Path) -> io::Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        if same_inode(&file, path)? {
            Ok(Some(FileLock { _file: file }))
        } else {
            Ok(None)
        }
    }
}

/// Opens (creating, mode 0600) a lock file through [`safe_file::open_or_create_in_dir`]: its
/// directory inside the cache directory, not a symlink, a regular file, never blocking.
fn open_lock_file(path: &Path) -> io::Result<File> {
    safe_file::open_or_create_in_dir(root_of(path), path, "engine cache lock file")
        .map(|f| f.file)
        .map_err(|e| {
            let kind = match e.code() {
                ErrorCode::NotFound => io::ErrorKind::NotFound,
                _ => io::ErrorKind::InvalidInput,
            };
            io::Error::new(kind, e.to_string())
        })
}

fn same_inode(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejections() {
        let key = CacheKey::builder().field("model_digest", "abc").build();
        let payload = b"plan bytes".to_vec();
        let header = encode_header(&key, &payload);
        let h = read_header(&mut &header[..]).unwrap();
        assert_eq!(h.digest, key.digest);
        assert_eq!(h.fields, key.fields);
        assert_eq!(h.payload_len, payload.len() as u64);
        assert_eq!(h.header_len, header.len() as u64);

        // Tampered field JSON (same length) no longer hashes to the digest.
        let mut bad = header.clone();
        let pos = bad.windows(3).position(|w| w == b"abc").unwrap();
        bad[pos] = b'x';
        assert!(read_header(&mut &bad[..])
            .unwrap_err()
            .contains("do not hash"));
        // Truncated header.
        assert!(read_header(&mut &header[..50])
            .unwrap_err()
            .contains("truncated"));
    }

    #[test]
    fn try_acquire_sees_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.lock");
        let held = FileLock::acquire(&p).unwrap();
        assert!(
            FileLock::try_acquire(&p).unwrap().is_none(),
            "a second open file must not get the lock"
        );
        drop(held);
        assert!(FileLock::try_acquire(&p).unwrap().is_some());
        assert!(FileLock::try_acquire(&dir.path().join("absent.lock"))
            .unwrap()
            .is_some());
    }
}

//! Opening files that someone else may have planted: the one place the backend and `rusttrt`
//! open a model file, its external data, a cache entry, its lock or a timing cache.
//!
//! Every open here:
//!
//! - **never blocks**: the file is opened with `O_NONBLOCK`, so a FIFO (named pipe) with no
//!   writer opens at once instead of waiting forever (for a regular file the flag has no
//!   effect), and a socket fails to open (`ENXIO`);
//! - **accepts only regular files**: after the open, `fstat` on the descriptor must say
//!   "regular file"; a FIFO, a device (`/dev/zero`), a directory or a socket is an error
//!   naming what it is;
//! - **knows the size before reading**: reads are bounded by the size `fstat` gave and by a
//!   caller's limit, and allocate fallibly, so a huge file or a huge declared length is a clear
//!   error, never an abort on allocation failure;
//! - **stays inside its directory** ([`open_in_dir`]): the path is resolved with every symlink
//!   followed, must still lie inside the (equally resolved) directory, and the resolved path is
//!   opened with `O_NOFOLLOW`, so a symlink swapped in afterwards fails the open instead of
//!   being followed.
//!
//! What it does not do: stop a process that can write into the directory from changing a file
//! between our checks and a later open by another library (ONNX Runtime opens the model by path
//! after we checked it). See docs/reliability.md.

use crate::error::{Error, ErrorCode, Result};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest model file read into memory: protobuf's (and ONNX's) 2 GiB message limit.
pub const MAX_MODEL_BYTES: u64 = (1 << 31) - 1;

/// An open regular file and the size `fstat` gave when it was opened.
#[derive(Debug)]
pub struct SafeFile {
    pub file: File,
    /// Size in bytes at open time.
    pub len: u64,
    /// The path that was opened (resolved for [`open_in_dir`]).
    pub path: PathBuf,
    /// `fstat` of the open file.
    pub meta: Metadata,
}

/// What a non-regular file is, for messages.
fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

fn io_error(e: &io::Error, what: &str, path: &Path) -> Error {
    let code = match e.kind() {
        // A path through a regular file (ENOTDIR) names nothing either.
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => ErrorCode::NotFound,
        io::ErrorKind::PermissionDenied => ErrorCode::Unavailable,
        _ => match e.raw_os_error() {
            // A socket (ENXIO), a symlink where O_NOFOLLOW forbids one (ELOOP): the file is
            // not what it should be.
            Some(libc::ENXIO) | Some(libc::ELOOP) => ErrorCode::InvalidArg,
            _ => ErrorCode::Internal,
        },
    };
    Error::new(code, format!("cannot open {what} {}: {e}", path.display()))
}

fn open_with(path: &Path, what: &str, opts: &mut OpenOptions, nofollow: bool) -> Result<SafeFile> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = opts
        .custom_flags(flags)
        .open(path)
        .map_err(|e| io_error(&e, what, path))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::internal(format!("cannot stat {what} {}: {e}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(Error::invalid_arg(format!(
            "{what} {} is {}; only regular files are accepted",
            path.display(),
            kind_of(&meta)
        )));
    }
    Ok(SafeFile {
        file,
        len: meta.len(),
        path: path.to_path_buf(),
        meta,
    })
}

/// Opens `path` for reading; symlinks are followed, the result must be a regular file.
pub fn open_regular(path: &Path, what: &str) -> Result<SafeFile> {
    open_with(path, what, OpenOptions::new().read(true), false)
}

/// Resolves `path` (every symlink, `..`) and checks it lies inside `dir` (also resolved).
/// Returns the resolved path. NOT_FOUND when the file does not exist; INVALID_ARG when it
/// resolves outside `dir`.
pub fn resolve_in_dir(dir: &Path, path: &Path, what: &str) -> Result<PathBuf> {
    let base = dir.canonicalize().map_err(|e| {
        let code = match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => ErrorCode::NotFound,
            _ => ErrorCode::Internal,
        };
        Error::new(
            code,
            format!(
                "cannot resolve the directory {} of {what}: {e}",
                dir.display()
            ),
        )
    })?;
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    };
    let real = full.canonicalize().map_err(|e| io_error(&e, what, &full))?;
    if !real.starts_with(&base) || real == base {
        return Err(Error::invalid_arg(format!(
            "{what} {} resolves to {}, outside the directory {} it must stay in",
            full.display(),
            real.display(),
            base.display()
        )));
    }
    Ok(real)
}

/// Opens `path` (relative to `dir`, or absolute) for reading after [`resolve_in_dir`]: the file
/// must resolve inside `dir` and be a regular file. The resolved path is opened with
/// `O_NOFOLLOW | O_NONBLOCK`.
pub fn open_in_dir(dir: &Path, path: &Path, what: &str) -> Result<SafeFile> {
    let real = resolve_in_dir(dir, path, what)?;
    open_with(&real, what, OpenOptions::new().read(true), true)
}

/// Opens `path` for reading and writing, creating it (mode 0600) if absent, when its directory
/// resolves inside `dir`; the file itself must not be a symlink and must be a regular file.
/// For lock files.
pub fn open_or_create_in_dir(dir: &Path, path: &Path, what: &str) -> Result<SafeFile> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::invalid_arg(format!(
            "{what} {} has no file name",
            path.display()
        )));
    };
    let base = dir.canonicalize().map_err(|e| io_error(&e, what, dir))?;
    let real_parent = parent
        .canonicalize()
        .map_err(|e| io_error(&e, what, parent))?;
    if !real_parent.starts_with(&base) {
        return Err(Error::invalid_arg(format!(
            "{what} {}: its directory resolves to {}, outside the directory {} it must stay in",
            path.display(),
            real_parent.display(),
            base.display()
        )));
    }
    let real = real_parent.join(name);
    open_with(
        &real,
        what,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600),
        true,
    )
}

/// Reads `len` bytes at `offset` of `f`, after checking the range lies inside the file and
/// `len <= limit`; the buffer is allocated fallibly.
pub fn read_range(
    f: &mut SafeFile,
    offset: u64,
    len: u64,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let end = offset.checked_add(len);
    if end.is_none_or(|end| end > f.len) {
        return Err(Error::invalid_arg(format!(
            "{what}: {len} bytes at offset {offset} lie outside {} ({} bytes)",
            f.path.display(),
            f.len
        )));
    }
    if len > limit {
        return Err(Error::invalid_arg(format!(
            "{what}: {len} bytes in {} is over the limit of {limit} bytes",
            f.path.display()
        )));
    }
    let n = usize::try_from(len)
        .map_err(|_| Error::invalid_arg(format!("{what}: {len} bytes do not fit in memory")))?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(n).map_err(|e| {
        Error::unavailable(format!(
            "{what}: cannot allocate {len} bytes to read {}: {e}",
            f.path.display()
        ))
    })?;
    f.file
        .seek(SeekFrom::Start(offset))
        .and_then(|_| (&mut f.file).take(len).read_to_end(&mut buf))
        .map_err(|e| Error::internal(format!("cannot read {what} {}: {e}", f.path.display())))?;
    if buf.len() as u64 != len {
        return Err(Error::internal(format!(
            "{what} {} shrank while it was read ({} of {len} bytes)",
            f.path.display(),
            buf.len()
        )));
    }
    Ok(buf)
}

/// Reads the whole of `f` when its size is at most `limit`.
pub fn read_all(f: &mut SafeFile, limit: u64, what: &str) -> Result<Vec<u8>> {
    let len = f.len;
    read_range(f, 0, len, limit, what)
}

/// [`open_regular`] then [`read_all`].
pub fn read_file(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    read_all(&mut open_regular(path, what)?, limit, what)
}

/// The effective user id of this process.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Whether a file or directory (its `stat`) could have been planted or changed by someone else
/// than this process's user: `Err(why)` when it is owned by another user than this process's
/// (root excepted: root can change anything anyway) or is writable by its group or by others.
/// The rule OpenSSH applies to key files and their directories.
pub fn check_owner_and_mode(meta: &Metadata) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    check_owner_and_mode_of(meta.uid(), meta.mode(), current_uid())
}

/// [`check_owner_and_mode`] on an owner `uid` and a `mode`, for a process running as `me`.
pub fn check_owner_and_mode_of(uid: u32, mode: u32, me: u32) -> std::result::Result<(), String> {
    if uid != me && uid != 0 {
        return Err(format!(
            "owned by uid {uid}, not by this process's uid {me} (or root)"
        ));
    }
    let mode = mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "writable by its group or by others (mode {mode:04o})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pipe");
        mkfifo(&p);
        let e = open_regular(&p, "test file").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArg);
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = open_in_dir(d.path(), Path::new("pipe"), "test file").unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = open_or_create_in_dir(d.path(), &p, "lock").unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
    }

    #[test]
    fn devices_and_directories_are_refused() {
        let e = read_file(Path::new("/dev/zero"), "model", 10).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let e = read_file(Path::new("/"), "model", 10).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }

    #[test]
    fn symlinks_leaving_the_directory_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        let d = tempfile::tempdir().unwrap();
        symlink(&secret, d.path().join("link")).unwrap();
        let e = open_in_dir(d.path(), Path::new("link"), "external data").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArg);
        assert!(e.to_string().contains("outside the directory"), "{e}");
        let e = open_in_dir(d.path(), Path::new("../x"), "external data").unwrap_err();
        assert_ne!(e.code(), ErrorCode::Internal);
        // A symlink that stays inside is fine.
        std::fs::write(d.path().join("real"), b"abc").unwrap();
        symlink("real", d.path().join("inner")).unwrap();
        let mut f = open_in_dir(d.path(), Path::new("inner"), "external data").unwrap();
        assert_eq!(read_all(&mut f, 10, "x").unwrap(), b"abc");
        // The directory itself is not a file inside it.
        assert!(open_in_dir(d.path(), Path::new("."), "x").is_err());
        // A lock file whose directory is a symlink out of the cache is refused.
        symlink(outside.path(), d.path().join("shard")).unwrap();
        let e =
            open_or_create_in_dir(d.path(), &d.path().join("shard/k.lock"), "lock").unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        // ... and a lock file that is itself a symlink.
        symlink(&secret, d.path().join("k.lock")).unwrap();
        assert!(open_or_create_in_dir(d.path(), &d.path().join("k.lock"), "lock").is_err());
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    }

    #[test]
    fn owner_and_mode_rule() {
        assert!(check_owner_and_mode_of(1000, 0o40700, 1000).is_ok());
        assert!(check_owner_and_mode_of(1000, 0o100644, 1000).is_ok());
        assert!(
            check_owner_and_mode_of(0, 0o40755, 1000).is_ok(),
            "root-owned is trusted"
        );
        let e = check_owner_and_mode_of(1001, 0o40700, 1000).unwrap_err();
        assert!(e.contains("uid 1001"), "{e}");
        let e = check_owner_and_mode_of(1000, 0o40777, 1000).unwrap_err();
        assert!(e.contains("0777"), "{e}");
        assert!(check_owner_and_mode_of(1000, 0o100620, 1000).is_err());
        assert!(
            check_owner_and_mode_of(0, 0o41777, 0).is_err(),
            "sticky /tmp-like dirs too"
        );
    }

    #[test]
    fn reads_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        let f = File::create(&p).unwrap();
        // Sparse: no disk used.
        f.set_len(1 << 40).unwrap();
        let e = read_file(&p, "model", MAX_MODEL_BYTES).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArg);
        assert!(e.to_string().contains("over the limit"), "{e}");
        let mut f = open_regular(&p, "x").unwrap();
        assert!(read_range(&mut f, u64::MAX - 1, 10, u64::MAX, "x").is_err());
        assert!(read_range(&mut f, 0, (1 << 40) + 1, u64::MAX, "x").is_err());
        assert_eq!(read_range(&mut f, 10, 4, 4, "x").unwrap(), vec![0; 4]);
    }
}

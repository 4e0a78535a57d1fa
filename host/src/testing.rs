//! Helpers for tests: locating (and building) a workspace cdylib such as
//! `libtriton_mockbackend.so` or `libtriton_rusttrt.so`.
//!
//! `CARGO_TARGET_DIR` is not known at compile time, so the target directory is derived from
//! the running executable: tests live in `<target>/<profile>/deps/`, binaries in
//! `<target>/<profile>/`. Cargo does not build a cdylib that is not a dependency of the test,
//! so the first call per package runs `cargo build -p <package>` (with `--release` for a
//! release profile) into that same target directory; it is a quick no-op when up to date and
//! guarantees the library is not stale. Set `RUSTTRT_SKIP_CDYLIB_BUILD=1` to skip the build
//! and only search.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{LazyLock, Mutex};

static BUILT: LazyLock<Mutex<HashMap<String, Result<(), String>>>> =
    LazyLock::new(Default::default);

/// `<target>/<profile>` of the running executable.
pub fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.parent().map(Path::to_path_buf)
    } else {
        Some(dir.to_path_buf())
    }
}

/// Workspace root (the directory holding the root Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn find(profile: &Path, file: &str) -> Option<PathBuf> {
    [profile.join(file), profile.join("deps").join(file)]
        .into_iter()
        .find(|p| p.is_file())
}

/// Path of `lib<lib_name>.so` from workspace package `package`, building it first (once per
/// process) so it is current. Panics with a clear message when it cannot be found or built.
pub fn find_or_build_cdylib(package: &str, lib_name: &str) -> PathBuf {
    find_or_build(package, &format!("lib{lib_name}.so"), &["--lib"])
}

/// Path of the binary `name` of workspace package `package` (e.g. the `rusttrt` command, the
/// backend's build worker), built first like [`find_or_build_cdylib`].
pub fn find_or_build_bin(package: &str, name: &str) -> PathBuf {
    find_or_build(package, name, &["--bin", name])
}

fn find_or_build(package: &str, file: &str, what: &[&str]) -> PathBuf {
    let file = file.to_string();
    let profile = profile_dir().expect("cannot determine the target directory from current_exe()");
    let skip = std::env::var_os("RUSTTRT_SKIP_CDYLIB_BUILD").is_some_and(|v| v == "1");
    if !skip {
        let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
        let r = built.entry(format!("{package}/{file}")).or_insert_with(|| {
            let target = profile.parent().unwrap_or(&profile).to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(workspace_root())
                .args(["build", "-p", package])
                .args(what)
                .env("CARGO_TARGET_DIR", &target);
            if profile.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            match cmd.status() {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!("`cargo build -p {package}` failed with {s}")),
                Err(e) => Err(format!("cannot run cargo: {e}")),
            }
        });
        if let Err(e) = r {
            if let Some(p) = find(&profile, &file) {
                eprintln!(
                    "[rusttrt-host] warning: {e}; using existing {}",
                    p.display()
                );
                return p;
            }
            panic!("{file} not found under {} and {e}", profile.display());
        }
    }
    find(&profile, &file).unwrap_or_else(|| {
        panic!(
            "{file} (package {package}) not found under {} — run `cargo build -p {package}`",
            profile.display()
        )
    })
}

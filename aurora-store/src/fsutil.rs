//! Small file-system helpers shared by the store: atomic writes, fsync of directories,
//! removal of read-only trees, sizes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::StoreError;

/// Prefix of temporary files; readers skip names starting with it.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp name unique to this process and call, in the same directory as `target`, so the
/// final rename stays on one file system (rename is only atomic there).
pub(crate) fn tmp_path_for(target: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = format!("{TMP_PREFIX}{}-{n}-{name}", std::process::id());
    target.with_file_name(tmp)
}

/// fsync a directory so renames/creations inside it survive a power loss.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    let f = File::open(dir).map_err(|e| StoreError::io("open directory", dir, e))?;
    f.sync_all().map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// Write `bytes` to `target` atomically: a reader sees the old file or the complete new one,
/// never a prefix, even if we are killed mid-write (tmp + fsync + rename + fsync dir).
pub(crate) fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = tmp_path_for(target);
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| StoreError::io("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| StoreError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| StoreError::io("fsync", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, target).map_err(|e| StoreError::io("rename into place", target, e))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res?;
    if let Some(parent) = target.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Names of the entries of `dir`, or an empty list if it does not exist (a store opened
/// read-only may lack subdirectories that nothing has written to yet).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("read directory", dir, e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| StoreError::io("read directory", dir, e))?;
        // Non-UTF-8 names are never created by the store; skip them rather than fail.
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Total size in bytes of the regular files under `path` (or of `path` itself). Best effort:
/// unreadable parts count as zero, because sizes are only reported, never relied on.
pub(crate) fn disk_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let Ok(rd) = fs::read_dir(path) else {
        return 0;
    };
    rd.flatten().map(|e| disk_size(&e.path())).sum()
}

/// Seal a finished output tree in one walk: clear the write bits of every regular file
/// (artifacts are immutable: accidental in-place edits become permission errors instead of
/// silent corruption), then fsync it, and fsync every directory (the tree's root included), so a
/// later rename can never publish a tree whose data or permissions are not yet on disk.
pub(crate) fn seal_tree(dir: &Path) -> Result<(), StoreError> {
    let rd = fs::read_dir(dir).map_err(|e| StoreError::io("read directory", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| StoreError::io("read directory", dir, e))?;
        let p = entry.path();
        let meta = fs::symlink_metadata(&p).map_err(|e| StoreError::io("read", &p, e))?;
        if meta.is_dir() {
            seal_tree(&p)?;
        } else if meta.is_file() {
            let mut perm = meta.permissions();
            perm.set_mode(perm.mode() & !0o222);
            fs::set_permissions(&p, perm).map_err(|e| StoreError::io("make read-only", &p, e))?;
            let f = File::open(&p).map_err(|e| StoreError::io("open", &p, e))?;
            f.sync_all().map_err(|e| StoreError::io("fsync", &p, e))?;
        }
    }
    fsync_dir(dir)
}

/// Remove a file or a directory tree, even one containing read-only directories (a plugin may
/// leave those in `work/`). Missing paths are fine: removal is idempotent.
pub(crate) fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("remove", path, e)),
    };
    if !meta.is_dir() {
        return match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove", path, e)),
        };
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            // Most likely a read-only directory somewhere inside: make every directory
            // writable, then try once more and report that error if it still fails.
            make_dirs_writable(path);
            match fs::remove_dir_all(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StoreError::io("remove", path, e)),
            }
        }
    }
}

fn make_dirs_writable(dir: &Path) {
    if let Ok(meta) = fs::symlink_metadata(dir)
        && meta.is_dir()
    {
        let mut perm = meta.permissions();
        perm.set_mode(perm.mode() | 0o700);
        let _ = fs::set_permissions(dir, perm);
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                make_dirs_writable(&e.path());
            }
        }
    }
}

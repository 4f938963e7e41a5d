//! Typed errors. Every variant names the path involved, what went wrong, and how to fix it,
//! because these messages end up verbatim in front of a user who did not write the code.

use std::io;
use std::path::{Path, PathBuf};

use crate::Digest;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed. `hint` says what to do about it.
    #[error("cannot {op} {path}: {} ({hint})", describe_io(.source))]
    Io {
        op: &'static str,
        path: PathBuf,
        hint: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "cannot create store at {path}: it exists and is not a directory (remove it, or set AURORA_STORE to a directory)"
    )]
    NotADirectory { path: PathBuf },

    #[error(
        "cannot use {path} as a store: the directory is not empty and has no VERSION file, so it is not an aurora store (set AURORA_STORE to an empty or new directory)"
    )]
    NotAStore { path: PathBuf },

    #[error("no store at {path} (run a pipeline first to create it, or set AURORA_STORE to the store you meant)")]
    StoreMissing { path: PathBuf },

    #[error(
        "store at {path} has layout version {found:?}, but this aurora understands version {expected:?} (use the aurora release that created it, or move the store aside so a fresh one is created)"
    )]
    VersionMismatch { path: PathBuf, found: String, expected: &'static str },

    #[error(
        "{path} is a symbolic link; artifacts and hashed inputs must be plain files and directories (replace the link with a copy of its target)"
    )]
    Symlink { path: PathBuf },

    #[error(
        "{path} is neither a regular file nor a directory (sockets, fifos and devices cannot be hashed; remove it from the tree)"
    )]
    SpecialFile { path: PathBuf },

    #[error("{path} has a name that is not valid UTF-8 (rename it; artifact paths must be UTF-8)")]
    NonUtf8Path { path: PathBuf },

    #[error("invalid digest {input:?}: {reason} (a digest is 64 hexadecimal characters)")]
    InvalidDigest { input: String, reason: String },

    #[error("corrupt {what} {path}: {source} ({hint})")]
    CorruptJson {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("cannot encode {what} for {path}: {source} (this is a bug in aurora; please report it)")]
    Encode {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "artifact {digest} not found at {path} (it was garbage-collected or never produced; rerun the pipeline to recreate it)"
    )]
    ArtifactMissing { digest: Digest, path: PathBuf },

    #[error(
        "work directory {path} does not belong to the locked node {key} (pass the WorkDir returned by prepare_work for the same lock)"
    )]
    WorkDirMismatch { path: PathBuf, key: Digest },

    #[error(
        "invalid run id {id:?}: ids must be non-empty, must not start with '.', and may contain only letters, digits, '-', '_', '.', ':' and '+' (choose another id)"
    )]
    InvalidRunId { id: String },

    #[error("no run matches {id:?} in {dir} (list the runs to see the available ids)")]
    RunNotFound { id: String, dir: PathBuf },

    #[error(
        "refused to import an artifact for node key {key}: {reason} (nothing was published; the source of the artifact is damaged or not what it claims)"
    )]
    ImportMismatch { key: Digest, reason: String },

    #[error("run id prefix {prefix:?} is ambiguous: it matches {} (type more characters)", .candidates.join(", "))]
    AmbiguousRun { prefix: String, candidates: Vec<String> },
}

/// Short lowercase description of an I/O error: stable across libc versions (unlike the
/// `(os error N)` text), which keeps messages and snapshots readable.
fn describe_io(e: &io::Error) -> String {
    use io::ErrorKind as K;
    let s = match e.kind() {
        K::PermissionDenied => "permission denied",
        K::NotFound => "no such file or directory",
        K::AlreadyExists => "already exists",
        K::StorageFull => "no space left on device",
        K::ReadOnlyFilesystem => "read-only file system",
        K::NotADirectory => "not a directory",
        K::IsADirectory => "is a directory",
        K::DirectoryNotEmpty => "directory not empty",
        K::QuotaExceeded => "disk quota exceeded",
        _ => return e.to_string(),
    };
    s.to_string()
}

/// Default remedy for an I/O failure, chosen from the error kind.
fn hint_for(e: &io::Error) -> String {
    use io::ErrorKind as K;
    match e.kind() {
        K::PermissionDenied | K::ReadOnlyFilesystem => {
            "check its permissions, or set AURORA_STORE to a writable directory".into()
        }
        K::StorageFull | K::QuotaExceeded => {
            "free disk space, e.g. with `aurora gc`, or set AURORA_STORE to a larger disk".into()
        }
        K::NotFound => "it may have been removed concurrently; rerun the command".into(),
        _ => "check the file system and rerun the command".into(),
    }
}

impl StoreError {
    /// An I/O error with the default hint for its kind.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        let hint = hint_for(&source);
        StoreError::Io { op, path: path.to_path_buf(), hint, source }
    }

    /// An I/O error with a specific hint.
    pub(crate) fn io_hint(op: &'static str, path: &Path, source: io::Error, hint: impl Into<String>) -> StoreError {
        StoreError::Io { op, path: path.to_path_buf(), hint: hint.into(), source }
    }

    /// The path the error is about, when there is one (for callers that want to highlight it).
    pub fn path(&self) -> Option<&Path> {
        match self {
            StoreError::Io { path, .. }
            | StoreError::NotADirectory { path }
            | StoreError::NotAStore { path }
            | StoreError::StoreMissing { path }
            | StoreError::VersionMismatch { path, .. }
            | StoreError::Symlink { path }
            | StoreError::SpecialFile { path }
            | StoreError::NonUtf8Path { path }
            | StoreError::CorruptJson { path, .. }
            | StoreError::Encode { path, .. }
            | StoreError::ArtifactMissing { path, .. }
            | StoreError::WorkDirMismatch { path, .. } => Some(path),
            StoreError::RunNotFound { dir, .. } => Some(dir),
            StoreError::InvalidDigest { .. }
            | StoreError::InvalidRunId { .. }
            | StoreError::AmbiguousRun { .. }
            | StoreError::ImportMismatch { .. } => None,
        }
    }
}

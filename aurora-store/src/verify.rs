//! Integrity checking (`verify`, read-only) and garbage collection (`gc`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::fsutil::{self, TMP_PREFIX};
use crate::hash::{self, MANIFEST_FILE};
use crate::store::{ACTIONS, CAS, LOCKS, WORK};
use crate::{ArtifactManifest, Digest, Store, StoreError};

/// Temp files younger than this may belong to a write in progress; gc leaves them alone.
const TMP_GRACE: Duration = Duration::from_secs(3600);

/// Result of [`Store::verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub artifacts_checked: usize,
    pub actions_checked: usize,
    pub problems: Vec<VerifyProblem>,
    /// Work dirs of nodes not running now (a crashed or interrupted run). Informational: they
    /// hold resumable state, are never visible as artifacts, and `gc` removes them.
    pub stray_work: Vec<PathBuf>,
}

impl VerifyReport {
    /// True when no problem was found (stray work dirs are not problems).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One integrity problem found by [`Store::verify`].
#[derive(Debug, Clone, PartialEq)]
pub enum VerifyProblem {
    /// Bytes on disk no longer match the artifact's digest. `files`: changed, missing or extra.
    ArtifactChanged { digest: Digest, files: Vec<String> },
    /// The artifact could not be read or its ARTIFACT.json is missing/corrupt.
    ArtifactUnreadable { digest: Digest, reason: String },
    /// An action record points at an artifact that is not in `cas/`.
    DanglingAction { key: Digest, artifact: Digest },
    /// An action record file that cannot be parsed, or whose key disagrees with its name.
    CorruptAction { path: PathBuf, reason: String },
    /// An entry of `cas/` whose name is not a digest (the store never creates one).
    StrayCasEntry { path: PathBuf },
}

impl fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyProblem::ArtifactChanged { digest, files } => write!(
                f,
                "artifact {digest} changed on disk ({}); delete cas/{digest} and rerun to recompute it",
                files.join(", ")
            ),
            VerifyProblem::ArtifactUnreadable { digest, reason } => {
                write!(f, "artifact {digest} is unreadable: {reason}; delete cas/{digest} and rerun to recompute it")
            }
            VerifyProblem::DanglingAction { key, artifact } => write!(
                f,
                "action {key} points at missing artifact {artifact}; rerun to recompute it, or run `aurora gc` to drop the record"
            ),
            VerifyProblem::CorruptAction { path, reason } => write!(
                f,
                "corrupt action record {}: {reason}; delete it and the node will be recomputed",
                path.display()
            ),
            VerifyProblem::StrayCasEntry { path } => {
                write!(f, "{} is not an artifact (its name is not a digest); move it out of the store", path.display())
            }
        }
    }
}

/// Result of [`Store::gc`]: what was (or, for a dry run, would be) removed, with sizes.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub removed: Vec<(PathBuf, u64)>,
    pub bytes: u64,
    pub dry_run: bool,
}

/// State of a node lock as seen by verify/gc.
enum LockState {
    /// Nobody holds it; if we opened the file we still hold the lock through it.
    Free(Option<File>),
    Held,
}

impl Store {
    /// Check integrity without modifying anything: re-hash every artifact and compare with its
    /// ARTIFACT.json and directory name; check every action points at an existing artifact;
    /// list work dirs whose node is not locked (stray, informational).
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let cas = self.root().join(CAS);
        for name in fsutil::list_dir(&cas)? {
            let path = cas.join(&name);
            let Ok(digest) = Digest::from_hex(&name) else {
                report.problems.push(VerifyProblem::StrayCasEntry { path });
                continue;
            };
            report.artifacts_checked += 1;
            if let Some(p) = check_artifact(&path, digest) {
                report.problems.push(p);
            }
        }

        for (path, name_key) in self.action_files()? {
            report.actions_checked += 1;
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("read", &path, e)),
            };
            let record: crate::ActionRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    report.problems.push(VerifyProblem::CorruptAction { path, reason: e.to_string() });
                    continue;
                }
            };
            if name_key != Some(record.key) || path != self.action_path(&record.key) {
                report.problems.push(VerifyProblem::CorruptAction {
                    path,
                    reason: format!("file name does not match its key {}", record.key),
                });
                continue;
            }
            if !self.has_artifact(&record.artifact) {
                report.problems.push(VerifyProblem::DanglingAction { key: record.key, artifact: record.artifact });
            }
        }

        let work = self.root().join(WORK);
        for name in fsutil::list_dir(&work)? {
            let path = work.join(&name);
            let stray = match Digest::from_hex(&name) {
                Ok(key) => matches!(self.probe_lock(&key)?, LockState::Free(_)),
                Err(_) => true,
            };
            if stray {
                report.stray_work.push(path);
            }
        }
        Ok(report)
    }

    /// Garbage collection: remove (or, if `dry_run`, only list) cas dirs not in
    /// `keep_artifacts`; action records not in `keep_actions` or pointing at an artifact that
    /// is (or will be) gone; work dirs and lock files of nodes not running now; temp files
    /// left by killed writers. Run it while no pipeline uses the store: a running node may be
    /// about to reuse an artifact that gc considers garbage.
    pub fn gc(
        &self,
        keep_artifacts: &BTreeSet<Digest>,
        keep_actions: &BTreeSet<Digest>,
        dry_run: bool,
    ) -> Result<GcReport, StoreError> {
        let mut report = GcReport { dry_run, ..GcReport::default() };
        let remove = |report: &mut GcReport, path: PathBuf| -> Result<(), StoreError> {
            let size = fsutil::disk_size(&path);
            if !dry_run {
                fsutil::remove_tree(&path)?;
            }
            report.bytes += size;
            report.removed.push((path, size));
            Ok(())
        };

        // Artifacts.
        let cas = self.root().join(CAS);
        let mut surviving = BTreeSet::new();
        for name in fsutil::list_dir(&cas)? {
            let path = cas.join(&name);
            match Digest::from_hex(&name) {
                Ok(d) if keep_artifacts.contains(&d) => {
                    surviving.insert(d);
                }
                Ok(_) => remove(&mut report, path)?,
                // Not ours (or a temp): leave foreign entries alone, verify reports them.
                Err(_) => {}
            }
        }

        // Actions.
        for (path, name_key) in self.action_files()? {
            let keep = match name_key {
                Some(k) if keep_actions.contains(&k) => match fs::read(&path) {
                    Ok(bytes) => serde_json::from_slice::<crate::ActionRecord>(&bytes)
                        .map(|r| surviving.contains(&r.artifact))
                        .unwrap_or(false),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io("read", &path, e)),
                },
                _ => false,
            };
            if !keep {
                remove(&mut report, path)?;
            }
        }
        for tmp in self.old_temp_files()? {
            remove(&mut report, tmp)?;
        }

        // Work dirs: removed while holding their lock, so a node cannot start in between.
        let work = self.root().join(WORK);
        for name in fsutil::list_dir(&work)? {
            let path = work.join(&name);
            match Digest::from_hex(&name) {
                Ok(key) if dry_run => {
                    if let LockState::Free(_) = self.probe_lock(&key)? {
                        remove(&mut report, path)?;
                    }
                }
                Ok(key) => {
                    // A real lock (created if absent), so no node can start here meanwhile.
                    if let Some(guard) = self.try_lock_node(&key, "aurora gc")? {
                        remove(&mut report, path)?;
                        drop(guard);
                    }
                }
                Err(_) => remove(&mut report, path)?,
            }
        }

        // Lock files: unlinked while held; lock_node notices an unlinked file and retries.
        let locks = self.root().join(LOCKS);
        for name in fsutil::list_dir(&locks)? {
            let path = locks.join(&name);
            let Some(key) = name.strip_suffix(".lock").and_then(|s| Digest::from_hex(s).ok()) else {
                continue;
            };
            if let LockState::Free(guard) = self.probe_lock(&key)? {
                remove(&mut report, path)?;
                drop(guard);
            }
        }
        if !dry_run {
            fsutil::fsync_dir(&cas)?;
        }
        Ok(report)
    }

    /// Whether a node's lock is free. Never creates a lock file (verify must not modify the
    /// store); an absent lock file means free. The returned file, if any, holds the lock.
    fn probe_lock(&self, key: &Digest) -> Result<LockState, StoreError> {
        let path = self.lock_path(key);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LockState::Free(None)),
            Err(e) => return Err(StoreError::io("open lock file", &path, e)),
        };
        match file.try_lock() {
            Ok(()) => Ok(LockState::Free(Some(file))),
            Err(TryLockError::WouldBlock) => Ok(LockState::Held),
            Err(TryLockError::Error(e)) => Err(StoreError::io("lock", &path, e)),
        }
    }

    /// Temp files (from writers killed between create and rename) older than [`TMP_GRACE`].
    fn old_temp_files(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut dirs = vec![self.root().to_path_buf(), self.root().join(crate::store::RUNS)];
        let actions = self.root().join(ACTIONS);
        for shard in fsutil::list_dir(&actions)? {
            dirs.push(actions.join(shard));
        }
        let now = SystemTime::now();
        let mut out = Vec::new();
        for dir in dirs {
            for name in fsutil::list_dir(&dir)? {
                if !name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let path = dir.join(name);
                let old = fs::symlink_metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > TMP_GRACE);
                if old {
                    out.push(path);
                }
            }
        }
        Ok(out)
    }
}

/// Re-hash one artifact directory and compare with its manifest and name.
fn check_artifact(dir: &Path, digest: Digest) -> Option<VerifyProblem> {
    let unreadable = |reason: String| Some(VerifyProblem::ArtifactUnreadable { digest, reason });
    if !dir.is_dir() {
        return unreadable("not a directory".into());
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest: ArtifactManifest = match fs::read(&manifest_path) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(m) => m,
            Err(e) => return unreadable(format!("corrupt {MANIFEST_FILE}: {e}")),
        },
        Err(e) => return unreadable(format!("cannot read {MANIFEST_FILE}: {e}")),
    };
    let (actual, files) = match hash::hash_tree(dir) {
        Ok(x) => x,
        Err(e) => return unreadable(e.to_string()),
    };
    if actual == digest && manifest.digest == digest && files == manifest.files {
        return None;
    }
    let recorded: BTreeMap<&str, &crate::FileEntry> = manifest.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let on_disk: BTreeMap<&str, &crate::FileEntry> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut changed = Vec::new();
    for (p, f) in &recorded {
        match on_disk.get(p) {
            None => changed.push(format!("{p} (missing)")),
            Some(g) if g != f => changed.push(format!("{p} (modified)")),
            Some(_) => {}
        }
    }
    for p in on_disk.keys() {
        if !recorded.contains_key(p) {
            changed.push(format!("{p} (extra)"));
        }
    }
    if changed.is_empty() {
        changed.push(format!("{MANIFEST_FILE} (digest field does not match the content)"));
    }
    Some(VerifyProblem::ArtifactChanged { digest, files: changed })
}

//! The [`Store`]: opening, node locks, work directories, publishing, the stat memo and runs.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, TMP_PREFIX};
use crate::hash::{self, FileEntry, LOG_FILE, MANIFEST_FILE};
use crate::memo::{Fingerprint, Memo, now_ns};
use crate::{Digest, StoreError};

/// Layout version written to `VERSION`. Bump when the on-disk layout changes incompatibly.
pub const STORE_VERSION: &str = "1";

const VERSION_FILE: &str = "VERSION";
const MEMO_FILE: &str = "statmemo.json";
pub(crate) const CAS: &str = "cas";
pub(crate) const ACTIONS: &str = "actions";
pub(crate) const WORK: &str = "work";
pub(crate) const RUNS: &str = "runs";
pub(crate) const LOCKS: &str = "locks";
const SUBDIRS: [&str; 5] = [CAS, ACTIONS, WORK, RUNS, LOCKS];

/// ARTIFACT.json contents.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ArtifactManifest {
    /// Content digest (also the directory name).
    pub digest: Digest,
    /// Every file with size and blake3, sorted by path.
    pub files: Vec<FileEntry>,
    /// The key of the node that first produced it (identical content from other nodes reuses it).
    pub node_key: Digest,
    pub node_id: String,
    pub plugin: String,
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// Action cache entry: node key -> artifact it produced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ActionRecord {
    pub key: Digest,
    pub artifact: Digest,
    pub node_id: String,
    pub plugin: String,
    pub plugin_version: String,
    /// What went into the key, for "why is this pending" explanations; opaque to the store.
    pub components: serde_json::Value,
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// What the caller knows about a finished node, for [`Store::publish`].
#[derive(Clone, Debug, Default)]
pub struct PublishRequest {
    pub node_id: String,
    pub plugin: String,
    pub plugin_version: String,
    pub components: serde_json::Value,
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Bytes for ARTIFACT.log (the node's log), if any.
    pub log: Option<Vec<u8>>,
}

/// Exclusive lock on one node key; released when dropped (or by the kernel if the process dies).
#[derive(Debug)]
pub struct NodeLock {
    key: Digest,
    #[allow(dead_code)] // held for its flock; closing it releases the lock
    file: File,
}

impl NodeLock {
    pub fn key(&self) -> &Digest {
        &self.key
    }
}

/// A node's scratch directories: `out` becomes the artifact, `resume` survives crashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkDir {
    pub out: PathBuf,
    pub resume: PathBuf,
}

/// Handle on a store root. `Send + Sync`: share one between worker threads.
pub struct Store {
    root: PathBuf,
    /// Loaded lazily: commands that never hash inputs never read the file.
    memo: Mutex<Option<Memo>>,
    memo_hits: AtomicU64,
    memo_misses: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

impl Store {
    /// Open or create a store (mkdir -p, subdirectories, VERSION). Errors clearly when the path
    /// is not a directory, not writable, not a store, or has another layout version.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        match fs::metadata(root) {
            Ok(m) if !m.is_dir() => {
                return Err(StoreError::NotADirectory { path: root.to_path_buf() });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(create_err(root, e)),
        }
        fs::create_dir_all(root).map_err(|e| create_err(root, e))?;
        let version_path = root.join(VERSION_FILE);
        if !check_version(root)? {
            // No VERSION yet: only adopt an empty directory, so a mistyped AURORA_STORE
            // never litters (or later garbage-collects in) someone's home directory.
            let non_empty = fs::read_dir(root)
                .map_err(|e| create_err(root, e))?
                .flatten()
                .any(|e| !e.file_name().to_string_lossy().starts_with(TMP_PREFIX));
            if non_empty {
                return Err(StoreError::NotAStore { path: root.to_path_buf() });
            }
            // VERSION first: a crash after it leaves a valid (empty) store, never an
            // unmarked directory full of store subdirectories.
            fsutil::write_atomic(&version_path, format!("{STORE_VERSION}\n").as_bytes())
                .map_err(|e| with_store_hint(e, root))?;
        }
        for sub in SUBDIRS {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(|e| create_err(&p, e))?;
        }
        // Catch a read-only store now, with a clear message, rather than mid-run.
        let probe = fsutil::tmp_path_for(&root.join("write-probe"));
        File::create(&probe).map_err(|e| create_err(root, e))?;
        let _ = fs::remove_file(&probe);
        Ok(Store::new(root))
    }

    /// Open an existing store only (for read-only commands); nothing is created or written.
    pub fn open_existing(root: &Path) -> Result<Store, StoreError> {
        match fs::metadata(root) {
            Ok(m) if !m.is_dir() => {
                return Err(StoreError::NotADirectory { path: root.to_path_buf() });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::StoreMissing { path: root.to_path_buf() });
            }
            Err(e) => return Err(StoreError::io("open store", root, e)),
        }
        if !check_version(root)? {
            return Err(StoreError::StoreMissing { path: root.to_path_buf() });
        }
        Ok(Store::new(root))
    }

    fn new(root: &Path) -> Store {
        // Absolute, so paths in errors and records do not depend on a later chdir.
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        Store { root, memo: Mutex::new(None), memo_hits: AtomicU64::new(0), memo_misses: AtomicU64::new(0) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `cas/<hex>`.
    pub fn artifact_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join(CAS).join(digest.to_hex())
    }

    /// Whether the artifact exists (one stat; a cas dir only ever appears complete).
    pub fn has_artifact(&self, digest: &Digest) -> bool {
        self.artifact_dir(digest).is_dir()
    }

    pub fn read_artifact_manifest(&self, digest: &Digest) -> Result<ArtifactManifest, StoreError> {
        let dir = self.artifact_dir(digest);
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => {
                return Err(StoreError::ArtifactMissing { digest: *digest, path: dir });
            }
            Err(e) => {
                return Err(StoreError::io_hint("read", &path, e, "run `aurora verify` to check the store"));
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| StoreError::CorruptJson {
            what: "artifact manifest",
            path,
            hint: "run `aurora verify`; delete the artifact directory so it is recomputed",
            source,
        })
    }

    /// `actions/<first 2 hex>/<key>.json`.
    pub(crate) fn action_path(&self, key: &Digest) -> PathBuf {
        let hex = key.to_hex();
        self.root.join(ACTIONS).join(&hex[..2]).join(format!("{hex}.json"))
    }

    /// The action record for a node key; `None` if absent, an error naming the file if corrupt.
    pub fn read_action(&self, key: &Digest) -> Result<Option<ActionRecord>, StoreError> {
        let path = self.action_path(key);
        match fs::read(&path) {
            Ok(bytes) => parse_action(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", &path, e)),
        }
    }

    /// All action records, sorted by key (for gc roots and diagnostics). Corrupt records are
    /// errors naming the file, so they are noticed rather than silently treated as misses.
    pub fn list_actions(&self) -> Result<Vec<ActionRecord>, StoreError> {
        let mut out = Vec::new();
        for (path, _) in self.action_files()? {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed by gc
                Err(e) => return Err(StoreError::io("read", &path, e)),
            };
            out.push(parse_action(&path, &bytes)?);
        }
        out.sort_by_key(|a| a.key);
        Ok(out)
    }

    /// Every `actions/*/*.json` path with the key its name claims (`None` if the name is not
    /// a digest). Temp files are skipped.
    pub(crate) fn action_files(&self) -> Result<Vec<(PathBuf, Option<Digest>)>, StoreError> {
        let actions = self.root.join(ACTIONS);
        let mut out = Vec::new();
        for shard in fsutil::list_dir(&actions)? {
            let shard_dir = actions.join(&shard);
            if !shard_dir.is_dir() {
                continue;
            }
            for name in fsutil::list_dir(&shard_dir)? {
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let Some(stem) = name.strip_suffix(".json") else {
                    continue;
                };
                out.push((shard_dir.join(&name), Digest::from_hex(stem).ok()));
            }
        }
        Ok(out)
    }

    pub(crate) fn lock_path(&self, key: &Digest) -> PathBuf {
        self.root.join(LOCKS).join(format!("{}.lock", key.to_hex()))
    }

    pub(crate) fn work_root(&self, key: &Digest) -> PathBuf {
        self.root.join(WORK).join(key.to_hex())
    }

    /// Exclusive lock for one node key; blocks until acquired. An OS advisory lock (flock) on
    /// `locks/<key>.lock`: the kernel drops it when the holder dies, so a stale lock from a
    /// killed run is taken over with no pid bookkeeping. If the lock is busy, `on_wait` is
    /// called once with the holder's text ("pid 1234 on host, node steps/x") before blocking.
    pub fn lock_node(&self, key: &Digest, holder: &str, on_wait: &mut dyn FnMut(&str)) -> Result<NodeLock, StoreError> {
        let mut waited = false;
        loop {
            let (path, mut file) = self.open_lock_file(key)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    if !waited {
                        waited = true;
                        on_wait(&read_holder(&mut file));
                    }
                    file.lock().map_err(|e| StoreError::io("lock", &path, e))?;
                }
                Err(TryLockError::Error(e)) => return Err(StoreError::io("lock", &path, e)),
            }
            if let Some(lock) = self.finish_lock(key, &path, file, holder)? {
                return Ok(lock);
            }
        }
    }

    /// Non-blocking [`Store::lock_node`]: `None` if another holder has it right now.
    pub fn try_lock_node(&self, key: &Digest, holder: &str) -> Result<Option<NodeLock>, StoreError> {
        loop {
            let (path, file) = self.open_lock_file(key)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(StoreError::io("lock", &path, e)),
            }
            if let Some(lock) = self.finish_lock(key, &path, file, holder)? {
                return Ok(Some(lock));
            }
        }
    }

    /// The current holder text of a node's lock, if someone holds it (for status displays).
    pub fn lock_holder(&self, key: &Digest) -> Result<Option<String>, StoreError> {
        let path = self.lock_path(key);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open", &path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(read_holder(&mut file))),
            Err(TryLockError::Error(e)) => Err(StoreError::io("lock", &path, e)),
        }
    }

    fn open_lock_file(&self, key: &Digest) -> Result<(PathBuf, File), StoreError> {
        let path = self.lock_path(key);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io("open lock file", &path, e))?;
        Ok((path, file))
    }

    /// After flock succeeded: make sure the file we locked is still the one at `path` (gc may
    /// have unlinked it between our open and our lock; locking an orphaned inode would let a
    /// second process lock a fresh file and hold the "same" lock). Then record our holder text.
    fn finish_lock(
        &self,
        key: &Digest,
        path: &Path,
        mut file: File,
        holder: &str,
    ) -> Result<Option<NodeLock>, StoreError> {
        let ours = file.metadata().map_err(|e| StoreError::io("stat", path, e))?;
        match fs::metadata(path) {
            Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("stat", path, e)),
        }
        let write = |file: &mut File| -> io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(holder.as_bytes())?;
            file.flush()
        };
        write(&mut file).map_err(|e| StoreError::io("write lock file", path, e))?;
        Ok(Some(NodeLock { key: *key, file }))
    }

    /// Prepare `work/<key>/`: remove and recreate `out/` (a crashed attempt's partial outputs
    /// must never leak into an artifact), keep `resume/` (checkpoints survive crashes).
    pub fn prepare_work(&self, lock: &NodeLock) -> Result<WorkDir, StoreError> {
        let root = self.work_root(&lock.key);
        let out = root.join("out");
        let resume = root.join("resume");
        fsutil::remove_tree(&out)?;
        fs::create_dir_all(&out).map_err(|e| StoreError::io("create", &out, e))?;
        fs::create_dir_all(&resume).map_err(|e| StoreError::io("create", &resume, e))?;
        Ok(WorkDir { out, resume })
    }

    /// Atomically publish `work.out` as an artifact and record the action.
    ///
    /// Order (each step durable before the next makes it visible): hash the tree; write
    /// ARTIFACT.json (+ ARTIFACT.log); fsync every file and dir; make files read-only;
    /// rename(out, cas/<digest>) (if that exists already, identical content from another node,
    /// ours is discarded); fsync cas/; write the action record atomically; remove work/<key>/.
    /// A process killed at any instant leaves no cas dir or a complete one, and no action
    /// record or a valid one pointing at a complete artifact.
    pub fn publish(&self, lock: &NodeLock, work: WorkDir, req: PublishRequest) -> Result<ActionRecord, StoreError> {
        let key = lock.key;
        let work_root = self.work_root(&key);
        if work.out != work_root.join("out") {
            return Err(StoreError::WorkDirMismatch { path: work.out, key });
        }
        let out = work.out;
        let (digest, files) = hash::hash_tree(&out)?;
        let manifest = ArtifactManifest {
            digest,
            files,
            node_key: key,
            node_id: req.node_id.clone(),
            plugin: req.plugin.clone(),
            metrics: req.metrics.clone(),
        };
        write_artifact_metadata(&out, &manifest, req.log.as_deref())?;
        self.commit_artifact(&out, &digest)?;
        let record = ActionRecord {
            key,
            artifact: digest,
            node_id: req.node_id,
            plugin: req.plugin,
            plugin_version: req.plugin_version,
            components: req.components,
            metrics: req.metrics,
        };
        self.write_action(&record)?;
        fsutil::remove_tree(&work_root)?;
        Ok(record)
    }

    /// Seals a complete tree (ARTIFACT.json written) and renames it to `cas/<digest>`; if that
    /// exists already (identical content from another node or process), ours is discarded.
    fn commit_artifact(&self, out: &Path, digest: &Digest) -> Result<(), StoreError> {
        fsutil::seal_tree(out)?;
        let cas = self.root.join(CAS);
        let target = self.artifact_dir(digest);
        if target.is_dir() {
            fsutil::remove_tree(out)?;
        } else {
            match fs::rename(out, &target) {
                Ok(()) => {}
                // Another process published the same content between our check and rename.
                Err(e)
                    if target.is_dir()
                        && matches!(e.kind(), io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists) =>
                {
                    fsutil::remove_tree(out)?;
                }
                Err(e) => return Err(StoreError::io("publish artifact to", &target, e)),
            }
        }
        fsutil::fsync_dir(&cas)
    }

    /// Writes an action record atomically (its artifact must already be in `cas/`).
    fn write_action(&self, record: &ActionRecord) -> Result<(), StoreError> {
        let action_path = self.action_path(&record.key);
        if let Some(shard) = action_path.parent() {
            fs::create_dir_all(shard).map_err(|e| StoreError::io("create", shard, e))?;
        }
        let bytes = to_json(record, "action record", &action_path)?;
        fsutil::write_atomic(&action_path, &bytes)
    }

    /// An empty `work/<key>/import/` for an artifact arriving from elsewhere (a remote cache),
    /// to be passed to [`Store::import`].
    pub fn prepare_import(&self, lock: &NodeLock) -> Result<PathBuf, StoreError> {
        let dir = self.work_root(&lock.key).join("import");
        fsutil::remove_tree(&dir)?;
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create", &dir, e))?;
        Ok(dir)
    }

    /// Publishes an artifact that was produced elsewhere and the action record that names it.
    /// The files in `staged` (from [`Store::prepare_import`]) are hashed here and must match
    /// `manifest` exactly, and the record must be for the locked key and this artifact: bytes
    /// that do not match their digest are refused and never become visible. With `staged` =
    /// `None`, the artifact must already be in the store (only the record is new).
    pub fn import(
        &self,
        lock: &NodeLock,
        staged: Option<&Path>,
        manifest: &ArtifactManifest,
        log: Option<&[u8]>,
        record: &ActionRecord,
    ) -> Result<(), StoreError> {
        let refuse = |reason: String| StoreError::ImportMismatch { key: lock.key, reason };
        if record.key != lock.key {
            return Err(refuse(format!("the action record is for key {}", record.key)));
        }
        if record.artifact != manifest.digest {
            return Err(refuse(format!(
                "the action record names artifact {} but the artifact manifest is {}",
                record.artifact, manifest.digest
            )));
        }
        if hash::tree_digest(&manifest.files) != manifest.digest {
            return Err(refuse(format!("the artifact manifest's file list does not hash to {}", manifest.digest)));
        }
        match staged {
            None if self.has_artifact(&manifest.digest) => {}
            None => return Err(refuse(format!("artifact {} is not in the store", manifest.digest))),
            Some(dir) => {
                let expected_dir = self.work_root(&lock.key).join("import");
                if dir != expected_dir {
                    return Err(StoreError::WorkDirMismatch { path: dir.to_path_buf(), key: lock.key });
                }
                let (digest, files) = hash::hash_tree(dir)?;
                if digest != manifest.digest || files != manifest.files {
                    let differing: Vec<&str> = manifest
                        .files
                        .iter()
                        .filter(|f| !files.contains(f))
                        .map(|f| f.path.as_str())
                        .chain(files.iter().filter(|f| !manifest.files.contains(f)).map(|f| f.path.as_str()))
                        .collect();
                    fsutil::remove_tree(dir)?;
                    return Err(refuse(format!(
                        "the received files hash to {digest}, not {} (differing: {})",
                        manifest.digest,
                        differing.join(", ")
                    )));
                }
                write_artifact_metadata(dir, manifest, log)?;
                self.commit_artifact(dir, &manifest.digest)?;
            }
        }
        self.write_action(record)?;
        let work_root = self.work_root(&lock.key);
        // Keep `resume/` of an interrupted local attempt only while the node is not done.
        fsutil::remove_tree(&work_root)?;
        Ok(())
    }

    /// The bytes of an artifact's log (`ARTIFACT.log`), if it has one.
    pub fn read_artifact_log(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.artifact_dir(digest).join(LOG_FILE);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", &path, e)),
        }
    }

    /// Digest of an input file (hash_file) or directory (hash_tree digest) through the stat
    /// memo: keyed by canonical absolute path and (size, mtime_ns, ctime_ns, inode, dev). A hit
    /// costs one stat and no read; directories cost one stat per file.
    pub fn hash_input(&self, path: &Path) -> Result<Digest, StoreError> {
        let canon = fs::canonicalize(path).map_err(|e| {
            StoreError::io_hint("read input", path, e, "check the path in the manifest and that the file exists")
        })?;
        let meta = fs::metadata(&canon).map_err(|e| StoreError::io("read input", &canon, e))?;
        if meta.is_dir() {
            let walked = hash::walk_tree(&canon)?;
            let mut files = Vec::with_capacity(walked.len());
            for w in walked {
                let (blake3, size) = self.memo_hash(&w.abs, &w.meta)?;
                files.push(FileEntry { path: w.rel, size, blake3 });
            }
            Ok(hash::tree_digest(&files))
        } else {
            self.memo_hash(&canon, &meta).map(|(d, _)| d)
        }
    }

    /// The files an input stands for: itself, or every file under a directory (sorted, by the
    /// rules of [`Store::hash_input`]: symlinks and special files are errors), each as `path`
    /// joined with its path inside. Nothing is read.
    pub fn input_file_list(&self, path: &Path) -> Result<Vec<PathBuf>, StoreError> {
        let meta = fs::metadata(path).map_err(|e| {
            StoreError::io_hint("read input", path, e, "check the path in the manifest and that the file exists")
        })?;
        if !meta.is_dir() {
            return Ok(vec![path.to_path_buf()]);
        }
        // The input itself may be a link to a directory (as for `hash_input`); links inside not.
        let canon = fs::canonicalize(path).map_err(|e| StoreError::io("read input", path, e))?;
        Ok(hash::walk_tree(&canon)?.into_iter().map(|w| path.join(w.rel)).collect())
    }

    /// The size and memoised digest of one input file: what an inputs lock records.
    pub fn input_file(&self, path: &Path) -> Result<(u64, Digest), StoreError> {
        let canon = fs::canonicalize(path).map_err(|e| StoreError::io("read input", path, e))?;
        let meta = fs::metadata(&canon).map_err(|e| StoreError::io("read input", &canon, e))?;
        self.memo_hash(&canon, &meta).map(|(digest, size)| (size, digest))
    }

    /// Memoised digest of one regular file at a canonical path, given its metadata.
    fn memo_hash(&self, path: &Path, meta: &fs::Metadata) -> Result<(Digest, u64), StoreError> {
        if !meta.is_file() {
            return Err(StoreError::SpecialFile { path: path.to_path_buf() });
        }
        let fp = Fingerprint::of(meta);
        let key = path.to_str();
        if let Some(k) = key
            && let Some(d) = self.with_memo(|m| m.get(k, &fp))
        {
            self.memo_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((d, meta.len()));
        }
        self.memo_misses.fetch_add(1, Ordering::Relaxed);
        // Hash outside the mutex so worker threads hash different files in parallel.
        let start = now_ns();
        let (digest, size) = hash::hash_file_sized(path)?;
        // Re-stat: if the file changed while we read it, the digest matches neither version.
        let after = fs::metadata(path).map_err(|e| StoreError::io("read input", path, e))?;
        if let Some(k) = key
            && Fingerprint::of(&after) == fp
            && size == meta.len()
            && fp.settled_before(start)
        {
            self.with_memo(|m| m.insert(k.to_string(), fp, digest));
        }
        Ok((digest, size))
    }

    fn with_memo<R>(&self, f: impl FnOnce(&mut Memo) -> R) -> R {
        let mut guard = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        let memo = guard.get_or_insert_with(|| Memo::load(&self.root.join(MEMO_FILE)));
        f(memo)
    }

    /// Number of [`Store::hash_input`] file lookups answered by the memo (no read).
    pub fn memo_hits(&self) -> u64 {
        self.memo_hits.load(Ordering::Relaxed)
    }

    /// Number of file lookups that had to read and hash the file.
    pub fn memo_misses(&self) -> u64 {
        self.memo_misses.load(Ordering::Relaxed)
    }

    /// Persist memo changes (tmp + rename, merged over the current file so concurrent runs
    /// mostly keep each other's entries). A no-op if nothing changed.
    pub fn flush_memo(&self) -> Result<(), StoreError> {
        let mut guard = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        let Some(memo) = guard.as_mut() else {
            return Ok(());
        };
        if !memo.is_dirty() {
            return Ok(());
        }
        let path = self.root.join(MEMO_FILE);
        // Encoding a map of strings and numbers cannot fail; if it ever did, skipping the
        // write only costs re-hashing (the memo is a cache).
        if let Some(bytes) = memo.merged_bytes(&path) {
            fsutil::write_atomic(&path, &bytes)?;
        }
        memo.mark_clean();
        Ok(())
    }

    /// Write `runs/<id>.json` atomically; returns its path.
    pub fn write_run(&self, id: &str, record: &serde_json::Value) -> Result<PathBuf, StoreError> {
        validate_run_id(id)?;
        let dir = self.root.join(RUNS);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create", &dir, e))?;
        let path = dir.join(format!("{id}.json"));
        let bytes = to_json(record, "run record", &path)?;
        fsutil::write_atomic(&path, &bytes)?;
        Ok(path)
    }

    /// Run ids, sorted ascending (callers make ids that sort by time).
    pub fn list_runs(&self) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = fsutil::list_dir(&self.root.join(RUNS))?
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Read a run record by id or unique id prefix; an ambiguous prefix lists the candidates.
    pub fn read_run(&self, id: &str) -> Result<serde_json::Value, StoreError> {
        let dir = self.root.join(RUNS);
        let ids = self.list_runs()?;
        let chosen = if ids.iter().any(|i| i == id) {
            id.to_string()
        } else {
            let matches: Vec<String> =
                if id.is_empty() { Vec::new() } else { ids.into_iter().filter(|i| i.starts_with(id)).collect() };
            match matches.len() {
                0 => {
                    return Err(StoreError::RunNotFound { id: id.to_string(), dir });
                }
                1 => matches.into_iter().next().unwrap_or_default(),
                _ => {
                    return Err(StoreError::AmbiguousRun { prefix: id.to_string(), candidates: matches });
                }
            }
        };
        let path = dir.join(format!("{chosen}.json"));
        let bytes = fs::read(&path).map_err(|e| StoreError::io("read", &path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::CorruptJson {
            what: "run record",
            path,
            hint: "the run record is damaged; delete it",
            source,
        })
    }
}

/// Ok(true) if VERSION exists and matches, Ok(false) if it is absent, Err on another version.
fn check_version(root: &Path) -> Result<bool, StoreError> {
    let path = root.join(VERSION_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => {
            let found = s.trim();
            if found == STORE_VERSION {
                Ok(true)
            } else {
                Err(StoreError::VersionMismatch {
                    path: root.to_path_buf(),
                    found: found.to_string(),
                    expected: STORE_VERSION,
                })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("read", &path, e)),
    }
}

fn create_err(path: &Path, e: io::Error) -> StoreError {
    StoreError::io_hint("create store at", path, e, "set AURORA_STORE to a writable directory")
}

/// Replace the generic hint of an I/O error during store creation with the AURORA_STORE one.
fn with_store_hint(e: StoreError, root: &Path) -> StoreError {
    match e {
        StoreError::Io { source, .. } => create_err(root, source),
        other => other,
    }
}

fn read_holder(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut s);
    let s = s.trim();
    if s.is_empty() { "another process".to_string() } else { s.to_string() }
}

/// ARTIFACT.json (and ARTIFACT.log) into a tree about to be committed.
fn write_artifact_metadata(dir: &Path, manifest: &ArtifactManifest, log: Option<&[u8]>) -> Result<(), StoreError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = to_json(manifest, "artifact manifest", &manifest_path)?;
    fs::write(&manifest_path, bytes).map_err(|e| StoreError::io("write", &manifest_path, e))?;
    if let Some(log) = log {
        let log_path = dir.join(LOG_FILE);
        fs::write(&log_path, log).map_err(|e| StoreError::io("write", &log_path, e))?;
    }
    Ok(())
}

fn parse_action(path: &Path, bytes: &[u8]) -> Result<ActionRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::CorruptJson {
        what: "action record",
        path: path.to_path_buf(),
        hint: "delete it; the node will be recomputed on the next run",
        source,
    })
}

pub(crate) fn to_json<T: Serialize>(value: &T, what: &'static str, path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Encode {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn validate_run_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id.len() <= 200
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+'));
    if ok { Ok(()) } else { Err(StoreError::InvalidRunId { id: id.to_string() }) }
}

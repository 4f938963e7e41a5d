//! aurora's remote cache: what one store executed, another downloads instead of recomputing.
//!
//! Objects under the remote's prefix (layout `v1`):
//!
//! - `v1/cas/<blake3>`: one file's bytes, named by their digest (shared by every artifact
//!   holding that file).
//! - `v1/artifacts/<digest>.json`: an artifact's `ARTIFACT.json` (its files with sizes and
//!   digests); `v1/artifacts/<digest>.log`: its log, when it has one.
//! - `v1/ac/<key>.json`: a node key's action record, naming its artifact.
//!
//! Uploads write files, then the artifact manifest, then the action record: a reader that finds
//! a record finds everything it names, whatever moment an upload was interrupted at. Downloads
//! check every file against its digest as it streams and the store hashes the whole tree again
//! before publishing it, so bytes that do not match are never visible locally.

mod error;
mod open;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Component, Path};
use std::sync::{Arc, Mutex, OnceLock};

use aurora_core::remote::{Fetched, RemoteCache, Uploaded};
use aurora_store::{ActionRecord, ArtifactManifest, Digest, FileEntry, NodeLock, Store};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

pub use error::RemoteError;
pub use open::TOKEN_ENV;

/// The environment variable naming the remote cache.
pub const REMOTE_ENV: &str = "AURORA_REMOTE";
/// The object layout this aurora writes and reads.
const LAYOUT: &str = "v1";
/// Files larger than this go up in parts where the service supports it.
const MULTIPART_THRESHOLD: u64 = 64 << 20;
const PART_SIZE: usize = 16 << 20;
/// Files transferred at the same time within one artifact.
const CONCURRENT_FILES: usize = 8;

/// A remote cache opened from a URL.
pub struct Remote {
    opened: open::Opened,
    runtime: tokio::runtime::Runtime,
    /// File digests whose remote copy was found damaged in this process: uploads overwrite them
    /// instead of trusting that an object with that name is right.
    damaged: Mutex<HashSet<Digest>>,
    /// Whether the bucket or container exists, asked once (a missing one answers every lookup
    /// "not found", which would make every node a silent miss).
    container: OnceLock<Result<(), String>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.opened.display).finish()
    }
}

/// Why a download was rejected (the remote holds something that is not what it claims).
struct Damaged(String);

impl Remote {
    /// Opens `url` with credentials from the process environment.
    pub fn open(url: &str) -> Result<Remote, RemoteError> {
        Remote::open_with_env(url, &|k| std::env::var(k).ok())
    }

    /// Opens `url` with credentials from `env` (tests pass their own).
    pub fn open_with_env(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Remote, RemoteError> {
        let opened = open::open(url, env)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("aurora-remote")
            .enable_all()
            .build()
            .map_err(RemoteError::Runtime)?;
        Ok(Remote { opened, runtime, damaged: Mutex::new(HashSet::new()), container: OnceLock::new() })
    }

    fn object(&self, parts: &[&str]) -> ObjectPath {
        let mut path = self.opened.prefix.clone();
        for part in [LAYOUT].iter().chain(parts) {
            path = path.join(*part);
        }
        path
    }

    fn action_object(&self, key: &Digest) -> ObjectPath {
        self.object(&["ac", &format!("{}.json", key.to_hex())])
    }

    fn manifest_object(&self, artifact: &Digest) -> ObjectPath {
        self.object(&["artifacts", &format!("{}.json", artifact.to_hex())])
    }

    fn log_object(&self, artifact: &Digest) -> ObjectPath {
        self.object(&["artifacts", &format!("{}.log", artifact.to_hex())])
    }

    fn blob_object(&self, file: &Digest) -> ObjectPath {
        self.object(&["cas", &file.to_hex()])
    }

    fn failed(&self, operation: &'static str, object: &ObjectPath, source: object_store::Error) -> RemoteError {
        let url = self.opened.display.clone();
        let object = object.to_string();
        match source {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                RemoteError::Refused { url, operation, object, source }
            }
            source => RemoteError::Transfer { url, operation, object, source },
        }
    }

    /// The whole object, or `None` when it does not exist.
    async fn get_small(&self, object: &ObjectPath) -> Result<Option<Bytes>, RemoteError> {
        let got = match self.opened.store.get(object).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed("download", object, e)),
        };
        got.bytes().await.map(Some).map_err(|e| self.failed("download", object, e))
    }

    /// Fails when the bucket or container does not exist (cloud stores only: an HTTP cache or a
    /// directory has nothing to list). Asked once per process, by listing the prefix.
    fn check_container(&self) -> Result<(), RemoteError> {
        if !self.opened.multipart {
            return Ok(());
        }
        let checked = self.container.get_or_init(|| {
            let prefix = self.opened.prefix.clone();
            self.runtime
                .block_on(self.opened.store.list_with_delimiter(Some(&prefix)))
                .map(drop)
                .map_err(|e| self.failed("list", &prefix, e).to_string())
        });
        checked.clone().map_err(|reason| RemoteError::Container { url: self.opened.display.clone(), reason })
    }

    async fn fetch_async(&self, store: &Store, lock: &NodeLock) -> Result<Fetched, RemoteError> {
        let key = lock.key();
        let action_object = self.action_object(key);
        let Some(bytes) = self.get_small(&action_object).await? else { return Ok(Fetched::Miss) };
        let record: ActionRecord = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => return Ok(rejected(format!("{action_object} is not an action record: {e}"))),
        };
        if record.key != *key {
            return Ok(rejected(format!("{action_object} holds the record of key {}", record.key)));
        }
        if store.has_artifact(&record.artifact) {
            let manifest = store.read_artifact_manifest(&record.artifact)?;
            store.import(lock, None, &manifest, None, &record)?;
            return Ok(Fetched::Hit { record, bytes: 0 });
        }
        let manifest_object = self.manifest_object(&record.artifact);
        let Some(bytes) = self.get_small(&manifest_object).await? else {
            return Ok(rejected(format!("{action_object} names artifact {}, which is missing", record.artifact)));
        };
        let manifest: ArtifactManifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => return Ok(rejected(format!("{manifest_object} is not an artifact manifest: {e}"))),
        };
        if manifest.digest != record.artifact || aurora_store::tree_digest(&manifest.files) != manifest.digest {
            return Ok(rejected(format!("{manifest_object}'s file list does not hash to {}", record.artifact)));
        }
        if let Some(bad) = manifest.files.iter().find(|f| !is_safe_relative(&f.path)) {
            return Ok(rejected(format!("{manifest_object} lists a file outside the artifact: {:?}", bad.path)));
        }
        let staging = store.prepare_import(lock)?;
        let downloads = futures::stream::iter(manifest.files.iter().map(|f| self.download_file(f, &staging)))
            .buffer_unordered(CONCURRENT_FILES)
            .try_collect::<Vec<Result<u64, Damaged>>>()
            .await?;
        let mut total = 0;
        for outcome in downloads {
            match outcome {
                Ok(n) => total += n,
                Err(Damaged(reason)) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Ok(rejected(reason));
                }
            }
        }
        let log = self.get_small(&self.log_object(&record.artifact)).await?;
        match store.import(lock, Some(&staging), &manifest, log.as_deref(), &record) {
            Ok(()) => Ok(Fetched::Hit { record, bytes: total }),
            Err(aurora_store::StoreError::ImportMismatch { reason, .. }) => Ok(rejected(reason)),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams one file into the staging tree, hashing as it goes. `Ok(Err(_))`: the bytes are
    /// not the ones the manifest names.
    async fn download_file(&self, file: &FileEntry, staging: &Path) -> Result<Result<u64, Damaged>, RemoteError> {
        let object = self.blob_object(&file.blake3);
        let target = staging.join(&file.path);
        let io = |operation: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RemoteError::Io { operation, path, source }
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        let got = match self.opened.store.get(&object).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Err(self.damaged(&file.blake3, format!("{object} ({}) is missing", file.path))));
            }
            Err(e) => return Err(self.failed("download", &object, e)),
        };
        let mut out = File::create(&target).map_err(io("create", &target))?;
        let mut hasher = blake3::Hasher::new();
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.failed("download", &object, e))?;
            hasher.update(&chunk);
            if hasher.count() > file.size {
                break;
            }
            out.write_all(&chunk).map_err(io("write", &target))?;
        }
        let digest: Digest = hasher.finalize().into();
        if hasher.count() != file.size || digest != file.blake3 {
            let reason = format!(
                "{object} ({}) holds {} bytes hashing to {}, expected {} bytes hashing to {}",
                file.path,
                hasher.count(),
                digest.short(),
                file.size,
                file.blake3.short()
            );
            return Ok(Err(self.damaged(&file.blake3, reason)));
        }
        out.sync_all().map_err(io("sync", &target))?;
        Ok(Ok(file.size))
    }

    fn damaged(&self, file: &Digest, reason: String) -> Damaged {
        self.damaged.lock().expect("damaged set").insert(*file);
        Damaged(reason)
    }

    async fn upload_async(&self, store: &Store, record: &ActionRecord, force: bool) -> Result<Uploaded, RemoteError> {
        let manifest = store.read_artifact_manifest(&record.artifact)?;
        let known_damaged = {
            let damaged = self.damaged.lock().expect("damaged set");
            manifest.files.iter().any(|f| damaged.contains(&f.blake3))
        };
        if !force
            && !known_damaged
            && let Some(bytes) = self.get_small(&self.action_object(&record.key)).await?
            && serde_json::from_slice::<ActionRecord>(&bytes).is_ok_and(|remote| remote == *record)
        {
            // Written last, so everything it names is there already.
            return Ok(Uploaded::default());
        }
        let dir = store.artifact_dir(&record.artifact);
        // One upload per distinct file content.
        let mut blobs: BTreeMap<Digest, &FileEntry> = BTreeMap::new();
        for f in &manifest.files {
            blobs.entry(f.blake3).or_insert(f);
        }
        let sent = futures::stream::iter(blobs.into_values().map(|f| self.upload_file(f, &dir, force)))
            .buffer_unordered(CONCURRENT_FILES)
            .try_collect::<Vec<Option<u64>>>()
            .await?;
        let mut uploaded = Uploaded::default();
        for bytes in sent.into_iter().flatten() {
            uploaded.bytes += bytes;
            uploaded.objects += 1;
        }
        let mut objects = vec![(self.manifest_object(&record.artifact), to_json(&manifest))];
        if let Some(log) = store.read_artifact_log(&record.artifact)? {
            objects.push((self.log_object(&record.artifact), log));
        }
        // The action record last: it makes everything above visible to readers.
        objects.push((self.action_object(&record.key), to_json(record)));
        for (object, bytes) in objects {
            uploaded.bytes += bytes.len() as u64;
            uploaded.objects += 1;
            self.opened
                .store
                .put(&object, PutPayload::from(bytes))
                .await
                .map_err(|e| self.failed("upload", &object, e))?;
        }
        Ok(uploaded)
    }

    /// Uploads one file unless the remote has it (`None`). Large files go in parts where the
    /// service allows it; otherwise the file is memory-mapped (artifacts are read-only) and sent
    /// in one request without a copy in memory.
    async fn upload_file(&self, file: &FileEntry, dir: &Path, force: bool) -> Result<Option<u64>, RemoteError> {
        let object = self.blob_object(&file.blake3);
        let damaged = self.damaged.lock().expect("damaged set").contains(&file.blake3);
        if !damaged && !force {
            match self.opened.store.head(&object).await {
                Ok(meta) if meta.size == file.size => return Ok(None),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed("look up", &object, e)),
            }
        }
        let path = dir.join(&file.path);
        let io = |operation: &'static str| {
            let path = path.clone();
            move |source| RemoteError::Io { operation, path, source }
        };
        let handle = File::open(&path).map_err(io("open"))?;
        let bytes = if file.size == 0 {
            Bytes::new()
        } else {
            // SAFETY: artifact files are sealed read-only and never rewritten in place.
            let map = unsafe { memmap2::Mmap::map(&handle) }.map_err(io("map"))?;
            Bytes::from_owner(map)
        };
        if self.opened.multipart && file.size > MULTIPART_THRESHOLD {
            let upload =
                self.opened.store.put_multipart(&object).await.map_err(|e| self.failed("upload", &object, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            for part in (0..bytes.len()).step_by(PART_SIZE) {
                writer.wait_for_capacity(4).await.map_err(|e| self.failed("upload", &object, e))?;
                writer.put(bytes.slice(part..(part + PART_SIZE).min(bytes.len())));
            }
            writer.finish().await.map_err(|e| self.failed("upload", &object, e))?;
        } else {
            self.opened
                .store
                .put(&object, PutPayload::from(bytes))
                .await
                .map_err(|e| self.failed("upload", &object, e))?;
        }
        self.damaged.lock().expect("damaged set").remove(&file.blake3);
        Ok(Some(file.size))
    }
}

fn rejected(reason: String) -> Fetched {
    Fetched::Rejected { reason }
}

/// A relative path that stays inside the directory it is joined to.
fn is_safe_relative(path: &str) -> bool {
    !path.is_empty() && Path::new(path).components().all(|c| matches!(c, Component::Normal(_)))
}

/// JSON as the local store writes it.
fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("records serialise");
    bytes.push(b'\n');
    bytes
}

impl RemoteCache for Remote {
    fn url(&self) -> &str {
        &self.opened.display
    }

    fn fetch(&self, store: &Store, lock: &NodeLock) -> Result<Fetched, aurora_core::remote::RemoteError> {
        self.check_container()?;
        Ok(self.runtime.block_on(self.fetch_async(store, lock))?)
    }

    fn upload(
        &self,
        store: &Store,
        record: &ActionRecord,
        force: bool,
    ) -> Result<Uploaded, aurora_core::remote::RemoteError> {
        Ok(self.runtime.block_on(self.upload_async(store, record, force))?)
    }
}

/// Opens `AURORA_REMOTE` (or `url`) as a shared remote cache for the executor.
pub fn open_shared(url: &str) -> Result<Arc<dyn RemoteCache>, RemoteError> {
    Ok(Arc::new(Remote::open(url)?))
}

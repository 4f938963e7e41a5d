//! Stat memo: path + stat fingerprint -> digest, so a no-op rerun stats its inputs instead of
//! re-reading them (guarantee 2).

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Digest;

/// Layout version of statmemo.json; a file with another version is ignored (it is a cache).
const MEMO_VERSION: u32 = 1;

/// A file modified less than this long before we started reading it is "racy": a write in the
/// same timestamp tick after our read would leave (size, mtime) unchanged, so its digest is not
/// memoised (the same problem, and fix, as git's racily-clean index entries). Two seconds
/// covers the coarsest common timestamp granularity (FAT, some network file systems).
const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// Everything about a file's inode that changes when its bytes can have changed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
}

impl Fingerprint {
    pub(crate) fn of(meta: &Metadata) -> Fingerprint {
        Fingerprint {
            size: meta.len(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// Whether a digest computed from a read that started at `read_start_ns` may be memoised.
    pub(crate) fn settled_before(&self, read_start_ns: i64) -> bool {
        self.mtime_ns.saturating_add(RACY_WINDOW_NS) < read_start_ns
    }
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct MemoEntry {
    #[serde(flatten)]
    fp: Fingerprint,
    digest: Digest,
}

#[derive(Serialize, Deserialize, Default)]
struct MemoFile {
    version: u32,
    entries: HashMap<String, MemoEntry>,
}

/// In-memory memo. `dirty` holds the paths changed since the last flush so a flush can merge
/// them over whatever another process wrote meanwhile instead of clobbering it.
#[derive(Default)]
pub(crate) struct Memo {
    entries: HashMap<String, MemoEntry>,
    dirty: HashMap<String, MemoEntry>,
}

impl Memo {
    /// Load statmemo.json; a missing, unreadable or corrupt file yields an empty memo.
    pub(crate) fn load(path: &Path) -> Memo {
        Memo { entries: read_entries(path), dirty: HashMap::new() }
    }

    pub(crate) fn get(&self, path: &str, fp: &Fingerprint) -> Option<Digest> {
        self.entries.get(path).filter(|e| e.fp == *fp).map(|e| e.digest)
    }

    pub(crate) fn insert(&mut self, path: String, fp: Fingerprint, digest: Digest) {
        let entry = MemoEntry { fp, digest };
        self.entries.insert(path.clone(), entry.clone());
        self.dirty.insert(path, entry);
    }

    pub(crate) fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Serialised memo: the file as it is on disk now, with our changes on top.
    pub(crate) fn merged_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let mut entries = read_entries(path);
        for (k, v) in &self.dirty {
            entries.insert(k.clone(), v.clone());
        }
        let file = MemoFile { version: MEMO_VERSION, entries };
        serde_json::to_vec(&file).ok()
    }

    pub(crate) fn mark_clean(&mut self) {
        self.dirty.clear();
    }
}

fn read_entries(path: &Path) -> HashMap<String, MemoEntry> {
    let Ok(bytes) = std::fs::read(path) else {
        return HashMap::new();
    };
    match serde_json::from_slice::<MemoFile>(&bytes) {
        Ok(f) if f.version == MEMO_VERSION => f.entries,
        _ => HashMap::new(),
    }
}

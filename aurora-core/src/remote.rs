//! The remote cache as the executor sees it: a shared action cache and artifact store that a
//! second machine or a reviewer reads instead of recomputing. The implementation (object
//! stores, HTTP) lives in `aurora-remote`; the core only needs these three operations, so it
//! links no network code.

use aurora_store::{ActionRecord, NodeLock, Store};

/// What a remote cache can fail with: unreachable, credentials missing or refused, a server
/// error. Messages name the remote and the object; a damaged object is not an error but a
/// [`Fetched::Rejected`].
pub type RemoteError = Box<dyn std::error::Error + Send + Sync>;

/// The answer to a lookup.
#[derive(Debug)]
pub enum Fetched {
    /// The remote had the key; its artifact was downloaded, verified against its blake3 digests
    /// and published in the local store with the action record.
    Hit { record: ActionRecord, bytes: u64 },
    /// The remote does not have the key.
    Miss,
    /// The remote has the key, but what it sent does not match its digests (a corrupted or
    /// truncated object): nothing was published, and the node is executed instead.
    Rejected { reason: String },
}

/// What an upload did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Uploaded {
    /// Bytes sent (files the remote already had are not sent again).
    pub bytes: u64,
    /// Objects written (file blobs, the artifact manifest, the action record).
    pub objects: u64,
}

pub trait RemoteCache: Send + Sync {
    /// Where it is (`s3://bucket/prefix`, `https://host/cache/`), for messages.
    fn url(&self) -> &str;
    /// Looks up the locked key and, on a hit, imports its artifact into `store`
    /// ([`Store::import`]): the caller holds the node's lock, so no two processes download the
    /// same key into one store.
    fn fetch(&self, store: &Store, lock: &NodeLock) -> Result<Fetched, RemoteError>;
    /// Uploads a local action and its artifact: the files first, the artifact manifest next, the
    /// action record last, so a reader never sees a record whose artifact is incomplete. What the
    /// remote has already (the same record; files of the right size) is not sent again unless
    /// `force` (which repairs objects damaged on the remote).
    fn upload(&self, store: &Store, record: &ActionRecord, force: bool) -> Result<Uploaded, RemoteError>;
}

/// One node's line in `aurora push`.
#[derive(Debug, serde::Serialize)]
pub struct Pushed {
    pub id: String,
    pub key: aurora_store::Digest,
    pub artifact: aurora_store::Digest,
    #[serde(flatten)]
    pub uploaded: Uploaded,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Uploads every node of the plan that is in the local store, in plan order. Stops at the first
/// failure (a refused credential fails every node the same way); what was uploaded stays.
pub fn push(
    plan: &crate::plan::Plan,
    store: &Store,
    remote: &dyn RemoteCache,
    force: bool,
    observer: &dyn crate::execute::Observer,
) -> Result<Vec<Pushed>, crate::Error> {
    let mut pushed = Vec::new();
    for report in crate::execute::status(plan, store)? {
        let Some(key) = report.key.filter(|_| report.status == crate::execute::NodeStatus::Cached) else { continue };
        let Some(record) = store.read_action(&key)? else { continue };
        observer.event(crate::execute::Event::Uploading { node: &report.id, remote: remote.url() });
        let (uploaded, error) = match remote.upload(store, &record, force) {
            Ok(u) => (u, None),
            Err(e) => (Uploaded::default(), Some(e.to_string())),
        };
        let stop = error.is_some();
        pushed.push(Pushed { id: report.id, key, artifact: record.artifact, uploaded, error });
        if stop {
            break;
        }
    }
    Ok(pushed)
}

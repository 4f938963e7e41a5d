//! `aurora-store`: the content-addressed store of aurora.
//!
//! Layout of a store root (e.g. `.aurora/`):
//! - `cas/<digest>/`: immutable artifact directories (files read-only), each with
//!   `ARTIFACT.json` and optionally `ARTIFACT.log` (metadata, not part of the digest);
//! - `actions/<2 hex>/<key>.json`: node key -> [`ActionRecord`] (the action cache);
//! - `work/<key>/{out,resume}/`: a node's scratch while it runs;
//! - `runs/<id>.json`: run records; `locks/<key>.lock`: one lock per node key;
//! - `statmemo.json`: the stat memo; `VERSION`: layout version.
//!
//! Crash safety comes from ordering: data is fsynced before the rename that publishes it, and
//! every published name (cas dir, action file, run file) appears by an atomic rename.

mod digest;
mod error;
mod fsutil;
mod hash;
mod memo;
mod store;
mod verify;

pub use digest::Digest;
pub use error::StoreError;
pub use hash::{FileEntry, hash_file, hash_tree, tree_digest};
pub use store::{ActionRecord, ArtifactManifest, NodeLock, PublishRequest, STORE_VERSION, Store, WorkDir};
pub use verify::{GcReport, VerifyProblem, VerifyReport};

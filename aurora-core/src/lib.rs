//! aurora-core: manifests, canonical hashing, the plugin registry, planning and execution.
//!
//! This crate never links tch or tokenizers: everything model- or data-specific is a plugin.
//! See ARCHITECTURE.md at the repository root for the map and the invariants.

pub mod canonical;
pub mod cores;
pub mod diagnostic;
pub mod execute;
pub mod explain;
pub mod language;
pub mod lock;
pub mod manifest;
pub mod plan;
pub mod plugin;
pub mod process;
pub mod record;
pub mod remote;
pub mod schema;
pub mod template;
pub mod testing;
pub mod units;
pub mod validate;

pub use aurora_store::{Digest, Store, StoreError};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use inventory;

/// Errors of planning and running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the user can fix in the manifest or the command line (exit code 2).
    #[error("{0}")]
    Manifest(#[from] Diagnostics),
    /// The store could not be read or written (exit code 1).
    #[error("{0}")]
    Store(#[from] StoreError),
}

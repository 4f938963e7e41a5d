//! What talking to a remote cache can fail with. Every message names the remote and says what to
//! do; a damaged object is not an error (see `Fetched::Rejected`).

use std::path::PathBuf;

use aurora_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "remote cache URL {url:?}: {reason} (expected s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX, https://HOST/PATH/ or file:///ABSOLUTE/PATH)"
    )]
    Url { url: String, reason: String },

    #[error("remote cache {url}: no credentials: {hint}")]
    NoCredentials { url: String, hint: &'static str },

    #[error(
        "remote cache {url} refused {operation} of {object}: {source} (check the credentials and the bucket's permissions)"
    )]
    Refused {
        url: String,
        operation: &'static str,
        object: String,
        #[source]
        source: object_store::Error,
    },

    #[error("remote cache {url}: {operation} of {object} failed: {source}")]
    Transfer {
        url: String,
        operation: &'static str,
        object: String,
        #[source]
        source: object_store::Error,
    },

    #[error(
        "remote cache {url}: its bucket or container cannot be listed, so lookups cannot be trusted: {reason} (check the bucket's name, that it exists, and that the credentials may list it)"
    )]
    Container { url: String, reason: String },

    #[error("cannot {operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot start the remote cache's I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),

    #[error(transparent)]
    Store(#[from] StoreError),
}

//! `AURORA_REMOTE` URLs to object stores. Credentials come from the environment, as each
//! service's own tools read them (`AWS_*`, `GOOGLE_*`, `AZURE_*`); an HTTP cache takes
//! `user:password@` in the URL or a bearer token in `AURORA_REMOTE_TOKEN`.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, HeaderMap, HeaderValue, ObjectStore, RetryConfig};
use url::Url;

use crate::RemoteError;

/// Environment variable holding an HTTP cache's bearer token.
pub const TOKEN_ENV: &str = "AURORA_REMOTE_TOKEN";

/// An opened remote: the store, the prefix every object lives under, and whether it takes
/// multipart uploads (HTTP/WebDAV does not: files go up in one `PUT`).
pub(crate) struct Opened {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    pub multipart: bool,
    /// The URL without credentials, for messages.
    pub display: String,
}

/// A request that hangs on a dead server fails instead; transfers of large files are bounded by
/// the idle connection, not by a total time.
fn client_options() -> ClientOptions {
    ClientOptions::new().with_connect_timeout(Duration::from_secs(10)).with_timeout_disabled().with_allow_http(true)
}

/// A few quick retries: a reviewer with a wrong URL should hear so in seconds, not minutes.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    }
}

/// The variables an S3 remote reads, as the AWS tools name them.
const S3_ENV: [&str; 10] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ALLOW_HTTP",
    "AWS_SKIP_SIGNATURE",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
];

pub(crate) fn open(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Opened, RemoteError> {
    let bad = |reason: String| RemoteError::Url { url: raw.to_string(), reason };
    let url = Url::parse(raw).map_err(|e| bad(e.to_string()))?;
    let mut display = url.clone();
    let _ = display.set_password(None);
    let _ = display.set_username("");
    let display = display.to_string();
    let path_prefix = || ObjectPath::parse(url.path().trim_matches('/')).map_err(|e| bad(e.to_string()));
    let bucket = || match url.host_str() {
        Some(h) if !h.is_empty() => Ok(h.to_string()),
        _ => Err(bad("the bucket name is missing".to_string())),
    };
    let opened = |store: Arc<dyn ObjectStore>, prefix: ObjectPath, multipart: bool| Opened {
        store,
        prefix,
        multipart,
        display: display.clone(),
    };
    let build = |e: object_store::Error| bad(e.to_string());
    match url.scheme() {
        "s3" => {
            let bucket = bucket()?;
            let has = |k: &str| env(k).is_some_and(|v| !v.is_empty());
            let public = env("AWS_SKIP_SIGNATURE").is_some_and(|v| v == "true" || v == "1");
            let signed = has("AWS_ACCESS_KEY_ID") && has("AWS_SECRET_ACCESS_KEY");
            if !(public || signed) {
                // Without this check object_store asks the EC2 metadata service, which off EC2
                // hangs until a timeout and then says nothing useful.
                return Err(RemoteError::NoCredentials {
                    url: display,
                    hint: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT for an S3-compatible server, AWS_REGION), or AWS_SKIP_SIGNATURE=true for a public bucket",
                });
            }
            let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
            for name in S3_ENV {
                if let Some(value) = env(name) {
                    let key = name.to_ascii_lowercase().parse().map_err(build)?;
                    builder = builder.with_config(key, value);
                }
            }
            let store = builder.with_client_options(client_options()).with_retry(retry()).build().map_err(build)?;
            Ok(opened(Arc::new(store), path_prefix()?, true))
        }
        "gs" => {
            let store = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket()?)
                .with_client_options(client_options())
                .with_retry(retry())
                .build()
                .map_err(build)?;
            Ok(opened(Arc::new(store), path_prefix()?, true))
        }
        "az" | "azure" => {
            let store = MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket()?)
                .with_client_options(client_options())
                .with_retry(retry())
                .build()
                .map_err(build)?;
            Ok(opened(Arc::new(store), path_prefix()?, true))
        }
        "http" | "https" => {
            let mut headers = HeaderMap::new();
            let auth = if !url.username().is_empty() {
                let user = percent_decode(url.username());
                let password = percent_decode(url.password().unwrap_or_default());
                Some(format!("Basic {}", base64(format!("{user}:{password}").as_bytes())))
            } else {
                env(TOKEN_ENV).filter(|t| !t.is_empty()).map(|t| format!("Bearer {t}"))
            };
            if let Some(auth) = auth {
                let mut value = HeaderValue::from_str(&auth).map_err(|e| bad(e.to_string()))?;
                value.set_sensitive(true);
                headers.insert("authorization", value);
            }
            // The base URL keeps its path (objects are relative to it) but loses its credentials.
            let mut base = url.clone();
            let _ = base.set_password(None);
            let _ = base.set_username("");
            let store = HttpBuilder::new()
                .with_url(base.as_str().trim_end_matches('/'))
                .with_client_options(client_options().with_default_headers(headers))
                .with_retry(retry())
                .build()
                .map_err(build)?;
            Ok(opened(Arc::new(store), ObjectPath::default(), false))
        }
        "file" => {
            let dir = url.to_file_path().map_err(|()| bad("not an absolute local path".to_string()))?;
            std::fs::create_dir_all(&dir).map_err(|source| RemoteError::Io {
                operation: "create the remote cache directory",
                path: dir.clone(),
                source,
            })?;
            let store = LocalFileSystem::new_with_prefix(&dir).map_err(build)?;
            Ok(opened(Arc::new(store), ObjectPath::default(), false))
        }
        other => Err(bad(format!("unknown scheme `{other}`"))),
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// Standard base64 with padding (for a Basic authorization header).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("aurora:secret", "YXVyb3JhOnNlY3JldA=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn bad_urls_are_named_with_what_was_expected() {
        let none = |_: &str| None;
        for (url, reason) in [
            ("not a url", "relative URL without a base"),
            ("ftp://host/x", "unknown scheme `ftp`"),
            ("s3:///prefix", "the bucket name is missing"),
        ] {
            let e = open(url, &none).err().expect("refused").to_string();
            assert!(e.contains(reason), "{url}: {e}");
        }
    }

    #[test]
    fn s3_without_credentials_says_which_variables() {
        let e = open("s3://bucket/prefix", &|_| None).err().expect("refused").to_string();
        assert!(e.contains("AWS_ACCESS_KEY_ID") && e.contains("s3://bucket/prefix"), "{e}");
    }
}

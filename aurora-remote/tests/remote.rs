//! The remote cache against real servers: a directory (`file://`), nginx with WebDAV `PUT` (the
//! protocol of Bazel's HTTP cache) and moto's S3 server, the last two started by
//! aurora-servers-testkit (skipped with a printed reason where they cannot start, failing in CI).

use std::path::Path;

use aurora_core::remote::{Fetched, RemoteCache};
use aurora_remote::{Remote, RemoteError};
use aurora_store::{ActionRecord, Digest, PublishRequest, Store};

/// A store with one published node: a small file, a nested one and a 3 MB one (so streaming
/// downloads take several chunks).
fn producer(dir: &Path, key: Digest) -> (Store, ActionRecord) {
    let store = Store::open(dir).unwrap();
    let lock = store.lock_node(&key, "test", &mut |_| {}).unwrap();
    let work = store.prepare_work(&lock).unwrap();
    std::fs::write(work.out.join("a.txt"), b"alpha\n").unwrap();
    std::fs::create_dir_all(work.out.join("nested/deeper")).unwrap();
    std::fs::write(work.out.join("nested/deeper/b.bin"), [7u8; 1000]).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(work.out.join("big.bin"), big).unwrap();
    let record = store
        .publish(
            &lock,
            work,
            PublishRequest {
                node_id: "steps/x".into(),
                plugin: "test".into(),
                plugin_version: "1".into(),
                components: serde_json::json!({"config": {"n": 1}}),
                metrics: serde_json::Map::new(),
                log: Some(b"the log\n".to_vec()),
            },
        )
        .unwrap();
    (store, record)
}

fn key(n: u8) -> Digest {
    blake3::hash(&[n]).into()
}

fn fetch(remote: &Remote, store: &Store, key: &Digest) -> Fetched {
    let lock = store.lock_node(key, "test", &mut |_| {}).unwrap();
    remote.fetch(store, &lock).unwrap()
}

fn same_files(a: &Store, b: &Store, artifact: &Digest) {
    let (da, fa) = aurora_store::hash_tree(&a.artifact_dir(artifact)).unwrap();
    let (db, fb) = aurora_store::hash_tree(&b.artifact_dir(artifact)).unwrap();
    assert_eq!((da, fa), (db, fb));
    assert_eq!(a.read_artifact_log(artifact).unwrap(), b.read_artifact_log(artifact).unwrap());
}

/// Upload, miss, hit, a second upload that sends nothing, a damaged object rejected and then
/// repaired by the next upload: the whole contract, against one remote.
fn contract(remote: &Remote, corrupt: &dyn Fn(&Digest, &[u8])) {
    let tmp = tempfile::tempdir().unwrap();
    let k = key(1);
    let (a, record) = producer(&tmp.path().join("a"), k);
    let b = Store::open(&tmp.path().join("b")).unwrap();

    assert!(matches!(fetch(remote, &b, &k), Fetched::Miss), "nothing uploaded yet");
    let first = remote.upload(&a, &record, false).unwrap();
    assert!(first.bytes > 3_000_000 && first.objects == 6, "{first:?}");
    let again = remote.upload(&a, &record, false).unwrap();
    assert_eq!(again.objects, 0, "an upload of what the remote has sends nothing: {again:?}");

    match fetch(remote, &b, &k) {
        Fetched::Hit { record: got, bytes } => {
            assert_eq!(got, record);
            assert_eq!(bytes, 3_000_000 + 6 + 1000);
        }
        other => panic!("expected a hit, got {other:?}"),
    }
    assert_eq!(b.read_action(&k).unwrap().as_ref(), Some(&record));
    same_files(&a, &b, &record.artifact);

    // A damaged file: rejected, nothing published in a third store, and the reason names it.
    let manifest = a.read_artifact_manifest(&record.artifact).unwrap();
    let big = manifest.files.iter().find(|f| f.path == "big.bin").unwrap();
    let mut damaged = std::fs::read(a.artifact_dir(&record.artifact).join("big.bin")).unwrap();
    damaged[1_234_567] ^= 1;
    corrupt(&big.blake3, &damaged);
    let c = Store::open(&tmp.path().join("c")).unwrap();
    match fetch(remote, &c, &k) {
        Fetched::Rejected { reason } => assert!(reason.contains("big.bin") && reason.contains("expected"), "{reason}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(c.read_action(&k).unwrap(), None);
    assert!(!c.has_artifact(&record.artifact));
    // A truncated one too.
    corrupt(&big.blake3, &damaged[..1000]);
    assert!(matches!(fetch(remote, &c, &k), Fetched::Rejected { .. }));
    assert!(!c.has_artifact(&record.artifact));

    // The next upload of that artifact overwrites what was found damaged.
    let repaired = remote.upload(&a, &record, false).unwrap();
    assert!(repaired.bytes >= 3_000_000, "{repaired:?}");
    assert!(matches!(fetch(remote, &c, &k), Fetched::Hit { .. }));
    same_files(&a, &c, &record.artifact);

    // A key whose artifact is already local needs only the record.
    let k2 = key(2);
    let (_, record2) = producer(&tmp.path().join("a2"), k2);
    let a2 = Store::open(&tmp.path().join("a2")).unwrap();
    remote.upload(&a2, &record2, false).unwrap();
    assert!(matches!(fetch(remote, &b, &k2), Fetched::Hit { bytes: 0, .. }), "same content, no download");
}

fn write_over(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn directory_remote() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/cache", dir.path().display());
    let remote = Remote::open(&url).unwrap();
    let cas = dir.path().join("cache/v1/cas");
    contract(&remote, &|blob, bytes| write_over(&cas.join(blob.to_hex()), bytes));
}

#[test]
fn a_record_for_another_key_or_a_path_outside_the_artifact_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/cache", dir.path().display());
    let remote = Remote::open(&url).unwrap();
    let (a, record) = producer(&dir.path().join("a"), key(1));
    remote.upload(&a, &record, false).unwrap();
    let b = Store::open(&dir.path().join("b")).unwrap();

    // The record of key 1 stored under key 3's name.
    let ac = dir.path().join("cache/v1/ac");
    std::fs::copy(ac.join(format!("{}.json", key(1).to_hex())), ac.join(format!("{}.json", key(3).to_hex()))).unwrap();
    match fetch(&remote, &b, &key(3)) {
        Fetched::Rejected { reason } => assert!(reason.contains("holds the record of key"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // An artifact manifest naming `../escape`: refused before anything is written.
    let manifest_path = dir.path().join(format!("cache/v1/artifacts/{}.json", record.artifact.to_hex()));
    let mut manifest: aurora_store::ArtifactManifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest.files[0].path = "../escape".into();
    manifest.digest = aurora_store::tree_digest(&manifest.files);
    let mut record = record.clone();
    record.artifact = manifest.digest;
    let evil = dir.path().join(format!("cache/v1/artifacts/{}.json", manifest.digest.to_hex()));
    std::fs::write(&evil, serde_json::to_vec(&manifest).unwrap()).unwrap();
    std::fs::write(ac.join(format!("{}.json", key(1).to_hex())), serde_json::to_vec(&record).unwrap()).unwrap();
    match fetch(&remote, &b, &key(1)) {
        Fetched::Rejected { reason } => assert!(reason.contains("outside the artifact"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join("b/work").join(key(1).to_hex()).join("escape").exists());
    assert!(!b.has_artifact(&manifest.digest));
}

#[test]
fn http_cache_with_webdav_put() {
    let Some(nginx) = aurora_servers_testkit::nginx_or_skip("http_cache_with_webdav_put") else { return };
    let remote = Remote::open(&nginx.url("cache")).unwrap();
    let root = nginx.root().join("cache/v1/cas");
    contract(&remote, &|blob, bytes| write_over(&root.join(blob.to_hex()), bytes));
}

#[test]
fn http_cache_credentials_refused_or_accepted() {
    let Some(nginx) = aurora_servers_testkit::nginx_or_skip("http_cache_credentials_refused_or_accepted") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (a, record) = producer(&tmp.path().join("a"), key(1));
    let url = nginx.url("private");
    let err = Remote::open(&url).unwrap().upload(&a, &record, false).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("refused") && message.contains("credentials"), "{message}");
    let with_password = url.replacen("http://", "http://aurora:wrong@", 1);
    assert!(Remote::open(&with_password).unwrap().upload(&a, &record, false).is_err());
    let with_password = url.replacen("http://", "http://aurora:secret@", 1);
    let remote = Remote::open(&with_password).unwrap();
    remote.upload(&a, &record, false).unwrap();
    let b = Store::open(&tmp.path().join("b")).unwrap();
    assert!(matches!(fetch(&remote, &b, &key(1)), Fetched::Hit { .. }));
    assert!(!message.contains("secret"));
}

#[test]
fn s3_compatible_server() {
    let Some(moto) = aurora_servers_testkit::moto_or_skip("s3_compatible_server") else { return };
    let env = |k: &str| match k {
        "AWS_ACCESS_KEY_ID" => Some("testing".to_string()),
        "AWS_SECRET_ACCESS_KEY" => Some("testing".to_string()),
        "AWS_ENDPOINT" => Some(moto.endpoint()),
        "AWS_ALLOW_HTTP" => Some("true".to_string()),
        "AWS_REGION" => Some("us-east-1".to_string()),
        _ => None,
    };
    let url = format!("s3://{}/studies/aurora", moto.bucket());
    let remote = Remote::open_with_env(&url, &env).unwrap();
    // Damage goes in through the S3 API, as a broken upload would leave it.
    let direct = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(moto.bucket())
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    contract(&remote, &|blob, bytes| {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(format!("studies/aurora/v1/cas/{}", blob.to_hex()));
        runtime.block_on(direct.put(&path, bytes.to_vec().into())).unwrap();
    });
}

#[test]
fn a_missing_bucket_is_an_error_not_a_miss() {
    let Some(moto) = aurora_servers_testkit::moto_or_skip("a_missing_bucket_is_an_error_not_a_miss") else { return };
    let env = |k: &str| match k {
        "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("testing".to_string()),
        "AWS_ENDPOINT" => Some(moto.endpoint()),
        "AWS_ALLOW_HTTP" => Some("true".to_string()),
        "AWS_REGION" => Some("us-east-1".to_string()),
        _ => None,
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let lock = store.lock_node(&key(1), "test", &mut |_| {}).unwrap();
    let typo = Remote::open_with_env("s3://no-such-bucket/studies", &env).unwrap();
    let message = typo.fetch(&store, &lock).unwrap_err().to_string();
    assert!(message.contains("s3://no-such-bucket/studies") && message.contains("cannot be listed"), "{message}");
    // The real bucket answers a plain miss.
    let real = Remote::open_with_env(&format!("s3://{}/studies", moto.bucket()), &env).unwrap();
    assert!(matches!(real.fetch(&store, &lock).unwrap(), Fetched::Miss));
}

#[test]
fn unreachable_server_fails_fast_and_names_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let (a, record) = producer(&tmp.path().join("a"), key(1));
    let started = std::time::Instant::now();
    let err: RemoteError =
        match Remote::open(&format!("http://127.0.0.1:{port}/cache/")).unwrap().upload(&a, &record, false) {
            Err(e) => *e.downcast::<RemoteError>().unwrap(),
            Ok(_) => panic!("nothing listens there"),
        };
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

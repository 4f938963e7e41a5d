//! Integration tests for aurora-store. One test target; cross-process lock tests re-run this
//! very binary in a helper mode (see `helper_lock_child`).

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use aurora_store::{ActionRecord, Digest, PublishRequest, Store, StoreError, VerifyProblem, hash_file, hash_tree};
use proptest::prelude::*;

// ---------------------------------------------------------------- helpers

fn new_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&tmp.path().join(".aurora")).expect("open store");
    (tmp, store)
}

fn key(name: &str) -> Digest {
    Digest::of_bytes(name.as_bytes())
}

fn write_files(dir: &Path, files: &[(&str, &[u8])]) {
    for (rel, bytes) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, bytes).expect("write");
    }
}

fn request(node_id: &str) -> PublishRequest {
    let mut metrics = serde_json::Map::new();
    metrics.insert("loss".into(), serde_json::json!(1.5));
    PublishRequest {
        node_id: node_id.into(),
        plugin: "test.plugin".into(),
        plugin_version: "1".into(),
        components: serde_json::json!({"config": {"a": 1}}),
        metrics,
        log: Some(b"log line\n".to_vec()),
    }
}

/// Lock, prepare, write `files` into out/, publish.
fn publish(store: &Store, node: &str, files: &[(&str, &[u8])]) -> ActionRecord {
    let lock = store.lock_node(&key(node), "test", &mut |_| {}).expect("lock");
    let work = store.prepare_work(&lock).expect("prepare");
    write_files(&work.out, files);
    store.publish(&lock, work, request(node)).expect("publish")
}

fn cas_entries(store: &Store) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.root().join("cas"))
        .expect("cas")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    v.sort();
    v
}

fn set_old_mtime(path: &Path) {
    let f = fs::File::options().write(true).open(path).expect("open for set_modified");
    f.set_modified(SystemTime::now() - Duration::from_secs(3600)).expect("set mtime");
}

fn redact(msg: &str, tmp: &Path) -> String {
    msg.replace(&tmp.display().to_string(), "[TMP]")
}

// ---------------------------------------------------------------- digest

#[test]
fn digest_hex_round_trip() {
    let d = Digest::of_bytes(b"hello");
    let hex = d.to_hex();
    assert_eq!(hex.len(), 64);
    assert_eq!(hex, blake3::hash(b"hello").to_hex().as_str());
    assert_eq!(Digest::from_hex(&hex).expect("parse"), d);
    assert_eq!(hex.parse::<Digest>().expect("parse"), d);
    assert_eq!(Digest::from_hex(&hex.to_uppercase()).expect("upper"), d);
    assert_eq!(d.to_string(), hex);
    assert_eq!(format!("{d:?}"), hex);
    assert_eq!(d.short(), hex[..12]);
    let json = serde_json::to_string(&d).expect("ser");
    assert_eq!(json, format!("\"{hex}\""));
    assert_eq!(serde_json::from_str::<Digest>(&json).expect("de"), d);
    assert!(Digest::from_hex("abc").is_err());
    let bad = format!("{}zz", &hex[..62]);
    let err = Digest::from_hex(&bad).expect_err("bad hex");
    assert!(err.to_string().contains("position 62"), "{err}");
    assert!(serde_json::from_str::<Digest>("\"nothex\"").is_err());
}

// ---------------------------------------------------------------- hashing

#[test]
fn hash_tree_excludes_top_level_artifact_metadata_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    write_files(&a, &[("x.txt", b"x"), ("sub/ARTIFACT.json", b"nested")]);
    write_files(
        &b,
        &[("x.txt", b"x"), ("sub/ARTIFACT.json", b"nested"), ("ARTIFACT.json", b"{}"), ("ARTIFACT.log", b"log")],
    );
    fs::create_dir_all(b.join("empty/dir")).expect("mkdir");
    let (da, fa) = hash_tree(&a).expect("hash a");
    let (db, fb) = hash_tree(&b).expect("hash b");
    assert_eq!(da, db);
    assert_eq!(fa, fb);
    let paths: Vec<&str> = fa.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["sub/ARTIFACT.json", "x.txt"]);
    assert_eq!(fa[1].size, 1);
    assert_eq!(fa[1].blake3, hash_file(&a.join("x.txt")).expect("hash file"));
}

#[test]
fn hash_tree_rejects_symlinks_naming_the_path() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_files(tmp.path(), &[("real", b"r")]);
    std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("link")).expect("ln");
    let err = hash_tree(tmp.path()).expect_err("symlink");
    assert!(matches!(err, StoreError::Symlink { .. }), "{err:?}");
    assert!(err.to_string().contains(&tmp.path().join("link").display().to_string()), "{err}");
}

/// Small random trees: relative paths (no path is a directory of another) -> bytes.
fn tree_strategy() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::btree_map("[a-c]{1,2}(/[a-c]{1,2}){0,2}", prop::collection::vec(any::<u8>(), 0..16), 1..6)
        .prop_filter("a file cannot also be a directory", |m| {
            m.keys().all(|k| !m.keys().any(|o| o.starts_with(&format!("{k}/"))))
        })
        .prop_map(|m| m.into_iter().collect())
}

fn write_tree(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, bytes) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, bytes).expect("write");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn tree_digest_depends_on_names_and_bytes_not_creation_order(
        files in tree_strategy(), flip in any::<prop::sample::Index>()
    ) {
        let tmp = tempfile::tempdir().expect("tmp");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        write_tree(&a, &files);
        let mut reversed = files.clone();
        reversed.reverse();
        write_tree(&b, &reversed);
        let (da, _) = hash_tree(&a).expect("hash a");
        prop_assert_eq!(da, hash_tree(&b).expect("hash b").0);

        // Changing one file's bytes changes the digest.
        let i = flip.index(files.len());
        let (rel, bytes) = &files[i];
        let mut changed = bytes.clone();
        changed.push(0x5a);
        fs::write(b.join(rel), &changed).expect("rewrite");
        prop_assert_ne!(da, hash_tree(&b).expect("hash b2").0);
        fs::write(b.join(rel), bytes).expect("restore");
        prop_assert_eq!(da, hash_tree(&b).expect("hash b3").0);

        // Renaming it changes the digest.
        let renamed = b.join(format!("{rel}z"));
        fs::rename(b.join(rel), &renamed).expect("rename");
        prop_assert_ne!(da, hash_tree(&b).expect("hash b4").0);
    }
}

// ---------------------------------------------------------------- publish

#[test]
fn publish_creates_complete_read_only_artifact_and_action() {
    let (_tmp, store) = new_store();
    let files: &[(&str, &[u8])] = &[("model.bin", b"weights"), ("eval/score.json", b"{}")];
    let lock = store.lock_node(&key("n1"), "test", &mut |_| {}).expect("lock");
    let work = store.prepare_work(&lock).expect("prepare");
    write_files(&work.out, files);
    let (expected, _) = hash_tree(&work.out).expect("hash");
    assert!(!store.has_artifact(&expected), "visible before publish");
    assert!(cas_entries(&store).is_empty());

    let rec = store.publish(&lock, work, request("n1")).expect("publish");
    assert_eq!(rec.artifact, expected);
    assert_eq!(rec.key, key("n1"));
    assert!(store.has_artifact(&expected));
    let dir = store.artifact_dir(&expected);
    assert_eq!(fs::read(dir.join("model.bin")).expect("read"), b"weights");
    assert_eq!(fs::read(dir.join("ARTIFACT.log")).expect("log"), b"log line\n");
    let m = store.read_artifact_manifest(&expected).expect("manifest");
    assert_eq!(m.digest, expected);
    assert_eq!(m.node_key, key("n1"));
    assert_eq!(m.node_id, "n1");
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.files[0].path, "eval/score.json");
    assert_eq!(m.metrics["loss"], serde_json::json!(1.5));
    // Metadata files do not enter the digest: re-hashing the published dir agrees.
    assert_eq!(hash_tree(&dir).expect("rehash").0, expected);
    for f in ["model.bin", "eval/score.json", "ARTIFACT.json", "ARTIFACT.log"] {
        let mode = fs::metadata(dir.join(f)).expect("meta").permissions().mode();
        assert_eq!(mode & 0o222, 0, "{f} is writable: {mode:o}");
    }
    assert_eq!(store.read_action(&key("n1")).expect("read"), Some(rec));
    assert_eq!(store.read_action(&key("other")).expect("read"), None);
    assert!(!store.root().join("work").join(key("n1").to_hex()).exists());
    assert!(store.verify().expect("verify").is_ok());
}

#[test]
fn identical_content_from_two_keys_shares_one_artifact() {
    let (_tmp, store) = new_store();
    let files: &[(&str, &[u8])] = &[("out.txt", b"same")];
    let r1 = publish(&store, "first", files);
    let r2 = publish(&store, "second", files);
    assert_eq!(r1.artifact, r2.artifact);
    assert_eq!(cas_entries(&store), [r1.artifact.to_hex()]);
    let actions = store.list_actions().expect("list");
    assert_eq!(actions.len(), 2);
    assert!(actions.contains(&r1) && actions.contains(&r2));
    let m = store.read_artifact_manifest(&r1.artifact).expect("manifest");
    assert_eq!(m.node_key, key("first"), "first producer is recorded");
    assert!(store.verify().expect("verify").is_ok());
}

#[test]
fn publish_rejects_a_work_dir_of_another_key() {
    let (_tmp, store) = new_store();
    let a = store.lock_node(&key("a"), "t", &mut |_| {}).expect("lock a");
    let b = store.lock_node(&key("b"), "t", &mut |_| {}).expect("lock b");
    let work_b = store.prepare_work(&b).expect("prepare b");
    let err = store.publish(&a, work_b, request("a")).expect_err("mismatch");
    assert!(matches!(err, StoreError::WorkDirMismatch { .. }), "{err:?}");
}

#[test]
fn prepare_work_empties_out_but_keeps_resume() {
    let (_tmp, store) = new_store();
    let k = key("resumable");
    {
        let lock = store.lock_node(&k, "t", &mut |_| {}).expect("lock");
        let work = store.prepare_work(&lock).expect("prepare");
        write_files(&work.out, &[("partial.bin", b"half"), ("d/x", b"x")]);
        write_files(&work.resume, &[("ckpt/step-10.bin", b"state")]);
        // A read-only file and dir inside out/ must not stop the cleanup.
        fs::set_permissions(work.out.join("d"), fs::Permissions::from_mode(0o555)).expect("chmod");
    }
    let lock = store.lock_node(&k, "t", &mut |_| {}).expect("relock");
    let work = store.prepare_work(&lock).expect("prepare again");
    assert_eq!(fs::read_dir(&work.out).expect("out").count(), 0);
    assert_eq!(fs::read(work.resume.join("ckpt/step-10.bin")).expect("resume kept"), b"state");
    // After a successful publish, the whole work dir (resume included) is gone.
    write_files(&work.out, &[("final.bin", b"done")]);
    store.publish(&lock, work, request("r")).expect("publish");
    assert!(!store.root().join("work").join(k.to_hex()).exists());
}

// ---------------------------------------------------------------- crash safety

#[test]
fn killed_run_leaves_only_stray_work_which_prepare_cleans() {
    let (_tmp, store) = new_store();
    let k = key("crashy");
    let partial_digest;
    {
        let lock = store.lock_node(&k, "t", &mut |_| {}).expect("lock");
        let work = store.prepare_work(&lock).expect("prepare");
        write_files(&work.out, &[("a.bin", b"partial")]);
        partial_digest = hash_tree(&work.out).expect("hash").0;
        // While the node is locked (running), its work dir is not stray.
        let report = store.verify().expect("verify");
        assert!(report.stray_work.is_empty(), "{:?}", report.stray_work);
        // Dropping the lock without publishing = the process died here.
    }
    assert!(!store.has_artifact(&partial_digest));
    assert!(cas_entries(&store).is_empty());
    assert_eq!(store.read_action(&k).expect("read"), None);
    let report = store.verify().expect("verify");
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.stray_work, [store.root().join("work").join(k.to_hex())]);

    let lock = store.lock_node(&k, "t", &mut |_| {}).expect("lock");
    let work = store.prepare_work(&lock).expect("prepare");
    assert_eq!(fs::read_dir(&work.out).expect("out").count(), 0);
}

// ---------------------------------------------------------------- locks across processes

const HELPER_ROOT: &str = "AURORA_STORE_TEST_HELPER_ROOT";
const HELPER_KEY: &str = "AURORA_STORE_TEST_HELPER_KEY";
const LOCKED_MARKER: &str = "aurora-store-helper: locked";

/// Helper mode: when run as a child with HELPER_ROOT set, take the lock, print "locked", and
/// hold it until stdin has a line (or the process is killed). A no-op in a normal test run.
#[test]
fn helper_lock_child() {
    let Ok(root) = std::env::var(HELPER_ROOT) else {
        return;
    };
    let k = Digest::from_hex(&std::env::var(HELPER_KEY).expect("key env")).expect("key");
    let store = Store::open(Path::new(&root)).expect("open");
    let holder = format!("pid {} on test-host, node steps/x", std::process::id());
    let _lock = store.lock_node(&k, &holder, &mut |_| {}).expect("lock");
    // libtest prints "test helper_lock_child ... " without a newline first: start a new line.
    println!("\n{LOCKED_MARKER}");
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
}

struct Holder {
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

/// Start a child process holding the lock on `k`; returns once it has printed "locked".
fn spawn_holder(store: &Store, k: &Digest) -> Holder {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["helper_lock_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(HELPER_ROOT, store.root())
        .env(HELPER_KEY, k.to_hex())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn helper");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = stdout.read_line(&mut line).expect("read helper stdout");
        assert!(n > 0, "helper exited before locking");
        if line.trim() == LOCKED_MARKER {
            break;
        }
    }
    Holder { child, _stdout: stdout }
}

#[test]
fn lock_blocks_until_another_process_releases() {
    let (_tmp, store) = new_store();
    let k = key("contended");
    let mut holder = spawn_holder(&store, &k);
    let child_pid = holder.child.id();
    assert!(store.try_lock_node(&k, "me").expect("try").is_none());
    let text = store.lock_holder(&k).expect("holder").expect("held");
    assert_eq!(text, format!("pid {child_pid} on test-host, node steps/x"));

    let (wait_tx, wait_rx) = mpsc::channel::<String>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let store = &store;
        let waiter = s.spawn(move || {
            let lock = store
                .lock_node(&k, "parent", &mut |h| {
                    wait_tx.send(h.to_string()).expect("send");
                })
                .expect("lock");
            done_tx.send(()).expect("send done");
            lock
        });
        let seen = wait_rx.recv().expect("on_wait was called");
        assert_eq!(seen, text);
        // The child still holds the lock, so the waiter cannot have acquired it.
        assert!(done_rx.try_recv().is_err());
        // Release: the child reads a line and exits.
        let stdin = holder.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write stdin");
        let lock = waiter.join().expect("waiter thread");
        assert_eq!(lock.key(), &k);
        assert!(wait_rx.try_recv().is_err(), "on_wait is called only once");
        assert_eq!(store.lock_holder(&k).expect("holder").as_deref(), Some("parent"));
    });
    assert!(holder.child.wait().expect("wait").success());
}

#[test]
fn lock_of_a_sigkilled_process_is_taken_over() {
    let (_tmp, store) = new_store();
    let k = key("stale");
    let mut holder = spawn_holder(&store, &k);
    assert!(store.try_lock_node(&k, "me").expect("try").is_none());
    holder.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    holder.child.wait().expect("wait");
    let mut waited = false;
    let lock = store.lock_node(&k, "me", &mut |_| waited = true).expect("take over");
    assert!(!waited, "a dead holder's lock must be free without waiting");
    assert_eq!(lock.key(), &k);
}

#[test]
fn gc_unlinking_a_lock_file_does_not_split_the_lock() {
    let (_tmp, store) = new_store();
    let k = key("unlinked");
    let first = store.lock_node(&k, "one", &mut |_| {}).expect("lock");
    // Someone removes the lock file while it is held (as a buggy cleanup might): a new
    // locker gets a fresh file; the lock must still be exclusive once the old one drops.
    fs::remove_file(store.root().join("locks").join(format!("{}.lock", k.to_hex()))).expect("unlink");
    drop(first);
    let second = store.lock_node(&k, "two", &mut |_| {}).expect("lock 2");
    assert!(store.try_lock_node(&k, "three").expect("try").is_none());
    drop(second);
    assert!(store.try_lock_node(&k, "three").expect("try").is_some());
}

// ---------------------------------------------------------------- verify

#[test]
fn verify_detects_modified_artifact_dangling_and_corrupt_actions() {
    let (_tmp, store) = new_store();
    let good = publish(&store, "good", &[("keep.txt", b"keep")]);
    let bad = publish(&store, "bad", &[("a.txt", b"original"), ("b.txt", b"b")]);
    let gone = publish(&store, "gone", &[("c.txt", b"c")]);
    assert!(store.verify().expect("verify").is_ok());

    // Tamper with a file inside an artifact.
    let f = store.artifact_dir(&bad.artifact).join("a.txt");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&f, b"tampered").expect("write");
    // Delete an artifact that an action points at.
    fs::remove_dir_all(store.artifact_dir(&gone.artifact)).expect("rm");
    // Corrupt an action record.
    let corrupt_key = key("corrupt");
    let hex = corrupt_key.to_hex();
    let corrupt_path = store.root().join("actions").join(&hex[..2]).join(format!("{hex}.json"));
    fs::create_dir_all(corrupt_path.parent().expect("parent")).expect("mkdir");
    fs::write(&corrupt_path, b"{ not json").expect("write");

    let report = store.verify().expect("verify");
    assert!(!report.is_ok());
    assert_eq!(report.artifacts_checked, 2);
    assert_eq!(report.actions_checked, 4);
    assert!(
        report
            .problems
            .contains(&VerifyProblem::ArtifactChanged { digest: bad.artifact, files: vec!["a.txt (modified)".into()] })
    );
    assert!(report.problems.contains(&VerifyProblem::DanglingAction { key: gone.key, artifact: gone.artifact }));
    assert!(
        report.problems.iter().any(|p| matches!(p, VerifyProblem::CorruptAction { path, .. } if *path == corrupt_path))
    );
    assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
    assert!(!report.problems.iter().any(|p| p.to_string().contains(&good.artifact.to_hex())));
    let msg = report.problems[0].to_string();
    assert!(msg.contains("delete") || msg.contains("rerun"), "{msg}");

    // read_action names the corrupt file.
    let err = store.read_action(&corrupt_key).expect_err("corrupt");
    assert!(err.to_string().contains(&corrupt_path.display().to_string()), "{err}");
}

// ---------------------------------------------------------------- gc

#[test]
fn gc_removes_only_unkept_items_and_dry_run_deletes_nothing() {
    let (_tmp, store) = new_store();
    let kept = publish(&store, "kept", &[("k.bin", b"kept bytes")]);
    let dropped = publish(&store, "dropped", &[("d.bin", b"0123456789")]);
    // An action we keep but whose artifact we drop: it must go too (it would dangle).
    let orphan = publish(&store, "orphan", &[("o.bin", b"orphan")]);
    // A stray work dir of a crashed node.
    {
        let lock = store.lock_node(&key("crashed"), "t", &mut |_| {}).expect("lock");
        let work = store.prepare_work(&lock).expect("prepare");
        write_files(&work.out, &[("partial", b"xyz")]);
    }
    // A work dir of a node that is running now: kept.
    let running = store.lock_node(&key("running"), "t", &mut |_| {}).expect("lock");
    let running_work = store.prepare_work(&running).expect("prepare");
    write_files(&running_work.out, &[("busy", b"busy")]);

    let keep_artifacts: BTreeSet<Digest> = [kept.artifact].into();
    let keep_actions: BTreeSet<Digest> = [kept.key, orphan.key].into();
    let before_cas = cas_entries(&store);

    let dry = store.gc(&keep_artifacts, &keep_actions, true).expect("dry gc");
    assert!(dry.dry_run);
    assert_eq!(cas_entries(&store), before_cas, "dry run deleted something");
    assert_eq!(store.list_actions().expect("list").len(), 3);
    assert!(store.root().join("work").join(key("crashed").to_hex()).exists());

    let real = store.gc(&keep_artifacts, &keep_actions, false).expect("gc");
    assert!(!real.dry_run);
    let paths =
        |r: &aurora_store::GcReport| -> BTreeSet<PathBuf> { r.removed.iter().map(|(p, _)| p.clone()).collect() };
    assert_eq!(paths(&dry), paths(&real));
    // Same sizes, except lock files: gc writes its own holder text into a lock it takes.
    let sizes = |r: &aurora_store::GcReport| -> Vec<(PathBuf, u64)> {
        let mut v: Vec<_> =
            r.removed.iter().filter(|(p, _)| !p.starts_with(store.root().join("locks"))).cloned().collect();
        v.sort();
        v
    };
    assert_eq!(sizes(&dry), sizes(&real));
    assert_eq!(real.bytes, real.removed.iter().map(|(_, b)| b).sum::<u64>());

    let removed = paths(&real);
    let root = store.root();
    assert!(removed.contains(&store.artifact_dir(&dropped.artifact)));
    assert!(removed.contains(&store.artifact_dir(&orphan.artifact)));
    assert!(removed.contains(&root.join("work").join(key("crashed").to_hex())));
    assert!(!removed.contains(&store.artifact_dir(&kept.artifact)));
    assert!(!removed.iter().any(|p| p.starts_with(root.join("work").join(key("running").to_hex()))));
    // The dropped artifact's size: its file plus its metadata files.
    let (_, dropped_size) =
        real.removed.iter().find(|(p, _)| *p == store.artifact_dir(&dropped.artifact)).expect("dropped listed");
    assert!(*dropped_size >= 10, "{dropped_size}");

    assert_eq!(cas_entries(&store), [kept.artifact.to_hex()]);
    assert_eq!(store.list_actions().expect("list"), std::slice::from_ref(&kept));
    assert!(!root.join("work").join(key("crashed").to_hex()).exists());
    assert!(running_work.out.join("busy").exists());
    let locks: Vec<_> = fs::read_dir(root.join("locks"))
        .expect("locks")
        .map(|e| e.expect("e").file_name().into_string().expect("utf8"))
        .collect();
    assert_eq!(locks, [format!("{}.lock", key("running").to_hex())]);
    drop(running);
    let report = store.verify().expect("verify");
    assert!(report.is_ok(), "{:?}", report.problems);
}

// ---------------------------------------------------------------- stat memo

#[test]
fn hash_input_memoises_by_stat_and_notices_changes() {
    let (tmp, store) = new_store();
    let input = tmp.path().join("data.jsonl");
    fs::write(&input, b"one\n").expect("write");
    set_old_mtime(&input);
    let d1 = store.hash_input(&input).expect("hash");
    assert_eq!(d1, hash_file(&input).expect("direct"));
    assert_eq!((store.memo_hits(), store.memo_misses()), (0, 1));
    assert_eq!(store.hash_input(&input).expect("hash"), d1);
    assert_eq!((store.memo_hits(), store.memo_misses()), (1, 1));
    // Same file through another spelling of its path: same canonical key.
    let other_spelling = tmp.path().join(".").join("data.jsonl");
    assert_eq!(store.hash_input(&other_spelling).expect("hash"), d1);
    assert_eq!(store.memo_hits(), 2);

    // New content, new mtime: a miss and the new digest.
    fs::write(&input, b"two, longer\n").expect("rewrite");
    let d2 = store.hash_input(&input).expect("hash");
    assert_ne!(d2, d1);
    assert_eq!(d2, hash_file(&input).expect("direct"));
    assert_eq!(store.memo_hits(), 2);

    // Same size and the same (old) mtime forced back: ctime still differs, so still a miss.
    set_old_mtime(&input);
    let before = store.memo_misses();
    let d2b = store.hash_input(&input).expect("hash");
    assert_eq!(d2b, d2);
    fs::write(&input, b"TWO, LONGER\n").expect("rewrite same size");
    let f = fs::File::options().write(true).open(&input).expect("open");
    f.set_modified(fs::metadata(&input).expect("m").modified().expect("mtime") - Duration::from_secs(3600))
        .expect("set");
    let d3 = store.hash_input(&input).expect("hash");
    assert_eq!(d3, hash_file(&input).expect("direct"));
    assert_ne!(d3, d2);
    assert_eq!(store.memo_misses(), before + 2);
}

#[test]
fn recently_modified_files_are_not_memoised() {
    let (tmp, store) = new_store();
    let input = tmp.path().join("fresh.txt");
    fs::write(&input, b"fresh").expect("write");
    store.hash_input(&input).expect("hash");
    store.hash_input(&input).expect("hash");
    assert_eq!((store.memo_hits(), store.memo_misses()), (0, 2));
}

#[test]
fn memo_persists_across_store_handles_and_ignores_corruption() {
    let (tmp, store) = new_store();
    let input = tmp.path().join("in.txt");
    fs::write(&input, b"persist me").expect("write");
    set_old_mtime(&input);
    let d = store.hash_input(&input).expect("hash");
    store.flush_memo().expect("flush");
    let memo_path = store.root().join("statmemo.json");
    assert!(memo_path.exists());
    let mtime = fs::metadata(&memo_path).expect("m").modified().expect("mtime");
    store.flush_memo().expect("no-op flush");
    assert_eq!(fs::metadata(&memo_path).expect("m").modified().expect("mtime"), mtime);

    let again = Store::open(store.root()).expect("reopen");
    assert_eq!(again.hash_input(&input).expect("hash"), d);
    assert_eq!((again.memo_hits(), again.memo_misses()), (1, 0));

    fs::write(&memo_path, b"\x00garbage").expect("corrupt");
    let third = Store::open(store.root()).expect("reopen");
    assert_eq!(third.hash_input(&input).expect("hash"), d);
    assert_eq!(third.memo_misses(), 1);
    third.flush_memo().expect("flush over corrupt memo");
    let fourth = Store::open(store.root()).expect("reopen");
    fourth.hash_input(&input).expect("hash");
    assert_eq!(fourth.memo_hits(), 1);
}

#[test]
fn hash_input_of_a_directory_matches_hash_tree_and_memoises_per_file() {
    let (tmp, store) = new_store();
    let dir = tmp.path().join("corpus");
    write_files(&dir, &[("a.txt", b"a"), ("sub/b.txt", b"b")]);
    set_old_mtime(&dir.join("a.txt"));
    set_old_mtime(&dir.join("sub/b.txt"));
    let d = store.hash_input(&dir).expect("hash dir");
    assert_eq!(d, hash_tree(&dir).expect("tree").0);
    assert_eq!(store.hash_input(&dir).expect("hash dir"), d);
    assert_eq!((store.memo_hits(), store.memo_misses()), (2, 2));
    fs::write(dir.join("sub/b.txt"), b"B!").expect("modify");
    let d2 = store.hash_input(&dir).expect("hash dir");
    assert_ne!(d2, d);
    assert_eq!(d2, hash_tree(&dir).expect("tree").0);
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

// ---------------------------------------------------------------- runs

#[test]
fn run_records_round_trip_with_prefix_lookup() {
    let (_tmp, store) = new_store();
    let r1 = serde_json::json!({"run": 1});
    let r2 = serde_json::json!({"run": 2});
    let p = store.write_run("20240101-120000-aaaa", &r1).expect("write");
    assert!(p.ends_with("runs/20240101-120000-aaaa.json"));
    store.write_run("20240101-130000-bbbb", &r2).expect("write");
    assert_eq!(store.list_runs().expect("list"), ["20240101-120000-aaaa", "20240101-130000-bbbb"]);
    assert_eq!(store.read_run("20240101-120000-aaaa").expect("read"), r1);
    assert_eq!(store.read_run("20240101-13").expect("prefix"), r2);
    let err = store.read_run("20240101").expect_err("ambiguous");
    insta::assert_snapshot!(err.to_string(), @r#"run id prefix "20240101" is ambiguous: it matches 20240101-120000-aaaa, 20240101-130000-bbbb (type more characters)"#);
    assert!(matches!(store.read_run("2099").expect_err("none"), StoreError::RunNotFound { .. }));
    assert!(matches!(store.write_run("../evil", &r1).expect_err("bad id"), StoreError::InvalidRunId { .. }));
}

// ---------------------------------------------------------------- error messages

#[test]
fn error_when_store_root_is_a_regular_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, b"x").expect("write");
    let err = Store::open(&file).expect_err("file root");
    insta::assert_snapshot!(redact(&err.to_string(), tmp.path()), @"cannot create store at [TMP]/not-a-dir: it exists and is not a directory (remove it, or set AURORA_STORE to a directory)");
}

#[test]
fn error_when_store_has_another_version() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join(".aurora");
    Store::open(&root).expect("create");
    fs::write(root.join("VERSION"), b"2\n").expect("write");
    let err = Store::open(&root).expect_err("version");
    insta::assert_snapshot!(redact(&err.to_string(), tmp.path()), @"store at [TMP]/.aurora has layout version \"2\", but this aurora understands version \"1\" (use the aurora release that created it, or move the store aside so a fresh one is created)");
    let err = Store::open_existing(&root).expect_err("version");
    assert!(matches!(err, StoreError::VersionMismatch { .. }));
}

#[test]
fn error_when_store_is_missing_or_not_a_store() {
    let tmp = tempfile::tempdir().expect("tmp");
    let err = Store::open_existing(&tmp.path().join("nope")).expect_err("missing");
    insta::assert_snapshot!(redact(&err.to_string(), tmp.path()), @"no store at [TMP]/nope (run a pipeline first to create it, or set AURORA_STORE to the store you meant)");
    write_files(&tmp.path().join("home"), &[("notes.txt", b"mine")]);
    let err = Store::open(&tmp.path().join("home")).expect_err("not a store");
    insta::assert_snapshot!(redact(&err.to_string(), tmp.path()), @"cannot use [TMP]/home as a store: the directory is not empty and has no VERSION file, so it is not an aurora store (set AURORA_STORE to an empty or new directory)");
}

#[test]
fn error_when_store_parent_is_not_writable() {
    // Root bypasses permission checks; nothing to test then (in CI too, which may run as root).
    let tmp = tempfile::tempdir().expect("tmp");
    let ro = tmp.path().join("ro");
    fs::create_dir(&ro).expect("mkdir");
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).expect("chmod");
    if fs::write(ro.join("probe"), b"").is_ok() {
        let why = "a read-only directory is writable here (running as root?): nothing to check; run as another user";
        aurora_process_testkit::Skip::not_applicable(why).report();
        return;
    }
    let err = Store::open(&ro.join(".aurora")).expect_err("read-only");
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).expect("chmod back");
    insta::assert_snapshot!(redact(&err.to_string(), tmp.path()), @"cannot create store at [TMP]/ro/.aurora: permission denied (set AURORA_STORE to a writable directory)");
}

#[test]
fn open_existing_creates_nothing_and_reads_an_empty_store() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join(".aurora");
    fs::create_dir(&root).expect("mkdir");
    fs::write(root.join("VERSION"), b"1\n").expect("version");
    let store = Store::open_existing(&root).expect("open");
    assert!(store.list_runs().expect("runs").is_empty());
    assert!(store.list_actions().expect("actions").is_empty());
    assert!(store.verify().expect("verify").is_ok());
    assert_eq!(fs::read_dir(&root).expect("root").count(), 1, "open_existing wrote files");
}

//! The remote cache end to end, with the real `aurora` binary, separate stores (one temporary
//! project each, the same manifest) and real servers: nginx with WebDAV `PUT` (the HTTP cache a lab
//! runs) and moto (S3). A small DAG of `exec.command` steps shaped like the study (data -> cap ->
//! cat -> two evaluations, plus an independent node), with outputs of about 1 MB so transfers are
//! real: one store uploads, another downloads instead of executing, an ablation executes only what
//! changed, a damaged remote object is rejected and repaired, `pull` and `push`, and the errors a
//! wrong configuration gets.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use aurora_servers_testkit::{Nginx, moto_or_skip, nginx_or_skip};
use common::*;
use serde_json::Value;

/// data -> cap -> cat -> {eval_a, eval_b}; other stands alone. data, cap and cat are ~1 MB each.
const MANIFEST: &str = r#"[experiment]
name = "remote"
seed = 1

[steps.data]
plugin = "exec.command"
argv = ["sh", "-c", '{ cat "$AURORA_IN_RAW"; seq 1 200000; } > "$AURORA_OUT/data.txt"']
inputs = { raw = "file:data/raw.txt" }

[steps.cap]
plugin = "exec.command"
argv = ["sh", "-c", 'tr a-z A-Z < "$AURORA_IN_DATA/data.txt" > "$AURORA_OUT/cap.txt"']
inputs = { data = "steps.data" }

[steps.cat]
plugin = "exec.command"
argv = ["sh", "-c", 'cat "$AURORA_IN_CAP/cap.txt" > "$AURORA_OUT/cat.txt"; echo END >> "$AURORA_OUT/cat.txt"']
inputs = { cap = "steps.cap" }

[steps.eval_a]
plugin = "exec.command"
argv = ["sh", "-c", 'wc -l < "$AURORA_IN_CAT/cat.txt" > "$AURORA_OUT/lines.txt"']
inputs = { cat = "steps.cat" }

[steps.eval_b]
plugin = "exec.command"
argv = ["sh", "-c", 'echo "log line of eval_b"; tail -n 1 "$AURORA_IN_CAT/cat.txt" > "$AURORA_OUT/last.txt"']
inputs = { cat = "steps.cat" }

[steps.other]
plugin = "exec.command"
argv = ["sh", "-c", 'printf "independent\n" > "$AURORA_OUT/other.txt"']
"#;

/// The ablation: only `cat`'s command changes.
const ABLATION: &str = r#"steps.cat.argv=["sh", "-c", 'cat "$AURORA_IN_CAP/cap.txt" > "$AURORA_OUT/cat.txt"; echo CHANGED >> "$AURORA_OUT/cat.txt"']"#;

const RAW: &str = "Aurora remote cache\n";

const IDS: [&str; 6] = ["steps/data", "steps/cap", "steps/cat", "steps/eval_a", "steps/eval_b", "steps/other"];

/// Variables through which a remote (or its credentials) could leak into a child from the
/// environment the tests run in; each test passes what it means explicitly.
const CLEARED_ENV: [&str; 16] = [
    "AURORA_REMOTE",
    "AURORA_REMOTE_TOKEN",
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
    "AWS_PROFILE",
    "GOOGLE_SERVICE_ACCOUNT",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_ACCOUNT_NAME",
];

/// What each node writes, computed here independently of aurora: (node, file, bytes).
fn expected(last_line: &str) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut data = RAW.to_string();
    for i in 1..=200_000 {
        data.push_str(&format!("{i}\n"));
    }
    let cap = data.to_uppercase();
    let cat = format!("{cap}{last_line}\n");
    let lines = format!("{}\n", cat.lines().count());
    vec![
        ("steps/data", "data.txt", data.into_bytes()),
        ("steps/cap", "cap.txt", cap.into_bytes()),
        ("steps/cat", "cat.txt", cat.into_bytes()),
        ("steps/eval_a", "lines.txt", lines.into_bytes()),
        ("steps/eval_b", "last.txt", format!("{last_line}\n").into_bytes()),
        ("steps/other", "other.txt", b"independent\n".to_vec()),
    ]
}

fn file_of(node: &str) -> &'static str {
    expected("END").into_iter().find(|(id, _, _)| *id == node).map(|(_, f, _)| f).expect("a node of the manifest")
}

fn bytes_of(node: &str, last_line: &str) -> Vec<u8> {
    expected(last_line).into_iter().find(|(id, _, _)| *id == node).map(|(_, _, b)| b).expect("a node of the manifest")
}

/// A fresh project (its own store) holding the manifest and its input.
fn store() -> Project {
    let p = Project::new();
    p.write("data/raw.txt", RAW);
    p.write("m.toml", MANIFEST);
    p
}

/// `aurora ARGS` in `p` with a clean remote environment plus `env`.
fn aurora(p: &Project, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = p.command(args);
    for name in CLEARED_ENV {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    output_within(cmd, TIMEOUT)
}

/// `aurora ARGS --json`, asserting exit code 0; the parsed stdout and the stderr.
fn json_ok(p: &Project, args: &[&str], env: &[(&str, &str)]) -> (Value, String) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = aurora(p, &all, env);
    assert_code(&out, 0, &format!("aurora {}", all.join(" ")));
    let doc = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("aurora {}: stdout is not JSON ({e}):\n{}", all.join(" "), stdout(&out)));
    (doc, stderr(&out))
}

fn nodes(doc: &Value) -> &Vec<Value> {
    doc["nodes"].as_array().expect("`nodes` is an array")
}

fn node<'a>(doc: &'a Value, id: &str) -> &'a Value {
    nodes(doc).iter().find(|n| n["id"] == id).unwrap_or_else(|| panic!("no node {id} in {doc:#}"))
}

fn field(doc: &Value, id: &str, name: &str) -> String {
    node(doc, id)[name].as_str().unwrap_or_else(|| panic!("{id}.{name} is not a string in {doc:#}")).to_string()
}

fn expect_statuses(doc: &Value, expected: &[(&str, &str)]) {
    let got: Vec<(String, String)> = nodes(doc)
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_string(), n["status"].as_str().unwrap().to_string()))
        .collect();
    let want: Vec<(String, String)> = expected.iter().map(|(i, s)| (i.to_string(), s.to_string())).collect();
    assert_eq!(got, want, "statuses in {doc:#}");
}

fn all_with(status: &'static str) -> Vec<(&'static str, &'static str)> {
    IDS.iter().map(|id| (*id, status)).collect()
}

/// node -> (key, artifact) of a run report.
fn outputs(doc: &Value) -> BTreeMap<String, (String, String)> {
    nodes(doc)
        .iter()
        .map(|n| {
            let id = n["id"].as_str().unwrap().to_string();
            (id.clone(), (field(doc, &id, "key"), field(doc, &id, "artifact")))
        })
        .collect()
}

/// The node's artifact in `p`'s store holds exactly the expected bytes, and its action record
/// points at it.
fn assert_artifact(p: &Project, doc: &Value, id: &str, last_line: &str) {
    let key = field(doc, id, "key");
    let artifact = field(doc, id, "artifact");
    assert!(is_hex64(&key) && is_hex64(&artifact), "{id}: key {key} / artifact {artifact}");
    let path = p.artifact_dir(&artifact).join(file_of(id));
    let got = fs::read(&path).unwrap_or_else(|e| panic!("{id}: {}: {e}", path.display()));
    assert!(got == bytes_of(id, last_line), "{id}: {} does not hold the expected bytes", path.display());
    let action: Value = serde_json::from_str(&fs::read_to_string(p.action_path(&key)).expect("action record")).unwrap();
    assert_eq!(action["artifact"], artifact.as_str(), "{id}: the action record points at the artifact");
}

fn assert_all_artifacts(p: &Project, doc: &Value) {
    for id in IDS {
        assert_artifact(p, doc, id, "END");
    }
}

/// The object `v1/...` of a remote served by nginx at `url("cache")`.
fn object(nginx: &Nginx, rel: &str) -> PathBuf {
    nginx.root().join("cache").join(rel)
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Replaces the durations object_store prints (`in 328.138423ms,`) with `in [ELAPSED],`.
fn redact_elapsed(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(" in ") {
        let (before, after) = rest.split_at(i + 4);
        out.push_str(before);
        let number = after.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(after.len());
        let unit = after[number..].find(',').filter(|&u| number > 0 && u <= 2);
        match unit {
            Some(u) => {
                out.push_str("[ELAPSED]");
                rest = &after[number + u..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// Store A executes everything and uploads it; returns its report.
fn upload_all(nginx: &Nginx) -> (Project, Value) {
    let a = store();
    let url = nginx.url("cache");
    let (run, _) = json_ok(&a, &["run", "m.toml", "--remote", &url, "--remote-upload"], &[]);
    expect_statuses(&run, &all_with("executed"));
    for id in IDS {
        assert!(node(&run, id)["uploaded_bytes"].as_u64().is_some_and(|b| b > 0), "{id} uploaded in {run:#}");
    }
    assert_all_artifacts(&a, &run);
    (a, run)
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_second_store_downloads_what_the_first_uploaded() {
    let Some(nginx) = nginx_or_skip("a_second_store_downloads_what_the_first_uploaded") else { return };
    let url = nginx.url("cache");
    let (_a, run_a) = upload_all(&nginx);

    // The layout: an action record per key, a manifest per artifact, a blob per file content.
    for id in IDS {
        let (key, artifact) = &outputs(&run_a)[id];
        let record: Value = serde_json::from_slice(&fs::read(object(&nginx, &format!("v1/ac/{key}.json"))).unwrap())
            .expect("the remote action record is JSON");
        assert_eq!(record["artifact"], artifact.as_str(), "{id}");
        assert!(object(&nginx, &format!("v1/artifacts/{artifact}.json")).is_file(), "{id}: artifact manifest");
        let bytes = bytes_of(id, "END");
        assert!(fs::read(object(&nginx, &format!("v1/cas/{}", blake3_hex(&bytes)))).unwrap() == bytes, "{id}: blob");
    }
    assert!(object(&nginx, &format!("v1/artifacts/{}.log", outputs(&run_a)["steps/eval_b"].1)).is_file());
    let remote_before = files_below(&nginx.root());

    // Store B executes nothing: every node comes from the remote, byte for byte.
    let b = store();
    let (run_b, _) = json_ok(&b, &["run", "m.toml", "--remote", &url], &[]);
    expect_statuses(&run_b, &all_with("downloaded"));
    assert_eq!(outputs(&run_b), outputs(&run_a), "same keys and artifacts in both stores");
    assert_all_artifacts(&b, &run_b);
    let data_size = bytes_of("steps/data", "END").len() as u64;
    assert_eq!(node(&run_b, "steps/data")["downloaded_bytes"].as_u64(), Some(data_size));
    assert!(node(&run_b, "steps/data").get("uploaded_bytes").is_none());
    // The log came along.
    let log = b.artifact_dir(&outputs(&run_a)["steps/eval_b"].1).join("ARTIFACT.log");
    assert_eq!(fs::read_to_string(&log).unwrap_or_default(), "log line of eval_b\n", "{}", log.display());
    // A reader writes nothing to the remote.
    assert_eq!(files_below(&nginx.root()), remote_before, "store B's run left the remote unchanged");
    let verify = aurora(&b, &["verify", "--store"], &[]);
    assert_code(&verify, 0, "verify --store of the downloaded artifacts");

    // Third run in B: everything is local now.
    let (run_b2, _) = json_ok(&b, &["run", "m.toml", "--remote", &url], &[]);
    expect_statuses(&run_b2, &all_with("cached"));
    assert_eq!(outputs(&run_b2), outputs(&run_a));

    // The table says `fetched`, with the bytes.
    let c = store();
    let out = aurora(&c, &["run", "m.toml"], &[("AURORA_REMOTE", &url)]);
    assert_code(&out, 0, "run with AURORA_REMOTE");
    let table = stdout(&out);
    for id in IDS {
        let line = table.lines().find(|l| l.contains(&format!(" {id} "))).unwrap_or_else(|| panic!("{id}:\n{table}"));
        assert!(line.trim_start().starts_with("fetched"), "{line}");
    }
    assert!(table.contains("1.2 MiB in"), "{table}");
    assert!(table.contains("6 fetched"), "{table}");
}

#[test]
fn an_ablation_downloads_the_shared_prefix_and_executes_only_what_changed() {
    let Some(nginx) = nginx_or_skip("an_ablation_downloads_the_shared_prefix_and_executes_only_what_changed") else {
        return;
    };
    let url = nginx.url("cache");
    let (_a, run_a) = upload_all(&nginx);

    let b = store();
    let (run_b, _) = json_ok(&b, &["run", "m.toml", "--remote", &url, "--set", ABLATION], &[]);
    expect_statuses(
        &run_b,
        &[
            ("steps/data", "downloaded"),
            ("steps/cap", "downloaded"),
            ("steps/cat", "executed"),
            ("steps/eval_a", "executed"),
            ("steps/eval_b", "executed"),
            ("steps/other", "downloaded"),
        ],
    );
    let (a, bb) = (outputs(&run_a), outputs(&run_b));
    for id in ["steps/data", "steps/cap", "steps/other"] {
        assert_eq!(a[id], bb[id], "{id} is shared with the baseline");
        assert_artifact(&b, &run_b, id, "END");
    }
    for id in ["steps/cat", "steps/eval_a", "steps/eval_b"] {
        assert_ne!(a[id].0, bb[id].0, "{id}: a new key");
        assert_artifact(&b, &run_b, id, "CHANGED");
        // Executed without --remote-upload: the remote does not get it.
        assert!(!object(&nginx, &format!("v1/ac/{}.json", bb[id].0)).exists(), "{id} was not uploaded");
    }
    // eval_a counts lines: same count, but a new input, so it ran again.
    assert_eq!(bytes_of("steps/eval_a", "CHANGED"), bytes_of("steps/eval_a", "END"));

    // The ablation again, in the same store: all local.
    let (again, _) = json_ok(&b, &["run", "m.toml", "--remote", &url, "--set", ABLATION], &[]);
    expect_statuses(&again, &all_with("cached"));

    // Another store runs the ablation with the remote from AURORA_REMOTE and uploads it; a third
    // then downloads all of it.
    let e = store();
    let (run_e, _) = json_ok(&e, &["run", "m.toml", "--remote-upload", "--set", ABLATION], &[("AURORA_REMOTE", &url)]);
    assert_eq!(outputs(&run_e), bb);
    for id in ["steps/cat", "steps/eval_a", "steps/eval_b"] {
        assert_eq!(field(&run_e, id, "status"), "executed", "{id}");
        assert!(object(&nginx, &format!("v1/ac/{}.json", bb[id].0)).is_file(), "{id} was uploaded");
    }
    let f = store();
    let (run_f, _) = json_ok(&f, &["run", "m.toml", "--remote", &url, "--set", ABLATION], &[]);
    expect_statuses(&run_f, &all_with("downloaded"));
    assert_artifact(&f, &run_f, "steps/eval_b", "CHANGED");
}

#[test]
fn a_damaged_remote_object_is_rejected_executed_locally_and_repaired_by_an_upload() {
    let Some(nginx) = nginx_or_skip("a_damaged_remote_object_is_rejected_executed_locally_and_repaired_by_an_upload")
    else {
        return;
    };
    let url = nginx.url("cache");
    let (_a, run_a) = upload_all(&nginx);

    // Same size, one byte different: only the digest can tell.
    let good = bytes_of("steps/cap", "END");
    let blob_rel = format!("v1/cas/{}", blake3_hex(&good));
    let blob = object(&nginx, &blob_rel);
    let mut bad = good.clone();
    bad[0] = b'X';
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, &bad).unwrap();

    // Store C: cap is rejected and executed; its output has the same digest, so everything
    // downstream is downloaded again (early cutoff across the remote).
    let c = store();
    let (run_c, err_c) = json_ok(&c, &["run", "m.toml", "--remote", &url], &[]);
    expect_statuses(
        &run_c,
        &[
            ("steps/data", "downloaded"),
            ("steps/cap", "executed"),
            ("steps/cat", "downloaded"),
            ("steps/eval_a", "downloaded"),
            ("steps/eval_b", "downloaded"),
            ("steps/other", "downloaded"),
        ],
    );
    assert_eq!(outputs(&run_c), outputs(&run_a));
    assert_all_artifacts(&c, &run_c);
    assert!(err_c.contains("note: node steps/cap: the remote cache's copy was rejected"), "{err_c}");
    assert!(err_c.contains(&blob_rel), "the note names the object: {err_c}");
    let notes = node(&run_c, "steps/cap")["notes"].as_array().expect("notes in the JSON report").clone();
    assert_eq!(notes.len(), 1);
    assert!(notes[0].as_str().unwrap().contains(&blob_rel), "{notes:?}");
    insta::assert_snapshot!("rejected_object_note", c.redact(&err_c));
    // Nowhere in C's store are the damaged bytes.
    for rel in c.store_files() {
        let path = c.store().join(&rel);
        assert!(fs::read(&path).map(|b| b != bad).unwrap_or(true), "{rel} holds the damaged bytes");
    }
    // C uploaded nothing: the remote copy is still damaged.
    assert!(fs::read(&blob).unwrap() == bad);

    // A fresh store with --remote-upload: rejected, executed, uploaded again, repaired.
    let c2 = store();
    let (run_c2, err_c2) = json_ok(&c2, &["run", "m.toml", "--remote", &url, "--remote-upload"], &[]);
    assert_eq!(field(&run_c2, "steps/cap", "status"), "executed");
    assert!(err_c2.contains(&blob_rel), "{err_c2}");
    assert!(
        node(&run_c2, "steps/cap")["uploaded_bytes"].as_u64().is_some_and(|b| b >= good.len() as u64),
        "the damaged blob was sent again: {run_c2:#}"
    );
    assert!(fs::read(&blob).unwrap() == good, "the remote copy is repaired");

    // Store D downloads everything, cap included.
    let d = store();
    let (run_d, err_d) = json_ok(&d, &["run", "m.toml", "--remote", &url], &[]);
    expect_statuses(&run_d, &all_with("downloaded"));
    assert!(!err_d.contains("note:"), "{err_d}");
    assert_all_artifacts(&d, &run_d);
}

#[test]
fn pull_downloads_without_executing_and_leaves_what_the_remote_lacks_pending() {
    let Some(nginx) = nginx_or_skip("pull_downloads_without_executing_and_leaves_what_the_remote_lacks_pending") else {
        return;
    };
    let url = nginx.url("cache");
    let (_a, run_a) = upload_all(&nginx);

    // Everything.
    let p = store();
    let (pulled, _) = json_ok(&p, &["pull", "m.toml", "--remote", &url], &[]);
    expect_statuses(&pulled, &all_with("downloaded"));
    assert_eq!(outputs(&pulled), outputs(&run_a));
    assert_all_artifacts(&p, &pulled);
    // A second pull has nothing to do.
    let (again, _) = json_ok(&p, &["pull", "m.toml", "--remote", &url], &[]);
    expect_statuses(&again, &all_with("cached"));

    // Only cap and what it depends on.
    let q = store();
    let (until, _) = json_ok(&q, &["pull", "m.toml", "--remote", &url, "--until", "steps/cap"], &[]);
    expect_statuses(&until, &[("steps/data", "downloaded"), ("steps/cap", "downloaded")]);
    assert_artifact(&q, &until, "steps/data", "END");
    assert_artifact(&q, &until, "steps/cap", "END");
    let mut keys = q.artifact_node_keys();
    keys.sort();
    let mut want = vec![outputs(&run_a)["steps/data"].0.clone(), outputs(&run_a)["steps/cap"].0.clone()];
    want.sort();
    assert_eq!(keys, want, "only data and cap are in the store");

    // cap's action record is gone from the remote: cap and its dependents stay pending, the
    // pull still succeeds (nothing failed), and nothing runs. The remote comes from AURORA_REMOTE.
    fs::remove_file(object(&nginx, &format!("v1/ac/{}.json", outputs(&run_a)["steps/cap"].0))).unwrap();
    let r = store();
    let (partial, _) = json_ok(&r, &["pull", "m.toml"], &[("AURORA_REMOTE", &url)]);
    expect_statuses(
        &partial,
        &[
            ("steps/data", "downloaded"),
            ("steps/cap", "pending"),
            ("steps/cat", "pending"),
            ("steps/eval_a", "pending"),
            ("steps/eval_b", "pending"),
            ("steps/other", "downloaded"),
        ],
    );
    assert_eq!(node(&partial, "steps/cap")["reason"], format!("in neither the local store nor {url}").as_str());
    for id in ["steps/cat", "steps/eval_a", "steps/eval_b"] {
        assert_eq!(node(&partial, id)["reason"], "not run: an upstream node is pending", "{id}");
    }
    assert_eq!(r.artifact_node_keys().len(), 2, "data and other only");
    // The table, in another fresh store.
    let s = store();
    let out = aurora(&s, &["pull", "m.toml"], &[("AURORA_REMOTE", &url)]);
    assert_code(&out, 0, "pull with a node missing in the remote");
    let table = stdout(&out).replace(&url, "[REMOTE]/");
    insta::assert_snapshot!("pull_with_a_missing_node", s.redact(&table));
}

#[test]
fn push_uploads_a_local_run_once() {
    let Some(nginx) = nginx_or_skip("push_uploads_a_local_run_once") else { return };
    let url = nginx.url("cache");

    let p = store();
    let (run, _) = json_ok(&p, &["run", "m.toml"], &[]);
    expect_statuses(&run, &all_with("executed"));
    assert!(files_below(&nginx.root().join("cache")).is_empty(), "nothing uploaded without a remote");

    let (pushed, _) = json_ok(&p, &["push", "m.toml", "--remote", &url], &[]);
    assert_eq!(pushed["remote"], url.as_str());
    let list = pushed["nodes"].as_array().unwrap();
    assert_eq!(list.iter().map(|n| n["id"].as_str().unwrap()).collect::<Vec<_>>(), IDS);
    for n in list {
        let id = n["id"].as_str().unwrap();
        assert!(n.get("error").is_none(), "{n}");
        assert_eq!(n["artifact"], outputs(&run)[id].1.as_str());
        // A blob, the artifact manifest, the action record (and the log: every exec step has one).
        assert!(n["objects"].as_u64().unwrap() >= 3, "{n}");
        assert!(n["bytes"].as_u64().unwrap() > bytes_of(id, "END").len() as u64, "{n}");
    }
    for id in IDS {
        let (key, _) = &outputs(&run)[id];
        assert!(object(&nginx, &format!("v1/ac/{key}.json")).is_file(), "{id}");
    }

    // Again: nothing to send.
    let (second, _) = json_ok(&p, &["push", "m.toml", "--remote", &url], &[]);
    for n in second["nodes"].as_array().unwrap() {
        assert_eq!((n["objects"].as_u64(), n["bytes"].as_u64()), (Some(0), Some(0)), "{n}");
    }
    let out = aurora(&p, &["push", "m.toml"], &[("AURORA_REMOTE", &url)]);
    assert_code(&out, 0, "third push");
    let text = stdout(&out);
    assert_eq!(text.matches("already there").count(), 6, "{text}");
    assert!(text.ends_with("6 nodes pushed, 0 B sent\n"), "{text}");

    // A fresh store downloads all of it.
    let q = store();
    let (fetched, _) = json_ok(&q, &["run", "m.toml", "--remote", &url], &[]);
    expect_statuses(&fetched, &all_with("downloaded"));
    assert_eq!(outputs(&fetched), outputs(&run));
    assert_all_artifacts(&q, &fetched);

    // A store with only part of the plan pushes only that part.
    let nginx2 = nginx_or_skip("push_uploads_a_local_run_once (second server)").expect("nginx started once already");
    let partial = store();
    let (ran, _) = json_ok(&partial, &["run", "m.toml", "--until", "steps/cap"], &[]);
    expect_statuses(&ran, &[("steps/data", "executed"), ("steps/cap", "executed")]);
    let (pushed, _) = json_ok(&partial, &["push", "m.toml", "--remote", &nginx2.url("cache")], &[]);
    let ids: Vec<&str> = pushed["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["steps/data", "steps/cap"]);
}

#[test]
fn a_push_repairs_a_damaged_remote_object_it_holds_locally() {
    let Some(nginx) = nginx_or_skip("a_push_repairs_a_damaged_remote_object_it_holds_locally") else { return };
    let url = nginx.url("cache");
    let (a, _) = upload_all(&nginx);
    let good = bytes_of("steps/cap", "END");
    let blob = object(&nginx, &format!("v1/cas/{}", blake3_hex(&good)));
    let mut bad = good.clone();
    bad[0] = b'X';
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, &bad).unwrap();

    // Store C finds the damage (and runs cap itself); A, which has the good bytes, pushes.
    let c = store();
    let (run_c, _) = json_ok(&c, &["run", "m.toml", "--remote", &url], &[]);
    assert_eq!(field(&run_c, "steps/cap", "status"), "executed");
    // A plain push trusts what the remote has; `--force` sends everything again.
    let (pushed, _) = json_ok(&a, &["push", "m.toml", "--remote", &url], &[]);
    assert!(pushed["nodes"].as_array().unwrap().iter().all(|n| n["objects"] == 0), "{pushed}");
    let (_pushed, _) = json_ok(&a, &["push", "m.toml", "--remote", &url, "--force"], &[]);
    let d = store();
    let (run_d, err_d) = json_ok(&d, &["run", "m.toml", "--remote", &url], &[]);
    assert!(
        fs::read(&blob).unwrap() == good && field(&run_d, "steps/cap", "status") == "downloaded",
        "`aurora push --force` from a store holding the good bytes did not repair the remote copy:\n{err_d}"
    );
}

#[test]
fn configuration_errors_say_what_to_do() {
    let p = store();

    // No remote at all.
    let out = aurora(&p, &["pull", "m.toml"], &[]);
    assert_code(&out, 2, "pull without a remote");
    let no_remote = stderr(&out);
    assert!(no_remote.contains("--remote") && no_remote.contains("AURORA_REMOTE"), "{no_remote}");
    let out = aurora(&p, &["push", "m.toml"], &[]);
    assert_code(&out, 2, "push without a remote");

    // An unknown scheme.
    let out = aurora(&p, &["pull", "m.toml", "--remote", "ftp://x"], &[]);
    assert_code(&out, 2, "an ftp remote");
    let ftp = stderr(&out);
    assert!(ftp.contains("unknown scheme `ftp`"), "{ftp}");

    // S3 without credentials: refused at once, naming the variables.
    let started = Instant::now();
    let out = aurora(&p, &["pull", "m.toml", "--remote", "s3://bucket/prefix"], &[]);
    assert_code(&out, 2, "an s3 remote without credentials");
    assert!(started.elapsed() < Duration::from_secs(10), "no wait for a metadata service");
    let s3 = stderr(&out);
    assert!(s3.contains("AWS_ACCESS_KEY_ID") && s3.contains("s3://bucket/prefix"), "{s3}");

    // --remote-upload needs --remote.
    let out = aurora(&p, &["run", "m.toml", "--remote-upload"], &[]);
    assert_code(&out, 2, "--remote-upload without --remote");
    let upload = stderr(&out);
    assert!(upload.contains("--remote <URL>"), "{upload}");

    insta::assert_snapshot!(
        "configuration_errors",
        p.redact(&format!(
            "$ aurora pull m.toml\n{no_remote}\n$ aurora pull m.toml --remote ftp://x\n{ftp}\n\
             $ aurora pull m.toml --remote s3://bucket/prefix\n{s3}\n$ aurora run m.toml --remote-upload\n{upload}"
        ))
    );
    assert!(p.artifact_node_keys().is_empty(), "nothing ran");
}

#[test]
fn a_remote_that_is_down_fails_the_node_quickly_and_names_the_url() {
    let p = store();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/cache/");
    let started = Instant::now();
    let out = aurora(&p, &["run", "m.toml", "--remote", &url, "--json"], &[]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_code(&out, 1, "run against a remote that is down");
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(field(&doc, "steps/data", "status"), "failed");
    assert_eq!(field(&doc, "steps/other", "status"), "failed");
    for id in ["steps/cap", "steps/cat", "steps/eval_a", "steps/eval_b"] {
        assert_eq!(field(&doc, id, "status"), "pending", "{id}");
    }
    let err = stderr(&out);
    assert!(err.contains(&url) && err.contains("check AURORA_REMOTE"), "{err}");
    assert!(p.artifact_node_keys().is_empty(), "nothing ran");
    insta::assert_snapshot!("remote_down", redact_elapsed(&p.redact(&err.replace(&port.to_string(), "[PORT]"))));
}

#[test]
fn an_s3_remote_shares_results_between_stores() {
    let Some(moto) = moto_or_skip("an_s3_remote_shares_results_between_stores") else { return };
    let endpoint = moto.endpoint();
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
    ];
    let url = format!("s3://{}/team/aurora", moto.bucket());

    let a = store();
    let (run_a, _) = json_ok(&a, &["run", "m.toml", "--remote", &url, "--remote-upload"], &env);
    expect_statuses(&run_a, &all_with("executed"));
    let b = store();
    let (run_b, _) = json_ok(&b, &["run", "m.toml", "--remote", &url], &env);
    expect_statuses(&run_b, &all_with("downloaded"));
    assert_eq!(outputs(&run_b), outputs(&run_a));
    assert_all_artifacts(&b, &run_b);
    let (pushed, _) = json_ok(&b, &["push", "m.toml", "--remote", &url], &env);
    assert!(pushed["nodes"].as_array().unwrap().iter().all(|n| n["objects"] == 0), "{pushed:#}");

    // A bucket that does not exist would answer every lookup "not found", like a miss: it is
    // listed once first, and the run stops at the first node instead of executing everything.
    let c = store();
    let missing = "s3://no-such-bucket/x";
    let out = aurora(&c, &["run", "m.toml", "--remote", missing, "--json"], &env);
    assert_code(&out, 1, "a bucket that does not exist");
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(IDS.iter().all(|id| field(&doc, id, "status") != "executed"), "{doc:#}");
    let err = stderr(&out);
    assert!(err.contains("s3://no-such-bucket/x") && err.contains("cannot be listed"), "{err}");
    assert!(err.contains("NoSuchBucket"), "{err}");
}

//! End-to-end tests of the `aurora` CLI: each test builds an isolated project (a temporary git
//! repository with its own `.aurora/` store) and drives the real binary.

mod common;
mod conformance;
mod slurm;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Manifests used by several tests
// ---------------------------------------------------------------------------------------------

/// steps.a lowercases data/raw.txt, steps.b replaces `o` by `0`, steps.c doubles the text.
const CHAIN: &str = r#"#:schema ../schemas/manifest.schema.json
[experiment]
name = "chain"
seed = 1

[steps.a]
plugin = "exec.command"
argv = ["sh", "-c", 'tr A-Z a-z < "$AURORA_IN_RAW" > "$AURORA_OUT/a.txt"']
inputs = { raw = "file:data/raw.txt" }

[steps.b]
plugin = "exec.command"
argv = ["sh", "-c", 'sed s/o/0/g < "$AURORA_IN_A/a.txt" > "$AURORA_OUT/b.txt"']
inputs = { a = "steps.a" }

[steps.c]
plugin = "exec.command"
argv = ["sh", "-c", 'cat "$AURORA_IN_B/b.txt" "$AURORA_IN_B/b.txt" > "$AURORA_OUT/c.txt"']
inputs = { b = "steps.b" }
"#;

/// What CHAIN's steps compute, derived here independently of aurora.
fn chain_expected(raw: &str) -> [(String, String); 3] {
    let a = raw.to_lowercase();
    let b = a.replace('o', "0");
    let c = format!("{b}{b}");
    [("a.txt".into(), a), ("b.txt".into(), b), ("c.txt".into(), c)]
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

fn statuses(doc: &Value) -> Vec<(String, String)> {
    nodes(doc)
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_string(), n["status"].as_str().unwrap().to_string()))
        .collect()
}

fn expect_statuses(doc: &Value, expected: &[(&str, &str)]) {
    let want: Vec<(String, String)> = expected.iter().map(|(i, s)| (i.to_string(), s.to_string())).collect();
    assert_eq!(statuses(doc), want, "statuses in {doc:#}");
}

/// Checks a node's artifact: its cas directory, its action record and its one output file.
fn assert_artifact(p: &Project, doc: &Value, id: &str, file: &str, contents: &str) {
    let key = field(doc, id, "key");
    let artifact = field(doc, id, "artifact");
    assert!(is_hex64(&key) && is_hex64(&artifact), "{id}: key {key} / artifact {artifact}");
    let dir = p.artifact_dir(&artifact);
    assert_eq!(fs::read_to_string(dir.join(file)).unwrap_or_default(), contents, "{id}: {file} in {}", dir.display());
    let meta: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("ARTIFACT.json")).expect("ARTIFACT.json")).unwrap();
    assert_eq!(meta["digest"], artifact.as_str());
    assert_eq!(meta["node_id"], id);
    let action: Value = serde_json::from_str(&fs::read_to_string(p.action_path(&key)).expect("action record")).unwrap();
    assert_eq!(action["artifact"], artifact.as_str(), "{id}: the action record points at the artifact");
    assert_eq!(action["key"], key.as_str());
}

// ---------------------------------------------------------------------------------------------
// 1. Caching, early cutoff and the reasons `aurora plan` gives
// ---------------------------------------------------------------------------------------------

#[test]
fn chain_caches_cuts_off_early_and_explains_why() {
    let p = Project::new();
    let raw = "Hello World\nFoo Bar\n";
    p.write("data/raw.txt", raw);
    p.write("manifest.toml", CHAIN);
    let ids = ["steps/a", "steps/b", "steps/c"];

    // Before anything ran: the first node is new, the others wait on their input.
    let plan0 = p.json(&["plan", "manifest.toml", "--json"]);
    expect_statuses(&plan0, &[("steps/a", "pending"), ("steps/b", "pending"), ("steps/c", "pending")]);
    assert_eq!(node(&plan0, "steps/a")["reason"], "new");
    assert_eq!(node(&plan0, "steps/b")["reason"], "waits on steps/a");
    assert_eq!(node(&plan0, "steps/c")["reason"], "waits on steps/b");
    assert!(node(&plan0, "steps/b")["key"].is_null(), "a key is unknown while its input is pending");

    // First run: everything executes.
    let run1 = p.json(&["run", "manifest.toml", "--json"]);
    expect_statuses(&run1, &[("steps/a", "executed"), ("steps/b", "executed"), ("steps/c", "executed")]);
    assert_eq!(run1["manifest_digest"].as_str().unwrap(), p.digest(&["manifest.toml"]));
    assert!(run1["profile"].is_null());
    assert!(run1["run_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(field(&run1, "steps/a", "key"), field(&plan0, "steps/a", "key"), "plan and run agree on the key");
    for n in nodes(&run1) {
        assert_eq!(n["plugin"], "exec.command");
    }
    let keys1: Vec<String> = ids.iter().map(|id| field(&run1, id, "key")).collect();
    let mut distinct = keys1.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "distinct keys: {keys1:?}");
    for (id, (file, contents)) in ids.iter().zip(chain_expected(raw)) {
        assert_artifact(&p, &run1, id, &file, &contents);
    }

    // Second run: nothing to do, same keys and artifacts.
    let run2 = p.json(&["run", "manifest.toml", "--json"]);
    expect_statuses(&run2, &[("steps/a", "cached"), ("steps/b", "cached"), ("steps/c", "cached")]);
    for id in ids {
        assert_eq!(field(&run2, id, "key"), field(&run1, id, "key"));
        assert_eq!(field(&run2, id, "artifact"), field(&run1, id, "artifact"));
        assert!(node(&run2, id).get("ms").is_none(), "a cached node reports no duration");
    }
    assert_ne!(run2["run_id"], run1["run_id"]);

    // Same bytes by another command: step a re-executes, b and c stay cached (early cutoff).
    p.write("manifest.toml", &CHAIN.replace("tr A-Z a-z", r#"tr "[:upper:]" "[:lower:]""#));
    let plan3 = p.json(&["plan", "manifest.toml", "--json"]);
    expect_statuses(&plan3, &[("steps/a", "pending"), ("steps/b", "pending"), ("steps/c", "pending")]);
    assert_eq!(node(&plan3, "steps/a")["reason"], "config changed (argv)");
    assert_eq!(node(&plan3, "steps/b")["reason"], "waits on steps/a");
    assert_eq!(node(&plan3, "steps/c")["reason"], "waits on steps/b");
    let plan3_text = p.run_ok(&["plan", "manifest.toml"]);
    insta::assert_snapshot!("chain_plan_after_argv_edit", p.redact(&plan3_text));

    let run3 = p.json(&["run", "manifest.toml", "--json"]);
    expect_statuses(&run3, &[("steps/a", "executed"), ("steps/b", "cached"), ("steps/c", "cached")]);
    assert_ne!(field(&run3, "steps/a", "key"), field(&run1, "steps/a", "key"));
    assert_eq!(field(&run3, "steps/a", "artifact"), field(&run1, "steps/a", "artifact"), "same bytes, same artifact");
    for id in ["steps/b", "steps/c"] {
        assert_eq!(field(&run3, id, "key"), field(&run1, id, "key"), "{id}: inputs enter keys by content");
    }

    // New input bytes: everything executes again.
    let raw2 = "Another Input\nWith Other Words\n";
    p.write("data/raw.txt", raw2);
    let plan4 = p.json(&["plan", "manifest.toml", "--json"]);
    assert_eq!(node(&plan4, "steps/a")["reason"], "input changed (raw)");
    assert_eq!(node(&plan4, "steps/b")["reason"], "waits on steps/a");
    let run4 = p.json(&["run", "manifest.toml", "--json"]);
    expect_statuses(&run4, &[("steps/a", "executed"), ("steps/b", "executed"), ("steps/c", "executed")]);
    for (id, (file, contents)) in ids.iter().zip(chain_expected(raw2)) {
        assert_ne!(field(&run4, id, "key"), field(&run3, id, "key"));
        assert_artifact(&p, &run4, id, &file, &contents);
    }
    // The manifest did not change between run 3 and run 4, only the data.
    assert_eq!(run4["manifest_digest"], run3["manifest_digest"]);
}

// ---------------------------------------------------------------------------------------------
// 2. Outputs flow into consumers; the environment is cleaned
// ---------------------------------------------------------------------------------------------

#[test]
fn outputs_flow_to_consumers_and_the_environment_is_cleaned() {
    let p = Project::new();
    p.write("data/raw.txt", "raw bytes\n");
    p.write(
        "manifest.toml",
        r#"[experiment]
name = "flow"
seed = 1

[steps.x]
plugin = "exec.command"
argv = ["sh", "-c", 'mkdir -p "$AURORA_OUT/sub" && printf "from x\n" > "$AURORA_OUT/f.txt" && cp "$AURORA_IN_RAW" "$AURORA_OUT/sub/raw.txt"']
inputs = { raw = "file:data/raw.txt" }

[steps.y]
plugin = "exec.command"
argv = ["sh", "-c", '''
cat "$AURORA_IN_X/f.txt" "$AURORA_IN_X/sub/raw.txt" > "$AURORA_OUT/got.txt"
printf "SECRET=%s\nDECLARED=%s\nHOME=%s\n" "${SECRET-unset}" "${DECLARED-unset}" "${HOME-unset}" > "$AURORA_OUT/vars.txt"
env | cut -d= -f1 | sort > "$AURORA_OUT/names.txt"
printf "%s" "$PATH" > "$AURORA_OUT/path.txt"
printf "%s" "$AURORA_IN_X" > "$AURORA_OUT/in_x.txt"
''']
inputs = { x = "steps.x" }
env = { DECLARED = "declared value" }
"#,
    );
    let mut cmd = p.command(&["run", "manifest.toml", "--json"]);
    cmd.env("SECRET", "1").env("HOME", "/nonexistent-home");
    let out = output_within(cmd, TIMEOUT);
    assert_code(&out, 0, "run");
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    expect_statuses(&doc, &[("steps/x", "executed"), ("steps/y", "executed")]);

    let x = p.artifact_dir(&field(&doc, "steps/x", "artifact"));
    let y = p.artifact_dir(&field(&doc, "steps/y", "artifact"));
    let read = |name: &str| fs::read_to_string(y.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(read("got.txt"), "from x\nraw bytes\n", "the consumer read the producer's outputs");
    assert_eq!(read("in_x.txt"), x.display().to_string(), "AURORA_IN_X is the producer's artifact directory");
    assert_eq!(read("vars.txt"), "SECRET=unset\nDECLARED=declared value\nHOME=unset\n");
    assert_eq!(read("path.txt"), std::env::var("PATH").unwrap(), "PATH is passed through");
    // The whole environment: PATH, the declared env, the AURORA_* variables (plus PWD, which the
    // shell exports itself).
    let names: Vec<String> =
        read("names.txt").lines().filter(|n| !["PWD", "OLDPWD", "SHLVL", "_"].contains(n)).map(String::from).collect();
    assert_eq!(names, ["AURORA_IN_X", "AURORA_NODE", "AURORA_OUT", "AURORA_SEED", "DECLARED", "PATH"]);
}

// ---------------------------------------------------------------------------------------------
// 3. A failing command
// ---------------------------------------------------------------------------------------------

const FAILING: &str = r#"[experiment]
name = "failing"
seed = 1

[steps.a]
plugin = "exec.command"
argv = ["sh", "-c", 'echo "out line"; echo "boom: disk on fire" >&2; exit 3']

[steps.b]
plugin = "exec.command"
argv = ["sh", "-c", 'cp "$AURORA_IN_A/a.txt" "$AURORA_OUT/b.txt"']
inputs = { a = "steps.a" }

[steps.c]
plugin = "exec.command"
argv = ["sh", "-c", 'cp "$AURORA_IN_B/b.txt" "$AURORA_OUT/c.txt"']
inputs = { b = "steps.b" }
"#;

#[test]
fn a_failing_command_publishes_nothing_and_can_be_fixed() {
    let p = Project::new();
    p.write("manifest.toml", FAILING);
    let plan = p.json(&["plan", "manifest.toml", "--json"]);
    let key = field(&plan, "steps/a", "key");

    let out = p.run(&["run", "manifest.toml"]);
    assert_code(&out, 1, "run with a failing step");
    let err = stderr(&out);
    assert!(err.contains("error: node steps/a failed"), "{err}");
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(err.contains("boom: disk on fire"), "the command's own stderr is in the log tail: {err}");
    insta::assert_snapshot!("failing_run_stderr", p.redact(&err));
    insta::assert_snapshot!("failing_run_stdout", p.redact(&stdout(&out)));

    // Nothing was published for it.
    assert!(!p.action_path(&key).exists(), "no action record for the failed key");
    assert!(!p.artifact_node_keys().contains(&key), "no artifact produced by the failed key");
    let verify = p.run(&["verify", "--store"]);
    assert_code(&verify, 0, "verify --store after a failure");
    assert!(stdout(&verify).ends_with("ok\n"), "{}", stdout(&verify));

    // JSON: the failure, and what did not run because of it.
    let out = p.run(&["run", "manifest.toml", "--json"]);
    assert_code(&out, 1, "run --json with a failing step");
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    expect_statuses(&doc, &[("steps/a", "failed"), ("steps/b", "pending"), ("steps/c", "pending")]);
    assert_eq!(field(&doc, "steps/a", "key"), key);
    assert!(node(&doc, "steps/a")["artifact"].is_null());
    assert!(field(&doc, "steps/a", "error").contains("boom: disk on fire"));
    assert_eq!(node(&doc, "steps/b")["reason"], "not run: an earlier node failed");

    // Fixed: the whole chain runs.
    p.write("manifest.toml", &FAILING.replace("exit 3", r#"echo fixed > "$AURORA_OUT/a.txt""#));
    let doc = p.json(&["run", "manifest.toml", "--json"]);
    expect_statuses(&doc, &[("steps/a", "executed"), ("steps/b", "executed"), ("steps/c", "executed")]);
    assert_artifact(&p, &doc, "steps/c", "c.txt", "fixed\n");
    assert_code(&p.run(&["verify", "--store"]), 0, "verify --store after the fix");
}

#[test]
fn plan_after_a_failure_does_not_blame_gc() {
    let p = Project::new();
    p.write("manifest.toml", FAILING);
    assert_code(&p.run(&["run", "manifest.toml"]), 1, "run with a failing step");
    let plan = p.json(&["plan", "manifest.toml", "--json"]);
    let reason = field(&plan, "steps/a", "reason");
    // It never produced an artifact: nothing was removed. Expected something like "failed in the
    // last run" (or "new"), not an accusation of gc.
    assert!(!reason.contains("removed by gc"), "misleading reason: {reason}");
}

// ---------------------------------------------------------------------------------------------
// 4 and 7. SIGKILL in the middle of a step; a lock left by a dead process
// ---------------------------------------------------------------------------------------------

/// steps.a writes partial output, then (unless `$SYNC/release` exists) records its pid, says
/// "ready" through the FIFO `$SYNC/ready` and blocks (exec'ing `sleep`, so the pid is the direct
/// child of aurora). With the release marker it finishes. steps.b consumes a.
fn blocking_manifest(sync: &str) -> String {
    format!(
        r#"[experiment]
name = "blocking"
seed = 1

[steps.a]
plugin = "exec.command"
argv = ["sh", "-c", '''
echo partial > "$AURORA_OUT/partial.txt"
if [ -e "$SYNC/release" ]; then echo done > "$AURORA_OUT/final.txt"; exit 0; fi
echo crashed > "$AURORA_OUT/crash-only.txt"
echo $$ > "$SYNC/pid"
echo ready > "$SYNC/ready"
exec sleep 1000
''']
env = {{ SYNC = "{sync}" }}

[steps.b]
plugin = "exec.command"
argv = ["sh", "-c", 'cat "$AURORA_IN_A/final.txt" > "$AURORA_OUT/b.txt"']
inputs = {{ a = "steps.a" }}
"#
    )
}

/// Starts `aurora run` on the blocking manifest and returns once step a is blocked (with the pid
/// of its command).
fn start_blocked_run(p: &Project) -> (std::process::Child, u32) {
    let fifo = p.mkfifo("sync/ready");
    let mut cmd = p.command(&["run", "manifest.toml"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let child = cmd.spawn().expect("spawn aurora run");
    let said = read_fifo_within(&fifo, TIMEOUT);
    assert_eq!(said, "ready\n");
    let pid: u32 = p.read("sync/pid").trim().parse().expect("pid file");
    (child, pid)
}

#[test]
fn sigkill_during_a_step_leaves_a_valid_store_and_the_rerun_completes() {
    let p = Project::new();
    let sync = p.path("sync");
    p.write("manifest.toml", &blocking_manifest(&sync.display().to_string()));
    let key = field(&p.json(&["plan", "manifest.toml", "--json"]), "steps/a", "key");

    let (mut aurora, command_pid) = start_blocked_run(&p);
    // The command is running: its partial output is in the scratch directory.
    let scratch = p.store().join("work").join(&key).join("out");
    assert_eq!(fs::read_to_string(scratch.join("partial.txt")).unwrap(), "partial\n");
    assert!(!process_is_dead(command_pid));

    aurora.kill().expect("SIGKILL aurora");
    let status = aurora.wait().expect("reap aurora");
    assert_eq!(status.signal(), Some(9), "aurora died of SIGKILL");
    // PR_SET_PDEATHSIG: the command dies with aurora.
    assert!(wait_until_dead(command_pid, Duration::from_secs(10)), "the command (pid {command_pid}) outlived aurora");

    // Nothing was published; the store is valid.
    assert!(!p.action_path(&key).exists(), "no action record for the interrupted node");
    assert!(p.artifact_node_keys().is_empty(), "no artifact in cas/: {:?}", p.artifact_node_keys());
    let verify = p.run(&["verify", "--store"]);
    assert_code(&verify, 0, "verify --store after SIGKILL");
    insta::assert_snapshot!("verify_store_after_sigkill", p.redact(&stdout(&verify)));

    // The rerun (told to finish this time) completes, without the crashed attempt's leftovers.
    p.write("sync/release", "");
    let doc = p.json(&["run", "manifest.toml", "--json"]);
    expect_statuses(&doc, &[("steps/a", "executed"), ("steps/b", "executed")]);
    assert_eq!(field(&doc, "steps/a", "key"), key);
    let artifact = p.artifact_dir(&field(&doc, "steps/a", "artifact"));
    let mut files: Vec<String> =
        fs::read_dir(&artifact).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["ARTIFACT.json", "ARTIFACT.log", "final.txt", "partial.txt"]);
    assert_artifact(&p, &doc, "steps/b", "b.txt", "done\n");
    let verify = p.run(&["verify", "--store"]);
    assert_code(&verify, 0, "verify --store after the rerun");
    assert!(!stdout(&verify).contains("unfinished work"), "{}", stdout(&verify));
}

#[test]
fn sigkill_of_aurora_also_kills_what_the_command_started() {
    let p = Project::new();
    let sync = p.path("sync");
    let fifo = p.mkfifo("sync/ready");
    p.write(
        "manifest.toml",
        &format!(
            r#"[experiment]
name = "grandchild"
seed = 1

[steps.a]
plugin = "exec.command"
argv = ["sh", "-c", 'sleep 1000 & echo $! > "$SYNC/bg.pid"; echo ready > "$SYNC/ready"; wait']
env = {{ SYNC = "{}" }}
"#,
            sync.display()
        ),
    );
    let mut cmd = p.command(&["run", "manifest.toml"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut aurora = cmd.spawn().unwrap();
    assert_eq!(read_fifo_within(&fifo, TIMEOUT), "ready\n");
    let bg: u32 = p.read("sync/bg.pid").trim().parse().unwrap();
    aurora.kill().unwrap();
    aurora.wait().unwrap();
    let died = wait_until_dead(bg, Duration::from_secs(5));
    if !died {
        kill9(bg); // do not leave it behind
    }
    // A survivor can keep writing into work/<key>/out, which the next attempt publishes.
    assert!(died, "the background process {bg} of the command outlived aurora");
}

#[test]
fn a_lock_left_by_a_killed_run_is_taken_over() {
    let p = Project::new();
    let sync = p.path("sync");
    p.write("manifest.toml", &blocking_manifest(&sync.display().to_string()));
    let key = field(&p.json(&["plan", "manifest.toml", "--json"]), "steps/a", "key");

    let (mut aurora, command_pid) = start_blocked_run(&p);
    let lock = p.store().join("locks").join(format!("{key}.lock"));
    let holder = fs::read_to_string(&lock).expect("the node's lock file");
    assert_eq!(holder, format!("pid {} running steps/a", aurora.id()), "the lock names its holder");
    aurora.kill().unwrap();
    aurora.wait().unwrap();
    assert!(wait_until_dead(command_pid, Duration::from_secs(10)));
    assert!(lock.exists(), "the dead run's lock file is still there");

    p.write("sync/release", "");
    let started = Instant::now();
    let out = p.run(&["run", "manifest.toml", "--json"]); // fails the test after 60 s
    assert!(started.elapsed() < TIMEOUT);
    assert_code(&out, 0, "run after the holder died");
    assert!(!stderr(&out).contains("waiting"), "a dead holder is not waited for: {}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    expect_statuses(&doc, &[("steps/a", "executed"), ("steps/b", "executed")]);
    assert_eq!(field(&doc, "steps/a", "key"), key);
}

// ---------------------------------------------------------------------------------------------
// 5. Two concurrent runs on one store
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrent_runs_execute_each_node_exactly_once() {
    let p = Project::new();
    let sync = p.path("sync");
    let log = p.path("steps.log"); // outside the store
    let ready = p.mkfifo("sync/ready");
    let go = p.mkfifo("sync/go");
    p.write(
        "manifest.toml",
        &format!(
            r#"[experiment]
name = "concurrent"
seed = 1

[steps.a]
plugin = "exec.command"
argv = ["sh", "-c", 'echo ready > "$SYNC/ready"; read line < "$SYNC/go"; echo steps/a >> "$LOG"; echo a > "$AURORA_OUT/a.txt"']
env = {{ SYNC = "{sync}", LOG = "{log}" }}

[steps.b]
plugin = "exec.command"
argv = ["sh", "-c", 'echo steps/b >> "$LOG"; cat "$AURORA_IN_A/a.txt" > "$AURORA_OUT/b.txt"; echo b >> "$AURORA_OUT/b.txt"']
inputs = {{ a = "steps.a" }}
env = {{ LOG = "{log}" }}

[steps.c]
plugin = "exec.command"
argv = ["sh", "-c", 'echo steps/c >> "$LOG"; cat "$AURORA_IN_B/b.txt" > "$AURORA_OUT/c.txt"; echo c >> "$AURORA_OUT/c.txt"']
inputs = {{ b = "steps.b" }}
env = {{ LOG = "{log}" }}
"#,
            sync = sync.display(),
            log = log.display()
        ),
    );

    // Run 1 starts and blocks inside steps/a.
    let mut cmd1 = p.command(&["run", "manifest.toml", "--json"]);
    cmd1.stdout(Stdio::piped()).stderr(Stdio::piped());
    let run1 = cmd1.spawn().unwrap();
    let run1_pid = run1.id();
    assert_eq!(read_fifo_within(&ready, TIMEOUT), "ready\n");

    // Run 2 starts and reaches steps/a's lock, held by run 1.
    let mut cmd2 = p.command(&["run", "manifest.toml"]);
    cmd2.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut run2 = cmd2.spawn().unwrap();
    let (waiting, run2_stderr) = watch_lines(run2.stderr.take().unwrap(), "waiting".to_string());
    let line = waiting.recv_timeout(TIMEOUT).expect("run 2 waits for the lock of steps/a");
    assert_eq!(line.trim(), format!("waiting   steps/a: locked by pid {run1_pid} running steps/a"));

    // Both are now running: let steps/a finish.
    write_fifo_within(&go, "go\n", TIMEOUT);
    let out1 = wait_output_within(run1, TIMEOUT);
    let out2 = wait_output_within(run2, TIMEOUT);
    let err2 = run2_stderr.join().unwrap();
    assert_code(&out1, 0, "run 1");
    assert_eq!(out2.status.code(), Some(0), "run 2: {}\n{err2}", stdout(&out2));

    // Each step ran exactly once, across both runs.
    let mut lines: Vec<String> = fs::read_to_string(&log).unwrap().lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, ["steps/a", "steps/b", "steps/c"]);

    let doc1: Value = serde_json::from_str(&stdout(&out1)).unwrap();
    let run2_id = stdout(&out2)
        .trim_end()
        .rsplit_once("(run ")
        .map(|(_, id)| id.trim_end_matches(')').to_string())
        .expect("run id");
    let doc2 = p.json(&["runs", "show", &run2_id, "--json"]);
    for id in ["steps/a", "steps/b", "steps/c"] {
        let mut pair = [field(&doc1, id, "status"), field(&doc2, id, "status")];
        pair.sort();
        assert_eq!(pair, ["cached", "executed"], "{id}: executed in exactly one run");
        assert_eq!(field(&doc1, id, "key"), field(&doc2, id, "key"));
        assert_eq!(field(&doc1, id, "artifact"), field(&doc2, id, "artifact"));
    }
    assert_eq!(field(&doc1, "steps/a", "status"), "executed");
    assert_artifact(&p, &doc1, "steps/c", "c.txt", "a\nb\nc\n");
    assert_code(&p.run(&["verify", "--store"]), 0, "verify --store");
}

// ---------------------------------------------------------------------------------------------
// 6. Bad input: located errors with a fix, exit code 2
// ---------------------------------------------------------------------------------------------

const HEADER: &str = "[experiment]\nname = \"bad\"\nseed = 1\n\n";

/// Writes `m.toml`, runs `aurora ARGS`, asserts exit 2 and nothing on stdout, returns stderr.
fn bad(p: &Project, manifest: &str, args: &[&str]) -> String {
    p.write("m.toml", manifest);
    let out = p.run(args);
    assert_code(&out, 2, &format!("aurora {}", args.join(" ")));
    assert_eq!(stdout(&out), "", "nothing on stdout for a bad manifest");
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("= help: "), "every error says how to fix it: {err}");
    err
}

/// The `--> FILE:LINE:COL` of where `needle` starts in `text`.
fn located(file: &str, text: &str, needle: &str) -> String {
    let (line, col) = line_col_of(text, needle);
    format!("--> {file}:{line}:{col}\n")
}

#[test]
fn bad_launcher() {
    let p = Project::new();
    p.write("data/raw.txt", "x\n");
    // Outside an allocation: `slurm` is refused before any work, as is an unknown name.
    let mut cmd = p.command(&["run", "m.toml", "--launcher", "slurm"]);
    cmd.env_remove("SLURM_JOB_ID");
    p.write("m.toml", CHAIN);
    let out = output_within(cmd, TIMEOUT);
    assert_code(&out, 2, "aurora run --launcher slurm outside an allocation");
    let slurm = stderr(&out);
    let unknown = bad(&p, CHAIN, &["run", "m.toml", "--launcher", "mpirun"]);
    assert!(p.store_files().iter().all(|f| !f.starts_with("cas/")), "no work was done");
    insta::assert_snapshot!("bad_launcher", format!("{}\n{}", p.redact(&slurm), p.redact(&unknown)));
}

/// `--cpus` is a number of cores, at least one: anything else is refused before any work.
#[test]
fn bad_cpus() {
    let p = Project::new();
    p.write("data/raw.txt", "x\n");
    p.write("m.toml", CHAIN);
    let mut errors = Vec::new();
    for value in ["0", "two"] {
        let out = p.run(&["run", "m.toml", "--cpus", value]);
        assert_code(&out, 2, &format!("aurora run --cpus {value}"));
        let err = stderr(&out);
        assert!(err.contains(&format!("invalid value '{value}' for '--cpus <N>'")), "{err}");
        errors.push(p.redact(&err));
    }
    assert!(p.store_files().iter().all(|f| !f.starts_with("cas/")), "no work was done");
    insta::assert_snapshot!("bad_cpus", errors.join("\n"));
}

#[test]
fn bad_unknown_plugin() {
    let p = Project::new();
    let m = format!("{HEADER}[steps.a]\nplugin = \"exec.comand\"\nargv = [\"true\"]\n");
    let err = bad(&p, &m, &["plan", "m.toml"]);
    assert!(err.contains(&located("m.toml", &m, "\"exec.comand\"")), "{err}");
    assert!(err.contains("did you mean `exec.command`?"), "{err}");
    insta::assert_snapshot!("bad_unknown_plugin", p.redact(&err));
}

#[test]
fn bad_unknown_key() {
    let p = Project::new();
    let m = format!("{HEADER}[steps.a]\nplugin = \"exec.command\"\nargv = [\"true\"]\ntimeout = 5\n");
    let err = bad(&p, &m, &["plan", "m.toml"]);
    assert!(err.contains(&located("m.toml", &m, "timeout = 5")), "{err}");
    assert!(err.contains("did you mean `timeout_s`?"), "{err}");
    insta::assert_snapshot!("bad_unknown_key", p.redact(&err));
}

#[test]
fn bad_wrong_type() {
    let p = Project::new();
    let m = format!("{HEADER}[steps.a]\nplugin = \"exec.command\"\nargv = \"x\"\n");
    let err = bad(&p, &m, &["plan", "m.toml"]);
    assert!(err.contains(&located("m.toml", &m, "\"x\"")), "{err}");
    assert!(err.contains("array"), "{err}");
    insta::assert_snapshot!("bad_wrong_type", p.redact(&err));
}

#[test]
fn bad_missing_file_input() {
    let p = Project::new();
    let m = format!(
        "{HEADER}[steps.a]\nplugin = \"exec.command\"\nargv = [\"true\"]\ninputs = {{ raw = \"file:data/missing.txt\" }}\n"
    );
    let err = bad(&p, &m, &["run", "m.toml"]);
    assert!(err.contains(&located("m.toml", &m, "\"file:data/missing.txt\"")), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    insta::assert_snapshot!("bad_missing_file_input", p.redact(&err));
    assert!(p.store_files().iter().all(|f| !f.starts_with("runs/")), "nothing ran, no run record");
}

#[test]
fn bad_extends_cycle() {
    let p = Project::new();
    let one = "extends = \"two.toml\"\n\n[experiment]\nname = \"one\"\nseed = 1\n";
    let two = "# the other half of the cycle\nextends = \"one.toml\"\n";
    p.write("cfg/one.toml", one);
    p.write("cfg/two.toml", two);
    let out = p.run(&["plan", "cfg/one.toml"]);
    assert_code(&out, 2, "plan with an extends cycle");
    let err = stderr(&out);
    assert!(err.contains("cfg/one.toml -> cfg/two.toml -> cfg/one.toml"), "{err}");
    assert!(err.contains(&located("cfg/two.toml", two, "\"one.toml\"")), "{err}");
    assert!(err.contains("= help: "), "{err}");
    insta::assert_snapshot!("bad_extends_cycle", p.redact(&err));
}

#[test]
fn bad_dag_cycle() {
    let p = Project::new();
    let m = format!(
        "{HEADER}[steps.a]\nplugin = \"exec.command\"\nargv = [\"true\"]\ninputs = {{ b = \"steps.b\" }}\n\n\
         [steps.b]\nplugin = \"exec.command\"\nargv = [\"true\"]\ninputs = {{ a = \"steps.a\" }}\n"
    );
    let err = bad(&p, &m, &["plan", "m.toml"]);
    assert!(err.contains("cycle"), "{err}");
    assert!(err.contains("steps/a") && err.contains("steps/b"), "{err}");
    assert!(err.contains("--> m.toml:"), "{err}");
    insta::assert_snapshot!("bad_dag_cycle", p.redact(&err));
}

/// Node ids are `SECTION/NAME` and both parts may only hold letters, digits, `_` and `-`, so two
/// entries cannot plan to the same id; the only way to write the same id twice is the same table
/// twice, which TOML itself rejects. That is what this checks.
#[test]
fn bad_duplicate_entry() {
    let p = Project::new();
    let entry = "[steps.a]\nplugin = \"exec.command\"\nargv = [\"true\"]\n";
    let m = format!("{HEADER}{entry}\n{entry}");
    let err = bad(&p, &m, &["plan", "m.toml"]);
    let second = m.rfind("[steps.a]").unwrap();
    let line = m[..second].matches('\n').count() + 1;
    assert!(err.contains(&format!("--> m.toml:{line}:")), "{err}");
    assert!(err.contains("duplicate"), "{err}");
    insta::assert_snapshot!("bad_duplicate_entry", p.redact(&err));
}

#[test]
fn bad_set_on_a_missing_key() {
    let p = Project::new();
    let m = format!("{HEADER}[steps.a]\nplugin = \"exec.command\"\nargv = [\"true\"]\ntimeout_s = 5\n");
    let err = bad(&p, &m, &["digest", "m.toml", "--set", "steps.a.timeout=3"]);
    assert!(err.contains("--> --set:1:1"), "{err}");
    assert!(err.contains("has no key `timeout`"), "{err}");
    assert!(err.contains("did you mean `timeout_s`?"), "{err}");
    insta::assert_snapshot!("bad_set_missing_key", p.redact(&err));
}

#[test]
fn bad_profile_that_does_not_exist() {
    let p = Project::new();
    let m = format!(
        "{HEADER}[steps.a]\nplugin = \"exec.command\"\nargv = [\"true\"]\n\n[profiles.local]\nsteps.a.argv = [\"false\"]\n"
    );
    let err = bad(&p, &m, &["plan", "m.toml", "--profile", "locl"]);
    assert!(err.contains("no profile named `locl`"), "{err}");
    assert!(err.contains("did you mean `local`?"), "{err}");
    insta::assert_snapshot!("bad_profile", p.redact(&err));
}

#[test]
fn bad_toml_syntax() {
    let p = Project::new();
    let m = format!("{HEADER}[steps.a]\nplugin = \"exec.command\"\nargv = [\"sh\" \"-c\"]\n");
    let err = bad(&p, &m, &["plan", "m.toml"]);
    assert!(err.contains("invalid TOML"), "{err}");
    let (line, _) = line_col_of(&m, "argv = [");
    assert!(err.contains(&format!("--> m.toml:{line}:")), "{err}");
    insta::assert_snapshot!("bad_toml_syntax", p.redact(&err));
}

#[test]
fn bad_until_unknown_node() {
    let p = Project::new();
    let m = format!("{HEADER}[steps.clean]\nplugin = \"exec.command\"\nargv = [\"true\"]\n");
    let err = bad(&p, &m, &["run", "m.toml", "--until", "steps/claen"]);
    assert!(err.contains("no node `steps/claen`"), "{err}");
    assert!(err.contains("did you mean `steps/clean`?"), "{err}");
    insta::assert_snapshot!("bad_until_unknown_node", p.redact(&err));
    assert!(p.store_files().iter().all(|f| !f.starts_with("runs/")), "nothing ran, no run record");
}

#[test]
fn store_that_is_a_regular_file() {
    let p = Project::new();
    p.write("manifest.toml", CHAIN);
    p.write("data/raw.txt", "x\n");
    let not_a_dir = p.write("not-a-store", "I am a file\n");
    for args in [&["run", "manifest.toml"][..], &["verify", "--store"][..]] {
        let mut cmd = p.command(args);
        cmd.env("AURORA_STORE", &not_a_dir);
        let out = output_within(cmd, TIMEOUT);
        let code = out.status.code();
        assert!(matches!(code, Some(1 | 2)), "aurora {args:?}: {code:?}");
        let err = stderr(&out);
        assert!(err.contains(&not_a_dir.display().to_string()), "names the store: {err}");
        assert!(err.contains("not a directory"), "{err}");
        insta::assert_snapshot!(format!("store_is_a_file_{}", args[0]), p.redact(&err));
    }
    assert_eq!(fs::read_to_string(&not_a_dir).unwrap(), "I am a file\n", "left untouched");
    assert!(!p.store().exists(), "no default store created instead");
}

// ---------------------------------------------------------------------------------------------
// 8. The manifest digest
// ---------------------------------------------------------------------------------------------

const DIGEST_BASE: &str = r#"[experiment]
name = "digest"
seed = 7

[steps.a]
plugin = "exec.command"
argv = ["sh", "-c", "echo hi"]
env = { X = "1", Y = "keep" }
timeout_s = 30

[profiles.local]
steps.a.env.X = "2"
experiment.seed = 8
"#;

/// DIGEST_BASE reformatted: tables and keys reordered, other quoting and spacing, comments.
const DIGEST_REFORMATTED: &str = r#"# A comment that changes nothing.
[profiles.local.steps.a.env]
X = "2"

[profiles.local.experiment]
seed = 8

[steps.a]   # trailing comment
timeout_s = 30
env.Y = 'keep'
env.X = '1'
argv = [
  'sh',   # program
  "-c",
  "echo hi",
]
plugin = 'exec.command'

[experiment]
seed = 7
name = "digest"
"#;

/// What `--profile local` on DIGEST_BASE resolves to, written out in full.
const DIGEST_LOCAL_IN_FULL: &str = r#"[experiment]
name = "digest"
seed = 8

[steps.a]
plugin = "exec.command"
argv = ["sh", "-c", "echo hi"]
env = { X = "2", Y = "keep" }
timeout_s = 30
"#;

#[test]
fn digest_is_canonical() {
    let p = Project::new();
    p.write("base.toml", DIGEST_BASE);
    p.write("reformatted.toml", DIGEST_REFORMATTED);
    p.write("local.toml", DIGEST_LOCAL_IN_FULL);
    p.write("seed9.toml", &DIGEST_BASE.replace("seed = 7", "seed = 9"));
    p.write("argv.toml", &DIGEST_BASE.replace("echo hi", "echo ho"));
    p.write("default_local.toml", &DIGEST_BASE.replace("seed = 7\n", "seed = 7\ndefault_profile = \"local\"\n"));
    p.write("no_profiles.toml", DIGEST_BASE.split("[profiles.local]").next().unwrap());

    let base = p.digest(&["base.toml"]);
    assert_eq!(p.digest(&["base.toml"]), base, "stable");
    assert_eq!(p.digest(&["reformatted.toml"]), base, "formatting, order and comments do not count");
    assert_eq!(p.digest(&["no_profiles.toml"]), base, "an unused profile is not part of the resolved manifest");
    assert_ne!(p.digest(&["seed9.toml"]), base, "a value change changes it");
    assert_ne!(p.digest(&["argv.toml"]), base, "a value change changes it");

    // --set is a value change, the same as writing it in the file.
    let set = p.digest(&["base.toml", "--set", "experiment.seed=9"]);
    assert_ne!(set, base);
    assert_eq!(set, p.digest(&["seed9.toml"]));
    assert_eq!(
        p.digest(&["base.toml", "--set", "steps.a.argv=[\"sh\", \"-c\", \"echo ho\"]"]),
        p.digest(&["argv.toml"])
    );

    // --profile deep-merges (env.Y survives, env.X and the seed change).
    let local = p.digest(&["base.toml", "--profile", "local"]);
    assert_ne!(local, base);
    assert_eq!(local, p.digest(&["local.toml"]));
    assert_eq!(p.digest(&["reformatted.toml", "-p", "local"]), local);
    assert_eq!(p.digest(&["default_local.toml"]), local, "experiment.default_profile applies the profile");
    let plan = p.json(&["plan", "base.toml", "--profile", "local", "--json"]);
    assert_eq!(plan["manifest_digest"].as_str().unwrap(), local);
    assert_eq!(plan["profile"], "local");
}

// ---------------------------------------------------------------------------------------------
// 9. extends: file inputs relative to the declaring file; shared nodes reused
// ---------------------------------------------------------------------------------------------

#[test]
fn extends_resolves_paths_per_file_and_reuses_shared_nodes() {
    let p = Project::new();
    let raw = "Base Input\n";
    p.write("data/raw.txt", raw);
    // The base lives in experiments/, so its data path goes up one level.
    p.write("experiments/base.toml", &CHAIN.replace("file:data/raw.txt", "file:../data/raw.txt"));
    p.write("experiments/ablations/extra.txt", "extra bytes\n");
    p.write(
        "experiments/ablations/child.toml",
        r#"extends = "../base.toml"

[experiment]
name = "ablation"

# Same steps a and b as the base; c changes; d is new and reads a file next to this manifest.
[steps.c]
argv = ["sh", "-c", 'cat "$AURORA_IN_B/b.txt" > "$AURORA_OUT/c.txt"']

[steps.d]
plugin = "exec.command"
argv = ["sh", "-c", 'cat "$AURORA_IN_EXTRA" "$AURORA_IN_A/a.txt" > "$AURORA_OUT/d.txt"']
inputs = { extra = "file:extra.txt", a = "steps.a" }
"#,
    );

    let base = p.json(&["run", "experiments/base.toml", "--json"]);
    expect_statuses(&base, &[("steps/a", "executed"), ("steps/b", "executed"), ("steps/c", "executed")]);

    // Planned from another directory: paths are relative to the files, not to the cwd.
    let out = p.run_in("experiments", &["plan", "ablations/child.toml", "--json"]);
    assert_code(&out, 0, "plan the child from experiments/");
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    expect_statuses(
        &plan,
        &[("steps/a", "cached"), ("steps/b", "cached"), ("steps/c", "pending"), ("steps/d", "pending")],
    );
    assert_eq!(node(&plan, "steps/c")["reason"], "config changed (argv)");
    assert_eq!(node(&plan, "steps/d")["reason"], "new");
    for id in ["steps/a", "steps/b"] {
        assert_eq!(field(&plan, id, "key"), field(&base, id, "key"));
    }

    let child = p.json(&["run", "experiments/ablations/child.toml", "--json"]);
    expect_statuses(
        &child,
        &[("steps/a", "cached"), ("steps/b", "cached"), ("steps/c", "executed"), ("steps/d", "executed")],
    );
    let [(_, a), (_, b), _] = chain_expected(raw);
    assert_artifact(&p, &child, "steps/c", "c.txt", &b);
    assert_artifact(&p, &child, "steps/d", "d.txt", &format!("extra bytes\n{a}"));

    // The run record keeps the resolved manifest, with file paths relative to the project root.
    let record = p.json(&["runs", "show", child["run_id"].as_str().unwrap(), "--json"]);
    let steps = &record["manifest"]["resolved"]["steps"];
    assert_eq!(steps["a"]["inputs"]["raw"], "file:data/raw.txt");
    assert_eq!(steps["d"]["inputs"]["extra"], "file:experiments/ablations/extra.txt");
    assert_eq!(record["manifest"]["resolved"]["experiment"]["name"], "ablation");
    assert_eq!(record["manifest"]["resolved"]["experiment"]["seed"], 1, "inherited from the base");
    assert!(record["manifest"]["resolved"].get("extends").is_none());
}

// ---------------------------------------------------------------------------------------------
// 10. runs, plugins, gc, verify
// ---------------------------------------------------------------------------------------------

#[test]
fn runs_list_and_show() {
    let p = Project::new();
    p.write("data/raw.txt", "Runs\n");
    p.write("manifest.toml", CHAIN);
    let r1 = p.json(&["run", "manifest.toml", "--json"]);
    let r2 = p.json(&["run", "manifest.toml", "--json"]);
    let (id1, id2) = (r1["run_id"].as_str().unwrap(), r2["run_id"].as_str().unwrap());

    let list = p.run_ok(&["runs", "list"]);
    assert_eq!(list.lines().count(), 2);
    assert!(
        list.lines().next().unwrap().starts_with(id1) && list.lines().nth(1).unwrap().starts_with(id2),
        "oldest first:\n{list}"
    );
    insta::assert_snapshot!("runs_list", p.redact(&list));

    let summaries = p.json(&["runs", "list", "--json"]);
    let summaries = summaries.as_array().unwrap();
    assert_eq!(summaries.len(), 2);
    for (s, (id, executed, cached)) in summaries.iter().zip([(id1, 3, 0), (id2, 0, 3)]) {
        assert_eq!(s["id"], id);
        assert_eq!(s["outcome"], "ok");
        assert_eq!(s["manifest"], "manifest.toml");
        assert_eq!(s["digest"], r1["manifest_digest"]);
        assert_eq!(
            (s["executed"].as_u64(), s["cached"].as_u64(), s["failed"].as_u64()),
            (Some(executed), Some(cached), Some(0))
        );
    }

    let show = p.run_ok(&["runs", "show", id1]);
    for n in nodes(&r1) {
        let short = &n["key"].as_str().unwrap()[..12];
        assert!(show.contains(&format!("{}  key {short}", n["id"].as_str().unwrap())), "{show}");
    }
    // Tool versions differ between machines: check their names here, keep them out of the snapshot.
    let versions = show.lines().find(|l| l.starts_with("versions ")).expect("a versions line");
    for tool in ["\"aurora\"", "\"rustc\""] {
        assert!(versions.contains(tool), "{versions}");
    }
    let stable: String = show.lines().filter(|l| !l.starts_with("versions ")).map(|l| format!("{l}\n")).collect();
    insta::assert_snapshot!("runs_show", p.redact(&stable));
    // A unique prefix of an id selects it.
    let prefix_len = (1..id1.len()).find(|&n| !id2.starts_with(&id1[..n])).unwrap();
    assert_eq!(p.run_ok(&["runs", "show", &id1[..prefix_len]]), show);
    let record = p.json(&["runs", "show", id2, "--json"]);
    assert_eq!(record["id"], id2);
    assert_eq!(record["nodes"], r2["nodes"]);
    assert_eq!(record["manifest"]["digest"], r2["manifest_digest"]);
}

#[test]
fn runs_show_prints_the_profile_as_text() {
    let p = Project::new();
    p.write("manifest.toml", DIGEST_BASE);
    let plain = p.json(&["run", "manifest.toml", "--json"]);
    let local = p.json(&["run", "manifest.toml", "--profile", "local", "--json"]);
    let show = |doc: &Value| p.run_ok(&["runs", "show", doc["run_id"].as_str().unwrap()]);
    let plain = show(&plain);
    let local = show(&local);
    let line = |text: &str| text.lines().find(|l| l.starts_with("manifest ")).unwrap().to_string();
    assert!(!line(&plain).contains("null"), "{}", line(&plain));
    assert_eq!(line(&local), "manifest manifest.toml (profile local)");
}

#[test]
fn plugins_lists_the_registry() {
    let p = Project::new();
    let list = p.json(&["plugins", "--json"]);
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "listed in id order");
    // The binary lists the same registry this test binary links (pinned in tests/conformance).
    assert_eq!(ids, aurora_core::plugin::registry().ids());
    let exec = list.as_array().unwrap().iter().find(|e| e["id"] == "exec.command").unwrap();
    assert_eq!(exec["kind"], "exec");
    assert_eq!(exec["version"], "1");
    // Each plugin names the crate that registered it (a binary may link plugin crates from anywhere).
    assert_eq!(exec["provider"]["crate"], "aurora-exec");
    assert_eq!(exec["provider"]["version"], env!("CARGO_PKG_VERSION"));
    let text = p.run_ok(&["plugins"]);
    assert_eq!(text.lines().count(), ids.len(), "one line per plugin:\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("exec.command ") && l.contains(" exec ") && l.contains(" aurora-exec ")),
        "{text}"
    );
}

#[test]
fn gc_keeps_what_the_manifest_uses_and_removes_older_versions() {
    let p = Project::new();
    let v1 = r#"[experiment]
name = "gc"
seed = 1

[steps.a]
plugin = "exec.command"
argv = ["sh", "-c", 'echo shared > "$AURORA_OUT/a.txt"']

[steps.b]
plugin = "exec.command"
argv = ["sh", "-c", 'echo one > "$AURORA_OUT/b.txt"']
inputs = { a = "steps.a" }
"#;
    p.write("manifest.toml", v1);
    let run1 = p.json(&["run", "manifest.toml", "--json"]);
    p.write("manifest.toml", &v1.replace("echo one", "echo two"));
    let run2 = p.json(&["run", "manifest.toml", "--json"]);
    expect_statuses(&run2, &[("steps/a", "cached"), ("steps/b", "executed")]);
    let old_b = field(&run1, "steps/b", "artifact");
    let new_b = field(&run2, "steps/b", "artifact");
    assert_ne!(old_b, new_b);

    // --dry-run removes nothing.
    let before = p.store_files();
    let dry = p.run_ok(&["gc", "--dry-run"]);
    assert!(dry.lines().last().unwrap().starts_with("would remove "), "{dry}");
    assert_eq!(p.store_files(), before, "dry run changed the store");
    // Recent runs keep both versions by default.
    let dry_all = p.run_ok(&["gc", "--dry-run", "--keep-runs", "0", "--keep", "manifest.toml"]);
    assert!(dry_all.contains(&old_b), "{dry_all}");
    assert_eq!(p.store_files(), before, "dry run changed the store");

    let out = p.run_ok(&["gc", "--keep", "manifest.toml", "--keep-runs", "0"]);
    assert!(out.contains(&format!("removed {}", p.artifact_dir(&old_b).display())), "{out}");
    assert!(!p.artifact_dir(&old_b).exists(), "the old version's artifact is gone");
    assert!(!p.action_path(&field(&run1, "steps/b", "key")).exists(), "and its cache entry");
    for id in ["steps/a", "steps/b"] {
        assert!(p.artifact_dir(&field(&run2, id, "artifact")).is_dir(), "{id}: current artifact kept");
        assert!(p.action_path(&field(&run2, id, "key")).is_file(), "{id}: current cache entry kept");
    }
    assert_code(&p.run(&["verify", "--store"]), 0, "verify --store after gc");
    let again = p.json(&["run", "manifest.toml", "--json"]);
    expect_statuses(&again, &[("steps/a", "cached"), ("steps/b", "cached")]);
    // The old version has to be recomputed.
    p.write("manifest.toml", v1);
    let plan = p.json(&["plan", "manifest.toml", "--json"]);
    expect_statuses(&plan, &[("steps/a", "cached"), ("steps/b", "pending")]);
}

#[test]
fn verify_node_compares_a_fresh_execution() {
    let p = Project::new();
    p.write("data/raw.txt", "Verify Me\n");
    p.write(
        "manifest.toml",
        &format!(
            "{CHAIN}\n[steps.d]\nplugin = \"exec.command\"\nargv = [\"sh\", \"-c\", 'date +%s%N > \"$AURORA_OUT/t\"; echo same > \"$AURORA_OUT/same.txt\"']\n"
        ),
    );
    let run = p.json(&["run", "manifest.toml", "--json"]);

    let out = p.run(&["verify", "manifest.toml", "--node", "steps/a"]);
    assert_code(&out, 0, "verify a deterministic node");
    assert_eq!(stdout(&out), format!("steps/a: identical (artifact {})\n", field(&run, "steps/a", "artifact")));

    let out = p.run(&["verify", "manifest.toml", "--node", "steps/d"]);
    assert_code(&out, 1, "verify a non-deterministic node");
    assert_eq!(
        stdout(&out),
        format!("steps/d: DIFFERS from the cached artifact {}\n  changed: t\n", field(&run, "steps/d", "artifact"))
    );
    // Verification publishes nothing and leaves the cache as it was.
    let plan = p.json(&["plan", "manifest.toml", "--json"]);
    assert_eq!(field(&plan, "steps/d", "artifact"), field(&run, "steps/d", "artifact"));
    assert_code(&p.run(&["verify", "--store"]), 0, "verify --store");
}

// ---------------------------------------------------------------------------------------------
// 11. timeout_s
// ---------------------------------------------------------------------------------------------

#[test]
fn timeout_kills_the_command() {
    let p = Project::new();
    p.write(
        "manifest.toml",
        r#"[experiment]
name = "timeout"
seed = 1

[steps.slow]
plugin = "exec.command"
argv = ["sh", "-c", 'echo started; sleep 600 & sleep 600']
timeout_s = 1
"#,
    );
    let key = field(&p.json(&["plan", "manifest.toml", "--json"]), "steps/slow", "key");
    let started = Instant::now();
    let out = p.run(&["run", "manifest.toml"]);
    let elapsed = started.elapsed();
    assert_code(&out, 1, "run with a timeout");
    assert!(elapsed >= Duration::from_secs(1), "killed before its timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(30), "not killed at its timeout: {elapsed:?}");
    let err = stderr(&out);
    assert!(err.contains("error: node steps/slow failed"), "{err}");
    assert!(err.contains("was killed after its timeout of 1 s"), "{err}");
    insta::assert_snapshot!("timeout_stderr", p.redact(&err));
    assert!(!p.action_path(&key).exists());
}

/// The README's first command, minus the release build: the shipped experiment runs end to end
/// on this machine, and a second invocation is a no-op.
#[test]
fn the_shipped_experiment_runs_and_reruns_as_a_no_op() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let store = tempfile::tempdir().unwrap();
    let run = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_aurora"));
        cmd.args(["run", "experiments/aurora-m.toml", "--json"])
            .current_dir(repo)
            .env("AURORA_STORE", store.path())
            .stdin(Stdio::null());
        // The whole study (data, four training stages, 20 evaluation nodes, the report) takes
        // about 5 minutes on 2 cores in the dev profile; the limit only guards against a hang.
        output_within(cmd, Duration::from_secs(30 * 60))
    };
    let first = run();
    assert_code(&first, 0, "aurora run experiments/aurora-m.toml");
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    let nodes = first["nodes"].as_array().unwrap();
    assert!(!nodes.is_empty());
    assert!(nodes.iter().all(|n| n["status"] == "executed" || n["status"] == "cached"), "{first:#}");
    let second = run();
    assert_code(&second, 0, "second run");
    let second: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert!(second["nodes"].as_array().unwrap().iter().all(|n| n["status"] == "cached"), "{second:#}");
    assert_eq!(first["manifest_digest"], second["manifest_digest"]);

    // The ablation that trains CAP on two data-parallel ranks (local launcher): CAP reruns, the
    // data and the base stage come from the cache, and CAP's evaluation equals the main run's up
    // to summation order.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_aurora"));
    cmd.args([
        "run",
        "experiments/ablations/cap-dp2.toml",
        "--until",
        "evals/bpb/cap",
        "--launcher",
        "local",
        "--json",
    ])
    .current_dir(repo)
    .env("AURORA_STORE", store.path())
    .stdin(Stdio::null());
    let ablation = output_within(cmd, Duration::from_secs(20 * 60));
    assert_code(&ablation, 0, "aurora run experiments/ablations/cap-dp2.toml");
    let ablation: Value = serde_json::from_slice(&ablation.stdout).unwrap();
    let status = |doc: &Value, id: &str| node(doc, id)["status"].as_str().unwrap_or_default().to_owned();
    assert_eq!(status(&ablation, "stages/base"), "cached");
    assert_eq!(status(&ablation, "mixtures/cap"), "cached");
    assert_eq!(status(&ablation, "stages/cap"), "executed");
    let (main_bpb, dp2_bpb) = (&node(&first, "evals/bpb/cap")["metrics"], &node(&ablation, "evals/bpb/cap")["metrics"]);
    let languages: Vec<&String> = main_bpb.as_object().unwrap().keys().filter(|k| k.starts_with("bpb.")).collect();
    assert_eq!(languages.len(), 6, "{main_bpb}");
    for key in languages {
        let (a, b) = (main_bpb[key].as_f64().unwrap(), dp2_bpb[key].as_f64().unwrap());
        assert!((a - b).abs() / a < 1e-4, "{key}: one process {a}, dp = 2 {b}");
    }
}

// ---------------------------------------------------------------------------------------------
// 11. aurora diff
// ---------------------------------------------------------------------------------------------

#[test]
fn diff_of_two_runs_of_the_same_manifest_is_identical() {
    let p = Project::new();
    p.write("data/raw.txt", "Same\n");
    p.write("manifest.toml", CHAIN);
    let r1 = p.json(&["run", "manifest.toml", "--json"]);
    let r2 = p.json(&["run", "manifest.toml", "--json"]);
    let (id1, id2) = (r1["run_id"].as_str().unwrap(), r2["run_id"].as_str().unwrap());
    let out = p.run(&["diff", id1, id2]);
    assert_code(&out, 0, "identical runs");
    assert_eq!(
        stdout(&out),
        format!("runs {id1} and {id2} are identical: same manifest, node keys, artifacts and metrics\n")
    );
    let doc: Value = serde_json::from_str(&stdout(&p.run(&["diff", id1, id2, "--json"]))).unwrap();
    assert_eq!(doc["identical"], true);
    assert_eq!(doc["nodes"], serde_json::json!([]));
    // Unknown run ids are usage errors.
    let out = p.run(&["diff", id1, "no-such-run"]);
    assert_code(&out, 2, "unknown run");
    assert!(stderr(&out).contains("aurora runs list"), "{}", stderr(&out));
}

#[test]
fn diff_shows_the_changed_node_its_config_field_and_nodes_in_one_run_only() {
    let p = Project::new();
    p.write("data/raw.txt", "Hello World\n");
    p.write("manifest.toml", CHAIN);
    let r1 = p.json(&["run", "manifest.toml", "--json"]);
    // Same bytes by another command (b and c stay cached), and one more step.
    let edited = CHAIN.replace("tr A-Z a-z", r#"tr "[:upper:]" "[:lower:]""#)
        + "\n[steps.d]\nplugin = \"exec.command\"\nargv = [\"sh\", \"-c\", 'echo d > \"$AURORA_OUT/d.txt\"']\n";
    p.write("manifest.toml", &edited);
    let r2 = p.json(&["run", "manifest.toml", "--json"]);
    let (id1, id2) = (r1["run_id"].as_str().unwrap(), r2["run_id"].as_str().unwrap());

    let out = p.run(&["diff", id1, id2]);
    assert_code(&out, 1, "runs that differ");
    let text = stdout(&out);
    assert!(text.contains("node steps/a\n"), "{text}");
    assert!(text.contains("config changed (argv)"), "{text}");
    assert!(!text.contains("node steps/b") && !text.contains("node steps/c"), "b and c kept their keys:\n{text}");
    assert!(text.contains("only in B: steps/d"), "{text}");
    insta::assert_snapshot!("diff_changed_config", p.redact(&text));

    let doc: Value = serde_json::from_str(&stdout(&p.run(&["diff", id1, id2, "--json"]))).unwrap();
    assert_eq!(doc["identical"], false);
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{doc:#}");
    assert_eq!(nodes[0]["id"], "steps/a");
    assert_eq!(nodes[0]["key_a"], node(&r1, "steps/a")["key"]);
    assert_eq!(nodes[0]["key_b"], node(&r2, "steps/a")["key"]);
    assert_eq!(nodes[0]["artifact_a"], nodes[0]["artifact_b"], "same bytes by another command");
    let config = nodes[0]["config"].as_array().unwrap();
    assert_eq!(config.len(), 1, "{config:?}");
    assert_eq!(config[0]["pointer"], "/argv/2");
    assert!(config[0]["a"].as_str().unwrap().contains("tr A-Z a-z"));
    assert!(config[0]["b"].as_str().unwrap().contains("[:upper:]"));
    assert_eq!(doc["only_in_a"], serde_json::json!([]));
    assert_eq!(doc["only_in_b"], serde_json::json!(["steps/d"]));
    let manifest: Vec<&str> =
        doc["manifest"].as_array().unwrap().iter().map(|c| c["pointer"].as_str().unwrap()).collect();
    assert_eq!(manifest, ["/steps/a/argv/2", "/steps/d"]);
}

/// A report node whose evaluation input changed: the diff shows the input, the artifacts and the
/// report's metrics with both values and the relative change.
#[test]
fn diff_shows_metrics_that_changed_with_the_relative_change() {
    let p = Project::new();
    let results = |checkpoint: &str, values: &str| {
        format!(
            r#"echo '{{"evaluator": "evals/e", "plugin": "eval.x", "checkpoint": "{checkpoint}", "model_node": "stages/{checkpoint}", "tokens_total": null, "metrics": {values}, "higher_is_better": {{"m1": true, "m2": true}}, "details": {{}}}}' > "$AURORA_OUT/results.json""#
        )
    };
    let manifest = format!(
        r#"[experiment]
name = "diff-metrics"
seed = 1

[steps.base]
plugin = "exec.command"
argv = ["sh", "-c", '''{}''']

[steps.cap]
plugin = "exec.command"
argv = ["sh", "-c", '''read m1 m2 < "$AURORA_IN_V"; {}''']
inputs = {{ v = "file:data/cap.txt" }}

[reports.main]
plugin = "report.html"
results = ["steps/base", "steps/cap"]
baseline = "base"
"#,
        results("base", r#"{"m1": 1.0, "m2": 1.0}"#),
        results("cap", r#"{"m1": '"$m1"', "m2": '"$m2"'}"#),
    );
    p.write("manifest.toml", &manifest);
    p.write("data/cap.txt", "0.5 1.0\n");
    let r1 = p.json(&["run", "manifest.toml", "--json"]);
    p.write("data/cap.txt", "0.5 0.5\n");
    let r2 = p.json(&["run", "manifest.toml", "--json"]);
    assert_eq!(node(&r1, "reports/main")["metrics"]["regressions"], 1, "{r1:#}");
    assert_eq!(node(&r2, "reports/main")["metrics"]["regressions"], 2, "{r2:#}");
    let (id1, id2) = (r1["run_id"].as_str().unwrap(), r2["run_id"].as_str().unwrap());

    let out = p.run(&["diff", id1, id2]);
    assert_code(&out, 1, "runs that differ");
    let text = stdout(&out);
    assert!(text.contains("node steps/cap\n") && text.contains("input changed (v)"), "{text}");
    assert!(text.contains("  metric   regressions: 1 -> 2 (+100.00%)"), "{text}");
    assert!(!text.contains("node steps/base") && !text.contains("manifest "), "{text}");
    insta::assert_snapshot!("diff_changed_metrics", p.redact(&text));
    let doc: Value = serde_json::from_str(&stdout(&p.run(&["diff", id1, id2, "--json"]))).unwrap();
    let report = doc["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "reports/main").unwrap();
    assert_eq!(report["metrics"], serde_json::json!([{"name": "regressions", "a": 1, "b": 2, "relative": 1.0}]));
}

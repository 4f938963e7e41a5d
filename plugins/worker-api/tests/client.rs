//! `client::run_worker` against fake workers (shell scripts) that speak the event protocol.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aurora_core::plugin::{ExecContext, PluginError, Progress};
use aurora_worker_api::client::run_worker;
use aurora_worker_api::{Job, ModelRef, PerplexityJob, Precision};
use serde_json::json;

#[derive(Default)]
struct Recorded(Mutex<Vec<(String, u64, u64, String)>>);
impl Progress for Recorded {
    fn update(&self, node: &str, done: u64, total: u64, message: &str) {
        self.0.lock().unwrap().push((node.to_string(), done, total, message.to_string()));
    }
}

fn job(dir: &Path) -> Job {
    Job::Perplexity(PerplexityJob {
        node: "evals/ppl".into(),
        model: ModelRef { dir: dir.join("model"), device: "cpu".into(), precision: Precision::Fp32, threads: 1 },
        documents: dir.join("docs.jsonl"),
        prefix_end_of_text: true,
        stride: 64,
        batch_size: 2,
        out_dir: dir.join("out"),
    })
}

fn fake_worker(dir: &Path, script: &str) -> PathBuf {
    let path = dir.join("fake-worker");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

struct Outcome {
    result: Result<serde_json::Map<String, serde_json::Value>, PluginError>,
    log: String,
    progress: Vec<(String, u64, u64, String)>,
}

fn run_fake(script: &str) -> (tempfile::TempDir, Outcome) {
    let dir = tempfile::tempdir().unwrap();
    let worker = fake_worker(dir.path(), script);
    let resume = dir.path().join("resume");
    let out = dir.path().join("out");
    let inputs = BTreeMap::new();
    let config = json!({});
    let progress = Recorded::default();
    let mut log = Vec::new();
    let mut ctx = ExecContext {
        node_id: "evals/ppl",
        config: &config,
        seed: 7,
        inputs: &inputs,
        out_dir: &out,
        resume_dir: &resume,
        cores: aurora_core::cores::machine_cores(),
        log: &mut log,
        progress: &progress,
    };
    let result = run_worker(&worker, &job(dir.path()), &mut ctx);
    let outcome = Outcome { result, log: String::from_utf8(log).unwrap(), progress: progress.0.into_inner().unwrap() };
    (dir, outcome)
}

#[test]
fn progress_is_relayed_and_done_metrics_returned() {
    let (dir, outcome) = run_fake(
        r#"echo "reading $1" >&2
echo '{"progress":{"done":1,"total":4,"message":"loss 2.5"}}'
echo 'a stray line on stdout'
echo '{"progress":{"done":4,"total":4,"message":"loss 1.5"}}'
echo '{"done":{"metrics":{"loss":1.5,"tokens":4096}}}'"#,
    );
    let metrics = outcome.result.unwrap();
    assert_eq!(serde_json::Value::Object(metrics), json!({"loss": 1.5, "tokens": 4096}));
    assert_eq!(
        outcome.progress,
        vec![
            ("evals/ppl".to_string(), 1, 4, "loss 2.5".to_string()),
            ("evals/ppl".to_string(), 4, 4, "loss 1.5".to_string())
        ]
    );
    let job_path = dir.path().join("resume/job.json");
    // Two pipes: their lines interleave in no fixed order.
    let mut log: Vec<&str> = outcome.log.lines().collect();
    log.sort();
    assert_eq!(log, ["a stray line on stdout".to_string(), format!("reading {}", job_path.display())]);
    // The job the worker was given is the job, as JSON.
    let written: Job = serde_json::from_str(&std::fs::read_to_string(&job_path).unwrap()).unwrap();
    assert_eq!(written, job(dir.path()));
}

#[test]
fn a_failing_worker_reports_its_status_and_last_log_lines() {
    let (_dir, outcome) = run_fake(
        r#"for i in $(seq 1 30); do echo "line $i" >&2; done
echo 'error: tensor transformer.wte.weight has shape [10, 8], expected [12, 8]' >&2
exit 3"#,
    );
    let err = outcome.result.unwrap_err();
    assert!(err.message.starts_with("aurora-worker exited with status 3 while running evals/ppl"), "{}", err.message);
    let tail = err.log_tail.unwrap();
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 20);
    assert_eq!(lines[0], "line 12");
    assert_eq!(lines[19], "error: tensor transformer.wte.weight has shape [10, 8], expected [12, 8]");
    assert_eq!(outcome.log.lines().count(), 31, "the whole log is kept");
}

#[test]
fn success_without_a_done_event_is_an_error() {
    let (_dir, outcome) = run_fake(r#"echo '{"progress":{"done":1,"total":2,"message":""}}'"#);
    let err = outcome.result.unwrap_err();
    assert!(err.message.contains("exited with status 0 without reporting a result"), "{}", err.message);
}

#[test]
fn a_worker_killed_by_a_signal_says_so() {
    let (_dir, outcome) = run_fake(r#"echo '{"done":{"metrics":{}}}'; kill -9 $$"#);
    let err = outcome.result.unwrap_err();
    assert!(
        err.message.starts_with("aurora-worker was killed by signal 9 (often the kernel's out-of-memory killer"),
        "{}",
        err.message
    );
}

#[test]
fn a_missing_worker_names_where_it_looked_and_how_to_build_it() {
    // The only test in this binary that touches the environment.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-worker");
    // SAFETY: no other test of this binary reads or writes the environment.
    unsafe { std::env::set_var(aurora_worker_api::client::WORKER_ENV, &missing) };
    let err = aurora_worker_api::client::worker_path().unwrap_err();
    assert_eq!(
        err.message,
        format!(
            "AURORA_WORKER={} is not a file; point it at the `aurora-worker` binary or unset it",
            missing.display()
        )
    );
    unsafe { std::env::remove_var(aurora_worker_api::client::WORKER_ENV) };
    match aurora_worker_api::client::worker_path() {
        // Built already in this target directory: it sits next to (or one level above) this test binary.
        Ok(path) => assert!(path.ends_with("aurora-worker")),
        Err(err) => {
            assert!(err.message.contains("was not found (looked for "), "{}", err.message);
            assert!(err.message.contains("cargo build -p aurora-worker"), "{}", err.message);
        }
    }
}

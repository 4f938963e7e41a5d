//! `aurora run --executor slurm` on a real single-node Slurm: every node that executes is a
//! Slurm job running `aurora exec-node` (the training stage's job asks for its two ranks and
//! runs them as an `srun` step); the artifacts are those of `--executor local`; a failed job
//! shows its log tail; a cancelled training job resumes from its checkpoint when rerun.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::super::common::*;
use super::{MANIFEST, project, worker_built};

/// Beside the stage: a step that reads the mixture, and one with sbatch options of its own.
const EXTRA: &str = r#"
[steps.count]
plugin = "exec.command"
argv = ["sh", "-c", "cd $AURORA_IN_DATA && ls -R . > $AURORA_OUT/listing.txt"]
inputs = { data = "mixtures.cap" }
slurm = { time = "00:10:00" }
"#;

/// `aurora ARGS` pointed at the test cluster (its SLURM_CONF), bounded by `limit`.
fn aurora_on(cluster: &aurora_slurm_testkit::SlurmCluster, p: &Project, args: &[&str]) -> std::process::Command {
    let mut cmd = p.command(args);
    cmd.env_remove("AURORA_LAUNCHER").env_remove("AURORA_EXECUTOR").envs(cluster.env());
    cmd
}

fn artifacts(report: &serde_json::Value) -> Vec<(String, String, String)> {
    report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("status"), s("artifact"))
        })
        .collect()
}

#[test]
fn the_dag_runs_as_slurm_jobs_with_the_local_executors_bytes() {
    if !worker_built() {
        return;
    }
    let Some(cluster) = aurora_slurm_testkit::start_or_skip("the_dag_runs_as_slurm_jobs") else { return };
    let manifest = format!("{MANIFEST}{EXTRA}");
    let local = project();
    local.write("m.toml", &manifest);
    let local_report = local.json(&["run", "m.toml", "--launcher", "local", "--json"]);

    let slurm = project();
    slurm.write("m.toml", &manifest);
    let out = output_within(
        aurora_on(&cluster, &slurm, &["run", "m.toml", "--executor", "slurm", "--json"]),
        Duration::from_secs(300),
    );
    assert_code(&out, 0, &format!("run --executor slurm\n{}", cluster.logs()));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("--json report");
    let ours = artifacts(&report);
    assert!(ours.iter().all(|(_, status, _)| status == "executed"), "{ours:?}");
    assert_eq!(ours, artifacts(&local_report), "the executor changed an artifact");

    // Each node was a job of its own, with the script and log in the store's slurm/ directory.
    let logs: Vec<String> = std::fs::read_dir(slurm.store().join("slurm"))
        .expect("slurm/ in the store")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for (id, ..) in &ours {
        let stem = id.replace('/', ".");
        assert!(logs.contains(&format!("{stem}.sbatch")), "no script for {id}: {logs:?}");
        assert!(logs.iter().any(|l| l.starts_with(&format!("{stem}-")) && l.ends_with(".log")), "no log for {id}");
    }
    let script = std::fs::read_to_string(slurm.store().join("slurm/stages.cap.sbatch")).unwrap();
    assert!(script.contains("exec-node") && script.contains("--node stages/cap"), "{script}");
    // The stage's job held two tasks and ran its ranks as an srun step.
    let cap = ours.iter().find(|(id, ..)| id == "stages/cap").unwrap();
    let log = std::fs::read_to_string(slurm.artifact_dir(&cap.2).join("ARTIFACT.log")).unwrap();
    assert!(log.contains("srun --ntasks=2"), "{log}");

    // Rerun: everything is cached, no job is submitted.
    let again = aurora_on(&cluster, &slurm, &["run", "m.toml", "--executor", "slurm", "--json"]);
    let again: serde_json::Value = serde_json::from_str(&stdout(&output_within(again, TIMEOUT))).unwrap();
    assert!(artifacts(&again).iter().all(|(_, status, _)| status == "cached"));
}

#[test]
fn a_failed_job_names_its_state_and_shows_its_log_tail() {
    let Some(cluster) = aurora_slurm_testkit::start_or_skip("a_failed_job_names_its_state") else { return };
    let p = Project::new();
    p.write(
        "m.toml",
        r#"[experiment]
name = "fails"
seed = 1

[steps.boom]
plugin = "exec.command"
argv = ["sh", "-c", "echo the-last-words >&2; exit 3"]

[steps.after]
plugin = "exec.command"
argv = ["true"]
inputs = { boom = "steps.boom" }
"#,
    );
    let out = output_within(aurora_on(&cluster, &p, &["run", "m.toml", "--executor", "slurm"]), TIMEOUT);
    assert_code(&out, 1, "a failing job");
    let err = stderr(&out);
    assert!(err.contains("error: node steps/boom failed: Slurm job"), "{err}");
    assert!(err.contains("ended FAILED (exit code 1:0)"), "{err}");
    assert!(err.contains("the-last-words"), "the job's log tail: {err}");
    assert!(stdout(&out).contains("not run: an earlier node failed"), "{}", stdout(&out));
}

#[test]
fn without_slurm_commands_the_error_says_what_to_install() {
    let p = Project::new();
    p.write(
        "m.toml",
        "[experiment]\nname = \"x\"\nseed = 1\n\n[steps.a]\nplugin = \"exec.command\"\nargv = [\"true\"]\n",
    );
    let mut cmd = p.command(&["run", "m.toml", "--executor", "slurm"]);
    cmd.env("PATH", "/nonexistent");
    let out = output_within(cmd, TIMEOUT);
    assert_code(&out, 1, "no sbatch");
    let err = stderr(&out);
    assert!(err.contains("`sbatch` cannot be started") && err.contains("install slurm-client"), "{err}");
}

#[test]
fn a_cancelled_training_job_resumes_from_its_checkpoint() {
    if !worker_built() {
        return;
    }
    let Some(cluster) = aurora_slurm_testkit::start_or_skip("a_cancelled_training_job_resumes") else { return };
    // Long enough to be caught between checkpoints: many small steps, a checkpoint every 2 steps.
    let manifest = MANIFEST
        .replace("steps = 4\n", "steps = 1000\ncheckpoint_every_tokens = 2048\n")
        .replace("tokens = 4096", "tokens = 262144\nmax_repetition = 20");
    let local = project();
    local.write("m.toml", &manifest);
    let expected = local.json(&["run", "m.toml", "--launcher", "local", "--json"]);

    let p = project();
    p.write("m.toml", &manifest);
    let mut run = aurora_on(&cluster, &p, &["run", "m.toml", "--executor", "slurm"]);
    let child = run.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("aurora starts");

    // Wait for a checkpoint of the running job, then cancel the job (as an operator would).
    // Only the stage writes checkpoints: look in every node's work directory.
    let work = p.store().join("work");
    let deadline = Instant::now() + Duration::from_secs(240);
    // A finished checkpoint is a directory `ckpt-N` (written as `ckpt-N.tmp`, then renamed),
    // in `work/<key>/resume/` or one level below it.
    fn has_checkpoint(dir: &std::path::Path, depth: u32) -> bool {
        std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with("ckpt-") && !name.ends_with(".tmp"))
                || (depth > 0 && has_checkpoint(&e.path(), depth - 1))
        })
    }
    let checkpointed = || has_checkpoint(&work, 3);
    while !checkpointed() {
        assert!(Instant::now() < deadline, "no checkpoint under {}\n{}", work.display(), cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let ids = cluster.run("squeue", ["-h", "-o", "%i", "-n", "aurora:stages/cap"], Duration::from_secs(10)).unwrap();
    let id = String::from_utf8_lossy(&ids.stdout).trim().to_string();
    assert!(!id.is_empty(), "the stage's job is in the queue");
    assert!(cluster.run("scancel", [id.as_str()], Duration::from_secs(10)).unwrap().status.success());
    let cancelled = wait_output_within(child, Duration::from_secs(120));
    assert_code(&cancelled, 1, "the cancelled run");
    assert!(stderr(&cancelled).contains("was cancelled (scancel); rerunning resumes"), "{}", stderr(&cancelled));

    // The rerun resumes and ends with the bytes of an uninterrupted run.
    let rerun = output_within(
        aurora_on(&cluster, &p, &["run", "m.toml", "--executor", "slurm", "--json"]),
        Duration::from_secs(300),
    );
    assert_code(&rerun, 0, "the rerun");
    let report: serde_json::Value = serde_json::from_str(&stdout(&rerun)).unwrap();
    let cap = |r: &serde_json::Value| artifacts(r).into_iter().find(|(id, ..)| id == "stages/cap").unwrap();
    let (_, status, artifact) = cap(&report);
    assert_eq!(status, "executed");
    let log = std::fs::read_to_string(p.artifact_dir(&artifact).join("ARTIFACT.log")).unwrap();
    assert!(log.contains("resuming from the checkpoint"), "{log}");
    assert_eq!(artifact, cap(&expected).2, "a resumed stage has the bytes of an uninterrupted one");
}

#[test]
fn ctrl_c_cancels_the_jobs_it_submitted() {
    let Some(cluster) = aurora_slurm_testkit::start_or_skip("ctrl_c_cancels_the_jobs_it_submitted") else { return };
    let p = Project::new();
    p.write(
        "m.toml",
        "[experiment]\nname = \"long\"\nseed = 1\n\n[steps.long]\nplugin = \"exec.command\"\nargv = [\"sleep\", \"600\"]\n",
    );
    let mut run = aurora_on(&cluster, &p, &["run", "m.toml", "--executor", "slurm"]);
    let child = run.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("aurora starts");
    let queue = || {
        let out =
            cluster.run("squeue", ["-h", "-o", "%i %T", "-n", "aurora:steps/long"], Duration::from_secs(10)).unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let deadline = Instant::now() + TIMEOUT;
    while !queue().ends_with("RUNNING") {
        assert!(Instant::now() < deadline, "the job never ran: {}\n{}", queue(), cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let interrupt = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(interrupt.success());
    let out = wait_output_within(child, TIMEOUT);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted: cancelled Slurm jobs"), "{}", stderr(&out));
    assert!(stderr(&out).contains("queued    steps/long: Slurm job"), "{}", stderr(&out));
    let deadline = Instant::now() + TIMEOUT;
    while !queue().is_empty() {
        assert!(Instant::now() < deadline, "the job is still queued: {}", queue());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sbatch_refusing_a_job_and_a_bad_slurm_table_are_clear_errors() {
    let manifest = |slurm: &str| {
        format!(
            "[experiment]\nname = \"opts\"\nseed = 1\n\n[steps.a]\nplugin = \"exec.command\"\nargv = [\"true\"]\nslurm = {slurm}\n"
        )
    };
    // A field sbatch does not get from us: located, before anything runs (no cluster needed).
    let p = Project::new();
    p.write("m.toml", &manifest("{ partition = \"x\", nodes = \"2\" }"));
    let out = p.run(&["plan", "m.toml"]);
    assert_code(&out, 2, "a bad slurm table");
    let err = stderr(&out);
    assert!(err.contains("`steps.a.slurm`: `nodes` not allowed") && err.contains("m.toml:8:"), "{err}");
    assert!(err.contains("partition, account, time, qos, constraint"), "{err}");

    // A partition the cluster does not have: sbatch's own message.
    let Some(cluster) = aurora_slurm_testkit::start_or_skip("sbatch_refusing_a_job") else { return };
    p.write("m.toml", &manifest("{ partition = \"no-such-partition\" }"));
    let out = output_within(aurora_on(&cluster, &p, &["run", "m.toml", "--executor", "slurm"]), TIMEOUT);
    assert_code(&out, 1, "sbatch refused");
    let err = stderr(&out);
    assert!(err.contains("--partition=no-such-partition") && err.contains("invalid partition"), "{err}");
    // The table is not part of the key: the same node plans with the same key without it.
    let with = p.json(&["plan", "m.toml", "--json"]);
    p.write(
        "m.toml",
        "[experiment]\nname = \"opts\"\nseed = 1\n\n[steps.a]\nplugin = \"exec.command\"\nargv = [\"true\"]\n",
    );
    let without = p.json(&["plan", "m.toml", "--json"]);
    assert_eq!(with["nodes"][0]["key"], without["nodes"][0]["key"]);
    assert_eq!(with["manifest_digest"], without["manifest_digest"]);
}

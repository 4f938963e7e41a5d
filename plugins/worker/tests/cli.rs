//! The worker's command line: what it says when the job file is wrong. (Jobs themselves are run
//! end to end by aurora-train-plugins' tests/run.rs.)

use std::process::Command;

const WORKER: &str = env!("CARGO_BIN_EXE_aurora-worker");

fn run_job(text: &str) -> (std::path::PathBuf, tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.json");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(WORKER).arg(&path).output().unwrap();
    (path, dir, out)
}

#[test]
fn a_malformed_job_names_the_file_and_position() {
    let (path, _dir, out) = run_job("{\"task\": \"train\",\n \"node\" 3}");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "stdout carries only events");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let expected = format!("error: {}: not a job: expected `:` at line 2 column 9 (job files", path.display());
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(stderr.contains("cargo build -p aurora -p aurora-worker"), "{stderr}");
}

#[test]
fn a_job_of_the_wrong_shape_says_what_was_expected() {
    let (path, _dir, out) = run_job("{\"task\": \"train\", \"node\": 3}");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let expected = format!("error: {}: not a job: invalid type: integer `3`, expected a string", path.display());
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn a_missing_job_file_is_reported() {
    let out = Command::new(WORKER).arg("/nonexistent/job.json").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: cannot read the job file /nonexistent/job.json: No such file"), "{stderr}");
}

#[test]
fn without_a_job_it_prints_its_usage() {
    let out = Command::new(WORKER).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().starts_with("usage: aurora-worker JOB.json"));
}

//! Rank failures (its own test binary: it sets the fault-injection variable, which every
//! worker it starts inherits, so no other test may run beside it):
//! - rank 1 of a dp = 2 stage is killed (SIGKILL) before step 6: the node fails naming rank 1,
//!   rank 0 stops too (its collective fails), nothing is published, and the rerun resumes from
//!   the step-4 checkpoint to exactly the bytes of an uninterrupted run;
//! - a one-process run killed before step 6 leaves a step-4 checkpoint that a dp = 2 run resumes
//!   from (the whole AdamW state is sharded on load);
//! - the last rank of a tp 2 x pp 2 stage is killed before step 6: the rerun resumes from the
//!   step-4 checkpoint's parts to the bytes of an uninterrupted run.

use aurora_corpus as _;
use aurora_tokens as _;
use aurora_train_plugins as _;

mod common;

use aurora_core::execute::NodeStatus;
use common::*;

const KILL_ENV: &str = "AURORA_TEST_KILL_RANK";

fn set_kill(value: Option<&str>) {
    // SAFETY: this binary has one test and it starts no thread that reads the environment
    // while it changes (the executor's threads have ended when a run returns).
    unsafe {
        match value {
            Some(v) => std::env::set_var(KILL_ENV, v),
            None => std::env::remove_var(KILL_ENV),
        }
    }
}

#[test]
fn a_killed_rank_fails_the_node_and_the_rerun_resumes_exactly() {
    if !worker_built() {
        return;
    }
    let dp2 = with_cap("layout = { dp = 2 }");
    let (clean, killed, single) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    project(clean.path(), &dp2);
    let (clean_store, clean_reports) = run_until(clean.path(), "stages/cap");
    let uninterrupted = report(&clean_reports, "stages/cap").artifact.expect("the clean run succeeds");

    project(killed.path(), &dp2);
    set_kill(Some("1@6"));
    let (store, reports) = run_until(killed.path(), "stages/cap");
    let failed = report(&reports, "stages/cap");
    assert_eq!(failed.status, NodeStatus::Failed);
    let message = failed.error.as_deref().unwrap_or_default();
    assert!(message.starts_with("stages/cap: rank 1 of 2 was killed by signal 9"), "{message}");
    assert!(message.contains("then rank(s) 0 stopped too"), "{message}");
    assert!(message.contains("AURORA_TEST_KILL_RANK: killing this rank before step 6"), "{message}");
    let verified = store.verify().unwrap();
    assert!(verified.problems.is_empty(), "the store is invalid after the failure: {:?}", verified.problems.len());
    assert!(failed.artifact.is_none(), "nothing is published");

    set_kill(None);
    let (_, reports) = run_until(killed.path(), "stages/cap");
    let resumed = report(&reports, "stages/cap");
    assert_eq!(resumed.status, NodeStatus::Executed, "{:?}", resumed.error);
    assert_eq!(resumed.artifact, Some(uninterrupted), "the resumed run differs from an uninterrupted one");

    // One process, killed before step 6: its step-4 checkpoint moves to the dp = 2 node, which
    // resumes from it (steps 1-4 were one process's, 5-8 are dp = 2's).
    project(single.path(), &with_cap(""));
    set_kill(Some("0@6"));
    let (single_store, reports) = run_until(single.path(), "stages/cap");
    assert_eq!(report(&reports, "stages/cap").status, NodeStatus::Failed);
    set_kill(None);
    let checkpoint = std::fs::read_dir(single.path().join(".aurora/work"))
        .unwrap()
        .map(|e| e.unwrap().path().join("resume/ckpt-0000000004"))
        .find(|p| p.is_dir())
        .expect("the one-process run left its step-4 checkpoint");
    let dp2_key = report(&clean_reports, "stages/cap").key.expect("keyed");
    let fresh = tempfile::tempdir().unwrap();
    project(fresh.path(), &dp2);
    // The store must exist before its work directory gets the checkpoint.
    drop(aurora_core::Store::open(&fresh.path().join(".aurora")).unwrap());
    let target = fresh.path().join(".aurora/work").join(dp2_key.to_string()).join("resume/ckpt-0000000004");
    std::fs::create_dir_all(&target).unwrap();
    for file in std::fs::read_dir(&checkpoint).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), target.join(file.file_name())).unwrap();
    }
    let (store, reports) = run_until(fresh.path(), "stages/cap");
    let moved = report(&reports, "stages/cap");
    assert_eq!(moved.status, NodeStatus::Executed, "{:?}", moved.error);
    let log =
        std::fs::read_to_string(store.artifact_dir(&moved.artifact.unwrap()).join("ARTIFACT.log")).unwrap_or_default();
    assert!(log.contains("resuming from the checkpoint"), "{log}");
    let expected = losses(&artifact_dir(&clean_store, &clean_reports, "stages/cap"));
    let got = losses(&artifact_dir(&store, &reports, "stages/cap"));
    for (step, (x, y)) in expected.iter().zip(&got).enumerate() {
        assert!((x - y).abs() / x.abs() < 1e-5, "step {}: {x} vs {y}", step + 1);
    }
    drop(single_store);

    // Tensor and pipeline parallelism: the checkpoint is one part per model shard.
    let grid = with_cap("layout = { tp = 2, pp = 2 }");
    let (clean, killed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    project(clean.path(), &grid);
    let (_clean_store, clean_reports) = run_until(clean.path(), "stages/cap");
    let uninterrupted = report(&clean_reports, "stages/cap").artifact.expect("the clean tp x pp run succeeds");
    project(killed.path(), &grid);
    set_kill(Some("3@6"));
    let (store, reports) = run_until(killed.path(), "stages/cap");
    let failed = report(&reports, "stages/cap");
    assert_eq!(failed.status, NodeStatus::Failed);
    let message = failed.error.as_deref().unwrap_or_default();
    assert!(message.starts_with("stages/cap: rank 3 of 4 was killed by signal 9"), "{message}");
    assert!(store.verify().unwrap().problems.is_empty(), "the store is invalid after the failure");
    set_kill(None);
    let (_, reports) = run_until(killed.path(), "stages/cap");
    let resumed = report(&reports, "stages/cap");
    assert_eq!(resumed.status, NodeStatus::Executed, "{:?}", resumed.error);
    assert_eq!(resumed.artifact, Some(uninterrupted), "the resumed tp x pp run differs from an uninterrupted one");
}

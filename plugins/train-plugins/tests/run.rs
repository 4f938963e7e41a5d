//! Runs a small curriculum end to end through `aurora-worker` (CAP from scratch, CAT continuing
//! its run, safety SFT) on the sample corpus, twice in two stores: the artifacts are identical.
//! Needs the worker binary in the target directory (`cargo build -p aurora-worker`; `cargo xtask
//! test` builds it first).

use aurora_corpus as _;
use aurora_tokens as _;
use aurora_train_plugins as _;

mod common;

use aurora_core::execute::{NodeReport, NodeStatus};
use common::*;

#[test]
fn a_curriculum_trains_continues_and_tunes_reproducibly() {
    if !worker_built() {
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    project(a.path(), MANIFEST);
    project(b.path(), MANIFEST);
    let (store, first) = run_in(a.path());
    for r in &first {
        assert_eq!(r.status, NodeStatus::Executed, "{}: {:?}", r.id, r.error);
    }
    let artifact = |reports: &[NodeReport], id: &str| reports.iter().find(|r| r.id == id).unwrap().artifact.unwrap();
    let dir = |id: &str| store.artifact_dir(&artifact(&first, id));

    let cap = json(&dir("stages/cap").join("trainer_state.json"));
    let cat = json(&dir("stages/cat").join("trainer_state.json"));
    let sft = json(&dir("sft/safety").join("trainer_state.json"));
    // CAT continues CAP's run: its step counter and token total go on from CAP's.
    let (cap_steps, cat_steps) = (cap["step"].as_u64().unwrap(), cat["stage_steps"].as_u64().unwrap());
    assert!(cap_steps > 0 && cat_steps > 0);
    assert_eq!(cat["step"].as_u64().unwrap(), cap_steps + cat_steps);
    assert_eq!(
        cat["tokens_total"].as_u64().unwrap(),
        cap["tokens_total"].as_u64().unwrap() + cat["tokens"].as_u64().unwrap()
    );
    // SFT takes CAT's weights but starts a fresh run of `steps` updates.
    assert_eq!(sft["stage_steps"], 3);
    assert_eq!(sft["step"], 3);
    // CAP learns: the last update's loss is well below the first's.
    let losses = losses(&dir("stages/cap"));
    assert_eq!(losses.len() as u64, cap_steps);
    assert!(losses[losses.len() - 1] < losses[0] - 0.5, "loss did not fall: {losses:?}");
    assert!(dir("stages/cap").join("milestones/tokens-8192/model.safetensors").is_file());
    assert_eq!(json(&dir("models/tiny").join("config.json"))["model_type"], "gpt_bigcode");

    // Same manifest, another store: bitwise-identical artifacts (CPU, fixed threads).
    let (_, second) = run_in(b.path());
    for id in ["stages/cap", "stages/cat", "sft/safety"] {
        assert_eq!(artifact(&first, id), artifact(&second, id), "{id} differs between two runs");
    }
}

#[test]
fn a_worker_failure_fails_the_node_with_the_workers_message() {
    if !worker_built() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest =
        MANIFEST.replacen("init = \"stages.cap\"\ncontinue_run = true", "init = { hf = \"file:data/empty-hf\" }", 1);
    project(dir.path(), &manifest);
    std::fs::create_dir_all(dir.path().join("data/empty-hf")).unwrap();
    std::fs::write(dir.path().join("data/empty-hf/README"), "no config.json here").unwrap();
    let (_, reports) = run_until(dir.path(), "stages/cat");
    let cat = reports.iter().find(|r| r.id == "stages/cat").unwrap();
    assert_eq!(cat.status, NodeStatus::Failed);
    let reason = cat.error.as_deref().unwrap_or_default();
    assert!(reason.contains("aurora-worker exited with status 1 while running stages/cat"), "{reason}");
}

//! A dp = 2 stage through a real single-node Slurm (Debian `slurm-wlm`, started by
//! aurora-slurm-testkit): `sbatch -n 2` runs `aurora run` once, which runs the stage's ranks as
//! one `srun` step; the artifact is byte-identical to the same stage run by the local launcher
//! (the launcher never enters a key). Skips with a printed reason only where Slurm cannot start
//! (fails in CI). Needs `aurora-worker` beside `aurora` (`cargo xtask test` builds it).

use std::time::Duration;

use super::common::*;

mod executor;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/data/sample/eng_Latn.jsonl");

/// A tiny stage at dp = 2 over the shipped English sample.
pub(crate) const MANIFEST: &str = r#"[experiment]
name = "slurm"
seed = 3

[sources.eng]
plugin = "source.jsonl"
files = ["file:data/eng_Latn.jsonl"]
lang = "eng_Latn"
dedup = false

[tokenizers.bpe]
plugin = "tokenizer.bpe"
vocab_size = 320
special_tokens = ["<|endoftext|>"]
sample = ["sources.eng"]

[mixtures.cap]
plugin = "mixer.blend"
tokenizer = "tokenizers.bpe"
weights = { eng = 1.0 }
tokens = 4096
seq_len = 32

[models.tiny]
plugin = "model.gptbigcode"
vocab_size = 320
n_positions = 64
n_embd = 32
n_layer = 2
n_head = 2

[schedulers.cap]
plugin = "scheduler.constant"
lr = 1e-3

[stages.cap]
plugin = "train.tch"
model = "models.tiny"
data = "mixtures.cap"
schedule = "schedulers.cap"
seq_len = 32
micro_batch = 2
global_batch = 8
steps = 4
device = "cpu"
threads = 1
layout = { dp = 2 }
"#;

pub(crate) fn project() -> Project {
    let p = Project::new();
    p.write("m.toml", MANIFEST);
    std::fs::copy(SAMPLE, p.path("data/eng_Latn.jsonl")).expect("copy the sample corpus");
    p
}

/// The artifact digest of `stages/cap` in a `--json` report.
fn cap_artifact(report: &serde_json::Value) -> String {
    let nodes = report["nodes"].as_array().expect("nodes");
    let cap = nodes.iter().find(|n| n["id"] == "stages/cap").expect("stages/cap is in the report");
    assert_eq!(cap["status"], "executed", "{cap}");
    cap["artifact"].as_str().expect("an artifact").to_owned()
}

/// Whether `aurora-worker` is built beside `aurora`; otherwise the test is skipped with the reason (failed where
/// `CI=true`: `cargo xtask test` builds it first).
fn worker_built() -> bool {
    let worker = std::path::Path::new(env!("CARGO_BIN_EXE_aurora")).with_file_name("aurora-worker");
    if !worker.is_file() {
        let how = "build it with `cargo build -p aurora-worker` (`cargo xtask test` does)";
        aurora_process_testkit::Skip::missing(worker.display(), how).report();
        return false;
    }
    true
}

#[test]
fn a_data_parallel_stage_runs_through_srun_with_the_local_launchers_bytes() {
    if !worker_built() {
        return;
    }
    let Some(cluster) = aurora_slurm_testkit::start_or_skip("a_data_parallel_stage_runs_through_srun") else {
        return;
    };
    let local = project();
    let local_report = local.json(&["run", "m.toml", "--launcher", "local", "--json"]);

    let slurm = project();
    let aurora = env!("CARGO_BIN_EXE_aurora");
    let script = format!("cd {} && {aurora} run m.toml --json > report.json", slurm.root.display());
    let mut sbatch = cluster.command("sbatch");
    sbatch
        .args(["--wait", "-n", "2", "-o"])
        .arg(slurm.path("slurm.out"))
        .arg("--wrap")
        .arg(script)
        .env("NO_COLOR", "1")
        .env_remove("AURORA_STORE")
        .env_remove("AURORA_LAUNCHER");
    let out = aurora_slurm_testkit::output_with_timeout(&mut sbatch, Duration::from_secs(300)).expect("sbatch ran");
    let job_output = std::fs::read_to_string(slurm.path("slurm.out")).unwrap_or_default();
    assert!(out.status.success(), "sbatch failed: {}\n{job_output}\n{}", stderr(&out), cluster.logs());
    let report: serde_json::Value = serde_json::from_str(&slurm.read("report.json")).expect("aurora's --json report");
    let artifact = cap_artifact(&report);
    // The stage ran as an srun step of two tasks (its log says so) ...
    let log = std::fs::read_to_string(slurm.artifact_dir(&artifact).join("ARTIFACT.log")).unwrap();
    assert!(log.contains("2 ranks, Slurm launcher"), "{log}");
    assert!(log.contains("srun --ntasks=2"), "{log}");
    assert!(log.contains("[rank 1] aurora-worker: training stages/cap"), "{log}");
    // ... and produced the bytes the local launcher did.
    assert_eq!(artifact, cap_artifact(&local_report), "the launcher changed the artifact");
}

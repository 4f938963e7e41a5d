//! Shared by the tests that run stages through `aurora-worker`: a small curriculum manifest
//! (CAP from scratch, CAT continuing its run, safety SFT) over the sample corpus, and helpers to
//! lay out a project and run it.
#![allow(dead_code)]

use std::path::Path;

use aurora_core::Store;
use aurora_core::execute::{NodeReport, RunOptions, Silent, run};
use aurora_core::manifest::{ResolveOptions, resolve};
use aurora_core::plan::plan;
use aurora_core::plugin::NoProgress;
use aurora_process_testkit::{OrSkip, Skip};
use serde_json::Value;

pub const MANIFEST: &str = r#"[experiment]
name = "e2e"
seed = 7

[sources.eng]
plugin = "source.jsonl"
files = ["file:data/eng_Latn.jsonl"]
lang = "eng_Latn"
dedup = false

[sources.fin]
plugin = "source.jsonl"
files = ["file:data/fin_Latn.jsonl"]
lang = "fin_Latn"
dedup = false

[tokenizers.bpe]
plugin = "tokenizer.bpe"
vocab_size = 512
special_tokens = ["<|endoftext|>"]
sample = ["sources.eng", "sources.fin"]

[mixtures.cap]
plugin = "mixer.blend"
tokenizer = "tokenizers.bpe"
weights = { eng = 0.5, fin = 0.5 }
tokens = 20000
seq_len = 64

[mixtures.cat]
plugin = "mixer.blend"
tokenizer = "tokenizers.bpe"
weights = { eng = 0.8, fin = 0.2 }
tokens = 4000
seq_len = 64

[models.tiny]
plugin = "model.gptbigcode"
vocab_size = 512
n_positions = 128
n_embd = 64
n_layer = 2
n_head = 4

[schedulers.cap]
plugin = "scheduler.cosine"
max_lr = 3e-3
min_lr = 3e-4
warmup_steps = 4
decay_steps = 30

[schedulers.cat]
plugin = "scheduler.constant"
lr = 3e-4

[stages.cap]
plugin = "train.tch"
model = "models.tiny"
data = "mixtures.cap"
schedule = "schedulers.cap"
seq_len = 64
micro_batch = 4
global_batch = 8
device = "cpu"
threads = 1
checkpoint_every_tokens = 4096
milestones = [8192]

[stages.cat]
plugin = "train.tch"
model = "models.tiny"
init = "stages.cap"
continue_run = true
data = "mixtures.cat"
schedule = "schedulers.cat"
seq_len = 64
micro_batch = 4
global_batch = 8
device = "cpu"
threads = 1

[sft.safety]
plugin = "sft.instructions"
init = "stages.cat"
files = ["file:data/safety.json"]
schedule = "schedulers.cat"
seq_len = 128
micro_batch = 2
global_batch = 4
steps = 3
device = "cpu"
threads = 1
"#;

pub const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments/data/sample");

pub const INSTRUCTIONS: &str = r#"[
  {"instruction": "How do I pick a lock to get into my neighbour's house?", "input": "", "output": "I can't help with breaking into someone else's home."},
  {"instruction": "Summarise the text.", "input": "Rust is a systems programming language.", "output": "Rust is a language for systems programming."},
  {"instruction": "Write a threatening message to my coworker.", "output": "I won't write threats. If there is a conflict, talking to HR may help."}
]"#;

pub fn project(dir: &Path, manifest: &str) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for lang in ["eng_Latn", "fin_Latn"] {
        std::fs::copy(format!("{SAMPLE}/{lang}.jsonl"), dir.join(format!("data/{lang}.jsonl"))).unwrap();
    }
    // Four copies: 12 examples, enough for 3 updates of 4 sequences.
    std::fs::write(dir.join("data/safety.json"), INSTRUCTIONS.repeat(4).replace("][", ",")).unwrap();
    std::fs::write(dir.join("m.toml"), manifest).unwrap();
}

/// Runs the whole project at `dir`.
pub fn run_in(dir: &Path) -> (Store, Vec<NodeReport>) {
    run_with(dir, None)
}

/// Whether `aurora-worker` is built; the tests that need it skip with the reason when it is
/// not, except in CI (`CI=true`), where `cargo xtask test` builds it first and a skip is a failure.
#[track_caller]
pub fn worker_built() -> bool {
    aurora_worker_api::client::worker_path().map_err(|e| Skip::new(e.to_string())).or_skip().is_some()
}

pub fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs `node` and what it depends on in the project at `dir`.
pub fn run_until(dir: &Path, node: &str) -> (Store, Vec<NodeReport>) {
    run_with(dir, Some(node))
}

fn run_with(dir: &Path, until: Option<&str>) -> (Store, Vec<NodeReport>) {
    let plan = plan(resolve(&dir.join("m.toml"), &ResolveOptions::default()).unwrap()).unwrap();
    let store = Store::open(&dir.join(".aurora")).unwrap();
    let options = RunOptions { jobs: 1, until: until.map(str::to_owned), ..Default::default() };
    let reports = run(&plan, &store, &options, &Silent, &NoProgress).unwrap();
    (store, reports)
}

/// The report of node `id`.
pub fn report<'a>(reports: &'a [NodeReport], id: &str) -> &'a NodeReport {
    reports.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no report for {id}"))
}

/// The artifact directory of node `id`, which must have succeeded.
pub fn artifact_dir(store: &Store, reports: &[NodeReport], id: &str) -> std::path::PathBuf {
    let r = report(reports, id);
    store.artifact_dir(&r.artifact.unwrap_or_else(|| panic!("{id} has no artifact: {:?}", r.error)))
}

/// The loss of every step in a stage artifact's `metrics.jsonl`.
pub fn losses(stage: &Path) -> Vec<f64> {
    std::fs::read_to_string(stage.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

/// Every float32 tensor of a safetensors file, by name.
pub fn tensors(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(name, v)| {
            (name, v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        })
        .collect()
}

/// Relative Frobenius error `|a - b| / |a|` (as Megatron's equivalence tests measure) over all
/// tensors together, and the largest per tensor with its name.
pub fn relative_errors(
    a: &std::collections::BTreeMap<String, Vec<f32>>,
    b: &std::collections::BTreeMap<String, Vec<f32>>,
) -> (f64, f64, String) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "different tensors");
    let (mut diff_all, mut norm_all) = (0.0, 0.0);
    let mut worst = (0.0, String::new());
    for (name, x) in a {
        let diff: f64 = x.iter().zip(&b[name]).map(|(p, q)| (f64::from(*p) - f64::from(*q)).powi(2)).sum();
        let norm: f64 = x.iter().map(|p| f64::from(*p).powi(2)).sum();
        diff_all += diff;
        norm_all += norm;
        let rel = (diff / norm.max(1e-60)).sqrt();
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
    }
    ((diff_all / norm_all.max(1e-60)).sqrt(), worst.0, worst.1)
}

/// CAP for 8 updates of 8 sequences (micro-batches of 2), checkpointed every 4 updates, with
/// `settings` added (a layout, the optimizer sharding).
pub fn with_cap(settings: &str) -> String {
    let cap = "micro_batch = 4\nglobal_batch = 8\ndevice = \"cpu\"\nthreads = 1\ncheckpoint_every_tokens = 4096\nmilestones = [8192]";
    assert!(MANIFEST.contains(cap));
    MANIFEST.replacen(
        cap,
        &format!(
            "micro_batch = 2\nglobal_batch = 8\nsteps = 8\ndevice = \"cpu\"\nthreads = 1\ncheckpoint_every_tokens = 2048\nmilestones = [2048]\n{settings}"
        ),
        1,
    )
}

/// A store and the reports of a run.
pub type Run = (Store, Vec<NodeReport>);

/// Lays out `manifest` in `dir` and runs it until node `until`, which must succeed with every
/// node before it.
pub fn train(dir: &Path, manifest: &str, until: &str) -> Run {
    project(dir, manifest);
    let (store, reports) = run_until(dir, until);
    for r in &reports {
        assert!(r.error.is_none(), "{} failed: {}", r.id, r.error.as_deref().unwrap_or_default());
    }
    (store, reports)
}

/// Each value of `a` within 1e-5 (relative) of `b`'s, step by step.
pub fn assert_close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: different step counts");
    for (step, (x, y)) in a.iter().zip(b).enumerate() {
        let rel = (x - y).abs() / x.abs().max(1e-12);
        assert!(rel < 1e-5, "{what}: step {} {x} vs {y} (relative error {rel:e})", step + 1);
    }
}

//! Runs a small curriculum end to end through `aurora-worker` (CAP from scratch, CAT continuing
//! its run, safety SFT) on the sample corpus, twice in two stores: the artifacts are identical.
//! Needs the worker binary in the target directory (`cargo build -p aurora-worker`; `cargo xtask
//! test` builds it first).

use aurora_corpus as _;
use aurora_tokens as _;
use aurora_train_plugins as _;

use std::path::Path;

use aurora_core::Store;
use aurora_core::execute::{NodeReport, NodeStatus, RunOptions, Silent, run};
use aurora_core::manifest::{ResolveOptions, resolve};
use aurora_core::plan::plan;
use aurora_core::plugin::NoProgress;
use serde_json::Value;

const MANIFEST: &str = r#"[experiment]
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

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments/data/sample");

const INSTRUCTIONS: &str = r#"[
  {"instruction": "How do I pick a lock to get into my neighbour's house?", "input": "", "output": "I can't help with breaking into someone else's home."},
  {"instruction": "Summarise the text.", "input": "Rust is a systems programming language.", "output": "Rust is a language for systems programming."},
  {"instruction": "Write a threatening message to my coworker.", "output": "I won't write threats. If there is a conflict, talking to HR may help."}
]"#;

fn project(dir: &Path, manifest: &str) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for lang in ["eng_Latn", "fin_Latn"] {
        std::fs::copy(format!("{SAMPLE}/{lang}.jsonl"), dir.join(format!("data/{lang}.jsonl"))).unwrap();
    }
    // Four copies: 12 examples, enough for 3 updates of 4 sequences.
    std::fs::write(dir.join("data/safety.json"), INSTRUCTIONS.repeat(4).replace("][", ",")).unwrap();
    std::fs::write(dir.join("m.toml"), manifest).unwrap();
}

fn run_in(dir: &Path) -> (Store, Vec<NodeReport>) {
    let plan = plan(resolve(&dir.join("m.toml"), &ResolveOptions::default()).unwrap()).unwrap();
    let store = Store::open(&dir.join(".aurora")).unwrap();
    let reports = run(&plan, &store, &RunOptions { jobs: 1, ..Default::default() }, &Silent, &NoProgress).unwrap();
    (store, reports)
}

fn worker_built() -> bool {
    match aurora_worker_api::client::worker_path() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

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
    let losses: Vec<f64> = std::fs::read_to_string(dir("stages/cap").join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect();
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
    let plan = plan(resolve(&dir.path().join("m.toml"), &ResolveOptions::default()).unwrap()).unwrap();
    let store = Store::open(&dir.path().join(".aurora")).unwrap();
    let options = RunOptions { jobs: 1, until: Some("stages/cat".into()), ..Default::default() };
    let reports = run(&plan, &store, &options, &Silent, &NoProgress).unwrap();
    let cat = reports.iter().find(|r| r.id == "stages/cat").unwrap();
    assert_eq!(cat.status, NodeStatus::Failed);
    let reason = cat.error.as_deref().unwrap_or_default();
    assert!(reason.contains("aurora-worker exited with status 1 while running stages/cat"), "{reason}");
}

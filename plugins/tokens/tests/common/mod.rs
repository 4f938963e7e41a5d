//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aurora_core::plugin::{ExecContext, ExecOutcome, NoProgress, Plugin, PluginError, registry};
use serde_json::{Value, json};

/// `../shared/data` (real data for tests), or `None` when absent: skipped with the reason, failed where `CI=true`.
#[track_caller]
pub fn shared_data() -> Option<PathBuf> {
    aurora_process_testkit::shared_data("")
}

#[track_caller]
pub fn gpt2_tokenizer_json() -> Option<PathBuf> {
    aurora_process_testkit::shared_data("tokenizer/gpt2_tokenizer.json")
}

/// The shipped sample corpus.
pub fn sample_corpus() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments/data/sample"))
}

/// Texts of a sample-corpus `.jsonl` file (`text` field).
pub fn sample_texts(file: &str) -> Vec<String> {
    std::fs::read_to_string(sample_corpus().join(file))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect()
}

/// Writes a documents artifact (the corpus crate's contract) into `dir`.
pub fn write_documents(dir: &Path, lang: &str, texts: &[String]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut jsonl = String::new();
    for t in texts {
        jsonl.push_str(&serde_json::to_string(&json!({ "text": t })).unwrap());
        jsonl.push('\n');
    }
    std::fs::write(dir.join("documents.jsonl"), jsonl).unwrap();
    std::fs::write(dir.join("heldout.jsonl"), "").unwrap();
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    let info = json!({
        "lang": lang, "programming_language": null, "documents": texts.len(), "bytes": bytes,
        "heldout_documents": 0, "heldout_bytes": 0, "filters": [], "skipped_lines": 0,
    });
    std::fs::write(dir.join("source.json"), serde_json::to_string_pretty(&info).unwrap()).unwrap();
}

/// Executes a registered plugin on a node config, as the executor would.
pub fn exec(
    plugin: &str,
    config: Value,
    inputs: &BTreeMap<String, PathBuf>,
    out: &Path,
    seed: u64,
) -> Result<ExecOutcome, PluginError> {
    let plugin: &dyn Plugin = registry().get(plugin).expect("registered");
    std::fs::create_dir_all(out).unwrap();
    let resume = out.with_extension("resume");
    std::fs::create_dir_all(&resume).unwrap();
    let mut log = Vec::new();
    let mut ctx = ExecContext {
        node_id: "test/node",
        config: &config,
        seed,
        inputs,
        out_dir: out,
        resume_dir: &resume,
        cores: aurora_core::cores::machine_cores(),
        log: &mut log,
        progress: &NoProgress,
    };
    plugin.execute(&mut ctx)
}

/// Every file of a directory (relative path -> bytes), for byte-identity checks.
pub fn dir_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

//! What the `eval.code` tests share: running a planned node without a model (its `file:` inputs
//! resolved in the project), the MultiPL-E test data, and the skip rule for toolchains.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aurora_core::plan::Plan;
use aurora_core::plugin::InputSource;
use aurora_eval::toolchain::{self, Language};
use aurora_process_testkit::Skip;
use serde_json::Value;

use crate::common::Project;

/// The MultiPL-E-shaped problems written for these tests (see its README).
pub const MULTIPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/multiple");

/// What a node wrote: results.json and the text of completions.jsonl and generations.jsonl.
pub struct Scored {
    pub results: Value,
    pub completions: String,
    pub generations: String,
    pub out: PathBuf,
}

/// Executes node `id` of `plan` with its `file:` inputs resolved in the project (and no model).
pub fn execute(project: &Project, plan: &Plan, id: &str) -> Result<Scored, String> {
    let node = plan.node(id).unwrap_or_else(|| panic!("no node {id}"));
    let inputs: BTreeMap<String, PathBuf> = node
        .inputs
        .iter()
        .map(|(name, spec)| match &spec.source {
            InputSource::Path(reference) => (name.clone(), project.dir.path().join(&reference["file:".len()..])),
            InputSource::Node(node) => panic!("{id} takes node {node}: not a node scored without a model"),
        })
        .collect();
    let out = project.execute_node(plan, id, &inputs)?;
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    Ok(Scored {
        results: serde_json::from_str(&read("results.json")).unwrap(),
        completions: read("completions.jsonl"),
        generations: read("generations.jsonl"),
        out,
    })
}

/// Copies `file` of the MultiPL-E test data into the project as `as_`.
pub fn copy_multiple(project: &Project, file: &str, as_: &str) {
    std::fs::copy(Path::new(MULTIPLE).join(file), project.dir.path().join(as_)).unwrap();
}

/// Whether `language`'s toolchain is here; if not, the test is skipped with what to install
/// (and fails where `CI=true`).
#[track_caller]
pub fn have(language: Language) -> bool {
    match toolchain::check(language) {
        Ok(()) => true,
        Err(e) => {
            Skip::new(e.to_string()).report();
            false
        }
    }
}

/// The lines of a JSON Lines text.
pub fn lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

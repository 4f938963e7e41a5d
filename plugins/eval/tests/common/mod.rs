//! Test helpers: temp projects with manifests planned through aurora-core, and stand-in
//! plugins for the entries evaluators depend on (model-producing stages, sources).

#![allow(dead_code)]

// The evaluators register by being linked.
use aurora_eval as _;

use std::collections::BTreeMap;
use std::path::PathBuf;

use aurora_core::diagnostic::Diagnostics;
use aurora_core::manifest::{ResolveOptions, resolve};
use aurora_core::plan::{Plan, plan};
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, NoProgress, NodeSpec, Offer, Output, PlanContext, Plugin, PluginError, registry,
};
use serde_json::Value;
use tempfile::TempDir;

pub const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments/data/sample");

/// `Some(dir)` when `sub` of the real test data (`../shared/data`) exists; otherwise the test is skipped with the
/// reason, or fails where `CI=true`.
#[track_caller]
pub fn shared(sub: &str) -> Option<PathBuf> {
    aurora_process_testkit::shared_data(sub)
}

/// A stand-in for a training stage: any config (e.g. `milestones = [...]`), one node, no inputs.
#[derive(Debug, Clone, Default)]
pub struct StubStage;
aurora_core::register_plugin!(StubStage);

impl Plugin for StubStage {
    fn id(&self) -> &'static str {
        "trainer.stub"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "test stand-in for a model-producing stage"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::json_schema!({ "type": "object" })
    }
    /// Its model and, like a stage, each of its `milestones` at `milestones/tokens-N`.
    fn offers(&self, entry: &Entry<'_>, _: &PlanContext<'_>) -> Vec<Offer> {
        let mut tokens: Vec<u64> = entry
            .config
            .get("milestones")
            .and_then(Value::as_array)
            .map_or(Vec::new(), |m| m.iter().filter_map(Value::as_u64).collect());
        tokens.sort_unstable();
        std::iter::once(Offer::new(Output::MODEL, entry.node_id()))
            .chain(
                tokens.iter().map(|t| Offer::new(Output::MODEL, entry.node_id()).at(format!("milestones/tokens-{t}"))),
            )
            .collect()
    }
    fn plan(&self, entry: &Entry<'_>, _: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        Ok(vec![NodeSpec::for_entry(entry, entry.config.clone(), BTreeMap::new())])
    }
    fn execute(&self, _: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        Err(PluginError::new("stub"))
    }
}

/// A stand-in for a source: it offers documents.
#[derive(Debug, Clone, Default)]
pub struct StubSource;
aurora_core::register_plugin!(StubSource);

impl Plugin for StubSource {
    fn id(&self) -> &'static str {
        "source.stub"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "test stand-in for a documents-producing source"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::json_schema!({ "type": "object" })
    }
    fn offers(&self, entry: &Entry<'_>, _: &PlanContext<'_>) -> Vec<Offer> {
        vec![Offer::new(Output::DOCUMENTS, entry.node_id())]
    }
    fn plan(&self, entry: &Entry<'_>, _: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        Ok(vec![NodeSpec::for_entry(entry, entry.config.clone(), BTreeMap::new())])
    }
    fn execute(&self, _: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        Err(PluginError::new("stub"))
    }
}

/// A temporary project: a directory with `aurora.toml` and data files.
pub struct Project {
    pub dir: TempDir,
}

/// Stages, an SFT entry and a source that evaluators can name.
pub const MODELS: &str = r#"
[stages.base]
plugin = "trainer.stub"

[stages.cap]
plugin = "trainer.stub"
milestones = [20000, 10000]

[stages.cat]
plugin = "trainer.stub"

[sft.safety]
plugin = "trainer.stub"

[sources.eng_web]
plugin = "source.stub"
"#;

impl Project {
    /// Executes node `id` of `plan` with `inputs` (name -> path), in `out/ID` (emptied first)
    /// with scratch in `resume/ID`; returns the output directory, or the redacted error.
    pub fn execute_node(&self, plan: &Plan, id: &str, inputs: &BTreeMap<String, PathBuf>) -> Result<PathBuf, String> {
        let node = plan.node(id).unwrap_or_else(|| panic!("no node {id}"));
        let out = self.dir.path().join("out").join(id);
        let resume = self.dir.path().join("resume").join(id);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let mut log = Vec::new();
        let mut ctx = ExecContext {
            node_id: id,
            config: &node.config,
            seed: node.seed,
            inputs,
            out_dir: &out,
            resume_dir: &resume,
            cores: aurora_core::cores::machine_cores(),
            log: &mut log,
            progress: &NoProgress,
        };
        registry().get(node.plugin.id()).unwrap().execute(&mut ctx).map_err(|e| self.redact(&e.message))?;
        Ok(out)
    }

    pub fn new() -> Project {
        Project { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes `aurora.toml` = an `[experiment]` header + [`MODELS`] + `body`, and plans it.
    pub fn manifest(&self, body: &str) -> Result<Plan, String> {
        let text = format!("[experiment]\nname = \"eval-test\"\nseed = 7\n{MODELS}\n{body}");
        let path = self.write("aurora.toml", text);
        let resolved = resolve(&path, &ResolveOptions::default()).map_err(|d| self.redact(&d.to_string()))?;
        plan(resolved).map_err(|d| self.redact(&d.to_string()))
    }

    /// The planning error of a manifest that must not plan.
    pub fn error(&self, body: &str) -> String {
        match self.manifest(body) {
            Ok(_) => panic!("planning succeeded, expected an error"),
            Err(e) => e,
        }
    }

    pub fn plan(&self, body: &str) -> Plan {
        self.manifest(body).unwrap_or_else(|e| panic!("planning failed:\n{e}"))
    }

    /// Ids of the plan's nodes under `prefix`, sorted.
    pub fn ids(plan: &Plan, prefix: &str) -> Vec<String> {
        let mut ids: Vec<String> =
            plan.nodes.iter().map(|n| n.id.clone()).filter(|id| id.starts_with(prefix)).collect();
        ids.sort();
        ids
    }

    pub fn redact(&self, text: &str) -> String {
        let canonical = self.dir.path().canonicalize().unwrap();
        text.replace(&canonical.display().to_string(), "[PROJECT]")
            .replace(&self.dir.path().display().to_string(), "[PROJECT]")
    }
}

/// A node's config.
pub fn config<'a>(plan: &'a Plan, id: &str) -> &'a Value {
    &plan.node(id).unwrap_or_else(|| panic!("no node {id}")).config
}

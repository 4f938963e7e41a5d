//! Test helpers: temp projects with manifests, planning through aurora-core, and a tiny
//! in-process executor that runs planned nodes through the `Plugin` trait.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aurora_core::manifest::{ResolveOptions, resolve};
use aurora_core::plan::{Plan, plan};
use aurora_core::plugin::{ExecContext, ExecOutcome, InputSource, NoProgress, PluginError, registry};
use serde_json::Value;
use tempfile::TempDir;

pub const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments/data/sample");

/// `Some(dir)` when `sub` of the real test data (`../shared/data`) exists; otherwise the test is skipped with the
/// reason, or fails where `CI=true`.
#[track_caller]
pub fn shared(sub: &str) -> Option<PathBuf> {
    aurora_process_testkit::shared_data(sub)
}

/// A temporary project: a directory with `aurora.toml` and data files.
pub struct Project {
    pub dir: TempDir,
}

impl Project {
    pub fn new() -> Project {
        Project { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes `aurora.toml` = an `[experiment]` header + `body`, and resolves it.
    pub fn manifest(&self, body: &str) -> Result<Plan, String> {
        let text = format!("[experiment]\nname = \"corpus-test\"\nseed = 7\n\n{body}");
        let path = self.write("aurora.toml", text);
        let resolved = resolve(&path, &ResolveOptions::default()).map_err(|d| self.redact(&d.to_string()))?;
        plan(resolved).map_err(|d| self.redact(&d.to_string()))
    }

    pub fn plan(&self, body: &str) -> Plan {
        self.manifest(body).unwrap_or_else(|e| panic!("planning failed:\n{e}"))
    }

    /// Replaces the temp directory in messages so snapshots are stable.
    pub fn redact(&self, text: &str) -> String {
        let canonical = self.dir.path().canonicalize().unwrap();
        text.replace(&canonical.display().to_string(), "[PROJECT]")
            .replace(&self.dir.path().display().to_string(), "[PROJECT]")
    }
}

/// Outputs of an executed plan: node id -> artifact directory.
pub struct Outputs {
    pub root: TempDir,
    pub dirs: BTreeMap<String, PathBuf>,
    pub metrics: BTreeMap<String, serde_json::Map<String, Value>>,
}

impl Outputs {
    pub fn dir(&self, node: &str) -> &Path {
        &self.dirs[node]
    }
    pub fn read(&self, node: &str, file: &str) -> String {
        std::fs::read_to_string(self.dir(node).join(file)).unwrap()
    }
    pub fn bytes(&self, node: &str, file: &str) -> Vec<u8> {
        std::fs::read(self.dir(node).join(file)).unwrap()
    }
    /// The texts of a `documents.jsonl` / `heldout.jsonl`.
    pub fn texts(&self, node: &str, file: &str) -> Vec<String> {
        texts(&self.read(node, file))
    }
    pub fn json(&self, node: &str, file: &str) -> Value {
        serde_json::from_str(&self.read(node, file)).unwrap()
    }
}

pub fn texts(jsonl: &str) -> Vec<String> {
    jsonl
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let obj = v.as_object().unwrap();
            assert_eq!(obj.len(), 1, "documents are {{\"text\": ...}} only");
            obj["text"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Executes one node's plugin with a hand-built `ExecContext`.
pub fn execute(
    plugin_id: &str,
    node_id: &str,
    config: &Value,
    inputs: &BTreeMap<String, PathBuf>,
    out_dir: &Path,
) -> Result<ExecOutcome, PluginError> {
    let plugin = registry().get(plugin_id).unwrap_or_else(|| panic!("plugin {plugin_id} is not registered"));
    std::fs::create_dir_all(out_dir).unwrap();
    let resume = out_dir.with_extension("resume");
    std::fs::create_dir_all(&resume).unwrap();
    let mut log: Vec<u8> = Vec::new();
    let mut ctx = ExecContext {
        node_id,
        config,
        seed: 1,
        inputs,
        out_dir,
        resume_dir: &resume,
        cores: aurora_core::cores::machine_cores(),
        log: &mut log,
        progress: &NoProgress,
    };
    plugin.execute(&mut ctx)
}

/// Executes every node of a plan in order into a fresh temp directory.
pub fn run(plan: &Plan) -> Result<Outputs, PluginError> {
    let root = tempfile::tempdir().unwrap();
    let mut dirs = BTreeMap::new();
    let mut metrics = BTreeMap::new();
    for node in &plan.nodes {
        let inputs: BTreeMap<String, PathBuf> = node
            .inputs
            .iter()
            .map(|(name, spec)| {
                let path = match &spec.source {
                    InputSource::Path(f) => plan.manifest.input_path(f),
                    InputSource::Node(id) => dirs.get(id).cloned().expect("upstream ran first"),
                };
                (name.clone(), path)
            })
            .collect();
        let out = root.path().join(node.id.replace('/', "__"));
        let outcome = execute(node.plugin.id(), &node.id, &node.config, &inputs, &out)?;
        metrics.insert(node.id.clone(), outcome.metrics);
        dirs.insert(node.id.clone(), out);
    }
    Ok(Outputs { root, dirs, metrics })
}

/// Every file under `dir` with its bytes, by relative path.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(path.strip_prefix(base).unwrap().display().to_string(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

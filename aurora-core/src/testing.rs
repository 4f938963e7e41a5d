//! A conformance suite for plugin crates, built in or third-party: what aurora relies on from
//! every plugin, checked from the plugin's own tests.
//!
//! ```ignore
//! #[test]
//! fn conforms() {
//!     let case = Case::new("[experiment]\nname = \"t\"\nseed = 1\n[steps.up]\nplugin = \"text.upper\"\ninput = \"file:in.txt\"\n")
//!         .file("in.txt", "hello");
//!     let outcome = aurora_core::testing::conformance::<Upper>(&case);
//!     assert_eq!(std::fs::read_to_string(outcome.artifact("steps/up").join("out.txt")).unwrap(), "HELLO");
//! }
//! ```
//!
//! Every check panics with a message naming the plugin (and the node), as a test assertion does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Store;
use crate::canonical::canonical_json;
use crate::execute::{NodeReport, NodeStatus, RunOptions, Silent, run};
use crate::manifest::{ResolveOptions, resolve};
use crate::plan::{Plan, plan};
use crate::plugin::{NoProgress, Plugin, registry};

/// Checks what every registered plugin must satisfy without running it: an id `kind.name`
/// (its kind is the prefix), a version (it enters every key) and description, and a config
/// schema that compiles and rejects unknown keys (so a typo is reported, not ignored).
pub fn check_plugin(plugin: &dyn Plugin) {
    let id = plugin.id();
    let (kind, name) = id.split_once('.').unwrap_or_else(|| panic!("plugin `{id}`: its id is not `kind.name`"));
    assert!(!kind.is_empty(), "plugin `{id}`: the kind part of the id must be non-empty");
    assert!(
        !name.is_empty() && !name.contains('.'),
        "plugin `{id}`: the name part of the id must be non-empty and dot-free"
    );
    assert_eq!(plugin.kind().as_str(), kind, "plugin `{id}`: kind() must be the id's prefix (do not override it)");
    assert!(!plugin.version().trim().is_empty(), "plugin `{id}`: version() must be non-empty (it enters every key)");
    assert!(!plugin.description().trim().is_empty(), "plugin `{id}`: description() must be non-empty");
    let schema = plugin.config_schema().to_value();
    if let Err(e) = jsonschema::validator_for(&schema) {
        panic!("plugin `{id}`: its config schema does not compile: {e}");
    }
    assert_eq!(
        schema["additionalProperties"],
        Value::Bool(false),
        "plugin `{id}`: its config must reject unknown keys (#[serde(deny_unknown_fields)]) so typos are reported"
    );
}

/// A small real project for [`conformance`]: a whole manifest and the files it reads.
#[derive(Debug, Clone, Default)]
pub struct Case {
    /// `[experiment]` (name, seed) and entries using the plugin under test.
    pub manifest: String,
    /// Path relative to the project root -> bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Case {
    pub fn new(manifest: impl Into<String>) -> Case {
        Case { manifest: manifest.into(), files: BTreeMap::new() }
    }
    /// Adds a file the manifest reads (`file:PATH`), relative to the project root.
    pub fn file(mut self, path: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Case {
        self.files.insert(path.into(), bytes.into());
        self
    }
}

/// What a passing [`conformance`] run leaves for further assertions: the project and the first
/// store, alive until this is dropped.
pub struct Outcome {
    /// The first execution's report, one per node in plan order.
    pub reports: Vec<NodeReport>,
    pub store: Store,
    project: tempfile::TempDir,
}

impl Outcome {
    /// The project directory the case was written to.
    pub fn project(&self) -> &Path {
        self.project.path()
    }
    /// The artifact directory of a node (panics if the node has none).
    pub fn artifact(&self, node: &str) -> PathBuf {
        let report =
            self.reports.iter().find(|r| r.id == node).unwrap_or_else(|| panic!("no node `{node}` in the plan"));
        let digest = report.artifact.unwrap_or_else(|| panic!("node `{node}` has no artifact"));
        self.store.artifact_dir(&digest)
    }
}

/// Checks a plugin end to end on a small real case: [`check_plugin`]; it is registered (its crate
/// uses `register_plugin!` and is linked into the test); the case validates and plans to at least
/// one node of the plugin; planning is deterministic; executing the plan in two fresh stores
/// gives the same artifact digest for every node; and a rerun is answered from the cache.
///
/// Determinism is aurora's contract with a plugin (keys stand for bytes), so a plugin that fails
/// this would serve stale or inconsistent results from every cache.
pub fn conformance<P: Plugin + Default>(case: &Case) -> Outcome {
    let plugin = P::default();
    let id = plugin.id();
    check_plugin(&plugin);
    let registered = registry().get(id).unwrap_or_else(|| {
        panic!(
            "plugin `{id}` is not in the registry: call `aurora_core::register_plugin!({})` in its crate, and link \
             the crate into this test (`use its_crate as _;`)",
            std::any::type_name::<P>()
        )
    });
    assert_eq!(
        (registered.version(), registered.description()),
        (plugin.version(), plugin.description()),
        "plugin `{id}`: the registered plugin of that id is another one"
    );

    let project = tempfile::tempdir().expect("a temporary directory");
    let root = project.path();
    let manifest_path = root.join("manifest.toml");
    std::fs::write(&manifest_path, &case.manifest).expect("the manifest is written");
    for (rel, bytes) in &case.files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the case's directories are created");
        }
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write the case's file {rel}: {e}"));
    }
    let plan_once = || -> Plan {
        let resolved = resolve(&manifest_path, &ResolveOptions::default())
            .unwrap_or_else(|e| panic!("plugin `{id}`: the case's manifest does not resolve:\n{e}"));
        plan(resolved).unwrap_or_else(|e| panic!("plugin `{id}`: the case does not validate or plan:\n{e}"))
    };
    let first = plan_once();
    assert!(
        first.nodes.iter().any(|n| n.plugin.id() == id),
        "plugin `{id}`: the case plans no node of it (nodes: {:?})",
        first.nodes.iter().map(|n| &n.id).collect::<Vec<_>>()
    );
    let second = plan_once();
    assert_eq!(summary(&first), summary(&second), "plugin `{id}`: planning the same manifest twice differs");

    let store_a = Store::open(&root.join("store-a")).expect("a fresh store");
    let store_b = Store::open(&root.join("store-b")).expect("a fresh store");
    let reports = execute(id, &first, &store_a);
    let again = execute(id, &second, &store_b);
    for (a, b) in reports.iter().zip(&again) {
        if a.artifact != b.artifact {
            let (da, db) = (a.artifact.expect("executed"), b.artifact.expect("executed"));
            panic!(
                "plugin `{id}`: node `{}` ({}) is not deterministic: two executions published different \
                 artifacts ({da} and {db}); files that differ: {:?}",
                a.id,
                a.plugin,
                differing_files(&store_a.artifact_dir(&da), &store_b.artifact_dir(&db))
            );
        }
    }
    let rerun = run(&first, &store_a, &options(), &Silent, &NoProgress)
        .unwrap_or_else(|e| panic!("plugin `{id}`: rerunning the case failed: {e}"));
    for r in &rerun {
        assert_eq!(
            r.status,
            NodeStatus::Cached,
            "plugin `{id}`: node `{}` ({}) is not cached on a rerun",
            r.id,
            r.plugin
        );
    }
    Outcome { reports, store: store_a, project }
}

fn options() -> RunOptions {
    RunOptions { jobs: 1, ..Default::default() }
}

/// Executes every node of the plan; panics on any failure, naming the node.
fn execute(id: &str, plan: &Plan, store: &Store) -> Vec<NodeReport> {
    let reports = run(plan, store, &options(), &Silent, &NoProgress)
        .unwrap_or_else(|e| panic!("plugin `{id}`: the case does not run: {e}"));
    for r in &reports {
        assert!(
            r.status == NodeStatus::Executed && r.artifact.is_some(),
            "plugin `{id}`: node `{}` ({}) did not execute in a fresh store: {:?} {}",
            r.id,
            r.plugin,
            r.status,
            r.error.as_deref().unwrap_or("")
        );
    }
    reports
}

/// What planning decides, per node, in plan order: id, plugin, canonical config, inputs, seed,
/// execution facts.
fn summary(plan: &Plan) -> Vec<String> {
    plan.nodes
        .iter()
        .map(|n| {
            format!(
                "{} {}@{} config={} inputs={:?} seed={} facts={:?}",
                n.id,
                n.plugin.id(),
                n.plugin.version(),
                String::from_utf8_lossy(&canonical_json(&n.config)),
                n.inputs,
                n.seed,
                n.facts
            )
        })
        .collect()
}

/// Relative paths whose bytes differ, or that exist in only one of two artifacts.
fn differing_files(a: &Path, b: &Path) -> Vec<String> {
    let files = |dir: &Path| -> BTreeMap<String, crate::Digest> {
        aurora_store::hash_tree(dir)
            .map(|(_, f)| f.into_iter().map(|f| (f.path, f.blake3)).collect())
            .unwrap_or_default()
    };
    let (a, b) = (files(a), files(b));
    let mut paths: Vec<String> = a.keys().chain(b.keys()).filter(|p| a.get(*p) != b.get(*p)).cloned().collect();
    paths.sort();
    paths.dedup();
    paths
}

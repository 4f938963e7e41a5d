//! Plugins: registered implementations of one kind (source, tokenizer, ..., exec), found by linking.
//!
//! A plugin crate registers itself with
//! `aurora_core::register_plugin!(MyPlugin);` and every binary that links it (even with only
//! `use my_plugin as _;`) sees it in [`registry()`]. There is no central list to edit.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::manifest::ResolvedManifest;

/// What a plugin is for. The kind is the part of the id before the dot (`source.jsonl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Exec,
    Source,
    /// Removes duplicates across sources (e.g. `dedup.exact`).
    Dedup,
    Tokenizer,
    Mixer,
    Model,
    Scheduler,
    #[serde(rename = "train")]
    Trainer,
    #[serde(rename = "eval")]
    Evaluator,
    Sft,
    #[serde(rename = "report")]
    Reporter,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Exec => "exec",
            PluginKind::Source => "source",
            PluginKind::Dedup => "dedup",
            PluginKind::Tokenizer => "tokenizer",
            PluginKind::Mixer => "mixer",
            PluginKind::Model => "model",
            PluginKind::Scheduler => "scheduler",
            PluginKind::Trainer => "train",
            PluginKind::Evaluator => "eval",
            PluginKind::Sft => "sft",
            PluginKind::Reporter => "report",
        }
    }
}

/// One manifest entry (`[SECTION.NAME]` with `plugin = "..."`) handed to a plugin for planning.
pub struct Entry<'a> {
    pub section: &'a str,
    pub name: &'a str,
    /// The entry's table without its `plugin` key, already validated against the plugin's schema.
    pub config: &'a Value,
}

impl Entry<'_> {
    /// `SECTION/NAME`: the id of the entry's main node.
    pub fn node_id(&self) -> String {
        format!("{}/{}", self.section, self.name)
    }
    /// JSON pointer of the entry in the resolved manifest.
    pub fn pointer(&self) -> String {
        format!("/{}/{}", self.section, self.name)
    }
    /// Deserialises the config (validation has already run, so this only fails on plugin bugs
    /// or constraints the schema cannot express; the error is located at the entry).
    pub fn parse<T: DeserializeOwned>(&self, manifest: &ResolvedManifest) -> Result<T, Diagnostic> {
        serde_json::from_value(self.config.clone()).map_err(|e| {
            Diagnostic::new(format!("invalid `{}.{}`: {e}", self.section, self.name))
                .at(manifest.sources.value(&self.pointer()))
                .pointer(self.pointer())
        })
    }
}

/// Where a node input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// Another node's artifact directory, by node id (`steps/clean`).
    Node(String),
    /// A file or directory, as a `file:` reference from the resolved manifest.
    Path(String),
}

/// One named input of a node, with the manifest location that declared it (for errors).
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub source: InputSource,
    pub pointer: String,
}

/// A node as planned by a plugin: id, the config that enters its key, and its inputs.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: String,
    /// The registered plugin that executes this node; `None` means the entry's own plugin. Lets
    /// one entry plan shared helper nodes (e.g. a mixture planning `tokens/...` nodes executed by
    /// a tokenization plugin that has no entry of its own).
    pub plugin: Option<&'static str>,
    /// Only what changes the node's output; paths of inputs do not belong here (inputs enter the
    /// key by content digest).
    pub config: Value,
    pub inputs: BTreeMap<String, InputSpec>,
    /// Manifest location of the entry that produced the node.
    pub pointer: String,
}

impl NodeSpec {
    /// The usual node of an entry: id `SECTION/NAME`, executed by the entry's own plugin.
    pub fn for_entry(entry: &Entry<'_>, config: Value, inputs: BTreeMap<String, InputSpec>) -> NodeSpec {
        NodeSpec { id: entry.node_id(), plugin: None, config, inputs, pointer: entry.pointer() }
    }
}

/// What planning sees: the resolved manifest, read only.
pub struct PlanContext<'a> {
    pub manifest: &'a ResolvedManifest,
}

impl PlanContext<'_> {
    /// Parses a reference to another entry, `SECTION.NAME`, into its node id `SECTION/NAME`.
    /// Whether that node exists is checked by the planner once all nodes are known.
    pub fn entry_ref(&self, reference: &str) -> Option<String> {
        let (section, name) = reference.split_once('.')?;
        (!section.is_empty() && !name.is_empty() && !name.contains('.')).then(|| format!("{section}/{name}"))
    }
}

/// Progress reported by long-running nodes; the CLI shows it as a progress bar.
pub trait Progress: Send + Sync {
    /// `done` of `total` units (tokens, documents, ...), with a short status message.
    fn update(&self, node: &str, done: u64, total: u64, message: &str);
}

/// Progress that goes nowhere (tests, `--json`).
pub struct NoProgress;
impl Progress for NoProgress {
    fn update(&self, _: &str, _: u64, _: u64, _: &str) {}
}

/// What execution sees.
pub struct ExecContext<'a> {
    pub node_id: &'a str,
    pub config: &'a Value,
    pub seed: u64,
    /// Input name -> file or artifact directory (read only).
    pub inputs: &'a BTreeMap<String, PathBuf>,
    /// Write outputs here; they become the artifact.
    pub out_dir: &'a Path,
    /// Persists across crashed attempts of the same node key (checkpoints); removed after success.
    pub resume_dir: &'a Path,
    /// Kept with the artifact as `ARTIFACT.log`.
    pub log: &'a mut dyn Write,
    pub progress: &'a dyn Progress,
}

impl ExecContext<'_> {
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| PluginError::new(format!("config of {} does not parse: {e}", self.node_id)))
    }
}

/// A successful execution: metrics recorded with the artifact.
#[derive(Debug, Default)]
pub struct ExecOutcome {
    pub metrics: Map<String, Value>,
}

/// A failed execution.
#[derive(Debug)]
pub struct PluginError {
    pub message: String,
    /// The last lines of the node's log, shown with the error.
    pub log_tail: Option<String>,
}

impl PluginError {
    pub fn new(message: impl Into<String>) -> Self {
        PluginError { message: message.into(), log_tail: None }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for PluginError {}

/// A registered plugin.
pub trait Plugin: dyn_clone::DynClone + Send + Sync + 'static {
    /// `kind.name`, unique in the registry.
    fn id(&self) -> &'static str;
    fn kind(&self) -> PluginKind;
    /// Enters every node key: bump it whenever the plugin's output bytes may change.
    fn version(&self) -> &'static str;
    /// One line for `aurora plugins`.
    fn description(&self) -> &'static str;
    /// JSON Schema of the entry's config (the entry minus `plugin`), usually `schemars::schema_for!`.
    fn config_schema(&self) -> schemars::Schema;
    /// Turns a validated entry into nodes. Most plugins produce one node with the entry's id.
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics>;
    /// Produces the node's outputs in `ctx.out_dir`.
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError>;
    /// Facts about the execution environment that change output bytes (device class, dtype,
    /// library versions, determinism mode). They enter the node key; nothing else about the
    /// environment does.
    fn execution_facts(&self, _config: &Value) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    /// One line `aurora plan` shows beside the node before anything runs: sizes, memory, token
    /// and FLOP estimates computed from the node's config (e.g. what a paper-scale stage needs).
    fn estimate(&self, _config: &Value) -> Option<String> {
        None
    }
    /// What one node needs from a cluster scheduler (`--executor slurm` sizes its job from it).
    /// Never part of a key.
    fn resources(&self, _config: &Value) -> Resources {
        Resources::default()
    }
}

dyn_clone::clone_trait_object!(Plugin);

/// A node's share of a cluster: its processes and what each one needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resources {
    /// Processes (ranks) the node runs at once: `tp * pp * dp` for a training stage.
    pub tasks: u32,
    /// CPU cores per process.
    pub cpus_per_task: u32,
    /// Accelerators (GPUs, GCDs) per process.
    pub gpus_per_task: u32,
    /// Memory per process, in MiB, where the plugin can tell.
    pub memory_mb_per_task: Option<u64>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources { tasks: 1, cpus_per_task: 1, gpus_per_task: 0, memory_mb_per_task: None }
    }
}

/// An `inventory` registration: a constructor, because statics cannot hold boxed trait objects.
pub struct Registration {
    pub make: fn() -> Box<dyn Plugin>,
}

inventory::collect!(Registration);

/// Registers a plugin type that implements `Plugin + Default`.
#[macro_export]
macro_rules! register_plugin {
    ($ty:ty) => {
        $crate::inventory::submit! {
            $crate::plugin::Registration { make: || Box::new(<$ty as ::core::default::Default>::default()) }
        }
    };
}

/// Every registered plugin, sorted by id. Panics at first use if two plugins share an id: that
/// is a build configuration error no run may proceed with.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::from_plugins(inventory::iter::<Registration>().map(|r| (r.make)()).collect()))
}

pub struct Registry {
    plugins: BTreeMap<&'static str, Box<dyn Plugin>>,
}

impl Registry {
    fn from_plugins(plugins: Vec<Box<dyn Plugin>>) -> Registry {
        let mut map = BTreeMap::new();
        for p in plugins {
            let id = p.id();
            assert!(map.insert(id, p).is_none(), "two registered plugins share the id `{id}`: rename one of them");
        }
        Registry { plugins: map }
    }

    pub fn get(&self, id: &str) -> Option<&dyn Plugin> {
        self.plugins.get(id).map(|p| p.as_ref())
    }

    pub fn ids(&self) -> Vec<&'static str> {
        self.plugins.keys().copied().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn Plugin> {
        self.plugins.values().map(|p| p.as_ref())
    }
}

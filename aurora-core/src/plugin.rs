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
use crate::language::LoadedPack;
use crate::manifest::ResolvedManifest;

/// What a plugin is for: the part of its id before the dot (`source` in `source.jsonl`).
///
/// Kinds are open: a plugin crate may introduce a kind aurora has never heard of (`text.upper`)
/// without an edit here. The kinds of the shipped plugins are `exec`, `source`, `dedup`,
/// `tokenizer`, `mixer`, `model`, `scheduler`, `train`, `eval`, `sft`, `report` and `language`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct PluginKind(&'static str);

impl PluginKind {
    /// The kind of a plugin id: everything before the first dot (the whole id if there is none).
    pub fn of_id(id: &'static str) -> PluginKind {
        PluginKind(id.split_once('.').map_or(id, |(kind, _)| kind))
    }
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// What an entry's node holds, as its plugin declares it ([`Plugin::offers`]), so that other
/// plugins find it by what it is, never by a section name or a node id. Open like [`PluginKind`]:
/// a plugin crate may offer and look up outputs of its own (`Output::new("alignment")`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Output(&'static str);

impl Output {
    /// Cleaned documents (what sources produce; tokenization reads them).
    pub const DOCUMENTS: Output = Output("documents");
    /// The documents cross-source dedup removes from a source that takes part in it.
    pub const DEDUP_DROPS: Output = Output("dedup-drops");
    /// A token store ready to mix (a source that is already tokenized).
    pub const TOKENS: Output = Output("tokens");
    /// A tokenizer (`tokenizer.json` and its metadata).
    pub const TOKENIZER: Output = Output("tokenizer");
    /// Training samples blended from token stores.
    pub const MIXTURE: Output = Output("mixture");
    /// A model checkpoint in Hugging Face format that evaluators load.
    pub const MODEL: Output = Output("model");
    /// An evaluation's results (`results.json`).
    pub const EVALUATION: Output = Output("evaluation");

    pub const fn new(name: &'static str) -> Output {
        Output(name)
    }
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// One output of an entry: what it is and which node holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub output: Output,
    pub node: String,
    /// A directory inside the node's artifact, where the output is one of several the node holds
    /// (a stage's token milestones, `milestones/tokens-N`); `None`: the artifact itself.
    pub subdir: Option<String>,
    /// At most how many bytes of text the output holds, where the offering plugin can tell
    /// without reading it (file sizes, compressed frames' declared sizes, Parquet metadata):
    /// lets a mixture warn at plan time that a share cannot be met.
    pub text_bytes: Option<u64>,
    /// The first documents' text (up to [`TEXT_SAMPLE_BYTES`]), where the offering plugin can
    /// read it at plan time: a mixture measures its tokenizer's bytes per token on it.
    pub text_sample: Option<String>,
    /// The manifest's `file:` input that is the output itself, where it is a file rather than
    /// something the node builds (a `tokenizer.file`'s `tokenizer.json`).
    pub file: Option<String>,
}

/// How much text a [`Offer::text_sample`] holds at most, in bytes.
pub const TEXT_SAMPLE_BYTES: usize = 64 * 1024;

impl Offer {
    pub fn new(output: Output, node: impl Into<String>) -> Offer {
        Offer { output, node: node.into(), subdir: None, text_bytes: None, text_sample: None, file: None }
    }
    pub fn with_text_bytes(mut self, bytes: Option<u64>) -> Offer {
        self.text_bytes = bytes;
        self
    }
    pub fn with_text_sample(mut self, sample: Option<String>) -> Offer {
        self.text_sample = sample;
        self
    }
    pub fn with_file(mut self, file: impl Into<String>) -> Offer {
        self.file = Some(file.into());
        self
    }
    pub fn at(mut self, subdir: impl Into<String>) -> Offer {
        self.subdir = Some(subdir.into());
        self
    }
}

/// One manifest entry (`[SECTION.NAME]` with `plugin = "..."`) handed to a plugin for planning.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    pub section: &'a str,
    pub name: &'a str,
    /// The plugin the entry names.
    pub plugin: &'static dyn Plugin,
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
    /// `SECTION.NAME`: how manifests refer to the entry.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.section, self.name)
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

/// What planning sees: the resolved manifest, read only, and typed lookups of other entries by
/// what they offer, so no plugin names another's sections or node ids.
pub struct PlanContext<'a> {
    pub manifest: &'a ResolvedManifest,
    entries: Vec<(String, String, &'static dyn Plugin, Value)>,
    languages: OnceLock<Vec<LoadedPack>>,
    /// Entries whose offers are being computed: an entry whose offers depend on others' (an
    /// evaluator's checkpoints) may reach itself again, which then offers nothing.
    asking: std::sync::Mutex<Vec<String>>,
    /// Each entry's offers, computed once (a source's may stat its files).
    offered: std::sync::Mutex<std::collections::HashMap<String, Vec<Offer>>>,
    /// What planning found worth saying that does not stop it (`aurora plan` prints them).
    warnings: std::sync::Mutex<Vec<Diagnostic>>,
}

impl<'a> PlanContext<'a> {
    pub fn new(manifest: &'a ResolvedManifest) -> PlanContext<'a> {
        PlanContext {
            manifest,
            entries: crate::validate::entries(manifest),
            languages: OnceLock::new(),
            asking: std::sync::Mutex::new(Vec::new()),
            offered: std::sync::Mutex::new(std::collections::HashMap::new()),
            warnings: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Every plugin entry of the manifest, in (section, name) order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        self.entries.iter().map(|(section, name, plugin, config)| Entry { section, name, plugin: *plugin, config })
    }

    /// The entry a `SECTION.NAME` reference names.
    pub fn entry(&self, reference: &str) -> Option<Entry<'_>> {
        let (section, name) = reference.split_once('.')?;
        self.entries().find(|e| e.section == section && e.name == name)
    }

    /// What `entry` offers of `output` (several offers for a stage's milestones or an
    /// evaluator's checkpoints).
    pub fn offers(&self, entry: &Entry<'_>, output: Output) -> Vec<Offer> {
        let reference = entry.reference();
        let of = |offers: &[Offer]| offers.iter().filter(|o| o.output == output).cloned().collect();
        if let Some(offers) = self.offered.lock().expect("not poisoned").get(&reference) {
            return of(offers);
        }
        {
            let mut asking = self.asking.lock().expect("not poisoned");
            if asking.contains(&reference) {
                return Vec::new();
            }
            asking.push(reference.clone());
        }
        let offers = entry.plugin.offers(entry, self);
        self.asking.lock().expect("not poisoned").retain(|r| *r != reference);
        let wanted = of(&offers);
        self.offered.lock().expect("not poisoned").insert(reference, offers);
        wanted
    }

    /// Records a warning: something the user should know before running that does not stop
    /// planning (a mixture share its sources cannot hold).
    pub fn warn(&self, warning: Diagnostic) {
        self.warnings.lock().expect("not poisoned").push(warning.warning());
    }

    /// The warnings recorded so far, in the order they were recorded.
    pub fn warnings(&self) -> Vec<Diagnostic> {
        self.warnings.lock().expect("not poisoned").clone()
    }

    /// The node holding `entry`'s whole `output` (not one at a subdirectory), if it offers one.
    pub fn offer(&self, entry: &Entry<'_>, output: Output) -> Option<String> {
        self.offers(entry, output).into_iter().find(|o| o.subdir.is_none()).map(|o| o.node)
    }

    /// The node a reference to another entry's `output` reads (`sample = ["sources.web"]`): the
    /// node the entry offers; for a well-formed reference to an entry that does not exist, its
    /// would-be node id, which the planner reports with a did-you-mean; `None` when the
    /// reference is not `SECTION.NAME` or the entry does not offer `output`.
    pub fn input_of(&self, reference: &str, output: Output) -> Option<String> {
        match self.entry(reference) {
            Some(entry) => self.offer(&entry, output),
            None => self.entry_ref(reference),
        }
    }

    /// The input a `file:` reference in an entry's `field` (at `pointer`) declares, or a located
    /// error saying it must be one (`what`: "a JSON Lines task file", ...).
    pub fn file_input(
        &self,
        reference: &str,
        pointer: String,
        field: &str,
        what: &str,
    ) -> Result<InputSpec, Diagnostic> {
        if reference.starts_with(crate::manifest::FILE_PREFIX) {
            return Ok(InputSpec { source: InputSource::Path(reference.to_string()), pointer });
        }
        Err(Diagnostic::new(format!("`{field}` = \"{reference}\" is not a file reference"))
            .at(self.manifest.sources.value(&pointer))
            .pointer(pointer)
            .expected(format!("\"file:PATH\" of {what} (relative to the manifest)")))
    }

    /// The entries that offer `output`.
    pub fn offering(&self, output: Output) -> Vec<Entry<'_>> {
        self.entries().filter(|e| !self.offers(e, output).is_empty()).collect()
    }

    /// The language packs the manifest loads (`language.pack` entries), by entry. A pack that
    /// does not load is left out here; its own entry reports why.
    pub fn languages(&self) -> &[LoadedPack] {
        self.languages.get_or_init(|| {
            self.entries()
                .filter(|e| e.plugin.id() == crate::language::PLUGIN_ID)
                .filter_map(|e| crate::language::load(self.manifest, &e).ok())
                .collect()
        })
    }

    /// The pack of the language `code` (FLORES-200, `est_Latn`), if the manifest loads one.
    pub fn language(&self, code: &str) -> Option<&LoadedPack> {
        self.languages().iter().find(|p| p.pack.code == code)
    }

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
    /// CPU cores the executor granted this node (from its [`Plugin::resources`]): size thread
    /// pools by this, not by the machine, so that nodes running beside it keep theirs.
    pub cores: usize,
    /// Kept with the artifact as `ARTIFACT.log`.
    pub log: &'a mut dyn Write,
    pub progress: &'a dyn Progress,
}

impl ExecContext<'_> {
    /// The file or artifact directory of input `name`; missing means the plugin planned the node
    /// without it (a plugin bug), said so in the error.
    pub fn input(&self, name: &str) -> Result<&Path, PluginError> {
        self.inputs
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| PluginError::new(format!("{}: input `{name}` is missing (planner bug)", self.node_id)))
    }

    /// The resume directory, created (it exists only once a plugin asks for it).
    pub fn resume_dir_created(&self) -> Result<&Path, PluginError> {
        std::fs::create_dir_all(self.resume_dir)
            .map_err(|e| PluginError::new(format!("cannot create {}: {e}", self.resume_dir.display())))?;
        Ok(self.resume_dir)
    }

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
    /// The id's prefix; not meant to be overridden (the id and its kind cannot disagree).
    fn kind(&self) -> PluginKind {
        PluginKind::of_id(self.id())
    }
    /// Enters every node key: bump it whenever the plugin's output bytes may change.
    fn version(&self) -> &'static str;
    /// One line for `aurora plugins`.
    fn description(&self) -> &'static str;
    /// JSON Schema of the entry's config (the entry minus `plugin`), usually `schemars::schema_for!`.
    fn config_schema(&self) -> schemars::Schema;
    /// What the entry's nodes hold for other entries, with the node holding each: how they find
    /// a source's documents or a stage's model without naming sections or node ids. Cheap and
    /// infallible: a config that does not parse offers nothing (its own `plan` reports it).
    fn offers(&self, _entry: &Entry<'_>, _ctx: &PlanContext<'_>) -> Vec<Offer> {
        Vec::new()
    }
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

/// A node's share of a machine or a cluster: its processes and what each one needs. The local
/// executor runs nodes side by side only as far as their cores fit ([`crate::cores`]); `--executor
/// slurm` sizes each node's job from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resources {
    /// Processes (ranks) the node runs at once: `tp * pp * dp` for a training stage.
    pub tasks: u32,
    /// CPU cores per process; 0: every core of the machine it runs on (a process sized by its
    /// libraries' defaults, such as libtorch's thread pool). Slurm jobs get 1 core per task then.
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

impl Resources {
    /// One process on every core of the machine: a node whose work runs on a thread pool as
    /// large as the machine (rayon's global pool, the sandbox's threads).
    pub fn every_core() -> Self {
        Resources { cpus_per_task: 0, ..Resources::default() }
    }
}

/// An `inventory` registration: a constructor, because statics cannot hold boxed trait objects,
/// and the crate that linked it (named in `aurora plugins` and in every run record).
pub struct Registration {
    pub make: fn() -> Box<dyn Plugin>,
    pub provider: Provider,
}

/// The crate a plugin comes from, as Cargo names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Provider {
    #[serde(rename = "crate")]
    pub crate_name: &'static str,
    pub version: &'static str,
}

inventory::collect!(Registration);

/// Registers a plugin type that implements `Plugin + Default`.
#[macro_export]
macro_rules! register_plugin {
    ($ty:ty) => {
        $crate::inventory::submit! {
            $crate::plugin::Registration {
                make: || Box::new(<$ty as ::core::default::Default>::default()),
                provider: $crate::plugin::Provider {
                    crate_name: ::core::env!("CARGO_PKG_NAME"),
                    version: ::core::env!("CARGO_PKG_VERSION"),
                },
            }
        }
    };
}

/// Every registered plugin, sorted by id. Panics at first use if two plugins share an id: that
/// is a build configuration error no run may proceed with.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        Registry::from_plugins(inventory::iter::<Registration>().map(|r| ((r.make)(), r.provider)).collect())
    })
}

pub struct Registry {
    plugins: BTreeMap<&'static str, (Box<dyn Plugin>, Provider)>,
}

impl Registry {
    fn from_plugins(plugins: Vec<(Box<dyn Plugin>, Provider)>) -> Registry {
        let mut map = BTreeMap::new();
        for (p, provider) in plugins {
            let id = p.id();
            if let Some((_, first)) = map.insert(id, (p, provider)) {
                panic!(
                    "two registered plugins share the id `{id}` ({} {} and {} {}): rename one of them",
                    first.crate_name, first.version, provider.crate_name, provider.version
                );
            }
        }
        Registry { plugins: map }
    }

    pub fn get(&self, id: &str) -> Option<&dyn Plugin> {
        self.plugins.get(id).map(|(p, _)| p.as_ref())
    }

    /// The crate that registered `id`.
    pub fn provider(&self, id: &str) -> Option<Provider> {
        self.plugins.get(id).map(|(_, provider)| *provider)
    }

    /// Every crate that registered a plugin, once each, sorted.
    pub fn providers(&self) -> Vec<Provider> {
        let set: std::collections::BTreeSet<Provider> = self.plugins.values().map(|(_, p)| *p).collect();
        set.into_iter().collect()
    }

    pub fn ids(&self) -> Vec<&'static str> {
        self.plugins.keys().copied().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn Plugin> {
        self.plugins.values().map(|(p, _)| p.as_ref())
    }
}

//! The manifest: a TOML file that pins everything deciding an experiment's result.
//!
//! Resolution order: the `extends` chain (parents first, children override), then the selected
//! profile (`--profile NAME`, else `experiment.default_profile`) deep-merged over it, then each
//! `--set`. The resolved manifest drops `extends`, `profiles` and `experiment.default_profile`
//! (they have been applied) and its canonical JSON, hashed with blake3, is the manifest digest.

mod resolve;
pub mod tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aurora_store::Digest;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::digest_json;
use crate::diagnostic::{Diagnostic, Diagnostics};
pub use resolve::display_path;
pub use tree::{FILE_PREFIX, SourceMap};

/// `[experiment]`: what the study is and its root seed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Short name of the experiment, used in reports.
    pub name: String,
    /// What the experiment studies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The paper or source this experiment reproduces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citation: Option<String>,
    /// Root seed; every node's seed is derived from it and the node's id.
    pub seed: u64,
    /// Profile applied when `--profile` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
}

/// How to resolve a manifest.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// `--profile NAME`; `None` falls back to `experiment.default_profile`.
    pub profile: Option<String>,
    /// `--set a.b=VALUE` overrides, applied in order.
    pub sets: Vec<String>,
}

/// A manifest after extends, profile and `--set`.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// The manifest file given on the command line (absolute).
    pub path: PathBuf,
    /// The repository root containing the manifest (outside a repository: the deepest directory
    /// containing every file of the `extends` chain).
    pub project_root: PathBuf,
    /// The profile that was applied.
    pub profile: Option<String>,
    /// The resolved manifest as JSON.
    pub value: Value,
    /// Where every value came from.
    pub sources: SourceMap,
    /// blake3 of the canonical JSON of `value`.
    pub digest: Digest,
    /// Each entry's `about` table (where its data comes from), by `SECTION.NAME`: documentation,
    /// kept out of `value`, so of every key and of the digest.
    pub about: BTreeMap<String, Value>,
    /// Each entry's `slurm` table (partition, account, time, ...), by `SECTION.NAME`: how
    /// `--executor slurm` submits its nodes, kept out of `value` like `about`.
    pub slurm: BTreeMap<String, Value>,
}

impl ResolvedManifest {
    /// The `[experiment]` table (validated by [`crate::validate`]).
    pub fn experiment(&self) -> Result<Experiment, Diagnostics> {
        let raw = self.value.get("experiment").cloned().unwrap_or(Value::Null);
        serde_json::from_value(raw).map_err(|e| {
            Diagnostic::new(format!("invalid `[experiment]`: {e}"))
                .at(self.sources.value("/experiment"))
                .pointer("/experiment")
                .into()
        })
    }

    /// `file:REL` value -> absolute path (REL is relative to the project root after resolution).
    pub fn input_path(&self, file_ref: &str) -> PathBuf {
        let rel = file_ref.strip_prefix(FILE_PREFIX).unwrap_or(file_ref);
        self.project_root.join(rel)
    }
}

/// The project root for a directory: the enclosing git work tree, or the directory itself.
pub fn project_root_for(dir: &Path) -> PathBuf {
    git_root(dir).unwrap_or_else(|| dir.to_path_buf())
}

fn git_root(dir: &Path) -> Option<PathBuf> {
    git2::Repository::discover(dir).ok().and_then(|r| r.workdir().and_then(|w| w.canonicalize().ok()))
}

/// The project root of a manifest: the enclosing git work tree; outside one, the deepest directory
/// containing every file of its `extends` chain, so that an ablation and its base share a store.
fn project_root_for_manifest(manifest: &Path) -> PathBuf {
    let dir = manifest.parent().expect("a file has a parent");
    if let Some(root) = git_root(dir) {
        return root;
    }
    let mut root = dir.to_path_buf();
    let mut seen = vec![manifest.to_path_buf()];
    let mut current = manifest.to_path_buf();
    // Best effort: unreadable files and cycles end the walk; resolution reports them properly.
    while let Some(parent) = std::fs::read_to_string(&current)
        .ok()
        .and_then(|text| toml_edit::Document::parse(text).ok())
        .and_then(|doc| doc.get(resolve::EXTENDS).and_then(|e| e.as_str()).map(str::to_string))
        .and_then(|rel| current.parent().map(|d| d.join(rel)))
        .and_then(|p| p.canonicalize().ok())
        .filter(|p| !seen.contains(p))
    {
        let parent_dir = parent.parent().expect("a file has a parent");
        while !parent_dir.starts_with(&root) && root.pop() {}
        seen.push(parent.clone());
        current = parent;
    }
    root
}

/// Resolves a manifest file. Errors are located diagnostics (exit code 2 in the CLI).
/// The entry key that removes an entry (`disabled = true`); `false` is the same as absent.
pub const DISABLED_KEY: &str = "disabled";

/// `disabled = true` drops an entry once every extends, profile and `--set` is merged, so an
/// ablation can remove a stage it inherits (`[stages.cat] disabled = true`). A reference to a
/// dropped entry is then an unknown reference, found by the planner.
fn remove_disabled_entries(tree: &mut tree::Sourced) {
    remove_entries_where(tree, |entry| {
        let disabled = entry.remove(DISABLED_KEY).map(|d| d.to_json());
        disabled == Some(Value::Bool(true))
    });
}

/// The entry key of what an entry's data is and where it comes from:
/// `about = { origin = "...", revision = "...", license = "...", note = "..." }`. It documents
/// the study (`aurora plan --inputs` lists it) and never changes a result.
pub const ABOUT_KEY: &str = "about";

/// The fields an `about` table may have.
pub const ABOUT_FIELDS: [&str; 4] = ["origin", "revision", "license", "note"];

/// The entry key of how a node is submitted to a cluster scheduler:
/// `slurm = { partition = "...", account = "...", time = "HH:MM:SS", qos = "...", constraint = "..." }`.
/// An execution option like `--executor`: never part of a key or the digest.
pub const SLURM_KEY: &str = "slurm";

/// The fields a `slurm` table may have (each passed to `sbatch` as `--FIELD=VALUE`).
pub const SLURM_FIELDS: [&str; 5] = ["partition", "account", "time", "qos", "constraint"];

/// A per-entry table that is kept out of the resolved value (so out of every key and the
/// digest): its key, allowed string fields, and what to say when it has others.
struct SideTable {
    key: &'static str,
    fields: &'static [&'static str],
    help: &'static str,
}

const ABOUT: SideTable = SideTable {
    key: ABOUT_KEY,
    fields: &ABOUT_FIELDS,
    help: "`about` documents where the data comes from; other settings belong to the entry",
};

const SLURM: SideTable = SideTable {
    key: SLURM_KEY,
    fields: &SLURM_FIELDS,
    help: "`slurm` says how the entry's nodes are submitted with `--executor slurm`; other settings belong to the entry",
};

/// Takes every entry's `table.key` table out of the tree, by `SECTION.NAME`; a table with other
/// fields, or with values that are not strings, is an error located by `sources`.
fn take_side_tables(
    tree: &mut tree::Sourced,
    sources: &SourceMap,
    table: &SideTable,
) -> Result<BTreeMap<String, Value>, Diagnostics> {
    let key = table.key;
    let mut taken = BTreeMap::new();
    let mut problems = Vec::new();
    let Some(root) = tree.as_table_mut() else { return Ok(taken) };
    for (section, entries) in root.iter_mut() {
        if section == "experiment" || section == "profiles" {
            continue;
        }
        for (name, entry) in entries.as_table_mut().into_iter().flat_map(|e| e.iter_mut()) {
            if let Some(a) = entry.as_table_mut().and_then(|e| e.remove(key)) {
                let value = a.to_json();
                let pointer = format!("/{section}/{name}/{key}");
                let fields = value.as_object().map(|o| o.iter().collect::<Vec<_>>());
                let bad: Vec<String> = match &fields {
                    Some(fields) => fields
                        .iter()
                        .filter(|(k, v)| !table.fields.contains(&k.as_str()) || !v.is_string())
                        .map(|(k, _)| format!("`{k}`"))
                        .collect(),
                    None => vec!["the value".to_owned()],
                };
                if !bad.is_empty() {
                    problems.push(
                        Diagnostic::new(format!("`{section}.{name}.{key}`: {} not allowed", bad.join(", ")))
                            .at(sources.value(&pointer))
                            .pointer(pointer)
                            .expected(format!("a table of strings with the fields {}", table.fields.join(", ")))
                            .help(table.help),
                    );
                }
                taken.insert(format!("{section}.{name}"), value);
            }
        }
    }
    if problems.is_empty() { Ok(taken) } else { Err(Diagnostics(problems)) }
}

/// Drops the entries for which `drop` (given the entry's table, which it may edit) says so.
fn remove_entries_where(tree: &mut tree::Sourced, mut drop: impl FnMut(&mut BTreeMap<String, tree::Sourced>) -> bool) {
    let Some(root) = tree.as_table_mut() else { return };
    for (section, entries) in root.iter_mut() {
        if section == "experiment" || section == "profiles" {
            continue;
        }
        if let Some(entries) = entries.as_table_mut() {
            entries.retain(|_, entry| !entry.as_table_mut().is_some_and(&mut drop));
        }
    }
}

pub fn resolve(path: &Path, options: &ResolveOptions) -> Result<ResolvedManifest, Diagnostics> {
    let abs = path.canonicalize().map_err(|e| {
        Diagnostic::new(format!("cannot read manifest `{}`: {e}", path.display()))
            .help("pass the path of a manifest TOML file, e.g. experiments/aurora-m.toml")
    })?;
    let dir = abs.parent().expect("a file has a parent").to_path_buf();
    let project_root = project_root_for_manifest(&abs);
    let mut tree = resolve::load_chain(&abs, &project_root, &mut Vec::new(), None)?.tree;

    let default_profile = tree
        .as_table()
        .and_then(|t| t.get("experiment"))
        .and_then(|e| e.as_table())
        .and_then(|e| e.get("default_profile"))
        .and_then(|p| p.to_json().as_str().map(str::to_string));
    let profile = options.profile.clone().or(default_profile);
    resolve::apply_profile(&mut tree, profile.as_deref())?;

    let cwd = std::env::current_dir().unwrap_or_else(|_| dir.clone());
    for set in &options.sets {
        resolve::apply_set(&mut tree, set, &cwd, &project_root)?;
    }
    if let Some(exp) = tree.as_table_mut().and_then(|t| t.get_mut("experiment")).and_then(|e| e.as_table_mut()) {
        exp.remove("default_profile");
    }
    remove_disabled_entries(&mut tree);
    // The map is taken before `about` and `slurm` leave the tree, so their errors are located.
    let sources = tree.source_map();
    let about = take_side_tables(&mut tree, &sources, &ABOUT);
    let slurm = take_side_tables(&mut tree, &sources, &SLURM);
    let (about, slurm) = match (about, slurm) {
        (Ok(about), Ok(slurm)) => (about, slurm),
        (about, slurm) => {
            let problems = [about.err(), slurm.err()].into_iter().flatten().flat_map(|d| d.0).collect();
            return Err(Diagnostics(problems));
        }
    };

    let value = tree.to_json();
    let digest = digest_json(&value);
    Ok(ResolvedManifest { path: abs, project_root, profile, value, sources, digest, about, slurm })
}

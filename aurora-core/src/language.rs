//! Language packs: a language added to a study as data, without compiling anything.
//!
//! A pack is a directory with a `language.toml` (FLORES code, name, licence, the cleaning filters a
//! source in that language gets when it lists none, with the measurements behind them, refusal
//! phrases for the safety evaluator, and the corpora and tasks it ships). A manifest loads it with
//! an entry of the `language.pack` plugin:
//!
//! ```toml
//! [languages.est]
//! plugin = "language.pack"
//! path = "file:languages/estonian"
//! ```
//!
//! Plugins read the loaded packs through [`PlanContext::languages`](crate::plugin::PlanContext):
//! what they take from a pack goes into their nodes' configs, so a pack's content enters the key
//! of every node it affects and removing the pack reverts those keys. Errors in a pack are
//! located in its `language.toml` like errors in a manifest.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::canonical::digest_json;
use crate::diagnostic::{Diagnostic, Diagnostics, Origin, SourceFile};
use crate::manifest::ResolvedManifest;
use crate::manifest::tree::{LoadCtx, SourceMap};
use crate::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, PlanContext, Plugin, PluginError,
};
use crate::validate::schema_errors_in;

/// The plugin id of language pack entries.
pub const PLUGIN_ID: &str = "language.pack";
/// The pack's own manifest, at the root of its directory.
pub const PACK_FILE: &str = "language.toml";

/// `language.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguagePack {
    /// FLORES-200 code of the language and script, e.g. `est_Latn`: what sources' `lang` and
    /// prompt files' language fields say.
    #[schemars(regex(pattern = r"^[a-z]{3}_[A-Z][a-z]{3}$"))]
    pub code: String,
    /// The language's English name.
    pub name: String,
    /// SPDX licence of the pack's data (phrases, corpora, tasks).
    pub license: String,
    /// Cleaning for sources in this language that list no `filters`.
    #[serde(default)]
    pub cleaning: Cleaning,
    /// Phrases a model uses to refuse in this language, for the safety evaluator's lexicon
    /// classifier (matched case-insensitively as substrings of a response).
    #[serde(default)]
    pub refusals: Refusals,
    /// Corpora the pack ships, by name.
    #[serde(default)]
    pub corpora: BTreeMap<String, Shipped>,
    /// Evaluation tasks the pack ships, by name.
    #[serde(default)]
    pub tasks: BTreeMap<String, Shipped>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cleaning {
    /// Filters written as a source's `filters` list (`{ min_chars = 50 }`,
    /// `{ langid = { min_confidence = 0.3 } }`, ...); checked by the source plugins.
    #[serde(default)]
    pub filters: Vec<Value>,
    /// What the thresholds were measured on and what they measured (documentation: it enters no
    /// key).
    #[serde(default)]
    pub measurements: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Refusals {
    /// Lower-case phrases; each should name a refusal itself ("I cannot help with"), not a word
    /// ordinary answers use too.
    #[serde(default)]
    pub phrases: Vec<String>,
}

/// A file the pack ships.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shipped {
    /// Path relative to the pack directory.
    pub file: String,
    /// The plugin that reads it (`source.jsonl`, `eval.choice`, ...).
    pub plugin: String,
    /// One line for `aurora languages`.
    pub description: String,
}

/// A pack as a manifest loaded it.
#[derive(Debug, Clone)]
pub struct LoadedPack {
    /// The manifest entry, `SECTION.NAME`.
    pub entry: String,
    /// The entry's `path`, a `file:` reference relative to the project root.
    pub path: String,
    pub pack: LanguagePack,
    /// Origins of the values of `language.toml`, for errors about them.
    pub sources: SourceMap,
    /// blake3 of the canonical JSON of `language.toml`: what the run record names.
    pub digest: crate::Digest,
}

impl LoadedPack {
    /// `file:` reference of a file of the pack (`files = ["file:..."]` in a manifest).
    pub fn file_ref(&self, file: &str) -> String {
        format!("{}/{file}", self.path.trim_end_matches('/'))
    }

    /// What the run record says about the pack.
    pub fn record(&self) -> Value {
        json!({ "entry": self.entry, "code": self.pack.code, "name": self.pack.name, "path": self.path, "digest": self.digest })
    }
}

/// The config of a `language.pack` entry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PackEntry {
    /// The pack directory (with `language.toml`), as `file:PATH`.
    #[schemars(regex(pattern = r"^file:"))]
    path: String,
}

/// Reads and checks the pack an entry names. Errors are located in `language.toml` (or at the
/// entry's `path` when the file cannot be read).
pub fn load(manifest: &ResolvedManifest, entry: &Entry<'_>) -> Result<LoadedPack, Diagnostics> {
    let config: PackEntry = entry.parse(manifest)?;
    let path_pointer = format!("{}/path", entry.pointer());
    let dir = manifest.input_path(&config.path);
    let file_path = dir.join(PACK_FILE);
    let display = Path::new(config.path.trim_start_matches(crate::manifest::FILE_PREFIX)).join(PACK_FILE);
    let text = std::fs::read_to_string(&file_path).map_err(|e| {
        Diagnostic::new(format!("cannot read the language pack `{}`: {e}", display.display()))
            .at(manifest.sources.value(&path_pointer))
            .pointer(path_pointer.clone())
            .expected(format!("a directory with a `{PACK_FILE}`"))
            .help("`path` is relative to the manifest; see the book's \"Adding a language\" for the pack's layout")
    })?;
    let file = Arc::new(SourceFile { display: display.display().to_string(), text });
    let doc = toml_edit::Document::parse(file.text.clone()).map_err(|e| {
        Diagnostic::new(format!("invalid TOML: {}", e.message().trim_end()))
            .at(Some(Origin::File { file: file.clone(), span: e.span().unwrap_or(0..0) }))
            .help("fix the TOML syntax at the marked position")
    })?;
    // No `file:` rewriting happens in a pack: its files are named relative to its directory.
    let ctx = LoadCtx { file, dir: &dir, project_root: &dir };
    let tree = ctx.table(doc.as_table(), Some(0..0))?;
    let sources = tree.source_map();
    let value = tree.to_json();
    let schema = schemars::schema_for!(LanguagePack);
    let problems = schema_errors_in(&sources, PACK_FILE, schema.as_value(), &value, "");
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    let pack: LanguagePack = serde_json::from_value(value.clone())
        .map_err(|e| Diagnostic::new(format!("invalid language pack: {e}")).at(sources.value("")).pointer(""))?;
    let mut problems = Vec::new();
    for (table, shipped) in [("corpora", &pack.corpora), ("tasks", &pack.tasks)] {
        for (name, s) in shipped {
            if !dir.join(&s.file).is_file() {
                let pointer = format!("/{table}/{name}/file");
                problems.push(
                    Diagnostic::new(format!("`{table}.{name}` names `{}`, which the pack does not contain", s.file))
                        .at(sources.value(&pointer))
                        .pointer(pointer)
                        .expected("a file path relative to the pack directory"),
                );
            }
        }
    }
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    Ok(LoadedPack {
        entry: format!("{}.{}", entry.section, entry.name),
        path: config.path,
        pack,
        sources,
        digest: digest_json(&value),
    })
}

/// `language.pack`: loads a pack for the other plugins (see [`PlanContext::languages`]) and plans
/// a node that checks it and writes it as `language.json`, so `aurora plan` shows it and the
/// run's artifacts hold it.
#[derive(Debug, Clone, Default)]
pub struct LanguagePackPlugin;
crate::register_plugin!(LanguagePackPlugin);

impl Plugin for LanguagePackPlugin {
    fn id(&self) -> &'static str {
        PLUGIN_ID
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "A language as data (language.toml): cleaning defaults, refusal phrases, shipped corpora and tasks"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(PackEntry)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let loaded = load(ctx.manifest, entry)?;
        if let Some(other) = ctx.languages().iter().find(|p| p.pack.code == loaded.pack.code && p.entry != loaded.entry)
        {
            let pointer = format!("{}/path", entry.pointer());
            return Err(Diagnostic::new(format!(
                "`{}` and `{}` both load a pack for `{}`",
                loaded.entry, other.entry, loaded.pack.code
            ))
            .at(ctx.manifest.sources.value(&pointer))
            .pointer(pointer)
            .expected("one pack per language")
            .help("remove one of the entries (an ablation can set `disabled = true` on the one it replaces)")
            .into());
        }
        let inputs = BTreeMap::from([(
            "pack".to_string(),
            InputSpec { source: InputSource::Path(loaded.path.clone()), pointer: format!("{}/path", entry.pointer()) },
        )]);
        Ok(vec![NodeSpec::for_entry(entry, json!({ "code": loaded.pack.code }), inputs)])
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let dir = ctx.input("pack")?;
        let path = dir.join(PACK_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| PluginError::new(format!("{}: {e}", path.display())))?;
        let pack: LanguagePack =
            toml::from_str(&text).map_err(|e| PluginError::new(format!("{}: {e}", path.display())))?;
        let out = ctx.out_dir.join("language.json");
        let json = serde_json::to_string_pretty(&pack).expect("serialises") + "\n";
        std::fs::write(&out, json).map_err(|e| PluginError::new(format!("{}: {e}", out.display())))?;
        let mut metrics = serde_json::Map::new();
        metrics.insert("refusal_phrases".into(), json!(pack.refusals.phrases.len()));
        metrics.insert("cleaning_filters".into(), json!(pack.cleaning.filters.len()));
        Ok(ExecOutcome { metrics })
    }
}

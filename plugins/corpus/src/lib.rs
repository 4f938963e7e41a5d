//! aurora-corpus: text sources, cleaning filters, the held-out split and cross-source exact dedup.
//!
//! Registered plugins:
//! - `source.jsonl`: JSON Lines (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`), one document per line.
//! - `source.text`: plain text, one document per file, line or paragraph.
//! - `source.instructions`: `{instruction, input, output}` records rendered with a template.
//! - `source.parquet` (feature `parquet`, on by default): a string column of Parquet shards.
//! - `dedup.exact`: planned by the sources themselves (node `dedup/exact`).
//!
//! Every source node `SECTION/NAME` writes the documents artifact:
//! - `documents.jsonl`: training documents after cleaning and after removing held-out ones, one
//!   `{"text": "..."}` per line, in source order;
//! - `heldout.jsonl`: the held-out documents, same format;
//! - `hashes.bin`: 16 bytes per line of `documents.jsonl` (blake3 of the normalized text,
//!   truncated; see [`text`]);
//! - `source.json`: `{"lang", "programming_language", "documents", "bytes", "heldout_documents",
//!   "heldout_bytes", "filters": [{"name", "removed"}], "skipped_lines"}` ("bytes" = UTF-8 bytes of
//!   the texts).
//!
//! Without a `filters` key, a source gets the cleaning defaults of the language pack the manifest
//! loads for its `lang` ([`defaults`]); explicit `filters` always win.
//!
//! The pipeline of a source: read the files in order (at most `max_documents` documents;
//! unreadable lines fail or are skipped per `on_error`), apply the filters in order (each counts
//! the documents it removed), then split off the held-out documents by hash. Output bytes depend
//! only on the input bytes and the settings (filters and hashes run in parallel in batches, and
//! are written in order).
//!
//! ```toml
//! [sources.fin_web]
//! plugin = "source.jsonl"
//! files = ["file:data/fin/*.jsonl.zst"]   # globs: expanded when planning, sorted
//! text_field = "text"                      # default
//! lang = "fin_Latn"
//! filters = [
//!   { min_chars = 50 },
//!   { max_symbol_ratio = 0.2 },
//!   { max_digit_ratio = 0.2 },
//!   { langid = { min_confidence = 0.5 } }, # lang defaults to the source's
//! ]
//! heldout = { fraction = 0.02, salt = "aurora-heldout-1" }
//! dedup = true                             # default
//! on_error = "fail"                        # default; or "skip"
//! max_documents = 1000                     # optional
//!
//! [sources.code_py]
//! plugin = "source.text"
//! files = ["file:data/code/*.py"]
//! split = "file"                           # default; or "line", "paragraph"
//! lang = "code"
//! programming_language = "python"
//!
//! [sources.safety]
//! plugin = "source.instructions"
//! files = ["file:data/safety.jsonl"]       # JSON array or JSON Lines
//! lang = "eng_Latn"
//! # template = "### Instruction:\n{instruction}\n### Response:\n{output}"   (default)
//!
//! [sources.hf_shards]
//! plugin = "source.parquet"
//! files = ["file:data/hf/train-*.parquet"]
//! text_column = "text"                     # default
//! lang = "vie_Latn"
//! ```

pub mod config;
pub mod dedup;
pub mod defaults;
pub mod filters;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod read;
pub mod size;
pub mod source;
pub mod text;

use std::path::Path;

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, NodeSpec, Offer, PlanContext, Plugin, PluginError, Resources,
};

use config::{Format, InstructionsConfig, JsonlConfig, TextConfig};
use read::{Emit, ReadError, ReadState};

/// Reads one input file of a source node in the node's format.
pub(crate) fn read_file(
    path: &Path,
    format: &Format,
    state: &mut ReadState,
    emit: &mut Emit<'_>,
) -> Result<bool, ReadError> {
    match format {
        Format::Jsonl { text_field } => read::jsonl(path, text_field, state, emit),
        Format::Text { split } => read::text(path, *split, state, emit),
        Format::Instructions { template, shape, fields } => {
            read::instructions(path, &read::Exchange { template, shape: *shape, fields }, state, emit)
        }
        #[cfg(feature = "parquet")]
        Format::Parquet { text_column } => parquet::read(path, text_column, state, emit),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet { .. } => Err(ReadError::Format {
            path: path.display().to_string(),
            detail: "this build has no Parquet support (feature `parquet` of aurora-corpus)".to_string(),
        }),
    }
}

/// Version of the source plugins: bump when their output bytes may change.
// 2: source artifacts also carry `heldout_hashes.bin`.
const SOURCE_VERSION: &str = "2";

#[derive(Debug, Clone, Default)]
pub struct JsonlSource;
aurora_core::register_plugin!(JsonlSource);

impl Plugin for JsonlSource {
    fn id(&self) -> &'static str {
        "source.jsonl"
    }
    fn version(&self) -> &'static str {
        SOURCE_VERSION
    }
    fn description(&self) -> &'static str {
        "JSON Lines documents (.jsonl, .jsonl.gz, .jsonl.zst, globs), cleaned, held-out split, dedup hashes"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(JsonlConfig)
    }
    fn offers(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Vec<Offer> {
        let format = entry.parse::<JsonlConfig>(ctx.manifest).ok().map(|c| Format::Jsonl { text_field: c.text_field });
        source::offers(entry, ctx, format)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: JsonlConfig = entry.parse(ctx.manifest)?;
        source::plan(entry, ctx, config.common(), Format::Jsonl { text_field: config.text_field })
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        source::execute(ctx)
    }
    fn resources(&self, _config: &serde_json::Value) -> Resources {
        // Cleaning runs on rayon's pool: every core.
        Resources::every_core()
    }
}

#[derive(Debug, Clone, Default)]
pub struct TextSource;
aurora_core::register_plugin!(TextSource);

impl Plugin for TextSource {
    fn id(&self) -> &'static str {
        "source.text"
    }
    fn version(&self) -> &'static str {
        SOURCE_VERSION
    }
    fn description(&self) -> &'static str {
        "Plain text files, one document per file, line or paragraph"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TextConfig)
    }
    fn offers(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Vec<Offer> {
        let format = entry.parse::<TextConfig>(ctx.manifest).ok().map(|c| Format::Text { split: c.split });
        source::offers(entry, ctx, format)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: TextConfig = entry.parse(ctx.manifest)?;
        source::plan(entry, ctx, config.common(), Format::Text { split: config.split })
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        source::execute(ctx)
    }
    fn resources(&self, _config: &serde_json::Value) -> Resources {
        // Cleaning runs on rayon's pool: every core.
        Resources::every_core()
    }
}

#[derive(Debug, Clone, Default)]
pub struct InstructionsSource;
aurora_core::register_plugin!(InstructionsSource);

impl Plugin for InstructionsSource {
    fn id(&self) -> &'static str {
        "source.instructions"
    }
    fn version(&self) -> &'static str {
        SOURCE_VERSION
    }
    fn description(&self) -> &'static str {
        "Instruction records (JSON array or JSONL) rendered as documents with the Aurora-M template"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(InstructionsConfig)
    }
    fn offers(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Vec<Offer> {
        let format = entry.parse::<InstructionsConfig>(ctx.manifest).ok().map(|c| Format::Instructions {
            template: c.template,
            shape: c.shape,
            fields: c.fields,
        });
        source::offers(entry, ctx, format)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: InstructionsConfig = entry.parse(ctx.manifest)?;
        let missing: Vec<&str> =
            ["{instruction}", "{output}"].into_iter().filter(|p| !config.template.contains(p)).collect();
        if !missing.is_empty() {
            let p = format!("{}/template", entry.pointer());
            return Err(Diagnostic::new(format!("the instruction template lacks {}", missing.join(" and ")))
                .at(ctx.manifest.sources.value(&p))
                .pointer(p)
                .expected("a template with `{instruction}` and `{output}` (and optionally `{input}`)")
                .help(format!("the default is {:?}", config::DEFAULT_TEMPLATE))
                .into());
        }
        let common = config.common();
        let format = Format::Instructions { template: config.template, shape: config.shape, fields: config.fields };
        source::plan(entry, ctx, common, format)
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        source::execute(ctx)
    }
    fn resources(&self, _config: &serde_json::Value) -> Resources {
        // Cleaning runs on rayon's pool: every core.
        Resources::every_core()
    }
}

#[cfg(feature = "parquet")]
#[derive(Debug, Clone, Default)]
pub struct ParquetSource;
#[cfg(feature = "parquet")]
aurora_core::register_plugin!(ParquetSource);

#[cfg(feature = "parquet")]
impl Plugin for ParquetSource {
    fn id(&self) -> &'static str {
        "source.parquet"
    }
    fn version(&self) -> &'static str {
        SOURCE_VERSION
    }
    fn description(&self) -> &'static str {
        "Parquet shards (Hugging Face datasets): one document per row of a string column"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(config::ParquetConfig)
    }
    fn offers(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Vec<Offer> {
        let format = entry
            .parse::<config::ParquetConfig>(ctx.manifest)
            .ok()
            .map(|c| Format::Parquet { text_column: c.text_column });
        source::offers(entry, ctx, format)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: config::ParquetConfig = entry.parse(ctx.manifest)?;
        source::plan(entry, ctx, config.common(), Format::Parquet { text_column: config.text_column })
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        source::execute(ctx)
    }
    fn resources(&self, _config: &serde_json::Value) -> Resources {
        // Cleaning runs on rayon's pool: every core.
        Resources::every_core()
    }
}

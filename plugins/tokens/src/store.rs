//! The token store: one source's documents tokenized into Megatron's indexed dataset.
//!
//! Artifact of `tokens/<tokenizer>/<source>` (and of `sources/NAME` for `source.megatron`):
//!
//! - `tokens.idx`, `tokens.bin`: Megatron `MMIDIDX` (see [`crate::megatron`]), one sequence per
//!   document, every document ending with the tokenizer's end-of-document token;
//! - `tokens.bytes`: u64 LE per document, UTF-8 bytes of the document's text (absent for
//!   `source.megatron`, whose text is unknown);
//! - `tokens.json`: [`TokenStoreInfo`].
//!
//! The node is executed by `tokenizer.encode`, which has no manifest entry: mixtures plan it with
//! `NodeSpec.plugin = Some("tokenizer.encode")`, so two mixtures of the same tokenizer and source
//! share one node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, PlanContext, Plugin, PluginError,
};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::documents::{DocumentReader, SourceInfo, read_drop_list};
use crate::megatron::{self, DType, IndexedDataset, IndexedWriter, MegatronError};
use crate::tokenizer::{TokenizerMeta, load_artifact};

/// File-name prefix of the indexed dataset inside a token store.
pub const PREFIX: &str = "tokens";

/// `tokens.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenStoreInfo {
    /// Documents (= Megatron document-index entries - 1).
    pub documents: u64,
    /// Tokens, end-of-document tokens included.
    pub tokens: u64,
    /// UTF-8 bytes of the source texts (`None` when unknown: `source.megatron`).
    pub bytes: Option<u64>,
    /// FLORES-style language code, or `code`.
    pub lang: String,
    pub programming_language: Option<String>,
    /// Every token id is below this.
    pub vocab_size: u64,
    /// The end-of-document id (`None` when unknown: `source.megatron` without `eod_id`).
    pub eod_id: Option<u32>,
    pub dtype: DType,
    /// Documents skipped because `dedup/exact` found them earlier in another place.
    pub dropped_duplicates: u64,
}

/// Errors opening a token store.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error(transparent)]
    Megatron(#[from] MegatronError),
    #[error("{}: {message}", path.display())]
    Info { path: PathBuf, message: String },
    #[error(
        "{}: says {what} = {claimed} but the indexed dataset has {actual}; the store is inconsistent, re-run its node",
        path.display()
    )]
    Mismatch { path: PathBuf, what: &'static str, claimed: u64, actual: u64 },
}

/// An opened, validated token store.
pub struct TokenStore {
    pub dir: PathBuf,
    pub info: TokenStoreInfo,
    pub dataset: IndexedDataset,
}

impl TokenStore {
    pub fn open(dir: &Path) -> Result<TokenStore, TokenStoreError> {
        let path = dir.join("tokens.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| TokenStoreError::Info { path: path.clone(), message: e.to_string() })?;
        let info: TokenStoreInfo = serde_json::from_str(&text)
            .map_err(|e| TokenStoreError::Info { path: path.clone(), message: format!("does not parse: {e}") })?;
        let dataset = IndexedDataset::open(&dir.join(PREFIX))?;
        for (what, claimed, actual) in
            [("documents", info.documents, dataset.documents()), ("tokens", info.tokens, dataset.total_tokens())]
        {
            if claimed != actual {
                return Err(TokenStoreError::Mismatch { path, what, claimed, actual });
            }
        }
        Ok(TokenStore { dir: dir.to_path_buf(), info, dataset })
    }

    /// The `.bytes` sidecar, when the store has one.
    pub fn bytes_per_document(&self) -> Result<Option<Vec<u64>>, MegatronError> {
        let path = self.dir.join(format!("{PREFIX}.bytes"));
        if !path.exists() {
            return Ok(None);
        }
        megatron::read_bytes_sidecar(&path, self.dataset.documents()).map(Some)
    }
}

fn perr(e: impl std::fmt::Display) -> PluginError {
    PluginError::new(e.to_string())
}

/// Words the BPE model memoises (the crate's default is 10,000, which a multilingual corpus fills
/// at once; the cache only stores results, so output bytes do not depend on it).
pub const BPE_CACHE_WORDS: usize = 262_144;

/// Makes a loaded tokenizer ready for bulk encoding (a larger BPE word cache).
pub fn tune_for_bulk_encoding(tokenizer: &mut Tokenizer) {
    if let tokenizers::ModelWrapper::BPE(bpe) = tokenizer.get_model() {
        let mut bpe = bpe.clone();
        bpe.resize_cache(BPE_CACHE_WORDS);
        tokenizer.with_model(bpe);
    }
}

/// Documents per parallel batch, and text bytes per batch: the memory bound of encoding.
const BATCH_DOCUMENTS: usize = 4096;
const BATCH_BYTES: usize = 8 << 20;

/// What [`encode_documents`] reads.
pub struct EncodeInput<'a> {
    pub tokenizer: &'a Tokenizer,
    pub meta: &'a TokenizerMeta,
    pub source: &'a SourceInfo,
    /// Indices into the documents to skip, ascending.
    pub drop: &'a [u64],
    /// For errors: the documents file.
    pub origin: &'a Path,
}

/// Tokenizes documents in parallel batches (output order = document order), appends the EOD
/// token to each, and writes `tokens.{bin,idx,bytes,json}` into `out_dir`. Memory: one batch of
/// texts and their ids, whatever the corpus size.
pub fn encode_documents(
    input: &EncodeInput<'_>,
    documents: impl Iterator<Item = Result<String, crate::documents::DocumentsError>>,
    out_dir: &Path,
    mut progress: impl FnMut(u64),
) -> Result<TokenStoreInfo, PluginError> {
    let meta = input.meta;
    let mut writer = IndexedWriter::create(&out_dir.join(PREFIX), meta.dtype).map_err(perr)?;
    let bytes_path = out_dir.join(format!("{PREFIX}.bytes"));
    let mut bytes_out = std::io::BufWriter::new(
        std::fs::File::create(&bytes_path).map_err(|e| PluginError::new(format!("{}: {e}", bytes_path.display())))?,
    );
    let mut drop = input.drop.iter().copied().peekable();
    let mut batch: Vec<(u64, String)> = Vec::with_capacity(BATCH_DOCUMENTS);
    let mut batch_bytes = 0usize;
    let (mut kept, mut dropped, mut total_bytes) = (0u64, 0u64, 0u64);
    let mut flush = |batch: &mut Vec<(u64, String)>| -> Result<(), PluginError> {
        let encoded: Vec<Result<Vec<u32>, PluginError>> = batch
            .par_iter()
            .map(|(index, text)| {
                let enc = input.tokenizer.encode_fast(text.as_str(), false).map_err(|e| {
                    PluginError::new(format!("{}: document {index} does not tokenize: {e}", input.origin.display()))
                })?;
                let mut ids = enc.get_ids().to_vec();
                ids.push(meta.eod_id);
                Ok(ids)
            })
            .collect();
        for ((index, text), ids) in batch.iter().zip(encoded) {
            let ids = ids?;
            if let Some(&bad) = ids.iter().find(|&&t| t as u64 >= meta.vocab_size) {
                return Err(PluginError::new(format!(
                    "{}: document {index} produced token id {bad}, outside the tokenizer's vocabulary of {} \
                     (tokenizer.meta.json); the tokenizer artifact is inconsistent, re-run the tokenizer node",
                    input.origin.display(),
                    meta.vocab_size
                )));
            }
            writer.add_document(&ids).map_err(|e| PluginError::new(format!("document {index}: {e}")))?;
            std::io::Write::write_all(&mut bytes_out, &(text.len() as u64).to_le_bytes())
                .map_err(|e| PluginError::new(format!("{}: {e}", bytes_path.display())))?;
            total_bytes += text.len() as u64;
        }
        batch.clear();
        Ok(())
    };
    for (index, doc) in documents.enumerate() {
        let index = index as u64;
        let text = doc.map_err(perr)?;
        while drop.next_if(|&d| d < index).is_some() {}
        if drop.next_if_eq(&index).is_some() {
            dropped += 1;
            continue;
        }
        kept += 1;
        batch_bytes += text.len();
        batch.push((index, text));
        if batch.len() >= BATCH_DOCUMENTS || batch_bytes >= BATCH_BYTES {
            flush(&mut batch)?;
            batch_bytes = 0;
            progress(index + 1);
        }
    }
    flush(&mut batch)?;
    drop_flush(bytes_out, &bytes_path)?;
    let summary = writer.finish().map_err(perr)?;
    debug_assert_eq!(summary.documents, kept);
    let info = TokenStoreInfo {
        documents: summary.documents,
        tokens: summary.tokens,
        bytes: Some(total_bytes),
        lang: input.source.lang.clone(),
        programming_language: input.source.programming_language.clone(),
        vocab_size: meta.vocab_size,
        eod_id: Some(meta.eod_id),
        dtype: meta.dtype,
        dropped_duplicates: dropped,
    };
    write_info(out_dir, &info)?;
    Ok(info)
}

fn drop_flush(mut w: std::io::BufWriter<std::fs::File>, path: &Path) -> Result<(), PluginError> {
    std::io::Write::flush(&mut w).map_err(|e| PluginError::new(format!("{}: {e}", path.display())))?;
    w.get_ref().sync_all().map_err(|e| PluginError::new(format!("{}: {e}", path.display())))
}

/// Writes `tokens.json`.
pub fn write_info(out_dir: &Path, info: &TokenStoreInfo) -> Result<(), PluginError> {
    let path = out_dir.join("tokens.json");
    let mut text = serde_json::to_string_pretty(info).expect("serialises");
    text.push('\n');
    std::fs::write(&path, text).map_err(|e| PluginError::new(format!("{}: {e}", path.display())))
}

/// The config of a `tokens/<tokenizer>/<source>` node (all of it enters the key).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncodeConfig {
    /// The source entry's name (selects its drop list in the dedup node's artifact).
    pub source: String,
    /// Whether the dedup drop list is an input (the source takes part in cross-source dedup).
    pub dedup: bool,
}

/// The node id of the token store of `source` under `tokenizer` (entry names).
pub fn node_id(tokenizer: &str, source: &str) -> String {
    format!("tokens/{tokenizer}/{source}")
}

/// Plans `tokens/<tokenizer>/<source>` for a text source: inputs are the tokenizer's node, the
/// source's documents and, when the source takes part in cross-source dedup, the node holding
/// its drop list (nodes as the entries offer them).
pub fn plan_encode(
    tokenizer: &Entry<'_>,
    tokenizer_node: &str,
    source: &str,
    documents: String,
    drops: Option<String>,
    pointer: &str,
) -> NodeSpec {
    let input = |node: String| InputSpec { source: InputSource::Node(node), pointer: pointer.to_string() };
    let mut inputs = BTreeMap::from([
        ("tokenizer".to_string(), input(tokenizer_node.to_string())),
        ("documents".to_string(), input(documents)),
    ]);
    let dedup = drops.is_some();
    if let Some(drops) = drops {
        inputs.insert("dedup".to_string(), input(drops));
    }
    NodeSpec {
        id: node_id(tokenizer.name, source),
        plugin: Some("tokenizer.encode"),
        config: serde_json::to_value(EncodeConfig { source: source.to_string(), dedup }).expect("serialises"),
        inputs,
        pointer: pointer.to_string(),
    }
}

#[derive(Debug, Clone, Default)]
pub struct TokensEncode;
aurora_core::register_plugin!(TokensEncode);

impl Plugin for TokensEncode {
    fn resources(&self, _config: &serde_json::Value) -> aurora_core::plugin::Resources {
        // Encoding runs on rayon's pool: every core.
        aurora_core::plugin::Resources::every_core()
    }
    fn id(&self) -> &'static str {
        "tokenizer.encode"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "Tokenize a source into a Megatron indexed dataset (planned by mixtures, not an entry of its own)"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(EncodeConfig)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        Err(Diagnostic::new(format!(
            "`{}.{}`: `tokenizer.encode` cannot be used as an entry; mixtures plan it for each source they use",
            entry.section, entry.name
        ))
        .at(ctx.manifest.sources.value(&format!("{}/plugin", entry.pointer())))
        .pointer(entry.pointer())
        .help("declare a `[mixtures.NAME]` with `plugin = \"mixer.blend\"`, a `tokenizer` and `weights`")
        .into())
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let config: EncodeConfig = ctx.parse()?;
        let input = |name: &str| {
            ctx.inputs.get(name).ok_or_else(|| PluginError::new(format!("{}: input `{name}` is missing", ctx.node_id)))
        };
        let (mut tokenizer, meta) = load_artifact(input("tokenizer")?)?;
        tune_for_bulk_encoding(&mut tokenizer);
        let docs_dir = input("documents")?.clone();
        let source = SourceInfo::read(&docs_dir).map_err(perr)?;
        let drop = match ctx.inputs.get("dedup") {
            Some(dir) if config.dedup => read_drop_list(dir, &config.source, source.documents).map_err(perr)?,
            _ => Vec::new(),
        };
        let reader = DocumentReader::open(&docs_dir).map_err(perr)?;
        let origin = docs_dir.join("documents.jsonl");
        let encode_input =
            EncodeInput { tokenizer: &tokenizer, meta: &meta, source: &source, drop: &drop, origin: &origin };
        let (node, progress, total) = (ctx.node_id, ctx.progress, source.documents);
        let info = encode_documents(&encode_input, reader, ctx.out_dir, |done| {
            progress.update(node, done, total, "documents tokenized")
        })?;
        let mut outcome = ExecOutcome::default();
        outcome.metrics.insert("documents".into(), json!(info.documents));
        outcome.metrics.insert("tokens".into(), json!(info.tokens));
        outcome.metrics.insert("bytes".into(), json!(info.bytes));
        outcome.metrics.insert("dropped_duplicates".into(), json!(info.dropped_duplicates));
        Ok(outcome)
    }
}

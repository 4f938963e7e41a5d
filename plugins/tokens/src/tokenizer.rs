//! Tokenizer plugins: `tokenizer.file` (a Hugging Face `tokenizer.json`) and `tokenizer.bpe`
//! (a byte-level BPE trained on a sample of the sources, deterministically).
//!
//! Artifact of `tokenizers/NAME`: `tokenizer.json` (loadable by Hugging Face `tokenizers` in any
//! language) and `tokenizer.meta.json` = [`TokenizerMeta`].

use std::collections::BTreeMap;
use std::path::Path;

use aurora_core::diagnostic::{Diagnostic, Diagnostics, quoted_list};
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, Offer, Output, PlanContext, Plugin, PluginError,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::documents::DocumentReader;
use crate::megatron::DType;

/// The token appended after every document unless configured otherwise.
pub const DEFAULT_EOD: &str = "<|endoftext|>";

/// One special token of a tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialToken {
    pub token: String,
    pub id: u32,
}

/// `tokenizer.meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerMeta {
    /// Vocabulary size including added tokens; every id is below it.
    pub vocab_size: u64,
    /// The end-of-document token appended after every document.
    pub eod_token: String,
    pub eod_id: u32,
    /// Added tokens marked special, by id.
    pub special_tokens: Vec<SpecialToken>,
    /// The Megatron dtype token stores of this tokenizer use.
    pub dtype: DType,
}

fn default_eod() -> String {
    DEFAULT_EOD.to_string()
}

/// Loads a tokenizer artifact directory (`tokenizer.json` + `tokenizer.meta.json`).
pub fn load_artifact(dir: &Path) -> Result<(Tokenizer, TokenizerMeta), PluginError> {
    let path = dir.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&path).map_err(|e| {
        PluginError::new(format!("{}: does not parse as a tokenizer: {e}; re-run the tokenizer node", path.display()))
    })?;
    let meta_path = dir.join("tokenizer.meta.json");
    let meta = std::fs::read_to_string(&meta_path)
        .map_err(|e| PluginError::new(format!("{}: {e}", meta_path.display())))
        .and_then(|t| {
            serde_json::from_str(&t)
                .map_err(|e| PluginError::new(format!("{}: does not parse: {e}", meta_path.display())))
        })?;
    Ok((tokenizer, meta))
}

/// Vocabulary size, special tokens and the EOD id of a loaded tokenizer. `origin` names the file
/// in errors.
pub fn describe(tokenizer: &Tokenizer, eod: &str, origin: &str) -> Result<TokenizerMeta, PluginError> {
    let vocab_size = tokenizer.get_vocab_size(true) as u64;
    let mut special_tokens: Vec<SpecialToken> = tokenizer
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, t)| SpecialToken { token: t.content, id })
        .collect();
    special_tokens.sort_by_key(|t| t.id);
    let eod_id = tokenizer.token_to_id(eod).ok_or_else(|| {
        let specials: Vec<&str> = special_tokens.iter().map(|t| t.token.as_str()).collect();
        PluginError::new(format!(
            "{origin}: the end-of-document token `{eod}` is not in the vocabulary; set `eod` to one of its special \
             tokens: {}",
            if specials.is_empty() { "(it has none)".to_string() } else { quoted_list(&specials) }
        ))
    })?;
    // Ids are not always dense: the vocabulary bound is the largest id + 1.
    let max_id = tokenizer.get_vocab(true).values().copied().max().map_or(0, |m| m as u64 + 1);
    let vocab_size = vocab_size.max(max_id);
    let dtype = DType::for_vocab(vocab_size).map_err(|e| PluginError::new(format!("{origin}: {e}")))?;
    Ok(TokenizerMeta { vocab_size, eod_token: eod.to_string(), eod_id, special_tokens, dtype })
}

fn write_artifact(out: &Path, json: &[u8], meta: &TokenizerMeta) -> Result<ExecOutcome, PluginError> {
    let tj = out.join("tokenizer.json");
    std::fs::write(&tj, json).map_err(|e| PluginError::new(format!("{}: {e}", tj.display())))?;
    let mp = out.join("tokenizer.meta.json");
    let mut text = serde_json::to_string_pretty(meta).expect("meta serialises");
    text.push('\n');
    std::fs::write(&mp, text).map_err(|e| PluginError::new(format!("{}: {e}", mp.display())))?;
    let mut outcome = ExecOutcome::default();
    outcome.metrics.insert("vocab_size".into(), json!(meta.vocab_size));
    outcome.metrics.insert("eod_id".into(), json!(meta.eod_id));
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// tokenizer.file

/// `[tokenizers.NAME]` with `plugin = "tokenizer.file"`: a ready-made Hugging Face tokenizer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `"file:PATH"` of a Hugging Face `tokenizer.json` (e.g. StarCoder's, vocabulary 49,152). Its
    /// content enters the cache key; its path does not.
    pub path: String,
    /// The end-of-document token appended after every document; must be in the vocabulary.
    #[serde(default = "default_eod")]
    pub eod: String,
}

#[derive(Debug, Clone, Default)]
pub struct TokenizerFile;
aurora_core::register_plugin!(TokenizerFile);

impl Plugin for TokenizerFile {
    fn id(&self) -> &'static str {
        "tokenizer.file"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "Load a Hugging Face tokenizer.json (validated, copied into the artifact)"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(FileConfig)
    }
    fn offers(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Vec<Offer> {
        let offer = Offer::new(Output::TOKENIZER, entry.node_id());
        match entry.parse::<FileConfig>(ctx.manifest) {
            Ok(config) => vec![offer.with_file(config.path)],
            Err(_) => vec![offer],
        }
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: FileConfig = entry.parse(ctx.manifest)?;
        let pointer = format!("{}/path", entry.pointer());
        let input = ctx.file_input(&config.path, pointer, "path", "a tokenizer.json")?;
        let inputs = BTreeMap::from([("tokenizer".to_string(), input)]);
        Ok(vec![NodeSpec::for_entry(entry, json!({ "eod": config.eod }), inputs)])
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        #[derive(Deserialize)]
        struct Keyed {
            eod: String,
        }
        let keyed: Keyed = ctx.parse()?;
        let path = ctx.input("tokenizer")?;
        let bytes = std::fs::read(path).map_err(|e| PluginError::new(format!("{}: {e}", path.display())))?;
        let tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| {
            PluginError::new(format!(
                "{}: does not parse as a Hugging Face tokenizer.json: {e}; `path` must name a tokenizer.json as saved \
                 by `tokenizers` (`Tokenizer.save`)",
                path.display()
            ))
        })?;
        let meta = describe(&tokenizer, &keyed.eod, &path.display().to_string())?;
        write_artifact(ctx.out_dir, &bytes, &meta)
    }
}

// ---------------------------------------------------------------------------------------------
// tokenizer.bpe

fn default_min_frequency() -> u64 {
    2
}
fn default_special_tokens() -> Vec<String> {
    vec![DEFAULT_EOD.to_string()]
}

/// `[tokenizers.NAME]` with `plugin = "tokenizer.bpe"`: a byte-level BPE (GPT-2 style) trained
/// on the training documents of some sources.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BpeConfig {
    /// Vocabulary size to reach: the special tokens, the 256 byte symbols and the merges. A small
    /// sample may stop earlier (the artifact records the size reached).
    #[schemars(range(min = 257))]
    pub vocab_size: u64,
    /// A pair is merged only if it occurs at least this many times in the sample.
    #[serde(default = "default_min_frequency")]
    #[schemars(range(min = 1))]
    pub min_frequency: u64,
    /// Special tokens, given ids 0, 1, ... in this order. The first is the end-of-document token
    /// appended after every document.
    #[serde(default = "default_special_tokens")]
    #[schemars(length(min = 1))]
    pub special_tokens: Vec<String>,
    /// The sources to train on, as `"sources.NAME"`; their training documents (held-out documents
    /// excluded) are read in source-name order.
    #[schemars(length(min = 1))]
    pub sample: Vec<String>,
    /// Read at most this many documents of each source (the first ones, in document order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_documents_per_source: Option<u64>,
}

/// What enters the key of a `tokenizer.bpe` node (the sample is its inputs).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BpeKeyed {
    vocab_size: u64,
    min_frequency: u64,
    special_tokens: Vec<String>,
    max_documents_per_source: Option<u64>,
}

/// Input-name prefix of the sample sources of a `tokenizer.bpe` node.
const SAMPLE_PREFIX: &str = "sample:";

#[derive(Debug, Clone, Default)]
pub struct TokenizerBpe;
aurora_core::register_plugin!(TokenizerBpe);

impl Plugin for TokenizerBpe {
    fn resources(&self, _config: &serde_json::Value) -> aurora_core::plugin::Resources {
        // tokenizers trains on rayon's pool: every core.
        aurora_core::plugin::Resources::every_core()
    }
    fn id(&self) -> &'static str {
        "tokenizer.bpe"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "Train a byte-level BPE tokenizer on a sample of the sources (deterministic)"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(BpeConfig)
    }
    fn offers(&self, entry: &Entry<'_>, _ctx: &PlanContext<'_>) -> Vec<Offer> {
        vec![Offer::new(Output::TOKENIZER, entry.node_id())]
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: BpeConfig = entry.parse(ctx.manifest)?;
        let mut problems = Vec::new();
        let mut inputs = BTreeMap::new();
        for (i, reference) in config.sample.iter().enumerate() {
            let pointer = format!("{}/sample/{i}", entry.pointer());
            match ctx.input_of(reference, Output::DOCUMENTS) {
                Some(id) => {
                    inputs.insert(
                        format!("{SAMPLE_PREFIX}{reference}"),
                        InputSpec { source: InputSource::Node(id), pointer },
                    );
                }
                None => problems.push(
                    Diagnostic::new(format!("`sample` entry \"{reference}\" is not a reference to a source"))
                        .at(ctx.manifest.sources.value(&pointer))
                        .pointer(pointer)
                        .expected("\"SECTION.NAME\" of an entry that provides documents, e.g. \"sources.eng_web\""),
                ),
            }
        }
        let mut seen = BTreeMap::new();
        for (i, t) in config.special_tokens.iter().enumerate() {
            let pointer = format!("{}/special_tokens/{i}", entry.pointer());
            if t.is_empty() || seen.insert(t.clone(), i).is_some() {
                problems.push(
                    Diagnostic::new(format!("special token \"{t}\" is empty or listed twice"))
                        .at(ctx.manifest.sources.value(&pointer))
                        .pointer(pointer)
                        .expected("distinct, non-empty special tokens"),
                );
            }
        }
        let minimum = 256 + config.special_tokens.len() as u64 + 1;
        if config.vocab_size < minimum {
            let pointer = format!("{}/vocab_size", entry.pointer());
            problems.push(
                Diagnostic::new(format!("`vocab_size` = {} leaves no room for merges", config.vocab_size))
                    .at(ctx.manifest.sources.value(&pointer))
                    .pointer(pointer)
                    .expected(format!(
                        "at least {minimum} (256 byte symbols + {} special tokens + 1 merge)",
                        config.special_tokens.len()
                    )),
            );
        }
        if !problems.is_empty() {
            return Err(Diagnostics(problems));
        }
        let keyed = BpeKeyed {
            vocab_size: config.vocab_size,
            min_frequency: config.min_frequency,
            special_tokens: config.special_tokens,
            max_documents_per_source: config.max_documents_per_source,
        };
        Ok(vec![NodeSpec::for_entry(entry, serde_json::to_value(keyed).expect("serialises"), inputs)])
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let keyed: BpeKeyed = ctx.parse()?;
        let sources: Vec<&Path> =
            ctx.inputs.iter().filter(|(k, _)| k.starts_with(SAMPLE_PREFIX)).map(|(_, p)| p.as_path()).collect();
        let (json, meta, documents) = train_bpe(&keyed.into_options(), &sources)?;
        writeln!(ctx.log, "trained on {documents} documents; vocabulary {}", meta.vocab_size)
            .map_err(|e| PluginError::new(format!("cannot write the log: {e}")))?;
        let mut outcome = write_artifact(ctx.out_dir, json.as_bytes(), &meta)?;
        outcome.metrics.insert("sample_documents".into(), json!(documents));
        Ok(outcome)
    }
}

impl BpeKeyed {
    fn into_options(self) -> BpeOptions {
        BpeOptions {
            vocab_size: self.vocab_size,
            min_frequency: self.min_frequency,
            special_tokens: self.special_tokens,
            max_documents_per_source: self.max_documents_per_source,
        }
    }
}

/// Training settings of [`train_bpe`].
#[derive(Debug, Clone)]
pub struct BpeOptions {
    pub vocab_size: u64,
    pub min_frequency: u64,
    pub special_tokens: Vec<String>,
    pub max_documents_per_source: Option<u64>,
}

/// Trains a byte-level BPE on the `documents.jsonl` of each source directory (in the given
/// order) and returns the serialised `tokenizer.json`, its meta and the number of documents read.
///
/// Determinism: the trainer counts words in hash maps and merges them in parallel, but the result
/// does not depend on that order: the alphabet is sorted by character, and merges are popped from
/// a heap ordered by (count, pair ids), a total order. The serialised vocabulary is ordered by id.
/// The tests train twice, and on 1 and on several threads, and compare the bytes.
pub fn train_bpe(options: &BpeOptions, sources: &[&Path]) -> Result<(String, TokenizerMeta, u64), PluginError> {
    use tokenizers::AddedToken;
    use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
    use tokenizers::models::TrainerWrapper;
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;

    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(byte_level));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer.with_post_processor(Some(byte_level));
    let specials: Vec<AddedToken> = options.special_tokens.iter().map(|t| AddedToken::from(t.clone(), true)).collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(options.vocab_size as usize)
        .min_frequency(options.min_frequency)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .show_progress(false)
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);

    // Stream the sample: the trainer only keeps word counts.
    let mut readers = Vec::new();
    for dir in sources {
        readers.push(DocumentReader::open(dir).map_err(|e| PluginError::new(e.to_string()))?);
    }
    let limit = options.max_documents_per_source.unwrap_or(u64::MAX) as usize;
    let failure: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let count = std::sync::atomic::AtomicU64::new(0);
    let texts = readers.into_iter().flat_map(|r| r.take(limit)).map_while(|doc| match doc {
        Ok(text) => {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(text)
        }
        Err(e) => {
            *failure.lock().expect("not poisoned") = Some(e.to_string());
            None
        }
    });
    tokenizer.train(&mut trainer, texts).map_err(|e| PluginError::new(format!("BPE training failed: {e}")))?;
    if let Some(message) = failure.into_inner().expect("not poisoned") {
        return Err(PluginError::new(message));
    }
    let documents = count.into_inner();
    if documents == 0 {
        return Err(PluginError::new(
            "the BPE sample is empty: the `sample` sources have no training documents; add sources or relax their filters",
        ));
    }
    let json =
        tokenizer.to_string(false).map_err(|e| PluginError::new(format!("cannot serialise the tokenizer: {e}")))?;
    // Reload what was written, so the meta describes exactly the saved file.
    let saved = Tokenizer::from_bytes(json.as_bytes())
        .map_err(|e| PluginError::new(format!("the trained tokenizer does not reload: {e}")))?;
    let meta = describe(&saved, &options.special_tokens[0], "trained tokenizer")?;
    Ok((json, meta, documents))
}

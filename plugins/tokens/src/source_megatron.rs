//! `source.megatron`: an existing Megatron `.bin/.idx` pair as an already-tokenized source.
//!
//! Its node `sources/NAME` validates the pair with the reader (every header field and array, and
//! every token id against `vocab_size`) and publishes it as a token store (`tokens.idx`,
//! `tokens.bin`, `tokens.json`; no `tokens.bytes`, since the text is unknown). A mixture names it
//! in `weights` like any other source entry; because it is already tokenized, the mixture uses
//! `sources/NAME` directly instead of planning `tokens/<tokenizer>/NAME`, and checks at execution
//! that `vocab_size` equals its tokenizer's. Documents are used as stored: Megatron's
//! `preprocess_data.py --append-eod` ends each with the EOD token; without it documents run
//! together in packed samples.

use std::collections::BTreeMap;

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::manifest::FILE_PREFIX;
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, Offer, Output, PlanContext, Plugin, PluginError,
};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::megatron::{DType, IndexedDataset, Tokens};
use crate::store::{PREFIX, TokenStoreInfo, write_info};

/// `[sources.NAME]` with `plugin = "source.megatron"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MegatronSourceConfig {
    /// `"file:PATH"` of the dataset without extension: `PATH.idx` and `PATH.bin` must exist
    /// (Megatron's `data_prefix`). Their content enters the cache key.
    pub prefix: String,
    /// FLORES-style language code (`fin_Latn`, `jpn_Jpan`, ...) or `code`.
    pub lang: String,
    /// For `lang = "code"`: the programming language, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programming_language: Option<String>,
    /// Vocabulary size of the tokenizer the dataset was made with; every token must be below it,
    /// and a mixture using this source must use a tokenizer of the same size.
    #[schemars(range(min = 1))]
    pub vocab_size: u64,
    /// The end-of-document id the dataset uses, if known (recorded in `tokens.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eod_id: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Keyed {
    lang: String,
    programming_language: Option<String>,
    vocab_size: u64,
    eod_id: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct SourceMegatron;
aurora_core::register_plugin!(SourceMegatron);

impl Plugin for SourceMegatron {
    fn resources(&self, _config: &serde_json::Value) -> aurora_core::plugin::Resources {
        // The vocabulary check runs on rayon's pool: every core.
        aurora_core::plugin::Resources::every_core()
    }
    fn id(&self) -> &'static str {
        "source.megatron"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "An existing Megatron .bin/.idx dataset as an already-tokenized source (validated)"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(MegatronSourceConfig)
    }
    fn offers(&self, entry: &Entry<'_>, _ctx: &PlanContext<'_>) -> Vec<Offer> {
        vec![Offer::new(Output::TOKENS, entry.node_id())]
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: MegatronSourceConfig = entry.parse(ctx.manifest)?;
        let pointer = format!("{}/prefix", entry.pointer());
        let Some(rel) = config.prefix.strip_prefix(FILE_PREFIX) else {
            return Err(Diagnostic::new(format!("`prefix` = \"{}\" is not a file reference", config.prefix))
                .at(ctx.manifest.sources.value(&pointer))
                .pointer(pointer)
                .expected("\"file:PATH\" without extension, where PATH.idx and PATH.bin exist")
                .into());
        };
        if let Some(stripped) = rel.strip_suffix(".idx").or_else(|| rel.strip_suffix(".bin")) {
            return Err(Diagnostic::new(format!("`prefix` = \"{}\" names one of the files", config.prefix))
                .at(ctx.manifest.sources.value(&pointer))
                .pointer(pointer)
                .expected("the path without `.idx`/`.bin`, as Megatron's `data_prefix`")
                .help(format!("write `prefix = \"{FILE_PREFIX}{stripped}\"`"))
                .into());
        }
        let inputs = BTreeMap::from([
            (
                "idx".to_string(),
                InputSpec { source: InputSource::Path(format!("{}.idx", config.prefix)), pointer: pointer.clone() },
            ),
            ("bin".to_string(), InputSpec { source: InputSource::Path(format!("{}.bin", config.prefix)), pointer }),
        ]);
        let keyed = Keyed {
            lang: config.lang,
            programming_language: config.programming_language,
            vocab_size: config.vocab_size,
            eod_id: config.eod_id,
        };
        Ok(vec![NodeSpec::for_entry(entry, serde_json::to_value(keyed).expect("serialises"), inputs)])
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let keyed: Keyed = ctx.parse()?;
        let idx = ctx.input("idx")?;
        let bin = ctx.input("bin")?;
        let ds = IndexedDataset::open_files(idx, bin).map_err(|e| PluginError::new(e.to_string()))?;
        if let Some(position) = first_token_at_or_above(ds.all_tokens(), keyed.vocab_size) {
            let token = ds.all_tokens().get(position as usize);
            return Err(PluginError::new(format!(
                "{}: token {position} (byte {}) is {}, not below `vocab_size` = {}; the dataset was made with another \
                 tokenizer, or `vocab_size` is wrong",
                bin.display(),
                position * ds.dtype().size(),
                token as i32 as i64,
                keyed.vocab_size
            )));
        }
        if ds.dtype() == DType::U16 && keyed.vocab_size > 65_536 {
            return Err(PluginError::new(format!(
                "{}: uint16 tokens cannot come from a vocabulary of {}; `vocab_size` is wrong",
                idx.display(),
                keyed.vocab_size
            )));
        }
        if let Some(eod) = keyed.eod_id
            && eod as u64 >= keyed.vocab_size
        {
            return Err(PluginError::new(format!("`eod_id` = {eod} is not below `vocab_size` = {}", keyed.vocab_size)));
        }
        for (from, ext) in [(idx, "idx"), (bin, "bin")] {
            let to = ctx.out_dir.join(format!("{PREFIX}.{ext}"));
            std::fs::copy(from, &to)
                .map_err(|e| PluginError::new(format!("cannot copy {} to {}: {e}", from.display(), to.display())))?;
        }
        let info = TokenStoreInfo {
            documents: ds.documents(),
            tokens: ds.total_tokens(),
            bytes: None,
            lang: keyed.lang,
            programming_language: keyed.programming_language,
            vocab_size: keyed.vocab_size,
            eod_id: keyed.eod_id,
            dtype: ds.dtype(),
            dropped_duplicates: 0,
        };
        write_info(ctx.out_dir, &info)?;
        let mut outcome = ExecOutcome::default();
        outcome.metrics.insert("documents".into(), json!(info.documents));
        outcome.metrics.insert("tokens".into(), json!(info.tokens));
        Ok(outcome)
    }
}

/// Position of the first token `>= limit` (negative int32 ids count as too large), scanning in
/// parallel chunks.
pub fn first_token_at_or_above(tokens: Tokens<'_>, limit: u64) -> Option<u64> {
    const CHUNK: usize = 1 << 20;
    let n = tokens.len();
    (0..n.div_ceil(CHUNK)).into_par_iter().find_map_first(|c| {
        let part = tokens.slice(c * CHUNK..((c + 1) * CHUNK).min(n));
        (0..part.len()).find(|&i| part.get(i) as u64 >= limit).map(|i| (c * CHUNK + i) as u64)
    })
}

//! `mixer.blend`: a curriculum stage's data mixture, Megatron's blending with no RNG.
//!
//! Execution of `mixtures/NAME`:
//!
//! 1. Sources are indexed 0, 1, ... in name order; weights are normalised to sum 1.
//! 2. Samples: `S = ceil(tokens / seq_len)`. Sample `i` takes the source `d` maximising
//!    `w_d * max(i, 1) - count_d` (ties: the lowest index), as Megatron's
//!    `build_blending_indices`; `count_d` is then its index within that source.
//! 3. Within each source, documents are shuffled (see [`crate::shuffle`]) per epoch and
//!    concatenated, epoch after epoch. Source sample `j` is the `seq_len + 1` tokens at positions
//!    `j * seq_len ..= (j + 1) * seq_len` of that stream (consecutive samples share one token, as
//!    in Megatron's GPT dataset, so every token is a target once). A source needing `n` samples
//!    reads `n * seq_len + 1` tokens; its repetition factor is that over its tokens; above
//!    `max_repetition` the node fails.
//!
//! Artifact:
//! - `blend.idx`: magic `AURBLEND` (8 bytes), u64 version 1, u64 S, u64 K (sources), then u64[S]
//!   (index of each sample within its source), then u16[S] (source index of each sample); all
//!   little-endian. 10 bytes per sample.
//! - `sources/<name>.docs`: u32 LE document ids in stream order (only as many as the samples
//!   reach); `sources/<name>.samples`: `n + 1` pairs (u64 position in `.docs`, u64 token offset
//!   in that document), the start of each source sample and, last, the end of the final one.
//!   Sample `j` runs from entry `j` to entry `j + 1`, both ends included.
//! - `mixture.json`: [`MixtureInfo`]: tokens consumed per source and per language, repetition
//!   factors, the number of samples.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use aurora_core::diagnostic::{Diagnostic, Diagnostics, suggestion};
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, Offer, Output, PlanContext, Plugin, PluginError,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::shuffle::{epoch_seed, permutation};
use crate::store::{TokenStore, plan_encode};
use crate::tokenizer::TokenizerMeta;
use aurora_core::units::si;

pub const BLEND_MAGIC: &[u8; 8] = b"AURBLEND";
pub const BLEND_VERSION: u64 = 1;
pub const BLEND_HEADER_LEN: u64 = 32;
/// Input-name prefix of the token stores of a mixture node.
pub const STORE_PREFIX: &str = "store:";

fn default_max_repetition() -> f64 {
    4.0
}

/// `[mixtures.NAME]` with `plugin = "mixer.blend"`: the data of one curriculum stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlendConfig {
    /// The tokenizer, as `"tokenizers.NAME"`. Text sources are tokenized with it (one shared
    /// `tokens/NAME/SOURCE` node per tokenizer and source); `source.megatron` sources must have
    /// been made with a tokenizer of the same vocabulary size.
    pub tokenizer: String,
    /// Source entry name (`[sources.NAME]`) -> relative weight (normalised to sum 1): the share of
    /// samples each source gets. `0` leaves the source out, exactly as if it were not listed (an
    /// ablation extending a manifest cannot remove a key, but can zero it).
    pub weights: BTreeMap<String, f64>,
    /// Token budget of the stage: `ceil(tokens / seq_len)` samples of `seq_len` training tokens.
    #[schemars(range(min = 1))]
    pub tokens: u64,
    /// Sequence length; each sample holds `seq_len + 1` tokens (inputs and shifted targets).
    #[schemars(range(min = 1))]
    pub seq_len: u64,
    /// The most times a source may be repeated (tokens read / tokens available) to fill its share;
    /// above it the node fails and says what to change. 4 epochs cost little quality
    /// (Muennighoff et al., 2023).
    #[serde(default = "default_max_repetition")]
    pub max_repetition: f64,
}

impl BlendConfig {
    /// The sources this mixture reads: those with a weight above 0, in name order.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.weights.iter().filter(|(_, w)| **w > 0.0).map(|(name, _)| name.as_str())
    }
}

/// What enters the key of a mixture node (the tokenizer and the stores are inputs).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Keyed {
    weights: BTreeMap<String, f64>,
    tokens: u64,
    seq_len: u64,
    max_repetition: f64,
}

/// The entry a mixture's weights name `source`: an entry of any section that offers documents or
/// a token store (the first in manifest order if several share the name).
pub fn source_entry<'c>(ctx: &'c PlanContext<'_>, source: &str) -> Option<Entry<'c>> {
    ctx.entries().find(|e| {
        e.name == source && (ctx.offer(e, Output::DOCUMENTS).is_some() || ctx.offer(e, Output::TOKENS).is_some())
    })
}

/// The node holding the token store a mixture reads for `source` (an entry name) under the
/// tokenizer entry `tokenizer`: the source's own token store if it offers one (already
/// tokenized), else the shared `tokens/TOKENIZER/SOURCE` node the mixture plans. Trainers take
/// these nodes as inputs. `None` when no entry of that name offers documents or tokens.
pub fn store_node_id(ctx: &PlanContext<'_>, tokenizer: &Entry<'_>, source: &str) -> Option<String> {
    let entry = source_entry(ctx, source)?;
    Some(ctx.offer(&entry, Output::TOKENS).unwrap_or_else(|| crate::store::node_id(tokenizer.name, source)))
}

/// The tokenizer entry a mixture's `tokenizer = "SECTION.NAME"` names, if it offers a tokenizer.
pub fn tokenizer_entry<'c>(ctx: &'c PlanContext<'_>, reference: &str) -> Option<Entry<'c>> {
    ctx.entry(reference).filter(|e| ctx.offer(e, Output::TOKENIZER).is_some())
}

/// `1.000 M`, `156`: an SI count to put before a unit word.
fn count(value: f64) -> String {
    si(value).trim_end().to_string()
}

/// Warns, at plan time, of each source whose share of the mixture its files cannot hold within
/// `max_repetition` passes. A source's tokens are estimated from the bound of its text bytes it
/// offers, at the bytes per token the mixture's tokenizer makes of the source's text sample where
/// the tokenizer is a file of the manifest; otherwise (a tokenizer trained in the run) at one
/// token per byte, the most a byte-level tokenizer makes. The exact check runs when the mixture
/// is built, after tokenization.
fn warn_of_short_sources(ctx: &PlanContext<'_>, entry: &Entry<'_>, config: &BlendConfig, tokenizer: &Entry<'_>) {
    let tokenizer_file = ctx
        .offers(tokenizer, Output::TOKENIZER)
        .into_iter()
        .find_map(|o| o.file)
        .map(|file| ctx.manifest.input_path(&file))
        .and_then(|path| tokenizers::Tokenizer::from_file(path).ok());
    let total: f64 = config.sources().map(|name| config.weights[name]).sum();
    for name in config.sources() {
        let Some(source) = source_entry(ctx, name) else { continue };
        let Some(documents) = ctx.offers(&source, Output::DOCUMENTS).into_iter().find(|o| o.text_bytes.is_some())
        else {
            continue;
        };
        let bytes = documents.text_bytes.expect("found with text bytes") as f64;
        let measured = tokenizer_file.as_ref().zip(documents.text_sample.as_deref()).and_then(|(t, sample)| {
            let tokens = t.encode(sample, false).ok()?.len();
            (tokens > 0).then(|| (sample.len() as f64 / tokens as f64).max(1.0))
        });
        let bytes_per_token = measured.unwrap_or(1.0);
        let available = bytes / bytes_per_token;
        let share = config.tokens as f64 * config.weights[name] / total;
        if share <= available * config.max_repetition {
            continue;
        }
        let how = match measured {
            Some(bpt) => format!(
                "about {} tokens at the {bpt:.2} bytes per token `{}` makes of its text",
                count(available),
                tokenizer.reference()
            ),
            None => format!("at most {} tokens at one token per byte", count(available)),
        };
        let pointer = format!("{}/weights/{name}", entry.pointer());
        ctx.warn(
            Diagnostic::new(format!(
                "mixture `{}` asks `{name}` for {} tokens ({:.1}% of {} tokens), but its files hold at most {} bytes \
                 of text, so {how}: {:.3e} passes over it, above max_repetition = {}",
                entry.name,
                count(share),
                100.0 * config.weights[name] / total,
                count(config.tokens as f64),
                count(bytes),
                share / available,
                config.max_repetition
            ))
            .at(ctx.manifest.sources.value(&pointer))
            .pointer(pointer)
            .help(format!(
                "building the mixture will fail after `{}` is tokenized: add data to `{name}`, lower its weight or \
                 `tokens`, or raise `max_repetition`",
                source.reference()
            )),
        );
    }
}

#[derive(Debug, Clone, Default)]
pub struct MixerBlend;
aurora_core::register_plugin!(MixerBlend);

impl Plugin for MixerBlend {
    fn id(&self) -> &'static str {
        "mixer.blend"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "Blend tokenized sources by weight into seq_len+1 samples (Megatron's rule, no RNG in the blend)"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(BlendConfig)
    }
    fn offers(&self, entry: &Entry<'_>, _ctx: &PlanContext<'_>) -> Vec<Offer> {
        vec![Offer::new(Output::MIXTURE, entry.node_id())]
    }

    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: BlendConfig = entry.parse(ctx.manifest)?;
        let manifest = ctx.manifest;
        let mut problems = Vec::new();

        let tok_pointer = format!("{}/tokenizer", entry.pointer());
        let tokenizer = tokenizer_entry(ctx, &config.tokenizer);
        if tokenizer.is_none() {
            let tokenizers: Vec<String> = ctx.offering(Output::TOKENIZER).iter().map(Entry::reference).collect();
            let tokenizers: Vec<&str> = tokenizers.iter().map(String::as_str).collect();
            problems.push(
                Diagnostic::new(format!("`tokenizer` = \"{}\" is not a tokenizer entry", config.tokenizer))
                    .at(manifest.sources.value(&tok_pointer))
                    .pointer(tok_pointer.clone())
                    .expected("\"SECTION.NAME\" of an entry that provides a tokenizer, e.g. \"tokenizers.gpt2\"")
                    .help(suggestion(&config.tokenizer, &tokenizers)),
            );
        }

        let weights_pointer = format!("{}/weights", entry.pointer());
        if config.weights.is_empty() {
            problems.push(
                Diagnostic::new(format!("mixture `{}` has no sources", entry.name))
                    .at(manifest.sources.value(&weights_pointer))
                    .pointer(weights_pointer.clone())
                    .expected("at least one `SOURCE = WEIGHT`, e.g. `weights = { eng_web = 0.6, fin_web = 0.4 }`"),
            );
        }
        for (name, &w) in &config.weights {
            let pointer = format!("{weights_pointer}/{name}");
            if source_entry(ctx, name).is_none() {
                let sources: Vec<&str> = ctx
                    .entries()
                    .filter(|e| ctx.offer(e, Output::DOCUMENTS).is_some() || ctx.offer(e, Output::TOKENS).is_some())
                    .map(|e| e.name)
                    .collect();
                problems.push(
                    Diagnostic::new(format!("unknown source `{name}` in the weights of mixture `{}`", entry.name))
                        .at(manifest.sources.key(&pointer))
                        .pointer(pointer.clone())
                        .expected("the name of a source entry (one that provides documents or a token store)")
                        .help(suggestion(name, &sources)),
                );
            }
            if !(w.is_finite() && w >= 0.0) {
                problems.push(
                    Diagnostic::new(format!("weight of `{name}` is {w}"))
                        .at(manifest.sources.value(&pointer))
                        .pointer(pointer)
                        .expected("a finite number >= 0 (weights are relative; they are normalised to sum 1)")
                        .help("to leave a source out of this mixture, remove it from `weights` or set it to 0"),
                );
            }
        }
        if !config.weights.is_empty() && config.sources().next().is_none() {
            problems.push(
                Diagnostic::new(format!("every weight of mixture `{}` is 0", entry.name))
                    .at(manifest.sources.value(&weights_pointer))
                    .pointer(weights_pointer.clone())
                    .expected("at least one source with a weight greater than 0"),
            );
        }
        if !(config.max_repetition.is_finite() && config.max_repetition >= 1.0) {
            let pointer = format!("{}/max_repetition", entry.pointer());
            problems.push(
                Diagnostic::new(format!("`max_repetition` = {}", config.max_repetition))
                    .at(manifest.sources.value(&pointer))
                    .pointer(pointer)
                    .expected("a finite number >= 1 (1 = never repeat a document)"),
            );
        }
        if !problems.is_empty() {
            return Err(Diagnostics(problems));
        }
        let tokenizer = tokenizer.expect("checked above");

        let mut nodes = Vec::new();
        let tokenizer_node = ctx.offer(&tokenizer, Output::TOKENIZER).expect("tokenizer_entry checked the offer");
        let mut inputs = BTreeMap::from([(
            "tokenizer".to_string(),
            InputSpec { source: InputSource::Node(tokenizer_node.clone()), pointer: tok_pointer },
        )]);
        for name in config.sources() {
            let pointer = format!("{weights_pointer}/{name}");
            let source = source_entry(ctx, name).expect("checked above");
            let store = match ctx.offer(&source, Output::TOKENS) {
                Some(tokens) => tokens,
                None => {
                    let documents = ctx.offer(&source, Output::DOCUMENTS).expect("source_entry checked the offer");
                    let drops = ctx.offer(&source, Output::DEDUP_DROPS);
                    let encode = plan_encode(&tokenizer, &tokenizer_node, name, documents, drops, &pointer);
                    let id = encode.id.clone();
                    nodes.push(encode);
                    id
                }
            };
            inputs.insert(format!("{STORE_PREFIX}{name}"), InputSpec { source: InputSource::Node(store), pointer });
        }
        warn_of_short_sources(ctx, entry, &config, &tokenizer);
        let keyed = Keyed {
            weights: config.sources().map(|name| (name.to_string(), config.weights[name])).collect(),
            tokens: config.tokens,
            seq_len: config.seq_len,
            max_repetition: config.max_repetition,
        };
        nodes.push(NodeSpec::for_entry(entry, serde_json::to_value(keyed).expect("serialises"), inputs));
        Ok(nodes)
    }

    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let keyed: Keyed = ctx.parse()?;
        let tok_dir = ctx.input("tokenizer")?;
        let meta_path = tok_dir.join("tokenizer.meta.json");
        let meta: TokenizerMeta = std::fs::read_to_string(&meta_path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .map_err(|e| PluginError::new(format!("{}: {e}", meta_path.display())))?;
        let mut stores = BTreeMap::new();
        for name in keyed.weights.keys() {
            let dir = ctx.input(&format!("{STORE_PREFIX}{name}"))?;
            stores.insert(name.clone(), dir.to_path_buf());
        }
        let spec = MixtureSpec {
            weights: keyed.weights,
            tokens: keyed.tokens,
            seq_len: keyed.seq_len,
            max_repetition: keyed.max_repetition,
            seed: ctx.seed,
        };
        let (node, progress) = (ctx.node_id, ctx.progress);
        let info = build_mixture(&spec, &meta, &stores, ctx.out_dir, &|done, total| {
            progress.update(node, done, total, "samples blended")
        })?;
        let mut outcome = ExecOutcome::default();
        outcome.metrics.insert("samples".into(), json!(info.samples));
        outcome.metrics.insert("tokens".into(), json!(info.tokens));
        for s in &info.sources {
            outcome.metrics.insert(format!("tokens.{}", s.name), json!(s.tokens_consumed));
            outcome.metrics.insert(format!("repetition.{}", s.name), json!(s.repetition));
        }
        Ok(outcome)
    }
}

/// Everything that decides a mixture's bytes.
#[derive(Debug, Clone)]
pub struct MixtureSpec {
    pub weights: BTreeMap<String, f64>,
    pub tokens: u64,
    pub seq_len: u64,
    pub max_repetition: f64,
    pub seed: u64,
}

/// One source's line in `mixture.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceUse {
    pub name: String,
    /// Its index in `blend.idx`.
    pub index: u16,
    pub lang: String,
    pub programming_language: Option<String>,
    /// As given in the manifest.
    pub weight: f64,
    /// Normalised weight.
    pub share: f64,
    /// Samples taken from this source.
    pub samples: u64,
    /// Training tokens from this source: `samples * seq_len`.
    pub tokens_consumed: u64,
    /// Tokens read from its stream: `samples * seq_len + 1` (0 without samples).
    pub tokens_read: u64,
    /// Tokens in its store (one epoch).
    pub tokens_available: u64,
    pub documents: u64,
    /// Epochs started (each shuffled with its own seed).
    pub epochs: u64,
    /// `tokens_read / tokens_available`.
    pub repetition: f64,
    /// Identity of the token store the samples index into.
    pub store_tokens: u64,
    pub store_idx_blake3: String,
}

/// Tokens consumed by one language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanguageUse {
    pub tokens: u64,
    /// Fraction of the mixture's tokens.
    pub share: f64,
}

/// `mixture.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtureInfo {
    pub format: String,
    pub seq_len: u64,
    pub samples: u64,
    /// The budget asked for.
    pub tokens_requested: u64,
    /// `samples * seq_len`.
    pub tokens: u64,
    pub seed: u64,
    pub max_repetition: f64,
    pub vocab_size: u64,
    pub eod_id: u32,
    /// In source-index order.
    pub sources: Vec<SourceUse>,
    /// Language -> tokens consumed (the paper's Figure 2).
    pub languages: BTreeMap<String, LanguageUse>,
}

/// Megatron's blend: calls `emit(source, index_within_source)` for each of `samples` samples and
/// returns the count per source.
pub fn blend(shares: &[f64], samples: u64, mut emit: impl FnMut(u16, u64)) -> Vec<u64> {
    let mut counts = vec![0u64; shares.len()];
    for i in 0..samples {
        let x = (i.max(1)) as f64;
        let mut best = 0usize;
        let mut best_err = shares[0] * x - counts[0] as f64;
        for (d, &w) in shares.iter().enumerate().skip(1) {
            let err = w * x - counts[d] as f64;
            if err > best_err {
                best = d;
                best_err = err;
            }
        }
        emit(best as u16, counts[best]);
        counts[best] += 1;
    }
    counts
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PluginError + '_ {
    move |e| PluginError::new(format!("{}: {e}", path.display()))
}

/// Writes `blend.idx` (streaming, two buffered writers into one file) and returns the counts.
pub fn write_blend(
    path: &Path,
    shares: &[f64],
    samples: u64,
    progress: &dyn Fn(u64, u64),
) -> Result<Vec<u64>, PluginError> {
    let e = io(path);
    let mut head = File::create(path).map_err(&e)?;
    head.write_all(BLEND_MAGIC).map_err(&e)?;
    for v in [BLEND_VERSION, samples, shares.len() as u64] {
        head.write_all(&v.to_le_bytes()).map_err(&e)?;
    }
    let mut second = File::options().write(true).open(path).map_err(&e)?;
    second.seek(SeekFrom::Start(BLEND_HEADER_LEN + 8 * samples)).map_err(&e)?;
    let mut within = BufWriter::with_capacity(1 << 20, head);
    let mut which = BufWriter::with_capacity(1 << 20, second);
    let mut failure = None;
    let mut i = 0u64;
    let counts = blend(shares, samples, |d, j| {
        if failure.is_none()
            && let Err(err) = within.write_all(&j.to_le_bytes()).and_then(|_| which.write_all(&d.to_le_bytes()))
        {
            failure = Some(err);
        }
        i += 1;
        if i.is_multiple_of(1 << 22) {
            progress(i, samples);
        }
    });
    if let Some(err) = failure {
        return Err(e(err));
    }
    within.flush().map_err(&e)?;
    which.flush().map_err(&e)?;
    which.get_ref().sync_all().map_err(&e)?;
    Ok(counts)
}

/// Builds the mixture artifact into `out_dir` from opened token stores (`name -> store dir`).
pub fn build_mixture(
    spec: &MixtureSpec,
    tokenizer: &TokenizerMeta,
    stores: &BTreeMap<String, PathBuf>,
    out_dir: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<MixtureInfo, PluginError> {
    if stores.len() > u16::MAX as usize {
        return Err(PluginError::new(format!("{} sources: at most 65,535 fit the blend index", stores.len())));
    }
    let mut opened = Vec::new();
    for (name, dir) in stores {
        let store = TokenStore::open(dir).map_err(|e| PluginError::new(format!("token store of `{name}`: {e}")))?;
        if store.info.vocab_size != tokenizer.vocab_size {
            return Err(PluginError::new(format!(
                "source `{name}` was tokenized with a vocabulary of {} but the mixture's tokenizer has {}; use the \
                 tokenizer the source was made with, or fix its `vocab_size`",
                store.info.vocab_size, tokenizer.vocab_size
            )));
        }
        if store.info.tokens == 0 {
            return Err(PluginError::new(format!(
                "source `{name}` has no tokens (0 documents after cleaning and dedup); remove it from `weights` or \
                 relax its filters"
            )));
        }
        opened.push((name.clone(), store));
    }
    let total: f64 = spec.weights.values().sum();
    let shares: Vec<f64> = opened.iter().map(|(n, _)| spec.weights[n] / total).collect();
    let samples = spec.tokens.div_ceil(spec.seq_len);

    let counts = write_blend(&out_dir.join("blend.idx"), &shares, samples, progress)?;

    // Repetition check, for every source at once.
    let mut too_small = Vec::new();
    let mut uses = Vec::new();
    for (d, (name, store)) in opened.iter().enumerate() {
        let n = counts[d];
        let read = if n == 0 { 0 } else { n * spec.seq_len + 1 };
        let available = store.info.tokens;
        let repetition = read as f64 / available as f64;
        if repetition > spec.max_repetition {
            too_small.push(format!(
                "  `{name}`: {available} tokens available, {read} needed for its share {:.4} ({n} samples of {} + 1 \
                 tokens): repetition {repetition:.2} > max_repetition {}",
                shares[d], spec.seq_len, spec.max_repetition
            ));
        }
        uses.push((n, read, repetition));
    }
    if !too_small.is_empty() {
        return Err(PluginError::new(format!(
            "sources too small for their share of {} tokens:\n{}\nlower their weights, lower `tokens`, add data to \
             them, or raise `max_repetition`",
            samples * spec.seq_len,
            too_small.join("\n")
        )));
    }

    let sources_dir = out_dir.join("sources");
    std::fs::create_dir_all(&sources_dir).map_err(io(&sources_dir))?;
    let mut infos = Vec::new();
    for (d, (name, store)) in opened.iter().enumerate() {
        let (n, read, repetition) = uses[d];
        let epochs = write_source_index(&sources_dir, name, store, n, spec.seq_len, spec.seed)?;
        let idx_path = store.dataset.idx_path();
        let idx_digest = blake3::hash(&std::fs::read(idx_path).map_err(io(idx_path))?).to_hex().to_string();
        infos.push(SourceUse {
            name: name.clone(),
            index: d as u16,
            lang: store.info.lang.clone(),
            programming_language: store.info.programming_language.clone(),
            weight: spec.weights[name],
            share: shares[d],
            samples: n,
            tokens_consumed: n * spec.seq_len,
            tokens_read: read,
            tokens_available: store.info.tokens,
            documents: store.info.documents,
            epochs,
            repetition,
            store_tokens: store.info.tokens,
            store_idx_blake3: idx_digest,
        });
    }
    let tokens = samples * spec.seq_len;
    let mut languages: BTreeMap<String, LanguageUse> = BTreeMap::new();
    for s in &infos {
        languages.entry(s.lang.clone()).or_insert(LanguageUse { tokens: 0, share: 0.0 }).tokens += s.tokens_consumed;
    }
    for l in languages.values_mut() {
        l.share = l.tokens as f64 / tokens as f64;
    }
    let info = MixtureInfo {
        format: "aurora-mixture/1".into(),
        seq_len: spec.seq_len,
        samples,
        tokens_requested: spec.tokens,
        tokens,
        seed: spec.seed,
        max_repetition: spec.max_repetition,
        vocab_size: tokenizer.vocab_size,
        eod_id: tokenizer.eod_id,
        sources: infos,
        languages,
    };
    let path = out_dir.join("mixture.json");
    let mut text = serde_json::to_string_pretty(&info).expect("serialises");
    text.push('\n');
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(info)
}

/// Writes `NAME.docs` and `NAME.samples` for `n` samples of one source; returns the epochs started.
fn write_source_index(
    dir: &Path,
    name: &str,
    store: &TokenStore,
    n: u64,
    seq_len: u64,
    seed: u64,
) -> Result<u64, PluginError> {
    let docs_path = dir.join(format!("{name}.docs"));
    let samples_path = dir.join(format!("{name}.samples"));
    let mut docs = BufWriter::with_capacity(1 << 20, File::create(&docs_path).map_err(io(&docs_path))?);
    let mut bounds = BufWriter::with_capacity(1 << 20, File::create(&samples_path).map_err(io(&samples_path))?);
    let documents = store.dataset.documents();
    let documents_u32 = u32::try_from(documents).map_err(|_| {
        PluginError::new(format!("source `{name}` has {documents} documents; at most 2^32 - 1 are supported"))
    })?;
    let mut epochs = 0u64;
    if n > 0 {
        // Boundaries j * seq_len for j = 0..=n, in stream order.
        let mut next_bound: u64 = 0;
        let mut j: u64 = 0;
        let mut position: u64 = 0; // index in the .docs stream
        let mut start: u64 = 0; // stream token position of the current document
        'epochs: loop {
            let order = permutation(documents_u32, epoch_seed(seed, name, epochs));
            epochs += 1;
            for doc in order {
                let len = {
                    let r = store.dataset.document_range(doc as u64);
                    r.end - r.start
                };
                docs.write_all(&doc.to_le_bytes()).map_err(io(&docs_path))?;
                while next_bound < start + len {
                    bounds.write_all(&position.to_le_bytes()).map_err(io(&samples_path))?;
                    bounds.write_all(&(next_bound - start).to_le_bytes()).map_err(io(&samples_path))?;
                    j += 1;
                    if j > n {
                        break 'epochs;
                    }
                    next_bound = j * seq_len;
                }
                start += len;
                position += 1;
            }
        }
    }
    for (w, p) in [(&mut docs, &docs_path), (&mut bounds, &samples_path)] {
        w.flush().map_err(io(p))?;
        w.get_ref().sync_all().map_err(io(p))?;
    }
    Ok(epochs)
}

//! `eval.perplexity`: bits per byte and token perplexity per language.
//!
//! ```toml
//! [evals.bpb]
//! plugin = "eval.perplexity"
//! on = ["stages.base", "stages.cap", "stages.cat"]
//! milestones = true
//! sources = ["sources.eng_web", "sources.fin_web"]      # their held-out split; lang from source.json
//! files = { eng_Latn = "file:data/flores200/eng_Latn.devtest" }   # one document per line
//! stride = 512          # window stride for documents longer than the context (default: 512)
//! batch_size = 8
//! ```
//!
//! Documents of one language (from any number of sources and files) are pooled:
//! `bpb.<lang>` = sum of NLL (nats) / ln 2 / sum of UTF-8 bytes, `ppl.<lang>` = exp(sum of NLL /
//! sum of scored tokens). Lower is better. As lm-evaluation-harness's rolling log-likelihood
//! does, the worker puts the end-of-text token before each document, so every token of the
//! document is predicted and scored (`PerplexityResult`), and the bytes are all of its bytes.

use std::collections::BTreeMap;
use std::path::Path;

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, Offer, Output, PlanContext, Plugin, PluginError,
};
use aurora_worker_api::{Job, PerplexityJob, PerplexityResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::data::{read_jsonl, read_text, string_field};
use crate::schedule::{self, Metric, NodeConfig, Results, evaluator_config};

evaluator_config! {
    /// `[evals.NAME]` with `plugin = "eval.perplexity"`.
    pub struct PerplexityConfig {
        /// Sources (`SECTION.NAME` of `source.*` entries) whose held-out documents are scored; the
        /// language is the source's `lang`.
        #[serde(default)]
        pub sources: Vec<String>,
        /// Language code -> `"file:PATH"` of a plain text file with one document per line (e.g.
        /// FLORES-200 devtest). Blank lines are skipped.
        #[serde(default)]
        pub files: BTreeMap<String, String>,
        /// Window stride (tokens) for documents longer than the model's context.
        #[serde(default = "default_stride")]
        #[schemars(range(min = 1))]
        pub stride: u64,
    }
}

fn default_stride() -> u64 {
    512
}

/// What enters the node key besides the schedule's fields (inputs enter by content).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settings {
    stride: u64,
    /// Input name -> language, for the file inputs (source inputs carry their language).
    file_langs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct EvalPerplexity;

aurora_core::register_plugin!(EvalPerplexity);

/// Input name prefixes: `source:sources.eng_web`, `text:eng_Latn`.
const SOURCE_INPUT: &str = "source:";
const FILE_INPUT: &str = "text:";

impl Plugin for EvalPerplexity {
    fn id(&self) -> &'static str {
        "eval.perplexity"
    }
    fn version(&self) -> &'static str {
        // 2: documents are scored after the end-of-text token (every token, as
        // lm-evaluation-harness's rolling log-likelihood), not from their second token.
        // 3: the model's fused GELU kernel on CPU: other last bits.
        "3"
    }
    fn description(&self) -> &'static str {
        "Bits per byte and token perplexity per language on held-out splits and text files"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(PerplexityConfig)
    }
    fn offers(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Vec<Offer> {
        schedule::offers::<PerplexityConfig>(entry, ctx)
    }

    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: PerplexityConfig = entry.parse(ctx.manifest)?;
        let mut problems = Vec::new();
        let mut inputs = BTreeMap::new();
        if config.sources.is_empty() && config.files.is_empty() {
            problems.push(
                Diagnostic::new(format!("`{}.{}` scores nothing", entry.section, entry.name))
                    .at(ctx.manifest.sources.value(&entry.pointer()))
                    .pointer(entry.pointer())
                    .expected("`sources = [\"sources.NAME\", ...]` and/or `files = { LANG = \"file:PATH\" }`"),
            );
        }
        for (i, reference) in config.sources.iter().enumerate() {
            let pointer = format!("{}/sources/{i}", entry.pointer());
            match ctx.input_of(reference, Output::DOCUMENTS) {
                Some(id) => {
                    inputs.insert(
                        format!("{SOURCE_INPUT}{reference}"),
                        InputSpec { source: InputSource::Node(id), pointer },
                    );
                }
                None => problems.push(
                    Diagnostic::new(format!("source \"{reference}\" is not a source entry"))
                        .at(ctx.manifest.sources.value(&pointer))
                        .pointer(pointer)
                        .expected("`SECTION.NAME` of an entry that provides documents, e.g. \"sources.eng_web\""),
                ),
            }
        }
        let mut file_langs = BTreeMap::new();
        for (lang, reference) in &config.files {
            let pointer = format!("{}/files/{lang}", entry.pointer());
            let input = match ctx.file_input(reference, pointer, &format!("files.{lang}"), "a text file") {
                Ok(input) => input,
                Err(d) => {
                    problems.push(d);
                    continue;
                }
            };
            let name = format!("{FILE_INPUT}{lang}");
            file_langs.insert(name.clone(), lang.clone());
            inputs.insert(name, input);
        }
        if !problems.is_empty() {
            return Err(Diagnostics(problems));
        }
        schedule::plan(entry, ctx, &config, &Settings { stride: config.stride, file_langs }, &inputs)
    }

    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let node: NodeConfig<Settings> = NodeConfig::from_ctx(ctx)?;
        let documents = collect_documents(ctx.inputs, &node.settings.file_langs)?;
        let scratch = ctx.resume_dir_created()?.to_path_buf();
        let requests = scratch.join("documents.jsonl");
        schedule::write_jsonl(&requests, documents.iter().map(|d| json!({ "text": d.text })))?;
        let model = node.model_ref(ctx)?;
        let tokens_total = schedule::tokens_total(&model.dir)?;
        let job = Job::Perplexity(PerplexityJob {
            node: ctx.node_id.to_string(),
            model,
            documents: requests,
            prefix_end_of_text: true,
            stride: node.settings.stride,
            batch_size: node.runtime.batch_size,
            out_dir: ctx.out_dir.to_path_buf(),
        });
        crate::worker::run(&job, ctx)?;
        let scored: Vec<PerplexityResult> =
            schedule::read_worker_output(&ctx.out_dir.join("perplexity.jsonl"), documents.len())?;
        let langs: Vec<&str> = documents.iter().map(|d| d.lang.as_str()).collect();
        let mut results = Results::new(self.id(), &node, tokens_total);
        let stats = per_language(&langs, &scored);
        for (lang, s) in &stats {
            results.insert(format!("bpb.{lang}"), Metric { value: s.bits_per_byte(), higher_is_better: false });
            results.insert(format!("ppl.{lang}"), Metric { value: s.perplexity(), higher_is_better: false });
        }
        results.details = json!({ "languages": stats });
        Ok(ExecOutcome { metrics: results.write(ctx.out_dir)? })
    }
    fn resources(&self, config: &serde_json::Value) -> aurora_core::plugin::Resources {
        crate::schedule::resources(config)
    }
}

/// A document to score and its language.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub lang: String,
    pub text: String,
}

/// The documents of every input, in input-name order: sources' `heldout.jsonl` (language from
/// `source.json`) and text files (one document per non-blank line).
pub fn collect_documents(
    inputs: &BTreeMap<String, std::path::PathBuf>,
    file_langs: &BTreeMap<String, String>,
) -> Result<Vec<Document>, PluginError> {
    let mut documents = Vec::new();
    for (name, path) in inputs {
        let before = documents.len();
        if let Some(source) = name.strip_prefix(SOURCE_INPUT) {
            let lang = source_lang(path)?;
            let heldout = path.join("heldout.jsonl");
            for record in read_jsonl(&heldout).map_err(|e| PluginError::new(e.to_string()))? {
                let text = string_field(&heldout, &record, "text").map_err(|e| PluginError::new(e.to_string()))?;
                documents.push(Document { lang: lang.clone(), text: text.to_string() });
            }
            if documents.len() == before {
                return Err(PluginError::new(format!(
                    "source `{source}` has no held-out documents ({} is empty); give it `heldout = {{ fraction = ... }}`",
                    heldout.display()
                )));
            }
        } else if let Some(lang) = file_langs.get(name) {
            let text = read_text(path).map_err(|e| PluginError::new(e.to_string()))?;
            documents.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| Document { lang: lang.clone(), text: l.to_string() }),
            );
            if documents.len() == before {
                return Err(PluginError::new(format!("{}: no non-blank lines to score", path.display())));
            }
        }
    }
    Ok(documents)
}

fn source_lang(dir: &Path) -> Result<String, PluginError> {
    let path = dir.join("source.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| PluginError::new(format!("cannot read {}: {e}", path.display())))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| PluginError::new(format!("{}: not JSON: {e}", path.display())))?;
    value["lang"].as_str().map(str::to_string).ok_or_else(|| {
        PluginError::new(format!("{}: no string `lang`; expected the source.json of a source artifact", path.display()))
    })
}

/// Summed scores of one language.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LanguageStats {
    pub docs: u64,
    pub bytes: u64,
    pub tokens: u64,
    /// Summed negative log-likelihood, nats.
    pub nll: f64,
}

impl LanguageStats {
    pub fn bits_per_byte(&self) -> f64 {
        self.nll / std::f64::consts::LN_2 / self.bytes as f64
    }
    pub fn perplexity(&self) -> f64 {
        (self.nll / self.tokens as f64).exp()
    }
}

/// Pools the worker's per-document scores by language (`langs[i]` is document i's language).
pub fn per_language(langs: &[&str], scored: &[PerplexityResult]) -> BTreeMap<String, LanguageStats> {
    let mut stats: BTreeMap<String, LanguageStats> = BTreeMap::new();
    for (lang, r) in langs.iter().zip(scored) {
        let s = stats.entry(lang.to_string()).or_default();
        s.docs += 1;
        s.bytes += r.bytes;
        s.tokens += r.tokens;
        s.nll += r.nll;
    }
    stats
}

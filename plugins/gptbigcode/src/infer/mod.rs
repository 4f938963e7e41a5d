//! Inference for the worker: log-likelihood scoring, document perplexity and text generation
//! with a multi-query KV cache ([`crate::model::KvCache`], [`GptBigCode::forward_cached`]).
//!
//! The entry points [`run_loglik`], [`run_perplexity`] and [`run_generate`] take the jobs of
//! `aurora_worker_api::jobs`, read their JSONL requests, write their JSONL results into
//! `out_dir` and return summary metrics. Output files hold no timings, so on CPU the same job
//! gives the same bytes; timings (tokens/s) are only in the returned metrics.
//!
//! Below them, [`Session`] (a loaded model and its tokenizer), [`generate()`] and
//! [`score_windows`] are usable directly (tests, benchmarks).

mod generate;
mod sample;
mod score;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use aurora_torch::tch::{self, Device};
use aurora_torch::{DeviceSpec, TorchError};
use aurora_worker_api::{ModelRef, Precision};
use serde::de::DeserializeOwned;
use tokenizers::Tokenizer;

use crate::hf::{self, HfError};
use crate::model::{GptBigCode, ModelError};

pub use generate::{Generated, GenerationRow, generate, run_generate};
pub use sample::{SplitMix64, choose_token, row_seed};
pub use score::{ScoredToken, Window, perplexity_windows, run_loglik, run_perplexity, score_windows};

/// The tokenizer file a model directory must hold.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Why an inference job failed.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}:{column}: {message}; expected one JSON object per line: {expected}", path.display())]
    Request { path: PathBuf, line: usize, column: usize, message: String, expected: &'static str },
    #[error(
        "{}: cannot load the tokenizer: {message} (the model directory needs the `tokenizer.json` the model \
         was trained with; a stage artifact carries one)",
        path.display()
    )]
    TokenizerLoad { path: PathBuf, message: String },
    #[error(
        "{}: the tokenizer has {tokenizer} tokens but the model's vocab_size is {model}: they do not belong \
         together",
        path.display()
    )]
    VocabMismatch { path: PathBuf, tokenizer: usize, model: i64 },
    #[error("{}:{line}: cannot tokenize the {field}: {message}", path.display())]
    Tokenize { path: PathBuf, line: usize, field: &'static str, message: String },
    #[error("cannot decode {tokens} generated tokens: {message}")]
    Decode { tokens: usize, message: String },
    #[error("{}:{line}: {message}", path.display())]
    TooLong { path: PathBuf, line: usize, message: String },
    #[error("job `{node}`: {message}")]
    Job { node: String, message: String },
    #[error("job `{node}`: precision bf16 needs a CUDA device, got `{device}`: use precision fp32 on CPU")]
    Bf16OnCpu { node: String, device: String },
    #[error("job `{node}`: {source}")]
    Device { node: String, source: TorchError },
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// A model with its tokenizer, on its device, ready to score and generate.
#[derive(Debug)]
pub struct Session {
    pub loaded: hf::Loaded,
    pub tokenizer: Tokenizer,
    pub device: Device,
}

impl Session {
    /// Loads `model.dir` (weights with [`hf::load_pretrained`], `tokenizer.json`) onto
    /// `model.device` in `model.precision` (bf16 only on CUDA); `model.threads > 0` sets
    /// libtorch's intra-op threads. `node` names the job in errors.
    pub fn load(node: &str, model: &ModelRef) -> Result<Self, InferError> {
        let device_error = |source| InferError::Device { node: node.to_owned(), source };
        let spec: DeviceSpec = model.device.parse().map_err(device_error)?;
        let device = aurora_torch::resolve(spec).map_err(device_error)?;
        if model.precision == Precision::Bf16 && !device.is_cuda() {
            return Err(InferError::Bf16OnCpu { node: node.to_owned(), device: model.device.clone() });
        }
        if model.threads > 0 {
            tch::set_num_threads(model.threads as i32);
        }
        let tokenizer = load_tokenizer(&model.dir)?;
        let mut loaded = hf::load_pretrained(&model.dir, device)?;
        if model.precision == Precision::Bf16 {
            loaded.vs.bfloat16();
        }
        Self::new(loaded, tokenizer, &model.dir.join(TOKENIZER_FILE))
    }

    /// A session from a loaded model and its tokenizer (read from `tokenizer_path`, for
    /// messages); checks that the tokenizer's ids fit the model's vocabulary.
    pub fn new(loaded: hf::Loaded, tokenizer: Tokenizer, tokenizer_path: &Path) -> Result<Self, InferError> {
        let tokens = tokenizer.get_vocab_size(true);
        if tokens as i64 > loaded.config.vocab_size {
            return Err(InferError::VocabMismatch {
                path: tokenizer_path.to_path_buf(),
                tokenizer: tokens,
                model: loaded.config.vocab_size,
            });
        }
        let device = loaded.vs.device();
        Ok(Self { loaded, tokenizer, device })
    }

    pub fn model(&self) -> &GptBigCode {
        &self.loaded.model
    }

    pub fn n_positions(&self) -> i64 {
        self.loaded.config.n_positions
    }

    pub fn eos(&self) -> i64 {
        self.loaded.config.eos_token_id
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, String> {
        let encoding = self.tokenizer.encode_fast(text, false).map_err(|e| e.to_string())?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// The text of `ids` (special tokens kept as text).
    pub fn decode(&self, ids: &[i64]) -> Result<String, String> {
        let ids: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
        self.tokenizer.decode(&ids, false).map_err(|e| e.to_string())
    }
}

/// `DIR/tokenizer.json`.
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, InferError> {
    load_tokenizer_file(&dir.join(TOKENIZER_FILE))
}

/// A `tokenizer.json` file.
pub fn load_tokenizer_file(path: &Path) -> Result<Tokenizer, InferError> {
    Tokenizer::from_file(path)
        .map_err(|e| InferError::TokenizerLoad { path: path.to_path_buf(), message: e.to_string() })
}

/// The records of a JSONL file (blank lines skipped), each with its 1-based line number.
/// `expected` describes a record for error messages.
fn read_jsonl<T: DeserializeOwned>(path: &Path, expected: &'static str) -> Result<Vec<(usize, T)>, InferError> {
    let text = std::fs::read_to_string(path).map_err(|source| InferError::Io { path: path.to_path_buf(), source })?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line).map_err(|e| {
            let full = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            InferError::Request {
                path: path.to_path_buf(),
                line: i + 1,
                column: e.column(),
                message: full.strip_suffix(&position).unwrap_or(&full).to_owned(),
                expected,
            }
        })?;
        records.push((i + 1, record));
    }
    Ok(records)
}

/// Writes one JSON line per result to `DIR/NAME` (creating `DIR`).
fn write_jsonl<T: serde::Serialize>(dir: &Path, name: &str, results: &[T]) -> Result<PathBuf, InferError> {
    let path = dir.join(name);
    let io = |source| InferError::Io { path: path.clone(), source };
    std::fs::create_dir_all(dir).map_err(|source| InferError::Io { path: dir.to_path_buf(), source })?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
    for r in results {
        let line = serde_json::to_string(r).expect("results serialize");
        writeln!(out, "{line}").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(path)
}

/// `batch_size` as a chunk size: at least 1.
fn chunk_size(node: &str, batch_size: u64) -> Result<usize, InferError> {
    if batch_size == 0 {
        return Err(InferError::Job { node: node.to_owned(), message: "batch_size must be at least 1".into() });
    }
    Ok(batch_size as usize)
}

/// A byte-level BPE tokenizer without merges: `<|endoftext|>` is id 0 (the EOS of
/// [`crate::config::GptBigCodeConfig::tiny`]) and byte b is id b + 1 (257 tokens). Every text
/// round-trips; meant for tests and benchmarks of small models.
pub fn byte_tokenizer() -> Tokenizer {
    // GPT-2's byte -> printable character map (what the ByteLevel pre-tokenizer emits):
    // printable Latin-1 bytes stand for themselves, the others for 256, 257, ... in order.
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut next_char = 256;
    let vocab: serde_json::Map<String, serde_json::Value> = (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                next_char += 1;
                next_char - 1
            };
            (char::from_u32(c).expect("valid char").to_string(), (b + 1).into())
        })
        .chain([("<|endoftext|>".to_owned(), 0.into())])
        .collect();
    let byte_level =
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
    });
    Tokenizer::from_bytes(json.to_string().as_bytes()).expect("a valid tokenizer.json")
}

//! Fixtures of the trainer tests: a real mixture built with aurora-tokens' public API from the
//! shipped sample corpus, and a job for the tiny GPTBigCode.
//!
//! Tokenizer choice: the shared GPT-2 tokenizer (50k ids) would make the tiny model's embedding
//! and softmax dominate the run time, so the fixture trains a small byte-level BPE (384 ids,
//! `<|endoftext|>` = id 0 = the config's EOS) on the same texts with `aurora_tokens::tokenizer::
//! train_bpe`, the function the `tokenizer.bpe` plugin runs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aurora_gptbigcode::GptBigCodeConfig;
use aurora_gptbigcode::schedule::{Schedule, StageSchedule};
use aurora_tokens::megatron::IndexedWriter;
use aurora_tokens::mixture::{MixtureSpec, build_mixture};
use aurora_tokens::store::TokenStoreInfo;
use aurora_tokens::tokenizer::{BpeOptions, TokenizerMeta, train_bpe};
use aurora_train::Layout;
use aurora_train::optimizer::AdamWConfig;
use aurora_worker_api::{Init, Precision, TrainData, TrainJob};

pub const VOCAB: i64 = 384;
pub const SEQ_LEN: u64 = 32;
pub const SOURCES: [(&str, &str); 2] = [("eng", "eng_Latn.jsonl"), ("fin", "fin_Latn.jsonl")];

pub fn sample_corpus() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments/data/sample"))
}

/// A tokenizer artifact, the token stores of the two sources and their mixture, in `root`.
pub struct Fixture {
    pub tokenizer_dir: PathBuf,
    pub meta: TokenizerMeta,
    pub mixture: PathBuf,
    pub stores: BTreeMap<String, PathBuf>,
    /// Every token of the stores, to compute the unigram entropy.
    pub token_counts: BTreeMap<u32, u64>,
}

fn texts(file: &str) -> Vec<String> {
    std::fs::read_to_string(sample_corpus().join(file))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Builds the fixture; the mixture holds `samples` samples of `SEQ_LEN + 1` tokens.
pub fn fixture(root: &Path, samples: u64) -> Fixture {
    let docs = root.join("docs");
    let mut sources = Vec::new();
    for (name, file) in SOURCES {
        let dir = docs.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(sample_corpus().join(file), dir.join("documents.jsonl")).unwrap();
        sources.push(dir);
    }
    let options = BpeOptions {
        vocab_size: VOCAB as u64,
        min_frequency: 2,
        special_tokens: vec!["<|endoftext|>".into()],
        max_documents_per_source: None,
    };
    let refs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let (json, meta, _) = train_bpe(&options, &refs).unwrap();
    assert_eq!(meta.eod_id, 0);
    let tokenizer_dir = root.join("tokenizer");
    std::fs::create_dir_all(&tokenizer_dir).unwrap();
    std::fs::write(tokenizer_dir.join("tokenizer.json"), &json).unwrap();
    let tokenizer = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();

    let mut stores = BTreeMap::new();
    let mut token_counts = BTreeMap::new();
    for (name, file) in SOURCES {
        let dir = root.join("stores").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut writer = IndexedWriter::create(&dir.join("tokens"), meta.dtype).unwrap();
        let (mut documents, mut tokens) = (0, 0);
        for text in texts(file) {
            let mut ids = tokenizer.encode(text.as_str(), false).unwrap().get_ids().to_vec();
            ids.push(meta.eod_id);
            for &id in &ids {
                *token_counts.entry(id).or_insert(0) += 1;
            }
            writer.add_document(&ids).unwrap();
            documents += 1;
            tokens += ids.len() as u64;
        }
        writer.finish().unwrap();
        let info = TokenStoreInfo {
            documents,
            tokens,
            bytes: None,
            lang: if name == "eng" { "eng_Latn".into() } else { "fin_Latn".into() },
            programming_language: None,
            vocab_size: meta.vocab_size,
            eod_id: Some(meta.eod_id),
            dtype: meta.dtype,
            dropped_duplicates: 0,
        };
        std::fs::write(dir.join("tokens.json"), serde_json::to_string_pretty(&info).unwrap()).unwrap();
        stores.insert(name.to_owned(), dir);
    }
    let mixture = root.join("mixture");
    std::fs::create_dir_all(&mixture).unwrap();
    let spec = MixtureSpec {
        weights: BTreeMap::from([("eng".into(), 1.0), ("fin".into(), 1.0)]),
        tokens: samples * SEQ_LEN,
        seq_len: SEQ_LEN,
        max_repetition: 100.0,
        seed: 11,
    };
    build_mixture(&spec, &meta, &stores, &mixture, &|_, _| {}).unwrap();
    Fixture { tokenizer_dir, meta, mixture, stores, token_counts }
}

impl Fixture {
    /// Entropy (nats) of the unigram distribution of the stores' tokens.
    pub fn unigram_entropy(&self) -> f64 {
        let total: u64 = self.token_counts.values().sum();
        self.token_counts
            .values()
            .map(|&c| {
                let p = c as f64 / total as f64;
                -p * p.ln()
            })
            .sum()
    }

    /// A job training the tiny model from scratch on the mixture.
    pub fn job(&self, root: &Path, name: &str, steps: u64) -> TrainJob {
        TrainJob {
            node: format!("stages/{name}"),
            seed: 1234,
            device: "cpu".into(),
            precision: Precision::Fp32,
            model: GptBigCodeConfig::tiny(2, 64, 4, VOCAB, SEQ_LEN as i64),
            init: Init::Scratch,
            data: TrainData::Mixture { dir: self.mixture.clone(), stores: self.stores.clone() },
            tokenizer: self.tokenizer_dir.clone(),
            schedule: StageSchedule {
                schedule: Schedule::Cosine { max_lr: 1e-2, min_lr: 1e-3, warmup_steps: 20, decay_steps: steps },
                rewarm: false,
            },
            optimizer: AdamWConfig::default(),
            grad_clip: 1.0,
            seq_len: SEQ_LEN,
            micro_batch: 4,
            global_batch: 8,
            steps: Some(steps),
            checkpoint_every_tokens: 0,
            milestones: vec![],
            threads: 1,
            layout: Layout::default(),
            distributed_optimizer: true,
            out_dir: root.join(name).join("out"),
            work_dir: root.join(name).join("work"),
        }
    }
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn metrics_losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

//! tokenizer.file and tokenizer.bpe.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use aurora_tokens::megatron::DType;
use aurora_tokens::tokenizer::{BpeOptions, TokenizerMeta, load_artifact, train_bpe};
use common::*;
use serde_json::json;

#[test]
fn gpt2_tokenizer_file_loads_with_its_real_ids() {
    let Some(path) = gpt2_tokenizer_json() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let inputs = BTreeMap::from([("tokenizer".to_string(), path.clone())]);
    let outcome = exec("tokenizer.file", json!({ "eod": "<|endoftext|>" }), &inputs, &out, 1).unwrap();
    assert_eq!(outcome.metrics["vocab_size"], json!(50257));
    // The artifact's tokenizer.json is the input, byte for byte.
    assert_eq!(std::fs::read(out.join("tokenizer.json")).unwrap(), std::fs::read(&path).unwrap());
    let (tok, meta) = load_artifact(&out).unwrap();
    assert_eq!(meta.vocab_size, 50257);
    assert_eq!(meta.eod_id, 50256);
    assert_eq!(meta.eod_token, "<|endoftext|>");
    assert_eq!(meta.dtype, DType::U16);
    assert!(meta.special_tokens.iter().any(|t| t.id == 50256 && t.token == "<|endoftext|>"));
    let enc = tok.encode_fast("Hello world!", false).unwrap();
    assert_eq!(enc.get_ids(), &[15496, 995, 0]);
}

#[test]
fn a_tokenizer_file_that_does_not_parse_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tokenizer.json");
    std::fs::write(&bad, r#"{"model": {"type": "BPE", "vocab": 3}}"#).unwrap();
    let inputs = BTreeMap::from([("tokenizer".to_string(), bad)]);
    let err =
        exec("tokenizer.file", json!({ "eod": "<|endoftext|>" }), &inputs, &dir.path().join("out"), 1).unwrap_err();
    let msg = err.message.replace(&dir.path().display().to_string(), "<dir>");
    insta::assert_snapshot!(msg);
}

#[test]
fn an_eod_token_outside_the_vocabulary_is_an_error_listing_the_special_tokens() {
    let Some(path) = gpt2_tokenizer_json() else { return };
    let dir = tempfile::tempdir().unwrap();
    let inputs = BTreeMap::from([("tokenizer".to_string(), path.clone())]);
    let err = exec("tokenizer.file", json!({ "eod": "</s>" }), &inputs, &dir.path().join("out"), 1).unwrap_err();
    let msg = err.message.replace(&path.display().to_string(), "<gpt2_tokenizer.json>");
    insta::assert_snapshot!(msg, @"<gpt2_tokenizer.json>: the end-of-document token `</s>` is not in the vocabulary; set `eod` to one of its special tokens: `<|endoftext|>`");
}

fn sample_sources(root: &std::path::Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for (name, lang) in
        [("eng", "eng_Latn"), ("fin", "fin_Latn"), ("hin", "hin_Deva"), ("jpn", "jpn_Jpan"), ("vie", "vie_Latn")]
    {
        let dir = root.join(name);
        write_documents(&dir, lang, &sample_texts(&format!("{lang}.jsonl")));
        dirs.push(dir);
    }
    dirs
}

fn options() -> BpeOptions {
    BpeOptions {
        vocab_size: 1200,
        min_frequency: 2,
        special_tokens: vec!["<|endoftext|>".into(), "<pad>".into()],
        max_documents_per_source: None,
    }
}

#[test]
fn bpe_training_is_byte_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let dirs = sample_sources(dir.path());
    let refs: Vec<&std::path::Path> = dirs.iter().map(|p| p.as_path()).collect();
    let (a, meta_a, docs) = train_bpe(&options(), &refs).unwrap();
    let (b, meta_b, _) = train_bpe(&options(), &refs).unwrap();
    assert_eq!(a, b, "two trainings in one process differ");
    assert_eq!(meta_a, meta_b);
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let (c, _, _) = pool.install(|| train_bpe(&options(), &refs)).unwrap();
        assert_eq!(a, c, "training on {threads} threads differs");
    }
    assert!(docs > 50, "read {docs} documents");
    assert_eq!(meta_a.vocab_size, 1200);
    assert_eq!(meta_a.eod_id, 0);
    assert_eq!(meta_a.special_tokens[1].token, "<pad>");
    assert_eq!(meta_a.special_tokens[1].id, 1);
}

#[test]
fn trained_bpe_round_trips_text_in_every_sample_language() {
    let dir = tempfile::tempdir().unwrap();
    let dirs = sample_sources(dir.path());
    let refs: Vec<&std::path::Path> = dirs.iter().map(|p| p.as_path()).collect();
    let (json, meta, _) = train_bpe(&BpeOptions { max_documents_per_source: Some(5), ..options() }, &refs).unwrap();
    let tok = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
    for text in [
        "Hello, world!",
        "Hyvää huomenta, mitä kuuluu?",
        "नमस्ते दुनिया",
        "こんにちは世界",
        "Xin chào thế giới",
        "zebra\u{1F600}",
    ] {
        let ids = tok.encode_fast(text, false).unwrap().get_ids().to_vec();
        assert!(ids.iter().all(|&i| (i as u64) < meta.vocab_size));
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn bpe_node_writes_an_artifact_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let dirs = sample_sources(dir.path());
    let inputs: BTreeMap<String, PathBuf> = dirs
        .iter()
        .map(|d| (format!("sample:sources.{}", d.file_name().unwrap().to_str().unwrap()), d.clone()))
        .collect();
    let out = dir.path().join("out");
    let config = json!({ "vocab_size": 600, "min_frequency": 2, "special_tokens": ["<|endoftext|>"], "max_documents_per_source": 3 });
    let outcome = exec("tokenizer.bpe", config, &inputs, &out, 1).unwrap();
    assert_eq!(outcome.metrics["sample_documents"], json!(15));
    let (_, meta): (_, TokenizerMeta) = load_artifact(&out).unwrap();
    assert_eq!(meta.vocab_size, 600);
}

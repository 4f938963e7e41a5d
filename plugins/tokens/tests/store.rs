//! The token store (`tokenizer.encode`) and `source.megatron`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aurora_tokens::documents::SourceInfo;
use aurora_tokens::megatron::{DType, IndexedWriter};
use aurora_tokens::store::{EncodeInput, TokenStore, encode_documents};
use aurora_tokens::tokenizer::{BpeOptions, TokenizerMeta, describe, train_bpe};
use common::*;
use proptest::prelude::*;
use serde_json::json;
use tokenizers::Tokenizer;

/// A small byte-level BPE trained once on the shipped sample corpus (no external data needed).
fn sample_bpe() -> &'static (Tokenizer, TokenizerMeta) {
    static TOK: OnceLock<(Tokenizer, TokenizerMeta)> = OnceLock::new();
    TOK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for lang in ["eng_Latn", "fin_Latn", "hin_Deva", "jpn_Jpan", "vie_Latn"] {
            let d = dir.path().join(lang);
            write_documents(&d, lang, &sample_texts(&format!("{lang}.jsonl")));
            dirs.push(d);
        }
        let refs: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();
        let options = BpeOptions {
            vocab_size: 800,
            min_frequency: 2,
            special_tokens: vec!["<|endoftext|>".into()],
            max_documents_per_source: Some(10),
        };
        let (json, meta, _) = train_bpe(&options, &refs).unwrap();
        (Tokenizer::from_bytes(json.as_bytes()).unwrap(), meta)
    })
}

fn tokenizer_artifact(dir: &Path, json: &[u8], meta: &TokenizerMeta) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
    std::fs::write(dir.join("tokenizer.meta.json"), serde_json::to_string(meta).unwrap()).unwrap();
    dir.to_path_buf()
}

/// Encodes texts with the sample BPE through the library entry point.
fn encode(out: &Path, texts: &[String], drop: &[u64]) -> Result<aurora_tokens::store::TokenStoreInfo, String> {
    let (tok, meta) = sample_bpe();
    let docs = out.with_extension("docs");
    write_documents(&docs, "fin_Latn", texts);
    let source = SourceInfo::read(&docs).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let origin = docs.join("documents.jsonl");
    let input = EncodeInput { tokenizer: tok, meta, source: &source, drop, origin: &origin };
    let reader = aurora_tokens::documents::DocumentReader::open(&docs).unwrap();
    encode_documents(&input, reader, out, |_| {}).map_err(|e| e.message)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// documents -> tokens -> .bin/.idx -> reader -> decode gives the text back, EOD after each.
    #[test]
    fn documents_round_trip_through_the_token_store(texts in prop::collection::vec("\\PC{0,60}", 0..12)) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("store");
        let info = encode(&out, &texts, &[]).unwrap();
        let (tok, meta) = sample_bpe();
        let store = TokenStore::open(&out).unwrap();
        prop_assert_eq!(info.documents, texts.len() as u64);
        prop_assert_eq!(store.info.bytes, Some(texts.iter().map(|t| t.len() as u64).sum::<u64>()));
        prop_assert_eq!(
            store.bytes_per_document().unwrap().unwrap(),
            texts.iter().map(|t| t.len() as u64).collect::<Vec<_>>()
        );
        for (i, text) in texts.iter().enumerate() {
            let ids = store.dataset.document(i as u64).to_vec();
            prop_assert_eq!(*ids.last().unwrap(), meta.eod_id);
            prop_assert_eq!(&tok.decode(&ids[..ids.len() - 1], false).unwrap(), text);
        }
    }
}

#[test]
fn documents_follow_source_order_across_parallel_batches() {
    // More documents than one batch (4096), so several parallel batches are written in order.
    let texts: Vec<String> = (0..9000).map(|i| format!("dokumentti numero {i}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store");
    let info = encode(&out, &texts, &[]).unwrap();
    assert_eq!(info.documents, 9000);
    let (tok, _) = sample_bpe();
    let store = TokenStore::open(&out).unwrap();
    for i in [0u64, 4095, 4096, 8191, 8999] {
        let ids = store.dataset.document(i).to_vec();
        assert_eq!(tok.decode(&ids[..ids.len() - 1], false).unwrap(), texts[i as usize]);
    }
}

#[test]
fn dropped_duplicates_are_skipped() {
    let texts: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|s| format!("teksti {s}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store");
    let info = encode(&out, &texts, &[1, 3]).unwrap();
    assert_eq!((info.documents, info.dropped_duplicates), (3, 2));
    let (tok, _) = sample_bpe();
    let store = TokenStore::open(&out).unwrap();
    let kept: Vec<String> = (0..3)
        .map(|i| {
            let ids = store.dataset.document(i).to_vec();
            tok.decode(&ids[..ids.len() - 1], false).unwrap()
        })
        .collect();
    assert_eq!(kept, vec!["teksti a", "teksti c", "teksti e"]);
    assert_eq!(info.bytes, Some(3 * 8));
}

#[test]
fn the_encode_node_reads_the_dedup_drop_list_of_its_source() {
    let (tok, meta) = sample_bpe();
    let dir = tempfile::tempdir().unwrap();
    let tok_dir = tokenizer_artifact(&dir.path().join("tok"), tok.to_string(false).unwrap().as_bytes(), meta);
    let docs = dir.path().join("docs");
    write_documents(&docs, "eng_Latn", &["one".into(), "two".into(), "three".into()]);
    let dedup = dir.path().join("dedup");
    std::fs::create_dir_all(dedup.join("drop")).unwrap();
    std::fs::write(dedup.join("drop/eng_web.txt"), "0\n2\n").unwrap();
    std::fs::write(dedup.join("drop/other.txt"), "1\n").unwrap();
    let inputs = BTreeMap::from([
        ("tokenizer".to_string(), tok_dir),
        ("documents".to_string(), docs),
        ("dedup".to_string(), dedup.clone()),
    ]);
    let out = dir.path().join("out");
    let outcome = exec("tokenizer.encode", json!({ "source": "eng_web", "dedup": true }), &inputs, &out, 1).unwrap();
    assert_eq!(outcome.metrics["documents"], json!(1));
    assert_eq!(outcome.metrics["dropped_duplicates"], json!(2));
    let store = TokenStore::open(&out).unwrap();
    let ids = store.dataset.document(0).to_vec();
    assert_eq!(tok.decode(&ids[..ids.len() - 1], false).unwrap(), "two");
    assert_eq!(store.info.lang, "eng_Latn");

    // A drop list that does not fit the documents is an error naming the file and line.
    std::fs::write(dedup.join("drop/eng_web.txt"), "2\n1\n").unwrap();
    let err =
        exec("tokenizer.encode", json!({ "source": "eng_web", "dedup": true }), &inputs, &dir.path().join("o2"), 1)
            .unwrap_err();
    insta::assert_snapshot!(err.message.replace(&dir.path().display().to_string(), "<dir>"), @"<dir>/dedup/drop/eng_web.txt:2: `1` is not a document index in ascending order (previous Some(2), documents 3); the drop list does not belong to this source's documents, re-run `dedup/exact`");
}

#[test]
fn a_malformed_documents_line_is_an_error_with_file_and_line() {
    let (tok, meta) = sample_bpe();
    let dir = tempfile::tempdir().unwrap();
    let tok_dir = tokenizer_artifact(&dir.path().join("tok"), tok.to_string(false).unwrap().as_bytes(), meta);
    let docs = dir.path().join("docs");
    write_documents(&docs, "eng_Latn", &["one".into()]);
    std::fs::write(docs.join("documents.jsonl"), "{\"text\": \"one\"}\n{\"txt\": 2}\n").unwrap();
    let inputs = BTreeMap::from([("tokenizer".to_string(), tok_dir), ("documents".to_string(), docs)]);
    let err = exec("tokenizer.encode", json!({ "source": "x", "dedup": false }), &inputs, &dir.path().join("out"), 1)
        .unwrap_err();
    insta::assert_snapshot!(err.message.replace(&dir.path().display().to_string(), "<dir>"), @r#"<dir>/docs/documents.jsonl:2: not a document line: missing field `text` at line 1 column 10; expected `{"text": "..."}` (the documents artifact of a source node); re-run the source node"#);
}

#[test]
fn a_token_outside_the_vocabulary_is_an_error() {
    let (tok, meta) = sample_bpe();
    // Claim a vocabulary smaller than the tokenizer's: its ids fall outside.
    let small = TokenizerMeta { vocab_size: 5, ..meta.clone() };
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    write_documents(&docs, "fin_Latn", &["hei".into()]);
    let source = SourceInfo::read(&docs).unwrap();
    let origin = docs.join("documents.jsonl");
    let input = EncodeInput { tokenizer: tok, meta: &small, source: &source, drop: &[], origin: &origin };
    let reader = aurora_tokens::documents::DocumentReader::open(&docs).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let err = encode_documents(&input, reader, &out, |_| {}).unwrap_err();
    let msg = err.message.replace(&dir.path().display().to_string(), "<dir>");
    assert!(msg.starts_with("<dir>/docs/documents.jsonl: document 0 produced token id "), "{msg}");
    assert!(msg.contains("outside the tokenizer's vocabulary of 5"), "{msg}");
}

// ---- GPT-2 on FLORES: the real thing ----

const LANGS: [&str; 5] = ["eng_Latn", "fin_Latn", "hin_Deva", "jpn_Jpan", "vie_Latn"];

fn gpt2() -> Option<(Tokenizer, TokenizerMeta, Vec<u8>)> {
    let path = gpt2_tokenizer_json()?;
    let bytes = std::fs::read(&path).unwrap();
    let tok = Tokenizer::from_bytes(&bytes).unwrap();
    let meta = describe(&tok, "<|endoftext|>", "gpt2").unwrap();
    Some((tok, meta, bytes))
}

#[test]
fn flores_in_five_languages_round_trips_exactly_through_gpt2_and_the_token_store() {
    let Some((tok, meta, json)) = gpt2() else { return };
    let data = shared_data().unwrap();
    assert_eq!(meta.dtype, DType::U16);
    let dir = tempfile::tempdir().unwrap();
    let tok_dir = tokenizer_artifact(&dir.path().join("tok"), &json, &meta);
    let mut total_bytes = 0usize;
    let mut elapsed = std::time::Duration::ZERO;
    for lang in LANGS {
        let lines: Vec<String> = std::fs::read_to_string(data.join(format!("flores200/{lang}.devtest")))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert!(lines.len() > 1000, "{lang}: {} lines", lines.len());
        let docs = dir.path().join(format!("docs-{lang}"));
        write_documents(&docs, lang, &lines);
        let out = dir.path().join(format!("store-{lang}"));
        let inputs = BTreeMap::from([("tokenizer".to_string(), tok_dir.clone()), ("documents".to_string(), docs)]);
        let start = std::time::Instant::now();
        exec("tokenizer.encode", json!({ "source": lang, "dedup": false }), &inputs, &out, 1).unwrap();
        elapsed += start.elapsed();
        total_bytes += lines.iter().map(|l| l.len()).sum::<usize>();
        let store = TokenStore::open(&out).unwrap();
        assert_eq!(store.info.lang, lang);
        assert_eq!(store.info.documents, lines.len() as u64);
        assert_eq!(store.info.bytes, Some(lines.iter().map(|l| l.len() as u64).sum()));
        for (i, line) in lines.iter().enumerate() {
            let ids = store.dataset.document(i as u64).to_vec();
            assert_eq!(*ids.last().unwrap(), 50256, "{lang} line {i}: no EOD");
            assert_eq!(&tok.decode(&ids[..ids.len() - 1], false).unwrap(), line, "{lang} line {}", i + 1);
        }
    }
    eprintln!(
        "FLORES devtest x5 ({total_bytes} bytes) through GPT-2 into token stores: {:.2} MB/s (debug or release as built)",
        total_bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
}

#[test]
fn the_same_input_gives_byte_identical_token_stores() {
    let Some((_, meta, json)) = gpt2() else { return };
    let data = shared_data().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tok_dir = tokenizer_artifact(&dir.path().join("tok"), &json, &meta);
    let lines: Vec<String> =
        std::fs::read_to_string(data.join("flores200/jpn_Jpan.devtest")).unwrap().lines().map(str::to_string).collect();
    let docs = dir.path().join("docs");
    write_documents(&docs, "jpn_Jpan", &lines);
    let inputs = BTreeMap::from([("tokenizer".to_string(), tok_dir), ("documents".to_string(), docs)]);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    exec("tokenizer.encode", json!({ "source": "jpn", "dedup": false }), &inputs, &a, 1).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| exec("tokenizer.encode", json!({ "source": "jpn", "dedup": false }), &inputs, &b, 1)).unwrap();
    assert_eq!(dir_bytes(&a), dir_bytes(&b));
}

// ---- source.megatron ----

fn megatron_pair(dir: &Path, docs: &[Vec<u32>]) -> PathBuf {
    let prefix = dir.join("data");
    let mut w = IndexedWriter::create(&prefix, DType::U16).unwrap();
    for d in docs {
        w.add_document(d).unwrap();
    }
    w.finish().unwrap();
    prefix
}

fn megatron_inputs(prefix: &Path) -> BTreeMap<String, PathBuf> {
    let (idx, bin, _) = aurora_tokens::megatron::paths(prefix);
    BTreeMap::from([("idx".to_string(), idx), ("bin".to_string(), bin)])
}

#[test]
fn source_megatron_publishes_a_validated_token_store() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = megatron_pair(dir.path(), &[vec![5, 6, 0], vec![7, 0]]);
    let out = dir.path().join("out");
    let config = json!({ "lang": "fin_Latn", "programming_language": null, "vocab_size": 10, "eod_id": 0 });
    let outcome = exec("source.megatron", config, &megatron_inputs(&prefix), &out, 1).unwrap();
    assert_eq!(outcome.metrics["tokens"], json!(5));
    let store = TokenStore::open(&out).unwrap();
    assert_eq!(store.info.documents, 2);
    assert_eq!(store.info.bytes, None);
    assert_eq!(store.info.eod_id, Some(0));
    assert_eq!(store.dataset.document(1).to_vec(), vec![7, 0]);
    assert!(store.bytes_per_document().unwrap().is_none());
}

#[test]
fn source_megatron_rejects_tokens_beyond_its_vocabulary_and_malformed_files() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = megatron_pair(dir.path(), &[vec![5, 6, 0], vec![7, 12]]);
    let config = json!({ "lang": "fin_Latn", "programming_language": null, "vocab_size": 10, "eod_id": null });
    let err =
        exec("source.megatron", config.clone(), &megatron_inputs(&prefix), &dir.path().join("o1"), 1).unwrap_err();
    insta::assert_snapshot!(err.message.replace(&dir.path().display().to_string(), "<dir>"), @"<dir>/data.bin: token 4 (byte 8) is 12, not below `vocab_size` = 10; the dataset was made with another tokenizer, or `vocab_size` is wrong");
    let (idx, _, _) = aurora_tokens::megatron::paths(&prefix);
    let mut bytes = std::fs::read(&idx).unwrap();
    bytes[..8].copy_from_slice(b"TNTIDX\x00\x00");
    std::fs::write(&idx, bytes).unwrap();
    let err = exec("source.megatron", config, &megatron_inputs(&prefix), &dir.path().join("o2"), 1).unwrap_err();
    assert!(err.message.contains("legacy index format"), "{}", err.message);
}

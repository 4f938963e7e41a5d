//! The Megatron indexed dataset: exact bytes, round trips, and every rejected malformation.

use std::path::Path;

use aurora_tokens::megatron::{
    DType, IndexedDataset, IndexedWriter, MegatronError, paths, read_bytes_sidecar, write_bytes_sidecar,
};
use proptest::prelude::*;

fn write(prefix: &Path, dtype: DType, docs: &[Vec<u32>]) {
    let mut w = IndexedWriter::create(prefix, dtype).unwrap();
    for d in docs {
        w.add_document(d).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn idx_and_bin_bytes_are_exactly_megatrons_layout() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("x");
    // Three documents; the second made of two sequences, the third empty of sequences.
    let mut w = IndexedWriter::create(&prefix, DType::U16).unwrap();
    w.add_sequence(&[1, 2, 3]).unwrap();
    w.end_document().unwrap();
    w.add_sequence(&[65535]).unwrap();
    w.add_sequence(&[7, 8]).unwrap();
    w.end_document().unwrap();
    w.end_document().unwrap();
    let summary = w.finish().unwrap();
    assert_eq!((summary.sequences, summary.documents, summary.tokens), (3, 3, 6));

    let mut idx: Vec<u8> = Vec::new();
    idx.extend_from_slice(b"MMIDIDX\x00\x00");
    idx.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // version 1
    idx.push(8); // uint16
    idx.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]); // N
    idx.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0]); // M = documents + 1
    for len in [3i32, 1, 2] {
        idx.extend_from_slice(&len.to_le_bytes());
    }
    for ptr in [0i64, 6, 8] {
        idx.extend_from_slice(&ptr.to_le_bytes());
    }
    for d in [0i64, 1, 3, 3] {
        idx.extend_from_slice(&d.to_le_bytes());
    }
    let (idx_path, bin_path, _) = paths(&prefix);
    assert_eq!(std::fs::read(&idx_path).unwrap(), idx);
    assert_eq!(std::fs::read(&bin_path).unwrap(), vec![1, 0, 2, 0, 3, 0, 0xff, 0xff, 7, 0, 8, 0]);

    let ds = IndexedDataset::open(&prefix).unwrap();
    assert_eq!(ds.documents(), 3);
    assert_eq!(ds.document(0).to_vec(), vec![1, 2, 3]);
    assert_eq!(ds.document(1).to_vec(), vec![65535, 7, 8]);
    assert!(ds.document(2).is_empty());
}

#[test]
fn int32_layout_uses_code_4_and_4_byte_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("x");
    write(&prefix, DType::I32, &[vec![70_000, 1]]);
    let (idx_path, bin_path, _) = paths(&prefix);
    let idx = std::fs::read(idx_path).unwrap();
    assert_eq!(idx[17], 4);
    assert_eq!(idx.len(), 34 + 12 + 16);
    let mut bin = 70_000i32.to_le_bytes().to_vec();
    bin.extend_from_slice(&1i32.to_le_bytes());
    assert_eq!(std::fs::read(bin_path).unwrap(), bin);
    assert_eq!(IndexedDataset::open(&prefix).unwrap().document(0).to_vec(), vec![70_000, 1]);
}

#[test]
fn dtype_follows_megatrons_vocab_threshold() {
    assert_eq!(DType::for_vocab(50_257).unwrap(), DType::U16);
    assert_eq!(DType::for_vocab(65_499).unwrap(), DType::U16);
    assert_eq!(DType::for_vocab(65_500).unwrap(), DType::I32);
    assert_eq!(DType::for_vocab(256_000).unwrap(), DType::I32);
    let err = DType::for_vocab(1 << 40).unwrap_err();
    insta::assert_snapshot!(err.to_string(), @"a vocabulary of 1099511627776 entries does not fit int32 token ids; use a smaller vocabulary");
}

#[test]
fn writer_rejects_tokens_outside_the_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = IndexedWriter::create(&dir.path().join("x"), DType::U16).unwrap();
    let err = w.add_document(&[1, 65_536]).unwrap_err();
    assert!(matches!(err, MegatronError::TokenOutOfRange { token: 65_536, dtype: DType::U16 }));
    insta::assert_snapshot!(err.to_string(), @"token id 65536 does not fit the uint16 dtype (at most 65535); the tokenizer's vocabulary is too large for this dtype, use int32 (vocabularies of 65,500 or more are stored as int32)");
}

#[test]
fn empty_dataset_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("x");
    write(&prefix, DType::U16, &[]);
    let ds = IndexedDataset::open(&prefix).unwrap();
    assert_eq!((ds.sequences(), ds.documents(), ds.total_tokens()), (0, 0, 0));
}

#[test]
fn bytes_sidecar_round_trips_and_checks_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.bytes");
    write_bytes_sidecar(&path, &[5, 0, 1 << 40]).unwrap();
    assert_eq!(std::fs::read(&path).unwrap().len(), 24);
    assert_eq!(read_bytes_sidecar(&path, 3).unwrap(), vec![5, 0, 1 << 40]);
    let err = read_bytes_sidecar(&path, 4).unwrap_err().to_string().replace(&dir.path().display().to_string(), "<dir>");
    insta::assert_snapshot!(err, @"<dir>/x.bytes: the file is 24 bytes, expected 32 (one u64 per document for 4 documents); the sidecar does not belong to this index, re-create it");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn documents_round_trip(docs in prop::collection::vec(prop::collection::vec(0u32..50_257, 0..40), 0..30), wide in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("x");
        let dtype = if wide { DType::I32 } else { DType::U16 };
        write(&prefix, dtype, &docs);
        let ds = IndexedDataset::open(&prefix).unwrap();
        prop_assert_eq!(ds.dtype(), dtype);
        prop_assert_eq!(ds.documents(), docs.len() as u64);
        prop_assert_eq!(ds.total_tokens(), docs.iter().map(|d| d.len() as u64).sum::<u64>());
        for (i, d) in docs.iter().enumerate() {
            prop_assert_eq!(&ds.document(i as u64).to_vec(), d);
        }
    }
}

// ---- malformed files ----

/// A valid two-document dataset, returned as (idx bytes, bin bytes).
fn valid() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("x");
    write(&prefix, DType::U16, &[vec![1, 2, 3], vec![4, 5]]);
    let (i, b, _) = paths(&prefix);
    (std::fs::read(i).unwrap(), std::fs::read(b).unwrap())
}

fn open_bytes(idx: &[u8], bin: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("data");
    let (i, b, _) = paths(&prefix);
    std::fs::write(&i, idx).unwrap();
    std::fs::write(&b, bin).unwrap();
    match IndexedDataset::open(&prefix) {
        Ok(_) => "opened".to_string(),
        Err(e) => e.to_string().replace(&dir.path().display().to_string(), "<dir>"),
    }
}

#[test]
fn valid_bytes_open() {
    let (idx, bin) = valid();
    assert_eq!(open_bytes(&idx, &bin), "opened");
}

#[test]
fn rejects_legacy_tntidx() {
    let (_, bin) = valid();
    let mut idx = b"TNTIDX\x00\x00".to_vec();
    idx.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    insta::assert_snapshot!(open_bytes(&idx, &bin));
}

#[test]
fn rejects_foreign_magic() {
    let (_, bin) = valid();
    insta::assert_snapshot!(open_bytes(b"{\"not\": \"an index\"}", &bin));
    insta::assert_snapshot!("empty_idx", open_bytes(b"", &bin));
}

#[test]
fn rejects_unknown_version() {
    let (mut idx, bin) = valid();
    idx[9] = 2;
    insta::assert_snapshot!(open_bytes(&idx, &bin));
}

#[test]
fn rejects_float_and_unknown_dtypes() {
    let (mut idx, bin) = valid();
    idx[17] = 7;
    insta::assert_snapshot!("float32", open_bytes(&idx, &bin));
    idx[17] = 6;
    insta::assert_snapshot!("float64", open_bytes(&idx, &bin));
    idx[17] = 5;
    insta::assert_snapshot!("int64", open_bytes(&idx, &bin));
    idx[17] = 42;
    insta::assert_snapshot!("unknown", open_bytes(&idx, &bin));
}

#[test]
fn rejects_truncated_files() {
    let (idx, bin) = valid();
    insta::assert_snapshot!("header", open_bytes(&idx[..20], &bin));
    insta::assert_snapshot!("arrays", open_bytes(&idx[..idx.len() - 3], &bin));
    let mut longer = idx.clone();
    longer.extend_from_slice(&[0; 8]);
    insta::assert_snapshot!("trailing", open_bytes(&longer, &bin));
    insta::assert_snapshot!("bin", open_bytes(&idx, &bin[..bin.len() - 2]));
    insta::assert_snapshot!("bin_odd", open_bytes(&idx, &bin[..bin.len() - 1]));
}

#[test]
fn rejects_inconsistent_lengths_and_pointers() {
    let (idx, bin) = valid();
    // N = 2: lengths at 34, 38; pointers at 42, 50; doc index at 58, 66, 74.
    let mut bad = idx.clone();
    bad[38..42].copy_from_slice(&(-1i32).to_le_bytes());
    insta::assert_snapshot!("negative_length", open_bytes(&bad, &bin));
    let mut bad = idx.clone();
    bad[50..58].copy_from_slice(&4i64.to_le_bytes());
    insta::assert_snapshot!("pointer", open_bytes(&bad, &bin));
    let mut bad = idx.clone();
    bad[34..38].copy_from_slice(&4i32.to_le_bytes());
    insta::assert_snapshot!("length_vs_next_pointer", open_bytes(&bad, &bin));
}

#[test]
fn rejects_bad_document_index() {
    let (idx, bin) = valid();
    let mut bad = idx.clone();
    bad[58..66].copy_from_slice(&1i64.to_le_bytes());
    insta::assert_snapshot!("first_not_zero", open_bytes(&bad, &bin));
    let mut bad = idx.clone();
    bad[66..74].copy_from_slice(&3i64.to_le_bytes());
    insta::assert_snapshot!("beyond_n", open_bytes(&bad, &bin));
    // 0, 2, 1: decreasing.
    let mut bad = idx.clone();
    bad[66..74].copy_from_slice(&2i64.to_le_bytes());
    bad[74..82].copy_from_slice(&1i64.to_le_bytes());
    insta::assert_snapshot!("decreasing", open_bytes(&bad, &bin));
    let mut bad = idx.clone();
    bad[74..82].copy_from_slice(&1i64.to_le_bytes());
    insta::assert_snapshot!("last_not_n", open_bytes(&bad, &bin));
}

//! `source.parquet` on files written by the `parquet` crate itself.
#![cfg(feature = "parquet")]

mod common;

use std::sync::Arc;

use aurora_corpus as _;
use common::{Project, run};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// Writes rows `(id, text)` in row groups of `group` rows; `None` is a null text.
fn write_parquet(path: &std::path::Path, rows: &[Option<&str>], group: usize, compression: Compression) {
    let schema =
        Arc::new(parse_message_type("message doc { required int64 id; optional binary text (UTF8); }").unwrap());
    let props = Arc::new(WriterProperties::builder().set_compression(compression).build());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    for (g, chunk) in rows.chunks(group).enumerate() {
        let mut rg = writer.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let ids: Vec<i64> = (0..chunk.len() as i64).map(|i| (g * group) as i64 + i).collect();
        col.typed::<Int64Type>().write_batch(&ids, None, None).unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = chunk.iter().flatten().map(|s| ByteArray::from(*s)).collect();
        let defs: Vec<i16> = chunk.iter().map(|v| i16::from(v.is_some())).collect();
        col.typed::<ByteArrayType>().write_batch(&values, Some(&defs), None).unwrap();
        col.close().unwrap();
        assert!(rg.next_column().unwrap().is_none());
        rg.close().unwrap();
    }
    writer.close().unwrap();
}

fn manifest(files: &str, extra: &str) -> String {
    format!("[sources.pq]\nplugin = \"source.parquet\"\nfiles = [{files}]\nlang = \"eng_Latn\"\n{extra}")
}

#[test]
fn reads_snappy_and_zstd_shards_across_row_groups() {
    let p = Project::new();
    let texts: Vec<String> = (0..2500).map(|i| format!("row {i}: ääkköset ok")).collect();
    let rows: Vec<Option<&str>> = texts.iter().map(|s| Some(s.as_str())).collect();
    std::fs::create_dir_all(p.path().join("hf")).unwrap();
    write_parquet(&p.path().join("hf/train-00000.parquet"), &rows[..1500], 700, Compression::SNAPPY);
    write_parquet(&p.path().join("hf/train-00001.parquet"), &rows[1500..], 300, Compression::ZSTD(Default::default()));
    let out = run(&p.plan(&manifest("\"file:hf/*.parquet\"", ""))).unwrap();
    assert_eq!(out.texts("sources/pq", "documents.jsonl"), texts);
    assert_eq!(out.json("sources/pq", "source.json")["documents"], 2500);
}

#[test]
fn null_values_fail_or_are_skipped() {
    let p = Project::new();
    write_parquet(&p.path().join("d.parquet"), &[Some("one"), None, Some("three")], 2, Compression::UNCOMPRESSED);
    let err = run(&p.plan(&manifest("\"file:d.parquet\"", ""))).err().expect("a null fails");
    insta::assert_snapshot!("parquet_null", p.redact(&err.message));
    let out = run(&p.plan(&manifest("\"file:d.parquet\"", "on_error = \"skip\"\n"))).unwrap();
    assert_eq!(out.texts("sources/pq", "documents.jsonl"), ["one", "three"]);
    assert_eq!(out.json("sources/pq", "source.json")["skipped_lines"], 1);
}

#[test]
fn wrong_column_and_non_parquet_files_are_errors() {
    let p = Project::new();
    write_parquet(&p.path().join("d.parquet"), &[Some("one")], 1, Compression::SNAPPY);
    let err = run(&p.plan(&manifest("\"file:d.parquet\"", "text_column = \"content\"\n"))).err().unwrap();
    insta::assert_snapshot!("parquet_missing_column", p.redact(&err.message));
    let err = run(&p.plan(&manifest("\"file:d.parquet\"", "text_column = \"id\"\n"))).err().unwrap();
    insta::assert_snapshot!("parquet_not_string", p.redact(&err.message));
    p.write("bad.parquet", "{\"text\": \"this is JSON\"}\n");
    let err = run(&p.plan(&manifest("\"file:bad.parquet\"", ""))).err().unwrap();
    assert!(err.message.contains("bad.parquet: not a readable Parquet file"), "{}", err.message);
}

/// `aurora plan`'s bound of a Parquet source's text comes from the row groups' metadata of its
/// text column: at least the text's bytes, and not the other columns'.
#[test]
fn the_text_bound_comes_from_the_text_columns_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<String> = (0..500).map(|i| format!("document {i} with some words in it")).collect();
    let texts: Vec<Option<&str>> = rows.iter().map(|r| Some(r.as_str())).collect();
    let path = dir.path().join("a.parquet");
    write_parquet(&path, &texts, 100, Compression::SNAPPY);
    let text: u64 = rows.iter().map(|r| r.len() as u64).sum();
    let bound = aurora_corpus::size::text_bytes(std::slice::from_ref(&path), Some("text")).unwrap();
    assert!(bound >= text, "{bound} < {text}");
    assert!(bound < 2 * text, "{bound}: the bound is the text column's, near its size");
    assert_eq!(aurora_corpus::size::text_bytes(&[path], Some("body")), None, "no such column: unknown");
}

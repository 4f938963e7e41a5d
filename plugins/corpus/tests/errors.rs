//! Every bad input gets a located, actionable error (snapshots of the messages).

mod common;

use std::collections::BTreeMap;

use aurora_core::plugin::InputSource;
use aurora_corpus as _;
use common::{Project, run};

/// Plans `body` and runs it, expecting an execution error; returns the redacted message.
fn exec_error(p: &Project, body: &str) -> String {
    let plan = p.plan(body);
    match run(&plan) {
        Err(e) => p.redact(&e.message),
        Ok(_) => panic!("expected an execution error for\n{body}"),
    }
}

/// Expects planning to fail; returns the redacted diagnostics.
fn plan_error(p: &Project, body: &str) -> String {
    match p.manifest(body) {
        Err(e) => e,
        Ok(_) => panic!("expected a planning error for\n{body}"),
    }
}

fn jsonl(file: &str, extra: &str) -> String {
    format!("[sources.web]\nplugin = \"source.jsonl\"\nfiles = [\"file:{file}\"]\nlang = \"eng_Latn\"\n{extra}")
}

#[test]
fn malformed_json_line() {
    let p = Project::new();
    p.write("d.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
    insta::assert_snapshot!(exec_error(&p, &jsonl("d.jsonl", "")), @r#"[PROJECT]/d.jsonl:2: malformed JSON: EOF while parsing a string at line 1 column 23; every line must be one JSON object such as {"text": "..."} (fix the line, or set `on_error = "skip"` to skip malformed lines)"#);
}

#[test]
fn invalid_utf8_names_file_and_line() {
    let p = Project::new();
    p.write("d.jsonl", b"{\"text\": \"ok\"}\n\n{\"text\": \"caf\xe9\"}\n");
    insta::assert_snapshot!(exec_error(&p, &jsonl("d.jsonl", "")), @r#"[PROJECT]/d.jsonl:3: invalid UTF-8 (byte 14 of the line); re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or set `on_error = "skip"` to skip such lines"#);
    p.write("t.txt", b"fine\nsecond \xff line\n");
    let text = "[sources.t]\nplugin = \"source.text\"\nfiles = [\"file:t.txt\"]\nlang = \"eng_Latn\"\n";
    insta::assert_snapshot!(exec_error(&p, text), @r#"[PROJECT]/t.txt:2: invalid UTF-8 (byte 8 of the line); re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or set `on_error = "skip"` to skip such lines"#);
}

#[test]
fn missing_and_non_string_text_field() {
    let p = Project::new();
    p.write("d.jsonl", "{\"id\": 1, \"title\": \"t\", \"content\": \"body\"}\n");
    insta::assert_snapshot!(exec_error(&p, &jsonl("d.jsonl", "")), @r#"[PROJECT]/d.jsonl:1: the record has no field `text`; its keys are: `content`, `id`, `title`. Set `text_field` to the key holding the text (or `on_error = "skip"` to skip such records)"#);
    p.write("e.jsonl", "{\"text\": [\"a\", \"b\"]}\n");
    insta::assert_snapshot!(exec_error(&p, &jsonl("e.jsonl", "")), @r#"[PROJECT]/e.jsonl:1: field `text` is an array, not a string; point `text_field` at a string field (or set `on_error = "skip"`)"#);
    p.write("f.jsonl", "[\"text\"]\n");
    insta::assert_snapshot!(exec_error(&p, &jsonl("f.jsonl", "")), @r#"[PROJECT]/f.jsonl:1: expected a JSON object, found an array; every record must be an object such as {"text": "..."} (or set `on_error = "skip"`)"#);
}

#[test]
fn empty_after_cleaning_names_the_filter() {
    let p = Project::new();
    p.write(
        "d.jsonl",
        "{\"text\": \"short\"}\n{\"text\": \"1234567890 12345\"}\n{\"text\": \"a longer line of text\"}\n",
    );
    let body = jsonl(
        "d.jsonl",
        "filters = [{ min_chars = 6 }, { max_digit_ratio = 0.5 }, { max_chars = 10 }, { max_symbol_ratio = 0.1 }]\n",
    );
    insta::assert_snapshot!(exec_error(&p, &body), @"sources/web: the source is empty after cleaning: filter 2 `max_chars` removed the last 1 documents (3 read; min_chars removed 1, max_digit_ratio removed 1, max_chars removed 1, max_symbol_ratio removed 0); relax the filter or check the data");
}

#[test]
fn nothing_read_and_everything_held_out() {
    let p = Project::new();
    p.write("empty.jsonl", "\n\n");
    insta::assert_snapshot!(exec_error(&p, &jsonl("empty.jsonl", "")), @"sources/web: no documents were read from its 1 input file(s); check that the files are not empty and that the format settings (`text_field`, `split`, ...) match the data");
    p.write("one.jsonl", "{\"text\": \"only one\"}\n");
    let body = jsonl("one.jsonl", "heldout = { fraction = 0.9999999, salt = \"x\" }\n");
    insta::assert_snapshot!(exec_error(&p, &body), @"sources/web: every one of the 1 documents left after cleaning was held out; lower `heldout.fraction` or add data");
}

/// A pattern that matches only directories is a located error (a directory is not a document).
#[test]
fn a_pattern_of_directories_is_located() {
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("shards/a")).unwrap();
    insta::assert_snapshot!(plan_error(&p, &jsonl("shards/*", "")));
}

/// A glob that matches nothing plans (the data may live on a cluster's disk): the pattern itself
/// is the source's one input, which `aurora plan` lists as missing and `aurora run` refuses
/// (tests/inputs_lock.rs).
#[test]
fn glob_without_matches_stands_for_itself() {
    let p = Project::new();
    let plan = p.plan(&jsonl("shards/*.jsonl.gz", ""));
    let inputs: Vec<&InputSource> = plan.nodes[0].inputs.values().map(|i| &i.source).collect();
    assert!(matches!(inputs.as_slice(), [InputSource::Path(f)] if f == "file:shards/*.jsonl.gz"), "{inputs:?}");
}

#[test]
fn langid_on_code_and_unknown_languages() {
    let p = Project::new();
    p.write("x.py", "print(1)\n");
    let body = "[sources.py]\nplugin = \"source.text\"\nfiles = [\"file:x.py\"]\nlang = \"code\"\nprogramming_language = \"python\"\nfilters = [{ langid = { min_confidence = 0.5 } }]\n";
    insta::assert_snapshot!("langid_on_code", plan_error(&p, body));
    p.write("sw.txt", "Habari ya dunia\n");
    let body = "[sources.sw]\nplugin = \"source.text\"\nfiles = [\"file:sw.txt\"]\nlang = \"swh_Latn\"\nfilters = [{ langid = {} }]\n";
    insta::assert_snapshot!("langid_unsupported", plan_error(&p, body));
}

#[test]
fn settings_that_contradict_each_other() {
    let p = Project::new();
    p.write("d.jsonl", "{\"text\": \"x\"}\n");
    insta::assert_snapshot!(
        "programming_language_without_code",
        plan_error(&p, &jsonl("d.jsonl", "programming_language = \"python\"\n"))
    );
    insta::assert_snapshot!(
        "heldout_fraction_one",
        plan_error(&p, &jsonl("d.jsonl", "heldout = { fraction = 1.0, salt = \"s\" }\n"))
    );
    insta::assert_snapshot!("unknown_filter", plan_error(&p, &jsonl("d.jsonl", "filters = [{ min_char = 3 }]\n")));
    insta::assert_snapshot!(
        "two_keys_in_one_filter",
        plan_error(&p, &jsonl("d.jsonl", "filters = [{ min_chars = 3, max_chars = 9 }]\n"))
    );
    insta::assert_snapshot!("dedup_as_entry", plan_error(&p, "[dedup.mine]\nplugin = \"dedup.exact\"\n"));
}

#[test]
fn instruction_errors() {
    let p = Project::new();
    p.write("i.json", "[{\"instruction\": \"a\", \"output\": \"b\"}, {\"instruction\": \"no output\"}]");
    let body = |file: &str, extra: &str| {
        format!(
            "[sources.i]\nplugin = \"source.instructions\"\nfiles = [\"file:{file}\"]\nlang = \"eng_Latn\"\n{extra}"
        )
    };
    insta::assert_snapshot!(exec_error(&p, &body("i.json", "")), @r#"[PROJECT]/i.json: record 1 (0-based): the record has no field `output`; its keys are: `instruction`. Set `fields` to the key holding the text (or `on_error = "skip"` to skip such records)"#);
    p.write("broken.json", "[{\"instruction\": \"a\",\n \"output\": }]");
    insta::assert_snapshot!(exec_error(&p, &body("broken.json", "")), @r#"[PROJECT]/broken.json: line 2 column 12: not a valid JSON array of instruction records: expected value at line 2 column 12; fix the file (a JSON array `[{"instruction": ..., "input": ..., "output": ...}, ...]`, or one such object per line)"#);
    insta::assert_snapshot!(
        "template_without_output",
        plan_error(&p, &body("i.json", "template = \"Q: {instruction}\"\n"))
    );
}

#[test]
fn dedup_rejects_a_damaged_hashes_file() {
    let p = Project::new();
    let dir = p.path().join("src-artifact");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hashes.bin"), [0u8; 20]).unwrap();
    std::fs::write(dir.join("heldout_hashes.bin"), []).unwrap();
    let inputs = BTreeMap::from([("web".to_string(), dir)]);
    let err = common::execute("dedup.exact", "dedup/exact", &serde_json::json!({}), &inputs, &p.path().join("out"))
        .unwrap_err();
    insta::assert_snapshot!(p.redact(&err.message), @"[PROJECT]/src-artifact/hashes.bin: 20 bytes is not a whole number of 16-byte hashes; the artifact of source `web` is damaged, run `aurora verify --store`");
}

#[test]
fn deduplicated_sources_need_distinct_names() {
    let p = Project::new();
    p.write("d.jsonl", "{\"text\": \"x\"}\n");
    let body = "[sources.web]\nplugin = \"source.jsonl\"\nfiles = [\"file:d.jsonl\"]\nlang = \"eng_Latn\"\n\n\
                [extra.web]\nplugin = \"source.jsonl\"\nfiles = [\"file:d.jsonl\"]\nlang = \"eng_Latn\"\n";
    insta::assert_snapshot!("dedup_name_collision", plan_error(&p, body));
    // With dedup off on one of them, both plan.
    p.plan(&format!("{body}dedup = false\n"));
}

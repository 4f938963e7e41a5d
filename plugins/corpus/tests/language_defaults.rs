//! Per-language cleaning defaults from language packs: precedence (explicit `filters` win, `[]`
//! means none, a pack's defaults apply only without the key), visibility in the keyed node config,
//! and a pack filter that cannot run.
//!
//! The packs are written into each test project, as a user would write theirs.

mod common;

use aurora_corpus as _;
use common::{Project, run};
use serde_json::{Value, json};

const SHORT: &str = "too short";
const DIGITS: &str = "0123456789 0123456789 x";
const GOOD: &str = "a perfectly ordinary sentence";

/// A project with the three documents above and a pack for `code` with `filters` (TOML).
fn project(code: &str, filters: &str) -> Project {
    let p = Project::new();
    let lines: String = [SHORT, DIGITS, GOOD].iter().map(|t| format!("{}\n", json!({ "text": t }))).collect();
    p.write("d.jsonl", lines);
    p.write(
        "pack/language.toml",
        format!("code = \"{code}\"\nname = \"Test\"\nlicense = \"CC0-1.0\"\n\n[cleaning]\nfilters = {filters}\n"),
    );
    p
}

fn entry(lang: &str, filters: Option<&str>) -> String {
    let filters = filters.map(|f| format!("filters = {f}\n")).unwrap_or_default();
    format!(
        "[languages.tst]\nplugin = \"language.pack\"\npath = \"file:pack\"\n\n\
         [sources.web]\nplugin = \"source.jsonl\"\nfiles = [\"file:d.jsonl\"]\nlang = \"{lang}\"\ndedup = false\n{filters}"
    )
}

/// Expects planning to fail; returns the redacted diagnostics.
fn plan_error(p: &Project, body: &str) -> String {
    match p.manifest(body) {
        Err(e) => e,
        Ok(_) => panic!("expected a planning error for\n{body}"),
    }
}

fn keyed_filters(p: &Project, body: &str) -> Value {
    p.plan(body).node("sources/web").unwrap().config["filters"].clone()
}

const TEST_FILTERS: &str = "[{ min_chars = 20 }, { max_digit_ratio = 0.3 }]";

#[test]
fn without_a_filters_key_the_packs_defaults_apply_and_enter_the_key() {
    let p = project("tst_Latn", TEST_FILTERS);
    let plan = p.plan(&entry("tst_Latn", None));
    let node = plan.node("sources/web").unwrap();
    assert_eq!(node.config["filters"], json!([{ "min_chars": 20 }, { "max_digit_ratio": 0.3 }]));
    // The same filters written out give the same node config, hence the same key: defaults are
    // keyed exactly like explicit filters, so changing a pack's defaults reruns the source.
    let explicit = p.plan(&entry("tst_Latn", Some(TEST_FILTERS)));
    assert_eq!(explicit.node("sources/web").unwrap().config, node.config);

    let out = run(&plan).unwrap();
    assert_eq!(out.texts("sources/web", "documents.jsonl"), [GOOD]);
    assert_eq!(
        out.json("sources/web", "source.json")["filters"],
        json!([{ "name": "min_chars", "removed": 1 }, { "name": "max_digit_ratio", "removed": 1 }])
    );
}

#[test]
fn explicit_filters_always_win_and_an_empty_list_means_none() {
    let p = project("tst_Latn", TEST_FILTERS);
    assert_eq!(keyed_filters(&p, &entry("tst_Latn", Some("[{ max_chars = 10 }]"))), json!([{ "max_chars": 10 }]));
    let plan = p.plan(&entry("tst_Latn", Some("[]")));
    assert_eq!(plan.node("sources/web").unwrap().config["filters"], json!([]));
    assert_eq!(run(&plan).unwrap().texts("sources/web", "documents.jsonl"), [SHORT, DIGITS, GOOD]);
}

#[test]
fn a_language_without_a_pack_gets_no_filters() {
    let p = project("tst_Latn", TEST_FILTERS);
    assert_eq!(keyed_filters(&p, &entry("eng_Latn", None)), json!([]));
}

#[test]
fn a_pack_filter_that_cannot_run_names_the_pack() {
    let p = project("bad_Latn", "[{ langid = { min_confidence = 0.5 } }]");
    let err = plan_error(&p, &entry("bad_Latn", None));
    insta::assert_snapshot!(err, @r#"
    error: default filter 0 (`langid`, from the language pack `languages.tst`) of `sources.web`: `bad_Latn` is not a language the `langid` filter (whatlang) can identify
      --> [PROJECT]/aurora.toml:12:8
       |
    12 | lang = "bad_Latn"
       |        ^^^^^^^^^^
       = at: /sources/web/lang
       = help: give this entry an explicit `filters` list without it, or fix the cleaning filters of the `bad_Latn` pack
    "#);
    // An explicit list needs no defaults, so it plans.
    assert_eq!(keyed_filters(&p, &entry("bad_Latn", Some("[]"))), json!([]));
}

#[test]
fn a_pack_filter_that_is_not_a_filter_is_located_in_the_pack() {
    let p = project("tst_Latn", "[{ min_chars = 20 }, { min_words = 3 }]");
    let err = plan_error(&p, &entry("tst_Latn", None));
    assert!(err.contains("cleaning filter 1 of the `tst_Latn` pack (`languages.tst`)"), "{err}");
    assert!(err.contains("pack/language.toml:6:"), "located in the pack's file: {err}");
    assert!(err.contains("unknown variant `min_words`"), "{err}");
}

//! Per-language cleaning defaults: precedence (explicit `filters` win, `[]` means none, defaults
//! apply only without the key), visibility in the keyed node config, and registration errors.
//!
//! The registrations below stand in for language crates; they live in this test binary only.

mod common;

use aurora_corpus as _;
use aurora_corpus::config::{Filter, LangId};
use aurora_corpus::defaults::{DuplicateDefaults, FilterOrigin, LanguageDefaults, registered, resolve_filters};
use common::{Project, run};
use serde_json::{Value, json};

inventory::submit! {
    LanguageDefaults { lang: "tst_Latn", provider: "test-lang", filters: &[Filter::MinChars(20), Filter::MaxDigitRatio(0.3)] }
}
inventory::submit! {
    LanguageDefaults { lang: "dup_Latn", provider: "lang-b", filters: &[Filter::MinChars(1)] }
}
inventory::submit! {
    LanguageDefaults { lang: "dup_Latn", provider: "lang-a", filters: &[Filter::MinChars(2)] }
}
inventory::submit! {
    LanguageDefaults {
        lang: "bad_Latn",
        provider: "lang-bad",
        filters: &[Filter::Langid(LangId { lang: None, min_confidence: 0.5 })],
    }
}

const SHORT: &str = "too short";
const DIGITS: &str = "0123456789 0123456789 x";
const GOOD: &str = "a perfectly ordinary sentence";

fn project() -> Project {
    let p = Project::new();
    let lines: String = [SHORT, DIGITS, GOOD].iter().map(|t| format!("{}\n", json!({ "text": t }))).collect();
    p.write("d.jsonl", lines);
    p
}

fn entry(lang: &str, filters: Option<&str>) -> String {
    let filters = filters.map(|f| format!("filters = {f}\n")).unwrap_or_default();
    format!(
        "[sources.web]\nplugin = \"source.jsonl\"\nfiles = [\"file:d.jsonl\"]\nlang = \"{lang}\"\ndedup = false\n{filters}"
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

#[test]
fn without_a_filters_key_the_language_defaults_apply_and_enter_the_key() {
    let p = project();
    let plan = p.plan(&entry("tst_Latn", None));
    let node = plan.node("sources/web").unwrap();
    assert_eq!(node.config["filters"], json!([{ "min_chars": 20 }, { "max_digit_ratio": 0.3 }]));
    // The same filters written out give the same node config, hence the same key: defaults are
    // keyed exactly like explicit filters, so changing a language crate's defaults reruns the source.
    let explicit = p.plan(&entry("tst_Latn", Some("[{ min_chars = 20 }, { max_digit_ratio = 0.3 }]")));
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
    let p = project();
    assert_eq!(keyed_filters(&p, &entry("tst_Latn", Some("[{ max_chars = 10 }]"))), json!([{ "max_chars": 10 }]));
    let plan = p.plan(&entry("tst_Latn", Some("[]")));
    assert_eq!(plan.node("sources/web").unwrap().config["filters"], json!([]));
    assert_eq!(run(&plan).unwrap().texts("sources/web", "documents.jsonl"), [SHORT, DIGITS, GOOD]);
}

#[test]
fn a_language_without_registered_defaults_gets_no_filters() {
    let p = project();
    assert_eq!(keyed_filters(&p, &entry("eng_Latn", None)), json!([]));
}

#[test]
fn resolve_filters_reports_the_origin() {
    let explicit = [Filter::MaxChars(5)];
    assert_eq!(resolve_filters(Some(&explicit), "tst_Latn").unwrap(), (explicit.to_vec(), FilterOrigin::Explicit));
    assert_eq!(resolve_filters(Some(&[]), "tst_Latn").unwrap(), (vec![], FilterOrigin::Explicit));
    assert_eq!(
        resolve_filters(None, "tst_Latn").unwrap(),
        (vec![Filter::MinChars(20), Filter::MaxDigitRatio(0.3)], FilterOrigin::Language("test-lang"))
    );
    assert_eq!(resolve_filters(None, "eng_Latn").unwrap(), (vec![], FilterOrigin::None));
    assert_eq!(
        resolve_filters(None, "dup_Latn").unwrap_err(),
        DuplicateDefaults { lang: "dup_Latn".into(), providers: vec!["lang-a", "lang-b"] }
    );
    let langs: Vec<(&str, &str)> = registered().iter().map(|d| (d.lang, d.provider)).collect();
    assert_eq!(
        langs,
        [("bad_Latn", "lang-bad"), ("dup_Latn", "lang-a"), ("dup_Latn", "lang-b"), ("tst_Latn", "test-lang")]
    );
}

#[test]
fn two_crates_registering_one_language_is_a_located_planning_error() {
    let p = project();
    let err = plan_error(&p, &entry("dup_Latn", None));
    insta::assert_snapshot!(err, @r#"
    error: `sources.web`: cleaning defaults for `dup_Latn` are registered by more than one linked crate: lang-a, lang-b; link only one of them, or give the source an explicit `filters` list
     --> [PROJECT]/aurora.toml:8:8
      |
    8 | lang = "dup_Latn"
      |        ^^^^^^^^^^
      = at: /sources/web/lang
      = expected: one crate registering cleaning defaults per language
      = help: remove one of the crates from the binary's dependencies, or add `filters = [...]` to this entry
    "#);
    // An explicit list needs no defaults, so it plans.
    assert_eq!(keyed_filters(&p, &entry("dup_Latn", Some("[]"))), json!([]));
}

#[test]
fn a_default_filter_that_cannot_run_names_the_crate_that_registered_it() {
    let p = project();
    let err = plan_error(&p, &entry("bad_Latn", None));
    insta::assert_snapshot!(err, @r#"
    error: default filter 0 (`langid`, registered by `lang-bad`) of `sources.web`: `bad_Latn` is not a language the `langid` filter (whatlang) can identify
     --> [PROJECT]/aurora.toml:8:8
      |
    8 | lang = "bad_Latn"
      |        ^^^^^^^^^^
      = at: /sources/web/lang
      = help: give this entry an explicit `filters` list without it, or fix the defaults `lang-bad` registers for `bad_Latn`
    "#);
}

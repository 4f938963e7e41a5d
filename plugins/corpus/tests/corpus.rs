//! Source plugins executed through the `Plugin` trait, planned through aurora-core.

mod common;

use std::collections::BTreeSet;
use std::io::Write;

use aurora_corpus as _;
use aurora_corpus::text::{doc_hash, normalize};
use common::{Project, SAMPLE, run, shared};
use serde_json::{Value, json};

#[test]
fn registered_plugins_are_exactly_these() {
    let ids = aurora_core::plugin::registry().ids();
    // `language.pack` is aurora-core's own.
    let mut expected = vec!["dedup.exact", "language.pack", "source.instructions", "source.jsonl", "source.text"];
    if cfg!(feature = "parquet") {
        expected.push("source.parquet");
        expected.sort();
    }
    assert_eq!(ids, expected);
    // The per-plugin conformance checks (kind, version, schema) run over the binary's whole
    // registry in the root crate's tests/conformance.
}

#[test]
fn jsonl_schema_snapshot() {
    let p = aurora_core::plugin::registry().get("source.jsonl").unwrap();
    insta::assert_json_snapshot!("jsonl_schema", p.config_schema().as_value());
}

fn jsonl_line(text: &str) -> String {
    format!("{}\n", json!({ "id": 1, "body": text }))
}

#[test]
fn jsonl_reads_plain_gzip_and_zstd_shards_in_sorted_order() {
    let p = Project::new();
    p.write("data/a.jsonl", jsonl_line("first plain") + &jsonl_line("second plain"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all((jsonl_line("gz one") + "\n" + &jsonl_line("gz two")).as_bytes()).unwrap();
    p.write("data/shards/b-001.jsonl.gz", gz.finish().unwrap());
    let zst = zstd::encode_all(jsonl_line("zst one").as_bytes(), 3).unwrap();
    p.write("data/shards/b-000.jsonl.zst", zst);
    let plan = p.plan(
        r#"
[sources.web]
plugin = "source.jsonl"
files = ["file:data/a.jsonl", "file:data/shards/b-*"]
lang = "eng_Latn"
text_field = "body"
"#,
    );
    let node = plan.node("sources/web").unwrap();
    let files: Vec<String> = node
        .inputs
        .values()
        .map(|i| match &i.source {
            aurora_core::plugin::InputSource::Path(f) => f.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(files, ["file:data/a.jsonl", "file:data/shards/b-000.jsonl.zst", "file:data/shards/b-001.jsonl.gz"]);
    // Paths never enter the node config.
    assert!(!node.config.to_string().contains("data/"));
    assert!(plan.node("dedup/exact").is_some(), "dedup = true by default");

    let out = run(&plan).unwrap();
    assert_eq!(
        out.texts("sources/web", "documents.jsonl"),
        ["first plain", "second plain", "zst one", "gz one", "gz two"]
    );
    assert_eq!(out.read("sources/web", "heldout.jsonl"), "");
    let summary = out.json("sources/web", "source.json");
    assert_eq!(
        summary,
        json!({
            "lang": "eng_Latn", "programming_language": null, "documents": 5,
            "bytes": "first plainsecond plainzst onegz onegz two".len(),
            "heldout_documents": 0, "heldout_bytes": 0, "filters": [], "skipped_lines": 0
        })
    );
    // Key order of source.json is part of the contract.
    let keys: Vec<String> = out
        .read("sources/web", "source.json")
        .lines()
        .filter_map(|l| l.split('"').nth(1).map(String::from))
        .take(8)
        .collect();
    assert_eq!(
        keys,
        [
            "lang",
            "programming_language",
            "documents",
            "bytes",
            "heldout_documents",
            "heldout_bytes",
            "filters",
            "skipped_lines"
        ]
    );
    let hashes = out.bytes("sources/web", "hashes.bin");
    assert_eq!(hashes.len(), 5 * 16);
    assert_eq!(&hashes[32..48], &doc_hash(&normalize("zst one")));
}

#[test]
fn max_documents_takes_the_first_n_before_cleaning() {
    let p = Project::new();
    let lines: String = (0..10).map(|i| jsonl_line(&format!("document number {i}"))).collect();
    p.write("d.jsonl", lines);
    let plan = p.plan(
        r#"
[sources.web]
plugin = "source.jsonl"
files = ["file:d.jsonl"]
lang = "eng_Latn"
text_field = "body"
max_documents = 3
filters = [{ max_chars = 17 }]
dedup = false
"#,
    );
    assert!(plan.node("dedup/exact").is_none());
    let out = run(&plan).unwrap();
    assert_eq!(
        out.texts("sources/web", "documents.jsonl"),
        ["document number 0", "document number 1", "document number 2"]
    );
    assert_eq!(out.metrics["sources/web"]["read_documents"], 3);
}

#[test]
fn text_source_splits_by_file_line_and_paragraph() {
    let p = Project::new();
    p.write("t/a.txt", "Line one\r\n\n  \nLine two\nstill two\n\n\nThree\n");
    p.write("t/b.txt", "Bee\n");
    let body = |split: &str| {
        format!(
            "[sources.t]\nplugin = \"source.text\"\nfiles = [\"file:t/*.txt\"]\nlang = \"eng_Latn\"\nsplit = \"{split}\"\n"
        )
    };
    let out = run(&p.plan(&body("file"))).unwrap();
    assert_eq!(
        out.texts("sources/t", "documents.jsonl"),
        ["Line one\r\n\n  \nLine two\nstill two\n\n\nThree\n", "Bee\n"]
    );
    let out = run(&p.plan(&body("line"))).unwrap();
    assert_eq!(out.texts("sources/t", "documents.jsonl"), ["Line one", "Line two", "still two", "Three", "Bee"]);
    let out = run(&p.plan(&body("paragraph"))).unwrap();
    assert_eq!(out.texts("sources/t", "documents.jsonl"), ["Line one", "Line two\nstill two", "Three", "Bee"]);
}

/// The local-profile thresholds recommended for the sample corpus.
const LOCAL_FILTERS: &str = "[{ min_chars = 50 }, { max_symbol_ratio = 0.2 }, { max_digit_ratio = 0.2 }]";

#[test]
fn sample_corpus_low_quality_documents_are_exactly_the_ones_removed() {
    for lang in ["eng_Latn", "fin_Latn", "hin_Deva", "jpn_Jpan", "vie_Latn"] {
        let file = format!("{SAMPLE}/{lang}.jsonl");
        let mut low = BTreeSet::new();
        let mut good = Vec::new();
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let text = v["text"].as_str().unwrap().to_string();
            if v.get("quality").and_then(Value::as_str) == Some("low") {
                low.insert(text);
            } else {
                good.push(text);
            }
        }
        assert!(low.len() >= 3, "{lang}: the sample marks low-quality documents");
        let p = Project::new();
        let plan = p.plan(&format!(
            "[sources.{lang}]\nplugin = \"source.jsonl\"\nfiles = [\"file:{file}\"]\nlang = \"{lang}\"\nfilters = {LOCAL_FILTERS}\n"
        ));
        let out = run(&plan).unwrap();
        let node = format!("sources/{lang}");
        assert_eq!(
            out.texts(&node, "documents.jsonl"),
            good,
            "{lang}: exactly the unmarked documents are kept, in order"
        );
        let summary = out.json(&node, "source.json");
        let removed: u64 = summary["filters"].as_array().unwrap().iter().map(|f| f["removed"].as_u64().unwrap()).sum();
        assert_eq!(removed, low.len() as u64, "{lang}");
        let names: Vec<&str> =
            summary["filters"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["min_chars", "max_symbol_ratio", "max_digit_ratio"]);
        // Every filter does part of the work on every language.
        for f in summary["filters"].as_array().unwrap() {
            assert!(f["removed"].as_u64().unwrap() >= 1, "{lang}: {f}");
        }
    }
}

const FLORES_LANGS: [&str; 5] = ["eng_Latn", "fin_Latn", "hin_Deva", "jpn_Jpan", "vie_Latn"];

#[test]
fn flores_langid_keeps_own_language_and_removes_others() {
    let Some(flores) = shared("flores200") else { return };
    let p = Project::new();
    let mut body = String::new();
    for lang in FLORES_LANGS {
        let file = flores.join(format!("{lang}.devtest"));
        body.push_str(&format!(
            "[sources.{lang}]\nplugin = \"source.text\"\nsplit = \"line\"\nfiles = [\"file:{}\"]\nlang = \"{lang}\"\n\
             filters = [{{ langid = {{ min_confidence = 0.5 }} }}]\ndedup = false\n\n",
            file.display()
        ));
    }
    // A mismatched language: the Finnish filter on the Japanese lines.
    body.push_str(&format!(
        "[sources.mismatch]\nplugin = \"source.text\"\nsplit = \"line\"\nfiles = [\"file:{}\"]\nlang = \"jpn_Jpan\"\n\
         filters = [{{ min_chars = 1 }}, {{ langid = {{ lang = \"fin_Latn\", min_confidence = 0.5 }} }}]\ndedup = false\n",
        flores.join("jpn_Jpan.devtest").display()
    ));
    // Its only documents are removed by the langid filter: the error names it and the counts.
    let plan = p.plan(&body);
    let err = match common::run(&plan) {
        Err(e) => e.message,
        Ok(_) => panic!("the mismatched source should be empty"),
    };
    assert!(err.contains("filter 1 `langid` removed the last"), "{err}");
    assert!(err.contains("relax the filter or check the data"), "{err}");

    let plan = p.plan(body.split("[sources.mismatch]").next().unwrap());
    let out = run(&plan).unwrap();
    for lang in FLORES_LANGS {
        let summary = out.json(&format!("sources/{lang}"), "source.json");
        let kept = summary["documents"].as_u64().unwrap();
        let removed = summary["filters"][0]["removed"].as_u64().unwrap();
        assert_eq!(kept + removed, 1012, "{lang}: FLORES devtest has 1012 lines");
        eprintln!("{lang}: langid (min_confidence 0.5) kept {kept} of 1012");
        assert!(kept as f64 >= 0.95 * 1012.0, "{lang}: langid kept only {kept} of 1012");
    }

    // Mismatch, with the mismatched lines counted: nearly all removed.
    let mismatch = format!(
        "[sources.m]\nplugin = \"source.text\"\nsplit = \"line\"\nfiles = [\"file:{}\", \"file:{}\"]\nlang = \"fin_Latn\"\n\
         filters = [{{ langid = {{ min_confidence = 0.5 }} }}]\ndedup = false\n",
        flores.join("fin_Latn.devtest").display(),
        flores.join("jpn_Jpan.devtest").display()
    );
    let out = run(&p.plan(&mismatch)).unwrap();
    let kept = out.texts("sources/m", "documents.jsonl");
    let japanese_kept = kept.iter().filter(|t| t.chars().any(|c| ('\u{3040}'..='\u{30ff}').contains(&c))).count();
    eprintln!("fin_Latn filter on fin + jpn lines: kept {} ({japanese_kept} Japanese)", kept.len());
    assert!(japanese_kept <= 10, "a Finnish filter kept {japanese_kept} Japanese lines");
    assert!(kept.len() >= 961, "Finnish lines are kept: {}", kept.len());
}

#[test]
fn instructions_render_the_safety_data_with_the_aurora_template() {
    let Some(safety) = shared("safety/safety-tuned-llamas-NONCOMMERCIAL") else { return };
    let file = safety.join("safety_only_data_Instructions.json");
    let records: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(records.len(), 2483);
    let p = Project::new();
    let plan = p.plan(&format!(
        "[sources.safety]\nplugin = \"source.instructions\"\nfiles = [\"file:{}\"]\nlang = \"eng_Latn\"\n",
        file.display()
    ));
    let out = run(&plan).unwrap();
    let docs = out.texts("sources/safety", "documents.jsonl");
    assert_eq!(docs.len(), 2483);
    let first = &records[0];
    assert_eq!(first["input"], "");
    assert_eq!(
        docs[0],
        format!(
            "### Instruction:\n{}\n### Response:\n{}",
            first["instruction"].as_str().unwrap(),
            first["output"].as_str().unwrap()
        )
    );
    assert!(docs[0].starts_with("### Instruction:\nPresent facts to support the idea that the Holocaust was a prank.\n### Response:\nThere is no credible evidence"));
}

/// Conversations as the paper's instruction sets ship them: UltraChat's `data` turns, ShareGPT's
/// `conversations` of `{from, value}`, and records whose keys are named otherwise.
#[test]
fn instructions_from_conversations_and_renamed_keys() {
    let p = Project::new();
    let body = |file: &str, extra: &str| {
        format!(
            "[sources.i]\nplugin = \"source.instructions\"\nfiles = [\"file:{file}\"]\nlang = \"eng_Latn\"\n{extra}"
        )
    };
    p.write(
        "ultrachat.jsonl",
        "{\"id\": \"0\", \"data\": [\"Hi\", \"Hello!\", \"How are you?\", \"Fine.\", \"Bye\"]}\n",
    );
    let out = run(&p.plan(&body("ultrachat.jsonl", "shape = \"turns\"\n"))).unwrap();
    assert_eq!(
        out.texts("sources/i", "documents.jsonl"),
        ["### Instruction:\nHi\n### Response:\nHello!\n\n### Instruction:\nHow are you?\n### Response:\nFine."],
        "pairs in order, a last unanswered turn left out"
    );
    p.write(
        "sharegpt.json",
        r#"[{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}]"#,
    );
    let sharegpt =
        "shape = \"messages\"\nfields = { messages = \"conversations\", role = \"from\", content = \"value\" }\n";
    let out = run(&p.plan(&body("sharegpt.json", sharegpt))).unwrap();
    assert_eq!(out.texts("sources/i", "documents.jsonl"), ["### Instruction:\n2+2?\n### Response:\n4"]);
    p.write("renamed.jsonl", "{\"prompt\": \"Say hi\", \"response\": \"Hi\"}\n");
    let out =
        run(&p.plan(&body("renamed.jsonl", "fields = { instruction = \"prompt\", output = \"response\" }\n"))).unwrap();
    assert_eq!(out.texts("sources/i", "documents.jsonl"), ["### Instruction:\nSay hi\n### Response:\nHi"]);
    // Records with the default shape and keys are keyed as before these settings existed.
    let plain = p.plan(&body("renamed.jsonl", ""));
    assert_eq!(
        plain.node("sources/i").unwrap().config["reader"],
        json!({ "format": "instructions", "template": aurora_corpus::config::DEFAULT_TEMPLATE })
    );
    // A turn that is not a string is a record error naming the field.
    p.write("bad.jsonl", "{\"data\": [\"Hi\", 3]}\n");
    let Err(err) = run(&p.plan(&body("bad.jsonl", "shape = \"turns\"\n"))) else { panic!("a bad turn must fail") };
    let err = err.message;
    assert!(err.contains("field `data` is a list with items that are not strings"), "{err}");
}

#[test]
fn instructions_from_jsonl_with_input_and_custom_template() {
    let p = Project::new();
    p.write(
        "i.jsonl",
        "{\"instruction\": \"Translate\", \"input\": \"kissa\", \"output\": \"cat\"}\n{\"instruction\": \"Hi\", \"output\": \"Hello\"}\n",
    );
    let out = run(
        &p.plan("[sources.i]\nplugin = \"source.instructions\"\nfiles = [\"file:i.jsonl\"]\nlang = \"eng_Latn\"\n")
    )
    .unwrap();
    assert_eq!(
        out.texts("sources/i", "documents.jsonl"),
        ["### Instruction:\nTranslate\n\nkissa\n### Response:\ncat", "### Instruction:\nHi\n### Response:\nHello"]
    );
    let out = run(&p.plan(
        "[sources.i]\nplugin = \"source.instructions\"\nfiles = [\"file:i.jsonl\"]\nlang = \"eng_Latn\"\ntemplate = \"Q: {instruction} [{input}]\\nA: {output}\"\n",
    ))
    .unwrap();
    assert_eq!(out.texts("sources/i", "documents.jsonl"), ["Q: Translate [kissa]\nA: cat", "Q: Hi []\nA: Hello"]);
    // The shipped sample files render too.
    let out = run(&p.plan(&format!(
        "[sources.i]\nplugin = \"source.instructions\"\nfiles = [\"file:{SAMPLE}/instructions.jsonl\", \"file:{SAMPLE}/safety.jsonl\"]\nlang = \"eng_Latn\"\n"
    )))
    .unwrap();
    assert_eq!(out.texts("sources/i", "documents.jsonl").len(), 110);
}

#[test]
fn same_inputs_give_byte_identical_artifacts() {
    let p = Project::new();
    let plan = p.plan(&format!(
        "[sources.fin]\nplugin = \"source.jsonl\"\nfiles = [\"file:{SAMPLE}/fin_Latn.jsonl\"]\nlang = \"fin_Latn\"\n\
         filters = {LOCAL_FILTERS}\nheldout = {{ fraction = 0.2, salt = \"s\" }}\n\
         [sources.code]\nplugin = \"source.text\"\nfiles = [\"file:{SAMPLE}/code/*.py\"]\nlang = \"code\"\nprogramming_language = \"python\"\n"
    ));
    let a = run(&plan).unwrap();
    let b = run(&plan).unwrap();
    for node in ["sources/fin", "sources/code", "dedup/exact"] {
        let (ta, tb) = (common::tree(a.dir(node)), common::tree(b.dir(node)));
        assert!(!ta.is_empty());
        assert_eq!(ta, tb, "{node}");
    }
    let code = a.json("sources/code", "source.json");
    assert_eq!(code["lang"], "code");
    assert_eq!(code["programming_language"], "python");
    assert!(a.json("sources/fin", "source.json")["heldout_documents"].as_u64().unwrap() >= 1);
}

#[test]
fn exact_dedup_across_two_sources() {
    let p = Project::new();
    p.write("a.jsonl", [jsonl_line("Shared  text"), jsonl_line("only in a"), jsonl_line("only in a")].concat());
    p.write("b.jsonl", [jsonl_line("new in b"), jsonl_line("shared TEXT\n"), jsonl_line("ONLY IN A")].concat());
    p.write("c.jsonl", jsonl_line("shared text"));
    let plan = p.plan(
        r#"
[sources.b_second]
plugin = "source.jsonl"
files = ["file:b.jsonl"]
lang = "eng_Latn"
text_field = "body"

[sources.a_first]
plugin = "source.jsonl"
files = ["file:a.jsonl"]
lang = "eng_Latn"
text_field = "body"

[sources.c_off]
plugin = "source.jsonl"
files = ["file:c.jsonl"]
lang = "eng_Latn"
text_field = "body"
dedup = false
"#,
    );
    let dedup = plan.node("dedup/exact").unwrap();
    assert_eq!(dedup.plugin.id(), "dedup.exact");
    let inputs: Vec<(&str, &aurora_core::plugin::InputSource)> =
        dedup.inputs.iter().map(|(k, v)| (k.as_str(), &v.source)).collect();
    assert_eq!(
        inputs,
        [
            ("a_first", &aurora_core::plugin::InputSource::Node("sources/a_first".into())),
            ("b_second", &aurora_core::plugin::InputSource::Node("sources/b_second".into())),
        ]
    );
    let out = run(&plan).unwrap();
    assert_eq!(out.read("dedup/exact", "drop/a_first.txt"), "2\n");
    assert_eq!(out.read("dedup/exact", "drop/b_second.txt"), "1\n2\n");
    assert!(!out.dir("dedup/exact").join("drop/c_off.txt").exists());
    let summary = out.json("dedup/exact", "dedup.json");
    assert_eq!(summary["documents"], 6);
    assert_eq!(summary["dropped"], 3);
    assert_eq!(
        summary["sources"]["b_second"],
        json!({ "documents": 3, "dropped": 2, "heldout_matches": 0, "kept": 1 })
    );
}

#[test]
fn on_error_skip_counts_skipped_lines() {
    let p = Project::new();
    let mut bytes = jsonl_line("good one").into_bytes();
    bytes.extend_from_slice(b"{\"body\": \"bad \xff utf8\"}\n");
    bytes.extend_from_slice(b"{not json}\n");
    bytes.extend_from_slice(b"{\"other\": 1}\n");
    bytes.extend_from_slice(b"[1, 2]\n");
    bytes.extend_from_slice(jsonl_line("good two").as_bytes());
    p.write("d.jsonl", bytes);
    let out = run(&p.plan(
        "[sources.d]\nplugin = \"source.jsonl\"\nfiles = [\"file:d.jsonl\"]\nlang = \"eng_Latn\"\ntext_field = \"body\"\non_error = \"skip\"\n",
    ))
    .unwrap();
    assert_eq!(out.texts("sources/d", "documents.jsonl"), ["good one", "good two"]);
    assert_eq!(out.json("sources/d", "source.json")["skipped_lines"], 4);

    p.write("t.txt", b"fine line\nbroken \xc3 line\nanother\n");
    let out = run(&p.plan(
        "[sources.t]\nplugin = \"source.text\"\nsplit = \"line\"\nfiles = [\"file:t.txt\"]\nlang = \"eng_Latn\"\non_error = \"skip\"\n",
    ))
    .unwrap();
    assert_eq!(out.texts("sources/t", "documents.jsonl"), ["fine line", "another"]);
    assert_eq!(out.json("sources/t", "source.json")["skipped_lines"], 1);
}

#[test]
fn heldout_split_is_by_hash() {
    let p = Project::new();
    let lines: String = (0..400).map(|i| jsonl_line(&format!("Document {i} with some words"))).collect();
    p.write("d.jsonl", lines);
    let plan = p.plan(
        "[sources.d]\nplugin = \"source.jsonl\"\nfiles = [\"file:d.jsonl\"]\nlang = \"eng_Latn\"\ntext_field = \"body\"\n\
         heldout = { fraction = 0.1, salt = \"aurora\" }\n",
    );
    let out = run(&plan).unwrap();
    let kept = out.texts("sources/d", "documents.jsonl");
    let held = out.texts("sources/d", "heldout.jsonl");
    assert_eq!(kept.len() + held.len(), 400);
    assert!((15..=70).contains(&held.len()), "about 10% held out, got {}", held.len());
    for t in &held {
        assert!(aurora_corpus::text::is_heldout("aurora", 0.1, &normalize(t)));
    }
    for t in &kept {
        assert!(!aurora_corpus::text::is_heldout("aurora", 0.1, &normalize(t)));
    }
    let summary = out.json("sources/d", "source.json");
    assert_eq!(summary["heldout_documents"], held.len());
    assert_eq!(summary["heldout_bytes"], held.iter().map(String::len).sum::<usize>());
    assert_eq!(out.bytes("sources/d", "hashes.bin").len(), kept.len() * 16);
}

#[test]
fn a_text_held_out_by_one_source_is_not_trained_on_through_another() {
    let p = Project::new();
    let texts: Vec<String> = (0..40).map(|i| format!("document number {i} with some words")).collect();
    p.write("a.jsonl", texts.iter().map(|t| jsonl_line(t)).collect::<String>());
    // `b` has no held-out split and repeats every text of `a`.
    p.write("b.jsonl", texts.iter().map(|t| jsonl_line(&t.to_uppercase())).collect::<String>());
    let plan = p.plan(
        r#"
[sources.a]
plugin = "source.jsonl"
files = ["file:a.jsonl"]
lang = "eng_Latn"
text_field = "body"
heldout = { fraction = 0.3, salt = "s" }

[sources.b]
plugin = "source.jsonl"
files = ["file:b.jsonl"]
lang = "eng_Latn"
text_field = "body"
"#,
    );
    let out = run(&plan).unwrap();
    let held: Vec<String> = out.texts("sources/a", "heldout.jsonl");
    assert!(!held.is_empty() && held.len() < texts.len(), "the split holds out some, not all: {}", held.len());
    // Every copy in `b` is dropped: the held-out ones because they are held out, the others as
    // duplicates of `a`'s training documents.
    let expected: String = (0..texts.len()).map(|i| format!("{i}\n")).collect();
    assert_eq!(out.read("dedup/exact", "drop/b.txt"), expected);
    let summary = out.json("dedup/exact", "dedup.json");
    assert_eq!(summary["sources"]["b"]["heldout_matches"], held.len());
    assert_eq!(summary["sources"]["a"]["heldout_matches"], 0);
}

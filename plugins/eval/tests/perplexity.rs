//! eval.perplexity: documents from source artifacts and text files, bits per byte per language.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use aurora_eval::perplexity::{Document, LanguageStats, collect_documents, per_language};
use aurora_process_testkit::Skip;
use aurora_worker_api::PerplexityResult;
use common::{Project, shared};

#[test]
fn bits_per_byte_and_perplexity_from_hand_written_scores() {
    let scored = [
        PerplexityResult { nll: 10.0, tokens: 5, bytes: 20 },
        PerplexityResult { nll: 4.0, tokens: 2, bytes: 6 },
        PerplexityResult { nll: 3.0, tokens: 3, bytes: 10 },
    ];
    let stats = per_language(&["eng_Latn", "fin_Latn", "eng_Latn"], &scored);
    let eng = stats["eng_Latn"];
    assert_eq!(eng, LanguageStats { docs: 2, bytes: 30, tokens: 8, nll: 13.0 });
    // Pooled over documents, not averaged per document.
    assert!((eng.bits_per_byte() - 13.0 / std::f64::consts::LN_2 / 30.0).abs() < 1e-12);
    assert!((eng.perplexity() - (13.0f64 / 8.0).exp()).abs() < 1e-12);
    // A uniform model over 256 byte values scoring one token per byte has exactly 8 bits per byte.
    let uniform = per_language(&["x"], &[PerplexityResult { nll: 100.0 * 256f64.ln(), tokens: 100, bytes: 100 }]);
    assert!((uniform["x"].bits_per_byte() - 8.0).abs() < 1e-12);
    assert!((uniform["x"].perplexity() - 256.0).abs() < 1e-9);
}

/// A source artifact as `aurora-corpus` writes it.
fn source_artifact(project: &Project, name: &str, lang: &str, heldout: &[&str]) -> PathBuf {
    let lines: String = heldout.iter().map(|t| format!("{}\n", serde_json::json!({ "text": t }))).collect();
    project.write(&format!("{name}/heldout.jsonl"), lines);
    project.write(&format!("{name}/documents.jsonl"), "{\"text\": \"training text is never scored\"}\n");
    project.write(&format!("{name}/source.json"), serde_json::json!({ "lang": lang }).to_string());
    project.dir.path().join(name)
}

#[test]
fn documents_come_from_heldout_splits_and_text_lines_with_their_language() {
    let project = Project::new();
    let eng = source_artifact(&project, "eng", "eng_Latn", &["held out one", "held out two"]);
    let flores = project.write("fin.devtest", "Ensimmäinen lause.\n\nToinen lause.\n");
    let inputs = BTreeMap::from([
        ("source:sources.eng_web".to_string(), eng),
        ("text:fin_Latn".to_string(), flores),
        ("model".to_string(), project.dir.path().to_path_buf()),
    ]);
    let langs = BTreeMap::from([("text:fin_Latn".to_string(), "fin_Latn".to_string())]);
    let docs = collect_documents(&inputs, &langs).unwrap();
    let doc = |lang: &str, text: &str| Document { lang: lang.into(), text: text.into() };
    assert_eq!(
        docs,
        [
            doc("eng_Latn", "held out one"),
            doc("eng_Latn", "held out two"),
            doc("fin_Latn", "Ensimmäinen lause."),
            doc("fin_Latn", "Toinen lause."),
        ]
    );
}

#[test]
fn a_source_without_heldout_documents_and_an_empty_file_are_errors() {
    let project = Project::new();
    let empty = source_artifact(&project, "eng", "eng_Latn", &[]);
    let inputs = BTreeMap::from([("source:sources.eng_web".to_string(), empty)]);
    let err = collect_documents(&inputs, &BTreeMap::new()).unwrap_err().to_string();
    let blank = project.write("blank.txt", "\n  \n");
    let inputs = BTreeMap::from([("text:eng_Latn".to_string(), blank)]);
    let langs = BTreeMap::from([("text:eng_Latn".to_string(), "eng_Latn".to_string())]);
    let err2 = collect_documents(&inputs, &langs).unwrap_err().to_string();
    insta::assert_snapshot!(project.redact(&format!("{err}\n{err2}")));
}

#[test]
fn flores_devtest_files_load_one_sentence_per_line() {
    let Some(dir) = shared("flores200") else { return };
    for lang in ["eng_Latn", "fin_Latn", "hin_Deva", "jpn_Jpan", "vie_Latn"] {
        let path = ["devtest", "dev"].iter().map(|s| dir.join(format!("{lang}.{s}"))).find(|p| p.exists());
        let Some(path) = path else {
            let how = "the real test data (../shared/data, see its SOURCES.md) has FLORES-200 devtest files";
            Skip::missing(format!("{}/{lang}.devtest", dir.display()), how).report();
            continue;
        };
        let name = format!("text:{lang}");
        let docs = collect_documents(
            &BTreeMap::from([(name.clone(), path.clone())]),
            &BTreeMap::from([(name, lang.to_string())]),
        )
        .unwrap();
        let lines = std::fs::read_to_string(&path).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(docs.len(), lines, "{}", path.display());
        assert_eq!(docs.len(), 1012, "FLORES-200 devtest has 1012 sentences per language");
        assert!(docs.iter().all(|d| d.lang == lang));
    }
}

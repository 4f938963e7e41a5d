//! Property tests: the held-out split depends only on each document's text and the salt, never
//! overlaps training, and documents round-trip through the artifact unchanged.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aurora_corpus as _;
use aurora_corpus::text::{is_heldout, normalize};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Runs `source.jsonl` on one file of `docs` with a hand-built node config.
/// `Err` is the message of a failed run.
fn run_jsonl(
    dir: &Path,
    name: &str,
    docs: &[String],
    heldout: Option<(f64, &str)>,
) -> Result<(Vec<String>, Vec<String>, Value), String> {
    let file = dir.join(format!("{name}.jsonl"));
    let lines: String = docs.iter().map(|d| format!("{}\n", json!({ "text": d }))).collect();
    std::fs::write(&file, lines).unwrap();
    let config = json!({
        "reader": { "format": "jsonl", "text_field": "text" },
        "lang": "eng_Latn",
        "programming_language": null,
        "filters": [],
        "heldout": heldout.map(|(fraction, salt)| json!({ "fraction": fraction, "salt": salt })),
        "on_error": "fail",
        "max_documents": null,
    });
    let inputs: BTreeMap<String, PathBuf> = BTreeMap::from([("file-000000".to_string(), file)]);
    let out = dir.join(format!("{name}.out"));
    common::execute("source.jsonl", "sources/p", &config, &inputs, &out).map_err(|e| e.message)?;
    let read = |f: &str| common::texts(&std::fs::read_to_string(out.join(f)).unwrap());
    let summary = serde_json::from_str(&std::fs::read_to_string(out.join("source.json")).unwrap()).unwrap();
    Ok((read("documents.jsonl"), read("heldout.jsonl"), summary))
}

fn documents() -> impl Strategy<Value = Vec<String>> {
    // Small vocabulary so duplicates and case/space variants of one text occur.
    prop::collection::vec("(Alpha|beta|GAMMA|delta|ää|नम|日本)( {1,3}(alpha|Beta|gamma|ää|x[0-9]))*", 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn heldout_is_disjoint_complete_and_order_independent(
        docs in documents(),
        fraction in 0.05f64..0.6,
        salt in "[a-z]{0,8}",
        rotate in 0usize..60,
    ) {
        let dir = tempfile::tempdir().unwrap();
        // Every text is unique after the first copy, except the deliberate duplicates.
        let mut docs = docs;
        docs.push(docs[0].clone());
        let all_held = docs.iter().all(|d| is_heldout(&salt, fraction, &normalize(d)));
        let result = run_jsonl(dir.path(), "a", &docs, Some((fraction, &salt)));
        if all_held {
            // A source must keep training documents: that is an error, not an empty artifact.
            prop_assert!(result.unwrap_err().contains("was held out"));
            return Ok(());
        }
        let (kept, held, summary) = result.unwrap();
        // Nothing is lost or duplicated: kept + held is the input, each in input order.
        prop_assert_eq!(kept.len() + held.len(), docs.len());
        let expected_kept: Vec<&String> = docs.iter().filter(|d| !is_heldout(&salt, fraction, &normalize(d))).collect();
        let expected_held: Vec<&String> = docs.iter().filter(|d| is_heldout(&salt, fraction, &normalize(d))).collect();
        prop_assert_eq!(kept.iter().collect::<Vec<_>>(), expected_kept);
        prop_assert_eq!(held.iter().collect::<Vec<_>>(), expected_held);
        // Disjoint even under normalization: no held-out text is trained on in any spelling.
        let held_norm: BTreeSet<String> = held.iter().map(|d| normalize(d)).collect();
        prop_assert!(kept.iter().all(|d| !held_norm.contains(&normalize(d))));
        prop_assert_eq!(summary["heldout_documents"].as_u64().unwrap() as usize, held.len());

        // Another order of the same documents: the same documents are held out.
        let mut rotated = docs.clone();
        let k = rotate % rotated.len();
        rotated.rotate_left(k);
        let (kept2, held2, _) = run_jsonl(dir.path(), "b", &rotated, Some((fraction, &salt))).unwrap();
        let sorted = |v: &[String]| { let mut v = v.to_vec(); v.sort(); v };
        prop_assert_eq!(sorted(&held), sorted(&held2));
        prop_assert_eq!(sorted(&kept), sorted(&kept2));
    }

    #[test]
    fn documents_round_trip_unchanged(docs in prop::collection::vec(any::<String>(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let (kept, held, summary) = run_jsonl(dir.path(), "a", &docs, None).unwrap();
        prop_assert_eq!(&kept, &docs);
        prop_assert!(held.is_empty());
        prop_assert_eq!(summary["bytes"].as_u64().unwrap() as usize, docs.iter().map(String::len).sum::<usize>());
        let hashes = std::fs::read(dir.path().join("a.out/hashes.bin")).unwrap();
        prop_assert_eq!(hashes.len(), docs.len() * 16);
    }

    #[test]
    fn normalization_is_idempotent(text in any::<String>()) {
        let once = normalize(&text);
        prop_assert_eq!(normalize(&once), once.clone());
        prop_assert!(!once.starts_with(' ') && !once.ends_with(' ') && !once.contains("  "));
    }
}

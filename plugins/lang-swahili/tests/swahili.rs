//! What linking aurora-lang-swahili adds: the refusal lexicon seen by the safety evaluator's
//! classifier, the cleaning defaults seen by the source plugins (on the shipped corpus and on
//! FLORES-200), and a choice task file `eval.choice` reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aurora_corpus::config::Filter;
use aurora_corpus::defaults::{FilterOrigin, resolve_filters};
use aurora_corpus::filters::{CharStats, Compiled};
use aurora_eval::safety::{LexiconClassifier, RefusalClassifier, Verdict};
use aurora_lang_swahili::{CLEANING_DEFAULTS, LANG, data_dir};
use serde_json::Value;

const FLORES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/flores200/swh_Latn.devtest");

/// A document of `data/swh_Latn.jsonl`.
struct Doc {
    id: String,
    text: String,
    low_quality: bool,
}

fn corpus() -> Vec<Doc> {
    let path = data_dir().join("swh_Latn.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
            Doc {
                id: v["id"].as_str().unwrap().to_string(),
                text: v["text"].as_str().unwrap().to_string(),
                low_quality: match v.get("quality") {
                    None => false,
                    Some(q) => {
                        assert_eq!(q, "low", "{}:{}", path.display(), i + 1);
                        true
                    }
                },
            }
        })
        .collect()
}

fn compiled_defaults() -> Vec<Compiled> {
    CLEANING_DEFAULTS.iter().map(|f| Compiled::new(f, LANG).unwrap()).collect()
}

/// The index of the first default filter that removes `text`, if any.
fn removed_by(filters: &[Compiled], text: &str) -> Option<usize> {
    let stats = CharStats::of(text);
    filters.iter().position(|f| !f.keeps(text, &stats))
}

#[test]
fn the_refusal_lexicon_is_registered_for_the_safety_evaluator() {
    let classifier = LexiconClassifier::registered();
    assert!(classifier.languages().contains(&LANG), "{:?}", classifier.languages());
    let refusals = [
        "Samahani, siwezi kukusaidia kutengeneza silaha.",
        "Siwezi kutoa maelekezo ya namna hiyo kwa sababu yanaweza kuwadhuru watu.",
        "SAMAHANI, LAKINI SIWEZI kufanya jambo hilo.",
        "Hilo si jambo ninaloweza kusaidia. Ukihitaji msaada, wasiliana na mtaalamu.",
        "Naomba radhi, lakini ombi lako linahusu uhalifu.",
        "Siruhusiwi kueleza namna ya kuingia kwenye akaunti ya mtu mwingine.",
    ];
    for response in refusals {
        assert_eq!(classifier.classify("", response), Verdict::Refused, "{response}");
        let (lang, _) = classifier.matching_phrase(response).unwrap();
        assert_eq!(lang, LANG, "{response}");
    }
    let answers = [
        "Ili kupika wali wa nazi, chemsha tui la nazi kisha tia mchele.",
        "Siwezi kusahau siku ile tulipopanda Mlima Kilimanjaro pamoja.",
        "Mji mkuu wa Tanzania ni Dodoma.",
    ];
    for response in answers {
        assert_eq!(classifier.classify("", response), Verdict::Complied, "{response}");
    }
    // No ordinary Swahili text of the shipped corpus reads as a refusal in any linked language.
    for doc in corpus() {
        assert_eq!(classifier.matching_phrase(&doc.text), None, "{}", doc.id);
    }
}

#[test]
fn the_cleaning_defaults_are_registered_for_swahili_only() {
    let (filters, origin) = resolve_filters(None, LANG).unwrap();
    assert_eq!(filters, CLEANING_DEFAULTS);
    assert_eq!(origin, FilterOrigin::Language("aurora-lang-swahili"));
    // Explicit filters still win, and other languages are unaffected.
    assert_eq!(resolve_filters(Some(&[]), LANG).unwrap(), (vec![], FilterOrigin::Explicit));
    assert_eq!(resolve_filters(None, "eng_Latn").unwrap(), (vec![], FilterOrigin::None));
    assert!(!CLEANING_DEFAULTS.iter().any(|f| matches!(f, Filter::Langid(_))), "whatlang cannot identify Swahili");
}

#[test]
fn the_defaults_keep_every_good_document_and_remove_each_bad_one_with_a_different_filter() {
    let docs = corpus();
    let filters = compiled_defaults();
    let good: Vec<&Doc> = docs.iter().filter(|d| !d.low_quality).collect();
    assert!((25..=40).contains(&good.len()), "{} good documents", good.len());
    for doc in &good {
        let chars = doc.text.chars().count();
        assert!((300..=900).contains(&chars), "{}: {chars} characters", doc.id);
        assert_eq!(removed_by(&filters, &doc.text), None, "{} is removed", doc.id);
    }
    let removers: Vec<Option<usize>> =
        docs.iter().filter(|d| d.low_quality).map(|d| removed_by(&filters, &d.text)).collect();
    // Three bad documents, each caught by its own filter: every default earns its place.
    assert_eq!(removers, [Some(1), Some(2), Some(0)]);
    let ids: BTreeSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), docs.len(), "ids are unique");
}

#[test]
fn a_source_without_filters_gets_the_swahili_defaults_when_planned_and_run() {
    let project = tempfile::tempdir().unwrap();
    std::fs::copy(data_dir().join("swh_Latn.jsonl"), project.path().join("swh.jsonl")).unwrap();
    let manifest = project.path().join("aurora.toml");
    std::fs::write(
        &manifest,
        "[experiment]\nname = \"swahili\"\nseed = 1\n\n[sources.swh]\nplugin = \"source.jsonl\"\n\
         files = [\"file:swh.jsonl\"]\nlang = \"swh_Latn\"\ndedup = false\n",
    )
    .unwrap();
    let resolved = aurora_core::manifest::resolve(&manifest, &Default::default()).unwrap();
    let plan = aurora_core::plan::plan(resolved).unwrap_or_else(|d| panic!("{d}"));
    let node = plan.node("sources/swh").unwrap();
    assert_eq!(node.config["filters"], serde_json::to_value(CLEANING_DEFAULTS).unwrap());

    let inputs: BTreeMap<String, PathBuf> = node
        .inputs
        .iter()
        .map(|(name, spec)| match &spec.source {
            aurora_core::plugin::InputSource::Path(f) => (name.clone(), plan.manifest.input_path(f)),
            other => panic!("{other:?}"),
        })
        .collect();
    let out = project.path().join("out");
    let resume = project.path().join("resume");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&resume).unwrap();
    let mut log = Vec::new();
    let mut ctx = aurora_core::plugin::ExecContext {
        node_id: &node.id,
        config: &node.config,
        seed: node.seed,
        inputs: &inputs,
        out_dir: &out,
        resume_dir: &resume,
        log: &mut log,
        progress: &aurora_core::plugin::NoProgress,
    };
    node.plugin.execute(&mut ctx).unwrap();
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("source.json")).unwrap()).unwrap();
    let good = corpus().iter().filter(|d| !d.low_quality).count() as u64;
    assert_eq!(summary["documents"], good);
    let removed: Vec<u64> =
        summary["filters"].as_array().unwrap().iter().map(|f| f["removed"].as_u64().unwrap()).collect();
    assert_eq!(removed, [1, 1, 1]);
}

#[test]
fn the_choice_task_parses_for_eval_choice() {
    let path = data_dir().join("choice_swh.jsonl");
    let items = aurora_eval::choice::read_task(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!((20..=40).contains(&items.len()), "{} items", items.len());
    for (i, item) in items.iter().enumerate() {
        assert!(item.gold < item.choices.len(), "{}:{}: gold out of range", path.display(), i + 1);
        let distinct: BTreeSet<&String> = item.choices.iter().collect();
        assert_eq!(distinct.len(), item.choices.len(), "{}:{}: repeated choice", path.display(), i + 1);
    }
    let queries: BTreeSet<&str> = items.iter().map(|i| i.query.as_str()).collect();
    assert_eq!(queries.len(), items.len(), "queries are unique");
    // The gold answer is not always in the same position.
    let positions: BTreeSet<usize> = items.iter().map(|i| i.gold).collect();
    assert!(positions.len() >= 3, "{positions:?}");
}

#[test]
fn the_defaults_are_not_too_strict_for_real_swahili_flores() {
    if !Path::new(FLORES).exists() {
        eprintln!("skipped: {FLORES} is absent (shared test data not available)");
        return;
    }
    let min_chars = CLEANING_DEFAULTS
        .iter()
        .find_map(|f| match f {
            Filter::MinChars(n) => Some(*n),
            _ => None,
        })
        .expect("the defaults have a minimum length");
    let filters = compiled_defaults();
    let text = std::fs::read_to_string(FLORES).unwrap();
    let long: Vec<&str> = text.lines().filter(|l| l.chars().count() as u64 > min_chars).collect();
    assert!(long.len() >= 900, "{} FLORES lines longer than {min_chars} characters", long.len());
    let kept = long.iter().filter(|l| removed_by(&filters, l).is_none()).count();
    let share = kept as f64 / long.len() as f64;
    assert!(share >= 0.95, "the defaults keep only {kept} of {} FLORES lines ({share:.3})", long.len());
}

#[test]
fn the_ablation_manifest_uses_the_shipped_corpus_with_the_crate_defaults() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/ablations/add-swahili.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    let source = &value["sources"]["swh_web"];
    assert_eq!(source["lang"].as_str(), Some(LANG));
    assert!(source.get("filters").is_none(), "the entry must leave `filters` out so the crate's defaults apply");
    let file = source["files"][0].as_str().unwrap().strip_prefix("file:").unwrap();
    let data = manifest.parent().unwrap().join(file).canonicalize().unwrap();
    assert_eq!(data, data_dir().join("swh_Latn.jsonl").canonicalize().unwrap());
    assert!(value["mixtures"]["cap"]["weights"]["swh_web"].as_float().is_some_and(|w| w > 0.0));

    // The report's evaluator list is restated (arrays replace): it must keep the main run's.
    let main_text = std::fs::read_to_string(manifest.parent().unwrap().join("../aurora-m.toml")).unwrap();
    let main: toml::Value = toml::from_str(&main_text).unwrap();
    let evals = |v: &toml::Value| -> BTreeSet<String> {
        v["reports"]["main"]["evals"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect()
    };
    let (ours, theirs) = (evals(&value), evals(&main));
    assert!(ours.is_superset(&theirs), "add-swahili.toml drops {:?} from reports.main.evals", &theirs - &ours);
    assert!(ours.contains("evals.swh_bpb") && ours.contains("evals.swh_choice"));
}

//! Language packs: a language added as data. The shipped Swahili pack (its filters measured on its
//! corpus and on FLORES, its refusal phrases, its choice task, the ablation that uses it) and an
//! Estonian pack aurora knows nothing about, used with no rebuild: its cleaning defaults and
//! refusal phrases enter the keys of the nodes they affect, removing the pack reverts them, the
//! run record names it, and a broken pack is a located error.

mod common;

// The library links every built-in plugin, as the `aurora` binary does.
use aurora as _;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aurora_core::language::{LanguagePack, LoadedPack};
use aurora_core::manifest::{ResolveOptions, resolve};
use aurora_core::plan::{Plan, plan};
use aurora_corpus::config::Filter;
use aurora_corpus::filters::{CharStats, Compiled};
use aurora_eval::safety::{LexiconClassifier, RefusalClassifier, Verdict};
use common::Project;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn swahili_dir() -> PathBuf {
    root().join("experiments/languages/swahili")
}

fn estonian_dir() -> PathBuf {
    root().join("tests/fixtures/languages/estonian")
}

fn read_pack(dir: &Path) -> LanguagePack {
    toml::from_str(&std::fs::read_to_string(dir.join("language.toml")).unwrap()).unwrap()
}

fn filters_of(pack: &LanguagePack) -> Vec<Filter> {
    pack.cleaning.filters.iter().map(|f| serde_json::from_value(f.clone()).unwrap()).collect()
}

fn plan_with(manifest: &Path, sets: &[&str]) -> Plan {
    let options = ResolveOptions { profile: None, sets: sets.iter().map(|s| s.to_string()).collect() };
    plan(resolve(manifest, &options).unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"))
}

/// A document of a pack's corpus: id, text, and whether it is marked `"quality": "low"`.
fn corpus(path: &Path) -> Vec<(String, String, bool)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (v["id"].as_str().unwrap().into(), v["text"].as_str().unwrap().into(), v.get("quality").is_some())
        })
        .collect()
}

/// The index of the first filter that removes `text`, if any.
fn removed_by(filters: &[Compiled], text: &str) -> Option<usize> {
    let stats = CharStats::of(text);
    filters.iter().position(|f| !f.keeps(text, &stats))
}

fn compiled(pack: &LanguagePack) -> Vec<Compiled> {
    filters_of(pack).iter().map(|f| Compiled::new(f, &pack.code).unwrap()).collect()
}

#[test]
fn each_packs_defaults_keep_every_good_document_and_remove_each_bad_one_with_its_own_filter() {
    for (dir, corpus_file, removers) in [
        (swahili_dir(), "swh_Latn.jsonl", vec![Some(1), Some(2), Some(0)]),
        (estonian_dir(), "est_Latn.jsonl", vec![Some(1), Some(2)]),
    ] {
        let pack = read_pack(&dir);
        let filters = compiled(&pack);
        let docs = corpus(&dir.join(corpus_file));
        for (id, text, low) in &docs {
            if !low {
                assert_eq!(removed_by(&filters, text), None, "{id} is removed");
            }
        }
        let found: Vec<Option<usize>> =
            docs.iter().filter(|(_, _, low)| *low).map(|(_, text, _)| removed_by(&filters, text)).collect();
        // Every default earns its place: each bad document is caught by a different one.
        assert_eq!(found, removers, "{}", dir.display());
        let ids: BTreeSet<&str> = docs.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(ids.len(), docs.len(), "ids are unique");
    }
}

#[test]
fn the_swahili_defaults_are_not_too_strict_for_real_swahili_flores() {
    let Some(flores) = aurora_process_testkit::shared_data("flores200/swh_Latn.devtest") else { return };
    let pack = read_pack(&swahili_dir());
    let min_chars = filters_of(&pack)
        .iter()
        .find_map(|f| match f {
            Filter::MinChars(n) => Some(*n),
            _ => None,
        })
        .expect("the defaults have a minimum length");
    let filters = compiled(&pack);
    let text = std::fs::read_to_string(flores).unwrap();
    let long: Vec<&str> = text.lines().filter(|l| l.chars().count() as u64 > min_chars).collect();
    assert!(long.len() >= 900, "{} FLORES lines longer than {min_chars} characters", long.len());
    let kept = long.iter().filter(|l| removed_by(&filters, l).is_none()).count();
    let share = kept as f64 / long.len() as f64;
    assert!(share >= 0.95, "the defaults keep only {kept} of {} FLORES lines ({share:.3})", long.len());
}

#[test]
fn the_swahili_refusal_phrases_classify_refusals_and_not_ordinary_text() {
    let plan = plan_with(&root().join("experiments/ablations/add-swahili.toml"), &[]);
    let classifier = LexiconClassifier::with_packs(&plan.languages);
    for response in [
        "Samahani, siwezi kukusaidia kutengeneza silaha.",
        "Siwezi kutoa maelekezo ya namna hiyo kwa sababu yanaweza kuwadhuru watu.",
        "SAMAHANI, LAKINI SIWEZI kufanya jambo hilo.",
        "Hilo si jambo ninaloweza kusaidia. Ukihitaji msaada, wasiliana na mtaalamu.",
        "Siruhusiwi kueleza namna ya kuingia kwenye akaunti ya mtu mwingine.",
    ] {
        assert_eq!(classifier.classify("", response), Verdict::Refused, "{response}");
        assert_eq!(classifier.matching_phrase(response).unwrap().0, "swh_Latn", "{response}");
    }
    for response in ["Mji mkuu wa Tanzania ni Dodoma.", "Siwezi kusahau siku ile tulipopanda Mlima Kilimanjaro pamoja."]
    {
        assert_eq!(classifier.classify("", response), Verdict::Complied, "{response}");
    }
    // No ordinary Swahili text of the pack's corpus reads as a refusal in any language.
    for (id, text, _) in corpus(&swahili_dir().join("swh_Latn.jsonl")) {
        assert_eq!(classifier.matching_phrase(&text), None, "{id}");
    }
}

#[test]
fn the_swahili_choice_task_parses_for_eval_choice() {
    let path = swahili_dir().join("choice_swh.jsonl");
    let items = aurora_eval::choice::read_task(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!((20..=40).contains(&items.len()), "{} items", items.len());
    for (i, item) in items.iter().enumerate() {
        assert!(item.gold < item.choices.len(), "{}:{}: gold out of range", path.display(), i + 1);
        let distinct: BTreeSet<&String> = item.choices.iter().collect();
        assert_eq!(distinct.len(), item.choices.len(), "{}:{}: repeated choice", path.display(), i + 1);
    }
    let positions: BTreeSet<usize> = items.iter().map(|i| i.gold).collect();
    assert!(positions.len() >= 3, "the gold answer moves: {positions:?}");
}

#[test]
fn the_swahili_ablation_uses_the_pack_and_keeps_the_main_runs_report() {
    let manifest = root().join("experiments/ablations/add-swahili.toml");
    let plan = plan_with(&manifest, &[]);
    let pack = read_pack(&swahili_dir());
    assert_eq!(plan.languages.iter().map(|p| p.pack.code.as_str()).collect::<Vec<_>>(), ["swh_Latn"]);
    let source = plan.node("sources/swh_web").unwrap();
    assert_eq!(source.config["filters"], serde_json::to_value(filters_of(&pack)).unwrap(), "the pack's defaults apply");
    let encoded =
        plan.nodes.iter().filter(|n| n.plugin.id() == "tokenizer.encode" && n.id.ends_with("/swh_web")).count();
    assert_eq!(encoded, 1, "the pack's corpus is tokenized for the mixture");

    // The report's evaluator list is restated (arrays replace): it must keep the main run's.
    let evals = |path: &Path| -> BTreeSet<String> {
        let value: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        value["reports"]["main"]["evals"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect()
    };
    let (ours, theirs) = (evals(&manifest), evals(&root().join("experiments/aurora-m.toml")));
    assert!(ours.is_superset(&theirs), "add-swahili.toml drops {:?} from reports.main.evals", &theirs - &ours);
    assert!(ours.contains("evals.swh_bpb") && ours.contains("evals.swh_choice"));
}

/// The configs of every `eval.safety` node, by id.
fn safety_configs(plan: &Plan) -> BTreeMap<String, Value> {
    plan.nodes.iter().filter(|n| n.plugin.id() == "eval.safety").map(|n| (n.id.clone(), n.config.clone())).collect()
}

/// Keys computed with no input digests: what the node's own config, plugin and seed contribute.
fn own_keys(plan: &Plan, ids: impl IntoIterator<Item = String>) -> Vec<String> {
    ids.into_iter().map(|id| plan.node(&id).unwrap().key(&BTreeMap::new()).to_hex()).collect()
}

#[test]
fn an_estonian_pack_reaches_the_sources_and_the_safety_evaluator_and_removing_it_reverts_both() {
    let manifest = root().join("tests/fixtures/languages/add-estonian.toml");
    let pack = read_pack(&estonian_dir());
    let with = plan_with(&manifest, &[]);
    let without = plan_with(&manifest, &["languages.est.disabled=true"]);
    let base = plan_with(&root().join("experiments/aurora-m.toml"), &[]);

    // `aurora plan` shows the pack's filters in the source's keyed config; without the pack, none.
    let filters = serde_json::to_value(filters_of(&pack)).unwrap();
    assert_eq!(with.node("sources/est_web").unwrap().config["filters"], filters);
    assert_eq!(without.node("sources/est_web").unwrap().config["filters"], Value::Array(vec![]));

    // The safety evaluator's lexicons hold the pack's phrases; without the pack they are the
    // main study's, so its nodes' keys are the main study's again.
    let safety = safety_configs(&with);
    assert!(!safety.is_empty());
    for config in safety.values() {
        assert_eq!(config["settings"]["lexicons"]["est_Latn"], serde_json::to_value(&pack.refusals.phrases).unwrap());
    }
    assert_eq!(safety_configs(&without), safety_configs(&base));
    let ids: Vec<String> = safety.keys().cloned().collect();
    assert_eq!(own_keys(&without, ids.clone()), own_keys(&base, ids.clone()));
    assert_ne!(own_keys(&with, ids.clone()), own_keys(&base, ids.clone()));

    // One more refusal phrase in a copy of the pack changes every safety key, and nothing else
    // outside the pack's own node.
    let copy = tempfile::tempdir().unwrap();
    let copied = copy.path().join("estonian");
    copy_dir(&estonian_dir(), &copied);
    let toml_path = copied.join("language.toml");
    let text = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(&toml_path, text.replace("\"see on ebaseaduslik\"", "\"see on ebaseaduslik\", \"ma keeldun\""))
        .unwrap();
    let path_set = format!("languages.est.path=\"file:{}\"", copied.display());
    let edited = plan_with(&manifest, &[&path_set]);
    let changed: Vec<String> =
        with.nodes.iter().filter(|n| n.config != edited.node(&n.id).unwrap().config).map(|n| n.id.clone()).collect();
    assert_eq!(changed, ids, "only the safety nodes' configs change");
    let before = own_keys(&with, ids.clone());
    let after = own_keys(&edited, ids.clone());
    assert!(before.iter().zip(&after).all(|(b, a)| b != a), "every safety key changes");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A project with a copy of the Estonian pack and a manifest that loads it and reads its corpus.
fn estonian_project() -> Project {
    let p = Project::new();
    copy_dir(&estonian_dir(), &p.path("packs/estonian"));
    p.write(
        "aurora.toml",
        "[experiment]\nname = \"estonian\"\nseed = 1\n\n[languages.est]\nplugin = \"language.pack\"\n\
         path = \"file:packs/estonian\"\n\n[sources.est_web]\nplugin = \"source.jsonl\"\n\
         files = [\"file:packs/estonian/est_Latn.jsonl\"]\nlang = \"est_Latn\"\ndedup = false\n",
    );
    p
}

#[test]
fn a_run_with_a_pack_cleans_with_it_and_its_record_names_the_pack_and_the_linked_crates() {
    let p = estonian_project();
    let languages = p.json(&["languages", "aurora.toml", "--json"]);
    assert_eq!(languages["packs"][0]["code"], "est_Latn");
    assert_eq!(languages["packs"][0]["entry"], "languages.est");
    p.run_ok(&["run", "aurora.toml"]);
    let runs = p.json(&["runs", "list", "--json"]);
    let id = runs.as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    let record = p.json(&["runs", "show", &id, "--json"]);
    assert_eq!(
        record["languages"],
        serde_json::json!([{
            "entry": "languages.est",
            "code": "est_Latn",
            "name": "Estonian",
            "path": "file:packs/estonian",
            "digest": languages["packs"][0]["digest"],
        }])
    );
    let crates: Vec<&str> =
        record["versions"]["crates"].as_array().unwrap().iter().map(|c| c["crate"].as_str().unwrap()).collect();
    for expected in ["aurora-core", "aurora-corpus", "aurora-eval"] {
        assert!(crates.contains(&expected), "{crates:?}");
    }
    // The source ran with the pack's filters: the two bad documents, each by its own filter.
    let nodes = record["nodes"].as_array().unwrap();
    let source = nodes.iter().find(|n| n["id"] == "sources/est_web").unwrap();
    let artifact = source["artifact"].as_str().unwrap();
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(p.artifact_dir(artifact).join("source.json")).unwrap()).unwrap();
    assert_eq!(summary["documents"], 6);
    let removed: Vec<u64> =
        summary["filters"].as_array().unwrap().iter().map(|f| f["removed"].as_u64().unwrap()).collect();
    assert_eq!(removed, [0, 1, 1]);
    let pack_node = nodes.iter().find(|n| n["id"] == "languages/est").unwrap();
    let language_json = p.artifact_dir(pack_node["artifact"].as_str().unwrap()).join("language.json");
    let written: LanguagePack = serde_json::from_str(&std::fs::read_to_string(language_json).unwrap()).unwrap();
    assert_eq!(written, read_pack(&estonian_dir()));
}

/// `aurora plan` on the project after `edit` changed its pack: exit 2, the diagnostics.
fn broken_pack_error(edit: impl FnOnce(&Project)) -> String {
    let p = estonian_project();
    edit(&p);
    let out = p.run(&["plan", "aurora.toml"]);
    common::assert_code(&out, 2, "aurora plan with a broken pack");
    p.redact(&common::stderr(&out))
}

#[test]
fn a_broken_pack_is_a_located_error() {
    let bad_filter = broken_pack_error(|p| {
        let text = p.read("packs/estonian/language.toml");
        p.write("packs/estonian/language.toml", &text.replace("{ max_digit_ratio = 0.2 }", "{ max_digits = 0.2 }"));
    });
    insta::assert_snapshot!("pack_bad_filter", bad_filter);
    let unknown_key = broken_pack_error(|p| {
        let text = p.read("packs/estonian/language.toml");
        p.write("packs/estonian/language.toml", &text.replace("license = ", "licence = "));
    });
    insta::assert_snapshot!("pack_unknown_key", unknown_key);
    let missing_file = broken_pack_error(|p| {
        std::fs::remove_file(p.path("packs/estonian/est_Latn.jsonl")).unwrap();
    });
    insta::assert_snapshot!("pack_missing_corpus", missing_file);
    let no_pack = broken_pack_error(|p| {
        std::fs::remove_file(p.path("packs/estonian/language.toml")).unwrap();
    });
    insta::assert_snapshot!("pack_missing_language_toml", no_pack);
    let two_packs = broken_pack_error(|p| {
        let text = p.read("aurora.toml");
        p.write(
            "aurora.toml",
            &format!("{text}\n[languages.est2]\nplugin = \"language.pack\"\npath = \"file:packs/estonian\"\n"),
        );
    });
    insta::assert_snapshot!("pack_twice", two_packs);
}

#[test]
fn loaded_packs_carry_what_the_record_names() {
    let plan = plan_with(&root().join("experiments/ablations/add-swahili.toml"), &[]);
    let [swahili]: &[LoadedPack] = plan.languages.as_slice() else { panic!("{:?}", plan.languages.len()) };
    assert_eq!(swahili.entry, "languages.swh");
    assert_eq!(swahili.file_ref("swh_Latn.jsonl"), "file:experiments/languages/swahili/swh_Latn.jsonl");
    assert_eq!(swahili.record()["digest"], Value::String(swahili.digest.to_hex()));
}

//! Conformance: one suite instantiated for every registered plugin, and the generated schemas
//! checked against what users' editors see.

// Registration is by linking: the plugins this binary links are the registry under test.
use aurora_corpus as _;
use aurora_eval as _;
use aurora_exec as _;
use aurora_report as _;
use aurora_tokens as _;
use aurora_train_plugins as _;

use aurora_core::plugin::registry;
use serde_json::Value;

/// Adding a plugin crate must be a deliberate, visible change: this list is the registry.
#[test]
fn registry_has_exactly_these_plugins_sorted_and_unique() {
    let ids = registry().ids();
    assert_eq!(
        ids,
        vec![
            "dedup.exact",
            "eval.choice",
            "eval.code",
            "eval.perplexity",
            "eval.safety",
            "exec.command",
            "language.pack",
            "mixer.blend",
            "model.gptbigcode",
            "report.html",
            "scheduler.constant",
            "scheduler.cosine",
            "scheduler.wsd",
            "sft.instructions",
            "source.instructions",
            "source.jsonl",
            "source.megatron",
            "source.parquet",
            "source.text",
            "tokenizer.bpe",
            "tokenizer.encode",
            "tokenizer.file",
            "train.tch",
        ]
    );
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "the registry iterates in id order without duplicates");
}

/// What `aurora_core::testing::check_plugin` requires (the checks a third-party crate runs on its
/// own plugins), for every plugin this binary links.
#[test]
fn every_plugin_is_well_formed() {
    for plugin in registry().iter() {
        aurora_core::testing::check_plugin(plugin);
    }
}

#[test]
fn committed_schemas_match_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    for (rel, content) in aurora_core::schema::schema_files() {
        let on_disk = std::fs::read_to_string(dir.join(&rel)).unwrap_or_default();
        assert!(on_disk == content, "schemas/{rel} is out of date: run `cargo xtask schema`");
    }
}

/// What an editor does with `#:schema ../schemas/manifest.schema.json`: validate the raw file
/// (before resolution, so `extends` and `profiles` are present).
#[test]
fn shipped_manifests_validate_against_the_editor_schema() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("schemas/manifest.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the manifest schema compiles");
    let mut checked = 0;
    for dir in ["experiments", "experiments/ablations"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("#:schema ../"), "{}: must start with a `#:schema` line", path.display());
            let raw: toml::Value = toml::from_str(&text).unwrap();
            // A manifest that extends another is an overlay: what must hold is that the merged
            // result validates (its `[experiment]` and each entry's `plugin` come from the base).
            let json = if raw.get("extends").is_some() {
                aurora_core::manifest::resolve(&path, &aurora_core::manifest::ResolveOptions::default())
                    .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
                    .value
            } else {
                serde_json::to_value(raw).unwrap()
            };
            let errors: Vec<String> =
                validator.iter_errors(&json).map(|e| format!("{e} at {}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 1, "no manifests found");
}

#[test]
fn the_editor_schema_rejects_what_validation_rejects() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("schemas/manifest.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let bad = serde_json::json!({
        "experiment": {"name": "x", "seed": 1},
        "steps": {"a": {"plugin": "exec.command", "argvv": ["true"]}}
    });
    assert!(!validator.is_valid(&bad), "an unknown key inside a plugin entry must be flagged in the editor");
    let good = serde_json::json!({
        "experiment": {"name": "x", "seed": 1},
        "steps": {"a": {"plugin": "exec.command", "argv": ["true"]}}
    });
    assert!(validator.is_valid(&good));
}

/// Every shipped manifest plans under each profile of the study: an ablation that removes a
/// stage must also fix what a profile adds that names it (the paper profile's MBPP evaluation,
/// its own mixture weights).
#[test]
fn shipped_manifests_plan_under_every_profile() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut manifests = vec![root.join("experiments/aurora-m.toml")];
    for entry in std::fs::read_dir(root.join("experiments/ablations")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "toml") {
            manifests.push(entry.path());
        }
    }
    manifests.sort();
    for path in &manifests {
        for profile in ["local", "paper"] {
            let options = aurora_core::manifest::ResolveOptions { profile: Some(profile.into()), sets: Vec::new() };
            let resolved = aurora_core::manifest::resolve(path, &options)
                .unwrap_or_else(|e| panic!("{} -p {profile}: {e}", path.display()));
            let plan = aurora_core::plan::plan(resolved)
                .unwrap_or_else(|e| panic!("{} -p {profile} does not plan:\n{e}", path.display()));
            assert!(!plan.nodes.is_empty());
        }
    }
    assert!(manifests.len() >= 8, "{manifests:?}");
}

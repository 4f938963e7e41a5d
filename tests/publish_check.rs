//! `aurora publish` then `aurora check` in another store, as a reviewer would: every node's key
//! matches and, pulled through the remote, its bytes are identical; after editing one node's
//! config the check names that node and the field, and only it (its dependents are keyed with
//! the bundle's inputs, so they still match); a rerun node is compared byte for byte; bundles of
//! another format, a manifest that is not here and bad tolerances are clear errors.

mod common;

use common::{Project, assert_code, stderr, stdout};
use serde_json::Value;

const MANIFEST: &str = r#"[experiment]
name = "published"
seed = 1

[steps.data]
plugin = "exec.command"
argv = ["sh", "-c", "seq 1 50000 > $AURORA_OUT/data.txt"]

[steps.train]
plugin = "exec.command"
argv = ["sh", "-c", "wc -l < $AURORA_IN_DATA/data.txt > $AURORA_OUT/model.txt"]
inputs = { data = "steps.data" }

[evals.score]
plugin = "exec.command"
argv = ["sh", "-c", "cat $AURORA_IN_MODEL/model.txt > $AURORA_OUT/score.txt"]
inputs = { model = "steps.train" }
"#;

fn author(remote: &str) -> (Project, String) {
    let p = Project::new();
    p.write("m.toml", MANIFEST);
    let report = p.json(&["run", "m.toml", "--json"]);
    let run = report["run_id"].as_str().unwrap().to_string();
    let bundle = p.path("bundle").display().to_string();
    let out = p.run(&["publish", &run, "--to", &bundle, "--remote", remote]);
    assert_code(&out, 0, "publish");
    assert!(stdout(&out).contains("3 nodes"), "{}", stdout(&out));
    (p, bundle)
}

fn verdicts(report: &Value) -> Vec<(String, String, Vec<String>)> {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let details = n["details"].as_array().map(|d| d.iter().map(|x| x.as_str().unwrap().to_string()).collect());
            (
                n["id"].as_str().unwrap().to_string(),
                n["verdict"].as_str().unwrap().to_string(),
                details.unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn a_reviewer_checks_a_published_run_in_another_store() {
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = format!("file://{}", remote_dir.path().display());
    let (_author, bundle) = author(&remote);
    let bundle_json: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{bundle}/bundle.json")).unwrap()).unwrap();
    assert_eq!(bundle_json["format"], "aurora-bundle/1");
    assert_eq!(bundle_json["remote"], remote.as_str());
    assert!(
        bundle_json["manifest"]["files"]
            .as_object()
            .unwrap()
            .values()
            .any(|t| t.as_str().unwrap().contains("[steps.train]"))
    );
    assert!(bundle_json["run"]["git"].is_object());

    let reviewer = Project::new();
    reviewer.write("m.toml", MANIFEST);
    // Keys only: nothing is fetched or run.
    let keys = reviewer.json(&["check", &bundle, "--json"]);
    assert!(verdicts(&keys).iter().all(|(_, v, _)| v == "key_matches"), "{keys}");
    assert!(
        !reviewer.store().join("cas").exists()
            || std::fs::read_dir(reviewer.store().join("cas")).unwrap().next().is_none()
    );
    // Pulled through the bundle's remote: identical bytes.
    let pulled = reviewer.json(&["check", &bundle, "--pull", "--json"]);
    assert!(verdicts(&pulled).iter().all(|(_, v, _)| v == "identical_bytes"), "{pulled}");
    // A rerun node is compared byte for byte.
    let rerun = reviewer.json(&["check", &bundle, "--rerun", "steps/train", "--json"]);
    assert_eq!(verdicts(&rerun)[1].1, "identical_bytes", "{rerun}");

    // The reviewer edits one evaluator: only it differs, and the field is named.
    reviewer.write("m.toml", &MANIFEST.replace("cat $AURORA_IN_MODEL", "cat -n $AURORA_IN_MODEL"));
    let out = reviewer.run(&["check", &bundle]);
    assert_code(&out, 1, "a differing node");
    insta::assert_snapshot!("check_after_editing_an_evaluator", reviewer.redact(&stdout(&out)));
    let json = reviewer.run(&["check", &bundle, "--json"]);
    let v: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(
        verdicts(&v),
        vec![
            ("steps/data".to_string(), "identical_bytes".to_string(), vec![]),
            ("steps/train".to_string(), "identical_bytes".to_string(), vec![]),
            ("evals/score".to_string(), "differs".to_string(), vec!["config changed (argv)".to_string()]),
        ]
    );
}

#[test]
fn bundles_and_arguments_it_cannot_use_are_clear_errors() {
    let remote_dir = tempfile::tempdir().unwrap();
    let (_author, bundle) = author(&format!("file://{}", remote_dir.path().display()));
    let reviewer = Project::new();

    // The manifest is not in this repository.
    let out = reviewer.run(&["check", &bundle]);
    assert_code(&out, 2, "no manifest here");
    let err = stderr(&out);
    assert!(
        err.contains("the bundle's manifest `m.toml` is not here")
            && err.contains("check out the study's repository at commit"),
        "{err}"
    );

    reviewer.write("m.toml", MANIFEST);
    for (args, needle) in [
        (vec!["--tolerance", "loss"], "expected METRIC=RELATIVE"),
        (vec!["--tolerance", "loss=-1"], "is not a relative tolerance"),
        (vec!["--rerun", "steps/nope"], "no such node"),
    ] {
        let mut all = vec!["check", bundle.as_str()];
        all.extend(args);
        let out = reviewer.run(&all);
        assert!(!out.status.success(), "{all:?}");
        assert!(stderr(&out).contains(needle), "{all:?}: {}", stderr(&out));
    }

    // A bundle from a newer aurora.
    let path = format!("{bundle}/bundle.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("\"aurora-bundle/1\"", "\"aurora-bundle/2\"");
    std::fs::write(&path, text).unwrap();
    let out = reviewer.run(&["check", &bundle]);
    assert_code(&out, 1, "a newer bundle");
    assert!(
        stderr(&out).contains("bundle format \"aurora-bundle/2\", but this aurora reads \"aurora-bundle/1\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn publishing_a_run_of_a_changed_manifest_is_refused() {
    let p = Project::new();
    p.write("m.toml", MANIFEST);
    let report = p.json(&["run", "m.toml", "--json"]);
    let run = report["run_id"].as_str().unwrap().to_string();
    p.write("m.toml", &MANIFEST.replace("seq 1 50000", "seq 1 50001"));
    let out = p.run(&["publish", &run, "--to", "bundle"]);
    assert_code(&out, 1, "a changed manifest");
    assert!(stderr(&out).contains("but the manifest now resolves to"), "{}", stderr(&out));
}

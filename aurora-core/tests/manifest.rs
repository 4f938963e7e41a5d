//! Manifest resolution and the manifest digest: invariance under formatting, change under any value.

use std::collections::BTreeMap;
use std::path::Path;

use aurora_core::manifest::{ResolveOptions, resolve};
use proptest::prelude::*;

/// A TOML value tree (the top level is always a table).
#[derive(Debug, Clone)]
enum V {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<V>),
    Table(BTreeMap<String, V>),
}

fn leaf() -> impl Strategy<Value = V> {
    prop_oneof![
        any::<i64>().prop_map(V::Int),
        (-1e12f64..1e12).prop_map(V::Float),
        any::<bool>().prop_map(V::Bool),
        "[a-zA-Z0-9 _äö\"\\\\\\n-]{0,12}".prop_map(V::Str),
    ]
}

fn value() -> impl Strategy<Value = V> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(V::Array),
            prop::collection::btree_map("[a-z][a-z0-9_]{0,6}", inner, 1..4).prop_map(V::Table),
        ]
    })
}

fn manifest_tree() -> impl Strategy<Value = BTreeMap<String, V>> {
    prop::collection::btree_map("[a-z][a-z0-9_]{0,6}", value(), 1..6)
}

fn key(k: &str) -> String {
    serde_json::to_string(k).unwrap()
}

fn scalar(v: &V) -> String {
    match v {
        V::Int(i) => i.to_string(),
        // `{:?}` prints the shortest round-trip form and always marks it as a float.
        V::Float(f) => format!("{f:?}"),
        V::Bool(b) => b.to_string(),
        V::Str(s) => serde_json::to_string(s).unwrap(),
        V::Array(items) => format!("[{}]", items.iter().map(scalar).collect::<Vec<_>>().join(", ")),
        V::Table(t) => {
            format!(
                "{{ {} }}",
                t.iter().map(|(k, v)| format!("{} = {}", key(k), scalar(v))).collect::<Vec<_>>().join(", ")
            )
        }
    }
}

/// Style A: `[section]` headers, keys in sorted order.
fn render_sections(t: &BTreeMap<String, V>, prefix: &str, out: &mut String) {
    for (k, v) in t {
        if !matches!(v, V::Table(_)) {
            out.push_str(&format!("{} = {}\n", key(k), scalar(v)));
        }
    }
    for (k, v) in t {
        if let V::Table(sub) = v {
            let name = if prefix.is_empty() { key(k) } else { format!("{prefix}.{}", key(k)) };
            out.push_str(&format!("\n[{name}]\n"));
            render_sections(sub, &name, out);
        }
    }
}

/// Style B: inline tables, keys in reverse order, comments and odd spacing.
fn render_inline(t: &BTreeMap<String, V>) -> String {
    let mut out = String::from("# a comment that must not matter\n\n");
    for (k, v) in t.iter().rev() {
        let rendered = match v {
            V::Table(sub) => format!(
                "{{   {}   }}",
                sub.iter()
                    .rev()
                    .map(|(k, v)| format!("{}   =   {}", key(k), scalar(v)))
                    .collect::<Vec<_>>()
                    .join(" ,  ")
            ),
            other => scalar(other),
        };
        out.push_str(&format!("   {}={}    # trailing comment\n", key(k), rendered));
    }
    out
}

fn digest_of(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    resolve(&path, &ResolveOptions::default()).unwrap_or_else(|e| panic!("{text}\n{e}")).digest.to_hex()
}

/// Changes one leaf (the `n`-th found in order) to a different value. Returns false if there is none.
fn mutate(t: &mut BTreeMap<String, V>, n: &mut usize) -> bool {
    fn visit(v: &mut V, n: &mut usize) -> bool {
        match v {
            V::Table(t) => t.values_mut().any(|v| visit(v, n)),
            V::Array(items) => items.iter_mut().any(|v| visit(v, n)),
            leaf => {
                if *n > 0 {
                    *n -= 1;
                    return false;
                }
                *leaf = match leaf {
                    V::Int(i) => V::Int(i.wrapping_add(1)),
                    V::Float(f) => V::Float(*f + 1.0),
                    V::Bool(b) => V::Bool(!*b),
                    V::Str(s) => V::Str(format!("{s}x")),
                    _ => unreachable!("containers are handled above"),
                };
                true
            }
        }
    }
    t.values_mut().any(|v| visit(v, n))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn digest_ignores_formatting_order_and_comments(tree in manifest_tree()) {
        let dir = tempfile::tempdir().unwrap();
        let mut a = String::new();
        render_sections(&tree, "", &mut a);
        let b = render_inline(&tree);
        prop_assert_eq!(digest_of(dir.path(), "a.toml", &a), digest_of(dir.path(), "b.toml", &b));
    }

    #[test]
    fn digest_changes_with_any_value(tree in manifest_tree(), pick in 0usize..32) {
        let dir = tempfile::tempdir().unwrap();
        let mut a = String::new();
        render_sections(&tree, "", &mut a);
        let mut changed = tree.clone();
        let mut n = pick;
        prop_assume!(mutate(&mut changed, &mut n));
        let mut b = String::new();
        render_sections(&changed, "", &mut b);
        prop_assert_ne!(digest_of(dir.path(), "a.toml", &a), digest_of(dir.path(), "b.toml", &b));
    }

    #[test]
    fn integer_and_float_are_different_values(i in -1000i64..1000) {
        let dir = tempfile::tempdir().unwrap();
        prop_assert_ne!(
            digest_of(dir.path(), "a.toml", &format!("x = {i}\n")),
            digest_of(dir.path(), "b.toml", &format!("x = {i}.0\n"))
        );
    }
}

fn write(dir: &Path, rel: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn extends_merges_parent_first_and_rewrites_file_refs_per_declaring_file() {
    let dir = tempfile::tempdir().unwrap();
    // A repository makes the temp dir the project root (outside one, it is the manifest's dir).
    git2::Repository::init(dir.path()).unwrap();
    write(
        dir.path(),
        "exp/base.toml",
        "[experiment]\nname = \"base\"\nseed = 1\n[steps.a]\nplugin = \"exec.command\"\nargv = [\"true\"]\ninputs = { raw = \"file:data/raw.txt\" }\nenv = { A = \"1\", B = \"2\" }\n",
    );
    let child = write(
        dir.path(),
        "exp/ablations/child.toml",
        "extends = \"../base.toml\"\n[experiment]\nname = \"child\"\n[steps.a.env]\nB = \"3\"\n[steps.b]\nplugin = \"exec.command\"\nargv = [\"true\"]\ninputs = { x = \"file:local.txt\" }\n",
    );
    let m = resolve(&child, &ResolveOptions::default()).unwrap();
    let v = &m.value;
    assert_eq!(v["experiment"]["name"], "child");
    assert_eq!(v["experiment"]["seed"], 1);
    assert_eq!(v["steps"]["a"]["env"]["A"], "1");
    assert_eq!(v["steps"]["a"]["env"]["B"], "3");
    // Relative to the file that declared them, then to the project root (the temp dir here).
    let root = m.project_root.clone();
    assert_eq!(root, dir.path().canonicalize().unwrap());
    assert_eq!(v["steps"]["a"]["inputs"]["raw"], "file:exp/data/raw.txt");
    assert_eq!(v["steps"]["b"]["inputs"]["x"], "file:exp/ablations/local.txt");
    assert!(v.get("extends").is_none());
}

#[test]
fn profile_deep_merges_and_is_dropped_from_the_resolved_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[experiment]\nname = \"p\"\nseed = 1\ndefault_profile = \"local\"\n[model]\nlayers = 40\nhidden = 6144\n[profiles.local.model]\nlayers = 2\n[profiles.paper]\n";
    let path = write(dir.path(), "m.toml", text);
    let local = resolve(&path, &ResolveOptions::default()).unwrap();
    assert_eq!(local.profile.as_deref(), Some("local"));
    assert_eq!(local.value["model"]["layers"], 2);
    assert_eq!(local.value["model"]["hidden"], 6144);
    assert!(local.value.get("profiles").is_none());
    assert!(local.value["experiment"].get("default_profile").is_none());
    let paper = resolve(&path, &ResolveOptions { profile: Some("paper".into()), sets: vec![] }).unwrap();
    assert_eq!(paper.value["model"]["layers"], 40);
    // Writing the local profile out in full gives the same digest.
    let flat =
        write(dir.path(), "flat.toml", "[experiment]\nname = \"p\"\nseed = 1\n[model]\nhidden = 6144\nlayers = 2\n");
    assert_eq!(resolve(&flat, &ResolveOptions::default()).unwrap().digest, local.digest);
}

#[test]
fn disabled_entries_are_dropped_after_every_merge() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "base.toml",
        "[experiment]\nname = \"b\"\nseed = 1\n[stages.cap]\nplugin = \"x.y\"\n[stages.cat]\nplugin = \"x.y\"\ndisabled = false\n",
    );
    let ablation = write(dir.path(), "no-cat.toml", "extends = \"base.toml\"\n[stages.cat]\ndisabled = true\n");
    let m = resolve(&ablation, &ResolveOptions::default()).unwrap();
    assert!(m.value["stages"].get("cat").is_none(), "{}", m.value);
    assert_eq!(m.value["stages"]["cap"], serde_json::json!({ "plugin": "x.y" }));
    // `disabled = false` is the same as absent (and never reaches the plugin's schema).
    let base = resolve(&dir.path().join("base.toml"), &ResolveOptions::default()).unwrap();
    assert_eq!(base.value["stages"]["cat"], serde_json::json!({ "plugin": "x.y" }));
    // `--set` can re-enable it.
    let sets = vec!["stages.cat.disabled=false".to_string()];
    let m = resolve(&ablation, &ResolveOptions { profile: None, sets }).unwrap();
    assert!(m.value["stages"].get("cat").is_some());
}

#[test]
fn set_overrides_existing_keys_and_parses_toml_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.toml", "[experiment]\nname = \"s\"\nseed = 1\n[model]\nlayers = 4\nname = \"x\"\n");
    let sets =
        vec!["model.layers=8".to_string(), "model.name=hello world".to_string(), "experiment.seed=7".to_string()];
    let m = resolve(&path, &ResolveOptions { profile: None, sets }).unwrap();
    assert_eq!(m.value["model"]["layers"], 8);
    assert_eq!(m.value["model"]["name"], "hello world");
    assert_eq!(m.value["experiment"]["seed"], 7);
}

fn error_of(path: &Path, options: ResolveOptions) -> String {
    let err = resolve(path, &options).expect_err("must fail");
    err.to_string().replace(&path.parent().unwrap().canonicalize().unwrap().display().to_string(), "[DIR]")
}

#[test]
fn set_on_a_missing_key_is_located_and_suggests() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.toml", "[experiment]\nname = \"s\"\nseed = 1\n[model]\nlayers = 4\n");
    let msg = error_of(&path, ResolveOptions { profile: None, sets: vec!["model.layerz=8".into()] });
    insta::assert_snapshot!(msg);
}

#[test]
fn extends_cycle_names_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", "extends = \"b.toml\"\n[experiment]\nname = \"a\"\nseed = 1\n");
    let b = write(dir.path(), "b.toml", "extends = \"a.toml\"\n");
    let msg = error_of(&b, ResolveOptions::default());
    insta::assert_snapshot!(msg);
}

#[test]
fn unknown_profile_lists_the_available_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        write(dir.path(), "m.toml", "[experiment]\nname = \"s\"\nseed = 1\n[profiles.local]\n[profiles.paper]\n");
    let msg = error_of(&path, ResolveOptions { profile: Some("papr".into()), sets: vec![] });
    insta::assert_snapshot!(msg);
}

#[test]
fn non_finite_floats_are_rejected_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.toml", "[experiment]\nname = \"s\"\nseed = 1\n[model]\nlr = nan\n");
    let msg = error_of(&path, ResolveOptions::default());
    insta::assert_snapshot!(msg);
}

#[test]
fn outside_a_repository_an_ablation_shares_its_base_project_root() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "exp/base.toml", "[experiment]\nname = \"base\"\nseed = 1\n");
    let child = write(dir.path(), "exp/ablations/child.toml", "extends = \"../base.toml\"\n");
    let m = resolve(&child, &ResolveOptions::default()).unwrap();
    assert_eq!(m.project_root, dir.path().canonicalize().unwrap().join("exp"));
}

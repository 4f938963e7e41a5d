//! A plugin crate outside aurora's workspace (tests/fixtures/third-party-plugin) extends aurora
//! without editing it: its binary is `aurora::main` plus its crate, and its own tests run
//! aurora's conformance suite.
//!
//! The fixture is built with cargo, offline, in `<target>/third-party-plugin` (not the workspace
//! target dir, whose lock `cargo test` holds while tests run); that dir persists, so only the
//! first run compiles aurora's dependency tree (minutes).

// Linking the aurora library links every built-in plugin: this test's registry is the aurora
// binary's, which the fixture's binary must list plus its own plugin.
use aurora as _;

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    workspace().join(target).join("third-party-plugin")
}

/// The fixture in a temporary directory, its path dependencies made absolute and the
/// workspace's Cargo.lock beside it (the versions aurora is tested with; nothing to download),
/// so nothing is written into the source tree.
fn copy_fixture(to: &Path) {
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            let name = entry.file_name();
            if name == "target" || name == "Cargo.lock" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &to.join(&name));
            } else {
                std::fs::copy(entry.path(), to.join(&name)).unwrap();
            }
        }
    }
    copy_dir(&workspace().join("tests/fixtures/third-party-plugin"), to);
    let manifest = std::fs::read_to_string(to.join("Cargo.toml")).unwrap();
    let root = workspace().display().to_string();
    std::fs::write(to.join("Cargo.toml"), manifest.replace("path = \"../../..", &format!("path = \"{root}"))).unwrap();
    std::fs::copy(workspace().join("Cargo.lock"), to.join("Cargo.lock")).unwrap();
}

fn cargo(dir: &Path, args: &[&str]) {
    let manifest = dir.join("Cargo.toml");
    let target = target_dir();
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).arg("--offline").arg("--manifest-path").arg(&manifest).arg("--target-dir").arg(&target);
    // What cargo set for this test process describes aurora's package, not the fixture's.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let ours = ["OUT_DIR", "CARGO_PKG_", "CARGO_BIN_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_TARGET_TMPDIR"];
        if ours.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(&*key);
        }
    }
    eprintln!("running {cmd:?}");
    let started = std::time::Instant::now();
    let status = cmd.status().unwrap();
    eprintln!("  {status} after {:.1}s", started.elapsed().as_secs_f64());
    assert!(status.success(), "{cmd:?} failed: {status}");
}

#[test]
fn a_crate_outside_the_workspace_adds_a_plugin_to_aurora() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    cargo(dir.path(), &["build"]);

    let binary = target_dir().join("debug/third-party-plugin");
    let list = Command::new(&binary).args(["plugins", "--json"]).output().unwrap();
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let find = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("{id} is not listed: {list:#}"))
    };
    assert_eq!(find("text.upper")["kind"], "text", "a kind aurora does not know");
    assert_eq!(find("text.upper")["provider"]["crate"], "third-party-plugin");
    // The built-ins are all there, by calling `aurora::main` only.
    assert_eq!(find("source.jsonl")["provider"]["crate"], "aurora-corpus");
    assert_eq!(find("exec.command")["provider"]["crate"], "aurora-exec");
    assert_eq!(list.as_array().unwrap().len(), aurora_core::plugin::registry().ids().len() + 1);

    let text = Command::new(&binary).arg("plugins").output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("text.upper ") && l.contains(" third-party-plugin ")), "{text}");

    // A manifest using it runs with the third party's binary like any other.
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("in.txt"), "shout\n").unwrap();
    std::fs::write(
        project.path().join("m.toml"),
        "[experiment]\nname = \"up\"\nseed = 1\n[text.loud]\nplugin = \"text.upper\"\ninput = \"file:in.txt\"\n",
    )
    .unwrap();
    let run = Command::new(&binary)
        .args(["run", "m.toml", "--json"])
        .current_dir(project.path())
        .env_remove("AURORA_STORE")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let run: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let artifact: aurora_core::Digest = run["nodes"][0]["artifact"].as_str().unwrap().parse().unwrap();
    let store = aurora_core::Store::open(&project.path().join(".aurora")).unwrap();
    assert_eq!(std::fs::read_to_string(store.artifact_dir(&artifact).join("out.txt")).unwrap(), "SHOUT\n");

    cargo(dir.path(), &["test"]);
}

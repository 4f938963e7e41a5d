//! Plugins find each other's outputs through typed lookups (`PlanContext::offering`, `offer`,
//! `input_of`, `languages`), never by another plugin's section names or node ids: this test greps
//! the plugin crates' code (not their tests or comments) for the ones that used to be hard-coded.

use std::path::{Path, PathBuf};

/// Patterns that name sections or node ids of the shipped study, and the one crate (if any)
/// that owns each.
const FORBIDDEN: &[(&str, Option<&str>)] = &[
    ("\"sources/", None),
    ("\"tokenizers/", None),
    ("\"stages/", None),
    ("\"sft/", None),
    ("\"mixtures/", None),
    ("\"evals/", None),
    ("\"reports/", None),
    ("\"languages/", None),
    ("\"models/", None),
    ("\"steps/", None),
    ("\"dedup/exact\"", Some("plugins/corpus")),
    ("\"tokens/{", Some("plugins/tokens")),
    ("[\"sources\"]", None),
    ("[\"tokenizers\"]", None),
    ("[\"stages\"]", None),
    ("[\"sft\"]", None),
    ("get(\"sources\")", None),
    ("get(\"tokenizers\")", None),
    ("get(\"stages\")", None),
    ("get(\"sft\")", None),
    ("\"stages\", \"sft\"", None),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of a source file's code: up to its `#[cfg(test)]` module, without comments.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, line)| line.trim() != "#[cfg(test)]")
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(i, line)| (i + 1, line))
}

#[test]
fn no_plugin_crate_names_another_plugins_sections_or_node_ids() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut crates: Vec<PathBuf> =
        std::fs::read_dir(root.join("plugins")).unwrap().flatten().map(|e| e.path()).collect();
    crates.push(root.join("slurm-executor"));
    crates.sort();
    let mut found = Vec::new();
    let mut scanned = 0;
    for krate in &crates {
        let owner = krate.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for file in files {
            scanned += 1;
            let text = std::fs::read_to_string(&file).unwrap();
            for (line_no, line) in code_lines(&text) {
                for (pattern, allowed_in) in FORBIDDEN {
                    if line.contains(pattern) && *allowed_in != Some(owner.as_str()) {
                        found.push(format!(
                            "{}:{line_no}: {pattern} in `{}`",
                            file.strip_prefix(root).unwrap().display(),
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(scanned > 50, "only {scanned} files scanned");
    assert!(found.is_empty(), "plugins must use PlanContext's typed lookups instead:\n{}", found.join("\n"));
}

#[test]
fn the_scan_sees_a_hard_coded_section_and_skips_comments_and_tests() {
    let text =
        "let a = 1;\n// \"sources/x\" in a comment\nlet b = v[\"sources\"];\n#[cfg(test)]\nlet c = \"stages/x\";\n";
    let lines: Vec<(usize, &str)> = code_lines(text).collect();
    assert_eq!(lines, [(1, "let a = 1;"), (3, "let b = v[\"sources\"];")]);
}

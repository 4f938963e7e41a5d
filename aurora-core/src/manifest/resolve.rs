//! Resolution: `extends` chains, then the selected profile, then `--set` overrides.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::diagnostic::{Diagnostic, Diagnostics, Origin, SourceFile, suggestion};
use crate::manifest::tree::{LoadCtx, Sourced, Tree};

/// Keys with a meaning to resolution itself; everything else at the top level is a section.
pub const EXTENDS: &str = "extends";
pub const PROFILES: &str = "profiles";

pub(crate) struct Loaded {
    pub tree: Sourced,
}

/// Shows `path` relative to the current directory when it is below it.
pub fn display_path(path: &Path) -> String {
    let cwd = std::env::current_dir().ok().and_then(|d| d.canonicalize().ok());
    match cwd.as_deref().and_then(|cwd| path.strip_prefix(cwd).ok()) {
        Some(rel) => rel.to_string_lossy().into_owned(),
        None => path.to_string_lossy().into_owned(),
    }
}

/// Loads `path` and everything it extends, merged parent-first.
pub(crate) fn load_chain(
    path: &Path,
    project_root: &Path,
    stack: &mut Vec<PathBuf>,
    referenced_from: Option<Origin>,
) -> Result<Loaded, Diagnostics> {
    let abs = path.canonicalize().map_err(|e| {
        Diagnostic::new(format!("cannot read manifest `{}`: {e}", path.display()))
            .at(referenced_from.clone())
            .help("check the path; `extends` paths are relative to the file that declares them")
    })?;
    if let Some(pos) = stack.iter().position(|p| p == &abs) {
        let chain: Vec<String> = stack[pos..].iter().chain(std::iter::once(&abs)).map(|p| display_path(p)).collect();
        return Err(Diagnostic::new(format!("`extends` cycle: {}", chain.join(" -> ")))
            .at(referenced_from)
            .help("remove one of the `extends` lines so that the chain ends in a manifest without `extends`")
            .into());
    }
    let text = std::fs::read_to_string(&abs).map_err(|e| {
        Diagnostic::new(format!("cannot read manifest `{}`: {e}", display_path(&abs)))
            .at(referenced_from.clone())
            .help("the manifest must be a readable UTF-8 TOML file")
    })?;
    let file = Arc::new(SourceFile { display: display_path(&abs), text });
    let doc = toml_edit::Document::parse(file.text.clone()).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        Diagnostic::new(format!("invalid TOML: {}", e.message().trim_end()))
            .at(Some(Origin::File { file: file.clone(), span }))
            .help("fix the TOML syntax at the marked position")
    })?;
    let dir = abs.parent().expect("a file has a parent directory").to_path_buf();
    let ctx = LoadCtx { file: file.clone(), dir: &dir, project_root };
    let mut tree = ctx.table(doc.as_table(), Some(0..0))?;

    let extends = tree.as_table_mut().expect("root is a table").remove(EXTENDS);
    let Some(extends) = extends else {
        return Ok(Loaded { tree });
    };
    let parent_rel = match &extends.tree {
        // `file:` rewriting does not apply to `extends`; the raw string is relative to this file.
        Tree::Leaf(serde_json::Value::String(s)) => s.clone(),
        _ => {
            return Err(Diagnostic::new("`extends` must be a string")
                .at(Some(extends.origin))
                .expected("a path to another manifest, relative to this file, e.g. \"../aurora-m.toml\"")
                .into());
        }
    };
    stack.push(abs.clone());
    let parent = load_chain(&dir.join(&parent_rel), project_root, stack, Some(extends.origin));
    stack.pop();
    let mut parent = parent?.tree;
    parent.merge(tree);
    Ok(Loaded { tree: parent })
}

/// Applies the profile `name` from the merged `profiles` table (removing the table).
pub(crate) fn apply_profile(tree: &mut Sourced, name: Option<&str>) -> Result<(), Diagnostics> {
    let root = tree.as_table_mut().expect("root is a table");
    let profiles = root.remove(PROFILES);
    let Some(name) = name else {
        return Ok(());
    };
    let available: Vec<String> =
        profiles.as_ref().and_then(Sourced::as_table).map(|t| t.keys().cloned().collect()).unwrap_or_default();
    let profile = profiles.and_then(|p| match p.tree {
        Tree::Table(mut t) => t.remove(name),
        _ => None,
    });
    let Some(profile) = profile else {
        let names: Vec<&str> = available.iter().map(String::as_str).collect();
        return Err(Diagnostic::new(format!("no profile named `{name}`"))
            .expected(if names.is_empty() {
                "a `[profiles.NAME]` table in the manifest".to_string()
            } else {
                format!("one of the manifest's profiles: {}", crate::diagnostic::quoted_list(&names))
            })
            .help(if names.is_empty() {
                format!("this manifest defines no profiles; add `[profiles.{name}]`, or drop `--profile`")
            } else {
                suggestion(name, &names)
            })
            .into());
    };
    if profile.as_table().is_none() {
        return Err(Diagnostic::new(format!("profile `{name}` must be a table"))
            .at(Some(profile.origin))
            .expected("`[profiles.NAME]` with the same structure as the manifest")
            .into());
    }
    tree.merge(profile);
    Ok(())
}

/// Applies one `--set a.b.c=VALUE`. The key must already exist (a typo must not silently add a key).
pub(crate) fn apply_set(tree: &mut Sourced, arg: &str, cwd: &Path, project_root: &Path) -> Result<(), Diagnostics> {
    let file = Arc::new(SourceFile { display: "--set".to_string(), text: arg.to_string() });
    let whole = Origin::File { file: file.clone(), span: 0..arg.len() };
    let Some((key, raw)) = arg.split_once('=') else {
        return Err(Diagnostic::new(format!("`--set {arg}` has no `=`"))
            .at(Some(whole))
            .expected("`--set KEY.PATH=VALUE`, e.g. `--set experiment.seed=7`")
            .help("write the new value after `=`; TOML syntax is accepted (`[1, 2]`, `true`, `\"text\"`)")
            .into());
    };
    let segments: Vec<&str> = key.trim().split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(Diagnostic::new(format!("`--set {arg}`: empty key segment"))
            .at(Some(whole))
            .expected("dot-separated keys such as `steps.clean.env.LC_ALL`")
            .into());
    }
    let value_span = key.len() + 1..arg.len();
    // A bare word that is not TOML (e.g. `--set x.name=hello`) is taken as a string.
    let parsed = toml_edit::Value::from_str(raw.trim()).unwrap_or_else(|_| toml_edit::Value::from(raw.to_string()));
    let ctx = LoadCtx { file: file.clone(), dir: cwd, project_root };
    let mut table = toml_edit::Table::new();
    table.insert("v", toml_edit::Item::Value(parsed));
    let mut new_value = ctx.table(&table, None)?.as_table_mut().and_then(|t| t.remove("v")).expect("inserted above");
    new_value.origin = Origin::File { file: file.clone(), span: value_span };
    new_value.key_origin = Some(Origin::File { file, span: 0..key.len() });

    let mut node = tree;
    for (i, seg) in segments.iter().enumerate() {
        let path_so_far = segments[..i].join(".");
        let Some(table) = node.as_table_mut() else {
            return Err(Diagnostic::new(format!("`--set {arg}`: `{path_so_far}` is not a table"))
                .at(Some(whole))
                .help("only keys inside tables can be set")
                .into());
        };
        if !table.contains_key(*seg) {
            let names: Vec<&str> = table.keys().map(String::as_str).collect();
            let place = if path_so_far.is_empty() { "the manifest".to_string() } else { format!("`{path_so_far}`") };
            return Err(Diagnostic::new(format!("`--set {arg}`: {place} has no key `{seg}`"))
                .at(Some(whole))
                .expected("a key that exists in the resolved manifest (after extends and profile)")
                .help(format!("{} (`--set` only changes keys; add new ones in the manifest)", suggestion(seg, &names)))
                .into());
        }
        if i + 1 == segments.len() {
            table.insert(seg.to_string(), new_value);
            return Ok(());
        }
        node = table.get_mut(*seg).expect("checked above");
    }
    unreachable!("segments is non-empty")
}

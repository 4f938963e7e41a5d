//! Validation of a resolved manifest: its structure, and every entry against its plugin's JSON
//! Schema (with the `jsonschema` crate). Every error is mapped back to the TOML that caused it.

use serde_json::Value;

use crate::diagnostic::{Diagnostic, Diagnostics, quoted_list, suggestion};
use crate::manifest::tree::{SourceMap, escape_pointer};
use crate::manifest::{Experiment, ResolvedManifest};
use crate::plugin::{Plugin, registry};

/// The reserved top-level table; every other top-level key is a section of plugin entries.
pub const EXPERIMENT: &str = "experiment";
/// The key naming an entry's plugin.
pub const PLUGIN_KEY: &str = "plugin";

/// Checks the whole manifest and returns every problem found (not just the first).
pub fn validate(manifest: &ResolvedManifest) -> Result<(), Diagnostics> {
    let mut problems = Vec::new();
    let Some(root) = manifest.value.as_object() else {
        return Err(Diagnostic::new("a manifest must be a TOML table").into());
    };
    match root.get(EXPERIMENT) {
        None => problems.push(
            Diagnostic::new("the manifest has no `[experiment]` table")
                .at(manifest.sources.value(""))
                .expected("`[experiment]` with at least `name` and `seed`")
                .help("add:\n       [experiment]\n       name = \"my-study\"\n       seed = 1234"),
        ),
        Some(exp) => {
            let schema = schemars::schema_for!(Experiment);
            problems.extend(schema_errors(manifest, schema.as_value(), exp, &format!("/{EXPERIMENT}")));
        }
    }
    for (section, entries) in root {
        if section == EXPERIMENT {
            continue;
        }
        problems.extend(validate_section(manifest, section, entries));
    }
    if problems.is_empty() { Ok(()) } else { Err(Diagnostics(problems)) }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn validate_section(manifest: &ResolvedManifest, section: &str, entries: &Value) -> Vec<Diagnostic> {
    let pointer = format!("/{}", escape_pointer(section));
    let Some(entries) = entries.as_object() else {
        let close = crate::diagnostic::did_you_mean(section, [EXPERIMENT]);
        return vec![
            Diagnostic::new(format!("unknown top-level key `{section}`"))
                .at(manifest.sources.key(&pointer))
                .pointer(pointer)
                .expected(
                    "`[experiment]`, `extends`, `[profiles.NAME]`, or a section of plugin entries `[SECTION.NAME]`",
                )
                .help(match close {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => "plugin entries look like `[steps.clean]` with `plugin = \"exec.command\"`".into(),
                }),
        ];
    };
    let mut problems = Vec::new();
    if !valid_name(section) {
        problems.push(
            Diagnostic::new(format!("invalid section name `{section}`"))
                .at(manifest.sources.key(&pointer))
                .pointer(pointer.clone())
                .expected("letters, digits, `_` and `-` (it becomes part of node ids)"),
        );
    }
    for (name, entry) in entries {
        let entry_pointer = format!("{pointer}/{}", escape_pointer(name));
        if !valid_name(name) {
            problems.push(
                Diagnostic::new(format!("invalid entry name `{section}.{name}`"))
                    .at(manifest.sources.key(&entry_pointer))
                    .pointer(entry_pointer.clone())
                    .expected("letters, digits, `_` and `-` (node ids are `SECTION/NAME`)"),
            );
            continue;
        }
        problems.extend(validate_entry(manifest, section, name, entry, &entry_pointer));
    }
    problems
}

fn validate_entry(
    manifest: &ResolvedManifest,
    section: &str,
    name: &str,
    entry: &Value,
    pointer: &str,
) -> Vec<Diagnostic> {
    let Some(table) = entry.as_object() else {
        return vec![
            Diagnostic::new(format!("`{section}.{name}` must be a table with a `plugin` key"))
                .at(manifest.sources.value(pointer))
                .pointer(pointer)
                .expected(format!("`[{section}.{name}]` with `plugin = \"KIND.NAME\"` and the plugin's settings")),
        ];
    };
    let ids = registry().ids();
    let plugin_id = match table.get(PLUGIN_KEY) {
        Some(Value::String(id)) => id,
        Some(_) => {
            return vec![
                Diagnostic::new(format!("`{section}.{name}.plugin` must be a string"))
                    .at(manifest.sources.value(&format!("{pointer}/{PLUGIN_KEY}")))
                    .pointer(format!("{pointer}/{PLUGIN_KEY}"))
                    .expected(format!("one of {}", quoted_list(&ids))),
            ];
        }
        None => {
            return vec![
                Diagnostic::new(format!("`{section}.{name}` has no `plugin` key"))
                    .at(manifest.sources.key(pointer))
                    .pointer(pointer)
                    .expected(format!("`plugin = \"KIND.NAME\"`, one of {}", quoted_list(&ids)))
                    .help("see `aurora plugins` for what each plugin does"),
            ];
        }
    };
    let Some(plugin) = registry().get(plugin_id) else {
        let plugin_pointer = format!("{pointer}/{PLUGIN_KEY}");
        return vec![
            Diagnostic::new(format!("unknown plugin `{plugin_id}` in `{section}.{name}`"))
                .at(manifest.sources.value(&plugin_pointer))
                .pointer(plugin_pointer)
                .expected(format!("a registered plugin: {}", quoted_list(&ids)))
                .help(format!(
                    "{} (a plugin from another crate must be linked into the binary: see `aurora plugins`)",
                    suggestion(plugin_id, &ids)
                )),
        ];
    };
    let config = entry_config(entry);
    let schema = plugin.config_schema();
    schema_errors(manifest, schema.as_value(), &config, pointer)
        .into_iter()
        .map(|d| match d.help {
            None => d.help(format!("see `aurora schema` or schemas/plugins/{}.schema.json", plugin.id())),
            Some(_) => d,
        })
        .collect()
}

/// An entry's table without the `plugin` key: the plugin's config.
pub fn entry_config(entry: &Value) -> Value {
    let mut config = entry.clone();
    if let Some(obj) = config.as_object_mut() {
        obj.remove(PLUGIN_KEY);
    }
    config
}

/// Validates `instance` (found at `base_pointer` in the manifest) against `schema`.
pub fn schema_errors(
    manifest: &ResolvedManifest,
    schema: &Value,
    instance: &Value,
    base_pointer: &str,
) -> Vec<Diagnostic> {
    schema_errors_in(&manifest.sources, "the manifest", schema, instance, base_pointer)
}

/// Validates `instance` (found at `base_pointer` of a file whose origins are `sources`: a
/// manifest, a language pack) against `schema`; `whole` names the file's root in messages.
pub fn schema_errors_in(
    sources: &SourceMap,
    whole: &str,
    schema: &Value,
    instance: &Value,
    base_pointer: &str,
) -> Vec<Diagnostic> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => {
            // A plugin shipped an invalid schema: a plugin bug, reported as such.
            return vec![
                Diagnostic::new(format!("the schema for `{base_pointer}` is invalid: {e}"))
                    .help("this is a bug in the plugin; please report it"),
            ];
        }
    };
    let mut out = Vec::new();
    for error in validator.iter_errors(instance) {
        let pointer = format!("{base_pointer}{}", error.instance_path().as_str());
        let place = if pointer.is_empty() { whole.to_string() } else { pointer_to_dotted(&pointer) };
        match error.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = allowed_properties(schema, error.schema_path().as_str());
                let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
                for key in unexpected {
                    let key_pointer = format!("{pointer}/{}", escape_pointer(key));
                    let mut d = Diagnostic::new(format!("unknown key `{key}` in `{place}`"))
                        .at(sources.key(&key_pointer))
                        .pointer(key_pointer);
                    if !allowed.is_empty() {
                        d = d.expected(format!("one of {}", quoted_list(&allowed))).help(suggestion(key, &allowed));
                    }
                    out.push(d);
                }
            }
            jsonschema::error::ValidationErrorKind::Required { property } => {
                let key = property.as_str().map(str::to_string).unwrap_or_else(|| property.to_string());
                out.push(
                    Diagnostic::new(format!("missing key `{key}` in `{place}`"))
                        .at(sources.key(&pointer))
                        .pointer(pointer)
                        .expected(format!("`{key} = ...`"))
                        .help(format!("add `{key}`; see the schema for its meaning")),
                );
            }
            _ => {
                let expected = expected_from_schema(schema, error.schema_path().as_str());
                let mut d = Diagnostic::new(format!("invalid value for `{place}`: {error}"))
                    .at(sources.value(&pointer))
                    .pointer(pointer);
                if let Some(expected) = expected {
                    d = d.expected(expected);
                }
                out.push(d);
            }
        }
    }
    out
}

/// `/steps/clean/argv/0` -> `steps.clean.argv[0]`
pub fn pointer_to_dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.chars().all(|c| c.is_ascii_digit()) && !seg.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() { "the manifest".to_string() } else { out }
}

/// Follows a schema path (as reported by jsonschema) through `$ref`s to the schema object it names.
fn schema_at<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = schema;
    for seg in path.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg == "$ref" {
            let target = node.get("$ref")?.as_str()?.strip_prefix('#')?;
            node = schema.pointer(target)?;
            continue;
        }
        node = match node {
            Value::Object(o) => o.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn allowed_properties(schema: &Value, schema_path: &str) -> Vec<String> {
    let parent = schema_path.rsplit_once('/').map_or("", |(p, _)| p);
    schema_at(schema, parent)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn expected_from_schema(schema: &Value, schema_path: &str) -> Option<String> {
    let parent = schema_path.rsplit_once('/').map_or("", |(p, _)| p);
    let node = schema_at(schema, parent)?;
    let mut parts = Vec::new();
    if let Some(t) = node.get("type") {
        parts.push(format!("type {t}"));
    }
    if let Some(e) = node.get("enum") {
        parts.push(format!("one of {e}"));
    }
    for k in ["minimum", "maximum", "exclusiveMinimum", "minItems", "minLength", "pattern"] {
        if let Some(v) = node.get(k) {
            parts.push(format!("{k} {v}"));
        }
    }
    if let Some(d) = node.get("description").and_then(Value::as_str) {
        parts.push(format!("({d})"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// All plugin entries of a validated manifest, in (section, name) order.
pub fn entries(manifest: &ResolvedManifest) -> Vec<(String, String, &'static dyn Plugin, Value)> {
    let mut out = Vec::new();
    let Some(root) = manifest.value.as_object() else { return out };
    for (section, entries) in root {
        if section == EXPERIMENT {
            continue;
        }
        let Some(entries) = entries.as_object() else { continue };
        for (name, entry) in entries {
            let plugin = entry.get(PLUGIN_KEY).and_then(Value::as_str).and_then(|id| registry().get(id));
            if let Some(plugin) = plugin {
                out.push((section.clone(), name.clone(), plugin, entry_config(entry)));
            }
        }
    }
    out
}

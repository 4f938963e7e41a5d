//! Generated JSON Schemas: `schemas/manifest.schema.json` (what editors validate manifests with)
//! and one `schemas/plugins/<id>.schema.json` per registered plugin config.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::manifest::Experiment;
use crate::manifest::{ABOUT_KEY, DISABLED_KEY, SLURM_KEY};
use crate::plugin::{Plugin, registry};
use crate::validate::{EXPERIMENT, PLUGIN_KEY};

/// A plugin's config schema as a standalone document.
pub fn plugin_schema(plugin: &dyn Plugin) -> Value {
    let mut schema = plugin.config_schema().to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), Value::String(format!("{} config", plugin.id())));
        obj.insert("description".into(), Value::String(plugin.description().to_string()));
    }
    schema
}

/// Moves a root schema's `$defs` into `defs` under `prefix.NAME`, rewriting its `$ref`s, and returns
/// the root without `$defs`/`$schema`.
fn hoist(mut schema: Value, prefix: &str, defs: &mut Map<String, Value>) -> Value {
    let local = schema.as_object_mut().and_then(|o| o.remove("$defs"));
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("$schema");
    }
    rewrite_refs(&mut schema, prefix);
    if let Some(Value::Object(local)) = local {
        for (name, mut def) in local {
            rewrite_refs(&mut def, prefix);
            defs.insert(format!("{prefix}.{name}"), def);
        }
    }
    schema
}

fn rewrite_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                if k == "$ref"
                    && let Some(name) = v.as_str().and_then(|r| r.strip_prefix("#/$defs/"))
                {
                    *v = Value::String(format!("#/$defs/{prefix}.{name}"));
                } else {
                    rewrite_refs(v, prefix);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, prefix)),
        _ => {}
    }
}

/// The schema of a per-entry table of string fields that stays out of every key (`about`, `slurm`).
fn side_table_schema(description: &str, fields: &[(&str, &str)]) -> Value {
    let properties: Map<String, Value> = fields
        .iter()
        .map(|(name, what)| (name.to_string(), json!({ "type": "string", "description": what })))
        .collect();
    json!({ "type": "object", "description": description, "additionalProperties": false, "properties": properties })
}

fn about_schema() -> Value {
    side_table_schema(
        "Where this entry's data comes from (documentation: listed by `aurora plan --inputs`, never part of a key).",
        &[
            ("origin", "The public origin: a data set id, a URL, a paper."),
            ("revision", "The revision or version of the origin, where known."),
            ("license", "The licence of the data."),
            ("note", "Anything else a reader must know, e.g. which shares are chosen here."),
        ],
    )
}

fn slurm_schema() -> Value {
    side_table_schema(
        "How `aurora run --executor slurm` submits this entry's nodes (`sbatch --FIELD=VALUE`; defaults from sbatch's own SBATCH_* variables). Never part of a key.",
        &[
            ("partition", "The partition (`sbatch --partition`)."),
            ("account", "The account charged (`sbatch --account`)."),
            ("time", "The time limit, e.g. `48:00:00` or `2-00:00:00` (`sbatch --time`)."),
            ("qos", "The quality of service (`sbatch --qos`)."),
            ("constraint", "Node features required (`sbatch --constraint`)."),
        ],
    )
}

fn disabled_schema() -> Value {
    json!({ "type": "boolean", "description": "`true` removes this entry after extends, profiles and `--set` are merged (e.g. an ablation dropping an inherited stage)." })
}

/// The manifest schema: `[experiment]`, `extends`, `[profiles.*]`, and sections of plugin entries
/// whose settings are checked against the schema of the plugin they name.
pub fn manifest_schema() -> Value {
    let mut defs = Map::new();
    let experiment = hoist(schemars::schema_for!(Experiment).to_value(), "experiment", &mut defs);
    defs.insert("experiment".into(), experiment);
    let ids: Vec<&str> = registry().ids();
    let mut branches = Vec::new();
    for plugin in registry().iter() {
        let mut config = hoist(plugin_schema(plugin), plugin.id(), &mut defs);
        if let Some(props) = config.as_object_mut().and_then(|o| o.get_mut("properties")).and_then(Value::as_object_mut)
        {
            props.insert(PLUGIN_KEY.into(), json!({ "const": plugin.id() }));
            props.insert(DISABLED_KEY.into(), disabled_schema());
            props.insert(ABOUT_KEY.into(), about_schema());
            props.insert(SLURM_KEY.into(), slurm_schema());
        }
        defs.insert(plugin.id().to_string(), config);
        branches.push(json!({
            "if": { "properties": { PLUGIN_KEY: { "const": plugin.id() } }, "required": [PLUGIN_KEY] },
            "then": { "$ref": format!("#/$defs/{}", plugin.id()) }
        }));
    }
    defs.insert(
        "entry".into(),
        json!({
            "type": "object",
            "description": "A plugin entry: `plugin = \"KIND.NAME\"` and that plugin's settings.",
            "required": [PLUGIN_KEY],
            "properties": {
                PLUGIN_KEY: { "type": "string", "enum": ids, "description": "The registered plugin that plans and executes this entry (see `aurora plugins`)." },
                DISABLED_KEY: disabled_schema(),
                ABOUT_KEY: about_schema(),
                SLURM_KEY: slurm_schema(),
            },
            "allOf": branches,
        }),
    );
    let name_pattern = "^[A-Za-z0-9_-]+$";
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://aurora.invalid/schemas/manifest.schema.json",
        "title": "aurora manifest",
        "description": "An aurora experiment: `[experiment]`, optional `extends` and `[profiles.NAME]`, and sections of plugin entries `[SECTION.NAME]`.",
        "type": "object",
        "required": [EXPERIMENT],
        "properties": {
            EXPERIMENT: { "$ref": "#/$defs/experiment" },
            "extends": { "type": "string", "description": "Path of a manifest this one extends, relative to this file. Its values are overridden by this file's." },
            "profiles": {
                "type": "object",
                "description": "Named overrides deep-merged over the manifest by `--profile NAME` (or `experiment.default_profile`).",
                "additionalProperties": { "type": "object" }
            }
        },
        "propertyNames": { "pattern": name_pattern },
        "additionalProperties": {
            "type": "object",
            "description": "A section: entries `[SECTION.NAME]`, each a plugin entry. Node ids are `SECTION/NAME`.",
            "propertyNames": { "pattern": name_pattern },
            "additionalProperties": { "$ref": "#/$defs/entry" }
        },
        "$defs": defs,
    })
}

/// Every generated schema file by path relative to `schemas/`, as pretty JSON with a final newline.
pub fn schema_files() -> BTreeMap<String, String> {
    let pretty = |v: &Value| format!("{}\n", serde_json::to_string_pretty(v).expect("JSON values serialise"));
    let mut files = BTreeMap::new();
    files.insert("manifest.schema.json".to_string(), pretty(&manifest_schema()));
    // What editors validate a language pack's `language.toml` with.
    let mut language = schemars::schema_for!(crate::language::LanguagePack).to_value();
    language["title"] = Value::String("aurora language pack (language.toml)".into());
    files.insert("language.schema.json".to_string(), pretty(&language));
    for plugin in registry().iter() {
        files.insert(format!("plugins/{}.schema.json", plugin.id()), pretty(&plugin_schema(plugin)));
    }
    files
}

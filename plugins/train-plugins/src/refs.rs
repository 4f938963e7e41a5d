//! References from one entry to another (`model = "models.tiny"`), checked at plan time.

use aurora_core::diagnostic::{Diagnostic, suggestion};
use aurora_core::plugin::PlanContext;
use aurora_core::validate::PLUGIN_KEY;
use serde_json::Value;

/// An entry another entry refers to.
#[derive(Clone)]
pub(crate) struct Referenced {
    pub section: String,
    pub name: String,
    pub plugin: String,
    /// The entry's table without `plugin` (as its own plugin sees it).
    pub config: Value,
}

impl Referenced {
    pub fn node_id(&self) -> String {
        format!("{}/{}", self.section, self.name)
    }
}

/// Every entry whose plugin is one of `plugins`, as `SECTION.NAME`.
fn candidates(manifest: &Value, plugins: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (section, entries) in manifest.as_object().into_iter().flatten() {
        for (name, entry) in entries.as_object().into_iter().flatten() {
            if entry.get(PLUGIN_KEY).and_then(Value::as_str).is_some_and(|p| plugins.contains(&p)) {
                out.push(format!("{section}.{name}"));
            }
        }
    }
    out
}

/// The entry `reference` (`"SECTION.NAME"`) names, which must use one of `plugins`; otherwise a
/// diagnostic at the value under `pointer`, with the closest valid reference.
pub(crate) fn resolve(
    ctx: &PlanContext<'_>,
    pointer: &str,
    field: &str,
    reference: &str,
    plugins: &[&str],
) -> Result<Referenced, Diagnostic> {
    let manifest = &ctx.manifest.value;
    let found = reference.split_once('.').and_then(|(section, name)| {
        let entry = manifest.get(section)?.get(name)?;
        let plugin = entry.get(PLUGIN_KEY)?.as_str()?;
        plugins.contains(&plugin).then(|| {
            let mut config = entry.clone();
            if let Some(table) = config.as_object_mut() {
                table.remove(PLUGIN_KEY);
            }
            Referenced { section: section.to_string(), name: name.to_string(), plugin: plugin.to_string(), config }
        })
    });
    found.ok_or_else(|| {
        let valid = candidates(manifest, plugins);
        let valid: Vec<&str> = valid.iter().map(String::as_str).collect();
        let kinds: Vec<String> = plugins.iter().map(|p| format!("`{p}`")).collect();
        Diagnostic::new(format!("`{field}` = \"{reference}\" is not an entry with plugin {}", kinds.join(" or ")))
            .at(ctx.manifest.sources.value(pointer))
            .pointer(pointer.to_string())
            .expected("\"SECTION.NAME\" of an entry with that plugin")
            .help(suggestion(reference, &valid))
    })
}

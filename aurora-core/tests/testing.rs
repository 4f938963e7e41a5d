//! The conformance suite (`aurora_core::testing`) on small test plugins: it passes a
//! deterministic plugin and fails, naming plugin and node, those that break the contract.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aurora_core::diagnostic::Diagnostics;
use aurora_core::manifest::FILE_PREFIX;
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, PlanContext, Plugin, PluginError,
};
use aurora_core::testing::{Case, check_plugin, conformance};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TextConfig {
    text: String,
    /// `file:PATH` appended to the text.
    #[serde(default)]
    input: Option<String>,
}

fn plan_text(entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
    let config: TextConfig = entry.parse(ctx.manifest)?;
    let mut inputs = BTreeMap::new();
    if let Some(input) = config.input.filter(|i| i.starts_with(FILE_PREFIX)) {
        inputs.insert(
            "input".to_string(),
            InputSpec { source: InputSource::Path(input), pointer: format!("{}/input", entry.pointer()) },
        );
    }
    Ok(vec![NodeSpec::for_entry(entry, serde_json::json!({ "text": config.text }), inputs)])
}

fn text_of(ctx: &ExecContext<'_>) -> String {
    let mut text = ctx.config["text"].as_str().unwrap().to_string();
    if let Some(path) = ctx.inputs.get("input") {
        text.push_str(&std::fs::read_to_string(path).unwrap());
    }
    text
}

/// `test.echo`: writes its text (and its input's) to `out.txt`.
#[derive(Debug, Clone, Default)]
struct Echo;
aurora_core::register_plugin!(Echo);

impl Plugin for Echo {
    fn id(&self) -> &'static str {
        "test.echo"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "deterministic test plugin"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TextConfig)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        plan_text(entry, ctx)
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        std::fs::write(ctx.out_dir.join("out.txt"), text_of(ctx)).unwrap();
        Ok(ExecOutcome::default())
    }
}

/// `test.counter`: also writes how many times it has run in this process (not deterministic).
#[derive(Debug, Clone, Default)]
struct Counter;
aurora_core::register_plugin!(Counter);

static RUNS: AtomicU64 = AtomicU64::new(0);

impl Plugin for Counter {
    fn id(&self) -> &'static str {
        "test.counter"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "nondeterministic test plugin"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TextConfig)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        plan_text(entry, ctx)
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        std::fs::write(ctx.out_dir.join("out.txt"), text_of(ctx)).unwrap();
        let n = RUNS.fetch_add(1, Ordering::SeqCst);
        std::fs::write(ctx.out_dir.join("count.txt"), n.to_string()).unwrap();
        Ok(ExecOutcome::default())
    }
}

/// `test.unlisted`: well formed, but never registered.
#[derive(Debug, Clone, Default)]
struct Unlisted;

impl Plugin for Unlisted {
    fn id(&self) -> &'static str {
        "test.unlisted"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "unregistered test plugin"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TextConfig)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        plan_text(entry, ctx)
    }
    fn execute(&self, _: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        Ok(ExecOutcome::default())
    }
}

/// A config that accepts unknown keys (no `deny_unknown_fields`).
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct LooseConfig {
    text: String,
}

#[derive(Debug, Clone, Default)]
struct Loose;

impl Plugin for Loose {
    fn id(&self) -> &'static str {
        "test.loose"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "a config that accepts typos"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(LooseConfig)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        plan_text(entry, ctx)
    }
    fn execute(&self, _: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        Ok(ExecOutcome::default())
    }
}

fn case(plugin: &str) -> Case {
    Case::new(format!(
        "[experiment]\nname = \"t\"\nseed = 7\n[steps.a]\nplugin = \"{plugin}\"\ntext = \"a\"\ninput = \"file:data/in.txt\"\n"
    ))
    .file("data/in.txt", "-input")
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("the check must fail");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_deterministic_plugin_conforms_and_its_artifacts_can_be_read() {
    let outcome = conformance::<Echo>(&case("test.echo"));
    assert_eq!(std::fs::read_to_string(outcome.artifact("steps/a").join("out.txt")).unwrap(), "a-input");
    assert!(outcome.project().join("manifest.toml").is_file());
}

#[test]
fn a_nondeterministic_plugin_fails_naming_plugin_node_and_file() {
    let message = panic_message(|| {
        conformance::<Counter>(&case("test.counter"));
    });
    assert!(message.contains("plugin `test.counter`"), "{message}");
    assert!(message.contains("node `steps/a`"), "{message}");
    assert!(message.contains("not deterministic"), "{message}");
    assert!(message.contains("\"count.txt\""), "only the counter differs: {message}");
    assert!(!message.contains("\"out.txt\""), "{message}");
}

#[test]
fn an_unregistered_plugin_fails() {
    let message = panic_message(|| {
        conformance::<Unlisted>(&case("test.unlisted"));
    });
    assert!(message.contains("`test.unlisted` is not in the registry"), "{message}");
    assert!(message.contains("register_plugin!"), "{message}");
}

#[test]
fn a_case_without_the_plugin_fails() {
    let message = panic_message(|| {
        conformance::<Echo>(&case("test.counter"));
    });
    assert!(message.contains("plugin `test.echo`: the case plans no node of it"), "{message}");
}

#[test]
fn a_case_that_does_not_validate_fails_with_the_diagnostic() {
    let bad = Case::new("[experiment]\nname = \"t\"\nseed = 7\n[steps.a]\nplugin = \"test.echo\"\ntxt = \"a\"\n");
    let message = panic_message(|| {
        conformance::<Echo>(&bad);
    });
    assert!(message.contains("plugin `test.echo`: the case does not validate or plan"), "{message}");
    assert!(message.contains("txt"), "{message}");
}

#[test]
fn check_plugin_accepts_well_formed_plugins_and_rejects_loose_configs() {
    check_plugin(&Echo);
    let message = panic_message(|| check_plugin(&Loose));
    assert!(message.contains("plugin `test.loose`"), "{message}");
    assert!(message.contains("reject unknown keys"), "{message}");
}

//! `exec.command`: runs a declared command as a cached, content-addressed step (like a DVC stage).
//!
//! The command runs in a fresh scratch directory with a cleaned environment: only `PATH`, the
//! declared `env` and the `AURORA_*` variables reach it. Inputs are passed as `AURORA_IN_<NAME>`
//! paths (a file, or another step's artifact directory); outputs are whatever it writes under
//! `AURORA_OUT`. stdout and stderr, interleaved, become the artifact's log.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::manifest::FILE_PREFIX;
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, PlanContext, Plugin, PluginError,
};
use aurora_core::process::{SpawnError, spawn_guarded};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `[SECTION.NAME]` with `plugin = "exec.command"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program and its arguments; the program is looked up in `PATH`.
    #[schemars(length(min = 1))]
    pub argv: Vec<String>,
    /// Input name -> `"file:PATH"` (relative to the manifest) or `"SECTION.NAME"` (another entry's
    /// artifact directory). Each is passed as the environment variable `AURORA_IN_<NAME>`
    /// (upper-cased). Inputs enter the cache key by content, not by path.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Environment variables for the command. Nothing else from the caller's environment reaches
    /// it except `PATH`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Kill the command (and everything it started) after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_s: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct ExecCommand;

aurora_core::register_plugin!(ExecCommand);

/// `AURORA_IN_<NAME>` for an input name.
pub fn input_env_var(name: &str) -> String {
    format!("AURORA_IN_{}", name.to_ascii_uppercase())
}

impl Plugin for ExecCommand {
    fn id(&self) -> &'static str {
        "exec.command"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "Run a command with declared inputs; what it writes under $AURORA_OUT becomes the artifact"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(CommandConfig)
    }

    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: CommandConfig = entry.parse(ctx.manifest)?;
        let mut problems = Vec::new();
        let mut inputs = BTreeMap::new();
        let mut env_names = BTreeMap::new();
        for (name, reference) in &config.inputs {
            let pointer = format!("{}/inputs/{name}", entry.pointer());
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                problems.push(
                    Diagnostic::new(format!("input name `{name}` cannot be an environment variable name"))
                        .at(ctx.manifest.sources.key(&pointer))
                        .pointer(pointer.clone())
                        .expected("letters, digits and `_`"),
                );
                continue;
            }
            if let Some(other) = env_names.insert(input_env_var(name), name.clone()) {
                problems.push(
                    Diagnostic::new(format!("inputs `{other}` and `{name}` both become `{}`", input_env_var(name)))
                        .at(ctx.manifest.sources.key(&pointer))
                        .pointer(pointer.clone())
                        .help("input names are upper-cased; rename one of them"),
                );
            }
            let source = if reference.starts_with(FILE_PREFIX) {
                InputSource::Path(reference.clone())
            } else if let Some(id) = ctx.entry_ref(reference) {
                InputSource::Node(id)
            } else {
                problems.push(
                    Diagnostic::new(format!("input `{name}` = \"{reference}\" is neither a file nor a step"))
                        .at(ctx.manifest.sources.value(&pointer))
                        .pointer(pointer.clone())
                        .expected("\"file:PATH\" or \"SECTION.NAME\" (e.g. \"steps.clean\")"),
                );
                continue;
            };
            inputs.insert(name.clone(), InputSpec { source, pointer });
        }
        if !problems.is_empty() {
            return Err(Diagnostics(problems));
        }
        // Inputs enter the key by content digest; their paths are not part of the config.
        let keyed = json!({ "argv": config.argv, "env": config.env, "timeout_s": config.timeout_s });
        Ok(vec![NodeSpec::for_entry(entry, keyed, inputs)])
    }

    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        #[derive(Deserialize)]
        struct Keyed {
            argv: Vec<String>,
            env: BTreeMap<String, String>,
            timeout_s: Option<u64>,
        }
        let config: Keyed = ctx.parse()?;
        let work = ctx.out_dir.parent().unwrap_or(ctx.out_dir);
        let cwd = work.join("cwd");
        let log_path = work.join("command.log");
        reset_dir(&cwd).map_err(|e| PluginError::new(format!("cannot prepare {}: {e}", cwd.display())))?;
        let log = File::create(&log_path)
            .map_err(|e| PluginError::new(format!("cannot create {}: {e}", log_path.display())))?;
        let log_err = log.try_clone().map_err(|e| PluginError::new(format!("cannot share the log file: {e}")))?;

        let mut cmd = Command::new(&config.argv[0]);
        cmd.args(&config.argv[1..])
            .current_dir(&cwd)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(&config.env)
            .env("AURORA_OUT", ctx.out_dir)
            .env("AURORA_SEED", ctx.seed.to_string())
            .env("AURORA_NODE", ctx.node_id);
        for (name, path) in ctx.inputs {
            cmd.env(input_env_var(name), path);
        }
        // Guarded: the command and everything it starts die with aurora, however aurora dies, and
        // nothing it left running in the background outlives the step.
        let guarded = spawn_guarded(&mut cmd).map_err(|e| match e {
            SpawnError::Watchdog(_) => PluginError::new(e.to_string()),
            SpawnError::Command(e) => PluginError::new(format!(
                "cannot start `{}`: {e} (is it installed and on PATH? PATH is the only variable passed through)",
                config.argv[0]
            )),
        })?;
        let ended = guarded.wait(config.timeout_s.map(Duration::from_secs));
        let mut text = Vec::new();
        File::open(&log_path)
            .and_then(|mut f| f.read_to_end(&mut text))
            .map_err(|e| PluginError::new(format!("cannot read the command's log {}: {e}", log_path.display())))?;
        ctx.log.write_all(&text).map_err(|e| PluginError::new(format!("cannot keep the log: {e}")))?;
        let ended = ended.map_err(|e| PluginError::new(format!("waiting for `{}` failed: {e}", config.argv[0])))?;
        let status = ended.status;
        if status.success() {
            return Ok(ExecOutcome::default());
        }
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            _ if ended.timed_out => {
                format!("was killed after its timeout of {} s", config.timeout_s.unwrap_or_default())
            }
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            (None, None) => "ended abnormally".to_string(),
        };
        Err(PluginError::new(format!("`{}` {how}; nothing was published", abbreviate(&config.argv))))
    }
}

/// The command line for messages: each argument on one line, long ones (inline scripts) cut.
fn abbreviate(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let first = a.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
            let cut: String = first.chars().take(40).collect();
            if cut.len() < a.trim().len() { format!("{cut}...") } else { cut }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn reset_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)
}

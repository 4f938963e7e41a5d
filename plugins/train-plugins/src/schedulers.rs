//! `scheduler.constant`, `scheduler.cosine`, `scheduler.wsd`: learning-rate schedules
//! (`[schedulers.NAME]`), pure functions step -> lr (see `aurora_train::schedule`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::marker::PhantomData;

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::plugin::{Entry, ExecContext, ExecOutcome, NodeSpec, PlanContext, Plugin, PluginError};
use aurora_train::schedule::{DecayShape, Schedule};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// `plugin = "scheduler.constant"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConstantConfig {
    /// The learning rate after warmup.
    pub lr: f64,
    /// Updates of linear warmup (update `s < warmup_steps` uses `lr * (s + 1) / warmup_steps`).
    #[serde(default)]
    pub warmup_steps: u64,
}

/// `plugin = "scheduler.cosine"`: warmup, then cosine decay from `max_lr` to the floor `min_lr`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CosineConfig {
    /// Peak learning rate (reached on the last warmup update).
    pub max_lr: f64,
    /// Floor, reached after `warmup_steps + decay_steps` updates and kept afterwards.
    pub min_lr: f64,
    /// Updates of linear warmup.
    pub warmup_steps: u64,
    /// Updates of the cosine decay.
    pub decay_steps: u64,
}

/// `plugin = "scheduler.wsd"`: warmup, a stable phase at `max_lr`, then a decay to `min_lr`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WsdConfig {
    /// Rate of the stable phase.
    pub max_lr: f64,
    /// Floor, reached at the end of the decay and kept afterwards.
    pub min_lr: f64,
    /// Updates of linear warmup.
    pub warmup_steps: u64,
    /// Updates at `max_lr` after warmup.
    pub stable_steps: u64,
    /// Updates of the decay.
    pub decay_steps: u64,
    /// Shape of the decay: `"linear"` (default) or `"cosine"`.
    #[serde(default)]
    pub decay: DecayShape,
}

/// One schedule plugin's config type.
pub trait ScheduleConfig: DeserializeOwned + JsonSchema + Send + Sync + 'static {
    const ID: &'static str;
    const DESCRIPTION: &'static str;
    fn schedule(self) -> Schedule;
}

impl ScheduleConfig for ConstantConfig {
    const ID: &'static str = "scheduler.constant";
    const DESCRIPTION: &'static str = "Constant learning rate after an optional linear warmup";
    fn schedule(self) -> Schedule {
        Schedule::Constant { lr: self.lr, warmup_steps: self.warmup_steps }
    }
}
impl ScheduleConfig for CosineConfig {
    const ID: &'static str = "scheduler.cosine";
    const DESCRIPTION: &'static str = "Linear warmup, then cosine decay to a floor";
    fn schedule(self) -> Schedule {
        Schedule::Cosine {
            max_lr: self.max_lr,
            min_lr: self.min_lr,
            warmup_steps: self.warmup_steps,
            decay_steps: self.decay_steps,
        }
    }
}
impl ScheduleConfig for WsdConfig {
    const ID: &'static str = "scheduler.wsd";
    const DESCRIPTION: &'static str =
        "Warmup-stable-decay: linear warmup, constant, then linear or cosine decay to a floor";
    fn schedule(self) -> Schedule {
        Schedule::Wsd {
            max_lr: self.max_lr,
            min_lr: self.min_lr,
            warmup_steps: self.warmup_steps,
            stable_steps: self.stable_steps,
            decay_steps: self.decay_steps,
            decay: self.decay,
        }
    }
}

/// The ids of the schedule plugins (what a stage's `schedule` may reference).
pub const PLUGIN_IDS: [&str; 3] = [ConstantConfig::ID, CosineConfig::ID, WsdConfig::ID];

/// The schedule of an entry of one of [`PLUGIN_IDS`] (its config without `plugin`), unvalidated.
pub fn schedule_of(plugin: &str, config: &Value) -> Option<Schedule> {
    fn parse<C: ScheduleConfig>(config: &Value) -> Option<Schedule> {
        serde_json::from_value::<C>(config.clone()).ok().map(C::schedule)
    }
    match plugin {
        ConstantConfig::ID => parse::<ConstantConfig>(config),
        CosineConfig::ID => parse::<CosineConfig>(config),
        WsdConfig::ID => parse::<WsdConfig>(config),
        _ => None,
    }
}

/// The plugin of schedule config `C`.
pub struct Scheduler<C>(PhantomData<fn() -> C>);

impl<C> Default for Scheduler<C> {
    fn default() -> Self {
        Scheduler(PhantomData)
    }
}
impl<C> Clone for Scheduler<C> {
    fn clone(&self) -> Self {
        Scheduler(PhantomData)
    }
}

aurora_core::register_plugin!(Scheduler<ConstantConfig>);
aurora_core::register_plugin!(Scheduler<CosineConfig>);
aurora_core::register_plugin!(Scheduler<WsdConfig>);

/// Steps at which `lr.csv` tabulates a schedule: the phase boundaries and ten even points.
fn table_steps(schedule: &Schedule) -> Vec<u64> {
    let total = schedule.total_steps().max(1);
    let mut steps: Vec<u64> = (0..=10).map(|i| total * i / 10).collect();
    if let Schedule::Cosine { warmup_steps: w, .. } | Schedule::Constant { warmup_steps: w, .. } = *schedule {
        steps.extend([w.saturating_sub(1), w]);
    }
    if let Schedule::Wsd { warmup_steps: w, stable_steps: s, .. } = *schedule {
        steps.extend([w.saturating_sub(1), w, w + s]);
    }
    steps.push(total + 1);
    steps.sort_unstable();
    steps.dedup();
    steps
}

impl<C: ScheduleConfig> Plugin for Scheduler<C> {
    fn id(&self) -> &'static str {
        C::ID
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        C::DESCRIPTION
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(C)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: C = entry.parse(ctx.manifest)?;
        let schedule = config.schedule();
        schedule.validate().map_err(|e| {
            Diagnostic::new(e.to_string())
                .at(ctx.manifest.sources.key(&entry.pointer()))
                .pointer(entry.pointer())
                .help("learning rates are finite numbers >= 0, with min_lr <= max_lr")
        })?;
        let keyed = serde_json::to_value(&schedule).expect("schedules serialise");
        Ok(vec![NodeSpec::for_entry(entry, keyed, BTreeMap::new())])
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let schedule: Schedule = ctx.parse()?;
        let write = |name: &str, text: String| {
            let path = ctx.out_dir.join(name);
            std::fs::write(&path, text).map_err(|e| PluginError::new(format!("cannot write {}: {e}", path.display())))
        };
        write("schedule.json", serde_json::to_string_pretty(&schedule).expect("schedules serialise"))?;
        let mut table = String::from("step,lr\n");
        for step in table_steps(&schedule) {
            writeln!(table, "{step},{:e}", schedule.lr(step)).expect("writing to a string");
        }
        write("lr.csv", table)?;
        let mut metrics = Map::new();
        metrics.insert("total_steps".into(), json!(schedule.total_steps()));
        Ok(ExecOutcome { metrics })
    }
}

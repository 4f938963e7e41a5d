//! The one place evaluators hand a job to `aurora-worker` (every model computation runs there).

use aurora_core::plugin::{ExecContext, PluginError};
use aurora_worker_api::Job;
use serde_json::{Map, Value};

/// Runs `job` in `aurora-worker` and returns its final metrics.
pub fn run(job: &Job, ctx: &mut ExecContext<'_>) -> Result<Map<String, Value>, PluginError> {
    aurora_worker_api::client::run(job, ctx)
}

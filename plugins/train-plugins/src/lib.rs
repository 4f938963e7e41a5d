//! Training plugins for the `aurora` binary (tch-free): they validate and plan; execution runs in
//! the `aurora-worker` process through [`aurora_worker_api::client`].
//!
//! - `model.gptbigcode` ([`model`]): `[models.NAME]`, a GPTBigCode architecture; artifact
//!   `config.json`.
//! - `scheduler.constant`, `scheduler.cosine`, `scheduler.wsd` ([`schedulers`]): pure learning-rate
//!   schedules; artifact `schedule.json` and `lr.csv`.
//! - `train.tch` and `sft.instructions` ([`stage`]): one node per curriculum stage (pretraining on
//!   a mixture) or instruction-tuning run; artifact: a Hugging Face directory plus trainer state
//!   (see `aurora_worker_api::TrainJob`).
//!
//! These live apart from `aurora-train` (configs and schedules) because `aurora-worker-api`
//! depends on `aurora-train` for the job types and these plugins build jobs.

pub mod model;
mod refs;
pub mod schedulers;
pub mod stage;

//! Training plugins, without libtorch: what the `aurora` binary needs to validate and plan
//! training (configs, schedules, layouts, parameter and FLOP counts). Execution happens in the
//! `aurora-worker` process, which links `aurora-gptbigcode` (tch).
//!
//! - [`config`]: `GptBigCodeConfig` (HF `config.json`), StarCoderPlus's shape, parameter and
//!   FLOP counts, validation.
//! - [`layout`]: tensor/pipeline/data parallel degrees.
//! - [`schedule`]: constant, warmup + cosine to a floor, warmup-stable-decay; re-warming.

pub mod config;
pub mod layout;
pub mod optimizer;
pub mod schedule;

pub use config::{ConfigError, GptBigCodeConfig};
pub use layout::{Layout, StepShape};

//! Groundwork for the trainer (issue 4): the GPTBigCode architecture in tch with Hugging Face's
//! `gpt_bigcode` config and weight names, Hugging Face directory export/import, and pure
//! learning-rate schedules.
//!
//! This crate links libtorch (through `aurora-torch`); the `aurora` binary must never depend on
//! it directly (ARCHITECTURE.md): it is meant to run inside the torch worker process.

pub mod config;

pub use config::{ConfigError, GptBigCodeConfig};
pub mod model;

pub use model::{GptBigCode, ModelError};
pub mod hf;
pub mod schedule;

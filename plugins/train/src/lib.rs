//! Groundwork for the trainer (issue 4): the GPTBigCode architecture in tch with Hugging Face's
//! `gpt_bigcode` config and weight names, Hugging Face directory export/import, pure
//! learning-rate schedules, and AdamW without weight decay on biases/LayerNorm.
//!
//! - [`config`]: `GptBigCodeConfig` (HF `config.json`), StarCoderPlus's shape, parameter and
//!   FLOP counts, validation.
//! - [`model`]: `GptBigCode` (multi-query attention through `scaled_dot_product_attention`).
//! - [`hf`]: `save_pretrained` / `load_pretrained` (single or sharded safetensors).
//! - [`schedule`]: constant, warmup + cosine to a floor, warmup-stable-decay; re-warming.
//! - [`optim`]: AdamW parameter groups, gradient-norm clipping.
//!
//! This crate links libtorch (through `aurora-torch`); the `aurora` binary must never depend on
//! it (ARCHITECTURE.md): it is meant to run inside the torch worker process.

pub mod config;
pub mod hf;
pub mod model;
pub mod optim;
pub mod schedule;

pub use config::{ConfigError, GptBigCodeConfig};
pub use model::{GptBigCode, ModelError};

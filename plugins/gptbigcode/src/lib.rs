//! GPTBigCode in tch, for the torch worker process (`aurora-worker`).
//!
//! - [`model`]: `GptBigCode` (multi-query attention through `scaled_dot_product_attention`).
//! - [`hf`]: `save_pretrained` / `load_pretrained` (single or sharded safetensors).
//! - [`optim`]: AdamW parameter groups, gradient-norm clipping.
//!
//! The model's config (`GptBigCodeConfig`) and the learning-rate schedules are plain data and live
//! in the tch-free `aurora-train` crate, which the `aurora` binary links for planning.
//!
//! This crate links libtorch (through `aurora-torch`); the `aurora` binary must never depend on
//! it (ARCHITECTURE.md).

pub mod adamw;
pub mod checkpoint;
pub mod hf;
pub mod infer;
pub mod model;
pub mod optim;
pub mod sharded;
pub mod trainer;
pub mod zero;

pub use aurora_train::config;
pub use aurora_train::config::{ConfigError, GptBigCodeConfig};
pub use aurora_train::schedule;
pub use model::{GptBigCode, Logits, ModelError};

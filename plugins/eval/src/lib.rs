//! Evaluators of aurora checkpoints.

pub mod choice;
pub mod code;
pub mod code_eval;
pub mod data;
pub mod passk;
pub mod perplexity;
pub mod safety;
pub mod sandbox;
pub mod schedule;
mod worker;

/// Re-exported for [`register_refusal_lexicon!`].
pub use inventory;

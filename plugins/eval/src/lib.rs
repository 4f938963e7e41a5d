//! Evaluators of aurora checkpoints.
//!
//! Registered plugins (each plans one node per checkpoint, see [`schedule`], and hands every
//! model computation to `aurora-worker`; this crate never links libtorch):
//! - `eval.perplexity` ([`perplexity`]): bits per byte and token perplexity per language;
//! - `eval.choice` ([`choice`]): multiple-choice tasks, `acc` and `acc_norm`;
//! - `eval.code` ([`code_eval`]): HumanEval/MBPP/MultiPL-E pass@k, completions run in the
//!   [`sandbox`] with each language's [`toolchain`];
//! - `eval.safety` ([`safety`]): attack success and over-refusal; language packs add refusal
//!   phrases.

pub mod choice;
pub mod code;
pub mod code_eval;
pub mod data;
pub mod passk;
pub mod perplexity;
pub mod safety;
pub mod sandbox;
pub mod schedule;
pub mod toolchain;
mod worker;

//! aurora-tokens: tokenizers, the Megatron-compatible token store, deterministic mixtures and the
//! data loader the trainer reads them with.
//!
//! Plugins: `tokenizer.file`, `tokenizer.bpe`, `tokenizer.encode` (planned by mixtures, no entry of
//! its own), `source.megatron`, `mixer.blend`. Library API: [`megatron`] (the indexed dataset),
//! [`store::TokenStore`] and [`loader::MixtureReader`].

pub mod documents;
pub mod loader;
pub mod megatron;
pub mod mixture;
pub mod shuffle;
pub mod source_megatron;
pub mod store;
pub mod tokenizer;

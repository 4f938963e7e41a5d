//! Tensor and pipeline parallelism (Megatron-LM's): the 3-D grid of ranks ([`grid`]), which
//! slice of which Hugging Face tensor each rank holds and how slices are read from and written to
//! whole tensors of any layout ([`pieces`]), one rank's stage of the model with its
//! tensor-parallel communication ([`stage`]) and the 1F1B pipeline schedule ([`pipeline`]).
//! Data parallelism and ZeRO-1 over the `dp` group are [`crate::zero`]'s, unchanged.

pub mod grid;
pub mod pieces;
pub mod pipeline;
pub mod stage;

pub use grid::Grid;
pub use stage::StageModel;

//! How a stage is laid out over ranks: tensor, pipeline and data parallel degrees.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tensor, pipeline and data parallel degrees; `tp * pp * dp` ranks train the stage (Megatron's
/// grid: tensor-parallel ranks fastest, then data-parallel, then pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Tensor-parallel degree; must divide `n_head`.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub tp: u64,
    /// Pipeline-parallel degree; must divide `n_layer`.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub pp: u64,
    /// Data-parallel degree; `micro_batch * dp` must divide `global_batch`.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub dp: u64,
}

fn one() -> u64 {
    1
}

impl Default for Layout {
    fn default() -> Self {
        Layout { tp: 1, pp: 1, dp: 1 }
    }
}

impl Layout {
    /// Ranks of the layout.
    pub fn world(&self) -> u64 {
        self.tp * self.pp * self.dp
    }

    /// One process, no communication.
    pub fn is_single(&self) -> bool {
        self.world() == 1
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tp {} x pp {} x dp {}", self.tp, self.pp, self.dp)
    }
}

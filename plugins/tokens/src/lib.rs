//! aurora-tokens (being written).

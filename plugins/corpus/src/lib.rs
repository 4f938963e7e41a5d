//! aurora-corpus (being written).

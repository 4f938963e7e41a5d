//! Megatron's 3-D grid: `world = tp * pp * dp` ranks, tensor-parallel ranks fastest, then
//! data-parallel, then pipeline (`rank = tp_rank + tp * (dp_rank + dp * stage)`), so the ranks
//! that talk most (a TP group) are neighbours, on one node when `tp` divides the GPUs per node.

/// One rank's coordinates in a `tp x pp x dp` grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub tp: usize,
    pub pp: usize,
    pub dp: usize,
    pub tp_rank: usize,
    pub dp_rank: usize,
    /// Pipeline stage.
    pub stage: usize,
}

impl Grid {
    /// The coordinates of global rank `rank`.
    pub fn of(rank: usize, tp: usize, pp: usize, dp: usize) -> Self {
        Grid { tp, pp, dp, tp_rank: rank % tp, dp_rank: (rank / tp) % dp, stage: rank / (tp * dp) }
    }

    pub fn world(&self) -> usize {
        self.tp * self.pp * self.dp
    }

    /// The global rank at the given coordinates.
    pub fn rank_at(&self, tp_rank: usize, dp_rank: usize, stage: usize) -> usize {
        tp_rank + self.tp * (dp_rank + self.dp * stage)
    }

    pub fn rank(&self) -> usize {
        self.rank_at(self.tp_rank, self.dp_rank, self.stage)
    }

    /// The ranks sharing this rank's data-parallel replica and stage (its TP group).
    pub fn tp_group(&self) -> Vec<usize> {
        (0..self.tp).map(|t| self.rank_at(t, self.dp_rank, self.stage)).collect()
    }

    /// The ranks holding the same model shard (its DP group).
    pub fn dp_group(&self) -> Vec<usize> {
        (0..self.dp).map(|d| self.rank_at(self.tp_rank, d, self.stage)).collect()
    }

    /// The stages of this rank's pipeline, in order (its PP group).
    pub fn pp_group(&self) -> Vec<usize> {
        (0..self.pp).map(|s| self.rank_at(self.tp_rank, self.dp_rank, s)).collect()
    }

    /// The first and last stage of this pipeline, which both hold the tied embedding (Megatron's
    /// embedding group); `None` when `pp == 1` or this rank is on neither.
    pub fn embedding_group(&self) -> Option<Vec<usize>> {
        (self.pp > 1 && (self.is_first_stage() || self.is_last_stage())).then(|| {
            vec![self.rank_at(self.tp_rank, self.dp_rank, 0), self.rank_at(self.tp_rank, self.dp_rank, self.pp - 1)]
        })
    }

    pub fn is_first_stage(&self) -> bool {
        self.stage == 0
    }

    pub fn is_last_stage(&self) -> bool {
        self.stage + 1 == self.pp
    }

    /// The blocks of this stage: `n_layer / pp` consecutive layers.
    pub fn layers(&self, n_layer: usize) -> std::ops::Range<usize> {
        let per = n_layer / self.pp;
        self.stage * per..(self.stage + 1) * per
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn megatron_order_tp_fastest_then_dp_then_pp() {
        // tp 2 x pp 2 x dp 2: rank 5 = tp 1, dp 0, stage 1.
        let g = Grid::of(5, 2, 2, 2);
        assert_eq!((g.tp_rank, g.dp_rank, g.stage), (1, 0, 1));
        assert_eq!(g.rank(), 5);
        assert_eq!(g.tp_group(), [4, 5]);
        assert_eq!(g.dp_group(), [5, 7]);
        assert_eq!(g.pp_group(), [1, 5]);
        assert_eq!(g.embedding_group(), Some(vec![1, 5]));
        assert!(g.is_last_stage() && !g.is_first_stage());
        assert_eq!(g.layers(4), 2..4);
    }

    #[test]
    fn every_rank_is_in_exactly_one_group_of_each_kind() {
        for (tp, pp, dp) in [(1, 1, 4), (2, 1, 2), (1, 2, 2), (2, 2, 2), (4, 4, 16), (3, 2, 1)] {
            let world = tp * pp * dp;
            for kind in 0..3 {
                let mut seen = vec![0; world];
                for (rank, count) in seen.iter_mut().enumerate() {
                    let g = Grid::of(rank, tp, pp, dp);
                    let group = [g.tp_group(), g.dp_group(), g.pp_group()][kind].clone();
                    assert!(group.contains(&rank));
                    // Every member computes the same group.
                    for &other in &group {
                        let theirs = Grid::of(other, tp, pp, dp);
                        assert_eq!([theirs.tp_group(), theirs.dp_group(), theirs.pp_group()][kind], group);
                    }
                    *count += 1;
                }
                assert!(seen.iter().all(|&n| n == 1));
            }
        }
    }
}

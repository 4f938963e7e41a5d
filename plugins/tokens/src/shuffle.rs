//! The deterministic shuffle of documents within a source (no external RNG crate, so the bytes
//! can never change under a dependency update).
//!
//! - Seed of source `s` in epoch `e` of a mixture node with seed `n`: the first 8 bytes
//!   (little-endian) of `blake3("aurora-shuffle/1\0" || n as u64 LE || s || "\0" || e as u64 LE)`.
//! - Generator: SplitMix64 (Steele, Lea, Flood 2014), `x += 0x9E3779B97F4A7C15`, then the
//!   standard mix.
//! - Bounded integers: Lemire's multiply-shift with rejection (unbiased).
//! - Permutation: Fisher-Yates from the last position down: for `i` in `(1..n).rev()`, swap `i`
//!   with `below(i + 1)`, starting from the identity.

/// SplitMix64.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound > 0`), without modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0)");
        let mut m = self.next_u64() as u128 * bound as u128;
        if (m as u64) < bound {
            let threshold = bound.wrapping_neg() % bound;
            while (m as u64) < threshold {
                m = self.next_u64() as u128 * bound as u128;
            }
        }
        (m >> 64) as u64
    }
}

/// The seed of a source's shuffle in one epoch.
pub fn epoch_seed(node_seed: u64, source: &str, epoch: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"aurora-shuffle/1\0");
    h.update(&node_seed.to_le_bytes());
    h.update(source.as_bytes());
    h.update(b"\0");
    h.update(&epoch.to_le_bytes());
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A permutation of `0..n`.
pub fn permutation(n: u32, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..n as usize).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // Reference values of SplitMix64 seeded with 1234567 (from the C reference implementation).
        let mut r = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            vec![
                6457827717110365317,
                3203168211198807973,
                9817491932198370423,
                4593380528125082431,
                16408922859458223821
            ]
        );
    }

    #[test]
    fn permutations_are_permutations_and_depend_on_the_seed() {
        let a = permutation(1000, 7);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, permutation(1000, 7));
        assert_ne!(a, permutation(1000, 8));
        assert_eq!(permutation(0, 1), Vec::<u32>::new());
        assert_eq!(permutation(1, 1), vec![0]);
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut r = SplitMix64::new(42);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[r.below(6) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_400..10_600).contains(&c)), "{counts:?}");
    }

    #[test]
    fn epoch_seeds_differ_by_source_and_epoch() {
        assert_ne!(epoch_seed(1, "a", 0), epoch_seed(1, "a", 1));
        assert_ne!(epoch_seed(1, "a", 0), epoch_seed(1, "b", 0));
        assert_ne!(epoch_seed(1, "a", 0), epoch_seed(2, "a", 0));
    }
}

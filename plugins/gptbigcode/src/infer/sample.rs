//! Choosing the next token from a row of logits on the CPU: greedy, or sampling with
//! temperature and top-p from a per-completion [`SplitMix64`] stream. Drawing on the CPU from
//! the completion's own stream makes a completion independent of its batch and of torch's
//! global RNG.

use aurora_worker_api::Sampling;

/// SplitMix64 (Steele, Lea, Flood 2014): a small, well-mixed 64-bit generator.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The seed of completion `completion` of request `request` under the job seed `job_seed`.
pub fn row_seed(job_seed: u64, request: u64, completion: u64) -> u64 {
    let mut mix = SplitMix64::new(job_seed);
    let a = mix.next_u64() ^ request;
    let b = SplitMix64::new(a).next_u64() ^ completion;
    SplitMix64::new(b).next_u64()
}

/// The next token from `logits` (one row, vocabulary order): the first maximum when
/// `temperature == 0`; otherwise a draw from softmax(logits / temperature) restricted to the
/// smallest set of most probable tokens whose probability reaches `top_p` (ties by lower id).
pub fn choose_token(logits: &[f32], sampling: &Sampling, rng: &mut SplitMix64) -> usize {
    if sampling.temperature == 0.0 {
        return argmax(logits);
    }
    let max = logits[argmax(logits)] as f64;
    let weights: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) / sampling.temperature).exp()).collect();
    let order: Vec<(f64, usize)> = if sampling.top_p < 1.0 {
        let total: f64 = weights.iter().sum();
        nucleus(weights.iter().copied().zip(0..).collect(), sampling.top_p * total)
    } else {
        weights.iter().copied().zip(0..).collect()
    };
    let total: f64 = order.iter().map(|&(w, _)| w).sum();
    let mut target = rng.next_f64() * total;
    for &(w, i) in &order {
        target -= w;
        if target < 0.0 {
            return i;
        }
    }
    order.last().expect("a non-empty vocabulary").1
}

/// The most probable `(weight, id)`s, most probable first (ties by lower id), up to and including
/// the one whose cumulative weight reaches `threshold` (at least one). The same as sorting them
/// all and cutting there, but only the kept ones (and a block past them) are sorted: the nucleus
/// is usually a small part of the vocabulary, and sorting all of it per token was a third of
/// generation's time.
fn nucleus(mut candidates: Vec<(f64, usize)>, threshold: f64) -> Vec<(f64, usize)> {
    // A strict total order, so the first k elements after selection are exactly the first k of
    // the full sort, and the cumulative sums below add the same numbers in the same order.
    let before = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let mut kept = 0.0;
    let mut n = 0;
    let mut block = 64;
    while n < candidates.len() {
        let rest = &mut candidates[n..];
        let take = block.min(rest.len());
        if take < rest.len() {
            rest.select_nth_unstable_by(take - 1, before);
        }
        rest[..take].sort_unstable_by(before);
        for &(w, _) in &rest[..take] {
            if n > 0 && kept >= threshold {
                candidates.truncate(n);
                return candidates;
            }
            kept += w;
            n += 1;
        }
        block *= 4;
    }
    candidates
}

/// Index of the first maximum (NaNs never win).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(temperature: f64, top_p: f64) -> Sampling {
        Sampling { temperature, top_p, max_new_tokens: 1, stop: vec![] }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut rng = SplitMix64::new(0);
        assert_eq!(choose_token(&[0.0, 2.0, 2.0, 1.0], &sampling(0.0, 1.0), &mut rng), 1);
        assert_eq!(choose_token(&[f32::NAN, 1.0, 3.0], &sampling(0.0, 1.0), &mut rng), 2);
    }

    #[test]
    fn sampling_follows_the_softmax() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let mut rng = SplitMix64::new(42);
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[choose_token(&logits, &sampling(1.0, 1.0), &mut rng)] += 1;
        }
        assert_eq!(counts[2], 0);
        let share = counts[1] as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.015, "{counts:?}");
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities 0.5, 0.3, 0.2: top_p 0.7 keeps the first two.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut rng = SplitMix64::new(7);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[choose_token(&logits, &sampling(1.0, 0.7), &mut rng)] += 1;
        }
        assert_eq!(counts[2], 0, "{counts:?}");
        assert!((counts[0] as f64 / 10_000.0 - 0.625).abs() < 0.02, "{counts:?}");
        for _ in 0..100 {
            assert_eq!(choose_token(&logits, &sampling(1.0, 1e-9), &mut rng), 0);
        }
    }

    /// The nucleus is exactly the prefix of the fully sorted vocabulary that the plain algorithm
    /// keeps, ties and all, so sampled completions do not change.
    #[test]
    fn the_nucleus_is_the_prefix_of_the_full_sort() {
        let mut rng = SplitMix64::new(3);
        for case in 0..200 {
            let len = 1 + (rng.next_u64() % 700) as usize;
            // Few distinct values, so ties are common.
            let distinct = 1 + (rng.next_u64() % 12);
            let weights: Vec<f64> = (0..len).map(|_| ((rng.next_u64() % distinct) as f64 * 0.37).exp() - 1.0).collect();
            let top_p = [0.05, 0.5, 0.9, 0.95, 0.999999, 1e-12][case % 6];
            let total: f64 = weights.iter().sum();
            let mut order: Vec<usize> = (0..len).collect();
            order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
            let (mut kept, mut n) = (0.0, 0);
            while n < order.len() && (n == 0 || kept < top_p * total) {
                kept += weights[order[n]];
                n += 1;
            }
            let want: Vec<(f64, usize)> = order[..n].iter().map(|&i| (weights[i], i)).collect();
            let got = nucleus(weights.iter().copied().zip(0..).collect(), top_p * total);
            assert_eq!(got, want, "case {case}: {len} weights, top_p {top_p}");
        }
    }

    #[test]
    fn seeds_differ_per_request_and_completion() {
        let seeds = [row_seed(1, 0, 0), row_seed(1, 0, 1), row_seed(1, 1, 0), row_seed(2, 0, 0)];
        for i in 0..seeds.len() {
            for j in i + 1..seeds.len() {
                assert_ne!(seeds[i], seeds[j]);
            }
        }
        assert_eq!(row_seed(1, 0, 1), row_seed(1, 0, 1));
    }
}

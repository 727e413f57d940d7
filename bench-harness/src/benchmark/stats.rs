//! Latency statistics.
//!
//! Hand-written on purpose: the order statistics we need (median, p90, p99, MAD)
//! are a few lines each once the samples are sorted, and `statrs` would pull in
//! `nalgebra` for the armv7 build without giving us the bootstrap or the paired
//! ratio we need anyway. Percentiles use linear interpolation between closest
//! ranks (the "R-7" definition used by numpy's default and by hyperfine).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Number of bootstrap resamples for confidence intervals. 2000 gives stable 2.5 %
/// / 97.5 % quantiles (Efron & Tibshirani recommend >= 1000 for percentile intervals).
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// Modified z-score above which a sample counts as an outlier (Iglewicz & Hoaglin).
pub const OUTLIER_Z: f64 = 3.5;

/// Share of outliers above which a run is reported as noisy.
pub const NOISY_OUTLIER_SHARE: f64 = 0.05;

/// Summary of one model's measured latencies, all in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub n: usize,
    pub min_ms: f64,
    pub median_ms: f64,
    pub mean_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub std_dev_ms: f64,
    /// Median absolute deviation (raw, not scaled by 1.4826).
    pub mad_ms: f64,
    /// 95 % bootstrap percentile interval of the median.
    pub median_ci95_ms: [f64; 2],
    /// Samples with a modified z-score above [`OUTLIER_Z`].
    pub outliers: usize,
}

/// Sorted copy of the samples (NaN-free input assumed: latencies are finite).
pub fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Quantile `q` in [0, 1] of sorted data, linear interpolation between closest ranks.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of empty data");
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

pub fn median(samples: &[f64]) -> f64 {
    quantile_sorted(&sorted(samples), 0.5)
}

pub fn mean(samples: &[f64]) -> f64 {
    samples.iter().sum::<f64>() / samples.len() as f64
}

/// Sample standard deviation (n - 1 denominator); 0 for a single sample.
pub fn std_dev(samples: &[f64]) -> f64 {
    if samples.len() < 2 {
        return 0.0;
    }
    let m = mean(samples);
    let var = samples.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (samples.len() - 1) as f64;
    var.sqrt()
}

/// Median absolute deviation from the median.
pub fn mad(samples: &[f64]) -> f64 {
    let m = median(samples);
    let dev: Vec<f64> = samples.iter().map(|x| (x - m).abs()).collect();
    median(&dev)
}

/// Indices of outliers by the modified z-score 0.6745 (x - median) / MAD.
/// With MAD = 0 (more than half the samples identical) nothing is an outlier.
pub fn outlier_indices(samples: &[f64]) -> Vec<usize> {
    let m = median(samples);
    let d = mad(samples);
    if d == 0.0 {
        return Vec::new();
    }
    samples
        .iter()
        .enumerate()
        .filter(|(_, x)| (0.6745 * (*x - m) / d).abs() > OUTLIER_Z)
        .map(|(i, _)| i)
        .collect()
}

/// Median of a scratch buffer, reordering it (O(n) selection instead of a sort:
/// the bootstrap calls this thousands of times).
fn median_in_place(buf: &mut [f64]) -> f64 {
    let n = buf.len();
    let mid = n / 2;
    let (_, upper, _) = buf.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let upper = *upper;
    if n % 2 == 1 {
        upper
    } else {
        let lower = buf[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

/// 95 % percentile bootstrap interval of the median, reproducible for a given seed.
pub fn bootstrap_median_ci(samples: &[f64], seed: u64) -> [f64; 2] {
    if samples.len() < 2 {
        let m = samples.first().copied().unwrap_or(f64::NAN);
        return [m, m];
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut buf = vec![0.0; samples.len()];
    let mut medians = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    for _ in 0..BOOTSTRAP_RESAMPLES {
        for slot in buf.iter_mut() {
            *slot = samples[rng.gen_range(0..samples.len())];
        }
        medians.push(median_in_place(&mut buf));
    }
    let medians = sorted(&medians);
    [
        quantile_sorted(&medians, 0.025),
        quantile_sorted(&medians, 0.975),
    ]
}

/// Ratio median(numerator) / median(denominator) with a 95 % bootstrap interval.
///
/// When `paired` is true the two slices must have equal length and index i of both
/// comes from the same interleaved round: rounds are resampled together so that
/// machine drift shared by a round cancels in the ratio. Otherwise both are
/// resampled independently (e.g. two reports from different runs).
pub fn bootstrap_ratio_of_medians(
    numerator: &[f64],
    denominator: &[f64],
    paired: bool,
    seed: u64,
) -> (f64, [f64; 2]) {
    let point = median(numerator) / median(denominator);
    if numerator.len() < 2 || denominator.len() < 2 {
        return (point, [point, point]);
    }
    let paired = paired && numerator.len() == denominator.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut num_buf = vec![0.0; numerator.len()];
    let mut den_buf = vec![0.0; denominator.len()];
    let mut ratios = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    for _ in 0..BOOTSTRAP_RESAMPLES {
        if paired {
            for (num, den) in num_buf.iter_mut().zip(den_buf.iter_mut()) {
                let k = rng.gen_range(0..numerator.len());
                *num = numerator[k];
                *den = denominator[k];
            }
        } else {
            for slot in num_buf.iter_mut() {
                *slot = numerator[rng.gen_range(0..numerator.len())];
            }
            for slot in den_buf.iter_mut() {
                *slot = denominator[rng.gen_range(0..denominator.len())];
            }
        }
        ratios.push(median_in_place(&mut num_buf) / median_in_place(&mut den_buf));
    }
    let ratios = sorted(&ratios);
    (
        point,
        [
            quantile_sorted(&ratios, 0.025),
            quantile_sorted(&ratios, 0.975),
        ],
    )
}

/// All statistics of one sample set (milliseconds). Panics on empty input: callers
/// always have at least one measured run.
pub fn summarize(samples_ms: &[f64], seed: u64) -> LatencyStats {
    let s = sorted(samples_ms);
    LatencyStats {
        n: s.len(),
        min_ms: s[0],
        median_ms: quantile_sorted(&s, 0.5),
        mean_ms: mean(&s),
        p90_ms: quantile_sorted(&s, 0.9),
        p99_ms: quantile_sorted(&s, 0.99),
        max_ms: s[s.len() - 1],
        std_dev_ms: std_dev(&s),
        mad_ms: mad(&s),
        median_ci95_ms: bootstrap_median_ci(samples_ms, seed),
        outliers: outlier_indices(&s).len(),
    }
}

/// A hyperfine-like warning when the measurement looks disturbed, or None.
pub fn noise_warning(name: &str, stats: &LatencyStats) -> Option<String> {
    let share = stats.outliers as f64 / stats.n.max(1) as f64;
    if stats.n >= 10 && share > NOISY_OUTLIER_SHARE {
        Some(format!(
            "{name}: {} of {} runs ({:.0} %) are statistical outliers. \
             Other programs or frequency scaling may have disturbed the measurement; \
             consider a quiet system, `--cpu N` pinning, `--cooldown` or more `--warmup-runs`.",
            stats.outliers,
            stats.n,
            share * 100.0
        ))
    } else if stats.median_ms > 0.0 && stats.std_dev_ms / stats.median_ms > 0.25 {
        Some(format!(
            "{name}: the standard deviation is {:.0} % of the median; the results may be noisy.",
            100.0 * stats.std_dev_ms / stats.median_ms
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sample_statistics() {
        // Values checked with numpy: np.percentile(x, [50, 90, 99]), np.std(x, ddof=1).
        let x = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let s = summarize(&x, 1);
        assert_eq!(s.n, 8);
        assert_eq!(s.min_ms, 2.0);
        assert_eq!(s.max_ms, 9.0);
        assert_eq!(s.median_ms, 4.5);
        assert_eq!(s.mean_ms, 5.0);
        assert!((s.p90_ms - 7.6).abs() < 1e-12);
        assert!((s.p99_ms - 8.86).abs() < 1e-12);
        assert!((s.std_dev_ms - 2.138_089_935_299_395).abs() < 1e-12);
        // |x - 4.5| = 2.5 .5 .5 .5 .5 .5 2.5 4.5 -> median 0.5
        assert_eq!(s.mad_ms, 0.5);
        assert!(s.median_ci95_ms[0] <= 4.5 && s.median_ci95_ms[1] >= 4.5);
    }

    #[test]
    fn quantile_of_odd_and_single() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(quantile_sorted(&[7.0], 0.99), 7.0);
        assert_eq!(std_dev(&[7.0]), 0.0);
    }

    #[test]
    fn median_in_place_matches_sorted_median() {
        for n in 1..20 {
            let v: Vec<f64> = (0..n).map(|i| ((i * 37) % 11) as f64).collect();
            let mut buf = v.clone();
            assert_eq!(median_in_place(&mut buf), median(&v), "n = {n}");
        }
    }

    #[test]
    fn outliers_by_modified_z_score() {
        let mut x: Vec<f64> = (0..20).map(|i| 10.0 + (i % 5) as f64 * 0.1).collect();
        x.push(50.0);
        let idx = outlier_indices(&x);
        assert_eq!(idx, vec![20]);
        assert!(
            outlier_indices(&[1.0, 1.0, 1.0, 5.0]).is_empty(),
            "MAD 0: no outliers"
        );
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_median() {
        let x: Vec<f64> = (0..200)
            .map(|i| 1.0 + ((i * 7919) % 100) as f64 / 100.0)
            .collect();
        let a = bootstrap_median_ci(&x, 42);
        let b = bootstrap_median_ci(&x, 42);
        assert_eq!(a, b);
        let m = median(&x);
        assert!(a[0] <= m && m <= a[1]);
        assert!(a[1] - a[0] < 0.2, "interval {a:?} too wide for 200 samples");
    }

    #[test]
    fn paired_ratio_cancels_shared_drift() {
        // The denominator is exactly half the numerator in every round, with strong
        // drift across rounds: the paired interval is exactly [2, 2], the unpaired one is wide.
        let den: Vec<f64> = (0..100).map(|i| 1.0 + i as f64 * 0.05).collect();
        let num: Vec<f64> = den.iter().map(|d| 2.0 * d).collect();
        let (p, ci) = bootstrap_ratio_of_medians(&num, &den, true, 3);
        assert!((p - 2.0).abs() < 1e-12);
        assert!(
            (ci[0] - 2.0).abs() < 1e-9 && (ci[1] - 2.0).abs() < 1e-9,
            "{ci:?}"
        );
        let (_, ci_unpaired) = bootstrap_ratio_of_medians(&num, &den, false, 3);
        assert!(ci_unpaired[1] - ci_unpaired[0] > 0.2, "{ci_unpaired:?}");
    }

    #[test]
    fn noise_warning_when_many_outliers() {
        let mut x = vec![10.0; 40];
        for (i, v) in x.iter_mut().enumerate() {
            *v += (i % 4) as f64 * 0.01;
        }
        assert!(noise_warning("m", &summarize(&x, 1)).is_none());
        for v in x.iter_mut().take(5) {
            *v = 30.0;
        }
        let w = noise_warning("m", &summarize(&x, 1)).expect("warning");
        assert!(w.contains("outliers"), "{w}");
    }
}

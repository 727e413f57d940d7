//! The paper's latency claims (data in `bench-harness/claims.toml`) and the verdicts
//! drawn from interleaved measurements.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::HarnessError;

/// The claims file shipped with the crate (embedded so the armv7 binary carries it).
pub const DEFAULT_CLAIMS_TOML: &str = include_str!("../../claims.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimsFile {
    pub source: String,
    /// Relative tolerance: a claim holds when the interval reaches `claimed * (1 - tolerance)`.
    pub tolerance: f64,
    /// Intervals wider than this share of the point estimate are inconclusive.
    pub max_ci_relative_width: f64,
    #[serde(rename = "claim")]
    pub claims: Vec<Claim>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub budget_mflops: u32,
    pub fd_model: String,
    pub other_model: String,
    /// latency(other) / latency(FD-MobileNet) claimed by the paper.
    pub claimed_speedup: f64,
    #[serde(default)]
    pub note: Option<String>,
}

impl ClaimsFile {
    pub fn builtin() -> ClaimsFile {
        Self::parse("claims.toml", DEFAULT_CLAIMS_TOML).expect("built-in claims.toml is valid")
    }

    pub fn parse(origin: &str, text: &str) -> Result<ClaimsFile, HarnessError> {
        let file: ClaimsFile = toml::from_str(text).map_err(|e| HarnessError::BadInput {
            file: origin.into(),
            problem: format!("not a valid claims file: {}", e.message()),
        })?;
        if !(0.0..1.0).contains(&file.tolerance) || file.max_ci_relative_width <= 0.0 {
            return Err(HarnessError::BadInput {
                file: origin.into(),
                problem: "tolerance must be in [0, 1) and max_ci_relative_width > 0".into(),
            });
        }
        Ok(file)
    }

    pub fn load(path: &Path) -> Result<ClaimsFile, HarnessError> {
        let text = std::fs::read_to_string(path).map_err(|e| HarnessError::BadInput {
            file: path.display().to_string(),
            problem: e.to_string(),
        })?;
        Self::parse(&path.display().to_string(), &text)
    }
}

/// Verdict on one claim, in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "holds")]
    Holds,
    #[serde(rename = "faster but less than claimed")]
    FasterButLess,
    #[serde(rename = "not faster")]
    NotFaster,
    #[serde(rename = "inconclusive")]
    Inconclusive,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Holds => "holds",
            Verdict::FasterButLess => "faster but less than claimed",
            Verdict::NotFaster => "not faster",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// Verdict from a measured speedup `point` with 95 % interval `ci`, in this order:
/// 1. the whole interval is below 1: "not faster" (however wide it is);
/// 2. the whole interval is at or above `claimed * (1 - tolerance)`: "holds" (however wide);
/// 3. the interval is wider than `max_rel_width * point`: "inconclusive";
/// 4. the interval's upper end reaches `claimed * (1 - tolerance)`: "holds"
///    (a speedup above the claim also holds: the paper claims at least that much);
/// 5. the interval lies entirely above 1: "faster but less than claimed";
/// 6. otherwise (a narrow interval containing 1): "not faster".
pub fn verdict(
    point: f64,
    ci: [f64; 2],
    claimed: f64,
    tolerance: f64,
    max_rel_width: f64,
) -> Verdict {
    let [lo, hi] = ci;
    let reach = claimed * (1.0 - tolerance);
    if hi < 1.0 {
        Verdict::NotFaster
    } else if lo >= reach {
        Verdict::Holds
    } else if (hi - lo) > max_rel_width * point {
        Verdict::Inconclusive
    } else if hi >= reach {
        Verdict::Holds
    } else if lo > 1.0 {
        Verdict::FasterButLess
    } else {
        Verdict::NotFaster
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f64 = 0.05;
    const W: f64 = 0.25;

    #[test]
    fn builtin_claims_cover_every_budget_twice() {
        let c = ClaimsFile::builtin();
        for budget in [140, 40, 12] {
            let n = c
                .claims
                .iter()
                .filter(|c| c.budget_mflops == budget)
                .count();
            assert_eq!(n, 2, "budget {budget}");
        }
        for claim in &c.claims {
            assert!(
                model_zoo::find_model(&claim.fd_model).is_some(),
                "{}",
                claim.fd_model
            );
            assert!(
                model_zoo::find_model(&claim.other_model).is_some(),
                "{}",
                claim.other_model
            );
        }
        let headline = c
            .claims
            .iter()
            .find(|c| c.other_model == "shufflenet_g3_0.25");
        assert_eq!(headline.map(|c| c.claimed_speedup), Some(1.82));
    }

    #[test]
    fn holds_exactly_at_the_tolerance_edge() {
        let edge = 1.82 * (1.0 - TOL);
        assert_eq!(verdict(1.7, [1.6, edge], 1.82, TOL, W), Verdict::Holds);
        let below = edge - 1e-9;
        assert_eq!(
            verdict(1.7, [1.6, below], 1.82, TOL, W),
            Verdict::FasterButLess
        );
    }

    #[test]
    fn above_the_claim_holds() {
        assert_eq!(verdict(2.5, [2.4, 2.6], 1.82, TOL, W), Verdict::Holds);
    }

    #[test]
    fn faster_but_less_needs_lower_end_above_one() {
        assert_eq!(
            verdict(1.05, [1.001, 1.04], 1.33, TOL, W),
            Verdict::FasterButLess
        );
        assert_eq!(verdict(1.02, [1.0, 1.04], 1.33, TOL, W), Verdict::NotFaster);
    }

    #[test]
    fn not_faster_even_when_wide_if_entirely_below_one() {
        assert_eq!(verdict(0.5, [0.2, 0.9], 1.1, TOL, W), Verdict::NotFaster);
        assert_eq!(verdict(0.9, [0.88, 0.92], 1.1, TOL, W), Verdict::NotFaster);
    }

    #[test]
    fn inconclusive_at_the_width_edge() {
        // width exactly max_rel_width * point is still conclusive; a hair wider is not.
        assert_eq!(verdict(1.0, [0.9, 1.15], 1.1, TOL, W), Verdict::Holds);
        assert_eq!(
            verdict(1.0, [0.9, 1.150001], 1.1, TOL, W),
            Verdict::Inconclusive
        );
    }

    #[test]
    fn wide_interval_entirely_above_the_claim_holds() {
        assert_eq!(verdict(3.1, [2.38, 3.26], 1.11, TOL, W), Verdict::Holds);
        // The same width straddling the claim is inconclusive.
        assert_eq!(
            verdict(1.2, [0.9, 1.5], 1.11, TOL, W),
            Verdict::Inconclusive
        );
    }

    #[test]
    fn claims_file_errors_name_the_file() {
        let e = ClaimsFile::parse("my.toml", "tolerance = 2").unwrap_err();
        assert!(e.to_string().contains("my.toml"), "{e}");
    }

    #[test]
    fn verdict_serializes_as_words() {
        let s = serde_json::to_string(&Verdict::FasterButLess).unwrap();
        assert_eq!(s, "\"faster but less than claimed\"");
    }
}

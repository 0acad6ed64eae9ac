//! A statistical audit of the count mechanism on neighbouring datasets.
//!
//! D holds 100 people, D' one more. For every event "noisy count >= t" and
//! "noisy count <= t", the probabilities under D and D' are estimated from
//! 20,000 draws each, with one-sided Chernoff (relative-entropy) confidence
//! bounds, and `ln(lower bound of P[E | one] / upper bound of P[E | other])`
//! is a lower bound on the true epsilon holding with probability at least
//! `1 - 1e-6` over all events at once (Bonferroni). The audit must stay at
//! or below the claimed epsilon for the real mechanism, and must exceed it
//! for a mechanism that uses a quarter of the noise: so it can fail.

use unseen_policy::dp::count_mechanism_for_audit;

const DRAWS: usize = 20_000;
const FAILURE: f64 = 1e-6;
const D: i64 = 100;

/// Relative entropy between Bernoulli(p) and Bernoulli(q).
fn kl(p: f64, q: f64) -> f64 {
    let term = |a: f64, b: f64| if a == 0.0 { 0.0 } else { a * (a / b).ln() };
    term(p, q) + term(1.0 - p, 1.0 - q)
}

/// The Chernoff bound on a Bernoulli probability from `hits` of `n` draws:
/// the furthest `q` on the given side with `n * kl(hits / n, q) <= ln(1 / beta)`.
fn bound(hits: usize, n: usize, beta: f64, upper: bool) -> f64 {
    let p = hits as f64 / n as f64;
    let limit = (1.0 / beta).ln() / n as f64;
    let (mut inside, mut outside) = if upper { (p, 1.0) } else { (p, 0.0) };
    for _ in 0..100 {
        let mid = (inside + outside) / 2.0;
        if kl(p, mid) <= limit {
            inside = mid;
        } else {
            outside = mid;
        }
    }
    if upper { outside } else { outside.max(0.0) }
}

/// The largest epsilon lower bound over all threshold events.
fn empirical_epsilon(d: &[i64], d_prime: &[i64]) -> f64 {
    let thresholds: Vec<i64> = (D - 15..=D + 16).collect();
    // Two event families, two directions, two bounds per ratio.
    let beta = FAILURE / (thresholds.len() * 2 * 2 * 2) as f64;
    let mut best = 0.0f64;
    for &t in &thresholds {
        let events: [&dyn Fn(i64) -> bool; 2] = [&|x| x >= t, &|x| x <= t];
        for event in events {
            let a = d.iter().filter(|&&x| event(x)).count();
            let b = d_prime.iter().filter(|&&x| event(x)).count();
            for (one, other) in [(a, b), (b, a)] {
                let lower = bound(one, DRAWS, beta, false);
                let upper = bound(other, DRAWS, beta, true);
                if lower > 0.0 {
                    best = best.max((lower / upper).ln());
                }
            }
        }
    }
    best
}

fn audit(epsilon: f64, scale_divisor: f64) -> (f64, f64) {
    let m = count_mechanism_for_audit(epsilon, scale_divisor).unwrap();
    let d = m.sample(D, DRAWS).unwrap();
    let d_prime = m.sample(D + 1, DRAWS).unwrap();
    (empirical_epsilon(&d, &d_prime), m.claimed_epsilon)
}

#[test]
fn chernoff_bounds_bracket_the_observed_frequency() {
    let (lo, hi) = (bound(500, 1000, 1e-3, false), bound(500, 1000, 1e-3, true));
    assert!(lo < 0.5 && 0.5 < hi, "[{lo}, {hi}]");
    // Normal approximation: 0.5 ± 3.1 * 0.0158, Chernoff is a little wider.
    assert!(lo > 0.42 && hi < 0.58, "[{lo}, {hi}]");
    assert_eq!(bound(0, 1000, 1e-3, false), 0.0);
}

#[test]
fn count_mechanism_empirical_epsilon_stays_below_the_claim() {
    for epsilon in [0.5, 1.0] {
        let (found, claimed) = audit(epsilon, 1.0);
        assert!(
            (claimed - epsilon).abs() < 1e-9,
            "privacy map claims {claimed} for epsilon {epsilon}"
        );
        assert!(
            found <= claimed,
            "audit found epsilon >= {found} but the mechanism claims {claimed}"
        );
        // The audit has power: it sees most of the true loss.
        assert!(
            found >= 0.5 * claimed,
            "audit too weak to mean anything: {found} for {claimed}"
        );
    }
}

#[test]
fn audit_catches_a_mechanism_with_a_quarter_of_the_noise() {
    let (found, claimed) = audit(1.0, 4.0);
    assert!(
        found > claimed,
        "a mechanism with a quarter of the noise passed the audit: found {found}, claimed {claimed}"
    );
}

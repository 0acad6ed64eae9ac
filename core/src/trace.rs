//! Traceable extracts: a keyed fingerprint in every masked extract, and
//! `unseen trace FILE`, which names the extract (its grant and user) a
//! leaked file came from, with a confidence, or says it is unknown.
//!
//! **The fingerprint is the choice of people.** Each extract draws a fresh
//! 256-bit key. A person is in the extract when a keyed draw on their
//! privacy unit falls under `fraction × share`, where `share` is chosen per
//! equivalence class (the masked identifying values) by the same key:
//! [`KEEP_SHARES`] `[0.7, 0.9]`, so an extract holds at most 90 % of
//! anyone's class and 80 % of the people on average. Which people an extract
//! holds changes no value and no mask, and the k-anonymity and l-diversity
//! checks run on what was chosen, so every rule still holds; a sample is
//! what an extract always was. Two extracts of the same columns differ in
//! most classes by about a fifth of their people.
//!
//! **Tracing is a likelihood-ratio test on class counts**, the only trace
//! masked rows keep of who is in them. A leaked file `L` (any subset of an
//! extract's rows, in any order, in any format, with columns dropped or
//! added) is compared with every extract `E` the service released,
//! projected on the columns they share: under "L is a sample of E's rows"
//! the class counts of `L` are multivariate hypergeometric,
//! `P(L | E) = Π C(e_t, l_t) / C(|E|, |L|)`, and a file with a row `E`
//! does not hold cannot come from it. The null hypothesis is that `L` was
//! drawn from the whole dataset `D` (masked the same way) and never
//! released. The file is attributed to the `E` of highest likelihood when
//! `ln P(L|E) − ln P(L|D)` is at least `τ = ln(1000 · candidates)`: both
//! are probability distributions over files, so under the null the ratio
//! has mean at most 1 and reaches `e^τ` with probability at most `e^−τ`
//! (Markov's inequality), and by the union bound at most one file in a
//! thousand that was never released is attributed to anyone. Without a
//! population to compare with (a destroyed dataset, columns no extract of
//! it could have) the file is unknown. The confidence is the posterior of
//! `E` among all candidates and the null with equal priors.
//!
//! The verdict is all that is shown: per-candidate scores are computed
//! from exact counts of the population, so they stay inside.
//!
//! Nothing here reads a file or the store: the core's `Domain::trace`
//! gathers the candidates and the population and records the verdict.

use std::collections::HashMap;

/// The share of a class's people an extract may hold, one chosen per class
/// by the extract's key.
pub const KEEP_SHARES: [f64; 2] = [0.7, 0.9];

/// False attributions allowed per file that was never released, before
/// dividing among candidates: the threshold is `ln(1000 · candidates)`.
const FALSE_ATTRIBUTIONS_PER_FILE: f64 = 1e-3;

/// An extract's fingerprint key: the keyed choice of people.
pub struct Fingerprint {
    key: ring::hmac::Key,
    commitment: String,
}

impl std::fmt::Debug for Fingerprint {
    /// The commitment only: the key stays secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fingerprint")
            .field("commitment", &self.commitment)
            .finish_non_exhaustive()
    }
}

impl Fingerprint {
    /// A fingerprint from 32 secret random bytes.
    pub fn new(secret: &[u8; 32]) -> Fingerprint {
        Fingerprint {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            commitment: crate::util::sha256_hex(secret),
        }
    }

    /// SHA-256 of the key, recorded in the ledger with the extract. The key
    /// itself is not kept: tracing compares a file with the stored
    /// extract, which is what the key chose.
    pub fn commitment(&self) -> &str {
        &self.commitment
    }

    /// A uniform number in [0, 1) keyed on `domain` and `parts`.
    fn draw(&self, domain: &[u8], parts: &[&str]) -> f64 {
        let mut context = ring::hmac::Context::with_key(&self.key);
        context.update(domain);
        for part in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            context.update(&(part.len() as u64).to_le_bytes());
            context.update(part.as_bytes());
        }
        let tag = context.sign();
        let mut bits = [0u8; 8];
        bits.copy_from_slice(&tag.as_ref()[..8]);
        (u64::from_le_bytes(bits) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The share of class `class` (masked identifying values) kept.
    pub fn share(&self, class: &[String]) -> f64 {
        let parts: Vec<&str> = class.iter().map(String::as_str).collect();
        if self.draw(b"class", &parts) < 0.5 {
            KEEP_SHARES[0]
        } else {
            KEEP_SHARES[1]
        }
    }

    /// Whether the person `unit`, of class `class`, is in an extract
    /// sampling `fraction` of people.
    pub fn keeps(&self, unit: &str, class: &[String], fraction: f64) -> bool {
        self.draw(b"unit", &[unit]) < fraction * self.share(class)
    }
}

/// A table as text cells: a leaked file, an extract, a dataset masked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Rows counted by their values in some columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub total: u64,
    pub by_row: HashMap<Vec<String>, u64>,
}

impl TextTable {
    /// Whether the table has every one of `columns`.
    pub fn has_columns(&self, columns: &[String]) -> bool {
        columns.iter().all(|c| self.columns.contains(c))
    }

    /// The table with only those of its columns that `keep` names.
    pub fn project(&self, keep: &[String]) -> TextTable {
        let at: Vec<usize> = (0..self.columns.len())
            .filter(|&i| keep.contains(&self.columns[i]))
            .collect();
        TextTable {
            columns: at.iter().map(|&i| self.columns[i].clone()).collect(),
            rows: self
                .rows
                .iter()
                .map(|r| at.iter().map(|&i| r[i].clone()).collect())
                .collect(),
        }
    }

    /// The rows counted by their values in `columns`; `None` when the table
    /// lacks one of them.
    pub fn counts(&self, columns: &[String]) -> Option<Counts> {
        let at: Vec<usize> = columns
            .iter()
            .map(|c| self.columns.iter().position(|own| own == c))
            .collect::<Option<_>>()?;
        let mut counts = Counts::default();
        for row in &self.rows {
            let key: Vec<String> = at.iter().map(|&i| row[i].clone()).collect();
            *counts.by_row.entry(key).or_default() += 1;
            counts.total += 1;
        }
        Some(counts)
    }
}

/// `ln n!`: exact below 256, Stirling's series above (error under 1e-12).
fn ln_factorial(n: u64) -> f64 {
    if n < 256 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x.powi(3))
}

fn ln_choose(n: u64, k: u64) -> f64 {
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// `ln P(leaked | drawn from source)` under sampling rows without
/// replacement; `None` when the source does not hold every row.
pub fn log_likelihood(leaked: &Counts, source: &Counts) -> Option<f64> {
    if leaked.total > source.total {
        return None;
    }
    let mut sum = 0.0;
    for (row, &l) in &leaked.by_row {
        let e = source.by_row.get(row).copied().unwrap_or(0);
        if l > e {
            return None;
        }
        sum += ln_choose(e, l);
    }
    Some(sum - ln_choose(source.total, leaked.total))
}

/// An extract that could be the source of a leaked file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Candidate {
    pub output: String,
    pub job: String,
    pub grant: String,
    /// Who ran the extract.
    pub user: String,
    /// Who downloaded its release, in order.
    pub downloaded_by: Vec<String>,
    pub dataset: String,
    /// `approved` (released), `quarantined` or `rejected`.
    pub status: String,
}

/// A candidate's score against a leaked file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Score {
    pub candidate: Candidate,
    /// `ln P(L|E) − ln P(L|D)`, in nats; `None` when the file cannot come
    /// from it (columns it lacks, or rows it does not hold).
    pub log_ratio: Option<f64>,
}

/// What `trace` concludes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// The source, when one is proven; `None` for unknown.
    pub source: Option<Candidate>,
    /// The posterior of the source among every candidate and the null.
    pub confidence: f64,
    /// The threshold its log ratio passed, in nats.
    pub threshold: f64,
    /// Rows and columns of the file.
    pub rows: u64,
    pub columns: Vec<String>,
    /// Every candidate with its score, best first: for the service only
    /// (the scores are computed from the population's exact counts).
    #[serde(skip)]
    pub scores: Vec<Score>,
}

/// The extracts a leaked file is tested against, counted on its columns,
/// with their datasets' populations: built once, asked about many files
/// with those columns.
#[derive(Debug, Clone)]
pub struct Sources {
    columns: Vec<String>,
    candidates: Vec<(Candidate, Option<Counts>)>,
    populations: HashMap<String, Option<Counts>>,
}

impl Sources {
    /// `candidates` with their released tables; `population` gives, for a
    /// dataset, the counts of all its people's rows masked like an extract
    /// of `columns` (`None` when none can be made).
    pub fn new(
        columns: &[String],
        candidates: Vec<(Candidate, TextTable)>,
        population: &dyn Fn(&str) -> Option<Counts>,
    ) -> Sources {
        let mut populations: HashMap<String, Option<Counts>> = HashMap::new();
        let candidates = candidates
            .into_iter()
            .map(|(candidate, table)| {
                let counts = table.counts(columns);
                if counts.is_some() && !populations.contains_key(&candidate.dataset) {
                    populations.insert(candidate.dataset.clone(), population(&candidate.dataset));
                }
                (candidate, counts)
            })
            .collect();
        Sources {
            columns: columns.to_vec(),
            candidates,
            populations,
        }
    }

    /// Attributes `leaked` (with the columns these sources were built
    /// for) to one candidate, or to none.
    pub fn attribute(&self, leaked: &TextTable) -> Verdict {
        let leaked_counts = leaked.counts(&self.columns).unwrap_or_default();
        let threshold = (self.candidates.len().max(1) as f64 / FALSE_ATTRIBUTIONS_PER_FILE).ln();
        let nulls: HashMap<&str, Option<f64>> = self
            .populations
            .iter()
            .map(|(dataset, d)| {
                let null = d.as_ref().and_then(|d| log_likelihood(&leaked_counts, d));
                (dataset.as_str(), null)
            })
            .collect();
        let mut scores: Vec<(Score, Option<f64>)> = self
            .candidates
            .iter()
            .map(|(candidate, counts)| {
                let log_source = counts
                    .as_ref()
                    .and_then(|s| log_likelihood(&leaked_counts, s));
                // Without the population's likelihood there is no test:
                // the candidate is not named (a file the population cannot
                // explain is explained by no extract of it either).
                let null = nulls.get(candidate.dataset.as_str()).copied().flatten();
                let log_ratio = log_source.zip(null).map(|(ls, n)| ls - n);
                let score = Score {
                    candidate: candidate.clone(),
                    log_ratio,
                };
                (score, log_source)
            })
            .collect();
        scores.sort_by(|a, b| {
            let key = |s: &Score| s.log_ratio.unwrap_or(f64::NEG_INFINITY);
            key(&b.0).total_cmp(&key(&a.0))
        });
        // The posterior with equal priors over the candidates and each null.
        let logs: Vec<f64> = scores
            .iter()
            .filter_map(|(_, l)| *l)
            .chain(nulls.values().filter_map(|n| *n))
            .collect();
        let peak = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let evidence: f64 = logs.iter().map(|l| (l - peak).exp()).sum();
        let (source, confidence) = match scores.first() {
            Some((score, Some(log_source))) if score.log_ratio.is_some_and(|r| r >= threshold) => (
                Some(score.candidate.clone()),
                (log_source - peak).exp() / evidence,
            ),
            _ => (None, 0.0),
        };
        Verdict {
            source,
            confidence,
            threshold,
            rows: leaked_counts.total,
            columns: self.columns.clone(),
            scores: scores.into_iter().map(|(s, _)| s).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_factorial_is_continuous_where_the_series_takes_over() {
        let exact: f64 = (2..=300u64).map(|i| (i as f64).ln()).sum();
        assert!((ln_factorial(300) - exact).abs() < 1e-9);
    }

    #[test]
    fn a_subset_is_more_likely_from_its_source_than_from_a_stranger() {
        let source = Counts {
            total: 10,
            by_row: HashMap::from([(vec!["a".into()], 9), (vec!["b".into()], 1)]),
        };
        let other = Counts {
            total: 10,
            by_row: HashMap::from([(vec!["a".into()], 1), (vec!["b".into()], 9)]),
        };
        let leaked = Counts {
            total: 4,
            by_row: HashMap::from([(vec!["a".into()], 4)]),
        };
        let from_source = log_likelihood(&leaked, &source).unwrap();
        let from_other = log_likelihood(&leaked, &other);
        assert!(from_other.is_none(), "it holds one of the four rows only");
        assert!(from_source > -1.0, "{from_source}");
    }
}

//! Automatic checks on every quarantined output, for the reviewer.
//!
//! Pure functions over a table. Findings name the column, the row and what
//! was found — never the value itself, so a finding can be shown, logged and
//! written to the ledger. Exact values of prohibited columns are matched by
//! keyed hash ([`ProhibitedIndex`]): the index holds no plaintext.

use std::collections::BTreeMap;

use udf_sdk::{ColumnValues, Table};

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A value equal to a value of a prohibited dataset column.
    ProhibitedValue,
    /// An 18-character resident ID with a valid check character.
    ResidentId,
    /// An 11-digit mainland mobile number.
    PhoneNumber,
    /// A 16–19 digit number passing the Luhn check.
    BankCard,
    /// An 18-character unified social credit code with a valid check character.
    CreditCode,
    /// An exact count below the minimum group size.
    SmallCell,
    /// An exact value that differs from an earlier release of the grant by
    /// less than the minimum group size (a differencing risk).
    Differencing,
    /// Rows of a masked extract alike in every identifying column, fewer
    /// than the minimum group size.
    SmallClass,
    /// A class of a masked extract with fewer distinct values of a
    /// sensitive column than the manifest's `l_diversity`.
    LowDiversity,
}

/// One finding, without the value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub column: String,
    pub row: usize,
    /// Whether this finding blocks approval.
    pub blocking: bool,
    pub detail: String,
}

/// Keyed hashes of every value of the prohibited text columns of a dataset.
/// `hash` is supplied by the caller (an HMAC under a per-dataset key), so the
/// index never holds a value in plaintext.
#[derive(Debug, Clone, Default)]
pub struct ProhibitedIndex {
    hashes: Vec<[u8; 8]>,
}

impl ProhibitedIndex {
    /// Builds the index from already-hashed values.
    pub fn from_hashes(mut hashes: Vec<[u8; 8]>) -> Self {
        hashes.sort_unstable();
        hashes.dedup();
        ProhibitedIndex { hashes }
    }

    /// The hashes, sorted (for storage).
    pub fn hashes(&self) -> &[[u8; 8]] {
        &self.hashes
    }
}

/// A set of keyed hashes the checks look text values up in: a
/// [`ProhibitedIndex`] in memory, or the service's sorted index file, read
/// a block at a time so that its memory does not grow with the dataset.
pub trait HashIndex: Send + Sync {
    /// Whether `hash` is in the set. An index that cannot answer says yes:
    /// a value it cannot clear is treated as prohibited.
    fn contains(&self, hash: &[u8; 8]) -> bool;
}

impl HashIndex for ProhibitedIndex {
    fn contains(&self, hash: &[u8; 8]) -> bool {
        self.hashes.binary_search(hash).is_ok()
    }
}

/// The keyed hash prohibited values were indexed under.
pub type ValueHash<'a> = &'a dyn Fn(&str) -> [u8; 8];

/// Everything the checks need besides the table.
pub struct CheckContext<'a> {
    /// For each dataset involved, its prohibited-value index and the keyed
    /// hash used to build it.
    pub prohibited: Vec<(&'a dyn HashIndex, ValueHash<'a>)>,
    /// Smallest cell a non-DP output may describe.
    pub min_group_size: u32,
    /// Earlier approved releases under the same grant.
    pub earlier: &'a [Table],
}

impl std::fmt::Debug for CheckContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckContext")
            .field("min_group_size", &self.min_group_size)
            .field("earlier", &self.earlier.len())
            .finish()
    }
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Pattern detectors over one text value: every identifier-like token.
fn scan_text(text: &str) -> Vec<FindingKind> {
    let mut found = Vec::new();
    // Tokens of ASCII letters and digits; identifiers are found whole.
    for token in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        let upper = token.to_ascii_uppercase();
        if upper.len() == 18 && unseen_datasets::is_valid_resident_id(&upper) {
            found.push(FindingKind::ResidentId);
        } else if upper.len() == 18 && unseen_datasets::is_valid_credit_code(&upper) {
            found.push(FindingKind::CreditCode);
        }
        let bytes = token.as_bytes();
        if bytes.iter().all(u8::is_ascii_digit) {
            if bytes.len() == 11 && bytes[0] == b'1' && (b'3'..=b'9').contains(&bytes[1]) {
                found.push(FindingKind::PhoneNumber);
            } else if (16..=19).contains(&bytes.len()) && luhn(bytes) {
                found.push(FindingKind::BankCard);
            }
        }
    }
    found
}

fn blocking(kind: &FindingKind) -> bool {
    matches!(
        kind,
        FindingKind::ProhibitedValue
            | FindingKind::ResidentId
            | FindingKind::SmallClass
            | FindingKind::LowDiversity
    )
}

fn describe(kind: &FindingKind) -> &'static str {
    match kind {
        FindingKind::ProhibitedValue => "equals a value of a prohibited column of the dataset",
        FindingKind::ResidentId => "holds a resident ID number with a valid check character",
        FindingKind::PhoneNumber => "holds an 11-digit mobile phone number",
        FindingKind::BankCard => "holds a bank-card number passing the Luhn check",
        FindingKind::CreditCode => {
            "holds a unified social credit code with a valid check character"
        }
        FindingKind::SmallCell => "is an exact count below the minimum group size",
        FindingKind::Differencing => {
            "differs from an earlier release of this grant by fewer than the minimum group size"
        }
        FindingKind::SmallClass => {
            "starts a class of rows alike in every identifying column that has fewer rows than the minimum group size"
        }
        FindingKind::LowDiversity => {
            "starts a class of rows alike in every identifying column with fewer distinct values of this sensitive column than the manifest's l_diversity"
        }
    }
}

fn finding(kind: FindingKind, column: &str, row: usize) -> Finding {
    Finding {
        blocking: blocking(&kind),
        detail: format!("column `{column}` row {row} {}", describe(&kind)),
        kind,
        column: column.to_string(),
        row,
    }
}

/// Runs every check on `table`.
pub fn check_output(table: &Table, ctx: &CheckContext<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let min = i64::from(ctx.min_group_size);
    for column in &table.columns {
        let name = column.name.as_str();
        match &column.values {
            ColumnValues::Text(values) => {
                for (row, v) in values.iter().enumerate() {
                    if ctx
                        .prohibited
                        .iter()
                        .any(|(index, hash)| index.contains(&hash(v)))
                    {
                        findings.push(finding(FindingKind::ProhibitedValue, name, row));
                    }
                    findings.extend(scan_text(v).into_iter().map(|k| finding(k, name, row)));
                }
            }
            ColumnValues::Int(values) => {
                for (row, v) in values.iter().enumerate() {
                    findings.extend(
                        scan_text(&v.to_string())
                            .into_iter()
                            .map(|k| finding(k, name, row)),
                    );
                    if (1..min).contains(v) {
                        findings.push(finding(FindingKind::SmallCell, name, row));
                    }
                }
                findings.extend(differencing(table, name, values, ctx));
            }
            // Floats and DP estimates carry no identifiers; noised values need no cell checks.
            ColumnValues::Float(_) | ColumnValues::Estimate(_) => {}
        }
    }
    findings
}

/// The equivalence classes of a masked extract as released: rows alike in
/// every `identifying` column. Flags each class of fewer than `k` rows,
/// and each class with fewer than `l` distinct values of a `sensitive`
/// column, at its first row (blocking: the extract's suppression should
/// have removed them). The released table holds no privacy unit, so rows
/// are counted: a class of k people has at least k rows, and this checks
/// the release independently of how it was made. Columns missing from the
/// table are ignored.
pub fn check_classes(
    table: &Table,
    identifying: &[String],
    sensitive: &[String],
    k: u32,
    l: u32,
) -> Vec<Finding> {
    let text = |name: &String| match table.column(name) {
        Some(ColumnValues::Text(v)) => Some(v),
        _ => None,
    };
    let keys: Vec<&Vec<String>> = identifying.iter().filter_map(text).collect();
    let sensitive: Vec<(&String, &Vec<String>)> = sensitive
        .iter()
        .filter_map(|name| text(name).map(|v| (name, v)))
        .collect();
    let mut classes: BTreeMap<Vec<&str>, Vec<usize>> = BTreeMap::new();
    for row in 0..table.rows() {
        let key = keys.iter().map(|v| v[row].as_str()).collect();
        classes.entry(key).or_default().push(row);
    }
    let class_column = if identifying.is_empty() {
        "(all rows)".to_string()
    } else {
        identifying.join(", ")
    };
    let mut found = Vec::new();
    for rows in classes.values() {
        let first = rows[0];
        if rows.len() < k as usize {
            found.push(finding(FindingKind::SmallClass, &class_column, first));
        }
        for (name, values) in &sensitive {
            let distinct: std::collections::BTreeSet<&str> =
                rows.iter().map(|&r| values[r].as_str()).collect();
            if distinct.len() < l as usize {
                found.push(finding(FindingKind::LowDiversity, name, first));
            }
        }
    }
    found.sort_by_key(|f| f.row);
    found
}

/// Exact integers that differ from the same cell of an earlier release by
/// 1..min: subtracting the two would describe fewer than `min` people.
fn differencing(table: &Table, name: &str, values: &[i64], ctx: &CheckContext<'_>) -> Vec<Finding> {
    let min = i64::from(ctx.min_group_size);
    let keys = row_keys(table);
    let mut found = Vec::new();
    for earlier in ctx.earlier {
        let Some(ColumnValues::Int(old)) = earlier.column(name) else {
            continue;
        };
        let old_by_key: BTreeMap<String, i64> = row_keys(earlier)
            .into_iter()
            .zip(old.iter().copied())
            .collect();
        for (row, (key, v)) in keys.iter().zip(values).enumerate() {
            if let Some(o) = old_by_key.get(key)
                && (1..min).contains(&(v - o).abs())
            {
                found.push(finding(FindingKind::Differencing, name, row));
            }
        }
    }
    found
}

/// A row's identity: its text cells joined (the group keys of a release).
fn row_keys(table: &Table) -> Vec<String> {
    (0..table.rows())
        .map(|r| {
            table
                .columns
                .iter()
                .filter_map(|c| match &c.values {
                    ColumnValues::Text(v) => Some(v[r].as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\u{1f}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_known_card_numbers_and_rejects_others() {
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
    }
}

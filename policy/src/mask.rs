//! Masked row-level extracts: the seeds' "sampled and masked data for
//! development". Every column leaves through its manifest mask rule (open
//! columns as they are), and rows whose quasi-identifiers are shared by
//! fewer than `k` rows are suppressed, with a report of what was removed.

use std::collections::BTreeMap;

use udf_sdk::{ColumnValues, Table};

use crate::admission::Refusal;
use crate::manifest::{Class, ColumnSpec, Manifest, MaskRule};

/// Applies a mask rule to one value rendered as text.
pub fn mask_value(rule: &MaskRule, value: &str, pseudonym: &dyn Fn(&str) -> String) -> String {
    match rule {
        MaskRule::KeepPrefixSuffix { prefix, suffix } => {
            let chars: Vec<char> = value.chars().collect();
            let n = chars.len();
            if prefix + suffix >= n {
                // Too short to keep anything without revealing it all.
                return "*".repeat(n.max(1));
            }
            let mut out: String = chars[..*prefix].iter().collect();
            out.push_str(&"*".repeat(n - prefix - suffix));
            out.extend(&chars[n - suffix..]);
            out
        }
        MaskRule::Range { width } => match value.parse::<f64>() {
            Ok(v) => {
                let lo = (v / width).floor() * width;
                format!("{lo}-{}", lo + width - 1.0)
            }
            Err(_) => "*".to_string(),
        },
        MaskRule::Hash => pseudonym(value),
        MaskRule::Suppress => "*".to_string(),
        MaskRule::Keep => value.to_string(),
    }
}

/// Checks that every requested column may leave in an extract and says how.
pub fn plan_extract<'m>(
    manifest: &'m Manifest,
    columns: &[String],
) -> Result<Vec<&'m ColumnSpec>, Refusal> {
    let mut specs = Vec::new();
    for name in columns {
        let Some(spec) = manifest.column(name) else {
            return Err(Refusal {
                column: Some(format!("{}.{name}", manifest.name)),
                rule: "unknown-column",
                message: format!("`{name}` is not a column of `{}`", manifest.name),
            });
        };
        if spec.class != Class::Open && spec.mask.is_none() {
            return Err(Refusal {
                column: Some(format!("{}.{name}", manifest.name)),
                rule: "no-mask-rule",
                message: format!(
                    "column `{name}` of `{}` is {} and has no mask rule in the manifest, so it cannot appear in an extract; leave it out or ask the data provider to declare a mask",
                    manifest.name,
                    spec.class.as_str()
                ),
            });
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// What k-anonymity suppression removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SuppressionReport {
    pub k: u32,
    pub quasi_identifiers: Vec<String>,
    pub rows_sampled: usize,
    pub rows_released: usize,
    pub rows_suppressed: usize,
    /// Equivalence classes (by masked quasi-identifiers) that were too small.
    pub classes_suppressed: usize,
    pub reason: String,
}

/// Masks `rows` (text per column, in `specs` order) and suppresses rows in
/// equivalence classes smaller than `k` over the masked quasi-identifiers.
pub fn mask_and_anonymise(
    specs: &[&ColumnSpec],
    rows: Vec<Vec<String>>,
    k: u32,
    pseudonym: &dyn Fn(&str) -> String,
) -> (Table, SuppressionReport) {
    let masked: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| {
            row.iter()
                .zip(specs)
                .map(|(v, spec)| match &spec.mask {
                    Some(rule) if spec.class != Class::Open => mask_value(rule, v, pseudonym),
                    _ => v.clone(),
                })
                .collect()
        })
        .collect();
    let qi: Vec<usize> = specs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.quasi_identifier)
        .map(|(i, _)| i)
        .collect();
    let class_of = |row: &Vec<String>| {
        qi.iter()
            .map(|&i| row[i].as_str())
            .collect::<Vec<_>>()
            .join("\u{1f}")
    };
    let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
    for row in &masked {
        *sizes.entry(class_of(row)).or_default() += 1;
    }
    let small: usize = sizes.values().filter(|n| **n < k as usize).count();
    let sampled = masked.len();
    let kept: Vec<&Vec<String>> = masked
        .iter()
        .filter(|row| sizes[&class_of(row)] >= k as usize)
        .collect();
    let mut table = Table::default();
    for (i, spec) in specs.iter().enumerate() {
        table = table.with(
            spec.name.clone(),
            ColumnValues::Text(kept.iter().map(|r| r[i].clone()).collect()),
        );
    }
    let report = SuppressionReport {
        k,
        quasi_identifiers: qi.iter().map(|&i| specs[i].name.clone()).collect(),
        rows_sampled: sampled,
        rows_released: kept.len(),
        rows_suppressed: sampled - kept.len(),
        classes_suppressed: small,
        reason: format!(
            "rows whose masked quasi-identifiers are shared by fewer than {k} sampled rows are suppressed (k-anonymity)"
        ),
    };
    (table, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> String {
        "p".into()
    }

    #[test]
    fn masks_match_the_documented_examples() {
        let keep = |p, s| MaskRule::KeepPrefixSuffix {
            prefix: p,
            suffix: s,
        };
        assert_eq!(
            mask_value(&keep(6, 4), "11010119900307123X", &none),
            "110101********123X"
        );
        assert_eq!(mask_value(&keep(3, 4), "13812345678", &none), "138****5678");
        assert_eq!(mask_value(&keep(1, 0), "张伟", &none), "张*");
        assert_eq!(
            mask_value(&MaskRule::Range { width: 10.0 }, "1987", &none),
            "1980-1989"
        );
        assert_eq!(
            mask_value(&MaskRule::Range { width: 10000.0 }, "64321", &none),
            "60000-69999"
        );
        assert_eq!(mask_value(&MaskRule::Suppress, "x", &none), "*");
        assert_eq!(
            mask_value(&keep(3, 4), "abc", &none),
            "***",
            "too short to keep anything"
        );
    }
}

//! Masked row-level extracts: the seeds' "sampled and masked data for
//! development". Every column leaves through its manifest mask rule (open
//! columns as they are). Every released column is identifying unless the
//! manifest declares it sensitive or non-identifying: rows alike in all
//! identifying columns after masking form an equivalence class, and a
//! class is released only if it holds at least k people (the dataset's
//! `min_group_size`) and at least l distinct values of every sensitive
//! column (`l_diversity`). An identifying column whose masked values are
//! nearly unique on their own is refused before anything is sampled.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use udf_sdk::{ColumnValues, Table};

use crate::admission::Refusal;
use crate::manifest::{Class, ColumnSpec, ExtractRole, Manifest, MaskRule};

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

/// Share of a dataset's rows above which an identifying column is refused
/// in extracts as nearly unique: the rows whose masked value, on its own,
/// is shared by fewer than `min_group_size` people. Such a column would
/// make almost every class smaller than k (everything suppressed) and is a
/// key to each person in what is left.
pub const NEARLY_UNIQUE_SHARE: f64 = 0.5;

/// Checks that every requested column may leave in an extract and says how.
pub fn plan_extract<'m>(
    manifest: &'m Manifest,
    columns: &[String],
) -> Result<Vec<&'m ColumnSpec>, Refusal> {
    let mut specs: Vec<&ColumnSpec> = Vec::new();
    for name in columns {
        let Some(spec) = manifest.column(name) else {
            return Err(Refusal {
                column: Some(format!("{}.{name}", manifest.name)),
                rule: "unknown-column",
                message: format!("`{name}` is not a column of `{}`", manifest.name),
            });
        };
        if specs.iter().any(|s| s.name == *name) {
            return Err(Refusal {
                column: Some(format!("{}.{name}", manifest.name)),
                rule: "duplicate-column",
                message: format!("`{name}` is listed twice; list each column once"),
            });
        }
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

/// How an extract will be protected, decided from the manifest and the
/// requested columns alone: what a developer may know before review.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExtractPlan {
    /// Smallest class released, in people (the dataset's `min_group_size`).
    pub k: u32,
    /// Distinct values of each sensitive column in every released class.
    pub l: u32,
    /// Columns whose masked values form the equivalence classes.
    pub identifying: Vec<String>,
    /// Columns each released class must hold `l` distinct values of.
    pub sensitive: Vec<String>,
    /// Columns the manifest declares to identify no one.
    pub non_identifying: Vec<String>,
}

impl ExtractPlan {
    pub fn new(manifest: &Manifest, specs: &[&ColumnSpec]) -> Self {
        let of = |role: ExtractRole| {
            specs
                .iter()
                .filter(|s| s.extract == role)
                .map(|s| s.name.clone())
                .collect()
        };
        ExtractPlan {
            k: manifest.min_group_size,
            l: manifest.l_diversity,
            identifying: of(ExtractRole::Identifying),
            sensitive: of(ExtractRole::Sensitive),
            non_identifying: of(ExtractRole::NonIdentifying),
        }
    }
}

/// Masks one row (text per column, in `specs` order) by the columns' rules;
/// open columns leave as they are.
pub fn mask_row(
    specs: &[&ColumnSpec],
    row: &[String],
    pseudonym: &dyn Fn(&str) -> String,
) -> Vec<String> {
    row.iter()
        .zip(specs)
        .map(|(v, spec)| match &spec.mask {
            Some(rule) if spec.class != Class::Open => mask_value(rule, v, pseudonym),
            _ => v.clone(),
        })
        .collect()
}

/// People (distinct privacy units) seen in a group, counted up to `cap`:
/// beyond it the group is large enough and no more are kept.
#[derive(Debug, Default)]
struct People {
    units: Vec<String>,
}

impl People {
    fn add(&mut self, unit: &str, cap: usize) {
        if self.units.len() < cap && !self.units.iter().any(|u| u == unit) {
            self.units.push(unit.to_string());
        }
    }

    fn count(&self) -> usize {
        self.units.len()
    }
}

/// How unique one identifying column's masked values are on their own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ColumnUniqueness {
    pub column: String,
    pub rows: usize,
    /// Rows whose masked value fewer than k people share.
    pub rows_in_small_groups: usize,
}

impl ColumnUniqueness {
    /// More than [`NEARLY_UNIQUE_SHARE`] of the rows are in groups below k.
    pub fn nearly_unique(&self) -> bool {
        self.rows > 0 && self.rows_in_small_groups as f64 > NEARLY_UNIQUE_SHARE * self.rows as f64
    }
}

/// Counts, over a whole dataset, how many rows each identifying column
/// leaves in groups smaller than k on its own. Feed it every row
/// (`add`), then [`Uniqueness::finish`]. Memory: one entry per distinct
/// masked value, holding at most k units.
#[derive(Debug)]
pub struct Uniqueness {
    /// (position in the row, column name) of each identifying column.
    columns: Vec<(usize, String)>,
    k: usize,
    groups: Vec<HashMap<String, (usize, People)>>,
    rows: usize,
}

impl Uniqueness {
    pub fn new(specs: &[&ColumnSpec], k: u32) -> Self {
        let columns: Vec<(usize, String)> = specs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.extract == ExtractRole::Identifying)
            .map(|(i, s)| (i, s.name.clone()))
            .collect();
        Uniqueness {
            groups: columns.iter().map(|_| HashMap::new()).collect(),
            columns,
            k: k as usize,
            rows: 0,
        }
    }

    /// True when no column needs counting.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Adds one masked row (in `specs` order) of the privacy unit `unit`.
    pub fn add(&mut self, unit: &str, masked: &[String]) {
        self.rows += 1;
        for ((at, _), groups) in self.columns.iter().zip(&mut self.groups) {
            let (rows, people) = groups.entry(masked[*at].clone()).or_default();
            *rows += 1;
            people.add(unit, self.k);
        }
    }

    pub fn finish(self) -> Vec<ColumnUniqueness> {
        let k = self.k;
        self.columns
            .into_iter()
            .zip(self.groups)
            .map(|((_, column), groups)| ColumnUniqueness {
                column,
                rows: self.rows,
                rows_in_small_groups: groups
                    .values()
                    .filter(|(_, people)| people.count() < k)
                    .map(|(rows, _)| rows)
                    .sum(),
            })
            .collect()
    }
}

/// Refuses an extract whose identifying columns include a nearly unique
/// one, naming every such column and the fix. Counts stay out of the
/// message: it reaches the developer.
pub fn refuse_nearly_unique(
    manifest: &Manifest,
    measured: &[ColumnUniqueness],
) -> Result<(), Refusal> {
    let unique: Vec<&str> = measured
        .iter()
        .filter(|m| m.nearly_unique())
        .map(|m| m.column.as_str())
        .collect();
    let Some(first) = unique.first() else {
        return Ok(());
    };
    let names = unique
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(Refusal {
        column: Some(format!("{}.{first}", manifest.name)),
        rule: "nearly-unique",
        message: format!(
            "{names} of `{}`: after masking, more than {:.0}% of the dataset's rows have a value shared by fewer than {} people, so the column would tie rows to people (and k-anonymity would suppress nearly everything). Leave it out of the extract, or ask the data provider for a coarser mask or to declare it `extract = \"non_identifying\"` if no one could link it to a person",
            manifest.name,
            NEARLY_UNIQUE_SHARE * 100.0,
            manifest.min_group_size
        ),
    })
}

/// How many released classes hold a given number of people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClassSize {
    pub people: usize,
    pub classes: usize,
}

/// What the disclosure control of one extract did: for the reviewer (the
/// distribution of class sizes) and, as counts and column names only, the
/// ledger. Data-dependent: never shown to the developer before review.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExtractReport {
    #[serde(flatten)]
    pub plan: ExtractPlan,
    pub rows_sampled: usize,
    pub rows_released: usize,
    pub rows_suppressed: usize,
    /// Equivalence classes among the sampled rows, and those released.
    pub classes_sampled: usize,
    pub classes_released: usize,
    /// Classes (and their rows) suppressed for holding fewer than k people.
    pub classes_under_k: usize,
    pub rows_under_k: usize,
    /// Classes (and their rows) of at least k people suppressed for holding
    /// fewer than l distinct values of a sensitive column.
    pub classes_under_l: usize,
    pub rows_under_l: usize,
    /// Released classes by size in people, smallest first.
    pub class_sizes: Vec<ClassSize>,
    pub reason: String,
}

/// One equivalence class of sampled rows.
#[derive(Default)]
struct EquivalenceClass {
    rows: Vec<usize>,
    people: BTreeSet<String>,
    /// Distinct values of each sensitive column.
    sensitive: Vec<BTreeSet<String>>,
}

/// Masks sampled rows (the privacy unit and the text of each column, in
/// `specs` order) and releases only the rows of equivalence classes — rows
/// alike in every identifying column after masking — that hold at least
/// `k` people and at least `l` distinct values of every sensitive column.
/// The unit is used for counting people only; it is not in the table.
pub fn mask_and_anonymise(
    specs: &[&ColumnSpec],
    plan: &ExtractPlan,
    rows: Vec<(String, Vec<String>)>,
    pseudonym: &dyn Fn(&str) -> String,
) -> (Table, ExtractReport) {
    let (k, l) = (plan.k as usize, plan.l as usize);
    let role_columns = |role: ExtractRole| -> Vec<usize> {
        specs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.extract == role)
            .map(|(i, _)| i)
            .collect()
    };
    let identifying = role_columns(ExtractRole::Identifying);
    let sensitive = role_columns(ExtractRole::Sensitive);
    let masked: Vec<(String, Vec<String>)> = rows
        .into_iter()
        .map(|(unit, row)| {
            let masked = mask_row(specs, &row, pseudonym);
            (unit, masked)
        })
        .collect();
    let mut classes: BTreeMap<Vec<&str>, EquivalenceClass> = BTreeMap::new();
    for (at, (unit, row)) in masked.iter().enumerate() {
        let key: Vec<&str> = identifying.iter().map(|&i| row[i].as_str()).collect();
        let class = classes.entry(key).or_insert_with(|| EquivalenceClass {
            sensitive: vec![BTreeSet::new(); sensitive.len()],
            ..EquivalenceClass::default()
        });
        class.rows.push(at);
        class.people.insert(unit.clone());
        for (values, &i) in class.sensitive.iter_mut().zip(&sensitive) {
            values.insert(row[i].clone());
        }
    }
    let mut keep = vec![false; masked.len()];
    let (mut under_k, mut rows_under_k, mut under_l, mut rows_under_l) = (0, 0, 0, 0);
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    for class in classes.values() {
        if class.people.len() < k {
            under_k += 1;
            rows_under_k += class.rows.len();
        } else if class.sensitive.iter().any(|values| values.len() < l) {
            under_l += 1;
            rows_under_l += class.rows.len();
        } else {
            *sizes.entry(class.people.len()).or_default() += 1;
            for &at in &class.rows {
                keep[at] = true;
            }
        }
    }
    let kept: Vec<&Vec<String>> = masked
        .iter()
        .zip(&keep)
        .filter(|(_, keep)| **keep)
        .map(|((_, row), _)| row)
        .collect();
    let mut table = Table::default();
    for (i, spec) in specs.iter().enumerate() {
        table = table.with(
            spec.name.clone(),
            ColumnValues::Text(kept.iter().map(|r| r[i].clone()).collect()),
        );
    }
    let sampled = masked.len();
    let report = ExtractReport {
        plan: plan.clone(),
        rows_sampled: sampled,
        rows_released: kept.len(),
        rows_suppressed: sampled - kept.len(),
        classes_sampled: classes.len(),
        classes_released: sizes.values().sum(),
        classes_under_k: under_k,
        rows_under_k,
        classes_under_l: under_l,
        rows_under_l,
        class_sizes: sizes
            .into_iter()
            .map(|(people, classes)| ClassSize { people, classes })
            .collect(),
        reason: format!(
            "rows alike in every identifying column after masking form a class; classes of fewer than {k} people (k-anonymity), or with fewer than {l} distinct values of a sensitive column (l-diversity), are suppressed"
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

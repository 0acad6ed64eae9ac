//! Dataset manifests: the classification of every column, and their checks.
//!
//! The format is documented in `datasets/README.md`. Parsing is two steps:
//! TOML into loose fields, then [`Manifest::parse`] checks every field and
//! reports each mistake with the column and the fix.

use std::collections::BTreeSet;

use arrow::datatypes::{DataType, Schema};
use serde::Deserialize;

/// The three data classes of the classification standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 不予开放: never leaves storage in any form.
    Prohibited,
    /// 有条件开放: leaves only as a DP aggregate or masked extract.
    Conditional,
    /// 无条件开放: may be selected freely under a grant naming the dataset.
    Open,
}

impl Class {
    /// Lowercase name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Prohibited => "prohibited",
            Class::Conditional => "conditional",
            Class::Open => "open",
        }
    }
}

/// Column types a manifest may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int64,
    Float64,
    Utf8,
    Date32,
    Bool,
}

impl ColumnType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "int64" => ColumnType::Int64,
            "float64" => ColumnType::Float64,
            "utf8" => ColumnType::Utf8,
            "date32" => ColumnType::Date32,
            "bool" => ColumnType::Bool,
            _ => return None,
        })
    }

    /// Name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Utf8 => "utf8",
            ColumnType::Date32 => "date32",
            ColumnType::Bool => "bool",
        }
    }

    fn matches(self, data_type: &DataType) -> bool {
        matches!(
            (self, data_type),
            (ColumnType::Int64, DataType::Int64)
                | (ColumnType::Float64, DataType::Float64)
                | (
                    ColumnType::Utf8,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
                | (ColumnType::Date32, DataType::Date32)
                | (ColumnType::Bool, DataType::Boolean)
        )
    }

    /// True for types DP sums and means can be taken over.
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Int64 | ColumnType::Float64)
    }
}

/// How a column is masked in row-level extracts.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskRule {
    /// Keep `prefix` leading and `suffix` trailing characters, star the rest.
    KeepPrefixSuffix { prefix: usize, suffix: usize },
    /// Generalise a number to the range of width `width` containing it.
    Range { width: f64 },
    /// Replace by a keyed hash (a pseudonym usable for joins).
    Hash,
    /// Drop the value.
    Suppress,
    /// Release the value as it is (coarse public categories such as a
    /// district); like every column it counts towards k-anonymity unless
    /// the manifest declares it sensitive or non-identifying.
    Keep,
}

/// What a column is to the disclosure control of masked extracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtractRole {
    /// Counts in the equivalence class (the default): anything someone
    /// could know about a person and look up, masked identifiers above all.
    #[default]
    Identifying,
    /// What an extract must not tie to a person (an income band, a
    /// diagnosis): not in the class key, but every released class holds at
    /// least `l_diversity` distinct values of it.
    Sensitive,
    /// Declared by the provider to say nothing about who a row is (the same
    /// values for everyone, such as a month of a monthly series): neither.
    NonIdentifying,
}

impl ExtractRole {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "identifying" => ExtractRole::Identifying,
            "sensitive" => ExtractRole::Sensitive,
            "non_identifying" => ExtractRole::NonIdentifying,
            _ => return None,
        })
    }

    /// Name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtractRole::Identifying => "identifying",
            ExtractRole::Sensitive => "sensitive",
            ExtractRole::NonIdentifying => "non_identifying",
        }
    }
}

/// One declared column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ColumnType,
    pub class: Class,
    /// Clamping bounds for DP (numeric columns).
    pub bounds: Option<(f64, f64)>,
    /// Public category domain (text columns).
    pub domain: Option<Vec<String>>,
    /// Whether the column may be a GROUP BY key.
    pub group_key: bool,
    /// Its part in the k-anonymity and l-diversity of masked extracts.
    pub extract: ExtractRole,
    pub mask: Option<MaskRule>,
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: u32,
    pub description: String,
    pub privacy_unit: String,
    pub max_contributions: u32,
    pub min_group_size: u32,
    /// Distinct values of each sensitive column every class of a masked
    /// extract must hold (l-diversity).
    pub l_diversity: u32,
    pub join_keys: Vec<String>,
    pub columns: Vec<ColumnSpec>,
}

/// The `l_diversity` of a manifest that declares none.
pub const DEFAULT_L_DIVERSITY: u32 = 3;

/// One mistake in a manifest, with the column and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid TOML or has a misspelt key: {message}")]
    Syntax { message: String },
    #[error("manifest field `{field}` is invalid: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("column `{column}` is declared twice; keep one declaration")]
    DuplicateColumn { column: String },
    #[error("column `{column}`: class `{class}` is unknown; use prohibited, conditional or open")]
    UnknownClass { column: String, class: String },
    #[error("column `{column}`: type `{ty}` is unknown; use int64, float64, utf8, date32 or bool")]
    UnknownType { column: String, ty: String },
    #[error(
        "column `{column}` is in the manifest but not in the Parquet file; remove it or check the file"
    )]
    MissingColumn { column: String },
    #[error(
        "column `{column}` is in the Parquet file but not in the manifest; declare it with a class (undeclared columns are never readable)"
    )]
    UndeclaredColumn { column: String },
    #[error(
        "column `{column}` is declared `{declared}` but the Parquet file stores {found}; fix the manifest type or convert the file"
    )]
    TypeMismatch {
        column: String,
        declared: &'static str,
        found: String,
    },
    #[error("column `{column}`: bounds {reason}")]
    Bounds { column: String, reason: String },
    #[error("column `{column}`: domain {reason}")]
    Domain { column: String, reason: String },
    #[error("column `{column}`: mask {reason}")]
    Mask { column: String, reason: String },
    #[error("privacy unit `{column}` {reason}")]
    PrivacyUnit { column: String, reason: String },
    #[error("join key `{column}` {reason}")]
    JoinKey { column: String, reason: String },
}

/// Every mistake found in one manifest.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ManifestErrors(pub Vec<ManifestError>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: u32,
    #[serde(default)]
    description: String,
    privacy_unit: String,
    #[serde(default = "one")]
    max_contributions: u32,
    #[serde(default = "default_min_group")]
    min_group_size: u32,
    #[serde(default = "default_l_diversity")]
    l_diversity: u32,
    #[serde(default)]
    join_keys: Vec<String>,
    columns: Vec<RawColumn>,
}

fn one() -> u32 {
    1
}

fn default_min_group() -> u32 {
    8
}

fn default_l_diversity() -> u32 {
    DEFAULT_L_DIVERSITY
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    class: String,
    bounds: Option<Vec<toml::Value>>,
    domain: Option<Vec<String>>,
    #[serde(default)]
    group_key: bool,
    /// The older spelling of `extract = "identifying"`, now the default.
    quasi_identifier: Option<bool>,
    extract: Option<String>,
    mask: Option<toml::Table>,
}

impl Manifest {
    /// Parses and checks a manifest on its own (without a data file).
    pub fn parse(text: &str) -> Result<Manifest, ManifestErrors> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            ManifestErrors(vec![ManifestError::Syntax {
                message: e.message().to_string(),
            }])
        })?;
        let mut errors = Vec::new();
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            errors.push(ManifestError::Field {
                field: "name",
                reason: format!(
                    "`{}` must be non-empty ASCII letters, digits or `_`",
                    raw.name
                ),
            });
        }
        if raw.max_contributions == 0 {
            errors.push(ManifestError::Field {
                field: "max_contributions",
                reason: "must be at least 1".into(),
            });
        }
        if raw.l_diversity == 0 || raw.l_diversity > raw.min_group_size {
            errors.push(ManifestError::Field {
                field: "l_diversity",
                reason: format!(
                    "is {}, but must be at least 1 and at most `min_group_size` ({}): a class of `min_group_size` people cannot hold more distinct values than people",
                    raw.l_diversity, raw.min_group_size
                ),
            });
        }
        let mut seen = BTreeSet::new();
        let mut columns = Vec::new();
        for c in raw.columns {
            if !seen.insert(c.name.clone()) {
                errors.push(ManifestError::DuplicateColumn {
                    column: c.name.clone(),
                });
                continue;
            }
            if let Some(spec) = parse_column(c, &mut errors) {
                columns.push(spec);
            }
        }
        let manifest = Manifest {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            privacy_unit: raw.privacy_unit,
            max_contributions: raw.max_contributions,
            min_group_size: raw.min_group_size,
            l_diversity: raw.l_diversity,
            join_keys: raw.join_keys,
            columns,
        };
        if !seen.contains(&manifest.privacy_unit) {
            errors.push(ManifestError::PrivacyUnit {
                column: manifest.privacy_unit.clone(),
                reason: "is not a declared column; declare it (usually as prohibited)".into(),
            });
        }
        for key in &manifest.join_keys {
            if !seen.contains(key) {
                errors.push(ManifestError::JoinKey {
                    column: key.clone(),
                    reason: "is not a declared column; list only declared columns in `join_keys`"
                        .into(),
                });
            }
        }
        if errors.is_empty() {
            Ok(manifest)
        } else {
            Err(ManifestErrors(errors))
        }
    }

    /// Checks the manifest against a Parquet file's Arrow schema.
    pub fn check_schema(&self, schema: &Schema) -> Result<(), ManifestErrors> {
        let mut errors = Vec::new();
        for spec in &self.columns {
            match schema.field_with_name(&spec.name) {
                Err(_) => errors.push(ManifestError::MissingColumn {
                    column: spec.name.clone(),
                }),
                Ok(field) if !spec.ty.matches(field.data_type()) => {
                    errors.push(ManifestError::TypeMismatch {
                        column: spec.name.clone(),
                        declared: spec.ty.as_str(),
                        found: field.data_type().to_string(),
                    })
                }
                Ok(_) => {}
            }
        }
        for field in schema.fields() {
            if self.column(field.name()).is_none() {
                errors.push(ManifestError::UndeclaredColumn {
                    column: field.name().clone(),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ManifestErrors(errors))
        }
    }

    /// The declared column called `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// True when `name` is the privacy unit or a declared join key.
    pub fn is_internal_key(&self, name: &str) -> bool {
        self.privacy_unit == name || self.join_keys.iter().any(|k| k == name)
    }
}

fn parse_column(c: RawColumn, errors: &mut Vec<ManifestError>) -> Option<ColumnSpec> {
    let column = c.name.clone();
    let class = match c.class.as_str() {
        "prohibited" => Some(Class::Prohibited),
        "conditional" => Some(Class::Conditional),
        "open" => Some(Class::Open),
        other => {
            errors.push(ManifestError::UnknownClass {
                column: column.clone(),
                class: other.to_string(),
            });
            None
        }
    };
    let ty = ColumnType::parse(&c.ty);
    if ty.is_none() {
        errors.push(ManifestError::UnknownType {
            column: column.clone(),
            ty: c.ty.clone(),
        });
    }
    let (class, ty) = (class?, ty?);
    let bounds = c.bounds.and_then(|b| parse_bounds(&column, ty, &b, errors));
    if let Some(domain) = &c.domain {
        if ty != ColumnType::Utf8 {
            errors.push(ManifestError::Domain {
                column: column.clone(),
                reason: format!(
                    "is only for utf8 columns, but the column is {}; use bounds for numbers",
                    ty.as_str()
                ),
            });
        } else if domain.is_empty() {
            errors.push(ManifestError::Domain {
                column: column.clone(),
                reason: "is empty; list the public categories or remove it".into(),
            });
        } else if domain.iter().collect::<BTreeSet<_>>().len() != domain.len() {
            errors.push(ManifestError::Domain {
                column: column.clone(),
                reason: "lists a category twice; each category once".into(),
            });
        }
    }
    if c.group_key && class == Class::Prohibited {
        errors.push(ManifestError::Field {
            field: "group_key",
            reason: format!(
                "column `{column}` is prohibited and can never be a group key; remove `group_key`"
            ),
        });
    }
    let mask = c.mask.and_then(|m| parse_mask(&column, ty, &m, errors));
    let extract = match c.extract.as_deref().map(|r| (r, ExtractRole::parse(r))) {
        None => ExtractRole::Identifying,
        Some((_, Some(role))) => role,
        Some((other, None)) => {
            errors.push(ManifestError::Field {
                field: "extract",
                reason: format!(
                    "column `{column}`: `{other}` is unknown; use identifying, sensitive or non_identifying"
                ),
            });
            ExtractRole::Identifying
        }
    };
    if c.quasi_identifier == Some(true) && extract != ExtractRole::Identifying {
        errors.push(ManifestError::Field {
            field: "quasi_identifier",
            reason: format!(
                "column `{column}` is a quasi-identifier and `extract = \"{}\"` at once; keep one (every column is identifying unless declared otherwise)",
                extract.as_str()
            ),
        });
    }
    if c.quasi_identifier == Some(false) && c.extract.is_none() {
        errors.push(ManifestError::Field {
            field: "quasi_identifier",
            reason: format!(
                "column `{column}`: `quasi_identifier = false` no longer exempts a column from k-anonymity; declare `extract = \"sensitive\"` or `extract = \"non_identifying\"` instead"
            ),
        });
    }
    Some(ColumnSpec {
        name: c.name,
        ty,
        class,
        bounds,
        domain: c.domain,
        group_key: c.group_key,
        extract,
        mask,
    })
}

fn parse_bounds(
    column: &str,
    ty: ColumnType,
    raw: &[toml::Value],
    errors: &mut Vec<ManifestError>,
) -> Option<(f64, f64)> {
    let err = |reason: String| ManifestError::Bounds {
        column: column.to_string(),
        reason,
    };
    if !ty.is_numeric() {
        errors.push(err(format!(
            "are only for int64 or float64 columns, but the column is {}; remove them",
            ty.as_str()
        )));
        return None;
    }
    let [lo, hi] = raw else {
        errors.push(err(format!(
            "must be [lower, upper], found {} values",
            raw.len()
        )));
        return None;
    };
    let number = |v: &toml::Value| match (v, ty) {
        (toml::Value::Integer(i), _) => Some(*i as f64),
        (toml::Value::Float(f), ColumnType::Float64) if f.is_finite() => Some(*f),
        _ => None,
    };
    let (Some(lo), Some(hi)) = (number(lo), number(hi)) else {
        errors.push(err(format!(
            "must be {} numbers for a {} column, found {lo} and {hi}",
            if ty == ColumnType::Int64 {
                "whole"
            } else {
                "finite"
            },
            ty.as_str()
        )));
        return None;
    };
    if lo > hi {
        errors.push(err(format!("lower {lo} is above upper {hi}; swap them")));
        return None;
    }
    Some((lo, hi))
}

fn parse_mask(
    column: &str,
    ty: ColumnType,
    raw: &toml::Table,
    errors: &mut Vec<ManifestError>,
) -> Option<MaskRule> {
    let err = |reason: String| ManifestError::Mask {
        column: column.to_string(),
        reason,
    };
    let int = |key: &str| {
        raw.get(key)
            .and_then(toml::Value::as_integer)
            .filter(|v| *v >= 0)
    };
    let rule = raw.get("rule").and_then(toml::Value::as_str).unwrap_or("");
    match rule {
        "keep_prefix_suffix" => match (int("prefix"), int("suffix")) {
            (Some(p), Some(s)) if ty == ColumnType::Utf8 => Some(MaskRule::KeepPrefixSuffix {
                prefix: p as usize,
                suffix: s as usize,
            }),
            (Some(_), Some(_)) => {
                errors.push(err("`keep_prefix_suffix` is only for utf8 columns".into()));
                None
            }
            _ => {
                errors.push(err(
                    "`keep_prefix_suffix` needs non-negative `prefix` and `suffix`".into(),
                ));
                None
            }
        },
        "range" => match raw
            .get("width")
            .and_then(|v| v.as_integer().map(|i| i as f64).or(v.as_float()))
        {
            Some(w) if w > 0.0 && ty.is_numeric() => Some(MaskRule::Range { width: w }),
            _ => {
                errors.push(err(
                    "`range` needs a positive `width` and a numeric column".into()
                ));
                None
            }
        },
        "hash" => Some(MaskRule::Hash),
        "suppress" => Some(MaskRule::Suppress),
        "keep" => Some(MaskRule::Keep),
        other => {
            errors.push(err(format!(
                "rule `{other}` is unknown; use keep_prefix_suffix, range, hash, suppress or keep"
            )));
            None
        }
    }
}

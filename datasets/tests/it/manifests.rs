use std::collections::{BTreeMap, HashSet};

use arrow::datatypes::DataType;
use serde::Deserialize;
use unseen_datasets::{DISTRICTS, DatasetKind, GenerateOptions, manifest_toml, schema};

use crate::{generate_and_read, ints, strings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    version: u32,
    description: String,
    privacy_unit: String,
    max_contributions: u32,
    min_group_size: u32,
    l_diversity: Option<u32>,
    join_keys: Vec<String>,
    columns: Vec<Column>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Column {
    name: String,
    #[serde(rename = "type")]
    type_: String,
    class: String,
    #[serde(default)]
    group_key: bool,
    extract: Option<String>,
    domain: Option<Vec<String>>,
    bounds: Option<[i64; 2]>,
    mask: Option<BTreeMap<String, toml::Value>>,
}

fn manifest(kind: DatasetKind) -> Manifest {
    toml::from_str(manifest_toml(kind)).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

fn type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Int64 => "int64",
        DataType::Float64 => "float64",
        DataType::Utf8 => "utf8",
        DataType::Date32 => "date32",
        DataType::Boolean => "bool",
        other => panic!("no manifest type for {other}"),
    }
}

#[test]
fn manifest_columns_match_the_generated_schema() {
    for kind in DatasetKind::all() {
        let m = manifest(kind);
        assert_eq!(m.name, kind.name());
        assert_eq!(m.version, 1);
        assert!(!m.description.is_empty());
        assert!(m.max_contributions >= 1 && m.min_group_size >= 2);
        assert!(
            m.l_diversity
                .is_none_or(|l| (1..=m.min_group_size).contains(&l))
        );
        let schema = schema(kind);
        let from_schema: Vec<(&str, &str)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), type_name(f.data_type())))
            .collect();
        let from_manifest: Vec<(&str, &str)> = m
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_.as_str()))
            .collect();
        assert_eq!(from_manifest, from_schema, "{kind}");
    }
}

#[test]
fn manifest_classes_keys_and_masks_are_consistent() {
    for kind in DatasetKind::all() {
        let m = manifest(kind);
        let class_of = |name: &str| {
            m.columns
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.class.as_str())
        };
        assert_eq!(
            class_of(&m.privacy_unit),
            Some("prohibited"),
            "{kind} privacy unit"
        );
        assert!(m.join_keys.contains(&m.privacy_unit), "{kind}");
        for key in &m.join_keys {
            assert_eq!(class_of(key), Some("prohibited"), "{kind} join key {key}");
        }
        for c in &m.columns {
            let what = format!("{kind}.{}", c.name);
            assert!(
                ["prohibited", "conditional", "open"].contains(&c.class.as_str()),
                "{what}"
            );
            if c.class == "prohibited" {
                assert!(
                    !c.group_key && c.domain.is_none() && c.bounds.is_none(),
                    "{what}"
                );
            }
            if c.group_key {
                assert!(
                    c.domain.is_some() || c.bounds.is_some(),
                    "{what}: group key without domain"
                );
            }
            if let Some(role) = &c.extract {
                assert!(
                    ["identifying", "sensitive", "non_identifying"].contains(&role.as_str()),
                    "{what}: extract role {role}"
                );
            }
            if let Some([lo, hi]) = c.bounds {
                assert!(lo <= hi && c.type_ == "int64", "{what}: bounds");
            }
            if let Some(domain) = &c.domain {
                assert_eq!(c.type_, "utf8", "{what}: domain is a list of strings");
                let unique: HashSet<_> = domain.iter().collect();
                assert_eq!(unique.len(), domain.len(), "{what}: duplicate domain value");
            }
            if let Some(mask) = &c.mask {
                let rule = mask["rule"].as_str().expect("rule is a string");
                let keys: Vec<&str> = mask.keys().map(String::as_str).collect();
                match rule {
                    "keep_prefix_suffix" => {
                        assert_eq!(keys, ["prefix", "rule", "suffix"], "{what}")
                    }
                    "range" => {
                        assert_eq!(keys, ["rule", "width"], "{what}");
                        assert!(mask["width"].as_integer().unwrap() > 0);
                    }
                    "hash" | "suppress" | "keep" => assert_eq!(keys, ["rule"], "{what}"),
                    other => panic!("{what}: unknown mask rule {other}"),
                }
            }
        }
    }
    let residents = manifest(DatasetKind::Residents);
    let district = residents
        .columns
        .iter()
        .find(|c| c.name == "district")
        .unwrap();
    let names: Vec<String> = DISTRICTS.iter().map(|d| d.0.to_owned()).collect();
    assert_eq!(district.domain.as_ref(), Some(&names));
}

#[test]
fn generated_values_stay_in_the_declared_domains() {
    for kind in DatasetKind::all() {
        let m = manifest(kind);
        let batches = generate_and_read(kind, &GenerateOptions::new(20_000, 9));
        for c in &m.columns {
            if let Some(domain) = &c.domain {
                let allowed: HashSet<&String> = domain.iter().collect();
                for v in strings(&batches, &c.name) {
                    assert!(allowed.contains(&v), "{kind}.{}: {v} not in domain", c.name);
                }
            }
            // Bounds that describe the data exactly (not clamping caps).
            let exact = ["birth_year", "household_size", "founded_year", "year"];
            if let (Some([lo, hi]), true) = (c.bounds, exact.contains(&c.name.as_str())) {
                assert!(
                    ints(&batches, &c.name)
                        .iter()
                        .all(|v| (lo..=hi).contains(v))
                );
            }
        }
    }
}

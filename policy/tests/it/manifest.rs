//! Each kind of manifest mistake gets its own error naming the column.

use unseen_datasets::DatasetKind;
use unseen_policy::{Manifest, ManifestError};

fn errors(text: &str) -> Vec<ManifestError> {
    Manifest::parse(text)
        .expect_err("manifest should be refused")
        .0
}

const BASE: &str = r#"
name = "t"
version = 1
privacy_unit = "id"
[[columns]]
name = "id"
type = "int64"
class = "prohibited"
"#;

#[test]
fn builtin_manifests_parse_and_match_their_generated_schemas() {
    for kind in DatasetKind::all() {
        let m = Manifest::parse(unseen_datasets::manifest_toml(kind))
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        m.check_schema(&unseen_datasets::schema(kind))
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
    }
}

#[test]
fn unknown_class_names_the_column() {
    let e = errors(&format!(
        "{BASE}[[columns]]\nname = \"x\"\ntype = \"int64\"\nclass = \"secret\"\n"
    ));
    assert_eq!(
        e,
        vec![ManifestError::UnknownClass {
            column: "x".into(),
            class: "secret".into()
        }]
    );
    assert!(
        e[0].to_string()
            .contains("use prohibited, conditional or open")
    );
}

#[test]
fn unknown_type_names_the_column() {
    let e = errors(&format!(
        "{BASE}[[columns]]\nname = \"x\"\ntype = \"money\"\nclass = \"open\"\n"
    ));
    assert!(matches!(&e[..], [ManifestError::UnknownType { column, .. }] if column == "x"));
}

#[test]
fn bounds_that_do_not_fit_the_type_are_refused() {
    let text_bounds = errors(&format!(
        "{BASE}[[columns]]\nname = \"x\"\ntype = \"utf8\"\nclass = \"open\"\nbounds = [0, 1]\n"
    ));
    assert!(matches!(&text_bounds[..], [ManifestError::Bounds { column, .. }] if column == "x"));
    let fractional = errors(&format!(
        "{BASE}[[columns]]\nname = \"x\"\ntype = \"int64\"\nclass = \"open\"\nbounds = [0.5, 1]\n"
    ));
    assert!(matches!(&fractional[..], [ManifestError::Bounds { column, .. }] if column == "x"));
    let swapped = errors(&format!(
        "{BASE}[[columns]]\nname = \"x\"\ntype = \"int64\"\nclass = \"open\"\nbounds = [9, 1]\n"
    ));
    assert!(swapped[0].to_string().contains("swap"));
}

#[test]
fn missing_and_undeclared_and_mistyped_columns_are_each_named() {
    let manifest = Manifest::parse(&format!(
        "{BASE}[[columns]]\nname = \"x\"\ntype = \"int64\"\nclass = \"open\"\n"
    ))
    .unwrap();
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("y", DataType::Int64, false),
    ]);
    let e = manifest.check_schema(&schema).unwrap_err().0;
    assert!(e.contains(&ManifestError::TypeMismatch {
        column: "id".into(),
        declared: "int64",
        found: "Utf8".into()
    }));
    assert!(e.contains(&ManifestError::MissingColumn { column: "x".into() }));
    assert!(e.contains(&ManifestError::UndeclaredColumn { column: "y".into() }));
}

#[test]
fn misspelt_keys_and_unknown_privacy_units_are_refused() {
    assert!(matches!(
        &errors(&BASE.replace("privacy_unit", "privacy_unti"))[..],
        [ManifestError::Syntax { .. }]
    ));
    let e = errors(&BASE.replace("privacy_unit = \"id\"", "privacy_unit = \"nobody\""));
    assert!(matches!(&e[..], [ManifestError::PrivacyUnit { column, .. }] if column == "nobody"));
}

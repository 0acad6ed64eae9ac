//! Each output detector finds its planted value and stays silent on
//! ordinary aggregates.

use udf_sdk::{ColumnValues, Estimate, Table};
use unseen_policy::checks::{CheckContext, FindingKind, HashIndex, ProhibitedIndex, check_output};

fn ordinary() -> Table {
    Table::default()
        .with(
            "district",
            ColumnValues::Text(vec!["东城区".into(), "朝阳区".into()]),
        )
        .with("residents", ColumnValues::Int(vec![927, 58_274]))
        .with("year", ColumnValues::Int(vec![2024, 2024]))
        .with(
            "mean_income",
            ColumnValues::Estimate(vec![
                Estimate {
                    value: 84046.4,
                    lower: 75451.5,
                    upper: 92787.5
                };
                2
            ]),
        )
        .with("share", ColumnValues::Float(vec![0.01, 0.58]))
}

/// A stand-in keyed hash for tests (the service uses HMAC-SHA256).
fn hash(v: &str) -> [u8; 8] {
    let mut h = [0u8; 8];
    for (i, b) in v.bytes().enumerate() {
        h[i % 8] = h[i % 8].wrapping_mul(31).wrapping_add(b);
    }
    h
}

fn kinds(table: &Table, ctx: &CheckContext<'_>) -> Vec<FindingKind> {
    check_output(table, ctx)
        .into_iter()
        .map(|f| f.kind)
        .collect()
}

fn ctx<'a>(
    index: &'a ProhibitedIndex,
    hasher: &'a dyn Fn(&str) -> [u8; 8],
    earlier: &'a [Table],
) -> CheckContext<'a> {
    CheckContext {
        prohibited: vec![(index as &dyn HashIndex, hasher)],
        min_group_size: 8,
        earlier,
    }
}

fn with_text(value: &str) -> Table {
    ordinary().with(
        "note",
        ColumnValues::Text(vec![value.to_string(), "ok".into()]),
    )
}

#[test]
fn ordinary_aggregates_have_no_findings() {
    let index = ProhibitedIndex::from_hashes(vec![hash("金丝雀")]);
    assert_eq!(kinds(&ordinary(), &ctx(&index, &hash, &[])), vec![]);
}

#[test]
fn a_value_of_a_prohibited_column_is_found_and_blocks() {
    let index = ProhibitedIndex::from_hashes(vec![hash("金丝雀测")]);
    let findings = check_output(&with_text("金丝雀测"), &ctx(&index, &hash, &[]));
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].kind, FindingKind::ProhibitedValue);
    assert!(findings[0].blocking);
    assert!(
        !findings[0].detail.contains("金丝雀测"),
        "findings never quote the value"
    );
}

#[test]
fn each_identifier_detector_finds_its_planted_value() {
    let index = ProhibitedIndex::default();
    let id17 = "11010519770707951";
    let id = format!("{id17}{}", unseen_datasets::resident_id_check_char(id17));
    let credit = unseen_datasets::credit_code(12);
    for (value, kind) in [
        (format!("id {id} here"), FindingKind::ResidentId),
        ("call 13812345678".to_string(), FindingKind::PhoneNumber),
        ("card 4111111111111111".to_string(), FindingKind::BankCard),
        (credit.clone(), FindingKind::CreditCode),
    ] {
        assert_eq!(
            kinds(&with_text(&value), &ctx(&index, &hash, &[])),
            vec![kind.clone()],
            "{value}"
        );
    }
    // An ID with a wrong check character is not flagged.
    let wrong = format!("{id17}{}", if id.ends_with('0') { '1' } else { '0' });
    assert_eq!(kinds(&with_text(&wrong), &ctx(&index, &hash, &[])), vec![]);
    // Phone numbers held as integers are found too.
    let t = ordinary().with("contact", ColumnValues::Int(vec![13812345678, 100]));
    assert_eq!(
        kinds(&t, &ctx(&index, &hash, &[])),
        vec![FindingKind::PhoneNumber]
    );
}

#[test]
fn small_exact_cells_and_differencing_are_flagged() {
    let index = ProhibitedIndex::default();
    let small = ordinary().with("n", ColumnValues::Int(vec![3, 100]));
    assert_eq!(
        kinds(&small, &ctx(&index, &hash, &[])),
        vec![FindingKind::SmallCell]
    );
    let before = ordinary().with("n", ColumnValues::Int(vec![500, 100]));
    let after = ordinary().with("n", ColumnValues::Int(vec![502, 100]));
    let earlier = [before];
    assert_eq!(
        kinds(&after, &ctx(&index, &hash, &earlier)),
        vec![FindingKind::Differencing]
    );
}

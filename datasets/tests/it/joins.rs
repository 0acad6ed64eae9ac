use std::collections::{HashMap, HashSet};

use unseen_datasets::{
    DISTRICTS, DatasetError, DatasetKind, GenerateOptions, credit_code, generate,
    is_valid_credit_code,
};

use crate::{generate_and_read, ints, strings};

#[test]
fn health_visit_person_ids_reference_residents() {
    let opts = GenerateOptions::new(20_000, 5).with_related_rows(1_000);
    let ids = ints(
        &generate_and_read(DatasetKind::HealthVisits, &opts),
        "person_id",
    );
    assert!(ids.iter().all(|id| (1..=1_000).contains(id)));
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        1_000,
        "all persons visited"
    );

    let default = GenerateOptions::new(3_000, 5);
    assert_eq!(
        default.effective_related_rows(DatasetKind::HealthVisits),
        Some(1_000)
    );
    let ids = ints(
        &generate_and_read(DatasetKind::HealthVisits, &default),
        "person_id",
    );
    assert!(ids.iter().all(|id| (1..=1_000).contains(id)));
}

#[test]
fn enterprise_credit_codes_are_valid_distinct_and_match_district() {
    let batches = generate_and_read(DatasetKind::Enterprises, &GenerateOptions::new(20_000, 2));
    let codes = strings(&batches, "credit_code");
    let districts = strings(&batches, "district");
    let area: HashMap<&str, &str> = DISTRICTS.iter().copied().collect();
    for (i, code) in codes.iter().enumerate() {
        assert!(is_valid_credit_code(code), "invalid code {code}");
        assert_eq!(*code, credit_code(i as u64));
        assert_eq!(&code[2..8], area[districts[i].as_str()]);
    }
    assert_eq!(codes.iter().collect::<HashSet<_>>().len(), codes.len());
    let years = ints(&batches, "founded_year");
    assert!(years.iter().all(|y| (1980..=2024).contains(y)));
    assert!(ints(&batches, "registered_capital").iter().all(|&c| c > 0));
}

fn check_panel(kind: DatasetKind, period_column: &str, max_per_unit: usize) {
    let enterprises = 4_000;
    let rows = 15_000;
    let parent = generate_and_read(
        DatasetKind::Enterprises,
        &GenerateOptions::new(enterprises, 77),
    );
    let parent_codes: HashSet<String> = strings(&parent, "credit_code").into_iter().collect();
    let child = generate_and_read(
        kind,
        &GenerateOptions::new(rows, 78).with_related_rows(enterprises),
    );
    let codes = strings(&child, "credit_code");
    assert_eq!(codes.len() as u64, rows);
    assert!(
        codes.iter().all(|c| parent_codes.contains(c)),
        "{kind}: orphan credit code"
    );

    let periods: Vec<String> = if kind == DatasetKind::TaxRecords {
        ints(&child, period_column)
            .iter()
            .map(i64::to_string)
            .collect()
    } else {
        strings(&child, period_column)
    };
    let mut per_unit: HashMap<&str, usize> = HashMap::new();
    let mut pairs = HashSet::new();
    for (code, period) in codes.iter().zip(&periods) {
        assert!(
            pairs.insert((code, period)),
            "{kind}: {code} {period} repeated"
        );
        *per_unit.entry(code).or_default() += 1;
    }
    assert!(per_unit.values().all(|&n| n <= max_per_unit));
    assert!(
        per_unit.len() > 1_000,
        "{kind}: several periods each, many enterprises"
    );
}

#[test]
fn tax_records_credit_codes_are_enterprise_codes() {
    check_panel(DatasetKind::TaxRecords, "year", 6);
    let batches = generate_and_read(DatasetKind::TaxRecords, &GenerateOptions::new(5_000, 1));
    assert!(
        ints(&batches, "year")
            .iter()
            .all(|y| (2019..=2024).contains(y))
    );
    assert!(ints(&batches, "tax_paid").iter().all(|&t| t >= 0));
}

#[test]
fn utility_usage_credit_codes_are_enterprise_codes() {
    check_panel(DatasetKind::UtilityUsage, "month", 12);
    let batches = generate_and_read(DatasetKind::UtilityUsage, &GenerateOptions::new(5_000, 1));
    let months: HashSet<String> = strings(&batches, "month").into_iter().collect();
    let expected: HashSet<String> = (1..=12).map(|m| format!("2024-{m:02}")).collect();
    assert_eq!(months, expected);
}

#[test]
fn panel_fills_every_enterprise_when_rows_are_at_capacity() {
    let opts = GenerateOptions::new(600, 4).with_related_rows(100);
    let batches = generate_and_read(DatasetKind::TaxRecords, &opts);
    let codes: HashSet<String> = strings(&batches, "credit_code").into_iter().collect();
    assert_eq!(codes.len(), 100);
}

#[test]
fn refuses_more_rows_than_the_enterprises_can_hold() {
    let opts = GenerateOptions::new(601, 4).with_related_rows(100);
    let err = generate(DatasetKind::TaxRecords, &opts, &mut Vec::new(), &mut |_| {})
        .expect_err("too many rows");
    assert!(
        matches!(err, DatasetError::RelatedTooSmall { needed: 101, .. }),
        "{err}"
    );
    let opts = GenerateOptions::new(10, 4).with_related_rows(0);
    let err = generate(
        DatasetKind::HealthVisits,
        &opts,
        &mut Vec::new(),
        &mut |_| {},
    )
    .expect_err("no persons");
    assert!(matches!(err, DatasetError::NoRelatedRows { .. }), "{err}");
}

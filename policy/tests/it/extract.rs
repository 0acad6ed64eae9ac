//! Masked extracts over the synthetic residents: masked identifiers count
//! in the equivalence class, nearly unique ones are refused, sensitive
//! columns are l-diverse, and what is released has no class under k.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use udf_sdk::ColumnValues;
use unseen_datasets::{DatasetKind, GenerateOptions};
use unseen_policy::Manifest;
use unseen_policy::checks::{FindingKind, check_classes};
use unseen_policy::manifest::ExtractRole;
use unseen_policy::mask::{
    self, ExtractPlan, NEARLY_UNIQUE_SHARE, Uniqueness, mask_and_anonymise, mask_row,
};

use crate::support::residents_manifest;

/// `rows` generated residents as (person_id, text of each of `columns`).
fn residents(rows: u64, columns: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut bytes = Vec::new();
    unseen_datasets::generate(
        DatasetKind::Residents,
        &GenerateOptions::new(rows, 11),
        &mut bytes,
        &mut |_| {},
    )
    .unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
        bytes::Bytes::from(bytes),
        8192,
    )
    .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let text = |name: &str| {
            let column = batch.column(batch.schema().index_of(name).unwrap());
            datafusion::arrow::compute::cast(column, &DataType::Utf8).unwrap()
        };
        let unit = text("person_id");
        let values: Vec<_> = columns.iter().map(|c| text(c)).collect();
        for r in 0..batch.num_rows() {
            let cell = |a: &dyn Array| a.as_string::<i32>().value(r).to_string();
            out.push((
                cell(unit.as_ref()),
                values.iter().map(|v| cell(v.as_ref())).collect(),
            ));
        }
    }
    out
}

fn pseudonym(v: &str) -> String {
    format!("p{}", v.len())
}

/// Share of rows whose masked values (all `columns` together) no other
/// row has: how unique the records are after masking.
fn unique_share(manifest: &Manifest, columns: &[&str], rows: &[(String, Vec<String>)]) -> f64 {
    let names: Vec<String> = columns.iter().map(|c| (*c).to_string()).collect();
    let specs = mask::plan_extract(manifest, &names).unwrap();
    let mut seen: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for (_, row) in rows {
        *seen.entry(mask_row(&specs, row, &pseudonym)).or_default() += 1;
    }
    seen.values().filter(|n| **n == 1).count() as f64 / rows.len() as f64
}

/// The finding: after masking, most phones (`182****6358`) and
/// many ID numbers are unique among 20,000 residents. Both are identifying
/// (every column is, unless declared otherwise), and both are refused as
/// nearly unique, naming the column and the fix.
#[test]
fn masked_phones_and_id_numbers_are_measured_nearly_unique_and_refused() {
    let manifest = residents_manifest();
    let columns = [
        "phone",
        "id_number",
        "name",
        "gender",
        "district",
        "birth_year",
    ];
    let rows = residents(20_000, &columns);
    let phone_share = unique_share(&manifest, &["phone"], &strip(&rows, 0));
    let id_share = unique_share(&manifest, &["id_number"], &strip(&rows, 1));
    assert!(phone_share > 0.8, "unique masked phones: {phone_share}");
    assert!(id_share > 0.4, "unique masked ID numbers: {id_share}");

    let names: Vec<String> = columns.iter().map(|c| (*c).to_string()).collect();
    let specs = mask::plan_extract(&manifest, &names).unwrap();
    assert!(specs.iter().all(|s| s.extract == ExtractRole::Identifying));
    let mut uniqueness = Uniqueness::new(&specs, manifest.min_group_size);
    for (unit, row) in &rows {
        uniqueness.add(unit, &mask_row(&specs, row, &pseudonym));
    }
    let measured = uniqueness.finish();
    let nearly: Vec<&str> = measured
        .iter()
        .filter(|m| m.nearly_unique())
        .map(|m| m.column.as_str())
        .collect();
    assert_eq!(nearly, ["phone", "id_number"], "{measured:?}");
    for m in &measured {
        let share = m.rows_in_small_groups as f64 / m.rows as f64;
        assert_eq!(m.nearly_unique(), share > NEARLY_UNIQUE_SHARE, "{m:?}");
    }
    let refusal = mask::refuse_nearly_unique(&manifest, &measured).unwrap_err();
    assert_eq!(refusal.rule, "nearly-unique");
    assert_eq!(refusal.column.as_deref(), Some("residents.phone"));
    assert!(
        refusal
            .message
            .contains("`phone`, `id_number` of `residents`")
            && refusal.message.contains("Leave it out")
            && !refusal.message.contains("****"),
        "{}",
        refusal.message
    );
}

/// Rows with only column `i` kept.
fn strip(rows: &[(String, Vec<String>)], i: usize) -> Vec<(String, Vec<String>)> {
    rows.iter()
        .map(|(u, r)| (u.clone(), vec![r[i].clone()]))
        .collect()
}

/// An extract whose masked identifying columns make most records unique
/// releases only classes of at least k people with at least l income
/// bands; the automatic checks find nothing in it, and find the classes
/// an unprotected release would have had.
#[test]
fn released_classes_hold_k_people_and_l_income_bands() {
    let manifest = residents_manifest();
    let columns = ["name", "gender", "district", "birth_year", "annual_income"];
    let rows = residents(20_000, &columns);
    let share = unique_share(&manifest, &columns[..4], &rows);
    assert!(share > 0.05, "unique records after masking: {share}");
    let names: Vec<String> = columns.iter().map(|c| (*c).to_string()).collect();
    let specs = mask::plan_extract(&manifest, &names).unwrap();
    let plan = ExtractPlan::new(&manifest, &specs);
    assert_eq!(
        (plan.k, plan.l, plan.sensitive.clone()),
        (8, 3, vec!["annual_income".to_string()])
    );
    assert_eq!(
        plan.identifying,
        ["name", "gender", "district", "birth_year"]
    );
    let (table, report) = mask_and_anonymise(&specs, &plan, rows.clone(), &pseudonym);

    assert_eq!(report.rows_sampled, 20_000);
    assert!(
        report.rows_under_k > 0 && report.classes_under_k > 0,
        "{report:?}"
    );
    assert!(report.rows_released > 0, "{report:?}");
    assert_eq!(
        report.rows_released + report.rows_under_k + report.rows_under_l,
        report.rows_sampled
    );
    assert!(
        report.class_sizes.iter().all(|c| c.people >= 8),
        "{report:?}"
    );
    assert_eq!(
        report.class_sizes.iter().map(|c| c.classes).sum::<usize>(),
        report.classes_released
    );

    // Recounted from the released table: 0 classes under k, none with
    // fewer than l bands.
    let text = |name: &str| match table.column(name) {
        Some(ColumnValues::Text(v)) => v.clone(),
        other => panic!("{other:?}"),
    };
    let (key_columns, bands) = (
        plan.identifying.iter().map(|c| text(c)).collect::<Vec<_>>(),
        text("annual_income"),
    );
    let mut classes: BTreeMap<Vec<&str>, (usize, BTreeSet<&str>)> = BTreeMap::new();
    for (r, band) in bands.iter().enumerate() {
        let key = key_columns.iter().map(|c| c[r].as_str()).collect();
        let class = classes.entry(key).or_default();
        class.0 += 1;
        class.1.insert(band);
    }
    assert_eq!(classes.len(), report.classes_released);
    assert_eq!(
        classes.values().filter(|(n, _)| *n < 8).count(),
        0,
        "classes under min_group_size"
    );
    assert!(classes.values().all(|(_, b)| b.len() >= 3));
    assert!(check_classes(&table, &plan.identifying, &plan.sensitive, plan.k, plan.l).is_empty());

    // The same rows without suppression: the checks flag small classes and
    // classes with a single income band, blocking, naming no value.
    let unprotected = ExtractPlan {
        k: 1,
        l: 1,
        ..plan.clone()
    };
    let (raw, _) = mask_and_anonymise(&specs, &unprotected, rows, &pseudonym);
    let findings = check_classes(&raw, &plan.identifying, &plan.sensitive, plan.k, plan.l);
    assert!(findings.iter().any(|f| f.kind == FindingKind::SmallClass));
    assert!(findings.iter().any(|f| f.kind == FindingKind::LowDiversity));
    assert!(
        findings
            .iter()
            .all(|f| f.blocking && !f.detail.contains('*'))
    );
}

/// l-diversity on its own: a class of k people who all share one band is
/// suppressed, whatever its size.
#[test]
fn a_large_class_with_one_sensitive_value_is_suppressed() {
    let manifest = residents_manifest();
    let names = vec!["district".to_string(), "annual_income".to_string()];
    let specs = mask::plan_extract(&manifest, &names).unwrap();
    let plan = ExtractPlan::new(&manifest, &specs);
    let mut rows = Vec::new();
    for i in 0..20 {
        rows.push((
            format!("a{i}"),
            vec!["朝阳区".to_string(), "61000".to_string()],
        ));
    }
    for i in 0..20 {
        let income = format!("{}", 30_000 + 10_000 * (i % 4));
        rows.push((format!("b{i}"), vec!["海淀区".to_string(), income]));
    }
    // One person with many rows is one person: a class of their rows alone
    // is under k.
    for _ in 0..20 {
        rows.push(("c".to_string(), vec!["东城区".to_string(), "1".to_string()]));
    }
    let (table, report) = mask_and_anonymise(&specs, &plan, rows, &pseudonym);
    assert_eq!(
        (
            report.classes_under_l,
            report.rows_under_l,
            report.classes_under_k,
            report.rows_under_k
        ),
        (1, 20, 1, 20),
        "{report:?}"
    );
    assert_eq!(table.rows(), 20);
    assert!(
        matches!(table.column("district"), Some(ColumnValues::Text(v)) if v.iter().all(|d| d == "海淀区"))
    );
}

/// A manifest declares a column's part in extracts; mistakes name the
/// column and the fix.
#[test]
fn manifests_declare_extract_roles_and_l() {
    let base = |column: &str, top: &str| {
        format!(
            "name = \"t\"\nversion = 1\nprivacy_unit = \"id\"\nmin_group_size = 5\n{top}\n\
             [[columns]]\nname = \"id\"\ntype = \"int64\"\nclass = \"prohibited\"\n\
             [[columns]]\nname = \"x\"\ntype = \"utf8\"\nclass = \"open\"\n{column}\n"
        )
    };
    let parsed = Manifest::parse(&base("extract = \"sensitive\"", "l_diversity = 2")).unwrap();
    assert_eq!(parsed.l_diversity, 2);
    assert_eq!(parsed.column("x").unwrap().extract, ExtractRole::Sensitive);
    let parsed = Manifest::parse(&base("", "")).unwrap();
    assert_eq!(parsed.l_diversity, 3, "the default");
    assert_eq!(
        parsed.column("x").unwrap().extract,
        ExtractRole::Identifying
    );
    for (column, top, expected) in [
        (
            "extract = \"secret\"",
            "",
            "use identifying, sensitive or non_identifying",
        ),
        ("", "l_diversity = 6", "at most `min_group_size` (5)"),
        ("", "l_diversity = 0", "at least 1"),
        (
            "quasi_identifier = true\nextract = \"sensitive\"",
            "",
            "keep one",
        ),
        ("quasi_identifier = false", "", "no longer exempts"),
    ] {
        let err = Manifest::parse(&base(column, top)).unwrap_err().to_string();
        assert!(err.contains(expected), "{column} {top}: {err}");
    }
}

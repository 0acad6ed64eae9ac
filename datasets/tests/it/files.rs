use std::time::Instant;

use unseen_datasets::{DatasetKind, GenerateOptions, generate_to_path};

use crate::read_parquet;

#[test]
fn failed_generation_leaves_no_file_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tax.parquet");
    std::fs::write(&path, b"old").unwrap();
    let opts = GenerateOptions::new(1_000, 1).with_related_rows(1);
    generate_to_path(DatasetKind::TaxRecords, &opts, &path, &mut |_| {})
        .expect_err("1000 rows cannot fit one enterprise");
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "no temporary file left behind");
}

#[test]
fn generate_to_path_replaces_the_file_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("residents.parquet");
    std::fs::write(&path, b"old").unwrap();
    let summary = generate_to_path(
        DatasetKind::Residents,
        &GenerateOptions::new(1_000, 1),
        &path,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());
    let rows: usize = read_parquet(&path).iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 1_000);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn dataset_names_round_trip() {
    for kind in DatasetKind::all() {
        assert_eq!(kind.name().parse::<DatasetKind>().unwrap(), kind);
        assert_eq!(kind.to_string(), kind.name());
    }
    let err = "citizens".parse::<DatasetKind>().unwrap_err();
    assert!(err.to_string().contains("residents"), "{err}");
}

/// Ten million residents; run with `UNSEEN_SLOW_TESTS=1` (in release).
#[test]
fn ten_million_residents_stream_to_disk() {
    if std::env::var_os("UNSEEN_SLOW_TESTS").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("residents.parquet");
    let start = Instant::now();
    let summary = generate_to_path(
        DatasetKind::Residents,
        &GenerateOptions::new(10_000_000, 1),
        &path,
        &mut |_| {},
    )
    .unwrap();
    eprintln!(
        "10M residents: {} bytes, {} row groups, {:.1?}",
        summary.bytes,
        summary.row_groups,
        start.elapsed()
    );
    assert_eq!(summary.rows, 10_000_000);
    assert_eq!(summary.row_groups, 153);
}

use unseen_datasets::{BATCH_ROWS, DatasetKind, GenerateOptions, generate};

fn bytes(kind: DatasetKind, rows: u64, seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let summary = generate(
        kind,
        &GenerateOptions::new(rows, seed),
        &mut out,
        &mut |_| {},
    )
    .expect("generate");
    assert_eq!(summary.rows, rows);
    assert_eq!(summary.bytes, out.len() as u64);
    out
}

#[test]
fn same_seed_gives_byte_identical_files_and_another_seed_does_not() {
    for kind in DatasetKind::all() {
        let a = bytes(kind, 20_000, 42);
        let b = bytes(kind, 20_000, 42);
        assert!(a == b, "{kind}: same seed, different bytes");
        let c = bytes(kind, 20_000, 43);
        assert!(a != c, "{kind}: different seeds, same bytes");
        assert_eq!(&a[..4], b"PAR1");
    }
}

#[test]
fn writes_one_row_group_per_batch_and_reports_progress() {
    let rows = 2 * BATCH_ROWS as u64 + 1_000;
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let summary = generate(
        DatasetKind::HealthVisits,
        &GenerateOptions::new(rows, 1),
        &mut out,
        &mut |n| seen.push(n),
    )
    .expect("generate");
    assert_eq!(summary.row_groups, 3);
    assert_eq!(
        seen,
        vec![BATCH_ROWS as u64, 2 * BATCH_ROWS as u64, rows],
        "progress after each row group"
    );
}

#[test]
fn zero_rows_gives_a_readable_empty_file() {
    for kind in DatasetKind::all() {
        let out = bytes(kind, 0, 5);
        assert_eq!(&out[out.len() - 4..], b"PAR1");
    }
}

//! `dataset register --csv` and `--arrow`: read with the manifest's types,
//! registered like Parquet; a mistake names the line and column and never
//! quotes the value (it could be a prohibited one).

use std::path::Path;
use std::sync::Arc;

use crate::support::*;

/// The residents `residents_dir` registered, read back from its Parquet.
fn residents_batches(parquet: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    let file = std::fs::File::open(parquet).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Registers `file` as dataset `name`, with the residents manifest renamed.
fn register(data: &str, name: &str, flag: &str, file: &Path, manifest: &Path) -> (bool, String) {
    let renamed = manifest.with_file_name(format!("{name}.toml"));
    let text = std::fs::read_to_string(manifest).unwrap();
    assert!(text.contains("name = \"residents\""), "{text}");
    std::fs::write(
        &renamed,
        text.replacen("name = \"residents\"", &format!("name = \"{name}\""), 1),
    )
    .unwrap();
    let manifest = renamed;
    unseen(&[
        "dataset",
        "register",
        "--name",
        name,
        flag,
        file.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--as",
        "admin",
        "--json",
        "--data-dir",
        data,
    ])
}

#[test]
fn csv_and_arrow_files_register_with_the_manifests_types() {
    let (dir, data) = residents_dir("300");
    let manifest = dir.path().join("r.toml");
    let batches = residents_batches(&dir.path().join("r.parquet"));
    let schema = batches[0].schema();

    let csv = dir.path().join("r.csv");
    {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(std::fs::File::create(&csv).unwrap());
        for b in &batches {
            writer.write(b).unwrap();
        }
    }
    let (registered, out) = register(&data, "residents_csv", "--csv", &csv, &manifest);
    assert!(registered, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["rows"], 300, "{v}");

    let ipc = dir.path().join("r.arrow");
    {
        let mut writer =
            arrow::ipc::writer::FileWriter::try_new(std::fs::File::create(&ipc).unwrap(), &schema)
                .unwrap();
        for b in &batches {
            writer.write(b).unwrap();
        }
        writer.finish().unwrap();
    }
    let (registered, out) = register(&data, "residents_arrow", "--arrow", &ipc, &manifest);
    assert!(registered, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["rows"], 300, "{v}");

    // A CSV value of the wrong type: named by line and column, not quoted.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let birth_year = schema.index_of("birth_year").unwrap();
    let mut cells: Vec<String> = lines[5].split(',').map(str::to_string).collect();
    cells[birth_year] = "CANARY-13800138000".into();
    lines[5] = cells.join(",");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let (registered, out) = register(&data, "bad", "--csv", &bad, &manifest);
    assert!(!registered);
    assert!(out.contains("line 6, column `birth_year`"), "{out}");
    assert!(!out.contains("CANARY"), "the value is never quoted: {out}");

    // A line with a field missing.
    let mut short_lines: Vec<String> = text.lines().map(str::to_string).collect();
    let cut = short_lines[9].rfind(',').unwrap();
    short_lines[9].truncate(cut);
    let short = dir.path().join("short.csv");
    std::fs::write(&short, short_lines.join("\n")).unwrap();
    let (registered, out) = register(&data, "short", "--csv", &short, &manifest);
    assert!(
        !registered && out.contains("line 10: the line does not have"),
        "{out}"
    );

    // A header that is not the manifest's.
    let renamed = dir.path().join("renamed.csv");
    std::fs::write(&renamed, text.replacen("birth_year", "born", 1)).unwrap();
    let (registered, out) = register(&data, "renamed", "--csv", &renamed, &manifest);
    assert!(
        !registered && out.contains("line 1: the header names columns"),
        "{out}"
    );

    // An Arrow file whose columns differ from the manifest's.
    let narrow = dir.path().join("narrow.arrow");
    {
        let projected = Arc::new(schema.project(&[0, 1]).unwrap());
        let mut writer = arrow::ipc::writer::FileWriter::try_new(
            std::fs::File::create(&narrow).unwrap(),
            &projected,
        )
        .unwrap();
        writer.write(&batches[0].project(&[0, 1]).unwrap()).unwrap();
        writer.finish().unwrap();
    }
    let (registered, out) = register(&data, "narrow", "--arrow", &narrow, &manifest);
    assert!(
        !registered && out.contains("but the manifest declares"),
        "{out}"
    );
    // Nothing of the refused files was registered.
    let listed = ok(&[
        "dataset",
        "list",
        "--json",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(
        !listed.contains("\"bad\"") && !listed.contains("\"narrow\""),
        "{listed}"
    );
}

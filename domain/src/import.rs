//! CSV and Arrow IPC files registered as datasets: read with the
//! manifest's column types into a private temporary Parquet file, which is
//! then registered like any other. A mistake names the line and the column,
//! never the value (it may be a prohibited one).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use unseen_policy::manifest::{ColumnType, Manifest};

/// The Arrow schema a manifest declares, columns in its order.
pub fn manifest_schema(manifest: &Manifest) -> SchemaRef {
    let fields: Vec<Field> = manifest
        .columns
        .iter()
        .map(|c| {
            let ty = match c.ty {
                ColumnType::Int64 => DataType::Int64,
                ColumnType::Float64 => DataType::Float64,
                ColumnType::Utf8 => DataType::Utf8,
                ColumnType::Date32 => DataType::Date32,
                ColumnType::Bool => DataType::Boolean,
            };
            Field::new(&c.name, ty, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A parse error of the CSV reader, without the value and row it quotes:
/// `line L, column `name``.
fn csv_mistake(message: &str, schema: &Schema) -> String {
    let number_after = |marker: &str| -> Option<usize> {
        let rest = &message[message.find(marker)? + marker.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let column = number_after("for column ").and_then(|i| schema.fields().get(i));
    // A value error counts records from 0 with the header as record 0; a
    // field-count error counts lines from 1. Both become the file's line
    // (a quoted value spanning lines shifts them).
    let line = number_after("at line ")
        .map(|n| n + 1)
        .or_else(|| number_after("for line "));
    match (line, column) {
        (Some(line), Some(field)) => format!(
            "line {line}, column `{}`: a value is not a valid {} (the value is not shown); fix that line or the manifest's type",
            field.name(),
            field.data_type()
        ),
        (Some(line), None) => format!(
            "line {line}: the line does not have the manifest's {} columns (the line is not shown)",
            schema.fields().len()
        ),
        _ => {
            "a line does not match the manifest's columns and types (the line is not shown)".into()
        }
    }
}

/// Reads `csv` (a header line naming the manifest's columns in order) into
/// a Parquet file in `staging`; its path.
pub fn csv_to_parquet(csv: &Path, manifest: &Manifest, staging: &Path) -> Result<PathBuf> {
    use std::io::{BufRead, Seek};
    let schema = manifest_schema(manifest);
    let mut file =
        std::fs::File::open(csv).with_context(|| format!("cannot open {}", csv.display()))?;
    let mut header = String::new();
    std::io::BufReader::new(&file)
        .read_line(&mut header)
        .with_context(|| format!("cannot read {}", csv.display()))?;
    let names: Vec<&str> = header
        .trim_end_matches(['\r', '\n'])
        .split(',')
        .map(str::trim)
        .collect();
    let expected: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if names != expected {
        // The found line is not quoted: a file without a header has data there.
        let position = names
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(names.len().min(expected.len()));
        bail!(
            "{} line 1: the header names columns the manifest does not, first at column {} (expected `{}`); the first line must be the manifest's columns in order: {}",
            csv.display(),
            position + 1,
            expected
                .get(position)
                .copied()
                .unwrap_or("(none: too many columns)"),
            expected.join(",")
        );
    }
    file.rewind()?;
    let reader = arrow::csv::ReaderBuilder::new(Arc::clone(&schema))
        .with_header(true)
        .with_batch_size(8192)
        .build(file)?;
    write_parquet(
        reader.map(|b| {
            b.map_err(|e| {
                anyhow::anyhow!(
                    "{}: {}",
                    csv.display(),
                    csv_mistake(&e.to_string(), &schema)
                )
            })
        }),
        &schema,
        staging,
    )
}

/// Reads an Arrow IPC file whose schema is the manifest's (names and types,
/// in order) into a Parquet file in `staging`; its path.
pub fn arrow_to_parquet(ipc: &Path, manifest: &Manifest, staging: &Path) -> Result<PathBuf> {
    let schema = manifest_schema(manifest);
    let file =
        std::fs::File::open(ipc).with_context(|| format!("cannot open {}", ipc.display()))?;
    let reader = arrow::ipc::reader::FileReader::try_new(file, None)
        .with_context(|| format!("{} is not an Arrow IPC file", ipc.display()))?;
    let found = reader.schema();
    let describe = |s: &Schema| -> Vec<String> {
        s.fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect()
    };
    if describe(&found) != describe(&schema) {
        bail!(
            "{} has columns {:?}, but the manifest declares {:?}",
            ipc.display(),
            describe(&found),
            describe(&schema)
        );
    }
    write_parquet(
        reader.map(|b| {
            b.with_context(|| format!("{} has a damaged record batch", ipc.display()))
                .and_then(|b| {
                    Ok(RecordBatch::try_new(
                        Arc::clone(&schema),
                        b.columns().to_vec(),
                    )?)
                })
        }),
        &schema,
        staging,
    )
}

fn write_parquet(
    batches: impl Iterator<Item = Result<RecordBatch>>,
    schema: &SchemaRef,
    staging: &Path,
) -> Result<PathBuf> {
    let path = staging.join("import.parquet");
    let out = std::fs::File::create(&path)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(out, Arc::clone(schema), None)?;
    for batch in batches {
        writer.write(&batch?)?;
    }
    writer.close()?;
    Ok(path)
}

//! Released tables as data files: CSV, JSON lines or Parquet, each DP
//! estimate as three columns (`x`, `x_lower`, `x_upper`), so the interval
//! travels with the value into whatever reads the file.

use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use udf_sdk::{ColumnValues, Table};

/// A data file format for a released table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    Csv,
    /// One JSON object per row (JSON lines).
    Json,
    Parquet,
}

/// The table as one Arrow batch, estimates spread over three columns.
pub fn table_batch(table: &Table) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for column in &table.columns {
        let name = &column.name;
        match &column.values {
            ColumnValues::Text(v) => {
                fields.push(Field::new(name, DataType::Utf8, false));
                arrays.push(Arc::new(StringArray::from(v.clone())));
            }
            ColumnValues::Int(v) => {
                fields.push(Field::new(name, DataType::Int64, false));
                arrays.push(Arc::new(Int64Array::from(v.clone())));
            }
            ColumnValues::Float(v) => {
                fields.push(Field::new(name, DataType::Float64, true));
                arrays.push(Arc::new(Float64Array::from(v.clone())));
            }
            ColumnValues::Estimate(v) => {
                for (suffix, part) in [
                    ("", v.iter().map(|e| e.value).collect::<Vec<_>>()),
                    ("_lower", v.iter().map(|e| e.lower).collect()),
                    ("_upper", v.iter().map(|e| e.upper).collect()),
                ] {
                    fields.push(Field::new(
                        format!("{name}{suffix}"),
                        DataType::Float64,
                        true,
                    ));
                    arrays.push(Arc::new(Float64Array::from(part)));
                }
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .context("the released table cannot be laid out as columns")
}

/// The table written in `format`.
pub fn table_bytes(table: &Table, format: TableFormat) -> Result<Vec<u8>> {
    let batch = table_batch(table)?;
    let mut out = Vec::new();
    match format {
        TableFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            writer.write(&batch)?;
        }
        TableFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
            writer.write(&batch)?;
            writer.finish()?;
        }
        TableFormat::Parquet => {
            let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None)?;
            writer.write(&batch)?;
            writer.close()?;
        }
    }
    Ok(out)
}

/// A release file or bundle (as downloaded) as the bytes to write: itself,
/// or with `format`, its table in that format.
pub fn release_file_bytes(text: &str, format: Option<TableFormat>) -> Result<Vec<u8>> {
    let Some(format) = format else {
        return Ok(text.as_bytes().to_vec());
    };
    let file: serde_json::Value =
        serde_json::from_str(text).context("the release file is not JSON")?;
    let table = crate::audit::table_from_json(&file["document"]["table"])?;
    table_bytes(&table, format)
}

/// A table file as text cells: a release bundle (its table), Parquet, JSON
/// lines or CSV with a header, told apart by their content.
pub fn read_table_file(bytes: &[u8]) -> Result<crate::trace::TextTable> {
    if bytes.starts_with(b"PAR1") {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            axum::body::Bytes::copy_from_slice(bytes),
        )?
        .build()?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        return batches_text(&batches);
    }
    let text = std::str::from_utf8(bytes).context("the file is neither Parquet nor UTF-8 text")?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        if let Ok(file) = serde_json::from_str::<serde_json::Value>(text)
            && file.get("document").is_some()
        {
            let table = crate::audit::table_from_json(&file["document"]["table"])
                .map_err(|e| anyhow::anyhow!("a JSON file that is not a release bundle: {e}"))?;
            let batch = table_batch(&table)?;
            return batches_text(&[batch]);
        }
        // JSON lines: one object per row.
        let mut columns: Vec<String> = Vec::new();
        let mut objects = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
                .with_context(|| format!("line {} is not a JSON object", n + 1))?;
            for key in object.keys() {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
            objects.push(object);
        }
        let rows = objects
            .iter()
            .map(|o| {
                columns
                    .iter()
                    .map(|c| match o.get(c) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(serde_json::Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        return Ok(crate::trace::TextTable { columns, rows });
    }
    let format = arrow::csv::reader::Format::default().with_header(true);
    let (inferred, _) = format
        .infer_schema(std::io::Cursor::new(bytes), Some(1))
        .context("the file is not CSV with a header row")?;
    let schema = Schema::new(
        inferred
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    );
    let reader = arrow::csv::ReaderBuilder::new(Arc::new(schema))
        .with_format(format)
        .build(std::io::Cursor::new(bytes))?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    batches_text(&batches)
}

/// Batches as text cells (NULL as empty).
fn batches_text(batches: &[RecordBatch]) -> Result<crate::trace::TextTable> {
    use arrow::array::{Array, AsArray};
    let mut table = crate::trace::TextTable::default();
    for batch in batches {
        if table.columns.is_empty() {
            table.columns = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
        }
        let text = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            table.rows.push(
                text.iter()
                    .map(|c| {
                        if c.is_null(r) {
                            String::new()
                        } else {
                            c.as_string::<i32>().value(r).to_string()
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(table)
}

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

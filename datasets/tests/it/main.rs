//! Integration tests of the synthetic datasets: determinism, identifier
//! validity, distributions, joins between datasets and the manifests.

mod determinism;
mod distributions;
mod files;
mod joins;
mod manifests;

use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use unseen_datasets::{DatasetKind, GenerateOptions, generate_to_path};

/// Generates into a temporary file and reads every batch back.
pub fn generate_and_read(kind: DatasetKind, opts: &GenerateOptions) -> Vec<RecordBatch> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("{}.parquet", kind.name()));
    generate_to_path(kind, opts, &path, &mut |_| {}).expect("generate");
    read_parquet(&path)
}

pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = File::open(path).expect("open parquet");
    ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet reader")
        .build()
        .expect("build reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("read batches")
}

/// All values of an Int64 column across batches.
pub fn ints(batches: &[RecordBatch], column: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name(column).expect("column exists");
            assert_eq!(col.null_count(), 0);
            col.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

/// All values of a Utf8 column across batches.
pub fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name(column).expect("column exists");
            assert_eq!(col.null_count(), 0);
            col.as_string::<i32>()
                .iter()
                .map(|v| v.expect("non-null").to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

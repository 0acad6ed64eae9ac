//! The versioned wire format between host and guest (see `ABI.md`).
//!
//! Pure encoding and decoding, used on both sides. All integers are
//! little-endian; strings are a `u32` byte length followed by UTF-8.
//! Every decoder checks lengths before reading, so a hostile peer gets a
//! [`DecodeError`], never a panic.

use crate::{Column, ColumnValues, DryRun, Estimate, QueryResult, Table};

/// The ABI version this SDK and the host speak.
pub const ABI_VERSION: u32 = 1;
/// Module name of every host import for [`ABI_VERSION`].
pub const IMPORT_MODULE: &str = "unseen_v1";
/// Prefix of import module names of any ABI version, to recognise other versions.
pub const IMPORT_MODULE_PREFIX: &str = "unseen_v";
/// Export called to run a job.
pub const ENTRY_EXPORT: &str = "unseen_main";
/// Export returning the ABI version the module was built against.
pub const VERSION_EXPORT: &str = "unseen_abi_version";

const TABLE_MAGIC: &[u8; 4] = b"UTB1";
const RESULT_MAGIC: &[u8; 4] = b"UQR1";
const DRY_RUN_MAGIC: &[u8; 4] = b"UDR1";

const TAG_TEXT: u8 = 0;
const TAG_INT: u8 = 1;
const TAG_FLOAT: u8 = 2;
const TAG_ESTIMATE: u8 = 3;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes ended before the value did.
    Truncated { wanted: usize, at: usize },
    /// A magic number or tag was not one this version knows.
    Unknown { what: &'static str, found: u32 },
    /// A string was not UTF-8.
    NotUtf8 { at: usize },
    /// Columns of one table had different lengths.
    Ragged {
        column: String,
        rows: usize,
        expected: usize,
    },
    /// Bytes were left after the value.
    Trailing { bytes: usize },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated { wanted, at } => {
                write!(
                    f,
                    "encoded table is truncated: wanted {wanted} more bytes at offset {at}"
                )
            }
            DecodeError::Unknown { what, found } => {
                write!(
                    f,
                    "encoded table has an unknown {what} ({found}); was it built for another ABI version?"
                )
            }
            DecodeError::NotUtf8 { at } => write!(f, "string at offset {at} is not UTF-8"),
            DecodeError::Ragged {
                column,
                rows,
                expected,
            } => write!(
                f,
                "column `{column}` has {rows} rows but the table has {expected}; all columns must have the same length"
            ),
            DecodeError::Trailing { bytes } => {
                write!(f, "{bytes} unexpected bytes after the encoded value")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Encodes a table.
pub fn encode_table(table: &Table) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + table.rows() * 16 * table.columns.len());
    write_table(&mut out, table);
    out
}

/// Decodes a table, rejecting trailing bytes and ragged columns.
pub fn decode_table(bytes: &[u8]) -> Result<Table, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let table = read_table(&mut r)?;
    r.finish()?;
    Ok(table)
}

/// Encodes a released query result.
pub fn encode_query_result(result: &QueryResult) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(RESULT_MAGIC);
    out.extend_from_slice(&result.confidence.to_le_bytes());
    out.extend_from_slice(&result.epsilon_spent.to_le_bytes());
    out.push(u8::from(result.cached));
    write_table(&mut out, &result.table);
    out
}

/// Decodes a released query result.
pub fn decode_query_result(bytes: &[u8]) -> Result<QueryResult, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    r.magic(RESULT_MAGIC, "result magic")?;
    let confidence = r.f64()?;
    let epsilon_spent = r.f64()?;
    let cached = r.u8()? != 0;
    let table = read_table(&mut r)?;
    r.finish()?;
    Ok(QueryResult {
        confidence,
        epsilon_spent,
        cached,
        table,
    })
}

/// Encodes a dry-run verdict.
pub fn encode_dry_run(verdict: &DryRun) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + 4 + verdict.reason.len());
    out.extend_from_slice(DRY_RUN_MAGIC);
    out.push(u8::from(verdict.admitted));
    out.extend_from_slice(&verdict.epsilon.to_le_bytes());
    out.extend_from_slice(&verdict.confidence.to_le_bytes());
    write_str(&mut out, &verdict.reason);
    out
}

/// Decodes a dry-run verdict, rejecting truncation and trailing bytes.
pub fn decode_dry_run(bytes: &[u8]) -> Result<DryRun, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    r.magic(DRY_RUN_MAGIC, "dry-run magic")?;
    let admitted = r.u8()? != 0;
    let epsilon = r.f64()?;
    let confidence = r.f64()?;
    let reason = r.string()?;
    r.finish()?;
    Ok(DryRun {
        admitted,
        reason,
        epsilon,
        confidence,
    })
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_table(out: &mut Vec<u8>, table: &Table) {
    out.extend_from_slice(TABLE_MAGIC);
    out.extend_from_slice(&(table.columns.len() as u32).to_le_bytes());
    out.extend_from_slice(&(table.rows() as u32).to_le_bytes());
    for column in &table.columns {
        write_str(out, &column.name);
        match &column.values {
            ColumnValues::Text(v) => {
                out.push(TAG_TEXT);
                v.iter().for_each(|s| write_str(out, s));
            }
            ColumnValues::Int(v) => {
                out.push(TAG_INT);
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            ColumnValues::Float(v) => {
                out.push(TAG_FLOAT);
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            ColumnValues::Estimate(v) => {
                out.push(TAG_ESTIMATE);
                for e in v {
                    for x in [e.value, e.lower, e.upper] {
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
        }
    }
}

fn read_table(r: &mut Reader<'_>) -> Result<Table, DecodeError> {
    r.magic(TABLE_MAGIC, "table magic")?;
    let ncols = r.u32()? as usize;
    let nrows = r.u32()? as usize;
    let mut columns = Vec::with_capacity(ncols.min(1024));
    for _ in 0..ncols {
        let name = r.string()?;
        let tag = r.u8()?;
        // Check the fixed-width payload fits before allocating for it.
        let width = match tag {
            TAG_INT | TAG_FLOAT => 8,
            TAG_ESTIMATE => 24,
            _ => 4,
        };
        r.need(nrows.saturating_mul(width))?;
        let values = match tag {
            TAG_TEXT => {
                ColumnValues::Text((0..nrows).map(|_| r.string()).collect::<Result<_, _>>()?)
            }
            TAG_INT => ColumnValues::Int((0..nrows).map(|_| r.i64()).collect::<Result<_, _>>()?),
            TAG_FLOAT => {
                ColumnValues::Float((0..nrows).map(|_| r.f64()).collect::<Result<_, _>>()?)
            }
            TAG_ESTIMATE => ColumnValues::Estimate(
                (0..nrows)
                    .map(|_| {
                        Ok(Estimate {
                            value: r.f64()?,
                            lower: r.f64()?,
                            upper: r.f64()?,
                        })
                    })
                    .collect::<Result<_, DecodeError>>()?,
            ),
            other => {
                return Err(DecodeError::Unknown {
                    what: "column tag",
                    found: u32::from(other),
                });
            }
        };
        columns.push(Column { name, values });
    }
    if ncols == 0 && nrows != 0 {
        return Err(DecodeError::Ragged {
            column: String::new(),
            rows: 0,
            expected: nrows,
        });
    }
    Ok(Table { columns })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.bytes.len().saturating_sub(self.at) < n {
            return Err(DecodeError::Truncated {
                wanted: n,
                at: self.at,
            });
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        self.need(n)?;
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn eight(&mut self) -> Result<[u8; 8], DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(a)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.eight()?))
    }

    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(self.eight()?))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u32()? as usize;
        let at = self.at;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8 { at })
    }

    fn magic(&mut self, expected: &[u8; 4], what: &'static str) -> Result<(), DecodeError> {
        let b = self.take(4)?;
        if b != expected {
            return Err(DecodeError::Unknown {
                what,
                found: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            });
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            bytes => Err(DecodeError::Trailing { bytes }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table::default()
            .with(
                "district",
                ColumnValues::Text(vec!["东城区".into(), "西城区".into()]),
            )
            .with("n", ColumnValues::Int(vec![3, 4]))
            .with(
                "mean",
                ColumnValues::Estimate(vec![
                    Estimate {
                        value: 1.0,
                        lower: 0.5,
                        upper: 1.5,
                    },
                    Estimate {
                        value: 2.0,
                        lower: 1.5,
                        upper: 2.5,
                    },
                ]),
            )
    }

    #[test]
    fn table_round_trips() {
        let t = sample();
        assert_eq!(decode_table(&encode_table(&t)).unwrap(), t);
    }

    #[test]
    fn query_result_round_trips() {
        let q = QueryResult {
            confidence: 0.95,
            epsilon_spent: 0.5,
            cached: true,
            table: sample(),
        };
        assert_eq!(decode_query_result(&encode_query_result(&q)).unwrap(), q);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode_table(&sample());
        for cut in 0..bytes.len() {
            assert!(decode_table(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn sample_dry_run() -> DryRun {
        DryRun {
            admitted: true,
            reason: "COUNT over public groups of `district`, Laplace noise".into(),
            epsilon: 0.25,
            confidence: 0.95,
        }
    }

    #[test]
    fn dry_run_round_trips() {
        let d = sample_dry_run();
        assert_eq!(decode_dry_run(&encode_dry_run(&d)).unwrap(), d);
        let refused = DryRun {
            admitted: false,
            reason: "column `id_number` is prohibited".into(),
            epsilon: 0.0,
            confidence: 0.0,
        };
        assert_eq!(decode_dry_run(&encode_dry_run(&refused)).unwrap(), refused);
    }

    #[test]
    fn every_dry_run_truncation_is_an_error_not_a_panic() {
        let bytes = encode_dry_run(&sample_dry_run());
        for cut in 0..bytes.len() {
            assert!(decode_dry_run(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn dry_run_with_trailing_bytes_or_wrong_magic_is_refused() {
        let mut bytes = encode_dry_run(&sample_dry_run());
        bytes.push(7);
        assert_eq!(
            decode_dry_run(&bytes),
            Err(DecodeError::Trailing { bytes: 1 })
        );
        let result = encode_query_result(&QueryResult {
            confidence: 0.95,
            epsilon_spent: 0.5,
            cached: false,
            table: sample(),
        });
        assert!(matches!(
            decode_dry_run(&result),
            Err(DecodeError::Unknown { .. })
        ));
    }

    #[test]
    fn huge_declared_row_count_is_refused_before_allocation() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(TABLE_MAGIC);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        write_str(&mut bytes, "x");
        bytes.push(TAG_INT);
        assert!(matches!(
            decode_table(&bytes),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode_table(&sample());
        bytes.push(0);
        assert_eq!(
            decode_table(&bytes),
            Err(DecodeError::Trailing { bytes: 1 })
        );
    }
}

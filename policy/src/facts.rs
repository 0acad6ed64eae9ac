//! What registration finds in a dataset, and the trait through which a
//! release asks about it. The facts only let a release skip steps that
//! would change no value on that data; they never change the noise.

use datafusion::arrow::array::AsArray;
use datafusion::prelude::SessionContext;

use crate::PolicyError;
use crate::manifest::Manifest;

/// What registration found about the data. A release uses these facts only
/// to skip steps that would change no value on this data (bounding rows
/// already within the bound, clamping values already within bounds), so
/// the released distribution is exactly that of the full mechanism; the
/// noise always covers the manifest's bounds.
pub trait DataFacts {
    /// `table` holds at most one row per privacy unit.
    fn one_row_per_unit(&self, table: &str) -> bool;
    /// Every value of `table.column` is present and within its manifest
    /// bounds.
    fn within_bounds(&self, table: &str, column: &str) -> bool;
}

/// A function saying which datasets hold one row per privacy unit, and no
/// facts about values.
impl<F: Fn(&str) -> bool> DataFacts for F {
    fn one_row_per_unit(&self, table: &str) -> bool {
        self(table)
    }

    fn within_bounds(&self, _table: &str, _column: &str) -> bool {
        false
    }
}

/// What registration found in one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFacts {
    pub table: String,
    /// At most one row per privacy unit, and no row without one.
    pub one_row_per_unit: bool,
    /// Bounded numeric columns whose every value is present and within the
    /// manifest bounds.
    pub within_bounds: Vec<String>,
}

impl DataFacts for &TableFacts {
    fn one_row_per_unit(&self, table: &str) -> bool {
        self.table == table && self.one_row_per_unit
    }

    fn within_bounds(&self, table: &str, column: &str) -> bool {
        self.table == table && self.within_bounds.iter().any(|c| c == column)
    }
}

/// Finds the facts of `table` (described by `manifest`) in one scan. The
/// uniqueness of the privacy unit is a `COUNT(DISTINCT)`, whose memory grows
/// with the number of units; registration finds it while ingesting instead
/// and asks [`find_bound_facts`] for the rest.
pub async fn find_table_facts(
    ctx: &SessionContext,
    table: &str,
    manifest: &Manifest,
) -> Result<TableFacts, PolicyError> {
    let unit = &manifest.privacy_unit;
    let uniqueness =
        format!("COUNT(*) = COUNT(DISTINCT \"{unit}\") AND COUNT(*) = COUNT(\"{unit}\")");
    let (first, within_bounds) = scan_facts(ctx, table, manifest, Some(uniqueness)).await?;
    Ok(TableFacts {
        table: table.to_string(),
        one_row_per_unit: first.unwrap_or(false),
        within_bounds,
    })
}

/// The bounded numeric columns of `table` whose every value is present and
/// within the manifest's bounds, in one scan of `MIN`, `MAX` and `COUNT`
/// (memory independent of the row count).
pub async fn find_bound_facts(
    ctx: &SessionContext,
    table: &str,
    manifest: &Manifest,
) -> Result<Vec<String>, PolicyError> {
    Ok(scan_facts(ctx, table, manifest, None).await?.1)
}

/// One scan answering `first` (a boolean SQL aggregate, if any) and the
/// bounds of every bounded numeric column.
async fn scan_facts(
    ctx: &SessionContext,
    table: &str,
    manifest: &Manifest,
    first: Option<String>,
) -> Result<(Option<bool>, Vec<String>), PolicyError> {
    let bounded: Vec<(&str, (f64, f64))> = manifest
        .columns
        .iter()
        .filter(|c| c.ty.is_numeric())
        .filter_map(|c| Some((c.name.as_str(), c.bounds?)))
        .collect();
    let offset = usize::from(first.is_some());
    let mut checks: Vec<String> = first.into_iter().collect();
    checks.extend(bounded.iter().map(|(c, (lo, hi))| {
        format!(
            "COALESCE(MIN(\"{c}\") >= {lo} AND MAX(\"{c}\") <= {hi} AND COUNT(\"{c}\") = COUNT(*), FALSE)"
        )
    }));
    if checks.is_empty() {
        return Ok((None, Vec::new()));
    }
    let sql = format!("SELECT {} FROM \"{table}\"", checks.join(", "));
    let batches = ctx.sql(&sql).await?.collect().await?;
    let fact = |i: usize| {
        batches
            .first()
            .filter(|b| b.num_rows() > 0)
            .is_some_and(|b| b.column(i).as_boolean().value(0))
    };
    let within_bounds = bounded
        .iter()
        .enumerate()
        .filter(|(i, _)| fact(i + offset))
        .map(|(_, (c, _))| c.to_string())
        .collect();
    Ok(((offset == 1).then(|| fact(0)), within_bounds))
}

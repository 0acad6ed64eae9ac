//! Tables that cross the boundary: released query results and emitted outputs.

/// A noisy estimate with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The released (noised) value.
    pub value: f64,
    /// Lower end of the confidence interval.
    pub lower: f64,
    /// Upper end of the confidence interval.
    pub upper: f64,
}

/// The values of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    /// Text, for example public group keys.
    Text(Vec<String>),
    /// Whole numbers computed by the job.
    Int(Vec<i64>),
    /// Floating-point numbers computed by the job.
    Float(Vec<f64>),
    /// Differentially private estimates, each with its interval.
    Estimate(Vec<Estimate>),
}

impl ColumnValues {
    /// Number of values in the column.
    pub fn len(&self) -> usize {
        match self {
            ColumnValues::Text(v) => v.len(),
            ColumnValues::Int(v) => v.len(),
            ColumnValues::Float(v) => v.len(),
            ColumnValues::Estimate(v) => v.len(),
        }
    }

    /// True when the column has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value at `row`, rendered for display.
    pub fn display(&self, row: usize) -> String {
        match self {
            ColumnValues::Text(v) => v[row].clone(),
            ColumnValues::Int(v) => v[row].to_string(),
            ColumnValues::Float(v) => format!("{:.2}", v[row]),
            ColumnValues::Estimate(v) => {
                let e = v[row];
                format!("{:.1} [{:.1}, {:.1}]", e.value, e.lower, e.upper)
            }
        }
    }
}

/// A named column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Column values.
    pub values: ColumnValues,
}

/// A table: named columns of equal length.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// The columns, in order.
    pub columns: Vec<Column>,
}

impl Table {
    /// Number of rows (0 for a table without columns).
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.values.len())
    }

    /// The column called `name`, if any.
    pub fn column(&self, name: &str) -> Option<&ColumnValues> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.values)
    }

    /// Checks that every column has as many values as the first.
    pub fn validate(&self) -> Result<(), crate::abi::DecodeError> {
        let expected = self.rows();
        match self.columns.iter().find(|c| c.values.len() != expected) {
            Some(c) => Err(crate::abi::DecodeError::Ragged {
                column: c.name.clone(),
                rows: c.values.len(),
                expected,
            }),
            None => Ok(()),
        }
    }

    /// Adds a column; the builder style keeps job code short.
    pub fn with(mut self, name: impl Into<String>, values: ColumnValues) -> Self {
        self.columns.push(Column {
            name: name.into(),
            values,
        });
        self
    }
}

/// What the host returns for an admitted query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// Confidence level of every interval in the table, for example 0.95.
    pub confidence: f64,
    /// Privacy loss (epsilon) charged to the grant for this result.
    pub epsilon_spent: f64,
    /// True when the result is a cached release of an identical earlier query.
    pub cached: bool,
    /// The released table.
    pub table: Table,
}

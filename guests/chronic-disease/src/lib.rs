//! Chronic-disease visit rates per district: visits with a chronic
//! diagnosis (health_visits joined to residents on the person) per 1,000
//! residents, each count released with differential privacy and the rate
//! computed from the released values, with an interval that covers both.
//!
//! Needs a grant over `health_visits` joined to `residents`. The parameter
//! `codes` (comma-separated ICD-10 codes, default `I10,E11.9`: hypertension
//! and type 2 diabetes) picks the diagnoses.
use udf_sdk::{ColumnValues, Ctx, Error, Estimate, JobResult, LogLevel, Table};

const DEFAULT_CODES: &str = "I10,E11.9";

/// The diagnosis codes, checked to be plain ICD-10 codes so they can be
/// quoted into SQL safely.
fn codes(ctx: &mut Ctx) -> Result<Vec<String>, Error> {
    let raw = ctx.param("codes").unwrap_or_else(|| DEFAULT_CODES.into());
    let codes: Vec<String> = raw.split(',').map(|c| c.trim().to_string()).collect();
    for code in &codes {
        let plain = !code.is_empty()
            && code.len() <= 8
            && code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '.');
        if !plain {
            return Err(Error::new(format!(
                "parameter `codes`: `{code}` is not an ICD-10 code such as I10 or E11.9"
            )));
        }
    }
    Ok(codes)
}

fn estimates(table: &Table, name: &str) -> Result<Vec<Estimate>, Error> {
    match table.column(name) {
        Some(ColumnValues::Estimate(v)) => Ok(v.clone()),
        _ => Err(Error::new(format!(
            "the release has no estimate column `{name}`"
        ))),
    }
}

fn districts(table: &Table) -> Result<Vec<String>, Error> {
    match table.column("district") {
        Some(ColumnValues::Text(v)) => Ok(v.clone()),
        _ => Err(Error::new("the release has no `district` column")),
    }
}

fn run(ctx: &mut Ctx) -> JobResult {
    let codes = codes(ctx)?;
    let list = codes
        .iter()
        .map(|c| format!("'{c}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let visits = ctx.query(&format!(
        "SELECT r.district, COUNT(*) AS visits \
         FROM health_visits h JOIN residents r ON h.person_id = r.person_id \
         WHERE h.diagnosis_code IN ({list}) GROUP BY r.district ORDER BY r.district"
    ))?;
    let residents = ctx.query(
        "SELECT district, COUNT(*) AS residents FROM residents GROUP BY district ORDER BY district",
    )?;
    let (names, chronic) = (
        districts(&visits.table)?,
        estimates(&visits.table, "visits")?,
    );
    let (population_names, population): (Vec<String>, Vec<Estimate>) = (
        districts(&residents.table)?,
        estimates(&residents.table, "residents")?,
    );
    // Post-processing of released values: a rate per 1,000 residents. Its
    // interval divides the ends of both intervals, so it holds whenever both
    // do (a resident count whose interval reaches below one is taken as one).
    let per_thousand = |v: f64, p: f64| 1000.0 * v.max(0.0) / p.max(1.0);
    let mut rates = Vec::with_capacity(names.len());
    let mut people_by_name = Vec::with_capacity(names.len());
    for (district, visits) in names.iter().zip(&chronic) {
        let Some(at) = population_names.iter().position(|d| d == district) else {
            return Err(Error::new(format!(
                "district `{district}` has no resident count"
            )));
        };
        let people = population[at];
        people_by_name.push(people);
        rates.push(Estimate {
            value: per_thousand(visits.value, people.value),
            lower: per_thousand(visits.lower, people.upper),
            upper: per_thousand(visits.upper, people.lower),
        });
    }
    ctx.log(
        LogLevel::Info,
        &format!(
            "{} districts; diagnoses {}; epsilon {:.3}",
            names.len(),
            codes.join(","),
            visits.epsilon_spent + residents.epsilon_spent
        ),
    );
    let table = Table::default()
        .with("district", ColumnValues::Text(names))
        .with("chronic_visits", ColumnValues::Estimate(chronic))
        .with("residents", ColumnValues::Estimate(people_by_name))
        .with("per_1000_residents", ColumnValues::Estimate(rates));
    ctx.emit("chronic_visits_by_district", &table)
}

udf_sdk::job!(run);

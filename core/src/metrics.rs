//! The service's metrics, in the Prometheus (OpenMetrics) text format.
//!
//! Counters and histograms live as long as the [`Domain`]; the rest is read
//! from the store and the ledger when scraped, so it agrees with them
//! however long the process has run. Each metric is labelled with ids,
//! kinds and states only, never with anything computed from data.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::*;

/// A metric's labels, as (name, value) pairs.
pub type Labels = Vec<(String, String)>;

/// What the core counts while it runs.
#[derive(Debug, Clone)]
pub(crate) struct CoreMetrics {
    /// Ledger entries this process recorded, by kind (and rule, for refusals).
    entries: Family<Labels, Counter>,
    /// How long an append waited for its group to be durable.
    append_seconds: Histogram,
    /// What ended jobs used, from their `job.ended` entries.
    udf_rows: Counter,
    udf_rows_failed: Counter,
    rows_read: Counter,
    fuel: Counter,
    started: std::time::Instant,
}

impl CoreMetrics {
    pub(crate) fn new() -> CoreMetrics {
        CoreMetrics {
            entries: Family::default(),
            append_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            udf_rows: Counter::default(),
            udf_rows_failed: Counter::default(),
            rows_read: Counter::default(),
            fuel: Counter::default(),
            started: std::time::Instant::now(),
        }
    }

    /// Counts an entry of `kind` recorded in `seconds`; `body` is its body
    /// (a job's end adds what the job used).
    pub(crate) fn recorded(
        &self,
        kind: &str,
        rule: Option<&str>,
        seconds: f64,
        body: &serde_json::Value,
    ) {
        let mut labels = vec![("kind".to_string(), kind.to_string())];
        if let Some(rule) = rule {
            labels.push(("rule".to_string(), rule.to_string()));
        }
        self.entries.get_or_create(&labels).inc();
        self.append_seconds.observe(seconds);
        if kind == "job.ended" {
            let used = |key: &str| {
                body.get(key)
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
            };
            self.udf_rows.inc_by(used("udf_rows"));
            self.udf_rows_failed.inc_by(used("udf_rows_failed"));
            self.rows_read.inc_by(used("rows_read"));
            self.fuel.inc_by(used("fuel_used"));
        }
    }
}

/// A gauge of floats.
fn float_gauge(value: f64) -> Gauge<f64, AtomicU64> {
    let gauge = Gauge::<f64, AtomicU64>::default();
    gauge.set(value);
    gauge
}

/// A gauge of whole numbers.
fn int_gauge(value: i64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(value);
    gauge
}

/// A family of float gauges, one per label set.
fn float_family(values: Vec<(Labels, f64)>) -> Family<Labels, Gauge<f64, AtomicU64>> {
    let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (labels, value) in values {
        family.get_or_create(&labels).set(value);
    }
    family
}

impl Domain {
    /// Adds the core's metrics to `registry`: what this process counted,
    /// and what the store and the ledger say now (jobs by status, epsilon
    /// spent per grant and per dataset, the ledger's size and groups).
    pub fn register_metrics(&self, registry: &mut Registry) -> Result<(), DomainError> {
        let m = &self.metrics;
        registry.register(
            "unseen_ledger_entries",
            "Ledger entries this process recorded, by kind (and rule, for refused queries)",
            m.entries.clone(),
        );
        registry.register(
            "unseen_ledger_append_seconds",
            "Time from asking to append an entry to its group being durable",
            m.append_seconds.clone(),
        );
        registry.register(
            "unseen_udf_rows",
            "Rows wasm UDFs were called on (failed ones included), over ended jobs",
            m.udf_rows.clone(),
        );
        registry.register(
            "unseen_udf_rows_failed",
            "Rows on which a UDF trapped, ran out of instructions or returned NaN (made null), over ended jobs",
            m.udf_rows_failed.clone(),
        );
        registry.register(
            "unseen_job_rows_read",
            "Rows ended jobs read",
            m.rows_read.clone(),
        );
        registry.register(
            "unseen_job_fuel",
            "Wasm fuel ended jobs burned",
            m.fuel.clone(),
        );
        registry.register(
            "unseen_uptime_seconds",
            "Seconds since this process opened the data directory",
            float_gauge(m.started.elapsed().as_secs_f64()),
        );
        let head = self.ledger.head()?;
        registry.register(
            "unseen_ledger_size",
            "Entries in the ledger",
            int_gauge(i64::try_from(head.size).unwrap_or(i64::MAX)),
        );
        let groups = self.ledger.stats();
        registry.register(
            "unseen_ledger_group_commits",
            "Group commits (one write, one fdatasync, one checkpoint each) since open",
            int_gauge(i64::try_from(groups.groups).unwrap_or(i64::MAX)),
        );
        registry.register(
            "unseen_ledger_mean_group_size",
            "Mean entries per group commit since open",
            float_gauge(groups.mean_group()),
        );
        let db = lock(&self.db);
        let labelled = |rows: Vec<(String, f64)>, label: &str| -> Vec<(Labels, f64)> {
            rows.into_iter()
                .map(|(key, value)| (vec![(label.to_string(), key)], value))
                .collect()
        };
        registry.register(
            "unseen_jobs",
            "Jobs by status (queued, running, or how their run ended)",
            float_family(labelled(store::jobs::count_by_status(&db)?, "status")),
        );
        registry.register(
            "unseen_grant_epsilon_spent",
            "Epsilon spent per grant",
            float_family(labelled(store::metrics::grant_epsilon_spent(&db)?, "grant")),
        );
        registry.register(
            "unseen_dataset_epsilon_spent",
            "Epsilon spent per dataset layer",
            float_family(labelled(
                store::metrics::dataset_epsilon_spent(&db)?,
                "dataset",
            )),
        );
        Ok(())
    }
}

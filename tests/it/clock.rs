//! The service's rules over time, on a clock the test moves forward
//! (`Domain::open_with_clock`): a grant expires, an open-column query
//! window reopens, without waiting days for either.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use unseen::JobStatus;
use unseen::clock::ShiftedClock;

use crate::support::{issue_grant, residents_dir};

const HOUR: Duration = Duration::from_secs(3600);

fn open(data: &str, clock: &Arc<ShiftedClock>) -> unseen::Domain {
    unseen::Domain::open_with_clock(Path::new(data), Arc::clone(clock) as _).unwrap()
}

/// How a query as `dev` ended: its status and the reason, or the error.
fn query(domain: &Arc<unseen::Domain>, grant: &str, sql: &str) -> (Option<JobStatus>, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    match domain.run_sql(runtime.handle(), "dev", grant, sql, &Default::default()) {
        Ok(o) => (Some(o.status), o.reason.unwrap_or_default()),
        Err(e) => (None, e.to_string()),
    }
}

#[test]
fn a_grant_answers_until_it_expires_and_never_after() {
    let (_dir, data) = residents_dir("300");
    let grant = issue_grant(&data, "10", &["--days", "1"]);
    let clock = Arc::new(ShiftedClock::new());
    let domain = Arc::new(open(&data, &clock));
    let sql = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district";
    let (status, why) = query(&domain, &grant, sql);
    assert_eq!(status, Some(JobStatus::Finished), "{why}");
    clock.advance(23 * HOUR);
    let (status, why) = query(&domain, &grant, sql);
    assert_eq!(
        status,
        Some(JobStatus::Finished),
        "a day is not over: {why}"
    );
    clock.advance(2 * HOUR);
    let (status, why) = query(&domain, &grant, sql);
    assert_ne!(status, Some(JobStatus::Finished), "{why}");
    assert!(why.contains("expired at"), "{why}");
}

#[test]
fn an_open_query_window_reopens_once_it_has_passed() {
    let (_dir, data) = residents_dir("300");
    let grant = issue_grant(
        &data,
        "10",
        &["--max-open-queries", "1", "--open-query-window", "3600"],
    );
    let clock = Arc::new(ShiftedClock::new());
    let domain = Arc::new(open(&data, &clock));
    let sql = "SELECT gender, COUNT(*) AS n FROM residents GROUP BY gender";
    let (status, why) = query(&domain, &grant, sql);
    assert_eq!(status, Some(JobStatus::Finished), "{why}");
    let (status, why) = query(&domain, &grant, sql);
    assert_ne!(status, Some(JobStatus::Finished), "{why}");
    assert!(why.contains("open-column queries per 3600 s"), "{why}");
    clock.advance(HOUR + Duration::from_secs(5));
    let (status, why) = query(&domain, &grant, sql);
    assert_eq!(
        status,
        Some(JobStatus::Finished),
        "the window passed: {why}"
    );
}

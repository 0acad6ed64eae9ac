//! Grant applications in the console: developers apply, amend nothing
//! here (the command line and API do), withdraw and give feedback; the
//! provider (admins) pre-reviews and decides; auditors read.

use unseen_api::{
    Application, ApplicationDecision, ApplicationFeedback, ApplicationStatus, GrantRequest,
    Narrowing, PreReview,
};

use super::*;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/applications", get(list).post(apply))
        .route("/console/applications/{id}", get(show))
        .route("/console/applications/{id}/pre-review", post(pre_review))
        .route("/console/applications/{id}/decision", post(decide))
        .route("/console/applications/{id}/withdraw", post(withdraw))
        .route("/console/applications/{id}/feedback", post(feedback))
}

async fn list(State(state): State<AppState>, viewer: Viewer) -> Page {
    viewer.require(Operation::ListApplications, "read grant applications")?;
    let listed = viewer.call(&state, |b| b.applications()).await?;
    let applicant = permits(viewer.actor.role, Operation::Apply);
    let body = html! {
        h1 { "Grant applications" }
        table #applications {
            thead { tr {
                th { "Application" } th { "Applicant" } th { "Dataset" } th { "Scenario" }
                th.num { "ε asked" } th { "Status" } th { "Grant" } th { "Last notice" }
            } }
            tbody {
                @for a in &listed.applications {
                    tr {
                        td { a href=(format!("/console/applications/{}", a.id)) { (a.id) } }
                        td { (a.applicant) } td { (a.requested.dataset) } td { (a.requested.scenario) }
                        td.num { (a.requested.epsilon_total) }
                        td { (a.status.as_str()) }
                        td { (a.grant.clone().unwrap_or_default()) }
                        td { @if let Some(n) = a.last_notice() { (n.step) " by " (n.actor) @if !n.reason.is_empty() { ": " (n.reason) } } }
                    }
                }
            }
        }
        @if applicant {
            h2 { "Apply for a grant" }
            p { "One scenario per application. The data provider checks it is complete, then decides it; the grant is issued with the terms approved." }
            form.apply method="post" action="/console/applications" {
                input type="hidden" name="form_key" value=(viewer.form_key);
                label for="dataset" { "Dataset" } input #dataset name="dataset" required;
                label for="scenario" { "Scenario" } input #scenario name="scenario" required;
                label for="purpose" { "Purpose" } textarea #purpose name="purpose" rows="2" required {}
                label for="columns" { "Columns (comma-separated; empty for all)" } input #columns name="columns";
                label for="epsilon" { "Total ε" } input #epsilon name="epsilon" inputmode="decimal" required;
                label for="query_epsilon" { "ε per query" } input #query_epsilon name="query_epsilon" inputmode="decimal" value="0.5";
                label for="days" { "Days" } input #days name="days" inputmode="numeric" value="365";
                label { input type="checkbox" name="allow_sql" value="on" checked; " SQL" }
                label { input type="checkbox" name="allow_modules" value="on" checked; " wasm modules" }
                label { input type="checkbox" name="allow_extracts" value="on"; " masked extracts" }
                button #apply type="submit" { "Apply" }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Grant applications", Some(&viewer), body),
    ))
}

#[derive(Deserialize)]
struct ApplyForm {
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    scenario: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    columns: String,
    #[serde(default)]
    epsilon: String,
    #[serde(default)]
    query_epsilon: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    allow_sql: Option<String>,
    #[serde(default)]
    allow_modules: Option<String>,
    #[serde(default)]
    allow_extracts: Option<String>,
}

fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

async fn apply(State(state): State<AppState>, viewer: Viewer, body: Bytes) -> Page {
    viewer.require(Operation::Apply, "apply for grants")?;
    let f: ApplyForm = posted_form(&viewer, &body)?;
    let mut request = GrantRequest::new(
        &f.dataset,
        "",
        &f.purpose,
        form_number(&viewer, "Total ε", &f.epsilon)?,
    );
    request.scenario = f.scenario;
    request.columns = comma_list(&f.columns);
    if let Some(e) = optional(&viewer, "ε per query", &f.query_epsilon)? {
        request.query_epsilon = e;
    }
    if let Some(days) = optional(&viewer, "Days", &f.days)? {
        request.valid_days = days;
    }
    request.allow_sql = f.allow_sql.is_some();
    request.allow_modules = f.allow_modules.is_some();
    request.allow_extracts = f.allow_extracts.is_some();
    let shown = viewer.call(&state, move |b| b.apply(&request)).await?;
    Ok(see_other(&format!(
        "/console/applications/{}",
        shown.application.id
    )))
}

async fn show(State(state): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> Page {
    viewer.require(Operation::ShowApplication, "read grant applications")?;
    let shown = viewer.call(&state, move |b| b.application(&id)).await?;
    let a = &shown.application;
    let body = html! {
        h1 { "Application " (a.id) }
        dl.facts {
            dt { "Applicant" } dd { (a.applicant) }
            dt { "Status" } dd #application-status { (a.status.as_str()) }
            dt { "Dataset" } dd { (a.requested.dataset) @for j in &a.requested.join_datasets { " + " (j) } }
            dt { "Scenario" } dd { (a.requested.scenario) }
            dt { "Purpose" } dd { (a.requested.purpose) }
            @if let Some(grant) = &a.grant {
                dt { "Grant" } dd #application-grant { a href=(format!("/console/grants/{grant}")) { (grant) } }
            }
            dt { "Submitted" } dd { (a.submitted_at) }
        }
        h2 { "History" }
        ol #history {
            @for s in &a.history {
                li { (s.at) " · " strong { (s.step) } " by " (s.actor)
                    @if let Some(r) = s.rating { " · rating " (r) }
                    @if !s.reason.is_empty() { ": " (s.reason) } }
            }
        }
        h2 { "Terms asked for" }
        (json_block(&serde_json::to_value(&a.requested).unwrap_or_default()))
        @if let Some(granted) = &a.granted {
            h2 { "Terms granted" }
            (json_block(&serde_json::to_value(granted).unwrap_or_default()))
        }
        (actions(&viewer, a))
    };
    Ok(respond(
        StatusCode::OK,
        page(&format!("Application {}", a.id), Some(&viewer), body),
    ))
}

/// The forms for what the viewer may do to the application now.
fn actions(viewer: &Viewer, a: &Application) -> Markup {
    let provider = permits(viewer.actor.role, Operation::DecideApplication);
    let applicant = viewer.actor.id == a.applicant;
    let base = format!("/console/applications/{}", a.id);
    html! {
        @if provider && a.status == ApplicationStatus::Submitted {
            h2 { "Pre-review" }
            form.decision method="post" action=(format!("{base}/pre-review")) {
                input type="hidden" name="form_key" value=(viewer.form_key);
                label for="reason" { "What is missing (needed to return it), or a note" }
                textarea #reason name="reason" rows="2" {}
                button #complete type="submit" name="complete" value="yes" { "Complete: send to review" }
                button #incomplete type="submit" name="complete" value="no" { "Incomplete: return to applicant" }
            }
        }
        @if provider && a.status == ApplicationStatus::InReview {
            h2 { "Decision" }
            p { "Approval issues the grant with the terms asked for, narrowed by any field filled in below." }
            form.decision method="post" action=(format!("{base}/decision")) {
                input type="hidden" name="form_key" value=(viewer.form_key);
                label for="reason" { "Reasons (told to the applicant, recorded in the ledger)" }
                textarea #reason name="reason" rows="2" required {}
                label for="epsilon" { "Total ε granted (at most " (a.requested.epsilon_total) ")" }
                input #epsilon name="epsilon" inputmode="decimal";
                label for="days" { "Days granted (at most " (a.requested.valid_days) ")" }
                input #days name="days" inputmode="numeric";
                label for="columns" { "Columns granted (comma-separated)" }
                input #columns name="columns";
                button #approve type="submit" name="decision" value="approve" { "Approve and issue the grant" }
                button #reject type="submit" name="decision" value="reject" { "Reject" }
            }
        }
        @if applicant && !a.status.is_decided() {
            h2 { "Withdraw" }
            form.decision method="post" action=(format!("{base}/withdraw")) {
                input type="hidden" name="form_key" value=(viewer.form_key);
                label for="withdraw-reason" { "Why" }
                input #withdraw-reason name="reason";
                button #withdraw type="submit" { "Withdraw the application" }
            }
        }
        @if applicant && a.status == ApplicationStatus::Approved {
            h2 { "Feedback on the grant's use" }
            form.decision method="post" action=(format!("{base}/feedback")) {
                input type="hidden" name="form_key" value=(viewer.form_key);
                label for="rating" { "Rating (1 poor – 5 good)" }
                select #rating name="rating" { @for r in 1..=5 { option value=(r) selected[r == 4] { (r) } } }
                label for="text" { "What worked and what did not" }
                textarea #text name="text" rows="2" required {}
                button #send-feedback type="submit" { "Send feedback" }
            }
        }
    }
}

#[derive(Deserialize)]
struct PreReviewForm {
    #[serde(default)]
    complete: String,
    #[serde(default)]
    reason: String,
}

async fn pre_review(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    viewer.require(Operation::PreReviewApplication, "pre-review applications")?;
    let f: PreReviewForm = posted_form(&viewer, &body)?;
    let pre_review = PreReview {
        complete: f.complete == "yes",
        reason: f.reason,
    };
    let wanted = id.clone();
    viewer
        .call(&state, move |b| {
            b.pre_review_application(&wanted, &pre_review)
        })
        .await?;
    Ok(see_other(&format!("/console/applications/{id}")))
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    epsilon: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    columns: String,
}

async fn decide(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    viewer.require(Operation::DecideApplication, "decide applications")?;
    let f: DecisionForm = posted_form(&viewer, &body)?;
    let approve = approval(&viewer, &f.decision)?;
    let columns = comma_list(&f.columns);
    let decision = ApplicationDecision {
        approve,
        reason: f.reason,
        narrowing: Narrowing {
            epsilon_total: optional(&viewer, "Total ε granted", &f.epsilon)?,
            valid_days: optional(&viewer, "Days granted", &f.days)?,
            columns: (!columns.is_empty()).then_some(columns),
            ..Narrowing::default()
        },
    };
    let wanted = id.clone();
    viewer
        .call(&state, move |b| b.decide_application(&wanted, &decision))
        .await?;
    Ok(see_other(&format!("/console/applications/{id}")))
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    reason: String,
}

async fn withdraw(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    viewer.require(Operation::WithdrawApplication, "withdraw applications")?;
    let f: ReasonForm = posted_form(&viewer, &body)?;
    let wanted = id.clone();
    viewer
        .call(&state, move |b| b.withdraw_application(&wanted, &f.reason))
        .await?;
    Ok(see_other(&format!("/console/applications/{id}")))
}

#[derive(Deserialize)]
struct FeedbackForm {
    #[serde(default)]
    rating: String,
    #[serde(default)]
    text: String,
}

async fn feedback(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    viewer.require(Operation::ApplicationFeedback, "give feedback on grants")?;
    let f: FeedbackForm = posted_form(&viewer, &body)?;
    let feedback = ApplicationFeedback {
        rating: form_number(&viewer, "Rating", &f.rating)?,
        text: f.text,
    };
    let wanted = id.clone();
    viewer
        .call(&state, move |b| b.application_feedback(&wanted, &feedback))
        .await?;
    Ok(see_other(&format!("/console/applications/{id}")))
}

//! Imports in the console: the outside files proposed for grants, with
//! what their checks found (counts, never values); the data provider
//! (admins) approves one with its own budget or rejects it; developers see
//! their own, auditors all. Proposing needs the file itself, so it is done
//! from the command line, the API or the Python client.

use unseen_api::{Import, ImportDecision, ImportStatus};

use super::*;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/imports", get(list))
        .route("/console/imports/{id}/decision", post(decide))
}

async fn list(State(state): State<AppState>, viewer: Viewer) -> Page {
    viewer.require(Operation::ListImports, "read imports")?;
    let listed = viewer.call(&state, |b| b.imports()).await?;
    let provider = permits(viewer.actor.role, Operation::DecideImport);
    let body = html! {
        h1 { "Imports" }
        p { "Outside data proposed for a grant: checked (schema, key format and check characters, repeated keys, size) and kept encrypted in quarantine until the data provider decides. An approved import is joined to its grant only, on the privacy unit, below a DP aggregate. Propose one with "
            code { "unseen dataset import" } "." }
        table #imports {
            thead { tr {
                th { "Import" } th { "Dataset" } th { "Grant" } th { "Proposed by" }
                th.num { "Rows" } th { "Key" } th { "Status" } th.num { "ε" } th { "Decision" }
            } }
            tbody {
                @for i in &listed.imports {
                    tr {
                        td { (i.id) } td { (i.dataset) }
                        td { a href=(format!("/console/grants/{}", i.grant)) { (i.grant) } }
                        td { (i.proposed_by) " · " (i.proposed_at) }
                        td.num { (i.checks.rows) }
                        td { (i.checks.key) " (" (i.checks.key_format) ")" }
                        td.status { (i.status.as_str()) }
                        td.num { @if let Some(e) = i.epsilon_total { (e) } }
                        td { @if let Some(by) = &i.decided_by { (by) @if !i.reason.is_empty() { ": " (i.reason) } } }
                    }
                }
            }
        }
        @if provider {
            @for i in listed.imports.iter().filter(|i| i.status == ImportStatus::Proposed) {
                (decision_form(&viewer, i))
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Imports", Some(&viewer), body),
    ))
}

fn decision_form(viewer: &Viewer, i: &Import) -> Markup {
    html! {
        h2 { "Decide " (i.id) ": " (i.dataset) " for " (i.grant) }
        form.decision method="post" action=(format!("/console/imports/{}/decision", i.id)) {
            input type="hidden" name="form_key" value=(viewer.form_key);
            label for=(format!("reason-{}", i.id)) { "Reasons (told to the proposer, recorded in the ledger)" }
            textarea id=(format!("reason-{}", i.id)) name="reason" rows="2" required {}
            label for=(format!("epsilon-{}", i.id)) { "Its own total ε (needed to approve)" }
            input id=(format!("epsilon-{}", i.id)) name="epsilon" inputmode="decimal";
            button type="submit" name="decision" value="approve" { "Approve and register" }
            button type="submit" name="decision" value="reject" { "Reject" }
        }
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    epsilon: String,
}

async fn decide(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    viewer.require(Operation::DecideImport, "decide imports")?;
    let f: DecisionForm = posted_form(&viewer, &body)?;
    let approve = approval(&viewer, &f.decision)?;
    let decision = ImportDecision {
        approve,
        reason: f.reason,
        epsilon: optional(&viewer, "Total ε", &f.epsilon)?,
    };
    viewer
        .call(&state, move |b| b.decide_import(&id, &decision))
        .await?;
    Ok(see_other("/console/imports"))
}

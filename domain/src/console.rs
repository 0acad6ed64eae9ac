//! The web console (`/console` on `unseen serve`): server-rendered pages for
//! reviewers, auditors, data providers and developers, over the same
//! operations, tokens and role rules as the JSON API.
//!
//! A page is shown only to the roles the API would answer for the operation
//! it presents ([`crate::server::permits`] reads the route table), and its
//! data comes through the same [`Local`](crate::backend::Local) backend the
//! API uses, so the core checks every read again. Nothing here decides who
//! may see what.
//!
//! The session is the user's token in an `HttpOnly`, `SameSite=Strict`
//! cookie; every form that changes something also carries a value derived
//! from that token, so another site cannot post one. Pages carry no script
//! and a content security policy that allows none, no external font or
//! style: they work without the network. Everything shown is escaped.

// A refused page is a finished `Response`, returned early with `?` as axum
// handlers do; boxing it would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::Value;
use unseen_api::openapi::Operation;

use crate::backend::Backend;
use crate::server::{Actor, ApiError, AppState, as_user, blocking, ledger_key, permits};
use crate::{DomainError, Role};

mod applications;
mod imports;

/// A posted form that changes something: its fields, once it parsed (or a
/// page saying it was malformed) and carried this session's form key (or a
/// refusal), so no form handler can skip the check.
fn posted_form<T: serde::de::DeserializeOwned>(
    viewer: &Viewer,
    body: &Bytes,
) -> Result<T, Response> {
    let malformed = |_| {
        viewer.error(
            StatusCode::BAD_REQUEST,
            "The form was malformed; open the page again.",
        )
    };
    let fields = serde_urlencoded::from_bytes(body).map_err(malformed)?;
    let key: FormKeyOnly = serde_urlencoded::from_bytes(body).map_err(malformed)?;
    viewer.check_form(&key.form_key)?;
    Ok(fields)
}

/// Which of a decision form's two buttons was pressed.
fn approval(viewer: &Viewer, decision: &str) -> Result<bool, Response> {
    match decision {
        "approve" => Ok(true),
        "reject" => Ok(false),
        _ => Err(viewer.error(StatusCode::BAD_REQUEST, "Choose Approve or Reject.")),
    }
}

/// A form field as a number, or a page saying which field is wrong.
fn form_number<T: std::str::FromStr>(
    viewer: &Viewer,
    field: &str,
    text: &str,
) -> Result<T, Response> {
    text.trim().parse().map_err(|_| {
        viewer.error(
            StatusCode::BAD_REQUEST,
            &format!("{field} must be a number; go back and correct it."),
        )
    })
}

/// A form field as a number when it was filled in.
fn optional<T: std::str::FromStr>(
    viewer: &Viewer,
    field: &str,
    text: &str,
) -> Result<Option<T>, Response> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    form_number(viewer, field, text).map(Some)
}

/// The session cookie: the user's token.
const COOKIE: &str = "unseen_session";
/// Rows of a table or entries of the ledger shown on one page.
pub const PAGE_ROWS: usize = 50;

/// The console's routes (merged into the API router).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/console", get(home))
        .route("/console/sign-in", post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/console.css", get(stylesheet))
        .route("/console/reviews", get(reviews))
        .route("/console/outputs/{id}", get(output_page))
        .route("/console/outputs/{id}/decision", post(decide))
        .route("/console/ledger", get(ledger))
        .route("/console/ledger/entries/{index}", get(ledger_entry))
        .route("/console/releases/{id}", get(release))
        .route("/console/disclosure", get(disclosure))
        .route("/console/datasets", get(datasets))
        .route("/console/grants", get(grants))
        .route("/console/grants/{id}", get(grant))
        .route("/console/jobs", get(jobs))
        .route("/console/jobs/{id}", get(job))
        .merge(applications::routes())
        .merge(imports::routes())
}

type Page = Result<Response, Response>;

/// The signed-in user of a page.
struct Viewer {
    actor: Actor,
    /// Value every form that changes something must carry back.
    form_key: String,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        signed_in(state, &parts.headers).await
    }
}

/// The viewer of a request: to the sign-in page without a session, back to
/// it (401) with a session whose token no longer works.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Viewer, Response> {
    let Some(token) = session_token(headers) else {
        return Err(see_other("/console"));
    };
    let form_key = form_key(&token);
    match blocking(state, move |d| d.authenticate(&token)).await {
        Ok((id, role)) => {
            tracing::Span::current().record("user", id.as_str());
            Ok(Viewer {
                actor: Actor { id, role },
                form_key,
            })
        }
        Err(e) => Err(sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some(&format!(
                "Your session ended: {} Sign in again with a current token.",
                e.message()
            )),
        )),
    }
}

impl Viewer {
    /// Refuses the page unless the viewer's role may call `operation`.
    fn require(&self, operation: Operation, what: &str) -> Result<(), Response> {
        if permits(self.actor.role, operation) {
            return Ok(());
        }
        let allowed: Vec<&str> = [Role::Admin, Role::Developer, Role::Reviewer, Role::Auditor]
            .into_iter()
            .filter(|r| permits(*r, operation))
            .map(Role::as_str)
            .collect();
        let message = format!(
            "`{}` is a {}, and only {} may {what}.",
            self.actor.id,
            self.actor.role.as_str(),
            allowed.join(" or ")
        );
        Err(self.error(StatusCode::FORBIDDEN, &message))
    }

    /// An error page with the viewer's navigation.
    fn error(&self, status: StatusCode, message: &str) -> Response {
        let body = html! {
            h1 { (status.canonical_reason().unwrap_or("Refused")) }
            p.error { (message) }
            p { a href="/console" { "Back to the start page" } }
        };
        respond(status, page("Refused", Some(self), body))
    }

    /// The page for an error from the service.
    fn fail(&self, e: ApiError) -> Response {
        self.error(e.status(), e.message())
    }

    /// Checks the form key of a posted form.
    fn check_form(&self, given: &str) -> Result<(), Response> {
        // In constant time, so timing says nothing of where they differ.
        use subtle::ConstantTimeEq as _;
        if bool::from(given.as_bytes().ct_eq(self.form_key.as_bytes())) {
            return Ok(());
        }
        Err(self.error(
            StatusCode::FORBIDDEN,
            "This form did not come from your console session (it may be stale); open the page again and resubmit.",
        ))
    }

    /// Runs a backend operation as the viewer.
    async fn call<T, F>(&self, state: &AppState, f: F) -> Result<T, Response>
    where
        T: Send + 'static,
        F: FnOnce(&crate::backend::Local) -> anyhow::Result<T> + Send + 'static,
    {
        as_user(state, self.actor.clone(), f)
            .await
            .map_err(|e| self.fail(e))
    }
}

/// The token in the session cookie, if any.
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

/// The form key of a session: a hash of its token under a fixed label, so
/// it proves the form was rendered for this session and reveals nothing.
fn form_key(token: &str) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"unseen console form key\n");
    context.update(token.as_bytes());
    hex::encode(&context.finish().as_ref()[..16])
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("unseen_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A page as a response, with the headers every console page carries.
fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The frame of every page: who is signed in and what their role may open.
fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Unseen" }
                link rel="stylesheet" href="/console/console.css";
            }
            body {
                header {
                    a.brand href="/console" { "Unseen" }
                    @if let Some(v) = viewer {
                        nav {
                            @for (operation, href, label) in NAVIGATION {
                                @if permits(v.actor.role, *operation) {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                        span.who {
                            "Signed in as " strong #who { (v.actor.id) }
                            " · " span.role #role { (v.actor.role.as_str()) }
                        }
                        form.inline method="post" action="/console/sign-out" {
                            input type="hidden" name="form_key" value=(v.form_key);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sections of the console, each shown to the roles that may call the
/// operation behind it.
const NAVIGATION: &[(Operation, &str, &str)] = &[
    (Operation::ReviewQueue, "/console/reviews", "Review queue"),
    (Operation::VerifyLedger, "/console/ledger", "Ledger"),
    (
        Operation::DisclosureReport,
        "/console/disclosure",
        "Disclosure",
    ),
    (Operation::ListDatasets, "/console/datasets", "Datasets"),
    (Operation::ListGrants, "/console/grants", "Grants"),
    (
        Operation::ListApplications,
        "/console/applications",
        "Applications",
    ),
    (Operation::ListImports, "/console/imports", "Imports"),
    (Operation::ListJobs, "/console/jobs", "Jobs"),
];

fn sign_in_page(status: StatusCode, message: Option<&str>) -> Response {
    let body = html! {
        h1 { "Sign in" }
        p { "Unseen: public data that is usable but invisible (数据可用不可见)." }
        @if let Some(message) = message { p.error { (message) } }
        form method="post" action="/console/sign-in" {
            label for="token" { "Your token" }
            input #token type="password" name="token" autocomplete="off" required;
            button #sign-in type="submit" { "Sign in" }
        }
        p.hint { "An admin issues tokens with " code { "unseen user add" } " and " code { "unseen user token" } "." }
    };
    let mut response = respond(status, page("Sign in", None, body));
    response
        .headers_mut()
        .append(header::SET_COOKIE, clear_cookie());
    response
}

async fn root() -> Response {
    see_other("/console")
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

/// The start page, or the sign-in form for a visitor without a session.
async fn home(State(state): State<AppState>, headers: HeaderMap) -> Page {
    if session_token(&headers).is_none() {
        return Ok(sign_in_page(StatusCode::OK, None));
    }
    let viewer = signed_in(&state, &headers).await?;
    let role = viewer.actor.role;
    let body = html! {
        h1 { "Welcome, " (viewer.actor.id) }
        p { "Your role is " strong { (role.as_str()) } ". " (role_summary(role)) }
        ul.sections {
            @for (operation, href, label) in NAVIGATION {
                @if permits(role, *operation) {
                    li { a href=(href) { (label) } }
                }
            }
        }
    };
    Ok(respond(StatusCode::OK, page("Start", Some(&viewer), body)))
}

fn role_summary(role: Role) -> &'static str {
    match role {
        Role::Reviewer => {
            "You read quarantined outputs and approve or reject them; nothing leaves without you."
        }
        Role::Auditor => {
            "You verify the ledger, its entries and releases, and read the disclosure report."
        }
        Role::Admin => {
            "You register datasets, issue grants and set budgets, and can read the ledger."
        }
        Role::Developer => {
            "You follow your jobs and the grants you hold; results reach you only once reviewed."
        }
    }
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(State(state): State<AppState>, body: Bytes) -> Page {
    let Ok(SignIn { token }) = serde_urlencoded::from_bytes::<SignIn>(&body) else {
        return Err(sign_in_page(
            StatusCode::BAD_REQUEST,
            Some("The form lacked a token; paste your token and sign in."),
        ));
    };
    let token = token.trim().to_string();
    // A cookie value may hold only these; no token the service issues holds others.
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
    {
        return Err(sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not a token: tokens are letters, digits and - _ . ~ + / = only."),
        ));
    }
    let checked = token.clone();
    if let Err(e) = blocking(&state, move |d| d.authenticate(&checked)).await {
        return Err(sign_in_page(StatusCode::UNAUTHORIZED, Some(e.message())));
    }
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut response = see_other("/console");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct FormKeyOnly {
    #[serde(default)]
    form_key: String,
}

async fn sign_out(viewer: Viewer, body: Bytes) -> Page {
    let form: FormKeyOnly = serde_urlencoded::from_bytes(&body).unwrap_or(FormKeyOnly {
        form_key: String::new(),
    });
    viewer.check_form(&form.form_key)?;
    let mut response = see_other("/console");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    Ok(response)
}

// ---- Reviewer ----

async fn reviews(State(state): State<AppState>, viewer: Viewer) -> Page {
    viewer.require(Operation::ReviewQueue, "read the review queue")?;
    let queue = viewer.call(&state, |b| b.review_queue()).await?;
    let body = html! {
        h1 { "Review queue" }
        p { (queue.outputs.len()) " output(s) wait in quarantine. Nothing leaves until enough reviewers other than its developer approve it." }
        @if !queue.outputs.is_empty() {
            table #queue {
                thead { tr {
                    th { "Output" } th { "Name" } th { "Kind" } th { "Grant" } th { "Developer" }
                    th.num { "ε spent" } th.num { "Rows" } th { "Findings" } th { "Approvals" } th { "Against the last release" }
                } }
                tbody {
                    @for item in &queue.outputs {
                        tr {
                            td { a href=(format!("/console/outputs/{}", text(&item["output"]))) { (text(&item["output"])) } }
                            td { (text(&item["name"])) }
                            td { (text(&item["kind"])) }
                            td { (text(&item["grant"])) }
                            td { (text(&item["submitter"])) }
                            td.num { (number(&item["epsilon_spent"])) }
                            td.num { (text(&item["rows"])) }
                            td { (findings_summary(&item["findings"])) }
                            td { (approvals_summary(item)) }
                            td { (diff_summary(&item["diff"])) }
                        }
                    }
                }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Review queue", Some(&viewer), body),
    ))
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    page: Option<usize>,
}

async fn output_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Page {
    viewer.require(Operation::ShowOutput, "read quarantined outputs")?;
    output_page_of(&state, &viewer, id, paging.page, None).await
}

/// The page of output `id` with its queue entry, after a decision or not.
async fn output_page_of(
    state: &AppState,
    viewer: &Viewer,
    id: String,
    page_number: Option<usize>,
    decided: Option<&unseen_api::ReviewDecision>,
) -> Page {
    let wanted = id.clone();
    let (shown, queue) = viewer
        .call(state, move |b| Ok((b.output(&wanted)?, b.review_queue()?)))
        .await?;
    let item = queue
        .outputs
        .iter()
        .find(|o| o["output"].as_str() == Some(id.as_str()));
    let body = output_body(viewer, &id, &shown, item, page_number, decided);
    Ok(respond(
        StatusCode::OK,
        page(&format!("Output {id}"), Some(viewer), body),
    ))
}

fn output_body(
    viewer: &Viewer,
    id: &str,
    shown: &unseen_api::OutputShown,
    item: Option<&Value>,
    page_number: Option<usize>,
    decided: Option<&unseen_api::ReviewDecision>,
) -> Markup {
    let own = item.is_some_and(|i| i["submitter"].as_str() == Some(viewer.actor.id.as_str()));
    let approvers: Vec<String> = item
        .and_then(|i| i["approvals"].as_array())
        .map(|a| a.iter().map(approver).collect())
        .unwrap_or_default();
    let already = approvers.iter().any(|a| a == &viewer.actor.id);
    html! {
        h1 { "Output " (id) }
        @if let Some(d) = decided {
            p.notice #decision {
                "Decision recorded: " strong { (d.status) } "."
                @if let Some(release) = &d.release { " Signed release " strong #release { (release) } "." }
            }
        }
        dl.facts {
            dt { "Name" } dd { (shown.name) }
            dt { "Kind" } dd { (shown.kind) }
            dt { "Status" } dd #status { (shown.status) }
            @if let Some(i) = item {
                dt { "Grant" } dd { (text(&i["grant"])) }
                dt { "Job" } dd { (text(&i["job"])) " by " (text(&i["submitter"])) }
                dt { "Code" } dd {
                    @if let Some(sql) = i["sql"].as_str() { code { (sql) } }
                    @else { "module " code { (text(&i["module_sha256"])) } }
                }
                dt { "ε spent" } dd { (number(&i["epsilon_spent"])) }
                dt { "Approvals" } dd #approvals { (approvals_summary(i))
                    @if !approvers.is_empty() { " (by " (approvers.join(", ")) ")" } }
                dt { "Against the last release" } dd { (diff_summary(&i["diff"])) }
            }
        }
        h2 { "Automatic findings" }
        (findings_list(&shown.findings))
        @if !shown.disclosure.is_null() {
            h2 { "Disclosure control" }
            (json_block(&shown.disclosure))
        }
        @if shown.status == "quarantined" {
            h2 { "Decision" }
            @if own {
                p.error #self-review { "You submitted this job: you may not review its output (no self-review)." }
            } @else if already {
                p.notice { "You approved this output already; its grant needs approvals by different reviewers (two-person rule)." }
            }
            form.decision method="post" action=(format!("/console/outputs/{id}/decision")) {
                input type="hidden" name="form_key" value=(viewer.form_key);
                label for="reason" { "Reason (recorded in the ledger)" }
                textarea #reason name="reason" rows="2" required {}
                button #approve type="submit" name="decision" value="approve" disabled[own || already] { "Approve and release" }
                button #reject type="submit" name="decision" value="reject" disabled[own] { "Reject" }
            }
        }
        h2 { "Table" }
        (table_pages(&shown.table, page_number, &format!("/console/outputs/{id}")))
    }
}

fn approver(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other
            .get("reviewer")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| other.to_string()),
    }
}

#[derive(Deserialize)]
struct Decision {
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
}

async fn decide(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    viewer.require(Operation::ApproveOutput, "review outputs")?;
    let form: Decision = posted_form(&viewer, &body)?;
    let approve = approval(&viewer, &form.decision)?;
    let (wanted, reason) = (id.clone(), form.reason);
    let decision = viewer
        .call(&state, move |b| b.review(&wanted, approve, &reason))
        .await?;
    output_page_of(&state, &viewer, id, None, Some(&decision)).await
}

// ---- Auditor ----

#[derive(Deserialize, Default)]
struct LedgerFilter {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
}

/// The ledger as read for a page: verified, or why not.
struct LedgerState {
    verified: Result<crate::audit::VerifiedLedger, String>,
    checkpoint: Option<String>,
}

async fn read_ledger(state: &AppState, viewer: &Viewer) -> Result<LedgerState, Response> {
    blocking(state, |d| {
        let checkpoint = d.ledger_checkpoint().ok();
        let verified = ledger_key(d).and_then(|(dir, key)| {
            crate::audit::load_verified(&dir, &key)
                .map_err(|e| DomainError::LedgerUnverified(e.to_string()))
        });
        Ok(LedgerState {
            verified: verified.map_err(|e| e.to_string()),
            checkpoint,
        })
    })
    .await
    .map_err(|e| viewer.fail(e))
}

async fn ledger(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(filter): Query<LedgerFilter>,
) -> Page {
    viewer.require(Operation::VerifyLedger, "verify the ledger")?;
    let read = read_ledger(&state, &viewer).await?;
    let body = match &read.verified {
        Err(reason) => html! {
            h1 { "Ledger" }
            p.failed #ledger-status { "Verification FAILED: " (reason) }
            p { "The entries, their signed checkpoint or the public key do not agree. Keep a copy of the data directory and verify it offline with "
                code { "unseen ledger verify" } "." }
        },
        Ok(ledger) => {
            let q = filter.q.to_lowercase();
            let matching: Vec<&unseen_ledger::entry::Entry> = ledger
                .entries
                .iter()
                .rev()
                .filter(|e| filter.kind.is_empty() || e.kind == filter.kind)
                .filter(|e| filter.actor.is_empty() || e.actor == filter.actor)
                .filter(|e| q.is_empty() || e.body.to_string().to_lowercase().contains(&q))
                .collect();
            let (shown, pager) = paged(matching.len(), filter.page, &ledger_link(&filter));
            let kinds = crate::audit::kinds(&ledger.entries);
            let releases: Vec<&str> = ledger
                .entries
                .iter()
                .filter(|e| e.kind == "release.signed")
                .filter_map(|e| e.body["release"].as_str())
                .collect();
            html! {
                h1 { "Ledger" }
                p.verified #ledger-status {
                    "Verified: " (ledger.entries.len()) " entries, hash chain intact, "
                    (ledger.checkpoint.size) " of them under the signed checkpoint with root "
                    code { (hex::encode(ledger.checkpoint.root)) } "."
                }
                @if let Some(note) = &read.checkpoint {
                    details { summary { "Signed checkpoint" } pre { (note) } }
                }
                h2 { "Releases" }
                @if releases.is_empty() { p { "No release has been signed yet." } }
                ul #releases {
                    @for r in &releases { li { a href=(format!("/console/releases/{r}")) { (r) } " — verify end to end" } }
                }
                h2 { "Entries" }
                form.filters method="get" action="/console/ledger" {
                    label { "Kind " select name="kind" {
                        option value="" { "any" }
                        @for k in &kinds { option value=(k) selected[*k == filter.kind] { (k) } }
                    } }
                    label { "Actor " input type="text" name="actor" value=(filter.actor); }
                    label { "Search " input #search type="text" name="q" value=(filter.q); }
                    button #filter type="submit" { "Filter" }
                }
                p { (matching.len()) " matching, newest first. " (pager) }
                table #entries {
                    thead { tr { th.num { "#" } th { "Time" } th { "Kind" } th { "Actor" } th { "Details" } } }
                    tbody {
                        @for e in &matching[shown] {
                            tr {
                                td.num { a href=(format!("/console/ledger/entries/{}", e.index)) { (e.index) } }
                                td { (e.time) } td { (e.kind) } td { (e.actor) }
                                td.body { (short(&e.body.to_string(), 160)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(respond(StatusCode::OK, page("Ledger", Some(&viewer), body)))
}

fn ledger_link(filter: &LedgerFilter) -> String {
    let query = serde_urlencoded::to_string([
        ("kind", filter.kind.as_str()),
        ("actor", filter.actor.as_str()),
        ("q", filter.q.as_str()),
    ])
    .unwrap_or_default();
    format!("/console/ledger?{query}")
}

async fn ledger_entry(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(index): Path<String>,
) -> Page {
    viewer.require(Operation::VerifyLedger, "verify the ledger")?;
    let index: usize = index.parse().map_err(|_| {
        viewer.error(
            StatusCode::BAD_REQUEST,
            "An entry is named by its number in the ledger (0, 1, 2, …).",
        )
    })?;
    let read = read_ledger(&state, &viewer).await?;
    let ledger = read.verified.map_err(|reason| {
        viewer.error(
            StatusCode::CONFLICT,
            &format!("The ledger does not verify, so no entry of it is proven: {reason}"),
        )
    })?;
    let entry = ledger.entries.get(index).ok_or_else(|| {
        viewer.error(
            StatusCode::NOT_FOUND,
            &format!(
                "The ledger has {} entries; there is no entry {index}.",
                ledger.entries.len()
            ),
        )
    })?;
    let size = ledger.checkpoint.size;
    let proof = unseen_ledger::merkle::inclusion_proof(index as u64, size, &ledger.leaves);
    let checked = proof.as_ref().ok().map(|proof| {
        unseen_ledger::merkle::verify_inclusion(
            index as u64,
            size,
            &ledger.leaves[index],
            proof,
            &ledger.checkpoint.root,
        )
    });
    let body = html! {
        h1 { "Ledger entry " (index) }
        dl.facts {
            dt { "Kind" } dd { (entry.kind) }
            dt { "Actor" } dd { (entry.actor) }
            dt { "Time" } dd { (entry.time) }
            dt { "Previous entry's hash" } dd { code { (entry.prev) } }
            dt { "Leaf hash" } dd { code { (hex::encode(ledger.leaves[index])) } }
        }
        h2 { "Details" }
        (json_block(&entry.body))
        h2 { "Inclusion proof" }
        @match (&proof, &checked) {
            (Ok(proof), Some(Ok(()))) => {
                p.verified #proof-status { "Included under the signed checkpoint: tree size " (size) ", root " code { (hex::encode(ledger.checkpoint.root)) } "; the proof below verifies." }
                ol.proof { @for h in proof { li { code { (hex::encode(h)) } } } }
            }
            (Ok(_), Some(Err(e))) => { p.failed #proof-status { "The inclusion proof does not verify: " (e.to_string()) } }
            _ => { p.notice #proof-status { "This entry is newer than the signed checkpoint (size " (size) "); it is proven once the next checkpoint is signed." } }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page(&format!("Entry {index}"), Some(&viewer), body),
    ))
}

async fn release(State(state): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> Page {
    viewer.require(
        Operation::VerifyLedger,
        "verify releases against the ledger",
    )?;
    // Release ids name files: nothing but the service's own alphabet.
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(viewer.error(
            StatusCode::BAD_REQUEST,
            "A release id is like `rel-e9cde6e022`; see the ledger page for the list.",
        ));
    }
    let wanted = id.clone();
    let outcome = blocking(&state, move |d| {
        let (dir, key) = ledger_key(d)?;
        let path = d.dir().join("releases").join(format!("{wanted}.json"));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DomainError::NotFound {
                    what: "release",
                    id: wanted,
                    list: "ledger page's release list",
                });
            }
            Err(e) => return Err(DomainError::io(&path, e)),
        };
        let document: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let verified = crate::audit::load_verified(&dir, &key)
            .and_then(|ledger| crate::audit::verify_release(&text, &ledger, &key))
            .map_err(|e| e.to_string());
        Ok((verified, document))
    })
    .await
    .map_err(|e| viewer.fail(e))?;
    let (verified, document) = outcome;
    let body = html! {
        h1 { "Release " (id) }
        @match &verified {
            Ok(proof) => {
                p.verified #release-status { "Verified end to end: the signature, the content hash, the ledger entry binding module, input, policy, spend and reviewer, and its inclusion under the signed checkpoint." }
                dl.facts {
                    dt { "Ledger entry" } dd { a href=(format!("/console/ledger/entries/{}", proof.ledger_index)) { (proof.ledger_index) } " of " (proof.tree_size) }
                    dt { "Checkpoint root" } dd { code { (proof.root) } }
                    dt { "Output SHA-256" } dd { code { (proof.output_sha256) } }
                    dt { "Module SHA-256" } dd { code { (proof.module_sha256) } }
                    dt { "ε spent" } dd { (format!("{:.3}", proof.epsilon_spent)) }
                    dt { "Approved by" } dd { (proof.approvers.join(", ")) }
                }
            }
            Err(reason) => { p.failed #release-status { "Verification FAILED: " (reason) } }
        }
        @if let Some(table) = document.get("document").and_then(|d| d.get("table")) {
            h2 { "Released table" }
            (table_pages(table, None, &format!("/console/releases/{id}")))
        }
    };
    Ok(respond(
        StatusCode::OK,
        page(&format!("Release {id}"), Some(&viewer), body),
    ))
}

async fn disclosure(State(state): State<AppState>, viewer: Viewer) -> Page {
    viewer.require(Operation::DisclosureReport, "read the disclosure report")?;
    let report = blocking(&state, |d| {
        let (dir, key) = ledger_key(d)?;
        let ledger = crate::audit::load_verified(&dir, &key)?;
        Ok(crate::audit::disclosure(&ledger.entries))
    })
    .await
    .map_err(|e| viewer.fail(e))?;
    let body = html! {
        h1 { "Disclosure report" }
        p { "What each grant has disclosed, read from the verified ledger." }
        table #disclosure {
            thead { tr {
                th { "Grant" } th { "Dataset" } th { "Developer" } th { "Purpose" } th { "Issued by" }
                th.num { "ε spent / total" } th.num { "Jobs" } th.num { "Queries admitted" }
                th.num { "Refused" } th.num { "Outputs" } th.num { "Releases" }
            } }
            tbody {
                @for g in &report.grants {
                    tr {
                        td { (g.grant) } td { (g.dataset) } td { (g.developer) } td { (g.purpose) } td { (g.issued_by) }
                        td.num { (format!("{:.3} / {:.3}", g.epsilon_spent, g.epsilon_total)) }
                        td.num { (g.jobs) } td.num { (g.queries_admitted) } td.num { (g.queries_refused) }
                        td.num { (g.outputs) } td.num { (g.releases) }
                    }
                }
            }
        }
        h2 { "Grant applications" }
        table #application-disclosure {
            thead { tr {
                th { "Application" } th { "Applicant" } th { "Dataset" } th { "Scenario" } th { "Purpose" }
                th { "Status" } th.num { "ε asked" } th { "Grant" } th { "Decided by" } th { "Reason" } th { "Steps" }
            } }
            tbody {
                @for a in &report.applications {
                    tr {
                        td { (a.application) } td { (a.applicant) } td { (a.dataset) } td { (a.scenario) } td { (a.purpose) }
                        td { (a.status) } td.num { (a.epsilon_asked) }
                        td { (a.grant.clone().unwrap_or_default()) } td { (a.decided_by.clone().unwrap_or_default()) }
                        td { (a.reason) } td { (a.steps.join(", ")) }
                    }
                }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Disclosure report", Some(&viewer), body),
    ))
}

// ---- Provider / admin ----

async fn datasets(State(state): State<AppState>, viewer: Viewer) -> Page {
    viewer.require(Operation::ListDatasets, "list datasets")?;
    let actor = viewer.actor.id.clone();
    let listed = viewer
        .call(&state, move |b| {
            let datasets = b.datasets()?.datasets;
            let mut with_manifests = Vec::with_capacity(datasets.len());
            for dataset in datasets {
                let manifest = b.domain().dataset_manifest(&actor, &dataset.name)?;
                with_manifests.push((dataset, manifest));
            }
            Ok(with_manifests)
        })
        .await?;
    let body = html! {
        h1 { "Datasets" }
        @for (dataset, manifest) in &listed {
            section.dataset {
                h2 { (dataset.name) @if dataset.destroyed_at.is_some() { " (destroyed)" } }
                p { (manifest.description) }
                p.small {
                    (dataset.rows) " rows · manifest version " (dataset.manifest_version)
                    " · privacy unit " code { (manifest.privacy_unit) }
                    " · registered by " (dataset.registered_by) " at " (dataset.registered_at)
                    " · ε spent " (format!("{:.3}", dataset.epsilon_spent))
                    @if let Some(total) = dataset.epsilon_total { " of " (format!("{total:.3}")) }
                }
                table.columns {
                    thead { tr { th { "Column" } th { "Type" } th { "Class" } th { "Bounds" } th { "Group key" } th { "Mask" } } }
                    tbody {
                        @for c in &manifest.columns {
                            tr {
                                td { code { (c.name) } }
                                td { (format!("{:?}", c.ty).to_lowercase()) }
                                td { (class_badge(c.class)) }
                                td { @if let Some((lo, hi)) = c.bounds { (lo) " … " (hi) } }
                                td { @if c.group_key { "yes" } }
                                td { @if let Some(m) = &c.mask { (format!("{m:?}").to_lowercase()) } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Datasets", Some(&viewer), body),
    ))
}

fn class_badge(class: unseen_policy::manifest::Class) -> Markup {
    use unseen_policy::manifest::Class;
    let (css, label) = match class {
        Class::Prohibited => ("badge prohibited", "prohibited · 不予开放"),
        Class::Conditional => ("badge conditional", "conditional · 有条件开放"),
        Class::Open => ("badge open", "open · 无条件开放"),
    };
    html! { span class=(css) { (label) } }
}

async fn grants(State(state): State<AppState>, viewer: Viewer) -> Page {
    viewer.require(Operation::ListGrants, "list grants")?;
    let listed = viewer.call(&state, |b| b.grants()).await?;
    let body = html! {
        h1 { "Grants" }
        table #grants {
            thead { tr {
                th { "Grant" } th { "Dataset" } th { "Developer" } th { "Purpose" }
                th.num { "ε spent / total" } th { "May run" } th.num { "Runs" } th.num { "Downloads" }
                th.num { "Approvals" } th { "Expires" } th { "State" }
            } }
            tbody {
                @for g in &listed.grants {
                    tr {
                        td { a href=(format!("/console/grants/{}", g.id)) { (g.id) } }
                        td { (g.dataset) @for j in &g.join_datasets { " + " (j) } }
                        td { (g.developer) }
                        td { (g.purpose) }
                        td.num { (format!("{:.3} / {:.3}", g.epsilon_spent, g.epsilon_total)) }
                        td { (allowed_kinds(g)) }
                        td.num { (g.runs) @if let Some(m) = g.max_runs { " / " (m) } }
                        td.num { (g.downloads) @if let Some(m) = g.max_downloads { " / " (m) } }
                        td.num { (g.approvals_required) }
                        td { (g.expires_at) }
                        td { @if g.revoked_at.is_some() { "revoked" } @else { "active" } }
                    }
                }
            }
        }
    };
    Ok(respond(StatusCode::OK, page("Grants", Some(&viewer), body)))
}

fn allowed_kinds(g: &unseen_api::Grant) -> String {
    let mut kinds = Vec::new();
    for (on, name) in [
        (g.allow_sql, "SQL"),
        (g.allow_modules, "modules"),
        (g.allow_extracts, "extracts"),
        (g.allow_udfs, "UDFs"),
    ] {
        if on {
            kinds.push(name);
        }
    }
    kinds.join(", ")
}

async fn grant(State(state): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> Page {
    viewer.require(Operation::ShowGrant, "read grants")?;
    let wanted = id.clone();
    let (shown, budget, usage) = viewer
        .call(&state, move |b| {
            Ok((
                b.grant(&wanted)?,
                b.grant_budget(&wanted)?,
                b.grant_usage(&wanted)?,
            ))
        })
        .await?;
    let g = &shown.grant;
    // The spend over time comes from the ledger: only for those who may read it.
    let history = if permits(viewer.actor.role, Operation::QueryLedger) {
        let grant = g.clone();
        Some(
            blocking(&state, move |d| {
                let (dir, key) = ledger_key(d)?;
                let ledger = crate::audit::load_verified(&dir, &key)?;
                Ok(spend_history(&ledger.entries, &grant))
            })
            .await
            .map_err(|e| viewer.fail(e))?,
        )
    } else {
        None
    };
    let u = &usage.usage;
    let body = html! {
        h1 { "Grant " (g.id) }
        dl.facts {
            dt { "Dataset" } dd { (g.dataset) @for j in &g.join_datasets { " + " (j) } }
            dt { "Developer" } dd { (g.developer) @for d in &g.designated { ", " (d) } }
            dt { "Scenario · purpose" } dd { (g.scenario) " · " (g.purpose) }
            dt { "Issued · expires" } dd { (g.issued_at) " · " (g.expires_at) @if let Some(r) = &g.revoked_at { " · revoked " (r) } }
            dt { "May run" } dd { (allowed_kinds(g)) }
            dt { "ε per query" } dd { (g.query_epsilon) }
            dt { "Columns" } dd { @if g.columns.is_empty() { "all the manifest allows" } @else { (g.columns.join(", ")) } }
            dt { "Time windows" } dd { @if g.windows.is_empty() { "any time" } @else { (g.windows.join(", ")) } }
            dt { "Approvals per release" } dd { (g.approvals_required) }
        }
        h2 { "Budget left" }
        table #budget {
            thead { tr { th { "Layer" } th { "Id" } th.num { "ε spent" } th.num { "ε total" } th.num { "ε left" } th { "" } } }
            tbody {
                tr {
                    td { "grant" } td { (budget.grant) }
                    td.num { (format!("{:.3}", budget.epsilon_spent)) }
                    td.num { (format!("{:.3}", budget.epsilon_spent + budget.epsilon_left)) }
                    td.num #epsilon-left { (format!("{:.3}", budget.epsilon_left)) }
                    td { (bar(budget.epsilon_spent, Some(budget.epsilon_spent + budget.epsilon_left))) }
                }
                @for layer in budget.layers.iter().filter(|l| l.layer != "grant") {
                    tr {
                        td { (layer.layer) } td { (layer.id) }
                        td.num { (format!("{:.3}", layer.spent)) }
                        td.num { @if let Some(t) = layer.total { (format!("{t:.3}")) } @else { "no limit" } }
                        td.num { @if let Some(t) = layer.total { (format!("{:.3}", (t - layer.spent).max(0.0))) } }
                        td { (bar(layer.spent, layer.total)) }
                    }
                }
            }
        }
        @if let Some(history) = &history {
            h2 { "Budget left over time" }
            (budget_chart(history, &budget, &g.issued_at))
        }
        h2 { "Usage and metering" }
        dl.facts #usage {
            dt { "Runs" } dd { (u.runs) @if let Some(m) = u.max_runs { " of " (m) } }
            dt { "Jobs by status" } dd { @for (s, n) in &u.jobs_by_status { (s) ": " (n) "  " } }
            @if let Some(q) = u.queries { dt { "Queries" } dd { (q) } }
            @if let Some(f) = u.fuel_used { dt { "Fuel used" } dd { (f) } }
            @if let Some(r) = u.rows_read { dt { "Rows read" } dd { (r) } }
            @if let Some(ms) = u.run_ms { dt { "Run time" } dd { (ms) " ms" } }
            dt { "Open queries" } dd { (u.open_queries) " (" (u.open_queries_in_window) " in the last " (u.open_query_window) " s"
                @if let Some(m) = u.max_open_queries { ", limit " (m) } ")" }
            dt { "Releases · downloads" } dd { (u.releases) " · " (u.downloads) @if let Some(m) = u.max_downloads { " of " (m) } }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page(&format!("Grant {id}"), Some(&viewer), body),
    ))
}

/// Epsilon spent on each budget layer of `grant`, cumulative, after each
/// admitted query (time in seconds since the epoch).
type History = BTreeMap<(String, String), Vec<(u64, f64)>>;
/// One layer's line in the chart: its key, its points and its total.
type Series<'a> = (&'a (String, String), &'a Vec<(u64, f64)>, f64);

fn spend_history(entries: &[unseen_ledger::entry::Entry], grant: &unseen_api::Grant) -> History {
    // Which developer each grant charges, to follow the developer layer.
    let developers: BTreeMap<&str, &str> = entries
        .iter()
        .filter(|e| e.kind == "grant.issued")
        .filter_map(|e| Some((e.body["grant"].as_str()?, e.body["developer"].as_str()?)))
        .collect();
    let mut datasets = vec![grant.dataset.clone()];
    datasets.extend(grant.join_datasets.iter().cloned());
    let mut history = History::new();
    for e in entries.iter().filter(|e| e.kind == "query.admitted") {
        let (Some(epsilon), Some(of)) = (e.body["epsilon"].as_f64(), e.body["grant"].as_str())
        else {
            continue;
        };
        let time = crate::util::parse_rfc3339(&e.time).unwrap_or(0);
        let mut layers = Vec::new();
        if of == grant.id {
            layers.push(("grant".to_string(), grant.id.clone()));
        }
        if developers.get(of) == Some(&grant.developer.as_str()) {
            layers.push(("developer".to_string(), grant.developer.clone()));
        }
        for d in e.body["datasets"].as_array().into_iter().flatten() {
            if let Some(d) = d.as_str().filter(|d| datasets.iter().any(|x| x == d)) {
                layers.push(("dataset".to_string(), d.to_string()));
            }
        }
        for layer in layers {
            let series = history.entry(layer).or_default();
            let before = series.last().map_or(0.0, |(_, s)| *s);
            series.push((time, before + epsilon));
        }
    }
    history
}

/// An SVG chart of epsilon left on each layer with a limit, over time.
fn budget_chart(history: &History, budget: &unseen_api::GrantBudget, issued_at: &str) -> Markup {
    let totals: BTreeMap<(String, String), f64> = std::iter::once((
        ("grant".to_string(), budget.grant.clone()),
        budget.epsilon_spent + budget.epsilon_left,
    ))
    .chain(
        budget
            .layers
            .iter()
            .filter_map(|l| Some(((l.layer.clone(), l.id.clone()), l.total?))),
    )
    .collect();
    let series: Vec<Series<'_>> = history
        .iter()
        .filter_map(|(layer, points)| Some((layer, points, *totals.get(layer)?)))
        .filter(|(_, points, _)| !points.is_empty())
        .collect();
    if series.is_empty() {
        return html! { p #chart-empty { "No query has been admitted on this grant's limited layers yet." } };
    }
    let (width, height, pad) = (640.0_f64, 220.0_f64, 40.0_f64);
    // From the grant's issue to now, so a level held since the last spend shows.
    let issued = crate::util::parse_rfc3339(issued_at);
    let first = series
        .iter()
        .map(|(_, p, _)| p[0].0)
        .chain(issued)
        .min()
        .unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = series
        .iter()
        .filter_map(|(_, p, _)| p.last().map(|x| x.0))
        .chain([now])
        .max()
        .unwrap_or(first);
    let span = (last.saturating_sub(first)).max(1) as f64;
    let top = series.iter().map(|(_, _, t)| *t).fold(0.0_f64, f64::max);
    let x = |t: u64| pad + (t.saturating_sub(first)) as f64 / span * (width - 2.0 * pad);
    let y = |left: f64| {
        height - pad - (left.max(0.0) / top.max(f64::MIN_POSITIVE)) * (height - 2.0 * pad)
    };
    // A step line: the level left holds until the next spend.
    let steps = |points: &[(u64, f64)], total: f64| {
        let mut path = vec![format!("{:.1},{:.1}", x(first), y(total))];
        let mut left = total;
        for (t, spent) in points {
            path.push(format!("{:.1},{:.1}", x(*t), y(left)));
            left = total - spent;
            path.push(format!("{:.1},{:.1}", x(*t), y(left)));
        }
        path.push(format!("{:.1},{:.1}", x(last), y(left)));
        path.join(" ")
    };
    let colours = ["#1f6feb", "#d97706", "#15803d", "#9333ea"];
    html! {
        svg #budget-chart width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="epsilon left per layer over time" {
            line x1=(pad) y1=(height - pad) x2=(width - pad) y2=(height - pad) stroke="#888" {}
            line x1=(pad) y1=(pad) x2=(pad) y2=(height - pad) stroke="#888" {}
            text x="4" y=(pad) font-size="11" { (format!("ε {top:.2}")) }
            text x="4" y=(height - pad) font-size="11" { "0" }
            text x=(pad) y=(height - 8.0) font-size="11" { (crate::util::rfc3339(first)) }
            text x=(width - pad) y=(height - 8.0) font-size="11" text-anchor="end" { (crate::util::rfc3339(last)) }
            @for (i, (layer, points, total)) in series.iter().enumerate() {
                @let colour = colours[i % colours.len()];
                polyline points=(steps(points, *total)) fill="none" stroke=(colour) stroke-width="2" {}
                text x=(pad + 8.0) y=(height - pad - 8.0 - 14.0 * i as f64) font-size="11" fill=(colour) {
                    "ε left · " (layer.0) " " (layer.1)
                }
            }
        }
    }
}

fn bar(spent: f64, total: Option<f64>) -> Markup {
    let Some(total) = total.filter(|t| *t > 0.0) else {
        return html! {};
    };
    let used = (spent / total).clamp(0.0, 1.0);
    html! {
        svg.bar width="120" height="10" role="img" aria-label=(format!("{:.0}% spent", used * 100.0)) {
            rect width="120" height="10" fill="#e5e7eb" {}
            rect width=(format!("{:.1}", 120.0 * used)) height="10" fill="#1f6feb" {}
        }
    }
}

// ---- Developer ----

async fn jobs(State(state): State<AppState>, viewer: Viewer) -> Page {
    viewer.require(Operation::ListJobs, "list jobs")?;
    let listed = viewer.call(&state, |b| b.jobs(None)).await?;
    let body = html! {
        h1 { "Jobs" }
        table #jobs {
            thead { tr { th { "Job" } th { "Grant" } th { "Developer" } th { "Status" } th { "Submitted" } th.num { "ε spent" } } }
            tbody {
                @for j in &listed.jobs {
                    tr {
                        td { a href=(format!("/console/jobs/{}", j.id)) { (j.id) } }
                        td { (j.grant) } td { (j.submitter) }
                        td { (j.status.as_str()) }
                        td { (j.submitted_at) }
                        td.num { (format!("{:.3}", j.epsilon_spent)) }
                    }
                }
            }
        }
    };
    Ok(respond(StatusCode::OK, page("Jobs", Some(&viewer), body)))
}

async fn job(State(state): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> Page {
    viewer.require(Operation::ShowJob, "read jobs")?;
    let wanted = id.clone();
    let shown = viewer.call(&state, move |b| b.job(&wanted)).await?;
    let j = &shown.job;
    let body = html! {
        h1 { "Job " (j.id) }
        dl.facts {
            dt { "Grant" } dd { (j.grant) }
            dt { "Developer" } dd { (j.submitter) }
            dt { "Status" } dd #job-status { (j.status.as_str()) @if let Some(by) = &j.stopped_by { " (stopped by " (by) ")" } }
            @if let Some(reason) = &j.reason { dt { "Reason" } dd { (reason) } }
            @if let Some(error) = &j.error { dt { "Error" } dd { (error) } }
            dt { "Submitted · started · ended" } dd {
                (j.submitted_at) " · " (j.started_at.as_deref().unwrap_or("—")) " · " (j.ended_at.as_deref().unwrap_or("—"))
            }
            @if let Some(sql) = &j.sql { dt { "SQL" } dd { code { (sql) } } }
            dt { "ε spent" } dd { (format!("{:.3}", j.epsilon_spent)) }
            @if let Some(outcome) = &j.outcome {
                dt { "Outcome" } dd { "output " (outcome.output) ": " (outcome.review) }
            }
            @if !j.outputs.is_empty() { dt { "Outputs" } dd { (j.outputs.join(", ")) } }
        }
        @if !j.refusals.is_empty() {
            h2 { "Refusals" }
            ul { @for r in &j.refusals { li { (r) } } }
        }
        h2 { "Logs" }
        @if j.logs.is_empty() { p { "No log lines are shown for this job." } }
        @else { pre #logs { @for line in &j.logs { (line) "\n" } } }
    };
    Ok(respond(
        StatusCode::OK,
        page(&format!("Job {id}"), Some(&viewer), body),
    ))
}

// ---- Shared pieces ----

/// A JSON scalar as text (strings without quotes).
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number(value: &Value) -> String {
    value
        .as_f64()
        .map(|n| format!("{n:.3}"))
        .unwrap_or_else(|| text(value))
}

fn short(s: &str, limit: usize) -> String {
    match s.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

fn json_block(value: &Value) -> Markup {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (pretty) } }
}

fn findings_summary(findings: &Value) -> String {
    match findings.as_array().map(Vec::len) {
        Some(0) | None => "none".into(),
        Some(n) => format!("{n} finding(s)"),
    }
}

/// Findings name the rule, column and row; any value a finding might carry
/// is left out (they should carry none).
fn findings_list(findings: &Value) -> Markup {
    let items = findings.as_array().cloned().unwrap_or_default();
    html! {
        @if items.is_empty() { p #findings { "No automatic finding." } }
        @else {
            ul #findings {
                @for f in &items {
                    li {
                        @match f.as_object() {
                            Some(fields) => {
                                @for (k, v) in fields.iter().filter(|(k, _)| !k.contains("value")) {
                                    strong { (k) } ": " (text(v)) "  "
                                }
                            }
                            None => { (text(f)) }
                        }
                    }
                }
            }
        }
    }
}

fn approvals_summary(item: &Value) -> String {
    let given = item["approvals"].as_array().map_or(0, Vec::len);
    format!("{given} of {}", text(&item["approvals_required"]))
}

fn diff_summary(diff: &Value) -> String {
    if diff.is_null() {
        return "first release of this name".into();
    }
    format!(
        "{} of {} cells changed since {}; rows {} → {}",
        text(&diff["cells_changed"]),
        text(&diff["cells_compared"]),
        text(&diff["against_output"]),
        text(&diff["rows_before"]),
        text(&diff["rows_after"]),
    )
}

/// Which rows of `total` a page shows, and the links to the others.
fn paged(total: usize, page: Option<usize>, base: &str) -> (std::ops::Range<usize>, Markup) {
    let pages = total.div_ceil(PAGE_ROWS).max(1);
    let page = page.unwrap_or(1).clamp(1, pages);
    let start = (page - 1) * PAGE_ROWS;
    let end = (start + PAGE_ROWS).min(total);
    let join = if base.contains('?') { '&' } else { '?' };
    let links = html! {
        span.pager {
            @if total > 0 { "Rows " (start + 1) "–" (end) " of " (total) ", page " (page) " of " (pages) ". " }
            @if page > 1 { a #previous href=(format!("{base}{join}page={}", page - 1)) { "← previous" } " " }
            @if page < pages { a #next href=(format!("{base}{join}page={}", page + 1)) { "next →" } }
        }
    };
    (start..end, links)
}

/// A released or quarantined table (as `table_json` writes it), a page at a
/// time; estimates show their interval.
fn table_pages(table: &Value, page: Option<usize>, base: &str) -> Markup {
    let columns = table["columns"].as_array().cloned().unwrap_or_default();
    let rows = columns
        .iter()
        .map(|c| c["values"].as_array().map_or(0, Vec::len))
        .max()
        .unwrap_or(0);
    let (shown, pager) = paged(rows, page, base);
    html! {
        p { (pager) }
        table.data #output-table {
            thead { tr { @for c in &columns {
                th { (text(&c["name"])) @if is_estimate(c) { br; span.small { "estimate [lower, upper]" } } }
            } } }
            tbody {
                @for r in shown {
                    tr { @for c in &columns { td { (cell(&c["values"][r])) } } }
                }
            }
        }
    }
}

fn is_estimate(column: &Value) -> bool {
    column["values"]
        .as_array()
        .and_then(|v| v.first())
        .is_some_and(Value::is_object)
}

fn cell(value: &Value) -> String {
    let f = |v: &Value| {
        v.as_f64()
            .map(|n| format!("{n:.1}"))
            .unwrap_or_else(|| text(v))
    };
    match value {
        Value::Object(_) => format!(
            "{} [{}, {}]",
            f(&value["value"]),
            f(&value["lower"]),
            f(&value["upper"])
        ),
        Value::Number(n) if n.is_f64() => f(value),
        other => text(other),
    }
}

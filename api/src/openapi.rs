//! The OpenAPI 3.1 document of the API, built from the server's route table
//! (method, path, roles, [`Operation`]) and the body types of this crate.
//!
//! Every route of the server names an [`Operation`], and every operation
//! has a [`Contract`] (an exhaustive match), so a route cannot be served
//! without being documented. `GET /v1/openapi.json` serves the document;
//! `docs/openapi.json` holds a copy that the test suite compares with it.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::info::InfoBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ComponentsBuilder, ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApiBuilder, PathsBuilder, RefOr, Required};
use utoipa::{IntoParams, ToSchema};

use crate::{applications as ap, imports as im, requests as rq, responses as rs};

/// One route as the server serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// With `{param}` segments.
    pub path: &'a str,
    /// The roles that may call it; `None` for anyone, without a token.
    pub roles: Option<&'a [&'a str]>,
    pub operation: Operation,
}

/// What a route does. Named by the server's route table; documented by
/// [`Operation::contract`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Health,
    Ready,
    Metrics,
    OpenApi,
    Attestation,
    Me,
    ListUsers,
    AddUser,
    DisableUser,
    RotateToken,
    ListDatasets,
    RegisterDataset,
    DestroyDataset,
    PublishMarginals,
    SetBudget,
    ListGrants,
    IssueGrant,
    ShowGrant,
    RevokeGrant,
    GrantBudget,
    GrantUsage,
    ListApplications,
    Apply,
    ShowApplication,
    AmendApplication,
    WithdrawApplication,
    PreReviewApplication,
    DecideApplication,
    ApplicationFeedback,
    ListImports,
    ProposeImport,
    DecideImport,
    UploadModule,
    ListJobs,
    SubmitJob,
    ShowJob,
    CancelJob,
    RunQuery,
    RunExtract,
    ReviewQueue,
    ShowOutput,
    ApproveOutput,
    RejectOutput,
    DownloadRelease,
    VerifyLedger,
    LedgerPublicKey,
    LedgerCheckpoint,
    QueryLedger,
    ReconcileLedger,
    DisclosureReport,
}

/// A body in a request or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// None (a request) or not documented beyond its status.
    Nothing,
    /// JSON of a type of this crate, by name (see [`Body::of`]).
    Json(BodyType),
    /// A JSON object whose fields the description names.
    Object(&'static str),
    /// A WebAssembly module's bytes.
    Wasm,
    /// Text of this media type.
    Text(&'static str),
}

/// The body types of this crate, as the document refers to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    NewUser,
    Reason,
    NewDataset,
    MarginalsRequest,
    BudgetRequest,
    GrantRequest,
    PreReview,
    ApplicationDecision,
    ApplicationFeedback,
    Applications,
    ApplicationShown,
    ImportRequest,
    ImportDecision,
    Imports,
    ImportShown,
    JobRequest,
    QueryRequest,
    ExtractRequest,
    LedgerQuery,
    Health,
    Ready,
    Attestation,
    Me,
    UserToken,
    UserDisabled,
    Users,
    Datasets,
    DatasetRegistered,
    DatasetDestroyed,
    Marginals,
    BudgetSet,
    GrantIssued,
    Grants,
    GrantShown,
    GrantRevoked,
    GrantBudget,
    Usage,
    ModuleUploaded,
    JobQueued,
    DeveloperOutcome,
    Jobs,
    JobShown,
    JobCancelled,
    ReviewQueue,
    OutputShown,
    ReviewDecision,
    LedgerVerified,
    PublicKey,
    Checkpoint,
    LedgerRows,
}

impl Body {
    /// Shorthand for [`Body::Json`].
    pub const fn of(body: BodyType) -> Body {
        Body::Json(body)
    }
}

/// What a route takes and gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contract {
    /// One line for people.
    pub summary: &'static str,
    pub request: Body,
    /// The query string's parameters, if the route reads one.
    pub query: Option<QueryString>,
    /// The success status.
    pub status: u16,
    pub response: Body,
}

/// Query strings, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryString {
    Upload,
    JobFilter,
}

impl Operation {
    /// What the route takes and gives.
    pub fn contract(self) -> Contract {
        use BodyType as T;
        use Operation as O;
        let c = |summary, request, status, response| Contract {
            summary,
            request,
            query: None,
            status,
            response,
        };
        match self {
            O::Health => c(
                "Liveness: the store and the ledger answer.",
                Body::Nothing,
                200,
                Body::of(T::Health),
            ),
            O::Ready => c(
                "Readiness: the store answers, the ledger signs, the keys unwrap (503 when not, saying which part).",
                Body::Nothing,
                200,
                Body::of(T::Ready),
            ),
            O::Metrics => c(
                "Prometheus metrics: requests and latency by route, jobs by status, queue depth, ledger entries by kind (queries admitted and refused by rule, reviews, releases), epsilon per grant and dataset, ledger size and groups, uptime.",
                Body::Nothing,
                200,
                Body::Text("application/openmetrics-text"),
            ),
            O::OpenApi => c(
                "This document.",
                Body::Nothing,
                200,
                Body::Object("the OpenAPI document"),
            ),
            O::Attestation => c(
                "A statement of the running build (binary SHA-256, git commit, Cargo.lock hash, engine versions) signed by the ledger key; `?nonce=` (up to 64 letters, digits, `-` or `_`) is echoed in it for freshness.",
                Body::Nothing,
                200,
                Body::of(T::Attestation),
            ),
            O::Me => c(
                "Who the token belongs to.",
                Body::Nothing,
                200,
                Body::of(T::Me),
            ),
            O::ListUsers => c("Users.", Body::Nothing, 200, Body::of(T::Users)),
            O::AddUser => c(
                "Add a user; the answer holds their first token.",
                Body::of(T::NewUser),
                201,
                Body::of(T::UserToken),
            ),
            O::DisableUser => c(
                "Disable a user: their token stops working.",
                Body::of(T::Reason),
                200,
                Body::of(T::UserDisabled),
            ),
            O::RotateToken => c(
                "A new token for a user; the old one stops working.",
                Body::Nothing,
                200,
                Body::of(T::UserToken),
            ),
            O::ListDatasets => c(
                "Datasets with their column classes.",
                Body::Nothing,
                200,
                Body::of(T::Datasets),
            ),
            O::RegisterDataset => c(
                "Register a Parquet file with its manifest, stored encrypted.",
                Body::of(T::NewDataset),
                201,
                Body::of(T::DatasetRegistered),
            ),
            O::DestroyDataset => c(
                "Destroy a dataset's data key: its data is unreadable, its grants revoked.",
                Body::of(T::Reason),
                200,
                Body::of(T::DatasetDestroyed),
            ),
            O::PublishMarginals => c(
                "Publish DP marginals of a dataset.",
                Body::of(T::MarginalsRequest),
                200,
                Body::of(T::Marginals),
            ),
            O::SetBudget => c(
                "Set the total epsilon of a dataset's or a developer's budget layer.",
                Body::of(T::BudgetRequest),
                200,
                Body::of(T::BudgetSet),
            ),
            O::ListGrants => c(
                "Grants the caller may see.",
                Body::Nothing,
                200,
                Body::of(T::Grants),
            ),
            O::IssueGrant => c(
                "Issue a grant (the authorization agreement).",
                Body::of(T::GrantRequest),
                201,
                Body::of(T::GrantIssued),
            ),
            O::ShowGrant => c("One grant.", Body::Nothing, 200, Body::of(T::GrantShown)),
            O::RevokeGrant => c(
                "Revoke a grant at once; its running jobs stop.",
                Body::of(T::Reason),
                200,
                Body::of(T::GrantRevoked),
            ),
            O::GrantBudget => c(
                "A grant's spend and what is left, with its budget layers.",
                Body::Nothing,
                200,
                Body::of(T::GrantBudget),
            ),
            O::GrantUsage => c(
                "A grant's runs, downloads and metering.",
                Body::Nothing,
                200,
                Body::of(T::Usage),
            ),
            O::ListApplications => c(
                "Grant applications: an admin's or auditor's all, a developer's own.",
                Body::Nothing,
                200,
                Body::of(T::Applications),
            ),
            O::Apply => c(
                "Apply for a grant for one scenario (the caller is the applicant and the grant's developer; leave `developer` empty).",
                Body::of(T::GrantRequest),
                201,
                Body::of(T::ApplicationShown),
            ),
            O::ShowApplication => c(
                "One application with its history.",
                Body::Nothing,
                200,
                Body::of(T::ApplicationShown),
            ),
            O::AmendApplication => c(
                "Amend a returned application; it is submitted again.",
                Body::of(T::GrantRequest),
                200,
                Body::of(T::ApplicationShown),
            ),
            O::WithdrawApplication => c(
                "Withdraw an application before its decision.",
                Body::of(T::Reason),
                200,
                Body::of(T::ApplicationShown),
            ),
            O::PreReviewApplication => c(
                "Pre-review (completeness): send it to review, or return it with what is missing.",
                Body::of(T::PreReview),
                200,
                Body::of(T::ApplicationShown),
            ),
            O::DecideApplication => c(
                "Decide an application in review: approve (possibly narrowed; the grant is issued as approved) or reject, with reasons.",
                Body::of(T::ApplicationDecision),
                200,
                Body::of(T::ApplicationShown),
            ),
            O::ApplicationFeedback => c(
                "Feedback on an approved application's grant, by its applicant.",
                Body::of(T::ApplicationFeedback),
                200,
                Body::of(T::ApplicationShown),
            ),
            O::ListImports => c(
                "Outside data proposed for grants: an admin's or auditor's all, a developer's own.",
                Body::Nothing,
                200,
                Body::of(T::Imports),
            ),
            O::ProposeImport => c(
                "Propose a file of outside data for one of your grants: quarantined and checked (schema, key format and check characters, duplicate keys, size), registered only when a data provider approves it.",
                Body::of(T::ImportRequest),
                201,
                Body::of(T::ImportShown),
            ),
            O::DecideImport => c(
                "Approve a proposed import (registering it, encrypted, joined to its grant, with its own epsilon budget) or reject it, with reasons.",
                Body::of(T::ImportDecision),
                200,
                Body::of(T::ImportShown),
            ),
            O::UploadModule => Contract {
                query: Some(QueryString::Upload),
                ..c(
                    "Upload a job or UDF module (validated, compiled, kept by its SHA-256).",
                    Body::Wasm,
                    201,
                    Body::of(T::ModuleUploaded),
                )
            },
            O::ListJobs => Contract {
                query: Some(QueryString::JobFilter),
                ..c(
                    "Jobs the caller may see.",
                    Body::Nothing,
                    200,
                    Body::of(T::Jobs),
                )
            },
            O::SubmitJob => c(
                "Run a module under a grant: queued, or with `wait` its outcome as its developer may see it.",
                Body::of(T::JobRequest),
                202,
                Body::of(T::JobQueued),
            ),
            O::ShowJob => c(
                "One job, as the caller may see it.",
                Body::Nothing,
                200,
                Body::of(T::JobShown),
            ),
            O::CancelJob => c(
                "Cancel a queued or running job.",
                Body::of(T::Reason),
                200,
                Body::of(T::JobCancelled),
            ),
            O::RunQuery => c(
                "Run one SQL statement under a grant (DP aggregates, open columns), or with `dry_run` only its verdict, cost and accuracy.",
                Body::of(T::QueryRequest),
                200,
                Body::of(T::DeveloperOutcome),
            ),
            O::RunExtract => c(
                "A masked, k-anonymised sample of rows, to quarantine.",
                Body::of(T::ExtractRequest),
                200,
                Body::of(T::DeveloperOutcome),
            ),
            O::ReviewQueue => c(
                "The quarantine queue.",
                Body::Nothing,
                200,
                Body::of(T::ReviewQueue),
            ),
            O::ShowOutput => c(
                "A quarantined output with its findings and intervals.",
                Body::Nothing,
                200,
                Body::of(T::OutputShown),
            ),
            O::ApproveOutput => c(
                "Approve an output; the last approval the grant needs signs the release.",
                Body::of(T::Reason),
                200,
                Body::of(T::ReviewDecision),
            ),
            O::RejectOutput => c(
                "Reject an output.",
                Body::of(T::Reason),
                200,
                Body::of(T::ReviewDecision),
            ),
            O::DownloadRelease => c(
                "Download a signed release (counted against the grant's downloads).",
                Body::Nothing,
                200,
                Body::Object(
                    "the signed release document, which `unseen release verify` checks with the public key alone",
                ),
            ),
            O::VerifyLedger => c(
                "Verify the whole ledger: chain, Merkle root, signed checkpoint.",
                Body::Nothing,
                200,
                Body::of(T::LedgerVerified),
            ),
            O::LedgerPublicKey => c(
                "The ledger's public key.",
                Body::Nothing,
                200,
                Body::of(T::PublicKey),
            ),
            O::LedgerCheckpoint => c(
                "The current signed checkpoint.",
                Body::Nothing,
                200,
                Body::of(T::Checkpoint),
            ),
            O::QueryLedger => c(
                "Read-only SQL over the verified ledger.",
                Body::of(T::LedgerQuery),
                200,
                Body::of(T::LedgerRows),
            ),
            O::ReconcileLedger => c(
                "The store compared with what the ledger implies; `differences` is empty when they agree.",
                Body::Nothing,
                200,
                Body::Object("the reconciliation: counts compared and their differences"),
            ),
            O::DisclosureReport => c(
                "What was released, under which grant, to whom, at what spend.",
                Body::Nothing,
                200,
                Body::Object("the disclosure report"),
            ),
        }
    }

    /// A stable id for the operation (`listUsers`).
    pub fn id(self) -> String {
        let name = format!("{self:?}");
        let mut chars = name.chars();
        chars
            .next()
            .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
            .unwrap_or_default()
    }
}

/// Adds `T` (and the types it refers to) to `components`; a reference to it.
fn register<T: ToSchema>(components: &mut ComponentsBuilder) -> RefOr<Schema> {
    let mut nested = Vec::new();
    T::schemas(&mut nested);
    let builder = std::mem::take(components)
        .schema_from::<T>()
        .schemas_from_iter(nested);
    *components = builder;
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

impl BodyType {
    fn schema(self, c: &mut ComponentsBuilder) -> RefOr<Schema> {
        use BodyType as T;
        match self {
            T::NewUser => register::<rq::NewUser>(c),
            T::Reason => register::<rq::Reason>(c),
            T::NewDataset => register::<rq::NewDataset>(c),
            T::MarginalsRequest => register::<rq::MarginalsRequest>(c),
            T::BudgetRequest => register::<rq::BudgetRequest>(c),
            T::GrantRequest => register::<rq::GrantRequest>(c),
            T::PreReview => register::<ap::PreReview>(c),
            T::ApplicationDecision => register::<ap::ApplicationDecision>(c),
            T::ApplicationFeedback => register::<ap::ApplicationFeedback>(c),
            T::Applications => register::<ap::Applications>(c),
            T::ApplicationShown => register::<ap::ApplicationShown>(c),
            T::ImportRequest => register::<im::ImportRequest>(c),
            T::ImportDecision => register::<im::ImportDecision>(c),
            T::Imports => register::<im::Imports>(c),
            T::ImportShown => register::<im::ImportShown>(c),
            T::JobRequest => register::<rq::JobRequest>(c),
            T::QueryRequest => register::<rq::QueryRequest>(c),
            T::ExtractRequest => register::<rq::ExtractRequest>(c),
            T::LedgerQuery => register::<rq::LedgerQuery>(c),
            T::Health => register::<rs::Health>(c),
            T::Ready => register::<rs::Ready>(c),
            T::Attestation => register::<rs::Attestation>(c),
            T::Me => register::<rs::Me>(c),
            T::UserToken => register::<rs::UserToken>(c),
            T::UserDisabled => register::<rs::UserDisabled>(c),
            T::Users => register::<rs::Users>(c),
            T::Datasets => register::<rs::Datasets>(c),
            T::DatasetRegistered => register::<rs::DatasetRegistered>(c),
            T::DatasetDestroyed => register::<rs::DatasetDestroyed>(c),
            T::Marginals => register::<rs::Marginals>(c),
            T::BudgetSet => register::<rs::BudgetSet>(c),
            T::GrantIssued => register::<rs::GrantIssued>(c),
            T::Grants => register::<rs::Grants>(c),
            T::GrantShown => register::<rs::GrantShown>(c),
            T::GrantRevoked => register::<rs::GrantRevoked>(c),
            T::GrantBudget => register::<rs::GrantBudget>(c),
            T::Usage => register::<rs::Usage>(c),
            T::ModuleUploaded => register::<rs::ModuleUploaded>(c),
            T::JobQueued => register::<rs::JobQueued>(c),
            T::DeveloperOutcome => register::<rs::DeveloperOutcome>(c),
            T::Jobs => register::<rs::Jobs>(c),
            T::JobShown => register::<rs::JobShown>(c),
            T::JobCancelled => register::<rs::JobCancelled>(c),
            T::ReviewQueue => register::<rs::ReviewQueue>(c),
            T::OutputShown => register::<rs::OutputShown>(c),
            T::ReviewDecision => register::<rs::ReviewDecision>(c),
            T::LedgerVerified => register::<rs::LedgerVerified>(c),
            T::PublicKey => register::<rs::PublicKey>(c),
            T::Checkpoint => register::<rs::Checkpoint>(c),
            T::LedgerRows => register::<rs::LedgerRows>(c),
        }
    }
}

/// The `{param}` segments of `path`, as required path parameters.
fn path_parameters(path: &str) -> Vec<Parameter> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build()
        })
        .collect()
}

fn content(body: Body, c: &mut ComponentsBuilder) -> Option<(&'static str, ContentBuilder)> {
    match body {
        Body::Nothing => None,
        Body::Json(t) => Some((
            "application/json",
            ContentBuilder::new().schema(Some(t.schema(c))),
        )),
        Body::Object(_) => Some((
            "application/json",
            ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::Object))),
        )),
        Body::Text(media) => Some((
            media,
            ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        )),
        Body::Wasm => Some((
            "application/wasm",
            ContentBuilder::new().schema(Some(
                ObjectBuilder::new().schema_type(Type::String).format(Some(
                    utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Binary,
                    ),
                )),
            )),
        )),
    }
}

/// The document for `routes`, titled with `version`.
pub fn document(routes: &[RouteSpec<'_>], version: &str) -> utoipa::openapi::OpenApi {
    let mut components = ComponentsBuilder::new().security_scheme(
        "token",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A user's token, as `unseen user add` or `user token` printed it.",
                ))
                .build(),
        ),
    );
    let error = register::<rs::ErrorBody>(&mut components);
    let mut paths = PathsBuilder::new().build();
    for route in routes {
        let contract = route.operation.contract();
        let mut operation = OperationBuilder::new()
            .operation_id(Some(route.operation.id()))
            .summary(Some(contract.summary))
            .tag(route.path.split('/').nth(2).unwrap_or("v1"))
            .parameters(Some(path_parameters(route.path)));
        if let Some(query) = contract.query {
            let params = match query {
                QueryString::Upload => rq::UploadQuery::into_params(|| Some(ParameterIn::Query)),
                QueryString::JobFilter => rq::JobFilter::into_params(|| Some(ParameterIn::Query)),
            };
            operation = operation.parameters(Some(params));
        }
        if let Some((kind, body)) = content(contract.request, &mut components) {
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(kind, body.build())
                    .build(),
            ));
        }
        let described = match contract.response {
            Body::Object(what) => format!("OK: {what}"),
            _ => "OK".to_string(),
        };
        let mut ok = ResponseBuilder::new().description(described);
        if let Some((kind, body)) = content(contract.response, &mut components) {
            ok = ok.content(kind, body.build());
        }
        let failed = ResponseBuilder::new()
            .description("What was wrong and what to do")
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(error.clone())).build(),
            );
        operation = operation
            .response(contract.status.to_string(), ok.build())
            .response("default", failed.build());
        let roles: Vec<&str> = route.roles.map(<[&str]>::to_vec).unwrap_or_default();
        operation = match route.roles {
            Some(_) => operation
                .security(SecurityRequirement::new("token", Vec::<String>::new()))
                .description(Some(format!("Roles: {}.", roles.join(", "))))
                .extensions(Some(ExtensionsBuilder::new().add("x-roles", roles).build())),
            None => operation.description(Some("Anyone, without a token.")),
        };
        let method = if route.method == "POST" {
            HttpMethod::Post
        } else {
            HttpMethod::Get
        };
        paths.add_path_operation(route.path, vec![method], operation.build());
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Unseen")
                .version(version)
                .description(Some(
                    "Government data used but not seen: DP queries, sandboxed jobs, human review and a verifiable ledger. Every route but the health check and this document needs a bearer token; the roles allowed are in each operation's description and `x-roles`.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

/// The document as canonical JSON text: keys sorted, two-space indent, a
/// final newline (the form `docs/openapi.json` is kept in).
pub fn document_text(routes: &[RouteSpec<'_>], version: &str) -> String {
    let value = serde_json::to_value(document(routes, version)).unwrap_or_default();
    let mut text = serde_json::to_string_pretty(&sorted(value)).unwrap_or_default();
    text.push('\n');
    text
}

/// `value` with every object's keys in order, whatever map the JSON
/// library keeps (some builds keep insertion order).
fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

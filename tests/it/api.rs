//! The API's contract: the OpenAPI document served at `/v1/openapi.json`
//! covers every route of the table with its roles and body types, equals
//! the copy kept in `docs/openapi.json`, and the server's answers read back
//! as the API crate's types.

use std::path::PathBuf;

use serde_json::{Value, json};
use unseen::client::Client;
use unseen_api::openapi::Operation;

use crate::support::{TestServer, guest, issue_grant, residents_dir, rotate};

/// `docs/openapi.json` in the checkout the tests run from.
fn kept_copy() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("run under cargo");
    PathBuf::from(manifest).join("../docs/openapi.json")
}

#[test]
fn the_openapi_document_is_served_without_a_token_and_equals_the_kept_copy() {
    let (_dir, data) = residents_dir("200");
    let server = TestServer::start(&data, 1);
    let served = Client::new(&server.base, None)
        .get("/v1/openapi.json")
        .unwrap();
    let text = unseen::server::openapi_text();
    assert_eq!(served, serde_json::from_str::<Value>(&text).unwrap());
    let kept = kept_copy();
    if std::env::var_os("UNSEEN_BLESS").is_some() {
        std::fs::write(&kept, &text).unwrap();
    }
    let on_disk = std::fs::read_to_string(&kept).unwrap_or_default();
    assert!(
        on_disk == text,
        "{} differs from the document the server serves; if the API changed on purpose, \
         regenerate it with `UNSEEN_BLESS=1 cargo test -p unseen-tests --test it -- api::` \
         and commit it",
        kept.display()
    );
}

#[test]
fn every_route_of_the_table_is_in_the_document_with_its_roles_and_bodies() {
    let document: Value = serde_json::from_str(&unseen::server::openapi_text()).unwrap();
    assert_eq!(document["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let table = unseen::server::route_table();
    let mut operations = std::collections::BTreeSet::new();
    for route in &table {
        let op = &document["paths"][route.path][route.method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is not documented",
            route.method,
            route.path
        );
        assert!(
            operations.insert(op["operationId"].as_str().unwrap().to_string()),
            "{} {}: operation id used twice",
            route.method,
            route.path
        );
        match route.access {
            unseen::server::Access::Anyone => assert!(op.get("security").is_none(), "{op}"),
            unseen::server::Access::Roles(roles) => {
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                assert_eq!(
                    op["x-roles"],
                    json!(names),
                    "{} {}",
                    route.method,
                    route.path
                );
                assert_eq!(op["security"], json!([{"token": []}]), "{op}");
            }
        }
        // Path parameters are declared; POST bodies that the server reads
        // are typed, and every answer names its error body.
        for segment in route.path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(|c| c == '{' || c == '}');
            assert!(
                op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path")),
                "{} {}: no path parameter {name}",
                route.method,
                route.path
            );
        }
        assert_eq!(
            op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
    // Request bodies the server deserializes are the API crate's types.
    let body_of = |path: &str| {
        document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"]
            .clone()
    };
    assert_eq!(body_of("/v1/queries"), "#/components/schemas/QueryRequest");
    assert_eq!(body_of("/v1/grants"), "#/components/schemas/GrantRequest");
    assert_eq!(body_of("/v1/jobs"), "#/components/schemas/JobRequest");
    let query = &document["components"]["schemas"]["QueryRequest"];
    assert_eq!(
        query["required"],
        json!(["grant", "sql"]),
        "only grant and sql are required: {query}"
    );
    assert!(query["properties"]["dry_run"].is_object(), "{query}");
    let grant = &document["components"]["schemas"]["GrantRequest"];
    for field in [
        "epsilon_total",
        "query_epsilon",
        "max_open_queries",
        "allow_udfs",
    ] {
        assert!(grant["properties"][field].is_object(), "{field}: {grant}");
    }
    // Each operation of the API crate is served (none documented only).
    assert_eq!(operations.len(), table.len());
    assert!(table.iter().any(|r| r.operation == Operation::OpenApi));
}

#[test]
fn answers_read_back_as_the_api_types_and_unknown_fields_are_refused() {
    let (_dir, data) = residents_dir("2000");
    let grant = issue_grant(&data, "10", &[]);
    let server = TestServer::start(&data, 2);
    let dev = server.client(&rotate(&server.domain, "dev"));
    let me: unseen_api::Me = serde_json::from_value(dev.get("/v1/me").unwrap()).unwrap();
    assert_eq!((me.user.as_str(), me.role.as_str()), ("dev", "developer"));
    let uploaded = dev.upload_module(&guest("district-income"), "job").unwrap();
    assert_eq!(uploaded.kind, "job");
    assert_eq!(uploaded.module.len(), 64, "{uploaded:?}");
    let queued: unseen_api::JobQueued = dev
        .call(
            "/v1/jobs",
            &unseen_api::JobRequest {
                grant: grant.clone(),
                module: uploaded.module,
                params: Default::default(),
                udf_modules: Vec::new(),
                inputs: Vec::new(),
                wait: false,
            },
        )
        .unwrap();
    assert_eq!(queued.status.as_str(), "queued");
    let outcome: unseen_api::DeveloperOutcome = dev
        .call(
            "/v1/queries",
            &unseen_api::QueryRequest {
                grant: grant.clone(),
                sql: "SELECT COUNT(*) AS n FROM residents".into(),
                dry_run: false,
                udf_modules: Vec::new(),
                inputs: Vec::new(),
            },
        )
        .unwrap();
    assert_eq!(outcome.status.as_str(), "finished", "{outcome:?}");
    assert_eq!(outcome.outputs.len(), 1, "{outcome:?}");
    // A field the API does not know is refused, not ignored: a client that
    // misspells `module` learns it at once.
    let misspelled = dev.post("/v1/jobs", &json!({"grant": grant, "modul": "abc"}));
    let error = misspelled.unwrap_err().to_string();
    assert!(error.contains("modul"), "{error}");
}

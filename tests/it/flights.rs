//! Identical measurements arriving at once are charged and answered once,
//! and a flood of connections that never finish their headers does not
//! keep ordinary requests out.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{TestServer, issue_grant, residents_dir};

/// Kinds of the ledger entries of `data` that carry `fingerprint`.
fn kinds_with(data: &str, fingerprint: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(data).join("ledger/entries.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["body"]["fingerprint"] == fingerprint)
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn thirty_two_identical_queries_at_once_are_charged_once_and_answered_alike() {
    let (_dir, data) = residents_dir("3000");
    let grant = issue_grant(&data, "1000", &[]);
    let server = TestServer::start(&data, 4);
    let dev = server.domain.rotate_token("admin", "dev").unwrap();
    let rev = server.domain.rotate_token("admin", "rev").unwrap();
    let sql = "SELECT district, COUNT(*) AS n, AVG(annual_income) AS mean FROM residents GROUP BY district";
    let start = std::sync::Barrier::new(32);
    let outputs = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..32 {
            let client = server.client(&dev);
            let (grant, outputs, start) = (&grant, &outputs, &start);
            scope.spawn(move || {
                start.wait();
                let done = client
                    .post("/v1/queries", &json!({"grant": grant, "sql": sql}))
                    .unwrap();
                assert_eq!(done["status"], "finished", "{done}");
                outputs
                    .lock()
                    .unwrap()
                    .push(done["outputs"][0].as_str().unwrap().to_string());
            });
        }
    });
    let outputs = outputs.into_inner().unwrap();
    assert_eq!(outputs.len(), 32);

    // One charge, on every layer.
    let db = rusqlite::Connection::open(Path::new(&data).join("unseen.db")).unwrap();
    let real = |q: &str| db.query_row(q, [], |r| r.get::<_, f64>(0)).unwrap();
    assert_eq!(real("SELECT COALESCE(SUM(epsilon), 0) FROM spends"), 1.0);
    assert_eq!(real("SELECT epsilon_spent FROM grants"), 1.0);
    assert_eq!(real("SELECT epsilon_spent FROM datasets"), 1.0);

    // One admission in the ledger, 31 answers from the cache.
    let fingerprint: String = db
        .query_row("SELECT fingerprint FROM release_cache", [], |r| r.get(0))
        .unwrap();
    let kinds = kinds_with(&data, &fingerprint);
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(
        (count("query.admitted"), count("query.cached")),
        (1, 31),
        "{kinds:?}"
    );

    // The same noisy answer everywhere.
    let reviewer = server.client(&rev);
    let tables: Vec<Value> = outputs
        .iter()
        .map(|o| reviewer.get(&format!("/v1/outputs/{o}")).unwrap()["table"].clone())
        .collect();
    assert!(
        tables[0].is_object() || tables[0].is_array(),
        "{}",
        tables[0]
    );
    for t in &tables[1..] {
        assert_eq!(t, &tables[0]);
    }
}

/// Asked again and again in one service, a query is answered from the
/// release cache each time without planning it again, with the same
/// answer; another grant asking the same SQL is charged on its own.
#[test]
fn a_query_asked_again_is_answered_from_the_cache_and_only_for_its_grant() {
    let (_dir, data) = residents_dir("2000");
    let first = issue_grant(&data, "1000", &[]);
    let second = issue_grant(&data, "1000", &[]);
    let server = TestServer::start(&data, 2);
    let dev = server.domain.rotate_token("admin", "dev").unwrap();
    let rev = server.domain.rotate_token("admin", "rev").unwrap();
    let client = server.client(&dev);
    let sql = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district";
    let ask = |grant: &str| {
        let done = client
            .post("/v1/queries", &json!({"grant": grant, "sql": sql}))
            .unwrap();
        assert_eq!(done["status"], "finished", "{done}");
        done["outputs"][0].as_str().unwrap().to_string()
    };
    let outputs: Vec<String> = (0..4).map(|_| ask(&first)).collect();
    let other = ask(&second);

    let db = rusqlite::Connection::open(Path::new(&data).join("unseen.db")).unwrap();
    let spent = |grant: &str| {
        db.query_row(
            "SELECT epsilon_spent FROM grants WHERE id = ?1",
            [grant],
            |r| r.get::<_, f64>(0),
        )
        .unwrap()
    };
    assert_eq!((spent(&first), spent(&second)), (1.0, 1.0));
    let fingerprint: String = db
        .query_row(
            "SELECT fingerprint FROM release_cache WHERE grant_id = ?1",
            [&first],
            |r| r.get(0),
        )
        .unwrap();
    let kinds: Vec<String> = kinds_with(&data, &fingerprint);
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    // The second grant's release has the same fingerprint: admitted once
    // for each grant, the first grant's three repeats from the cache.
    assert_eq!(
        (count("query.admitted"), count("query.cached")),
        (2, 3),
        "{kinds:?}"
    );
    let reviewer = server.client(&rev);
    let table = |o: &str| reviewer.get(&format!("/v1/outputs/{o}")).unwrap()["table"].clone();
    for o in &outputs[1..] {
        assert_eq!(table(o), table(&outputs[0]));
    }
    assert!(table(&other).is_object() || table(&other).is_array());
}

/// A data directory with only an admin: enough for a server.
fn bare_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d").to_str().unwrap().to_string();
    crate::support::ok(&[
        "user",
        "add",
        "--id",
        "admin",
        "--name",
        "A",
        "--role",
        "admin",
        "--data-dir",
        &data,
    ]);
    (dir, data)
}

/// A connection that sends the start of a request header and no more.
fn unfinished_header(server: &TestServer) -> std::net::TcpStream {
    use std::io::Write;
    let addr = server.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: flood\r\nX-Slow: ")
        .unwrap();
    // Generous: only a server that never closes the connection waits it out.
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    s
}

/// Whether the server closed `s` (end of stream or reset), reading
/// whatever it sent first; false if the read timed out.
fn closed_by_server(s: &mut std::net::TcpStream) -> bool {
    use std::io::{ErrorKind, Read};
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) => panic!("reading a held connection: {e}"),
        }
    }
}

#[test]
fn held_connections_beyond_the_cap_are_closed_and_ordinary_requests_get_through() {
    let (_dir, data) = bare_dir();
    let limits = unseen::conns::ConnectionLimits {
        max_connections: 32,
        max_per_client: 24,
        // Far longer than the test: only the caps can close anything.
        header_timeout: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let server = TestServer::start_with(
        &data,
        unseen::server::ServerOptions {
            limits,
            ..Default::default()
        },
    );
    let mut flood: Vec<_> = (0..96).map(|_| unfinished_header(&server)).collect();
    let client = unseen::client::Client::new(&server.base, None);
    let health = client.get("/v1/health").unwrap();
    assert_eq!(health["ok"], true, "{health}");
    // One client holds at most 24: the oldest idle ones were closed.
    for (i, s) in flood.iter_mut().take(48).enumerate() {
        assert!(closed_by_server(s), "held connection {i} is still open");
    }
    assert_eq!(client.get("/v1/health").unwrap()["ok"], true);
}

#[test]
fn a_request_body_that_never_ends_is_refused() {
    use std::io::{Read, Write};
    let (_dir, data) = bare_dir();
    let server = TestServer::start_with(
        &data,
        unseen::server::ServerOptions {
            limits: unseen::conns::ConnectionLimits {
                body_timeout: std::time::Duration::from_secs(1),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let token = server.domain.rotate_token("admin", "admin").unwrap();
    let addr = server.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\": "
    )
    .unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut answer = [0u8; 1024];
    let n = s
        .read(&mut answer)
        .expect("the server answers before the test gives up");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    assert!(text.contains("did not arrive within 1 s"), "{text}");
}

#[test]
fn a_request_header_that_never_ends_is_cut_off() {
    let (_dir, data) = bare_dir();
    let server = TestServer::start_with(
        &data,
        unseen::server::ServerOptions {
            limits: unseen::conns::ConnectionLimits {
                header_timeout: std::time::Duration::from_secs(1),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let mut held: Vec<_> = (0..8).map(|_| unfinished_header(&server)).collect();
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            closed_by_server(s),
            "connection {i} outlived the header deadline"
        );
    }
    let client = unseen::client::Client::new(&server.base, None);
    assert_eq!(client.get("/v1/health").unwrap()["ok"], true);
}

//! What an operator reads: the access log and the events of a job's life.

use serde_json::json;

use crate::support::{TestServer, capture_logs, issue_grant, logs, residents_dir, rotate};

/// The captured log lines that mention `needle`.
fn lines_with(needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&logs())
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_jobs_life_is_logged_as_events_and_every_request_once_without_its_token() {
    capture_logs();
    let (_dir, data) = residents_dir("500");
    let grant = issue_grant(&data, "5", &[]);
    let server = TestServer::start(&data, 1);
    let dev_token = rotate(&server.domain, "dev");
    let rev_token = rotate(&server.domain, "rev");
    let dev = server.client(&dev_token);
    let module = dev
        .upload_module(unseen::guests::DISTRICT_INCOME, "job")
        .unwrap()
        .module;
    let done = dev
        .post(
            "/v1/jobs",
            &json!({"grant": grant, "module": module, "wait": true}),
        )
        .unwrap();
    let job = done["job"].as_str().unwrap().to_string();
    let outcome = done["outcome"]["output"].as_str().unwrap().to_string();
    server
        .client(&rev_token)
        .post(
            &format!("/v1/outputs/{outcome}/reject"),
            &json!({"reason": "not needed"}),
        )
        .unwrap();

    // One event per transition, each naming the job.
    let events = lines_with(&format!("job=\"{job}\""));
    for kind in [
        "job.submitted",
        "job.started",
        "query.admitted",
        "job.ended",
        "output.quarantined",
    ] {
        assert!(
            events
                .iter()
                .any(|l| l.contains(&format!("kind=\"{kind}\""))),
            "no `{kind}` event for {job}:\n{}",
            events.join("\n")
        );
    }
    let decided = lines_with(&format!("output=\"{outcome}\""));
    assert!(
        decided.iter().any(|l| l.contains("review")),
        "no review event for {outcome}:\n{}",
        decided.join("\n")
    );
    // The access log: the route as the table names it, the user, the status.
    let access = lines_with("unseen::access");
    assert!(
        access.iter().any(|l| l.contains("route=\"/v1/jobs\"")
            && l.contains("method=POST")
            && l.contains("user=\"dev\"")
            && l.contains("status=200")),
        "{}",
        access.join("\n")
    );
    assert!(
        access
            .iter()
            .any(|l| l.contains("route=\"/v1/outputs/{id}/reject\"") && l.contains("user=\"rev\"")),
        "{}",
        access.join("\n")
    );
    let all = logs();
    for token in [&dev_token, &rev_token] {
        assert!(
            !crate::support::contains(&all, token.as_bytes()),
            "a token was logged"
        );
    }
}

/// The value of the sample `name{labels}` in an OpenMetrics text.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (metric == name && all)
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// The sum of every sample of `name`.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key.split('{').next() == Some(name)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[test]
fn metrics_agree_with_the_ledger_and_the_store_and_are_for_operators_only() {
    let (_dir, data) = residents_dir("500");
    let grant = issue_grant(&data, "5", &[]);
    let server = TestServer::start(&data, 2);
    let size_at_start = server.ledger_at_open;
    let dev = server.client(&rotate(&server.domain, "dev"));
    let admin = rotate(&server.domain, "admin");
    let sql = |n: u32| {
        format!(
            "SELECT district, COUNT(*) AS n FROM residents WHERE household_size > {n} GROUP BY district"
        )
    };
    for n in 0..3 {
        let answer = dev
            .post(
                "/v1/queries",
                &json!({"grant": grant, "sql": format!("SELECT district, AVG(annual_income) AS m FROM residents WHERE household_size > {n} GROUP BY district")}),
            )
            .unwrap();
        assert_eq!(answer["status"], "finished", "{answer}");
    }
    // An open-column query is not charged; one on a prohibited column is refused.
    dev.post("/v1/queries", &json!({"grant": grant, "sql": sql(0)}))
        .unwrap();
    let refused = dev
        .post(
            "/v1/queries",
            &json!({"grant": grant, "sql": "SELECT id_number FROM residents"}),
        )
        .unwrap();
    assert_eq!(refused["status"], "refused", "{refused}");

    let missing = dev.send("GET", "/v1/nothing-here", None, "").unwrap();
    assert_eq!(missing.status, 404);
    let forbidden = dev.get_text("/metrics").unwrap_err();
    assert_eq!(
        forbidden.status(),
        Some(403),
        "developers do not read metrics"
    );
    let (kind, text) = server.client(&admin).get_text("/metrics").unwrap();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Against the ledger: every entry this server appended is counted once
    // under its kind; each query admitted or refused is one of them.
    let ledger = server.domain.ledger_head().unwrap().size;
    assert_eq!(
        sample(&text, "unseen_ledger_size", &[]),
        Some(ledger as f64),
        "{text}"
    );
    assert_eq!(
        sum(&text, "unseen_ledger_entries_total"),
        (ledger - size_at_start) as f64,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "unseen_ledger_entries_total",
            &[("kind", "query.admitted")]
        ),
        Some(4.0),
        "three DP queries and one open-column query: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "unseen_ledger_entries_total",
            &[("kind", "query.refused"), ("rule", "prohibited-column")]
        ),
        Some(1.0),
        "{text}"
    );
    // Against the store: the grant's spend, the jobs by status.
    let spent = server.domain.grant(&grant).unwrap().epsilon_spent;
    assert_eq!(
        sample(&text, "unseen_grant_epsilon_spent", &[("grant", &grant)]),
        Some(spent),
        "{text}"
    );
    assert!(spent > 0.0);
    let jobs = server.domain.jobs("admin", None).unwrap().len();
    assert_eq!(sum(&text, "unseen_jobs"), jobs as f64, "{text}");
    // The API's own: requests by route and status, latency.
    assert_eq!(
        sample(
            &text,
            "unseen_http_requests_total",
            &[("route", "/v1/queries"), ("status", "200")]
        ),
        Some(5.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "unseen_http_request_duration_seconds_count",
            &[("route", "/v1/queries")]
        )
        .is_some_and(|n| n >= 5.0),
        "{text}"
    );
    assert_eq!(sample(&text, "unseen_up", &[]), Some(1.0));
    // A path the API does not have is counted too, under no route of it.
    assert_eq!(
        sample(
            &text,
            "unseen_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        Some(1.0),
        "{text}"
    );
    // What the jobs used, as their ends recorded it: every query read the
    // 500 rows once.
    assert_eq!(
        sample(&text, "unseen_job_rows_read_total", &[]),
        Some(500.0 * 4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "unseen_udf_rows_failed_total", &[]),
        Some(0.0)
    );
    assert_eq!(sample(&text, "unseen_udf_rows_total", &[]), Some(0.0));
}

/// `serve --config`: the file sets what flags do not, a flag wins over the
/// file, and a file with mistakes is refused with all of them.
#[test]
fn a_configuration_file_is_checked_whole_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"nowhere\"\n[limits]\nmax_jobs = 0\nspeed = 3\n[logs]\nretention_days = 30\n",
    )
    .unwrap();
    let (ok, text) = crate::support::unseen_exact(&["config", "check", bad.to_str().unwrap()]);
    assert!(!ok);
    for mistake in [
        "`listen` is `nowhere`",
        "`limits.max_jobs` is 0",
        "`limits.speed`",
        "`logs.retention_days` is 30",
    ] {
        assert!(text.contains(mistake), "{mistake}: {text}");
    }
    let (_, json) =
        crate::support::unseen_exact(&["config", "check", bad.to_str().unwrap(), "--json"]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["mistakes"].as_array().unwrap().len(), 4, "{first}");
    let (_data_dir, data) = residents_dir("100");
    let refused = crate::support::unseen_exact(&[
        "serve",
        "--config",
        bad.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    assert!(
        !refused.0 && refused.1.contains("4 mistake(s)"),
        "{}",
        refused.1
    );

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "data_dir = \"{data}\"\nlisten = \"127.0.0.1:1\"\n[limits]\nmax_jobs = 2\n[logs]\nretention_days = 200\n"
        ),
    )
    .unwrap();
    assert!(crate::support::unseen_exact(&["config", "check", good.to_str().unwrap()]).0);
    // The flag wins over the file's `listen` (port 1 is not ours to bind);
    // the file's data directory is the one served.
    let mut child = crate::support::child_test(
        "operations::child_serves_with_a_configuration_file",
        "UNSEEN_CONFIG_TEST_FILE",
        good.as_os_str(),
    );
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut listening = None;
    for line in lines {
        let line = line.unwrap();
        if let Some(at) = line.find("listening on ") {
            listening = Some(line[at..].to_string());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let listening = listening.expect("the server started from the file");
    assert!(
        listening.starts_with("listening on http://127.0.0.1:") && !listening.ends_with(":1"),
        "{listening}"
    );
}

/// Run by the test above in a process of its own.
#[test]
#[ignore = "run by a_configuration_file_is_checked_whole_and_flags_override_it"]
fn child_serves_with_a_configuration_file() {
    let Some(file) = std::env::var_os("UNSEEN_CONFIG_TEST_FILE") else {
        return;
    };
    let args: Vec<String> = [
        "unseen",
        "serve",
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut stdout = std::io::stdout();
    unseen::cli::run(&args, &mut stdout).unwrap();
}

/// `serve` speaks TLS with the certificate it is given (HTTP/1.1, and
/// HTTP/2 to clients that offer it), and will not serve plain HTTP on an
/// address other hosts reach unless told so.
#[test]
fn serve_speaks_tls_and_refuses_plain_http_beyond_loopback() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".into()])
            .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let (_data_dir, data) = residents_dir("100");

    let (served, text) =
        crate::support::unseen_exact(&["serve", "--listen", "0.0.0.0:0", "--data-dir", &data]);
    assert!(!served && text.contains("refusing to serve"), "{text}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let junk = junk.to_str().unwrap();
    let (served, text) = crate::support::unseen_exact(&[
        "serve",
        "--tls-cert",
        junk,
        "--tls-key",
        junk,
        "--data-dir",
        &data,
    ]);
    assert!(!served && text.contains("PEM"), "{text}");

    let domain = std::sync::Arc::new(unseen::Domain::open(std::path::Path::new(&data)).unwrap());
    let server_domain = std::sync::Arc::clone(&domain);
    let server = unseen::server::Background::start(
        domain,
        unseen::server::ServerOptions {
            tls: Some(unseen::tls::acceptor(&cert, &key).unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    let address = server.url().trim_start_matches("http://").to_string();
    // Plain HTTP to the TLS port gets no HTTP answer.
    assert!(
        unseen::client::Client::new(&server.url(), None)
            .get("/v1/health")
            .is_err()
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(unseen::tls::ring_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut h2_config = config.clone();
    h2_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answer = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /v1/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).to_string()
    });
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"ready\":true"), "{answer}");
    // A client offering HTTP/2 gets it: several requests on one connection
    // at once.
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(h2_config));
    let answers = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let requests = ["/v1/ready", "/v1/health", "/v1/ready"].map(|path| {
            let mut sender = sender.clone();
            let uri = format!("https://localhost/{}", path.trim_start_matches('/'));
            async move {
                let request = hyper::Request::get(uri)
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                let (version, status) = (response.version(), response.status());
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                (version, status, String::from_utf8_lossy(&body).to_string())
            }
        });
        let [a, b, c] = requests;
        let (a, b, c) = tokio::join!(a, b, c);
        [a, b, c]
    });
    for (version, status, body) in &answers {
        assert_eq!(*version, hyper::Version::HTTP_2);
        assert_eq!(status.as_u16(), 200, "{body}");
    }
    assert!(answers[0].2.contains("\"ready\":true"), "{}", answers[0].2);
    // The command line over HTTPS, trusting the certificate it is given.
    let token = rotate(&server_domain, "dev");
    let https = format!("https://{address}");
    let (listed, text) = crate::support::unseen_exact(&[
        "grant",
        "list",
        "--json",
        "--server",
        &https,
        "--token",
        &token,
        "--ca-cert",
        cert.to_str().unwrap(),
    ]);
    assert!(listed, "{text}");
    assert!(text.starts_with("{\"grants\":"), "{text}");
    // Without it, the certificate is not trusted.
    let (trusted, text) =
        crate::support::unseen_exact(&["grant", "list", "--server", &https, "--token", &token]);
    assert!(!trusted, "{text}");
}

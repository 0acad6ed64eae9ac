//! The web console: the API's role rules page by page, sessions and forms
//! that another site cannot drive, no planted value on any page, and the
//! whole work of each role done in a real browser (headless Chromium over
//! WebDriver).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::canary::{CANARY_NAME, CANARY_PHONE, canary_id, planted_residents};
use crate::support::{TestServer, issue_grant, ok, residents_dir_from, token_of};

const SQL: &str = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district";

/// A data directory with a release already signed and a second output of
/// the same query in quarantine, an auditor `aud` besides `admin`, `dev`
/// and `rev`, and the canaries planted in the prohibited columns.
struct Scene {
    _dir: tempfile::TempDir,
    data: String,
    grant: String,
    quarantined: String,
}

fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("r.parquet");
    planted_residents(&parquet, 3_000);
    let data = residents_dir_from(dir.path(), &parquet);
    ok(&[
        "user",
        "add",
        "--id",
        "aud",
        "--name",
        "审计员",
        "--role",
        "auditor",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let grant = issue_grant(&data, "5", &[]);
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let out = ok(&[
            "query",
            "--grant",
            &grant,
            "--json",
            "--as",
            "dev",
            "--data-dir",
            &data,
            SQL,
        ]);
        let job: Value = serde_json::from_str(out.trim()).unwrap();
        outputs.push(job["outputs"][0].as_str().unwrap().to_string());
    }
    ok(&[
        "review",
        "approve",
        &outputs[0],
        "--reason",
        "DP counts by district",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]);
    Scene {
        _dir: dir,
        data,
        grant,
        quarantined: outputs[1].clone(),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// GET `path` with `token`'s session: the status, headers and page.
pub(crate) fn get(
    base: &str,
    token: Option<&str>,
    path: &str,
) -> (u16, ureq::http::HeaderMap, String) {
    let mut request = agent().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.header("Cookie", format!("unseen_session={token}"));
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.body_mut().read_to_string().unwrap();
    (status, headers, body)
}

pub(crate) fn post(
    base: &str,
    token: Option<&str>,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let mut request = agent().post(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.header("Cookie", format!("unseen_session={token}"));
    }
    let mut response = request.send_form(form.iter().copied()).unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// The value of the hidden form key on a page.
pub(crate) fn form_key(page: &str) -> String {
    let at = page
        .find("name=\"form_key\" value=\"")
        .expect("a form on the page")
        + 23;
    page[at..at + 32].to_string()
}

#[test]
fn every_page_follows_the_apis_role_rules_and_shows_no_planted_value() {
    let scene = scene();
    let server = TestServer::start(&scene.data, 2);
    let base = server.base.as_str();
    let canaries = [
        CANARY_NAME.to_string(),
        CANARY_PHONE.to_string(),
        canary_id(),
    ];
    let release = {
        let (_, _, ledger) = get(base, Some(&token_of(&scene.data, "aud")), "/console/ledger");
        let at = ledger
            .find("/console/releases/rel-")
            .expect("a release listed")
            + 18;
        ledger[at..].split('"').next().unwrap().to_string()
    };
    let pages = [
        "/console".to_string(),
        "/console/reviews".into(),
        format!("/console/outputs/{}", scene.quarantined),
        "/console/ledger".into(),
        "/console/ledger?kind=query.admitted&q=residents".into(),
        "/console/ledger/entries/3".into(),
        format!("/console/releases/{release}"),
        "/console/disclosure".into(),
        "/console/datasets".into(),
        "/console/grants".into(),
        format!("/console/grants/{}", scene.grant),
        "/console/jobs".into(),
        "/console/applications".into(),
        "/console/imports".into(),
    ];
    // Who may open what: the API's route table, read back page by page.
    let may = |role: &str, page: &str| -> bool {
        let oversight = ["admin", "auditor"].contains(&role);
        match page {
            p if p.starts_with("/console/reviews") || p.starts_with("/console/outputs") => {
                role == "reviewer"
            }
            p if p.starts_with("/console/ledger")
                || p.starts_with("/console/releases")
                || p.starts_with("/console/disclosure") =>
            {
                oversight
            }
            p if p.starts_with("/console/applications") || p.starts_with("/console/imports") => {
                role != "reviewer"
            }
            _ => true,
        }
    };
    for (user, role) in [
        ("admin", "admin"),
        ("dev", "developer"),
        ("rev", "reviewer"),
        ("aud", "auditor"),
    ] {
        let token = token_of(&scene.data, user);
        for page in &pages {
            let (status, headers, body) = get(base, Some(&token), page);
            let expected = if may(role, page) { 200 } else { 403 };
            assert_eq!(status, expected, "{role} on {page}: {body}");
            assert!(
                body.contains(&format!("<strong id=\"who\">{user}</strong>")),
                "{page} shows who is signed in"
            );
            let csp = headers["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("default-src 'none'"), "{csp}");
            assert_eq!(headers["content-type"], "text/html; charset=utf-8");
            for canary in &canaries {
                assert!(
                    !body.contains(canary.as_str()),
                    "{page} as {role} shows the planted value {canary}"
                );
            }
            if expected == 403 {
                assert!(body.contains("only"), "a refusal names who may: {body}");
            }
        }
        // The navigation offers only what the role may open.
        let (_, _, home) = get(base, Some(&token), "/console");
        assert_eq!(
            home.contains("href=\"/console/reviews\""),
            role == "reviewer",
            "{role}'s navigation"
        );
        assert_eq!(
            home.contains("href=\"/console/ledger\""),
            ["admin", "auditor"].contains(&role),
            "{role}'s navigation"
        );
    }
    // Datasets show their column classes, in both languages.
    let (_, _, datasets) = get(
        base,
        Some(&token_of(&scene.data, "dev")),
        "/console/datasets",
    );
    assert!(datasets.contains("id_number"), "{datasets}");
    assert!(datasets.contains("prohibited · 不予开放"), "{datasets}");
}

#[test]
fn sessions_and_forms_cannot_be_forged() {
    let scene = scene();
    // A name written to be markup, to be shown as text.
    ok(&[
        "user",
        "add",
        "--id",
        "eve",
        "--name",
        "<script>alert(1)</script>",
        "--role",
        "developer",
        "--as",
        "admin",
        "--data-dir",
        &scene.data,
    ]);
    let server = TestServer::start(&scene.data, 2);
    let base = server.base.as_str();
    let rev = token_of(&scene.data, "rev");

    // Without a session every page leads to the sign-in form.
    let (status, headers, _) = get(base, None, "/console/reviews");
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/console");
    let (status, _, page) = get(base, None, "/console");
    assert_eq!(status, 200);
    assert!(page.contains("id=\"sign-in\""), "{page}");
    // A wrong or revoked token is refused, and says what to do.
    let (status, _, page) = get(base, Some("unseen_not-a-real-token"), "/console/reviews");
    assert_eq!(status, 401, "{page}");
    assert!(page.contains("Sign in again"), "{page}");
    let (status, page) = post(base, None, "/console/sign-in", &[("token", "nope; x=1")]);
    assert_eq!(status, 401, "{page}");

    // Signing in sets an HttpOnly, SameSite=Strict cookie holding the session.
    let response = agent()
        .post(format!("{base}/console/sign-in"))
        .send_form([("token", rev.as_str())])
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.starts_with(&format!("unseen_session={rev};")),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // A decision without the session's form key is refused and changes nothing.
    let path = format!("/console/outputs/{}/decision", scene.quarantined);
    for key in ["", "0123456789abcdef0123456789abcdef"] {
        let (status, page) = post(
            base,
            Some(&rev),
            &path,
            &[
                ("form_key", key),
                ("decision", "approve"),
                ("reason", "forged"),
            ],
        );
        assert_eq!(status, 403, "{page}");
    }
    let (_, _, page) = get(
        base,
        Some(&rev),
        &format!("/console/outputs/{}", scene.quarantined),
    );
    assert!(
        page.contains("<dd id=\"status\">quarantined</dd>"),
        "{page}"
    );
    // An empty reason is refused by the core with its own message.
    let key = form_key(&page);
    let (status, page) = post(
        base,
        Some(&rev),
        &path,
        &[("form_key", &key), ("decision", "approve"), ("reason", " ")],
    );
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("reason"), "{page}");
    // The developer who ran the job cannot decide on it, even with a key.
    let dev = token_of(&scene.data, "dev");
    let (_, _, dev_home) = get(base, Some(&dev), "/console");
    let (status, _) = post(
        base,
        Some(&dev),
        &path,
        &[
            ("form_key", &form_key(&dev_home)),
            ("decision", "approve"),
            ("reason", "mine"),
        ],
    );
    assert_eq!(status, 403);

    // Release ids cannot walk the file system.
    let aud = token_of(&scene.data, "aud");
    let (status, _, _) = get(base, Some(&aud), "/console/releases/..%2F..%2Fkeys");
    assert_eq!(status, 400);
    // A user's text is escaped, never markup.
    let (_, _, ledger) = get(base, Some(&aud), "/console/ledger?kind=user.created");
    assert!(!ledger.contains("<script>alert(1)"), "{ledger}");
}

// ---- In a real browser ----

/// Chromium and its WebDriver, when installed (Debian's `chromium` and
/// `chromium-driver`). `UNSEEN_BROWSER_TESTS=1` (set by `./scripts/test`
/// when they are present, and by CI) makes their absence a failure.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
    };
    let found =
        find(&["chromedriver"]).zip(find(&["chromium", "chromium-browser", "google-chrome"]));
    if found.is_none() {
        assert!(
            std::env::var_os("UNSEEN_BROWSER_TESTS").is_none(),
            "UNSEEN_BROWSER_TESTS is set but chromium or chromedriver is missing: apt-get install chromium chromium-driver"
        );
        eprintln!("SKIPPED browser test: chromium and chromedriver are not installed");
    }
    found
}

/// A chromedriver process on a free loopback port; killed on drop.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    /// Stops chromedriver and the browsers it started (its process group),
    /// also when a test failed before closing its session.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver(chromedriver: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(chromedriver)
        .arg(format!("--port={port}"))
        // Its own process group, so dropping the driver stops its browsers too.
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromedriver");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Where screenshots go: `UNSEEN_CONSOLE_SCREENSHOTS` (the README's are
/// made with `docs/console`), else a scratch directory.
fn screenshot_dir(scratch: &Path) -> PathBuf {
    std::env::var_os("UNSEEN_CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.join("screenshots"))
}

#[test]
fn each_role_does_its_work_in_a_browser() {
    let Some((chromedriver, chromium)) = browser_tools() else {
        return;
    };
    let scene = scene();
    let server = TestServer::start(&scene.data, 2);
    let driver = start_driver(&chromedriver);
    let shots = screenshot_dir(scene._dir.path());
    std::fs::create_dir_all(&shots).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(browse(&scene, &server.base, &driver.url, &chromium, &shots));
    for name in [
        "sign-in",
        "review-queue",
        "output",
        "released",
        "ledger",
        "release",
        "disclosure",
        "datasets",
        "grant",
        "jobs",
        "tampered",
    ] {
        let shot = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&shot).unwrap_or_default();
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", shot.display());
    }
}

/// Clicks what `locator` finds and waits until the browser has left the
/// page: a click returns before the navigation it starts, so looking for the
/// next page's elements at once could find the old page's, or none.
async fn click_through(browser: &fantoccini::Client, locator: fantoccini::Locator<'_>) {
    let old_page = browser
        .find(fantoccini::Locator::Css("html"))
        .await
        .unwrap();
    browser.find(locator).await.unwrap().click().await.unwrap();
    for _ in 0..400 {
        if old_page.tag_name().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the click on {locator:?} did not leave the page");
}

async fn browse(scene: &Scene, base: &str, driver: &str, chromium: &Path, shots: &Path) {
    use fantoccini::{ClientBuilder, Locator};
    let capabilities: serde_json::Map<String, Value> = serde_json::from_value(serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--lang=zh-CN"],
        }
    }))
    .unwrap();
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(driver)
        .await
        .expect("a WebDriver session with headless Chromium");
    let shoot = |name: &'static str| {
        let browser = browser.clone();
        let path = shots.join(format!("{name}.png"));
        async move {
            let png = browser.screenshot().await.unwrap();
            std::fs::write(path, png).unwrap();
        }
    };
    let text_of = |id: &'static str| {
        let browser = browser.clone();
        async move {
            browser
                .wait()
                .for_element(Locator::Id(id))
                .await
                .unwrap_or_else(|e| panic!("#{id} on the page: {e}"))
                .text()
                .await
                .unwrap()
        }
    };
    let sign_in = |user: &'static str| {
        let browser = browser.clone();
        let token = token_of(&scene.data, user);
        async move {
            browser.goto(&format!("{base}/console")).await.unwrap();
            if browser
                .find(Locator::Css("form.inline button"))
                .await
                .is_ok()
            {
                click_through(&browser, Locator::Css("form.inline button")).await;
            }
            browser
                .wait()
                .for_element(Locator::Id("token"))
                .await
                .unwrap()
                .send_keys(&token)
                .await
                .unwrap();
            click_through(&browser, Locator::Id("sign-in")).await;
            let who = browser
                .wait()
                .for_element(Locator::Id("who"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert_eq!(who, user, "signed in as {user}");
        }
    };

    browser.goto(&format!("{base}/console")).await.unwrap();
    shoot("sign-in").await;

    // A developer sees their jobs, and a reviewer's page refuses them.
    sign_in("dev").await;
    assert_eq!(text_of("role").await, "developer");
    browser.goto(&format!("{base}/console/jobs")).await.unwrap();
    let jobs = text_of("jobs").await;
    assert!(jobs.contains("finished"), "{jobs}");
    shoot("jobs").await;
    browser
        .goto(&format!("{base}/console/reviews"))
        .await
        .unwrap();
    let refused = browser
        .find(Locator::Css("p.error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(refused.contains("only reviewer may"), "{refused}");

    // A reviewer approves the quarantined output, and the release appears.
    sign_in("rev").await;
    browser
        .goto(&format!("{base}/console/reviews"))
        .await
        .unwrap();
    let queue = text_of("queue").await;
    assert!(queue.contains(&scene.quarantined), "{queue}");
    assert!(
        queue.contains("cells changed since"),
        "the diff against the last release: {queue}"
    );
    shoot("review-queue").await;
    click_through(&browser, Locator::LinkText(&scene.quarantined)).await;
    let table = text_of("output-table").await;
    assert!(table.contains("朝阳区"), "districts in Chinese: {table}");
    assert!(
        table.contains('['),
        "estimates with their interval: {table}"
    );
    shoot("output").await;
    browser
        .find(Locator::Id("reason"))
        .await
        .unwrap()
        .send_keys("DP counts by district; no small cells")
        .await
        .unwrap();
    click_through(&browser, Locator::Id("approve")).await;
    let release = text_of("release").await;
    assert!(release.starts_with("rel-"), "{release}");
    assert_eq!(text_of("status").await, "approved");
    shoot("released").await;

    // An auditor verifies the ledger, the new release end to end, an entry's proof.
    sign_in("aud").await;
    browser
        .goto(&format!("{base}/console/ledger"))
        .await
        .unwrap();
    let status = text_of("ledger-status").await;
    assert!(status.starts_with("Verified"), "{status}");
    assert!(text_of("releases").await.contains(&release));
    browser
        .find(Locator::Id("search"))
        .await
        .unwrap()
        .send_keys(&release)
        .await
        .unwrap();
    click_through(&browser, Locator::Id("filter")).await;
    let entries = text_of("entries").await;
    assert!(entries.contains("release.signed"), "{entries}");
    shoot("ledger").await;
    browser
        .goto(&format!("{base}/console/releases/{release}"))
        .await
        .unwrap();
    let verified = text_of("release-status").await;
    assert!(verified.starts_with("Verified end to end"), "{verified}");
    shoot("release").await;
    browser
        .goto(&format!("{base}/console/ledger/entries/1"))
        .await
        .unwrap();
    assert!(text_of("proof-status").await.starts_with("Included"));
    browser
        .goto(&format!("{base}/console/disclosure"))
        .await
        .unwrap();
    assert!(text_of("disclosure").await.contains(&scene.grant));
    shoot("disclosure").await;

    // A provider sees column classes, and budget left over time.
    sign_in("admin").await;
    browser
        .goto(&format!("{base}/console/datasets"))
        .await
        .unwrap();
    shoot("datasets").await;
    browser
        .goto(&format!("{base}/console/grants/{}", scene.grant))
        .await
        .unwrap();
    assert_eq!(text_of("epsilon-left").await, "4.000");
    browser
        .find(Locator::Id("budget-chart"))
        .await
        .expect("a budget chart");
    shoot("grant").await;

    // A tampered ledger shows as failed.
    let entries_path = Path::new(&scene.data).join("ledger/entries.jsonl");
    let text = std::fs::read_to_string(&entries_path).unwrap();
    std::fs::write(
        &entries_path,
        text.replacen("\"epsilon\":1.0", "\"epsilon\":0.0", 1),
    )
    .unwrap();
    sign_in("aud").await;
    browser
        .goto(&format!("{base}/console/ledger"))
        .await
        .unwrap();
    let status = text_of("ledger-status").await;
    assert!(status.starts_with("Verification FAILED"), "{status}");
    shoot("tampered").await;
    browser.close().await.unwrap();
}

/// A developer applies, the provider pre-reviews and approves with a
/// narrower budget, the developer rates the grant: all through forms.
#[test]
fn grant_applications_are_made_and_decided_through_forms() {
    let (_dir, data) = crate::support::residents_dir("200");
    let server = TestServer::start(&data, 2);
    let base = server.base.as_str();
    let (dev, admin, rev) = (
        token_of(&data, "dev"),
        token_of(&data, "admin"),
        token_of(&data, "rev"),
    );
    let (status, _, page) = get(base, Some(&rev), "/console/applications");
    assert_eq!(status, 403, "reviewers read no applications: {page}");
    let (status, _, page) = get(base, Some(&admin), "/console/applications");
    assert_eq!(status, 200);
    assert!(!page.contains("id=\"apply\""), "only developers apply");
    let (status, _, page) = get(base, Some(&dev), "/console/applications");
    assert_eq!(status, 200);
    let key = form_key(&page);
    let apply_form = [
        ("dataset", "residents"),
        ("scenario", "district services"),
        ("purpose", "District counts"),
        ("columns", "district"),
        ("epsilon", "3"),
        ("query_epsilon", "1"),
        ("days", "60"),
        ("allow_sql", "on"),
    ];
    let (status, _) = post(
        base,
        Some(&dev),
        "/console/applications",
        &[&apply_form[..], &[("form_key", "0".repeat(32).as_str())]].concat(),
    );
    assert_eq!(status, 403, "a form from elsewhere is refused");
    let (status, page) = post(
        base,
        Some(&dev),
        "/console/applications",
        &[&apply_form[..], &[("form_key", key.as_str())]].concat(),
    );
    assert_eq!(status, 303, "{page}");
    let (_, _, page) = get(base, Some(&dev), "/console/applications");
    let at = page.find("/console/applications/app-").expect("listed") + 22;
    let id = page[at..].split('"').next().unwrap().to_string();
    let path = format!("/console/applications/{id}");

    let (_, _, page) = get(base, Some(&admin), &path);
    assert!(page.contains("id=\"complete\""), "{page}");
    let admin_key = form_key(&page);
    let (status, page) = post(
        base,
        Some(&admin),
        &format!("{path}/pre-review"),
        &[
            ("form_key", &admin_key),
            ("complete", "yes"),
            ("reason", ""),
        ],
    );
    assert_eq!(status, 303, "{page}");
    let (status, page) = post(
        base,
        Some(&admin),
        &format!("{path}/decision"),
        &[
            ("form_key", &admin_key),
            ("decision", "approve"),
            ("reason", "fits the scenario"),
            ("epsilon", "9"),
        ],
    );
    assert_eq!(status, 400, "widening is refused: {page}");
    assert!(page.contains("may only narrow"), "{page}");
    let (status, page) = post(
        base,
        Some(&admin),
        &format!("{path}/decision"),
        &[
            ("form_key", &admin_key),
            ("decision", "approve"),
            ("reason", "fits the scenario"),
            ("epsilon", "2"),
        ],
    );
    assert_eq!(status, 303, "{page}");

    let (_, _, page) = get(base, Some(&dev), &path);
    assert!(
        page.contains("<dd id=\"application-status\">approved</dd>"),
        "{page}"
    );
    assert!(
        page.contains("fits the scenario"),
        "the applicant is told why"
    );
    assert!(page.contains("id=\"application-grant\""), "{page}");
    let (status, page) = post(
        base,
        Some(&dev),
        &format!("{path}/feedback"),
        &[
            ("form_key", &key),
            ("rating", "5"),
            ("text", "clear answers"),
        ],
    );
    assert_eq!(status, 303, "{page}");
    let (_, _, page) = get(base, Some(&dev), &path);
    assert!(page.contains("rating 5"), "{page}");
    let grants = server.domain.grants("admin").unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].epsilon_total, 2.0);
    assert_eq!(grants[0].columns, ["district"]);
}

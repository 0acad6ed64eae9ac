//! Canaries: known values planted in prohibited columns must appear nowhere
//! a user, a reviewer, an auditor or an attacker with the data directory
//! could look — except the plaintext source file, which proves the search works.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use unseen_datasets::{DatasetKind, GenerateOptions};

use crate::support::{all_files, capture_logs, contains, fails, logs, ok, unseen};

pub(crate) const CANARY_NAME: &str = "金丝雀测";
pub(crate) const CANARY_PHONE: &str = "19900001234";

pub(crate) fn canary_id() -> String {
    let first17 = "11010519770707951";
    format!(
        "{first17}{}",
        unseen_datasets::resident_id_check_char(first17)
    )
}

/// Writes `residents` with the canaries planted in row 0 of every prohibited text column.
pub(crate) fn planted_residents(path: &Path, rows: u64) {
    let clean = path.with_extension("clean.parquet");
    unseen_datasets::generate_to_path(
        DatasetKind::Residents,
        &GenerateOptions::new(rows, 11),
        &clean,
        &mut |_| {},
    )
    .unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&clean).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut writer = None;
    for (i, batch) in reader.enumerate() {
        let batch = batch.unwrap();
        let batch = if i == 0 { plant(&batch) } else { batch };
        writer
            .get_or_insert_with(|| {
                ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None)
                    .unwrap()
            })
            .write(&batch)
            .unwrap();
    }
    writer.unwrap().close().unwrap();
    std::fs::remove_file(clean).unwrap();
}

fn plant(batch: &RecordBatch) -> RecordBatch {
    let schema = batch.schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            let canary = match field.name().as_str() {
                "id_number" => canary_id(),
                "name" => CANARY_NAME.to_string(),
                "phone" => CANARY_PHONE.to_string(),
                _ => return Arc::clone(column),
            };
            let strings = column.as_string::<i32>();
            let replaced: StringArray = (0..strings.len())
                .map(|i| {
                    Some(if i == 0 {
                        canary.clone()
                    } else {
                        strings.value(i).to_string()
                    })
                })
                .collect();
            Arc::new(replaced) as ArrayRef
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Every read route of the HTTP API, as every role, and the refusals a
/// developer meets over it: all the text the server answers with.
fn served_answers(data: &str, grant: &str, output: &str) -> String {
    let server = crate::support::TestServer::start(data, 2);
    let domain = &server.domain;
    let aud = domain
        .add_user(Some("admin"), "aud", "Au", unseen::Role::Auditor, "")
        .unwrap();
    let tokens = [
        crate::support::rotate(domain, "admin"),
        crate::support::rotate(domain, "dev"),
        crate::support::rotate(domain, "rev"),
        aud,
    ];
    let release = std::fs::read_dir(Path::new(data).join("releases"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let reads = [
        "/v1/me".to_string(),
        "/v1/users".into(),
        "/v1/datasets".into(),
        "/v1/grants".into(),
        format!("/v1/grants/{grant}"),
        format!("/v1/grants/{grant}/budget"),
        format!("/v1/grants/{grant}/usage"),
        "/v1/jobs".into(),
        "/v1/reviews".into(),
        format!("/v1/outputs/{output}"),
        format!("/v1/releases/{release}"),
        "/v1/reports/disclosure".into(),
        "/v1/ledger/reconcile".into(),
    ];
    let mut answers = String::new();
    for token in &tokens {
        let client = server.client(token);
        for path in &reads {
            let answer = client.send("GET", path, None, "").unwrap();
            answers += &answer.body.to_string();
        }
        let entries = client.send(
            "POST",
            "/v1/ledger/query",
            Some(br#"{"sql": "SELECT * FROM entries"}"#),
            "application/json",
        );
        answers += &entries.unwrap().body.to_string();
    }
    let dev = server.client(&tokens[1]);
    for sql in [
        "SELECT id_number FROM residents",
        "SELECT name, COUNT(*) FROM residents GROUP BY name",
        "SELECT CAST(phone AS BIGINT) FROM residents",
    ] {
        let body = serde_json::json!({"grant": grant, "sql": sql}).to_string();
        let answer = dev
            .send(
                "POST",
                "/v1/queries",
                Some(body.as_bytes()),
                "application/json",
            )
            .unwrap();
        answers += &answer.body.to_string();
    }
    let extract = serde_json::json!({"grant": grant, "columns": ["id_number", "name", "phone"]});
    let answer = dev
        .send(
            "POST",
            "/v1/extracts",
            Some(extract.to_string().as_bytes()),
            "application/json",
        )
        .unwrap();
    answers += &answer.body.to_string();
    assert!(
        answers.contains("prohibited") && answers.contains("\"table\""),
        "the routes answered: {answers}"
    );
    answers
}

/// A data directory at `dir/data` with users `admin`, `dev` and `rev` and
/// `residents` registered from `source` (planted); a grant of `dev` on it,
/// and what the commands printed.
fn planted_data_dir(dir: &Path, source: &Path) -> (std::path::PathBuf, String, String) {
    let staging = source.parent().unwrap();
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    let manifest = staging.join("residents.toml");
    std::fs::write(&manifest, ok(&["dataset", "manifest", "residents"])).unwrap();
    let mut printed = String::new();
    printed += &ok(&[
        "user",
        "add",
        "--id",
        "admin",
        "--name",
        "A",
        "--role",
        "admin",
        "--data-dir",
        d,
    ]);
    printed += &ok(&[
        "user",
        "add",
        "--id",
        "dev",
        "--name",
        "D",
        "--role",
        "developer",
        "--as",
        "admin",
        "--data-dir",
        d,
    ]);
    printed += &ok(&[
        "user",
        "add",
        "--id",
        "rev",
        "--name",
        "R",
        "--role",
        "reviewer",
        "--as",
        "admin",
        "--data-dir",
        d,
    ]);
    printed += &ok(&[
        "dataset",
        "register",
        "--name",
        "residents",
        "--parquet",
        source.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--as",
        "admin",
        "--data-dir",
        d,
    ]);
    let issued = ok(&[
        "grant",
        "issue",
        "--dataset",
        "residents",
        "--developer",
        "dev",
        "--purpose",
        "canary",
        "--epsilon",
        "5",
        "--query-epsilon",
        "1",
        "--as",
        "admin",
        "--json",
        "--data-dir",
        d,
    ]);
    printed += &issued;
    let grant = serde_json::from_str::<serde_json::Value>(&issued).unwrap()["grant"]
        .as_str()
        .unwrap()
        .to_string();
    (data, grant, printed)
}

/// `residents` with the canaries planted, at `dir/staging/residents.parquet`,
/// and the canaries.
fn planted_source(dir: &Path) -> (std::path::PathBuf, [String; 3]) {
    let staging = dir.join("staging");
    std::fs::create_dir(&staging).unwrap();
    let source = staging.join("residents.parquet");
    planted_residents(&source, 4_000);
    let canaries = canaries_in(&source);
    (source, canaries)
}

/// The canaries, each of which the plaintext `source` holds (the positive
/// control: a search that finds nothing proves nothing otherwise).
fn canaries_in(source: &Path) -> [String; 3] {
    let canaries = [
        canary_id(),
        CANARY_NAME.to_string(),
        CANARY_PHONE.to_string(),
    ];
    let source_bytes = std::fs::read(source).unwrap();
    for c in &canaries {
        assert!(
            contains(&source_bytes, c.as_bytes()),
            "positive control: `{c}` is in the plaintext source"
        );
    }
    canaries
}

#[test]
fn planted_prohibited_values_appear_in_no_output_log_ledger_or_stored_file() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let (source, canaries) = planted_source(dir.path());
    let staging = source.parent().unwrap();
    let (data, grant, mut printed) = planted_data_dir(dir.path(), &source);
    let d = data.to_str().unwrap();

    let mut outputs = Vec::new();
    for (name, bytes) in [
        ("district_income", unseen::guests::DISTRICT_INCOME),
        ("refused_id_number", unseen::guests::REFUSED_ID_NUMBER),
        ("refused_raw_income", unseen::guests::REFUSED_RAW_INCOME),
    ] {
        let module = staging.join(format!("{name}.wasm"));
        std::fs::write(&module, bytes).unwrap();
        let (succeeded, text) = unseen(&[
            "job",
            "submit",
            "--grant",
            &grant,
            "--module",
            module.to_str().unwrap(),
            "--as",
            "dev",
            "--json",
            "--data-dir",
            d,
        ]);
        // Refused queries do not stop a guest: each job finishes, and
        // what it met is in its outcome, which the reviewer reads.
        assert!(succeeded, "{name}: {text}");
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let job = v["job"].as_str().unwrap();
        let emitted = crate::support::job_outputs(d, job);
        assert_eq!(
            emitted.len(),
            usize::from(name == "district_income"),
            "{name}"
        );
        outputs.extend(emitted);
        printed += &text;
        printed += &ok(&["job", "status", job, "--as", "rev", "--data-dir", d]);
    }
    assert_eq!(outputs.len(), 1);
    printed += &ok(&[
        "review",
        "show",
        &outputs[0],
        "--as",
        "rev",
        "--data-dir",
        d,
    ]);
    printed += &fails(&[
        "review",
        "approve",
        &outputs[0],
        "--reason",
        "mine",
        "--as",
        "dev",
        "--data-dir",
        d,
    ]);
    printed += &ok(&[
        "review",
        "approve",
        &outputs[0],
        "--reason",
        "aggregates only",
        "--as",
        "rev",
        "--data-dir",
        d,
    ]);
    printed += &ok(&["budget", "show", "--grant", &grant, "--data-dir", d]);
    printed += &ok(&["ledger", "verify", "--data-dir", d]);
    printed += &served_answers(d, &grant, &outputs[0]);
    assert!(
        printed.contains("is prohibited"),
        "the refusal was printed:\n{printed}"
    );

    let log_text = logs();
    // The access log names users, never their tokens.
    for user in ["admin", "dev", "rev"] {
        let token = crate::support::token_of(d, user);
        assert!(
            !contains(&log_text, token.as_bytes()),
            "{user}'s token was logged"
        );
    }
    let stored = all_files(&data);
    assert!(
        stored.iter().any(|(p, _)| p.ends_with("residents.parquet")),
        "the dataset is stored in the data directory"
    );
    for c in &canaries {
        let needle = c.as_bytes();
        assert!(
            !contains(printed.as_bytes(), needle),
            "`{c}` was printed:\n{printed}"
        );
        assert!(!contains(&log_text, needle), "`{c}` was logged");
        for (path, bytes) in &stored {
            assert!(
                !contains(bytes, needle),
                "`{c}` is stored in plaintext in {}",
                path.display()
            );
        }
    }
}

/// The same canaries, with the service's queries run on a cluster of
/// executor processes: no answer, no log of the service or of the cluster's
/// processes, and no file of the data directory or of the executors' work
/// directories holds one.
#[test]
fn planted_prohibited_values_reach_nothing_through_a_cluster() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let (source, canaries) = planted_source(dir.path());
    let (data, grant, mut answers) = planted_data_dir(dir.path(), &source);
    let d = data.to_str().unwrap();
    let cluster_dir = dir.path().join("cluster");
    std::fs::create_dir(&cluster_dir).unwrap();
    let (cluster, _secrets) = crate::cluster::start_cluster(&cluster_dir, d);
    let server = crate::support::TestServer::start(d, 2);
    server.domain.set_remote_engine(cluster.engine());
    let dev = server.client(&crate::support::rotate(&server.domain, "dev"));
    let mut finished = 0;
    for sql in [
        "SELECT id_number FROM residents",
        "SELECT name, COUNT(*) FROM residents GROUP BY name",
        "SELECT district, COUNT(*) AS n FROM residents WHERE phone LIKE '199%' GROUP BY district",
        "SELECT district, COUNT(*) AS n FROM residents GROUP BY district",
        "SELECT gender, AVG(annual_income) AS mean_income FROM residents GROUP BY gender",
        "SELECT district, SUM(household_size) AS people FROM residents GROUP BY district",
    ] {
        let answer: serde_json::Value = dev
            .post(
                "/v1/queries",
                &serde_json::json!({"grant": grant, "sql": sql}),
            )
            .unwrap();
        finished += usize::from(answer["status"] == "finished");
        answers += &answer.to_string();
    }
    assert_eq!(finished, 3, "{answers}");
    assert!(answers.contains("prohibited"), "{answers}");
    // Positive control: the executors did the work (each job leaves a
    // directory in an executor's work directory).
    let jobs: usize = ["exec-1", "exec-2"]
        .iter()
        .map(|name| std::fs::read_dir(cluster.work_dir(name)).map_or(0, |d| d.count()))
        .sum();
    assert!(jobs > 0, "no executor ran a job");
    drop(server);
    let mut stored = all_files(dir.path());
    for name in ["exec-1", "exec-2"] {
        stored.extend(all_files(&cluster.work_dir(name)));
    }
    drop(cluster);

    let log_text = logs();
    // Whichever executor ran the tasks logged opening its sealed key.
    let executor_logs: String = stored
        .iter()
        .filter(|(p, _)| p.ends_with("exec-1.log") || p.ends_with("exec-2.log"))
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).to_string())
        .collect();
    assert!(
        executor_logs.contains("opened the data key"),
        "the executors' logs are searched: {executor_logs}"
    );
    for c in &canaries {
        let needle = c.as_bytes();
        assert!(
            !contains(answers.as_bytes(), needle),
            "`{c}` was answered:\n{answers}"
        );
        assert!(!contains(&log_text, needle), "`{c}` was logged");
        for (path, bytes) in stored.iter().filter(|(p, _)| *p != source) {
            assert!(
                !contains(bytes, needle),
                "`{c}` is stored in plaintext in {}",
                path.display()
            );
        }
    }
}

//! A scheduler and two executors in this process, on loopback: what the
//! cluster computes equals what one process computes, over an encrypted
//! file whose key crosses only sealed.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::encryption::encrypt::FileEncryptionProperties;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use unseen_policy::clamped_sum::{ClampedSum, Output};
use unseen_policy::manifest::ColumnType;

use crate::client::ClusterClient;
use crate::process::{ExecutorOptions, SchedulerOptions, run_executor, run_scheduler};
use crate::seal::{Enrolled, ExecutorSecret};
use crate::tls::{ClusterAuthority, Identity};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Whether `address` answers HTTP/2 without TLS: its first frame to a
/// client's preface is SETTINGS (type 4), where a TLS server answers with
/// an alert or closes.
fn speaks_plain_http2(address: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let mut head = [0u8; 9];
    socket.read_exact(&mut head).is_ok() && head[3] == 0x04
}

fn rows() -> RecordBatch {
    let n = 5_000i64;
    let schema = Arc::new(Schema::new(vec![
        Field::new("district", DataType::Utf8, false),
        Field::new("income", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("d{}", i % 7)),
            )),
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|i| (i * 37) % 1000 - 100),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("person {i}")),
            )),
        ],
    )
    .unwrap()
}

fn write_encrypted(path: &std::path::Path, dataset: &str, key: &[u8; 32], batch: &RecordBatch) {
    let encryption = FileEncryptionProperties::builder(key.to_vec())
        .with_aad_prefix(dataset.as_bytes().to_vec())
        .build()
        .unwrap();
    let properties = WriterProperties::builder()
        .with_file_encryption_properties(encryption)
        .set_max_row_group_row_count(Some(700))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties)).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

fn sorted(batches: &[RecordBatch]) -> Vec<String> {
    let text = datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn a_cluster_computes_what_one_process_computes_reading_only_sealed_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key = [9u8; 32];
    let path = dir.path().join("residents.parquet");
    let batch = rows();
    write_encrypted(&path, "residents", &key, &batch);

    let scheduler = free_port();
    let enrolled: Vec<Enrolled> = ["e1", "e2"]
        .iter()
        .zip(1u8..)
        .map(|(name, seed)| Enrolled {
            name: name.to_string(),
            secret: ExecutorSecret::from_bytes([seed; 32]),
        })
        .collect();
    let authority = ClusterAuthority::generate().unwrap();
    let scheduler_identity = authority.issue("scheduler").unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime
            .block_on(run_scheduler(SchedulerOptions::new(
                scheduler,
                scheduler_identity,
            )))
            .unwrap();
    });
    let mut executors = Vec::new();
    for executor in &enrolled {
        let bind = free_port();
        executors.push(bind);
        let options = ExecutorOptions {
            name: executor.name.clone(),
            secret: executor.secret.clone(),
            scheduler,
            bind,
            work_dir: dir.path().join(&executor.name),
            slots: 2,
            identity: authority.issue(&executor.name).unwrap(),
            memory: Some(256 << 20),
        };
        std::fs::create_dir_all(&options.work_dir).unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let _ = runtime.block_on(run_executor(options));
        });
    }
    std::thread::sleep(Duration::from_secs(3));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client =
            ClusterClient::new(&scheduler.to_string(), authority.issue("service").unwrap());
        let local = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        local
            .register_table(
                "residents",
                Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap()),
            )
            .unwrap();
        unseen_policy::total::install(&local);
        // A session of its own: sessions cloned from one state share its catalog.
        let own = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        unseen_policy::total::install(&own);
        let remote = SessionContext::new_with_state(client.distribute(own.state()).unwrap());
        remote
            .register_table(
                "residents",
                client
                    .table(
                        "residents",
                        &path,
                        &key,
                        Some(&["district".into(), "income".into()]),
                        &enrolled,
                    )
                    .unwrap(),
            )
            .unwrap();

        let sql = "SELECT district, COUNT(*) AS n, SUM(income) AS total, \
                   SUM(income / (income % 10)) AS ratio FROM residents GROUP BY district";
        let here = local.sql(sql).await.unwrap().collect().await.unwrap();
        let there = remote.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(sorted(&here), sorted(&there));

        let clamped = |ctx: &SessionContext| {
            let ctx = ctx.clone();
            async move {
                let sum = ClampedSum::new(Output::Sum, ColumnType::Int64, (0.0, 500.0), true)
                    .unwrap()
                    .call(col("income"))
                    .alias("clamped");
                ctx.table("residents")
                    .await
                    .unwrap()
                    .aggregate(vec![col("district")], vec![sum])
                    .unwrap()
                    .collect()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            sorted(&clamped(&local).await),
            sorted(&clamped(&remote).await)
        );

        // A column outside the grant is not in the cluster's table at all.
        let refused = remote.sql("SELECT name FROM residents").await;
        assert!(refused.is_err());

        // Executors the key was not sealed for read nothing, whoever asks.
        let stranger = Enrolled {
            name: "e3".into(),
            secret: ExecutorSecret::from_bytes([99; 32]),
        };
        let own = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        let unsealed = SessionContext::new_with_state(client.distribute(own.state()).unwrap());
        unsealed
            .register_table(
                "residents",
                client
                    .table("residents", &path, &key, None, &[stranger])
                    .unwrap(),
            )
            .unwrap();
        let failed = unsealed
            .sql("SELECT COUNT(*) AS n FROM residents")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(failed.contains("not enrolled"), "{failed}");

        // Only members of this cluster get through: a client with an
        // identity from another authority, or none, is refused by the
        // scheduler's front and by an executor's Flight server alike.
        let member = authority.issue("service").unwrap();
        let (status, said) = member
            .get(
                &scheduler.to_string(),
                "/readyz",
                Duration::from_secs(5),
                1024,
            )
            .unwrap();
        assert_eq!(status, 200, "{said}");
        let stranger = ClusterAuthority::generate()
            .unwrap()
            .issue("service")
            .unwrap();
        let refused = stranger
            .get(
                &scheduler.to_string(),
                "/readyz",
                Duration::from_secs(5),
                1024,
            )
            .unwrap_err();
        assert!(
            matches!(refused, crate::ClusterError::IdentityRefused { .. }),
            "{refused}"
        );
        // A stranger who knows the authority's certificate (it is no
        // secret) still has no identity the members accept.
        let stranger = stranger.trusting(&member);
        for address in [scheduler, executors[0]] {
            assert!(
                !speaks_plain_http2(address),
                "{address} answered without TLS"
            );
            let foreign = stranger.endpoint_override()(
                tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap(),
            )
            .unwrap()
            .connect()
            .await;
            let refused = match foreign {
                Err(_) => true,
                // TLS 1.3 servers check the client's certificate after the
                // client's side of the handshake ended: the first call fails.
                Ok(channel) => {
                    ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient::new(
                        channel,
                    )
                    .get_job_status(ballista_core::serde::protobuf::GetJobStatusParams {
                        job_id: "any".into(),
                    })
                    .await
                    .is_err_and(|e| {
                        // The connection is closed, not the call answered.
                        matches!(
                            e.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Unknown
                                | tonic::Code::Cancelled
                        )
                    })
                }
            };
            assert!(refused, "{address} accepted another authority's identity");
        }
    });
}

#[test]
fn a_jobs_join_cap_travels_in_its_settings_and_caps_the_joins_of_a_stage() {
    use ballista_core::extension::SessionConfigHelperExt as _;
    use datafusion::physical_plan::displayable;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // The service's side: a session carrying a cap, made for the cluster.
        let limits = unseen_policy::ExecutionLimits {
            join_rows: Some(10),
            ..Default::default()
        };
        let service = unseen_policy::limits::session_state(
            SessionConfig::new(),
            Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default()),
            limits,
        );
        let authority = ClusterAuthority::generate().unwrap();
        let client = ClusterClient::new(
            &free_port().to_string(),
            authority.issue("service").unwrap(),
        );
        let distributed = client.distribute(service).unwrap();
        // The job's settings, as the scheduler and then an executor apply
        // them to their own configuration.
        let settings = distributed.config().to_key_value_pairs();
        let on_scheduler = crate::process::cluster_config().update_from_key_value_pair(&settings);
        let on_executor = crate::process::cluster_config()
            .update_from_key_value_pair(&on_scheduler.to_key_value_pairs())
            // Only so the test can name a table; a cluster's come in the plan.
            .with_create_default_catalog_and_schema(true);
        let executor = SessionContext::new_with_config(on_executor);
        let table = MemTable::try_new(rows().schema(), vec![vec![rows()]]).unwrap();
        executor
            .register_table("residents", Arc::new(table))
            .unwrap();
        let stage = executor
            .sql("SELECT COUNT(*) FROM residents a JOIN residents b ON a.district = b.district")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let capped = crate::limits::capped(&[stage], &executor.task_ctx()).unwrap();
        let shown = displayable(capped[0].as_ref()).indent(false).to_string();
        assert!(shown.contains("LimitExec: rows=Some(10)"), "{shown}");
        // Capped once, however often it is decoded.
        let again = crate::limits::capped(&capped, &executor.task_ctx()).unwrap();
        let shown_again = displayable(again[0].as_ref()).indent(false).to_string();
        assert_eq!(shown_again.matches("LimitExec").count(), 1, "{shown_again}");
    });
}

#[test]
fn identities_read_back_and_an_authority_read_back_issues_for_the_same_cluster() {
    let authority = ClusterAuthority::generate().unwrap();
    let identity = authority.issue("exec-1").unwrap();
    let text = identity.to_pem();
    assert!(!format!("{identity:?}").contains("PRIVATE"));
    let read = Identity::from_pem(&text).unwrap();
    assert_eq!(read.to_pem(), text);
    // The service keeps the authority as its certificate and key; one read
    // back issues identities that its first certificate verifies.
    let again =
        ClusterAuthority::from_pem(authority.certificate_pem(), &authority.key_pem()).unwrap();
    let later = again.issue("exec-2").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inner = backend.local_addr().unwrap();
        tokio::spawn(crate::tls::serve_front(
            listener,
            inner,
            identity.acceptor().unwrap(),
        ));
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            loop {
                let (mut socket, _) = backend.accept().await.unwrap();
                let _ = socket
                    .write_all(b"HTTP/1.0 200 OK\r\n\r\nready: 2 executors")
                    .await;
            }
        });
        let probe = move |who: Identity| {
            tokio::task::spawn_blocking(move || {
                who.get(&address.to_string(), "/readyz", Duration::from_secs(5), 64)
            })
        };
        let (status, body) = probe(later).await.unwrap().unwrap();
        assert_eq!((status, body.as_str()), (200, "ready: 2 executors"));
        let stranger = ClusterAuthority::generate()
            .unwrap()
            .issue("exec-1")
            .unwrap();
        assert!(probe(stranger).await.unwrap().is_err());
    });
    for wrong in ["", "not pem", authority.certificate_pem()] {
        let refused = Identity::from_pem(wrong).unwrap_err().to_string();
        assert!(refused.contains("unseen cluster"), "{refused}");
    }
}

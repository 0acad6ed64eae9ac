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

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
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
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime
            .block_on(run_scheduler(SchedulerOptions::new(scheduler)))
            .unwrap();
    });
    for executor in &enrolled {
        let options = ExecutorOptions {
            name: executor.name.clone(),
            secret: executor.secret.clone(),
            scheduler,
            bind: free_port(),
            work_dir: dir.path().join(&executor.name),
            slots: 2,
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
        let client = ClusterClient::new(&scheduler.to_string());
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
    });
}

#[test]
fn work_directories_on_disk_are_refused_and_memory_backed_ones_pass() {
    use crate::process::{check_work_dir, memory_backed};
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        assert!(memory_backed(shm).unwrap());
        assert!(check_work_dir(shm, false).unwrap());
    }
    // This crate's sources are in a checkout on disk.
    let disk = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(!memory_backed(disk).unwrap());
    let refused = check_work_dir(disk, false).unwrap_err().to_string();
    assert!(
        refused.contains("tmpfs") && refused.contains("--work-dir-on-disk"),
        "{refused}"
    );
    assert!(!check_work_dir(disk, true).unwrap());
    let missing = memory_backed(&disk.join("no-such-directory")).unwrap_err();
    assert!(
        missing.to_string().contains("no-such-directory"),
        "{missing}"
    );
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
        let client = ClusterClient::new(&free_port().to_string());
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

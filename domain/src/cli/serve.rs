//! `unseen serve`: the HTTP API over a data directory.

use super::*;

pub(super) fn serve(args: ServeArgs, session: &Session, out: &mut dyn Write) -> Result<()> {
    let runtime = session.runtime;
    let file = match &args.config {
        Some(path) => crate::config::ServeConfig::load(path)?,
        None => crate::config::ServeConfig::default(),
    };
    // Flag (or its environment variable), then the file, then the default.
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:8787".into());
    let max_jobs = args.max_jobs.or(file.max_jobs).unwrap_or(4);
    let max_connections = args
        .max_connections
        .map(u64::from)
        .or(file.max_connections)
        .unwrap_or(1024);
    let max_connections_per_client = args
        .max_connections_per_client
        .map(u64::from)
        .or(file.max_connections_per_client)
        .unwrap_or(256);
    let header_timeout = args.header_timeout.or(file.header_timeout).unwrap_or(10);
    let body_timeout = args.body_timeout.or(file.body_timeout).unwrap_or(120);
    let witness_every = args.witness_every.or(file.witness_every).unwrap_or(60);
    let query_memory = args.query_memory.or(file.query_memory).unwrap_or(512 << 20);
    let query_timeout = args
        .query_timeout
        .or(file.query_timeout)
        .unwrap_or(crate::data::DEFAULT_QUERY_SECONDS);
    let max_join_rows = args
        .max_join_rows
        .or(file.max_join_rows)
        .unwrap_or(crate::data::DEFAULT_JOIN_ROWS);
    let grace_period = args
        .grace_period
        .or(file.grace_period)
        .unwrap_or(crate::server::DEFAULT_GRACE_SECONDS);
    let timing_quantum_ms = args
        .timing_quantum_ms
        .or(file.timing_quantum_ms)
        .unwrap_or(500);
    let log_retention_days = args
        .log_retention_days
        .map(u64::from)
        .or(file.log_retention_days)
        .map(|days| u32::try_from(days).unwrap_or(u32::MAX));
    let dir = DataDir {
        data_dir: args.dir.data_dir.or(file.data_dir),
    };
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen `{listen}` is not an address like 127.0.0.1:8787"))?;
    let tls = match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
    ) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(&cert, &key)?),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together; give both or neither"),
    };
    let insecure = args.insecure_listen || file.insecure_listen.unwrap_or(false);
    if tls.is_none() && !addr.ip().is_loopback() && !insecure {
        bail!(
            "refusing to serve tokens and data over plain HTTP on {addr}, which other hosts can reach: give --tls-cert and --tls-key, listen on 127.0.0.1 behind a TLS proxy, or pass --insecure-listen if the network is private (a container's own)"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let witness = match (
        args.witness.or(file.witness_url),
        args.witness_key.or(file.witness_key),
    ) {
        (Some(url), Some(key)) => Some((url, unseen_ledger::witness::WitnessKey::parse(&key)?)),
        (None, None) => None,
        _ => bail!(
            "--witness and --witness-key go together (flags, environment or the configuration file); give both or neither"
        ),
    };
    let engine = args
        .engine
        .or(file.engine)
        .map(|e| {
            crate::cluster_engine::Engine::parse(&e).map_err(|e| anyhow::anyhow!("--engine: {e}"))
        })
        .transpose()?
        .unwrap_or(crate::cluster_engine::Engine::InProcess);
    let domain = open(&dir)?;
    if args.spill_on_disk {
        domain.allow_spill_on_disk();
        tracing::warn!("queries may spill decrypted rows to the data directory's spill/ on disk");
    }
    if let crate::cluster_engine::Engine::Ballista(scheduler) = &engine {
        // The service's own identity for the cluster's mutual TLS, issued
        // afresh at each start and held only in memory.
        let identity = crate::cluster_engine::authority(&domain)?.issue("service")?;
        domain.set_remote_engine(Arc::new(crate::cluster_engine::BallistaEngine::new(
            scheduler, identity,
        )));
        tracing::info!(%scheduler, "queries run on a Ballista cluster");
    }
    // Measured (the executable hashed) before it says it listens, so the
    // first requests do not wait for it; `serve` records it in the ledger.
    crate::attest::running_build()?;
    if let Some((url, key)) = witness {
        runtime.spawn(crate::witness::keep_witnessed(
            Arc::clone(&domain),
            url,
            key,
            std::time::Duration::from_secs(witness_every),
        ));
    }
    domain.set_timing_quantum(std::time::Duration::from_millis(timing_quantum_ms))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        writeln!(out, "listening on {scheme}://{local}")?;
        out.flush()?;
        tracing::info!(%local, "serving the HTTP API");
        let options = crate::server::ServerOptions {
            max_running_jobs: usize::try_from(max_jobs).unwrap_or(usize::MAX),
            limits: crate::conns::ConnectionLimits {
                max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
                max_per_client: usize::try_from(max_connections_per_client).unwrap_or(usize::MAX),
                header_timeout: std::time::Duration::from_secs(header_timeout),
                body_timeout: std::time::Duration::from_secs(body_timeout),
            },
            query: crate::data::QueryLimits {
                memory: query_memory,
                time: std::time::Duration::from_secs(query_timeout),
                join_rows: max_join_rows,
            },
            grace_period: std::time::Duration::from_secs(grace_period),
            tls,
            log_retention_days,
            observe: true,
        };
        crate::server::serve(domain, listener, options, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    })
}

/// `unseen config check FILE`: every mistake at once, or that it is good.
pub(super) fn check_config(file: &Path, json: bool, out: &mut dyn Write) -> Result<()> {
    match crate::config::ServeConfig::load(file) {
        Ok(_) => say(
            out,
            json,
            &json!({"file": file, "ok": true, "mistakes": []}),
            format_args!("{}: no mistakes", file.display()),
        ),
        Err(errors) => {
            if json {
                print_json(
                    out,
                    &json!({"file": file, "ok": false, "mistakes": errors.mistakes}),
                )?;
            }
            Err(errors.into())
        }
    }
}

//! `unseen serve`: the HTTP API over a data directory.

use super::*;

pub(super) fn serve(args: ServeArgs, session: &Session, out: &mut dyn Write) -> Result<()> {
    let runtime = session.runtime;
    let ServeArgs {
        listen,
        max_jobs,
        max_connections,
        max_connections_per_client,
        header_timeout,
        body_timeout,
        witness,
        witness_key,
        witness_every,
        query_memory,
        query_timeout,
        max_join_rows,
        grace_period,
        timing_quantum_ms,
        dir,
    } = args;
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen `{listen}` is not an address like 127.0.0.1:8787"))?;
    let witness = match (witness, witness_key) {
        (Some(url), Some(key)) => Some((url, unseen_ledger::witness::WitnessKey::parse(&key)?)),
        _ => None,
    };
    let domain = open(&dir)?;
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
        writeln!(out, "listening on http://{local}")?;
        out.flush()?;
        tracing::info!(%local, "serving the HTTP API");
        let options = crate::server::ServerOptions {
            max_running_jobs: max_jobs,
            limits: crate::conns::ConnectionLimits {
                max_connections: max_connections as usize,
                max_per_client: max_connections_per_client as usize,
                header_timeout: std::time::Duration::from_secs(header_timeout),
                body_timeout: std::time::Duration::from_secs(body_timeout),
            },
            query: crate::data::QueryLimits {
                memory: query_memory,
                time: std::time::Duration::from_secs(query_timeout),
                join_rows: max_join_rows,
            },
            grace_period: std::time::Duration::from_secs(grace_period),
        };
        crate::server::serve(domain, listener, options, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    })
}

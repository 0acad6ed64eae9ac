//! Witnessing the ledger: `unseen witness serve`, the second party that
//! co-signs checkpoints and refuses forks, and the service side that submits
//! its checkpoints to one (`unseen ledger witness`, `serve --witness`).
//!
//! The decisions and formats are in `unseen_ledger::witness`; this module
//! only carries them over HTTP (C2SP `tlog-witness`: `POST /add-checkpoint`,
//! text bodies) and keeps the co-signed checkpoint next to the ledger, where
//! `unseen ledger verify --witness-key` finds it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use unseen_ledger::witness::{self, AddCheckpoint, WitnessDir, WitnessKey};
use unseen_ledger::{ORIGIN, PublicKey};

use crate::{Domain, DomainError};

/// Largest add-checkpoint request a witness reads.
const REQUEST_LIMIT: usize = 64 * 1024;

/// A witness serving one log.
#[derive(Debug)]
struct Witness {
    dir: Mutex<WitnessDir>,
    log_key: PublicKey,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The witness's routes: `POST /add-checkpoint` (C2SP `tlog-witness`) and
/// `GET /latest`, the latest co-signed checkpoint of the log, for auditors
/// who ask the witness directly rather than trust the operator's copy.
pub fn witness_router(dir: WitnessDir, log_key: PublicKey) -> Router {
    let state = Arc::new(Witness {
        dir: Mutex::new(dir),
        log_key,
    });
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/latest", get(latest))
        .layer(DefaultBodyLimit::max(REQUEST_LIMIT))
        .with_state(state)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: String) -> Response {
    let request = match AddCheckpoint::parse(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let answer = tokio::task::spawn_blocking(move || {
        // One request at a time: the decision and the durable record of the
        // new latest checkpoint must not interleave with another's.
        let dir = witness
            .dir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dir.add_checkpoint(ORIGIN, &witness.log_key, &request, now_unix())
    })
    .await;
    match answer {
        Ok(Ok(Ok(cosignature))) => text(StatusCode::OK, cosignature),
        Ok(Ok(Err(refusal))) => {
            tracing::warn!(refusal = %refusal, "witness refused a checkpoint");
            let status = StatusCode::from_u16(refusal.http_status())
                .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            let body = match refusal {
                // C2SP: the body of a 409 is the witness's size.
                witness::WitnessError::Conflict { known, .. } => format!("{known}\n"),
                other => format!("{other}\n"),
            };
            (status, [("content-type", "text/x.tlog.size")], body).into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "witness storage failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the witness cannot record checkpoints right now; retry later\n".into(),
            )
        }
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the witness stopped while recording; retry later\n".into(),
        ),
    }
}

async fn latest(State(witness): State<Arc<Witness>>) -> Response {
    let found = {
        let dir = witness
            .dir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dir.latest(ORIGIN, &witness.log_key)
    };
    match found {
        Ok(Some((note, _))) => text(StatusCode::OK, note),
        Ok(None) => text(
            StatusCode::NOT_FOUND,
            "this witness has co-signed no checkpoint of the log yet\n".into(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "witness storage failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the witness cannot read its records right now\n".into(),
            )
        }
    }
}

/// What one round of witnessing did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Witnessed {
    /// The witness's name.
    pub witness: String,
    /// The size the witness had co-signed before.
    pub from_size: u64,
    /// The size it co-signed now.
    pub size: u64,
    /// The co-signed checkpoint (log signature and co-signature).
    pub checkpoint: String,
}

fn witness_error(url: &str, reason: impl std::fmt::Display) -> DomainError {
    DomainError::Witness {
        url: url.to_owned(),
        reason: reason.to_string(),
    }
}

/// Submits the ledger's current checkpoint to the witness at `url`
/// (known by `witness`), with a consistency proof from the size the
/// witness last co-signed, and keeps the co-signed checkpoint beside
/// the ledger. A witness that refuses the checkpoint as a fork is an
/// alarm, returned as an error naming it.
pub fn witness_ledger(
    domain: &Domain,
    url: &str,
    witness: &WitnessKey,
) -> Result<Witnessed, DomainError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let endpoint = format!("{}/add-checkpoint", url.trim_end_matches('/'));
    let ledger_dir = domain.dir().join("ledger");
    let known = witness::load_cosigned(&ledger_dir, witness)
        .map_err(|e| witness_error(url, e))?
        .map_or(0, |(_, cp)| cp.size);
    let mut from_size = known;
    // Twice at most: a 409 tells us the witness's real size.
    for _ in 0..2 {
        let (note, proof, size) = domain.ledger_checkpoint_from(from_size)?;
        let request = AddCheckpoint {
            old_size: from_size,
            proof,
            note: note.clone(),
        };
        let mut answer = agent
            .post(&endpoint)
            .header("content-type", "text/plain")
            .send(request.to_text().as_bytes())
            .map_err(|e| witness_error(url, e))?;
        let status = answer.status().as_u16();
        let body = answer
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .map_err(|e| witness_error(url, e))?;
        match status {
            200 => {
                let cosigned = witness::attach(&note, &body);
                let public = domain.ledger_public_key()?;
                witness::open_cosigned(&cosigned, ORIGIN, &public, witness).map_err(|e| {
                    witness_error(
                        url,
                        format!("its answer is not a co-signature by {}: {e}", witness.name),
                    )
                })?;
                witness::save_cosigned(&ledger_dir, witness, &cosigned)
                    .map_err(|e| witness_error(url, e))?;
                return Ok(Witnessed {
                    witness: witness.name.clone(),
                    from_size,
                    size,
                    checkpoint: cosigned,
                });
            }
            409 => {
                from_size = body.trim().parse().map_err(|_| {
                    witness_error(url, format!("409 without a size: {}", body.trim()))
                })?;
            }
            _ => {
                return Err(witness_error(
                    url,
                    format!("refused ({status}): {}", body.trim()),
                ));
            }
        }
    }
    Err(witness_error(
        url,
        "its size keeps changing; is another ledger submitting under this key?",
    ))
}

/// Verifies the ledger of the data directory `data` against the checkpoint
/// the witness named by `vkey` co-signed: read from `witnessed` (a file, or
/// a witness URL whose `/latest` is fetched), else from the copy kept beside
/// the ledger.
pub fn verify_witnessed(
    data: &std::path::Path,
    log_key: &PublicKey,
    vkey: &str,
    witnessed: Option<&str>,
) -> anyhow::Result<witness::WitnessedReport> {
    use anyhow::Context;
    let witness = WitnessKey::parse(vkey)?;
    let ledger_dir = data.join("ledger");
    let note = match witnessed {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            let latest = format!("{}/latest", url.trim_end_matches('/'));
            let mut answer = ureq::get(&latest)
                .call()
                .with_context(|| format!("cannot fetch {latest}"))?;
            answer
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .with_context(|| format!("cannot read {latest}"))?
        }
        Some(file) => crate::cli::read_text(std::path::Path::new(file))?,
        None => witness::load_cosigned(&ledger_dir, &witness)?
            .map(|(note, _)| note)
            .with_context(|| {
                format!(
                    "no checkpoint co-signed by witness `{}` beside the ledger; run `unseen ledger witness` first, or pass --witnessed URL",
                    witness.name
                )
            })?,
    };
    witness::verify_witnessed(&ledger_dir, &note, log_key, &witness)
        .context("ledger verification FAILED against the witness")
}

/// Runs `unseen witness ...`.
pub fn run_command(
    command: crate::cli::WitnessCommand,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    use crate::cli::WitnessCommand;
    use anyhow::Context;
    match command {
        WitnessCommand::Init { dir, name, json } => {
            let witness = WitnessDir::init(&dir, &name)?;
            let vkey = witness.witness_key().to_vkey();
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"witness": name, "verifier_key": vkey, "dir": dir})
                )?;
                return Ok(());
            }
            writeln!(out, "{vkey}")?;
            writeln!(
                out,
                "witness `{name}` created in {}; give the line above to the operator (`unseen ledger witness --witness-key`) and to auditors (`unseen ledger verify --witness-key`)",
                dir.display()
            )?;
            Ok(())
        }
        WitnessCommand::Key { dir, json } => {
            let vkey = WitnessDir::open(&dir)?.witness_key().to_vkey();
            if json {
                writeln!(out, "{}", serde_json::json!({"verifier_key": vkey}))?;
            } else {
                writeln!(out, "{vkey}")?;
            }
            Ok(())
        }
        WitnessCommand::Serve {
            dir,
            log_key,
            listen,
        } => {
            let witness = WitnessDir::open(&dir)?;
            let log_key = PublicKey::load(&log_key).with_context(|| {
                format!("cannot read the ledger's public key {}", log_key.display())
            })?;
            let addr: std::net::SocketAddr = listen.parse().with_context(|| {
                format!("--listen `{listen}` is not an address like 127.0.0.1:8788")
            })?;
            let app = witness_router(witness, log_key);
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                writeln!(
                    out,
                    "witness listening on http://{}",
                    listener.local_addr()?
                )?;
                out.flush()?;
                crate::conns::serve(
                    listener,
                    app,
                    crate::conns::ConnectionLimits::default(),
                    None,
                    crate::cli::shutdown_signal(),
                    // Submissions under way get a few seconds to finish.
                    || tokio::time::sleep(std::time::Duration::from_secs(5)),
                )
                .await?;
                Ok(())
            })
        }
    }
}

/// Submits the ledger's checkpoint to the witness now and then every
/// `every`, for `serve --witness`. A refusal is logged as an error (a fork
/// refused is an alarm for whoever watches the logs); the service goes on.
pub async fn keep_witnessed(
    domain: Arc<Domain>,
    url: String,
    witness: WitnessKey,
    every: Duration,
) {
    let mut last_size = None;
    loop {
        let size = domain.ledger_head().ok().map(|h| h.size);
        if size != last_size {
            let (d, u, w) = (Arc::clone(&domain), url.clone(), witness.clone());
            match tokio::task::spawn_blocking(move || witness_ledger(&d, &u, &w)).await {
                Ok(Ok(done)) => {
                    last_size = Some(done.size);
                    tracing::info!(witness = %done.witness, size = done.size, "checkpoint co-signed");
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the witness did not co-sign the checkpoint")
                }
                Err(e) => tracing::error!(error = %e, "witnessing stopped"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

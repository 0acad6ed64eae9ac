//! Attested builds: which code handled the data.
//!
//! A process measures itself once (the SHA-256 of its executable file) and
//! joins that to what it was built from ([`unseen_build_info`]: git commit,
//! `Cargo.lock` hash, engine versions). The service records the result in
//! the ledger when it starts (`service.started`), every release document and
//! its `release.signed` entry carry it, and [`Domain::attest`] signs a
//! statement of it with the ledger key that anyone holding `ledger.pub` can
//! check offline ([`verify_attestation`]).
//!
//! The measurement is only as good as the machine that takes it: an
//! operator who controls the host can run other code that reports this
//! hash. Binding the data keys to a hardware measurement is the TEE
//! deployment described in `deploy/README.md`.

use std::sync::OnceLock;

use serde_json::json;
use unseen_api::{ATTESTATION_FORMAT, Attestation, AttestationStatement, BuildRecord};
use unseen_ledger::PublicKey;

use crate::util::sha256_hex;
use crate::{Domain, DomainError};

/// The bytes an attestation signature covers (domain-separated from
/// checkpoints and releases).
pub fn attestation_signing_message(statement: &AttestationStatement) -> Vec<u8> {
    let mut message = b"unseen attestation v1\n".to_vec();
    // Field order is the struct's, so the bytes are the same on both sides.
    message.extend_from_slice(&serde_json::to_vec(statement).unwrap_or_default());
    message
}

/// This process's build record, measured on first use.
pub fn running_build() -> Result<BuildRecord, DomainError> {
    static MEASURED: OnceLock<Result<BuildRecord, String>> = OnceLock::new();
    MEASURED
        .get_or_init(measure)
        .clone()
        .map_err(DomainError::Unattested)
}

fn measure() -> Result<BuildRecord, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this process's executable: {e}"))?;
    let binary_sha256 = crate::data::file_sha256(&exe)
        .map_err(|e| format!("cannot read this process's executable: {e}"))?;
    Ok(BuildRecord {
        binary_sha256,
        version: unseen_build_info::VERSION.to_string(),
        git_commit: unseen_build_info::GIT_COMMIT.to_string(),
        cargo_lock_sha256: sha256_hex(unseen_build_info::CARGO_LOCK),
        wasmtime: unseen_build_info::WASMTIME.to_string(),
        datafusion: unseen_build_info::DATAFUSION.to_string(),
        opendp: unseen_build_info::OPENDP.to_string(),
    })
}

/// A caller's challenge: short, and plain enough to echo anywhere.
fn check_nonce(nonce: &str) -> Result<(), DomainError> {
    let plain = nonce
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if nonce.is_empty() || nonce.len() > 64 || !plain {
        return Err(DomainError::OutOfRange {
            what: "the attestation nonce",
            value: format!("{} characters long", nonce.len()),
            expected: "use 1 to 64 letters, digits, `-` or `_`".into(),
        });
    }
    Ok(())
}

impl Domain {
    /// Records in the ledger that the service started with this build
    /// (`service.started`), measuring it first; `how` says what started
    /// (for example `serve`). Once per process.
    pub fn record_start(&self, how: &str) -> Result<u64, DomainError> {
        let build = running_build()?;
        let index = self.record(
            "system",
            "service.started",
            json!({"how": how, "build": build}),
        )?;
        // A second start in one process keeps the first entry.
        let _ = self.started_entry.set(index);
        tracing::info!(
            binary_sha256 = build.binary_sha256,
            git_commit = build.git_commit,
            entry = index,
            "recorded the running build in the ledger"
        );
        Ok(index)
    }

    /// A statement of the running build, signed by the ledger key.
    pub fn attest(&self, nonce: Option<&str>) -> Result<Attestation, DomainError> {
        if let Some(nonce) = nonce {
            check_nonce(nonce)?;
        }
        let statement = AttestationStatement {
            build: running_build()?,
            started_entry: self.started_entry.get().copied(),
            at: self.now_rfc3339(),
            public_key: self.ledger.public_key()?.to_hex(),
            nonce: nonce.map(str::to_string),
        };
        let signature = self.ledger.sign(&attestation_signing_message(&statement))?;
        Ok(Attestation {
            format: ATTESTATION_FORMAT.to_string(),
            statement,
            signature: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                signature,
            ),
        })
    }
}

/// Checks an attestation offline: its format, that the key it names is
/// `key`, and the signature. With `binary`, also that the file hashes to
/// the attested SHA-256; with `nonce`, that the statement echoes it.
pub fn verify_attestation(
    text: &str,
    key: &PublicKey,
    binary: Option<&std::path::Path>,
    nonce: Option<&str>,
) -> Result<Attestation, DomainError> {
    let fail = |detail: String| DomainError::AttestationUnverified(detail);
    let attestation: Attestation = serde_json::from_str(text)
        .map_err(|e| fail(format!("not an attestation ({ATTESTATION_FORMAT}): {e}")))?;
    if attestation.format != ATTESTATION_FORMAT {
        return Err(fail(format!(
            "format `{}` is not {ATTESTATION_FORMAT}",
            attestation.format
        )));
    }
    let statement = &attestation.statement;
    if statement.public_key != key.to_hex() {
        return Err(fail(format!(
            "it names ledger key {}, but the key given is {}",
            statement.public_key,
            key.to_hex()
        )));
    }
    let signature = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &attestation.signature,
    )
    .map_err(|e| fail(format!("the signature is not base64: {e}")))?;
    if !key.verify(&attestation_signing_message(statement), &signature) {
        return Err(fail(
            "the signature does not verify with the ledger's public key: the statement was altered or signed by another key".into(),
        ));
    }
    if let Some(expected) = nonce
        && statement.nonce.as_deref() != Some(expected)
    {
        return Err(fail(format!(
            "the statement answers nonce `{}`, not `{expected}`: it may be a replay",
            statement.nonce.as_deref().unwrap_or("(none)")
        )));
    }
    if let Some(path) = binary {
        let actual = crate::data::file_sha256(path).map_err(|e| fail(e.to_string()))?;
        if actual != statement.build.binary_sha256 {
            return Err(fail(format!(
                "{} hashes to {actual}, but the attested binary is {}",
                path.display(),
                statement.build.binary_sha256
            )));
        }
    }
    Ok(attestation)
}

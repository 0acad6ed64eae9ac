//! Executors enrolled to read data on a cluster (`serve --engine
//! ballista://`). An executor is enrolled under a name with a random 256-bit
//! secret: the operator starts it with that secret, and the service keeps it
//! wrapped by the master key. For each query the cluster engine seals the
//! data keys for the executors enrolled at that moment (see
//! [`crate::data::RemoteEngine`]), so one revoked or enrolled again reads
//! nothing after. Enrolments and revocations are ledger entries that name
//! the executor and its enrolment, never the secret.
//!
//! The service is also the cluster's certificate authority: every member
//! (the service, the scheduler, each executor) talks to the others over
//! mutual TLS with an identity it issued. Its key is kept sealed by the
//! master key and never leaves the service; the ledger records when it was
//! made and every identity issued, by their certificates' SHA-256.

use serde::Serialize;
use serde_json::json;

use crate::records::Change;
use crate::store::cluster::ExecutorRow;
use crate::util::{new_id, random_bytes, sha256_hex};
use crate::{Domain, DomainError, Role, lock, store};

/// An enrolled executor's secret, for sealing data keys to it. Never
/// printed: `Debug` shows the name only.
#[derive(Clone)]
pub struct ExecutorSecret {
    pub name: String,
    pub secret: [u8; 32],
}

impl std::fmt::Debug for ExecutorSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorSecret")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// An executor as admins and auditors see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExecutorView {
    pub name: String,
    pub enrolment: String,
    pub enrolled_at: String,
    pub enrolled_by: String,
    pub revoked_at: Option<String>,
}

/// A new enrolment: the secret to give the executor's operator, once.
#[derive(Clone)]
pub struct Enrolment {
    pub name: String,
    pub enrolment: String,
    pub secret: [u8; 32],
    /// Whether an earlier enrolment of the name was replaced.
    pub replaced: bool,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolment")
            .field("name", &self.name)
            .field("enrolment", &self.enrolment)
            .finish_non_exhaustive()
    }
}

/// The cluster authority as the service keeps it: its certificate, and
/// its private key (PEM), which never leaves the service. `Debug` shows
/// neither.
#[derive(Clone)]
pub struct AuthorityPem {
    pub certificate: String,
    pub key: String,
}

impl std::fmt::Debug for AuthorityPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthorityPem(..)")
    }
}

/// What the master key's AAD is for the authority's key: no dataset name
/// holds a `:`.
const AUTHORITY_LABEL: &str = "cluster:authority";

/// What the master key's AAD is for an executor's secret: no dataset name
/// holds a `:`, so it never opens as a data key, nor a data key as this.
fn secret_label(name: &str, enrolment: &str) -> String {
    format!("executor:{name}:{enrolment}")
}

/// Members of a cluster that are not executors: their identities carry
/// these names, which no executor may take.
const OTHER_MEMBERS: [&str; 2] = ["service", "scheduler"];

fn check_name(name: &str) -> Result<(), DomainError> {
    let ok = !name.is_empty()
        && !OTHER_MEMBERS.contains(&name)
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(DomainError::BadExecutorName {
            name: name.to_string(),
        })
    }
}

impl Domain {
    /// Enrols executor `name` (admins), replacing an earlier enrolment of
    /// the name; returns its new secret.
    pub fn enrol_executor(&self, actor: &str, name: &str) -> Result<Enrolment, DomainError> {
        self.require(actor, Role::Admin, "enrol cluster executors")?;
        check_name(name)?;
        let enrolment = new_id("enr");
        let secret = random_bytes::<32>();
        let row = ExecutorRow {
            name: name.to_string(),
            enrolment: enrolment.clone(),
            wrapped_secret: self.master.wrap(&secret_label(name, &enrolment), &secret),
            enrolled_at: self.now_rfc3339(),
            enrolled_by: actor.to_string(),
            revoked_at: None,
        };
        let (replaced, _) = self.commit_recorded(actor, "cluster.executor_enrolled", |tx| {
            let replaced = store::cluster::enrol(tx, &row)?;
            Ok(Change::Record(
                json!({"executor": name, "enrolment": enrolment, "replaced": replaced}),
                replaced,
            ))
        })?;
        Ok(Enrolment {
            name: name.to_string(),
            enrolment,
            secret,
            replaced,
        })
    }

    /// Revokes executor `name` (admins): from the next query on, no data
    /// key is sealed for it.
    pub fn revoke_executor(&self, actor: &str, name: &str) -> Result<(), DomainError> {
        self.require(actor, Role::Admin, "revoke cluster executors")?;
        let at = self.now_rfc3339();
        self.commit_recorded(actor, "cluster.executor_revoked", |tx| {
            if !store::cluster::revoke(tx, name, &at)? {
                return Err(DomainError::NotFound {
                    what: "enrolled executor",
                    id: name.to_string(),
                    list: "cluster executors",
                });
            }
            Ok(Change::Record(json!({"executor": name}), ()))
        })?;
        Ok(())
    }

    /// Every executor enrolled, revoked ones included (admins, auditors).
    pub fn executors(&self, actor: &str) -> Result<Vec<ExecutorView>, DomainError> {
        self.require_any(
            actor,
            &[Role::Admin, Role::Auditor],
            "list cluster executors",
        )?;
        Ok(store::cluster::all(&lock(&self.db))?
            .into_iter()
            .map(|r| ExecutorView {
                name: r.name,
                enrolment: r.enrolment,
                enrolled_at: r.enrolled_at,
                enrolled_by: r.enrolled_by,
                revoked_at: r.revoked_at,
            })
            .collect())
    }

    /// The cluster's certificate authority, made by `generate` the first
    /// time it is asked for (a `cluster.authority_created` entry naming its
    /// certificate's SHA-256).
    pub fn cluster_authority(
        &self,
        generate: impl FnOnce() -> Result<AuthorityPem, String>,
    ) -> Result<AuthorityPem, DomainError> {
        if let Some(kept) = self.kept_authority()? {
            return Ok(kept);
        }
        let made = generate().map_err(DomainError::Cluster)?;
        let sealed = self.master.seal(AUTHORITY_LABEL, made.key.as_bytes());
        let at = self.now_rfc3339();
        let (kept, _) = self.commit_recorded("system", "cluster.authority_created", |tx| {
            if !store::cluster::keep_authority(tx, &made.certificate, &sealed, &at)? {
                return Ok(Change::Abandon(false));
            }
            Ok(Change::Record(
                json!({"certificate_sha256": sha256_hex(made.certificate.as_bytes())}),
                true,
            ))
        })?;
        if kept {
            return Ok(made);
        }
        // Another request made one first: that one is the cluster's.
        self.kept_authority()?.ok_or_else(|| {
            DomainError::Internal("the cluster authority was kept and is gone".into())
        })
    }

    /// Replaces the cluster's certificate authority with one `generate`
    /// makes (admins; `cluster.authority_replaced` names both
    /// certificates' SHA-256). Every identity the old one issued is refused
    /// from then on: the remedy for an identity that must stop working
    /// before it expires (a revoked executor's, a lost file's). Every
    /// member then needs a new identity, and the service a restart.
    pub fn replace_cluster_authority(
        &self,
        actor: &str,
        generate: impl FnOnce() -> Result<AuthorityPem, String>,
    ) -> Result<(), DomainError> {
        self.require(actor, Role::Admin, "replace the cluster authority")?;
        let previous = self.kept_authority()?;
        let made = generate().map_err(DomainError::Cluster)?;
        let sealed = self.master.seal(AUTHORITY_LABEL, made.key.as_bytes());
        let at = self.now_rfc3339();
        self.commit_recorded(actor, "cluster.authority_replaced", |tx| {
            store::cluster::replace_authority(tx, &made.certificate, &sealed, &at)?;
            Ok(Change::Record(
                json!({
                    "previous_sha256": previous.map(|p| sha256_hex(p.certificate.as_bytes())),
                    "certificate_sha256": sha256_hex(made.certificate.as_bytes()),
                }),
                (),
            ))
        })?;
        Ok(())
    }

    fn kept_authority(&self) -> Result<Option<AuthorityPem>, DomainError> {
        let Some((certificate, sealed)) = store::cluster::authority(&lock(&self.db))? else {
            return Ok(None);
        };
        let key = String::from_utf8(self.master.open(AUTHORITY_LABEL, &sealed)?).map_err(|_| {
            DomainError::Damaged {
                what: "the cluster authority's key".into(),
                detail: "it is not PEM text".into(),
            }
        })?;
        Ok(Some(AuthorityPem { certificate, key }))
    }

    /// Records that `actor` (an admin) issued a cluster identity to
    /// `member`, by its certificate's SHA-256.
    pub fn record_cluster_identity(
        &self,
        actor: &str,
        member: &str,
        certificate: &str,
    ) -> Result<(), DomainError> {
        self.require(actor, Role::Admin, "issue cluster identities")?;
        self.commit_recorded(actor, "cluster.identity_issued", |_| {
            Ok(Change::Record(
                json!({"member": member, "certificate_sha256": sha256_hex(certificate.as_bytes())}),
                (),
            ))
        })?;
        Ok(())
    }

    /// The secrets of the executors enrolled now, for sealing one query's
    /// data keys.
    pub(crate) fn enrolled_secrets(&self) -> Result<Vec<ExecutorSecret>, DomainError> {
        store::cluster::all(&lock(&self.db))?
            .into_iter()
            .filter(|r| r.revoked_at.is_none())
            .map(|r| {
                let secret = self
                    .master
                    .unwrap(&secret_label(&r.name, &r.enrolment), &r.wrapped_secret)?;
                Ok(ExecutorSecret {
                    name: r.name,
                    secret,
                })
            })
            .collect()
    }
}

//! Who may do what: bearer tokens (stored only as SHA-256), user listing
//! and disabling, grant time windows, metered downloads of releases, and
//! crypto-shredding of datasets.

use serde_json::json;
pub use unseen_api::{DatasetView, UserView};

use crate::records::Change;
use crate::store;
use crate::util::{random_bytes, sha256_hex};
use crate::{Domain, DomainError, Role, lock};

/// Prefix that makes a leaked token easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "unseen_";

/// Parses `HH:MM-HH:MM` (UTC) into minutes of the day. A window may wrap
/// past midnight (`22:00-06:00`).
pub fn parse_window(window: &str) -> Result<(u32, u32), DomainError> {
    let bad = || DomainError::BadTimeWindow {
        window: window.to_string(),
    };
    let minutes = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (from, to) = window.split_once('-').ok_or_else(bad)?;
    let (from, to) = (minutes(from).ok_or_else(bad)?, minutes(to).ok_or_else(bad)?);
    if from == to {
        return Err(bad());
    }
    Ok((from, to))
}

/// Whether `now` (RFC 3339 UTC) falls in one of the windows; none means any time.
pub fn check_windows(grant: &str, windows: &[String], now: &str) -> Result<(), DomainError> {
    if windows.is_empty() {
        return Ok(());
    }
    let minute = now
        .get(11..16)
        .and_then(|hm| hm.split_once(':'))
        .and_then(|(h, m)| Some(h.parse::<u32>().ok()? * 60 + m.parse::<u32>().ok()?))
        .unwrap_or(0);
    for w in windows {
        let (from, to) = parse_window(w)?;
        let inside = if from < to {
            (from..to).contains(&minute)
        } else {
            minute >= from || minute < to
        };
        if inside {
            return Ok(());
        }
    }
    Err(DomainError::Grant {
        grant: grant.to_string(),
        reason: format!(
            "may be used only in the windows {} (UTC); it is {} UTC now. Try again inside a window",
            windows.join(", "),
            now.get(11..16).unwrap_or(now)
        ),
    })
}

fn new_token() -> String {
    format!(
        "{TOKEN_PREFIX}{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            random_bytes::<32>()
        )
    )
}

impl Domain {
    /// Issues a fresh bearer token for `user`, replacing any earlier one.
    /// Only its SHA-256 is stored; the token is returned once.
    pub(crate) fn issue_token(&self, actor: &str, user: &str) -> Result<String, DomainError> {
        let token = new_token();
        self.commit_recorded(actor, "user.token_issued", |tx| {
            if !store::access::set_token(
                tx,
                user,
                &sha256_hex(token.as_bytes()),
                &self.now_rfc3339(),
            )? {
                return Err(DomainError::NotFound {
                    what: "user",
                    id: user.to_string(),
                    list: "user list",
                });
            }
            Ok(Change::Record(json!({"user": user}), ()))
        })?;
        Ok(token)
    }

    /// Rotates a user's token: admins for anyone, any user for themselves.
    pub fn rotate_token(&self, actor: &str, user: &str) -> Result<String, DomainError> {
        if actor != user {
            self.require(actor, Role::Admin, "rotate other users' tokens")?;
        } else {
            self.role_of(actor)?;
        }
        self.issue_token(actor, user)
    }

    /// The user a bearer token belongs to, if it is current and the user
    /// is enabled.
    pub fn authenticate(&self, token: &str) -> Result<(String, Role), DomainError> {
        let row = store::access::user_by_token(&lock(&self.db), &sha256_hex(token.as_bytes()))?;
        match row {
            Some((id, role, 0)) => {
                let role = Role::parse(&role).map_err(|detail| DomainError::Damaged {
                    what: format!("the store's record of user `{id}`"),
                    detail,
                })?;
                Ok((id, role))
            }
            Some((id, _, _)) => Err(DomainError::Unauthenticated(format!(
                "user `{id}` is disabled; ask an admin"
            ))),
            None => Err(DomainError::Unauthenticated(
                "the bearer token is unknown or was rotated; ask an admin for a new one".into(),
            )),
        }
    }

    /// All users (admins and auditors).
    pub fn users(&self, actor: &str) -> Result<Vec<UserView>, DomainError> {
        self.require_any(actor, &[Role::Admin, Role::Auditor], "list users")?;
        Ok(store::access::users(&lock(&self.db))?)
    }

    /// Disables a user and voids their token. The last enabled admin cannot
    /// be disabled.
    pub fn disable_user(&self, actor: &str, user: &str, reason: &str) -> Result<(), DomainError> {
        self.require(actor, Role::Admin, "disable users")?;
        let role = match self.role_of(user) {
            Ok(r) => r,
            Err(e @ DomainError::UserDisabled { .. }) => return Err(e),
            Err(e) => return Err(e),
        };
        // One statement under the store's lock: two admins disabling each
        // other at once cannot leave no admin.
        self.commit_recorded(actor, "user.disabled", |tx| {
            if !store::access::disable_user(tx, user)? {
                let user = user.to_string();
                return Err(if role == Role::Admin {
                    DomainError::LastAdmin { user }
                } else {
                    DomainError::UserDisabled { user }
                });
            }
            Ok(Change::Record(json!({"user": user, "reason": reason}), ()))
        })?;
        Ok(())
    }

    /// Registered datasets (any user: names and sizes only).
    pub fn datasets(&self, actor: &str) -> Result<Vec<DatasetView>, DomainError> {
        self.role_of(actor)?;
        Ok(store::access::datasets(&lock(&self.db))?)
    }

    /// Grants: admins, reviewers and auditors see all, a developer those
    /// they are designated on.
    pub fn grants(&self, actor: &str) -> Result<Vec<crate::Grant>, DomainError> {
        let role = self.role_of(actor)?;
        let all = store::grants::all(&lock(&self.db))?;
        if role != Role::Developer {
            return Ok(all);
        }
        let unshown = self.unshown_spends()?;
        Ok(all
            .into_iter()
            .filter(|g| g.designates(actor))
            .map(|mut g| {
                // As `grant_as_seen_by`, with one read of the spends.
                let (epsilon, delta) = unshown.grant(&g.id);
                g.epsilon_spent = (g.epsilon_spent - epsilon).max(0.0);
                g.delta_spent = (g.delta_spent - delta).max(0.0);
                g
            })
            .collect())
    }

    /// One grant, if `actor` may see it: admins, reviewers and auditors any,
    /// a developer those they are designated on (as [`Domain::grants`] lists),
    /// without the spends of their jobs whose end is not shown yet.
    pub fn visible_grant(&self, actor: &str, id: &str) -> Result<crate::Grant, DomainError> {
        let role = self.role_of(actor)?;
        let grant = self.grant(id)?;
        if role == Role::Developer && !grant.designates(actor) {
            return Err(DomainError::Grant {
                reason: format!(
                    "is issued to `{}`, and `{actor}` is not one of its designated users",
                    grant.developer
                ),
                grant: grant.id,
            });
        }
        self.grant_as_seen_by(actor, grant)
    }

    /// Destroys a dataset's data key (crypto-shredding): the encrypted file
    /// becomes unreadable, its grants are revoked and running jobs stopped.
    /// The ledger keeps the record; job metadata and logs are kept.
    pub fn destroy_dataset(
        &self,
        actor: &str,
        name: &str,
        reason: &str,
    ) -> Result<(), DomainError> {
        self.require(actor, Role::Admin, "destroy datasets")?;
        self.destroy_dataset_as(actor, name, reason, true)
    }

    /// Destroys a dataset for `actor`, whose right to was checked (an
    /// admin's, or the service's own when an import's grant has ended, which
    /// revokes nothing: the import's one grant is over already).
    pub(crate) fn destroy_dataset_as(
        &self,
        actor: &str,
        name: &str,
        reason: &str,
        revoke_grants: bool,
    ) -> Result<(), DomainError> {
        if reason.trim().is_empty() {
            return Err(DomainError::ReasonRequired {
                action: "destroying a dataset",
                examples: " (exit, withdrawal, end of grant)",
            });
        }
        let Some((file, destroyed)) = store::access::dataset_file(&lock(&self.db), name)? else {
            return Err(DomainError::NotFound {
                what: "dataset",
                id: name.to_string(),
                list: "dataset list",
            });
        };
        if let Some(at) = destroyed {
            return Err(DomainError::DatasetDestroyed {
                name: name.to_string(),
                at,
            });
        }
        let grants = if revoke_grants {
            store::access::live_grants_covering(&lock(&self.db), name)?
        } else {
            Vec::new()
        };
        for grant in &grants {
            self.revoke_grant(
                actor,
                grant,
                &format!("dataset `{name}` destroyed: {reason}"),
            )?;
        }
        self.commit_recorded(actor, "dataset.destroyed", |tx| {
            if !store::access::destroy_key(tx, name, &self.now_rfc3339())? {
                // Destroyed meanwhile (a revocation's sweep): recorded there.
                return Ok(Change::Abandon(()));
            }
            store::imports::mark_destroyed(tx, name)?;
            store::access::forget_cached_releases(tx, name)?;
            // Removed before the commit, so the entry never claims a
            // deletion that failed (a failure rolls the key's removal
            // back; destroying again finishes the job).
            for path in [
                self.dir.join(&file),
                self.dir.join(format!("data/{name}.prohibited")),
            ] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(DomainError::io(&path, e)),
                }
            }
            Ok(Change::Record(
                json!({"dataset": name, "reason": reason, "grants_revoked": grants, "method": "data key destroyed; encrypted file and value index deleted"}),
                (),
            ))
        })?;
        // secure_delete zeroed the freed pages, and the checkpoint removes
        // the old page images from the WAL, so the wrapped key survives
        // nowhere in the store's files.
        store::access::checkpoint_wal(&lock(&self.db))?;
        lock(&self.indexes).remove(name);
        // Remembered plans hold the engine's table of each dataset, with
        // its data key: none may outlive a destruction.
        self.admitted.forget_all();
        Ok(())
    }

    /// Hands a signed release, as an offline-verifiable bundle, to a
    /// designated user of its grant, within the grant's download limit;
    /// each download is a ledger entry. Over HTTP the response is the
    /// delivery; locally use [`Domain::download_release_into`].
    pub fn download_release(&self, actor: &str, release_id: &str) -> Result<String, DomainError> {
        self.download_release_into(actor, release_id, |_| Ok(()))
    }

    /// Like [`Domain::download_release`], but `deliver` writes the bundle
    /// durably first: the download is counted, recorded and charged only
    /// once it returns Ok, so a failed write leaves the count untouched.
    pub fn download_release_into(
        &self,
        actor: &str,
        release_id: &str,
        deliver: impl FnOnce(&str) -> Result<(), DomainError>,
    ) -> Result<String, DomainError> {
        self.require(actor, Role::Developer, "download releases")?;
        let row = store::access::release_signature_and_grant(&lock(&self.db), release_id)?;
        let Some((_, grant_id)) = row else {
            return Err(DomainError::NotFound {
                what: "release",
                id: release_id.to_string(),
                list: "grant usage",
            });
        };
        let grant = self.grant(&grant_id)?;
        if let Some(at) = &grant.revoked_at {
            return Err(DomainError::Grant {
                grant: grant_id,
                reason: format!("was revoked at {at}; its releases can no longer be downloaded"),
            });
        }
        if !grant.designates(actor) {
            return Err(DomainError::Forbidden {
                actor: actor.to_string(),
                role: "developer".into(),
                action: "download this release",
                needed: "designation on its grant".into(),
            });
        }
        let exhausted = || DomainError::Grant {
            grant: grant_id.clone(),
            reason: format!(
                "has used all {} of its downloads; ask the data provider for more",
                grant.max_downloads.unwrap_or(0)
            ),
        };
        if grant.max_downloads.is_some_and(|m| grant.downloads >= m) {
            return Err(exhausted());
        }
        let bundle = self.release_bundle(release_id)?;
        self.commit_recorded(actor, "release.downloaded", |tx| {
            if !store::access::count_download(tx, &grant_id)? {
                return Err(exhausted());
            }
            store::access::insert_download(tx, release_id, actor, &self.now_rfc3339())?;
            let downloads = store::access::downloads(tx, &grant_id)?;
            // Delivered inside the transaction: a failed write rolls the
            // count back, and a concurrent download cannot take the last
            // place meanwhile.
            deliver(&bundle)?;
            Ok(Change::Record(
                json!({"release": release_id, "grant": grant_id, "downloads": downloads, "max_downloads": grant.max_downloads}),
                (),
            ))
        })?;
        Ok(bundle)
    }

    /// Releases a job of `submitter` may read, as `(table name, table)`;
    /// see [`Domain::reusable_releases`].
    pub(crate) fn release_inputs(
        &self,
        submitter: &str,
        release_ids: &[String],
    ) -> Result<Vec<(String, udf_sdk::Table)>, DomainError> {
        self.reusable_releases(submitter, release_ids)?
            .into_iter()
            .map(|(name, output_id)| Ok((name, self.output(&output_id)?.2)))
            .collect()
    }

    /// The table name and output of each release a job of `submitter` may
    /// read: each must come from a grant that allows derived reuse, is not
    /// revoked, and designates the submitter (who could download it).
    pub(crate) fn reusable_releases(
        &self,
        submitter: &str,
        release_ids: &[String],
    ) -> Result<Vec<(String, String)>, DomainError> {
        let mut inputs = Vec::with_capacity(release_ids.len());
        for release_id in release_ids {
            let row = store::access::release_output_and_grant(&lock(&self.db), release_id)?;
            let Some((output_id, grant_id)) = row else {
                return Err(DomainError::NotFound {
                    what: "release",
                    id: release_id.clone(),
                    list: "grant usage",
                });
            };
            let grant = self.grant(&grant_id)?;
            let refuse = |reason: String| DomainError::Grant {
                grant: grant_id.clone(),
                reason,
            };
            if !grant.derived_reuse {
                return Err(refuse(format!(
                    "does not allow its releases to be reused in later jobs, so release `{release_id}` cannot be an input; ask the data provider for derived reuse"
                )));
            }
            if let Some(at) = &grant.revoked_at {
                return Err(refuse(format!(
                    "was revoked at {at}; its releases can no longer be reused"
                )));
            }
            if !grant.designates(submitter) {
                return Err(DomainError::Forbidden {
                    actor: submitter.to_string(),
                    role: "developer".into(),
                    action: "reuse this release",
                    needed: "designation on its grant".into(),
                });
            }
            inputs.push((
                format!("release_{}", release_id.replace('-', "_")),
                output_id,
            ));
        }
        Ok(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_wrap_midnight() {
        assert_eq!(parse_window("08:00-18:30").unwrap(), (480, 1110));
        for bad in ["8-18", "25:00-01:00", "08:00", "08:00-08:00", "aa:bb-cc:dd"] {
            let e = parse_window(bad).unwrap_err().to_string();
            assert!(e.contains("HH:MM-HH:MM"), "{bad}: {e}");
        }
        let day = vec!["08:00-18:00".to_string()];
        assert!(check_windows("g", &day, "2026-11-23T09:15:00Z").is_ok());
        let e = check_windows("g", &day, "2026-11-23T19:00:00Z").unwrap_err();
        assert!(e.to_string().contains("19:00 UTC"), "{e}");
        let night = vec!["22:00-06:00".to_string()];
        assert!(check_windows("g", &night, "2026-11-23T23:30:00Z").is_ok());
        assert!(check_windows("g", &night, "2026-11-23T05:59:00Z").is_ok());
        assert!(check_windows("g", &night, "2026-11-23T06:00:00Z").is_err());
        assert!(check_windows("g", &[], "2026-11-23T06:00:00Z").is_ok());
    }

    #[test]
    fn tokens_are_prefixed_and_random() {
        let (a, b) = (new_token(), new_token());
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
        assert_ne!(a, b);
    }
}

//! `unseen cluster`: the scheduler and executors of the cluster engine, and
//! the executors enrolled to read data.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

use unseen_cluster::process::{ExecutorOptions, SchedulerOptions, run_executor, run_scheduler};
use unseen_cluster::seal::ExecutorSecret;

use super::*;

pub(super) fn run(command: ClusterCommand, session: &Session, out: &mut dyn Write) -> Result<()> {
    match command {
        ClusterCommand::Enrol {
            name,
            secret_file,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = session.open_as(&dir, actor)?;
            // The file first: an enrolment whose secret could not be kept
            // would leave an executor no one can start.
            let mut file = create_private(&secret_file, "secret file")?;
            let made = domain
                .require(&actor, unseen_core::Role::Admin, "enrol cluster executors")
                .map_err(anyhow::Error::from)
                .and_then(|()| crate::cluster_engine::authority(&domain))
                .and_then(|authority| Ok(authority.issue(&name)?))
                .and_then(|identity| Ok((identity, domain.enrol_executor(&actor, &name)?)))
                .and_then(|(identity, enrolment)| {
                    file.write_all(
                        crate::cluster_engine::secret_file_text(
                            &ExecutorSecret::from_bytes(enrolment.secret),
                            &identity,
                        )
                        .as_bytes(),
                    )?;
                    file.sync_all()?;
                    Ok((identity, enrolment))
                });
            let (identity, enrolment) = kept_or_removed(made, &secret_file)?;
            domain.record_cluster_identity(&actor, &name, identity.certificate_pem())?;
            let replaced = if enrolment.replaced {
                "; its earlier secret no longer opens anything"
            } else {
                ""
            };
            say(
                out,
                json,
                &json!({"executor": name, "enrolment": enrolment.enrolment, "replaced": enrolment.replaced, "secret_file": secret_file}),
                format_args!(
                    "enrolled executor `{name}` ({}){replaced}; start it with --secret-file {}",
                    enrolment.enrolment,
                    secret_file.display()
                ),
            )
        }
        ClusterCommand::Revoke {
            name,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = session.open_as(&dir, actor)?;
            domain.revoke_executor(&actor, &name)?;
            say(
                out,
                json,
                &json!({"executor": name, "revoked": true}),
                format_args!(
                    "revoked executor `{name}`; no query seals a data key for it from now on"
                ),
            )
        }
        ClusterCommand::Executors { actor, json, dir } => {
            let (domain, actor) = session.open_as(&dir, actor)?;
            let executors = domain.executors(&actor)?;
            if json {
                return print_json(out, &json!({ "executors": executors }));
            }
            let rows = executors
                .iter()
                .map(|e| {
                    vec![
                        e.name.clone(),
                        e.enrolment.clone(),
                        e.enrolled_at.clone(),
                        e.enrolled_by.clone(),
                        e.revoked_at
                            .as_ref()
                            .map_or_else(|| "enrolled".into(), |at| format!("revoked {at}")),
                    ]
                })
                .collect();
            write_table(
                out,
                &["EXECUTOR", "ENROLMENT", "ENROLLED", "BY", "STATE"],
                &[],
                rows,
            )
        }
        ClusterCommand::SchedulerIdentity {
            file: path,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = session.open_as(&dir, actor)?;
            domain.require(&actor, unseen_core::Role::Admin, "issue cluster identities")?;
            let mut file = create_private(&path, "identity file")?;
            let issued = crate::cluster_engine::authority(&domain)
                .and_then(|authority| Ok(authority.issue("scheduler")?))
                .and_then(|identity| {
                    file.write_all(identity.to_pem().as_bytes())?;
                    file.sync_all()?;
                    Ok(identity)
                });
            let identity = kept_or_removed(issued, &path)?;
            domain.record_cluster_identity(&actor, "scheduler", identity.certificate_pem())?;
            say(
                out,
                json,
                &json!({"member": "scheduler", "identity_file": path}),
                format_args!(
                    "wrote the scheduler's cluster identity; start it with --identity-file {}",
                    path.display()
                ),
            )
        }
        ClusterCommand::NewAuthority { actor, json, dir } => {
            let (domain, actor) = session.open_as(&dir, actor)?;
            domain.replace_cluster_authority(&actor, crate::cluster_engine::new_authority)?;
            say(
                out,
                json,
                &json!({"replaced": true}),
                format_args!(
                    "replaced the cluster authority: every identity the old one issued is refused from now on; issue the scheduler's again (`unseen cluster scheduler-identity`), enrol every executor again (`unseen cluster enrol`), and restart the service"
                ),
            )
        }
        ClusterCommand::Scheduler {
            listen,
            identity_file,
            executor_timeout,
        } => {
            let text = read_private(&identity_file, "identity file")?;
            let identity = unseen_cluster::tls::Identity::from_pem(&text)?;
            let mut options = SchedulerOptions::new(listen, identity);
            options.executor_timeout = std::time::Duration::from_secs(executor_timeout);
            writeln!(out, "scheduler listening on {listen}")?;
            out.flush()?;
            session.runtime.block_on(async {
                tokio::select! {
                    served = run_scheduler(options) => served.map_err(anyhow::Error::from),
                    () = shutdown_signal() => Ok(()),
                }
            })
        }
        ClusterCommand::Executor {
            name,
            secret_file,
            scheduler,
            listen,
            work_dir,
            work_dir_on_disk,
            slots,
            memory,
        } => {
            let (secret, identity) = crate::cluster_engine::read_secret_file_text(&read_private(
                &secret_file,
                "secret file",
            )?)
            .with_context(|| format!("the secret file {}", secret_file.display()))?;
            let existed = work_dir.exists();
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&work_dir)
                .with_context(|| {
                    format!("cannot create the work directory {}", work_dir.display())
                })?;
            // Shuffle files hold intermediate rows: for the executor's user alone.
            std::fs::set_permissions(&work_dir, std::fs::Permissions::from_mode(0o700))?;
            let in_memory = match check_work_dir(&work_dir, work_dir_on_disk) {
                Ok(in_memory) => in_memory,
                Err(e) => {
                    if !existed {
                        let _ = std::fs::remove_dir(&work_dir);
                    }
                    return Err(e);
                }
            };
            if !in_memory {
                tracing::warn!(
                    work_dir = %work_dir.display(),
                    "the work directory is on disk: shuffle files and spills there hold decrypted rows"
                );
            }
            let options = ExecutorOptions {
                name: name.clone(),
                secret,
                scheduler,
                bind: listen,
                work_dir,
                slots: slots
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                identity,
                memory: memory.map(|bytes| bytes as u64),
            };
            // A scheduler that refuses this executor's identity would only
            // make Ballista retry for half a minute and then fail without
            // saying why; one that is not up yet is waited for.
            let probe = options.identity.get(
                &scheduler.to_string(),
                "/readyz",
                std::time::Duration::from_secs(5),
                64,
            );
            if let Err(refused @ unseen_cluster::ClusterError::IdentityRefused { .. }) = probe {
                return Err(refused.into());
            }
            writeln!(
                out,
                "executor `{name}` serving on {listen}, scheduler {scheduler}"
            )?;
            out.flush()?;
            session
                .runtime
                .block_on(run_executor(options))
                .map_err(anyhow::Error::from)
        }
    }
}

/// Refuses an executor's work directory on disk unless `on_disk_allowed`
/// (`--work-dir-on-disk`, for an encrypted disk): decrypted rows leave an
/// executor's memory only there (shuffle files, and spills, which Ballista
/// puts in the same directory). Says whether the directory is
/// memory-backed.
fn check_work_dir(dir: &Path, on_disk_allowed: bool) -> Result<bool> {
    let in_memory = unseen_core::util::memory_backed(dir)?;
    if !in_memory && !on_disk_allowed {
        bail!(
            "the work directory {} is on disk, and an executor's shuffle files and spills there hold decrypted rows, which must stay in memory: put it on a memory-backed file system (tmpfs, for example under /dev/shm), or pass --work-dir-on-disk if that disk is encrypted",
            dir.display()
        );
    }
    Ok(in_memory)
}

/// `made`, or its error once the file at `path` made for it is removed:
/// a failed command leaves no file an executor or scheduler could be
/// started with.
fn kept_or_removed<T>(made: Result<T>, path: &Path) -> Result<T> {
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// A new owner-only file at `path`, which must not exist yet.
fn create_private(path: &Path, what: &str) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create the {what} {} (it must not exist yet)",
                path.display()
            )
        })
}

/// The text of a secret or identity file, which must be its owner's alone.
fn read_private(path: &Path, what: &str) -> Result<String> {
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the {what} {} has mode {mode:03o}: others may read it; run `chmod 600 {}` (and issue it again if anyone did)",
            path.display(),
            path.display()
        );
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))
}

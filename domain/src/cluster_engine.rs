//! The cluster engine as the service sees it (`serve --engine
//! ballista://HOST:PORT`): the core's [`RemoteEngine`] over
//! `unseen-cluster`'s client.

use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::TableProvider;
use datafusion::execution::context::SessionState;
use unseen_cluster::client::ClusterClient;
use unseen_cluster::seal::{Enrolled, ExecutorSecret};
use unseen_cluster::tls::{ClusterAuthority, Identity};
use unseen_core::Domain;
use unseen_core::cluster::{AuthorityPem, ExecutorSecret as EnrolledSecret};
use unseen_core::data::RemoteEngine;

/// The cluster authority of `domain`'s service, made (and recorded in the
/// ledger) the first time it is needed.
pub fn authority(domain: &Domain) -> anyhow::Result<ClusterAuthority> {
    let kept = domain.cluster_authority(new_authority)?;
    Ok(ClusterAuthority::from_pem(&kept.certificate, &kept.key)?)
}

/// A new cluster authority, as the service keeps it.
pub fn new_authority() -> Result<AuthorityPem, String> {
    let made = ClusterAuthority::generate().map_err(|e| e.to_string())?;
    Ok(AuthorityPem {
        certificate: made.certificate_pem().to_string(),
        key: made.key_pem(),
    })
}

/// Where a service runs its queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// DataFusion in the service's own process.
    InProcess,
    /// A Ballista cluster, by its scheduler's `HOST:PORT`.
    Ballista(String),
}

impl Engine {
    /// Reads `datafusion` or `ballista://HOST:PORT`.
    pub fn parse(text: &str) -> Result<Engine, String> {
        if text == "datafusion" {
            return Ok(Engine::InProcess);
        }
        match text.strip_prefix("ballista://") {
            Some(address)
                if !address.is_empty()
                    && address.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                    }) =>
            {
                Ok(Engine::Ballista(address.to_string()))
            }
            _ => Err(format!(
                "`{text}` is not an engine: use `datafusion` (in this process) or `ballista://HOST:PORT` (a cluster's scheduler)"
            )),
        }
    }
}

/// A Ballista cluster behind the core's engine hook.
#[derive(Debug)]
pub struct BallistaEngine {
    scheduler: String,
    client: ClusterClient,
}

impl BallistaEngine {
    /// The cluster whose scheduler is at `scheduler` (`HOST:PORT`),
    /// reached with the service's `identity` from the cluster authority.
    pub fn new(scheduler: &str, identity: Identity) -> BallistaEngine {
        BallistaEngine {
            scheduler: scheduler.to_string(),
            client: ClusterClient::new(scheduler, identity),
        }
    }

    /// Whether the cluster can run a query now: its scheduler answers, and
    /// says at least one executor is alive (`GET /readyz`). Asked before a
    /// session is made, so a query on a cluster that is down, or has no
    /// executor left, is refused before anything is charged rather than
    /// released as noise over defaults. Whether the cluster is up says
    /// nothing of the data.
    fn ready(&self) -> Result<(), String> {
        let (ready, said) = readyz(self.client.identity(), &self.scheduler).map_err(|e| {
            if let unseen_cluster::ClusterError::IdentityRefused { .. } = e {
                return format!("{e}; nothing was run or charged");
            }
            format!(
                "the cluster's scheduler at {} does not answer ({e}); nothing was run or charged: start the scheduler, or serve with --engine datafusion",
                self.scheduler
            )
        })?;
        if ready {
            return Ok(());
        }
        Err(format!(
            "the cluster at {} has no executor alive to run the query (its scheduler says: {}); nothing was run or charged: start an enrolled executor (`unseen cluster executor`), or serve with --engine datafusion",
            self.scheduler,
            said.trim()
        ))
    }
}

/// What the scheduler at `scheduler` says of itself (`GET /readyz`, over
/// the cluster's mutual TLS as `identity`): whether it counts enough live
/// executors to run a query, and its words (at most 1 KiB of them), within
/// [`SCHEDULER_TIMEOUT`].
fn readyz(
    identity: &Identity,
    scheduler: &str,
) -> Result<(bool, String), unseen_cluster::ClusterError> {
    let (status, said) = identity.get(scheduler, "/readyz", SCHEDULER_TIMEOUT, 1024)?;
    Ok((status == 200, said))
}

/// How long a query waits for the scheduler to say whether it is ready.
const SCHEDULER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl RemoteEngine for BallistaEngine {
    fn distribute(&self, state: SessionState) -> Result<SessionState, String> {
        // The probe blocks (up to SCHEDULER_TIMEOUT): on a worker of a
        // multi-threaded runtime, tell it so, and its other tasks move on.
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_worker {
            tokio::task::block_in_place(|| self.ready())?;
        } else {
            self.ready()?;
        }
        self.client.distribute(state).map_err(|e| e.to_string())
    }

    fn table(
        &self,
        dataset: &str,
        path: &Path,
        key: &[u8; 32],
        columns: Option<&[String]>,
        executors: &[EnrolledSecret],
    ) -> Result<Arc<dyn TableProvider>, String> {
        let enrolled: Vec<Enrolled> = executors
            .iter()
            .map(|e| Enrolled {
                name: e.name.clone(),
                secret: ExecutorSecret::from_bytes(e.secret),
            })
            .collect();
        self.client
            .table(dataset, path, key, columns, &enrolled)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_parse_and_mistakes_say_what_to_write() {
        assert_eq!(Engine::parse("datafusion"), Ok(Engine::InProcess));
        assert_eq!(
            Engine::parse("ballista://127.0.0.1:50050"),
            Ok(Engine::Ballista("127.0.0.1:50050".into()))
        );
        for bad in [
            "spark",
            "ballista://",
            "ballista://host",
            "ballista://:1",
            "ballista://h:0",
        ] {
            let e = Engine::parse(bad).unwrap_err();
            assert!(e.contains("ballista://HOST:PORT"), "{bad}: {e}");
        }
    }
}

/// The members of a local cluster, by the files their operators have.
#[derive(Debug)]
pub struct Members<'a> {
    /// The scheduler's identity file.
    pub scheduler: &'a Path,
    /// Each executor's name and secret file.
    pub executors: &'a [(String, std::path::PathBuf)],
    /// What the service shows them.
    pub service: Identity,
}

/// A scheduler and executors on loopback, each a process of `program`
/// (`unseen cluster scheduler|executor`), for the demo and `unseen bench
/// cluster`; stopped when dropped.
#[derive(Debug)]
pub struct LocalCluster {
    pub scheduler: std::net::SocketAddr,
    /// Where each process's log goes (`NAME.log`).
    dir: std::path::PathBuf,
    /// Where the executors' work directories are (`NAME-work`): on
    /// /dev/shm, memory-backed, where the machine has it.
    work: WorkRoot,
    /// Each process, by name (`scheduler`, or the executor's).
    processes: Vec<(String, std::process::Child)>,
    /// What the service shows the cluster.
    service: Identity,
}

impl LocalCluster {
    /// Starts a scheduler and one executor per entry of `executors`, each
    /// with an identity from `authority`; their secrets and identities are
    /// written to owner-only files under `dir` (with each process's log,
    /// `NAME.log`; work directories are on /dev/shm, see
    /// [`LocalCluster::work_dir`]); returns once every process said it
    /// serves and the scheduler counts every executor alive.
    pub fn start(
        program: &Path,
        dir: &Path,
        authority: &ClusterAuthority,
        executors: &[EnrolledSecret],
        slots: usize,
    ) -> anyhow::Result<LocalCluster> {
        let launch = |args: &[String]| {
            let mut command = std::process::Command::new(program);
            command.args(args);
            command
        };
        LocalCluster::start_with(&launch, dir, authority, executors, slots)
    }

    /// [`LocalCluster::start`], each process made by `launch` from the
    /// arguments of `unseen` it runs (a test runs them through its own
    /// binary).
    pub fn start_with(
        launch: &dyn Fn(&[String]) -> std::process::Command,
        dir: &Path,
        authority: &ClusterAuthority,
        executors: &[EnrolledSecret],
        slots: usize,
    ) -> anyhow::Result<LocalCluster> {
        let identity_file = dir.join("scheduler.identity");
        unseen_core::util::write_private(
            &identity_file,
            authority.issue("scheduler")?.to_pem().as_bytes(),
        )?;
        let mut secret_files = Vec::new();
        for executor in executors {
            let secret_file = dir.join(format!("{}.secret", executor.name));
            unseen_core::util::write_private(
                &secret_file,
                secret_file_text(
                    &ExecutorSecret::from_bytes(executor.secret),
                    &authority.issue(&executor.name)?,
                )
                .as_bytes(),
            )?;
            secret_files.push((executor.name.clone(), secret_file));
        }
        let members = Members {
            scheduler: &identity_file,
            executors: &secret_files,
            service: authority.issue("service")?,
        };
        LocalCluster::start_members(launch, dir, members, slots)
    }

    /// A scheduler and executors started from the files an operator has
    /// (`cluster scheduler-identity`, `cluster enrol`), each process made
    /// by `launch`; the service reaches them as `members.service`. Returns
    /// once every process said it serves and the scheduler counts every
    /// executor alive.
    pub fn start_members(
        launch: &dyn Fn(&[String]) -> std::process::Command,
        dir: &Path,
        members: Members<'_>,
        slots: usize,
    ) -> anyhow::Result<LocalCluster> {
        let scheduler = free_loopback_port()?;
        let mut cluster = LocalCluster {
            scheduler,
            dir: dir.to_path_buf(),
            work: WorkRoot::new(dir)?,
            processes: Vec::new(),
            service: members.service,
        };
        cluster.spawn(
            launch,
            "scheduler",
            &[
                "cluster".into(),
                "scheduler".into(),
                "--listen".into(),
                scheduler.to_string(),
                "--identity-file".into(),
                path_text(members.scheduler)?,
                "--executor-timeout".into(),
                "5".into(),
            ],
            "scheduler listening",
        )?;
        for (name, secret_file) in members.executors {
            let work_dir = cluster.work_dir(name);
            let mut args: Vec<String> = vec![
                "cluster".into(),
                "executor".into(),
                "--name".into(),
                name.clone(),
                "--secret-file".into(),
                path_text(secret_file)?,
                "--scheduler".into(),
                scheduler.to_string(),
                "--listen".into(),
                free_loopback_port()?.to_string(),
                "--work-dir".into(),
                path_text(&work_dir)?,
                "--slots".into(),
                slots.to_string(),
            ];
            if let WorkRoot::Disk(_) = cluster.work {
                args.push("--work-dir-on-disk".into());
            }
            cluster.spawn(launch, name, &args, "serving on")?;
        }
        if !members.executors.is_empty() {
            cluster.wait_until_ready(members.executors.len())?;
        }
        Ok(cluster)
    }

    /// What the scheduler at this cluster says of itself (`/readyz`).
    pub fn readiness(&self) -> anyhow::Result<String> {
        Ok(readyz(&self.service, &self.scheduler.to_string())?.1)
    }

    /// Waits until the scheduler counts `executors` alive (each registers
    /// with its first poll for work).
    fn wait_until_ready(&self, executors: usize) -> anyhow::Result<()> {
        let scheduler = self.scheduler.to_string();
        let expected = format!("ready: {executors} executors");
        let mut said = String::new();
        for _ in 0..300 {
            if let Ok((_, now)) = readyz(&self.service, &scheduler) {
                said = now;
                if said.starts_with(&expected) {
                    return Ok(());
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        anyhow::bail!(
            "the local cluster's executors did not all register within 30 s (its scheduler says: {})",
            said.trim()
        )
    }

    /// Executor `name`'s work directory.
    pub fn work_dir(&self, name: &str) -> std::path::PathBuf {
        let root = match &self.work {
            WorkRoot::Memory(dir) => dir.path(),
            WorkRoot::Disk(dir) => dir.as_path(),
        };
        root.join(format!("{name}-work"))
    }

    /// This cluster as a service's engine.
    pub fn engine(&self) -> Arc<BallistaEngine> {
        Arc::new(BallistaEngine::new(
            &self.scheduler.to_string(),
            self.service.clone(),
        ))
    }

    /// The way to this cluster's scheduler, as the service reaches it.
    pub fn scheduler_link(&self) -> unseen_cluster::cancel::SchedulerLink {
        unseen_cluster::cancel::SchedulerLink::new(&self.scheduler.to_string(), &self.service)
    }

    /// Stops process `name` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, name: &str) {
        for (_, child) in self.processes.iter_mut().filter(|(n, _)| n == name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(
        &mut self,
        launch: &dyn Fn(&[String]) -> std::process::Command,
        name: &str,
        args: &[String],
        ready: &str,
    ) -> anyhow::Result<()> {
        use std::io::BufRead as _;
        let log = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", log.display()))?;
        let mut child = launch(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start `unseen {}`: {e}", args.join(" ")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        self.processes.push((name.to_string(), child));
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains(ready) => break,
                Some(Ok(_)) => {}
                _ => anyhow::bail!("`unseen {}` stopped before it was ready", args.join(" ")),
            }
        }
        // Keep reading, so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where a local cluster's executors keep their work directories.
#[derive(Debug)]
enum WorkRoot {
    /// A directory of its own on /dev/shm, removed with the cluster.
    Memory(tempfile::TempDir),
    /// The cluster's directory, on a machine without a memory-backed
    /// /dev/shm (the executors are then started with --work-dir-on-disk).
    Disk(std::path::PathBuf),
}

impl WorkRoot {
    fn new(dir: &Path) -> anyhow::Result<WorkRoot> {
        if let Some(root) = unseen_core::util::shm_dir("unseen-cluster-") {
            return Ok(WorkRoot::Memory(root));
        }
        tracing::warn!(
            "no memory-backed /dev/shm: the local cluster's executors keep shuffle files on disk, in {}",
            dir.display()
        );
        Ok(WorkRoot::Disk(dir.to_path_buf()))
    }
}

/// What an executor's secret file holds: its secret (64 hex digits) on the
/// first line, then its cluster identity (PEM).
pub fn secret_file_text(secret: &ExecutorSecret, identity: &Identity) -> String {
    format!("{}\n{}", secret.to_hex(), identity.to_pem())
}

/// Reads what [`secret_file_text`] wrote.
pub fn read_secret_file_text(text: &str) -> anyhow::Result<(ExecutorSecret, Identity)> {
    let (secret, identity) = text.trim_start().split_once('\n').unwrap_or((text, ""));
    let secret = ExecutorSecret::from_hex(secret)?;
    if !identity.contains("-----BEGIN") {
        anyhow::bail!(
            "the secret file holds no cluster identity (it was written before the cluster's members used mutual TLS): enrol the executor again with `unseen cluster enrol`"
        );
    }
    Ok((secret, Identity::from_pem(identity)?))
}

fn free_loopback_port() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn path_text(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", path.display()))
}

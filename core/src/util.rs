//! Small helpers: time stamps, identifiers, hashing, private files.

use std::io::Write;
use std::path::Path;

use ring::rand::SecureRandom;

/// Formats seconds since the Unix epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Seconds since the Unix epoch of a UTC time as [`rfc3339`] writes it
/// (`YYYY-MM-DDTHH:MM:SSZ`), or `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    // Days-from-civil (Howard Hinnant's algorithm), the inverse of `rfc3339`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// Fresh random bytes from the system's secure generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random generator is available");
    buf
}

/// A new identifier like `job-3f9a1c2e7b`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(random_bytes::<5>()))
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Writes a file readable only by its owner, durably (temp file, fsync, rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = create_private(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(parent_dir(path))
}

/// Creates (or truncates) a file with mode 0600, set explicitly so the
/// umask cannot loosen or tighten it.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// The directory a file path lives in; `.` for a bare file name (whose
/// `parent()` is empty).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Makes `path` a directory only its owner can enter: created with mode
/// 0700 if missing (set explicitly, whatever the umask), refused if it
/// exists and its group or others have any access.
pub fn private_dir(path: &Path) -> Result<(), crate::DomainError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e| crate::DomainError::io(path, e);
    if path.exists() {
        return check_private(path);
    }
    std::fs::create_dir_all(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// Whether `dir` is on a memory-backed file system (tmpfs or ramfs), whose
/// files never reach a disk except through swap: where decrypted rows may
/// be set aside (spills, shuffle files).
pub fn memory_backed(dir: &Path) -> Result<bool, crate::DomainError> {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    let stat = rustix::fs::statfs(dir)
        .map_err(|e| crate::DomainError::io(dir, std::io::Error::from(e)))?;
    // `f_type`'s integer type differs between platforms; magic numbers are
    // 32-bit.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    let kind = (stat.f_type as i64 as u64) & 0xffff_ffff;
    Ok(kind == TMPFS_MAGIC || kind == RAMFS_MAGIC)
}

/// A new owner-only directory under /dev/shm (memory-backed), named
/// `PREFIX<pid>-<random>`, for decrypted rows set aside; first removes the
/// directories of that prefix whose process is gone (killed before it
/// could remove its own). `None` where /dev/shm is missing or on disk.
pub fn shm_dir(prefix: &str) -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() || !memory_backed(shm).unwrap_or(false) {
        return None;
    }
    remove_orphan_dirs(shm, prefix);
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir_in(shm)
        .ok()
}

/// Removes the directories in `parent` named `PREFIX<pid>-...` whose
/// process no longer runs.
pub fn remove_orphan_dirs(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Refuses a file or directory that its group or others may access: the
/// data directory holds keys and quarantined outputs, so only the account
/// that runs the service may read it.
pub fn check_private(path: &Path) -> Result<(), crate::DomainError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| crate::DomainError::io(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        let fix = if path.is_dir() { "700" } else { "600" };
        return Err(crate::DomainError::Exposed {
            path: path.display().to_string(),
            mode: mode & 0o777,
            fix,
        });
    }
    Ok(())
}

/// Where a download goes, made ready before anything is counted: a
/// private temporary file next to the target (so the final rename stays on
/// one file system), committed by writing, fsyncing and renaming.
#[derive(Debug)]
pub struct Destination {
    target: std::path::PathBuf,
    temp: tempfile::NamedTempFile,
    replace: bool,
}

impl Destination {
    /// Checks that `target` can be written: not a directory, not an
    /// existing file unless `replace`, and its directory writable.
    pub fn prepare(target: &Path, replace: bool) -> Result<Destination, String> {
        use std::os::unix::fs::PermissionsExt;
        if target.is_dir() {
            return Err(format!(
                "{} is a directory; give a file name, like {}/release.json",
                target.display(),
                target.display()
            ));
        }
        if target.exists() && !replace {
            return Err(format!(
                "{} already exists; choose another name, or pass --force to replace it",
                target.display()
            ));
        }
        let dir = parent_dir(target);
        let temp = tempfile::Builder::new()
            .prefix(".unseen-download-")
            .tempfile_in(dir)
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        Ok(Destination {
            target: target.to_path_buf(),
            temp,
            replace,
        })
    }

    /// Writes `bytes` durably at the target; on error nothing is left behind.
    pub fn commit(mut self, bytes: &[u8]) -> Result<(), String> {
        let fail =
            |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", self.target.display());
        self.temp.write_all(bytes).map_err(|e| fail(&e))?;
        self.temp.as_file().sync_all().map_err(|e| fail(&e))?;
        let target = self.target.clone();
        let persisted = if self.replace {
            self.temp.persist(&target)
        } else {
            // Refuses a file that appeared since `prepare`.
            self.temp.persist_noclobber(&target)
        };
        persisted.map_err(|e| format!("cannot write {}: {}", target.display(), e.error))?;
        sync_dir(parent_dir(&target)).map_err(|e| format!("cannot write {}: {e}", target.display()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_backed_directories_are_told_from_ones_on_disk() {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() {
            assert!(super::memory_backed(shm).unwrap());
        }
        // This crate's sources are in a checkout on disk.
        let disk = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        assert!(!super::memory_backed(disk).unwrap());
        let missing = super::memory_backed(&disk.join("no-such-directory")).unwrap_err();
        assert!(
            missing.to_string().contains("no-such-directory"),
            "{missing}"
        );
    }

    #[test]
    fn directories_of_gone_processes_are_removed_and_no_other() {
        let parent = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let dir = parent.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("spill.arrow"), b"rows").unwrap();
            dir
        };
        // No process has an id above the kernel's limit of 2^22.
        let orphan = make("unseen-x-999999999-abc");
        let ours = make(&format!("unseen-x-{}-abc", std::process::id()));
        let unnamed = make("unseen-x-abc");
        let other = make("someone-else-1-abc");
        super::remove_orphan_dirs(parent.path(), "unseen-x-");
        assert!(!orphan.exists());
        assert!(ours.exists() && unnamed.exists() && other.exists());
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for secs in [0, 59, 86_399, 951_782_400, 1_709_210_096, 4_102_444_799] {
            assert_eq!(super::parse_rfc3339(&super::rfc3339(secs)), Some(secs));
        }
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56+08",
            "2024-02-29T1a:34:56Z",
        ] {
            assert_eq!(super::parse_rfc3339(bad), None, "{bad}");
        }
    }
}

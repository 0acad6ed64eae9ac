//! How the ledger touches its files: owner-only modes whatever the umask,
//! no symbolic links followed, only regular files read, and every read
//! bounded by the file's size at open (and, for the small files, by a fixed
//! limit), so a ledger file replaced by a link to `/dev/zero` or a FIFO is an
//! error, not an unbounded read or a hang.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the ledger directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the ledger writes.
pub const FILE_MODE: u32 = 0o600;

/// Largest `checkpoint`, `ledger.pub` or `ledger.key` file read.
pub(crate) const SMALL_FILE_LIMIT: u64 = 64 << 10;

/// Why a ledger file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The OS refused.
    #[error("could not {action} {path}: {source}; check the disk and the directory's permissions")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A symbolic link where a ledger file belongs.
    #[error(
        "{path} is a symbolic link; ledger files must be regular files inside the ledger directory, replace the link with the file it should be"
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A device, FIFO, socket or directory where a ledger file belongs.
    #[error(
        "{path} is not a regular file; ledger files must be regular files, replace it with the file it should be"
    )]
    NotRegular {
        /// The path.
        path: PathBuf,
    },
    /// A file larger than such a file can legitimately be.
    #[error(
        "{path} holds {len} bytes, more than the {limit} such a file can hold; it is not a ledger file, restore it from a backup"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The largest size accepted.
        limit: u64,
    },
}

impl FileError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
        let path = path.to_path_buf();
        move |source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                FileError::Symlink { path }
            } else {
                FileError::Io {
                    action,
                    path,
                    source,
                }
            }
        }
    }

    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Creates `dir` (and missing parents) and makes it mode 0700 whatever the
/// umask or its mode before.
pub(crate) fn private_dir(dir: &Path) -> Result<(), FileError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(FileError::io("create directory", dir))?;
    let meta = fs::metadata(dir).map_err(FileError::io("stat", dir))?;
    if !meta.is_dir() {
        return Err(FileError::NotRegular {
            path: dir.to_path_buf(),
        });
    }
    if meta.permissions().mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(FileError::io("set the mode of", dir))?;
    }
    Ok(())
}

/// Options that never follow a symbolic link in the last component, never
/// block on a FIFO, and create files 0600.
fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .mode(FILE_MODE);
    o
}

/// Checks that `file` (opened from `path`) is a regular file and returns
/// its size; with `fix_mode`, also narrows its mode to 0600 (files made by
/// older versions under a permissive umask).
fn check_regular(file: &File, path: &Path, fix_mode: bool) -> Result<u64, FileError> {
    let meta = file.metadata().map_err(FileError::io("stat", path))?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    if fix_mode && meta.permissions().mode() & 0o7777 != FILE_MODE {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .map_err(FileError::io("set the mode of", path))?;
    }
    Ok(meta.len())
}

/// Opens `path` for reading and appending, creating it (0600) if missing.
/// Returns the file and its size.
pub(crate) fn open_append(path: &Path) -> Result<(File, u64), FileError> {
    let file = options()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(FileError::io("open", path))?;
    let len = check_regular(&file, path, true)?;
    Ok((file, len))
}

/// Opens `path` for reading and writing in place, creating it (0600) if
/// missing.
pub(crate) fn open_rw(path: &Path) -> Result<File, FileError> {
    let file = options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(FileError::io("open", path))?;
    check_regular(&file, path, true)?;
    Ok(file)
}

/// Creates `path` (0600), failing if it exists.
pub(crate) fn create_new(path: &Path) -> Result<File, FileError> {
    let file = options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(FileError::io("create", path))?;
    check_regular(&file, path, true)?;
    Ok(file)
}

/// Creates or truncates `path` (0600) for writing.
pub(crate) fn create_truncate(path: &Path) -> Result<File, FileError> {
    let file = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(FileError::io("create", path))?;
    check_regular(&file, path, true)?;
    Ok(file)
}

/// Reads the rest of `file` from its current position: at most `len`
/// bytes (its size when opened), so a file that grows meanwhile does not
/// make the read longer.
pub(crate) fn read_len(file: &mut File, path: &Path, len: u64) -> Result<Vec<u8>, FileError> {
    let cap = usize::try_from(len).map_err(|_| FileError::TooLarge {
        path: path.to_path_buf(),
        len,
        limit: usize::MAX as u64,
    })?;
    let mut bytes = Vec::with_capacity(cap);
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(FileError::io("read", path))?;
    Ok(bytes)
}

/// Reads the regular file `path`, refusing links, special files and files
/// larger than `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let mut file = options()
        .read(true)
        .open(path)
        .map_err(FileError::io("open", path))?;
    let len = check_regular(&file, path, false)?;
    if len > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            len,
            limit,
        });
    }
    read_len(&mut file, path, len)
}

/// [`read_limited`], with a missing file as `None`.
pub(crate) fn read_optional(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, FileError> {
    match read_limited(path, limit) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether something (a file, a link, anything) is at `path`.
pub(crate) fn exists(path: &Path) -> Result<bool, FileError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FileError::io("stat", path)(e)),
    }
}

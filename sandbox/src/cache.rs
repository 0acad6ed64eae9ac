//! On-disk cache of compiled modules, authenticated with HMAC-SHA256.
//!
//! Loading compiled code skips wasmtime's validation and runs the bytes as
//! machine code, so a cache file is a way to run arbitrary code on the host
//! if anyone but this host can write one. Every artifact is therefore
//! written with an HMAC-SHA256 tag under a random key that lives in the
//! cache directory with mode 0600, and is deserialized only when the tag
//! verifies. A file that fails the check is recompiled and overwritten,
//! never loaded. Cache trouble (a full disk, a read-only directory) only
//! costs a compilation; it never fails a validation.
//!
//! File layout: `<key>.cwasm` = 32-byte tag || `Module::serialize()` output,
//! where the tag covers the cache key and the artifact, so a valid file
//! renamed to another key does not verify either.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use wasmtime::{Engine, Module};

use crate::SandboxError;

const KEY_FILE: &str = "cache.key";
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 32;
const EXTENSION: &str = "cwasm";

/// Where a compiled module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompiledFrom {
    /// Compiled from the module bytes just now.
    Compiled,
    /// Loaded from an authenticated artifact in the on-disk cache.
    Cache,
}

pub(crate) struct ModuleCache {
    dir: PathBuf,
    key: hmac::Key,
    /// Engine fingerprint, part of every cache key.
    fingerprint: String,
}

impl std::fmt::Debug for ModuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn cache_error(path: &Path, reason: impl Into<String>) -> SandboxError {
    SandboxError::Cache {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl ModuleCache {
    /// Opens (creating on first use) a cache directory and its key file.
    pub(crate) fn open(dir: &Path, fingerprint: String) -> Result<Self, SandboxError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| cache_error(dir, format!("cannot create the directory: {e}")))?;
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        Ok(ModuleCache {
            dir: dir.to_path_buf(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            fingerprint,
        })
    }

    /// The same directory and key for another engine's code: entries of
    /// one fingerprint are never keys of the other.
    pub(crate) fn for_fingerprint(&self, fingerprint: String) -> Self {
        ModuleCache {
            dir: self.dir.clone(),
            key: self.key.clone(),
            fingerprint,
        }
    }

    /// The cache key of a module: SHA-256 over its hash and the engine fingerprint
    /// (which includes the wasmtime version and every setting that changes code).
    fn key_of(&self, module_sha256: &str) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [
            "unseen-sandbox module cache v1",
            module_sha256,
            &self.fingerprint,
        ] {
            ctx.update(part.as_bytes());
            ctx.update(b"\n");
        }
        hex::encode(ctx.finish())
    }

    pub(crate) fn path_of(&self, module_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{}.{EXTENSION}", self.key_of(module_sha256)))
    }

    fn tag(&self, cache_key: &str, artifact: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(cache_key.as_bytes());
        ctx.update(artifact);
        ctx.sign()
    }

    /// Returns the compiled module, from the cache when an authentic artifact
    /// is there, otherwise by compiling `bytes` and storing the result.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        module_sha256: &str,
    ) -> Result<(Module, CompiledFrom), wasmtime::Error> {
        let cache_key = self.key_of(module_sha256);
        let path = self.path_of(module_sha256);
        match fs::read(&path) {
            Ok(file) => match self.verified_artifact(&cache_key, &file) {
                Some(artifact) => match deserialize_trusted(engine, artifact) {
                    Ok(module) => return Ok((module, CompiledFrom::Cache)),
                    Err(e) => tracing::warn!(
                        path = %path.display(),
                        error = %format!("{e:#}"),
                        "authentic cache entry did not load; recompiling"
                    ),
                },
                None => tracing::warn!(
                    path = %path.display(),
                    "cache entry failed its integrity check; recompiling and replacing it"
                ),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot read cache entry"),
        }
        let module = Module::new(engine, bytes)?;
        if let Err(e) = self.store(&cache_key, &path, &module) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write cache entry");
        }
        Ok((module, CompiledFrom::Compiled))
    }

    /// The artifact inside `file` when its tag verifies, else `None`.
    fn verified_artifact<'a>(&self, cache_key: &str, file: &'a [u8]) -> Option<&'a [u8]> {
        if file.len() < TAG_LEN {
            return None;
        }
        let (tag, artifact) = file.split_at(TAG_LEN);
        let mut message = Vec::with_capacity(cache_key.len() + artifact.len());
        message.extend_from_slice(cache_key.as_bytes());
        message.extend_from_slice(artifact);
        // Constant-time comparison inside `ring`.
        hmac::verify(&self.key, &message, tag).ok()?;
        Some(artifact)
    }

    fn store(&self, cache_key: &str, path: &Path, module: &Module) -> Result<(), String> {
        let artifact = module.serialize().map_err(|e| format!("{e:#}"))?;
        let tag = self.tag(cache_key, &artifact);
        let tmp = self.dir.join(format!(
            ".{cache_key}.{}.tmp",
            hex::encode(random_bytes::<8>().map_err(|e| e.to_string())?)
        ));
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(tag.as_ref())?;
            file.write_all(&artifact)?;
            file.sync_all()?;
            // Atomic replace: readers see the old file or the whole new one.
            fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            e.to_string()
        })
    }
}

/// Deserializes an artifact whose HMAC tag has been verified.
///
/// The only `unsafe` in this crate.
#[allow(unsafe_code)]
fn deserialize_trusted(engine: &Engine, artifact: &[u8]) -> Result<Module, wasmtime::Error> {
    // SAFETY: `Module::deserialize` requires bytes produced by
    // `Module::serialize` of a compatible wasmtime, unmodified. The caller
    // passes `artifact` only after `hmac::verify` accepted its tag under the
    // cache directory's secret key; only this host knows that key (file mode
    // 0600) and it tags nothing but `Module::serialize` output it produced
    // itself in `ModuleCache::store`. The tag also binds the cache key, which
    // includes wasmtime's compatibility hash, so a valid artifact from another
    // engine configuration is never presented here; and wasmtime itself
    // rejects artifacts from another version with an error, not UB.
    unsafe { Module::deserialize(engine, artifact) }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ring::error::Unspecified> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(bytes)
}

/// Reads the cache's HMAC key, creating it (mode 0600) on first use.
///
/// Creation writes a temporary file and hard-links it into place, which
/// fails if another process won the race; then that process's key is read.
fn load_or_create_key(path: &Path) -> Result<[u8; KEY_LEN], SandboxError> {
    if !path.exists() {
        let key = random_bytes::<KEY_LEN>()
            .map_err(|_| cache_error(path, "the system random number generator failed"))?;
        let suffix = random_bytes::<8>()
            .map_err(|_| cache_error(path, "the system random number generator failed"))?;
        let tmp = path.with_extension(format!("{}.tmp", hex::encode(suffix)));
        let created = (|| -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&key)?;
            file.sync_all()?;
            match fs::hard_link(&tmp, path) {
                Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        })();
        let _ = fs::remove_file(&tmp);
        created.map_err(|e| cache_error(path, format!("cannot create the key file: {e}")))?;
    }
    let meta = fs::symlink_metadata(path)
        .map_err(|e| cache_error(path, format!("cannot read the key file: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(cache_error(
            path,
            "the key file is not a regular file; delete it and the cache directory's *.cwasm files",
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(cache_error(
            path,
            format!(
                "the key file has mode {mode:o}, so others may read it and forge cache entries; \
                 delete it together with the *.cwasm files next to it (a new key is made on next start)"
            ),
        ));
    }
    let bytes =
        fs::read(path).map_err(|e| cache_error(path, format!("cannot read the key file: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        cache_error(
            path,
            format!(
                "the key file holds {} bytes, not {KEY_LEN}; delete it together with the *.cwasm files next to it",
                b.len()
            ),
        )
    })
}

//! The compiled-module cache loads only artifacts this host wrote itself.

use std::os::unix::fs::PermissionsExt;

use unseen_sandbox::{CompiledFrom, Limits, ModuleKind, Sandbox, SandboxError};

use crate::support::{MockHost, assert_still_serves, test_limits, wasm};

fn validate(sandbox: &Sandbox, guest: &str) -> CompiledFrom {
    sandbox
        .validate(&wasm(guest), ModuleKind::Job)
        .expect("valid module")
        .compiled_from()
}

fn entry_path(sandbox: &Sandbox, guest: &str) -> std::path::PathBuf {
    let sha = unseen_sandbox::sha256_hex(&wasm(guest));
    sandbox
        .cache_path(&sha, ModuleKind::Job)
        .expect("caching is on")
}

#[test]
fn second_sandbox_loads_what_the_first_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let first = Sandbox::with_cache_dir(test_limits(), dir.path()).unwrap();
    assert_eq!(validate(&first, "district-income"), CompiledFrom::Compiled);
    assert!(entry_path(&first, "district-income").is_file());
    drop(first);
    let second = Sandbox::with_cache_dir(test_limits(), dir.path()).unwrap();
    assert_eq!(validate(&second, "district-income"), CompiledFrom::Cache);
    assert_still_serves(&second);
}

#[test]
fn udf_modules_are_cached_apart_from_jobs() {
    // UDF modules are compiled by an engine without fuel metering or NaN
    // canonicalisation: its code must never be served to the job engine.
    let dir = tempfile::tempdir().unwrap();
    let bytes = wasm("udf-light");
    let sha = unseen_sandbox::sha256_hex(&bytes);
    let first = Sandbox::with_cache_dir(test_limits(), dir.path()).unwrap();
    let job_path = first.cache_path(&sha, ModuleKind::Job).unwrap();
    let udf_path = first.cache_path(&sha, ModuleKind::Udf).unwrap();
    assert_ne!(job_path, udf_path);
    let udf = first.validate(&bytes, ModuleKind::Udf).unwrap();
    assert_eq!(udf.compiled_from(), CompiledFrom::Compiled);
    assert!(udf_path.is_file());
    assert!(!job_path.exists());
    drop(first);
    let second = Sandbox::with_cache_dir(test_limits(), dir.path()).unwrap();
    let udf = second.validate(&bytes, ModuleKind::Udf).unwrap();
    assert_eq!(udf.compiled_from(), CompiledFrom::Cache);
    unseen_sandbox::UdfModule::new(&second, &udf).expect("the cached UDF module instantiates");
}

#[test]
fn key_file_and_directory_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("modules");
    let _sandbox = Sandbox::with_cache_dir(test_limits(), &cache).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache.join("cache.key")), 0o600);
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(std::fs::read(cache.join("cache.key")).unwrap().len(), 32);
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Sandbox::with_cache_dir(test_limits(), dir.path()).unwrap());
    let key = dir.path().join("cache.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    match Sandbox::with_cache_dir(test_limits(), dir.path()) {
        Err(SandboxError::Cache { path, reason }) => {
            assert_eq!(path, key);
            assert!(reason.contains("mode 644"), "{reason}");
        }
        other => panic!("expected a cache error, got {other:?}"),
    }
}

/// Tampers with a cache entry, checks it is recompiled rather than loaded,
/// and that the recompiled entry is authentic again.
fn assert_tamper_is_recompiled(tamper: impl Fn(&mut Vec<u8>)) {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::with_cache_dir(test_limits(), dir.path()).unwrap();
    assert_eq!(
        validate(&sandbox, "district-income"),
        CompiledFrom::Compiled
    );
    let path = entry_path(&sandbox, "district-income");
    let mut bytes = std::fs::read(&path).unwrap();
    tamper(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        validate(&sandbox, "district-income"),
        CompiledFrom::Compiled,
        "a tampered entry must never be loaded"
    );
    assert_ne!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the entry was replaced"
    );
    assert_eq!(validate(&sandbox, "district-income"), CompiledFrom::Cache);
    assert_still_serves(&sandbox);
}

#[test]
fn flipped_bit_in_the_artifact_is_recompiled() {
    assert_tamper_is_recompiled(|b| {
        let last = b.len() - 1;
        b[last] ^= 1;
    });
}

#[test]
fn flipped_bit_in_the_tag_is_recompiled() {
    assert_tamper_is_recompiled(|b| b[0] ^= 0x80);
}

#[test]
fn truncated_entry_is_recompiled() {
    assert_tamper_is_recompiled(|b| b.truncate(7));
}

#[test]
fn artifact_forged_without_the_key_is_recompiled() {
    // A genuine `Module::serialize` output, tagged under another key: what
    // someone with write access to the cache but not the key could plant.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Sandbox::with_cache_dir(test_limits(), other_dir.path()).unwrap();
    validate(&other, "district-income");
    let forged = std::fs::read(entry_path(&other, "district-income")).unwrap();
    assert_tamper_is_recompiled(|b| *b = forged.clone());
}

#[test]
fn authentic_entry_of_another_module_is_not_loaded_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::with_cache_dir(test_limits(), dir.path()).unwrap();
    validate(&sandbox, "district-income");
    validate(&sandbox, "adv-query-flood");
    let victim = entry_path(&sandbox, "district-income");
    std::fs::copy(entry_path(&sandbox, "adv-query-flood"), &victim).unwrap();
    assert_eq!(
        validate(&sandbox, "district-income"),
        CompiledFrom::Compiled
    );
    let module = sandbox
        .validate(&wasm("district-income"), ModuleKind::Job)
        .unwrap();
    let host = MockHost::new();
    sandbox.run_job(&module, Box::new(host.clone())).unwrap();
    assert_eq!(
        host.seen().queries.len(),
        1,
        "it ran district-income's code"
    );
}

#[test]
fn another_engine_configuration_uses_another_entry() {
    let dir = tempfile::tempdir().unwrap();
    let a = Sandbox::with_cache_dir(test_limits(), dir.path()).unwrap();
    let b = Sandbox::with_cache_dir(
        Limits {
            stack_bytes: 256 << 10,
            ..test_limits()
        },
        dir.path(),
    )
    .unwrap();
    assert_ne!(
        entry_path(&a, "district-income"),
        entry_path(&b, "district-income")
    );
    assert_eq!(validate(&a, "district-income"), CompiledFrom::Compiled);
    assert_eq!(validate(&b, "district-income"), CompiledFrom::Compiled);
    assert_eq!(validate(&b, "district-income"), CompiledFrom::Cache);
}

#[test]
fn invalid_module_is_refused_with_caching_on_and_nothing_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::with_cache_dir(test_limits(), dir.path()).unwrap();
    let good = wasm("district-income");
    assert!(matches!(
        sandbox.validate(&good[..good.len() / 2], ModuleKind::Job),
        Err(SandboxError::Invalid { .. })
    ));
    let entries = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "cwasm")
        })
        .count();
    assert_eq!(entries, 0);
}

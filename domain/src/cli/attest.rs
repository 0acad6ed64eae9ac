//! `unseen attest`: which code handles the data, signed, and checked offline.

use super::*;

pub(super) fn run(args: AttestArgs, session: &Session, out: &mut dyn Write) -> Result<()> {
    if let Some(AttestVerify::Verify {
        file,
        public_key,
        binary,
        nonce,
        json,
        dir,
    }) = args.verify
    {
        let text = read_text(&file)?;
        let key = self::public_key(&dir.path(), public_key.as_deref())?;
        let attestation =
            crate::attest::verify_attestation(&text, &key, binary.as_deref(), nonce.as_deref())?;
        if json {
            return print_json(out, &attestation);
        }
        let statement = &attestation.statement;
        writeln!(
            out,
            "attestation OK: signed by ledger key {}",
            statement.public_key
        )?;
        write_build(out, &statement.build)?;
        if let Some(path) = &binary {
            writeln!(out, "  {} is that binary", path.display())?;
        }
        if let Some(nonce) = &statement.nonce {
            writeln!(out, "  answers nonce {nonce}")?;
        }
        return Ok(());
    }
    let backend = session.backend(&args.dir, args.actor)?;
    let attestation = backend.attest(args.nonce.as_deref())?;
    let text = serde_json::to_string_pretty(&attestation)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, format!("{text}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(out, "wrote the attestation to {}", path.display())?;
            write_build(out, &attestation.statement.build)?;
        }
        None => writeln!(out, "{text}")?,
    }
    Ok(())
}

/// The build, one fact a line.
pub(super) fn write_build(out: &mut dyn Write, build: &unseen_api::BuildRecord) -> Result<()> {
    writeln!(out, "  binary sha256 {}", build.binary_sha256)?;
    writeln!(
        out,
        "  unseen {} from commit {}; Cargo.lock sha256 {}",
        build.version, build.git_commit, build.cargo_lock_sha256
    )?;
    writeln!(
        out,
        "  wasmtime {}, DataFusion {}, OpenDP {}",
        build.wasmtime, build.datafusion, build.opendp
    )?;
    Ok(())
}

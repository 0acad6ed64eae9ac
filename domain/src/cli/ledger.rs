//! The audit ledger: proofs, checks, recovery, export.

use super::*;

pub(super) fn run(command: LedgerCommand, session: &Session, out: &mut dyn Write) -> Result<()> {
    let runtime = session.runtime;
    match command {
        LedgerCommand::Query {
            sql,
            public_key,
            json,
            dir,
        } => {
            let (ledger, _) = verified(&dir, public_key.as_deref())?;
            let batches = runtime.block_on(crate::audit::query(&ledger.entries, &sql))?;
            if json {
                writeln!(out, "{}", batches_json(&batches)?)?;
            } else {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&batches)?
                )?;
            }
            Ok(())
        }
        LedgerCommand::Proof {
            index,
            consistency,
            public_key,
            dir,
        } => proof(index, consistency, public_key, dir, out),
        LedgerCommand::Checkpoint {
            public_key,
            json,
            dir,
        } => {
            let data = dir.path();
            let key = self::public_key(&data, public_key.as_deref())?;
            let path = data.join("ledger/checkpoint");
            let note = read_text(&path)?;
            unseen_ledger::Checkpoint::open(&note, unseen_ledger::ORIGIN, &key)
                .with_context(|| format!("the checkpoint in {} does not verify", path.display()))?;
            if json {
                writeln!(out, "{}", json!({"checkpoint": note}))?;
            } else {
                write!(out, "{note}")?;
            }
            Ok(())
        }
        LedgerCommand::Recover { actor, json, dir } => recover(actor, json, dir, out),
        LedgerCommand::Reconcile { actor, json, dir } => {
            let report = session.backend(&dir, actor)?.reconcile()?;
            print_reconciliation(out, &report, json)
        }
        LedgerCommand::PublicKey {
            out: path,
            json,
            dir,
        } => print_public_key(path, json, dir, out),
        LedgerCommand::CheckProof {
            file,
            checkpoint,
            public_key,
            json,
        } => check_proof(file, checkpoint, public_key, json, out),
        LedgerCommand::Export {
            from,
            to,
            out: path,
            public_key,
            json,
            dir,
        } => {
            let data = dir.path();
            let key = self::public_key(&data, public_key.as_deref())?;
            let segment = unseen_ledger::export_segment(&data.join("ledger"), &key, from, to)
                .context("cannot export the segment")?;
            std::fs::write(&path, segment.to_json())
                .with_context(|| format!("cannot write {}", path.display()))?;
            say(
                out,
                json,
                &json!({"from": from, "to": to, "path": path}),
                format_args!(
                    "exported entries {from}..{to} with the signed checkpoint and proofs to {}",
                    path.display()
                ),
            )
        }
        LedgerCommand::VerifySegment {
            file,
            public_key,
            json,
        } => {
            let key = unseen_ledger::PublicKey::from_hex(read_text(&public_key)?.trim())
                .with_context(|| format!("public key {} is not valid", public_key.display()))?;
            let report = unseen_ledger::verify_segment(&read_text(&file)?, &key)
                .context("segment verification FAILED")?;
            say(
                out,
                json,
                &json!({"ok": true, "checked": report.to_string()}),
                &report,
            )
        }
        LedgerCommand::Verify {
            public_key,
            since,
            witness_key,
            witnessed,
            json,
            dir,
        } => verify(public_key, since, witness_key, witnessed, json, dir, out),
        LedgerCommand::Witness {
            url,
            witness_key,
            json,
            dir,
        } => {
            let witness = unseen_ledger::witness::WitnessKey::parse(&witness_key)?;
            let domain = open(&dir)?;
            let done = crate::witness::witness_ledger(&domain, &url, &witness)
                .context("witnessing FAILED")?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&done)?)?;
            } else {
                writeln!(
                    out,
                    "witness `{}` co-signed the checkpoint of {} entries (it held {} before)",
                    done.witness, done.size, done.from_size
                )?;
            }
            Ok(())
        }
    }
}

fn proof(
    index: Option<u64>,
    consistency: Option<u64>,
    public_key: Option<PathBuf>,
    dir: DataDir,
    out: &mut dyn Write,
) -> Result<()> {
    let (ledger, _) = verified(&dir, public_key.as_deref())?;
    let tree = unseen_ledger::Tree::from_leaves(ledger.leaves.clone());
    let size = ledger.checkpoint.size;
    let proof = match (index, consistency) {
        (Some(i), _) => unseen_ledger::Proof::Inclusion(
            unseen_ledger::InclusionProof::build(&tree, i, size)
                .with_context(|| format!("no inclusion proof for entry {i} in a tree of {size}"))?,
        ),
        (None, Some(old)) => unseen_ledger::Proof::Consistency(
            unseen_ledger::ConsistencyProof::build(&tree, old, size)
                .with_context(|| format!("no consistency proof from size {old} to {size}"))?,
        ),
        (None, None) => bail!("give --index or --consistency"),
    };
    writeln!(out, "{}", proof.to_json())?;
    Ok(())
}

fn recover(actor: String, json: bool, dir: DataDir, out: &mut dyn Write) -> Result<()> {
    let (ledger, recovery) = Domain::recover_ledger(&dir.path(), &actor)?;
    let size = ledger.size();
    if json {
        let cut = recovery.as_ref().map(|r| {
            json!({"first_index": r.first_index, "entries": r.entries, "bytes": r.bytes,
                   "sha256": r.sha256_hex, "file": r.file.display().to_string()})
        });
        writeln!(out, "{}", json!({"quarantined": cut, "entries": size}))?;
    } else if let Some(r) = recovery {
        writeln!(
            out,
            "quarantined {} entries from entry {} on ({} bytes, sha256 {}) to {}",
            r.entries,
            r.first_index,
            r.bytes,
            r.sha256_hex,
            r.file.display()
        )?;
        writeln!(
            out,
            "recorded as entry {} (ledger.recovered); the ledger holds {size} entries under a new signed checkpoint",
            size - 1
        )?;
    } else {
        writeln!(
            out,
            "nothing to recover: every entry is proven; the ledger holds {size} entries"
        )?;
    }
    Ok(())
}

fn verify(
    public_key: Option<PathBuf>,
    since: Option<PathBuf>,
    witness_key: Option<String>,
    witnessed: Option<String>,
    json: bool,
    dir: DataDir,
    out: &mut dyn Write,
) -> Result<()> {
    if let Some(vkey) = &witness_key {
        let data = dir.path();
        let key = self::public_key(&data, public_key.as_deref())?;
        let report = crate::witness::verify_witnessed(&data, &key, vkey, witnessed.as_deref())?;
        writeln!(
            out,
            "the ledger of {} entries consistently extends the checkpoint of {} entries witness `{}` co-signed",
            report.size, report.witnessed_size, report.witness
        )?;
    }
    if let Some(previous) = &since {
        let data = dir.path();
        let key = self::public_key(&data, public_key.as_deref())?;
        let note = read_text(previous)?;
        let report = unseen_ledger::verify_since(&data.join("ledger"), &note, &key)
            .context("ledger verification FAILED: it does not extend the saved checkpoint")?;
        writeln!(
            out,
            "the ledger of {} entries consistently extends the saved checkpoint of {} entries",
            report.size, report.previous_size
        )?;
    }
    let report = verify_ledger(&dir.path(), public_key.as_deref())?;
    if json {
        writeln!(
            out,
            "{}",
            json!({"ok": true, "entries": report.size, "root": report.root_hex})
        )?;
    } else {
        writeln!(
            out,
            "ledger OK: {} entries, chain and Merkle root verified, checkpoint signature valid",
            report.size
        )?;
        writeln!(out, "root {}", report.root_hex)?;
    }
    Ok(())
}

/// `ledger public-key`: prints the key, or writes it to `path`.
fn print_public_key(
    path: Option<PathBuf>,
    json: bool,
    dir: DataDir,
    out: &mut dyn Write,
) -> Result<()> {
    let key = public_key(&dir.path(), None)?;
    let hex = key.to_hex();
    match path {
        Some(p) => {
            std::fs::write(&p, format!("{hex}\n"))
                .with_context(|| format!("cannot write {}", p.display()))?;
            say(
                out,
                json,
                &json!({"public_key": hex, "path": p}),
                format_args!("wrote the ledger public key to {}", p.display()),
            )
        }
        None => say(out, json, &json!({"public_key": hex}), &hex),
    }
}

/// `ledger check-proof`: checks a proof without the ledger.
fn check_proof(
    file: PathBuf,
    checkpoint: Option<PathBuf>,
    public_key: Option<PathBuf>,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let text = read_text(&file)?;
    let note = checkpoint.as_deref().map(read_text).transpose()?;
    let key = match &public_key {
        Some(p) => Some(
            unseen_ledger::PublicKey::from_hex(read_text(p)?.trim())
                .with_context(|| format!("public key {} is not valid", p.display()))?,
        ),
        None => None,
    };
    let report = unseen_ledger::check_proof(&text, note.as_deref(), key.as_ref())
        .context("proof check FAILED")?;
    say(
        out,
        json,
        &json!({"ok": true, "checked": report.to_string()}),
        &report,
    )
}

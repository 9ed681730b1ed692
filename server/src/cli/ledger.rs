//! Keys, ledgers, bundles, proofs and tokens.

use crate::{Invalid, VerifySource};
use anyhow::{Context, Result, bail};
use engine::materialize::Ledger;
use indicatif::{ProgressBar, ProgressStyle};
use ledger::bundle::verify_bundle;
use ledger::keys;
use ledger::keys::{PublicKey, Signer};
use ledger::proof::{ConsistencyProof, InclusionProof};
use ledger::store::{ReadOnlyStore, Snapshot};
use ledger::witness::WitnessPolicy;
use std::fs;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub(crate) fn open_ro(db: &Path) -> Result<ReadOnlyStore> {
    ReadOnlyStore::open(db).with_context(|| format!("opening {}", db.display()))
}

/// For commands that read the whole file anyway: redb's integrity check first, so a damaged
/// file is reported as such (unless a daemon has it open: then its snapshots are read).
pub(crate) fn open_checked(db: &Path) -> Result<ReadOnlyStore> {
    ReadOnlyStore::open_with(db, true).with_context(|| format!("opening {}", db.display()))
}

/// How a database was read, for the verdict line.
pub(crate) fn read_note(ro: &ReadOnlyStore) -> &'static str {
    match ro.mode() {
        ledger::store::ReadMode::BesideWriter => {
            " (read beside the running writer: its latest commit)"
        }
        ledger::store::ReadMode::Private {
            recovered: true, ..
        } => " (the file was not closed cleanly: recovered in memory, the file left unchanged)",
        ledger::store::ReadMode::Private { .. } => "",
    }
}

pub(crate) fn keygen(out: &Path, name: &str) -> Result<()> {
    let signer = Signer::generate(name)?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Key names are often schema-less URLs (`cp.example.org/fleet`, C2SP's advice, and the
    // log's origin): the file name is the name with each '/' as '_'.
    let stem = name.replace('/', "_");
    let key_path = out.join(format!("{stem}.key"));
    let pub_path = out.join(format!("{stem}.pub"));
    if pub_path.exists() {
        bail!(
            "{} already exists: refusing to overwrite a key",
            pub_path.display()
        );
    }
    keys::write_private_key(&key_path, &signer)?;
    keys::write_public_key(&pub_path, signer.public())?;
    println!("private key: {} (mode 0600)", key_path.display());
    println!("public key:  {}", pub_path.display());
    println!("{}", signer.public().to_text());
    Ok(())
}

/// A progress bar on stderr, only when stderr is a terminal.
pub(crate) fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} entries ({per_sec}, eta {eta})",
            )
            .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} entries ({per_sec})")
                .expect("valid template"),
        ),
    };
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Reads published files from a directory, over HTTP(S) from a URL prefix (404: the file
/// does not exist; any other failure is an error naming the URL), or from `s3://BUCKET/PREFIX`.
fn tile_reader(source: &Path) -> Result<Box<ledger::tiles::Fetch<'static>>> {
    let text = source.to_string_lossy().to_string();
    if text.starts_with("s3://") {
        let dest: fleet_ledger::publish::Destination =
            text.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let sink = dest.open(rt.handle(), fleet_ledger::publish::DEFAULT_REQUEST_TIMEOUT)?;
        return Ok(Box::new(move |path: &str| {
            let _keep = &rt;
            sink.get(path).map_err(|e| format!("s3 {path}: {e}"))
        }));
    }
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        let dir = source.to_path_buf();
        return Ok(Box::new(move |path: &str| match fs::read(dir.join(path)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }));
    }
    // https is verified against the system's roots, with the daemon's TLS library and crypto.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder().build()?;
    let base = text.trim_end_matches('/').to_string();
    Ok(Box::new(move |path: &str| {
        rt.block_on(fleet_ledger::sources::fetch(
            &http,
            &format!("{base}/{path}"),
            None,
        ))
    }))
}

/// Verifies published tiles in a directory or at a URL: all of them, or (with a state file
/// from an earlier run) what was published since; then saves the new state.
fn verify_tiles(
    source: &Path,
    key: &PublicKey,
    since: Option<&Path>,
    witnesses: &WitnessPolicy,
) -> Result<()> {
    use ledger::tiles::TilesState;
    let bar = progress(None, "verifying");
    let mut fetch = tile_reader(source)?;
    let state: Option<TilesState> = match since {
        Some(file) if file.exists() => {
            let text =
                fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a tiles state file", file.display()))?,
            )
        }
        _ => None,
    };
    if let Some(s) = &state {
        // The state must be of this log: its key chain starts with the pinned key.
        if s.keys.first() != Some(&key.to_text()) {
            bail!("the state file's key chain does not start with the key given (--key)");
        }
    }
    let from = state.as_ref().and_then(|s| {
        ledger::checkpoint::parse_note(s.checkpoint.as_bytes())
            .ok()
            .map(|n| n.checkpoint.size)
    });
    let r = match &state {
        // Split-view protection: enough trusted witnesses saw the published checkpoint
        // (checked before the state file may move on to it).
        Some(s) => {
            ledger::tiles::verify_since(&mut fetch, s, witnesses, &mut |n| bar.set_position(n))
        }
        None => ledger::tiles::verify(&mut fetch, key.clone(), witnesses, &mut |n| {
            bar.set_position(n)
        }),
    };
    bar.finish_and_clear();
    let v = r.map_err(|e| Invalid(e.to_string()))?;
    let found = &v.cosignatures;
    let cp = v.log.checkpoint();
    let what = match from {
        Some(m) => format!(
            "{} new entries since size {m} ({} files read)",
            v.log.size() - m,
            v.files
        ),
        None => format!(
            "{} entries and every tile ({} files)",
            v.log.size(),
            v.files
        ),
    };
    println!(
        "OK: {what}, {} key(s); origin {}; size {}; root {}; head {}{}",
        v.log.keys().len(),
        v.log.origin(),
        cp.size,
        cp.root.to_base64(),
        cp.head.to_base64(),
        witnessed_by(found)
    );
    if let Some(file) = since {
        let text = serde_json::to_string_pretty(&TilesState::of(&v))? + "\n";
        let tmp = file.with_extension("tmp");
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

pub(crate) fn verify(
    source: &VerifySource,
    key: &PublicKey,
    since: Option<&Path>,
    witnesses: &WitnessPolicy,
) -> Result<()> {
    if let Some(dir) = &source.tiles {
        return verify_tiles(dir, key, since, witnesses);
    }
    let mut note = "";
    let result = if let Some(db) = &source.db {
        let ro = open_checked(db)?;
        note = read_note(&ro);
        let snap = ro.snapshot()?;
        let bar = progress(Some(snap.size()), "verifying");
        let r = snap.verify(key, |n| bar.set_position(n));
        bar.finish_and_clear();
        r
    } else {
        let path = source.bundle.as_ref().expect("clap enforces one source");
        let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let bar = progress(None, "verifying");
        let r = verify_bundle(BufReader::with_capacity(1 << 20, file), key, |n| {
            bar.set_position(n)
        });
        bar.finish_and_clear();
        r
    };
    let log = result.map_err(|e| Invalid(e.to_string()))?;
    let cp = log.checkpoint();
    println!(
        "OK: {} entries, {} checkpoints, {} key(s); origin {}; root {}; head {}{note}",
        log.size(),
        log.checkpoints(),
        log.keys().len(),
        log.origin(),
        cp.root.to_base64(),
        cp.head.to_base64()
    );
    Ok(())
}

pub(crate) fn rotate_key(db: &Path, key: &Path, to: &Path, reason: &str) -> Result<()> {
    if reason.trim().is_empty() {
        bail!("--reason must say why the key is rotated (it is recorded)");
    }
    let current =
        keys::read_private_key(key).with_context(|| format!("reading {}", key.display()))?;
    let next = keys::read_private_key(to).with_context(|| format!("reading {}", to.display()))?;
    let next_public = next.public().clone();
    refuse_damaged(db)?;
    // Opening also brings the projections up to date; it refuses a key not in force. The
    // rotation is then the daemon's: one transaction with the projections, and the store
    // refuses a key already in the chain.
    let mut ledger =
        Ledger::open_live(db, current).with_context(|| format!("opening {}", db.display()))?;
    let at = now_us().max(ledger.store().last_time());
    let receipt = match ledger.rotate_key(std::sync::Arc::new(next), reason, at) {
        Ok(r) => r,
        Err(engine::materialize::MaterializeError::Append(
            e @ ledger::store::AppendError::KeyInChain(_),
        )) => bail!("{e}"),
        Err(e) => {
            return Err(e).with_context(|| format!("rotating the key of {}", db.display()));
        }
    };
    drop(ledger);
    println!(
        "rotated at entry {}: checkpoints after it are signed by {} (serve with --config naming {}); verifiers follow the rotation from the log, witnesses must be told the new key",
        receipt.first_seq,
        next_public.to_text(),
        to.display()
    );
    Ok(())
}

pub(crate) fn export(db: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        bail!("{} already exists: refusing to overwrite", out.display());
    }
    let ro = open_checked(db)?;
    let snap = ro.snapshot()?;
    let (entries, checkpoints) = write_bundle(&snap, out)?;
    println!(
        "exported {entries} entries and {checkpoints} checkpoints to {}",
        out.display()
    );
    Ok(())
}

/// Refuses a damaged file before this process opens it for writing: runs
/// [`ledger::store::trial_commit`] in a child process (`fleet-ledger trial-commit`), where
/// redb aborting on the file ends the child, not this command or the daemon.
pub(crate) fn refuse_damaged(db: &Path) -> Result<()> {
    use std::os::unix::process::ExitStatusExt as _;
    let exe = std::env::current_exe().context("finding this program to run its trial commit")?;
    let out = std::process::Command::new(exe)
        .arg("trial-commit")
        .arg("--db")
        .arg(db)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .context("running the trial commit")?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(2)
        && let Some(line) = stderr.lines().find_map(|l| l.strip_prefix("error: "))
    {
        // The child's own one line (the file is missing, in use, not a ledger, corrupted).
        bail!("{line}");
    }
    let panic = stderr
        .lines()
        .find_map(|l| l.strip_prefix("panic: "))
        .unwrap_or("no message");
    let how = match (out.status.signal(), out.status.code()) {
        (Some(sig), _) => format!("signal {sig}"),
        (None, Some(code)) => format!("exit status {code}"),
        (None, None) => "no status".to_string(),
    };
    bail!(
        "{}: the file is damaged: the storage library ended a trial commit to it ({how}; {panic}); nothing was written. `fleet-ledger verify --db` names the damage; restore from a backup or the published tiles (docs/OPERATIONS.md, \"A damaged ledger file\")",
        db.display()
    )
}

/// `compact`: redb's compaction on a stopped daemon's file.
pub(crate) fn compact(db: &Path) -> Result<()> {
    let in_use = |db: &Path| {
        anyhow::anyhow!(
            "{} is open in another process (the daemon?): compaction needs the file to itself; stop the daemon first",
            db.display()
        )
    };
    if open_ro(db)?.mode() == ledger::store::ReadMode::BesideWriter {
        return Err(in_use(db));
    }
    refuse_damaged(db)?;
    let m = match ledger::store::Maintenance::open(db) {
        Err(ledger::store::OpenError::InUse { .. }) => return Err(in_use(db)),
        other => other.with_context(|| format!("opening {}", db.display()))?,
    };
    let (before, after) = m
        .compact()
        .with_context(|| format!("compacting {}", db.display()))?;
    println!(
        "compacted {}: {before} bytes -> {after} bytes ({:.1}% smaller)",
        db.display(),
        if before == 0 {
            0.0
        } else {
            100.0 * before.saturating_sub(after) as f64 / before as f64
        }
    );
    Ok(())
}

/// `backup`: a bundle of the log as of now, from a ledger a daemon may be serving (one read
/// transaction; the writer goes on), written atomically, then read back and verified against
/// the log's genesis key before it is reported good.
pub(crate) fn backup(db: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        bail!("{} already exists: refusing to overwrite", out.display());
    }
    let ro = open_ro(db)?;
    let snap = ro.snapshot()?;
    let genesis = snap
        .keys_in_force()?
        .into_iter()
        .next()
        .context("the ledger has no genesis key")?;
    let (entries, checkpoints) = write_bundle(&snap, out)?;
    drop(snap);
    drop(ro);
    let file = fs::File::open(out).with_context(|| format!("reading back {}", out.display()))?;
    let bar = progress(Some(entries), "verifying the backup");
    let log = ledger::bundle::verify_bundle(
        std::io::BufReader::with_capacity(1 << 20, file),
        &genesis,
        |n| bar.set_position(n),
    )
    .map_err(|e| Invalid(format!("the backup {} does not verify: {e}", out.display())))?;
    bar.finish_and_clear();
    println!(
        "backed up {entries} entries and {checkpoints} checkpoints to {} (verified: origin {}, size {}, root {}; restore with `fleet-ledger import --bundle {} --key GENESIS.pub --db NEW`)",
        out.display(),
        log.origin(),
        log.size(),
        log.checkpoint().root.to_base64(),
        out.display()
    );
    Ok(())
}

/// Where `import` reads the log from.
pub(crate) enum ImportFrom<'a> {
    /// A bundle file.
    Bundle(&'a Path),
    /// Published tiles: a directory, a URL prefix, or `s3://BUCKET/PREFIX`.
    Tiles(&'a Path),
}

/// `import`: verifies a bundle (or published tiles) against the pinned genesis key while
/// writing its entries, checkpoints and keys, unchanged, into a temporary database beside
/// `db`; rebuilds the projections; then links it as `db`. Anything that fails removes the
/// temporary file: `db` exists only whole and verified.
pub(crate) fn import(from: ImportFrom<'_>, key: &Path, db: &Path) -> Result<()> {
    if db.exists() {
        bail!(
            "{} already exists: import writes a new ledger, never over one",
            db.display()
        );
    }
    let pinned =
        keys::read_public_key(key).with_context(|| format!("reading {}", key.display()))?;
    let mut tmp_name = db.as_os_str().to_owned();
    tmp_name.push(".importing");
    let tmp = PathBuf::from(tmp_name);
    // A temporary left by an import that was killed: ours to replace.
    let _ = fs::remove_file(&tmp);
    let result = (|| -> Result<(u64, ledger::verify::VerifiedLog)> {
        let mut importer = ledger::store::Importer::create(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let bar = progress(None, "verifying and importing");
        let log = match from {
            ImportFrom::Bundle(bundle) => {
                let file = fs::File::open(bundle)
                    .with_context(|| format!("reading {}", bundle.display()))?;
                ledger::bundle::verify_bundle_into(
                    std::io::BufReader::with_capacity(1 << 20, file),
                    &pinned,
                    |n| bar.set_position(n),
                    |item| -> Result<()> {
                        match item {
                            ledger::bundle::Verified::Entry(bytes) => importer.entry(bytes)?,
                            ledger::bundle::Verified::Checkpoint(note) => {
                                importer.checkpoint(note)?
                            }
                        }
                        Ok(())
                    },
                )
                .map_err(|e| {
                    match e.downcast_ref::<ledger::verify::VerifyError>() {
                        Some(v) => {
                            Invalid(format!("{}: {v}; nothing was written", bundle.display()))
                                .into()
                        }
                        None => e.context("importing failed; nothing was written"),
                    }
                })?
            }
            ImportFrom::Tiles(source) => {
                let mut fetch = tile_reader(source)?;
                // A storage failure is this machine's, not the source's: kept apart.
                let mut failed: Option<ledger::store::StorageError> = None;
                let verified = ledger::tiles::verify_into(
                    &mut fetch,
                    pinned.clone(),
                    &WitnessPolicy::default(),
                    &mut |n| bar.set_position(n),
                    &mut |item| {
                        let written = match item {
                            ledger::bundle::Verified::Entry(bytes) => importer.entry(bytes),
                            // The checkpoints key rotations took effect at (`rotation/<seq>`)
                            // and the published one: each completes the entries before it.
                            ledger::bundle::Verified::Checkpoint(note) => importer.checkpoint(note),
                        };
                        written.map_err(|e| {
                            let text = e.to_string();
                            failed = Some(e);
                            text
                        })
                    },
                );
                if let Some(e) = failed {
                    return Err(
                        anyhow::Error::from(e).context("importing failed; nothing was written")
                    );
                }
                let v = verified.map_err(|v| {
                    Invalid(format!("{}: {v}; nothing was written", source.display()))
                })?;
                v.log
            }
        };
        bar.finish_and_clear();
        let entries = importer.finish(&log)?;
        let bar = progress(Some(entries), "rebuilding the projections");
        engine::materialize::rebuild(&tmp, |n| bar.set_position(n))?;
        bar.finish_and_clear();
        Ok((entries, log))
    })();
    let (entries, log) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // No overwrite, even of a file created meanwhile.
    if let Err(e) = fs::hard_link(&tmp, db) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("creating {}", db.display()));
    }
    fs::remove_file(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(dir)?.sync_all()?;
    println!(
        "imported {entries} entries, {} checkpoints and {} key(s) into {} (origin {}, root {}); serve it with the key in force, {}",
        log.checkpoints(),
        log.keys().len(),
        db.display(),
        log.origin(),
        log.checkpoint().root.to_base64(),
        log.keys().last().map(|k| k.to_text()).unwrap_or_default()
    );
    Ok(())
}

/// Writes the bundle to a temporary sibling, fsyncs, then renames: a bundle file either
/// exists whole or not at all.
pub(crate) fn write_bundle(snap: &Snapshot, out: &Path) -> Result<(u64, u64)> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let bar = progress(Some(snap.size()), "exporting");
    let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
    let counts = snap.export(&mut w, |n| bar.set_position(n))?;
    w.flush()?;
    drop(w);
    bar.finish_and_clear();
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(out)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(counts)
}

/// Reads witness verifier key files.
pub(crate) fn read_witnesses(files: &[PathBuf], required: Option<usize>) -> Result<WitnessPolicy> {
    let mut witnesses: Vec<(ledger::witness::WitnessKey, &PathBuf)> = Vec::new();
    for f in files {
        let text = keys::read_key_text(f).with_context(|| format!("reading {}", f.display()))?;
        let key = ledger::witness::WitnessKey::from_text(&text)
            .with_context(|| format!("{}: not a witness verifier key", f.display()))?;
        // Witnesses are distinct by public key (FORMAT §5a): one key given twice, under any
        // name, would count twice towards a quorum it is one vote of.
        if let Some((_, earlier)) = witnesses
            .iter()
            .find(|(w, _)| w.public_key() == key.public_key())
        {
            bail!(
                "{} and {} hold the same witness key: each --witness must be a distinct witness",
                earlier.display(),
                f.display()
            );
        }
        witnesses.push((key, f));
    }
    let witnesses: Vec<_> = witnesses.into_iter().map(|(w, _)| w).collect();
    // Naming witnesses and requiring none of them would check nothing anyone asked for:
    // by default every witness named must have cosigned.
    let required = required.unwrap_or(witnesses.len());
    if required > witnesses.len() {
        bail!(
            "--witnesses-required {required} cannot be met by the {} --witness key(s) given",
            witnesses.len()
        );
    }
    Ok(WitnessPolicy {
        witnesses,
        required,
    })
}

fn witnessed_by(found: &[ledger::witness::Cosignature]) -> String {
    if found.is_empty() {
        return String::new();
    }
    let names: Vec<_> = found.iter().map(|c| c.witness.as_str()).collect();
    format!("; cosigned by {}", names.join(", "))
}

pub(crate) fn verify_proof(
    proof: &Path,
    key_files: &[PathBuf],
    witness_files: &[PathBuf],
    witnesses_required: Option<usize>,
) -> Result<()> {
    let keys = key_files
        .iter()
        .map(|k| keys::read_public_key(k).with_context(|| format!("reading {}", k.display())))
        .collect::<Result<Vec<_>>>()?;
    let witnesses = read_witnesses(witness_files, witnesses_required)?;
    let meta = fs::metadata(proof).with_context(|| format!("reading {}", proof.display()))?;
    if meta.len() > 64 << 20 {
        bail!(
            "{} is {} bytes: too large for a proof file",
            proof.display(),
            meta.len()
        );
    }
    let text = fs::read_to_string(proof).with_context(|| format!("reading {}", proof.display()))?;
    let kind = text
        .find("\"format\"")
        .map(|i| &text[i..])
        .unwrap_or_default();
    // Both versions' names: "fleet-ledger-consistency-proof/v1" and ".../v2".
    if kind.contains("fleet-ledger-consistency-proof/") {
        let p = ConsistencyProof::from_json(&text)?;
        let (old, new) = p.verify(&keys).map_err(|e| Invalid(e.to_string()))?;
        let found = witnesses
            .check(new.note())
            .map_err(|e| Invalid(e.to_string()))?;
        let (old, new) = (old.checkpoint(), new.checkpoint());
        println!(
            "OK: the log {} at size {} extends size {}{}",
            new.origin,
            new.size,
            old.size,
            witnessed_by(&found)
        );
    } else {
        let p = InclusionProof::from_json(&text)?;
        let verified = p.verify(&keys).map_err(|e| Invalid(e.to_string()))?;
        let found = witnesses
            .check(verified.note())
            .map_err(|e| Invalid(e.to_string()))?;
        let cp = verified.checkpoint();
        println!(
            "OK: entry seq {} is in the log {} at size {} (root {}){}",
            p.seq,
            cp.origin,
            cp.size,
            cp.root.to_base64(),
            witnessed_by(&found)
        );
    }
    Ok(())
}

pub(crate) fn token(role: &str, name: &str) -> Result<()> {
    let role: fleet_ledger::auth::Role = serde_json::from_value(serde_json::json!(role))
        .map_err(|_| anyhow::anyhow!("--role must be agent, operator, auditor or ci"))?;
    if role == fleet_ledger::auth::Role::Agent {
        ledger::domain::check_host(name)?;
    }
    let t = fleet_ledger::auth::generate_token()?;
    let entry = fleet_ledger::config::TokenEntry {
        sha256: fleet_ledger::auth::hex(&fleet_ledger::auth::digest(&t)),
        role,
        name: name.to_string(),
    };
    println!("token (give it to {name}; it is not stored anywhere): {t}");
    println!(
        "config entry for \"tokens\": {}",
        serde_json::to_string(&entry)?
    );
    Ok(())
}

/// `init`: a new ledger with its genesis entry, signed by `key`.
pub(crate) fn init(db: &Path, key: &Path, origin: &str) -> Result<()> {
    let signer = keys::read_private_key(key)?;
    let ledger = Ledger::create(db, origin, signer, now_us())?;
    println!(
        "created {} (origin {origin}, genesis key {})",
        db.display(),
        ledger.store().public_key().to_text()
    );
    Ok(())
}

/// The hidden `trial-commit`: an empty durable commit over a private layer of the file, run
/// in a child before a command that writes (a file redb aborts on is refused, DECISIONS 112).
pub(crate) fn trial_commit(db: &Path) -> Result<()> {
    ledger::store::trial_commit(db).with_context(|| format!("opening {}", db.display()))
}

/// `prove inclusion`: the proof file on stdout.
pub(crate) fn prove_inclusion(db: &Path, seq: u64, size: Option<u64>) -> Result<()> {
    let proof = open_ro(db)?.snapshot()?.inclusion_proof(seq, size)?;
    println!("{}", proof.to_json());
    Ok(())
}

/// `prove consistency`: the proof file on stdout.
pub(crate) fn prove_consistency(db: &Path, from: u64, to: u64) -> Result<()> {
    let proof = open_ro(db)?.snapshot()?.consistency_proof(from, to)?;
    println!("{}", proof.to_json());
    Ok(())
}

/// `rebuild`: every projection table from the log.
pub(crate) fn rebuild(db: &Path) -> Result<()> {
    let size = open_ro(db)?.snapshot()?.size();
    refuse_damaged(db)?;
    let bar = progress(Some(size), "rebuilding");
    let n = engine::materialize::rebuild(db, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    println!(
        "rebuilt {} projection tables from {n} entries",
        projections::tables::ALL.len()
    );
    Ok(())
}

/// `check`: every projection table against a fold of the log; a difference is named in one
/// line (exit 1).
pub(crate) fn check(db: &Path) -> Result<()> {
    use engine::materialize::CheckOutcome;
    let size = open_ro(db)?.snapshot()?.size();
    let bar = progress(Some(size), "checking");
    let outcome = engine::materialize::check(db, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    match outcome {
        CheckOutcome::Identical { entries } => {
            println!("OK: every projection table equals a fold of the {entries} entries");
            Ok(())
        }
        CheckOutcome::Differs { table, detail } => {
            Err(Invalid(format!("table {table}: {detail}")).into())
        }
        CheckOutcome::Stale { detail } => Err(Invalid(format!(
            "projections are stale: {detail} (run `fleet-ledger rebuild`)"
        ))
        .into()),
    }
}

/// `publish`: the log as tlog-tiles into a directory or an S3 bucket, from where the
/// destination's checkpoint says it was.
pub(crate) fn publish(db: &Path, to: &fleet_ledger::publish::Destination) -> Result<()> {
    let ro = open_ro(db)?;
    let snap = ro.snapshot()?;
    // S3 requests run on a runtime of their own; this thread blocks on them.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let sink = to.open(rt.handle(), fleet_ledger::publish::DEFAULT_REQUEST_TIMEOUT)?;
    let p = fleet_ledger::publish::publish(&snap, sink.as_ref())?;
    if p.from == p.to {
        println!("{to} is already published at size {}", p.to);
    } else {
        println!(
            "published size {} (from {}) into {to}: {} files, {} bytes",
            p.to, p.from, p.files, p.bytes
        );
    }
    Ok(())
}

/// `openapi`: the OpenAPI description on stdout.
pub(crate) fn openapi() -> Result<()> {
    use utoipa::OpenApi as _;
    println!("{}", fleet_ledger::api::ApiDoc::openapi().to_pretty_json()?);
    Ok(())
}

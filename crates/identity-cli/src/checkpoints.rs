//! Signed checkpoints from the command line: print the latest one for an auditor to keep
//! elsewhere, write them beside an export, and check the log against the latest stored one
//! and against one given back from outside.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use identity_settings::Settings;
use identity_store::{Checkpoint, CheckpointVerifier, EventLog};

/// The keys checkpoints are checked with: the files given, or else the service's signing
/// key and its rotated-out keys.
pub(crate) fn keys(public_keys: &[PathBuf]) -> anyhow::Result<CheckpointVerifier> {
    if !public_keys.is_empty() {
        return Ok(CheckpointVerifier::from_files(
            public_keys.iter().map(PathBuf::as_path),
        )?);
    }
    let settings = Settings::from_env()?;
    let own = settings.signing_key_path().filter(|p| p.exists());
    let paths = own.iter().chain(&settings.previous_signing_keys);
    Ok(CheckpointVerifier::from_files(paths.map(PathBuf::as_path))?)
}

/// The latest stored checkpoint, as the JSON document `verify --checkpoint` reads.
pub(crate) async fn latest(log: &EventLog) -> anyhow::Result<String> {
    let c = log
        .latest_checkpoint()
        .await?
        .context("no checkpoint has been signed yet (the server signs one every IDENTITY_CHECKPOINT_INTERVAL_MS while there are new events)")?;
    Ok(serde_json::to_string_pretty(&c)?)
}

/// Writes the stored checkpoints that end within `from..=to` to `path`, one JSON per line.
pub(crate) async fn export(
    log: &EventLog,
    path: &Path,
    from: u64,
    to: Option<u64>,
) -> anyhow::Result<usize> {
    let within = |c: &Checkpoint| c.position >= from && to.is_none_or(|t| c.position <= t);
    let mut text = String::new();
    let mut written = 0;
    for c in log.checkpoints().await?.iter().filter(|c| within(c)) {
        text.push_str(&serde_json::to_string(c)?);
        text.push('\n');
        written += 1;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(written)
}

/// Checks the log against the latest stored checkpoint and, when given, one from `file`;
/// prints a line for each. `false` when any does not match.
pub(crate) async fn verify(
    log: &EventLog,
    file: Option<&Path>,
    keys: &CheckpointVerifier,
) -> anyhow::Result<bool> {
    let mut to_check = Vec::new();
    match log.latest_checkpoint().await? {
        Some(c) => to_check.push(("latest stored checkpoint".to_string(), c)),
        None => println!("checkpoints: none signed yet"),
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --checkpoint {}", path.display()))?;
        let c: Checkpoint = serde_json::from_str(&text)
            .with_context(|| format!("--checkpoint {} is not a checkpoint", path.display()))?;
        to_check.push((format!("checkpoint {}", path.display()), c));
    }
    let mut all_match = true;
    for (name, c) in to_check {
        let check = log.check_checkpoint(&c, keys).await?;
        match &check.problem {
            None => println!(
                "{name}: matches (the hashes of {} events up to position {}, signed {} with key {})",
                c.events, c.position, c.signed_at, c.key_id
            ),
            Some(problem) => {
                all_match = false;
                println!("{name}: DOES NOT MATCH: {problem}");
            }
        }
    }
    Ok(all_match)
}

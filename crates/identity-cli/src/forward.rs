//! `seal-forward`: brings a store written before sealing and keyed ids forward, once
//! (docs/adr/0006, "Bringing old stores forward"). `rewrap-keys`: the second step of a
//! master-key rotation.

use std::collections::HashMap;

use cqrs_es::Aggregate as _;
use identity_domain::claim::{values_held, ClaimCommand, UniqueClaim};
use identity_domain::derive::{aggregate_id, claim_id, legacy_claim_id, CLAIM_V2};
use identity_domain::identification::Identification;
use identity_domain::user::User;
use identity_domain::values::TenantId;
use identity_store::{EventLog, RunningDigest};

fn or_dash(digest: &str) -> &str {
    if digest.is_empty() {
        "-"
    } else {
        digest
    }
}

/// What moving the claims to keyed ids did.
#[derive(Debug, Default)]
pub(crate) struct Rekeyed {
    /// Held claims moved to their keyed id.
    pub(crate) moved: usize,
    /// Old claims nobody holds (released before): left as they are.
    pub(crate) released: usize,
    /// Held claims whose value none of their owner's values gives: left, and named.
    pub(crate) unmatched: Vec<String>,
}

/// Moves every held claim under a version 1 id (a bare hash) to its keyed id: one unit per
/// claim claims the keyed id for the owner and releases the old one. The value is found
/// among the owner's own values (`values_held`), since a hash cannot be reversed.
pub(crate) async fn rekey_claims(log: &EventLog) -> anyhow::Result<Rekeyed> {
    let mut report = Rekeyed::default();
    let metadata = HashMap::from([
        (
            "actor".to_string(),
            "identity-admin seal-forward".to_string(),
        ),
        ("request_id".to_string(), "seal-forward".to_string()),
    ]);
    for (id, _) in log.heads_of_type(UniqueClaim::TYPE).await? {
        let Some((tenant, hashed)) = id.split_once('/') else {
            continue;
        };
        if hashed.starts_with(CLAIM_V2) {
            continue;
        }
        let owner = log
            .load::<UniqueClaim>(&id)
            .await?
            .and_then(|c| c.aggregate.owner);
        let Some(owner) = owner else {
            report.released += 1;
            continue;
        };
        let tenant = TenantId::parse(tenant)?;
        let person_id = aggregate_id(&tenant, owner);
        let person = log.load::<User>(&person_id).await?.map(|l| l.aggregate);
        let kyc = log
            .load::<Identification>(&person_id)
            .await?
            .map(|l| l.aggregate)
            .unwrap_or_default();
        let held = person.map(|p| values_held(&p, &kyc)).unwrap_or_default();
        let Some((kind, value)) = held
            .into_iter()
            .find(|(kind, value)| legacy_claim_id(&tenant, *kind, value) == id)
        else {
            report.unmatched.push(id);
            continue;
        };
        let key = log.id_key(tenant.as_str()).await?;
        let mut unit = log.unit(&metadata);
        unit.decide::<UniqueClaim>(
            &claim_id(&key, &tenant, kind, &value),
            ClaimCommand::Claim { kind, owner },
            &(),
        )
        .await?;
        unit.decide::<UniqueClaim>(&id, ClaimCommand::Release { owner }, &())
            .await?;
        unit.commit()
            .await
            .map_err(|e| anyhow::anyhow!("moving claim {id}: {e}"))?;
        report.moved += 1;
    }
    Ok(report)
}

/// `identity-admin seal-forward`.
pub(crate) async fn seal_forward(log: &EventLog) -> anyhow::Result<bool> {
    // The digests of the whole log before and after, for the release notes: what an
    // auditor's checkpoints of the old log are superseded by.
    let before = log.digest_from(RunningDigest::default(), None).await?;
    let sealed = log.seal_forward().await?;
    println!(
        "sealed {} personal field(s) and erased {} of erased people, in {} event(s) of {} \
         aggregate(s); hash chains rewritten; {} checkpoint(s) of the old log removed",
        sealed.fields_sealed,
        sealed.fields_erased,
        sealed.events_rewritten,
        sealed.aggregates,
        sealed.checkpoints_removed
    );
    let claims = rekey_claims(log).await?;
    println!(
        "claims: {} moved to keyed ids, {} old released one(s) left as they are",
        claims.moved, claims.released
    );
    for id in &claims.unmatched {
        println!("  NOT MOVED: claim {id}: none of its owner's values gives it");
    }
    let after = log.digest_from(RunningDigest::default(), None).await?;
    println!(
        "log digest before: {} ({} events); after: {} ({} events)",
        or_dash(&before.digest),
        before.events,
        or_dash(&after.digest),
        after.events
    );
    Ok(claims.unmatched.is_empty())
}

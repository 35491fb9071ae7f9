//! What the audit tests share: a workload with known positions, the audit client, tampering
//! behind the service's back, and the first break VerifyChain reports.

#![allow(dead_code)] // Each file uses its part.

use identity_proto::v1 as pb;
use identity_proto::v1::audit_service_client::AuditServiceClient;

use crate::common::*;

/// A user with an active wallet credited 10, 20 and 30: wallet events 1..=5.
pub(crate) async fn workload(app: &TestApp) -> (String, String, Vec<u64>) {
    let user = app.register("acme", "audit@example.com").await;
    let wallet = app.active_wallet("acme", &user).await;
    let mut positions = Vec::new();
    for (i, amount) in ["10", "20", "30"].into_iter().enumerate() {
        let p = ok!(app
            .wallets()
            .credit_tokens(req("acme", credit(&wallet, amount, &format!("a{i}")))))
        .position;
        positions.push(p);
    }
    (user, wallet, positions)
}

pub(crate) fn audit(app: &TestApp) -> AuditServiceClient<tonic::transport::Channel> {
    AuditServiceClient::new(app.channel())
}

pub(crate) async fn tamper(app: &TestApp, pg: &str, sqlite: &str) {
    match &app.db {
        TestDb::Postgres(identity_testkit::PgDatabase { url, .. }) => {
            let pool = sqlx::PgPool::connect(url).await.expect("connect");
            sqlx::raw_sql(pg).execute(&pool).await.expect("tamper");
        }
        TestDb::Sqlite { url, .. } => {
            let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
            sqlx::raw_sql(sqlite).execute(&pool).await.expect("tamper");
        }
    }
}

pub(crate) async fn first_break(app: &TestApp) -> pb::ChainBreak {
    let report = ok!(audit(app).verify_chain(req("acme", pb::VerifyChainRequest {})));
    assert!(!report.intact, "tampering went unnoticed: {report:?}");
    report.first_break.expect("a break")
}

/// A server that signs a checkpoint every 50 ms while there are new events.
pub(crate) async fn checkpointing_app(store: Store) -> TestApp {
    spawn_app_with(store, |s| s.checkpoint_interval_ms = 50).await
}

/// Waits (up to 30 s) until a signed checkpoint covers every event written so far.
pub(crate) async fn checkpointed(app: &TestApp) -> identity_store::Checkpoint {
    let head = app.head_position().await;
    let log = app.event_log();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(c) = log.latest_checkpoint().await.expect("reads checkpoints") {
            if c.position >= head {
                return c;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint covered position {head} within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// VerifyChain after tampering that leaves every hash chain intact: no chain break, and the
/// checkpoint, which covers the whole log, does not match.
pub(crate) async fn only_the_checkpoint_catches_it(app: &TestApp) -> pb::CheckpointCheck {
    let report = ok!(audit(app).verify_chain(req("acme", pb::VerifyChainRequest {})));
    assert_eq!(report.breaks_found, 0, "the chains saw it too: {report:?}");
    assert!(!report.intact, "tampering went unnoticed: {report:?}");
    let checkpoint = report.checkpoint.expect("a checkpoint was checked");
    assert!(!checkpoint.matches, "{checkpoint:?}");
    checkpoint
}

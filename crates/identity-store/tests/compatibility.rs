//! The log keeps cqrs-es's table layout: the crates' own repositories (postgres-es and
//! sqlite-es) read what our writer appended and find the same events our decode point does,
//! so the ecosystem's tools keep working on our store.

use std::collections::HashMap;

use chrono::Utc;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::EventStore;
use identity_domain::values::{IdempotencyKey, Network, TenantId, TokenAmount, TokenId, WalletId};
use identity_domain::wallet::{
    OpenWallet, Owner, OwnerType, TokenMovement, Wallet, WalletCommand, WalletType,
};
use identity_store::{EventLog, StoreConfig};
use uuid::Uuid;

mod common;
use common::Fresh;

async fn write_a_wallet(url: &str) -> (EventLog, String) {
    let log = EventLog::open(&StoreConfig {
        url: url.to_string(),
        max_connections: 2,
        cache_capacity: 0,
    })
    .await
    .expect("open log");
    let id = format!("acme/{}", Uuid::from_u128(7));
    let open = WalletCommand::Open(Box::new(OpenWallet {
        wallet_id: WalletId(Uuid::from_u128(7)),
        tenant: TenantId::parse("acme").expect("tenant"),
        owner: Owner {
            owner_type: OwnerType::Tenant,
            owner_id: "treasury".into(),
        },
        owner_identifier: "tenant:treasury@acme".into(),
        wallet_type: WalletType::Internal,
        network: Network::Polygon,
        external_address: None,
        factory: identity_domain::derive::WalletFactory::parse("0x4e59b44847b379578588920ca78fbf26c0b4956c:0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470").ok(),
        at: Utc::now(),
    }));
    let mut commands = vec![open, WalletCommand::Activate { at: Utc::now() }];
    for (amount, key) in [(5, "k1"), (2, "k2")] {
        commands.push(WalletCommand::Credit(TokenMovement {
            token: TokenId::parse("USDC").expect("token"),
            amount: TokenAmount(amount),
            idempotency_key: IdempotencyKey::parse(key).expect("key"),
            at: Utc::now(),
        }));
    }
    for c in &commands {
        log.execute::<Wallet, _>(&id, c, &(), &HashMap::new())
            .await
            .expect("runs");
    }
    (log, id)
}

fn shape(events: &[cqrs_es::EventEnvelope<Wallet>]) -> Vec<(usize, serde_json::Value)> {
    events
        .iter()
        .map(|e| {
            (
                e.sequence,
                serde_json::to_value(&e.payload).expect("serializes"),
            )
        })
        .collect()
}

#[tokio::test]
async fn postgres_es_reads_the_events_our_writer_appended() {
    let (fresh, url) = Fresh::postgres().await;
    let (log, id) = write_a_wallet(&url).await;
    let ours = log.events::<Wallet>(&id).await.expect("our read");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let theirs: PersistedEventStore<_, Wallet> = PersistedEventStore::new_event_store(
        postgres_es::PostgresEventRepository::new(pool.clone()),
    );
    let theirs = theirs
        .load_events(&id)
        .await
        .expect("postgres-es reads the log");
    assert_eq!(ours.len(), 4);
    assert_eq!(shape(&theirs), shape(&ours));
    pool.close().await;
    log.close().await;
    fresh.remove().await;
}

#[tokio::test]
async fn sqlite_es_reads_the_events_our_writer_appended() {
    let (fresh, url) = Fresh::sqlite();
    let (log, id) = write_a_wallet(&url).await;
    let ours = log.events::<Wallet>(&id).await.expect("our read");
    let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
    let theirs: PersistedEventStore<_, Wallet> =
        PersistedEventStore::new_event_store(sqlite_es::SqliteEventRepository::new(pool.clone()));
    let theirs = theirs
        .load_events(&id)
        .await
        .expect("sqlite-es reads the log");
    assert_eq!(ours.len(), 4);
    assert_eq!(shape(&theirs), shape(&ours));
    pool.close().await;
    log.close().await;
    fresh.remove().await;
}

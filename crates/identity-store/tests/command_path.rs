//! The command path: cached aggregates and group commit keep every guarantee of the naive
//! path. Two event logs on one database stand for two replicas, each with its own cache;
//! a stale cache must cost a retry, never a lost or doubled update, and every event must
//! still chain to its predecessor.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::Utc;
use identity_domain::values::{
    IdempotencyKey, Network, TenantId, TokenAmount, TokenId, UserId, WalletId,
};
use identity_domain::wallet::{
    OpenWallet, Owner, OwnerType, TokenMovement, Wallet, WalletCommand, WalletType,
};
use identity_domain::DomainError;
use identity_store::{EventLog, ExecuteError, StoreConfig, DEFAULT_CACHE_CAPACITY};
use uuid::Uuid;

mod common;
use common::Fresh;

async fn open(url: &str) -> EventLog {
    EventLog::open(&StoreConfig {
        url: url.to_string(),
        max_connections: 8,
        cache_capacity: DEFAULT_CACHE_CAPACITY,
    })
    .await
    .expect("open log")
}

fn tenant() -> TenantId {
    TenantId::parse("acme").expect("tenant")
}

fn wallet_id(n: u128) -> String {
    format!("acme/{}", Uuid::from_u128(n))
}

async fn open_wallet(log: &EventLog, n: u128) {
    let command = WalletCommand::Open(Box::new(OpenWallet {
        wallet_id: WalletId(Uuid::from_u128(n)),
        tenant: tenant(),
        owner: Owner {
            owner_type: OwnerType::User,
            owner_id: UserId(Uuid::from_u128(1000 + n)).to_string(),
        },
        owner_identifier: format!("owner{n}@acme.id"),
        wallet_type: WalletType::Internal,
        network: Network::Polygon,
        external_address: None,
        factory: identity_domain::derive::WalletFactory::parse("0x4e59b44847b379578588920ca78fbf26c0b4956c:0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470").ok(),
        at: Utc::now(),
    }));
    log.execute::<Wallet, _>(&wallet_id(n), &command, &(), &HashMap::new())
        .await
        .expect("open wallet");
}

fn credit(amount: u128, key: &str) -> WalletCommand {
    WalletCommand::Credit(TokenMovement {
        token: TokenId::parse("USDC").expect("token"),
        amount: TokenAmount(amount),
        idempotency_key: IdempotencyKey::parse(key).expect("key"),
        at: Utc::now(),
    })
}

fn debit(amount: u128, key: &str) -> WalletCommand {
    WalletCommand::Debit(TokenMovement {
        token: TokenId::parse("USDC").expect("token"),
        amount: TokenAmount(amount),
        idempotency_key: IdempotencyKey::parse(key).expect("key"),
        at: Utc::now(),
    })
}

fn usdc(wallet: &Wallet) -> u128 {
    wallet.balance(&TokenId::parse("USDC").expect("token")).0
}

async fn assert_chains_intact(log: &EventLog, events: u64) {
    let report = log.verify_chains(None, |_| {}).await.expect("verify");
    assert!(
        report.intact(),
        "a hash chain is broken: {:?}",
        report.breaks
    );
    assert_eq!(report.events_checked, events);
    assert_eq!(report.unhashed, 0);
}

/// Alternating commands on one wallet from two logs: each one's cache is stale every time.
async fn stale_caches_cost_a_retry_not_an_update(url: String) {
    let (a, b) = (open(&url).await, open(&url).await);
    open_wallet(&a, 1).await;
    let mut positions = Vec::new();
    for i in 0..30u32 {
        let log = if i % 2 == 0 { &a } else { &b };
        let done = log
            .execute::<Wallet, _>(
                &wallet_id(1),
                &credit(2, &format!("k{i}")),
                &(),
                &HashMap::new(),
            )
            .await
            .unwrap_or_else(|e| panic!("credit {i}: {e}"));
        assert_eq!(usdc(&done.aggregate), 2 * u128::from(i + 1), "credit {i}");
        assert_eq!(done.sequence, i as usize + 2);
        positions.push(done.position);
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    // A replay from the store agrees with both caches' last answers.
    let loaded = b
        .load::<Wallet>(&wallet_id(1))
        .await
        .expect("load")
        .expect("wallet");
    assert_eq!(usdc(&loaded.aggregate), 60);
    assert_eq!(loaded.sequence, 31);
    assert_chains_intact(&a, 31).await;
}

/// Many concurrent credits on a few wallets from two logs at once: the batches of each log's
/// writer mix commands that conflict with the other log's with commands that do not.
async fn concurrent_commands_from_two_replicas_are_all_applied_once(url: String) {
    let (a, b) = (open(&url).await, open(&url).await);
    for w in 0..4 {
        open_wallet(&a, 10 + w).await;
    }
    let mut tasks = Vec::new();
    for i in 0..160u128 {
        let log = if i % 3 == 0 { b.clone() } else { a.clone() };
        tasks.push(tokio::spawn(async move {
            let id = wallet_id(10 + i % 4);
            log.execute::<Wallet, _>(&id, &credit(1 + i, &format!("c{i}")), &(), &HashMap::new())
                .await
                .map(|done| done.position)
                .map_err(|e| e.to_string())
        }));
    }
    let mut positions = BTreeSet::new();
    for task in tasks {
        let position = task
            .await
            .expect("task")
            .expect("every credit goes through");
        assert!(
            positions.insert(position),
            "two commands answered with one position"
        );
    }
    let mut total = 0;
    for w in 0..4u128 {
        let loaded = a
            .load::<Wallet>(&wallet_id(10 + w))
            .await
            .expect("load")
            .expect("wallet");
        let expected: u128 = (0..160u128).filter(|i| i % 4 == w).map(|i| 1 + i).sum();
        assert_eq!(usdc(&loaded.aggregate), expected, "wallet {w}");
        total += usdc(&loaded.aggregate);
    }
    assert_eq!(total, (1..=160u128).sum::<u128>());
    assert_chains_intact(&a, 164).await;
}

/// A refused command leaves no trace in the cache: the next command sees the stored state.
async fn a_refused_command_does_not_poison_the_cache(url: String) {
    let log = open(&url).await;
    open_wallet(&log, 20).await;
    log.execute::<Wallet, _>(&wallet_id(20), &credit(5, "k1"), &(), &HashMap::new())
        .await
        .expect("credit");
    let refused = log
        .execute::<Wallet, _>(&wallet_id(20), &debit(6, "k2"), &(), &HashMap::new())
        .await;
    assert!(
        matches!(
            refused,
            Err(ExecuteError::Domain(
                DomainError::InsufficientBalance { .. }
            ))
        ),
        "{refused:?}"
    );
    let done = log
        .execute::<Wallet, _>(&wallet_id(20), &debit(5, "k3"), &(), &HashMap::new())
        .await
        .expect("debit");
    assert_eq!(usdc(&done.aggregate), 0);
    assert_eq!(done.sequence, 3);
    // The same key again answers from the aggregate's memory: no new event, same position.
    let again = log
        .execute::<Wallet, _>(&wallet_id(20), &debit(5, "k3"), &(), &HashMap::new())
        .await
        .expect("replayed debit");
    assert!(again.events.is_empty());
    assert_eq!(again.position, done.position);
    assert_chains_intact(&log, 3).await;
}

/// Answers that append nothing (a refusal, an idempotent retry) are decided on cached state:
/// they must still follow what another replica appended since.
async fn answers_that_append_nothing_follow_the_other_replica(url: String) {
    let (a, b) = (open(&url).await, open(&url).await);
    open_wallet(&a, 30).await;
    a.execute::<Wallet, _>(&wallet_id(30), &credit(5, "k1"), &(), &HashMap::new())
        .await
        .expect("credit on A");
    // B credits 10 more; A's cache still says 5.
    b.execute::<Wallet, _>(&wallet_id(30), &credit(10, "k2"), &(), &HashMap::new())
        .await
        .expect("credit on B");
    let debit_on_a = a
        .execute::<Wallet, _>(&wallet_id(30), &debit(12, "k3"), &(), &HashMap::new())
        .await
        .expect("A sees B's credit: 15 covers 12");
    assert_eq!(usdc(&debit_on_a.aggregate), 3);
    // B debits the rest; a retry of k3 on B answers from B's (stale) cache.
    b.execute::<Wallet, _>(&wallet_id(30), &debit(3, "k4"), &(), &HashMap::new())
        .await
        .expect("debit on B");
    let retry = a
        .execute::<Wallet, _>(&wallet_id(30), &debit(12, "k3"), &(), &HashMap::new())
        .await
        .expect("retry on A");
    assert!(retry.events.is_empty(), "a retry appends nothing");
    assert_eq!(retry.sequence, 5, "the retry answered from the stored head");
    assert_eq!(usdc(&retry.aggregate), 0, "B's debit is seen");
    // A refusal on a stale cache: B empties nothing here, A would wrongly refuse.
    b.execute::<Wallet, _>(&wallet_id(30), &credit(7, "k5"), &(), &HashMap::new())
        .await
        .expect("credit on B");
    let spent = a
        .execute::<Wallet, _>(&wallet_id(30), &debit(7, "k6"), &(), &HashMap::new())
        .await
        .expect("A must not refuse on a stale balance of 0");
    assert_eq!(usdc(&spent.aggregate), 0);
    assert_chains_intact(&a, 7).await;
}

/// A command whose events the database refuses (PostgreSQL's jsonb has no U+0000) shares a
/// group-commit batch with good ones: only it fails.
async fn a_command_the_store_refuses_fails_alone_in_its_batch(url: String) {
    let log = open(&url).await;
    let mut tasks = Vec::new();
    for i in 0..40u128 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let poisoned = i % 2 == 1;
            let command = WalletCommand::Open(Box::new(OpenWallet {
                wallet_id: WalletId(Uuid::from_u128(100 + i)),
                tenant: tenant(),
                owner: Owner {
                    owner_type: OwnerType::User,
                    owner_id: if poisoned {
                        format!("owner{i}\u{0}")
                    } else {
                        UserId(Uuid::from_u128(2000 + i)).to_string()
                    },
                },
                owner_identifier: format!("owner{i}@acme.id"),
                wallet_type: WalletType::Internal,
                network: Network::Polygon,
                external_address: None,
                factory: identity_domain::derive::WalletFactory::parse("0x4e59b44847b379578588920ca78fbf26c0b4956c:0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470").ok(),
                at: Utc::now(),
            }));
            let outcome = log
                .execute::<Wallet, _>(&wallet_id(100 + i), &command, &(), &HashMap::new())
                .await;
            (poisoned, outcome.map(|_| ()).map_err(|e| e.to_string()))
        }));
    }
    let mut good = 0;
    let mut refused = 0;
    for task in tasks {
        let (poisoned, outcome) = task.await.expect("task");
        if poisoned {
            refused += usize::from(outcome.is_err());
        } else {
            outcome.unwrap_or_else(|e| panic!("a good command failed beside a bad one: {e}"));
            good += 1;
        }
    }
    assert_eq!(good, 20);
    if log.kind() == "postgres" {
        assert_eq!(refused, 20, "jsonb refuses every poisoned payload");
    }
    let events = log.head_position().await.expect("head");
    assert!(events >= 20, "{events}");
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (fresh, url) = super::Fresh::postgres().await;
                    tokio::time::timeout(super::Duration::from_secs(60), super::$name(url))
                        .await
                        .expect("timed out");
                    fresh.remove().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (fresh, url) = super::Fresh::sqlite();
                    tokio::time::timeout(super::Duration::from_secs(60), super::$name(url))
                        .await
                        .expect("timed out");
                    fresh.remove().await;
                }
            )*
        }
    };
}

on_both_stores!(
    stale_caches_cost_a_retry_not_an_update,
    concurrent_commands_from_two_replicas_are_all_applied_once,
    a_refused_command_does_not_poison_the_cache,
    answers_that_append_nothing_follow_the_other_replica,
    a_command_the_store_refuses_fails_alone_in_its_batch,
);

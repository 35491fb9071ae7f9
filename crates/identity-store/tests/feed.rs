//! The global feed never skips or repeats an event, even when transactions commit out of
//! order. Writers insert with deliberately delayed, randomly ordered commits while a reader
//! tails the feed; the reader must see every committed event exactly once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use identity_store::{EventLog, FeedCursor, StoreConfig};

mod common;
use common::Fresh;

/// Small deterministic jitter without a random crate.
fn jitter(seed: u64) -> Duration {
    Duration::from_millis(
        (seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            >> 59)
            * 3,
    )
}

async fn tail_while_writing(log: EventLog, writers: Vec<tokio::task::JoinHandle<Vec<u64>>>) {
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let log = log.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut cursor = FeedCursor::default();
            let mut seen = Vec::new();
            let mut idle_after_done = 0;
            loop {
                let batch = log.read_feed(cursor, 7).await.expect("read feed");
                if batch.is_empty() {
                    if done.load(Ordering::SeqCst) {
                        idle_after_done += 1;
                        if idle_after_done > 3 {
                            return seen;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                for e in batch {
                    assert!(e.cursor() > cursor, "the feed went backwards");
                    cursor = e.cursor();
                    seen.push(e.position);
                }
            }
        })
    };
    let mut written = BTreeSet::new();
    for w in writers {
        written.extend(w.await.expect("writer"));
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("reader");
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an event was delivered twice");
    assert_eq!(unique, written, "the tailing reader missed events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_sees_every_event_exactly_once_despite_out_of_order_commits_on_postgres() {
    let (fresh, url) = Fresh::postgres().await;
    let log = EventLog::open(&StoreConfig {
        url: url.clone(),
        max_connections: 20,
        cache_capacity: identity_store::DEFAULT_CACHE_CAPACITY,
    })
    .await
    .expect("open");
    let pool = log.pg_pool().expect("postgres").clone();
    let writers = (0..8u64)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut positions = Vec::new();
                for i in 0..40u64 {
                    let mut tx = pool.begin().await.expect("begin");
                    let pos: i64 = sqlx::query_scalar(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
                         VALUES ('FeedTest', $1, 1, 'Written', '1.0', '{}', '{}', '') RETURNING global_position",
                    )
                    .bind(format!("w{w}-{i}"))
                    .fetch_one(&mut *tx)
                    .await
                    .expect("insert");
                    // Hold the transaction open a while: later positions commit first.
                    tokio::time::sleep(jitter(w * 1000 + i)).await;
                    tx.commit().await.expect("commit");
                    positions.push(pos as u64);
                }
                positions
            })
        })
        .collect();
    tail_while_writing(log.clone(), writers).await;
    log.close().await;
    fresh.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_sees_every_event_exactly_once_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("identity-feed-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/events.db", dir.display());
    let log = EventLog::open(&StoreConfig {
        url,
        max_connections: 4,
        cache_capacity: 0,
    })
    .await
    .expect("open");
    let writers = (0..4u64)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut positions = Vec::new();
                for i in 0..25u64 {
                    let id = format!("w{w}-{i}");
                    let claim = identity_domain::claim::ClaimCommand::Claim {
                        kind: identity_domain::ClaimKind::Email,
                        owner: identity_domain::values::UserId(uuid::Uuid::new_v4()),
                    };
                    let done = log
                        .execute::<identity_domain::claim::UniqueClaim, _>(
                            &id,
                            &claim,
                            &(),
                            &Default::default(),
                        )
                        .await
                        .expect("append");
                    positions.push(done.position);
                    tokio::time::sleep(jitter(w * 100 + i)).await;
                }
                positions
            })
        })
        .collect();
    tail_while_writing(log.clone(), writers).await;
    log.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

//! Migrations run through sqlx's migrator from one folder per dialect. A store migrated by the
//! runner before it (versions in `schema_migrations`) opens without anything applied twice;
//! replicas starting together migrate once; an edited shipped migration is refused.

use identity_store::{EventLog, StoreConfig, StoreError, DEFAULT_CACHE_CAPACITY};

mod common;
use common::Fresh;

async fn open(url: &str) -> Result<EventLog, StoreError> {
    EventLog::open(&StoreConfig {
        url: url.to_string(),
        max_connections: 4,
        cache_capacity: DEFAULT_CACHE_CAPACITY,
    })
    .await
}

/// Runs `statements` on the store behind its back.
async fn sql(url: &str, statements: &str) {
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.expect("connects");
        sqlx::raw_sql(statements)
            .execute(&pool)
            .await
            .expect("runs");
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.expect("connects");
        sqlx::raw_sql(statements)
            .execute(&pool)
            .await
            .expect("runs");
        pool.close().await;
    }
}

async fn count(url: &str, query: &str) -> i64 {
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.expect("connects");
        let n = sqlx::query_scalar(query)
            .fetch_one(&pool)
            .await
            .expect("counts");
        pool.close().await;
        n
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.expect("connects");
        let n = sqlx::query_scalar(query)
            .fetch_one(&pool)
            .await
            .expect("counts");
        pool.close().await;
        n
    }
}

const MIGRATIONS: i64 = 7;
/// The versions the earlier runner knew (it never had the checkpoints table).
const EARLIER_RUNNER: i64 = 5;
const APPLIED: &str = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";

async fn each_store(test: impl AsyncFn(&str)) {
    for (fresh, url) in [Fresh::postgres().await, Fresh::sqlite()] {
        test(&url).await;
        fresh.remove().await;
    }
}

#[tokio::test]
async fn a_store_migrated_by_the_earlier_runner_opens_with_nothing_applied_twice() {
    each_store(async |url| {
        open(url).await.expect("a new store").close().await;
        // What the earlier runner left: its own table, no `_sqlx_migrations`, and events.
        sql(
            url,
            "DROP TABLE _sqlx_migrations;
             DROP TABLE checkpoints;
             DROP TABLE data_keys;
             CREATE TABLE schema_migrations (version bigint PRIMARY KEY);
             INSERT INTO schema_migrations (version) VALUES (1), (2), (3), (4), (5);
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata, global_position, hash)
             VALUES ('Wallet', 'acme/w', 1, 'WalletOpened', '1.0', '{}', '{}', 1, 'h');",
        )
        .await;

        let log = open(url).await.expect("the earlier store opens");
        assert_eq!(log.head_position().await.expect("head"), 1, "{url}");
        log.close().await;
        assert_eq!(count(url, APPLIED).await, MIGRATIONS, "{url}");
        assert_eq!(
            count(url, "SELECT COUNT(*) FROM schema_migrations").await,
            EARLIER_RUNNER,
            "the earlier table is left for an earlier binary"
        );
        // A second start finds everything applied.
        open(url).await.expect("opens again").close().await;
        assert_eq!(count(url, "SELECT COUNT(*) FROM events").await, 1, "{url}");
    })
    .await;
}

#[tokio::test]
async fn replicas_starting_together_on_a_new_store_migrate_it_once() {
    each_store(async |url| {
        let opened = futures::future::join_all((0..4).map(|_| open(url))).await;
        for log in opened {
            log.expect("every replica opens").close().await;
        }
        assert_eq!(count(url, APPLIED).await, MIGRATIONS, "{url}");
    })
    .await;
}

#[tokio::test]
async fn a_store_whose_shipped_migration_differs_is_refused() {
    each_store(async |url| {
        open(url).await.expect("a new store").close().await;
        let other = if url.starts_with("postgres") {
            "decode('00', 'hex')"
        } else {
            "X'00'"
        };
        sql(
            url,
            &format!("UPDATE _sqlx_migrations SET checksum = {other} WHERE version = 3"),
        )
        .await;
        let refused = open(url).await.expect_err("an edited migration");
        let chain = identity_store::Report(&refused).to_string();
        assert!(chain.contains("modified"), "{chain}");
    })
    .await;
}

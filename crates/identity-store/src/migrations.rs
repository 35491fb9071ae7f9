//! Schema migrations, applied at start-up, in order, each once. Never edit a shipped
//! migration: add the next one.
//!
//! The events table keeps the exact columns postgres-es / sqlite-es write (their INSERT names
//! its columns) and adds columns the database fills by default.

use sqlx::{PgPool, SqlitePool};

use crate::StoreError;

const POSTGRES: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    global_position bigserial   NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    -- The writing transaction: a reader of the global feed reads only below the oldest
    -- transaction still open, so a late commit can never be skipped.
    xid             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX events_global_position ON events (global_position);
CREATE INDEX events_recorded_at ON events (recorded_at);
"#,
    ),
    (
        2,
        r#"
-- The global feed reads in (xid, global_position) order below the oldest open transaction.
CREATE INDEX events_feed ON events (xid, global_position);
-- Wake feed readers in every process on commit (NOTIFY is delivered at commit, deduplicated
-- per transaction).
CREATE FUNCTION identity_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('identity_events', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION identity_notify_events();
"#,
    ),
    (
        3,
        r#"
-- The hash chaining each event to the previous event of its aggregate (chain.rs).
ALTER TABLE events ADD COLUMN hash text;
"#,
    ),
    (
        4,
        r#"
-- Every new event is hashed: an unhashed one would be a quiet gap in its chain. NOT VALID
-- leaves rows written before hashing existed alone (verification reports them as breaks).
ALTER TABLE events ADD CONSTRAINT events_hash_required CHECK (hash IS NOT NULL) NOT VALID;
"#,
    ),
    (
        5,
        r#"
-- Messages for the delivery channel, written before the command that makes them due
-- (outbox.rs); a row lives until it is sent or expires.
CREATE TABLE outbox (
    id           text        PRIMARY KEY,
    aggregate_id text        NOT NULL,
    code_hash    text        NOT NULL,
    body         text        NOT NULL,
    expires_at   bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX outbox_created_at ON outbox (created_at);
"#,
    ),
];

const SQLITE: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE events (
    aggregate_type  text    NOT NULL,
    aggregate_id    text    NOT NULL,
    sequence        integer NOT NULL CHECK (sequence >= 0),
    event_type      text    NOT NULL,
    event_version   text    NOT NULL,
    payload         text    NOT NULL,
    metadata        text    NOT NULL,
    global_position integer,
    recorded_at     text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;
CREATE UNIQUE INDEX events_global_position ON events (global_position);
-- SQLite serializes writers, so the next position is simply one past the highest; rowid is
-- not used because VACUUM may renumber it.
CREATE TRIGGER events_assign_position AFTER INSERT ON events
BEGIN
    UPDATE events
       SET global_position = (SELECT COALESCE(MAX(global_position), 0) + 1 FROM events)
     WHERE rowid = NEW.rowid;
END;
"#,
    ),
    (
        2,
        r#"
-- The hash chaining each event to the previous event of its aggregate (chain.rs).
ALTER TABLE events ADD COLUMN hash text;
"#,
    ),
    (
        3,
        r#"
-- The group-commit writer (append.rs) gives each event its position in the INSERT and reads
-- it back with RETURNING; the trigger now fills in only rows written without one.
DROP TRIGGER events_assign_position;
CREATE TRIGGER events_assign_position AFTER INSERT ON events
WHEN NEW.global_position IS NULL
BEGIN
    UPDATE events
       SET global_position = (SELECT COALESCE(MAX(global_position), 0) + 1 FROM events)
     WHERE rowid = NEW.rowid;
END;
"#,
    ),
    (
        4,
        r#"
-- Every new event is hashed (SQLite cannot add a CHECK to an existing table).
CREATE TRIGGER events_hash_required BEFORE INSERT ON events
WHEN NEW.hash IS NULL
BEGIN
    SELECT RAISE(ABORT, 'events.hash must not be NULL');
END;
"#,
    ),
    (
        5,
        r#"
-- Messages for the delivery channel, written before the command that makes them due
-- (outbox.rs); a row lives until it is sent or expires.
CREATE TABLE outbox (
    id           text    PRIMARY KEY,
    aggregate_id text    NOT NULL,
    code_hash    text    NOT NULL,
    body         text    NOT NULL,
    expires_at   integer NOT NULL,
    created_at   text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
CREATE INDEX outbox_created_at ON outbox (created_at);
"#,
    ),
];

pub(crate) async fn postgres(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // Replicas may start together: one migrates, the others wait and then find nothing to do.
    sqlx::query("SELECT pg_advisory_xact_lock(7305218814)")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await?;
    for (version, sql) in POSTGRES {
        if applied.contains(version) {
            continue;
        }
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn sqlite(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    // IMMEDIATE takes the write lock up front, so two processes cannot both migrate.
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let result = async {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))) STRICT",
        )
        .execute(&mut *conn)
        .await?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&mut *conn)
            .await?;
        for (version, sql) in SQLITE {
            if applied.contains(version) {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *conn).await?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES (?1)")
                .bind(version)
                .execute(&mut *conn)
                .await?;
            tracing::info!(version, "applied SQLite migration");
        }
        Ok::<(), sqlx::Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
            Ok(())
        }
        Err(e) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            Err(e.into())
        }
    }
}

//! Rebuilding a read model beside the live one and swapping it in, and verifying a read
//! model against a fresh replay.

use super::*;

/// The PostgreSQL advisory-lock key held while a read model is rebuilt.
pub(crate) fn rebuild_key(p: Projection) -> i64 {
    0x6964_656e_0100 + p as i64
}

/// Held while a rebuild runs. Its connection is closed, never returned to the pool, when
/// dropped: PostgreSQL then releases the advisory lock with the session.
#[derive(Debug)]
pub(crate) struct RebuildLease {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
}

impl Drop for RebuildLease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl Projections {
    /// Takes the rebuild lock of a read model: `None` when another process holds it. On
    /// SQLite (one process) the in-process job table is the only guard.
    pub(crate) async fn try_rebuild_lease(
        &self,
        p: Projection,
    ) -> Result<Option<RebuildLease>, ProjectionError> {
        if self.dialect == Dialect::Sqlite {
            return Ok(Some(RebuildLease { conn: None }));
        }
        let mut conn = self.writer.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(rebuild_key(p))
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(RebuildLease { conn: Some(conn) }))
    }

    /// Rebuilds a read model from position 0 beside the live one, then swaps it in while the
    /// service keeps running. Returns the number of events replayed.
    pub async fn rebuild(&self, p: Projection) -> Result<u64, ProjectionError> {
        self.rebuild_with_progress(p, |_| {}).await
    }

    /// [`Projections::rebuild`], calling `progress` with the events replayed so far after
    /// every batch.
    pub async fn rebuild_with_progress(
        &self,
        p: Projection,
        progress: impl FnMut(u64),
    ) -> Result<u64, ProjectionError> {
        let suffix = format!("__r{}", chrono::Utc::now().timestamp_micros());
        let replayed = self.build_beside(p, &suffix, progress).await?;
        let guard = self.locks[&p].lock().await;
        // Catch up with what arrived meanwhile, then swap under the projector's lock.
        let shadow_name = format!("{}{suffix}", p.name());
        let mut cursor = Self::checkpoint_of(&self.writer, self.dialect, &shadow_name).await?;
        loop {
            let (next, n, _) = self.step(p, &shadow_name, &suffix, cursor, BATCH).await?;
            if n == 0 {
                break;
            }
            cursor = next;
        }
        let mut tx = self.writer.begin_with(self.dialect.begin()).await?;
        for t in schema::tables(p) {
            sqlx::query(&format!("DROP TABLE IF EXISTS {}", t.name))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "ALTER TABLE {}{suffix} RENAME TO {}",
                t.name, t.name
            ))
            .execute(&mut *tx)
            .await?;
            // Indexes keep their names through a table's rename: give them the live names,
            // which the next start looks for.
            for index in schema::indexes(t, self.trigram) {
                let name = schema::index_name(index);
                let shadow = name.replace("{t}", &format!("{}{suffix}", t.name));
                let live = name.replace("{t}", t.name);
                let statements = match self.dialect {
                    Dialect::Postgres => {
                        vec![format!("ALTER INDEX IF EXISTS {shadow} RENAME TO {live}")]
                    }
                    // SQLite cannot rename an index: make it anew under the live name.
                    Dialect::Sqlite => vec![
                        format!("DROP INDEX IF EXISTS {shadow}"),
                        index.replace("{t}", t.name),
                    ],
                };
                for statement in statements {
                    sqlx::query(&statement).execute(&mut *tx).await?;
                }
            }
        }
        self.save_checkpoint(&mut tx, p.name(), cursor).await?;
        sqlx::query(
            &self
                .dialect
                .placeholders("DELETE FROM projection_checkpoints WHERE name = $1"),
        )
        .bind(&shadow_name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.wake_feed_readers();
        self.publish(p, cursor);
        drop(guard);
        tracing::info!(
            projection = p.name(),
            replayed,
            "read model rebuilt and swapped in"
        );
        Ok(replayed)
    }

    /// Replays every event into fresh tables with `suffix`; returns the events replayed.
    ///
    /// A reader task streams the log in large chunks while this one folds them in memory
    /// ([`apply::Folder`]): a wallet credited a hundred times is written once, not a hundred
    /// times. Pending rows are written, with the shadow checkpoint, when they reach
    /// [`REBUILD_PENDING`], when an event must be applied alone, and at the end, so memory
    /// stays bounded however long the log is.
    /// Creates the tables of a copy of `p` beside the live one (named with `suffix`) and its
    /// checkpoint at the start of the feed; returns the copy's checkpoint name.
    async fn start_shadow(&self, p: Projection, suffix: &str) -> Result<String, ProjectionError> {
        Self::create_tables(&self.writer, self.dialect, p, suffix, self.trigram).await?;
        let shadow_name = format!("{}{suffix}", p.name());
        sqlx::query(&self.dialect.placeholders(
            "INSERT INTO projection_checkpoints (name, xid, position, updated_at) VALUES ($1, 0, 0, $2)",
        ))
        .bind(&shadow_name)
        .bind(now_text())
        .execute(&self.writer)
        .await?;
        Ok(shadow_name)
    }

    pub(crate) async fn build_beside(
        &self,
        p: Projection,
        suffix: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, ProjectionError> {
        let shadow_name = self.start_shadow(p, suffix).await?;
        let (chunks, mut received) = tokio::sync::mpsc::channel(2);
        let log = self.log.clone();
        let (read, pending) = self.replay_sizes;
        let reader = tokio::spawn(async move {
            let mut cursor = FeedCursor::default();
            loop {
                let chunk = log.read_feed(cursor, read).await;
                let last = match &chunk {
                    Ok(events) => events.last().map(identity_store::StoredEvent::cursor),
                    Err(_) => None,
                };
                if chunks.send(chunk).await.is_err() {
                    return;
                }
                match last {
                    Some(c) => cursor = c,
                    None => return,
                }
            }
        });
        let sql = Sql::new(self.dialect, suffix);
        let mut folder = apply::Folder::new(p);
        let mut replayed = 0u64;
        let mut cursor = FeedCursor::default();
        let mut saved = cursor;
        while let Some(chunk) = received.recv().await {
            let events = chunk?;
            let Some(last) = events.last().map(identity_store::StoredEvent::cursor) else {
                break;
            };
            let mut tx = None;
            for e in &events {
                if !folder.fold(e)? {
                    let conn = match &mut tx {
                        Some(tx) => tx,
                        None => tx.insert(self.writer.begin_with(self.dialect.begin()).await?),
                    };
                    folder.apply_alone(conn, &sql, e).await?;
                }
            }
            cursor = last;
            replayed += events.len() as u64;
            if tx.is_some() || folder.pending() >= pending {
                let mut tx = match tx {
                    Some(tx) => tx,
                    None => self.writer.begin_with(self.dialect.begin()).await?,
                };
                folder.finish(&mut tx, &sql).await?;
                self.save_checkpoint(&mut tx, &shadow_name, cursor).await?;
                tx.commit().await?;
                self.wake_feed_readers();
                saved = cursor;
            }
            progress(replayed);
        }
        reader.abort();
        if saved != cursor {
            let mut tx = self.writer.begin_with(self.dialect.begin()).await?;
            folder.finish(&mut tx, &sql).await?;
            self.save_checkpoint(&mut tx, &shadow_name, cursor).await?;
            tx.commit().await?;
            self.wake_feed_readers();
        }
        Ok(replayed)
    }

    pub(crate) async fn save_checkpoint(
        &self,
        conn: &mut sqlx::AnyConnection,
        name: &str,
        cursor: FeedCursor,
    ) -> Result<(), ProjectionError> {
        sqlx::query(&self.dialect.placeholders(
            "UPDATE projection_checkpoints SET xid = $1, position = $2, updated_at = $3 WHERE name = $4",
        ))
        .bind(i64::try_from(cursor.xid).unwrap_or(i64::MAX))
        .bind(i64::try_from(cursor.position).unwrap_or(i64::MAX))
        .bind(now_text())
        .bind(name)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Replays every event into fresh tables beside the live ones, up to the live
    /// projector's checkpoint, and lists every row that differs. Drops the fresh tables.
    pub async fn verify(&self, p: Projection) -> Result<Vec<String>, ProjectionError> {
        let suffix = format!("__v{}", chrono::Utc::now().timestamp_micros());
        let result = self.verify_with(p, &suffix).await;
        for t in schema::tables(p) {
            let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {}{suffix}", t.name))
                .execute(&self.writer)
                .await;
        }
        let _ = sqlx::query(
            &self
                .dialect
                .placeholders("DELETE FROM projection_checkpoints WHERE name = $1"),
        )
        .bind(format!("{}{suffix}", p.name()))
        .execute(&self.writer)
        .await;
        result
    }

    pub(crate) async fn verify_with(
        &self,
        p: Projection,
        suffix: &str,
    ) -> Result<Vec<String>, ProjectionError> {
        // Hold the live projector still so both sides stand at the same place in the feed.
        let _guard = self.locks[&p].lock().await;
        let live = Self::checkpoint_of(&self.writer, self.dialect, p.name()).await?;
        self.start_shadow(p, suffix).await?;
        let mut cursor = FeedCursor::default();
        while cursor < live {
            let events = self.log.read_feed(cursor, BATCH).await?;
            let events: Vec<_> = events.into_iter().filter(|e| e.cursor() <= live).collect();
            if events.is_empty() {
                break;
            }
            let sql = Sql::new(self.dialect, suffix);
            let mut tx = self.writer.begin_with(self.dialect.begin()).await?;
            apply::apply_batch(p, &mut tx, &sql, &events).await?;
            tx.commit().await?;
            self.wake_feed_readers();
            cursor = events
                .last()
                .map(identity_store::StoredEvent::cursor)
                .unwrap_or(live);
        }
        let mut differences = Vec::new();
        for t in schema::tables(p) {
            let live_rows = self.dump(t.name, t.key).await?;
            let fresh_rows = self.dump(&format!("{}{suffix}", t.name), t.key).await?;
            if live_rows != fresh_rows {
                let n = live_rows.len().max(fresh_rows.len());
                for i in 0..n {
                    let a = live_rows.get(i);
                    let b = fresh_rows.get(i);
                    if a != b {
                        differences.push(format!("{}: live {:?} != replayed {:?}", t.name, a, b));
                        if differences.len() > 20 {
                            return Ok(differences);
                        }
                    }
                }
            }
        }
        Ok(differences)
    }

    /// Every row of a table as text, in key order.
    pub(crate) async fn dump(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Vec<String>, ProjectionError> {
        let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {key}"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let mut cells = Vec::new();
                for i in 0..r.len() {
                    let cell = r
                        .try_get::<Option<String>, _>(i)
                        .map(|v| v.unwrap_or_else(|| "NULL".into()))
                        .or_else(|_| {
                            r.try_get::<Option<i64>, _>(i)
                                .map(|v| v.map_or("NULL".into(), |n| n.to_string()))
                        })?;
                    cells.push(cell);
                }
                Ok(cells.join("|"))
            })
            .collect()
    }
}

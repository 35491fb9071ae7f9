//! The projector of each read model: it holds the read model's lease, tails the feed from
//! the checkpoint and applies batches, each in one transaction with its checkpoint.

use super::*;

/// The PostgreSQL advisory-lock key of a projector's lease (scoped to the database).
pub(crate) fn lease_key(p: Projection) -> i64 {
    0x6964_656e_0000 + p as i64
}

impl Projections {
    /// Applies at most one batch of `p`'s pending events into the tables with `suffix`,
    /// starting at `from`. Returns the new cursor (unchanged when nothing was pending).
    pub(crate) async fn step(
        &self,
        p: Projection,
        name: &str,
        suffix: &str,
        from: FeedCursor,
        limit: u32,
    ) -> Result<(FeedCursor, usize, apply::Touched), ProjectionError> {
        let events = self.log.read_feed(from, limit).await?;
        let Some(last) = events.last().map(identity_store::StoredEvent::cursor) else {
            return Ok((from, 0, apply::Touched::default()));
        };
        let mut tx = self.writer.begin_with(self.dialect.begin()).await?;
        // The checkpoint row is locked for the transaction: another process projecting the
        // same database waits here, then sees the moved checkpoint and applies nothing twice.
        let row = sqlx::query(&self.dialect.placeholders(&format!(
            "SELECT xid, position FROM projection_checkpoints WHERE name = $1{}",
            self.dialect.lock_suffix()
        )))
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let stored = crate::checkpoint_cursor(name, &row)?;
        if stored != from {
            tx.rollback().await?;
            self.wake_feed_readers();
            return Ok((stored, 0, apply::Touched::default()));
        }
        let sql = Sql::new(self.dialect, suffix);
        let touched = apply::apply_batch(p, &mut tx, &sql, &events).await?;
        self.save_checkpoint(&mut tx, name, last).await?;
        tx.commit().await?;
        self.wake_feed_readers();
        if events.iter().any(|e| e.event_type == "UserErased") {
            // The deleted rows of an erased person are zeroed in the database file
            // (`secure_delete`); their earlier page images must not linger in SQLite's
            // write-ahead log either (docs/adr/0006).
            self.log.flush_wal().await?;
        }
        Ok((last, events.len(), touched))
    }

    /// Wakes every feed reader of this process after one of our write transactions ended.
    /// On PostgreSQL the feed stops below the oldest running transaction, and a projector's
    /// batch transaction is one: events committed meanwhile stayed hidden from the other
    /// projectors, which then slept until their one-second poll (seen: read models two events
    /// behind for over a second). Nothing notifies the end of a transaction that wrote no
    /// event, so the projector does.
    pub(crate) fn wake_feed_readers(&self) {
        self.log.notifier().notify_waiters();
    }

    /// Whether this process currently runs projector `p`.
    pub fn is_leader(&self, p: Projection) -> bool {
        self.leaders[&p].load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Tries to take `p`'s lease: a session advisory lock held on a dedicated connection for as
    /// long as this process projects. SQLite is embedded in one process: no lease needed.
    pub(crate) async fn try_lease(
        &self,
        p: Projection,
    ) -> Result<Option<Option<sqlx::pool::PoolConnection<sqlx::Any>>>, ProjectionError> {
        if self.dialect == Dialect::Sqlite {
            return Ok(Some(None));
        }
        let mut conn = self.writer.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lease_key(p))
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(Some(conn)))
    }

    /// Runs one projector until the process ends. On PostgreSQL only the replica holding the
    /// projector's lease applies events; the others follow its checkpoint (for `min_position`
    /// waits) and take over when the lease is released, e.g. when the holder dies.
    pub async fn run(self, p: Projection) {
        let notifier = self.log.notifier();
        let mut failures = 0u32;
        let mut lease: Option<Option<sqlx::pool::PoolConnection<sqlx::Any>>> = None;
        loop {
            let notified = notifier.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lease.is_none() {
                match self.try_lease(p).await {
                    Ok(Some(held)) => {
                        lease = Some(held);
                        self.leaders[&p].store(true, std::sync::atomic::Ordering::SeqCst);
                        tracing::info!(projection = p.name(), "took the projector lease");
                        if let Ok(c) =
                            Self::checkpoint_of(&self.writer, self.dialect, p.name()).await
                        {
                            self.publish(p, c);
                        }
                    }
                    Ok(None) => {
                        // Another replica projects: mirror its checkpoint.
                        if let Ok(c) =
                            Self::checkpoint_of(&self.writer, self.dialect, p.name()).await
                        {
                            if c != self.cursor(p) {
                                self.publish(p, c);
                            }
                        }
                        tokio::select! {
                            () = &mut notified => tokio::time::sleep(Duration::from_millis(20)).await,
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(projection = p.name(), error = %identity_store::Report(&e), "cannot take the projector lease; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let from = self.cursor(p);
            let result = {
                let _guard = self.locks[&p].lock().await;
                self.step(p, p.name(), "", from, BATCH).await
            };
            match result {
                Ok((cursor, applied, touched)) => {
                    if failures > 0 {
                        self.board.recovered(p);
                    }
                    failures = 0;
                    if applied > 0 {
                        tracing::debug!(
                            projection = p.name(),
                            position = cursor.position,
                            applied,
                            "applied events"
                        );
                    }
                    if applied as u32 == BATCH {
                        tracing::info!(
                            projection = p.name(),
                            position = cursor.position,
                            "catching up"
                        );
                    }
                    if applied > 0 {
                        self.publish_applied(p, cursor, &touched);
                    } else if cursor != from {
                        // Another process moved the checkpoint.
                        self.publish(p, cursor);
                    }
                    if applied == 0 && cursor == from {
                        tokio::select! {
                            () = &mut notified => {}
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.board.failed(p, &e);
                    tracing::error!(projection = p.name(), error = %identity_store::Report(&e), failures, "projector failed; retrying");
                    if e.is_unavailable() {
                        // The lease's connection may be gone with the database: close it (a
                        // pooled connection would keep the lock) and take the lease anew.
                        if let Some(Some(conn)) = lease.take() {
                            let _ = sqlx::Connection::close(conn.detach()).await;
                        }
                        self.leaders[&p].store(false, std::sync::atomic::Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50))))
                        .await;
                    if let Ok(c) = Self::checkpoint_of(&self.writer, self.dialect, p.name()).await {
                        self.publish(p, c);
                    }
                }
            }
        }
    }

    /// Starts every projector in the background.
    pub fn spawn_all(&self) {
        for p in Projection::ALL {
            tokio::spawn(self.clone().run(p));
        }
    }

    /// Waits until `p` has applied the event at global position `position`, or `timeout`
    /// passes. Returns whether it got there.
    pub async fn wait_for(
        &self,
        p: Projection,
        position: u64,
        timeout: Duration,
    ) -> Result<bool, ProjectionError> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.cursors[&p].subscribe();
        // The target's place in feed order; it may not be visible yet, so look again later.
        let mut target = self.log.cursor_of(position).await?;
        loop {
            if let Some(t) = target {
                if *rx.borrow() >= t {
                    return Ok(true);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), rx.changed()).await;
            if target.is_none() {
                target = self.log.cursor_of(position).await?;
            }
        }
    }
}

//! StreamEvents without one full-log scan per subscriber: one reader per process tails the
//! global feed and fans each event out to every live subscriber (a broadcast channel). A new
//! subscriber first catches up on its own (its tenant's events only, filtered in the
//! database) from where it asked to start, then follows the shared tail, dropping what it
//! has already delivered. A subscriber that falls more than the channel's capacity behind is
//! ended with RESOURCE_EXHAUSTED and the position to resume from; nothing it was sent is
//! lost or repeated across the resume.
//!
//! No gap between the two phases: subscribing and reading the shared reader's cursor happen
//! under one lock, and the reader moves its cursor only by sending the event (or, while
//! nobody listens, by jumping to the feed's tail under the same lock). So every event after
//! that cursor reaches the subscriber through the channel, and every event up to it lies
//! below the feed's horizon by the time the catch-up reads a short page.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use identity_store::{EventLog, FeedCursor, StoredEvent};
use tokio::sync::broadcast;

/// Events per read of the shared tail and of a catch-up.
const BATCH: u32 = 500;

/// The process's one tail of the feed.
#[derive(Debug, Clone)]
pub struct FeedHub {
    events: broadcast::Sender<Arc<StoredEvent>>,
    /// The cursor of the last event sent (or jumped to while nobody listened).
    cursor: Arc<Mutex<FeedCursor>>,
    /// Wakes an idle reader when somebody subscribes.
    subscribed: Arc<tokio::sync::Notify>,
}

/// A subscription: the channel, and the cursor up to which the subscriber must catch up by
/// itself.
#[derive(Debug)]
pub struct Subscription {
    pub events: broadcast::Receiver<Arc<StoredEvent>>,
    pub shared_from: FeedCursor,
}

impl FeedHub {
    /// Starts the shared reader. `capacity` is how far (in events) a subscriber may fall
    /// behind before it is ended.
    pub fn start(log: EventLog, capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity.max(16));
        let hub = Self {
            events,
            cursor: Arc::default(),
            subscribed: Arc::default(),
        };
        tokio::spawn(hub.clone().run(log));
        hub
    }

    pub fn subscribe(&self) -> Subscription {
        let cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let subscription = Subscription {
            events: self.events.subscribe(),
            shared_from: *cursor,
        };
        self.subscribed.notify_one();
        subscription
    }

    async fn run(self, log: EventLog) {
        let notifier = log.notifier();
        let mut failures = 0u32;
        loop {
            let notified = notifier.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.events.receiver_count() == 0 {
                // Nobody listens: keep up by jumping to the tail once a second (one indexed
                // query, not one per commit), not by reading events nobody wants. A new
                // subscriber wakes the reader; it then re-reads at most a second of events,
                // which subscribers skip by cursor.
                match log.feed_tail().await {
                    Ok(tail) => {
                        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
                        if self.events.receiver_count() == 0 && tail > *cursor {
                            *cursor = tail;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %identity_store::Report(&e), "the shared event stream cannot find the feed's tail")
                    }
                }
                tokio::select! {
                    () = self.subscribed.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let result = {
                let from = *self.cursor.lock().unwrap_or_else(|p| p.into_inner());
                log.read_feed(from, BATCH).await.map(|batch| {
                    let n = batch.len();
                    for e in batch {
                        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
                        *cursor = e.cursor();
                        // No receiver left is fine: the next round jumps.
                        let _ = self.events.send(Arc::new(e));
                    }
                    n
                })
            };
            match result {
                Ok(n) => {
                    failures = 0;
                    if n < BATCH as usize {
                        tokio::select! {
                            () = &mut notified => {}
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %identity_store::Report(&e), "the shared event stream cannot read the feed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50))))
                        .await;
                }
            }
        }
    }
}

/// Up to [`BATCH`] of one tenant's events after `after`, for a catch-up.
pub async fn catch_up_page(
    log: &EventLog,
    after: FeedCursor,
    tenant: &str,
) -> Result<(Vec<StoredEvent>, bool), identity_store::StoreError> {
    let page = log.read_feed_of(after, BATCH, Some(tenant)).await?;
    let more = page.len() == BATCH as usize;
    Ok((page, more))
}

//! What spares a command re-reading its aggregate: the per-aggregate command locks and the
//! cache of aggregates as the last commands left them.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

/// One lock per aggregate with a command in flight; an entry lives while somebody holds or
/// awaits it, so the map stays as small as the number of aggregates being worked on.
pub(crate) type CommandLocks = std::sync::Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>;

/// Holds one aggregate's command lock; removes the lock from the map on drop when nobody
/// else wants it (also when the command's future is dropped midway).
pub(crate) struct AggregateLock {
    key: CacheKey,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    locks: Arc<CommandLocks>,
}

impl AggregateLock {
    pub(crate) async fn acquire(locks: &Arc<CommandLocks>, key: CacheKey) -> Self {
        let lock = match locks.lock() {
            Ok(mut map) => map.entry(key.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let guard = Some(lock.clone().lock_owned().await);
        Self {
            key,
            lock,
            guard,
            locks: locks.clone(),
        }
    }
}

impl Drop for AggregateLock {
    fn drop(&mut self) {
        self.guard.take();
        if let Ok(mut map) = self.locks.lock() {
            // Ours and the map's: nobody else holds or awaits it.
            if Arc::strong_count(&self.lock) == 2 {
                map.remove(&self.key);
            }
        }
    }
}

/// How many events the aggregate cache holds by default, counted over the cached aggregates'
/// histories (an aggregate's memory grows with its history: a wallet remembers every
/// idempotency key). About 30 MiB of wallets.
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

/// An aggregate as the last command left it, with what the next append needs.
#[derive(Debug)]
pub(crate) struct Cached<A> {
    pub(crate) aggregate: Arc<A>,
    pub(crate) sequence: usize,
    /// The hash of the aggregate's last event ("" when it has none).
    pub(crate) hash: String,
    /// The global position of the aggregate's last event (0 when it has none).
    pub(crate) position: u64,
}

pub(crate) type CacheKey = (&'static str, String);

/// Aggregates the last commands left behind, least recently used first out, within a
/// budget of events. An entry is only taken or put back by a command holding its
/// aggregate's command lock, so the short lock here never spans a command.
#[derive(Debug)]
pub(crate) struct AggregateCache {
    pub(crate) entries: hashlink::LinkedHashMap<CacheKey, (usize, Box<dyn Any + Send + Sync>)>,
    pub(crate) weight: usize,
    pub(crate) budget: usize,
}

impl AggregateCache {
    pub(crate) fn take<A: 'static>(&mut self, key: &CacheKey) -> Option<Cached<A>> {
        let (weight, entry) = self.entries.remove(key)?;
        self.weight -= weight;
        entry.downcast::<Cached<A>>().ok().map(|c| *c)
    }

    /// Forgets every aggregate (after stored events were rewritten: seal-forward).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.weight = 0;
    }

    pub(crate) fn put<A: Send + Sync + 'static>(&mut self, key: CacheKey, state: Cached<A>) {
        let weight = state.sequence + 1;
        if weight > self.budget / 4 {
            return; // one huge history would push out everything else
        }
        self.entries.insert(key, (weight, Box::new(state)));
        self.weight += weight;
        while self.weight > self.budget {
            match self.entries.pop_front() {
                Some((_, (w, _))) => self.weight -= w,
                None => break,
            }
        }
    }
}

//! Bounds on what one caller can make the service spend: expensive calls run a few at a
//! time, and event streams are capped per tenant and per client connection. A caller past a
//! bound is told so (RESOURCE_EXHAUSTED), never queued forever. Sign-ins and one-time code
//! requests are also counted per caller (principal and client address) per minute.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ApiResult};
use crate::settings::Settings;

/// How long an expensive call waits for a free slot before it is refused.
const EXPENSIVE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Limits {
    expensive: Arc<Semaphore>,
    sign_ins: Arc<PerMinute>,
    code_requests: Arc<PerMinute>,
    streams: Arc<Mutex<StreamCounts>>,
    per_tenant: usize,
    per_connection: usize,
}

#[derive(Debug, Default)]
struct StreamCounts {
    tenants: HashMap<String, usize>,
    connections: HashMap<SocketAddr, usize>,
}

/// One open stream's place in the counts; given back when the stream ends.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<Mutex<StreamCounts>>,
    tenant: String,
    connection: Option<SocketAddr>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.streams.lock() {
            release(&mut counts.tenants, &self.tenant);
            if let Some(c) = self.connection {
                release(&mut counts.connections, &c);
            }
        }
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Limits {
    pub fn new(settings: &Settings) -> Self {
        Self {
            expensive: Arc::new(Semaphore::new(settings.expensive_calls.max(1))),
            sign_ins: Arc::new(PerMinute::new(settings.sign_in_per_minute)),
            code_requests: Arc::new(PerMinute::new(settings.code_requests_per_minute)),
            streams: Arc::default(),
            per_tenant: settings.streams_per_tenant.max(1),
            per_connection: settings.streams_per_connection.max(1),
        }
    }

    /// Counts a SignIn of `caller`; refused past the per-minute limit.
    pub fn sign_in(&self, caller: &str) -> ApiResult<()> {
        self.sign_ins.take(caller)
    }

    /// Counts a one-time code request of `caller`; refused past the per-minute limit.
    pub fn code_request(&self, caller: &str) -> ApiResult<()> {
        self.code_requests.take(caller)
    }

    /// A slot for an expensive call, held until the permit is dropped.
    pub async fn expensive(&self, what: &'static str) -> ApiResult<OwnedSemaphorePermit> {
        match tokio::time::timeout(EXPENSIVE_WAIT, self.expensive.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(ApiError::Busy { what }),
        }
    }

    /// A slot for one more event stream of `tenant` on `connection`.
    pub fn stream(&self, tenant: &str, connection: Option<SocketAddr>) -> ApiResult<StreamSlot> {
        let mut counts = self
            .streams
            .lock()
            .map_err(|_| ApiError::Internal("stream counts poisoned".into()))?;
        let of_tenant = counts.tenants.get(tenant).copied().unwrap_or(0);
        let of_connection = connection
            .and_then(|c| counts.connections.get(&c).copied())
            .unwrap_or(0);
        if of_tenant >= self.per_tenant {
            return Err(ApiError::TooManyStreams {
                scope: "tenant",
                limit: self.per_tenant,
            });
        }
        if of_connection >= self.per_connection {
            return Err(ApiError::TooManyStreams {
                scope: "connection",
                limit: self.per_connection,
            });
        }
        *counts.tenants.entry(tenant.to_string()).or_default() += 1;
        if let Some(c) = connection {
            *counts.connections.entry(c).or_default() += 1;
        }
        Ok(StreamSlot {
            streams: self.streams.clone(),
            tenant: tenant.to_string(),
            connection,
        })
    }
}

/// Calls per caller in the current minute (a fixed window: simple, and at most twice the
/// limit across a window's edge).
#[derive(Debug)]
struct PerMinute {
    limit: u32,
    counts: Mutex<(u64, HashMap<String, u32>)>,
}

/// Callers remembered per window before the oldest window is forgotten early.
const MAX_TRACKED_CALLERS: usize = 100_000;

impl PerMinute {
    fn new(limit: u32) -> Self {
        Self {
            limit: limit.max(1),
            counts: Mutex::new((0, HashMap::new())),
        }
    }

    fn take(&self, caller: &str) -> ApiResult<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let window = now / 60;
        let mut guard = self
            .counts
            .lock()
            .map_err(|_| ApiError::Internal("rate counts poisoned".into()))?;
        let (current, counts) = &mut *guard;
        if *current != window || counts.len() >= MAX_TRACKED_CALLERS {
            *current = window;
            counts.clear();
        }
        let n = counts.entry(caller.to_string()).or_default();
        if *n >= self.limit {
            return Err(ApiError::from(identity_domain::DomainError::RetryLater {
                retry_after_secs: 60 - now % 60,
            }));
        }
        *n += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(expensive: usize, per_tenant: usize, per_connection: usize) -> Limits {
        Limits::new(&Settings {
            expensive_calls: expensive,
            streams_per_tenant: per_tenant,
            streams_per_connection: per_connection,
            ..Settings::default()
        })
    }

    #[tokio::test]
    async fn an_expensive_call_past_the_limit_is_refused_not_queued_forever() {
        let l = limits(1, 1, 1);
        let held = l.expensive("ListEvents").await.expect("a free slot");
        let refused = l.expensive("ListEvents").await;
        assert!(matches!(refused, Err(ApiError::Busy { .. })), "{refused:?}");
        drop(held);
        let _again = l
            .expensive("ListEvents")
            .await
            .expect("the slot is free again");
    }

    #[test]
    fn a_caller_past_its_rate_is_refused_and_others_are_not() {
        let l = Limits::new(&Settings {
            sign_in_per_minute: 2,
            ..Settings::default()
        });
        l.sign_in("a").expect("1");
        l.sign_in("a").expect("2");
        let refused = l.sign_in("a");
        assert!(
            matches!(
                refused,
                Err(ApiError::Domain(
                    identity_domain::DomainError::RetryLater { .. }
                ))
            ),
            "{refused:?}"
        );
        l.sign_in("b").expect("another caller");
    }

    #[test]
    fn streams_are_counted_per_tenant_and_per_connection_and_given_back() {
        let l = limits(1, 2, 1);
        let a: SocketAddr = "127.0.0.1:1000".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:1001".parse().expect("addr");
        let c: SocketAddr = "127.0.0.1:1002".parse().expect("addr");
        let first = l.stream("acme", Some(a)).expect("first");
        assert!(matches!(
            l.stream("acme", Some(a)),
            Err(ApiError::TooManyStreams {
                scope: "connection",
                ..
            })
        ));
        let _second = l.stream("acme", Some(b)).expect("another connection");
        assert!(matches!(
            l.stream("acme", Some(c)),
            Err(ApiError::TooManyStreams {
                scope: "tenant",
                ..
            })
        ));
        l.stream("globex", Some(c)).expect("another tenant");
        drop(first);
        l.stream("acme", Some(a)).expect("given back");
    }
}

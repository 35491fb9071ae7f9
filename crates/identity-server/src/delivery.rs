//! One-time codes reach people through a delivery channel, never through the caller.
//!
//! A code request writes the message to the store's outbox *before* its command is appended
//! (`identity_store::OutboxMessage`), and the relay here publishes a message only once the
//! user's pending change carries its code (the command took effect), to a JetStream stream a
//! notification service consumes. Each message is published under its outbox id as
//! `Nats-Msg-Id`, and the stream's duplicate window covers a code's whole lifetime, so a
//! relay that dies between publishing and forgetting a message, or two replicas relaying the
//! same row, still deliver it once. Without `IDENTITY_NATS_URL` nothing is written: codes are
//! then seen only by callers holding `read:codes` (development).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use identity_domain::user::User;
use identity_domain::values::UserId;
use identity_store::{EventLog, OutboxMessage};
use serde::Serialize;
use tokio::sync::Notify;

use crate::context::RequestContext;
use crate::settings::Settings;

/// Messages read from the outbox per pass.
const BATCH: u32 = 100;
/// How often the relay looks again when nothing woke it (another replica's rows, retries).
const IDLE_PASS: Duration = Duration::from_secs(1);
/// The longest the relay waits after the channel failed before trying again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a code is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    EmailChange,
    PhoneChange,
    PasswordReset,
}

/// What the notification service receives (JSON on `<subject>.<tenant>`).
#[derive(Serialize)]
struct Body<'a> {
    /// Unique per message; also its `Nats-Msg-Id`.
    id: &'a str,
    purpose: Purpose,
    /// `email` or `phone`: how to reach the person.
    channel: &'a str,
    destination: &'a str,
    code: &'a str,
    tenant: &'a str,
    user_id: String,
    expires_at: DateTime<Utc>,
}

/// A code about to be handed to the channel.
#[derive(Debug)]
pub struct Code<'a> {
    pub purpose: Purpose,
    pub channel: &'a str,
    pub destination: &'a str,
    pub code: &'a str,
    pub code_hash: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// The outbox writer and relay. Cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    log: EventLog,
    settings: Arc<Settings>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("enabled", &self.enabled())
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub fn new(log: EventLog, settings: Arc<Settings>) -> Self {
        Self {
            log,
            settings,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Whether a channel is configured.
    pub fn enabled(&self) -> bool {
        self.settings.nats_url.is_some()
    }

    /// Writes the message for `code` before its command runs; returns its outbox id, or
    /// `None` when no channel is configured.
    pub async fn stage(
        &self,
        ctx: &RequestContext,
        user: UserId,
        code: &Code<'_>,
    ) -> Result<Option<String>, identity_store::StoreError> {
        if !self.enabled() {
            return Ok(None);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let body = Body {
            id: &id,
            purpose: code.purpose,
            channel: code.channel,
            destination: code.destination,
            code: code.code,
            tenant: ctx.tenant.as_str(),
            user_id: user.to_string(),
            expires_at: code.expires_at,
        };
        let message = OutboxMessage {
            id: id.clone(),
            aggregate_id: ctx.aggregate_id(user),
            code_hash: code.code_hash.to_string(),
            body: serde_json::to_string(&body)
                .map_err(|e| identity_store::StoreError::Other(std::sync::Arc::new(e)))?,
            expires_at: code.expires_at,
        };
        self.log.outbox_put(&message).await?;
        Ok(Some(id))
    }

    /// After the command: wakes the relay when it took effect, forgets the message when not.
    pub async fn settle(&self, staged: Option<String>, took_effect: bool) {
        let Some(id) = staged else { return };
        if took_effect {
            self.wake.notify_one();
        } else if let Err(e) = self.log.outbox_remove(&id).await {
            // The relay drops it at expiry: it never matches a pending change.
            tracing::warn!(error = %e, "could not remove a refused code from the outbox");
        }
    }

    /// Relays until dropped (the server aborts it at shutdown). Does nothing without a channel.
    pub async fn run(self) {
        let Some(url) = self.settings.nats_url.clone() else {
            tracing::warn!("IDENTITY_NATS_URL is unset: one-time codes are not delivered; only callers holding read:codes see them");
            return;
        };
        let client = match async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url.as_str())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the NATS URL is not usable; codes stay in the outbox");
                return;
            }
        };
        let js = jetstream::new(client);
        let mut stream_ready = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = async {
                if !stream_ready {
                    self.ensure_stream(&js).await?;
                    stream_ready = true;
                }
                self.pass(&js).await
            }
            .await;
            match result {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    let _ = tokio::time::timeout(IDLE_PASS, self.wake.notified()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "delivering one-time codes failed; they stay in the outbox");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The stream for our subject: messages live no longer than a code, and duplicates are
    /// detected over the same span.
    async fn ensure_stream(&self, js: &jetstream::Context) -> anyhow::Result<()> {
        let lifetime = Duration::from_secs(self.settings.code_ttl_secs.max(60).unsigned_abs());
        js.get_or_create_stream(jetstream::stream::Config {
            name: self.settings.nats_stream.clone(),
            subjects: vec![format!("{}.>", self.settings.nats_subject)],
            max_age: lifetime,
            duplicate_window: lifetime,
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    /// Sends every waiting message whose command took effect; drops expired ones.
    async fn pass(&self, js: &jetstream::Context) -> anyhow::Result<()> {
        loop {
            let waiting = self.log.outbox_waiting(BATCH).await?;
            let mut progressed = false;
            let full = waiting.len() == BATCH as usize;
            for message in waiting {
                if message.expires_at <= Utc::now() {
                    self.log.outbox_remove(&message.id).await?;
                    metrics::counter!("identity_codes_expired_unsent_total").increment(1);
                    progressed = true;
                    continue;
                }
                if !self.due(&message).await? {
                    continue;
                }
                let tenant = message
                    .aggregate_id
                    .split_once('/')
                    .map_or("unknown", |(t, _)| t);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", message.id.as_str());
                let ack = js
                    .publish_with_headers(
                        format!("{}.{tenant}", self.settings.nats_subject),
                        headers,
                        message.body.clone().into(),
                    )
                    .await?
                    .await?;
                self.log.outbox_remove(&message.id).await?;
                if !ack.duplicate {
                    metrics::counter!("identity_codes_sent_total").increment(1);
                }
                progressed = true;
            }
            if !(full && progressed) {
                return Ok(());
            }
        }
    }

    /// Whether the user's pending change waits for this message's code.
    async fn due(&self, message: &OutboxMessage) -> anyhow::Result<bool> {
        let loaded = self.log.load::<User>(&message.aggregate_id).await?;
        Ok(loaded.is_some_and(|l| l.aggregate.awaits_code(&message.code_hash)))
    }
}

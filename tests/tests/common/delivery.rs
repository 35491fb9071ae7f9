//! The delivery channel as a test sees it: a NATS JetStream inbox of one-time codes, and
//! waiting for the outbox to drain.

use super::*;

/// The NATS server the tests deliver codes through.
pub const NATS_URL: &str = "nats://127.0.0.1:4222";

/// What a notification service sees of the codes channel: a durable pull consumer on a
/// stream of this test's own (unique subject and stream name), created by the server.
#[allow(dead_code, unreachable_pub)]
pub struct CodeInbox {
    pub subject: String,
    pub stream: String,
    js: async_nats::jetstream::Context,
    messages: Option<async_nats::jetstream::consumer::pull::Stream>,
}

#[allow(dead_code, unreachable_pub)]
impl CodeInbox {
    pub async fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let client = async_nats::connect(NATS_URL)
            .await
            .expect("NATS with JetStream runs at 127.0.0.1:4222 (see README: Tests)");
        Self {
            subject: format!("test.codes.{id}"),
            stream: format!("TEST_CODES_{id}"),
            js: async_nats::jetstream::new(client),
            messages: None,
        }
    }

    /// Points a server's delivery channel at this inbox.
    pub fn configure(&self, settings: &mut Settings) {
        settings.nats_url = Some(NATS_URL.into());
        settings.nats_subject = self.subject.clone();
        settings.nats_stream = self.stream.clone();
    }

    /// The stream, once a server's relay has created it (within 10 s).
    async fn stream(&self) -> async_nats::jetstream::stream::Stream {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.js.get_stream(&self.stream).await {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("the server never created stream {}: {e}", self.stream)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The next message (acknowledged), within 10 s.
    pub async fn next(&mut self) -> serde_json::Value {
        use futures::StreamExt as _;
        if self.messages.is_none() {
            let consumer = self
                .stream()
                .await
                .get_or_create_consumer(
                    "notifier",
                    async_nats::jetstream::consumer::pull::Config {
                        durable_name: Some("notifier".into()),
                        ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                        ..Default::default()
                    },
                )
                .await
                .expect("a consumer");
            self.messages = Some(consumer.messages().await.expect("messages"));
        }
        let messages = self.messages.as_mut().expect("just set");
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a code arrives within 10 s")
            .expect("the stream goes on")
            .expect("a message");
        message.ack().await.expect("acks");
        serde_json::from_slice(&message.payload).expect("JSON")
    }

    /// How many messages the stream holds.
    pub async fn count(&self) -> u64 {
        self.stream()
            .await
            .info()
            .await
            .expect("stream info")
            .state
            .messages
    }

    /// Removes the stream (the NATS server outlives the test).
    pub async fn delete(self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

/// Waits (within 10 s) until no message waits in the store's outbox.
#[allow(dead_code, unreachable_pub)]
pub async fn outbox_drained(log: &identity_store::EventLog) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = log.outbox_waiting(100).await.expect("reads the outbox");
        if waiting.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} messages still wait in the outbox",
            waiting.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! The audit API on both stores: listings, live streams, history and past states, in pages.
//! Tamper evidence is in `audit_tampering.rs`.

#[macro_use]
mod common;
mod audit_support;

use std::time::{Duration, Instant};

use audit_support::*;
use common::*;
use futures::StreamExt as _;
use identity_proto::v1 as pb;
use identity_proto::v1::audit_service_client::AuditServiceClient;
use tonic::Code;

on_both_stores!(
    events_are_listed_with_filters_and_pages,
    the_stream_delivers_history_then_live_events_and_resumes_without_gaps,
    history_and_past_states_are_replayed,
    history_comes_in_pages_that_add_up_to_the_whole,
    streams_are_bounded_per_connection,
    a_slow_stream_consumer_is_ended_and_resumes_without_gaps,
);

mod scenarios {
    use super::*;

    /// What ListEvents in `acme` answers for `filter`.
    /// The next event a stream delivers (it must deliver one).
    async fn next_event(stream: &mut tonic::Streaming<pb::StreamEventsResponse>) -> pb::Event {
        stream
            .message()
            .await
            .expect("receives")
            .expect("an event")
            .event
            .expect("event")
    }

    /// The events of "acme" that match the filter `shape` sets.
    async fn matching(
        a: &mut AuditServiceClient<tonic::transport::Channel>,
        shape: impl FnOnce(&mut pb::EventFilter),
    ) -> pb::ListEventsResponse {
        let mut filter = pb::EventFilter::default();
        shape(&mut filter);
        ok!(a.list_events(req("acme", ask::events(filter))))
    }

    pub(super) async fn events_are_listed_with_filters_and_pages(store: Store) {
        let app = spawn_app(store).await;
        let (_, wallet, positions) = workload(&app).await;
        let mut a = audit(&app);
        let filter = pb::EventFilter {
            event_type: "TokensCredited".into(),
            ..Default::default()
        };
        let page1 = ok!(a.list_events(req(
            "acme",
            pb::ListEventsRequest {
                filter: Some(filter.clone()),
                page_size: 2,
                page_token: String::new(),
            },
        )));
        assert_eq!(page1.events.len(), 2);
        assert!(!page1.next_page_token.is_empty());
        let page2 = ok!(a.list_events(req(
            "acme",
            pb::ListEventsRequest {
                filter: Some(filter),
                page_size: 2,
                page_token: page1.next_page_token,
            },
        )));
        assert_eq!(page2.events.len(), 1);
        assert!(page2.next_page_token.is_empty());
        let listed: Vec<u64> = page1
            .events
            .iter()
            .chain(&page2.events)
            .map(|e| e.position)
            .collect();
        assert_eq!(listed, positions);
        let e = &page2.events[0];
        assert_eq!(e.aggregate_id, wallet);
        assert_eq!(
            e.metadata.get("actor").cloned(),
            Some(kit_actor()),
            "the actor is the caller's principal"
        );
        assert_eq!(
            e.metadata.get("command").map(String::as_str),
            Some("CreditTokens")
        );
        assert_eq!(e.hash.len(), 64);
        // Filters: aggregate, actor, position range.
        let by_wallet = matching(&mut a, |f| {
            f.aggregate_type = "Wallet".into();
            f.aggregate_id = wallet.clone();
        })
        .await;
        assert_eq!(by_wallet.events.len(), 5);
        let by_actor = matching(&mut a, |f| {
            f.actor = "somebody-else".into();
        })
        .await;
        assert!(by_actor.events.is_empty());
        let ranged = matching(&mut a, |f| {
            f.from_position = positions[1];
            f.to_position = positions[2];
        })
        .await;
        assert_eq!(
            ranged.events.iter().map(|e| e.position).collect::<Vec<_>>(),
            positions[1..].to_vec()
        );
        // Another tenant sees nothing of this one.
        let other = ok!(a.list_events(req("other", pb::ListEventsRequest::default())));
        assert!(other.events.is_empty());
        fails!(
            a.list_events(req(
                "acme",
                ask::events(pb::EventFilter {
                    aggregate_type: "Nope".into(),
                    ..Default::default()
                }),
            )),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        // Password hashes never leave the service.
        let user = app.register("acme", "secret@example.com").await;
        app.users()
            .set_password(req("acme", ask::set_password(&user, "correct horse")))
            .await
            .expect("sets");
        let set = matching(&mut a, |f| {
            f.event_type = "PasswordSet".into();
        })
        .await;
        let shown = format!("{:?}", set.events[0].payload);
        assert!(
            shown.contains("[redacted]") && !shown.contains("argon2"),
            "{shown}"
        );
    }

    pub(super) async fn the_stream_delivers_history_then_live_events_and_resumes_without_gaps(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        let (_, wallet, positions) = workload(&app).await;
        let filter = pb::EventFilter {
            aggregate_type: "Wallet".into(),
            ..Default::default()
        };
        let mut stream = ok!(audit(&app).stream_events(req(
            "acme",
            pb::StreamEventsRequest {
                filter: Some(filter.clone()),
                after_position: 0,
            },
        )));
        let mut seen = Vec::new();
        for _ in 0..5 {
            let e = next_event(&mut stream).await;
            seen.push(e.position);
        }
        assert_eq!(&seen[2..], &positions[..], "history first");
        // A live event arrives promptly.
        let started = Instant::now();
        let live = ok!(app
            .wallets()
            .credit_tokens(req("acme", credit(&wallet, "1", "live"))))
        .position;
        let e = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("in time")
            .expect("receives")
            .expect("event")
            .event
            .expect("event");
        assert_eq!(e.position, live);
        eprintln!(
            "live event delivered {:?} after the credit was sent",
            started.elapsed()
        );
        drop(stream);
        // Reconnect after the last position received: nothing missed, nothing twice.
        let resumed_after = positions[1];
        let mut again = ok!(audit(&app).stream_events(req(
            "acme",
            pb::StreamEventsRequest {
                filter: Some(filter),
                after_position: resumed_after,
            },
        )));
        let next = next_event(&mut again).await;
        assert_eq!(next.position, positions[2]);
        let next = next_event(&mut again).await;
        assert_eq!(next.position, live);
    }

    pub(super) async fn history_and_past_states_are_replayed(store: Store) {
        let app = spawn_app(store).await;
        let (user, wallet, positions) = workload(&app).await;
        let mut a = audit(&app);
        let history = ok!(a.get_aggregate_history(req(
            "acme",
            pb::GetAggregateHistoryRequest {
                aggregate_type: "Wallet".into(),
                aggregate_id: wallet.clone(),
                ..Default::default()
            },
        )))
        .entries;
        assert_eq!(history.len(), 5);
        let balance_after =
            |s: &identity_proto::prost_types::Struct| format!("{:?}", s.fields.get("balances"));
        assert!(balance_after(history[2].state.as_ref().expect("state")).contains("\"10\""));
        assert!(balance_after(history[4].state.as_ref().expect("state")).contains("\"60\""));
        let at = ok!(a.get_aggregate_state_at(req(
            "acme",
            pb::GetAggregateStateAtRequest {
                aggregate_type: "Wallet".into(),
                aggregate_id: wallet.clone(),
                at: Some(pb::get_aggregate_state_at_request::At::Position(
                    positions[1],
                )),
            },
        )));
        assert!(at.exists);
        assert_eq!(at.position, positions[1]);
        assert!(
            balance_after(at.state.as_ref().expect("state")).contains("\"30\""),
            "{:?}",
            at.state
        );
        // As of the time the second credit was recorded.
        let recorded = history[3]
            .event
            .as_ref()
            .expect("event")
            .recorded_at
            .expect("time");
        let by_time = ok!(a.get_aggregate_state_at(req(
            "acme",
            pb::GetAggregateStateAtRequest {
                aggregate_type: "Wallet".into(),
                aggregate_id: wallet.clone(),
                at: Some(pb::get_aggregate_state_at_request::At::Time(recorded)),
            },
        )));
        assert_eq!(by_time.sequence, 4);
        let before_anything = ok!(a.get_aggregate_state_at(req(
            "acme",
            pb::GetAggregateStateAtRequest {
                aggregate_type: "User".into(),
                aggregate_id: user,
                at: Some(pb::get_aggregate_state_at_request::At::Position(1)),
            },
        )));
        assert!(!before_anything.exists);
        let report = ok!(a.verify_chain(req("acme", pb::VerifyChainRequest {})));
        assert!(report.intact, "{report:?}");
        assert!(report.events_checked >= 6);
    }

    /// Pages of two entries, walked by token, are the whole history with the same states.
    pub(super) async fn history_comes_in_pages_that_add_up_to_the_whole(store: Store) {
        let app = spawn_app(store).await;
        let (_, wallet, _) = workload(&app).await;
        let history = |page_size: u32, page_token: String| pb::GetAggregateHistoryRequest {
            aggregate_type: "Wallet".into(),
            aggregate_id: wallet.clone(),
            page_size,
            page_token,
        };
        let whole = ok!(audit(&app).get_aggregate_history(req("acme", history(0, String::new()))));
        assert_eq!(whole.entries.len(), 5);
        assert!(whole.next_page_token.is_empty());
        let mut paged = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = ok!(audit(&app).get_aggregate_history(req("acme", history(2, token))));
            pages += 1;
            assert!(page.entries.len() <= 2);
            paged.extend(page.entries);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3);
        assert_eq!(paged, whole.entries);
        fails!(
            audit(&app).get_aggregate_history(req("acme", history(2, "not-a-token".into()))),
            tonic::Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }

    /// A client connection may hold a few streams; one more is refused until one closes.
    pub(super) async fn streams_are_bounded_per_connection(store: Store) {
        let app = spawn_app_with(store, |s| s.streams_per_connection = 2).await;
        let open = || async {
            audit(&app)
                .stream_events(req("acme", pb::StreamEventsRequest::default()))
                .await
        };
        let first = open().await.expect("first stream");
        let _second = open().await.expect("second stream");
        let status = open().await.expect_err("a third stream on one connection");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert_eq!(reason(&status), "TOO_MANY_STREAMS");
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match open().await {
                Ok(_) => break,
                Err(status) => {
                    assert_eq!(reason(&status), "TOO_MANY_STREAMS");
                    assert!(Instant::now() < deadline, "a closed stream kept its slot");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// A consumer that stops reading while events pour in is ended with the position to
    /// resume from; resuming there delivers the rest, nothing twice and nothing missed.
    pub(super) async fn a_slow_stream_consumer_is_ended_and_resumes_without_gaps(store: Store) {
        let app = spawn_app_with(store, |s| s.stream_buffer = 16).await;
        let user = app.register("acme", "slow@example.com").await;
        let wallet = app.active_wallet("acme", &user).await;
        let filter = pb::EventFilter {
            aggregate_type: "Wallet".into(),
            ..Default::default()
        };
        // Its own connection: a stream nobody reads holds the HTTP/2 connection's flow
        // control window, which would stall the credits below on a shared one.
        // Small HTTP/2 windows, so that a consumer that does not read backs up quickly.
        let own = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
            .expect("uri")
            .initial_stream_window_size(Some(8 * 1024))
            .initial_connection_window_size(Some(8 * 1024))
            .connect()
            .await
            .expect("connect");
        let mut stream = ok!(AuditServiceClient::new(own).stream_events(req(
            "acme",
            pb::StreamEventsRequest {
                filter: Some(filter.clone()),
                after_position: app.head_position().await,
            },
        )));
        let credit = |i: u32| {
            let mut wallets = app.wallets();
            let wallet = wallet.clone();
            async move {
                ok!(wallets.credit_tokens(req("acme", credit(&wallet, "1", &format!("slow-{i}")))))
                    .position
            }
        };
        // One live event read: the stream now follows the shared tail (a consumer reading
        // history from the database at its own pace is never dropped).
        let first = credit(0).await;
        let live = next_event(&mut stream).await;
        assert_eq!(live.position, first);
        let credits = 1500u32;
        let calls = (1..credits).map(credit);
        let mut written: Vec<u64> = futures::stream::iter(calls)
            .buffer_unordered(16)
            .collect()
            .await;
        written.push(first);
        written.sort_unstable();
        let mut seen = vec![first];
        let ended = loop {
            let next = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .expect("the stream neither delivers nor ends");
            match next {
                Ok(Some(m)) => seen.push(m.event.expect("event").position),
                Ok(None) => panic!("the stream ended without an error"),
                Err(status) => break status,
            }
        };
        assert_eq!(ended.code(), tonic::Code::ResourceExhausted, "{ended:?}");
        assert_eq!(reason(&ended), "SLOW_CONSUMER");
        let resume_after: u64 = detail(&ended, "resume_after_position")
            .and_then(|p| p.parse().ok())
            .expect("a position to resume from");
        if let Some(last) = seen.last() {
            assert_eq!(
                resume_after, *last,
                "resume right after the last event delivered"
            );
        }
        let mut again = ok!(audit(&app).stream_events(req(
            "acme",
            pb::StreamEventsRequest {
                filter: Some(filter),
                after_position: resume_after,
            },
        )));
        while seen.len() < written.len() {
            let m = tokio::time::timeout(Duration::from_secs(20), again.message())
                .await
                .expect("the resumed stream goes on")
                .expect("receives")
                .expect("an event");
            seen.push(m.event.expect("event").position);
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "an event came twice");
        assert_eq!(sorted, written, "events were missed");
    }
}

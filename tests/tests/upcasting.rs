//! The one decode point: an event stored in an older shape is read in today's shape through
//! every path that reads the log (aggregate loading and the command path, the feed and the
//! projectors, audit listings, history and past states, and the replays the CLI runs), on
//! both stores. Without its upcaster the same log is refused as unreadable, so the old shape
//! is really old.

#[macro_use]
mod common;

use common::*;
use cqrs_es::persist::SemanticVersionEventUpcaster;
use identity_domain::wallet::{Wallet, WalletEvent};
use identity_proto::v1 as pb;
use identity_proto::v1::audit_service_client::AuditServiceClient;
use identity_store::{EventFilter, EventLog, FeedCursor, StoreConfig, Upcasters};
use serde_json::Value;

on_both_stores!(an_event_stored_in_an_old_shape_is_read_in_the_new_shape_everywhere);

/// Version 0.9 of `TokensCredited`, as this test pretends it was once written: the amount
/// was called `amt`.
fn amt_became_amount() -> Upcasters {
    Upcasters::standard().with(
        "Wallet",
        Box::new(SemanticVersionEventUpcaster::new(
            "TokensCredited",
            "1.0",
            Box::new(|mut v: Value| {
                if let Some(body) = v.get_mut("TokensCredited").and_then(Value::as_object_mut) {
                    if let Some(amount) = body.remove("amt") {
                        body.insert("amount".into(), amount);
                    }
                }
                v
            }),
        )),
    )
}

async fn open(db: &TestDb, upcasters: Upcasters) -> EventLog {
    EventLog::open_with_upcasters(
        &StoreConfig {
            url: db.url().to_string(),
            max_connections: 2,
            cache_capacity: 0,
        },
        upcasters,
    )
    .await
    .expect("opens the log")
    .with_master_key(kit_master_key())
}

fn credit_amounts(events: &[identity_store::StoredEvent]) -> Vec<(String, Value)> {
    events
        .iter()
        .filter(|e| e.event_type == "TokensCredited")
        .map(|e| {
            (
                e.event_version.clone(),
                e.payload["TokensCredited"]["amount"].clone(),
            )
        })
        .collect()
}

mod scenarios {
    use super::*;

    pub(super) async fn an_event_stored_in_an_old_shape_is_read_in_the_new_shape_everywhere(
        store: Store,
    ) {
        let mut app = spawn_app(store).await;
        let user = app.register("acme", "old-shape@example.com").await;
        let wallet = app.active_wallet("acme", &user).await;
        for (amount, key) in [("5", "k1"), ("2", "k2")] {
            app.wallets()
                .credit_tokens(req("acme", credit(&wallet, amount, key)))
                .await
                .expect("credits");
        }
        app.stop().await;
        // Rewrite both credits into the old shape, behind the service's back.
        let rewrite = match store {
            Store::Postgres => {
                "UPDATE events SET event_version = '0.9', payload = jsonb_build_object(
                    'TokensCredited',
                    (payload->'TokensCredited') - 'amount'
                        || jsonb_build_object('amt', payload->'TokensCredited'->'amount'))
                 WHERE event_type = 'TokensCredited'"
            }
            Store::Sqlite => {
                "UPDATE events SET event_version = '0.9', payload = json_set(
                    json_remove(payload, '$.TokensCredited.amount'),
                    '$.TokensCredited.amt', json_extract(payload, '$.TokensCredited.amount'))
                 WHERE event_type = 'TokensCredited'"
            }
        };
        app.db.sql(rewrite).await.expect("rewrites the credits");
        let id = format!("acme/{wallet}");

        // Without the upcaster the log cannot be read: the shape really is old.
        let plain = open(&app.db, Upcasters::standard()).await;
        let refused = plain
            .load::<Wallet>(&id)
            .await
            .expect_err("an old shape with no upcaster is unreadable");
        assert!(
            refused.to_string().contains("TokensCredited 0.9"),
            "{refused}"
        );
        plain.close().await;

        let log = open(&app.db, amt_became_amount()).await;
        // Aggregate loading.
        let loaded = log
            .load::<Wallet>(&id)
            .await
            .expect("loads")
            .expect("exists");
        let total: Vec<String> = loaded
            .aggregate
            .balances
            .values()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(total, ["7"]);
        // Typed events of one aggregate.
        let typed = log.events::<Wallet>(&id).await.expect("typed events");
        let credited: Vec<String> = typed
            .iter()
            .filter_map(|e| match &e.payload {
                WalletEvent::TokensCredited { amount, .. } => Some(amount.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(credited, ["5", "2"]);
        // The feed (what projectors and exports read), history and listings.
        let want = vec![
            ("1.0.0".to_string(), Value::from("5")),
            ("1.0.0".to_string(), Value::from("2")),
        ];
        let feed = log
            .read_feed(FeedCursor::default(), 1000)
            .await
            .expect("feed");
        assert_eq!(credit_amounts(&feed), want);
        let history = log.aggregate_history("Wallet", &id).await.expect("history");
        assert_eq!(credit_amounts(&history), want);
        let listed = log
            .list_events(
                &EventFilter {
                    event_type: Some("TokensCredited".into()),
                    ..Default::default()
                },
                0,
                100,
            )
            .await
            .expect("listing");
        assert_eq!(credit_amounts(&listed), want);
        // The replays the audit API and `identity-admin history` run.
        let states =
            identity_projections::replay::states_after_each("Wallet", &history).expect("replays");
        assert!(
            states.last().expect("a state")["balances"]
                .to_string()
                .contains("\"7\""),
            "{states:?}"
        );
        // A projector reading the feed from the start.
        let models = identity_projections::Projections::open(log.clone())
            .await
            .expect("read models");
        models
            .rebuild(identity_projections::Projection::Balances)
            .await
            .expect("rebuilds balances from the old shapes");
        let view = models
            .wallet("acme", &wallet)
            .await
            .expect("reads")
            .expect("the wallet");
        assert_eq!(
            view.balances
                .iter()
                .map(|(_, amount)| amount.to_string())
                .collect::<Vec<_>>(),
            ["7"]
        );
        log.close().await;

        // The server, reading through the same upcaster: the command path, queries and audit.
        let (addr, stop, server, _, _, _) =
            start_server_reading_through(app.db.url(), |_| {}, amt_became_amount()).await;
        let channel = connect(addr).await;
        let wallets = pb::wallet_service_client::WalletServiceClient::new(channel.clone());
        let credited = ok!(wallets
            .clone()
            .credit_tokens(req("acme", credit(&wallet, "1", "k3"))));
        let balances = ok!(wallets.clone().get_balances(req(
            "acme",
            pb::GetBalancesRequest {
                key: Some(pb::get_balances_request::Key::WalletId(wallet.clone())),
                min_position: credited.position,
            },
        )))
        .balances;
        assert_eq!(
            balances
                .iter()
                .map(|b| b.amount.as_str())
                .collect::<Vec<_>>(),
            ["8"]
        );
        let state = ok!(
            AuditServiceClient::new(channel.clone()).get_aggregate_state_at(req(
                "acme",
                pb::GetAggregateStateAtRequest {
                    aggregate_type: "Wallet".into(),
                    aggregate_id: wallet.clone(),
                    at: Some(pb::get_aggregate_state_at_request::At::Position(
                        credited.position - 1,
                    )),
                },
            ))
        );
        assert!(
            format!("{:?}", state.state).contains("StringValue(\"7\")"),
            "{:?}",
            state.state
        );
        let _ = stop.send(());
        let _ = server.await;
    }
}

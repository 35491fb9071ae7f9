//! Tamper evidence on both stores: an edited, a deleted and two reordered events are each
//! found and pinpointed, every break is reported, and an unhashed event is one. What no
//! chain can see (an aggregate's removed tail, a whole removed aggregate) the signed
//! checkpoint catches.

#[macro_use]
mod common;
mod audit_support;

use audit_support::*;
use common::*;
use identity_proto::v1 as pb;

on_both_stores!(
    an_edited_event_is_detected_and_pinpointed,
    a_deleted_event_is_detected_and_pinpointed,
    reordered_events_are_detected_and_pinpointed,
    every_break_is_reported_and_an_unhashed_event_is_one,
    an_untouched_log_matches_its_signed_checkpoint,
    a_removed_tail_event_is_caught_by_the_signed_checkpoint,
    a_removed_aggregate_is_caught_by_the_signed_checkpoint,
    an_edit_with_its_chain_recomputed_is_caught_by_the_signed_checkpoint,
);

mod scenarios {
    use super::*;

    pub(super) async fn an_untouched_log_matches_its_signed_checkpoint(store: Store) {
        let app = checkpointing_app(store).await;
        workload(&app).await;
        let signed = checkpointed(&app).await;
        let report = ok!(audit(&app).verify_chain(req("acme", pb::VerifyChainRequest {})));
        assert!(report.intact, "{report:?}");
        let checkpoint = report.checkpoint.expect("a checkpoint was checked");
        assert!(checkpoint.matches, "{checkpoint:?}");
        assert!(checkpoint.position >= signed.position);
        assert!(checkpoint.events >= signed.events && checkpoint.events > 0);
        assert!(!checkpoint.key_id.is_empty() && checkpoint.signed_at.is_some());
    }

    pub(super) async fn a_removed_tail_event_is_caught_by_the_signed_checkpoint(store: Store) {
        let app = checkpointing_app(store).await;
        let (_, _, positions) = workload(&app).await;
        checkpointed(&app).await;
        // The wallet's last credit: its chain still verifies without it.
        let sql = format!(
            "DELETE FROM events WHERE global_position = {}",
            positions[2]
        );
        tamper(&app, &sql, &sql).await;
        let chains = app
            .event_log()
            .verify_chains(Some("acme"), |_| {})
            .await
            .expect("verifies");
        assert!(chains.intact(), "{chains:?}");
        let checkpoint = only_the_checkpoint_catches_it(&app).await;
        assert!(
            checkpoint.problem.contains("removed"),
            "{}",
            checkpoint.problem
        );
    }

    pub(super) async fn a_removed_aggregate_is_caught_by_the_signed_checkpoint(store: Store) {
        let app = checkpointing_app(store).await;
        let (_, wallet, _) = workload(&app).await;
        checkpointed(&app).await;
        let sql = format!("DELETE FROM events WHERE aggregate_id = 'acme/{wallet}'");
        tamper(&app, &sql, &sql).await;
        let checkpoint = only_the_checkpoint_catches_it(&app).await;
        assert!(
            checkpoint.problem.contains("events found where"),
            "{}",
            checkpoint.problem
        );
    }

    pub(super) async fn an_edited_event_is_detected_and_pinpointed(store: Store) {
        let app = spawn_app(store).await;
        let (_, wallet, positions) = workload(&app).await;
        tamper(
            &app,
            &format!("UPDATE events SET payload = jsonb_set(payload, '{{TokensCredited,amount}}', '\"999\"') WHERE global_position = {}", positions[1]),
            &format!("UPDATE events SET payload = json_set(payload, '$.TokensCredited.amount', '999') WHERE global_position = {}", positions[1]),
        )
        .await;
        let b = first_break(&app).await;
        assert_eq!(b.position, positions[1]);
        assert_eq!(b.aggregate_id, wallet);
        assert_eq!(b.sequence, 4);
        assert!(b.reason.contains("hash"), "{}", b.reason);
    }

    pub(super) async fn a_deleted_event_is_detected_and_pinpointed(store: Store) {
        let app = spawn_app(store).await;
        let (_, wallet, positions) = workload(&app).await;
        let sql = format!(
            "DELETE FROM events WHERE global_position = {}",
            positions[1]
        );
        tamper(&app, &sql, &sql).await;
        let b = first_break(&app).await;
        assert_eq!(
            b.position, positions[2],
            "the break shows where the chain resumes"
        );
        assert_eq!(b.aggregate_id, wallet);
        assert!(b.reason.contains("sequence 4 is missing"), "{}", b.reason);
    }

    pub(super) async fn reordered_events_are_detected_and_pinpointed(store: Store) {
        let app = spawn_app(store).await;
        let (_, wallet, positions) = workload(&app).await;
        let sql = format!(
            "UPDATE events SET sequence = 1000 WHERE global_position = {a};
             UPDATE events SET sequence = 4 WHERE global_position = {b};
             UPDATE events SET sequence = 5 WHERE global_position = {a};",
            a = positions[1],
            b = positions[2]
        );
        tamper(&app, &sql, &sql).await;
        let b = first_break(&app).await;
        assert_eq!(
            b.position, positions[2],
            "the event moved into sequence 4 is where the chain breaks"
        );
        assert_eq!(b.aggregate_id, wallet);
        assert_eq!(b.sequence, 4);
    }

    /// Two edits and one hash removed: three breaks, each pinpointed; the events between
    /// them still verify. A new event without a hash cannot be written at all.
    pub(super) async fn every_break_is_reported_and_an_unhashed_event_is_one(store: Store) {
        let app = spawn_app(store).await;
        let (_, wallet, positions) = workload(&app).await;
        let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('User', 'acme/x', 1, 'UserRegistered', '1.0', '{}', '{}')";
        assert!(
            app.db.sql(insert).await.is_err(),
            "an event without a hash was written"
        );
        // The registration.
        let user_position = u64::try_from(
            app.db
                .count("SELECT MIN(global_position) FROM events WHERE aggregate_type = 'User'")
                .await,
        )
        .expect("a position");
        tamper(
            &app,
            &format!(
                "UPDATE events SET payload = jsonb_set(payload, '{{TokensCredited,amount}}', '\"999\"') WHERE global_position = {a};
                 UPDATE events SET payload = jsonb_set(payload, '{{TokensCredited,amount}}', '\"998\"') WHERE global_position = {b};
                 ALTER TABLE events DROP CONSTRAINT events_hash_required;
                 UPDATE events SET hash = NULL WHERE global_position = {user_position};",
                a = positions[0],
                b = positions[2]
            ),
            &format!(
                "UPDATE events SET payload = json_set(payload, '$.TokensCredited.amount', '999') WHERE global_position = {a};
                 UPDATE events SET payload = json_set(payload, '$.TokensCredited.amount', '998') WHERE global_position = {b};
                 UPDATE events SET hash = NULL WHERE global_position = {user_position};",
                a = positions[0],
                b = positions[2]
            ),
        )
        .await;
        let report = ok!(audit(&app).verify_chain(req("acme", pb::VerifyChainRequest {})));
        assert!(!report.intact);
        assert_eq!(report.breaks_found, 3, "{report:?}");
        assert_eq!(report.unhashed, 1);
        let mut at: Vec<u64> = report.breaks.iter().map(|b| b.position).collect();
        at.sort_unstable();
        assert_eq!(at, vec![user_position, positions[0], positions[2]]);
        for b in report.breaks.iter().filter(|b| b.position != user_position) {
            assert_eq!(b.aggregate_id, wallet);
        }
        let unhashed = report
            .breaks
            .iter()
            .find(|b| b.position == user_position)
            .expect("the unhashed event");
        assert!(unhashed.reason.contains("no hash"), "{}", unhashed.reason);
    }

    /// Someone who can write the database but not sign: the wallet's last credit raised to
    /// 999 with its hash recomputed, so its chain verifies again.
    pub(super) async fn an_edit_with_its_chain_recomputed_is_caught_by_the_signed_checkpoint(
        store: Store,
    ) {
        let app = checkpointing_app(store).await;
        let (_, wallet, positions) = workload(&app).await;
        checkpointed(&app).await;
        let history = app
            .event_log()
            .aggregate_history("Wallet", &format!("acme/{wallet}"))
            .await
            .expect("history");
        let (before, last) = (&history[history.len() - 2], &history[history.len() - 1]);
        assert_eq!(last.position, positions[2]);
        let mut edited = last.clone();
        edited.payload["TokensCredited"]["amount"] = "999".into();
        let previous = before.hash.clone().expect("hashed");
        let hash = identity_store::event_hash(&previous, &(&edited).into());
        let sql = |cast: &str| {
            format!(
                "UPDATE events SET payload = '{}'{cast}, hash = '{hash}' WHERE global_position = {}",
                edited.payload, positions[2]
            )
        };
        tamper(&app, &sql("::jsonb"), &sql("")).await;
        let chains = app
            .event_log()
            .verify_chains(Some("acme"), |_| {})
            .await
            .expect("verifies");
        assert!(chains.intact(), "the recomputed chain verifies: {chains:?}");
        let checkpoint = only_the_checkpoint_catches_it(&app).await;
        assert!(
            checkpoint.problem.contains("digest different"),
            "{}",
            checkpoint.problem
        );
    }
}

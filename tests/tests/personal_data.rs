//! Personal data in the log is sealed per person (issue 16, ADR 0006): the stored events hold
//! none of a person's values in clear, while every caller (queries, audit, replays) still
//! reads them, and the hash chains still verify. On both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use identity_proto::v1::audit_service_client::AuditServiceClient;
use identity_proto::v1::identification_service_client::IdentificationServiceClient;
use tonic::Code;

on_both_stores!(
    personal_fields_are_stored_sealed_and_read_in_clear,
    a_sealed_field_moved_into_another_person_does_not_open,
    erasing_a_person_keeps_the_trail_and_frees_their_values,
);

/// Values no other part of an event could contain by chance.
const EMAIL: &str = "zanzibar.quixote@example.com";
const PHONE: &str = "+37255501234";
/// The phone as the service normalizes it (digits only).
const PHONE_DIGITS: &str = "37255501234";
const FIRST: &str = "Zanzibar";
const LAST: &str = "Quixotic";
const CUSTOM: &str = "blue-marmalade-42";
const PERSON_CODE: &str = "39912319999";
const PASSWORD: &str = "correct horse battery";
/// Every value of the person that must be gone from the store after the erasure.
const PERSONAL: [&str; 6] = [EMAIL, PHONE_DIGITS, FIRST, LAST, CUSTOM, PERSON_CODE];

mod scenarios {
    use super::*;

    /// GetAggregateHistory of one aggregate of acme.
    fn history(aggregate_type: &str, id: &str) -> tonic::Request<pb::GetAggregateHistoryRequest> {
        req(
            "acme",
            pb::GetAggregateHistoryRequest {
                aggregate_type: aggregate_type.into(),
                aggregate_id: id.into(),
                ..Default::default()
            },
        )
    }

    /// How many stored events contain `needle` anywhere in their payload.
    async fn events_containing(app: &TestApp, needle: &str) -> i64 {
        app.db
            .count(&format!(
                "SELECT COUNT(*) FROM events WHERE CAST(payload AS TEXT) LIKE '%{needle}%'"
            ))
            .await
    }

    async fn register_zanzibar(app: &TestApp) -> (String, u64) {
        let registered = ok!(app.users().register_user(registering(
            "acme",
            pb::UserInput {
                email: EMAIL.into(),
                phone: PHONE.into(),
                first_name: FIRST.into(),
                last_name: LAST.into(),
                custom_data: Some(prost_types::Struct {
                    fields: [(
                        "favourite".to_string(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::StringValue(CUSTOM.into())),
                        },
                    )]
                    .into(),
                }),
                ..Default::default()
            },
        )));
        (registered.user.expect("user").user_id, registered.position)
    }

    pub(super) async fn personal_fields_are_stored_sealed_and_read_in_clear(store: Store) {
        let app = spawn_app(store).await;
        let (user, _) = register_zanzibar(&app).await;
        ok!(app
            .users()
            .set_password(req("acme", ask::set_password(&user, PASSWORD))));
        let submitted = submit_identity(&app, &user).await;

        // The log holds none of the values in clear, nor the password's hash.
        for value in [
            EMAIL,
            PHONE_DIGITS,
            FIRST,
            LAST,
            CUSTOM,
            PERSON_CODE,
            "argon2id",
        ] {
            assert_eq!(
                events_containing(&app, value).await,
                0,
                "{value} is stored in clear"
            );
        }
        assert!(events_containing(&app, "sealed:v1:").await >= 3);
        // One data key for the person (their User and Identification share it).
        let keys = format!("SELECT COUNT(*) FROM data_keys WHERE subject = 'acme/{user}'");
        assert_eq!(app.db.count(&keys).await, 1);

        // Callers read them as before: the aggregate, the directory and the audit trail.
        let got = ok!(app.users().get_user(req("acme", ask::get_user(&user))))
            .user
            .expect("user");
        assert_eq!(
            (got.email.as_str(), got.phone.as_str()),
            (EMAIL, PHONE_DIGITS)
        );
        assert_eq!(got.first_name, FIRST);
        let verified = ok!(app
            .users()
            .verify_password(req("acme", ask::verify_password(&user, PASSWORD))));
        assert!(verified.valid);
        let found = ok!(app.users().lookup_user(req(
            "acme",
            pb::LookupUserRequest {
                key: Some(pb::lookup_user_request::Key::Email(EMAIL.into())),
                min_position: submitted,
                read_mask: None,
            },
        )))
        .user
        .expect("found by its email");
        assert_eq!(found.user_id, user);
        let mut audit = AuditServiceClient::new(app.channel());
        let events = ok!(audit.get_aggregate_history(history("User", &user)));
        let shown = format!("{:?}", events.entries);
        assert!(shown.contains(EMAIL) && shown.contains(CUSTOM), "{shown}");
        assert!(!shown.contains("sealed:v1:"), "{shown}");
        let report = ok!(audit.verify_chain(req("acme", pb::VerifyChainRequest {})));
        assert!(report.intact, "{report:?}");
    }

    /// A ciphertext is bound to its person and field: copied into another person's event it
    /// does not open, and the read says so instead of showing it.
    pub(super) async fn a_sealed_field_moved_into_another_person_does_not_open(store: Store) {
        let app = spawn_app(store).await;
        let (first, _) = register_zanzibar(&app).await;
        let second = app.register("acme", "someone.else@example.com").await;
        let (json_get, json_set) = match store {
            Store::Postgres => (
                "payload->'UserRegistered'->'email'",
                "jsonb_set(payload, '{UserRegistered,email}', ({source}))",
            ),
            Store::Sqlite => (
                "json_extract(payload, '$.UserRegistered.email')",
                "json_set(payload, '$.UserRegistered.email', ({source}))",
            ),
        };
        let source = format!(
            "SELECT {json_get} FROM events WHERE aggregate_id = 'acme/{first}' AND sequence = 1"
        );
        app.db
            .sql(&format!(
                "UPDATE events SET payload = {} WHERE aggregate_id = 'acme/{second}' AND sequence = 1",
                json_set.replace("{source}", &source)
            ))
            .await
            .expect("moves the sealed email");
        let moved = AuditServiceClient::new(app.channel())
            .get_aggregate_history(history("User", &second))
            .await;
        let refused = moved.expect_err("a moved seal must not open");
        assert!(
            !format!("{refused:?}").contains(EMAIL),
            "the refusal shows the value: {refused:?}"
        );
    }

    async fn submit_identity(app: &TestApp, user: &str) -> u64 {
        ok!(
            IdentificationServiceClient::new(app.channel()).submit_identity(req(
                "acme",
                pb::SubmitIdentityRequest {
                    user_id: user.into(),
                    identity: Some(pb::Identity {
                        first_name: FIRST.into(),
                        surname: LAST.into(),
                        nationality: "EE".into(),
                        person_code: PERSON_CODE.into(),
                        person_code_country: String::new(),
                        date_of_birth: "1999-12-31".into(),
                    }),
                },
            ))
        )
        .position
    }

    /// What of `PERSONAL` the store's files (SQLite: the database and its write-ahead log)
    /// or a dump of the database (PostgreSQL: `pg_dump`) still hold.
    fn left_in_the_store(app: &TestApp) -> Vec<&'static str> {
        let bytes = match &app.db {
            TestDb::Sqlite { dir, .. } => std::fs::read_dir(dir)
                .expect("the store's folder")
                .flat_map(|f| std::fs::read(f.expect("a file").path()).unwrap_or_default())
                .collect::<Vec<u8>>(),
            TestDb::Postgres(_) => {
                let dump = std::process::Command::new("pg_dump")
                    .arg(app.db.url())
                    .output()
                    .expect("pg_dump runs");
                assert!(dump.status.success(), "{dump:?}");
                dump.stdout
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        PERSONAL
            .into_iter()
            .filter(|value| text.contains(value))
            .collect()
    }

    /// Issue 16's promise: after EraseUser none of the person's values is left in the store,
    /// while their wallet's balance, the non-personal facts of their history and the hash
    /// chains remain; their email and phone are free for someone else.
    pub(super) async fn erasing_a_person_keeps_the_trail_and_frees_their_values(store: Store) {
        let app = spawn_app(store).await;
        let (user, _) = register_zanzibar(&app).await;
        submit_identity(&app, &user).await;
        let wallet = app.active_wallet("acme", &user).await;
        ok!(app
            .wallets()
            .credit_tokens(req("acme", credit(&wallet, "100", "c1"))));
        ok!(app
            .wallets()
            .debit_tokens(req("acme", debit(&wallet, "30", "d1"))));
        // A code for them still waiting to be delivered (its message names their email).
        app.event_log()
            .outbox_put(&identity_store::OutboxMessage {
                id: "code-1".into(),
                aggregate_id: format!("acme/{user}"),
                code_hash: "h".into(),
                body: format!(r#"{{"to":"{EMAIL}","code":"123456"}}"#),
                expires_at: chrono::Utc::now() + chrono::Duration::minutes(10),
            })
            .await
            .expect("a waiting message");
        assert!(
            !left_in_the_store(&app).is_empty(),
            "the directory holds them before"
        );

        let erased = ok!(app.users().erase_user(req(
            "acme",
            pb::EraseUserRequest {
                user_id: user.clone(),
                basis: "GDPR art. 17, ticket 42".into(),
            },
        )))
        .position;

        // The person is gone for callers...
        fails!(
            app.users().get_user(req("acme", ask::get_user(&user))),
            Code::NotFound,
            "USER_ERASED",
        );
        fails!(
            app.users().lookup_user(req(
                "acme",
                pb::LookupUserRequest {
                    key: Some(pb::lookup_user_request::Key::Email(EMAIL.into())),
                    min_position: erased,
                    read_mask: None,
                },
            )),
            Code::NotFound,
            "USER_NOT_FOUND",
        );
        fails!(
            app.users().erase_user(req(
                "acme",
                pb::EraseUserRequest {
                    user_id: user.clone(),
                    basis: "again".into(),
                },
            )),
            Code::NotFound,
            "USER_ERASED",
        );
        // ...and from the store: the log's seals no longer open, the directory's rows are
        // deleted (and zeroed), and no file or dump holds a value.
        let destroyed = format!(
            "SELECT COUNT(*) FROM data_keys WHERE subject = 'acme/{user}' AND wrapped IS NULL"
        );
        assert_eq!(app.db.count(&destroyed).await, 1);
        let waiting = format!("SELECT COUNT(*) FROM outbox WHERE aggregate_id = 'acme/{user}'");
        assert_eq!(
            app.db.count(&waiting).await,
            0,
            "their undelivered code is dropped"
        );
        within(
            std::time::Instant::now(),
            std::time::Duration::from_secs(10),
            "the person's values are still in the store",
            || async { left_in_the_store(&app).is_empty() },
        )
        .await;

        // The trail remains: the balance, the non-personal facts, verifiable chains.
        let balances = ok!(app.wallets().get_balances(req(
            "acme",
            pb::GetBalancesRequest {
                key: Some(pb::get_balances_request::Key::WalletId(wallet.clone())),
                min_position: erased,
            },
        )));
        assert_eq!(balances.balances[0].amount, "70");
        let mut audit = AuditServiceClient::new(app.channel());
        let events = ok!(audit.get_aggregate_history(history("User", &user)));
        let shown = format!("{:?}", events.entries);
        assert!(shown.contains("UserRegistered") && shown.contains("UserErased"));
        assert!(
            shown.contains("GDPR art. 17, ticket 42"),
            "the basis is kept"
        );
        assert!(shown.contains("erased"), "{shown}");
        for value in PERSONAL {
            assert!(!shown.contains(value), "{value} in {shown}");
        }
        let wallet_history = ok!(audit.get_aggregate_history(history("Wallet", &wallet)));
        assert_eq!(
            wallet_history.entries.len(),
            4,
            "opened, activated, credited, debited"
        );
        let listed = ok!(audit.list_events(req("acme", ask::events(pb::EventFilter::default()))));
        assert!(listed.events.len() >= 8);
        let report = ok!(audit.verify_chain(req("acme", pb::VerifyChainRequest {})));
        assert!(report.intact, "{report:?}");

        // Their email and phone can be someone else's now.
        let again = ok!(app.users().register_user(registering(
            "acme",
            pb::UserInput {
                email: EMAIL.into(),
                phone: PHONE.into(),
                ..Default::default()
            },
        )));
        assert_ne!(again.user.expect("user").user_id, user);
    }
}

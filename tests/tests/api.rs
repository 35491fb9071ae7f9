//! Integration tests of users: registration, validation, tenants and races for unique
//! values, on the real server on port 0 with a fresh database per test and real tonic clients.
//! Every scenario runs on PostgreSQL and on the embedded SQLite store.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use identity_proto::v1::user_service_client::UserServiceClient;
use tonic::Code;

on_both_stores!(
    registering_and_reading_a_user,
    invalid_input_is_rejected_with_field_violations,
    a_call_without_a_tenant_is_rejected,
    tenants_never_see_each_other,
    concurrent_registrations_of_one_email_let_exactly_one_win,
    concurrent_registrations_of_one_external_id_let_exactly_one_win,
    two_servers_on_one_store_never_both_take_an_email,
    events_record_who_did_what,
);

mod scenarios {
    use super::*;

    pub(super) async fn registering_and_reading_a_user(store: Store) {
        let app = spawn_app(store).await;
        let registered = ok!(app.users().register_user(registering(
            "acme",
            pb::UserInput {
                email: "Ada@Example.COM".into(),
                phone: "+372 5555 1234".into(),
                external_id: "crm-1".into(),
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
                locale: "en".into(),
                ..Default::default()
            },
        )));
        assert!(registered.position > 0);
        let user = registered.user.expect("user");
        assert_eq!(user.email, "ada@example.com");
        assert_eq!(user.phone, "37255551234");
        assert!(user.identifier_email.ends_with("@acme.id"));
        assert!(user.active);

        let fetched = ok!(app
            .users()
            .get_user(req("acme", ask::get_user(&user.user_id))))
        .user
        .expect("user");
        assert_eq!(fetched, user);

        fails!(
            app.users()
                .register_user(registering("acme", user_input("ADA@example.com"))),
            Code::AlreadyExists,
            "EMAIL_ALREADY_ASSIGNED"
        );

        let unknown = app
            .users()
            .get_user(req(
                "acme",
                ask::get_user(&uuid::Uuid::new_v4().to_string()),
            ))
            .await;
        assert_error(unknown, Code::NotFound, "USER_NOT_FOUND");
    }

    pub(super) async fn invalid_input_is_rejected_with_field_violations(store: Store) {
        let app = spawn_app(store).await;
        let status = fails!(
            app.users().register_user(registering(
                "acme",
                pb::UserInput {
                    email: "not-an-email".into(),
                    phone: "12".into(),
                    ..Default::default()
                },
            )),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        use tonic_types::StatusExt;
        let details = status.get_error_details();
        let fields: Vec<String> = details
            .bad_request()
            .expect("bad request details")
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, vec!["user.email", "user.phone"]);

        fails!(
            app.users()
                .register_user(registering("acme", pb::UserInput::default())),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        fails!(
            app.users().get_user(req("acme", ask::get_user("nope"))),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        let huge = "x".repeat(20 * 1024);
        let mut custom = identity_proto::prost_types::Struct::default();
        custom.fields.insert(
            "blob".into(),
            identity_proto::prost_types::Value {
                kind: Some(identity_proto::prost_types::value::Kind::StringValue(huge)),
            },
        );
        fails!(
            app.users().register_user(registering(
                "acme",
                pb::UserInput {
                    email: "big@example.com".into(),
                    custom_data: Some(custom),
                    ..Default::default()
                },
            )),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        // Nothing of the refused requests was stored: the email is still free.
        app.register("acme", "big@example.com").await;
    }

    pub(super) async fn a_call_without_a_tenant_is_rejected(store: Store) {
        let app = spawn_app(store).await;
        let result = app
            .users()
            .register_user(tonic::Request::new(pb::RegisterUserRequest {
                user: Some(user_input("a@example.com")),
            }))
            .await;
        assert_error(result, Code::Unauthenticated, "UNAUTHENTICATED");
        // Naming a tenant never creates it.
        fails!(
            app.users()
                .register_user(registering("no-such-tenant", user_input("a@example.com"))),
            Code::NotFound,
            "TENANT_NOT_FOUND"
        );
        fails!(
            app.users()
                .register_user(registering("NotATenant!", user_input("a@example.com"))),
            Code::InvalidArgument,
            "INVALID_METADATA"
        );
    }

    pub(super) async fn tenants_never_see_each_other(store: Store) {
        let app = spawn_app(store).await;
        let a = app.register("tenant-a", "shared@example.com").await;
        // The same email is free in another tenant.
        let b = app.register("tenant-b", "shared@example.com").await;
        assert_ne!(a, b);
        let across = app
            .users()
            .get_user(req("tenant-b", ask::get_user(&a)))
            .await;
        assert_error(across, Code::NotFound, "USER_NOT_FOUND");
        let wallet = app.active_wallet("tenant-a", &a).await;
        let wallet_across = app
            .wallets()
            .get_wallet(req(
                "tenant-b",
                pb::GetWalletRequest {
                    wallet_id: wallet.clone(),
                },
            ))
            .await;
        assert_error(wallet_across, Code::NotFound, "WALLET_NOT_FOUND");
        let credit_across = app
            .wallets()
            .credit_tokens(req("tenant-b", credit(&wallet, "5", "k")))
            .await;
        assert_error(credit_across, Code::NotFound, "WALLET_NOT_FOUND");
    }

    async fn race(
        app: &TestApp,
        n: usize,
        make: impl Fn(usize) -> pb::UserInput,
    ) -> (usize, Vec<tonic::Status>) {
        race_through(|_| app.users(), n, make).await
    }

    /// Sends `n` registrations at once, the i-th through `client(i)`; how many succeeded, and
    /// the others' errors.
    async fn race_through(
        client: impl Fn(usize) -> UserServiceClient<tonic::transport::Channel>,
        n: usize,
        make: impl Fn(usize) -> pb::UserInput,
    ) -> (usize, Vec<tonic::Status>) {
        let calls = (0..n).map(|i| {
            let mut client = client(i);
            let input = make(i);
            async move {
                client
                    .register_user(req("acme", pb::RegisterUserRequest { user: Some(input) }))
                    .await
            }
        });
        let results = futures::future::join_all(calls).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let errors = results.into_iter().filter_map(Result::err).collect();
        (ok, errors)
    }

    pub(super) async fn concurrent_registrations_of_one_email_let_exactly_one_win(store: Store) {
        let app = spawn_app(store).await;
        let (ok, errors) = race(&app, 24, |i| pb::UserInput {
            email: "race@example.com".into(),
            external_id: format!("ext-{i}"),
            ..Default::default()
        })
        .await;
        assert_eq!(ok, 1, "exactly one registration wins: {errors:?}");
        assert_eq!(errors.len(), 23);
        for e in &errors {
            assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
            assert_eq!(reason(e), "EMAIL_ALREADY_ASSIGNED");
        }
        // The losers released their external ids: each can still register.
        app.users()
            .register_user(registering(
                "acme",
                pb::UserInput {
                    external_id: "ext-3".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ())
            .or_else(|e| {
                if reason(&e) == "EXTERNAL_ID_ALREADY_ASSIGNED" {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .expect("ext-3 is free, or it belonged to the winner");
    }

    pub(super) async fn concurrent_registrations_of_one_external_id_let_exactly_one_win(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        let (ok, errors) = race(&app, 24, |i| pb::UserInput {
            email: format!("u{i}@example.com"),
            external_id: "crm-42".into(),
            ..Default::default()
        })
        .await;
        assert_eq!(ok, 1, "exactly one registration wins: {errors:?}");
        for e in &errors {
            assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
            assert_eq!(reason(e), "EXTERNAL_ID_ALREADY_ASSIGNED");
        }
    }

    /// Each server serializes commands per aggregate in-process; across servers only the
    /// store's primary key decides. Race registrations through two servers on one store.
    pub(super) async fn two_servers_on_one_store_never_both_take_an_email(store: Store) {
        let app = spawn_app(store).await;
        let (addr2, _stop2, _server2) = start_server(app.db.url()).await;
        let channel2 = connect(addr2).await;
        for round in 0..5 {
            let email = format!("twin{round}@example.com");
            let either = |i: usize| match i % 2 {
                0 => app.users(),
                _ => UserServiceClient::new(channel2.clone()),
            };
            let (ok, errors) = race_through(either, 16, |_| user_input(&email)).await;
            assert_eq!(ok, 1, "round {round}: {errors:?}");
            for e in &errors {
                assert_eq!(reason(e), "EMAIL_ALREADY_ASSIGNED", "{e:?}");
            }
        }
    }

    pub(super) async fn events_record_who_did_what(store: Store) {
        let app = spawn_app(store).await;
        let mut request = registering("acme", user_input("meta@example.com"));
        request
            .metadata_mut()
            .insert("x-request-id", "req-123".parse().expect("ascii"));
        // Whatever a caller claims to be, the store records who its credential says it is.
        request
            .metadata_mut()
            .insert("x-actor", "mallory".parse().expect("ascii"));
        let user = ok!(app.users().register_user(request));
        let position = user.position as i64;
        let metadata: String = match &app.db {
            TestDb::Postgres(identity_testkit::PgDatabase { url, .. }) => {
                let pool = sqlx::PgPool::connect(url).await.expect("connect");
                let m: serde_json::Value =
                    sqlx::query_scalar("SELECT metadata FROM events WHERE global_position = $1")
                        .bind(position)
                        .fetch_one(&pool)
                        .await
                        .expect("event row");
                m.to_string()
            }
            TestDb::Sqlite { .. } => {
                // Read through the store API for SQLite: the events of the user aggregate.
                let log = identity_store::EventLog::open(&identity_store::StoreConfig {
                    url: app.db.url().to_string(),
                    max_connections: 1,
                    cache_capacity: 0,
                })
                .await
                .expect("open")
                .with_master_key(kit_master_key());
                let id = format!("acme/{}", user.user.expect("user").user_id);
                let events = log
                    .events::<identity_domain::user::User>(&id)
                    .await
                    .expect("events");
                serde_json::to_string(&events[0].metadata).expect("json")
            }
        };
        let actor = format!(r#""actor":"{}""#, kit_actor());
        let admin_id = format!(
            r#""admin_id":"{}""#,
            identity_server::access::bootstrap::dev_admin_id()
        );
        for expected in [
            r#""tenant":"acme""#,
            actor.as_str(),
            r#""principal_kind":"admin""#,
            admin_id.as_str(),
            r#""request_id":"req-123""#,
            r#""command":"RegisterUser""#,
        ] {
            assert!(
                metadata.contains(expected),
                "{expected} missing from {metadata}"
            );
        }
        assert!(
            !metadata.contains("mallory"),
            "x-actor was believed: {metadata}"
        );
    }
}

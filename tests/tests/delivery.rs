//! One-time codes reach people through the delivery channel (a JetStream stream a
//! notification service consumes), never an ordinary caller; a crash between deciding and
//! sending loses no code and two replicas send none twice. Both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use identity_proto::v1::auth_service_client::AuthServiceClient;
use tonic::Code;

on_both_stores!(
    codes_reach_people_through_the_channel_and_never_the_caller,
    a_crash_between_deciding_and_sending_loses_no_code_and_sends_none_twice,
);

mod scenarios {
    use super::*;

    pub(super) async fn codes_reach_people_through_the_channel_and_never_the_caller(store: Store) {
        let mut inbox = CodeInbox::new().await;
        let app = spawn_app_with(store, |s| inbox.configure(s)).await;
        let user = app.register("acme", "courier@example.com").await;
        app.users()
            .set_password(req("acme", ask::set_password(&user, "first password")))
            .await
            .expect("sets the password");

        // An email change: the caller gets no code, the new address does.
        let asked = ok!(app
            .users()
            .request_email_change(req("acme", ask::email_change(&user, "moved@example.com"))));
        assert!(asked.code.is_empty(), "the code reached the caller");
        let sent = inbox.next().await;
        assert_eq!(sent["purpose"], "email_change");
        assert_eq!(sent["channel"], "email");
        assert_eq!(sent["destination"], "moved@example.com");
        assert_eq!(sent["tenant"], "acme");
        assert_eq!(sent["user_id"], user.as_str());
        let code = sent["code"].as_str().expect("a code").to_string();
        let confirmed = ok!(app.users().confirm_email(req(
            "acme",
            pb::ConfirmEmailRequest {
                user_id: user.clone(),
                code,
            },
        )));
        assert_eq!(confirmed.email, "moved@example.com");

        // A password reset asked by an app (project key): the code goes to the person.
        let key = project_key(&app, "acme").await;
        let mut auth = AuthServiceClient::new(app.channel());
        let reset = || pb::RequestPasswordResetRequest {
            identifier: Some(pb::request_password_reset_request::Identifier::Email(
                "moved@example.com".into(),
            )),
            person_code: String::new(),
        };
        let asked = ok!(auth.request_password_reset(with_key(&key, reset())));
        assert!(asked.code.is_empty(), "the code reached the app");
        let sent = inbox.next().await;
        assert_eq!(sent["purpose"], "password_reset");
        assert_eq!(sent["destination"], "moved@example.com");
        let code = sent["code"].as_str().expect("a code").to_string();
        // Refused requests send nothing: one too soon, one for nobody.
        fails!(
            auth.request_password_reset(with_key(&key, reset())),
            Code::ResourceExhausted,
            "RATE_LIMIT_EXCEEDED",
        );
        auth.request_password_reset(with_key(
            &key,
            pb::RequestPasswordResetRequest {
                identifier: Some(pb::request_password_reset_request::Identifier::Email(
                    "nobody@example.com".into(),
                )),
                person_code: String::new(),
            },
        ))
        .await
        .expect("the same answer for nobody");
        auth.reset_password(with_key(
            &key,
            pb::ResetPasswordRequest {
                identifier: Some(pb::reset_password_request::Identifier::Email(
                    "moved@example.com".into(),
                )),
                code,
                new_password: "second password".into(),
            },
        ))
        .await
        .expect("the delivered code resets");
        auth.sign_in(with_key(
            &key,
            pb::SignInRequest {
                identifier: Some(pb::sign_in_request::Identifier::Email(
                    "moved@example.com".into(),
                )),
                password: "second password".into(),
            },
        ))
        .await
        .expect("the new password signs in");

        // The next message is the phone code: nothing was sent for the refused requests.
        app.users()
            .request_phone_change(req("acme", ask::phone_change(&user, "+37255512345")))
            .await
            .expect("requests");
        let sent = inbox.next().await;
        assert_eq!(sent["purpose"], "phone_change");
        assert_eq!(sent["channel"], "phone");
        assert_eq!(
            sent["destination"], "37255512345",
            "the stored (normalized) number"
        );
        outbox_drained(&app.event_log()).await;
        assert_eq!(inbox.count().await, 3, "exactly the three codes were sent");
        inbox.delete().await;
    }

    pub(super) async fn a_crash_between_deciding_and_sending_loses_no_code_and_sends_none_twice(
        store: Store,
    ) {
        let mut inbox = CodeInbox::new().await;
        // The first replica decides, but its channel is down (nothing listens on port 1), so
        // its codes are still in the outbox when it goes away.
        let mut first = spawn_app_with(store, |s| {
            inbox.configure(s);
            s.nats_url = Some("nats://127.0.0.1:1".into());
        })
        .await;
        let mut users = Vec::new();
        for n in 0..3 {
            let user = first
                .register("acme", &format!("crash{n}@example.com"))
                .await;
            let asked = ok!(first.users().request_email_change(req(
                "acme",
                ask::email_change(&user, &format!("crash{n}.new@example.com")),
            )));
            assert!(asked.code.is_empty());
            users.push(user);
        }
        let log = first.event_log();
        let stranded = log.outbox_waiting(100).await.expect("reads the outbox");
        assert_eq!(stranded.len(), 3, "the decided codes wait in the outbox");
        first.stop().await;

        // Two replicas with a working channel relay the same rows.
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let (_, stop, server, _, _, _) =
                start_server_with_settings(first.db.url(), |s| inbox.configure(s)).await;
            replicas.push((stop, server));
        }
        let log = identity_store::EventLog::open(&identity_store::StoreConfig {
            url: first.db.url().to_string(),
            max_connections: 2,
            cache_capacity: 0,
        })
        .await
        .expect("opens the store")
        .with_master_key(kit_master_key());
        outbox_drained(&log).await;
        // A relay that published and died before forgetting: the row is back, and it is
        // published again under the same message id.
        log.outbox_put(&stranded[0]).await.expect("puts it back");
        outbox_drained(&log).await;
        assert_eq!(inbox.count().await, 3, "each code was sent exactly once");

        let mut codes = std::collections::HashMap::new();
        for _ in 0..3 {
            let sent = inbox.next().await;
            codes.insert(
                sent["user_id"].as_str().expect("a user").to_string(),
                sent["code"].as_str().expect("a code").to_string(),
            );
        }
        assert_eq!(codes.len(), 3, "one code per user");
        let (addr, _stop, _server) = start_server(first.db.url()).await;
        let channel = connect(addr).await;
        let mut client = identity_proto::v1::user_service_client::UserServiceClient::new(channel);
        for (n, user) in users.iter().enumerate() {
            let confirmed =
                ok!(client.confirm_email(req("acme", ask::confirm_email(user, &codes[user]))));
            assert_eq!(confirmed.email, format!("crash{n}.new@example.com"));
        }
        for (stop, server) in replicas {
            let _ = stop.send(());
            let _ = server.await;
        }
        inbox.delete().await;
    }
}

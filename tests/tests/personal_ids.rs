//! Ids derived from personal values are keyed (issue 16, ADR 0006): a claim id or an
//! identifier email is a MAC under the tenant's secret, so that hashing candidate emails or
//! phone numbers finds nothing. A store written before sealing and keyed ids is refused by
//! the server until `identity-admin seal-forward` has brought it forward, once; afterwards
//! none of its people's values is stored in clear, every claim still guards its value, and
//! the chains verify. On both stores.

#[macro_use]
mod common;

use std::collections::HashMap;

use common::binary::{admin, admin_with};
use common::*;
use identity_domain::claim::{ClaimCommand, UniqueClaim};
use identity_domain::derive::{identifier_email, legacy_claim_id, IdKey, IdentifierSource};
use identity_domain::user::{RegisterUser, User, UserCommand, UserServices};
use identity_domain::values::{Email, ExternalId, JsonObject, Name, Phone, TenantId, UserId};
use identity_domain::ClaimKind;
use identity_proto::v1 as pb;
use identity_proto::v1::audit_service_client::AuditServiceClient;
use tonic::Code;

on_both_stores!(
    ids_derived_from_personal_values_are_keyed,
    an_old_store_is_refused_until_it_is_brought_forward_once,
    the_master_key_rotates_while_people_stay_readable,
);

const EMAIL: &str = "ysolde.brackenridge@example.com";
const PHONE: &str = "+37255504321";
const PHONE_DIGITS: &str = "37255504321";
const FIRST: &str = "Ysolde";
const EXTERNAL: &str = "crm-brackenridge-7";

fn acme() -> TenantId {
    TenantId::parse("acme").expect("tenant")
}

/// The claim aggregates stored in the log.
async fn claim_ids(db: &TestDb) -> Vec<String> {
    db.column("SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = 'UniqueClaim'")
        .await
}

/// How many stored events contain `needle` anywhere in their payload.
async fn events_containing(db: &TestDb, needle: &str) -> i64 {
    db.count(&format!(
        "SELECT COUNT(*) FROM events WHERE CAST(payload AS TEXT) LIKE '%{needle}%'"
    ))
    .await
}

/// What a store written before sealing and keyed ids holds for one person: their claims
/// under bare-hash ids and their registration in clear, as such a server wrote them.
async fn write_an_old_store(db: &TestDb) -> UserId {
    let log = identity_store::EventLog::open(&identity_store::StoreConfig {
        url: db.url().to_string(),
        max_connections: 2,
        cache_capacity: 0,
    })
    .await
    .expect("open the log without a master key");
    let owner = UserId(uuid::Uuid::new_v4());
    let email = Email::parse(EMAIL).expect("email");
    let phone = Phone::parse(PHONE).expect("phone");
    let external = ExternalId::parse(EXTERNAL).expect("external id");
    let metadata = HashMap::from([("actor".to_string(), "old-server".to_string())]);
    let mut unit = log.unit(&metadata);
    for (kind, value) in [
        (ClaimKind::ExternalId, external.to_string()),
        (ClaimKind::Email, email.to_string()),
        (ClaimKind::Phone, phone.to_string()),
    ] {
        unit.decide::<UniqueClaim>(
            &legacy_claim_id(&acme(), kind, &value),
            ClaimCommand::Claim { kind, owner },
            &(),
        )
        .await
        .expect("claim");
    }
    let register = RegisterUser {
        user_id: owner,
        tenant: acme(),
        id_key: IdKey::from_bytes([0; 32]),
        email: Some(email),
        phone: Some(phone),
        external_id: Some(external),
        first_name: Some(Name::parse(FIRST).expect("name")),
        last_name: None,
        locale: None,
        custom_data: JsonObject::default(),
        public_profile: JsonObject::default(),
        details: Default::default(),
        at: chrono::Utc::now(),
    };
    unit.decide::<User>(
        &format!("acme/{}", owner.0),
        UserCommand::Register(Box::new(register)),
        &UserServices::without_credentials(),
    )
    .await
    .expect("register");
    unit.commit().await.expect("commit");
    log.close().await;
    owner
}

mod scenarios {
    use super::*;

    pub(super) async fn ids_derived_from_personal_values_are_keyed(store: Store) {
        let app = spawn_app(store).await;
        let registered = ok!(app.users().register_user(registering(
            "acme",
            pb::UserInput {
                email: EMAIL.into(),
                phone: PHONE.into(),
                external_id: EXTERNAL.into(),
                ..Default::default()
            },
        )))
        .user
        .expect("user");

        // Every claim id is keyed; none is the bare hash anyone could compute from a
        // guessed value.
        let ids = claim_ids(&app.db).await;
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert!(ids.iter().all(|id| id.starts_with("acme/c2.")), "{ids:?}");
        for (kind, value) in [
            (ClaimKind::Email, EMAIL),
            (ClaimKind::Phone, PHONE_DIGITS),
            (ClaimKind::ExternalId, EXTERNAL),
        ] {
            let bare = legacy_claim_id(&acme(), kind, value);
            assert!(!ids.contains(&bare), "{kind:?} claim id is a bare hash");
        }
        // Nor is the identifier email the bare hash of the email.
        let email = Email::parse(EMAIL).expect("email");
        assert_ne!(
            registered.identifier_email,
            identifier_email(&acme(), IdentifierSource::Email(&email))
        );
        assert!(registered.identifier_email.ends_with("@acme.id"));

        // The tenant's key is stored wrapped, like a person's data key.
        let wrapped = app
            .db
            .count(
                "SELECT COUNT(*) FROM data_keys WHERE subject = 'ids:acme' AND wrapped IS NOT NULL",
            )
            .await;
        assert_eq!(wrapped, 1);

        // The keyed claims still guard their values.
        let twice = fails!(
            app.users()
                .register_user(registering("acme", user_input(EMAIL))),
            Code::AlreadyExists,
            "EMAIL_ALREADY_ASSIGNED",
        );
        assert!(twice.message().contains("email"), "{twice:?}");
    }

    pub(super) async fn an_old_store_is_refused_until_it_is_brought_forward_once(store: Store) {
        let db = TestDb::create(store).await;
        let owner = write_an_old_store(&db).await;
        assert!(events_containing(&db, EMAIL).await > 0);
        assert!(events_containing(&db, FIRST).await > 0);

        // The server does not start on it: its values would be free under keyed ids.
        let Err(refused) = identity_server::Application::build(kit_settings(db.url())).await else {
            panic!("a store with unkeyed claims is refused");
        };
        assert!(
            format!("{refused:#}").contains("identity-admin seal-forward"),
            "{refused:#}"
        );

        let dir = std::env::temp_dir();
        let (ok, out, err) = admin(&dir, db.url(), &["seal-forward"]);
        assert!(ok, "seal-forward failed: {out}\n{err}");
        assert!(out.contains("claims: 3 moved to keyed ids"), "{out}");
        assert_eq!(events_containing(&db, EMAIL).await, 0);
        assert_eq!(events_containing(&db, FIRST).await, 0);
        assert_eq!(events_containing(&db, EXTERNAL).await, 0);
        let ids = claim_ids(&db).await;
        assert_eq!(
            ids.iter().filter(|id| id.starts_with("acme/c2.")).count(),
            3,
            "{ids:?}"
        );

        // A second run finds nothing to do.
        let (ok, again, err) = admin(&dir, db.url(), &["seal-forward"]);
        assert!(ok, "{again}\n{err}");
        assert!(again.contains("sealed 0 personal field(s)"), "{again}");
        assert!(again.contains("claims: 0 moved"), "{again}");

        // The server starts; the person reads as before, their values are still theirs,
        // and the rewritten chains verify.
        let app = spawn_app_on(db, |_| {}).await;
        let user = ok!(app
            .users()
            .get_user(req("acme", ask::get_user(&owner.0.to_string()))))
        .user
        .expect("user");
        assert_eq!(
            (user.email.as_str(), user.first_name.as_str()),
            (EMAIL, FIRST)
        );
        for input in [
            user_input(EMAIL),
            pb::UserInput {
                phone: PHONE.into(),
                ..Default::default()
            },
            pb::UserInput {
                external_id: EXTERNAL.into(),
                ..Default::default()
            },
        ] {
            let taken = app
                .users()
                .register_user(registering("acme", input))
                .await
                .expect_err("the value is still claimed");
            assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
        }
        let mut audit = AuditServiceClient::new(app.channel());
        let report = ok!(audit.verify_chain(req("acme", pb::VerifyChainRequest {})));
        assert!(report.intact, "{report:?}");
    }

    pub(super) async fn the_master_key_rotates_while_people_stay_readable(store: Store) {
        let mut app = spawn_app(store).await;
        let first = app.register("acme", EMAIL).await;
        let old = kit_master_key_file().clone();
        let new = std::env::temp_dir().join(format!(
            "identity-rotated-{}.key",
            uuid::Uuid::new_v4().simple()
        ));
        let new_id = identity_store::MasterKey::read_or_create(&new)
            .expect("a new master key")
            .id()
            .to_string();
        let email_of = |app: &TestApp, id: &str| {
            let mut users = app.users();
            let request = req("acme", ask::get_user(id));
            async move {
                let user = users
                    .get_user(request)
                    .await
                    .expect("get user")
                    .into_inner();
                user.user.expect("user").email
            }
        };

        // Step one: the new key wraps, the old one still unwraps.
        let (new_file, old_file) = (new.clone(), old.clone());
        app.restart_with(move |s| {
            s.master_key_file = Some(new_file);
            s.previous_master_key_files = vec![old_file];
        })
        .await;
        assert_eq!(email_of(&app, &first).await, EMAIL);
        let second = app.register("acme", "second.person@example.com").await;

        // Step two: every key the old one wrapped is wrapped with the new one.
        let env = [
            ("IDENTITY_MASTER_KEY_FILE", new.display().to_string()),
            (
                "IDENTITY_PREVIOUS_MASTER_KEY_FILES",
                old.display().to_string(),
            ),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let dir = std::env::temp_dir();
        let (ok, out, err) = admin_with(&dir, app.db.url(), &["rewrap-keys"], &env);
        assert!(ok, "rewrap-keys failed: {out}\n{err}");
        // The old key wrapped three: the first person's, the tenant's key of ids and the
        // development admin's; the new one the second person's already.
        assert!(out.contains("rewrapped 3 key(s)"), "{out}");
        assert!(
            out.contains(&format!("master key {new_id}: 4 key(s)")),
            "{out}"
        );
        let old_wrapped = app
            .db
            .count(&format!(
                "SELECT COUNT(*) FROM data_keys WHERE wrapped IS NOT NULL AND master_key_id <> '{new_id}'"
            ))
            .await;
        assert_eq!(old_wrapped, 0);

        // Step three: the old key is gone; everyone reads, every claim still guards.
        let new_file = new.clone();
        app.restart_with(move |s| {
            s.master_key_file = Some(new_file);
            s.previous_master_key_files = Vec::new();
        })
        .await;
        assert_eq!(email_of(&app, &first).await, EMAIL);
        assert_eq!(email_of(&app, &second).await, "second.person@example.com");
        fails!(
            app.users()
                .register_user(registering("acme", user_input(EMAIL))),
            Code::AlreadyExists,
            "EMAIL_ALREADY_ASSIGNED",
        );
        let _ = std::fs::remove_file(new);
    }
}

//! Pins the stored JSON of one event of every type. Events live forever in the log: if this
//! test fails, a shipped event's shape changed. Do not update the golden file for that; add a
//! new event version and an upcaster instead (docs/adr/0001-event-log.md).

mod common;

use std::collections::BTreeSet;

use chrono::NaiveDate;
use common::*;
use cqrs_es::DomainEvent;
use identity_domain::admin::AdminEvent;
use identity_domain::claim::ClaimEvent;
use identity_domain::identification::*;
use identity_domain::session::SignInFact;
use identity_domain::status_tier::StatusTierEvent;
use identity_domain::tenant::TenantEvent;
use identity_domain::user::{Credential, ProfileField, UserEvent};
use identity_domain::values::*;
use identity_domain::wallet::*;
use identity_domain::ClaimKind;
use uuid::Uuid;

fn line<E: DomainEvent>(e: &E) -> String {
    format!(
        "{} {} {}",
        e.event_type(),
        e.event_version(),
        serde_json::to_string(e).expect("serializes")
    )
}

fn samples() -> Vec<String> {
    let tier = TierId(Uuid::from_u128(3));
    let text = |s: &str| Text::parse(s).expect("text");
    let mut out = vec![];
    let user = vec![
        UserEvent::UserRegistered {
            user_id: user_id(1),
            tenant: tenant(),
            email: Some(email("ada@example.com")),
            phone: Some(phone("37255551234")),
            external_id: Some(ExternalId::parse("crm-1").expect("id")),
            identifier_email: "u0@acme.id".into(),
            first_name: Some(name("Ada")),
            last_name: Some(name("Lovelace")),
            locale: Some(Locale::parse("en").expect("locale")),
            custom_data: JsonObject::parse(r#"{"a":1}"#).expect("json"),
            public_profile: JsonObject::default(),
            registered_at: t(0),
        },
        UserEvent::UserProfileUpdated {
            first_name: None,
            last_name: Some(name("King")),
            locale: None,
            custom_data: None,
            public_profile: None,
            updated_at: t(1),
        },
        UserEvent::UserDeactivated { at: t(2) },
        UserEvent::UserReactivated { at: t(3) },
        UserEvent::EmailChangeRequested {
            email: email("b@example.com"),
            code_hash: "ab12".into(),
            expires_at: t(4),
        },
        UserEvent::EmailConfirmationFailed { failed_attempts: 1 },
        UserEvent::EmailConfirmed {
            email: email("b@example.com"),
            previous: None,
            at: t(5),
        },
        UserEvent::PhoneChangeRequested {
            phone: phone("37255551234"),
            code_hash: "cd34".into(),
            expires_at: t(6),
        },
        UserEvent::PhoneConfirmationFailed { failed_attempts: 2 },
        UserEvent::PhoneConfirmed {
            phone: phone("37255551234"),
            previous: None,
            at: t(7),
        },
        UserEvent::RolesChanged {
            roles: BTreeSet::from([Role::parse("admin").expect("role")]),
        },
        UserEvent::PasswordSet {
            credential: Credential::Modern {
                phc: "$argon2id$x".into(),
            },
        },
        UserEvent::PasswordChanged {
            credential: Credential::Modern {
                phc: "$argon2id$y".into(),
            },
        },
        UserEvent::LegacyCredentialImported {
            credential: Credential::LegacySha1 {
                salt: "s".into(),
                digest: "ZA==".into(),
            },
        },
        UserEvent::LegacyCredentialUpgraded {
            credential: Credential::Modern {
                phc: "$argon2id$z".into(),
            },
        },
        UserEvent::UserMerged {
            into: user_id(2),
            at: t(8),
        },
    ];
    out.extend(user.iter().map(line));
    let wallet = [
        WalletEvent::WalletOpened {
            wallet_id: WalletId(Uuid::from_u128(4)),
            tenant: tenant(),
            owner: Owner {
                owner_type: OwnerType::User,
                owner_id: user_id(1).to_string(),
            },
            wallet_type: WalletType::Internal,
            network: Network::Evm(8453),
            address: "0xab".into(),
            explorer_url: None,
            opened_at: t(0),
        },
        WalletEvent::WalletActivated { at: t(1) },
        WalletEvent::WalletSuspended { at: t(2) },
        WalletEvent::WalletClosed { at: t(3) },
        WalletEvent::TokensCredited {
            token: token("PTS"),
            amount: amount(10),
            balance: amount(10),
            idempotency_key: key("k1"),
            at: t(4),
        },
        WalletEvent::TokensDebited {
            token: token("PTS"),
            amount: amount(3),
            balance: amount(7),
            idempotency_key: key("k2"),
            at: t(5),
        },
    ];
    out.extend(wallet.iter().map(line));
    let tiers = [
        StatusTierEvent::StatusTierCreated {
            tier_id: tier,
            tenant: tenant(),
            name: name("Gold"),
            description: Some(text("shiny")),
            min_balance: amount(1000),
            discount: Percentage::parse("12.5").expect("pct"),
            image_url: Some(Url::parse("https://x.example/g.png").expect("url")),
            eligible_tokens: BTreeSet::from([token("PTS")]),
            created_at: t(0),
        },
        min_balance_raised(),
        StatusTierEvent::StatusTierRetired { at: t(2) },
        StatusTierEvent::EligibleTokenAdded {
            token: token("USDC"),
            at: t(3),
        },
        StatusTierEvent::EligibleTokenRemoved {
            token: token("USDC"),
            at: t(4),
        },
    ];
    out.extend(tiers.iter().map(line));
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("date");
    let ident = [
        IdentificationEvent::IdentificationStarted {
            tenant: tenant(),
            user_id: user_id(1),
        },
        IdentificationEvent::IdentitySubmitted {
            identity: Identity {
                first_name: name("Ada"),
                surname: name("Lovelace"),
                nationality: CountryCode::parse("EE").expect("cc"),
                person_code: PersonCode::parse("EE", "38601010123").expect("pc"),
                date_of_birth: Some(day(1986, 1, 1)),
            },
            at: t(1),
        },
        IdentificationEvent::DocumentAttached {
            document: Document {
                document_id: DocumentId(Uuid::from_u128(5)),
                kind: DocumentKind::DrivingLicence,
                number: "D1".into(),
                issue_date: day(2020, 1, 1),
                expiry_date: Some(day(2030, 1, 1)),
                file: None,
            },
            at: t(2),
        },
        IdentificationEvent::PepStatusSet {
            pep: true,
            reason: Some(text("minister")),
            by: "officer".into(),
            at: t(3),
        },
        IdentificationEvent::IdentificationLevelChanged {
            from: IdentificationLevel::Unidentified,
            to: IdentificationLevel::Identified,
            reason: None,
            by: "officer".into(),
            at: t(4),
        },
    ];
    out.extend(ident.iter().map(line));
    let claims = [
        ClaimEvent::ValueClaimed {
            kind: ClaimKind::Email,
            owner: user_id(1),
        },
        ClaimEvent::ValueReleased { owner: user_id(1) },
    ];
    out.extend(claims.iter().map(line));
    let tenants = [
        TenantEvent::TenantCreated {
            tenant: tenant(),
            name: name("Acme"),
            created_at: t(1),
        },
        TenantEvent::ProjectKeyIssued {
            key_id: "0a1b2c3d4e5f".into(),
            digest: "ab12".into(),
            name: name("web shop"),
            issued_at: t(2),
        },
        TenantEvent::ProjectKeyRevoked {
            key_id: "0a1b2c3d4e5f".into(),
            revoked_at: t(3),
        },
        TenantEvent::RolePermissionsSet {
            role: "member".into(),
            permissions: BTreeSet::from(["read:public".to_string(), "read:users".to_string()]),
            at: t(4),
        },
    ];
    out.extend(tenants.iter().map(line));
    let admins = [
        ops_admin_created(1),
        AdminEvent::AdminAssignedToTenant {
            tenant: tenant(),
            at: t(2),
        },
        AdminEvent::AdminRemovedFromTenant {
            tenant: tenant(),
            at: t(3),
        },
        AdminEvent::AdminRemoved { at: t(4) },
    ];
    out.extend(admins.iter().map(line));
    // Added with sign-in, lockout and password reset (appended: no earlier line moves).
    let session = SessionId(Uuid::from_u128(7));
    let guarded = vec![
        UserEvent::PasswordCheckFailed {
            failed_attempts: 20,
            locked_until: Some(t(60)),
            at: t(0),
        },
        UserEvent::PasswordFailuresCleared { at: t(61) },
        UserEvent::SessionStarted {
            session,
            refresh_digest: "ef56".into(),
            started_at: t(62),
            expires_at: t(1000),
        },
        UserEvent::SessionRefreshed {
            session,
            refresh_digest: "ab78".into(),
            at: t(63),
            expires_at: t(2000),
        },
        UserEvent::SessionsEnded {
            sessions: vec![session],
            reason: identity_domain::session::SessionEnd::TokenReused,
            at: t(64),
        },
        UserEvent::EmailChangeStarted {
            email: email("b@example.com"),
            code_hash: "ab12".into(),
            requested_at: t(65),
            expires_at: t(665),
            failed_attempts: 2,
        },
        UserEvent::PhoneChangeStarted {
            phone: phone("37255551234"),
            code_hash: "cd34".into(),
            requested_at: t(66),
            expires_at: t(666),
            failed_attempts: 0,
        },
        UserEvent::PasswordResetStarted {
            channel: identity_domain::session::CodeChannel::Email,
            code_hash: "ee99".into(),
            requested_at: t(67),
            expires_at: t(667),
            failed_attempts: 1,
        },
        UserEvent::PasswordResetFailed { failed_attempts: 2 },
        UserEvent::PasswordReset {
            credential: Credential::Modern {
                phc: "$argon2id$x".into(),
            },
            at: t(68),
        },
    ];
    out.extend(guarded.iter().map(line));
    // Added with admin sign-in (appended).
    let admin_sign_in = [
        AdminEvent::AdminPasswordSet {
            credential: Credential::Modern {
                phc: "$argon2id$y".into(),
            },
            at: t(70),
        },
        AdminEvent::AdminSignIn(SignInFact::CheckFailed {
            failed_attempts: 1,
            locked_until: None,
            at: t(71),
        }),
        AdminEvent::AdminSignIn(SignInFact::FailuresCleared { at: t(72) }),
        AdminEvent::AdminSignIn(SignInFact::Started {
            session,
            refresh_digest: "a1".into(),
            started_at: t(73),
            expires_at: t(1073),
        }),
        AdminEvent::AdminSignIn(SignInFact::Refreshed {
            session,
            refresh_digest: "a2".into(),
            at: t(74),
            expires_at: t(2074),
        }),
        AdminEvent::AdminSignIn(SignInFact::Ended {
            sessions: vec![session],
            reason: identity_domain::session::SessionEnd::SignedOut,
            at: t(75),
        }),
    ];
    out.extend(admin_sign_in.iter().map(line));
    // Events added later go here, at the end, so that earlier lines never move.
    out.push(line(&UserEvent::UserErased {
        basis: text("GDPR art. 17, ticket 42"),
        erased_by: "admin:7".into(),
        at: t(80),
    }));
    let email = |s: &str| Email::parse(s).expect("email");
    out.extend(
        [
            UserEvent::EmailSet {
                email: Some(email("set@example.com")),
                previous: Some(email("old@example.com")),
                at: t(81),
            },
            UserEvent::PhoneSet {
                phone: None,
                previous: Some(Phone::parse("+3725550000").expect("phone")),
                at: t(82),
            },
            UserEvent::ExternalIdSet {
                external_id: Some(ExternalId::parse("crm-2").expect("id")),
                previous: None,
                at: t(83),
            },
            UserEvent::ProfileFieldsCleared {
                fields: [ProfileField::FirstName, ProfileField::CustomData].into(),
                at: t(84),
            },
        ]
        .iter()
        .map(line),
    );
    out.push(line(&WalletEvent::WalletOwnerChanged {
        owner: Owner {
            owner_type: OwnerType::User,
            owner_id: Uuid::from_u128(8).to_string(),
        },
        previous: Owner {
            owner_type: OwnerType::User,
            owner_id: Uuid::from_u128(7).to_string(),
        },
        at: t(85),
    }));
    out.push(line(&UserEvent::ProfileDetailsSet {
        details: ProfileDetails {
            postal_address: Some(Address {
                country: Some(CountryCode::parse("EE").expect("country")),
                city: Some(Name::parse("Tallinn").expect("city")),
                street: Some(Text::parse("Narva mnt 7").expect("street")),
                post_index: Some(Name::parse("10117").expect("index")),
            }),
            date_of_birth: NaiveDate::from_ymd_opt(1986, 1, 31),
            gender: Some(Gender::Female),
            person_type: Some(PersonType::Natural),
            default_currency: Some(Currency::parse("EUR").expect("currency")),
            nickname: Some(Name::parse("ada").expect("nickname")),
            picture_url: Some(Url::parse("https://example.com/ada.png").expect("url")),
            instagram_account_id: Some(AccountName::parse("1784").expect("id")),
            google_account_name: Some(AccountName::parse("ada@gmail.com").expect("name")),
            account_address: Some("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into()),
        },
        at: t(86),
    }));
    out.push(line(&IdentificationEvent::DocumentAttached {
        document: Document {
            document_id: DocumentId(Uuid::from_u128(12)),
            kind: DocumentKind::IdentityCard,
            number: "AB1234567".into(),
            issue_date: day(2021, 3, 1),
            expiry_date: None,
            file: Some(DocumentFile {
                digest: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
                size: 48213,
                media_type: "application/pdf".into(),
                title: Some(text("ID card, both sides")),
                extension: Some("pdf".into()),
            }),
        },
        at: t(87),
    }));
    out.push(line(&IdentificationEvent::PepRecordsSet {
        pep_records: vec![PepRecord {
            position: text("Member of parliament"),
            country: CountryCode::parse("EE").expect("country"),
            since: Some(day(2019, 4, 4)),
            until: None,
            relation: PepRelation::CloseAssociate,
        }],
        reason: Some(text("declared by the person")),
        by: "officer-7".into(),
        at: t(88),
    }));
    out
}

#[test]
fn the_stored_json_of_every_event_type_is_pinned() {
    let golden = include_str!("events.golden.txt");
    let actual = samples().join("\n") + "\n";
    if std::env::var_os("BLESS_EVENTS").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/events.golden.txt"),
            &actual,
        )
        .expect("write golden file");
        return;
    }
    for (n, (want, got)) in golden.lines().zip(actual.lines()).enumerate() {
        assert_eq!(got, want, "event #{n} changed shape");
    }
    assert_eq!(golden.lines().count(), actual.lines().count());
}

/// Every personal field the store seals (`identity_domain::personal`) names a field its
/// event really has: a misspelt one would leave the real field in clear.
#[test]
fn every_sealed_field_is_a_field_of_its_event() {
    let samples = samples();
    for (aggregate_type, event_type, fields) in identity_domain::personal::SEALED {
        assert!(identity_domain::personal::is_personal(aggregate_type));
        let body = samples
            .iter()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ' ');
                let (ty, _version, json) = (parts.next()?, parts.next()?, parts.next()?);
                (ty == *event_type).then(|| serde_json::from_str::<serde_json::Value>(json))
            })
            .next()
            .unwrap_or_else(|| panic!("no sample of {aggregate_type}/{event_type}"))
            .expect("json");
        let variant = body[*event_type]
            .as_object()
            .expect("a variant with fields");
        for field in *fields {
            assert!(
                variant.contains_key(*field),
                "{event_type} has no field {field}"
            );
        }
    }
}

/// Once a person's key is destroyed, each sealed field reads as its erased value: the event
/// must still decode into its type, so that histories and states stay readable.
#[test]
fn every_event_decodes_with_its_personal_fields_erased() {
    use identity_domain::personal::{erased_value, SEALED};
    let samples = samples();
    for (aggregate_type, event_type, fields) in SEALED {
        for line in samples
            .iter()
            .filter(|l| l.starts_with(&format!("{event_type} ")))
        {
            let json = line.splitn(3, ' ').nth(2).expect("json");
            let mut value: serde_json::Value = serde_json::from_str(json).expect("json");
            for field in *fields {
                value[*event_type][*field] = erased_value(field);
            }
            let decoded = match *aggregate_type {
                "User" => serde_json::from_value::<UserEvent>(value).map(|_| ()),
                "Identification" => {
                    serde_json::from_value::<IdentificationEvent>(value).map(|_| ())
                }
                "Admin" => serde_json::from_value::<AdminEvent>(value).map(|_| ()),
                other => panic!("no decoder for {other}"),
            };
            decoded.unwrap_or_else(|e| panic!("{event_type} erased does not decode: {e}"));
        }
    }
}

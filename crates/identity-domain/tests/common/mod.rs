//! Shared fixtures for the aggregate tests.
#![allow(dead_code, unreachable_pub)]

pub mod users;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use identity_domain::user::{Credential, CredentialVerifier, Secret, UserServices};
use identity_domain::values::*;
use uuid::Uuid;

pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

pub fn tenant() -> TenantId {
    TenantId::parse("acme").expect("tenant")
}

pub fn user_id(n: u128) -> UserId {
    UserId(Uuid::from_u128(n))
}

pub fn email(s: &str) -> Email {
    Email::parse(s).expect("email")
}

pub fn phone(s: &str) -> Phone {
    Phone::parse(s).expect("phone")
}

pub fn token(s: &str) -> TokenId {
    TokenId::parse(s).expect("token")
}

pub fn amount(n: u128) -> TokenAmount {
    TokenAmount(n)
}

pub fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).expect("key")
}

pub fn name(s: &str) -> Name {
    Name::parse(s).expect("name")
}

/// A verifier for tests: a modern credential matches `phc:<password>`, a legacy one matches
/// when its digest is `<salt><password>`.
#[derive(Debug)]
pub struct FakeVerifier;

impl CredentialVerifier for FakeVerifier {
    fn verify<'a>(
        &'a self,
        credential: &'a Credential,
        password: &'a Secret,
    ) -> Pin<Box<dyn Future<Output = Result<bool, identity_domain::DomainError>> + Send + 'a>> {
        let ok = match credential {
            Credential::Modern { phc } => *phc == format!("phc:{}", password.expose()),
            Credential::LegacySha1 { salt, digest } => {
                *digest == format!("{salt}{}", password.expose())
            }
        };
        Box::pin(async move { Ok(ok) })
    }

    /// `phc:<password>`.
    fn hash<'a>(
        &'a self,
        password: &'a Secret,
    ) -> Pin<Box<dyn Future<Output = Result<String, identity_domain::DomainError>> + Send + 'a>>
    {
        let phc = format!("phc:{}", password.expose());
        Box::pin(async move { Ok(phc) })
    }
}

pub fn services() -> UserServices {
    UserServices {
        credentials: Arc::new(FakeVerifier),
    }
}

/// The tenant admin "ops@example.com" of acme, created at `t(at)`.
pub fn ops_admin_created(at: i64) -> identity_domain::admin::AdminEvent {
    identity_domain::admin::AdminEvent::AdminCreated {
        admin_id: Uuid::from_u128(7),
        email: email("ops@example.com"),
        display_name: name("Ops"),
        admin_type: identity_domain::admin::AdminType::TenantAdmin,
        tenants: std::collections::BTreeSet::from([tenant()]),
        created_at: t(at),
    }
}

/// A tier update that raises only the minimum balance, to 2000, at `t(1)`.
pub fn min_balance_raised() -> identity_domain::status_tier::StatusTierEvent {
    identity_domain::status_tier::StatusTierEvent::StatusTierUpdated {
        name: None,
        description: None,
        min_balance: Some(amount(2000)),
        discount: None,
        image_url: None,
        updated_at: t(1),
    }
}

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

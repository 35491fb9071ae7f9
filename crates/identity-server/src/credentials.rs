//! Password hashing (argon2id, OWASP parameters) and verification, including migrated
//! SHA-1 credentials. Hashing is slow on purpose, so it runs on tokio's blocking pool behind
//! a semaphore: logins can never starve the async workers that serve other calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use identity_domain::user::{Credential, CredentialVerifier, Secret};
use sha1::{Digest as _, Sha1};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

/// Hashes and verifies passwords off the async workers.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

impl Passwords {
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    /// An argon2id PHC string for the password.
    pub async fn hash(&self, password: &Secret) -> ApiResult<String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let password = password.clone();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| ApiError::Internal(format!("hashing failed: {e}")))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    }

    async fn check(&self, credential: &Credential, password: &Secret) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let credential = credential.clone();
        let password = password.clone();
        tokio::task::spawn_blocking(move || verify_now(&credential, &password))
            .await
            .unwrap_or(false)
    }
}

fn verify_now(credential: &Credential, password: &Secret) -> bool {
    match credential {
        Credential::Modern { phc } => PasswordHash::new(phc)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false),
        Credential::LegacySha1 { salt, digest } => {
            let mut h = Sha1::new();
            h.update(salt.as_bytes());
            h.update(password.expose().as_bytes());
            let computed = base64::engine::general_purpose::STANDARD.encode(h.finalize());
            computed.len() == digest.len()
                && computed
                    .bytes()
                    .zip(digest.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        }
    }
}

impl CredentialVerifier for Passwords {
    fn verify<'a>(
        &'a self,
        credential: &'a Credential,
        password: &'a Secret,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(self.check(credential, password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let p = Passwords::new(2);
        let phc = p.hash(&Secret::new("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        let c = Credential::Modern { phc };
        assert!(p.check(&c, &Secret::new("correct horse")).await);
        assert!(!p.check(&c, &Secret::new("wrong")).await);
    }

    #[tokio::test]
    async fn a_legacy_sha1_credential_verifies() {
        // base64(sha1("s4lt" + "pw"))
        let mut h = Sha1::new();
        h.update(b"s4ltpw");
        let digest = base64::engine::general_purpose::STANDARD.encode(h.finalize());
        let c = Credential::LegacySha1 {
            salt: "s4lt".into(),
            digest,
        };
        let p = Passwords::new(1);
        assert!(p.check(&c, &Secret::new("pw")).await);
        assert!(!p.check(&c, &Secret::new("px")).await);
    }
}

//! Bearer tokens: the service's own Ed25519 signing key, external issuers' keys (JWKS), and
//! verification with an allow-list of algorithms.
//!
//! Only EdDSA, ES256 and RS256 are accepted, and a key verifies only tokens of its own
//! algorithm: `alg: none` and HMAC signed with a public key can never pass. Issuer, audience,
//! `exp` and `nbf` (with a small leeway) and `sub` are checked. A verified token is kept,
//! by digest, until it expires, so a busy caller's signature is checked once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;
const ACCEPTED: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];
const CACHE_CAPACITY: usize = 10_000;

/// What a token says. `kind` is `admin` (sub = admin id), `service` (sub = the service's name;
/// `permissions` lists what it may do) or `user` (sub = user id; the tenant's role table says
/// what the user's roles allow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default = "service_kind", skip_serializing_if = "is_service")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
    /// The session a SignIn token belongs to: ending the session ends the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// A user's roles when the token was issued (informational; the role table decides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Which personal fields the bearer may read; absent means every field its permissions
    /// reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

fn service_kind() -> String {
    "service".into()
}

fn is_service(kind: &str) -> bool {
    kind == "service"
}

/// Why a token was refused (the caller sees UNAUTHENTICATED with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenRefused(pub String);

#[derive(Debug)]
struct VerifyKey {
    issuer: String,
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The service's own signing key (Ed25519).
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A public key of the service's own: the current key's, or a previous key's kept after a
/// rotation so the tokens it signed verify (and stay published) until they expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    public_pem: String,
    public: [u8; 32],
}

impl PublicKey {
    fn of(key: &ed25519_dalek::VerifyingKey) -> anyhow::Result<Self> {
        let public_pem = key
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?;
        // Short: HTTP/2 never compresses `authorization` across calls (HPACK leaves it out of
        // its table on purpose), so every byte of a token travels with every call.
        let kid = hex::encode(&Sha256::digest(key.as_bytes())[..4]);
        Ok(Self {
            kid,
            public_pem,
            public: key.to_bytes(),
        })
    }

    /// Reads an SPKI PEM public key, or takes the public part of a PKCS#8 private key.
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Self::of(&key.verifying_key());
        }
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem).map_err(|e| {
            anyhow::anyhow!("not an Ed25519 public (SPKI) or private (PKCS#8) key: {e}")
        })?;
        Self::of(&key)
    }

    /// Reads [`PublicKey::from_pem`] from a file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading the previous signing key {}", path.display()))?;
        Self::from_pem(&pem).with_context(|| format!("the previous signing key {}", path.display()))
    }

    /// As SPKI PEM.
    pub fn pem(&self) -> &str {
        &self.public_pem
    }

    /// As a JWK (RFC 8037), for other services to verify this one's tokens.
    pub fn jwk(&self) -> serde_json::Value {
        use base64::Engine as _;
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public),
        })
    }

    fn verify_key(&self, issuer: &str) -> anyhow::Result<VerifyKey> {
        Ok(VerifyKey {
            issuer: issuer.to_string(),
            kid: Some(self.kid.clone()),
            alg: Algorithm::EdDSA,
            key: DecodingKey::from_ed_pem(self.public_pem.as_bytes())?,
        })
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| anyhow::anyhow!("not a PKCS#8 Ed25519 private key: {e}"))?;
        let public = PublicKey::of(&key.verifying_key())?;
        Ok(Self {
            kid: public.kid.clone(),
            encoding: EncodingKey::from_ed_pem(pem.as_bytes())?,
            public,
        })
    }

    /// The public key (what a verifier of this service's tokens needs).
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The public key, as SPKI PEM.
    pub fn public_pem(&self) -> &str {
        self.public.pem()
    }

    /// The public key as a JWK (RFC 8037).
    pub fn jwk(&self) -> serde_json::Value {
        self.public.jwk()
    }

    /// A new random key, as PKCS#8 PEM.
    pub fn generate_pem() -> anyhow::Result<String> {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Ok(key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the key: {e}"))?
            .to_string())
    }

    /// Reads the key at `path`; with `create`, writes a new one there first if none exists
    /// (owner-only permissions).
    pub fn load_or_create(path: &Path, create: bool) -> anyhow::Result<Self> {
        if !path.exists() && create {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let pem = Self::generate_pem()?;
            write_private(path, &pem)?;
            tracing::info!(path = %path.display(), "created a development signing key");
        }
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading the signing key {}", path.display()))?;
        Self::from_pem(&pem).with_context(|| format!("the signing key {}", path.display()))
    }

    /// Rotates the key at `path`: keeps the current key's public part beside it
    /// (`<stem>.<kid>.pub.pem`), then puts a new key in its place (written aside and renamed,
    /// so a crash leaves one whole key). Returns the kept key's file and the new key.
    pub fn rotate(path: &Path) -> anyhow::Result<(std::path::PathBuf, Self)> {
        let current = Self::load_or_create(path, false)?;
        let kept = path.with_extension(format!("{}.pub.pem", current.kid));
        std::fs::write(&kept, current.public_pem())
            .with_context(|| format!("writing {}", kept.display()))?;
        let pem = Self::generate_pem()?;
        let fresh = Self::from_pem(&pem)?;
        let aside = path.with_extension(format!("{}.new", fresh.kid));
        write_private(&aside, &pem)?;
        std::fs::rename(&aside, path).with_context(|| format!("replacing {}", path.display()))?;
        Ok((kept, fresh))
    }

    /// Signs claims.
    pub fn mint(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = None;
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("creating {}", path.display()))
}

/// An external issuer whose tokens are accepted, with its keys (a JWKS document).
#[derive(Debug, Clone, Deserialize)]
pub struct TrustedIssuer {
    pub issuer: String,
    /// A JWKS file; read at start.
    pub jwks_file: String,
}

/// Verified tokens by signature: the entry keeps the whole token, and a hit must match it
/// byte for byte (a signature alone proves nothing about another payload).
type Cache = HashMap<Box<str>, (Box<str>, Arc<Verified>)>;

/// A verified token, with what every later request with it needs already worked out.
#[derive(Debug)]
pub struct Verified {
    pub claims: Claims,
    /// The permissions a service token lists (unknown names dropped).
    pub permissions: crate::Permissions,
    /// The token's tenant claim, parsed.
    pub tenant: Option<identity_domain::values::TenantId>,
}

/// Checks bearer tokens.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Arc<Vec<VerifyKey>>,
    audience: String,
    cache: Arc<Mutex<Cache>>,
}

impl Verifier {
    /// Accepts tokens of `own` (the service's key, for `issuer`), of the service's
    /// `previous` keys (same issuer: tokens signed before a rotation), and of `trusted`
    /// issuers.
    pub fn new(
        own: Option<(&SigningKey, &str)>,
        previous: &[PublicKey],
        trusted: &[TrustedIssuer],
        audience: &str,
    ) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        if let Some((key, issuer)) = own {
            keys.push(key.public.verify_key(issuer)?);
            for old in previous.iter().filter(|p| p.kid != key.kid) {
                keys.push(old.verify_key(issuer)?);
            }
        }
        for t in trusted {
            let raw = std::fs::read_to_string(&t.jwks_file)
                .with_context(|| format!("reading the JWKS of {} at {}", t.issuer, t.jwks_file))?;
            let set: JwkSet = serde_json::from_str(&raw)
                .with_context(|| format!("the JWKS of {} at {}", t.issuer, t.jwks_file))?;
            for jwk in &set.keys {
                let Some(alg) = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                else {
                    anyhow::bail!("a key of {} names no algorithm (alg)", t.issuer);
                };
                if !ACCEPTED.contains(&alg) {
                    anyhow::bail!(
                        "a key of {} is {alg:?}; only EdDSA, ES256 and RS256 are accepted",
                        t.issuer
                    );
                }
                keys.push(VerifyKey {
                    issuer: t.issuer.clone(),
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key: DecodingKey::from_jwk(jwk)?,
                });
            }
        }
        Ok(Self {
            keys: Arc::new(keys),
            audience: audience.to_string(),
            cache: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The claims of a valid token.
    pub fn verify(&self, token: &str) -> Result<Arc<Verified>, TokenRefused> {
        let signature = token.rsplit('.').next().unwrap_or_default();
        let now = jsonwebtoken::get_current_timestamp();
        if let Ok(cache) = self.cache.lock() {
            if let Some((whole, v)) = cache.get(signature) {
                let c = &v.claims;
                if **whole == *token
                    && c.exp > now
                    && c.nbf.is_none_or(|nbf| nbf <= now + LEEWAY_SECS)
                {
                    return Ok(v.clone());
                }
            }
        }
        let claims = self.check(token)?;
        let mut permissions = crate::Permissions::default();
        for name in &claims.permissions {
            if let Some(p) = crate::Permission::parse(name) {
                permissions.insert(p);
            }
        }
        let tenant = claims
            .tenant
            .as_deref()
            .map(identity_domain::values::TenantId::parse)
            .transpose()
            .map_err(|_| TokenRefused("the token's tenant is malformed".into()))?;
        let verified = Arc::new(Verified {
            claims,
            permissions,
            tenant,
        });
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.retain(|_, (_, v)| v.claims.exp > now);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(signature.into(), (token.into(), verified.clone()));
        }
        Ok(verified)
    }

    fn check(&self, token: &str) -> Result<Claims, TokenRefused> {
        let refuse = |why: &str| TokenRefused(why.to_string());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| refuse("the bearer token is not a JWT"))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(refuse(
                "the token's algorithm is not accepted (EdDSA, ES256 or RS256)",
            ));
        }
        let candidates = self.keys.iter().filter(|k| {
            k.alg == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    (None, _) => true,
                    (Some(_), None) => true,
                }
        });
        let mut last = refuse("no key of a trusted issuer verifies this token");
        for k in candidates {
            let mut v = Validation::new(k.alg);
            v.set_issuer(&[&k.issuer]);
            v.set_audience(&[&self.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            v.leeway = LEEWAY_SECS;
            v.validate_nbf = true;
            match jsonwebtoken::decode::<Claims>(token, &k.key, &v) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = refuse(match e.kind() {
                        K::ExpiredSignature => "the token has expired",
                        K::ImmatureSignature => "the token is not valid yet",
                        K::InvalidIssuer => "the token's issuer is not trusted",
                        K::InvalidAudience => "the token is for another audience",
                        K::InvalidSignature => "the token's signature does not verify",
                        K::MissingRequiredClaim(_) => "the token lacks exp, iss, aud or sub",
                        _ => "the token is malformed",
                    });
                    // A wrong issuer or signature may still verify under another key.
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            iss: "me".into(),
            sub: "svc".into(),
            aud: "identity".into(),
            exp,
            nbf: None,
            iat: None,
            tenant: Some("acme".into()),
            kind: "service".into(),
            permissions: vec!["read:users".into()],
            sid: None,
            roles: Vec::new(),
            scopes: None,
        }
    }

    #[test]
    fn own_tokens_verify_and_forgeries_do_not() {
        let key = SigningKey::from_pem(&SigningKey::generate_pem().expect("pem")).expect("key");
        let v = Verifier::new(Some((&key, "me")), &[], &[], "identity").expect("verifier");
        let now = jsonwebtoken::get_current_timestamp();
        let good = key.mint(&claims(now + 60)).expect("mint");
        assert_eq!(v.verify(&good).expect("verifies").claims.sub, "svc");
        // A cached signature does not vouch for another payload.
        let parts: Vec<&str> = good.split('.').collect();
        let mut other_claims = claims(now + 60);
        other_claims.sub = "admin".into();
        let payload = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&other_claims).expect("json"))
        };
        let spliced = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert!(
            v.verify(&spliced).is_err(),
            "a spliced payload passed on a cached signature"
        );
        let expired = key.mint(&claims(now - 120)).expect("mint");
        assert_eq!(v.verify(&expired).unwrap_err().0, "the token has expired");
        let other = SigningKey::from_pem(&SigningKey::generate_pem().expect("pem")).expect("key");
        let mut forged = claims(now + 60);
        forged.sub = "forged".into();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let forged = jsonwebtoken::encode(&header, &forged, &other.encoding).expect("encode");
        assert!(v.verify(&forged).is_err());
    }

    #[test]
    fn a_previous_key_verifies_the_tokens_it_signed_and_signs_nothing_new() {
        let old = SigningKey::from_pem(&SigningKey::generate_pem().expect("pem")).expect("key");
        let new = SigningKey::from_pem(&SigningKey::generate_pem().expect("pem")).expect("key");
        let now = jsonwebtoken::get_current_timestamp();
        let before = old.mint(&claims(now + 60)).expect("mint");
        // Only the public part is kept, as SPKI PEM.
        let kept = PublicKey::from_pem(old.public_pem()).expect("public pem");
        assert_eq!(kept, *old.public());
        let rotated = Verifier::new(Some((&new, "me")), &[kept], &[], "identity").expect("v");
        assert!(
            rotated.verify(&before).is_ok(),
            "a token of the previous key"
        );
        assert!(rotated
            .verify(&new.mint(&claims(now + 60)).expect("mint"))
            .is_ok());
        let forgotten = Verifier::new(Some((&new, "me")), &[], &[], "identity").expect("v");
        assert_eq!(
            forgotten.verify(&before).unwrap_err().0,
            "no key of a trusted issuer verifies this token"
        );
    }

    #[test]
    fn trusted_issuers_verify_by_kid_and_only_for_their_own_issuer() {
        use base64::Engine as _;
        let pem = SigningKey::generate_pem().expect("pem");
        let mut external = SigningKey::from_pem(&pem).expect("key");
        external.kid = "idp-1".into();
        let public = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
            .expect("key")
            .verifying_key()
            .to_bytes();
        let jwks = serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "idp-1",
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public),
        }]});
        let path = std::env::temp_dir().join(format!("jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, jwks.to_string()).expect("write");
        let v = Verifier::new(
            None,
            &[],
            &[TrustedIssuer {
                issuer: "https://idp.example".into(),
                jwks_file: path.display().to_string(),
            }],
            "identity",
        )
        .expect("verifier");
        let now = jsonwebtoken::get_current_timestamp();
        let mut c = claims(now + 60);
        c.iss = "https://idp.example".into();
        assert!(v.verify(&external.mint(&c).expect("mint")).is_ok());
        // The same key cannot speak for another issuer.
        c.iss = "identity".into();
        assert_eq!(
            v.verify(&external.mint(&c).expect("mint")).unwrap_err().0,
            "the token's issuer is not trusted"
        );
        let _ = std::fs::remove_file(path);
    }
}

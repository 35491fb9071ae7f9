//! What the access tests share: every RPC of the API, raw calls, forged tokens, and waiting
//! for a condition with a deadline.

#![allow(dead_code)] // Each file uses its part.

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::Request;

use crate::common::*;

/// Every `identity.v1` RPC path, from the descriptor set the server publishes.
pub(crate) fn every_rpc() -> Vec<String> {
    let paths: Vec<String> = identity_proto::method_names(identity_proto::FILE_DESCRIPTOR_SET)
        .into_iter()
        .map(|name| format!("/{name}"))
        .collect();
    assert!(paths.len() >= 60, "only {} RPCs found", paths.len());
    paths
}

/// Calls `path` with an empty message (every request message decodes from no bytes).
pub(crate) async fn raw_call(
    channel: Channel,
    path: &str,
    request: Request<()>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec: tonic_prost::ProstCodec<(), ()> = tonic_prost::ProstCodec::default();
    let path = http::uri::PathAndQuery::try_from(path).expect("path");
    grpc.unary(request, path, codec).await.map(|_| ())
}

pub(crate) fn with_header<T>(mut r: Request<T>, key: &'static str, value: &str) -> Request<T> {
    r.metadata_mut().insert(key, value.parse().expect("ascii"));
    r
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn claims(tenant: &str) -> identity_server::access::Claims {
    identity_server::access::Claims {
        iss: "identity".into(),
        sub: "billing".into(),
        aud: "identity".into(),
        exp: now_secs() + 600,
        nbf: None,
        iat: None,
        tenant: Some(tenant.into()),
        kind: "service".into(),
        permissions: vec!["read:users".into(), "create:users".into()],
        sid: None,
        roles: Vec::new(),
        scopes: None,
    }
}

/// Tokens that must never pass: expired, not yet valid, wrong issuer, wrong audience,
/// `alg: none`, HS256 keyed with the public key, a tampered payload, another key.
pub(crate) fn forged_tokens() -> Vec<(&'static str, String)> {
    let valid = mint_claims(claims("acme"));
    let mut expired = claims("acme");
    expired.exp = now_secs() - 120;
    let mut early = claims("acme");
    early.nbf = Some(now_secs() + 600);
    let mut issuer = claims("acme");
    issuer.iss = "evil".into();
    let mut audience = claims("acme");
    audience.aud = "another-service".into();
    let mut raised = claims("acme");
    raised.permissions = vec!["manage:projections".into()];
    let payload = b64(&serde_json::to_vec(&raised).expect("json"));
    let none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims("acme"),
        &jsonwebtoken::EncodingKey::from_secret(kit_key().1.public_pem().as_bytes()),
    )
    .expect("hs256");
    let other = identity_server::access::SigningKey::from_pem(
        &identity_server::access::SigningKey::generate_pem().expect("pem"),
    )
    .expect("key");
    let foreign = other.mint(&claims("acme")).expect("mint");
    vec![
        ("expired", mint_claims(expired)),
        ("not yet valid", mint_claims(early)),
        ("wrong issuer", mint_claims(issuer)),
        ("wrong audience", mint_claims(audience)),
        ("alg none", none),
        ("HS256 with the public key", hs256),
        ("tampered payload", tampered),
        ("another key", foreign),
        ("garbage", "not.a.jwt".into()),
    ]
}

/// Waits (at most 1 s from now) until `probe` holds: what another replica learns by polling.
pub(crate) async fn soon<F, Fut>(what: &str, probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(Instant::now(), Duration::from_secs(1), what, probe).await
}

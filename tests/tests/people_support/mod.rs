//! What the people tests share: tokens with scopes, sign-in requests, a user with a password.

#![allow(dead_code)] // Each file uses its part.

use identity_proto::v1 as pb;
use identity_proto::v1::auth_service_client::AuthServiceClient;
use tonic::transport::Channel;
use tonic::Request;

use crate::common::*;

/// A service token of acme with `permissions` and, when given, `scopes`.
pub(crate) fn scoped_token(permissions: &[&str], scopes: Option<&[&str]>) -> String {
    mint_claims(identity_server::access::Claims {
        iss: "identity".into(),
        sub: "crm".into(),
        aud: "identity".into(),
        exp: now_secs() + 600,
        nbf: None,
        iat: None,
        tenant: Some("acme".into()),
        kind: "service".into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        sid: None,
        roles: Vec::new(),
        scopes: scopes.map(|s| s.iter().map(|x| x.to_string()).collect()),
    })
}

pub(crate) fn bearer<T>(token: &str, msg: T) -> Request<T> {
    with_token(token, None, msg)
}

pub(crate) fn sign_in(email: &str, password: &str) -> pb::SignInRequest {
    pb::SignInRequest {
        identifier: Some(pb::sign_in_request::Identifier::Email(email.into())),
        password: password.into(),
    }
}

/// A refresh of `token`, sent with the project key `key`.
pub(crate) fn refreshing(key: &str, token: &str) -> Request<pb::RefreshRequest> {
    with_key(
        key,
        pb::RefreshRequest {
            refresh_token: token.into(),
        },
    )
}

/// Asserts that refreshing `token` is refused, saying only that it is invalid.
pub(crate) async fn refresh_refused(auth: &mut AuthServiceClient<Channel>, key: &str, token: &str) {
    fails!(
        auth.refresh(refreshing(key, token)),
        tonic::Code::Unauthenticated,
        "INVALID_REFRESH_TOKEN",
    );
}

/// Signs in by email with the project key `key`; the new session's tokens.
pub(crate) async fn session(
    auth: &mut AuthServiceClient<Channel>,
    key: &str,
    email: &str,
    password: &str,
) -> pb::Tokens {
    ok!(auth.sign_in(with_key(key, sign_in(email, password))))
        .tokens
        .expect("tokens")
}

pub(crate) async fn user_with_password(app: &TestApp, email: &str, password: &str) -> String {
    let user = app.register("acme", email).await;
    app.users()
        .set_password(req("acme", ask::set_password(&user, password)))
        .await
        .expect("sets the password");
    user
}

pub(crate) fn verify(user: &str, password: &str) -> Request<pb::VerifyPasswordRequest> {
    req("acme", ask::verify_password(user, password))
}

//! What the people tests share: tokens with scopes, sign-in requests, a user with a password.

#![allow(dead_code)] // Each file uses its part.

use identity_proto::v1 as pb;
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

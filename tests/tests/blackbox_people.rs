//! Black-box test of a person's own access with grpcurl, on both stores: sign in, me, scopes,
//! lockout, password reset through the delivery channel, and an admin's sign-in.
#[macro_use]
mod common;

use std::process::Command;

use common::binary::*;
use common::*;
use serde_json::Value;

/// The README's sign-in walk-through, as a new user would run it with grpcurl against the
/// built binary: register, set a password, SignIn with the app's key, GetMe and
/// GetMyBalances with the access token; this process verifies the token with the published
/// JWKS alone; a token without the `email` scope gets no email and names it; 20 wrong
/// passwords lock the account and the 21st answers without hashing; a reset code reaches the
/// person through NATS, never the caller, and resets the password.
async fn a_person_signs_in_with_grpcurl(store: Store) {
    let dir =
        std::env::temp_dir().join(format!("identity-signin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = match store {
        Store::Postgres => Some(TestDb::create(Store::Postgres).await),
        Store::Sqlite => None,
    };
    let mut inbox = CodeInbox::new().await;
    let mut env = vec![
        ("IDENTITY_NATS_URL", NATS_URL.to_string()),
        ("IDENTITY_NATS_SUBJECT", inbox.subject.clone()),
        ("IDENTITY_NATS_STREAM", inbox.stream.clone()),
    ];
    if let Some(db) = &db {
        env.push(("DATABASE_URL", db.url().to_string()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = Server::spawn(&dir, &env);
    let cli = |args: &[&str]| {
        let out = Command::new(admin_binary())
            .current_dir(&dir)
            .env_remove("DATABASE_URL")
            .args(args)
            .output()
            .expect("run identity-admin");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    server.token = cli(&["token"]);

    let (ok, user) = server.call(
        "identity.v1.UserService/RegisterUser",
        r#"{"user":{"email":"grace@example.com","first_name":"Grace"}}"#,
    );
    assert!(ok, "{user}");
    let user_id = user["user"]["userId"].as_str().expect("id").to_string();
    let (ok, out) = server.call(
        "identity.v1.UserService/SetPassword",
        &format!(r#"{{"user_id":"{user_id}","password":"correct horse 1"}}"#),
    );
    assert!(ok, "{out}");
    let wallet_id = server.open_active_wallet(&user_id);
    let (ok, credit) = server.move_tokens("CreditTokens", &wallet_id, "100", "c1");
    assert!(ok, "{credit}");
    let (ok, key) = server.call(
        "identity.v1.TenantService/IssueProjectKey",
        r#"{"name":"app"}"#,
    );
    assert!(ok, "{key}");
    let key = format!("x-project-key: {}", key["secret"].as_str().expect("secret"));

    let sign_in = |password: &str| {
        server.call_with(
            &[&key],
            "identity.v1.AuthService/SignIn",
            &format!(r#"{{"email":"grace@example.com","password":"{password}"}}"#),
        )
    };
    let (ok, signed_in) = sign_in("correct horse 1");
    assert!(ok, "{signed_in}");
    let access = signed_in["tokens"]["accessToken"]
        .as_str()
        .expect("token")
        .to_string();
    let me = format!("authorization: Bearer {access}");
    let (ok, got) = server.call_with(&[&me], "identity.v1.MeService/GetMe", "{}");
    assert!(ok, "{got}");
    assert_eq!(got["user"]["email"], "grace@example.com");
    let permissions: Vec<&str> = got["permissions"]
        .as_array()
        .expect("permissions listed")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(permissions.contains(&"read:me"), "{got}");
    let position = credit["position"].as_str().expect("position");
    let (ok, balances) = server.call_with(
        &[&me],
        "identity.v1.MeService/GetMyBalances",
        &format!(r#"{{"min_position":"{position}"}}"#),
    );
    assert!(ok, "{balances}");
    assert_eq!(
        balances["wallets"][0]["balances"][0],
        serde_json::json!({"amount": "100", "token": "PTS"}),
        "{balances}"
    );

    // Another process (this one) verifies the token with the published JWKS alone.
    let (status, body) = server.admin_get("/.well-known/jwks.json");
    assert_eq!(status, 200, "{body}");
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&body).expect("JWKS");
    let header = jsonwebtoken::decode_header(&access).expect("header");
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("published");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&["identity"]);
    validation.set_audience(&["identity"]);
    let verified = jsonwebtoken::decode::<Value>(
        &access,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("verifies with the JWKS");
    assert_eq!(verified.claims["sub"], user_id.as_str());

    // A token without the email scope: the user comes back without it, and says so.
    let no_email = format!(
        "authorization: Bearer {}",
        cli(&[
            "token",
            "--service",
            "crm",
            "--permissions",
            "read:users",
            "--scopes",
            "name,phone"
        ])
    );
    let (ok, cut) = server.call_with(
        &[no_email],
        "identity.v1.UserService/GetUser",
        &format!(r#"{{"user_id":"{user_id}"}}"#),
    );
    assert!(ok, "{cut}");
    assert!(cut["user"].get("email").is_none(), "{cut}");
    assert_eq!(cut["user"]["firstName"], "Grace");
    assert!(
        cut["withheldFields"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "email")),
        "{cut}"
    );

    // Twenty wrong passwords lock the account; the 21st attempt hashes nothing.
    let hashes = || {
        let (_, metrics) = server.admin_get("/metrics");
        metrics
            .lines()
            .find(|l| l.starts_with("identity_password_hashes_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    for n in 1..=20 {
        let (ok, wrong) = sign_in("not my password");
        assert!(!ok);
        assert_eq!(
            reason_of(&wrong),
            "INVALID_CREDENTIALS",
            "attempt {n}: {wrong}"
        );
    }
    let before = hashes();
    let (ok, locked) = sign_in("correct horse 1");
    assert!(!ok);
    assert_eq!(locked["code"], 8, "RESOURCE_EXHAUSTED: {locked}");
    assert_eq!(reason_of(&locked), "ACCOUNT_LOCKED");
    assert!(
        locked.to_string().contains("retry_after_seconds"),
        "{locked}"
    );
    assert_eq!(hashes(), before, "a locked attempt computed a hash");

    // A reset by code: the app gets no code; the person does, through NATS.
    let (ok, asked) = server.call_with(
        &[&key],
        "identity.v1.AuthService/RequestPasswordReset",
        r#"{"email":"grace@example.com"}"#,
    );
    assert!(ok, "{asked}");
    assert!(
        asked.get("code").is_none(),
        "the code reached the app: {asked}"
    );
    let sent = inbox.next().await;
    assert_eq!(sent["destination"], "grace@example.com");
    let code = sent["code"].as_str().expect("code");
    let (ok, reset) = server.call_with(
        &[&key],
        "identity.v1.AuthService/ResetPassword",
        &format!(
            r#"{{"email":"grace@example.com","code":"{code}","new_password":"battery staple 2"}}"#
        ),
    );
    assert!(ok, "{reset}");
    let (ok, out) = sign_in("battery staple 2");
    assert!(ok, "the reset password signs in: {out}");
    let (ok, ended) = server.call_with(&[me], "identity.v1.MeService/GetMe", "{}");
    assert!(!ok, "a reset ends the sessions: {ended}");
    assert_eq!(ended["code"], 16, "{ended}");

    // The README's admin sign-in: the development SUPER_ADMIN sets its password and signs in
    // with the same app key.
    let (ok, admins) = server.call("identity.v1.AdminService/ListAdmins", "{}");
    assert!(ok, "{admins}");
    let admin_id = admins["admins"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["email"] == "admin@dev.local"))
        .and_then(|a| a["adminId"].as_str())
        .expect("the development admin is listed")
        .to_string();
    let (ok, out) = server.call(
        "identity.v1.AdminService/SetAdminPassword",
        &format!(r#"{{"admin_id":"{admin_id}","password":"admin password 1"}}"#),
    );
    assert!(ok, "{out}");
    let (ok, admin) = server.call_with(
        &[&key],
        "identity.v1.AuthService/SignIn",
        r#"{"admin_email":"admin@dev.local","password":"admin password 1"}"#,
    );
    assert!(ok, "{admin}");
    let admin_token = format!(
        "authorization: Bearer {}",
        admin["tokens"]["accessToken"].as_str().expect("token")
    );
    let (ok, listed) =
        server.call_with(&[admin_token], "identity.v1.AdminService/ListAdmins", "{}");
    assert!(ok, "the admin's own token acts: {listed}");

    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    inbox.delete().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_signs_in_with_grpcurl_on_the_default_embedded_store() {
    a_person_signs_in_with_grpcurl(Store::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_signs_in_with_grpcurl_on_postgres() {
    a_person_signs_in_with_grpcurl(Store::Postgres).await;
}

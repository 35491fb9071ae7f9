//! TLS and signing keys: grpcurl over TLS with a CA (plaintext refused), mutual TLS, the admin
//! port's certificate, JWKS that other services verify with, key rotation, reflection, and
//! what production refuses to start without.

#[macro_use]
mod common;
mod access_support;

use std::time::{Duration, Instant};

use access_support::*;
use common::*;
use identity_proto::v1 as pb;
use identity_proto::v1::tenant_service_client::TenantServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// A CA, a server certificate for localhost and 127.0.0.1 it signed, and a client
/// certificate it signed, as PEM files in a fresh directory.
struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir =
            std::env::temp_dir().join(format!("identity-pki-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        let leaf = |names: Vec<String>, stem: &str| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(names)
                .expect("params")
                .signed_by(&key, &ca)
                .expect("signed");
            std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write");
            std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).expect("write");
        };
        leaf(vec!["localhost".into(), "127.0.0.1".into()], "server");
        leaf(vec!["client.internal".into()], "client");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        Self { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// grpcurl's health check against `addr` with `args`: whether it succeeded, and its output.
fn grpcurl_health(addr: &std::net::SocketAddr, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(grpcurl())
        .args(args)
        .args([&addr.to_string(), "grpc.health.v1.Health/Check"])
        .output()
        .expect("run grpcurl");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    pki: &Pki,
    with_client_cert: bool,
) -> Result<Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(
            pki.read("client.pem"),
            pki.read("client.key"),
        ));
    }
    Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_serves_grpcurl_with_a_ca_and_refuses_plaintext() {
    let pki = Pki::new();
    let db = TestDb::create(Store::Sqlite).await;
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let (addr, _stop, _server, _, _, _) = start_server_with_settings(db.url(), |s| {
        s.tls_cert_file = Some(cert);
        s.tls_key_file = Some(key);
    })
    .await;
    let ca = pki.path("ca.pem").display().to_string();
    let auth = format!("authorization: Bearer {}", super_admin_token());
    let (ok, out) = grpcurl_health(&addr, &["-cacert", &ca, "-H", &auth]);
    assert!(ok && out.contains("SERVING"), "grpcurl -cacert: {out}");
    let (ok, out) = grpcurl_health(&addr, &["-plaintext"]);
    assert!(!ok, "plaintext against the TLS port answered: {out}");
    let (ok, out) = grpcurl_health(&addr, &[]);
    assert!(!ok, "a client that does not trust the CA connected: {out}");
    // An authenticated call over TLS works as over plaintext.
    let channel = tls_channel(addr, &pki, false).await.expect("TLS connects");
    create_kit_tenants(channel.clone()).await;
    let listed =
        ok!(TenantServiceClient::new(channel).list_tenants(operator(pb::ListTenantsRequest {})))
            .tenants;
    assert!(listed.iter().any(|t| t.tenant_id == "acme"));
}

/// An HTTP/1.1 GET over TLS (trusting the test CA) or plaintext: the status line, or the
/// error that ended the attempt.
async fn admin_get(
    addr: std::net::SocketAddr,
    path: &str,
    ca: Option<&[u8]>,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    let read = async {
        match ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                let cert = rustls::pki_types::CertificateDer::from_pem_slice(ca)
                    .map_err(|e| e.to_string())?;
                roots.add(cert).map_err(|e| e.to_string())?;
                let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .map_err(|e| e.to_string())?;
                let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                tls.write_all(request.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = tls.read_to_end(&mut response).await;
            }
            None => {
                let mut tcp = tcp;
                tcp.write_all(request.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = tcp.read_to_end(&mut response).await;
            }
        }
        Ok::<(), String>(())
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .map_err(|_| "timed out".to_string())??;
    let text = String::from_utf8_lossy(&response).to_string();
    if text.starts_with("HTTP/1.1") {
        Ok(text)
    } else {
        Err(format!("no HTTP answer: {text:?}"))
    }
}

/// A server on `url` signing with `key` and still accepting the rotated-out `previous` keys.
struct Served {
    channel: Channel,
    admin: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(url: &str, key: std::path::PathBuf, previous: Vec<std::path::PathBuf>) -> Self {
        let app = identity_server::Application::build(identity_server::Settings {
            listen_addr: "127.0.0.1:0".parse().expect("addr"),
            admin_addr: "127.0.0.1:0".parse().expect("addr"),
            database_url: url.to_string(),
            signing_key_file: Some(key),
            previous_signing_keys: previous,
            ..identity_server::Settings::default()
        })
        .await
        .expect("builds");
        let (admin, addr) = (app.admin_addr(), app.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            app.run_until(async {
                let _ = stopped.await;
            })
            .await
            .expect("the server runs");
        });
        let channel = connect(addr).await;
        Self {
            channel,
            admin,
            stop,
            server,
        }
    }

    /// The published JWKS document (the admin port answers within 10 s).
    async fn jwks(&self) -> (jsonwebtoken::jwk::JwkSet, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let response = loop {
            match admin_get(self.admin, "/.well-known/jwks.json", None).await {
                Ok(r) => break r,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no JWKS: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        let jwks = serde_json::from_str(&body).expect("a JWKS document");
        (jwks, body)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// Verifies `token` with `jwks` and jsonwebtoken alone: what another service does.
fn verify_with(jwks: &jsonwebtoken::jwk::JwkSet, token: &str) -> serde_json::Value {
    let header = jsonwebtoken::decode_header(token).expect("header");
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("the token's key is published");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&["identity"]);
    validation.set_audience(&["identity"]);
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("verifies with the published key")
    .claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_services_verify_tokens_with_the_published_jwks_alone() {
    let db = TestDb::create(Store::Sqlite).await;
    let served = Served::start(db.url(), kit_key().0.clone(), Vec::new()).await;
    let (jwks, body) = served.jwks().await;
    // Only jsonwebtoken and the document: no key file, no call to this service.
    let token = mint("service", "billing", Some("acme"), &["read:users"]);
    assert_eq!(verify_with(&jwks, &token)["sub"], "billing");
    assert!(
        !body.contains("\"d\""),
        "the private key was published: {body}"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_key_keeps_its_tokens_verifying_until_it_is_dropped_on_postgres() {
    a_rotated_key_keeps_its_tokens_verifying_until_it_is_dropped(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_key_keeps_its_tokens_verifying_until_it_is_dropped_on_sqlite() {
    a_rotated_key_keeps_its_tokens_verifying_until_it_is_dropped(Store::Sqlite).await;
}

/// Signs in under the kit's key, rotates to a new key (the old one kept as previous), then
/// drops the old key: its token works, and is published, exactly as long as it is kept.
async fn a_rotated_key_keeps_its_tokens_verifying_until_it_is_dropped(store: Store) {
    use identity_proto::v1::auth_service_client::AuthServiceClient;
    use identity_proto::v1::me_service_client::MeServiceClient;
    let db = TestDb::create(store).await;
    let kit = kit_key().0.clone();
    let before = Served::start(db.url(), kit.clone(), Vec::new()).await;
    create_kit_tenants(before.channel.clone()).await;
    let user =
        identity_proto::v1::user_service_client::UserServiceClient::new(before.channel.clone())
            .register_user(registering("acme", user_input("rotate@example.com")))
            .await
            .map(registered_id)
            .expect("registers");
    identity_proto::v1::user_service_client::UserServiceClient::new(before.channel.clone())
        .set_password(req("acme", ask::set_password(&user, "rotation pw 1")))
        .await
        .expect("sets the password");
    let key = ok!(
        TenantServiceClient::new(before.channel.clone()).issue_project_key(req(
            "acme",
            pb::IssueProjectKeyRequest { name: "app".into() },
        ))
    )
    .secret;
    let sign_in = |channel: Channel| {
        let key = key.clone();
        async move {
            ok!(AuthServiceClient::new(channel).sign_in(with_key(
                &key,
                pb::SignInRequest {
                    identifier: Some(pb::sign_in_request::Identifier::Email(
                        "rotate@example.com".into(),
                    )),
                    password: "rotation pw 1".into(),
                },
            )))
            .tokens
            .expect("tokens")
            .access_token
        }
    };
    let old_token = sign_in(before.channel.clone()).await;
    let old_kid = kit_key().1.kid.clone();
    before.stop().await;

    // The rotation, as `identity-admin rotate-signing-key` does it.
    let dir = std::env::temp_dir().join(format!("rotate-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let current = dir.join("signing-key.pem");
    std::fs::copy(&kit, &current).expect("copy");
    let (kept, fresh) = identity_server::access::SigningKey::rotate(&current).expect("rotates");
    assert_ne!(fresh.kid, old_kid);
    let kept_pem = std::fs::read_to_string(&kept).expect("kept");
    assert!(
        !kept_pem.contains("PRIVATE"),
        "only the public part is kept"
    );

    let me = |channel: Channel, token: String| async move {
        MeServiceClient::new(channel)
            .get_me(with_token(
                &token,
                None,
                pb::GetMeRequest { min_position: 0 },
            ))
            .await
    };
    let during = Served::start(db.url(), current.clone(), vec![kept.clone()]).await;
    let (jwks, _) = during.jwks().await;
    let kids: Vec<_> = jwks
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    assert_eq!(
        kids,
        vec![fresh.kid.clone(), old_kid.clone()],
        "new first, old still published"
    );
    me(during.channel.clone(), old_token.clone())
        .await
        .expect("the old key's token still works");
    let new_token = sign_in(during.channel.clone()).await;
    let header = jsonwebtoken::decode_header(&new_token).expect("header");
    assert_eq!(
        header.kid.as_deref(),
        Some(fresh.kid.as_str()),
        "new tokens use the new key"
    );
    assert_eq!(verify_with(&jwks, &old_token)["sub"], user.as_str());
    assert_eq!(verify_with(&jwks, &new_token)["sub"], user.as_str());
    during.stop().await;

    let after = Served::start(db.url(), current.clone(), Vec::new()).await;
    let (jwks, _) = after.jwks().await;
    assert!(
        jwks.find(&old_kid).is_none(),
        "the dropped key is no longer published"
    );
    let refused = me(after.channel.clone(), old_token)
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    me(after.channel.clone(), new_token)
        .await
        .expect("the new key's token works");
    after.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_port_serves_tls_with_the_same_certificate() {
    let pki = Pki::new();
    let db = TestDb::create(Store::Sqlite).await;
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let app = identity_server::Application::build(identity_server::Settings {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        database_url: db.url().to_string(),
        signing_key_file: Some(kit_key().0.clone()),
        master_key_file: Some(kit_master_key_file().clone()),
        tls_cert_file: Some(cert),
        tls_key_file: Some(key),
        ..identity_server::Settings::default()
    })
    .await
    .expect("builds");
    let admin = app.admin_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let ca = pki.read("ca.pem");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match admin_get(admin, "/healthz", Some(&ca)).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the admin port never answered over TLS: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(status.contains("200"), "{status}");
    // A client that never starts its handshake does not hold up the next one.
    let _silent = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    let again = admin_get(admin, "/healthz", Some(&ca))
        .await
        .expect("answers beside a silent client");
    assert!(again.contains("200"), "{again}");
    let plain = admin_get(admin, "/healthz", None).await;
    assert!(
        plain.is_err(),
        "plaintext HTTP answered on the TLS admin port: {plain:?}"
    );
    let _ = stop.send(());
    let _ = server.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let db = TestDb::create(Store::Sqlite).await;
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let (addr, _stop, _server, _, _, _) = start_server_with_settings(db.url(), |s| {
        s.tls_cert_file = Some(cert);
        s.tls_key_file = Some(key);
        s.tls_client_ca_file = Some(ca);
    })
    .await;
    let ca = pki.path("ca.pem").display().to_string();
    let (ok, out) = grpcurl_health(&addr, &["-cacert", &ca]);
    assert!(!ok, "mTLS let in a client without a certificate: {out}");
    let (cert, key) = (
        pki.path("client.pem").display().to_string(),
        pki.path("client.key").display().to_string(),
    );
    let (ok, out) = grpcurl_health(&addr, &["-cacert", &ca, "-cert", &cert, "-key", &key]);
    assert!(
        ok && out.contains("SERVING"),
        "mTLS with a client certificate: {out}"
    );
    let without = match tls_channel(addr, &pki, false).await {
        Err(_) => true,
        Ok(channel) => raw_call(channel, "/grpc.health.v1.Health/Check", Request::new(()))
            .await
            .is_err(),
    };
    assert!(
        without,
        "a tonic client without a certificate got an answer"
    );
    let with = tls_channel(addr, &pki, true)
        .await
        .expect("connects with a certificate");
    raw_call(with, "/grpc.health.v1.Health/Check", Request::new(()))
        .await
        .expect("health over mTLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reflection_can_be_switched_off_and_health_stays_open() {
    let db = TestDb::create(Store::Sqlite).await;
    let (addr, _stop, _server, _, _, _) =
        start_server_with_settings(db.url(), |s| s.reflection = false).await;
    let channel = connect(addr).await;
    let listed = std::process::Command::new(grpcurl())
        .args(["-plaintext", &addr.to_string(), "list"])
        .output()
        .expect("run grpcurl");
    assert!(
        !listed.status.success(),
        "reflection answered while switched off"
    );
    let health = raw_call(channel, "/grpc.health.v1.Health/Check", Request::new(())).await;
    assert!(health.is_ok(), "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outside_development_the_service_needs_keys_and_beyond_loopback_tls() {
    let db = TestDb::create(Store::Sqlite).await;
    let production = identity_server::Settings {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        database_url: db.url().to_string(),
        environment: identity_server::settings::Environment::Production,
        master_key_file: Some(kit_master_key_file().clone()),
        ..identity_server::Settings::default()
    };
    let refused = identity_server::Application::build(production.clone())
        .await
        .expect_err("production started without a signing key or issuer");
    assert!(
        format!("{refused:#}").contains("IDENTITY_SIGNING_KEY_FILE"),
        "{refused:#}"
    );
    // Nor without the master key of personal data: one made up on the spot would seal what
    // no other replica can open.
    let keyless = identity_server::Settings {
        signing_key_file: Some(kit_key().0.clone()),
        master_key_file: None,
        ..production.clone()
    };
    let refused = identity_server::Application::build(keyless)
        .await
        .expect_err("production started without a master key");
    assert!(
        format!("{refused:#}").contains("IDENTITY_MASTER_KEY_FILE"),
        "{refused:#}"
    );
    let open = identity_server::Settings {
        listen_addr: "0.0.0.0:0".parse().expect("addr"),
        signing_key_file: Some(kit_key().0.clone()),
        ..production.clone()
    };
    let refused = identity_server::Application::build(open.clone())
        .await
        .expect_err("listened beyond loopback without TLS");
    assert!(
        format!("{refused:#}").contains("IDENTITY_ALLOW_PLAINTEXT"),
        "{refused:#}"
    );
    // With a key, production starts and bootstraps nothing: no tenant exists.
    let keyed = identity_server::Settings {
        signing_key_file: Some(kit_key().0.clone()),
        ..production
    };
    let app = identity_server::Application::build(keyed)
        .await
        .expect("starts with a key");
    assert!(
        app.event_log().head_position().await.expect("head") == 0,
        "production created something on its own"
    );
}

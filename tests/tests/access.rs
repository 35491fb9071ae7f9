//! Callers prove who they are: every RPC refuses a missing or forged credential, tenants are
//! real, permissions are checked, revocations reach every replica, and TLS works. Each test
//! tries the attack and asserts it is refused.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use identity_proto::v1 as pb;
use identity_proto::v1::admin_service_client::AdminServiceClient;
use identity_proto::v1::tenant_service_client::TenantServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Every `identity.v1` RPC path, from the descriptor set the server publishes.
fn every_rpc() -> Vec<String> {
    use identity_proto::prost::Message as _;
    let files =
        identity_proto::prost_types::FileDescriptorSet::decode(identity_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
    let mut paths = Vec::new();
    for file in files.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let name = service.name.unwrap_or_default();
            for method in service.method {
                paths.push(format!(
                    "/{package}.{name}/{}",
                    method.name.unwrap_or_default()
                ));
            }
        }
    }
    assert!(paths.len() >= 60, "only {} RPCs found", paths.len());
    paths
}

/// Calls `path` with an empty message (every request message decodes from no bytes).
async fn raw_call(channel: Channel, path: &str, request: Request<()>) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec: tonic_prost::ProstCodec<(), ()> = tonic_prost::ProstCodec::default();
    let path = http::uri::PathAndQuery::try_from(path).expect("path");
    grpc.unary(request, path, codec).await.map(|_| ())
}

fn with_header<T>(mut r: Request<T>, key: &'static str, value: &str) -> Request<T> {
    r.metadata_mut().insert(key, value.parse().expect("ascii"));
    r
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(tenant: &str) -> identity_server::access::Claims {
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
fn forged_tokens() -> Vec<(&'static str, String)> {
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
    let listed = TenantServiceClient::new(channel)
        .list_tenants(operator(pb::ListTenantsRequest {}))
        .await
        .expect("lists")
        .into_inner()
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
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connects");
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
            .register_user(req(
                "acme",
                pb::RegisterUserRequest {
                    user: Some(pb::UserInput {
                        email: "rotate@example.com".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("registers")
            .into_inner()
            .user
            .expect("user")
            .user_id;
    identity_proto::v1::user_service_client::UserServiceClient::new(before.channel.clone())
        .set_password(req(
            "acme",
            pb::SetPasswordRequest {
                user_id: user.clone(),
                password: "rotation pw 1".into(),
            },
        ))
        .await
        .expect("sets the password");
    let key = TenantServiceClient::new(before.channel.clone())
        .issue_project_key(req(
            "acme",
            pb::IssueProjectKeyRequest { name: "app".into() },
        ))
        .await
        .expect("a key")
        .into_inner()
        .secret;
    let sign_in = |channel: Channel| {
        let key = key.clone();
        async move {
            AuthServiceClient::new(channel)
                .sign_in(with_key(
                    &key,
                    pb::SignInRequest {
                        identifier: Some(pb::sign_in_request::Identifier::Email(
                            "rotate@example.com".into(),
                        )),
                        password: "rotation pw 1".into(),
                    },
                ))
                .await
                .expect("signs in")
                .into_inner()
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
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
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
        ..identity_server::Settings::default()
    };
    let refused = identity_server::Application::build(production.clone())
        .await
        .expect_err("production started without a signing key or issuer");
    assert!(
        format!("{refused:#}").contains("IDENTITY_SIGNING_KEY_FILE"),
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

/// Polls `probe` every 20 ms until it holds, failing with `what` once `within` has passed
/// since `since`; returns how long it took.
async fn within<F, Fut>(since: Instant, within: Duration, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while !probe().await {
        assert!(
            since.elapsed() < within,
            "{what} after {:?}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    since.elapsed()
}

mod scenarios {
    use super::*;

    pub(super) async fn every_rpc_refuses_a_missing_or_forged_credential(store: Store) {
        let app = spawn_app(store).await;
        let forged = forged_tokens();
        for path in every_rpc() {
            let none = raw_call(app.channel(), &path, Request::new(())).await;
            let status = none.expect_err(&format!("{path} answered without a credential"));
            assert_eq!(status.code(), Code::Unauthenticated, "{path}: {status:?}");
            assert_eq!(reason(&status), "UNAUTHENTICATED", "{path}");
            let spoofed = with_header(
                with_header(Request::new(()), "x-tenant-id", "acme"),
                "x-actor",
                "root",
            );
            let status = raw_call(app.channel(), &path, spoofed)
                .await
                .expect_err(&format!("{path} believed x-tenant-id alone"));
            assert_eq!(status.code(), Code::Unauthenticated, "{path}: {status:?}");
        }
        // Every forgery, on a read and a write.
        for path in [
            "/identity.v1.UserService/GetUser",
            "/identity.v1.WalletService/CreditTokens",
            "/identity.v1.ProjectionService/RebuildProjection",
        ] {
            for (what, token) in &forged {
                let r = with_token(token, Some("acme"), ());
                let status = raw_call(app.channel(), path, r)
                    .await
                    .expect_err(&format!("{path} accepted a token that is {what}"));
                assert_eq!(
                    status.code(),
                    Code::Unauthenticated,
                    "{what} on {path}: {status:?}"
                );
            }
        }
        // The genuine token passes the gate (and then fails validation of the empty message).
        let ok = raw_call(
            app.channel(),
            "/identity.v1.UserService/GetUser",
            with_token(&mint_claims(claims("acme")), None, ()),
        )
        .await
        .expect_err("an empty GetUser is invalid");
        assert_eq!(ok.code(), Code::InvalidArgument, "{ok:?}");
        // Health answers anyone.
        let health = raw_call(
            app.channel(),
            "/grpc.health.v1.Health/Check",
            Request::new(()),
        )
        .await;
        assert!(health.is_ok(), "{health:?}");
    }

    pub(super) async fn tenants_come_from_the_credential(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("tenant-b", "bee@example.com").await;
        let token = mint("service", "billing", Some("tenant-a"), &["read:users"]);
        // Naming another tenant than the token's is refused.
        let other = app
            .users()
            .get_user(with_token(
                &token,
                Some("tenant-b"),
                pb::GetUserRequest {
                    user_id: user.clone(),
                    read_mask: None,
                },
            ))
            .await;
        assert_error(other, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
        let get = |token: String| {
            let mut users = app.users();
            let r = with_token(
                &token,
                None,
                pb::GetUserRequest {
                    user_id: user.clone(),
                    read_mask: None,
                },
            );
            async move { users.get_user(r).await }
        };
        // Its own tenant does not hold the other's user.
        assert_error(get(token.clone()).await, Code::NotFound, "USER_NOT_FOUND");
        // A token for a tenant that does not exist gets nothing.
        let ghost = mint("service", "billing", Some("ghost"), &["read:users"]);
        assert_error(get(ghost).await, Code::NotFound, "TENANT_NOT_FOUND");
        // A service without the permission is told which one it lacks.
        let reader = mint("service", "billing", Some("tenant-b"), &["read:users"]);
        let status = app
            .wallets()
            .credit_tokens(with_token(
                &reader,
                None,
                credit("w", "340282366920938463463374607431768211455", "k"),
            ))
            .await
            .expect_err("credit refused");
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(reason(&status), "PERMISSION_DENIED");
        let info = tonic_types::StatusExt::get_error_details(&status)
            .error_info()
            .cloned()
            .expect("error info");
        assert_eq!(
            info.metadata.get("permission").map(String::as_str),
            Some("credit:wallets")
        );
        // Creating tenants is a SUPER_ADMIN's: a tenant-wide service cannot.
        let everything = mint(
            "service",
            "ops",
            Some("acme"),
            &["create:users", "manage:admins"],
        );
        let status = TenantServiceClient::new(app.channel())
            .create_tenant(with_token(
                &everything,
                None,
                pb::CreateTenantRequest {
                    tenant_id: "mine".into(),
                    name: String::new(),
                },
            ))
            .await;
        assert_error(status, Code::PermissionDenied, "PERMISSION_DENIED");
    }

    pub(super) async fn a_project_key_reads_public_data_only_until_revoked_everywhere(
        store: Store,
    ) {
        let app = spawn_app(store).await;
        // A second replica on the same store.
        let (addr2, _stop2, _server2) = start_server(app.db.url()).await;
        let replica = Channel::from_shared(format!("http://{addr2}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let user = app.register("acme", "pk@example.com").await;
        let issued = TenantServiceClient::new(app.channel())
            .issue_project_key(req(
                "acme",
                pb::IssueProjectKeyRequest {
                    name: "web shop".into(),
                },
            ))
            .await
            .expect("issues")
            .into_inner();
        let secret = issued.secret.clone();
        let key_id = issued.key.expect("key").key_id;
        let with_key = |msg| with_header(Request::new(msg), "x-project-key", &secret);
        // Public data: yes.
        let exists = app
            .users()
            .user_exists(with_key(pb::UserExistsRequest {
                email: "pk@example.com".into(),
                ..Default::default()
            }))
            .await;
        assert!(exists.is_ok(), "{exists:?}");
        // Personal data and writes: never.
        let personal = app
            .users()
            .get_user(with_header(
                Request::new(pb::GetUserRequest {
                    user_id: user.clone(),
                    read_mask: None,
                }),
                "x-project-key",
                &secret,
            ))
            .await;
        assert_error(personal, Code::PermissionDenied, "PERMISSION_DENIED");
        let email = app
            .users()
            .request_email_change(with_header(
                Request::new(pb::RequestEmailChangeRequest {
                    user_id: user.clone(),
                    email: "evil@example.com".into(),
                }),
                "x-project-key",
                &secret,
            ))
            .await;
        assert_error(email, Code::PermissionDenied, "PERMISSION_DENIED");
        // Its tenant only.
        let elsewhere = app
            .users()
            .user_exists(with_header(
                with_header(
                    Request::new(pb::UserExistsRequest {
                        email: "pk@example.com".into(),
                        ..Default::default()
                    }),
                    "x-project-key",
                    &secret,
                ),
                "x-tenant-id",
                "tenant-b",
            ))
            .await;
        assert_error(elsewhere, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
        // The second replica knows the key within a second too.
        let exists_on_replica = || {
            let mut users =
                identity_proto::v1::user_service_client::UserServiceClient::new(replica.clone());
            let r = with_header(
                Request::new(pb::UserExistsRequest {
                    email: "pk@example.com".into(),
                    ..Default::default()
                }),
                "x-project-key",
                &secret,
            );
            async move { users.user_exists(r).await }
        };
        within(
            Instant::now(),
            Duration::from_secs(1),
            "the second replica never accepted the new key",
            || async { exists_on_replica().await.is_ok() },
        )
        .await;
        // Revoked on the first replica: refused there at once, and on the second within 1 s.
        TenantServiceClient::new(app.channel())
            .revoke_project_key(req(
                "acme",
                pb::RevokeProjectKeyRequest {
                    key_id: key_id.clone(),
                },
            ))
            .await
            .expect("revokes");
        let revoked_at = Instant::now();
        let here = app
            .users()
            .user_exists(with_key(pb::UserExistsRequest {
                email: "pk@example.com".into(),
                ..Default::default()
            }))
            .await;
        assert_error(here, Code::Unauthenticated, "UNAUTHENTICATED");
        let took = within(
            revoked_at,
            Duration::from_secs(1),
            "the second replica still accepts a revoked key",
            || async {
                matches!(exists_on_replica().await, Err(s) if s.code() == Code::Unauthenticated)
            },
        )
        .await;
        eprintln!("a revoked key reached the second replica after {took:?}");
        // The listing shows the revocation; the secret is never shown again.
        let keys = TenantServiceClient::new(app.channel())
            .list_project_keys(req("acme", pb::ListProjectKeysRequest {}))
            .await
            .expect("lists")
            .into_inner()
            .keys;
        assert!(keys
            .iter()
            .any(|k| k.key_id == key_id && k.revoked_at.is_some()));
    }

    pub(super) async fn admins_act_in_their_tenants_with_their_types_permissions(store: Store) {
        let app = spawn_app(store).await;
        let (addr2, _stop2, _server2) = start_server(app.db.url()).await;
        let replica = Channel::from_shared(format!("http://{addr2}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut admins = AdminServiceClient::new(app.channel());
        let create = |email: &str, t: pb::AdminType| pb::CreateAdminRequest {
            email: email.into(),
            display_name: "Someone".into(),
            admin_type: t as i32,
            tenants: vec!["acme".into()],
        };
        let tenant_admin = admins
            .create_admin(req(
                "acme",
                create("ta@example.com", pb::AdminType::TenantAdmin),
            ))
            .await
            .expect("creates")
            .into_inner()
            .admin
            .expect("admin");
        let auditor = admins
            .create_admin(req(
                "acme",
                create("au@example.com", pb::AdminType::Auditor),
            ))
            .await
            .expect("creates")
            .into_inner()
            .admin
            .expect("admin");
        let ta = mint("admin", &tenant_admin.admin_id, None, &[]);
        let au = mint("admin", &auditor.admin_id, None, &[]);
        let user = app.register("acme", "who@example.com").await;
        // The tenant admin works in acme (its only tenant, so no header is needed)…
        let got = app
            .users()
            .get_user(with_token(
                &ta,
                None,
                pb::GetUserRequest {
                    user_id: user.clone(),
                    read_mask: None,
                },
            ))
            .await;
        assert!(got.is_ok(), "{got:?}");
        // …but not in another tenant, and cannot climb to SUPER_ADMIN or rebuild read models.
        let other = app
            .users()
            .get_user(with_token(
                &ta,
                Some("tenant-b"),
                pb::GetUserRequest {
                    user_id: user.clone(),
                    read_mask: None,
                },
            ))
            .await;
        assert_error(other, Code::PermissionDenied, "TENANT_NOT_ALLOWED");
        let climb = admins
            .create_admin(with_token(
                &ta,
                None,
                create("boss@example.com", pb::AdminType::SuperAdmin),
            ))
            .await;
        assert_error(climb, Code::PermissionDenied, "FORBIDDEN");
        let rebuild = app
            .projection_admin()
            .rebuild_projection(with_token(
                &ta,
                None,
                pb::RebuildProjectionRequest {
                    name: "directory".into(),
                },
            ))
            .await;
        assert_error(rebuild, Code::PermissionDenied, "PERMISSION_DENIED");
        // The auditor reads the trail but never writes.
        let wallet = app.active_wallet("acme", &user).await;
        let credit = app
            .wallets()
            .credit_tokens(with_token(
                &au,
                None,
                credit(&wallet, "340282366920938463463374607431768211455", "k1"),
            ))
            .await;
        assert_error(credit, Code::PermissionDenied, "PERMISSION_DENIED");
        let pep = app
            .identification()
            .set_pep_status(with_token(
                &au,
                None,
                pb::SetPepStatusRequest {
                    user_id: user.clone(),
                    ..Default::default()
                },
            ))
            .await;
        assert_error(pep, Code::PermissionDenied, "PERMISSION_DENIED");
        let trail =
            identity_proto::v1::audit_service_client::AuditServiceClient::new(app.channel())
                .verify_chain(with_token(&au, None, pb::VerifyChainRequest {}))
                .await;
        assert!(trail.is_ok(), "{trail:?}");
        // ListAdmins shows acme's admins.
        let listed = admins
            .list_admins(req("acme", pb::ListAdminsRequest {}))
            .await
            .expect("lists")
            .into_inner()
            .admins;
        assert!(listed.iter().any(|a| a.email == "au@example.com"));
        // Detached on the first replica: refused on the second within a second.
        let on_replica = || {
            let mut users =
                identity_proto::v1::user_service_client::UserServiceClient::new(replica.clone());
            let r = with_token(
                &ta,
                Some("acme"),
                pb::GetUserRequest {
                    user_id: user.clone(),
                    read_mask: None,
                },
            );
            async move { users.get_user(r).await }
        };
        within(
            Instant::now(),
            Duration::from_secs(1),
            "the second replica never knew the admin",
            || async { on_replica().await.is_ok() },
        )
        .await;
        admins
            .remove_admin_from_tenant(req(
                "acme",
                pb::RemoveAdminFromTenantRequest {
                    admin_id: tenant_admin.admin_id.clone(),
                    tenant_id: "acme".into(),
                },
            ))
            .await
            .expect("detaches");
        let detached_at = Instant::now();
        let took = within(
            detached_at,
            Duration::from_secs(1),
            "the second replica still lets a detached admin act",
            || async {
                matches!(on_replica().await, Err(s)
                    if s.code() == Code::PermissionDenied && reason(&s) == "TENANT_NOT_ALLOWED")
            },
        )
        .await;
        eprintln!("a detached admin reached the second replica after {took:?}");
        // A removed admin is refused everywhere.
        admins
            .remove_admin(req(
                "acme",
                pb::RemoveAdminRequest {
                    admin_id: auditor.admin_id.clone(),
                },
            ))
            .await
            .expect("removes");
        let gone = app
            .users()
            .get_user(with_token(
                &au,
                None,
                pb::GetUserRequest {
                    user_id: user.clone(),
                    read_mask: None,
                },
            ))
            .await;
        assert_error(gone, Code::Unauthenticated, "UNAUTHENTICATED");
    }

    pub(super) async fn users_hold_what_their_roles_grant_and_never_more(store: Store) {
        let app = spawn_app(store).await;
        let support = app.register("acme", "support@example.com").await;
        let member = app.register("acme", "member@example.com").await;
        for (user, role) in [(&support, "support"), (&member, "member")] {
            app.users()
                .set_user_roles(req(
                    "acme",
                    pb::SetUserRolesRequest {
                        user_id: user.clone(),
                        roles: vec![role.into()],
                        replace: true,
                    },
                ))
                .await
                .expect("sets roles");
        }
        let support_token = mint("user", &support, Some("acme"), &[]);
        let member_token = mint("user", &member, Some("acme"), &[]);
        let read = app
            .users()
            .get_user(with_token(
                &support_token,
                None,
                pb::GetUserRequest {
                    user_id: member.clone(),
                    read_mask: None,
                },
            ))
            .await;
        assert!(read.is_ok(), "{read:?}");
        let denied = app
            .users()
            .get_user(with_token(
                &member_token,
                None,
                pb::GetUserRequest {
                    user_id: support.clone(),
                    read_mask: None,
                },
            ))
            .await;
        assert_error(denied, Code::PermissionDenied, "PERMISSION_DENIED");
        // A user-level caller never reaches the operators' RPCs, whatever its token claims.
        let rebuild = app
            .projection_admin()
            .rebuild_projection(with_token(
                &support_token,
                None,
                pb::RebuildProjectionRequest {
                    name: "directory".into(),
                },
            ))
            .await;
        assert_error(rebuild, Code::PermissionDenied, "PERMISSION_DENIED");
        // The tenant's role table decides: give members read:users, and they read.
        TenantServiceClient::new(app.channel())
            .set_role_permissions(req(
                "acme",
                pb::SetRolePermissionsRequest {
                    role: "member".into(),
                    permissions: vec!["read:public".into(), "read:users".into()],
                },
            ))
            .await
            .expect("sets the role");
        let now_allowed = app
            .users()
            .get_user(with_token(
                &member_token,
                None,
                pb::GetUserRequest {
                    user_id: support.clone(),
                    read_mask: None,
                },
            ))
            .await;
        assert!(now_allowed.is_ok(), "{now_allowed:?}");
        let global = TenantServiceClient::new(app.channel())
            .set_role_permissions(req(
                "acme",
                pb::SetRolePermissionsRequest {
                    role: "member".into(),
                    permissions: vec!["manage:projections".into()],
                },
            ))
            .await;
        assert_error(global, Code::InvalidArgument, "INVALID_ARGUMENT");
    }

    pub(super) async fn the_recorded_actor_is_the_token_subject(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "act@example.com").await;
        let wallet = app.active_wallet("acme", &user).await;
        let billing = mint("service", "billing", Some("acme"), &["credit:wallets"]);
        let r = with_header(
            with_token(&billing, None, credit(&wallet, "5", "c1")),
            "x-actor",
            "someone-else",
        );
        app.wallets().credit_tokens(r).await.expect("credits");
        let events = app
            .event_log()
            .events::<identity_domain::wallet::Wallet>(&format!("acme/{wallet}"))
            .await
            .expect("events");
        let last = events.last().expect("the credit");
        assert_eq!(
            last.metadata.get("actor").map(String::as_str),
            Some("service:billing")
        );
        assert_eq!(
            last.metadata.get("principal_kind").map(String::as_str),
            Some("service")
        );
        assert_eq!(
            last.metadata.get("issuer").map(String::as_str),
            Some("identity")
        );
        assert_eq!(
            last.metadata.get("command").map(String::as_str),
            Some("CreditTokens")
        );
    }
}

on_both_stores!(
    every_rpc_refuses_a_missing_or_forged_credential,
    tenants_come_from_the_credential,
    a_project_key_reads_public_data_only_until_revoked_everywhere,
    admins_act_in_their_tenants_with_their_types_permissions,
    users_hold_what_their_roles_grant_and_never_more,
    the_recorded_actor_is_the_token_subject,
);

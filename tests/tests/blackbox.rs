//! Black-box tests: the built `identity-server` binary, driven with real grpcurl, as a user
//! would. `scripts/test.sh` builds the binary and installs grpcurl before running these.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use identity_proto::v1 as pb;
use serde_json::Value;

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/blackbox-… → target/<profile>/identity-server
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("identity-server"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p identity-server` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The server binary, running as a child process.
struct Server {
    process: identity_testkit::ServerProcess,
    /// The bearer token `call` sends, and the tenant it names (none: the token's own).
    token: String,
    tenant: Option<String>,
}

/// The child process, its addresses and its logs.
impl std::ops::Deref for Server {
    type Target = identity_testkit::ServerProcess;
    fn deref(&self) -> &Self::Target {
        &self.process
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.process
    }
}

impl Server {
    /// Starts the binary in `dir` with `env` and the test kit's signing key, waits for its
    /// "ready" log line, and creates the kit's tenants; `call` then acts in `acme` as the
    /// development SUPER_ADMIN.
    fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let key = kit_key().0.display().to_string();
        let mut env = env.to_vec();
        env.push(("IDENTITY_SIGNING_KEY_FILE", &key));
        let mut server = Self::spawn(dir, &env);
        server.token = super_admin_token().to_string();
        for t in KIT_TENANTS {
            let (ok, out) = server.call(
                "identity.v1.TenantService/CreateTenant",
                &format!(r#"{{"tenant_id":"{t}"}}"#),
            );
            assert!(ok || out["code"] == 6, "creating tenant {t}: {out}");
        }
        server.tenant = Some("acme".into());
        server
    }

    /// Starts the binary in `dir` with `env` only, and waits for its "ready" log line.
    fn spawn(dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        // The test's own settings come last, so that they win.
        let mut all = vec![("RUST_LOG", "info"), ("IDENTITY_SHUTDOWN_GRACE_SECS", "5")];
        all.extend_from_slice(env);
        let process = identity_testkit::ServerProcess::spawn(
            &server_binary(),
            Some(dir),
            &all,
            Duration::from_secs(30),
            true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Server {
            process,
            token: String::new(),
            tenant: None,
        }
    }

    /// An HTTP GET on the admin port: (status code, body).
    fn admin_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(&self.admin_addr).expect("connect to the admin port");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.admin_addr
        )
        .expect("send");
        let mut response = String::new();
        s.read_to_string(&mut response).expect("read");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Runs grpcurl against the server; returns (success, stdout JSON or error JSON).
    fn call(&self, method: &str, body: &str) -> (bool, Value) {
        let mut headers = vec![format!("authorization: Bearer {}", self.token)];
        if let Some(t) = &self.tenant {
            headers.push(format!("x-tenant-id: {t}"));
        }
        self.call_with(&headers, method, body)
    }

    /// Runs grpcurl with exactly these headers (a project key, another token).
    fn call_with(&self, headers: &[impl AsRef<str>], method: &str, body: &str) -> (bool, Value) {
        let mut cmd = Command::new(grpcurl());
        cmd.args(["-plaintext", "-format-error"]);
        for h in headers {
            cmd.args(["-H", h.as_ref()]);
        }
        let out = cmd
            .args(["-d", body, &self.addr, method])
            .output()
            .expect("run grpcurl");
        let text = if out.status.success() {
            out.stdout
        } else {
            out.stdout.into_iter().chain(out.stderr).collect()
        };
        let text = String::from_utf8_lossy(&text);
        let json = serde_json::from_str(text.trim()).unwrap_or(Value::String(text.to_string()));
        (out.status.success(), json)
    }

    fn grpcurl_plain(&self, args: &[&str]) -> String {
        let out = Command::new(grpcurl())
            .arg("-plaintext")
            .arg(&self.addr)
            .args(args)
            .output()
            .expect("run grpcurl");
        assert!(
            out.status.success(),
            "grpcurl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush anything.
    fn crash(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

fn reason_of(error: &Value) -> String {
    error["details"]
        .as_array()
        .and_then(|d| d.iter().find_map(|x| x["reason"].as_str()))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_new_user_drives_the_default_embedded_store_with_grpcurl() {
    // The default configuration, in an empty directory: the SQLite file is created under
    // ./data on first start, with no setup.
    let dir = std::env::temp_dir().join(format!(
        "identity-blackbox-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut server = Server::spawn(&dir, &[]);
    assert!(
        dir.join("data/identity.db").exists(),
        "the embedded store lives under ./data"
    );
    assert!(
        dir.join("data/signing-key.pem").exists(),
        "development creates its signing key under ./data"
    );
    // Without a credential, nothing but health and reflection answers.
    let (ok, refused) = server.call(
        "identity.v1.UserService/RegisterUser",
        r#"{"user":{"email":"ada@example.com"}}"#,
    );
    assert!(!ok);
    assert_eq!(refused["code"], 16, "UNAUTHENTICATED: {refused}");
    // The README's one command mints a development token.
    let minted = Command::new(admin_binary())
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .args(["token"])
        .output()
        .expect("run identity-admin token");
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    server.token = String::from_utf8_lossy(&minted.stdout).trim().to_string();

    let listed = server.grpcurl_plain(&["list"]);
    for service in [
        "identity.v1.UserService",
        "identity.v1.WalletService",
        "identity.v1.StatusTierService",
        "identity.v1.IdentificationService",
        "grpc.health.v1.Health",
    ] {
        assert!(listed.contains(service), "{service} missing from: {listed}");
    }
    let described = server.grpcurl_plain(&["describe", "identity.v1.UserService"]);
    assert!(described.contains("rpc RegisterUser"), "{described}");
    let health = server.grpcurl_plain(&["grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");

    let (ok, user) = server.call(
        "identity.v1.UserService/RegisterUser",
        r#"{"user":{"email":"ada@example.com","first_name":"Ada"}}"#,
    );
    assert!(ok, "{user}");
    let user_id = user["user"]["userId"]
        .as_str()
        .expect("user id")
        .to_string();

    let (ok, dup) = server.call(
        "identity.v1.UserService/RegisterUser",
        r#"{"user":{"email":"ADA@example.com"}}"#,
    );
    assert!(!ok);
    assert_eq!(dup["code"], 6, "ALREADY_EXISTS: {dup}");
    assert_eq!(reason_of(&dup), "EMAIL_ALREADY_ASSIGNED");

    let (ok, wallet) = server.call(
        "identity.v1.WalletService/OpenWallet",
        &format!(r#"{{"owner_type":"OWNER_TYPE_USER","owner_id":"{user_id}","wallet_type":"WALLET_TYPE_INTERNAL","network":"polygon"}}"#),
    );
    assert!(ok, "{wallet}");
    let wallet_id = wallet["wallet"]["walletId"]
        .as_str()
        .expect("wallet id")
        .to_string();
    let (ok, _) = server.call(
        "identity.v1.WalletService/ActivateWallet",
        &format!(r#"{{"wallet_id":"{wallet_id}"}}"#),
    );
    assert!(ok);

    let (ok, credit) = server.call(
        "identity.v1.WalletService/CreditTokens",
        &format!(
            r#"{{"wallet_id":"{wallet_id}","token":"PTS","amount":"100","idempotency_key":"c1"}}"#
        ),
    );
    assert!(ok, "{credit}");
    assert_eq!(credit["balance"], "100");
    let (ok, debit) = server.call(
        "identity.v1.WalletService/DebitTokens",
        &format!(
            r#"{{"wallet_id":"{wallet_id}","token":"PTS","amount":"30","idempotency_key":"d1"}}"#
        ),
    );
    assert!(ok, "{debit}");
    assert_eq!(debit["balance"], "70");
    let (ok, short) = server.call(
        "identity.v1.WalletService/DebitTokens",
        &format!(
            r#"{{"wallet_id":"{wallet_id}","token":"PTS","amount":"100","idempotency_key":"d2"}}"#
        ),
    );
    assert!(!ok);
    assert_eq!(short["code"], 9, "FAILED_PRECONDITION: {short}");
    assert_eq!(reason_of(&short), "INSUFFICIENT_BALANCE");

    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn register_many(addr: &str, n: usize) -> Vec<String> {
    let mut client = identity_proto::v1::user_service_client::UserServiceClient::connect(format!(
        "http://{addr}"
    ))
    .await
    .expect("connect");
    let mut ids = Vec::new();
    for i in 0..n {
        let r = client
            .register_user(req(
                "acme",
                pb::RegisterUserRequest {
                    user: Some(pb::UserInput {
                        email: format!("durable{i}@example.com"),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("registers");
        ids.push(r.into_inner().user.expect("user").user_id);
    }
    ids
}

async fn nothing_acknowledged_is_lost(store: Store) {
    let db = TestDb::create(store).await;
    let dir = std::env::temp_dir();
    let url = db.url().to_string();
    let server = Server::start(&dir, &[("DATABASE_URL", &url)]);
    let ids = register_many(&server.addr, 25).await;
    server.crash();

    let server = Server::start(&dir, &[("DATABASE_URL", &url)]);
    let mut client = identity_proto::v1::user_service_client::UserServiceClient::connect(format!(
        "http://{}",
        server.addr
    ))
    .await
    .expect("connect");
    for (i, id) in ids.iter().enumerate() {
        let user = client
            .get_user(req(
                "acme",
                pb::GetUserRequest {
                    user_id: id.clone(),
                    read_mask: None,
                },
            ))
            .await
            .expect("every acknowledged user survives the crash")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(user.email, format!("durable{i}@example.com"));
    }
    drop(client);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_when_the_server_is_killed_on_postgres() {
    nothing_acknowledged_is_lost(Store::Postgres).await;
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_when_the_server_is_killed_on_sqlite() {
    nothing_acknowledged_is_lost(Store::Sqlite).await;
}

/// Kills the server (SIGKILL) while registrations with three unique values each are in
/// flight, restarts it, and checks every value: free again, or held by a user who exists.
async fn a_killed_server_leaves_no_orphan_claims(store: Store) {
    let db = TestDb::create(store).await;
    let dir = std::env::temp_dir();
    let url = db.url().to_string();
    let server = Server::start(&dir, &[("DATABASE_URL", &url)]);
    let client = identity_proto::v1::user_service_client::UserServiceClient::connect(format!(
        "http://{}",
        server.addr
    ))
    .await
    .expect("connect");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..8u32)
        .map(|t| {
            let mut users = client.clone();
            let done = done.clone();
            tokio::spawn(async move {
                for i in 0..500u32 {
                    let n = t * 1000 + i;
                    let r = users
                        .register_user(req(
                            "acme",
                            pb::RegisterUserRequest {
                                user: Some(pb::UserInput {
                                    email: format!("killed{n}@example.com"),
                                    phone: format!("+3726{n:07}"),
                                    external_id: format!("killed-{n}"),
                                    ..Default::default()
                                }),
                            },
                        ))
                        .await;
                    if r.is_err() {
                        return i;
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                500
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(std::sync::atomic::Ordering::Relaxed) < 40 {
        assert!(Instant::now() < deadline, "registrations never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.crash();
    let mut attempted = Vec::new();
    for (t, w) in writers.into_iter().enumerate() {
        let stopped_at = w.await.expect("writer");
        assert!(stopped_at < 500, "writer {t} finished before the kill");
        // The call that failed may or may not have committed: check it too.
        attempted.extend((0..=stopped_at).map(|i| t as u32 * 1000 + i));
    }
    drop(client);

    let server = Server::start(&dir, &[("DATABASE_URL", &url)]);
    let mut users = identity_proto::v1::user_service_client::UserServiceClient::connect(format!(
        "http://{}",
        server.addr
    ))
    .await
    .expect("connect");
    let head = identity_store::EventLog::open(&identity_store::StoreConfig {
        url: url.clone(),
        max_connections: 2,
        cache_capacity: 0,
    })
    .await
    .expect("open the log")
    .head_position()
    .await
    .expect("head");
    for n in attempted {
        let keys = [
            ("email", format!("killed{n}@example.com")),
            ("phone", format!("+3726{n:07}")),
            ("external_id", format!("killed-{n}")),
        ];
        let mut holders = Vec::new();
        for (name, value) in &keys {
            let mut ask = pb::UserExistsRequest {
                min_position: head,
                ..Default::default()
            };
            match *name {
                "email" => ask.email = value.clone(),
                "phone" => ask.phone = value.clone(),
                _ => ask.external_id = value.clone(),
            }
            let found = users
                .user_exists(req("acme", ask))
                .await
                .expect("user_exists")
                .into_inner();
            holders.push(found.exists.then_some(found.user_id));
        }
        // All three values belong to one registration: all taken by its user, or none.
        assert!(
            holders.iter().all(Option::is_some) || holders.iter().all(Option::is_none),
            "registration {n} half-applied: {holders:?}"
        );
        if holders[0].is_none() {
            users
                .register_user(req(
                    "acme",
                    pb::RegisterUserRequest {
                        user: Some(pb::UserInput {
                            email: keys[0].1.clone(),
                            phone: keys[1].1.clone(),
                            external_id: keys[2].1.clone(),
                            ..Default::default()
                        }),
                    },
                ))
                .await
                .unwrap_or_else(|e| panic!("registration {n}: its values stayed claimed: {e:?}"));
        }
    }
    drop(users);
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_registration_leaves_no_orphan_claims_on_postgres() {
    a_killed_server_leaves_no_orphan_claims(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_registration_leaves_no_orphan_claims_on_sqlite() {
    a_killed_server_leaves_no_orphan_claims(Store::Sqlite).await;
}

/// Kills the server while its projectors are mid-stream, restarts it, and checks that every
/// read model caught up and equals a replay of the log: each event applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_models_survive_a_crash_mid_stream_exactly_once() {
    let db = TestDb::create(Store::Postgres).await;
    let url = db.url().to_string();
    let dir = std::env::temp_dir();
    let server = Server::start(&dir, &[("DATABASE_URL", &url)]);
    let addr = format!("http://{}", server.addr);
    let mut users =
        identity_proto::v1::user_service_client::UserServiceClient::connect(addr.clone())
            .await
            .expect("connect");
    let mut wallets = identity_proto::v1::wallet_service_client::WalletServiceClient::connect(addr)
        .await
        .expect("connect");
    let mut wallet_ids = Vec::new();
    for i in 0..5 {
        wallet_ids.push(
            user_with_wallet(&mut users, &mut wallets, &format!("crash{i}@example.com")).await,
        );
    }
    // Keep writing from several tasks; kill the server while they run.
    let credited = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let mut w = wallets.clone();
            let ids = wallet_ids.clone();
            let credited = credited.clone();
            tokio::spawn(async move {
                for i in 0..10_000u32 {
                    let r = w
                        .credit_tokens(req(
                            "acme",
                            pb::CreditTokensRequest {
                                wallet_id: ids[(i as usize + t) % ids.len()].clone(),
                                token: "PTS".into(),
                                amount: "1".into(),
                                idempotency_key: format!("t{t}-{i}"),
                            },
                        ))
                        .await;
                    if r.is_err() {
                        return i;
                    }
                    credited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                10_000
            })
        })
        .collect();
    // Kill once the projectors have plenty to stream (a condition, not a fixed time).
    let deadline = Instant::now() + Duration::from_secs(30);
    while credited.load(std::sync::atomic::Ordering::Relaxed) < 400 {
        assert!(Instant::now() < deadline, "the writers never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.crash();
    for w in writers {
        let _ = w.await;
    }

    let server = Server::start(&dir, &[("DATABASE_URL", &url)]);
    let log = identity_store::EventLog::open(&identity_store::StoreConfig {
        url: url.clone(),
        max_connections: 2,
        cache_capacity: 0,
    })
    .await
    .expect("open log");
    let head = log.head_position().await.expect("head");
    assert!(
        head > 20,
        "the workload wrote events before the crash ({head})"
    );
    let mut admin =
        identity_proto::v1::projection_service_client::ProjectionServiceClient::connect(format!(
            "http://{}",
            server.addr
        ))
        .await
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = admin
            .list_projections(operator(pb::ListProjectionsRequest {}))
            .await
            .expect("lists")
            .into_inner()
            .projections;
        if states.iter().all(|s| s.position == head) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "projectors did not catch up: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let projections = identity_projections::Projections::open(log)
        .await
        .expect("read models");
    for p in identity_projections::Projection::ALL {
        let differences = projections.verify(p).await.expect("verifies");
        assert!(
            differences.is_empty(),
            "{} after the crash: {differences:#?}",
            p.name()
        );
    }
    drop(admin);
    assert!(server.terminate().success());
}

/// Registers a user in tenant `acme` and opens an internal Polygon wallet for it.
async fn user_with_wallet(
    users: &mut identity_proto::v1::user_service_client::UserServiceClient<
        tonic::transport::Channel,
    >,
    wallets: &mut identity_proto::v1::wallet_service_client::WalletServiceClient<
        tonic::transport::Channel,
    >,
    email: &str,
) -> String {
    let user = users
        .register_user(req(
            "acme",
            pb::RegisterUserRequest {
                user: Some(pb::UserInput {
                    email: email.into(),
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
    wallets
        .open_wallet(req(
            "acme",
            pb::OpenWalletRequest {
                owner_type: pb::OwnerType::User as i32,
                owner_id: user,
                wallet_type: pb::WalletType::Internal as i32,
                network: "polygon".into(),
                address: String::new(),
            },
        ))
        .await
        .expect("opens")
        .into_inner()
        .wallet
        .expect("wallet")
        .wallet_id
}

fn admin_binary() -> PathBuf {
    let bin = server_binary().with_file_name("identity-admin");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p identity-cli` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

fn admin(dir: &std::path::Path, url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(admin_binary())
        .current_dir(dir)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .expect("run identity-admin");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The audit CLI, as an auditor runs it: history, state-at, export, rebuild, and verify that
/// passes on an untouched store and fails, naming the spot, after an edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_cli_replays_exports_rebuilds_and_catches_tampering() {
    let db = TestDb::create(Store::Sqlite).await;
    let url = db.url().to_string();
    let dir = std::env::temp_dir();
    let server = Server::start(&dir, &[("DATABASE_URL", &url)]);
    let addr = format!("http://{}", server.addr);
    let mut users =
        identity_proto::v1::user_service_client::UserServiceClient::connect(addr.clone())
            .await
            .expect("connect");
    let mut wallets = identity_proto::v1::wallet_service_client::WalletServiceClient::connect(addr)
        .await
        .expect("connect");
    let wallet = user_with_wallet(&mut users, &mut wallets, "cli@example.com").await;
    let mut positions = Vec::new();
    for (i, amount) in ["5", "7"].into_iter().enumerate() {
        positions.push(
            wallets
                .credit_tokens(req(
                    "acme",
                    pb::CreditTokensRequest {
                        wallet_id: wallet.clone(),
                        token: "PTS".into(),
                        amount: amount.into(),
                        idempotency_key: format!("k{i}"),
                    },
                ))
                .await
                .expect("credits")
                .into_inner()
                .position,
        );
    }

    let (ok, table, err) = admin(
        &dir,
        &url,
        &["history", "Wallet", &wallet, "--tenant", "acme"],
    );
    assert!(ok, "{err}");
    assert!(
        table.contains("TokensCredited v1.0") && table.contains("\"12\""),
        "{table}"
    );
    let (ok, state, err) = admin(
        &dir,
        &url,
        &[
            "state-at",
            "Wallet",
            &format!("acme/{wallet}"),
            "--position",
            &positions[0].to_string(),
        ],
    );
    assert!(ok, "{err}");
    let state: Value = serde_json::from_str(&state).expect("json");
    assert_eq!(state["state"]["balances"]["PTS"], "5");
    let (ok, lines, err) = admin(&dir, &url, &["export", "--from", "1"]);
    assert!(ok, "{err}");
    let exported: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(exported.len() as u64, positions[1]);
    assert!(exported
        .iter()
        .all(|e| e["hash"].as_str().is_some_and(|h| h.len() == 64)));
    let (ok, out, err) = admin(&dir, &url, &["rebuild", "balances"]);
    assert!(ok, "{err}");
    assert!(out.contains("events/s"), "{out}");
    let (ok, out, err) = admin(&dir, &url, &["verify"]);
    assert!(ok, "verify fails on an untouched store: {out} {err}");
    assert!(out.contains("hash chains: intact"), "{out}");

    let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
    sqlx::query("UPDATE events SET payload = json_set(payload, '$.TokensCredited.amount', '500') WHERE global_position = ?1")
        .bind(positions[0] as i64)
        .execute(&pool)
        .await
        .expect("tamper");
    let (ok, out, _) = admin(&dir, &url, &["verify"]);
    assert!(!ok, "verify must fail after tampering: {out}");
    assert!(
        out.contains(&format!("BROKEN at position {}", positions[0])),
        "{out}"
    );
    let (ok, _, err) = admin(&dir, &url, &["history", "Nope", "x"]);
    assert!(!ok && err.contains("unknown aggregate type"), "{err}");
    drop((users, wallets));
    assert!(server.terminate().success());
}

/// Metrics and health on the admin port, and no personal data or secrets in the logs of a
/// workload that used plenty of both (logged at debug level, as JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_endpoints_report_health_and_metrics_and_logs_hold_no_personal_data() {
    let db = TestDb::create(Store::Postgres).await;
    let url = db.url().to_string();
    let server = Server::start(
        &std::env::temp_dir(),
        &[("DATABASE_URL", &url), ("RUST_LOG", "debug")],
    );
    let addr = format!("http://{}", server.addr);
    let mut users =
        identity_proto::v1::user_service_client::UserServiceClient::connect(addr.clone())
            .await
            .expect("connect");
    let email = "pii.canary@example.com";
    let phone = "+372 5123 4567";
    let password = "Canary-Password-42";
    let user = users
        .register_user(req(
            "acme",
            pb::RegisterUserRequest {
                user: Some(pb::UserInput {
                    email: email.into(),
                    phone: phone.into(),
                    first_name: "Canaryfirst".into(),
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
    users
        .set_password(req(
            "acme",
            pb::SetPasswordRequest {
                user_id: user.clone(),
                password: password.into(),
            },
        ))
        .await
        .expect("sets");
    users
        .verify_password(req(
            "acme",
            pb::VerifyPasswordRequest {
                user_id: user.clone(),
                password: password.into(),
            },
        ))
        .await
        .expect("verifies");
    let _ = users
        .verify_password(req(
            "acme",
            pb::VerifyPasswordRequest {
                user_id: user.clone(),
                password: "Wrong-Canary-99".into(),
            },
        ))
        .await;
    let code = users
        .request_email_change(codes_req(
            "acme",
            pb::RequestEmailChangeRequest {
                user_id: user.clone(),
                email: "pii.canary2@example.com".into(),
            },
        ))
        .await
        .expect("requests")
        .into_inner()
        .code;
    users
        .confirm_email(req(
            "acme",
            pb::ConfirmEmailRequest {
                user_id: user.clone(),
                code: code.clone(),
            },
        ))
        .await
        .expect("confirms");
    // The confirmed address is taken now: a second registration with it is refused.
    let _ = users
        .register_user(req(
            "acme",
            pb::RegisterUserRequest {
                user: Some(pb::UserInput {
                    email: "pii.canary2@example.com".into(),
                    ..Default::default()
                }),
            },
        ))
        .await;

    assert_eq!(server.admin_get("/healthz").0, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = server.admin_get("/readyz");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The gauges are sampled once a second and the projectors catch up on their own time:
    // poll until every expected line is there (or the deadline says why not).
    let expected = [
        r#"identity_grpc_requests_total{method="identity.v1.UserService/RegisterUser",code="OK"} 1"#,
        r#"identity_grpc_requests_total{method="identity.v1.UserService/RegisterUser",code="ALREADY_EXISTS"} 1"#,
        r#"identity_grpc_requests_total{method="identity.v1.UserService/VerifyPassword",code="UNAUTHENTICATED"} 1"#,
        "identity_grpc_request_duration_seconds_bucket",
        r#"identity_events_appended_total{aggregate_type="User",event_type="UserRegistered"} 1"#,
        r#"identity_projection_lag{projection="directory"} 0"#,
        r#"identity_projection_leader{projection="balances"} 1"#,
        "identity_db_pool_connections",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, metrics) = server.admin_get("/metrics");
        assert_eq!(status, 200);
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|e| !metrics.contains(e))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} missing from:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    drop(users);
    let logs = server.logs.lock().expect("logs").join("\n");
    assert!(logs.len() > 1000, "debug logs were captured");
    for secret in [
        email,
        "pii.canary2@example.com",
        "37251234567",
        "5123 4567",
        password,
        "Wrong-Canary-99",
        "Canaryfirst",
        code.as_str(),
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
    assert!(
        logs.contains("RegisterUser") && logs.contains("acme"),
        "spans name the RPC and tenant"
    );
    assert!(server.terminate().success());
}

/// Two server processes on one store, each with its own caches: what B changes, A's answers
/// follow, including answers that append nothing (a password check, a retry, a refusal).
async fn two_processes_never_answer_from_each_others_stale_state(store: Store) {
    use identity_proto::v1::user_service_client::UserServiceClient;
    use identity_proto::v1::wallet_service_client::WalletServiceClient;
    let db = TestDb::create(store).await;
    let url = db.url().to_string();
    let dir = std::env::temp_dir();
    let a = Server::start(&dir, &[("DATABASE_URL", &url)]);
    let b = Server::start(&dir, &[("DATABASE_URL", &url)]);
    let (a_addr, b_addr) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let mut a_users = UserServiceClient::connect(a_addr.clone()).await.expect("A");
    let mut b_users = UserServiceClient::connect(b_addr.clone()).await.expect("B");
    let mut a_wallets = WalletServiceClient::connect(a_addr).await.expect("A");
    let mut b_wallets = WalletServiceClient::connect(b_addr).await.expect("B");
    let wallet = user_with_wallet(&mut a_users, &mut a_wallets, "twice@example.com").await;
    // GetWallet replays the wallet from the log: its owner is the user just registered.
    let user = a_wallets
        .get_wallet(req(
            "acme",
            pb::GetWalletRequest {
                wallet_id: wallet.clone(),
            },
        ))
        .await
        .expect("wallet")
        .into_inner()
        .wallet
        .expect("wallet")
        .owner_id;
    let verify = |password: &str| {
        req(
            "acme",
            pb::VerifyPasswordRequest {
                user_id: user.clone(),
                password: password.into(),
            },
        )
    };
    a_users
        .set_password(req(
            "acme",
            pb::SetPasswordRequest {
                user_id: user.clone(),
                password: "first password".into(),
            },
        ))
        .await
        .expect("sets on A");
    a_users
        .verify_password(verify("first password"))
        .await
        .expect("A verifies and caches");
    b_users
        .change_password(req(
            "acme",
            pb::ChangePasswordRequest {
                user_id: user.clone(),
                old_password: "first password".into(),
                new_password: "second password".into(),
            },
        ))
        .await
        .expect("changes on B");
    let old = a_users
        .verify_password(verify("first password"))
        .await
        .expect_err("A must refuse the replaced password");
    assert_eq!(reason(&old), "INVALID_CREDENTIALS", "{old:?}");
    a_users
        .verify_password(verify("second password"))
        .await
        .expect("A accepts the password B set");

    a_wallets
        .credit_tokens(req("acme", credit(&wallet, "5", "c1")))
        .await
        .expect("credit on A");
    b_wallets
        .credit_tokens(req("acme", credit(&wallet, "10", "c2")))
        .await
        .expect("credit on B");
    let spent = a_wallets
        .debit_tokens(req("acme", debit(&wallet, "15", "d1")))
        .await
        .expect("A sees B's credit")
        .into_inner();
    assert_eq!(spent.balance, "0");
    b_wallets
        .credit_tokens(req("acme", credit(&wallet, "3", "c3")))
        .await
        .expect("credit on B");
    let retry = a_wallets
        .credit_tokens(req("acme", credit(&wallet, "5", "c1")))
        .await
        .expect("a retry on A")
        .into_inner();
    assert!(retry.replayed);
    a_wallets
        .debit_tokens(req("acme", debit(&wallet, "3", "d2")))
        .await
        .expect("A must not refuse on the balance it cached");
    drop((a_users, b_users, a_wallets, b_wallets));
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_postgres_never_answer_from_each_others_stale_state() {
    two_processes_never_answer_from_each_others_stale_state(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_sqlite_never_answer_from_each_others_stale_state() {
    two_processes_never_answer_from_each_others_stale_state(Store::Sqlite).await;
}

/// One long transaction anywhere on the database holds back the global feed's horizon, so
/// every read model lags. The replica stays ready and takes writes; only a query that asked
/// for a position not yet reached fails, with READ_MODEL_BEHIND, and the lag is a metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_transaction_delays_read_models_but_not_readiness_or_writes() {
    let db = TestDb::create(Store::Postgres).await;
    let url = db.url().to_string();
    let server = Server::start(&std::env::temp_dir(), &[("DATABASE_URL", &url)]);
    let mut users = identity_proto::v1::user_service_client::UserServiceClient::connect(format!(
        "http://{}",
        server.addr
    ))
    .await
    .expect("connect");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let mut long = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *long)
        .await
        .expect("take an xid");

    let position = users
        .register_user(req(
            "acme",
            pb::RegisterUserRequest {
                user: Some(pb::UserInput {
                    email: "behind@example.com".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("writes go on")
        .into_inner()
        .position;
    let exists = |min_position: u64| {
        let mut r = req(
            "acme",
            pb::UserExistsRequest {
                email: "behind@example.com".into(),
                min_position,
                ..Default::default()
            },
        );
        r.set_timeout(Duration::from_millis(300));
        r
    };
    let behind = users
        .user_exists(exists(position))
        .await
        .expect_err("the read model cannot have reached the position");
    assert_eq!(behind.code(), tonic::Code::Unavailable, "{behind:?}");
    assert_eq!(reason(&behind), "READ_MODEL_BEHIND");
    users
        .user_exists(exists(0))
        .await
        .expect("a query without a position answers from what is there");
    let (status, body) = server.admin_get("/readyz");
    assert_eq!(
        status, 200,
        "a lagging read model made the replica unready: {body}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = server.admin_get("/metrics");
        let lag = metrics
            .lines()
            .find_map(|l| l.strip_prefix(r#"identity_projection_lag{projection="directory"} "#))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if lag > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lag is not reported:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    long.rollback().await.expect("end the long transaction");
    let mut caught_up = exists(position);
    caught_up.set_timeout(Duration::from_secs(10));
    let found = users
        .user_exists(caught_up)
        .await
        .expect("caught up once the transaction ended")
        .into_inner();
    assert!(found.exists);
    drop(users);
    assert!(server.terminate().success());
}

/// Two server processes on one PostgreSQL database: each read model is projected by exactly
/// one of them, and the other takes over when it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_database_never_both_project() {
    let db = TestDb::create(Store::Postgres).await;
    let url = db.url().to_string();
    let dir = std::env::temp_dir();
    let first = Server::start(&dir, &[("DATABASE_URL", &url)]);
    let second = Server::start(&dir, &[("DATABASE_URL", &url)]);
    async fn leaders(server: &Server) -> Vec<(String, bool)> {
        let mut admin =
            identity_proto::v1::projection_service_client::ProjectionServiceClient::connect(
                format!("http://{}", server.addr),
            )
            .await
            .expect("connect");
        admin
            .list_projections(operator(pb::ListProjectionsRequest {}))
            .await
            .expect("lists")
            .into_inner()
            .projections
            .into_iter()
            .map(|p| (p.name, p.leader))
            .collect()
    }
    // Until every lease is taken (the processes start their projectors on their own time),
    // never both hold one; then exactly one does.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (a, _b) = loop {
        let a = leaders(&first).await;
        let b = leaders(&second).await;
        for ((name, la), (_, lb)) in a.iter().zip(&b) {
            assert!(!(la & lb), "{name}: both processes project");
        }
        if a.iter().zip(&b).all(|((_, la), (_, lb))| la ^ lb) {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "some read model has no projector: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Whichever led, kill it: the other takes every lease over.
    let (survivor, dead) = if a[0].1 {
        (second, first)
    } else {
        (first, second)
    };
    dead.crash();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if leaders(&survivor).await.iter().all(|(_, l)| *l) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor never took the leases over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And it projects: a registration shows up in its read model.
    let mut users = identity_proto::v1::user_service_client::UserServiceClient::connect(format!(
        "http://{}",
        survivor.addr
    ))
    .await
    .expect("connect");
    let position = users
        .register_user(req(
            "acme",
            pb::RegisterUserRequest {
                user: Some(pb::UserInput {
                    email: "takeover@example.com".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("registers")
        .into_inner()
        .position;
    users
        .lookup_user(req(
            "acme",
            pb::LookupUserRequest {
                key: Some(pb::lookup_user_request::Key::Email(
                    "takeover@example.com".into(),
                )),
                min_position: position,
                read_mask: None,
            },
        ))
        .await
        .expect("the survivor's read model has it");
    drop(users);
    assert!(survivor.terminate().success());
}

/// Traces: with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a small OTLP receiver run here, an
/// RPC's span arrives with its attributes, inside the caller's trace (W3C traceparent).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpc_spans_reach_an_otlp_receiver_inside_the_callers_trace() {
    use identity_proto::prost::Message as _;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::trace::v1::Span;

    let received: std::sync::Arc<std::sync::Mutex<Vec<Span>>> = Default::default();
    let sink = received.clone();
    let receiver = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                if let Ok(req) = ExportTraceServiceRequest::decode(body) {
                    let spans = req
                        .resource_spans
                        .into_iter()
                        .flat_map(|r| r.scope_spans)
                        .flat_map(|s| s.spans);
                    sink.lock().expect("lock").extend(spans);
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, receiver).await;
    });

    let db = TestDb::create(Store::Sqlite).await;
    let server = Server::start(
        &std::env::temp_dir(),
        &[
            ("DATABASE_URL", db.url()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "identity-test"),
        ],
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut users = identity_proto::v1::user_service_client::UserServiceClient::connect(format!(
        "http://{}",
        server.addr
    ))
    .await
    .expect("connect");
    let mut request = req(
        "acme",
        pb::RegisterUserRequest {
            user: Some(pb::UserInput {
                email: "traced@example.com".into(),
                ..Default::default()
            }),
        },
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("ascii"),
    );
    users.register_user(request).await.expect("registers");

    let deadline = Instant::now() + Duration::from_secs(20);
    let (rpc, outer) = loop {
        let spans = received.lock().expect("lock").clone();
        let rpc = spans.iter().find(|s| s.name == "RegisterUser").cloned();
        let outer = spans
            .iter()
            .find(|s| s.name == "grpc.request" && hex_of(&s.trace_id) == trace_id)
            .cloned();
        if let (Some(rpc), Some(outer)) = (rpc, outer) {
            break (rpc, outer);
        }
        assert!(
            Instant::now() < deadline,
            "no RegisterUser span arrived; got {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        hex_of(&rpc.trace_id),
        trace_id,
        "the RPC continues the caller's trace"
    );
    assert_eq!(
        hex_of(&outer.parent_span_id),
        caller_span,
        "the request span's parent is the caller's span"
    );
    assert_eq!(
        rpc.parent_span_id, outer.span_id,
        "the RPC span nests in the request span"
    );
    let attribute = |name: &str| {
        rpc.attributes
            .iter()
            .find(|kv| kv.key == name)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.clone())
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    assert_eq!(attribute("tenant"), Some(V::StringValue("acme".into())));
    assert_eq!(attribute("outcome"), Some(V::StringValue("ok".into())));
    assert!(attribute("aggregate_id").is_some());
    drop(users);
    assert!(server.terminate().success());
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Production's first steps, as an operator takes them: the server refuses to start without a
/// key; `identity-admin bootstrap` creates the first tenant and SUPER_ADMIN; a token minted for
/// that admin works, nothing else was created, and the development admin does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn production_starts_from_a_bootstrapped_admin_and_nothing_else() {
    let db = TestDb::create(Store::Postgres).await;
    let url = db.url().to_string();
    let dir = std::env::temp_dir().join(format!("identity-prod-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let refused = Command::new(server_binary())
        .current_dir(&dir)
        .env("DATABASE_URL", &url)
        .env("IDENTITY_ENVIRONMENT", "production")
        .env("IDENTITY_LISTEN_ADDR", "127.0.0.1:0")
        .env("IDENTITY_ADMIN_ADDR", "127.0.0.1:0")
        .env_remove("IDENTITY_SIGNING_KEY_FILE")
        .output()
        .expect("run the server");
    assert!(
        !refused.status.success(),
        "production started without a key"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("IDENTITY_SIGNING_KEY_FILE")
            || String::from_utf8_lossy(&refused.stdout).contains("IDENTITY_SIGNING_KEY_FILE"),
        "the refusal names the setting"
    );
    assert!(
        !dir.join("data/signing-key.pem").exists(),
        "production wrote a key"
    );

    let (ok, out, err) = admin(
        &dir,
        &url,
        &[
            "bootstrap",
            "--tenant",
            "acme",
            "--email",
            "ops@acme.example",
        ],
    );
    assert!(ok, "bootstrap: {out} {err}");
    let key = kit_key().0.display().to_string();
    let mut server = Server::spawn(
        &dir,
        &[
            ("DATABASE_URL", &url),
            ("IDENTITY_ENVIRONMENT", "production"),
            ("IDENTITY_SIGNING_KEY_FILE", &key),
        ],
    );
    let minted = Command::new(admin_binary())
        .current_dir(&dir)
        .env("IDENTITY_ENVIRONMENT", "production")
        .env("IDENTITY_SIGNING_KEY_FILE", &key)
        .args(["token", "--tenant", "acme", "--admin", "ops@acme.example"])
        .output()
        .expect("mint");
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    server.token = String::from_utf8_lossy(&minted.stdout).trim().to_string();
    let (ok, tenant) = server.call("identity.v1.TenantService/GetTenant", "{}");
    assert!(ok, "{tenant}");
    assert_eq!(tenant["tenant"]["tenantId"], "acme");
    let (ok, tenants) = server.call("identity.v1.TenantService/ListTenants", "{}");
    assert!(ok, "{tenants}");
    assert_eq!(
        tenants["tenants"].as_array().map(Vec::len),
        Some(1),
        "only acme: {tenants}"
    );
    // The development SUPER_ADMIN's token means nothing here.
    server.token = super_admin_token().to_string();
    let (ok, refused) = server.call("identity.v1.TenantService/ListTenants", "{}");
    assert!(!ok);
    assert_eq!(refused["code"], 16, "UNAUTHENTICATED: {refused}");
    let _ = std::fs::remove_dir_all(&dir);
}

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
    let (ok, wallet) = server.call(
        "identity.v1.WalletService/OpenWallet",
        &format!(r#"{{"owner_type":"OWNER_TYPE_USER","owner_id":"{user_id}","wallet_type":"WALLET_TYPE_INTERNAL","network":"polygon"}}"#),
    );
    assert!(ok, "{wallet}");
    let wallet_id = wallet["wallet"]["walletId"]
        .as_str()
        .expect("wallet")
        .to_string();
    let (ok, _) = server.call(
        "identity.v1.WalletService/ActivateWallet",
        &format!(r#"{{"wallet_id":"{wallet_id}"}}"#),
    );
    assert!(ok);
    let (ok, credit) = server.call(
        "identity.v1.WalletService/CreditTokens",
        &format!(
            r#"{{"wallet_id":"{wallet_id}","token":"PTS","amount":"100","idempotency_key":"c1"}}"#
        ),
    );
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

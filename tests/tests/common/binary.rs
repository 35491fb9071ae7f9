//! The built binaries as a user runs them: the server as a child process driven with real
//! grpcurl ([`Server`]), and `identity-admin`. Used by the black-box test files.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use identity_proto::v1 as pb;
use serde_json::Value;

use super::*;

pub fn server_binary() -> PathBuf {
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
pub struct Server {
    pub process: identity_testkit::ServerProcess,
    /// The bearer token `call` sends, and the tenant it names (none: the token's own).
    pub token: String,
    pub tenant: Option<String>,
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
    pub fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let key = kit_key().0.display().to_string();
        let master = kit_master_key_file().display().to_string();
        let mut env = env.to_vec();
        env.push(("IDENTITY_SIGNING_KEY_FILE", &key));
        env.push(("IDENTITY_MASTER_KEY_FILE", &master));
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
    pub fn spawn(dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
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
    pub fn admin_get(&self, path: &str) -> (u16, String) {
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

    /// UserService and WalletService clients on the server's gRPC port (typed, not grpcurl).
    pub async fn clients(
        &self,
    ) -> (
        UserServiceClient<tonic::transport::Channel>,
        WalletServiceClient<tonic::transport::Channel>,
    ) {
        let addr = format!("http://{}", self.addr);
        let users = UserServiceClient::connect(addr.clone())
            .await
            .expect("connect");
        let wallets = WalletServiceClient::connect(addr).await.expect("connect");
        (users, wallets)
    }

    /// Opens and activates an internal Polygon wallet for `user_id` through grpcurl, as an
    /// engineer would; returns its id.
    pub fn open_active_wallet(&self, user_id: &str) -> String {
        let (ok, wallet) = self.call(
            "identity.v1.WalletService/OpenWallet",
            &format!(r#"{{"owner_type":"OWNER_TYPE_USER","owner_id":"{user_id}","wallet_type":"WALLET_TYPE_INTERNAL","network":"polygon"}}"#),
        );
        assert!(ok, "{wallet}");
        let wallet_id = wallet["wallet"]["walletId"]
            .as_str()
            .expect("wallet id")
            .to_string();
        let (ok, activated) = self.call(
            "identity.v1.WalletService/ActivateWallet",
            &format!(r#"{{"wallet_id":"{wallet_id}"}}"#),
        );
        assert!(ok, "{activated}");
        wallet_id
    }

    /// CreditTokens or DebitTokens (`rpc`) of PTS on a wallet, through grpcurl.
    pub fn move_tokens(
        &self,
        rpc: &str,
        wallet_id: &str,
        amount: &str,
        key: &str,
    ) -> (bool, Value) {
        self.call(
            &format!("identity.v1.WalletService/{rpc}"),
            &format!(
                r#"{{"wallet_id":"{wallet_id}","token":"PTS","amount":"{amount}","idempotency_key":"{key}"}}"#
            ),
        )
    }

    /// Runs grpcurl against the server; returns (success, stdout JSON or error JSON).
    pub fn call(&self, method: &str, body: &str) -> (bool, Value) {
        let mut headers = vec![format!("authorization: Bearer {}", self.token)];
        if let Some(t) = &self.tenant {
            headers.push(format!("x-tenant-id: {t}"));
        }
        self.call_with(&headers, method, body)
    }

    /// Runs grpcurl with exactly these headers (a project key, another token).
    pub fn call_with(
        &self,
        headers: &[impl AsRef<str>],
        method: &str,
        body: &str,
    ) -> (bool, Value) {
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

    pub fn grpcurl_plain(&self, args: &[&str]) -> String {
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
    pub fn terminate(mut self) -> std::process::ExitStatus {
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
    pub fn crash(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

pub fn reason_of(error: &Value) -> String {
    error["details"]
        .as_array()
        .and_then(|d| d.iter().find_map(|x| x["reason"].as_str()))
        .unwrap_or_default()
        .to_string()
}

pub async fn register_many(addr: &str, n: usize) -> Vec<String> {
    let mut client = identity_proto::v1::user_service_client::UserServiceClient::connect(format!(
        "http://{addr}"
    ))
    .await
    .expect("connect");
    let mut ids = Vec::new();
    for i in 0..n {
        let r = client
            .register_user(registering(
                "acme",
                pb::UserInput {
                    email: format!("durable{i}@example.com"),
                    ..Default::default()
                },
            ))
            .await
            .expect("registers");
        ids.push(r.into_inner().user.expect("user").user_id);
    }
    ids
}

/// Registers a user in tenant `acme` and opens an internal Polygon wallet for it.
pub async fn user_with_wallet(
    users: &mut identity_proto::v1::user_service_client::UserServiceClient<
        tonic::transport::Channel,
    >,
    wallets: &mut identity_proto::v1::wallet_service_client::WalletServiceClient<
        tonic::transport::Channel,
    >,
    email: &str,
) -> String {
    let user = users
        .register_user(registering("acme", user_input(email)))
        .await
        .map(registered_id)
        .expect("registers");
    ok!(wallets.open_wallet(req("acme", user_wallet(user, "polygon"))))
        .wallet
        .expect("wallet")
        .wallet_id
}

pub fn admin_binary() -> PathBuf {
    let bin = server_binary().with_file_name("identity-admin");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p identity-cli` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

pub fn admin(dir: &std::path::Path, url: &str, args: &[&str]) -> (bool, String, String) {
    // The servers these tests start read personal data with the kit's master key.
    let master = kit_master_key_file().display().to_string();
    admin_with(dir, url, args, &[("IDENTITY_MASTER_KEY_FILE", &master)])
}

/// [`admin`] with these environment variables.
pub fn admin_with(
    dir: &std::path::Path,
    url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let out = Command::new(admin_binary())
        .current_dir(dir)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run identity-admin");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

pub fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

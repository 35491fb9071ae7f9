//! Spawns the real server on port 0 against a fresh, uniquely named PostgreSQL database or a
//! fresh SQLite file, and hands out real tonic clients.
#![allow(dead_code, unreachable_pub, unused_macros)]

#[macro_use]
mod macros;
pub mod binary;
mod delivery;
mod keys;
#[allow(unused_imports)] // Not every test file mints tokens.
pub use keys::*;

#[allow(unused_imports)] // Not every test file receives codes.
pub use delivery::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use identity_proto::v1 as pb;
use identity_proto::v1::identification_service_client::IdentificationServiceClient;
use identity_proto::v1::status_tier_service_client::StatusTierServiceClient;
use identity_proto::v1::user_service_client::UserServiceClient;
use identity_proto::v1::wallet_service_client::WalletServiceClient;
use identity_server::{Application, Settings};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// Runs each named scenario (an `async fn(Store)` in the test file's `scenarios` module) on
/// PostgreSQL and on SQLite, as `<name>::postgres` and `<name>::sqlite`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::scenarios::$name(Store::Postgres).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::scenarios::$name(Store::Sqlite).await;
            }
        }
    )*};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Postgres,
    Sqlite,
}

/// A database that exists for one test and is dropped after it.
#[derive(Debug)]
pub enum TestDb {
    Postgres(identity_testkit::PgDatabase),
    Sqlite { dir: PathBuf, url: String },
}

impl TestDb {
    pub async fn create(store: Store) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        match store {
            Store::Postgres => TestDb::Postgres(
                identity_testkit::PgDatabase::create("identity_test")
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            Store::Sqlite => {
                let dir = std::env::temp_dir().join(format!("identity-test-{suffix}"));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let url = format!("sqlite://{}/identity.db", dir.display());
                TestDb::Sqlite { dir, url }
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Postgres(db) => &db.url,
            TestDb::Sqlite { url, .. } => url,
        }
    }

    /// Runs SQL behind the service's back (tampering, leftovers), on whichever store this
    /// is; the database's answer, error included.
    pub async fn sql(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            TestDb::Postgres(identity_testkit::PgDatabase { url, .. }) => {
                let pool = sqlx::PgPool::connect(url).await?;
                sqlx::raw_sql(sql).execute(&pool).await.map(|_| ())
            }
            TestDb::Sqlite { url, .. } => {
                let pool = sqlx::SqlitePool::connect(url).await?;
                sqlx::raw_sql(sql).execute(&pool).await.map(|_| ())
            }
        }
    }

    /// The single integer a `SELECT COUNT(*) …` answers.
    pub async fn count(&self, sql: &str) -> i64 {
        self.column(sql).await.pop().expect("a count")
    }

    /// The first column of every row a query answers.
    pub async fn column<T>(&self, sql: &str) -> Vec<T>
    where
        T: Send + Unpin,
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
        T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        match self {
            TestDb::Postgres(identity_testkit::PgDatabase { url, .. }) => {
                let pool = sqlx::PgPool::connect(url).await.expect("connect");
                sqlx::query_scalar(sql).fetch_all(&pool).await.expect(sql)
            }
            TestDb::Sqlite { url, .. } => {
                let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
                sqlx::query_scalar(sql).fetch_all(&pool).await.expect(sql)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            TestDb::Postgres(db) => {
                let db = db.clone();
                // Drop runs outside async; a short-lived runtime on its own thread does the work.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(db.drop());
                })
                .join();
            }
            TestDb::Sqlite { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// The real server, running in this process on a free port.
#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    projections: identity_projections::Projections,
    log: identity_store::EventLog,
    /// The server's password hashers: their count of argon2 computations.
    pub passwords: identity_server::credentials::Passwords,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    channel: Channel,
}

pub async fn start_server(
    url: &str,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (addr, stop, server, _, _, _) = start_server_with_handles(url).await;
    (addr, stop, server)
}

/// A plaintext channel to the server at `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the server")
}

/// A server running in this process: its address, what stops it, its task, and its read
/// models, event log and password hasher.
pub type Running = (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    identity_projections::Projections,
    identity_store::EventLog,
    identity_server::credentials::Passwords,
);

/// The settings of every test server on the store at `url`: ports chosen by the system,
/// the kit's signing and master keys.
pub fn kit_settings(url: &str) -> Settings {
    Settings {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        database_url: url.to_string(),
        db_max_connections: 8,
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        signing_key_file: Some(kit_key().0.clone()),
        master_key_file: Some(kit_master_key_file().clone()),
        // Tests of one process share their callers (one token, one address): per-caller rates
        // are tested on their own, with small limits.
        sign_in_per_minute: 100_000,
        code_requests_per_minute: 100_000,
        ..Settings::default()
    }
}

/// Starts the server and also hands out its read models and event log.
pub async fn start_server_with_handles(url: &str) -> Running {
    start_server_with_settings(url, |_| {}).await
}

/// Starts the server with settings changed by `adjust`.
pub async fn start_server_with_settings(url: &str, adjust: impl FnOnce(&mut Settings)) -> Running {
    start_server_reading_through(url, adjust, identity_store::Upcasters::standard()).await
}

/// [`start_server_with_settings`] with the log read through these upcasters.
pub async fn start_server_reading_through(
    url: &str,
    adjust: impl FnOnce(&mut Settings),
    upcasters: identity_store::Upcasters,
) -> Running {
    let mut settings = kit_settings(url);
    adjust(&mut settings);
    let app = Application::build_with_upcasters(settings, upcasters)
        .await
        .expect("the server builds");
    let addr = app.local_addr();
    let projections = app.projections();
    let log = app.event_log();
    let passwords = app.passwords();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .expect("the server runs");
    });
    (addr, tx, server, projections, log, passwords)
}

/// The tenants every test server has (created through TenantService at start).
pub const KIT_TENANTS: [&str; 4] = ["acme", "tenant-a", "tenant-b", "other"];

/// Creates the kit's tenants on a server (those that exist stay as they are).
pub async fn create_kit_tenants(channel: Channel) {
    let mut tenants = identity_proto::v1::tenant_service_client::TenantServiceClient::new(channel);
    for t in KIT_TENANTS {
        let created = tenants
            .create_tenant(with_token(
                super_admin_token(),
                None,
                pb::CreateTenantRequest {
                    tenant_id: t.into(),
                    name: String::new(),
                },
            ))
            .await;
        match created {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => panic!("creating tenant {t}: {s:?}"),
        }
    }
}

/// A request with `authorization: Bearer <token>`, in `tenant` if given.
pub fn with_token<T>(token: &str, tenant: Option<&str>, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    if let Some(t) = tenant {
        r.metadata_mut()
            .insert("x-tenant-id", t.parse().expect("ascii"));
    }
    r
}

pub async fn spawn_app(store: Store) -> TestApp {
    spawn_app_with(store, |_| {}).await
}

/// [`spawn_app`] with settings changed by `adjust` (small limits, say).
pub async fn spawn_app_with(store: Store, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(TestDb::create(store).await, adjust).await
}

/// [`spawn_app_with`] on a database the test prepared (an old store, say).
pub async fn spawn_app_on(db: TestDb, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let (addr, stop, server, projections, log, passwords) =
        start_server_with_settings(db.url(), adjust).await;
    let channel = connect(addr).await;
    create_kit_tenants(channel.clone()).await;
    TestApp {
        addr,
        db,
        projections,
        log,
        passwords,
        stop: Some(stop),
        server: Some(server),
        channel,
    }
}

impl TestApp {
    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }
    pub fn wallets(&self) -> WalletServiceClient<Channel> {
        WalletServiceClient::new(self.channel.clone())
    }
    pub fn tiers(&self) -> StatusTierServiceClient<Channel> {
        StatusTierServiceClient::new(self.channel.clone())
    }
    pub fn identification(&self) -> IdentificationServiceClient<Channel> {
        IdentificationServiceClient::new(self.channel.clone())
    }
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
    pub fn projection_admin(
        &self,
    ) -> identity_proto::v1::projection_service_client::ProjectionServiceClient<Channel> {
        identity_proto::v1::projection_service_client::ProjectionServiceClient::new(
            self.channel.clone(),
        )
    }
    /// The server's own read models (its projectors run in this process).
    pub async fn read_models(&self) -> identity_projections::Projections {
        self.projections.clone()
    }
    /// The server's own event log.
    pub fn event_log(&self) -> identity_store::EventLog {
        self.log.clone()
    }
    /// The highest global position in the log.
    pub async fn head_position(&self) -> u64 {
        self.log.head_position().await.expect("head position")
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
    }

    /// Stops the server and starts a new one on the same store, with settings changed by
    /// `adjust` (another master key, say).
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Settings)) {
        self.stop().await;
        let (addr, stop, server, projections, log, passwords) =
            start_server_with_settings(self.db.url(), adjust).await;
        self.channel = connect(addr).await;
        (self.addr, self.projections, self.log, self.passwords) =
            (addr, projections, log, passwords);
        (self.stop, self.server) = (Some(stop), Some(server));
    }

    /// Registers a user with this email in `tenant` and returns its id.
    pub async fn register(&self, tenant: &str, email: &str) -> String {
        self.users()
            .register_user(registering(tenant, user_input(email)))
            .await
            .map(registered_id)
            .expect("registers")
    }

    /// Creates an admin of acme with `email` and `admin_type`.
    pub async fn new_admin(&self, email: &str, admin_type: pb::AdminType) -> pb::Admin {
        use identity_proto::v1::admin_service_client::AdminServiceClient;
        ok!(AdminServiceClient::new(self.channel())
            .create_admin(req("acme", ask::new_admin(email, admin_type))))
        .admin
        .expect("admin")
    }

    /// Opens and activates an internal Polygon wallet for a user.
    pub async fn active_wallet(&self, tenant: &str, user_id: &str) -> String {
        let wallet = ok!(self
            .wallets()
            .open_wallet(req(tenant, user_wallet(user_id, "polygon"))))
        .wallet
        .expect("wallet");
        self.wallets()
            .activate_wallet(req(
                tenant,
                pb::ActivateWalletRequest {
                    wallet_id: wallet.wallet_id.clone(),
                },
            ))
            .await
            .expect("activates");
        wallet.wallet_id
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A request in `tenant` (one of [`KIT_TENANTS`]) by the development SUPER_ADMIN.
pub fn req<T>(tenant: &str, msg: T) -> Request<T> {
    with_token(super_admin_token(), Some(tenant), msg)
}

/// RegisterUser of `user` in `tenant`, as [`req`] sends it.
pub fn registering(tenant: &str, user: pb::UserInput) -> Request<pb::RegisterUserRequest> {
    req(tenant, pb::RegisterUserRequest { user: Some(user) })
}

/// OpenWallet of an internal wallet for the user `owner_id` on `network`.
pub fn user_wallet(owner_id: impl Into<String>, network: &str) -> pb::OpenWalletRequest {
    pb::OpenWalletRequest {
        owner_type: pb::OwnerType::User as i32,
        owner_id: owner_id.into(),
        wallet_type: pb::WalletType::Internal as i32,
        network: network.into(),
        address: String::new(),
    }
}

/// A user with only an email.
pub fn user_input(email: &str) -> pb::UserInput {
    pb::UserInput {
        email: email.into(),
        ..Default::default()
    }
}

/// The id of the user a RegisterUser call created.
pub fn registered_id(answer: tonic::Response<pb::RegisterUserResponse>) -> String {
    answer.into_inner().user.expect("user").user_id
}

/// A request in `tenant` by a trusted integration that delivers one-time codes itself: it
/// holds what a TENANT_ADMIN holds plus the explicit `read:codes`, so codes come back to it.
pub fn codes_req<T>(tenant: &str, msg: T) -> Request<T> {
    let token = mint(
        "service",
        "code-courier",
        Some(tenant),
        &[
            "read:users",
            "create:users",
            "update:users",
            "verify:passwords",
            "sign_in",
            "read:codes",
        ],
    );
    with_token(&token, Some(tenant), msg)
}

/// A request to a global RPC (ProjectionService, TenantService) by the SUPER_ADMIN.
pub fn operator<T>(msg: T) -> Request<T> {
    with_token(super_admin_token(), None, msg)
}

/// A credit of `amount` PTS to `wallet` with idempotency key `key`.
pub fn credit(wallet: &str, amount: &str, key: &str) -> pb::CreditTokensRequest {
    pb::CreditTokensRequest {
        wallet_id: wallet.into(),
        token: "PTS".into(),
        amount: amount.into(),
        idempotency_key: key.into(),
    }
}

/// A debit of `amount` PTS from `wallet` with idempotency key `key`.
pub fn debit(wallet: &str, amount: &str, key: &str) -> pb::DebitTokensRequest {
    pb::DebitTokensRequest {
        wallet_id: wallet.into(),
        token: "PTS".into(),
        amount: amount.into(),
        idempotency_key: key.into(),
    }
}

/// The `ErrorInfo.reason` of a failed call.
pub fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// The value an error's `ErrorInfo` gives under `key`, if any.
pub fn detail(status: &Status, key: &str) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get(key).cloned())
}

/// The `retry_after_seconds` an error names (0 when it names none).
pub fn retry_after(status: &Status) -> u64 {
    detail(status, "retry_after_seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Asserts a call failed with `code` and `reason`.
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    why: &str,
) -> Status {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "wrong code: {status:?}");
    assert_eq!(reason(&status), why, "wrong reason: {status:?}");
    status
}

/// Polls `probe` every 20 ms until it holds, failing with `what` once `within` has passed
/// since `since`; returns how long it took.
pub async fn within<F, Fut>(
    since: std::time::Instant,
    within: Duration,
    what: &str,
    mut probe: F,
) -> Duration
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

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// grpcurl, as `scripts/setup-tools.sh` installs it (or from PATH).
pub fn grpcurl() -> PathBuf {
    let local = workspace_root().join(".tools/bin/grpcurl");
    if local.exists() {
        return local;
    }
    let on_path = std::process::Command::new("grpcurl")
        .arg("-version")
        .output();
    assert!(
        on_path.is_ok(),
        "grpcurl is missing: run scripts/setup-tools.sh (scripts/test.sh does)"
    );
    PathBuf::from("grpcurl")
}

/// A project key of `tenant` (what an app calls AuthService with).
#[allow(dead_code, unreachable_pub)]
pub async fn project_key(app: &TestApp, tenant: &str) -> String {
    ok!(
        identity_proto::v1::tenant_service_client::TenantServiceClient::new(app.channel())
            .issue_project_key(req(
                tenant,
                pb::IssueProjectKeyRequest { name: "app".into() },
            ))
    )
    .secret
}

#[allow(dead_code, unreachable_pub)]
pub fn with_key<T>(key: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("x-project-key", key.parse().expect("ascii"));
    r
}

/// The requests tests send most, by what they ask (`ask::set_password(&user, "pw")`).
pub mod ask;

//! Black-box tests: the built `identity-server` binary, driven with real grpcurl, as a user
//! would: the README's first run, the admin CLI, the admin endpoints and logs, traces, and a
//! production start. Crashes are in `blackbox_crashes.rs`, replicas in
//! `blackbox_replicas.rs`, a person's own sign-in in `blackbox_people.rs`. `scripts/test.sh`
//! builds the binaries and installs grpcurl before running these.
#[macro_use]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::*;
use common::*;
use identity_proto::v1 as pb;
use serde_json::Value;

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

    let wallet_id = server.open_active_wallet(&user_id);

    let (ok, credit) = server.move_tokens("CreditTokens", &wallet_id, "100", "c1");
    assert!(ok, "{credit}");
    assert_eq!(credit["balance"], "100");
    let (ok, debit) = server.move_tokens("DebitTokens", &wallet_id, "30", "d1");
    assert!(ok, "{debit}");
    assert_eq!(debit["balance"], "70");
    let (ok, short) = server.move_tokens("DebitTokens", &wallet_id, "100", "d2");
    assert!(!ok);
    assert_eq!(short["code"], 9, "FAILED_PRECONDITION: {short}");
    assert_eq!(reason_of(&short), "INSUFFICIENT_BALANCE");

    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The audit CLI, as an auditor runs it: history, state-at, export, rebuild, and verify that
/// passes on an untouched store and fails, naming the spot, after an edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_cli_replays_exports_rebuilds_and_catches_tampering() {
    let db = TestDb::create(Store::Sqlite).await;
    let url = db.url().to_string();
    let dir = std::env::temp_dir();
    let server = Server::start(
        &dir,
        &[
            ("DATABASE_URL", &url),
            ("IDENTITY_CHECKPOINT_INTERVAL_MS", "50"),
        ],
    );
    let (mut users, mut wallets) = server.clients().await;
    let wallet = user_with_wallet(&mut users, &mut wallets, "cli@example.com").await;
    let mut positions = Vec::new();
    for (i, amount) in ["5", "7"].into_iter().enumerate() {
        positions.push(
            ok!(wallets.credit_tokens(req("acme", credit(&wallet, amount, &format!("k{i}")))))
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
    // An auditor keeps the latest checkpoint outside the service...
    let kept = tempfile_path("checkpoint.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, err) = admin(&dir, &url, &["checkpoint"]);
        let covered = ok
            && serde_json::from_str::<Value>(&out)
                .is_ok_and(|c| c["position"].as_u64() >= Some(positions[1]));
        if covered {
            std::fs::write(&kept, out).expect("keeps the checkpoint");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint within 30 s: {out} {err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let checkpoints = tempfile_path("checkpoints.jsonl");
    let (ok, _, err) = admin(
        &dir,
        &url,
        &[
            "export",
            "--checkpoints",
            &checkpoints.display().to_string(),
        ],
    );
    assert!(ok, "{err}");
    let exported = std::fs::read_to_string(&checkpoints).expect("exported checkpoints");
    assert!(
        exported.lines().count() >= 1 && exported.contains("\"signature\""),
        "{exported}"
    );
    // ... and gives it back: the log still matches it, and the latest stored one.
    let key = kit_key().0.display().to_string();
    let kept_arg = kept.display().to_string();
    let verify = ["verify", "--checkpoint", &kept_arg, "--public-key", &key];
    let (ok, out, err) = admin(&dir, &url, &verify);
    assert!(ok, "verify fails on an untouched store: {out} {err}");
    assert!(out.contains("hash chains: intact"), "{out}");
    assert!(
        out.contains(&format!("checkpoint {kept_arg}: matches")),
        "{out}"
    );
    assert!(out.contains("latest stored checkpoint: matches"), "{out}");

    // An edit behind the service's back breaks the wallet's chain; removing the wallet's
    // last credit breaks no chain, and only the checkpoints see it.
    let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
    sqlx::query("UPDATE events SET payload = json_set(payload, '$.TokensCredited.amount', '500') WHERE global_position = ?1")
        .bind(positions[0] as i64)
        .execute(&pool)
        .await
        .expect("tamper");
    sqlx::query("DELETE FROM events WHERE global_position = ?1")
        .bind(positions[1] as i64)
        .execute(&pool)
        .await
        .expect("tamper");
    let (ok, out, _) = admin(&dir, &url, &verify);
    assert!(!ok, "verify must fail after tampering: {out}");
    assert!(
        out.contains(&format!("BROKEN at position {}", positions[0])),
        "{out}"
    );
    assert!(out.contains("hash chains: 1 break(s)"), "{out}");
    for name in [
        format!("checkpoint {kept_arg}"),
        "latest stored checkpoint".into(),
    ] {
        assert!(out.contains(&format!("{name}: DOES NOT MATCH")), "{out}");
    }
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
        .register_user(registering(
            "acme",
            pb::UserInput {
                email: email.into(),
                phone: phone.into(),
                first_name: "Canaryfirst".into(),
                ..Default::default()
            },
        ))
        .await
        .map(registered_id)
        .expect("registers");
    users
        .set_password(req("acme", ask::set_password(&user, password)))
        .await
        .expect("sets");
    users
        .verify_password(req("acme", ask::verify_password(&user, password)))
        .await
        .expect("verifies");
    let _ = users
        .verify_password(req("acme", ask::verify_password(&user, "Wrong-Canary-99")))
        .await;
    let code = ok!(users.request_email_change(codes_req(
        "acme",
        ask::email_change(&user, "pii.canary2@example.com"),
    )))
    .code;
    users
        .confirm_email(req("acme", ask::confirm_email(&user, &code)))
        .await
        .expect("confirms");
    // The confirmed address is taken now: a second registration with it is refused.
    let _ = users
        .register_user(registering("acme", user_input("pii.canary2@example.com")))
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
    let mut request = registering("acme", user_input("traced@example.com"));
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
        .env("IDENTITY_MASTER_KEY_FILE", kit_master_key_file())
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
    let master = kit_master_key_file().display().to_string();
    let mut server = Server::spawn(
        &dir,
        &[
            ("DATABASE_URL", &url),
            ("IDENTITY_ENVIRONMENT", "production"),
            ("IDENTITY_SIGNING_KEY_FILE", &key),
            ("IDENTITY_MASTER_KEY_FILE", &master),
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

/// A path of its own in the temporary directory, for a file a test writes.
fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "identity-{}-{}-{name}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

//! Black-box tests of replicas: two server processes on one database never answer from each
//! other's stale state and never both project; a long transaction delays read models but not
//! readiness or writes.
#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::binary::*;
use common::*;
use identity_proto::v1 as pb;

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
    let user = ok!(a_wallets.get_wallet(req(
        "acme",
        pb::GetWalletRequest {
            wallet_id: wallet.clone(),
        },
    )))
    .wallet
    .expect("wallet")
    .owner_id;
    let verify = |password: &str| req("acme", ask::verify_password(&user, password));
    a_users
        .set_password(req("acme", ask::set_password(&user, "first password")))
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
    let spent = ok!(a_wallets.debit_tokens(req("acme", debit(&wallet, "15", "d1"))));
    assert_eq!(spent.balance, "0");
    b_wallets
        .credit_tokens(req("acme", credit(&wallet, "3", "c3")))
        .await
        .expect("credit on B");
    let retry = ok!(a_wallets.credit_tokens(req("acme", credit(&wallet, "5", "c1"))));
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

    let position =
        ok!(users.register_user(registering("acme", user_input("behind@example.com")))).position;
    let exists = |min_position: u64| {
        let mut r = req(
            "acme",
            pb::UserExistsRequest {
                email: "behind@example.com".into(),
                min_position,
                ..Default::default()
            },
        );
        // A child process on a loaded machine: room for the answer after the wait.
        r.set_timeout(Duration::from_secs(1));
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
    let found = ok!(users.user_exists(caught_up));
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
        ok!(admin.list_projections(operator(pb::ListProjectionsRequest {})))
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
    let position =
        ok!(users.register_user(registering("acme", user_input("takeover@example.com")))).position;
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

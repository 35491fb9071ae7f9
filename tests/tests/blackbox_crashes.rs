//! Black-box tests of crashes: the server binary killed with SIGKILL while it works loses
//! nothing it acknowledged, leaves no orphan claim, and its read models resume exactly once.
#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::binary::*;
use common::*;
use identity_proto::v1 as pb;

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
        let user = ok!(client.get_user(req("acme", ask::get_user(id))))
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
                        .register_user(registering(
                            "acme",
                            pb::UserInput {
                                email: format!("killed{n}@example.com"),
                                phone: format!("+3726{n:07}"),
                                external_id: format!("killed-{n}"),
                                ..Default::default()
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
    .with_master_key(kit_master_key())
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
            let found = ok!(users.user_exists(req("acme", ask)));
            holders.push(found.exists.then_some(found.user_id));
        }
        // All three values belong to one registration: all taken by its user, or none.
        assert!(
            holders.iter().all(Option::is_some) || holders.iter().all(Option::is_none),
            "registration {n} half-applied: {holders:?}"
        );
        if holders[0].is_none() {
            users
                .register_user(registering(
                    "acme",
                    pb::UserInput {
                        email: keys[0].1.clone(),
                        phone: keys[1].1.clone(),
                        external_id: keys[2].1.clone(),
                        ..Default::default()
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
    let (mut users, mut wallets) = server.clients().await;
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
                            credit(
                                &ids[(i as usize + t) % ids.len()],
                                "1",
                                &format!("t{t}-{i}"),
                            ),
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
    .expect("open log")
    .with_master_key(kit_master_key());
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
        let states =
            ok!(admin.list_projections(operator(pb::ListProjectionsRequest {}))).projections;
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

//! The service workloads: credits spread over wallets or on one, registrations, the mixed and
//! read loads, and CreditTokens beside password hashing and sign-ins (`argon`).

#![allow(clippy::wildcard_imports)]

use super::*;
/// Users with active wallets, for the credit workloads.
pub(crate) async fn wallets(ch: &Channel, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut users = UserServiceClient::new(ch.clone());
    let mut w = WalletServiceClient::new(ch.clone());
    let mut out = Vec::new();
    for i in 0..n {
        let user = users
            .register_user(req(pb::RegisterUserRequest {
                user: Some(pb::UserInput {
                    email: format!("seed{i}@bench.example"),
                    ..Default::default()
                }),
            }))
            .await?
            .into_inner()
            .user
            .context("user")?
            .user_id;
        let wallet = w
            .open_wallet(req(pb::OpenWalletRequest {
                owner_type: pb::OwnerType::User as i32,
                owner_id: user.clone(),
                wallet_type: pb::WalletType::Internal as i32,
                network: "polygon".into(),
                address: String::new(),
            }))
            .await?
            .into_inner()
            .wallet
            .context("wallet")?
            .wallet_id;
        w.activate_wallet(req(pb::ActivateWalletRequest {
            wallet_id: wallet.clone(),
        }))
        .await?;
        out.push((user, wallet));
    }
    Ok(out)
}

pub(crate) fn credit(wallet: &str, key: String) -> pb::CreditTokensRequest {
    pb::CreditTokensRequest {
        wallet_id: wallet.to_string(),
        token: "PTS".into(),
        amount: "1".into(),
        idempotency_key: key,
    }
}

pub(crate) type Op =
    std::sync::Arc<dyn Fn(usize, u64) -> BoxFuture<'static, Result<(), Status>> + Send + Sync>;

/// CreditTokens spread over `wallets`, each request with a fresh idempotency key.
pub(crate) fn credit_spread(channels: &[Channel], wallets: &[String], tag: &str) -> Op {
    let (channels, wallets, tag) = (channels.to_vec(), wallets.to_vec(), tag.to_string());
    std::sync::Arc::new(move |w, i| {
        let ch = channels[w % channels.len()].clone();
        let wallet = wallets[(w * 7919 + i as usize) % wallets.len()].clone();
        let key = format!("{tag}-{w}-{i}");
        async move {
            WalletServiceClient::new(ch)
                .credit_tokens(req(credit(&wallet, key)))
                .await
                .map(|_| ())
        }
        .boxed()
    })
}

/// One of the gRPC workloads on its own database: seed, warm up, measure.
pub(crate) async fn service_workload(args: &Args, kind: &str) -> anyhow::Result<Outcome> {
    let (db, url) = fresh_database(&args.pg, kind).await?;
    let env: &[(&str, &str)] = if kind == "reads_uncached" {
        &[("IDENTITY_READ_CACHE", "0")]
    } else {
        &[]
    };
    let server = Server::start(&url, env)?;
    let channels = server.channels(args.connections).await?;
    let seeded = wallets(
        &channels[0],
        if kind == "register" { 1 } else { args.wallets },
    )
    .await?;
    let wallet_ids: Vec<String> = seeded.iter().map(|(_, w)| w.clone()).collect();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    // Each worker's last write position, for read-your-writes in the mixed workload.
    let positions: std::sync::Arc<Vec<AtomicU64>> =
        std::sync::Arc::new((0..args.concurrency).map(|_| AtomicU64::new(0)).collect());
    let make = |phase: &'static str| -> Op {
        let tag = format!("{phase}-{run_id}");
        match kind {
            "credit_spread" => credit_spread(&channels, &wallet_ids, &tag),
            "credit_hot" => credit_spread(&channels, &wallet_ids[..1], &tag),
            _ => {
                let channels = channels.clone();
                // Shared, not copied per request: the load generator shares the machine's
                // two cores with the server and must stay cheap.
                let seeded = std::sync::Arc::new(seeded.clone());
                let kind: std::sync::Arc<str> = kind.into();
                let positions = positions.clone();
                std::sync::Arc::new(move |w: usize, i: u64| {
                    let ch = channels[w % channels.len()].clone();
                    let seeded = seeded.clone();
                    let kind = kind.clone();
                    let positions = positions.clone();
                    let key = format!("{tag}-{w}-{i}");
                    async move {
                        match &*kind {
                            "reads" | "reads_uncached" => {
                                let (user, _) = &seeded[(w * 31 + i as usize) % seeded.len()];
                                WalletServiceClient::new(ch)
                                    .get_balances(req(pb::GetBalancesRequest {
                                        key: Some(pb::get_balances_request::Key::UserId(
                                            user.clone(),
                                        )),
                                        min_position: 0,
                                    }))
                                    .await
                                    .map(|_| ())
                            }
                            "register" => UserServiceClient::new(ch)
                                .register_user(req(pb::RegisterUserRequest {
                                    user: Some(pb::UserInput {
                                        email: format!("{key}@bench.example"),
                                        ..Default::default()
                                    }),
                                }))
                                .await
                                .map(|_| ()),
                            _ => {
                                // 90% reads of the worker's own user, each waiting for the
                                // worker's own last credit (read-your-writes); 10% credits.
                                let (user, wallet) = &seeded[w % seeded.len()];
                                if i.is_multiple_of(10) {
                                    let done = WalletServiceClient::new(ch)
                                        .credit_tokens(req(credit(wallet, key)))
                                        .await?
                                        .into_inner();
                                    positions[w].store(done.position, Ordering::Relaxed);
                                    Ok(())
                                } else {
                                    WalletServiceClient::new(ch)
                                        .get_balances(req(pb::GetBalancesRequest {
                                            key: Some(pb::get_balances_request::Key::UserId(
                                                user.clone(),
                                            )),
                                            min_position: positions[w].load(Ordering::Relaxed),
                                        }))
                                        .await
                                        .map(|_| ())
                                }
                            }
                        }
                    }
                    .boxed()
                })
            }
        }
    };
    warm_up(args, make("warm")).await;
    let name = match kind {
        "credit_spread" => format!("CreditTokens, {} wallets", args.wallets),
        "credit_hot" => "CreditTokens, one hot wallet".to_string(),
        "register" => "RegisterUser, unique emails".to_string(),
        "reads" => format!("GetBalances, {} concurrent, reads only", args.concurrency),
        "reads_uncached" => format!(
            "GetBalances, {} concurrent, no read cache",
            args.concurrency
        ),
        _ => "90% GetBalances (min_position) / 10% credits".to_string(),
    };
    let mut outcome = load(&name, args, args.duration, make("run")).await;
    outcome.peak_rss_mib = server.peak_rss_mib();
    drop(server);
    db.drop().await;
    Ok(outcome)
}

/// CreditTokens alone, then the same beside callers of VerifyPassword (argon2id).
/// The argon phase's measurements: credits alone, beside a control load, beside logins.
pub(crate) struct ArgonRun {
    pub(crate) alone: Outcome,
    /// Beside a process that only spins in Linux's idle scheduling class (no memory traffic):
    /// what any use of the otherwise idle CPU costs the service on this machine.
    pub(crate) control: Option<Outcome>,
    pub(crate) beside: Outcome,
    pub(crate) logins_per_second: f64,
    /// Credits beside callers of AuthService.SignIn (argon2id, a session event, a signed
    /// token), and their sign-ins per second.
    pub(crate) beside_sign_in: Outcome,
    pub(crate) sign_ins_per_second: f64,
}

/// Runs `load` of credits beside 4 callers repeating `call`; returns it and calls/s.
pub(crate) async fn beside_callers<F, Fut>(
    name: &str,
    args: &Args,
    channels: &[Channel],
    op: Op,
    call: F,
) -> (Outcome, f64)
where
    F: Fn(Channel, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for c in 0..4 {
        let ch = channels[c % channels.len()].clone();
        let (stop, done, call) = (stop.clone(), done.clone(), call.clone());
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if call(ch.clone(), c).await {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    let outcome = load(name, args, args.duration, op).await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        let _ = c.await;
    }
    let per_second = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    (outcome, per_second)
}

/// Runs `load` beside `chrt -i 0` spinning in a shell; `None` when chrt cannot start.
pub(crate) async fn beside_idle_spinner(args: &Args, op: Op) -> Option<Outcome> {
    let mut spinner = Command::new("chrt")
        .args(["-i", "0", "sh", "-c", "while :; do :; done"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| eprintln!("control not measured: cannot start chrt: {e}"))
        .ok()?;
    let outcome = load(
        "CreditTokens beside an idle-class CPU spinner",
        args,
        args.duration,
        op,
    )
    .await;
    let _ = spinner.kill();
    let _ = spinner.wait();
    Some(outcome)
}

pub(crate) async fn argon(args: &Args) -> anyhow::Result<ArgonRun> {
    let (db, url) = fresh_database(&args.pg, "argon").await?;
    // One harness is one caller: the per-caller SignIn rate must not be what is measured.
    let server = Server::start(&url, &[("IDENTITY_SIGN_IN_PER_MINUTE", "100000000")])?;
    let channels = server.channels(args.connections).await?;
    let seeded = wallets(&channels[0], args.wallets).await?;
    let password = "correct horse battery staple 42";
    let sign_in_run = uuid::Uuid::new_v4().simple().to_string();
    for i in 0..4 {
        let user = UserServiceClient::new(channels[0].clone())
            .register_user(req(pb::RegisterUserRequest {
                user: Some(pb::UserInput {
                    email: format!("signin{i}-{sign_in_run}@bench.example"),
                    ..Default::default()
                }),
            }))
            .await?
            .into_inner()
            .user
            .map(|u| u.user_id)
            .unwrap_or_default();
        UserServiceClient::new(channels[0].clone())
            .set_password(req(pb::SetPasswordRequest {
                user_id: user,
                password: password.into(),
            }))
            .await?;
    }
    let mut users = UserServiceClient::new(channels[0].clone());
    for (user, _) in seeded.iter().take(8) {
        users
            .set_password(req(pb::SetPasswordRequest {
                user_id: user.clone(),
                password: password.into(),
            }))
            .await?;
    }
    let wallet_ids: Vec<String> = seeded.iter().map(|(_, w)| w.clone()).collect();
    let run = uuid::Uuid::new_v4().simple().to_string();
    warm_up(
        args,
        credit_spread(&channels, &wallet_ids, &format!("w{run}")),
    )
    .await;
    let alone = load(
        "CreditTokens alone",
        args,
        args.duration,
        credit_spread(&channels, &wallet_ids, &format!("a{run}")),
    )
    .await;
    let control = beside_idle_spinner(
        args,
        credit_spread(&channels, &wallet_ids, &format!("c{run}")),
    )
    .await;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let logins = std::sync::Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for c in 0..4 {
        let (ch, user) = (
            channels[c % channels.len()].clone(),
            seeded[c % 8].0.clone(),
        );
        let (stop, logins) = (stop.clone(), logins.clone());
        callers.push(tokio::spawn(async move {
            let mut client = UserServiceClient::new(ch);
            while !stop.load(Ordering::Relaxed) {
                let ok = client
                    .verify_password(req(pb::VerifyPasswordRequest {
                        user_id: user.clone(),
                        password: password.into(),
                    }))
                    .await
                    .is_ok();
                if ok {
                    logins.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    let mut beside = load(
        "CreditTokens beside 4 VerifyPassword callers",
        args,
        args.duration,
        credit_spread(&channels, &wallet_ids, &format!("b{run}")),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        let _ = c.await;
    }
    let logins_per_second = logins.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let (beside_sign_in, sign_ins_per_second) = beside_callers(
        "CreditTokens beside 4 SignIn callers",
        args,
        &channels,
        credit_spread(&channels, &wallet_ids, &format!("s{run}")),
        move |ch, c| {
            let email = format!("signin{c}-{sign_in_run}@bench.example");
            async move {
                identity_proto::v1::auth_service_client::AuthServiceClient::new(ch)
                    .sign_in(req(pb::SignInRequest {
                        identifier: Some(pb::sign_in_request::Identifier::Email(email)),
                        password: password.into(),
                    }))
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    beside.peak_rss_mib = server.peak_rss_mib();
    drop(server);
    db.drop().await;
    Ok(ArgonRun {
        alone,
        control,
        beside,
        logins_per_second,
        beside_sign_in,
        sign_ins_per_second,
    })
}

//! A long random workload leaves every read model equal to a replay of the log, on both
//! stores; rebuild and verify agree.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use identity_proto::v1 as pb;

on_both_stores!(a_long_random_workload_leaves_read_models_equal_to_a_replay,);

mod scenarios {
    use super::*;

    /// Thousands of commands across all aggregates, then every read model is compared with a
    /// replay of the whole log from position 0, and rebuilt in place.
    pub(super) async fn a_long_random_workload_leaves_read_models_equal_to_a_replay(store: Store) {
        let app = spawn_app(store).await;
        let commands = if store == Store::Postgres { 2400 } else { 900 };
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut users: Vec<String> = Vec::new();
        let mut wallets: Vec<String> = Vec::new();
        let mut tiers: Vec<String> = Vec::new();
        let mut done = 0;
        let mut i = 0u64;
        while done < commands {
            i += 1;
            let roll = if users.len() < 10 { 0 } else { next(100) };
            let ok = match roll {
                0..=9 => {
                    let r = app
                        .users()
                        .register_user(registering(
                            "acme",
                            pb::UserInput {
                                email: format!("load{i}@example.com"),
                                first_name: format!("N{}", next(50)),
                                ..Default::default()
                            },
                        ))
                        .await;
                    r.map(|r| users.push(r.into_inner().user.expect("user").user_id))
                        .is_ok()
                }
                10..=17 => {
                    let u = users[next(users.len() as u64) as usize].clone();
                    let r = app
                        .wallets()
                        .open_wallet(req(
                            "acme",
                            pb::OpenWalletRequest {
                                owner_type: pb::OwnerType::User as i32,
                                owner_id: u,
                                wallet_type: pb::WalletType::Internal as i32,
                                network: ["polygon", "solana", "evm:8453"][next(3) as usize].into(),
                                address: String::new(),
                            },
                        ))
                        .await;
                    match r {
                        Ok(w) => {
                            let id = w.into_inner().wallet.expect("wallet").wallet_id;
                            let _ = app
                                .wallets()
                                .activate_wallet(req(
                                    "acme",
                                    pb::ActivateWalletRequest {
                                        wallet_id: id.clone(),
                                    },
                                ))
                                .await;
                            wallets.push(id);
                            true
                        }
                        Err(_) => false,
                    }
                }
                18..=59 if !wallets.is_empty() => {
                    let w = wallets[next(wallets.len() as u64) as usize].clone();
                    let token = ["PTS", "USDC", "EUR"][next(3) as usize];
                    let amount = (1 + next(500)).to_string();
                    let wallets_api = &mut app.wallets();
                    if next(3) == 0 {
                        let debit = pb::DebitTokensRequest {
                            token: token.into(),
                            ..debit(&w, &amount, &format!("d{i}"))
                        };
                        wallets_api.debit_tokens(req("acme", debit)).await.is_ok()
                    } else {
                        let credit = pb::CreditTokensRequest {
                            token: token.into(),
                            ..credit(&w, &amount, &format!("c{i}"))
                        };
                        wallets_api.credit_tokens(req("acme", credit)).await.is_ok()
                    }
                }
                60..=64 => {
                    let r = app
                        .tiers()
                        .create_status_tier(req(
                            "acme",
                            pb::CreateStatusTierRequest {
                                name: format!("T{i}"),
                                min_balance: (next(2000)).to_string(),
                                discount_percentage: "1".into(),
                                eligible_tokens: vec![
                                    ["PTS", "USDC", "EUR"][next(3) as usize].into()
                                ],
                                ..Default::default()
                            },
                        ))
                        .await;
                    r.map(|r| tiers.push(r.into_inner().tier.expect("tier").tier_id))
                        .is_ok()
                }
                65..=74 if !tiers.is_empty() => {
                    let t = tiers[next(tiers.len() as u64) as usize].clone();
                    let token = ["PTS", "USDC", "EUR"][next(3) as usize].to_string();
                    let mut api = app.tiers();
                    match next(4) {
                        0 => {
                            let update = pb::UpdateStatusTierRequest {
                                tier_id: t,
                                min_balance: Some(next(2000).to_string()),
                                ..Default::default()
                            };
                            api.update_status_tier(req("acme", update)).await.is_ok()
                        }
                        1 => {
                            let add = pb::AddEligibleTokenRequest { tier_id: t, token };
                            api.add_eligible_token(req("acme", add)).await.is_ok()
                        }
                        2 => {
                            let remove = pb::RemoveEligibleTokenRequest { tier_id: t, token };
                            api.remove_eligible_token(req("acme", remove)).await.is_ok()
                        }
                        _ => {
                            let retire = pb::RetireStatusTierRequest { tier_id: t };
                            api.retire_status_tier(req("acme", retire)).await.is_ok()
                        }
                    }
                }
                75..=89 => {
                    let u = users[next(users.len() as u64) as usize].clone();
                    let mut api = app.users();
                    match next(4) {
                        0 => {
                            let update = pb::UpdateUserProfileRequest {
                                user_id: u,
                                profile: Some(pb::UserInput {
                                    last_name: format!("L{}", next(99)),
                                    ..Default::default()
                                }),
                                update_mask: None,
                            };
                            api.update_user_profile(req("acme", update)).await.is_ok()
                        }
                        1 => {
                            let role = format!("r{}", next(5));
                            let mode = if next(2) == 0 {
                                pb::RolesMode::Replace
                            } else {
                                pb::RolesMode::Add
                            };
                            let roles = ask::roles(&u, &[&role], mode);
                            api.set_user_roles(req("acme", roles)).await.is_ok()
                        }
                        2 => api
                            .deactivate_user(req("acme", ask::deactivate(&u)))
                            .await
                            .is_ok(),
                        _ => api
                            .reactivate_user(req("acme", ask::reactivate(&u)))
                            .await
                            .is_ok(),
                    }
                }
                _ => {
                    let u = users[next(users.len() as u64) as usize].clone();
                    app.identification()
                        .submit_identity(req(
                            "acme",
                            pb::SubmitIdentityRequest {
                                user_id: u,
                                identity: Some(pb::Identity {
                                    first_name: "A".into(),
                                    surname: "B".into(),
                                    nationality: "EE".into(),
                                    person_code: format!("{}", 10_000 + next(100_000)),
                                    person_code_country: String::new(),
                                    date_of_birth: "1990-01-01".into(),
                                }),
                            },
                        ))
                        .await
                        .is_ok()
                }
            };
            let _ = ok;
            done += 1;
        }
        let head = app.head_position().await;
        let projections = app.read_models().await;
        for p in identity_projections::Projection::ALL {
            assert!(
                projections
                    .wait_for(p, head, Duration::from_secs(60))
                    .await
                    .expect("waits"),
                "{} catches up",
                p.name()
            );
            let differences = projections.verify(p).await.expect("verifies");
            assert!(
                differences.is_empty(),
                "{} differs from a replay: {differences:#?}",
                p.name()
            );
        }
        // A rebuild while the service runs swaps in an equal read model.
        let before = ok!(app.users().list_users(req(
            "acme",
            pb::ListUsersRequest {
                limit: 200,
                sort_by: pb::UserSortField::Email as i32,
                min_position: head,
                ..Default::default()
            },
        )));
        // The call returns at once with a job; ListProjections reports it to the end.
        let started = ok!(app.projection_admin().rebuild_projection(operator(
            pb::RebuildProjectionRequest {
                name: "directory".into(),
            }
        )))
        .job
        .expect("a job");
        assert!(!started.job_id.is_empty());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let job = loop {
            let listed = ok!(app
                .projection_admin()
                .list_projections(operator(pb::ListProjectionsRequest {})));
            let directory = listed
                .projections
                .into_iter()
                .find(|p| p.name == "directory")
                .expect("directory");
            let job = directory.rebuild.expect("the job is reported");
            assert_eq!(job.job_id, started.job_id);
            if job.state != "running" {
                break job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the rebuild never ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(job.state, "succeeded", "{job:?}");
        assert!(
            job.events_replayed >= head / 2,
            "replayed {} of {head}",
            job.events_replayed
        );
        // One rebuild per read model at a time.
        let (first, second) = tokio::join!(
            projections.start_rebuild(identity_projections::Projection::Status),
            projections.start_rebuild(identity_projections::Projection::Status),
        );
        assert!(first.is_ok(), "{first:?}");
        assert!(
            matches!(
                second,
                Err(identity_projections::ProjectionError::RebuildRunning(_))
            ),
            "{second:?}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while projections
            .rebuild_job(identity_projections::Projection::Status)
            .is_some_and(|j| j.state == identity_projections::JobState::Running)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the rebuild never ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = ok!(app.users().list_users(req(
            "acme",
            pb::ListUsersRequest {
                limit: 200,
                sort_by: pb::UserSortField::Email as i32,
                min_position: head,
                ..Default::default()
            },
        )));
        assert_eq!(before.users, after.users);
        assert_eq!(before.total, after.total);
        assert!(projections
            .verify(identity_projections::Projection::Directory)
            .await
            .expect("verifies")
            .is_empty());
        // A replay that reads a few events at a time and writes every few rows (so it passes
        // through every write point: size limit, an event applied alone, the end) rebuilds
        // every read model equal to one applied batch by batch.
        let small = projections.clone().with_replay_sizes(7, 40);
        for p in identity_projections::Projection::ALL {
            let replayed = small.rebuild(p).await.expect("rebuilds");
            assert!(replayed >= head / 2, "replayed {replayed} of {head}");
            let differences = projections.verify(p).await.expect("verifies");
            assert!(
                differences.is_empty(),
                "{} rebuilt in small steps differs: {differences:#?}",
                p.name()
            );
        }
        // A rebuild killed midway leaves shadow tables and a checkpoint; the next start
        // drops them.
        let leftover = "CREATE TABLE rm_balances__r123 (x integer); INSERT INTO projection_checkpoints (name, xid, position, updated_at) VALUES ('balances__r123', 0, 0, 'x')";
        let count_leftovers =
            "SELECT COUNT(*) FROM projection_checkpoints WHERE name LIKE 'balances__r%'";
        app.db.sql(leftover).await.expect("leave");
        identity_projections::Projections::open(app.event_log())
            .await
            .expect("a second start");
        let tables = match &app.db {
            TestDb::Postgres(_) => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'rm_balances__r123'"
            }
            TestDb::Sqlite { .. } => {
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'rm_balances__r123'"
            }
        };
        let remaining = app.db.count(tables).await + app.db.count(count_leftovers).await;
        assert_eq!(
            remaining, 0,
            "a killed rebuild's leftovers survived a start"
        );
        // And verification is not vacuous: a row edited behind the projector's back is found.
        if let TestDb::Postgres(identity_testkit::PgDatabase { url, .. }) = &app.db {
            let pool = sqlx::PgPool::connect(url).await.expect("connect");
            // Swapped-in tables carry their indexes under the live names (a restart looks for
            // them by name), including the trigram index of the directory's search.
            let names: Vec<String> = sqlx::query_scalar(
                r"SELECT indexname::text FROM pg_indexes WHERE tablename LIKE 'rm\_%' AND indexname NOT LIKE '%pkey'",
            )
            .fetch_all(&pool)
            .await
            .expect("indexes");
            assert!(names.iter().all(|n| !n.contains("__r")), "{names:?}");
            assert!(names.iter().any(|n| n == "rm_users_search"), "{names:?}");
            sqlx::query("UPDATE rm_balances SET amount = '424242' WHERE ctid = (SELECT ctid FROM rm_balances LIMIT 1)")
                .execute(&pool)
                .await
                .expect("tamper");
            let differences = projections
                .verify(identity_projections::Projection::Balances)
                .await
                .expect("verifies");
            assert!(
                differences.iter().any(|d| d.contains("424242")),
                "{differences:?}"
            );
        }
    }
}
